"""edgec.quant.reference: the integer simulation of QDQ graphs against onnxruntime and the float meaning."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import pytest

from edgec.backends.onnx_export import to_proto
from edgec.ir import DType, Graph, Model, Node, Shape, TensorType, Value
from edgec.ir.shapes import infer_shapes
from edgec.ops import evaluate
from edgec.quant.reference import IntegerOverflowError, run_float_reference, run_integer

OPSET = 21
ROUNDINGS = ("double", "single")
#: Weight range of the tests: ORT's x86 u8s8 kernels without VNNI (AVX2 vpmaddubsw) saturate int16 pair
#: sums at full 8-bit weights, so its QLinearConv/QGemm outputs would be off by many LSB; 7-bit weights
#: (the quantize pass's reduce-range) keep ORT exact. The simulator itself is range-agnostic.
WMAX = 63


# --- building QDQ graphs with the IR API ---------------------------------------------------------
def act_params(lo: float, hi: float) -> Tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] and 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = float(np.float32((hi - lo) / 255.0))
    return s, int(np.clip(np.rint(-128 - lo / s), -128, 127))


def float_op(op: str, inputs: Sequence[Optional[np.ndarray]], attrs: Optional[Dict[str, Any]] = None) -> np.ndarray:
    n = Node(op, [Value(f"i{k}") for k in range(len(inputs))], 1, attrs or {})
    return evaluate(n, list(inputs), OPSET)[0]


class QDQBuilder:
    def __init__(self) -> None:
        self.g = Graph("qdq")
        self.edgec = False

    def input(self, name: str, shape: Sequence[int]) -> Value:
        return self.g.add_input(Value(name, TensorType(DType.FLOAT, Shape(tuple(shape)))))

    def const(self, arr: Any, hint: str = "c") -> Value:
        return self.g.add_constant(np.asarray(arr), hint)

    def op(self, op_type: str, inputs: Sequence[Optional[Value]], attrs: Optional[Dict[str, Any]] = None,
           domain: str = "") -> Value:
        self.edgec |= domain == "edgec"
        n = Node(op_type, list(inputs), 1, attrs or {}, domain=domain)
        self.g.append(n)
        return n.output(0)

    def q(self, x: Value, s: float, zp: int) -> Value:
        return self.op("QuantizeLinear", [x, self.const(np.float32(s), "s"), self.const(np.int8(zp), "zp")])

    def dq(self, q: Value, s: Any, zp: Any, axis: Optional[int] = None) -> Value:
        attrs = {} if axis is None else {"axis": axis}
        return self.op("DequantizeLinear", [q, self.const(np.asarray(s, np.float32), "s"), self.const(zp, "zp")], attrs)

    def qdq(self, x: Value, s: float, zp: int) -> Value:
        return self.dq(self.q(x, s, zp), s, np.int8(zp))

    def weight(self, w: np.ndarray, axis: Optional[int]) -> Tuple[Value, np.ndarray, np.ndarray]:
        """Symmetric int8 weight (per-channel along ``axis`` or per-tensor) behind a DequantizeLinear."""
        if axis is None:
            s = np.float32(np.abs(w).max() / WMAX)
            sb = np.asarray(s)
        else:
            red = tuple(i for i in range(w.ndim) if i != axis)
            s = (np.abs(w).max(axis=red) / WMAX).astype(np.float32)
            sb = s.reshape([-1 if i == axis else 1 for i in range(w.ndim)])
        q = np.clip(np.rint(w / sb), -WMAX, WMAX).astype(np.int8)
        zp = np.zeros(np.shape(s), np.int8)
        v = self.dq(self.const(q, "w_q"), s, zp, axis)
        return v, np.asarray(s), (q.astype(np.float32) * sb).astype(np.float32)

    def bias(self, b: np.ndarray, s_acc: np.ndarray) -> Value:
        s_acc = np.asarray(s_acc, np.float32)
        q = np.rint(b / s_acc).astype(np.int32)
        return self.dq(self.const(q, "b_q"), s_acc, np.zeros(s_acc.shape, np.int32), 0 if s_acc.size > 1 else None)

    def output(self, v: Value, name: str) -> None:
        """A graph output: the DequantizeLinear of the QuantizeLinear ``v`` (so ORT fuses the Q into
        QLinear* kernels); ``return_quantized`` gives its integers."""
        qn = v.producer
        y = self.op("DequantizeLinear", [v, qn.input(1), qn.input(2)])
        y.name = name
        self.g.add_output(y)

    def model(self) -> Model:
        opsets = {"": OPSET, **({"edgec": 1} if self.edgec else {})}
        m = Model(self.g, opsets)
        infer_shapes(m)
        return m


def to_int(model: Model, name: str, y: np.ndarray) -> np.ndarray:
    """The integers behind a float graph output ``name`` = DequantizeLinear(q, scale, zero point)."""
    dq = next(v for v in model.graph.outputs if v.name == name).producer
    s, zp = dq.input(1).const.numpy(), dq.input(2).const.numpy()
    return (np.rint(y / s) + zp).astype(zp.dtype)


# --- comparison ------------------------------------------------------------------------------------
def lsb_histogram(a: np.ndarray, b: np.ndarray) -> Dict[int, int]:
    d = a.astype(np.int64) - b.astype(np.int64)
    vals, counts = np.unique(d, return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, counts)}


def ort_kernels(model: Model) -> List[str]:
    """The op types of the graph onnxruntime runs (its saved optimized model)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        so.log_severity_level = 4
        ort.InferenceSession(to_proto(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def check_against_ort(model: Model, feeds: Dict[str, np.ndarray], ort_run, label: str,
                      expect_integer: Sequence[str] = (), ort_integer: Sequence[str] = ()) -> None:
    """Integer simulation (both roundings) vs onnxruntime (<= 1 LSB, >= 95% exact) and vs the float meaning.

    ``ort_integer``: integer kernels ORT must have fused the QDQ graph into (so the comparison is
    against ORT's integer arithmetic, not its float path)."""
    kernels = ort_kernels(model)
    print(f"[{label}] ORT runs {kernels}")
    for op in ort_integer:
        assert op in kernels, kernels
    names = [v.name for v in model.graph.outputs]
    ort_out = {k: to_int(model, k, v) for k, v in zip(names, ort_run(to_proto(model), feeds))}
    flt = {k: to_int(model, k, v) for k, v in run_float_reference(model, feeds).items()}
    for rounding in ROUNDINGS:
        stats: Dict[str, List[str]] = {}
        ours = run_integer(model, feeds, rounding=rounding, return_quantized=True, stats=stats)
        ran = [n for n in stats["integer"]]
        for op in expect_integer:
            assert any(op in n for n in ran), f"{op} did not run in integer: {stats}"
        for name in names:
            o, r, f = ours[name], ort_out[name], flt[name]
            assert o.dtype == r.dtype and o.shape == r.shape, (name, o.dtype, r.dtype, o.shape, r.shape)
            hist = lsb_histogram(o, r)
            exact = hist.get(0, 0) / o.size
            print(f"[{label}/{name}/{rounding}] LSB diff vs ORT: {hist}  exact {exact:.2%}  "
                  f"vs float meaning: {lsb_histogram(o, f)}")
            assert max(abs(k) for k in hist) <= 1, hist
            assert exact >= 0.95, hist
            assert np.abs(o.astype(np.int64) - f.astype(np.int64)).max() <= 1


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _conv_model(rng: np.random.Generator, *, fused: bool = False, group: int = 1, act: str = "Relu",
                stride: int = 1) -> Tuple[Model, Dict[str, np.ndarray]]:
    c_in, c_out = 8, 16 if group == 1 else 8
    x = rng.uniform(-1.0, 2.0, (2, c_in, 12, 12)).astype(np.float32)
    w = (rng.normal(0, 0.3, (c_out, c_in // group, 3, 3)) * rng.uniform(0.2, 2.0, (c_out, 1, 1, 1))).astype(np.float32)
    b = rng.normal(0, 0.5, c_out).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1], "strides": [stride, stride], "group": group, "kernel_shape": [3, 3]}
    bld = QDQBuilder()
    s_x, z_x = act_params(float(x.min()), float(x.max()))
    xin = bld.input("x", x.shape)
    xdq = bld.qdq(xin, s_x, z_x)
    wdq, s_w, w_deq = bld.weight(w, 0)
    bdq = bld.bias(b, np.float32(s_x) * s_w)
    x_deq = ((np.clip(np.rint(x / np.float32(s_x)) + z_x, -128, 127) - z_x) * np.float32(s_x)).astype(np.float32)
    y = float_op("Conv", [x_deq, w_deq, b], attrs)
    if act == "Relu":
        y = np.maximum(y, 0)
    elif act == "Clip":
        y = np.clip(y, -0.5, 1.0)
    s_y, z_y = act_params(float(y.min()), float(y.max()))
    if fused:
        h = bld.op("FusedConv", [xdq, wdq, bdq], {**attrs, "activation": act}, domain="edgec")
    else:
        h = bld.op("Conv", [xdq, wdq, bdq], attrs)
        if act == "Clip":
            h = bld.op("Clip", [h, bld.const(np.float32(-0.5)), bld.const(np.float32(1.0))])
        elif act:
            h = bld.op(act, [h])
    bld.output(bld.q(h, s_y, z_y), "y")
    return bld.model(), {"x": x}


# --- tests -----------------------------------------------------------------------------------------
def test_conv_relu_per_channel(rng: np.random.Generator, ort_run) -> None:
    model, feeds = _conv_model(rng)
    check_against_ort(model, feeds, ort_run, "conv+relu", ["Conv"], ["QLinearConv"])


def test_conv_clip(rng: np.random.Generator, ort_run) -> None:
    model, feeds = _conv_model(rng, act="Clip")
    check_against_ort(model, feeds, ort_run, "conv+clip", ["Conv"], ["QLinearConv"])


def test_conv_transpose_per_channel(rng: np.random.Generator, ort_run) -> None:
    x = rng.uniform(-1.0, 1.0, (1, 6, 7, 7)).astype(np.float32)
    w = rng.normal(0, 0.3, (6, 5, 3, 3)).astype(np.float32)  # [C_in, C_out, kh, kw]: channel axis 1
    b = rng.normal(0, 0.2, 5).astype(np.float32)
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}
    bld = QDQBuilder()
    s_x, z_x = act_params(float(x.min()), float(x.max()))
    xdq = bld.qdq(bld.input("x", x.shape), s_x, z_x)
    wdq, s_w, w_deq = bld.weight(w, 1)
    y = float_op("ConvTranspose", [x, w_deq, b], attrs)
    s_y, z_y = act_params(float(y.min()), float(y.max()))
    h = bld.op("ConvTranspose", [xdq, wdq, bld.bias(b, np.float32(s_x) * s_w)], attrs)
    bld.output(bld.q(h, s_y, z_y), "y")
    check_against_ort(bld.model(), {"x": x}, ort_run, "convtranspose", ["ConvTranspose"])


def test_requantize_between_scales(rng: np.random.Generator, ort_run) -> None:
    """int8 input -> DQ(s1) -> Q(s2): TFLite QUANTIZE int8 -> int8 (an int8 input, so that ORT cannot
    merge the float Q -> DQ -> Q chain into one Q)."""
    x = rng.integers(-128, 128, (4, 300)).astype(np.int8)
    bld = QDQBuilder()
    s1, z1 = act_params(-1.0, 2.0)
    s2, z2 = act_params(-0.7, 3.1)
    xin = bld.g.add_input(Value("x", TensorType(DType.INT8, Shape(x.shape))))
    bld.output(bld.q(bld.dq(xin, s1, np.int8(z1)), s2, z2), "y")
    check_against_ort(bld.model(), {"x": x}, ort_run, "requantize", ["QuantizeLinear"])


def test_depthwise_conv_strided(rng: np.random.Generator, ort_run) -> None:
    model, feeds = _conv_model(rng, group=8, act="", stride=2)
    check_against_ort(model, feeds, ort_run, "dwconv", ["Conv"], ["QLinearConv"])


def test_fused_conv_equals_conv_relu(rng: np.random.Generator) -> None:
    plain, feeds = _conv_model(np.random.default_rng(7))
    fused, _ = _conv_model(np.random.default_rng(7), fused=True)
    for rounding in ROUNDINGS:
        stats: Dict[str, List[str]] = {}
        a = run_integer(plain, feeds, rounding=rounding, return_quantized=True)["y"]
        b = run_integer(fused, feeds, rounding=rounding, return_quantized=True, stats=stats)["y"]
        assert any("FusedConv" in n for n in stats["integer"])
        assert np.array_equal(a, b)
        assert a.min() >= int(fused.graph.outputs[0].producer.input(2).const.numpy())  # Relu folded


def test_gemm_per_channel(rng: np.random.Generator, ort_run) -> None:
    x = rng.normal(0, 1, (6, 32)).astype(np.float32)
    w = rng.normal(0, 0.2, (20, 32)).astype(np.float32)  # transB = 1: output channel is axis 0
    b = rng.normal(0, 0.3, 20).astype(np.float32)
    bld = QDQBuilder()
    s_x, z_x = act_params(float(x.min()), float(x.max()))
    xdq = bld.qdq(bld.input("x", x.shape), s_x, z_x)
    wdq, s_w, w_deq = bld.weight(w, 0)
    y = float_op("Gemm", [x, w_deq, b], {"transB": 1})
    s_y, z_y = act_params(float(y.min()), float(y.max()))
    h = bld.op("Gemm", [xdq, wdq, bld.bias(b, np.float32(s_x) * s_w)], {"transB": 1})
    bld.output(bld.q(h, s_y, z_y), "y")
    check_against_ort(bld.model(), {"x": x}, ort_run, "gemm", ["Gemm"], ["QGemm"])


def test_matmul_per_tensor_batched(rng: np.random.Generator, ort_run) -> None:
    x = rng.uniform(-2, 1, (2, 5, 24)).astype(np.float32)
    w = rng.normal(0, 0.25, (24, 12)).astype(np.float32)
    bld = QDQBuilder()
    s_x, z_x = act_params(float(x.min()), float(x.max()))
    xdq = bld.qdq(bld.input("x", x.shape), s_x, z_x)
    wdq, _, w_deq = bld.weight(w, None)
    y = x @ w_deq
    s_y, z_y = act_params(float(y.min()), float(y.max()))
    bld.output(bld.q(bld.op("MatMul", [xdq, wdq]), s_y, z_y), "y")
    check_against_ort(bld.model(), {"x": x}, ort_run, "matmul", ["MatMul"], ["QLinearMatMul"])


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
def test_binary_of_two_quantized_tensors(op: str, rng: np.random.Generator, ort_run) -> None:
    a = rng.uniform(-1.0, 3.0, (2, 8, 10, 10)).astype(np.float32)
    b = rng.uniform(-2.0, 0.5, (1, 8, 1, 10)).astype(np.float32)  # broadcast
    bld = QDQBuilder()
    sa, za = act_params(float(a.min()), float(a.max()))
    sb, zb = act_params(float(b.min()), float(b.max()))
    adq = bld.qdq(bld.input("a", a.shape), sa, za)
    bdq = bld.qdq(bld.input("b", b.shape), sb, zb)
    y = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](a, b)
    s_y, z_y = act_params(float(y.min()), float(y.max()))
    bld.output(bld.q(bld.op(op, [adq, bdq]), s_y, z_y), "y")
    fused = {"Add": ["QLinearAdd"], "Mul": ["QLinearMul"], "Sub": []}[op]  # ORT runs Sub in float
    check_against_ort(bld.model(), {"a": a, "b": b}, ort_run, op.lower(), [op], fused)


def test_maxpool_concat_share_scales(rng: np.random.Generator, ort_run) -> None:
    x = rng.uniform(-1.0, 2.0, (1, 4, 10, 10)).astype(np.float32)
    z = rng.uniform(-1.0, 2.0, (1, 3, 5, 5)).astype(np.float32)
    bld = QDQBuilder()
    s, zp = act_params(-1.0, 2.0)
    xdq = bld.qdq(bld.input("x", x.shape), s, zp)
    zdq = bld.qdq(bld.input("z", z.shape), s, zp)
    p = bld.op("MaxPool", [xdq], {"kernel_shape": [2, 2], "strides": [2, 2]})
    pdq = bld.dq(bld.q(p, s, zp), s, np.int8(zp))
    c = bld.op("Concat", [pdq, zdq], {"axis": 1})
    bld.output(bld.q(c, s, zp), "y")
    bld.output(bld.q(bld.op("Relu", [zdq]), s, zp), "r")  # Relu with shared params: a clamp at zp
    model = bld.model()
    check_against_ort(model, {"x": x, "z": z}, ort_run, "maxpool+concat", ["MaxPool", "Concat", "Relu"])
    # pure data movement: bit-identical to the float meaning
    ours = run_integer(model, {"x": x, "z": z})
    flt = run_float_reference(model, {"x": x, "z": z})
    assert all(np.array_equal(ours[k], flt[k]) for k in ("y", "r"))


def _pool_model(pool: str, attrs: Dict[str, Any], x: np.ndarray) -> Tuple[Model, float, int]:
    bld = QDQBuilder()
    s, zp = act_params(-1.0, 1.5)
    xdq = bld.qdq(bld.input("x", x.shape), s, zp)
    bld.output(bld.q(bld.op(pool, [xdq], attrs), s, zp), "y")
    return bld.model(), s, zp


@pytest.mark.parametrize("pool, attrs", [
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2]}),  # 9 per window: no ties
    ("AveragePool", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "count_include_pad": 1}),
    ("GlobalAveragePool", {}),
])
def test_average_pool(pool: str, attrs: Dict[str, Any], rng: np.random.Generator, ort_run) -> None:
    x = rng.uniform(-1.0, 1.5, (2, 6, 9, 9)).astype(np.float32)
    model, _, _ = _pool_model(pool, attrs, x)
    check_against_ort(model, {"x": x}, ort_run, pool, [pool], ["QLinear" + pool])


def test_average_pool_padded_differs_from_ort_only_on_ties(rng: np.random.Generator, ort_run) -> None:
    """Border windows hold 4 or 6 values: TFLite rounds sum(q)/n half away from zero, ORT rounds the
    real mean half to even (in q - zp), so exact halves differ by 1 LSB; nothing else may differ."""
    x = rng.uniform(-1.0, 1.5, (2, 6, 9, 9)).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}
    model, s, zp = _pool_model("AveragePool", attrs, x)
    r = to_int(model, "y", ort_run(to_proto(model), {"x": x})[0])
    q = np.clip(np.rint(x / np.float32(s)) + zp, -128, 127).astype(np.int64)
    qp = np.pad(q, ((0, 0), (0, 0), (1, 1), (1, 1)))
    mp = np.pad(np.ones((9, 9), np.int64), 1)
    sums = np.array([[qp[..., 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum(axis=(-1, -2)) for j in range(5)] for i in range(5)])
    counts = np.array([[mp[2 * i:2 * i + 3, 2 * j:2 * j + 3].sum() for j in range(5)] for i in range(5)])
    tie = (2 * sums) % counts[..., None, None] == 0  # sum/n is an exact half (n even)
    tie &= (2 * sums) % (2 * counts[..., None, None]) != 0
    tie = tie.transpose(2, 3, 0, 1)
    for rounding in ROUNDINGS:
        o = run_integer(model, {"x": x}, rounding=rounding, return_quantized=True)["y"]
        hist = lsb_histogram(o, r)
        print(f"[AveragePool padded/{rounding}] LSB diff vs ORT: {hist}; ties: {int(tie.sum())}")
        assert max(abs(k) for k in hist) <= 1
        assert np.all(tie[o != r])
        assert np.array_equal(o[~tie], r[~tie])


def test_average_pool_rounds_half_away_from_zero() -> None:
    bld = QDQBuilder()
    xdq = bld.qdq(bld.input("x", (1, 1, 1, 4)), 1.0, 0)
    bld.output(bld.q(bld.op("AveragePool", [xdq], {"kernel_shape": [1, 2], "strides": [1, 2]}), 1.0, 0), "y")
    model = bld.model()
    x = np.array([[[[1, 2, -1, -2]]]], np.float32)  # window means 1.5 and -1.5
    assert run_integer(model, {"x": x}, return_quantized=True)["y"].tolist() == [[[[2, -2]]]]
    assert run_float_reference(model, {"x": x})["y"].tolist() == [[[[2, -2]]]]  # ONNX: half to even


def test_unfoldable_activation_runs_in_float(rng: np.random.Generator, ort_run) -> None:
    model, feeds = _conv_model(rng, act="LeakyRelu")
    stats: Dict[str, List[str]] = {}
    run_integer(model, feeds, stats=stats)
    assert not any("Conv" in n for n in stats["integer"]) and any("LeakyRelu" in n for n in stats["float"])
    check_against_ort(model, feeds, ort_run, "conv+leakyrelu (float)")


def test_return_quantized_and_float_outputs(rng: np.random.Generator) -> None:
    model, feeds = _conv_model(rng)
    out_q = run_integer(model, feeds, return_quantized=True)["y"]
    out_f = run_integer(model, feeds)["y"]
    dq = model.graph.outputs[0].producer
    s, z = float(dq.input(1).const.numpy()), int(dq.input(2).const.numpy())
    assert out_q.dtype == np.int8 and out_f.dtype == np.float32
    assert np.array_equal(out_f, (out_q.astype(np.float32) - z) * np.float32(s))
    assert out_q.min() >= z  # the Relu became the lower clamp bound


def test_accumulator_overflow_is_reported() -> None:
    bld = QDQBuilder()
    xdq = bld.qdq(bld.input("x", (1, 70000)), 1.0, -128)
    w = np.full((70000, 1), 127, np.int8)
    wdq = bld.dq(bld.const(w, "w"), np.float32(1.0), np.int8(0))
    bld.output(bld.q(bld.op("MatMul", [xdq, wdq]), 1e6, 0), "y")
    with pytest.raises(IntegerOverflowError):
        run_integer(bld.model(), {"x": np.full((1, 70000), 255, np.float32)})  # q - zp = 255


def test_bad_rounding_mode(rng: np.random.Generator) -> None:
    model, feeds = _conv_model(rng)
    with pytest.raises(ValueError):
        run_integer(model, feeds, rounding="nearest")


def test_edgec_attention_runs_in_float_outside_regions() -> None:
    """edgec.Attention left float (transformer through --target c) is evaluated per its definition."""
    from edgec.ir import Node
    from edgec.quant.reference import _attention

    rng = np.random.default_rng(0)
    b, sq, sk, h, dq, dv = 2, 3, 5, 2, 4, 3
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((b, sq, h * dq), (b, sk, h * dq), (b, sk, h * dv)))
    mask = np.where(rng.random((b, 1, 1, sk)) < 0.3, -1e4, 0.0).astype(np.float32)
    node = Node("Attention", [], 1, {"num_heads": h}, domain="edgec")
    got = _attention(node, [q, k, v, mask])
    want = np.zeros((b, sq, h * dv))
    for bi in range(b):
        for hi in range(h):
            qh, kh, vh = q[bi, :, hi * dq:(hi + 1) * dq], k[bi, :, hi * dq:(hi + 1) * dq], v[bi, :, hi * dv:(hi + 1) * dv]
            for i in range(sq):
                s = np.array([qh[i] @ kh[j] / np.sqrt(dq) + mask[bi, 0, 0, j] for j in range(sk)], np.float64)
                p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
                want[bi, i, hi * dv:(hi + 1) * dv] = p @ vh
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32
