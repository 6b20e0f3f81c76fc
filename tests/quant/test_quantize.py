"""The ``quantize`` pass: static int8 QDQ that onnxruntime runs (and fuses into integer kernels)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from edgec.backends.onnx_export import to_proto  # noqa: E402
from edgec.backends.onnx_lowering import has_edgec_ops, lower_for_onnx  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402
from edgec.frontend.onnx_import import from_proto  # noqa: E402
from edgec.ir import DType, Model  # noqa: E402
from edgec.ir.parser import parse_model  # noqa: E402
from edgec.ir.printer import print_model  # noqa: E402
from edgec.passmanager import PassContext, PassManager, PassManagerOptions  # noqa: E402


# --- calibration data -----------------------------------------------------------------------------
def Batches(feeds: List[Dict[str, np.ndarray]], synthetic: bool = False, *, model: Optional[Model] = None):
    """Calibration data from a list of feed dicts (written to an .npz, opened with load_calibration)."""
    return _Calib(feeds, synthetic)


class _Calib:
    """Deferred: the model is known only in :func:`quantize` (load_calibration checks inputs)."""

    def __init__(self, feeds: List[Dict[str, np.ndarray]], synthetic: bool) -> None:
        self.feeds, self.synthetic = feeds, synthetic

    def load(self, model: Model):
        from edgec.quant.data import load_calibration

        if self.synthetic:
            return load_calibration(f"synthetic:{len(self.feeds)}", model)
        arrays = {k: np.concatenate([f[k] for f in self.feeds]) for k in self.feeds[0]}
        d = tempfile.mkdtemp()
        path = str(Path(d) / "calib.npz")
        np.savez(path, **arrays)
        return load_calibration(path, model)


# --- helpers ------------------------------------------------------------------------------------
def copy_model(model: Model) -> Model:
    return parse_model(print_model(model, elide_limit=None))


def export(model: Model) -> onnx.ModelProto:
    if has_edgec_ops(model):
        model = copy_model(model)
        lower_for_onnx(model)
    return to_proto(model)


def run(model: Model, feeds: Dict[str, np.ndarray], level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> List[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = level
    so.log_severity_level = 4
    sess = ort.InferenceSession(export(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def fused_ops(model: Model) -> List[str]:
    """Op types in the graph ORT builds with every optimization on (its saved optimized model)."""
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "opt.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = path
        so.log_severity_level = 4
        ort.InferenceSession(export(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(path).graph.node]


#: This host's x86 CPU may lack VNNI, whose u8s8 kernels saturate at full 8-bit weight range (the
#: fused ORT graph then differs from the QDQ reference): tests quantize weights to 7 bits.
QUANT = "quantize{reduce-range=true,activations=int8}"
#: ORT converts int8 Q/DQ to uint8 (QDQS8ToU8) only when a Q has one consumer, so int8 activations
#: that fan out stay unfused on x86; uint8 activations fuse everywhere.
QUANT_U8 = "quantize{reduce-range=true,activations=uint8}"


def quantize(model: Model, data, pipeline: str = QUANT) -> PassContext:
    ctx = PassContext(resources={"calibration": data.load(model)} if data is not None else {})
    PassManager.with_options(pipeline, PassManagerOptions(verify_each=True), ctx=ctx).run(model)
    return ctx


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def feeds_for(model: Model, n: int, seed: int = 0, batch: int = 1) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = {}
        for v in model.graph.inputs:
            dims = [d if isinstance(d, int) else batch for d in v.type.shape.dims]
            f[v.name] = rng.standard_normal(dims).astype(np.float32)
        out.append(f)
    return out


def check_close(before: Model, after: Model, feeds: List[Dict[str, np.ndarray]], min_cos: float = 0.99) -> None:
    for f in feeds:
        want = run(before, f, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            got = run(after, f, level)
            for w, g in zip(want, got):
                assert g.shape == w.shape and g.dtype == w.dtype
                assert cosine(w, g) > min_cos, (cosine(w, g), level)


def make_model(nodes, inputs, outputs, inits: Dict[str, np.ndarray], opset: int = 17) -> Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [onnx.numpy_helper.from_array(a, k) for k, a in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return from_proto(proto)


def fvi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


RNG = np.random.default_rng(42)


def conv_relu_conv(opset: int = 17) -> Model:
    inits = {"w1": (RNG.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
             "b1": (RNG.standard_normal(8) * 0.1).astype(np.float32),
             "w2": (RNG.standard_normal((4, 8, 3, 3)) * 0.2).astype(np.float32),
             "b2": (RNG.standard_normal(4) * 0.1).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1], name="conv2")]
    return make_model(nodes, [fvi("x", [1, 3, 8, 8])], [fvi("y", [1, 4, 8, 8])], inits, opset)


def ops_of(model: Model) -> List[str]:
    return [n.op_type for n in model.graph]


# --- tests --------------------------------------------------------------------------------------
def test_conv_relu_conv_qdq_layout_and_ort_fusion():
    m = conv_relu_conv()
    ref = copy_model(m)
    ctx = quantize(m, Batches(feeds_for(m, 8)))
    ops = ops_of(m)
    assert ops.count("QuantizeLinear") == 3 and ops.count("Conv") == 2  # x, relu1 output, y
    # weights: int8 per channel on axis 0; bias int32 at s_in * s_w
    convs = [n for n in m.graph if n.op_type == "Conv"]
    for c in convs:
        wdq = c.input(1).producer
        assert wdq.op_type == "DequantizeLinear" and wdq.input(0).dtype == DType.INT8
        q = wdq.input(0).type.quant
        assert q.axis == 0 and q.scale.shape == (wdq.input(0).shape[0],)
        bdq = c.input(2).producer
        assert bdq.input(0).dtype == DType.INT32
        s_in = c.input(0).producer.input(0).producer.input(1).const.numpy()
        np.testing.assert_allclose(bdq.input(0).type.quant.scale, s_in * q.scale, rtol=1e-6)
    # every quantized activation is typed with its parameters
    for n in m.graph:
        if n.op_type == "QuantizeLinear":
            assert n.output(0).type.quant is not None and n.output(0).dtype == DType.INT8
    check_close(ref, m, feeds_for(ref, 3, seed=1))
    assert fused_ops(m).count("QLinearConv") == 2
    rep = ctx.reports["quantization"]
    assert len(rep["nodes"]) == 2 and rep["totals"]["model_bytes_after"] < 0.35 * rep["totals"]["model_bytes_before"]


def test_missing_calibration_is_a_clear_error():
    m = conv_relu_conv()
    with pytest.raises(EdgecError, match="calibration"):
        quantize(m, None)


def _w(*shape, s=0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * s).astype(np.float32)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_per_channel_axis_and_qgemm(trans_b):
    w = _w(16, 10) if trans_b else _w(10, 16)
    m = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=trans_b, name="fc"),
                    helper.make_node("Relu", ["h"], ["y"], name="relu")],
                   [fvi("x", [2, 10])], [fvi("y", [2, 16])], {"w": w, "b": _w(16, s=0.1)})
    ref = copy_model(m)
    quantize(m, Batches(feeds_for(m, 8, batch=2)))
    gemm = next(n for n in m.graph if n.op_type == "Gemm")
    assert gemm.input(1).producer.input(0).type.quant.axis == (0 if trans_b else 1)
    check_close(ref, m, feeds_for(ref, 3, seed=1, batch=2))
    assert "QGemm" in fused_ops(m)


def transformer_block() -> Model:
    d, h = 16, 32
    inits = {"wq": _w(d, d), "wk": _w(d, d), "wv": _w(d, d), "w1": _w(d, h), "b1": _w(h, s=0.1),
             "w2": _w(h, d), "scale": np.array(0.25, np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]),
        helper.make_node("Mul", ["s0", "scale"], ["s1"]),
        helper.make_node("Softmax", ["s1"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["a"]),
        helper.make_node("Add", ["a", "x"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w1"], ["f0"]),
        helper.make_node("Add", ["f0", "b1"], ["f1"]),
        helper.make_node("Relu", ["f1"], ["f2"]),
        helper.make_node("MatMul", ["f2", "w2"], ["f3"]),
        helper.make_node("Add", ["f3", "r1"], ["y"]),
    ]
    return make_model(nodes, [fvi("x", [1, 8, d])], [fvi("y", [1, 8, d])], inits)


def test_transformer_block_matmuls_and_softmax_float():
    m = transformer_block()
    ref = copy_model(m)
    quantize(m, Batches(feeds_for(m, 16)), QUANT_U8)
    sm = next(n for n in m.graph if n.op_type == "Softmax")
    assert sm.input(0).producer.op_type == "DequantizeLinear"  # float op reads a DQ output
    assert sm.output(0).consumers()[0].op_type == "QuantizeLinear"  # and feeds a quantized MatMul
    check_close(ref, m, feeds_for(ref, 3, seed=1), min_cos=0.98)
    fused = fused_ops(m)
    assert fused.count("QLinearMatMul") + fused.count("MatMulIntegerToFloat") >= 5, fused
    assert "Softmax" in fused or "QLinearSoftmax" in fused


def test_concat_inputs_share_the_output_scale():
    m = make_model([helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
                    helper.make_node("Conv", ["x", "w2"], ["b"], name="c2"),
                    helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
                    helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                    helper.make_node("Conv", ["p", "w3"], ["y"], name="c3")],
                   [fvi("x", [1, 3, 8, 8])], [fvi("y", [1, 4, 4, 4])],
                   {"w1": _w(4, 3, 1, 1), "w2": _w(4, 3, 1, 1, s=2.0), "w3": _w(4, 8, 1, 1)})
    ref = copy_model(m)
    quantize(m, Batches(feeds_for(m, 8)), QUANT_U8)
    concat = next(n for n in m.graph if n.op_type == "Concat")
    scales = [v.producer.input(0).type.quant.scale for v in concat.inputs]
    out_q = concat.output(0).consumers()[0]
    assert out_q.op_type == "QuantizeLinear"
    for s in scales:
        assert s == out_q.output(0).type.quant.scale
    pool = next(n for n in m.graph if n.op_type == "MaxPool")
    assert pool.output(0).consumers()[0].output(0).type.quant == out_q.output(0).type.quant
    check_close(ref, m, feeds_for(ref, 3, seed=1))
    fused = fused_ops(m)
    assert fused.count("QLinearConv") == 3 and "QLinearConcat" in fused, fused


def test_residual_add_quantized():
    m = make_model([helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["a"], ["r"]),
                    helper.make_node("Conv", ["r", "w2", "b2"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Add", ["c", "x"], ["s"]),
                    helper.make_node("Relu", ["s"], ["y"])],
                   [fvi("x", [1, 4, 8, 8])], [fvi("y", [1, 4, 8, 8])],
                   {"w1": _w(4, 4, 3, 3), "b1": _w(4, s=0.1), "w2": _w(4, 4, 3, 3), "b2": _w(4, s=0.1)})
    ref = copy_model(m)
    quantize(m, Batches(feeds_for(m, 8)), QUANT_U8)
    check_close(ref, m, feeds_for(ref, 3, seed=1))
    fused = fused_ops(m)
    assert fused.count("QLinearConv") == 2 and "QLinearAdd" in fused, fused


def test_conv_transpose_group2_axis1():
    m = make_model([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], group=2, strides=[2, 2])],
                   [fvi("x", [1, 4, 4, 4])], [fvi("y", [1, 6, 8, 8])],
                   {"w": _w(4, 3, 2, 2), "b": _w(6, s=0.1)})
    ref = copy_model(m)
    quantize(m, Batches(feeds_for(m, 8)))
    ct = next(n for n in m.graph if n.op_type == "ConvTranspose")
    wq = ct.input(1).producer.input(0).type.quant
    assert wq.axis == 1 and wq.scale.shape == (3,)
    bq = ct.input(2).producer.input(0).type.quant
    assert bq.scale.shape == (6,)
    np.testing.assert_allclose(bq.scale, np.tile(wq.scale, 2) * ct.input(0).producer.input(0).type.quant.scale,
                               rtol=1e-6)
    check_close(ref, m, feeds_for(ref, 3, seed=1))


def test_depthwise_conv_axis0_and_fused_conv():
    m = make_model([helper.make_node("Conv", ["x", "w", "b"], ["a"], group=4, pads=[1, 1, 1, 1]),
                    helper.make_node("Clip", ["a", "lo", "hi"], ["y"])],
                   [fvi("x", [1, 4, 8, 8])], [fvi("y", [1, 4, 8, 8])],
                   {"w": _w(4, 1, 3, 3), "b": _w(4, s=0.1), "lo": np.array(0, np.float32),
                    "hi": np.array(6, np.float32)})
    ref = copy_model(m)
    quantize(m, Batches(feeds_for(m, 8)), "fuse-activation," + QUANT)
    fused_conv = next(n for n in m.graph if n.op_type in ("FusedConv", "Conv"))
    assert fused_conv.input(1).producer.input(0).type.quant.scale.shape == (4,)
    check_close(ref, m, feeds_for(ref, 3, seed=1))
    assert "QLinearConv" in fused_ops(m)


def test_bias_overflow_enlarges_weight_scale_and_is_reported():
    w = _w(4, 3, 1, 1)
    w[1] *= 1e-6  # tiny weight scale on channel 1 ...
    b = np.array([0.1, 5e3, 0.1, 0.1], np.float32)  # ... with a big bias: overflows int32 at s_in*s_w
    m = make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"])], [fvi("x", [1, 3, 4, 4])],
                   [fvi("y", [1, 4, 4, 4])], {"w": w, "b": b})
    ref = copy_model(m)
    ctx = quantize(m, Batches(feeds_for(m, 4)))
    node = ctx.reports["quantization"]["nodes"][0]
    assert node["bias_overflow_fixed_channels"] == [1]
    assert any("overflows int32" in x for x in ctx.reports["quantization"]["warnings"])
    conv = next(n for n in m.graph if n.op_type == "Conv")
    qb = conv.input(2).producer.input(0).const.numpy()
    assert np.all(np.abs(qb.astype(np.int64)) <= 2**31 - 1)
    check_close(ref, m, feeds_for(ref, 2, seed=1))


def test_exclude_and_keep_float():
    m = conv_relu_conv()
    quantize(m, Batches(feeds_for(m, 4)), "quantize{exclude=conv2}")
    conv2 = next(n for n in m.graph if n.name == "conv2")
    assert conv2.input(1).producer is None  # float weight kept
    assert conv2.input(0).producer.op_type == "DequantizeLinear"  # reads the dequantized Relu output


def test_synthetic_calibration_warns():
    m = conv_relu_conv()
    ctx = quantize(m, Batches(feeds_for(m, 2), synthetic=True))
    assert any("synthetic" in w for w in ctx.reports["quantization"]["warnings"])
    assert any("synthetic" in w for w in ctx.warnings)


def test_old_opset_falls_back_to_per_tensor():
    m = conv_relu_conv(opset=11)
    ref = copy_model(m)
    ctx = quantize(m, Batches(feeds_for(m, 4)))
    conv = next(n for n in m.graph if n.op_type == "Conv")
    assert conv.input(1).producer.input(0).type.quant.axis is None
    assert any("per-tensor" in w for w in ctx.warnings)
    check_close(ref, m, feeds_for(ref, 2, seed=1), min_cos=0.98)


@pytest.mark.parametrize("name,max_ratio", [("resnet18", 0.30), ("mobilenetv2", 0.32)])
def test_zoo_models_top1_agreement_and_size(name, max_ratio):
    """Real architectures: ORT (all optimizations) runs them in integer kernels, top-1 agrees with float.

    mobilenetv2's test variant (width 0.25) has 3x3 depthwise layers where per-channel weight scales,
    int32 biases and their scales cost ~12 bytes per 9 int8 weights, so it lands just above 30%."""
    from collections import Counter

    from zoo import TEST_PARAMS, get, make_inputs

    proto = get(name, **TEST_PARAMS[name])
    m = from_proto(proto)
    ref = copy_model(m)
    calib = [make_inputs(proto, seed=s, dims={"batch": 4}) for s in range(4)]
    ctx = quantize(m, Batches(calib), "fuse-batchnorm,fuse-activation," + QUANT_U8)
    agree = total = 0
    for s in range(2):
        f = make_inputs(proto, seed=100 + s, dims={"batch": 50})
        a = run(ref, f, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
        b = run(m, f)[0]
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
    assert agree / total > 0.9, agree / total
    totals = ctx.reports["quantization"]["totals"]
    assert totals["model_bytes_after"] <= max_ratio * totals["model_bytes_before"], totals
    fused = Counter(fused_ops(m))
    assert fused["QLinearConv"] >= 15 and fused["Conv"] == 0, fused
