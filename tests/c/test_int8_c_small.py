"""The channel-lane int8 convolutions of small planes (``kernels_int8_small``: ``edgec_q8_conv_cv`` and the
depthwise ``edgec_q8_dw_cv``) are bit-exact with ``edgec.quant.reference.run_integer`` on every remainder of
their tiles: output channels not a multiple of 16 (and a last block of 1 or 2), odd patch lengths, planes of 1
to 16 pixels (4-pixel tiles, a last tile of 3, single pixels), pointwise with strides 1 and 2 (the im2col
path), depthwise windows of 9 and 25 taps (dilated, strided, asymmetric pads, channel blocks of 16 with
remainders); per-channel and per-tensor weights, double rounding (the vector requantization) and single
rounding (element by element). Each configuration is built three times: AVX2 (-march=native), ASan/UBSan
(-mavx2) and portable C (-DEDGEC_Q8_PORTABLE); all warnings are errors."""

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
from edgec.backends.c.kernels_int8_small import (DW_LANE, MC, dw_lanes_pays, pack_dw_lanes, pack_weights_lanes,
                                                 small_pays)
from edgec.backends.c.verify import build
from edgec.ir.parser import parse_model
from edgec.ir.printer import print_model

from int8_util import int8_samples, quantize_for_c
from test_int8_c_fast import AVX2

RNG = np.random.default_rng(31)
SHAPE = (1, 6, 7, 7)


def _w(name: str, shape: Sequence[int], s: float = 0.3) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * s).astype(np.float32), name)


def small_net() -> onnx.ModelProto:
    """Small planes (comments: M, K, P) hitting the tile remainders of the channel-lane kernel."""
    nodes = [
        h.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),  # 3x3 pad 1: M 24, K 54, P 49 (GEMM)
        h.make_node("Relu", ["c0"], ["r0"]),
        h.make_node("Conv", ["r0", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),  # 3x3: the generic kernel
        h.make_node("Conv", ["c1", "w2", "b2"], ["c2"]),  # pointwise M 61, K 50, P 16
        h.make_node("Clip", ["c2", "zero", "six"], ["r2"]),
        h.make_node("Conv", ["r2", "w3", "b3"], ["c3"], strides=[2, 2]),  # 1x1 stride 2 (the im2col of full windows): M 48, K 61 (odd), P 4
        h.make_node("Conv", ["c3", "w4", "b4"], ["y0"], strides=[2, 2]),  # M 49, K 48, P 1
        h.make_node("Conv", ["r0", "w5", "b5"], ["y1"], strides=[2, 2]),  # 3x3: the generic kernel
        h.make_node("Conv", ["x", "w6", "b6"], ["y2"], pads=[0, 1, 0, 1]),  # 3x1 on 45 pixels: the GEMM
        # depthwise (channels on the lanes too): 24 channels on 7x7 (flattened chunks of 8 and a tail)
        h.make_node("Conv", ["r0", "wd0", "bd0"], ["d0"], group=24, pads=[1, 1, 1, 1]),
        # 5x5 taps (an odd count), dilation 2, stride 2, to 4x4
        h.make_node("Conv", ["d0", "wd1", "bd1"], ["y3"], group=24, pads=[4, 4, 4, 4], strides=[2, 2],
                    dilations=[2, 2]),
        h.make_node("Conv", ["c1", "wd2", "bd2"], ["y4"], group=50, pads=[1, 0, 1, 2]),  # 50 channels: 16+16+16+2
        # pointwise on planes of 9 (2 tiles + 1 pixel), 6 (a tile of 4 + 2 pixels), 7 (tiles of 4 and 3), 14
        h.make_node("Conv", ["y1", "wq0", "bq0"], ["y5"]),
        h.make_node("Conv", ["r0", "wq1", "bq1"], ["y6"], strides=[4, 3]),
        h.make_node("Conv", ["r0", "wq1", "bq1"], ["y7"], strides=[1, 7]),
        h.make_node("Conv", ["r0", "wq1", "bq1"], ["y8"], strides=[1, 4]),
    ]
    inits = [_w("w0", [24, 6, 3, 3], 0.2), _w("b0", [24], 0.1), _w("w1", [50, 24, 3, 3], 0.05), _w("b1", [50], 0.1),
             _w("w2", [61, 50, 1, 1], 0.2), _w("b2", [61], 0.1), _w("w3", [48, 61, 1, 1], 0.2), _w("b3", [48], 0.1),
             _w("w4", [49, 48, 1, 1], 0.2), _w("b4", [49], 0.1), _w("w5", [57, 24, 3, 3], 0.05), _w("b5", [57], 0.1),
             _w("w6", [64, 6, 3, 1], 0.2), _w("b6", [64], 0.1), _w("wd0", [24, 1, 3, 3]), _w("bd0", [24], 0.1),
             _w("wd1", [24, 1, 5, 5], 0.2), _w("bd1", [24], 0.1), _w("wd2", [50, 1, 3, 3]), _w("bd2", [50], 0.1),
             _w("wq0", [48, 57, 1, 1], 0.2), _w("bq0", [48], 0.1), _w("wq1", [50, 24, 1, 1], 0.2), _w("bq1", [50], 0.1),
             nh.from_array(np.array(0.0, np.float32), "zero"), nh.from_array(np.array(6.0, np.float32), "six")]
    outs = [h.make_tensor_value_info(n, T.FLOAT, None) for n in ("y0", "y1", "y2", "c2", "y3", "y4", "y5", "y6", "y7", "y8")]
    g = h.make_graph(nodes, "smallnet", [h.make_tensor_value_info("x", T.FLOAT, list(SHAPE))], outs, inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 21)])


@pytest.fixture(scope="module")
def models() -> Dict[Any, Any]:
    cal = {"x": RNG.uniform(-1.0, 2.0, (8,) + SHAPE[1:]).astype(np.float32)}
    return {**{pc: quantize_for_c(small_net(), cal, pc) for pc in (True, False)},
            "symmetric": quantize_for_c(small_net(), cal, True, True)}


def _samples() -> List[Dict[str, np.ndarray]]:
    return int8_samples(RNG, SHAPE)


def test_pack_weights_lanes_layout() -> None:
    """Block q, pair kk, lane r: (w[q*MC + r, 2kk], w[q*MC + r, 2kk + 1]); padded channels and the odd k are 0."""
    w = RNG.integers(-128, 128, (19, 3, 1, 1)).astype(np.int8)
    a = pack_weights_lanes(w)
    k2 = 2
    assert a.dtype == np.int8 and a.size == 2 * MC * 2 * k2
    for m in range(2 * MC):
        for k in range(4):
            v = a[(m // MC) * 2 * MC * k2 + (k // 2) * 2 * MC + (m % MC) * 2 + k % 2]
            assert v == (int(w[m, k, 0, 0]) if m < 19 and k < 3 else 0)


def test_pack_dw_lanes_layout() -> None:
    """Block q, row kh, pair k2, lane l: taps (kh, 2k2) and (kh, 2k2 + 1) of channel 16q + DW_LANE[l]; padding 0."""
    w = RNG.integers(-128, 128, (19, 1, 3, 5)).astype(np.int8)
    a = pack_dw_lanes(w).reshape(2, 3, 3, 16, 2)
    for c in range(32):
        lane = int(np.where(DW_LANE == c % 16)[0][0])
        for kh in range(3):
            for kw in range(6):
                want = int(w[c, 0, kh, kw]) if c < 19 and kw < 5 else 0
                assert a[c // 16, kh, kw // 2, lane, kw % 2] == want


def test_small_planes_only() -> None:
    """1x1 windows on planes up to 48 pixels with at least 48 output channels, one group; the rest elsewhere."""
    f = {"groups": 1, "kh": 1, "kw": 1, "oh": 6, "ow": 8, "m": 48}
    assert small_pays(f) and not small_pays({**f, "ow": 9}) and not small_pays({**f, "groups": 2})
    assert not small_pays({**f, "m": 47}) and not small_pays({**f, "kh": 3})
    dw = {"groups": 8, "c": 8, "m": 8, "kh": 3, "kw": 3, "oh": 16, "ow": 16}
    assert dw_lanes_pays(dw) and not dw_lanes_pays({**dw, "ow": 17}) and not dw_lanes_pays({**dw, "m": 16})


BUILDS = [("native", ["-march=native"], False), ("sanitized", ["-mavx2"] if AVX2 else [], True),
          ("portable", ["-DEDGEC_Q8_PORTABLE"], False)]


@pytest.mark.parametrize("variant, rounding", [(True, "double"), (False, "double"), (True, "single"),
                                               ("symmetric", "double"), ("symmetric", "single")])
def test_small_plane_kernel_bit_exact(variant: Any, rounding: str, models: Any, tmp_path: Path) -> None:
    """``variant``: per-channel weights (True), per-tensor (False), or per-channel with symmetric activations
    ("symmetric": the fused ReLUs clamp at the zero point 0, narrower than int8)."""
    qdq = models[variant]
    code, res = compile_int8(parse_model(print_model(qdq, elide_limit=None)), "model", rounding=rounding)
    assert not res.float_regions and not res.float_nodes, res.summary()
    src = code.files["model.c"]
    if variant == "symmetric":
        assert ".qmin = 0," in src
    assert src.count("    edgec_q8_conv_cv(&p,") == 7 and src.count("    edgec_q8_conv_gemm(&p,") == 2
    assert src.count("    edgec_q8_dw_cv(&p,") == 3
    write_c(code, str(tmp_path))
    for label, flags, sanitize in BUILDS:
        prog = build(str(tmp_path), code.report, opt="-O1" if sanitize else "-O3", sanitize=sanitize,
                     extra_flags=flags)
        chk = check_int8(prog, code, qdq, _samples(), rounding=rounding, io=res.io)
        assert chk.ok and chk.max_float_diff == 0.0, f"{label}: {chk.summary()}"
