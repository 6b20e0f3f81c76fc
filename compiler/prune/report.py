"""The pruning report: per-layer rows (``ctx.reports['pruning']``), totals, summary text, JSON file.

``ctx.reports['pruning']`` (left by ``prune-weights``)::

    {"mode", "score", "scope", "sparsity", "reconstruct", "storage",
     "layers": [{"name", "op", "weight", "shape", "params", "nonzeros", "sparsity", "dense_bytes",
                 "sparse_bytes" (ONNX COO, INT64 indices), "packed_bytes" (N:M values + index bits,
                 or values + bitmap), "stored" ("dense"|"sparse"), "error" (relative layer-output
                 error on calibration data, reconstruct only), "error_magnitude" (same mask, no update)}],
     "skipped": {node: reason}, "totals": {...}}

The CLI wraps it in ``{"format": "edgec-prune-report", "version": 1, "pruning": ..., "model":
{"before", "after"}, "accuracy": ...}`` (:func:`build_report`).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional

from ..fsutil import write_text_atomic
from ..units import human_bytes

__all__ = ["totals", "build_report", "write_report", "format_summary", "model_numbers"]

_SUM = ("params", "nonzeros", "dense_bytes", "sparse_bytes", "packed_bytes", "stored_bytes")


def totals(layers: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Sums over the pruned layers, and their overall sparsity."""
    out: Dict[str, Any] = {k: int(sum(r.get(k, 0) for r in layers)) for k in _SUM}
    out["layers"] = len(layers)
    out["sparsity"] = 1.0 - out["nonzeros"] / out["params"] if out["params"] else 0.0
    return out


def model_numbers(model: Any, layers: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Parameters, nonzero parameters, dense MACs (batch 1) and initializer bytes of a model.

    With the pruned ``layers`` (report rows), ``macs_nonzero`` counts only the MACs of nonzero
    weights (each layer's MACs times its density): what a sparse kernel could skip, not a speed-up.
    """
    import numpy as np

    from ..backends.onnx_lowering import has_edgec_ops, lower_for_onnx
    from ..inspect import model_stats, node_macs
    from ..ir.core import SparseTensor
    from ..ir.shapes import infer_shapes
    from ..ir.tensor import Tensor
    from ..quant.accuracy import copy_model

    m = copy_model(model)  # MACs are counted on standard ONNX ops with inferred shapes
    if has_edgec_ops(m):
        lower_for_onnx(m)
    try:
        infer_shapes(m)
    except Exception:  # noqa: BLE001 - MACs stay unknown where shapes do
        pass
    dims = {d: 1 for d in _symbolic_dims(m)}
    st = model_stats(m, dims)
    nnz = 0
    for g in model.all_graphs():
        for v in g.initializers.values():
            c = v.const
            if isinstance(c, SparseTensor):
                nnz += int(np.count_nonzero(c.values.numpy()))
            elif isinstance(c, Tensor) and c.dtype.is_float:
                nnz += int(np.count_nonzero(c.numpy()))
            elif isinstance(c, Tensor):
                nnz += c.numel
    out = {"params": st["parameters"]["count"], "nonzeros": nnz, "macs": st["macs"]["total"],
           "macs_complete": st["macs"]["complete"], "param_bytes": st["parameters"]["bytes"]}
    if layers:
        by_weight: Dict[str, int] = {}
        for n in m.graph:
            w = n.input(1)
            if w is not None:
                macs = node_macs(n, dims)[0]
                if macs:
                    by_weight[w.name] = macs
        saved = sum(by_weight.get(r.get("weight", ""), 0) * float(r.get("sparsity", 0.0)) for r in layers)
        out["macs_nonzero"] = int(round(out["macs"] - saved))
    return out


def _symbolic_dims(model: Any) -> List[str]:
    out: List[str] = []
    for v in model.graph.inputs:
        dims = v.shape.dims if v.shape is not None and v.shape.dims is not None else ()
        out.extend(d for d in dims if isinstance(d, str))
    return out


def build_report(pruning: Dict[str, Any], *, before: Dict[str, Any], after: Dict[str, Any],
                 accuracy: Optional[Dict[str, Any]] = None, options: Optional[Dict[str, Any]] = None,
                 pipeline: str = "", warnings: Optional[List[str]] = None) -> Dict[str, Any]:
    """The JSON report of a ``compile --prune`` run."""
    rep = {"format": "edgec-prune-report", "version": 1, "options": options or {}, "pipeline": pipeline,
           "model": {"before": before, "after": after}, "accuracy": accuracy, "pruning": pruning,
           "warnings": list(warnings or [])}
    return _clean(rep)


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and callable(x.item):
        return _clean(x.item())
    return x


def write_report(path: str, report: Dict[str, Any]) -> None:
    """Write the report as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")



def _count(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def format_summary(report: Dict[str, Any]) -> str:
    """A few lines for stderr: params/nonzeros/MACs before and after, bytes, accuracy vs dense."""
    p = report.get("pruning") or {}
    t = p.get("totals") or {}
    b, a = report["model"]["before"], report["model"]["after"]
    mode = p.get("mode") or (report.get("options") or {}).get("mode", "?")
    if "groups" in p:  # prune-channels
        pruned = [g for g in p["groups"] if g.get("channels_after", 0) < g.get("channels_before", 0)]
        removed = sum(g["channels_before"] - g["channels_after"] for g in pruned)
        lines = [f"pruning ({mode}, score {p.get('score')}, {'refit' if p.get('refit') else 'no refit'}): "
                 f"{len(pruned)} channel groups pruned, {removed} channels removed"]
    else:
        lines = [f"pruning ({mode}, score {p.get('score')}, {'reconstructed' if p.get('reconstruct') else 'no reconstruction'}): "
                 f"{t.get('layers', len(p.get('layers') or []))} layers, weight sparsity {100 * t.get('sparsity', 0.0):.1f}%"]
    rows = [("", "dense", "pruned"),
            ("parameters", _count(b["params"]), _count(a["params"])),
            ("nonzero parameters", _count(b["nonzeros"]), _count(a["nonzeros"])),
            ("MACs (dense count, batch 1)", _count(b["macs"]), _count(a["macs"])),
            ("MACs (nonzero weights only)", _count(b["macs"]), _count(a.get("macs_nonzero", a["macs"])))]
    rows.append(("pruned weights: dense / ONNX-sparse / packed", human_bytes(t.get("dense_bytes")),
                 f"{human_bytes(t.get('sparse_bytes'))} / {human_bytes(t.get('packed_bytes'))}"))
    if "file_bytes" in b and "file_bytes" in a:
        rows.append(("output file size", human_bytes(b["file_bytes"]), human_bytes(a["file_bytes"])))
    acc = report.get("accuracy")
    if acc:
        d, q = acc.get("dense") or {}, acc.get("pruned") or {}
        if "top1" in q:
            rows.append(("top-1 %", f"{d.get('top1', float('nan')):.2f}", f"{q['top1']:.2f}"))
        if q.get("cosine_mean") is not None:
            rows.append(("cosine vs dense (mean / min)", "1", f"{q['cosine_mean']:.5f} / {q['cosine_min']:.5f}"))
    w = max(len(r[0]) for r in rows)
    for r in rows:
        lines.append(f"  {r[0]:<{w}}  {r[1]:>10}  {r[2]:>12}")
    sens = p.get("sensitivity")
    if sens and any("sensitivity" in L for L in p.get("layers") or []):
        levels = [f"{x:g}" for x in sens["sparsities"]]
        lines.append(f"sensitivity: relative {sens['measure']} when the layer alone is pruned to each sparsity")
        named = [L for L in p["layers"] if "sensitivity" in L]
        nw = min(48, max(len("layer"), *(len(L["name"]) for L in named)))
        lines.append(f"  {'layer':<{nw}}  " + "  ".join(f"{'@' + s:>9}" for s in levels))
        for L in named:
            lines.append(f"  {L['name'][-nw:]:<{nw}}  " + "  ".join(f"{L['sensitivity'][s]:>9.4f}" for s in levels))
    return "\n".join(lines)
