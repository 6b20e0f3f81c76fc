"""Cross-compiling the float C back end's output for the sample targets' CPUs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from tgt_helpers import sample, small_cnn

from edgec.cli import cli
from edgec.targets import CrossCompileError, cross_compile, parse_target

HAVE_ARM_GCC = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("arm-none-eabi-size") is not None
needs_arm_gcc = pytest.mark.skipif(not HAVE_ARM_GCC, reason="arm-none-eabi-gcc not installed "
                                                            "(Debian/Ubuntu: apt-get install gcc-arm-none-eabi)")


@pytest.fixture(scope="module")
def c_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("xc")
    small_cnn(str(d / "m.onnx"), 16)
    res = CliRunner().invoke(cli, ["compile", str(d / "m.onnx"), "--target", "c", "-o", str(d / "out")])
    assert res.exit_code == 0, res.output
    return d / "out"


@needs_arm_gcc
@pytest.mark.parametrize("name", ["npu-int8", "cortex-m4", "tiny-asic"])
def test_cross_compile_float_cnn(c_out: Path, name: str) -> None:
    import json

    report = json.loads((c_out / "report.json").read_text())
    t = sample(name)
    r = cross_compile(str(c_out), t)
    assert r["compiler"] == "arm-none-eabi-gcc"
    assert r["flags"][:2] == ["-mthumb", f"-mcpu={t.cpu.core}"] and "-Werror" in r["flags"]
    assert list(r["files"]) == ["model.c"]
    tot = r["total"]
    assert tot["text"] > 0
    assert tot["rodata"] >= report["weights"]["bytes"]  # the weight arrays
    assert tot["bss"] >= report["memory"]["arena_bytes"]  # the static arena of model_run
    assert tot["flash_bytes"] == tot["text"] + tot["rodata"] + tot["data"]


@needs_arm_gcc
def test_build_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.c").write_text("int f(void) { return undefined_name; }\n")
    with pytest.raises(CrossCompileError) as e:
        cross_compile(str(tmp_path), sample("cortex-m4"))
    msg = str(e.value)
    assert msg.startswith("arm-none-eabi-gcc -mthumb -mcpu=cortex-m4") and "failed on bad.c" in msg
    assert "undefined_name" in msg and "\n" not in msg


def test_missing_compiler_and_sources(tmp_path: Path) -> None:
    text = open(sample("cortex-m4").path).read().replace('float_abi = "hard"',
                                                         'float_abi = "hard"\ntoolchain_prefix = "no-such-prefix-"')
    t = parse_target(text, "m4.toml")
    (tmp_path / "model.c").write_text("int x;\n")
    with pytest.raises(CrossCompileError, match=r"^cross compiler 'no-such-prefix-gcc' not found on PATH \(target "
                                                r"cortex-m4, cpu cortex-m4\): install the GNU Arm Embedded toolchain"):
        cross_compile(str(tmp_path), t)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrossCompileError, match="empty: no .c files to compile$"):
        cross_compile(str(tmp_path / "empty"), parse_target(text.replace("no-such-prefix-", ""), "m4.toml"))


@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("size") is None, reason="no host cc/size")
def test_host_core(c_out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    text = open(sample("cortex-m4").path).read().replace('core = "cortex-m4"', 'core = "host"')
    text = text.replace('fpu = "fpv4-sp-d16"\n', "").replace('float_abi = "hard"\n', "")
    r = cross_compile(str(c_out), parse_target(text, "host.toml"))
    assert r["compiler"] == "cc" and r["flags"][0] == "-O2" and r["total"]["text"] > 0
