"""Benchmark model I/O: edgec ``load_model -> save_model`` against ``onnx.load -> onnx.save``.

A large residual-MLP model (random float32 weights, ``--size-mb`` of them) is generated with
``onnx.helper`` in two variants: weights as external data (``model.onnx`` + ``model.onnx.data``)
and weights inline (one protobuf file, only when under 2 GB). Each measurement runs in a fresh
subprocess, so the peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss`` read in the child) belongs to
that one load + save. Wall time is the median of ``--repeat`` runs (excluding interpreter start
and imports). Temporary files are removed unless ``--keep`` is given.

On Linux a child's ``ru_maxrss`` starts at its parent's high-water mark (it survives fork/vfork
+ exec), so the driver process stays small: it never imports onnx or numpy, and generation and
verification run in their own subprocesses too.

    python benchmarks/bench_io.py [--size-mb 200] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # the driver process must stay small: heavy imports happen in children only
    import numpy as np
    import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import format_table, median, peak_rss_mb  # noqa: E402

HIDDEN = 2048
INLINE_LIMIT_MB = 1900  # protobuf refuses messages of 2 GiB and more


# ------------------------------------------------------------------------------------------------
# model generation
# ------------------------------------------------------------------------------------------------

def _external_tensor(name: str, arr: np.ndarray, f: BinaryIO, location: str) -> onnx.TensorProto:
    """Append ``arr`` to the open data file ``f`` and return a TensorProto referencing it."""
    import onnx

    offset = f.tell()
    f.write(arr.tobytes())
    t = onnx.TensorProto()
    t.name = name
    t.dims.extend(arr.shape)
    t.data_type = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(arr.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def generate(workdir: Path, size_mb: int, *, inline: bool, seed: int = 0) -> Dict[str, Path]:
    """Write the benchmark model(s) under ``workdir``; return ``{variant: model path}``.

    The graph is a residual MLP: ``x -> [MatMul -> Add(bias) -> Relu -> Mul(scale) -> Add(x)] * n
    -> MatMul(head)`` with ``[HIDDEN, HIDDEN]`` weights, enough layers for ``size_mb`` MB.
    Weights are streamed to the data file, so generation never holds them all in memory.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    layer_bytes = HIDDEN * HIDDEN * 4 + 2 * HIDDEN * 4
    n_layers = max(1, math.ceil((size_mb * 1e6 - HIDDEN * 1000 * 4) / layer_bytes))
    ext_dir = workdir / "external"
    ext_dir.mkdir(parents=True)
    model_path = ext_dir / "model.onnx"
    location = model_path.name + ".data"
    inits: List[TensorProto] = []
    nodes = []
    x = "input"
    scale = 1.0 / math.sqrt(HIDDEN)
    with open(ext_dir / location, "wb") as f:
        for i in range(n_layers):
            p = f"layers.{i}"
            w = (rng.standard_normal((HIDDEN, HIDDEN), dtype=np.float32) * scale).astype(np.float32)
            b = (rng.standard_normal(HIDDEN, dtype=np.float32) * 0.01).astype(np.float32)
            g = (rng.random(HIDDEN, dtype=np.float32) * 0.5 + 0.5).astype(np.float32)
            inits += [_external_tensor(f"{p}.fc.weight", w, f, location),
                      _external_tensor(f"{p}.fc.bias", b, f, location),
                      _external_tensor(f"{p}.scale", g, f, location)]
            nodes += [helper.make_node("MatMul", [x, f"{p}.fc.weight"], [f"{p}/mm"], name=f"/{p}/MatMul"),
                      helper.make_node("Add", [f"{p}/mm", f"{p}.fc.bias"], [f"{p}/bias"], name=f"/{p}/Add"),
                      helper.make_node("Relu", [f"{p}/bias"], [f"{p}/relu"], name=f"/{p}/Relu"),
                      helper.make_node("Mul", [f"{p}/relu", f"{p}.scale"], [f"{p}/scaled"], name=f"/{p}/Mul"),
                      helper.make_node("Add", [f"{p}/scaled", x], [f"{p}/out"], name=f"/{p}/Residual")]
            x = f"{p}/out"
        head = (rng.standard_normal((HIDDEN, 1000), dtype=np.float32) * scale).astype(np.float32)
        inits.append(_external_tensor("head.weight", head, f, location))
        nodes.append(helper.make_node("MatMul", [x, "head.weight"], ["logits"], name="/head/MatMul"))
    graph = helper.make_graph(
        nodes, "bench_io_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", HIDDEN])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_io")
    model.ir_version = 8
    onnx.save(model, str(model_path))
    paths = {"external": model_path}
    if inline:
        in_dir = workdir / "inline"
        in_dir.mkdir()
        full = onnx.load(str(model_path))  # pulls the external data in
        onnx.save(full, str(in_dir / "model.onnx"))
        del full
        paths["inline"] = in_dir / "model.onnx"
    return paths


def model_mb(path: Path) -> float:
    """Size of the model file plus the external data files in its folder, in MB."""
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file()) / 1e6


# ------------------------------------------------------------------------------------------------
# measurement (child side)
# ------------------------------------------------------------------------------------------------

def child(tool: str, variant: str, src: str, out: str) -> None:
    """Run one load + save in this (fresh) process and print a JSON record."""
    import onnx

    if tool == "edgec":
        from edgec.backends.onnx_export import save_model
        from edgec.frontend.onnx_import import load_model
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    if tool == "onnx":
        m = onnx.load(src)
        if variant == "external":
            onnx.save(m, out, save_as_external_data=True, all_tensors_to_one_file=True,
                      location=Path(out).name + ".data", size_threshold=1024)
        else:
            onnx.save(m, out)
    else:
        save_model(load_model(src), out, external_data=(variant == "external"))
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before}))


# ------------------------------------------------------------------------------------------------
# driver (parent side)
# ------------------------------------------------------------------------------------------------

def _run_child(*args: str) -> str:
    """Run this script with ``args`` in a fresh interpreter; return its stdout (raise on failure)."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def measure(tool: str, variant: str, src: Path, outdir: Path, repeat: int, verify: bool) -> Dict[str, float]:
    """Run ``repeat`` fresh-process measurements; return median wall and max peak RSS."""
    walls, peaks, befores = [], [], []
    for k in range(repeat):
        run_dir = outdir / f"{tool}-{variant}-{k}"
        run_dir.mkdir(parents=True)
        out = run_dir / "model.onnx"
        stdout = _run_child("--child", tool, variant, str(src), str(out))
        rec = json.loads(stdout.strip().splitlines()[-1])
        walls.append(rec["wall"])
        peaks.append(rec["peak_rss_mb"])
        befores.append(rec["rss_before_mb"])
        if verify and k == 0:
            _run_child("--verify", str(out))
        shutil.rmtree(run_dir)
    return {"wall": median(walls), "peak": max(peaks), "before": median(befores)}


def main(argv: Optional[List[str]] = None) -> int:
    """Parse options, generate the models, measure, print the table and clean up."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=200, help="weight bytes of the generated model (MB)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh-process runs per measurement (median)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory and print its path")
    ap.add_argument("--no-verify", action="store_true", help="skip onnx.checker on the written models")
    ap.add_argument("--child", nargs=4, metavar=("TOOL", "VARIANT", "SRC", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--generate", nargs=3, metavar=("DIR", "SIZE_MB", "INLINE"), help=argparse.SUPPRESS)
    ap.add_argument("--verify", metavar="MODEL", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.generate:
        d, size, inline = args.generate
        paths = generate(Path(d), int(size), inline=inline == "1")
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    if args.verify:
        import onnx

        onnx.checker.check_model(args.verify)  # path form: fine for large / external-data models
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="edgec-bench-io-"))
    try:
        t0 = time.perf_counter()
        inline = "1" if args.size_mb <= INLINE_LIMIT_MB else "0"
        out = _run_child("--generate", str(workdir / "models"), str(args.size_mb), inline)
        paths = {k: Path(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}
        print(f"generated {', '.join(f'{v} {model_mb(p):.0f} MB' for v, p in paths.items())} "
              f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        rows: List[Tuple[object, ...]] = []
        for variant, src in paths.items():
            size = model_mb(src)
            res = {tool: measure(tool, variant, src, workdir / "out", args.repeat, not args.no_verify)
                   for tool in ("onnx", "edgec")}
            for tool in ("onnx", "edgec"):
                r = res[tool]
                ratio = res["edgec"]["wall"] / res["onnx"]["wall"] if tool == "edgec" else None
                rows.append((variant, tool, size, r["wall"], r["peak"], r["peak"] / size,
                             r["peak"] - r["before"], ratio))
        print(format_table(["variant", "tool", "model MB", "wall s (median)", "peak RSS MB",
                            "peak RSS / model", "RSS growth MB", "time edgec/onnx"], rows))
        print("goals: edgec time <= 2x onnx; edgec peak RSS <= 1.5x model size")
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
