"""C target: generated C built with -Wall -Wextra -Werror and ASan/UBSan, compared with onnxruntime."""

from __future__ import annotations

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

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

RNG = np.random.default_rng(1234)


def _w(name: str, shape: Sequence[int], scale: float = 0.5) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _i64(name: str, values: Sequence[int]) -> onnx.TensorProto:
    return nh.from_array(np.array(values, dtype=np.int64), name)


def _model(nodes: List[onnx.NodeProto], inputs: Dict[str, Sequence], outputs: Sequence[str],
           inits: Sequence[onnx.TensorProto] = (), opset: int = 17,
           int_inputs: Sequence[str] = ()) -> onnx.ModelProto:
    ins = [h.make_tensor_value_info(n, T.INT64 if n in int_inputs else T.FLOAT, s) for n, s in inputs.items()]
    outs = [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs]
    g = h.make_graph(nodes, "g", ins, outs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=9)


def run_c(tmp_path: Path, model: onnx.ModelProto, feeds: Dict[str, np.ndarray], *, opt_level: int = 0,
          shapes: Sequence[str] = (), rtol: float = 1e-4, atol: float = 1e-5, name: str = "model") -> dict:
    """Compile to C, build with sanitizers, run, compare every output with onnxruntime; returns the report."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    code = compile_to_c(str(path), str(out), shapes, name=name, opt_level=opt_level)
    prog = build(str(out), code.report, opt="-O1", sanitize=True)
    got = run_binary(prog, code.report, feeds)
    ref = reference_outputs(str(path), feeds)
    for t, g, r in zip(code.report["outputs"], got, ref):
        c = compare(t["name"], g, r, rtol=rtol, atol=atol, max_ulp=0)
        assert c.ok, f"{t['name']}: {c} (C {g.reshape(-1)[:6]} vs ORT {r.reshape(-1)[:6]})"
    return code.report


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _ops(report: dict) -> List[str]:
    return [L["op"] for L in report["layers"]]


# --- op families --------------------------------------------------------------------------------

def test_conv_family(tmp_path: Path) -> None:
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["x", "w2"], ["c2"], group=2, strides=[2, 2], pads=[0, 1, 2, 1]),
        h.make_node("Conv", ["x", "wd", "bd"], ["c3"], group=4, dilations=[2, 2], pads=[2, 2, 2, 2]),
        h.make_node("Conv", ["x", "w1"], ["c4"], strides=[2, 3], auto_pad="SAME_UPPER"),
        h.make_node("Conv", ["x", "w1"], ["c5"], strides=[2, 2], auto_pad="SAME_LOWER"),
        h.make_node("Conv", ["s", "w1d", "b1d"], ["c6"], pads=[1, 2], strides=[2]),
    ]
    inits = [_w("w1", [3, 4, 3, 3]), _w("b1", [3]), _w("w2", [6, 2, 3, 2]), _w("wd", [4, 1, 3, 3]), _w("bd", [4]),
             _w("w1d", [5, 2, 3]), _w("b1d", [5])]
    m = _model(nodes, {"x": [1, 4, 9, 10], "s": [2, 2, 11]}, ["c1", "c2", "c3", "c4", "c5", "c6"], inits)
    run_c(tmp_path, m, {"x": _x(1, 4, 9, 10), "s": _x(2, 2, 11)})


def test_fused_conv_activations(tmp_path: Path) -> None:
    """-O2 fuses each activation into edgec.FusedConv; the C kernel applies it."""
    acts = [("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
            ("HardSwish", {}), ("Tanh", {})]
    nodes, outs, inits = [], [], [_w("b", [4])] + [_w(f"w{i}", [4, 3, 3, 3]) for i in range(9)]
    for i, (op, attrs) in enumerate(acts):
        nodes += [h.make_node("Conv", ["x", f"w{i}", "b"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  h.make_node(op, [f"c{i}"], [f"y{i}"], **attrs)]
        outs.append(f"y{i}")
    nodes += [h.make_node("Conv", ["x", "w6", "b"], ["cc"]),
              h.make_node("Clip", ["cc", "lo", "hi"], ["yclip"]),
              h.make_node("Conv", ["x", "w7"], ["cs"]), h.make_node("Sigmoid", ["cs"], ["sg"]),
              h.make_node("Mul", ["cs", "sg"], ["ysilu"]),
              h.make_node("Conv", ["x", "w8"], ["cg"]), h.make_node("Gelu", ["cg"], ["ygelu"])]
    inits += [nh.from_array(np.array(-0.5, np.float32), "lo"), nh.from_array(np.array(0.7, np.float32), "hi")]
    m = _model(nodes, {"x": [1, 3, 6, 6]}, outs + ["yclip", "ysilu", "ygelu"], inits, opset=20)
    rep = run_c(tmp_path, m, {"x": _x(1, 3, 6, 6)}, opt_level=2)
    assert _ops(rep).count("edgec::FusedConv") == 9, _ops(rep)


def test_gemm_family(tmp_path: Path) -> None:
    nodes = [
        h.make_node("Gemm", ["a", "b", "c"], ["y0"]),
        h.make_node("Gemm", ["at", "bt", "cm1"], ["y1"], transA=1, transB=1, alpha=0.5, beta=2.0),
        h.make_node("Gemm", ["a", "b", "cs"], ["y2"], alpha=1.5),
        h.make_node("Gemm", ["a", "b", "cfull"], ["y3"], beta=-1.0),
        h.make_node("Gemm", ["a", "b"], ["g4"]), h.make_node("Relu", ["g4"], ["y4"]),
    ]
    inits = [_w("b", [5, 7]), _w("c", [7]), _w("bt", [7, 5]), _w("cm1", [3, 1]),
             nh.from_array(np.array([0.25], np.float32), "cs"), _w("cfull", [3, 7])]
    m = _model(nodes, {"a": [3, 5], "at": [5, 3]}, ["y0", "y1", "y2", "y3", "y4"], inits)
    run_c(tmp_path, m, {"a": _x(3, 5), "at": _x(5, 3)}, opt_level=2)


def test_matmul_family(tmp_path: Path) -> None:
    nodes = [
        h.make_node("MatMul", ["a", "w"], ["y0"]),
        h.make_node("MatMul", ["a3", "w"], ["y1"]),
        h.make_node("MatMul", ["a4", "b3"], ["y2"]),
        h.make_node("MatMul", ["v", "w"], ["y3"]),
        h.make_node("MatMul", ["a3", "v6"], ["y4"]),
        h.make_node("MatMul", ["a3", "w"], ["m5"]), h.make_node("Add", ["m5", "bias"], ["a5"]),
        h.make_node("Relu", ["a5"], ["y5"]),
    ]
    inits = [_w("w", [4, 6]), _w("b3", [3, 4, 5]), _w("v6", [4]), _w("bias", [6])]
    m = _model(nodes, {"a": [3, 4], "a3": [2, 3, 4], "a4": [2, 1, 3, 4], "v": [4]},
               ["y0", "y1", "y2", "y3", "y4", "y5"], inits)
    run_c(tmp_path, m, {"a": _x(3, 4), "a3": _x(2, 3, 4), "a4": _x(2, 1, 3, 4), "v": _x(4)}, opt_level=2)


def test_pool_family(tmp_path: Path) -> None:
    nodes = [
        h.make_node("MaxPool", ["x"], ["y0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("MaxPool", ["x"], ["y1"], kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1, dilations=[2, 1]),
        h.make_node("AveragePool", ["x"], ["y2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                    count_include_pad=1),
        h.make_node("AveragePool", ["x"], ["y3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("AveragePool", ["x"], ["y4"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        h.make_node("AveragePool", ["x"], ["y5"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                    count_include_pad=1, ceil_mode=1),
        h.make_node("GlobalAveragePool", ["x"], ["y6"]),
        h.make_node("GlobalMaxPool", ["x"], ["y7"]),
        h.make_node("MaxPool", ["s"], ["y8"], kernel_shape=[3], strides=[2], auto_pad="SAME_UPPER"),
    ]
    m = _model(nodes, {"x": [1, 3, 7, 8], "s": [1, 2, 9]}, [f"y{i}" for i in range(9)], opset=19)
    run_c(tmp_path, m, {"x": _x(1, 3, 7, 8), "s": _x(1, 2, 9)})


def test_binary_broadcast_family(tmp_path: Path) -> None:
    ops = ["Add", "Sub", "Mul", "Div", "Max", "Min"]
    nodes, outs = [], []
    for i, op in enumerate(ops):
        nodes.append(h.make_node(op, ["a", "b"], [f"y{i}"]))
        outs.append(f"y{i}")
    nodes += [h.make_node("Add", ["a", "k"], ["z0"]), h.make_node("Mul", ["c", "a"], ["z1"]),
              h.make_node("Div", ["kk", "a"], ["z2"]),
              h.make_node("Abs", ["a"], ["pa"]), h.make_node("Pow", ["pa", "b"], ["z3"]),
              h.make_node("Pow", ["a", "two"], ["z4"]), h.make_node("Max", ["a", "b", "c"], ["z5"]),
              h.make_node("Sum", ["a", "c", "b"], ["z6"]), h.make_node("Sub", ["a", "a"], ["z7"]),
              h.make_node("PRelu", ["a", "slope"], ["z8"])]
    outs += [f"z{i}" for i in range(9)]
    inits = [nh.from_array(np.array(1.5, np.float32), "k"), _w("kk", [4]),
             nh.from_array(np.array([2.0], np.float32), "two"), _w("slope", [3, 1])]
    m = _model(nodes, {"a": [2, 3, 4], "b": [3, 1], "c": [2, 1, 4]}, outs, inits)
    run_c(tmp_path, m, {"a": _x(2, 3, 4), "b": _x(3, 1), "c": _x(2, 1, 4)})


def test_unary_family(tmp_path: Path) -> None:
    ops = [("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("Exp", {}), ("Neg", {}), ("Abs", {}), ("Erf", {}),
           ("LeakyRelu", {"alpha": 0.2}), ("HardSigmoid", {}), ("HardSwish", {}), ("Gelu", {}),
           ("Gelu", {"approximate": "tanh"}), ("Elu", {}), ("Floor", {}), ("Softsign", {})]
    nodes, outs = [], []
    for i, (op, attrs) in enumerate(ops):
        nodes.append(h.make_node(op, ["x"], [f"y{i}"], **attrs))
        outs.append(f"y{i}")
    nodes += [h.make_node("Abs", ["x"], ["ax"]), h.make_node("Log", ["ax"], ["u0"]), h.make_node("Sqrt", ["ax"], ["u1"]),
              h.make_node("Clip", ["x", "lo", "hi"], ["u2"]), h.make_node("Clip", ["x", "", "hi"], ["u3"])]
    outs += ["u0", "u1", "u2", "u3"]
    inits = [nh.from_array(np.array(-0.5, np.float32), "lo"), nh.from_array(np.array(0.25, np.float32), "hi")]
    m = _model(nodes, {"x": [2, 3, 5]}, outs, inits, opset=20)
    x = _x(2, 3, 5) * 2
    x[0, 0, 0] = 0.0  # Log(0) = -inf on both sides
    run_c(tmp_path, m, {"x": x})


def test_normalization_softmax_family(tmp_path: Path) -> None:
    nodes = [
        h.make_node("Softmax", ["x"], ["y0"], axis=1), h.make_node("Softmax", ["x"], ["y1"]),
        h.make_node("Softmax", ["x"], ["y2"], axis=0), h.make_node("LogSoftmax", ["x"], ["y3"], axis=2),
        h.make_node("LayerNormalization", ["x", "g", "bb"], ["y4"], epsilon=1e-3),
        h.make_node("LayerNormalization", ["x", "g2"], ["y5"], axis=1),
        h.make_node("BatchNormalization", ["x", "sc", "bi", "mu", "var"], ["y6"], epsilon=1e-3),
    ]
    var = nh.from_array(np.abs(RNG.standard_normal(3)).astype(np.float32) + 0.1, "var")
    inits = [_w("g", [5]), _w("bb", [5]), _w("g2", [3, 5]), _w("sc", [3]), _w("bi", [3]), _w("mu", [3]), var]
    m = _model(nodes, {"x": [2, 3, 5]}, [f"y{i}" for i in range(7)], inits)
    run_c(tmp_path, m, {"x": _x(2, 3, 5) * 3})


def test_shape_ops_family(tmp_path: Path) -> None:
    nodes = [
        h.make_node("Reshape", ["x", "shp"], ["r"]), h.make_node("Relu", ["r"], ["y0"]),
        h.make_node("Flatten", ["x"], ["f"], axis=2), h.make_node("Identity", ["f"], ["y1"]),
        h.make_node("Unsqueeze", ["x", "ax0"], ["u"]), h.make_node("Squeeze", ["u", "ax0"], ["sq"]),
        h.make_node("Neg", ["sq"], ["y2"]),
        h.make_node("Transpose", ["x"], ["y3"], perm=[2, 0, 1]),
        h.make_node("Concat", ["x", "x2", "x"], ["y4"], axis=1),
        h.make_node("Split", ["x", "spl"], ["y5", "y6"], axis=2),
        h.make_node("Slice", ["x", "st", "en", "axs", "stp"], ["y7"]),
        h.make_node("Pad", ["x", "pads", "pv"], ["y8"]),
        h.make_node("Gather", ["x", "gi"], ["y9"], axis=1),
        h.make_node("Gather", ["emb", "ids"], ["y10"]),
        h.make_node("Expand", ["x2", "eshp"], ["y11"]),
        h.make_node("Gather", ["x", "g0"], ["y12"], axis=2),
    ]
    inits = [_i64("shp", [6, -1]), _i64("ax0", [0]), _i64("spl", [1, 4]), _i64("st", [-1, 0]), _i64("en", [-100, 5]),
             _i64("axs", [2, 1]), _i64("stp", [-2, 2]), _i64("pads", [0, 1, -1, 1, 0, 2]),
             nh.from_array(np.array(0.5, np.float32), "pv"), _i64("gi", [[2, -1], [0, 0]]), _w("emb", [10, 4]),
             _i64("eshp", [2, 2, 5]), nh.from_array(np.array(3, np.int64), "g0")]
    m = _model(nodes, {"x": [2, 3, 5], "x2": [2, 1, 5], "ids": [2, 3]}, [f"y{i}" for i in range(13)], inits,
               int_inputs=["ids"])
    ids = np.array([[0, 9, 3], [-1, 5, 5]], dtype=np.int64)
    run_c(tmp_path, m, {"x": _x(2, 3, 5), "x2": _x(2, 1, 5), "ids": ids})


def test_reduce_family(tmp_path: Path) -> None:
    nodes = [
        h.make_node("ReduceMean", ["x", "a1"], ["y0"]), h.make_node("ReduceSum", ["x", "a02"], ["y1"], keepdims=0),
        h.make_node("ReduceMax", ["x", "am1"], ["y2"], keepdims=0), h.make_node("ReduceMean", ["x"], ["y3"]),
        h.make_node("ReduceSum", ["x"], ["y4"], noop_with_empty_axes=1),
    ]
    inits = [_i64("a1", [1]), _i64("a02", [0, 2]), _i64("am1", [-1])]
    m = _model(nodes, {"x": [2, 3, 4]}, [f"y{i}" for i in range(5)], inits, opset=18)
    run_c(tmp_path, m, {"x": _x(2, 3, 4)})


def test_multi_op_chain_inplace_and_views(tmp_path: Path) -> None:
    """A chain with views, elementwise ops in place, an output that is a view, and an output read later."""
    nodes = [
        h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        h.make_node("Sigmoid", ["c"], ["s"]), h.make_node("Add", ["s", "k"], ["a"]),
        h.make_node("Flatten", ["a"], ["f"]), h.make_node("Gemm", ["f", "g"], ["logits"], transB=1),
        h.make_node("Relu", ["logits"], ["r"]), h.make_node("Reshape", ["r", "shp"], ["out2"]),
        h.make_node("Identity", ["x"], ["xcopy"]),
    ]
    inits = [_w("w", [4, 2, 3, 3]), _w("b", [4]), nh.from_array(np.array(0.5, np.float32), "k"),
             _w("g", [6, 4 * 5 * 5]), _i64("shp", [2, 3])]
    m = _model(nodes, {"x": [1, 2, 5, 5]}, ["logits", "out2", "xcopy"], inits)
    rep = run_c(tmp_path, m, {"x": _x(1, 2, 5, 5)})
    assert rep["memory"]["inplace_buffers"] >= 1
    assert rep["memory"]["arena_bytes"] >= rep["memory"]["lower_bound_bytes"]


def test_large_weights_separate_file(tmp_path: Path) -> None:
    m = _model([h.make_node("Gemm", ["a", "w"], ["y"], transB=1)], {"a": [2, 160]}, ["y"], [_w("w", [128, 160])])
    run_c(tmp_path, m, {"a": _x(2, 160)})
    assert (tmp_path / "out" / "model_weights.c").exists()


# --- zoo models end to end ----------------------------------------------------------------------

def _zoo_case(tmp_path: Path, proto: onnx.ModelProto, shapes: Sequence[str], feeds: Dict[str, np.ndarray],
              fused: Optional[str] = "edgec::FusedConv") -> dict:
    rep = run_c(tmp_path, proto, feeds, opt_level=2, shapes=shapes)
    if fused:
        assert fused in _ops(rep)
    assert rep["memory"]["arena_bytes"] <= 1.25 * rep["memory"]["lower_bound_bytes"] + 64
    return rep


def test_zoo_digits_cnn(tmp_path: Path) -> None:
    zoo = pytest.importorskip("zoo")
    pytest.importorskip("sklearn")
    proto = zoo.digits_cnn()
    feeds = zoo.make_inputs(proto, seed=0, dims={"batch": 1})
    name = proto.graph.input[0].name
    shape = "x".join(str(d) for d in feeds[name].shape)
    _zoo_case(tmp_path, proto, [f"{name}={shape}"], feeds)


@pytest.mark.parametrize("zoo_name", ["resnet18", "mobilenetv2"])
def test_zoo_cnn(tmp_path: Path, zoo_name: str) -> None:
    zoo = pytest.importorskip("zoo")
    proto = zoo.get(zoo_name, **zoo.TEST_PARAMS[zoo_name])
    feeds = zoo.make_inputs(proto, seed=0, dims={"batch": 1})
    _zoo_case(tmp_path, proto, ["batch=1"], feeds)


# --- CLI, errors, determinism -------------------------------------------------------------------

def _small(tmp_path: Path) -> Path:
    m = _model([h.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
                h.make_node("GlobalAveragePool", ["r"], ["g"]), h.make_node("Flatten", ["g"], ["out"])],
               {"input": ["N", 1, 8, 8]}, ["out"], [_w("w", [4, 1, 3, 3]), _w("b", [4])])
    p = tmp_path / "small.onnx"
    onnx.save(m, str(p))
    return p


def test_cli_compile_verify_and_determinism(tmp_path: Path) -> None:
    p = _small(tmp_path)
    r = CliRunner()
    outs = []
    for d in ("o1", "o2"):
        res = r.invoke(cli, ["compile", str(p), "-O2", "--target", "c", "--input-shape", "input=1x1x8x8",
                             "--name", "net", "-o", str(tmp_path / d)])
        assert res.exit_code == 0, res.output
        outs.append({f: (tmp_path / d / f).read_bytes() for f in ("net.h", "net.c", "report.json", "report.txt")})
    assert outs[0] == outs[1]
    hdr = outs[0]["net.h"].decode()
    assert "int net_run(const float* input, float* out);" in hdr and "NET_ARENA_BYTES" in hdr
    c = outs[0]["net.c"].decode()
    assert "malloc" not in c and "stdio" not in c and "0x" in c
    res = r.invoke(cli, ["verify", str(p), "--input-shape", "N=1", "--runs", "2"])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "max ULP" in res.output


def test_cli_unsupported_op_and_symbolic_dims(tmp_path: Path) -> None:
    m = _model([h.make_node("GridSample", ["x", "grid"], ["y"], name="sampler")], {"x": [1, 1, 2, 2], "grid": [1, 2, 2, 2]},
               ["y"])
    p = tmp_path / "gridsample.onnx"
    onnx.save(m, str(p))
    res = CliRunner().invoke(cli, ["compile", str(p), "-O0", "--target", "c", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "GridSample" in res.output and "node 'sampler'" in res.output, res.output
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(cli, ["compile", str(_small(tmp_path)), "--target", "c", "-o", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "--input-shape" in res.output, res.output


def test_caller_arena(tmp_path: Path) -> None:
    """`model_run_with_arena` with a caller buffer gives the same result; a misaligned arena is refused."""
    p = _small(tmp_path)
    code = compile_to_c(str(p), str(tmp_path / "o"), ["input=1x1x8x8"])
    main = tmp_path / "o" / "main2.c"
    main.write_text("""#include "model.h"
#include <stdint.h>
static float in[MODEL_INPUT_SIZE], a[MODEL_OUT_SIZE], b[MODEL_OUT_SIZE];
static float arena[MODEL_ARENA_BYTES / 4 + 8];
int main(void)
{
    for (int i = 0; i < MODEL_INPUT_SIZE; ++i) in[i] = (float)(i % 7) - 3.0f;
    uint8_t* base = (uint8_t*)arena;
    while (((uintptr_t)base & 15u) != 0) ++base;
    if (model_run(in, a) != 0) return 1;
    if (model_run_with_arena(in, b, base) != 0) return 2;
    if (MODEL_ARENA_BYTES > 0 && model_run_with_arena(in, b, base + 4) != -1) return 3;
    for (int i = 0; i < MODEL_OUT_SIZE; ++i) if (a[i] != b[i]) return 4;
    return 0;
}
""")
    import subprocess

    exe = tmp_path / "o" / "main2"
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O1", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
                    str(main), str(tmp_path / "o" / "model.c"), "-o", str(exe), "-lm"], check=True)
    assert subprocess.run([str(exe)]).returncode == 0
    assert code.report["memory"]["arena_bytes"] % 16 == 0
