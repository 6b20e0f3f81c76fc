"""`prune-weights`: exact sparsities, N:M patterns, Wanda, overrides, bit-exactness at 0, ORT, sparse storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.backends.onnx_export import to_proto
from edgec.errors import EdgecError
from edgec.frontend.onnx_import import from_proto
from edgec.ir import Model
from edgec.passmanager import PassContext, PassManager, parse_pipeline
from edgec.prune.scores import find_layers
from edgec.quant.data import load_calibration
from zoo.digits import digits_cnn, digits_data


def small_model(seed: int = 0) -> onnx.ModelProto:
    """x[N,8,6,6] -> Conv(16x8x3x3, bias) -> Relu -> Flatten -> Gemm(transB, 32x576) -> MatMul(32x12)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("wc", rng.standard_normal((16, 8, 3, 3))), ("bc", rng.standard_normal(16)),
        ("wg", rng.standard_normal((32, 576)) * 0.05), ("bg", rng.standard_normal(32)),
        ("wm", rng.standard_normal((32, 12))))]
    nodes = [helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["g"], name="gemm", transB=1),
             helper.make_node("MatMul", ["g", "wm"], ["y"], name="matmul")]
    g = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def prune(model: Model, text: str, calibration: Any = None) -> Dict[str, Any]:
    ctx = PassContext(resources={"calibration": calibration} if calibration is not None else {})
    PassManager(parse_pipeline(text), ctx=ctx).run(model)
    return ctx.reports.get("pruning", {})


def lowered(model: Model) -> onnx.ModelProto:
    """The model as standard ONNX (edgec fused ops lowered on a copy)."""
    from edgec.backends.onnx_lowering import lower_for_onnx

    copy = from_proto(to_proto(model))
    lower_for_onnx(copy)
    return to_proto(copy)


def ort_out(proto: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def weights(model: Model) -> Dict[str, np.ndarray]:
    return {v.name: v.const.numpy() for v in model.graph.initializers.values()}


def calib(tmp_path: Path, x: np.ndarray, model: Model, name: str = "x") -> Any:
    path = tmp_path / "cal.npz"
    np.savez(path, **{name: x})
    return load_calibration(str(path), model)


def test_sparsity_zero_is_bit_exact() -> None:
    m = from_proto(digits_cnn())
    edgec.optimize(m, opt_level=2)
    before = lowered(m)
    rep = prune(m, "prune-weights{sparsity=0,score=magnitude}")
    x = digits_data("test")[0][:64]
    a, b = ort_out(before, {"input": x})[0], ort_out(lowered(m), {"input": x})[0]
    assert np.array_equal(a, b)
    assert rep["totals"]["layers"] == 0


@pytest.mark.parametrize("sparsity", [0.37, 0.5, 0.9])
@pytest.mark.parametrize("score", ["magnitude", "wanda"])
def test_exact_sparsity_per_layer(tmp_path: Path, sparsity: float, score: str) -> None:
    m = from_proto(small_model())
    dense = weights(m)
    cal = calib(tmp_path, np.random.default_rng(1).standard_normal((16, 8, 6, 6)).astype(np.float32), m) if score == "wanda" else None
    rep = prune(m, f"prune-weights{{sparsity={sparsity},score={score}}}", cal)
    w = weights(m)
    for name in ("wc", "wg", "wm"):
        size = w[name].size
        assert size - np.count_nonzero(w[name]) == round(sparsity * size), name
        kept = w[name] != 0
        assert np.array_equal(w[name][kept], dense[name][kept])  # no update without reconstruct
    for name in ("bc", "bg"):  # biases are never pruned
        assert np.array_equal(w[name], dense[name])
    assert {r["name"] for r in rep["layers"]} == {"conv", "gemm", "matmul"}
    assert rep["totals"]["sparsity"] == pytest.approx(sum(round(sparsity * dense[n].size) for n in ("wc", "wg", "wm"))
                                                      / sum(dense[n].size for n in ("wc", "wg", "wm")))


def test_global_scope_exact_total() -> None:
    m = from_proto(small_model())
    rep = prune(m, "prune-weights{sparsity=0.6,scope=global}")
    w = weights(m)
    total = sum(w[n].size for n in ("wc", "wg", "wm"))
    zeros = sum(w[n].size - np.count_nonzero(w[n]) for n in ("wc", "wg", "wm"))
    assert zeros == round(0.6 * total)
    per_layer = [r["sparsity"] for r in rep["layers"]]
    assert max(per_layer) - min(per_layer) > 0.01  # a global threshold, not one per layer


@pytest.mark.parametrize("mode,n,mm", [("2:4", 2, 4), ("4:8", 4, 8)])
def test_nm_pattern_along_reduction_axis(mode: str, n: int, mm: int) -> None:
    m = from_proto(small_model())
    prune(m, f"prune-weights{{mode={mode}}}")
    w = weights(m)
    # Conv: channels-last reduction (for each kernel tap, groups along input channels)
    wc = w["wc"].transpose(0, 2, 3, 1).reshape(16, -1)
    for mat in (wc, w["wg"], w["wm"].T):
        groups = mat.reshape(mat.shape[0], -1, mm)
        assert np.all(np.count_nonzero(groups, axis=-1) == n)
    layers, _ = find_layers(m)
    conv = next(l for l in layers if l.name == "conv")
    assert np.array_equal(conv.to_matrix(w["wc"]), wc) and np.array_equal(conv.from_matrix(wc), w["wc"])


def test_nm_skips_layers_whose_reduction_is_not_a_multiple() -> None:
    m = from_proto(digits_cnn())
    edgec.optimize(m, opt_level=2)
    rep = prune(m, "prune-weights{mode=2:4}")
    assert any("not a multiple of 4" in why for why in rep["skipped"].values())  # first conv: 1 channel x 3x3


def test_skip_overrides_min_size() -> None:
    m = from_proto(small_model())
    dense = weights(m)
    rep = prune(m, 'prune-weights{sparsity=0.5,skip=matmul,overrides="gemm=0.75",min-size=2000}')
    w = weights(m)
    assert np.array_equal(w["wm"], dense["wm"]) and np.array_equal(w["wc"], dense["wc"])  # skip; 1152 < min-size
    assert w["wg"].size - np.count_nonzero(w["wg"]) == round(0.75 * w["wg"].size)
    assert rep["skipped"]["matmul"] == "skipped by option" and "min-size" in rep["skipped"]["conv"]


def test_wanda_beats_magnitude_with_outlier_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    k, n = 64, 32
    w = rng.standard_normal((k, n)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
                          [numpy_helper.from_array(w, "w")])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((256, k)).astype(np.float32)
    x[:, :4] *= 25.0  # outlier input features
    errs = {}
    for score in ("magnitude", "wanda"):
        m = from_proto(proto)
        prune(m, f"prune-weights{{sparsity=0.5,score={score}}}", calib(tmp_path, x, m))
        errs[score] = float(np.sum((x @ weights(m)["w"] - x @ w) ** 2))
    assert errs["wanda"] < 0.5 * errs["magnitude"], errs


def test_wanda_needs_calibration() -> None:
    m = from_proto(small_model())
    with pytest.raises(EdgecError, match="needs calibration data"):
        prune(m, "prune-weights{score=wanda}")


def test_pruned_model_runs_in_ort_and_sparse_storage_is_smaller() -> None:
    x = np.random.default_rng(3).standard_normal((4, 8, 6, 6)).astype(np.float32)
    dense_store = from_proto(small_model())
    prune(dense_store, "prune-weights{sparsity=0.8}")
    sparse_store = from_proto(small_model())
    rep = prune(sparse_store, "prune-weights{sparsity=0.8,storage=sparse}")
    pd, ps = to_proto(dense_store), to_proto(sparse_store)
    assert {s.values.name for s in ps.graph.sparse_initializer} == {"wc", "wg", "wm"}
    assert all(s.indices.data_type == TensorProto.INT64 for s in ps.graph.sparse_initializer)
    onnx.checker.check_model(ps)
    assert ps.ByteSize() < 0.75 * pd.ByteSize()
    assert np.array_equal(ort_out(pd, {"x": x})[0], ort_out(ps, {"x": x})[0])
    t = rep["totals"]
    assert t["sparse_bytes"] < t["dense_bytes"] and t["stored_bytes"] == t["sparse_bytes"]
    assert all(r["stored"] == "sparse" for r in rep["layers"])
    # reloading keeps the sparse initializers
    again = from_proto(ps)
    assert len(to_proto(again).graph.sparse_initializer) == 3


def test_sparse_storage_only_when_smaller() -> None:
    m = from_proto(small_model())
    rep = prune(m, "prune-weights{mode=2:4,storage=sparse}")  # 50%: COO with int64 indices is larger
    assert not to_proto(m).graph.sparse_initializer
    for r in rep["layers"]:
        assert r["stored"] == "dense" and r["sparse_bytes"] > r["dense_bytes"]
        # 2:4 packed: half the values + 2 bits per kept value
        assert r["packed_bytes"] == r["params"] // 2 * 4 + (r["params"] // 2 * 2 + 7) // 8


def test_sensitivity_matches_the_applied_mask_and_grows(tmp_path: Path) -> None:
    """The error at the pruned sparsity equals the measured error of the applied mask; it grows with sparsity."""
    m = from_proto(small_model())
    x = np.random.default_rng(1).standard_normal((32, 8, 6, 6)).astype(np.float32)
    rep = prune(m, "prune-weights{sparsity=0.5,reconstruct=true,sensitivity=0.25,0.5,0.9}", calib(tmp_path, x, m))
    assert rep["sensitivity"]["sparsities"] == [0.25, 0.5, 0.9] and "calibration" in rep["sensitivity"]["measure"]
    for row in rep["layers"]:
        s = row["sensitivity"]
        assert s["0.5"] == pytest.approx(row["error_magnitude"], rel=1e-9), row["name"]
        assert 0.0 < s["0.25"] < s["0.5"] < s["0.9"] < 1.5, (row["name"], s)
    m2 = from_proto(small_model())  # without calibration data: the weight-space error of the mask
    rep2 = prune(m2, "prune-weights{sparsity=0.5,sensitivity=0.5}")
    w = {r["name"]: r for r in rep2["layers"]}
    dense = weights(from_proto(small_model()))["wc"]
    pruned = weights(m2)["wc"]
    assert w["conv"]["sensitivity"]["0.5"] == pytest.approx(float(np.sum((dense - pruned) ** 2) / np.sum(dense ** 2)))
