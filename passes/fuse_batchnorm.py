"""Fold inference BatchNormalization into the preceding Conv, ConvTranspose, Gemm or 2-D MatMul.

Also holds small helpers the other fusion passes share (constant bookkeeping, lazy ranks).
"""

from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np

from edgec.ir import Model, Node, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Const, Match, Op, RewriteRule, Rewriter, Var, apply_rules, constant_value

__all__ = ["FuseBatchNorm", "fuse_batchnorm_rules", "ConstTracker", "RankOracle"]


# --- shared helpers ---------------------------------------------------------------------------------
class ConstTracker:
    """Remembers constants a rewrite stopped using, and removes those left without users."""

    def __init__(self) -> None:
        self.values: List[Value] = []

    def note(self, *values: Optional[Value]) -> None:
        self.values.extend(v for v in values if v is not None)

    def sweep(self) -> int:
        removed = 0
        seen = set()
        for v in self.values:
            if id(v) in seen or v.has_uses():
                continue
            seen.add(id(v))
            p = v.producer
            if p is not None:
                if p.op_type == "Constant" and p.graph is not None:
                    p.graph.remove(p)
                    removed += 1
            elif v.is_initializer() and not v.is_graph_input():
                g = v.owner
                if g is not None and g.initializers.get(v.name) is v:
                    g.remove_initializer(v)
                    removed += 1
        self.values.clear()
        return removed


class RankOracle:
    """Ranks (and dims) of values; runs shape inference once, the first time a type is missing."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.inferred = False

    def dims(self, v: Optional[Value]):
        if v is None:
            return None
        arr = constant_value(v)
        if arr is not None:
            return tuple(arr.shape)
        if (v.shape is None or v.shape.dims is None) and not self.inferred:
            self.inferred = True
            try:
                from edgec.ir.shapes import infer_shapes

                infer_shapes(self.model)
            except Exception:  # noqa: BLE001 - shapes are an optimisation hint here
                pass
        if v.shape is None or v.shape.dims is None:
            return None
        return tuple(v.shape.dims)

    def rank(self, v: Optional[Value]) -> Optional[int]:
        d = self.dims(v)
        return None if d is None else len(d)


def float_dtype(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.floating)


# --- rules -------------------------------------------------------------------------------------------
def _bn_ok(node: Node) -> bool:
    """Inference form, per-channel, only the first output used."""
    if node.attr("training_mode", 0) not in (0, None) or node.attr("spatial", 1) != 1:
        return False
    if node.attr("is_test", 1) == 0:
        return False
    return all(o is None or not o.has_uses() for o in node.outputs[1:])


def fuse_batchnorm_rules(model: Model, consts: ConstTracker, ranks: RankOracle) -> List[RewriteRule]:
    """The rules of :class:`FuseBatchNorm` (constants they drop are noted in ``consts``)."""

    def bn_pattern(producer: str) -> Op:
        return Op("BatchNormalization",
                  Op(producer, Var("x"), Const("w", float_dtype), name="p", extra_inputs=True),
                  Const("scale"), Const("bnb"), Const("mean"), Const("var"), name="bn")

    def make(kind: str) -> Callable[[Match, Rewriter], Optional[Value]]:
        def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
            bn: Node = m["bn"]
            p: Node = m["p"]
            if not _bn_ok(bn):
                return None
            w = m.const("w")
            bias_v = p.input(2)
            bias = constant_value(bias_v) if bias_v is not None else None
            if bias_v is not None and bias is None:
                return None
            if any(len(p.inputs) > i and p.input(i) is not None for i in (3,)):
                return None
            arrs = [np.asarray(m.const(k), np.float64).reshape(-1) for k in ("scale", "bnb", "mean", "var")]
            eps = float(bn.attr("epsilon", 1e-5))
            if kind == "Conv":
                c_out = w.shape[0]
            elif kind == "ConvTranspose":
                c_out = w.shape[1] * int(p.attr("group", 1))
            elif kind == "Gemm":
                if w.ndim != 2:
                    return None
                c_out = w.shape[0] if p.attr("transB", 0) else w.shape[1]
            else:  # MatMul: exact only for a 2-D product
                if w.ndim != 2 or ranks.rank(m["x"]) != 2:
                    return None
                c_out = w.shape[1]
            if any(a.size != c_out for a in arrs):
                return None
            gamma, beta, mean, var = arrs
            s = gamma / np.sqrt(var + eps)
            w64 = w.astype(np.float64)
            if kind == "Conv":
                w_new = w64 * s.reshape((-1,) + (1,) * (w.ndim - 1))
            elif kind == "ConvTranspose":
                g = int(p.attr("group", 1))
                shp = w.shape
                w_new = (w64.reshape((g, shp[0] // g, shp[1]) + shp[2:])
                         * s.reshape((g, 1, shp[1]) + (1,) * (w.ndim - 2))).reshape(shp)
            elif kind == "Gemm" and p.attr("transB", 0):
                w_new = w64 * s[:, None]
            else:
                w_new = w64 * s[None, :]
            dt = w.dtype
            if kind == "Gemm":
                beta_attr = float(p.attr("beta", 1.0))
                c = bias.astype(np.float64) * beta_attr if bias is not None else 0.0
                b_new = (c - mean) * s + beta
                if np.ndim(b_new) == 0:
                    b_new = np.full((c_out,), b_new)
            else:
                b0 = bias.astype(np.float64).reshape(-1) if bias is not None else 0.0
                b_new = (b0 - mean) * s + beta
            consts.note(*[v for v in p.inputs[1:]], *bn.inputs[1:])
            wv = rw.const(w_new.astype(dt), "w_bn")
            bv = rw.const(np.asarray(b_new).astype(dt), "b_bn")
            if kind in ("Conv", "ConvTranspose"):
                return rw.op(kind, [m["x"], wv, bv], dict(p.attrs))
            attrs = dict(p.attrs) if kind == "Gemm" else {}
            attrs["beta"] = 1.0
            return rw.op("Gemm", [m["x"], wv, bv], attrs)
        return rewrite

    return [RewriteRule(f"bn-into-{k.lower()}", bn_pattern(k), make(k))
            for k in ("Conv", "ConvTranspose", "Gemm", "MatMul")]


@register_pass
class FuseBatchNorm(Pass):
    """Fold inference BatchNormalization into a preceding Conv, ConvTranspose, Gemm or 2-D MatMul.

    Rules (BN in inference form: training_mode 0/absent, spatial 1, only output 0 used; weights,
    bias and BN parameters constant; computed in float64, cast back to the weight dtype):

    - ``bn-into-conv``: BN(Conv(x, W, b)) -> Conv(x, W*s, (b-mean)*s+beta), s = gamma/sqrt(var+eps)
    - ``bn-into-convtranspose``: same per output channel of W (C_in, C_out/group, k...), any group
    - ``bn-into-gemm``: BN over axis 1 of Gemm(A, B, C) -> Gemm with B scaled per column (transB
      0/1) and C' = (beta*C - mean)*s + beta_bn, beta = 1
    - ``bn-into-matmul``: BN(MatMul(A, W)) with A and W 2-D -> Gemm(A, W*s, bias)

    New weight tensors are always created (a shared weight stays intact for its other users);
    constants left unused are removed. The producer's output must have no other user.
    """

    name = "fuse-batchnorm"
    opt_level = 2

    def run(self, model: Model, ctx: PassContext) -> bool:
        consts = ConstTracker()
        stats = apply_rules(model, fuse_batchnorm_rules(model, consts, RankOracle(model)))
        consts.sweep()
        for rule, n in stats.fired.items():
            ctx.stat(rule, n)
        return stats.changed
