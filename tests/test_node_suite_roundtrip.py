"""Round trip every ONNX backend node test case (ONNX -> IR -> ONNX) and compare onnxruntime outputs bit for bit.

Cases that do not round trip are listed, with the reason, in docs/roundtrip-exclusions.md; the test
asserts that the set of failures is exactly that list. The suite is split into shards so that
``pytest -n`` can spread it over cores.
"""

from __future__ import annotations

import collections
import functools
import re
import warnings
from pathlib import Path
from typing import List, Tuple

import onnx
import pytest

from edgec.backends.onnx_export import to_proto
from edgec.errors import UnsupportedModelError
from edgec.frontend.onnx_import import from_proto

SHARDS = 4
EXCLUSIONS = Path(__file__).resolve().parent.parent / "docs" / "roundtrip-exclusions.md"


@functools.lru_cache(maxsize=None)
def _cases() -> Tuple:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(sorted(collect_testcases(None), key=lambda c: c.name))


def _expected() -> set:
    return set(re.findall(r"^- `(test_\w+)`", EXCLUSIONS.read_text(), flags=re.M))


def _feeds(model: onnx.ModelProto, inputs: List) -> dict:
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    return dict(zip(names, inputs))


def _roundtrip(case, session_options, bit_equal) -> Tuple[str, str]:
    """(status, reason): status is ok, unsupported, ort-cannot-run, nondeterministic or failed."""
    import onnxruntime as ort

    try:
        out = to_proto(from_proto(case.model, None))
    except UnsupportedModelError as e:
        return "unsupported", str(e)
    except Exception as e:  # noqa: BLE001 - every other exception is a round-trip failure
        return "failed", f"import/export raised {type(e).__name__}: {e}"
    try:
        onnx.checker.check_model(case.model, full_check=True)
        orig_ok = True
    except Exception:  # noqa: BLE001
        orig_ok = False
    if orig_ok:
        try:
            onnx.checker.check_model(out, full_check=True)
        except Exception as e:  # noqa: BLE001
            return "failed", f"checker rejects the round-tripped model: {str(e).splitlines()[0]}"

    def run(model):
        sess = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
        return [sess.run(None, _feeds(model, list(inputs))) for inputs, _ in case.data_sets]

    try:
        want = run(case.model)
    except Exception:  # noqa: BLE001
        return "ort-cannot-run", ""
    try:
        got = run(out)
    except Exception as e:  # noqa: BLE001
        return "failed", f"onnxruntime fails on the round-tripped model: {str(e).splitlines()[0][:200]}"
    if not bit_equal(want, got):
        if not bit_equal(want, run(case.model)):
            return "nondeterministic", ""
        return "failed", "outputs differ"
    return "ok", ""


@pytest.mark.parametrize("shard", range(SHARDS))
def test_node_suite_roundtrip(shard: int, session_options, bit_equal) -> None:
    """Every case of this shard round trips bit-exactly unless it is listed in the exclusions document."""
    cases = [c for i, c in enumerate(_cases()) if i % SHARDS == shard]
    counts: collections.Counter = collections.Counter()
    bad = {}
    for case in cases:
        status, reason = _roundtrip(case, session_options, bit_equal)
        counts[status] += 1
        if status in ("failed", "unsupported"):
            bad[case.name] = f"{status}: {reason}"
    print(f"\nshard {shard}: {len(cases)} cases: {counts['ok']} round-tripped bit-exactly, "
          f"{counts['ort-cannot-run']} ORT cannot run, {counts['nondeterministic']} nondeterministic in ORT, "
          f"{counts['unsupported']} rejected as unsupported, {counts['failed']} failed")
    expected = _expected() & {c.name for c in cases}
    unexpected = {k: v for k, v in bad.items() if k not in expected}
    fixed = sorted(expected - set(bad))
    assert not unexpected and not fixed, f"unexpected failures: {unexpected}; listed but now passing: {fixed}"
