"""Calibration data sources, validation errors, labels and batching."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from edgec.errors import CalibrationError, EdgecError
from edgec.ir.parser import parse_model
from edgec.quant import data as qdata
from edgec.quant.data import SYNTHETIC_WARNING, CalibrationData, load_calibration

ONE = parse_model("""
graph @g(%x: tensor<"N"x4xf32>) -> (%y: tensor<"N"x4xf32>) {
  %y = onnx.Relu(%x)
  return %y
}""")

TWO = parse_model("""
graph @g(%x: tensor<"N"x4xf32>, %ids: tensor<"N"x3xi64>) -> (%y: tensor<"N"x4xf32>) {
  %y = onnx.Relu(%x)
  return %y
}""")

STATIC = parse_model("""
graph @g(%x: tensor<1x4xf32>) -> (%y: tensor<1x4xf32>) {
  %y = onnx.Relu(%x)
  return %y
}""")

MIXED = parse_model("""
graph @g(%x: tensor<"N"x4xf32>, %m: tensor<1x2xf32>) -> (%y: tensor<"N"x4xf32>) {
  %y = onnx.Relu(%x)
  return %y
}""")


def _rows(data: CalibrationData, bs=None, name="x") -> list:
    return [b[name].shape[0] for b in data.batches(bs)]


def _all(data: CalibrationData, bs=None, name="x") -> np.ndarray:
    return np.concatenate([b[name] for b in data.batches(bs)])


def test_npz_inputs_and_labels(tmp_path) -> None:
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    p = tmp_path / "c.npz"
    np.savez(p, x=x, labels=np.arange(10))
    d = load_calibration(str(p), ONE)
    assert d.input_names == ["x"] and d.num_samples == 10 and not d.synthetic
    assert _rows(d, 4) == [4, 4, 2]
    np.testing.assert_array_equal(_all(d, 4), x)
    np.testing.assert_array_equal(_all(d, 3), x)  # re-iterable, any batch size
    np.testing.assert_array_equal(d.labels(), np.arange(10))
    assert "10 samples" in d.describe() and "labels" in d.describe()


def test_npz_members_memory_mapped_or_lazy(tmp_path) -> None:
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.savez(tmp_path / "s.npz", x=x)
    np.savez_compressed(tmp_path / "c.npz", x=x)
    stored = qdata._open_npz(str(tmp_path / "s.npz"))["x"]
    assert isinstance(stored, np.memmap)
    np.testing.assert_array_equal(np.asarray(stored), x)
    lazy = qdata._open_npz(str(tmp_path / "c.npz"))["x"]
    assert isinstance(lazy, qdata._LazyMember) and lazy._data is None and lazy.shape == (6, 4)
    for f in ("s.npz", "c.npz"):
        np.testing.assert_array_equal(_all(load_calibration(str(tmp_path / f), ONE), 4), x)


def test_npz_no_labels_and_dtype_cast(tmp_path) -> None:
    p = tmp_path / "c.npz"
    np.savez(p, x=np.ones((3, 4), np.float64), ids=np.ones((3, 3), np.int32))
    d = load_calibration(str(p), TWO)
    assert d.labels() is None
    b = next(d.batches())
    assert b["x"].dtype == np.float32 and b["ids"].dtype == np.int64


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.ones((3, 4), np.float32), "a": np.ones(3), "b": np.ones(3)}, r"'a', 'b' are not model inputs.*inputs are: x"),
    ({"y": np.ones((3, 4), np.float32)}, r"no array for input 'x'"),
    ({"x": np.ones((3, 5), np.float32)}, r"input 'x'.*does not match"),
    ({"x": np.ones((3,), np.float32)}, r"input 'x'.*rank"),
    ({"x": np.ones((0, 4), np.float32)}, r"no calibration samples"),
])
def test_npz_errors(tmp_path, arrays, match) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(CalibrationError, match=match) as e:
        load_calibration(str(p), ONE)
    assert "\n" not in str(e.value) and isinstance(e.value, EdgecError)
    if "samples" not in match:
        assert "bad.npz" in str(e.value)


def test_dtype_and_count_errors(tmp_path) -> None:
    p = tmp_path / "f.npz"
    np.savez(p, x=np.ones((3, 4), np.float32), ids=np.ones((3, 3), np.float32))
    with pytest.raises(CalibrationError, match=r"f\.npz: input 'ids'.*float32 cannot be cast.*int64"):
        load_calibration(str(p), TWO)
    np.savez(p, x=np.ones((3, 4), np.float32), ids=np.ones((4, 3), np.int64))
    with pytest.raises(CalibrationError, match="inconsistent sample counts"):
        load_calibration(str(p), TWO)
    np.savez(p, x=np.ones((3, 4), np.float32), y=np.ones(5))
    with pytest.raises(CalibrationError, match="5 labels for 3 samples"):
        load_calibration(str(p), ONE)


def test_missing_and_unsupported(tmp_path) -> None:
    with pytest.raises(CalibrationError, match="nope.npz: no such"):
        load_calibration(str(tmp_path / "nope.npz"), ONE)
    (tmp_path / "c.txt").write_text("1")
    with pytest.raises(CalibrationError, match="unsupported"):
        load_calibration(str(tmp_path / "c.txt"), ONE)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="bad.npz: not a readable"):
        load_calibration(str(tmp_path / "bad.npz"), ONE)


def test_npy_single_input(tmp_path) -> None:
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    d = load_calibration(str(tmp_path / "x.npy"), ONE, max_samples=3)
    assert d.num_samples == 3
    np.testing.assert_array_equal(_all(d, 2), x[:3])
    with pytest.raises(CalibrationError, match="single-input.*x, ids"):
        load_calibration(str(tmp_path / "x.npy"), TWO)


def test_folder_concatenates_sorted(tmp_path) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x=b, y=np.arange(3, 8))
    np.savez(tmp_path / "a.npz", x=a, y=np.arange(3))
    d = load_calibration(str(tmp_path), ONE)
    assert d.num_samples == 8
    assert _rows(d, 4) == [4, 4]  # batches span the file boundary
    np.testing.assert_array_equal(_all(d, 4), np.concatenate([a, b]))
    np.testing.assert_array_equal(d.labels(), np.arange(8))
    d5 = load_calibration(str(tmp_path), ONE, max_samples=5)
    assert _rows(d5, 4) == [4, 1] and len(d5.labels()) == 5
    np.savez(tmp_path / "c.npz", x=b)
    with pytest.raises(CalibrationError, match="c.npz: labels present in some"):
        load_calibration(str(tmp_path), ONE)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="holds no .npz"):
        load_calibration(str(empty), ONE)


def test_static_first_dim_fed_per_sample(tmp_path) -> None:
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.savez(tmp_path / "rows.npz", x=x)
    np.savez(tmp_path / "stacked.npz", x=x.reshape(6, 1, 4))
    for f in ("rows.npz", "stacked.npz"):
        d = load_calibration(str(tmp_path / f), STATIC)
        assert d.num_samples == 6 and not d.batchable
        shapes = [b["x"].shape for b in d.batches(4)]
        assert shapes == [(1, 4)] * 6
        np.testing.assert_array_equal(_all(d, 4), x)
        assert any("one at a time" in w for w in d.warnings)


def test_symbolic_first_dim_batches_and_stacked(tmp_path) -> None:
    x = np.arange(24, dtype=np.float32).reshape(3, 2, 4)  # 3 samples, each a batch of 2 rows
    np.savez(tmp_path / "s.npz", x=x)
    d = load_calibration(str(tmp_path / "s.npz"), ONE)
    assert d.num_samples == 3 and d.batchable
    assert [b["x"].shape for b in d.batches(2)] == [(4, 4), (2, 4)]
    np.testing.assert_array_equal(_all(d, 2), x.reshape(6, 4))


def test_mixed_static_and_symbolic_inputs(tmp_path) -> None:
    np.savez(tmp_path / "m.npz", x=np.ones((4, 4), np.float32), m=np.ones((4, 2), np.float32))
    d = load_calibration(str(tmp_path / "m.npz"), MIXED)
    assert [(b["x"].shape, b["m"].shape) for b in d.batches(3)] == [((1, 4), (1, 2))] * 4


def test_callable_from_file(tmp_path) -> None:
    (tmp_path / "reader.py").write_text(textwrap.dedent("""
        import numpy as np
        def dicts():
            return [{"x": np.full((2, 4), i, np.float32)} for i in range(3)]
        def pairs():
            for i in range(3):
                yield {"x": np.full((2, 4), i, np.float32)}, np.array([i, i])
        class _R:
            def __init__(self): self.i = 0
            def get_next(self):
                self.i += 1
                return {"x": np.ones((1, 4), np.float32)} if self.i <= 2 else None
        def ort_reader():
            return _R()
        def broken():
            raise RuntimeError("disk on fire")
        def wrong():
            return [np.ones(3)]
        NOT_CALLABLE = 3
    """))
    base = str(tmp_path / "reader.py")
    d = load_calibration(base + ":dicts", ONE)
    assert d.num_samples == 6 and d.labels() is None
    assert _rows(d, 4) == [4, 2]
    np.testing.assert_array_equal(_all(d, 4)[:, 0], [0, 0, 1, 1, 2, 2])
    p = load_calibration(base + ":pairs", ONE)
    np.testing.assert_array_equal(p.labels(), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(_all(p, 5)[:, 0], [0, 0, 1, 1, 2, 2])  # generator: re-iterable
    assert load_calibration(base + ":ort_reader", ONE).num_samples == 2
    with pytest.raises(CalibrationError, match="reader raised RuntimeError: disk on fire"):
        load_calibration(base + ":broken", ONE)
    with pytest.raises(CalibrationError, match="item 0: expected a dict"):
        load_calibration(base + ":wrong", ONE)
    with pytest.raises(CalibrationError, match="not a callable"):
        load_calibration(base + ":NOT_CALLABLE", ONE)
    with pytest.raises(CalibrationError, match="no such file"):
        load_calibration(str(tmp_path / "missing.py") + ":f", ONE)


def test_callable_from_module(tmp_path, monkeypatch) -> None:
    (tmp_path / "calib_plugin_mod.py").write_text(
        "import numpy as np\ndef make():\n    return [{'x': np.ones((3, 4), np.float32), 'y': np.zeros(3)}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    d = load_calibration("calib_plugin_mod:make", ONE)
    assert d.num_samples == 3 and d.labels().tolist() == [0, 0, 0]
    with pytest.raises(CalibrationError, match="cannot import module 'no_such_mod_xyz'"):
        load_calibration("no_such_mod_xyz:make", ONE)
    sys.modules.pop("calib_plugin_mod", None)


def test_synthetic() -> None:
    m = parse_model("""
graph @g(%x: tensor<"N"x"S"x4xf32>, %ids: tensor<"N"x3xi64>, %s: tensor<2xf32>) -> (%y) {
  %t = const dense<5x2xf32 [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]>
  %y = onnx.Gather(%t, %ids)
  return %y
}""")
    d = load_calibration("synthetic:6", m, seed=3)
    assert d.synthetic and d.num_samples == 6 and SYNTHETIC_WARNING in d.warnings
    assert not d.batchable  # %s has a static first dim
    b = next(d.batches())
    assert b["x"].shape == (1, qdata.SYNTHETIC_SYMBOLIC_DIM, 4) and b["s"].shape == (2,)
    assert any("dim S of input 'x'" in w for w in d.warnings)
    ids = _all(d, name="ids")
    assert ids.min() >= 0 and ids.max() < 5  # bounded by the Gather table
    again = _all(load_calibration("synthetic:6", m, seed=3), name="x")
    np.testing.assert_array_equal(_all(d, name="x"), again)
    d2 = load_calibration("synthetic", ONE)
    assert d2.num_samples == qdata.DEFAULT_SYNTHETIC_SAMPLES and d2.batchable
    np.testing.assert_array_equal(_all(d2, 1), _all(d2, 5))  # independent of the batch size
    with pytest.raises(CalibrationError, match="synthetic:N"):
        load_calibration("synthetic:many", ONE)


def test_synthetic_int_range_default() -> None:
    m = parse_model("""
graph @g(%ids: tensor<"N"x3xi32>) -> (%y) {
  %y = onnx.Identity(%ids)
  return %y
}""")
    ids = _all(load_calibration("synthetic:50", m), name="ids")
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 100 and ids.max() > 50
