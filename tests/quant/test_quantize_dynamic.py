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


# --- Gather tables, ConvInteger, export ---------------------------------------------------------
def embedding_model(opset: int = 17, rows: int = 200, dim: int = 64):
    """Gather(table [rows, dim], ids) -> MatMul: an embedding followed by a projection."""
    from onnx import TensorProto

    return make_model([helper.make_node("Gather", ["table", "ids"], ["e"]),
                       helper.make_node("MatMul", ["e", "w"], ["y"])],
                      [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 7])], [fvi("y", [2, 7, 32])],
                      {"table": _w(rows, dim), "w": _w(dim, 32)}, opset)


def ids_feed(rows: int = 200):
    import numpy as np

    return {"ids": np.random.default_rng(0).integers(0, rows, (2, 7)).astype("int64")}


@pytest.mark.parametrize("per_channel", [True, False])
def test_gather_table_int8_dequantized_after_gather(per_channel):
    m = embedding_model()
    ref = copy_model(m)
    ctx = quantize(m, None, f"quantize-dynamic{{per-channel={str(per_channel).lower()},reduce-range=true}}")
    gather = next(n for n in m.graph if n.op_type == "Gather")
    assert gather.input(0).dtype == DType.INT8 and gather.input(0).const is not None
    dq = gather.output(0).consumers()[0]
    assert dq.op_type == "DequantizeLinear" and len(dq.inputs) == 2  # symmetric: no zero-point input
    assert dq.attr("axis") == (-1 if per_channel else None)
    f = ids_feed()
    want = run(ref, f)[0]
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        assert cosine(want, run(m, f, level)[0]) > 0.995
    rows = ctx.reports["quantization"]["nodes"]
    assert {r["op"] for r in rows} == {"Gather", "MatMul"}
    rep = ctx.reports["quantization"]["totals"]
    assert rep["model_bytes_after"] < 0.3 * rep["model_bytes_before"]


def test_gather_skipped_for_non_constant_or_excluded_tables():
    m = embedding_model()
    quantize(m, None, "quantize-dynamic{ops=[MatMul]}")
    assert next(n for n in m.graph if n.op_type == "Gather").input(0).dtype == DType.FLOAT


def conv_net():
    import numpy as np

    rng = np.random.default_rng(1)
    inits = {"w1": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
             "b1": (rng.standard_normal(8) * 0.1).astype(np.float32),
             "w2": (rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32)}
    return make_model([helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
                       helper.make_node("Relu", ["c1"], ["r"]),
                       helper.make_node("Conv", ["r", "w2"], ["y"], group=2, strides=[2, 2])],
                      [fvi("x", [1, 3, 9, 9])], [fvi("y", [1, 4, 4, 4])], inits)


@pytest.mark.parametrize("pipeline", ["quantize-dynamic{reduce-range=true}",
                                      "fuse-activation,quantize-dynamic{per-channel=false,reduce-range=true}"])
def test_conv_integer(pipeline):
    m = conv_net()
    ref = copy_model(m)
    quantize(m, None, pipeline)
    ops = [n.op_type for n in m.graph]
    assert ops.count("ConvInteger") == 2 and "Conv" not in ops and "FusedConv" not in ops
    ci = [n for n in m.graph if n.op_type == "ConvInteger"]
    assert ci[1].attr("group") == 2 and list(ci[1].attr("strides")) == [2, 2]
    assert all(n.input(3).const.numpy().ndim == 0 for n in ci)  # ORT: scalar weight zero point only
    _check(ref, m, min_cos=0.99)


def test_conv_integer_on_digits_keeps_top1():
    pytest.importorskip("sklearn")
    from edgec.frontend.onnx_import import from_proto
    from test_quantize import export
    from zoo.digits import digits_accuracy, digits_cnn

    m = from_proto(digits_cnn())
    ref_acc = digits_accuracy(export(copy_model(m)))
    quantize(m, None, "lift-constants,fuse-batchnorm,fold-constants,fuse-activation,quantize-dynamic")
    assert [n.op_type for n in m.graph].count("ConvInteger") == 3
    proto = export(m)
    assert digits_accuracy(proto) >= ref_acc - 0.003  # top-1 drop <= 0.3 points
    assert proto.ByteSize() < 0.35 * export(from_proto(digits_cnn())).ByteSize()


def test_export_without_value_info_and_shared_scalars():
    import onnx

    from edgec.backends.onnx_export import to_proto
    from edgec.ir import DType as D
    from edgec.quant.qdq import insert_qdq

    m = conv_net()
    ref = copy_model(m)
    g = m.graph
    for name in ("c1", "r"):
        v = next(o for n in g for o in n.outputs if o.name == name)
        insert_qdq(g, v, 0.05, 0, D.UINT8)
    scales = [n.input(1) for n in g if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len({id(s) for s in scales}) == 1  # equal scalar parameters share one initializer
    p_full, p_lean = to_proto(m), to_proto(m, value_info=False)
    assert len(p_full.graph.value_info) > 0 and len(p_lean.graph.value_info) == 0
    assert len(p_lean.graph.output[0].type.tensor_type.shape.dim) == 4  # outputs keep their types
    onnx.checker.check_model(p_lean, full_check=True)
    f = feeds_for(ref, 1)[0]
    sess = ort.InferenceSession(p_lean.SerializeToString(), providers=["CPUExecutionProvider"])
    assert cosine(run(m, f)[0], sess.run(None, f)[0]) > 0.9999
