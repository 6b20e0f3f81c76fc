"""Inline models: big raw_data initializers stay in the file (lazy), and saving streams them back in."""

from __future__ import annotations

import io
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.backends import wire_writer
from edgec.backends.onnx_export import save_model, to_proto
from edgec.errors import ModelLoadError, UnsupportedModelError
from edgec.frontend import wire
from edgec.frontend.onnx_import import from_proto, load_model
from edgec.ir import ArrayTensor, Attr, AttrKind, DType, ExternalTensor, Node, Value

F = TensorProto.FLOAT
DIMS = (17, 241)  # 4097 elements: odd, so 4-bit types end on a half byte
KINDS = [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8, TensorProto.UINT8,
         TensorProto.INT4, TensorProto.UINT4, TensorProto.INT64, TensorProto.BOOL, TensorProto.DOUBLE,
         TensorProto.FLOAT8E4M3FN, TensorProto.INT32, TensorProto.UINT16]


def _values(kind: int, rng: np.random.Generator) -> np.ndarray:
    dt = helper.tensor_dtype_to_np_dtype(kind)
    if kind == TensorProto.BOOL:
        return rng.random(DIMS) > 0.5
    if kind in (TensorProto.INT4, TensorProto.UINT4):
        lo = -8 if kind == TensorProto.INT4 else 0
        return rng.integers(lo, lo + 16, DIMS).astype(dt)
    if np.issubdtype(np.dtype(dt), np.integer):
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), DIMS).astype(dt)
    arr = rng.standard_normal(DIMS).astype(np.float32)
    arr.flat[:3] = [np.nan, np.inf, -0.0]
    return arr.astype(dt)


def _dtype_model(tmp_path, name="dtypes.onnx") -> tuple:
    """Every kind as a big initializer (each feeding an Identity), plus a small one."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_values(k, rng), f"t{k}") for k in KINDS]
    inits.append(numpy_helper.from_array(np.arange(4, dtype=np.float32), "small"))
    nodes = [helper.make_node("Identity", [t.name], [f"o_{t.name}"], name=f"id_{t.name}") for t in inits]
    outs = [helper.make_tensor_value_info(f"o_{t.name}", t.data_type, list(t.dims)) for t in inits]
    m = helper.make_model(helper.make_graph(nodes, "dtypes", [], outs, inits),
                          opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    path = tmp_path / name
    onnx.save(m, str(path))
    return str(path), {t.name: numpy_helper.to_array(t) for t in inits}


def _mlp(tmp_path, name="mlp.onnx") -> str:
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((128, 16)).astype(np.float32), "w2")
    half = numpy_helper.from_array(np.float32(0.5), "half")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), helper.make_node("Add", ["h", "b1"], ["hb"], name="add"),
         helper.make_node("Relu", ["hb"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w2"], ["m2"], name="mm2"),
         helper.make_node("Mul", ["m2", "half"], ["y"], name="mul")], "mlp",
        [helper.make_tensor_value_info("x", F, [2, 64])], [helper.make_tensor_value_info("y", F, [2, 16])], [w1, b1, w2, half])
    path = str(tmp_path / name)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _x():
    return {"x": np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)}


def _consts(model):
    return {v.name: v.const for v in model.graph.initializers.values()}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _one_line_error(path: str) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and os.path.basename(path) in msg, msg
    return msg


# --- loading ----------------------------------------------------------------------------------------

def test_lazy_load_is_bit_identical(tmp_path):
    path, want = _dtype_model(tmp_path)
    model = load_model(path)
    consts = _consts(model)
    for k in KINDS:
        t = consts[f"t{k}"]
        assert isinstance(t, ExternalTensor) and t._array is None, k
        assert t.path == os.path.realpath(path) and t.dtype == DType(k) and t.dims == DIMS
    assert isinstance(consts["small"], ArrayTensor)  # under the threshold: read eagerly
    eager = _consts(from_proto(onnx.load(path), str(tmp_path)))
    for name, arr in want.items():
        assert _same(consts[name].numpy(), arr), name
        assert _same(eager[name].numpy(), arr), name


def test_spans_point_at_raw_data(tmp_path):
    path, want = _dtype_model(tmp_path)
    proto, spans = wire.read_model_lazy(path)
    assert len(spans) == len(KINDS) and all(not t.HasField("raw_data") for i, t in enumerate(proto.graph.initializer) if i in spans)
    full = onnx.load(path)
    data = open(path, "rb").read()
    for i, (off, n) in spans.items():
        assert data[off:off + n] == full.graph.initializer[i].raw_data
        full.graph.initializer[i].ClearField("raw_data")
    assert proto.SerializeToString(deterministic=True) == full.SerializeToString(deterministic=True)


def test_no_big_tensors_takes_eager_path(tmp_path):
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                            [helper.make_tensor_value_info("x", F, [2])],
                                            [helper.make_tensor_value_info("y", F, [2])]),
                          opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / "tiny.onnx"
    p.write_bytes(m.SerializeToString())
    assert wire.read_model_lazy(str(p)) is None
    assert [n.op_type for n in load_model(str(p)).graph] == ["Relu"]


def test_two_graph_fields_fall_back_to_eager(tmp_path):
    path, want = _dtype_model(tmp_path)
    extra = onnx.ModelProto()
    extra.graph.doc_string = "merged"
    p = tmp_path / "merged.onnx"
    p.write_bytes(open(path, "rb").read() + extra.SerializeToString())  # protobuf merges the two graph fields
    assert wire.read_model_lazy(str(p)) is None
    model = load_model(str(p))
    assert model.graph.doc_string == "merged"
    assert all(isinstance(t, ArrayTensor) for t in _consts(model).values())
    assert _same(_consts(model)["t1"].numpy(), want["t1"])


# --- saving -----------------------------------------------------------------------------------------

def test_save_inline_streams_byte_identical(tmp_path):
    path, want = _dtype_model(tmp_path)
    model = load_model(path)
    ref = to_proto(model).SerializeToString(deterministic=True)  # reads the tensors through to_proto
    model = load_model(path)
    a, b = str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")
    save_model(model, a)
    save_model(model, b, external_data=False)
    assert all(t._array is None for t in _consts(model).values() if isinstance(t, ExternalTensor))  # streamed
    assert open(a, "rb").read() == ref == open(b, "rb").read()  # deterministic, same as in-memory serialization
    onnx.checker.check_model(a, full_check=True)
    back = onnx.load(a)
    for t in back.graph.initializer:
        assert _same(numpy_helper.to_array(t), want[t.name]), t.name


def test_save_array_tensors_inline(tmp_path):
    path, want = _dtype_model(tmp_path)
    model = load_model(path)
    for v in model.graph.initializers.values():  # in-memory tensors take the memoryview route
        v.const = ArrayTensor(np.array(v.const.numpy()), v.const.dtype)
    out = str(tmp_path / "arr.onnx")
    save_model(model, out)
    assert open(out, "rb").read() == to_proto(model).SerializeToString(deterministic=True)
    for name, t in _consts(load_model(out)).items():
        assert _same(t.numpy(), want[name]), name


def test_save_external_from_inline(tmp_path, ort_run, bit_equal):
    src = _mlp(tmp_path)
    model = load_model(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = str(out_dir / "ext.onnx")
    save_model(model, dst, external_data=True)
    assert sorted(os.listdir(out_dir)) == ["ext.onnx", "ext.onnx.data"]
    saved = onnx.load(dst, load_external_data=False)
    assert {t.name for t in saved.graph.initializer if t.data_location == TensorProto.EXTERNAL} == {"w1", "w2"}
    onnx.checker.check_model(dst, full_check=True)
    assert bit_equal(ort_run(src, _x()), ort_run(dst, _x()))
    inline = str(tmp_path / "back.onnx")
    save_model(load_model(dst), inline, external_data=False)  # external -> inline, streamed
    assert bit_equal(ort_run(src, _x()), ort_run(inline, _x()))
    assert open(inline, "rb").read() == open(src, "rb").read()  # onnx.save and edgec agree byte for byte


def test_save_over_source_inline(tmp_path, ort_run, bit_equal):
    src = _mlp(tmp_path)
    want = ort_run(src, _x())
    model = load_model(src)
    before = {k: np.array(t.numpy()) for k, t in _consts(model).items()}
    model = load_model(src)  # nothing read yet: the save must read the file it replaces
    save_model(model, src)
    assert sorted(os.listdir(tmp_path)) == ["mlp.onnx"]
    assert bit_equal(want, ort_run(src, _x()))
    onnx.checker.check_model(src, full_check=True)
    for k, t in _consts(model).items():  # the IR now reads the new file
        assert _same(t.numpy(), before[k]), k
    save_model(model, src)  # and again, from the retargeted tensors
    assert bit_equal(want, ort_run(src, _x()))
    for k, t in _consts(load_model(src)).items():
        assert _same(t.numpy(), before[k]), k


def test_save_over_source_external_with_high_threshold(tmp_path, ort_run, bit_equal):
    src = _mlp(tmp_path)  # w1 32 KiB, b1 512 B (eager), w2 8 KiB
    want = ort_run(src, _x())
    model = load_model(src)
    before = {k: np.array(t.numpy()) for k, t in _consts(model).items()}
    model = load_model(src)
    save_model(model, src, external_data=True, size_threshold=16 << 10)  # w1 external, w2 stays in the model file
    saved = onnx.load(src, load_external_data=False)
    assert {t.name for t in saved.graph.initializer if t.data_location == TensorProto.EXTERNAL} == {"w1"}
    consts = _consts(model)
    assert consts["w1"].path == os.path.realpath(src + ".data") and consts["w2"].path == os.path.realpath(src)
    for k, t in consts.items():
        assert _same(t.numpy(), before[k]), k
    assert bit_equal(want, ort_run(src, _x()))


def test_tensor_moved_out_of_initializers_survives_save_over_source(tmp_path):
    src = _mlp(tmp_path)
    model = load_model(src)
    w2 = _consts(model)["w2"]
    want = np.array(w2.numpy())
    w2._array = None  # forget the mapping: the tensor must not read the replaced file afterwards
    node = Node("Constant", [], ["w2_copy"], name="c")
    node.set_attr("value", Attr("value", AttrKind.TENSOR, w2))
    model.graph.append(node)
    model.graph.add_output(node.outputs[0])
    save_model(model, src)
    assert _same(w2.numpy(), want) and w2.read_bytes() == want.tobytes()
    back = load_model(src)
    assert _same(next(n for n in back.graph if n.name == "c").attrs["value"].value.numpy(), want)
    assert _same(_consts(back)["w2"].numpy(), want)


def test_too_big_for_inline(tmp_path):
    data = tmp_path / "huge.bin"
    with open(data, "wb") as f:
        f.truncate(1 << 31)  # sparse: costs no disk
    t = ExternalTensor(str(data), 0, 1 << 31, DType.UINT8, (1 << 31,))
    model = load_model(_mlp(tmp_path))
    v = Value("huge", None, t)
    model.graph.add_initializer(v)
    with pytest.raises(UnsupportedModelError, match="2 GiB"):
        save_model(model, str(tmp_path / "out.onnx"), external_data=False)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]  # temp file removed
    assert t._array is None
    proto = to_proto(load_model(_mlp(tmp_path, "m2.onnx")))
    proto.graph.initializer[0].ClearField("raw_data")
    with pytest.raises(OverflowError):
        wire_writer.write_model(io.BytesIO(), proto.SerializeToString(), {0: wire_writer.Payload(1 << 31, lambda out: None)})
    with pytest.raises(ValueError):  # a payload for an initializer that already has raw_data
        wire_writer.write_model(io.BytesIO(), proto.SerializeToString(), {1: wire_writer.Payload(4, lambda out: None)})


# --- malformed files --------------------------------------------------------------------------------

def _graph_field(data: bytes) -> wire.Field:
    return next(f for f in wire.fields(data, 0, len(data)) if f.number == wire.MODEL_GRAPH)


def test_truncated_anywhere_in_graph(tmp_path):
    path = _mlp(tmp_path)
    data = open(path, "rb").read()
    g = _graph_field(data)
    proto, spans = wire.read_model_lazy(path)
    raw_starts = [off for off, _ in spans.values()]
    cuts = set(range(g.value_start + 1, g.end, max(1, (g.end - g.value_start) // 40)))
    cuts |= {1, 2, g.len_pos, g.value_start, g.end - 1} | {s + d for s in raw_starts for d in (-2, -1, 0, 1, 100)}
    cut_path = str(tmp_path / "cut.onnx")
    for cut in sorted(cuts):
        with open(cut_path, "wb") as f:
            f.write(data[:cut])
        _one_line_error(cut_path)


def _patch_len(data: bytes, f: wire.Field, new_len: int) -> bytes:
    return data[:f.len_pos] + wire.encode_varint(new_len) + data[f.value_start:]


def test_graph_length_lies(tmp_path):
    path = _mlp(tmp_path)
    data = open(path, "rb").read()
    g = _graph_field(data)
    p = str(tmp_path / "liar.onnx")
    for new_len in (g.end - g.value_start + 1, g.end - g.value_start + 10 ** 6, (g.end - g.value_start) // 2,
                    (1 << 62)):
        with open(p, "wb") as f:
            f.write(_patch_len(data, g, new_len))
        _one_line_error(p)


def test_initializer_and_raw_data_lengths_lie(tmp_path):
    path = _mlp(tmp_path)
    data = open(path, "rb").read()
    g = _graph_field(data)
    init = next(f for f in wire.fields(data, g.value_start, g.end) if f.number == wire.GRAPH_INITIALIZER)
    raw = next(f for f in wire.fields(data, init.value_start, init.end) if f.number == wire.TENSOR_RAW_DATA)
    p = str(tmp_path / "liar.onnx")
    for f, delta in ((init, 1), (init, 5000), (raw, 1), (raw, 70000)):
        with open(p, "wb") as out:
            out.write(_patch_len(data, f, f.end - f.value_start + delta))
        _one_line_error(p)


def test_raw_data_size_mismatch_is_reported_lazily(tmp_path):
    t = TensorProto(name="w", data_type=F, dims=[2], raw_data=bytes(4096))
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [helper.make_tensor_value_info("x", F, [2])],
                          [helper.make_tensor_value_info("y", F, [2])], [t])
    p = tmp_path / "m.onnx"
    p.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert wire.read_model_lazy(str(p)) is not None
    msg = _one_line_error(str(p))
    assert "'w'" in msg and "4096 bytes" in msg


def test_varints():
    for n in (0, 1, 127, 128, 300, 1 << 31, (1 << 64) - 1):
        enc = wire.encode_varint(n)
        assert wire.read_varint(enc, 0, len(enc)) == (n, len(enc))
    for bad in (b"\x80", b"\xff" * 11, b"\xff" * 9 + b"\x7f"):
        with pytest.raises(wire.WireError):
            wire.read_varint(bad, 0, len(bad))
