"""Model statistics for ``edgec inspect``: op histogram, parameters, MACs, interface, subgraphs.

MACs (multiply-accumulates) come from the static shapes in ``Value.type``; a node whose shapes are
not known gets ``None`` and is counted as unknown rather than guessed. Definitions:

- Conv: ``N * C_out * prod(out spatial) * (C_in / group) * prod(kernel)`` (= numel(Y) * prod(W.shape[1:]))
- ConvTranspose: ``N * C_in * prod(in spatial) * (C_out / group) * prod(kernel)`` (= numel(X) * prod(W.shape[1:]))
- Gemm: ``M * N * K``; MatMul: ``prod(broadcast batch) * M * N * K`` (numpy rules, 1-D operands promoted)
- RNN / GRU / LSTM: ``seq_len * batch * (numel(W) + numel(R))`` (every gate, every direction), also
  reported per time step
- the integer and QLinear variants of Conv and MatMul count like their float versions
- every other op counts 0 MACs. Nodes in subgraphs are totalled separately (how often a Loop body or
  which If branch runs is not known statically); calls of local functions whose bodies hold a
  MAC op are unknown.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .ir.core import Graph, Model, Node, SparseTensor, Value
from .ir.tensor import Tensor
from .ir.types import MapType, OptionalType, SequenceType, SparseTensorType, TensorType, Type

__all__ = ["model_stats", "format_stats", "node_macs", "type_str"]

#: ops with a MAC formula; the value is (data input index, weight input index).
_CONV_LIKE = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
_MATMUL_LIKE = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
_RNN_LIKE = {"RNN", "GRU", "LSTM"}
MAC_OPS = frozenset(set(_CONV_LIKE) | set(_MATMUL_LIKE) | _RNN_LIKE | {"ConvTranspose", "Gemm"})


def type_str(t: Optional[Type]) -> str:
    """A short rendering of a type: ``f32[1,3,'N',?]``, ``seq(f32[?])``, ``?`` when unknown."""
    if t is None:
        return "?"
    if isinstance(t, (TensorType, SparseTensorType)):
        dims = t.shape.dims
        if dims is None:
            sh = "[*]"
        else:
            sh = "[" + ",".join("?" if d is None else (repr(d) if isinstance(d, str) else str(d)) for d in dims) + "]"
        pre = "sparse " if isinstance(t, SparseTensorType) else ""
        q = ""
        if isinstance(t, TensorType) and t.quant is not None:
            q = " quant" + ("(axis=%d)" % t.quant.axis if t.quant.per_channel else "")
        return f"{pre}{t.dtype.short}{sh}{q}"
    if isinstance(t, SequenceType):
        return f"seq({type_str(t.elem)})"
    if isinstance(t, OptionalType):
        return f"optional({type_str(t.elem)})"
    if isinstance(t, MapType):
        return f"map({t.key.short},{type_str(t.value)})"
    return type(t).__name__


def _static(v: Optional[Value], bind: Optional[Mapping[str, int]] = None) -> Optional[Tuple[int, ...]]:
    """Static dims of a tensor value (symbols resolved through ``bind``), or None."""
    if v is None or not isinstance(v.type, TensorType):
        return None
    dims = v.type.shape.dims
    if dims is None:
        return None
    if bind:
        dims = tuple(bind.get(d, d) if isinstance(d, str) else d for d in dims)
    return dims if all(isinstance(d, int) for d in dims) else None  # type: ignore[return-value]


def _prod(xs: Sequence[int]) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def _matmul_macs(a: Optional[Tuple[int, ...]], b: Optional[Tuple[int, ...]], y: Optional[Tuple[int, ...]]) -> Optional[int]:
    if a is not None and b is not None and len(a) >= 1 and len(b) >= 1:
        a2 = (1,) + a if len(a) == 1 else a
        b2 = b + (1,) if len(b) == 1 else b
        m, k = a2[-2], a2[-1]
        n = b2[-1]
        ba, bb = a2[:-2], b2[:-2]
        r = max(len(ba), len(bb))
        ba = (1,) * (r - len(ba)) + ba
        bb = (1,) * (r - len(bb)) + bb
        batch = 1
        for x, z in zip(ba, bb):
            if x != z and x != 1 and z != 1:
                return None  # not broadcastable: leave it to the verifier / shape inference
            batch *= max(x, z) if min(x, z) != 0 else 0
        return batch * m * n * k
    if a is not None and y is not None and len(a) >= 1:
        return _prod(y) * a[-1]  # every output element is a K-long dot product
    return None


def node_macs(node: Node, dims: Optional[Mapping[str, int]] = None) -> Tuple[Optional[int], Optional[int]]:
    """``(macs, macs_per_step)`` of one node; macs is None when shapes are unknown.

    ``dims`` gives values to symbolic dims (``{"batch": 1}``). ``macs_per_step`` is set for
    recurrent ops only (one time step, all directions).
    """
    op = node.op_type

    def _dims(v: Optional[Value]) -> Optional[Tuple[int, ...]]:
        return _static(v, dims)

    if node.domain not in ("", "ai.onnx"):
        return 0, None
    if op in _CONV_LIKE:
        _, wi = _CONV_LIKE[op]
        w, y = _dims(node.input(wi)), _dims(node.output(0))
        if w is None or y is None or len(w) < 2:
            return None, None
        return _prod(y) * _prod(w[1:]), None
    if op == "ConvTranspose":
        x, w = _dims(node.input(0)), _dims(node.input(1))
        if x is None or w is None or len(w) < 2:
            return None, None
        return _prod(x) * _prod(w[1:]), None
    if op in _MATMUL_LIKE:
        ai, bi = _MATMUL_LIKE[op]
        return _matmul_macs(_dims(node.input(ai)), _dims(node.input(bi)), _dims(node.output(0))), None
    if op == "Gemm":
        a, b, y = _dims(node.input(0)), _dims(node.input(1)), _dims(node.output(0))
        ta, tb = int(node.attr("transA", 0)), int(node.attr("transB", 0))
        a = a if a is not None and len(a) == 2 else None
        b = b if b is not None and len(b) == 2 else None
        y = y if y is not None and len(y) == 2 else None
        m = (a[1] if ta else a[0]) if a is not None else (y[0] if y is not None else None)
        k = (a[0] if ta else a[1]) if a is not None else ((b[1] if tb else b[0]) if b is not None else None)
        n = (b[0] if tb else b[1]) if b is not None else (y[1] if y is not None else None)
        if m is None or k is None or n is None:
            return None, None
        return m * n * k, None
    if op in _RNN_LIKE:
        x, w, r = _dims(node.input(0)), _dims(node.input(1)), _dims(node.input(2))
        if w is None or r is None:
            return None, None
        per_batch_step = _prod(w) + _prod(r)
        if x is None or len(x) != 3:
            return None, None
        layout = int(node.attr("layout", 0))
        seq, batch = (x[1], x[0]) if layout else (x[0], x[1])
        step = batch * per_batch_step
        return seq * step, step
    return 0, None


def _count_params(graph: Graph, acc: Dict[str, Dict[str, int]]) -> None:
    for v in graph.initializers.values():
        c = v.const
        if isinstance(c, Tensor):
            key, n, b = c.dtype.short, c.numel, c.nbytes
        elif isinstance(c, SparseTensor):
            key, n, b = c.dtype.short, int(_prod(c.values.dims)), c.nbytes
        else:
            continue
        e = acc.setdefault(key, {"tensors": 0, "count": 0, "bytes": 0})
        e["tensors"] += 1
        e["count"] += n
        e["bytes"] += b


def _uses_macs(graph: Graph, functions, seen=None) -> bool:
    seen = set() if seen is None else seen
    for n in graph.all_nodes():
        if n.op_type in MAC_OPS and n.domain in ("", "ai.onnx"):
            return True
        f = functions.get((n.domain, n.op_type, n.overload))
        if f is not None and f.key not in seen:
            seen.add(f.key)
            if _uses_macs(f.graph, functions, seen):
                return True
    return False


def _value_info(v: Value) -> Dict[str, Any]:
    dims = v.type.shape.dims if isinstance(v.type, (TensorType, SparseTensorType)) else None
    return {"name": v.name, "type": type_str(v.type), "dtype": v.dtype.short if v.dtype is not None else None,
            "shape": None if dims is None else list(dims)}


def model_stats(model: Model, dims: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
    """Statistics of a model as a JSON-friendly dict (see the module doc for the MAC definitions).

    ``dims`` gives values to symbolic dims for the MAC count (``{"batch": 1}``); they are listed
    under ``dims``.

    Keys: ``graph``, ``ir_version``, ``producer``, ``opset_imports``, ``num_nodes`` (main graph),
    ``num_nodes_nested`` (in subgraphs), ``op_histogram`` / ``op_histogram_nested`` (qualified op ->
    count), ``parameters`` (``count``, ``bytes``, ``by_dtype``: dtype -> tensors/count/bytes; all
    initializers of the main graph and its subgraphs), ``macs`` (``total`` over main-graph nodes with
    known shapes, ``total_nested``, ``unknown`` node names, ``complete``, ``per_node`` records),
    ``inputs`` / ``outputs`` (name, type, dtype, shape), ``subgraphs`` (node, op, attribute, graph,
    nodes, depth), ``functions``.
    """
    g = model.graph
    functions = model.functions
    hist: Counter = Counter()
    hist_nested: Counter = Counter()
    per_node: List[Dict[str, Any]] = []
    subgraphs: List[Dict[str, Any]] = []
    unknown: List[str] = []
    total = 0
    total_nested = 0
    fn_mac_cache: Dict[Tuple[str, str, str], bool] = {}

    def walk(graph: Graph, depth: int) -> None:
        nonlocal total, total_nested
        for n in graph:
            (hist if depth == 0 else hist_nested)[n.qualified_op] += 1
            f = functions.get((n.domain, n.op_type, n.overload))
            if f is not None:
                if f.key not in fn_mac_cache:
                    fn_mac_cache[f.key] = _uses_macs(f.graph, functions)
                macs, step = (None if fn_mac_cache[f.key] else 0), None
            else:
                macs, step = node_macs(n, dims)
            if macs is None or macs > 0 or n.op_type in MAC_OPS:
                rec: Dict[str, Any] = {"node": n.name, "op": n.qualified_op, "graph": graph.name, "depth": depth, "macs": macs}
                if step is not None:
                    rec["macs_per_step"] = step
                per_node.append(rec)
            if macs is None:
                unknown.append(n.name)
            elif depth == 0:
                total += macs
            else:
                total_nested += macs
            for aname, a in n.attrs.items():
                for sg in a.graphs():
                    subgraphs.append({"node": n.name, "op": n.qualified_op, "attribute": aname, "graph": sg.name,
                                      "nodes": len(sg), "nodes_total": sum(1 for _ in sg.all_nodes()), "depth": depth + 1})
                    walk(sg, depth + 1)

    walk(g, 0)
    by_dtype: Dict[str, Dict[str, int]] = {}
    for sg in g.all_graphs():
        _count_params(sg, by_dtype)
    return {
        "graph": g.name,
        "ir_version": model.ir_version,
        "producer": " ".join(x for x in (model.producer_name, model.producer_version) if x),
        "opset_imports": {(d or "ai.onnx"): v for d, v in sorted(model.opset_imports.items())},
        "dims": dict(dims or {}),
        "num_nodes": len(g),
        "num_nodes_nested": sum(hist_nested.values()),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "op_histogram_nested": dict(sorted(hist_nested.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": {
            "count": sum(e["count"] for e in by_dtype.values()),
            "bytes": sum(e["bytes"] for e in by_dtype.values()),
            "by_dtype": dict(sorted(by_dtype.items())),
        },
        "macs": {
            "total": total,
            "total_nested": total_nested,
            "unknown": unknown,
            "complete": not unknown,
            "per_node": per_node,
        },
        "inputs": [_value_info(v) for v in g.inputs if not v.is_initializer()],
        "outputs": [_value_info(v) for v in g.outputs],
        "subgraphs": subgraphs,
        "functions": [
            {"domain": f.domain, "name": f.name, "overload": f.overload, "nodes": len(f.graph),
             "inputs": len(f.graph.inputs), "outputs": len(f.graph.outputs), "attributes": list(f.attributes)}
            for f in functions.values()
        ],
    }


def _human(n: Optional[int]) -> str:
    if n is None:
        return "unknown"
    for unit, div in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> List[str]:
    cells = [[str(h) for h in headers]] + [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(fmt(r) for r in cells[1:])
    return ["  " + line for line in out]


def format_stats(stats: Dict[str, Any], *, max_nodes: int = 20) -> str:
    """Render :func:`model_stats` output as readable text tables (``max_nodes`` MAC rows at most)."""
    lines: List[str] = []
    lines.append(f"model: {stats['graph'] or '(unnamed)'}   ir_version {stats['ir_version']}"
                 + (f"   producer {stats['producer']}" if stats.get("producer") else ""))
    lines.append("opsets: " + ", ".join(f"{d} {v}" for d, v in stats["opset_imports"].items()))
    lines.append(f"nodes: {stats['num_nodes']}" + (f" (+{stats['num_nodes_nested']} in subgraphs)" if stats["num_nodes_nested"] else ""))
    lines.append("")
    lines.append("inputs:")
    lines += _table(["name", "type"], [(v["name"], v["type"]) for v in stats["inputs"]]) if stats["inputs"] else ["  (none)"]
    lines.append("outputs:")
    lines += _table(["name", "type"], [(v["name"], v["type"]) for v in stats["outputs"]]) if stats["outputs"] else ["  (none)"]
    lines.append("")
    lines.append("ops:")
    nested = stats["op_histogram_nested"]
    ops = sorted(set(stats["op_histogram"]) | set(nested), key=lambda o: (-(stats["op_histogram"].get(o, 0) + nested.get(o, 0)), o))
    rows = [(o, stats["op_histogram"].get(o, 0), nested.get(o, 0)) for o in ops]
    lines += _table(["op", "count", "in subgraphs"], rows, right=(1, 2)) if rows else ["  (none)"]
    lines.append("")
    p = stats["parameters"]
    lines.append(f"parameters: {p['count']} ({_human(p['count'])}), {p['bytes']} bytes")
    if p["by_dtype"]:
        lines += _table(["dtype", "tensors", "elements", "bytes"],
                        [(d, e["tensors"], e["count"], e["bytes"]) for d, e in p["by_dtype"].items()], right=(1, 2, 3))
    lines.append("")
    m = stats["macs"]
    head = f"MACs: {m['total']} ({_human(m['total'])})"
    if stats.get("dims"):
        head += " with " + ", ".join(f"{k}={v}" for k, v in stats["dims"].items())
    if m["unknown"]:
        head += f", lower bound: {len(m['unknown'])} node(s) with unknown shapes"
    if m["total_nested"]:
        head += f"; {m['total_nested']} ({_human(m['total_nested'])}) more in subgraphs, per execution"
    lines.append(head)
    recs = sorted(m["per_node"], key=lambda r: (r["macs"] is not None, r["macs"] or 0), reverse=True)
    if recs:
        shown = recs[:max_nodes]
        lines += _table(["node", "op", "graph", "MACs", "per step"],
                        [(r["node"], r["op"], r["graph"] if r["depth"] else "", _human(r["macs"]),
                          _human(r["macs_per_step"]) if "macs_per_step" in r else "") for r in shown], right=(3, 4))
        if len(recs) > len(shown):
            lines.append(f"  ... {len(recs) - len(shown)} more")
    if stats["subgraphs"]:
        lines.append("")
        lines.append("subgraphs:")
        lines += _table(["node", "op", "attribute", "graph", "nodes", "depth"],
                        [(s["node"], s["op"], s["attribute"], s["graph"], s["nodes_total"], s["depth"]) for s in stats["subgraphs"]],
                        right=(4, 5))
    if stats["functions"]:
        lines.append("")
        lines.append("functions:")
        lines += _table(["function", "nodes", "inputs", "outputs", "attributes"],
                        [(f"{f['domain']}::{f['name']}" + (f":{f['overload']}" if f["overload"] else ""), f["nodes"],
                          f["inputs"], f["outputs"], ",".join(f["attributes"])) for f in stats["functions"]], right=(1, 2, 3))
    return "\n".join(lines) + "\n"
