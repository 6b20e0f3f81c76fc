"""Textual IR printer, plus a structural equality check (``ir_equal``) used by round-trip tests.

The format is described in ``docs/textual-ir.md``. Printing is deterministic: the same IR always
gives the same text. ``parse_model(print_model(m, elide_limit=None))`` rebuilds ``m`` exactly
(see :func:`ir_equal`), provided value names are unique within each graph tree (the printer renames
duplicates, which ONNX forbids anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .core import Attr, AttrKind, Function, Graph, Model, Node, SparseTensor, Value
from .dtypes import DType
from .tensor import ArrayTensor, ExternalTensor, Tensor
from .types import MapType, OptionalType, QuantParams, SequenceType, Shape, SparseTensorType, TensorType, Type

__all__ = [
    "print_model", "print_graph", "print_node", "print_type", "print_tensor", "print_attr",
    "ir_equal", "assert_ir_equal", "DEFAULT_ELIDE_LIMIT",
]

#: Tensors with more elements than this are elided by default.
DEFAULT_ELIDE_LIMIT = 16

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*\Z")
_SIMPLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9_.]+\Z")
_INDENT = "  "

#: The textual kind annotation of each attribute kind (``name:ints = []``).
KIND_NAMES: Dict[AttrKind, str] = {
    AttrKind.UNDEFINED: "undefined", AttrKind.FLOAT: "float", AttrKind.INT: "int", AttrKind.STRING: "string",
    AttrKind.TENSOR: "tensor", AttrKind.GRAPH: "graph", AttrKind.FLOATS: "floats", AttrKind.INTS: "ints",
    AttrKind.STRINGS: "strings", AttrKind.TENSORS: "tensors", AttrKind.GRAPHS: "graphs",
    AttrKind.SPARSE_TENSOR: "sparse_tensor", AttrKind.SPARSE_TENSORS: "sparse_tensors",
    AttrKind.TYPE_PROTO: "type", AttrKind.TYPE_PROTOS: "types",
}


# --- lexical helpers ---------------------------------------------------------------------------
def quote(s: str) -> str:
    """A double-quoted string literal with JSON escapes (non-ASCII printable text kept as is)."""
    return json.dumps(s, ensure_ascii=False)


def quote_bytes(b: bytes) -> str:
    """A ``b"..."`` literal: each byte is one code point below 256 (``\\u00XX`` escapes for non-ASCII)."""
    return "b" + json.dumps(b.decode("latin-1"), ensure_ascii=True)


def _str_lit(s: Union[str, bytes]) -> str:
    return quote_bytes(s) if isinstance(s, bytes) else quote(str(s))


def _sym(name: str) -> str:
    """A value or graph name after ``%`` / ``@``: bare when plain, else quoted."""
    return name if _NAME_RE.match(name) else quote(name)


def _key(name: str) -> str:
    """An attribute or info key: bare identifier or quoted."""
    return name if _SIMPLE_RE.match(name) else quote(name)


def _domain_text(domain: str) -> str:
    if domain == "":
        return "ai.onnx"
    return domain if _IDENT_RE.match(domain) and domain != "onnx" else quote(domain)


def _opref(domain: str, op: str, overload: str) -> str:
    if domain == "":
        dom = "onnx"
    elif _IDENT_RE.match(domain) and domain != "onnx":
        dom = domain
    else:
        dom = quote(domain)
    text = f"{dom}.{op if _SIMPLE_RE.match(op) else quote(op)}"
    if overload:
        text += ":" + (overload if _SIMPLE_RE.match(overload) else quote(overload))
    return text


def _opset_text(opsets: Dict[str, int]) -> str:
    return "opset(" + ", ".join(f"{_domain_text(d)}={v}" for d, v in opsets.items()) + ")"


# --- numbers -------------------------------------------------------------------------------------
_CANON_F64_NAN = struct.unpack("<Q", struct.pack("<d", float("nan")))[0]


def format_float(x: float) -> str:
    """A Python float as text that parses back bit-exactly (``nan:0x...`` for non-default NaNs)."""
    x = float(x)
    if x != x:
        bits = struct.unpack("<Q", struct.pack("<d", x))[0]
        return "nan" if bits == _CANON_F64_NAN else f"nan:0x{bits:016x}"
    return repr(x)


def _uint_view(dtype: np.dtype) -> np.dtype:
    return np.dtype(f"<u{dtype.itemsize}")


def _format_float_array(flat: np.ndarray, dt: DType) -> List[str]:
    npdt = dt.numpy
    bits = flat.view(_uint_view(npdt)).tolist()
    canon_nan = int(np.array([np.nan]).astype(npdt).view(_uint_view(npdt))[0])
    native = npdt in (np.dtype(np.float16), np.dtype(np.float32))
    cache: Dict[int, str] = {}
    out = []
    for x, b in zip(flat.tolist(), bits):
        s = cache.get(b)
        if s is None:
            x = float(x)
            if x != x:
                s = "nan" if b == canon_nan else f"nan:0x{b:x}"
            elif native:
                s = str(npdt.type(x))
                back = np.array([float(s)]).astype(npdt).view(_uint_view(npdt))[0]
                if int(back) != b:  # never seen, but the shortest form must round trip through f64
                    s = repr(x)
            else:
                s = repr(x)
            cache[b] = s
        out.append(s)
    return out


def _format_elements(arr: np.ndarray, dt: DType) -> List[str]:
    flat = np.ascontiguousarray(arr).reshape(-1)
    if dt == DType.STRING:
        out = []
        for s in flat:
            if isinstance(s, bytes):
                try:
                    out.append(quote(s.decode("utf-8")))
                except UnicodeDecodeError:
                    out.append(quote_bytes(s))
            else:
                out.append(quote(str(s)))
        return out
    if dt == DType.BOOL:
        return ["true" if v else "false" for v in flat.tolist()]
    if dt in (DType.COMPLEX64, DType.COMPLEX128):
        part = DType.FLOAT if dt == DType.COMPLEX64 else DType.DOUBLE
        re_ = _format_elements(np.ascontiguousarray(flat.real), part)
        im_ = _format_elements(np.ascontiguousarray(flat.imag), part)
        return [f"({r}, {i})" for r, i in zip(re_, im_)]
    if dt == DType.DOUBLE:
        return [format_float(v) for v in flat.tolist()]
    if dt.is_float:
        return _format_float_array(flat, dt)
    return [str(int(v)) for v in flat.tolist()]


def shape_dtype_text(dims: Optional[Sequence[Any]], dtype: DType) -> str:
    """``2x"N"x?xf32``; ``*xf32`` for unknown rank; ``f32`` for scalars."""
    if dims is None:
        return f"*x{dtype.short}"
    parts = []
    for d in dims:
        if d is None:
            parts.append("?")
        elif isinstance(d, str):
            parts.append(quote(d))
        else:
            parts.append(str(int(d)))
    parts.append(dtype.short)
    return "x".join(parts)


def _summary(arr: np.ndarray, dt: DType) -> str:
    items = []
    if dt != DType.STRING and dt not in (DType.COMPLEX64, DType.COMPLEX128) and arr.size:
        f = arr.astype(np.float64)
        with np.errstate(all="ignore"):
            items += [f"min={float(np.min(f)):.6g}", f"max={float(np.max(f)):.6g}", f"mean={float(np.mean(f)):.6g}"]
    if dt == DType.STRING:
        data = b"\0".join(s if isinstance(s, bytes) else str(s).encode("utf-8") for s in arr.reshape(-1))
    else:
        data = np.ascontiguousarray(arr).tobytes()
    items.append(f'sha256="{hashlib.sha256(data).hexdigest()[:16]}"')
    return ", ".join(items)


def print_tensor(t: Tensor, elide_limit: Optional[int] = None, base_dir: Optional[str] = None) -> str:
    """A tensor literal: ``dense<2xf32 [1.0, 2.0]>``, or ``elided<...>`` / ``external<...>`` when elided."""
    head = shape_dtype_text(t.dims, t.dtype)
    if elide_limit is not None and t.numel > elide_limit:
        if isinstance(t, ExternalTensor):
            path = t.path
            if base_dir:
                rel = os.path.relpath(path, base_dir)
                if not rel.startswith(".."):
                    path = rel.replace(os.sep, "/")
            return f"external<{head} {quote(path)}, offset={t.offset}, length={t.length}>"
        return f"elided<{head} {_summary(t.numpy(), t.dtype)}>"
    return f"dense<{head} [{', '.join(_format_elements(t.numpy(), t.dtype))}]>"


def _print_sparse(s: SparseTensor, elide_limit: Optional[int], base_dir: Optional[str]) -> str:
    head = shape_dtype_text(s.dims, s.values.dtype)
    return (f"sparse<{head} values={print_tensor(s.values, elide_limit, base_dir)}, "
            f"indices={print_tensor(s.indices, elide_limit, base_dir)}>")


# --- types ---------------------------------------------------------------------------------------
def _quant_text(q: QuantParams, dtype: DType) -> str:
    scale = q.scale
    if scale.ndim == 0:
        s = _format_elements(scale.reshape(1), DType.FLOAT)[0]
    elif scale.ndim == 1 and scale.size:
        s = "[" + ", ".join(_format_elements(scale, DType.FLOAT)) + "]"
    else:
        s = print_tensor(ArrayTensor(scale, DType.FLOAT))
    zp = q.zero_point
    zp_dt = DType.from_numpy(zp.dtype)
    short_ok = dtype != DType.UNDEFINED and zp.dtype == dtype.numpy
    if short_ok and zp.ndim == 0:
        z = _format_elements(zp, zp_dt)[0]
    elif short_ok and zp.ndim == 1 and zp.size:
        z = "[" + ", ".join(_format_elements(zp, zp_dt)) + "]"
    else:
        z = print_tensor(ArrayTensor(zp, zp_dt))
    text = f"quant<scale={s}, zero_point={z}"
    if q.axis is not None:
        text += f", axis={int(q.axis)}"
    if q.block_size:
        text += f", block_size={int(q.block_size)}"
    return text + ">"


def print_type(t: Optional[Type]) -> str:
    """The text of a value type; ``?`` for an unknown (None) type."""
    if t is None:
        return "?"
    if isinstance(t, TensorType):
        body = shape_dtype_text(t.shape.dims, t.dtype)
        if t.quant is not None:
            body += ", " + _quant_text(t.quant, t.dtype)
        return f"tensor<{body}>"
    if isinstance(t, SparseTensorType):
        return f"sparse_tensor<{shape_dtype_text(t.shape.dims, t.dtype)}>"
    if isinstance(t, SequenceType):
        return f"seq<{print_type(t.elem)}>"
    if isinstance(t, OptionalType):
        return f"opt<{print_type(t.elem)}>"
    if isinstance(t, MapType):
        return f"map<{DType(t.key).short}, {print_type(t.value)}>"
    raise TypeError(f"cannot print type {t!r}")


# --- info trailers ---------------------------------------------------------------------------------
def _lit(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, (str, bytes)):
        return _str_lit(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{quote(k)}: {quote(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    raise TypeError(f"cannot print {v!r}")


def _info(items: Iterable[Tuple[str, Any, Any]]) -> str:
    """`` #{k=v, ...}`` for the items whose value differs from its default; '' if none do."""
    parts = [f"{k}={_lit(v)}" for k, v, default in items if v != default]
    return " #{" + ", ".join(parts) + "}" if parts else ""


def _doc_meta(obj: Any) -> List[Tuple[str, Any, Any]]:
    return [("doc", obj.doc_string, ""), ("meta", dict(obj.metadata_props), {})]


# --- the printer -------------------------------------------------------------------------------------
class _Printer:
    def __init__(self, elide_limit: Optional[int], base_dir: Optional[str] = None) -> None:
        self.elide_limit = elide_limit
        self.base_dir = base_dir
        self.names: Dict[int, str] = {}

    # names
    def assign_names(self, root: Graph) -> None:
        """Give every value defined in ``root``'s tree a unique printed name (its own when possible)."""
        used: set = set()
        for g in root.all_graphs():
            for v in g.values():
                if id(v) in self.names:
                    continue
                name = v.name
                if name in used:
                    k = 1
                    while f"{name}_{k}" in used:
                        k += 1
                    name = f"{name}_{k}"
                used.add(name)
                self.names[id(v)] = name

    def ref(self, v: Optional[Value]) -> str:
        if v is None:
            return "_"
        return "%" + _sym(self.names.get(id(v), v.name))

    def vdef(self, v: Value) -> str:
        return self.ref(v) + _info(_doc_meta(v))

    # tensors
    def tensor(self, t: Tensor) -> str:
        return print_tensor(t, self.elide_limit, self.base_dir)

    def const(self, c: Union[Tensor, SparseTensor]) -> str:
        if isinstance(c, SparseTensor):
            return _print_sparse(c, self.elide_limit, self.base_dir)
        return self.tensor(c)

    # attributes
    def attr(self, a: Attr, ind: int) -> str:
        kind = a.kind
        if a.ref is not None:
            return f"{_key(a.name)}:{KIND_NAMES[kind]}=${_sym(a.ref)}" + _info([("doc", a.doc_string, "")])
        text, inferred = self.attr_value(a.kind, a.value, ind)
        ann = "" if inferred == kind else ":" + KIND_NAMES[kind]
        return f"{_key(a.name)}{ann}={text}" + _info([("doc", a.doc_string, "")])

    def attr_value(self, kind: AttrKind, v: Any, ind: int) -> Tuple[str, Optional[AttrKind]]:
        """(text, kind the parser infers from that text)."""
        K = AttrKind
        if kind == K.FLOAT:
            return format_float(v), K.FLOAT
        if kind == K.INT:
            return str(int(v)), K.INT
        if kind == K.STRING:
            return _str_lit(v), K.STRING
        if kind == K.TENSOR:
            return self.tensor(v), K.TENSOR
        if kind == K.GRAPH:
            return self.graph(v, ind), K.GRAPH
        if kind == K.SPARSE_TENSOR:
            return self.const(v), K.SPARSE_TENSOR
        if kind == K.TYPE_PROTO:
            return print_type(v), K.TYPE_PROTO
        if kind == K.UNDEFINED:
            return "?", K.TYPE_PROTO
        single = {K.FLOATS: K.FLOAT, K.INTS: K.INT, K.STRINGS: K.STRING, K.TENSORS: K.TENSOR, K.GRAPHS: K.GRAPH,
                  K.SPARSE_TENSORS: K.SPARSE_TENSOR, K.TYPE_PROTOS: K.TYPE_PROTO}[kind]
        items = [self.attr_value(single, x, ind)[0] for x in v]
        return "[" + ", ".join(items) + "]", (kind if items else None)

    # nodes
    def node(self, n: Node, ind: int) -> str:
        outs = n.outputs
        head = ""
        if outs:
            head = ", ".join("_" if o is None else self.vdef(o) for o in outs) + " = "
        text = f"{_INDENT * ind}{head}{_opref(n.domain, n.op_type, n.overload)}({', '.join(self.ref(v) for v in n.inputs)})"
        if n.attrs:
            text += " {" + ", ".join(self.attr(n.attrs[k], ind) for k in sorted(n.attrs)) + "}"
        types = [None if o is None else o.type for o in outs]
        if any(t is not None for t in types):
            text += " : " + ", ".join(print_type(t) for t in types)
        text += f" loc({quote(n.name)})"
        return text + _info(_doc_meta(n))

    # graphs
    def param(self, v: Value) -> str:
        text = self.vdef(v)
        if v.const is not None:  # a graph input with an initializer: its type is always shown
            return text + ": " + print_type(v.type) + " = " + self.const(v.const)
        if v.type is not None:
            text += ": " + print_type(v.type)
        return text

    @staticmethod
    def _natural_type(v: Value) -> bool:
        c = v.const
        if isinstance(c, SparseTensor):
            return v.type == SparseTensorType(c.dtype, Shape(c.dims))
        return isinstance(v.type, TensorType) and v.type.quant is None and v.type == TensorType(c.dtype, Shape(c.dims))

    def graph(self, g: Graph, ind: int, keyword: str = "graph", sym: Optional[str] = None,
              extra: str = "", info: Optional[List[Tuple[str, Any, Any]]] = None) -> str:
        inputs = list(g.inputs)
        sig = ", ".join(self.param(v) for v in inputs)
        outs = ", ".join(self.ref(v) + ("" if v.type is None else ": " + print_type(v.type)) for v in g.outputs)
        name = sym if sym is not None else "@" + _sym(g.name)
        info_text = _info(info if info is not None else _doc_meta(g))
        lines = [f"{keyword} {name}({sig}) -> ({outs}){extra}{info_text} {{"]
        in_ids = {id(v) for v in inputs}
        for v in g.initializers.values():
            if id(v) in in_ids:
                continue
            t = "" if self._natural_type(v) else " : " + print_type(v.type)
            lines.append(f"{_INDENT * (ind + 1)}{self.vdef(v)} = const{t} {'=' + ' ' if t else ''}{self.const(v.const)}")
        for n in g:
            lines.append(self.node(n, ind + 1))
        if g.outputs:
            lines.append(f"{_INDENT * (ind + 1)}return {', '.join(self.ref(v) for v in g.outputs)}")
        lines.append(_INDENT * ind + "}")
        return "\n".join(lines)

    def function(self, f: Function, ind: int) -> str:
        self.assign_names(f.graph)
        attrs = [_key(a) for a in f.attributes]
        for k, a in f.attribute_defaults.items():
            text, inferred = self.attr_value(a.kind, a.value, ind)
            ann = "" if inferred == a.kind else ":" + KIND_NAMES[a.kind]
            attrs.append(f"{_key(k)}{ann}={text}")
        extra = f" attrs[{', '.join(attrs)}]" if attrs else ""
        if f.opset_imports:
            extra += " " + _opset_text(f.opset_imports)
        info = _doc_meta(f) + [("graph_name", f.graph.name, f.name), ("graph_doc", f.graph.doc_string, ""),
                                ("graph_meta", dict(f.graph.metadata_props), {})]
        return self.graph(f.graph, ind, "func", "@" + _opref(f.domain, f.name, f.overload), extra, info)

    def model(self, m: Model) -> str:
        self.assign_names(m.graph)
        info = [("ir_version", m.ir_version, 10), ("producer_name", m.producer_name, ""),
                ("producer_version", m.producer_version, ""), ("domain", m.domain, ""),
                ("model_version", m.model_version, 0)] + _doc_meta(m) + [
                ("training_info", [bytes(b) for b in m.training_info], [])]
        lines = ["// edgec textual IR", f"model {_opset_text(m.opset_imports)}{_info(info)} {{", _INDENT + self.graph(m.graph, 1)]
        for key in sorted(m.functions):
            lines.append(_INDENT + self.function(m.functions[key], 1))
        lines.append("}")
        return "\n".join(lines) + "\n"


def print_model(model: Model, *, elide_limit: Optional[int] = DEFAULT_ELIDE_LIMIT) -> str:
    """The textual IR of a whole model.

    Tensors with more than ``elide_limit`` elements are elided (``elided<...>`` summaries, or
    ``external<...>`` references for external data); ``elide_limit=None`` prints every value, and
    the text then parses back to an equal model.
    """
    return _Printer(elide_limit, model.base_dir).model(model)


def print_graph(graph: Graph, *, elide_limit: Optional[int] = DEFAULT_ELIDE_LIMIT, indent: int = 0) -> str:
    """The text of one graph (``graph @name(...) -> (...) { ... }``) and its nested subgraphs."""
    p = _Printer(elide_limit)
    p.assign_names(graph)
    return _INDENT * indent + p.graph(graph, indent)


def print_node(node: Node, *, elide_limit: Optional[int] = DEFAULT_ELIDE_LIMIT) -> str:
    """The text of one node (one line unless it holds subgraphs)."""
    p = _Printer(elide_limit)
    for g in node.subgraphs():
        p.assign_names(g)
    return p.node(node, 0)


def print_attr(attr: Attr, *, elide_limit: Optional[int] = DEFAULT_ELIDE_LIMIT) -> str:
    """The text of one attribute (``name=value``, with a ``:kind`` annotation when needed)."""
    return _Printer(elide_limit).attr(attr, 0)


# --- structural equality ----------------------------------------------------------------------------
class _Mismatch(Exception):
    pass


def _fail(path: str, msg: str) -> None:
    raise _Mismatch(f"{path}: {msg}")


def _str_bytes(s: Any) -> bytes:
    return s if isinstance(s, bytes) else str(s).encode("utf-8")


def tensor_equal(a: Tensor, b: Tensor) -> bool:
    """Same dtype, dims and bit-exact values (strings compared as UTF-8 bytes); storage may differ."""
    if a.dtype != b.dtype or tuple(a.dims) != tuple(b.dims):
        return False
    x, y = a.numpy(), b.numpy()
    if a.dtype == DType.STRING:
        return [_str_bytes(s) for s in x.reshape(-1)] == [_str_bytes(s) for s in y.reshape(-1)]
    dt = a.dtype.numpy
    return np.ascontiguousarray(x, dtype=dt).tobytes() == np.ascontiguousarray(y, dtype=dt).tobytes()


def _array_exact(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def type_equal(a: Optional[Type], b: Optional[Type]) -> bool:
    """Types equal, quantization parameters compared exactly (dtype and shape of scale and zero point)."""
    if a is None or b is None:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, TensorType):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.quant is None or b.quant is None:
            return a.quant is b.quant
        qa, qb = a.quant, b.quant
        return (qa.axis == qb.axis and qa.block_size == qb.block_size and _array_exact(qa.scale, qb.scale)
                and _array_exact(qa.zero_point, qb.zero_point))
    if isinstance(a, (SequenceType, OptionalType)):
        return type_equal(a.elem, b.elem)
    if isinstance(a, MapType):
        return a.key == b.key and type_equal(a.value, b.value)
    return a == b


class _Comparer:
    def __init__(self) -> None:
        self.vmap: Dict[int, Value] = {}

    def pair(self, a: Optional[Value], b: Optional[Value], path: str) -> None:
        if (a is None) != (b is None):
            _fail(path, "one value is omitted and the other is not")
        if a is not None:
            self.vmap[id(a)] = b

    def map_defs(self, a: Graph, b: Graph, path: str) -> None:
        if len(a.inputs) != len(b.inputs):
            _fail(path, f"{len(a.inputs)} vs {len(b.inputs)} inputs")
        for x, y in zip(a.inputs, b.inputs):
            self.pair(x, y, path)
        if set(a.initializers) != set(b.initializers):
            _fail(path, f"initializers {sorted(a.initializers)} vs {sorted(b.initializers)}")
        for k in a.initializers:
            self.pair(a.initializers[k], b.initializers[k], path)
        na, nb = a.nodes, b.nodes
        if len(na) != len(nb):
            _fail(path, f"{len(na)} vs {len(nb)} nodes")
        for i, (x, y) in enumerate(zip(na, nb)):
            p = f"{path}/node[{i}]({x.op_type})"
            if len(x.outputs) != len(y.outputs):
                _fail(p, f"{len(x.outputs)} vs {len(y.outputs)} outputs")
            for o, q in zip(x.outputs, y.outputs):
                self.pair(o, q, p)
            if set(x.attrs) != set(y.attrs):
                _fail(p, f"attributes {sorted(x.attrs)} vs {sorted(y.attrs)}")
            for k in sorted(x.attrs):
                ga, gb = x.attrs[k].graphs(), y.attrs[k].graphs()
                if len(ga) != len(gb):
                    _fail(f"{p}/{k}", "different number of graphs")
                for j, (s, t) in enumerate(zip(ga, gb)):
                    self.map_defs(s, t, f"{p}/{k}[{j}]")

    def same_ref(self, a: Optional[Value], b: Optional[Value], path: str) -> None:
        if a is None or b is None:
            if a is not b:
                _fail(path, "omitted vs present value")
            return
        mapped = self.vmap.get(id(a))
        if mapped is None:
            if a.name != b.name:  # a value from outside the compared scope: compare by name
                _fail(path, f"refers to %{a.name} vs %{b.name}")
        elif mapped is not b:
            _fail(path, f"refers to %{a.name} vs %{b.name}")

    def value(self, a: Value, b: Value, path: str) -> None:
        p = f"{path}/%{a.name}"
        if a.name != b.name:
            _fail(p, f"name {a.name!r} vs {b.name!r}")
        if not type_equal(a.type, b.type):
            _fail(p, f"type {print_type(a.type)} vs {print_type(b.type)}")
        if a.doc_string != b.doc_string or dict(a.metadata_props) != dict(b.metadata_props):
            _fail(p, "doc string or metadata differ")
        self.const(a.const, b.const, p)

    def const(self, a: Any, b: Any, path: str) -> None:
        if a is None or b is None:
            if a is not b:
                _fail(path, "constant vs no constant")
            return
        if isinstance(a, SparseTensor) or isinstance(b, SparseTensor):
            if not (isinstance(a, SparseTensor) and isinstance(b, SparseTensor) and a.dims == b.dims
                    and tensor_equal(a.values, b.values) and tensor_equal(a.indices, b.indices)):
                _fail(path, "sparse tensors differ")
            return
        if not tensor_equal(a, b):
            _fail(path, f"tensor {a!r} vs {b!r} (dtype, dims or values differ)")

    def graph(self, a: Graph, b: Graph, path: str) -> None:
        if a.name != b.name:
            _fail(path, f"graph name {a.name!r} vs {b.name!r}")
        if a.doc_string != b.doc_string or dict(a.metadata_props) != dict(b.metadata_props):
            _fail(path, "graph doc string or metadata differ")
        for x, y in zip(a.inputs, b.inputs):
            self.value(x, y, path + "/input")
        for k in a.initializers:
            x, y = a.initializers[k], b.initializers[k]
            if x.is_graph_input() != y.is_graph_input():
                _fail(path, f"initializer {k!r} is a graph input in one graph only")
            self.value(x, y, path + "/initializer")
        if len(a.outputs) != len(b.outputs):
            _fail(path, f"{len(a.outputs)} vs {len(b.outputs)} outputs")
        for i, (x, y) in enumerate(zip(a.outputs, b.outputs)):
            self.same_ref(x, y, f"{path}/output[{i}]")
        for i, (x, y) in enumerate(zip(a.nodes, b.nodes)):
            self.node(x, y, f"{path}/node[{i}]({x.op_type})")

    def node(self, a: Node, b: Node, path: str) -> None:
        for f in ("op_type", "domain", "overload", "name", "doc_string"):
            if getattr(a, f) != getattr(b, f):
                _fail(path, f"{f} {getattr(a, f)!r} vs {getattr(b, f)!r}")
        if dict(a.metadata_props) != dict(b.metadata_props):
            _fail(path, "metadata differ")
        if len(a.inputs) != len(b.inputs):
            _fail(path, f"{len(a.inputs)} vs {len(b.inputs)} inputs")
        for i, (x, y) in enumerate(zip(a.inputs, b.inputs)):
            self.same_ref(x, y, f"{path}/input[{i}]")
        for x, y in zip(a.outputs, b.outputs):
            if x is not None:
                self.value(x, y, path + "/output")
        if set(a.attrs) != set(b.attrs):
            _fail(path, f"attributes {sorted(a.attrs)} vs {sorted(b.attrs)}")
        for k in a.attrs:
            self.attr(a.attrs[k], b.attrs[k], f"{path}/{k}")

    def attr(self, a: Attr, b: Attr, path: str) -> None:
        if a.name != b.name or a.kind != b.kind or a.ref != b.ref or a.doc_string != b.doc_string:
            _fail(path, f"attribute {a.name}:{a.kind.name} ref={a.ref} vs {b.name}:{b.kind.name} ref={b.ref}")
        if a.ref is not None:
            return
        self.attr_value(a.kind, a.value, b.value, path)

    def attr_value(self, kind: AttrKind, a: Any, b: Any, path: str) -> None:
        K = AttrKind
        if kind == K.FLOAT:
            if struct.pack("<d", float(a)) != struct.pack("<d", float(b)):
                _fail(path, f"{a!r} vs {b!r}")
        elif kind == K.INT:
            if int(a) != int(b):
                _fail(path, f"{a!r} vs {b!r}")
        elif kind == K.STRING:
            if type(a) is not type(b) or a != b:
                _fail(path, f"{a!r} vs {b!r}")
        elif kind == K.TENSOR:
            self.const(a, b, path)
        elif kind == K.SPARSE_TENSOR:
            self.const(a, b, path)
        elif kind == K.GRAPH:
            self.graph(a, b, path)
        elif kind == K.TYPE_PROTO:
            if not type_equal(a, b):
                _fail(path, f"{print_type(a)} vs {print_type(b)}")
        elif kind == K.UNDEFINED:
            if a is not None or b is not None:
                _fail(path, f"{a!r} vs {b!r}")
        else:
            single = {K.FLOATS: K.FLOAT, K.INTS: K.INT, K.STRINGS: K.STRING, K.TENSORS: K.TENSOR, K.GRAPHS: K.GRAPH,
                      K.SPARSE_TENSORS: K.SPARSE_TENSOR, K.TYPE_PROTOS: K.TYPE_PROTO}[kind]
            if len(a) != len(b):
                _fail(path, f"{len(a)} vs {len(b)} items")
            for i, (x, y) in enumerate(zip(a, b)):
                self.attr_value(single, x, y, f"{path}[{i}]")

    def model(self, a: Model, b: Model) -> None:
        for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
            if getattr(a, f) != getattr(b, f):
                _fail("model", f"{f} {getattr(a, f)!r} vs {getattr(b, f)!r}")
        if dict(a.opset_imports) != dict(b.opset_imports):
            _fail("model", f"opsets {a.opset_imports} vs {b.opset_imports}")
        if dict(a.metadata_props) != dict(b.metadata_props):
            _fail("model", "metadata differ")
        if [bytes(x) for x in a.training_info] != [bytes(x) for x in b.training_info]:
            _fail("model", "training info differs")
        self.map_defs(a.graph, b.graph, "@" + a.graph.name)
        self.graph(a.graph, b.graph, "@" + a.graph.name)
        if set(a.functions) != set(b.functions):
            _fail("model", f"functions {sorted(a.functions)} vs {sorted(b.functions)}")
        for k, fa in a.functions.items():
            fb = b.functions[k]
            p = "func " + ".".join(k)
            for f in ("domain", "name", "overload", "attributes", "opset_imports", "doc_string"):
                if getattr(fa, f) != getattr(fb, f):
                    _fail(p, f"{f} {getattr(fa, f)!r} vs {getattr(fb, f)!r}")
            if dict(fa.metadata_props) != dict(fb.metadata_props):
                _fail(p, "metadata differ")
            if list(fa.attribute_defaults) != list(fb.attribute_defaults):
                _fail(p, "attribute defaults differ")
            for n in fa.attribute_defaults:
                self.attr(fa.attribute_defaults[n], fb.attribute_defaults[n], f"{p}/{n}")
            self.map_defs(fa.graph, fb.graph, p)
            self.graph(fa.graph, fb.graph, p)


def assert_ir_equal(a: Union[Model, Graph], b: Union[Model, Graph]) -> None:
    """Raise AssertionError naming the first difference between two models (or two graphs).

    Everything is compared: names, types (symbolic dims, quantization), attributes (nested graphs,
    tensors by dtype and bit-exact value), functions, opsets, metadata, doc strings, node names,
    domains and overloads, omitted inputs/outputs, initializers that are graph inputs, graph
    outputs and which value every input refers to. Initializers are compared by name (order-free).
    """
    c = _Comparer()
    try:
        if isinstance(a, Model) and isinstance(b, Model):
            c.model(a, b)
        elif isinstance(a, Graph) and isinstance(b, Graph):
            c.map_defs(a, b, "@" + a.name)
            c.graph(a, b, "@" + a.name)
        else:
            raise _Mismatch(f"cannot compare {type(a).__name__} with {type(b).__name__}")
    except _Mismatch as e:
        raise AssertionError(str(e)) from None


def ir_equal(a: Union[Model, Graph], b: Union[Model, Graph]) -> bool:
    """True when two models (or graphs) are structurally equal; see :func:`assert_ir_equal`."""
    try:
        assert_ir_equal(a, b)
    except AssertionError:
        return False
    return True
