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
    # the scores MatMul's output feeds only float ops (Mul, Softmax): it is not requantized
    assert sm.input(0).producer.op_type == "Mul"
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


# --- transformer rules: float-only readers, attention masks, Gather tables ---------------------------
def masked_attention() -> Model:
    """Scores + additive mask (``(1 - mask) * -10000``) -> Softmax -> MatMul, then a residual Add
    and LayerNormalization: the BERT encoder's float-sensitive spots."""
    d = 16
    inits = {"wq": _w(d, d), "wk": _w(d, d), "wv": _w(d, d), "wo": _w(d, d), "bo": _w(d, s=0.1),
             "one": np.array(1.0, np.float32), "big": np.array(-10000.0, np.float32),
             "gamma": np.ones(d, np.float32), "beta": np.zeros(d, np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"], name="scores"),
        helper.make_node("Sub", ["one", "mask"], ["inv"]),
        helper.make_node("Mul", ["inv", "big"], ["bias"]),
        helper.make_node("Add", ["s0", "bias"], ["s1"], name="mask_add"),
        helper.make_node("Softmax", ["s1"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["a"]),
        helper.make_node("MatMul", ["a", "wo"], ["o0"], name="dense"),
        helper.make_node("Add", ["o0", "bo"], ["o1"], name="bias_add"),
        helper.make_node("Add", ["o1", "x"], ["r"], name="residual"),
        helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["y"], axis=-1),
    ]
    # dynamic batch/sequence as exported transformers have (with static shapes ORT's MatMulAddFusion
    # turns DQ -> MatMul -> Add(bias) into a float Gemm before its QDQ fusions run)
    return make_model(nodes, [fvi("x", ["b", "s", d]), fvi("mask", ["b", 1, "s"])], [fvi("y", ["b", "s", d])], inits)


def mask_feeds(n: int, seed: int) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        mask = np.ones((1, 1, 8), np.float32)
        mask[..., int(rng.integers(4, 8)):] = 0.0  # padded positions
        out.append({"x": rng.standard_normal((1, 8, 16)).astype(np.float32), "mask": mask})
    return out


def _quantized_values(m: Model) -> List[str]:
    return [n.input(0).name for n in m.graph if n.op_type == "QuantizeLinear"]


def test_mask_chain_scores_and_residual_stay_float():
    m = masked_attention()
    ref = copy_model(m)
    quantize(m, Batches(mask_feeds(16, 0)), QUANT_U8)
    quantized = set(_quantized_values(m))
    # the mask chain, the masked scores and the residual stream never get an 8-bit scale
    assert not quantized & {"inv", "bias", "s0", "s1", "o0", "o1", "r"}, quantized
    assert {"x", "p", "a"} <= quantized  # MatMul inputs are quantized
    by_name = {n.name: n for n in m.graph}
    assert by_name["mask_add"].input(1).producer.op_type == "Mul"
    # x feeds MatMuls (through Q/DQ) and the residual Add, which reads the exact float x
    assert by_name["residual"].input(1).is_graph_input()
    for f in mask_feeds(3, 1):
        want = run(ref, f, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
        got = run(m, f)[0]
        assert cosine(want, got) > 0.995
    fused = fused_ops(m)
    assert "DequantizeLinear" not in fused, fused  # every quantized MatMul runs an integer kernel
    assert fused.count("MatMulIntegerToFloat") + fused.count("QLinearMatMul") == 6, fused


def test_mask_value_detection():
    from edgec.passes.quantize import _mask_values

    m = masked_attention()
    names = {v.name for v in m.graph.values() if id(v) in _mask_values(m)}
    assert names == {"bias", "s1"}  # Sub(1, mask) carries no fill value yet; Softmax stops the chain


def test_arith_with_a_float_input_is_not_quantized_but_int8_inputs_are():
    """An Add whose inputs are both produced in int8 (Conv outputs) runs as QLinearAdd; one whose
    input comes from a float op stays float instead of adding a QuantizeLinear on that input."""
    m = make_model([helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
                    helper.make_node("Conv", ["x", "w2"], ["b"], name="c2"),
                    helper.make_node("Add", ["a", "b"], ["s"], name="int8_add"),
                    helper.make_node("Sigmoid", ["s"], ["t"]),
                    helper.make_node("Add", ["t", "a"], ["y"], name="float_add")],
                   [fvi("x", [1, 3, 8, 8])], [fvi("y", [1, 4, 8, 8])],
                   {"w1": _w(4, 3, 1, 1), "w2": _w(4, 3, 1, 1)})
    ref = copy_model(m)
    ctx = quantize(m, Batches(feeds_for(m, 8)), QUANT_U8)
    names = {e["name"] for e in ctx.reports["quantization"]["nodes"]}
    assert "int8_add" in names and "float_add" not in names
    assert "t" not in _quantized_values(m)
    check_close(ref, m, feeds_for(ref, 3, seed=1))
    assert "QLinearAdd" in fused_ops(m)


def embedding_model(vocab: int = 200, d: int = 16) -> Model:
    rng = np.random.default_rng(7)
    inits = {k: (rng.standard_normal(shape) * s).astype(np.float32)
             for k, shape, s in (("table", (vocab, d), 0.05), ("pos", (8, d), 0.02), ("w", (d, d), 0.3))}
    inits["table"][:, 3] *= 20.0  # an outlier column: per-column scales keep the other columns precise
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="word_embeddings"),
             helper.make_node("Gather", ["pos", "pids"], ["p"], name="position_embeddings"),
             helper.make_node("Add", ["e", "p"], ["h"]),
             helper.make_node("MatMul", ["h", "w"], ["y"])]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])
    pids = helper.make_tensor_value_info("pids", TensorProto.INT64, [1, 8])
    return make_model(nodes, [ids, pids], [fvi("y", [1, 8, d])], inits)


def ids_feeds(n: int, seed: int, vocab: int = 200) -> List[Dict[str, np.ndarray]]:
    """``n`` batches of 8 token ids; a shuffled vocabulary first, so calibration sees every row."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([rng.permutation(vocab), rng.integers(0, vocab, 8 * n)])
    return [{"ids": ids[8 * i:8 * i + 8].astype(np.int64)[None], "pids": np.arange(8, dtype=np.int64)[None]}
            for i in range(n)]


def test_gather_table_int8_per_column_gathered_then_dequantized():
    m = embedding_model()
    ref = copy_model(m)
    ctx = quantize(m, Batches(ids_feeds(25, 0)), QUANT_U8)
    g = next(n for n in m.graph if n.name == "word_embeddings")
    table = g.input(0)
    assert table.dtype == DType.INT8 and table.type.quant.axis == 1 and table.type.quant.scale.shape == (16,)
    assert g.output(0).dtype == DType.INT8
    dq = g.output(0).consumers()[0]
    assert dq.op_type == "DequantizeLinear" and dq.attr("axis") == 2
    pos = next(n for n in m.graph if n.name == "position_embeddings")
    assert pos.input(0).dtype == DType.FLOAT  # 128 elements: below GATHER_MIN_ELEMENTS, left float
    entry = next(e for e in ctx.reports["quantization"]["nodes"] if e["name"] == "word_embeddings")
    assert entry["weight_bytes_quantized"] < 0.3 * entry["weight_bytes_float"]
    for f in ids_feeds(3, 1):
        want = run(ref, f, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
        for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            assert cosine(want, run(m, f, level)[0]) > 0.995
    # every table entry is within half a step of its column's scale (the outlier column has its own)
    orig = next(v for v in ref.graph.values() if v.name == "table").const.numpy()
    qp = table.type.quant
    back = table.const.numpy().astype(np.float32) * qp.scale[None, :]
    assert np.all(np.abs(back - orig) <= qp.scale[None, :] / 2 + 1e-7)
    assert qp.scale[3] > 10 * np.median(qp.scale)
    assert "Gather" in fused_ops(m)


def test_gather_tables_option_and_exclude():
    for pipeline in ("quantize{gather-tables=false}", "quantize{exclude=word_embeddings}"):
        m = embedding_model()
        quantize(m, Batches(ids_feeds(2, 0)), pipeline)
        g = next(n for n in m.graph if n.name == "word_embeddings")
        assert g.input(0).dtype == DType.FLOAT, pipeline
