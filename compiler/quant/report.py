"""The quantization report: one JSON document (``--quant-report``) and a concise stderr table.

Format (``"format": "edgec-quant-report"``, ``"version": 1``)::

    mode, pipeline, options            what ran (the quantization segment, the CLI options)
    calibration, eval                  data descriptions (source, samples, labels, synthetic)
    metric                             top1 | cosine | sqnr (the search metric)
    accuracy.float                     float model on the eval data (top1 when labelled)
    accuracy.quantized                 top1?, cosine_mean, cosine_min, sqnr_db, max_abs_error, samples: of the
                                       primary output (fewest values per sample); with several outputs also
                                       primary_output and outputs.<name>.{cosine_mean, cosine_min, sqnr_db, max_abs_error}
    accuracy.drop                      the metric's drop (top-1 points, 1 - cosine, or -SQNR dB)
    size                               weight_bytes_float/quantized, weight_ratio, file_bytes_float/quantized, file_ratio
    layers                             per quantized node, from the quantize pass report (scales, weight bytes, ...),
                                       plus "float": true for layers put back to float and sensitivity fields
    float_layers                       names of the layers kept float by the search
    sensitivity                        per-layer ranking (see edgec.quant.sensitivity) or null
    search                             --max-drop: bound, met, summary line, every candidate with its metrics, or null
    warnings                           everything the passes and the driver warned about

Infinite SQNR values (identical outputs) are written as the string ``"inf"`` (JSON has no inf).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional

from ..fsutil import write_text_atomic
from ..units import human_bytes

__all__ = ["build_report", "format_summary", "write_report", "FORMAT", "VERSION"]

FORMAT = "edgec-quant-report"
VERSION = 1


def _clean(x: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, inf/nan to strings."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "tolist"):
        return _clean(x.tolist())
    return str(x)


def build_report(result: Any, *, mode: str, options: Dict[str, Any], calibration: Any = None, eval_data: Any = None,
                 weight_bytes: Optional[Dict[str, int]] = None, file_bytes: Optional[Dict[str, int]] = None,
                 pipeline: str = "", warnings: Optional[List[str]] = None) -> Dict[str, Any]:
    """The report dict of a :class:`edgec.quant.accuracy.QuantResult`."""
    from .accuracy import Metric

    def data_info(d: Any) -> Optional[Dict[str, Any]]:
        if d is None:
            return None
        return {"source": d.describe(), "samples": int(d.num_samples), "labels": d.labels() is not None,
                "synthetic": bool(getattr(d, "synthetic", False))}

    sens = {r["name"]: r for r in (result.sensitivity or {}).get("ranking", [])}
    layers: List[Dict[str, Any]] = []
    for e in result.quant_report.get("nodes", []):
        row = dict(e)
        if row.get("name") in sens:
            s = sens[row["name"]]
            row.update({"sensitivity_rank": s["rank"], "sensitivity_drop": s["drop"],
                        "layer_sqnr_db": s["layer_sqnr_db"], "output_sqnr_db": s["output_sqnr_db"]})
        layers.append(row)
    for name in result.quant_report.get("kept_float_for_speed", []):  # quantize rule 9: int8 would be slower
        layers.append({"name": name, "float_for_speed": True})
    for name in result.float_layers:
        row = {"name": name, "float": True}
        if name in sens:
            row.update({"sensitivity_rank": sens[name]["rank"], "sensitivity_drop": sens[name]["drop"],
                        "layer_sqnr_db": sens[name]["layer_sqnr_db"]})
        layers.append(row)
    accuracy = None
    if result.metrics is not None:
        drop = Metric(result.metric).drop(result.float_metrics, result.metrics) if result.metric else None
        accuracy = {"float": result.float_metrics, "quantized": result.metrics, "drop": drop}
    size: Dict[str, Any] = {}
    if weight_bytes:
        f, q = weight_bytes.get("float", 0), weight_bytes.get("quantized", 0)
        size.update({"weight_bytes_float": f, "weight_bytes_quantized": q, "weight_ratio": (q / f) if f else None})
    if file_bytes:
        f, q = file_bytes.get("float", 0), file_bytes.get("quantized", 0)
        size.update({"file_bytes_float": f, "file_bytes_quantized": q, "file_ratio": (q / f) if f else None})
    rep = {
        "format": FORMAT, "version": VERSION, "mode": mode, "pipeline": pipeline or result.pipeline,
        "options": options, "calibration": data_info(calibration),
        "eval": data_info(eval_data if eval_data is not None else calibration) if result.metrics is not None else None,
        "metric": result.metric, "accuracy": accuracy, "size": size, "layers": layers,
        "float_layers": list(result.float_layers), "sensitivity": result.sensitivity, "search": result.search,
        "quantize_totals": result.quant_report.get("totals"),
        "warnings": list(dict.fromkeys(list(warnings or []) + list(result.warnings)
                                       + list(result.quant_report.get("warnings", []) or []))),
    }
    return _clean(rep)


def write_report(path: str, report: Dict[str, Any]) -> None:
    """Write the report as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(report, indent=2, sort_keys=False) + "\n")


def _f(x: Any, spec: str = ".4f") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return format(x, spec)



def format_summary(report: Dict[str, Any], *, top: int = 5) -> str:
    """A few lines for stderr: accuracy float vs quantized, sizes, most sensitive layers, search outcome."""
    lines: List[str] = []
    acc = report.get("accuracy")
    if acc:
        fq, q = acc["float"] or {}, acc["quantized"] or {}
        on = f", output {q['primary_output']}" if q.get("primary_output") else ""
        lines.append(f"quantization ({report['mode']}) on {q.get('samples', '?')} eval samples, metric {report['metric']}{on}:")
        rows = []
        if "top1" in q:
            rows.append(("top-1 %", _f(fq.get("top1"), ".2f"), _f(q.get("top1"), ".2f")))
        rows.append(("cosine mean / min", "1", f"{_f(q.get('cosine_mean'))} / {_f(q.get('cosine_min'))}"))
        rows.append(("SQNR dB", "inf", _f(q.get("sqnr_db"), ".1f")))
        rows.append(("max abs error", "0", _f(q.get("max_abs_error"), ".4g")))
        for name, o in (q.get("outputs") or {}).items():
            if name != q.get("primary_output"):
                rows.append((f"{name}: cosine / SQNR", "1 / inf",
                             f"{_f(o.get('cosine_mean'))} / {_f(o.get('sqnr_db'), '.1f')} dB"))
        size = report.get("size") or {}
        if "weight_bytes_float" in size:
            rows.append(("weight bytes", human_bytes(size["weight_bytes_float"]),
                         f"{human_bytes(size['weight_bytes_quantized'])} ({_f(size.get('weight_ratio'), '.1%')})"))
        if "file_bytes_float" in size:
            rows.append(("file size", human_bytes(size["file_bytes_float"]),
                         f"{human_bytes(size['file_bytes_quantized'])} ({_f(size.get('file_ratio'), '.1%')})"))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len("float"), *(len(r[1]) for r in rows))
        lines.append(f"  {'':<{w0}}  {'float':>{w1}}  quantized")
        lines.extend(f"  {a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows)
    else:
        size = report.get("size") or {}
        if "file_bytes_float" in size:
            lines.append(f"quantization ({report['mode']}): file {human_bytes(size['file_bytes_float'])} -> "
                         f"{human_bytes(size['file_bytes_quantized'])} ({_f(size.get('file_ratio'), '.1%')}); "
                         f"no evaluation data (pass --eval or --calibration for accuracy)")
    sens = report.get("sensitivity")
    if sens and sens.get("ranking"):
        part = "" if sens.get("complete") else f" (partial: {sens['measured']} of {sens['layers']} layers)"
        lines.append(f"most sensitive layers{part}:")
        for r in sens["ranking"][:top]:
            lines.append(f"  {r['rank']:>3}. {r['name']}  drop {_f(r['drop'], '.4g')}  "
                         f"layer SQNR {_f(r['layer_sqnr_db'], '.1f')} dB  output SQNR {_f(r['output_sqnr_db'], '.1f')} dB")
    search = report.get("search")
    if search:
        lines.append(f"max-drop search ({len(search['candidates'])} candidates, {search['elapsed_s']:.1f} s): "
                     f"{search['summary']}")
    return "\n".join(lines)
