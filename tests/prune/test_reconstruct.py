"""Least-squares reconstruction of pruned layers: im2col, error vs plain masking, digits end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.backends.onnx_export import to_proto
from edgec.frontend.onnx_import import from_proto
from edgec.passmanager import PassContext, PassManager, parse_pipeline
from edgec.prune.reconstruct import collect_layer_stats, layer_error, reconstruct, unfold
from edgec.prune.scores import find_layers, layer_mask, nm_mask, score_matrix
from edgec.quant.data import load_calibration
from zoo.digits import digits_accuracy, digits_cnn, write_digits_npz


def one_node(node: onnx.NodeProto, w: np.ndarray, x_shape: list, y_shape: list) -> onnx.ModelProto:
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          [numpy_helper.from_array(w.astype(np.float32), "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def cal_for(tmp_path: Path, model: Any, x: np.ndarray) -> Any:
    path = tmp_path / "cal.npz"
    np.savez(path, x=x.astype(np.float32))
    return load_calibration(str(path), model)


@pytest.mark.parametrize("attrs", [dict(pads=[1, 1, 1, 1]), dict(strides=[2, 1], dilations=[1, 2], pads=[0, 2, 1, 0]),
                                   dict(group=2, pads=[1, 0, 1, 0]), dict(auto_pad="SAME_UPPER", strides=[2, 2])])
def test_unfold_matches_conv(tmp_path: Path, attrs: Dict[str, Any], ort_run: Any) -> None:
    rng = np.random.default_rng(0)
    g = attrs.get("group", 1)
    w = rng.standard_normal((6, 4 // g, 3, 3))
    proto = one_node(helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs), w, ["N", 4, 7, 6], None)
    m = from_proto(proto)
    (layer,), _ = find_layers(m)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    y = ort_run(proto, {"x": x})[0]  # [N, 6, oh, ow]
    mat = layer.to_matrix(layer.array())
    for gi, (rs, _) in enumerate(layer.row_groups()):
        cols = unfold(layer, x, gi)
        got = cols @ mat[rs].T  # [N*oh*ow, rows]
        want = np.moveaxis(y[:, rs], 1, -1).reshape(-1, mat[rs].shape[0])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def correlated_gemm(tmp_path: Path) -> Any:
    rng = np.random.default_rng(1)
    k, n, samples = 48, 24, 512
    mix = rng.standard_normal((8, k))
    x = rng.standard_normal((samples, 8)) @ mix + 0.1 * rng.standard_normal((samples, k))  # rank ~8 inputs
    w = rng.standard_normal((n, k))
    proto = one_node(helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1), w, ["N", k], ["N", n])
    m = from_proto(proto)
    return m, cal_for(tmp_path, m, x)


@pytest.mark.parametrize("mask_kind", ["unstructured", "2:4"])
def test_reconstruction_beats_masking_on_correlated_inputs(tmp_path: Path, mask_kind: str) -> None:
    m, cal = correlated_gemm(tmp_path)
    (layer,), _ = find_layers(m)
    st = collect_layer_stats(m, cal, [layer], hessian=True, norms=False)[layer.name]
    w = layer.to_matrix(layer.array()).astype(np.float64)
    s = score_matrix(layer, "magnitude")
    keep = layer_mask(s, 0.5) if mask_kind == "unstructured" else nm_mask(s, 2, 4)
    err_mask = layer_error(layer, w, np.where(keep, w, 0.0), st.hessians)
    errs = {}
    for method in ("exact", "sweep"):
        new = reconstruct(layer, w, keep, st.hessians, method=method)
        assert np.all(new[~keep] == 0)
        errs[method] = layer_error(layer, w, new, st.hessians)
    # the exact masked least squares is optimal; the sweep (earlier columns frozen) is close behind
    assert errs["exact"] < 0.3 * err_mask and errs["exact"] <= errs["sweep"] < 0.6 * err_mask, (errs, err_mask)


def test_pass_reports_lower_error_with_reconstruction(tmp_path: Path) -> None:
    m, cal = correlated_gemm(tmp_path)
    ctx = PassContext(resources={"calibration": cal})
    PassManager(parse_pipeline("prune-weights{sparsity=0.5,reconstruct=true}"), ctx=ctx).run(m)
    (row,) = ctx.reports["pruning"]["layers"]
    assert row["error"] < 0.3 * row["error_magnitude"]
    assert row["nonzeros"] == row["params"] // 2


def test_conv_transpose_reconstruction(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 3, 2, 2))
    proto = one_node(helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct", strides=[2, 2]), w,
                     ["N", 8, 4, 4], None)
    m = from_proto(proto)
    base = rng.standard_normal((64, 2, 4, 4))
    x = np.concatenate([base, base + 0.05 * rng.standard_normal((64, 2, 4, 4)),
                        base - 0.05 * rng.standard_normal((64, 2, 4, 4)), -base], axis=1)  # correlated channels
    ctx = PassContext(resources={"calibration": cal_for(tmp_path, m, x)})
    PassManager(parse_pipeline("prune-weights{mode=2:4,reconstruct=true}"), ctx=ctx).run(m)
    (row,) = ctx.reports["pruning"]["layers"]
    assert row["error"] < row["error_magnitude"] and row["sparsity"] == 0.5


@pytest.fixture(scope="module")
def digits_cal(tmp_path_factory: Any) -> Path:
    return write_digits_npz(tmp_path_factory.mktemp("digits") / "cal.npz", "calibration")


def digits_top1(text: str, cal_path: Path) -> float:
    m = from_proto(digits_cnn())
    edgec.optimize(m, opt_level=2)
    ctx = PassContext(resources={"calibration": load_calibration(str(cal_path), m)})
    PassManager(parse_pipeline(text + ",lower-onnx"), ctx=ctx).run(m)
    return 100.0 * digits_accuracy(to_proto(m))


def test_digits_end_to_end(digits_cal: Path) -> None:
    dense = 100.0 * digits_accuracy(digits_cnn())
    got = {name: digits_top1(text, digits_cal) for name, text in {
        "50% magnitude": "prune-weights{sparsity=0.5}",
        "50% reconstructed": "prune-weights{sparsity=0.5,reconstruct=true}",
        "2:4 magnitude": "prune-weights{mode=2:4}",
        "2:4 reconstructed": "prune-weights{mode=2:4,reconstruct=true}"}.items()}
    print(f"digits top-1: dense {dense:.2f}, " + ", ".join(f"{k} {v:.2f}" for k, v in got.items()))
    assert got["50% reconstructed"] >= dense - 1.0
    assert got["2:4 reconstructed"] >= dense - 1.0
    assert got["50% reconstructed"] > got["50% magnitude"]
