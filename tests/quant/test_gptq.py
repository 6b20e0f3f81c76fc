"""GPTQ for weight-only int4 (``quantize-weights{method=gptq}``, ``edgec.quant.gptq``): lower output
error than round-to-nearest on correlated inputs, same blocked formats, deterministic, and the CLI
path ``--quantize int4-weights --calibration``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_quantize import copy_model, export, fused_ops, fvi, make_model, run  # noqa: E402

from edgec.backends.onnx_export import to_proto  # noqa: E402
from edgec.cli import cli  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402
from edgec.ir import DType  # noqa: E402
from edgec.passmanager import PassContext, PassManager, PassManagerOptions  # noqa: E402
from edgec.quant import gptq, scheme  # noqa: E402
from edgec.quant.data import load_calibration  # noqa: E402

K, HID, N = 96, 128, 48


def correlated(n: int, seed: int, k: int = K) -> np.ndarray:
    """Inputs whose features are strongly correlated (a low-rank mix plus noise), the case in which
    compensating the rounding error over the other rows pays off."""
    mix = np.random.default_rng(1234).standard_normal((12, k))  # shared by every split
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 12)) @ mix + 0.1 * rng.standard_normal((n, k))).astype(np.float32)


def mlp(opset: int = 21, k: int = K):
    """MatMul -> Abs -> Gemm(transB=1): both weight layouts ([K, N] and [N, K])."""
    rng = np.random.default_rng(7)
    inits = {"w1": (rng.standard_normal((k, HID)) * 0.2).astype(np.float32),
             "w2": (rng.standard_normal((N, HID)) * 0.1).astype(np.float32),
             "b2": (rng.standard_normal(N) * 0.1).astype(np.float32)}
    return make_model([helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
                       helper.make_node("Abs", ["h"], ["r"], name="act"),
                       helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1, name="fc")],
                      [fvi("x", ["batch", k])], [fvi("y", ["batch", N])], inits, opset)


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("gptq")
    np.savez(d / "cal.npz", x=correlated(256, seed=1))
    np.savez(d / "eval.npz", x=correlated(200, seed=2))
    return {"dir": d, "cal": d / "cal.npz", "eval": d / "eval.npz"}


def _quantized(model, npz, options: str, with_data: bool = True):
    """A copy of ``model`` through ``quantize-weights{options}``, with the calibration .npz or none."""
    m = copy_model(model)
    data = load_calibration(str(npz["cal"]), m) if with_data else None
    return m, _run_with(m, data, options)


def _run_with(m, data, options: str) -> PassContext:
    ctx = PassContext(resources={"calibration": data} if data is not None else {})
    PassManager.with_options(f"quantize-weights{{{options}}}", PassManagerOptions(verify_each=True), ctx=ctx).run(m)
    return ctx


def _mse(ref, m, x: np.ndarray) -> float:
    want = run(ref, {"x": x}, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
    got = run(m, {"x": x}, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)[0]
    return float(np.mean((got.astype(np.float64) - want) ** 2))


def _methods(ctx) -> List[str]:
    return [e["method"] for e in ctx.reports["quantization"]["nodes"]]


@pytest.mark.parametrize("opset,fmt", [(21, "dql"), (17, "matmulnbits")])
def test_gptq_beats_round_to_nearest_on_held_out_inputs(npz, opset, fmt):
    ref = mlp(opset)
    rtn, rctx = _quantized(ref, npz, f"format={fmt},method=rtn")
    gq, gctx = _quantized(ref, npz, f"format={fmt},method=gptq")
    assert _methods(rctx) == ["rtn", "rtn"] and _methods(gctx) == ["gptq", "gptq"]
    x = np.load(npz["eval"])["x"]  # held out: not the calibration samples
    e_rtn, e_gptq = _mse(ref, rtn, x), _mse(ref, gq, x)
    assert e_gptq < 0.7 * e_rtn, (e_gptq, e_rtn)
    # same format, same size: GPTQ only changes which integers are stored
    for m in (rtn, gq):
        ops = [n.op_type for n in m.graph]
        if fmt == "dql":
            dqs = [n for n in m.graph if n.op_type == "DequantizeLinear"]
            assert len(dqs) == 2 and all(d.attr("block_size") == 32 for d in dqs)
            assert all(d.input(0).type.dtype == DType.UINT4 for d in dqs)
            assert "MatMulNBits" in fused_ops(m)  # onnxruntime still fuses DQ(int4) + MatMul (not + Gemm)
        else:
            assert ops.count("MatMulNBits") == 2 and "Gemm" not in ops and "MatMul" not in ops
    sizes = [c.reports["quantization"]["totals"]["model_bytes_after"] for c in (rctx, gctx)]
    assert sizes[0] == sizes[1]


def test_auto_uses_gptq_only_with_calibration_data(npz):
    ref = mlp()
    _, with_data = _quantized(ref, npz, "")
    _, without = _quantized(ref, npz, "", with_data=False)
    assert _methods(with_data) == ["gptq", "gptq"] and _methods(without) == ["rtn", "rtn"]
    with pytest.raises(EdgecError, match="method=gptq needs calibration data"):
        _quantized(ref, npz, "method=gptq", with_data=False)
    with pytest.raises(EdgecError, match="damp"):
        _quantized(ref, npz, "damp=1.5")


def test_deterministic(npz):
    ref = mlp(17)
    protos = [export(_quantized(ref, npz, "format=matmulnbits")[0]).SerializeToString() for _ in range(2)]
    assert protos[0] == protos[1]


def test_k_not_a_multiple_of_the_block(npz, tmp_path):
    k = 80  # two full blocks of 32 and a partial one of 16
    ref = mlp(17, k=k)
    np.savez(tmp_path / "cal.npz", x=correlated(128, seed=3, k=k))
    data = load_calibration(str(tmp_path / "cal.npz"), ref)
    for opset, fmt in ((17, "matmulnbits"), (21, "dql")):
        r = mlp(opset, k=k)
        m = copy_model(r)
        ctx = _run_with(m, data, f"format={fmt}")
        assert _methods(ctx) == ["gptq", "gptq"]
        x = correlated(64, seed=4, k=k)
        want = run(r, {"x": x})[0]
        got = run(m, {"x": x})[0]
        assert np.isfinite(got).all() and np.corrcoef(want.ravel(), got.ravel())[0, 1] > 0.99


# --- the algorithm --------------------------------------------------------------------------------
def _layer(k: int = 64, n: int = 40, rows: int = 500):
    rng = np.random.default_rng(3)
    x = correlated(rows, seed=5, k=k).astype(np.float64)
    w = (rng.standard_normal((k, n)) * 0.1).astype(np.float32)
    h = gptq.Hessian(np.zeros((k, k)))
    h.update(x)
    return x, w, h


@pytest.mark.parametrize("symmetric,dtype", [(False, DType.UINT4), (True, DType.INT4), (False, DType.UINT8)])
def test_params_reproduce_the_gptq_integers(symmetric, dtype):
    """Quantizing the returned weights with the returned block parameters is exact (the pass stores
    them through the ordinary quantize path), and the layer error is below round-to-nearest's."""
    _, w, h = _layer()
    u, dead = gptq.inverse_hessian_factor(h.h)
    wq, s, z = gptq.gptq_quantize(w, u, dead, dtype, block_size=32, symmetric=symmetric)
    assert s.shape == z.shape == scheme.blocked_shape(w.shape, 0, 32) and z.dtype == dtype.numpy
    q = scheme.quantize_array(wq, s, z, dtype, 0, 32)
    np.testing.assert_array_equal(scheme.dequantize_array(q, s, z, 0, 32), wq)
    s0, z0 = scheme.search_weight_params(w, 0, dtype, symmetric, block_size=32)
    rtn = scheme.dequantize_array(scheme.quantize_array(w, s0, z0, dtype, 0, 32), s0, z0, 0, 32)
    assert gptq.layer_error(w, wq, h.h) < 0.7 * gptq.layer_error(w, rtn, h.h)


def test_dead_inputs_and_rank_deficient_hessian():
    """An input that is always zero (its weights never matter) and fewer samples than K: no NaN."""
    x, w, _ = _layer(rows=20)  # 20 samples, K = 64: rank-deficient X^T X
    x[:, 5] = 0.0
    h = gptq.Hessian(np.zeros((64, 64)))
    h.update(x)
    u, dead = gptq.inverse_hessian_factor(h.h)
    assert dead[5] and dead.sum() == 1 and np.isfinite(u).all()
    wq, _, _ = gptq.gptq_quantize(w, u, dead, DType.UINT4, block_size=32)
    assert np.isfinite(wq).all() and np.all(wq[5] == 0.0)


def test_hessian_streams_batches():
    """Summing X^T X batch by batch equals the one-shot product (any leading shape)."""
    x = correlated(60, seed=9, k=16).reshape(3, 20, 16)
    h = gptq.Hessian(np.zeros((16, 16)))
    for b in x:
        h.update(b[None])
    flat = x.reshape(-1, 16).astype(np.float64)
    np.testing.assert_allclose(h.xtx, flat.T @ flat, rtol=1e-5)
    assert h.rows == 60
    np.testing.assert_allclose(h.h, 2 * flat.T @ flat / 60, rtol=1e-5)


# --- end to end through the CLI -------------------------------------------------------------------
def test_cli_int4_weights_with_calibration_uses_gptq(npz):
    d = npz["dir"]
    model = d / "mlp.onnx"
    ref = mlp(17)
    onnx.save(to_proto(ref), str(model))
    x = np.load(npz["eval"])["x"]
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    errs = {}
    for label, extra in (("gptq", ["--calibration", npz["cal"]]), ("rtn", [])):
        out, rj = d / f"{label}.onnx", d / f"{label}.json"
        r = CliRunner().invoke(cli, [str(a) for a in ["compile", model, "--quantize", "int4-weights", *extra,
                                                        "--eval", npz["eval"], "--quant-report", rj, "-o", out]])
        assert r.exit_code == 0, r.output
        rep = json.loads(rj.read_text())
        assert {layer["method"] for layer in rep["layers"]} == {label} and len(rep["layers"]) == 2
        ops = [n.op_type for n in onnx.load(str(out)).graph.node]
        assert ops.count("MatMulNBits") == 2
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        errs[label] = float(np.mean((got.astype(np.float64) - want) ** 2))
    assert errs["gptq"] < 0.7 * errs["rtn"], errs


# --- the benchmark's goal table -------------------------------------------------------------------
def _bench():
    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    return importlib.import_module("bench_quantize")


def test_bench_passes_calibration_to_int4_weights():
    b = _bench()
    assert "--calibration" in b.edgec_command("int4-weights", "m.onnx", "cal.npz", "o.onnx")
    assert "--calibration" not in b.edgec_command("dynamic", "m.onnx", "cal.npz", "o.onnx")


def test_bench_size_goal_na_only_when_out_of_reach():
    """The digits CNN (its only Gemm weight is 9.5% of the file) reads N/A with the reason; a model
    made of MatMul weights that misses the size goal still reads MISSED."""
    b = _bench()
    r = {"time": 1.0, "bytes": 96879, "top1": 0.98}
    res = {"digits_cnn": {"float": {"bytes": 108229, "weight_only_bytes": 10240, "top1": 0.98},
                          "edgec-int4-weights": r},
           "minilm": {"float": {"bytes": 1000, "weight_only_bytes": 990},
                      "edgec-int4-weights": {"time": 1.0, "bytes": 200, "cos": 0.995, "cos_min": 0.99}}}
    rows = {(row[0], row[2]): row[5] for row in b.goal_rows(res, 0.05)[1]}
    assert rows[("digits_cnn", "size <= 15% of float")].startswith("N/A: MatMul/Gemm/Gather weights are 9.5%")
    assert rows[("minilm", "size <= 15% of float")] == "MISSED"
    assert rows[("minilm", "cosine >= 0.99")] == "met"
    res["minilm"]["edgec-int4-weights"]["bytes"] = 140
    assert {(row[0], row[2]): row[5] for row in b.goal_rows(res, 0.05)[1]}[("minilm", "size <= 15% of float")] == "met"
