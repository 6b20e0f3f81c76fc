"""The ``edgec`` command line: ``compile``, ``opt``, ``inspect`` and ``passes``.

User errors (every :class:`~edgec.errors.EdgecError`) print ``edgec: error: <one line>`` and exit
with code 2; anything else is an internal error (exit 1) whose traceback ``--debug`` shows.
Outputs are written atomically: a failed run never leaves a partial file.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import click

from . import __version__
from .fsutil import write_text_atomic
from .units import human_bytes
from .errors import EdgecError, ModelLoadError, PipelineError
from .passmanager import (
    DEFAULT_OPT_LEVEL, PassContext, PassManager, PassManagerOptions, PassRegistry, Pipeline, parse_pipeline,
    preset_pipeline, using_registry,
)

__all__ = ["cli", "main"]


# --- error handling -----------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class EdgecGroup(click.Group):
    """A click group that turns exceptions into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except EdgecError as e:
            if ctx.params.get("debug"):
                traceback.print_exc(file=sys.stderr)
            click.echo(f"edgec: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if ctx.params.get("debug"):
                traceback.print_exc(file=sys.stderr)
                click.echo(f"edgec: internal error: {type(e).__name__}: {_one_line(e)}", err=True)
            else:
                click.echo(f"edgec: internal error: {type(e).__name__}: {_one_line(e)} "
                           f"(rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


@dataclass
class _State:
    debug: bool = False
    plugins: Sequence[str] = ()
    _registry: Optional[PassRegistry] = None

    @property
    def registry(self) -> PassRegistry:
        """A fresh registry with the entry points and the --load-pass-plugin files."""
        if self._registry is None:
            reg = PassRegistry()
            reg.ensure_loaded()
            for path in self.plugins:
                reg.load_file(path)
            self._registry = reg
        return self._registry

    def load_passes(self) -> PassRegistry:
        """Load the built-in and plugin passes now (errors surface before any work)."""
        return self.registry

    def rerun_flags(self) -> List[str]:
        out: List[str] = []
        for path in self.plugins:
            out += ["--load-pass-plugin", os.path.abspath(path)]
        return out


@click.group(cls=EdgecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgec")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.option("--load-pass-plugin", "plugins", multiple=True, metavar="FILE.py",
              help="Load passes from a Python file (repeatable).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, plugins: Tuple[str, ...]) -> None:
    """edgec: a graph-level compiler for ONNX models on edge devices and accelerators."""
    ctx.obj = _State(debug=debug, plugins=plugins)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="edgec")


# --- pipeline and debugging flags ---------------------------------------------------------------

def _names(values: Sequence[str]) -> List[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


_PIPELINE_FLAGS: List[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("-O", "opt_level", type=click.IntRange(0, 3), default=None, metavar="0-3",
                 help="Optimization preset -O0..-O3 (runs before --passes when both are given)."),
    click.option("--passes", "passes_text", default=None, metavar="PIPELINE",
                 help='Pass pipeline, e.g. "dce,repeat{max-iters=5}(fold,dce)".'),
    click.option("--disable-pass", multiple=True, metavar="NAME", help="Remove a pass from the pipeline (repeatable)."),
    click.option("--verify-each/--no-verify-each", default=True, show_default=True,
                 help="Verify the IR after every pass."),
    click.option("--print-ir-before", multiple=True, metavar="NAMES", help="Print the IR before these passes."),
    click.option("--print-ir-after", multiple=True, metavar="NAMES", help="Print the IR after these passes."),
    click.option("--print-ir-before-all", is_flag=True, help="Print the IR before every pass."),
    click.option("--print-ir-after-all", is_flag=True, help="Print the IR after every pass."),
    click.option("--print-ir-after-change", is_flag=True, help="Print the IR after a pass only when it changed it."),
    click.option("--ir-dump-dir", type=click.Path(file_okay=False), default=None,
                 help="Write the IR after every pass to numbered files in DIR."),
    click.option("--timing", is_flag=True, help="Print per-pass wall time to stderr."),
    click.option("--pass-statistics", is_flag=True, help="Print pass statistics to stderr."),
    click.option("--crash-reproducer", type=click.Path(file_okay=False), default=None, metavar="DIR",
                 help="When a pass fails, write a reproducer (input.ir, pipeline.txt, run.sh) to DIR."),
    click.option("--elide-tensors-larger", type=int, default=16, show_default=True, metavar="N",
                 help="In IR dumps, elide tensors with more than N elements (-1: never)."),
]


def pipeline_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the pipeline and debugging flags shared by `compile` and `opt`."""
    for deco in reversed(_PIPELINE_FLAGS):
        fn = deco(fn)
    return fn


def _build_pipeline(registry: PassRegistry, opt_level: Optional[int], passes_text: Optional[str],
                    disable: Sequence[str], default_level: Optional[int]) -> Pipeline:
    pipe = Pipeline()
    level = opt_level if opt_level is not None else (default_level if passes_text is None else None)
    if level is not None:
        pipe = preset_pipeline(level, registry)
    if passes_text is not None:
        pipe = pipe + parse_pipeline(passes_text, registry)
    for name in _names(disable):
        if name not in registry:
            raise PipelineError(f"--disable-pass: unknown pass '{name}'{registry.suggest(name)}")
    return pipe.without(_names(disable))


def _run_pipeline(state: _State, model: Any, kw: Dict[str, Any], *, default_level: Optional[int],
                  finish: str = "", resources: Optional[Dict[str, Any]] = None, flags: bool = True,
                  ctx: Optional[PassContext] = None) -> Pipeline:
    """Build the pipeline from the flags (plus ``finish``, the target's own last passes) and run it.

    ``flags=False`` runs only ``finish`` (with the debugging flags); a given ``ctx`` collects the
    reports and warnings (the caller shows them) instead of a fresh one whose warnings are printed.
    """
    registry = state.registry
    with using_registry(registry):
        pipe = Pipeline()
        if flags:
            pipe = _build_pipeline(registry, kw["opt_level"], kw["passes_text"], kw["disable_pass"], default_level)
        if finish:
            pipe = pipe + parse_pipeline(finish, registry)
        for flag in ("print_ir_before", "print_ir_after"):
            for name in _names(kw[flag]):
                if name not in registry:
                    raise PipelineError(f"--{flag.replace('_', '-')}: unknown pass '{name}'{registry.suggest(name)}")
        elide = kw["elide_tensors_larger"]
        options = PassManagerOptions(
            verify_each=kw["verify_each"],
            print_ir_before=_names(kw["print_ir_before"]), print_ir_after=_names(kw["print_ir_after"]),
            print_ir_before_all=kw["print_ir_before_all"], print_ir_after_all=kw["print_ir_after_all"],
            print_ir_after_change=kw["print_ir_after_change"], ir_dump_dir=kw["ir_dump_dir"],
            timing=kw["timing"], pass_statistics=kw["pass_statistics"], crash_reproducer=kw["crash_reproducer"],
            elide_limit=None if elide is not None and elide < 0 else elide,
            rerun_group_flags=state.rerun_flags(),
        )
        pctx = ctx if ctx is not None else PassContext(resources=dict(resources or {}))
        if ctx is not None and resources:
            pctx.resources.update(resources)
        PassManager.with_options(pipe, options, ctx=pctx).run(model)
        if ctx is None:
            for w in pctx.warnings:
                click.echo(f"edgec: warning: {_one_line(w)}", err=True)
    return pipe


# --- reading and writing ------------------------------------------------------------------------

def _read_input(path: str) -> Any:
    """An ONNX file (``.onnx``) or textual IR (anything else; ``-`` is stdin)."""
    from .ir.parser import parse_model

    if path == "-":
        return parse_model(click.get_text_stream("stdin").read())
    if path.lower().endswith(".onnx"):
        from .frontend.onnx_import import load_model

        return load_model(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    model = parse_model(text)
    if getattr(model, "base_dir", None) is None:
        model.base_dir = os.path.dirname(os.path.abspath(path))
    return model


def _write_output(model: Any, path: Optional[str]) -> None:
    if path is None or path == "-":
        from .ir.printer import print_model

        click.echo(print_model(model, elide_limit=None), nl=False)
    elif path.lower().endswith(".onnx"):
        from .backends.onnx_export import save_model

        save_model(model, path)
    else:
        from .ir.printer import print_model

        write_text_atomic(path, print_model(model, elide_limit=None))


def _count_nodes(model: Any) -> int:
    return sum(1 for _ in model.graph.all_nodes())


def _disk_size(path: str, model: Any) -> int:
    """Bytes of the model file plus the external data files its tensors point to."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    own = os.path.realpath(path)  # inline weights are read lazily from the model file itself
    files = set()
    for g in model.all_graphs():
        for v in g.initializers.values():
            p = getattr(v.const, "path", None)
            if isinstance(p, str):
                files.add(os.path.abspath(p if os.path.isabs(p) else os.path.join(model.base_dir or "", p)))
    return size + sum(os.path.getsize(f) for f in files if os.path.isfile(f) and os.path.realpath(f) != own)


def _written_size(path: str) -> int:
    """Bytes edgec wrote: the model file and its ``.data`` file, if any."""
    return sum(os.path.getsize(p) for p in (path, path + ".data") if os.path.isfile(p))



# --- commands -----------------------------------------------------------------------------------

@cli.command("compile")
@click.argument("model_path", metavar="MODEL")
@click.option("-o", "--output", required=True, metavar="OUT", help="Output file.")
@click.option("--target", type=click.Choice(["onnx", "c"]), default="onnx", show_default=True,
              help="Output format: an ONNX file, or C99 source (OUT is a directory: NAME.h, NAME.c, report.txt/.json).")
@click.option("--name", "c_name", default="model", show_default=True, metavar="NAME",
              help="C target: prefix of the generated files, functions and macros (a C identifier).")
@click.option("--verify", "c_verify", is_flag=True,
              help="C target: build the generated code with a test harness and compare it with onnxruntime.")
@click.option("--ort-contrib-ops", is_flag=True,
              help="Emit fused ops as onnxruntime's com.microsoft ops (FusedConv, FusedGemm, Gelu...) "
                   "instead of standard ONNX.")
@click.option("--input-shape", multiple=True, metavar="NAME=1x3x224x224",
              help="Pin the shape of a graph input (repeatable).")
@click.option("--quantize", "quant_mode", type=click.Choice(["int8", "uint8", "dynamic", "int8-weights", "int4-weights"]),
              default=None, help="Quantize after optimizing: static with int8 weights (needs --calibration; "
                                 "'int8' picks the activation type the target runs best: uint8 for onnxruntime; "
                                 "'uint8' asks for it), dynamic, or weight-only int8/int4.")
@click.option("--calibration", "calibration_spec", default=None, metavar="SPEC",
              help="Calibration data: FILE.npz/.npy, a folder, module:function, or synthetic[:N].")
@click.option("--calibration-method", type=click.Choice(["minmax", "percentile", "entropy", "mse"]),
              default="minmax", show_default=True, help="How activation ranges are chosen.")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=None, metavar="N",
              help="Use only the first N calibration samples.")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor (default: per output channel).")
@click.option("--reduce-range", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="7-bit weights for static int8. auto: on when onnxruntime runs on this x86 CPU without VNNI, "
                   "whose int8 kernels saturate with full-range weights.")
@click.option("--equalize", is_flag=True, help="Run equalize-layers before quantizing.")
@click.option("--bias-correction", is_flag=True, help="Run correct-bias before quantizing.")
@click.option("--max-drop", type=float, default=None, metavar="X",
              help="Accuracy bound: put the most sensitive layers back to float until the metric drops by at most X.")
@click.option("--metric", type=click.Choice(["top1", "cosine", "sqnr"]), default=None,
              help="Metric of --max-drop (default: top1 when the data carry labels, else cosine).")
@click.option("--eval", "eval_spec", default=None, metavar="SPEC",
              help="Held-out evaluation data (same forms as --calibration; default: the calibration data).")
@click.option("--time-budget", type=click.FloatRange(min=0), default=300.0, show_default=True, metavar="SECONDS",
              help="Time limit of the --max-drop search.")
@click.option("--sensitivity", is_flag=True, help="Rank layers by quantization sensitivity (also done by --max-drop).")
@click.option("--quant-report", default=None, metavar="PATH.json", help="Write the quantization report as JSON.")
@click.option("--int8-io", is_flag=True,
              help="--quantize int8 --target c: the entry point takes and returns the int8 tensors (scales and zero "
                   "points as macros in the header) instead of float32.")
@click.option("--int8-rounding", type=click.Choice(["double", "single"]), default=None,
              help="--quantize int8 --target c: requantization rounding, double (gemmlowp/TFLite; the default) or "
                   "single (CMSIS-NN); default: the target description's.")
@click.option("--int8-softmax", is_flag=True,
              help="--quantize int8 --target c: Softmax in int8 too (TFLite integer softmax, output scale 1/256), "
                   "instead of float between a dequantize and a quantize.")
@click.option("--int8-kernels", type=click.Choice(["auto", "fast", "compact"]), default="auto", show_default=True,
              help="--quantize int8 --target c, CPU layers: fast (weights packed as int16 pairs for register-blocked "
                   "kernels: about 2x the weight bytes) or compact (int8 weights, the least flash); auto: compact "
                   "with --target-desc, fast without.")
@click.option("--target-desc", "target_desc", default=None, metavar="FILE.toml",
              help="C target: the chip (NPU ops and limits, SRAM/flash, MACs per cycle, bandwidth, rounding; format "
                   "in docs/target-description.md). Places every layer on the NPU (HAL calls) or the CPU, checks the "
                   "memory fits, writes target_report.txt/.json with per-layer cycles, and cross-compiles.")
@click.option("--prune", "prune_sparsity", type=click.FloatRange(0.0, 1.0, max_open=True), default=None, metavar="S",
              help="Prune after optimizing (before --quantize): fraction S of the weights (N:M modes: ignored).")
@click.option("--prune-mode", type=click.Choice(["unstructured", "2:4", "4:8", "channel"]), default="unstructured",
              show_default=True, help="Unstructured or N:M weight sparsity (prune-weights), or whole channels (prune-channels).")
@click.option("--prune-score", type=click.Choice(["magnitude", "wanda"]), default="magnitude", show_default=True,
              help="Weight importance: |W|, or Wanda |W|*||X||2 (needs --calibration).")
@click.option("--prune-reconstruct", is_flag=True,
              help="Least-squares update of the kept weights to match the dense layer outputs (needs --calibration).")
@click.option("--prune-storage", type=click.Choice(["dense", "sparse"]), default="dense", show_default=True,
              help="sparse: store pruned weights as ONNX sparse initializers where smaller than dense.")
@click.option("--prune-target", type=click.Choice(["channels", "macs"]), default=None,
              help="--prune-mode channel: S is the fraction of channels removed from every group (channels, "
                   "the default) or of the model's MACs (macs).")
@click.option("--prune-round-to", type=click.IntRange(min=1), default=None, metavar="N",
              help="--prune-mode channel: kept channel counts are multiples of N (e.g. 8: onnxruntime's blocked "
                   "conv kernels need multiples of 8 with AVX2, 16 with AVX-512).")
@click.option("--prune-sensitivity", default=None, metavar="S1,S2,...",
              help="Unstructured/N:M modes: measure each layer's output error when it alone is pruned to each "
                   "sparsity (e.g. 0.25,0.5,0.75,0.9; uses --calibration when given); a table and the report.")
@click.option("--prune-report", default=None, metavar="PATH.json", help="Write the pruning report as JSON.")
@pipeline_flags
@click.pass_obj
def compile_cmd(state: _State, model_path: str, output: str, target: str, ort_contrib_ops: bool,
                input_shape: Tuple[str, ...], c_name: str, c_verify: bool, **kw: Any) -> None:
    """Compile an ONNX MODEL: load, pin shapes, optimize (default -O2), verify, save."""
    quant = {k: kw.pop(k) for k in _QUANT_KEYS}
    prune = {k: kw.pop(k) for k in _PRUNE_KEYS}
    int8_opts = {"int8_io": kw.pop("int8_io"), "rounding": kw.pop("int8_rounding"), "int8_softmax": kw.pop("int8_softmax"),
                 "int8_kernels": kw.pop("int8_kernels")}
    target_desc = kw.pop("target_desc")
    if target_desc is not None and target != "c":
        raise click.UsageError("--target-desc needs --target c")
    tdesc = None
    if target_desc is not None:
        from .targets import load_target

        tdesc = load_target(target_desc)
    if target == "c" and quant["quant_mode"] is not None:
        if int8_opts["rounding"] is None:
            int8_opts["rounding"] = tdesc.rounding if tdesc is not None else "double"
        _compile_c_quantized(state, model_path, output, input_shape, c_name, c_verify, kw, quant, prune,
                             ort_contrib_ops, target_desc=tdesc, **int8_opts)
        return
    if int8_opts["int8_io"] or int8_opts["rounding"] is not None or int8_opts["int8_softmax"] \
            or int8_opts["int8_kernels"] != "auto":
        raise click.UsageError("--int8-io, --int8-rounding, --int8-softmax and --int8-kernels need --quantize int8 "
                               "--target c")
    if target == "c":
        given = [f for k, f in {**_QUANT_FLAGS, **_PRUNE_FLAGS}.items()
                 if {**quant, **prune}[k] not in (None, False, "minmax", 300.0, "unstructured", "magnitude", "dense", "auto")]
        if given or ort_contrib_ops:
            raise click.UsageError(f"{given[0] if given else '--ort-contrib-ops'} is not supported with --target c")
        _compile_c(state, model_path, output, input_shape, c_name, c_verify, kw, target_desc=tdesc)
        return
    if c_name != "model" or c_verify:
        raise click.UsageError("--name and --verify need --target c")
    if prune["prune_sparsity"] is None:
        extra = [f for k, f in _PRUNE_FLAGS.items() if prune[k] not in (None, False, "unstructured", "magnitude", "dense")]
        if extra:
            raise click.UsageError(f"{extra[0]} needs --prune S")
        prune = {}
    if quant["quant_mode"] is not None:
        _compile_quantized(state, model_path, output, target, ort_contrib_ops, input_shape, kw, quant, prune)
        return
    shared = ("calibration_spec", "calibration_samples", "eval_spec") if prune else ()
    given = [f for k, f in _QUANT_FLAGS.items() if k not in shared and quant[k] not in (None, False, "minmax", 300.0, "auto")]
    if given:
        raise click.UsageError(f"{given[0]} needs --quantize MODE")
    from .backends.onnx_export import save_model
    from .frontend.onnx_import import load_model
    from .ir.verifier import verify
    from .shapes_pin import parse_shape_spec, pin_input_shapes

    shapes = dict(parse_shape_spec(s) for s in input_shape)
    state.load_passes()  # plugins load before the (possibly slow) model load
    model = load_model(model_path)
    nodes_before, size_before = _count_nodes(model), _disk_size(model_path, model)
    if shapes:
        pin_input_shapes(model, shapes)
    finish = "lower-onnx{contrib-ops=true}" if ort_contrib_ops else "lower-onnx"
    target_info = {"name": target, "contrib_ops": ort_contrib_ops}
    if prune:
        pre = _run_pipeline(state, model, kw, default_level=DEFAULT_OPT_LEVEL, resources={"target": target_info})
        pruned = _prune(state, model, kw, prune, quant, size_before, target_info, sparse_in_pass=True)
        _run_pipeline(state, model, kw, default_level=None, finish=finish, flags=False, resources={"target": target_info})
        pipe = ",".join(t for t in (str(pre), pruned["pipeline"], finish) if t)
    else:
        pipe = _run_pipeline(state, model, kw, default_level=DEFAULT_OPT_LEVEL, finish=finish,
                             resources={"target": target_info})
    verify(model)
    save_model(model, output)
    nodes_after, size_after = _count_nodes(model), _written_size(output)
    if prune:
        _prune_finish(pruned, size_after)
    click.echo(f"edgec: {model_path} -> {output}: {nodes_before} -> {nodes_after} nodes, "
               f"{human_bytes(size_before)} -> {human_bytes(size_after)} (pipeline: {pipe or '(none)'})")


def _with_target_report(model: Any, code: Any, target: Any) -> str:
    """Add the target's cost report to ``code.files`` (target_report.txt/.json); returns its summary line.

    The memory fit is checked before anything is written (a plan that does not fit the SRAM or the
    flash is an error naming the layer); the code is cross-compiled in a scratch directory for the
    target CPU when its compiler is installed (else the report says so and flash counts weights only).
    """
    import json
    import shutil
    import tempfile

    from .backends.c import write_c
    from .targets import CrossCompileError, build_cost_report, cross_compile, format_cost_report, place

    placements = place(model, target)
    build_cost_report(model, code.report, target, placements)  # fit check without code bytes: fail early
    size, why = None, ""
    tmp = tempfile.mkdtemp(prefix="edgec-xc-")
    try:
        write_c(code, tmp)
        size = cross_compile(tmp, target)
    except CrossCompileError as e:
        why = str(e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rep = build_cost_report(model, code.report, target, placements, code_size=size)
    if why:
        rep["cross_compile_error"] = why
    code.files["target_report.txt"] = format_cost_report(rep) + ("" if not why else f"\ncross-compile: {why}\n")
    code.files["target_report.json"] = json.dumps(rep, indent=2, sort_keys=True, default=str) + "\n"
    npu = sum(1 for p in placements.values() if p.unit == "npu")
    summ = rep.get("summary", {})
    lat = summ.get("latency_ms", summ.get("estimated_latency_ms"))
    text = f"{target.name}: {npu}/{len(placements)} nodes on the NPU"
    if lat is not None:
        text += f", estimated {float(lat):.3g} ms"
    if size is not None:
        t = size["total"]
        text += f", text {t['text']} B, rodata {t['rodata']} B, data {t['data']} B, bss {t['bss']} B"
    elif why:
        text += f" (not cross-compiled: {why})"
    return text


def _compile_c(state: _State, model_path: str, out_dir: str, input_shape: Tuple[str, ...], name: str,
               verify_c: bool, kw: Dict[str, Any], runs: int = 3, target_desc: Any = None) -> None:
    """`compile --target c`: -O preset (no ONNX lowering: the C kernels take the fused ops), C code, report."""
    from .backends.c import generate_c, pin_shapes, write_c
    from .frontend.onnx_import import load_model
    from .ir.verifier import verify

    state.load_passes()
    model = load_model(model_path)
    pin_shapes(model, input_shape)
    target_info = {"name": "c", "contrib_ops": False}
    pipe = _run_pipeline(state, model, kw, default_level=DEFAULT_OPT_LEVEL, resources={"target": target_info})
    verify(model)
    code = generate_c(model, name, source=os.path.basename(model_path))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise EdgecError(f"--target c writes a directory, but {out_dir} is a file")
    tline = _with_target_report(model, code, target_desc) if target_desc is not None else ""
    write_c(code, out_dir)
    m = code.report["memory"]
    click.echo(f"edgec: {model_path} -> {os.path.join(out_dir, name + '.c')}: {len(code.report['layers'])} layers, "
               f"arena {human_bytes(m['arena_bytes'])} (lower bound {human_bytes(m['lower_bound_bytes'])}), "
               f"weights {human_bytes(code.report['weights']['bytes'])} (pipeline: {pipe or '(none)'})")
    if tline:
        click.echo(f"edgec: {tline} (target_report.txt)")
    if verify_c:
        _verify_c(model, model_path, code, runs)


def _compile_c_quantized(state: _State, model_path: str, out_dir: str, input_shape: Tuple[str, ...], name: str,
                         verify_c: bool, kw: Dict[str, Any], q: Dict[str, Any], prune: Dict[str, Any],
                         ort_contrib_ops: bool, *, int8_io: bool = False, rounding: str = "double",
                         placement: Optional[Callable[[Any], str]] = None, runs: int = 3,
                         target_desc: Any = None, int8_softmax: bool = False, int8_kernels: str = "auto") -> None:
    """`compile --quantize int8 --target c`: -O preset, int8 QDQ quantization (int8 activations), integer IR,
    integer-only C (NPU layers through the HAL of ``placement``, default all), report; --verify compares the
    built C with the integer reference (edgec.quant.reference.run_integer) bit for bit."""
    import re

    from .backends.c import pin_shapes, write_c
    from .backends.c.integerize import compile_int8
    from .errors import CalibrationError
    from .frontend.onnx_import import load_model
    from .ir.verifier import verify
    from .passes.quantize import initializer_bytes
    from .quant.accuracy import QuantConfig, copy_model, quantize_model
    from .quant.data import load_calibration
    from .quant.report import build_report, format_summary, write_report

    mode = q["quant_mode"]
    if mode != "int8":
        raise click.UsageError(f"--target c supports --quantize int8 (integer-only C), not {mode}")
    given = [f for k, f in _PRUNE_FLAGS.items() if prune.get(k) not in (None, False, "unstructured", "magnitude", "dense")]
    if given or ort_contrib_ops:
        raise click.UsageError(f"{given[0] if given else '--ort-contrib-ops'} is not supported with --target c")
    if q["calibration_spec"] is None:
        raise CalibrationError("--quantize int8 needs calibration data: pass --calibration FILE (.npz keyed by input "
                               "name) or --calibration synthetic (random inputs, smoke tests only)")
    cfg = QuantConfig(mode="int8", method=q["calibration_method"], per_channel=not q["per_tensor"],
                      equalize=q["equalize"], bias_correction=q["bias_correction"],
                      reduce_range=q["reduce_range"] == "on")
    state.load_passes()
    model = load_model(model_path)
    pin_shapes(model, input_shape)
    target_info = {"name": "c", "contrib_ops": False}
    pre = _run_pipeline(state, model, kw, default_level=DEFAULT_OPT_LEVEL, resources={"target": target_info})
    shown: List[str] = []

    def warn(text: str, loud: bool = False) -> None:
        line = _one_line(text)
        if line not in shown:
            shown.append(line)
            click.echo(f"edgec: {'WARNING' if loud else 'warning'}: {line}", err=True)

    cal = load_calibration(q["calibration_spec"], model, max_samples=q["calibration_samples"])
    for w in cal.warnings:
        warn(w, loud=cal.synthetic)
    ev = None
    if q["eval_spec"] is not None:
        ev = load_calibration(q["eval_spec"], model)
        for w in ev.warnings:
            warn("--eval: " + w, loud=ev.synthetic)

    def int8_acts(text: str) -> str:  # the C target runs int8 activations (TFLite int8 spec)
        return re.sub(r"(^|,)quantize(\{|(?=,|$))",
                      lambda m: m.group(1) + "quantize{activations=int8" + (",int8-softmax=true" if int8_softmax else "")
                      + ("," if m.group(2) else "}"), text)

    def runner(m: Any, text: str, resources: Dict[str, Any], first: bool) -> Dict[str, Any]:
        ctx = PassContext(resources=dict(resources))
        with using_registry(state.registry):
            PassManager.with_options(parse_pipeline(int8_acts(text), state.registry),
                                     PassManagerOptions(verify_each=first), ctx=ctx).run(m)
        return {"reports": ctx.reports, "warnings": list(ctx.warnings)}

    weights_float = initializer_bytes(model)
    result = quantize_model(model, cfg, calibration=cal, eval_data=ev, max_drop=q["max_drop"], metric=q["metric"],
                            time_budget=q["time_budget"], sensitivity=q["sensitivity"],
                            resources={"target": target_info}, runner=runner)
    model = result.model
    for w in result.warnings:
        warn(w)
    _run_pipeline(state, model, kw, default_level=None, finish=_QUANT_CLEANUP, flags=False,
                  resources={"target": target_info})
    verify(model)
    qdq = copy_model(model) if verify_c else None
    if qdq is not None and (qdq.opset("") or 0) < 19:
        qdq.opset_imports[""] = 19  # onnx.reference has DequantizeLinear from 19 on: for the float regions only
    if target_desc is not None and placement is None:
        from .targets import unit_of

        placement = unit_of(target_desc)
    if int8_kernels == "auto":  # a described chip counts its flash; a host build wants speed
        int8_kernels = "compact" if target_desc is not None else "fast"
    code, res = compile_int8(model, name, rounding=rounding, int8_io=int8_io, placement=placement,
                             source=os.path.basename(model_path), int8_kernels=int8_kernels)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise EdgecError(f"--target c writes a directory, but {out_dir} is a file")
    tline = _with_target_report(model, code, target_desc) if target_desc is not None else ""
    write_c(code, out_dir)
    options = {"quantize": mode, "calibration": q["calibration_spec"], "calibration_method": q["calibration_method"],
               "per_channel": not q["per_tensor"], "max_drop": q["max_drop"], "eval": q["eval_spec"],
               "target": "c", "rounding": rounding, "int8_io": int8_io}
    pipeline_text = ",".join(t for t in (str(pre), int8_acts(result.pipeline), _QUANT_CLEANUP) if t)
    report = build_report(result, mode=mode, options=options, calibration=cal, eval_data=ev, pipeline=pipeline_text,
                          weight_bytes={"float": weights_float, "quantized": code.report["weights"]["bytes"]},
                          warnings=shown)
    summary = format_summary(report)
    if summary:
        click.echo(summary, err=True)
    if q["quant_report"]:
        write_report(q["quant_report"], report)
    m = code.report["memory"]
    npu = sum(1 for L in code.report["layers"] if L.get("placement") == "npu")
    click.echo(f"edgec: {model_path} -> {os.path.join(out_dir, name + '.c')}: int8 ({rounding} rounding"
               f"{', int8 I/O' if int8_io else ''}), {res.summary()}, {npu} layers on the NPU HAL, arena "
               f"{human_bytes(m['arena_bytes'])} (lower bound {human_bytes(m['lower_bound_bytes'])}), weights "
               f"{human_bytes(code.report['weights']['bytes'])} (pipeline: {pipeline_text})")
    if tline:
        click.echo(f"edgec: {tline} (target_report.txt)")
    if verify_c:
        _verify_c_int8(qdq, code, res, out_dir, ev if ev is not None else cal, runs, rounding)


def _verify_c_int8(qdq: Any, code: Any, res: Any, out_dir: str, data: Any, runs: int, rounding: str) -> None:
    """Build the int8 C with the harness and compare ``runs`` samples with the integer reference (exact)."""
    import shutil
    import tempfile

    import numpy as np

    from .backends.c import write_c
    from .backends.c.integerize import check_int8
    from .backends.c.verify import build

    shapes = {t["name"]: t["shape"] for t in code.report["inputs"]}
    samples: List[Dict[str, Any]] = []
    for batch in data.batches(1):
        samples.append({k: np.asarray(v).reshape(shapes[k]) for k, v in batch.items() if k in shapes})
        if len(samples) >= runs:
            break
    tmp = tempfile.mkdtemp(prefix="edgec-verify-")
    try:
        write_c(code, tmp)
        prog = build(tmp, code.report, opt="-O2")
        chk = check_int8(prog, code, qdq, samples, rounding=rounding, io=res.io, float_atol=1e-4)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    click.echo(f"edgec verify (int8 C vs integer reference): {chk.summary()}")
    if not chk.ok:
        raise click.exceptions.Exit(1)


def _verify_c(model: Any, model_path: str, code: Any, runs: int, sanitize: bool = False,
              keep_dir: Optional[str] = None) -> None:
    """Build ``code`` with the test harness (in ``keep_dir`` or a temporary directory) and compare with onnxruntime."""
    import shutil
    import tempfile

    from .backends.c import write_c
    from .backends.c.verify import gather_index_bounds, verify_dir

    out_dir = keep_dir or tempfile.mkdtemp(prefix="edgec-verify-")
    try:
        write_c(code, out_dir)
        res = verify_dir(out_dir, code.report, model_path, runs=runs, sanitize=sanitize,
                         index_bounds=gather_index_bounds(model))
    finally:
        if keep_dir is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    for i, r in enumerate(res.runs):
        for c in r:
            click.echo(f"  run {i}: {c.name}: max abs error {c.max_abs:.3g}, max ULP {c.max_ulp}, "
                       f"{c.bad}/{c.total} outside tolerance")
    click.echo(f"edgec verify: {res.summary()}")
    if not res.ok:
        raise click.exceptions.Exit(1)


@cli.command("verify")
@click.argument("model_path", metavar="MODEL")
@click.option("--input-shape", multiple=True, metavar="NAME=1x3x224x224",
              help="Pin the shape of a graph input, or a symbolic dim as SYMBOL=N (repeatable).")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Random inputs to try.")
@click.option("--name", "c_name", default="model", show_default=True, help="Prefix of the generated C.")
@click.option("--keep", "keep_dir", default=None, metavar="DIR", help="Build in DIR and keep it (default: a temp dir).")
@click.option("--sanitize", is_flag=True, help="Build with -fsanitize=address,undefined.")
@pipeline_flags
@click.pass_obj
def verify_cmd(state: _State, model_path: str, input_shape: Tuple[str, ...], runs: int, c_name: str,
               keep_dir: Optional[str], sanitize: bool, **kw: Any) -> None:
    """Compile MODEL to C, build it with cc -O2 -std=c99 -Wall -Wextra -Werror, compare with onnxruntime.

    Exit 1 when an output differs by more than rtol 1e-4 and 100 ULP.
    """
    from .backends.c import generate_c, pin_shapes
    from .frontend.onnx_import import load_model

    state.load_passes()
    model = load_model(model_path)
    pin_shapes(model, input_shape)
    _run_pipeline(state, model, kw, default_level=DEFAULT_OPT_LEVEL,
                  resources={"target": {"name": "c", "contrib_ops": False}})
    code = generate_c(model, c_name, source=os.path.basename(model_path))
    _verify_c(model, model_path, code, runs, sanitize=sanitize, keep_dir=keep_dir)


_PRUNE_FLAGS = {"prune_sparsity": "--prune", "prune_mode": "--prune-mode", "prune_score": "--prune-score",
                "prune_reconstruct": "--prune-reconstruct", "prune_storage": "--prune-storage",
                "prune_report": "--prune-report", "prune_target": "--prune-target", "prune_round_to": "--prune-round-to",
                "prune_sensitivity": "--prune-sensitivity"}
_PRUNE_KEYS = tuple(_PRUNE_FLAGS)


def _prune_pipeline(p: Dict[str, Any], *, sparse_in_pass: bool) -> str:
    """The pipeline text of the --prune flags (``prune-weights{...}`` or ``prune-channels{...}``)."""
    from .passmanager.base import format_option_value as fmt

    if p["prune_mode"] == "channel":
        opts = [f"sparsity={fmt(float(p['prune_sparsity']))}"]
        if p.get("prune_target") == "macs":
            opts.append("target=macs")
        if p.get("prune_round_to"):
            opts.append(f"round-to={int(p['prune_round_to'])}")
        if p["prune_reconstruct"]:  # channels ranked by the error left after the refit, then refit
            opts += ["score=obs", "refit=true"]
        return "prune-channels{" + ",".join(opts) + "}"
    opts = [f"sparsity={fmt(float(p['prune_sparsity']))}", f"mode={p['prune_mode']}", f"score={p['prune_score']}"]
    if p["prune_reconstruct"]:
        opts.append("reconstruct=true")
    if sparse_in_pass and p["prune_storage"] == "sparse":
        opts.append("storage=sparse")
    if p.get("prune_sensitivity"):
        try:
            levels = [float(x) for x in str(p["prune_sensitivity"]).split(",") if x.strip()]
        except ValueError:
            levels = []
        if not levels or any(not 0.0 < x < 1.0 for x in levels):
            raise click.UsageError(f"--prune-sensitivity: expected sparsities in (0, 1) like 0.25,0.5,0.75, got "
                                   f"'{p['prune_sensitivity']}'")
        opts.append("sensitivity=" + fmt(levels))
    return "prune-weights{" + ",".join(opts) + "}"


def _prune(state: _State, model: Any, kw: Dict[str, Any], p: Dict[str, Any], q: Dict[str, Any], size_before: int,
           target_info: Dict[str, Any], *, sparse_in_pass: bool) -> Dict[str, Any]:
    """Run the --prune pass on ``model`` (after the -O preset) and measure it against the dense model.

    Returns what :func:`_prune_finish` needs once the output is written (report, summary inputs).
    """
    from .errors import CalibrationError
    from .prune.report import model_numbers
    from .quant.accuracy import Evaluator, copy_model
    from .quant.data import load_calibration

    text = _prune_pipeline(p, sparse_in_pass=sparse_in_pass)
    name = text.split("{", 1)[0]
    if name not in state.registry:
        raise PipelineError(f"--prune-mode {p['prune_mode']} needs pass '{name}', which is not registered")
    for key in ("prune_target", "prune_round_to"):
        if p.get(key) is not None and p["prune_mode"] != "channel":
            raise click.UsageError(f"{_PRUNE_FLAGS[key]} needs --prune-mode channel")
    if p.get("prune_sensitivity") and p["prune_mode"] == "channel":
        raise click.UsageError("--prune-sensitivity applies to weight pruning (unstructured, 2:4, 4:8), not channel")
    needs = (p["prune_score"] == "wanda" and p["prune_mode"] != "channel") or p["prune_reconstruct"]
    cal = ev = None
    if q["calibration_spec"] is not None:
        cal = load_calibration(q["calibration_spec"], model, max_samples=q["calibration_samples"])
        for w in cal.warnings:
            click.echo(f"edgec: {'WARNING' if cal.synthetic else 'warning'}: {_one_line(w)}", err=True)
    elif needs:
        raise CalibrationError("--prune-score wanda and --prune-reconstruct need calibration data: pass --calibration "
                               "FILE (.npz keyed by input name)")
    if q["eval_spec"] is not None:
        ev = load_calibration(q["eval_spec"], model)
    dense = copy_model(model)
    before = model_numbers(dense)
    ctx = PassContext(resources={"target": target_info, **({"calibration": cal} if cal is not None else {})})
    _run_pipeline(state, model, dict(kw, opt_level=None, passes_text=text, disable_pass=()), default_level=None, ctx=ctx)
    for w in ctx.warnings:
        click.echo(f"edgec: warning: {_one_line(w)}", err=True)
    rep = ctx.reports.get("pruning") or ctx.reports.get("channel-pruning") or {}
    after = model_numbers(model, layers=rep.get("layers"))
    accuracy = None
    data = ev if ev is not None else cal
    if data is not None:
        evaluator = Evaluator(dense, data, progress=False)
        try:
            accuracy = {"data": q["eval_spec"] or q["calibration_spec"], "dense": evaluator.float_metrics,
                        "pruned": evaluator.evaluate(model, desc="evaluating pruned")}
        finally:
            evaluator.close()
    before["file_bytes"] = size_before
    options = {"sparsity": p["prune_sparsity"], "mode": p["prune_mode"], "score": p["prune_score"],
               "reconstruct": p["prune_reconstruct"], "storage": p["prune_storage"], "target": p.get("prune_target"),
               "round_to": p.get("prune_round_to"),
               "calibration": q["calibration_spec"], "eval": q["eval_spec"]}
    return {"pipeline": text, "pruning": rep, "before": before, "after": after, "accuracy": accuracy,
            "options": options, "warnings": list(ctx.warnings), "report_path": p["prune_report"]}


def _prune_finish(pr: Dict[str, Any], size_after: int) -> None:
    """Print the pruning summary and write the report (the output file is written)."""
    from .prune.report import build_report, format_summary, write_report

    pr["after"]["file_bytes"] = size_after
    report = build_report(pr["pruning"], before=pr["before"], after=pr["after"], accuracy=pr["accuracy"],
                          options=pr["options"], pipeline=pr["pipeline"], warnings=pr["warnings"])
    click.echo(format_summary(report), err=True)
    if pr["report_path"]:
        write_report(pr["report_path"], report)


_QUANT_FLAGS = {"quant_mode": "--quantize", "calibration_spec": "--calibration", "calibration_method": "--calibration-method",
                "calibration_samples": "--calibration-samples", "per_tensor": "--per-tensor", "equalize": "--equalize",
                "bias_correction": "--bias-correction", "max_drop": "--max-drop", "metric": "--metric",
                "eval_spec": "--eval", "time_budget": "--time-budget", "sensitivity": "--sensitivity",
                "quant_report": "--quant-report", "reduce_range": "--reduce-range"}
_QUANT_KEYS = tuple(_QUANT_FLAGS)
_QUANT_CLEANUP = "repeat{max-iters=4}(cse,dce)"


def _compile_quantized(state: _State, model_path: str, output: str, target: str, ort_contrib_ops: bool,
                       input_shape: Tuple[str, ...], kw: Dict[str, Any], q: Dict[str, Any],
                       prune: Optional[Dict[str, Any]] = None) -> None:
    """`compile --quantize`: -O preset (or --passes), quantization (with the --max-drop search), clean-up, lowering."""
    from .backends.onnx_export import save_model
    from .errors import CalibrationError
    from .frontend.onnx_import import load_model
    from .ir.verifier import verify
    from .passes.quantize import initializer_bytes
    from .quant.accuracy import QuantConfig, quantize_model
    from .quant.data import load_calibration
    from .quant.host import x86_without_vnni
    from .quant.report import build_report, format_summary, write_report
    from .shapes_pin import parse_shape_spec, pin_input_shapes

    mode = q["quant_mode"]
    reduce_range = q["reduce_range"] == "on" or (q["reduce_range"] == "auto" and target == "onnx" and x86_without_vnni())
    cfg = QuantConfig(mode=mode, method=q["calibration_method"], per_channel=not q["per_tensor"],
                      equalize=q["equalize"], bias_correction=q["bias_correction"], reduce_range=reduce_range)
    if cfg.static and q["calibration_spec"] is None:
        raise CalibrationError(f"--quantize {mode} needs calibration data: pass --calibration FILE "
                               f"(.npz keyed by input name) or --calibration synthetic (random inputs, smoke tests only)")
    if not cfg.static and (q["calibration_method"] != "minmax" or q["equalize"] or q["bias_correction"]):
        raise click.UsageError(f"--calibration-method, --equalize and --bias-correction apply to --quantize int8/uint8, "
                               f"not {mode}")
    shapes = dict(parse_shape_spec(s) for s in input_shape)
    state.load_passes()
    model = load_model(model_path)
    nodes_before, size_before = _count_nodes(model), _disk_size(model_path, model)
    if shapes:
        pin_input_shapes(model, shapes)
    target_info = {"name": target, "contrib_ops": ort_contrib_ops}
    pre = _run_pipeline(state, model, kw, default_level=DEFAULT_OPT_LEVEL, resources={"target": target_info})
    pruned = _prune(state, model, kw, prune, q, size_before, target_info, sparse_in_pass=False) if prune else None
    shown: List[str] = []

    def warn(text: str, loud: bool = False) -> None:
        line = _one_line(text)
        if any(line in s or s in line for s in shown):
            return
        shown.append(line)
        click.echo(f"edgec: {'WARNING' if loud else 'warning'}: {line}", err=True)

    cal = ev = None
    if q["calibration_spec"] is not None:
        cal = load_calibration(q["calibration_spec"], model, max_samples=q["calibration_samples"])
        for w in cal.warnings:
            warn(w, loud=cal.synthetic)
    if q["eval_spec"] is not None:
        ev = load_calibration(q["eval_spec"], model)
        for w in ev.warnings:
            warn("--eval: " + w, loud=ev.synthetic)

    def runner(m: Any, text: str, resources: Dict[str, Any], first: bool) -> Dict[str, Any]:
        ctx = PassContext(resources=dict(resources))
        if first:
            _run_pipeline(state, m, dict(kw, opt_level=None, passes_text=text, disable_pass=()), default_level=None,
                          ctx=ctx)
        else:
            from .passmanager import parse_pipeline as _parse

            with using_registry(state.registry):
                PassManager.with_options(_parse(text, state.registry), PassManagerOptions(verify_each=False),
                                         ctx=ctx).run(m)
        return {"reports": ctx.reports, "warnings": list(ctx.warnings)}

    weights_float = initializer_bytes(model)
    result = quantize_model(model, cfg, calibration=cal, eval_data=ev, max_drop=q["max_drop"], metric=q["metric"],
                            time_budget=q["time_budget"], sensitivity=q["sensitivity"],
                            resources={"target": target_info}, runner=runner)
    model = result.model
    for w in result.warnings:
        warn(w)
    finish = _QUANT_CLEANUP + "," + ("lower-onnx{contrib-ops=true}" if ort_contrib_ops else "lower-onnx")
    _run_pipeline(state, model, kw, default_level=None, finish=finish, flags=False, resources={"target": target_info})
    if pruned is not None and prune["prune_storage"] == "sparse":
        from .prune.sparse_storage import sparsify_initializers

        sparsify_initializers(model)  # after quantizing: only where the sparse form is smaller
    verify(model)
    # No value_info: runtimes infer it again, it is 5% of a small int8 file, and with it onnxruntime
    # fuses Add + LayerNormalization into SkipLayerNormalization, ~6x slower on CPU (MiniLM int8: +9%).
    # Compact: no attributes that restate their default (group=1, strides 1, ...), no made-up Q/DQ
    # node names: 1.5% of a small int8 file.
    save_model(model, output, value_info=False, compact=True)
    nodes_after, size_after = _count_nodes(model), _written_size(output)
    if pruned is not None:
        _prune_finish(pruned, size_after)
    pipeline_text = ",".join(t for t in (str(pre), pruned["pipeline"] if pruned else "", result.pipeline, finish) if t)
    options = {"quantize": mode, "calibration": q["calibration_spec"], "calibration_method": q["calibration_method"],
               "calibration_samples": q["calibration_samples"], "per_channel": not q["per_tensor"],
               "equalize": q["equalize"], "bias_correction": q["bias_correction"], "max_drop": q["max_drop"],
               "metric": q["metric"], "eval": q["eval_spec"], "time_budget": q["time_budget"]}
    report = build_report(result, mode=mode, options=options, calibration=cal, eval_data=ev, pipeline=pipeline_text,
                          weight_bytes={"float": weights_float, "quantized": initializer_bytes(model)},
                          file_bytes={"float": size_before, "quantized": size_after}, warnings=shown)
    summary = format_summary(report)
    if summary:
        click.echo(summary, err=True)
    if q["quant_report"]:
        write_report(q["quant_report"], report)
    click.echo(f"edgec: {model_path} -> {output}: {nodes_before} -> {nodes_after} nodes, "
               f"{human_bytes(size_before)} -> {human_bytes(size_after)} (pipeline: {pipeline_text or '(none)'})")


@cli.command("opt")
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", default=None, metavar="OUT",
              help="Output: .onnx writes ONNX, anything else IR text; default: IR text to stdout.")
@pipeline_flags
@click.pass_obj
def opt_cmd(state: _State, input_path: str, output: Optional[str], **kw: Any) -> None:
    """Run passes on IR text (or ONNX) INPUT, like mlir-opt ('-' reads stdin). Runs nothing by default."""
    state.load_passes()
    model = _read_input(input_path)
    # ONNX output must run in onnxruntime: fused edgec ops are lowered, as `compile` does.
    finish = "lower-onnx" if output and output.lower().endswith(".onnx") else ""
    _run_pipeline(state, model, kw, default_level=None, finish=finish)
    if not kw["verify_each"]:
        from .ir.verifier import verify

        verify(model)
    _write_output(model, output)


@cli.command("inspect")
@click.argument("model_path", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--input-shape", multiple=True, metavar="NAME=1x3x224x224",
              help="Pin the shape of a graph input before counting (repeatable).")
@click.option("--dim", "dims", multiple=True, metavar="SYMBOL=N",
              help="Give a symbolic dim a value for the MAC count, e.g. --dim batch=1 (repeatable).")
@click.pass_obj
def inspect_cmd(state: _State, model_path: str, as_json: bool, input_shape: Tuple[str, ...], dims: Tuple[str, ...]) -> None:
    """Print statistics of a model (ONNX or IR text): ops, parameters, MACs, inputs and outputs."""
    from .inspect import format_stats, model_stats
    from .ir.shapes import infer_shapes
    from .shapes_pin import parse_shape_spec, pin_input_shapes

    model = _read_input(model_path)
    if input_shape:
        pin_input_shapes(model, dict(parse_shape_spec(s) for s in input_shape))
    infer_shapes(model)  # MACs need shapes; declared types are refined, never overwritten
    stats = model_stats(model, dims=dict(_parse_dim(d) for d in dims) or None)
    if as_json:
        click.echo(json.dumps(stats, indent=2, sort_keys=True, default=str))
    else:
        text = format_stats(stats)
        click.echo(text, nl=not text.endswith("\n"))


def _parse_dim(text: str) -> Tuple[str, int]:
    name, sep, value = text.rpartition("=")
    if not sep or not name or not value.isdigit():
        raise click.BadParameter(f"expected SYMBOL=N, got '{text}'", param_hint="--dim")
    return name, int(value)


@cli.command("passes")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_obj
def passes_cmd(state: _State, as_json: bool) -> None:
    """List every registered pass: summary, opt level, provider and options."""
    rows = []
    for info in state.registry.infos():
        rows.append({
            "name": info.name,
            "summary": info.cls.summary(),
            "opt_level": info.cls.opt_level,
            "idempotent": info.cls.idempotent,
            "provider": info.provider.kind,
            "provided_by": info.describe(),
            "options": [{"name": o.name, "type": o.type_name, "default": o.default} for o in info.cls.options()],
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        click.echo(f"{r['name']}  -O{r['opt_level']}  [{r['provided_by']}]")
        click.echo(f"    {r['summary']}")
        for o in r["options"]:
            default = o["default"]
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            if isinstance(default, bool):
                shown = "true" if default else "false"
            click.echo(f"    {o['name']}: {o['type']} = {shown}")


if __name__ == "__main__":  # pragma: no cover
    main()
