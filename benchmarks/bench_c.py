"""Benchmark the C target: latency against onnxruntime, arena against its lower bound and against
whole-buffer slot reuse, code and weight bytes.

For each model of the test zoo (``tests/zoo``; batch 1):

1. ``edgec compile MODEL -O2 --target c --input-shape ...`` through the CLI, in a subprocess;
2. the generated ``model.c`` (and ``model_weights.c``) are compiled with ``cc -O3 -march=native
   -std=c99`` into objects and linked with a small timing harness (``clock_gettime``): ``--warmup``
   runs, then ``--runs`` timed runs of ``model_run``; the harness prints the median;
3. onnxruntime runs the *original* model on the same input with one thread
   (``intra_op_num_threads = inter_op_num_threads = 1``, sequential execution, ``ORT_ENABLE_ALL``),
   timed the same way. The prebuilt onnxruntime wheel picks its AVX2/AVX-512 kernels at run time,
   which is what ``-march=native`` gives the C code;
4. the C outputs must agree with onnxruntime's: max abs diff <= ``ATOL_REL * max(1, max |ref|)``.

C and onnxruntime are timed alternately ``--rounds`` times and each keeps its best median, so
background load on a shared machine skews both alike.

Columns:

- ``C ms`` / ``ORT ms`` / ``C/ORT``: latency (median of the runs) and their ratio (goal <= 1.5 for fp32);
- ``arena``: bytes of the planned activation arena (``MODEL_ARENA_BYTES``: every intermediate tensor
  plus the kernels' scratch buffers, e.g. the im2col blocks of convolutions);
- ``LB`` / ``arena/LB``: the lower bound, max over schedule steps of the (16-byte aligned) bytes
  live at that step, and the ratio (goal <= 1.02 on CNNs);
- ``slots``: the onnx2c baseline. Buffers (the same set, 16-byte aligned, no in-place sharing),
  in schedule order, each take the first *slot* whose previous occupant is dead, whatever its size;
  a slot grows to its largest occupant (a C union) and the arena is the sum of the slot sizes
  (onnx2c's ``Graph::add_to_free_union``; ``memory.slot_plan_bytes(policy="first_free")``);
- ``slots-fit``: the same, but a buffer only reuses a free slot at least as large as itself, else
  it opens a new one (greedy first fit on whole buffers; ``policy="fit"``). edgec's planner keeps
  both among its candidates, so ``arena`` is never above either;
- ``code B``: the ``.text`` section of ``model.o`` (``size -A``): kernels and glue, no weights;
- ``weights B``: bytes of the weight arrays the C code holds (compile-time packed layouts
  included; the packing pads rows/columns to the GEMM tile);
- ``max diff``: max abs difference of the outputs, C vs onnxruntime.

A model that fails (unsupported op, build error, mismatch) gets ``FAIL: <reason>`` and the run
goes on. Timings on a shared machine are noisy: compare ratios, rerun the rows that look off.

    python benchmarks/bench_c.py                        # digits CNN, MobileNetV2, ResNet-18 (224x224), BERT encoder
    python benchmarks/bench_c.py --small                # the zoo's small variants (a minute)
    python benchmarks/bench_c.py --models resnet18 --runs 50 --rounds 3
    python benchmarks/bench_c.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import format_table, log, median, use_zoo  # noqa: E402

DEFAULT_MODELS = ("digits_cnn", "mobilenetv2", "resnet18", "bert_encoder")
#: Zoo parameters where the full-size model would not build in the time budget: the BERT encoder at
#: BERT-mini size (4 layers, hidden 256, 4 heads; a 2000-token vocabulary keeps the embedding table
#: from dominating the weights). Others use the zoo's FULL_PARAMS.
BENCH_PARAMS: Dict[str, Dict[str, Any]] = {"bert_encoder": dict(hidden=256, depth=4, heads=4, vocab=2000, max_pos=512)}
#: Symbolic dims: batch 1 everywhere, sequence length 128 for the transformers.
DIMS = {"batch": 1, "seq": 128}
DIMS_SMALL = {"batch": 1, "seq": 16}
ATOL_REL = 1e-3
CC_FLAGS = ["-O3", "-march=native", "-std=c99"]
CNNS = ("digits_cnn", "mobilenetv2", "resnet18")

def timing_harness(report: Dict[str, Any]) -> str:
    """``prog IN.bin OUT.bin WARMUP RUNS``: reads the inputs, runs the model WARMUP times, times RUNS
    runs with ``clock_gettime(CLOCK_MONOTONIC)``, prints the median and min in ms, writes the outputs."""
    from edgec.backends.c.verify import io_buffers

    name = report["name"]
    decl, reads, writes, args = io_buffers(report)
    call = f"{name}_run({', '.join(args)})"
    return "\n".join([
        "#define _POSIX_C_SOURCE 199309L", "#include <stdio.h>", "#include <stdlib.h>", "#include <time.h>",
        f'#include "{name}.h"', "", *decl, "",
        "static int cmp(const void* a, const void* b)", "{",
        "    const double x = *(const double*)a, y = *(const double*)b;", "    return (x > y) - (x < y);", "}", "",
        "int main(int argc, char** argv)", "{",
        "    if (argc != 5) return 2;",
        '    FILE* fi = fopen(argv[1], "rb");', "    if (!fi) return 2;", *reads, "    fclose(fi);",
        "    const int warmup = atoi(argv[3]), runs = atoi(argv[4]);",
        "    double* t = (double*)malloc(sizeof(double) * (size_t)(runs > 0 ? runs : 1));",
        "    if (!t) return 6;",
        f"    for (int i = 0; i < warmup; ++i) if ({call} != 0) return 4;",
        "    for (int i = 0; i < runs; ++i) {",
        "        struct timespec t0, t1;",
        "        clock_gettime(CLOCK_MONOTONIC, &t0);",
        f"        if ({call} != 0) return 4;",
        "        clock_gettime(CLOCK_MONOTONIC, &t1);",
        "        t[i] = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;",
        "    }",
        "    qsort(t, (size_t)runs, sizeof(double), cmp);",
        '    printf("%.6f %.6f\\n", runs > 0 ? t[runs / 2] : 0.0, runs > 0 ? t[0] : 0.0);',
        f"    if ({call} != 0) return 4;",
        '    FILE* fo = fopen(argv[2], "wb");', "    if (!fo) return 2;", *writes, "    fclose(fo);",
        "    free(t);", "    return 0;", "}", ""])


def _run(cmd: Sequence[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: timed out after {timeout:.0f}s") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()]
        raise RuntimeError(f"{what}: {lines[-1][:200] if lines else f'exit {p.returncode}'}")
    return p


def section_bytes(obj: str, section: str) -> int:
    """Size of ``section`` in object file ``obj`` (``size -A``)."""
    out = _run(["size", "-A", obj], 60, "size").stdout
    total = 0
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) >= 2 and (parts[0] == section or parts[0].startswith(section + ".")):
            total += int(parts[1])
    return total


def edgec_cmd() -> List[str]:
    exe = shutil.which("edgec")
    return [exe] if exe else [sys.executable, "-c", "import sys; from edgec.cli import main; sys.exit(main())"]


class Row:
    def __init__(self, name: str) -> None:
        self.name = name
        self.size = ""
        self.c_ms: Optional[float] = None
        self.ort_ms: Optional[float] = None
        self.report: Dict[str, Any] = {}
        self.code = 0
        self.max_diff: Optional[float] = None
        self.error = ""
        self.times: Dict[str, float] = {}


def bench_model(name: str, small: bool, work: Path, warmup: int, runs: int, rounds: int, cc: str) -> Row:
    import numpy as np
    import onnxruntime as ort

    use_zoo()
    from zoo import FULL_PARAMS, TEST_PARAMS, get_path, make_inputs

    row = Row(name)
    params = TEST_PARAMS[name] if small and name in TEST_PARAMS else BENCH_PARAMS.get(name, FULL_PARAMS.get(name, {}))
    dims = DIMS_SMALL if small else DIMS
    t0 = time.perf_counter()
    src = str(get_path(name, **params))
    row.times["export"] = time.perf_counter() - t0
    feeds = make_inputs(src, seed=0, dims=dims)
    row.size = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in feeds.items())
    shapes = [f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items()]

    out = work / name
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    cmd = edgec_cmd() + ["compile", src, "-O2", "--target", "c", "-o", str(out)]
    for s in shapes:
        cmd += ["--input-shape", s]
    _run(cmd, 900, "edgec compile")
    row.times["edgec"] = time.perf_counter() - t0
    rep = json.loads((out / "report.json").read_text())
    row.report = rep

    t0 = time.perf_counter()
    (out / "bench_main.c").write_text(timing_harness(rep))
    objs = []
    for f in ("model.c", "model_weights.c", "bench_main.c"):
        if (out / f).exists():
            o = str(out / (f[:-2] + ".o"))
            extra = ["-Wall", "-Wextra", "-Werror"] if f == "model.c" else []
            _run([cc, *CC_FLAGS, *extra, "-c", str(out / f), "-o", o], 900, f"cc {f}")
            objs.append(o)
    prog = str(out / "bench")
    _run([cc, *CC_FLAGS, *objs, "-o", prog, "-lm"], 300, "link")
    row.code = section_bytes(str(out / "model.o"), ".text")
    row.times["cc"] = time.perf_counter() - t0

    fin, fout = out / "inputs.bin", out / "outputs.bin"
    with open(fin, "wb") as f:
        for t in rep["inputs"]:
            f.write(np.ascontiguousarray(feeds[t["name"]]).astype(np.dtype(t["dtype"]).newbyteorder("<")).tobytes())

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)

    c_meds, o_meds = [], []
    for _ in range(rounds):
        p = _run([prog, str(fin), str(fout), str(warmup), str(runs)], 1800, "C run")
        c_meds.append(float(p.stdout.split()[0]))
        for _ in range(warmup):
            sess.run(None, feeds)
        ts = []
        for _ in range(runs):
            t1 = time.perf_counter()
            sess.run(None, feeds)
            ts.append((time.perf_counter() - t1) * 1e3)
        o_meds.append(median(ts))
    row.c_ms, row.ort_ms = min(c_meds), min(o_meds)

    raw = np.fromfile(fout, dtype=np.uint8)
    off, diffs = 0, []
    for t, r in zip(rep["outputs"], ref):
        dt = np.dtype(t.get("dtype", "float32")).newbyteorder("<")
        n = int(np.prod(t["shape"], dtype=np.int64)) * dt.itemsize
        got = raw[off:off + n].view(dt).reshape(t["shape"]).astype(np.float64)
        off += n
        r = np.asarray(r, dtype=np.float64)
        d = float(np.max(np.abs(got - r))) if r.size else 0.0
        diffs.append(d)
        if not d <= ATOL_REL * max(1.0, float(np.max(np.abs(r))) if r.size else 1.0):
            row.error = f"output '{t['name']}' differs from onnxruntime by {d:.3g}"
    row.max_diff = max(diffs) if diffs else 0.0
    return row


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo names")
    ap.add_argument("--small", action="store_true", help="the zoo's small test variants")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="alternate C / onnxruntime timing this many times")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--keep", action="store_true", help="keep the generated code (path on stderr)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    a = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="edgec-bench-c-"))
    rows: List[Row] = []
    t_all = time.perf_counter()
    for name in [m.strip() for m in a.models.split(",") if m.strip()]:
        log(f"[{name}] ...")
        t0 = time.perf_counter()
        try:
            row = bench_model(name, a.small, work, a.warmup, a.runs, a.rounds, a.cc)
        except Exception as e:  # noqa: BLE001 - one failing model must not stop the table
            row = Row(name)
            row.error = " ".join(str(e).split())[:200] or type(e).__name__
        rows.append(row)
        log(f"[{name}] {time.perf_counter() - t0:.0f}s " + " ".join(f"{k} {v:.0f}s" for k, v in row.times.items())
            + (f" FAIL: {row.error}" if row.error else ""))

    header = ["model", "input", "C ms", "ORT ms", "C/ORT", "arena B", "LB B", "arena/LB", "slots B", "slots-fit B",
              "code B", "weights B", "max diff"]
    table = []
    for r in rows:
        m = r.report.get("memory", {})
        st = m.get("strategies", {})
        lb = m.get("lower_bound_bytes")
        ratio = r.c_ms / r.ort_ms if r.c_ms and r.ort_ms else None
        cells: List[Any] = [r.name, r.size, r.c_ms, r.ort_ms, ratio, m.get("arena_bytes"), lb,
                            (f"{m['arena_bytes'] / lb:.3f}" if lb else None), st.get("slots_first_free"),
                            st.get("slots"), r.code or None, r.report.get("weights", {}).get("bytes"),
                            (f"{r.max_diff:.2g}" if r.max_diff is not None else None)]
        if r.error:
            cells[1] = f"FAIL: {r.error}"
        table.append(cells)
    print(f"C: {a.cc} {' '.join(CC_FLAGS)}; onnxruntime 1 thread, ORT_ENABLE_ALL; median of {a.runs} runs after "
          f"{a.warmup} warm-up, best of {a.rounds} alternating rounds; batch 1"
          + ("" if a.small else ", sequence length 128") + f"; {time.perf_counter() - t_all:.0f}s total")
    print(format_table(header, table))
    misses = []
    for r in rows:
        if r.error or not r.c_ms or not r.ort_ms:
            continue
        if r.c_ms / r.ort_ms > 1.5:
            misses.append(f"{r.name}: C/ORT {r.c_ms / r.ort_ms:.2f} > 1.5")
        m = r.report["memory"]
        if r.name in CNNS and m["lower_bound_bytes"] and m["arena_bytes"] > 1.02 * m["lower_bound_bytes"]:
            misses.append(f"{r.name}: arena/LB {m['arena_bytes'] / m['lower_bound_bytes']:.3f} > 1.02")
        if m["arena_bytes"] > min(m.get("strategies", {}).get("slots_first_free", m["arena_bytes"]),
                                  m.get("strategies", {}).get("slots", m["arena_bytes"])):
            misses.append(f"{r.name}: arena above the slot baseline")
    print("goals: " + ("all met" if not misses else "; ".join(misses)))
    if a.json:
        Path(a.json).write_text(json.dumps([{"model": r.name, "input": r.size, "c_ms": r.c_ms, "ort_ms": r.ort_ms,
                                             "memory": r.report.get("memory"), "code_text_bytes": r.code,
                                             "weights": r.report.get("weights"), "max_diff": r.max_diff,
                                             "error": r.error, "seconds": r.times} for r in rows], indent=2))
    if a.keep:
        log(f"generated code kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
