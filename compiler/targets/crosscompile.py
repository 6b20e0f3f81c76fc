"""Build the generated C for the target CPU and measure it (text/rodata/data/bss per file).

Arm cores use ``<toolchain_prefix>gcc`` (default ``arm-none-eabi-gcc``) with
``-mthumb -mcpu=<core> [-mfpu=..] [-mfloat-abi=..] -O2 -std=c99 -Wall -Wextra -Werror -c``, then
``<prefix>size -A`` for the sections; ``core = "host"`` uses ``$CC`` (default ``cc``) and ``size``.
Objects are built in a temporary directory: ``out_dir`` is only read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from typing import Any, Dict, List, Optional

from ..errors import EdgecError
from .description import TargetDescription

__all__ = ["CrossCompileError", "cross_compile", "BASE_FLAGS", "section_sizes"]

BASE_FLAGS = ("-O2", "-std=c99", "-Wall", "-Wextra", "-Werror")


class CrossCompileError(EdgecError):
    """The cross compiler is missing, or the generated C does not build for the target."""


def _tools(target: TargetDescription) -> tuple:
    cpu = target.cpu
    if cpu.is_host:
        return os.environ.get("CC", "cc"), "size"
    return f"{cpu.toolchain_prefix}gcc", f"{cpu.toolchain_prefix}size"


def section_sizes(size_tool: str, obj: str) -> Dict[str, int]:
    """``text``, ``rodata``, ``data``, ``bss`` bytes of an object file (from ``size -A``)."""
    res = subprocess.run([size_tool, "-A", obj], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise CrossCompileError(f"{size_tool} failed on {os.path.basename(obj)}: "
                                f"{(res.stderr.strip().splitlines() or ['?'])[0]}")
    out = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith(".") or not parts[1].isdigit():
            continue
        name, size = parts[0], int(parts[1])
        if name.startswith(".text"):
            out["text"] += size
        elif name.startswith(".rodata"):
            out["rodata"] += size
        elif name.startswith(".data"):
            out["data"] += size
        elif name.startswith(".bss") or name == ".COMMON":
            out["bss"] += size
    return out


def cross_compile(out_dir: str, target: TargetDescription, *, extra_flags: Optional[List[str]] = None,
                  timeout: float = 600.0) -> Dict[str, Any]:
    """Compile every ``.c`` file of ``out_dir`` for ``target.cpu`` and size the objects.

    Returns ``{"compiler", "flags", "files": {name: {text, rodata, data, bss}}, "total": {text,
    rodata, data, bss, flash_bytes, ram_bytes}}`` where flash = text + rodata + data and
    ram = data + bss. Raises :class:`CrossCompileError` (one line) when the compiler is missing or
    the build fails (the first compiler diagnostic is quoted).
    """
    cc, size = _tools(target)
    cc_path = shutil.which(cc)
    if cc_path is None:
        hint = ("install the GNU Arm Embedded toolchain (Debian/Ubuntu: apt-get install gcc-arm-none-eabi)"
                if not target.cpu.is_host else "install a C compiler or set CC")
        raise CrossCompileError(f"cross compiler '{cc}' not found on PATH (target {target.name}, cpu "
                                f"{target.cpu.core}): {hint}")
    size_path = shutil.which(size)
    if size_path is None:
        raise CrossCompileError(f"'{size}' not found on PATH (target {target.name}): it comes with the toolchain "
                                f"of '{cc}'")
    try:
        sources = sorted(f for f in os.listdir(out_dir) if f.endswith(".c"))
    except OSError as e:
        raise CrossCompileError(f"{out_dir}: cannot list the generated C ({e.strerror})") from None
    if not sources:
        raise CrossCompileError(f"{out_dir}: no .c files to compile")
    flags = target.cpu.flags() + list(BASE_FLAGS) + list(extra_flags or [])
    files: Dict[str, Dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="edgec-xc-") as tmp:
        for src in sources:
            obj = os.path.join(tmp, src[:-2] + ".o")
            cmd = [cc_path] + flags + ["-I", out_dir, "-c", os.path.join(out_dir, src), "-o", obj]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                     env={**os.environ, "LC_ALL": "C"})
            except subprocess.TimeoutExpired:
                raise CrossCompileError(f"{cc} timed out after {timeout:g} s on {src}") from None
            if res.returncode != 0:
                diag = [ln for ln in res.stderr.splitlines() if re.search(r"\berror:", ln)] or \
                    res.stderr.strip().splitlines() or ["(no output)"]
                raise CrossCompileError(f"{cc} {' '.join(target.cpu.flags())} failed on {src}: "
                                        f"{diag[0].replace(os.path.join(out_dir, ''), '')}")
            files[src] = section_sizes(size_path, obj)
    total = {k: sum(f[k] for f in files.values()) for k in ("text", "rodata", "data", "bss")}
    total["flash_bytes"] = total["text"] + total["rodata"] + total["data"]
    total["ram_bytes"] = total["data"] + total["bss"]
    return {"compiler": os.path.basename(cc_path), "flags": flags, "files": files, "total": total}
