"""Shared fixtures: onnxruntime helpers used by the ONNX round-trip tests."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Union

import numpy as np
import onnx
import pytest


def _session_options():
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    return so


@pytest.fixture(scope="session")
def ort_run() -> Callable[[Union[onnx.ModelProto, str, bytes], Dict[str, Any]], List[Any]]:
    """``ort_run(model_or_path, feeds) -> outputs`` on the CPU provider with one thread."""
    import onnxruntime as ort

    def run(model, feeds):
        src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
        sess = ort.InferenceSession(src, _session_options(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)

    return run


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype == object:
            return bool(np.array_equal(a, b))
        return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture(scope="session")
def bit_equal() -> Callable[[Any, Any], bool]:
    """``bit_equal(a, b)``: same dtypes, shapes and bytes (NaN payloads included), recursively for sequences."""
    return _same


@pytest.fixture(scope="session")
def session_options():
    """onnxruntime SessionOptions with one intra-op thread and quiet logging."""
    return _session_options


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "large: builds a >2 GiB (sparse, fast) model on disk; runs by default")
