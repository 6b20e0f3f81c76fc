"""Recover LayerNormalization and GELU from the decomposed forms exporters emit."""

from __future__ import annotations

import math
from typing import Callable, List, Optional

import numpy as np

from edgec.ir import Model, Node, Value
from edgec.ir import edgec_ops
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Const, Either, Match, Op, Pattern, RewriteRule, Rewriter, Var, apply_rules, constant_value

from .fuse_batchnorm import ConstTracker, RankOracle

__all__ = ["RecoverPatterns", "recover_pattern_rules"]


def _near(target: float, rtol: float = 1e-5) -> Callable[[np.ndarray], bool]:
    def check(a: np.ndarray) -> bool:
        return a.size == 1 and np.issubdtype(a.dtype, np.floating) and abs(float(a.reshape(-1)[0]) - target) <= rtol * abs(target)
    return check


def _scalar(name: str, target: float) -> Const:
    return Const(name, _near(target))


# --- GELU -----------------------------------------------------------------------------------------------
def _gelu_patterns(inner: Pattern) -> List[Pattern]:
    """x * 0.5 * inner in every association / order exporters emit."""
    x = Var("x")
    return [
        Op("Mul", Op("Mul", x, inner, commute=True), _scalar("half", 0.5), commute=True),
        Op("Mul", Op("Mul", x, _scalar("half", 0.5), commute=True), inner, commute=True),
        Op("Mul", x, Op("Mul", inner, _scalar("half", 0.5), commute=True), commute=True),
        Op("Div", Op("Mul", x, inner, commute=True), _scalar("two", 2.0)),
    ]


def _erf_term() -> Pattern:
    """1 + Erf(x / sqrt 2)."""
    x = Var("x")
    arg = Either([Op("Div", x, _scalar("s2", math.sqrt(2.0))),
                  Op("Mul", x, _scalar("is2", 1 / math.sqrt(2.0)), commute=True)])
    return Op("Add", Op("Erf", arg), _scalar("one", 1.0), commute=True)


def _tanh_term() -> Pattern:
    """1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3))."""
    x = Var("x")
    cube = Either([Op("Pow", x, _scalar("three", 3.0)),
                   Op("Mul", Op("Mul", x, x), x, commute=True)])
    poly = Op("Add", x, Op("Mul", cube, _scalar("k", 0.044715), commute=True), commute=True)
    arg = Op("Mul", poly, _scalar("c", math.sqrt(2.0 / math.pi)), commute=True)
    return Op("Add", Op("Tanh", arg), _scalar("one", 1.0), commute=True)


# --- LayerNorm ------------------------------------------------------------------------------------------
def _axes(node: Node) -> Optional[List[int]]:
    if node.attr("keepdims", 1) != 1:
        return None
    if "axes" in node.attrs:
        return [int(a) for a in node.attr("axes")]
    if node.input(1) is not None:
        arr = constant_value(node.input(1))
        return None if arr is None else [int(a) for a in arr.reshape(-1)]
    return None


def _ln_core() -> Pattern:
    """(x - mean) / sqrt(var + eps), var = mean((x-mean)^2)."""
    x = Var("x")
    mean = Op("ReduceMean", x, name="rm1", extra_inputs=True)
    diff = Op("Sub", x, mean, name="sub")
    sq = Either([Op("Pow", diff, _scalar("two", 2.0)), Op("Mul", diff, diff)])
    var = Op("ReduceMean", sq, name="rm2", extra_inputs=True)
    std = Op("Sqrt", Op("Add", var, Const("eps", lambda a: a.size == 1), commute=True))
    return Op("Div", diff, std)


def recover_pattern_rules(model: Model, consts: ConstTracker, ranks: RankOracle) -> List[RewriteRule]:
    """The rules of :class:`RecoverPatterns`."""
    opset = model.opset("") or 1

    def gelu(approx: str) -> Callable[[Match, Rewriter], Optional[Value]]:
        def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
            x = m["x"]
            if x.dtype is not None and not x.dtype.is_float:
                return None
            consts.note(*[m.get(k) for k in ("half", "two", "s2", "is2", "one", "three", "k", "c")])
            attrs = {"approximate": approx} if approx != "none" else {}
            if opset >= 20:
                return rw.op("Gelu", [x], attrs)
            model.opset_imports.setdefault(edgec_ops.DOMAIN, edgec_ops.VERSION)
            return rw.op("Gelu", [x], attrs, domain=edgec_ops.DOMAIN)
        return rewrite

    def layer_norm(kind: str) -> Callable[[Match, Rewriter], Optional[Value]]:
        def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
            x = m["x"]
            root: Node = m.root
            if x.dtype is not None and not x.dtype.is_float:
                return None
            # a shorter pattern declines when the longer one can still match from its consumer
            users = root.output(0).consumers()
            if kind != "full" and len(users) == 1 and not root.output(0).is_graph_output():
                u = users[0]
                if (kind == "core" and u.op_type == "Mul") or (kind == "scale" and u.op_type == "Add"):
                    if any(constant_value(v) is not None for v in u.inputs if v is not root.output(0)):
                        return None
            a1, a2 = _axes(m["rm1"]), _axes(m["rm2"])
            dims = ranks.dims(x)
            rank = None if dims is None else len(dims)
            if a1 is None or a2 is None:
                return None
            norm = lambda axes: sorted(a + rank if a < 0 and rank is not None else a for a in axes)  # noqa: E731
            a1, a2 = norm(a1), norm(a2)
            if a1 != a2 or not a1:
                return None
            k = len(a1)
            if rank is not None:
                if a1 != list(range(rank - k, rank)):
                    return None
            elif a1 != list(range(-k, 0)):
                return None
            trailing = None if dims is None else dims[len(dims) - k:]
            dt = x.dtype.numpy if x.dtype is not None else np.float32
            eps = float(m.const("eps").reshape(-1)[0])

            def param(name: str) -> Optional[np.ndarray]:
                arr = m.const(name)
                if arr.ndim > k or arr.dtype != dt:
                    return None
                if trailing is None or not all(isinstance(d, int) for d in trailing):
                    return arr if arr.ndim == k else None
                try:
                    return np.ascontiguousarray(np.broadcast_to(arr, trailing))
                except ValueError:
                    return None

            if kind == "core":
                if trailing is None or not all(isinstance(d, int) for d in trailing):
                    return None
                s_arr, b_arr = np.ones(trailing, dt), None
            else:
                s_arr = param("gamma")
                b_arr = param("beta") if kind == "full" else None
                if s_arr is None or (kind == "full" and b_arr is None):
                    return None
            scale = rw.const(s_arr, "ln_scale")  # constants only once the rule is sure to apply
            bias = rw.const(b_arr, "ln_bias") if b_arr is not None else None
            consts.note(*[m.get(n) for n in ("eps", "two", "gamma", "beta")], *m["rm1"].inputs[1:], *m["rm2"].inputs[1:])
            attrs = {"axis": -k, "epsilon": eps}
            ins = [x, scale] + ([bias] if bias is not None else [])
            if opset >= 17:
                return rw.op("LayerNormalization", ins, attrs)
            model.opset_imports.setdefault(edgec_ops.DOMAIN, edgec_ops.VERSION)
            return rw.op("LayerNorm", ins, attrs, domain=edgec_ops.DOMAIN)
        return rewrite

    rules: List[RewriteRule] = []
    scaled = Op("Mul", _ln_core(), Const("gamma"), commute=True)
    rules.append(RewriteRule("layernorm", Op("Add", scaled, Const("beta"), commute=True), layer_norm("full")))
    rules.append(RewriteRule("layernorm-no-bias", scaled, layer_norm("scale")))
    rules.append(RewriteRule("layernorm-plain", _ln_core(), layer_norm("core")))
    rules += [RewriteRule("gelu-erf", p, gelu("none")) for p in _gelu_patterns(_erf_term())]
    rules += [RewriteRule("gelu-tanh", p, gelu("tanh")) for p in _gelu_patterns(_tanh_term())]
    return rules


@register_pass
class RecoverPatterns(Pass):
    """Recover LayerNormalization and GELU (erf and tanh forms) from their decompositions.

    Rules:

    - ``layernorm`` / ``layernorm-no-bias`` / ``layernorm-plain``: ReduceMean, Sub, Pow 2 (or
      Mul(d, d)), ReduceMean, Add eps, Sqrt, Div [, Mul gamma [, Add beta]] over the last dim(s)
      (ReduceMean axes as attribute or input, keepdims 1) -> LayerNormalization (opset >= 17) or
      ``edgec.LayerNorm``; gamma/beta constants broadcastable to the normalized dims.
    - ``gelu-erf``: x*0.5*(1+Erf(x/sqrt 2)) in every association and operand order, Div by
      1.4142135 or Mul by 0.70710678, and (x*(1+Erf(..)))/2 -> Gelu (opset >= 20) or ``edgec.Gelu``.
    - ``gelu-tanh``: 0.5x(1+Tanh(sqrt(2/pi)(x+0.044715x^3))), x^3 as Pow or Mul -> Gelu approximate=tanh.

    Attention and SiLU recovery are not done here (``fuse-activation`` fuses x*Sigmoid(x) after
    Conv/Gemm/MatMul).
    """

    name = "recover-patterns"
    opt_level = 2

    def run(self, model: Model, ctx: PassContext) -> bool:
        consts = ConstTracker()
        stats = apply_rules(model, recover_pattern_rules(model, consts, RankOracle(model)))
        consts.sweep()
        for rule, n in stats.fired.items():
            ctx.stat(rule, n)
        return stats.changed
