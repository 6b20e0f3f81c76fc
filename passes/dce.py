"""Dead code elimination."""

from __future__ import annotations

from typing import Tuple

from edgec.ir import Graph, Model, Node
from edgec.passmanager import Pass, PassContext, register_pass

__all__ = ["DeadCodeElimination", "eliminate_dead_code"]


def _is_dead(node: Node) -> bool:
    """No output is used by a node or listed as a graph output (ONNX ops have no side effects)."""
    return all(v is None or not v.has_uses() for v in node.outputs)


def _remove(graph: Graph, node: Node) -> None:
    # Nodes inside its subgraphs may use values of enclosing graphs: drop those uses too.
    for sg in node.subgraphs():
        for inner in list(sg.all_nodes()):
            inner.set_inputs([])
    graph.remove(node)


def _sweep(graph: Graph) -> Tuple[int, int]:
    """Remove dead nodes and unused initializers of ``graph`` and its subgraphs."""
    nodes = initializers = 0
    for node in graph:  # inner graphs first: their uses of outer values may go away
        for sg in node.subgraphs():
            n, i = _sweep(sg)
            nodes, initializers = nodes + n, initializers + i
    changed = True
    while changed:  # one reverse sweep suffices for a sorted graph; loop for unsorted ones
        changed = False
        for node in reversed(graph.nodes):
            if node.graph is graph and _is_dead(node):
                _remove(graph, node)
                nodes += 1
                changed = True
    for v in list(graph.initializers.values()):
        # An initializer that is also a graph input is part of the interface: keep it.
        if not v.has_uses() and not v.is_graph_input():
            graph.remove_initializer(v)
            initializers += 1
    return nodes, initializers


def eliminate_dead_code(model: Model) -> Tuple[int, int]:
    """Remove dead nodes and unused initializers everywhere; returns (nodes, initializers) removed."""
    nodes = initializers = 0
    for graph in [model.graph] + [f.graph for f in model.functions.values()]:
        n, i = _sweep(graph)
        nodes, initializers = nodes + n, initializers + i
    return nodes, initializers


@register_pass
class DeadCodeElimination(Pass):
    """Remove nodes whose results are never used, and unused initializers.

    Works recursively in subgraphs (If/Loop/Scan bodies) and function bodies. Graph outputs and
    graph inputs are never removed; an unused node is removed even if it is random (ONNX ops have
    no side effects).
    """

    name = "dce"
    opt_level = 1

    def run(self, model: Model, ctx: PassContext) -> bool:
        nodes, initializers = eliminate_dead_code(model)
        if nodes:
            ctx.stat("nodes-removed", nodes)
        if initializers:
            ctx.stat("initializers-removed", initializers)
        return bool(nodes or initializers)
