"""NPU/CPU placement on small IR models, integer edgec ops (``source_op``, ``fused``) included."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tgt_helpers import F32, I8, I32, IRBuilder, sample

from edgec.ir import Model
from edgec.targets import Placement, parse_target, place
from edgec.targets.cost import layer_macs
from edgec.targets.legality import place_node, unit_of

NPU = sample("npu-int8")
TINY = sample("tiny-asic")
M4 = sample("cortex-m4")


def qconv(x_dims: Sequence[int], out_dims: Sequence[int], k: int = 3, *, group: int = 1, dtype=I8,
          op: str = "QConv", source: str = "Conv", **attrs: Any) -> Model:
    """quantized input -> one conv-like node (edgec domain, source_op) -> output."""
    b = IRBuilder()
    x = b.input("x", dtype, x_dims)
    w = b.weight("w", [out_dims[1], x_dims[1] // group, k, k], dtype)
    bias = b.weight("b", [out_dims[1]], I32)
    kw = {"source_op": source} if source else {}
    y = b.node(op, [x, w, bias], dtype, out_dims, "conv", domain="edgec", group=group, **kw, **attrs)
    return b.model(y)


def one(model: Model, target) -> Placement:
    (p,) = place(model, target).values()
    return p


def test_int8_conv_on_npu_and_fallbacks() -> None:
    m = qconv([1, 8, 16, 16], [1, 16, 16, 16], fused=["Relu"], pads=[1, 1, 1, 1])
    assert one(m, NPU) == Placement("npu", "supported by npu", "Conv")
    assert one(m, TINY).unit == "npu"
    assert one(m, M4) == Placement("cpu", "target cortex-m4 has no npu", "Conv")

    p = one(qconv([1, 8, 16, 16], [1, 16, 10, 10], k=7), TINY)
    assert p.unit == "cpu" and p.reason == "kernel 7x7 > max 3"
    assert one(qconv([1, 8, 16, 16], [1, 16, 8, 8], k=9), NPU).reason == "kernel 9x9 > max 8x8"
    assert one(qconv([1, 8, 16, 16], [1, 16, 4, 4], strides=[4, 4]), NPU).reason == \
        "strides 4x4: npu allows 1, 2, 3"
    assert one(qconv([1, 8, 16, 16], [1, 16, 12, 12], dilations=[2, 2]), TINY).reason == \
        "dilations 2x2: npu allows 1"
    assert one(qconv([1, 8, 16, 16], [1, 16, 14, 14], group=2), NPU).reason == \
        "grouped conv (group 2) not supported by npu"
    assert one(qconv([1, 8, 16, 16], [1, 8, 14, 14], group=8), NPU).unit == "npu"  # depthwise
    no_dw = parse_target(open(TINY.path).read().replace("depthwise = true", "depthwise = false"), "t.toml")
    assert one(qconv([1, 8, 16, 16], [1, 8, 14, 14], group=8), no_dw).reason == "depthwise conv not supported by npu"
    assert one(qconv([1, 300, 8, 8], [1, 16, 6, 6]), TINY).reason == "300 input channels > max 256"
    assert one(qconv([2, 8, 8, 8], [2, 16, 6, 6]), NPU).reason == "batch 2 > max 1"
    assert one(qconv([1, 8, 16, 16], [1, 16, 14, 14], fused=["Gelu"]), NPU).reason == \
        "fused Gelu not supported by npu"
    # several failed checks are all reported
    p = one(qconv([1, 8, 16, 16], [1, 16, 2, 2], k=5, strides=[4, 4], fused=["Silu"]), TINY)
    assert p.reason == "fused Silu not supported by npu; kernel 5x5 > max 3; strides 4x4: npu allows 1, 2"


def test_float_tensors_stay_on_cpu() -> None:
    b = IRBuilder()
    x = b.input("x", F32, [1, 3, 8, 8])
    w = b.weight("w", [4, 3, 3, 3], F32)
    y = b.node("Conv", [x, w], F32, [1, 4, 6, 6], "conv")
    p = one(b.model(y), NPU)
    assert p == Placement("cpu", "float32 tensor 'x': npu runs int8 only", "Conv")
    # a standard float op with a fused activation (edgec.FusedConv, no source_op) counts as Conv
    m = qconv([1, 3, 8, 8], [1, 4, 6, 6], op="FusedConv", source="", dtype=F32, activation="Relu")
    p = one(m, NPU)
    assert p.op == "Conv" and p.reason == "float32 tensor 'x': npu runs int8 only"


def test_unsupported_ops_and_shapes() -> None:
    b = IRBuilder()
    x = b.input("x", F32, [1, 10])
    s, zp = b.const("s", np.float32(0.1)), b.const("zp", np.int8(0))
    q = b.node("QuantizeLinear", [x, s, zp], I8, [1, 10], "q")
    sm = b.node("QSoftmax", [q], I8, [1, 10], "sm", domain="edgec", source_op="Softmax", axis=-1)
    sm2 = b.node("Softmax", [q], I8, [1, 10], "sm2", axis=0)
    u = b.node("Relu", [q], I8, None, "relu")  # unknown rank
    m = b.model(sm, sm2, u)
    p = place(m, NPU)
    assert p["q"] == Placement("cpu", "float32 tensor 'x': npu runs int8 only", "QuantizeLinear")
    assert place(m, TINY)["q"] == Placement("cpu", "op QuantizeLinear not supported by npu", "QuantizeLinear")
    assert p["sm"].unit == "npu"
    assert p["sm2"].reason == "axis 0 of rank 2: npu supports the last axis only"
    assert p["relu"].reason == "dynamic or unknown shape of 'relu_out': npu needs static shapes"
    assert place(m, TINY)["sm"] == Placement("cpu", "op Softmax not supported by npu", "Softmax")


def test_matmul_pool_binary_concat() -> None:
    b = IRBuilder()
    a = b.input("a", I8, [1, 2048])
    w = b.weight("wf", [64, 2048])  # QGemm: W int8 [N, K]
    bias = b.weight("bf", [64], I32)
    fc = b.node("QGemm", [a, w, bias], I8, [1, 64], "fc", domain="edgec", source_op="MatMul")
    c = b.input("c", I8, [1, 8, 16, 16])
    pool = b.node("QAvgPool", [c], I8, [1, 8, 12, 12], "pool", domain="edgec", source_op="AveragePool",
                  kernel_shape=[5, 5])
    d = b.input("d", I8, [1, 8, 1, 1])
    add_b = b.node("QAdd", [c, d], I8, [1, 8, 16, 16], "add_b", domain="edgec", source_op="Add")
    add = b.node("QAdd", [c, c], I8, [1, 8, 16, 16], "add", domain="edgec", source_op="Add", fused=["Relu"])
    e = b.input("e", I8, [1, 16])
    mm = b.node("MatMul", [e, a], I8, [1, 2048], "mm_act")  # activation x activation (shapes aside)
    cat = b.node("Concat", [c] * 9, I8, [1, 72, 16, 16], "cat", axis=1)
    wide = b.weight("ww", [512, 16])
    fc2 = b.node("QGemm", [e, wide, b.weight("bw", [512], I32)], I8, [1, 512], "fc2", domain="edgec",
                 source_op="Gemm", fused=["Relu6"])
    m = b.model(fc, pool, add_b, add, mm, cat, fc2)

    tiny, npu = place(m, TINY), place(m, NPU)
    assert tiny["fc"].reason == "K 2048 > max 1024"
    assert tiny["fc2"].reason == "N 512 > max 256"
    assert npu["fc2"].unit == "npu"  # Relu6 is a Clip
    assert npu["fc"].unit == "npu"
    assert tiny["pool"].reason == "window 5x5 > max 3"
    assert npu["pool"].unit == "npu"
    assert tiny["add_b"].reason == "broadcast 1x8x16x16 with 1x8x1x1: npu needs equal shapes"
    assert tiny["add"].unit == "npu" and npu["add_b"].unit == "npu"
    assert "non-constant weights 'a': npu needs constant weights" in npu["mm_act"].reason
    assert npu["cat"].reason == "9 inputs > max 8"
    # MACs of QGemm (W [N, K]): N * K per row
    nodes = {n.name: n for n in m.graph}
    assert layer_macs(nodes["fc"]) == 64 * 2048 and layer_macs(nodes["fc2"]) == 512 * 16
    assert tiny["cat"].reason == "op Concat not supported by npu"


def test_place_node_and_keys() -> None:
    m = qconv([1, 8, 8, 8], [1, 8, 8, 8], pads=[1, 1, 1, 1])
    (node,) = list(m.graph)
    assert place_node(node, NPU).unit == "npu"
    assert unit_of(NPU)(node) == "npu" and unit_of(M4)(node) == "cpu"  # the callable code generators take
    node.name = ""
    assert list(place(m, NPU)) == ["QConv_0"]
