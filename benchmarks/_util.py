"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import resource
import statistics
import sys
from pathlib import Path
from typing import List, Sequence

#: The repository's ``tests/`` folder (holds the ``zoo`` package of real models).
TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"


def use_zoo() -> None:
    """Make ``from zoo import ...`` work (the model zoo lives in ``tests/zoo``)."""
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a GitHub-flavoured markdown table with right-aligned numbers."""
    cells: List[List[str]] = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("| " + " | ".join(c.rjust(w) if k else c.ljust(w) for c, w in zip(r, widths)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.2f}"
    return "" if c is None else str(c)
