"""`edgec compile --target c --target-desc`: placement, cost report, memory fit, cross-compile, int8 + HAL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from edgec.cli import cli

from tgt_helpers import small_cnn

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "targets"


def _cnn(tmp_path: Path) -> Path:
    p = tmp_path / "cnn.onnx"
    small_cnn(str(p))
    return p


def test_float_c_with_target_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compile", str(_cnn(tmp_path)), "--target", "c", "--target-desc",
                                 str(SAMPLES / "npu-int8.toml"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "target_report.json").read_text())
    assert rep["summary"]["npu_layers"] == 0  # float layers: the int8 NPU cannot run them
    assert all(L["unit"] == "cpu" and "int8 only" in L["reason"] for L in rep["layers"] if L.get("macs"))
    assert rep["summary"]["macs"] == json.loads((out / "report.json").read_text())["macs"]["total"]
    assert "inference time" in (out / "target_report.txt").read_text()
    if shutil.which("arm-none-eabi-gcc"):
        assert rep["code_size"]["total"]["text"] > 0 and "arm-none-eabi-gcc" in r.output + (out / "target_report.txt").read_text()


def test_sram_overflow_fails_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = tmp_path / "big.onnx"
    small_cnn(str(p), hw=96)
    r = CliRunner().invoke(cli, ["compile", str(p), "--target", "c", "--target-desc", str(SAMPLES / "tiny-asic.toml"),
                                 "-o", str(out)])
    assert r.exit_code == 2 and "SRAM" in r.output and "largest live tensors at layer" in r.output, r.output
    assert "Traceback" not in r.output and not out.exists()


def test_target_desc_needs_c_and_a_valid_file(tmp_path: Path) -> None:
    p = _cnn(tmp_path)
    r = CliRunner().invoke(cli, ["compile", str(p), "--target-desc", str(SAMPLES / "npu-int8.toml"), "-o",
                                 str(tmp_path / "o.onnx")])
    assert r.exit_code == 2 and "--target-desc needs --target c" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nclock_hz = "fast"\n')
    r = CliRunner().invoke(cli, ["compile", str(p), "--target", "c", "--target-desc", str(bad), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "bad.toml" in r.output and "Traceback" not in r.output, r.output


def test_int8_layers_go_to_the_npu_hal_and_stay_bit_exact(tmp_path: Path) -> None:
    p = _cnn(tmp_path)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(0).standard_normal((16, 1, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compile", str(p), "--quantize", "int8", "--calibration", str(cal), "--target", "c",
                                 "--target-desc", str(SAMPLES / "cortex-m4.toml"), "--verify", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "target_report.json").read_text())
    assert rep["summary"]["npu_layers"] == 0  # cortex-m4 has no NPU: every layer on the CPU kernels
    cr = json.loads((out / "report.json").read_text())
    assert cr["int8"]["rounding"] == "single"  # the target's rounding (CMSIS-NN)
    out2 = tmp_path / "out2"
    r = CliRunner().invoke(cli, ["compile", str(p), "--quantize", "int8", "--calibration", str(cal), "--target", "c",
                                 "--target-desc", str(SAMPLES / "npu-int8.toml"), "--verify", "-o", str(out2)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out2 / "target_report.json").read_text())
    npu = [L for L in rep["layers"] if L["unit"] == "npu"]
    assert npu and any(L["op"] == "Conv" for L in npu)
    assert "npu_conv2d_s8" in (out2 / "model.c").read_text() + "".join(f.read_text() for f in out2.glob("*npu*"))
