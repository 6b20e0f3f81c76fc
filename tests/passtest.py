"""Differential pass testing: run a pipeline on IR text, compare the IR with what is expected, and
run the model before and after on seeded inputs (onnxruntime, or onnx.reference where ORT cannot).

    check_pass(BEFORE, "dce", EXPECTED)                     # bit-exact outputs
    check_pass(BEFORE, "fuse-conv-bn", EXPECTED, rtol=1e-5) # reassociating rewrite
    check_pass(BEFORE, "fuse-conv-bn", None, fires=False)   # must not fire: IR unchanged
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import onnxruntime as ort

from edgec.backends.onnx_export import to_proto
from edgec.ir import DType, Model, TensorType
from edgec.ir.parser import parse_model
from edgec.ir.printer import print_model
from edgec.ir.verifier import verify
from edgec.passmanager import PassManager, PassManagerOptions

SYMBOL_VALUES = (1, 3)  # every symbolic dim is tested at these values


def run_pipeline(model: Model, pipeline: str) -> bool:
    """Run ``pipeline`` with the verifier after every pass; True when anything changed."""
    return PassManager.with_options(pipeline, PassManagerOptions(verify_each=True, verify_unchanged=True)).run(model)


def canonical(model: Model) -> str:
    """IR text with node names, locations, rule tags and internal value names normalised away,
    so that expected IR can be written by hand without guessing generated names."""
    text = print_model(model, elide_limit=None)
    text = re.sub(r'\s*loc\("(?:[^"\\]|\\.)*"\)', "", text)
    rule = r'"edgec\.rule": "(?:[^"\\]|\\.)*"'
    text = re.sub(", " + rule, "", text)
    text = re.sub(rule + "(, )?", "", text)
    text = re.sub(r'\s*#\{meta=\{\}\}', "", text)
    interface = {v.name for v in list(model.graph.inputs) + list(model.graph.outputs)}
    names: Dict[str, str] = {}

    def rename(m: re.Match) -> str:
        raw = m.group(0)
        name = raw[2:-1] if raw.startswith('%"') else raw[1:]
        if name in interface:
            return raw
        if name not in names:
            names[name] = f"%v{len(names)}"
        return names[name]

    return re.sub(r'%"(?:[^"\\]|\\.)*"|%[A-Za-z0-9_.]+', rename, text)


def random_inputs(model: Model, seed: int, symbol_value: int) -> Dict[str, np.ndarray]:
    """Seeded inputs for every non-constant graph input; symbolic dims take ``symbol_value``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in model.graph.inputs:
        if v.const is not None:
            continue
        t = v.type
        assert isinstance(t, TensorType) and t.shape.dims is not None, f"input {v.name} needs a tensor type"
        dims = [d if isinstance(d, int) else symbol_value for d in t.shape.dims]
        if t.dtype.is_float:
            arr = rng.standard_normal(dims).astype(t.dtype.numpy)
        elif t.dtype == DType.BOOL:
            arr = np.asarray(rng.random(dims) < 0.5)
        else:
            arr = rng.integers(0, 4, dims).astype(t.dtype.numpy)
        feeds[v.name] = arr
    return feeds


def run_model(model: Model, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    """Outputs of the model in onnxruntime (one thread, no ORT optimizations), or onnx.reference.

    edgec-domain ops are lowered to standard ONNX first (on a copy)."""
    from edgec.backends.onnx_lowering import has_edgec_ops, lower_for_onnx

    if has_edgec_ops(model):
        model = parse_model(print_model(model, elide_limit=None))
        lower_for_onnx(model)
    proto = to_proto(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception:  # an op or type ORT lacks: the spec's reference evaluator decides
        from onnx.reference import ReferenceEvaluator
        return list(ReferenceEvaluator(proto).run(None, feeds))
    return list(sess.run(None, feeds))


def assert_same_outputs(before: Model, after: Model, *, rtol: float = 0.0, atol: float = 0.0, seeds: Sequence[int] = (0, 1, 2)) -> None:
    """The two models agree on seeded inputs at every symbolic-dim value (bit-exact when rtol=atol=0)."""
    symbolic = any(isinstance(d, str) for v in before.graph.inputs if isinstance(v.type, TensorType)
                   for d in (v.type.shape.dims or ()))
    for sym in SYMBOL_VALUES if symbolic else SYMBOL_VALUES[:1]:
        for seed in seeds:
            feeds = random_inputs(before, seed, sym)
            want = run_model(before, feeds)
            got = run_model(after, feeds)
            assert len(want) == len(got)
            for i, (w, g) in enumerate(zip(want, got)):
                assert w.dtype == g.dtype and w.shape == g.shape, f"output {i}: {w.dtype}{w.shape} vs {g.dtype}{g.shape}"
                if rtol == 0 and atol == 0:
                    assert np.array_equal(w, g, equal_nan=True), f"output {i} differs (seed {seed}, dim {sym})"
                else:
                    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {i} (seed {seed}, dim {sym})")


def check_pass(before: Union[str, Model], pipeline: str, expected: Optional[str] = None, *, fires: bool = True,
               rtol: float = 0.0, atol: float = 0.0, run: bool = True) -> Model:
    """Run ``pipeline`` on ``before`` (IR text), check the resulting IR and the outputs.

    ``expected`` is IR text compared after :func:`canonical`; ``fires=False`` asserts the IR did not
    change. With ``run`` the model is executed before and after (tolerances ``rtol``/``atol``).
    """
    original = parse_model(before) if isinstance(before, str) else before
    verify(original)
    reference = parse_model(print_model(original, elide_limit=None))
    model = parse_model(print_model(original, elide_limit=None))
    changed = run_pipeline(model, pipeline)
    if not fires:
        assert canonical(model) == canonical(reference), f"{pipeline} changed IR it must leave alone:\n{print_model(model)}"
        assert not changed, f"{pipeline} reported a change but the IR is the same"
    else:
        assert changed, f"{pipeline} did not fire:\n{print_model(model)}"
    if expected is not None:
        want = canonical(parse_model(expected))
        got = canonical(model)
        assert got == want, f"IR after {pipeline}:\n{got}\nexpected:\n{want}"
    if run:
        assert_same_outputs(reference, model, rtol=rtol, atol=atol)
    return model


def op_types(model: Model) -> List[str]:
    """Op types of the main graph in order (``domain.Op`` outside the default domain)."""
    return [n.op_type if not n.domain else f"{n.domain}.{n.op_type}" for n in model.graph]
