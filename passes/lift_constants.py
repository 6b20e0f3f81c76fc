"""Lift Constant nodes into initializers, so later passes see one form of constant. Bit-exact.

Also home of the small helpers the constant passes share (``fold-constants``, ``simplify-shapes``,
``inline-if``): reading a Constant node's tensor, opsets per graph, creating constants in a graph.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set

import numpy as np

from edgec.ir import ArrayTensor, DType, Graph, Model, Node, Shape, SparseTensor, Tensor, TensorType, Value
from edgec.passmanager import Pass, PassContext, register_pass

__all__ = [
    "LiftConstants", "constant_node_tensor", "const_tensor", "function_bodies", "graph_opsets", "new_constant",
    "replace_value", "tensor_type_for",
]

#: A ``sparse_value`` Constant is densified only up to this many elements.
MAX_DENSIFY_ELEMS = 4096


def constant_node_tensor(node: Node) -> Optional[Tensor]:
    """The tensor a ``Constant`` node produces, or None (not a Constant, a reference, a large sparse value)."""
    if node.op_type != "Constant" or node.domain != "" or len(node.attrs) != 1 or node.subgraphs():
        return None
    (name, a), = node.attrs.items()
    if a.ref is not None:
        return None
    val = a.value
    if name == "value":
        return val if isinstance(val, Tensor) else None
    if name == "sparse_value":
        if isinstance(val, SparseTensor) and int(np.prod(val.dims, dtype=np.int64)) <= MAX_DENSIFY_ELEMS:
            return ArrayTensor(val.to_dense(), val.dtype)
        return None
    if name == "value_float":
        return ArrayTensor(np.array(val, dtype=np.float32))
    if name == "value_floats":
        return ArrayTensor(np.array(val, dtype=np.float32).reshape(-1))
    if name == "value_int":
        return ArrayTensor(np.array(val, dtype=np.int64))
    if name == "value_ints":
        return ArrayTensor(np.array(val, dtype=np.int64).reshape(-1))
    if name == "value_string":
        return ArrayTensor(np.array(val, dtype=object).reshape(()), DType.STRING)
    if name == "value_strings":
        return ArrayTensor(np.array(list(val), dtype=object).reshape(-1), DType.STRING)
    return None


def const_tensor(v: Optional[Value]) -> Optional[Tensor]:
    """The dense tensor of a constant value: a non-input initializer or a Constant node output."""
    if v is None:
        return None
    if v.producer is None:
        return v.const if v.is_constant() and isinstance(v.const, Tensor) else None
    return constant_node_tensor(v.producer)


def function_bodies(model: Model) -> Set[int]:
    """ids of the top-level graphs of local functions (a FunctionProto has no initializers)."""
    return {id(f.graph) for f in model.functions.values()}


def graph_opsets(model: Model) -> Dict[int, Dict[str, int]]:
    """id(graph) -> opset imports in effect, for the main graph, function bodies and all subgraphs."""
    out: Dict[int, Dict[str, int]] = {}
    for g in model.graph.all_graphs():
        out[id(g)] = dict(model.opset_imports)
    for f in model.functions.values():
        merged = {**model.opset_imports, **f.opset_imports}
        for g in f.graph.all_graphs():
            out[id(g)] = merged
    return out


def tensor_type_for(tensor: Tensor, old: Optional[object] = None) -> TensorType:
    """The type of a constant; an old tensor type with the same dtype and dims is kept (quantization)."""
    if isinstance(old, TensorType) and old.dtype == tensor.dtype and old.shape.dims == tuple(tensor.dims):
        return old
    quant = old.quant if isinstance(old, TensorType) and old.dtype == tensor.dtype else None
    return TensorType(tensor.dtype, Shape(tuple(tensor.dims)), quant)


def new_constant(graph: Graph, tensor: Tensor, name: str, *, as_node: bool, before: Optional[Node] = None,
                 type_hint: Optional[object] = None) -> Value:
    """A constant named ``name`` (must be free) in ``graph``: an initializer, or a Constant node when
    ``as_node`` (function bodies), inserted before ``before`` (or appended)."""
    typ = tensor_type_for(tensor, type_hint)
    if not as_node:
        return graph.add_initializer(Value(name, typ, tensor))
    node = Node("Constant", [], [Value(name, typ)], {"value": tensor}, name=graph.new_name(name + "/Constant", node_name=True))
    if before is not None and before.graph is graph:
        graph.insert_before(before, node)
    else:
        graph.append(node)
    return node.outputs[0]  # type: ignore[return-value]


def replace_value(old: Value, new: Value) -> None:
    """Move every use of ``old`` (node inputs and graph outputs) to ``new``, names untouched."""
    old.replace_all_uses_with(new, graph_outputs=False)
    for g in old._graph_outputs():
        for i, o in enumerate(g.outputs):
            if o is old:
                g.set_output(i, new)


def _lift_graph(graph: Graph) -> int:
    n = 0
    for node in graph:
        tensor = constant_node_tensor(node)
        if tensor is None:
            continue
        out = node.output(0)
        if out is None or len(node.outputs) != 1:
            continue
        name = out.name
        out.name = graph.new_name(name + "_lifted")
        new = new_constant(graph, tensor, name, as_node=False, type_hint=out.type)
        new.doc_string = out.doc_string
        new.metadata_props.update(out.metadata_props)
        replace_value(out, new)
        graph.remove(node)
        n += 1
    return n


@register_pass
class LiftConstants(Pass):
    """Turn Constant nodes into initializers of the graph they live in. Bit-exact.

    Rules: ``value`` (dense or external tensor, kept as is), ``value_float(s)`` (f32),
    ``value_int(s)`` (i64), ``value_string(s)`` and small ``sparse_value`` (densified up to 4096
    elements) Constants become initializers that keep the output's name and type; a Constant inside
    a subgraph becomes an initializer of that subgraph. Constants in the top-level body of a local
    function stay (a FunctionProto cannot hold initializers), those in its subgraphs are lifted.
    """

    name = "lift-constants"
    opt_level = 1

    def run(self, model: Model, ctx: PassContext) -> bool:
        skip = function_bodies(model)
        graphs: List[Graph] = [g for g in model.all_graphs() if id(g) not in skip]
        n = sum(_lift_graph(g) for g in graphs)
        if n:
            ctx.stat("constants-lifted", n)
        return n > 0
