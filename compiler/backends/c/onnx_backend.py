"""An ``onnx.backend.base.Backend`` for the C target: run ONNX models as generated, compiled C.

``CBackend.prepare(model)`` returns a rep whose ``run(inputs)`` pins the input shapes from the
given arrays, runs the same pipeline as ``edgec compile --target c`` (import, ``-O2`` for target
``c``, :func:`~edgec.backends.c.generate_c`), builds the code with a test harness using the host C
compiler (``-Wall -Wextra -Werror``) and runs the program. Builds are cached by the content hash of
the generated sources and the flags (``EDGEC_C_CACHE`` names the cache folder; default: a folder
in the system temporary directory), so a model runs again without a rebuild.

A model the C target cannot compile raises :class:`UnsupportedModelError` (one line).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from ...errors import EdgecError, UnsupportedModelError
from . import kernels as K
from .verify import _NP as _VERIFY_NP
from .verify import WARN_FLAGS, VerifyError, harness_source

__all__ = ["CBackend", "CBackendRep", "UnsupportedModelError", "claimed_ops", "prepare", "run_model",
           "supports_device"]

#: Inputs the C kernels read at compile time (op -> input indices): shapes, axes, pads, bounds, counts.
#: A graph input that feeds only such slots is frozen to the value given to ``run`` (the program is
#: specialized for it, as ``--input-shape`` specializes it for the shapes); the cache key includes it.
PARAM_SLOTS: Dict[str, Tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3), "Squeeze": (1,), "Unsqueeze": (1,),
    "Split": (1,), "Clip": (1, 2), "Tile": (1,), "Range": (0, 1, 2), "ConstantOfShape": (0,), "OneHot": (1, 2),
    "CumSum": (1,), "CumProd": (1,), "Trilu": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "Dropout": (1, 2),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,),
    "CenterCropPad": (1,), "LSTM": (4,), "GRU": (4,), "RNN": (4,), "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2), "TopK": (1,), "AffineGrid": (1,), "CastLike": (1,),
}


def param_inputs(model: onnx.ModelProto) -> List[str]:
    """Graph inputs that only determine compile-time parameters (frozen to their given values).

    An input qualifies when every use is a :data:`PARAM_SLOTS` slot, or a node whose outputs all
    qualify in turn (e.g. a shape computed from the input and then used by Reshape); it never
    reaches a graph output or the data of a kernel.
    """
    inits = {t.name for t in model.graph.initializer}
    outs = {o.name for o in model.graph.output}
    uses: Dict[str, List[Tuple[onnx.NodeProto, int]]] = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name:
                uses.setdefault(name, []).append((n, i))
    memo: Dict[str, bool] = {}

    def param_only(name: str) -> bool:
        if name in memo:
            return memo[name]
        memo[name] = False  # the graph is acyclic; this only guards malformed models
        ok = name not in outs and bool(uses.get(name))
        for n, i in uses.get(name, []) if ok else []:
            if n.domain not in ("", "ai.onnx"):
                ok = False
            elif i in PARAM_SLOTS.get(n.op_type, ()):
                continue
            elif any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
                ok = False
            else:
                ok = all(param_only(o) for o in n.output if o) and any(o for o in n.output)
            if not ok:
                break
        memo[name] = ok
        return ok

    return [i.name for i in model.graph.input if i.name not in inits and param_only(i.name)]


#: Flags of the build (besides the warning flags): -O0 keeps the C build fast; results do not depend on it.
OPT_FLAGS = ["-O0"]


def claimed_ops() -> List[str]:
    """The default-domain ops the C target claims: one generator each, plus the view ops."""
    from . import emit  # noqa: F401  (loads the kernels_* modules, which register more generators)

    return sorted({op for (d, op) in K.GENERATORS if d == ""} | set(K.VIEW_OPS))


def _cache_dir() -> str:
    d = os.environ.get("EDGEC_C_CACHE") or os.path.join(tempfile.gettempdir(), f"edgec-c-cache-{_uid()}")
    os.makedirs(d, exist_ok=True)
    return d


def _uid() -> str:
    try:
        return str(os.getuid())
    except AttributeError:  # pragma: no cover - Windows
        return "user"


def _cc() -> str:
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise VerifyError(f"no C compiler '{cc}' found (set CC)")
    return cc


def build_cached(files: Dict[str, str], report: Dict[str, Any], flags: Sequence[str] = ()) -> str:
    """Build ``files`` (generated code) plus the harness; returns the program, reused when cached."""
    cc = _cc()
    name = report["name"]
    sources = dict(files)
    sources[f"{name}_harness.c"] = harness_source(report)
    cmd_flags = [*OPT_FLAGS, *WARN_FLAGS, *flags]
    h = hashlib.sha256()
    h.update(("\0".join([cc, *cmd_flags])).encode())
    for k in sorted(sources):
        h.update(b"\0" + k.encode() + b"\0" + sources[k].encode())
    key = h.hexdigest()[:32]
    root = _cache_dir()
    final = os.path.join(root, key)
    prog = os.path.join(final, f"{name}_harness")
    if os.path.exists(prog):
        return prog
    tmp = tempfile.mkdtemp(prefix=f".{key}-", dir=root)
    try:
        for k, text in sources.items():
            with open(os.path.join(tmp, k), "w", encoding="utf-8") as f:
                f.write(text)
        # one translation unit (fewer compiler processes: the build is most of a node test's time)
        unity = os.path.join(tmp, f"{name}_unity.c")
        with open(unity, "w", encoding="utf-8") as f:
            f.write("".join(f'#include "{k}"\n' for k in sorted(sources) if k.endswith(".c")))
        cmd = [cc, *cmd_flags, "-pipe", unity, "-o", os.path.join(tmp, f"{name}_harness"), "-lm"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise VerifyError(f"C build failed: {' '.join(cmd)}\n{p.stderr.strip()[-4000:]}")
        try:
            os.rename(tmp, final)
        except OSError:  # another process built the same code first
            if not os.path.exists(prog):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return prog


_NP = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32, "int16": np.int16,
       "int8": np.int8, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
       "bool": np.bool_}
_NP.update({name: np.dtype(dt) for name, dt in _VERIFY_NP.items() if name not in _NP})  # narrow types (ml_dtypes)


def run_program(prog: str, report: Dict[str, Any], feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    """Run a harness built by :func:`build_cached` on ``feeds`` (by input name); outputs in graph order."""
    with tempfile.TemporaryDirectory(prefix="edgec-c-run-") as d:
        fin, fout = os.path.join(d, "in.bin"), os.path.join(d, "out.bin")
        with open(fin, "wb") as f:
            for t in report["inputs"]:
                arr = np.ascontiguousarray(feeds[t["name"]]).astype(np.dtype(_NP[t["dtype"]]).newbyteorder("<"))
                f.write(arr.reshape(-1).tobytes())
        p = subprocess.run([prog, fin, fout], capture_output=True, text=True)
        if p.returncode != 0:
            raise VerifyError(f"{os.path.basename(prog)} exited with {p.returncode}: {p.stderr.strip()[-2000:]}")
        raw = np.fromfile(fout, dtype=np.uint8)
    outs, off = [], 0
    for t in report["outputs"]:
        dt = np.dtype(_NP[t["dtype"]]).newbyteorder("<")
        n = int(np.prod(t["shape"], dtype=np.int64)) * dt.itemsize
        outs.append(raw[off:off + n].view(dt).astype(dt.newbyteorder("=")).reshape(t["shape"]))
        off += n
    return outs


def _array(a: Any) -> np.ndarray:
    if isinstance(a, onnx.TensorProto):
        from onnx import numpy_helper

        return numpy_helper.to_array(a)
    if not isinstance(a, np.ndarray) and not np.isscalar(a) and not isinstance(a, (list, tuple)):
        raise UnsupportedModelError(f"C backend: input of type {type(a).__name__} (only tensors)")
    return np.asarray(a)


class CBackendRep(BackendRep):
    """A prepared model: compiled (and cached) per set of input shapes on each :meth:`run`."""

    def __init__(self, model: onnx.ModelProto, opt_level: int = 2) -> None:
        self.model = model
        self.opt_level = opt_level
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self.output_names = [o.name for o in model.graph.output]
        self.frozen = set(param_inputs(model))
        self._compiled: Dict[Tuple, Tuple[str, Dict[str, Any]]] = {}
        self.last_report: Optional[Dict[str, Any]] = None

    def _feeds(self, inputs: Any) -> Dict[str, np.ndarray]:
        if isinstance(inputs, dict):
            return {k: _array(v) for k, v in inputs.items()}
        if isinstance(inputs, (np.ndarray, onnx.TensorProto)):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) > len(self.input_names):
            raise EdgecError(f"C backend: {len(inputs)} inputs given, the model has {len(self.input_names)}")
        return {n: _array(a) for n, a in zip(self.input_names, inputs)}

    def compile(self, feeds: Dict[str, np.ndarray]) -> Tuple[str, Dict[str, Any]]:
        """Generate and build the C code for the shapes of ``feeds``; (program, report)."""
        key = tuple((n, tuple(a.shape), a.dtype.str, a.tobytes() if n in self.frozen else b"")
                    for n, a in sorted(feeds.items()))
        hit = self._compiled.get(key)
        if hit is not None:
            return hit
        from onnx import numpy_helper

        from ...api import optimize
        from ...frontend.onnx_import import from_proto
        from ...shapes_pin import pin_input_shapes
        from .emit import generate_c

        proto = self.model
        frozen = [n for n in self.input_names if n in self.frozen and n in feeds]
        if frozen:
            proto = onnx.ModelProto()
            proto.CopyFrom(self.model)
            keep = [i for i in proto.graph.input if i.name not in frozen]
            del proto.graph.input[:]
            proto.graph.input.extend(keep)
            for n in frozen:
                proto.graph.initializer.append(numpy_helper.from_array(np.asarray(feeds[n]), n))
            feeds = {n: a for n, a in feeds.items() if n not in frozen}
        model = from_proto(proto, None)
        pin_input_shapes(model, {n: tuple(int(d) for d in a.shape) for n, a in feeds.items()
                                 if n in {v.name for v in model.graph.inputs}})
        optimize(model, opt_level=self.opt_level, target="c", verify_each=False)
        code = generate_c(model, "model", source=self.model.graph.name or "model")
        prog = build_cached(code.files, code.report)
        self._compiled[key] = (prog, code.report)
        return prog, code.report

    def run(self, inputs: Any, **kwargs: Any) -> Tuple[np.ndarray, ...]:
        feeds = self._feeds(inputs)
        prog, report = self.compile(feeds)
        self.last_report = report
        return tuple(run_program(prog, report, feeds))


class CBackend(Backend):
    """ONNX models through the edgec C target (CPU: the host compiler builds and runs the code)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        ops = set(claimed_ops())
        return all(n.domain in ("", "ai.onnx") and n.op_type in ops for n in model.graph.node)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> CBackendRep:
        if not cls.supports_device(device):
            raise UnsupportedModelError(f"C backend: device '{device}' is not supported (only CPU)")
        if isinstance(model, (bytes, bytearray)):
            model = onnx.load_model_from_string(bytes(model))
        elif isinstance(model, str):
            model = onnx.load(model)
        return CBackendRep(model, int(kwargs.get("opt_level", 2)))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> Tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU", outputs_info: Any = None,
                 **kwargs: Any) -> Tuple[np.ndarray, ...]:
        raise UnsupportedModelError("C backend: run_node is not supported (wrap the node in a model)")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = CBackend.prepare
run_model = CBackend.run_model
supports_device = CBackend.supports_device
