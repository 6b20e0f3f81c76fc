"""The edgec command line: compile, opt, inspect, passes; errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.cli import cli
from edgec.ir.parser import parse_model

BIN = os.path.dirname(sys.executable)

SIMPLE_IR = """model opset(ai.onnx=21) {
  graph @main(%x: tensor<1x4xf32>) -> (%a) {
    %w = const dense<2x2xf32 [1.0, 1.0, 1.0, 1.0]>
    %a = onnx.Relu(%x)
    %dead = onnx.Neg(%x)
    %dead2 = onnx.Abs(%dead)
    return %a
  }
}
"""

PLUGIN = '''
from edgec.passmanager import Pass, register_pass

@register_pass
class Explode(Pass):
    """Fail on the first node."""
    name = "explode"
    def run(self, model, ctx):
        for node in model.graph:
            raise RuntimeError("kaboom")
        return False

@register_pass
class Forever(Pass):
    """Always report a change."""
    name = "forever"
    def run(self, model, ctx):
        return True
'''


def make_onnx(path) -> str:
    """x[N,3] -> Relu -> y, plus a dead Neg->Abs chain and an unused initializer."""
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
        helper.make_node("Neg", ["x"], ["d1"], name="neg"),
        helper.make_node("Abs", ["d1"], ["d2"], name="abs"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.zeros((4, 4), np.float32), "unused_w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return str(path)


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture
def model_path(tmp_path) -> str:
    return make_onnx(tmp_path / "m.onnx")


@pytest.fixture
def ir_path(tmp_path) -> str:
    p = tmp_path / "in.ir"
    p.write_text(SIMPLE_IR)
    return str(p)


@pytest.fixture
def plugin_path(tmp_path) -> str:
    p = tmp_path / "test_plugin.py"
    p.write_text(PLUGIN)
    return str(p)


# --- compile ------------------------------------------------------------------------------------

def test_compile_default_O2(model_path, tmp_path) -> None:
    out = tmp_path / "out.onnx"
    r = invoke("compile", model_path, "-o", out)
    assert r.exit_code == 0, r.output
    assert "3 -> 1 nodes" in r.stdout and "pipeline: infer-shapes," in r.stdout
    m = onnx.load(str(out))
    assert [n.op_type for n in m.graph.node] == ["Relu"] and not m.graph.initializer


def test_compile_O0_keeps_everything(model_path, tmp_path) -> None:
    out = tmp_path / "out.onnx"
    r = invoke("compile", model_path, "-o", out, "-O0")
    assert r.exit_code == 0, r.output
    assert len(onnx.load(str(out)).graph.node) == 3


def test_compile_input_shape(model_path, tmp_path) -> None:
    out = tmp_path / "out.onnx"
    r = invoke("compile", model_path, "-o", out, "--input-shape", "x=8x3")
    assert r.exit_code == 0, r.output
    g = onnx.load(str(out)).graph
    assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim] == [8, 3]
    assert [d.dim_value for d in g.output[0].type.tensor_type.shape.dim] == [8, 3]  # symbol N pinned everywhere


@pytest.mark.parametrize("spec, message", [
    ("nope=1x3", "the model has no input 'nope' (its inputs: x)"),
    ("x=1x3x3", "input 'x' has rank 2, the given shape 1x3x3 has rank 3"),
    ("x=1x4", "input 'x' dim 1 is 3, not 4"),
    ("x=1xa", "dim 'a' is not a non-negative integer"),
    ("x1x3", "expected NAME=D1xD2x..."),
])
def test_compile_input_shape_errors(model_path, tmp_path, spec, message) -> None:
    out = tmp_path / "out.onnx"
    r = invoke("compile", model_path, "-o", out, "--input-shape", spec)
    assert r.exit_code == 2
    assert message in r.stderr and r.stderr.startswith("edgec: error: --input-shape")
    assert not out.exists()


def test_compile_pipeline_error_leaves_no_output(model_path, tmp_path) -> None:
    out = tmp_path / "out.onnx"
    r = invoke("compile", model_path, "-o", out, "--passes", "dce,toposrt")
    assert r.exit_code == 2
    assert r.stderr == "edgec: error: unknown pass 'toposrt' at column 5 (did you mean: toposort?)\n"
    assert not out.exists() and os.listdir(tmp_path) == ["m.onnx"]


def test_compile_disable_pass(model_path, tmp_path) -> None:
    out = tmp_path / "out.onnx"
    r = invoke("compile", model_path, "-o", out, "--disable-pass", "dce")
    assert r.exit_code == 0 and "dce" not in r.stdout.split("pipeline:")[1] and "toposort" in r.stdout
    r = invoke("compile", model_path, "-o", out, "--disable-pass", "dcx")
    assert r.exit_code == 2 and "--disable-pass: unknown pass 'dcx' (did you mean: dce?)" in r.stderr


def test_compile_missing_model(tmp_path) -> None:
    r = invoke("compile", tmp_path / "none.onnx", "-o", tmp_path / "o.onnx")
    assert r.exit_code == 2 and r.stderr.startswith("edgec: error:") and "Traceback" not in r.output


# --- opt ----------------------------------------------------------------------------------------

def test_opt_ir_to_stdout_and_O_with_passes(ir_path) -> None:
    r = invoke("opt", ir_path, "-O1", "--passes", "toposort")
    assert r.exit_code == 0, r.output
    m = parse_model(r.stdout)
    assert [n.op_type for n in m.graph] == ["Relu"]


def test_opt_runs_nothing_by_default_and_reads_stdin() -> None:
    r = invoke("opt", "-", input=SIMPLE_IR)
    assert r.exit_code == 0, r.output
    assert len(parse_model(r.stdout).graph) == 3


def test_opt_outputs_by_extension(ir_path, model_path, tmp_path) -> None:
    r = invoke("opt", ir_path, "--passes", "dce", "-o", tmp_path / "o.onnx")
    assert r.exit_code == 0, r.output
    assert [n.op_type for n in onnx.load(str(tmp_path / "o.onnx")).graph.node] == ["Relu"]
    r = invoke("opt", model_path, "--passes", "dce", "-o", tmp_path / "o.ir")
    assert r.exit_code == 0, r.output
    assert len(parse_model((tmp_path / "o.ir").read_text()).graph) == 1


def test_opt_debug_flags(ir_path, tmp_path) -> None:
    dump = tmp_path / "dumps"
    r = invoke("opt", ir_path, "--passes", "dce,toposort", "--print-ir-after", "dce", "--print-ir-before-all",
               "--timing", "--pass-statistics", "--ir-dump-dir", dump, "--elide-tensors-larger", "2")
    assert r.exit_code == 0, r.output
    err = r.stderr
    assert "// ----- IR Dump After dce (changed) ----- //\n// pipeline: dce,toposort" in err
    assert "IR Dump Before dce" in err and "IR Dump Before toposort" in err and "After toposort" not in err
    assert "Pass execution timing report" in err and "nodes-removed" in err
    assert sorted(os.listdir(dump)) == ["000-input.ir", "001-after-dce.ir", "002-after-toposort.ir"]
    assert "1.0, 1.0, 1.0, 1.0" not in (dump / "000-input.ir").read_text()  # elided
    r = invoke("opt", ir_path, "--passes", "dce", "--print-ir-after", "dcx")
    assert r.exit_code == 2 and "--print-ir-after: unknown pass 'dcx'" in r.stderr


def test_opt_repeat_cap_is_a_warning(ir_path, plugin_path) -> None:
    r = invoke("--load-pass-plugin", plugin_path, "opt", ir_path, "--passes", "repeat{max-iters=3}(forever)")
    assert r.exit_code == 0
    assert "edgec: warning: repeat{max-iters=3}(forever) did not reach a fixed point within 3 iterations" in r.stderr


def test_opt_pass_failure_is_a_user_error(ir_path, plugin_path, tmp_path) -> None:
    out = tmp_path / "o.ir"
    r = invoke("--load-pass-plugin", plugin_path, "opt", ir_path, "--passes", "dce,explode", "-o", out)
    assert r.exit_code == 2
    assert r.stderr == "edgec: error: pass 'explode' failed on node 'Relu' (onnx::Relu): RuntimeError: kaboom\n"
    assert not out.exists()


# --- inspect / passes / version -----------------------------------------------------------------

def test_inspect(model_path) -> None:
    r = invoke("inspect", model_path)
    assert r.exit_code == 0, r.output and "Relu" in r.stdout
    r = invoke("inspect", model_path, "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["num_nodes"] == 3


def test_passes_lists_builtins(plugin_path) -> None:
    r = invoke("passes")
    assert r.exit_code == 0
    assert "dce  -O1  [edgec (edgec.passes.dce)]" in r.stdout
    assert "Remove nodes whose results are never used" in r.stdout
    r = invoke("--load-pass-plugin", plugin_path, "passes", "--json")
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["dce"]["provider"] == "builtin" and rows["dce"]["opt_level"] == 1
    assert rows["explode"]["provider"] == "plugin"
    assert rows["explode"]["provided_by"] == "plugin test_plugin (test_plugin.py)"


def test_version() -> None:
    r = invoke("--version")
    assert r.exit_code == 0 and edgec.__version__ in r.stdout


def test_internal_error_and_debug(monkeypatch, ir_path) -> None:
    import edgec.cli as cli_mod

    def broken(path):
        raise KeyError("oops")

    monkeypatch.setattr(cli_mod, "_read_input", broken)
    r = invoke("opt", ir_path)
    assert r.exit_code == 1
    assert r.stderr == "edgec: internal error: KeyError: 'oops' (rerun with --debug for the traceback)\n"
    r = invoke("--debug", "opt", ir_path)
    assert r.exit_code == 1 and "Traceback" in r.stderr and "edgec: internal error: KeyError" in r.stderr


# --- real processes -----------------------------------------------------------------------------

def edgec_cmd(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "edgec.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=60)


def test_subprocess_exit_codes(model_path, tmp_path) -> None:
    out = tmp_path / "out.onnx"
    p = edgec_cmd("compile", model_path, "-o", out, "--passes", "dce{bad=1}")
    assert p.returncode == 2
    assert p.stderr == "edgec: error: pass 'dce' has no option 'bad' (its options: none) (at column 1)\n"
    assert not out.exists()
    p = edgec_cmd("compile", model_path, "-o", out)
    assert p.returncode == 0 and out.exists()
    p = edgec_cmd("opt", tmp_path / "missing.ir")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_crash_reproducer_reruns_the_failure(ir_path, plugin_path, tmp_path) -> None:
    repro = tmp_path / "repro"
    p = edgec_cmd("--load-pass-plugin", plugin_path, "opt", ir_path, "--passes", "dce,explode,toposort",
                  "--crash-reproducer", repro)
    assert p.returncode == 2
    assert p.stderr.strip() == (f"edgec: error: pass 'explode' failed on node 'Relu' (onnx::Relu): "
                                f"RuntimeError: kaboom; reproducer written to {repro}")
    assert (repro / "pipeline.txt").read_text() == "explode,toposort\n"
    run_sh = (repro / "run.sh").read_text()
    assert f"edgec --load-pass-plugin {plugin_path} opt input.ir --passes explode,toposort" in run_sh
    assert len(parse_model((repro / "input.ir").read_text()).graph) == 1  # what explode got (after dce)
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    again = subprocess.run(["sh", str(repro / "run.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 2
    assert again.stderr == "edgec: error: pass 'explode' failed on node 'Relu' (onnx::Relu): RuntimeError: kaboom\n"
