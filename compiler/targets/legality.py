"""Placement: which nodes of the main graph the NPU can run, and why the others go to the CPU.

A node is checked as the ONNX op it came from: its ``source_op`` attribute when present (integer
``edgec`` ops such as ``QConv`` carry it), the standard op of an ``edgec.Fused*`` op, else its op
type (QLinearConv/ConvInteger count as Conv, QLinearMatMul/MatMulInteger as MatMul when the target
lists no entry for them). Fused activations come from the ``fused`` attribute (list of strings)
or the ``activation`` attribute of fused ops; ``Relu6`` counts as ``Clip``. ``edgec.QGemm`` holds
its weight as [N, K].

A node goes to the NPU when the target lists its op under ``[npu.ops]`` and every check passes:
fused activations, tensor types (non-constant inputs, outputs, and the weights of conv/matmul ops),
static shapes, and the op's constraints. Otherwise it goes to the CPU with every failed check as
the reason, e.g. ``kernel 7x7 > max 5`` or ``float32 tensor 'x': npu runs int8 only``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..ir import Model, Node, Value
from ..ir.edgec_ops import DOMAIN as EDGEC_DOMAIN
from ..ir.edgec_ops import FUSED_OPS
from ..ir.types import TensorType
from .description import DTYPE_NAMES, OpConstraints, TargetDescription, op_family

__all__ = ["Placement", "place", "place_node", "unit_of", "node_key", "source_op", "fused_ops", "weight_input",
           "dtype_name"]

_ALIASES = {"QLinearConv": "Conv", "ConvInteger": "Conv", "QLinearMatMul": "MatMul", "MatMulInteger": "MatMul"}
_DTYPE_OF = {v: k for k, v in DTYPE_NAMES.items()}
#: standard ops whose weight operand has a fixed index
_WEIGHT_INDEX = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1,
                 "MatMulInteger": 1, "QLinearMatMul": 3}


@dataclass(frozen=True)
class Placement:
    """Where a node runs: ``unit`` is ``"npu"`` or ``"cpu"``; ``reason`` says why (failed checks)."""

    unit: str
    reason: str
    op: str = ""  # the op checked (source op)


def node_key(node: Node, index: int) -> str:
    """The key of a node in placement and report dicts: its name, or ``<op>_<index>`` when unnamed."""
    return node.name or f"{node.op_type}_{index}"


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def source_op(node: Node) -> str:
    """The ONNX op type a node stands for (``source_op`` attribute, fused op's base op, or its op type)."""
    s = node.attr("source_op")
    if s:
        return _text(s)
    if node.domain == EDGEC_DOMAIN and node.op_type in FUSED_OPS:
        return FUSED_OPS[node.op_type]
    return node.op_type


def fused_ops(node: Node) -> List[str]:
    """Ops fused into a node: the ``fused`` attribute (list of strings) and a fused op's ``activation``."""
    out: List[str] = []
    f = node.attr("fused")
    if f:
        out += [_text(x) for x in (f if isinstance(f, (list, tuple)) else [f])]
    a = node.attr("activation")
    if a and _text(a) not in out:
        out.append(_text(a))
    return out


def _dims(v: Optional[Value]) -> Optional[Tuple[int, ...]]:
    if v is None or not isinstance(v.type, TensorType) or v.type.shape.dims is None:
        return None
    d = v.type.shape.dims
    return tuple(d) if all(isinstance(x, int) for x in d) else None  # type: ignore[return-value]


def dtype_name(v: Value) -> str:
    """``int8``, ``float32``, ... of a tensor value (``?`` when unknown)."""
    t = v.type
    if not isinstance(t, TensorType):
        return "?"
    return _DTYPE_OF.get(t.dtype, t.dtype.name.lower())


def weight_input(node: Node) -> Optional[Value]:
    """The weight operand of a conv/matmul-like node.

    Standard ops use their fixed index; other nodes (``edgec`` integer ops) the first constant
    input after the data input with rank >= 2, else input 1.
    """
    if node.domain in ("", "ai.onnx") and node.op_type in _WEIGHT_INDEX:
        return node.input(_WEIGHT_INDEX[node.op_type])
    if node.domain == EDGEC_DOMAIN and node.op_type in FUSED_OPS:
        return node.input(1)
    for v in node.inputs[1:]:
        if v is not None and v.is_constant() and isinstance(v.type, TensorType) and \
                v.type.shape.dims is not None and len(v.type.shape.dims) >= 2:
            return v
    return node.input(1)


def _x(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims)


def _allowed(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


def unit_of(target: TargetDescription) -> Callable[[Node], str]:
    """``node -> "npu" | "cpu"`` for ``target``: the placement callable code generators take."""
    return lambda node: place_node(node, target).unit


def place(model: Model, target: TargetDescription) -> Dict[str, Placement]:
    """Place every node of the main graph on the NPU or the CPU (keys: :func:`node_key`)."""
    out: Dict[str, Placement] = {}
    for i, node in enumerate(model.graph):
        out[node_key(node, i)] = place_node(node, target)
    return out


def place_node(node: Node, target: TargetDescription) -> Placement:
    """The placement of one node."""
    op = source_op(node)
    npu = target.npu
    if npu is None:
        return Placement("cpu", f"target {target.name} has no npu", op)
    c = npu.ops.get(op)
    if c is None and op in _ALIASES:
        c = npu.ops.get(_ALIASES[op])
    if c is None:
        return Placement("cpu", f"op {op} not supported by npu", op)
    if node.subgraphs():
        return Placement("cpu", f"op {op} has subgraphs (control flow)", op)
    reasons: List[str] = []
    for f in fused_ops(node):
        if f not in npu.fused_activations and not (f == "Relu6" and "Clip" in npu.fused_activations):
            reasons.append(f"fused {f} not supported by npu")
    fam = op_family(c.op)
    w = weight_input(node) if fam in ("conv", "matmul") else None
    data = [v for v in node.inputs if v is not None and not v.is_constant()]
    data += [v for v in node.outputs if v is not None]
    if w is not None and w.is_constant() and w not in data:
        data.append(w)
    for v in data:
        dt = dtype_name(v)
        if dt not in c.dtypes:
            reasons.append(f"{dt} tensor '{v.name}': npu runs {'/'.join(c.dtypes)} only")
            break
    for v in data:
        if _dims(v) is None:
            reasons.append(f"dynamic or unknown shape of '{v.name}': npu needs static shapes")
            return Placement("cpu", "; ".join(reasons), op)
    reasons += _common(node, c, data)
    if fam == "conv":
        reasons += _conv(node, c, w)
    elif fam == "matmul":
        reasons += _matmul(node, c, w)
    elif fam == "pool":
        reasons += _pool(node, c)
    elif fam == "binary":
        reasons += _binary(node, c)
    elif fam == "concat":
        n = sum(1 for v in node.inputs if v is not None)
        if c.max_inputs is not None and n > c.max_inputs:
            reasons.append(f"{n} inputs > max {c.max_inputs}")
    elif fam == "softmax":
        x = _dims(node.input(0))
        if c.last_axis_only and x is not None:
            ax = node.attr("axis", -1)
            if int(ax) % max(1, len(x)) != len(x) - 1:
                reasons.append(f"axis {ax} of rank {len(x)}: npu supports the last axis only")
    if reasons:
        return Placement("cpu", "; ".join(reasons), op)
    return Placement("npu", "supported by npu", op)


def _common(node: Node, c: OpConstraints, data: Sequence[Value]) -> List[str]:
    r: List[str] = []
    for v in data:
        d = _dims(v) or ()
        if c.max_rank is not None and len(d) > c.max_rank:
            r.append(f"rank {len(d)} of '{v.name}' > max {c.max_rank}")
            break
    for v in data:
        d = _dims(v) or ()
        if c.max_dim is not None and any(x > c.max_dim for x in d):
            r.append(f"dim {max(d)} of '{v.name}' > max {c.max_dim}")
            break
    x = _dims(node.input(0)) if node.inputs else None
    if c.max_batch is not None and x and x[0] > c.max_batch:
        r.append(f"batch {x[0]} > max {c.max_batch}")
    return r


def _window_check(what: str, window: Sequence[int], limit: Optional[Tuple[int, ...]]) -> List[str]:
    if limit is None or not window:
        return []
    if len(limit) == 1:
        if any(k > limit[0] for k in window):
            return [f"{what} {_x(window)} > max {limit[0]}"]
        return []
    if len(window) > len(limit):
        return [f"{len(window)}-D {what} {_x(window)}: npu supports up to {len(limit)}-D"]
    if any(k > m for k, m in zip(window, limit)):
        return [f"{what} {_x(window)} > max {_x(limit[:len(window)])}"]
    return []


def _values_check(what: str, values: Sequence[int], allowed: Optional[Tuple[int, ...]]) -> List[str]:
    if allowed is None or all(v in allowed for v in values):
        return []
    return [f"{what} {_x(values)}: npu allows {_allowed(allowed)}"]


def _conv(node: Node, c: OpConstraints, w: Optional[Value]) -> List[str]:
    r: List[str] = []
    x, y, wd = _dims(node.input(0)), _dims(node.output(0)), _dims(w)
    ks = node.attr("kernel_shape")
    kernel = tuple(int(k) for k in ks) if ks else (tuple(wd[2:]) if wd is not None else ())
    nsp = len(kernel)
    r += _window_check("kernel", kernel, c.max_kernel)
    strides = tuple(int(s) for s in (node.attr("strides") or [1] * nsp))
    dil = tuple(int(s) for s in (node.attr("dilations") or [1] * nsp))
    r += _values_check("strides", strides, c.strides)
    r += _values_check("dilations", dil, c.dilations)
    group = int(node.attr("group", 1) or 1)
    cin = x[1] if x is not None and len(x) > 1 else None
    cout = y[1] if y is not None and len(y) > 1 else None
    if group > 1:
        if group == cin:
            if not c.depthwise:
                r.append("depthwise conv not supported by npu")
        elif not c.grouped:
            r.append(f"grouped conv (group {group}) not supported by npu")
    if c.max_channels is not None:
        for what, ch in (("input", cin), ("output", cout)):
            if ch is not None and ch > c.max_channels:
                r.append(f"{ch} {what} channels > max {c.max_channels}")
    return r


def _matmul(node: Node, c: OpConstraints, w: Optional[Value]) -> List[str]:
    r: List[str] = []
    a, b = _dims(node.input(0)), _dims(w)
    k = n = None
    if node.domain == EDGEC_DOMAIN and node.op_type == "QGemm":  # W int8 [N, K], transposed at compile time
        if b is not None and len(b) == 2:
            n, k = b
    elif source_op(node) == "Gemm" or node.op_type in ("Gemm", "FusedGemm"):
        if a is not None and len(a) == 2:
            k = a[0] if int(node.attr("transA", 0) or 0) else a[1]
        if b is not None and len(b) == 2:
            n = b[0] if int(node.attr("transB", 0) or 0) else b[1]
    else:
        k = a[-1] if a else None
        n = b[-1] if b is not None and len(b) >= 2 else None
    if c.max_k is not None and k is not None and k > c.max_k:
        r.append(f"K {k} > max {c.max_k}")
    if c.max_n is not None and n is not None and n > c.max_n:
        r.append(f"N {n} > max {c.max_n}")
    if c.constant_weights and (w is None or not w.is_constant()):
        r.append(f"non-constant weights '{w.name if w is not None else '?'}': npu needs constant weights")
    return r


def _pool(node: Node, c: OpConstraints) -> List[str]:
    x = _dims(node.input(0))
    if source_op(node).startswith("Global"):
        window = tuple(x[2:]) if x is not None else ()
        strides: Tuple[int, ...] = ()
    else:
        window = tuple(int(k) for k in (node.attr("kernel_shape") or ()))
        strides = tuple(int(s) for s in (node.attr("strides") or [1] * len(window)))
    return _window_check("window", window, c.max_window) + _values_check("strides", strides, c.strides)


def _binary(node: Node, c: OpConstraints) -> List[str]:
    if c.broadcast:
        return []
    shapes = [(v, _dims(v)) for v in node.inputs[:2] if v is not None]
    if len(shapes) == 2 and shapes[0][1] != shapes[1][1]:
        return [f"broadcast {_x(shapes[0][1] or ())} with {_x(shapes[1][1] or ())}: npu needs equal shapes"]
    return []
