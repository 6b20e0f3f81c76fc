"""Merge chains of data-movement ops (Reshape, Flatten, Squeeze, Unsqueeze, Transpose). Bit-exact."""

from __future__ import annotations

from typing import List, Optional, Sequence, Set

import numpy as np

from edgec.ir import Model, Node, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Match, Op, RewriteRule, Rewriter, Var, apply_rules

from .eliminate_noops import dims_of, has_ref_attrs, int_list

__all__ = ["MergeShapeOps", "merge_rules"]


def _axes(node: Node) -> Optional[List[int]]:
    """Constant axes of a Squeeze/Unsqueeze (attribute before opset 13, input since), else None."""
    if "axes" in node.attrs:
        a = node.attrs["axes"]
        return None if a.ref is not None else [int(x) for x in a.value]
    return int_list(node.input(1)) if node.input(1) is not None else None


def _normalize(axes: Sequence[int], rank: Optional[int]) -> Optional[List[int]]:
    """Axes made non-negative against ``rank`` (None: only already non-negative axes pass); no repeats."""
    out = []
    for a in axes:
        if a < 0:
            if rank is None or a < -rank:
                return None
            a += rank
        elif rank is not None and a >= rank:
            return None
        out.append(a)
    return out if len(set(out)) == len(out) else None


def _nth_outside(excluded: Set[int], n: int) -> int:
    """The ``n``-th (0-based) non-negative integer not in ``excluded``."""
    i = -1
    while n >= 0:
        i += 1
        if i not in excluded:
            n -= 1
    return i


def _rank(v: Value) -> Optional[int]:
    d = dims_of(v)
    return None if d is None else len(d)


def _make_axes_node(rw: Rewriter, like: Node, x: Value, axes: List[int]) -> Value:
    """A Squeeze/Unsqueeze like ``like`` (attribute or input form) with new axes."""
    axes = sorted(axes)
    if "axes" in like.attrs:
        return rw.op(like.op_type, [x], {"axes": axes})
    return rw.op(like.op_type, [x, rw.const(np.array(axes, dtype=np.int64), "axes")])


# --- rules --------------------------------------------------------------------------------------

def _into_reshape(m: Match, rw: Rewriter) -> Optional[Value]:
    """Reshape(Reshape|Flatten|Squeeze|Unsqueeze(x), s) -> Reshape(x, s'): 0s in s resolved."""
    second, first, x, s = m.root, m["first"], m["x"], m["s"]
    allowzero = second.attr("allowzero", 0)
    shape = int_list(s)
    if shape is None:
        return None if not allowzero else rw.op("Reshape", [x, s], {"allowzero": 1})
    if allowzero or 0 not in shape:
        new_shape = shape
    else:
        s1 = None
        if first.op_type == "Reshape":
            s1 = [int(v) for v in first.attr("shape")] if "shape" in first.attrs else int_list(first.input(1))
        y1 = dims_of(first.outputs[0])
        new_shape = list(shape)
        for i, v in enumerate(shape):
            if v != 0:
                continue
            if s1 is not None and i < len(s1) and s1[i] > 0:
                new_shape[i] = s1[i]
            elif s1 is not None and i < len(s1) and s1[i] == 0 and not first.attr("allowzero", 0):
                new_shape[i] = 0  # both copy dim i of x
            elif y1 is not None and i < len(y1) and isinstance(y1[i], int) and y1[i] > 0:
                new_shape[i] = y1[i]
            else:
                return None
    new_s = s if new_shape == shape else rw.const(np.array(new_shape, dtype=np.int64), "shape")
    attrs = {"allowzero": allowzero} if "allowzero" in second.attrs else None
    return rw.op("Reshape", [x, new_s], attrs)


def _transpose_pair(m: Match, rw: Rewriter) -> Optional[Value]:
    second, first, x = m.root, m["first"], m["x"]
    rank = _rank(x)
    p1, p2 = first.attr("perm"), second.attr("perm")
    n = len(p1) if p1 is not None else len(p2) if p2 is not None else rank
    if n is None:
        return None
    p1 = list(p1) if p1 is not None else list(reversed(range(n)))
    p2 = list(p2) if p2 is not None else list(reversed(range(n)))
    if len(p1) != n or len(p2) != n or sorted(p1) != list(range(n)) or sorted(p2) != list(range(n)):
        return None
    q = [p1[j] for j in p2]
    if q == list(range(n)):
        return x
    return rw.op("Transpose", [x], {"perm": q})


def _unsqueeze_pair(m: Match, rw: Rewriter) -> Optional[Value]:
    second, first, x = m.root, m["first"], m["x"]
    a1, a2 = _axes(first), _axes(second)
    if a1 is None or a2 is None or ("axes" in first.attrs) != ("axes" in second.attrs):
        return None
    r = _rank(x)
    n1 = _normalize(a1, None if r is None else r + len(a1))
    n2 = _normalize(a2, None if r is None else r + len(a1) + len(a2))
    if n1 is None or n2 is None:
        return None
    s2 = set(n2)
    combined = n2 + [_nth_outside(s2, p) for p in n1]
    return _make_axes_node(rw, first, x, combined)


def _squeeze_pair(m: Match, rw: Rewriter) -> Optional[Value]:
    second, first, x = m.root, m["first"], m["x"]
    a1, a2 = _axes(first), _axes(second)
    if not a1 or not a2 or ("axes" in first.attrs) != ("axes" in second.attrs):
        return None
    r = _rank(x)
    n1 = _normalize(a1, r)
    n2 = _normalize(a2, None if r is None else r - len(a1))
    if n1 is None or n2 is None:
        return None
    s1 = set(n1)
    combined = n1 + [_nth_outside(s1, p) for p in n2]
    return _make_axes_node(rw, first, x, combined)


def _cancel(m: Match, rw: Rewriter) -> Optional[Value]:
    """Squeeze(Unsqueeze(x, a), a) and Unsqueeze(Squeeze(x, a), a) -> x (same normalized axes)."""
    second, first, x = m.root, m["first"], m["x"]
    a1, a2 = _axes(first), _axes(second)
    if not a1 or not a2 or len(a1) != len(a2):
        return None
    r = _rank(x)
    # Both axes lists refer to the same rank: r + n (unsqueeze first) or r (squeeze first).
    ref = None if r is None else (r + len(a1) if first.op_type == "Unsqueeze" else r)
    n1, n2 = _normalize(a1, ref), _normalize(a2, ref)
    if n1 is None or n2 is None or sorted(n1) != sorted(n2):
        return None
    return x


def _known_attrs(rewrite):
    """Skip matches where an attribute is a function-attribute reference (value unknown)."""

    def wrapped(m: Match, rw: Rewriter) -> Optional[Value]:
        return None if has_ref_attrs(*m.nodes) else rewrite(m, rw)

    return wrapped


def merge_rules() -> List[RewriteRule]:
    """The rules of ``merge-shape-ops``."""
    X = Var("x")
    first_shape = Op(("Reshape", "Flatten", "Squeeze", "Unsqueeze"), X, name="first", extra_inputs=True)

    def pair(second: str, first: str) -> Op:
        return Op(second, Op(first, X, name="first", extra_inputs=True), extra_inputs=True)

    rules = [
        ("reshape-chain", Op("Reshape", first_shape, Var("s")), _into_reshape),
        ("transpose-chain", Op("Transpose", Op("Transpose", X, name="first")), _transpose_pair),
        ("unsqueeze-squeeze-cancel", pair("Squeeze", "Unsqueeze"), _cancel),
        ("squeeze-unsqueeze-cancel", pair("Unsqueeze", "Squeeze"), _cancel),
        ("unsqueeze-chain", pair("Unsqueeze", "Unsqueeze"), _unsqueeze_pair),
        ("squeeze-chain", pair("Squeeze", "Squeeze"), _squeeze_pair),
    ]
    return [RewriteRule(name, pattern, _known_attrs(fn)) for name, pattern, fn in rules]


@register_pass
class MergeShapeOps(Pass):
    """Merge chains of shape ops into one op (bit-exact).

    Rules (statistic names), each only when the first op's result has no other user:
    ``reshape-chain`` Reshape(Reshape|Flatten|Squeeze|Unsqueeze(x), s) -> Reshape(x, s'), where a 0
    in s (copy a dim of the intermediate) is resolved from the first Reshape's constant shape or the
    intermediate's static type, and a dynamic s is taken only with allowzero=1; ``transpose-chain``
    Transpose(Transpose(x)) -> one Transpose with the composed perm, or x when it is the identity;
    ``unsqueeze-chain`` / ``squeeze-chain`` combine the axes (attribute or input form, as the nodes
    use; negative axes need a known rank); ``unsqueeze-squeeze-cancel`` / ``squeeze-unsqueeze-cancel``
    -> x when the two ops use the same axes. Works in subgraphs and functions.
    """

    name = "merge-shape-ops"
    opt_level = 1

    def run(self, model: Model, ctx: PassContext) -> bool:
        stats = apply_rules(model, merge_rules())
        for rule, n in sorted(stats.fired.items()):
            ctx.stat(rule, n)
        return stats.changed
