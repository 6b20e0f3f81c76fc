"""Malformed, unsafe or unsupported models: each raises an edgec error whose one-line message names the file and the culprit."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import ModelLoadError, UnsupportedModelError
from edgec.frontend import validate
from edgec.frontend.onnx_import import load_model

F = TensorProto.FLOAT


def _vi(name):
    return helper.make_tensor_value_info(name, F, [2])


def _model(nodes, inputs=("x",), outputs=("y",), inits=(), opsets=(("", 17),), ir=8):
    g = helper.make_graph(list(nodes), "g", [_vi(i) for i in inputs], [_vi(o) for o in outputs], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=ir)


def _save(tmp_path, model, name="m.onnx"):
    p = tmp_path / name
    p.write_bytes(model.SerializeToString())
    return str(p)


def _raises(path, exc, *culprits):
    with pytest.raises(exc) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and os.path.basename(path) in msg, msg
    for c in culprits:
        assert c in msg, msg
    return msg


def _ext_model(tmp_path, location, *, length=8, offset=0):
    t = TensorProto(name="w", data_type=F, dims=[2], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return _save(tmp_path, _model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[t]))


def test_missing_file(tmp_path):
    _raises(str(tmp_path / "nope.onnx"), ModelLoadError, "nope.onnx")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    _raises(str(p), ModelLoadError, "empty")


def test_truncated_protobuf(tmp_path):
    w = numpy_helper.from_array(np.arange(1000, dtype=np.float32), "w")
    blob = _model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[w]).SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(blob[: len(blob) // 2])
    _raises(str(p), ModelLoadError, "truncated")


def test_garbage_bytes(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(bytes(range(256)) * 8)
    _raises(str(p), ModelLoadError)


def test_opset_too_new(tmp_path):
    v = validate.MAX_OPSET + 1
    _raises(_save(tmp_path, _model([helper.make_node("Relu", ["x"], ["y"])], opsets=(("", v),))),
            UnsupportedModelError, f"opset {v}")


def test_opset_too_old(tmp_path):
    _raises(_save(tmp_path, _model([helper.make_node("Relu", ["x"], ["y"])], opsets=(("", 6),))),
            UnsupportedModelError, "opset 6")


def test_ir_version_too_new(tmp_path):
    v = validate.MAX_IR_VERSION + 1
    _raises(_save(tmp_path, _model([helper.make_node("Relu", ["x"], ["y"])], ir=v)), UnsupportedModelError, f"IR version {v}")


def test_missing_default_opset_import(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], opsets=(("com.acme", 1),))
    _raises(_save(tmp_path, m), ModelLoadError, "'r'", "default-domain opset")


def test_unknown_default_domain_op(tmp_path):
    _raises(_save(tmp_path, _model([helper.make_node("FrobnicateX", ["x"], ["y"], name="f")])),
            UnsupportedModelError, "FrobnicateX")


def test_op_newer_than_declared_opset(tmp_path):
    m = _model([helper.make_node("Gelu", ["x"], ["y"], name="g")], opsets=(("", 17),))  # Gelu is opset 20
    _raises(_save(tmp_path, m), UnsupportedModelError, "Gelu", "17")


def test_undeclared_custom_domain(tmp_path):
    m = _model([helper.make_node("Foo", ["x"], ["y"], domain="com.acme", name="foo")])
    _raises(_save(tmp_path, m), ModelLoadError, "'foo'", "com.acme")


def test_dangling_input(tmp_path):
    m = _model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")])
    _raises(_save(tmp_path, m), ModelLoadError, "'add'", "ghost")


def test_dangling_name_in_subgraph(tmp_path):
    then_g = helper.make_graph([helper.make_node("Identity", ["phantom"], ["t"])], "then", [], [_vi("t")])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [_vi("e")])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)],
                          "g", [cond, _vi("x")], [_vi("y")])
    _raises(_save(tmp_path, helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])), ModelLoadError,
            "'branch'", "phantom")


def test_output_without_producer(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"])], outputs=("y", "orphan"))
    _raises(_save(tmp_path, m), ModelLoadError, "orphan", "no producer")


def test_duplicate_value_name(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")])
    _raises(_save(tmp_path, m), ModelLoadError, "'y'", "defined twice")


def test_duplicate_initializer(tmp_path):
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[w, w])
    _raises(_save(tmp_path, m), ModelLoadError, "'w'", "twice")


def test_cycle(tmp_path):
    m = _model([helper.make_node("Add", ["x", "b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2"),
                helper.make_node("Identity", ["a"], ["y"], name="n3")])
    msg = _raises(_save(tmp_path, m), ModelLoadError, "cycle")
    assert "'n1'" in msg or "'n2'" in msg


def test_unsorted_graph_is_toposorted(tmp_path):
    m = _model([helper.make_node("Neg", ["a"], ["y"], name="second"), helper.make_node("Relu", ["x"], ["a"], name="first"),
                helper.make_node("Abs", ["x"], ["unused"], name="other")])
    model = load_model(_save(tmp_path, m))
    assert [n.name for n in model.graph] == ["first", "second", "other"]


def test_external_parent_dir(tmp_path):
    (tmp_path / "w.bin").write_bytes(bytes(8))
    sub = tmp_path / "sub"
    sub.mkdir()
    t = TensorProto(name="w", data_type=F, dims=[2], data_location=TensorProto.EXTERNAL)
    e = t.external_data.add()
    e.key, e.value = "location", "../w.bin"
    p = _save(sub, _model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[t]))
    _raises(p, ModelLoadError, "'w'", "../w.bin", "'..'")


def test_external_absolute(tmp_path):
    (tmp_path / "w.bin").write_bytes(bytes(8))
    _raises(_ext_model(tmp_path, str(tmp_path / "w.bin")), ModelLoadError, "'w'", "absolute")


def test_external_symlink(tmp_path):
    (tmp_path / "real.bin").write_bytes(bytes(8))
    os.symlink(tmp_path / "real.bin", tmp_path / "link.bin")
    _raises(_ext_model(tmp_path, "link.bin"), ModelLoadError, "'w'", "symbolic link")


def test_external_file_too_short(tmp_path):
    (tmp_path / "w.bin").write_bytes(bytes(8))
    _raises(_ext_model(tmp_path, "w.bin", offset=4, length=8), ModelLoadError, "'w'", "past the end")


def test_external_missing_file(tmp_path):
    _raises(_ext_model(tmp_path, "absent.bin"), ModelLoadError, "'w'", "absent.bin")


def test_raw_data_size_mismatch(tmp_path):
    t = TensorProto(name="w", data_type=F, dims=[2], raw_data=bytes(12))
    _raises(_save(tmp_path, _model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[t])), ModelLoadError,
            "'w'", "12 bytes")


def test_no_graph(tmp_path):
    p = tmp_path / "nograph.onnx"
    p.write_bytes(onnx.ModelProto(ir_version=8).SerializeToString())
    _raises(str(p), ModelLoadError, "no graph")
