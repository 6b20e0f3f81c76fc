"""Helpers for the target tests: sample paths and a tiny IR builder for integer (edgec Q*) models."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

from edgec.ir import Graph, Model, Node, Value
from edgec.ir.dtypes import DType
from edgec.ir.types import Shape, TensorType
from edgec.targets import TargetDescription, load_target

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLES = os.path.join(ROOT, "samples", "targets")

I8, F32, I32 = DType.INT8, DType.FLOAT, DType.INT32


def sample(name: str) -> TargetDescription:
    """A target from samples/targets/<name>.toml."""
    return load_target(os.path.join(SAMPLES, f"{name}.toml"))


class IRBuilder:
    """Builds a main graph node by node; every result gets an explicit type."""

    def __init__(self) -> None:
        self.g = Graph("g")
        self.rng = np.random.default_rng(7)

    def input(self, name: str, dtype: DType, dims: Sequence[int]) -> Value:
        v = Value(name, TensorType(dtype, Shape(tuple(dims))))
        self.g.add_input(v)
        return v

    def const(self, name: str, array: np.ndarray) -> Value:
        return self.g.add_constant(np.asarray(array), name)

    def weight(self, name: str, dims: Sequence[int], dtype: DType = I8, zeros: float = 0.0) -> Value:
        """Random nonzero weights; a fraction ``zeros`` of them (rounded down) set to zero."""
        n = int(np.prod(dims))
        if dtype == F32:
            a = self.rng.uniform(0.5, 1.0, n).astype(np.float32)
        else:
            a = self.rng.integers(1, 100, n).astype(dtype.numpy)
        a[: int(n * zeros)] = 0
        return self.const(name, a.reshape(tuple(dims)))

    def node(self, op: str, inputs: Sequence[Optional[Value]], dtype: DType, dims: Optional[Sequence[int]],
             name: str, domain: str = "", **attrs: Any) -> Value:
        out = Value(f"{name}_out", TensorType(dtype, Shape(None if dims is None else tuple(dims))))
        n = Node(op, list(inputs), [out], attrs, domain=domain, name=name)
        self.g.append(n)
        return out

    def model(self, *outputs: Value) -> Model:
        for v in outputs:
            self.g.add_output(v)
        return Model(self.g, {"": 17, "edgec": 1})


def small_cnn(path: str, hw: int = 16) -> None:
    """A float CNN (conv-relu-conv-relu-maxpool-gap-flatten-gemm) saved as ONNX at ``path``."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    r = np.random.default_rng(0)

    def w(n: str, s: Sequence[int]) -> "onnx.TensorProto":
        return nh.from_array((r.standard_normal(s) * 0.3).astype(np.float32), n)

    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
             h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             h.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             h.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
             h.make_node("Flatten", ["g"], ["f"], name="flat"),
             h.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="fc")]
    g = h.make_graph(nodes, "cnn", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, hw, hw])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 10])],
                     [w("w1", [8, 3, 3, 3]), w("b1", [8]), w("w2", [16, 8, 3, 3]), w("b2", [16]),
                      w("wf", [10, 16]), w("bf", [10])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9), path)
