"""Symbolic shape and type inference over the IR.

``infer_shapes(model)`` walks every graph in order (subgraphs included) and sets ``Value.type`` on
node outputs from per-op rules (:func:`shape_rule`, the rules live in ``shape_rules.py``); ops
without a rule fall back to ``onnx.shape_inference`` on a one-node model. It is linear in the size
of the model and conservative: what is not known for sure stays unknown (a ``None`` dim, an unknown
rank, or no type at all).

Symbolic dims
    A ``str`` dim is a symbol; equal strings are equal sizes. Arithmetic on dims (Reshape, Flatten,
    Concat, Pad, Tile, Slice...) yields a canonical expression string only when exact: a sum of
    monomials with positive integer coefficients, written ``"C*N*4+S-1"`` (factors of a monomial
    sorted by name, the coefficient last, monomials sorted, the constant term last). A dim string is
    read back as such an expression when it matches that grammar (identifiers, ``*``, ``+``, ``-``
    before an integer); any other string is one opaque symbol. Division is exact or unknown; a
    monomial with a negative coefficient makes the result unknown.

Broadcasting of two dims ``a``, ``b``
    equal -> a; 1 with x -> x; int k (k != 1) with a symbol or unknown -> k (the only valid
    broadcast); two different symbols, or a symbol and an unknown -> None.

Shape values
    Small 1-D/0-D integer tensors computed from shapes (Shape, Gather, Slice, Concat, Unsqueeze,
    Squeeze, Cast, Add, Sub, Mul, Div, Reshape, Identity, Constant) carry their element values, dims
    included, in ``Value.meta['shape_value']`` (a tuple of int | str | None, one per element). The
    table is recomputed by every run; Reshape/Expand/ConstantOfShape/Resize/... read it.

Merging with existing types
    An existing type is kept unless ``overwrite`` or the inferred one is strictly more precise
    (known rank for unknown, a known dim for None, an int for a symbol). A static dim that differs
    from an inferred static dim (or a different dtype / rank) is a conflict: the existing type stays
    and the conflict is recorded (``conflicts`` list argument, ``model.graph.meta['shape_conflicts']``
    when graphs have ``meta``) and logged.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper

from .core import Attr, AttrKind, Graph, Model, Node, Value
from .dtypes import DType
from .tensor import ArrayTensor, Tensor, to_proto
from .types import Dim, MapType, OptionalType, SequenceType, Shape, SparseTensorType, TensorType, Type

__all__ = [
    "infer_shapes", "shape_rule", "ShapeContext", "broadcast_dim", "broadcast_shapes", "dim_add", "dim_sub",
    "dim_mul", "dim_div", "dim_prod", "dims_equal", "type_to_proto", "type_from_proto", "join_types",
]

log = logging.getLogger(__name__)

Dims = Tuple[Dim, ...]
RuleResult = Optional[Sequence[Optional[Type]]]
Rule = Callable[["ShapeContext"], RuleResult]

#: ``(domain, op_type) -> rule``.
RULES: Dict[Tuple[str, str], Rule] = {}

#: Constant inputs larger than this are never read by the rules nor handed to onnx.
MAX_CONST_ELEMS = 4096
#: Integer tensors up to this many elements carry shape values.
MAX_SHAPE_VALUE_ELEMS = 64

_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training"})


def shape_rule(*op_types: str, domain: str = "") -> Callable[[Rule], Rule]:
    """Register ``rule(ctx) -> [Type | None per output] | None`` for ops of ``domain``."""
    def deco(fn: Rule) -> Rule:
        for op in op_types:
            RULES[(domain, op)] = fn
        return fn
    return deco


# --- symbolic dim arithmetic -------------------------------------------------------------------
Poly = Dict[Tuple[str, ...], int]  # monomial (sorted symbol names, with repeats) -> coefficient

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[0-9]+")


def _parse_str(s: str) -> Tuple[Tuple[Tuple[str, ...], int], ...]:
    """A dim string as polynomial terms; a string outside the grammar is one opaque symbol."""
    atom = (((s,), 1),)
    pieces = re.split(r"([+-])", s)
    if not pieces or pieces[0] == "":
        return atom
    poly: Poly = {}
    sign = 1
    for k, piece in enumerate(pieces):
        if k % 2:
            sign = 1 if piece == "+" else -1
            continue
        coef, syms = 1, []
        for f in piece.split("*"):
            if _INT.fullmatch(f):
                coef *= int(f)
            elif _IDENT.fullmatch(f):
                syms.append(f)
            else:
                return atom
        if sign < 0 and syms:
            return atom
        key = tuple(sorted(syms))
        poly[key] = poly.get(key, 0) + sign * coef
    return tuple(poly.items())


def _poly(d: Dim) -> Optional[Poly]:
    if d is None or isinstance(d, bool):
        return None
    if isinstance(d, (int, np.integer)):
        return {(): int(d)} if d else {}
    if isinstance(d, str):
        return dict(_parse_str(d))
    return None


def _render(p: Poly) -> Dim:
    p = {k: v for k, v in p.items() if v}
    const = p.pop((), 0)
    if not p:
        return const if const >= 0 else None
    parts = []
    for key in sorted(p):
        c = p[key]
        if c < 0:
            return None
        parts.append("*".join(key) + (f"*{c}" if c != 1 else ""))
    s = "+".join(parts)
    if const > 0:
        s += f"+{const}"
    elif const < 0:
        s += f"-{-const}"
    return s


def dims_equal(a: Dim, b: Dim) -> bool:
    """True when two dims are known to be equal (None equals nothing)."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    if isinstance(a, str) or isinstance(b, str):
        pa, pb = _poly(a), _poly(b)
        return pa is not None and pa == pb
    return False


def dim_add(a: Dim, b: Dim) -> Dim:
    """a + b, exact or None."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    pa, pb = _poly(a), _poly(b)
    if pa is None or pb is None:
        return None
    for k, v in pb.items():
        pa[k] = pa.get(k, 0) + v
    return _render(pa)


def dim_sub(a: Dim, b: Dim) -> Dim:
    """a - b, exact or None (None too when the result could be negative)."""
    if isinstance(a, int) and isinstance(b, int):
        return a - b if a >= b else None
    pa, pb = _poly(a), _poly(b)
    if pa is None or pb is None:
        return None
    for k, v in pb.items():
        pa[k] = pa.get(k, 0) - v
    return _render(pa)


def dim_mul(a: Dim, b: Dim) -> Dim:
    """a * b, exact or None."""
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 0 or b == 0:
        return 0
    pa, pb = _poly(a), _poly(b)
    if pa is None or pb is None:
        return None
    out: Poly = {}
    for ka, va in pa.items():
        for kb, vb in pb.items():
            k = tuple(sorted(ka + kb))
            out[k] = out.get(k, 0) + va * vb
    return _render(out)


def dim_div(a: Dim, b: Dim) -> Dim:
    """a / b when b divides a exactly (b an int or a monomial), else None."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b if b and a % b == 0 else None
    pa, pb = _poly(a), _poly(b)
    if pa is None or pb is None or len(pb) != 1:
        return None
    (kb, vb), = pb.items()
    if vb == 0:
        return None
    out: Poly = {}
    for ka, va in pa.items():
        if va % vb:
            return None
        rest = list(ka)
        for s in kb:
            if s not in rest:
                return None
            rest.remove(s)
        out[tuple(rest)] = out.get(tuple(rest), 0) + va // vb
    return _render(out)


def dim_prod(dims: Iterable[Dim]) -> Dim:
    """The exact product of dims, or None."""
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
        if out is None:
            return None
    return out


def broadcast_dim(a: Dim, b: Dim) -> Dim:
    """Numpy broadcasting of two dims (see the module doc)."""
    if a is not None and dims_equal(a, b):
        return a
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, int) and isinstance(b, int):
        return None  # invalid broadcast: do not guess
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return None


def broadcast_shapes(*shapes: Optional[Dims]) -> Optional[Dims]:
    """Multidirectional broadcasting; None when any rank is unknown."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)  # type: ignore[arg-type]
    out: List[Dim] = []
    for i in range(rank):
        d: Any = _ABSENT
        for s in shapes:
            j = i - (rank - len(s))  # type: ignore[arg-type]
            if j < 0:
                continue
            d = s[j] if d is _ABSENT else broadcast_dim(d, s[j])  # type: ignore[index]
        out.append(None if d is _ABSENT else d)
    return tuple(out)


_ABSENT = object()


def unify_dim(a: Dim, b: Dim) -> Dim:
    """Two dims known to be equal at run time: the more precise one."""
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return a if a is not None else b


def join_types(a: Optional[Type], b: Optional[Type]) -> Optional[Type]:
    """The most precise type that holds for a value that has type ``a`` or type ``b``."""
    if a is None or b is None:
        return None
    if isinstance(a, TensorType) and isinstance(b, TensorType):
        if a.dtype != b.dtype:
            return None
        if a.shape.dims is None or b.shape.dims is None or len(a.shape.dims) != len(b.shape.dims):
            return TensorType(a.dtype, Shape(None), a.quant if a.quant == b.quant else None)
        dims = tuple(x if dims_equal(x, y) else None for x, y in zip(a.shape.dims, b.shape.dims))
        return TensorType(a.dtype, Shape(dims), a.quant if a.quant == b.quant else None)
    return a if a == b else None


# --- IR <-> onnx TypeProto ---------------------------------------------------------------------
def type_to_proto(t: Optional[Type]) -> onnx.TypeProto:
    """An onnx ``TypeProto`` for an IR type (symbolic dims become ``dim_param``)."""
    if t is None:
        return onnx.TypeProto()
    if isinstance(t, (TensorType, SparseTensorType)):
        dims = None if t.shape.dims is None else [d for d in t.shape.dims]
        if isinstance(t, TensorType):
            return helper.make_tensor_type_proto(int(t.dtype), dims)
        return helper.make_sparse_tensor_type_proto(int(t.dtype), dims)
    if isinstance(t, SequenceType):
        return helper.make_sequence_type_proto(type_to_proto(t.elem))
    if isinstance(t, OptionalType):
        return helper.make_optional_type_proto(type_to_proto(t.elem))
    if isinstance(t, MapType):
        return helper.make_map_type_proto(int(t.key), type_to_proto(t.value))
    raise TypeError(f"no onnx type for {t!r}")


def type_from_proto(tp: onnx.TypeProto, symbols: Optional[set] = None) -> Optional[Type]:
    """An IR type from an onnx ``TypeProto``; ``dim_param`` names outside ``symbols`` become None."""
    which = tp.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        tt = getattr(tp, which)
        if not tt.elem_type:
            return None
        dims: Optional[Tuple[Dim, ...]] = None
        if tt.HasField("shape"):
            ds: List[Dim] = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    ds.append(int(d.dim_value))
                elif d.HasField("dim_param") and (symbols is None or d.dim_param in symbols):
                    ds.append(d.dim_param)
                else:
                    ds.append(None)
            dims = tuple(ds)
        cls = TensorType if which == "tensor_type" else SparseTensorType
        return cls(DType(tt.elem_type), Shape(dims))
    if which == "sequence_type":
        return SequenceType(type_from_proto(tp.sequence_type.elem_type, symbols) if tp.sequence_type.HasField("elem_type") else None)
    if which == "optional_type":
        return OptionalType(type_from_proto(tp.optional_type.elem_type, symbols) if tp.optional_type.HasField("elem_type") else None)
    if which == "map_type":
        return MapType(DType(tp.map_type.key_type), type_from_proto(tp.map_type.value_type, symbols))
    return None


# --- constants and shape values -----------------------------------------------------------------
def constant_array(v: Optional[Value], max_elems: int = MAX_CONST_ELEMS) -> Optional[np.ndarray]:
    """The value of a constant (initializer that is not a graph input, or Constant output)."""
    if v is None:
        return None
    t: Any = None
    if v.is_constant():
        t = v.const
    else:
        p = v.producer
        if p is not None and p.op_type == "Constant" and p.domain == "" and not p.subgraphs():
            t = _constant_attr_value(p)
    if isinstance(t, Tensor):
        if t.numel > max_elems:
            return None
        return t.numpy()
    if isinstance(t, np.ndarray):
        return t if t.size <= max_elems else None
    return None


def _constant_attr_value(node: Node) -> Any:
    for name, a in node.attrs.items():
        if a.ref is not None:
            return None
        val = a.value
        if name == "value":
            return val if isinstance(val, Tensor) else None
        if name == "value_float":
            return np.array(val, dtype=np.float32)
        if name == "value_floats":
            return np.array(val, dtype=np.float32).reshape(-1)
        if name == "value_int":
            return np.array(val, dtype=np.int64)
        if name == "value_ints":
            return np.array(val, dtype=np.int64).reshape(-1)
    return None


def shape_value(v: Optional[Value]) -> Optional[Dims]:
    """The element values of a small integer tensor (from the table, or from a constant)."""
    if v is None:
        return None
    sv = v.meta.get("shape_value")
    if sv is not None:
        return sv
    arr = constant_array(v, MAX_SHAPE_VALUE_ELEMS)
    if arr is None or arr.ndim > 1 or arr.dtype.kind not in "iub":
        return None
    return tuple(int(x) for x in arr.reshape(-1))


# --- the rule context ---------------------------------------------------------------------------
class ShapeContext:
    """What a rule sees of its node: input types, constant inputs, shape values, opset."""

    __slots__ = ("node", "opsets", "_state", "_svs")

    def __init__(self, node: Node, opsets: Dict[str, int], state: Optional["_State"] = None) -> None:
        self.node = node
        self.opsets = opsets
        self._state = state
        self._svs: Dict[int, Dims] = {}

    @property
    def opset(self) -> int:
        """The imported version of the node's domain (the newest known when not imported)."""
        v = self.opsets.get(self.node.domain) or self.opsets.get("ai.onnx" if self.node.domain == "" else self.node.domain)
        return int(v) if v else onnx.defs.onnx_opset_version()

    @property
    def num_inputs(self) -> int:
        return len(self.node.inputs)

    def input(self, i: int) -> Optional[Value]:
        return self.node.input(i)

    def has_input(self, i: int) -> bool:
        return self.node.input(i) is not None

    def type(self, i: int) -> Optional[Type]:
        v = self.node.input(i)
        return None if v is None else v.type

    def tensor_type(self, i: int) -> Optional[TensorType]:
        t = self.type(i)
        return t if isinstance(t, TensorType) else None

    def dtype(self, i: int) -> Optional[DType]:
        t = self.tensor_type(i)
        return None if t is None or t.dtype == DType.UNDEFINED else t.dtype

    def dims(self, i: int) -> Optional[Dims]:
        """Input dims, or None when the input is absent, untyped or of unknown rank."""
        t = self.tensor_type(i)
        return None if t is None else t.shape.dims

    def rank(self, i: int) -> Optional[int]:
        d = self.dims(i)
        return None if d is None else len(d)

    def const(self, i: int, max_elems: int = MAX_CONST_ELEMS) -> Optional[np.ndarray]:
        return constant_array(self.node.input(i), max_elems)

    def shape_value(self, i: int) -> Optional[Dims]:
        return shape_value(self.node.input(i))

    def ints(self, i: int) -> Optional[List[int]]:
        """A constant (or fully known shape value) integer input as a flat list."""
        sv = self.shape_value(i)
        if sv is not None and all(isinstance(x, int) for x in sv):
            return list(sv)  # type: ignore[arg-type]
        arr = self.const(i)
        if arr is not None and arr.dtype.kind in "iu":
            return [int(x) for x in arr.reshape(-1)]
        return None

    def floats(self, i: int) -> Optional[List[float]]:
        arr = self.const(i)
        if arr is None or arr.dtype.kind not in "fiu":
            return None
        return [float(x) for x in arr.reshape(-1)]

    def attr(self, name: str, default: Any = None) -> Any:
        a = self.node.attrs.get(name)
        if a is None or a.ref is not None:
            return default
        v = a.value
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        return v

    def has_attr(self, name: str) -> bool:
        a = self.node.attrs.get(name)
        return a is not None and a.ref is None

    def set_shape_value(self, out: int, values: Optional[Sequence[Dim]]) -> None:
        """Record the element values of output ``out`` (ignored when None or too long)."""
        if values is not None and len(values) <= MAX_SHAPE_VALUE_ELEMS:
            self._svs[out] = tuple(values)

    def warn(self, msg: str) -> None:
        if self._state is not None:
            self._state.conflicts.append(f"{self.node.name or self.node.op_type}: {msg}")


# --- the driver ----------------------------------------------------------------------------------
def infer_shapes(model: Model, *, overwrite: bool = False, conflicts: Optional[List[str]] = None) -> int:
    """Infer the types of node outputs in every graph of ``model``; return how many changed.

    ``conflicts`` (if given) receives one message per disagreement between an existing type and
    an inferred one; they are also logged and kept in ``model.graph.meta['shape_conflicts']``.
    """
    before: Dict[int, Tuple[Value, Optional[Type]]] = {}
    for g in model.all_graphs():
        for v in g.values():
            before[id(v)] = (v, v.type)
    state = _State(overwrite)
    state.run_graph(model.graph, model.opset_imports)
    for f in model.functions.values():
        state.run_graph(f.graph, {**model.opset_imports, **f.opset_imports})
    changed = sum(1 for v, t in before.values() if v.type != t)
    state.conflicts = list(dict.fromkeys(state.conflicts))
    meta = getattr(model.graph, "meta", None)
    if isinstance(meta, dict):
        meta["shape_conflicts"] = list(state.conflicts)
    for msg in state.conflicts:
        log.warning("shape inference: %s", msg)
    if conflicts is not None:
        conflicts.extend(state.conflicts)
    return changed


class _State:
    """One inference run."""

    def __init__(self, overwrite: bool) -> None:
        self.overwrite = overwrite
        self.conflicts: List[str] = []

    def run_graph(self, graph: Graph, opsets: Dict[str, int]) -> None:
        for v in graph.initializers.values():
            if v.type is None and isinstance(v.const, Tensor):
                v.type = TensorType(v.const.dtype, Shape(v.const.dims))
        for node in graph:
            self.run_node(node, opsets)

    def run_node(self, node: Node, opsets: Dict[str, int]) -> None:
        ctx = ShapeContext(node, opsets, self)
        for v in node.outputs:
            if v is not None:
                v.meta.pop("shape_value", None)
        outs: RuleResult = None
        subgraphs = node.subgraphs()
        try:
            if subgraphs:
                outs = self.control_flow(node, ctx, opsets)
            else:
                rule = RULES.get((node.domain, node.op_type))
                if rule is not None:
                    try:
                        outs = rule(ctx)
                    except Exception as e:  # a rule must never break a pass: fall back
                        log.debug("shape rule for %s failed: %s", node, e)
                        outs = onnx_infer_node(ctx)
                elif node.domain in _ONNX_DOMAINS:
                    outs = onnx_infer_node(ctx)
        except Exception as e:
            log.debug("shape inference for %s failed: %s", node, e)
            outs = None
        for i, v in enumerate(node.outputs):
            if v is None:
                continue
            t = outs[i] if outs is not None and i < len(outs) else None
            self.assign(v, t, node)
            sv = ctx._svs.get(i)
            if sv is not None and isinstance(v.type, TensorType) and (v.type.dtype.is_integer or v.type.dtype == DType.BOOL):
                v.meta["shape_value"] = sv

    def assign(self, v: Value, t: Optional[Type], node: Optional[Node] = None) -> None:
        new = self.merge(v.type, t, f"{v.name}" + (f" ({node.op_type})" if node is not None else ""))
        if new is not v.type and new != v.type:
            v.type = new

    def merge(self, old: Optional[Type], new: Optional[Type], where: str) -> Optional[Type]:
        if new is None:
            return old
        if old is None or self.overwrite:
            return new
        if not (isinstance(old, TensorType) and isinstance(new, TensorType)):
            return old
        dtype = old.dtype
        if dtype == DType.UNDEFINED:
            dtype = new.dtype
        elif new.dtype != DType.UNDEFINED and new.dtype != old.dtype:
            self.conflicts.append(f"{where}: dtype {old.dtype.name} kept, inferred {new.dtype.name}")
            return old
        od, nd = old.shape.dims, new.shape.dims
        if od is None:
            dims = nd
        elif nd is None:
            dims = od
        elif len(od) != len(nd):
            self.conflicts.append(f"{where}: rank {len(od)} kept, inferred {len(nd)}")
            return old
        else:
            out: List[Dim] = []
            for a, b in zip(od, nd):
                if isinstance(a, int):
                    if isinstance(b, int) and a != b:
                        self.conflicts.append(f"{where}: dims {od} kept, inferred {nd}")
                        return old
                    out.append(a)
                elif isinstance(b, int) or a is None:
                    out.append(b)
                else:
                    out.append(a)
            dims = tuple(out)
        return TensorType(dtype, Shape(dims), old.quant if old.quant is not None else new.quant)

    # --- control flow --------------------------------------------------------------------------
    def control_flow(self, node: Node, ctx: ShapeContext, opsets: Dict[str, int]) -> RuleResult:
        if node.domain == "" and node.op_type == "If":
            a, b = node.attr("then_branch"), node.attr("else_branch")
            self.run_graph(a, opsets)
            self.run_graph(b, opsets)
            return [join_types(x.type, y.type) for x, y in zip(a.outputs, b.outputs)]
        if node.domain == "" and node.op_type == "Loop":
            return self.loop(node, ctx, opsets)
        if node.domain == "" and node.op_type == "Scan" and ctx.opset >= 9:
            return self.scan(node, ctx, opsets)
        for g in node.subgraphs():
            self.run_graph(g, opsets)
        return None

    def run_body(self, body: Graph, fixed: List[Optional[Type]], carried: List[Optional[Type]],
                 carried_first: bool, first_carried_out: int, opsets: Dict[str, int]) -> None:
        """Run a loop body until the types of its carried inputs settle (at most 4 runs).

        Carried inputs start as the parent's initial types and are widened (``join_types``) with the
        body's carried outputs; the body's own types are restored before each new run.
        """
        snapshot = [(v, v.type) for g in body.all_graphs() for v in g.values()]
        n_conflicts = len(self.conflicts)
        derived = list(carried)
        for attempt in range(4):
            if attempt:
                for v, t in snapshot:
                    v.type = t
                del self.conflicts[n_conflicts:]  # only the final run's conflicts are real
            if attempt == 3:  # did not settle: keep the element types only
                derived = [TensorType(t.dtype) if isinstance(t, TensorType) else None for t in derived]
            types = derived + fixed if carried_first else fixed + derived
            for v, t in zip(body.inputs, types):
                self.assign(v, t)
            self.run_graph(body, opsets)
            if attempt == 3:
                return
            outs = [body.outputs[first_carried_out + k].type if first_carried_out + k < len(body.outputs) else None
                    for k in range(len(derived))]
            nxt = [join_types(d, o) for d, o in zip(derived, outs)]
            if nxt == derived:
                return
            derived = nxt

    def loop(self, node: Node, ctx: ShapeContext, opsets: Dict[str, int]) -> RuleResult:
        body: Graph = node.attr("body")
        n_carried = max(len(node.inputs) - 2, 0)
        init = [ctx.type(2 + k) for k in range(n_carried)]
        fixed: List[Optional[Type]] = [TensorType(DType.INT64, Shape(())), TensorType(DType.BOOL, Shape(()))]
        self.run_body(body, fixed, init, False, 1, opsets)
        outs: List[Optional[Type]] = []
        for k in range(n_carried):
            o = body.outputs[1 + k].type if 1 + k < len(body.outputs) else None
            outs.append(join_types(init[k], o))
        for o in body.outputs[1 + n_carried:]:
            t = o.type
            outs.append(TensorType(t.dtype, Shape(None if t.shape.dims is None else (None,) + t.shape.dims))
                        if isinstance(t, TensorType) else None)
        return outs

    def scan(self, node: Node, ctx: ShapeContext, opsets: Dict[str, int]) -> RuleResult:
        body: Graph = node.attr("body")
        m = int(ctx.attr("num_scan_inputs", 0))
        n = len(node.inputs) - m
        in_axes = list(ctx.attr("scan_input_axes", None) or [0] * m)
        seq_len: Dim = None
        slices: List[Optional[Type]] = []
        for j in range(m):
            t = ctx.tensor_type(n + j)
            if t is None or t.shape.dims is None:
                slices.append(TensorType(t.dtype) if t is not None else None)
                continue
            dims = t.shape.dims
            ax = in_axes[j] + len(dims) if in_axes[j] < 0 else in_axes[j]
            seq_len = dims[ax] if j == 0 else unify_dim(seq_len, dims[ax])
            slices.append(TensorType(t.dtype, Shape(dims[:ax] + dims[ax + 1:])))
        init = [ctx.type(k) for k in range(n)]
        if len(body.inputs) != n + m:
            for g in node.subgraphs():
                self.run_graph(g, opsets)
            return None
        self.run_body(body, slices, init, True, 0, opsets)
        outs: List[Optional[Type]] = []
        for k in range(n):
            outs.append(join_types(init[k], body.outputs[k].type if k < len(body.outputs) else None))
        k_out = len(body.outputs) - n
        out_axes = list(ctx.attr("scan_output_axes", None) or [0] * k_out)
        for j in range(k_out):
            t = body.outputs[n + j].type
            if not isinstance(t, TensorType):
                outs.append(None)
                continue
            if t.shape.dims is None:
                outs.append(TensorType(t.dtype))
                continue
            r = len(t.shape.dims) + 1
            ax = out_axes[j] + r if out_axes[j] < 0 else out_axes[j]
            d = list(t.shape.dims)
            d.insert(ax, seq_len)
            outs.append(TensorType(t.dtype, Shape(tuple(d))))
        return outs


# --- fallback: onnx's own inference on a one-node model ------------------------------------------
_KIND_TYPES = {
    AttrKind.FLOAT: onnx.AttributeProto.FLOAT, AttrKind.INT: onnx.AttributeProto.INT,
    AttrKind.STRING: onnx.AttributeProto.STRING, AttrKind.TENSOR: onnx.AttributeProto.TENSOR,
    AttrKind.FLOATS: onnx.AttributeProto.FLOATS, AttrKind.INTS: onnx.AttributeProto.INTS,
    AttrKind.STRINGS: onnx.AttributeProto.STRINGS, AttrKind.TENSORS: onnx.AttributeProto.TENSORS,
}


def _attr_proto(a: Attr) -> Optional[onnx.AttributeProto]:
    if a.ref is not None or a.kind not in _KIND_TYPES:
        return None
    v = a.value
    if a.kind == AttrKind.TENSOR:
        v = to_proto(v if isinstance(v, Tensor) else ArrayTensor(np.asarray(v)), "")
    elif a.kind == AttrKind.TENSORS:
        v = [to_proto(t, "") for t in v]
    return helper.make_attribute(a.name, v, attr_type=_KIND_TYPES[a.kind])


def onnx_infer_node(ctx: ShapeContext) -> RuleResult:
    """Output types of one node from ``onnx.shape_inference`` (None when it cannot tell)."""
    node = ctx.node
    if node.subgraphs() or node.domain not in _ONNX_DOMAINS:
        return None
    symbols: set = set()
    inputs, inits, names = [], [], []
    for i, v in enumerate(node.inputs):
        if v is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        if isinstance(v.type, TensorType):
            symbols.update(v.type.shape.symbols)
        arr = ctx.const(i)
        if arr is not None and isinstance(v.type, TensorType):
            inits.append(to_proto(ArrayTensor(arr, v.type.dtype), name))
        else:
            inputs.append(onnx.helper.make_value_info(name, type_to_proto(v.type)))
    attrs = []
    for a in node.attrs.values():
        ap = _attr_proto(a)
        if ap is None:
            return None
        attrs.append(ap)
    outs = [f"out{i}" if v is not None else "" for i, v in enumerate(node.outputs)]
    np_ = helper.make_node(node.op_type, names, outs, domain=node.domain)
    np_.attribute.extend(attrs)
    graph = helper.make_graph([np_], "g", inputs, [], initializer=inits)
    opsets = [helper.make_opsetid("" if d == "ai.onnx" else d, int(ver)) for d, ver in ctx.opsets.items()]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=onnx.IR_VERSION)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as e:
        log.debug("onnx shape inference failed for %s: %s", node, e)
        return None
    found = {vi.name: vi.type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    return [type_from_proto(found[o], symbols) if o and o in found else None for o in outs]


from . import shape_rules  # noqa: E402,F401  (registers the rules)
