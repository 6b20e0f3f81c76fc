"""Pass-manager instruments: everything that observes passes (verification, dumps, timing, statistics,
crash reproducers). Passes never print; instruments do.

Hooks, called by :class:`~edgec.passmanager.PassManager` (before-hooks in the order the instruments
were given, after-hooks in reverse order):
``before_pipeline(model, ctx)``, ``before_pass(pass, model)``, ``after_pass(pass, model, changed)``,
``after_failed(pass, model, exc)`` (may return a note appended to the failure message) and
``after_pipeline(model, ctx)``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import IO, Callable, Dict, Iterable, Optional, Set

from ..errors import PassFailure, VerificationError
from .base import Pass, PassContext

__all__ = [
    "Instrument", "VerifyEach", "PrintIR", "DumpDir", "Timing", "Statistics", "CrashReproducer",
]


def _print_model(model, elide_limit: Optional[int]) -> str:
    from ..ir.printer import print_model

    return print_model(model, elide_limit=elide_limit)


def _stderr() -> IO[str]:
    return sys.stderr  # looked up at call time (test runners swap it)


class Instrument:
    """Base class: every hook does nothing."""

    ctx: PassContext

    def before_pipeline(self, model, ctx: PassContext) -> None:
        self.ctx = ctx

    def before_pass(self, p: Pass, model) -> None:
        pass

    def after_pass(self, p: Pass, model, changed: bool) -> None:
        pass

    def after_failed(self, p: Pass, model, exc: BaseException) -> Optional[str]:
        return None

    def after_pipeline(self, model, ctx: PassContext) -> None:
        pass


class VerifyEach(Instrument):
    """Verify the IR before the pipeline and after every pass that changed it (``always``: after
    every pass); a broken IR names the pass."""

    def __init__(self, always: bool = False) -> None:
        self.always = always

    def before_pipeline(self, model, ctx: PassContext) -> None:
        super().before_pipeline(model, ctx)
        from ..ir.verifier import verify

        try:
            verify(model)
        except VerificationError as e:
            raise VerificationError(f"the input IR is invalid (before any pass): {e}") from e

    def after_pass(self, p: Pass, model, changed: bool) -> None:
        from ..ir.verifier import verify

        if not changed and not self.always:  # the IR verified after the last change still stands
            return
        try:
            verify(model)
        except VerificationError as e:
            raise PassFailure(f"pass '{p.name}' broke the IR: {e}") from e


def _header(when: str, p: Optional[Pass], changed: Optional[bool], pipeline: str) -> str:
    what = "" if p is None else f" {p}"
    status = "" if changed is None else (" (changed)" if changed else " (unchanged)")
    return f"// ----- IR Dump {when}{what}{status} ----- //\n// pipeline: {pipeline}\n"


def _selected(sel: Optional[Set[str]], p: Pass) -> bool:
    return sel is not None and ("*" in sel or p.name in sel)


class PrintIR(Instrument):
    """Print the IR to stderr before/after selected passes (MLIR's ``--print-ir-*``)."""

    def __init__(self, *, before: Iterable[str] = (), after: Iterable[str] = (), before_all: bool = False,
                 after_all: bool = False, after_change: bool = False, elide_limit: Optional[int] = 16,
                 stream: Optional[Callable[[], IO[str]]] = None) -> None:
        self.before: Optional[Set[str]] = {"*"} if before_all else (set(before) or None)
        after_set: Optional[Set[str]] = {"*"} if after_all else (set(after) or None)
        if after_change and after_set is None:
            after_set = {"*"}
        self.after = after_set
        self.after_change = after_change
        self.elide_limit = elide_limit
        self.stream = stream or _stderr

    def before_pass(self, p: Pass, model) -> None:
        if _selected(self.before, p):
            self._emit(_header("Before", p, None, self.ctx.pipeline) + _print_model(model, self.elide_limit))

    def after_pass(self, p: Pass, model, changed: bool) -> None:
        if _selected(self.after, p) and (changed or not self.after_change):
            self._emit(_header("After", p, changed, self.ctx.pipeline) + _print_model(model, self.elide_limit))

    def _emit(self, text: str) -> None:
        out = self.stream()
        out.write(text if text.endswith("\n") else text + "\n")
        out.write("\n")
        out.flush()


class DumpDir(Instrument):
    """Write the IR to one numbered file per pass: ``000-input.ir``, ``001-after-dce.ir``, ..."""

    def __init__(self, directory: str, *, elide_limit: Optional[int] = 16) -> None:
        self.directory = directory
        self.elide_limit = elide_limit
        self.counter = 0

    def _write(self, stem: str, text: str) -> None:
        path = os.path.join(self.directory, f"{self.counter:03d}-{stem}.ir")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        self.counter += 1

    def before_pipeline(self, model, ctx: PassContext) -> None:
        super().before_pipeline(model, ctx)
        os.makedirs(self.directory, exist_ok=True)
        self.counter = 0
        self._write("input", _header("Before", None, None, ctx.pipeline) + _print_model(model, self.elide_limit))

    def after_pass(self, p: Pass, model, changed: bool) -> None:
        self._write(f"after-{p.name}", _header("After", p, changed, self.ctx.pipeline) + _print_model(model, self.elide_limit))

    def after_failed(self, p: Pass, model, exc: BaseException) -> Optional[str]:
        try:  # the IR may be too broken to print
            text = _print_model(model, self.elide_limit)
        except Exception as e:  # noqa: BLE001
            text = f"// the IR could not be printed: {type(e).__name__}: {e}\n"
        self._write(f"failed-{p.name}", f"// ----- IR Dump After Failure {p} ----- //\n// {exc}\n" + text)
        return None


class Timing(Instrument):
    """Per-pass wall time, printed as a table with totals when the pipeline ends."""

    def __init__(self, stream: Optional[Callable[[], IO[str]]] = None) -> None:
        self.stream = stream or _stderr
        self.times: Dict[str, float] = {}
        self.runs: Dict[str, int] = {}
        self._start = 0.0
        self._pipeline_start = 0.0

    def before_pipeline(self, model, ctx: PassContext) -> None:
        super().before_pipeline(model, ctx)
        self._pipeline_start = time.perf_counter()

    def before_pass(self, p: Pass, model) -> None:
        self._start = time.perf_counter()

    def _record(self, p: Pass) -> None:
        self.times[p.name] = self.times.get(p.name, 0.0) + time.perf_counter() - self._start
        self.runs[p.name] = self.runs.get(p.name, 0) + 1

    def after_pass(self, p: Pass, model, changed: bool) -> None:
        self._record(p)

    def after_failed(self, p: Pass, model, exc: BaseException) -> Optional[str]:
        self._record(p)
        return None

    def report(self) -> str:
        """The timing table."""
        wall = time.perf_counter() - self._pipeline_start
        passes = sum(self.times.values())
        lines = ["// ----- Pass execution timing report ----- //",
                 f"// pipeline: {self.ctx.pipeline}",
                 f"{'wall (s)':>10}  {'%':>6}  {'runs':>4}  pass"]
        for name in sorted(self.times, key=lambda n: -self.times[n]):
            t = self.times[name]
            lines.append(f"{t:10.4f}  {100 * t / wall if wall else 0:5.1f}%  {self.runs[name]:4d}  {name}")
        lines.append(f"{passes:10.4f}  {100 * passes / wall if wall else 0:5.1f}%  {sum(self.runs.values()):4d}  total (passes)")
        lines.append(f"{wall:10.4f}  {100.0:5.1f}%  {'':4}  total (pipeline, with verification and dumps)")
        return "\n".join(lines) + "\n"

    def after_pipeline(self, model, ctx: PassContext) -> None:
        out = self.stream()
        out.write(self.report())
        out.flush()


class Statistics(Instrument):
    """A table of the ``ctx.stat`` values of every pass, printed when the pipeline ends."""

    def __init__(self, stream: Optional[Callable[[], IO[str]]] = None) -> None:
        self.stream = stream or _stderr

    def report(self) -> str:
        """The statistics table."""
        lines = ["// ----- Pass statistics ----- //"]
        if not self.ctx.stats:
            lines.append("(no statistics)")
        for name, stats in self.ctx.stats.items():
            lines.append(name)
            width = max(len(k) for k in stats) if stats else 0
            for key, value in stats.items():
                lines.append(f"  {key:<{width}}  {value}")
        return "\n".join(lines) + "\n"

    def after_pipeline(self, model, ctx: PassContext) -> None:
        out = self.stream()
        out.write(self.report())
        out.flush()


class CrashReproducer(Instrument):
    """When a pass fails, write ``input.ir``, ``pipeline.txt``, ``run.sh`` and ``README`` to a directory.

    ``input.ir`` is the full IR the failing pass got (snapshotted before every pass, tensors not
    elided); ``pipeline.txt`` the failing pass and the rest of the pipeline; ``run.sh`` the
    ``edgec opt`` command that reruns it (with ``group_flags`` such as plugin files and ``opt_flags``).
    """

    def __init__(self, directory: str, *, group_flags: Iterable[str] = (), opt_flags: Iterable[str] = ()) -> None:
        self.directory = directory
        self.group_flags = list(group_flags)
        self.opt_flags = list(opt_flags)
        self.snapshot: Optional[str] = None

    def before_pass(self, p: Pass, model) -> None:
        self.snapshot = _print_model(model, None)

    def command(self, pipeline: str) -> str:
        """The shell command that reruns the failing part of the pipeline on ``input.ir``."""
        words = ["edgec", *self.group_flags, "opt", "input.ir", "--passes", pipeline, *self.opt_flags]
        return " ".join(shlex.quote(w) for w in words)

    def after_failed(self, p: Pass, model, exc: BaseException) -> Optional[str]:
        if self.snapshot is None:
            return None
        remaining = str(getattr(self.ctx, "remaining", None) or p)
        os.makedirs(self.directory, exist_ok=True)
        files = {
            "input.ir": self.snapshot,
            "pipeline.txt": remaining + "\n",
            "run.sh": "#!/bin/sh\n# Reruns the pass that failed on the IR it got.\n"
                      'cd "$(dirname "$0")" || exit 1\n' + self.command(remaining) + "\n",
            "README": (f"edgec crash reproducer\n\npass: {p}\nerror: {exc}\nfull pipeline: {self.ctx.pipeline}\n"
                       f"failing pass and the rest of the pipeline: {remaining}\n\n"
                       f"input.ir is the IR the failing pass got. Rerun with:\n\n  sh run.sh\n\nor\n\n  "
                       f"{self.command(remaining)}\n"),
        }
        for name, text in files.items():
            with open(os.path.join(self.directory, name), "w", encoding="utf-8") as f:
                f.write(text)
        os.chmod(os.path.join(self.directory, "run.sh"), 0o755)
        return f"reproducer written to {self.directory}"
