"""Fusion passes on real zoo models: fewer nodes, same outputs in onnxruntime after lowering."""

from __future__ import annotations

from typing import List

import numpy as np
import onnxruntime as ort
import pytest

import edgec.passes  # noqa: F401 - registers the passes
import zoo
from edgec.backends.onnx_export import to_proto
from edgec.backends.onnx_lowering import lower_for_onnx
from edgec.frontend.onnx_import import from_proto
from edgec.passmanager import PassManager

PIPELINE = "recover-patterns,fuse-batchnorm,fuse-affine,fuse-pad,fuse-activation,dce"

#: lower bounds on how many nodes the pipeline removes (small test variants)
MIN_REMOVED = {"resnet18": 25, "mobilenetv2": 90, "bert_encoder": 15, "vit": 15}


def _run(proto, feeds) -> List[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("contrib", [False, True])
@pytest.mark.parametrize("name", sorted(MIN_REMOVED))
def test_zoo_model(name: str, contrib: bool) -> None:
    proto = zoo.get(name, **zoo.TEST_PARAMS[name])
    model = from_proto(proto, None)
    before = len(model.graph)
    PassManager(PIPELINE).run(model)
    assert before - len(model.graph) >= MIN_REMOVED[name], f"{name}: {before} -> {len(model.graph)} nodes"
    assert any(n.domain == "edgec" for n in model.graph)
    lower_for_onnx(model, contrib_ops=contrib)
    lowered = to_proto(model)
    for dims in ({"batch": 1, "seq": 5}, {"batch": 3, "seq": 8}):
        feeds = zoo.make_inputs(proto, seed=0, dims=dims)
        for got, want in zip(_run(lowered, feeds), _run(proto, feeds)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
