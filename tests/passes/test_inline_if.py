"""inline-if: an If with a constant condition becomes the nodes of the branch it takes (bit-exact)."""

from __future__ import annotations

import edgec.passes  # noqa: F401 - registers the passes
from passtest import check_pass

P = "inline-if"


def test_true_condition_takes_then_branch_and_keeps_the_output_name() -> None:
    check_pass("""
graph @g(%x: tensor<"N"x2xf32>) -> (%y: tensor<"N"x2xf32>) {
  %c = const dense<bool [true]>
  %y = onnx.If(%c) {else_branch=graph @e() -> (%r: tensor<"N"x2xf32>) {
    %r = onnx.Neg(%x) : tensor<"N"x2xf32>
    return %r
  }, then_branch=graph @t() -> (%q: tensor<"N"x2xf32>) {
    %k = const dense<2xf32 [2.0, 3.0]>
    %m = onnx.Mul(%x, %k) : tensor<"N"x2xf32>
    %q = onnx.Relu(%m) : tensor<"N"x2xf32>
    return %q
  }} : tensor<"N"x2xf32>
  return %y
}""", P, """
graph @g(%x: tensor<"N"x2xf32>) -> (%y: tensor<"N"x2xf32>) {
  %c = const dense<bool [true]>
  %k = const dense<2xf32 [2.0, 3.0]>
  %m = onnx.Mul(%x, %k) : tensor<"N"x2xf32>
  %y = onnx.Relu(%m) : tensor<"N"x2xf32>
  return %y
}""")


def test_false_constant_node_condition_with_an_internal_use() -> None:
    check_pass("""
graph @g(%x: tensor<3xf32>) -> (%z: tensor<3xf32>) {
  %c = onnx.Constant() {value=dense<1xbool [false]>} : tensor<1xbool>
  %y = onnx.If(%c) {else_branch=graph @e() -> (%r: tensor<3xf32>) {
    %r = onnx.Neg(%x) : tensor<3xf32>
    return %r
  }, then_branch=graph @t() -> (%x: tensor<3xf32>) {
  }} : tensor<3xf32>
  %z = onnx.Add(%y, %x) : tensor<3xf32>
  return %z
}""", P, """
graph @g(%x: tensor<3xf32>) -> (%z: tensor<3xf32>) {
  %c = onnx.Constant() {value=dense<1xbool [false]>} : tensor<1xbool>
  %r = onnx.Neg(%x) : tensor<3xf32>
  %z = onnx.Add(%r, %x) : tensor<3xf32>
  return %z
}""")


def test_branch_returning_an_outer_value_to_a_graph_output_gets_an_identity() -> None:
    check_pass("""
graph @g(%x: tensor<3xf32>) -> (%y: tensor<3xf32>, %w: tensor<3xf32>) {
  %c = const dense<bool [true]>
  %y, %w = onnx.If(%c) {else_branch=graph @e() -> (%r: tensor<3xf32>, %r2: tensor<3xf32>) {
    %r = onnx.Neg(%x) : tensor<3xf32>
    %r2 = onnx.Abs(%x) : tensor<3xf32>
    return %r, %r2
  }, then_branch=graph @t() -> (%x: tensor<3xf32>, %s: tensor<3xf32>) {
    %s = onnx.Sqrt(%x) : tensor<3xf32>
    return %x, %s
  }} : tensor<3xf32>, tensor<3xf32>
  return %y, %w
}""", P, """
graph @g(%x: tensor<3xf32>) -> (%y: tensor<3xf32>, %w: tensor<3xf32>) {
  %c = const dense<bool [true]>
  %w = onnx.Sqrt(%x) : tensor<3xf32>
  %y = onnx.Identity(%x) : tensor<3xf32>
  return %y, %w
}""")


def test_nested_constant_ifs_are_all_inlined() -> None:
    check_pass("""
graph @g(%x: tensor<2xf32>, %d: tensor<1xbool>) -> (%y: tensor<2xf32>) {
  %c = const dense<bool [true]>
  %y = onnx.If(%d) {else_branch=graph @e() -> (%r: tensor<2xf32>) {
    %r = onnx.If(%c) {else_branch=graph @e2() -> (%r3: tensor<2xf32>) {
      %r3 = onnx.Neg(%x) : tensor<2xf32>
      return %r3
    }, then_branch=graph @t2() -> (%r4: tensor<2xf32>) {
      %r4 = onnx.Abs(%x) : tensor<2xf32>
      return %r4
    }} : tensor<2xf32>
    return %r
  }, then_branch=graph @t() -> (%q: tensor<2xf32>) {
    %q = onnx.If(%c) {else_branch=graph @e3() -> (%q1: tensor<2xf32>) {
      %q1 = onnx.Neg(%x) : tensor<2xf32>
      return %q1
    }, then_branch=graph @t3() -> (%q2: tensor<2xf32>) {
      %q2 = onnx.Relu(%x) : tensor<2xf32>
      return %q2
    }} : tensor<2xf32>
    return %q
  }} : tensor<2xf32>
  return %y
}""", P, """
graph @g(%x: tensor<2xf32>, %d: tensor<1xbool>) -> (%y: tensor<2xf32>) {
  %c = const dense<bool [true]>
  %y = onnx.If(%d) {else_branch=graph @e() -> (%r4: tensor<2xf32>) {
    %r4 = onnx.Abs(%x) : tensor<2xf32>
    return %r4
  }, then_branch=graph @t() -> (%q2: tensor<2xf32>) {
    %q2 = onnx.Relu(%x) : tensor<2xf32>
    return %q2
  }} : tensor<2xf32>
  return %y
}""")


# --- must not fire ------------------------------------------------------------------------------

def test_condition_from_input_or_overridable_initializer_stays() -> None:
    check_pass("""
graph @g(%x: tensor<2xf32>, %d: tensor<1xbool>, %c: tensor<1xbool> = dense<1xbool [true]>) -> (%y: tensor<2xf32>, %z: tensor<2xf32>) {
  %y = onnx.If(%d) {else_branch=graph @e() -> (%r: tensor<2xf32>) {
    %r = onnx.Neg(%x) : tensor<2xf32>
    return %r
  }, then_branch=graph @t() -> (%x: tensor<2xf32>) {
  }} : tensor<2xf32>
  %z = onnx.If(%c) {else_branch=graph @e2() -> (%r2: tensor<2xf32>) {
    %r2 = onnx.Neg(%x) : tensor<2xf32>
    return %r2
  }, then_branch=graph @t2() -> (%x: tensor<2xf32>) {
  }} : tensor<2xf32>
  return %y, %z
}""", P, None, fires=False)


def test_condition_computed_from_data_stays() -> None:
    check_pass("""
graph @g(%x: tensor<2xf32>) -> (%y: tensor<2xf32>) {
  %s = onnx.ReduceSum(%x) {keepdims=0} : tensor<f32>
  %zero = const dense<f32 [0.0]>
  %c = onnx.Greater(%s, %zero) : tensor<bool>
  %y = onnx.If(%c) {else_branch=graph @e() -> (%r: tensor<2xf32>) {
    %r = onnx.Neg(%x) : tensor<2xf32>
    return %r
  }, then_branch=graph @t() -> (%x: tensor<2xf32>) {
  }} : tensor<2xf32>
  return %y
}""", P, None, fires=False)
