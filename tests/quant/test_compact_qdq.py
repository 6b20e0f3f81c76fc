"""The quantized file for onnxruntime: compact, as fast as its kernels allow, and the same numbers.

- compact form (quantize ``compact``, on for the ONNX target): movers run on the integers, bias
  scales are ``Mul(s_w, s_in)``; the writer's ``compact=True`` drops attributes that restate their
  default and the quantizer's made-up node names. onnxruntime must fuse the same kernels and
  compute bit for bit what it computes from the plain form.
- cost rule 9: a Conv with fewer than 4 input channels stays float for onnxruntime (its int8
  kernel is 2-3x slower there); the MaxPool after it stays float too (Relu moved after it).
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from edgec.backends.onnx_export import save_model  # noqa: E402
from edgec.ir import Model  # noqa: E402
from edgec.passmanager import PassContext, PassManager, PassManagerOptions  # noqa: E402

from quant.test_ort_fusion import _calib, _w, ort_optimized, small_cnn  # noqa: E402
from quant.test_quantize import copy_model, fvi, make_model, run  # noqa: E402

#: What ``edgec compile --quantize int8`` runs after the preset (reduce-range: this CI's x86).
PIPELINE = "fuse-activation,quantize{reduce-range=true,activations=uint8},cse,dce,lower-onnx"
ONNX = {"name": "onnx", "contrib_ops": False}
C = {"name": "c", "contrib_ops": False}


def quantized(model: Model, target: Optional[Dict[str, Any]], pipeline: str = PIPELINE) -> Dict[str, Any]:
    """Quantize ``model`` in place for ``target`` (None: no target given); returns the pass reports."""
    ctx = PassContext(resources={"calibration": _calib(model).load(model), **({"target": target} if target else {})})
    PassManager.with_options(pipeline, PassManagerOptions(verify_each=True), ctx=ctx).run(model)
    return ctx.reports


def cnn4() -> Model:
    """Conv-Relu-MaxPool-Conv-Relu-MaxPool-Reshape-Gemm on 4x8x8 inputs: every layer int8."""
    rng = np.random.default_rng(7)
    inits = {"w1": _w(rng, 8, 4, 3, 3), "b1": _w(rng, 8, s=0.1), "w2": _w(rng, 8, 8, 3, 3, s=0.2),
             "b2": _w(rng, 8, s=0.1), "fc.weight": _w(rng, 10, 32, s=0.2), "fc.bias": _w(rng, 10, s=0.1),
             "shape": np.array([-1, 32], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[1, 1],
                              dilations=[1, 1], group=1, kernel_shape=[3, 3], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=0,
                              name="pool1"),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2], name="pool2"),
             helper.make_node("Reshape", ["p2", "shape"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1, alpha=1.0, beta=1.0, name="fc")]
    return make_model(nodes, [fvi("x", ["n", 4, 8, 8])], [fvi("y", ["n", 10])], inits)


def ort_run(path: str, x: np.ndarray, level: Any) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 4
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def producers(proto: onnx.ModelProto) -> Dict[str, onnx.NodeProto]:
    return {o: n for n in proto.graph.node for o in n.output}


def test_compact_form_fuses_the_same_and_computes_the_same_bits() -> None:
    plain, compact = cnn4(), cnn4()
    quantized(plain, None, PIPELINE.replace("activations=uint8", "activations=uint8,compact=off"))
    quantized(compact, ONNX)
    x = np.abs(np.random.default_rng(5).standard_normal((4, 4, 8, 8))).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        p_plain, p_compact = str(Path(d) / "plain.onnx"), str(Path(d) / "compact.onnx")
        save_model(plain, p_plain, value_info=False)
        save_model(compact, p_compact, value_info=False, compact=True)
        onnx.checker.check_model(p_compact, full_check=True)
        for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            assert np.array_equal(ort_run(p_plain, x, level), ort_run(p_compact, x, level)), level
        fused = Counter(ort_optimized(p_compact, d))
        assert fused["QLinearConv"] == 2 and fused["QGemm"] == 1, fused
        assert not {"Conv", "Gemm", "DequantizeLinear", "Relu"} & set(fused), fused
        assert Path(p_compact).stat().st_size < Path(p_plain).stat().st_size - 300
        proto = onnx.load(p_compact)
    # movers run on the integers: MaxPool and Reshape read QuantizeLinear (or mover) outputs
    prod = producers(proto)
    nodes = {n.name: n for n in proto.graph.node if n.name}
    for name in ("pool1", "pool2", "flatten"):
        assert prod[nodes[name].input[0]].op_type in ("QuantizeLinear", "MaxPool"), name
    assert {"p1", "p2", "f"} <= set(prod)  # their source names stay
    # bias scales are computed from the input and weight scales, not stored
    layers = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(layers) == 3
    for layer in layers:
        bias_dq = prod[layer.input[2]]
        assert bias_dq.op_type == "DequantizeLinear" and prod[bias_dq.input[1]].op_type == "Mul", layer.name
    # no attribute restating its default, no made-up node names; the interface is unchanged
    assert [{a.name for a in n.attribute} for n in layers] == [{"pads"}, {"pads"}, {"transB"}]
    assert {a.name for a in nodes["pool1"].attribute} == {"kernel_shape", "strides"}
    assert all(n.name == "" for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Mul"))
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["y"]


def test_plain_form_without_the_onnx_target() -> None:
    """The integer reference and the C back end read the plain form: no target, no compact form."""
    m = cnn4()
    quantized(m, C)
    ops = [n.op_type for n in m.graph]
    assert "Mul" not in ops
    pools = [n for n in m.graph if n.op_type == "MaxPool"]
    assert all(p.input(0).producer.op_type == "DequantizeLinear" for p in pools)


def thin_first_conv(model: Model) -> bool:
    """Whether the 1-channel first Conv kept its float weight."""
    conv = next(n for n in model.graph if n.op_type == "Conv")
    return conv.input(1).producer is None and conv.input(1).const is not None


def test_thin_conv_stays_float_for_onnxruntime_and_its_pool_too() -> None:
    m = small_cnn()
    ref = copy_model(m)
    reports = quantized(m, ONNX)
    assert thin_first_conv(m)
    assert len(reports["quantization"]["kept_float_for_speed"]) == 1  # conv1 (fused with its Relu)
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "q.onnx")
        save_model(m, path, value_info=False, compact=True)
        proto = onnx.load(path)
        fused = ort_optimized(path, d)
        opt = onnx.load(str(Path(d) / "opt.onnx"))
        x = np.abs(np.random.default_rng(5).standard_normal((4, 1, 8, 8))).astype(np.float32)
        got = ort_run(path, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    # the Relu went after the float MaxPool and stays there: a QuantizeLinear right after the pool
    # would be propagated backward by onnxruntime, turning the pool into a (20x slower) uint8 one
    prod = producers(proto)
    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear")
    assert prod[q.input[0]].op_type == "Relu" and prod[prod[q.input[0]].input[0]].op_type == "MaxPool"
    assert Counter(fused)["QLinearConv"] == 1 and "QGemm" in fused, fused
    opt_prod = producers(opt)
    assert not [n for n in opt.graph.node if n.op_type == "MaxPool" and n.input[0] in opt_prod
                and opt_prod[n.input[0]].op_type == "QuantizeLinear"], "uint8 MaxPool in onnxruntime's graph"
    want = run(ref, {"x": x})[0]
    cos = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos > 0.99, cos


def test_thin_conv_quantized_for_the_c_target_or_when_asked() -> None:
    for target, pipeline in ((C, PIPELINE), (None, PIPELINE),
                             (ONNX, PIPELINE.replace("activations=uint8", "activations=uint8,thin-convs=int8"))):
        m = small_cnn()
        reports = quantized(m, target, pipeline)
        assert not thin_first_conv(m), target
        assert reports["quantization"]["kept_float_for_speed"] == []


def test_compact_save_drops_only_attributes_that_mean_the_same() -> None:
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], dilations=[1, 1], group=1,
                              pads=[0, 0, 0, 0], kernel_shape=[3, 3], name="conv"),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                              ceil_mode=0, name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flat"),
             helper.make_node("Gemm", ["f", "fw"], ["y"], alpha=1.0, beta=0.5, transB=1, name="fc")]
    m = make_model(nodes, [fvi("x", [2, 3, 9, 9])], [fvi("y", [2, 5])],
                   {"w": _w(rng, 4, 3, 3, 3), "fw": _w(rng, 5, 64)})
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        full, small = str(Path(d) / "full.onnx"), str(Path(d) / "small.onnx")
        save_model(m, full)
        save_model(m, small, compact=True)
        onnx.checker.check_model(small, full_check=True)
        proto = onnx.load(small)
        level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        assert np.array_equal(ort_run(full, x, level), ort_run(small, x, level))
    attrs: Dict[str, List[str]] = {n.name: sorted(a.name for a in n.attribute) for n in proto.graph.node}
    assert attrs == {"conv": ["strides"], "pool": ["kernel_shape", "pads"], "flat": [], "fc": ["beta", "transB"]}


def test_dynamic_quantization_names_stay_short() -> None:
    """quantize-dynamic: the int8 weight keeps the float weight's name, the integer op the layer's,
    the rest is short and (in a compact save) unnamed; the numbers do not depend on names."""
    m = cnn4()
    ref = copy_model(m)
    PassManager.with_options("infer-shapes,fuse-activation,quantize-dynamic,cse,dce,lower-onnx",
                             PassManagerOptions(verify_each=True), ctx=PassContext()).run(m)
    x = np.abs(np.random.default_rng(5).standard_normal((4, 4, 8, 8))).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "dyn.onnx")
        save_model(m, path, value_info=False, compact=True)
        proto = onnx.load(path)
        got = ort_run(path, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    integer = [n for n in proto.graph.node if n.op_type in ("ConvInteger", "MatMulInteger")]
    assert len(integer) == 3 and all(n.name for n in integer)
    assert {n.input[1] for n in integer} == {"w1", "w2", "fc.weight"}
    assert all(n.name == "" for n in proto.graph.node if n.op_type in ("DynamicQuantizeLinear", "Cast", "Mul"))
    source = {"x", "y", "w1", "w2", "fc.weight", "p1", "p2", "f", "shape"}
    names = {t.name for t in proto.graph.initializer} | {o for n in proto.graph.node for o in n.output}
    assert max(len(s) for s in names - source) <= 3, sorted(names - source)
    want = run(ref, {"x": x})[0]
    cos = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos > 0.99, cos
