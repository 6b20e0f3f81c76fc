"""Cross-layer equalization (data-free quantization, Nagel et al. 2019).

For two consecutive layers ``L2(act(L1(x)))`` with a positively homogeneous ``act`` (none, Relu,
LeakyRelu), scaling output channel ``i`` of ``L1`` (weights and bias) by ``1/s_i`` and input
channel ``i`` of ``L2`` by ``s_i`` leaves the function unchanged. With
``s_i = sqrt(r1_i / r2_i)`` (``r`` = per-channel max ``|w|``) both ranges become
``sqrt(r1_i * r2_i)``, so the channels of each weight tensor are more alike and int8 quantization
(per-tensor especially) loses less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgec.ir import Model, Node, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import constant_value

from .fuse_batchnorm import ConstTracker

__all__ = ["EqualizeLayers", "find_pairs", "Layer"]

#: activations (fused or as separate nodes) through which channel scaling commutes: f(x/s) = f(x)/s, s > 0
HOMOGENEOUS_ACTS = frozenset({"", "Relu", "LeakyRelu"})
#: ops allowed between the two layers (per-channel, positively homogeneous)
PASS_THROUGH = frozenset({"Relu", "LeakyRelu", "MaxPool"})
#: smallest per-channel range that takes part (zero channels keep s = 1)
_EPS = 1e-12
#: stop iterating when every scale is within this of 1 (|log s|)
_TOL = 1e-4


@dataclass
class Layer:
    """A Conv/Gemm-like node with constant weights, edited in float64 until written back."""

    node: Node
    kind: str  # "conv" or "gemm"
    w: np.ndarray  # Conv: (Cout, Cin/g, k...); Gemm: B' as (K, M), i.e. transposed when transB=1
    b: Optional[np.ndarray]  # Conv: (Cout,); Gemm: C (broadcastable to (N, M))
    dtype: np.dtype
    group: int = 1
    changed: bool = False

    @property
    def out_channels(self) -> int:
        return self.w.shape[0] if self.kind == "conv" else self.w.shape[1]

    @property
    def in_channels(self) -> int:
        return self.w.shape[1] * self.group if self.kind == "conv" else self.w.shape[0]

    def out_ranges(self) -> np.ndarray:
        """max |w| per output channel."""
        if self.kind == "conv":
            return np.abs(self.w).reshape(self.w.shape[0], -1).max(axis=1)
        return np.abs(self.w).max(axis=0)

    def in_ranges(self) -> np.ndarray:
        """max |w| per input channel (over every output channel that reads it)."""
        if self.kind == "gemm":
            return np.abs(self.w).max(axis=1)
        g, co, ci = self.group, self.w.shape[0], self.w.shape[1]
        a = np.abs(self.w).reshape((g, co // g, ci, -1))  # group, out in group, in in group, kernel
        return a.max(axis=(1, 3)).reshape(-1)

    def scale_out(self, inv: np.ndarray) -> None:
        """Multiply output channel i (weights and bias) by inv[i]."""
        if self.kind == "conv":
            self.w = self.w * inv.reshape((-1,) + (1,) * (self.w.ndim - 1))
            if self.b is not None:
                self.b = self.b * inv
        else:
            self.w = self.w * inv[None, :]
            if self.b is not None:
                self.b = self.b * inv  # broadcasts over the last axis (size 1 or M)
        self.changed = True

    def scale_in(self, s: np.ndarray) -> None:
        """Multiply input channel i by s[i]."""
        if self.kind == "gemm":
            self.w = self.w * s[:, None]
        else:
            g, co, ci = self.group, self.w.shape[0], self.w.shape[1]
            shp = self.w.shape
            w = self.w.reshape((g, co // g, ci) + shp[2:])
            self.w = (w * s.reshape((g, 1, ci) + (1,) * (len(shp) - 2))).reshape(shp)
        self.changed = True


def _layer(node: Node) -> Optional[Layer]:
    """The Layer view of a Conv/FusedConv/Gemm/FusedGemm node with constant float weights."""
    key = (node.domain, node.op_type)
    if key in (("", "Conv"), ("edgec", "FusedConv")):
        kind = "conv"
    elif key in (("", "Gemm"), ("edgec", "FusedGemm")):
        kind = "gemm"
    else:
        return None
    w = constant_value(node.input(1))
    if w is None or not np.issubdtype(w.dtype, np.floating):
        return None
    bias_v = node.input(2)
    b = constant_value(bias_v) if bias_v is not None else None
    if bias_v is not None and b is None:
        return None
    if any(node.input(i) is not None for i in range(3, len(node.inputs))):
        return None
    group = 1
    if kind == "conv":
        group = int(node.attr("group", 1))
        if w.ndim < 3 or w.shape[0] % group:
            return None
        if b is not None and b.shape != (w.shape[0],):
            return None
        wt = w.astype(np.float64)
    else:
        if w.ndim != 2:
            return None
        wt = (w.T if node.attr("transB", 0) else w).astype(np.float64)
        if b is not None and b.ndim > 0 and b.shape[-1] not in (1, wt.shape[1]):
            return None
    return Layer(node, kind, wt, None if b is None else b.astype(np.float64), w.dtype, group)


def _activation_ok(node: Node) -> bool:
    if node.domain == "edgec":
        return (node.attr("activation", "") or "") in HOMOGENEOUS_ACTS
    return True


def _single_private_use(v: Value) -> Optional[Node]:
    """The only consumer of ``v`` when it has exactly one use and is no graph output."""
    if v is None or v.is_graph_output():
        return None
    uses = v.uses()
    return uses[0][0] if len(uses) == 1 and uses[0][1] == 0 else None


def find_pairs(model: Model) -> Tuple[Dict[int, Layer], List[Tuple[Layer, Layer]]]:
    """Layers by node id and the (first, second) pairs of the main graph, in graph order."""
    layers: Dict[int, Layer] = {}

    def get(n: Node) -> Optional[Layer]:
        if id(n) not in layers:
            lay = _layer(n)
            if lay is None:
                return None
            layers[id(n)] = lay
        return layers[id(n)]

    pairs: List[Tuple[Layer, Layer]] = []
    for node in model.graph:
        l1 = get(node)
        if l1 is None or not _activation_ok(node):
            continue
        v = node.output(0)
        nxt = _single_private_use(v)
        while nxt is not None and nxt.domain == "" and nxt.op_type in PASS_THROUGH:
            if nxt.op_type == "MaxPool" and (l1.kind != "conv" or nxt.output(1) is not None):
                nxt = None
                break
            nxt = _single_private_use(nxt.output(0))
        if nxt is None:
            continue
        l2 = get(nxt)
        if l2 is None or l2.kind != l1.kind or l1.out_channels != l2.in_channels:
            continue
        if l2.kind == "gemm" and nxt.attr("transA", 0):
            continue
        if l2.kind == "conv" and l2.w.ndim != l1.w.ndim:
            continue
        pairs.append((l1, l2))
    return layers, pairs


def _write_back(layer: Layer, consts: ConstTracker) -> None:
    node = layer.node
    g = node.graph
    assert g is not None
    w = layer.w
    if layer.kind == "gemm" and node.attr("transB", 0):
        w = w.T
    consts.note(node.input(1), node.input(2))
    node.set_input(1, g.add_constant(np.ascontiguousarray(w.astype(layer.dtype)), "w_cle"))
    if layer.b is not None:
        node.set_input(2, g.add_constant(np.asarray(layer.b).astype(layer.dtype), "b_cle"))


@register_pass
class EqualizeLayers(Pass):
    """Cross-layer equalization: rescale channels of consecutive layers so their weight ranges match.

    Pairs: Conv/edgec.FusedConv -> Conv/FusedConv and Gemm/FusedGemm -> Gemm/FusedGemm, where the
    first layer's activation is none, Relu or LeakyRelu, optionally followed by Relu, LeakyRelu or
    (convs) MaxPool nodes, and each intermediate value has exactly one user and is no graph output.
    Weights (and biases) must be constants. Any group count is exact; depthwise convs take part on
    both sides, so conv -> dw -> conv chains equalize jointly. Sweeps over all pairs repeat until
    the scales settle or ``iterations`` sweeps ran. Computed in float64, written back as new
    constants in the weight dtype. Clip/ReLU6/HardSwish etc. block a pair (their bounds are not
    homogeneous). Report ``ctx.reports['equalize-layers']``: per pair, max/min channel-range ratio
    of the first layer before and after.
    """

    name = "equalize-layers"
    opt_level = 3
    idempotent = False
    iterations: int = 10

    def run(self, model: Model, ctx: PassContext) -> bool:
        layers, pairs = find_pairs(model)
        if not pairs:
            return False

        def spread(lay: Layer) -> float:
            r = lay.out_ranges()
            r = r[r > _EPS]
            return float(r.max() / r.min()) if r.size else 1.0

        before = [spread(a) for a, _ in pairs]
        sweeps = 0
        moved = False
        for _ in range(max(0, self.iterations)):
            sweeps += 1
            worst = 0.0
            for l1, l2 in pairs:
                r1, r2 = l1.out_ranges(), l2.in_ranges()
                ok = (r1 > _EPS) & (r2 > _EPS)
                s = np.ones_like(r1)
                s[ok] = np.sqrt(r1[ok] / r2[ok])
                if not np.all(np.isfinite(s)):
                    continue
                dev = float(np.max(np.abs(np.log(s))))
                worst = max(worst, dev)
                if dev < _TOL:
                    continue
                l1.scale_out(1.0 / s)
                l2.scale_in(s)
                moved = True
            if worst < _TOL:
                break
        if not moved:
            return False
        consts = ConstTracker()
        for lay in layers.values():
            if lay.changed:
                _write_back(lay, consts)
        consts.sweep()
        ctx.stat("pairs", len(pairs))
        ctx.stat("sweeps", sweeps)
        ctx.reports[self.name] = {
            "pairs": [{"first": a.node.name, "second": b.node.name, "range-ratio-before": r0,
                       "range-ratio-after": spread(a)} for (a, b), r0 in zip(pairs, before)],
            "sweeps": sweeps,
        }
        return True
