"""C target, fast fp32 kernels: every specialisation of convolution (packed GEMM over im2col blocks,
1x1 as GEMM, depthwise 3x3 and general, grouped, direct fallback) and of Gemm / MatMul (weights packed
at compile time, runtime operands packed into the node's scratch), with tile edges (sizes that are
not multiples of the 6x16 register tile) and several column blocks. Built with ASan/UBSan and
-Wall -Wextra -Werror, compared with onnxruntime."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgec.backends.c import compile_to_c
from edgec.backends.c import kernels as K
from edgec.backends.c.verify import build, compare, reference_outputs, run_binary

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

RNG = np.random.default_rng(2026)


def _w(name: str, shape: Sequence[int], scale: float = 0.3) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(nodes: List[onnx.NodeProto], inputs: Dict[str, Sequence[int]], outputs: Sequence[str],
           inits: Sequence[onnx.TensorProto] = (), opset: int = 17) -> onnx.ModelProto:
    ins = [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs.items()]
    outs = [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs]
    g = h.make_graph(nodes, "g", ins, outs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=9)


def run_c(tmp_path: Path, model: onnx.ModelProto, feeds: Dict[str, np.ndarray], *, opt_level: int = 0,
          rtol: float = 1e-4, atol: float = 1e-4, shapes: Sequence[str] = ()) -> dict:
    """Compile to C, build with sanitizers, run, compare every output with onnxruntime; returns the report."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    code = compile_to_c(str(path), str(out), shapes, opt_level=opt_level)
    prog = build(str(out), code.report, opt="-O1", sanitize=True)
    got = run_binary(prog, code.report, feeds)
    ref = reference_outputs(str(path), feeds)
    for t, g, r in zip(code.report["outputs"], got, ref):
        c = compare(t["name"], g, r, rtol=rtol, atol=atol, max_ulp=0)
        assert c.ok, f"{t['name']}: {c} (C {g.reshape(-1)[:6]} vs ORT {r.reshape(-1)[:6]})"
    return code.report


@pytest.fixture(autouse=True)
def _gemm_for_small_layers(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """The test layers are small: take the GEMM path whatever their MAC count (except where a test
    checks the threshold itself)."""
    if "default_threshold" not in request.node.name:
        monkeypatch.setattr(K, "GEMM_MIN_MACS", 0)


def _source(tmp_path: Path) -> str:
    return (tmp_path / "out" / "model.c").read_text()


# --- convolution --------------------------------------------------------------------------------

CONV_CASES = {
    # name: (input shape, weight shape, attrs)
    "pointwise": ([1, 8, 7, 9], [13, 8, 1, 1], {}),
    "pointwise_no_tail": ([1, 9, 4, 8], [7, 9, 1, 1], {}),  # 32 pixels: read in place, no scratch
    "pointwise_strided": ([1, 8, 9, 9], [7, 8, 1, 1], {"strides": [2, 2]}),
    "pointwise_padded": ([1, 5, 4, 6], [7, 5, 1, 1], {"pads": [1, 0, 0, 1]}),
    "3x3_padded": ([1, 6, 10, 11], [11, 6, 3, 3], {"pads": [1, 1, 1, 1]}),
    "3x3_strided_asym_pad": ([1, 4, 13, 12], [9, 4, 3, 3], {"strides": [2, 2], "pads": [0, 1, 2, 1]}),
    "5x5_dilated": ([1, 3, 15, 14], [5, 3, 5, 5], {"dilations": [2, 3], "pads": [4, 6, 4, 6]}),
    "7x7_stem": ([1, 3, 23, 21], [8, 3, 7, 7], {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    "grouped": ([1, 8, 9, 7], [12, 4, 3, 3], {"group": 2, "pads": [1, 1, 1, 1]}),
    "grouped_1x1": ([1, 12, 5, 5], [9, 4, 1, 1], {"group": 3}),
    "channel_multiplier": ([1, 4, 8, 8], [8, 1, 3, 3], {"group": 4, "pads": [1, 1, 1, 1]}),
    "depthwise_3x3": ([1, 5, 11, 13], [5, 1, 3, 3], {"group": 5, "pads": [1, 1, 1, 1]}),
    "depthwise_3x3_s2": ([1, 3, 12, 9], [3, 1, 3, 3], {"group": 3, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "depthwise_3x3_s2_nopad": ([1, 3, 11, 12], [3, 1, 3, 3], {"group": 3, "strides": [2, 2]}),
    "depthwise_3x3_dilated": ([1, 2, 12, 12], [2, 1, 3, 3], {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "depthwise_5x5": ([1, 4, 9, 10], [4, 1, 5, 5], {"group": 4, "pads": [2, 1, 2, 3]}),
    "depthwise_tiny": ([1, 3, 2, 2], [3, 1, 3, 3], {"group": 3, "pads": [1, 1, 1, 1]}),
    "depthwise_wide_pad": ([1, 2, 3, 4], [2, 1, 3, 3], {"group": 2, "pads": [2, 3, 2, 3], "strides": [1, 2]}),
    "batch2": ([2, 3, 6, 7], [7, 3, 3, 3], {"pads": [1, 1, 1, 1]}),
    # K = 64 * 9 = 576: several im2col column blocks of 48 output pixels
    "many_blocks": ([1, 64, 20, 20], [7, 64, 3, 3], {"pads": [1, 1, 1, 1]}),
    # K = 300 * 9 > the block budget / NR: one NR-wide panel per block
    "huge_k": ([1, 300, 5, 6], [5, 300, 3, 3], {"pads": [1, 1, 1, 1]}),
}


def _is_depthwise(case: str) -> bool:
    xs, ws, attrs = CONV_CASES[case]
    return attrs.get("group", 1) == xs[1] == ws[0]


@pytest.mark.parametrize("case,path", [(c, p) for c in sorted(CONV_CASES) for p in ("gemm", "small")
                                       if p == "gemm" or not _is_depthwise(c)])
def test_conv_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, path: str) -> None:
    """Every shape through im2col + GEMM and through the pixel-wise kernel (depthwise has one kernel)."""
    xs, ws, attrs = CONV_CASES[case]
    depthwise = _is_depthwise(case)
    if path == "small":
        monkeypatch.setattr(K, "GEMM_MIN_MACS", 1 << 62)
    m = _model([h.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], {"x": xs}, ["y"],
               [_w("w", ws), _w("b", [ws[0]])])
    run_c(tmp_path, m, {"x": _x(*xs)})
    src = _source(tmp_path)
    assert ("edgec_dwconv2d_padded(x0" in src) == depthwise
    assert ("edgec_conv_gemm(x0" in src) == (not depthwise and path == "gemm")
    assert ("edgec_conv_small(x0" in src) == (not depthwise and path == "small")


def test_conv_1d_no_bias_and_runtime_weights(tmp_path: Path) -> None:
    """1-D convolution through the GEMM path; weights given at run time use the direct kernel."""
    nodes = [h.make_node("Conv", ["s", "w1"], ["c1"], pads=[1, 2], strides=[2]),
             h.make_node("Conv", ["x", "wrt"], ["c2"], pads=[1, 1, 1, 1], group=2)]
    m = _model(nodes, {"s": [1, 3, 17], "x": [1, 4, 6, 6], "wrt": [6, 2, 3, 3]}, ["c1", "c2"], [_w("w1", [7, 3, 4])])
    run_c(tmp_path, m, {"s": _x(1, 3, 17), "x": _x(1, 4, 6, 6), "wrt": _x(6, 2, 3, 3)})
    src = _source(tmp_path)
    assert "edgec_conv_gemm(x0" in src and "edgec_conv2d(x0" in src


@pytest.mark.parametrize("act", ["Relu", "Clip", "HardSwish", "Gelu"])
def test_fused_activation_in_epilogue(tmp_path: Path, act: str) -> None:
    """-O2 fuses the activation into the convolution (GEMM epilogue, depthwise kernel) and the Gemm."""
    extra = [nh.from_array(np.array(0.0, np.float32), "lo"), nh.from_array(np.array(6.0, np.float32), "hi")]

    def ins(t: str) -> List[str]:
        return [t, "lo", "hi"] if act == "Clip" else [t]

    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node(act, ins("c1"), ["a1"]),
             h.make_node("Conv", ["a1", "wd", "bd"], ["c2"], group=10, pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node(act, ins("c2"), ["a2"]),
             h.make_node("Flatten", ["a2"], ["f"]),
             h.make_node("Gemm", ["f", "wg", "bg"], ["g"], transB=1),
             h.make_node(act, ins("g"), ["y"])]
    inits = [_w("w1", [10, 3, 3, 3]), _w("b1", [10]), _w("wd", [10, 1, 3, 3]), _w("bd", [10]),
             _w("wg", [17, 10 * 4 * 5]), _w("bg", [17])] + (extra if act == "Clip" else [])
    m = _model(nodes, {"x": [1, 3, 7, 9]}, ["y"], inits, opset=20 if act == "Gelu" else 17)
    rep = run_c(tmp_path, m, {"x": _x(1, 3, 7, 9) * 3}, opt_level=2)
    ops = [L["op"] for L in rep["layers"]]
    assert ops.count("edgec::FusedConv") == 2 and "edgec::FusedGemm" in ops, ops


# --- Gemm / MatMul ------------------------------------------------------------------------------

def test_gemm_packed_and_runtime(tmp_path: Path) -> None:
    nodes = [
        h.make_node("Gemm", ["a", "b", "c"], ["y0"]),                                   # const B, row bias
        h.make_node("Gemm", ["a", "bt", "cm"], ["y1"], transB=1, alpha=0.5, beta=2.0),  # const B^T, column C
        h.make_node("Gemm", ["at", "b"], ["y2"], transA=1),                             # A^T
        h.make_node("Gemm", ["a", "rb", "cfull"], ["y3"], beta=-1.0),                   # runtime B
        h.make_node("Gemm", ["a", "rbt"], ["y4"], transB=1),                            # runtime B^T
        h.make_node("Gemm", ["a1", "bwide"], ["y5"]),                                   # M = 1, several blocks
    ]
    inits = [_w("b", [37, 23]), _w("c", [23]), _w("bt", [23, 37]), _w("cm", [13, 1]), _w("cfull", [13, 19]),
             _w("bwide", [2100, 40])]
    m = _model(nodes, {"a": [13, 37], "at": [37, 13], "rb": [37, 19], "rbt": [29, 37], "a1": [1, 2100]},
               ["y0", "y1", "y2", "y3", "y4", "y5"], inits)
    rep = run_c(tmp_path, m, {"a": _x(13, 37), "at": _x(37, 13), "rb": _x(37, 19), "rbt": _x(29, 37),
                              "a1": _x(1, 2100)}, atol=3e-4)
    assert rep["memory"]["arena_bytes"] >= 4 * 37 * 32  # runtime B packed in the arena (scratch)


def test_matmul_batched_packed_and_runtime(tmp_path: Path) -> None:
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["y0"]),          # [2,5,33] x const [33,18]: packed once
        h.make_node("MatMul", ["x", "wb"], ["y1"]),         # const batched B [2,33,7]
        h.make_node("MatMul", ["q", "k"], ["y2"]),          # runtime [2,3,7,8] x [2,3,8,11] (attention)
        h.make_node("MatMul", ["v1", "w"], ["y3"]),         # 1-D A
        h.make_node("MatMul", ["x", "v2"], ["y4"]),         # 1-D B (runtime)
        h.make_node("MatMul", ["q", "kb"], ["y5"]),         # runtime B broadcast over the batch
    ]
    inits = [_w("w", [33, 18]), _w("wb", [2, 33, 7])]
    ins = {"x": [2, 5, 33], "q": [2, 3, 7, 8], "k": [2, 3, 8, 11], "v1": [33], "v2": [33], "kb": [8, 17]}
    m = _model(nodes, ins, ["y0", "y1", "y2", "y3", "y4", "y5"], inits)
    run_c(tmp_path, m, {k: _x(*s) for k, s in ins.items()})


@pytest.mark.parametrize("act", ["Relu", "Gelu"])
def test_fused_matmul_bias_activation(tmp_path: Path, act: str) -> None:
    """-O2: MatMul + Add (bias) + activation become FusedMatMul; the bias is a column term of the
    epilogue, Gelu its vectorized erf approximation."""
    nodes = [h.make_node("MatMul", ["x", "w"], ["mm"]), h.make_node("Add", ["mm", "bias"], ["a"]),
             h.make_node(act, ["a"], ["y"])]
    m = _model(nodes, {"x": [1, 9, 24]}, ["y"], [_w("w", [24, 35], 1.0), _w("bias", [35])], opset=20)
    rep = run_c(tmp_path, m, {"x": _x(1, 9, 24)}, opt_level=2)
    assert [L["op"] for L in rep["layers"]] == ["edgec::FusedMatMul"], rep["layers"]


def test_packed_weights_shared_between_nodes(tmp_path: Path) -> None:
    """Two convolutions with the same weight tensor share one packed array."""
    nodes = [h.make_node("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node("Conv", ["c1", "w"], ["y"], pads=[1, 1, 1, 1])]
    m = _model(nodes, {"x": [1, 4, 6, 6]}, ["y"], [_w("w", [4, 4, 3, 3])])
    rep = run_c(tmp_path, m, {"x": _x(1, 4, 6, 6)})
    assert rep["weights"]["arrays"] == 1


def test_tiny_convs_no_scratch_default_threshold(tmp_path: Path) -> None:
    """Below GEMM_MIN_MACS a convolution uses the pixel-wise kernel: no im2col scratch in the arena."""
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node("Conv", ["c1", "w2"], ["y"], pads=[1, 1, 1, 1])]
    m = _model(nodes, {"x": [1, 3, 8, 8]}, ["y"], [_w("w1", [4, 3, 3, 3]), _w("w2", [64, 4, 3, 3])])
    run_c(tmp_path, m, {"x": _x(1, 3, 8, 8)})
    src = _source(tmp_path)
    assert src.count("edgec_conv_small(x0") == 1 and src.count("edgec_conv_gemm(x0") == 1  # 6912 vs 147456 MACs
    assert "edgec_dwconv2d" not in src


def test_zoo_mobilenetv2_small(tmp_path: Path) -> None:
    """Depthwise, pointwise, strided and fused-activation paths together on the zoo's small MobileNetV2."""
    from zoo import TEST_PARAMS, get_path, make_inputs

    path = get_path("mobilenetv2", **TEST_PARAMS["mobilenetv2"])
    feeds = make_inputs(str(path), seed=0, dims={"batch": 1})
    model = onnx.load(str(path))
    run_c(tmp_path, model, feeds, opt_level=2, rtol=1e-3, atol=1e-4, shapes=("batch=1",))
    src = _source(tmp_path)
    assert "edgec_dwconv2d_padded(x0" in src and "edgec_conv_gemm(x0" in src
