"""C target: the GEMM-based edgec.Attention kernel (packed K^T / V panels, score blocks in scratch) and the
vectorized softmax / layernorm row loops (polynomial exp), against numpy / onnxruntime, built under
ASan/UBSan with -Werror, and once more optimized for the host (-O3 -march=native) and without the vector
extensions (the scalar fallback)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgec.backends.c import compile_to_c
from edgec.backends.c.verify import build, compare, reference_outputs, run_binary
from edgec.ir import edgec_ops  # noqa: F401 - registers the edgec ops (and their shape rules) before loading

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_c_attention import _attention_ref  # noqa: E402 - the numpy reference of edgec.Attention

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

RNG = np.random.default_rng(2027)

#: (optimization flags, extra flags, sanitize): the test build, the benchmark build, the scalar fallback.
BUILDS = [("-O1", (), True), ("-O3", ("-march=native",), False), ("-O2", ("-DEDGEC_NO_VECTOR_EXT",), True)]


def _compile(tmp_path: Path, model: onnx.ModelProto, shapes: Sequence[str] = ()) -> tuple:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    code = compile_to_c(str(path), str(tmp_path / "out"), shapes, opt_level=0)
    return code, path


def _run_all_builds(tmp_path: Path, model: onnx.ModelProto, feeds: Dict[str, np.ndarray],
                    refs: Optional[List[np.ndarray]] = None, builds: Sequence[tuple] = BUILDS[:1],
                    max_ulp: int = 100) -> dict:
    code, path = _compile(tmp_path, model)
    if refs is None:
        refs = reference_outputs(str(path), feeds)
    for opt, extra, san in builds:
        prog = build(str(tmp_path / "out"), code.report, opt=opt, sanitize=san, extra_flags=list(extra))
        got = run_binary(prog, code.report, feeds)
        for t, g, r in zip(code.report["outputs"], got, refs):
            c = compare(t["name"], g, r, rtol=1e-4, atol=1e-5, max_ulp=max_ulp)
            assert c.ok, f"{opt} {extra}: {t['name']}: {c} (C {g.reshape(-1)[:6]} vs ref {r.reshape(-1)[:6]})"
    return code.report


# --- edgec.Attention written directly ----------------------------------------------------------------


def _attention_model(ins: Dict[str, Sequence[int]], heads: int, scale: Optional[float]) -> onnx.ModelProto:
    attrs = {"num_heads": heads}
    if scale is not None:
        attrs["scale"] = scale
    node = h.make_node("Attention", list(ins), ["y"], domain="edgec", **attrs)
    g = h.make_graph([node], "g", [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in ins.items()],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("edgec", 1)], ir_version=9)


# Sequence lengths off the 6x16 tile, odd head sizes, Dv a multiple of 16 (V read in place) or not (V
# packed), every mask broadcast pattern (row stride 0 / 1 along Sk, per batch / head / query row),
# several score blocks (long Sk) and several K^T column blocks (Sk * Dq beyond one GEMM block).
CASES = [
    dict(b=1, sq=1, sk=1, heads=1, dq=1, dv=1, mask=None, scale=None),
    dict(b=2, sq=13, sk=19, heads=3, dq=5, dv=7, mask=None, scale=0.4),
    dict(b=2, sq=7, sk=17, heads=2, dq=16, dv=16, mask=[2, 1, 1, 17], scale=None),      # padding mask
    dict(b=1, sq=9, sk=33, heads=2, dq=7, dv=32, mask=[9, 33], scale=None),              # [Sq, Sk]
    dict(b=2, sq=5, sk=23, heads=4, dq=3, dv=20, mask=[2, 4, 5, 23], scale=1.0),         # full mask
    dict(b=1, sq=6, sk=16, heads=2, dq=8, dv=8, mask=[2, 1, 1], scale=None),             # [H, 1, 1]: one per head
    dict(b=2, sq=4, sk=12, heads=1, dq=4, dv=4, mask=[2, 1, 4, 1], scale=None),          # per query row
    dict(b=1, sq=3, sk=29, heads=2, dq=6, dv=6, mask=[29], scale=None),                  # rank 1
    dict(b=1, sq=3, sk=8, heads=2, dq=6, dv=6, mask=[1], scale=None),                    # one element
    dict(b=1, sq=20, sk=700, heads=1, dq=9, dv=16, mask=[1, 1, 1, 700], scale=None),     # score blocks of 6 rows
    dict(b=1, sq=8, sk=600, heads=2, dq=64, dv=48, mask=None, scale=None),               # 2 K^T column blocks
    dict(b=1, sq=130, sk=128, heads=4, dq=64, dv=64, mask=[1, 1, 1, 128], scale=None),   # BERT-like, Sq > block
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "q{sq}k{sk}h{heads}d{dq}v{dv}m{mask}".format(**c)
                         .replace(" ", "").replace("[", "").replace("]", "").replace(",", "x"))
def test_attention_fast_shapes(tmp_path: Path, case: dict) -> None:
    b, sq, sk, hh, dq, dv = (case[x] for x in ("b", "sq", "sk", "heads", "dq", "dv"))
    ins = {"q": [b, sq, hh * dq], "k": [b, sk, hh * dq], "v": [b, sk, hh * dv]}
    if case["mask"] is not None:
        ins["mask"] = case["mask"]
    feeds = {n: RNG.standard_normal(s).astype(np.float32) for n, s in ins.items()}
    if "mask" in feeds and case["mask"][-1] > 1:  # -1e4 on some keys (not on a whole row: in float32,
        # s - 1e4 keeps only ~1e-3 of s, which a float64 reference does not see)
        feeds["mask"] = np.where(feeds["mask"] > 0.8, -1e4, feeds["mask"]).astype(np.float32)
    ref = _attention_ref(feeds["q"], feeds["k"], feeds["v"], hh, case["scale"], feeds.get("mask"))
    builds = BUILDS if sq * sk < 2000 else BUILDS[:1]
    report = _run_all_builds(tmp_path, _attention_model(ins, hh, case["scale"]), feeds, [ref], builds)
    assert report["layers"][0]["op"] == "edgec::Attention"


def test_attention_fast_masked_out_and_extreme_scores(tmp_path: Path) -> None:
    """-inf / -1e4 masks, keys masked out entirely except one, large score ranges (exp underflow to 0)."""
    b, sq, sk, hh, d = 2, 5, 21, 2, 8
    ins = {"q": [b, sq, hh * d], "k": [b, sk, hh * d], "v": [b, sk, hh * d], "mask": [b, 1, 1, sk]}
    feeds = {n: RNG.standard_normal(s).astype(np.float32) for n, s in ins.items()}
    feeds["q"] *= 6.0  # scores spread over ~[-100, 100]
    mask = np.zeros((b, 1, 1, sk), np.float32)
    mask[0, ..., 1:] = -np.inf  # batch 0: only key 0 visible
    mask[1, ..., 15:] = -1e4
    feeds["mask"] = mask
    ref = _attention_ref(feeds["q"], feeds["k"], feeds["v"], hh, None, feeds["mask"])
    _run_all_builds(tmp_path, _attention_model(ins, hh, None), feeds, [ref], BUILDS)


def test_attention_fast_scratch_is_bounded(tmp_path: Path) -> None:
    """Scores live in blocks of query rows: the scratch does not grow with Sq * Sk."""
    b, sq, sk, hh, d = 1, 512, 512, 1, 32
    ins = {"q": [b, sq, hh * d], "k": [b, sk, hh * d], "v": [b, sk, hh * d]}
    code, _ = _compile(tmp_path, _attention_model(ins, hh, None))
    text = (tmp_path / "out" / "model.c").read_text()
    assert "edgec_attention(" in text and "expf(" not in text.split("/* --- layers --- */")[1]
    # a full score matrix alone would be Sq * Sk floats (1 MiB); inputs, output and scratch stay below
    assert code.report["memory"]["arena_bytes"] < 4 * sq * sk


# --- softmax / layernorm row loops, onnxruntime reference ---------------------------------------------

def _model(nodes: List[onnx.NodeProto], inputs: Dict[str, Sequence[int]], outputs: Sequence[str],
           inits: Sequence[onnx.TensorProto] = (), opset: int = 17) -> onnx.ModelProto:
    ins = [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs.items()]
    outs = [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs]
    g = h.make_graph(nodes, "g", ins, outs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=9)


@pytest.mark.parametrize("shape", [[3, 1], [2, 7], [4, 8], [3, 37], [2, 3, 130]])
def test_softmax_rows(tmp_path: Path, shape: List[int]) -> None:
    """Last-axis (Log)Softmax: rows shorter than, equal to and not a multiple of the 8-float vector;
    -inf entries, large magnitudes (exp arguments down to about -170)."""
    nodes = [h.make_node("Softmax", ["x"], ["y0"], axis=-1), h.make_node("LogSoftmax", ["x"], ["y1"], axis=-1)]
    x = (RNG.standard_normal(shape) * 30).astype(np.float32)
    x.reshape(-1)[::5] = -np.inf
    x.reshape(-1, shape[-1])[:, 0] = 2.0  # at least one finite element per row
    _run_all_builds(tmp_path, _model(nodes, {"x": shape}, ["y0", "y1"]), {"x": x}, builds=BUILDS)


def test_softmax_inner_axis_blocks(tmp_path: Path) -> None:
    """Softmax over a middle axis with more than 64 inner lanes (two lane blocks), LogSoftmax likewise,
    and the opset-11 flattening."""
    nodes = [h.make_node("Softmax", ["x"], ["y0"], axis=1), h.make_node("LogSoftmax", ["x"], ["y1"], axis=1)]
    x = (RNG.standard_normal((2, 5, 70)) * 4).astype(np.float32)
    _run_all_builds(tmp_path, _model(nodes, {"x": [2, 5, 70]}, ["y0", "y1"]), {"x": x}, builds=BUILDS)
    nodes = [h.make_node("Softmax", ["x"], ["y0"], axis=1)]
    _run_all_builds(tmp_path / "op11", _model(nodes, {"x": [2, 5, 70]}, ["y0"], opset=11), {"x": x})


def test_exp_accuracy_through_softmax(tmp_path: Path) -> None:
    """exp over [-87, 0] (the softmax range) against float64: a row [0, t] gives y1 = e^t / (1 + e^t)."""
    t = np.linspace(-87.0, 0.0, 4001, dtype=np.float32)
    x = np.stack([np.zeros_like(t), t], axis=1)
    ref = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    ref = (ref / ref.sum(1, keepdims=True)).astype(np.float32)
    nodes = [h.make_node("Softmax", ["x"], ["y"], axis=-1)]
    # rows of two: scalar tail loop; transposed to one row of 4001 pairs below for the vector loop
    _run_all_builds(tmp_path, _model(nodes, {"x": list(x.shape)}, ["y"]), {"x": x}, [ref], BUILDS, max_ulp=4)
    xr = t.reshape(1, -1)
    e = np.exp(xr.astype(np.float64) - xr.max())
    ref = (e / e.sum()).astype(np.float32)
    _run_all_builds(tmp_path / "row", _model(nodes, {"x": list(xr.shape)}, ["y"]), {"x": xr}, [ref], BUILDS,
                    max_ulp=8)


@pytest.mark.parametrize("n", [1, 5, 8, 33, 256])
def test_layernorm_rows(tmp_path: Path, n: int) -> None:
    """LayerNorm rows of any length, with and without bias, and a large common offset (the mean summed about
    the first element, two-pass variance), against float64."""
    g = (RNG.standard_normal(n) * 0.5 + 1).astype(np.float32)
    bb = RNG.standard_normal(n).astype(np.float32)
    nodes = [h.make_node("LayerNormalization", ["x", "g", "bb"], ["y0"], epsilon=1e-5),
             h.make_node("LayerNormalization", ["x", "g"], ["y1"], epsilon=1e-3)]
    x = (RNG.standard_normal((3, 4, n)) * 2 + 100).astype(np.float32)
    xd = x.astype(np.float64)
    norm = xd - xd.mean(-1, keepdims=True)
    var = (norm ** 2).mean(-1, keepdims=True)
    refs = [(norm / np.sqrt(var + eps) * g + b).astype(np.float32) for eps, b in ((1e-5, bb), (1e-3, 0.0))]
    inits = [nh.from_array(g, "g"), nh.from_array(bb, "bb")]
    _run_all_builds(tmp_path, _model(nodes, {"x": [3, 4, n]}, ["y0", "y1"], inits), {"x": x}, refs, BUILDS)
