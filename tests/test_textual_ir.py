"""Textual IR: printer, parser, round trips and errors."""

from __future__ import annotations

import struct

import ml_dtypes  # noqa: F401  (numpy types of the low-precision dtypes)
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgec.errors import IRParseError
from edgec.ir import (ArrayTensor, Attr, AttrKind, DType, ExternalTensor, Function, Graph, MapType, Model, Node,
                      OptionalType, QuantParams, SequenceType, Shape, SparseTensor, SparseTensorType, TensorType,
                      Value, tensor)
from edgec.ir.parser import parse_model, parse_type
from edgec.ir.printer import assert_ir_equal, ir_equal, print_graph, print_model, print_node, print_type, tensor_equal

F32 = DType.FLOAT


def roundtrip(m: Model) -> Model:
    """print (no elision) -> parse -> compare -> print again: identical text."""
    text = print_model(m, elide_limit=None)
    m2 = parse_model(text)
    assert_ir_equal(m, m2)
    assert print_model(m2, elide_limit=None) == text
    return m2


# --- a model that uses everything -----------------------------------------------------------------
def build_full_model() -> Model:
    x = Value("x", tensor(F32, ["N", 3, None, 4]))
    w = Value("w", TensorType(F32, Shape((2, 2))), ArrayTensor(np.array([[1.5, -0.0], [np.inf, np.nan]], np.float32)))
    w.doc_string = "weights"
    w.metadata_props = {"origin": "conv1"}
    cond = Value("cond", tensor(DType.BOOL, []))
    g = Graph("main", [x, w, cond])
    g.add_initializer(w)  # an initializer that is also a graph input
    g.doc_string = "the main graph"
    g.metadata_props = {"k": "v"}

    q = QuantParams(np.array([0.5, 0.25], np.float32), np.array([0, 3], np.int8), axis=0)
    qw = Value("qw", TensorType(DType.INT8, Shape((2, 2)), q), ArrayTensor(np.array([[1, -2], [127, -128]], np.int8)))
    g.add_initializer(qw)
    g.add_initializer(Value("s", None, ArrayTensor(np.array(["a", "b\"\n", "é"], dtype=object))))
    g.add_initializer(Value("h", None, ArrayTensor(np.array([1.0, np.nan, -np.inf, 65504.0], np.float16))))
    g.add_initializer(Value("bf", None, ArrayTensor(np.array([0.1, 3.0], np.float32).astype(ml_dtypes.bfloat16))))
    g.add_initializer(Value("i4", None, ArrayTensor(np.array([7, -8, 0], np.int64).astype(ml_dtypes.int4))))
    g.add_initializer(Value("c", None, ArrayTensor(np.array([1 + 2j, np.nan], np.complex64))))
    g.add_initializer(Value("u64", None, ArrayTensor(np.array([2**64 - 1], np.uint64))))
    g.add_initializer(Value("scalar", None, ArrayTensor(np.array(2.0, np.float64))))
    g.add_initializer(Value("empty", None, ArrayTensor(np.zeros((0, 3), np.float32))))
    nanbits = np.array([0x7FC00001], np.uint32).view(np.float32)
    g.add_initializer(Value("payload", None, ArrayTensor(nanbits)))
    sp = SparseTensor(ArrayTensor(np.array([1.0, 2.0], np.float32)), ArrayTensor(np.array([[0, 1], [2, 3]], np.int64)), (3, 4))
    g.add_initializer(Value("sp", SparseTensorType(F32, Shape((3, 4))), sp))

    add = g.append(Node("Add", [x, w], ["a/b:0"], name="/layer1/Add"))
    add.doc_string = "adds"
    add.metadata_props = {"m": "1"}
    t = add.output()
    t.type = tensor(F32, ["N", 3, None, 4])
    drop = g.append(Node("Dropout", [t, None, None], ["d", None], {"ratio": 0.5}, name="drop"))
    drop.output(0).type = t.type

    # If with outer-scope captures (%d, %qw) in both branches
    then_out = Value("then_out")
    tg = Graph("then_branch", [], [])
    tg.append(Node("Identity", [drop.output(0)], [then_out]))
    tg.add_output(then_out)
    eg = Graph("else_branch")
    neg = eg.append(Node("Neg", [drop.output(0)], ["else_out"]))
    eg.add_output(neg.output())
    if_node = g.append(Node("If", [cond], ["r"], {"then_branch": tg, "else_branch": eg}, name="if"))

    attrs = {
        "f": Attr("f", AttrKind.FLOAT, 1.0),
        "f_nan": Attr("f_nan", AttrKind.FLOAT, float("nan")),
        "f_inf": Attr("f_inf", AttrKind.FLOAT, float("-inf")),
        "i": Attr("i", AttrKind.INT, -7),
        "s": Attr("s", AttrKind.STRING, "he said \"hi\"\n"),
        "sb": Attr("sb", AttrKind.STRING, b"\x00\xff raw"),
        "t": Attr("t", AttrKind.TENSOR, ArrayTensor(np.arange(6, dtype=np.int32).reshape(2, 3))),
        "floats": Attr("floats", AttrKind.FLOATS, [1.0, 2.0, 0.1]),
        "ints": Attr("ints", AttrKind.INTS, [1, -2, 3]),
        "strings": Attr("strings", AttrKind.STRINGS, ["a", "b c"]),
        "tensors": Attr("tensors", AttrKind.TENSORS, [ArrayTensor(np.array([True, False]))]),
        "graphs": Attr("graphs", AttrKind.GRAPHS, [Graph("g0", outputs=[]), Graph("g1")]),
        "sparse": Attr("sparse", AttrKind.SPARSE_TENSOR, sp),
        "sparses": Attr("sparses", AttrKind.SPARSE_TENSORS, [sp, sp]),
        "type": Attr("type", AttrKind.TYPE_PROTO, SequenceType(tensor(F32, [2]))),
        "types": Attr("types", AttrKind.TYPE_PROTOS, [OptionalType(None), MapType(DType.INT64, tensor(F32))]),
        "empty_floats": Attr("empty_floats", AttrKind.FLOATS, []),
        "empty_ints": Attr("empty_ints", AttrKind.INTS, []),
        "empty_strings": Attr("empty_strings", AttrKind.STRINGS, []),
        "empty_tensors": Attr("empty_tensors", AttrKind.TENSORS, []),
        "empty_graphs": Attr("empty_graphs", AttrKind.GRAPHS, []),
        "empty_sparse": Attr("empty_sparse", AttrKind.SPARSE_TENSORS, []),
        "empty_types": Attr("empty_types", AttrKind.TYPE_PROTOS, []),
        "undef": Attr("undef", AttrKind.UNDEFINED, None),
        "weird name": Attr("weird name", AttrKind.INT, 1),
    }
    attrs["i"].doc_string = "an int"
    custom = Node("FusedThing", [if_node.output(), qw], 2, attrs, domain="com.microsoft", name="fused", overload="v2")
    g.append(custom)
    custom.output(0).type = SequenceType(OptionalType(TensorType(DType.UINT8, Shape(None))))
    custom.output(1).type = MapType(DType.STRING, SparseTensorType(DType.DOUBLE, Shape((5,))))
    odd = g.append(Node("Op.With.Dots", [t], ["odd"], domain="onnx", name="odd"))  # a domain literally named onnx
    call = g.append(Node("MyFn", [t, odd.output()], ["y"], {"alpha": 2.0}, domain="custom", name="call"))
    call.output().type = TensorType(DType.UINT8, Shape((2,)), QuantParams(np.float32(0.1), np.uint8(128)))
    call.output().doc_string = "result"
    g.add_output(call.output())
    g.add_output(custom.output(0))
    g.add_output(x)  # an input that is also an output

    # function with attribute references and defaults
    a, b = Value("a"), Value("b")
    fg = Graph("MyFn", [a, b])
    mul = fg.append(Node("Mul", [a, b], ["prod"]))
    mul.set_attr("alpha", Attr("alpha", AttrKind.FLOAT, None, ref="alpha"))
    mul.set_attr("axes", Attr("axes", AttrKind.INTS, None, ref="my axes"))
    fg.add_output(mul.output())
    fn = Function("custom", "MyFn", fg, attributes=["alpha"],
                  attribute_defaults={"beta": Attr("beta", AttrKind.FLOAT, 0.5), "e": Attr("e", AttrKind.INTS, [])},
                  opset_imports={"": 17})
    fn.doc_string = "my function"
    fn2 = Function("custom", "MyFn", Graph("body2"), overload="v2")

    m = Model(g, {"": 17, "com.microsoft": 1, "custom": 1}, ir_version=9)
    m.producer_name, m.producer_version = "pytorch", "2.13"
    m.domain, m.model_version, m.doc_string = "ai.test", 3, "doc"
    m.metadata_props = {"author": "me", "quoted \"key\"": "x"}
    m.training_info = [b"\x01\x02"]
    m.functions[fn.key] = fn
    m.functions[fn2.key] = fn2
    return m


def test_full_model_round_trip():
    m = build_full_model()
    text = print_model(m, elide_limit=None)
    m2 = roundtrip(m)
    assert 'onnx.Add(%x, %w) loc("/layer1/Add")' in text.replace('%"a/b:0" #{', "")  or '%"a/b:0"' in text
    assert '%"a/b:0"' in text
    assert "com.microsoft.FusedThing:v2(" in text
    assert '"onnx"."Op.With.Dots"' in text
    assert "alpha:float=$alpha" in text and 'axes:ints=$"my axes"' in text
    assert "empty_ints:ints=[]" in text and "undef:undefined=?" in text
    assert "nan:0x7fc00001" in text
    # the If branches use outer values: the parsed branches refer to the outer Value objects
    if2 = [n for n in m2.graph if n.op_type == "If"][0]
    d = [n for n in m2.graph if n.op_type == "Dropout"][0].output(0)
    assert if2.attrs["then_branch"].value.nodes[0].inputs[0] is d
    assert if2.attrs["then_branch"].value.parent is if2
    assert m2.graph.initializers["w"].is_graph_input()
    assert not m2.graph.initializers["qw"].is_graph_input()
    assert m2.graph.initializers["payload"].const.numpy().view(np.uint32)[0] == 0x7FC00001


def test_ir_equal_detects_differences():
    m1, m2 = build_full_model(), build_full_model()
    assert ir_equal(m1, m2)
    [n for n in m2.graph if n.op_type == "Add"][0].name = "other"
    assert not ir_equal(m1, m2)
    m3 = build_full_model()
    m3.graph.initializers["h"].const = ArrayTensor(np.array([1.0, np.nan, -np.inf, 1000.0], np.float16))
    with pytest.raises(AssertionError, match="h"):
        assert_ir_equal(m1, m3)
    m4 = build_full_model()
    m4.functions[("custom", "MyFn", "")].graph.nodes[0].attrs["alpha"].ref = "beta"
    assert not ir_equal(m1, m4)


def test_print_is_deterministic():
    assert print_model(build_full_model()) == print_model(build_full_model())
    assert print_model(build_full_model(), elide_limit=None) == print_model(build_full_model(), elide_limit=None)


# --- text -> IR -> text ---------------------------------------------------------------------------
HAND_WRITTEN = """\
// edgec textual IR
model opset(ai.onnx=17, com.microsoft=1) #{ir_version=9, producer_name="pytorch", producer_version="2.13"} {
  graph @main(%x: tensor<"N"x3x224x224xf32>, %w: tensor<2x3x1x1xf32> = dense<2x3x1x1xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>) -> (%y: tensor<"N"x2x112x112xf32>, %"out:1": tensor<"N"x2x112x112xf32>) {
    %b = const dense<2xf32 [0.5, -1.0]>
    %q = const : tensor<2xi8, quant<scale=0.5, zero_point=0>> = dense<2xi8 [1, -1]>
    %pc = const : tensor<2x4xu8, quant<scale=[0.5, 0.25], zero_point=[1, 2], axis=0>> = dense<2x4xu8 [0, 1, 2, 3, 4, 5, 6, 7]>
    %bl = const : tensor<2x4xi4, quant<scale=dense<2x2xf32 [1.0, 2.0, 3.0, 4.0]>, zero_point=dense<2x2xi4 [0, 0, 1, -1]>, axis=1, block_size=2>> = dense<2x4xi4 [0, 1, 2, 3, 4, 5, 6, 7]>
    %c = onnx.Conv(%x, %w, %b) {kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[2, 2]} : tensor<"N"x2x112x112xf32> loc("/conv1/Conv")
    %y, _ = onnx.Dropout(%c) : tensor<"N"x2x112x112xf32>, ? loc("d") #{doc="drop it"}
    %"out:1" = com.microsoft.FusedConv(%y, _, %b) {activation="Relu", alpha=0.01} : tensor<"N"x2x112x112xf32> loc("fc")
    return %y, %"out:1"
  }
  func @custom.MyFn(%a, %b) -> (%z) attrs[alpha, beta=0.5] opset(ai.onnx=17) {
    %z = onnx.LeakyRelu(%a) {alpha:float=$alpha} loc("lr")
    return %z
  }
}
"""


def test_text_round_trip_identical():
    m = parse_model(HAND_WRITTEN)
    assert print_model(m, elide_limit=None) == HAND_WRITTEN
    assert m.opset_imports == {"": 17, "com.microsoft": 1}
    assert m.ir_version == 9
    q = m.graph.initializers["q"].type.quant
    assert q.scale.shape == () and q.zero_point.dtype == np.int8
    bl = m.graph.initializers["bl"].type.quant
    assert bl.block_size == 2 and bl.axis == 1 and bl.zero_point.dtype == ml_dtypes.int4
    f = m.functions[("custom", "MyFn", "")]
    assert f.attributes == ["alpha"] and f.attribute_defaults["beta"].value == 0.5
    a = f.graph.nodes[0].attrs["alpha"]
    assert a.ref == "alpha" and a.kind == AttrKind.FLOAT
    d = m.graph.nodes[1]
    assert d.outputs[1] is None and d.doc_string == "drop it"
    fc = m.graph.nodes[2]
    assert fc.domain == "com.microsoft" and fc.inputs[1] is None
    assert m.graph.outputs[1].name == "out:1"


def test_bare_graph_defaults_and_friendly_syntax():
    m = parse_model("""
        // a comment
        graph @g(%x: tensor<4xf32>) {
          %y = onnx.Relu(%x)   // no type, no loc
          %z = onnx.Add(%y, %x) : tensor<4xf32>
          return %z
        }""")
    assert m.opset_imports == {"": 21}
    y = m.graph.nodes[0].output()
    assert y.type is None and m.graph.nodes[0].name  # the graph names unnamed nodes
    assert m.graph.outputs[0].type == tensor(F32, [4])
    m2 = parse_model("opset(ai.onnx=13) graph @g() {}")
    assert m2.opset_imports == {"": 13} and len(m2.graph) == 0
    m3 = parse_model("model opset() { graph @g() {} }")
    assert m3.opset_imports == {}


def test_forward_references_and_captures():
    text = """graph @g(%c: tensor<bool>, %x: tensor<f32>) -> (%r) {
      %r = onnx.If(%c) {else_branch=graph @e() -> (%t2) {
        %t2 = onnx.Neg(%late) loc("n")
        return %t2
      }, then_branch=graph @t() -> (%x) {
      }} loc("if")
      %late = onnx.Abs(%x) loc("abs")
      return %r
    }"""
    m = parse_model(text)
    late = m.graph.nodes[1].output()
    if_node = m.graph.nodes[0]
    assert if_node.attrs["else_branch"].value.nodes[0].inputs[0] is late
    assert if_node.attrs["then_branch"].value.outputs[0] is m.graph.inputs[1]
    roundtrip(m)


def test_types_print_and_parse():
    cases = [
        (tensor(F32, []), "tensor<f32>"),
        (tensor(F32), "tensor<*xf32>"),
        (tensor(DType.INT64, ["batch size", None, 3]), 'tensor<"batch size"x?x3xi64>'),
        (SequenceType(None), "seq<?>"),
        (OptionalType(SequenceType(tensor(DType.FLOAT16, [1]))), "opt<seq<tensor<1xf16>>>"),
        (MapType(DType.INT64, tensor(F32, [2])), "map<i64, tensor<2xf32>>"),
        (SparseTensorType(DType.DOUBLE, Shape((3, 4))), "sparse_tensor<3x4xf64>"),
        (None, "?"),
        (TensorType(DType.INT8, Shape((4,)), QuantParams(np.float32(0.5), np.int8(-1))),
         "tensor<4xi8, quant<scale=0.5, zero_point=-1>>"),
    ]
    for t, text in cases:
        assert print_type(t) == text
        back = parse_type(text)
        assert print_type(back) == text
        assert back == t or (t is not None and t.quant is not None)


def test_print_node_and_graph():
    x = Value("x", tensor(F32, [2]))
    g = Graph("g", [x])
    n = g.append(Node("Relu", [x], ["y"], name="r"))
    n.output().type = tensor(F32, [2])
    assert print_node(n) == '%y = onnx.Relu(%x) : tensor<2xf32> loc("r")'
    g.add_output(n.output())
    assert print_graph(g).splitlines()[0] == "graph @g(%x: tensor<2xf32>) -> (%y: tensor<2xf32>) {"
    assert print_graph(g).splitlines()[-2].strip() == "return %y"


# --- elision ----------------------------------------------------------------------------------------
def test_elision(tmp_path):
    big = np.arange(100, dtype=np.float32).reshape(10, 10)
    x = Value("x", tensor(F32, [10, 10]))
    g = Graph("g", [x])
    w = g.add_constant(big, "w")
    data = np.arange(64, dtype=np.float32)
    (tmp_path / "m.data").write_bytes(b"\0" * 16 + data.tobytes())
    e = Value("e", None, ExternalTensor(str(tmp_path / "m.data"), 16, 256, F32, (64,)))
    g.add_initializer(e)
    n = g.append(Node("Add", [x, w], ["y"]))
    g.add_output(n.output())
    m = Model(g)
    m.base_dir = str(tmp_path)
    text = print_model(m)
    assert "elided<10x10xf32 min=0, max=99, mean=49.5, sha256=" in text
    assert 'external<64xf32 "m.data", offset=16, length=256>' in text
    assert str(tmp_path) not in text
    with pytest.raises(IRParseError, match=r"line 4:\d+: tensor values are elided"):
        parse_model(text)
    m2 = parse_model(text, allow_elided=True, base_dir=str(tmp_path))
    w2 = m2.graph.initializers["w"]
    assert w2.type == tensor(F32, [10, 10]) and not w2.const.numpy().any()
    assert np.array_equal(m2.graph.initializers["e"].const.numpy(), data)
    # without elision the external tensor is printed inline and compares equal by value
    roundtrip(m)


# --- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, where, msg", [
    ("graph @g() {\n  %y = onnx.Relu(%x)\n}", "line 2:18", "undefined value %x"),
    ("graph @g(%x: tensor<3xq9>) {}", "line 1:23", "unknown element type 'q9'"),
    ("graph @g() {\n  %a = const dense<2xf32 [1.0]>\n}", "line 2:26", "expected 2 values"),
    ("graph @g() {\n  %a = const dense<2xi8 [1, 300]>\n}", "line 2:25", "out of range for i8"),
    ("graph @g(%x) {\n  %y = Relu(%x)\n}", "line 2:8", "needs a domain"),
    ("graph @g(%x) {\n  %y = onnx.Relu(%x) {a=[]}\n}", "line 2:25", "empty list needs a kind"),
    ("graph @g(%x) {\n  %y = onnx.Relu(%x)\n  %y = onnx.Relu(%x)\n}", "line 3:3", "redefinition of %y"),
    ("graph @g(%x) {\n  %y = onnx.Relu(%x) {a:ints=1.5}\n}", "line 2:30", "declared ints"),
    ("graph @g(%x) {\n  %y = onnx.Relu(%x) : tensor<f32>, tensor<f32>\n}", "line 2:24", "2 result types for 1 results"),
    ("graph @g(%x: tensor<i64>) -> (%x: tensor<f32>) {\n}", "line 1:31", "declared tensor<f32>"),
    ('graph @g(%x) {\n  %y = onnx.Relu(%x) {s="abc}\n}', "line 2:", "string"),
    ("graph @g(%x) {\n  %y = onnx.Relu(%x)\n", "line 3:1", "expected '}'"),
    ("graph @g() {} extra", "line 1:15", "unexpected 'extra'"),
    ("model opset(ai.onnx=x) { graph @g() {} }", "line 1:21", "expected an opset version"),
    ("graph @g(%x) {\n  %y = onnx.Relu(%x) #{colour=1}\n}", "line 2:24", "unknown key 'colour'"),
    ("graph @g(%x) -> (%y) {\n  %y = onnx.Relu(%x)\n  return %x\n}", "line 3:10", "does not match"),
])
def test_parse_errors(text, where, msg):
    with pytest.raises(IRParseError) as info:
        parse_model(text)
    s = str(info.value)
    assert s.startswith(where), s
    assert msg in s, s
    assert "\n" not in s


# --- property tests -------------------------------------------------------------------------------------
_FLOAT_DTYPES = [DType.FLOAT, DType.DOUBLE, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ,
                 DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ, DType.FLOAT8E8M0, DType.FLOAT4E2M1, DType.FLOAT6E2M3,
                 DType.FLOAT6E3M2]
_INT_DTYPES = [DType.INT8, DType.UINT8, DType.INT16, DType.UINT16, DType.INT32, DType.UINT32, DType.INT64,
               DType.UINT64, DType.INT4, DType.UINT4, DType.INT2, DType.UINT2]
_BITS = {DType.FLOAT4E2M1: 4, DType.FLOAT6E2M3: 6, DType.FLOAT6E3M2: 6}


@st.composite
def arrays(draw):
    dt = draw(st.sampled_from(_FLOAT_DTYPES + _INT_DTYPES + [DType.BOOL, DType.STRING, DType.COMPLEX64,
                                                              DType.COMPLEX128]))
    dims = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    n = int(np.prod(dims, dtype=np.int64))
    npdt = dt.numpy
    if dt == DType.STRING:
        vals = draw(st.lists(st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=5),
                                       st.binary(max_size=5)), min_size=n, max_size=n))
        arr = np.empty(n, dtype=object)
        arr[:] = [v if isinstance(v, bytes) else v.encode("utf-8") for v in vals]
    elif dt in (DType.COMPLEX64, DType.COMPLEX128):
        w = 32 if dt == DType.COMPLEX64 else 64
        parts = draw(st.lists(st.floats(width=w, allow_nan=False), min_size=2 * n, max_size=2 * n))
        arr = (np.array(parts[0::2]) + 1j * np.array(parts[1::2])).astype(npdt)
    elif dt == DType.BOOL:
        arr = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    elif dt.is_float or dt in (DType.INT4, DType.UINT4, DType.INT2, DType.UINT2):
        # any bit pattern (all NaN payloads included) of the storage
        bits = _BITS.get(dt, dt.itemsize_bits)
        raw = draw(st.lists(st.integers(0, 2 ** bits - 1), min_size=n, max_size=n))
        ut = np.dtype(f"<u{npdt.itemsize}")
        if dt in (DType.INT4, DType.UINT4, DType.INT2, DType.UINT2):
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if dt.is_signed else (0, 2 ** bits - 1)
            arr = np.array([lo + r % (hi - lo + 1) for r in raw], dtype=np.int64).astype(npdt)
        else:
            arr = np.array(raw, dtype=ut).view(npdt)
    else:
        info = np.iinfo(npdt)
        arr = np.array(draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n, max_size=n)), dtype=npdt)
    return ArrayTensor(arr.reshape(dims), dt)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays())
def test_random_tensors_round_trip(t):
    g = Graph("g")
    g.add_initializer(Value("c", None, t))
    n = g.append(Node("Constant", [], ["k"], {"value": t}, name="k"))
    g.add_output(n.output())
    m = Model(g)
    m2 = roundtrip(m)
    assert tensor_equal(m2.graph.initializers["c"].const, t)


_OPS = [("Relu", 1, 1), ("Add", 2, 1), ("Split", 1, 2), ("Sum", 3, 1), ("Dropout", 1, 2)]
_TYPES = st.sampled_from([None, tensor(F32, [2]), tensor(DType.INT64, ["N", None]), tensor(F32),
                          SequenceType(tensor(F32, [])), OptionalType(None)])
_ATTRS = st.dictionaries(
    st.sampled_from(["axis", "alpha", "name", "ints", "floats", "x y"]),
    st.one_of(st.integers(-5, 5), st.floats(width=32), st.text(max_size=4),
              st.lists(st.integers(-3, 3), min_size=1, max_size=3),
              st.lists(st.floats(allow_nan=False), min_size=1, max_size=3)),
    max_size=3)


@st.composite
def graphs(draw):
    nin = draw(st.integers(1, 3))
    inputs = [Value(f"in{i}", draw(_TYPES)) for i in range(nin)]
    g = Graph("main", inputs)
    avail = list(inputs)
    for k in range(draw(st.integers(0, 6))):
        op, nargs, nout = draw(st.sampled_from(_OPS))
        args = [draw(st.one_of(st.sampled_from(avail), st.none())) if i else draw(st.sampled_from(avail))
                for i in range(nargs)]
        outs = [None if (j and draw(st.booleans())) else f"v{k}_{j}" for j in range(nout)]
        node = g.append(Node(op, args, outs, draw(_ATTRS), name=draw(st.sampled_from([f"n{k}", f"/blk/{k}:x"]))))
        for o in node.outputs:
            if o is not None:
                o.type = draw(_TYPES)
                avail.append(o)
    for v in draw(st.lists(st.sampled_from(avail), min_size=1, max_size=3)):
        g.add_output(v)
    return Model(g, {"": draw(st.integers(7, 23))})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_graphs_round_trip(m):
    roundtrip(m)


@settings(max_examples=50, deadline=None)
@given(st.floats(width=32), st.floats())
def test_float_attrs_are_bit_exact(f32, f64):
    g = Graph("g")
    g.append(Node("Foo", [], [], {"a": f32, "b": f64}, domain="x", name="n"))
    m2 = roundtrip(Model(g))
    node = m2.graph.nodes[0]
    assert struct.pack("<d", node.attrs["b"].value) == struct.pack("<d", f64)
