"""Constant folding: evaluate nodes whose inputs are known at compile time.

Rules (one pass = repeat {infer_shapes; one sweep over every graph} until nothing folds):

1. A node whose present inputs are all constants (initializers that are not graph inputs, or
   Constant node outputs) is evaluated with :func:`edgec.ops.evaluate` and its used outputs become
   initializers (Constant nodes in a function's top-level body) that take the outputs' names.
2. ``Shape(x)`` (``start``/``end`` respected) and ``Size(x)`` fold when the dims they read are
   static ints in ``x``'s type, even though ``x`` is not constant.
3. Any node output whose ``shape_value`` (after infer_shapes) is fully known ints folds.

Never folded: nondeterministic ops (RandomNormal, ...), ops outside the ONNX domains, nodes with
subgraphs, Constant nodes (see ``lift-constants``), outputs whose type has a symbolic dim (dynamic
dims are never frozen), sequence/optional outputs, results that disagree with the inferred type.

Size rules: an output stays unfolded when its bytes exceed ``max(bytes of the node's constant
inputs, size-limit)`` (stops Tile/Expand/ConstantOfShape/Range blow-ups; checked on the inferred
type before evaluating); folding stops with a warning once the folded bytes would pass
``max-total-bytes`` (-1: 1.5x the model's constant bytes + 1 MiB). A node that fails to evaluate is
skipped (statistic ``eval-failed``).

Exactness: shape, integer, bool and data-movement ops are bit-identical to onnxruntime; float math
(Exp, Erf, Pow, MatMul, ...) follows numpy and agrees within rtol 1e-6.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from edgec.ir import ArrayTensor, DType, Graph, Model, Node, Tensor, TensorType, Value
from edgec.ir.shapes import infer_shapes
from edgec.ops import NONDETERMINISTIC_OPS, evaluate
from edgec.passmanager import Pass, PassContext, register_pass

from .lift_constants import const_tensor, function_bodies, graph_opsets, new_constant, replace_value

__all__ = ["FoldConstants", "model_constant_bytes", "FOLDABLE_DOMAINS", "known_ints_array", "replace_with_constant"]

#: Domains whose ops are folded (others may be custom ops with unknown semantics).
FOLDABLE_DOMAINS = frozenset({"", "ai.onnx.ml"})
#: Ops whose output can be much larger than their inputs: folded only when the output type is static.
GENERATORS = frozenset({
    "ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad", "OneHot", "EyeLike",
    "Col2Im", "CenterCropPad", "Einsum", "MatMul", "Gemm", "Gather", "GatherElements", "GatherND", "Concat",
})
MAX_ITERATIONS = 8


def model_constant_bytes(model: Model) -> int:
    """Bytes of every initializer and Constant-node tensor of the model (external data not loaded)."""
    total = 0
    for g in model.all_graphs():
        for v in g.initializers.values():
            c = v.const
            total += c.nbytes if isinstance(c, Tensor) else getattr(c, "nbytes", 0)
        for n in g:
            if n.op_type == "Constant" and n.domain == "":
                t = n.attr("value")
                if isinstance(t, Tensor):
                    total += t.nbytes
    return total


def known_ints_array(v: Value) -> Optional[np.ndarray]:
    """The array of a value whose ``shape_value`` is fully known ints and whose type is a static int/bool tensor."""
    sv = v.meta.get("shape_value")
    t = v.type
    if sv is None or not isinstance(t, TensorType) or not t.shape.is_static:
        return None
    if not (t.dtype.is_integer or t.dtype == DType.BOOL):
        return None
    if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) for x in sv):
        return None
    if t.shape.numel() != len(sv):
        return None
    try:
        arr = np.array([int(x) for x in sv], dtype=np.int64)
        if t.dtype != DType.BOOL:
            info = np.iinfo(t.dtype.numpy)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                return None
        return arr.astype(t.dtype.numpy).reshape(t.shape.dims)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - an exotic dtype: leave it alone
        return None


def replace_with_constant(graph: Graph, old: Value, array: np.ndarray, *, as_node: bool, before: Optional[Node]) -> Value:
    """Replace ``old`` by a constant that takes its name (graph outputs included)."""
    name = old.name
    old.name = graph.new_name(name + "_folded")
    tensor = ArrayTensor(np.array(array, copy=True))
    new = new_constant(graph, tensor, name, as_node=as_node, before=before, type_hint=old.type)
    new.doc_string = old.doc_string
    new.metadata_props.update(old.metadata_props)
    replace_value(old, new)
    return new


def _fits_type(arr: np.ndarray, t: object) -> Optional[str]:
    """None when ``arr`` may replace a value of type ``t``, else why not."""
    if t is None:
        return None
    if not isinstance(t, TensorType):
        return "non-tensor"
    try:
        dt = DType.from_numpy(arr.dtype)
    except Exception:  # noqa: BLE001
        return "type-mismatch"
    if t.dtype != DType.UNDEFINED and dt != t.dtype:
        return "type-mismatch"
    dims = t.shape.dims
    if dims is None:
        return None
    if len(dims) != arr.ndim:
        return "type-mismatch"
    for d, n in zip(dims, arr.shape):
        if isinstance(d, str):
            return "symbolic-dim"
        if isinstance(d, int) and d != n:
            return "type-mismatch"
    return None


def _static_bytes(t: object) -> Optional[int]:
    if isinstance(t, TensorType) and t.shape.is_static and t.dtype != DType.STRING:
        return (t.shape.numel() * t.dtype.itemsize_bits + 7) // 8  # type: ignore[operator]
    return None


class _Folder:
    """One run of the pass: budget, statistics, the per-node rules."""

    def __init__(self, model: Model, ctx: PassContext, size_limit: int, budget: int) -> None:
        self.model = model
        self.ctx = ctx
        self.size_limit = size_limit
        self.budget = budget
        self.folded_bytes = 0
        self.stopped = False
        self.opsets = graph_opsets(model)
        self.func_bodies = function_bodies(model)
        self.failed: Dict[int, Node] = {}  # nodes evaluated or refused once: not retried (kept alive: ids stay unique)

    def stat(self, name: str, n: int = 1) -> None:
        self.ctx.stat(name, n)

    def charge(self, nbytes: int) -> bool:
        """Account for ``nbytes`` of new constants; False (and stop) when over budget."""
        if self.folded_bytes + nbytes > self.budget:
            if not self.stopped:
                self.ctx.warn(f"fold-constants: stopped folding at {self.folded_bytes} bytes of folded constants "
                              f"(max-total-bytes={self.budget})")
                self.stopped = True
                self.stat("budget-exhausted")
            return False
        self.folded_bytes += nbytes
        return True

    def sweep(self, graph: Graph) -> int:
        n = 0
        as_node = id(graph) in self.func_bodies
        for node in graph:
            if self.stopped:
                break
            n += self.fold_node(graph, node, as_node)
        return n

    def fold_node(self, graph: Graph, node: Node, as_node: bool) -> int:
        if node.domain not in FOLDABLE_DOMAINS or node.subgraphs() or id(node) in self.failed:
            return 0
        if node.op_type == "Constant":
            return 0
        if node.op_type in NONDETERMINISTIC_OPS:
            self.stat("nondeterministic-skipped")
            self.failed[id(node)] = node
            return 0
        used = [o for o in node.outputs if o is not None and o.has_uses()]
        if not used:
            return 0
        if any(a.ref is not None for a in node.attrs.values()):
            return 0
        inputs = list(node.inputs)
        tensors = [const_tensor(v) for v in inputs]
        if inputs and all(v is None or t is not None for v, t in zip(inputs, tensors)) and any(v is not None for v in inputs):
            return self.fold_evaluated(graph, node, as_node, [t for t in tensors], used)
        return self.fold_shape_derived(graph, node, as_node, used)

    # --- rule 1: all inputs constant ----------------------------------------------------------
    def fold_evaluated(self, graph: Graph, node: Node, as_node: bool, tensors: Sequence[Optional[Tensor]],
                       used: List[Value]) -> int:
        in_bytes = sum(t.nbytes for t in tensors if t is not None)
        limit = max(in_bytes, self.size_limit)
        foldable = []
        for o in used:
            b = _static_bytes(o.type)
            if b is None and node.op_type in GENERATORS:
                self.stat("size-unknown")
                continue
            if b is not None and b > limit:
                self.stat("too-large")
                continue
            if isinstance(o.type, TensorType) and any(isinstance(d, str) for d in (o.type.shape.dims or ())):
                self.stat("symbolic-dim")
                continue
            foldable.append(o)
        if not foldable:
            self.failed[id(node)] = node
            return 0
        opset = self.opsets.get(id(graph), self.model.opset_imports).get(node.domain) or \
            self.model.opset_imports.get(node.domain) or 1
        try:
            arrays = [None if t is None else t.numpy() for t in tensors]
            results = evaluate(node, arrays, int(opset))
        except Exception:  # noqa: BLE001 - EvaluationError or anything else: never crash the pipeline
            self.stat("eval-failed")
            self.failed[id(node)] = node
            return 0
        n = 0
        for o in foldable:
            arr = results[o.index] if o.index < len(results) else None
            if not isinstance(arr, np.ndarray):
                self.stat("eval-failed")
                continue
            why = _fits_type(arr, o.type)
            if why is not None:
                self.stat(why)
                continue
            nbytes = ArrayTensor(arr).nbytes
            if nbytes > limit:
                self.stat("too-large")
                continue
            if not self.charge(nbytes):
                break
            replace_with_constant(graph, o, arr, as_node=as_node, before=node)
            n += 1
        self.failed[id(node)] = node  # evaluated once; what did not fold will not fold later either
        return self.finish(graph, node, n, "nodes-folded")

    # --- rules 2 and 3: values known from shapes ------------------------------------------------
    def fold_shape_derived(self, graph: Graph, node: Node, as_node: bool, used: List[Value]) -> int:
        n = 0
        for o in used:
            arr = None
            if o.index == 0 and node.op_type in ("Shape", "Size"):
                arr = self.static_shape(node)
            if arr is None:
                arr = known_ints_array(o)
            if arr is None or _fits_type(arr, o.type) is not None:
                continue
            if not self.charge(ArrayTensor(arr).nbytes):
                break
            replace_with_constant(graph, o, arr, as_node=as_node, before=node)
            n += 1
        return self.finish(graph, node, n, "shape-values-folded")

    def static_shape(self, node: Node) -> Optional[np.ndarray]:
        x = node.input(0)
        if x is None or not isinstance(x.type, TensorType) or x.type.shape.dims is None:
            return None
        dims = list(x.type.shape.dims)
        if node.op_type == "Size":
            return np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64) if all(isinstance(d, int) for d in dims) else None
        r = len(dims)
        start, end = int(node.attr("start", 0)), node.attr("end", None)
        end = r if end is None else int(end)
        start = min(max(start + r if start < 0 else start, 0), r)
        end = min(max(end + r if end < 0 else end, 0), r)
        part = dims[start:end]
        if not all(isinstance(d, int) for d in part):
            return None
        return np.array(part, dtype=np.int64)

    def finish(self, graph: Graph, node: Node, n: int, stat: str) -> int:
        if n:
            self.stat(stat)
            self.stat("values-folded", n)
            if node.graph is graph and _dead(node):
                inputs = [v for v in node.inputs if v is not None]
                graph.remove(node)
                self.stat("nodes-removed")
                _drop_dead_inputs(inputs, self.ctx)
        return n


def _dead(node: Node) -> bool:
    return all(v is None or not v.has_uses() for v in node.outputs)


def _drop_dead_inputs(values: List[Value], ctx: PassContext) -> None:
    """Remove what folding left unused: producers without other users (transitively) and
    initializers that are not graph inputs."""
    work = list(values)
    while work:
        v = work.pop()
        if v.has_uses():
            continue
        p = v.producer
        if p is None:
            g = v.owner
            if g is not None and v.is_initializer() and not v.is_graph_input() and g.initializers.get(v.name) is v:
                g.remove_initializer(v)
                ctx.stat("initializers-removed")
        elif p.graph is not None and not p.subgraphs() and _dead(p):
            work.extend(x for x in p.inputs if x is not None)
            p.graph.remove(p)
            ctx.stat("nodes-removed")


@register_pass
class FoldConstants(Pass):
    """Evaluate nodes with constant inputs (and shape-derived values) at compile time.

    See the module docstring for the rules. Options: ``size-limit`` (bytes an output may have
    beyond its inputs' bytes, default 1024) and ``max-total-bytes`` (cap on all folded bytes,
    -1 = 1.5x the model's constant bytes + 1 MiB).
    """

    name = "fold-constants"
    opt_level = 1
    size_limit: int = 1024
    max_total_bytes: int = -1

    def run(self, model: Model, ctx: PassContext) -> bool:
        budget = self.max_total_bytes
        if budget < 0:
            budget = int(1.5 * model_constant_bytes(model)) + (1 << 20)
        folder = _Folder(model, ctx, self.size_limit, budget)
        total = 0
        for _ in range(MAX_ITERATIONS):
            infer_shapes(model)
            n = 0
            for g in list(model.all_graphs()):
                if folder.stopped:
                    break
                n += folder.sweep(g)
            total += n
            if n == 0 or folder.stopped:
                break
        if total:
            ctx.stat("folded-bytes", folder.folded_bytes)
        return total > 0
