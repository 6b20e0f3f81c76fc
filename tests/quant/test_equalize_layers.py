"""equalize-layers: cross-layer equalization keeps outputs and evens out per-channel weight ranges."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import edgec.passes  # noqa: E402,F401 - registers the passes
from edgec.backends.onnx_export import to_proto  # noqa: E402
from edgec.frontend.onnx_import import from_proto  # noqa: E402
from edgec.ir import Model  # noqa: E402
from edgec.passmanager import PassManager  # noqa: E402
from edgec.passes.equalize_layers import find_pairs  # noqa: E402
from edgec.quant import collect  # noqa: E402
from edgec.rewrite import constant_value  # noqa: E402
from passtest import canonical  # noqa: E402

RNG_SEED = 0


def build(nodes: Sequence[onnx.NodeProto], inits: Dict[str, np.ndarray], x_shape: Sequence[int],
          outputs: Sequence[str] = ("y",), extra_inputs: Sequence[Tuple[str, Sequence[int]]] = ()) -> Model:
    """An IR model from ONNX nodes, float32 initializers and one float input ``x``."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in extra_inputs]
    graph = helper.make_graph(
        list(nodes), "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return from_proto(proto, None)


def copy(model: Model) -> Model:
    return from_proto(to_proto(model), None, check=False)


def run_model(model: Model, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    """The graph outputs of ``model`` (onnxruntime; edgec ops lowered on a copy)."""
    got = collect.run_model(model, feeds)
    return [got[v.name] for v in model.graph.outputs]


def badly_scaled(rng: np.random.Generator, shape: Tuple[int, ...], spread: float = 2.0) -> np.ndarray:
    """Random weights whose output channels (axis 0) differ in scale by up to 10**(2*spread)."""
    return rng.standard_normal(shape) * channel_scales(rng, shape[0], spread).reshape((-1,) + (1,) * (len(shape) - 1))


def channel_scales(rng: np.random.Generator, n: int, spread: float = 2.0) -> np.ndarray:
    return 10.0 ** rng.uniform(-spread, spread, size=n)


def compensating(rng: np.random.Generator, shape: Tuple[int, ...], scales: np.ndarray, axis: int = 1) -> np.ndarray:
    """Random weights whose input channels (``axis``) are divided by ``scales``: every channel of
    the previous layer matters equally (as after folding BatchNorm into badly scaled convs)."""
    view = [1] * len(shape)
    view[axis] = -1
    return rng.standard_normal(shape) / scales.reshape(view)


def outputs(model: Model, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    return run_model(model, feeds)


def weights(model: Model) -> Dict[str, np.ndarray]:
    """Weight (input 1) of every Conv/Gemm-like node, by node order."""
    out = {}
    for i, n in enumerate(model.graph):
        if n.op_type in ("Conv", "FusedConv", "Gemm", "FusedGemm"):
            out[f"{i}:{n.op_type}"] = constant_value(n.input(1))
    return out


def channel_spread(w: np.ndarray, axis: int = 0) -> float:
    r = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(axis=1)
    return float(r.max() / r.min())


def fake_quant_per_tensor(model: Model) -> Model:
    """The model with every layer weight quantized per tensor to int8 (symmetric) and back."""
    q = copy(model)
    for n in q.graph:
        if n.op_type in ("Conv", "FusedConv", "Gemm", "FusedGemm"):
            w = constant_value(n.input(1))
            s = np.abs(w).max() / 127.0
            n.set_input(1, q.graph.add_constant((np.clip(np.rint(w / s), -127, 127) * s).astype(np.float32), "wq"))
    return q


def quant_error(model: Model, feeds: Dict[str, np.ndarray]) -> float:
    """Relative output error of per-tensor int8 weights."""
    want = outputs(model, feeds)[0]
    got = outputs(fake_quant_per_tensor(model), feeds)[0]
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def feeds_for(shape: Sequence[int], seed: int = 1) -> Dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def check_equalized(model: Model, x_shape: Sequence[int], pipeline: str = "equalize-layers",
                    min_pairs: int = 1) -> Model:
    """CLE fires, keeps outputs, evens out channel ranges and lowers per-tensor quantization error."""
    after = copy(model)
    pm = PassManager(pipeline)
    assert pm.run(after)
    feeds = feeds_for(x_shape)
    want, got = outputs(model, feeds)[0], outputs(after, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    w0, w1 = weights(model), weights(after)
    first = next(iter(w0))
    assert channel_spread(w1[first]) < channel_spread(w0[first]) / 10
    e0, e1 = quant_error(model, feeds), quant_error(after, feeds)
    assert e1 < e0 / 3, (e0, e1)
    return after


def conv_relu_conv(rng: np.random.Generator, group2: int = 1) -> Model:
    sc = channel_scales(rng, 8)
    w1 = rng.standard_normal((8, 3, 3, 3)) * sc[:, None, None, None]
    b1 = rng.standard_normal(8) * sc
    w2 = compensating(rng, (6, 8, 3, 3), sc ** 0.5)
    if group2 > 1:  # output o reads input channels of its group only
        k = 8 // group2
        w2 = np.stack([w2[o, (o * group2 // 6) * k:(o * group2 // 6 + 1) * k] for o in range(6)])
    return build([
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], group=group2),
    ], {"w1": w1, "b1": b1, "w2": w2, "b2": rng.standard_normal(6)}, (2, 3, 10, 10))


@pytest.mark.parametrize("fused", [False, True])
def test_conv_relu_conv(fused: bool) -> None:
    model = conv_relu_conv(np.random.default_rng(RNG_SEED))
    if fused:
        PassManager("fuse-activation").run(model)
        assert [n.op_type for n in model.graph] == ["FusedConv", "Conv"]
    check_equalized(model, (2, 3, 10, 10))


def test_grouped_second_conv() -> None:
    model = conv_relu_conv(np.random.default_rng(1), group2=2)
    check_equalized(model, (2, 3, 10, 10))


def test_conv_dw_conv_chain() -> None:
    """conv -> relu -> depthwise conv -> relu -> conv: both pairs equalize jointly."""
    rng = np.random.default_rng(2)
    s1, sd = channel_scales(rng, 8), channel_scales(rng, 8, 1.0)
    w1 = rng.standard_normal((8, 3, 1, 1)) * s1[:, None, None, None]
    wd = rng.standard_normal((8, 1, 3, 3)) * sd[:, None, None, None]
    w2 = compensating(rng, (5, 8, 1, 1), s1 * sd)
    model = build([
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["c2"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w2"], ["y"]),
    ], {"w1": w1, "b1": rng.standard_normal(8) * s1, "wd": wd, "bd": rng.standard_normal(8) * s1 * sd, "w2": w2},
        (2, 3, 8, 8))
    _, pairs = find_pairs(model)
    assert len(pairs) == 2
    after = check_equalized(model, (2, 3, 8, 8))
    wd_after = weights(after)["2:Conv"]
    assert channel_spread(wd_after) < channel_spread(wd)


def test_gemm_chain_and_maxpool_conv() -> None:
    rng = np.random.default_rng(3)
    sc = channel_scales(rng, 16)
    w1 = rng.standard_normal((16, 8)) * sc[:, None]  # transB=1: (M, K), rows are output channels
    model = build([
        helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], transB=1),
        helper.make_node("LeakyRelu", ["g1"], ["r1"], alpha=0.1),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["y"]),
    ], {"w1": w1, "b1": rng.standard_normal(16) * sc, "w2": compensating(rng, (16, 4), sc, axis=0),
        "b2": rng.standard_normal(4)}, (5, 8))
    check_equalized(model, (5, 8))

    sc = channel_scales(rng, 6)
    w1 = rng.standard_normal((6, 2, 3, 3)) * sc[:, None, None, None]
    model = build([
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("MaxPool", ["c1"], ["p1"], kernel_shape=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["y"]),
    ], {"w1": w1, "w2": compensating(rng, (3, 6, 1, 1), sc)}, (1, 2, 9, 9))
    check_equalized(model, (1, 2, 9, 9))


def assert_not_fired(model: Model) -> None:
    after = copy(model)
    assert not PassManager("equalize-layers").run(after)
    assert canonical(after) == canonical(model)


def test_must_not_fire() -> None:
    rng = np.random.default_rng(4)
    w1, w2 = badly_scaled(rng, (4, 2, 1, 1)), rng.standard_normal((3, 4, 1, 1))
    inits = {"w1": w1, "w2": w2}
    # Clip (ReLU6) between the layers: its bound does not scale
    assert_not_fired(build([
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
    ], {**inits, "lo": np.array(0.0), "hi": np.array(6.0)}, (1, 2, 4, 4)))
    # fused Clip activation
    m = build([
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
    ], {**inits, "lo": np.array(0.0), "hi": np.array(6.0)}, (1, 2, 4, 4))
    PassManager("fuse-activation").run(m)
    assert any(n.op_type == "FusedConv" for n in m.graph)
    assert_not_fired(m)
    # the intermediate has another consumer (a graph output)
    assert_not_fired(build([
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
    ], inits, (1, 2, 4, 4), outputs=("y", "r1")))
    # ... or another node consumer
    assert_not_fired(build([
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Conv", ["c1", "w2"], ["y"]),
        helper.make_node("Sigmoid", ["c1"], ["z"]),
    ], inits, (1, 2, 4, 4), outputs=("y", "z")))
    # non-constant weights of the second layer (a graph input)
    assert_not_fired(build([
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Conv", ["c1", "w2in"], ["y"]),
    ], {"w1": w1}, (1, 2, 4, 4), extra_inputs=[("w2in", (3, 4, 1, 1))]))
    # no iterations
    m = build([
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Conv", ["c1", "w2"], ["y"]),
    ], inits, (1, 2, 4, 4))
    after = copy(m)
    assert not PassManager("equalize-layers{iterations=0}").run(after)


def test_converges_and_reports() -> None:
    model = conv_relu_conv(np.random.default_rng(5))
    pm = PassManager("equalize-layers{iterations=50}")
    assert pm.run(model)
    (pair,) = pm.ctx.reports["equalize-layers"]["pairs"]
    assert pair["range-ratio-after"] < pair["range-ratio-before"] / 10
    w = weights(model)
    PassManager("equalize-layers").run(model)
    for a, b in zip(w.values(), weights(model).values()):
        np.testing.assert_allclose(b, a, rtol=1e-3)


def test_zoo_mobilenetv2_stays_equal() -> None:
    import zoo

    proto = zoo.get("mobilenetv2", **zoo.TEST_PARAMS["mobilenetv2"])
    model = from_proto(proto, None)
    PassManager("fuse-batchnorm,fuse-pad,fuse-activation,dce").run(model)
    before = copy(model)
    _, pairs = find_pairs(model)
    assert pairs, "expected equalizable pairs in mobilenetv2"
    assert PassManager("equalize-layers").run(model)
    feeds = zoo.make_inputs(proto, seed=0, dims={"batch": 2})
    for got, want in zip(outputs(model, feeds), outputs(before, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
