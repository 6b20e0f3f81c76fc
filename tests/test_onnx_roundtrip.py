"""Hand-built models through ONNX -> IR -> ONNX: control flow, functions, sparse data, metadata, attributes, opsets."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.backends.onnx_export import save_model, to_proto
from edgec.frontend.onnx_import import from_proto, load_model
from edgec.ir import AttrKind, SparseTensor

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _roundtrip(model: onnx.ModelProto) -> onnx.ModelProto:
    onnx.checker.check_model(model, full_check=True)
    out = to_proto(from_proto(model))
    onnx.checker.check_model(out, full_check=True)
    return out


def _same_in_ort(model, out, feeds, ort_run, bit_equal):
    assert bit_equal(ort_run(model, feeds), ort_run(out, feeds))


def _x(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_if_with_outer_scope(ort_run, bit_equal):
    then_g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["t"], name="then_add")], "then", [],
                               [helper.make_tensor_value_info("t", F, [3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="else_neg")], "else", [],
                               [helper.make_tensor_value_info("e", F, [3])])
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)], "main",
        [helper.make_tensor_value_info("c", B, []), helper.make_tensor_value_info("x", F, [3])],
        [helper.make_tensor_value_info("y", F, [3])], [numpy_helper.from_array(np.ones(3, np.float32), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    ir = from_proto(m)
    branch = ir.graph.nodes[0]
    then_ir = branch.attrs["then_branch"].value
    assert then_ir.parent is branch
    assert then_ir.nodes[0].inputs[1] is ir.graph.initializers["w"]  # outer-scope capture resolved
    out = _roundtrip(m)
    for c in (True, False):
        _same_in_ort(m, out, {"c": np.array(c), "x": _x(3)}, ort_run, bit_equal)


def _loop_model(inner: str = "prod"):
    # body(i, cond, acc) -> (cond, acc + x * scale), x and scale captured from the outer graph.
    body = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], [inner], name="body_mul"),
         helper.make_node("Add", ["acc", inner], ["acc_out"], name="body_add"),
         helper.make_node("Identity", ["cond"], ["cond_out"], name="body_id")],
        "body",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("cond", B, []),
         helper.make_tensor_value_info("acc", F, [2])],
        [helper.make_tensor_value_info("cond_out", B, []), helper.make_tensor_value_info("acc_out", F, [2])])
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["tmp"], name="outer_tmp"),
         helper.make_node("Loop", ["n", "", "tmp"], ["y"], name="loop", body=body)],
        "main", [helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("n", I64, [])],
        [helper.make_tensor_value_info("y", F, [2])], [numpy_helper.from_array(np.float32(0.5), "scale")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])


def test_loop_outer_scope(ort_run, bit_equal):
    m = _loop_model()
    ir = from_proto(m)
    loop = ir.graph.nodes[1]
    assert loop.inputs[1] is None  # omitted optional input
    body = loop.attrs["body"].value
    mul = body.nodes[0]
    assert mul.inputs[0] is ir.graph.inputs[0] and mul.inputs[1] is ir.graph.initializers["scale"]
    out = _roundtrip(m)
    assert out.graph.node[1].input[1] == ""
    _same_in_ort(m, out, {"x": _x(2), "n": np.array(3, np.int64)}, ort_run, bit_equal)


def test_inner_names_shadow_outer():
    m = _loop_model(inner="tmp")  # the body defines "tmp" too (the ONNX checker forbids it; edgec resolves it)
    ir = from_proto(m)
    body = ir.graph.nodes[1].attrs["body"].value
    assert body.nodes[1].inputs[1] is body.nodes[0].outputs[0]
    assert ir.graph.nodes[1].inputs[2] is ir.graph.nodes[0].outputs[0]
    out = to_proto(ir)
    assert out.graph.node[1].attribute[0].g.node[1].input == ["acc", "tmp"]


def test_scan(ort_run, bit_equal):
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "xi"], ["s2"], name="acc"), helper.make_node("Identity", ["s2"], ["yi"], name="emit")],
        "scan_body", [helper.make_tensor_value_info("s", F, [2]), helper.make_tensor_value_info("xi", F, [2])],
        [helper.make_tensor_value_info("s2", F, [2]), helper.make_tensor_value_info("yi", F, [2])])
    g = helper.make_graph(
        [helper.make_node("Scan", ["init", "xs"], ["final", "ys"], name="scan", num_scan_inputs=1, body=body)], "main",
        [helper.make_tensor_value_info("init", F, [2]), helper.make_tensor_value_info("xs", F, [4, 2])],
        [helper.make_tensor_value_info("final", F, [2]), helper.make_tensor_value_info("ys", F, [4, 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
    out = _roundtrip(m)
    _same_in_ort(m, out, {"init": _x(2), "xs": _x(4, 2)}, ort_run, bit_equal)


def _function_model():
    alpha = helper.make_attribute_ref("alpha", AttributeProto_FLOAT)
    lrelu = helper.make_node("LeakyRelu", ["a"], ["b"], name="fn_lrelu")
    lrelu.attribute.append(alpha)
    fn = helper.make_function("com.edgec", "ScaledLeaky", ["a"], ["c"],
                              [lrelu, helper.make_node("Add", ["b", "b"], ["c"], name="fn_add")],
                              [helper.make_opsetid("", 18)], attributes=[])
    fn.attribute_proto.append(helper.make_attribute("alpha", 0.25))
    fn.doc_string = "function doc"
    g = helper.make_graph(
        [helper.make_node("ScaledLeaky", ["x"], ["y"], domain="com.edgec", name="call_default"),
         helper.make_node("ScaledLeaky", ["y"], ["z"], domain="com.edgec", name="call_alpha", alpha=0.5)],
        "main", [helper.make_tensor_value_info("x", F, [4])], [helper.make_tensor_value_info("z", F, [4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.edgec", 1)],
                             functions=[fn])


AttributeProto_FLOAT = onnx.AttributeProto.FLOAT


def test_local_function_with_attribute_refs(ort_run, bit_equal):
    m = _function_model()
    ir = from_proto(m)
    f = ir.functions[("com.edgec", "ScaledLeaky", "")]
    assert f.attributes == ["alpha"] and f.attribute_defaults["alpha"].value == 0.25
    assert f.graph.nodes[0].attrs["alpha"].ref == "alpha" and f.opset_imports == {"": 18}
    out = _roundtrip(m)
    assert out.functions[0] == m.functions[0]
    _same_in_ort(m, out, {"x": _x(4)}, ort_run, bit_equal)


def test_sparse_initializer(ort_run, bit_equal):
    values = numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "sp")
    indices = numpy_helper.from_array(np.array([1, 4], np.int64), "")
    sp = helper.make_sparse_tensor(values, indices, [6])
    g = helper.make_graph([helper.make_node("Add", ["x", "sp"], ["y"], name="add")], "main",
                          [helper.make_tensor_value_info("x", F, [6])], [helper.make_tensor_value_info("y", F, [6])],
                          sparse_initializer=[sp])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    ir = from_proto(m)
    assert isinstance(ir.graph.initializers["sp"].const, SparseTensor)
    out = to_proto(ir)
    onnx.checker.check_model(out)  # full_check's shape inference does not take sparse inputs to Add
    assert out.graph.sparse_initializer[0] == sp and not out.graph.initializer
    _same_in_ort(m, out, {"x": _x(6)}, ort_run, bit_equal)


def test_initializer_that_is_an_input(ort_run, bit_equal):
    g = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["y"], name="add")], "main",
                          [helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("bias", F, [2])],
                          [helper.make_tensor_value_info("y", F, [2])], [numpy_helper.from_array(np.ones(2, np.float32), "bias")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    ir = from_proto(m)
    bias = ir.graph.initializers["bias"]
    assert bias.is_graph_input() and bias.const is not None and not bias.is_constant()
    out = _roundtrip(m)
    assert [i.name for i in out.graph.input] == ["x", "bias"] and out.graph.initializer[0].name == "bias"
    _same_in_ort(m, out, {"x": _x(2)}, ort_run, bit_equal)
    _same_in_ort(m, out, {"x": _x(2), "bias": _x(2)}, ort_run, bit_equal)


def test_metadata_doc_strings_and_extras():
    m = _loop_model()
    m.doc_string, m.producer_name, m.producer_version, m.domain, m.model_version = "model doc", "prod", "1.2", "org.x", 7
    helper.set_model_props(m, {"author": "edgec", "license": "apache"})
    m.graph.doc_string = "graph doc"
    m.graph.metadata_props.add(key="g", value="1")
    m.graph.node[0].doc_string = "node doc"
    m.graph.node[0].metadata_props.add(key="n", value="2")
    m.graph.input[0].doc_string = "input doc"
    m.graph.input[0].metadata_props.add(key="v", value="3")
    m.graph.value_info.append(helper.make_tensor_value_info("tmp", F, [2]))
    m.graph.value_info[0].doc_string = "tmp doc"
    qa = m.graph.quantization_annotation.add(tensor_name="tmp")
    qa.quant_parameter_tensor_names.add(key="SCALE_TENSOR", value="scale")
    ti = m.training_info.add()
    ti.initialization.name = "init_graph"
    out = to_proto(from_proto(m))
    assert (out.doc_string, out.producer_name, out.producer_version, out.domain, out.model_version) == \
        ("model doc", "prod", "1.2", "org.x", 7)
    assert list(out.metadata_props) == list(m.metadata_props)
    assert out.graph.doc_string == "graph doc" and list(out.graph.metadata_props) == list(m.graph.metadata_props)
    assert out.graph.node[0].doc_string == "node doc" and out.graph.node[0].metadata_props[0].value == "2"
    assert out.graph.input[0] == m.graph.input[0]
    assert out.graph.value_info[0] == m.graph.value_info[0]
    assert out.graph.quantization_annotation[0] == qa and out.training_info[0] == ti
    assert list(out.opset_import) == list(m.opset_import) and out.ir_version == m.ir_version


def _every_attribute_kind() -> onnx.NodeProto:
    t = numpy_helper.from_array(np.arange(6, dtype=np.int32).reshape(2, 3), "")
    t2 = numpy_helper.from_array(np.array([1.5], np.float16), "")
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.array([3.0], np.float32), ""),
                                   numpy_helper.from_array(np.array([2], np.int64), ""), [4])
    sub = helper.make_graph([helper.make_node("Identity", ["a"], ["b"], name="sub_id")], "sub",
                            [helper.make_tensor_value_info("a", F, [1])], [helper.make_tensor_value_info("b", F, [1])])
    tp = helper.make_tensor_type_proto(F, [2, "N", None])
    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(I64, None))
    node = helper.make_node(
        "Everything", ["x"], ["y"], domain="com.edgec", name="all_kinds",
        f=0.1, i=-3, s="héllo", t=t, g=sub, floats=[1.0, 0.1], ints=[1, 2, 3], strings=["a", b"\xff\xfe"],
        tensors=[t, t2], graphs=[sub, sub], sparse_tensor=sp, sparse_tensors=[sp])
    node.attribute.append(helper.make_attribute("tp", tp))
    node.attribute.append(helper.make_attribute("tps", [tp, seq]))
    node.attribute.append(helper.make_attribute("empty_ints", [], attr_type=onnx.AttributeProto.INTS))
    return node


def test_all_attribute_kinds():
    node = _every_attribute_kind()
    g = helper.make_graph([node], "main", [helper.make_tensor_value_info("x", F, [1])],
                          [helper.make_tensor_value_info("y", F, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.edgec", 1)])
    ir = from_proto(m)
    kinds = {n: a.kind for n, a in ir.graph.nodes[0].attrs.items()}
    assert set(kinds.values()) == set(AttrKind) - {AttrKind.UNDEFINED}
    assert ir.graph.nodes[0].attrs["g"].value.parent is ir.graph.nodes[0]
    out = to_proto(ir).graph.node[0]
    assert list(out.attribute) == list(node.attribute)


@pytest.mark.parametrize("opset", range(11, 22))
def test_opsets(opset, ort_run, bit_equal):
    axes_as_input = opset >= 13
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ReduceSum", ["r", "axes"] if axes_as_input else ["r"], ["s"], name="sum",
                              keepdims=0, **({} if axes_as_input else {"axes": [1]})),
             helper.make_node("Clip", ["s", "lo", "hi"], ["y"], name="clip")]
    inits = [numpy_helper.from_array(_x(4, 3, 3, 3), "w"), numpy_helper.from_array(np.float32(-1), "lo"),
             numpy_helper.from_array(np.float32(1), "hi")]
    if axes_as_input:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    g = helper.make_graph(nodes, f"opset{opset}", [helper.make_tensor_value_info("x", F, [1, 3, 5, 5])],
                          [helper.make_tensor_value_info("y", F, [1, 5, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)
    out = _roundtrip(m)
    assert out.opset_import[0].version == opset
    _same_in_ort(m, out, {"x": _x(1, 3, 5, 5)}, ort_run, bit_equal)


def test_names_and_order_preserved():
    m = _loop_model()
    m.graph.node.insert(0, helper.make_node("Abs", ["x"], ["unused"]))  # unnamed node
    out = to_proto(from_proto(m))
    assert [n.name for n in out.graph.node][1:] == ["outer_tmp", "loop"]
    assert out.graph.node[0].name and out.graph.node[0].name not in {"outer_tmp", "loop"}
    assert [n.output[0] for n in out.graph.node] == ["unused", "tmp", "y"]
    assert [i.name for i in out.graph.input] == ["x", "n"] and out.graph.name == "main"
    body = out.graph.node[2].attribute[0].g
    assert [n.name for n in body.node] == ["body_mul", "body_add", "body_id"] and body.name == "body"


def test_unsorted_graph_is_exported_sorted():
    g = helper.make_graph([helper.make_node("Neg", ["a"], ["y"], name="second"),
                           helper.make_node("Relu", ["x"], ["a"], name="first")], "main",
                          [helper.make_tensor_value_info("x", F, [2])], [helper.make_tensor_value_info("y", F, [2])])
    out = to_proto(from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])))
    onnx.checker.check_model(out, full_check=True)
    assert [n.name for n in out.graph.node] == ["first", "second"]


def test_deterministic(tmp_path):
    m = _function_model()
    m.graph.node.insert(0, helper.make_node("Abs", ["x"], ["unused"]))
    ir = from_proto(m)
    assert to_proto(ir).SerializeToString(deterministic=True) == to_proto(ir).SerializeToString(deterministic=True)
    assert to_proto(from_proto(m)).SerializeToString() == to_proto(from_proto(m)).SerializeToString()
    save_model(ir, str(tmp_path / "a.onnx"))
    save_model(ir, str(tmp_path / "b.onnx"))
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no temp files left


def test_save_and_load_file(tmp_path, ort_run, bit_equal):
    m = _loop_model()
    p = str(tmp_path / "loop.onnx")
    save_model(from_proto(m), p)
    back = load_model(p)
    out = to_proto(back)
    onnx.checker.check_model(p, full_check=True)
    _same_in_ort(m, out, {"x": _x(2), "n": np.array(2, np.int64)}, ort_run, bit_equal)
