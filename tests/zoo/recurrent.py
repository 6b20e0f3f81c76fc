"""Recurrent models: ONNX LSTM / GRU ops, and a scripted RNN with real Loop and If subgraphs."""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, helper, numpy_helper

from ._export import DEFAULT_OPSET, export, seed_all, set_input_spec

_SEQ_SPEC = {"input": {"kind": "image"}}  # "image": float ~ N(0, 1)


def _torch_rnn(kind: str, features: int, hidden: int, layers: int, bidirectional: bool, num_classes: int) -> Any:
    import torch.nn as nn

    class SeqClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            rnn_cls = nn.LSTM if kind == "lstm" else nn.GRU
            self.rnn = rnn_cls(features, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
            self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

        def forward(self, x: Any) -> Any:
            y, _ = self.rnn(x)
            return y, self.head(y[:, -1])

    return SeqClassifier()


def _rnn_model(kind: str, features: int, hidden: int, layers: int, bidirectional: bool, num_classes: int,
               opset: int, seed: int) -> onnx.ModelProto:
    import torch

    seed_all(seed)
    net = _torch_rnn(kind, features, hidden, layers, bidirectional, num_classes)
    x = torch.randn(2, 5, features)
    axes = {0: "batch", 1: "seq"}
    return export(net, (x,), input_names=["input"], output_names=["sequence", "logits"],
                  dynamic_axes={"input": axes, "sequence": axes, "logits": {0: "batch"}}, opset=opset,
                  input_spec=_SEQ_SPEC, doc=f"zoo {kind} hidden={hidden} layers={layers}")


def lstm(features: int = 64, hidden: int = 256, depth: int = 2, bidirectional: bool = False,
         num_classes: int = 10, opset: int = DEFAULT_OPSET, seed: int = 0) -> onnx.ModelProto:
    """``nn.LSTM`` (``depth`` stacked layers, batch_first) + linear head, exported to ONNX ``LSTM``.

    Input ``input`` [batch, seq, features]; outputs ``sequence`` and ``logits``.
    """
    return _rnn_model("lstm", features, hidden, depth, bidirectional, num_classes, opset, seed)


def gru(features: int = 64, hidden: int = 256, depth: int = 1, bidirectional: bool = True,
        num_classes: int = 10, opset: int = DEFAULT_OPSET, seed: int = 0) -> onnx.ModelProto:
    """Bidirectional ``nn.GRU`` + linear head, exported to ONNX ``GRU``."""
    return _rnn_model("gru", features, hidden, depth, bidirectional, num_classes, opset, seed)


def _scripted_rnn(features: int, hidden: int, num_classes: int) -> Any:
    import torch
    import torch.nn as nn

    class GatedRNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = hidden
            self.wx = nn.Linear(features, hidden)
            self.wh = nn.Linear(hidden, hidden, bias=False)
            self.head = nn.Linear(hidden, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # x: [seq, batch, features]
            h = torch.zeros(x.size(1), self.hidden, dtype=x.dtype)
            for t in range(x.size(0)):
                pre = self.wx(x[t]) + self.wh(h)
                if bool(pre.mean() > 0.0):  # data-dependent branch, evaluated every step
                    h = torch.tanh(pre)
                else:
                    h = 0.5 * torch.relu(pre) + 0.5 * h
            return self.head(h)

    return torch.jit.script(GatedRNN())


def recurrent_if_loop(features: int = 16, hidden: int = 32, num_classes: int = 4, opset: int = DEFAULT_OPSET,
                      seed: int = 0) -> onnx.ModelProto:
    """An RNN over time steps with a data-dependent branch: ONNX ``Loop`` whose body holds an ``If``.

    Built with ``torch.jit.script`` and the TorchScript exporter; if that path is unavailable the
    same computation is written by hand with ``onnx.helper`` (:func:`recurrent_if_loop_manual`).
    Input ``input`` [seq, batch, features]; output ``logits`` [batch, classes].
    """
    import torch

    try:
        seed_all(seed)
        net = _scripted_rnn(features, hidden, num_classes)
        x = torch.randn(5, 2, features)
        proto = export(net, (x,), input_names=["input"], output_names=["logits"],
                       dynamic_axes={"input": {0: "seq", 1: "batch"}, "logits": {0: "batch"}}, opset=opset,
                       input_spec=_SEQ_SPEC, keep_batchnorm=False, doc="zoo recurrent_if_loop (scripted)")
        ops = {n.op_type for n in proto.graph.node}
        if "Loop" not in ops:
            raise RuntimeError("exporter did not produce a Loop")
        return proto
    except Exception:  # pragma: no cover - depends on the installed torch
        return recurrent_if_loop_manual(features, hidden, num_classes, opset, seed)


def recurrent_if_loop_manual(features: int = 16, hidden: int = 32, num_classes: int = 4,
                             opset: int = DEFAULT_OPSET, seed: int = 0) -> onnx.ModelProto:
    """Hand-written equivalent of :func:`recurrent_if_loop` (``Loop`` over time with an ``If``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    f32 = np.float32
    wx = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(f32)
    bx = (rng.standard_normal(hidden) * 0.1).astype(f32)
    wh = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(f32)
    wo = (rng.standard_normal((hidden, num_classes)) / np.sqrt(hidden)).astype(f32)
    bo = (rng.standard_normal(num_classes) * 0.1).astype(f32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(wx, "wx"), (bx, "bx"), (wh, "wh"), (wo, "wo"), (bo, "bo"),
              (np.array([0], np.int64), "zero_i"), (np.array([1], np.int64), "one_i"),
              (np.array(0.5, f32), "half"), (np.array(0.0, f32), "zero_f"),
              (np.array(hidden, np.int64).reshape(1), "hidden_dim")]]

    then_g = helper.make_graph([helper.make_node("Tanh", ["pre"], ["h_then"], name="then_tanh")], "then_branch",
                               [], [helper.make_tensor_value_info("h_then", TensorProto.FLOAT, None)])
    else_g = helper.make_graph(
        [helper.make_node("Relu", ["pre"], ["r"], name="else_relu"),
         helper.make_node("Mul", ["r", "half"], ["r2"], name="else_mul_r"),
         helper.make_node("Mul", ["h_in", "half"], ["h2"], name="else_mul_h"),
         helper.make_node("Add", ["r2", "h2"], ["h_else"], name="else_add")],
        "else_branch", [], [helper.make_tensor_value_info("h_else", TensorProto.FLOAT, None)])
    body = helper.make_graph(
        [helper.make_node("Gather", ["input", "t"], ["x_t"], axis=0, name="body_gather"),
         helper.make_node("MatMul", ["x_t", "wx"], ["xw"], name="body_mm_x"),
         helper.make_node("Add", ["xw", "bx"], ["xwb"], name="body_add_b"),
         helper.make_node("MatMul", ["h_in", "wh"], ["hw"], name="body_mm_h"),
         helper.make_node("Add", ["xwb", "hw"], ["pre"], name="body_pre"),
         helper.make_node("ReduceMean", ["pre"], ["m"], keepdims=0, name="body_mean"),
         helper.make_node("Greater", ["m", "zero_f"], ["c"], name="body_gt"),
         helper.make_node("If", ["c"], ["h_out"], then_branch=then_g, else_branch=else_g, name="body_if"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond")],
        "loop_body",
        [helper.make_tensor_value_info("t", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Shape", ["input"], ["in_shape"], name="shape"),
        helper.make_node("Gather", ["in_shape", "zero_i"], ["seq_len1"], axis=0, name="seq_len"),
        helper.make_node("Squeeze", ["seq_len1", "zero_i"], ["seq_len"], name="seq_len_scalar"),
        helper.make_node("Gather", ["in_shape", "one_i"], ["batch1"], axis=0, name="batch"),
        helper.make_node("Concat", ["batch1", "hidden_dim"], ["h0_shape"], axis=0, name="h0_shape"),
        helper.make_node("ConstantOfShape", ["h0_shape"], ["h0"], name="h0",
                         value=numpy_helper.from_array(np.zeros(1, f32))),
        helper.make_node("Constant", [], ["true"], name="true", value=numpy_helper.from_array(np.array(True))),
        helper.make_node("Loop", ["seq_len", "true", "h0"], ["h_final"], body=body, name="time_loop"),
        helper.make_node("MatMul", ["h_final", "wo"], ["lo"], name="head_mm"),
        helper.make_node("Add", ["lo", "bo"], ["logits"], name="head_add"),
    ]
    graph = helper.make_graph(nodes, "recurrent_if_loop", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["seq", "batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="zoo")
    model.ir_version = 8
    set_input_spec(model, _SEQ_SPEC)
    onnx.checker.check_model(model, full_check=True)
    return model


__all__ = ["lstm", "gru", "recurrent_if_loop", "recurrent_if_loop_manual"]
