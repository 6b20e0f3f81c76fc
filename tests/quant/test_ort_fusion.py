"""The int8 file edgec writes is the one onnxruntime fuses into integer kernels.

What the size savings of the quantized export (no value_info, weight zero points left out where
allowed, Relus the QuantizeLinear makes redundant dropped, short generated names) must not cost:
every QDQ group still becomes QLinearConv / QGemm / QLinearMatMul / MatMulIntegerToFloat.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import List

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from edgec.backends.onnx_export import save_model  # noqa: E402
from edgec.ir import Model  # noqa: E402
from edgec.passes.quantize import NO_WEIGHT_ZERO_POINT  # noqa: E402
from edgec.quant.qdq import SOURCE_NAME  # noqa: E402

from quant.test_quantize import QUANT_U8, Batches, copy_model, fvi, make_model, quantize, run  # noqa: E402

#: What ``edgec compile --quantize`` runs after the preset: quantize, clean-up, lowering.
PIPELINE = "fuse-activation," + QUANT_U8 + ",cse,dce,lower-onnx"


def _w(rng: np.random.Generator, *shape: int, s: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * s).astype(np.float32)


def small_cnn() -> Model:
    """Conv-Relu-MaxPool-Conv-Relu-Flatten-Gemm on 1x8x8 images (the digits CNN in miniature)."""
    rng = np.random.default_rng(3)
    inits = {"w1": _w(rng, 8, 1, 3, 3), "b1": _w(rng, 8, s=0.1), "w2": _w(rng, 8, 8, 3, 3, s=0.2),
             "b2": _w(rng, 8, s=0.1), "fc.weight": _w(rng, 10, 32, s=0.2), "fc.bias": _w(rng, 10, s=0.1),
             "shape": np.array([-1, 32], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2], name="pool2"),
             helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1, name="fc")]
    return make_model(nodes, [fvi("x", ["n", 1, 8, 8])], [fvi("y", ["n", 10])], inits)


def written(model: Model, d: str) -> str:
    """Save as the CLI does for --quantize; return the path."""
    path = str(Path(d) / "q.onnx")
    save_model(model, path, value_info=False)
    return path


def ort_optimized(path: str, d: str) -> List[str]:
    """Op types of the graph onnxruntime runs (its saved optimized model, every optimization on)."""
    out = str(Path(d) / "opt.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = out
    so.log_severity_level = 4
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(out).graph.node]


def _calib(model: Model, n: int = 16) -> Batches:
    rng = np.random.default_rng(0)
    shape = [4 if not isinstance(d, int) else d for d in model.graph.inputs[0].type.shape.dims]
    return Batches([{model.graph.inputs[0].name: np.abs(rng.standard_normal(shape)).astype(np.float32)}
                    for _ in range(n)])


def test_small_cnn_every_layer_runs_an_integer_kernel() -> None:
    m = small_cnn()
    ref = copy_model(m)
    quantize(m, _calib(m), PIPELINE)
    with tempfile.TemporaryDirectory() as d:
        path = written(m, d)
        proto = onnx.load(path)
        fused = Counter(ort_optimized(path, d))
        assert fused["QLinearConv"] == 2 and fused["QGemm"] == 1, fused
        assert not {"Conv", "Gemm", "DequantizeLinear", "Relu"} & set(fused), fused
        # what was saved: no value_info, no Relu (the QuantizeLinear saturates at its zero point 0),
        # int8 weights under their float names, Conv weights without zero point, Gemm's with it
        assert len(proto.graph.value_info) == 0
        ops = [n.op_type for n in proto.graph.node]
        assert "Relu" not in ops
        inits = {t.name: t for t in proto.graph.initializer}
        for w in ("w1", "w2", "fc.weight"):
            assert inits[w].data_type == onnx.TensorProto.INT8, w
        dq_of = {n.input[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
        assert len(dq_of["w1"].input) == 2 and len(dq_of["w2"].input) == 2
        assert len(dq_of["fc.weight"].input) == 3
        # names added by quantization are short: no "<tensor>_QuantizeLinear" any more
        added = [n.name for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert added and max(len(s) for s in added) <= 6, added
        # and it still computes the float model
        x = np.abs(np.random.default_rng(5).standard_normal((4, 1, 8, 8))).astype(np.float32)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": x})[0]
    want = run(ref, {"x": x})[0]
    cos = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos > 0.99, cos


@pytest.mark.parametrize("op", ["Conv", "MatMul", "Gemm"])
def test_weight_zero_point_left_out_only_where_onnxruntime_still_fuses(op: str) -> None:
    rng = np.random.default_rng(1)
    if op == "Conv":
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="layer")
        m = make_model([node], [fvi("x", [2, 4, 6, 6])], [fvi("y", [2, 8, 6, 6])],
                       {"w": _w(rng, 8, 4, 3, 3), "b": _w(rng, 8, s=0.1)})
        kernel = "QLinearConv"
    elif op == "MatMul":
        node = helper.make_node("MatMul", ["x", "w"], ["y"], name="layer")
        m = make_model([node], [fvi("x", [2, 16])], [fvi("y", [2, 8])], {"w": _w(rng, 16, 8)})
        kernel = "MatMulIntegerToFloat"
    else:
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="layer")
        m = make_model([node], [fvi("x", [2, 16])], [fvi("y", [2, 8])], {"w": _w(rng, 8, 16), "b": _w(rng, 8, s=0.1)})
        kernel = "QGemm"
    quantize(m, _calib(m, 4), PIPELINE)
    layer = next(n for n in m.graph if n.op_type == op)
    wdq = layer.input(1).producer
    assert wdq.op_type == "DequantizeLinear"
    assert (wdq.input(2) is None) == (op in NO_WEIGHT_ZERO_POINT)
    with tempfile.TemporaryDirectory() as d:
        fused = ort_optimized(written(m, d), d)
    assert kernel in fused and op not in fused, fused


def test_relu_kept_when_the_zero_point_does_not_saturate_it() -> None:
    """Symmetric uint8 activations put the zero point at 128: the Relu still does work."""
    m = small_cnn()
    quantize(m, _calib(m), PIPELINE.replace("activations=uint8", "activations=uint8,symmetric-activations=true"))
    assert [n.op_type for n in m.graph].count("Relu") == 2


def test_quantized_weight_keeps_a_distinct_name_while_the_float_one_is_still_used() -> None:
    """A weight read by a quantized MatMul and by a float op: the float tensor stays, so the int8
    copy keeps its own name (and the meta marker is gone either way)."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "w"], ["y"], name="add")]
    m = make_model(nodes, [fvi("x", [16, 16])], [fvi("y", [16, 16])], {"w": _w(rng, 16, 16)})
    quantize(m, _calib(m, 4), PIPELINE)
    inits = m.graph.initializers
    assert inits["w"].const.numpy().dtype == np.float32
    q = [v for v in inits.values() if v.const.numpy().dtype == np.int8]
    assert len(q) == 1 and q[0].name != "w" and q[0].name.startswith("w")
    assert all(SOURCE_NAME not in v.meta for v in inits.values())
