"""fuse-pad: constant-mode spatial Pad into Conv / AveragePool / MaxPool pads."""

from __future__ import annotations

import edgec.passes  # noqa: F401 - registers the passes
from passtest import check_pass

P = "fuse-pad"


def test_pad_into_conv() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2x4x4xf32>) -> (%y: tensor<"N"x2x5x7xf32>) {
  %w = const dense<2x2x2x2xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]>
  %pads = const dense<8xi64 [0, 0, 1, 2, 0, 0, 1, 1]>
  %p = onnx.Pad(%x, %pads) : tensor<"N"x2x6x7xf32>
  %y = onnx.Conv(%p, %w) {pads=[0, 1, 0, 0]} : tensor<"N"x2x5x7xf32>
  return %y
}""", P, """opset(ai.onnx=17)
graph @g(%x: tensor<"N"x2x4x4xf32>) -> (%y: tensor<"N"x2x5x7xf32>) {
  %w = const dense<2x2x2x2xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]>
  %y = onnx.Conv(%x, %w) {pads=[1, 3, 1, 1]} : tensor<"N"x2x5x7xf32>
  return %y
}""", rtol=1e-5)


def test_pad_opset10_attrs_into_avgpool_count_include_pad() -> None:
    check_pass("""opset(ai.onnx=10)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x5x5xf32>) {
  %p = onnx.Pad(%x) {pads=[0, 0, 1, 1, 0, 0, 1, 1]} : tensor<1x2x6x6xf32>
  %y = onnx.AveragePool(%p) {kernel_shape=[2, 2], count_include_pad=1} : tensor<1x2x5x5xf32>
  return %y
}""", P, """opset(ai.onnx=10)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x5x5xf32>) {
  %y = onnx.AveragePool(%x) {count_include_pad=1, kernel_shape=[2, 2], pads=[1, 1, 1, 1]} : tensor<1x2x5x5xf32>
  return %y
}""", rtol=1e-5)


def test_pad_with_axes_and_neg_inf_into_maxpool() -> None:
    check_pass("""opset(ai.onnx=18)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x3x3xf32>) {
  %pads = const dense<4xi64 [1, 1, 1, 1]>
  %v = const dense<f32 [-inf]>
  %axes = const dense<2xi64 [2, 3]>
  %p = onnx.Pad(%x, %pads, %v, %axes) : tensor<1x2x6x6xf32>
  %y = onnx.MaxPool(%p) {kernel_shape=[2, 2], strides=[2, 2]} : tensor<1x2x3x3xf32>
  return %y
}""", P, """opset(ai.onnx=18)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x3x3xf32>) {
  %y = onnx.MaxPool(%x) {kernel_shape=[2, 2], pads=[1, 1, 1, 1], strides=[2, 2]} : tensor<1x2x3x3xf32>
  return %y
}""", rtol=1e-5)


# --- must not fire ------------------------------------------------------------------------------
def test_avgpool_exclude_pad_not_fused() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x5x5xf32>) {
  %pads = const dense<8xi64 [0, 0, 1, 1, 0, 0, 1, 1]>
  %p = onnx.Pad(%x, %pads) : tensor<1x2x6x6xf32>
  %y = onnx.AveragePool(%p) {kernel_shape=[2, 2]} : tensor<1x2x5x5xf32>
  return %y
}""", P, fires=False)


def test_maxpool_zero_pad_not_fused() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x5x5xf32>) {
  %pads = const dense<8xi64 [0, 0, 1, 1, 0, 0, 1, 1]>
  %p = onnx.Pad(%x, %pads) : tensor<1x2x6x6xf32>
  %y = onnx.MaxPool(%p) {kernel_shape=[2, 2]} : tensor<1x2x5x5xf32>
  return %y
}""", P, fires=False)


def test_channel_pad_nonzero_value_reflect_not_fused() -> None:
    for pads, extra, mode in (("[0, 1, 0, 0, 0, 0, 0, 0]", "", ""),
                              ("[0, 0, 1, 1, 0, 0, 1, 1]", ", %v", ""),
                              ("[0, 0, 1, 1, 0, 0, 1, 1]", "", ' {mode="reflect"}')):
        out = "1x3x3x3" if pads.startswith("[0, 1") else "1x2x5x5"
        pin = "1x3x4x4" if pads.startswith("[0, 1") else "1x2x6x6"
        check_pass(f"""opset(ai.onnx=17)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<{out}xf32>) {{
  %pads = const dense<8xi64 {pads}>
  %v = const dense<f32 [1.0]>
  %w = const dense<{out[2]}x{pin[2]}x2x2xf32 [{", ".join(["0.5"] * (int(out[2]) * int(pin[2]) * 4))}]>
  %p = onnx.Pad(%x, %pads{extra}){mode} : tensor<{pin}xf32>
  %y = onnx.Conv(%p, %w) : tensor<{out}xf32>
  return %y
}}""", P, fires=False)


def test_conv_auto_pad_not_fused() -> None:
    check_pass("""opset(ai.onnx=17)
graph @g(%x: tensor<1x1x4x4xf32>) -> (%y: tensor<1x1x6x6xf32>) {
  %pads = const dense<8xi64 [0, 0, 1, 1, 0, 0, 1, 1]>
  %w = const dense<1x1x1x1xf32 [2.0]>
  %p = onnx.Pad(%x, %pads) : tensor<1x1x6x6xf32>
  %y = onnx.Conv(%p, %w) {auto_pad="SAME_UPPER"} : tensor<1x1x6x6xf32>
  return %y
}""", P, fires=False)
