"""The int8 C convolution kernels (im2col + int16 GEMM, depthwise over padded planes, tiny planes 8
channels at a time, pointwise, Add) are bit-exact with ``edgec.quant.reference.run_integer`` on every
path: plane sizes around the thresholds, strides 1 and 2, dilation, 5x5 taps, channel multipliers,
patch lengths below / above / not a multiple of 16, both roundings, per-channel and per-tensor weights,
HAL and inline placements; built with the sanitizers."""

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
from edgec.backends.c.verify import build
from edgec.ir.parser import parse_model
from edgec.ir.printer import print_model

from int8_util import quantize_for_c

RNG = np.random.default_rng(11)


def _w(name: str, shape: Sequence[int], s: float = 0.3) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * s).astype(np.float32), name)


def block_net() -> onnx.ModelProto:
    """MobileNet-like layers: 3x3 convs (K 72, 144), depthwise 3x3 s1 and s2, dilated, 5x5 on planes of
    20x20, 10x10 and 5x5, with a channel multiplier; pointwise with K 8, 16, 24 and 48; residual Adds."""
    nodes = [
        h.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),  # 8 -> 16 on 20x20, K 72
        h.make_node("Relu", ["c0"], ["r0"]),
        h.make_node("Conv", ["r0", "wd0", "bd0"], ["d0"], group=16, pads=[1, 1, 1, 1]),  # dw 20x20
        h.make_node("Conv", ["d0", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),  # 16 -> 16, 10x10
        h.make_node("Clip", ["c1", "zero", "six"], ["r1"]),
        h.make_node("Conv", ["r1", "wd1", "bd1"], ["d1"], group=16, pads=[1, 1, 1, 1]),  # dw 10x10 s1
        h.make_node("Add", ["r1", "d1"], ["a1"]),
        h.make_node("Conv", ["a1", "wp1", "bp1"], ["p1"]),  # pointwise K 16 -> 8
        h.make_node("Relu", ["p1"], ["rp1"]),
        h.make_node("Conv", ["rp1", "wp2", "bp2"], ["p2"]),  # pointwise K 8 -> 24
        h.make_node("Relu", ["p2"], ["rp2"]),
        h.make_node("Conv", ["rp2", "wd2", "bd2"], ["d2"], group=24, strides=[2, 2], pads=[1, 1, 1, 1]),  # s2 -> 5x5
        h.make_node("Conv", ["d2", "wd3", "bd3"], ["d3"], group=24, pads=[2, 2, 2, 2]),  # 5x5 taps, tiny plane
        h.make_node("Conv", ["d3", "wd4", "bd4"], ["d4"], group=24, pads=[2, 2, 2, 2], dilations=[2, 2]),
        h.make_node("Add", ["d2", "d4"], ["a2"]),
        h.make_node("Conv", ["a2", "wd5", "bd5"], ["d5"], group=24, pads=[1, 1, 1, 1]),  # multiplier 2
        h.make_node("Conv", ["d5", "wp3", "bp3"], ["y"]),  # pointwise K 48 on 5x5 (not a multiple of 16: 24)
        h.make_node("Conv", ["a2", "wp4", "bp4"], ["y2"], strides=[2, 2]),  # 1x1 stride 2, K 24
        h.make_node("Conv", ["r0", "we0", "be0"], ["e0"], group=16, strides=[2, 2], pads=[1, 1, 1, 1]),  # 10x10
        h.make_node("Conv", ["e0", "we1", "be1"], ["e1"], group=16, pads=[2, 2, 2, 2], dilations=[2, 2]),
        h.make_node("Conv", ["e1", "we2", "be2"], ["y3"], group=16, pads=[2, 2, 2, 2]),  # 5x5 taps on 10x10
    ]
    inits = [_w("w0", [16, 8, 3, 3], 0.2), _w("b0", [16], 0.1), _w("wd0", [16, 1, 3, 3]), _w("bd0", [16], 0.1),
             _w("w1", [16, 16, 3, 3], 0.15), _w("b1", [16], 0.1), _w("wd1", [16, 1, 3, 3]), _w("bd1", [16], 0.1),
             _w("wp1", [8, 16, 1, 1]), _w("bp1", [8], 0.1), _w("wp2", [24, 8, 1, 1]), _w("bp2", [24], 0.1),
             _w("wd2", [24, 1, 3, 3]), _w("bd2", [24], 0.1), _w("wd3", [24, 1, 5, 5], 0.15), _w("bd3", [24], 0.1),
             _w("wd4", [24, 1, 3, 3]), _w("bd4", [24], 0.1), _w("wd5", [48, 1, 3, 3]), _w("bd5", [48], 0.1),
             _w("wp3", [10, 48, 1, 1], 0.2), _w("bp3", [10], 0.1), _w("wp4", [6, 24, 1, 1]), _w("bp4", [6], 0.1),
             _w("we0", [16, 1, 3, 3]), _w("be0", [16], 0.1), _w("we1", [16, 1, 3, 3]), _w("be1", [16], 0.1),
             _w("we2", [16, 1, 5, 5], 0.15), _w("be2", [16], 0.1),
             nh.from_array(np.array(0.0, np.float32), "zero"), nh.from_array(np.array(6.0, np.float32), "six")]
    g = h.make_graph(nodes, "blocknet", [h.make_tensor_value_info("x", T.FLOAT, [1, 8, 20, 20])],
                     [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("y2", T.FLOAT, None),
                      h.make_tensor_value_info("y3", T.FLOAT, None), h.make_tensor_value_info("d0", T.FLOAT, None)],
                     inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 21)])


_quantize = quantize_for_c


@pytest.fixture(scope="module")
def models() -> Dict[bool, Any]:
    proto = block_net()
    cal = {"x": RNG.uniform(-1.0, 2.0, (16, 8, 20, 20)).astype(np.float32)}
    return {pc: _quantize(proto, cal, pc) for pc in (True, False)}


@pytest.mark.parametrize("per_channel, rounding, place", [
    (True, "double", "npu"), (True, "double", None), (False, "double", "npu"), (True, "single", None),
    (False, "single", "npu")])
def test_conv_kernels_bit_exact(per_channel: bool, rounding: str, place: Any, models: Any, tmp_path: Path) -> None:
    qdq = models[per_channel]
    placement = (lambda n: "npu") if place == "npu" else None  # default: inline CPU kernels
    code, res = compile_int8(parse_model(print_model(qdq, elide_limit=None)), "model", rounding=rounding,
                             placement=placement)
    assert not res.float_regions and not res.float_nodes, res.summary()
    convs = [L for L in code.report["layers"] if L.get("source_op") == "Conv"]
    assert len(convs) == 15 and {L["placement"] for L in convs} == {place or "cpu"}
    write_c(code, str(tmp_path))
    prog = build(str(tmp_path), code.report, opt="-O1", sanitize=True)
    samples: List[Dict[str, np.ndarray]] = [{"x": RNG.uniform(-1.5, 2.5, (1, 8, 20, 20)).astype(np.float32)}
                                            for _ in range(3)]
    samples.append({"x": np.full((1, 8, 20, 20), 40.0, np.float32)})  # saturating accumulators
    chk = check_int8(prog, code, qdq, samples, rounding=rounding, io=res.io)
    assert chk.ok and chk.max_float_diff == 0.0, chk.summary()
