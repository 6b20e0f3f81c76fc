"""Round-trip real architectures (the test zoo) through edgec's ONNX importer and exporter.

For every zoo model (small test variants): ``load_model`` -> ``save_model`` must give a model
that passes ``onnx.checker.check_model(full_check=True)``, keeps every node (count, names, op
types, also inside subgraphs) and graph input / output names, and makes onnxruntime produce
bit-identical outputs at two values of each symbolic dim. Exports are cached by the zoo
(``$EDGEC_ZOO_CACHE``), so only the first run pays for torch.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402

MODELS = sorted(zoo.TEST_PARAMS)
#: Two settings of the symbolic dims (batch, sequence length) each model is run at.
DIM_SETTINGS = ({"batch": 1, "seq": 5}, {"batch": 3, "seq": 11})


def _session(path: Path) -> "ort.InferenceSession":
    """A single-threaded, sequential CPU session (deterministic and fair on small CI boxes)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _graphs(graph: onnx.GraphProto, where: str = "main") -> Iterator[Tuple[str, onnx.GraphProto]]:
    """Yield ``(location, graph)`` for ``graph`` and, recursively, every subgraph attribute."""
    yield where, graph
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for i, sub in enumerate(subs):
                yield from _graphs(sub, f"{where}/{node.name or node.op_type}.{attr.name}[{i}]")


def _node_signature(model: onnx.ModelProto) -> Dict[str, List[Tuple[str, str, str]]]:
    """Per (sub)graph location: the sorted (domain, op_type, name) of its nodes."""
    return {loc: sorted((n.domain, n.op_type, n.name) for n in g.node) for loc, g in _graphs(model.graph)}


def _io_names(model: onnx.ModelProto) -> Tuple[List[str], List[str]]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits], [o.name for o in model.graph.output]


@pytest.fixture(scope="module")
def edgec_io():
    """edgec's ONNX ``load_model`` and ``save_model`` (skips while they are not written yet)."""
    importer = pytest.importorskip("edgec.frontend.onnx_import")
    exporter = pytest.importorskip("edgec.backends.onnx_export")
    return importer.load_model, exporter.save_model


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_is_valid(name: str) -> None:
    """The zoo itself: every model passes the full checker and runs in onnxruntime."""
    path = zoo.get_path(name, **zoo.TEST_PARAMS[name])
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    outs = _session(path).run(None, zoo.make_inputs(proto, dims=DIM_SETTINGS[0]))
    assert all(np.isfinite(o).all() for o in outs if np.issubdtype(o.dtype, np.floating))


@pytest.mark.parametrize("name", MODELS)
def test_roundtrip_real_model(name: str, edgec_io, tmp_path: Path) -> None:
    """edgec load -> save keeps the model valid, structurally identical and bit-exact in ORT."""
    load_model, save_model = edgec_io
    src = zoo.get_path(name, **zoo.TEST_PARAMS[name])
    out = tmp_path / f"{name}.edgec.onnx"
    save_model(load_model(str(src)), str(out))

    onnx.checker.check_model(str(out), full_check=True)
    original, result = onnx.load(str(src)), onnx.load(str(out))

    assert _io_names(result) == _io_names(original)
    want, got = _node_signature(original), _node_signature(result)
    assert list(got) == list(want), "subgraph structure changed"
    for loc in want:
        assert len(got[loc]) == len(want[loc]), f"{loc}: node count {len(got[loc])} != {len(want[loc])}"
        missing = Counter(want[loc]) - Counter(got[loc])
        extra = Counter(got[loc]) - Counter(want[loc])
        assert not missing and not extra, f"{loc}: lost {sorted(missing)[:5]}, gained {sorted(extra)[:5]}"

    ref_sess, new_sess = _session(src), _session(out)
    out_names = [o.name for o in ref_sess.get_outputs()]
    assert [o.name for o in new_sess.get_outputs()] == out_names
    for dims in DIM_SETTINGS:
        feeds = zoo.make_inputs(original, seed=1, dims=dims)
        for oname, ref, new in zip(out_names, ref_sess.run(None, feeds), new_sess.run(None, feeds)):
            assert ref.dtype == new.dtype and ref.shape == new.shape, f"{oname} at {dims}"
            np.testing.assert_array_equal(new, ref, err_msg=f"output {oname} differs at {dims}")


def test_zoo_is_deterministic() -> None:
    """Building the same model twice gives byte-identical protos (fixed seeds, no timestamps)."""
    params = zoo.TEST_PARAMS["resnet18"]
    assert zoo.resnet18(**params).SerializeToString() == zoo.resnet18(**params).SerializeToString()


def test_make_inputs_are_realistic() -> None:
    """Token ids stay in the vocabulary, masks are 0/1 with at least one 1 per row, dims apply."""
    params = zoo.TEST_PARAMS["bert_encoder"]
    feeds = zoo.make_inputs(zoo.get("bert_encoder", **params), seed=0, dims={"batch": 4, "seq": 9})
    assert feeds["input_ids"].shape == (4, 9) and feeds["input_ids"].dtype == np.int64
    assert 0 <= feeds["input_ids"].min() and feeds["input_ids"].max() < params["vocab"]
    mask = feeds["attention_mask"]
    assert set(np.unique(mask)) <= {0, 1} and (mask.sum(axis=1) >= 1).all()
    assert feeds["token_type_ids"].max() < 2
