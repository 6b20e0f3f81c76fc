"""`edgec compile --quantize`: flags, accuracy report, --max-drop search, errors (digits CNN, small BERT)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import zoo
from edgec.cli import cli
from zoo.digits import digits_accuracy, digits_cnn, write_digits_npz

DAMAGED = "/features/features.4/Conv"


def run(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def damaged_digits(path: Path, k: float = 1000.0) -> Path:
    """The digits CNN with output channel 0 of the second Conv scaled by ``k`` and its BatchNorm
    compensating: the same float function, but one weight channel that wrecks per-tensor int8."""
    p = digits_cnn()
    nodes = list(p.graph.node)
    conv = [n for n in nodes if n.op_type == "Conv"][1]
    bn = [n for n in nodes if n.op_type == "BatchNormalization"][1]
    assert conv.name == DAMAGED
    inits = {t.name: t for t in p.graph.initializer}
    for name, factor in ((conv.input[1], k), (bn.input[3], k), (bn.input[4], k * k)):
        a = numpy_helper.to_array(inits[name]).copy()
        a[0] *= factor
        inits[name].CopyFrom(numpy_helper.from_array(a, name))
    onnx.save(p, str(path))
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory: Any) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("digits")
    model = d / "float.onnx"
    onnx.save(digits_cnn(), str(model))
    return {"dir": d, "model": model, "cal": write_digits_npz(d / "cal.npz", "calibration"),
            "test": write_digits_npz(d / "test.npz", "test"), "damaged": damaged_digits(d / "damaged.onnx")}


def report(path: Path) -> Dict[str, Any]:
    rep = json.loads(path.read_text())
    assert rep["format"] == "edgec-quant-report" and rep["version"] == 1
    return rep


def test_int8_end_to_end(digits: Dict[str, Path]) -> None:
    out, rj = digits["dir"] / "q.onnx", digits["dir"] / "q.json"
    r = run("compile", digits["model"], "--quantize", "int8", "--calibration", digits["cal"], "--eval", digits["test"],
            "--quant-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    assert "top-1 %" in r.stderr and "file size" in r.stderr
    f_acc, q_acc = digits_accuracy(digits["model"]), digits_accuracy(out)
    assert abs(f_acc - q_acc) <= 0.01
    rep = report(rj)
    acc = rep["accuracy"]
    assert acc["quantized"]["samples"] == 597 and rep["metric"] == "top1"
    assert acc["float"]["top1"] == pytest.approx(100 * f_acc)
    assert acc["quantized"]["top1"] == pytest.approx(100 * q_acc)
    assert abs(acc["drop"]) <= 1.0
    # written small: no value_info, short generated names, compact form (26.9% of float when measured;
    # 28.1% before the compact form, 32.5% before short names)
    assert out.stat().st_size <= 0.27 * digits["model"].stat().st_size
    assert rep["size"]["file_ratio"] <= 0.27 and rep["size"]["weight_ratio"] < 0.3
    assert len(onnx.load(str(out)).graph.value_info) == 0
    assert {row["name"] for row in rep["layers"]} >= {"/classifier/classifier.2/Gemm"}
    # the 1-channel first Conv stays float for onnxruntime (quantize rule 9), and the report says so
    assert [row["name"] for row in rep["layers"] if row.get("float_for_speed")] == \
        ["/features/features.2/Relu/FusedConv"]
    assert all("input_scale" in row for row in rep["layers"] if not row.get("float_for_speed"))
    assert rep["search"] is None and rep["sensitivity"] is None
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def test_max_drop_not_met_within_tiny_budget(digits: Dict[str, Path]) -> None:
    out, rj = digits["dir"] / "nm.onnx", digits["dir"] / "nm.json"
    r = run("compile", digits["model"], "--quantize", "int8", "--calibration", digits["cal"], "--max-drop", "-50",
            "--time-budget", "0.001", "--quant-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    assert "not met within 0.001 s: best drop" in r.stderr
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": np.zeros((2, 1, 8, 8), np.float32)})
    s = report(rj)["search"]
    assert s["met"] is False and s["timed_out"] is True and len(s["candidates"]) >= 1
    assert all("drop" in c and "metrics" in c for c in s["candidates"])


def test_max_drop_loose_bound_met_all_quantized(digits: Dict[str, Path]) -> None:
    out, rj = digits["dir"] / "met.onnx", digits["dir"] / "met.json"
    r = run("compile", digits["model"], "--quantize", "int8", "--calibration", digits["cal"], "--max-drop", "5",
            "--quant-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    # 3 layers: the first Conv (1 input channel) stays float for onnxruntime (quantize rule 9)
    assert "met: drop" in r.stderr and "with 0 of 3 layers in float" in r.stderr
    rep = report(rj)
    assert rep["search"]["met"] is True and rep["float_layers"] == [] and len(rep["search"]["candidates"]) == 1


def test_damaged_layer_ranked_first_and_kept_float(digits: Dict[str, Path]) -> None:
    out, rj = digits["dir"] / "dmg.onnx", digits["dir"] / "dmg.json"
    r = run("compile", digits["damaged"], "-O1", "--quantize", "int8", "--per-tensor", "--calibration", digits["cal"],
            "--eval", digits["test"], "--max-drop", "1", "--quant-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    rep = report(rj)
    ranking = rep["sensitivity"]["ranking"]
    assert ranking[0]["name"] == DAMAGED and ranking[0]["drop"] > 20
    assert rep["search"]["met"] is True and rep["float_layers"] == [DAMAGED]
    assert "met: drop" in r.stderr and "with 1 of 3 layers in float" in r.stderr  # rule 9: see above
    assert [row for row in rep["layers"] if row.get("float")] == [
        {"name": DAMAGED, "float": True, "sensitivity_rank": 1, "sensitivity_drop": ranking[0]["drop"],
         "layer_sqnr_db": ranking[0]["layer_sqnr_db"]}]
    assert digits_accuracy(out) >= digits_accuracy(digits["damaged"]) - 0.01


def test_int8_without_calibration_is_a_one_line_error(digits: Dict[str, Path]) -> None:
    r = run("compile", digits["model"], "--quantize", "int8", "-o", digits["dir"] / "x.onnx")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: error:")
    assert "--calibration FILE" in lines[0] and "--calibration synthetic" in lines[0]
    assert not (digits["dir"] / "x.onnx").exists()


def test_quant_flag_without_quantize(digits: Dict[str, Path]) -> None:
    r = run("compile", digits["model"], "--calibration", digits["cal"], "-o", digits["dir"] / "y.onnx")
    assert r.exit_code == 2 and "--calibration needs --quantize" in r.stderr


def test_synthetic_calibration_warns_loudly(digits: Dict[str, Path]) -> None:
    r = run("compile", digits["model"], "--quantize", "int8", "--calibration", "synthetic:8", "-o", digits["dir"] / "s.onnx")
    assert r.exit_code == 0, r.output
    assert "edgec: WARNING: calibrating on synthetic random inputs" in r.stderr
    assert "metric cosine" in r.stderr  # synthetic data carry no labels


@pytest.fixture(scope="module")
def bert(tmp_path_factory: Any) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("bert")
    proto = zoo.get("bert_encoder", **zoo.TEST_PARAMS["bert_encoder"])
    onnx.save(proto, str(d / "bert.onnx"))
    rng = np.random.default_rng(0)
    n, seq = 16, 12
    np.savez(d / "eval.npz", input_ids=rng.integers(0, 100, (n, seq)).astype(np.int64),
             attention_mask=np.ones((n, seq), np.int64), token_type_ids=np.zeros((n, seq), np.int64))
    return {"dir": d, "model": d / "bert.onnx", "eval": d / "eval.npz"}


@pytest.mark.parametrize("mode", ["dynamic", "int4-weights"])
def test_transformer_dynamic_and_weight_only(bert: Dict[str, Path], mode: str) -> None:
    out, rj = bert["dir"] / f"{mode}.onnx", bert["dir"] / f"{mode}.json"
    r = run("compile", bert["model"], "--quantize", mode, "--eval", bert["eval"], "--quant-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    rep = report(rj)
    assert rep["metric"] == "cosine" and rep["accuracy"]["quantized"]["cosine_mean"] > 0.99
    assert rep["size"]["file_ratio"] < 0.9 and len(rep["layers"]) > 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {k: v[:2] for k, v in np.load(bert["eval"]).items()}
    outs: List[np.ndarray] = sess.run(None, feeds)
    assert all(np.isfinite(o).all() for o in outs)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("MatMulInteger" in ops) if mode == "dynamic" else ("MatMulNBits" in ops or "DequantizeLinear" in ops)


def test_dynamic_without_data_reports_sizes_only(bert: Dict[str, Path]) -> None:
    rj = bert["dir"] / "nodata.json"
    r = run("compile", bert["model"], "--quantize", "dynamic", "--quant-report", rj, "-o", bert["dir"] / "nd.onnx")
    assert r.exit_code == 0, r.output
    rep = report(rj)
    assert rep["accuracy"] is None and rep["size"]["file_ratio"] < 0.9
    r = run("compile", bert["model"], "--quantize", "dynamic", "--max-drop", "0.01", "-o", bert["dir"] / "nd2.onnx")
    assert r.exit_code == 2 and "need data to evaluate on" in r.stderr
