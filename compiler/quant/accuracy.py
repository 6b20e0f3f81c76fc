"""Accuracy of a quantized model against its float original, and the ``--max-drop`` search.

- :class:`Evaluator` runs the float model once over evaluation data (batch by batch, outputs kept
  in memory up to a cap, else recomputed) and compares any candidate with it: top-1 (when the data
  carry labels), mean/min cosine similarity per sample, SQNR in dB, max abs error, per output;
  the headline numbers (and the search metric) are those of the *primary* output, the one with
  the fewest values per sample (logits, a pooled embedding rather than padded per-token states).
- :class:`Metric` turns those numbers into one *drop* (lower is better) and a bound test:
  ``top1``: points of top-1 lost; ``cosine``: ``1 - mean cosine``; ``sqnr``: the bound is a floor in
  dB (drop = ``-SQNR``, ``--max-drop 30`` means SQNR >= 30 dB).
- :func:`quantize_model` is the driver the CLI and :func:`edgec.quantize` share: quantize
  everything, evaluate, and with ``max_drop`` put the most sensitive layers back to float
  (doubling, then bisecting the count by sensitivity rank) until the bound holds or the time
  budget ends. Every candidate is logged; the outcome is one plain line (``met: ...`` /
  ``not met within ...``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import EdgecError
from ..ir.core import Model
from .collect import ModelRunner
from .data import CalibrationData
from .progress import Progress

__all__ = ["Evaluator", "Comparison", "Metric", "METRICS", "MODES", "QuantConfig", "QuantResult",
           "quantize_model", "copy_model", "segment_text", "replace_model", "primary_output"]

METRICS = ("top1", "cosine", "sqnr")
MODES = ("int8", "uint8", "dynamic", "int8-weights", "int4-weights")
#: Float outputs kept in memory between candidates up to this many bytes (recomputed beyond).
CACHE_BYTES = 256 * 1024 * 1024
EVAL_BATCH = 32


# --- model copies and pipeline text -----------------------------------------------------------------
def copy_model(model: Model) -> Model:
    """An independent copy of ``model`` (through the ONNX exporter and importer; node names kept)."""
    from ..backends.onnx_export import to_proto
    from ..frontend.onnx_import import from_proto

    return from_proto(to_proto(model), model.base_dir, check=False)


def replace_model(target: Model, source: Model) -> None:
    """Make ``target`` hold ``source``'s contents (for APIs that change a model in place)."""
    target.__dict__.update(source.__dict__)
    target.graph.model = target


@dataclass
class QuantConfig:
    """What to quantize and how (the CLI flags, as data)."""

    mode: str = "int8"
    method: str = "minmax"
    per_channel: bool = True
    equalize: bool = False
    bias_correction: bool = False
    #: weight-only format: ``dql`` (opset >= 21) or ``matmulnbits``; None picks by the model's opset.
    weights_format: Optional[str] = None
    #: 7-bit weights (static int8): what onnxruntime needs on x86 CPUs without VNNI.
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EdgecError(f"unknown quantization mode '{self.mode}' (choose one of {', '.join(MODES)})")

    @property
    def static(self) -> bool:
        return self.mode in ("int8", "uint8")


def segment_text(cfg: QuantConfig, exclude: Sequence[str] = ()) -> str:
    """The pipeline text of the quantization segment: ``[equalize-layers,][correct-bias,]quantize{...}``."""
    from ..passmanager.base import format_option_value

    parts: List[str] = []
    opts: List[str] = []
    if cfg.static:
        if cfg.equalize:
            parts.append("equalize-layers")
        if cfg.bias_correction:
            cb = ([] if cfg.per_channel else ["per-channel=false"]) + (["reduce-range=true"] if cfg.reduce_range else [])
            if exclude:  # layers kept float keep their bias
                cb.append("exclude=" + format_option_value(list(exclude)))
            parts.append("correct-bias" + ("{" + ",".join(cb) + "}" if cb else ""))
        if cfg.method != "minmax":
            opts.append(f"method={cfg.method}")
        if not cfg.per_channel:
            opts.append("per-channel=false")
        if cfg.mode == "uint8":
            opts.append("activations=uint8")
        if cfg.reduce_range:
            opts.append("reduce-range=true")
        name = "quantize"
    elif cfg.mode == "dynamic":
        if not cfg.per_channel:
            opts.append("per-channel=false")
        name = "quantize-dynamic"
    else:
        opts.append(f"bits={4 if cfg.mode == 'int4-weights' else 8}")
        if cfg.weights_format:
            opts.append(f"format={cfg.weights_format}")
        name = "quantize-weights"
    if exclude:
        opts.append("exclude=" + format_option_value(list(exclude)))
    parts.append(name + ("{" + ",".join(opts) + "}" if opts else ""))
    return ",".join(parts)


# --- comparing outputs ------------------------------------------------------------------------------
@dataclass
class _Stats:
    """Streaming error statistics of one output (or several flattened side by side)."""

    cos: List[float] = field(default_factory=list)
    signal: float = 0.0
    noise: float = 0.0
    max_abs: float = 0.0

    def update(self, r: np.ndarray, q: np.ndarray) -> None:
        d = q - r
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum(d * d))
        if d.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(d))))
        nr, nq = np.linalg.norm(r, axis=1), np.linalg.norm(q, axis=1)
        dot = np.sum(r * q, axis=1)
        both_zero = (nr == 0) & (nq == 0)
        cos = np.where(both_zero, 1.0, dot / np.maximum(nr * nq, 1e-300))
        self.cos.extend(float(c) for c in cos)

    def result(self) -> Dict[str, Any]:
        return {"cosine_mean": float(np.mean(self.cos)) if self.cos else None,
                "cosine_min": float(np.min(self.cos)) if self.cos else None,
                "sqnr_db": _sqnr(self.signal, self.noise), "max_abs_error": self.max_abs}


def primary_output(ref: Sequence[np.ndarray], n: int) -> int:
    """Index of the output the headline metrics use: the one with the fewest values per sample
    (the logits, the pooled sentence embedding: not a padded per-token tensor); ties: the first."""
    sizes = [int(np.size(a)) // max(n, 1) for a in ref]
    return int(np.argmin(sizes)) if sizes else 0


@dataclass
class Comparison:
    """Streaming comparison of candidate outputs with float outputs, per output.

    The headline metrics (and top-1) are those of the ``primary`` output; with several outputs
    ``result()['outputs']`` has every output's own. Averaging over all outputs at once misleads:
    a sentence encoder's padded ``last_hidden_state`` drags the cosine of its pooled embedding
    from 0.99 to 0.89. ``names`` label the outputs (default ``output0``...)."""

    names: Optional[List[str]] = None
    primary: Optional[int] = None
    samples: int = 0
    correct: int = 0
    labelled: int = 0
    per_output: List[_Stats] = field(default_factory=list)

    def update(self, ref: Sequence[np.ndarray], got: Sequence[np.ndarray], labels: Optional[np.ndarray]) -> None:
        n = int(ref[0].shape[0]) if ref and np.ndim(ref[0]) else 1
        if self.primary is None:
            self.primary = primary_output(ref, n)
        if not self.per_output:
            self.per_output = [_Stats() for _ in ref]
        for st, a, b in zip(self.per_output, ref, got):
            st.update(np.asarray(a, np.float64).reshape(n, -1), np.asarray(b, np.float64).reshape(n, -1))
        if labels is not None:
            pred = _predictions(got[self.primary], n)
            self.correct += int(np.sum(pred == np.asarray(labels).reshape(-1)[:len(pred)]))
            self.labelled += len(pred)
        self.samples += n

    def result(self) -> Dict[str, Any]:
        k = self.primary or 0
        head = self.per_output[k].result() if self.per_output else _Stats().result()
        out: Dict[str, Any] = {"samples": self.samples, **head}
        if self.labelled:
            out["top1"] = 100.0 * self.correct / self.labelled
        if len(self.per_output) > 1:
            names = self.names or [f"output{i}" for i in range(len(self.per_output))]
            out["primary_output"] = names[k]
            out["outputs"] = {nm: st.result() for nm, st in zip(names, self.per_output)}
        return out


def _sqnr(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return math.inf
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _predictions(logits: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(logits).reshape(n, -1) if np.ndim(logits) != 2 else np.asarray(logits)
    return np.argmax(a, axis=-1)


def _batch_labels(labels: Optional[np.ndarray], start: int, n: int) -> Optional[np.ndarray]:
    return None if labels is None else labels[start:start + n]


# --- metrics ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One accuracy metric as a drop (lower is better) with a bound."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in METRICS:
            raise EdgecError(f"unknown metric '{self.name}' (choose one of {', '.join(METRICS)})")

    def drop(self, float_metrics: Dict[str, Any], metrics: Dict[str, Any]) -> float:
        """The drop of ``metrics`` relative to the float model's (top-1 points; 1-cos; -SQNR dB)."""
        if self.name == "top1":
            if "top1" not in metrics:
                raise EdgecError("metric top1 needs labels in the evaluation data (or use --metric cosine)")
            return float(float_metrics["top1"] - metrics["top1"])
        if self.name == "cosine":
            return float(1.0 - (metrics["cosine_mean"] if metrics["cosine_mean"] is not None else 0.0))
        return float(-metrics["sqnr_db"])

    def bound(self, max_drop: float) -> float:
        """The largest acceptable drop for ``--max-drop max_drop``."""
        return -float(max_drop) if self.name == "sqnr" else float(max_drop)

    def describe(self, drop: float, max_drop: float, ok: Optional[bool] = None) -> str:
        """``drop 0.17 <= 0.30`` / ``SQNR 31.2 dB >= 30.0 dB``."""
        if ok is None:
            ok = drop <= self.bound(max_drop)
        if self.name == "sqnr":
            return f"SQNR {-drop:.1f} dB {'>=' if ok else '<'} {max_drop:.1f} dB"
        return f"drop {_num(drop)} {'<=' if ok else '>'} {_num(max_drop)}"


def _num(x: float) -> str:
    return f"{x:.2f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}"


# --- evaluation -------------------------------------------------------------------------------------
class Evaluator:
    """Compares candidates with the float model on evaluation data, batch by batch."""

    def __init__(self, float_model: Model, data: CalibrationData, *, batch_size: int = EVAL_BATCH,
                 progress: bool = True, cache_bytes: int = CACHE_BYTES) -> None:
        self.data = data
        self.batch_size = batch_size
        self.progress = progress
        self.labels = data.labels()
        if self.labels is not None:
            self.labels = np.asarray(self.labels).reshape(-1)
        self.float_model = float_model
        self.outputs = [v.name for v in float_model.graph.outputs]
        self._float_runner: Optional[ModelRunner] = None
        self._cache: Optional[List[List[np.ndarray]]] = None
        self._cache_bytes = cache_bytes
        self.primary = 0
        self.float_metrics = self._float_pass()

    def _runner(self) -> ModelRunner:
        if self._float_runner is None:
            self._float_runner = ModelRunner(self.float_model, self.outputs, threads=0)
        return self._float_runner

    def _float_pass(self) -> Dict[str, Any]:
        cache: Optional[List[List[np.ndarray]]] = []
        size, correct, seen = 0, 0, 0
        with Progress(self.data.num_samples, "float reference", enabled=self.progress) as bar:
            for n, feeds in self.data.counted_batches(self.batch_size):
                outs = self._runner().run(feeds)
                ref = [outs[k] for k in self.outputs]
                if not seen:
                    self.primary = primary_output(ref, n)
                lab = _batch_labels(self.labels, seen, n)
                if lab is not None:
                    correct += int(np.sum(_predictions(ref[self.primary], n) == lab[:n]))
                seen += n
                if cache is not None:
                    size += sum(a.nbytes for a in ref)
                    if size <= self._cache_bytes:
                        cache.append(ref)
                    else:
                        cache = None
                bar.update(n)
        self._cache = cache
        out: Dict[str, Any] = {"samples": seen}
        if self.labels is not None and seen:
            out["top1"] = 100.0 * correct / seen
        if len(self.outputs) > 1:
            out["primary_output"] = self.outputs[self.primary]
        return out

    def float_batches(self, extra: Sequence[str] = ()) -> Any:
        """``(n, feeds, labels, float outputs, float extra values)`` per batch; ``extra`` forces a rerun."""
        seen = 0
        runner = self._runner() if not extra else ModelRunner(self.float_model, list(self.outputs) + list(extra),
                                                               threads=0)
        try:
            for b, (n, feeds) in enumerate(self.data.counted_batches(self.batch_size)):
                if self._cache is not None and not extra:
                    ref, more = self._cache[b], []
                else:
                    outs = runner.run(feeds)
                    ref, more = [outs[k] for k in self.outputs], [outs[k] for k in extra]
                yield n, feeds, _batch_labels(self.labels, seen, n), ref, more
                seen += n
        finally:
            if extra:
                runner.close()

    def evaluate(self, model: Model, *, desc: str = "evaluating") -> Dict[str, Any]:
        """Metrics of ``model`` against the float model (keys: top1?, cosine_mean/min, sqnr_db, max_abs_error)."""
        runner = ModelRunner(model, self.outputs, threads=0)
        cmp = Comparison(names=list(self.outputs), primary=self.primary)
        try:
            with Progress(self.data.num_samples, desc, enabled=self.progress) as bar:
                for n, feeds, lab, ref, _ in self.float_batches():
                    outs = runner.run(feeds)
                    cmp.update(ref, [outs[k] for k in self.outputs], lab)
                    bar.update(n)
        finally:
            runner.close()
        return cmp.result()

    def close(self) -> None:
        if self._float_runner is not None:
            self._float_runner.close()
            self._float_runner = None


# --- the driver -------------------------------------------------------------------------------------
@dataclass
class QuantResult:
    """What :func:`quantize_model` produced: the model to write and the report pieces."""

    model: Model
    float_model: Model
    quant_report: Dict[str, Any]
    float_layers: List[str]
    float_metrics: Optional[Dict[str, Any]] = None
    metrics: Optional[Dict[str, Any]] = None
    metric: Optional[str] = None
    sensitivity: Optional[Dict[str, Any]] = None
    search: Optional[Dict[str, Any]] = None
    warnings: List[str] = field(default_factory=list)
    pipeline: str = ""


Runner = Callable[[Model, str, Dict[str, Any], bool], Dict[str, Any]]


def default_runner(model: Model, text: str, resources: Dict[str, Any], first: bool) -> Dict[str, Any]:
    """Run pipeline ``text`` on ``model`` in place; returns ``{'reports': ..., 'warnings': ...}``."""
    from ..passmanager import PassContext, PassManager, PassManagerOptions, parse_pipeline

    ctx = PassContext(resources=dict(resources))
    PassManager.with_options(parse_pipeline(text), PassManagerOptions(verify_each=first), ctx=ctx).run(model)
    return {"reports": ctx.reports, "warnings": list(ctx.warnings)}


def layer_names(report: Dict[str, Any]) -> List[str]:
    """Names of the nodes a quantization report lists (in report order, unique, non-empty)."""
    return list(dict.fromkeys(str(e.get("name")) for e in report.get("nodes", []) if e.get("name")))


def quantize_model(model: Model, cfg: QuantConfig, *, calibration: Optional[CalibrationData] = None,
                   eval_data: Optional[CalibrationData] = None, max_drop: Optional[float] = None,
                   metric: Optional[str] = None, time_budget: float = 300.0, sensitivity: bool = False,
                   resources: Optional[Dict[str, Any]] = None, runner: Optional[Runner] = None,
                   progress: bool = True, log: Optional[Callable[[str], None]] = None) -> QuantResult:
    """Quantize ``model`` (changed in place for the first, all-quantized candidate) and evaluate it.

    With ``max_drop`` and a failing first candidate, search for the fewest float layers meeting the
    bound (see the module docstring); ``result.model`` is then the chosen candidate (may be a new
    object). ``eval_data`` defaults to ``calibration``. Never runs past ``time_budget`` seconds of
    search, except to finish the candidate under way.
    """
    from .sensitivity import layer_sensitivity

    start = time.perf_counter()
    deadline = start + float(time_budget)
    run = runner or default_runner
    say = log or (lambda s: None)
    res = dict(resources or {})
    if calibration is not None:
        res["calibration"] = calibration
    if cfg.static and not cfg.bias_correction and (max_drop is not None or sensitivity):
        from ..passes.quantize import STATS_CACHE

        # every candidate quantizes a copy of the same float model on the same data: one
        # calibration pass (correct-bias changes the model per candidate, so not then)
        res.setdefault(STATS_CACHE, {})
    if cfg.static and calibration is None:
        raise EdgecError(f"--quantize {cfg.mode} needs calibration data: pass --calibration FILE "
                         f"(or --calibration synthetic for a smoke test)")
    if cfg.mode.endswith("-weights") and cfg.weights_format is None:
        cfg = dataclasses.replace(cfg, weights_format="dql" if (model.opset("") or 0) >= 21 else "matmulnbits")
    float_model = copy_model(model)
    text = segment_text(cfg)
    got = run(model, text, res, True)
    qrep = dict(got["reports"].get("quantization") or {"nodes": []})
    result = QuantResult(model=model, float_model=float_model, quant_report=qrep, float_layers=[],
                         warnings=list(got["warnings"]), pipeline=text)
    data = eval_data if eval_data is not None else calibration
    if data is None:
        if max_drop is not None or sensitivity:
            raise EdgecError("--max-drop and sensitivity need data to evaluate on: pass --eval FILE or --calibration FILE")
        return result
    has_labels = data.labels() is not None
    metric_name = metric or ("top1" if has_labels else "cosine")
    if metric_name == "top1" and not has_labels:
        raise EdgecError("--metric top1 needs labels in the evaluation data (an extra .npz key); use --metric cosine")
    met = Metric(metric_name)
    result.metric = metric_name
    ev = Evaluator(float_model, data, progress=progress)
    try:
        result.float_metrics = ev.float_metrics
        result.metrics = ev.evaluate(model, desc="evaluating quantized")
        layers = layer_names(qrep)

        def build(exclude: Sequence[str]) -> Tuple[Model, Dict[str, Any]]:
            cand = copy_model(float_model)
            out = run(cand, segment_text(cfg, exclude), res, False)
            return cand, out["reports"].get("quantization") or {"nodes": []}

        first_drop = met.drop(ev.float_metrics, result.metrics)
        need_search = max_drop is not None and first_drop > met.bound(max_drop)
        if layers and (sensitivity or (need_search and time.perf_counter() < deadline)):
            result.sensitivity = layer_sensitivity(float_model, layers, lambda ex: build(ex)[0], ev, metric=met,
                                                   deadline=deadline if max_drop is not None else None,
                                                   progress=progress)
        if max_drop is not None:
            result.search = _search(result, met, float(max_drop), first_drop, layers, build, ev, deadline,
                                    start, float(time_budget), progress)
            say(result.search["summary"])
    finally:
        ev.close()
    return result


def _search(result: QuantResult, met: Metric, max_drop: float, first_drop: float, layers: List[str],
            build: Callable[[Sequence[str]], Tuple[Model, Dict[str, Any]]], ev: Evaluator, deadline: float,
            start: float, budget: float, progress: bool) -> Dict[str, Any]:
    """Doubling then bisection over the number of float layers, by sensitivity rank."""
    bound = met.bound(max_drop)
    ranked: List[str] = []
    if result.sensitivity:
        ranked = [r["name"] for r in result.sensitivity["ranking"]]
    ranked += [n for n in layers if n not in ranked]
    total = len(ranked)
    cands: List[Dict[str, Any]] = [{"float_layers": 0, "names": [], "drop": first_drop, "ok": first_drop <= bound,
                                    "metrics": result.metrics, "seconds": round(time.perf_counter() - start, 3)}]
    best = {"k": 0, "model": result.model, "report": result.quant_report, "metrics": result.metrics,
            "drop": first_drop, "ok": first_drop <= bound}
    timed_out = False

    def better(ok: bool, drop: float, k: int) -> bool:
        if ok != best["ok"]:
            return ok
        return k < best["k"] if ok else (drop, k) < (best["drop"], best["k"])

    def attempt(k: int) -> Optional[bool]:
        nonlocal timed_out
        if time.perf_counter() >= deadline:
            timed_out = True
            return None
        t0 = time.perf_counter()
        names = ranked[:k]
        model, rep = build(names)
        metrics = ev.evaluate(model, desc=f"candidate with {k} float layer(s)")
        drop = met.drop(ev.float_metrics, metrics)
        ok = drop <= bound
        cands.append({"float_layers": k, "names": names, "drop": drop, "ok": ok, "metrics": metrics,
                      "seconds": round(time.perf_counter() - t0, 3)})
        if better(ok, drop, k):
            best.update(k=k, model=model, report=rep, metrics=metrics, drop=drop, ok=ok)
        return ok

    lo, hi = 0, None  # lo fails; hi (when set) meets the bound
    if not cands[0]["ok"]:
        k = 1
        while k <= total:
            ok = attempt(k)
            if ok is None:
                break
            if ok:
                hi = k
                break
            lo = k
            if k == total:
                break
            k = min(2 * k, total)
        while hi is not None and hi - lo > 1 and not timed_out:
            mid = (lo + hi) // 2
            ok = attempt(mid)
            if ok is None:
                break
            if ok:
                hi = mid
            else:
                lo = mid
    else:
        hi = 0
    elapsed = time.perf_counter() - start
    k = int(best["k"])
    if best["ok"]:
        summary = f"met: {met.describe(best['drop'], max_drop, True)} with {k} of {total} layers in float"
    elif timed_out:
        summary = (f"not met within {_secs(budget)} s: best {met.describe(best['drop'], max_drop, False)} "
                   f"with {k} layers in float")
    else:
        summary = (f"not met: best {met.describe(best['drop'], max_drop, False)} with {k} of {total} layers in float "
                   f"(every layer tried)")
    if best["ok"] and k == total and total:
        result.warnings.append("every quantizable layer had to stay float to meet --max-drop: the model is not quantized")
    result.model = best["model"]
    result.quant_report = dict(best["report"])
    result.metrics = best["metrics"]
    result.float_layers = list(ranked[:k])
    return {"metric": met.name, "max_drop": max_drop, "bound": bound, "met": bool(best["ok"]), "summary": summary,
            "float_layers": list(ranked[:k]), "layers": total, "time_budget_s": budget,
            "elapsed_s": round(elapsed, 3), "timed_out": timed_out, "ranking_used": ranked, "candidates": cands}


def _secs(x: float) -> str:
    return f"{x:g}"
