"""The IR verifier: checks the invariants every pass must keep, in one linear walk.

``verify(model)`` raises :class:`edgec.errors.VerificationError` with a one-line message that names
the graph, the node (name and qualified op) and the value at fault. It checks:

- SSA: every value is defined once in the whole model (node output, graph input, initializer) and
  no name is defined twice in one graph (a subgraph may reuse an outer name);
- links: node ``graph`` backlinks, the node list's ``prev`` links and length, value ``producer`` and
  output index, graph-input/initializer ownership, graph-output backlinks, subgraph ``parent``;
- use lists: ``(node, i)`` is in ``value.uses()`` exactly when ``node.inputs[i] is value``, and every
  user is a live node of the model;
- order and scope: each input is defined earlier in its graph, or in an enclosing graph before the
  parent node; values of sibling or inner graphs and values defined nowhere are errors; every graph
  output is defined in scope;
- constants: initializers have data whose dtype and dims agree with the value's type;
- types: ``Value.type`` is a ``Type``; tensor dims are ints >= 0, symbols or None; quantization only on
  non-float element types; element types of ONNX and registered ops meet the op's type constraints;
- ops: every node's domain is imported, and the op is known at that opset (``edgec.ir.opschema``) or
  is a local function, with a fitting number of inputs and outputs; attribute references only in
  function bodies and only to the function's attributes;
- functions: their bodies are verified the same way, with their own opset imports.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, List, Optional, Set, Tuple

from ..errors import VerificationError
from . import opschema
from .core import Attr, Function, Graph, Model, Node, SparseTensor, Value
from .dtypes import DType
from .tensor import Tensor
from .types import Shape, TensorType, Type

__all__ = ["verify", "verify_graph", "verify_function"]

# Element types that cannot carry affine quantization parameters.
_NO_QUANT = frozenset({DType.FLOAT, DType.DOUBLE, DType.FLOAT16, DType.BFLOAT16, DType.BOOL, DType.STRING,
                       DType.COMPLEX64, DType.COMPLEX128, DType.UNDEFINED})


def verify(model: Model, *, check_types: bool = True) -> None:
    """Check every invariant of ``model`` (main graph, subgraphs, functions); raise on the first break.

    ``check_types=False`` skips the element-type check against op type constraints (the structural
    checks always run). Runs in time linear in the size of the model.
    """
    v = _Verifier(check_types)
    if model.graph.parent is not None:
        v.fail(f"graph '{model.graph.name}': the main graph has a parent node {_node_desc(model.graph.parent)}")
    if model.graph.model is not None and model.graph.model is not model:
        v.fail(f"graph '{model.graph.name}': the main graph's model backlink points to another model")
    opsets = _normalize_opsets(model.opset_imports, "model", v)
    functions = model.functions
    for key, f in functions.items():
        if not isinstance(f, Function):
            v.fail(f"model: functions[{key!r}] is not a Function")
        if f.key != key:
            v.fail(f"function '{f.domain}::{f.name}': registered under key {key!r}, its key is {f.key!r}")
    v.run_graph(model.graph, [], [], _Ctx(opsets, functions, None, "graph"))
    for f in functions.values():
        v.run_function(f, opsets, functions)
    v.check_uses()


def verify_graph(graph: Graph, *, opset_imports: Optional[Dict[str, int]] = None,
                 functions: Optional[Dict[Tuple[str, str, str], Function]] = None, check_types: bool = True) -> None:
    """Verify one graph (and its nested subgraphs) on its own.

    Opset imports and local functions default to those of the model the graph belongs to; without
    a model, domains are not checked for imports and ONNX ops are checked at the newest opset. A
    subgraph may use the values its enclosing graphs define before its parent node.
    """
    v = _Verifier(check_types)
    root = graph.root
    model = root.model
    if opset_imports is None and model is not None:
        opset_imports = model.opset_imports
    if functions is None:
        functions = model.functions if model is not None else {}
    opsets = _normalize_opsets(opset_imports, "graph", v) if opset_imports is not None else None
    outer, chain = _enclosing_scopes(graph)
    v.run_graph(graph, outer, chain, _Ctx(opsets, functions, None, "graph"))
    v.check_uses()


def verify_function(function: Function, model: Optional[Model] = None, *, check_types: bool = True) -> None:
    """Verify a local function's body (with its own opset imports, falling back to the model's)."""
    v = _Verifier(check_types)
    opsets = _normalize_opsets(model.opset_imports, "model", v) if model is not None else None
    v.run_function(function, opsets, model.functions if model is not None else {})
    v.check_uses()


# --- internals -------------------------------------------------------------------------------------
class _Ctx:
    """What a graph is verified against: opsets (None = unchecked), functions, attribute params."""

    __slots__ = ("opsets", "functions", "attr_params", "kind")

    def __init__(self, opsets: Optional[Dict[str, int]], functions, attr_params: Optional[Set[str]], kind: str) -> None:
        self.opsets = opsets
        self.functions = functions
        self.attr_params = attr_params
        self.kind = kind


def _normalize_opsets(opsets: Dict[str, int], where: str, v: "_Verifier") -> Dict[str, int]:
    out: Dict[str, int] = {}
    for d, ver in opsets.items():
        if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
            v.fail(f"{where}: opset import of domain '{d}' has invalid version {ver!r}")
        out[opschema.normalize_domain(d)] = ver
    return out


def _node_desc(node: Node) -> str:
    return f"'{node.name}' ({node.qualified_op})"


def _enclosing_scopes(graph: Graph) -> Tuple[List[Set[Value]], List[Graph]]:
    """Scopes visible to ``graph`` from its enclosing graphs (outermost first) and those graphs."""
    scopes: List[Set[Value]] = []
    chain: List[Graph] = []
    g = graph
    while g.parent is not None and g.parent.graph is not None:
        parent = g.parent
        outer = parent.graph
        scope: Set[Value] = set(outer._inputs) | set(outer.initializers.values())
        for n in outer:
            if n is parent:
                break
            scope.update(o for o in n._outputs if o is not None)
        scopes.append(scope)
        chain.append(outer)
        g = outer
    scopes.reverse()
    chain.reverse()
    return scopes, chain


class _Verifier:
    def __init__(self, check_types: bool) -> None:
        self.check_types = check_types
        self.defined: Set[Value] = set()
        self.values: List[Value] = []
        self.nodes: Set[Node] = set()
        self.graphs: Set[int] = set()
        self.use_count: Dict[Value, int] = {}
        self.output_sets: Dict[int, Set[Value]] = {}
        self._fixed_types: Dict[str, Optional[FrozenSet[DType]]] = {}

    @staticmethod
    def fail(msg: str) -> None:
        raise VerificationError(msg)

    # --- graphs ----------------------------------------------------------------------------------
    def run_function(self, f: Function, model_opsets: Optional[Dict[str, int]], functions) -> None:
        where = f"function '{f.domain}::{f.name}'"
        if not isinstance(f.graph, Graph):
            self.fail(f"{where}: body is not a Graph")
        if f.graph.parent is not None:
            self.fail(f"{where}: body graph '{f.graph.name}' has a parent node")
        opsets = _normalize_opsets(f.opset_imports, where, self) if f.opset_imports else model_opsets
        params = set(f.attributes) | set(f.attribute_defaults)
        self.run_graph(f.graph, [], [], _Ctx(opsets, functions, params, where))

    def run_graph(self, g: Graph, outer: List[Set[Value]], chain: List[Graph], ctx: _Ctx, parent: Optional[Node] = None) -> None:
        gname = f"{ctx.kind} '{g.name}'" if not chain else f"graph '{g.name}'"
        if id(g) in self.graphs:
            self.fail(f"{gname}: the same Graph object appears twice in the model")
        self.graphs.add(id(g))
        if parent is not None and g.parent is not parent:
            self.fail(f"{gname}: subgraph of node {_node_desc(parent)} has a wrong parent backlink")
        scope: Set[Value] = set()
        names: Dict[str, str] = {}
        enclosing = chain + [g]

        def define(v: Value, what: str) -> None:
            if not isinstance(v, Value):
                self.fail(f"{gname}: {what} is not a Value ({v!r})")
            if v in self.defined:
                self.fail(f"{gname}: value '{v.name}' ({what}) is defined twice (SSA)")
            if not v.name:
                self.fail(f"{gname}: {what} has an empty name")
            prev = names.get(v.name)
            if prev is not None:
                self.fail(f"{gname}: name '{v.name}' is defined twice in one graph ({prev} and {what})")
            names[v.name] = what
            self.check_value_type(v, gname, what)
            scope.add(v)
            self.defined.add(v)
            self.values.append(v)

        # inputs and initializers
        if len(g._input_set) != len(g._inputs) or any(v not in g._input_set for v in g._inputs):
            self.fail(f"{gname}: input list and input set disagree (an input is listed twice or was not added with add_input)")
        for k, v in enumerate(g._inputs):
            if v is None:
                self.fail(f"{gname}: graph input {k} is None")
            if isinstance(v, Value):
                if v._producer is not None:
                    self.fail(f"{gname}: value '{v.name}' is defined twice (SSA): graph input and output of node "
                              f"{_node_desc(v._producer)}")
                if v._owner is not g:
                    self.fail(f"{gname}: graph input '{v.name}' has a wrong owner backlink")
            define(v, f"graph input '{getattr(v, 'name', '?')}'")
        for key, v in g.initializers.items():
            what = f"initializer '{key}'"
            if not isinstance(v, Value):
                self.fail(f"{gname}: {what} is not a Value ({v!r})")
            if v.name != key:
                self.fail(f"{gname}: {what} is registered under a different name than its value '{v.name}'")
            if v._producer is not None:
                self.fail(f"{gname}: value '{key}' is defined twice (SSA): {what} and output of node {_node_desc(v._producer)}")
            if v._owner is not g:
                self.fail(f"{gname}: {what} has a wrong owner backlink")
            self.check_const(v, gname, what)
            if v not in g._input_set:
                define(v, what)

        # nodes, in list order
        prev: Optional[Node] = None
        count = 0
        node = g._head
        nodes = self.nodes
        use_count = self.use_count
        while node is not None:
            if node in nodes:
                self.fail(f"{gname}: node {_node_desc(node)} appears twice in the node lists (corrupt links)")
            nodes.add(node)
            if node.graph is not g:
                self.fail(f"{gname}: node {_node_desc(node)} is in the node list but its graph backlink points to "
                          f"{'nothing' if node.graph is None else repr(node.graph.name)}")
            if node._prev is not prev:
                self.fail(f"{gname}: node {_node_desc(node)} has a wrong prev link")
            count += 1
            where = f"{gname}, node {_node_desc(node)}"
            for i, v in enumerate(node._inputs):
                if v is None:
                    continue
                if not isinstance(v, Value):
                    self.fail(f"{where}: input {i} is not a Value ({v!r})")
                if v not in scope and not any(v in s for s in outer):
                    self.fail(f"{where}: input {i} '{v.name}' {self.why_not_in_scope(v, enclosing)}")
                use_count[v] = use_count.get(v, 0) + 1
            self.check_op(node, ctx, where)
            for aname, a in node.attrs.items():
                if not isinstance(a, Attr):
                    self.fail(f"{where}: attribute '{aname}' is not an Attr")
                if a.name != aname:
                    self.fail(f"{where}: attribute '{aname}' holds an Attr named '{a.name}'")
                if a.ref is not None:
                    if ctx.attr_params is None:
                        self.fail(f"{where}: attribute '{aname}' refers to function attribute '{a.ref}' outside a function")
                    if a.ref not in ctx.attr_params:
                        self.fail(f"{where}: attribute '{aname}' refers to '{a.ref}', which is not an attribute of {ctx.kind}")
                    continue
                for sg in a.graphs():
                    if not isinstance(sg, Graph):
                        self.fail(f"{where}: attribute '{aname}' holds {sg!r}, not a Graph")
                    self.run_graph(sg, outer + [scope], enclosing, ctx, node)
            for j, v in enumerate(node._outputs):
                if v is None:
                    continue
                if not isinstance(v, Value):
                    self.fail(f"{where}: output {j} is not a Value ({v!r})")
                if v._producer is not node or v._index != j:
                    self.fail(f"{where}: output {j} '{v.name}' has a wrong producer/index backlink")
                if v.const is not None:
                    self.fail(f"{where}: output {j} '{v.name}' holds constant data (only initializers may)")
                define(v, f"output {j} '{v.name}' of node '{node.name}'")
            prev = node
            node = node._next
        if count != g._len:
            self.fail(f"{gname}: node count {g._len} disagrees with the {count} nodes linked")
        if g._tail is not prev:
            self.fail(f"{gname}: tail link does not point at the last node")

        # outputs
        for k, v in enumerate(g._outputs):
            if not isinstance(v, Value):
                self.fail(f"{gname}: graph output {k} is not a Value ({v!r})")
            if v not in scope and not any(v in s for s in outer):
                self.fail(f"{gname}: graph output {k} '{v.name}' {self.why_not_in_scope(v, enclosing)}")
            if g not in v._out_of:
                self.fail(f"{gname}: graph output '{v.name}' lacks its output backlink")
        for v in scope:
            if v._out_of:
                for og in v._out_of:
                    outs = self.output_sets.get(id(og))
                    if outs is None:
                        outs = self.output_sets[id(og)] = set(og._outputs)
                    if v not in outs:
                        self.fail(f"{gname}: value '{v.name}' claims to be an output of graph '{og.name}', which does not list it")

    def why_not_in_scope(self, v: Value, enclosing: List[Graph]) -> str:
        """Explain why ``v`` is not visible here (only called on the failure path)."""
        prod = v._producer
        if prod is not None:
            if prod.graph is None:
                return f"is dangling: its producer {_node_desc(prod)} is not in any graph"
            og = prod.graph
        else:
            og = v._owner
            if og is None or (v not in og._input_set and og.initializers.get(v.name) is not v):
                return "is dangling: it is not defined in any enclosing graph"
        if any(og is e for e in enclosing):
            if og is enclosing[-1]:
                return "is used before it is defined (topological order)"
            return f"is defined in enclosing graph '{og.name}' after the node that holds this subgraph (topological order)"
        return f"is defined in graph '{og.name}', which does not enclose this graph (subgraph scoping)"

    # --- values and types ------------------------------------------------------------------------
    def check_value_type(self, v: Value, gname: str, what: str) -> None:
        t = v.type
        if t is None:
            return
        if not isinstance(t, Type):
            self.fail(f"{gname}: {what} has type {t!r}, not an edgec Type")
        if type(t) is TensorType:
            if not isinstance(t.shape, Shape):
                self.fail(f"{gname}: {what} has a shape that is not a Shape")
            dims = t.shape.dims
            if dims is not None:
                for d in dims:
                    if d is None or isinstance(d, str):
                        continue
                    if not isinstance(d, int) or isinstance(d, bool) or d < 0:
                        self.fail(f"{gname}: {what} has invalid dim {d!r} in shape {list(dims)}")
            if t.quant is not None and t.dtype in _NO_QUANT:
                self.fail(f"{gname}: {what} has quantization parameters on element type {t.dtype.short}")

    def check_const(self, v: Value, gname: str, what: str) -> None:
        c = v.const
        if c is None:
            self.fail(f"{gname}: {what} has no constant data")
        if not isinstance(c, (Tensor, SparseTensor)):
            self.fail(f"{gname}: {what} holds {type(c).__name__}, not a Tensor")
        t = v.type
        dtype = getattr(t, "dtype", None)
        shape = getattr(t, "shape", None)
        if dtype is not None and dtype != DType.UNDEFINED and dtype != c.dtype:
            self.fail(f"{gname}: {what} is typed {DType(dtype).short} but its data is {c.dtype.short}")
        if isinstance(shape, Shape) and shape.dims is not None:
            dims = shape.dims
            if len(dims) != len(c.dims) or any(isinstance(d, int) and d != e for d, e in zip(dims, c.dims)):
                self.fail(f"{gname}: {what} is typed with shape {list(dims)} but its data has shape {list(c.dims)}")

    # --- ops -------------------------------------------------------------------------------------
    def check_op(self, node: Node, ctx: _Ctx, where: str) -> None:
        domain = "" if node.domain == "ai.onnx" else node.domain
        opsets = ctx.opsets
        if opsets is None:
            version = None
        else:
            version = opsets.get(domain)
            if version is None:
                self.fail(f"{where}: domain '{domain or 'ai.onnx'}' is not in the opset imports")
        f = ctx.functions.get((node.domain, node.op_type, node.overload)) if ctx.functions else None
        if f is not None:
            if len(node._inputs) > len(f.graph._inputs) or len(node._outputs) > len(f.graph._outputs):
                self.fail(f"{where}: has {len(node._inputs)} inputs and {len(node._outputs)} outputs, local function "
                          f"takes {len(f.graph._inputs)} and gives {len(f.graph._outputs)}")
            return
        kind = opschema.op_kind(domain)
        if kind is opschema.OpKind.OPAQUE:
            return
        sig = opschema.schema(domain, node.op_type, version)
        if sig is None:
            if kind is opschema.OpKind.ONNX:
                at = f" at opset {version}" if version is not None else ""
                self.fail(f"{where}: op '{node.op_type}' is not defined in domain '{domain or 'ai.onnx'}'{at}")
            self.fail(f"{where}: op '{node.op_type}' is not registered in edgec domain '{domain}' (opschema.register_op)")
        if sig.deprecated:
            self.fail(f"{where}: op '{node.op_type}' is deprecated at opset {version} of domain '{domain or 'ai.onnx'}'")
        why = opschema.check_arity(sig, node._inputs, node._outputs)
        if why is not None:
            self.fail(f"{where}: {why}")
        if self.check_types and sig.constraints:
            self.check_constraints(node, sig, where)

    def allowed(self, sig: opschema.OpSignature, type_str: str) -> Optional[FrozenSet[DType]]:
        if type_str in sig.constraints:
            return sig.constraints[type_str]
        cached = self._fixed_types.get(type_str, False)
        if cached is False:
            cached = opschema._parse_allowed([type_str]) if type_str else None
            self._fixed_types[type_str] = cached
        return cached  # type: ignore[return-value]

    def check_constraints(self, node: Node, sig: opschema.OpSignature, where: str) -> None:
        bound: Dict[str, Tuple[DType, str]] = {}
        for what, params, actual in (("input", sig.inputs, node._inputs), ("output", sig.outputs, node._outputs)):
            if not params:
                continue
            for i, v in enumerate(actual):
                if v is None:
                    continue
                t = v.type
                if type(t) is not TensorType or t.dtype == DType.UNDEFINED:
                    continue
                p = opschema.formal_param(params, i)
                if p is None:
                    continue
                allowed = self.allowed(sig, p.type_str)
                if allowed is None:
                    continue
                dt = t.dtype
                if dt not in allowed:
                    names = ", ".join(sorted(d.short for d in allowed))
                    self.fail(f"{where}: {what} {i} '{v.name}' has element type {dt.short}; "
                              f"'{p.type_str}' allows {names}")
                if p.homogeneous or p.option is not opschema.ParamOption.VARIADIC:
                    if p.type_str in sig.constraints:
                        b = bound.get(p.type_str)
                        if b is None:
                            bound[p.type_str] = (dt, v.name)
                        elif b[0] != dt:
                            self.fail(f"{where}: {what} {i} '{v.name}' has element type {dt.short} but '{b[1]}' "
                                      f"binds {p.type_str} to {b[0].short}")

    # --- use lists ---------------------------------------------------------------------------------
    def check_uses(self) -> None:
        """Each value's use list must hold exactly the (node, index) slots that read it."""
        nodes = self.nodes
        use_count = self.use_count
        for v in self.values:
            uses = v._uses
            for n, i in uses:
                if n not in nodes or i >= len(n._inputs) or n._inputs[i] is not v:
                    self.fail(self.use_mismatch(v))
            if len(uses) != use_count.get(v, 0) or (len(uses) > 1 and len(set(uses)) != len(uses)):
                self.fail(self.use_mismatch(v))

    def use_mismatch(self, v: Value) -> str:
        """Describe how ``v``'s use list is wrong (failure path only)."""
        og = v.owner
        head = f"graph '{og.name if og is not None else '?'}': value '{v.name}'"
        uses = v._uses
        for n, i in uses:
            if n not in self.nodes:
                return f"{head}: its use list names node {_node_desc(n)}, which is not in the model"
            if i >= len(n._inputs) or n._inputs[i] is not v:
                return f"{head}: its use list names input {i} of node {_node_desc(n)}, which does not read it"
        seen: Set[Tuple[Node, int]] = set()
        for u in uses:
            if u in seen:
                return f"{head}: its use list holds input {u[1]} of node {_node_desc(u[0])} twice"
            seen.add(u)
        for n in self.nodes:
            for i, x in enumerate(n._inputs):
                if x is v and (n, i) not in seen:
                    g = n.graph.name if n.graph is not None else "?"
                    return f"graph '{g}', node {_node_desc(n)}: input {i} '{v.name}' is missing from the value's use list"
        return f"{head}: use list disagrees with node inputs"
