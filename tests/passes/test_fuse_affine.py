"""fuse-affine: constant Mul/Add into Conv/ConvTranspose/Gemm, MatMul + Add -> Gemm."""

from __future__ import annotations

import edgec.passes  # noqa: F401 - registers the passes
from passtest import check_pass, op_types

P = "fuse-affine"

CONV_HEAD = """opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2x4x4xf32>) -> (%y: tensor<"N"x2x4x4xf32>) {
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
"""


def test_conv_mul_per_channel() -> None:
    check_pass(CONV_HEAD + """
  %b = const dense<2xf32 [1.0, -1.0]>
  %s = const dense<2x1x1xf32 [2.0, 0.5]>
  %c = onnx.Conv(%x, %w, %b) : tensor<"N"x2x4x4xf32>
  %y = onnx.Mul(%s, %c) : tensor<"N"x2x4x4xf32>
  return %y
}""", P, """opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2x4x4xf32>) -> (%y: tensor<"N"x2x4x4xf32>) {
  %w2 = const dense<2x2x1x1xf32 [2.0, 4.0, 1.5, 2.0]>
  %b2 = const dense<2xf32 [2.0, -0.5]>
  %y = onnx.Conv(%x, %w2, %b2) : tensor<"N"x2x4x4xf32>
  return %y
}""", rtol=1e-5)


def test_conv_add_creates_bias() -> None:
    check_pass(CONV_HEAD + """
  %a = const dense<1x2x1x1xf32 [0.25, -4.0]>
  %c = onnx.Conv(%x, %w) : tensor<"N"x2x4x4xf32>
  %y = onnx.Add(%c, %a) : tensor<"N"x2x4x4xf32>
  return %y
}""", P, """opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2x4x4xf32>) -> (%y: tensor<"N"x2x4x4xf32>) {
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  %b2 = const dense<2xf32 [0.25, -4.0]>
  %y = onnx.Conv(%x, %w, %b2) : tensor<"N"x2x4x4xf32>
  return %y
}""", rtol=1e-5)


def test_conv_mul_then_add_scalar() -> None:
    model = check_pass(CONV_HEAD + """
  %s = const dense<f32 [3.0]>
  %a = const dense<f32 [1.0]>
  %c = onnx.Conv(%x, %w) : tensor<"N"x2x4x4xf32>
  %d = onnx.Mul(%c, %s) : tensor<"N"x2x4x4xf32>
  %y = onnx.Add(%a, %d) : tensor<"N"x2x4x4xf32>
  return %y
}""", P, rtol=1e-5)
    assert op_types(model) == ["Conv"]


def test_convtranspose_group2_mul() -> None:
    model = check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<1x4x3x3xf32>) -> (%y: tensor<1x4x3x3xf32>) {
  %w = const dense<4x2x1x1xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]>
  %s = const dense<4x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  %c = onnx.ConvTranspose(%x, %w) {group=2} : tensor<1x4x3x3xf32>
  %y = onnx.Mul(%c, %s) : tensor<1x4x3x3xf32>
  return %y
}""", P, rtol=1e-5)
    assert op_types(model) == ["ConvTranspose"]


def test_gemm_transb_mul_add() -> None:
    for trans in (0, 1):
        model = check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<"N"x2xf32>) {{
  %w = const dense<{"3x2" if trans == 0 else "2x3"}xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>
  %c0 = const dense<1x2xf32 [1.0, -1.0]>
  %s = const dense<2xf32 [2.0, -3.0]>
  %a = const dense<1x2xf32 [0.5, 0.25]>
  %c = onnx.Gemm(%x, %w, %c0) {{transB={trans}, beta=0.5}} : tensor<"N"x2xf32>
  %d = onnx.Mul(%c, %s) : tensor<"N"x2xf32>
  %y = onnx.Add(%d, %a) : tensor<"N"x2xf32>
  return %y
}}""", P, rtol=1e-5)
        assert op_types(model) == ["Gemm"]


def test_matmul_add_to_gemm_commuted() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>, %w: tensor<3x2xf32>) -> (%y: tensor<"N"x2xf32>) {
  %b = const dense<2xf32 [1.0, -1.0]>
  %c = onnx.MatMul(%x, %w) : tensor<"N"x2xf32>
  %y = onnx.Add(%b, %c) : tensor<"N"x2xf32>
  return %y
}""", P, """opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>, %w: tensor<3x2xf32>) -> (%y: tensor<"N"x2xf32>) {
  %b = const dense<2xf32 [1.0, -1.0]>
  %y = onnx.Gemm(%x, %w, %b) : tensor<"N"x2xf32>
  return %y
}""", rtol=1e-5)


# --- must not fire ------------------------------------------------------------------------------
def test_add_that_broadcasts_larger() -> None:
    """A (3,1,1,1,1)-shaped constant would turn the 4-D output into a 5-D one."""
    check_pass(CONV_HEAD.replace('(%y: tensor<"N"x2x4x4xf32>)', '(%y: tensor<3x"N"x2x4x4xf32>)') + """
  %a = const dense<3x1x1x1x1xf32 [1.0, 2.0, 3.0]>
  %c = onnx.Conv(%x, %w) : tensor<"N"x2x4x4xf32>
  %y = onnx.Add(%c, %a) : tensor<3x"N"x2x4x4xf32>
  return %y
}""", P, fires=False)


def test_spatially_varying_mul() -> None:
    check_pass(CONV_HEAD + """
  %s = const dense<1x1x1x4xf32 [1.0, 2.0, 3.0, 4.0]>
  %c = onnx.Conv(%x, %w) : tensor<"N"x2x4x4xf32>
  %y = onnx.Mul(%c, %s) : tensor<"N"x2x4x4xf32>
  return %y
}""", P, fires=False)


def test_nd_matmul_add_kept() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<"B"x"S"x3xf32>) -> (%y: tensor<"B"x"S"x2xf32>) {
  %w = const dense<3x2xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>
  %b = const dense<2xf32 [1.0, -1.0]>
  %c = onnx.MatMul(%x, %w) : tensor<"B"x"S"x2xf32>
  %y = onnx.Add(%c, %b) : tensor<"B"x"S"x2xf32>
  return %y
}""", P, fires=False)


def test_conv_output_shared() -> None:
    check_pass(CONV_HEAD.replace('-> (%y: tensor<"N"x2x4x4xf32>)', '-> (%y: tensor<"N"x2x4x4xf32>, %c: tensor<"N"x2x4x4xf32>)') + """
  %a = const dense<1x2x1x1xf32 [0.25, -4.0]>
  %c = onnx.Conv(%x, %w) : tensor<"N"x2x4x4xf32>
  %y = onnx.Add(%c, %a) : tensor<"N"x2x4x4xf32>
  return %y, %c
}""", P, fires=False)


def test_non_constant_addend() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2x4x4xf32>, %a: tensor<1x2x1x1xf32>) -> (%y: tensor<"N"x2x4x4xf32>) {
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  %c = onnx.Conv(%x, %w) : tensor<"N"x2x4x4xf32>
  %y = onnx.Add(%c, %a) : tensor<"N"x2x4x4xf32>
  return %y
}""", P, fires=False)
