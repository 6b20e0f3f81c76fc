"""Channel groups of hand-built graphs: chains, residuals, depthwise, concat/split, Flatten->Gemm,
grouped convs and unknown ops."""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edgec.frontend.onnx_import import from_proto  # noqa: E402
from edgec.ir import Model  # noqa: E402
from edgec.prune.dependency import ChannelGroup, channel_groups  # noqa: E402


class Builder:
    """A tiny ONNX graph builder (random weights, seeded) for dependency and pruning tests."""

    def __init__(self, in_shape: Sequence[int] = (1, 3, 8, 8), seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self.in_shape = list(in_shape)
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}{self.n}"

    def const(self, arr: np.ndarray, hint: str = "c") -> str:
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(self, op: str, inputs: Sequence[str], n_out: int = 1, name: str = "", **attrs) -> List[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name or self.name(op), **attrs))
        return outs

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1, bias: bool = True, name: str = "") -> str:
        w = self.const(self.rng.standard_normal((c_out, c_in // group, k, k)).astype(np.float32) * 0.3, "w")
        ins = [x, w]
        if bias:
            ins.append(self.const(self.rng.standard_normal(c_out).astype(np.float32) * 0.1, "b"))
        return self.op("Conv", ins, name=name, pads=[k // 2] * 4, group=group)[0]

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        p = [self.const((r.random(c) + 0.5).astype(np.float32), "g"), self.const(r.standard_normal(c).astype(np.float32) * 0.1, "be"),
             self.const(r.standard_normal(c).astype(np.float32) * 0.1, "mu"), self.const((r.random(c) + 0.5).astype(np.float32), "var")]
        return self.op("BatchNormalization", [x, *p])[0]

    def gemm(self, x: str, k: int, n: int, name: str = "") -> str:
        w = self.const(self.rng.standard_normal((n, k)).astype(np.float32) * 0.1, "fc")
        b = self.const(self.rng.standard_normal(n).astype(np.float32) * 0.1, "fcb")
        return self.op("Gemm", [x, w, b], name=name, transB=1)[0]

    def model(self, out: str, opset: int = 17) -> Model:
        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *self.in_shape[1:]])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        return from_proto(proto)


def by_producer(groups: Sequence[ChannelGroup]) -> Dict[str, ChannelGroup]:
    return {p.name: g for g in groups for p in g.producers}


def tensors(g: ChannelGroup) -> List[Tuple[str, int]]:
    return sorted(set(g.tensors))


# --- graphs shared with the pruning tests --------------------------------------------------------
def conv_chain() -> Model:
    b = Builder()
    h = b.op("Relu", [b.bn(b.conv("x", 3, 8, name="c1"), 8)])[0]
    h = b.op("Relu", [b.bn(b.conv(h, 8, 16, name="c2"), 16)])[0]
    h = b.op("Relu", [b.conv(h, 16, 16, name="c3")])[0]
    h = b.op("GlobalAveragePool", [h])[0]
    h = b.op("Flatten", [h])[0]
    return b.model(b.gemm(h, 16, 4, name="fc"))


def residual() -> Model:
    b = Builder()
    stem = b.op("Relu", [b.conv("x", 3, 8, name="stem")])[0]
    h = b.op("Relu", [b.conv(stem, 8, 8, name="a1")])[0]
    h = b.conv(h, 8, 8, name="a2")
    s = b.op("Relu", b.op("Add", [h, stem]))[0]
    h2 = b.op("Relu", [b.conv(s, 8, 8, name="b1")])[0]
    s2 = b.op("Add", [b.conv(h2, 8, 8, name="b2"), s])[0]
    return b.model(b.conv(s2, 8, 4, name="head"))


def depthwise() -> Model:
    b = Builder()
    h = b.op("Clip", [b.conv("x", 3, 12, k=1, name="expand"), b.const(np.float32(0)), b.const(np.float32(6))])[0]
    h = b.op("Relu", [b.bn(b.conv(h, 12, 12, k=3, group=12, name="dw"), 12)])[0]
    return b.model(b.conv(h, 12, 4, k=1, name="project"))


def concat_split() -> Model:
    b = Builder()
    p = b.conv("x", 3, 6, name="p")
    q = b.conv("x", 3, 10, name="q")
    cat = b.op("Concat", [p, q], axis=1)[0]
    h = b.op("Relu", [cat])[0]
    s1, s2 = b.op("Split", [h, b.const(np.array([4, 12], np.int64))], n_out=2, axis=1)
    a = b.conv(s1, 4, 5, name="ca")
    c = b.conv(s2, 12, 5, name="cb")
    return b.model(b.op("Add", [a, c])[0])


def flatten_gemm() -> Model:
    b = Builder((1, 3, 4, 4))
    h = b.op("MaxPool", [b.op("Relu", [b.conv("x", 3, 8, name="c1")])[0]], kernel_shape=[2, 2], strides=[2, 2])[0]
    h = b.op("Flatten", [h], axis=1)[0]  # 8 channels x 2x2 positions -> 32 features
    return b.model(b.gemm(h, 32, 5, name="fc"))


# --- tests ---------------------------------------------------------------------------------------
def test_conv_chain_groups() -> None:
    groups = by_producer(channel_groups(conv_chain()))
    g1 = groups["c1"]
    assert g1.prunable and g1.size == 8
    names = tensors(g1)
    # c1's W axis 0 and bias, the BN params, c2's W axis 1
    assert sum(1 for _, a in names if a == 0) == 6 and sum(1 for _, a in names if a == 1) == 1
    g3 = groups["c3"]
    assert g3.prunable and any(m.node.name == "fc" and m.axis == 1 for m in g3.members)  # GAP->Flatten->Gemm K
    assert not groups["fc"].prunable and "graph output" in groups["fc"].reasons[0]


def test_residual_couples_all_branches() -> None:
    groups = by_producer(channel_groups(residual()))
    g = groups["stem"]
    assert g is groups["a2"] is groups["b2"]  # both branches and the shortcut share one group
    consumers = {m.node.name for m in g.members if m.role == "in"}
    assert consumers == {"a1", "b1", "head"}
    assert groups["a1"] is not g and groups["a1"].prunable and groups["b1"].prunable


def test_depthwise_couples_through() -> None:
    groups = by_producer(channel_groups(depthwise()))
    g = groups["expand"]
    assert "dw" not in groups and g.prunable and g.size == 12  # dw passes expand's channels through
    roles = {(m.node.op_type, m.role) for m in g.members}
    assert ("Conv", "param") in roles and ("BatchNormalization", "param") in roles
    assert any(m.node.name == "project" and m.axis == 1 for m in g.members)


def test_concat_offsets_and_split() -> None:
    groups = by_producer(channel_groups(concat_split()))
    gp, gq = groups["p"], groups["q"]
    assert gp.prunable and gq.prunable and gp is not gq
    # concat: q's channels sit at offset 6; split [4, 12]: p's 0-3 go to ca, p's 4-5 and all of q to cb
    ca = [m for m in gp.members if m.node.name == "ca"][0]
    assert [(s.start, s.stop) for s in ca.layout.segments] == [(0, 4)]
    cb = [m for m in gq.members if m.node.name == "cb"][0]
    segs = [(s.start, s.stop, s.group == gq.id) for s in cb.layout.segments]
    assert segs == [(4, 6, False), (0, 10, True)]


def test_flatten_gemm_blocks() -> None:
    groups = by_producer(channel_groups(flatten_gemm()))
    g = groups["c1"]
    fc = [m for m in g.members if m.node.name == "fc"][0]
    assert g.prunable and fc.axis == 1 and fc.layout.block == 4  # each channel is a 2x2 block of K


def test_grouped_conv_is_frozen() -> None:
    b = Builder()
    h = b.conv("x", 3, 8, name="c1")
    h = b.conv(h, 8, 8, group=2, name="grouped")
    groups = by_producer(channel_groups(b.model(b.conv(h, 8, 4, name="c3"))))
    assert not groups["c1"].prunable and "grouped conv" in groups["c1"].reasons[0]
    assert not groups["grouped"].prunable


def test_unknown_op_freezes_group() -> None:
    b = Builder()
    h = b.conv("x", 3, 8, name="c1")
    h = b.op("LRN", [h], size=3)[0]
    h2 = b.conv(h, 8, 6, name="c2")
    r = b.op("Reshape", [h2, b.const(np.array([0, -1], np.int64))])[0]
    groups = by_producer(channel_groups(b.model(r)))
    assert not groups["c1"].prunable and "unknown op" in groups["c1"].reasons[0]
    assert not groups["c2"].prunable  # Reshape is never guessed
