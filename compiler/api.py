"""The Python API: load, optimize and save a model in three calls.

    import edgec
    model = edgec.load("model.onnx")
    edgec.optimize(model, opt_level=2)          # or pipeline="dce,fold-constants"
    edgec.save(model, "out.onnx")
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

from .ir import Model
from .passmanager import PassContext, PassManager, PassManagerOptions, parse_pipeline, preset_pipeline

__all__ = ["load", "save", "optimize"]


def load(path: str) -> Model:
    """Read an ONNX file (external data is mapped lazily, never copied whole)."""
    from .frontend.onnx_import import load_model

    return load_model(path)


def save(model: Model, path: str, *, external_data: Optional[bool] = None, contrib_ops: bool = False) -> None:
    """Write ``model`` as ONNX, atomically; edgec-domain ops are lowered first to what onnxruntime runs
    (standard ONNX, or its com.microsoft ops with ``contrib_ops``)."""
    from .backends.onnx_export import save_model
    from .backends.onnx_lowering import has_edgec_ops, lower_for_onnx

    if has_edgec_ops(model):
        lower_for_onnx(model, contrib_ops=contrib_ops)
    save_model(model, path, external_data=external_data)


def optimize(model: Model, *, opt_level: Optional[int] = 2, pipeline: Optional[str] = None,
             disable: Sequence[str] = (), verify_each: bool = True, target: str = "onnx",
             contrib_ops: bool = False) -> Dict[str, Dict[str, int]]:
    """Run the ``-O<opt_level>`` preset, then ``pipeline`` (if given), in place; returns pass statistics.

    ``target`` (and ``contrib_ops`` for ONNX) tells passes what the model will run on, as
    ``edgec compile --target`` does: a pattern the target cannot use is not recovered.
    """
    pipe = preset_pipeline(opt_level) if opt_level is not None else parse_pipeline("")
    if pipeline:
        pipe = pipe + parse_pipeline(pipeline)
    if disable:
        pipe = pipe.without(list(disable))
    ctx = PassContext(resources={"target": {"name": target, "contrib_ops": contrib_ops}})
    PassManager.with_options(pipe, PassManagerOptions(verify_each=verify_each), ctx=ctx).run(model)
    return ctx.stats
