"""Type legalization of the C target: narrow element types compute in float32 / int32.

The C target stores float16, bfloat16, float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0), float4e2m1
and int4/uint4/int2/uint2 tensors as bit patterns (:mod:`.narrow_types`) but has no arithmetic on
them. :func:`legalize_types` rewrites the model, before code generation, so that only these nodes
see narrow types:

* pure data movement (:data:`DATA_MOVEMENT`: the kernels copy elements of any stored type);
* Cast / CastLike (their kernel converts with the ONNX rounding and saturation).

Every other node that reads or writes a narrow type computes in the wide type (float32 for the
float types, int32 for the integer ones): each narrow input is converted (constants at compile
time, others by a Cast before the node), its narrow outputs become wide, and a Cast after the node
rounds each result back to the narrow type under the original value name (graph outputs keep
their names and types). Rounding every op result once to float16 gives the ONNX semantics of the
op on float16 for single-rounding ops (float32 has 24 >= 2*11+2 significand bits).

QuantizeLinear / DequantizeLinear that the int8 kernels do not take (narrow or 16-bit quantized
types, per-axis QuantizeLinear, blocked scales) are lowered to float ops: DequantizeLinear to
``(float(x) - float(zp)) * scale``, QuantizeLinear to ``saturate(round_half_even(x / scale) + zp)``
for integer types and ``Cast(x / scale)`` (with ``saturate``) for float8 / float4 types.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import UnsupportedModelError
from ...ir import ArrayTensor, Graph, Model, Node, TensorType, Value
from ...ir.dtypes import DType
from ...ir.shapes import infer_shapes
from .narrow_types import NARROW, NARROW_FLOATS, NARROW_INTS

__all__ = ["legalize_types", "DATA_MOVEMENT", "wide_type"]

#: Default-domain ops whose C kernels only move elements (any stored type, narrow ones as bit
#: patterns): they keep narrow types. Where selects between its data inputs; Shape and Size do not
#: read the data; Dropout is a view in inference mode.
DATA_MOVEMENT = frozenset({
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Gather",
    "GatherElements", "GatherND", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "ReverseSequence", "Where",
    "Shape", "Size", "Dropout", "Cast", "CastLike",
})

#: Attributes that may set an output element type ("value" when it is a tensor); a widened node with
#: one of them needs an entry in :data:`_TYPE_ATTRS`, otherwise it is rejected (never silently wrong code).
_TYPE_SETTING = ("dtype", "to", "output_dtype", "value")

#: Integer ranges of the quantized integer types (ONNX QuantizeLinear saturation).
_QRANGE = {DType.INT8: (-128, 127), DType.UINT8: (0, 255), DType.INT16: (-32768, 32767), DType.UINT16: (0, 65535),
           DType.INT4: (-8, 7), DType.UINT4: (0, 15), DType.INT2: (-2, 1), DType.UINT2: (0, 3)}
_FLOAT8 = frozenset({DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ})


def wide_type(d: DType) -> DType:
    """The type a narrow type computes in: float32 for floats, int32 for integers."""
    return DType.INT32 if d in NARROW_INTS else DType.FLOAT


def _dt(v: Optional[Value]) -> Optional[DType]:
    return v.type.dtype if v is not None and isinstance(v.type, TensorType) else None


def _static_dims(node: Node, v: Value) -> Tuple[int, ...]:
    dims = v.type.shape.dims if isinstance(v.type, TensorType) else None
    if dims is None or any(not isinstance(d, int) for d in dims):
        raise UnsupportedModelError(f"C target: node '{node.name}' ({node.qualified_op}): '{v.name}' needs a static "
                                    f"shape")
    return tuple(int(d) for d in dims)


def _compile_time_value(v: Value) -> Optional[np.ndarray]:
    """The value of ``v`` when it is known at compile time: a constant, or a Cast / CastLike of one
    (CastLike's second input gives only the type, so folding leaves it; the ONNX reference cast
    computes it here with the same rounding and saturation as the C helpers)."""
    if v.is_constant() and hasattr(v.const, "numpy"):
        return np.asarray(v.const.numpy())
    p = v.producer
    if p is None or p.domain != "" or p.op_type not in ("Cast", "CastLike") or _dt(v) is None:
        return None
    x = p.input(0)
    if x is None or not x.is_constant() or not hasattr(x.const, "numpy"):
        return None
    from onnx.reference.ops.op_cast import cast_to

    mode = p.attr("round_mode", "up") or "up"
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    return np.asarray(cast_to(np.asarray(x.const.numpy()), int(_dt(v)), bool(int(p.attr("saturate", 1))),  # type: ignore[arg-type]
                              mode))


class _Rewriter:
    """Inserts conversions into one graph; converted values are shared between their users."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.converted: Dict[Tuple[int, DType], Value] = {}

    def node(self, op: str, inputs: Sequence[Optional[Value]], dtype: DType, dims: Sequence[int], before: Node,
             hint: str, attrs: Optional[dict] = None) -> Value:
        """A new node ``op`` before ``before``; returns its output (of type ``dtype``, shape ``dims``)."""
        out = Value(self.g.new_name(hint), TensorType(dtype, tuple(dims)))
        n = Node(op, list(inputs), [out], attrs or {}, name=self.g.new_name(f"{before.name or op}_{op.lower()}",
                                                                                node_name=True))
        self.g.insert_before(before, n)
        return out

    def convert(self, v: Value, to: DType, before: Node) -> Value:
        """``v`` as type ``to``: a constant converted now (exactly, by ml_dtypes) or a Cast node."""
        if _dt(v) == to:
            return v
        key = (id(v), to)
        if key not in self.converted:
            arr = _compile_time_value(v)
            if arr is not None:  # kernels may need it as a constant (Pad value, Clip bounds...)
                self.converted[key] = self.g.add_constant(arr.astype(to.numpy), f"{v.name}_{to.short}")
            else:
                self.converted[key] = self.node("Cast", [v], to, _static_dims(before, v), before,
                                                f"{v.name}_{to.short}", {"to": int(to)})
        return self.converted[key]

    def constant(self, arr: np.ndarray, hint: str) -> Value:
        return self.g.add_constant(np.asarray(arr), hint)

    def take_over(self, old: Value, new: Value) -> None:
        """Every use of ``old`` (graph outputs too) reads ``new``, which takes ``old``'s name."""
        for n, i in old.uses():
            n.set_input(i, new)
        for i, o in enumerate(self.g.outputs):
            if o is old:
                self.g.set_output(i, new)
        name = old.name
        old.name = self.g.new_name(name + "_replaced")
        new.name = name


# --- widening of computing nodes ----------------------------------------------------------------------

def _widen_tensor_attr(node: Node, name: str, to: DType) -> None:
    val = node.attr(name, None)
    if val is not None and hasattr(val, "numpy"):
        node.set_attr(name, ArrayTensor(np.asarray(val.numpy()).astype(to.numpy)))


def _widen_dtype_attr(node: Node, name: str, to: DType) -> None:
    node.set_attr(name, int(to))


#: Ops whose output type comes from an attribute: how to widen it (the attribute is narrow here).
_TYPE_ATTRS: Dict[str, Callable[[Node, DType], None]] = {
    "ConstantOfShape": lambda n, to: _widen_tensor_attr(n, "value", to),
    "Constant": lambda n, to: _widen_tensor_attr(n, "value", to),
    "EyeLike": lambda n, to: _widen_dtype_attr(n, "dtype", to),
    "RandomNormal": lambda n, to: _widen_dtype_attr(n, "dtype", to),
    "RandomUniform": lambda n, to: _widen_dtype_attr(n, "dtype", to),
    "RandomNormalLike": lambda n, to: _widen_dtype_attr(n, "dtype", to),
    "RandomUniformLike": lambda n, to: _widen_dtype_attr(n, "dtype", to),
    "Bernoulli": lambda n, to: _widen_dtype_attr(n, "dtype", to),
}


def _widen(rw: _Rewriter, node: Node) -> None:
    """``node`` computes in the wide types; its narrow results are cast back after it."""
    outs = [o for o in node.outputs if o is not None and _dt(o) in NARROW]
    if node.domain == "" and node.op_type in _TYPE_ATTRS:
        if outs:
            _TYPE_ATTRS[node.op_type](node, wide_type(_dt(outs[0])))  # type: ignore[arg-type]
    elif outs and any(a in node.attrs for a in _TYPE_SETTING if a != "value" or hasattr(node.attr(a), "numpy")):
        raise UnsupportedModelError(f"C target: node '{node.name}' ({node.qualified_op}) makes "
                                    f"{_dt(outs[0]).name.lower()} '{outs[0].name}' from a type attribute "  # type: ignore[union-attr]
                                    f"(not supported for narrow types)")
    for i, v in enumerate(node.inputs):
        if v is not None and _dt(v) in NARROW:
            node.set_input(i, rw.convert(v, wide_type(_dt(v)), node))  # type: ignore[arg-type]
    for o in outs:
        nd = _dt(o)
        wide = Value(rw.g.new_name(f"{o.name}_{wide_type(nd).short}"), TensorType(wide_type(nd), o.type.shape))
        # the node writes the wide value; the old (narrow) value becomes the result of a Cast after it
        back = Node("Cast", [], [Value(o.name + "_", o.type)], {"to": int(nd)},
                    name=rw.g.new_name(f"{node.name or node.op_type}_narrow", node_name=True))
        rw.take_over(o, back.output(0))
        _swap_output(node, o, wide)
        back.append_input(wide)
        rw.g.insert_after(node, back)


def _swap_output(node: Node, old: Value, new: Value) -> None:
    """Make ``new`` the output of ``node`` in the place of ``old`` (which has no users left)."""
    i = old.index
    node._outputs[i] = new  # noqa: SLF001 - no public API replaces an output value in place
    new._producer, new._index = node, i  # noqa: SLF001
    old._producer, old._index = None, -1  # noqa: SLF001


# --- QuantizeLinear / DequantizeLinear ------------------------------------------------------------------

def _int8_kernel_takes(node: Node) -> bool:
    """True when the int8 boundary kernels (:mod:`.kernels_int8`) compile ``node`` as it is."""
    s, z = node.input(1), node.input(2)
    if int(node.attr("block_size", 0) or 0) or not all(v.is_constant() for v in (s, z) if v is not None):
        return False
    x, y = _dt(node.input(0)), _dt(node.output(0))
    if node.op_type == "DequantizeLinear":
        return y == DType.FLOAT and x in (DType.INT8, DType.UINT8, DType.INT32)
    scalar = s is not None and int(np.asarray(s.const.numpy()).size) == 1
    return x == DType.FLOAT and y in (DType.INT8, DType.UINT8) and scalar


def _qparam(rw: _Rewriter, node: Node, v: Value, xdims: Tuple[int, ...], to: DType) -> Value:
    """Scale or zero point ``v`` as ``to``, shaped to broadcast against ``x`` (per axis, per block)."""
    axis = int(node.attr("axis", 1))
    axis = axis + len(xdims) if axis < 0 else axis
    block = int(node.attr("block_size", 0) or 0)
    vdims = _static_dims(node, v)
    if int(np.prod(vdims, dtype=np.int64)) == 1:
        if v.is_constant():  # a scalar literal in the kernels
            return rw.constant(np.asarray(v.const.numpy()).astype(to.numpy).reshape(()), f"{v.name}_{to.short}")
        return rw.convert(v, to, node)  # one element broadcasts against x as it is
    if not v.is_constant():
        raise UnsupportedModelError(f"C target: node '{node.name}' ({node.qualified_op}): per-axis or blocked "
                                    f"'{v.name}' must be a constant")
    arr = np.asarray(v.const.numpy()).astype(to.numpy)
    if block:  # replicate each block's parameter over its block (the last block may be partial)
        arr = np.repeat(arr, block, axis=axis).take(range(xdims[axis]), axis=axis)
    else:
        shape = [1] * len(xdims)
        shape[axis] = arr.size
        arr = arr.reshape(shape)
    return rw.constant(arr, f"{v.name}_{to.short}")


def _lower_dequantize(rw: _Rewriter, node: Node) -> Value:
    x, s, z, y = node.input(0), node.input(1), node.input(2), node.output(0)
    xdims = _static_dims(node, x)
    f32 = DType.FLOAT
    dx = rw.convert(x, f32, node)
    if z is not None and _dt(x) not in NARROW_FLOATS:  # float8 / float4 zero points are ignored (zero)
        dx = rw.node("Sub", [dx, _qparam(rw, node, z, xdims, f32)], f32, xdims, node, f"{y.name}_centered")
    r = rw.node("Mul", [dx, _qparam(rw, node, s, xdims, f32)], f32, xdims, node, f"{y.name}_{f32.short}")
    if _dt(y) != f32:
        r = rw.node("Cast", [r], _dt(y), xdims, node, y.name + "_", {"to": int(_dt(y))})  # type: ignore[arg-type]
    return r


def _lower_quantize(rw: _Rewriter, node: Node) -> Value:
    x, s, z, y = node.input(0), node.input(1), node.input(2), node.output(0)
    xdims = _static_dims(node, x)
    f32, yd = DType.FLOAT, _dt(y)
    q = rw.node("Div", [rw.convert(x, f32, node), _qparam(rw, node, s, xdims, f32)], f32, xdims, node,
                f"{y.name}_scaled")
    if yd in _QRANGE:
        q = rw.node("Round", [q], f32, xdims, node, f"{y.name}_rounded")  # half to even
        if z is not None:
            q = rw.node("Add", [q, _qparam(rw, node, z, xdims, f32)], f32, xdims, node, f"{y.name}_shifted")
        lo, hi = _QRANGE[yd]  # type: ignore[index]
        q = rw.node("Clip", [q, rw.constant(np.float32(lo), "qmin"), rw.constant(np.float32(hi), "qmax")], f32,
                    xdims, node, f"{y.name}_clipped")
        attrs = {"to": int(yd)}  # type: ignore[arg-type]
    elif yd in _FLOAT8:  # the zero point of float8 is zero by the spec
        attrs = {"to": int(yd), "saturate": int(node.attr("saturate", 1))}  # type: ignore[arg-type]
    elif yd == DType.FLOAT4E2M1:
        if z is not None:
            q = rw.node("Add", [q, _qparam(rw, node, z, xdims, f32)], f32, xdims, node, f"{y.name}_shifted")
        attrs = {"to": int(yd)}  # type: ignore[arg-type]
    else:
        raise UnsupportedModelError(f"C target: node '{node.name}' ({node.qualified_op}): quantized type "
                                    f"{yd.name if yd else '?'} is not supported")
    return rw.node("Cast", [q], yd, xdims, node, y.name + "_", attrs)  # type: ignore[arg-type]


def _lower_qdq(rw: _Rewriter, node: Node) -> None:
    r = _lower_dequantize(rw, node) if node.op_type == "DequantizeLinear" else _lower_quantize(rw, node)
    rw.take_over(node.output(0), r)
    rw.g.remove(node)


# --- driver -------------------------------------------------------------------------------------------

def _touches_narrow(node: Node) -> bool:
    return any(_dt(v) in NARROW for v in [*node.inputs, *node.outputs] if v is not None)


def legalize_types(model: Model) -> bool:
    """Rewrite ``model`` so that narrow types only reach data movement and Cast (see the module doc).

    Returns True when the model changed. Raises :class:`UnsupportedModelError` naming node and op for
    a node it cannot widen."""
    infer_shapes(model)
    rw = _Rewriter(model.graph)
    changed = False
    for node in list(model.graph):
        if node.domain == "" and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            if not _int8_kernel_takes(node):
                _lower_qdq(rw, node)
                changed = True
            continue
        if node.domain == "" and node.op_type in DATA_MOVEMENT or not _touches_narrow(node):
            continue
        _widen(rw, node)
        changed = True
    return changed


def narrow_values(model: Model) -> List[Value]:
    """The values of narrow type a computing node still reads or writes (none after legalization)."""
    out: List[Value] = []
    for node in model.graph:
        if node.domain == "" and node.op_type in DATA_MOVEMENT:
            continue
        out += [v for v in [*node.inputs, *node.outputs] if v is not None and _dt(v) in NARROW]
    return out
