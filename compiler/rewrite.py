"""Declarative pattern rewriting: patterns over values, a rewrite function per rule, one driver.

A pattern describes how a value is computed::

    from edgec.rewrite import Op, Var, Const, RewriteRule, apply_rules

    # x*1 -> x
    mul_one = RewriteRule(
        "mul-by-one",
        Op("Mul", Var("x"), Const("one", lambda a: np.all(a == 1)), commute=True),
        lambda m, rw: m["x"] if m["x"].type == m.root.type else None,
    )
    apply_rules(model.graph, [mul_one])

The rewrite function gets the :class:`Match` and a :class:`Rewriter` and returns the value(s) that
replace the root node's outputs, or ``None`` when the rule does not apply after all. Nodes inside a
match (all but the root) must have no users outside the match, so a rewrite never drops a value
another node still needs; dead nodes left behind are removed by the driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .ir import Graph, Model, Node, Tensor, Value

# --------------------------------------------------------------------------------------------
# Patterns


class Pattern:
    """Matches a Value; binds names in a :class:`Match`."""

    def match(self, value: Optional[Value], m: "Match") -> bool:
        raise NotImplementedError

    def root_ops(self) -> Optional[Tuple[str, ...]]:
        """Op types the root can have (None = any); lets the driver index rules by op."""
        return None


def _bind(m: "Match", name: Optional[str], value: Any) -> bool:
    if name is None:
        return True
    if name in m.bindings:
        return m.bindings[name] is value
    m.bindings[name] = value
    return True


@dataclass
class Var(Pattern):
    """Any present value; the same name twice must be the same value. ``check(value)`` may refine."""

    name: Optional[str] = None
    check: Optional[Callable[[Value], bool]] = None

    def match(self, value, m):
        if value is None or (self.check is not None and not self.check(value)):
            return False
        return _bind(m, self.name, value)


@dataclass
class Absent(Pattern):
    """An omitted optional input."""

    def match(self, value, m):
        return value is None


@dataclass
class Const(Pattern):
    """A constant: an initializer that is not a graph input, or the output of a Constant node.

    ``check(array)`` may refine; the array is bound as ``name`` + nothing, the value as ``name``.
    """

    name: Optional[str] = None
    check: Optional[Callable[[np.ndarray], bool]] = None

    def match(self, value, m):
        arr = constant_value(value)
        if arr is None or (self.check is not None and not self.check(arr)):
            return False
        return _bind(m, self.name, value)


@dataclass
class Either(Pattern):
    """The first alternative that matches."""

    options: Sequence[Pattern]

    def match(self, value, m):
        for p in self.options:
            saved = m.save()
            if p.match(value, m):
                return True
            m.restore(saved)
        return False

    def root_ops(self):
        ops: List[str] = []
        for p in self.options:
            r = p.root_ops()
            if r is None:
                return None
            ops.extend(r)
        return tuple(ops)


@dataclass
class Op(Pattern):
    """A value produced by a node of ``op`` (one op type or a tuple of them) in ``domain``.

    ``inputs`` match the node's inputs in order (missing trailing inputs count as omitted);
    ``extra_inputs`` lets the node have more inputs than listed; ``commute`` tries both orders of
    a two-input op; ``attrs`` maps attribute names to required values or predicates; ``output``
    selects which node output the value must be; ``name`` binds the node.
    """

    op: Union[str, Tuple[str, ...]]
    inputs: Tuple[Pattern, ...] = ()
    name: Optional[str] = None
    domain: str = ""
    attrs: Dict[str, Any] = field(default_factory=dict)
    commute: bool = False
    extra_inputs: bool = False
    output: int = 0

    def __init__(self, op, *inputs: Pattern, name=None, domain="", attrs=None, commute=False,
                 extra_inputs=False, output=0) -> None:
        self.op = op
        self.inputs = tuple(inputs)
        self.name = name
        self.domain = domain
        self.attrs = dict(attrs or {})
        self.commute = commute
        self.extra_inputs = extra_inputs
        self.output = output

    def root_ops(self):
        return (self.op,) if isinstance(self.op, str) else tuple(self.op)

    def match(self, value, m):
        if value is None:
            return False
        node = value.producer
        if node is None or node.domain != self.domain or value.index != self.output:
            return False
        if node.op_type not in self.root_ops():
            return False
        for k, want in self.attrs.items():
            have = node.attr(k)
            if callable(want):
                if not want(have):
                    return False
            elif have != want:
                return False
        ins = list(node.inputs)
        if len(ins) > len(self.inputs) and not self.extra_inputs:
            if any(v is not None for v in ins[len(self.inputs):]):
                return False
        orders = [list(range(len(self.inputs)))]
        if self.commute and len(self.inputs) == 2:
            orders.append([1, 0])
        for order in orders:
            saved = m.save()
            if all(p.match(ins[j] if j < len(ins) else None, m) for p, j in zip(self.inputs, order)):
                if _bind(m, self.name, node):
                    m.nodes.append(node)
                    return True
            m.restore(saved)
        return False


def constant_value(value: Optional[Value]) -> Optional[np.ndarray]:
    """The array of a constant value (initializer or Constant-node output with a tensor), else None."""
    if value is None:
        return None
    if value.producer is None:
        if value.is_constant() and isinstance(value.const, Tensor):
            return value.const.numpy()
        return None
    node = value.producer
    if node.op_type != "Constant" or node.domain != "":
        return None
    t = node.attr("value")
    if isinstance(t, Tensor):
        return t.numpy()
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in node.attrs:
            return np.array(node.attr(key), dtype=dtype)
    return None


# --------------------------------------------------------------------------------------------
# Matches and rewriting


class Match:
    """Names bound by a pattern (values and nodes), the matched nodes, and the root node."""

    def __init__(self, root: Node) -> None:
        self.root = root
        self.bindings: Dict[str, Any] = {}
        self.nodes: List[Node] = []

    def __getitem__(self, name: str) -> Any:
        return self.bindings[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.bindings.get(name, default)

    def const(self, name: str) -> np.ndarray:
        """The array of a bound constant."""
        arr = constant_value(self.bindings[name])
        if arr is None:
            raise KeyError(f"'{name}' is not a constant")
        return arr

    def save(self):
        return dict(self.bindings), len(self.nodes)

    def restore(self, saved) -> None:
        self.bindings, n = dict(saved[0]), saved[1]
        del self.nodes[n:]


class Rewriter:
    """Builds replacement nodes just before the matched root and records what a rule did."""

    def __init__(self, graph: Graph, anchor: Node, rule: str) -> None:
        self.graph = graph
        self.anchor = anchor
        self.rule = rule
        self.created: List[Node] = []
        self.constants: List[Value] = []

    def op(self, op_type: str, inputs: Sequence[Optional[Value]], attrs: Optional[Dict[str, Any]] = None, *,
           domain: str = "", outputs: int = 1, name: str = "", type=None) -> Union[Value, Tuple[Value, ...]]:
        """Insert a new node before the root; returns its output (or outputs when ``outputs`` > 1)."""
        node = Node(op_type, inputs, outputs, attrs, domain=domain, name=name or self.graph.new_name(
            (self.anchor.name or op_type) + "/" + op_type, node_name=True))
        node.metadata_props["edgec.rule"] = self.rule
        self.graph.insert_before(self.anchor, node)
        self.created.append(node)
        if type is not None:
            node.outputs[0].type = type
        return node.outputs[0] if outputs == 1 else node.outputs

    def const(self, array: Union[np.ndarray, Tensor], name: str = "const") -> Value:
        """A new initializer in the root's graph."""
        value = self.graph.add_constant(array, name)
        self.constants.append(value)
        return value


Rewrite = Callable[[Match, Rewriter], Union[None, Value, Sequence[Optional[Value]]]]


@dataclass
class RewriteRule:
    """A named pattern plus the function that rewrites a match."""

    name: str
    pattern: Pattern
    rewrite: Rewrite
    #: Nodes of the match other than the root may have users outside the match (they stay).
    allow_shared: bool = False

    def try_rewrite(self, node: Node) -> bool:
        """Match at ``node``'s first output and rewrite; True if the graph changed."""
        graph = node.graph
        if graph is None or not node.outputs or node.outputs[0] is None:
            return False
        out_index = getattr(self.pattern, "output", 0)
        root_value = node.outputs[out_index] if out_index < len(node.outputs) else None
        m = Match(node)
        if not self.pattern.match(root_value, m):
            return False
        if not self.allow_shared and not _interior_private(m):
            return False
        rw = Rewriter(graph, node, self.name)
        result = self.rewrite(m, rw)
        if result is None:
            for n in reversed(rw.created):  # the rule changed its mind: undo what it built
                graph.remove(n)
            for c in rw.constants:
                if not c.has_uses():
                    graph.remove_initializer(c)
            return False
        new_values = [result] if isinstance(result, Value) else list(result)
        for old, new in zip(node.outputs, new_values):
            if old is not None and new is not None and new is not old:
                if not can_replace(old, new):  # keep the graph's interface: an Identity takes the name
                    new = rw.op("Identity", [new], type=old.type)
                if new.type is None:
                    new.type = old.type
                old.replace_all_uses_with(new)
        for n in reversed(m.nodes):  # consumers were matched after their producers
            if n.graph is graph and not any(v is not None and v.has_uses() for v in n.outputs):
                graph.remove(n)
        return True


def can_replace(old: Value, new: Value) -> bool:
    """True when ``old.replace_all_uses_with(new)`` keeps every graph interface unchanged.

    A graph output can move to ``new`` only if ``new`` can take the output's name: ``new`` must be
    computed by a node of that same graph and be no graph input, initializer or output itself.
    """
    outs = old._graph_outputs()
    if not outs:
        return True
    if len(outs) > 1 or new.is_graph_input() or new.is_initializer() or new._out_of:
        return False
    return new.producer is not None and new.producer.graph is outs[0]


def _interior_private(m: Match) -> bool:
    """Every matched node except the root is used only by matched nodes and is no graph output."""
    inside = {id(n) for n in m.nodes}
    for n in m.nodes:
        if n is m.root:
            continue
        for v in n.outputs:
            if v is None:
                continue
            if v.is_graph_output():
                return False
            if any(id(user) not in inside for user, _ in v.uses()):
                return False
            for user, _ in v.uses():
                if user.graph is not n.graph:  # captured by a subgraph
                    return False
    return True


@dataclass
class RewriteStats:
    """How often each rule fired."""

    fired: Dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.fired)


def apply_rules(target: Union[Model, Graph], rules: Iterable[RewriteRule], *, max_iterations: int = 20,
                subgraphs: bool = True) -> RewriteStats:
    """Apply rules greedily, in order of priority (list order), until none fires or the cap is hit.

    Rules are indexed by their root op so each node only tries the rules that can match it.
    """
    rules = list(rules)
    by_op: Dict[Optional[str], List[RewriteRule]] = {}
    for r in rules:
        ops = r.pattern.root_ops()
        for op in ops if ops is not None else (None,):
            by_op.setdefault(op, []).append(r)
    stats = RewriteStats()
    graphs = list(target.all_graphs()) if isinstance(target, Model) else (
        list(target.all_graphs()) if subgraphs else [target])
    for graph in graphs:
        for _ in range(max_iterations):
            changed = False
            for node in graph:
                candidates = by_op.get(node.op_type, []) + by_op.get(None, [])
                for rule in candidates:
                    if node.graph is None:
                        break
                    if rule.try_rewrite(node):
                        stats.fired[rule.name] = stats.fired.get(rule.name, 0) + 1
                        changed = True
                        break
            if not changed:
                break
    return stats
