"""Channel dependency analysis (DepGraph-style) for structured pruning.

A *channel group* is a set of channels that must be removed together: channel ``c`` of a group
appears at one index of every member ``(constant tensor, axis)``; removing it means slicing it out of
all of them. Groups start at producers (the output channels of Conv / ConvTranspose / Gemm /
MatMul with constant weights) and follow each activation's channel axis through the graph:

- channel-wise ops pass the layout through (Relu, Clip, Sigmoid, pools, BatchNormalization /
  InstanceNormalization whose parameters become members, Add/Mul/... with per-channel constants);
- depthwise convs (``group == C_in == C_out``) couple input channel ``c`` with output channel ``c``;
- elementwise ops on two activations (residual Add) merge the groups of both branches;
- Concat on the channel axis concatenates layouts (channel ``c`` of input ``k`` sits at
  ``off_k + c``); Split / Slice on the channel axis cut them (their sizes are fixed up on pruning);
- Flatten whose first flattened axis is the channel axis maps channel ``c`` to a block of
  ``prod(trailing dims)`` positions; Transpose moves the channel axis;
- consumers (Conv / ConvTranspose / Gemm / MatMul) make their weight's input axis a member;
  ``edgec.Fused*`` ops (what -O2 leaves) are analysed as their base op (the activation is elementwise);
- attention heads: a Reshape with a constant target that splits the channel axis into
  ``(heads, head_dim)`` turns the channel group into a group of heads (each a block of ``head_dim``
  positions in every member); Softmax over another axis passes the heads through; a MatMul of two
  activations (Q·Kᵀ, P·V) couples the heads of both operands (a broadcast batch axis); the Reshape
  merging ``(heads, head_dim)`` back makes them blocks of the out-projection's input rows. So the
  Q/K/V columns and biases of a head and its out-projection rows form one group, and the Reshape
  targets' head-count entries are fix-ups (rewritten on pruning).
- fused in-projections (``nn.MultiheadAttention``): a Reshape of a projection's ``P·C`` output
  channels to ``(.., P, C)`` or ``(.., P, heads, head_dim)`` whose parts are then taken apart
  (Unsqueeze / Transpose / Squeeze, then Gather with a constant index or Split) cuts the group into
  ``P`` sibling groups (q, k, v: column blocks at offsets ``0, C, 2C``), tracked as a ``stacked``
  :class:`Special` until taken apart. Siblings are coarsened into heads together and must end up
  tied (by Q·Kᵀ and P·V), or they are frozen. Heads merged with the batch axis
  (``[S, B, E] -> [S, B·heads, head_dim]``, target ``[.., -1, head_dim]``) are a ``merged``
  special until a Reshape splits ``(B, heads)`` again (its target may be a Concat of Shape pieces
  whose constant head-count piece is the fix-up); a Reshape folding the channel axis and all
  after it into the last axis (``[S, B, heads, head_dim] -> [S·B, E]``) maps heads to blocks of
  the out-projection's input rows.

Anything not understood (unknown ops, other Reshapes, Shape, grouped convs, graph outputs, values
used in subgraphs, partial overlaps) freezes every group it touches: such a group is reported with
``prunable=False`` and its reasons. Nothing is guessed. (A torch export whose Reshape targets are
computed from ``Shape`` freezes its heads until -O1/-O2 has folded them into constants, as
``edgec compile`` does before pruning.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..ir.core import Model, Node, Value
from ..ir.shapes import infer_shapes
from ..rewrite import constant_value

__all__ = ["Segment", "Layout", "Member", "ChannelGroup", "Special", "DependencyGraph", "channel_groups", "analyze"]

#: ops that act on each channel independently and keep its position (input 0 -> output 0).
CHANNELWISE_UNARY = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Identity", "Neg", "Abs", "Exp", "Log", "Sqrt", "Erf", "Gelu", "Mish", "Floor", "Ceil",
    "Round", "Reciprocal", "Sign", "ThresholdedRelu", "Cast", "Dropout", "Clip",
})
#: pooling-like ops: per channel, spatial axes only (channel axis must be 1).
SPATIAL = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"})
#: elementwise binary ops (numpy broadcasting).
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu", "Pow"})
#: ``edgec`` fused ops (``act(Op(...))``, the activation elementwise) and the op they are analysed as.
FUSED = {"FusedConv": "Conv", "FusedConvTranspose": "ConvTranspose", "FusedGemm": "Gemm", "FusedMatMul": "MatMul"}


@dataclass(frozen=True)
class Segment:
    """Channels ``[start, stop)`` of group ``group``, placed consecutively along a tensor axis."""

    group: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Layout:
    """What sits along a tensor's channel ``axis``: segments in order, each channel repeated as a
    contiguous block of ``block`` positions (``block > 1`` after Flatten)."""

    axis: int
    segments: Tuple[Segment, ...]
    block: int = 1

    @property
    def channels(self) -> int:
        return sum(s.size for s in self.segments)

    def with_axis(self, axis: int) -> "Layout":
        return Layout(axis, self.segments, self.block)

    def slice(self, start: int, stop: int) -> Tuple[Segment, ...]:
        """The segments covering channel positions ``[start, stop)`` (block must be 1)."""
        out, pos = [], 0
        for s in self.segments:
            lo, hi = max(start, pos), min(stop, pos + s.size)
            if lo < hi:
                out.append(Segment(s.group, s.start + lo - pos, s.start + hi - pos))
            pos += s.size
        return tuple(out)


@dataclass
class Member:
    """One constant operand coupled to channels: input ``index`` of ``node``, along ``axis``,
    laid out as ``layout`` (its segments may span several groups). ``role``: ``out`` (a producer's
    output channels), ``in`` (a consumer's input channels) or ``param`` (per-channel parameters)."""

    node: Node
    index: int
    axis: int
    layout: Layout
    role: str

    @property
    def value(self) -> Value:
        return self.node.inputs[self.index]  # type: ignore[return-value]

    def describe(self) -> str:
        v = self.value
        return f"{v.name if v is not None else '?'}[axis {self.axis}] ({self.node.op_type} {self.node.name}, {self.role})"


@dataclass
class ChannelGroup:
    """A set of coupled channels: ``size`` channels, the members holding them, and whether it may be pruned."""

    id: int
    size: int
    members: List[Member] = field(default_factory=list)
    prunable: bool = True
    reasons: List[str] = field(default_factory=list)
    #: the nodes producing these channels (Conv/Gemm/MatMul outputs merged into the group).
    producers: List[Node] = field(default_factory=list)

    @property
    def tensors(self) -> List[Tuple[str, int]]:
        """``(tensor name, axis)`` of every member."""
        return [(m.value.name, m.axis) for m in self.members]

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else "frozen: " + "; ".join(self.reasons[:2])
        return f"ChannelGroup(#{self.id}, {self.size} channels, {len(self.members)} members, {state})"


@dataclass
class Fixup:
    """An operand or attribute to rewrite after pruning: Split sizes, Slice bounds, depthwise ``group``."""

    node: Node
    kind: str  # "split" | "slice" | "group" (depthwise conv: group = channels) | "reshape" (target entries)
    # | "concat_entry" (a one-element constant input of the Concat computing a Reshape target)
    layout: Layout  # of the node's input
    ranges: List[Tuple[int, int]]  # output k covers channel positions ranges[k] of the input (reshape: [(entry, 0)])


@dataclass(frozen=True)
class Special:
    """Channels of a value that are not one layout on one axis.

    ``stacked``: the output of a fused projection reshaped to ``(.., P, C/P, ..)``: index ``p`` of
    axis ``sel`` holds ``parts[p]`` (q, k, v), each a layout on its own axis. ``merged``: heads
    merged with an outer (batch) axis, ``parts[0].axis`` holds ``outer * heads`` positions with the
    heads innermost (``(B*heads, S, head_dim)`` of ``nn.MultiheadAttention``)."""

    kind: str  # "stacked" | "merged"
    sel: int
    parts: Tuple[Layout, ...]


@dataclass
class MacNode:
    """A MAC op and the layouts its cost scales with (output channels, input channels)."""

    node: Node
    out_layout: Optional[Layout]
    in_layout: Optional[Layout]


class DependencyGraph:
    """The result of :func:`analyze`: groups (after merging), members, fix-ups and MAC nodes."""

    def __init__(self) -> None:
        self._parent: List[int] = []
        self._size: List[int] = []
        self._frozen: Dict[int, List[str]] = {}
        self._producers: Dict[int, List[Node]] = {}
        self.members: List[Member] = []
        self.fixups: List[Fixup] = []
        self.mac_nodes: List[MacNode] = []
        self.layouts: Dict[Value, Layout] = {}
        #: values whose channels are not on one axis (fused q/k/v stacks, heads merged with batch)
        self.specials: Dict[Value, "Special"] = {}
        #: groups cut from one fused projection (q, k, v parts): coarsened together, must end up tied
        self.siblings: List[Tuple[int, ...]] = []

    # --- union-find ------------------------------------------------------------------------------
    def new_group(self, size: int, producer: Optional[Node] = None) -> int:
        gid = len(self._parent)
        self._parent.append(gid)
        self._size.append(size)
        self._producers[gid] = [producer] if producer is not None else []
        return gid

    def find(self, g: int) -> int:
        while self._parent[g] != g:
            self._parent[g] = self._parent[self._parent[g]]
            g = self._parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self._parent[rb] = ra
        self._frozen.setdefault(ra, []).extend(self._frozen.pop(rb, []))
        self._producers[ra].extend(self._producers.pop(rb, []))
        if not self._frozen.get(ra):
            self._frozen.pop(ra, None)

    def freeze(self, layout: Optional[Layout], reason: str) -> None:
        if layout is None:
            return
        for s in layout.segments:
            self._frozen.setdefault(self.find(s.group), []).append(reason)

    def coarsen(self, gid: int, unit: int) -> bool:
        """Make group ``gid`` (size ``C``) a group of ``C / unit`` channels, each a contiguous block of
        ``unit`` of the old ones (attention heads of ``head_dim`` features). Every layout holding the
        group is rewritten; False (nothing changed) when one mixes it with other groups or does not
        align with ``unit``."""
        root = self.find(gid)
        if unit <= 1:
            return unit == 1
        # the parts of a fused projection are coarsened together (their layouts hold all of them)
        roots = {root}
        grown = True
        while grown:
            grown = False
            for sib in self.siblings:
                rs = {self.find(s) for s in sib}
                if rs & roots and not rs <= roots:
                    roots |= rs
                    grown = True
        if any(self._size[r] % unit for r in roots):
            return False

        def fix(layout: Optional[Layout]) -> Optional[Layout]:
            if layout is None or not any(self.find(s.group) in roots for s in layout.segments):
                return layout
            if any(self.find(s.group) not in roots or s.start % unit or s.stop % unit for s in layout.segments):
                raise ValueError
            return Layout(layout.axis, tuple(Segment(self.find(s.group), s.start // unit, s.stop // unit)
                                             for s in layout.segments), layout.block * unit)

        if not self._rewrite(fix, ("reshape", "concat_entry")):
            return False
        for r in roots:
            self._size[r] //= unit
        return True

    def _rewrite(self, fix, fixup_kinds: Tuple[str, ...]) -> bool:
        """Apply ``fix`` to every layout (members, values, specials, MAC nodes, fix-ups); False and
        nothing changed when it raises ValueError or changes a fix-up not of ``fixup_kinds``."""
        try:
            members = [fix(m.layout) for m in self.members]
            layouts = {v: fix(l) for v, l in self.layouts.items()}
            specials = {v: Special(sp.kind, sp.sel, tuple(fix(l) for l in sp.parts)) for v, sp in self.specials.items()}
            macs = [(fix(mn.out_layout), fix(mn.in_layout)) for mn in self.mac_nodes]
            fixups = [fix(fx.layout) for fx in self.fixups]
        except ValueError:
            return False
        if any(fx.kind not in fixup_kinds and new is not fx.layout for fx, new in zip(self.fixups, fixups)):
            return False  # split / slice ranges are in channels of the old size
        for m, l in zip(self.members, members):
            m.layout = l  # type: ignore[assignment]
        self.layouts.update(layouts)  # type: ignore[arg-type]
        self.specials.update(specials)
        for mn, (o, i) in zip(self.mac_nodes, macs):
            mn.out_layout, mn.in_layout = o, i
        for fx, l in zip(self.fixups, fixups):
            fx.layout = l  # type: ignore[assignment]
        return True

    def refine(self, gid: int, parts: int) -> Optional[List[int]]:
        """Cut group ``gid`` (size ``C``, the output of one fused projection) into ``parts`` groups of
        ``C / parts`` consecutive channels (q, k, v of an in-projection). Only when every layout
        holds the whole group alone with block 1 and no fix-up refers to it; None otherwise. The
        parts are recorded as siblings (coarsened together; frozen unless later tied)."""
        root = self.find(gid)
        size = self._size[root]
        if parts < 2 or size % parts:
            return None
        n = size // parts
        if any(self.find(s.group) == root for fx in self.fixups for s in fx.layout.segments):
            return None
        ids = [root] + [len(self._parent) + i for i in range(parts - 1)]

        def fix(layout: Optional[Layout]) -> Optional[Layout]:
            if layout is None or not any(self.find(s.group) == root for s in layout.segments):
                return layout
            s = layout.segments
            if len(s) != 1 or layout.block != 1 or s[0].start != 0 or s[0].stop != size:
                raise ValueError
            return Layout(layout.axis, tuple(Segment(g, 0, n) for g in ids), 1)

        # check first (no group is created when the cut is refused)
        try:
            for l in [m.layout for m in self.members] + list(self.layouts.values()) + \
                    [l for sp in self.specials.values() for l in sp.parts] + \
                    [l for mn in self.mac_nodes for l in (mn.out_layout, mn.in_layout)]:
                fix(l)
        except ValueError:
            return None
        for _ in range(parts - 1):
            g = self.new_group(n)
            if self._frozen.get(root):
                self._frozen[g] = list(self._frozen[root])
        self._rewrite(fix, ())
        self._size[root] = n
        self.siblings.append(tuple(ids))
        return ids

    def canonical(self, layout: Layout) -> Layout:
        """The layout with group ids replaced by their union-find roots."""
        return Layout(layout.axis, tuple(Segment(self.find(s.group), s.start, s.stop) for s in layout.segments), layout.block)

    # --- results ---------------------------------------------------------------------------------
    def groups(self) -> List[ChannelGroup]:
        roots: Dict[int, ChannelGroup] = {}
        for g in range(len(self._parent)):
            r = self.find(g)
            if r not in roots:
                reasons = list(dict.fromkeys(self._frozen.get(r, [])))
                roots[r] = ChannelGroup(r, self._size[r], [], not reasons, reasons, list(self._producers.get(r, [])))
        for m in self.members:
            for gid in dict.fromkeys(self.find(s.group) for s in m.layout.segments):
                roots[gid].members.append(m)
        return list(roots.values())


def _rank(v: Optional[Value]) -> Optional[int]:
    if v is None or v.shape is None or v.shape.dims is None:
        return None
    return len(v.shape.dims)


def _dims(v: Optional[Value]) -> Optional[Tuple]:
    if v is None or v.shape is None or v.shape.dims is None:
        return None
    return tuple(v.shape.dims)


def _is_const(v: Optional[Value]) -> bool:
    return constant_value(v) is not None


def analyze(model: Model) -> DependencyGraph:
    """Build the dependency graph of the main graph of ``model`` (types are inferred first)."""
    try:
        infer_shapes(model)
    except Exception:  # noqa: BLE001 - missing types only freeze more groups
        pass
    dg = DependencyGraph()
    g = model.graph
    opset = model.opset() or 21
    L = dg.layouts

    def lay(v: Optional[Value]) -> Optional[Layout]:
        return L.get(v) if v is not None else None

    def freeze_inputs(node: Node, reason: str) -> None:
        for v in node.inputs:
            dg.freeze(lay(v), f"{reason} ({node.op_type} {node.name})")

    def freeze_specials(node: Node, reason: str) -> None:
        for v in node.inputs:
            if v is not None and v in dg.specials:
                for l in dg.specials[v].parts:
                    dg.freeze(l, f"{reason} ({node.op_type} {node.name})")

    def member(node: Node, index: int, axis: int, layout: Layout, role: str) -> None:
        dg.members.append(Member(node, index, axis, layout, role))

    def merge(a: Layout, b: Layout, node: Node) -> bool:
        """Couple two layouts position by position; False (and both frozen) when they do not align."""
        a, b = dg.canonical(a), dg.canonical(b)
        if a.block != b.block or len(a.segments) != len(b.segments) or a.channels != b.channels:
            dg.freeze(a, f"misaligned channels at {node.op_type} {node.name}")
            dg.freeze(b, f"misaligned channels at {node.op_type} {node.name}")
            return False
        ok = True
        for sa, sb in zip(a.segments, b.segments):
            if sa == sb:
                continue
            full_a = sa.start == 0 and sa.stop == dg._size[sa.group]
            full_b = sb.start == 0 and sb.stop == dg._size[sb.group]
            if full_a and full_b and sa.size == sb.size:
                dg.union(sa.group, sb.group)
            else:
                ok = False
        if not ok:
            dg.freeze(a, f"partial channel overlap at {node.op_type} {node.name}")
            dg.freeze(b, f"partial channel overlap at {node.op_type} {node.name}")
        return ok

    def new_out(node: Node, size: int, axis: int, frozen: Optional[str] = None) -> Layout:
        gid = dg.new_group(size, node)
        layout = Layout(axis, (Segment(gid, 0, size),))
        if frozen:
            dg.freeze(layout, frozen)
        return layout

    for node in g:
        ins = [lay(v) for v in node.inputs]
        op = node.op_type
        out0 = node.output(0)
        if node.domain != "":
            if node.domain == "edgec" and op in FUSED:
                op = FUSED[op]
            else:
                if any(ins):
                    freeze_inputs(node, "unknown op")
                continue
        if node.subgraphs():
            freeze_inputs(node, "op with subgraphs")
            freeze_specials(node, "op with subgraphs")
            continue
        if any(v is not None and v in dg.specials for v in node.inputs):
            try:
                _visit_special(node, op, ins, out0, dg)
            except _Unknown as e:
                freeze_inputs(node, str(e) or "unsupported use")
                freeze_specials(node, str(e) or "unsupported use")
                for o in node.outputs:
                    if o is not None:
                        L.pop(o, None)
                        dg.specials.pop(o, None)
            continue
        try:
            _visit(node, op, ins, out0, dg, lay, member, merge, new_out, freeze_inputs, opset)
        except _Unknown as e:
            freeze_inputs(node, str(e) or "unsupported use")
            for o in node.outputs:
                if o is not None:
                    L.pop(o, None)
        # extra outputs (BN stats, MaxPool indices, Dropout mask) must be unused
        if any(o is not None and o.has_uses() for o in node.outputs[1:]) and op not in ("Split",):
            freeze_inputs(node, "extra outputs in use")
            for o in node.outputs:
                dg.freeze(lay(o), f"extra outputs in use ({op} {node.name})")

    # interface and subgraph uses
    for v in g.outputs:
        dg.freeze(lay(v), f"graph output {v.name}")
        for l in dg.specials[v].parts if v in dg.specials else ():
            dg.freeze(l, f"graph output {v.name}")
    for v, layout in list(L.items()):
        for user, _ in v.uses():
            if user.graph is not g:
                dg.freeze(layout, f"used in a subgraph ({user.op_type} {user.name})")
    for v, sp in list(dg.specials.items()):
        for user, _ in v.uses():
            if user.graph is not g:
                for l in sp.parts:
                    dg.freeze(l, f"used in a subgraph ({user.op_type} {user.name})")
    # the q, k, v parts of a fused projection share one Reshape target entry: they must be one group
    for sib in dg.siblings:
        if len({dg.find(s) for s in sib}) > 1:
            for s in sib:
                dg._frozen.setdefault(dg.find(s), []).append("parts of a fused projection not tied to each other")
    return dg


class _Unknown(Exception):
    """The op's use of a channel axis is not understood."""


def _visit(node, op, ins, out0, dg, lay, member, merge, new_out, freeze_inputs, opset) -> None:  # noqa: C901
    L = dg.layouts
    x = ins[0] if ins else None

    if op in ("Conv", "ConvTranspose"):
        w = constant_value(node.input(1))
        if w is None or w.ndim < 3:
            raise _Unknown("non-constant weight")
        if node.input(2) is not None and not _is_const(node.input(2)):
            raise _Unknown("non-constant bias")
        if x is not None and x.axis != 1:
            raise _Unknown("channel axis is not 1")
        if any(i is not None for i in ins[1:]):
            raise _Unknown("weights depend on activations")
        group = int(node.attr("group", 1))
        c_in = w.shape[0] if op == "ConvTranspose" else w.shape[1] * group
        c_out = w.shape[1] * group if op == "ConvTranspose" else w.shape[0]
        in_ax, out_ax = (0, 1) if op == "ConvTranspose" else (1, 0)
        if group == 1:
            if x is not None:
                member(node, 1, in_ax, x.with_axis(in_ax), "in")
            out = new_out(node, c_out, 1)
            member(node, 1, out_ax, out.with_axis(out_ax), "out")
            if node.input(2) is not None:
                member(node, 2, 0, out.with_axis(0), "out")
            dg.mac_nodes.append(MacNode(node, out, x))
            L[out0] = out
        elif op == "Conv" and group == c_in == c_out:
            # depthwise: channel c in -> channel c out
            if x is None:
                out = new_out(node, c_out, 1, f"depthwise conv on an untracked input ({node.name})")
            else:
                out = x
            member(node, 1, 0, out.with_axis(0), "param")
            if node.input(2) is not None:
                member(node, 2, 0, out.with_axis(0), "param")
            dg.fixups.append(Fixup(node, "group", out, [(0, c_out)]))
            dg.mac_nodes.append(MacNode(node, out, None))
            L[out0] = out
        else:
            dg.freeze(x, f"grouped conv {node.name} (group={group})")
            L[out0] = new_out(node, c_out, 1, f"grouped conv {node.name} (group={group})")
        return

    if op == "Gemm":
        b = constant_value(node.input(1))
        if b is None or b.ndim != 2 or int(node.attr("transA", 0)) or any(i is not None for i in ins[1:]):
            raise _Unknown("Gemm form")
        tb = int(node.attr("transB", 0))
        k_ax, n_ax = (1, 0) if tb else (0, 1)
        if x is not None:
            if x.axis != 1:
                raise _Unknown("channel axis is not K")
            member(node, 1, k_ax, x.with_axis(k_ax), "in")
        out = new_out(node, b.shape[n_ax], 1)
        member(node, 1, n_ax, out.with_axis(n_ax), "out")
        c = constant_value(node.input(2)) if node.input(2) is not None else None
        if node.input(2) is not None:
            if c is None:
                raise _Unknown("non-constant Gemm bias")
            if c.ndim >= 1 and c.shape[-1] == b.shape[n_ax] and b.shape[n_ax] != 1:
                member(node, 2, c.ndim - 1, out.with_axis(c.ndim - 1), "out")
            elif c.ndim >= 1 and c.shape[-1] != 1:
                raise _Unknown("Gemm bias shape")
        dg.mac_nodes.append(MacNode(node, out, x))
        L[out0] = out
        return

    if op == "MatMul" and node.domain == "" and constant_value(node.input(1)) is None \
            and constant_value(node.input(0)) is None:
        _visit_batched_matmul(node, ins, out0, dg, merge)
        return

    if op == "MatMul":
        b = constant_value(node.input(1))
        r = _rank(node.input(0))
        if b is None or b.ndim != 2 or r is None or ins[1] is not None:
            raise _Unknown("MatMul without a constant 2-D weight")
        if x is not None:
            if x.axis != r - 1:
                raise _Unknown("channel axis is not K")
            member(node, 1, 0, x.with_axis(0), "in")
        out = new_out(node, b.shape[1], r - 1)
        member(node, 1, 1, out.with_axis(1), "out")
        if len(node.inputs) > 2 and node.input(2) is not None:  # FusedMatMul bias [N]
            c = constant_value(node.input(2))
            if c is None or c.ndim != 1 or c.shape[0] != b.shape[1] or ins[2] is not None:
                raise _Unknown("FusedMatMul bias")
            member(node, 2, 0, out.with_axis(0), "out")
        dg.mac_nodes.append(MacNode(node, out, x))
        L[out0] = out
        return

    # from here on, only ops that see a tracked layout matter
    if not any(i is not None for i in ins):
        return

    if op in CHANNELWISE_UNARY:
        if any(i is not None for i in ins[1:]):
            raise _Unknown("layout in a secondary input")
        for v in node.inputs[1:]:
            if v is not None:
                a = constant_value(v)
                if a is None or a.size != 1:
                    raise _Unknown("non-scalar parameter")
        L[out0] = x
        return

    if op in SPATIAL:
        if x is None or x.axis != 1:
            raise _Unknown("channel axis is not 1")
        L[out0] = x
        return

    if op in ("BatchNormalization", "InstanceNormalization"):
        if x is None or x.axis != 1 or any(i is not None for i in ins[1:]):
            raise _Unknown("normalization form")
        if op == "BatchNormalization" and int(node.attr("training_mode", 0)):
            raise _Unknown("training-mode BatchNormalization")
        n_params = 4 if op == "BatchNormalization" else 2
        for i in range(1, 1 + n_params):
            a = constant_value(node.input(i))
            if a is None or a.ndim != 1 or a.shape[0] != x.channels:
                raise _Unknown("non-constant normalization parameters")
            member(node, i, 0, x.with_axis(0), "param")
        L[out0] = x
        return

    if op in BINARY:
        r_out = _rank(out0)
        if r_out is None:
            raise _Unknown("unknown rank")
        tracked = [(i, l) for i, l in enumerate(ins) if l is not None]
        rel = {tracked[0][1].axis - _rank(node.input(tracked[0][0]))}  # type: ignore[operator]
        for i, l in tracked:
            ri = _rank(node.input(i))
            if ri is None:
                raise _Unknown("unknown rank")
            rel.add(l.axis - ri)
        if len(rel) != 1:
            raise _Unknown("channel axes do not line up")
        neg = rel.pop()  # channel axis counted from the end
        base = tracked[0][1]
        for _, l in tracked[1:]:
            if not merge(base, l, node):
                raise _Unknown("branches do not align")
        for i, v in enumerate(node.inputs):
            if ins[i] is not None or v is None:
                continue
            a = constant_value(v)
            d = a.shape if a is not None else _dims(v)
            if d is None:
                raise _Unknown("untracked operand of unknown shape")
            if len(d) < -neg or d[len(d) + neg] == 1:
                continue  # broadcasts along the channel axis
            if a is None or d[len(d) + neg] != base.channels * base.block:
                raise _Unknown("untracked per-channel operand")
            member(node, i, len(d) + neg, base.with_axis(len(d) + neg), "param")
        L[out0] = dg.canonical(base).with_axis(r_out + neg)
        return

    if op == "Concat":
        r = _rank(out0)
        axis = int(node.attr("axis", 0))
        if r is None:
            raise _Unknown("unknown rank")
        axis %= r
        if any(i is None for i in ins):
            raise _Unknown("Concat of tracked and untracked channels")
        if ins[0].axis != axis:
            if all(l.axis == ins[0].axis for l in ins):
                for l in ins[1:]:
                    if not merge(ins[0], l, node):
                        raise _Unknown("concat along another axis")
                L[out0] = dg.canonical(ins[0])
                return
            raise _Unknown("concat axes differ")
        if any(l.axis != axis or l.block != 1 for l in ins):
            raise _Unknown("concat layouts")
        L[out0] = Layout(axis, tuple(s for l in ins for s in l.segments))
        return

    if op in ("Split", "Slice"):
        r = _rank(node.input(0))
        if x is None or r is None or any(i is not None for i in ins[1:]):
            raise _Unknown("split form")
        if op == "Split":
            axis = int(node.attr("axis", 0)) % r
            if axis != x.axis:
                for o in node.outputs:
                    if o is not None:
                        L[o] = x
                return
            if x.block != 1:
                raise _Unknown("split of flattened channels")
            sizes = node.attr("split")
            if node.input(1) is not None:
                a = constant_value(node.input(1))
                if a is None:
                    raise _Unknown("non-constant split sizes")
                sizes = [int(s) for s in a.reshape(-1)]
            n_out = len(node.outputs)
            if sizes is None:
                if node.attr("num_outputs") is not None or x.channels % n_out:
                    raise _Unknown("uneven split")
                sizes = [x.channels // n_out] * n_out
            ranges, pos = [], 0
            for s in sizes:
                ranges.append((pos, pos + int(s)))
                pos += int(s)
            for o, (lo, hi) in zip(node.outputs, ranges):
                if o is not None:
                    L[o] = Layout(x.axis, x.slice(lo, hi))
            dg.fixups.append(Fixup(node, "split", x, ranges))
            return
        starts, ends = constant_value(node.input(1)), constant_value(node.input(2))
        axes = constant_value(node.input(3)) if node.input(3) is not None else None
        steps = constant_value(node.input(4)) if node.input(4) is not None else None
        if starts is None or ends is None or (node.input(3) is not None and axes is None) or (node.input(4) is not None and steps is None):
            raise _Unknown("non-constant slice")
        axes_l = [int(a) % r for a in (axes if axes is not None else range(len(starts)))]
        if x.axis not in axes_l:
            L[out0] = x
            return
        k = axes_l.index(x.axis)
        if steps is not None and int(steps.reshape(-1)[k]) != 1:
            raise _Unknown("strided slice on channels")
        if x.block != 1:
            raise _Unknown("slice of flattened channels")
        c = x.channels
        lo, hi, _ = slice(int(starts.reshape(-1)[k]), int(ends.reshape(-1)[k])).indices(c)
        if hi <= lo:
            raise _Unknown("empty slice")
        L[out0] = Layout(x.axis, x.slice(lo, hi))
        dg.fixups.append(Fixup(node, "slice", x, [(lo, hi)]))
        return

    if op == "Flatten":
        d = _dims(node.input(0))
        if x is None or d is None:
            raise _Unknown("unknown rank")
        axis = int(node.attr("axis", 1)) % len(d) if d else 0
        if x.axis == axis:
            trailing = d[axis + 1:]
            if not all(isinstance(t, int) for t in trailing):
                raise _Unknown("symbolic spatial size")
            L[out0] = Layout(1, x.segments, x.block * int(np.prod(trailing, dtype=np.int64)))
            return
        if x.axis < axis and all(t == 1 for i, t in enumerate(d[:axis]) if i != x.axis):
            L[out0] = Layout(0, x.segments, x.block)
            return
        raise _Unknown("flatten mixes channels")

    if op in ("Softmax", "LogSoftmax"):
        r = _rank(node.input(0))
        axis = int(node.attr("axis", -1 if opset >= 13 else 1))
        if x is None or r is None:
            raise _Unknown("unknown rank")
        if opset < 13 and axis % r <= x.axis:
            raise _Unknown("softmax over flattened channels")
        if axis % r == x.axis:
            raise _Unknown("softmax over channels")
        L[out0] = x
        return

    if op == "Reshape":
        _visit_reshape(node, x, ins, out0, dg)
        return

    if op == "Transpose":
        perm = node.attr("perm")
        r = _rank(node.input(0))
        if x is None or r is None:
            raise _Unknown("unknown rank")
        perm = list(perm) if perm is not None else list(reversed(range(r)))
        L[out0] = x.with_axis(perm.index(x.axis))  # the axis moves whole (blocks included)
        return

    if op in ("Pad",):
        if x is None or any(i is not None for i in ins[1:]):
            raise _Unknown("pad form")
        pads = constant_value(node.input(1)) if node.input(1) is not None else node.attr("pads")
        r = _rank(node.input(0))
        if pads is None or r is None:
            raise _Unknown("non-constant pads")
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        axes = constant_value(node.input(3)) if node.input(3) is not None else None
        axes_l = [int(a) % r for a in axes] if axes is not None else list(range(r))
        if x.axis in axes_l:
            k = axes_l.index(x.axis)
            if pads[k] or pads[k + len(axes_l)]:
                raise _Unknown("pads on the channel axis")
        L[out0] = x
        return

    if op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceL1"):
        r = _rank(node.input(0))
        axes = node.attr("axes")
        if node.input(1) is not None:
            a = constant_value(node.input(1))
            if a is None:
                raise _Unknown("non-constant axes")
            axes = list(a.reshape(-1))
        if x is None or r is None or not axes or not int(node.attr("keepdims", 1)):
            raise _Unknown("reduction form")
        if x.axis in [int(a) % r for a in axes]:
            raise _Unknown("reduction over channels")
        L[out0] = x
        return

    raise _Unknown("unknown op")


def _same_dims(a: Sequence, b: Sequence) -> bool:
    return len(a) == len(b) and all(x is not None and x == y for x, y in zip(a, b))


def _visit_reshape(node: Node, x: Optional[Layout], ins, out0: Value, dg: DependencyGraph) -> None:
    """Reshape splitting the channel axis into (heads, head_dim), or merging (heads, head_dim) back.

    Split ``[.., C, ..] -> [.., H, D, ..]``: the channel group becomes a group of ``H`` heads of ``D``
    features (:meth:`DependencyGraph.coarsen`), tracked on the head axis. Merge ``[.., H, D, ..] ->
    [.., H*D, ..]``: the heads become blocks of ``D`` positions. The target must be a constant;
    its entry on the head (split) or merged (merge) axis is rewritten on pruning (``-1`` is left)."""
    if x is None or ins[1] is not None:
        raise _Unknown("reshape of a shape")
    target = constant_value(node.input(1))
    di, do = _dims(node.input(0)), _dims(out0)
    if target is None or di is None or do is None:
        raise _Unknown("reshape with a non-constant target or unknown shapes")
    t = [int(v) for v in target.reshape(-1)]
    a = x.axis
    if _visit_stack_split(node, x, t, di, do, out0, dg):
        return
    if len(do) == len(di) + 1 and a + 1 < len(do) and _same_dims(do[:a], di[:a]) \
            and _same_dims(do[a + 2:], di[a + 1:]) and isinstance(do[a], int) and isinstance(do[a + 1], int) \
            and do[a] * do[a + 1] == x.channels * x.block:
        heads, head_dim = do[a], do[a + 1]
        if x.block not in (1, head_dim) or len(x.segments) != 1 or t[a] == 0 or t[a + 1] == 0 \
                or (t[a] == -1 and t[a + 1] == -1):
            raise _Unknown("head split form")
        seg = x.segments[0]
        gid = dg.find(seg.group)
        # block == head_dim: already cut into heads (the k / v part of a fused projection whose
        # q part was split first)
        if seg.start != 0 or seg.stop != dg._size[gid] or (x.block == 1 and not dg.coarsen(gid, head_dim)):
            raise _Unknown("channels do not split into heads")
        out = Layout(a, (Segment(gid, 0, heads),))
        dg.layouts[out0] = out
        if t[a] != -1:
            dg.fixups.append(Fixup(node, "reshape", out, [(a, 0)]))
        return
    if len(do) == len(di) - 1 and a + 1 < len(di) and _same_dims(do[:a], di[:a]) \
            and _same_dims(do[a + 1:], di[a + 2:]) and isinstance(di[a + 1], int) \
            and do[a] == x.channels * x.block * di[a + 1]:
        if t[a] == 0:
            raise _Unknown("head merge form")
        out = Layout(a, x.segments, x.block * int(di[a + 1]))
        dg.layouts[out0] = out
        if t[a] != -1:
            dg.fixups.append(Fixup(node, "reshape", out, [(a, 0)]))
        return
    # the channel axis and everything after it become the last axis, whatever happens to the
    # leading (outer) axes: [S, B, heads, head_dim] -> [S*B, heads*head_dim], [S, B, C] -> [S*B, C]
    trailing = di[a + 1:]
    if all(isinstance(d, int) for d in trailing) and isinstance(do[-1], int) \
            and do[-1] == x.channels * x.block * int(np.prod(trailing, dtype=np.int64)) and t[-1] != 0:
        out = Layout(len(do) - 1, x.segments, x.block * int(np.prod(trailing, dtype=np.int64)))
        dg.layouts[out0] = out
        if t[-1] != -1:
            dg.fixups.append(Fixup(node, "reshape", out, [(len(t) - 1, 0)]))
        return
    # heads merged into the axis before: [.., B, heads*head_dim, ..] -> [.., B*heads, head_dim, ..]
    # (target [.., -1, head_dim, ..], or the head count when B is a static 1); the heads are
    # innermost on that axis (a "merged" special)
    if a >= 1 and len(do) == len(di) and isinstance(do[a], int) and do[a] > 0 and t[a] == do[a] \
            and (t[a - 1] == -1 or (di[a - 1] == 1 and t[a - 1] * do[a] == x.channels * x.block)) \
            and _same_dims(do[a + 1:], di[a + 1:]) and len(x.segments) == 1 \
            and (x.channels * x.block) % do[a] == 0 \
            and all(t[i] == 0 or _same_dims(do[i:i + 1], di[i:i + 1]) or (t[i] > 0 and do[i] == t[i])
                    for i in range(a - 1)):
        # a positive constant entry over a symbolic input dim is a size the exporter traced in
        # (nn.MultiheadAttention's k / v views): the graph is only valid when they agree.
        head_dim = int(do[a])
        heads = x.channels * x.block // head_dim
        seg = x.segments[0]
        gid = dg.find(seg.group)
        if seg.start != 0 or seg.stop != dg._size[gid] or x.block not in (1, head_dim) \
                or (x.block == 1 and not dg.coarsen(gid, head_dim)):
            raise _Unknown("channels do not split into heads")
        out = Layout(a - 1, (Segment(dg.find(gid), 0, heads),))
        dg.specials[out0] = Special("merged", -1, (out,))
        if t[a - 1] != -1:  # outer axis of size 1 (a static batch of one): the entry is the head count
            dg.fixups.append(Fixup(node, "reshape", out, [(a - 1, 0)]))
        return
    raise _Unknown("reshape moves channels")


_SELECT_PATH = frozenset({"Unsqueeze", "Squeeze", "Transpose"})


def _feeds_part_selection(v: Value) -> bool:
    """True when every use of ``v`` is a chain of Unsqueeze / Squeeze / Transpose ending in a
    Gather or Split (how the exporters take q, k and v out of a fused projection)."""
    uses = v.uses()
    if not uses:
        return False
    for user, idx in uses:
        if idx != 0 or user.domain != "":
            return False
        if user.op_type in ("Gather", "Split"):
            continue
        if user.op_type not in _SELECT_PATH or not _feeds_part_selection(user.output(0)):
            return False
    return True


def _visit_stack_split(node: Node, x: Layout, t: List[int], di: Tuple, do: Tuple, out0: Value,
                       dg: DependencyGraph) -> bool:
    """Reshape of a fused projection's output ``[.., P*C, ..]`` to ``[.., P, C, ..]`` or
    ``[.., P, heads, head_dim, ..]`` whose parts are then taken apart (Gather / Split): the
    projection's group is cut into ``P`` sibling groups (:meth:`DependencyGraph.refine`) and the
    output becomes a ``stacked`` special. The target's ``C`` (or ``heads``) entry is a fix-up."""
    a = x.axis
    k = len(do) - len(di)
    if k not in (1, 2) or len(x.segments) != 1 or x.block != 1 or not _same_dims(do[:a], di[:a]) \
            or not _same_dims(do[a + 1 + k:], di[a + 1:]) or not all(isinstance(d, int) for d in do[a:a + 1 + k]):
        return False
    parts = int(do[a])
    if parts < 2 or int(np.prod(do[a:a + 1 + k], dtype=np.int64)) != x.channels or t[a] != parts \
            or not _feeds_part_selection(out0):
        return False
    seg = x.segments[0]
    gid = dg.find(seg.group)
    if seg.start != 0 or seg.stop != dg._size[gid]:
        return False
    if k == 1 and t[a + 1] not in (do[a + 1], -1):
        return False
    if k == 2 and (t[a + 1] not in (do[a + 1], -1) or t[a + 2] not in (do[a + 2], -1) or t[a + 1] == t[a + 2] == -1):
        return False
    ids = dg.refine(gid, parts)
    if ids is None:
        return False
    if k == 2 and not dg.coarsen(ids[0], int(do[a + 2])):
        raise _Unknown("parts do not split into heads")
    lays = tuple(Layout(a + 1, (Segment(g, 0, dg._size[dg.find(g)]),)) for g in ids)
    dg.specials[out0] = Special("stacked", a, lays)
    if t[a + 1] != -1:
        dg.fixups.append(Fixup(node, "reshape", lays[0], [(a + 1, 0)]))
    return True


def _reshape_target(node: Node) -> Tuple[Optional[List[Optional[int]]], Optional[Node], List[int]]:
    """The entries of a Reshape's target: a constant, or a Concat of 1-D pieces (from Shape) used
    only here, its constant pieces known (None for the others). Also the Concat and, for each
    entry, the Concat input holding it (-1 when the target is a constant)."""
    c = constant_value(node.input(1))
    if c is not None:
        t = [int(v) for v in c.reshape(-1)]
        return t, None, [-1] * len(t)
    cat = node.input(1).producer
    if cat is None or cat.op_type != "Concat" or cat.domain != "" or int(cat.attr("axis", 0)) != 0 \
            or len(node.input(1).uses()) != 1 or node.input(1).is_graph_output():
        return None, None, []
    t: List[Optional[int]] = []
    src: List[int] = []
    for i, v in enumerate(cat.inputs):
        d = _dims(v)
        if d is None or len(d) != 1 or not isinstance(d[0], int):
            return None, None, []
        a = constant_value(v)
        t.extend([int(e) for e in a.reshape(-1)] if a is not None else [None] * d[0])
        src.extend([i] * d[0])
    return t, cat, src


def _visit_special(node: Node, op: str, ins, out0: Value, dg: DependencyGraph) -> None:
    """Ops reading a ``stacked`` or ``merged`` value (:class:`Special`): axis moves (Unsqueeze,
    Squeeze, Transpose), taking parts (Gather with a constant index, Split of ones on the
    part axis) and the Reshape splitting ``outer*heads`` back into ``(outer, heads)``."""
    sp = dg.specials.get(node.input(0)) if node.inputs else None
    if sp is None or any(v is not None and v in dg.specials for v in node.inputs[1:]) \
            or any(i is not None for i in ins):
        raise _Unknown("special value in an unsupported position")
    di, r = _dims(node.input(0)), _rank(node.input(0))
    if r is None or di is None:
        raise _Unknown("unknown rank")

    def moved(f) -> Special:
        return Special(sp.kind, f(sp.sel) if sp.kind == "stacked" else -1,
                       tuple(l.with_axis(f(l.axis)) for l in sp.parts))

    def axes_of(index: int, attr: str) -> Optional[List[int]]:
        if len(node.inputs) > index and node.input(index) is not None:
            a = constant_value(node.input(index))
            return None if a is None else [int(v) for v in a.reshape(-1)]
        v = node.attr(attr)
        return None if v is None else [int(e) for e in v]

    tracked = {l.axis for l in sp.parts} | ({sp.sel} if sp.kind == "stacked" else set())
    if op == "Transpose":
        perm = node.attr("perm")
        perm = list(perm) if perm is not None else list(reversed(range(r)))
        dg.specials[out0] = moved(perm.index)
        return
    if op == "Unsqueeze":
        r_out = _rank(out0)
        axes = axes_of(1, "axes")
        if axes is None or r_out is None:
            raise _Unknown("unsqueeze axes")
        keep = [p for p in range(r_out) if p not in {a % r_out for a in axes}]
        dg.specials[out0] = moved(lambda i: keep[i])
        return
    if op == "Squeeze":
        axes = axes_of(1, "axes")
        if axes is None:
            raise _Unknown("squeeze axes")
        axes = sorted({a % r for a in axes})
        if sp.kind == "stacked" and sp.sel in axes and len(sp.parts) == 1 and di[sp.sel] == 1 \
                and sp.parts[0].axis not in axes:
            l = sp.parts[0]
            dg.layouts[out0] = l.with_axis(l.axis - sum(a < l.axis for a in axes))
            return
        if tracked & set(axes):
            raise _Unknown("squeeze of a channel axis")
        dg.specials[out0] = moved(lambda i: i - sum(a < i for a in axes))
        return
    if op == "Gather" and sp.kind == "stacked":
        if int(node.attr("axis", 0)) % r != sp.sel:
            raise _Unknown("gather on another axis")
        idx = constant_value(node.input(1))
        n = len(sp.parts)
        if idx is None or idx.size != 1 or di[sp.sel] != n:
            raise _Unknown("gather of a non-constant part")
        part = sp.parts[int(idx.reshape(-1)[0]) % n]
        if idx.ndim == 0:
            dg.layouts[out0] = part.with_axis(part.axis - (part.axis > sp.sel))
        else:
            dg.specials[out0] = Special("stacked", sp.sel, (part,))
        return
    if op == "Split" and sp.kind == "stacked":
        n = len(sp.parts)
        if int(node.attr("axis", 0)) % r != sp.sel or di[sp.sel] != n or len(node.outputs) != n:
            raise _Unknown("split form")
        sizes = axes_of(1, "split")
        if sizes is not None and any(v != 1 for v in sizes):
            raise _Unknown("split form")
        for o, part in zip(node.outputs, sp.parts):
            if o is not None:
                dg.specials[o] = Special("stacked", sp.sel, (part,))
        return
    if op == "Reshape" and sp.kind == "merged":
        l = sp.parts[0]
        a = l.axis
        do = _dims(out0)
        t, cat, src = _reshape_target(node)
        if t is None or do is None or l.block != 1 or len(l.segments) != 1 or len(do) != len(di) + 1 \
                or not _same_dims(do[:a], di[:a]) or not _same_dims(do[a + 2:], di[a + 1:]) \
                or do[a + 1] != l.channels or t[a + 1] not in (l.channels, -1):
            raise _Unknown("reshape of heads merged with batch")
        out = Layout(a + 1, l.segments)
        dg.layouts[out0] = out
        if t[a + 1] != -1:
            if cat is None:
                dg.fixups.append(Fixup(node, "reshape", out, [(a + 1, 0)]))
            elif _dims(cat.input(src[a + 1])) == (1,):
                dg.fixups.append(Fixup(cat, "concat_entry", out, [(src[a + 1], 0)]))
            else:
                raise _Unknown("head count inside a longer piece of the target")
        return
    raise _Unknown("unsupported use of a fused projection or of merged heads")


def _visit_batched_matmul(node: Node, ins, out0: Value, dg: DependencyGraph, merge) -> None:
    """MatMul of two activations (attention): channels may only sit on a broadcast batch axis
    (heads), where both operands' layouts are coupled and carried to the output."""
    tracked = [(i, l) for i, l in enumerate(ins[:2]) if l is not None]
    r_out = _rank(out0)
    if not tracked or r_out is None:
        raise _Unknown("unknown rank")
    negs = set()
    for i, l in tracked:
        ri = _rank(node.input(i))
        if ri is None or ri < 3 or l.axis >= ri - 2:
            raise _Unknown("channels on a matrix axis of a MatMul")
        negs.add(l.axis - ri)
    if len(negs) != 1:
        raise _Unknown("channel axes do not line up")
    neg = negs.pop()
    base = tracked[0][1]
    for _, l in tracked[1:]:
        if not merge(base, l, node):
            raise _Unknown("operands do not align")
    for i in range(2):
        if ins[i] is None:
            d = _dims(node.input(i))
            if d is None or (len(d) >= -neg and d[len(d) + neg] != 1):
                raise _Unknown("untracked operand along the channel axis")
    out = dg.canonical(base).with_axis(r_out + neg)
    dg.layouts[out0] = out
    dg.mac_nodes.append(MacNode(node, out, None))


def channel_groups(model: Model) -> List[ChannelGroup]:
    """The channel groups of ``model``'s main graph, prunable or not (with reasons)."""
    return analyze(model).groups()


def layout_indices(layout: Layout, keep: Dict[int, np.ndarray], find) -> np.ndarray:
    """Positions along a member's axis that survive when group ``g`` keeps channels ``keep[g]``."""
    out, pos = [], 0
    for s in layout.segments:
        k = keep.get(find(s.group))
        if k is None:
            sel = np.arange(s.start, s.stop)
        else:
            sel = k[(k >= s.start) & (k < s.stop)]
        out.append(sel - s.start + pos)
        pos += s.size
    idx = np.concatenate(out) if out else np.zeros(0, np.int64)
    if layout.block > 1:
        idx = (idx[:, None] * layout.block + np.arange(layout.block)[None, :]).reshape(-1)
    return idx.astype(np.int64)
