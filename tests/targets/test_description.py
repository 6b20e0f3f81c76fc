"""Target description files: the samples load; every malformed or unknown entry is a one-line error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tgt_helpers import SAMPLES, sample

from edgec.targets import TargetDescriptionError, load_target, parse_target

GOOD = """
name = "t"
clock_hz = 100_000_000
rounding = "single"
native_dtypes = ["int8", "int32"]

[cpu]
core = "cortex-m4"
macs_per_cycle = 1

[memory]
sram_bytes = 65536
flash_bytes = "512 KiB"
bandwidth_bytes_per_cycle = 4

[npu]
name = "n"
macs_per_cycle = 32

[npu.ops]
Conv = { max_kernel = 3, strides = [1, 2] }
Relu = {}
"""


def test_samples_load() -> None:
    names = sorted(f for f in os.listdir(SAMPLES) if f.endswith(".toml"))
    assert {"npu-int8.toml", "cortex-m4.toml", "tiny-asic.toml"} <= set(names)
    for f in names:
        t = load_target(os.path.join(SAMPLES, f))
        assert t.name == f[:-5]

    npu = sample("npu-int8")
    assert npu.clock_hz == 400e6 and npu.rounding == "double"
    assert npu.memory.sram_bytes == 1 << 20 and npu.memory.flash_bytes == 4 << 20
    assert npu.npu is not None and npu.npu.macs_per_cycle == 128 and npu.npu.dtypes == ("int8",)
    conv = npu.npu.ops["Conv"]
    assert conv.max_kernel == (8, 8) and conv.strides == (1, 2, 3) and conv.grouped is False
    assert npu.cpu.flags() == ["-mthumb", "-mcpu=cortex-m55", "-mfloat-abi=hard"]

    m4 = sample("cortex-m4")
    assert m4.npu is None and m4.rounding == "single"
    assert m4.cpu.flags() == ["-mthumb", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]

    tiny = sample("tiny-asic")
    assert tiny.memory.sram_bytes == 64 * 1024 and "float32" not in tiny.native_dtypes
    assert "Softmax" not in tiny.npu.ops and tiny.npu.ops["Add"].broadcast is False  # type: ignore[union-attr]
    assert tiny.to_dict()["npu"]["ops"]["Conv"]["max_kernel"] == [3]


def test_defaults_and_units() -> None:
    t = parse_target(GOOD, "t.toml")
    assert t.memory.flash_bytes == 512 * 1024 and t.memory.alignment == 16
    assert t.memory.flash_bandwidth_bytes_per_cycle == 4.0  # defaults to the SRAM bandwidth
    assert t.cpu.float_macs_per_cycle == 1.0 and t.cpu.toolchain_prefix == "arm-none-eabi-"
    assert t.npu is not None and t.npu.dtypes == ("int8",) and t.npu.fused_activations == ("Relu", "Clip")
    assert t.npu.ops["Conv"].dtypes == ("int8",) and t.npu.ops["Relu"].max_rank is None
    t2 = parse_target(GOOD.replace("100_000_000", '"1.5 GHz"').replace('"512 KiB"', '"2 MiB"'), "t.toml")
    assert t2.clock_hz == 1.5e9 and t2.memory.flash_bytes == 2 << 20
    host = parse_target(GOOD.replace('"cortex-m4"', '"host"'), "t.toml")
    assert host.cpu.is_host and host.cpu.flags() == [] and host.cpu.toolchain_prefix == ""


def _sub(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


BAD = [
    ("name = \"t\"\nclock_hz = ", "invalid TOML"),
    (_sub('name = "t"\n', ""), "name: missing (required)"),
    (_sub('name = "t"', 'name = "a b"'), "name: 'a b' is not a valid value"),
    (_sub("clock_hz", "clok_hz"), "clock_hz: missing (required)"),
    (_sub('rounding = "single"', 'rounding = "single"\nclok_hz = 3'), "clok_hz: unknown key"),
    (_sub("100_000_000", '"fast"'), "clock_hz: 'fast' is not a frequency in Hz"),
    (_sub("100_000_000", "0"), "clock_hz: must be positive"),
    (_sub('"single"', '"nearest"'), "rounding: 'nearest' is not one of double, single"),
    (_sub('["int8", "int32"]', '["int9"]'), "native_dtypes: unknown value 'int9'"),
    (_sub('native_dtypes = ["int8", "int32"]', ""), "native_dtypes: missing (required)"),
    (_sub('"cortex-m4"', '"cortex-m44"'), "cpu.core: unknown core 'cortex-m44'"),
    (_sub("macs_per_cycle = 1", 'macs_per_cycle = "1"'), "cpu.macs_per_cycle: expected a number, got a string"),
    (_sub("macs_per_cycle = 1", "macs_per_cycle = 1\nfloat_abi = \"hardfp\""),
     "cpu.float_abi: 'hardfp' is not one of soft, softfp, hard"),
    (_sub("macs_per_cycle = 1", "macs_per_cycle = 1\nextra_flags = [\"O3\"]"),
     "cpu.extra_flags: 'O3' is not a single compiler flag"),
    (_sub("macs_per_cycle = 1", "macs_per_cycle = 1\nmcpu = \"x\""), "cpu.mcpu: unknown key"),
    (_sub("[cpu]\ncore", "cpu = 3\n[cpux]\ncore"), "cpu: expected a table, got an integer"),
    (_sub("sram_bytes = 65536", 'sram_bytes = "64 KB"'), "memory.sram_bytes: '64 KB' is not a size in bytes"),
    (_sub("sram_bytes = 65536", "sram_bytes = -1"), "memory.sram_bytes: must be positive"),
    (_sub("sram_bytes = 65536", "sram_bytes = 65536\nalignment = 12"), "memory.alignment: must be a power of two"),
    (_sub("sram_bytes = 65536", "sram_bytes = 65536\nsram_size = 1"), "memory.sram_size: unknown key"),
    (_sub("bandwidth_bytes_per_cycle = 4", ""), "memory.bandwidth_bytes_per_cycle: missing (required)"),
    (_sub("[npu]\nname", "[npu]\nmacs = 3\nname"), "npu.macs: unknown key"),
    (_sub("macs_per_cycle = 32", "macs_per_cycle = 32\nfused_activations = [\"Swish\"]"),
     "npu.fused_activations: unknown value 'Swish'"),
    (_sub("Relu = {}", "Conv2D = {}"), "npu.ops.Conv2D: unknown op 'Conv2D'"),
    (_sub("Relu = {}", "Relu = 1"), "npu.ops.Relu: expected a table, got an integer"),
    (_sub("max_kernel = 3", "max_kernal = 3"), "npu.ops.Conv.max_kernal: unknown key for Conv"),
    (_sub("Relu = {}", "Relu = { max_k = 3 }"), "npu.ops.Relu.max_k: unknown key for Relu"),
    (_sub("strides = [1, 2]", "strides = [0]"), "npu.ops.Conv.strides: values must be >= 1"),
    (_sub("strides = [1, 2]", "strides = []"), "npu.ops.Conv.strides: expected an integer or a non-empty list"),
    (_sub("strides = [1, 2]", 'depthwise = "yes"'), "npu.ops.Conv.depthwise: expected true or false"),
    (_sub("strides = [1, 2]", 'dtypes = ["int7"]'), "npu.ops.Conv.dtypes: unknown value 'int7'"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_descriptions(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(TargetDescriptionError) as e:
        load_target(str(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}: "), msg
    assert message in msg, msg
    assert "\n" not in msg


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TargetDescriptionError, match="no such target description file"):
        load_target(str(tmp_path / "missing.toml"))
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TargetDescriptionError, match="not a UTF-8 text file"):
        load_target(str(p))
