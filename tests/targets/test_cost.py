"""Cost report: MACs, bytes and cycles checked by hand; arena vs lower bound; SRAM and flash checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tgt_helpers import F32, I8, I32, IRBuilder, sample, small_cnn

import edgec
from edgec.backends.c import generate_c
from edgec.targets import TargetFitError, build_cost_report, format_cost_report, parse_target, place
from edgec.targets.cost import cost_report_json

NPU = sample("npu-int8")
TINY = sample("tiny-asic")
M4 = sample("cortex-m4")


def int8_model():
    """x f32[1,3,16,16] -> QuantizeLinear -> edgec.QConv 3x3 (8 out, pad 1, fused Relu) -> DequantizeLinear."""
    b = IRBuilder()
    x = b.input("x", F32, [1, 3, 16, 16])
    s, zp = b.const("s", np.float32(0.05)), b.const("zp", np.int8(0))
    q = b.node("QuantizeLinear", [x, s, zp], I8, [1, 3, 16, 16], "quant")
    w = b.weight("w", [8, 3, 3, 3], I8, zeros=0.75)  # 216 weights, 162 zero
    bias = b.weight("b", [8], I32)
    c = b.node("QConv", [q, w, bias], I8, [1, 8, 16, 16], "conv", domain="edgec", source_op="Conv",
               fused=["Relu"], pads=[1, 1, 1, 1])
    y = b.node("DequantizeLinear", [c, s, zp], F32, [1, 8, 16, 16], "dequant")
    model = b.model(y)
    # what the C back end reports for it (int8 arena: quant output at 0, conv output at 768)
    c_report = {"name": "model", "memory": {"arena_bytes": 2816, "lower_bound_bytes": 2816, "alignment": 16},
                "layers": [{"index": 0, "node": "quant", "arena_offset": 0, "macs": 0},
                           {"index": 1, "node": "conv", "arena_offset": 768, "macs": 55296},
                           {"index": 2, "node": "dequant", "macs": 0}]}
    return model, c_report


def test_hand_computed_costs() -> None:
    model, c_report = int8_model()
    r = build_cost_report(model, c_report, NPU, place(model, NPU))
    q, conv, dq = r["layers"]
    assert [L["unit"] for L in r["layers"]] == ["cpu", "npu", "cpu"]
    assert q["reason"] == "float32 tensor 'x': npu runs int8 only"
    # conv: 1*8*16*16 outputs x 3*3*3 = 55,296 MACs; 128 MACs/cycle -> 432 cycles
    assert conv["macs"] == 55296 and conv["compute_cycles"] == 432
    assert conv["op"] == "Conv" and conv["fused"] == ["Relu"] and conv["qualified_op"] == "edgec::QConv"
    # weights 216 B int8 (54 nonzero -> 54 values + 27 B bitmap = 81) + 32 B int32 bias
    assert conv["weight_bytes"] == 248 and conv["weight_bytes_packed"] == 81 + 32
    # activations 768 + 2048 B at 8 B/cycle; packed weights at 2 B/cycle: 352 + 56.5
    assert conv["activation_bytes"] == 2816 and conv["memory_cycles"] == 408.5
    assert conv["cycles"] == 432 and conv["bound"] == "compute"
    assert conv["weights_in"] == "flash" and conv["output_in"] == "arena" and conv["arena_offset"] == 768
    # quantize on the CPU: 768 elements at 1 float MAC/cycle; (3072 + 768) / 8 + 5 B / 2 = 482.5
    assert q["macs"] == 0 and q["ops"] == 768 and q["compute_cycles"] == 768 and q["memory_cycles"] == 482.5
    assert q["cycles"] == 768
    # dequantize: 2048 elements; (2048 + 8192) / 8 + 2.5 = 1282.5 < 2048
    assert dq["cycles"] == 2048 and dq["output_in"] == "output"
    # liveness: quant output [0, 1], conv output [1, 2]
    assert [L["live_bytes"] for L in r["layers"]] == [768, 2816, 2048]

    s = r["summary"]
    assert s["cycles"] == 768 + 432 + 2048 and s["npu_cycles"] == 432 and s["cpu_cycles"] == 768 + 2048
    assert s["macs"] == s["npu_macs"] == 55296 and s["npu_layers"] == 1 and s["cpu_layers"] == 2
    assert s["weight_bytes"] == 216 + 32 + 4 + 1 and s["weight_bytes_packed"] == 81 + 32 + 4 + 1
    assert s["latency_ms"] == pytest.approx(3248 / 400e6 * 1e3)
    assert s["inferences_per_second"] == pytest.approx(400e6 / 3248)
    mm = s["memory"]
    assert mm["arena_bytes"] == mm["lower_bound_bytes"] == 2816 and mm["overhead"] == 1.0
    assert mm["io_bytes"] == 3072 + 8192 and mm["sram_used_bytes"] == 2816 + 11264 and mm["sram_fits"]
    assert mm["peak"]["node"] == "conv" and mm["peak"]["live_bytes"] == 2816
    assert mm["peak"]["tensors"] == ["conv_out", "quant_out"]

    # a scratch buffer the C back end plans for a layer counts at that layer only
    c_report["layers"][1]["scratch_bytes"] = 100
    r2 = build_cost_report(model, c_report, NPU, place(model, NPU))
    assert [L["live_bytes"] for L in r2["layers"]] == [768, 2816 + 112, 2048]
    assert r2["summary"]["memory"]["peak"]["tensors"] == ["<scratch of layer 1>", "conv_out", "quant_out"]

    text = format_cost_report(r)
    assert "NPU operators" in text and "1 (33.3%)" in text and "3,248" in text
    assert "edgec::QConv" not in text and "conv: supported by npu" in text
    assert json.loads(cost_report_json(r))["summary"]["cycles"] == 3248


def test_cpu_only_and_soft_float() -> None:
    model, c_report = int8_model()
    r = build_cost_report(model, c_report, M4, place(model, M4))
    conv = r["layers"][1]
    # int8 on the Cortex-M4: 1 MAC/cycle; memory (2816 / 4 + 248 / 4) is far below
    assert conv["unit"] == "cpu" and conv["cycles"] == 55296 and conv["reason"] == "target cortex-m4 has no npu"
    assert r["notes"] == ["flash use counts weights only (cross-compile for code size)"]
    t = build_cost_report(model, c_report, TINY, place(model, TINY))
    assert t["layers"][1]["unit"] == "npu" and t["layers"][1]["cycles"] == 55296 // 32
    # no FPU: quantize runs in software float at 0.02 MACs/cycle
    assert t["layers"][0]["cycles"] == round(768 / 0.02)
    assert any("float32 is not native on tiny-asic: 2 CPU layers" in n for n in t["notes"])


def _float_cnn(tmp_path: Path, hw: int):
    p = tmp_path / "m.onnx"
    small_cnn(str(p), hw)
    model = edgec.load(str(p))
    edgec.optimize(model, opt_level=2, target="c")
    return model, generate_c(model, "model", source="m.onnx").report


def _check_peak(peak: int, c_report: dict) -> None:
    """The peak of the live tensors is the planner's lower bound, unless the plan holds scratch buffers
    the report does not attribute to layers (``scratch_bytes``)."""
    lb = c_report["memory"]["lower_bound_bytes"]
    tensors = sum(1 for L in c_report["layers"] if "arena_offset" in L)
    if c_report["memory"]["buffers"] == tensors or any("scratch_bytes" in L for L in c_report["layers"]):
        assert peak == lb
    else:
        assert 0 < peak <= lb


def test_float_cnn_matches_c_report(tmp_path: Path) -> None:
    model, c_report = _float_cnn(tmp_path, 16)
    r = build_cost_report(model, c_report, M4, place(model, M4))
    by_node = {L["node"]: L for L in c_report["layers"]}
    for L in r["layers"]:
        assert L["macs"] == by_node[L["node"]]["macs"], L["node"]
        assert L.get("arena_offset") == by_node[L["node"]].get("arena_offset")
    assert r["summary"]["macs"] == c_report["macs"]["total"]
    mm = r["summary"]["memory"]
    assert mm["lower_bound_bytes"] == c_report["memory"]["lower_bound_bytes"]
    _check_peak(mm["peak"]["live_bytes"], c_report)
    assert mm["arena_bytes"] == c_report["memory"]["arena_bytes"]
    assert mm["flash_used_bytes"] == c_report["weights"]["bytes"]  # the weight arrays of the C code
    assert r["summary"]["weight_bytes"] == 4 * (8 * 3 * 9 + 8 + 16 * 8 * 9 + 16 + 10 * 16 + 10)  # the IR's
    flat = next(L for L in r["layers"] if L["op"] == "Flatten")
    assert flat["output_in"] == "view" and flat["cycles"] == 0 and flat["bound"] == "none"


def test_sram_check_names_the_layer(tmp_path: Path) -> None:
    model, c_report = _float_cnn(tmp_path, 64)  # conv outputs of 128 KiB and 64 KiB, float
    r = build_cost_report(model, c_report, TINY, place(model, TINY), check=False)
    mm = r["summary"]["memory"]
    assert not mm["sram_fits"] and mm["sram_bytes"] == 65536
    peak = mm["peak"]
    _check_peak(peak["live_bytes"], c_report)
    with pytest.raises(TargetFitError) as e:
        build_cost_report(model, c_report, TINY, place(model, TINY))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("target tiny-asic (tiny-asic.toml): model needs ")
    assert f"but the target has 64.0 KiB (65536 B); largest live tensors at layer '{peak['node']}' (Conv): " \
           f"{peak['live_bytes']} B live in " in msg
    # the same model fits the 1 MiB of the NPU target
    assert build_cost_report(model, c_report, NPU, place(model, NPU))["summary"]["memory"]["sram_fits"]


def test_flash_check(tmp_path: Path) -> None:
    model, c_report = _float_cnn(tmp_path, 16)
    small = parse_target(open(M4.path).read().replace('flash_bytes = "1 MiB"', "flash_bytes = 4096"), "small.toml")
    wb = c_report["weights"]["bytes"]
    with pytest.raises(TargetFitError, match=rf"^target cortex-m4 \(small.toml\): weights need \S+ KiB \({wb} B\) "
                                             r"of flash but the target has 4.0 KiB \(4096 B\)$"):
        build_cost_report(model, c_report, small, place(model, small))
    code = {"compiler": "cc", "flags": [], "files": {},
            "total": {"text": 1000, "rodata": 6248, "data": 0, "bss": 12288, "flash_bytes": 7248, "ram_bytes": 12288}}
    r = build_cost_report(model, c_report, M4, place(model, M4), code_size=code)
    assert r["summary"]["memory"]["flash_used_bytes"] == 7248 and "code_size" in r
    assert "text 1000 / rodata 6248 / data 0 / bss 12288 B" in format_cost_report(r)
