"""C target, fp32 depthwise convolution (``edgec_dwconv2d_padded``): the padded input plane split into
stride phase planes, wide rows computed straight into the output, narrow planes in flat chunks of rows
at the padded row pitch. Every case is built with ASan/UBSan and -Wall -Wextra -Werror and compared
with onnxruntime; single-node models put the kernel's scratch at the end of the (instrumented) arena,
so a scratch size smaller than what the kernel touches is an ASan error."""

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

RNG = np.random.default_rng(7)


def _w(name: str, shape: Sequence[int], scale: float = 0.3) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes: List[onnx.NodeProto], inputs: Dict[str, Sequence[int]], outputs: Sequence[str],
           inits: Sequence[onnx.TensorProto] = ()) -> onnx.ModelProto:
    ins = [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs.items()]
    outs = [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs]
    g = h.make_graph(nodes, "g", ins, outs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


def _run(tmp_path: Path, model: onnx.ModelProto, feeds: Dict[str, np.ndarray], opt_level: int = 0) -> dict:
    """Compile to C, build with sanitizers, run, compare with onnxruntime; returns the report."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    code = compile_to_c(str(path), str(out), (), opt_level=opt_level)
    prog = build(str(out), code.report, opt="-O1", sanitize=True)
    got = run_binary(prog, code.report, feeds)
    ref = reference_outputs(str(path), feeds)
    for t, g, r in zip(code.report["outputs"], got, ref):
        c = compare(t["name"], g, r, rtol=1e-4, atol=1e-4, max_ulp=0)
        assert c.ok, f"{t['name']}: {c} (C {g.reshape(-1)[:6]} vs ORT {r.reshape(-1)[:6]})"
    src = (out / "model.c").read_text()
    assert "edgec_dwconv2d_padded(x0" in src
    return code.report


# name: (input shape N, C, H, W; kernel (KH, KW); attrs). Channels are odd counts, widths straddle
# the direct-row threshold (32 outputs) and the 8-float vector, strides 1-3, asymmetric pads.
CASES = {
    "narrow_s1": ([1, 5, 13, 11], (3, 3), {"pads": [1, 1, 1, 1]}),
    "narrow_s2": ([1, 3, 15, 14], (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "narrow_s2_nopad": ([1, 3, 11, 12], (3, 3), {"strides": [2, 2]}),
    "narrow_s2_asym_pad": ([1, 3, 10, 9], (3, 3), {"strides": [2, 2], "pads": [0, 1, 2, 1]}),
    "narrow_s3_s1": ([1, 2, 16, 13], (3, 3), {"strides": [3, 1], "pads": [1, 2, 1, 0]}),
    "narrow_dilated": ([1, 2, 12, 12], (3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "narrow_dilated_s2": ([1, 3, 17, 15], (3, 3), {"dilations": [2, 3], "strides": [2, 2], "pads": [2, 3, 1, 3]}),
    "narrow_5x5": ([1, 4, 9, 10], (5, 5), {"pads": [2, 1, 2, 3]}),
    "narrow_tiny": ([1, 3, 2, 2], (3, 3), {"pads": [1, 1, 1, 1]}),
    "narrow_one_row": ([1, 3, 1, 9], (1, 3), {"pads": [0, 1, 0, 1]}),
    "wide_s1": ([1, 3, 6, 37], (3, 3), {"pads": [1, 1, 1, 1]}),
    "wide_s2": ([1, 5, 7, 75], (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "wide_s2_odd_pad": ([1, 3, 6, 70], (3, 3), {"strides": [2, 2], "pads": [0, 1, 1, 0]}),
    "wide_s3_dilated": ([1, 2, 8, 110], (3, 3), {"strides": [1, 3], "dilations": [1, 2], "pads": [1, 2, 1, 2]}),
    "wide_5x5_s2": ([1, 3, 9, 70], (5, 5), {"strides": [2, 2], "pads": [2, 2, 2, 2]}),
    "wide_exact_threshold": ([1, 2, 4, 32], (3, 3), {"pads": [1, 1, 1, 1]}),
    "many_rows_chunks": ([1, 2, 70, 20], (3, 3), {"pads": [1, 1, 1, 1]}),  # several flat chunks per plane
    "taps_9x9": ([1, 2, 12, 12], (9, 9), {"pads": [4, 4, 4, 4]}),  # 81 taps: offsets computed per chunk
    "batch2": ([2, 3, 9, 8], (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_depthwise_shapes(tmp_path: Path, case: str) -> None:
    """Every stride / dilation / padding / width combination against onnxruntime, with bias."""
    xs, (kh, kw), attrs = CASES[case]
    c = xs[1]
    m = _model([h.make_node("Conv", ["x", "w", "b"], ["y"], group=c, kernel_shape=[kh, kw], **attrs)],
               {"x": xs}, ["y"], [_w("w", [c, 1, kh, kw]), _w("b", [c])])
    _run(tmp_path, m, {"x": RNG.standard_normal(xs).astype(np.float32)})


@pytest.mark.parametrize("act,width", [("Relu", 9), ("Clip", 40), ("HardSwish", 9), ("LeakyRelu", 40)])
def test_depthwise_fused_activation(tmp_path: Path, act: str, width: int) -> None:
    """-O2 fuses the activation into the depthwise kernel, on both the flat and the direct-row path."""
    extra = [nh.from_array(np.array(0.0, np.float32), "lo"), nh.from_array(np.array(6.0, np.float32), "hi")]
    ins = ["c", "lo", "hi"] if act == "Clip" else ["c"]
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], group=7, pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node(act, ins, ["y"])]
    inits = [_w("w", [7, 1, 3, 3], 1.0), _w("b", [7])] + (extra if act == "Clip" else [])
    xs = [1, 7, 11, 2 * width]
    rep = _run(tmp_path, _model(nodes, {"x": xs}, ["y"], inits), {"x": RNG.standard_normal(xs).astype(np.float32) * 4},
               opt_level=2)
    assert [L["op"] for L in rep["layers"]] == ["edgec::FusedConv"]


def test_depthwise_1d(tmp_path: Path) -> None:
    """A 1-D depthwise convolution runs as one-row planes."""
    m = _model([h.make_node("Conv", ["x", "w"], ["y"], group=5, pads=[2, 1], strides=[2])], {"x": [1, 5, 41]},
               ["y"], [_w("w", [5, 1, 4])])
    _run(tmp_path, m, {"x": RNG.standard_normal((1, 5, 41)).astype(np.float32)})


@pytest.mark.parametrize("case", ["narrow_s1", "narrow_s2", "wide_s2", "wide_s1", "taps_9x9"])
def test_depthwise_scratch_is_the_arena(tmp_path: Path, case: str) -> None:
    """A single depthwise node: the arena is exactly its scratch (phase planes, plus the flat chunk for
    narrow outputs), the size the C kernel indexes."""
    xs, (kh, kw), attrs = CASES[case]
    c = xs[1]
    m = _model([h.make_node("Conv", ["x", "w"], ["y"], group=c, kernel_shape=[kh, kw], **attrs)], {"x": xs}, ["y"],
               [_w("w", [c, 1, kh, kw])])
    rep = _run(tmp_path, m, {"x": RNG.standard_normal(xs).astype(np.float32)})
    y = rep["layers"][0]["output_shape"]
    st, dl = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
    floats = K._dw_scratch_floats(y, [kh, kw], st, dl)
    assert rep["memory"]["arena_bytes"] == -(-4 * floats // 16) * 16
    hq = -(-((y[2] - 1) * st[0] + (kh - 1) * dl[0] + 1) // st[0])
    wq = -(-((y[3] - 1) * st[1] + (kw - 1) * dl[1] + 1) // st[1])
    assert floats >= st[0] * st[1] * hq * wq + (y[3] < K._DW_DIRECT) * min(y[2], max(1, K._DW_CHUNK // wq)) * wq


@pytest.mark.parametrize("case", ["narrow_s1", "wide_s2"])
def test_depthwise_short_scratch_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """The scratch check above means something: 8 floats less than the kernel touches fails the ASan run."""
    from edgec.backends.c.verify import VerifyError

    real = K._dw_scratch_floats
    monkeypatch.setattr(K, "_dw_scratch_floats", lambda *a: real(*a) - 8)
    xs, (kh, kw), attrs = CASES[case]
    m = _model([h.make_node("Conv", ["x", "w"], ["y"], group=xs[1], kernel_shape=[kh, kw], **attrs)], {"x": xs},
               ["y"], [_w("w", [xs[1], 1, kh, kw])])
    with pytest.raises(VerifyError, match="AddressSanitizer"):
        _run(tmp_path, m, {"x": RNG.standard_normal(xs).astype(np.float32)})
