"""Writes a serialized ``ModelProto`` with big ``raw_data`` payloads spliced in while streaming.

The exporter serializes the model with some main-graph initializers lacking ``raw_data``;
:func:`write_model` copies those bytes to a file, inserting each payload (streamed from its source)
where deterministic serialization would put it (before the first field numbered above 9) and
rewriting the lengths of the enclosing initializer and graph fields. The result is byte-identical
to serializing the full proto, without ever holding the payloads in memory.
"""

from __future__ import annotations

from typing import BinaryIO, Callable, Dict, List, NamedTuple, Tuple

from ..frontend.wire import GRAPH_INITIALIZER, LEN, MODEL_GRAPH, TENSOR_RAW_DATA, Field, encode_varint, fields

__all__ = ["Payload", "write_model", "MAX_PROTO_BYTES"]

#: Protobuf refuses messages of 2 GiB and more.
MAX_PROTO_BYTES = (1 << 31) - 1
_RAW_TAG = encode_varint(TENSOR_RAW_DATA << 3 | LEN)


class Payload(NamedTuple):
    """``length`` bytes that ``write(out)`` streams into ``out``."""

    length: int
    write: Callable[[BinaryIO], None]


class _Counter:
    """A file-like wrapper that counts the bytes written through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.n = 0

    def write(self, buf) -> int:
        self.out.write(buf)
        n = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
        self.n += n
        return n


def write_model(out: BinaryIO, blob: bytes, payloads: Dict[int, Payload]) -> Dict[int, int]:
    """Write ``blob`` to ``out`` with ``payloads[i]`` as raw_data of main-graph initializer ``i``.

    Returns {initializer index: file offset of its payload} (relative to where ``out`` started).
    Raises ValueError when the blob is not as expected, OverflowError when the result would
    exceed :data:`MAX_PROTO_BYTES`, OSError when a payload writes the wrong number of bytes.
    """
    if not payloads:
        if len(blob) > MAX_PROTO_BYTES:
            raise OverflowError(f"the model is {len(blob)} bytes")
        out.write(blob)
        return {}
    graphs = [f for f in fields(blob, 0, len(blob)) if f.number == MODEL_GRAPH and f.wire_type == LEN]
    if len(graphs) != 1:
        raise ValueError("serialized model has no single graph field")
    g = graphs[0]
    # Plan: per spliced initializer (field, insertion point, new tensor length, payload).
    plan: List[Tuple[int, Field, int, int, Payload]] = []
    grow = 0
    index = -1
    for f in fields(blob, g.value_start, g.end):
        if f.number != GRAPH_INITIALIZER or f.wire_type != LEN:
            continue
        index += 1
        p = payloads.get(index)
        if p is None:
            continue
        at = f.end
        for t in fields(blob, f.value_start, f.end):
            if t.number == TENSOR_RAW_DATA:
                raise ValueError(f"initializer #{index} already has raw_data")
            if t.number > TENSOR_RAW_DATA:
                at = t.start
                break
        old_len = f.end - f.value_start
        new_len = old_len + len(_RAW_TAG) + len(encode_varint(p.length)) + p.length
        grow += new_len - old_len + len(encode_varint(new_len)) - (f.value_start - f.len_pos)
        plan.append((index, f, at, new_len, p))
    if len(plan) != len(payloads):
        raise ValueError("a payload has no matching initializer")
    graph_len = g.end - g.value_start + grow
    total = len(blob) + grow + len(encode_varint(graph_len)) - (g.value_start - g.len_pos)
    if total > MAX_PROTO_BYTES:
        raise OverflowError(f"the model would be {total} bytes")
    view = memoryview(blob)
    w = _Counter(out)
    w.write(view[:g.len_pos])
    w.write(encode_varint(graph_len))
    offsets: Dict[int, int] = {}
    prev = g.value_start
    for i, f, at, new_len, p in plan:
        w.write(view[prev:f.len_pos])
        w.write(encode_varint(new_len))
        w.write(view[f.value_start:at])
        w.write(_RAW_TAG)
        w.write(encode_varint(p.length))
        start = w.n
        p.write(w)  # type: ignore[arg-type]
        if w.n - start != p.length:
            raise OSError(f"initializer #{i}: {w.n - start} bytes written, {p.length} expected")
        offsets[i] = start
        w.write(view[at:f.end])
        prev = f.end
    w.write(view[prev:])
    if w.n != total:
        raise OSError(f"wrote {w.n} bytes, planned {total}")
    return offsets
