"""eliminate-noops: positive cases, must-not-fire cases, subgraphs, graph outputs, symbolic dims."""

from __future__ import annotations


import pytest
from passtest import check_pass


# check_pass compares canonical IR (rule tags, names and locations normalised away).
check = check_pass


P = "eliminate-noops"


def test_identity_and_dropout_chain() -> None:
    check("""
graph @g(%x: tensor<"N"x4xf32>) -> (%y: tensor<"N"x4xf32>) {
  %a = onnx.Identity(%x) : tensor<"N"x4xf32>
  %b, _ = onnx.Dropout(%a) : tensor<"N"x4xf32>, ?
  %y = onnx.Relu(%b) : tensor<"N"x4xf32>
  return %y
}""", P, """
graph @g(%x: tensor<"N"x4xf32>) -> (%y: tensor<"N"x4xf32>) {
  %y = onnx.Relu(%x) : tensor<"N"x4xf32>
  return %y
}""")


def test_noop_producing_graph_output_takes_its_name() -> None:
    # The Cast feeds a graph output: the Relu result takes the output's name.
    check("""
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<"N"x3xf32>) {
  %r = onnx.Relu(%x) : tensor<"N"x3xf32>
  %y = onnx.Cast(%r) {to=1} : tensor<"N"x3xf32>
  return %y
}""", P, """
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<"N"x3xf32>) {
  %y = onnx.Relu(%x) : tensor<"N"x3xf32>
  return %y
}""")


def test_graph_input_to_graph_output_keeps_an_identity() -> None:
    check("""
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<"N"x3xf32>) {
  %y = onnx.Reshape(%x, %s) : tensor<"N"x3xf32>
  %s = const dense<2xi64 [0, 3]>
  return %y
}""", P, """
graph @g(%x: tensor<"N"x3xf32>) -> (%y: tensor<"N"x3xf32>) {
  %s = const dense<2xi64 [0, 3]>
  %y = onnx.Identity(%x) : tensor<"N"x3xf32>
  return %y
}""")


def test_lone_identity_between_input_and_output_stays() -> None:
    check("""
graph @g(%x: tensor<2xf32>) -> (%y: tensor<2xf32>) {
  %y = onnx.Identity(%x) : tensor<2xf32>
  return %y
}""", P, None, fires=False)


def test_shape_noops_with_symbolic_dims() -> None:
    check("""
graph @g(%x: tensor<"N"x3x4xf32>) -> (%y: tensor<"N"x3x4xf32>) {
  %shape = const dense<3xi64 [0, -1, 4]>
  %ones = const dense<2xi64 [1, 4]>
  %pads = const dense<6xi64 [0, 0, 0, 0, 0, 0]>
  %st = const dense<2xi64 [0, 0]>
  %en = const dense<2xi64 [9223372036854775807, 4]>
  %ax = const dense<2xi64 [0, -1]>
  %empty = const dense<0xi64 []>
  %a = onnx.Reshape(%x, %shape) : tensor<"N"x3x4xf32>
  %b = onnx.Expand(%a, %ones) : tensor<"N"x3x4xf32>
  %c = onnx.Pad(%b, %pads) : tensor<"N"x3x4xf32>
  %d = onnx.Slice(%c, %st, %en, %ax) : tensor<"N"x3x4xf32>
  %e = onnx.Transpose(%d) {perm=[0, 1, 2]} : tensor<"N"x3x4xf32>
  %f = onnx.Unsqueeze(%e, %empty) : tensor<"N"x3x4xf32>
  %g1 = onnx.Concat(%f) {axis=1} : tensor<"N"x3x4xf32>
  %h = onnx.Split(%g1) {axis=1} : tensor<"N"x3x4xf32>
  %i = onnx.Max(%h) : tensor<"N"x3x4xf32>
  %y = onnx.Neg(%i) : tensor<"N"x3x4xf32>
  return %y
}""", P + ",dce", """
graph @g(%x: tensor<"N"x3x4xf32>) -> (%y: tensor<"N"x3x4xf32>) {
  %y = onnx.Neg(%x) : tensor<"N"x3x4xf32>
  return %y
}""")


def test_cast_castlike_and_where_constant() -> None:
    check("""
graph @g(%x: tensor<2x3xi32>, %z: tensor<3xi32>) -> (%y: tensor<2x3xi32>) {
  %t = const dense<3xbool [true, true, true]>
  %a = onnx.Cast(%x) {to=6} : tensor<2x3xi32>
  %b = onnx.CastLike(%a, %z) : tensor<2x3xi32>
  %c = onnx.Where(%t, %b, %z) : tensor<2x3xi32>
  %y = onnx.Abs(%c) : tensor<2x3xi32>
  return %y
}""", P + ",dce", """
graph @g(%x: tensor<2x3xi32>, %z: tensor<3xi32>) -> (%y: tensor<2x3xi32>) {
  %y = onnx.Abs(%x) : tensor<2x3xi32>
  return %y
}""")


def test_inside_if_branch_and_loop_body() -> None:
    check("""
graph @g(%c: tensor<1xbool>, %x: tensor<"N"xf32>) -> (%r: tensor<"N"xf32>) {
  %r = onnx.If(%c) {else_branch=graph @e() -> (%e1: tensor<"N"xf32>) {
    %e0 = onnx.Identity(%x) : tensor<"N"xf32>
    %e1 = onnx.Neg(%e0) : tensor<"N"xf32>
    return %e1
  }, then_branch=graph @t() -> (%t1: tensor<"N"xf32>) {
    %t0 = onnx.Relu(%x) : tensor<"N"xf32>
    %t1 = onnx.Identity(%t0) : tensor<"N"xf32>
    return %t1
  }} : tensor<"N"xf32>
  return %r
}""", P, """
graph @g(%c: tensor<1xbool>, %x: tensor<"N"xf32>) -> (%r: tensor<"N"xf32>) {
  %r = onnx.If(%c) {else_branch=graph @e() -> (%e1: tensor<"N"xf32>) {
    %e1 = onnx.Neg(%x) : tensor<"N"xf32>
    return %e1
  }, then_branch=graph @t() -> (%t1: tensor<"N"xf32>) {
    %t1 = onnx.Relu(%x) : tensor<"N"xf32>
    return %t1
  }} : tensor<"N"xf32>
  return %r
}""")


def test_loop_body() -> None:
    check("""
graph @g(%x: tensor<3xf32>) -> (%out: tensor<3xf32>) {
  %n = const dense<i64 [2]>
  %cond = const dense<bool [true]>
  %out = onnx.Loop(%n, %cond, %x) {body=graph @b(%i: tensor<i64>, %ci: tensor<bool>, %v: tensor<3xf32>) -> (%co: tensor<bool>, %v2: tensor<3xf32>) {
    %co = onnx.Identity(%ci) : tensor<bool>
    %v1 = onnx.Identity(%v) : tensor<3xf32>
    %v2 = onnx.Neg(%v1) : tensor<3xf32>
    return %co, %v2
  }} : tensor<3xf32>
  return %out
}""", P, """
graph @g(%x: tensor<3xf32>) -> (%out: tensor<3xf32>) {
  %n = const dense<i64 [2]>
  %cond = const dense<bool [true]>
  %out = onnx.Loop(%n, %cond, %x) {body=graph @b(%i: tensor<i64>, %ci: tensor<bool>, %v: tensor<3xf32>) -> (%co: tensor<bool>, %v2: tensor<3xf32>) {
    %co = onnx.Identity(%ci) : tensor<bool>
    %v2 = onnx.Neg(%v) : tensor<3xf32>
    return %co, %v2
  }} : tensor<3xf32>
  return %out
}""")


@pytest.mark.parametrize("body", [
    # a real cast (f32 -> f16), and a cast whose input type is unknown
    '%a = onnx.Cast(%x) {to=10} : tensor<"N"x4xf16>\n  %y = onnx.Cast(%a) {to=1} : tensor<"N"x4xf32>',
    # reshape that changes the shape; reshape with a 0 that copies a symbolic dim into another place
    '%s = const dense<2xi64 [4, -1]>\n  %a = onnx.Reshape(%x, %s)\n  %y = onnx.Reshape(%a, %s2) : tensor<"N"x4xf32>\n  %s2 = const dense<2xi64 [-1, 4]>',
    # expand that broadcasts to a bigger rank; pad that pads; slice that cuts; transpose that permutes
    '%s = const dense<3xi64 [2, 1, 1]>\n  %a = onnx.Expand(%x, %s)\n  %y = onnx.ReduceSum(%a) {keepdims=0, noop_with_empty_axes=0}',
    '%p = const dense<4xi64 [0, 0, 0, 1]>\n  %a = onnx.Pad(%x, %p)\n  %s0 = const dense<1xi64 [0]>\n  %s1 = const dense<1xi64 [4]>\n  %s2 = const dense<1xi64 [1]>\n  %y = onnx.Slice(%a, %s0, %s1, %s2)',
    '%a = onnx.Transpose(%x) {perm=[1, 0]}\n  %y = onnx.Transpose(%a)',
    # a dropout in training mode; a dropout whose mask is used
    '%tm = const dense<bool [true]>\n  %r = const dense<f32 [0.0]>\n  %y, _ = onnx.Dropout(%x, %r, %tm)',
    '%a, %m = onnx.Dropout(%x) : tensor<"N"x4xf32>, tensor<"N"x4xbool>\n  %y = onnx.Where(%m, %a, %x)',
    # squeeze without axes on a symbolic dim (may be 1); where with a mixed condition
    '%y = onnx.Squeeze(%x)',
    '%c = const dense<4xbool [true, false, true, true]>\n  %y = onnx.Where(%c, %x, %x)',
])
def test_must_not_fire(body: str) -> None:
    check(f"""
graph @g(%x: tensor<"N"x4xf32>) -> (%y) {{
  {body}
  return %y
}}""", P, None, fires=False)


def test_slice_end_short_of_symbolic_dim_is_kept() -> None:
    check("""
graph @g(%x: tensor<"N"xf32>) -> (%y) {
  %s = const dense<1xi64 [0]>
  %e = const dense<1xi64 [2]>
  %y = onnx.Slice(%x, %s, %e)
  return %y
}""", P, None, fires=False, run=False)
