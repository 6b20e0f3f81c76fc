"""Fold constant per-channel Mul / Add into Conv, ConvTranspose and Gemm; MatMul + bias Add -> Gemm."""

from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np

from edgec.ir import Model, Node, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Const, Match, Op, RewriteRule, Rewriter, Var, apply_rules, constant_value

from .fuse_batchnorm import ConstTracker, RankOracle, float_dtype

__all__ = ["FuseAffine", "fuse_affine_rules", "per_channel"]


def per_channel(c: np.ndarray, rank: int, channels: int, axis: int = 1) -> Optional[np.ndarray]:
    """``c`` as a vector of ``channels`` values when broadcasting it against an output of ``rank``
    dims varies only along ``axis`` and never enlarges the output; else None."""
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    for i, d in enumerate(shape):
        if i != axis and d != 1:
            return None
    if shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,))


def _out_channels(kind: str, p: Node, w: np.ndarray) -> int:
    if kind == "Conv":
        return w.shape[0]
    if kind == "ConvTranspose":
        return w.shape[1] * int(p.attr("group", 1))
    return w.shape[0] if p.attr("transB", 0) else w.shape[1]


def _scale_weight(kind: str, p: Node, w64: np.ndarray, s: np.ndarray) -> np.ndarray:
    if kind == "Conv":
        return w64 * s.reshape((-1,) + (1,) * (w64.ndim - 1))
    if kind == "ConvTranspose":
        g = int(p.attr("group", 1))
        shp = w64.shape
        return (w64.reshape((g, shp[0] // g, shp[1]) + shp[2:]) * s.reshape((g, 1, shp[1]) + (1,) * (w64.ndim - 2))).reshape(shp)
    return w64 * (s[:, None] if p.attr("transB", 0) else s[None, :])


def fuse_affine_rules(model: Model, consts: ConstTracker, ranks: RankOracle) -> List[RewriteRule]:
    """The rules of :class:`FuseAffine`."""

    def producer(kind: str) -> Op:
        return Op(kind, Var("x"), Const("w", float_dtype), name="p", extra_inputs=True)

    def setup(m: Match, kind: str):
        """(p, w, bias array or None, channel vector of c) or None when the rule must not apply."""
        p: Node = m["p"]
        if len(p.inputs) > 3 and any(v is not None for v in p.inputs[3:]):
            return None
        w = m.const("w")
        c = m.const("c")
        if c.dtype != w.dtype or (kind == "Gemm" and w.ndim != 2):
            return None
        bias_v = p.input(2)
        bias = constant_value(bias_v) if bias_v is not None else None
        if bias_v is not None and bias is None:
            return None
        rank = 2 if kind == "Gemm" else w.ndim
        vec = per_channel(c, rank, _out_channels(kind, p, w))
        if vec is None:
            return None
        return p, w, bias, vec

    def mul(kind: str) -> Callable[[Match, Rewriter], Optional[Value]]:
        def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
            got = setup(m, kind)
            if got is None:
                return None
            p, w, bias, s = got
            s = s.astype(np.float64)
            w_new = _scale_weight(kind, p, w.astype(np.float64), s)
            ins = [m["x"], rw.const(w_new.astype(w.dtype), "w_scaled")]
            if bias is not None:
                b64 = bias.astype(np.float64)
                if kind == "Gemm":  # C broadcasts to (M, N): scale its columns
                    b_new = b64 * s
                else:
                    b_new = b64.reshape(-1) * s
                ins.append(rw.const(np.asarray(b_new).astype(w.dtype), "b_scaled"))
            consts.note(m["c"], *p.inputs[1:])
            return rw.op(kind, ins, dict(p.attrs))
        return rewrite

    def add(kind: str) -> Callable[[Match, Rewriter], Optional[Value]]:
        def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
            got = setup(m, kind)
            if got is None:
                return None
            p, w, bias, vec = got
            attrs = dict(p.attrs)
            if kind == "Gemm":
                beta = float(p.attr("beta", 1.0))
                b_new = (bias.astype(np.float64) * beta if bias is not None else 0.0) + vec.astype(np.float64)
                attrs["beta"] = 1.0
            else:
                b_new = (bias.astype(np.float64).reshape(-1) if bias is not None else 0.0) + vec.astype(np.float64)
            consts.note(m["c"], *p.inputs[2:])
            return rw.op(kind, [m["x"], p.input(1), rw.const(np.asarray(b_new).astype(w.dtype), "bias")], attrs)
        return rewrite

    def matmul_add(m: Match, rw: Rewriter) -> Optional[Value]:
        c = m.const("c")
        wdims = ranks.dims(m["w"])
        if ranks.rank(m["a"]) != 2 or wdims is None or len(wdims) != 2 or not isinstance(wdims[1], int):
            return None
        if m["w"].dtype is not None and m["w"].dtype.numpy != c.dtype:
            return None
        if per_channel(c, 2, wdims[1], axis=1) is None:
            return None
        return rw.op("Gemm", [m["a"], m["w"], m["c"]])

    rules: List[RewriteRule] = []
    for k in ("Conv", "ConvTranspose", "Gemm"):
        rules.append(RewriteRule(f"mul-into-{k.lower()}", Op("Mul", producer(k), Const("c"), commute=True), mul(k)))
        rules.append(RewriteRule(f"add-into-{k.lower()}", Op("Add", producer(k), Const("c"), commute=True), add(k)))
    rules.append(RewriteRule("matmul-add-to-gemm",
                             Op("Add", Op("MatMul", Var("a"), Var("w"), name="mm"), Const("c"), commute=True), matmul_add))
    return rules


@register_pass
class FuseAffine(Pass):
    """Fold constant Mul/Add into Conv, ConvTranspose and Gemm; MatMul + bias Add -> Gemm (2-D A).

    Rules (weights and biases must be constants; the constant must broadcast only along the output
    channel axis (axis 1) and never enlarge the output; same dtype; computed in float64):

    - ``mul-into-{conv,convtranspose,gemm}``: Mul(P(x, W, b), s) -> P(x, W*s, b*s)
    - ``add-into-{conv,convtranspose,gemm}``: Add(P(x, W, b), c) -> P(x, W, b+c) (bias created if
      absent; Gemm: C' = beta*C + c, beta = 1)
    - ``matmul-add-to-gemm``: Add(MatMul(A, B), c), A and B 2-D, c of N (or 1xN, scalar) -> Gemm(A, B, c)

    Either input order of Mul/Add matches. N-D MatMul + Add stays (onnxruntime fuses it itself).
    """

    name = "fuse-affine"
    opt_level = 2

    def run(self, model: Model, ctx: PassContext) -> bool:
        consts = ConstTracker()
        stats = apply_rules(model, fuse_affine_rules(model, consts, RankOracle(model)))
        consts.sweep()
        for rule, n in stats.fired.items():
            ctx.stat(rule, n)
        return stats.changed
