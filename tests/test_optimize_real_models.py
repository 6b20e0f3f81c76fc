"""Real exported models through `edgec compile -O1/-O2`: outputs match the original in onnxruntime
within rtol 1e-4 at two values of every symbolic dim, the result passes the full ONNX checker,
dynamic dims stay dynamic, and the graph does not grow."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402

from edgec.cli import cli  # noqa: E402
from click.testing import CliRunner  # noqa: E402

MODELS = sorted(zoo.TEST_PARAMS)
DIM_SETTINGS = ({"batch": 1, "seq": 5}, {"batch": 3, "seq": 11})


def _run(path: Path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _nodes(g: onnx.GraphProto) -> int:
    return sum(1 + sum(_nodes(a.g) if a.type == onnx.AttributeProto.GRAPH else sum(_nodes(s) for s in a.graphs)
                       for a in n.attribute) for n in g.node)


def _symbols(model: onnx.ModelProto):
    return [[d.dim_param for d in i.type.tensor_type.shape.dim if d.dim_param] for i in model.graph.input]


@pytest.mark.parametrize("level", ["-O1", "-O2"])
@pytest.mark.parametrize("name", MODELS)
def test_optimized_model_matches_original(name: str, level: str, tmp_path: Path) -> None:
    src = zoo.get_path(name, **zoo.TEST_PARAMS[name])
    out = tmp_path / "out.onnx"
    r = CliRunner().invoke(cli, ["compile", str(src), level, "-o", str(out)])
    assert r.exit_code == 0, r.output
    original, optimized = onnx.load(str(src)), onnx.load(str(out))
    onnx.checker.check_model(str(out), full_check=True)
    assert _nodes(optimized.graph) <= _nodes(original.graph)
    assert _symbols(optimized) == _symbols(original), "a dynamic dim was frozen"
    for dims in DIM_SETTINGS:
        feeds = zoo.make_inputs(original, seed=1, dims=dims)
        want, got = _run(src, feeds), _run(out, feeds)
        for w, g in zip(want, got):
            assert w.dtype == g.dtype and w.shape == g.shape
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(w).max())))
