"""C target: zero-element tensors and Dropout's mask, against onnxruntime (ASan/UBSan, -Werror).

A zero-element value has no storage (no arena bytes, no weight array) and a node whose outputs all
have zero elements emits no code; Concat skips an empty input and a reduction over an empty set
writes the identity of the reduction; any other node that would compute a non-empty output from an
empty input is a clear error. Zero-element graph inputs and outputs stay parameters of ``model_run``
(the harness passes NULL for them, which the header allows).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgec.backends.c import compile_to_c
from edgec.backends.c.verify import build, compare, harness_source, reference_outputs, run_binary
from edgec.errors import UnsupportedModelError

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

RNG = np.random.default_rng(7)

_NP = {T.FLOAT: np.float32, T.INT32: np.int32, T.INT64: np.int64, T.BOOL: np.bool_}


def _model(nodes: List[onnx.NodeProto], inputs: Dict[str, Tuple[int, Sequence[int]]], outputs: Sequence[str],
           inits: Sequence[onnx.TensorProto] = (), opset: int = 18,
           types: Optional[Dict[str, int]] = None) -> onnx.ModelProto:
    """A model of ``nodes``; outputs are float32 unless ``types`` says otherwise (shapes left to inference)."""
    ins = [h.make_tensor_value_info(n, et, s) for n, (et, s) in inputs.items()]
    outs = [h.make_tensor_value_info(o, (types or {}).get(o, T.FLOAT), None) for o in outputs]
    return h.make_model(h.make_graph(nodes, "g", ins, outs, list(inits)),
                        opset_imports=[h.make_opsetid("", opset)], ir_version=8)


def run_c(tmp_path: Path, model: onnx.ModelProto, inputs: Dict[str, Tuple[int, Sequence[int]]],
          opt_level: int = 2) -> Tuple[dict, List[np.ndarray], str]:
    """Compile, build with sanitizers and -Werror, run, compare every output (values and shape) with
    onnxruntime; returns (report, C outputs, output folder)."""
    path = tmp_path / f"m{opt_level}.onnx"
    onnx.save(model, str(path))
    out = tmp_path / f"out{opt_level}"
    code = compile_to_c(str(path), str(out), opt_level=opt_level)
    prog = build(str(out), code.report, opt="-O1", sanitize=True)
    feeds = {n: (RNG.standard_normal(s) * 3).astype(_NP[et]) for n, (et, s) in inputs.items()}
    got = run_binary(prog, code.report, feeds)
    ref = reference_outputs(str(path), feeds)
    assert len(got) == len(ref)
    for t, g, r in zip(code.report["outputs"], got, ref):
        assert tuple(g.shape) == tuple(r.shape), f"{t['name']}: shape {g.shape}, onnxruntime {r.shape}"
        c = compare(t["name"], g, r, rtol=1e-5, atol=1e-6, max_ulp=4)
        assert c.ok, f"{t['name']}: {c} (C {g.reshape(-1)[:6]} vs ORT {r.reshape(-1)[:6]})"
    return code.report, got, str(out)


def _read(folder: str, name: str) -> str:
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return f.read()


def _i64(name: str, values: Sequence[int]) -> onnx.TensorProto:
    return nh.from_array(np.array(values, np.int64), name)


@pytest.mark.parametrize("opt_level", [0, 2])
def test_empty_kv_cache(tmp_path: Path, opt_level: int) -> None:
    """An empty past K/V cache (a zero-element graph input) concatenated with the new step, then attention
    scores over the result; Relu of the empty past (no code) is a zero-element graph output."""
    nodes = [
        h.make_node("Concat", ["past_k", "k"], ["present_k"], axis=2),
        h.make_node("Concat", ["past_v", "v"], ["present_v"], axis=2),
        h.make_node("Transpose", ["present_k"], ["kt"], perm=[0, 1, 3, 2]),
        h.make_node("MatMul", ["q", "kt"], ["s"]),
        h.make_node("Softmax", ["s"], ["p"], axis=-1),
        h.make_node("MatMul", ["p", "present_v"], ["o"]),
        h.make_node("Relu", ["past_k"], ["past_relu"]),  # all-empty node: no code, an empty graph output
    ]
    inputs = {"past_k": (T.FLOAT, [1, 2, 0, 4]), "past_v": (T.FLOAT, [1, 2, 0, 4]), "k": (T.FLOAT, [1, 2, 3, 4]),
              "v": (T.FLOAT, [1, 2, 3, 4]), "q": (T.FLOAT, [1, 2, 3, 4])}
    report, got, out = run_c(tmp_path, _model(nodes, inputs, ["o", "present_k", "present_v", "past_relu"]), inputs,
                             opt_level)
    assert got[3].shape == (1, 2, 0, 4)
    assert [t["shape"] for t in report["inputs"] if t["name"] == "past_k"] == [[1, 2, 0, 4]]
    hdr = _read(out, "model.h")
    assert "NULL included" in hdr and "MODEL_PAST_K_SIZE 0" in hdr
    harness = harness_source(report)
    assert harness.count("NULL") >= 3  # the two empty inputs and the empty output: no zero-length arrays
    relu = [L for L in report["layers"] if L["op"].endswith("Relu")]
    assert relu and relu[0].get("empty") and relu[0]["macs"] == 0


@pytest.mark.parametrize("opt_level", [0, 2])
def test_empty_intermediates(tmp_path: Path, opt_level: int) -> None:
    """Empty values inside the graph: a zero-size Split piece, an out-of-range Slice, elementwise ops on
    them, a Concat that skips them; no arena bytes for them."""
    nodes = [
        h.make_node("Split", ["x", "sizes"], ["a", "e", "b"], axis=1),
        h.make_node("Slice", ["x", "st", "en", "ax"], ["s"]),  # starts past the end: [2, 0]
        h.make_node("Add", ["e", "s"], ["es"]),  # empty + empty
        h.make_node("Sigmoid", ["es"], ["es2"]),
        h.make_node("Concat", ["es2", "a", "e", "b", "s"], ["c"], axis=1),
        h.make_node("Mul", ["c", "c"], ["y"]),
        h.make_node("Shape", ["e"], ["se"]),  # shape of an empty tensor
    ]
    inits = [_i64("sizes", [3, 0, 2]), _i64("st", [10]), _i64("en", [20]), _i64("ax", [1])]
    inputs = {"x": (T.FLOAT, [2, 5])}
    report, got, _ = run_c(tmp_path, _model(nodes, inputs, ["y", "e", "se"], inits, types={"se": T.INT64}), inputs, opt_level)
    assert got[1].shape == (2, 0)
    np.testing.assert_array_equal(got[2], [2, 0])
    for op in ("Add", "Sigmoid"):  # empty + empty, sigmoid(empty): no code, no arena bytes
        (rec,) = [L for L in report["layers"] if L["op"].endswith(op)]
        assert rec.get("empty") and "arena_offset" not in rec and rec["output_bytes"] == 0
    if opt_level == 0:  # the three non-empty intermediates only (Split pieces a, b; Concat c)
        assert report["memory"]["buffers"] == 3 and report["memory"]["arena_bytes"] == 32 + 16 + 48


@pytest.mark.parametrize("opt_level", [0, 2])
def test_empty_views_and_passthrough(tmp_path: Path, opt_level: int) -> None:
    """Views of an empty input (Reshape, Flatten) and the input itself as graph outputs: nothing to copy."""
    nodes = [h.make_node("Reshape", ["x", "shape"], ["r"], allowzero=1), h.make_node("Flatten", ["x"], ["f"], axis=1),
             h.make_node("Relu", ["t"], ["y"])]
    inputs = {"x": (T.FLOAT, [0, 4]), "t": (T.FLOAT, [3])}
    model = _model(nodes, inputs, ["r", "f", "x", "y"], [_i64("shape", [4, 0])])
    _, got, out = run_c(tmp_path, model, inputs, opt_level)
    assert [g.shape for g in got[:3]] == [(4, 0), (0, 4), (0, 4)]
    assert "for (long i = 0; i < 0;" not in _read(out, "model.c")


def test_invalid_view_of_empty_is_an_error(tmp_path: Path) -> None:
    """Reshape [0, 4] to [4, 0] without allowzero copies the input dim (shape [4, 4]: onnxruntime fails at run
    time); a view with another element count than its source would read past it (here: through NULL)."""
    nodes = [h.make_node("Reshape", ["x", "shape"], ["r"], name="bad_reshape")]
    model = _model(nodes, {"x": (T.FLOAT, [0, 4])}, ["r"], [_i64("shape", [4, 0])])
    with pytest.raises(UnsupportedModelError, match=r"'bad_reshape'.* 0 elements of 'x' into 16"):
        _compile(tmp_path, model)


def test_empty_constants(tmp_path: Path) -> None:
    """A zero-element initializer read by Concat and Add (no weight array: C99 has no zero-length arrays)."""
    nodes = [h.make_node("Concat", ["x", "w0"], ["c"], axis=0), h.make_node("Add", ["w0", "w0"], ["ew"]),
             h.make_node("Concat", ["ew", "c"], ["y"], axis=0)]
    inits = [nh.from_array(np.zeros((0, 3), np.float32), "w0")]
    inputs = {"x": (T.FLOAT, [2, 3])}
    report, _, out = run_c(tmp_path, _model(nodes, inputs, ["y"], inits), inputs, opt_level=0)
    assert report["weights"]["arrays"] == 0
    assert "w0" not in _read(out, "model.c").split("/* --- layers --- */")[0]


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
                                "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"])
@pytest.mark.parametrize("etype", [T.FLOAT, T.INT32])
def test_reduce_over_empty_set(tmp_path: Path, op: str, etype: int) -> None:
    """A reduction over an empty set writes the reduction's identity (0, 1, -inf/min, +inf/max)."""
    if etype == T.INT32 and op in ("ReduceLogSum", "ReduceLogSumExp"):
        pytest.skip("undefined for integers (tested as an error below)")
    nodes = [h.make_node(op, ["x", "axes"], ["y"], keepdims=1),
             h.make_node(op, ["x", "axes2"], ["z"], keepdims=0)]
    inputs = {"x": (etype, [2, 0, 3])}
    inits = [_i64("axes", [1]), _i64("axes2", [0, 1])]
    run_c(tmp_path, _model(nodes, inputs, ["y", "z"], inits, types={"y": etype, "z": etype}), inputs, opt_level=0)


def test_dropout_mask_inference(tmp_path: Path) -> None:
    """Inference Dropout (no training_mode, or a constant false one, or a constant ratio of 0) is the identity
    and its mask is all true; the mask is a fill, not a weight array."""
    nodes = [h.make_node("Dropout", ["x", "r"], ["y", "m"], seed=0),
             h.make_node("Dropout", ["x", "r", "off"], ["y2", "m2"]),
             h.make_node("Dropout", ["x", "zero", "on"], ["y3", "m3"]),
             h.make_node("Not", ["m"], ["nm"])]
    inits = [nh.from_array(np.array(0.3, np.float32), "r"), nh.from_array(np.array(0.0, np.float32), "zero"),
             nh.from_array(np.array(False), "off"), nh.from_array(np.array(True), "on")]
    inputs = {"x": (T.FLOAT, [3, 4])}
    report, got, _ = run_c(tmp_path, _model(nodes, inputs, ["y", "m", "y2", "m2", "y3", "m3", "nm"], inits, 13,
                                  types={m: T.BOOL for m in ("m", "m2", "m3", "nm")}),
                           inputs, opt_level=0)
    assert got[1].dtype == np.bool_ and got[1].all() and not got[6].any()
    assert report["weights"]["arrays"] == 0
    assert [t["name"] for t in report["outputs"]] == ["y", "m", "y2", "m2", "y3", "m3", "nm"]  # names kept


def test_dropout_old_opset_mask(tmp_path: Path) -> None:
    """Opset 10-11: no training_mode input, inference; the mask is bool and all true as in the ONNX reference
    (onnxruntime returns an all-false mask at these opsets, all-true from opset 12)."""
    from onnx.reference import ReferenceEvaluator

    model = _model([h.make_node("Dropout", ["x"], ["y", "m"], ratio=0.4)], {"x": (T.FLOAT, [5])}, ["y", "m"],
                   opset=11, types={"m": T.BOOL})
    path = tmp_path / "d.onnx"
    onnx.save(model, str(path))
    code = compile_to_c(str(path), str(tmp_path / "d"), opt_level=2)
    prog = build(str(tmp_path / "d"), code.report, opt="-O1", sanitize=True)
    x = RNG.standard_normal(5).astype(np.float32)
    y, m = run_binary(prog, code.report, {"x": x})
    ry, rm = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(m, rm)
    assert m.dtype == np.bool_ and m.all()


def _compile(tmp_path: Path, model: onnx.ModelProto, opt_level: int = 0) -> None:
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    compile_to_c(str(path), str(tmp_path / "bad"), opt_level=opt_level)


def test_dropout_training_is_an_error(tmp_path: Path) -> None:
    """Training-mode Dropout with a non-zero ratio draws a random mask: a clear error, not the identity."""
    nodes = [h.make_node("Dropout", ["x", "r", "on"], ["y", "m"])]
    inits = [nh.from_array(np.array(0.5, np.float32), "r"), nh.from_array(np.array(True), "on")]
    model = _model(nodes, {"x": (T.FLOAT, [3, 4])}, ["y", "m"], inits, 13, types={"m": T.BOOL})
    with pytest.raises(UnsupportedModelError, match="training mode") as e:
        _compile(tmp_path, model)
    assert "\n" not in str(e.value)
    model = _model([h.make_node("Dropout", ["x", "r", "on"], ["y"], name="drop")], {"x": (T.FLOAT, [3, 4])}, ["y"],
                   inits, 13)
    with pytest.raises(UnsupportedModelError, match="'drop'.*training mode"):  # without a mask too
        _compile(tmp_path, model)


def test_empty_input_nonempty_output_is_an_error(tmp_path: Path) -> None:
    """A kernel that would compute a non-empty output from an empty input names the node and the tensor."""
    nodes = [h.make_node("MatMul", ["a", "b"], ["y"], name="mm")]
    model = _model(nodes, {"a": (T.FLOAT, [2, 0]), "b": (T.FLOAT, [0, 3])}, ["y"])
    with pytest.raises(UnsupportedModelError, match=r"node 'mm' .*zero-element tensor 'a'") as e:
        _compile(tmp_path, model)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("etype,op", [(T.FLOAT, "ReduceMean"), (T.INT32, "ReduceLogSum")])
def test_undefined_empty_reduction_is_an_error(tmp_path: Path, etype: int, op: str) -> None:
    """ReduceMean (and log reductions of integers) over an empty set is undefined in ONNX: an error."""
    nodes = [h.make_node(op, ["x", "axes"], ["y"], name="red")]
    model = _model(nodes, {"x": (etype, [2, 0])}, ["y"], [_i64("axes", [1])], types={"y": etype})
    with pytest.raises(UnsupportedModelError, match=r"'red'.*empty set"):
        _compile(tmp_path, model)
