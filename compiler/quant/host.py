"""Facts about the machine that runs onnxruntime, where they change how to quantize for it."""

from __future__ import annotations

import platform

__all__ = ["x86_without_vnni"]

_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def x86_without_vnni(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True on an x86-64 CPU without VNNI: onnxruntime's u8s8 kernels there add pairs of products
    in int16 with saturation, so full-range 8-bit weights lose accuracy (its ``reduce_range``
    advice). False when it cannot tell (other CPUs, no /proc)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return not any(flag in flags for flag in _VNNI_FLAGS)
    except OSError:
        return False
    return False
