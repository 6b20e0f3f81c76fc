"""simplify-shapes: exporter shape chains become constants, dynamic dims stay dynamic (two batch sizes)."""

from __future__ import annotations

import edgec.passes  # noqa: F401 - registers the passes
from passtest import check_pass

P = "simplify-shapes"


def test_bert_style_reshape_copies_symbolic_dims_with_zero() -> None:
    check_pass("""
opset(ai.onnx=17)
graph @g(%x: tensor<"B"x"S"x8xf32>) -> (%y: tensor<"B"x"S"x2x4xf32>) {
  %s = onnx.Shape(%x) : tensor<3xi64>
  %i0 = const dense<i64 [0]>
  %i1 = const dense<i64 [1]>
  %ax = const dense<1xi64 [0]>
  %b = onnx.Gather(%s, %i0) {axis=0} : tensor<i64>
  %t = onnx.Gather(%s, %i1) {axis=0} : tensor<i64>
  %ub = onnx.Unsqueeze(%b, %ax) : tensor<1xi64>
  %ut = onnx.Unsqueeze(%t, %ax) : tensor<1xi64>
  %h = const dense<1xi64 [2]>
  %d = const dense<1xi64 [4]>
  %shape = onnx.Concat(%ub, %ut, %h, %d) {axis=0} : tensor<4xi64>
  %y = onnx.Reshape(%x, %shape) : tensor<"B"x"S"x2x4xf32>
  return %y
}""", P, """
opset(ai.onnx=17)
graph @g(%x: tensor<"B"x"S"x8xf32>) -> (%y: tensor<"B"x"S"x2x4xf32>) {
  %c = const dense<4xi64 [0, 0, 2, 4]>
  %y = onnx.Reshape(%x, %c) : tensor<"B"x"S"x2x4xf32>
  return %y
}""")


def test_one_unknown_entry_becomes_minus_one() -> None:
    check_pass("""
opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3x4xf32>) -> (%y: tensor<"N*3"x4xf32>) {
  %s = onnx.Shape(%x) : tensor<3xi64>
  %i0 = const dense<i64 [0]>
  %n = onnx.Gather(%s, %i0) {axis=0} : tensor<i64>
  %three = const dense<i64 [3]>
  %n3 = onnx.Mul(%n, %three) : tensor<i64>
  %ax = const dense<1xi64 [0]>
  %u = onnx.Unsqueeze(%n3, %ax) : tensor<1xi64>
  %four = const dense<1xi64 [4]>
  %shape = onnx.Concat(%u, %four) {axis=0} : tensor<2xi64>
  %y = onnx.Reshape(%x, %shape) : tensor<"N*3"x4xf32>
  return %y
}""", P, """
opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3x4xf32>) -> (%y: tensor<"N*3"x4xf32>) {
  %c = const dense<2xi64 [-1, 4]>
  %y = onnx.Reshape(%x, %c) : tensor<"N*3"x4xf32>
  return %y
}""")


def test_fully_known_operands_of_expand_constant_of_shape_and_slice() -> None:
    check_pass("""
opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>, %v: tensor<1x1xf32>) -> (%e: tensor<2x3xf32>, %z: tensor<3x2xf32>, %sl: tensor<"N"x2xf32>) {
  %s = onnx.Shape(%x) : tensor<2xi64>
  %i1 = const dense<1xi64 [1]>
  %three = onnx.Gather(%s, %i1) {axis=0} : tensor<1xi64>
  %two = const dense<1xi64 [2]>
  %es = onnx.Concat(%two, %three) {axis=0} : tensor<2xi64>
  %e = onnx.Expand(%v, %es) : tensor<2x3xf32>
  %zs = onnx.Concat(%three, %two) {axis=0} : tensor<2xi64>
  %z = onnx.ConstantOfShape(%zs) {value=dense<1xf32 [1.5]>} : tensor<3x2xf32>
  %one = const dense<1xi64 [1]>
  %end = onnx.Sub(%three, %one) : tensor<1xi64>
  %zero = const dense<1xi64 [0]>
  %sl = onnx.Slice(%x, %zero, %end, %one) : tensor<"N"x2xf32>
  return %e, %z, %sl
}""", P, """
opset(ai.onnx=17)
graph @g(%x: tensor<"N"x3xf32>, %v: tensor<1x1xf32>) -> (%e: tensor<2x3xf32>, %z: tensor<3x2xf32>, %sl: tensor<"N"x2xf32>) {
  %one = const dense<1xi64 [1]>
  %zero = const dense<1xi64 [0]>
  %c0 = const dense<2xi64 [2, 3]>
  %c1 = const dense<2xi64 [3, 2]>
  %c2 = const dense<1xi64 [2]>
  %e = onnx.Expand(%v, %c0) : tensor<2x3xf32>
  %z = onnx.ConstantOfShape(%c1) {value=dense<1xf32 [1.5]>} : tensor<3x2xf32>
  %sl = onnx.Slice(%x, %zero, %c2, %one) : tensor<"N"x2xf32>
  return %e, %z, %sl
}""")


def test_reshape_inside_a_subgraph_reading_an_outer_shape_chain() -> None:
    check_pass("""
opset(ai.onnx=17)
graph @g(%c: tensor<1xbool>, %x: tensor<"N"x6xf32>) -> (%y: tensor<"N"x2x3xf32>) {
  %s = onnx.Shape(%x) : tensor<2xi64>
  %i0 = const dense<1xi64 [0]>
  %n = onnx.Gather(%s, %i0) {axis=0} : tensor<1xi64>
  %rest = const dense<2xi64 [2, 3]>
  %shape = onnx.Concat(%n, %rest) {axis=0} : tensor<3xi64>
  %y = onnx.If(%c) {else_branch=graph @e() -> (%r: tensor<"N"x2x3xf32>) {
    %r = onnx.Reshape(%x, %shape) : tensor<"N"x2x3xf32>
    return %r
  }, then_branch=graph @t() -> (%q: tensor<"N"x2x3xf32>) {
    %nx = onnx.Neg(%x) : tensor<"N"x6xf32>
    %q = onnx.Reshape(%nx, %shape) : tensor<"N"x2x3xf32>
    return %q
  }} : tensor<"N"x2x3xf32>
  return %y
}""", P, """
opset(ai.onnx=17)
graph @g(%c: tensor<1xbool>, %x: tensor<"N"x6xf32>) -> (%y: tensor<"N"x2x3xf32>) {
  %y = onnx.If(%c) {else_branch=graph @e() -> (%r: tensor<"N"x2x3xf32>) {
    %k = const dense<3xi64 [0, 2, 3]>
    %r = onnx.Reshape(%x, %k) : tensor<"N"x2x3xf32>
    return %r
  }, then_branch=graph @t() -> (%q: tensor<"N"x2x3xf32>) {
    %k2 = const dense<3xi64 [0, 2, 3]>
    %nx = onnx.Neg(%x) : tensor<"N"x6xf32>
    %q = onnx.Reshape(%nx, %k2) : tensor<"N"x2x3xf32>
    return %q
  }} : tensor<"N"x2x3xf32>
  return %y
}""")


# --- must not fire ------------------------------------------------------------------------------

def test_two_unknown_entries_stay() -> None:
    # [B, A] from a tensor of dims [A, B]: neither entry can be copied (0) and only one may be -1.
    check_pass("""
opset(ai.onnx=17)
graph @g(%x: tensor<"A"x"B"xf32>) -> (%y: tensor<"B"x"A"xf32>) {
  %s = onnx.Shape(%x) : tensor<2xi64>
  %perm = const dense<2xi64 [1, 0]>
  %shape = onnx.Gather(%s, %perm) {axis=0} : tensor<2xi64>
  %y = onnx.Reshape(%x, %shape) : tensor<"B"x"A"xf32>
  return %y
}""", P, None, fires=False)


def test_shape_from_data_or_allowzero_with_two_symbols_stays() -> None:
    # Tile repeats come from a graph input; with allowzero=1 a symbolic entry cannot become 0.
    check_pass("""
opset(ai.onnx=17)
graph @g(%x: tensor<"A"x"B"xf32>, %k: tensor<1xi64>) -> (%y: tensor<"A"x?xf32>, %z: tensor<"A"x"B"xf32>) {
  %one = const dense<1xi64 [1]>
  %t = onnx.Concat(%one, %k) {axis=0} : tensor<2xi64>
  %y = onnx.Tile(%x, %t) : tensor<"A"x?xf32>
  %s = onnx.Shape(%x) : tensor<2xi64>
  %m = onnx.Mul(%s, %one) : tensor<2xi64>
  %z = onnx.Reshape(%x, %m) {allowzero=1} : tensor<"A"x"B"xf32>
  return %y, %z
}""", P, None, fires=False)
