"""fuse-batchnorm: BN folded into Conv / ConvTranspose / Gemm / 2-D MatMul."""

from __future__ import annotations

import edgec.passes  # noqa: F401 - registers the passes
from passtest import check_pass, op_types

P = "fuse-batchnorm"

# s = gamma / sqrt(var + eps) = [4/2, 1/1] = [2, 1]
BN_PARAMS = """
  %s = const dense<2xf32 [4.0, 1.0]>
  %bb = const dense<2xf32 [0.5, 0.0]>
  %m = const dense<2xf32 [1.0, 2.0]>
  %v = const dense<2xf32 [3.75, 0.75]>
"""


def test_conv_bn() -> None:
    check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2x4x4xf32>) -> (%y: tensor<"N"x2x4x4xf32>) {{
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  %b = const dense<2xf32 [1.0, -1.0]>
  {BN_PARAMS}
  %c = onnx.Conv(%x, %w, %b) : tensor<"N"x2x4x4xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<"N"x2x4x4xf32>
  return %y
}}""", P, """opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2x4x4xf32>) -> (%y: tensor<"N"x2x4x4xf32>) {
  %w2 = const dense<2x2x1x1xf32 [2.0, 4.0, 3.0, 4.0]>
  %b2 = const dense<2xf32 [0.5, -3.0]>
  %y = onnx.Conv(%x, %w2, %b2) : tensor<"N"x2x4x4xf32>
  return %y
}""", rtol=1e-5)


def test_conv_bn_constant_nodes_no_bias_opset9() -> None:
    """Weights from Constant nodes, no conv bias, an old BN form (opset 9)."""
    check_pass(f"""opset(ai.onnx=9)
graph @g(%x: tensor<1x2x3x3xf32>) -> (%y: tensor<1x2x3x3xf32>) {{
  %w = onnx.Constant() {{value=dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>}}
  {BN_PARAMS}
  %c = onnx.Conv(%x, %w) : tensor<1x2x3x3xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<1x2x3x3xf32>
  return %y
}}""", P, """opset(ai.onnx=9)
graph @g(%x: tensor<1x2x3x3xf32>) -> (%y: tensor<1x2x3x3xf32>) {
  %w2 = const dense<2x2x1x1xf32 [2.0, 4.0, 3.0, 4.0]>
  %b2 = const dense<2xf32 [-1.5, -2.0]>
  %y = onnx.Conv(%x, %w2, %b2) : tensor<1x2x3x3xf32>
  return %y
}""", rtol=1e-5)


def test_convtranspose_group2_bn() -> None:
    """ConvTranspose weight is (C_in, C_out/group, k...): the scale runs along axis 1 per group."""
    model = check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x4x3x3xf32>) -> (%y: tensor<"N"x4x4x4xf32>) {
  %w = const dense<4x2x2x2xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0, 32.0]>
  %b = const dense<4xf32 [0.1, 0.2, 0.3, 0.4]>
  %s = const dense<4xf32 [1.0, 2.0, 3.0, 4.0]>
  %bb = const dense<4xf32 [0.5, -0.5, 1.5, 0.0]>
  %m = const dense<4xf32 [0.1, 0.3, -0.2, 1.0]>
  %v = const dense<4xf32 [1.0, 2.0, 0.5, 4.0]>
  %c = onnx.ConvTranspose(%x, %w, %b) {group=2} : tensor<"N"x4x4x4xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) : tensor<"N"x4x4x4xf32>
  return %y
}""", P, rtol=1e-5, atol=1e-5)  # atol: float32 cancellation near zero
    assert op_types(model) == ["ConvTranspose"]


def test_gemm_transb_0_and_1() -> None:
    for trans, w in ((0, "[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]"), (1, "[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]")):
        wshape = "3x2" if trans == 0 else "2x3"
        model = check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<"N"x2xf32>) {{
  %w = const dense<{wshape}xf32 {w}>
  %c0 = const dense<2xf32 [1.0, -1.0]>
  {BN_PARAMS}
  %c = onnx.Gemm(%x, %w, %c0) {{transB={trans}, alpha=0.5, beta=2.0}} : tensor<"N"x2xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<"N"x2xf32>
  return %y
}}""", P, rtol=1e-5)
        assert op_types(model) == ["Gemm"]


def test_matmul_2d_bn_becomes_gemm() -> None:
    check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2xf32>) -> (%y: tensor<"N"x2xf32>) {{
  %w = const dense<2x2xf32 [1.0, 2.0, 3.0, 4.0]>
  {BN_PARAMS}
  %c = onnx.MatMul(%x, %w) : tensor<"N"x2xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<"N"x2xf32>
  return %y
}}""", P, """opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2xf32>) -> (%y: tensor<"N"x2xf32>) {
  %w2 = const dense<2x2xf32 [2.0, 2.0, 6.0, 4.0]>
  %b2 = const dense<2xf32 [-1.5, -2.0]>
  %y = onnx.Gemm(%x, %w2, %b2) {beta=1.0} : tensor<"N"x2xf32>
  return %y
}""", rtol=1e-5)


def test_fp16() -> None:
    model = check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x4x4xf16>) -> (%y: tensor<1x2x4x4xf16>) {
  %w = const dense<2x2x1x1xf16 [1.0, 2.0, 3.0, 4.0]>
  %s = const dense<2xf16 [4.0, 1.0]>
  %bb = const dense<2xf16 [0.5, 0.0]>
  %m = const dense<2xf16 [1.0, 2.0]>
  %v = const dense<2xf16 [3.75, 0.75]>
  %c = onnx.Conv(%x, %w) : tensor<1x2x4x4xf16>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {epsilon=0.25} : tensor<1x2x4x4xf16>
  return %y
}""", P, rtol=1e-3)
    assert op_types(model) == ["Conv"]
    assert all(v.dtype.short == "f16" for v in model.graph.initializers.values())


def test_shared_weight_gets_a_new_tensor() -> None:
    """The weight is also used by a second Conv: it keeps the original weight."""
    model = check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x4x4xf32>, %z: tensor<1x2x4x4xf32>) {{
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  {BN_PARAMS}
  %c = onnx.Conv(%x, %w) : tensor<1x2x4x4xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<1x2x4x4xf32>
  %z = onnx.Conv(%x, %w) : tensor<1x2x4x4xf32>
  return %y, %z
}}""", P, rtol=1e-5)
    convs = list(model.graph)
    assert [n.op_type for n in convs] == ["Conv", "Conv"]
    assert convs[0].input(1) is not convs[1].input(1)
    assert convs[1].input(1).name == "w"


def test_bn_in_subgraph() -> None:
    model = check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x4x4xf32>, %cond: tensor<1xbool>) -> (%r: tensor<1x2x4x4xf32>) {{
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  {BN_PARAMS}
  %r = onnx.If(%cond) {{then_branch=graph @t() -> (%y) {{
    %c = onnx.Conv(%x, %w) : tensor<1x2x4x4xf32>
    %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<1x2x4x4xf32>
    return %y
  }}, else_branch=graph @e() -> (%x2) {{
    %x2 = onnx.Neg(%x) : tensor<1x2x4x4xf32>
    return %x2
  }}}} : tensor<1x2x4x4xf32>
  return %r
}}""", P, rtol=1e-5)
    then = model.graph.nodes[0].attr("then_branch")
    assert [n.op_type for n in then] == ["Conv"]


# --- must not fire ------------------------------------------------------------------------------
def test_training_mode_not_fused() -> None:
    check_pass(f"""opset(ai.onnx=15)
graph @g(%x: tensor<2x2x4x4xf32>) -> (%y: tensor<2x2x4x4xf32>) {{
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  {BN_PARAMS}
  %c = onnx.Conv(%x, %w) : tensor<2x2x4x4xf32>
  %y, %rm, %rv = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{training_mode=1}} : tensor<2x2x4x4xf32>, tensor<2xf32>, tensor<2xf32>
  return %y
}}""", P, fires=False, run=False)


def test_conv_output_is_graph_output() -> None:
    check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x4x4xf32>, %c: tensor<1x2x4x4xf32>) {{
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  {BN_PARAMS}
  %c = onnx.Conv(%x, %w) : tensor<1x2x4x4xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<1x2x4x4xf32>
  return %y, %c
}}""", P, fires=False)


def test_conv_output_has_other_user() -> None:
    check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x4x4xf32>, %z: tensor<1x2x4x4xf32>) {{
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  {BN_PARAMS}
  %c = onnx.Conv(%x, %w) : tensor<1x2x4x4xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<1x2x4x4xf32>
  %z = onnx.Relu(%c) : tensor<1x2x4x4xf32>
  return %y, %z
}}""", P, fires=False)


def test_matmul_3d_not_fused() -> None:
    """BN normalizes axis 1, which is not MatMul's column axis for a 3-D product."""
    check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x2xf32>) -> (%y: tensor<1x2x2xf32>) {{
  %w = const dense<2x2xf32 [1.0, 2.0, 3.0, 4.0]>
  {BN_PARAMS}
  %c = onnx.MatMul(%x, %w) : tensor<1x2x2xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<1x2x2xf32>
  return %y
}}""", P, fires=False)


def test_weight_is_graph_input() -> None:
    check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x4x4xf32>, %w: tensor<2x2x1x1xf32> = dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>) -> (%y: tensor<1x2x4x4xf32>) {{
  {BN_PARAMS}
  %c = onnx.Conv(%x, %w) : tensor<1x2x4x4xf32>
  %y = onnx.BatchNormalization(%c, %s, %bb, %m, %v) {{epsilon=0.25}} : tensor<1x2x4x4xf32>
  return %y
}}""", P, fires=False)
