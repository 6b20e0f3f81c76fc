"""Analyses: networkx view, stable toposort (with subgraph captures), cycles, dominators."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edgec.errors import VerificationError
from edgec.ir import DType, Graph, Model, Node, Value, tensor
from edgec.ir.analysis import (captured_values, dominators, find_cycle, post_dominators, to_networkx,
                               toposort)
from edgec.ir.verifier import verify


def f32(*dims):
    return tensor(DType.FLOAT, list(dims))


def diamond():
    x = Value("x", f32(4))
    g = Graph("d", [x])
    a = g.append(Node("Relu", [x], ["a"], name="A"))
    b = g.append(Node("Neg", [a.output(0)], ["b"], name="B"))
    c = g.append(Node("Abs", [a.output(0)], ["c"], name="C"))
    d = g.append(Node("Add", [b.output(0), c.output(0)], ["d"], name="D"))
    g.add_output(d.output(0))
    return g, (a, b, c, d)


def random_dag(n=300, seed=0):
    rng = random.Random(seed)
    x = Value("x", f32(4))
    g = Graph("rand", [x])
    vals = [x]
    for i in range(n):
        k = rng.choice([1, 2])
        ins = [rng.choice(vals) for _ in range(k)]
        node = g.append(Node("Add" if k == 2 else "Relu", ins, [f"v{i}"], name=f"n{i}"))
        vals.append(node.output(0))
    g.add_output(vals[-1])
    return g


def _is_topological(order):
    pos = {n: i for i, n in enumerate(order)}
    for n in order:
        for v in n.inputs:
            if v is not None and v.producer in pos:
                assert pos[v.producer] < pos[n], (v.producer, n)


def test_toposort_of_sorted_graph_is_identity():
    g = random_dag()
    before = g.nodes
    assert toposort(g) == before


def test_toposort_of_shuffled_graph():
    g = random_dag()
    m = Model(g)
    nodes = g.nodes
    rng = random.Random(1)
    shuffled = nodes[:]
    rng.shuffle(shuffled)
    g.set_nodes(shuffled)
    with pytest.raises(VerificationError):
        verify(m)
    order = toposort(g)
    assert set(order) == set(nodes) and len(order) == len(nodes)
    _is_topological(order)
    g.set_nodes(order)
    verify(m)


def test_toposort_is_stable_among_independent_nodes():
    x = Value("x", f32(4))
    g = Graph("g", [x])
    ns = [g.append(Node("Relu", [x], [f"r{i}"], name=f"r{i}")) for i in range(5)]
    g.set_nodes([ns[3], ns[1], ns[4], ns[0], ns[2]])
    assert [n.name for n in toposort(g)] == ["r3", "r1", "r4", "r0", "r2"]


def _if_capturing(g, cond, captured, name):
    then_g = Graph(name + "_then")
    then_g.add_output(then_g.append(Node("Neg", [captured], [name + "_t"], name=name + "_neg")).output(0))
    else_g = Graph(name + "_else")
    else_g.add_output(else_g.append(Node("Abs", [captured], [name + "_e"], name=name + "_abs")).output(0))
    return Node("If", [cond], [name + "_r"], {"then_branch": then_g, "else_branch": else_g}, name=name)


def test_toposort_respects_subgraph_captures():
    x = Value("x", f32(4))
    c = Value("c", tensor(DType.BOOL, []))
    g = Graph("g", [x, c])
    late = Node("Relu", [x], ["late"], name="late")
    iff = _if_capturing(g, c, late.output(0), "if")
    g.append(iff)  # the If captures 'late', which comes after it
    g.append(late)
    g.add_output(iff.output(0))
    m = Model(g)
    with pytest.raises(VerificationError, match="'late'"):
        verify(m)
    assert captured_values(iff) == [late.output(0)]
    order = toposort(g)
    assert order == [late, iff]
    g.set_nodes(order)
    verify(m)


def test_to_networkx_edges_and_captures():
    x = Value("x", f32(4))
    c = Value("c", tensor(DType.BOOL, []))
    g = Graph("g", [x, c])
    r = g.append(Node("Relu", [x], ["r"], name="r"))
    add = g.append(Node("Add", [r.output(0), r.output(0)], ["s"], name="add"))
    iff = g.append(_if_capturing(g, c, add.output(0), "if"))
    nxg = to_networkx(g)
    assert set(nxg.nodes) == {r, add, iff}
    edges = sorted((u.name, v.name, d["index"], d["value"].name, d["capture"]) for u, v, d in nxg.edges(data=True))
    assert edges == [("add", "if", None, "s", True), ("r", "add", 0, "r", False), ("r", "add", 1, "r", False)]
    assert nxg.nodes[iff]["pos"] == 2


def test_cycle_detected():
    g, (a, b, c, d) = diamond()
    assert find_cycle(g) is None
    a.set_input(0, d.output(0))  # A <- D <- B <- A
    cyc = find_cycle(g)
    assert cyc is not None and set(cyc) <= {a, b, c, d} and a in cyc and d in cyc
    with pytest.raises(VerificationError) as ei:
        toposort(g)
    msg = str(ei.value)
    assert "cycle" in msg and any(f"'{n.name}'" in msg for n in cyc)
    with pytest.raises(VerificationError, match="before it is defined"):
        verify(Model(g))


def test_self_loop_is_a_cycle():
    x = Value("x", f32(4))
    g = Graph("g", [x])
    n = g.append(Node("Add", [x, x], ["y"], name="self"))
    n.set_input(1, n.output(0))
    assert find_cycle(g) == [n]
    with pytest.raises(VerificationError, match="'self'"):
        toposort(g)


def test_dominators_of_diamond():
    g, (a, b, c, d) = diamond()
    idom = dominators(g)
    assert idom == {a: None, b: a, c: a, d: a}
    pdom = post_dominators(g)
    assert pdom == {d: None, b: d, c: d, a: d}


def test_dominators_with_two_entries():
    x = Value("x", f32(4))
    y = Value("y", f32(4))
    g = Graph("g", [x, y])
    a = g.append(Node("Relu", [x], ["a"], name="A"))
    b = g.append(Node("Add", [a.output(0), y], ["b"], name="B"))  # also reads graph input y
    c = g.append(Node("Neg", [b.output(0)], ["c"], name="C"))
    g.add_output(c.output(0))
    idom = dominators(g)
    assert idom[a] is None and idom[b] is None and idom[c] is b


def test_constant_only_node_is_an_entry():
    g = Graph("g")
    k = g.add_constant(np.ones(3, np.float32), "k")
    a = g.append(Node("Relu", [k], ["a"], name="A"))
    g.add_output(a.output(0))
    assert dominators(g) == {a: None}
