"""cse: merging equal nodes; never random ops, never different attributes or inputs."""

from __future__ import annotations


import pytest
from passtest import check_pass


# check_pass compares canonical IR (rule tags, names and locations normalised away).
check = check_pass



P = "cse"


def test_merges_equal_nodes_and_chains() -> None:
    check("""
graph @g(%x: tensor<"N"x4xf32>) -> (%y: tensor<"N"x4xf32>) {
  %a = onnx.Relu(%x)
  %b = onnx.Relu(%x)
  %c = onnx.Exp(%a)
  %d = onnx.Exp(%b)
  %y = onnx.Add(%c, %d) : tensor<"N"x4xf32>
  return %y
}""", P, """
graph @g(%x: tensor<"N"x4xf32>) -> (%y: tensor<"N"x4xf32>) {
  %a = onnx.Relu(%x)
  %c = onnx.Exp(%a)
  %y = onnx.Add(%c, %c) : tensor<"N"x4xf32>
  return %y
}""")


def test_tensor_attributes_compared_by_value_and_omitted_trailing_inputs() -> None:
    check("""
graph @g(%x: tensor<2x3xf32>) -> (%y) {
  %a = onnx.ConstantOfShape(%s) {value=dense<1xf32 [2.5]>}
  %b = onnx.ConstantOfShape(%s) {value=dense<1xf32 [2.5]>}
  %s = const dense<2xi64 [2, 3]>
  %c = onnx.Clip(%x, _, _)
  %d = onnx.Clip(%x)
  %e = onnx.Sum(%a, %b, %c, %d)
  %y = onnx.Identity(%e)
  return %y
}""", P, """
graph @g(%x: tensor<2x3xf32>) -> (%y) {
  %a = onnx.ConstantOfShape(%s) {value=dense<1xf32 [2.5]>}
  %s = const dense<2xi64 [2, 3]>
  %c = onnx.Clip(%x, _, _)
  %e = onnx.Sum(%a, %a, %c, %c)
  %y = onnx.Identity(%e)
  return %y
}""")


def test_graph_outputs_keep_their_names() -> None:
    # %y2 duplicates %y1 and both are outputs: %y2 becomes an Identity of %y1;
    # %z duplicates the unexported %t: %t takes the name %z
    check("""
graph @g(%x: tensor<"N"xf32>) -> (%y1, %y2, %z, %w) {
  %y1 = onnx.Neg(%x)
  %y2 = onnx.Neg(%x)
  %t = onnx.Abs(%x)
  %z = onnx.Abs(%x)
  %w = onnx.Mul(%t, %t)
  return %y1, %y2, %z, %w
}""", P, """
graph @g(%x: tensor<"N"xf32>) -> (%y1, %y2, %z, %w) {
  %y1 = onnx.Neg(%x)
  %y2 = onnx.Identity(%y1)
  %z = onnx.Abs(%x)
  %w = onnx.Mul(%z, %z)
  return %y1, %y2, %z, %w
}""")


def test_inside_if_branch() -> None:
    check("""
graph @g(%c: tensor<1xbool>, %x: tensor<"N"xf32>) -> (%r) {
  %r = onnx.If(%c) {else_branch=graph @e() -> (%e2) {
    %e0 = onnx.Sin(%x)
    %e1 = onnx.Sin(%x)
    %e2 = onnx.Sub(%e0, %e1)
    return %e2
  }, then_branch=graph @t() -> (%t0) {
    %t0 = onnx.Cos(%x)
    return %t0
  }}
  return %r
}""", P, """
graph @g(%c: tensor<1xbool>, %x: tensor<"N"xf32>) -> (%r) {
  %r = onnx.If(%c) {else_branch=graph @e() -> (%e2) {
    %e0 = onnx.Sin(%x)
    %e2 = onnx.Sub(%e0, %e0)
    return %e2
  }, then_branch=graph @t() -> (%t0) {
    %t0 = onnx.Cos(%x)
    return %t0
  }}
  return %r
}""")


@pytest.mark.parametrize("body", [
    # random ops
    '%a = onnx.RandomNormalLike(%x)\n  %b = onnx.RandomNormalLike(%x)\n  %y = onnx.Add(%a, %b)',
    '%a = onnx.RandomUniform() {shape=[2]}\n  %b = onnx.RandomUniform() {shape=[2]}\n  %y = onnx.Add(%a, %b)',
    # different attributes (float bits: 0.0 vs -0.0), different inputs, equal but distinct constants
    '%a = onnx.LeakyRelu(%x) {alpha=0.0}\n  %b = onnx.LeakyRelu(%x) {alpha=-0.0}\n  %y = onnx.Add(%a, %b)',
    '%a = onnx.Softmax(%x) {axis=0}\n  %b = onnx.Softmax(%x) {axis=-1}\n  %y = onnx.Add(%a, %b)',
    '%k1 = const dense<f32 [1.0]>\n  %k2 = const dense<f32 [1.0]>\n  %a = onnx.Add(%x, %k1)\n  %b = onnx.Add(%x, %k2)\n  %y = onnx.Add(%a, %b)',
    # custom-domain ops, and Constant nodes (dedup-initializers' job)
    '%a = custom.Op(%x)\n  %b = custom.Op(%x)\n  %y = onnx.Add(%a, %b)',
    '%a = onnx.Constant() {value=dense<f32 [1.0]>}\n  %b = onnx.Constant() {value=dense<f32 [1.0]>}\n  %c = onnx.Add(%a, %b)\n  %y = onnx.Add(%x, %c)',
])
def test_must_not_fire(body: str) -> None:
    check(f"""
opset(ai.onnx=21, custom=1)
graph @g(%x: tensor<2xf32>) -> (%y) {{
  {body}
  return %y
}}""", P, None, fires=False, run="custom" not in body and "Random" not in body)


def test_nodes_with_subgraphs_are_not_merged() -> None:
    branch = """{else_branch=graph @e() -> (%e) {
    %e = onnx.Neg(%x)
    return %e
  }, then_branch=graph @t() -> (%t) {
    %t = onnx.Abs(%x)
    return %t
  }}"""
    check(f"""
graph @g(%c: tensor<1xbool>, %x: tensor<2xf32>) -> (%y) {{
  %a = onnx.If(%c) {branch}
  %b = onnx.If(%c) {branch.replace("@e", "@e2").replace("@t", "@t2").replace("%e", "%e2").replace("%t", "%t2")}
  %y = onnx.Add(%a, %b)
  return %y
}}""", P, None, fires=False)


def test_dedup_then_cse() -> None:
    check("""
graph @g(%x: tensor<"N"xf32>) -> (%y) {
  %k1 = const dense<f32 [2.0]>
  %k2 = const dense<f32 [2.0]>
  %a = onnx.Mul(%x, %k1)
  %b = onnx.Mul(%x, %k2)
  %y = onnx.Sub(%a, %b)
  return %y
}""", "dedup-initializers,cse,dce", """
graph @g(%x: tensor<"N"xf32>) -> (%y) {
  %k1 = const dense<f32 [2.0]>
  %a = onnx.Mul(%x, %k1)
  %y = onnx.Sub(%a, %a)
  return %y
}""")


# --- real models: all five passes, outputs unchanged ------------------------------------------

REAL_MODELS = ["bert_encoder", "vit", "recurrent_if_loop", "mobilenetv2", "cnn_opset11", "lstm", "paddle_style"]
EXACT = "dedup-initializers,cse,eliminate-noops,merge-shape-ops,dce"


def _ort_outputs(proto, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_models_unchanged(name: str) -> None:
    pytest.importorskip("torch")
    import numpy as np
    import zoo

    from edgec.backends.onnx_export import to_proto
    from edgec.frontend.onnx_import import from_proto
    from edgec.passmanager import PassManager
    from edgec.passmanager.registry import get_registry

    proto = zoo.get(name, **zoo.TEST_PARAMS[name])
    shapes = "infer-shapes," if "infer-shapes" in get_registry().names() else ""
    for pipeline, rtol in ((shapes + EXACT, 0.0), (shapes + EXACT + ",simplify-algebra,dce", 1e-5)):
        model = from_proto(proto, None)
        PassManager(pipeline).run(model)
        out = to_proto(model)
        assert [o.name for o in out.graph.output] == [o.name for o in proto.graph.output]
        for dims in ({"batch": 1, "seq": 5}, {"batch": 3, "seq": 11}):
            feeds = zoo.make_inputs(proto, seed=1, dims=dims)
            for want, got in zip(_ort_outputs(proto, feeds), _ort_outputs(out, feeds)):
                assert want.dtype == got.dtype and want.shape == got.shape
                if rtol:
                    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6)
                else:
                    assert np.array_equal(want, got, equal_nan=True), f"{name} {pipeline} at {dims}"
