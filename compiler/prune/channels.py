"""Structured channel pruning on the IR: score the channels of each group, choose which to keep,
slice every member consistently, fix Split/Slice operands, and optionally refit the next layers.

    dg = analyze(model)
    keep = plan(model, dg, sparsity=0.3, target="channels")     # group id -> kept channel indices
    apply_pruning(model, dg, keep)                              # slices constants, re-infers types
    refit_consumers(dense, model, dg, keep, calibration)         # least squares on calibration data

``plan(..., target="macs")`` removes channels until a fraction of the MACs is gone, greedily by
default (chunks of channels from the group that loses least per MAC saved); with ``score="obs"``
and calibration data the loss is the next layers' output error left after their least-squares
refit (Optimal Brain Surgeon on channels), which the refit then realises. ``edgec.Fused*`` ops
count as their base op for MACs and are refit on their pre-activation outputs.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..ir.core import Model, Node, Value
from ..ir.shapes import infer_shapes
from ..ir.tensor import ArrayTensor
from ..ir.types import Shape, TensorType
from ..rewrite import constant_value
from .dependency import ChannelGroup, DependencyGraph, Layout, layout_indices

__all__ = ["symbol_bindings", "total_macs", "node_mac_count", "group_scores", "obs_scores", "plan", "apply_pruning",
           "refit_consumers", "estimate_macs"]


# --- MACs -------------------------------------------------------------------------------------------
def symbol_bindings(model: Model) -> Dict[str, int]:
    """Every symbolic dim of the graph inputs bound to 1 (MACs per sample)."""
    out: Dict[str, int] = {}
    for v in model.graph.inputs:
        if v.shape is not None and v.shape.dims is not None:
            for d in v.shape.dims:
                if isinstance(d, str):
                    out[d] = 1
    return out


class _AsBase:
    """An ``edgec.Fused*`` node seen as its base ONNX op (for :func:`edgec.inspect.node_macs`)."""

    def __init__(self, node: Node, op: str) -> None:
        self._node, self.op_type, self.domain = node, op, ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)


def node_mac_count(node: Node, dims: Mapping[str, int]) -> int:
    """MACs of one node per :func:`edgec.inspect.node_macs`; ``edgec.Fused*`` ops count as their base op."""
    from ..inspect import node_macs
    from .dependency import FUSED

    if node.domain == "edgec" and node.op_type in FUSED:
        node = _AsBase(node, FUSED[node.op_type])  # type: ignore[assignment]
    return int(node_macs(node, dims)[0] or 0)


def total_macs(model: Model) -> int:
    """MACs of the main graph per sample (symbolic input dims bound to 1), from ``edgec.inspect``
    (fused ``edgec`` ops counted as their base op)."""
    return int(sum(_node_macs_map(model).values()))


def _node_macs_map(model: Model) -> Dict[str, int]:
    dims = symbol_bindings(model)
    return {n.name: node_mac_count(n, dims) for n in model.graph}


def _fraction(layout: Optional[Layout], keep: Mapping[int, np.ndarray], dg: DependencyGraph) -> float:
    if layout is None:
        return 1.0
    n = layout.channels
    return len(layout_indices(layout.with_axis(0), keep, dg.find)) / (n * layout.block) if n else 1.0


def estimate_macs(dg: DependencyGraph, base: Mapping[str, int], keep: Mapping[int, np.ndarray], total: int) -> float:
    """MACs after pruning, estimated from each MAC node's kept output and input fractions."""
    saved = 0.0
    for mn in dg.mac_nodes:
        m = base.get(mn.node.name, 0)
        saved += m * (1.0 - _fraction(mn.out_layout, keep, dg) * _fraction(mn.in_layout, keep, dg))
    return total - saved


# --- scores -----------------------------------------------------------------------------------------
def _bn_following(group: ChannelGroup) -> List[np.ndarray]:
    out = []
    for m in group.members:
        if m.node.op_type == "BatchNormalization" and m.index == 1 and len(m.layout.segments) == 1:
            seg = m.layout.segments[0]
            a = constant_value(m.value)
            if a is not None:
                out.append((seg, np.abs(a.astype(np.float64))))
    return out


def group_scores(group: ChannelGroup, dg: DependencyGraph, score: str = "l1") -> np.ndarray:
    """Importance of each channel of ``group``: per member, the l1/l2 norm of the channel's slice
    normalized by the member's mean, summed (DepGraph's group importance); ``bn``: |gamma| of the
    BatchNormalizations in the group (falls back to l1 when there is none)."""
    total = np.zeros(group.size, np.float64)
    if score == "bn":
        found = False
        for m in group.members:
            if m.node.op_type != "BatchNormalization" or m.index != 1:
                continue
            a = np.abs(constant_value(m.value).astype(np.float64).reshape(-1))
            _accumulate(total, m.layout, a, group.id, dg)
            found = True
        if found:
            return total
        score = "l1"
    for m in group.members:
        if m.role not in ("out", "in"):
            continue
        a = constant_value(m.value)
        if a is None:
            continue
        a = np.moveaxis(a.astype(np.float64), m.axis, 0).reshape(a.shape[m.axis], -1)
        per = np.abs(a).sum(1) if score == "l1" else np.sqrt((a * a).sum(1))
        if m.layout.block > 1:
            per = per.reshape(-1, m.layout.block).sum(1)
        mean = per.mean() if per.size and per.mean() > 0 else 1.0
        _accumulate(total, m.layout, per / mean, group.id, dg)
    return total


def obs_scores(model: Model, dg: DependencyGraph, groups: Sequence[ChannelGroup], calibration: Any, *,
               damp: float = 0.01) -> Tuple[Dict[int, np.ndarray], Any]:
    """Data-aware channel costs (Optimal Brain Surgeon on channels): for each consumer ``L`` of a
    group (Conv with group 1 / Gemm / MatMul reading its channels), with ``H = XᵀX`` of ``L``'s
    unfolded input on ``calibration`` and ``B`` the weight columns of channel ``c``, the output error
    left after the optimal least-squares refit of ``L`` when ``c`` goes,
    ``tr(W_B ((H+λI)⁻¹)_BB⁻¹ W_Bᵀ)``, relative to ``L``'s output energy ``tr(W H Wᵀ)``; summed over
    consumers. Comparable across groups (errors are relative); groups without such a consumer get
    ``inf`` (left alone). Returns the costs per group and ``joint(gid, removed channels)``, the
    error when several channels go together."""
    from .reconstruct import _damped, collect_layer_stats
    from .scores import find_layers

    layers = {l.name: l for l in find_layers(model)[0]}
    want: Dict[str, Any] = {}
    for grp in groups:
        for m in grp.members:
            if m.role == "in" and m.node.name in layers and layers[m.node.name].groups == 1:
                want[m.node.name] = layers[m.node.name]
    stats = collect_layer_stats(model, calibration, list(want.values()), hessian=True, norms=False) if want else {}
    inv: Dict[str, Tuple[np.ndarray, np.ndarray, float]] = {}
    for name, l in want.items():
        h = stats[name].hessians[0]
        w = l.to_matrix(l.array()).astype(np.float64)
        energy = float(np.einsum("ij,jk,ik->", w, h, w))
        inv[name] = (w, np.linalg.inv(_damped(h, damp)), energy if energy > 0 else 1.0)
    out: Dict[int, np.ndarray] = {}
    #: group id -> [(W, (H+λI)⁻¹, energy, columns of channel c for every c)] of its consumers
    terms: Dict[int, List[Tuple[np.ndarray, np.ndarray, float, List[np.ndarray]]]] = {}
    for grp in groups:
        cost = np.zeros(grp.size, np.float64)
        for m in grp.members:
            if m.role != "in" or m.node.name not in inv:
                continue
            l = layers[m.node.name]
            w, hinv, energy = inv[m.node.name]
            n_in = l.shape[1] if l.op == "Conv" else l.matrix_k
            chan_cols: List[List[np.ndarray]] = [[] for _ in range(grp.size)]
            pos = 0
            for s in m.layout.segments:
                if dg.find(s.group) == grp.id:
                    for c in range(s.start, s.stop):
                        p = (pos + c - s.start) * m.layout.block + np.arange(m.layout.block)
                        chan_cols[c].append((np.arange(l.taps)[:, None] * n_in + p[None, :]).reshape(-1)
                                            if l.op == "Conv" else p)
                pos += s.size
            cols_of = [np.concatenate(cc) if cc else np.zeros(0, np.int64) for cc in chan_cols]
            terms.setdefault(grp.id, []).append((w, hinv, energy, cols_of))
            for c, cols in enumerate(cols_of):
                if len(cols):
                    cost[c] += _obs_error(w, hinv, cols) / energy
        out[grp.id] = cost if grp.id in terms else np.full(grp.size, np.inf)

    def joint(gid: int, removed: Sequence[int]) -> float:
        """Relative output error of the consumers of group ``gid`` after their optimal refit when
        the channels ``removed`` all go (the joint OBS error, not the sum of single-channel ones)."""
        total = 0.0
        for w, hinv, energy, cols_of in terms.get(gid, []) if len(removed) else []:
            cols = np.concatenate([cols_of[c] for c in removed])
            if len(cols):
                total += _obs_error(w, hinv, cols) / energy
        return total

    return out, joint


def _obs_error(w: np.ndarray, hinv: np.ndarray, cols: np.ndarray) -> float:
    wb = w[:, cols]
    return float(np.einsum("ij,jk,ik->", wb, np.linalg.inv(hinv[np.ix_(cols, cols)]), wb))


def _accumulate(total: np.ndarray, layout: Layout, per_pos: np.ndarray, gid: int, dg: DependencyGraph) -> None:
    pos = 0
    for s in layout.segments:
        if dg.find(s.group) == gid:
            total[s.start:s.stop] += per_pos[pos:pos + s.size]
        pos += s.size


# --- planning ---------------------------------------------------------------------------------------
def _n_keep(size: int, ratio: float, round_to: int, min_channels: int) -> int:
    keep = size - int(math.floor(ratio * size + 1e-9))
    if round_to > 1:
        keep = min(size, int(math.ceil(keep / round_to)) * round_to)
    return max(min(size, max(min_channels, 1)), keep)


def prunable_groups(dg: DependencyGraph, skip: Iterable[str] = ()) -> List[ChannelGroup]:
    """Prunable groups that have members and producers, minus those with a producer (node or output
    name) in ``skip``."""
    skip = set(skip)
    out = []
    for grp in dg.groups():
        if not grp.prunable or not grp.members or not grp.producers:
            continue
        names = {p.name for p in grp.producers} | {o.name for p in grp.producers for o in p.outputs if o is not None}
        if names & skip:
            continue
        out.append(grp)
    return out


def plan(model: Model, dg: DependencyGraph, *, sparsity: float, target: str = "channels", round_to: int = 1,
         score: str = "l1", min_channels: int = 1, skip: Sequence[str] = (),
         allocation: str = "greedy", calibration: Any = None) -> Dict[int, np.ndarray]:
    """Group id -> sorted kept channel indices. ``target='channels'``: remove ``sparsity`` of every
    prunable group; ``'macs'``: remove channels until at least ``sparsity`` of the MACs go, either
    with one ratio for all groups (``allocation='uniform'``, bisection on the MAC estimate) or
    greedily (``'greedy'``: step by step, from the group whose next chunk of lowest-scored channels
    loses the least of the group's importance per MAC saved). ``score='obs'`` ranks channels by
    :func:`obs_scores` (needs ``calibration``); the greedy allocation then weighs the summed costs
    themselves rather than fractions of each group's importance."""
    groups = prunable_groups(dg, skip)
    joint = None
    if score == "obs":
        if calibration is None:
            raise ValueError("score 'obs' needs calibration data")
        scores, joint = obs_scores(model, dg, groups, calibration)  # errors: the highest are kept
        groups = [g for g in groups if np.isfinite(scores[g.id]).all()]
    else:
        scores = {g.id: group_scores(g, dg, score) for g in groups}

    def pick(counts: Mapping[int, int]) -> Dict[int, np.ndarray]:
        keep = {}
        for g in groups:
            k = counts[g.id]
            if k < g.size:
                order = np.argsort(-scores[g.id], kind="stable")[:k]
                keep[g.id] = np.sort(order).astype(np.int64)
        return keep

    def choose(ratio: float) -> Dict[int, np.ndarray]:
        return pick({g.id: _n_keep(g.size, ratio, round_to, min_channels) for g in groups})

    if target == "channels":
        return choose(sparsity)
    if allocation == "greedy":
        return pick(_greedy_counts(model, dg, groups, scores, sparsity, round_to, min_channels, joint))
    base = _node_macs_map(model)
    total = sum(base.values())
    goal = (1.0 - sparsity) * total
    lo, hi = 0.0, 0.99
    if estimate_macs(dg, base, choose(hi), total) > goal:
        return choose(hi)
    for _ in range(30):
        mid = (lo + hi) / 2
        if estimate_macs(dg, base, choose(mid), total) <= goal:
            hi = mid
        else:
            lo = mid
    return choose(hi)


def _greedy_counts(model: Model, dg: DependencyGraph, groups: List[ChannelGroup], scores: Mapping[int, np.ndarray],
                   sparsity: float, round_to: int, min_channels: int, joint: Any = None) -> Dict[int, int]:
    """Kept channel count per group: remove chunks (multiples of ``round_to``, about 1/16 of a group)
    one at a time, each time from the group losing the smallest fraction of its importance (sum of
    channel scores) per MAC saved, until the MAC estimate reaches ``(1 - sparsity)`` of the total.
    With ``joint`` (OBS costs, :func:`obs_scores`) a step's loss is the increase of the joint error.

    The estimate treats each MAC node's cost as ``macs · f_out · f_in``, ``f`` the kept fraction of
    the groups along the layout (channels of a partly covered group assumed kept uniformly)."""
    base = _node_macs_map(model)
    total = float(sum(base.values()))
    goal = (1.0 - sparsity) * total
    ids = {g.id for g in groups}
    size = {g.id: g.size for g in groups}
    counts = dict(size)

    def weights(layout: Optional[Layout]) -> Dict[int, float]:
        out: Dict[int, float] = {}
        if layout is None or not layout.channels:
            return out
        for s in layout.segments:
            gid = dg.find(s.group)
            if gid in ids:
                out[gid] = out.get(gid, 0.0) + s.size / layout.channels
        return out

    terms = []  # (macs, out weights, in weights)
    by_group: Dict[int, List[int]] = {g: [] for g in ids}
    for mn in dg.mac_nodes:
        m = float(base.get(mn.node.name, 0))
        if not m:
            continue
        wo, wi = weights(mn.out_layout), weights(mn.in_layout)
        if not wo and not wi:
            continue
        for gid in set(wo) | set(wi):
            by_group[gid].append(len(terms))
        terms.append((m, wo, wi))

    def frac(w: Dict[int, float]) -> float:
        return 1.0 - sum(v * (1.0 - counts[g] / size[g]) for g, v in w.items())

    def term(i: int) -> float:
        m, wo, wi = terms[i]
        return m * frac(wo) * frac(wi)

    est = total
    order = {g: np.sort(np.asarray(scores[g], np.float64)) for g in ids}  # ascending: removal order
    rank = {g: np.argsort(np.asarray(scores[g], np.float64), kind="stable") for g in ids}
    memo: Dict[Tuple[int, int], float] = {}

    def joint_at(g: int, kept: int) -> float:
        if (g, kept) not in memo:
            memo[(g, kept)] = joint(g, rank[g][:size[g] - kept])
        return memo[(g, kept)]

    tot_score = {g: float(order[g].sum()) or 1.0 for g in ids}
    floor = {g: min(size[g], max(min_channels, 1)) for g in ids}
    while est > goal:
        best = None
        for g in ids:
            k = counts[g]
            chunk = max(round_to, int(math.ceil(size[g] / 16 / round_to)) * round_to)
            new = (k - 1) // round_to * round_to if k % round_to else k - chunk
            new = max(new, floor[g])
            if new >= k:
                continue
            before = sum(term(i) for i in by_group[g])
            counts[g] = new
            saved = before - sum(term(i) for i in by_group[g])
            counts[g] = k
            if saved <= 0:
                continue
            if joint is None:
                lost = float(order[g][size[g] - k:size[g] - new].sum()) / tot_score[g]
            else:
                lost = joint_at(g, new) - joint_at(g, k)
            cost = lost / saved
            if best is None or cost < best[0]:
                best = (cost, g, new, saved)
        if best is None:
            break
        _, g, new, saved = best
        counts[g] = new
        est -= saved
    return counts


# --- applying ---------------------------------------------------------------------------------------
def _set_const(node: Node, index: int, arr: np.ndarray, orphans: List[Value]) -> None:
    v = node.inputs[index]
    g = node.graph
    assert v is not None and g is not None
    if v.producer is None and v.is_constant() and len(v.uses()) == 1 and not v.is_graph_output():
        v.const = ArrayTensor(np.ascontiguousarray(arr))
        v.type = TensorType(v.type.dtype if isinstance(v.type, TensorType) else ArrayTensor(arr).dtype, Shape(arr.shape))
        return
    nv = g.add_constant(np.ascontiguousarray(arr), v.name + "_pruned")
    node.set_input(index, nv)
    orphans.append(v)


def _sweep(orphans: List[Value]) -> None:
    for v in orphans:
        if v.has_uses():
            continue
        p = v.producer
        if p is not None and p.op_type == "Constant" and p.graph is not None:
            p.graph.remove(p)
        elif v.is_initializer() and not v.is_graph_input():
            g = v.owner
            if g is not None and g.initializers.get(v.name) is v:
                g.remove_initializer(v)


def apply_pruning(model: Model, dg: DependencyGraph, keep: Mapping[int, np.ndarray]) -> int:
    """Slice every member of the pruned groups, rewrite Split sizes / Slice bounds and re-infer
    types. Returns the number of tensors changed."""
    if not keep:
        return 0
    find = dg.find
    keep = {find(k): v for k, v in keep.items()}
    by_operand: Dict[Tuple[int, int], Tuple[Node, int, List[Tuple[int, Layout]]]] = {}
    for m in dg.members:
        if not any(find(s.group) in keep for s in m.layout.segments):
            continue
        key = (id(m.node), m.index)
        entry = by_operand.setdefault(key, (m.node, m.index, []))
        if (m.axis, m.layout) not in entry[2]:
            entry[2].append((m.axis, m.layout))
    orphans: List[Value] = []
    changed = 0
    for node, index, axes in by_operand.values():
        arr = constant_value(node.inputs[index])
        assert arr is not None
        new = arr
        for axis, layout in axes:
            new = np.take(new, layout_indices(layout, keep, find), axis=axis)
        if new.shape != arr.shape:
            _set_const(node, index, new.astype(arr.dtype), orphans)
            changed += 1
    for fx in dg.fixups:
        if not any(find(s.group) in keep for s in fx.layout.segments):
            continue
        idx = layout_indices(fx.layout.with_axis(0), keep, find)
        node = fx.node
        if fx.kind == "reshape":  # the target's entry on the channel axis: the kept positions
            target = constant_value(node.input(1)).copy()
            for entry, _ in fx.ranges:
                target.reshape(-1)[entry] = len(idx)
            _set_const(node, 1, target, orphans)
            changed += 1
            continue
        if fx.kind == "concat_entry":  # a one-element piece of a Reshape target built by Concat
            piece = constant_value(node.input(fx.ranges[0][0]))
            _set_const(node, fx.ranges[0][0], np.full(piece.shape, len(idx), piece.dtype), orphans)
            changed += 1
            continue
        new_ranges = [(int((idx < lo).sum()), int((idx < hi).sum())) for lo, hi in fx.ranges]
        if fx.kind == "group":
            node.set_attr("group", int(len(idx)))
        elif fx.kind == "split":
            sizes = np.array([hi - lo for lo, hi in new_ranges], np.int64)
            if node.input(1) is not None or (model.opset() or 21) >= 13:
                if node.input(1) is None and len(node.inputs) < 2:
                    node.append_input(None)
                nv = node.graph.add_constant(sizes, "split_sizes")
                old = node.input(1)
                node.set_input(1, nv)
                if old is not None:
                    orphans.append(old)
                if node.attr("num_outputs") is not None:
                    del node.attrs["num_outputs"]
            else:
                node.set_attr("split", [int(s) for s in sizes])
        else:  # slice: rewrite start / end on the channel axis
            r = len(node.input(0).shape.dims)  # type: ignore[union-attr]
            axes_v = constant_value(node.input(3)) if node.input(3) is not None else None
            starts = constant_value(node.input(1)).copy()
            ends = constant_value(node.input(2)).copy()
            axes_l = [int(a) % r for a in (axes_v if axes_v is not None else range(len(starts)))]
            k = axes_l.index(fx.layout.axis)
            starts.reshape(-1)[k], ends.reshape(-1)[k] = new_ranges[0]
            _set_const(node, 1, starts, orphans)
            _set_const(node, 2, ends, orphans)
        changed += 1
    _sweep(orphans)
    for g in [model.graph]:
        for v in g.values():
            if v.producer is not None:
                v.type = None
    infer_shapes(model, overwrite=True)
    return changed


# --- refit ------------------------------------------------------------------------------------------
def _im2col(x: np.ndarray, node: Node, kshape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """Rows of input patches of a 2-D Conv (one per output position), ordered like W.reshape(C_out, -1)."""
    if x.ndim != 4 or len(kshape) != 2:
        return None
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    strides = list(node.attr("strides", [1, 1]))
    dil = list(node.attr("dilations", [1, 1]))
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    kh, kw = kshape
    eh, ew = (kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))
    win = win[:, :, ::strides[0], ::strides[1], ::dil[0], ::dil[1]]  # N, C, Ho, Wo, kh, kw
    n, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)


def refit_consumers(dense: Model, model: Model, dg: DependencyGraph, keep: Mapping[int, np.ndarray],
                    calibration: Any, *, ridge: float = 1e-3, max_rows: int = 50000) -> List[str]:
    """Refit each layer whose input channels were pruned to the dense model's outputs.

    In graph order, for consumer ``L`` (Conv group 1 2-D, Gemm, MatMul 2-D weight) with pruned input
    ``X`` (from the current pruned model) and dense output ``Y`` (from ``dense``), solve
    ``min ‖[X 1] [W' b']ᵀ − Y‖² + λ‖W' − W‖²`` (λ = ``ridge`` · mean diag of XᵀX) and install W' and
    a bias. Returns the names of the refitted nodes.
    """
    from ..quant.collect import run_model

    from .dependency import FUSED

    find = dg.find
    keep = {find(k): v for k, v in keep.items()}
    dense_nodes = {n.name: n for n in dense.graph}
    consumers = []
    for mn in dg.mac_nodes:
        if mn.in_layout is None or not any(find(s.group) in keep for s in mn.in_layout.segments):
            continue
        n = mn.node
        if n.graph is not model.graph or n.name not in dense_nodes:
            continue
        op = FUSED.get(n.op_type, n.op_type) if n.domain == "edgec" else n.op_type
        cols = layout_indices(mn.out_layout.with_axis(0), keep, find) if mn.out_layout is not None else None
        if op == "Conv" and int(n.attr("group", 1)) == 1:
            consumers.append((n, op, cols))
        elif op == "Gemm" and not int(n.attr("transA", 0)):
            consumers.append((n, op, cols))
        elif op == "MatMul":
            consumers.append((n, op, cols))
    done = []
    for node, op, cols in consumers:
        # the target is the dense layer's output before any fused activation, computed from the
        # dense layer's input and weights
        dnode = dense_nodes[node.name]
        pre = _linear(dnode, op)
        if pre is None:
            continue
        Wd, bd = pre
        xname, dname = node.input(0).name, dnode.input(0).name
        w = constant_value(node.input(1))
        xs, ys = [], []
        rows = 0
        for batch in calibration.batches(64):
            x = run_model(model, batch, outputs=[xname])[xname]
            xd = run_model(dense, batch, outputs=[dname])[dname]
            if op == "Conv":
                xr = _im2col(x.astype(np.float64), node, tuple(w.shape[2:]))
                xdr = _im2col(xd.astype(np.float64), dnode, tuple(w.shape[2:]))
                if xr is None or xdr is None:
                    break
            else:
                xr = x.reshape(-1, x.shape[-1]).astype(np.float64)
                xdr = xd.reshape(-1, xd.shape[-1]).astype(np.float64)
            xs.append(xr)
            yr = xdr @ Wd.T + bd
            ys.append(yr[:, cols] if cols is not None else yr)
            rows += len(xr)
            if rows >= max_rows:
                break
        if not xs:
            continue
        X, Y = np.concatenate(xs), np.concatenate(ys)
        b_arr = constant_value(node.input(2)) if node.input(2) is not None else None
        tb = op == "Gemm" and int(node.attr("transB", 0))
        if op == "Conv":
            W0 = w.reshape(w.shape[0], -1).astype(np.float64)  # C_out x K
        elif op == "Gemm":
            W0 = (w if tb else w.T).astype(np.float64)
        else:
            W0 = w.T.astype(np.float64)
        if op == "Gemm":
            alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
            W0 = W0 * alpha
        b0 = np.zeros(W0.shape[0])
        if b_arr is not None:
            b0 = np.broadcast_to(b_arr.astype(np.float64).reshape(-1), (W0.shape[0],)).copy()
            if op == "Gemm":
                if b_arr.ndim == 2 and b_arr.shape[0] != 1:
                    continue
                b0 = b0 * beta
        Xa = np.concatenate([X, np.ones((len(X), 1))], 1)
        A = Xa.T @ Xa
        lam = ridge * float(np.mean(np.diag(A)[:-1])) if A.shape[0] > 1 else ridge
        reg = np.full(A.shape[0], lam)
        reg[-1] = lam * 1e-3
        prior = np.concatenate([W0, b0[:, None]], 1).T  # (K+1) x C_out
        rhs = Xa.T @ Y + reg[:, None] * prior
        sol = np.linalg.solve(A + np.diag(reg), rhs)  # (K+1) x C_out
        W1, b1 = sol[:-1].T, sol[-1]
        dt = w.dtype
        if op == "Conv":
            new_w = W1.reshape(w.shape)
        elif op == "Gemm":
            new_w = (W1 if tb else W1.T) / alpha
        else:
            new_w = W1.T
        orphans: List[Value] = []
        _set_const(node, 1, new_w.astype(dt), orphans)
        if op == "MatMul" and node.domain == "edgec":
            # FusedMatMul: the bias is input 2, inside the activation
            while len(node.inputs) < 3:
                node.append_input(None)
            if node.input(2) is None:
                node.set_input(2, g_const(node, b1.astype(dt)))
            else:
                _set_const(node, 2, b1.astype(dt), orphans)
        elif op == "MatMul":
            # the bias goes into an Add after the MatMul
            out = node.output(0)
            g = node.graph
            bias = g.add_constant(b1.astype(dt), node.name + "_refit_bias")
            from ..ir.core import Node as _Node
            add = _Node("Add", [None, bias], 1, name=g.new_name(node.name + "_refit_add", node_name=True))
            g.insert_after(node, add)
            out.replace_all_uses_with(add.output(0))
            add.set_input(0, out)
            add.output(0).type = out.type
        elif op == "Gemm":
            bb = (b1 / beta if beta != 0 else b1).astype(dt)
            if node.input(2) is None:
                node.set_attr("beta", 1.0)
                bb = b1.astype(dt)
                while len(node.inputs) < 3:
                    node.append_input(None)
                node.set_input(2, g_const(node, bb))
            else:
                _set_const(node, 2, bb.reshape(-1) if b_arr.ndim <= 1 else bb.reshape(1, -1), orphans)
        else:
            if node.input(2) is None:
                while len(node.inputs) < 3:
                    node.append_input(None)
                node.set_input(2, g_const(node, b1.astype(dt)))
            else:
                _set_const(node, 2, b1.astype(dt), orphans)
        _sweep(orphans)
        done.append(node.name)
    return done


def _linear(node: Node, op: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(W [C_out, K], b [C_out])`` of a dense layer such that its output before any fused
    activation is ``rows(X) @ W.T + b`` (Conv: im2col rows; Gemm: alpha and beta folded in)."""
    w = constant_value(node.input(1))
    if w is None:
        return None
    c = constant_value(node.input(2)) if len(node.inputs) > 2 and node.input(2) is not None else None
    if op == "Conv":
        W = w.reshape(w.shape[0], -1).astype(np.float64)
    elif op == "Gemm":
        W = (w if int(node.attr("transB", 0)) else w.T).astype(np.float64) * float(node.attr("alpha", 1.0))
    else:
        W = w.T.astype(np.float64)
    b = np.zeros(W.shape[0])
    if c is not None:
        if c.size not in (1, W.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
            return None
        b = np.broadcast_to(c.astype(np.float64).reshape(-1), (W.shape[0],)).copy()
        if op == "Gemm":
            b = b * float(node.attr("beta", 1.0))
    return W, b


def g_const(node: Node, arr: np.ndarray) -> Value:
    """A new initializer named after ``node`` in its graph."""
    return node.graph.add_constant(arr, node.name + "_bias")  # type: ignore[union-attr]
