"""lift-constants: every Constant form becomes an initializer with the same name (bit-exact)."""

from __future__ import annotations

import edgec.passes  # noqa: F401 - registers the passes
from passtest import check_pass

P = "lift-constants"


def test_value_forms_become_initializers() -> None:
    check_pass("""
graph @g(%x: tensor<2xf32>) -> (%y: tensor<2xf32>, %n: tensor<3xi64>, %f: tensor<f32>) {
  %a = onnx.Constant() {value=dense<2xf32 [1.5, -0.0]>} : tensor<2xf32>
  %f = onnx.Constant() {value_float=0.1} : tensor<f32>
  %n = onnx.Constant() {value_ints=[1, -2, 3]} : tensor<3xi64>
  %s = onnx.Add(%x, %a) : tensor<2xf32>
  %y = onnx.Mul(%s, %f) : tensor<2xf32>
  return %y, %n, %f
}""", P, """
graph @g(%x: tensor<2xf32>) -> (%y: tensor<2xf32>, %n: tensor<3xi64>, %f: tensor<f32>) {
  %a = const dense<2xf32 [1.5, -0.0]>
  %f = const dense<f32 [0.1]>
  %n = const dense<3xi64 [1, -2, 3]>
  %s = onnx.Add(%x, %a) : tensor<2xf32>
  %y = onnx.Mul(%s, %f) : tensor<2xf32>
  return %y, %n, %f
}""")


def test_scalar_int_and_small_sparse_value() -> None:
    check_pass("""
graph @g(%x: tensor<4xi64>) -> (%y: tensor<4xi64>) {
  %k = onnx.Constant() {value_int=7} : tensor<i64>
  %sp = onnx.Constant() {sparse_value=sparse<4xi64 values=dense<2xi64 [5, 6]>, indices=dense<2xi64 [1, 3]>>}
  %a = onnx.Add(%x, %k) : tensor<4xi64>
  %y = onnx.Mul(%a, %sp) : tensor<4xi64>
  return %y
}""", P, """
graph @g(%x: tensor<4xi64>) -> (%y: tensor<4xi64>) {
  %k = const dense<i64 [7]>
  %sp = const dense<4xi64 [0, 5, 0, 6]>
  %a = onnx.Add(%x, %k) : tensor<4xi64>
  %y = onnx.Mul(%a, %sp) : tensor<4xi64>
  return %y
}""")


def test_constant_in_a_subgraph_becomes_its_initializer() -> None:
    check_pass("""
graph @g(%c: tensor<1xbool>, %x: tensor<2xf32>) -> (%y: tensor<2xf32>) {
  %y = onnx.If(%c) {else_branch=graph @e() -> (%r: tensor<2xf32>) {
    %k = onnx.Constant() {value=dense<2xf32 [2.0, 3.0]>} : tensor<2xf32>
    %r = onnx.Mul(%x, %k) : tensor<2xf32>
    return %r
  }, then_branch=graph @t() -> (%x: tensor<2xf32>) {
  }} : tensor<2xf32>
  return %y
}""", P, """
graph @g(%c: tensor<1xbool>, %x: tensor<2xf32>) -> (%y: tensor<2xf32>) {
  %y = onnx.If(%c) {else_branch=graph @e() -> (%r: tensor<2xf32>) {
    %k = const dense<2xf32 [2.0, 3.0]>
    %r = onnx.Mul(%x, %k) : tensor<2xf32>
    return %r
  }, then_branch=graph @t() -> (%x: tensor<2xf32>) {
  }} : tensor<2xf32>
  return %y
}""")


# --- must not fire ------------------------------------------------------------------------------

def test_function_body_constants_and_references_stay() -> None:
    # A FunctionProto has no initializers; a Constant reading a function attribute is not constant.
    check_pass("""
opset(ai.onnx=17, local=1)
graph @g(%x: tensor<2xf32>) -> (%y: tensor<2xf32>) {
  %y = local.F(%x) {alpha=2.0} : tensor<2xf32>
  return %y
}
func @local.F(%a) -> (%b) attrs[alpha] opset(ai.onnx=17) {
  %one = onnx.Constant() {value=dense<2xf32 [1.0, 2.0]>}
  %al = onnx.Constant() {value_float:float=$alpha}
  %m = onnx.Mul(%a, %one)
  %b = onnx.Mul(%m, %al)
  return %b
}""", P, None, fires=False)


def test_large_sparse_value_and_initializers_stay() -> None:
    check_pass("""
graph @g(%x: tensor<100x100xf32>) -> (%y: tensor<100x100xf32>) {
  %w = const dense<f32 [2.0]>
  %sp = onnx.Constant() {sparse_value=sparse<100x100xf32 values=dense<1xf32 [5.0]>, indices=dense<1xi64 [17]>>} : tensor<100x100xf32>
  %a = onnx.Add(%x, %sp) : tensor<100x100xf32>
  %y = onnx.Mul(%a, %w) : tensor<100x100xf32>
  return %y
}""", P, None, fires=False, run=False)
