"""External data: lazy import, streaming export, in-place re-save, and a >2 GiB model."""

from __future__ import annotations

import hashlib
import os
import resource

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.backends.onnx_export import save_model
from edgec.frontend.onnx_import import load_model
from edgec.ir import ExternalTensor

F = TensorProto.FLOAT


def _mlp(tmp_path, name="m.onnx", location="m.onnx.data") -> str:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(256).astype(np.float32), "b")
    small = numpy_helper.from_array(np.float32(0.5), "half")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
         helper.make_node("Mul", ["hb", "half"], ["y"], name="mul")], "mlp",
        [helper.make_tensor_value_info("x", F, [2, 64])], [helper.make_tensor_value_info("y", F, [2, 256])], [w, b, small])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / name)
    onnx.save(m, path, save_as_external_data=True, location=location, size_threshold=512)
    return path


def _externals(model):
    return [v.const for g in model.all_graphs() for v in g.initializers.values() if isinstance(v.const, ExternalTensor)]


def _x():
    return {"x": np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)}


def test_lazy_roundtrip(tmp_path, ort_run, bit_equal):
    src = _mlp(tmp_path)
    model = load_model(src)
    ext = _externals(model)
    assert {t.dims for t in ext} == {(64, 256), (256,)}
    assert all(t._array is None for t in ext)  # nothing read yet
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = str(out_dir / "copy.onnx")
    save_model(model, dst, external_data=True)
    assert all(t._array is None for t in ext)  # streamed, not loaded
    assert sorted(os.listdir(out_dir)) == ["copy.onnx", "copy.onnx.data"]
    saved = onnx.load(dst, load_external_data=False)
    assert {t.name for t in saved.graph.initializer if t.data_location == TensorProto.EXTERNAL} == {"w", "b"}
    onnx.checker.check_model(dst, full_check=True)
    assert bit_equal(ort_run(src, _x()), ort_run(dst, _x()))


def test_save_inline(tmp_path, ort_run, bit_equal):
    src = _mlp(tmp_path)
    dst = str(tmp_path / "inline.onnx")
    save_model(load_model(src), dst, external_data=False)
    assert not os.path.exists(dst + ".data")
    assert all(t.data_location != TensorProto.EXTERNAL for t in onnx.load(dst, load_external_data=False).graph.initializer)
    save_model(load_model(src), str(tmp_path / "auto.onnx"))  # automatic: small model stays inline
    assert not os.path.exists(str(tmp_path / "auto.onnx.data"))
    assert bit_equal(ort_run(src, _x()), ort_run(dst, _x()))


def test_save_over_own_data_file(tmp_path, ort_run, bit_equal):
    src = _mlp(tmp_path)
    want = ort_run(src, _x())
    model = load_model(src)
    w_before = _externals(model)[0].numpy().copy()
    save_model(model, src, external_data=True, size_threshold=16)  # rewrites m.onnx.data while reading it
    assert bit_equal(want, ort_run(src, _x()))
    assert np.array_equal(_externals(model)[0].numpy(), w_before)  # the IR still reads the right bytes
    assert np.array_equal(_externals(load_model(src))[0].numpy(), w_before)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]


def _sha(path, offset, n):
    with open(path, "rb") as f:
        f.seek(offset)
        return hashlib.sha256(f.read(n)).hexdigest()


@pytest.mark.large
def test_over_2gib(tmp_path):
    """A 2.1 GiB model of sparse-file weights loads, and saves back streamed with equal bytes."""
    n = 180 * 1024 * 1024  # floats per tensor: 720 MiB each, 2.1 GiB in all
    names = ["w0", "w1", "w2"]
    data = tmp_path / "big.onnx.data"
    rng = np.random.default_rng(0)
    patches = {}
    with open(data, "wb") as f:
        f.truncate(4 * n * len(names))
        for k in range(len(names)):  # a few non-zero slices so the checksums mean something
            for off in (k * 4 * n, k * 4 * n + 2 * n + 123, (k + 1) * 4 * n - (1 << 20)):
                f.seek(off)
                f.write(rng.bytes(1 << 20))
                patches[off] = 1 << 20
    inits = []
    for k, name in enumerate(names):
        t = TensorProto(name=name, data_type=F, dims=[n], data_location=TensorProto.EXTERNAL)
        for key, val in (("location", data.name), ("offset", str(k * 4 * n)), ("length", str(4 * n))):
            e = t.external_data.add()
            e.key, e.value = key, val
        inits.append(t)
    g = helper.make_graph([helper.make_node("Sum", names, ["y"], name="sum")], "big", [],
                          [helper.make_tensor_value_info("y", F, [n])], inits)
    src = tmp_path / "big.onnx"
    src.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    try:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model = load_model(str(src))
        ext = _externals(model)
        assert len(ext) == 3 and sum(t.length for t in ext) > 2 ** 31
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        dst = out_dir / "big.onnx"
        save_model(model, str(dst))  # automatic: > 1.8 GB of tensors goes external
        assert all(t._array is None for t in ext)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 256 * 1024  # KiB: no weights in memory
        out_data = str(dst) + ".data"
        assert os.path.getsize(out_data) >= 4 * n * len(names)
        back = load_model(str(dst))
        for t_in, t_out in zip(ext, _externals(back)):
            assert t_out.length == t_in.length
            for off in (0, 2 * n + 123, t_in.length - (1 << 20), n + 7):
                assert _sha(t_in.path, t_in.offset + off, 1 << 20) == _sha(t_out.path, t_out.offset + off, 1 << 20)
    finally:
        for p in list(tmp_path.rglob("*")):
            if p.is_file():
                p.unlink()


def test_exotic_dtypes_to_external(tmp_path):
    """In-memory tensors of packed and ml_dtypes element types written to external data read back equal."""
    import ml_dtypes

    arrays = {
        "bf16": np.arange(1000, dtype=np.float32).astype(ml_dtypes.bfloat16),
        "i4": (np.arange(3001) % 16 - 8).astype(ml_dtypes.int4),
        "f8": np.linspace(-4, 4, 2000).astype(ml_dtypes.float8_e4m3fn),
        "flags": np.arange(2048) % 3 == 0,
        "zeros": np.zeros((256, 1024), np.float32),  # becomes a hole in the data file
    }
    inits = [numpy_helper.from_array(a, k) for k, a in arrays.items()]
    g = helper.make_graph([helper.make_node("Identity", [k], [k + "_out"], name=k) for k in arrays], "g", [],
                          [helper.make_tensor_value_info(k + "_out", t.data_type, t.dims) for k, t in zip(arrays, inits)],
                          inits)
    src = tmp_path / "src.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]), str(src))
    dst = str(tmp_path / "dst.onnx")
    save_model(load_model(str(src)), dst, external_data=True, size_threshold=100)
    back = onnx.load(dst)
    assert all(t.data_location == TensorProto.EXTERNAL for t in onnx.load(dst, load_external_data=False).graph.initializer)
    for t_in, t_out in zip(inits, back.graph.initializer):
        assert t_out.name == t_in.name
        a, b = numpy_helper.to_array(t_in), numpy_helper.to_array(t_out)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    loaded = load_model(dst)
    assert np.array_equal(loaded.graph.initializers["i4"].const.numpy(), arrays["i4"])
