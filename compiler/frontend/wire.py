"""Just enough of the protobuf wire format to keep big inline tensors out of memory.

Loading: :func:`read_model_lazy` memory-maps an ``.onnx`` file, finds the ``raw_data`` payloads of
the main graph's initializers (``ModelProto.graph`` = 7 -> ``GraphProto.initializer`` = 5 ->
``TensorProto.raw_data`` = 9), and parses a copy of the file without them; the payloads stay on disk
and are described by (initializer index, file offset, length). Anything unexpected in the layout
makes it return ``None`` so that the caller takes the ordinary (eager) path, which owns the errors.

Saving uses the same scanner (see ``edgec.backends.wire_writer``) to splice payloads back in.
"""

from __future__ import annotations

import mmap
import os
import stat
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import onnx

from ..errors import ModelLoadError

__all__ = ["WireError", "Field", "read_varint", "encode_varint", "fields", "read_model_lazy", "strip_model",
           "MODEL_GRAPH", "GRAPH_INITIALIZER", "TENSOR_RAW_DATA", "LEN"]

#: Field numbers on the path to the big payloads.
MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_RAW_DATA = 9
#: Wire types.
VARINT, I64, LEN, I32 = 0, 1, 2, 5
#: raw_data payloads of at least this many bytes stay on disk.
LAZY_MIN_BYTES = 1024

Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]


class WireError(ValueError):
    """The bytes are not the protobuf layout the scanner expects."""


class Field(NamedTuple):
    """One field of a message: ``start`` (its tag), ``value_start`` / ``end`` (its payload).

    For length-delimited fields ``len_pos`` is where the length varint starts (else ``value_start``).
    """

    number: int
    wire_type: int
    start: int
    len_pos: int
    value_start: int
    end: int


def read_varint(buf: Buffer, pos: int, end: int) -> Tuple[int, int]:
    """(value, position after it) of the varint at ``pos``; at most 10 bytes, inside ``end``."""
    result = shift = 0
    for i in range(pos, min(pos + 10, end)):
        b = buf[i]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >> 64:
                raise WireError("varint overflows 64 bits")
            return result, i + 1
        shift += 7
    raise WireError("truncated or overlong varint")


def encode_varint(n: int) -> bytes:
    """The canonical varint encoding of a non-negative integer."""
    if n < 0:
        raise ValueError("negative varint")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def fields(buf: Buffer, start: int, end: int) -> Iterator[Field]:
    """The fields of the message occupying ``buf[start:end]``; raises WireError on malformed input.

    Groups (wire types 3 and 4) are refused: ONNX never uses them.
    """
    pos = start
    while pos < end:
        tag, p = read_varint(buf, pos, end)
        number, wt = tag >> 3, tag & 7
        if number == 0 or number >= 1 << 29:
            raise WireError(f"bad field number {number}")
        if wt == VARINT:
            _, q = read_varint(buf, p, end)
            yield Field(number, wt, pos, p, p, q)
        elif wt == LEN:
            n, v = read_varint(buf, p, end)
            q = v + n
            if q > end:
                raise WireError("length-delimited field runs past its message")
            yield Field(number, wt, pos, p, v, q)
        elif wt == I64 or wt == I32:
            q = p + (8 if wt == I64 else 4)
            if q > end:
                raise WireError("fixed-size field runs past its message")
            yield Field(number, wt, pos, p, p, q)
        else:
            raise WireError(f"unsupported wire type {wt}")
        pos = q


class Stripped(NamedTuple):
    """A model's bytes without its big payloads, and where those payloads are in the original."""

    data: bytes
    spans: Dict[int, Tuple[int, int]]  # main-graph initializer index -> (offset, length)


def strip_model(buf: Buffer, size: int, min_bytes: int = LAZY_MIN_BYTES) -> Optional[Stripped]:
    """Remove the main graph's initializer ``raw_data`` payloads of ``min_bytes`` or more.

    Returns None when there is nothing to remove or the layout is not the plain one expected
    (one graph field, one raw_data per tensor). Raises WireError on malformed bytes.
    """
    graphs = [f for f in fields(buf, 0, size) if f.number == MODEL_GRAPH]
    if len(graphs) != 1 or graphs[0].wire_type != LEN:
        return None
    g = graphs[0]
    pieces: List[bytes] = []
    spans: Dict[int, Tuple[int, int]] = {}
    prev = g.value_start
    removed = 0
    index = -1
    for f in fields(buf, g.value_start, g.end):
        if f.number != GRAPH_INITIALIZER or f.wire_type != LEN:
            continue
        index += 1
        raws = [t for t in fields(buf, f.value_start, f.end) if t.number == TENSOR_RAW_DATA]
        if len(raws) != 1 or raws[0].wire_type != LEN:
            continue
        r = raws[0]
        n = r.end - r.value_start
        if n < min_bytes:
            continue
        spans[index] = (r.value_start, n)
        new_len = (f.end - f.value_start) - (r.end - r.start)
        pieces += [buf[prev:f.len_pos], encode_varint(new_len), buf[f.value_start:r.start], buf[r.end:f.end]]
        removed += (f.end - f.start) - (f.len_pos - f.start) - len(encode_varint(new_len)) - new_len
        prev = f.end
    if not spans:
        return None
    pieces.append(buf[prev:g.end])
    graph_len = g.end - g.value_start - removed
    data = b"".join([buf[0:g.len_pos], encode_varint(graph_len), *pieces, buf[g.end:size]])
    return Stripped(data, spans)


def read_model_lazy(path: str, min_bytes: int = LAZY_MIN_BYTES
                    ) -> Optional[Tuple[onnx.ModelProto, Dict[int, Tuple[int, int]]]]:
    """Parse ``path`` leaving big initializer payloads on disk: (proto, {initializer index: (offset, length)}).

    None means "use the eager path" (not a regular non-empty file, no big payloads, or an unexpected
    or malformed layout: the eager path then reports the error). A stripped model that does not parse
    raises the same ModelLoadError the eager path would.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            size = min(st.st_size, len(mm))
            stripped = strip_model(mm, size, min_bytes)
    except (OSError, ValueError, IndexError):  # WireError is a ValueError
        return None
    if stripped is None:
        return None
    proto = onnx.ModelProto()
    try:
        n = proto.ParseFromString(stripped.data)
        if n is not None and n != len(stripped.data):
            raise ValueError("trailing bytes")
    except Exception as e:  # DecodeError, RuntimeError from upb, ...
        raise ModelLoadError(f"{path}: not a valid ONNX protobuf (truncated or corrupt): {type(e).__name__}") from None
    if not proto.HasField("graph"):  # cannot happen (a graph field was found), kept as a guard
        return None
    return proto, stripped.spans
