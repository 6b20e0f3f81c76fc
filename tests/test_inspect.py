"""Model statistics: MACs of Conv/ConvTranspose/Gemm/MatMul/LSTM by hand, histograms, parameters."""

from __future__ import annotations

import numpy as np

from edgec.inspect import format_stats, model_stats, node_macs
from edgec.ir import DType, Function, Graph, Model, Node, Value, tensor
from edgec.ir.verifier import verify


def f32(*dims):
    return tensor(DType.FLOAT, list(dims))


def one_node(op, in_types, out_types, attrs=None, weights=()):
    """A model with one node; ``weights`` are (position, array) initializers among the inputs."""
    ins = [Value(f"in{i}", t) for i, t in enumerate(in_types)]
    g = Graph("main", [v for v in ins])
    for pos, arr in weights:
        w = g.add_constant(arr, f"w{pos}")
        ins.insert(pos, w)
    n = g.append(Node(op, ins, [f"out{i}" for i in range(len(out_types))], attrs or {}, name=op.lower()))
    for v, t in zip(n.outputs, out_types):
        v.type = t
        g.add_output(v)
    m = Model(g, {"": 21})
    verify(m)
    return m, n


def test_conv_grouped():
    w = np.zeros((16, 4, 3, 3), np.float32)
    m, n = one_node("Conv", [f32(1, 8, 32, 32)], [f32(1, 16, 30, 30)], {"group": 2}, [(1, w)])
    # N * C_out * prod(out) * (C_in / group) * prod(kernel)
    assert node_macs(n) == (1 * 16 * 30 * 30 * (8 // 2) * 3 * 3, None)
    s = model_stats(m)
    assert s["macs"]["total"] == 518400 and s["macs"]["complete"]
    assert s["parameters"] == {"count": 576, "bytes": 2304, "by_dtype": {"f32": {"tensors": 1, "count": 576, "bytes": 2304}}}


def test_conv_depthwise_with_batch():
    w = np.zeros((32, 1, 3, 3), np.float32)
    m, n = one_node("Conv", [f32(2, 32, 112, 112)], [f32(2, 32, 112, 112)], {"group": 32, "pads": [1, 1, 1, 1]}, [(1, w)])
    assert node_macs(n)[0] == 2 * 32 * 112 * 112 * 1 * 9


def test_conv_transpose():
    w = np.zeros((8, 2, 4, 4), np.float32)  # C_in=8, C_out/group=2, group=2 -> C_out=4
    m, n = one_node("ConvTranspose", [f32(1, 8, 10, 10)], [f32(1, 4, 22, 22)], {"group": 2, "strides": [2, 2]}, [(1, w)])
    # N * C_in * prod(in) * (C_out / group) * prod(kernel)
    assert node_macs(n)[0] == 1 * 8 * 100 * 2 * 16


def test_gemm_trans_b():
    b = np.zeros((128, 64), np.float32)
    m, n = one_node("Gemm", [f32(4, 64)], [f32(4, 128)], {"transB": 1}, [(1, b)])
    assert node_macs(n)[0] == 4 * 128 * 64


def test_gemm_trans_a_unknown_b_uses_output():
    m, n = one_node("Gemm", [f32(64, 4), f32(64, None)], [f32(4, 128)], {"transA": 1})
    assert node_macs(n)[0] == 4 * 128 * 64


def test_matmul_batched_and_broadcast():
    m, n = one_node("MatMul", [f32(2, 3, 5, 7), f32(7, 11)], [f32(2, 3, 5, 11)])
    assert node_macs(n)[0] == 2 * 3 * 5 * 11 * 7
    m, n = one_node("MatMul", [f32(2, 1, 5, 7), f32(3, 7, 11)], [f32(2, 3, 5, 11)])
    assert node_macs(n)[0] == 2 * 3 * 5 * 11 * 7
    m, n = one_node("MatMul", [f32(7), f32(4, 7, 11)], [f32(4, 11)])  # 1-D left operand
    assert node_macs(n)[0] == 4 * 11 * 7


def test_matmul_unknown_shape_is_reported_not_guessed():
    m, n = one_node("MatMul", [f32("B", 5, 7), f32(7, 11)], [tensor(DType.FLOAT)])
    s = model_stats(m)
    assert node_macs(n) == (None, None)
    assert s["macs"]["unknown"] == ["matmul"] and not s["macs"]["complete"] and s["macs"]["total"] == 0
    assert s["macs"]["per_node"][0]["macs"] is None
    assert "unknown" in format_stats(s)


def test_lstm_per_step_and_total():
    hidden, inp, seq, batch = 32, 16, 10, 2
    w = np.zeros((1, 4 * hidden, inp), np.float32)
    r = np.zeros((1, 4 * hidden, hidden), np.float32)
    m, n = one_node("LSTM", [f32(seq, batch, inp)], [f32(seq, 1, batch, hidden)], {"hidden_size": hidden}, [(1, w), (2, r)])
    per_step = batch * 4 * hidden * (inp + hidden)
    assert node_macs(n) == (seq * per_step, per_step)
    rec = model_stats(m)["macs"]["per_node"][0]
    assert rec["macs_per_step"] == per_step


def test_gru_unknown_sequence_length():
    hidden, inp = 8, 4
    w = np.zeros((2, 3 * hidden, inp), np.float32)
    r = np.zeros((2, 3 * hidden, hidden), np.float32)
    m, n = one_node("GRU", [f32("T", 1, inp)], [f32("T", 2, 1, hidden)], {"hidden_size": hidden, "direction": "bidirectional"},
                    [(1, w), (2, r)])
    assert node_macs(n)[0] is None


def _loop_model():
    x = Value("x", f32(4, 4))
    c = Value("c", tensor(DType.BOOL, []))
    g = Graph("main", [x, c])
    w = g.add_constant(np.ones((4, 4), np.float32), "w")
    g.add_constant(np.ones((16,), np.int8), "q")
    trip = g.add_constant(np.array(3, np.int64), "trip")
    it = Value("it", tensor(DType.INT64, []))
    cin = Value("cin", tensor(DType.BOOL, []))
    acc = Value("acc", f32(4, 4))
    body = Graph("body", [it, cin, acc])
    cout = body.append(Node("Identity", [cin], ["cout"], name="body_id")).output(0)
    mm = body.append(Node("MatMul", [acc, w], ["mm"], name="body_mm"))
    mm.output(0).type = f32(4, 4)
    r = body.append(Node("Relu", [mm.output(0)], ["r"], name="body_relu")).output(0)
    body.add_output(cout)
    body.add_output(r)
    mm0 = g.append(Node("MatMul", [x, w], ["mm0"], name="mm0"))
    mm0.output(0).type = f32(4, 4)
    loop = g.append(Node("Loop", [trip, c, mm0.output(0)], ["final"], {"body": body}, name="loop"))
    g.add_output(loop.output(0))
    m = Model(g, {"": 21})
    m.producer_name = "test"
    return m


def test_histogram_parameters_and_subgraphs():
    m = _loop_model()
    verify(m)
    s = model_stats(m)
    assert s["num_nodes"] == 2 and s["num_nodes_nested"] == 3
    assert s["op_histogram"] == {"onnx::Loop": 1, "onnx::MatMul": 1}
    assert s["op_histogram_nested"] == {"onnx::Identity": 1, "onnx::MatMul": 1, "onnx::Relu": 1}
    assert s["parameters"]["by_dtype"] == {
        "f32": {"tensors": 1, "count": 16, "bytes": 64},
        "i64": {"tensors": 1, "count": 1, "bytes": 8},
        "i8": {"tensors": 1, "count": 16, "bytes": 16},
    }
    assert s["parameters"]["count"] == 33 and s["parameters"]["bytes"] == 88
    assert s["macs"]["total"] == 64 and s["macs"]["total_nested"] == 64
    assert s["subgraphs"] == [{"node": "loop", "op": "onnx::Loop", "attribute": "body", "graph": "body", "nodes": 3,
                               "nodes_total": 3, "depth": 1}]
    assert s["inputs"] == [{"name": "x", "type": "f32[4,4]", "dtype": "f32", "shape": [4, 4]},
                           {"name": "c", "type": "bool[]", "dtype": "bool", "shape": []}]
    assert s["outputs"] == [{"name": "final", "type": "?", "dtype": None, "shape": None}]
    assert s["opset_imports"] == {"ai.onnx": 21}
    text = format_stats(s)
    for needle in ("onnx::MatMul", "in subgraphs", "parameters: 33", "body", "i8", "ai.onnx 21", "producer test"):
        assert needle in text, needle


def test_function_call_with_mac_op_is_unknown():
    m = _loop_model()
    a, b = Value("a"), Value("b")
    fg = Graph("mm_fn", [a, b])
    fg.add_output(fg.append(Node("MatMul", [a, b], ["c"], name="fn_mm")).output(0))
    f = Function("local", "MyMM", fg, opset_imports={"": 21})
    m.functions[f.key] = f
    m.opset_imports["local"] = 1
    g = m.graph
    x = g.inputs[0]
    call = g.append(Node("MyMM", [x, x], ["fc"], domain="local", name="call"))
    g.add_output(call.output(0))
    verify(m)
    s = model_stats(m)
    assert "call" in s["macs"]["unknown"]
    assert s["functions"] == [{"domain": "local", "name": "MyMM", "overload": "", "nodes": 1, "inputs": 2,
                               "outputs": 1, "attributes": []}]
    assert "local::MyMM" in format_stats(s)


def test_symbolic_dims_can_be_bound():
    w = np.zeros((16, 4, 3, 3), np.float32)
    m, n = one_node("Conv", [f32("N", 4, 10, 10)], [f32("N", 16, 8, 8)], {}, [(1, w)])
    assert node_macs(n)[0] is None
    assert node_macs(n, {"N": 3})[0] == 3 * 16 * 64 * 4 * 9
    s = model_stats(m, {"N": 3})
    assert s["macs"]["total"] == 3 * 16 * 64 * 4 * 9 and s["dims"] == {"N": 3}
    assert "with N=3" in format_stats(s)


def test_empty_model_formats():
    s = model_stats(Model(Graph("empty")))
    assert s["num_nodes"] == 0 and s["macs"]["total"] == 0 and s["parameters"]["count"] == 0
    assert "(none)" in format_stats(s)
