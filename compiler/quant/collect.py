"""Run the float model in onnxruntime with chosen intermediate tensors exposed, and feed observers.

``ModelRunner(model, outputs).run(feeds)`` builds one CPU session whose graph outputs are the
requested values (the caller's model is never changed: the exported proto gets the extra outputs;
edgec-domain ops are lowered on a copy). ``run_model`` is the one-shot form with a small session
cache keyed by the exported bytes. ``collect_statistics`` makes one pass over calibration data,
batch by batch, folding every requested tensor into a :class:`TensorStats` and dropping the
activations before the next batch: peak memory is one batch's activations, whatever the data size.
"""

from __future__ import annotations

import collections
import hashlib
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from ..backends.onnx_export import to_proto
from ..backends.onnx_lowering import has_edgec_ops, lower_for_onnx
from ..errors import CalibrationError
from ..frontend.onnx_import import from_proto
from ..ir.core import Model, Value
from .data import CalibrationData
from .observers import TensorStats
from .progress import Progress

__all__ = ["ModelRunner", "run_model", "collect_statistics", "clear_session_cache"]

_PROTO_LIMIT = 1_900_000_000  # protobuf cannot serialize 2 GiB; above this the session reads a temp file


def _values_by_name(model: Model) -> Dict[str, Value]:
    g = model.graph
    out: Dict[str, Value] = {}
    for v in g.values():
        out.setdefault(v.name, v)
    for v in g.outputs:
        out.setdefault(v.name, v)
    return out


class _Prepared:
    """An exported model whose graph outputs are the requested non-input, non-constant values."""

    def __init__(self, model: Model, names: Sequence[str]) -> None:
        values = _values_by_name(model)
        self.names = list(names)
        self.inputs: List[str] = []  # served from the feeds
        self.consts: Dict[str, np.ndarray] = {}
        self.computed: List[str] = []
        self.graph_inputs = {v.name: v for v in model.graph.inputs}
        for n in dict.fromkeys(self.names):
            v = values.get(n)
            if v is None:
                raise CalibrationError(f"tensor '{n}' is not a value of the main graph")
            if v.is_graph_input():
                self.inputs.append(n)
            elif v.is_constant() and v.producer is None:
                self.consts[n] = np.asarray(v.const.numpy())  # type: ignore[union-attr]
            else:
                self.computed.append(n)
        src = model
        if has_edgec_ops(model):
            # lower a copy; requested values become its graph outputs first, so rewrites keep their names
            src = from_proto(to_proto(model), model.base_dir, check=False)
            copied = _values_by_name(src)
            outs = {v.name for v in src.graph.outputs}
            for n in self.computed:
                if n not in outs:
                    src.graph.add_output(copied[n])
                    outs.add(n)
            lower_for_onnx(src)
        proto = to_proto(src)
        g = proto.graph
        have = {o.name for o in g.output}
        infos = {vi.name: i for i, vi in enumerate(g.value_info)}
        defined = {o for node in g.node for o in node.output} | {i.name for i in g.input}
        for n in self.computed:
            if n in have:
                continue
            if n not in defined:
                raise CalibrationError(f"tensor '{n}' disappeared when edgec ops were lowered for onnxruntime")
            if n in infos:
                g.output.append(g.value_info[infos[n]])
            else:
                g.output.append(onnx.ValueInfoProto(name=n))
        self.proto = proto

    def source(self) -> Tuple[Any, Optional[tempfile.TemporaryDirectory]]:
        """Bytes for the session, or a path into a temporary folder for models beyond protobuf's limit."""
        if self.proto.ByteSize() < _PROTO_LIMIT:
            return self.proto.SerializeToString(), None
        tmp = tempfile.TemporaryDirectory(prefix="edgec-calib-")
        path = os.path.join(tmp.name, "model.onnx")
        onnx.save_model(self.proto, path, save_as_external_data=True, location="model.onnx.data")
        return path, tmp


def _session(src: Any, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads > 0:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        raise CalibrationError(f"onnxruntime cannot load the model for calibration: {str(e).splitlines()[0]}") from None


class ModelRunner:
    """One onnxruntime CPU session computing ``outputs`` (default: the graph outputs) of ``model``.

    Graph inputs among ``outputs`` are echoed from the feeds, constants read from the IR. The model
    is exported once at construction; later changes to it are not seen.
    """

    def __init__(self, model: Model, outputs: Optional[Sequence[str]] = None, *, threads: int = 1) -> None:
        names = list(outputs) if outputs is not None else [v.name for v in model.graph.outputs]
        self._prep = _Prepared(model, names)
        src, self._tmp = self._prep.source()
        self._sess = _session(src, threads)
        self._prep.proto = None  # type: ignore[assignment]  # free the exported copy
        self._feed_names = [i.name for i in self._sess.get_inputs()]
        self._feed_types = {i.name: i.type for i in self._sess.get_inputs()}

    @property
    def outputs(self) -> List[str]:
        return list(self._prep.names)

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The requested values for one set of feeds, by name (in the requested order)."""
        return _run(self._sess, self._prep, self._feed_names, feeds)

    def close(self) -> None:
        self._sess = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _run(sess: Any, prep: _Prepared, feed_names: List[str], feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    ready: Dict[str, np.ndarray] = {}
    for name in feed_names:
        if name not in feeds:
            v = prep.graph_inputs.get(name)
            if v is not None and v.const is not None:
                continue  # an initializer-backed input: its default applies
            raise CalibrationError(f"no feed for model input '{name}'")
        x = np.asarray(feeds[name])
        v = prep.graph_inputs.get(name)
        want = np.dtype(v.dtype.numpy) if v is not None and v.dtype is not None else x.dtype
        if x.dtype != want:
            if not np.can_cast(x.dtype, want, casting="same_kind"):
                raise CalibrationError(f"feed for input '{name}' has type {x.dtype}, the model wants {want}")
            x = x.astype(want)
        ready[name] = x
    try:
        got = sess.run(prep.computed, ready) if prep.computed else []
    except Exception as e:  # noqa: BLE001
        raise CalibrationError(f"onnxruntime failed on a calibration batch: {str(e).splitlines()[0]}") from None
    computed = dict(zip(prep.computed, got))
    out: Dict[str, np.ndarray] = {}
    for n in prep.names:
        if n in computed:
            out[n] = computed[n]
        elif n in prep.consts:
            out[n] = prep.consts[n]
        elif n in feeds:
            out[n] = np.asarray(feeds[n])
        else:
            out[n] = prep.graph_inputs[n].const.numpy()  # type: ignore[union-attr]
    return out


_CACHE: "collections.OrderedDict[Tuple[str, int], Tuple[Any, List[str], Any]]" = collections.OrderedDict()
_CACHE_SIZE = 4


def clear_session_cache() -> None:
    """Drop the sessions ``run_model`` keeps."""
    for _, _, tmp in _CACHE.values():
        if tmp is not None:
            tmp.cleanup()
    _CACHE.clear()


def run_model(model: Model, feeds: Dict[str, np.ndarray], *, outputs: Optional[Sequence[str]] = None,
              threads: int = 1) -> Dict[str, np.ndarray]:
    """Run ``model`` on onnxruntime (CPU) and return ``outputs`` (default: the graph outputs) by name.

    Sessions are cached by the exported model's bytes, so repeated calls on an unchanged model with
    the same outputs reuse one session (each call still exports the model; use :class:`ModelRunner`
    in loops).
    """
    names = list(outputs) if outputs is not None else [v.name for v in model.graph.outputs]
    prep = _Prepared(model, names)
    src, tmp = prep.source()
    blob = src if isinstance(src, bytes) else open(src, "rb").read()  # noqa: SIM115
    key = (hashlib.sha256(blob).hexdigest(), threads)
    hit = _CACHE.get(key)
    if hit is None:
        sess = _session(src, threads)
        hit = (sess, [i.name for i in sess.get_inputs()], tmp)
        _CACHE[key] = hit
        while len(_CACHE) > _CACHE_SIZE:
            _, (_, _, old_tmp) = _CACHE.popitem(last=False)
            if old_tmp is not None:
                old_tmp.cleanup()
    else:
        _CACHE.move_to_end(key)
        if tmp is not None:
            tmp.cleanup()
    prep.proto = None  # type: ignore[assignment]
    return _run(hit[0], prep, hit[1], feeds)


def collect_statistics(model: Model, data: CalibrationData, tensors: Sequence[str], *, histogram: bool = False,
                       per_channel_axis: Optional[Dict[str, int]] = None, batch_size: Optional[int] = None,
                       progress: bool = True) -> Dict[str, TensorStats]:
    """One pass over ``data``: statistics of every tensor in ``tensors`` (graph values by name).

    ``per_channel_axis`` adds per-channel min/max/mean along an axis for the tensors it names;
    ``histogram`` adds a :class:`HistogramObserver` (needed by percentile/entropy/mse). Activations
    of a batch are dropped before the next one is run. onnxruntime picks its own thread count.
    """
    names = list(dict.fromkeys(tensors))
    axes = per_channel_axis or {}
    stats = {n: TensorStats(n, axis=axes.get(n), histogram=histogram) for n in names}
    if not names:
        return stats
    runner = ModelRunner(model, names, threads=0)
    try:
        with Progress(data.num_samples, "calibrating", unit="samples", enabled=progress) as bar:
            for n, feeds in data.counted_batches(batch_size):
                outs = runner.run(feeds)
                for name in names:
                    stats[name].update(outs[name])
                del outs, feeds
                bar.update(n)
    finally:
        runner.close()
    return stats
