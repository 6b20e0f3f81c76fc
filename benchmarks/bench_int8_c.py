"""Benchmark the int8 C target against the integer reference, the float model and the fp32 C build.

For each model (batch 1):

1. the float model is optimized for the C target (``-O2``) and emitted as fp32 C;
2. the same model is quantized as ``edgec compile --quantize int8 --target c`` does (quantize pass,
   int8 activations, minmax calibration), turned into the integer IR and emitted as int8 C (every
   integer layer on the inline CPU kernels, the default without a target description);
3. both are compiled with ``cc -O3 -march=native -std=c99`` and timed by a harness that runs
   ``model_run`` in a loop on one thread (``--reps`` runs per round but at least 50 ms of runs, each round
   timed as the fastest of 20 blocks of runs; ``--rounds`` rounds taking turns, best round kept);
4. the int8 C outputs are compared with ``edgec.quant.reference.run_integer`` on ``--samples`` inputs
   (digits: the whole test split): int8 tensors and float outputs of integer regions must be equal;
   float outputs of float regions (the final Gemm, which the quantize pass leaves float, and average
   pools with their own output scale, which the reference runs in float) within 1e-4;
5. each integer layer is run alone in onnxruntime on the reference's int8 inputs (LSB histogram).

Models: the trained digits CNN (``tests/zoo/digits.py``, 1x1x8x8); a MobileNetV2 (``tests/zoo``
``mobilenetv2``, reduced: width 0.35, 96x96 input (``--image-size``), 10 classes, random weights, synthetic
calibration: ``mobilenetv2``); the same MobileNetV2 trained on the digits at 32x32 (``digits_mobilenetv2``:
``mobilenetv2-digits``, the MobileNet whose accuracy can be measured; about a minute of training on first use).

Columns: ``exact`` samples bit-exact with the reference / samples; ``top-1 float/int8`` (trained models,
digits test split); ``fp32 ms`` / ``int8 ms`` / ``int8/fp32``: latency (goal <= 0.5); ``weights`` bytes of the
weight arrays (fp32 / int8 builds); ``code`` ``.text`` bytes of the model object (+ HAL object for
int8); ``arena`` / ``LB`` activation arena and its lower bound (int8 build); ``ORT LSB`` per-layer
histogram of int8 C minus onnxruntime.

With ``--per-layer`` it also prints where the time goes: the generated C is rebuilt with a timer around
every layer call (``CLOCK_MONOTONIC``: a library call, not a system call like the thread CPU clock; ``model_run``
repeated ``--reps`` times on sample 0, best of ``--rounds``), one table per build (fp32 / int8) with each
layer's op, output shape, MACs, microseconds per run and share of the total. ``--generic`` builds the
int8 C with the generic kernels only (without ``kernels_int8_fast``), the baseline of the fast ones.

    python benchmarks/bench_int8_c.py [--models digits,mobilenetv2,mobilenetv2-digits] [--samples 8] [--reps 200]
                                      [--rounds 5] [--image-size 96]
                                      [--per-layer] [--generic]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Dict, Iterator, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import format_table, log, use_zoo  # noqa: E402

OPT = ["-O3", "-march=native"]


def _quantize(model: Any, cal_path: str) -> Any:
    from edgec.passmanager import PassContext, PassManager, PassManagerOptions
    from edgec.quant.data import load_calibration

    ctx = PassContext(resources={"calibration": load_calibration(cal_path, model),
                                 "target": {"name": "c", "contrib_ops": False}})
    PassManager.with_options("quantize{activations=int8},repeat{max-iters=4}(cse,dce)", PassManagerOptions(),
                             ctx=ctx).run(model)
    return model


def _text_bytes(obj: str) -> int:
    out = subprocess.run(["size", "-A", obj], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == ".text":
            return int(parts[1])
    return 0


def _code_bytes(out_dir: str, name: str = "model") -> int:
    total = 0
    for src in (f"{name}.c", f"{name}_npu_ref.c"):
        path = os.path.join(out_dir, src)
        if not os.path.exists(path):
            continue
        obj = path[:-2] + ".o"
        flags = ["-DEDGEC_NPU_EXTERNAL"] if src == f"{name}.c" else []
        subprocess.run([os.environ.get("CC", "cc"), *OPT, "-std=c99", *flags, "-c", path, "-o", obj], check=True)
        total += _text_bytes(obj)
    return total


#: Appended to an instrumented copy of ``<name>.c``: the per-layer nanosecond counters and their dump.
_PROFILE_TAIL = """
#include <stdio.h>
static void edgec_prof_dump(void) __attribute__((destructor));
static void edgec_prof_dump(void)
{
    const char* path = getenv("EDGEC_PROFILE_OUT");
    FILE* f = path ? fopen(path, "w") : NULL;
    if (!f) return;
    for (int i = 0; i < EDGEC_PROF_LAYERS; ++i) fprintf(f, "%d %.0f\\n", i, edgec_prof_ns[i]);
    fclose(f);
}
"""


def _instrument(c_text: str, name: str) -> str:
    """``<name>.c`` with a CLOCK_MONOTONIC timer around each layer call of the run function."""
    calls = re.compile(rf"^    ({name}_l(\d+)_\w+\(.*\);)$", re.M)
    n = 1 + max((int(m.group(2)) for m in calls.finditer(c_text)), default=0)
    head = ("#define _POSIX_C_SOURCE 199309L\n#include <stdlib.h>\n#include <time.h>\n"
            f"#define EDGEC_PROF_LAYERS {n}\nstatic double edgec_prof_ns[EDGEC_PROF_LAYERS];\n"
            "static double edgec_prof_now(void)\n{\n    struct timespec t;\n"
            "    clock_gettime(CLOCK_MONOTONIC, &t);\n"
            "    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;\n}\n")
    body = calls.sub(lambda m: (f"    {{ const double t0_ = edgec_prof_now(); {m.group(1)} "
                                f"edgec_prof_ns[{m.group(2)}] += edgec_prof_now() - t0_; }}"), c_text)
    return head + body + _PROFILE_TAIL


def profile_layers(out_dir: str, report: Dict[str, Any], sample: Dict[str, np.ndarray], reps: int,
                   rounds: int = 5) -> List[List[Any]]:
    """Per-layer time of the C model in ``out_dir``: rows ``[index, op, shape, MACs, us/run, %]``, slowest first;
    each layer's time is its best of ``rounds`` runs of the program (the machine may be shared)."""
    from edgec.backends.c.integerize import build_batch, run_batch

    name = report["name"]
    pdir = tempfile.mkdtemp(prefix="edgec-profile-")
    for f in os.listdir(out_dir):
        if f.startswith(name) and f.endswith((".c", ".h")) and not f.endswith("_batch.c"):
            with open(os.path.join(out_dir, f), encoding="utf-8") as src:
                text = src.read()
            with open(os.path.join(pdir, f), "w", encoding="utf-8") as dst:
                dst.write(_instrument(text, name) if f == f"{name}.c" else text)
    prog = build_batch(pdir, report, opt=OPT[0], extra_flags=OPT[1:])
    out = os.path.join(pdir, "profile.txt")
    ns: Dict[int, float] = {}
    os.environ["EDGEC_PROFILE_OUT"] = out
    try:
        for _ in range(rounds):
            run_batch(prog, report, [sample], reps=reps)
            with open(out, encoding="utf-8") as f:
                for a, b in (line.split() for line in f):
                    ns[int(a)] = min(ns.get(int(a), float("inf")), float(b) / (reps + 1))
    finally:
        del os.environ["EDGEC_PROFILE_OUT"]
    total = sum(ns.values()) or 1.0
    rows = []
    for L in report["layers"]:
        if L["index"] in ns:
            op = L.get("source_op", L["op"])
            kind = f"{op}" + (f" ({L['op'].split('.')[-1]})" if L.get("source_op") else "")
            rows.append([L["index"], kind, "x".join(str(d) for d in L["output_shape"]), L["macs"],
                         ns[L["index"]] / 1e3, 100 * ns[L["index"]] / total])
    rows.sort(key=lambda r: -r[4])
    return rows


def _print_profile(title: str, rows: List[List[Any]]) -> None:
    total = sum(r[4] for r in rows)
    print(f"\n{title}: {total:.1f} us per run in {len(rows)} layers")
    print(format_table(["layer", "op", "output", "MACs", "us", "%"], rows))


@contextlib.contextmanager
def _generic_kernels(on: bool) -> Iterator[None]:
    """With ``on``, the int8 C uses only the generic CPU kernels (no ``kernels_int8_fast``: the before/after
    comparison of the register-blocked GEMM, vectorized depthwise and Add)."""
    from edgec.backends.c import kernels_int8_fast as fast

    saved = fast.fast_conv, fast.fast_add
    if on:
        fast.fast_conv, fast.fast_add = (lambda node, k, f: None), (lambda code: code)
    try:
        yield
    finally:
        fast.fast_conv, fast.fast_add = saved


def bench(label: str, proto: Any, cal: Dict[str, np.ndarray], samples: List[Dict[str, np.ndarray]],
          shape: str, args: argparse.Namespace, labels: Any = None, float_logits: Any = None) -> Dict[str, Any]:
    from edgec.api import optimize
    from edgec.backends.c import generate_c, pin_shapes, write_c
    from edgec.backends.c.integerize import build_batch, check_int8, compile_int8, ort_lsb_per_layer, run_batch
    from edgec.frontend.onnx_import import from_proto
    from edgec.ir.parser import parse_model
    from edgec.ir.printer import print_model

    work = tempfile.mkdtemp(prefix=f"edgec-int8-{label}-")
    cal_path = os.path.join(work, "cal.npz")
    np.savez(cal_path, **cal)
    row: Dict[str, Any] = {"model": label}
    # fp32 C
    fm = from_proto(proto)
    pin_shapes(fm, [shape])
    optimize(fm, opt_level=2, target="c")
    qm = parse_model(print_model(fm, elide_limit=None))
    fcode = generate_c(fm, "model")
    fdir = os.path.join(work, "fp32")
    write_c(fcode, fdir)
    fprog = build_batch(fdir, fcode.report, opt=" ".join(OPT[:1]), extra_flags=OPT[1:])
    # int8 C
    _quantize(qm, cal_path)
    qdq = parse_model(print_model(qm, elide_limit=None))
    with _generic_kernels(args.generic):
        qcode, res = compile_int8(qm, "model")
    qdir = os.path.join(work, "int8")
    write_c(qcode, qdir)
    qprog = build_batch(qdir, qcode.report, opt=OPT[0], extra_flags=OPT[1:])
    log(f"{label}: {res.summary()}")
    # exactness against the reference
    chk = check_int8(qprog, qcode, qdq, samples, rounding="double", io=res.io, float_atol=1e-4)
    row["exact"] = f"{chk.exact}/{chk.samples}"
    row["int LSB"] = str(dict(sorted(chk.histogram.items())))
    row["float diff"] = f"{chk.max_float_diff:.1e}" if chk.float_outputs else "-"
    if labels is not None:
        outs, _ = run_batch(qprog, qcode.report, samples)
        logits = np.concatenate([o[0] for o in outs])
        row["top-1 float/int8"] = (f"{100 * float((float_logits.argmax(1) == labels).mean()):.2f} / "
                                   f"{100 * float((logits.argmax(1) == labels).mean()):.2f}")
    # latency: alternate, best round; at least 50 ms per round (a 10 us model needs thousands of runs)
    _, probe = run_batch(fprog, fcode.report, samples[:1], reps=20)
    reps = max(args.reps, int(50e6 / max(probe, 1.0)))
    best = {"fp32": float("inf"), "int8": float("inf")}
    for _ in range(args.rounds):
        for key, prog, code in (("fp32", fprog, fcode), ("int8", qprog, qcode)):
            _, ns = run_batch(prog, code.report, samples[:1], reps=reps)
            best[key] = min(best[key], ns / 1e6)
    row["fp32 ms"], row["int8 ms"] = best["fp32"], best["int8"]
    row["int8/fp32"] = best["int8"] / best["fp32"]
    row["weights fp32/int8"] = f"{fcode.report['weights']['bytes']} / {qcode.report['weights']['bytes']}"
    # the flash-friendly form (int8_kernels="compact", the default with a target description): int8 weights
    compact, _ = compile_int8(parse_model(print_model(qdq, elide_limit=None)), "model", int8_kernels="compact")
    row["int8 weights compact"] = compact.report["weights"]["bytes"]
    row["code fp32/int8"] = f"{_code_bytes(fdir)} / {_code_bytes(qdir)}"
    m = qcode.report["memory"]
    row["arena/LB (int8)"] = f"{m['arena_bytes']} / {m['lower_bound_bytes']}"
    row["arena fp32"] = fcode.report["memory"]["arena_bytes"]
    hist: Dict[int, int] = {}
    for feeds in samples[:2]:
        for h in ort_lsb_per_layer(qdq, feeds).values():
            for k, c in h.items():
                hist[k] = hist.get(k, 0) + c
    tot = sum(hist.values()) or 1
    row["ORT LSB/layer"] = f"{dict(sorted(hist.items()))} ({100 * hist.get(0, 0) / tot:.1f}% exact)"
    if args.per_layer:
        _print_profile(f"{label} fp32 C", profile_layers(fdir, fcode.report, samples[0], args.reps, args.rounds))
        _print_profile(f"{label} int8 C", profile_layers(qdir, qcode.report, samples[0], args.reps, args.rounds))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digits,mobilenetv2,mobilenetv2-digits")
    ap.add_argument("--samples", type=int, default=8, help="samples compared with the reference (mobilenetv2)")
    ap.add_argument("--reps", type=int, default=200, help="runs per timing round (at least 50 ms of runs)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=96, help="input size of the MobileNetV2 (224: the full one)")
    ap.add_argument("--per-layer", action="store_true", help="also time every layer (instrumented builds)")
    ap.add_argument("--generic", action="store_true",
                    help="int8 C with the generic kernels only (the baseline of the fast CPU kernels)")
    args = ap.parse_args()
    use_zoo()
    import onnx
    import onnx.version_converter
    from onnx import TensorProto as T
    from onnx import helper as h

    rows = []
    for name in args.models.split(","):
        log(f"--- {name}")
        if name == "digits":
            import onnxruntime as ort
            from zoo.digits import digits_cnn, digits_data

            proto = onnx.version_converter.convert_version(digits_cnn(), 21)  # the reference's float DQ needs >= 19
            flat = next(n for n in proto.graph.node if n.op_type == "Flatten")
            proto.graph.output.append(h.make_tensor_value_info(flat.output[0], T.FLOAT, None))  # int8 features
            xc, _ = digits_data("calibration")
            x, y = digits_data("test")
            sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            fl = sess.run(None, {"input": x})[0]
            samples = [{"input": x[i:i + 1]} for i in range(len(x))]
            rows.append(bench("digits CNN", proto, {"input": xc}, samples, "input=1x1x8x8", args, y, fl))
        elif name == "mobilenetv2":
            from zoo import get

            size = args.image_size
            proto = get("mobilenetv2", width=0.35, depth=1.0, image_size=size, num_classes=10)
            proto = onnx.version_converter.convert_version(proto, 21)
            gap = next(n for n in proto.graph.node if n.op_type == "GlobalAveragePool")
            proto.graph.output.append(h.make_tensor_value_info(gap.input[0], T.FLOAT, None))  # last int8 features
            inp = proto.graph.input[0].name
            rng = np.random.default_rng(0)
            cal = {inp: rng.standard_normal((16, 3, size, size)).astype(np.float32)}
            samples = [{inp: rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(args.samples)]
            rows.append(bench(f"MobileNetV2 0.35 {size}px", proto, cal, samples, f"{inp}=1x3x{size}x{size}", args))
        elif name == "mobilenetv2-digits":  # the MobileNet with an accuracy: trained on the digits at 32x32
            import onnxruntime as ort
            from zoo.digits import digits_images, digits_mobilenetv2

            proto = onnx.version_converter.convert_version(digits_mobilenetv2(), 21)
            xc, _ = digits_images("calibration")
            x, y = digits_images("test")
            sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            fl = sess.run(None, {"input": x})[0]
            samples = [{"input": x[i:i + 1]} for i in range(len(x))]
            rows.append(bench("MobileNetV2 0.35 digits 32px", proto, {"input": xc}, samples, "input=1x3x32x32", args,
                              y, fl))
        else:
            raise SystemExit(f"unknown model {name}")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(format_table(keys, [[r.get(k) for k in keys] for r in rows]))


if __name__ == "__main__":
    main()
