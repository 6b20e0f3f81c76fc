"""Merge constants that hold the same data: initializers and Constant nodes. Bit-exact."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from edgec.ir import AttrKind, DType, ExternalTensor, Graph, Model, Node, Tensor, TensorType, Value
from edgec.ir.tensor import to_proto
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import can_replace

__all__ = ["DedupInitializers", "tensor_fingerprint", "tensors_equal"]

#: Bytes hashed at each end of a tensor for its fingerprint; smaller tensors are hashed whole.
EDGE = 1 << 16
CHUNK = 1 << 22


def _memory_bytes(t: Tensor) -> memoryview:
    """The stored bytes of an in-memory tensor (little-endian; sub-byte and string types via ONNX encoding)."""
    if t.dtype == DType.STRING:
        return memoryview(to_proto(t, "").SerializeToString())  # strings live in string_data
    if t.dtype.itemsize_bits % 8:
        return memoryview(t.raw_bytes())  # packed, as stored
    arr = np.ascontiguousarray(t.numpy())
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return memoryview(arr.reshape(-1).view(np.uint8))


def _is_streamed(t: Tensor) -> bool:
    return isinstance(t, ExternalTensor) and t.dtype != DType.STRING


def _size(t: Tensor) -> int:
    return t.length if _is_streamed(t) else len(_memory_bytes(t))


def _read(t: Tensor, start: int, n: int) -> bytes:
    """``n`` stored bytes from ``start`` (external data is read from the file, never loaded whole)."""
    if _is_streamed(t):
        with open(t.path, "rb") as f:
            f.seek(t.offset + start)
            return f.read(n)
    return bytes(_memory_bytes(t)[start:start + n])


def _chunks(t: Tensor) -> Iterator[bytes]:
    size = _size(t)
    if not _is_streamed(t):
        mv = _memory_bytes(t)
        for i in range(0, size, CHUNK):
            yield mv[i:i + CHUNK]
        return
    with open(t.path, "rb") as f:
        f.seek(t.offset)
        left = size
        while left:
            buf = f.read(min(CHUNK, left))
            if not buf:
                raise OSError("external data file ends early")
            left -= len(buf)
            yield buf


def tensor_fingerprint(t: Tensor) -> Tuple[Any, ...]:
    """(dtype, dims, byte size, hash of the first and last bytes): equal tensors have equal fingerprints."""
    size = _size(t)
    h = hashlib.sha256()
    if size <= 2 * EDGE:
        h.update(_read(t, 0, size))
    else:
        h.update(_read(t, 0, EDGE))
        h.update(_read(t, size - EDGE, EDGE))
    return (int(t.dtype), tuple(t.dims), size, h.digest())


def tensors_equal(a: Tensor, b: Tensor) -> bool:
    """Same dtype, dims and stored bytes (compared chunk by chunk)."""
    if a is b:
        return True
    if a.dtype != b.dtype or tuple(a.dims) != tuple(b.dims) or _size(a) != _size(b):
        return False
    if isinstance(a, ExternalTensor) and isinstance(b, ExternalTensor) and (a.path, a.offset, a.length) == (
            b.path, b.offset, b.length):
        return True
    ia, ib = _chunks(a), _chunks(b)
    buf_a = buf_b = b""
    while True:
        if not buf_a:
            buf_a = bytes(next(ia, b""))
        if not buf_b:
            buf_b = bytes(next(ib, b""))
        if not buf_a or not buf_b:
            return not buf_a and not buf_b
        n = min(len(buf_a), len(buf_b))
        if buf_a[:n] != buf_b[:n]:
            return False
        buf_a, buf_b = buf_a[n:], buf_b[n:]


def _type_key(v: Value) -> Any:
    """What besides the data must match: the quantization parameters of the value's type."""
    return v.type.quant if isinstance(v.type, TensorType) else None


def _constant_key(node: Node) -> Optional[Tuple[Any, ...]]:
    """A hashable key of a Constant node's value (tensor fingerprint or the plain attribute)."""
    if node.op_type != "Constant" or node.domain != "" or len(node.attrs) != 1 or node.outputs[0] is None:
        return None
    (name, a), = node.attrs.items()
    if a.ref is not None:
        return None
    if a.kind == AttrKind.TENSOR and isinstance(a.value, Tensor):
        return ("value",) + tensor_fingerprint(a.value) + (_type_key(node.outputs[0]),)
    if a.kind == AttrKind.FLOAT:
        return (name, np.float32(a.value).tobytes(), _type_key(node.outputs[0]))
    if a.kind == AttrKind.FLOATS:
        return (name, np.array(a.value, dtype=np.float32).tobytes(), _type_key(node.outputs[0]))
    if a.kind in (AttrKind.INT, AttrKind.STRING):
        return (name, a.value, _type_key(node.outputs[0]))
    if a.kind in (AttrKind.INTS, AttrKind.STRINGS):
        return (name, tuple(a.value), _type_key(node.outputs[0]))
    return None  # sparse tensors: left alone


class _Scope:
    """Constants visible in a graph: its own and those of enclosing graphs (outer first)."""

    def __init__(self, parent: Optional["_Scope"] = None) -> None:
        self.parent = parent
        self.table: Dict[Tuple[Any, ...], List[Value]] = {}

    def find(self, key: Tuple[Any, ...], same) -> Optional[Value]:
        scope: Optional[_Scope] = self
        while scope is not None:
            for cand in scope.table.get(key, ()):
                if same(cand):
                    return cand
            scope = scope.parent
        return None

    def add(self, key: Tuple[Any, ...], v: Value) -> None:
        self.table.setdefault(key, []).append(v)


def _constant_tensor(v: Value) -> Optional[Tensor]:
    node = v.producer
    if node is None:
        return v.const if isinstance(v.const, Tensor) else None
    t = node.attr("value")
    return t if isinstance(t, Tensor) else None


def _dedup_graph(graph: Graph, scope: _Scope, counts: Dict[str, int]) -> None:
    for v in list(graph.initializers.values()):
        if v.is_graph_input() or not isinstance(v.const, Tensor):
            continue  # an input's default may be overridden; sparse initializers are left alone
        key = ("init",) + tensor_fingerprint(v.const) + (_type_key(v),)
        keep = scope.find(key, lambda c: tensors_equal(c.const, v.const))
        if keep is not None and can_replace(v, keep):
            v.replace_all_uses_with(keep)
            graph.remove_initializer(v)
            counts["initializers-merged"] = counts.get("initializers-merged", 0) + 1
        else:
            scope.add(key, v)
    for node in graph:
        key = _constant_key(node)
        if key is not None:
            out = node.outputs[0]
            tensor = _constant_tensor(out)
            keep = scope.find(key, lambda c: tensor is None or tensors_equal(_constant_tensor(c), tensor))
            if keep is not None and can_replace(out, keep):
                out.replace_all_uses_with(keep)
                graph.remove(node)
                counts["constants-merged"] = counts.get("constants-merged", 0) + 1
            else:
                scope.add(key, out)
            continue
        for sg in node.subgraphs():
            _dedup_graph(sg, _Scope(scope), counts)


def dedup_initializers(model: Model) -> Dict[str, int]:
    """Merge equal constants everywhere; returns counts by kind."""
    counts: Dict[str, int] = {}
    _dedup_graph(model.graph, _Scope(), counts)
    for f in model.functions.values():
        _dedup_graph(f.graph, _Scope(), counts)
    return counts


@register_pass
class DedupInitializers(Pass):
    """Merge initializers, and Constant nodes, that hold the same data (bit-exact).

    Two constants are the same when dtype, dims, stored bytes (so NaN payloads and -0.0 count) and
    quantization parameters of their type are equal. Candidates are found by a fingerprint (size and
    a hash of the first and last 64 KiB), then compared byte by byte in chunks; external data is
    streamed, never loaded whole. An initializer that is also a graph input is never merged or
    merged into (its value can be overridden). The first constant is kept, and a later one in a
    subgraph may reuse an enclosing graph's; a constant that is a graph output is left alone when
    the kept one cannot take its name. Statistics: ``initializers-merged``, ``constants-merged``.
    Unused initializers are left for ``dce``.
    """

    name = "dedup-initializers"
    opt_level = 1

    def run(self, model: Model, ctx: PassContext) -> bool:
        counts = dedup_initializers(model)
        for k, n in sorted(counts.items()):
            ctx.stat(k, n)
        return bool(counts)
