"""Plugins: the sample package installed through its entry point, --load-pass-plugin files,
duplicate names and plugins that fail to import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "samples", "plugin_example")

IR = """model opset(ai.onnx=21) #{doc="the model"} {
  graph @main(%x: tensor<2xf32>) -> (%y) #{doc="the graph"} {
    %y = onnx.Relu(%x) #{doc="a node"}
    %d = onnx.Neg(%x)
    return %y
  }
}
"""


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def edgec_in_process(*args) -> _Result:
    """Run the CLI in this process (fast; for plugins that need no installation)."""
    from click.testing import CliRunner

    from edgec.cli import cli

    r = CliRunner().invoke(cli, [str(a) for a in args])
    return _Result(r.exit_code, r.stdout, r.stderr)


def edgec(*args, env=None, cwd=None):
    """Run the CLI in a subprocess (needed for plugins installed into a directory on PYTHONPATH)."""
    if env is None and cwd is None:
        return edgec_in_process(*args)
    return subprocess.run([sys.executable, "-m", "edgec.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """The sample plugin installed into a private directory (a copy, so the checkout stays clean)."""
    base = tmp_path_factory.mktemp("plugin")
    src, target = base / "src", base / "site"
    shutil.copytree(SAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(target) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture
def ir_file(tmp_path):
    p = tmp_path / "m.ir"
    p.write_text(IR)
    return p


def test_installed_plugin_is_listed(plugin_env) -> None:
    p = edgec("passes", "--json", env=plugin_env)
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    row = rows["strip-doc-strings"]
    assert row["provider"] == "plugin"
    assert row["provided_by"] == "plugin edgec-example-plugin (edgec_example_plugin.strip_doc_strings)"
    assert row["summary"].startswith("Remove doc strings")
    assert row["options"] == [{"name": "keep-model-doc", "type": "bool", "default": False}]
    assert rows["dce"]["provider"] == "builtin"


def test_installed_plugin_runs_in_a_pipeline(plugin_env, ir_file) -> None:
    p = edgec("opt", ir_file, "--passes", "dce,strip-doc-strings{keep-model-doc=true}", "--pass-statistics",
              env=plugin_env)
    assert p.returncode == 0, p.stderr
    assert 'doc="the model"' in p.stdout
    assert "the graph" not in p.stdout and "a node" not in p.stdout and "Neg" not in p.stdout
    assert "doc-strings-removed  2" in p.stderr
    p = edgec("opt", ir_file, "--passes", "strip-doc-strings", env=plugin_env)
    assert p.returncode == 0 and "doc=" not in p.stdout


def test_plugin_unknown_without_install(ir_file) -> None:
    p = edgec("opt", ir_file, "--passes", "strip-doc-strings")
    assert p.returncode == 2 and "unknown pass 'strip-doc-strings'" in p.stderr


def test_load_pass_plugin_file(tmp_path, ir_file) -> None:
    plugin = tmp_path / "my_passes.py"
    plugin.write_text('''
from edgec.passmanager import function_pass

@function_pass("drop-graph-name", opt_level=3)
def drop_graph_name(model, ctx, *, new_name: str = "g") -> bool:
    """Rename the main graph."""
    changed = model.graph.name != new_name
    model.graph.name = new_name
    return changed
''')
    p = edgec("--load-pass-plugin", plugin, "opt", ir_file, "--passes", "drop-graph-name{new-name=renamed}")
    assert p.returncode == 0, p.stderr
    assert "graph @renamed(" in p.stdout
    p = edgec("--load-pass-plugin", plugin, "passes")
    assert "drop-graph-name  -O3  [plugin my_passes (my_passes.py)]" in p.stdout
    assert "new-name: str = g" in p.stdout


def test_duplicate_name_names_both_providers(tmp_path, ir_file) -> None:
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text('''
from edgec.passmanager import Pass, register_pass

@register_pass
class MyDce(Pass):
    """Another dce."""
    name = "dce"
    def run(self, model, ctx):
        return False
''')
    p = edgec("--load-pass-plugin", plugin, "opt", ir_file, "--passes", "dce")
    assert p.returncode == 2
    assert p.stderr == ("edgec: error: pass 'dce' is registered twice: by edgec (edgec.passes.dce) "
                        "and by plugin my_plugin (my_plugin.py)\n")


def test_duplicate_between_installed_plugin_and_file(plugin_env, tmp_path, ir_file) -> None:
    plugin = tmp_path / "clash.py"
    plugin.write_text('''
from edgec.passmanager import Pass, register_pass

@register_pass
class Clash(Pass):
    """Clash."""
    name = "strip-doc-strings"
''')
    p = edgec("--load-pass-plugin", plugin, "passes", env=plugin_env)
    assert p.returncode == 2
    assert ("pass 'strip-doc-strings' is registered twice: by plugin edgec-example-plugin "
            "(edgec_example_plugin.strip_doc_strings) and by plugin clash (clash.py)") in p.stderr


def test_plugin_that_fails_to_import_is_named(tmp_path, ir_file) -> None:
    plugin = tmp_path / "broken.py"
    plugin.write_text("raise RuntimeError('no accelerator SDK found')\n")
    p = edgec("--load-pass-plugin", plugin, "passes")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "broken.py failed to load: RuntimeError: no accelerator SDK found" in p.stderr


def test_broken_installed_entry_point_is_named(tmp_path, ir_file) -> None:
    site = tmp_path / "site"
    dist = site / "bad_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[edgec.passes]\nbad = bad_plugin_missing_module\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    p = edgec("passes", env=env)
    assert p.returncode == 2
    assert ("plugin entry point 'bad = bad_plugin_missing_module' of bad-plugin failed to load: "
            "ModuleNotFoundError") in p.stderr
