"""lower_for_onnx: every edgec op, at several opsets, with and without com.microsoft contrib ops,
matches the unfused computation in onnxruntime (rtol 1e-5)."""

from __future__ import annotations

import math
from typing import Dict, List

import numpy as np
import onnxruntime as ort
import pytest

from edgec.backends.onnx_export import to_proto
from edgec.backends.onnx_lowering import has_edgec_ops, lower_for_onnx
from edgec.ir import edgec_ops
from edgec.ir.parser import parse_model
from edgec.ir.verifier import verify

_erf = np.vectorize(math.erf)

ACTS: Dict[str, tuple] = {
    "Relu": ([], lambda y: np.maximum(y, 0)),
    "Clip": ([-0.5, 1.5], lambda y: np.clip(y, -0.5, 1.5)),
    "LeakyRelu": ([0.25], lambda y: np.where(y >= 0, y, 0.25 * y)),
    "Sigmoid": ([], lambda y: 1 / (1 + np.exp(-y))),
    "HardSigmoid": ([0.3, 0.4], lambda y: np.clip(0.3 * y + 0.4, 0, 1)),
    "HardSwish": ([], lambda y: y * np.clip(y / 6 + 0.5, 0, 1)),
    "Gelu": ([], lambda y: 0.5 * y * (1 + _erf(y / math.sqrt(2)))),
    "GeluTanh": ([], lambda y: 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))),
    "Silu": ([], lambda y: y / (1 + np.exp(-y))),
    "Tanh": ([], np.tanh),
}

PRODUCERS = {
    # op: (inputs text, input shape, output shape, attrs, base op text)
    "FusedConv": ("%x, %w, %b", "2x2x4x4", "2x3x4x4", "{pads=[1, 1, 1, 1]}", "onnx.Conv(%x, %w, %b) {pads=[1, 1, 1, 1]}",
                  "%w = const dense<3x2x3x3xf32 [{w54}]>\n  %b = const dense<3xf32 [0.1, -0.2, 0.3]>"),
    "FusedConvTranspose": ("%x, %w, %b", "1x4x3x3", "1x4x4x4", "{group=2}", "onnx.ConvTranspose(%x, %w, %b) {group=2}",
                           "%w = const dense<4x2x2x2xf32 [{w32}]>\n  %b = const dense<4xf32 [0.1, -0.2, 0.3, 0.0]>"),
    "FusedGemm": ("%x, %w, %b", "3x4", "3x2", "{transB=1, alpha=0.5}", "onnx.Gemm(%x, %w, %b) {transB=1, alpha=0.5}",
                  "%w = const dense<2x4xf32 [{w8}]>\n  %b = const dense<2xf32 [0.1, -0.2]>"),
    "FusedMatMul": ("%x, %w, %b", "2x3x4", "2x3x2", "", "onnx.Add(%mm, %b)",
                    "%w = const dense<4x2xf32 [{w8}]>\n  %b = const dense<2xf32 [0.1, -0.2]>\n  %mm = onnx.MatMul(%x, %w) : tensor<2x3x2xf32>"),
}


def _weights(n: int) -> str:
    rng = np.random.default_rng(n)
    return ", ".join(repr(float(v)) for v in rng.standard_normal(n).astype(np.float32))


def _fill(text: str) -> str:
    return text.replace("{w54}", _weights(54)).replace("{w32}", _weights(32)).replace("{w8}", _weights(8))


def _run(model, feeds) -> List[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(to_proto(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _lower_and_run(text: str, contrib: bool, feeds) -> List[np.ndarray]:
    model = parse_model(text)
    verify(model)
    assert lower_for_onnx(model, contrib_ops=contrib)
    verify(model)
    assert not has_edgec_ops(model) and "edgec" not in model.opset_imports
    return _run(model, feeds)


@pytest.mark.parametrize("contrib", [False, True])
@pytest.mark.parametrize("opset", [10, 13, 17, 20])
@pytest.mark.parametrize("op", sorted(PRODUCERS))
@pytest.mark.parametrize("act", sorted(ACTS))
def test_fused_op_lowering(act: str, op: str, opset: int, contrib: bool) -> None:
    ins, xs, ys, attrs, base, consts = PRODUCERS[op]
    consts = _fill(consts)
    params, ref = ACTS[act]
    a = dict(activation=f'"{act}"')
    if params:
        a["activation_params"] = "[" + ", ".join(repr(float(p)) for p in params) + "]"
    parts = ([attrs.strip("{}")] if attrs else []) + [f"{k}={v}" for k, v in a.items()]
    attr_text = "{" + ", ".join(parts) + "}"
    fused = f"""opset(ai.onnx={opset}, edgec=1)
graph @g(%x: tensor<{xs}xf32>) -> (%y: tensor<{ys}xf32>) {{
  {consts.split(chr(10) + '  %mm')[0]}
  %y = edgec.{op}({ins}) {attr_text} : tensor<{ys}xf32>
  return %y
}}"""
    plain = f"""opset(ai.onnx={max(opset, 11)})
graph @g(%x: tensor<{xs}xf32>) -> (%y: tensor<{ys}xf32>) {{
  {consts}
  %y = {base} : tensor<{ys}xf32>
  return %y
}}"""
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal([int(d) for d in xs.split("x")]).astype(np.float32)}
    want = ref(_run(parse_model(plain), feeds)[0].astype(np.float64)).astype(np.float32)
    got = _lower_and_run(fused, contrib, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("contrib", [False, True])
@pytest.mark.parametrize("opset", [13, 17, 18, 20])
def test_gelu_and_layernorm_lowering(opset: int, contrib: bool) -> None:
    text = f"""opset(ai.onnx={opset}, edgec=1)
graph @g(%x: tensor<2x3x4xf32>) -> (%g: tensor<2x3x4xf32>, %t: tensor<2x3x4xf32>, %l: tensor<2x3x4xf32>, %l2: tensor<2x3x4xf32>) {{
  %s = const dense<3x4xf32 [{_weights(12)}]>
  %b = const dense<3x4xf32 [{_weights(11) + ', 0.5'}]>
  %s1 = const dense<4xf32 [1.0, 2.0, 0.5, -1.0]>
  %g = edgec.Gelu(%x) : tensor<2x3x4xf32>
  %t = edgec.Gelu(%x) {{approximate="tanh"}} : tensor<2x3x4xf32>
  %l = edgec.LayerNorm(%x, %s, %b) {{axis=-2, epsilon=0.001}} : tensor<2x3x4xf32>
  %l2 = edgec.LayerNorm(%x, %s1) {{axis=2}} : tensor<2x3x4xf32>
  return %g, %t, %l, %l2
}}"""
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    got = _lower_and_run(text, contrib, {"x": x})
    m = parse_model(text)
    s, b = (m.graph.initializers[k].const.numpy() for k in ("s", "b"))
    s1 = m.graph.initializers["s1"].const.numpy()
    x64 = x.astype(np.float64)

    def ln(axes, eps):
        mu = x64.mean(axis=axes, keepdims=True)
        return (x64 - mu) / np.sqrt(((x64 - mu) ** 2).mean(axis=axes, keepdims=True) + eps)

    want = [ACTS["Gelu"][1](x64), ACTS["GeluTanh"][1](x64), ln((1, 2), 1e-3) * s + b, ln((2,), 1e-5) * s1]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.astype(np.float32), rtol=1e-5, atol=1e-5)


def test_contrib_ops_used() -> None:
    text = """opset(ai.onnx=17, edgec=1)
graph @g(%x: tensor<1x2x4x4xf32>) -> (%y: tensor<1x2x4x4xf32>) {
  %w = const dense<2x2x1x1xf32 [1.0, 2.0, 3.0, 4.0]>
  %y = edgec.FusedConv(%x, %w) {activation="LeakyRelu", activation_params=[0.1]} : tensor<1x2x4x4xf32>
  return %y
}"""
    model = parse_model(text)
    lower_for_onnx(model, contrib_ops=True)
    assert [(n.domain, n.op_type) for n in model.graph] == [("com.microsoft", "FusedConv")]
    assert model.opset_imports == {"": 17, "com.microsoft": 1}
    model = parse_model(text)
    lower_for_onnx(model)
    assert [n.op_type for n in model.graph] == ["Conv", "LeakyRelu"]


def test_no_edgec_ops_is_a_noop() -> None:
    model = parse_model("""opset(ai.onnx=17)
graph @g(%x: tensor<2xf32>) -> (%y: tensor<2xf32>) {
  %y = onnx.Relu(%x) : tensor<2xf32>
  return %y
}""")
    assert not lower_for_onnx(model)
    assert edgec_ops.DOMAIN not in model.opset_imports


# --- Attention ----------------------------------------------------------------------------------
def _attention_ref(q, k, v, mask, heads: int, scale) -> np.ndarray:
    """The edgec.Attention table of edgec_ops, in float64 numpy."""
    def split(x):
        b, s, e = x.shape
        return x.reshape(b, s, heads, e // heads).transpose(0, 2, 1, 3)

    qh, kh, vh = split(q), split(k), split(v)
    scale = 1 / math.sqrt(qh.shape[-1]) if scale is None else scale
    s = scale * (qh @ kh.transpose(0, 1, 3, 2)) + (0 if mask is None else mask)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ vh
    return o.transpose(0, 2, 1, 3).reshape(o.shape[0], o.shape[2], -1)


ATTN_MASKS = {"none": None, "bert": '"B"x1x1x"L"', "2d": '"S"x"L"', "full": '"B"x2x"S"x"L"', "rank3": '1x"S"x"L"'}


@pytest.mark.parametrize("contrib", [False, True])
@pytest.mark.parametrize("opset", [11, 17, 23])
@pytest.mark.parametrize("mask", sorted(ATTN_MASKS))
def test_attention_lowering(mask: str, opset: int, contrib: bool) -> None:
    mdims = ATTN_MASKS[mask]
    scale = None if mask == "2d" else 0.3  # no attribute: 1/sqrt(head_dim)
    attrs = "{num_heads=2" + (f", scale={scale}" if scale is not None else "") + "}"
    text = f"""opset(ai.onnx={opset}, edgec=1)
graph @g(%q: tensor<"B"x"S"x8xf32>, %k: tensor<"B"x"L"x8xf32>, %v: tensor<"B"x"L"x6xf32>{f', %m: tensor<{mdims}xf32>' if mdims else ''}) -> (%y: tensor<"B"x"S"x6xf32>) {{
  %y = edgec.Attention(%q, %k, %v{', %m' if mdims else ''}) {attrs} : tensor<"B"x"S"x6xf32>
  return %y
}}"""
    rng = np.random.default_rng(3)
    for b, s, length in ((1, 3, 3), (2, 4, 5)):  # self- and cross-attention lengths
        dims = {"B": b, "S": s, "L": length}
        feeds = {"q": rng.standard_normal((b, s, 8)), "k": rng.standard_normal((b, length, 8)),
                 "v": rng.standard_normal((b, length, 6))}
        if mdims:
            feeds["m"] = rng.standard_normal([dims.get(d.strip('"'), None) or int(d) for d in mdims.split("x")])
        feeds = {n: a.astype(np.float32) for n, a in feeds.items()}
        model = parse_model(text)
        assert lower_for_onnx(model, contrib_ops=contrib)
        verify(model)
        ops = {(n.domain, n.op_type) for n in model.graph}
        if contrib:
            assert ("com.microsoft", "MultiHeadAttention") in ops
        elif opset >= 23:
            assert ("", "Attention") in ops
        else:
            assert ("", "Softmax") in ops
        got = _run(model, feeds)[0]
        want = _attention_ref(*(feeds[n].astype(np.float64) for n in "qkv"),
                              feeds["m"].astype(np.float64) if mdims else None, 2, scale)
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-5, atol=1e-6)
