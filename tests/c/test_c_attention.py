"""C target: edgec.Attention (recovered by -O2 from MatMul/Softmax attention, or written directly) against
onnxruntime / numpy under ASan/UBSan and -Werror, and the zoo BERT encoder through the CLI."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgec.backends.c import compile_to_c
from edgec.backends.c.verify import build, compare, reference_outputs, run_binary
from edgec.cli import cli
from edgec.ir import edgec_ops  # noqa: F401 - registers the edgec ops (and their shape rules) before loading

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

RNG = np.random.default_rng(63)


def _w(name: str, shape: Sequence[int], scale: float = 0.3) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _i64(name: str, values: Sequence[int]) -> onnx.TensorProto:
    return nh.from_array(np.array(values, np.int64), name)


def _build_and_run(tmp_path: Path, model: onnx.ModelProto, feeds: Dict[str, np.ndarray], opt_level: int,
                   shapes: Sequence[str] = ()) -> tuple:
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    code = compile_to_c(str(path), str(tmp_path / "out"), shapes, opt_level=opt_level)
    prog = build(str(tmp_path / "out"), code.report, opt="-O1", sanitize=True)
    return code.report, run_binary(prog, code.report, feeds), path


def _check(report: dict, got: List[np.ndarray], ref: List[np.ndarray]) -> None:
    for t, g, r in zip(report["outputs"], got, ref):
        c = compare(t["name"], g, r, rtol=1e-4, atol=1e-5, max_ulp=100)
        assert c.ok, f"{t['name']}: {c} (C {g.reshape(-1)[:6]} vs ref {r.reshape(-1)[:6]})"


# --- edgec.Attention written directly, numpy reference (the definition in edgec.ir.edgec_ops) -----

def _attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, scale: Optional[float],
                   mask: Optional[np.ndarray]) -> np.ndarray:
    b, sq, hdq = q.shape
    hdv = v.shape[2]
    dq, dv = hdq // heads, hdv // heads

    def split(x: np.ndarray, d: int) -> np.ndarray:
        return x.reshape(b, x.shape[1], heads, d).transpose(0, 2, 1, 3).astype(np.float64)

    sc = 1.0 / math.sqrt(dq) if scale is None else scale
    s = sc * (split(q, dq) @ split(k, dq).transpose(0, 1, 3, 2))
    if mask is not None:
        s = s + mask
    s = np.exp(s - s.max(-1, keepdims=True))
    p = s / s.sum(-1, keepdims=True)
    return (p @ split(v, dv)).transpose(0, 2, 1, 3).reshape(b, sq, heads * dv).astype(np.float32)


@pytest.mark.parametrize("case", [
    dict(b=2, sq=5, sk=5, heads=2, dq=4, dv=4, mask=None, scale=None),
    dict(b=1, sq=3, sk=6, heads=3, dq=2, dv=5, mask=[1, 1, 1, 6], scale=0.7),      # cross attention, Dv != Dq
    dict(b=2, sq=4, sk=4, heads=2, dq=3, dv=3, mask=[2, 1, 1, 4], scale=None),     # padding mask
    dict(b=2, sq=4, sk=3, heads=2, dq=2, dv=2, mask=[4, 3], scale=None),           # causal-style [Sq, Sk]
    dict(b=2, sq=3, sk=3, heads=2, dq=2, dv=3, mask=[2, 2, 3, 3], scale=1.0),     # full mask
    dict(b=1, sq=2, sk=4, heads=1, dq=8, dv=8, mask=[1, 2, 1], scale=None),        # rank-3 mask [H, 1, Sk]
])
def test_attention_direct(tmp_path: Path, case: dict) -> None:
    b, sq, sk, hh, dq, dv = (case[x] for x in ("b", "sq", "sk", "heads", "dq", "dv"))
    if case["mask"] == [1, 2, 1]:
        case = dict(case, mask=[hh, 1, sk])
    ins = {"q": [b, sq, hh * dq], "k": [b, sk, hh * dq], "v": [b, sk, hh * dv]}
    if case["mask"] is not None:
        ins["mask"] = case["mask"]
    attrs = {"num_heads": hh}
    if case["scale"] is not None:
        attrs["scale"] = case["scale"]
    node = h.make_node("Attention", list(ins), ["y"], domain="edgec", **attrs)
    g = h.make_graph([node], "g", [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in ins.items()],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("edgec", 1)], ir_version=9)
    feeds = {n: RNG.standard_normal(s).astype(np.float32) for n, s in ins.items()}
    if "mask" in feeds:
        feeds["mask"] = np.where(feeds["mask"] > 0.8, -1e4, feeds["mask"]).astype(np.float32)
    report, got, _ = _build_and_run(tmp_path, model, feeds, opt_level=0)
    assert report["layers"][0]["op"] == "edgec::Attention"
    ref = _attention_ref(feeds["q"], feeds["k"], feeds["v"], hh, case["scale"], feeds.get("mask"))
    _check(report, got, [ref])


# --- recovered from a standard ONNX attention block, onnxruntime reference -------------------------

def _mha_model(b: int, s: int, hidden: int, heads: int, mask: bool, div: bool) -> onnx.ModelProto:
    d = hidden // heads
    nodes, inits = [], [_w("wq", [hidden, hidden]), _w("wk", [hidden, hidden]), _w("wv", [hidden, hidden]),
                        _w("bq", [hidden]), _w("bk", [hidden]), _w("bv", [hidden]), _w("wo", [hidden, hidden]),
                        _i64("split_shape", [b, s, heads, d]), _i64("merge_shape", [b, s, hidden]),
                        nh.from_array(np.array(math.sqrt(d) if div else 1.0 / math.sqrt(d), np.float32), "sc")]
    for t, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [h.make_node("MatMul", ["x", f"w{t}"], [f"{t}0"]), h.make_node("Add", [f"{t}0", f"b{t}"], [f"{t}1"]),
                  h.make_node("Reshape", [f"{t}1", "split_shape"], [f"{t}2"]),
                  h.make_node("Transpose", [f"{t}2"], [f"{t}h"], perm=perm)]
    nodes += [h.make_node("MatMul", ["qh", "kh"], ["qk"]),
              h.make_node("Div" if div else "Mul", ["qk", "sc"], ["scaled"])]
    last = "scaled"
    if mask:
        nodes.append(h.make_node("Add", ["scaled", "mask"], ["masked"]))
        last = "masked"
    nodes += [h.make_node("Softmax", [last], ["p"], axis=-1), h.make_node("MatMul", ["p", "vh"], ["ctx"]),
              h.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              h.make_node("Reshape", ["ctx_t", "merge_shape"], ["ctx_m"]),
              h.make_node("MatMul", ["ctx_m", "wo"], ["y"])]
    ins = [h.make_tensor_value_info("x", T.FLOAT, [b, s, hidden])]
    if mask:
        ins.append(h.make_tensor_value_info("mask", T.FLOAT, [b, 1, 1, s]))
    g = h.make_graph(nodes, "mha", ins, [h.make_tensor_value_info("y", T.FLOAT, [b, s, hidden])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("mask,div", [(True, True), (False, False)])
def test_attention_recovered(tmp_path: Path, mask: bool, div: bool) -> None:
    model = _mha_model(2, 6, 16, 4, mask, div)
    feeds = {"x": RNG.standard_normal((2, 6, 16)).astype(np.float32)}
    if mask:
        m = np.zeros((2, 1, 1, 6), np.float32)
        m[1, ..., 4:] = -10000.0  # second sequence padded
        feeds["mask"] = m
    report, got, path = _build_and_run(tmp_path, model, feeds, opt_level=2)
    assert "edgec::Attention" in [L["op"] for L in report["layers"]]
    _check(report, got, reference_outputs(str(path), feeds))


# --- zoo BERT encoder: edgec.Attention, LayerNorm, Gelu after -O2 ---------------------------------

def test_zoo_bert_encoder(tmp_path: Path) -> None:
    zoo = pytest.importorskip("zoo")
    pytest.importorskip("torch")
    path = zoo.get_path("bert_encoder", **zoo.TEST_PARAMS["bert_encoder"])
    shapes = ["batch=2", "seq=7"]
    r = CliRunner()
    res = r.invoke(cli, ["compile", str(path), "-O2", "--target", "c", *sum((["--input-shape", s] for s in shapes), []),
                         "-o", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "cli" / "report.txt").read_text()
    assert text.count("edgec::Attention") == 2 and "Gelu" in (tmp_path / "cli" / "model.c").read_text()
    res = r.invoke(cli, ["verify", str(path), *sum((["--input-shape", s] for s in shapes), []), "--runs", "1",
                         "--sanitize"])
    assert res.exit_code == 0 and "PASS" in res.output, res.output
    # `verify` feeds an all-zero attention mask; real masks (ones, then padding) exercise the mask path
    feeds = zoo.make_inputs(onnx.load(str(path)), seed=3, dims={"batch": 2, "seq": 7})
    assert feeds["attention_mask"].min() == 0 and feeds["attention_mask"].max() == 1
    proto = onnx.load(str(path))
    report, got, p = _build_and_run(tmp_path, proto, feeds, opt_level=2, shapes=shapes)
    _check(report, got, reference_outputs(str(p), feeds))
