"""The Python API: load, optimize and save a model in three calls.

    import edgec
    model = edgec.load("model.onnx")
    edgec.optimize(model, opt_level=2)          # or pipeline="dce,fold-constants"
    edgec.save(model, "out.onnx")

    report = edgec.quantize(model, "cal.npz", mode="int8", max_drop=0.5)   # in place; returns the report
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from .ir import Model
from .passmanager import PassContext, PassManager, PassManagerOptions, parse_pipeline, preset_pipeline

__all__ = ["load", "save", "optimize", "quantize"]


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


def quantize(model: Model, calibration: Any = None, *, mode: str = "int8", method: str = "minmax",
             max_drop: Optional[float] = None, metric: Optional[str] = None, eval_data: Any = None,
             per_channel: bool = True, equalize: bool = False, bias_correction: bool = False,
             samples: Optional[int] = None, time_budget: float = 300.0, sensitivity: bool = False,
             opt_level: Optional[int] = None, report_path: Optional[str] = None,
             progress: bool = False, reduce_range: Optional[bool] = None) -> Dict[str, Any]:
    """Quantize ``model`` in place as ``edgec compile --quantize`` does and return the report dict.

    ``reduce_range`` (7-bit weights): None decides as ``--reduce-range auto`` (on for onnxruntime on an
    x86 CPU without VNNI).

    ``mode``: ``int8``, ``uint8`` (static; need ``calibration``), ``dynamic``, ``int8-weights``,
    ``int4-weights``. ``calibration`` / ``eval_data``: a spec (``cal.npz``, a folder,
    ``module:function``, ``synthetic[:N]``) or a :class:`~edgec.quant.data.CalibrationData`;
    accuracy is measured on ``eval_data`` (default: the calibration data). ``max_drop`` with
    ``metric`` (``top1`` | ``cosine`` | ``sqnr``) keeps the most sensitive layers float until the
    bound holds or ``time_budget`` seconds pass (``report['search']['summary']`` says which).
    ``opt_level`` runs that preset first. The report format is described in :mod:`edgec.quant.report`.
    """
    from .backends.onnx_export import to_proto
    from .passes.quantize import initializer_bytes
    from .quant.accuracy import QuantConfig, copy_model, quantize_model, replace_model
    from .quant.data import CalibrationData, load_calibration
    from .quant.report import build_report, write_report

    if opt_level is not None:
        optimize(model, opt_level=opt_level)

    def data(spec: Any, limit: Optional[int]) -> Optional[CalibrationData]:
        if spec is None or isinstance(spec, CalibrationData):
            return spec
        return load_calibration(str(spec), model, max_samples=limit)

    from .quant.host import x86_without_vnni

    cfg = QuantConfig(mode=mode, method=method, per_channel=per_channel, equalize=equalize,
                      bias_correction=bias_correction,
                      reduce_range=x86_without_vnni() if reduce_range is None else reduce_range)
    cal, ev = data(calibration, samples), data(eval_data, None)
    weights_float = initializer_bytes(model)
    file_float = to_proto(copy_model(model)).ByteSize()
    result = quantize_model(model, cfg, calibration=cal, eval_data=ev, max_drop=max_drop, metric=metric,
                            time_budget=time_budget, sensitivity=sensitivity, progress=progress)
    PassManager.with_options(parse_pipeline("repeat{max-iters=4}(cse,dce)"), PassManagerOptions(),
                             ctx=PassContext()).run(result.model)
    if result.model is not model:
        replace_model(model, result.model)
        result.model = model
    options = {"quantize": mode, "calibration_method": method, "calibration_samples": samples,
               "per_channel": per_channel, "equalize": equalize, "bias_correction": bias_correction,
               "max_drop": max_drop, "metric": metric, "time_budget": time_budget}
    report = build_report(result, mode=mode, options=options, calibration=cal, eval_data=ev,
                          weight_bytes={"float": weights_float, "quantized": initializer_bytes(model)},
                          file_bytes={"float": file_float, "quantized": to_proto(copy_model(model)).ByteSize()})
    if report_path:
        write_report(report_path, report)
    return report
