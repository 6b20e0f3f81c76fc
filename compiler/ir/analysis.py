"""Graph analyses: networkx views, topological order, cycles and dominators.

All analyses work on one graph's top-level nodes. A node that holds subgraphs depends on every
value its subgraphs capture from outside them (an *implicit input*); those dependencies are edges
like ordinary inputs, marked ``capture=True``.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Set, Tuple

from ..errors import VerificationError
from .core import Graph, Node, Value

if TYPE_CHECKING:  # networkx is imported where it is used: importing it costs a quarter second
    import networkx as nx

__all__ = [
    "captured_values", "node_dependencies", "to_networkx", "toposort", "find_cycle", "dominators",
    "post_dominators",
]


def _nested_graphs(node: Node) -> Set[int]:
    out: Set[int] = set()
    for sg in node.subgraphs():
        for g in sg.all_graphs():
            out.add(id(g))
    return out


def _defining_graph(v: Value) -> Optional[Graph]:
    return v._producer.graph if v._producer is not None else v._owner


def captured_values(node: Node) -> List[Value]:
    """Values that ``node``'s subgraphs (at any depth) use but that are defined outside them.

    In first-use order, without duplicates; values defined nowhere are included (they are captures
    of something the verifier will reject).
    """
    if not node.attrs:
        return []
    inner = _nested_graphs(node)
    if not inner:
        return []
    seen: Set[Value] = set()
    out: List[Value] = []

    def note(v: Optional[Value]) -> None:
        if v is None or v in seen:
            return
        g = _defining_graph(v)
        if g is None or id(g) not in inner:
            seen.add(v)
            out.append(v)

    for sg in node.subgraphs():
        for g in sg.all_graphs():
            for n in g:
                for v in n._inputs:
                    note(v)
            for v in g._outputs:
                note(v)
    return out


def node_dependencies(node: Node) -> Iterator[Tuple[Value, Optional[int]]]:
    """``(value, input index)`` for every value the node reads; captures have index None."""
    for i, v in enumerate(node._inputs):
        if v is not None:
            yield v, i
    for v in captured_values(node):
        yield v, None


def to_networkx(graph: Graph) -> "nx.MultiDiGraph":
    """A ``MultiDiGraph`` of the graph's top-level nodes (the ``Node`` objects themselves).

    One edge ``producer -> consumer`` per input slot, with data ``value`` (the Value) and ``index``
    (the input index; None for a value captured by the consumer's subgraphs, which also carry
    ``capture=True``). Graph inputs, initializers and outer-scope values are not graph nodes; the
    node data ``pos`` is the node's position in the graph's list.
    """
    import networkx as nx  # imported on use: it is slow to import
    g = nx.MultiDiGraph()
    for pos, n in enumerate(graph):
        g.add_node(n, pos=pos)
    for n in graph:
        for v, i in node_dependencies(n):
            p = v._producer
            if p is not None and p.graph is graph:
                if i is None:
                    g.add_edge(p, n, value=v, index=None, capture=True)
                else:
                    g.add_edge(p, n, value=v, index=i, capture=False)
    return g


def _predecessors(graph: Graph) -> Tuple[List[Node], Dict[Node, int], List[List[int]]]:
    """Nodes in list order, their positions, and each node's distinct producer positions."""
    nodes = list(graph)
    pos = {n: k for k, n in enumerate(nodes)}
    preds: List[List[int]] = []
    for n in nodes:
        ps: Set[int] = set()
        for v, _ in node_dependencies(n):
            p = v._producer
            if p is not None:
                k = pos.get(p)
                if k is not None:
                    ps.add(k)
        preds.append(sorted(ps))
    return nodes, pos, preds


def toposort(graph: Graph) -> List[Node]:
    """The graph's top-level nodes in a topological order (stable Kahn's algorithm).

    Among the nodes ready at any step the one earliest in the current list comes first, so an
    already-sorted graph keeps its order. Subgraph captures count as dependencies. Raises
    ``VerificationError`` naming a node on a cycle. The graph is not changed; apply the order with
    ``graph.set_nodes(toposort(graph))``.
    """
    nodes, _, preds = _predecessors(graph)
    n = len(nodes)
    indeg = [len(p) for p in preds]
    succs: List[List[int]] = [[] for _ in range(n)]
    for k, ps in enumerate(preds):
        for p in ps:
            succs[p].append(k)
    ready = [k for k in range(n) if indeg[k] == 0]
    heapq.heapify(ready)
    order: List[Node] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(nodes[k])
        for s in succs[k]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(ready, s)
    if len(order) != n:
        cycle = find_cycle(graph) or [nodes[k] for k in range(n) if indeg[k] > 0]
        names = " -> ".join(f"'{c.name}'" for c in cycle)
        first = cycle[0]
        raise VerificationError(f"graph '{graph.name}': node '{first.name}' ({first.qualified_op}) is on a cycle: {names}")
    return order


def find_cycle(graph: Graph) -> Optional[List[Node]]:
    """The nodes of one dependency cycle among the graph's top-level nodes (in edge order), or None."""
    import networkx as nx  # imported on use: it is slow to import
    nodes, _, preds = _predecessors(graph)
    dg = nx.DiGraph()
    dg.add_nodes_from(range(len(nodes)))
    for k, ps in enumerate(preds):
        for p in ps:
            dg.add_edge(p, k)
    try:
        edges = nx.find_cycle(dg)
    except nx.NetworkXNoCycle:
        return None
    return [nodes[u] for u, _ in edges]


def _idom(dg: "nx.DiGraph", start) -> Dict:
    import networkx as nx  # imported on use: it is slow to import
    idom = dict(nx.immediate_dominators(dg, start))
    idom.pop(start, None)  # older networkx maps start to itself
    return idom


def dominators(graph: Graph) -> Dict[Node, Optional[Node]]:
    """The immediate dominator of each top-level node; None when only the graph's entry dominates it.

    A virtual entry feeds every node that reads a graph input, an initializer, an outer-scope value,
    or nothing at all; node ``d`` dominates ``n`` when every dependency path from the entry to ``n``
    passes through ``d``.
    """
    import networkx as nx  # imported on use: it is slow to import
    nodes, _, preds = _predecessors(graph)
    dg = nx.DiGraph()
    src = -1
    dg.add_node(src)
    for k, n in enumerate(nodes):
        dg.add_node(k)
        for p in preds[k]:
            dg.add_edge(p, k)
        external = not preds[k]
        if not external:
            for v, _ in node_dependencies(n):
                p = v._producer
                if p is None or p.graph is not graph:
                    external = True
                    break
        if external:
            dg.add_edge(src, k)
    idom = _idom(dg, src)
    return {nodes[k]: (None if d == src else nodes[d]) for k, d in idom.items()}


def post_dominators(graph: Graph) -> Dict[Node, Optional[Node]]:
    """The immediate post-dominator of each top-level node; None when only the graph's exit does.

    A virtual exit is fed by every node whose output is a graph output or that has no consumer in
    this graph.
    """
    import networkx as nx  # imported on use: it is slow to import
    nodes, _, preds = _predecessors(graph)
    outs = set(graph._outputs)
    dg = nx.DiGraph()
    sink = -1
    dg.add_node(sink)
    has_succ = [False] * len(nodes)
    for k, ps in enumerate(preds):
        dg.add_node(k)
        for p in ps:
            dg.add_edge(k, p)  # reversed
            has_succ[p] = True
    for k, n in enumerate(nodes):
        if not has_succ[k] or any(o is not None and o in outs for o in n._outputs):
            dg.add_edge(sink, k)
    idom = _idom(dg, sink)
    return {nodes[k]: (None if d == sink else nodes[d]) for k, d in idom.items()}
