"""Replace computed shape operands (Shape->Gather->Unsqueeze->Concat chains of exporters) by constants.

Rules (after infer_shapes, so ``Value.meta['shape_value']`` is current):

1. ``Reshape(x, s)`` with ``s`` computed and its shape value known except for symbolic/unknown
   entries: each such entry becomes ``0`` when it equals the same-position dim of ``x`` and
   ``allowzero`` is 0, and at most one remaining entry becomes ``-1`` (only when ``s`` has no
   ``-1`` already and, with ``allowzero=1``, no zero entry); otherwise the Reshape is left alone.
2. A computed shape-like operand whose shape value is fully known ints becomes a constant of the
   operand's dtype and dims: Reshape/Expand/Tile shape, Slice starts/ends/axes/steps,
   ConstantOfShape shape, Range start/limit/delta, Squeeze/Unsqueeze axes, Pad pads, Split split,
   TopK k, Reduce* axes, CumSum axis, OneHot depth, Resize sizes.
3. Then dead code elimination removes the shape chains nothing uses any more.

Dynamic dims stay dynamic: a symbolic entry only ever becomes ``0`` (copy) or ``-1`` (infer).
Bit-exact.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from edgec.ir import ArrayTensor, DType, Graph, Model, Node, TensorType, Value
from edgec.ir.shapes import dims_equal, infer_shapes
from edgec.passes.dce import eliminate_dead_code
from edgec.passmanager import Pass, PassContext, register_pass

from .fold_constants import known_ints_array
from .lift_constants import const_tensor, function_bodies, new_constant

__all__ = ["SimplifyShapes", "SHAPE_OPERANDS"]

_REDUCE = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")

#: op type -> indices of its shape-like (integer) operands.
SHAPE_OPERANDS: Dict[str, Tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "ConstantOfShape": (0,),
    "Range": (0, 1, 2), "Squeeze": (1,), "Unsqueeze": (1,), "Pad": (1,), "Split": (1,), "TopK": (1,),
    "CumSum": (1,), "OneHot": (1,), "Resize": (3,), **{op: (1,) for op in _REDUCE},
}


class _Simplifier:
    def __init__(self, model: Model, ctx: PassContext) -> None:
        self.ctx = ctx
        self.func_bodies = function_bodies(model)
        self.cache: Dict[Tuple[int, str, Tuple[int, ...], bytes], Value] = {}

    def constant(self, graph: Graph, node: Node, arr: np.ndarray, hint: str) -> Value:
        """A (shared per graph) constant holding ``arr``, placed in ``node``'s graph."""
        key = (id(graph), arr.dtype.str, tuple(arr.shape), arr.tobytes())
        v = self.cache.get(key)
        if v is not None and (v.owner is graph or (v.producer is not None and v.producer.graph is graph)):
            if v.producer is None or _before(v.producer, node):
                return v
        as_node = id(graph) in self.func_bodies
        v = new_constant(graph, ArrayTensor(arr), graph.new_name(hint + "_const"), as_node=as_node, before=node)
        self.cache[key] = v
        return v

    def run_graph(self, graph: Graph) -> int:
        n = 0
        for node in graph:
            if node.domain != "" or node.op_type not in SHAPE_OPERANDS:
                continue
            for i in SHAPE_OPERANDS[node.op_type]:
                v = node.input(i)
                if v is None or const_tensor(v) is not None:
                    continue
                arr = known_ints_array(v)
                if arr is not None:
                    node.set_input(i, self.constant(graph, node, arr, v.name))
                    self.ctx.stat("operands-made-constant")
                    n += 1
                elif node.op_type == "Reshape" and i == 1:
                    arr = self.partial_reshape(node, v)
                    if arr is not None:
                        node.set_input(i, self.constant(graph, node, arr, v.name))
                        self.ctx.stat("reshapes-simplified")
                        n += 1
        return n

    @staticmethod
    def partial_reshape(node: Node, s: Value) -> Optional[np.ndarray]:
        """The Reshape shape with symbolic entries as 0 (copy) or one -1 (infer), or None."""
        sv = s.meta.get("shape_value")
        t = s.type
        if sv is None or not isinstance(t, TensorType) or t.dtype != DType.INT64 or t.shape.dims is None:
            return None
        if len(t.shape.dims) != 1 or t.shape.dims[0] not in (len(sv), None):
            return None
        x = node.input(0)
        xdims = x.type.shape.dims if x is not None and isinstance(x.type, TensorType) else None
        allowzero = int(node.attr("allowzero", 0) or 0)
        known = [e for e in sv if isinstance(e, int) and not isinstance(e, bool)]
        if -1 in known or (allowzero and 0 in known):
            minus_one_free = False
        else:
            minus_one_free = True
        out: List[int] = []
        pending: List[int] = []
        for k, e in enumerate(sv):
            if isinstance(e, int) and not isinstance(e, bool):
                out.append(int(e))
            elif not allowzero and xdims is not None and k < len(xdims) and e is not None and dims_equal(e, xdims[k]):
                out.append(0)
            else:
                out.append(-1)
                pending.append(k)
        if not pending and all(isinstance(e, int) for e in sv):
            return None  # fully known: rule 2's business
        if len(pending) > 1 or (pending and not minus_one_free):
            return None
        return np.array(out, dtype=np.int64)


def _before(a: Node, b: Node) -> bool:
    """True when node ``a`` comes before node ``b`` in their graph."""
    n = a._next
    while n is not None:
        if n is b:
            return True
        n = n._next
    return False


@register_pass
class SimplifyShapes(Pass):
    """Turn computed Reshape/Expand/Slice/... shape operands into constants, keeping dynamic dims dynamic.

    See the module docstring for the rules; dead shape chains are removed afterwards (DCE).
    """

    name = "simplify-shapes"
    opt_level = 1

    def run(self, model: Model, ctx: PassContext) -> bool:
        infer_shapes(model)
        s = _Simplifier(model, ctx)
        n = sum(s.run_graph(g) for g in list(model.all_graphs()))
        if n:
            nodes, inits = eliminate_dead_code(model)
            if nodes:
                ctx.stat("nodes-removed", nodes)
            if inits:
                ctx.stat("initializers-removed", inits)
        return n > 0
