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


# --- Gather tables and the scale search ---------------------------------------------------------
def embedding_model(opset: int = 21, rows: int = 300, dim: int = 256):
    from onnx import TensorProto

    return make_model([helper.make_node("Gather", ["table", "ids"], ["e"]),
                       helper.make_node("MatMul", ["e", "w"], ["y"])],
                      [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 9])], [fvi("y", [2, 9, 64])],
                      {"table": _w(rows, dim), "w": _w(dim, 64)}, opset)


def _gather_cos(ref, m):
    import numpy as np

    f = {"ids": np.random.default_rng(0).integers(0, 300, (2, 9)).astype(np.int64)}
    want = run(ref, f)[0]
    return min(cosine(want, run(m, f, level)[0]) for level in
               (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL))


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (8, False)])
def test_gather_block_quantized(bits, symmetric):
    m = embedding_model(opset=17)
    ref = copy_model(m)
    ctx = quantize(m, None, f"quantize-weights{{format=matmulnbits,bits={bits},symmetric={str(symmetric).lower()}}}")
    gbq = next(n for n in m.graph if n.op_type == "GatherBlockQuantized")
    assert gbq.domain == "com.microsoft" and gbq.attr("bits") == bits and gbq.attr("block_size") == 128
    assert gbq.input(0).const.numpy().shape == (300, 256 * bits // 8)
    assert len(gbq.inputs) == (3 if symmetric else 4)  # symmetric: implicit zero point 8 / 128
    assert "Gather" not in [n.op_type for n in m.graph]
    assert _gather_cos(ref, m) > (0.98 if bits == 4 else 0.999)
    rep = ctx.reports["quantization"]
    assert {r["op"] for r in rep["nodes"]} == {"Gather", "MatMul"}
    ratio = rep["totals"]["model_bytes_after"] / rep["totals"]["model_bytes_before"]
    assert ratio < (0.16 if bits == 4 else 0.3), ratio


def test_gather_dql_is_standard_int8_after_the_gather():
    m = embedding_model(opset=21)
    ref = copy_model(m)
    quantize(m, None, "quantize-weights")
    gather = next(n for n in m.graph if n.op_type == "Gather")
    assert gather.input(0).dtype == DType.INT8
    assert gather.output(0).consumers()[0].op_type == "DequantizeLinear"
    assert all(n.domain == "" for n in m.graph)
    assert _gather_cos(ref, m) > 0.99  # the MatMul weight is int4


def test_gather_none_and_block_size_checks():
    m = embedding_model(opset=17)
    quantize(m, None, "quantize-weights{format=matmulnbits,gather=none}")
    assert next(n for n in m.graph if n.op_type == "Gather").input(0).dtype == DType.FLOAT
    with pytest.raises(EdgecError, match="gather-block-size"):
        quantize(embedding_model(opset=17), None, "quantize-weights{format=matmulnbits,gather-block-size=48}")


def test_scale_search_is_more_accurate():
    import numpy as np

    base = mlp(opset=17, trans_b=1)
    feeds = feeds_for(base, 2, seed=5, batch=4)
    errs = []
    for search in ("true", "false"):
        m = copy_model(base)
        quantize(m, None, f"quantize-weights{{format=matmulnbits,symmetric=true,scale-search={search}}}")
        errs.append(sum(float(np.mean((run(base, f)[0] - run(m, f)[0]) ** 2)) for f in feeds))
    assert errs[0] < errs[1], errs


@pytest.mark.parametrize("fmt,opset", [("dql", 21), ("matmulnbits", 17)])
def test_fused_layers_are_quantized(fmt, opset):
    """-O2 fuses MatMul+Relu into edgec.FusedMatMul (and Gemm+act into FusedGemm): their weights are
    quantized like the plain ops' (the fused op is lowered to the base op + activation first)."""
    m = mlp(opset=opset)
    ref = copy_model(m)
    quantize(m, None, "fuse-activation")
    assert any(n.domain == "edgec" and n.op_type == "FusedMatMul" for n in m.graph)
    quantize(m, None, f"quantize-weights{{format={fmt}}},lower-onnx")
    ops = [n.op_type for n in m.graph]
    if fmt == "dql":
        assert ops.count("DequantizeLinear") == 2, ops
    else:
        assert ops.count("MatMulNBits") == 2, ops
    assert "Relu" in ops and not any(n.domain == "edgec" for n in m.graph)
    _check(ref, m, 0.98)
