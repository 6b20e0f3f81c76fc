"""fold-constants: constant inputs, shape-derived values, size rules, what must never fold."""

from __future__ import annotations

import pytest

import edgec.passes  # noqa: F401 - registers the passes
from edgec.ir.parser import parse_model
from edgec.passmanager import PassManager, PassManagerOptions
from passtest import check_pass, op_types

P = "fold-constants"


def test_constant_chain_folds_and_cleans_up() -> None:
    check_pass("""
graph @g(%x: tensor<"N"x2xf32>) -> (%y: tensor<"N"x2xf32>) {
  %a = const dense<2xf32 [1.5, -2.0]>
  %b = const dense<2xf32 [0.25, 4.0]>
  %s = onnx.Add(%a, %b) : tensor<2xf32>
  %m = onnx.Mul(%s, %a) : tensor<2xf32>
  %y = onnx.Add(%x, %m) : tensor<"N"x2xf32>
  return %y
}""", P, """
graph @g(%x: tensor<"N"x2xf32>) -> (%y: tensor<"N"x2xf32>) {
  %m = const dense<2xf32 [2.625, -4.0]>
  %y = onnx.Add(%x, %m) : tensor<"N"x2xf32>
  return %y
}""")


def test_graph_output_folded_keeps_its_name() -> None:
    check_pass("""
graph @g(%x: tensor<3xi64>) -> (%y: tensor<3xi64>, %z: tensor<3xi64>) {
  %a = const dense<3xi64 [1, 2, 3]>
  %y = onnx.Mul(%a, %a) : tensor<3xi64>
  %z = onnx.Add(%x, %y) : tensor<3xi64>
  return %y, %z
}""", P, """
graph @g(%x: tensor<3xi64>) -> (%y: tensor<3xi64>, %z: tensor<3xi64>) {
  %y = const dense<3xi64 [1, 4, 9]>
  %z = onnx.Add(%x, %y) : tensor<3xi64>
  return %y, %z
}""")


def test_shape_of_static_dims_folds_even_with_a_dynamic_batch() -> None:
    # Shape(x, start=1) reads only static dims; Shape(x) of the dynamic batch stays.
    check_pass("""
opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3x4xf32>) -> (%y: tensor<"N"x12xf32>, %s: tensor<3xi64>) {
  %t = onnx.Shape(%x) {start=1} : tensor<2xi64>
  %p = onnx.ReduceProd(%t) {keepdims=1} : tensor<1xi64>
  %m1 = const dense<1xi64 [-1]>
  %shape = onnx.Concat(%m1, %p) {axis=0} : tensor<2xi64>
  %y = onnx.Reshape(%x, %shape) : tensor<"N"x12xf32>
  %s = onnx.Shape(%x) : tensor<3xi64>
  return %y, %s
}""", P, """
opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3x4xf32>) -> (%y: tensor<"N"x12xf32>, %s: tensor<3xi64>) {
  %shape = const dense<2xi64 [-1, 12]>
  %y = onnx.Reshape(%x, %shape) : tensor<"N"x12xf32>
  %s = onnx.Shape(%x) : tensor<3xi64>
  return %y, %s
}""")


def test_shape_value_chain_folds_static_entries_only() -> None:
    # Gather(Shape(x), 1) is the static 3: it folds; the batch entry (Gather 0) stays dynamic.
    check_pass("""
opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<i64>, %n: tensor<i64>) {
  %s = onnx.Shape(%x) : tensor<2xi64>
  %i1 = const dense<i64 [1]>
  %i0 = const dense<i64 [0]>
  %y = onnx.Gather(%s, %i1) {axis=0} : tensor<i64>
  %n = onnx.Gather(%s, %i0) {axis=0} : tensor<i64>
  return %y, %n
}""", P, """
opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<i64>, %n: tensor<i64>) {
  %i0 = const dense<i64 [0]>
  %y = const dense<i64 [3]>
  %s = onnx.Shape(%x) : tensor<2xi64>
  %n = onnx.Gather(%s, %i0) {axis=0} : tensor<i64>
  return %y, %n
}""")


def test_folds_inside_a_subgraph_with_outer_constants() -> None:
    check_pass("""
graph @g(%c: tensor<bool>, %x: tensor<2xf32>) -> (%y: tensor<2xf32>) {
  %a = const dense<2xf32 [1.0, 2.0]>
  %y = onnx.If(%c) {else_branch=graph @e() -> (%r) {
    %k = onnx.Neg(%a) : tensor<2xf32>
    %r = onnx.Add(%x, %k) : tensor<2xf32>
    return %r
  }, then_branch=graph @t() -> (%x) {
  }} : tensor<2xf32>
  return %y
}""", P, """
graph @g(%c: tensor<bool>, %x: tensor<2xf32>) -> (%y: tensor<2xf32>) {
  %y = onnx.If(%c) {else_branch=graph @e() -> (%r: tensor<2xf32>) {
    %k = const dense<2xf32 [-1.0, -2.0]>
    %r = onnx.Add(%x, %k) : tensor<2xf32>
    return %r
  }, then_branch=graph @t() -> (%x: tensor<2xf32>) {
  }} : tensor<2xf32>
  return %y
}""")


def test_function_body_folds_to_a_constant_node() -> None:
    m = check_pass("""
opset(ai.onnx=17, local=1)
graph @g(%x: tensor<2xf32>) -> (%y: tensor<2xf32>) {
  %y = local.F(%x)
  return %y
}
func @local.F(%a) -> (%b) opset(ai.onnx=17) {
  %one = onnx.Constant() {value=dense<2xf32 [1.0, 2.0]>}
  %two = onnx.Add(%one, %one)
  %b = onnx.Mul(%a, %two)
  return %b
}""", P, None, run=False)
    body = list(m.functions.values())[0].graph
    assert [n.op_type for n in body] == ["Constant", "Mul"]
    assert not body.initializers


# --- must not fire ------------------------------------------------------------------------------

def test_initializer_that_is_a_graph_input_is_not_folded() -> None:
    check_pass("""
graph @g(%x: tensor<2xf32>, %w: tensor<2xf32> = dense<2xf32 [1.0, 2.0]>) -> (%y: tensor<2xf32>) {
  %k = const dense<2xf32 [3.0, 4.0]>
  %s = onnx.Add(%w, %k) : tensor<2xf32>
  %y = onnx.Mul(%x, %s) : tensor<2xf32>
  return %y
}""", P, None, fires=False)


def test_random_ops_are_never_folded() -> None:
    check_pass("""
graph @g(%x: tensor<2x2xf32>) -> (%y: tensor<2x2xf32>) {
  %k = const dense<2x2xf32 [1.0, 2.0, 3.0, 4.0]>
  %r = onnx.RandomNormalLike(%k) {seed=3.0} : tensor<2x2xf32>
  %q = onnx.RandomUniform() {shape=[2, 2], seed=5.0} : tensor<2x2xf32>
  %s = onnx.Add(%r, %q) : tensor<2x2xf32>
  %y = onnx.Add(%x, %s) : tensor<2x2xf32>
  return %y
}""", P, None, fires=False, run=False)


def test_tile_and_constant_of_shape_blow_ups_stay() -> None:
    check_pass("""
graph @g(%x: tensor<4000xf32>) -> (%y: tensor<4000xf32>) {
  %k = const dense<4xf32 [1.0, 2.0, 3.0, 4.0]>
  %reps = const dense<1xi64 [1000]>
  %t = onnx.Tile(%k, %reps) : tensor<4000xf32>
  %shape = const dense<1xi64 [4000]>
  %z = onnx.ConstantOfShape(%shape) {value=dense<1xf32 [0.5]>} : tensor<4000xf32>
  %s = onnx.Add(%t, %z) : tensor<4000xf32>
  %y = onnx.Add(%x, %s) : tensor<4000xf32>
  return %y
}""", P, None, fires=False)


def test_shape_of_a_dynamic_tensor_is_not_folded() -> None:
    check_pass("""
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<"N"x3xf32>) {
  %s = onnx.Shape(%x) : tensor<2xi64>
  %y = onnx.Reshape(%x, %s) : tensor<"N"x3xf32>
  return %y
}""", P, None, fires=False)


def test_custom_domain_and_failing_nodes_are_skipped() -> None:
    # A custom op is never evaluated; a Reshape whose constants do not fit fails to evaluate: skipped.
    model = parse_model("""
opset(ai.onnx=17, custom=1)
graph @g(%x: tensor<5xf32>) -> (%y: tensor<5xf32>, %z) {
  %k = const dense<5xf32 [1.0, 2.0, 3.0, 4.0, 5.0]>
  %c = custom.Op(%k)
  %bad = const dense<2xi64 [2, 2]>
  %z = onnx.Reshape(%k, %bad)
  %y = onnx.Add(%x, %k) : tensor<5xf32>
  return %y, %z
}""")
    pm = PassManager.with_options(P, PassManagerOptions())
    assert not pm.run(model)
    assert op_types(model) == ["custom.Op", "Reshape", "Add"]
    assert pm.ctx.stats[P].get("eval-failed") == 1


def test_total_bytes_cap_stops_folding_with_a_warning() -> None:
    text = """
graph @g(%x: tensor<16xf32>) -> (%y: tensor<16xf32>) {
  %a = const elided<16xf32>
  %b = const elided<16xf32>
  %c = const elided<16xf32>
  %ab = onnx.Add(%a, %b) : tensor<16xf32>
  %bc = onnx.Mul(%b, %c) : tensor<16xf32>
  %s = onnx.Add(%x, %ab) : tensor<16xf32>
  %y = onnx.Add(%s, %bc) : tensor<16xf32>
  return %y
}"""
    model = parse_model(text, allow_elided=True)
    pm = PassManager.with_options(P + "{max-total-bytes=100}", PassManagerOptions(verify_each=True))
    assert pm.run(model)
    assert op_types(model) == ["Mul", "Add", "Add"]  # the first fold (64 bytes) fits, the second does not
    assert any("max-total-bytes=100" in w for w in pm.ctx.warnings)
    check_pass(parse_model(text, allow_elided=True), P + "{max-total-bytes=100}", None)


# --- real models --------------------------------------------------------------------------------

PIPELINE = "infer-shapes,lift-constants,fold-constants,simplify-shapes,inline-if,dce"
ZOO = {  # model -> must the node count drop (resnet18 has nothing constant to fold)
    "bert_encoder": True, "vit": True, "resnet18": False, "paddle_style": True, "recurrent_if_loop": True,
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_keep_their_outputs(name: str) -> None:
    pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from edgec.backends.onnx_export import to_proto
    from edgec.frontend.onnx_import import from_proto
    from zoo import TEST_PARAMS, get, make_inputs

    proto = get(name, **TEST_PARAMS[name])
    model = from_proto(proto, None)
    before = sum(1 for _ in model.graph.all_nodes())
    PassManager.with_options(PIPELINE, PassManagerOptions(verify_each=True)).run(model)
    after = sum(1 for _ in model.graph.all_nodes())
    assert after < before if ZOO[name] else after <= before, (before, after)

    def session(p):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"])

    want_sess, got_sess = session(proto), session(to_proto(model))
    for dims in ({"batch": 1, "seq": 5}, {"batch": 3, "seq": 11}):
        feeds = make_inputs(proto, seed=0, dims=dims)
        for w, g in zip(want_sess.run(None, feeds), got_sess.run(None, feeds)):
            assert w.dtype == g.dtype and w.shape == g.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
