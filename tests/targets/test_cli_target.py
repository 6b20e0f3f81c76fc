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
    assert "npu_conv2d_s8(" not in (out / "model.c").read_text()
    cr = json.loads((out / "report.json").read_text())
    assert cr["int8"]["rounding"] == "single"  # the target's rounding (CMSIS-NN)
    out2 = tmp_path / "out2"
    r = CliRunner().invoke(cli, ["compile", str(p), "--quantize", "int8", "--calibration", str(cal), "--target", "c",
                                 "--target-desc", str(SAMPLES / "npu-int8.toml"), "--verify", "-o", str(out2)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out2 / "target_report.json").read_text())
    npu = [L for L in rep["layers"] if L["unit"] == "npu"]
    assert npu and any(L["op"] == "Conv" for L in npu)
    assert "npu_conv2d_s8(" in (out2 / "model.c").read_text()  # NPU layers call the HAL


def test_int8_softmax_flag_runs_softmax_in_integer(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((10, 48)).astype(np.float32) * 0.3, "w")
    b = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "b")
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1), helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 48])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [w, b])
    p = tmp_path / "sm.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=rng.standard_normal((32, 1, 48)).astype(np.float32))
    for flag, expect in (([], False), (["--int8-softmax"], True)):
        out = tmp_path / f"out{len(flag)}"
        r = CliRunner().invoke(cli, ["compile", str(p), "--quantize", "int8", "--calibration", str(cal), "--target", "c",
                                     *flag, "--verify", "-o", str(out)])
        assert r.exit_code == 0, r.output
        ops = [L["op"] for L in json.loads((out / "report.json").read_text())["layers"]]
        assert ("edgec::QSoftmax" in ops) == expect, ops
    r = CliRunner().invoke(cli, ["compile", str(p), "--int8-softmax", "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 2 and "--int8-softmax" in r.output
