"""A tiny progress bar on stderr: live when stderr is a TTY or ``EDGEC_PROGRESS=1``, else one summary line.

``EDGEC_PROGRESS=0`` silences it entirely.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress(total, "calibrating", unit="samples") as p: p.update(n)``."""

    def __init__(self, total: Optional[int], desc: str, *, unit: str = "samples", enabled: bool = True,
                 stream: Optional[TextIO] = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        env = os.environ.get("EDGEC_PROGRESS", "")
        self.enabled = enabled and env != "0"
        try:
            tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            tty = False
        self.live = self.enabled and (tty or env == "1")
        self.done = 0
        self.steps = 0
        self._start = time.perf_counter()
        self._last = 0.0
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.done += n
        self.steps += 1
        if not self.live:
            return
        now = time.perf_counter()
        if now - self._last >= 0.1 or (self.total is not None and self.done >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self._start
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            text = f"\r{self.desc} [{bar:<30}] {self.done}/{self.total} {self.unit} {elapsed:5.1f}s"
        else:
            text = f"\r{self.desc} {self.done} {self.unit} {elapsed:5.1f}s"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self._closed or not self.enabled:
            self._closed = True
            return
        self._closed = True
        elapsed = time.perf_counter() - self._start
        if self.live:
            self._draw(time.perf_counter())
            self.stream.write("\n")
        else:
            self.stream.write(f"{self.desc}: {self.done} {self.unit} in {self.steps} batches, {elapsed:.1f}s\n")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
