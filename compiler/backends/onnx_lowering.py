"""Lower edgec-domain ops (``edgec.ir.edgec_ops``) to ops onnxruntime runs.

``lower_for_onnx(model)`` rewrites every ``edgec`` op into standard ONNX at the model's opset:

- ``FusedConv`` / ``FusedConvTranspose`` / ``FusedGemm`` -> the base op + activation node(s);
  ``FusedMatMul`` -> MatMul (+ Add bias) + activation;
- activations: Clip with min/max inputs (opset >= 11) or attributes; HardSwish at opset >= 14, else
  ``x*HardSigmoid(x)``; Gelu op at opset >= 20 (``approximate`` for GeluTanh), else the Erf / Tanh
  formula; Silu = ``x*Sigmoid(x)``;
- ``Gelu`` -> as the Gelu activation; ``LayerNorm`` -> LayerNormalization at opset >= 17, else the
  ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div/Mul/Add formula (ReduceMean ``axes`` as an input from 18).

- ``Attention`` -> the standard ``Attention`` op at opset >= 23 (3-D Q/K/V, ``q_num_heads`` =
  ``kv_num_heads`` = num_heads), else Reshape/Transpose per head, MatMul, Mul by the scale, Add mask,
  Softmax(-1), MatMul, Transpose, Reshape.

With ``contrib_ops=True`` the ``com.microsoft`` ops are used where ORT has them: FusedConv (Relu,
Tanh, Sigmoid, LeakyRelu, Clip, HardSigmoid), FusedGemm (Relu, Tanh, Sigmoid, LeakyRelu,
HardSigmoid), Gelu / FastGelu / BiasGelu, MultiHeadAttention (float32; the mask goes to its
``attention_bias`` input). ORT's MultiHeadAttention and Attention-23 both want the mask's last two
dims to be exactly [Sq, Sk] (MultiHeadAttention also rank 4), so a mask that broadcasts there (e.g.
BERT's [B, 1, 1, Sk]) is first expanded with ``Expand(mask, [1, 1, Sq, Sk])``. (ORT's own ai.onnx-1 LayerNormalization is not used:
it is not valid ONNX below opset 17, so LayerNorm is decomposed there either way.) The ``edgec``
opset import is removed when no edgec op remains.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..ir import Model, Node, Value
from ..ir import edgec_ops
from ..ir.shapes import dims_equal
from ..rewrite import Match, Op, RewriteRule, Rewriter, apply_rules

__all__ = ["lower_for_onnx", "emit_activation"]

MS = "com.microsoft"
_MS_CONV_ACTS = {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "Clip", "HardSigmoid"}
_MS_GEMM_ACTS = {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid"}
_ACT_ATTRS = ("activation", "activation_params")


def _np_dtype(v: Optional[Value]) -> np.dtype:
    dt = v.dtype if v is not None else None
    try:
        return np.dtype(dt.numpy) if dt is not None and dt.is_float else np.dtype(np.float32)
    except Exception:  # noqa: BLE001 - unknown dtype: fall back to f32
        return np.dtype(np.float32)


class _Builder:
    """Emits nodes through a Rewriter; every intermediate value gets ``vtype``."""

    def __init__(self, rw: Rewriter, vtype, dtype: np.dtype, opset: int) -> None:
        self.rw, self.vtype, self.dtype, self.opset = rw, vtype, dtype, opset

    def op(self, op_type: str, inputs: Sequence[Optional[Value]], attrs: Optional[Dict] = None, domain: str = "",
           typed: bool = True) -> Value:
        return self.rw.op(op_type, inputs, attrs, domain=domain, type=self.vtype if typed else None)

    def const(self, x: float) -> Value:
        return self.rw.const(np.array(x, dtype=self.dtype), "c")


def emit_activation(b: _Builder, x: Value, act: str, params: Sequence[float]) -> Value:
    """Standard-ONNX nodes computing ``act(x)`` at opset ``b.opset``."""
    p = list(params or [])
    if not act or act == "Identity":
        return x
    if act in ("Relu", "Sigmoid", "Tanh"):
        return b.op(act, [x])
    if act == "LeakyRelu":
        return b.op("LeakyRelu", [x], {"alpha": float(p[0]) if p else 0.01})
    if act == "HardSigmoid":
        return b.op("HardSigmoid", [x], {"alpha": float(p[0]) if p else 0.2, "beta": float(p[1]) if len(p) > 1 else 0.5})
    if act == "Clip":
        lo, hi = float(p[0]), float(p[1])
        if b.opset >= 11:
            return b.op("Clip", [x, b.const(lo), b.const(hi)])
        return b.op("Clip", [x], {"min": lo, "max": hi})
    if act == "HardSwish":
        if b.opset >= 14:
            return b.op("HardSwish", [x])
        return b.op("Mul", [x, b.op("HardSigmoid", [x], {"alpha": 1.0 / 6, "beta": 0.5})])
    if act == "Silu":
        return b.op("Mul", [x, b.op("Sigmoid", [x])])
    if act == "Gelu":
        if b.opset >= 20:
            return b.op("Gelu", [x])
        e = b.op("Erf", [b.op("Div", [x, b.const(math.sqrt(2.0))])])
        return b.op("Mul", [b.op("Mul", [x, b.op("Add", [e, b.const(1.0)])]), b.const(0.5)])
    if act == "GeluTanh":
        if b.opset >= 20:
            return b.op("Gelu", [x], {"approximate": "tanh"})
        x3 = b.op("Mul", [b.op("Mul", [x, x]), x])
        inner = b.op("Mul", [b.op("Add", [x, b.op("Mul", [x3, b.const(0.044715)])]), b.const(math.sqrt(2.0 / math.pi))])
        t = b.op("Tanh", [inner])
        return b.op("Mul", [b.op("Mul", [x, b.op("Add", [t, b.const(1.0)])]), b.const(0.5)])
    raise ValueError(f"unknown activation {act!r}")


def _base_attrs(node: Node) -> Dict:
    return {k: a for k, a in node.attrs.items() if k not in _ACT_ATTRS}


def _act(node: Node):
    act = node.attr("activation", "") or ""
    if isinstance(act, bytes):
        act = act.decode()
    return act, list(node.attr("activation_params", []) or [])


def _make_rules(model: Model, contrib: bool, used_ms: List[bool]) -> List[RewriteRule]:
    opset = model.opset("") or 1

    def builder(m: Match, rw: Rewriter) -> _Builder:
        out = m.root.output(0)
        return _Builder(rw, out.type, _np_dtype(out if out.dtype is not None else m.root.input(0)), opset)

    def fused_base(base: str, ms_acts: set):
        def rewrite(m: Match, rw: Rewriter):
            node = m.root
            b = builder(m, rw)
            act, params = _act(node)
            ins = list(node.inputs)
            if contrib and act in ms_acts:
                used_ms[0] = True
                attrs = _base_attrs(node)
                attrs["activation"] = act
                if base == "Conv":
                    if params:
                        attrs["activation_params"] = [float(v) for v in params]
                else:  # FusedGemm: activation_alpha / activation_beta
                    if params:
                        attrs["activation_alpha"] = float(params[0])
                    if len(params) > 1:
                        attrs["activation_beta"] = float(params[1])
                return b.op("Fused" + base, ins, attrs, domain=MS)
            y = b.op(base, ins, _base_attrs(node))
            return emit_activation(b, y, act, params)
        return rewrite

    def fused_matmul(m: Match, rw: Rewriter):
        node = m.root
        b = builder(m, rw)
        act, params = _act(node)
        a, w = node.input(0), node.input(1)
        bias = node.input(2)
        y = b.op("MatMul", [a, w])
        if contrib and act in ("Gelu", "GeluTanh"):
            used_ms[0] = True
            if act == "Gelu":
                return b.op("BiasGelu", [y, bias], domain=MS) if bias is not None else b.op("Gelu", [y], domain=MS)
            return b.op("FastGelu", [y] + ([bias] if bias is not None else []), domain=MS)
        if bias is not None:
            y = b.op("Add", [y, bias])
        return emit_activation(b, y, act, params)

    def gelu(m: Match, rw: Rewriter):
        b = builder(m, rw)
        tanh = (m.root.attr("approximate", "none") or "none") in ("tanh", b"tanh")
        x = m.root.input(0)
        if contrib and opset < 20:
            used_ms[0] = True
            return b.op("FastGelu" if tanh else "Gelu", [x], domain=MS)
        return emit_activation(b, x, "GeluTanh" if tanh else "Gelu", [])

    def layer_norm(m: Match, rw: Rewriter):
        node = m.root
        b = builder(m, rw)
        axis = int(node.attr("axis", -1))
        eps = float(node.attr("epsilon", 1e-5))
        x, scale, bias = node.input(0), node.input(1), node.input(2)
        if opset >= 17:
            attrs = {"axis": axis, "epsilon": eps}
            return b.op("LayerNormalization", [x, scale] + ([bias] if bias is not None else []), attrs)
        rank = len(x.shape.dims) if x.shape is not None and x.shape.dims is not None else None
        if axis < 0:
            axes = list(range(axis, 0)) if rank is None else list(range(rank + axis, rank))
        elif rank is not None:
            axes = list(range(axis, rank))
        else:
            return None
        xt = x.type

        def mean(v: Value) -> Value:
            if opset >= 18:
                return b.op("ReduceMean", [v, rw.const(np.array(axes, np.int64), "axes")], {"keepdims": 1}, typed=False)
            return b.op("ReduceMean", [v], {"axes": axes, "keepdims": 1}, typed=False)

        b.vtype = xt
        d = b.op("Sub", [x, mean(x)])
        var = mean(b.op("Mul", [d, d]))
        std = b.op("Sqrt", [b.op("Add", [var, b.const(eps)], typed=False)], typed=False)
        y = b.op("Mul", [b.op("Div", [d, std]), scale])
        return b.op("Add", [y, bias]) if bias is not None else y

    def attention(m: Match, rw: Rewriter):
        node = m.root
        b = builder(m, rw)
        q, k, v, mask = node.input(0), node.input(1), node.input(2), node.input(3)
        heads = int(node.attr("num_heads"))
        scale = node.attr("scale")
        ms_ok = contrib and q.dtype is not None and q.dtype.numpy == np.float32
        if mask is not None and (ms_ok or opset >= 23):
            mask = _full_mask(b, q, k, mask)
        if ms_ok:
            used_ms[0] = True
            attrs = {"num_heads": heads, **({"scale": float(scale)} if scale is not None else {})}
            ins = [q, k, v] + ([None, None, mask] if mask is not None else [])
            return b.op("MultiHeadAttention", ins, attrs, domain=MS)
        if opset >= 23:
            attrs = {"q_num_heads": heads, "kv_num_heads": heads, **({"scale": float(scale)} if scale is not None else {})}
            return b.op("Attention", [q, k, v] + ([mask] if mask is not None else []), attrs)
        split = rw.const(np.array([0, 0, heads, -1], np.int64), "heads")

        def heads_of(x: Value, perm: List[int]) -> Value:
            return b.op("Transpose", [b.op("Reshape", [x, split], typed=False)], {"perm": perm}, typed=False)

        qh = heads_of(q, [0, 2, 1, 3])
        if scale is None:  # 1/sqrt(Dq) from the runtime shape
            dq = b.op("Gather", [b.op("Shape", [qh], typed=False), rw.const(np.array([3], np.int64), "axis")],
                      {"axis": 0}, typed=False)
            dq = b.op("Cast", [dq], {"to": int(onnx_dtype(b.dtype))}, typed=False)
            qh = b.op("Div", [qh, b.op("Sqrt", [dq], typed=False)], typed=False)
        elif float(scale) != 1.0:
            qh = b.op("Mul", [qh, b.const(float(scale))], typed=False)
        s = b.op("MatMul", [qh, heads_of(k, [0, 2, 3, 1])], typed=False)
        if mask is not None:
            s = b.op("Add", [s, mask], typed=False)
        o = b.op("MatMul", [b.op("Softmax", [s], {"axis": -1}, typed=False), heads_of(v, [0, 2, 1, 3])], typed=False)
        o = b.op("Transpose", [o], {"perm": [0, 2, 1, 3]}, typed=False)
        return b.op("Reshape", [o, rw.const(np.array([0, 0, -1], np.int64), "merged")])

    rules = [
        RewriteRule("lower-attention", Op("Attention", domain="edgec", extra_inputs=True), attention),
        RewriteRule("lower-fused-conv", Op("FusedConv", domain="edgec", extra_inputs=True), fused_base("Conv", _MS_CONV_ACTS)),
        RewriteRule("lower-fused-convtranspose", Op("FusedConvTranspose", domain="edgec", extra_inputs=True),
                    fused_base("ConvTranspose", set())),
        RewriteRule("lower-fused-gemm", Op("FusedGemm", domain="edgec", extra_inputs=True), fused_base("Gemm", _MS_GEMM_ACTS)),
        RewriteRule("lower-fused-matmul", Op("FusedMatMul", domain="edgec", extra_inputs=True), fused_matmul),
        RewriteRule("lower-gelu", Op("Gelu", domain="edgec", extra_inputs=True), gelu),
        RewriteRule("lower-layernorm", Op("LayerNorm", domain="edgec", extra_inputs=True), layer_norm),
    ]
    return rules


def onnx_dtype(dtype: np.dtype) -> int:
    """The ONNX TensorProto data type of a numpy dtype."""
    import onnx

    return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def _full_mask(b: _Builder, q: Value, k: Value, mask: Value) -> Value:
    """``mask`` as a rank-4 tensor whose last two dims are exactly [Sq, Sk] (Expand when not known)."""
    md = mask.shape.dims if mask.shape is not None else None
    qd = q.shape.dims if q.shape is not None else None
    kd = k.shape.dims if k.shape is not None else None
    if md is not None and qd is not None and kd is not None and len(md) == 4 and len(qd) == 3 and len(kd) == 3 \
            and dims_equal(md[2], qd[1]) and dims_equal(md[3], kd[1]):
        return mask
    rw = b.rw
    one = rw.const(np.array([1], np.int64), "one")

    def seq(x: Value) -> Value:
        return b.op("Gather", [b.op("Shape", [x], typed=False), one], {"axis": 0}, typed=False)

    shape = b.op("Concat", [rw.const(np.array([1, 1], np.int64), "ones"), seq(q), seq(k)], {"axis": 0}, typed=False)
    return b.op("Expand", [mask, shape], typed=False)


def has_edgec_ops(model: Model) -> bool:
    """True when any graph of ``model`` holds an ``edgec``-domain node."""
    return any(n.domain == edgec_ops.DOMAIN for g in model.all_graphs() for n in g)


def lower_fused_linear(model: Model) -> bool:
    """Rewrite only ``edgec.FusedGemm`` / ``edgec.FusedMatMul`` into standard ONNX (the base op plus
    its activation, as :func:`lower_for_onnx` does): passes that rewrite plain Gemm/MatMul weights
    (weight-only quantization) see the fused layers too. True if anything changed."""
    rules = [r for r in _make_rules(model, False, [False]) if r.name in ("lower-fused-gemm", "lower-fused-matmul")]
    return apply_rules(model, rules).changed


def lower_for_onnx(model: Model, *, contrib_ops: bool = False) -> bool:
    """Rewrite every edgec-domain op into ONNX (or ``com.microsoft`` ops); True if anything changed."""
    if not has_edgec_ops(model):
        if edgec_ops.DOMAIN in model.opset_imports:
            del model.opset_imports[edgec_ops.DOMAIN]
            return True
        return False
    used_ms = [False]
    stats = apply_rules(model, _make_rules(model, contrib_ops, used_ms))
    if used_ms[0]:
        model.opset_imports.setdefault(MS, 1)
    if not has_edgec_ops(model):
        model.opset_imports.pop(edgec_ops.DOMAIN, None)
    return stats.changed or True
