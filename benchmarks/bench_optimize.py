"""Benchmark graph optimization: ``edgec -O2`` against onnxslim, onnxsim and onnxoptimizer.

Every tool gets the same input file (a model from the test zoo, ``tests/zoo``) and runs with its
defaults: no input shapes are given, so dynamic dims stay dynamic. For each (model, tool) one
table row reports

- nodes after optimization, counting the nodes of If / Loop / Scan subgraphs too;
- file size (model file plus any external data it wrote), MB;
- optimization wall time: load + optimize + save in a fresh subprocess (interpreter start and
  imports excluded), median of ``--repeat`` runs;
- onnxruntime latency of the result on 1 thread (intra- and inter-op), median of at least
  ``--runs`` runs (and at least ``--min-time`` seconds of them) after ``--warmup`` runs, with ORT
  graph optimizations disabled (``ORT_DISABLE_ALL``) and enabled (``ORT_ENABLE_ALL``); the
  original model is measured the same way. The original and all outputs of one model are timed
  round-robin in one process, so background load skews them alike;
- max abs diff of the outputs vs the original model's (both run with ``ORT_DISABLE_ALL``) on
  realistic inputs (``zoo.make_inputs``, batch 1, sequence length per model).

A tool that crashes, times out or writes a model that onnxruntime cannot load or run gets
``FAIL: <reason>`` in its row; the run goes on. A summary then marks edgec's goals met / missed
per model, and ``--diff-ops`` prints per-model op histograms (ops whose counts differ).

    python benchmarks/bench_optimize.py                 # full-size models
    python benchmarks/bench_optimize.py --small         # the zoo's small test variants
    python benchmarks/bench_optimize.py --models resnet18,vit --repeat 5 --runs 20 --diff-ops
    python benchmarks/bench_optimize.py --csv --out results.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import ChildError, format_table, log, median, run_child, time_round_robin, use_zoo  # noqa: E402

#: Models benchmarked by default (any zoo name works with ``--models``).
DEFAULT_MODELS = ("resnet18", "mobilenetv2", "bert_encoder", "vit", "recurrent_if_loop", "paddle_style")
TOOLS = ("edgec", "onnxslim", "onnxsim", "onnxoptimizer")
OTHERS = TOOLS[1:]

#: Symbolic dims used for the inputs (batch 1 everywhere; sequence length per model).
DIMS_FULL: Dict[str, Dict[str, int]] = {"bert_encoder": {"seq": 128}, "vit": {}, "recurrent_if_loop": {"seq": 64},
                                        "lstm": {"seq": 64}, "gru": {"seq": 64}}
DIMS_SMALL: Dict[str, Dict[str, int]] = {"bert_encoder": {"seq": 16}, "recurrent_if_loop": {"seq": 16},
                                         "lstm": {"seq": 16}, "gru": {"seq": 16}}

#: Cap on timed runs when ``--min-time`` asks for more than ``--runs``.
MAX_RUNS = 5000

#: Output agreement goal: max abs diff <= ATOL * max(1, max |reference|).
ATOL = 1e-4


def model_dims(name: str, small: bool) -> Dict[str, int]:
    """Symbolic dim values for ``name``'s inputs."""
    dims = {"batch": 1, "seq": 16}
    dims.update((DIMS_SMALL if small else DIMS_FULL).get(name, {}))
    return dims


# ------------------------------------------------------------------------------------------------
# child side: every measurement runs in a fresh interpreter
# ------------------------------------------------------------------------------------------------

def child_prepare(name: str, small: bool, workdir: str) -> None:
    """Export (or fetch from the zoo cache) ``name``, copy it to ``workdir/src/model.onnx`` and
    write its inputs to ``workdir/inputs.npz``."""
    import numpy as np

    use_zoo()
    from zoo import FULL_PARAMS, TEST_PARAMS, get_path, make_inputs

    params = TEST_PARAMS[name] if small else FULL_PARAMS.get(name, {})
    cached = get_path(name, **params)
    src = Path(workdir) / "src" / "model.onnx"
    src.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, src)
    feeds = make_inputs(str(src), seed=0, dims=model_dims(name, small))
    np.savez(Path(workdir) / "inputs.npz", **feeds)
    print(json.dumps({"src": str(src), "params": params,
                      "inputs": {k: list(v.shape) for k, v in feeds.items()}}))


def _save_onnx(model: Any, out: str) -> None:
    """``onnx.save``, spilling weights to external data past the 2 GB protobuf limit."""
    import onnx

    if model.ByteSize() < 2**31 - 2**20:
        onnx.save(model, out)
    else:
        onnx.save(model, out, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=Path(out).name + ".data")


def child_optimize(tool: str, src: str, out: str) -> None:
    """Load ``src``, optimize it with ``tool`` (its defaults), save to ``out``; print the wall time."""
    import onnx

    if tool == "edgec":
        import edgec
        import edgec.passes  # noqa: F401  the optimizer's own code is imported before timing, as for the others
    elif tool == "onnxslim":
        import onnxslim
    elif tool == "onnxsim":
        import onnxsim
    elif tool == "onnxoptimizer":
        import onnxoptimizer
    else:
        raise ValueError(f"unknown tool {tool!r}")
    t0 = time.perf_counter()
    if tool == "edgec":
        model = edgec.load(src)
        edgec.optimize(model, opt_level=2)
        edgec.save(model, out)
    elif tool == "onnxslim":
        _save_onnx(onnxslim.slim(src), out)
    elif tool == "onnxsim":
        simplified, ok = onnxsim.simplify(onnx.load(src))
        if not ok:
            raise RuntimeError("onnxsim: simplified model failed its own check")
        _save_onnx(simplified, out)
    else:
        _save_onnx(onnxoptimizer.optimize(onnx.load(src), onnxoptimizer.get_fuse_and_elimination_passes()), out)
    print(json.dumps({"wall": time.perf_counter() - t0}))


def _iter_nodes(graph: Any):
    """All nodes of ``graph``, descending into subgraph attributes (If / Loop / Scan bodies)."""
    import onnx

    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _iter_nodes(g)


def _max_diff(ref: Any, got: Any) -> Tuple[float, float]:
    """(max abs diff, max |ref|) of two arrays; NaN in only one of them counts as infinite."""
    import numpy as np

    if ref.shape != got.shape:
        raise ValueError(f"output shape {list(got.shape)} != original {list(ref.shape)}")
    if ref.size == 0:
        return 0.0, 0.0
    if ref.dtype.kind not in "fc":
        return float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))), \
            float(np.max(np.abs(ref.astype(np.float64))))
    r, g = ref.astype(np.float64), got.astype(np.float64)
    d = np.abs(r - g)
    both_nan = np.isnan(r) & np.isnan(g)
    d[both_nan] = 0.0
    d[np.isnan(d)] = np.inf
    finite = np.abs(r[np.isfinite(r)])
    return float(d.max()), float(finite.max()) if finite.size else 0.0


def _short_error(e: BaseException) -> str:
    """A one-line error message without onnxruntime's boilerplate and temporary paths."""
    msg = " ".join(str(e).split())
    msg = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", msg)
    msg = re.sub(r"Load model from \S+ failed: ?", "load failed: ", msg)
    msg = re.sub(r"\S*edgec-bench-opt-\w+/", "", msg)
    return msg[:200]


def _session(path: str, opt_on: bool) -> Any:
    """A 1-thread CPU onnxruntime session with graph optimizations all off or all on."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if opt_on
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _feeds(path: str, inputs: str) -> Dict[str, Any]:
    """The model's inputs taken from the ``inputs`` .npz (raise if the model wants others)."""
    import numpy as np
    import onnx

    proto = onnx.load(path, load_external_data=False)
    data = np.load(inputs)
    names = {i.name for i in proto.graph.input} - {t.name for t in proto.graph.initializer}
    missing = names - set(data.files)
    if missing:
        raise ValueError(f"model has new inputs {sorted(missing)}")
    return {k: data[k] for k in names}


def child_check(path: str, inputs: str, ref: str) -> None:
    """Count nodes and ops, then run the model once with ORT optimizations off (outputs compared
    with ``ref``, an .npz written instead when it does not exist yet) and once with them on.
    Prints a JSON record."""
    import collections

    import numpy as np
    import onnx

    proto = onnx.load(path, load_external_data=False)
    ops = collections.Counter(
        (f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type) for n in _iter_nodes(proto.graph))
    output_names = [o.name for o in proto.graph.output]
    del proto
    size = sum(p.stat().st_size for p in Path(path).parent.iterdir() if p.is_file())
    rec: Dict[str, Any] = {"nodes": sum(ops.values()), "ops": dict(ops), "mb": size / 1e6}
    outputs = None
    for opt_on in (False, True):
        label = "ORT opt " + ("on" if opt_on else "off")
        try:
            feeds = _feeds(path, inputs)
            sess = _session(path, opt_on)
            res = sess.run(None, feeds)
        except Exception as e:  # noqa: BLE001  (a model ORT cannot load or run: report, not crash)
            rec["fail"] = f"{label}: {_short_error(e)}"
            print(json.dumps(rec))
            return
        if not opt_on:
            outputs = dict(zip(output_names, res))
        del sess
    if not Path(ref).exists():
        np.savez(ref, **outputs)
    else:
        expected = np.load(ref)
        worst, worst_rel, scale = 0.0, 0.0, 0.0
        names = list(expected.files)
        got = [outputs[n] for n in names] if all(n in outputs for n in names) else list(outputs.values())
        if len(got) != len(names):
            raise ValueError(f"{len(got)} outputs, original has {len(names)}")
        for n, g in zip(names, got):
            d, sc = _max_diff(expected[n], np.asarray(g))
            worst = max(worst, d)
            worst_rel = max(worst_rel, d / max(1.0, sc))
            scale = max(scale, sc)
        rec.update(diff=worst, diff_rel=worst_rel, ref_scale=scale)
    print(json.dumps(rec))


def child_latency(spec: str, runs: int, warmup: int, min_time: float) -> None:
    """Latency of several models (``spec``: JSON ``{"inputs": npz, "models": {label: path}}``),
    with ORT optimizations off, then on. The sessions of one level are timed round-robin (rotating
    the order every round), so load from other processes hits them all alike. A session is timed
    at least ``runs`` times and until each has had about ``min_time`` seconds. Prints
    ``{label: {"lat_off": ms, "lat_on": ms, "n": runs} | {"fail": reason}}``."""
    cfg = json.loads(Path(spec).read_text())
    out: Dict[str, Dict[str, Any]] = {label: {} for label in cfg["models"]}
    for opt_on in (False, True):
        key = "lat_on" if opt_on else "lat_off"
        sessions = {}
        for label, path in cfg["models"].items():
            if "fail" in out[label]:
                continue
            try:
                sess, feeds = _session(path, opt_on), _feeds(path, cfg["inputs"])
                for _ in range(max(1, warmup)):
                    sess.run(None, feeds)
                sessions[label] = (sess, feeds)
            except Exception as e:  # noqa: BLE001
                out[label] = {"fail": f"ORT opt {'on' if opt_on else 'off'}: {_short_error(e)}"}
        times = time_round_robin(sessions, runs=runs, min_time=min_time, max_runs=MAX_RUNS)
        for label, ts in times.items():
            out[label][key] = median(ts) * 1e3
            out[label]["n"] = len(ts)
        del sessions
    print(json.dumps(out))


# ------------------------------------------------------------------------------------------------
# driver side
# ------------------------------------------------------------------------------------------------

def bench_model(name: str, args: argparse.Namespace, workdir: Path) -> Dict[str, Dict[str, Any]]:
    """Optimize ``name`` with every tool, check and time everything; return ``{tool: record}``
    (``"original"`` included) where a failed tool's record is ``{"fail": reason}``."""
    mdir = workdir / name
    mdir.mkdir(parents=True)
    prep = run_child(__file__, ["--prepare", name, "1" if args.small else "0", str(mdir)], args.timeout)
    src = prep["src"]
    inputs, ref = str(mdir / "inputs.npz"), str(mdir / "reference.npz")
    log(f"[{name}] inputs {prep['inputs']}")
    results: Dict[str, Dict[str, Any]] = {}
    paths: Dict[str, str] = {}
    try:
        results["original"] = run_child(__file__, ["--check", src, inputs, ref], args.timeout)
        paths["original"] = src
    except ChildError as e:
        results["original"] = {"fail": str(e)}
        log(f"[{name}] original model FAILED: {e}")
        return results
    for tool in args.tools:
        out_dir = mdir / tool
        out = out_dir / "model.onnx"
        walls: List[float] = []
        try:
            for _ in range(args.repeat):
                shutil.rmtree(out_dir, ignore_errors=True)
                out_dir.mkdir()
                walls.append(run_child(__file__, ["--optimize", tool, src, str(out)], args.timeout)["wall"])
            if not out.exists():
                raise ChildError("wrote no model")
            rec = run_child(__file__, ["--check", str(out), inputs, ref], args.timeout)
            rec["time"] = median(walls)
            if "fail" in rec:
                log(f"[{name}] {tool}: {rec['nodes']} nodes, {rec['time']:.2f}s, FAIL: {rec['fail']}")
            else:
                paths[tool] = str(out)
                log(f"[{name}] {tool}: {rec['nodes']} nodes, {rec['time']:.2f}s, diff {rec['diff']:.2e}")
        except ChildError as e:
            rec = {"fail": str(e)}
            log(f"[{name}] {tool}: FAIL: {rec['fail']}")
        results[tool] = rec
    spec = mdir / "latency.json"
    spec.write_text(json.dumps({"inputs": inputs, "models": paths}))
    try:
        lat = run_child(__file__, ["--latency", str(spec), "--runs", str(args.runs), "--warmup", str(args.warmup),
                         "--min-time", str(args.min_time)], args.timeout)
    except ChildError as e:
        lat = {label: {"fail": f"latency: {e}"} for label in paths}
    for label, r in lat.items():
        if "fail" in r:
            results[label]["fail"] = r["fail"]
        else:
            results[label].update(r)
            log(f"[{name}] {label}: {r['lat_off']:.2f} / {r['lat_on']:.2f} ms ({r['n']} runs)")
    if not args.keep:
        for tool in args.tools:
            shutil.rmtree(mdir / tool, ignore_errors=True)
    return results



def _ms(v: float) -> str:
    return f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def result_rows(all_res: Dict[str, Dict[str, Dict[str, Any]]]) -> Tuple[List[str], List[List[object]]]:
    header = ["model", "tool", "nodes (incl. subgraphs)", "MB", "opt time s (median)", "ORT off ms",
              "ORT on ms", "max abs diff", "notes"]
    rows: List[List[object]] = []
    for model, res in all_res.items():
        for tool, r in res.items():
            failed = "fail" in r
            rows.append([model, tool, r.get("nodes", ""), f"{r['mb']:.2f}" if "mb" in r else "",
                         f"{r['time']:.2f}" if "time" in r else ("" if failed else "-"),
                         _ms(r["lat_off"]) if "lat_off" in r and not failed else "",
                         _ms(r["lat_on"]) if "lat_on" in r and not failed else "",
                         f"{r['diff']:.1e}" if "diff" in r and not failed else ("" if failed else "-"),
                         f"FAIL: {r['fail']}" if failed else ""])
    return header, rows


def goal_rows(all_res: Dict[str, Dict[str, Dict[str, Any]]], tol: float) -> Tuple[List[str], List[List[object]]]:
    """One row per model: each of edgec's goals as ``met`` / ``MISSED`` with the numbers."""
    header = ["model", "nodes <= best other", "ORT off <= others", "ORT on <= others", "ORT on <= original",
              "time <= onnxslim", "outputs match", "no edgec-only failure"]
    rows: List[List[object]] = []
    for model, res in all_res.items():
        e = res.get("edgec")
        ok_others = {t: r for t, r in res.items() if t in OTHERS and "fail" not in r}
        if e is None or "original" not in res or "fail" in res["original"]:
            rows.append([model] + ["n/a"] * (len(header) - 1))
            continue
        if "fail" in e:
            fail = "MISSED (edgec fails; " + (", ".join(ok_others) + " succeed)" if ok_others else "all fail)")
            rows.append([model] + ["MISSED (edgec fails)"] * (len(header) - 2) + [fail if ok_others else "met (all fail)"])
            continue

        def vs_best(key: str, slack: float, fmt) -> str:
            if not ok_others:
                return "n/a (others fail)"
            best_tool = min(ok_others, key=lambda t: ok_others[t][key])
            best = ok_others[best_tool][key]
            ok = e[key] <= best * (1 + slack)
            return f"{'met' if ok else 'MISSED'} ({fmt(e[key])} vs {fmt(best)} {best_tool})"

        row: List[object] = [model, vs_best("nodes", 0.0, str), vs_best("lat_off", tol, _ms), vs_best("lat_on", tol, _ms)]
        orig_on = res["original"]["lat_on"]
        row.append(f"{'met' if e['lat_on'] <= orig_on * (1 + tol) else 'MISSED'} ({_ms(e['lat_on'])} vs {_ms(orig_on)})")
        slim = res.get("onnxslim")
        if slim is None or "fail" in slim:
            row.append("n/a (onnxslim " + ("fails)" if slim else "not run)"))
        else:
            row.append(f"{'met' if e['time'] <= slim['time'] else 'MISSED'} ({e['time']:.2f}s vs {slim['time']:.2f}s)")
        row.append(f"{'met' if e['diff_rel'] <= ATOL else 'MISSED'} ({e['diff']:.1e}, scale {max(1.0, e['ref_scale']):.3g})")
        row.append("met")
        rows.append(row)
    return header, rows


def op_diff_rows(model: str, res: Dict[str, Dict[str, Any]]) -> Tuple[List[str], List[List[object]]]:
    """Op histogram of the original and every tool's output; only ops whose counts differ.
    Rows where edgec keeps more of an op than some other tool are marked with ``<``."""
    cols = [t for t in ("original", *TOOLS) if t in res and "ops" in res[t]]
    hist = {t: res[t]["ops"] for t in cols}
    all_ops = sorted(set().union(*[h.keys() for h in hist.values()])) if hist else []
    rows: List[List[object]] = []
    for op in all_ops:
        counts = [hist[t].get(op, 0) for t in cols]
        if len(set(counts)) <= 1:
            continue
        e = hist["edgec"].get(op, 0) if "edgec" in hist else None
        worse = [t for t in cols if t in OTHERS and e is not None and hist[t].get(op, 0) < e]
        rows.append([op, *counts, ("< " + ", ".join(worse)) if worse else ""])
    rows.sort(key=lambda r: (r[-1] == "", str(r[0])))
    names = [f"{t} (FAIL)" if "fail" in res[t] else t for t in cols]
    return ["op", *names, "edgec keeps more than"], rows


def render(header: Sequence[str], rows: Sequence[Sequence[object]], fmt: str) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    return format_table(header, rows)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated zoo model names (default: %(default)s)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated tools (default: %(default)s)")
    ap.add_argument("--small", action="store_true", help="use the zoo's small test variants instead of full size")
    ap.add_argument("--repeat", type=int, default=3, help="fresh-process optimization runs per tool (median)")
    ap.add_argument("--runs", type=int, default=10, help="timed onnxruntime runs per session (median)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="keep timing past --runs until this many seconds per session (fast models)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed onnxruntime runs before timing")
    ap.add_argument("--latency-tol", type=float, default=0.05,
                    help="relative slack for the latency goals, to absorb timing noise (default 0.05)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before a child process is killed")
    ap.add_argument("--diff-ops", action="store_true", help="print per-model op histograms (ops whose counts differ)")
    fmt = ap.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", dest="fmt", action="store_const", const="markdown", help="markdown tables (default)")
    fmt.add_argument("--csv", dest="fmt", action="store_const", const="csv", help="CSV tables")
    ap.set_defaults(fmt="markdown")
    ap.add_argument("--out", metavar="FILE", help="also write the report to FILE")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (path printed on stderr)")
    ap.add_argument("--prepare", nargs=3, metavar=("NAME", "SMALL", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--optimize", nargs=3, metavar=("TOOL", "SRC", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--check", nargs=3, metavar=("MODEL", "INPUTS", "REF"), help=argparse.SUPPRESS)
    ap.add_argument("--latency", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prepare:
        child_prepare(args.prepare[0], args.prepare[1] == "1", args.prepare[2])
        return 0
    if args.optimize:
        child_optimize(*args.optimize)
        return 0
    if args.check:
        child_check(*args.check)
        return 0
    if args.latency:
        child_latency(args.latency, runs=args.runs, warmup=args.warmup, min_time=args.min_time)
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown:
        ap.error(f"unknown tools {unknown}; known: {', '.join(TOOLS)}")
    workdir = Path(tempfile.mkdtemp(prefix="edgec-bench-opt-"))
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    all_res: Dict[str, Dict[str, Dict[str, Any]]] = {}
    try:
        for name in models:
            t0 = time.perf_counter()
            try:
                all_res[name] = bench_model(name, args, workdir)
            except ChildError as e:  # the model itself could not be prepared
                all_res[name] = {"original": {"fail": f"prepare: {e}"}}
                log(f"[{name}] FAILED to prepare: {e}")
            log(f"[{name}] done in {time.perf_counter() - t0:.0f}s")
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - t_start
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    size = "small (zoo TEST_PARAMS)" if args.small else "full size"
    parts = []
    title = (f"edgec -O2 vs {', '.join(t for t in args.tools if t != 'edgec')}: {size}, batch 1, "
             f"ORT 1 thread, latency median of >= {args.runs} runs (>= {args.min_time:g} s) after {args.warmup} warm-up, "
             f"opt time median of {args.repeat} fresh-process runs (load + optimize + save)")
    md = args.fmt == "markdown"
    parts.append(("## " if md else "# ") + title)
    parts.append(render(*result_rows(all_res), args.fmt))
    parts.append(("## " if md else "# ") + f"edgec goals (latency slack {args.latency_tol:.0%}; "
                 f"outputs match: max abs diff <= {ATOL:g} * max(1, max |original output|))")
    parts.append(render(*goal_rows(all_res, args.latency_tol), args.fmt))
    if args.diff_ops:
        for model, res in all_res.items():
            if "edgec" not in res:
                continue
            parts.append(("### " if md else "# ") + f"op histogram: {model} (ops whose counts differ)")
            header, rows = op_diff_rows(model, res)
            parts.append(render(header, rows, args.fmt) if rows else "(identical op histograms)")
    parts.append(("" if md else "# ") + f"total wall time: {total / 60:.1f} min on {os.cpu_count()} cores; "
                 f"1-min load average {load_start:.2f} at start, {load_end:.2f} at end "
                 "(latencies are only comparable on an otherwise idle machine)")
    report = "\n\n".join(parts)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
