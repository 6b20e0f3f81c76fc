"""C target: ConvTranspose, Resize / Upsample, DepthToSpace / SpaceToDepth against onnxruntime (ASan/UBSan,
-Werror), and an exported decoder-style CNN (ConvTranspose + Resize) through the CLI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgec.backends.c import compile_to_c
from edgec.backends.c.verify import build, compare, reference_outputs, run_binary
from edgec.cli import cli
from edgec.errors import UnsupportedModelError

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

RNG = np.random.default_rng(62)


def _w(name: str, shape: Sequence[int], scale: float = 0.5) -> onnx.TensorProto:
    return nh.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _f(name: str, values: Sequence[float]) -> onnx.TensorProto:
    return nh.from_array(np.array(values, np.float32), name)


def _i64(name: str, values: Sequence[int]) -> onnx.TensorProto:
    return nh.from_array(np.array(values, np.int64), name)


def run_c(tmp_path: Path, nodes: List[onnx.NodeProto], inputs: Dict[str, Sequence[int]], outputs: Sequence[str],
          inits: Sequence[onnx.TensorProto] = (), opset: int = 17, opt_level: int = 0) -> dict:
    """Compile to C, build with sanitizers and -Werror, compare every output with onnxruntime."""
    ins = [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs.items()]
    outs = [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs]
    model = h.make_model(h.make_graph(nodes, "g", ins, outs, list(inits)),
                         opset_imports=[h.make_opsetid("", opset)], ir_version=8 if opset < 21 else 10)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    code = compile_to_c(str(path), str(tmp_path / "out"), opt_level=opt_level)
    prog = build(str(tmp_path / "out"), code.report, opt="-O1", sanitize=True)
    feeds = {n: RNG.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    got = run_binary(prog, code.report, feeds)
    ref = reference_outputs(str(path), feeds)
    for t, g, r in zip(code.report["outputs"], got, ref):
        c = compare(t["name"], g, r, rtol=1e-4, atol=1e-5, max_ulp=100)
        assert c.ok, f"{t['name']}: {c} (C {g.reshape(-1)[:6]} vs ORT {r.reshape(-1)[:6]})"
        assert list(g.shape) == list(r.shape)
    return code.report


def test_conv_transpose_attributes(tmp_path: Path) -> None:
    nodes = [
        h.make_node("ConvTranspose", ["x", "w", "b"], ["y0"]),
        h.make_node("ConvTranspose", ["x", "w"], ["y1"], strides=[2, 2], pads=[1, 0, 0, 1]),
        h.make_node("ConvTranspose", ["x", "w", "b"], ["y2"], strides=[2, 3], output_padding=[1, 2]),
        h.make_node("ConvTranspose", ["x", "wg", "bg"], ["y3"], group=2, strides=[2, 2], dilations=[2, 1],
                    pads=[1, 1, 2, 0]),
        h.make_node("ConvTranspose", ["x", "w"], ["y4"], strides=[2, 2], auto_pad="SAME_UPPER"),
        h.make_node("ConvTranspose", ["x", "w"], ["y5"], strides=[2, 2], auto_pad="SAME_LOWER"),
        h.make_node("ConvTranspose", ["x", "w", "b"], ["y6"], strides=[2, 2], output_shape=[10, 9]),
        h.make_node("ConvTranspose", ["x", "wd"], ["y7"], group=4, strides=[2, 2], kernel_shape=[2, 2]),
        h.make_node("ConvTranspose", ["s", "w1", "b1"], ["y8"], strides=[3], pads=[1, 2], output_padding=[1]),
        h.make_node("ConvTranspose", ["x", "w", "b"], ["y9"], strides=[2, 2], output_shape=[9, 10],
                    auto_pad="SAME_UPPER"),
    ]
    nodes.append(h.make_node("ConvTranspose", ["v", "w3", "b3"], ["y10"], strides=[2, 1, 2], pads=[1, 0, 0, 1, 1, 0],
                             dilations=[1, 2, 1], group=2))  # 3-D
    inits = [_w("w", [4, 3, 3, 3]), _w("b", [3]), _w("wg", [4, 3, 2, 3]), _w("bg", [6]), _w("wd", [4, 1, 2, 2]),
             _w("w1", [2, 5, 4]), _w("b1", [5]), _w("w3", [4, 2, 3, 2, 3]), _w("b3", [4])]
    run_c(tmp_path, nodes, {"x": [1, 4, 4, 5], "s": [2, 2, 6], "v": [1, 4, 3, 3, 4]}, [f"y{i}" for i in range(11)],
          inits)


def test_fused_conv_transpose(tmp_path: Path) -> None:
    """-O2 fuses the activation into edgec.FusedConvTranspose."""
    nodes = [h.make_node("ConvTranspose", ["x", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1]),
             h.make_node("Relu", ["c"], ["y0"]),
             h.make_node("ConvTranspose", ["x", "w"], ["c1"], strides=[2, 2]),
             h.make_node("LeakyRelu", ["c1"], ["y1"], alpha=0.2)]
    rep = run_c(tmp_path, nodes, {"x": [2, 4, 3, 3]}, ["y0", "y1"], [_w("w", [4, 2, 3, 3]), _w("b", [2])],
                opt_level=2)
    assert [L["op"] for L in rep["layers"]].count("edgec::FusedConvTranspose") == 2


_COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]


def test_resize_nearest_modes(tmp_path: Path) -> None:
    """Every coordinate mode x nearest mode, up- and down-sampling in one node (H x2, W x0.6), and sizes."""
    nodes, outs, inits = [], [], [_f("mix", [1, 1, 2, 0.6]), _i64("sz", [1, 2, 7, 3])]
    i = 0
    for coord in _COORDS + ["tf_half_pixel_for_nn"]:
        for j, nm in enumerate(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]):
            for sc in (["", "mix"], ["", "", "sz"]) if j % 2 == 0 else (["", "mix"],):
                nodes.append(h.make_node("Resize", ["x", *sc], [f"y{i}"], mode="nearest",
                                         coordinate_transformation_mode=coord, nearest_mode=nm))
                outs.append(f"y{i}")
                i += 1
    run_c(tmp_path, nodes, {"x": [1, 2, 5, 4]}, outs, inits, opset=13)


def test_resize_linear_cubic(tmp_path: Path) -> None:
    nodes, outs = [], []
    inits = [_f("up", [1, 1, 2, 1.75]), _f("down", [1, 1, 0.6, 0.5]), _f("mix", [1, 1, 1.75, 0.5]),
             _i64("sz", [1, 2, 3, 9]), _f("up3", [1, 2.5, 0.5]), _f("roi", [])]
    i = 0
    for mode in ("linear", "cubic"):
        for coord in _COORDS:
            for sc in (["roi", "mix"], ["", "", "sz"]):
                nodes.append(h.make_node("Resize", ["x", *sc], [f"y{i}"], mode=mode,
                                         coordinate_transformation_mode=coord))
                outs.append(f"y{i}")
                i += 1
    nodes += [h.make_node("Resize", ["x", "", "up"], ["c0"], mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1),
              h.make_node("Resize", ["x", "", "down"], ["c1"], mode="cubic", exclude_outside=1,
                          coordinate_transformation_mode="align_corners"),
              h.make_node("Resize", ["v", "", "up3"], ["c2"], mode="linear")]  # trilinear on a 3-D tensor
    run_c(tmp_path, nodes, {"x": [1, 2, 5, 4], "v": [2, 3, 4]}, outs + ["c0", "c1", "c2"], inits, opset=13)


def test_resize_opset10_11_19_and_upsample(tmp_path: Path) -> None:
    """Resize-10 (asymmetric, simple rounding), Resize-11 with roi, Resize-19 with axes and half_pixel_symmetric,
    Upsample-9. (keep_aspect_ratio_policy not_larger/not_smaller: the kernel handles them, but edgec's shape
    inference leaves those output dims unknown, so the C target cannot take them yet.)"""
    m10 = [h.make_node("Resize", ["x", "up"], ["y0"], mode="nearest"),
           h.make_node("Resize", ["x", "down"], ["y1"], mode="nearest"),
           h.make_node("Resize", ["x", "up"], ["y2"], mode="linear")]
    inits = [_f("up", [1, 1, 2, 3]), _f("down", [1, 1, 0.6, 0.5])]
    for d in ("r10", "r11", "r19", "u9"):
        (tmp_path / d).mkdir()
    run_c(tmp_path / "r10", m10, {"x": [1, 2, 5, 4]}, ["y0", "y1", "y2"], inits, opset=10)
    m11 = [h.make_node("Resize", ["x", "roi", "up"], ["y0"], mode="linear",
                       coordinate_transformation_mode="align_corners"),
           h.make_node("Resize", ["x", "roi", "e", "sz"], ["y1"], mode="nearest")]
    inits = [_f("up", [1, 1, 2, 3]), _f("roi", []), _f("e", []), _i64("sz", [1, 2, 9, 6])]
    run_c(tmp_path / "r11", m11, {"x": [1, 2, 5, 4]}, ["y0", "y1"], inits, opset=11)
    m19 = [h.make_node("Resize", ["x", "", "sc2"], ["y0"], mode="linear", axes=[2, 3],
                       coordinate_transformation_mode="half_pixel_symmetric"),
           h.make_node("Resize", ["x", "", "", "sz2"], ["y1"], mode="nearest", axes=[3, 2]),
           h.make_node("Resize", ["x", "", "", "sz2"], ["y2"], mode="linear", axes=[2, 3]),
           h.make_node("Resize", ["x", "", "", "sz2"], ["y3"], mode="cubic", axes=[-2, -1],
                       coordinate_transformation_mode="half_pixel_symmetric")]
    inits = [_f("sc2", [1.5, 0.75]), _i64("sz2", [8, 7])]
    run_c(tmp_path / "r19", m19, {"x": [1, 2, 5, 4]}, ["y0", "y1", "y2", "y3"], inits, opset=19)
    up = [h.make_node("Upsample", ["x", "sc"], ["y0"], mode="nearest"),
          h.make_node("Upsample", ["x", "sc"], ["y1"], mode="linear")]
    run_c(tmp_path / "u9", up, {"x": [1, 2, 3, 4]}, ["y0", "y1"], [_f("sc", [1, 1, 2, 2.5])], opset=9)


def test_depth_space(tmp_path: Path) -> None:
    nodes = [h.make_node("DepthToSpace", ["x"], ["y0"], blocksize=2),
             h.make_node("DepthToSpace", ["x"], ["y1"], blocksize=2, mode="CRD"),
             h.make_node("SpaceToDepth", ["z"], ["y2"], blocksize=3)]
    run_c(tmp_path, nodes, {"x": [2, 8, 3, 4], "z": [1, 2, 6, 9]}, ["y0", "y1", "y2"])


def test_resize_tf_crop_and_resize(tmp_path: Path) -> None:
    """roi crops (partly outside the input: extrapolation_value there) in every mode."""
    nodes = [h.make_node("Resize", ["x", "roi", "up"], ["y0"], mode="linear",
                         coordinate_transformation_mode="tf_crop_and_resize"),
             h.make_node("Resize", ["x", "roi2", "", "sz"], ["y1"], mode="nearest", extrapolation_value=-3.0,
                         coordinate_transformation_mode="tf_crop_and_resize"),
             h.make_node("Resize", ["x", "roi2", "up"], ["y2"], mode="cubic", extrapolation_value=7.0,
                         coordinate_transformation_mode="tf_crop_and_resize"),
             h.make_node("Resize", ["x", "roi", "", "sz"], ["y3"], mode="linear", extrapolation_value=1.5,
                         coordinate_transformation_mode="tf_crop_and_resize")]
    inits = [_f("up", [1, 1, 2, 1.5]), _f("roi", [0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7]),
             _f("roi2", [0, 0, -0.3, 0.4, 1, 1, 1.2, 1.6]), _i64("sz", [1, 2, 5, 3])]
    run_c(tmp_path, nodes, {"x": [1, 2, 4, 5]}, ["y0", "y1", "y2", "y3"], inits, opset=13)


def test_resize_rejections(tmp_path: Path) -> None:
    nodes = [h.make_node("Resize", ["x", "", "up"], ["y"], mode="linear", coordinate_transformation_mode="bogus")]
    with pytest.raises(UnsupportedModelError, match="bogus"):
        run_c(tmp_path, nodes, {"x": [1, 1, 4, 4]}, ["y"], [_f("up", [1, 1, 0.5, 0.5])], opset=18)


def test_resize_antialias(tmp_path: Path) -> None:
    """antialias=1 (opset 18): downsampling widens the linear / cubic kernel; upsampling is unchanged."""
    nodes = [h.make_node("Resize", ["x", "", "down"], ["y0"], mode="linear", antialias=1),
             h.make_node("Resize", ["x", "", "down2"], ["y1"], mode="cubic", antialias=1),
             h.make_node("Resize", ["x", "", "", "sz"], ["y2"], mode="linear", antialias=1,
                         coordinate_transformation_mode="pytorch_half_pixel"),
             h.make_node("Resize", ["x", "", "", "sz"], ["y3"], mode="cubic", antialias=1, exclude_outside=1),
             h.make_node("Resize", ["x", "", "up"], ["y4"], mode="linear", antialias=1)]
    inits = [_f("down", [1, 1, 0.5, 0.6]), _f("down2", [1, 1, 0.3, 0.75]), _i64("sz", [1, 2, 3, 4]),
             _f("up", [1, 1, 1.5, 2])]
    run_c(tmp_path, nodes, {"x": [1, 2, 9, 8]}, ["y0", "y1", "y2", "y3", "y4"], inits, opset=18)


# --- an exported decoder through the CLI --------------------------------------------------------

def _decoder_onnx(path: Path) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    pytest.importorskip("zoo")

    class Decoder(nn.Module):
        """Encoder-decoder CNN: strided conv down, ConvTranspose + bilinear/nearest upsampling back."""

        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
            self.up1 = nn.ConvTranspose2d(16, 8, 4, 2, 1)
            self.bn = nn.BatchNorm2d(8)
            self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.head = nn.Conv2d(8, 4, 3, 1, 1)
            self.up3 = nn.Upsample(scale_factor=2, mode="nearest")
            self.shuffle = nn.PixelShuffle(2)

        def forward(self, x):  # noqa: ANN001, ANN201
            z = self.enc(x)
            d = torch.relu(self.bn(self.up1(z)))
            d = self.head(self.up2(d))
            return self.up3(d), self.shuffle(d)

    from zoo._export import export, randomize_norm_stats, seed_all

    seed_all(0)
    net = Decoder()
    randomize_norm_stats(net, 1)
    proto = export(net, (torch.randn(1, 3, 16, 16),), input_names=["x"], output_names=["seg", "shuffled"],
                   dynamic_axes={"x": {0: "batch"}}, opset=17)
    onnx.save(proto, str(path))


def test_decoder_cnn_cli(tmp_path: Path) -> None:
    path = tmp_path / "decoder.onnx"
    _decoder_onnx(path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"ConvTranspose", "Resize", "DepthToSpace"} <= ops, ops
    r = CliRunner()
    res = r.invoke(cli, ["compile", str(path), "-O2", "--target", "c", "--input-shape", "x=1x3x16x16",
                         "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    report = (tmp_path / "out" / "report.txt").read_text()
    assert "ConvTranspose" in report and "Resize" in report
    res = r.invoke(cli, ["verify", str(path), "--input-shape", "x=1x3x16x16", "--runs", "2", "--sanitize"])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output, res.output
