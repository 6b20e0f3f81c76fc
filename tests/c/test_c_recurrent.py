"""C target: LSTM and GRU kernels (ASan/UBSan, -Werror) against onnxruntime, and the zoo RNNs via the CLI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

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
from edgec.errors import UnsupportedModelError

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

RNG = np.random.default_rng(61)
S, B, I, H = 4, 3, 5, 6  # sequence, batch, input size, hidden size


def _w(name: str, shape: Sequence[int], scale: float = 0.4) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _make(nodes: List[onnx.NodeProto], inputs: Dict[str, Sequence[int]], outputs: Sequence[str],
          inits: Sequence[onnx.TensorProto], opset: int = 17) -> onnx.ModelProto:
    ins = [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs.items()]
    outs = [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs]
    return h.make_model(h.make_graph(nodes, "g", ins, outs, list(inits)),
                        opset_imports=[h.make_opsetid("", opset)], ir_version=9)


def run_c(tmp_path: Path, nodes: List[onnx.NodeProto], inputs: Dict[str, Sequence[int]], outputs: Sequence[str],
          inits: Sequence[onnx.TensorProto], opset: int = 17, opt_level: int = 0,
          reference: Optional[Callable[[Dict[str, np.ndarray]], List[np.ndarray]]] = None) -> dict:
    """Compile to C, build with sanitizers and -Werror, compare every output with onnxruntime
    (on the model itself, or through ``reference(feeds)``)."""
    path = tmp_path / "m.onnx"
    onnx.save(_make(nodes, inputs, outputs, inits, opset), str(path))
    code = compile_to_c(str(path), str(tmp_path / "out"), opt_level=opt_level)
    prog = build(str(tmp_path / "out"), code.report, opt="-O1", sanitize=True)
    feeds = {n: _x(*s) for n, s in inputs.items()}
    got = run_binary(prog, code.report, feeds)
    ref = reference(feeds) if reference is not None else reference_outputs(str(path), feeds)
    for t, g, r in zip(code.report["outputs"], got, ref):
        c = compare(t["name"], g, r, rtol=1e-4, atol=1e-5, max_ulp=100)
        assert c.ok, f"{t['name']}: {c} (C {g.reshape(-1)[:6]} vs ORT {r.reshape(-1)[:6]})"
    return code.report


def _rnn_case(op: str, tag: str, direction: str = "forward", layout: int = 0, bias: bool = True,
              seq_lens: Optional[Sequence[int]] = None, init: bool = False, peep: bool = False,
              outs: Sequence[bool] = (True, True, True), **attrs) -> tuple:
    """One LSTM/GRU node with its initializers; returns (node, inputs, outputs, inits)."""
    gates = 4 if op == "LSTM" else 3
    nd = 2 if direction == "bidirectional" else 1
    names = [f"{tag}_x", f"{tag}_W", f"{tag}_R", "", "", "", "", ""]
    inits = [_w(names[1], [nd, gates * H, I]), _w(names[2], [nd, gates * H, H])]
    if bias:
        names[3] = f"{tag}_B"
        inits.append(_w(names[3], [nd, 2 * gates * H]))
    if seq_lens is not None:
        names[4] = f"{tag}_L"
        inits.append(nh.from_array(np.array(seq_lens, np.int32), names[4]))
    inputs = {names[0]: [S, B, I] if layout == 0 else [B, S, I]}
    if init:
        st = [nd, B, H] if layout == 0 else [B, nd, H]
        names[5] = f"{tag}_h0"
        inputs[names[5]] = st
        if op == "LSTM":
            names[6] = f"{tag}_c0"
            inits.append(_w(names[6], st))
    if peep:
        names[7] = f"{tag}_P"
        inits.append(_w(names[7], [nd, 3 * H]))
    n_in = 8 if op == "LSTM" else 6
    ins = names[:n_in]
    while ins and not ins[-1]:
        ins.pop()
    out_names = [f"{tag}_{o}" if keep else "" for o, keep in zip(["Y", "Yh", "Yc"][:gates - 1], outs)]
    while out_names and not out_names[-1]:
        out_names.pop()
    if layout:
        attrs["layout"] = layout
    node = h.make_node(op, ins, out_names, hidden_size=H, direction=direction, **attrs)
    return node, inputs, [o for o in out_names if o], inits


def _run_cases(tmp_path: Path, cases: List[tuple], opset: int = 17) -> dict:
    nodes, inputs, outs, inits = [], {}, [], []
    for node, i, o, w in cases:
        nodes.append(node)
        inputs.update(i)
        outs += o
        inits += w
    return run_c(tmp_path, nodes, inputs, outs, inits, opset=opset)


def test_lstm_attributes(tmp_path: Path) -> None:
    cases = [
        _rnn_case("LSTM", "fwd"),
        _rnn_case("LSTM", "rev", "reverse", init=True),
        _rnn_case("LSTM", "bi", "bidirectional", init=True, peep=True),
        _rnn_case("LSTM", "nob", bias=False, outs=(True, False, True)),
        _rnn_case("LSTM", "lens", "bidirectional", seq_lens=[4, 2, 1], init=True),
        _rnn_case("LSTM", "clip", "reverse", clip=0.7, peep=True),
        _rnn_case("LSTM", "acts", activations=["Tanh", "Relu", "Sigmoid"], outs=(False, True, True)),
        _rnn_case("LSTM", "ifg", input_forget=1, peep=True),
    ]
    rep = _run_cases(tmp_path, cases)
    assert [L["op"] for L in rep["layers"]].count("onnx::LSTM") == len(cases)
    assert rep["memory"]["arena_bytes"] > 0  # the time loops' scratch lives in the arena


def test_gru_attributes(tmp_path: Path) -> None:
    cases = [
        _rnn_case("GRU", "fwd"),
        _rnn_case("GRU", "lbr", linear_before_reset=1, init=True),
        _rnn_case("GRU", "rev", "reverse", init=True),
        _rnn_case("GRU", "bi", "bidirectional", linear_before_reset=1),
        _rnn_case("GRU", "nob", "bidirectional", bias=False, outs=(False, True)),
        _rnn_case("GRU", "lens", "bidirectional", seq_lens=[1, 4, 3], init=True),
        _rnn_case("GRU", "lensl", "reverse", seq_lens=[2, 4, 3], linear_before_reset=1),
        _rnn_case("GRU", "clip", "bidirectional", clip=0.5, linear_before_reset=1),
        _rnn_case("GRU", "acts", activations=["Relu", "Tanh"]),
    ]
    _run_cases(tmp_path, cases)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_rnn_layout1(tmp_path: Path, op: str) -> None:
    """layout=1 (batch-major X, Y, states): onnxruntime has no kernel for it, so the reference is the
    same node with layout 0 on transposed inputs, its outputs transposed back."""
    kw = {"linear_before_reset": 1} if op == "GRU" else {"peep": True}
    node1, inputs1, outs1, inits = _rnn_case(op, "l", "bidirectional", layout=1, init=True, seq_lens=[3, 4, 2], **kw)
    attrs = {a.name: h.get_attribute_value(a) for a in node1.attribute if a.name != "layout"}
    node0 = h.make_node(op, list(node1.input), list(node1.output), **attrs)
    m0 = _make([node0], {"l_x": [S, B, I], "l_h0": [2, B, H]}, outs1, inits).SerializeToString()

    def reference(feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        y, *states = reference_outputs(m0, {"l_x": feeds["l_x"].transpose(1, 0, 2),
                                            "l_h0": feeds["l_h0"].transpose(1, 0, 2)})
        return [y.transpose(2, 0, 1, 3)] + [st.transpose(1, 0, 2) for st in states]

    if op == "LSTM":  # initial_c is a constant: give the layout-0 reference its transpose
        c0 = next(t for t in inits if t.name == "l_c0")
        inits[inits.index(c0)] = nh.from_array(nh.to_array(c0).transpose(1, 0, 2).copy(), "l_c0")
        m0 = _make([node0], {"l_x": [S, B, I], "l_h0": [2, B, H]}, outs1, inits).SerializeToString()
        inits[inits.index(next(t for t in inits if t.name == "l_c0"))] = c0
    run_c(tmp_path, [node1], inputs1, outs1, inits, reference=reference)


def test_rnn_rejections(tmp_path: Path) -> None:
    node, inputs, outs, inits = _rnn_case("LSTM", "a", activations=["HardSigmoid", "Tanh", "Tanh"],
                                          activation_alpha=[0.3])
    with pytest.raises(UnsupportedModelError, match="activation_alpha"):
        run_c(tmp_path, [node], inputs, outs, inits)
    node, inputs, outs, inits = _rnn_case("GRU", "b", activations=["Softsign", "Tanh"])
    with pytest.raises(UnsupportedModelError, match="activation 'Softsign'"):
        run_c(tmp_path, [node], inputs, outs, inits)


# --- zoo models through the CLI -----------------------------------------------------------------

@pytest.mark.parametrize("zoo_name", ["lstm", "gru"])
def test_zoo_rnn_cli(tmp_path: Path, zoo_name: str) -> None:
    """Exported nn.LSTM (2 layers) / bidirectional nn.GRU: `edgec compile --target c`, then `edgec verify`."""
    zoo = pytest.importorskip("zoo")
    pytest.importorskip("torch")
    path = zoo.get_path(zoo_name, **zoo.TEST_PARAMS[zoo_name])
    r = CliRunner()
    res = r.invoke(cli, ["compile", str(path), "-O2", "--target", "c", "--input-shape", "input=2x5x8",
                         "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert ("LSTM" if zoo_name == "lstm" else "GRU") in (tmp_path / "out" / "report.txt").read_text()
    res = r.invoke(cli, ["verify", str(path), "--input-shape", "input=2x5x8", "--runs", "2", "--sanitize"])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output, res.output
