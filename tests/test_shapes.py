"""Tests of symbolic shape and type inference (edgec.ir.shapes)."""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec.ir import ArrayTensor, DType, Graph, Model, Node, Shape, TensorType, Value, tensor
from edgec.ir.core import Attr, AttrKind
from edgec.ir.shapes import (
    RULES, broadcast_dim, dim_add, dim_div, dim_mul, dim_prod, dim_sub, infer_shapes, type_from_proto, type_to_proto,
)

F32, I64, BOOL = DType.FLOAT, DType.INT64, DType.BOOL


# --- helpers -------------------------------------------------------------------------------------
class B:
    """A tiny graph builder over the IR API."""

    def __init__(self, opset: int = 21) -> None:
        self.g = Graph("g")
        self.m = Model(self.g, {"": opset})

    def input(self, name: str, dtype: DType, dims) -> Value:
        return self.g.add_input(Value(name, tensor(dtype, dims)))

    def const(self, arr, name: str = "c") -> Value:
        return self.g.add_constant(np.asarray(arr), name)

    def op(self, op_type: str, inputs: Sequence[Optional[Value]], n_out: int = 1, **attrs) -> List[Value]:
        node = Node(op_type, inputs, n_out, attrs)
        self.g.append(node)
        return list(node.outputs)

    def one(self, op_type: str, inputs: Sequence[Optional[Value]], **attrs) -> Value:
        return self.op(op_type, inputs, 1, **attrs)[0]

    def infer(self, **kw) -> int:
        return infer_shapes(self.m, **kw)


def dims(v: Value):
    return v.type.shape.dims if v.type is not None else "untyped"


# --- dim arithmetic ------------------------------------------------------------------------------
def test_dim_arithmetic():
    assert broadcast_dim("N", 1) == "N" and broadcast_dim(1, "N") == "N"
    assert broadcast_dim("N", "N") == "N" and broadcast_dim("N", 5) == 5
    assert broadcast_dim("N", "M") is None and broadcast_dim(None, 3) == 3 and broadcast_dim(None, "N") is None
    assert broadcast_dim(2, 3) is None
    assert dim_mul("N", 64) == "N*64" and dim_mul(64, "N") == "N*64"
    assert dim_add("S", 1) == "S+1" and dim_add("S+1", 1) == "S+2" and dim_sub("S+1", "S") == 1
    assert dim_sub("S", 1) == "S-1" and dim_sub(1, "S") is None
    assert dim_div("N*768", 12) == "N*64" and dim_div("N*64", "N") == 64 and dim_div("N", 2) is None
    assert dim_prod(["N", 12, 64]) == "N*768" and dim_prod(["N", None]) is None
    assert dim_mul("batch size", 2) == "batch size*2"  # opaque symbol stays one factor
    assert dim_div(dim_mul("B", "S"), "S") == "B"


def test_type_proto_roundtrip():
    t = tensor(F32, [1, "N", None])
    assert type_from_proto(type_to_proto(t)) == t
    assert type_from_proto(type_to_proto(tensor(I64))) == tensor(I64)
    assert type_from_proto(type_to_proto(t), symbols=set()) == tensor(F32, [1, None, None])


# --- rule families -------------------------------------------------------------------------------
def test_elementwise_broadcast_and_bool():
    b = B()
    x = b.input("x", F32, ["N", 3, 1])
    y = b.input("y", F32, [1, 5])
    a = b.one("Add", [x, y])
    e = b.one("Equal", [x, y])
    r = b.one("Relu", [a])
    w = b.one("Where", [e, a, b.const(np.float32(0))])
    s = b.one("Sum", [x, y, b.input("z", F32, ["N", 1, 1])])
    c = b.one("Cast", [x], to=int(DType.FLOAT16))
    cl = b.one("CastLike", [x, b.input("i", I64, [])])
    d, mask = b.op("Dropout", [x], 2)
    pr = b.one("PRelu", [x, b.const(np.ones((3, 1), np.float32))])
    assert b.infer() > 0
    assert a.type == tensor(F32, ["N", 3, 5]) and e.type == tensor(BOOL, ["N", 3, 5])
    assert r.type == a.type and w.type == a.type and s.type == a.type
    assert c.type == tensor(DType.FLOAT16, ["N", 3, 1]) and cl.type == tensor(I64, ["N", 3, 1])
    assert d.type == x.type and mask.type == tensor(BOOL, ["N", 3, 1]) and pr.type == x.type


def test_symbolic_broadcast_mismatch_stays_unknown():
    b = B()
    o = b.one("Mul", [b.input("x", F32, ["N", 4]), b.input("y", F32, ["M", 4])])
    b.infer()
    assert dims(o) == (None, 4)


def test_conv_and_auto_pad():
    b = B()
    x = b.input("x", F32, ["N", 3, 224, 224])
    w = b.const(np.zeros((64, 3, 7, 7), np.float32))
    c1 = b.one("Conv", [x, w], strides=[2, 2], pads=[3, 3, 3, 3])
    c2 = b.one("Conv", [x, w], strides=[2, 2], auto_pad="SAME_UPPER")
    c3 = b.one("Conv", [x, w], auto_pad="VALID")
    c4 = b.one("Conv", [b.input("y", F32, ["N", 3, "H", "W"]), w], pads=[3, 3, 3, 3])
    c5 = b.one("Conv", [x, w], strides=[3, 3], dilations=[2, 2], auto_pad="SAME_LOWER")
    dw = b.one("Conv", [c1, b.const(np.zeros((64, 1, 3, 3), np.float32))], group=64, pads=[1, 1, 1, 1])
    ct = b.one("ConvTranspose", [c1, b.const(np.zeros((64, 8, 4, 4), np.float32))], strides=[2, 2], pads=[1, 1, 1, 1], group=2)
    ct2 = b.one("ConvTranspose", [c1, b.const(np.zeros((64, 8, 3, 3), np.float32))], strides=[2, 2],
                output_shape=[225, 225])
    ct3 = b.one("ConvTranspose", [c1, b.const(np.zeros((64, 8, 3, 3), np.float32))], strides=[2, 2],
                pads=[1, 1, 1, 1], output_padding=[1, 1])
    b.infer()
    assert dims(c1) == ("N", 64, 112, 112) and dims(c2) == ("N", 64, 112, 112)
    assert dims(c3) == ("N", 64, 218, 218) and dims(c4) == ("N", 64, "H", "W") and dims(c5) == ("N", 64, 75, 75)
    assert dims(dw) == ("N", 64, 112, 112)
    assert dims(ct) == ("N", 16, 224, 224) and dims(ct2) == ("N", 8, 225, 225) and dims(ct3) == ("N", 8, 224, 224)


def test_pools_ceil_mode():
    b = B()
    x = b.input("x", F32, ["N", 8, 112, 112])
    m1, idx = b.op("MaxPool", [x], 2, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    m2 = b.one("MaxPool", [b.input("y", F32, [1, 1, 6, 6])], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    m3 = b.one("AveragePool", [b.input("z", F32, [1, 1, 5, 5])], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
               pads=[1, 1, 1, 1])
    m4 = b.one("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    g = b.one("GlobalAveragePool", [x])
    b.infer()
    assert dims(m1) == ("N", 8, 56, 56) and idx.type == tensor(I64, ["N", 8, 56, 56])
    assert dims(m2) == (1, 1, 3, 3) and dims(m3) == (1, 1, 3, 3) and dims(m4) == ("N", 8, 56, 56)
    assert dims(g) == ("N", 8, 1, 1)


def test_norms_matmul_gemm():
    b = B()
    x = b.input("x", F32, ["B", "S", 768])
    ln = b.op("LayerNormalization", [x, b.const(np.ones(768, np.float32)), None], 3, axis=-1)
    mm = b.one("MatMul", [x, b.const(np.zeros((768, 3072), np.float32))])
    bmm = b.one("MatMul", [b.input("q", F32, ["B", 12, "S", 64]), b.input("k", F32, [1, 12, 64, "S"])])
    v1 = b.one("MatMul", [b.input("v", F32, [768]), b.const(np.zeros((768, 10), np.float32))])
    v2 = b.one("MatMul", [x, b.input("u", F32, [768])])
    gm = b.one("Gemm", [b.input("a", F32, [256, "N"]), b.input("w", F32, [10, 256])], transA=1, transB=1)
    bn = b.op("BatchNormalization", [b.input("c", F32, ["N", 16, 8, 8])] + [b.const(np.zeros(16, np.float32))] * 4, 1)[0]
    b.infer()
    assert dims(ln[0]) == ("B", "S", 768) and dims(ln[1]) == ("B", "S", 1) and ln[2].type.dtype == F32
    assert dims(mm) == ("B", "S", 3072) and dims(bmm) == ("B", 12, "S", "S")
    assert dims(v1) == (10,) and dims(v2) == ("B", "S") and dims(gm) == ("N", 10) and dims(bn) == ("N", 16, 8, 8)


def test_pytorch_shape_chain_reshape():
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) keeps the batch symbol."""
    b = B()
    x = b.input("x", F32, ["N", 12, 64])
    sh = b.one("Shape", [x])
    g = b.one("Gather", [sh, b.const(np.int64(0))], axis=0)
    u = b.one("Unsqueeze", [g, b.const(np.array([0], np.int64))])
    cat = b.one("Concat", [u, b.const(np.array([-1], np.int64))], axis=0)
    r = b.one("Reshape", [x, cat])
    # a second chain: seq dims from another tensor, multiplied heads: (B, S, 12, 64) -> (B, S, 768)
    y = b.input("y", F32, ["B", "S", 12, 64])
    sy = b.one("Shape", [y])
    first2 = b.one("Slice", [sy, b.const(np.array([0], np.int64)), b.const(np.array([2], np.int64))])
    hd = b.one("Mul", [b.one("Gather", [sy, b.const(np.array([2], np.int64))]),
                       b.one("Gather", [sy, b.const(np.array([3], np.int64))])])
    r2 = b.one("Reshape", [y, b.one("Concat", [first2, hd], axis=0)])
    fl = b.one("Flatten", [y], axis=2)
    b.infer()
    assert sh.meta["shape_value"] == ("N", 12, 64) and g.type == tensor(I64, [])
    assert cat.meta["shape_value"] == ("N", -1)
    assert dims(r) == ("N", 768)
    assert hd.meta["shape_value"] == (768,) and dims(r2) == ("B", "S", 768) and dims(fl) == ("B*S", 768)


def test_torch_expand_pattern_through_where():
    """Expand(y, Where(Equal(s, -1 * ones), ones, s)) with s = [N, 4] (torch's expand export)."""
    b = B()
    x = b.input("x", F32, ["N", 3])
    n = b.one("Unsqueeze", [b.one("Gather", [b.one("Shape", [x]), b.const(np.int64(0))]), b.const(np.array([0]))])
    s = b.one("Concat", [n, b.const(np.array([4], np.int64))], axis=0)
    ones = b.one("ConstantOfShape", [b.one("Shape", [s])], value=np.array([1], np.int64))
    eq = b.one("Equal", [s, b.one("Mul", [ones, b.const(np.array(-1, np.int64))])])
    w = b.one("Where", [eq, ones, s])
    e = b.one("Expand", [b.input("y", F32, [1, 4]), w])
    b.infer()
    assert ones.meta["shape_value"] == (1, 1) and eq.meta["shape_value"] == (0, 0)
    assert w.meta["shape_value"] == ("N", 4) and dims(e) == ("N", 4)


def test_shape_ops():
    b = B()
    x = b.input("x", F32, ["N", 3, 4, 5])
    t = b.one("Transpose", [x], perm=[0, 2, 3, 1])
    sq = b.one("Squeeze", [b.input("s", F32, [1, "N", 1])], axes=[0])
    sq2 = b.one("Squeeze", [b.input("s2", F32, [1, 7, 1])])
    us = b.one("Unsqueeze", [x, b.const(np.array([-1, 1], np.int64))])
    cc = b.one("Concat", [x, b.input("y", F32, ["N", "C", 4, 5])], axis=1)
    sp = b.op("Split", [x, b.const(np.array([1, 3], np.int64))], 2, axis=3)
    sp2 = b.op("Split", [b.input("z", F32, [10, 2])], 3, axis=0, num_outputs=3)
    sl = b.one("Slice", [x, b.const(np.array([1, -1], np.int64)), b.const(np.array([2**63 - 1, 0], np.int64)),
                         b.const(np.array([1, 3], np.int64)), b.const(np.array([1, -2], np.int64))])
    sl2 = b.one("Slice", [b.input("q", F32, ["B", "S"]), b.const(np.array([1], np.int64)),
                          b.const(np.array([2**63 - 1], np.int64)), b.const(np.array([1], np.int64))])
    ex = b.one("Expand", [b.input("e", F32, [3, 1]), b.const(np.array([2, 1, 6], np.int64))])
    ti = b.one("Tile", [x, b.const(np.array([1, 2, 1, 1], np.int64))])
    pd = b.one("Pad", [x, b.const(np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64))])
    cos = b.one("ConstantOfShape", [b.one("Shape", [x])], value=np.array([0], np.int64))
    rg = b.one("Range", [b.const(np.int64(0)), b.const(np.int64(10)), b.const(np.int64(3))])
    rs = b.one("Resize", [x, None, b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    rs2 = b.one("Resize", [x, None, None, b.const(np.array([1, 3, 8, 8], np.int64))])
    b.infer()
    assert dims(t) == ("N", 4, 5, 3) and dims(sq) == ("N", 1) and dims(sq2) == (7,)
    assert dims(us) == ("N", 1, 3, 4, 5, 1) and dims(cc) == ("N", "C+3", 4, 5)
    assert [dims(v) for v in sp] == [("N", 3, 4, 1), ("N", 3, 4, 3)]
    assert [dims(v) for v in sp2] == [(4, 2), (4, 2), (2, 2)]
    assert dims(sl) == ("N", 2, 4, 2) and dims(sl2) == ("B", "S-1")
    assert dims(ex) == (2, 3, 6) and dims(ti) == ("N", 6, 4, 5) and dims(pd) == ("N", 3, 6, 9)
    assert cos.type == tensor(I64, ["N", 3, 4, 5]) and dims(rg) == (4,)
    assert dims(rs) == ("N", 3, 8, 10) and dims(rs2) == (1, 3, 8, 8)


def test_gathers_reduce_misc():
    b = B()
    x = b.input("x", F32, ["N", 5, 6])
    g = b.one("Gather", [x, b.input("i", I64, ["B", 2])], axis=1)
    ge = b.one("GatherElements", [x, b.input("j", I64, ["N", 5, 2])], axis=2)
    gnd = b.one("GatherND", [x, b.input("k", I64, ["N", 3, 1])], batch_dims=1)
    r1 = b.one("ReduceMean", [x, b.const(np.array([-1], np.int64))])
    r2 = b.one("ReduceSum", [x], keepdims=0)
    r3 = b.one("ReduceMax", [x], axes=[1], keepdims=0)
    r4 = b.one("ReduceSum", [x, b.input("ax", I64, [1])], keepdims=1)
    am = b.one("ArgMax", [x], axis=1, keepdims=0)
    tv, ti = b.op("TopK", [x, b.const(np.array([3], np.int64))], 2)
    nz = b.one("NonZero", [x])
    sm = b.one("Softmax", [x], axis=-1)
    es = b.one("Einsum", [b.input("a", F32, ["B", 4, 5]), b.input("c", F32, ["B", 5, 7])], equation="bij,bjk->bik")
    es2 = b.one("Einsum", [b.input("d", F32, [2, 3])], equation="ij")
    es3 = b.one("Einsum", [b.input("e", F32, ["B", 2, 3, 4])], equation="...ij->...ji")
    oh = b.one("OneHot", [b.input("h", I64, ["N"]), b.const(np.int64(10)), b.const(np.array([0, 1], np.float32))])
    sz = b.one("Size", [x])
    cst = b.one("Constant", [], value=ArrayTensor(np.zeros((2, 3), np.float16)))
    b.infer()
    assert dims(g) == ("N", "B", 2, 6) and dims(ge) == ("N", 5, 2) and dims(gnd) == ("N", 3, 6)
    assert dims(r1) == ("N", 5, 1) and dims(r2) == () and dims(r3) == ("N", 6) and dims(r4) == (None, None, None)
    assert am.type == tensor(I64, ["N", 6]) and dims(tv) == ("N", 5, 3) and ti.type.dtype == I64
    assert nz.type == tensor(I64, [3, None]) and sm.type == x.type
    assert dims(es) == ("B", 4, 7) and dims(es2) == (2, 3) and dims(es3) == ("B", 2, 4, 3)
    assert oh.type == tensor(F32, ["N", 10]) and sz.type == tensor(I64, []) and sz.meta["shape_value"] == ("N*30",)
    assert cst.type == tensor(DType.FLOAT16, [2, 3])


def test_quant_rnn():
    b = B()
    x = b.input("x", F32, ["N", 3])
    q = b.one("QuantizeLinear", [x, b.const(np.float32(0.1)), b.const(np.int8(0))])
    q2 = b.one("QuantizeLinear", [x, b.const(np.float32(0.1))])
    dq = b.one("DequantizeLinear", [q, b.const(np.float32(0.1)), b.const(np.int8(0))])
    seq = b.input("s", F32, ["T", "N", 10])
    w = b.const(np.zeros((2, 4 * 20, 10), np.float32))
    r = b.const(np.zeros((2, 4 * 20, 20), np.float32))
    y, yh, yc = b.op("LSTM", [seq, w, r], 3, hidden_size=20, direction="bidirectional")
    gy, gyh = b.op("GRU", [b.input("t", F32, ["N", "T", 10]), b.const(np.zeros((1, 60, 10), np.float32)),
                           b.const(np.zeros((1, 60, 20), np.float32))], 2, layout=1)
    b.infer()
    assert q.type == tensor(DType.INT8, ["N", 3]) and q2.type == tensor(DType.UINT8, ["N", 3])
    assert dq.type == tensor(F32, ["N", 3])
    assert dims(y) == ("T", 2, "N", 20) and dims(yh) == (2, "N", 20) and dims(yc) == (2, "N", 20)
    assert dims(gy) == ("N", "T", 1, 20) and dims(gyh) == ("N", 1, 20)


def test_if_merges_branches():
    b = B()
    x = b.input("x", F32, ["N", 4])
    cond = b.input("c", BOOL, [])
    then_out, else_out = Value("t"), Value("e")
    tg = Graph("then", outputs=[])
    tg.append(Node("Relu", [x], [then_out]))
    tg.add_output(then_out)
    eg = Graph("else")
    eg.append(Node("Concat", [x, x], [else_out], {"axis": 1}))
    eg.add_output(else_out)
    o = b.one("If", [cond], then_branch=tg, else_branch=eg)
    b.infer()
    assert then_out.type == tensor(F32, ["N", 4]) and else_out.type == tensor(F32, ["N", 8])
    assert o.type == tensor(F32, ["N", None])


def test_loop_carried_and_scan_outputs():
    b = B()
    x = b.input("x", F32, [1, 4])
    i, c, xin = Value("i"), Value("cin"), Value("xin")
    body = Graph("body", inputs=[i, c, xin])
    cout, xout, scan = Value("cout"), Value("xout"), Value("scan")
    body.append(Node("Identity", [c], [cout]))
    body.append(Node("Concat", [xin, xin], [xout], {"axis": 0}))  # grows every iteration
    body.append(Node("ReduceSum", [xin], [scan], {"keepdims": 0}))
    for v in (cout, xout, scan):
        body.add_output(v)
    fin, stacked = b.op("Loop", [b.const(np.int64(3)), None, x], 2, body=body)
    b.infer()
    assert xin.type == tensor(F32, [None, 4]) and xout.type == tensor(F32, [None, 4])
    assert fin.type == tensor(F32, [None, 4]) and stacked.type == tensor(F32, [None])
    assert i.type == tensor(I64, []) and cout.type == tensor(BOOL, [])


def test_loop_stable_carried_and_scan():
    b = B()
    x = b.input("x", F32, ["N", 4])
    i, c, xin = Value("i"), Value("cin"), Value("xin")
    body = Graph("body", inputs=[i, c, xin])
    cout, xout = Value("cout"), Value("xout")
    body.append(Node("Identity", [c], [cout]))
    body.append(Node("Relu", [xin], [xout]))
    body.add_output(cout)
    body.add_output(xout)
    fin = b.op("Loop", [b.const(np.int64(3)), b.const(np.bool_(True)), x], 1, body=body)[0]
    # Scan: running sum over axis 1 of (B, T, 4)
    s, e = Value("s"), Value("el")
    sb = Graph("sbody", inputs=[s, e])
    so, eo = Value("so"), Value("eo")
    sb.append(Node("Add", [s, e], [so]))
    sb.append(Node("Identity", [so], [eo]))
    sb.add_output(so)
    sb.add_output(eo)
    st, ys = b.op("Scan", [b.input("s0", F32, ["B", 4]), b.input("seq", F32, ["B", "T", 4])], 2, body=sb,
                  num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1])
    b.infer()
    assert xin.type == tensor(F32, ["N", 4]) and fin.type == tensor(F32, ["N", 4])
    assert e.type == tensor(F32, ["B", 4]) and st.type == tensor(F32, ["B", 4]) and ys.type == tensor(F32, ["B", "T", 4])


def test_merge_policy_and_conflicts():
    b = B()
    x = b.input("x", F32, ["N", 4])
    r = b.one("Relu", [x])
    r.type = tensor(F32, [None, 4])  # less precise: refined
    s = b.one("Sigmoid", [x])
    s.type = tensor(F32, [7, 5])  # conflicting: kept and reported
    q = b.one("Tanh", [x])
    q.type = tensor(F32, ["M", 4])  # different symbol: kept, no conflict
    conflicts: List[str] = []
    n = infer_shapes(b.m, conflicts=conflicts)
    assert dims(r) == ("N", 4) and dims(s) == (7, 5) and dims(q) == ("M", 4)
    assert n == 1 and len(conflicts) == 1 and "Sigmoid" in conflicts[0]
    assert infer_shapes(b.m) == 0
    assert infer_shapes(b.m, overwrite=True) == 2 and dims(s) == ("N", 4)


def test_fallback_to_onnx_for_ops_without_rule():
    b = B()
    x = b.input("x", F32, ["N", 3, 8, 8])
    assert ("", "CenterCropPad") not in RULES
    o = b.one("CenterCropPad", [x, b.const(np.array([4, 4], np.int64))], axes=[2, 3])
    det = b.one("Det", [b.input("m", F32, ["B", 3, 3])])
    cust = Node("Foo", [x], 1, domain="my.domain")
    b.g.append(cust)
    b.infer()
    assert o.type == tensor(F32, ["N", 3, 4, 4]) and det.type == tensor(F32, ["B"])
    assert cust.output(0).type is None


def test_unknown_inputs_leave_unknown():
    b = B()
    x = b.g.add_input(Value("x"))  # untyped
    r = b.one("Reshape", [b.input("y", F32, ["N", 4]), b.one("Shape", [x])])
    a = b.one("Add", [x, x])
    b.infer()
    assert r.type == TensorType(F32, Shape(None)) and a.type is None


# --- differential test against the ONNX backend node tests ----------------------------------------
def _ir_from_proto(mp: onnx.ModelProto, const_inputs: Dict[str, np.ndarray]) -> Tuple[Model, List[Value]]:
    """One-node ModelProto -> IR (inputs named in ``const_inputs`` become constants)."""
    gp = mp.graph
    g = Graph(gp.name)
    vals: Dict[str, Value] = {}
    for vi in gp.input:
        if vi.name in const_inputs:
            vals[vi.name] = g.add_constant(const_inputs[vi.name], vi.name)
        else:
            vals[vi.name] = g.add_input(Value(vi.name, type_from_proto(vi.type)))
    for t in gp.initializer:
        vals[t.name] = g.add_constant(numpy_helper.to_array(t), t.name)
    (np_,) = gp.node
    attrs = {}
    for a in np_.attribute:
        v = helper.get_attribute_value(a)
        if a.type == onnx.AttributeProto.STRING:
            v = v.decode()
        elif a.type == onnx.AttributeProto.STRINGS:
            v = [s.decode() for s in v]
        elif a.type == onnx.AttributeProto.TENSOR:
            v = ArrayTensor(numpy_helper.to_array(v), DType(v.data_type))
        elif a.type == onnx.AttributeProto.SPARSE_TENSOR:
            return None, []  # type: ignore[return-value]
        kind = AttrKind(a.type)
        attrs[a.name] = Attr(a.name, kind, list(v) if kind in (AttrKind.INTS, AttrKind.FLOATS, AttrKind.STRINGS) else v)
    node = Node(np_.op_type, [vals[n] if n else None for n in np_.input],
                [Value(n) if n else None for n in np_.output], domain=np_.domain)
    for k, a in attrs.items():
        node.set_attr(k, a)
    g.append(node)
    outs = [o for o in node.outputs]
    for o in outs:
        if o is not None:
            g.add_output(o)
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in mp.opset_import}
    return Model(g, opsets), outs


#: Node-case modules whose reference outputs take seconds to compute (pure-python pooling); pools are
#: checked against onnxruntime below instead.
_SLOW_CASE_MODULES = {"maxpool", "averagepool", "lppool"}


@pytest.fixture(scope="module")
def backend_cases():
    import importlib
    import pkgutil

    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            for _, name, _ in pkgutil.iter_modules(node_cases.__path__):
                if name not in _SLOW_CASE_MODULES and not name.startswith("ai_onnx_ml"):
                    importlib.import_module(f"{node_cases.__name__}.{name}")
    out, seen = [], set()
    for c in node_cases._NodeTestCases:
        mp = c.model
        if c.name in seen or mp is None or not c.data_sets or len(mp.graph.node) != 1:
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in mp.graph.node[0].attribute):
            continue
        seen.add(c.name)
        out.append(c)
    return out


_TOTAL = [0]


def _check_case(case, const_small: bool) -> Tuple[int, int, List[str]]:
    mp = case.model
    inputs, expected = case.data_sets[0]
    names = [vi.name for vi in mp.graph.input]
    consts: Dict[str, np.ndarray] = {}
    if const_small:
        for n, arr in zip(names, inputs):
            if isinstance(arr, (np.ndarray, np.generic)) and np.asarray(arr).dtype.kind in "iuf" and np.size(arr) <= 64:
                consts[n] = np.asarray(arr)
    model, outs = _ir_from_proto(mp, consts)
    if model is None:
        return 0, 0, []
    infer_shapes(model)
    node = next(iter(model.graph))
    ruled = (node.domain, node.op_type) in RULES
    agree, checked, bad = 0, 0, []
    for o, exp in zip([o for o in outs if o is not None], expected):
        _TOTAL[0] += 1
        if isinstance(exp, np.generic):
            exp = np.asarray(exp)
        if not isinstance(exp, np.ndarray) or not isinstance(o.type, TensorType) or not o.type.shape.is_static:
            continue
        checked += 1
        want = (DType.from_numpy(exp.dtype), tuple(exp.shape))
        got = (o.type.dtype, o.type.shape.dims)
        if exp.dtype == object:  # strings
            want = (DType.STRING, want[1])
        if got == want:
            agree += 1
        elif ruled:
            bad.append(f"{case.name}: {node.op_type} output {o.name}: got {got}, expected {want}")
    return agree, checked, bad


def test_differential_against_onnx_backend_cases(backend_cases):
    totals = [0, 0]
    bad: List[str] = []
    for case in backend_cases:
        for const in (False, True):
            a, c, b = _check_case(case, const)
            totals[0] += a
            totals[1] += c
            bad.extend(b)
    print(f"\nshape agreement: {totals[0]}/{totals[1]} outputs inferred static (of {_TOTAL[0]} expected outputs, "
          f"{len(backend_cases)} cases, with and without small constant inputs)")
    assert not bad, "\n".join(bad[:40])
    assert totals[1] > 1000


_POOL_CONFIGS = [
    # (op, input dims, attrs)
    ("MaxPool", (1, 2, 7, 9), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", (1, 2, 6, 6), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", (1, 2, 5, 5), dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ("MaxPool", (1, 2, 10, 11), dict(kernel_shape=[3, 2], strides=[3, 2], dilations=[2, 1], ceil_mode=1)),
    ("MaxPool", (1, 2, 10, 11), dict(kernel_shape=[3, 3], strides=[2, 3], pads=[1, 0, 1, 2])),
    ("MaxPool", (1, 2, 9), dict(kernel_shape=[4], strides=[3], auto_pad="SAME_UPPER")),
    ("MaxPool", (1, 2, 9, 8), dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="SAME_LOWER")),
    ("MaxPool", (1, 2, 9, 8), dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="VALID")),
    ("AveragePool", (1, 2, 7, 9), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("AveragePool", (1, 2, 5, 5), dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ("AveragePool", (1, 2, 8, 8), dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1,
                                       count_include_pad=1)),
    ("AveragePool", (1, 2, 9, 8), dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="SAME_UPPER")),
    ("LpPool", (1, 2, 7, 9), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("Conv", (1, 2, 11, 9), dict(kernel_shape=[3, 3], strides=[2, 3], dilations=[2, 1], pads=[1, 2, 0, 1])),
    ("Conv", (1, 2, 11, 9), dict(kernel_shape=[3, 4], strides=[2, 3], auto_pad="SAME_UPPER")),
    ("Conv", (1, 2, 11, 9), dict(kernel_shape=[3, 4], strides=[2, 3], auto_pad="SAME_LOWER")),
    ("Conv", (1, 2, 11, 9), dict(kernel_shape=[3, 4], strides=[2, 3], dilations=[2, 2], auto_pad="VALID")),
    ("ConvTranspose", (1, 2, 5, 4), dict(kernel_shape=[3, 3], strides=[2, 3], pads=[1, 0, 1, 1], output_padding=[1, 2])),
    ("ConvTranspose", (1, 2, 5, 4), dict(kernel_shape=[3, 2], strides=[2, 2], dilations=[2, 1])),
]


@pytest.mark.parametrize("op,in_dims,attrs", _POOL_CONFIGS)
def test_pool_and_conv_shapes_match_onnxruntime(op, in_dims, attrs):
    """Pool/Conv output shapes equal what onnxruntime computes (ceil_mode, auto_pad, dilations)."""
    ort = pytest.importorskip("onnxruntime")
    x = np.random.rand(*in_dims).astype(np.float32)
    inits = []
    names = ["x"]
    k = attrs["kernel_shape"]
    if op == "Conv":
        inits = [numpy_helper.from_array(np.random.rand(4, in_dims[1], *k).astype(np.float32), "w")]
    elif op == "ConvTranspose":
        inits = [numpy_helper.from_array(np.random.rand(in_dims[1], 4, *k).astype(np.float32), "w")]
    if inits:
        names.append("w")
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, in_dims)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializer=inits)
    mp = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    mp.ir_version = 9
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(mp.SerializeToString(), so, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0].shape
    b = B(opset=19)
    xv = b.input("x", F32, in_dims)
    ins = [xv] + ([b.const(numpy_helper.to_array(inits[0]))] if inits else [])
    y = b.one(op, ins, **attrs)
    b.infer()
    assert dims(y) == tuple(want)
