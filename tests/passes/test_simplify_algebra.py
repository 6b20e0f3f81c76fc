"""simplify-algebra: neutral elements, double negation, idempotent ops, division by constants."""

from __future__ import annotations


import pytest
from passtest import check_pass

from edgec.ir.parser import parse_model

# check_pass compares canonical IR (rule tags, names and locations normalised away).
check = check_pass



P = "simplify-algebra,dce"


def test_neutral_elements_with_symbolic_dims() -> None:
    check("""
graph @g(%x: tensor<"N"x3xf32>, %i: tensor<"N"x3xi64>) -> (%y: tensor<"N"x3xf32>, %j: tensor<"N"x3xi64>) {
  %one = const dense<3xf32 [1.0, 1.0, 1.0]>
  %nz = const dense<1x3xf32 [-0.0, -0.0, -0.0]>
  %pz = const dense<f32 [0.0]>
  %iz = const dense<i64 [0]>
  %e = const dense<i64 [1]>
  %a = onnx.Mul(%one, %x)
  %b = onnx.Add(%a, %nz)
  %c = onnx.Sub(%b, %pz)
  %d = onnx.Div(%c, %one)
  %y = onnx.Pow(%d, %e) : tensor<"N"x3xf32>
  %k = onnx.Add(%iz, %i)
  %j = onnx.Sub(%k, %iz) : tensor<"N"x3xi64>
  return %y, %j
}""", P, """
graph @g(%x: tensor<"N"x3xf32>, %i: tensor<"N"x3xi64>) -> (%y: tensor<"N"x3xf32>, %j: tensor<"N"x3xi64>) {
  %y = onnx.Identity(%x) : tensor<"N"x3xf32>
  %j = onnx.Identity(%i) : tensor<"N"x3xi64>
  return %y, %j
}""")


def test_double_negation_and_idempotent_ops() -> None:
    check("""
graph @g(%x: tensor<"N"xf32>, %b: tensor<"N"xbool>) -> (%y, %z, %w) {
  %n1 = onnx.Neg(%x)
  %n2 = onnx.Neg(%n1)
  %r1 = onnx.Relu(%n2)
  %r2 = onnx.Relu(%r1)
  %y = onnx.Abs(%r2)
  %z0 = onnx.Not(%b)
  %z1 = onnx.Not(%z0)
  %z = onnx.Xor(%z1, %b)
  %w = onnx.Mul(%n1, %y)
  return %y, %z, %w
}""", P, """
graph @g(%x: tensor<"N"xf32>, %b: tensor<"N"xbool>) -> (%y, %z, %w) {
  %n1 = onnx.Neg(%x)
  %r1 = onnx.Relu(%x)
  %y = onnx.Abs(%r1)
  %z = onnx.Xor(%b, %b)
  %w = onnx.Mul(%n1, %y)
  return %y, %z, %w
}""")


def test_division_by_constant_becomes_multiplication() -> None:
    check("""
graph @g(%x: tensor<"N"x2xf32>) -> (%y) {
  %c = const dense<2xf32 [3.0, 0.25]>
  %y = onnx.Div(%x, %c)
  return %y
}""", P, """
graph @g(%x: tensor<"N"x2xf32>) -> (%y) {
  %r = const dense<2xf32 [0.33333334, 4.0]>
  %y = onnx.Mul(%x, %r)
  return %y
}""", rtol=1e-6)


def test_inside_loop_body_with_graph_output() -> None:
    check("""
graph @g(%x: tensor<3xf32>) -> (%out: tensor<3xf32>) {
  %n = const dense<i64 [2]>
  %cond = const dense<bool [true]>
  %out = onnx.Loop(%n, %cond, %x) {body=graph @b(%i: tensor<i64>, %ci: tensor<bool>, %v: tensor<3xf32>) -> (%co: tensor<bool>, %v2: tensor<3xf32>) {
    %one = const dense<f32 [1.0]>
    %co = onnx.Identity(%ci) : tensor<bool>
    %v1 = onnx.Sin(%v) : tensor<3xf32>
    %v2 = onnx.Mul(%v1, %one) : tensor<3xf32>
    return %co, %v2
  }} : tensor<3xf32>
  return %out
}""", P, """
graph @g(%x: tensor<3xf32>) -> (%out: tensor<3xf32>) {
  %n = const dense<i64 [2]>
  %cond = const dense<bool [true]>
  %out = onnx.Loop(%n, %cond, %x) {body=graph @b(%i: tensor<i64>, %ci: tensor<bool>, %v: tensor<3xf32>) -> (%co: tensor<bool>, %v2: tensor<3xf32>) {
    %co = onnx.Identity(%ci) : tensor<bool>
    %v2 = onnx.Sin(%v) : tensor<3xf32>
    return %co, %v2
  }} : tensor<3xf32>
  return %out
}""")


@pytest.mark.parametrize("body", [
    # x*0, x-x, 0-x, sqrt(x)*sqrt(x): never simplified
    '%k = const dense<f32 [0.0]>\n  %y = onnx.Mul(%x, %k)',
    '%y = onnx.Sub(%x, %x)',
    '%k = const dense<f32 [0.0]>\n  %y = onnx.Sub(%k, %x)',
    '%s = onnx.Sqrt(%x)\n  %y = onnx.Mul(%s, %s)',
    # +0.0 added to a float (x = -0.0 would become +0.0); x - (-0.0) likewise
    '%k = const dense<f32 [0.0]>\n  %y = onnx.Add(%x, %k)',
    '%k = const dense<f32 [-0.0]>\n  %y = onnx.Sub(%x, %k)',
    # the neutral constant broadcasts x to a bigger shape or rank
    '%k = const dense<1x1x3xf32 [1.0, 1.0, 1.0]>\n  %y = onnx.Mul(%x, %k)',
    '%k = const dense<1x1x1xf32 [1.0]>\n  %y = onnx.Div(%x, %k)',
    # reciprocal not normal: division by a huge number, or by zero; f16 division
    '%k = const dense<f32 [3.0e38]>\n  %y = onnx.Div(%x, %k)',
    '%k = const dense<f32 [0.0]>\n  %y = onnx.Div(%x, %k)',
    '%h = onnx.Cast(%x) {to=10}\n  %k = const dense<f16 [3.0]>\n  %y = onnx.Div(%h, %k)',
])
def test_must_not_fire(body: str) -> None:
    check(f"""
graph @g(%x: tensor<"N"x3xf32>) -> (%y) {{
  {body}
  return %y
}}""", "simplify-algebra", None, fires=False)


def test_overridable_initializer_is_not_a_constant() -> None:
    check("""
graph @g(%x: tensor<"N"x3xf32>, %k: tensor<f32> = dense<f32 [1.0]>) -> (%y) {
  %y = onnx.Mul(%x, %k)
  return %y
}""", "simplify-algebra", None, fires=False)


def test_untyped_input_is_not_simplified() -> None:
    check("""
graph @g(%x: tensor<"N"x3xf32>) -> (%y) {
  %a = onnx.Relu(%x)
  %k = const dense<f32 [1.0]>
  %y = onnx.Mul(%a, %k)
  return %y
}""", "simplify-algebra", None, fires=False)


def test_signed_zeros_option_off() -> None:
    check("""
graph @g(%x: tensor<"N"x3xf32>) -> (%y) {
  %k = const dense<f32 [0.0]>
  %a = onnx.Add(%x, %k)
  %y = onnx.Relu(%a)
  return %y
}""", "simplify-algebra{signed-zeros=false},dce", """
graph @g(%x: tensor<"N"x3xf32>) -> (%y) {
  %y = onnx.Relu(%x)
  return %y
}""")


def test_rule_statistics() -> None:
    from edgec.passmanager import PassManager

    model = parse_model("""
graph @g(%x: tensor<4xf32>) -> (%y) {
  %k = const dense<f32 [1.0]>
  %a = onnx.Mul(%x, %k) : tensor<4xf32>
  %b = onnx.Mul(%k, %a) : tensor<4xf32>
  %c = onnx.Neg(%b)
  %y = onnx.Neg(%c)
  return %y
}""")
    pm = PassManager("simplify-algebra")
    assert pm.run(model)
    assert pm.ctx.stats["simplify-algebra"] == {"mul-one": 2, "neg-neg": 1}
