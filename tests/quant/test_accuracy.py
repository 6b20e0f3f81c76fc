"""edgec.quant.accuracy: metrics, the quantization segment text, and the --max-drop search (Python API)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import edgec
from edgec.api import quantize
from edgec.errors import EdgecError
from edgec.quant.accuracy import Comparison, Metric, QuantConfig, segment_text
from zoo.digits import digits_cnn, write_digits_npz


def test_comparison_identical_and_noisy() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    c = Comparison()
    c.update([a], [a], np.array([3, 3, 0]))
    r = c.result()
    assert r["sqnr_db"] == math.inf and r["cosine_mean"] == pytest.approx(1.0) and r["max_abs_error"] == 0
    assert r["top1"] == pytest.approx(200 / 3)
    c = Comparison()
    c.update([a], [a + 0.1 * a.max()], None)
    r = c.result()
    assert 0 < r["sqnr_db"] < 30 and "top1" not in r and r["max_abs_error"] == pytest.approx(1.1, rel=1e-5)


def test_comparison_per_output_headline_is_the_smallest_output() -> None:
    """A sentence encoder: a noisy padded [N, S, H] output must not drag the pooled one's numbers."""
    rng = np.random.default_rng(0)
    tokens, pooled = rng.standard_normal((4, 8, 6)), rng.standard_normal((4, 6))
    c = Comparison(names=["last_hidden_state", "sentence_embedding"])
    c.update([tokens, pooled], [tokens + rng.standard_normal(tokens.shape), pooled], np.array([0, 1, 2, 3]))
    r = c.result()
    assert r["primary_output"] == "sentence_embedding"
    assert r["cosine_mean"] == pytest.approx(1.0) and r["sqnr_db"] == math.inf
    assert r["top1"] == pytest.approx(100.0 * np.mean(pooled.argmax(1) == np.arange(4)))
    assert r["outputs"]["last_hidden_state"]["cosine_mean"] < 0.9
    assert r["outputs"]["sentence_embedding"]["cosine_mean"] == pytest.approx(1.0)
    from edgec.quant.report import format_summary

    text = format_summary({"mode": "int8", "metric": "cosine", "accuracy": {"float": {}, "quantized": r}})
    assert "output sentence_embedding" in text and "last_hidden_state: cosine / SQNR" in text


def test_metric_drop_and_bounds() -> None:
    f, q = {"top1": 98.0}, {"top1": 97.5, "cosine_mean": 0.99, "sqnr_db": 25.0}
    assert Metric("top1").drop(f, q) == pytest.approx(0.5)
    assert Metric("cosine").drop(f, q) == pytest.approx(0.01)
    sq = Metric("sqnr")
    assert sq.drop(f, q) == -25.0 and sq.bound(30) == -30.0
    assert sq.describe(-25.0, 30.0) == "SQNR 25.0 dB < 30.0 dB"
    assert Metric("top1").describe(0.17, 0.3) == "drop 0.17 <= 0.30"
    with pytest.raises(EdgecError):
        Metric("top5")
    with pytest.raises(EdgecError):
        Metric("top1").drop(f, {"cosine_mean": 1.0})


def test_segment_text() -> None:
    assert segment_text(QuantConfig()) == "quantize"
    cfg = QuantConfig(mode="uint8", method="entropy", per_channel=False, equalize=True, bias_correction=True)
    assert segment_text(cfg, ["a/b", "c"]) == ("equalize-layers,correct-bias{per-channel=false,exclude=a/b,c},"
                                               "quantize{method=entropy,per-channel=false,activations=uint8,exclude=a/b,c}")
    assert segment_text(cfg) == ("equalize-layers,correct-bias{per-channel=false},"
                                 "quantize{method=entropy,per-channel=false,activations=uint8}")
    assert segment_text(QuantConfig(mode="dynamic")) == "quantize-dynamic"
    assert segment_text(QuantConfig(mode="int4-weights", weights_format="matmulnbits")) == \
        "quantize-weights{bits=4,format=matmulnbits}"
    with pytest.raises(EdgecError):
        QuantConfig(mode="int2")


@pytest.fixture(scope="module")
def files(tmp_path_factory: Any) -> Any:
    d = tmp_path_factory.mktemp("acc")
    onnx.save(digits_cnn(), str(d / "m.onnx"))
    return d / "m.onnx", write_digits_npz(d / "cal.npz", "calibration")


def test_api_quantize_in_place(files: Any, tmp_path: Path) -> None:
    path, cal = files
    model = edgec.load(str(path))
    rep = quantize(model, str(cal), opt_level=2, metric="cosine", max_drop=0.5)
    assert rep["search"]["met"] and rep["metric"] == "cosine"
    assert any(n.op_type == "QuantizeLinear" for n in model.graph)
    edgec.save(model, str(tmp_path / "q.onnx"))
    assert (tmp_path / "q.onnx").stat().st_size < 0.4 * path.stat().st_size


def test_search_bisects_and_terminates(files: Any) -> None:
    """An impossible bound with a real budget: every count is tried at most once, then 'not met'."""
    path, cal = files
    model = edgec.load(str(path))
    t0 = time.perf_counter()
    rep = quantize(model, str(cal), opt_level=2, max_drop=-50, time_budget=60)
    s = rep["search"]
    assert s["met"] is False and not s["timed_out"] and s["summary"].startswith("not met: best drop")
    ks = [c["float_layers"] for c in s["candidates"]]
    assert ks == [0, 1, 2, 4] and len(set(ks)) == len(ks)
    assert time.perf_counter() - t0 < 30
    assert len(rep["sensitivity"]["ranking"]) == 4


def test_search_calibrates_once(files: Any, monkeypatch: Any) -> None:
    """Candidates quantize copies of one float model on one data set: the statistics are collected
    by the first run and reused (with bias correction, whose model differs per candidate, not)."""
    import edgec.quant.collect as collect

    real = collect.collect_statistics
    calls: list = []

    def counting(*a: Any, **k: Any) -> Any:
        calls.append(len(a[2]))
        return real(*a, **k)

    monkeypatch.setattr(collect, "collect_statistics", counting)
    path, cal = files
    rep = quantize(edgec.load(str(path)), str(cal), opt_level=2, max_drop=-50, time_budget=60)
    assert len(rep["search"]["candidates"]) == 4 and len(rep["sensitivity"]["ranking"]) == 4
    assert len(calls) == 1, calls
    calls.clear()
    quantize(edgec.load(str(path)), str(cal), opt_level=2, max_drop=-50, time_budget=60, bias_correction=True)
    assert len([c for c in calls if c]) > 4, calls


def test_top1_metric_needs_labels(files: Any) -> None:
    path, _ = files
    model = edgec.load(str(path))
    with pytest.raises(EdgecError, match="needs labels"):
        quantize(model, "synthetic:8", metric="top1", max_drop=1)
