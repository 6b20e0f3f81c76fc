"""Recover LayerNormalization, GELU and multi-head attention from the decomposed forms exporters emit."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from edgec.ir import Dim, Graph, Model, Node, Shape, TensorType, Value
from edgec.ir import edgec_ops
from edgec.ir.shapes import dim_div, dim_mul, dim_prod, dims_equal, infer_shapes, shape_value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Const, Either, Match, Op, Pattern, RewriteRule, Rewriter, Var, apply_rules, constant_value

from .fuse_batchnorm import ConstTracker, RankOracle

__all__ = ["RecoverPatterns", "recover_pattern_rules", "sweep_dead"]


def _near(target: float, rtol: float = 1e-5) -> Callable[[np.ndarray], bool]:
    def check(a: np.ndarray) -> bool:
        return a.size == 1 and np.issubdtype(a.dtype, np.floating) and abs(float(a.reshape(-1)[0]) - target) <= rtol * abs(target)
    return check


def _scalar(name: str, target: float) -> Const:
    return Const(name, _near(target))


# --- GELU -----------------------------------------------------------------------------------------------
def _gelu_patterns(inner: Pattern) -> List[Pattern]:
    """x * 0.5 * inner in every association / order exporters emit."""
    x = Var("x")
    return [
        Op("Mul", Op("Mul", x, inner, commute=True), _scalar("half", 0.5), commute=True),
        Op("Mul", Op("Mul", x, _scalar("half", 0.5), commute=True), inner, commute=True),
        Op("Mul", x, Op("Mul", inner, _scalar("half", 0.5), commute=True), commute=True),
        Op("Div", Op("Mul", x, inner, commute=True), _scalar("two", 2.0)),
    ]


def _erf_term() -> Pattern:
    """1 + Erf(x / sqrt 2)."""
    x = Var("x")
    arg = Either([Op("Div", x, _scalar("s2", math.sqrt(2.0))),
                  Op("Mul", x, _scalar("is2", 1 / math.sqrt(2.0)), commute=True)])
    return Op("Add", Op("Erf", arg), _scalar("one", 1.0), commute=True)


def _tanh_term() -> Pattern:
    """1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3))."""
    x = Var("x")
    cube = Either([Op("Pow", x, _scalar("three", 3.0)),
                   Op("Mul", Op("Mul", x, x), x, commute=True)])
    poly = Op("Add", x, Op("Mul", cube, _scalar("k", 0.044715), commute=True), commute=True)
    arg = Op("Mul", poly, _scalar("c", math.sqrt(2.0 / math.pi)), commute=True)
    return Op("Add", Op("Tanh", arg), _scalar("one", 1.0), commute=True)


# --- LayerNorm ------------------------------------------------------------------------------------------
def _axes(node: Node) -> Optional[List[int]]:
    if node.attr("keepdims", 1) != 1:
        return None
    if "axes" in node.attrs:
        return [int(a) for a in node.attr("axes")]
    if node.input(1) is not None:
        arr = constant_value(node.input(1))
        return None if arr is None else [int(a) for a in arr.reshape(-1)]
    return None


def _ln_core() -> Pattern:
    """(x - mean) / sqrt(var + eps), var = mean((x-mean)^2)."""
    x = Var("x")
    mean = Op("ReduceMean", x, name="rm1", extra_inputs=True)
    diff = Op("Sub", x, mean, name="sub")
    sq = Either([Op("Pow", diff, _scalar("two", 2.0)), Op("Mul", diff, diff)])
    var = Op("ReduceMean", sq, name="rm2", extra_inputs=True)
    std = Op("Sqrt", Op("Add", var, Const("eps", lambda a: a.size == 1), commute=True))
    return Op("Div", diff, std)


# --- Attention ------------------------------------------------------------------------------------------
# A tensor's layout is a list of axes, each a tuple of atoms in row-major order: 'b' batch, 'h' heads,
# 's' sequence, 'd' head dim. Atoms of size 1 are left out (such an axis is ``()``), so equal layouts
# mean equal data order. Transposes permute axes; a Reshape regroups the atoms, which it can do
# exactly only when every new axis is a product of consecutive atoms (checked symbolically).

Axes = List[Tuple[str, ...]]
_UNKNOWN = "_edgec_unknown_"  # prefix of symbols standing for unknown dims (never written to types)
_MAX_CHAIN = 6


class _ShapeFacts:
    """Dims of values (unknown dims become unique symbols) and Reshape targets (constants, or shape
    values from one fresh run of shape inference)."""

    def __init__(self, model: Model, ranks: RankOracle) -> None:
        self.model, self.ranks, self.inferred = model, ranks, False

    def dims(self, v: Optional[Value]) -> Optional[List[Dim]]:
        d = self.ranks.dims(v)
        if d is None:
            return None
        return [x if x is not None else f"{_UNKNOWN}{id(v)}_{i}" for i, x in enumerate(d)]

    def target(self, node: Node) -> Optional[Tuple[Dim, ...]]:
        arr = constant_value(node.input(1))
        if arr is not None:
            return tuple(int(x) for x in arr.reshape(-1)) if arr.dtype.kind in "iu" else None
        sv = shape_value(node.input(1)) if self.inferred else None
        if sv is None and not self.inferred:
            self.inferred = True
            try:
                infer_shapes(self.model)
            except Exception:  # noqa: BLE001 - no shape facts, no match
                return None
            sv = shape_value(node.input(1))
        return sv


def _known(d: Dim) -> Optional[Dim]:
    return None if isinstance(d, str) and _UNKNOWN in d else d


def _reshape_dims(in_dims: Sequence[Dim], target: Sequence[Dim], allowzero: int) -> Optional[List[Dim]]:
    """Output dims of Reshape(in_dims, target), exact or None."""
    out: List[Dim] = []
    neg = -1
    for i, t in enumerate(target):
        if t is None:
            return None
        if isinstance(t, str):
            out.append(t)
        elif t == 0 and not allowzero:
            if i >= len(in_dims):
                return None
            out.append(in_dims[i])
        elif t == -1 and neg < 0:
            neg = i
            out.append(1)
        elif t <= 0:
            return None
        else:
            out.append(int(t))
    if neg >= 0:
        total, rest = dim_prod(in_dims), dim_prod(out)
        q = None if total is None or rest is None or rest == 0 else dim_div(total, rest)
        if q is None:
            return None
        out[neg] = q
    return out


def _axis_dims(axes: Axes, sizes: Dict[str, Dim]) -> List[Dim]:
    return [dim_prod(sizes[a] for a in g) for g in axes]


def _regroup(axes: Axes, out_dims: Sequence[Dim], sizes: Dict[str, Dim]) -> Optional[Axes]:
    """Split the atoms of ``axes`` (in order) into consecutive runs of sizes ``out_dims``."""
    atoms = [a for g in axes for a in g]
    res: Axes = []
    i = 0
    for od in out_dims:
        if od is None:
            return None
        group: List[str] = []
        prod: Dim = 1
        while not dims_equal(prod, od):
            if i >= len(atoms):
                return None
            group.append(atoms[i])
            prod = dim_mul(prod, sizes[atoms[i]])
            i += 1
            if prod is None:
                return None
        res.append(tuple(group))
    return res if i == len(atoms) else None


def _apply(axes: Axes, node: Node, sizes: Dict[str, Dim], facts: _ShapeFacts) -> Optional[Axes]:
    """The layout after one Transpose or Reshape node."""
    if node.op_type == "Transpose":
        perm = node.attr("perm")
        perm = list(range(len(axes)))[::-1] if perm is None else [int(p) for p in perm]
        if sorted(perm) != list(range(len(axes))):
            return None
        return [axes[p] for p in perm]
    target = facts.target(node)
    if target is None:
        return None
    out = _reshape_dims(_axis_dims(axes, sizes), target, int(node.attr("allowzero", 0)))
    return None if out is None else _regroup(axes, out, sizes)


def _drop_ones(axes: Axes, sizes: Dict[str, Dim]) -> Axes:
    return [tuple(a for a in g if sizes[a] != 1) for g in axes]


def _is_view_op(node: Optional[Node]) -> bool:
    return node is not None and node.domain == "" and node.op_type in ("Transpose", "Reshape")


_SOURCE_LAYOUTS = {"bsd": [("b",), ("s",), ("h", "d")], "sbd": [("s",), ("b",), ("h", "d")]}


def _trace_heads(v: Value, transposed: bool, facts: _ShapeFacts, graph: Graph) -> Optional[Dict[str, Any]]:
    """Explain a per-head tensor ([B,H,S,D], or [B*H,S,D]; S and D swapped when ``transposed``)
    as Transposes/Reshapes of a [B,S,H*D] ('bsd') or [S,B,H*D] ('sbd') source tensor."""
    vd = facts.dims(v)
    if vd is None or len(vd) not in (3, 4):
        return None
    d = vd[-2] if transposed else vd[-1]
    if not isinstance(d, int) or d <= 0:
        return None
    chain: List[Node] = []
    candidates = [(v, [])]
    cur = v
    for _ in range(_MAX_CHAIN):
        p = cur.producer
        if not _is_view_op(p) or p.graph is not graph or cur.is_graph_output() \
                or len([u for u in cur.consumers() if u.op_type != "Shape"]) != 1:
            break
        chain.insert(0, p)
        cur = p.input(0)
        candidates.insert(0, (cur, list(chain)))  # the longest explanation first
    want: Axes = [("b",), ("h",), ("s",), ("d",)] if len(vd) == 4 else [("b", "h"), ("s",), ("d",)]
    if transposed:
        want[-1], want[-2] = want[-2], want[-1]
    for src, nodes in candidates:
        sd = facts.dims(src)
        if sd is None or len(sd) != 3 or not isinstance(sd[2], int) or sd[2] % d:
            continue
        for layout, axes0 in _SOURCE_LAYOUTS.items():
            b, s = (sd[0], sd[1]) if layout == "bsd" else (sd[1], sd[0])
            sizes = {"b": b, "s": s, "h": sd[2] // d, "d": d}
            axes: Optional[Axes] = _drop_ones(axes0, sizes)
            for n in nodes:
                axes = _apply(axes, n, sizes, facts)
                if axes is None:
                    break
            if axes is not None and axes == _drop_ones(want, sizes):
                return {"src": src, "layout": layout, "sizes": sizes, "nodes": nodes, "rank": len(vd)}
    return None


def _scalar_factor(node: Node, v: Value) -> Optional[Tuple[float, Value]]:
    """For Mul/Div of ``node`` by a float scalar constant: (factor, other operand)."""
    if node.domain != "" or node.op_type not in ("Mul", "Div"):
        return None
    rank = len(v.shape.dims) if v.shape is not None and v.shape.dims is not None else None
    order = (1, 0) if node.op_type == "Mul" else (1,)
    for i in order:
        arr = constant_value(node.input(i))
        if arr is None or arr.size != 1 or not np.issubdtype(arr.dtype, np.floating):
            continue
        if rank is not None and arr.ndim > rank:
            continue
        c = float(arr.reshape(-1)[0])
        if node.op_type == "Div":
            if c == 0.0:
                return None
            c = 1.0 / c
        return c, node.input(1 - i)
    return None


def _strip_scale(v: Value) -> Tuple[Value, float, List[Node]]:
    """Walk up scalar Mul/Div nodes: (unscaled value, product of factors, nodes)."""
    scale, nodes = 1.0, []
    for _ in range(4):
        p = v.producer
        if p is None:
            break
        f = _scalar_factor(p, p.output(0))
        if f is None:
            break
        scale *= f[0]
        nodes.append(p)
        v = f[1]
    return v, scale, nodes


class _AttentionPattern(Pattern):
    """The whole attention block ending at a Reshape that merges the heads (see ``_match_attention``)."""

    def __init__(self, facts: _ShapeFacts, opset: int) -> None:
        self.facts, self.opset = facts, opset

    def root_ops(self) -> Tuple[str, ...]:
        return ("Reshape",)

    def match(self, value: Optional[Value], m: Match) -> bool:
        if value is None or value.producer is None:
            return False
        found = _match_attention(value.producer, self.facts, self.opset)
        if found is None:
            return False
        m.bindings.update(found)
        m.nodes.extend(found["nodes"])
        return True


def _match_attention(root: Node, facts: _ShapeFacts, opset: int) -> Optional[Dict[str, Any]]:
    # merge chain: MatMul(probs, vh) -> Transpose/Reshape ... -> root
    out_chain = [root]
    cur = root.input(0)
    while _is_view_op(cur.producer if cur is not None else None) and len(out_chain) < _MAX_CHAIN:
        out_chain.insert(0, cur.producer)
        cur = cur.producer.input(0)
    pv = cur.producer if cur is not None else None
    if pv is None or pv.domain != "" or pv.op_type != "MatMul":
        return None
    sm = pv.input(0).producer
    if sm is None or sm.domain != "" or sm.op_type != "Softmax":
        return None
    vt = _trace_heads(pv.input(1), False, facts, root.graph)
    if vt is None:
        return None
    rank = vt["rank"]
    axis = int(sm.attr("axis", -1 if opset >= 13 else 1))
    if (axis + rank if axis < 0 else axis) != rank - 1:
        return None
    x = sm.input(0)
    options: List[Tuple[Value, Optional[Value], List[Node]]] = []
    add = x.producer
    if add is not None and add.domain == "" and add.op_type == "Add":
        options += [(add.input(0), add.input(1), [add]), (add.input(1), add.input(0), [add])]
    options.append((x, None, []))
    for scores, mask, extra in options:
        found = _match_core(scores, mask, vt, facts, root.graph)
        if found is not None:
            break
    else:
        return None
    sizes = {"b": found["B"], "h": found["H"], "s": found["Sq"], "d": vt["sizes"]["d"]}
    axes: Optional[Axes] = _drop_ones([("b",), ("h",), ("s",), ("d",)] if rank == 4 else [("b", "h"), ("s",), ("d",)], sizes)
    for n in out_chain:
        axes = _apply(axes, n, sizes, facts)
        if axes is None:
            return None
    atoms = [a for g in axes for a in g]
    want_bs = [a for a in "bshd" if sizes[a] != 1]
    want_sb = [a for a in "sbhd" if sizes[a] != 1]
    if atoms not in (want_bs, want_sb):
        return None
    nodes = list({id(n): n for n in found["nodes"] + extra + [sm, pv] + vt["nodes"] + out_chain}.values())
    found.update(out_layout="bsd" if atoms == want_bs else "sbd", out_axes=axes, out_sizes=sizes, nodes=nodes,
                 v_trace=vt)
    if mask is not None and mask.producer is not None and any(mask.producer is n for n in nodes):
        return None
    return found


def _match_core(scores: Value, mask: Optional[Value], vt: Dict[str, Any], facts: _ShapeFacts,
                graph: Graph) -> Optional[Dict[str, Any]]:
    """scale * MatMul(q_heads, k_heads^T) (+ mask) with consistent heads, batch and sequences."""
    raw, scale, scale_nodes = _strip_scale(scores)
    qk = raw.producer
    if qk is None or qk.domain != "" or qk.op_type != "MatMul":
        return None
    qh, qs, q_nodes = _strip_scale(qk.input(0))
    kh, ks, k_nodes = _strip_scale(qk.input(1))
    qt = _trace_heads(qh, False, facts, graph)
    kt = _trace_heads(kh, True, facts, graph)
    if qt is None or kt is None or not (qt["rank"] == kt["rank"] == vt["rank"]):
        return None
    q, k, v = qt["sizes"], kt["sizes"], vt["sizes"]
    if not (q["h"] == k["h"] == v["h"] and q["d"] == k["d"] and dims_equal(q["b"], k["b"])
            and dims_equal(q["b"], v["b"]) and dims_equal(k["s"], v["s"])):
        return None
    dtype = qh.dtype
    if dtype is None or not dtype.is_float or any(t["src"].dtype != dtype for t in (kt, vt)):
        return None
    if mask is not None:
        md = facts.ranks.dims(mask)
        full = [q["b"], q["h"], q["s"], k["s"]] if qt["rank"] == 4 else [dim_mul(q["b"], q["h"]), q["s"], k["s"]]
        if md is None or len(md) > len(full) or mask.dtype != dtype:
            return None
        if qt["rank"] == 3 and len(md) == 3 and md[0] != 1:
            return None
        for a, b in zip(reversed(md), reversed(full)):
            if a != 1 and not dims_equal(a, b):
                return None
    return {"q_trace": qt, "k_trace": kt, "mask": mask, "scale": scale * qs * ks, "H": q["h"], "B": q["b"],
            "Sq": q["s"], "Sk": k["s"], "Dq": q["d"], "nodes": qt["nodes"] + q_nodes + kt["nodes"] + k_nodes
            + [qk] + scale_nodes}


def _dead_users(nodes: List[Node], root: Node) -> Optional[List[Node]]:
    """Outside users of interior values that only compute Reshape targets of matched nodes (shape
    chains such as Shape -> Gather -> Concat); None when some outside user needs an interior value."""
    inside = {id(n) for n in nodes}
    extra: Dict[int, Node] = {}
    todo = [u for n in nodes if n is not root for v in n.outputs if v is not None for u in v.consumers()
            if id(u) not in inside]
    for n in nodes:
        if n is not root and any(v is not None and v.is_graph_output() for v in n.outputs):
            return None
    while todo:
        u = todo.pop()
        if id(u) in extra:
            continue
        if u.graph is not root.graph or len(extra) > 64 or u.subgraphs():
            return None
        extra[id(u)] = u
        for v in u.outputs:
            if v is None:
                continue
            if v.is_graph_output():
                return None
            for user, i in v.uses():
                if id(user) in inside:
                    if not (user.op_type == "Reshape" and i == 1):
                        return None
                elif id(user) not in extra:
                    todo.append(user)
    return list(extra.values())


def _shape_chains(nodes: List[Node]) -> List[Node]:
    """The integer-valued producers of the Reshape targets of ``nodes`` (removed once unused)."""
    out: Dict[int, Node] = {}
    todo = [n.input(1) for n in nodes if n.op_type == "Reshape"]
    while todo and len(out) < 64:
        v = todo.pop()
        p = v.producer if v is not None else None
        if p is None or id(p) in out or p.subgraphs() or any(o is not None and (o.dtype is None or o.dtype.is_float)
                                                              for o in p.outputs):
            continue
        out[id(p)] = p
        todo.extend(p.inputs)
    return list(out.values())


def _attention_rule(model: Model, consts: ConstTracker, facts: _ShapeFacts, doomed: List[Tuple[Graph, List[Node]]]) -> RewriteRule:
    opset = model.opset("") or 1

    def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
        root: Node = m.root
        dead = _dead_users(m.nodes, root)
        if dead is None:
            return None
        qt, kt, vt = m["q_trace"], m["k_trace"], m["v_trace"]
        h, dv, out_axes, sizes = m["H"], vt["sizes"]["d"], m["out_axes"], m["out_sizes"]
        # the Reshape that rebuilds the original output from [B,Sq,H*Dv] (or [Sq,B,H*Dv]): 0 copies, -1 infers
        base_axes = _SOURCE_LAYOUTS[m["out_layout"]]
        base = _drop_ones(base_axes, sizes)
        target: Optional[List[int]] = None
        if out_axes != base:
            target = []
            for j, (g, d) in enumerate(zip(out_axes, _axis_dims(out_axes, sizes))):
                if isinstance(d, int):
                    target.append(d)
                elif j < len(base) and base[j] == g:
                    target.append(0)
                elif -1 not in target:
                    target.append(-1)
                else:
                    return None
        dtype = qt["src"].dtype
        made: Dict[Tuple[int, str], Value] = {}

        def source(t: Dict[str, Any]) -> Value:
            src = t["src"]
            if t["layout"] == "bsd":
                return src
            key = (id(src), t["layout"])
            if key not in made:
                d = src.shape.dims
                made[key] = rw.op("Transpose", [src], {"perm": [1, 0, 2]}, type=TensorType(dtype, Shape((d[1], d[0], d[2]))))
            return made[key]

        b, sq = _known(m["B"]), _known(m["Sq"])
        ins = [source(qt), source(kt), source(vt)] + ([m["mask"]] if m["mask"] is not None else [])
        attrs = {"num_heads": int(h), "scale": float(m["scale"])}
        y = rw.op("Attention", ins, attrs, domain=edgec_ops.DOMAIN, type=TensorType(dtype, Shape((b, sq, h * dv))))
        if m["out_layout"] == "sbd":
            y = rw.op("Transpose", [y], {"perm": [1, 0, 2]}, type=TensorType(dtype, Shape((sq, b, h * dv))))
        if target is not None:
            y = rw.op("Reshape", [y, rw.const(np.array(target, np.int64), "attention_shape")], type=root.output(0).type)
        model.opset_imports.setdefault(edgec_ops.DOMAIN, edgec_ops.VERSION)
        consts.note(*[v for n in list(m.nodes) + dead for v in n.inputs if v is not None and constant_value(v) is not None])
        doomed.append((root.graph, list(m.nodes) + dead + _shape_chains(list(m.nodes) + dead)))
        return y

    return RewriteRule("attention", _AttentionPattern(facts, opset), rewrite, allow_shared=True)


def sweep_dead(doomed: List[Tuple[Graph, List[Node]]]) -> None:
    """Remove the recorded nodes that were left without users (interiors of rewritten matches)."""
    for graph, nodes in doomed:
        changed = True
        while changed:
            changed = False
            for n in nodes:
                if n.graph is graph and not any(v is not None and v.has_uses() for v in n.outputs):
                    graph.remove(n)
                    changed = True
    doomed.clear()


def recover_pattern_rules(model: Model, consts: ConstTracker, ranks: RankOracle,
                          doomed: Optional[List[Tuple[Graph, List[Node]]]] = None) -> List[RewriteRule]:
    """The rules of :class:`RecoverPatterns`; interiors of attention matches that outlive the rewrite
    (kept by dead shape chains) are recorded in ``doomed`` for :func:`sweep_dead`."""
    opset = model.opset("") or 1

    def gelu(approx: str) -> Callable[[Match, Rewriter], Optional[Value]]:
        def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
            x = m["x"]
            if x.dtype is not None and not x.dtype.is_float:
                return None
            consts.note(*[m.get(k) for k in ("half", "two", "s2", "is2", "one", "three", "k", "c")])
            attrs = {"approximate": approx} if approx != "none" else {}
            if opset >= 20:
                return rw.op("Gelu", [x], attrs)
            model.opset_imports.setdefault(edgec_ops.DOMAIN, edgec_ops.VERSION)
            return rw.op("Gelu", [x], attrs, domain=edgec_ops.DOMAIN)
        return rewrite

    def layer_norm(kind: str) -> Callable[[Match, Rewriter], Optional[Value]]:
        def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
            x = m["x"]
            root: Node = m.root
            if x.dtype is not None and not x.dtype.is_float:
                return None
            # a shorter pattern declines when the longer one can still match from its consumer
            users = root.output(0).consumers()
            if kind != "full" and len(users) == 1 and not root.output(0).is_graph_output():
                u = users[0]
                if (kind == "core" and u.op_type == "Mul") or (kind == "scale" and u.op_type == "Add"):
                    if any(constant_value(v) is not None for v in u.inputs if v is not root.output(0)):
                        return None
            a1, a2 = _axes(m["rm1"]), _axes(m["rm2"])
            dims = ranks.dims(x)
            rank = None if dims is None else len(dims)
            if a1 is None or a2 is None:
                return None
            norm = lambda axes: sorted(a + rank if a < 0 and rank is not None else a for a in axes)  # noqa: E731
            a1, a2 = norm(a1), norm(a2)
            if a1 != a2 or not a1:
                return None
            k = len(a1)
            if rank is not None:
                if a1 != list(range(rank - k, rank)):
                    return None
            elif a1 != list(range(-k, 0)):
                return None
            trailing = None if dims is None else dims[len(dims) - k:]
            dt = x.dtype.numpy if x.dtype is not None else np.float32
            eps = float(m.const("eps").reshape(-1)[0])

            def param(name: str) -> Optional[np.ndarray]:
                arr = m.const(name)
                if arr.ndim > k or arr.dtype != dt:
                    return None
                if trailing is None or not all(isinstance(d, int) for d in trailing):
                    return arr if arr.ndim == k else None
                try:
                    return np.ascontiguousarray(np.broadcast_to(arr, trailing))
                except ValueError:
                    return None

            if kind == "core":
                if trailing is None or not all(isinstance(d, int) for d in trailing):
                    return None
                s_arr, b_arr = np.ones(trailing, dt), None
            else:
                s_arr = param("gamma")
                b_arr = param("beta") if kind == "full" else None
                if s_arr is None or (kind == "full" and b_arr is None):
                    return None
            scale = rw.const(s_arr, "ln_scale")  # constants only once the rule is sure to apply
            bias = rw.const(b_arr, "ln_bias") if b_arr is not None else None
            consts.note(*[m.get(n) for n in ("eps", "two", "gamma", "beta")], *m["rm1"].inputs[1:], *m["rm2"].inputs[1:])
            attrs = {"axis": -k, "epsilon": eps}
            ins = [x, scale] + ([bias] if bias is not None else [])
            if opset >= 17:
                return rw.op("LayerNormalization", ins, attrs)
            model.opset_imports.setdefault(edgec_ops.DOMAIN, edgec_ops.VERSION)
            return rw.op("LayerNorm", ins, attrs, domain=edgec_ops.DOMAIN)
        return rewrite

    rules: List[RewriteRule] = []
    scaled = Op("Mul", _ln_core(), Const("gamma"), commute=True)
    rules.append(RewriteRule("layernorm", Op("Add", scaled, Const("beta"), commute=True), layer_norm("full")))
    rules.append(RewriteRule("layernorm-no-bias", scaled, layer_norm("scale")))
    rules.append(RewriteRule("layernorm-plain", _ln_core(), layer_norm("core")))
    rules += [RewriteRule("gelu-erf", p, gelu("none")) for p in _gelu_patterns(_erf_term())]
    rules += [RewriteRule("gelu-tanh", p, gelu("tanh")) for p in _gelu_patterns(_tanh_term())]
    rules.append(_attention_rule(model, consts, _ShapeFacts(model, ranks), [] if doomed is None else doomed))
    return rules


def _plain_onnx(ctx: PassContext) -> bool:
    """The model is compiled for standard ONNX without onnxruntime's contrib ops."""
    target = ctx.resources.get("target")
    return target is not None and target.get("name") == "onnx" and not target.get("contrib_ops")


def _want_attention(option: str, ctx: PassContext) -> bool:
    if option != "auto":
        return option == "on"
    return not _plain_onnx(ctx)


@register_pass
class RecoverPatterns(Pass):
    """Recover LayerNormalization, GELU (erf and tanh forms) and attention from their decompositions.

    Rules:

    - ``layernorm`` / ``layernorm-no-bias`` / ``layernorm-plain``: ReduceMean, Sub, Pow 2 (or
      Mul(d, d)), ReduceMean, Add eps, Sqrt, Div [, Mul gamma [, Add beta]] over the last dim(s)
      (ReduceMean axes as attribute or input, keepdims 1) -> LayerNormalization (opset >= 17) or
      ``edgec.LayerNorm``; gamma/beta constants broadcastable to the normalized dims.
    - ``gelu-erf``: x*0.5*(1+Erf(x/sqrt 2)) in every association and operand order, Div by
      1.4142135 or Mul by 0.70710678, and (x*(1+Erf(..)))/2 -> Gelu (opset >= 20) or ``edgec.Gelu``.
    - ``gelu-tanh``: 0.5x(1+Tanh(sqrt(2/pi)(x+0.044715x^3))), x^3 as Pow or Mul -> Gelu approximate=tanh.
    - ``attention``: multi-head self/cross attention -> ``edgec.Attention`` (see ``edgec_ops``):
      per-head splits of Q, K, V as Reshape/Transpose chains of [B,S,H*D] or [S,B,H*D] tensors
      (BERT ``Reshape [B,S,H,D]`` + ``Transpose [0,2,1,3]``, K as ``[0,2,3,1]`` or a further
      ``[0,1,3,2]``; nn.MultiheadAttention ``Reshape [S,B*H,D]`` + ``Transpose [1,0,2]`` [+ Reshape
      [B,H,S,D]], 3-D or 4-D heads), scalar Mul/Div scales on the scores and/or on Q and K, an
      optional additive mask, Softmax over the last axis (opset < 13 axis semantics respected),
      MatMul with V, and Transposes/Reshapes that merge the heads. Reshape targets are constants
      (0 / -1 allowed) or Shape/Gather/Concat chains known through shape inference; every regrouping
      is checked symbolically, heads / head dims / batch must agree. A scale computed at run time
      (raw nn.MultiheadAttention exports) needs ``fold-constants`` first.

    SiLU recovery is not done here (``fuse-activation`` fuses x*Sigmoid(x) after
    Conv/Gemm/MatMul).
    """

    name = "recover-patterns"
    opt_level = 2
    #: ``auto``: recover attention unless the target is plain ONNX, where it would only be
    #: decomposed again (and onnxruntime's own attention fusion would then miss it). For the same
    #: reason GELU (opset < 20) and LayerNorm (opset < 17) are left alone for plain ONNX.
    attention: Literal["auto", "on", "off"] = "auto"

    def run(self, model: Model, ctx: PassContext) -> bool:
        consts = ConstTracker()
        doomed: List[Tuple[Graph, List[Node]]] = []
        rules = recover_pattern_rules(model, consts, RankOracle(model), doomed)
        if not _want_attention(self.attention, ctx):
            rules = [r for r in rules if r.name != "attention"]
        if _plain_onnx(ctx):
            # An edgec op that plain ONNX lacks at this opset would only be decomposed again, in a
            # form onnxruntime's own fusions may no longer recognise: recover what runs natively.
            opset = model.opset("") or 1
            rules = [r for r in rules if not (r.name.startswith("gelu") and opset < 20)
                     and not (r.name.startswith("layernorm") and opset < 17)]
        stats = apply_rules(model, rules)
        sweep_dead(doomed)
        consts.sweep()
        for rule, n in stats.fired.items():
            ctx.stat(rule, n)
        return stats.changed
