"""Topological sort of every graph's node list."""

from __future__ import annotations

from edgec.ir import Model
from edgec.ir.analysis import toposort
from edgec.passmanager import Pass, PassContext, register_pass

__all__ = ["TopologicalSort"]


@register_pass
class TopologicalSort(Pass):
    """Reorder nodes so every value is defined before it is used (stable: sorted graphs keep their order).

    Applies to the main graph, subgraphs and function bodies. A cycle is an error naming a node on it.
    """

    name = "toposort"
    opt_level = 0

    def run(self, model: Model, ctx: PassContext) -> bool:
        changed = False
        for graph in list(model.all_graphs()):
            order = toposort(graph)
            if order != graph.nodes:
                graph.set_nodes(order)
                ctx.stat("graphs-reordered")
                changed = True
        return changed
