"""int8 Softmax (TFLite reference kernel, gemmlowp fixed point) and average pools with their own output scale.

Fixed-point unit tests compare :mod:`edgec.quant.fixedpoint` with a straightforward scalar port (Python ints,
C division) and with float math; the model tests quantize small float models with the quantize pass
(``int8-softmax=true``), emit the int8 C, build it with -Wall -Wextra -Werror -fsanitize=address,undefined
and require 0 LSB against ``run_integer`` in both rounding modes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgec.backends.c import write_c
from edgec.backends.c.integerize import check_int8, compile_int8
from edgec.backends.c.verify import build
from edgec.frontend.onnx_import import from_proto
from edgec.ir.parser import parse_model
from edgec.ir.printer import print_model
from edgec.passmanager import PassContext, PassManager, PassManagerOptions
from edgec.quant import fixedpoint as fx
from edgec.quant.data import load_calibration
from edgec.quant.reference import run_integer

OPSET = 21
RNG = np.random.default_rng(11)
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")


# --- a scalar port of the gemmlowp / TFLite code (Python ints) ----------------------------------------------
def _div_trunc(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def s_srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    return _div_trunc(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)), 1 << 31)


def s_rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def s_sat(x: int) -> int:
    return max(INT32_MIN, min(INT32_MAX, x))


def s_exp_interval(a: int) -> int:
    x = a + (1 << 28)
    x2 = s_srdhm(x, x)
    x3 = s_srdhm(x2, x)
    x4 = s_srdhm(x2, x2)
    p = s_rdbpot(s_srdhm(s_rdbpot(x4, 2) + x3, 715827883) + x2, 1)
    return 1895147668 + s_srdhm(1895147668, x + p)


def s_exp_neg(a: int) -> int:
    t = (a & ((1 << 24) - 1)) - (1 << 24)
    r = s_exp_interval(s_sat(t << 5))
    rem = t - a
    for k, c in zip(range(-2, 5), (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)):
        if rem & (1 << (26 + k)):
            r = s_srdhm(r, c)
    return INT32_MAX if a == 0 else r


def s_recip(a: int) -> int:
    s = a + INT32_MAX
    hd = _div_trunc(s + (1 if s >= 0 else -1), 2)
    x = 1515870810 + s_srdhm(hd, -1010580540)
    for _ in range(3):
        x = x + s_sat(s_srdhm(x, (1 << 29) - s_srdhm(hd, x)) << 2)
    return s_sat(x << 1)


def s_mbqm(x: int, m: int, s: int, rounding: str) -> int:
    if rounding == "single":
        return s_sat((x * m + (1 << (30 - s))) >> (31 - s))
    left, right = max(s, 0), max(-s, 0)
    return s_rdbpot(s_srdhm(s_sat(x * (1 << left)), m), right)


def s_softmax_row(row: Sequence[int], s_in: float, rounding: str) -> List[int]:
    """TFLite reference_ops::Softmax (int8 in, int8 out), written out element by element."""
    cap = (1 << 30) - 1.0 if rounding == "single" else (1 << 31) - 1.0
    real = min(float(np.float32(s_in)) * (1 << 26), cap)
    frac, shift = math.frexp(real)
    m = int(fx.round_half_away(frac * (1 << 31)))
    if m == 1 << 31:
        m, shift = m // 2, shift + 1
    if rounding == "single" and shift > 30:
        m, shift = (1 << 31) - 1, 30
    diff_min = -int(math.floor(31 * (1 << 26) / (1 << shift)))
    mx = max(row)
    total = 0
    for v in row:
        if v - mx >= diff_min:
            total += s_rdbpot(s_exp_neg(s_mbqm(v - mx, m, shift, rounding)), 12)
    hp1 = 32 - total.bit_length()
    nb = 12 - hp1
    recip = s_recip((total << hp1) - (1 << 31))
    out = []
    for v in row:
        d = v - mx
        if d < diff_min:
            out.append(-128)
            continue
        e = nb + 31 - 8
        u = 0 if e > 31 else s_rdbpot(s_srdhm(recip, s_exp_neg(s_mbqm(d, m, shift, rounding))), e)
        out.append(max(-128, min(127, u - 128)))
    return out


# --- fixed point -----------------------------------------------------------------------------------------
def test_exp_on_negative_values_matches_scalar_port_and_exp() -> None:
    a = np.concatenate([RNG.integers(-31 << 26, 1, 4000), [0, -1, -(1 << 24), -(1 << 26), -(31 << 26), -(1 << 30)]])
    got = fx.exp_on_negative_values(a)
    assert [int(v) for v in got] == [s_exp_neg(int(v)) for v in a]
    err = np.abs(got / 2.0**31 - np.exp(a / 2.0**26))
    assert err.max() < 5e-7, err.max()  # gemmlowp: ~1e-7 absolute


def test_one_over_one_plus_x_and_reciprocal() -> None:
    a = np.concatenate([RNG.integers(0, INT32_MAX, 4000), [0, 1, INT32_MAX - 1, INT32_MAX]])
    got = fx.one_over_one_plus_x_for_x_in_0_1(a)
    assert [int(v) for v in got] == [s_recip(int(v)) for v in a]
    assert np.abs(got / 2.0**31 - 1.0 / (1.0 + a / 2.0**31)).max() < 1e-8
    sums = RNG.integers(1 << 19, INT32_MAX, 500)
    r, nb = fx.get_reciprocal(sums, 12)
    approx = r / 2.0**31 / 2.0**nb  # 1 / (sum in Q12.19 units), up to the 2^nb normalisation
    np.testing.assert_allclose(approx, 1.0 / (sums / 2.0**19), rtol=2e-8)


@pytest.mark.parametrize("s_in", [0.004, 0.02, 0.0625, 0.1, 0.37, 1.0, 3.0])
@pytest.mark.parametrize("rounding", ["double", "single"])
def test_softmax_params_and_kernel(s_in: float, rounding: str) -> None:
    p = fx.softmax_params(s_in, rounding=rounding)
    cap = (1 << 30) - 1.0 if rounding == "single" else (1 << 31) - 1.0
    real = min(float(np.float32(s_in)) * 2.0**26, cap)
    assert abs(p.input_multiplier * 2.0 ** (p.input_left_shift - 31) / real - 1) < 1e-9
    assert p.diff_min == -math.floor(31 * 2.0**26 / 2.0**p.input_left_shift)
    q = RNG.integers(-128, 128, (40, 13))
    q[0] = 5  # every value equal
    q[1, :] = -128
    q[1, 3] = 127  # one value dominates
    got = fx.quantized_softmax(q, p)
    want = np.array([s_softmax_row([int(v) for v in row], s_in, rounding) for row in q])
    assert np.array_equal(got, want)
    x = np.float32(s_in) * (q - q.max(axis=1, keepdims=True)).astype(np.float64)
    f = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    lsb = np.abs(got - np.clip(np.rint(f * 256) - 128, -128, 127))
    assert lsb.max() <= 1, lsb.max()  # within one 1/256 step of float softmax


def test_softmax_long_rows_and_saturation() -> None:
    """4095 equal values: 1/4095 rounds to 0 (the RDBPOT by more than 31 bits is 0); odd axes."""
    p = fx.softmax_params(0.05)
    y = fx.quantized_softmax(np.zeros((1, fx.SOFTMAX_MAX_DEPTH), np.int64), p)
    assert np.all(y == -128)
    q = RNG.integers(-128, 128, (3, 7, 5))
    a = fx.quantized_softmax(q, p, axis=1)
    b = np.moveaxis(fx.quantized_softmax(np.moveaxis(q, 1, -1), p), -1, 1)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_avgpool_rescale_matches_scalar(rounding: str) -> None:
    n = RNG.integers(1, 10, 600)
    acc = RNG.integers(-45, 45, 600) * n + RNG.integers(-4, 5, 600)
    got = fx.avgpool_rescale(acc, n, 0.023, 0.0071, -5, -128, 127, rounding)
    want = []
    for a, c in zip(acc, n):
        m, s = fx.quantize_multiplier(float(np.float32(0.023)) / (float(np.float32(0.0071)) * int(c)), rounding)
        want.append(max(-128, min(127, s_mbqm(int(a), m, s, rounding) - 5)))
    assert [int(v) for v in got] == want
    real = acc * np.float32(0.023) / n / np.float32(0.0071) - 5
    err = np.abs(got - np.clip(real, -128, 127)).max()
    assert err <= (0.5 + 1e-6 if rounding == "single" else 1.0), err  # double rounding: up to 1 LSB


# --- models through the quantize pass and the int8 C target -------------------------------------------------
def _model(nodes: List[Any], inits: List[Any], x_shape: Sequence[int], outs: Sequence[str]) -> onnx.ModelProto:
    g = h.make_graph(nodes, "m", [h.make_tensor_value_info("x", T.FLOAT, list(x_shape))],
                     [h.make_tensor_value_info(o, T.FLOAT, None) for o in outs], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)])


def softmax_net(depths: Sequence[int]) -> Tuple[onnx.ModelProto, Sequence[int]]:
    """x [2, 3, 16] -> MatMul to each depth -> Softmax over the last axis (one output per depth), plus a Softmax
    over axis 1 of a Conv output (inner > 1)."""
    nodes, inits, outs = [], [], []
    for i, d in enumerate(depths):
        inits.append(nh.from_array((RNG.standard_normal((16, d)) * 0.6).astype(np.float32), f"w{i}"))
        nodes += [h.make_node("MatMul", ["x", f"w{i}"], [f"h{i}"]),
                  h.make_node("Softmax", [f"h{i}"], [f"p{i}"], axis=-1)]
        outs.append(f"p{i}")
    inits.append(nh.from_array((RNG.standard_normal((6, 3, 1)) * 0.8).astype(np.float32), "wc"))
    nodes += [h.make_node("Conv", ["x", "wc"], ["c"]), h.make_node("Softmax", ["c"], ["pc"], axis=1)]
    outs.append("pc")
    return _model(nodes, inits, (2, 3, 16), outs), (2, 3, 16)


def pool_net() -> onnx.ModelProto:
    """Conv -> average pools (valid, padded, pad counted, SAME, 1-D view) and a global pool: each pool gets its
    own output scale from the quantize pass."""
    inits = [nh.from_array((RNG.standard_normal((6, 3, 3, 3)) * 0.4).astype(np.float32), "w"),
             nh.from_array((RNG.standard_normal(6) * 0.2).astype(np.float32), "b"),
             nh.from_array((RNG.standard_normal((4, 3, 2, 2)) * 0.4).astype(np.float32), "w2")]
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("AveragePool", ["c"], ["a0"], kernel_shape=[3, 3], strides=[2, 2]),
             h.make_node("AveragePool", ["c"], ["a1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             h.make_node("AveragePool", ["c"], ["a2"], kernel_shape=[3, 2], pads=[1, 0, 1, 1], count_include_pad=1),
             h.make_node("AveragePool", ["c"], ["a3"], kernel_shape=[2, 3], auto_pad="SAME_UPPER"),
             h.make_node("GlobalAveragePool", ["c"], ["g"]),
             h.make_node("Conv", ["x", "w2"], ["c2"], strides=[2, 2]),
             h.make_node("Relu", ["c2"], ["r"]),
             h.make_node("GlobalAveragePool", ["r"], ["g2"])]
    return _model(nodes, inits, (1, 3, 9, 10), ["a0", "a1", "a2", "a3", "g", "g2"])


def _quantize(proto: onnx.ModelProto, cal: Dict[str, np.ndarray], softmax: bool) -> Any:
    """-O2 for the C target, then quantize{activations=int8[,int8-softmax=true]} (as tests/c/test_int8_c.py)."""
    from edgec.api import optimize

    m = from_proto(proto)
    optimize(m, opt_level=2, target="c")
    path = Path(tempfile.mkdtemp()) / "cal.npz"
    np.savez(path, **cal)
    opts = "activations=int8" + (",int8-softmax=true" if softmax else "")
    ctx = PassContext(resources={"calibration": load_calibration(str(path), m),
                                 "target": {"name": "c", "contrib_ops": False}})
    PassManager.with_options("quantize{" + opts + "},dce", PassManagerOptions(verify_each=True), ctx=ctx).run(m)
    return m


def build_c(tmp: Path, qdq: Any, *, rounding: str, int8_io: bool = False) -> Tuple[str, Any, Any]:
    code, res = compile_int8(parse_model(print_model(qdq, elide_limit=None)), "model", rounding=rounding,
                             int8_io=int8_io)
    write_c(code, str(tmp))
    return build(str(tmp), code.report, opt="-O1", sanitize=True), code, res


def test_quantize_option_int8_softmax() -> None:
    """Default: Softmax stays float. int8-softmax=true: its output is Q(1/256, -128) and the reference runs it in
    integer."""
    proto, shape = softmax_net([10])
    cal = {"x": RNG.standard_normal((8,) + tuple(shape[1:])).astype(np.float32)}
    plain = _quantize(proto, cal, softmax=False)
    stats: Dict[str, List[str]] = {}
    run_integer(plain, {"x": cal["x"][:2]}, stats=stats)
    assert not any(n.op_type == "Softmax" and n.name in stats["integer"] for n in plain.graph)
    q = _quantize(proto, cal, softmax=True)
    sm = [n for n in q.graph if n.op_type == "Softmax"]
    assert len(sm) == 2
    for n in sm:
        (qn,) = n.output(0).consumers()
        assert qn.op_type == "QuantizeLinear"
        assert float(qn.input(1).const.numpy()) == 1.0 / 256 and int(qn.input(2).const.numpy()) == -128
    stats = {}
    run_integer(q, {"x": cal["x"][:2]}, stats=stats)
    assert {n.name for n in sm} <= set(stats["integer"]), stats


def _float_outputs(proto: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@needs_cc
@pytest.mark.parametrize("rounding, io", [("double", True), ("single", False)])
def test_softmax_c_bit_exact(rounding: str, io: bool, tmp_path: Path) -> None:
    depths = [1, 3, 10, 33, 100]
    proto, shape = softmax_net(depths)
    cal = {"x": (RNG.standard_normal((16,) + tuple(shape[1:])) * 1.5).astype(np.float32)}
    qdq = _quantize(proto, cal, softmax=True)
    prog, code, res = build_c(tmp_path, qdq, rounding=rounding, int8_io=io)
    ops = [L["op"] for L in code.report["layers"]]
    assert ops.count("edgec::QSoftmax") == len(depths) + 1, ops
    samples = [{"x": (RNG.standard_normal(shape) * 1.5).astype(np.float32)} for _ in range(3)]
    stats: Dict[str, List[str]] = {}
    run_integer(qdq, samples[0], rounding=rounding, stats=stats)
    assert sorted(res.integer_nodes) == sorted(stats["integer"])
    got: List[Any] = []
    chk = check_int8(prog, code, qdq, samples, rounding=rounding, io=res.io, collect=got)
    print(f"[softmax {rounding}] {chk.summary()}")
    assert chk.ok and chk.max_float_diff == 0.0, chk.summary()
    # against float softmax: of the same int8 input (the kernel alone, <= 1 LSB of 1/256), and of the float
    # model (the logits' quantization included; printed only)
    probe = parse_model(print_model(qdq, elide_limit=None))
    src: Dict[str, Tuple[str, int, float]] = {}  # output -> (int8 softmax input, axis, its scale)
    for v in list(probe.graph.outputs):
        sm = v.producer.input(0).producer.input(0).producer  # DQ <- Q <- Softmax
        assert sm.op_type == "Softmax"
        dq = sm.input(0).producer
        q_in = dq.input(0)
        probe.graph.add_output(q_in)
        src[v.name] = (q_in.name, int(sm.attr("axis", -1)), float(dq.input(1).const.numpy()))
    worst = 0.0
    for feeds, outs in zip(samples, got):
        ints = run_integer(probe, feeds, rounding=rounding, return_quantized=True)
        ref = _float_outputs(proto, feeds)
        for t, y in zip(code.report["outputs"], outs):
            yq = y.astype(np.int64) if t["dtype"] == "int8" else \
                np.rint(y.astype(np.float64) * 256).astype(np.int64) - 128
            name, axis, s_in = src[t["name"]]
            z = np.float32(s_in) * ints[name].astype(np.float64)
            f = np.exp(z - z.max(axis=axis, keepdims=True))
            f /= f.sum(axis=axis, keepdims=True)
            lsb = np.abs(yq - np.clip(np.rint(f * 256) - 128, -128, 127)).max()
            assert lsb <= 1, (t["name"], lsb)
            worst = max(worst, float(np.abs((yq + 128) / 256 - ref[t["name"]]).max() * 256))
    print(f"[softmax {rounding}] vs float softmax of the same int8 input: <= 1 LSB; vs the float model: "
          f"max {worst:.2f} LSB of 1/256 (calibration range and 8-bit logits)")


@needs_cc
@pytest.mark.parametrize("rounding, io", [("double", False), ("single", True)])
def test_average_pools_own_output_scale_c_bit_exact(rounding: str, io: bool, tmp_path: Path) -> None:
    proto = pool_net()
    cal = {"x": RNG.uniform(-1.0, 1.5, (12, 3, 9, 10)).astype(np.float32)}
    qdq = _quantize(proto, cal, softmax=False)
    pools = [n for n in qdq.graph if n.op_type in ("AveragePool", "GlobalAveragePool")]
    assert len(pools) == 6
    for n in pools:  # the quantize pass gives each pool its own output scale
        s_in = float(n.input(0).producer.input(1).const.numpy())
        s_out = float(n.output(0).consumers()[0].input(1).const.numpy())
        assert s_in != s_out
    samples = [{"x": RNG.uniform(-1.0, 1.5, (1, 3, 9, 10)).astype(np.float32)} for _ in range(3)]
    stats: Dict[str, List[str]] = {}
    run_integer(qdq, samples[0], rounding=rounding, stats=stats)
    assert {n.name for n in pools} <= set(stats["integer"]), stats
    prog, code, res = build_c(tmp_path, qdq, rounding=rounding, int8_io=io)
    assert sum(1 for L in code.report["layers"] if L["op"] == "edgec::QAvgPoolRq") == 6
    assert not res.float_regions and not res.float_nodes, res.summary()
    chk = check_int8(prog, code, qdq, samples, rounding=rounding, io=res.io)
    assert chk.ok and chk.max_float_diff == 0.0, chk.summary()


def test_new_kernels_have_no_float_arithmetic() -> None:
    import re

    from edgec.backends.c import kernels as K
    from edgec.backends.c import kernels_int8_extra  # noqa: F401  (registers the helpers)

    pat = re.compile(r"\b(float|double|fabsf?|rintf?|roundf?|expf?|sqrtf?)\b|\d\.\d|0x[0-9a-f.]+p[+-]?\d+f?\b")
    for name in ("q_softmax", "q_avgpool_rq"):
        assert not pat.search(re.sub(r"/\*.*?\*/", "", K.HELPERS[name], flags=re.DOTALL)), name


def test_softmax_layout_opsets() -> None:
    """opset >= 13: one axis ([outer, depth, inner]); opset < 13: the 2-D coercion at ``axis`` (inner 1)."""
    from edgec.ir import Node, Value
    from edgec.quant.reference import softmax_layout, softmax_output_ok

    def node(**attrs: Any) -> Any:
        return Node("Softmax", [Value("x")], 1, attrs)

    assert softmax_layout(node(), (2, 3, 5), 13) == (6, 5, 1)
    assert softmax_layout(node(axis=1), (2, 3, 5), 21) == (2, 3, 5)
    assert softmax_layout(node(), (2, 3, 5), 11) == (2, 15, 1)
    assert softmax_layout(node(axis=-1), (2, 3, 5), 11) == (6, 5, 1)
    assert softmax_output_ok(1 / 256, -128, np.int8) and softmax_output_ok(1 / 256, 0, np.uint8)
    assert not softmax_output_ok(1 / 256, 0, np.int8) and not softmax_output_ok(1 / 255, -128, np.int8)
