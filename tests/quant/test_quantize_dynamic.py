"""The ``quantize-dynamic`` pass: int8 weights, activations quantized at run time (ORT MatMulInteger path)."""

from __future__ import annotations

import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_quantize import (copy_model, cosine, feeds_for, fused_ops, fvi, make_model, quantize,  # noqa: E402
                           run, transformer_block, _w)

from edgec.ir import DType  # noqa: E402


def _check(ref, m, min_cos=0.99, batch=1):
    for f in feeds_for(ref, 3, seed=3, batch=batch):
        want = run(ref, f, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            for w, g in zip(want, run(m, f, level)):
                assert g.shape == w.shape and cosine(w, g) > min_cos, (cosine(w, g), level)


@pytest.mark.parametrize("per_channel", [True, False])
def test_transformer_block_dynamic(per_channel):
    m = transformer_block()
    ref = copy_model(m)
    ctx = quantize(m, None, f"quantize-dynamic{{per-channel={str(per_channel).lower()},reduce-range=true}}")
    ops = [n.op_type for n in m.graph]
    assert ops.count("MatMulInteger") == 5 and ops.count("DynamicQuantizeLinear") == 5
    mi = next(n for n in m.graph if n.op_type == "MatMulInteger")
    assert mi.input(1).dtype == DType.INT8 and mi.input(0).dtype == DType.UINT8
    assert mi.input(1).type.quant.scale.size == (16 if per_channel else 1)
    _check(ref, m)
    fused = fused_ops(m)
    assert fused.count("DynamicQuantizeMatMul") + fused.count("MatMulIntegerToFloat") == 5, fused
    rep = ctx.reports["quantization"]
    assert rep["totals"]["model_bytes_after"] < 0.4 * rep["totals"]["model_bytes_before"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_dynamic_with_bias_alpha_beta(trans_b):
    w = _w(12, 10) if trans_b else _w(10, 12)
    m = make_model([helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=trans_b, alpha=0.5, beta=2.0)],
                   [fvi("x", [3, 10])], [fvi("y", [3, 12])], {"w": w, "c": _w(12, s=0.1)})
    ref = copy_model(m)
    quantize(m, None, "quantize-dynamic{reduce-range=true}")
    assert "Gemm" not in [n.op_type for n in m.graph]
    _check(ref, m, batch=3)


def test_fused_matmul_activation_kept():
    m = make_model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["h2"]),
                    helper.make_node("Relu", ["h2"], ["y"])],
                   [fvi("x", [2, 4, 16])], [fvi("y", [2, 4, 8])], {"w": _w(16, 8), "b": _w(8, s=0.1)})
    ref = copy_model(m)
    quantize(m, None, "fuse-activation,fuse-affine,quantize-dynamic{reduce-range=true}")
    assert "MatMulInteger" in [n.op_type for n in m.graph]
    _check(ref, m, batch=2)


def test_min_size_leaves_small_weights_float():
    m = transformer_block()
    quantize(m, None, "quantize-dynamic{min-size=400}")
    ops = [n.op_type for n in m.graph]
    assert ops.count("MatMulInteger") == 2  # only the 16x32 / 32x16 feed-forward weights
