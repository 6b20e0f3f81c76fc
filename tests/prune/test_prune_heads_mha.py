"""Structured pruning of attention heads in ``torch.nn.MultiheadAttention`` exports: one fused
in-projection (3·E columns) cut into q, k and v after a Reshape to (.., 3, E), heads merged with
the batch axis ((B·heads, S, head_dim) in nn.TransformerEncoderLayer) or split per part (ViT)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import zoo
from zoo._export import export, randomize_norm_stats, seed_all
from edgec.backends.onnx_export import to_proto
from edgec.cli import cli
from edgec.frontend.onnx_import import from_proto, load_model
from edgec.ir import Model
from edgec.passmanager import PassContext, PassManager, PassManagerOptions
from edgec.prune.channels import apply_pruning, total_macs
from edgec.prune.dependency import analyze, layout_indices
from edgec.rewrite import constant_value

E, HEADS, HD = 32, 4, 8


def run(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _encoder_layer() -> Any:
    import torch

    seed_all(0)
    layer = torch.nn.TransformerEncoderLayer(E, HEADS, dim_feedforward=64, dropout=0.0, batch_first=True)
    randomize_norm_stats(layer, 1)
    with torch.no_grad():  # a non-zero in-projection bias (torch initialises it to 0)
        layer.self_attn.in_proj_bias.normal_(0.0, 0.1)

    class Wrap(torch.nn.Module):  # tracing the layer itself turns is_causal into a tensor
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x: Any) -> Any:
            return self.layer(x)

    return Wrap()


def _vit_block() -> Any:
    """Patch-embedding Conv, class token, one pre-norm block (nn.MultiheadAttention), head."""
    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_proj = nn.Conv2d(3, E, 8, 8)
            self.class_token = nn.Parameter(torch.randn(1, 1, E) * 0.02)
            self.ln_1 = nn.LayerNorm(E, eps=1e-6)
            self.attn = nn.MultiheadAttention(E, HEADS, batch_first=True)
            self.ln_2 = nn.LayerNorm(E, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(E, 64), nn.GELU(), nn.Linear(64, E))
            self.head = nn.Linear(E, 10)

        def forward(self, x: Any) -> Any:
            n = x.shape[0]
            x = self.conv_proj(x).reshape(n, E, -1).permute(0, 2, 1)
            x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
            y = self.ln_1(x)
            y, _ = self.attn(y, y, y, need_weights=False)
            x = x + y
            x = x + self.mlp(self.ln_2(x))
            return self.head(x[:, 0])

    seed_all(0)
    net = Block()
    randomize_norm_stats(net, 1)
    with torch.no_grad():
        net.attn.in_proj_bias.normal_(0.0, 0.1)
    return net


#: name -> (module builder, static input shape, tokens per sample S, ffn width)
CASES = {"encoder_layer": (_encoder_layer, (1, 7, E), 7, 64), "vit_block": (_vit_block, (1, 3, 32, 32), 17, 64)}


def expected_macs(case: str, heads: int, ffn: int) -> int:
    """MACs of the static (batch 1) export, from the shapes."""
    s = CASES[case][2]
    inner = heads * HD
    macs = s * E * 3 * inner + 2 * heads * s * s * HD + s * inner * E + 2 * s * E * ffn
    if case == "vit_block":
        macs += 16 * E * 3 * 64 + E * 10  # patch Conv (4x4 patches of 3x8x8), head
    return macs


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: Any) -> Dict[str, Path]:
    """Each case exported (static batch 1) and after `edgec compile` (-O2, what pruning sees)."""
    import torch

    d = tmp_path_factory.mktemp("mha")
    out = {}
    for name, (build, shape, _, _) in CASES.items():
        raw = d / f"{name}.onnx"
        onnx.save(export(build(), (torch.randn(*shape),), input_names=["x"], output_names=["y"]), str(raw))
        r = run("compile", raw, "-o", d / f"{name}_o2.onnx")
        assert r.exit_code == 0, r.output
        out[name] = d / f"{name}_o2.onnx"
        out[name + "_raw"] = raw
    return out


def prune(model: Model, pipeline: str) -> Dict:
    ctx = PassContext()
    PassManager.with_options(pipeline, PassManagerOptions(verify_each=True), ctx=ctx).run(model)
    return ctx.reports["channel-pruning"]


def ort_run(model: Model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def in_projection(model: Model) -> List[np.ndarray]:
    """The fused in-projection weights ([E, 3·inner] MatMul operands) of the graph."""
    out = []
    for n in model.graph:
        if n.op_type == "MatMul" and n.domain == "":
            w = constant_value(n.input(1))
            if w is not None and w.ndim == 2 and w.shape[0] == E and n.name.endswith("attn/MatMul"):
                out.append(w)
    return out


def head_groups(model: Model) -> Any:
    dg = analyze(model)
    return dg, [g for g in dg.groups() if g.prunable and g.size == HEADS]


@pytest.mark.parametrize("case", list(CASES))
def test_heads_are_groups(compiled: Dict[str, Path], case: str) -> None:
    _, heads = head_groups(load_model(str(compiled[case])))
    assert len(heads) == 1
    g = heads[0]
    fused = [m for m in g.members if m.role == "out"]
    # the fused weight's columns: q, k, v blocks of head_dim per head
    assert fused and all(len(m.layout.segments) == 3 and m.layout.block == HD for m in fused)
    assert any(m.role == "in" and m.node.op_type == "Gemm" for m in g.members)  # out-projection


@pytest.mark.parametrize("case", list(CASES))
def test_unproven_use_of_one_part_freezes_the_heads(compiled: Dict[str, Path], case: str) -> None:
    """k exposed as a graph output: its channels cannot change, so neither can q's or v's."""
    model = load_model(str(compiled[case]))
    gathers = [n for n in model.graph if n.op_type == "Gather" and "attn" in n.name]
    assert len(gathers) == 3
    model.graph.add_output(gathers[1].output(0))
    _, heads = head_groups(model)
    assert heads == []


@pytest.mark.parametrize("case", list(CASES))
def test_prune_half_the_heads(compiled: Dict[str, Path], case: str) -> None:
    dense = load_model(str(compiled[case]))
    model = from_proto(to_proto(dense))
    rep = prune(model, "prune-channels{sparsity=0.5}")
    (w,) = in_projection(model)
    assert w.shape == (E, 3 * E // 2)
    assert rep["macs_before"] == total_macs(dense) == expected_macs(case, HEADS, 64)
    assert rep["macs_after"] == total_macs(model) == expected_macs(case, HEADS // 2, 32)
    x = np.random.RandomState(0).randn(*CASES[case][1]).astype(np.float32)
    got, want = ort_run(model, x), ort_run(dense, x)
    assert got.shape == want.shape and np.isfinite(got).all()


@pytest.mark.parametrize("case", list(CASES))
def test_pruned_heads_equal_zeroed_heads(compiled: Dict[str, Path], case: str) -> None:
    """Removing heads == zeroing their out-projection inputs in the dense model: the q/k/v column
    blocks (h·hd, E + h·hd, 2E + h·hd) and out-projection rows of each head stay together."""
    dense = load_model(str(compiled[case]))
    model = from_proto(to_proto(dense))
    dg, (g,) = head_groups(model)
    keep = {g.id: np.array([1, 3])}
    (gemm,) = [m for m in g.members if m.role == "in"]
    rows = layout_indices(gemm.layout.with_axis(0), keep, dg.find)
    assert rows.tolist() == [8 + i for i in range(8)] + [24 + i for i in range(8)]
    (w_in,) = [m for m in g.members if m.role == "out" and m.node.op_type == "MatMul"]
    cols = layout_indices(w_in.layout.with_axis(0), keep, dg.find)
    assert cols.tolist() == [o + h * HD + i for o in (0, E, 2 * E) for h in (1, 3) for i in range(HD)]
    apply_pruning(model, dg, keep)
    zeroed = from_proto(to_proto(dense))
    for n in zeroed.graph:
        if n.name == gemm.node.name:
            wt = constant_value(n.input(1)).copy()  # transB: [out, in]
            drop = np.setdiff1d(np.arange(E), rows)
            wt[:, drop] = 0
            n.set_input(1, zeroed.graph.add_constant(wt, "zeroed_out_proj"))
    x = np.random.RandomState(1).randn(*CASES[case][1]).astype(np.float32)
    np.testing.assert_allclose(ort_run(model, x), ort_run(zeroed, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_sparsity_zero_is_exact(compiled: Dict[str, Path], case: str) -> None:
    dense = load_model(str(compiled[case]))
    model = from_proto(to_proto(dense))
    rep = prune(model, "prune-channels{sparsity=0}")
    assert rep["macs_after"] == rep["macs_before"]
    x = np.random.RandomState(2).randn(*CASES[case][1]).astype(np.float32)
    assert np.array_equal(ort_run(model, x), ort_run(dense, x))


def test_cli_prunes_heads_of_the_zoo_vit(tmp_path: Path) -> None:
    """The zoo ViT (dynamic batch, two blocks) through `edgec compile --prune`: every block loses
    half its heads and the pruned file runs in onnxruntime at another batch size."""
    raw = tmp_path / "vit.onnx"
    onnx.save(zoo.get("vit", **zoo.TEST_PARAMS["vit"]), str(raw))
    out, rj = tmp_path / "p.onnx", tmp_path / "p.json"
    r = run("compile", raw, "--prune", "0.5", "--prune-mode", "channel", "--prune-report", rj, "-o", out)
    assert r.exit_code == 0, r.output
    rep = json.loads(rj.read_text())
    assert rep["model"]["after"]["macs"] < rep["model"]["before"]["macs"]
    pruned = load_model(str(out))
    widths = [constant_value(n.input(1)).shape for n in pruned.graph
              if n.op_type == "MatMul" and "self_attention" in n.name and constant_value(n.input(1)) is not None]
    assert widths == [(E, 3 * E // 2)] * 2
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, zoo.make_inputs(str(raw), seed=1, dims={"batch": 3}))
    assert y.shape == (3, 10) and np.isfinite(y).all()


def test_cli_prunes_heads_of_a_dynamic_encoder_layer(tmp_path: Path) -> None:
    """Dynamic batch and sequence: q's (B, heads, S, hd) target is a Concat of Shape pieces and
    k / v go through (S, B·heads, hd) with the traced length; the head counts are rewritten in both."""
    import torch

    raw = tmp_path / "tel.onnx"
    axes = {0: "batch", 1: "seq"}
    onnx.save(export(_encoder_layer(), (torch.randn(2, 7, E),), input_names=["x"], output_names=["y"],
                     dynamic_axes={"x": axes, "y": axes}), str(raw))
    out = tmp_path / "p.onnx"
    r = run("compile", raw, "--prune", "0.5", "--prune-mode", "channel", "-o", out)
    assert r.exit_code == 0, r.output
    assert [w.shape for w in in_projection(load_model(str(out)))] == [(E, 3 * E // 2)]
    x = np.random.RandomState(3).randn(3, 7, E).astype(np.float32)  # the export traced seq 7 into k / v
    (y,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.shape == (3, 7, E) and np.isfinite(y).all()
