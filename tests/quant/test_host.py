"""Host facts that change quantization for onnxruntime, and how they reach the pipeline."""

from __future__ import annotations

import platform

import pytest

from edgec.quant.accuracy import QuantConfig, segment_text
from edgec.quant.host import x86_without_vnni


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse2 avx2 fma", True),
    ("fpu sse2 avx2 avx512f avx512_vnni", False),
    ("fpu sse2 avx2 avx_vnni", False),
])
def test_vnni_detection_from_cpuinfo(tmp_path, monkeypatch, flags: str, expected: bool) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert x86_without_vnni(str(info)) is expected


def test_unknown_hosts_are_not_guessed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert x86_without_vnni(str(tmp_path / "none")) is False
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert x86_without_vnni(str(tmp_path / "none")) is False  # no /proc/cpuinfo: cannot tell


def test_reduce_range_reaches_quantize_and_bias_correction() -> None:
    text = segment_text(QuantConfig(mode="int8", bias_correction=True, reduce_range=True))
    assert text == "correct-bias{reduce-range=true},quantize{reduce-range=true}"
    assert "reduce-range" not in segment_text(QuantConfig(mode="int8"))
