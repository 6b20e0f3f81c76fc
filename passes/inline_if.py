"""Inline ``If`` nodes whose condition is a compile-time constant. Bit-exact.

Rules: for an ``If`` whose condition is a constant one-element tensor (non-input initializer or
Constant output), the taken branch's nodes move into the parent graph just before the If, with
fresh unique node and value names (no clash with sibling subgraphs); its initializers move too (as
Constant nodes in a function's top-level body); values the branch captured from outer scopes stay
as they are; the branch outputs replace the If outputs. An If output that is an output of the
parent graph keeps its name (the branch value takes it, or an Identity when the branch returns an
outer value or the same value twice). The untaken branch is dropped. Nested Ifs (in subgraphs,
functions, and the inlined nodes) are handled too.
"""

from __future__ import annotations

from typing import List, Optional, Set

import numpy as np

from edgec.ir import Graph, Model, Node, SparseTensor, Value
from edgec.passmanager import Pass, PassContext, register_pass

from .lift_constants import const_tensor, function_bodies, new_constant, replace_value

__all__ = ["InlineIf", "constant_condition", "inline_if"]

MAX_ROUNDS = 64


def constant_condition(node: Node) -> Optional[bool]:
    """The value of an If's condition when it is a constant one-element tensor, else None."""
    t = const_tensor(node.input(0))
    if t is None or t.numel != 1:
        return None
    try:
        return bool(np.asarray(t.numpy()).reshape(-1)[0])
    except Exception:  # noqa: BLE001 - a string or odd dtype: not a condition we can read
        return None


def _detach(graph: Graph) -> None:
    """Drop every use a (discarded) subgraph makes of outer values: node inputs and graph outputs."""
    for g in list(graph.all_graphs()):
        for n in list(g):
            n.set_inputs([])
        for i in reversed(range(len(g.outputs))):
            g.remove_output(i)


def inline_if(graph: Graph, node: Node, cond: bool, *, as_node: bool) -> bool:
    """Replace ``node`` (an If in ``graph``) by its ``cond`` branch; False when the shapes do not fit."""
    branch: Graph = node.attr("then_branch" if cond else "else_branch")
    other: Graph = node.attr("else_branch" if cond else "then_branch")
    if not isinstance(branch, Graph) or branch.inputs or len(branch.outputs) != len(node.outputs):
        return False
    if as_node and any(isinstance(v.const, SparseTensor) for v in branch.initializers.values()):
        return False
    moved: Set[int] = set()
    for v in list(branch.initializers.values()):
        branch.remove_initializer(v)
        fresh = graph.new_name(v.name)
        if as_node:
            new = new_constant(graph, v.const, fresh, as_node=True, before=node, type_hint=v.type)
            replace_value(v, new)
            v = new
        else:
            v.name = fresh
            graph.add_initializer(v)
        moved.add(id(v))
    outs: List[Value] = list(branch.outputs)
    for i in reversed(range(len(outs))):
        branch.remove_output(i)
    for n in list(branch):
        branch.remove(n, drop_inputs=False)
        n._next = None
        n.name = graph.new_name(n.name or n.op_type, node_name=True)
        for v in n.outputs:
            if v is not None:
                v.name = graph.new_name(v.name or n.op_type.lower())
                moved.add(id(v))
        graph.insert_before(node, n)
    for old, new in zip(node.outputs, outs):
        if old is None:
            continue
        if new.type is None:
            new.type = old.type
        if graph not in old._graph_outputs():
            replace_value(old, new)
            continue
        name = old.name
        old.name = graph.new_name(name + "_inlined")
        if id(new) in moved and graph not in new._graph_outputs():
            if new.producer is None:  # a moved initializer: re-register under the new name
                graph.remove_initializer(new)
                new.name = name
                graph.add_initializer(new)
            else:
                new.name = name
        else:  # an outer value, or one branch value returned twice: an Identity carries the name
            idn = Node("Identity", [new], [Value(name, old.type)], name=graph.new_name(name + "/Identity", node_name=True))
            graph.insert_before(node, idn)
            new = idn.outputs[0]  # type: ignore[assignment]
        replace_value(old, new)
    _detach(other)
    _detach(branch)
    graph.remove(node)
    return True


@register_pass
class InlineIf(Pass):
    """Replace an If whose condition is constant by the nodes of the branch it takes."""

    name = "inline-if"
    opt_level = 1

    def run(self, model: Model, ctx: PassContext) -> bool:
        bodies = function_bodies(model)
        total = 0
        for _ in range(MAX_ROUNDS):
            n = 0
            for g in list(model.all_graphs()):
                for node in g:
                    if node.op_type != "If" or node.domain != "":
                        continue
                    cond = constant_condition(node)
                    if cond is None:
                        continue
                    if inline_if(g, node, cond, as_node=id(g) in bodies):
                        ctx.stat("ifs-inlined")
                        n += 1
            total += n
            if n == 0:
                break
        return total > 0
