"""Move constants into the subgraph that alone uses them."""

from __future__ import annotations

from edgec.ir import Graph, Model
from edgec.passmanager import Pass, PassContext, register_pass

__all__ = ["SinkConstants"]


def _sink(graph: Graph) -> int:
    moved = 0
    for node in graph:
        for sub in node.subgraphs():
            moved += _sink(sub)
    for value in list(graph.initializers.values()):
        if value.is_graph_input() or value.is_graph_output():
            continue
        users = {id(n.graph): n.graph for n, _ in value.uses()}
        if len(users) != 1:
            continue
        (target,) = users.values()
        if target is graph or target is None:
            continue
        graph.remove_initializer(value)
        target.add_initializer(value)
        moved += 1
    return moved


@register_pass
class SinkConstants(Pass):
    """Move an initializer used only inside one subgraph (a Loop or Scan body, an If branch) into it (bit-exact).

    A runtime then sees it as the subgraph's own constant instead of a value captured from outside
    on every iteration. Runs to a fixed point on nested subgraphs (innermost first).
    """

    name = "sink-constants"
    opt_level = 1

    def run(self, model: Model, ctx: PassContext) -> bool:
        moved = 0
        while True:
            step = _sink(model.graph)
            if not step:
                break
            moved += step
        ctx.stat("constants-moved", moved)
        return moved > 0
