"""dedup-initializers: equal initializers and Constant nodes merged, by bytes, dtype, dims and quantization."""

from __future__ import annotations


import numpy as np
import pytest
from passtest import check_pass


# check_pass compares canonical IR (rule tags, names and locations normalised away).
check = check_pass



P = "dedup-initializers,dce"


def test_equal_initializers_merge() -> None:
    check("""
graph @g(%x: tensor<"N"x2xf32>) -> (%y) {
  %a = const dense<2xf32 [1.0, -0.0]>
  %b = const dense<2xf32 [1.0, -0.0]>
  %c = const dense<2xf32 [1.0, 0.0]>
  %p = onnx.Add(%x, %a)
  %q = onnx.Mul(%p, %b)
  %y = onnx.Sub(%q, %c)
  return %y
}""", P, """
graph @g(%x: tensor<"N"x2xf32>) -> (%y) {
  %a = const dense<2xf32 [1.0, -0.0]>
  %c = const dense<2xf32 [1.0, 0.0]>
  %p = onnx.Add(%x, %a)
  %q = onnx.Mul(%p, %a)
  %y = onnx.Sub(%q, %c)
  return %y
}""")


def test_constant_nodes_merge_and_nan_payloads_count() -> None:
    check("""
graph @g(%x: tensor<2xf32>) -> (%y) {
  %a = onnx.Constant() {value=dense<2xf32 [nan, 3.0]>}
  %b = onnx.Constant() {value=dense<2xf32 [nan, 3.0]>}
  %c = onnx.Constant() {value=dense<2xf32 [nan:0x7fc00001, 3.0]>}
  %d = onnx.Constant() {value_ints=[1, 2]}
  %e = onnx.Constant() {value_ints=[1, 2]}
  %p = onnx.Max(%x, %a, %b, %c)
  %f = onnx.Cast(%d) {to=1}
  %h = onnx.Cast(%e) {to=1}
  %y = onnx.Sum(%p, %f, %h)
  return %y
}""", P, """
graph @g(%x: tensor<2xf32>) -> (%y) {
  %a = onnx.Constant() {value=dense<2xf32 [nan, 3.0]>}
  %c = onnx.Constant() {value=dense<2xf32 [nan:0x7fc00001, 3.0]>}
  %d = onnx.Constant() {value_ints=[1, 2]}
  %p = onnx.Max(%x, %a, %a, %c)
  %f = onnx.Cast(%d) {to=1}
  %h = onnx.Cast(%d) {to=1}
  %y = onnx.Sum(%p, %f, %h)
  return %y
}""")


def test_subgraph_initializer_reuses_outer_one() -> None:
    check("""
graph @g(%c: tensor<1xbool>, %x: tensor<"N"xf32>) -> (%r) {
  %k = const dense<f32 [2.0]>
  %m = onnx.Mul(%x, %k)
  %r = onnx.If(%c) {else_branch=graph @e() -> (%e0) {
    %k2 = const dense<f32 [2.0]>
    %e0 = onnx.Add(%m, %k2)
    return %e0
  }, then_branch=graph @t() -> (%t0) {
    %t0 = onnx.Neg(%m)
    return %t0
  }}
  return %r
}""", P, """
graph @g(%c: tensor<1xbool>, %x: tensor<"N"xf32>) -> (%r) {
  %k = const dense<f32 [2.0]>
  %m = onnx.Mul(%x, %k)
  %r = onnx.If(%c) {else_branch=graph @e() -> (%e0) {
    %e0 = onnx.Add(%m, %k)
    return %e0
  }, then_branch=graph @t() -> (%t0) {
    %t0 = onnx.Neg(%m)
    return %t0
  }}
  return %r
}""")


def test_constant_graph_output_takes_name_of_kept_constant_only_when_it_can() -> None:
    # %y is a Constant output equal to %a (not an output): %a takes the name %y;
    check("""
graph @g(%x: tensor<2xi64>) -> (%y, %z) {
  %a = onnx.Constant() {value=dense<2xi64 [4, 5]>}
  %z = onnx.Add(%x, %a)
  %y = onnx.Constant() {value=dense<2xi64 [4, 5]>}
  return %y, %z
}""", P, """
graph @g(%x: tensor<2xi64>) -> (%y, %z) {
  %y = onnx.Constant() {value=dense<2xi64 [4, 5]>}
  %z = onnx.Add(%x, %y)
  return %y, %z
}""")


@pytest.mark.parametrize("consts", [
    # different dtype / dims / bytes / quantization
    ('dense<2xi32 [1, 2]>', 'dense<2xi64 [1, 2]>'),
    ('dense<2xf32 [1.0, 2.0]>', 'dense<1x2xf32 [1.0, 2.0]>'),
    ('dense<2xf32 [0.0, 2.0]>', 'dense<2xf32 [-0.0, 2.0]>'),
])
def test_must_not_fire(consts) -> None:
    a, b = consts
    check(f"""
graph @g(%x: tensor<2xf32>) -> (%y, %z) {{
  %a = const {a}
  %b = const {b}
  %y = onnx.Identity(%a)
  %z = onnx.Identity(%b)
  return %y, %z
}}""", "dedup-initializers", None, fires=False)


def test_graph_input_initializer_is_never_merged() -> None:
    check("""
graph @g(%x: tensor<2xf32>, %w: tensor<2xf32> = dense<2xf32 [1.0, 2.0]>) -> (%y) {
  %k = const dense<2xf32 [1.0, 2.0]>
  %a = onnx.Add(%x, %w)
  %y = onnx.Add(%a, %k)
  return %y
}""", "dedup-initializers", None, fires=False)


def test_quantized_types_differ() -> None:
    check("""
graph @g(%x: tensor<2xi8>) -> (%y, %z) {
  %a = const : tensor<2xi8, quant<scale=0.5, zero_point=0>> = dense<2xi8 [1, -1]>
  %b = const : tensor<2xi8, quant<scale=0.25, zero_point=0>> = dense<2xi8 [1, -1]>
  %y = onnx.Add(%x, %a)
  %z = onnx.Add(%x, %b)
  return %y, %z
}""", "dedup-initializers", None, fires=False, run=False)


def test_external_tensors_compared_in_chunks(tmp_path) -> None:
    from edgec.ir import ArrayTensor, DType, ExternalTensor
    from edgec.passes.dedup_initializers import EDGE, tensor_fingerprint, tensors_equal

    n = 3 * EDGE // 4  # 3 * EDGE bytes: a fingerprint only hashes both ends
    a = np.arange(n, dtype=np.float32)
    b = a.copy()
    b[n // 2] = -1.0  # differs in the middle only
    path = tmp_path / "w.bin"
    path.write_bytes(a.tobytes() + a.tobytes() + b.tobytes())
    ta, ta2, tb = (ExternalTensor(str(path), k * a.nbytes, a.nbytes, DType.FLOAT, (n,)) for k in range(3))
    assert tensor_fingerprint(ta) == tensor_fingerprint(tb) == tensor_fingerprint(ArrayTensor(a))
    assert tensors_equal(ta, ta2) and tensors_equal(ta, ArrayTensor(a)) and tensors_equal(ArrayTensor(b), tb)
    assert not tensors_equal(ta, tb) and not tensors_equal(ArrayTensor(a), tb)
    assert ta._array is None and tb._array is None  # never loaded whole
