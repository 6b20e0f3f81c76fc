"""edgec.quant.sensitivity: one layer quantized at a time, ranked by its effect."""

from __future__ import annotations

import time
from typing import Any, Sequence

import onnx
import pytest
from onnx import numpy_helper

import edgec
from edgec.quant.accuracy import Evaluator, Metric, QuantConfig, copy_model, default_runner, segment_text
from edgec.quant.data import load_calibration
from edgec.quant.sensitivity import layer_output, layer_sensitivity, quantized_view
from zoo.digits import digits_cnn, write_digits_npz

DAMAGED = "/features/features.4/Conv"


def _damaged(k: float = 1000.0) -> onnx.ModelProto:
    """Second Conv's output channel 0 scaled by k, its BatchNorm compensating (same float function)."""
    p = digits_cnn()
    conv = [n for n in p.graph.node if n.op_type == "Conv"][1]
    bn = [n for n in p.graph.node if n.op_type == "BatchNormalization"][1]
    inits = {t.name: t for t in p.graph.initializer}
    for name, f in ((conv.input[1], k), (bn.input[3], k), (bn.input[4], k * k)):
        a = numpy_helper.to_array(inits[name]).copy()
        a[0] *= f
        inits[name].CopyFrom(numpy_helper.from_array(a, name))
    return p


@pytest.fixture(scope="module")
def setup(tmp_path_factory: Any) -> Any:
    d = tmp_path_factory.mktemp("sens")
    onnx.save(_damaged(), str(d / "m.onnx"))
    model = edgec.load(str(d / "m.onnx"))
    edgec.optimize(model, opt_level=1)  # BatchNorm stays: the outlier channel survives
    data = load_calibration(str(write_digits_npz(d / "cal.npz", "calibration")), model)
    cfg = QuantConfig(per_channel=False)
    res = {"calibration": data}
    layers = ["/features/features.0/Conv", DAMAGED, "/features/features.8/Conv", "/classifier/classifier.2/Gemm"]

    def build(exclude: Sequence[str]) -> Any:
        cand = copy_model(model)
        default_runner(cand, segment_text(cfg, exclude), res, False)
        return cand

    return model, data, layers, build


def test_layer_tensors(setup: Any) -> None:
    model, _, layers, build = setup
    node = next(n for n in model.graph if n.name == DAMAGED)
    assert layer_output(model, DAMAGED) == node.output(0).name  # a BatchNormalization follows, not a Relu
    assert layer_output(model, "nope") is None
    cand = build([n for n in layers if n != DAMAGED])
    name = layer_output(model, DAMAGED)
    view = quantized_view(cand, name)
    assert view is not None and view != name  # the DequantizeLinear after the layer's output Q


def test_damaged_layer_ranked_first(setup: Any) -> None:
    model, data, layers, build = setup
    ev = Evaluator(model, data, progress=False)
    try:
        out = layer_sensitivity(model, layers, build, ev, metric=Metric("top1"), progress=False)
    finally:
        ev.close()
    assert out["complete"] and out["measured"] == 4
    ranking = out["ranking"]
    assert ranking[0]["name"] == DAMAGED and [r["rank"] for r in ranking] == [1, 2, 3, 4]
    assert ranking[0]["drop"] > 20 and ranking[0]["output_sqnr_db"] < min(r["output_sqnr_db"] for r in ranking[1:])
    assert all(r["layer_sqnr_db"] is not None and r["samples"] == 200 for r in ranking)


def test_deadline_gives_partial_ranking(setup: Any) -> None:
    model, data, layers, build = setup
    ev = Evaluator(model, data, progress=False)
    try:
        out = layer_sensitivity(model, layers, build, ev, metric=Metric("cosine"), deadline=time.perf_counter() - 1,
                                progress=False)
    finally:
        ev.close()
    assert out["complete"] is False and out["measured"] == 0 and out["ranking"] == []
