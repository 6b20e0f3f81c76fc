"""The Pass API, registry, pass manager, instruments, presets and the built-in dce / toposort passes."""

from __future__ import annotations

import io
import os
from typing import Literal

import pytest

from edgec.errors import PassFailure, PipelineError, PluginError, VerificationError
from edgec.ir import Model
from edgec.ir.parser import parse_model
from edgec.ir.printer import print_model
from edgec.passmanager import (
    PRESETS, CrashReproducer, DumpDir, Pass, PassContext, PassManager, PassManagerOptions, PassRegistry,
    PrintIR, Provider, Statistics, Timing, VerifyEach, function_pass, get_registry, parse_pipeline,
    preset_pipeline, register_pass, using_registry,
)

REG: PassRegistry = get_registry().copy()

SIMPLE = """
model opset(ai.onnx=21) {
  graph @main(%x: tensor<1x4xf32>) -> (%a) {
    %w = const dense<2x2xf32 [1.0, 1.0, 1.0, 1.0]>
    %a = onnx.Relu(%x)
    %dead = onnx.Neg(%x)
    %dead2 = onnx.Abs(%dead)
    return %a
  }
}
"""


def norm(text: str) -> str:
    return print_model(parse_model(text))


# --- test passes (in a private registry) ----------------------------------------------------------

@register_pass(registry=REG)
class CountDown(Pass):
    """Decrement the model's metadata counter `n` while it is positive."""

    name = "count-down"
    opt_level = 3
    idempotent = False

    def run(self, model: Model, ctx: PassContext) -> bool:
        n = int(model.metadata_props.get("n", "0"))
        if n <= 0:
            return False
        model.metadata_props["n"] = str(n - 1)
        ctx.stat("decrements")
        return True


@register_pass(registry=REG)
class Rename(Pass):
    """Append a suffix to every node name."""

    name = "rename"
    suffix: str = "_r"

    def run(self, model: Model, ctx: PassContext) -> bool:
        for node in model.graph:
            node.name += self.suffix
            ctx.stat("renamed")
        return True


@register_pass(registry=REG)
class Reverse(Pass):
    """Reverse the node order of the main graph (breaks topological order)."""

    name = "reverse"

    def run(self, model: Model, ctx: PassContext) -> bool:
        model.graph.set_nodes(list(reversed(model.graph.nodes)))
        return True


@register_pass(registry=REG)
class Explode(Pass):
    """Raise on the first node."""

    name = "explode"

    def run(self, model: Model, ctx: PassContext) -> bool:
        for node in model.graph:
            raise ValueError("boom\nsecond line")
        return False


@function_pass("tag", opt_level=1, registry=REG)
def tag_model(model: Model, ctx: PassContext, *, key: str = "k", value: int = 1,
              mode: Literal["set", "keep"] = "set") -> bool:
    """Set a metadata property.

    More text.
    """
    if mode == "keep" and key in model.metadata_props:
        return False
    model.metadata_props[key] = str(value)
    return True


def run(text: str, model: Model, *instruments, verify: bool = True) -> PassManager:
    insts = ([VerifyEach()] if verify else []) + list(instruments)
    pm = PassManager(parse_pipeline(text, REG), instruments=insts)
    pm.run(model)
    return pm


# --- Pass API ---------------------------------------------------------------------------------

def test_pass_metadata_and_options() -> None:
    assert CountDown.summary() == "Decrement the model's metadata counter `n` while it is positive."
    assert (CountDown.opt_level, CountDown.idempotent) == (3, False)
    assert [(o.name, o.type_name, o.default) for o in Rename.options()] == [("suffix", "str", "_r")]
    assert str(Rename()) == "rename" and str(Rename(suffix="x")) == "rename{suffix=x}"
    assert Rename(suffix="x") == Rename(suffix="x") != Rename()


def test_function_pass() -> None:
    info = REG.get("tag")
    assert info.cls.summary() == "Set a metadata property."
    assert [(o.name, o.type_name) for o in info.cls.options()] == [("key", "str"), ("value", "int"), ("mode", "{set,keep}")]
    m = parse_model(SIMPLE)
    run("tag{key=a,value=7}", m)
    assert m.metadata_props["a"] == "7"
    assert str(parse_pipeline("tag{mode=keep}", REG)) == "tag{mode=keep}"


def test_bad_pass_declarations() -> None:
    reg = PassRegistry(load_entry_points=False)
    with pytest.raises(PluginError, match="invalid name"):
        @register_pass(registry=reg)
        class NoName(Pass):
            """x"""
    with pytest.raises(PluginError, match="invalid name 'repeat'"):
        register_pass(type("R", (Pass,), {"name": "repeat"}), registry=reg)
    with pytest.raises(PluginError, match="needs a default"):
        @register_pass(registry=reg)
        class NoDefault(Pass):
            """x"""
            name = "no-default"
            bits: int
    with pytest.raises(PluginError, match="unsupported option type"):
        @register_pass(registry=reg)
        class BadType(Pass):
            """x"""
            name = "bad-type"
            d: dict = None  # type: ignore[assignment]


# --- registry ---------------------------------------------------------------------------------

def test_builtins_come_from_the_entry_point() -> None:
    reg = PassRegistry()
    info = reg.get("dce")
    assert info.provider == Provider("builtin", "edgec")
    assert info.describe() == "edgec (edgec.passes.dce)"
    assert {"dce", "toposort"} <= set(reg.names())


def test_duplicate_name_names_both_providers() -> None:
    reg = PassRegistry()
    reg.ensure_loaded()
    dup = type("Dup", (Pass,), {"name": "dce", "__doc__": "x", "__module__": "my_plugin.passes"})
    with pytest.raises(PluginError, match=r"pass 'dce' is registered twice: by edgec \(edgec.passes.dce\) "
                                          r"and by plugin my_plugin \(my_plugin.passes\)"):
        register_pass(dup, registry=reg)


def test_using_registry_scopes_registration() -> None:
    reg = PassRegistry(load_entry_points=False)
    with using_registry(reg):
        @register_pass
        class Scoped(Pass):
            """x"""
            name = "scoped-test-pass"
    assert "scoped-test-pass" in reg.names()
    assert "scoped-test-pass" not in get_registry().names()


def test_plugin_file_that_fails_to_import(tmp_path) -> None:
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("import no_such_module_xyz\n")
    with pytest.raises(PluginError, match=r"pass plugin .*broken_plugin.py failed to load: ModuleNotFoundError"):
        PassRegistry().load_file(str(bad))
    with pytest.raises(PluginError, match="not found"):
        PassRegistry().load_file(str(tmp_path / "missing.py"))


def test_plugin_api_version_is_checked(tmp_path) -> None:
    future = tmp_path / "future_plugin.py"
    future.write_text("EDGEC_PLUGIN_API = 99\n")
    with pytest.raises(PluginError, match="future_plugin.py needs edgec plugin API 99, this edgec has 1"):
        PassRegistry().load_file(str(future))


def test_register_function_of_a_plugin_file(tmp_path) -> None:
    plugin = tmp_path / "reg_plugin.py"
    plugin.write_text(
        "from edgec.passmanager import Pass\n"
        "class P(Pass):\n"
        "    '''Registered by a function.'''\n"
        "    name = 'by-function'\n"
        "def register(registry):\n"
        "    registry.register(P)\n")
    reg = PassRegistry()
    reg.load_file(str(plugin))
    assert reg.get("by-function").describe() == "plugin reg_plugin (reg_plugin.py)"


# --- presets ----------------------------------------------------------------------------------

def test_presets_parse_and_respect_opt_levels() -> None:
    assert str(preset_pipeline(0)) == ""
    o1 = [p.name for p in preset_pipeline(1).passes()]
    assert "fold-constants" in o1 and "dce" in o1 and not any(n.startswith("fuse-") for n in o1)
    assert any(p.name == "fuse-batchnorm" for p in preset_pipeline(2).passes())
    for level, text in PRESETS.items():
        for p in parse_pipeline(text).passes():
            assert p.opt_level <= level, f"-O{level} holds {p.name} (opt_level {p.opt_level})"
    with pytest.raises(PipelineError, match="-O7"):
        preset_pipeline(7)


# --- manager ----------------------------------------------------------------------------------

def test_manager_runs_and_reports_change() -> None:
    m = parse_model(SIMPLE)
    pm = run("dce,toposort", m)
    assert print_model(m) == norm("""
        model opset(ai.onnx=21) {
          graph @main(%x: tensor<1x4xf32>) -> (%a) {
            %a = onnx.Relu(%x)
            return %a
          }
        }""")
    assert pm.ctx.stats == {"dce": {"nodes-removed": 2, "initializers-removed": 1}}
    assert PassManager(parse_pipeline("dce", REG)).run(m) is False


def test_fixed_point_stops_when_nothing_changes() -> None:
    m = parse_model(SIMPLE)
    m.metadata_props["n"] = "3"
    pm = run("repeat(count-down,dce)", m)
    assert m.metadata_props["n"] == "0"
    assert pm.ctx.stats["count-down"] == {"decrements": 3}
    assert pm.ctx.warnings == []


def test_fixed_point_cap_is_a_warning() -> None:
    m = parse_model(SIMPLE)
    m.metadata_props["n"] = "100"
    pm = run("repeat{max-iters=4}(count-down)", m)
    assert m.metadata_props["n"] == "96"
    assert pm.ctx.warnings == ["repeat{max-iters=4}(count-down) did not reach a fixed point within 4 iterations"]


def test_verifier_names_the_pass_that_broke_the_ir() -> None:
    m = parse_model(SIMPLE)
    with pytest.raises(PassFailure, match=r"^pass 'reverse' broke the IR: .*used before it is defined"):
        run("rename,reverse,dce", m)
    m = parse_model(SIMPLE)
    run("reverse,toposort", m, verify=False)  # without verification the broken state passes


def test_broken_input_is_not_blamed_on_a_pass() -> None:
    m = parse_model(SIMPLE)
    m.graph.set_nodes(list(reversed(m.graph.nodes)))
    with pytest.raises(VerificationError, match="input IR is invalid"):
        run("dce", m)


def test_exception_becomes_one_line_pass_failure_naming_node() -> None:
    m = parse_model(SIMPLE)
    with pytest.raises(PassFailure) as e:
        run("dce,explode", m)
    assert str(e.value) == "pass 'explode' failed on node 'Relu' (onnx::Relu): ValueError: boom"


class Recorder:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def __call__(self) -> io.StringIO:
        return self.stream


def test_print_ir_before_after_and_headers() -> None:
    rec = Recorder()
    m = parse_model(SIMPLE)
    run("dce,toposort", m, PrintIR(before=["dce"], after_all=True, stream=rec))
    out = rec.stream.getvalue()
    assert out.count("// ----- IR Dump Before dce ----- //") == 1
    assert "// ----- IR Dump After dce (changed) ----- //\n// pipeline: dce,toposort\n" in out
    assert "// ----- IR Dump After toposort (unchanged) ----- //" in out
    assert "Before toposort" not in out


def test_print_ir_after_change_only() -> None:
    rec = Recorder()
    run("dce,toposort,dce", parse_model(SIMPLE), PrintIR(after_change=True, stream=rec))
    out = rec.stream.getvalue()
    assert out.count("IR Dump After") == 1 and "After dce (changed)" in out


def test_print_elides_large_tensors() -> None:
    rec = Recorder()
    run("rename", parse_model(SIMPLE), PrintIR(after_all=True, elide_limit=2, stream=rec))
    assert "1.0, 1.0, 1.0, 1.0" not in rec.stream.getvalue()
    rec = Recorder()
    run("rename", parse_model(SIMPLE), PrintIR(after_all=True, elide_limit=None, stream=rec))
    assert "1.0, 1.0, 1.0, 1.0" in rec.stream.getvalue()


def test_dump_dir_numbered_files_parse_back(tmp_path) -> None:
    m = parse_model(SIMPLE)
    m.metadata_props["n"] = "1"
    run("dce,repeat(count-down)", m, DumpDir(str(tmp_path)))
    files = sorted(os.listdir(tmp_path))
    assert files == ["000-input.ir", "001-after-dce.ir", "002-after-count-down.ir", "003-after-count-down.ir"]
    text = (tmp_path / "001-after-dce.ir").read_text()
    assert text.startswith("// ----- IR Dump After dce (changed) ----- //\n// pipeline: dce,repeat(count-down)\n")
    assert print_model(parse_model(text)) == norm("""
        model opset(ai.onnx=21) #{meta={"n": "1"}} {
          graph @main(%x: tensor<1x4xf32>) -> (%a) { %a = onnx.Relu(%x) return %a }
        }""")


def test_timing_and_statistics_tables() -> None:
    t, s = Timing(stream=Recorder()), Statistics(stream=Recorder())
    run("rename,dce,rename{suffix=_s}", parse_model(SIMPLE), s, t)
    timing = t.stream().getvalue()
    assert "Pass execution timing report" in timing
    assert [line.split()[-1] for line in timing.splitlines()[3:5]] and "   2  rename" in timing
    assert "total (passes)" in timing and "total (pipeline" in timing
    stats = s.stream().getvalue()
    assert "rename\n  renamed  4\n" in stats  # 3 nodes, then 1 after dce
    assert "dce\n  nodes-removed         2\n  initializers-removed  1\n" in stats


def test_crash_reproducer_on_exception(tmp_path) -> None:
    m = parse_model(SIMPLE)
    repro = tmp_path / "repro"
    with pytest.raises(PassFailure, match=rf"pass 'explode' failed on node .*; reproducer written to {repro}"):
        run("dce,rename,explode,toposort", m, CrashReproducer(str(repro), group_flags=["--load-pass-plugin", "p.py"]))
    assert sorted(os.listdir(repro)) == ["README", "input.ir", "pipeline.txt", "run.sh"]
    assert (repro / "pipeline.txt").read_text() == "explode,toposort\n"
    # input.ir is what explode got: after dce and rename
    got = parse_model((repro / "input.ir").read_text())
    assert [n.name for n in got.graph] == ["Relu_r"]
    assert "edgec --load-pass-plugin p.py opt input.ir --passes explode,toposort" in (repro / "run.sh").read_text()


def test_crash_reproducer_on_broken_ir_inside_repeat(tmp_path) -> None:
    repro = tmp_path / "r"
    with pytest.raises(PassFailure, match="pass 'reverse' broke the IR"):
        run("repeat(rename,reverse,dce),toposort", parse_model(SIMPLE), CrashReproducer(str(repro)))
    assert (repro / "pipeline.txt").read_text() == "reverse,dce,toposort\n"
    assert "'reverse' broke the IR" in (repro / "README").read_text()


def test_options_struct_builds_instruments(tmp_path) -> None:
    kinds = [type(i).__name__ for i in PassManagerOptions(
        print_ir_after_all=True, ir_dump_dir=str(tmp_path), timing=True, pass_statistics=True,
        crash_reproducer=str(tmp_path)).instruments()]
    assert kinds == ["VerifyEach", "CrashReproducer", "PrintIR", "DumpDir", "Statistics", "Timing"]
    assert PassManagerOptions(verify_each=False).instruments() == []


# --- dce ----------------------------------------------------------------------------------------

def test_dce_keeps_outputs_and_inputs_and_recurses_into_subgraphs() -> None:
    m = parse_model("""
    model opset(ai.onnx=21) {
      graph @main(%x: tensor<2xf32>, %c: tensor<bool>, %unused: tensor<2xf32>) -> (%y, %z) {
        %w = const dense<2xf32 [1.0, 2.0]>
        %v = const dense<2xf32 [3.0, 4.0]>
        %outer = onnx.Neg(%x)
        %r = onnx.RandomNormal() {shape=[2]}
        %z = onnx.Add(%x, %w)
        %y = onnx.If(%c) {else_branch=graph @else_g() -> (%e_out) {
          %e_out = onnx.Identity(%x)
          return %e_out
        }, then_branch=graph @then_g() -> (%t_out) {
          %t_dead = onnx.Abs(%outer)
          %t_out = onnx.Relu(%x)
          return %t_out
        }}
        return %y, %z
      }
    }""")
    pm = run("dce", m)
    assert print_model(m) == norm("""
    model opset(ai.onnx=21) {
      graph @main(%x: tensor<2xf32>, %c: tensor<bool>, %unused: tensor<2xf32>) -> (%y, %z) {
        %w = const dense<2xf32 [1.0, 2.0]>
        %z = onnx.Add(%x, %w)
        %y = onnx.If(%c) {else_branch=graph @else_g() -> (%e_out) {
          %e_out = onnx.Identity(%x)
          return %e_out
        }, then_branch=graph @then_g() -> (%t_out) {
          %t_out = onnx.Relu(%x)
          return %t_out
        }}
        return %y, %z
      }
    }""")
    assert pm.ctx.stats["dce"] == {"nodes-removed": 3, "initializers-removed": 1}


def test_dce_removes_a_whole_dead_if_and_what_only_it_used() -> None:
    m = parse_model("""
    model opset(ai.onnx=21) {
      graph @main(%x: tensor<2xf32>, %c: tensor<bool>) -> (%x2) {
        %outer = onnx.Neg(%x)
        %x2 = onnx.Relu(%x)
        %y = onnx.If(%c) {else_branch=graph @else_g() -> (%e_out) {
          %e_out = onnx.Identity(%outer)
          return %e_out
        }, then_branch=graph @then_g() -> (%t_out) {
          %t_out = onnx.Abs(%outer)
          return %t_out
        }}
        return %x2
      }
    }""")
    run("dce", m)
    assert [n.op_type for n in m.graph] == ["Relu"]


def test_dce_on_unsorted_graph_and_idempotence() -> None:
    m = parse_model("""
    model opset(ai.onnx=21) {
      graph @main(%x: tensor<2xf32>) -> (%b) {
        %d2 = onnx.Abs(%d1)
        %b = onnx.Relu(%x)
        %d1 = onnx.Neg(%x)
        return %b
      }
    }""")
    PassManager(parse_pipeline("dce", REG)).run(m)
    assert [n.op_type for n in m.graph] == ["Relu"]
    assert PassManager(parse_pipeline("dce", REG)).run(m) is False


# --- toposort ---------------------------------------------------------------------------------

def test_toposort_is_stable_and_fixes_order() -> None:
    m = parse_model("""
    model opset(ai.onnx=21) {
      graph @main(%x: tensor<2xf32>) -> (%c, %e) {
        %e = onnx.Exp(%x)
        %c = onnx.Relu(%b)
        %b = onnx.Neg(%a)
        %a = onnx.Abs(%x)
        return %c, %e
      }
    }""")
    pm = run("toposort", m, verify=False)
    assert [n.op_type for n in m.graph] == ["Exp", "Abs", "Neg", "Relu"]
    assert pm.ctx.stats["toposort"] == {"graphs-reordered": 1}
    assert PassManager(parse_pipeline("toposort", REG)).run(m) is False
