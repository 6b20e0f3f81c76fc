"""Benchmark pruning: ``edgec compile --prune`` (unstructured, 2:4, channels), with and without
reconstruction, on three models of the test zoo (``tests/zoo``):

- ``digits_cnn``: the small CNN trained on scikit-learn's digits; the metric is top-1 accuracy on
  the 597-image test split (drop vs the dense model in points); calibration: the 200-image split;
- ``mobilenetv2`` and ``resnet18``: the zoo's architectures at a reduced size (see ``ZOO_PARAMS``)
  with seeded random weights (the zoo has no pretrained weights): the metric is top-1
  *agreement* with the dense model (the teacher) and the mean cosine of the logits, on held-out
  random N(0, 1) inputs (calibration: other random inputs of the same distribution). Random
  networks may give most inputs the same top class (the table says how many distinct classes the
  dense model predicts): then agreement says little and the cosine is the measure.

Rows per model: dense; unstructured 50% (magnitude, magnitude + reconstruction, Wanda, Wanda +
reconstruction); 2:4 (magnitude, + reconstruction); channel pruning with at least ``--macs``
fewer MACs (greedy allocation, channel counts multiples of ``--round-to``; plain, + refit of the
next layers). Every pruned model is made by the real CLI in a child process::

    edgec compile M.onnx --prune 0.5 [--prune-mode 2:4|channel] [--prune-score wanda]
        [--prune-reconstruct] --calibration cal.npz --prune-report r.json -o out.onnx

Columns: metric and drop, parameters, nonzero parameters, MACs (dense count, batch 1), MACs of
nonzero weights (what a sparse kernel could skip), file bytes (dense storage), bytes of the
weights in a packed sparse format (2:4: values + 2-bit indices; unstructured: values + bitmap;
from the prune report), and onnxruntime latency (CPU, 1 thread, ``ORT_ENABLE_ALL``, median; all
models of one benchmark model timed round-robin in one process) with its ratio to dense.

    python benchmarks/bench_prune.py
    python benchmarks/bench_prune.py --models digits_cnn --runs 50
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import (ChildError, bench_each, error_line, format_table, log, median, ort_session, pick,  # noqa: E402
                   run_child, session_feeds, time_round_robin, use_zoo)

MODELS = ("digits_cnn", "mobilenetv2", "resnet18")

#: Reduced sizes of the zoo models (full size would take too long to reconstruct and time here).
ZOO_PARAMS: Dict[str, Dict[str, Any]] = {
    "mobilenetv2": dict(width=0.5, depth=0.5, image_size=32, num_classes=100),
    "resnet18": dict(width=16, image_size=32, num_classes=100),
}

#: method -> (label, CLI flags after ``--prune S``)
METHODS: Dict[str, Tuple[str, List[str]]] = {
    "dense": ("dense", []),
    "u50-mag": ("unstructured 50%, magnitude", ["--prune", "0.5"]),
    "u50-mag-rec": ("unstructured 50%, magnitude + reconstruct", ["--prune", "0.5", "--prune-reconstruct"]),
    "u50-wanda": ("unstructured 50%, wanda", ["--prune", "0.5", "--prune-score", "wanda"]),
    "u50-wanda-rec": ("unstructured 50%, wanda + reconstruct",
                      ["--prune", "0.5", "--prune-score", "wanda", "--prune-reconstruct"]),
    "2:4-mag": ("2:4, magnitude", ["--prune", "0.5", "--prune-mode", "2:4"]),
    "2:4-mag-rec": ("2:4, magnitude + reconstruct", ["--prune", "0.5", "--prune-mode", "2:4", "--prune-reconstruct"]),
    "ch-mag": ("channels, >= {macs:.0%} fewer MACs", ["--prune-mode", "channel", "--prune-target", "macs"]),
    "ch-mag-rec": ("channels, >= {macs:.0%} fewer MACs + refit",
                   ["--prune-mode", "channel", "--prune-target", "macs", "--prune-reconstruct"]),
}

#: (plain, reconstructed) pairs: reconstruction should beat plain magnitude at the same sparsity.
PAIRS = (("u50-mag", "u50-mag-rec"), ("u50-wanda", "u50-wanda-rec"), ("2:4-mag", "2:4-mag-rec"),
         ("ch-mag", "ch-mag-rec"))

CAL_SAMPLES = 64      # zoo models: random calibration inputs
EVAL_SAMPLES = 256    # zoo models: held-out random inputs
LATENCY_BATCH = {"digits_cnn": 64, "mobilenetv2": 8, "resnet18": 8}
MAX_RUNS = 5000
MAX_DROP = 1.0        # digits goals: top-1 points


# ------------------------------------------------------------------------------------------------
# edgec invocation
# ------------------------------------------------------------------------------------------------

def edgec_executable() -> List[str]:
    """The ``edgec`` console script of this interpreter's environment."""
    exe = Path(sys.executable).parent / ("edgec.exe" if os.name == "nt" else "edgec")
    return [str(exe)] if exe.exists() else [shutil.which("edgec") or "edgec"]


def edgec_command(method: str, src: str, cal: str, out: str, report: str, args: argparse.Namespace) -> List[str]:
    """The command line pruning ``src`` into ``out`` with ``method`` (see :data:`METHODS`)."""
    flags = list(METHODS[method][1])
    if method.startswith("ch-"):
        flags = ["--prune", f"{args.macs:g}", *flags, "--prune-round-to", str(args.round_to)]
    return [*edgec_executable(), "compile", src, *flags, "--calibration", cal, "--prune-report", report, "-o", out]


# ------------------------------------------------------------------------------------------------
# child side
# ------------------------------------------------------------------------------------------------

def child_prepare(name: str, workdir: str) -> None:
    """Write ``dense/model.onnx`` (edgec -O2 of the zoo model, the reference every row is compared
    with), ``cal.npz``, ``eval.npz`` and ``latency.npz`` under ``workdir``."""
    import numpy as np

    use_zoo()
    import zoo

    d = Path(workdir)
    raw = d / "raw.onnx"
    if name == "digits_cnn":
        from zoo.digits import digits_data, write_digits_npz

        shutil.copyfile(zoo.get_path(name), raw)
        write_digits_npz(d / "cal.npz", "calibration")
        write_digits_npz(d / "eval.npz", "test")
        x, _ = digits_data("test")
        np.savez(d / "latency.npz", input=x[:LATENCY_BATCH[name]])
        info = {"cal": 200, "eval": len(x), "data": "digits test split"}
    else:
        shutil.copyfile(zoo.get_path(name, **ZOO_PARAMS[name]), raw)
        cal = zoo.make_inputs(str(raw), seed=1, dims={"batch": CAL_SAMPLES})
        ev = zoo.make_inputs(str(raw), seed=2, dims={"batch": EVAL_SAMPLES})
        np.savez(d / "cal.npz", **cal)
        np.savez(d / "eval.npz", **ev)
        np.savez(d / "latency.npz", **{k: v[:LATENCY_BATCH[name]] for k, v in ev.items()})
        info = {"cal": CAL_SAMPLES, "eval": EVAL_SAMPLES, "data": "random N(0,1) inputs",
                "params": ZOO_PARAMS[name]}
    dense = d / "dense" / "model.onnx"
    dense.parent.mkdir()
    proc = subprocess.run([*edgec_executable(), "compile", str(raw), "-o", str(dense)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(error_line(proc.stderr))
    print(json.dumps({"src": str(raw), "dense": str(dense), **info}))


def child_evaluate(name: str, path: str, workdir: str) -> None:
    """Metric of ``path`` on ``eval.npz``: top-1 vs labels (digits) or agreement and cosine with
    the dense model (zoo models; the dense run writes ``reference.npz``)."""
    import numpy as np

    sess = ort_session(path, threads=0)
    data = np.load(Path(workdir) / "eval.npz")
    out = sess.run(None, session_feeds(sess, data))[0].astype(np.float64)
    if name == "digits_cnn":
        print(json.dumps({"metric": 100 * float((out.argmax(1) == data["labels"]).mean())}))
        return
    ref_path = Path(workdir) / "reference.npz"
    if not ref_path.exists():
        np.savez(ref_path, out=out)
    ref = np.load(ref_path)["out"]
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1) + 1e-30)
    print(json.dumps({"metric": 100 * float((out.argmax(1) == ref.argmax(1)).mean()), "cos": float(cos.mean()),
                      "classes": int(len(np.unique(ref.argmax(1))))}))


def child_latency(spec: str, runs: int, warmup: int, min_time: float) -> None:
    """Latency of the models of ``spec`` (JSON ``{"inputs": npz, "models": {label: path}}``),
    round-robin on 1 thread; prints ``{label: {"ms": median} | {"fail": reason}}``."""
    import numpy as np

    cfg = json.loads(Path(spec).read_text())
    data = np.load(cfg["inputs"])
    out: Dict[str, Dict[str, Any]] = {}
    sessions = {}
    for label, path in cfg["models"].items():
        try:
            sess = ort_session(path)
            feeds = session_feeds(sess, data)
            for _ in range(max(1, warmup)):
                sess.run(None, feeds)
            sessions[label] = (sess, feeds)
        except Exception as e:  # noqa: BLE001 - report, don't crash
            out[label] = {"fail": " ".join(str(e).split())[:160]}
    times = time_round_robin(sessions, runs=runs, min_time=min_time, max_runs=MAX_RUNS)
    for label, ts in times.items():
        out[label] = {"ms": median(ts) * 1e3, "n": len(ts)}
    print(json.dumps(out))


# ------------------------------------------------------------------------------------------------
# driver side
# ------------------------------------------------------------------------------------------------

def _short(msg: str, limit: int = 110) -> str:
    msg = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", " ".join(msg.split()))
    msg = re.sub(r"\S*edgec-bench-prune-\w+/", "", msg)
    return msg[:limit]


def _numbers(report: Dict[str, Any]) -> Dict[str, Any]:
    """Params, nonzeros, MACs and byte counts of the pruned model, from the prune report."""
    a = report["model"]["after"]
    t = (report.get("pruning") or {}).get("totals") or {}
    packed = a["param_bytes"] - t.get("dense_bytes", 0) + t.get("packed_bytes", 0)
    return {"params": a["params"], "nonzeros": a["nonzeros"], "macs": a["macs"],
            "macs_nonzero": a.get("macs_nonzero", a["macs"]), "bytes": a.get("file_bytes"), "packed": packed}


def prune(method: str, src: str, cal: str, mdir: Path, args: argparse.Namespace) -> Dict[str, Any]:
    out, rep = mdir / method / "model.onnx", mdir / method / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(edgec_command(method, src, cal, str(out), str(rep), args), capture_output=True,
                              text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"fail": f"timed out after {args.timeout:.0f}s"}
    if proc.returncode != 0:
        return {"fail": _short(error_line(proc.stderr, 400))}
    res = {"time": time.perf_counter() - t0, "path": str(out)}
    res.update(_numbers(json.loads(rep.read_text())))
    return res


def dense_numbers(path: str) -> Dict[str, Any]:
    """Params / nonzeros / MACs of the dense model, from a 0%-pruning report (same counting)."""
    with tempfile.TemporaryDirectory() as d:
        rep, out = Path(d) / "r.json", Path(d) / "m.onnx"
        proc = subprocess.run([*edgec_executable(), "compile", path, "-O0", "--prune", "0", "--prune-report", str(rep),
                               "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ChildError(error_line(proc.stderr))
        b = json.loads(rep.read_text())["model"]["before"]
    return {"params": b["params"], "nonzeros": b["nonzeros"], "macs": b["macs"], "macs_nonzero": b["macs"],
            "bytes": Path(path).stat().st_size, "packed": b["param_bytes"]}


def bench_model(name: str, methods: Sequence[str], args: argparse.Namespace, workdir: Path) -> Dict[str, Dict[str, Any]]:
    mdir = workdir / name
    mdir.mkdir(parents=True)
    t0 = time.perf_counter()
    prep = run_child(__file__, ["--prepare", name, str(mdir)], args.timeout, _short)
    log(f"[{name}] prepared in {time.perf_counter() - t0:.1f}s")
    src, dense, cal = prep["src"], prep["dense"], str(mdir / "cal.npz")
    res: Dict[str, Dict[str, Any]] = {"dense": {"path": dense, **dense_numbers(dense)}}
    res["dense"].update(run_child(__file__, ["--evaluate", name, dense, str(mdir)], args.timeout, _short))
    for method in methods:
        if method == "dense":
            continue
        rec = prune(method, src, cal, mdir, args)
        if "path" in rec:
            try:
                rec.update(run_child(__file__, ["--evaluate", name, rec["path"], str(mdir)], args.timeout, _short))
            except ChildError as e:
                rec["fail"] = f"ORT: {e}"
        res[method] = rec
        log(f"[{name}] {method}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in rec.items() if k != "path"))
    paths = {m: r["path"] for m, r in res.items() if "path" in r and "fail" not in r}
    spec = mdir / "latency.json"
    spec.write_text(json.dumps({"inputs": str(mdir / "latency.npz"), "models": paths}))
    try:
        lat = run_child(__file__, ["--latency", str(spec), "--runs", str(args.runs), "--warmup", str(args.warmup),
                                   "--min-time", str(args.min_time)], args.timeout, _short)
    except ChildError as e:
        lat = {m: {"fail": f"latency: {e}"} for m in paths}
    for m, r in lat.items():
        res[m].update({"ms": r["ms"]} if "ms" in r else {"fail": r["fail"]})
    res["_info"] = prep
    return res


def _k(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return ""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def _label(method: str, args: argparse.Namespace) -> str:
    return METHODS[method][0].format(macs=args.macs)


def result_rows(name: str, res: Dict[str, Dict[str, Any]], args: argparse.Namespace) -> Tuple[List[str], List[List[object]]]:
    digits = name == "digits_cnn"
    header = ["method", "top-1 %" if digits else "top-1 agree %", "drop pts", *([] if digits else ["cosine"]),
              "params", "nonzeros", "MACs", "MACs nonzero", "file bytes", "packed bytes", "ORT ms", "vs dense", "notes"]
    d = res["dense"]
    rows: List[List[object]] = []
    for method, r in res.items():
        if method.startswith("_"):
            continue
        ok = "metric" in r
        row: List[object] = [_label(method, args), f"{r['metric']:.2f}" if ok else "",
                             f"{d['metric'] - r['metric']:+.2f}" if ok and method != "dense" else "-"]
        if not digits:
            row.append(f"{r['cos']:.4f}" if "cos" in r else "")
        row += [_k(r.get("params")), _k(r.get("nonzeros")), _k(r.get("macs")), _k(r.get("macs_nonzero")),
                _k(r.get("bytes")), _k(r.get("packed")), f"{r['ms']:.3f}" if "ms" in r else "",
                f"{r['ms'] / d['ms']:.2f}x" if "ms" in r and "ms" in d else "",
                f"FAIL: {r['fail']}" if "fail" in r else ""]
        rows.append(row)
    return header, rows


def pair_rows(all_res: Dict[str, Dict[str, Dict[str, Any]]], args: argparse.Namespace) -> Tuple[List[str], List[List[object]]]:
    header = ["model", "sparsity / mode", "metric", "plain", "reconstructed", "gain", "reconstruction better"]
    rows: List[List[object]] = []
    for name, res in all_res.items():
        key, what, fmt = ("metric", "top-1 %", "{:.2f}") if name == "digits_cnn" else ("cos", "cosine", "{:.4f}")
        for plain, rec in PAIRS:
            a, b = res.get(plain, {}).get(key), res.get(rec, {}).get(key)
            if a is None or b is None:
                continue
            rows.append([name, _label(plain, args), what, fmt.format(a), fmt.format(b), ("{:+" + fmt[2:]).format(b - a),
                         "yes" if b > a else ("tie" if b == a else "NO")])
    return header, rows


def goal_rows(all_res: Dict[str, Dict[str, Dict[str, Any]]], args: argparse.Namespace) -> Tuple[List[str], List[List[object]]]:
    header = ["goal (digits_cnn)", "measured", "status"]
    res = all_res.get("digits_cnn")
    if not res:
        return header, []
    d = res["dense"]
    rows: List[List[object]] = []

    def drop(m: str) -> Optional[float]:
        return d["metric"] - res[m]["metric"] if "metric" in res.get(m, {}) else None

    ch = res.get("ch-mag-rec", {})
    if "macs" in ch:
        cut = 1 - ch["macs"] / d["macs"]
        rows.append([f"channels: >= {args.macs:.0%} fewer MACs", f"{cut:.1%}", "met" if cut >= args.macs - 1e-9 else "MISSED"])
    for m, what in (("ch-mag-rec", "channels + refit"), ("u50-mag-rec", "unstructured 50% + reconstruct"),
                    ("u50-wanda-rec", "unstructured 50% wanda + reconstruct"), ("2:4-mag-rec", "2:4 + reconstruct")):
        x = drop(m)
        if x is not None:
            rows.append([f"{what}: top-1 drop <= {MAX_DROP:g} pt", f"{x:.2f}", "met" if x <= MAX_DROP + 1e-9 else "MISSED"])
    if "ms" in ch and "ms" in d:
        rows.append(["channels + refit: ORT latency below dense", f"{ch['ms']:.3f} vs {d['ms']:.3f} ms",
                     "met" if ch["ms"] < d["ms"] else "MISSED"])
    return header, rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all): %(default)s")
    ap.add_argument("--macs", type=float, default=0.4, help="channel rows: fraction of MACs removed (at least)")
    ap.add_argument("--round-to", type=int, default=8,
                    help="channel rows: kept channel counts are multiples of this (onnxruntime's blocked conv "
                         "kernels want multiples of 8 on AVX2)")
    ap.add_argument("--runs", type=int, default=20, help="timed onnxruntime runs per model (median)")
    ap.add_argument("--min-time", type=float, default=1.0, help="keep timing until this many seconds per model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed onnxruntime runs before timing")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before a child process is killed")
    ap.add_argument("--out", metavar="FILE", help="also write the report to FILE")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (path printed on stderr)")
    ap.add_argument("--prepare", nargs=2, metavar=("NAME", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--evaluate", nargs=3, metavar=("NAME", "MODEL", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--latency", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prepare:
        child_prepare(*args.prepare)
        return 0
    if args.evaluate:
        child_evaluate(*args.evaluate)
        return 0
    if args.latency:
        child_latency(args.latency, runs=args.runs, warmup=args.warmup, min_time=args.min_time)
        return 0

    try:
        models, methods = pick(args.models, list(MODELS), "models"), pick(args.methods, list(METHODS), "methods")
    except ValueError as e:
        ap.error(str(e))
    t_start = time.perf_counter()
    all_res = bench_each(models, lambda name, workdir: bench_model(name, methods, args, workdir), prefix="edgec-bench-prune-",
                         keep=args.keep)
    parts = [f"## edgec compile --prune: every row made by the CLI from the same model and calibration .npz; "
             f"latency = ORT CPU 1 thread, ORT_ENABLE_ALL, median of >= {args.runs} runs (>= {args.min_time:g} s), "
             f"round-robin; MACs per sample (dense count); packed bytes = weights with pruned layers in a packed "
             f"sparse format (2:4: values + 2-bit indices, unstructured: values + bitmap); channel rows: greedy "
             f"allocation, --prune-round-to {args.round_to}"]
    for name, res in all_res.items():
        info = res.pop("_info", {})
        if name == "digits_cnn":
            desc = (f"### digits_cnn (trained): top-1 on the {info.get('eval')}-image test split, calibration "
                    f"{info.get('cal')} images, latency batch {LATENCY_BATCH[name]}")
        else:
            classes = res.get("dense", {}).get("classes")
            desc = (f"### {name} {info.get('params')} (REDUCED size, seeded random weights, no pretrained weights): "
                    f"top-1 agreement with the dense teacher and logits cosine on {info.get('eval')} held-out random "
                    f"inputs (the dense model predicts {classes} distinct class(es) on them), calibration "
                    f"{info.get('cal')} other random inputs, latency batch {LATENCY_BATCH[name]}")
        parts.append(desc)
        parts.append(format_table(*result_rows(name, res, args)))
    parts.append("## reconstruction vs plain scores at the same sparsity (digits: top-1; zoo models: cosine to "
                 "the dense logits, as their agreement is uninformative when the dense model predicts one class)")
    parts.append(format_table(*pair_rows(all_res, args)))
    parts.append("## goals")
    parts.append(format_table(*goal_rows(all_res, args)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts.append(f"total wall time: {(time.perf_counter() - t_start) / 60:.1f} min on {os.cpu_count()} cores; "
                 f"1-min load average at end {load:.2f}")
    report = "\n\n".join(parts)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
