"""correct-bias: the expected output error of quantized weights is subtracted from the bias."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import edgec.passes  # noqa: E402,F401 - registers the passes
from edgec.backends.onnx_export import to_proto  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402
from edgec.frontend.onnx_import import from_proto  # noqa: E402
from edgec.ir import Model  # noqa: E402
from edgec.passmanager import PassContext, PassManager  # noqa: E402
from edgec.quant import collect  # noqa: E402
from edgec.quant.data import load_calibration  # noqa: E402
from edgec.quant.scheme import dequantize_array, quantize_array, weight_params  # noqa: E402
from edgec.rewrite import constant_value  # noqa: E402

LAYERS = {"Conv": 0, "FusedConv": 0, "Gemm": None, "FusedGemm": None, "MatMul": 1, "FusedMatMul": 1}


def build(nodes: Sequence[onnx.NodeProto], inits: Dict[str, np.ndarray], x_shape: Sequence, opset: int = 17) -> Model:
    """An IR model from ONNX nodes, float32 initializers and one float input ``x`` (output ``y``)."""
    graph = helper.make_graph(
        list(nodes), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), None)


def copy(model: Model) -> Model:
    return from_proto(to_proto(model), None, check=False)


def run_model(model: Model, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    """The graph outputs of ``model`` (onnxruntime; edgec ops lowered on a copy)."""
    got = collect.run_model(model, feeds)
    return [got[v.name] for v in model.graph.outputs]


def biased_inputs(shape: Sequence[int], means: Sequence[float], seed: int, axis: int = 1) -> np.ndarray:
    """Standard normal samples plus a nonzero mean per channel along ``axis``."""
    rng = np.random.default_rng(seed)
    view = [1] * len(shape)
    view[axis] = -1
    return (rng.standard_normal(shape) + np.asarray(means).reshape(view)).astype(np.float32)


def calibration(model: Model, x: np.ndarray, tmp_path: Path):
    path = tmp_path / "calib.npz"
    np.savez(path, x=x)
    return load_calibration(str(path), model)


def correct(model: Model, data, options: str = "") -> Tuple[Model, PassContext]:
    out = copy(model)
    ctx = PassContext(resources={"calibration": data})
    assert PassManager("correct-bias" + options, ctx=ctx).run(out)
    return out, ctx


def weight_axis(node) -> int:
    if node.op_type in ("Gemm", "FusedGemm"):
        return 0 if node.attr("transB", 0) else 1
    return LAYERS[node.op_type]


def quantize_weights(model: Model, per_channel: bool = True, dtype: str = "int8") -> Model:
    """The model with every layer's weight replaced by dequantize(quantize(w)) (symmetric)."""
    q = copy(model)
    for n in q.graph:
        if n.op_type in LAYERS:
            w = constant_value(n.input(1))
            axis = weight_axis(n) if per_channel else None
            s, z = weight_params(w, axis, dtype)
            wq = dequantize_array(quantize_array(w, s, z, dtype, axis), s, z, axis)
            n.set_input(1, q.graph.add_constant(wq, "wq"))
    return q


def mean_error(model: Model, reference: Model, x: np.ndarray, axis: int = 1, **quant: object) -> float:
    """Max over output channels of |mean(y_quantized - y_float)|, weights of ``model`` quantized."""
    want = run_model(reference, {"x": x})[0]
    got = run_model(quantize_weights(model, **quant), {"x": x})[0]
    d = np.moveaxis(got.astype(np.float64) - want, axis, 0).reshape(got.shape[axis], -1).mean(axis=1)
    return float(np.abs(d).max())


def bias_of(model: Model, op: str) -> np.ndarray:
    for n in model.graph:
        if n.op_type == op:
            return constant_value(n.input(2))
    raise AssertionError(op)


def conv_model(rng: np.random.Generator, pads: Optional[Sequence[int]] = None) -> Model:
    attrs = {"pads": list(pads)} if pads else {}
    return build([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)],
                 {"w": rng.standard_normal((8, 4, 3, 3)) * 0.3, "b": rng.standard_normal(8)}, ["N", 4, 12, 12])


MEANS = [3.0, -2.0, 5.0, 1.0]


def test_conv_mean_error_drops(tmp_path: Path) -> None:
    model = conv_model(np.random.default_rng(0))
    data = calibration(model, biased_inputs((64, 4, 12, 12), MEANS, seed=1), tmp_path)
    held_out = biased_inputs((32, 4, 12, 12), MEANS, seed=2)
    fixed, ctx = correct(model, data)
    before, after = mean_error(model, model, held_out), mean_error(fixed, model, held_out)
    assert after < before / 10, (before, after)
    report = ctx.reports["bias-correction"]
    assert report["empirical"] is False and len(report["layers"]) == 1
    assert list(report["layers"].values())[0] == pytest.approx(before, rel=0.5)
    # the float model itself moves only by the correction
    y0 = run_model(model, {"x": held_out})[0]
    y1 = run_model(fixed, {"x": held_out})[0]
    assert np.abs(y1 - y0).max() <= 1.01 * max(report["layers"].values()) + 1e-6

    # empirical mode, padded conv: also much better
    model = conv_model(np.random.default_rng(0), pads=[1, 1, 1, 1])
    for opts in ("", "{empirical=true}"):
        fixed, _ = correct(model, data, opts)
        before, after = mean_error(model, model, held_out), mean_error(fixed, model, held_out)
        assert after < before / 4, (opts, before, after)

    # per-tensor int4 weights: the options reach the simulated quantization
    fixed, _ = correct(model, data, "{per-channel=false,bits=4}")
    before = mean_error(model, model, held_out, per_channel=False, dtype="int4")
    after = mean_error(fixed, model, held_out, per_channel=False, dtype="int4")
    assert after < before / 4, (before, after)


def test_exclude_leaves_the_named_layer_alone(tmp_path: Path) -> None:
    """Layers the quantizer keeps float (its ``exclude``, the --max-drop search) must keep their bias."""
    model = conv_model(np.random.default_rng(0))
    data = calibration(model, biased_inputs((64, 4, 12, 12), MEANS, seed=1), tmp_path)
    name = next(n.name for n in model.graph if n.op_type in LAYERS)
    out = copy(model)
    ctx = PassContext(resources={"calibration": data})
    assert not PassManager("correct-bias{exclude=" + name + "}", ctx=ctx).run(out)  # nothing else to correct
    biases = lambda m: [constant_value(n.input(2)) for n in m.graph if n.op_type in LAYERS]  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(biases(out), biases(model)))
    fixed, _ = correct(model, data, "{exclude=some/other/layer}")
    assert not all(np.array_equal(a, b) for a, b in zip(biases(fixed), biases(model)))


def test_empirical_agrees_with_analytic_for_linear_layers(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    means = rng.uniform(-4, 4, 16)
    # Gemm with alpha/beta and transB, then a bias-less MatMul on its (rank-2) output
    model = build([
        helper.make_node("Gemm", ["x", "w1", "c1"], ["h"], alpha=0.5, beta=2.0, transB=1),
        helper.make_node("MatMul", ["h", "w2"], ["y"]),
    ], {"w1": rng.standard_normal((8, 16)), "c1": rng.standard_normal(8), "w2": rng.standard_normal((8, 6))}, ["N", 16])
    x = biased_inputs((48, 16), means, seed=4)
    data = calibration(model, x, tmp_path)
    analytic, ctx_a = correct(model, data)
    empirical, ctx_e = correct(model, data, "{empirical=true}")
    assert [n.op_type for n in analytic.graph] == ["Gemm", "MatMul", "Add"]
    np.testing.assert_allclose(bias_of(empirical, "Gemm"), bias_of(analytic, "Gemm"), rtol=1e-5, atol=1e-6)
    # the MatMul's input differs by the upstream quantization in empirical mode: close, not equal
    la, le = ctx_a.reports["bias-correction"]["layers"], ctx_e.reports["bias-correction"]["layers"]
    assert la.keys() == le.keys() and len(la) == 2
    for k in la:
        assert le[k] == pytest.approx(la[k], rel=0.3, abs=1e-4)
    held_out = biased_inputs((32, 16), means, seed=5)
    base = mean_error(model, model, held_out)
    assert mean_error(analytic, model, held_out) < base / 3
    assert mean_error(empirical, model, held_out) < base / 3


def test_fused_relu_chain_empirical(tmp_path: Path) -> None:
    """FusedConv(Relu) -> Conv: corrections are pre-activation; both modes reduce the output bias."""
    rng = np.random.default_rng(6)
    model = build([
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
    ], {"w1": rng.standard_normal((8, 4, 3, 3)) * 0.3, "b1": rng.standard_normal(8),
        "w2": rng.standard_normal((6, 8, 1, 1))}, ["N", 4, 10, 10])
    PassManager("fuse-activation").run(model)
    assert [n.op_type for n in model.graph] == ["FusedConv", "Conv"]
    data = calibration(model, biased_inputs((32, 4, 10, 10), MEANS, seed=7), tmp_path)
    held_out = biased_inputs((32, 4, 10, 10), MEANS, seed=8)
    base = mean_error(model, model, held_out)
    for opts in ("", "{empirical=true}"):
        fixed, ctx = correct(model, data, opts)
        assert [n.op_type for n in fixed.graph] == ["FusedConv", "Conv"]  # the Conv got a bias
        assert fixed.graph.nodes[1].input(2) is not None
        assert mean_error(fixed, model, held_out) < base / 2, opts


def test_needs_calibration_and_skips_dynamic_weights() -> None:
    model = conv_model(np.random.default_rng(0))
    with pytest.raises(EdgecError, match="calibration"):
        PassManager("correct-bias").run(copy(model))
    # a MatMul of two activations has no constant weight: nothing to do
    m = build([helper.make_node("MatMul", ["x", "x"], ["y"])], {}, [4, 4])
    ctx = PassContext(resources={"calibration": object()})
    assert not PassManager("correct-bias", ctx=ctx).run(m)


@pytest.mark.parametrize("empirical", [False, True])
def test_zoo_mobilenetv2_runs(empirical: bool, tmp_path: Path) -> None:
    import zoo

    proto = zoo.get("mobilenetv2", **zoo.TEST_PARAMS["mobilenetv2"])
    model = from_proto(proto, None)
    PassManager("fuse-batchnorm,fuse-pad,fuse-activation,dce").run(model)
    x = zoo.make_inputs(proto, seed=0, dims={"batch": 16})
    (name,) = x
    path = tmp_path / "calib.npz"
    np.savez(path, **x)
    data = load_calibration(str(path), model)
    fixed, ctx = correct(model, data, "{empirical=true}" if empirical else "")
    layers = ctx.reports["bias-correction"]["layers"]
    assert len(layers) >= 30
    feeds = zoo.make_inputs(proto, seed=1, dims={"batch": 4})
    want = run_model(model, feeds)[0]
    got = run_model(fixed, feeds)[0]
    assert np.all(np.isfinite(got)) and got.shape == want.shape
    # the correction undoes most of the output shift of quantized weights
    q_before = run_model(quantize_weights(model), feeds)[0]
    q_after = run_model(quantize_weights(fixed), feeds)[0]
    assert np.abs((q_after - want).mean(axis=0)).mean() < np.abs((q_before - want).mean(axis=0)).mean()
