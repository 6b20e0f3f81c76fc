"""merge-shape-ops: chains of Reshape/Flatten/Squeeze/Unsqueeze/Transpose."""

from __future__ import annotations


import pytest
from passtest import check_pass


# check_pass compares canonical IR (rule tags, names and locations normalised away).
check = check_pass


P = "merge-shape-ops,dce"


def test_reshape_chain_resolves_zero_from_first_shape() -> None:
    # the second shape's 0 copies dim 0 of the first's result: 6 (from the first shape)
    check("""
graph @g(%x: tensor<"N"x6x4xf32>) -> (%y: tensor<6x"N"x4xf32>) {
  %s1 = const dense<3xi64 [6, -1, 4]>
  %s2 = const dense<3xi64 [0, -1, 4]>
  %a = onnx.Reshape(%x, %s1)
  %y = onnx.Reshape(%a, %s2) : tensor<6x"N"x4xf32>
  return %y
}""", P, """
graph @g(%x: tensor<"N"x6x4xf32>) -> (%y: tensor<6x"N"x4xf32>) {
  %s = const dense<3xi64 [6, -1, 4]>
  %y = onnx.Reshape(%x, %s) : tensor<6x"N"x4xf32>
  return %y
}""")


def test_flatten_then_reshape_and_zero_copying_symbolic_dim() -> None:
    # first shape's 0 copies x's dim 0 ("N"); the second's 0 copies the same dim: stays 0
    check("""
graph @g(%x: tensor<"N"x2x3xf32>) -> (%y: tensor<"N"x3x2xf32>, %z) {
  %s1 = const dense<2xi64 [0, -1]>
  %s2 = const dense<3xi64 [0, 3, 2]>
  %a = onnx.Reshape(%x, %s1)
  %y = onnx.Reshape(%a, %s2) : tensor<"N"x3x2xf32>
  %f = onnx.Flatten(%x) {axis=1}
  %s3 = const dense<2xi64 [-1, 2]>
  %z = onnx.Reshape(%f, %s3)
  return %y, %z
}""", P, """
graph @g(%x: tensor<"N"x2x3xf32>) -> (%y: tensor<"N"x3x2xf32>, %z) {
  %s2 = const dense<3xi64 [0, 3, 2]>
  %s3 = const dense<2xi64 [-1, 2]>
  %y = onnx.Reshape(%x, %s2) : tensor<"N"x3x2xf32>
  %z = onnx.Reshape(%x, %s3)
  return %y, %z
}""")


def test_transpose_chains_compose_or_cancel() -> None:
    check("""
graph @g(%x: tensor<"N"x2x3xf32>) -> (%y, %z) {
  %a = onnx.Transpose(%x) {perm=[0, 2, 1]}
  %b = onnx.Transpose(%a) {perm=[0, 2, 1]}
  %y = onnx.Relu(%b)
  %c = onnx.Transpose(%x) {perm=[1, 0, 2]}
  %z = onnx.Transpose(%c) {perm=[2, 0, 1]}
  return %y, %z
}""", P, """
graph @g(%x: tensor<"N"x2x3xf32>) -> (%y, %z) {
  %y = onnx.Relu(%x)
  %z = onnx.Transpose(%x) {perm=[2, 1, 0]}
  return %y, %z
}""")


def test_squeeze_unsqueeze_chains_opset13_inputs() -> None:
    check("""
graph @g(%x: tensor<"N"x3xf32>) -> (%y, %z, %w) {
  %a0 = const dense<1xi64 [0]>
  %a1 = const dense<1xi64 [-1]>
  %u = onnx.Unsqueeze(%x, %a0)
  %y = onnx.Unsqueeze(%u, %a1)
  %v = onnx.Unsqueeze(%x, %a1)
  %z = onnx.Squeeze(%v, %a1)
  %p = onnx.Unsqueeze(%x, %a0)
  %q = onnx.Unsqueeze(%p, %a0)
  %r = onnx.Squeeze(%q, %a0)
  %w = onnx.Squeeze(%r, %a0)
  return %y, %z, %w
}""", P, """
graph @g(%x: tensor<"N"x3xf32>) -> (%y, %z, %w) {
  %axes = const dense<2xi64 [0, 3]>
  %y = onnx.Unsqueeze(%x, %axes)
  %z = onnx.Identity(%x)
  %w = onnx.Identity(%x)
  return %y, %z, %w
}""")


def test_axes_attribute_form_opset11_in_if_branch() -> None:
    check("""
opset(ai.onnx=11)
graph @g(%c: tensor<1xbool>, %x: tensor<2x"N"xf32>) -> (%r) {
  %r = onnx.If(%c) {else_branch=graph @e() -> (%e2) {
    %e1 = onnx.Unsqueeze(%x) {axes=[1]}
    %e2 = onnx.Unsqueeze(%e1) {axes=[0]}
    return %e2
  }, then_branch=graph @t() -> (%t3) {
    %t1 = onnx.Unsqueeze(%x) {axes=[0, 3]}
    %t2 = onnx.Squeeze(%t1) {axes=[3]}
    %t3 = onnx.Squeeze(%t2) {axes=[0]}
    return %t3
  }}
  return %r
}""", P, """
opset(ai.onnx=11)
graph @g(%c: tensor<1xbool>, %x: tensor<2x"N"xf32>) -> (%r) {
  %r = onnx.If(%c) {else_branch=graph @e() -> (%e2) {
    %e2 = onnx.Unsqueeze(%x) {axes=[0, 2]}
    return %e2
  }, then_branch=graph @t() -> (%t3) {
    %t3 = onnx.Identity(%x)
    return %t3
  }}
  return %r
}""", run=False)  # the branches differ in rank: not runnable, but the IR is the point


@pytest.mark.parametrize("body", [
    # first result used twice
    '%s = const dense<2xi64 [-1, 4]>\n  %a = onnx.Reshape(%x, %s)\n  %b = onnx.Reshape(%a, %s)\n  %y = onnx.Add(%a, %b)',
    # 0 in the second shape copies an unknown dim of the intermediate
    '%s1 = const dense<2xi64 [-1, 4]>\n  %s2 = const dense<2xi64 [0, 4]>\n  %a = onnx.Reshape(%x, %s1)\n  %y = onnx.Reshape(%a, %s2)',
    # dynamic second shape without allowzero
    '%sh = onnx.Shape(%x)\n  %s1 = const dense<2xi64 [-1, 4]>\n  %a = onnx.Reshape(%x, %s1)\n  %y = onnx.Reshape(%a, %sh)',
    # Squeeze then Unsqueeze on different axes; negative axes with unknown rank handled elsewhere
    '%a0 = const dense<1xi64 [0]>\n  %a1 = const dense<1xi64 [1]>\n  %u = onnx.Unsqueeze(%x, %a0)\n  %y = onnx.Squeeze(%u, %a1)',
    # intermediate is a graph output
    '%a = onnx.Transpose(%x) {perm=[1, 0]}\n  %y = onnx.Transpose(%a) {perm=[1, 0]}\n  return %y, %a',
])
def test_must_not_fire(body: str) -> None:
    ret = "" if "return" in body else "\n  return %y"
    check(f"""
graph @g(%x: tensor<"N"x4xf32>) {{
  {body}{ret}
}}""", "merge-shape-ops", None, fires=False, run=False)


def test_negative_axes_need_rank() -> None:
    check("""
graph @g(%x: tensor<*xf32>) -> (%y) {
  %a = const dense<1xi64 [-1]>
  %u = onnx.Unsqueeze(%x, %a)
  %y = onnx.Unsqueeze(%u, %a)
  return %y
}""", "merge-shape-ops", None, fires=False, run=False)


def test_function_attribute_reference_is_not_guessed() -> None:
    check("""
opset(ai.onnx=21, custom=1)
graph @g(%x: tensor<2x3xf32>) -> (%y) {
  %y = custom.F(%x) {perm=[1, 0]}
  return %y
}
func @custom.F(%a) -> (%z) attrs[perm] opset(ai.onnx=21) {
  %t = onnx.Transpose(%a) {perm:ints=$perm}
  %z = onnx.Transpose(%t)
  return %z
}""", "merge-shape-ops,eliminate-noops", None, fires=False, run=False)
