"""Structured channel pruning on the IR: score the channels of each group, choose which to keep,
slice every member consistently, fix Split/Slice operands, and optionally refit the next layers.

    dg = analyze(model)
    keep = plan(model, dg, sparsity=0.3, target="channels")     # group id -> kept channel indices
    apply_pruning(model, dg, keep)                              # slices constants, re-infers types
    refit_consumers(dense, model, dg, keep, calibration)         # least squares on calibration data
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from ..inspect import model_stats
from ..ir.core import Model, Node, Value
from ..ir.shapes import infer_shapes
from ..ir.tensor import ArrayTensor
from ..ir.types import Shape, TensorType
from ..rewrite import constant_value
from .dependency import ChannelGroup, DependencyGraph, Layout, analyze, layout_indices

__all__ = ["symbol_bindings", "total_macs", "group_scores", "plan", "apply_pruning", "refit_consumers", "estimate_macs"]


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


def total_macs(model: Model) -> int:
    """MACs of the main graph per sample (symbolic input dims bound to 1), from ``edgec.inspect``."""
    return int(model_stats(model, dims=symbol_bindings(model))["macs"]["total"])


def _node_macs_map(model: Model) -> Dict[str, int]:
    recs = model_stats(model, dims=symbol_bindings(model))["macs"]["per_node"]
    return {r["node"]: int(r["macs"] or 0) for r in recs}


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
         score: str = "l1", min_channels: int = 1, skip: Sequence[str] = ()) -> Dict[int, np.ndarray]:
    """Group id -> sorted kept channel indices. ``target='channels'``: remove ``sparsity`` of every
    prunable group; ``'macs'``: one ratio for all groups, chosen (bisection on the MAC estimate) so
    that at least ``sparsity`` of the MACs go."""
    groups = prunable_groups(dg, skip)
    scores = {g.id: group_scores(g, dg, score) for g in groups}

    def choose(ratio: float) -> Dict[int, np.ndarray]:
        keep = {}
        for g in groups:
            k = _n_keep(g.size, ratio, round_to, min_channels)
            if k < g.size:
                order = np.argsort(-scores[g.id], kind="stable")[:k]
                keep[g.id] = np.sort(order).astype(np.int64)
        return keep

    if target == "channels":
        return choose(sparsity)
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
        new_ranges = [(int((idx < lo).sum()), int((idx < hi).sum())) for lo, hi in fx.ranges]
        node = fx.node
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


def _rows(y: np.ndarray, op: str) -> np.ndarray:
    if op == "Conv":
        return y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
    return y.reshape(-1, y.shape[-1])


def refit_consumers(dense: Model, model: Model, dg: DependencyGraph, keep: Mapping[int, np.ndarray],
                    calibration: Any, *, ridge: float = 1e-3, max_rows: int = 50000) -> List[str]:
    """Refit each layer whose input channels were pruned to the dense model's outputs.

    In graph order, for consumer ``L`` (Conv group 1 2-D, Gemm, MatMul 2-D weight) with pruned input
    ``X`` (from the current pruned model) and dense output ``Y`` (from ``dense``), solve
    ``min ‖[X 1] [W' b']ᵀ − Y‖² + λ‖W' − W‖²`` (λ = ``ridge`` · mean diag of XᵀX) and install W' and
    a bias. Returns the names of the refitted nodes.
    """
    from ..quant.collect import run_model

    find = dg.find
    keep = {find(k): v for k, v in keep.items()}
    consumers = []
    for mn in dg.mac_nodes:
        if mn.in_layout is None or not any(find(s.group) in keep for s in mn.in_layout.segments):
            continue
        n = mn.node
        if n.graph is not model.graph:
            continue
        cols = layout_indices(mn.out_layout.with_axis(0), keep, find) if mn.out_layout is not None else None
        if n.op_type == "Conv" and int(n.attr("group", 1)) == 1:
            consumers.append((n, cols))
        elif n.op_type == "Gemm" and not int(n.attr("transA", 0)):
            consumers.append((n, cols))
        elif n.op_type == "MatMul":
            consumers.append((n, cols))
    done = []
    for node, cols in consumers:
        xname, yname = node.input(0).name, node.output(0).name
        xs, ys = [], []
        rows = 0
        for batch in calibration.batches(64):
            x = run_model(model, batch, outputs=[xname])[xname]
            y = run_model(dense, batch, outputs=[yname])[yname]
            w = constant_value(node.input(1))
            if node.op_type == "Conv":
                xr = _im2col(x.astype(np.float64), node, tuple(w.shape[2:]))
                if xr is None:
                    break
            else:
                xr = x.reshape(-1, x.shape[-1]).astype(np.float64)
            xs.append(xr)
            yr = _rows(y, node.op_type).astype(np.float64)
            ys.append(yr[:, cols] if cols is not None else yr)
            rows += len(xr)
            if rows >= max_rows:
                break
        if not xs:
            continue
        X, Y = np.concatenate(xs), np.concatenate(ys)
        w = constant_value(node.input(1))
        b_arr = constant_value(node.input(2)) if node.input(2) is not None else None
        tb = node.op_type == "Gemm" and int(node.attr("transB", 0))
        if node.op_type == "Conv":
            W0 = w.reshape(w.shape[0], -1).astype(np.float64)  # C_out x K
        elif node.op_type == "Gemm":
            W0 = (w if tb else w.T).astype(np.float64)
        else:
            W0 = w.T.astype(np.float64)
        if node.op_type == "Gemm":
            alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
            W0 = W0 * alpha
        b0 = np.zeros(W0.shape[0])
        if b_arr is not None:
            b0 = np.broadcast_to(b_arr.astype(np.float64).reshape(-1), (W0.shape[0],)).copy()
            if node.op_type == "Gemm":
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
        if node.op_type == "Conv":
            new_w = W1.reshape(w.shape)
        elif node.op_type == "Gemm":
            new_w = (W1 if tb else W1.T) / alpha
        else:
            new_w = W1.T
        orphans: List[Value] = []
        _set_const(node, 1, new_w.astype(dt), orphans)
        if node.op_type == "MatMul":
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
        elif node.op_type == "Gemm":
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


def g_const(node: Node, arr: np.ndarray) -> Value:
    """A new initializer named after ``node`` in its graph."""
    return node.graph.add_constant(arr, node.name + "_bias")  # type: ignore[union-attr]
