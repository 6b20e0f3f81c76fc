"""fuse-activation: activations folded into edgec.Fused* ops."""

from __future__ import annotations

import pytest

import edgec.passes  # noqa: F401 - registers the passes
from passtest import check_pass, op_types

P = "fuse-activation"

CONV = """graph @g(%x: tensor<"N"x2x4x4xf32>) -> (%y: tensor<"N"x2x4x4xf32>) {
  %w = const dense<2x2x1x1xf32 [1.0, -2.0, 3.0, -4.0]>
  %b = const dense<2xf32 [0.5, -0.5]>
  %c = onnx.Conv(%x, %w, %b) : tensor<"N"x2x4x4xf32>
"""


def test_conv_relu() -> None:
    check_pass("opset(ai.onnx=17)\n" + CONV + """
  %y = onnx.Relu(%c) : tensor<"N"x2x4x4xf32>
  return %y
}""", P, """opset(ai.onnx=17, edgec=1)
graph @g(%x: tensor<"N"x2x4x4xf32>) -> (%y: tensor<"N"x2x4x4xf32>) {
  %w = const dense<2x2x1x1xf32 [1.0, -2.0, 3.0, -4.0]>
  %b = const dense<2xf32 [0.5, -0.5]>
  %y = edgec.FusedConv(%x, %w, %b) {activation="Relu"} : tensor<"N"x2x4x4xf32>
  return %y
}""", rtol=1e-5)


def test_gemm_clip_constant_bounds() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<"N"x2xf32>) {
  %w = const dense<2x3xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>
  %lo = onnx.Constant() {value=dense<f32 [0.0]>}
  %hi = onnx.Constant() {value=dense<f32 [6.0]>}
  %c = onnx.Gemm(%x, %w) {transB=1} : tensor<"N"x2xf32>
  %y = onnx.Clip(%c, %lo, %hi) : tensor<"N"x2xf32>
  return %y
}""", P, """opset(ai.onnx=17, edgec=1)
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<"N"x2xf32>) {
  %w = const dense<2x3xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>
  %y = edgec.FusedGemm(%x, %w) {activation="Clip", activation_params=[0.0, 6.0], transB=1} : tensor<"N"x2xf32>
  return %y
}""", rtol=1e-5)


def test_matmul_bias_gelu_opset20() -> None:
    check_pass("""opset(ai.onnx=20)
graph @g(%x: tensor<"B"x4x3xf32>) -> (%y: tensor<"B"x4x2xf32>) {
  %w = const dense<3x2xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>
  %b = const dense<2xf32 [0.5, -0.5]>
  %m = onnx.MatMul(%x, %w) : tensor<"B"x4x2xf32>
  %a = onnx.Add(%b, %m) : tensor<"B"x4x2xf32>
  %y = onnx.Gelu(%a) {approximate="tanh"} : tensor<"B"x4x2xf32>
  return %y
}""", P, """opset(ai.onnx=20, edgec=1)
graph @g(%x: tensor<"B"x4x3xf32>) -> (%y: tensor<"B"x4x2xf32>) {
  %w = const dense<3x2xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>
  %b = const dense<2xf32 [0.5, -0.5]>
  %y = edgec.FusedMatMul(%x, %w, %b) {activation="GeluTanh"} : tensor<"B"x4x2xf32>
  return %y
}""", rtol=1e-5)


def test_conv_silu() -> None:
    model = check_pass("opset(ai.onnx=17)\n" + CONV + """
  %s = onnx.Sigmoid(%c) : tensor<"N"x2x4x4xf32>
  %y = onnx.Mul(%s, %c) : tensor<"N"x2x4x4xf32>
  return %y
}""", P, rtol=1e-5)
    assert op_types(model) == ["edgec.FusedConv"]
    assert model.graph.nodes[0].attr("activation") == "Silu"


@pytest.mark.parametrize("act,attrs,params", [
    ("LeakyRelu", "{alpha=0.25}", [0.25]), ("HardSigmoid", "{alpha=0.5, beta=0.25}", [0.5, 0.25]),
    ("Sigmoid", "", None), ("Tanh", "", None), ("HardSwish", "", None),
])
def test_convtranspose_and_matmul_activations(act: str, attrs: str, params) -> None:
    model = check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x3x3xf32>, %m: tensor<"N"x3xf32>) -> (%y: tensor<1x2x4x4xf32>, %z: tensor<"N"x2xf32>) {{
  %w = const dense<2x1x2x2xf32 [1.0, -2.0, 3.0, -4.0, 0.5, 0.25, -1.0, 2.0]>
  %v = const dense<3x2xf32 [1.0, 2.0, -3.0, 4.0, 5.0, -6.0]>
  %c = onnx.ConvTranspose(%x, %w) {{group=2}} : tensor<1x2x4x4xf32>
  %y = onnx.{act}(%c) {attrs} : tensor<1x2x4x4xf32>
  %mm = onnx.MatMul(%m, %v) : tensor<"N"x2xf32>
  %z = onnx.{act}(%mm) {attrs} : tensor<"N"x2xf32>
  return %y, %z
}}""", P, rtol=1e-5, atol=1e-6)
    assert op_types(model) == ["edgec.FusedConvTranspose", "edgec.FusedMatMul"]
    for n in model.graph:
        assert n.attr("activation") == act and n.attr("activation_params") == params


def test_fused_op_without_activation_and_opset10_clip() -> None:
    model = check_pass("""opset(ai.onnx=10, edgec=1)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x4x4xf32>) {
  %w = const dense<2x2x1x1xf32 [1.0, -2.0, 3.0, -4.0]>
  %c = edgec.FusedConv(%x, %w) : tensor<1x2x4x4xf32>
  %y = onnx.Clip(%c) {min=-1.0, max=1.5} : tensor<1x2x4x4xf32>
  return %y
}""", P, rtol=1e-5)
    n = model.graph.nodes[0]
    assert (n.op_type, n.attr("activation"), n.attr("activation_params")) == ("FusedConv", "Clip", [-1.0, 1.5])


# --- must not fire ------------------------------------------------------------------------------
def test_producer_has_other_user() -> None:
    check_pass("opset(ai.onnx=17)\n" + CONV.replace('-> (%y: tensor<"N"x2x4x4xf32>)', '-> (%y: tensor<"N"x2x4x4xf32>, %z: tensor<"N"x2x4x4xf32>)') + """
  %y = onnx.Relu(%c) : tensor<"N"x2x4x4xf32>
  %z = onnx.Neg(%c) : tensor<"N"x2x4x4xf32>
  return %y, %z
}""", P, fires=False)


def test_producer_is_graph_output() -> None:
    check_pass("opset(ai.onnx=17)\n" + CONV.replace('-> (%y: tensor<"N"x2x4x4xf32>)', '-> (%y: tensor<"N"x2x4x4xf32>, %c: tensor<"N"x2x4x4xf32>)') + """
  %y = onnx.Relu(%c) : tensor<"N"x2x4x4xf32>
  return %y, %c
}""", P, fires=False)


def test_clip_with_runtime_bound() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2x4x4xf32>, %hi: tensor<f32>) -> (%y: tensor<"N"x2x4x4xf32>) {
  %w = const dense<2x2x1x1xf32 [1.0, -2.0, 3.0, -4.0]>
  %c = onnx.Conv(%x, %w) : tensor<"N"x2x4x4xf32>
  %y = onnx.Clip(%c, _, %hi) : tensor<"N"x2x4x4xf32>
  return %y
}""", P, fires=False)


def test_activation_after_non_producer_and_bias_not_vector() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>, %z: tensor<"N"x3xf32>) -> (%y: tensor<"N"x2xf32>, %r: tensor<"N"x3xf32>) {
  %w = const dense<3x2xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>
  %b = const dense<1x2xf32 [0.5, -0.5]>
  %m = onnx.MatMul(%x, %w) : tensor<"N"x2xf32>
  %a = onnx.Add(%m, %b) : tensor<"N"x2xf32>
  %y = onnx.Relu(%a) : tensor<"N"x2xf32>
  %s = onnx.Add(%x, %z) : tensor<"N"x3xf32>
  %r = onnx.Relu(%s) : tensor<"N"x3xf32>
  return %y, %r
}""", P, fires=False)
