"""The prune-channels pass: valid graphs that run in onnxruntime, MACs, zoo models, refit on digits."""

from __future__ import annotations

import os
import sys
import time
from typing import Dict

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from edgec.backends.onnx_export import to_proto  # noqa: E402
from edgec.frontend.onnx_import import from_proto  # noqa: E402
from edgec.inspect import model_stats  # noqa: E402
from edgec.ir import Model  # noqa: E402
from edgec.ir.shapes import infer_shapes  # noqa: E402
from edgec.passmanager import PassContext, PassManager, PassManagerOptions  # noqa: E402
from edgec.prune.channels import total_macs  # noqa: E402
from passtest import random_inputs, run_model  # noqa: E402
from test_dependency import concat_split, conv_chain, depthwise, flatten_gemm, residual  # noqa: E402


def prune(model: Model, pipeline: str, resources: Dict = None) -> Dict:
    ctx = PassContext()
    ctx.resources.update(resources or {})
    PassManager.with_options(pipeline, PassManagerOptions(verify_each=True), ctx=ctx).run(model)
    return ctx.reports["channel-pruning"]


def copy(model: Model) -> Model:
    return from_proto(to_proto(model))


@pytest.mark.parametrize("build", [conv_chain, residual, depthwise, concat_split, flatten_gemm])
def test_pruned_graphs_run(build) -> None:
    dense = build()
    model = copy(dense)
    rep = prune(model, "prune-channels{sparsity=0.5}")
    assert rep["macs_after"] < rep["macs_before"]
    feeds = random_inputs(dense, 0, 2)
    want, got = run_model(dense, feeds), run_model(model, feeds)
    assert want[0].shape == got[0].shape
    # MACs in the report are those of the new shapes
    assert rep["macs_after"] == total_macs(model)


def test_sparsity_zero_is_bit_exact() -> None:
    for build in (conv_chain, residual, concat_split):
        dense = build()
        model = copy(dense)
        ctx = PassContext()
        changed = PassManager.with_options("prune-channels{sparsity=0}", PassManagerOptions(verify_each=True), ctx=ctx).run(model)
        assert not changed
        feeds = random_inputs(dense, 0, 2)
        for a, b in zip(run_model(dense, feeds), run_model(model, feeds)):
            assert np.array_equal(a, b)


def test_chained_macs_drop_quadratically() -> None:
    dense = conv_chain()
    infer_shapes(dense)
    per_node = {r["node"]: r["macs"] for r in model_stats(dense, dims={"N": 1})["macs"]["per_node"]}
    model = copy(dense)
    prune(model, "prune-channels{sparsity=0.5}")
    after = {r["node"]: r["macs"] for r in model_stats(model, dims={"N": 1})["macs"]["per_node"]}
    # c2 and c3 lose half their inputs and half their outputs: (1 - 0.5)^2
    assert after["c2"] == per_node["c2"] // 4 and after["c3"] == per_node["c3"] // 4
    assert after["c1"] == per_node["c1"] // 2 and after["fc"] == per_node["fc"] // 2


def test_round_to_and_min_channels() -> None:
    model = conv_chain()
    rep = prune(model, "prune-channels{sparsity=0.6,round-to=4,min-channels=4}")
    for g in rep["groups"]:
        if g["prunable"]:
            assert g["channels_after"] % 4 == 0 and g["channels_after"] >= 4


def test_skip_keeps_group() -> None:
    model = conv_chain()
    rep = prune(model, "prune-channels{sparsity=0.5,skip=c2}")
    by_prod = {p: g for g in rep["groups"] for p in g["producers"]}
    assert by_prod["c2"]["channels_after"] == 16 and by_prod["c1"]["channels_after"] == 4


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_zoo_prunes_40_percent_macs(name: str) -> None:
    import zoo

    dense = from_proto(zoo.get(name, **zoo.TEST_PARAMS[name]))
    model = copy(dense)
    rep = prune(model, "prune-channels{sparsity=0.4,target=macs,round-to=2}")
    assert rep["macs_after"] <= 0.6 * rep["macs_before"]
    feeds = random_inputs(dense, 0, 2)
    out = run_model(model, feeds)
    assert out[0].shape == run_model(dense, feeds)[0].shape and np.isfinite(out[0]).all()


def _latency(model: Model, x: np.ndarray, reps: int = 30) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(to_proto(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    t = time.perf_counter()
    for _ in range(reps):
        sess.run(None, {name: x})
    return (time.perf_counter() - t) / reps * 1e3


def test_digits_refit(tmp_path) -> None:
    import zoo
    from zoo.digits import digits_data, write_digits_npz

    from edgec.quant.collect import run_model as ort_run
    from edgec.quant.data import load_calibration

    x, y = digits_data("test")

    def top1(m: Model) -> float:
        return float((ort_run(m, {"input": x})["logits"].argmax(1) == y).mean())

    dense = from_proto(zoo.get("digits_cnn"))
    cal = load_calibration(str(write_digits_npz(tmp_path / "cal.npz", "calibration")), dense)
    plain, refit = copy(dense), copy(dense)
    rep = prune(plain, "prune-channels{sparsity=0.4,target=macs}")
    rep_refit = prune(refit, "prune-channels{sparsity=0.4,target=macs,refit=true}", {"calibration": cal})
    assert rep["macs_after"] <= 0.6 * rep["macs_before"] and rep_refit["macs_after"] == rep["macs_after"]
    acc_dense, acc_plain, acc_refit = top1(dense), top1(plain), top1(refit)
    assert rep_refit["refit"]
    xb = np.repeat(x, 4, axis=0)[:2048]
    lat_dense, lat_pruned = _latency(dense, xb), _latency(refit, xb)
    print(f"\ndigits_cnn: MACs {rep['macs_before']} -> {rep['macs_after']}; top-1 dense {acc_dense:.4f}, "
          f"pruned {acc_plain:.4f}, pruned+refit {acc_refit:.4f}; "
          f"ORT latency (batch {len(xb)}) {lat_dense:.2f} ms -> {lat_pruned:.2f} ms")
    assert acc_refit > acc_plain
    assert acc_refit >= acc_dense - 0.01


@pytest.mark.parametrize("allocation", ["greedy", "uniform"])
def test_macs_target_allocations(allocation: str) -> None:
    dense = conv_chain()
    model = copy(dense)
    rep = prune(model, f"prune-channels{{sparsity=0.4,target=macs,allocation={allocation}}}")
    assert rep["macs_after"] <= 0.6 * rep["macs_before"] and rep["macs_after"] == total_macs(model)
    feeds = random_inputs(dense, 0, 2)
    assert run_model(model, feeds)[0].shape == run_model(dense, feeds)[0].shape


def test_obs_score_needs_calibration() -> None:
    from edgec.errors import EdgecError

    with pytest.raises(EdgecError, match="calibration"):
        prune(conv_chain(), "prune-channels{sparsity=0.4,score=obs}")
