"""Static memory planner for the C back end: offsets in one activation arena.

The C code generator hands over one :class:`Buffer` per intermediate tensor
(its size and its lifetime as indices into the node schedule) and gets back a
:class:`MemoryPlan`: a byte offset per buffer inside a single arena, the arena
size, the lower bound and the heuristic that won.

Lifetimes are inclusive: a buffer is written by node ``first_use`` and last read
by node ``last_use``, so two buffers whose intervals touch at a step (an input
that dies at node ``t`` and the output node ``t`` writes) are both live at ``t``
and may not share bytes.  The exception is an in-place pair: ``B.inplace_of ==
"A"`` says node ``B.first_use`` reads ``A`` for the last time and may write
``B`` over it (an elementwise op).  The pair is honoured when ``A.last_use ==
B.first_use`` and ``B.size_bytes <= A.size_bytes``; a pair is then placed at the
same offset, and chains of such pairs (``relu(add(x))``) form one *alias group*.

Heuristics (all offset-based, in the style of TFLite Micro's
``GreedyMemoryPlanner`` and TVM USMP; see docs/reference c-and-asic-backends §4):

* ``greedy_by_size``      largest first (then longest-lived), lowest offset that does not collide with
                          an already placed, time-overlapping buffer (TFLM);
* ``greedy_by_size_best_fit``  same order, smallest fitting gap (Pisarchyk & Lee);
* ``greedy_by_conflicts`` most time-overlapping neighbours first (USMP);
* ``greedy_by_lifetime``  longest lifetime first;
* ``greedy_by_area``      largest size x lifetime first;
* ``breadth_first``       by start time (a linear-scan allocator);
* ``two_sided``           by start time, each buffer at the bottom or the top of
                          an arena of lower-bound size, opposite the neighbour
                          born last
                          (optimal on chains, where first fit is not: sizes
                          1,2,1,1,2,1 need 4 bytes first-fit, 3 two-sided);
* ``slots`` / ``slots_first_free``  whole-buffer slots as onnx2c's unions (see
                          :func:`slot_plan_bytes`); kept as candidates so the
                          winner is never worse than the slot approach.

All run; the smallest arena wins (ties: the order above).  Every ordering breaks
ties by name, so plans are deterministic.

Lower bound: ``max`` over schedule steps of the aligned bytes live at that step,
counting an in-place pair that meets at the step once.  No plan can go below it.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "STRATEGIES",
    "Buffer",
    "MemoryPlan",
    "check_plan",
    "lower_bound",
    "plan_memory",
    "slot_plan_bytes",
]


@dataclass(frozen=True)
class Buffer:
    name: str
    size_bytes: int
    first_use: int
    last_use: int
    inplace_of: str | None = None


@dataclass
class MemoryPlan:
    offsets: dict[str, int]
    arena_bytes: int
    lower_bound_bytes: int
    strategy: str
    # Additions beyond the agreed interface (defaulted, so positional
    # construction with the four fields above still works):
    alignment: int = 16
    candidates: dict[str, int] = field(default_factory=dict)  # strategy -> arena bytes

    @property
    def overhead(self) -> float:
        """arena / lower bound (1.0 when both are zero)."""
        if self.lower_bound_bytes == 0:
            return 1.0 if self.arena_bytes == 0 else float("inf")
        return self.arena_bytes / self.lower_bound_bytes


# --------------------------------------------------------------------------- #
# shared preprocessing


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def _check_alignment(alignment: int) -> None:
    if not isinstance(alignment, int) or alignment < 1:
        raise ValueError(f"alignment must be a positive int, got {alignment!r}")


def _validate(buffers: Sequence[Buffer]) -> dict[str, Buffer]:
    by_name: dict[str, Buffer] = {}
    for b in buffers:
        if b.name in by_name:
            raise ValueError(f"duplicate buffer name {b.name!r}")
        if b.size_bytes < 0:
            raise ValueError(f"buffer {b.name!r}: negative size {b.size_bytes}")
        if b.first_use > b.last_use:
            raise ValueError(
                f"buffer {b.name!r}: first_use {b.first_use} > last_use {b.last_use}"
            )
        by_name[b.name] = b
    for b in buffers:
        if b.inplace_of is None:
            continue
        if b.inplace_of == b.name:
            raise ValueError(f"buffer {b.name!r} is in place of itself")
        src = by_name.get(b.inplace_of)
        if src is None:
            raise ValueError(f"buffer {b.name!r}: inplace_of names unknown buffer {b.inplace_of!r}")
        if src.last_use != b.first_use:
            raise ValueError(
                f"buffer {b.name!r} in place of {src.name!r}: the input must die at the node "
                f"that writes the output ({src.name!r}.last_use={src.last_use}, "
                f"{b.name!r}.first_use={b.first_use})"
            )
    return by_name


def _inplace_pairs(buffers: Sequence[Buffer]) -> dict[str, str]:
    """Honoured in-place pairs as ``{output: input}``.

    A pair is honoured when the output is no larger than the input, the input is
    not already claimed by another output (first claimant by name wins) and the
    pair closes no cycle.  The result is a set of disjoint chains.
    """
    by_name = _validate(buffers)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    pairs: dict[str, str] = {}
    claimed: set = set()
    for b in sorted((b for b in buffers if b.inplace_of is not None), key=lambda b: b.name):
        src = by_name[b.inplace_of]  # type: ignore[index]
        if b.size_bytes > src.size_bytes or src.name in claimed:
            continue
        ra, rb = find(src.name), find(b.name)
        if ra == rb:
            continue
        parent[rb] = ra
        claimed.add(src.name)
        pairs[b.name] = src.name
    return pairs


def _overlapping_pairs(
    firsts: Sequence[int], lasts: Sequence[int], skip: Sequence[bool]
) -> list[tuple[int, int]]:
    """All index pairs (i, j) whose inclusive intervals intersect (sweep line)."""
    order = sorted((i for i in range(len(firsts)) if not skip[i]), key=lambda i: (firsts[i], i))
    active: set = set()
    heap: list[tuple[int, int]] = []
    out: list[tuple[int, int]] = []
    for i in order:
        f = firsts[i]
        while heap and heap[0][0] < f:
            active.discard(heapq.heappop(heap)[1])
        for j in active:
            out.append((j, i))
        active.add(i)
        heapq.heappush(heap, (lasts[i], i))
    return out


# --------------------------------------------------------------------------- #
# lower bound


def lower_bound(buffers: Sequence[Buffer], *, alignment: int = 16) -> int:
    """Max over schedule steps of the aligned bytes live at that step.

    An honoured in-place pair meeting at step ``t`` counts once at ``t`` (the
    output is no larger than the input, so it counts the input's size).
    """
    _check_alignment(alignment)
    pairs = _inplace_pairs(buffers)
    by_name = {b.name: b for b in buffers}
    delta: dict[int, int] = {}
    for b in buffers:
        s = _align(b.size_bytes, alignment)
        if s:
            delta[b.first_use] = delta.get(b.first_use, 0) + s
            delta[b.last_use + 1] = delta.get(b.last_use + 1, 0) - s
    for out_name in pairs:
        b = by_name[out_name]
        s = _align(b.size_bytes, alignment)
        if s:
            t = b.first_use
            delta[t] = delta.get(t, 0) - s
            delta[t + 1] = delta.get(t + 1, 0) + s
    best = cur = 0
    for t in sorted(delta):
        cur += delta[t]
        best = max(best, cur)
    return best


# --------------------------------------------------------------------------- #
# onnx2c-style whole-buffer slots


def _slot_offsets(
    buffers: Sequence[Buffer], alignment: int, policy: str
) -> tuple[dict[str, int], int]:
    if policy not in ("fit", "first_free"):
        raise ValueError(f"unknown slot policy {policy!r}")
    order = sorted(buffers, key=lambda b: (b.first_use, b.name))
    slot_size: list[int] = []
    slot_free: list[bool] = []
    members: list[list[str]] = []
    busy: list[tuple[int, int]] = []  # (last_use, slot) heap
    for b in order:
        while busy and busy[0][0] < b.first_use:
            slot_free[heapq.heappop(busy)[1]] = True
        s = _align(b.size_bytes, alignment)
        chosen = -1
        for k, free in enumerate(slot_free):
            if free and (policy == "first_free" or slot_size[k] >= s):
                chosen = k
                break
        if chosen < 0:
            chosen = len(slot_size)
            slot_size.append(s)
            slot_free.append(False)
            members.append([])
        else:
            slot_size[chosen] = max(slot_size[chosen], s)  # a C union grows
            slot_free[chosen] = False
        members[chosen].append(b.name)
        heapq.heappush(busy, (b.last_use, chosen))
    offsets: dict[str, int] = {}
    base = 0
    for k, names in enumerate(members):
        for n in names:
            offsets[n] = base
        base += slot_size[k]
    return offsets, base


def slot_plan_bytes(
    buffers: Sequence[Buffer], *, alignment: int = 16, policy: str = "fit"
) -> int:
    """Arena bytes of the 'whole buffer slots' approach (onnx2c's tensor unions).

    Buffers are taken in schedule order; a buffer reuses the first free slot
    (its previous occupant's ``last_use`` is before this ``first_use``) that is
    at least as large (``policy="fit"``), else it opens a new slot.  onnx2c
    itself (``Graph::add_to_free_union``) takes the first free union whatever its
    size and lets the union grow: ``policy="first_free"``.  The arena is the sum
    of slot sizes.  No in-place sharing (onnx2c has none).
    """
    _check_alignment(alignment)
    _validate(buffers)
    return _slot_offsets(buffers, alignment, policy)[1]


# --------------------------------------------------------------------------- #
# offset planning over alias groups


class _Problem:
    """Buffers folded into alias groups plus their member-level conflict lists."""

    def __init__(self, buffers: Sequence[Buffer], alignment: int):
        self.alignment = alignment
        self.names = [b.name for b in buffers]
        idx = {n: i for i, n in enumerate(self.names)}
        n = len(buffers)
        self.size = [_align(b.size_bytes, alignment) for b in buffers]
        firsts = [b.first_use for b in buffers]
        lasts = [b.last_use for b in buffers]
        pairs = _inplace_pairs(buffers)

        # groups: follow each chain from its root (a buffer that is nobody's output)
        child = {src: out for out, src in pairs.items()}
        self.firsts = firsts
        self.group_of = [-1] * n
        self.groups: list[list[int]] = []
        for b in sorted(buffers, key=lambda b: b.name):
            if b.name in pairs:
                continue
            g = len(self.groups)
            chain = [idx[b.name]]
            cur = b.name
            while cur in child:
                cur = child[cur]
                chain.append(idx[cur])
            for i in chain:
                self.group_of[i] = g
            self.groups.append(chain)
        assert all(g >= 0 for g in self.group_of)

        # member-level conflicts between different groups (zero-size buffers never conflict)
        self.nbrs: list[list[int]] = [[] for _ in range(n)]
        for i, j in _overlapping_pairs(firsts, lasts, [s == 0 for s in self.size]):
            if self.group_of[i] != self.group_of[j]:
                self.nbrs[i].append(j)
                self.nbrs[j].append(i)

        # group features for orderings
        G = len(self.groups)
        self.g_name = [self.names[m[0]] for m in self.groups]
        self.g_size = [max(self.size[i] for i in m) for m in self.groups]
        self.g_first = [min(firsts[i] for i in m) for m in self.groups]
        self.g_last = [max(lasts[i] for i in m) for m in self.groups]
        self.g_conflicts = [0] * G
        for g, m in enumerate(self.groups):
            self.g_conflicts[g] = len({self.group_of[j] for i in m for j in self.nbrs[i]})

    def place(
        self, order: Sequence[int], best_fit: bool, capacity: int | None = None
    ) -> tuple[list[int], int]:
        """Place groups in ``order``; returns (offset per buffer index, arena).

        Without ``capacity``: lowest colliding-free offset (first fit) or the
        tightest gap (best fit).  With ``capacity`` (two-sided): the highest free
        offset below ``capacity`` when the latest-born placed neighbour sits in
        the lower half, else the lowest; lowest overall if nothing fits below.
        """
        off = [-1] * len(self.names)
        arena = 0
        for g in order:
            members = self.groups[g]
            forbidden: list[tuple[int, int]] = []  # offsets o with lo <= o < hi collide
            latest = (-1, "", -1)  # (first_use, name, index) of the latest-born placed neighbour
            for i in members:
                si = self.size[i]
                if si == 0:
                    continue
                for j in self.nbrs[i]:
                    oj = off[j]
                    if oj >= 0:
                        forbidden.append((oj - si + 1, oj + self.size[j]))
                        key = (self.firsts[j], self.names[j], j)
                        latest = max(latest, key)
            if capacity is None:
                o = self._choose(forbidden, best_fit)
            else:
                j = latest[2]
                # go to the other end from the neighbour born last (alternation
                # along a chain); no neighbour: bottom
                go_high = j >= 0 and 2 * off[j] + self.size[j] <= capacity
                o = self._two_sided(forbidden, capacity - self.g_size[g], go_high)
            for i in members:
                off[i] = o
                arena = max(arena, o + self.size[i])
        return off, arena

    @staticmethod
    def _choose(forbidden: list[tuple[int, int]], best_fit: bool) -> int:
        # every hi is aligned (placed offsets and sizes are), so candidate
        # offsets 0 and the his are aligned too.
        if not forbidden:
            return 0
        forbidden.sort()
        cand = 0
        best: tuple[int, int] | None = None  # (gap width, offset)
        for lo, hi in forbidden:
            if cand < lo:
                if not best_fit:
                    return cand
                width = lo - cand
                if best is None or width < best[0]:
                    best = (width, cand)
            cand = max(cand, hi)
        if best is not None:
            return best[1]
        return cand

    def _two_sided(self, forbidden: list[tuple[int, int]], top: int, go_high: bool) -> int:
        """Highest (``go_high``) or lowest free aligned offset in [0, top]."""
        A = self.alignment
        if top < 0:
            return self._choose(forbidden, False)
        forbidden.sort()
        lowest = -1
        highest = -1
        cand = 0  # start of the current free range (aligned)
        for lo, hi in forbidden + [(top + 1, top + 1)]:
            if cand > top:
                break
            if cand < lo:
                # free aligned offsets: cand .. floor((min(lo - 1, top)) / A) * A
                end = min(lo - 1, top) // A * A
                if end >= cand:
                    if lowest < 0:
                        lowest = cand
                    highest = end
            cand = max(cand, hi)
        if lowest < 0:  # nothing fits below the capacity
            return self._choose(forbidden, False)
        return highest if go_high else lowest


def _orders(p: _Problem) -> dict[str, tuple[list[int], bool]]:
    """Placement orders of the first-/best-fit strategies (ties by group name)."""
    G = range(len(p.groups))
    nm = p.g_name
    # equal sizes: the longer-lived first, so a skip connection claims its place
    # before the chain of same-size tensors it spans
    by_size = sorted(G, key=lambda g: (-p.g_size[g], p.g_first[g] - p.g_last[g], nm[g]))
    return {
        "greedy_by_size": (by_size, False),
        "greedy_by_size_best_fit": (by_size, True),
        "greedy_by_conflicts": (
            sorted(G, key=lambda g: (-p.g_conflicts[g], -p.g_size[g], nm[g])),
            False,
        ),
        "greedy_by_lifetime": (
            sorted(G, key=lambda g: (-(p.g_last[g] - p.g_first[g]), -p.g_size[g], nm[g])),
            False,
        ),
        "greedy_by_area": (
            sorted(
                G,
                key=lambda g: (-p.g_size[g] * (p.g_last[g] - p.g_first[g] + 1), nm[g]),
            ),
            False,
        ),
        "breadth_first": (
            sorted(G, key=lambda g: (p.g_first[g], -p.g_size[g], nm[g])),
            False,
        ),
    }


STRATEGIES: tuple[str, ...] = (
    "greedy_by_size",
    "greedy_by_size_best_fit",
    "greedy_by_conflicts",
    "greedy_by_lifetime",
    "greedy_by_area",
    "breadth_first",
    "two_sided",
    "slots",
    "slots_first_free",
)


def plan_memory(
    buffers: Sequence[Buffer],
    *,
    alignment: int = 16,
    strategies: Sequence[str] | None = None,
) -> MemoryPlan:
    """Assign every buffer an offset in one arena; run all heuristics, keep the smallest.

    ``strategies`` restricts the candidates (default: all of :data:`STRATEGIES`).
    Offsets are multiples of ``alignment``; each buffer occupies its size rounded
    up to ``alignment``, and ``arena_bytes`` is a multiple of ``alignment``.
    """
    _check_alignment(alignment)
    _validate(buffers)
    wanted = tuple(STRATEGIES if strategies is None else strategies)
    unknown = [s for s in wanted if s not in STRATEGIES]
    if unknown or not wanted:
        raise ValueError(f"unknown strategies {unknown}; choose from {STRATEGIES}")
    lb = lower_bound(buffers, alignment=alignment)
    if not buffers:
        return MemoryPlan({}, 0, 0, wanted[0], alignment, {s: 0 for s in wanted})

    p = _Problem(buffers, alignment)
    orders = _orders(p)
    candidates: dict[str, int] = {}
    best: tuple[int, str, dict[str, int]] | None = None
    for s in STRATEGIES:
        if s not in wanted:
            continue
        if s in orders:
            order, best_fit = orders[s]
            off, arena = p.place(order, best_fit)
            offsets = dict(zip(p.names, off))
        elif s == "two_sided":
            off, arena = p.place(orders["breadth_first"][0], False, capacity=lb)
            offsets = dict(zip(p.names, off))
        else:
            offsets, arena = _slot_offsets(
                buffers, alignment, "fit" if s == "slots" else "first_free"
            )
        candidates[s] = arena
        if best is None or arena < best[0]:
            best = (arena, s, offsets)
    assert best is not None
    arena, strategy, offsets = best
    return MemoryPlan(offsets, arena, lb, strategy, alignment, candidates)


# --------------------------------------------------------------------------- #
# validation


def check_plan(
    buffers: Sequence[Buffer], plan: MemoryPlan, *, alignment: int | None = None
) -> None:
    """Raise AssertionError if the plan is invalid.

    Checks: every buffer has an offset, offsets are non-negative (and multiples
    of ``alignment`` / ``plan.alignment``), every buffer fits in the arena, and
    no two buffers that are live at the same step share a byte -- except members
    of an honoured in-place chain placed at exactly the same offset.
    """
    align = plan.alignment if alignment is None else alignment
    pairs = _inplace_pairs(buffers)
    names = [b.name for b in buffers]
    missing = [n for n in names if n not in plan.offsets]
    assert not missing, f"buffers without an offset: {missing[:5]}"
    for b in buffers:
        o = plan.offsets[b.name]
        assert o >= 0, f"buffer {b.name!r} has negative offset {o}"
        assert o % align == 0, f"buffer {b.name!r} offset {o} not aligned to {align}"
        assert o + b.size_bytes <= plan.arena_bytes, (
            f"buffer {b.name!r} [{o}, {o + b.size_bytes}) exceeds arena {plan.arena_bytes}"
        )
    # alias-group id per buffer (chains of honoured pairs)
    root: dict[str, str] = {}
    for n in names:
        r = n
        while r in pairs:
            r = pairs[r]
        root[n] = r
    firsts = [b.first_use for b in buffers]
    lasts = [b.last_use for b in buffers]
    for i, j in _overlapping_pairs(firsts, lasts, [b.size_bytes == 0 for b in buffers]):
        a, b = buffers[i], buffers[j]
        oa, ob = plan.offsets[a.name], plan.offsets[b.name]
        if oa < ob + b.size_bytes and ob < oa + a.size_bytes:
            if root[a.name] == root[b.name] and oa == ob:
                continue  # in-place sharing
            raise AssertionError(
                f"buffers {a.name!r} [{oa}, {oa + a.size_bytes}) live {a.first_use}..{a.last_use} "
                f"and {b.name!r} [{ob}, {ob + b.size_bytes}) live {b.first_use}..{b.last_use} "
                f"overlap while both live"
            )
