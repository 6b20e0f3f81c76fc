"""Common-subexpression elimination. Bit-exact."""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgec.ir import Attr, AttrKind, Graph, Model, Node, SparseTensor, Tensor, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import can_replace

from .eliminate_noops import const_array

__all__ = ["CommonSubexpressionElimination", "NONDETERMINISTIC_OPS", "node_key"]

#: Default-domain ops whose results differ from call to call.
NONDETERMINISTIC_OPS = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
})


class _Unhashable(Exception):
    pass


def _tensor_key(t: Any) -> Tuple[Any, ...]:
    if isinstance(t, SparseTensor):
        return ("sparse", t.dims, _tensor_key(t.values), _tensor_key(t.indices))
    if not isinstance(t, Tensor):
        raise _Unhashable
    arr = t.numpy()
    data = tuple(arr.reshape(-1).tolist()) if arr.dtype == object else np.ascontiguousarray(arr).tobytes()
    return (int(t.dtype), tuple(t.dims), data)


def _float_key(f: float) -> bytes:
    return struct.pack("<d", f)  # -0.0 != 0.0, NaN == same NaN


def _attr_key(a: Attr) -> Tuple[Any, ...]:
    if a.ref is not None:
        return (a.name, int(a.kind), "$", a.ref)
    k, v = a.kind, a.value
    if k == AttrKind.FLOAT:
        val: Any = _float_key(v)
    elif k == AttrKind.FLOATS:
        val = tuple(_float_key(x) for x in v)
    elif k in (AttrKind.INT, AttrKind.STRING):
        val = v
    elif k in (AttrKind.INTS, AttrKind.STRINGS):
        val = tuple(v)
    elif k in (AttrKind.TENSOR, AttrKind.SPARSE_TENSOR):
        val = _tensor_key(v)
    elif k in (AttrKind.TENSORS, AttrKind.SPARSE_TENSORS):
        val = tuple(_tensor_key(x) for x in v)
    elif k in (AttrKind.TYPE_PROTO, AttrKind.TYPE_PROTOS):
        val = tuple(v) if k == AttrKind.TYPE_PROTOS else v
        hash(val)
    else:  # graphs and anything unknown: not compared
        raise _Unhashable
    return (a.name, int(k), val)


def _is_deterministic(node: Node, model: Model) -> bool:
    if node.op_type in NONDETERMINISTIC_OPS:
        return False
    if node.op_type == "Dropout":  # random unless training_mode is absent or a constant false
        tm = node.input(2)
        if tm is None:
            return True
        arr = const_array(tm)
        return arr is not None and arr.size == 1 and not bool(arr.reshape(-1)[0])
    return True


def node_key(node: Node) -> Optional[Tuple[Any, ...]]:
    """What makes two nodes compute the same thing: op, inputs (by identity), attributes, outputs present."""
    if node.subgraphs():
        return None
    ins = list(node.inputs)
    while ins and ins[-1] is None:
        ins.pop()
    try:
        attrs = tuple(sorted((_attr_key(a) for a in node.attrs.values()), key=lambda t: t[0]))
    except (_Unhashable, TypeError):
        return None
    return (node.domain, node.op_type, node.overload, tuple(id(v) if v is not None else None for v in ins),
            attrs, tuple(o is not None for o in node.outputs))


def _cse_graph(graph: Graph, model: Model, domains: frozenset) -> Tuple[int, int]:
    """One forward sweep; returns (nodes removed, identities inserted)."""
    seen: Dict[Tuple[Any, ...], Node] = {}
    removed = identities = 0
    for node in graph:
        if (node.domain not in domains or (node.domain, node.op_type, node.overload) in model.functions
                or (node.domain == "" and node.op_type == "Constant") or not _is_deterministic(node, model)):
            continue
        key = node_key(node)
        if key is None:
            continue
        try:
            first = seen.get(key)
        except TypeError:
            continue
        if first is None or first.graph is not graph:
            seen[key] = node
            continue
        if node.op_type == "Identity" and not all(o is None or can_replace(o, n) for o, n in zip(
                node.outputs, first.outputs)):
            continue  # an Identity would only be replaced by another Identity
        for old, new in zip(node.outputs, first.outputs):
            if old is None:
                continue
            if not can_replace(old, new):  # both are graph outputs: keep the name with an Identity
                ident = Node("Identity", [new], [Value(graph.new_name(old.name + "_cse"), old.type)],
                             name=graph.new_name(node.name + "/cse", node_name=True))
                graph.insert_before(node, ident)
                new = ident.outputs[0]
                identities += 1
            if new.type is None:
                new.type = old.type
            old.replace_all_uses_with(new)
        graph.remove(node)
        removed += 1
    return removed, identities


@register_pass
class CommonSubexpressionElimination(Pass):
    """Merge nodes that compute the same thing (bit-exact).

    Two nodes are merged when they have the same domain, op type and overload, the very same input
    values (trailing omitted inputs ignored), deep-equal attributes (tensors by dtype, dims and
    bytes; floats by bits) and the same outputs present; the later one is removed. Never merged:
    random ops (RandomNormal, RandomUniform, their Like forms, Multinomial, Bernoulli, Dropout that
    may be in training mode), nodes with subgraphs, calls of model-local functions, ops outside the
    ``domains`` option (default: only the ONNX domain, as custom ops may have side effects), and
    Constant nodes (equal constants are ``dedup-initializers``' job; run it first to let CSE see
    them as the same input). When both results are graph outputs, the later one becomes an Identity.
    Works in every graph, subgraphs and functions included. Statistic: ``nodes-merged``.
    """

    name = "cse"
    opt_level = 1
    domains: List[str] = [""]

    def run(self, model: Model, ctx: PassContext) -> bool:
        domains = frozenset("" if d in ("ai.onnx", "onnx") else d for d in self.domains)
        total = idents = 0
        for graph in list(model.all_graphs()):
            for _ in range(20):  # one sweep suffices in a sorted graph; unsorted ones may need more
                n, i = _cse_graph(graph, model, domains)
                total, idents = total + n, idents + i
                if not n:
                    break
        if total:
            ctx.stat("nodes-merged", total)
        if idents:
            ctx.stat("identities-inserted", idents)
        return total > 0
