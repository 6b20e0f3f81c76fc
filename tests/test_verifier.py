"""The IR verifier: every check has an IR that breaks it, and valid graphs (with subgraphs) pass."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgec.errors import VerificationError
from edgec.ir import Attr, AttrKind, DType, Function, Graph, Model, Node, QuantParams, TensorType, Value, tensor
from edgec.ir import opschema
from edgec.ir.tensor import ArrayTensor
from edgec.ir.verifier import verify, verify_function, verify_graph

F32 = DType.FLOAT


def f32(*dims):
    return tensor(F32, list(dims))


def simple():
    """x, y -> Add -> Relu -> out, with an initializer w added too."""
    x = Value("x", f32(2, 3))
    y = Value("y", f32(2, 3))
    g = Graph("main", [x, y])
    w = g.add_initializer(Value("w", None, ArrayTensor(np.ones((2, 3), np.float32))))
    add = g.append(Node("Add", [x, y], ["s"], name="add"))
    mul = g.append(Node("Mul", [add.output(0), w], ["m"], name="mul"))
    relu = g.append(Node("Relu", [mul.output(0)], ["out"], name="relu"))
    g.add_output(relu.output(0))
    return Model(g, {"": 21}), g, (x, y, w), (add, mul, relu)


def fails(model_or_graph, *needles, **kw):
    with pytest.raises(VerificationError) as ei:
        if isinstance(model_or_graph, Model):
            verify(model_or_graph, **kw)
        else:
            verify_graph(model_or_graph, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


def if_model():
    """An If whose branches capture outer values x and s; a Loop whose body captures w."""
    x = Value("x", f32(2, 3))
    c = Value("c", tensor(DType.BOOL, []))
    g = Graph("main", [x, c])
    w = g.add_constant(np.ones((2, 3), np.float32), "w")
    s = g.append(Node("Relu", [x], ["s"], name="relu")).output(0)

    then_g = Graph("then")
    t = then_g.append(Node("Add", [x, s], ["t"], name="then_add")).output(0)
    then_g.add_output(t)
    else_g = Graph("else")
    e = else_g.append(Node("Neg", [s], ["e"], name="else_neg")).output(0)
    else_g.add_output(e)
    iff = g.append(Node("If", [c], ["r"], {"then_branch": then_g, "else_branch": else_g}, name="if"))

    it = Value("it", tensor(DType.INT64, []))
    cin = Value("cin", tensor(DType.BOOL, []))
    acc = Value("acc", f32(2, 3))
    body = Graph("body", [it, cin, acc])
    cout = body.append(Node("Identity", [cin], ["cout"], name="body_id")).output(0)
    # a name that shadows an outer one is fine in a subgraph
    nxt = body.append(Node("Add", [acc, w], ["s"], name="body_add")).output(0)
    body.add_output(cout)
    body.add_output(nxt)
    trip = g.add_constant(np.array(3, np.int64), "trip")
    loop = g.append(Node("Loop", [trip, c, iff.output(0)], ["final"], {"body": body}, name="loop"))
    g.add_output(loop.output(0))
    return Model(g, {"": 21}), g, locals()


# --- valid models ------------------------------------------------------------------------------------
def test_valid_simple():
    m, *_ = simple()
    verify(m)


def test_valid_if_and_loop_with_captures():
    m, g, _ = if_model()
    verify(m)
    verify_graph(g)


def test_verify_graph_on_subgraph_with_captures():
    m, g, loc = if_model()
    verify_graph(loc["then_g"])
    verify_graph(loc["body"])


def test_nested_subgraph_captures_from_two_levels():
    m, g, loc = if_model()
    inner = Graph("inner")
    inner.add_output(inner.append(Node("Add", [loc["x"], loc["acc"]], ["deep"], name="deep_add")).output(0))
    body = loc["body"]
    iff2 = Node("If", [loc["cin"]], ["deep_r"], {"then_branch": inner, "else_branch": _const_branch(loc["acc"])}, name="if2")
    body.insert_after(body.nodes[0], iff2)
    verify(m)


def _const_branch(v):
    g = Graph("passthrough")
    g.add_output(g.append(Node("Identity", [v], ["pt"], name="pt_id")).output(0))
    return g


def test_subgraph_output_may_be_an_outer_value():
    m, g, loc = if_model()
    loc["else_g"].set_output(0, loc["s"])
    loc["else_g"].remove(loc["else_g"].nodes[0])
    verify(m)


def test_custom_domain_declared_is_opaque_but_allowed():
    m, g, _, (add, mul, relu) = simple()
    n = g.insert_after(relu, Node("FusedGelu", [relu.output(0)], ["fg"], domain="com.microsoft", name="fg"))
    g.set_output(0, n.output(0))
    fails(m, "'fg'", "com.microsoft", "opset imports")
    m.opset_imports["com.microsoft"] = 1
    verify(m)


def test_check_types_can_be_disabled():
    m, g, (x, y, w), _ = simple()
    y.type = tensor(DType.INT64, [2, 3])
    fails(m, "'add'", "'y'", "i64")
    verify(m, check_types=False)


# --- SSA ---------------------------------------------------------------------------------------------
def test_value_defined_twice():
    m, g, (x, y, w), (add, mul, relu) = simple()
    g.append(Node("Neg", [relu.output(0)], [x], name="redefine"))
    fails(m, "'x'", "defined twice", "main")


def test_name_defined_twice_in_one_graph():
    m, g, (x, y, w), (add, mul, relu) = simple()
    g.append(Node("Neg", [relu.output(0)], ["s"], name="neg"))
    fails(m, "name 's'", "main", "neg")


def test_empty_value_name():
    m, g, (x, y, w), (add, mul, relu) = simple()
    relu.output(0).name = ""
    fails(m, "empty name", "relu")


# --- links ---------------------------------------------------------------------------------------------
def test_node_graph_backlink():
    m, g, _, (add, mul, relu) = simple()
    mul.graph = Graph("elsewhere")
    fails(m, "'mul'", "graph backlink", "elsewhere")


def test_producer_index_backlink():
    m, g, _, (add, mul, relu) = simple()
    mul.output(0)._index = 3
    fails(m, "'mul'", "'m'", "producer/index")


def test_node_count_and_prev_links():
    m, g, *_ = simple()
    g._len += 1
    fails(m, "node count")
    m, g, _, (add, mul, relu) = simple()
    relu._prev = add
    fails(m, "'relu'", "prev link")


def test_graph_input_owner_backlink():
    m, g, (x, y, w), _ = simple()
    x._owner = None
    fails(m, "graph input 'x'", "owner")


def test_graph_output_backlink():
    m, g, _, (add, mul, relu) = simple()
    relu.output(0)._out_of.clear()
    fails(m, "graph output 'out'", "backlink")


def test_subgraph_parent_backlink():
    m, g, loc = if_model()
    loc["then_g"].parent = None
    fails(m, "'then'", "'if'", "parent")


def test_same_graph_object_twice():
    m, g, loc = if_model()
    loc["iff"].set_attr("else_branch", loc["then_g"])
    fails(m, "'then'", "twice")


# --- use lists --------------------------------------------------------------------------------------------
def test_use_list_missing_entry():
    m, g, (x, y, w), (add, mul, relu) = simple()
    y._uses.clear()
    fails(m, "'add'", "'y'", "use list")


def test_use_list_extra_entry():
    m, g, (x, y, w), (add, mul, relu) = simple()
    y._uses.append((relu, 0))
    fails(m, "'y'", "'relu'", "use list")


def test_use_list_duplicate_entry():
    m, g, (x, y, w), (add, mul, relu) = simple()
    x._uses.append((add, 0))
    fails(m, "'x'", "'add'", "twice")


def test_use_by_removed_node():
    m, g, (x, y, w), (add, mul, relu) = simple()
    g.append(Node("Neg", [x], ["dead_out"], name="dead"))
    g.remove(g.nodes[-1], drop_inputs=False)
    fails(m, "'x'", "'dead'", "not in the model")


# --- order and scope ------------------------------------------------------------------------------------
def test_use_before_definition():
    m, g, _, (add, mul, relu) = simple()
    g.remove(add, drop_inputs=False)
    g.append(add)
    fails(m, "'mul'", "'s'", "before it is defined")


def test_dangling_value():
    m, g, _, (add, mul, relu) = simple()
    relu.set_input(0, Value("ghost", f32(2, 3)))
    fails(m, "'relu'", "'ghost'", "dangling")


def test_dangling_after_producer_removed():
    m, g, _, (add, mul, relu) = simple()
    g.remove(mul)
    fails(m, "'relu'", "'m'", "dangling", "'mul'")


def test_graph_output_not_defined():
    m, g, *_ = simple()
    g.add_output(Value("nowhere", f32(1)))
    fails(m, "graph output 1 'nowhere'", "main")


def test_sibling_graph_value_is_out_of_scope():
    m, g, loc = if_model()
    else_g = loc["else_g"]
    else_g.append(Node("Neg", [loc["t"]], ["bad"], name="else_bad"))
    fails(m, "'else_bad'", "'t'", "'then'", "does not enclose")


def test_inner_graph_value_is_out_of_scope():
    m, g, loc = if_model()
    g.append(Node("Neg", [loc["e"]], ["peek"], name="peek"))
    fails(m, "'peek'", "'e'", "'else'", "does not enclose")


def test_enclosing_value_defined_after_parent_node():
    m, g, loc = if_model()
    late = g.append(Node("Neg", [loc["x"]], ["late"], name="late")).output(0)
    loc["then_g"].append(Node("Neg", [late], ["uses_late"], name="uses_late"))
    fails(m, "'uses_late'", "'late'", "after the node")


def test_main_graph_output_cannot_be_a_subgraph_value():
    m, g, loc = if_model()
    g.add_output(loc["t"])
    fails(m, "graph output", "'t'")


# --- constants and types ------------------------------------------------------------------------------------
def test_initializer_without_data():
    m, g, *_ = simple()
    v = Value("nodata", f32(1))
    v._owner = g
    g.initializers["nodata"] = v
    fails(m, "initializer 'nodata'", "no constant data")


def test_initializer_dtype_mismatch():
    m, g, (x, y, w), _ = simple()
    w.type = tensor(DType.INT64, [2, 3])
    fails(m, "initializer 'w'", "i64", "f32")


def test_initializer_dims_mismatch():
    m, g, (x, y, w), _ = simple()
    w.type = f32(3, 2)
    fails(m, "initializer 'w'", "[3, 2]", "[2, 3]")


def test_initializer_registered_under_other_name():
    m, g, (x, y, w), _ = simple()
    g.initializers["other"] = g.initializers.pop("w")
    fails(m, "initializer 'other'")


def test_node_output_with_const_data():
    m, g, _, (add, mul, relu) = simple()
    add.output(0).const = ArrayTensor(np.zeros((2, 3), np.float32))
    fails(m, "'add'", "'s'", "constant data")


def test_type_not_a_type():
    m, g, _, (add, mul, relu) = simple()
    mul.output(0).type = "float32"
    fails(m, "'m'", "not an edgec Type")


def test_negative_dim():
    m, g, _, (add, mul, relu) = simple()
    mul.output(0).type = f32(2, -3)
    fails(m, "'m'", "invalid dim -3")


def test_quant_on_float():
    m, g, _, (add, mul, relu) = simple()
    mul.output(0).type = TensorType(F32, f32(2, 3).shape, QuantParams(np.array(0.1), np.array(0)))
    fails(m, "'m'", "quantization")


def test_type_constraint_binding():
    m, g, (x, y, w), _ = simple()
    y.type = tensor(DType.INT64, [2, 3])
    fails(m, "'add'", "input 1 'y'", "binds T")


def test_type_constraint_allowed_set():
    x = Value("x", tensor(DType.INT64, [3]))
    g = Graph("main", [x])
    g.add_output(g.append(Node("Sqrt", [x], ["r"], name="sqrt")).output(0))
    fails(Model(g), "'sqrt'", "'x'", "i64")


# --- ops -----------------------------------------------------------------------------------------------------
def test_unknown_onnx_op():
    m, g, _, (add, mul, relu) = simple()
    relu.op_type = "Frobnicate"
    fails(m, "'relu'", "Frobnicate", "not defined")


def test_op_not_yet_defined_at_opset():
    x = Value("x", f32(3))
    g = Graph("main", [x])
    g.add_output(g.append(Node("Gelu", [x], ["r"], name="gelu")).output(0))
    verify(Model(g, {"": 20}))
    fails(Model(g, {"": 19}), "'gelu'", "Gelu", "opset 19")


def test_deprecated_op():
    x = Value("x", f32(1, 1, 2, 2))
    g = Graph("main", [x])
    sc = g.add_constant(np.array([1, 1, 2, 2], np.float32), "scales")
    g.add_output(g.append(Node("Upsample", [x, sc], ["r"], name="up")).output(0))
    fails(Model(g, {"": 21}), "'up'", "deprecated")


def test_arity_too_few_inputs():
    m, g, _, (add, mul, relu) = simple()
    add.set_inputs([add.input(0)])
    fails(m, "'add'", "1 inputs")


def test_arity_too_many_outputs():
    m, g, _, (add, mul, relu) = simple()
    relu._add_output("extra")
    fails(m, "'relu'", "2 outputs")


def test_required_input_omitted():
    x = Value("x", f32(3))
    g = Graph("main", [x])
    mx = g.add_constant(np.array(1.0, np.float32), "mx")
    g.add_output(g.append(Node("Clip", [None, None, mx], ["r"], name="clip")).output(0))
    fails(Model(g), "'clip'", "required input 0")
    g.nodes[0].set_input(0, x)
    verify(Model(g))


def test_missing_opset_import():
    m, g, _, (add, mul, relu) = simple()
    m.opset_imports = {"ai.onnx.ml": 3}
    fails(m, "'add'", "'ai.onnx'", "opset imports")


def test_invalid_opset_version():
    m, *_ = simple()
    m.opset_imports[""] = 0
    fails(m, "invalid version")


def test_registered_domain_ops():
    opschema.unregister_op("edgec", "FusedConvRelu")
    m, g, _, (add, mul, relu) = simple()
    m.opset_imports["edgec"] = 1
    n = g.append(Node("FusedConvRelu", [relu.output(0)], ["fcr"], domain="edgec", name="fcr"))
    g.set_output(0, n.output(0))
    fails(m, "'fcr'", "not registered")
    try:
        opschema.register_op("edgec", "FusedConvRelu", min_inputs=2, max_inputs=3, num_outputs=1)
        assert opschema.is_known_op("edgec", "FusedConvRelu", 1)
        fails(m, "'fcr'", "1 inputs", "2 to 3")
        n.append_input(relu.output(0))
        verify(m)
        with pytest.raises(ValueError):
            opschema.register_op("edgec", "FusedConvRelu", min_inputs=1)
    finally:
        opschema.unregister_op("edgec", "FusedConvRelu")
    assert not opschema.is_known_op("edgec", "FusedConvRelu", 1)


def test_is_known_op():
    assert opschema.is_known_op("", "Conv", 11)
    assert opschema.is_known_op("ai.onnx", "Gelu", 20)
    assert not opschema.is_known_op("", "Gelu", 19)
    assert not opschema.is_known_op("", "Upsample", 21)  # deprecated
    assert opschema.is_known_op("ai.onnx.ml", "TreeEnsembleClassifier", 3)
    assert opschema.is_known_op("com.example", "Whatever", 1)  # opaque domain
    s = opschema.schema("", "Concat", 13)
    assert s.min_inputs == 1 and s.max_inputs == opschema.UNBOUNDED


# --- functions and attribute references ------------------------------------------------------------------------
def _function(ref="alpha"):
    a = Value("a")
    body = Graph("scaled_relu", [a])
    n = body.append(Node("LeakyRelu", [a], ["b"], name="leaky"))
    n.set_attr("alpha", Attr("alpha", AttrKind.FLOAT, None, ref=ref))
    body.add_output(n.output(0))
    return Function("local", "ScaledRelu", body, attributes=["alpha"], opset_imports={"": 21})


def test_local_function_call_and_body():
    m, g, _, (add, mul, relu) = simple()
    f = _function()
    m.functions[f.key] = f
    m.opset_imports["local"] = 1
    n = g.append(Node("ScaledRelu", [relu.output(0)], ["sr"], {"alpha": 0.2}, domain="local", name="call"))
    g.set_output(0, n.output(0))
    verify(m)
    verify_function(f, m)
    n.append_input(relu.output(0))
    fails(m, "'call'", "local function")


def test_function_in_registered_domain_needs_no_registration():
    m, g, _, (add, mul, relu) = simple()
    f = _function()
    f.domain = "edgec"
    m.functions[f.key] = f
    m.opset_imports["edgec"] = 1
    g.append(Node("ScaledRelu", [relu.output(0)], ["sr"], domain="edgec", name="call"))
    verify(m)


def test_function_body_errors_are_reported():
    m, *_ = simple()
    f = _function()
    m.functions[f.key] = f
    f.graph.nodes[0].set_input(0, Value("ghost"))
    fails(m, "function 'local::ScaledRelu'", "'leaky'", "'ghost'")


def test_function_attribute_ref_must_exist():
    m, *_ = simple()
    f = _function(ref="beta")
    m.functions[f.key] = f
    fails(m, "'leaky'", "'beta'")


def test_attribute_ref_outside_function():
    m, g, _, (add, mul, relu) = simple()
    relu.set_attr("alpha", Attr("alpha", AttrKind.FLOAT, None, ref="alpha"))
    fails(m, "'relu'", "outside a function")


def test_function_key_mismatch():
    m, *_ = simple()
    f = _function()
    m.functions[("local", "Other", "")] = f
    fails(m, "ScaledRelu", "key")


# --- speed ----------------------------------------------------------------------------------------------------
def test_10k_node_chain_verifies_quickly():
    x = Value("x", f32(1, 16))
    g = Graph("chain", [x])
    w = g.add_constant(np.ones((1, 16), np.float32), "w")
    v = x
    for i in range(10_000):
        n = g.append(Node("Add" if i % 2 else "Relu", [v, w] if i % 2 else [v]))
        v = n.output(0)
        v.type = f32(1, 16)
    g.add_output(v)
    m = Model(g, {"": 21})
    verify(m)  # warm the schema cache
    t = time.perf_counter()
    verify(m)
    assert time.perf_counter() - t < 2.0


def test_wide_graph_verifies_quickly():
    """One value with 10k users and 10k graph outputs: no quadratic checks."""
    x = Value("x", f32(1, 3))
    g = Graph("wide", [x])
    for _ in range(10_000):
        n = g.append(Node("Relu", [x]))
        n.output(0).type = f32(1, 3)
        g.add_output(n.output(0))
    m = Model(g, {"": 21})
    t = time.perf_counter()
    verify(m)
    assert time.perf_counter() - t < 2.0
