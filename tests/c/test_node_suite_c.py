"""The ONNX backend node tests through the C target (``edgec.backends.c.onnx_backend.CBackend``).

Every case of ``onnx.backend.test.case.node.collect_testcases()`` whose model uses only ops the C
backend claims runs through ``CBackend`` (pipeline -O2 for target c, generated C built with
``-Wall -Wextra -Werror``, run) and its outputs are compared with the expected ones: floats within
rtol 1e-4 / atol 1e-5 or 100 ULP, integers and bools exactly. The cases that fail are listed in
``KNOWN_FAILURES`` with the reason; a case fails its test when it fails and is not listed, or is
listed and passes, so the list stays exact and a regression is caught. ``test_thresholds`` asserts
from that list that at least 90% of the claimed-op cases whose graph inputs and outputs have element
types the C target stores (``C_TYPES``: no strings, sequences, optionals) pass,
and that every claimed op has a passing case; run it with ``-s`` for the per-op table and the pass
counts over all claimed-op cases and over the whole suite.

Graph inputs that only determine compile-time parameters (Reshape shapes, axes, pads, Clip bounds...)
are frozen to the test's values by the backend (see ``onnx_backend.PARAM_SLOTS``).
"""

from __future__ import annotations

import collections
import functools
import os
import shutil
import warnings
from typing import Dict, List, Tuple

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgec.backends.c.onnx_backend import CBackend, claimed_ops
from edgec.backends.c.verify import compare

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

#: Fraction of the claimed-op cases with C element types that must pass.
THRESHOLD = 0.90

#: Cases of claimed ops that fail, with the reason (kept exact by the per-case tests: a case that
#: starts passing must be removed from here).
KNOWN_FAILURES: Dict[str, str] = {
    "test_attention_3d_causal_bf16_expanded": "bfloat16 computed in float32 per op: softmax/matmul chains differ from the reference's bfloat16 steps by 1-2 ulp",
    "test_attention_4d_attn_mask_causal_bf16_expanded": "bfloat16 computed in float32 per op: softmax/matmul chains differ from the reference's bfloat16 steps by 1-2 ulp",
    "test_attention_4d_causal_bf16_expanded": "bfloat16 computed in float32 per op: softmax/matmul chains differ from the reference's bfloat16 steps by 1-2 ulp",
    "test_attention_4d_causal_fp16_expanded": "float16 computed in float32 per op: softmax/matmul chains differ from the reference's float16 steps by 1-2 ulp",
    "test_attention_4d_causal_padded_kv_bf16_expanded": "bfloat16 computed in float32 per op: softmax/matmul chains differ from the reference's bfloat16 steps by 1-2 ulp",
    "test_attention_4d_fp16_expanded": "float16 computed in float32 per op: softmax/matmul chains differ from the reference's float16 steps by 1-2 ulp",
    "test_attention_4d_gqa_causal_nonpad_decode_fp16_expanded": "float16 computed in float32 per op: softmax/matmul chains differ from the reference's float16 steps by 1-2 ulp",
    "test_attention_4d_gqa_with_past_and_present_fp16_expanded": "float16 computed in float32 per op: softmax/matmul chains differ from the reference's float16 steps by 1-2 ulp",
    "test_attention_4d_padded_kv_bf16_expanded": "bfloat16 computed in float32 per op: softmax/matmul chains differ from the reference's bfloat16 steps by 1-2 ulp",
    "test_averagepool_2d_ceil_last_window_starts_on_pad": "expected values written with 4 decimals (0.2841 for 0.28404; C = onnxruntime = ONNX reference = sum/9)",
    "test_batchnorm_epsilon_training_mode": "BatchNormalization: training_mode",
    "test_batchnorm_example_training_mode": "BatchNormalization: training_mode",
    "test_blackmanwindow_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_blackmanwindow_symmetric_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_equal_string": "element type string (not a C target type)",
    "test_equal_string_broadcast": "element type string (not a C target type)",
    "test_flexattention_double_expanded_ver26": "onnx::MatMul on DOUBLE (function value) (this kernel is float32 only)",
    "test_hammingwindow_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_hammingwindow_symmetric_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_hannwindow_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_hannwindow_symmetric_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_identity_opt": "element type non-tensor (not a C target type)",
    "test_identity_sequence": "element type non-tensor (not a C target type)",
    "test_not_2d": "default-domain opset 1 is outside the supported range 7..28",
    "test_not_3d": "default-domain opset 1 is outside the supported range 7..28",
    "test_not_4d": "default-domain opset 1 is outside the supported range 7..28",
    "test_resize_downsample_scales_cubic_align_corners": "Resize align_corners: C = onnxruntime (integer output length); the ONNX reference uses input*scale (onnx/onnx#2462)",
    "test_resize_downsample_scales_linear_align_corners": "Resize align_corners: C = onnxruntime (integer output length); the ONNX reference uses input*scale (onnx/onnx#2462)",
    "test_training_dropout": "Dropout training_mode=1: random mask from numpy's generator (not reproducible)",
    "test_training_dropout_default": "Dropout training_mode=1: random mask from numpy's generator (not reproducible)",
    "test_training_dropout_default_mask": "Dropout training_mode=1: random mask from numpy's generator (not reproducible)",
    "test_training_dropout_mask": "Dropout training_mode=1: random mask from numpy's generator (not reproducible)",
}


@functools.lru_cache(maxsize=None)
def _cases() -> Tuple:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(sorted(collect_testcases(None), key=lambda c: c.name))


@functools.lru_cache(maxsize=None)
def _case_by_name() -> Dict:
    return {c.name: c for c in _cases()}


def case_ops(case) -> List[str]:
    return _ops_of(case.name)


@functools.lru_cache(maxsize=None)
def _ops_of(name: str) -> List[str]:
    case = _case_by_name()[name]
    return sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                   for n in case.model.graph.node})


@functools.lru_cache(maxsize=None)
def _claimed_cases() -> Tuple:
    ops = set(claimed_ops())
    return tuple(c for c in _cases() if set(case_ops(c)) <= ops)


def run_case(case) -> Tuple[str, str]:
    """(status, reason): status is ok or failed."""
    try:
        rep = CBackend.prepare(case.model, "CPU")
        for inputs, outputs in case.data_sets:
            got = rep.run(list(inputs))
            if len(got) != len(outputs):
                return "failed", f"{len(got)} outputs, expected {len(outputs)}"
            for i, (g, r) in enumerate(zip(got, outputs)):
                r = numpy_helper.to_array(r) if isinstance(r, onnx.TensorProto) else np.asarray(r)
                if r.dtype == object or r.dtype.kind in "SU":
                    return "failed", f"output {i}: non-tensor expected value"
                if tuple(g.shape) != tuple(r.shape):
                    return "failed", f"output {i}: shape {tuple(g.shape)}, expected {tuple(r.shape)}"
                if r.dtype.kind in "biu" and g.dtype.kind not in "biu":
                    return "failed", f"output {i}: dtype {g.dtype}, expected {r.dtype}"
                c = compare(str(i), g, r, rtol=1e-4, atol=1e-5, max_ulp=100)
                if not c.ok:
                    return "failed", f"output {i}: {c.bad}/{c.total} elements differ (max abs {c.max_abs:.3g})"
    except Exception as e:  # noqa: BLE001 - every exception is a failure of the case
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return "failed", f"{type(e).__name__}: {msg[:300]}"
    return "ok", ""


@pytest.fixture(scope="module", autouse=True)
def _build_cache(tmp_path_factory):
    """A fresh build cache for this run (the backend caches builds by content hash)."""
    old = os.environ.get("EDGEC_C_CACHE")
    os.environ["EDGEC_C_CACHE"] = str(tmp_path_factory.mktemp("c-build-cache"))
    yield
    if old is None:
        os.environ.pop("EDGEC_C_CACHE", None)
    else:
        os.environ["EDGEC_C_CACHE"] = old


@pytest.mark.parametrize("name", [c.name for c in _claimed_cases()])
def test_node_case(name: str) -> None:
    status, reason = run_case(_case_by_name()[name])
    if name in KNOWN_FAILURES:
        assert status != "ok", f"{name} is listed in KNOWN_FAILURES but passes now: remove it from the list"
    else:
        assert status == "ok", f"{name}: {reason}"


def test_known_failures_are_claimed_cases() -> None:
    names = {c.name for c in _claimed_cases()}
    stale = sorted(set(KNOWN_FAILURES) - names)
    assert not stale, f"KNOWN_FAILURES lists cases that are not claimed-op cases: {stale}"


#: Element types the C target stores (the narrow float and sub-byte integer types as unpacked bit
#: patterns); a case whose graph inputs or outputs have another type (string, float6, complex,
#: sequences, optionals) cannot pass.
C_TYPES = frozenset({"FLOAT", "DOUBLE", "INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64",
                     "BOOL", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
                     "FLOAT8E8M0", "FLOAT4E2M1", "INT4", "UINT4", "INT2", "UINT2"})


def c_typed(case) -> bool:
    for v in list(case.model.graph.input) + list(case.model.graph.output):
        if not v.type.HasField("tensor_type"):
            return False
        if onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type) not in C_TYPES:
            return False
    return True


def test_thresholds() -> None:
    """>= 90% of the claimed-op cases with C element types pass; every claimed op has a passing case.

    Run with ``-s`` for the per-op table and the pass counts (also over all claimed-op cases and
    over the whole suite)."""
    cases = _claimed_cases()
    per_op: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0])
    for c in cases:
        ok = c.name not in KNOWN_FAILURES
        for op in case_ops(c):
            per_op[op][0] += ok
            per_op[op][1] += 1
    passed = sum(c.name not in KNOWN_FAILURES for c in cases)
    typed = [c for c in cases if c_typed(c)]
    typed_passed = sum(c.name not in KNOWN_FAILURES for c in typed)
    total = len(_cases())
    print(f"\nC backend node tests ({len(claimed_ops())} claimed ops): "
          f"{typed_passed}/{len(typed)} claimed-op cases with C element types pass "
          f"({100.0 * typed_passed / max(1, len(typed)):.1f}%); {passed}/{len(cases)} of all claimed-op cases "
          f"({100.0 * passed / max(1, len(cases)):.1f}%); {passed}/{total} of the whole suite "
          f"({100.0 * passed / total:.1f}%)")
    print(f"{'op':<28} {'passed':>6} / {'cases':<5}  failing cases")
    for op in sorted(set(per_op) | set(claimed_ops())):
        p, n = per_op.get(op, [0, 0])
        bad = [c.name for c in cases if op in case_ops(c) and c.name in KNOWN_FAILURES]
        print(f"{op:<28} {p:>6} / {n:<5}  {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}")
    assert typed_passed >= THRESHOLD * len(typed), f"only {typed_passed}/{len(typed)} claimed-op cases pass"
    without = sorted(op for op in claimed_ops() if per_op.get(op, [0, 0])[0] == 0)
    assert not without, f"claimed ops without a passing node test: {without}"


def test_backend_api() -> None:
    """CBackend as an onnx backend: device check, dict and list inputs, frozen parameter inputs, errors."""
    from onnx import TensorProto as TP
    from onnx import helper as h

    from edgec.backends.c.onnx_backend import UnsupportedModelError, param_inputs

    assert CBackend.supports_device("CPU") and not CBackend.supports_device("CUDA")
    g = h.make_graph([h.make_node("Reshape", ["x", "s"], ["r"]), h.make_node("Add", ["r", "r"], ["y"])], "g",
                     [h.make_tensor_value_info("x", TP.INT32, ["n"]), h.make_tensor_value_info("s", TP.INT64, [2])],
                     [h.make_tensor_value_info("y", TP.INT32, None)])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    assert param_inputs(model) == ["s"]
    rep = CBackend.prepare(model, "CPU")
    x = np.arange(6, dtype=np.int32)
    (y,) = rep.run([x, np.array([2, 3], np.int64)])
    np.testing.assert_array_equal(y, (x + x).reshape(2, 3))
    (y,) = rep.run({"x": x, "s": np.array([3, 2], np.int64)})  # another frozen value: another program
    np.testing.assert_array_equal(y, (x + x).reshape(3, 2))
    assert "Reshape" in claimed_ops() and "Add" in claimed_ops()
    bad = h.make_model(h.make_graph([h.make_node("Det", ["x"], ["y"])], "g",
                                    [h.make_tensor_value_info("x", TP.FLOAT, [2, 2])],
                                    [h.make_tensor_value_info("y", TP.FLOAT, None)]),
                       opset_imports=[h.make_opsetid("", 17)])
    assert not CBackend.is_compatible(bad)
    with pytest.raises(UnsupportedModelError, match="unsupported op") as e:
        CBackend.run_model(bad, [np.eye(2, dtype=np.float32)])
    assert "\n" not in str(e.value)
