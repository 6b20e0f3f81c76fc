"""Remove nodes that compute their input unchanged (no-ops). Bit-exact.

Also home of small helpers the other simplification passes share (constants, axes, shapes).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from edgec.ir import Graph, Model, Node, Tensor, TensorType, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Match, Op, RewriteRule, Rewriter, Var, apply_rules, can_replace

__all__ = ["EliminateNoops", "noop_rules", "const_array", "int_list", "graph_opsets", "same_dims", "broadcasts_into",
           "has_ref_attrs"]

#: Constants larger than this are not inspected (they are never no-op parameters in practice).
MAX_CONST_ELEMS = 1 << 16
INT64_MAX = (1 << 63) - 1


# --- shared helpers -----------------------------------------------------------------------------

def const_array(v: Optional[Value], max_elems: int = MAX_CONST_ELEMS) -> Optional[np.ndarray]:
    """The array of a constant: an initializer that is not a graph input, or a Constant node output."""
    if v is None:
        return None
    t = None
    if v.producer is None:
        if v.is_constant() and isinstance(v.const, Tensor):
            t = v.const
    else:
        node = v.producer
        if node.op_type != "Constant" or node.domain != "" or len(node.attrs) != 1:
            return None
        (name, a), = node.attrs.items()
        if a.ref is not None:
            return None
        if name == "value" and isinstance(a.value, Tensor):
            t = a.value
        elif name in ("value_int", "value_ints"):
            return np.array(a.value, dtype=np.int64)
        elif name in ("value_float", "value_floats"):
            return np.array(a.value, dtype=np.float32)
    if t is None or t.numel > max_elems:
        return None
    return t.numpy()


def int_list(v: Optional[Value]) -> Optional[List[int]]:
    """The elements of a constant integer tensor of rank <= 1, else None."""
    arr = const_array(v)
    if arr is None or arr.ndim > 1 or arr.dtype.kind not in "iu":
        return None
    return [int(x) for x in arr.reshape(-1)]


def graph_opsets(model: Model) -> Dict[int, int]:
    """id(graph) -> imported default-domain opset, for the main graph, functions and all subgraphs."""
    out: Dict[int, int] = {}
    default = model.opset("") or 1
    for g in model.graph.all_graphs():
        out[id(g)] = default
    for f in model.functions.values():
        v = f.opset_imports.get("", f.opset_imports.get("ai.onnx", default))
        for g in f.graph.all_graphs():
            out[id(g)] = v
    return out


def dims_of(v: Optional[Value]) -> Optional[tuple]:
    """The dims of a tensor value's type (ints, symbols, None), or None when the rank is unknown."""
    if v is None or not isinstance(v.type, TensorType):
        return None
    return v.type.shape.dims


def _dim_eq(a, b) -> bool:
    return a is not None and a == b


def same_dims(a: Optional[tuple], b: Optional[tuple]) -> bool:
    """Two shapes that are known to be equal (every dim a known int or the same symbol)."""
    return a is not None and b is not None and len(a) == len(b) and all(_dim_eq(x, y) for x, y in zip(a, b))


def broadcasts_into(small: Optional[tuple], big: Optional[tuple]) -> bool:
    """Broadcasting ``small`` with ``big`` certainly gives ``big`` (multidirectional, numpy rules)."""
    if small is None or big is None or len(small) > len(big):
        return False
    for s, b in zip(reversed(small), reversed(big)):
        if not (s == 1 or _dim_eq(s, b)):
            return False
    return True


def same_elem_type(a: Optional[Value], b: Optional[Value]) -> bool:
    """Both tensor values have the same known element type and quantization."""
    ta, tb = getattr(a, "type", None), getattr(b, "type", None)
    return isinstance(ta, TensorType) and isinstance(tb, TensorType) and ta.dtype == tb.dtype and ta.quant == tb.quant


def _quant_ok(x: Value, y: Value) -> bool:
    """Replacing ``y`` by ``x`` keeps quantization info (y untyped, or the same quant params)."""
    tx, ty = x.type, y.type
    if not isinstance(ty, TensorType):
        return True
    if not isinstance(tx, TensorType):
        return ty.quant is None
    return tx.dtype == ty.dtype and tx.quant == ty.quant


def has_ref_attrs(*nodes: Node) -> bool:
    """Some attribute is a reference to a function attribute (its value is not known here)."""
    return any(a.ref is not None for n in nodes for a in n.attrs.values())


def _input_const_or_attr(node: Node, attr: str, index: int) -> Optional[List[int]]:
    """Integer list given as attribute ``attr`` (older opsets) or constant input ``index``."""
    if attr in node.attrs:
        a = node.attrs[attr]
        return None if a.ref is not None else [int(x) for x in a.value]
    return int_list(node.input(index))


# --- the rules ----------------------------------------------------------------------------------

def _identity(m: Match, rw: Rewriter) -> Optional[Value]:
    x, y = m["x"], m.root.outputs[0]
    return x if can_replace(y, x) else None  # else it is already the cheapest way to rename


def _forward(check: Callable[[Node, Value, Value], bool]) -> Callable[[Match, Rewriter], Optional[Value]]:
    """A rewrite that returns the node's first input when ``check(node, x, y)`` holds."""

    def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
        node = m.root
        x, y = node.inputs[0], node.outputs[0]
        if x is None or y is None or len([o for o in node.outputs if o is not None]) != 1 or not _quant_ok(x, y):
            return None
        if has_ref_attrs(node):  # a function body's attribute parameter: value unknown here
            return None
        return x if check(node, x, y) else None

    return rewrite


def _cast(node: Node, x: Value, y: Value) -> bool:
    return isinstance(x.type, TensorType) and int(x.type.dtype) == node.attr("to")


def _castlike(node: Node, x: Value, y: Value) -> bool:
    return same_elem_type(x, node.input(1))


def _reshape(node: Node, x: Value, y: Value) -> bool:
    xd = dims_of(x)
    if same_dims(xd, dims_of(y)):
        return True
    shape = int_list(node.input(1))
    if xd is None or shape is None or len(shape) != len(xd) or "shape" in node.attrs:
        return False
    allowzero = node.attr("allowzero", 0)
    minus = [i for i, s in enumerate(shape) if s == -1]
    if len(minus) > 1:
        return False
    for i, (s, d) in enumerate(zip(shape, xd)):
        if s == -1:
            continue
        if s == 0 and not allowzero:
            continue  # copies dim i
        if not (isinstance(d, int) and d == s):
            return False
    if minus:  # the inferred dim equals x's when every other dim matched, unless they hold no elements
        others = [d for i, d in enumerate(xd) if i != minus[0]]
        if any(d == 0 for d in others):
            return False
    return True


def _expand(node: Node, x: Value, y: Value) -> bool:
    xd = dims_of(x)
    if same_dims(xd, dims_of(y)):
        return True
    shape = int_list(node.input(1))
    return shape is not None and broadcasts_into(tuple(shape), xd)


def _pad(node: Node, x: Value, y: Value) -> bool:
    pads = _input_const_or_attr(node, "pads", 1)
    if "paddings" in node.attrs:  # opset 1
        pads = [int(p) for p in node.attr("paddings")]
    return pads is not None and all(p == 0 for p in pads)


def _slice(node: Node, x: Value, y: Value) -> bool:
    if "starts" in node.attrs:  # opset < 10
        starts, ends = node.attr("starts"), node.attr("ends")
        axes = node.attr("axes")
        steps = None
    else:
        starts, ends = int_list(node.input(1)), int_list(node.input(2))
        axes = int_list(node.input(3)) if node.input(3) is not None else None
        steps = int_list(node.input(4)) if node.input(4) is not None else None
        if starts is None or ends is None or (node.input(3) is not None and axes is None) or (
                node.input(4) is not None and steps is None):
            return False
    xd = dims_of(x)
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    if not (len(axes) == len(starts) == len(ends) == len(steps)):
        return False
    for a, s, e, st in zip(axes, starts, ends, steps):
        if a < 0:
            if xd is None:
                return False
            a += len(xd)
        d = xd[a] if xd is not None and 0 <= a < len(xd) else None
        if st != 1 or s != 0:
            return False
        if not (e >= INT64_MAX or (isinstance(d, int) and e >= d)):
            return False
    return True


def _transpose(node: Node, x: Value, y: Value) -> bool:
    perm = node.attr("perm")
    if perm is None:
        xd = dims_of(x)
        return xd is not None and len(xd) <= 1
    return list(perm) == list(range(len(perm)))


def _squeeze(node: Node, x: Value, y: Value) -> bool:
    axes = _input_const_or_attr(node, "axes", 1)
    if axes is None and node.input(1) is not None:
        return False
    if axes:
        return False
    xd = dims_of(x)  # no axes: squeezes every 1; a no-op when no dim can be 1
    return xd is not None and all(isinstance(d, int) and d != 1 for d in xd)


def _unsqueeze(node: Node, x: Value, y: Value) -> bool:
    axes = _input_const_or_attr(node, "axes", 1)
    return axes is not None and len(axes) == 0


def _single_input(node: Node, x: Value, y: Value) -> bool:
    return len(node.inputs) == 1


def _split(node: Node, x: Value, y: Value) -> bool:
    return len(node.outputs) == 1


def _where(m: Match, rw: Rewriter) -> Optional[Value]:
    node = m.root
    c, a, b = node.inputs[:3]
    y = node.outputs[0]
    cond = const_array(c)
    if cond is None or cond.dtype != np.bool_ or cond.size == 0:
        return None
    if cond.all():
        keep, other = a, b
    elif not cond.any():
        keep, other = b, a
    else:
        return None
    kd = dims_of(keep)
    if not (broadcasts_into(tuple(cond.shape), kd) and broadcasts_into(dims_of(other), kd) and _quant_ok(keep, y)):
        return None
    return keep


def noop_rules(opset_of: Callable[[Graph], int]) -> List[RewriteRule]:
    """The rules of ``eliminate-noops``; ``opset_of(graph)`` gives a graph's default-domain opset."""

    def dropout(m: Match, rw: Rewriter) -> Optional[Value]:
        node = m.root
        x = node.inputs[0]
        mask = node.output(1)
        if x is None or (mask is not None and mask.has_uses()) or has_ref_attrs(node):
            return None
        if opset_of(node.graph) < 7 and not node.attr("is_test", 0):
            return None  # opsets 1-6: training unless is_test=1
        tm = node.input(2)
        if tm is not None:
            arr = const_array(tm)
            if arr is None or arr.size != 1 or bool(arr.reshape(-1)[0]):
                return None
        return x

    X = Var("x")
    return [
        RewriteRule("identity", Op("Identity", X), _identity),
        RewriteRule("dropout", Op("Dropout", X, extra_inputs=True), dropout),
        RewriteRule("cast-same-type", Op("Cast", X), _forward(_cast)),
        RewriteRule("castlike-same-type", Op("CastLike", X, Var()), _forward(_castlike)),
        RewriteRule("reshape-same-shape", Op("Reshape", X, extra_inputs=True), _forward(_reshape)),
        RewriteRule("expand-no-broadcast", Op("Expand", X, Var()), _forward(_expand)),
        RewriteRule("pad-zero", Op("Pad", X, extra_inputs=True), _forward(_pad)),
        RewriteRule("slice-full", Op("Slice", X, extra_inputs=True), _forward(_slice)),
        RewriteRule("transpose-identity", Op("Transpose", X), _forward(_transpose)),
        RewriteRule("squeeze-nothing", Op("Squeeze", X, extra_inputs=True), _forward(_squeeze)),
        RewriteRule("unsqueeze-nothing", Op("Unsqueeze", X, extra_inputs=True), _forward(_unsqueeze)),
        RewriteRule("concat-single", Op("Concat", X), _forward(_single_input)),
        RewriteRule("split-single", Op("Split", X, extra_inputs=True), _forward(_split)),
        RewriteRule("variadic-single", Op(("Sum", "Max", "Min", "Mean"), X), _forward(_single_input)),
        RewriteRule("where-constant", Op("Where", Var(), Var(), Var()), _where),
    ]


@register_pass
class EliminateNoops(Pass):
    """Remove nodes that return their input unchanged (bit-exact).

    Rules (statistic names): ``identity`` Identity; ``dropout`` Dropout at inference (no
    training_mode or a constant false one; not when the mask is used; opsets < 7 need is_test=1);
    ``cast-same-type`` / ``castlike-same-type`` a Cast(Like) to the input's own element type (type
    must be known); ``reshape-same-shape`` a Reshape whose result has the input's shape (equal static
    or symbolic types, or a constant shape of the same rank made of 0s, equal ints and at most one
    -1); ``expand-no-broadcast`` an Expand whose shape broadcasts into the input's; ``pad-zero`` all
    pads zero; ``slice-full`` starts 0, steps 1, ends >= the dim (or INT64_MAX); ``transpose-identity``
    identity perm (or no perm on rank <= 1); ``squeeze-nothing`` / ``unsqueeze-nothing`` empty axes
    (a Squeeze only when no dim can be 1); ``concat-single``, ``split-single``, ``variadic-single``
    (Sum/Max/Min/Mean of one input); ``where-constant`` a constant all-true/all-false condition whose
    other operands broadcast into the chosen one. Works in subgraphs and functions. A graph output
    keeps its name: when the input cannot take it (a graph input, initializer, outer-scope value or
    another output), the no-op becomes an Identity, and an Identity stays.
    """

    name = "eliminate-noops"
    opt_level = 1

    def run(self, model: Model, ctx: PassContext) -> bool:
        opsets = graph_opsets(model)
        stats = apply_rules(model, noop_rules(lambda g: opsets.get(id(g), model.opset("") or 1)))
        for rule, n in sorted(stats.fired.items()):
            ctx.stat(rule, n)
        return stats.changed
