"""Human-readable sizes for reports and summaries."""

from __future__ import annotations

from typing import Any

__all__ = ["human_bytes"]


def human_bytes(n: Any) -> str:
    """``1536`` -> ``'1.5 KiB'``; anything that is not a number -> ``'-'``."""
    if not isinstance(n, (int, float)):
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
