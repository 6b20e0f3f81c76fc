"""IR helpers that insert QuantizeLinear / DequantizeLinear with quantized types.

The output of every QuantizeLinear and every quantized initializer is an integer value whose
``TensorType.quant`` holds its :class:`~edgec.ir.QuantParams`; the scale and zero point are also
the (constant) inputs of the Q/DQ nodes, as ONNX wants.

Opset requirements (default domain): QuantizeLinear/DequantizeLinear 10; per-axis parameters 13;
int4/uint4 and ``block_size`` 21 (int16 also 21). :func:`require_opset` raises a clear error when
the model is older: raising a model's opset is not done here (ops may change meaning between
opsets); convert the model first (``onnx.version_converter``).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..backends.onnx_export import ANONYMOUS
from ..errors import EdgecError
from ..ir import Graph, Model, Node, Value
from ..ir.dtypes import DType
from ..ir.tensor import ArrayTensor
from ..ir.types import QuantParams, Shape, TensorType
from .scheme import DTypeLike, as_dtype, quantize_array

__all__ = ["MIN_OPSET", "required_opset", "require_opset", "insert_qdq", "quantized_weight", "quantized_constant",
           "dequantize_node", "quantize_node", "gather_table", "quantized_gather", "adopt_source_names",
           "SOURCE_NAME", "INTEGER_MOVERS", "movers_on_integers", "product_scale", "short_name",
           "short_constant"]

#: Opset needed by feature: Q/DQ themselves, per-axis parameters, blocked parameters / int4 / int16.
MIN_OPSET = {"qdq": 10, "per_axis": 13, "blocked": 21, "int4": 21, "int16": 21}


def required_opset(dtype: DTypeLike, axis: Optional[int] = None, block_size: int = 0) -> int:
    """The lowest default-domain opset whose Q/DQ accept this element type and parameter layout."""
    d = as_dtype(dtype)
    need = MIN_OPSET["qdq"]
    if axis is not None:
        need = max(need, MIN_OPSET["per_axis"])
    if block_size > 0:
        need = max(need, MIN_OPSET["blocked"])
    if d in (DType.INT4, DType.UINT4, DType.INT16, DType.UINT16):
        need = max(need, MIN_OPSET["int4"])
    return need


def require_opset(model: Model, need: int, what: str) -> None:
    """Raise a one-line :class:`EdgecError` when the model's default opset is below ``need``."""
    have = model.opset("") or 0
    if have < need:
        raise EdgecError(f"{what} needs ONNX opset >= {need}, the model has opset {have}; convert it first "
                         f"(onnx.version_converter.convert_version(model, {need})) or choose another option")


def _anchor_after(graph: Graph, value: Value) -> Tuple[Optional[Node], bool]:
    """Where nodes computing from ``value`` go: (node, after?) — after its producer, else at the head."""
    p = value.producer
    if p is not None and p.graph is graph:
        return p, True
    first = next(iter(graph), None)
    return first, False


def _place(graph: Graph, node: Node, anchor: Optional[Node], after: bool) -> None:
    if anchor is None:
        graph.append(node)
    elif after:
        graph.insert_after(anchor, node)
    else:
        graph.insert_before(anchor, node)


_SHARED = "edgec.qdq_scalars"
#: ``Value.meta`` key of a quantized initializer: the name of the float tensor it replaces.
SOURCE_NAME = "edgec.quant_source"

# Names of what this module adds are short on purpose: in a small model they are a good part of
# the file (a 36 KB int8 CNN held ~4 KB of "<tensor>_QuantizeLinear" style names). Q/DQ nodes and
# their outputs are numbered per kind in base 36 ("Q3", "dq7", "dqa"), scales and zero points are
# "s*" / "z*" (:func:`short_name`); quantized initializers take the name of the float tensor they
# replace once it is gone (:func:`adopt_source_names`).
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def short_name(graph: Graph, hint: str, *, node_name: bool = False) -> str:
    """The shortest free name ``hint`` + a base-36 number (``dq``, ``dq1``, ... ``dqz``, ``dq10``):
    one counter per hint, unlike :meth:`Graph.new_name`'s ``hint_N`` with one counter for all."""
    counters = graph.root.meta.setdefault("edgec.short_names", {})
    k = counters.get(hint, 0)
    while True:
        n, digits = k, ""
        while n:
            n, r = divmod(n, 36)
            digits = _DIGITS[r] + digits
        k += 1
        want = hint + digits
        got = graph.new_name(want, node_name=node_name)
        if got == want:  # else ``want`` was taken; the name new_name reserved instead stays unused
            counters[hint] = k
            return got


def short_constant(graph: Graph, tensor: ArrayTensor, hint: str) -> Value:
    """A new initializer named by :func:`short_name`."""
    return graph.add_initializer(Value(short_name(graph, hint), TensorType(tensor.dtype, Shape(tensor.dims)), tensor))


def _scalar(graph: Graph, array: np.ndarray, dtype: DType, name: str) -> Value:
    """An initializer for ``array``; scalars are shared with an equal one made here before (same
    type and value: ORT matches Q/DQ parameters by value), which saves a few hundred bytes on small
    models. Arrays (per-channel parameters) are never shared."""
    tensor = ArrayTensor(np.asarray(array).astype(dtype.numpy), dtype)
    if np.ndim(array) != 0:
        return short_constant(graph, tensor, name)
    cache = graph.meta.setdefault(_SHARED, {})
    key = (int(dtype), np.asarray(array).astype(dtype.numpy).tobytes())
    v = cache.get(key)
    if v is not None and graph.initializers.get(v.name) is v and v.const is not None \
            and v.const.numpy().tobytes() == key[1]:
        return v
    v = short_constant(graph, tensor, name)
    cache[key] = v
    return v


def _params(graph: Graph, scale: np.ndarray, zp: Optional[np.ndarray], dtype: DType) -> List[Value]:
    s = _scalar(graph, np.asarray(scale, np.float32), DType.FLOAT, "s")
    if zp is None:
        return [s]
    return [s, _scalar(graph, np.asarray(zp), dtype, "z")]


def _qattrs(axis: Optional[int], block_size: int, scale: np.ndarray) -> dict:
    attrs = {}
    if axis is not None and np.asarray(scale).ndim > 0:
        attrs["axis"] = int(axis)
    if block_size > 0:
        attrs["block_size"] = int(block_size)
    return attrs


def quantize_node(graph: Graph, x: Value, scale: np.ndarray, zp: np.ndarray, dtype: DTypeLike,
                  axis: Optional[int] = None, *, name: str = "") -> Node:
    """A QuantizeLinear node (not yet placed) with a quantized output type."""
    d = as_dtype(dtype)
    node = Node("QuantizeLinear", [x] + _params(graph, scale, zp, d), 1, _qattrs(axis, 0, scale),
                name=short_name(graph, "Q", node_name=True))
    shape = x.shape if x.shape is not None else Shape(None)
    node.outputs[0].name = short_name(graph, "q")
    node.meta[ANONYMOUS] = True
    node.outputs[0].type = TensorType(d, shape, QuantParams(scale, np.asarray(zp).astype(d.numpy),
                                                            axis if np.ndim(scale) > 0 else None))
    return node


def dequantize_node(graph: Graph, q: Value, *, name: str = "", dtype: DType = DType.FLOAT,
                    params: Optional[Sequence[Value]] = None, zero_point: Optional[bool] = None) -> Node:
    """A DequantizeLinear node (not yet placed) reading the parameters of ``q``'s quantized type
    (new scale / zero-point initializers, or the given ``params`` values). ``zero_point``: whether
    the new parameters include the zero point; default: all but int32 (biases). Leaving out an
    all-zero zero point is exact (0 is the default) but not every onnxruntime fusion accepts it:
    its Q/DQ pairs match by (scale, zero point) inputs and QGemm wants the weight's.
    ``name`` is accepted for compatibility; generated names are short (see the module notes)."""
    t = q.type
    if not isinstance(t, TensorType) or t.quant is None:
        raise EdgecError(f"value '{q.name}' has no quantization parameters")
    qp = t.quant
    if zero_point is None:
        zero_point = t.dtype != DType.INT32
    if params is None:
        params = _params(graph, qp.scale, qp.zero_point if zero_point else None, t.dtype)
    ins = [q] + list(params)
    node = Node("DequantizeLinear", ins, 1, _qattrs(qp.axis, qp.block_size, qp.scale),
                name=short_name(graph, "DQ", node_name=True))
    node.outputs[0].name = short_name(graph, "dq")
    node.meta[ANONYMOUS] = True
    node.outputs[0].type = TensorType(dtype, t.shape)
    return node


def insert_qdq(graph: Graph, value: Value, scale: np.ndarray, zp: np.ndarray, dtype: DTypeLike,
               axis: Optional[int] = None, *, uses: Optional[Sequence[Tuple[Node, int]]] = None,
               graph_outputs: bool = True, dq_per_consumer: bool = True) -> Value:
    """Insert ``QuantizeLinear -> DequantizeLinear`` after ``value`` and rewire its uses (all, or
    ``uses``) to DequantizeLinear outputs; returns the first one. ``dq_per_consumer`` gives every
    consuming node its own DequantizeLinear (onnxruntime fuses a node with its DQ inputs only when
    they are not shared). With ``graph_outputs`` a graph output ``value`` becomes a DequantizeLinear
    output under the same public name."""
    targets = list(value.uses()) if uses is None else list(uses)
    anchor, after = _anchor_after(graph, value)
    q = quantize_node(graph, value, scale, zp, dtype, axis)
    if after:
        graph.insert_after(anchor, q)
    else:
        _place(graph, q, anchor, False)
    vtype = value.type if isinstance(value.type, TensorType) else None
    dqs: List[Value] = []

    def new_dq() -> Value:
        dq = dequantize_node(graph, q.outputs[0], name=value.name, params=q.inputs[1:])
        if vtype is not None:
            dq.outputs[0].type = vtype
        graph.insert_after(q, dq)
        dqs.append(dq.outputs[0])
        return dq.outputs[0]

    by_node: dict = {}
    for node, i in targets:
        if node is q:
            continue
        if not dqs or (dq_per_consumer and id(node) not in by_node):
            by_node[id(node)] = new_dq() if (dq_per_consumer or not dqs) else dqs[0]
        node.set_input(i, by_node.get(id(node), dqs[0]))
    if graph_outputs and uses is None:
        for i, o in enumerate(graph.outputs):
            if o is value:
                out = new_dq()
                public = value.name
                value.name = graph.new_name(public + "_float")
                graph.set_output(i, out)
                out.name = public
    return dqs[0] if dqs else new_dq()


def quantized_constant(graph: Graph, array: np.ndarray, scale: np.ndarray, zp: np.ndarray, dtype: DTypeLike,
                       axis: Optional[int] = None, block_size: int = 0, *, name: str = "w") -> Value:
    """An integer initializer holding ``array`` quantized, typed with its QuantParams."""
    d = as_dtype(dtype)
    arr = np.asarray(array)
    if d == DType.INT32:
        q = arr.astype(np.int32)
    else:
        q = quantize_array(arr, scale, zp, d, axis, block_size)
    qp = QuantParams(scale, np.asarray(zp).astype(d.numpy), axis if np.ndim(scale) > 0 else None, block_size)
    v = graph.add_constant(ArrayTensor(q, d), name + "_q")
    v.type = TensorType(d, Shape(q.shape), qp)
    v.meta[SOURCE_NAME] = name
    return v


def adopt_source_names(graph: Graph) -> int:
    """Rename quantized initializers made by :func:`quantized_constant` to the name of the float
    tensor they replaced, where that name is free again (the float tensor was removed); returns
    how many. Call it after sweeping the replaced constants."""
    taken = {v.name for v in graph.values()}
    for n in graph:
        taken.update(v.name for v in n.outputs if v is not None)
    done = 0
    for v in list(graph.initializers.values()):
        src = v.meta.pop(SOURCE_NAME, None)
        if not src or src == v.name or src in taken or v.is_graph_input() or v.is_graph_output():
            continue
        graph.remove_initializer(v)
        taken.discard(v.name)
        v.name = src
        graph.add_initializer(v)
        taken.add(src)
        done += 1
    return done


def quantized_weight(graph: Graph, value: Value, scale: np.ndarray, zp: np.ndarray, dtype: DTypeLike = DType.INT8,
                     axis: Optional[int] = None, block_size: int = 0, *, before: Optional[Node] = None,
                     array: Optional[np.ndarray] = None, zero_point: Optional[bool] = None) -> Value:
    """Quantize the constant ``value`` (or ``array``) into an integer initializer and return the
    float output of a DequantizeLinear of it, placed before ``before`` (default: the graph's head).
    The original value is left alone (the caller rewires its users). ``zero_point=False`` leaves
    out the zero-point input (it must be all zero)."""
    if array is None:
        if value.const is None:
            raise EdgecError(f"'{value.name}' is not a constant")
        array = value.const.numpy()
    qv = quantized_constant(graph, array, scale, zp, dtype, axis, block_size, name=value.name)
    if zero_point is False and np.any(np.asarray(zp) != 0):
        raise EdgecError(f"'{value.name}': a nonzero zero point cannot be left out")
    dq = dequantize_node(graph, qv, name=value.name, zero_point=zero_point)
    dq.outputs[0].type = TensorType(DType.FLOAT if value.dtype is None else value.dtype, Shape(np.shape(array)))
    _place(graph, dq, before if before is not None else next(iter(graph), None), False)
    return dq.outputs[0]


def gather_table(node: Node) -> Optional[np.ndarray]:
    """The constant float32 table of ``Gather(table, indices)`` along axis 0 (an embedding), else None."""
    if node.op_type != "Gather" or node.domain != "" or int(node.attr("axis", 0)) != 0:
        return None
    t = node.input(0)
    if t is None or node.input(1) is None:
        return None
    if t.const is None and not (t.producer is not None and t.producer.op_type == "Constant"):
        return None
    from ..rewrite import constant_value

    arr = constant_value(t)
    if arr is None or arr.dtype != np.float32 or arr.ndim < 2:
        return None
    return arr


def quantized_gather(graph: Graph, node: Node, scale: np.ndarray, zp: np.ndarray, dtype: DTypeLike = DType.INT8,
                     axis: Optional[int] = None, *, array: Optional[np.ndarray] = None,
                     zero_point: bool = False) -> Value:
    """Replace ``Gather(table, idx)`` (axis 0) with ``Gather(table_q, idx) -> DequantizeLinear``: only
    the gathered rows are dequantized (a DequantizeLinear before the Gather dequantizes the whole
    table on every run: onnxruntime does not fold it). ``axis`` is a table axis other than 0 (per
    column), None for per-tensor. The zero-point input is written only with ``zero_point``
    (symmetric tables: 0 is the default). Returns the float output that replaced the node's; the
    old table is left for the caller to sweep."""
    d = as_dtype(dtype)
    table, idx, out = node.input(0), node.input(1), node.output(0)
    arr = array if array is not None else gather_table(node)
    if arr is None:
        raise EdgecError(f"'{node.name}' does not gather from a constant float table")
    if axis is not None and axis % arr.ndim == 0:
        raise EdgecError("per-row parameters cannot follow the Gather: quantize per tensor or per column")
    qv = quantized_constant(graph, arr, scale, zp, d, axis, name=table.name)
    out_axis = None if axis is None or np.ndim(scale) == 0 else axis % arr.ndim - arr.ndim
    shape = out.shape if out.shape is not None else Shape(None)
    g = Node("Gather", [qv, idx], 1, {"axis": 0}, name=graph.new_name(node.name + "_quantized", node_name=True))
    g.outputs[0].name = graph.new_name("gathered")
    g.outputs[0].type = TensorType(d, shape, QuantParams(scale, np.asarray(zp).astype(d.numpy), out_axis))
    graph.insert_before(node, g)
    params = _params(graph, scale, np.asarray(zp) if zero_point else None, d)
    dq = dequantize_node(graph, g.outputs[0], name=table.name, params=params)
    dq.outputs[0].type = out.type if isinstance(out.type, TensorType) else TensorType(DType.FLOAT, shape)
    graph.insert_before(node, dq)
    y = dq.outputs[0]
    out.replace_all_uses_with(y)
    graph.remove(node)
    return y


#: Data movers that give the same result on the integers as on their dequantized values (one scale
#: and zero point in and out), with the opset from which ONNX accepts 8-bit tensors for them.
INTEGER_MOVERS = {"Reshape": 5, "Flatten": 9, "Transpose": 1, "Squeeze": 1, "Unsqueeze": 1, "Concat": 4,
                  "Slice": 1, "Split": 2, "Gather": 1, "MaxPool": 12}


def _same_params(a: Optional[QuantParams], b: Optional[QuantParams]) -> bool:
    """Equal scale, zero point (value and type) and axis."""
    if a is None or b is None or a.axis != b.axis or a.block_size != b.block_size:
        return False
    za, zb = np.asarray(a.zero_point), np.asarray(b.zero_point)
    return np.array_equal(np.asarray(a.scale, np.float32), np.asarray(b.scale, np.float32)) and \
        za.dtype == zb.dtype and np.array_equal(za, zb)


def _quant_of(v: Optional[Value]) -> Optional[QuantParams]:
    return v.type.quant if v is not None and isinstance(v.type, TensorType) else None


def movers_on_integers(graph: Graph, node: Node, data: Sequence[int], opset: int) -> bool:
    """Rewrite ``DQ -> mover -> Q`` (one set of parameters) as the mover on the integers:
    ``Q -> mover -> DQ``. The same values, two nodes fewer per mover in the file, and the form
    onnxruntime turns QDQ movers into anyway. ``data`` are the input indices that carry the
    tensor (e.g. 0 for Reshape, all for Concat). Returns whether it rewrote ``node``; it leaves it
    alone unless every data input is read through its own DequantizeLinear and every output goes
    only to one QuantizeLinear, all with the same parameters."""
    if node.domain != "" or opset < INTEGER_MOVERS.get(node.op_type, 1 << 30):
        return False
    dqs: List[Node] = []
    for i in data:
        v = node.input(i)
        p = v.producer if v is not None else None
        if p is None or p.op_type != "DequantizeLinear" or p.domain != "" or v.is_graph_output() \
                or len(v.uses()) != 1:
            return False
        dqs.append(p)
    qs: List[Node] = []
    for o in node.outputs:
        if o is None:
            continue
        users = o.uses()
        if o.is_graph_output() or len(users) != 1 or users[0][0].op_type != "QuantizeLinear" or users[0][1] != 0:
            return False
        qs.append(users[0][0])
    params = [_quant_of(d.input(0)) for d in dqs] + [_quant_of(q.output(0)) for q in qs]
    if not dqs or not qs or not all(_same_params(params[0], p) for p in params):
        return False
    for i, dq in zip(data, dqs):
        node.set_input(i, dq.input(0))
        graph.remove(dq)
    for q in qs:
        o, qo = q.input(0), q.output(0)
        qo.replace_all_uses_with(o)
        graph.remove(q)
        o.type = TensorType(qo.dtype, o.shape if o.shape is not None else qo.shape, qo.type.quant)
    return True


def product_scale(graph: Graph, weight_scale: Value, input_scale: np.ndarray, expected: np.ndarray, *,
                  before: Node) -> Optional[Value]:
    """``expected`` (a bias scale, ``s_in * s_w``) computed in the graph as ``Mul(s_w, s_in)`` from
    the weight-scale initializer and the shared input-scale scalar instead of stored: a 64-channel
    layer saves 256 bytes, and runtimes fold the Mul at load (onnxruntime still fuses the layer).
    None (nothing added) unless the float32 product is bitwise ``expected``."""
    sw = weight_scale.const.numpy() if weight_scale.const is not None and weight_scale.is_constant() else None
    if sw is None or sw.dtype != np.float32:
        return None
    prod = np.float32(np.asarray(input_scale, np.float32).reshape(())) * sw
    want = np.asarray(expected, np.float32)
    if prod.shape != want.shape or prod.tobytes() != want.tobytes():
        return None
    s_in = _scalar(graph, np.asarray(input_scale, np.float32).reshape(()), DType.FLOAT, "s")
    mul = Node("Mul", [weight_scale, s_in], 1, name=short_name(graph, "Mul", node_name=True))
    mul.outputs[0].name = short_name(graph, "sb")
    mul.meta[ANONYMOUS] = True
    mul.outputs[0].type = TensorType(DType.FLOAT, Shape(prod.shape))
    _place(graph, mul, before, False)
    return mul.outputs[0]
