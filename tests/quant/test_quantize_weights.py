"""The ``quantize-weights`` pass: weight-only int4/int8, blocked along K (DequantizeLinear or MatMulNBits)."""

from __future__ import annotations

import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_quantize import copy_model, cosine, feeds_for, fused_ops, fvi, make_model, quantize, run, _w  # noqa: E402

from edgec.errors import EdgecError  # noqa: E402
from edgec.ir import DType  # noqa: E402


def mlp(opset: int = 21, trans_b: int = 0):
    w2 = _w(64, 128) if trans_b else _w(128, 64)
    return make_model([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                       helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=trans_b)],
                      [fvi("x", [4, 96])], [fvi("y", [4, 64])], {"w1": _w(96, 128), "w2": w2, "b2": _w(64, s=0.1)},
                      opset)


def _check(ref, m, min_cos=0.99):
    for f in feeds_for(ref, 2, seed=5, batch=4):
        want = run(ref, f, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            for w, g in zip(want, run(m, f, level)):
                assert g.shape == w.shape and cosine(w, g) > min_cos, (cosine(w, g), level)


@pytest.mark.parametrize("bits,symmetric,trans_b", [(4, True, 0), (4, False, 1), (8, True, 1)])
def test_dql_blocked_along_k(bits, symmetric, trans_b):
    m = mlp(trans_b=trans_b)
    ref = copy_model(m)
    ctx = quantize(m, None, f"quantize-weights{{bits={bits},block-size=32,symmetric={str(symmetric).lower()}}}")
    dqs = [n for n in m.graph if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 2
    for dq in dqs:
        qt = dq.input(0).type
        assert qt.dtype == (DType.INT4 if bits == 4 and symmetric else DType.UINT4 if bits == 4 else DType.INT8)
        assert qt.quant.block_size == 32 and dq.attr("block_size") == 32
    gemm = next(n for n in m.graph if n.op_type == "Gemm")
    assert gemm.input(1).producer.attr("axis") == (1 if trans_b else 0)  # K axis
    _check(ref, m, 0.98 if bits == 4 else 0.999)  # int4 on random gaussian weights: ~0.989
    rep = ctx.reports["quantization"]["totals"]
    ratio = rep["model_bytes_after"] / rep["model_bytes_before"]
    assert ratio < (0.2 if bits == 4 else 0.32), ratio


def test_dql_fuses_to_matmulnbits_in_ort():
    m = mlp()
    quantize(m, None, "quantize-weights")
    assert "MatMulNBits" in fused_ops(m)


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (8, True)])
def test_matmulnbits_format(bits, symmetric):
    m = mlp(opset=17, trans_b=1)
    ref = copy_model(m)
    ctx = quantize(m, None, f"quantize-weights{{format=matmulnbits,bits={bits},block-size=32,"
                            f"symmetric={str(symmetric).lower()}}}")
    ops = [n.op_type for n in m.graph]
    assert ops.count("MatMulNBits") == 2 and "Gemm" not in ops and "MatMul" not in ops
    _check(ref, m, 0.98 if bits == 4 else 0.999)
    rep = ctx.reports["quantization"]["totals"]
    assert rep["model_bytes_after"] / rep["model_bytes_before"] < (0.2 if bits == 4 else 0.32)


def test_dql_needs_opset21_and_min_size():
    with pytest.raises(EdgecError, match="opset >= 21"):
        quantize(mlp(opset=17), None, "quantize-weights")
    m = mlp()
    quantize(m, None, "quantize-weights{min-size=10000}")
    assert [n.op_type for n in m.graph].count("DequantizeLinear") == 1  # only 96x128 = 12288
