"""int8 C target: integer-only C, bit-exact with the integer reference (edgec.quant.reference.run_integer).

Small float models are quantized by the edgec quantize pass (int8 activations, calibration data),
turned into the integer IR (edgec.backends.c.integerize), emitted as C, built with
-Wall -Wextra -Werror -fsanitize=address,undefined and compared with ``run_integer``: int8 outputs
(--int8-io) and float outputs of integer regions must be equal (0 LSB). The same QDQ models run in
onnxruntime stay within 1 LSB (histogram printed; 7-bit weights, since ORT's x86 kernels without VNNI
saturate with full-range weights).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgec.backends.c import write_c
from edgec.backends.c.integerize import check_int8, compile_int8, integerize
from edgec.backends.c.kernels_int8 import hal_reference
from edgec.backends.c.verify import build
from edgec.frontend.onnx_import import from_proto
from edgec.ir.parser import parse_model
from edgec.ir.printer import print_model
from edgec.passmanager import PassContext, PassManager, PassManagerOptions
from edgec.quant.data import load_calibration
from edgec.quant.reference import run_integer

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

OPSET = 21
RNG = np.random.default_rng(7)


# --- models -----------------------------------------------------------------------------------------
def _w(name: str, shape: Sequence[int], s: float = 0.3) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * s).astype(np.float32), name)


def _f32(name: str, v: float) -> onnx.TensorProto:
    return nh.from_array(np.array(v, np.float32), name)


def conv_net() -> onnx.ModelProto:
    """Conv (padded, grouped+strided, depthwise), Relu/Relu6, Add, Mul, MaxPool, Concat, a 1x1 Conv; two
    outputs. (Average pools get their own output scale from the quantize pass, so the reference runs them
    in float: they are tested below on QDQ graphs with shared parameters, as TFLite requires.)"""
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], group=2, strides=[2, 2], pads=[1, 0, 1, 1]),
        h.make_node("Clip", ["c2", "zero", "six"], ["r2"]),
        h.make_node("Conv", ["r2", "wd", "bd"], ["r3"], group=8, pads=[1, 1, 1, 1]),
        h.make_node("Add", ["r2", "r3"], ["a"]),
        h.make_node("MaxPool", ["a"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Mul", ["r3", "a"], ["m"]),
        h.make_node("MaxPool", ["m"], ["mp2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0]),
        h.make_node("Concat", ["mp", "mp2"], ["cat"], axis=1),
        h.make_node("Conv", ["cat", "w4", "b4"], ["y"]),
    ]
    inits = [_w("w1", [8, 4, 3, 3]), _w("b1", [8], 0.1), _w("w2", [8, 4, 3, 3]), _w("b2", [8], 0.1),
             _w("wd", [8, 1, 3, 3]), _w("bd", [8], 0.1), _w("w4", [6, 16, 1, 1]), _w("b4", [6], 0.1),
             _f32("zero", 0.0), _f32("six", 6.0)]
    g = h.make_graph(nodes, "convnet", [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 12, 12])],
                     [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("cat", T.FLOAT, None)],
                     inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)])


def fc_net() -> onnx.ModelProto:
    """Batched MatMul -> Relu -> MatMul, Gemm (transB=1), Slice and Concat (shared scales)."""
    nodes = [
        h.make_node("MatMul", ["x", "m1"], ["h1"]),
        h.make_node("Relu", ["h1"], ["r1"]),
        h.make_node("MatMul", ["r1", "m2"], ["h2"]),
        h.make_node("Slice", ["r1", "st", "en", "ax"], ["sl"]),
        h.make_node("Concat", ["h2", "sl"], ["cat"], axis=-1),
        h.make_node("Reshape", ["cat", "shape"], ["flat"]),
        h.make_node("Gemm", ["flat", "g1", "gb"], ["gm"], transB=1),
        h.make_node("Relu", ["gm"], ["gr"]),
        h.make_node("Reshape", ["gr", "shape4"], ["g4"]),
        h.make_node("Conv", ["g4", "wc"], ["y"]),
    ]
    inits = [_w("m1", [16, 24], 0.25), _w("m2", [24, 8], 0.2), _w("g1", [12, 80], 0.1), _w("gb", [12], 0.1),
             _w("wc", [5, 12, 1, 1]),
             nh.from_array(np.array([0], np.int64), "st"), nh.from_array(np.array([8], np.int64), "en"),
             nh.from_array(np.array([-1], np.int64), "ax"), nh.from_array(np.array([2, 80], np.int64), "shape"),
             nh.from_array(np.array([2, 12, 1, 1], np.int64), "shape4")]
    g = h.make_graph(nodes, "fcnet", [h.make_tensor_value_info("x", T.FLOAT, [2, 5, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("cat", T.FLOAT, None)],
                     inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)])


MODELS: Dict[str, Tuple[Callable[[], onnx.ModelProto], Callable[[int], Dict[str, np.ndarray]]]] = {
    "conv": (conv_net, lambda n: {"x": RNG.uniform(-1.5, 2.0, (n, 4, 12, 12)).astype(np.float32)}),
    "fc": (fc_net, lambda n: {"x": RNG.standard_normal((n * 2, 5, 16)).astype(np.float32)}),
}


def _split(feeds: Dict[str, np.ndarray], per: int) -> List[Dict[str, np.ndarray]]:
    n = next(iter(feeds.values())).shape[0] // per
    return [{k: v[i * per:(i + 1) * per] for k, v in feeds.items()} for i in range(n)]


def quantize(proto: onnx.ModelProto, cal: Dict[str, np.ndarray], *, per_channel: bool = True,
             reduce_range: bool = False) -> Any:
    """-O2 for the C target, then the quantize pass with int8 activations (what the CLI runs)."""
    from edgec.api import optimize

    m = from_proto(proto)
    optimize(m, opt_level=2, target="c")
    path = Path(tempfile.mkdtemp()) / "cal.npz"
    np.savez(path, **cal)
    opts = ["activations=int8"] + ([] if per_channel else ["per-channel=false"]) + \
        (["reduce-range=true"] if reduce_range else [])
    ctx = PassContext(resources={"calibration": load_calibration(str(path), m),
                                 "target": {"name": "c", "contrib_ops": False}})
    PassManager.with_options("quantize{" + ",".join(opts) + "},dce", PassManagerOptions(verify_each=True),
                             ctx=ctx).run(m)
    return m


def copy(model: Any) -> Any:
    return parse_model(print_model(model, elide_limit=None))


@pytest.fixture(scope="module")
def qmodels() -> Dict[Tuple[str, bool], Tuple[Any, List[Dict[str, np.ndarray]]]]:
    """QDQ models (per channel / per tensor) and a few test samples, built once."""
    out = {}
    for key, (make, data) in MODELS.items():
        per = 1 if key == "conv" else 2
        proto = make()
        for pc in (True, False):
            out[(key, pc)] = (quantize(proto, data(24), per_channel=pc), _split(data(3), per))
    return out


def build_c(tmp: Path, qdq: Any, *, rounding: str, int8_io: bool = False, placement: Any = None,
            sanitize: bool = True) -> Tuple[str, Any, Any]:
    code, res = compile_int8(copy(qdq), "model", rounding=rounding, int8_io=int8_io, placement=placement)
    write_c(code, str(tmp))
    prog = build(str(tmp), code.report, opt="-O1", sanitize=sanitize)
    return prog, code, res


# --- bit-exactness -----------------------------------------------------------------------------------
CASES = [  # model, per-channel weights, rounding, --int8-io, placement
    ("conv", True, "double", False, None),
    ("conv", False, "single", True, "cpu"),
    ("conv", True, "single", True, "mixed"),
    ("fc", True, "double", True, "cpu"),
    ("fc", False, "double", False, None),
    ("fc", True, "single", False, "mixed"),
]


def _placement(kind: Optional[str]) -> Any:
    if kind is None:
        return None
    if kind == "cpu":
        return lambda n: "cpu"
    seen: List[str] = []

    def alternate(n: Any) -> str:  # every other integer layer on the NPU HAL
        if n.name not in seen:
            seen.append(n.name)
        return "npu" if seen.index(n.name) % 2 == 0 else "cpu"

    return alternate


@pytest.mark.parametrize("key, per_channel, rounding, int8_io, place", CASES)
def test_bit_exact_with_integer_reference(key: str, per_channel: bool, rounding: str, int8_io: bool,
                                          place: Optional[str], qmodels: Any, tmp_path: Path) -> None:
    qdq, samples = qmodels[(key, per_channel)]
    prog, code, res = build_c(tmp_path, qdq, rounding=rounding, int8_io=int8_io, placement=_placement(place))
    stats: Dict[str, List[str]] = {}
    run_integer(qdq, samples[0], rounding=rounding, stats=stats)
    assert sorted(res.integer_nodes) == sorted(stats["integer"]), "integer regions differ from the reference's"
    assert not res.float_regions and not res.float_nodes, res.summary()
    ops = {L.get("source_op") for L in code.report["layers"] if L.get("placement")}
    want = {"conv": {"Conv", "Add", "Mul"}, "fc": {"MatMul", "Gemm", "Conv"}}[key]
    assert want <= ops, ops
    places = {L["placement"] for L in code.report["layers"] if "placement" in L and L["source_op"] not in
              ("QuantizeLinear", "DequantizeLinear")}
    assert places == ({"cpu"} if place in (None, "cpu") else {"npu", "cpu"}), places  # default: inline CPU kernels
    if int8_io:
        assert [t["dtype"] for t in code.report["inputs"] + code.report["outputs"]] == ["int8"] * 3
        hdr = (tmp_path / "model.h").read_text()
        assert re.search(r"#define MODEL_X_SCALE 0x[0-9a-f.p+-]+f", hdr) and "MODEL_X_ZERO_POINT" in hdr
    chk = check_int8(prog, code, qdq, samples, rounding=rounding, io=res.io)
    print(f"[{key} pc={per_channel} {rounding} int8_io={int8_io} {place}] {chk.summary()}")
    assert chk.ok and chk.max_float_diff == 0.0, chk.summary()


# --- hand-built QDQ graphs: requantization edge cases, average pools with shared parameters ------------
class QDQ:
    """A QDQ graph written directly in the IR (int8 or float inputs, per-tensor parameters)."""

    def __init__(self) -> None:
        from edgec.ir import Graph

        self.g = Graph("qdq")

    def input(self, name: str, shape: Sequence[int], dtype: Any = None) -> Any:
        from edgec.ir import DType, Shape, TensorType, Value

        return self.g.add_input(Value(name, TensorType(dtype or DType.FLOAT, Shape(tuple(shape)))))

    def op(self, op: str, inputs: Sequence[Any], attrs: Optional[Dict[str, Any]] = None) -> Any:
        from edgec.ir import Node

        n = Node(op, list(inputs), 1, attrs or {})
        self.g.append(n)
        return n.output(0)

    def q(self, x: Any, s: float, z: int) -> Any:
        return self.op("QuantizeLinear", [x, self.g.add_constant(np.float32(s), "s"), self.g.add_constant(np.int8(z), "z")])

    def dq(self, x: Any, s: float, z: int) -> Any:
        return self.op("DequantizeLinear", [x, self.g.add_constant(np.float32(s), "s"), self.g.add_constant(np.int8(z), "z")])

    def output(self, qv: Any, name: str) -> None:
        qn = qv.producer
        y = self.op("DequantizeLinear", [qv, qn.input(1), qn.input(2)])
        y.name = name
        self.g.add_output(y)

    def model(self) -> Any:
        from edgec.ir import Model
        from edgec.ir.shapes import infer_shapes

        m = Model(self.g, {"": OPSET})
        infer_shapes(m)
        return m


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_requantize_edge_cases_both_roundings(rounding: str, tmp_path: Path) -> None:
    """Every int8 input through DQ(s1) -> Q(s2) for ratios with exact ties (0.5, 0.25), above 1 and tiny:
    C equals the fixed-point contract; the two rounding modes differ on ties of negative values."""
    from edgec.ir import DType

    b = QDQ()
    x = b.input("x", (1, 256), DType.INT8)
    for i, (s1, z1, s2, z2) in enumerate([(0.5, 3, 1.0, -2), (0.25, -7, 1.0, 5), (1.0, 0, 0.3, 1), (0.02, 10, 3.0, 0),
                                          (1.0, -128, 0.00390625, 0)]):
        b.output(b.q(b.dq(x, s1, z1), s2, z2), f"y{i}")
    qdq = b.model()
    feeds = {"x": np.arange(-128, 128, dtype=np.int8).reshape(1, 256)}
    prog, code, res = build_c(tmp_path, qdq, rounding=rounding, int8_io=True)
    assert sum(1 for L in code.report["layers"] if L.get("source_op") == "QuantizeLinear") == 5
    chk = check_int8(prog, code, qdq, [feeds], rounding=rounding, io=res.io)
    assert chk.ok, chk.summary()
    other = "single" if rounding == "double" else "double"
    a = run_integer(qdq, feeds, rounding=rounding, return_quantized=True)
    o = run_integer(qdq, feeds, rounding=other, return_quantized=True)
    assert not np.array_equal(a["y1"], o["y1"])  # x/4 ties of negative x: away from zero vs towards +inf


POOLS = [
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER", "count_include_pad": 1}),
    ("GlobalAveragePool", {}),
]


@pytest.mark.parametrize("rounding, io", [("double", True), ("single", False)])
def test_average_pools_shared_parameters(rounding: str, io: bool, tmp_path: Path) -> None:
    """AveragePool (valid, padded without/with the pad counted, SAME) and GlobalAveragePool in integer."""
    b = QDQ()
    xq = b.q(b.input("x", (2, 5, 9, 9)), 0.02, -20)
    for i, (pool, attrs) in enumerate(POOLS):
        p = b.op(pool, [b.dq(xq, 0.02, -20)], attrs)
        b.output(b.q(b.op("Relu", [p]) if i % 2 else p, 0.02, -20), f"y{i}")  # Relu: a clamp at the zero point
    qdq = b.model()
    x = RNG.uniform(-2.0, 2.5, (2, 5, 9, 9)).astype(np.float32)
    prog, code, res = build_c(tmp_path, qdq, rounding=rounding, int8_io=io)
    assert sorted(L.get("source_op") for L in code.report["layers"] if L["op"] == "edgec::QAvgPool") == \
        sorted(p for p, _ in POOLS)
    chk = check_int8(prog, code, qdq, [{"x": x}], rounding=rounding, io=res.io)
    assert chk.ok and chk.max_float_diff == 0.0, chk.summary()


# --- onnxruntime: <= 1 LSB ----------------------------------------------------------------------------
def _ort_ints(qdq: Any, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    from edgec.backends.onnx_export import to_proto
    from edgec.backends.onnx_lowering import lower_for_onnx

    m = copy(qdq)
    lower_for_onnx(m)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 4
    sess = ort.InferenceSession(to_proto(m).SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    res = {}
    for v, y in zip(m.graph.outputs, outs):
        dq = v.producer
        s, z = dq.input(1).const.numpy(), dq.input(2).const.numpy()
        res[v.name] = (np.rint(y / s) + z).astype(z.dtype)
    return res


@pytest.mark.parametrize("key", ["conv", "fc"])
def test_within_one_lsb_of_onnxruntime(key: str) -> None:
    """Layer by layer (each integer region alone in ORT, fed the reference's int8 inputs): <= 1 LSB.
    Through a whole network 1-LSB differences propagate, so the end-to-end histogram is printed only."""
    from edgec.backends.c.integerize import ort_lsb_per_layer

    make, data = MODELS[key]
    qdq = quantize(make(), data(24), reduce_range=True)
    per = 1 if key == "conv" else 2
    hist: Dict[int, int] = {}
    layers = set()
    for feeds in _split(data(3), per):
        for layer, hst in ort_lsb_per_layer(qdq, feeds).items():
            layers.add(layer)
            for k, c in hst.items():
                hist[k] = hist.get(k, 0) + c
        ref = run_integer(qdq, feeds, return_quantized=True)
        ort_q = _ort_ints(qdq, feeds)
        end = {k: {int(a): int(b) for a, b in zip(*np.unique(ref[k].astype(np.int64) - ort_q[k], return_counts=True))}
               for k in ref}
    total = sum(hist.values())
    print(f"[{key}] int8 C (= reference) - onnxruntime per layer ({len(layers)} layers), LSB histogram: "
          f"{dict(sorted(hist.items()))} ({hist.get(0, 0) / total:.2%} exact of {total}); end to end: {end}")
    assert len(layers) >= 4
    assert max(abs(k) for k in hist) <= 1, hist


# --- no float in quantized layers -----------------------------------------------------------------------
def _code_only(c: str) -> str:
    return re.sub(r"/\*.*?\*/", "", c, flags=re.S)


_FLOAT = re.compile(r"\b(float|double|fabsf?|rintf?|roundf?|expf?|sqrtf?)\b|\d\.\d|0x[0-9a-f.]+p[+-]?\d+f?\b")


def test_quantized_layers_have_no_float_arithmetic(qmodels: Any, tmp_path: Path) -> None:
    qdq, _ = qmodels[("conv", True)]
    for where, placement in (("npu", lambda n: "npu"), ("cpu", None)):
        code, res = compile_int8(copy(qdq), "model", int8_io=True, placement=placement)
        c = code.files["model.c"]
        layers = [L for L in code.report["layers"] if L.get("placement")]
        assert layers
        for L in layers:
            fname = f"model_l{L['index']}_{L['op'].split(':')[-1]}"
            m = re.search(rf"static void {fname}\((.*?)\)\n\{{\n(.*?)\n\}}\n", c, re.S)
            assert m, fname
            assert not _FLOAT.search(_code_only(m.group(1) + m.group(2))), (fname, m.group(0))
        # the kernels the layers call: the HAL reference, or the inline CPU kernels
        if where == "npu":
            assert not _FLOAT.search(_code_only(code.files["model_npu_ref.c"]))
            assert not _FLOAT.search(_code_only(code.files["model_npu.h"]))
        else:
            kernels = c[c.index("/* --- kernels --- */"):c.index("/* --- layers --- */")]
            assert "edgec_q_conv2d_s8" in kernels and not _FLOAT.search(_code_only(kernels)), kernels[:400]
        assert not res.float_nodes
    assert not _FLOAT.search(_code_only(hal_reference("m")))


def test_overflow_proof_widens_to_int64(tmp_path: Path) -> None:
    """A huge-K layer whose static bound K*128*max|W| + |B| exceeds int32 accumulates in int64 (and stays exact)."""
    k = 133000
    w = np.full((k, 2), 0.01, np.float32)
    w[::2, :] = -0.01  # the sums cancel: the actual accumulators are small, the static bound is not
    w[1::4, 1] = 0.005
    nodes = [h.make_node("MatMul", ["x", "w"], ["mm"]), h.make_node("Relu", ["mm"], ["r"]),
             h.make_node("Reshape", ["r", "s"], ["r4"]), h.make_node("Conv", ["r4", "wc"], ["y"])]
    g = h.make_graph(nodes, "wide", [h.make_tensor_value_info("x", T.FLOAT, [1, k])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)],
                     [nh.from_array(w, "w"), nh.from_array(np.array([1, 2, 1, 1], np.int64), "s"), _w("wc", [2, 2, 1, 1])])
    proto = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)])
    cal = {"x": RNG.uniform(0, 1, (2, k)).astype(np.float32)}
    qdq = quantize(proto, cal)
    prog, code, res = build_c(tmp_path, qdq, rounding="double", sanitize=False)  # 270k weight literals
    wide = [o for o in res.overflow if o["acc"] == "int64"]
    assert wide and wide[0]["bound"] > 2**31 - 1, res.overflow
    chk = check_int8(prog, code, qdq, [{"x": cal["x"][:1]}], rounding="double", io=res.io)
    assert chk.ok, chk.summary()


def test_integerize_keeps_float_regions_float() -> None:
    """A region the reference runs in float (LeakyRelu cannot become a clamp) stays float nodes."""
    nodes = [h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("LeakyRelu", ["c"], ["l"]),
             h.make_node("Conv", ["l", "w2"], ["y"])]
    g = h.make_graph(nodes, "lr", [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 5, 5])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], [_w("w", [3, 2, 3, 3]), _w("w2", [2, 3, 1, 1])])
    qdq = quantize(h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)]),
                   {"x": RNG.standard_normal((8, 2, 5, 5)).astype(np.float32)})
    m = copy(qdq)
    res = integerize(m)
    ops = [n.op_type for n in m.graph]
    assert "QConv" in ops, ops
    assert any(n.startswith("FusedConv") or n.startswith("Conv") or n.startswith("LeakyRelu") for n in res.float_nodes) \
        or res.float_regions, res.summary()


# --- the trained digits CNN through the CLI ----------------------------------------------------------
def test_digits_cnn_cli_end_to_end(tmp_path: Path) -> None:
    """`edgec compile --quantize int8 --target c` on the trained digits CNN: on the whole test split the int8
    features equal the integer reference bit for bit, the logits (a float Gemm, as the reference runs it) stay
    within float tolerance, and top-1 stays within 0.5 points of the float model."""
    import json

    import onnx.version_converter
    import onnxruntime as ort
    from click.testing import CliRunner

    from edgec.backends.c.integerize import build_batch, run_batch
    from edgec.cli import cli
    from edgec.frontend.onnx_import import load_model
    from zoo.digits import digits_cnn, digits_data, write_digits_npz

    proto = onnx.version_converter.convert_version(digits_cnn(), OPSET)  # run_integer's float DQ needs >= 19
    flat = next(n for n in proto.graph.node if n.op_type == "Flatten")
    proto.graph.output.append(h.make_tensor_value_info(flat.output[0], T.FLOAT, None))  # the int8 features
    path = tmp_path / "digits.onnx"
    onnx.save(proto, str(path))
    cal = write_digits_npz(tmp_path / "cal.npz", "calibration")
    x, y = digits_data("test")
    out = tmp_path / "c"
    r = CliRunner().invoke(cli, ["compile", str(path), "--quantize", "int8", "--calibration", str(cal), "--target", "c",
                                 "--input-shape", "input=1x1x8x8", "-o", str(out), "--verify"])
    assert r.exit_code == 0, r.output
    print(r.output.strip().splitlines()[-2][:240])
    assert "PASS: 3/3 samples bit-exact" in r.output
    report = json.loads((out / "report.json").read_text())
    assert all(L.get("placement") == "cpu" for L in report["layers"] if L["op"].startswith("edgec::Q"))
    prog = build_batch(str(out), report, opt="-O2")  # the sanitizer builds are the tests above
    got, _ = run_batch(prog, report, [{"input": x[i:i + 1]} for i in range(len(x))])
    logits = np.concatenate([g[0] for g in got])
    feats = np.concatenate([g[1] for g in got])
    # the integer reference on the same QDQ model (quantized as the CLI does, batch dim left free)
    m = load_model(str(path))
    from edgec.api import optimize

    optimize(m, opt_level=2, target="c")
    ctx = PassContext(resources={"calibration": load_calibration(str(cal), m),
                                 "target": {"name": "c", "contrib_ops": False}})
    PassManager.with_options("quantize{activations=int8},repeat{max-iters=4}(cse,dce)", PassManagerOptions(),
                             ctx=ctx).run(m)
    ref = run_integer(m, {"input": x})
    names = [t["name"] for t in report["outputs"]]
    assert np.array_equal(feats, ref[names[1]]), "int8 features differ from the integer reference"
    np.testing.assert_allclose(logits, ref[names[0]], rtol=1e-5, atol=1e-5)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    top1_float = float((sess.run(None, {"input": x})[0].argmax(1) == y).mean())
    top1_c = float((logits.argmax(1) == y).mean())
    top1_ref = float((ref[names[0]].argmax(1) == y).mean())
    print(f"digits test top-1 ({len(y)} images): float {100 * top1_float:.2f}%, int8 C {100 * top1_c:.2f}%, "
          f"integer reference {100 * top1_ref:.2f}% (drop {100 * (top1_float - top1_c):.2f} points)")
    assert top1_c == top1_ref
    assert top1_float - top1_c <= 0.005
