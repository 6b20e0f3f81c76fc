"""Atomic file output: write to a temporary file beside the target, then rename it into place."""

from __future__ import annotations

import os
import tempfile
from typing import Tuple

__all__ = ["temp_beside", "write_text_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: str, suffix: str = ".tmp") -> Tuple[int, str]:
    """A new temporary file in ``path``'s folder (same file system, so ``os.replace`` is atomic),
    with the permissions a plain ``open`` would give (mkstemp alone makes it owner-only)."""
    folder, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=suffix, dir=folder)
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a failure never leaves a partial file."""
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        tmp = ""
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
