"""The fast int8 C kernels of the inline CPU placement (``kernels_int8_fast``: register-blocked int16 GEMM with
compile-time packed weights, vectorized depthwise 3x3, vectorized requantization) are bit-exact with
``edgec.quant.reference.run_integer`` on every blocking remainder: output channels not a multiple of the
register tile, odd patch lengths, partial pixel panels, 1x1 with stride 2 (packed like a full convolution),
full convolutions whose panels are inside / on the border of the input, depthwise stride 1 (flattened planes)
and stride 2 (rows, partial vectors), Add (16-element vectors and a tail); per-channel and per-tensor weights,
double and single rounding, both placements. Each configuration is built three times: the AVX2 path
(-march=native), the same under ASan/UBSan (-mavx2), and the portable C path (-DEDGEC_Q8_PORTABLE); all
warnings are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgec.backends.c import write_c
from edgec.backends.c.integerize import check_int8, compile_int8
from edgec.backends.c.kernels_int8_fast import MR, pack_weights_pairs
from edgec.backends.c.verify import build
from edgec.ir.parser import parse_model
from edgec.ir.printer import print_model

from int8_util import int8_samples, quantize_for_c

RNG = np.random.default_rng(23)
SHAPE = (1, 3, 40, 36)


def _has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


AVX2 = _has_avx2()


def _w(name: str, shape: Sequence[int], s: float = 0.3) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * s).astype(np.float32), name)


def fast_net() -> onnx.ModelProto:
    """MobileNet-like layers whose shapes hit the remainders of the fast kernels (comments: GEMM M, K, P)."""
    nodes = [
        h.make_node("Conv", ["x", "w0", "b0"], ["c0"], strides=[2, 2], pads=[1, 1, 1, 1]),  # M 10, K 27, 20x18
        h.make_node("Relu", ["c0"], ["r0"]),
        h.make_node("Conv", ["r0", "wd0", "bd0"], ["d0"], group=10, pads=[1, 1, 1, 1]),  # dw s1, 20x18
        h.make_node("Conv", ["d0", "wp0", "bp0"], ["p0"]),  # pointwise M 7, K 10, P 360
        h.make_node("Clip", ["p0", "zero", "six"], ["r1"]),
        h.make_node("Conv", ["r1", "wp1", "bp1"], ["p1"]),  # pointwise M 13, K 7 (odd)
        h.make_node("Relu", ["p1"], ["r2"]),
        h.make_node("Conv", ["r2", "wd1", "bd1"], ["d1"], group=13, strides=[2, 2], pads=[1, 1, 1, 1]),  # dw s2, 10x9
        # dw s2 to 5x5: the generic tiny-plane kernel
        h.make_node("Conv", ["d1", "wd2", "bd2"], ["d2"], group=13, strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["d2", "wd3", "bd3"], ["d3"], group=13, pads=[1, 1, 1, 1]),  # dw s1 on 5x5 (flat)
        h.make_node("Conv", ["d3", "wp2", "bp2"], ["y"]),  # pointwise M 5, K 13, P 25
        h.make_node("Conv", ["r2", "ws", "bs"], ["y2"], strides=[2, 2]),  # 1x1 stride 2: M 6, K 13, P 90
        h.make_node("Conv", ["r1", "wf", "bf"], ["y3"]),  # 3x3 pad 0: M 9, K 63, 18x16 (panels inside)
        h.make_node("Conv", ["x", "wg", "bg"], ["y4"], strides=[1, 2], pads=[0, 1, 0, 1]),  # M 4, K 27, 38x18
        h.make_node("Add", ["p1", "r2"], ["y5"]),  # 4680 elements: 16-element vectors and a tail
    ]
    inits = [_w("w0", [10, 3, 3, 3], 0.3), _w("b0", [10], 0.1), _w("wd0", [10, 1, 3, 3]), _w("bd0", [10], 0.1),
             _w("wp0", [7, 10, 1, 1]), _w("bp0", [7], 0.1), _w("wp1", [13, 7, 1, 1]), _w("bp1", [13], 0.1),
             _w("wd1", [13, 1, 3, 3]), _w("bd1", [13], 0.1), _w("wd2", [13, 1, 3, 3]), _w("bd2", [13], 0.1),
             _w("wd3", [13, 1, 3, 3]), _w("bd3", [13], 0.1), _w("wp2", [5, 13, 1, 1]), _w("bp2", [5], 0.1),
             _w("ws", [6, 13, 1, 1]), _w("bs", [6], 0.1), _w("wf", [9, 7, 3, 3], 0.15), _w("bf", [9], 0.1),
             _w("wg", [4, 3, 3, 3], 0.3), _w("bg", [4], 0.1),
             nh.from_array(np.array(0.0, np.float32), "zero"), nh.from_array(np.array(6.0, np.float32), "six")]
    outs = [h.make_tensor_value_info(n, T.FLOAT, None) for n in ("y", "y2", "y3", "y4", "y5", "d0")]
    g = h.make_graph(nodes, "fastnet", [h.make_tensor_value_info("x", T.FLOAT, list(SHAPE))], outs, inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 21)])


_quantize = quantize_for_c


@pytest.fixture(scope="module")
def models() -> Dict[Any, Any]:
    proto = fast_net()
    cal = {"x": RNG.uniform(-1.0, 2.0, (8,) + SHAPE[1:]).astype(np.float32)}
    return {**{pc: _quantize(proto, cal, pc) for pc in (True, False)}, "symmetric": _quantize(proto, cal, True, True)}


def _samples() -> List[Dict[str, np.ndarray]]:
    return int8_samples(RNG, SHAPE)


def test_pack_weights_pairs_layout() -> None:
    """Panel q, pair kk, row r: (w[q*MR + r, 2kk], w[q*MR + r, 2kk + 1]); padded rows and the odd k are 0."""
    w = RNG.integers(-128, 128, (6, 5, 1, 1)).astype(np.int8)
    a = pack_weights_pairs(w)
    k2 = 3
    assert a.dtype == np.int16 and a.size == 2 * MR * 2 * k2
    for m in range(8):
        for k in range(6):
            v = a[(m // MR) * 2 * MR * k2 + (k // 2) * 2 * MR + (m % MR) * 2 + k % 2]
            assert v == (int(w[m, k, 0, 0]) if m < 6 and k < 5 else 0)


BUILDS = [("native", ["-march=native"], False), ("sanitized", ["-mavx2"] if AVX2 else [], True),
          ("portable", ["-DEDGEC_Q8_PORTABLE"], False)]


@pytest.mark.parametrize("variant, rounding, place", [
    (True, "double", None), (False, "double", None), (True, "single", None), (True, "double", "npu"),
    ("symmetric", "double", None), ("symmetric", "single", None)])
def test_fast_kernels_bit_exact(variant: Any, rounding: str, place: Any, models: Any, tmp_path: Path) -> None:
    """``variant``: per-channel weights (True), per-tensor (False), or per-channel with symmetric activations
    ("symmetric": the fused ReLUs clamp at the zero point 0, narrower than int8)."""
    qdq = models[variant]
    placement = (lambda n: "npu") if place == "npu" else None  # default: inline CPU kernels (the fast ones)
    code, res = compile_int8(parse_model(print_model(qdq, elide_limit=None)), "model", rounding=rounding,
                             placement=placement)
    assert not res.float_regions and not res.float_nodes, res.summary()
    src = code.files["model.c"]
    if variant == "symmetric":
        assert ".qmin = 0," in src
    if place is None:  # the fast kernels: 7 GEMMs (groups 1), the plane-wise depthwise 3x3 on 20x18, the
        # channel-lane one on the three smaller planes (kernels_int8_small), Add
        assert src.count("    edgec_q8_conv_gemm(&p,") == 7 and src.count("    edgec_q8_dw3x3(&p,") == 1
        assert src.count("    edgec_q8_dw_cv(&p,") == 3 and src.count("    edgec_q8_add(&p,") == 1
    else:  # the accelerator's layers: none of the fast CPU kernels (the float boundary's quantization is the CPU's)
        assert not any(f"    edgec_q8_{kern}(&p," in src for kern in ("conv_gemm", "dw3x3", "conv_cv", "dw_cv", "add"))
    write_c(code, str(tmp_path))
    samples = _samples()
    for label, flags, sanitize in BUILDS:
        prog = build(str(tmp_path), code.report, opt="-O1" if sanitize else "-O3", sanitize=sanitize,
                     extra_flags=flags)
        chk = check_int8(prog, code, qdq, samples, rounding=rounding, io=res.io)
        assert chk.ok and chk.max_float_diff == 0.0, f"{label}: {chk.summary()}"


def test_tiny_planes_keep_the_generic_kernels() -> None:
    """The threshold of the pixel panels: 16-pixel panels need at least 8 of them (full convolutions more
    than 16)."""
    from edgec.backends.c.kernels_int8_fast import _gemm_pays

    conv = {"kh": 3, "kw": 3, "sh": 1, "sw": 1, "ph": 1, "pw": 1, "single": 0}
    pw = {**conv, "kh": 1, "kw": 1, "ph": 0, "pw": 0}
    assert not _gemm_pays({**pw, "oh": 2, "ow": 2}) and _gemm_pays({**pw, "oh": 3, "ow": 3})
    assert not _gemm_pays({**conv, "oh": 4, "ow": 4}) and _gemm_pays({**conv, "oh": 5, "ow": 5})


def test_avx2_path_is_compiled(tmp_path: Path) -> None:
    """-mavx2 selects the intrinsics, -DEDGEC_Q8_PORTABLE the C loops (the paths the builds above compare)."""
    from edgec.backends.c.kernels import HELPERS

    probe = tmp_path / "probe.c"
    probe.write_text("#include <stdint.h>\n" + HELPERS["q8_simd"] +
                     "int edgec_q8_probe(void) { return EDGEC_Q8_AVX2; }\n")
    import subprocess

    def avx(flags: List[str]) -> str:
        out = subprocess.run(["cc", "-E", "-dM", *flags, str(probe)], capture_output=True, text=True, check=True)
        return next(line for line in out.stdout.splitlines() if line.startswith("#define EDGEC_Q8_AVX2"))

    assert avx(["-DEDGEC_Q8_PORTABLE", "-mavx2"]).endswith(" 0")
    assert avx(["-mno-avx2"]).endswith(" 0")
    if AVX2:
        assert avx(["-mavx2"]).endswith(" 1")


def test_compact_kernels_keep_int8_weights(models: Any, tmp_path: Path) -> None:
    """``int8_kernels="compact"`` (the default with a target description: flash counts) keeps the CPU
    convolution weights int8 and the generic kernels; the outputs are the same bits as the fast kernels'."""
    qdq = models[True]
    fast, _ = compile_int8(parse_model(print_model(qdq, elide_limit=None)), "model")
    compact, res = compile_int8(parse_model(print_model(qdq, elide_limit=None)), "model", int8_kernels="compact")
    src = compact.files["model.c"]
    assert "    edgec_q8_conv_gemm(&p," not in src and "    edgec_q8_dw3x3(&p," not in src
    assert "    edgec_q8_dw_cv(&p," not in src and "    edgec_q8_conv_cv(&p," not in src
    wf, wc = fast.report["weights"]["bytes"], compact.report["weights"]["bytes"]
    assert wc < 0.75 * wf, (wc, wf)
    write_c(compact, str(tmp_path))
    prog = build(str(tmp_path), compact.report, opt="-O1", sanitize=True)
    chk = check_int8(prog, compact, qdq, _samples(), rounding="double", io=res.io)
    assert chk.ok and chk.max_float_diff == 0.0, chk.summary()
    with pytest.raises(Exception, match="expected fast or compact"):
        compile_int8(parse_model(print_model(qdq, elide_limit=None)), "model", int8_kernels="small")


def _check_gemm_layers(shape: Sequence[int], nodes: List[onnx.NodeProto], inits: List[onnx.TensorProto],
                       tmp_path: Path) -> None:
    """Every Conv of ``nodes`` (input ``x`` of ``shape``, outputs ``y*``) runs the pixel-panel GEMM, bit-exact
    with the reference in the three builds."""
    outs = [h.make_tensor_value_info(n.output[0], T.FLOAT, None) for n in nodes]
    g = h.make_graph(nodes, "gemmnet", [h.make_tensor_value_info("x", T.FLOAT, list(shape))], outs, inits)
    proto = h.make_model(g, opset_imports=[h.make_opsetid("", 21)])
    qdq = _quantize(proto, {"x": RNG.uniform(-1.0, 2.0, (8,) + tuple(shape[1:])).astype(np.float32)}, True)
    code, res = compile_int8(parse_model(print_model(qdq, elide_limit=None)), "model")
    assert code.files["model.c"].count("    edgec_q8_conv_gemm(&p,") == len(nodes)
    write_c(code, str(tmp_path))
    samples = [{"x": RNG.uniform(-1.5, 2.5, shape).astype(np.float32)} for _ in range(2)]
    for label, flags, sanitize in BUILDS:
        prog = build(str(tmp_path), code.report, opt="-O1" if sanitize else "-O3", sanitize=sanitize,
                     extra_flags=flags)
        chk = check_int8(prog, code, qdq, samples, rounding="double", io=res.io)
        assert chk.ok and chk.max_float_diff == 0.0, f"{label}: {chk.summary()}"


def test_padded_planes_bit_exact(tmp_path: Path) -> None:
    """Padded full convolutions pack from zero-point bordered copies of the input (per batch item): pads on
    all sides at stride 1 and 2, begin != end pads, end pads only, dilation, a padded 1x1; output widths of at
    least one panel, not multiples of 16."""
    nodes = [
        h.make_node("Conv", ["x", "wa", "b"], ["ya"], pads=[1, 1, 1, 1]),  # s1: 22x36
        h.make_node("Conv", ["x", "wa", "b"], ["yb"], strides=[2, 2], pads=[1, 1, 1, 1]),  # s2: 11x18
        h.make_node("Conv", ["x", "wa", "b"], ["yc"], strides=[2, 2], pads=[0, 0, 1, 1]),  # end pads: 11x18
        h.make_node("Conv", ["x", "wa", "b"], ["yd"], dilations=[2, 2], pads=[2, 2, 2, 2]),  # dilated: 22x36
        h.make_node("Conv", ["x", "we", "b"], ["ye"], pads=[2, 1, 1, 2]),  # 5x5: 21x35
        h.make_node("Conv", ["x", "wf", "b"], ["yf"], pads=[1, 1, 1, 1]),  # 1x1: 24x38
    ]
    inits = [_w("wa", [5, 3, 3, 3]), _w("we", [5, 3, 5, 5], 0.15), _w("wf", [5, 3, 1, 1]), _w("b", [5], 0.1)]
    _check_gemm_layers((2, 3, 22, 36), nodes, inits, tmp_path)


def test_unpadded_windows_bit_exact(tmp_path: Path) -> None:
    """Unpadded full convolutions pack straight from the input: stride 2 whose last row of windows ends at the
    input's last row (its 32-byte reads would pass the end: the strided copy), panels that span two output
    rows, dilation, a strided 1x1 and stride 3 (the element loops)."""
    nodes = [
        h.make_node("Conv", ["x", "wa", "b"], ["ya"], strides=[2, 2]),  # 19x16: ends at row 38 of 39
        h.make_node("Conv", ["x", "wa", "b"], ["yb"]),  # 37x31: panels across rows
        h.make_node("Conv", ["x", "wa", "b"], ["yc"], dilations=[2, 2]),  # 35x29
        h.make_node("Conv", ["x", "wf", "b"], ["yd"], strides=[2, 2]),  # 1x1 s2: 20x17
        h.make_node("Conv", ["x", "wg", "b"], ["ye"], strides=[1, 3]),  # 2x2 s(1,3): 38x11
    ]
    inits = [_w("wa", [5, 3, 3, 3]), _w("wf", [5, 3, 1, 1]), _w("wg", [5, 3, 2, 2]), _w("b", [5], 0.1)]
    _check_gemm_layers((2, 3, 39, 33), nodes, inits, tmp_path)


def _gemmlowp(x: int, m0: int, e: int) -> int:
    """RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, m0), e) in exact integers."""
    s = (x * m0 + (1 << 30)) >> 31
    mask = (1 << e) - 1
    return (s >> e) + (1 if (s & mask) > (mask >> 1) + (s < 0) else 0)


def _tie_free_rounding(x: int, m0: int, e: int) -> int:
    r = (abs(x) * m0 + (1 << 30) + (1 << (30 + e))) >> (31 + e)
    return -r if x < 0 else r


def test_tie_free_requantization_equals_double_rounding() -> None:
    """One rounding of |acc| equals gemmlowp's two for every |acc| below first_tie (which solves the tie
    congruence: at -first_tie the two differ), the case the fast kernels take when tie_free holds."""
    from edgec.backends.c.kernels_int8_fast import first_tie

    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(300):
        m0, e = int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(1, 32))
        a0 = first_tie(m0, e)
        assert 1 <= a0 <= 1 << (31 + e)
        if a0 < 1 << 31:
            assert (a0 * m0 + (1 << 30) + (1 << (30 + e))) % (1 << (31 + e)) == 0
            assert _gemmlowp(-a0, m0, e) != _tie_free_rounding(-a0, m0, e)
        top = min(a0 - 1, (1 << 31) - 1)
        xs = {0, 1, -1, top, -top, top - 1, -(top - 1)} | {int(v) for v in rng.integers(-top, top + 1, 200)}
        for x in xs:
            assert _gemmlowp(x, m0, e) == _tie_free_rounding(x, m0, e), (x, m0, e)
            checked += 1
    # a multiplier whose first tie is a small accumulator: below it the two agree everywhere, at it they differ
    e = 3
    m0 = next(m for m in range(1 << 30, (1 << 30) + 100000) if first_tie(m, e) < 5000)
    a0 = first_tie(m0, e)
    assert _gemmlowp(-a0, m0, e) != _tie_free_rounding(-a0, m0, e)
    assert all(_gemmlowp(x, m0, e) == _tie_free_rounding(x, m0, e) for x in range(-a0 + 1, a0))
    assert checked > 10000


def test_fast_kernels_use_tie_free_requantization(models: Any) -> None:
    """The benchmark-style layers are tie-free and fix the vector requantization at compile time (every call
    passes rqflags 3: tie-free, kind 1); single rounding is never tie-free and fixes kind 2 (rqflags 4); a
    clamp narrower than int8 (symmetric activations after a ReLU) leaves the kind to run time."""
    import re

    calls = re.compile(r"    edgec_q8_(?:conv_gemm|dw3x3|conv_cv|dw_cv)\(&p, .*, (\d)\);")

    def flags(variant: Any, rounding: str) -> List[str]:
        code, _ = compile_int8(parse_model(print_model(models[variant], elide_limit=None)), "model", rounding=rounding)
        found = calls.findall(code.files["model.c"])
        assert found
        return found

    assert set(flags(True, "double")) == {"3"}
    assert set(flags(True, "single")) == {"4"}
    sym = flags("symmetric", "double")
    assert "1" in sym and set(sym) <= {"1", "3"}


def _helper_source(name: str) -> str:
    """The C of helper ``name`` after every helper it calls, with the headers they need."""
    from edgec.backends.c.kernels import HELPERS, helper_closure

    return "#include <math.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <string.h>\n" + "".join(
        HELPERS[n] for n in helper_closure([name]))


def test_helpers_bring_what_they_call() -> None:
    """A model whose layers all run the small-plane kernels gets the AVX2 switch that those reach only through
    the fast kernels' helper (dependencies are followed all the way, each emitted before its callers)."""
    from edgec.backends.c.kernels import helper_closure
    import edgec.backends.c.kernels_int8_small  # noqa: F401  (registers q8_small)

    chain = helper_closure(["q8_small"])
    assert chain.index("q8_simd") < chain.index("q8_fast") < chain.index("q8_small")
    assert chain.index("q_common") < chain.index("q_kernels") < chain.index("q8_fast")


def _run_c(tmp_path: Path, src: str) -> None:
    """Builds ``src`` with AVX2 (when the machine has it) and portable, and runs both: exit status 0."""
    import subprocess

    path = tmp_path / "t.c"
    path.write_text(src)
    for flags in (["-march=native"], ["-DEDGEC_Q8_PORTABLE"]):
        exe = tmp_path / "t"
        subprocess.run(["cc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", *flags, str(path), "-o", str(exe),
                        "-lm"], check=True, capture_output=True)
        run = subprocess.run([str(exe)], capture_output=True, text=True)
        assert run.returncode == 0, (flags, run.stdout)


def test_add_vectors_equal_the_generic_kernel(tmp_path: Path) -> None:
    """``edgec_q8_add`` (inputs' stage in 32-bit arithmetic, the zero point on int16 lanes) equals the generic
    ``edgec_q_add_s8`` on all 65536 input pairs, for Add and Sub, input shifts 0 and below, left shifts 20 (the
    TFLite one), 9 and 22 (the fast path's limits) and 8 (past them), int8-wide and narrow clamps, multipliers
    near 2^30 and 2^31."""
    params = [  # left_shift, m1, s1, m2, s2, mo, so, qmin, qmax, sub, offsets
        (20, 1539468168, -1, 1073741824, 0, 1704992752, -19, -128, 127, 0, (0, -4, 17)),
        (20, 2147483647, 0, 1286081302, -3, 1073741824, -20, -128, 127, 1, (128, -127, -128)),
        (22, 1879048192, -2, 1610612736, -1, 1234567890, -21, 0, 90, 0, (-5, 7, 3)),
        (20, 1073741824, 0, 2147483647, 0, 2147483647, -18, -100, 127, 1, (37, -128, 127)),
        # left shift 9 (the fast path's lower limit): the inputs' rounding shows in the outputs
        (9, 2147483000, 0, 1500000000, -1, 1073741824, -8, -128, 127, 0, (-3, 11, -7)),
        (9, 1300000000, -2, 2100000000, 0, 1900000000, -9, -128, 127, 1, (100, -90, 5)),
        (8, 2147483000, 0, 1500000000, -1, 1073741824, -7, -128, 127, 0, (-3, 11, -7)),  # 8: the generic kernel
    ]
    checks = []
    for ls, m1, s1, m2, s2, mo, so, lo, hi, sub, (o1, o2, oo) in params:
        checks.append(f"    {{ const edgec_q_add_params p = {{.size = 65536, .in1_offset = {o1}, .in2_offset = {o2}, "
                      f".out_offset = {oo}, .left_shift = {ls}, .m1 = {m1}, .s1 = {s1}, .m2 = {m2}, .s2 = {s2}, "
                      f".mo = {mo}, .so = {so}, .qmin = {lo}, .qmax = {hi}, .sub = {sub}, .single = 0}};\n"
                      "      edgec_q8_add(&p, a, b, y); (void)edgec_q_add_s8(&p, a, b, want);\n"
                      "      if (memcmp(y, want, sizeof y)) return 1; }\n")
    src = (_helper_source("q8_fast") +
           "static int8_t a[65536], b[65536], y[65536], want[65536];\nint main(void)\n{\n"
           "    for (int i = 0; i < 65536; ++i) { a[i] = (int8_t)(i & 255); b[i] = (int8_t)(i >> 8); }\n" +
           "".join(checks) + "    return 0;\n}\n")
    _run_c(tmp_path, src)


def test_quantize_linear_vectors_equal_the_formula(tmp_path: Path) -> None:
    """``edgec_q8_quantize`` (the float boundary, 32 floats per step with AVX2) gives the generic formula's
    int8 for every kind of input: ties of round-half-even on both sides of zero, the int8 limits and past them,
    +-inf, NaN (-128), -0, subnormals; a tail shorter than a vector."""
    s, zp = np.float32(0.0372), 3
    ties = (np.arange(-140, 140, dtype=np.float32) + np.float32(0.5)) * s  # x / s rounds onto .5 or next to it
    near = np.concatenate([np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))])
    special = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e-45, -1e-45, 3e38, -3e38, 131 * s, -132 * s],
                       np.float32)
    x = np.concatenate([ties, near, special, RNG.uniform(-10, 10, 37).astype(np.float32)])
    values = ", ".join(f"{float(v).hex()}f" if np.isfinite(v) else ("NAN" if np.isnan(v) else
                       ("INFINITY" if v > 0 else "-INFINITY")) for v in x)
    _run_c(tmp_path, _helper_source("q8_quant") +
           f"static const float xs[{x.size}] = {{{values}}};\n"
           "int main(void)\n{\n"
           f"    int8_t y[{x.size}];\n"
           f"    edgec_q8_quantize(xs, y, {x.size}, {float(s).hex()}f, {zp});\n"
           f"    for (int i = 0; i < {x.size}; ++i) {{\n"
           f"        const float r = rintf(xs[i] / {float(s).hex()}f) + (float){zp};\n"
           "        const int8_t want = (int8_t)(r >= 127.0f ? 127 : (r > -128.0f ? r : -128));\n"
           "        if (y[i] != want) { printf(\"%d %a %d %d\\n\", i, (double)xs[i], y[i], want); return 1; }\n"
           "    }\n    return 0;\n}\n")
