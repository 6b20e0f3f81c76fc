"""Structured pruning of attention heads and FFN channels (bert_encoder), and of the fused ``edgec``
ops the -O2 pipeline leaves (digits CNN through the CLI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import zoo
from edgec.backends.onnx_export import to_proto
from edgec.cli import cli
from edgec.frontend.onnx_import import from_proto, load_model
from edgec.ir import Model
from edgec.passmanager import PassContext, PassManager, PassManagerOptions
from edgec.prune.channels import total_macs
from edgec.prune.dependency import analyze
from edgec.quant.collect import run_model
from zoo.digits import digits_cnn, write_digits_npz

BERT = zoo.TEST_PARAMS["bert_encoder"]  # hidden 32, 4 heads (head_dim 8), FFN 128, 2 layers


def run(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def bert(tmp_path_factory: Any) -> Path:
    """The bert encoder after `edgec compile` (-O2 for plain ONNX: Reshape targets are constants)."""
    d = tmp_path_factory.mktemp("bert")
    onnx.save(zoo.get("bert_encoder", **BERT), str(d / "raw.onnx"))
    r = run("compile", d / "raw.onnx", "-o", d / "o2.onnx")
    assert r.exit_code == 0, r.output
    return d / "o2.onnx"


def prune(model: Model, pipeline: str) -> Dict:
    ctx = PassContext()
    PassManager.with_options(pipeline, PassManagerOptions(verify_each=True), ctx=ctx).run(model)
    return ctx.reports["channel-pruning"]


def feeds(model: Model) -> Dict[str, np.ndarray]:
    return zoo.make_inputs(to_proto(model), seed=0, dims={"batch": 2, "seq": 7})


def bert_macs(heads: int, ffn: int, hidden: int = 32, head_dim: int = 8, layers: int = 2) -> int:
    """MACs per sample at seq 1 (the symbols bound to 1), from the shapes."""
    per_layer = 3 * hidden * heads * head_dim + 2 * heads * head_dim + heads * head_dim * hidden + 2 * hidden * ffn
    return layers * per_layer + hidden * hidden  # + pooler


def test_heads_are_groups(bert: Path) -> None:
    dg = analyze(load_model(str(bert)))
    heads = [g for g in dg.groups() if g.prunable and g.size == 4]
    ffn = [g for g in dg.groups() if g.prunable and g.size == 128]
    assert len(heads) == 2 and len(ffn) == 2
    for g in heads:
        assert {p.name.split("/")[-2] for p in g.producers} == {"query", "key", "value"}
        # Q/K/V weights and biases (blocks of head_dim columns) and the out-projection's rows
        assert len(g.members) == 7 and {m.layout.block for m in g.members} == {8}
        assert any(m.role == "in" and "dense" in m.node.name for m in g.members)


def test_prune_heads_and_ffn_runs_with_shape_macs(bert: Path) -> None:
    dense = load_model(str(bert))
    model = from_proto(to_proto(dense))
    rep = prune(model, "prune-channels{sparsity=0.5}")
    assert rep["macs_before"] == total_macs(dense) == bert_macs(4, 128)
    assert rep["macs_after"] == total_macs(model) == bert_macs(2, 64)
    # the head-count entries of the Reshape targets were rewritten
    targets = [tuple(int(v) for v in np.asarray(n.input(1).const.numpy()).reshape(-1))
               for n in model.graph if n.op_type == "Reshape"]
    assert targets.count((0, 0, 2, 8)) == 6 and targets.count((0, 0, 16)) == 2
    x = feeds(dense)
    want, got = run_model(dense, x), run_model(model, x)
    for k in want:
        assert want[k].shape == got[k].shape and np.isfinite(got[k]).all()


def test_sparsity_zero_is_exact(bert: Path) -> None:
    dense = load_model(str(bert))
    model = from_proto(to_proto(dense))
    rep = prune(model, "prune-channels{sparsity=0}")
    assert rep["macs_after"] == rep["macs_before"]
    x = feeds(dense)
    want, got = run_model(dense, x), run_model(model, x)
    for k in want:
        assert np.array_equal(want[k], got[k])


def test_cli_prunes_heads_of_the_torch_export(tmp_path: Path) -> None:
    raw = tmp_path / "raw.onnx"
    onnx.save(zoo.get("bert_encoder", **BERT), str(raw))
    out, rj = tmp_path / "p.onnx", tmp_path / "p.json"
    r = run("compile", raw, "--prune", "0.5", "--prune-mode", "channel", "--prune-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    rep = json.loads(rj.read_text())
    assert rep["model"]["after"]["macs"] == bert_macs(2, 64)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    outs = sess.run(None, zoo.make_inputs(str(raw), seed=1, dims={"batch": 2, "seq": 5}))
    assert outs[0].shape == (2, 5, 32)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: Any) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("digits_ch")
    onnx.save(digits_cnn(), str(d / "float.onnx"))
    return {"dir": d, "model": d / "float.onnx", "cal": write_digits_npz(d / "cal.npz", "calibration"),
            "test": write_digits_npz(d / "test.npz", "test")}


def test_cli_channels_on_fused_convs_meet_the_goal(digits: Dict[str, Path]) -> None:
    """-O2 fuses BatchNorm and ReLU into edgec.FusedConv before pruning; the groups must still be
    found, and OBS channel selection + refit keeps top-1 within 1 point at >= 40% fewer MACs."""
    out, rj = digits["dir"] / "c.onnx", digits["dir"] / "c.json"
    r = run("compile", digits["model"], "--prune", "0.4", "--prune-mode", "channel", "--prune-target", "macs",
            "--prune-round-to", "8", "--prune-reconstruct", "--calibration", digits["cal"], "--eval", digits["test"],
            "--prune-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    assert "prune-channels{sparsity=0.4,target=macs,round-to=8,score=obs,refit=true}" in r.stdout
    rep = json.loads(rj.read_text())
    assert rep["model"]["after"]["macs"] <= 0.6 * rep["model"]["before"]["macs"]
    assert rep["pruning"]["refit"]
    for g in rep["pruning"]["groups"]:
        assert not g["prunable"] or g["channels_after"] % 8 == 0
    acc = rep["accuracy"]
    assert acc["dense"]["top1"] - acc["pruned"]["top1"] <= 1.0


def test_channel_flags_need_channel_mode(digits: Dict[str, Path]) -> None:
    r = run("compile", digits["model"], "--prune", "0.5", "--prune-target", "macs", "-o", digits["dir"] / "x.onnx")
    assert r.exit_code == 2 and "--prune-target needs --prune-mode channel" in r.output
    r = run("compile", digits["model"], "--prune", "0.5", "--prune-mode", "channel", "--prune-reconstruct",
            "-o", digits["dir"] / "x.onnx")
    assert r.exit_code == 2 and "need calibration data" in r.output
