"""Quantization arithmetic (edgec.quant.scheme) and the Q/DQ helpers against onnxruntime's kernels."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import EdgecError
from edgec.ir import DType
from edgec.quant import scheme
from edgec.quant.scheme import (activation_params, bias_params, dequantize_array, quant_range, quantize_array,
                                weight_params)


def _ort_quantize(x, scale, zp, axis=None, block_size=0, opset=21, dequantize=False):
    """ORT's QuantizeLinear of ``x`` (followed by DequantizeLinear: ORT cannot return int4 arrays)."""
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if block_size:
        attrs["block_size"] = block_size
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs)]
    nodes.append(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs) if dequantize
                 else helper.make_node("Identity", ["q"], ["y"]))
    zt = numpy_helper.from_array(np.asarray(zp), "z")
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT if dequantize else zt.data_type,
                                                         x.shape)],
                          [numpy_helper.from_array(np.asarray(scale, np.float32), "s"), zt])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_ranges():
    assert quant_range(DType.INT8) == (-128, 127)
    assert quant_range("int8", narrow=True) == (-127, 127)
    assert quant_range("uint8") == (0, 255)
    assert quant_range(DType.INT4) == (-8, 7) and quant_range(DType.UINT4) == (0, 15)


def test_round_half_to_even_and_saturation_match_ort():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 1000.0, -1000.0, 0.49999997], np.float32)
    q = quantize_array(x, np.float32(1.0), np.int8(0), DType.INT8)
    np.testing.assert_array_equal(q, [0, 2, 2, 0, -2, -2, 127, -128, 0])
    np.testing.assert_array_equal(q, _ort_quantize(x, np.float32(1.0), np.int8(0)))
    qu = quantize_array(x, np.float32(0.5), np.uint8(10), DType.UINT8)
    np.testing.assert_array_equal(qu, _ort_quantize(x, np.float32(0.5), np.uint8(10)))


def test_activation_params_include_zero_and_exact_zero_point():
    s, z = activation_params(0.5, 6.0, DType.INT8, False)  # range extended to [0, 6]
    assert z.dtype == np.int8 and int(z) == -128 and np.isclose(float(s), 6.0 / 255)
    s, z = activation_params(-1.0, 3.0, DType.UINT8, False)
    assert quantize_array(np.float32(0.0), s, z, DType.UINT8) == z  # real 0 is exact
    assert dequantize_array(z, s, z) == 0.0
    s, z = activation_params(-2.0, 1.0, DType.INT8, True)
    assert int(z) == 0 and np.isclose(float(s), 2.0 / 127)
    s, z = activation_params(-2.0, 1.0, DType.UINT8, True)
    assert int(z) == 128


def test_zero_range_gets_tiny_scale_and_warns():
    got = []
    s, z = activation_params(0.0, 0.0, DType.INT8, False, name="t", warn=got.append)
    assert float(s) == np.float32(scheme.TINY_SCALE) and float(s) > 0 and got and "'t'" in got[0]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        activation_params(0.0, 0.0, DType.UINT8, False)
    assert any(issubclass(x.category, scheme.QuantWarning) for x in w)


def test_weight_params_per_channel_zero_channel_and_per_tensor():
    w = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    w[2] = 0.0
    s, z = weight_params(w, 0)
    assert s.shape == (4,) and z.dtype == np.int8 and np.all(z == 0)
    assert s[2] == 1.0 and np.all(np.isfinite(s)) and np.all(s > 0)
    np.testing.assert_allclose(s[0], np.abs(w[0]).max() / 127, rtol=1e-6)
    q = quantize_array(w, s, z, DType.INT8, axis=0)
    assert q.min() >= -127 and np.all(q[2] == 0)
    np.testing.assert_allclose(dequantize_array(q, s, z, axis=0), w, atol=float(s[[0, 1, 3]].max()) / 2 + 1e-7)
    s1, z1 = weight_params(w, None)
    assert s1.shape == () and np.isclose(float(s1), np.abs(w).max() / 127)
    st, _ = weight_params(np.zeros((3, 3), np.float32), None)
    assert float(st) == 1.0
    sr, _ = weight_params(w, 0, reduce_range=True)
    np.testing.assert_allclose(sr[0], np.abs(w[0]).max() / 63, rtol=1e-6)


def test_weight_params_asymmetric_uint8():
    w = np.array([[0.0, 1.0, 2.0], [-1.0, -0.5, 0.5]], np.float32)
    s, z = weight_params(w, 0, DType.UINT8, symmetric=False)
    q = quantize_array(w, s, z, DType.UINT8, axis=0)
    np.testing.assert_allclose(dequantize_array(q, s, z, axis=0), w, atol=float(s.max()) / 2 + 1e-7)


def test_nan_or_inf_weights_raise_naming_the_tensor():
    w = np.ones((2, 2), np.float32)
    w[1, 1] = np.nan
    with pytest.raises(EdgecError, match="conv1.weight"):
        weight_params(w, 0, name="conv1.weight")
    w[1, 1] = np.inf
    with pytest.raises(EdgecError, match="NaN/Inf"):
        weight_params(w, 0)


def test_bias_int32_and_overflow_fix():
    b = np.array([0.5, -0.25, 1e4], np.float32)
    s_w = np.array([0.01, 0.02, 1e-9], np.float32)
    r = bias_params(b, 0.05, s_w)
    assert r.values.dtype == np.int32 and r.adjusted == [2]
    assert r.weight_scale[0] == s_w[0] and r.weight_scale[2] > s_w[2]
    assert np.all(np.abs(r.values.astype(np.int64)) <= 2**31 - 1)
    np.testing.assert_allclose(r.scale, np.float32(0.05) * r.weight_scale, rtol=1e-6)
    np.testing.assert_allclose(r.values * r.scale, b, rtol=1e-5, atol=1e-6)
    ok = bias_params(b[:2], 0.05, s_w[:2])
    assert ok.adjusted == [] and list(ok.values) == [1000, -250]
    per_tensor = bias_params(b, 0.05, np.float32(1e-9))
    assert per_tensor.adjusted == [0] and per_tensor.weight_scale.shape == ()


@pytest.mark.parametrize("dtype", [DType.INT4, DType.INT8, DType.UINT4])
def test_blocked_quantization_matches_ort(dtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((70, 6)).astype(np.float32)  # K=70: last block is partial
    sym = dtype != DType.UINT4
    s, z = weight_params(w, 0, dtype, symmetric=sym, block_size=32)
    assert s.shape == (3, 6) and z.shape == (3, 6) and z.dtype == dtype.numpy
    q = quantize_array(w, s, z, dtype, axis=0, block_size=32)
    assert q.dtype == dtype.numpy
    deq = dequantize_array(q, s, z, axis=0, block_size=32)
    np.testing.assert_array_equal(deq, _ort_quantize(w, s, z, axis=0, block_size=32, dequantize=True))
    err = np.abs(deq - w)
    assert np.all(err <= np.repeat(s, 32, axis=0)[:70] / 2 + 1e-6)


def test_qdq_helpers_type_values_and_need_opsets():
    from edgec.ir import Graph, Model, Value
    from edgec.ir.types import Shape, TensorType
    from edgec.quant.qdq import insert_qdq, require_opset, required_opset

    assert required_opset("int8") == 10 and required_opset("int8", axis=0) == 13
    assert required_opset("int4", axis=0, block_size=32) == 21
    x = Value("x", TensorType(DType.FLOAT, Shape((2, 3))))
    g = Graph("g", [x])
    from edgec.ir import Node
    relu = Node("Relu", [x], ["y"])
    g.append(relu)
    relu.outputs[0].type = x.type
    g.add_output(relu.outputs[0])
    m = Model(g, {"": 11})
    out = insert_qdq(g, x, np.float32(0.1), np.int8(3), DType.INT8)
    assert relu.input(0) is out and out.producer.op_type == "DequantizeLinear"
    qv = out.producer.input(0)
    assert qv.dtype == DType.INT8 and qv.type.quant.zero_point == 3 and qv.type.shape.dims == (2, 3)
    with pytest.raises(EdgecError, match="opset >= 13"):
        require_opset(m, 13, "per-channel")
    from edgec.ir.verifier import verify
    verify(m)


@pytest.mark.parametrize("axis,block_size,dtype,sym", [(0, 32, DType.INT4, True), (1, 32, DType.UINT4, False),
                                                       (0, 0, DType.INT8, True), (None, 0, DType.UINT4, True)])
def test_search_weight_params_lowers_error(axis, block_size, dtype, sym):
    rng = np.random.default_rng(3)
    w = (rng.standard_t(3, (70, 96)) * 0.1).astype(np.float32)  # heavy tails: clipping pays
    s0, z0 = weight_params(w, axis, dtype, sym, block_size=block_size)
    s1, z1 = scheme.search_weight_params(w, axis, dtype, sym, block_size=block_size)
    assert s1.shape == s0.shape and z1.shape == z0.shape and z1.dtype == z0.dtype and s1.dtype == np.float32

    def err(s, z):
        q = quantize_array(w, s, z, dtype, axis, block_size)
        return float(np.sum((dequantize_array(q, s, z, axis, block_size) - w) ** 2))

    assert err(s1, z1) <= err(s0, z0)
    if dtype in (DType.INT4, DType.UINT4):
        assert err(s1, z1) < 0.99 * err(s0, z0)  # 16 levels: clipping pays


def test_search_weight_params_zero_block_and_nan():
    w = np.zeros((4, 64), np.float32)
    w[0, :32] = np.linspace(-1, 1, 32)
    s, z = scheme.search_weight_params(w, 1, DType.INT4, True, block_size=32)
    assert s.shape == (4, 2) and np.all(s[1:] == 1.0) and s[0, 0] < 1.0
    w[2, 3] = np.nan
    with pytest.raises(EdgecError, match="NaN"):
        scheme.search_weight_params(w, 1, DType.INT4, block_size=32, name="t")
