"""Shared by the int8 C tests: a float ONNX model -> the QDQ IR the C target integerizes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import onnx

from edgec.frontend.onnx_import import from_proto
from edgec.passmanager import PassContext, PassManager, PassManagerOptions
from edgec.quant.data import load_calibration


def quantize_for_c(proto: onnx.ModelProto, cal: Dict[str, np.ndarray], per_channel: bool = True,
                   symmetric: bool = False) -> Any:
    """``-O2`` for the C target, then ``quantize{activations=int8}`` (per-tensor weights without
    ``per_channel``; zero points 0 with ``symmetric``, so that a fused ReLU clamps below the int8 range) with
    ``cal`` as calibration data; the verifier runs after each pass."""
    from edgec.api import optimize

    m = from_proto(proto)
    optimize(m, opt_level=2, target="c")
    path = Path(tempfile.mkdtemp()) / "cal.npz"
    np.savez(path, **cal)
    ctx = PassContext(resources={"calibration": load_calibration(str(path), m),
                                 "target": {"name": "c", "contrib_ops": False}})
    opts = "activations=int8" + ("" if per_channel else ",per-channel=false") + (
        ",symmetric-activations=true" if symmetric else "")
    PassManager.with_options("quantize{" + opts + "},dce", PassManagerOptions(verify_each=True), ctx=ctx).run(m)
    return m


def int8_samples(rng: np.random.Generator, shape: Tuple[int, ...]) -> List[Dict[str, np.ndarray]]:
    """Inputs ``x`` for the int8 kernel tests: two random ones and two constant ones that saturate the
    accumulators and the clamps."""
    s = [{"x": rng.uniform(-1.5, 2.5, shape).astype(np.float32)} for _ in range(2)]
    s.append({"x": np.full(shape, 40.0, np.float32)})
    s.append({"x": np.full(shape, -40.0, np.float32)})
    return s
