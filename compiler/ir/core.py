"""The IR: Values (SSA, with use lists), Nodes, Graphs (with nested subgraphs), Functions and Models.

Mutation goes through methods that keep use-def chains in sync: ``Node.set_input``,
``Value.replace_all_uses_with``, ``Graph.remove``. Iterating a graph while nodes are removed or
inserted is safe: removed nodes are skipped, nodes inserted after the cursor are visited.
"""

from __future__ import annotations

import enum
import itertools
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .dtypes import DType
from .tensor import ArrayTensor, Tensor
from .types import Shape, TensorType, Type


class AttrKind(enum.IntEnum):
    """Attribute kinds; values are ``AttributeProto.AttributeType`` numbers."""

    UNDEFINED = 0
    FLOAT = 1
    INT = 2
    STRING = 3
    TENSOR = 4
    GRAPH = 5
    FLOATS = 6
    INTS = 7
    STRINGS = 8
    TENSORS = 9
    GRAPHS = 10
    SPARSE_TENSOR = 11
    SPARSE_TENSORS = 12
    TYPE_PROTO = 13
    TYPE_PROTOS = 14


class SparseTensor:
    """An ONNX SparseTensor: values, indices (COO, linear or per-dim) and the dense dims."""

    def __init__(self, values: Tensor, indices: Tensor, dims: Sequence[int]) -> None:
        self.values = values
        self.indices = indices
        self.dims = tuple(int(d) for d in dims)

    @property
    def dtype(self) -> DType:
        return self.values.dtype

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.dims, dtype=self.values.dtype.numpy)
        idx = self.indices.numpy()
        vals = self.values.numpy()
        if idx.ndim == 1:
            out.reshape(-1)[idx] = vals
        else:
            out[tuple(idx.T)] = vals
        return out

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.indices.nbytes


class Attr:
    """A node attribute: kind plus a Python value, or a reference to a function attribute."""

    __slots__ = ("name", "kind", "value", "ref", "doc_string")

    def __init__(self, name: str, kind: AttrKind, value: Any, ref: Optional[str] = None, doc_string: str = "") -> None:
        self.name = name
        self.kind = AttrKind(kind)
        self.value = value
        self.ref = ref
        self.doc_string = doc_string

    @staticmethod
    def infer(name: str, value: Any) -> "Attr":
        """An attribute whose kind follows from a Python value."""
        return Attr(name, infer_attr_kind(value), _normalize_attr_value(value))

    def graphs(self) -> List["Graph"]:
        if self.kind == AttrKind.GRAPH:
            return [self.value]
        if self.kind == AttrKind.GRAPHS:
            return list(self.value)
        return []

    def __repr__(self) -> str:
        return f"Attr({self.name}={self.value!r})"


def infer_attr_kind(value: Any) -> AttrKind:
    if isinstance(value, Attr):
        return value.kind
    if isinstance(value, (bool, int, np.integer)):
        return AttrKind.INT
    if isinstance(value, (float, np.floating)):
        return AttrKind.FLOAT
    if isinstance(value, (str, bytes)):
        return AttrKind.STRING
    if isinstance(value, Tensor):
        return AttrKind.TENSOR
    if isinstance(value, np.ndarray):
        return AttrKind.TENSOR
    if isinstance(value, Graph):
        return AttrKind.GRAPH
    if isinstance(value, SparseTensor):
        return AttrKind.SPARSE_TENSOR
    if isinstance(value, Type):
        return AttrKind.TYPE_PROTO
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("cannot infer the kind of an empty list attribute; pass Attr(name, kind, [])")
        if any(isinstance(v, (float, np.floating)) for v in value):
            return AttrKind.FLOATS
        return _LIST_KIND[infer_attr_kind(value[0])]
    raise TypeError(f"unsupported attribute value {value!r}")


_LIST_KIND = {
    AttrKind.INT: AttrKind.INTS, AttrKind.FLOAT: AttrKind.FLOATS, AttrKind.STRING: AttrKind.STRINGS,
    AttrKind.TENSOR: AttrKind.TENSORS, AttrKind.GRAPH: AttrKind.GRAPHS,
    AttrKind.SPARSE_TENSOR: AttrKind.SPARSE_TENSORS, AttrKind.TYPE_PROTO: AttrKind.TYPE_PROTOS,
}


def _normalize_attr_value(value: Any) -> Any:
    if isinstance(value, (bool, np.integer)):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return ArrayTensor(value)
    if isinstance(value, (list, tuple)):
        kind = infer_attr_kind(value)
        if kind == AttrKind.FLOATS:
            return [float(v) for v in value]
        if kind == AttrKind.INTS:
            return [int(v) for v in value]
        return [_normalize_attr_value(v) for v in value]
    return value


class Value:
    """An SSA value: produced by one node output, or a graph input, or a constant (initializer)."""

    __slots__ = ("name", "type", "const", "_producer", "_index", "_uses", "_owner", "_out_of", "doc_string", "metadata_props", "meta")

    def __init__(self, name: str = "", type: Optional[Type] = None, const: Optional[Union[Tensor, SparseTensor]] = None) -> None:
        self.name = name
        self.type = type
        self.const = const
        self._producer: Optional[Node] = None
        self._index = -1
        self._uses: List[Tuple[Node, int]] = []
        self._owner: Optional[Graph] = None  # graph that lists it as input or initializer
        self._out_of: List[Graph] = []  # graphs that list it as an output
        self.doc_string = ""
        self.metadata_props: Dict[str, str] = {}
        self.meta: Dict[str, Any] = {}

    # --- definition -------------------------------------------------------------------------
    @property
    def producer(self) -> Optional["Node"]:
        """The node that computes this value, if any."""
        return self._producer

    @property
    def index(self) -> int:
        """Output index in the producer (-1 for inputs and constants)."""
        return self._index

    @property
    def owner(self) -> Optional["Graph"]:
        """The graph where this value is defined."""
        return self._producer.graph if self._producer is not None else self._owner

    def is_constant(self) -> bool:
        """True for an initializer that is not also a graph input (whose value the caller may override)."""
        return self.const is not None and not self.is_graph_input()

    def is_graph_input(self) -> bool:
        return self._owner is not None and self in self._owner._input_set

    def is_initializer(self) -> bool:
        return self.const is not None and self._producer is None

    def is_graph_output(self) -> bool:
        return bool(self._graph_outputs())

    def _graph_outputs(self) -> List["Graph"]:
        return list(dict.fromkeys(self._out_of))

    # --- uses ------------------------------------------------------------------------------
    def uses(self) -> List[Tuple["Node", int]]:
        """(node, input index) of every use, in the order they were made."""
        return list(self._uses)

    def consumers(self) -> List["Node"]:
        """The distinct nodes that use this value."""
        seen: Dict[int, Node] = {}
        for n, _ in self._uses:
            seen.setdefault(id(n), n)
        return list(seen.values())

    def has_uses(self) -> bool:
        return bool(self._uses) or self.is_graph_output()

    def replace_all_uses_with(self, other: "Value", *, graph_outputs: bool = True) -> None:
        """Make every user of this value use ``other``; graph outputs follow unless told not to.

        A graph output keeps its public name: ``other`` takes the name when it is computed by a node
        of that graph and is no input, initializer or output itself; otherwise an Identity node
        carries the old name, so the model's interface never changes.
        """
        if other is self:
            return
        for node, i in list(self._uses):
            node.set_input(i, other)
        if not graph_outputs:
            return
        for g in self._graph_outputs():
            for i, o in enumerate(g.outputs):
                if o is not self:
                    continue
                old = self.name
                self.name = g.new_name(old + "_replaced")
                if other.producer is not None and other.producer.graph is g and not other._out_of:
                    g.set_output(i, other)
                    other.name = old
                else:
                    ident = Node("Identity", [other], [Value(old, other.type or self.type)], name=g.new_name("Identity", node_name=True))
                    g.append(ident)
                    g.set_output(i, ident.outputs[0])

    # --- type shorthands ---------------------------------------------------------------------
    @property
    def dtype(self) -> Optional[DType]:
        return self.type.dtype if isinstance(self.type, TensorType) else None

    @property
    def shape(self) -> Optional[Shape]:
        return self.type.shape if isinstance(self.type, TensorType) else None

    def __repr__(self) -> str:
        return f"%{self.name}"


class Node:
    """One operation: op type in a domain, ordered inputs (None = omitted), outputs and attributes."""

    def __init__(
        self,
        op_type: str,
        inputs: Sequence[Optional[Value]] = (),
        outputs: Union[int, Sequence[Optional[Union[str, Value]]]] = 1,
        attrs: Optional[Dict[str, Any]] = None,
        *,
        domain: str = "",
        name: str = "",
        overload: str = "",
    ) -> None:
        self.op_type = op_type
        self.domain = "" if domain == "ai.onnx" else domain
        self.overload = overload
        self.name = name
        self.doc_string = ""
        self.metadata_props: Dict[str, str] = {}
        self.meta: Dict[str, Any] = {}
        self.attrs: Dict[str, Attr] = {}
        self.graph: Optional[Graph] = None
        self._prev: Optional[Node] = None
        self._next: Optional[Node] = None
        self._inputs: List[Optional[Value]] = []
        for v in inputs:
            self.append_input(v)
        if isinstance(outputs, int):
            outputs = [""] * outputs
        self._outputs: List[Optional[Value]] = []
        for o in outputs:
            self._add_output(o)
        for k, v in (attrs or {}).items():
            self.set_attr(k, v)

    # --- inputs ------------------------------------------------------------------------------
    @property
    def inputs(self) -> Tuple[Optional[Value], ...]:
        return tuple(self._inputs)

    def set_input(self, i: int, value: Optional[Value]) -> None:
        old = self._inputs[i]
        if old is value:
            return
        if old is not None:
            old._uses.remove((self, i))
        self._inputs[i] = value
        if value is not None:
            value._uses.append((self, i))

    def append_input(self, value: Optional[Value]) -> None:
        self._inputs.append(None)
        self.set_input(len(self._inputs) - 1, value)

    def set_inputs(self, values: Sequence[Optional[Value]]) -> None:
        """Replace the whole input list."""
        self._drop_inputs()
        for v in values:
            self.append_input(v)

    def _drop_inputs(self) -> None:
        for i in range(len(self._inputs)):
            self.set_input(i, None)
        self._inputs = []

    def input(self, i: int) -> Optional[Value]:
        """Input ``i`` or None when absent (omitted optional inputs included)."""
        return self._inputs[i] if i < len(self._inputs) else None

    # --- outputs -----------------------------------------------------------------------------
    @property
    def outputs(self) -> Tuple[Optional[Value], ...]:
        return tuple(self._outputs)

    def _add_output(self, o: Optional[Union[str, Value]]) -> None:
        if o is None:
            self._outputs.append(None)
            return
        v = o if isinstance(o, Value) else Value(o)
        if v._producer is not None and v._producer is not self:
            raise ValueError(f"value {v.name!r} already has a producer")
        v._producer = self
        v._index = len(self._outputs)
        self._outputs.append(v)

    def output(self, i: int = 0) -> Optional[Value]:
        return self._outputs[i] if i < len(self._outputs) else None

    # --- attributes --------------------------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        """The Python value of an attribute, or ``default``."""
        a = self.attrs.get(name)
        return default if a is None else a.value

    def set_attr(self, name: str, value: Any, kind: Optional[AttrKind] = None) -> None:
        if isinstance(value, Attr):
            a = value
            a.name = name
        elif kind is not None:
            a = Attr(name, kind, value)
        else:
            a = Attr.infer(name, value)
        for g in a.graphs():
            g.parent = self
        self.attrs[name] = a

    def subgraphs(self) -> List["Graph"]:
        """The graphs held by this node's attributes (If branches, Loop body, ...)."""
        out: List[Graph] = []
        for a in self.attrs.values():
            out.extend(a.graphs())
        return out

    @property
    def qualified_op(self) -> str:
        """``domain::op_type`` (``onnx::Conv`` for the default domain)."""
        return f"{self.domain or 'onnx'}::{self.op_type}"

    def __repr__(self) -> str:
        return f"Node({self.qualified_op}, name={self.name!r})"


class Graph:
    """An ordered list of nodes with inputs, outputs and initializers; may be a subgraph of a node."""

    def __init__(self, name: str = "", inputs: Sequence[Value] = (), outputs: Sequence[Value] = ()) -> None:
        self.name = name
        self.doc_string = ""
        self.metadata_props: Dict[str, str] = {}
        self.parent: Optional[Node] = None  # the node whose attribute holds this graph
        self.meta: Dict[str, Any] = {}  # front-end extras kept verbatim (e.g. ONNX quantization_annotation)
        self.model: Optional[Model] = None
        self._inputs: List[Value] = []
        self._input_set: set = set()
        self._outputs: List[Value] = []
        self.initializers: Dict[str, Value] = {}
        self._head: Optional[Node] = None
        self._tail: Optional[Node] = None
        self._len = 0
        self._names: Optional[set] = None
        self._counter = itertools.count()
        for v in inputs:
            self.add_input(v)
        for v in outputs:
            self.add_output(v)

    # --- inputs and outputs -------------------------------------------------------------------
    @property
    def inputs(self) -> Tuple[Value, ...]:
        return tuple(self._inputs)

    def add_input(self, value: Value) -> Value:
        value._owner = self
        self._inputs.append(value)
        self._input_set.add(value)
        self._note_name(value.name)
        return value

    def remove_input(self, value: Value) -> None:
        self._inputs.remove(value)
        self._input_set.discard(value)

    @property
    def outputs(self) -> Tuple[Value, ...]:
        return tuple(self._outputs)

    def add_output(self, value: Value) -> None:
        self._outputs.append(value)
        value._out_of.append(self)

    def set_output(self, i: int, value: Value) -> None:
        old = self._outputs[i]
        old._out_of.remove(self)
        self._outputs[i] = value
        value._out_of.append(self)

    def remove_output(self, i: int) -> None:
        old = self._outputs.pop(i)
        old._out_of.remove(self)

    # --- initializers ------------------------------------------------------------------------
    def add_initializer(self, value: Value) -> Value:
        """Register a constant value (``value.const`` set) under its name."""
        if value.const is None:
            raise ValueError(f"initializer {value.name!r} has no data")
        if value.type is None and isinstance(value.const, Tensor):
            value.type = TensorType(value.const.dtype, Shape(value.const.dims))
        value._owner = self
        self.initializers[value.name] = value
        self._note_name(value.name)
        return value

    def add_constant(self, array: Union[np.ndarray, Tensor], name: str = "const") -> Value:
        """A new initializer with a fresh name from an array or tensor."""
        tensor = array if isinstance(array, Tensor) else ArrayTensor(np.asarray(array))
        v = Value(self.new_name(name), TensorType(tensor.dtype, Shape(tensor.dims)), tensor)
        return self.add_initializer(v)

    def remove_initializer(self, value: Value) -> None:
        del self.initializers[value.name]
        if not value.is_graph_input():
            value._owner = None

    # --- node list ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        """Nodes in order; safe under removal and insertion during iteration."""
        node = self._head
        while node is not None:
            if node.graph is self:
                yield node
            nxt = node._next
            # A node removed while we stood on it keeps its forward link; skip dead ones.
            while nxt is not None and nxt.graph is not self:
                nxt = nxt._next
            node = nxt

    def __len__(self) -> int:
        return self._len

    @property
    def nodes(self) -> List[Node]:
        """A snapshot list of the nodes."""
        return list(self)

    def append(self, node: Node) -> Node:
        return self._link(node, self._tail, None)

    def insert_before(self, anchor: Node, node: Node) -> Node:
        return self._link(node, anchor._prev, anchor)

    def insert_after(self, anchor: Node, node: Node) -> Node:
        return self._link(node, anchor, anchor._next)

    def _link(self, node: Node, prev: Optional[Node], nxt: Optional[Node]) -> Node:
        if node.graph is not None:
            raise ValueError(f"{node} is already in a graph")
        node.graph = self
        node._prev, node._next = prev, nxt
        if prev is None:
            self._head = node
        else:
            prev._next = node
        if nxt is None:
            self._tail = node
        else:
            nxt._prev = node
        self._len += 1
        if not node.name:
            node.name = self.new_name(node.op_type, node_name=True)
        for v in node.outputs:
            if v is not None:
                if not v.name:
                    v.name = self.new_name(node.op_type.lower())
                self._note_name(v.name)
        return node

    def remove(self, node: Node, *, drop_inputs: bool = True) -> None:
        """Unlink a node. Its outputs must be unused unless the caller rewires them after."""
        if node.graph is not self:
            raise ValueError(f"{node} is not in graph {self.name!r}")
        prev, nxt = node._prev, node._next
        if prev is None:
            self._head = nxt
        else:
            prev._next = nxt
        if nxt is None:
            self._tail = prev
        else:
            nxt._prev = prev
        node.graph = None
        node._prev = None  # keep _next so an iterator standing on it can move on
        self._len -= 1
        if drop_inputs:
            node._drop_inputs()

    def move_to_end(self, node: Node) -> None:
        self.remove(node, drop_inputs=False)
        self.append(node)

    def set_nodes(self, nodes: Iterable[Node]) -> None:
        """Reorder: the graph's node list becomes exactly ``nodes`` (same set, new order)."""
        nodes = list(nodes)
        for n in list(self):
            self.remove(n, drop_inputs=False)
        for n in nodes:
            n.graph = None
            n._next = None
            self.append(n)

    # --- traversal ---------------------------------------------------------------------------
    def all_nodes(self) -> Iterator[Node]:
        """Every node, including those of nested subgraphs (pre-order)."""
        for n in self:
            yield n
            for g in n.subgraphs():
                yield from g.all_nodes()

    def all_graphs(self) -> Iterator["Graph"]:
        """This graph and every nested subgraph."""
        yield self
        for n in self:
            for g in n.subgraphs():
                yield from g.all_graphs()

    def values(self) -> Iterator[Value]:
        """Every value defined in this graph (not nested ones): inputs, initializers, node outputs."""
        seen = set()
        for v in itertools.chain(self._inputs, self.initializers.values()):
            if id(v) not in seen:
                seen.add(id(v))
                yield v
        for n in self:
            for v in n.outputs:
                if v is not None:
                    yield v

    @property
    def root(self) -> "Graph":
        g = self
        while g.parent is not None and g.parent.graph is not None:
            g = g.parent.graph
        return g

    # --- names -------------------------------------------------------------------------------
    def _note_name(self, name: str) -> None:
        names = self.root._names
        if names is not None and name:
            names.add(name)

    def new_name(self, hint: str = "v", *, node_name: bool = False) -> str:
        """A name not used by any value or node anywhere in the enclosing model graph."""
        root = self.root
        if root._names is None:
            root._names = set()
            for g in root.all_graphs():
                for v in g.values():
                    root._names.add(v.name)
                for n in g:
                    root._names.add(n.name)
        hint = hint or "v"
        name = hint
        while name in root._names:
            name = f"{hint}_{next(root._counter)}"
        root._names.add(name)
        return name

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self)} nodes)"


class Function:
    """An ONNX local function: a graph body with attribute parameters and its own opset imports."""

    def __init__(self, domain: str, name: str, graph: Graph, *, overload: str = "",
                 attributes: Sequence[str] = (), attribute_defaults: Optional[Dict[str, Attr]] = None,
                 opset_imports: Optional[Dict[str, int]] = None) -> None:
        self.domain = domain
        self.name = name
        self.overload = overload
        self.graph = graph
        self.attributes = list(attributes)
        self.attribute_defaults: Dict[str, Attr] = dict(attribute_defaults or {})
        self.opset_imports: Dict[str, int] = dict(opset_imports or {})
        self.doc_string = ""
        self.metadata_props: Dict[str, str] = {}

    @property
    def key(self) -> Tuple[str, str, str]:
        return (self.domain, self.name, self.overload)


class Model:
    """A whole model: the main graph, opset imports, local functions and metadata."""

    def __init__(self, graph: Graph, opset_imports: Optional[Dict[str, int]] = None, *, ir_version: int = 10) -> None:
        self.graph = graph
        graph.model = self
        self.opset_imports: Dict[str, int] = dict(opset_imports or {"": 21})
        self.ir_version = ir_version
        self.producer_name = ""
        self.producer_version = ""
        self.domain = ""
        self.model_version = 0
        self.doc_string = ""
        self.metadata_props: Dict[str, str] = {}
        self.functions: Dict[Tuple[str, str, str], Function] = {}
        self.training_info: List[bytes] = []  # serialized TrainingInfoProto, carried verbatim
        self.base_dir: Optional[str] = None  # directory the model was read from (external data)
        self.meta: Dict[str, Any] = {}  # front-end extras kept verbatim (e.g. ONNX configuration)

    def opset(self, domain: str = "") -> Optional[int]:
        """The imported version of a domain (``''`` and ``'ai.onnx'`` are the same)."""
        if domain == "ai.onnx":
            domain = ""
        return self.opset_imports.get(domain)

    def all_graphs(self) -> Iterator[Graph]:
        """The main graph, function bodies, and all their nested subgraphs."""
        yield from self.graph.all_graphs()
        for f in self.functions.values():
            yield from f.graph.all_graphs()

    def __repr__(self) -> str:
        return f"Model({self.graph.name!r}, opsets={self.opset_imports})"
