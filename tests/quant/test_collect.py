"""Running the IR model with intermediates exposed, and streaming statistics collection."""

from __future__ import annotations

import os
import threading
import time
import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import CalibrationError
from edgec.frontend.onnx_import import from_proto
from edgec.ir.parser import parse_model
from edgec.ir.printer import print_model
from edgec.quant import collect
from edgec.quant.collect import ModelRunner, collect_statistics, run_model
from edgec.quant.data import load_calibration


def _conv_proto(cut_at: str | None = None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    out = "y"
    if cut_at is not None:
        nodes = nodes[: [n.output[0] for n in nodes].index(cut_at) + 1]
        out = cut_at
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _ort(proto: onnx.ModelProto, feeds):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture()
def conv():
    return from_proto(_conv_proto())


def test_run_model_intermediates_equal_cut_model(conv) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    before = print_model(conv)
    got = run_model(conv, {"x": x}, outputs=["c", "r", "y", "x", "w"])
    assert print_model(conv) == before  # the caller's model is untouched
    for name in ("c", "r"):
        np.testing.assert_array_equal(got[name], _ort(_conv_proto(cut_at=name), {"x": x})[0])
    np.testing.assert_array_equal(got["y"], _ort(_conv_proto(), {"x": x})[0])
    np.testing.assert_array_equal(got["x"], x)
    assert got["w"].shape == (4, 3, 3, 3)
    assert list(run_model(conv, {"x": x})) == ["y"]  # default: the graph outputs
    with pytest.raises(CalibrationError, match="'nope' is not a value"):
        run_model(conv, {"x": x}, outputs=["nope"])
    with pytest.raises(CalibrationError, match="no feed for model input 'x'"):
        run_model(conv, {})


def test_session_cache_and_runner(conv) -> None:
    collect.clear_session_cache()
    x = np.ones((1, 3, 8, 8), np.float32)
    a = run_model(conv, {"x": x}, outputs=["r"])
    b = run_model(conv, {"x": x.astype(np.float64)}, outputs=["r"])  # same-kind cast of the feed
    assert len(collect._CACHE) == 1
    np.testing.assert_array_equal(a["r"], b["r"])
    runner = ModelRunner(conv, ["r", "y"])
    assert runner.outputs == ["r", "y"]
    np.testing.assert_array_equal(runner.run({"x": x})["r"], a["r"])
    runner.close()


def test_untyped_intermediates_and_edgec_ops() -> None:
    m = parse_model("""opset(ai.onnx=17, edgec=1)
graph @g(%x: tensor<2x3x4xf32>) -> (%y: tensor<2x3x4xf32>) {
  %a = onnx.Add(%x, %x)
  %g = edgec.Gelu(%a)
  %y = onnx.Neg(%g) : tensor<2x3x4xf32>
  return %y
}""")
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    before = print_model(m)
    got = run_model(m, {"x": x}, outputs=["a", "g", "y"])
    assert print_model(m) == before
    np.testing.assert_allclose(got["a"], 2 * x)
    np.testing.assert_allclose(got["y"], -got["g"])


def test_collect_statistics_conv(conv, tmp_path, capsys) -> None:
    x = np.random.default_rng(3).standard_normal((10, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    data = load_calibration(str(tmp_path / "c.npz"), conv)
    stats = collect_statistics(conv, data, ["c", "r", "x"], histogram=True, per_channel_axis={"c": 1, "r": 1},
                               batch_size=3)
    assert "calibrating: 10 samples in 4 batches" in capsys.readouterr().err
    full = run_model(conv, {"x": x}, outputs=["c", "r"])
    for n in ("c", "r"):
        s, ref = stats[n], full[n].astype(np.float64)
        assert s.min == pytest.approx(ref.min(), abs=1e-5) and s.max == pytest.approx(ref.max(), abs=1e-5)
        assert s.mean == pytest.approx(ref.mean(), abs=1e-5) and s.count == ref.size and s.batches == 4
        np.testing.assert_allclose(s.channel_mean, ref.mean(axis=(0, 2, 3)), atol=1e-5)
        assert s.histogram.total == ref.size
    assert stats["x"].min == x.min() and stats["r"].min == 0


def test_collect_progress_env(conv, monkeypatch, capsys) -> None:
    data = load_calibration("synthetic:4", conv)
    monkeypatch.setenv("EDGEC_PROGRESS", "1")
    collect_statistics(conv, data, ["r"], batch_size=2)
    err = capsys.readouterr().err
    assert "\rcalibrating [" in err and "4/4 samples" in err
    collect_statistics(conv, data, ["r"], progress=False)
    assert capsys.readouterr().err == ""


def test_peak_memory_does_not_grow_with_batches() -> None:
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((64, 32768)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["big"]), helper.make_node("Relu", ["big"], ["r"]),
         helper.make_node("ReduceMean", ["r"], ["y"], keepdims=0)],
        "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    m = from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    per_batch = 8 * 32768 * 4  # bytes of one intermediate of one batch (1 MiB)

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def peak(batches: int):
        """(tracemalloc peak: numpy side, peak RSS sampled during the run: includes onnxruntime outputs)."""
        data = load_calibration(f"synthetic:{8 * batches}", m)
        top, done = [rss()], threading.Event()

        def sample() -> None:
            while not done.is_set():
                top[0] = max(top[0], rss())
                time.sleep(0.002)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        tracemalloc.start()
        try:
            collect_statistics(m, data, ["big", "r"], histogram=True, batch_size=8, progress=False)
            traced = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            done.set()
            t.join()
        return traced, top[0]

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc to sample RSS")
    (t5, r5), (t50, r50) = peak(5), peak(50)
    # 50 batches of 2 intermediates would be 100 MiB if kept; the peak stays that of a few batches
    assert t50 < t5 + 2 * per_batch, (t5, t50)
    assert r50 < r5 + 32 * per_batch, (r5 >> 20, r50 >> 20)  # keeping them all would add 100 MiB
