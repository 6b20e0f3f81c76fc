"""The sample plugin's pattern pass (samples/plugin_example: recover-hardswish), tested like a built-in."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from passtest import check_pass

from edgec.passmanager import get_registry, using_registry

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "plugin_example"

BEFORE = """model opset(ai.onnx=17) { graph @g(%x: tensor<"N"x4xf32>) {
  %h = onnx.HardSigmoid(%x) {alpha=0.16666667, beta=0.5}
  %y = onnx.Mul(%h, %x)
  return %y
} }"""
AFTER = """model opset(ai.onnx=17) { graph @g(%x: tensor<"N"x4xf32>) {
  %y = onnx.HardSwish(%x)
  return %y
} }"""


@pytest.fixture()
def registry():
    reg = get_registry().copy()
    sys.path.insert(0, str(SAMPLE))
    try:
        with using_registry(reg):
            for name in [m for m in sys.modules if m.startswith("edgec_example_plugin")]:
                del sys.modules[name]  # import afresh so the pass registers into this registry
            importlib.import_module("edgec_example_plugin.recover_hardswish")
            yield reg
    finally:
        sys.path.remove(str(SAMPLE))


def test_recovers_hardswish(registry) -> None:
    check_pass(BEFORE, "recover-hardswish", AFTER, rtol=1e-6, atol=1e-6)
    commuted = BEFORE.replace("onnx.Mul(%h, %x)", "onnx.Mul(%x, %h)")
    check_pass(commuted, "recover-hardswish", AFTER, rtol=1e-6, atol=1e-6)


def test_leaves_other_hardsigmoids_and_old_opsets(registry) -> None:
    check_pass(BEFORE.replace("beta=0.5", "beta=0.4"), "recover-hardswish", None, fires=False)
    check_pass(BEFORE.replace("ai.onnx=17", "ai.onnx=13"), "recover-hardswish", None, fires=False)
    other = BEFORE.replace("onnx.Mul(%h, %x)", "onnx.Mul(%h, %h)")
    check_pass(other, "recover-hardswish", None, fires=False)
