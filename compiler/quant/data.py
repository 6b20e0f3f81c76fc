"""Calibration data: where the sample inputs for calibration come from, and how they are batched.

``load_calibration(spec, model)`` accepts

- ``file.npz``: one array per graph input, keyed by the input name, the leading axis being the
  sample axis; one extra key (any name: ``y``, ``labels``, ...) holds labels;
- ``file.npy``: the samples of a single-input model;
- a folder of ``.npz`` / ``.npy`` files: read in sorted order, samples concatenated;
- ``module:function`` or ``path/to/file.py:function``: a callable returning an iterable of dicts
  (input name -> array with a sample axis), of ``(inputs, labels)`` pairs, or an ORT-style reader
  with ``get_next()``; it is called again for every pass over the data (and once at load time to
  validate and count the samples);
- ``synthetic`` / ``synthetic:N``: N random samples drawn from the input types (a loud warning).

How an array maps to samples, per input (dims from the model's input type):

- array rank == input rank, first dim symbolic/unknown: one row per sample ("rows"; batchable);
- array rank == input rank, first dim static ``d``: ``d`` consecutive rows form one sample
  ("grouped"; usually ``d == 1``), fed one sample at a time;
- array rank == input rank + 1: ``array[i]`` is one whole input ("stacked"); with a symbolic first
  dim samples are concatenated along it, else fed one at a time.

If any input cannot be batched, every batch holds one sample. Arrays stay on disk where possible:
``.npy`` files and uncompressed (``np.savez``) ``.npz`` members are memory-mapped and only the rows
of the current batch are read; members of compressed ``.npz`` files are read whole, one file at a
time. Arrays are cast to the input's element type batch by batch (same-kind casts only).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import struct
import sys
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import CalibrationError
from ..ir.core import Model, Value
from ..ir.types import TensorType

__all__ = ["CalibrationData", "load_calibration", "DEFAULT_BATCH_SIZE", "DEFAULT_SYNTHETIC_SAMPLES", "SYNTHETIC_WARNING"]

#: Samples per batch when ``batches()`` is given no size (batchable models only).
DEFAULT_BATCH_SIZE = 8
#: Samples drawn by a bare ``synthetic`` spec.
DEFAULT_SYNTHETIC_SAMPLES = 16
#: Symbolic dims other than the batch dim take this size in synthetic data.
SYNTHETIC_SYMBOLIC_DIM = 8
SYNTHETIC_WARNING = "calibrating on synthetic random inputs: accuracy will not be representative"


@dataclass(frozen=True)
class _Input:
    """What the model expects of one graph input."""

    name: str
    dtype: np.dtype
    dims: Optional[Tuple[Any, ...]]  # None: unknown rank
    required: bool

    @property
    def batchable(self) -> bool:
        return self.dims is not None and len(self.dims) >= 1 and not isinstance(self.dims[0], int)


@dataclass(frozen=True)
class _Layout:
    """How the samples of one input sit in an array: mode rows / grouped (by ``group``) / stacked."""

    mode: str
    group: int
    count: int
    batchable: bool


@dataclass
class _Chunk:
    """One block of samples (a file, or one item of a reader): arrays (maybe memory-mapped) and labels."""

    source: str
    arrays: Dict[str, Any]
    labels: Any = None


# --- the model side --------------------------------------------------------------------------------
def _model_inputs(model: Model) -> List[_Input]:
    out = []
    for v in model.graph.inputs:
        t = v.type
        if not isinstance(t, TensorType):
            raise CalibrationError(f"input '{v.name}' is not a tensor: calibration needs tensor inputs")
        dims = None if t.shape.dims is None else tuple(t.shape.dims)
        out.append(_Input(v.name, np.dtype(t.dtype.numpy), dims, v.const is None))
    return out


def _layout(inp: _Input, shape: Tuple[int, ...], dtype: np.dtype, source: str) -> _Layout:
    """Validate one array against the input and decide how it holds samples."""
    where = f"{source}: input '{inp.name}'"
    dtype = np.dtype(dtype)
    if dtype.kind in "OUSV" or not np.can_cast(dtype, inp.dtype, casting="same_kind"):
        raise CalibrationError(f"{where}: element type {dtype} cannot be cast to the model's {inp.dtype}")
    if len(shape) == 0:
        raise CalibrationError(f"{where}: a scalar array has no sample axis")
    if inp.dims is None:
        return _Layout("stacked", 1, shape[0], False)
    rank = len(inp.dims)
    if len(shape) == rank + 1:
        expected, got, mode, group = inp.dims, shape[1:], "stacked", 1
        if inp.batchable:
            expected, got = inp.dims[1:], shape[2:]
        count = shape[0]
    elif len(shape) == rank and rank >= 1:
        expected, got = inp.dims[1:], shape[1:]
        if inp.batchable:
            mode, group, count = "rows", 1, shape[0]
        else:
            mode, group = "grouped", int(inp.dims[0])
            if group <= 0 or shape[0] % group:
                raise CalibrationError(f"{where}: {shape[0]} rows are not a multiple of the static first dim {group}")
            count = shape[0] // group
    else:
        raise CalibrationError(f"{where}: array of shape {tuple(shape)} has rank {len(shape)}; the input has rank "
                               f"{rank} (the sample axis is either its first dim or an extra leading axis)")
    for d, g in zip(expected, got):
        if isinstance(d, int) and d != g:
            raise CalibrationError(f"{where}: array of shape {tuple(shape)} does not match the input dims "
                                   f"{_fmt_dims(inp.dims)}")
    return _Layout(mode, group, count, inp.batchable and mode != "grouped")


def _fmt_dims(dims: Optional[Sequence[Any]]) -> str:
    if dims is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _take(arr: Any, lay: _Layout, i: int, j: int, dtype: np.dtype) -> np.ndarray:
    """The feed for samples ``i..j`` (``j == i + 1`` unless batchable), cast to ``dtype``."""
    if lay.mode == "rows":
        x = arr[i:j]
    elif lay.mode == "grouped":
        x = arr[i * lay.group:j * lay.group]
    elif lay.batchable:
        x = np.asarray(arr[i:j])
        x = x.reshape((-1,) + x.shape[2:])
    else:
        x = arr[i]
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


# --- the data side ---------------------------------------------------------------------------------
def _array_info(a: Any) -> Tuple[Tuple[int, ...], np.dtype]:
    return tuple(a.shape), np.dtype(a.dtype)


class _LazyMember:
    """A compressed ``.npz`` member: shape and dtype from its header, data read on first access."""

    def __init__(self, path: str, name: str, shape: Tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.name, self.shape, self.dtype = path, name, shape, dtype
        self._data: Optional[np.ndarray] = None

    def _load(self) -> np.ndarray:
        if self._data is None:
            with np.load(self.path, allow_pickle=False) as z:
                self._data = z[self.name]
        return self._data

    def __getitem__(self, idx: Any) -> np.ndarray:
        return self._load()[idx]

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self._load()
        return a if dtype is None else a.astype(dtype)


def _read_npy_header(f: Any) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    return np.lib.format._read_array_header(f, version)  # type: ignore[attr-defined]


def _open_npz(path: str) -> Dict[str, Any]:
    """Members of an ``.npz``: memory-mapped when stored uncompressed, else lazily loaded."""
    out: Dict[str, Any] = {}
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                with zf.open(info) as f:
                    shape, fortran, dtype = _read_npy_header(f)
                    header_len = f.tell()
                if dtype.hasobject:
                    raise CalibrationError(f"{path}: array '{name}' holds Python objects (not allowed)")
                n = int(np.prod(shape, dtype=np.int64))
                if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1 and n > 0:
                    raw.seek(info.header_offset)
                    local = raw.read(30)
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    offset = info.header_offset + 30 + name_len + extra_len + header_len
                    out[name] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                          order="F" if fortran else "C")
                else:
                    out[name] = _LazyMember(path, name, tuple(shape), dtype)
    except (zipfile.BadZipFile, ValueError, OSError, struct.error) as e:
        raise CalibrationError(f"{path}: not a readable .npz file ({e})") from None
    return out


def _open_npy(path: str) -> np.ndarray:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise CalibrationError(f"{path}: not a readable .npy file ({e})") from None
    if not isinstance(a, np.ndarray):
        raise CalibrationError(f"{path}: not a .npy array")
    return a


def _file_chunk(path: str, inputs: List[_Input]) -> _Chunk:
    if path.endswith(".npz"):
        return _split_keys(path, _open_npz(path), inputs)
    required = [i for i in inputs if i.required]
    if len(required) != 1:
        names = ", ".join(i.name for i in required)
        raise CalibrationError(f"{path}: a .npy file can only feed a single-input model; this one has inputs {names} "
                               f"(use a .npz keyed by input name)")
    return _Chunk(path, {required[0].name: _open_npy(path)})


def _split_keys(source: str, arrays: Dict[str, Any], inputs: List[_Input]) -> _Chunk:
    """Input arrays by name, and at most one other key (the labels)."""
    known = {i.name for i in inputs}
    names = ", ".join(i.name for i in inputs if i.required)
    missing = [i.name for i in inputs if i.required and i.name not in arrays]
    if missing:
        raise CalibrationError(f"{source}: no array for input '{missing[0]}' (keys: {', '.join(map(str, arrays)) or 'none'};"
                               f" the model's inputs: {names})")
    extra = [k for k in arrays if k not in known]
    if len(extra) > 1:
        raise CalibrationError(f"{source}: keys {', '.join(map(repr, extra))} are not model inputs (the inputs are: "
                               f"{names}); only one other key is allowed, holding the labels")
    labels = arrays[extra[0]] if extra else None
    return _Chunk(source, {k: v for k, v in arrays.items() if k in known}, labels)


class _SyntheticArray:
    """A virtual array of random rows: row ``r`` depends only on (seed, input index, r)."""

    def __init__(self, shape: Tuple[int, ...], dtype: np.dtype, seed: int, index: int, int_range: Tuple[int, int]) -> None:
        self.shape, self.dtype, self.seed, self.index, self.int_range = shape, dtype, seed, index, int_range

    def _row(self, r: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.index, r])
        rs = self.shape[1:]
        if self.dtype.kind == "b":
            return rng.integers(0, 2, size=rs).astype(bool)
        if self.dtype.kind in "iu":
            return rng.integers(self.int_range[0], self.int_range[1], size=rs).astype(self.dtype)
        return rng.standard_normal(size=rs).astype(self.dtype)

    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, slice):
            rows = range(*idx.indices(self.shape[0]))
            if not rows:
                return np.zeros((0,) + self.shape[1:], self.dtype)
            return np.stack([self._row(r) for r in rows])
        return self._row(int(idx))


def _int_range(model: Model, v: Value) -> Tuple[int, int]:
    """[lo, hi) for synthetic integer data: declared on the input, or bounded by a Gather table, else [0, 100)."""
    declared = v.meta.get("range") or v.metadata_props.get("edgec.range")
    if declared:
        lo, hi = (int(float(x)) for x in (declared.split(",") if isinstance(declared, str) else declared))
        return lo, max(hi, lo + 1)
    hi = 100
    for node, i in v.uses():
        if node.op_type == "Gather" and node.domain == "" and i == 1:
            data = node.input(0)
            shape = data.shape if data is not None else None
            axis = int(node.attr("axis", 0))
            if shape is not None and shape.dims is not None and -len(shape.dims) <= axis < len(shape.dims):
                d = shape.dims[axis]
                if isinstance(d, int) and d > 0:
                    hi = min(hi, d)
    return 0, hi


# --- the public class ------------------------------------------------------------------------------
class CalibrationData:
    """Calibration samples for a model: re-iterable batches of model inputs, and optional labels."""

    def __init__(self, description: str, inputs: List[_Input], chunks: Callable[[], Iterable[_Chunk]],
                 num_samples: int, *, has_labels: bool, synthetic: bool = False,
                 warnings: Optional[List[str]] = None) -> None:
        self._inputs = inputs
        self._chunks = chunks
        self._description = description
        self._has_labels = has_labels
        self.num_samples = num_samples
        self.synthetic = synthetic
        self.warnings: List[str] = list(warnings or [])
        self.input_names: List[str] = [i.name for i in inputs]

    @property
    def batchable(self) -> bool:
        """True when several samples can be fed at once (every input's first dim is a batch dim)."""
        return all(i.batchable for i in self._inputs)

    def _laid_out(self) -> Iterator[Tuple[_Chunk, Dict[str, _Layout], int]]:
        for chunk in self._chunks():
            lays, count = _lay_out(self._inputs, chunk)
            yield chunk, lays, count

    def batches(self, batch_size: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
        """Model feeds of up to ``batch_size`` samples (1 when an input has a static first dim)."""
        for _, feeds in self.counted_batches(batch_size):
            yield feeds

    def counted_batches(self, batch_size: Optional[int] = None) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
        """Like :meth:`batches`, with the number of samples in each batch."""
        want = batch_size or DEFAULT_BATCH_SIZE
        if want < 1:
            raise CalibrationError(f"batch size must be positive, got {batch_size}")
        size = want if self.batchable else 1
        dtypes = {i.name: i.dtype for i in self._inputs}
        remaining = self.num_samples
        pending: List[Dict[str, np.ndarray]] = []
        pending_n = 0
        for chunk, lays, count in self._laid_out():
            take, i = min(count, remaining), 0
            while i < take:
                n = min(size - pending_n, take - i)
                piece = {k: _take(chunk.arrays[k], lays[k], i, i + n, dtypes[k]) for k in lays}
                if pending and any(piece[k].shape[1:] != pending[0][k].shape[1:] for k in piece):
                    yield pending_n, _concat(pending)
                    pending, pending_n = [], 0
                pending.append(piece)
                pending_n += n
                i += n
                if pending_n >= size:
                    yield pending_n, _concat(pending)
                    pending, pending_n = [], 0
            remaining -= take
            if remaining <= 0:
                break
        if pending:
            yield pending_n, _concat(pending)

    def labels(self) -> Optional[np.ndarray]:
        """The labels of the first ``num_samples`` samples, or None when the data has none."""
        if not self._has_labels:
            return None
        parts, remaining = [], self.num_samples
        for chunk, _, count in self._laid_out():
            if chunk.labels is None:
                raise CalibrationError(f"{chunk.source}: has no labels while other parts of the data do")
            take = min(count, remaining)
            parts.append(np.asarray(chunk.labels[:take]))
            remaining -= take
            if remaining <= 0:
                break
        return np.concatenate(parts) if parts else None

    def describe(self) -> str:
        """One line: source, sample count, inputs, labels, synthetic or not."""
        ins = ", ".join(f"{i.name}{_fmt_dims(i.dims)}:{i.dtype}" for i in self._inputs)
        text = f"{self._description}: {self.num_samples} samples, inputs {ins}"
        if self._has_labels:
            text += ", with labels"
        if self.synthetic:
            text += " (SYNTHETIC)"
        return text

    def __repr__(self) -> str:
        return f"CalibrationData({self.describe()})"


def _lay_out(inputs: List[_Input], chunk: _Chunk) -> Tuple[Dict[str, _Layout], int]:
    """Layouts of a chunk's arrays and its sample count (consistent across inputs and labels)."""
    lays = {i.name: _layout(i, *_array_info(chunk.arrays[i.name]), chunk.source) for i in inputs}
    counts = {lay.count for lay in lays.values()}
    if len(counts) > 1:
        detail = ", ".join(f"'{k}' has {lay.count}" for k, lay in lays.items())
        raise CalibrationError(f"{chunk.source}: inconsistent sample counts: {detail}")
    count = counts.pop() if counts else 0
    if chunk.labels is not None and len(chunk.labels) != count:
        raise CalibrationError(f"{chunk.source}: {len(chunk.labels)} labels for {count} samples")
    return lays, count


def _concat(pieces: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    if len(pieces) == 1:
        return pieces[0]
    return {k: np.concatenate([p[k] for p in pieces], axis=0) for k in pieces[0]}


# --- sources ---------------------------------------------------------------------------------------
def _from_files(paths: List[str], inputs: List[_Input], description: str, max_samples: Optional[int],
                warnings: List[str]) -> CalibrationData:
    def chunks() -> Iterator[_Chunk]:
        for p in paths:
            yield _file_chunk(p, inputs)

    return _checked(description, inputs, chunks, max_samples, warnings)


def _checked(description: str, inputs: List[_Input], chunks: Callable[[], Iterable[_Chunk]],
             max_samples: Optional[int], warnings: List[str], *, synthetic: bool = False) -> CalibrationData:
    """Validate every chunk once (headers/shapes only), count samples, and pick the inputs fed."""
    total, has_labels, provided = 0, None, None
    for chunk in chunks():
        names = {i.name for i in inputs if i.name in chunk.arrays}
        if provided is None:
            provided = names
        elif names != provided:
            raise CalibrationError(f"{chunk.source}: feeds inputs {sorted(names)}, other parts of the data feed {sorted(provided)}")
        if has_labels is None:
            has_labels = chunk.labels is not None
        elif has_labels != (chunk.labels is not None):
            raise CalibrationError(f"{chunk.source}: labels present in some parts of the data but not in others")
        total += _lay_out([i for i in inputs if i.name in names], chunk)[1]
    if total == 0:
        raise CalibrationError(f"{description}: no calibration samples")
    if max_samples is not None:
        if max_samples < 1:
            raise CalibrationError(f"max_samples must be positive, got {max_samples}")
        total = min(total, max_samples)
    fed = [i for i in inputs if i.name in (provided or set())]
    data = CalibrationData(description, fed, chunks, total, has_labels=bool(has_labels), synthetic=synthetic,
                           warnings=warnings)
    if not data.batchable:
        static = [i.name for i in fed if not i.batchable]
        data.warnings.append(f"input(s) {', '.join(static) or '?'} have no batch dim: samples are fed one at a time")
    return data


def _synthetic(model: Model, inputs: List[_Input], n: int, seed: int) -> CalibrationData:
    warnings = [SYNTHETIC_WARNING]
    arrays: Dict[str, Any] = {}
    by_name = {v.name: v for v in model.graph.inputs}
    for idx, inp in enumerate(i for i in inputs if i.required):
        if inp.dims is None:
            raise CalibrationError(f"synthetic: input '{inp.name}' has unknown rank; provide real calibration data")
        if inp.dtype.kind not in "biuf":
            raise CalibrationError(f"synthetic: cannot draw random values of type {inp.dtype} for input '{inp.name}'")
        rest = []
        for d in inp.dims[1:]:
            if isinstance(d, int):
                rest.append(d)
            else:
                rest.append(SYNTHETIC_SYMBOLIC_DIM)
                warnings.append(f"synthetic: dim {d or '?'} of input '{inp.name}' set to {SYNTHETIC_SYMBOLIC_DIM}")
        if not inp.dims:
            shape: Tuple[int, ...] = (n,)  # a scalar input: stacked
        elif inp.batchable:
            shape = (n, *rest)
        else:
            shape = (n * int(inp.dims[0]), *rest)
        arrays[inp.name] = _SyntheticArray(shape, inp.dtype, seed, idx, _int_range(model, by_name[inp.name]))
    chunk = _Chunk(f"synthetic:{n}", arrays)
    return _checked(f"synthetic:{n}", inputs, lambda: [chunk], None, warnings, synthetic=True)


def _load_callable(spec: str) -> Callable[[], Any]:
    target, _, fname = spec.rpartition(":")
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise CalibrationError(f"{spec}: no such file '{target}'")
        mod_name = "_edgec_calib_" + os.path.splitext(os.path.basename(target))[0]
        try:
            sp = importlib.util.spec_from_file_location(mod_name, target)
            assert sp is not None and sp.loader is not None
            module = importlib.util.module_from_spec(sp)
            sys.modules[mod_name] = module
            sp.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - user code
            raise CalibrationError(f"{target}: failed to import ({type(e).__name__}: {e})") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:  # noqa: BLE001 - user code
            raise CalibrationError(f"{spec}: cannot import module '{target}' ({type(e).__name__}: {e})") from None
    fn = getattr(module, fname, None)
    if not callable(fn):
        raise CalibrationError(f"{spec}: '{fname}' is not a callable of {target}")
    return fn


def _reader_chunks(spec: str, fn: Callable[[], Any], inputs: List[_Input]) -> Callable[[], Iterator[_Chunk]]:
    def items(obj: Any) -> Iterator[Any]:
        if hasattr(obj, "get_next") and not hasattr(obj, "__iter__"):
            while True:
                item = obj.get_next()
                if item is None:
                    return
                yield item
        else:
            yield from obj

    def chunks() -> Iterator[_Chunk]:
        try:
            produced = fn()
            it = iter(items(produced))
        except Exception as e:  # noqa: BLE001 - user code
            raise CalibrationError(f"{spec}: the calibration reader raised {type(e).__name__}: {e}") from None
        k = 0
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - user code
                raise CalibrationError(f"{spec}: the calibration reader raised {type(e).__name__}: {e}") from None
            where = f"{spec} item {k}"
            labels = None
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], dict):
                item, labels = item
            if not isinstance(item, dict):
                raise CalibrationError(f"{where}: expected a dict of input arrays or an (inputs, labels) pair, "
                                       f"got {type(item).__name__}")
            arrays = {str(name): np.asarray(a) for name, a in item.items()}
            chunk = _split_keys(where, arrays, inputs)
            if labels is not None:
                if chunk.labels is not None:
                    raise CalibrationError(f"{where}: labels given both as a key and as the pair's second item")
                chunk.labels = np.asarray(labels)
                if chunk.labels.ndim == 0:
                    chunk.labels = chunk.labels.reshape(1)
            k += 1
            yield chunk

    return chunks


def load_calibration(spec: str, model: Model, *, max_samples: Optional[int] = None, seed: int = 0) -> CalibrationData:
    """Open calibration data described by ``spec`` (see the module docstring) for ``model``.

    Validates names, ranks, static dims, element types and sample counts up front (headers only for
    files); raises :class:`CalibrationError` naming the file and input. ``max_samples`` keeps the
    first N samples; ``seed`` seeds synthetic data.
    """
    spec = os.fspath(spec)
    inputs = _model_inputs(model)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        text = spec.partition(":")[2]
        try:
            n = int(text) if text else DEFAULT_SYNTHETIC_SAMPLES
        except ValueError:
            raise CalibrationError(f"{spec}: expected synthetic:N with N a number of samples") from None
        if n < 1:
            raise CalibrationError(f"{spec}: the number of samples must be positive")
        if max_samples is not None:
            n = max(1, min(n, max_samples))
        return _synthetic(model, inputs, n, seed)
    if os.path.isdir(spec):
        files = sorted(os.path.join(spec, f) for f in os.listdir(spec) if f.endswith((".npz", ".npy")))
        if not files:
            raise CalibrationError(f"{spec}: folder holds no .npz or .npy files")
        return _from_files(files, inputs, spec, max_samples, [])
    if os.path.isfile(spec):
        if not spec.endswith((".npz", ".npy")):
            raise CalibrationError(f"{spec}: unsupported calibration file (expected .npz, .npy, a folder, "
                                   f"module:function or synthetic[:N])")
        return _from_files([spec], inputs, spec, max_samples, [])
    if ":" in spec and not spec.endswith(":"):
        fn = _load_callable(spec)
        return _checked(spec, inputs, _reader_chunks(spec, fn, inputs), max_samples, [])
    raise CalibrationError(f"{spec}: no such calibration file or folder")
