"""`edgec compile --prune`: flags, summary, JSON report, sparse storage, prune-then-quantize, errors (digits CNN)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import onnx
import pytest
from click.testing import CliRunner

from edgec.cli import cli
from zoo.digits import digits_accuracy, digits_cnn, write_digits_npz


def run(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def digits(tmp_path_factory: Any) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("digits")
    model = d / "float.onnx"
    onnx.save(digits_cnn(), str(model))
    return {"dir": d, "model": model, "cal": write_digits_npz(d / "cal.npz", "calibration"),
            "test": write_digits_npz(d / "test.npz", "test")}


def test_prune_2of4_reconstruct_end_to_end(digits: Dict[str, Path]) -> None:
    out, rj = digits["dir"] / "p.onnx", digits["dir"] / "p.json"
    r = run("compile", digits["model"], "--prune", "0.5", "--prune-mode", "2:4", "--prune-reconstruct",
            "--calibration", digits["cal"], "--eval", digits["test"], "--prune-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    assert "nonzero parameters" in r.stderr and "MACs" in r.stderr and "top-1 %" in r.stderr
    assert "prune-weights{sparsity=0.5,mode=2:4,score=magnitude,reconstruct=true},lower-onnx" in r.stdout
    rep = json.loads(rj.read_text())
    assert rep["format"] == "edgec-prune-report" and rep["pruning"]["totals"]["sparsity"] == 0.5
    assert rep["model"]["after"]["nonzeros"] < 0.55 * rep["model"]["before"]["nonzeros"]
    assert rep["model"]["after"]["macs_nonzero"] < rep["model"]["after"]["macs"]
    acc = rep["accuracy"]
    assert acc["pruned"]["top1"] == pytest.approx(100 * digits_accuracy(out))
    assert acc["dense"]["top1"] - acc["pruned"]["top1"] <= 1.0


def test_prune_sparse_storage_shrinks_the_file(digits: Dict[str, Path]) -> None:
    dense_out, sparse_out = digits["dir"] / "d80.onnx", digits["dir"] / "s80.onnx"
    assert run("compile", digits["model"], "--prune", "0.8", "-o", dense_out).exit_code == 0
    r = run("compile", digits["model"], "--prune", "0.8", "--prune-storage", "sparse", "-o", sparse_out)
    assert r.exit_code == 0, r.output
    assert sparse_out.stat().st_size < 0.7 * dense_out.stat().st_size
    assert len(onnx.load(str(sparse_out)).graph.sparse_initializer) == 4
    assert digits_accuracy(sparse_out) == digits_accuracy(dense_out)


def test_prune_then_quantize(digits: Dict[str, Path]) -> None:
    out = digits["dir"] / "pq.onnx"
    r = run("compile", digits["model"], "--prune", "0.5", "--prune-reconstruct", "--quantize", "int8",
            "--calibration", digits["cal"], "--eval", digits["test"], "-o", out)
    assert r.exit_code == 0, r.output
    assert "prune-weights{sparsity=0.5,mode=unstructured,score=magnitude,reconstruct=true},quantize" in r.stdout
    assert "pruning (unstructured" in r.stderr and "quantization (int8)" in r.stderr


def test_prune_errors(digits: Dict[str, Path]) -> None:
    out = digits["dir"] / "x.onnx"
    r = run("compile", digits["model"], "--prune-mode", "2:4", "-o", out)
    assert r.exit_code == 2 and "--prune-mode needs --prune S" in r.output
    r = run("compile", digits["model"], "--prune", "0.5", "--prune-score", "wanda", "-o", out)
    assert r.exit_code == 2 and "need calibration data" in r.output
    r = run("compile", digits["model"], "--prune", "1.5", "-o", out)
    assert r.exit_code == 2


def test_prune_channel_mode_builds_prune_channels(digits: Dict[str, Path]) -> None:
    r = run("compile", digits["model"], "--prune", "0.25", "--prune-mode", "channel", "-o", digits["dir"] / "c.onnx")
    if "not registered" in r.output:
        assert r.exit_code == 2
    else:
        assert r.exit_code == 0, r.output
        assert "prune-channels{sparsity=0.25}" in r.stdout


def test_prune_sensitivity_table(digits: Dict[str, Path]) -> None:
    out, rj = digits["dir"] / "s.onnx", digits["dir"] / "s.json"
    r = run("compile", digits["model"], "--prune", "0.5", "--prune-sensitivity", "0.25,0.5,0.9", "--calibration",
            digits["cal"], "--prune-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    assert "sensitivity: relative layer output error" in r.stderr and "@0.9" in r.stderr
    rows = json.loads(rj.read_text())["pruning"]["layers"]
    assert rows and all(set(L["sensitivity"]) == {"0.25", "0.5", "0.9"} for L in rows)
    r = run("compile", digits["model"], "--prune", "0.5", "--prune-mode", "channel", "--prune-sensitivity", "0.5",
            "-o", digits["dir"] / "c.onnx")
    assert r.exit_code == 2 and "not channel" in r.output
