"""Fold a constant-mode Pad of spatial dims into the pads of the following Conv or pooling op."""

from __future__ import annotations

import math
from typing import Callable, List, Optional

import numpy as np

from edgec.ir import Model, Node, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Match, Op, RewriteRule, Rewriter, Var, apply_rules, constant_value

from .fuse_batchnorm import ConstTracker

__all__ = ["FusePad", "fuse_pad_rules"]


def _pad_spec(pad: Node, rank: Optional[int]):
    """(begin, end) pads per axis and the pad value of a constant-mode Pad, or None."""
    mode = pad.attr("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "constant":
        return None
    if "pads" in pad.attrs:  # opset < 11
        pads = np.asarray(pad.attr("pads"), np.int64)
        value = float(pad.attr("value", 0.0))
    else:
        pads = constant_value(pad.input(1))
        if pads is None:
            return None
        pads = pads.astype(np.int64).reshape(-1)
        if pad.input(2) is not None:
            v = constant_value(pad.input(2))
            if v is None or v.size != 1:
                return None
            value = float(v.reshape(-1)[0])
        else:
            value = 0.0
    axes_v = pad.input(3)
    if axes_v is not None:
        axes = constant_value(axes_v)
        if axes is None or rank is None:
            return None
        axes = [int(a) + rank if a < 0 else int(a) for a in axes.reshape(-1)]
        n = len(axes)
        if pads.size != 2 * n:
            return None
        begin, end = [0] * rank, [0] * rank
        for i, a in enumerate(axes):
            begin[a], end[a] = int(pads[i]), int(pads[n + i])
    else:
        if pads.size % 2 or (rank is not None and pads.size != 2 * rank):
            return None
        r = pads.size // 2
        begin, end = [int(x) for x in pads[:r]], [int(x) for x in pads[r:]]
    return begin, end, value


def fuse_pad_rules(consts: ConstTracker) -> List[RewriteRule]:
    """The rules of :class:`FusePad`."""

    def make(kind: str) -> Callable[[Match, Rewriter], Optional[Value]]:
        def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
            node: Node = m.root
            pad: Node = m["pad"]
            auto = node.attr("auto_pad", "NOTSET")
            if isinstance(auto, bytes):
                auto = auto.decode()
            if auto != "NOTSET":
                return None
            if kind == "Conv":
                w = node.input(1)
                wr = len(w.shape.dims) if w.shape is not None and w.shape.dims is not None else None
                if wr is None:
                    return None
                rank = wr
            else:
                ks = node.attr("kernel_shape")
                if ks is None:
                    return None
                rank = len(ks) + 2
                if node.attr("ceil_mode", 0):
                    return None
            spec = _pad_spec(pad, rank)
            if spec is None:
                return None
            begin, end, value = spec
            if len(begin) != rank or any(p < 0 for p in begin + end) or begin[:2] != [0, 0] or end[:2] != [0, 0]:
                return None
            spatial = begin[2:] + end[2:]
            if kind == "Conv" and value != 0.0:
                return None
            if kind == "AveragePool" and any(spatial) and (value != 0.0 or not node.attr("count_include_pad", 0)):
                return None
            if kind == "MaxPool":
                if any(spatial) and not (math.isinf(value) and value < 0):
                    return None
                if len(node.outputs) > 1 and node.output(1) is not None and node.output(1).has_uses():
                    return None
            old = list(node.attr("pads", [0] * (2 * (rank - 2))))
            new = [a + b for a, b in zip(old, spatial)]
            attrs = dict(node.attrs)
            attrs["pads"] = new
            attrs.pop("auto_pad", None)
            consts.note(*pad.inputs[1:])
            ins = [m["x"]] + list(node.inputs[1:])
            return rw.op(kind, ins, attrs)
        return rewrite

    return [RewriteRule(f"pad-into-{k.lower()}",
                        Op(k, Op("Pad", Var("x"), name="pad", extra_inputs=True), name="op", extra_inputs=True), make(k))
            for k in ("Conv", "AveragePool", "MaxPool")]


@register_pass
class FusePad(Pass):
    """Fold a Pad (constant mode, non-negative, spatial dims only) into the following Conv or pool.

    Rules (the consumer's auto_pad must be NOTSET; pads are added to its ``pads``):

    - ``pad-into-conv``: pad value 0
    - ``pad-into-averagepool``: pad value 0 and count_include_pad=1 (or all pads zero); ceil_mode 0
    - ``pad-into-maxpool``: pad value -inf (or all pads zero); ceil_mode 0; Indices output unused

    Pad forms of every opset: ``pads``/``value`` attributes, constant inputs, and ``axes`` (opset 18).
    """

    name = "fuse-pad"
    opt_level = 2

    def run(self, model: Model, ctx: PassContext) -> bool:
        consts = ConstTracker()
        stats = apply_rules(model, fuse_pad_rules(consts))
        consts.sweep()
        for rule, n in stats.fired.items():
            ctx.stat(rule, n)
        return stats.changed
