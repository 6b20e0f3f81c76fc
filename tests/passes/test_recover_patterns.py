"""recover-patterns: LayerNormalization and GELU from their decompositions."""

from __future__ import annotations

import pytest

import edgec.passes  # noqa: F401 - registers the passes
from passtest import check_pass, op_types

P = "recover-patterns"


def _ln(opset: int, *, square: str = "pow", axes: str = "[-1]", out_extra: str = "", ret_extra: str = "") -> str:
    if opset >= 18:
        rm1 = f"%ax = const dense<1xi64 {axes}>\n  %mean = onnx.ReduceMean(%x, %ax) : tensor<\"N\"x4x1xf32>"
        rm2 = "%var = onnx.ReduceMean(%sq, %ax) : tensor<\"N\"x4x1xf32>"
    else:
        rm1 = f"%mean = onnx.ReduceMean(%x) {{axes={axes}}} : tensor<\"N\"x4x1xf32>"
        rm2 = f"%var = onnx.ReduceMean(%sq) {{axes={axes}}} : tensor<\"N\"x4x1xf32>"
    sq = ("%two = const dense<f32 [2.0]>\n  %sq = onnx.Pow(%d, %two) : tensor<\"N\"x4x3xf32>" if square == "pow"
          else "%sq = onnx.Mul(%d, %d) : tensor<\"N\"x4x3xf32>")
    return f"""opset(ai.onnx={opset})
graph @g(%x: tensor<"N"x4x3xf32>) -> (%y: tensor<"N"x4x3xf32>{out_extra}) {{
  %eps = const dense<f32 [1e-05]>
  %gamma = const dense<3xf32 [1.0, 2.0, 0.5]>
  %beta = const dense<3xf32 [0.0, 0.25, -1.0]>
  {rm1}
  %d = onnx.Sub(%x, %mean) : tensor<"N"x4x3xf32>
  {sq}
  {rm2}
  %ve = onnx.Add(%var, %eps) : tensor<"N"x4x1xf32>
  %s = onnx.Sqrt(%ve) : tensor<"N"x4x1xf32>
  %n = onnx.Div(%d, %s) : tensor<"N"x4x3xf32>
  %m = onnx.Mul(%gamma, %n) : tensor<"N"x4x3xf32>
  %y = onnx.Add(%m, %beta) : tensor<"N"x4x3xf32>
  return %y{ret_extra}
}}"""


def test_layernorm_opset17_pow() -> None:
    check_pass(_ln(17), P, """opset(ai.onnx=17)
graph @g(%x: tensor<"N"x4x3xf32>) -> (%y: tensor<"N"x4x3xf32>) {
  %gamma = const dense<3xf32 [1.0, 2.0, 0.5]>
  %beta = const dense<3xf32 [0.0, 0.25, -1.0]>
  %y = onnx.LayerNormalization(%x, %gamma, %beta) {axis=-1, epsilon=9.999999747378752e-06} : tensor<"N"x4x3xf32>
  return %y
}""", rtol=1e-5, atol=1e-6)


def test_layernorm_opset18_axes_input_mul_square() -> None:
    model = check_pass(_ln(18, square="mul", axes="[2]"), P, rtol=1e-5, atol=1e-6)
    assert op_types(model) == ["LayerNormalization"]


def test_layernorm_opset13_edgec_op() -> None:
    model = check_pass(_ln(13), P, rtol=1e-5, atol=1e-6)
    assert op_types(model) == ["edgec.LayerNorm"]
    assert model.opset_imports.get("edgec") == 1


GELU_FORMS = {
    # torch: Div(x, sqrt2) -> Erf -> Add 1 -> Mul x -> Mul 0.5
    "torch": """%c = const dense<f32 [1.4142135381698608]>
  %d = onnx.Div(%x, %c) : tensor<"N"x5xf32>
  %e = onnx.Erf(%d) : tensor<"N"x5xf32>
  %a = onnx.Add(%e, %one) : tensor<"N"x5xf32>
  %m = onnx.Mul(%x, %a) : tensor<"N"x5xf32>
  %y = onnx.Mul(%m, %half) : tensor<"N"x5xf32>""",
    # (0.5*x) * (1 + Erf(x * 0.70710678))
    "half_first": """%c = const dense<f32 [0.70710678]>
  %d = onnx.Mul(%c, %x) : tensor<"N"x5xf32>
  %e = onnx.Erf(%d) : tensor<"N"x5xf32>
  %a = onnx.Add(%one, %e) : tensor<"N"x5xf32>
  %h = onnx.Mul(%half, %x) : tensor<"N"x5xf32>
  %y = onnx.Mul(%a, %h) : tensor<"N"x5xf32>""",
    # x * ((1 + Erf(..)) * 0.5)
    "inner_half": """%c = const dense<f32 [1.4142135]>
  %d = onnx.Div(%x, %c) : tensor<"N"x5xf32>
  %e = onnx.Erf(%d) : tensor<"N"x5xf32>
  %a = onnx.Add(%e, %one) : tensor<"N"x5xf32>
  %h = onnx.Mul(%a, %half) : tensor<"N"x5xf32>
  %y = onnx.Mul(%x, %h) : tensor<"N"x5xf32>""",
    "tanh": """%k = const dense<f32 [0.044715]>
  %c = const dense<f32 [0.7978845608]>
  %three = const dense<f32 [3.0]>
  %p = onnx.Pow(%x, %three) : tensor<"N"x5xf32>
  %q = onnx.Mul(%k, %p) : tensor<"N"x5xf32>
  %r = onnx.Add(%x, %q) : tensor<"N"x5xf32>
  %s = onnx.Mul(%c, %r) : tensor<"N"x5xf32>
  %t = onnx.Tanh(%s) : tensor<"N"x5xf32>
  %a = onnx.Add(%one, %t) : tensor<"N"x5xf32>
  %h = onnx.Mul(%half, %x) : tensor<"N"x5xf32>
  %y = onnx.Mul(%h, %a) : tensor<"N"x5xf32>""",
}


def _gelu(opset: int, form: str) -> str:
    return f"""opset(ai.onnx={opset})
graph @g(%x: tensor<"N"x5xf32>) -> (%y: tensor<"N"x5xf32>) {{
  %one = const dense<f32 [1.0]>
  %half = const dense<f32 [0.5]>
  {GELU_FORMS[form]}
  return %y
}}"""


@pytest.mark.parametrize("form", sorted(GELU_FORMS))
def test_gelu_forms_opset17(form: str) -> None:
    model = check_pass(_gelu(17, form), P, rtol=1e-5, atol=1e-6)
    assert op_types(model) == ["edgec.Gelu"]
    assert model.graph.nodes[0].attr("approximate", "none") == ("tanh" if form == "tanh" else "none")


def test_gelu_opset20_standard_op() -> None:
    check_pass(_gelu(20, "torch"), P, """opset(ai.onnx=20)
graph @g(%x: tensor<"N"x5xf32>) -> (%y: tensor<"N"x5xf32>) {
  %y = onnx.Gelu(%x) : tensor<"N"x5xf32>
  return %y
}""", rtol=1e-5, atol=1e-6)


# --- must not fire ------------------------------------------------------------------------------
def test_layernorm_not_over_last_axis() -> None:
    check_pass(_ln(17, axes="[1]").replace('tensor<"N"x4x1xf32>', 'tensor<"N"x1x3xf32>'), P, fires=False)


def test_layernorm_interior_is_graph_output() -> None:
    check_pass(_ln(17, out_extra=', %var: tensor<"N"x4x1xf32>', ret_extra=", %var"), P, fires=False)


def test_gelu_wrong_constant_and_shared_interior() -> None:
    check_pass(_gelu(17, "torch").replace("1.4142135381698608", "1.5"), P, fires=False)
    shared = _gelu(17, "torch").replace('-> (%y: tensor<"N"x5xf32>)', '-> (%y: tensor<"N"x5xf32>, %e: tensor<"N"x5xf32>)') \
        .replace("return %y", "return %y, %e")
    check_pass(shared, P, fires=False)
