"""Per-layer quantization sensitivity: quantize one layer at a time and measure what it costs.

For every quantized layer L, a candidate model is built from the float model with only L quantized
(the quantize pass with every other layer in ``exclude``). Over the evaluation data, batch by
batch, each candidate is compared with the float model at two places:

- **layer SQNR**: L's output (after its output Q/DQ when there is one; past a fused Relu/Clip)
  against the float model's same tensor: how much error L itself makes;
- **output effect**: the final outputs against the float outputs, as the search metric's drop
  (top-1 points, 1 - cosine, or -SQNR) plus output SQNR and mean cosine.

Layers are ranked most sensitive first: largest drop, then lowest output SQNR. Candidates are
processed in groups (``group_size`` onnxruntime sessions alive at once), each group streaming the
data once with one float run per batch; a deadline stops the work early and the ranking then
holds the layers measured so far (``complete: false``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..ir.core import Model, Value
from .collect import ModelRunner
from .progress import Progress

__all__ = ["layer_sensitivity", "layer_output", "quantized_view"]

GROUP_SIZE = 8


def _value(model: Model, name: str) -> Optional[Value]:
    for v in model.graph.values():
        if v.name == name:
            return v
    return None


def layer_output(model: Model, node_name: str) -> Optional[str]:
    """The float model's tensor that stands for node ``node_name``'s output (past a sole Relu/Clip)."""
    node = next((n for n in model.graph if n.name == node_name), None)
    if node is None or node.output(0) is None:
        return None
    v = node.output(0)
    users = v.consumers()
    if len(users) == 1 and not v.is_graph_output() and users[0].op_type in ("Relu", "Clip") \
            and users[0].domain == "" and users[0].output(0) is not None:
        v = users[0].output(0)
    return v.name


def quantized_view(model: Model, name: str) -> Optional[str]:
    """In a quantized model: the DequantizeLinear output that follows tensor ``name``'s QuantizeLinear,
    else ``name`` itself when it exists, else None."""
    v = _value(model, name)
    if v is None:
        return None
    for node, _ in v.uses():
        if node.op_type == "QuantizeLinear" and node.output(0) is not None:
            for dq, _ in node.output(0).uses():
                if dq.op_type == "DequantizeLinear" and dq.output(0) is not None:
                    return dq.output(0).name
    return name


def _layer_sqnr(signal: float, noise: float) -> Optional[float]:
    if noise <= 0.0:
        return float("inf")
    if signal <= 0.0:
        return None
    return float(10.0 * np.log10(signal / noise))


def layer_sensitivity(float_model: Model, layers: Sequence[str], build: Callable[[Sequence[str]], Model],
                      evaluator: Any, *, metric: Any, deadline: Optional[float] = None,
                      group_size: int = GROUP_SIZE, progress: bool = True) -> Dict[str, Any]:
    """Rank ``layers`` (node names) by the cost of quantizing each one alone.

    ``build(exclude)`` returns the float model quantized with the node names in ``exclude`` kept
    float; ``evaluator`` is an :class:`edgec.quant.accuracy.Evaluator` over the evaluation data;
    ``metric`` an :class:`edgec.quant.accuracy.Metric`. Returns ``{'metric', 'ranking': [rows,
    most sensitive first], 'complete', 'seconds', 'samples'}``; each row has ``name``, ``drop``,
    ``output_sqnr_db``, ``cosine_mean``, ``layer_sqnr_db`` (None when the tensor is not visible),
    ``samples`` (and ``top1`` with labels).
    """
    from .accuracy import Comparison

    t0 = time.perf_counter()
    names = list(layers)
    rows: List[Dict[str, Any]] = []
    complete = True

    def late() -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    with Progress(len(names), "sensitivity", unit="layers", enabled=progress) as bar:
        for g0 in range(0, len(names), max(1, group_size)):
            if late():
                complete = False
                break
            group: List[Dict[str, Any]] = []
            for name in names[g0:g0 + group_size]:
                if late():
                    complete = False
                    break
                cand = build([n for n in names if n != name])
                fname = layer_output(float_model, name)
                qname = quantized_view(cand, fname) if fname is not None else None
                outs = list(evaluator.outputs) + ([qname] if qname is not None else [])
                group.append({"name": name, "float_tensor": fname if qname is not None else None,
                              "tensor": qname, "runner": ModelRunner(cand, outs, threads=0),
                              "cmp": Comparison(), "signal": 0.0, "noise": 0.0})
            if not group:
                break
            extra = list(dict.fromkeys(c["float_tensor"] for c in group if c["float_tensor"] is not None))
            try:
                for n, feeds, lab, ref, more in evaluator.float_batches(extra):
                    fvals = dict(zip(extra, more))
                    for c in group:
                        got = c["runner"].run(feeds)
                        c["cmp"].update(ref, [got[k] for k in evaluator.outputs], lab)
                        if c["tensor"] is not None:
                            r = np.asarray(fvals[c["float_tensor"]], np.float64)
                            d = np.asarray(got[c["tensor"]], np.float64) - r
                            c["signal"] += float(np.sum(r * r))
                            c["noise"] += float(np.sum(d * d))
                    if late():
                        complete = False
                        break
            finally:
                for c in group:
                    c["runner"].close()
            for c in group:
                m = c["cmp"].result()
                row = {"name": c["name"], "drop": metric.drop(evaluator.float_metrics, m),
                       "output_sqnr_db": m["sqnr_db"], "cosine_mean": m["cosine_mean"],
                       "layer_sqnr_db": _layer_sqnr(c["signal"], c["noise"]) if c["tensor"] is not None else None,
                       "layer_tensor": c["float_tensor"], "samples": m["samples"]}
                if "top1" in m:
                    row["top1"] = m["top1"]
                rows.append(row)
            bar.update(len(group))
    rows.sort(key=lambda r: (-r["drop"], r["output_sqnr_db"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return {"metric": metric.name, "ranking": rows, "complete": complete and len(rows) == len(names),
            "measured": len(rows), "layers": len(names), "seconds": round(time.perf_counter() - t0, 3)}
