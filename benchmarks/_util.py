"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import resource
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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


def time_round_robin(sessions: Dict[str, Tuple[Any, Dict[str, Any]]], *, runs: int, min_time: float,
                     max_runs: int) -> Dict[str, List[float]]:
    """Seconds per run of each onnxruntime ``(session, feeds)``, the sessions taking turns (rotating
    the order every round) so that machine noise hits all of them alike; at least ``runs`` rounds,
    more until ``min_time`` per session has passed, at most ``max_runs``."""
    import time

    times: Dict[str, List[float]] = {label: [] for label in sessions}
    order = list(sessions)
    t_end = time.perf_counter() + min_time * len(order)
    k = 0
    while order and (k < runs or (time.perf_counter() < t_end and k < max_runs)):
        for label in order[k % len(order):] + order[:k % len(order)]:
            sess, feeds = sessions[label]
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times[label].append(time.perf_counter() - t0)
        k += 1
    return times


class ChildError(RuntimeError):
    """A child process failed; the message is a one-line reason."""


def log(msg: str) -> None:
    """Progress on stderr, so the tables on stdout stay clean."""
    print(msg, file=sys.stderr, flush=True)


def error_line(stderr: str, limit: int = 160) -> str:
    """The most telling line of a child's stderr: the exception line of a traceback if any."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    if not lines:
        return "no error output"
    for ln in reversed(lines):
        if not ln.startswith(("File ", "^", "~")) and (":" in ln or "Error" in ln):
            return " ".join(ln.split())[:limit]
    return lines[-1][:limit]


def run_child(script: str, args: Sequence[str], timeout: float,
              shorten: Optional[Callable[[str], str]] = None) -> Dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh interpreter (so peak memory and imports are its own);
    return the JSON record it printed last. A failure raises :class:`ChildError` with one line."""
    import json
    import subprocess

    try:
        proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChildError(f"timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        reason = error_line(proc.stderr, 400 if shorten else 160)
        if shorten is not None:
            reason = shorten(reason)
        if proc.returncode < 0:
            reason = f"killed by signal {-proc.returncode}; {reason}"
        raise ChildError(reason)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise ChildError("no result printed") from None


def pick(text: str, known: Sequence[str], what: str) -> List[str]:
    """The comma-separated names of ``text``; a one-line ValueError names unknown ones and the choices."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in known]
    if bad:
        raise ValueError(f"unknown {what} {bad}; {what}: {', '.join(known)}")
    return names


def bench_each(names: Sequence[str], bench: Callable[[str, Path], Dict[str, Any]], *, prefix: str,
               keep: bool = False) -> Dict[str, Dict[str, Any]]:
    """Run ``bench(name, workdir)`` per model in one temporary directory; a failed child is logged, not fatal."""
    import shutil
    import tempfile
    import time

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    results: Dict[str, Dict[str, Any]] = {}
    try:
        for name in names:
            t0 = time.perf_counter()
            try:
                results[name] = bench(name, workdir)
            except ChildError as e:
                log(f"[{name}] FAILED: {e}")
            log(f"[{name}] done in {time.perf_counter() - t0:.0f}s")
    finally:
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def ort_session(path: str, threads: int = 1) -> Any:
    """An onnxruntime CPU session: ``threads`` intra-op threads, sequential, all graph optimizations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def session_feeds(sess: Any, data: Any) -> Dict[str, Any]:
    """The arrays of ``data`` (a dict or an npz) that ``sess`` takes as inputs, by name."""
    return {i.name: data[i.name] for i in sess.get_inputs()}
