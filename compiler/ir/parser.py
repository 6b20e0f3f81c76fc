"""Textual IR parser: the inverse of :mod:`edgec.ir.printer` (grammar in ``docs/textual-ir.md``).

Errors raise :class:`edgec.errors.IRParseError` with ``line L:C`` and a one-line message.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Any, Dict, List, NoReturn, Optional, Tuple

import numpy as np

from ..errors import IRParseError
from .core import Attr, AttrKind, Function, Graph, Model, Node, SparseTensor, Value
from .dtypes import DType
from .printer import KIND_NAMES, type_equal, print_type
from .tensor import ArrayTensor, ExternalTensor, Tensor
from .types import MapType, OptionalType, QuantParams, SequenceType, Shape, SparseTensorType, TensorType, Type

__all__ = ["parse_model", "parse_type"]

_WS_RE = re.compile(r"(?:\s+|//[^\n]*)*")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_NAME_RE = re.compile(r"[A-Za-z0-9_.]+")
_NUM_RE = re.compile(r"[-+]?(?:inf|nan(?::0x[0-9a-fA-F]+)?|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![A-Za-z0-9_])")
_DTYPE_RE = re.compile(r"[A-Za-z0-9]+")
_KINDS = {v: k for k, v in KIND_NAMES.items()}
_PLURAL = {AttrKind.FLOAT: AttrKind.FLOATS, AttrKind.INT: AttrKind.INTS, AttrKind.STRING: AttrKind.STRINGS,
           AttrKind.TENSOR: AttrKind.TENSORS, AttrKind.GRAPH: AttrKind.GRAPHS,
           AttrKind.SPARSE_TENSOR: AttrKind.SPARSE_TENSORS, AttrKind.TYPE_PROTO: AttrKind.TYPE_PROTOS}
_SINGLE = {v: k for k, v in _PLURAL.items()}
_DEFAULT_OPSET = {"": 21}


class _NanBits:
    """A NaN literal with an explicit bit pattern (``nan:0x7fc00001``)."""

    def __init__(self, bits: int) -> None:
        self.bits = bits


class _Scope:
    """Value names visible in one graph; forward references wait in ``pending``."""

    def __init__(self, parent: Optional["_Scope"]) -> None:
        self.parent = parent
        self.defs: Dict[str, Value] = {}
        self.pending: Dict[str, Tuple[Value, int]] = {}

    def lookup(self, name: str) -> Optional[Value]:
        s: Optional[_Scope] = self
        while s is not None:
            if name in s.defs:
                return s.defs[name]
            if name in s.pending:
                return s.pending[name][0]
            s = s.parent
        return None


class _Parser:
    def __init__(self, text: str, allow_elided: bool, base_dir: Optional[str]) -> None:
        self.s = text
        self.i = 0
        self.allow_elided = allow_elided
        self.base_dir = base_dir
        self.scope: Optional[_Scope] = None

    # --- errors and low-level scanning -------------------------------------------------------
    def where(self, pos: int) -> str:
        line = self.s.count("\n", 0, pos) + 1
        col = pos - (self.s.rfind("\n", 0, pos) + 1) + 1
        return f"line {line}:{col}"

    def error(self, msg: str, pos: Optional[int] = None) -> NoReturn:
        raise IRParseError(f"{self.where(self.i if pos is None else pos)}: {msg}")

    def found(self) -> str:
        self.ws()
        if self.i >= len(self.s):
            return "end of input"
        m = re.compile(r"[^\s]{1,12}").match(self.s, self.i)
        return f"'{m.group(0)}'" if m else repr(self.s[self.i])

    def ws(self) -> None:
        self.i = _WS_RE.match(self.s, self.i).end()

    def peek(self, lit: str) -> bool:
        self.ws()
        return self.s.startswith(lit, self.i)

    def accept(self, lit: str) -> bool:
        if self.peek(lit):
            self.i += len(lit)
            return True
        return False

    def expect(self, lit: str, what: str = "") -> None:
        if not self.accept(lit):
            self.error(f"expected '{lit}'{' ' + what if what else ''} but found {self.found()}")

    def word(self) -> Optional[str]:
        self.ws()
        m = _IDENT_RE.match(self.s, self.i)
        return m.group(0) if m else None

    def keyword(self, kw: str) -> bool:
        if self.word() == kw:
            self.i += len(kw)
            return True
        return False

    def expect_keyword(self, kw: str) -> None:
        if not self.keyword(kw):
            self.error(f"expected '{kw}' but found {self.found()}")

    def ident(self, what: str = "an identifier") -> str:
        w = self.word()
        if w is None:
            self.error(f"expected {what} but found {self.found()}")
        self.i += len(w)
        return w

    def string(self) -> str:
        self.ws()
        if not self.s.startswith('"', self.i):
            self.error(f"expected a string but found {self.found()}")
        try:
            value, end = json.decoder.scanstring(self.s, self.i + 1)
        except json.JSONDecodeError as e:
            self.error(f"bad string literal: {e.msg}", e.pos)
        self.i = end
        return value

    def str_or_bytes(self) -> Any:
        self.ws()
        if self.s.startswith('b"', self.i):
            self.i += 1
            pos = self.i
            text = self.string()
            try:
                return text.encode("latin-1")
            except UnicodeEncodeError:
                self.error("bytes literal holds a character above \\u00ff", pos)
        return self.string()

    def key(self, what: str = "a name") -> str:
        return self.string() if self.peek('"') else self.ident(what)

    def sym(self, sigil: str, what: str) -> str:
        """A name after ``%`` or ``@``: bare or quoted."""
        self.ws()
        if not self.s.startswith(sigil, self.i):
            self.error(f"expected {what} ('{sigil}name') but found {self.found()}")
        self.i += 1
        if self.s.startswith('"', self.i):
            return self.string()
        m = _NAME_RE.match(self.s, self.i)
        if not m:
            self.error(f"expected a name after '{sigil}'")
        self.i = m.end()
        return m.group(0)

    def number(self) -> Any:
        """An int, a float or a _NanBits."""
        self.ws()
        m = _NUM_RE.match(self.s, self.i)
        if not m:
            self.error(f"expected a number but found {self.found()}")
        self.i = m.end()
        tok = m.group(0)
        if "nan:" in tok:
            if tok[0] in "+-":
                self.error("a NaN with a bit pattern takes no sign", m.start())
            return _NanBits(int(tok[6:], 16))
        if any(c in tok for c in ".eEni"):
            return float(tok)
        return int(tok)

    def integer(self, what: str = "an integer") -> int:
        if not self.at_number():
            self.error(f"expected {what} but found {self.found()}")
        pos = self.i
        v = self.number()
        if not isinstance(v, int):
            self.error(f"expected {what}", pos)
        return v

    def at_number(self) -> bool:
        self.ws()
        return _NUM_RE.match(self.s, self.i) is not None

    # --- types -------------------------------------------------------------------------------
    def dtype_word(self) -> DType:
        m = _DTYPE_RE.match(self.s, self.i)
        if not m:
            self.error(f"expected an element type but found {self.found()}")
        try:
            dt = DType.from_short(m.group(0))
        except ValueError:
            self.error(f"unknown element type '{m.group(0)}'")
        self.i = m.end()
        return dt

    def dims_dtype(self) -> Tuple[Optional[Tuple[Any, ...]], DType]:
        """``2x"N"x?xf32`` / ``*xf32`` / ``f32`` (no spaces inside)."""
        self.ws()
        dims: List[Any] = []
        unknown_rank = False
        while True:
            c = self.s[self.i:self.i + 1]
            if c.isdigit():
                m = re.compile(r"\d+").match(self.s, self.i)
                dims.append(int(m.group(0)))
                self.i = m.end()
            elif c == "?":
                dims.append(None)
                self.i += 1
            elif c == '"':
                dims.append(self.string())
            elif c == "*":
                if dims or unknown_rank:
                    self.error("'*' (unknown rank) must be the only dimension")
                unknown_rank = True
                self.i += 1
            else:
                dt = self.dtype_word()
                return (None if unknown_rank else tuple(dims)), dt
            if self.s[self.i:self.i + 1] != "x":
                self.error(f"expected 'x' after a dimension but found {self.found()}")
            self.i += 1

    def static_dims(self, dims: Optional[Tuple[Any, ...]], pos: int) -> Tuple[int, ...]:
        if dims is None or not all(isinstance(d, int) for d in dims):
            self.error("a tensor literal needs static dimensions", pos)
        return dims  # type: ignore[return-value]

    def at_type(self) -> bool:
        w = self.word()
        return self.peek("?") or (w in ("tensor", "sparse_tensor", "seq", "opt", "map") and
                                  self.s.startswith("<", self.i + len(w)))

    def type(self) -> Optional[Type]:
        if self.accept("?"):
            return None
        w = self.word()
        if w not in ("tensor", "sparse_tensor", "seq", "opt", "map"):
            self.error(f"expected a type but found {self.found()}")
        self.i += len(w)
        self.expect("<")
        if w == "tensor":
            dims, dt = self.dims_dtype()
            quant = None
            if self.accept(","):
                quant = self.quant(dt)
            t: Optional[Type] = TensorType(dt, Shape(dims), quant)
        elif w == "sparse_tensor":
            dims, dt = self.dims_dtype()
            t = SparseTensorType(dt, Shape(dims))
        elif w == "seq":
            t = SequenceType(self.type())
        elif w == "opt":
            t = OptionalType(self.type())
        else:
            self.ws()
            key = self.dtype_word()
            self.expect(",")
            t = MapType(key, self.type())
        self.expect(">", f"to close {w}<")
        return t

    def quant(self, dt: DType) -> QuantParams:
        self.expect_keyword("quant")
        self.expect("<")
        fields: Dict[str, Any] = {}
        while True:
            pos = self.i
            k = self.ident("a quant field")
            self.expect("=")
            if k == "scale":
                fields[k] = self.quant_array(DType.FLOAT)
            elif k == "zero_point":
                fields[k] = self.quant_array(dt)
            elif k in ("axis", "block_size"):
                fields[k] = self.integer()
            else:
                self.error(f"unknown quant field '{k}' (scale, zero_point, axis, block_size)", pos)
            if not self.accept(","):
                break
        self.expect(">", "to close quant<")
        if "scale" not in fields or "zero_point" not in fields:
            self.error("quant<> needs scale and zero_point")
        return QuantParams(fields["scale"], fields["zero_point"], fields.get("axis"), fields.get("block_size", 0))

    def quant_array(self, dt: DType) -> np.ndarray:
        if self.peek("dense<"):
            return self.tensor_lit().numpy()
        if dt == DType.UNDEFINED:
            self.error("a zero point of an undefined element type must be a dense<> literal")
        pos = self.i
        if self.accept("["):
            vals = self.elements()
            return self.to_array(vals, dt, (len(vals),), pos)
        return self.to_array([self.number()], dt, (), pos)

    # --- tensors -----------------------------------------------------------------------------
    def scalar(self) -> Any:
        self.ws()
        c = self.s[self.i:self.i + 1]
        if c == '"' or self.s.startswith('b"', self.i):
            return self.str_or_bytes()
        if c == "(":
            self.i += 1
            re_ = self.number()
            self.expect(",")
            im = self.number()
            self.expect(")")
            return (re_, im)
        if self.keyword("true"):
            return True
        if self.keyword("false"):
            return False
        return self.number()

    def elements(self) -> List[Any]:
        """Scalars up to and including ']' (the '[' is consumed)."""
        vals: List[Any] = []
        if self.accept("]"):
            return vals
        while True:
            vals.append(self.scalar())
            if self.accept("]"):
                return vals
            self.expect(",", "or ']' between values")

    def to_array(self, vals: List[Any], dt: DType, dims: Tuple[int, ...], pos: int) -> np.ndarray:
        n = int(np.prod(dims, dtype=np.int64)) if dims else 1
        if len(vals) != n:
            self.error(f"expected {n} values for {'x'.join(map(str, dims)) or 'a scalar'} but found {len(vals)}", pos)
        npdt = dt.numpy if dt != DType.STRING else np.dtype(object)
        if dt == DType.STRING:
            if not all(isinstance(v, (str, bytes)) for v in vals):
                self.error("a str tensor holds string literals", pos)
            arr = np.empty(n, dtype=object)
            arr[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in vals]
            return arr.reshape(dims)
        if any(isinstance(v, (str, bytes)) for v in vals):
            self.error(f"string literal in a {dt.short} tensor", pos)
        if dt == DType.BOOL:
            if not all(isinstance(v, bool) or v in (0, 1) for v in vals if not isinstance(v, (tuple, _NanBits))):
                self.error("a bool tensor holds true/false", pos)
            return np.array([bool(v) for v in vals], dtype=np.bool_).reshape(dims)
        if dt in (DType.COMPLEX64, DType.COMPLEX128):
            out = []
            for v in vals:
                if isinstance(v, tuple):
                    if any(isinstance(x, _NanBits) for x in v):
                        self.error("NaN bit patterns are not supported in complex values", pos)
                    out.append(complex(float(v[0]), float(v[1])))
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.append(complex(float(v), 0.0))
                else:
                    self.error("a complex tensor holds (re, im) pairs", pos)
            return np.array(out, dtype=npdt).reshape(dims)
        if any(isinstance(v, tuple) for v in vals):
            self.error(f"(re, im) pair in a {dt.short} tensor", pos)
        if dt.is_float:
            floats = [float("nan") if isinstance(v, _NanBits) else float(v) for v in vals]
            arr = np.array(floats, dtype=np.float64).astype(npdt)
            nan_bits = [(k, v.bits) for k, v in enumerate(vals) if isinstance(v, _NanBits)]
            if nan_bits:
                view = arr.view(np.dtype(f"<u{npdt.itemsize}"))
                for k, b in nan_bits:
                    view[k] = b
            return arr.reshape(dims)
        if any(isinstance(v, (float, _NanBits)) or isinstance(v, bool) for v in vals):
            self.error(f"non-integer value in a {dt.short} tensor", pos)
        try:
            if npdt.kind in "iu":
                arr = np.array(vals, dtype=npdt)
            else:  # sub-byte integers (ml_dtypes): check the range by converting back
                wide = np.array(vals, dtype=np.int64)
                arr = wide.astype(npdt)
                if not np.array_equal(arr.astype(np.int64), wide):
                    raise OverflowError
        except (OverflowError, ValueError):
            self.error(f"value out of range for {dt.short}", pos)
        return arr.reshape(dims)

    def tensor_lit(self) -> Tensor:
        self.ws()
        pos = self.i
        w = self.word()
        if w not in ("dense", "elided", "external") or not self.s.startswith("<", self.i + len(w)):
            self.error(f"expected a tensor literal (dense<...>, elided<...>, external<...>) but found {self.found()}")
        self.i += len(w) + 1
        dims_, dt = self.dims_dtype()
        dims = self.static_dims(dims_, pos)
        if w == "dense":
            self.ws()
            lpos = self.i
            self.expect("[", "before the tensor values")
            vals = self.elements()
            arr = self.to_array(vals, dt, dims, lpos)
            self.expect(">", "to close dense<")
            return ArrayTensor(arr, dt)
        if w == "external":
            path = self.string()
            fields = {}
            for _ in range(2):
                self.expect(",")
                k = self.ident()
                if k not in ("offset", "length"):
                    self.error(f"unknown external<> field '{k}' (offset, length)")
                self.expect("=")
                fields[k] = self.integer()
            self.expect(">", "to close external<")
            if self.base_dir and not os.path.isabs(path):
                path = os.path.join(self.base_dir, path)
            return ExternalTensor(path, fields["offset"], fields["length"], dt, dims)
        # elided<dims key=value, ...>: a summary only
        while not self.peek(">"):
            self.key()
            self.expect("=")
            self.scalar()
            if not self.accept(","):
                break
        self.expect(">", "to close elided<")
        if not self.allow_elided:
            self.error("tensor values are elided (text printed with an elide limit); "
                       "parse with allow_elided=True to get zero placeholders", pos)
        if dt == DType.STRING:
            arr = np.empty(dims, dtype=object)
            arr[...] = b""
        else:
            arr = np.zeros(dims, dtype=dt.numpy)
        return ArrayTensor(arr, dt)

    def sparse_lit(self) -> SparseTensor:
        pos = self.i
        self.expect_keyword("sparse")
        self.expect("<")
        dims_, dt = self.dims_dtype()
        dims = self.static_dims(dims_, pos)
        fields: Dict[str, Tensor] = {}
        for k in ("values", "indices"):
            if k == "indices":
                self.expect(",")
            self.expect_keyword(k)
            self.expect("=")
            fields[k] = self.tensor_lit()
        self.expect(">", "to close sparse<")
        if fields["values"].dtype != dt:
            self.error(f"sparse values are {fields['values'].dtype.short}, not {dt.short}", pos)
        return SparseTensor(fields["values"], fields["indices"], dims)

    def const_lit(self) -> Any:
        if self.word() == "sparse":
            return self.sparse_lit()
        return self.tensor_lit()

    # --- info trailers, opsets -------------------------------------------------------------------
    def literal(self) -> Any:
        self.ws()
        if self.accept("["):
            items = []
            if self.accept("]"):
                return items
            while True:
                items.append(self.literal())
                if self.accept("]"):
                    return items
                self.expect(",")
        if self.accept("{"):
            d: Dict[str, str] = {}
            if self.accept("}"):
                return d
            while True:
                k = self.string()
                self.expect(":")
                d[k] = self.string()
                if self.accept("}"):
                    return d
                self.expect(",")
        v = self.scalar()
        if isinstance(v, (tuple, _NanBits)):
            self.error("unexpected value")
        return v

    def info(self, allowed: Dict[str, type]) -> Dict[str, Any]:
        """An optional ``#{key=value, ...}`` trailer, keys checked against ``allowed``."""
        out: Dict[str, Any] = {}
        if not self.accept("#{"):
            return out
        if self.accept("}"):
            return out
        while True:
            pos = self.i
            k = self.key()
            if k not in allowed:
                self.error(f"unknown key '{k}' here (expected one of: {', '.join(allowed)})", pos)
            self.expect("=")
            vpos = self.i
            v = self.literal()
            want = allowed[k]
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                self.error(f"'{k}' takes a {want.__name__}", vpos)
            if want is list and not all(isinstance(x, bytes) for x in v):
                self.error(f"'{k}' takes a list of bytes literals", vpos)
            out[k] = v
            if self.accept("}"):
                return out
            self.expect(",", "or '}'")

    def opset(self) -> Dict[str, int]:
        self.expect("(")
        out: Dict[str, int] = {}
        if self.accept(")"):
            return out
        while True:
            d = self.key("a domain")
            if d == "ai.onnx":
                d = ""
            self.expect("=")
            out[d] = self.integer("an opset version")
            if self.accept(")"):
                return out
            self.expect(",")

    # --- attributes ------------------------------------------------------------------------------
    def attr_value(self) -> Tuple[Optional[AttrKind], Any]:
        """(kind inferred from the text, value); kind None for an empty list."""
        self.ws()
        c = self.s[self.i:self.i + 1]
        if c == "[":
            pos = self.i
            self.i += 1
            items = []
            if not self.accept("]"):
                while True:
                    items.append(self.attr_value())
                    if self.accept("]"):
                        break
                    self.expect(",", "or ']'")
            if not items:
                return None, []
            kinds = {k for k, _ in items}
            if kinds == {AttrKind.INT, AttrKind.FLOAT}:
                return AttrKind.FLOATS, [float(v) for _, v in items]
            if len(kinds) != 1 or None in kinds:
                self.error("a list attribute holds values of one kind", pos)
            k = kinds.pop()
            if k not in _PLURAL:
                self.error("lists of lists are not attributes", pos)
            return _PLURAL[k], [v for _, v in items]
        if c == '"' or self.s.startswith('b"', self.i):
            return AttrKind.STRING, self.str_or_bytes()
        if c == "?":
            self.i += 1
            return AttrKind.TYPE_PROTO, None
        w = self.word()
        if w in ("dense", "elided", "external"):
            return AttrKind.TENSOR, self.tensor_lit()
        if w == "sparse":
            return AttrKind.SPARSE_TENSOR, self.sparse_lit()
        if w == "graph":
            return AttrKind.GRAPH, self.graph(_Scope(self.scope))
        if self.at_type():
            return AttrKind.TYPE_PROTO, self.type()
        v = self.number()
        if isinstance(v, _NanBits):
            return AttrKind.FLOAT, struct.unpack("<d", struct.pack("<Q", v.bits))[0]
        return (AttrKind.INT if isinstance(v, int) else AttrKind.FLOAT), v

    def coerce(self, name: str, want: AttrKind, got: Optional[AttrKind], value: Any, pos: int) -> Any:
        if got == want:
            return value
        if got is None and want in _SINGLE:
            return []
        if got == AttrKind.INT and want == AttrKind.FLOAT:
            return float(value)
        if got == AttrKind.INTS and want == AttrKind.FLOATS:
            return [float(v) for v in value]
        if got == AttrKind.TYPE_PROTO and value is None and want == AttrKind.UNDEFINED:
            return None
        self.error(f"attribute '{name}' is declared {KIND_NAMES[want]} but its value is "
                   f"{KIND_NAMES[got] if got is not None else 'an empty list'}", pos)

    def attr(self) -> Attr:
        pos = self.i
        name = self.key("an attribute name")
        want: Optional[AttrKind] = None
        if self.accept(":"):
            kpos = self.i
            kname = self.ident("an attribute kind")
            if kname not in _KINDS:
                self.error(f"unknown attribute kind '{kname}' (one of: {', '.join(_KINDS)})", kpos)
            want = _KINDS[kname]
        self.expect("=", f"after attribute name '{name}'")
        vpos = self.i
        if self.accept("$"):
            self.i -= 1
            ref = self.sym("$", "an attribute reference")
            if want is None:
                self.error(f"attribute reference needs a kind: {name}:<kind> = ${ref}", pos)
            a = Attr(name, want, None, ref=ref)
        else:
            got, value = self.attr_value()
            if want is None:
                if got is None:
                    self.error(f"empty list needs a kind, e.g. {name}:ints = []", vpos)
                want = got
            a = Attr(name, want, self.coerce(name, want, got, value, vpos))
        a.doc_string = self.info({"doc": str}).get("doc", "")
        return a

    # --- values and scopes -------------------------------------------------------------------------
    def use(self, name: str, pos: int) -> Value:
        assert self.scope is not None
        v = self.scope.lookup(name)
        if v is None:
            v = Value(name)
            self.scope.pending[name] = (v, pos)
        return v

    def define(self, name: str, pos: int) -> Value:
        assert self.scope is not None
        if name in self.scope.defs:
            self.error(f"redefinition of %{name}", pos)
        v = self.scope.pending.pop(name, (None, 0))[0] or Value(name)
        self.scope.defs[name] = v
        return v

    def close_scope(self) -> None:
        scope = self.scope
        assert scope is not None
        parent = scope.parent
        for name, (v, pos) in scope.pending.items():
            if parent is None:
                self.error(f"undefined value %{name}", pos)
            if name in parent.pending:
                v.replace_all_uses_with(parent.pending[name][0], graph_outputs=True)
            else:
                parent.pending[name] = (v, pos)
        self.scope = parent

    def value_info(self, v: Value) -> None:
        inf = self.info({"doc": str, "meta": dict})
        v.doc_string = inf.get("doc", "")
        v.metadata_props = dict(inf.get("meta", {}))

    # --- graphs --------------------------------------------------------------------------------------
    def graph_sig(self, g: Graph) -> List[Tuple[str, Any, bool, int]]:
        self.expect("(")
        if not self.accept(")"):
            while True:
                pos = self.i
                v = self.define(self.sym("%", "a graph input"), pos)
                self.value_info(v)
                typed = self.accept(":")
                t = self.type() if typed else None
                v.type = t
                g.add_input(v)
                if self.accept("="):
                    v.const = self.const_lit()
                    g.add_initializer(v)
                    v.type = t if typed else _natural_type(v.const)
                if self.accept(")"):
                    break
                self.expect(",", "or ')' in the graph inputs")
        outs: List[Tuple[str, Any, bool, int]] = []
        if self.accept("->"):
            self.expect("(")
            if not self.accept(")"):
                while True:
                    pos = self.i
                    name = self.sym("%", "a graph output")
                    typed = self.accept(":")
                    outs.append((name, self.type() if typed else None, typed, pos))
                    if self.accept(")"):
                        break
                    self.expect(",", "or ')' in the graph outputs")
        return outs

    def graph(self, scope: _Scope) -> Graph:
        self.expect_keyword("graph")
        name = self.sym("@", "a graph name")
        outer = self.scope
        self.scope = scope
        g = Graph(name)
        sig_outs = self.graph_sig(g)
        inf = self.info({"doc": str, "meta": dict})
        g.doc_string = inf.get("doc", "")
        g.metadata_props = dict(inf.get("meta", {}))
        self.body(g, sig_outs)
        self.close_scope()
        self.scope = outer
        return g

    def body(self, g: Graph, sig_outs: List[Tuple[str, Any, bool, int]]) -> None:
        self.expect("{", "to open the graph body")
        ret: Optional[List[Tuple[str, int]]] = None
        while not self.accept("}"):
            if self.i >= len(self.s):
                self.error("expected '}' to close the graph body but found end of input")
            rpos = self.i
            if self.keyword("return"):
                if ret is not None:
                    self.error("a second 'return'", rpos)
                ret = []
                if not self.peek("}"):
                    while True:
                        self.ws()
                        pos = self.i
                        ret.append((self.sym("%", "a returned value"), pos))
                        if not self.accept(","):
                            break
                if not self.peek("}"):
                    self.error(f"expected '}}' after return but found {self.found()}")
                continue
            if ret is not None:
                self.error("statement after 'return'")
            self.statement(g)
        if ret is not None and sig_outs:
            if [n for n, _ in ret] != [n for n, *_ in sig_outs]:
                self.error(f"return ({', '.join('%' + n for n, _ in ret)}) does not match the signature outputs "
                           f"({', '.join('%' + n for n, *_ in sig_outs)})", ret[0][1] if ret else sig_outs[0][3])
        names = ret if ret is not None else [(n, p) for n, _, _, p in sig_outs]
        types = {n: (t, typed, p) for n, t, typed, p in sig_outs}
        for n, pos in names:
            v = self.use(n, pos)
            if n in types and types[n][1]:
                t = types[n][0]
                if v.type is None and t is not None:
                    v.type = t
                elif not type_equal(v.type, t):
                    self.error(f"output %{n} is declared {print_type(t)} but defined as {print_type(v.type)}", types[n][2])
            g.add_output(v)

    def statement(self, g: Graph) -> None:
        self.ws()
        start = self.i
        results: List[Tuple[Optional[str], int, Dict[str, Any]]] = []
        if self.peek("%") or self.word() == "_":
            while True:
                self.ws()
                pos = self.i
                if self.word() == "_":
                    self.i += 1
                    results.append((None, pos, {}))
                else:
                    name = self.sym("%", "a result")
                    results.append((name, pos, self.info({"doc": str, "meta": dict})))
                if not self.accept(","):
                    break
            self.expect("=", "after the results")
        if results and self.keyword("const"):
            if len(results) != 1 or results[0][0] is None:
                self.error("a const defines exactly one value", start)
            name, pos, inf = results[0]
            typed = self.accept(":")
            t = self.type() if typed else None
            if typed:
                self.expect("=")
            c = self.const_lit()
            v = self.define(name, pos)
            v.doc_string, v.metadata_props = inf.get("doc", ""), dict(inf.get("meta", {}))
            v.const = c
            g.add_initializer(v)
            v.type = t if typed else _natural_type(c)
            return
        domain, op, overload = self.opref()
        self.expect("(", f"after the op name {op}")
        inputs: List[Optional[Value]] = []
        if not self.accept(")"):
            while True:
                self.ws()
                pos = self.i
                if self.word() == "_":
                    self.i += 1
                    inputs.append(None)
                else:
                    inputs.append(self.use(self.sym("%", "an operand"), pos))
                if self.accept(")"):
                    break
                self.expect(",", "or ')' between operands")
        attrs: List[Attr] = []
        if self.accept("{"):
            if not self.accept("}"):
                while True:
                    a_pos = self.i
                    a = self.attr()
                    if any(x.name == a.name for x in attrs):
                        self.error(f"duplicate attribute '{a.name}'", a_pos)
                    attrs.append(a)
                    if self.accept("}"):
                        break
                    self.expect(",", "or '}' between attributes")
        types: Optional[List[Optional[Type]]] = None
        if self.accept(":"):
            self.ws()
            tpos = self.i
            types = [self.type()]
            while self.accept(","):
                types.append(self.type())
            if len(types) != len(results):
                self.error(f"{len(types)} result types for {len(results)} results", tpos)
            for (n, _, _), t in zip(results, types):
                if n is None and t is not None:
                    self.error("an omitted result ('_') has type '?'", tpos)
        loc: Optional[str] = None
        if self.keyword("loc"):
            self.expect("(")
            loc = self.string()
            self.expect(")")
        inf = self.info({"doc": str, "meta": dict})
        outputs: List[Optional[Value]] = []
        for k, (n, pos, vinf) in enumerate(results):
            if n is None:
                outputs.append(None)
                continue
            v = self.define(n, pos)
            v.doc_string, v.metadata_props = vinf.get("doc", ""), dict(vinf.get("meta", {}))
            v.type = types[k] if types is not None else None
            outputs.append(v)
        node = Node(op, inputs, outputs, domain=domain, name=loc or "", overload=overload)
        for a in attrs:
            node.set_attr(a.name, a)
        node.doc_string = inf.get("doc", "")
        node.metadata_props = dict(inf.get("meta", {}))
        g.append(node)
        if loc is not None:  # the graph names unnamed nodes and values on append; keep what the text says
            node.name = loc
        for v, (n, _, _) in zip(outputs, results):
            if v is not None:
                v.name = n

    def opref(self) -> Tuple[str, str, str]:
        self.ws()
        pos = self.i
        if self.peek('"'):
            domain = self.string()
            if not self.s.startswith(".", self.i):
                self.error("expected '.' and the op name after the domain")
            self.i += 1
            op = self.key("an op name")
        else:
            w = self.word()
            if w is None:
                self.error(f"expected a statement (a node, a const or return) but found {self.found()}")
            self.i += len(w)
            if self.s.startswith('."', self.i):
                self.i += 1
                domain, op = w, self.string()
            elif "." not in w:
                self.error(f"op '{w}' needs a domain (onnx.{w} for the default one)", pos)
            else:
                domain, op = w.rsplit(".", 1)
                if domain == "onnx":
                    domain = ""
        overload = ""
        if self.s.startswith(":", self.i):
            self.i += 1
            overload = self.key("an overload name")
        return domain, op, overload

    def function(self) -> Function:
        self.expect_keyword("func")
        self.ws()
        if not self.s.startswith("@", self.i):
            self.error("expected '@domain.Name' after func")
        self.i += 1
        domain, name, overload = self.opref()
        outer = self.scope
        self.scope = _Scope(None)
        g = Graph(name)
        sig_outs = self.graph_sig(g)
        attributes: List[str] = []
        defaults: Dict[str, Attr] = {}
        if self.keyword("attrs"):
            self.expect("[")
            if not self.accept("]"):
                while True:
                    self.ws()
                    save = self.i
                    k = self.key("an attribute name")
                    if self.peek("=") or self.peek(":"):
                        self.i = save
                        a = self.attr()
                        defaults[a.name] = a
                    else:
                        attributes.append(k)
                    if self.accept("]"):
                        break
                    self.expect(",", "or ']'")
        opsets: Dict[str, int] = {}
        if self.keyword("opset"):
            opsets = self.opset()
        inf = self.info({"doc": str, "meta": dict, "graph_name": str, "graph_doc": str, "graph_meta": dict})
        g.name = inf.get("graph_name", name)
        g.doc_string = inf.get("graph_doc", "")
        g.metadata_props = dict(inf.get("graph_meta", {}))
        self.body(g, sig_outs)
        self.close_scope()
        self.scope = outer
        f = Function(domain, name, g, overload=overload, attributes=attributes, attribute_defaults=defaults,
                     opset_imports=opsets)
        f.doc_string = inf.get("doc", "")
        f.metadata_props = dict(inf.get("meta", {}))
        return f

    # --- the model -----------------------------------------------------------------------------------
    def model(self) -> Model:
        wrapped = self.keyword("model")
        opsets: Optional[Dict[str, int]] = None
        if self.keyword("opset"):
            opsets = self.opset()
        inf = self.info({"ir_version": int, "producer_name": str, "producer_version": str, "domain": str,
                         "model_version": int, "doc": str, "meta": dict, "training_info": list})
        if wrapped:
            self.expect("{", "to open the model")
        if self.word() != "graph":
            self.error(f"expected 'graph @name(...)' but found {self.found()}")
        g = self.graph(_Scope(None))
        m = Model(g, ir_version=inf.get("ir_version", 10))
        m.opset_imports = dict(_DEFAULT_OPSET) if opsets is None else opsets
        m.producer_name = inf.get("producer_name", "")
        m.producer_version = inf.get("producer_version", "")
        m.domain = inf.get("domain", "")
        m.model_version = inf.get("model_version", 0)
        m.doc_string = inf.get("doc", "")
        m.metadata_props = dict(inf.get("meta", {}))
        m.training_info = list(inf.get("training_info", []))
        m.base_dir = self.base_dir
        while self.word() == "func":
            pos = self.i
            f = self.function()
            if f.key in m.functions:
                self.error(f"function {'.'.join(k for k in f.key if k)} is defined twice", pos)
            m.functions[f.key] = f
        if wrapped:
            self.expect("}", "to close the model")
        self.ws()
        if self.i < len(self.s):
            self.error(f"unexpected {self.found()} after the model")
        return m


def _natural_type(c: Any) -> Type:
    if isinstance(c, SparseTensor):
        return SparseTensorType(c.dtype, Shape(c.dims))
    return TensorType(c.dtype, Shape(c.dims))


def parse_model(text: str, *, allow_elided: bool = False, base_dir: Optional[str] = None) -> Model:
    """Parse textual IR into a Model.

    The ``model opset(...) #{...} { ... }`` wrapper is optional: a bare ``graph @main(...) {...}``
    (optionally preceded by ``opset(...)``, followed by ``func`` definitions) gives a model with
    opset ``ai.onnx=21`` unless told otherwise. Elided tensors raise IRParseError unless
    ``allow_elided`` is set, which makes zero-filled placeholders of the right type. Relative
    ``external<"path", ...>`` paths are resolved against ``base_dir`` when it is given.
    """
    p = _Parser(text, allow_elided, base_dir)
    try:
        return p.model()
    except RecursionError:
        raise IRParseError(f"{p.where(p.i)}: nesting too deep") from None


def parse_type(text: str) -> Optional[Type]:
    """Parse one type (``tensor<2x"N"xf32>``, ``seq<?>``, ``?`` ...)."""
    p = _Parser(text, False, None)
    t = p.type()
    p.ws()
    if p.i < len(text):
        p.error(f"unexpected {p.found()} after the type")
    return t
