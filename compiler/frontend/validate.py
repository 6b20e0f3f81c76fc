"""Checks the ONNX front end runs while importing: versions, ops, domains, external data, tensor sizes, order.

Every check is linear in the model size and raises an ``edgec.errors`` exception whose one-line
message names the file and the culprit (node, tensor, op or version).
"""

from __future__ import annotations

import heapq
import os
import stat
from typing import Dict, List, Optional, Sequence, Tuple

import onnx
from onnx import TensorProto

from ..errors import ModelLoadError, UnsupportedModelError
from ..ir.dtypes import DType

#: Default-domain opset versions edgec accepts.
MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
#: ONNX IR versions edgec accepts.
MIN_IR_VERSION = 3
MAX_IR_VERSION = onnx.IR_VERSION


def node_label(name: str, op_type: str, index: int) -> str:
    """How messages name a node: ``node 'conv1' (Conv)`` or ``node #3 (Conv)`` when unnamed."""
    return f"node '{name}' ({op_type})" if name else f"node #{index} ({op_type})"


def read_model_file(path: str) -> onnx.ModelProto:
    """Parse a model file without its external data; every failure is a ModelLoadError."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot open model file ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ModelLoadError(f"{path}: empty file")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # DecodeError, RuntimeError from upb, UnicodeError ...
        raise ModelLoadError(f"{path}: not a valid ONNX protobuf (truncated or corrupt): {type(e).__name__}") from None
    if not proto.HasField("graph"):
        raise ModelLoadError(f"{path}: not a valid ONNX model (no graph; truncated or not ONNX)")
    return proto


def check_versions(proto: onnx.ModelProto, src: str) -> None:
    """IR version and default-domain opset inside the supported window."""
    if not MIN_IR_VERSION <= proto.ir_version <= MAX_IR_VERSION:
        raise UnsupportedModelError(
            f"{src}: ONNX IR version {proto.ir_version} is outside the supported range {MIN_IR_VERSION}..{MAX_IR_VERSION}")
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx") and not MIN_OPSET <= op.version <= MAX_OPSET:
            raise UnsupportedModelError(
                f"{src}: default-domain opset {op.version} is outside the supported range {MIN_OPSET}..{MAX_OPSET}")


class OpChecker:
    """Checks that a node's op exists in its domain at the imported opset (cached per op and version)."""

    def __init__(self, src: str, functions: set) -> None:
        self.src = src
        self.functions = functions  # {(domain, name, overload)} of local functions
        self._known: Dict[Tuple[str, int], bool] = {}

    def check(self, node: onnx.NodeProto, index: int, opsets: Dict[str, int], where: str) -> None:
        domain = "" if node.domain == "ai.onnx" else node.domain
        label = node_label(node.name, node.op_type, index)
        if (domain, node.op_type, node.overload) in self.functions:
            if domain not in opsets:
                raise ModelLoadError(f"{self.src}: {label}{where} calls a function of domain '{domain}' not declared in opset_import")
            return
        if domain not in opsets:
            if domain == "":
                raise ModelLoadError(f"{self.src}: {label}{where} uses the default ONNX domain but the model has no default-domain opset import")
            raise ModelLoadError(f"{self.src}: {label}{where} uses domain '{domain}' not declared in opset_import")
        if domain == "":
            key = (node.op_type, opsets[""])
            ok = self._known.get(key)
            if ok is None:
                ok = self._known[key] = onnx.defs.has(node.op_type, opsets[""], "")
            if not ok:
                raise UnsupportedModelError(
                    f"{self.src}: {label}{where}: unknown op '{node.op_type}' in the default ONNX domain at opset {opsets['']}")


def expected_nbytes(dtype: int, dims: Sequence[int], name: str, src: str) -> Optional[int]:
    """Bytes of ``raw_data`` a tensor of these dims must hold (None for strings)."""
    try:
        dt = DType(dtype)
    except ValueError:
        raise UnsupportedModelError(f"{src}: tensor '{name}' has unknown data type {dtype}") from None
    if dt in (DType.STRING, DType.UNDEFINED):
        if dt == DType.UNDEFINED:
            raise ModelLoadError(f"{src}: tensor '{name}' has no data type")
        return None
    n = 1
    for d in dims:
        if d < 0:
            raise ModelLoadError(f"{src}: tensor '{name}' has a negative dim {d}")
        n *= d
    return (n * dt.itemsize_bits + 7) // 8


def check_raw_size(tp: TensorProto, src: str) -> None:
    """An inline tensor's raw_data must hold exactly the bytes its dims and type need."""
    want = expected_nbytes(tp.data_type, tp.dims, tp.name, src)
    if tp.HasField("segment"):
        raise UnsupportedModelError(f"{src}: tensor '{tp.name}' uses segments, which are not supported")
    if want is not None and tp.HasField("raw_data") and len(tp.raw_data) != want:
        raise ModelLoadError(
            f"{src}: tensor '{tp.name}' raw_data has {len(tp.raw_data)} bytes but dims {list(tp.dims)} need {want}")


class ExternalDataResolver:
    """Validates external-data locations (relative, inside the model folder, regular, no symlink, in bounds)."""

    def __init__(self, base_dir: Optional[str], src: str) -> None:
        self.base_dir = base_dir
        self.src = src
        self._files: Dict[str, Tuple[str, int]] = {}  # location -> (path, size)

    def resolve(self, tp: TensorProto) -> Tuple[str, int, int]:
        """(path, offset, length) of an external tensor, after every safety check."""
        info = {e.key: e.value for e in tp.external_data}
        name, loc = tp.name, info.get("location", "")
        where = f"{self.src}: external data of tensor '{name}'"
        if not loc:
            raise ModelLoadError(f"{where} has no location")
        if self.base_dir is None:
            raise ModelLoadError(f"{where} ('{loc}') needs the model's directory, but none was given")
        path, size = self._file(loc, where)
        try:
            offset = int(info.get("offset", "0") or 0)
            length = int(info["length"]) if info.get("length") else size - offset
        except ValueError:
            raise ModelLoadError(f"{where} has a non-integer offset or length") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelLoadError(
                f"{where}: offset {offset} + length {length} is past the end of '{loc}' ({size} bytes)")
        want = expected_nbytes(tp.data_type, tp.dims, name, self.src)
        if want is None:
            raise UnsupportedModelError(f"{where}: string tensors cannot use external data")
        if length != want:
            raise ModelLoadError(f"{where} has length {length} but dims {list(tp.dims)} need {want} bytes")
        return path, offset, length

    def _file(self, loc: str, where: str) -> Tuple[str, int]:
        hit = self._files.get(loc)
        if hit is not None:
            return hit
        norm = loc.replace("\\", "/")
        if os.path.isabs(loc) or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
            raise ModelLoadError(f"{where}: location '{loc}' is an absolute path")
        if ".." in norm.split("/"):
            raise ModelLoadError(f"{where}: location '{loc}' contains '..'")
        base = os.path.realpath(self.base_dir)  # type: ignore[arg-type]
        path = os.path.join(base, *[p for p in norm.split("/") if p not in ("", ".")])
        try:
            st = os.lstat(path)
        except OSError:
            raise ModelLoadError(f"{where}: file '{loc}' does not exist") from None
        if stat.S_ISLNK(st.st_mode):
            raise ModelLoadError(f"{where}: location '{loc}' is a symbolic link")
        if not stat.S_ISREG(st.st_mode):
            raise ModelLoadError(f"{where}: location '{loc}' is not a regular file")
        real = os.path.realpath(path)
        if os.path.commonpath([base, real]) != base:
            raise ModelLoadError(f"{where}: location '{loc}' resolves outside the model's directory")
        self._files[loc] = (real, st.st_size)
        return real, st.st_size


def stable_toposort(deps: List[List[int]]) -> List[int]:
    """Order of node indices where each node follows its dependencies, keeping the original order
    wherever possible; shorter than ``deps`` when there is a cycle. ``deps[i]`` are indices node i needs."""
    n = len(deps)
    if all(d < i for i, ds in enumerate(deps) for d in ds):
        return list(range(n))
    indeg = [0] * n
    users: List[List[int]] = [[] for _ in range(n)]
    for i, ds in enumerate(deps):
        for d in set(ds):
            indeg[i] += 1
            users[d].append(i)
    ready = [i for i in range(n) if indeg[i] == 0]
    heapq.heapify(ready)
    order: List[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, u)
    return order


def node_in_cycle(deps: List[List[int]], placed: set) -> int:
    """A node index that lies on a cycle among the nodes not in ``placed``."""
    start = next(i for i in range(len(deps)) if i not in placed)
    seen: Dict[int, int] = {}
    i, step = start, 0
    while i not in seen:
        seen[i] = step
        step += 1
        i = next(d for d in deps[i] if d not in placed)
    return i
