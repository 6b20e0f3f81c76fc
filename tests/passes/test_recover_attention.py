"""recover-patterns: multi-head attention -> edgec.Attention (IR cases and the zoo transformers)."""

from __future__ import annotations

from typing import List

import numpy as np
import onnxruntime as ort
import pytest

import edgec.passes  # noqa: F401 - registers the passes
import zoo
from edgec.backends.onnx_export import to_proto
from edgec.backends.onnx_lowering import lower_for_onnx
from edgec.frontend.onnx_import import from_proto
from edgec.ir.parser import parse_model
from edgec.ir.printer import print_model
from edgec.passmanager import PassManager
from passtest import check_pass, op_types

P = "recover-patterns"
TOL = dict(rtol=1e-5, atol=1e-6)


def _bert(*, mask: bool = True, scale: str = "div", k_perm: str = "direct", softmax: str = "{axis=-1}",
          out_perm: str = "[0, 2, 1, 3]", k_split: str = "[0, 0, 2, 4]", k_hidden: int = 8, opset: int = 17,
          extra_out: str = "") -> str:
    """BERT-style attention over projected q/k/v [B,S,8], 2 heads of 4 (as the TorchScript exporter emits)."""
    if k_perm == "direct":
        kt = '%kt = onnx.Transpose(%kr) {perm=[0, 2, 3, 1]} : tensor<"B"x2x4x"S"xf32>'
    else:  # split like Q, then swap the last two axes
        kt = ('%kh = onnx.Transpose(%kr) {perm=[0, 2, 1, 3]} : tensor<"B"x2x"S"x4xf32>\n'
              '  %kt = onnx.Transpose(%kh) {perm=[0, 1, 3, 2]} : tensor<"B"x2x4x"S"xf32>')
    if scale == "div":
        scores = '%s0 = onnx.MatMul(%qh, %kt) : tensor<"B"x2x"S"x"S"xf32>\n  %s = onnx.Div(%s0, %c) : tensor<"B"x2x"S"x"S"xf32>'
        c = "2.0"
    elif scale == "q_mul":
        scores = ('%qs = onnx.Mul(%c, %qh) : tensor<"B"x2x"S"x4xf32>\n'
                  '  %s = onnx.MatMul(%qs, %kt) : tensor<"B"x2x"S"x"S"xf32>')
        c = "0.5"
    else:  # scale after the mask: the mask would be scaled too
        scores = '%s = onnx.MatMul(%qh, %kt) : tensor<"B"x2x"S"x"S"xf32>'
        c = "2.0"
    if mask and scale == "after_mask":
        masked = ('%sm0 = onnx.Add(%s, %m) : tensor<"B"x2x"S"x"S"xf32>\n'
                  '  %sm = onnx.Div(%sm0, %c) : tensor<"B"x2x"S"x"S"xf32>')
    elif mask:
        masked = '%sm = onnx.Add(%s, %m) : tensor<"B"x2x"S"x"S"xf32>'
    else:
        masked = ""
    kh_ = 2 if k_split == "[0, 0, 2, 4]" else 1
    ot_dims = '"B"x"S"x2x4' if out_perm == "[0, 2, 1, 3]" else '"B"x"S"x4x2'
    return f"""opset(ai.onnx={opset})
graph @g(%q: tensor<"B"x"S"x8xf32>, %k: tensor<"B"x"S"x{k_hidden}xf32>, %v: tensor<"B"x"S"x8xf32>, %m: tensor<"B"x1x1x"S"xf32>) -> (%y: tensor<"B"x"S"x8xf32>{extra_out}) {{
  %split = const dense<4xi64 [0, 0, 2, 4]>
  %ksplit = const dense<4xi64 {k_split}>
  %merge = const dense<3xi64 [0, 0, 8]>
  %c = const dense<f32 [{c}]>
  %qr = onnx.Reshape(%q, %split) : tensor<"B"x"S"x2x4xf32>
  %qh = onnx.Transpose(%qr) {{perm=[0, 2, 1, 3]}} : tensor<"B"x2x"S"x4xf32>
  %kr = onnx.Reshape(%k, %ksplit) : tensor<"B"x"S"x{kh_}x4xf32>
  {kt.replace('x2x4x', f'x{kh_}x4x').replace('x2x"S"x4', f'x{kh_}x"S"x4')}
  %vr = onnx.Reshape(%v, %split) : tensor<"B"x"S"x2x4xf32>
  %vh = onnx.Transpose(%vr) {{perm=[0, 2, 1, 3]}} : tensor<"B"x2x"S"x4xf32>
  {scores}
  {masked}
  %p = onnx.Softmax({'%sm' if mask else '%s'}) {softmax} : tensor<"B"x2x"S"x"S"xf32>
  %o = onnx.MatMul(%p, %vh) : tensor<"B"x2x"S"x4xf32>
  %ot = onnx.Transpose(%o) {{perm={out_perm}}} : tensor<{ot_dims}xf32>
  %y = onnx.Reshape(%ot, %merge) : tensor<"B"x"S"x8xf32>
  return %y{', %p' if extra_out else ''}
}}"""


def _expected(ins: str, scale: float) -> str:
    return f"""opset(ai.onnx=17, edgec=1)
graph @g(%q: tensor<"B"x"S"x8xf32>, %k: tensor<"B"x"S"x8xf32>, %v: tensor<"B"x"S"x8xf32>, %m: tensor<"B"x1x1x"S"xf32>) -> (%y: tensor<"B"x"S"x8xf32>) {{
  %y = edgec.Attention({ins}) {{num_heads=2, scale={scale}}} : tensor<"B"x"S"x8xf32>
  return %y
}}"""


def test_bert_with_mask() -> None:
    check_pass(_bert(), P, _expected("%q, %k, %v, %m", 0.5), **TOL)


def test_bert_without_mask_k_transposed_twice() -> None:
    check_pass(_bert(mask=False, k_perm="twice"), P, _expected("%q, %k, %v", 0.5), **TOL)


def test_bert_scale_on_q() -> None:
    check_pass(_bert(scale="q_mul"), P, _expected("%q, %k, %v, %m", 0.5), **TOL)


def test_bert_opset11_softmax_last_axis() -> None:
    model = check_pass(_bert(opset=11, softmax="{axis=3}"), P, **TOL)
    assert op_types(model) == ["edgec.Attention"]


VIT = """opset(ai.onnx=17)
graph @g(%x: tensor<"B"x3x8xf32>) -> (%y: tensor<"B*3"x8xf32>) {
  %w = const dense<8x24xf32 [W]>
  %t1 = const dense<3xi64 [3, -1, 4]>
  %t2 = const dense<4xi64 [-1, 2, 3, 4]>
  %merge = const dense<2xi64 [-1, 8]>
  %c = const dense<1xf32 [0.70710677]>
  %i0 = const dense<i64 [0]>
  %i1 = const dense<i64 [1]>
  %i2 = const dense<i64 [2]>
  %pk = const dense<4xi64 [0, 0, 3, 8]>
  %sb = onnx.Transpose(%x) {perm=[1, 0, 2]} : tensor<3x"B"x8xf32>
  %qkv = onnx.MatMul(%sb, %w) : tensor<3x"B"x24xf32>
  %qkv4 = onnx.Reshape(%qkv, %pk) : tensor<3x"B"x3x8xf32>
  %qkvt = onnx.Transpose(%qkv4) {perm=[2, 0, 1, 3]} : tensor<3x3x"B"x8xf32>
  %q = onnx.Gather(%qkvt, %i0) {axis=0} : tensor<3x"B"x8xf32>
  %k = onnx.Gather(%qkvt, %i1) {axis=0} : tensor<3x"B"x8xf32>
  %v = onnx.Gather(%qkvt, %i2) {axis=0} : tensor<3x"B"x8xf32>
  %q3 = onnx.Reshape(%q, %t1) : tensor<3x"B*2"x4xf32>
  %q3t = onnx.Transpose(%q3) {perm=[1, 0, 2]} : tensor<"B*2"x3x4xf32>
  %qh = onnx.Reshape(%q3t, %t2) : tensor<"B"x2x3x4xf32>
  %k3 = onnx.Reshape(%k, %t1) : tensor<3x"B*2"x4xf32>
  %k3t = onnx.Transpose(%k3) {perm=[1, 0, 2]} : tensor<"B*2"x3x4xf32>
  %kh = onnx.Reshape(%k3t, %t2) : tensor<"B"x2x3x4xf32>
  %v3 = onnx.Reshape(%v, %t1) : tensor<3x"B*2"x4xf32>
  %v3t = onnx.Transpose(%v3) {perm=[1, 0, 2]} : tensor<"B*2"x3x4xf32>
  %vh = onnx.Reshape(%v3t, %t2) : tensor<"B"x2x3x4xf32>
  %kt = onnx.Transpose(%kh) {perm=[0, 1, 3, 2]} : tensor<"B"x2x4x3xf32>
  %qs = onnx.Mul(%qh, %c) : tensor<"B"x2x3x4xf32>
  %ks = onnx.Mul(%kt, %c) : tensor<"B"x2x4x3xf32>
  %s = onnx.MatMul(%qs, %ks) : tensor<"B"x2x3x3xf32>
  %p = onnx.Softmax(%s) {axis=-1} : tensor<"B"x2x3x3xf32>
  %o = onnx.MatMul(%p, %vh) : tensor<"B"x2x3x4xf32>
  %ot = onnx.Transpose(%o) {perm=[2, 0, 1, 3]} : tensor<3x"B"x2x4xf32>
  %y = onnx.Reshape(%ot, %merge) : tensor<"B*3"x8xf32>
  return %y
}""".replace("W", ", ".join(repr(float(x)) for x in np.random.default_rng(0).standard_normal(192).astype(np.float32)))


def test_vit_multihead_attention_seq_first() -> None:
    """nn.MultiheadAttention (SDPA path): packed in-projection, [S,B*H,D] splits, sqrt(scale) on Q and K."""
    model = check_pass(VIT, P, **TOL)
    att = [n for n in model.graph if n.op_type == "Attention"]
    assert len(att) == 1 and att[0].attr("num_heads") == 2
    assert abs(att[0].attr("scale") - 0.5) < 1e-6
    assert op_types(model)[-4:] == ["Transpose", "edgec.Attention", "Transpose", "Reshape"]
    assert "Softmax" not in op_types(model)


MHA3 = """opset(ai.onnx=17)
graph @g(%q: tensor<3x"B"x8xf32>, %k: tensor<5x"B"x8xf32>, %v: tensor<5x"B"x8xf32>, %m: tensor<3x5xf32>) -> (%y: tensor<3x"B"x8xf32>) {
  %t = const dense<3xi64 [0, -1, 4]>
  %merge = const dense<3xi64 [3, -1, 8]>
  %c = const dense<f32 [0.5]>
  %q3 = onnx.Reshape(%q, %t) : tensor<3x"B*2"x4xf32>
  %qh = onnx.Transpose(%q3) {perm=[1, 0, 2]} : tensor<"B*2"x3x4xf32>
  %k3 = onnx.Reshape(%k, %t) : tensor<5x"B*2"x4xf32>
  %kt = onnx.Transpose(%k3) {perm=[1, 2, 0]} : tensor<"B*2"x4x5xf32>
  %v3 = onnx.Reshape(%v, %t) : tensor<5x"B*2"x4xf32>
  %vh = onnx.Transpose(%v3) {perm=[1, 0, 2]} : tensor<"B*2"x5x4xf32>
  %qs = onnx.Mul(%qh, %c) : tensor<"B*2"x3x4xf32>
  %s = onnx.MatMul(%qs, %kt) : tensor<"B*2"x3x5xf32>
  %sm = onnx.Add(%m, %s) : tensor<"B*2"x3x5xf32>
  %p = onnx.Softmax(%sm) {axis=2} : tensor<"B*2"x3x5xf32>
  %o = onnx.MatMul(%p, %vh) : tensor<"B*2"x3x4xf32>
  %ot = onnx.Transpose(%o) {perm=[1, 0, 2]} : tensor<3x"B*2"x4xf32>
  %y = onnx.Reshape(%ot, %merge) : tensor<3x"B"x8xf32>
  return %y
}"""


def test_mha_need_weights_3d_heads_cross_attention() -> None:
    """nn.MultiheadAttention (need_weights path): 3-D [B*H,S,D] heads, 2-D mask, Sq != Sk."""
    model = check_pass(MHA3, P, **TOL)
    assert op_types(model) == ["Transpose", "Transpose", "Transpose", "edgec.Attention", "Transpose"]


DYNAMIC = """opset(ai.onnx=17)
graph @g(%q: tensor<"B"x"S"x8xf32>, %k: tensor<"B"x"S"x8xf32>, %v: tensor<"B"x"S"x8xf32>) -> (%y: tensor<"B"x"S"x8xf32>) {
  %i0 = const dense<1xi64 [0]>
  %i1 = const dense<1xi64 [1]>
  %hd = const dense<2xi64 [2, 4]>
  %e = const dense<1xi64 [8]>
  %c = const dense<f32 [2.0]>
  %shq = onnx.Shape(%q) : tensor<3xi64>
  %bq = onnx.Gather(%shq, %i0) {axis=0} : tensor<1xi64>
  %sq = onnx.Gather(%shq, %i1) {axis=0} : tensor<1xi64>
  %split = onnx.Concat(%bq, %sq, %hd) {axis=0} : tensor<4xi64>
  %qr = onnx.Reshape(%q, %split) : tensor<"B"x"S"x2x4xf32>
  %qh = onnx.Transpose(%qr) {perm=[0, 2, 1, 3]} : tensor<"B"x2x"S"x4xf32>
  %kr = onnx.Reshape(%k, %split) : tensor<"B"x"S"x2x4xf32>
  %kt = onnx.Transpose(%kr) {perm=[0, 2, 3, 1]} : tensor<"B"x2x4x"S"xf32>
  %vr = onnx.Reshape(%v, %split) : tensor<"B"x"S"x2x4xf32>
  %vh = onnx.Transpose(%vr) {perm=[0, 2, 1, 3]} : tensor<"B"x2x"S"x4xf32>
  %s0 = onnx.MatMul(%qh, %kt) : tensor<"B"x2x"S"x"S"xf32>
  %s = onnx.Div(%s0, %c) : tensor<"B"x2x"S"x"S"xf32>
  %p = onnx.Softmax(%s) {axis=-1} : tensor<"B"x2x"S"x"S"xf32>
  %o = onnx.MatMul(%p, %vh) : tensor<"B"x2x"S"x4xf32>
  %ot = onnx.Transpose(%o) {perm=[0, 2, 1, 3]} : tensor<"B"x"S"x2x4xf32>
  %sho = onnx.Shape(%ot) : tensor<4xi64>
  %bo = onnx.Gather(%sho, %i0) {axis=0} : tensor<1xi64>
  %so = onnx.Gather(%sho, %i1) {axis=0} : tensor<1xi64>
  %merge = onnx.Concat(%bo, %so, %e) {axis=0} : tensor<3xi64>
  %y = onnx.Reshape(%ot, %merge) : tensor<"B"x"S"x8xf32>
  return %y
}"""


def test_dynamic_shape_chains() -> None:
    """Reshape targets from Shape/Gather/Concat chains, one reading an interior value (it dies too)."""
    model = check_pass(DYNAMIC, P, **TOL)
    assert op_types(model) == ["edgec.Attention"]


# --- must not fire ------------------------------------------------------------------------------
NOT_FIRE = {
    "merge_perm": dict(out_perm="[0, 2, 3, 1]"),          # heads merged in the wrong order
    "softmax_axis": dict(softmax="{axis=2}"),             # softmax over the query axis
    "softmax_opset11_default": dict(opset=11, softmax=""),  # axis 1 flattens [H,S,S]: not last-axis
    "shared_kv_head": dict(k_split="[0, 0, 1, 4]", k_hidden=4),  # K has 1 head broadcast to 2 (MQA)
    "scale_after_mask": dict(scale="after_mask"),         # (s + m) / c scales the mask as well
    "probs_used_elsewhere": dict(extra_out=', %p: tensor<"B"x2x"S"x"S"xf32>'),
}


@pytest.mark.parametrize("case", sorted(NOT_FIRE))
def test_must_not_fire(case: str) -> None:
    check_pass(_bert(**NOT_FIRE[case]), P, fires=False)


# --- zoo transformers ---------------------------------------------------------------------------
PIPELINE = ("infer-shapes,lift-constants,repeat(fold-constants,simplify-shapes,eliminate-noops,merge-shape-ops,cse,dce),"
            "recover-patterns")

ZOO = {
    # name, params, pipeline, batch/seq dims to run
    "bert": ("bert_encoder", zoo.TEST_PARAMS["bert_encoder"], PIPELINE),
    "bert_raw": ("bert_encoder", zoo.TEST_PARAMS["bert_encoder"], "recover-patterns,dce"),
    "vit": ("vit", zoo.TEST_PARAMS["vit"], PIPELINE),
    "vit_10_tokens": ("vit", {**zoo.TEST_PARAMS["vit"], "image_size": 24}, PIPELINE),
}


def _run(proto, feeds) -> List[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("key", sorted(ZOO))
def test_zoo_attention(key: str) -> None:
    name, params, pipeline = ZOO[key]
    proto = zoo.get(name, **params)
    model = from_proto(proto, None)
    PassManager(pipeline).run(model)
    att = [n for n in model.graph if n.op_type == "Attention" and n.domain == "edgec"]
    assert len(att) == params["depth"], f"{key}: {len(att)} attention blocks recovered"
    assert not any(n.op_type == "Softmax" for n in model.graph)
    assert all(n.attr("num_heads") == params["heads"] for n in att)
    head_dim = params["hidden"] // params["heads"]
    assert all(abs(n.attr("scale") - head_dim ** -0.5) < 1e-6 for n in att)
    text = print_model(model, elide_limit=None)
    for contrib in (False, True):
        lowered = parse_model(text)
        lower_for_onnx(lowered, contrib_ops=contrib)
        ops = {n.op_type for n in lowered.graph}
        assert ("MultiHeadAttention" in ops) == contrib and ("Softmax" in ops) != contrib
        lp = to_proto(lowered)
        for dims in ({"batch": 1, "seq": 5}, {"batch": 3, "seq": 8}):
            feeds = zoo.make_inputs(proto, seed=0, dims=dims)
            for got, want in zip(_run(lp, feeds), _run(proto, feeds)):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
