"""Algebraic simplification: neutral elements, double negation, idempotent ops, division by a constant."""

from __future__ import annotations

from typing import Callable, List, Literal, Optional

import numpy as np

from edgec.ir import DType, Model, TensorType, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Match, Op, RewriteRule, Rewriter, Var, apply_rules

from .eliminate_noops import broadcasts_into, const_array, dims_of

__all__ = ["SimplifyAlgebra", "algebra_rules", "IDEMPOTENT_UNARY"]

#: Unary ops with f(f(x)) == f(x) bit for bit.
IDEMPOTENT_UNARY = ("Relu", "Abs", "Floor", "Ceil", "Round", "Sign")
#: Element types whose x/c -> x*(1/c) stays within rtol 1e-6 (two roundings of at most half an ulp).
RECIPROCAL_DTYPES = (DType.FLOAT, DType.DOUBLE)


def _const_check(pred: Callable[[np.ndarray], bool]) -> Callable[[Value], bool]:
    def check(v: Value) -> bool:
        arr = const_array(v)
        return arr is not None and arr.size > 0 and arr.dtype != object and bool(pred(arr))

    return check


def _is_float(arr: np.ndarray) -> bool:
    return DType.from_numpy(arr.dtype).is_float


def _zero(sign: Optional[bool]) -> Callable[[np.ndarray], bool]:
    """All zeros; for floats with ``sign`` set, all of that sign (True: -0.0, False: +0.0)."""

    def pred(arr: np.ndarray) -> bool:
        if arr.dtype == np.bool_ or not np.all(arr == 0):
            return False
        if sign is not None and _is_float(arr):
            return bool(np.all(np.signbit(arr.astype(np.float64)) == sign))
        return True

    return pred


def _one(arr: np.ndarray) -> bool:
    return arr.dtype != np.bool_ and bool(np.all(arr == 1))


def _neutral(m: Match, rw: Rewriter) -> Optional[Value]:
    """x op c -> x when c is neutral and broadcasting c changes neither x's shape nor its type."""
    x, c, y = m["x"], m["c"], m.root.outputs[0]
    tx = x.type
    if not isinstance(tx, TensorType):
        return None
    cd = dims_of(c) if isinstance(c.type, TensorType) else None
    arr = const_array(c)
    cshape = tuple(arr.shape) if arr is not None else cd
    if not broadcasts_into(cshape, tx.shape.dims):
        return None
    if isinstance(y.type, TensorType) and (y.type.dtype != tx.dtype or y.type.quant != tx.quant):
        return None
    if m.root.op_type != "Pow" and arr is not None and DType.from_numpy(arr.dtype) != tx.dtype:
        return None
    return x


def _reciprocal_ok(arr: np.ndarray) -> bool:
    if DType.from_numpy(arr.dtype) not in RECIPROCAL_DTYPES or np.all(np.abs(arr) == 1):
        return False  # dividing by +-1 is as cheap as multiplying
    with np.errstate(all="ignore"):
        r = np.reciprocal(arr)
    return bool(np.all(np.isfinite(r)) and np.all(np.abs(r) >= np.finfo(arr.dtype).tiny))


def _div_to_mul(m: Match, rw: Rewriter) -> Optional[Value]:
    arr = const_array(m["c"])
    with np.errstate(all="ignore"):
        r = np.reciprocal(arr)
    return rw.op("Mul", [m["x"], rw.const(r, "reciprocal")])


def _inner(m: Match, rw: Rewriter) -> Optional[Value]:
    """f(f(x)) -> f(x) for an idempotent f: the outer node's input."""
    return m.root.inputs[0]


def _x(m: Match, rw: Rewriter) -> Optional[Value]:
    return m["x"]


def algebra_rules(*, signed_zeros: bool = True, reciprocal: bool = True) -> List[RewriteRule]:
    """The rules of ``simplify-algebra`` in priority order."""
    X = Var("x")
    add_zero = _const_check(_zero(True if signed_zeros else None))  # x + (-0.0) == x for every x
    sub_zero = _const_check(_zero(False if signed_zeros else None))  # x - (+0.0) == x for every x
    one = _const_check(_one)
    rules = [
        RewriteRule("add-zero", Op("Add", X, Var("c", add_zero), commute=True), _neutral),
        RewriteRule("sub-zero", Op("Sub", X, Var("c", sub_zero)), _neutral),
        RewriteRule("mul-one", Op("Mul", X, Var("c", one), commute=True), _neutral),
        RewriteRule("div-one", Op("Div", X, Var("c", one)), _neutral),
        RewriteRule("pow-one", Op("Pow", X, Var("c", one)), _neutral),
        RewriteRule("neg-neg", Op("Neg", Op("Neg", X)), _x, allow_shared=True),
        RewriteRule("not-not", Op("Not", Op("Not", X)), _x, allow_shared=True),
    ]
    for op in IDEMPOTENT_UNARY:
        rules.append(RewriteRule(f"{op.lower()}-{op.lower()}", Op(op, Op(op, X)), _inner, allow_shared=True))
    if reciprocal:
        rules.append(RewriteRule("div-to-mul", Op("Div", X, Var("c", _const_check(_reciprocal_ok))), _div_to_mul))
    return rules


@register_pass
class SimplifyAlgebra(Pass):
    """Simplify arithmetic with neutral elements and self-inverse or idempotent ops.

    Rules (statistic names): ``add-zero`` x+0, 0+x; ``sub-zero`` x-0; ``mul-one`` x*1, 1*x;
    ``div-one`` x/1; ``pow-one`` x**1 -> x, each only when the constant broadcasts into x's known
    shape and the result keeps x's element type. With ``signed-zeros`` (default) a float zero must
    be -0.0 for Add and +0.0 for Sub, the only forms exact for x = -0.0; turn it off to accept
    either sign. ``neg-neg`` Neg(Neg(x)) and ``not-not`` Not(Not(x)) -> x; ``relu-relu``,
    ``abs-abs``, ``floor-floor``, ``ceil-ceil``, ``round-round``, ``sign-sign`` f(f(x)) -> f(x).
    All of those are bit-exact. ``div-to-mul`` (option ``reciprocal``): x / c ->
    x * (1/c) for f32/f64 constants whose reciprocal is finite and normal; exact when c is a power
    of two, else within rtol 1e-6 (f16/bf16 are left alone). ``auto`` (default) applies it except
    for the plain ONNX target, where onnxruntime's own fusions (GELU, attention) look for the Div. Deliberately not simplified: x*0
    (NaN, inf), x-x (NaN), Sqrt(x)*Sqrt(x) (domain); constant-only math is for constant folding.
    Works in subgraphs and functions.
    """

    name = "simplify-algebra"
    opt_level = 2
    signed_zeros: bool = True
    reciprocal: Literal["auto", "on", "off"] = "auto"

    def run(self, model: Model, ctx: PassContext) -> bool:
        target = ctx.resources.get("target") or {}
        plain_onnx = target.get("name") == "onnx" and not target.get("contrib_ops")
        reciprocal = self.reciprocal == "on" or (self.reciprocal == "auto" and not plain_onnx)
        stats = apply_rules(model, algebra_rules(signed_zeros=self.signed_zeros, reciprocal=reciprocal))
        for rule, n in sorted(stats.fired.items()):
            ctx.stat(rule, n)
        return stats.changed
