"""A numpy simulation of a QDQ model as the integer program a TFLite-style int8 back end runs.

:func:`run_integer` interprets a QDQ-form IR model. Quantized *regions* run in exact integer
arithmetic (:mod:`edgec.quant.fixedpoint`, the contract of the C back end); every other node runs
in float on dequantized values through :func:`edgec.ops.evaluate`. :func:`run_float_reference`
runs the same graph with every node in float (Q/DQ with ONNX semantics): what the QDQ model means.

A region is ``anchor -> [Relu | Clip]* -> QuantizeLinear`` where the anchor's quantized inputs come
from ``DequantizeLinear`` of integer tensors; the intermediate values have no other users. Its
kernel is looked up by the anchor's op in :data:`REGION_KERNELS` (one table, one mechanism):

================================  =============================================================================
anchor                            integer program
================================  =============================================================================
Conv, ConvTranspose, Gemm,        ``acc = sum((q_x - Z_x) * (q_w - Z_w)) + q_b`` exactly (int64, checked to fit
MatMul and edgec Fused* forms     int32), then ``requantize`` with ``M[c] = alpha*S_x*S_w[c]/S_out`` per output
                                  channel. A bias whose scale is not ``alpha*S_x*S_w`` (rel. 1e-6) is rescaled
                                  with round half to even; a float bias is quantized so.
Add, Sub                          TFLite ``quantized_add`` (left shift 20, three multipliers)
Mul                               ``MBQM((q1-Z1)*(q2-Z2), S1*S2/S_out)``
AveragePool, GlobalAveragePool    shared (S, Z): ``sum(q)`` over the window (raw q, as TFLite), divided by
                                  the count with ties away from zero: ``sign(s)*((|s| + n//2) // n)``;
                                  ``count_include_pad=1`` pads with Z. Own output (S, Z): ``sum(q - Z_in)``
                                  requantized with ``M[n] = S_in/(S_out*n)`` (``fixedpoint.avgpool_rescale``).
                                  ``ceil_mode=1`` runs in float.
Softmax                           TFLite int8/uint8 reference softmax (``fixedpoint.quantized_softmax``, gemmlowp
                                  fixed point) when the output is ``(1/256, type minimum)`` and a row has at
                                  most 4095 values; any other output parameters run in float.
MaxPool, Reshape, Transpose,      shared (S, Z) only: the op moves the integers unchanged
Concat, Slice, Gather, ...
QuantizeLinear (of a DQ),         requantize ``q_x - Z_x`` with ``M = S_x / S_out`` (TFLite QUANTIZE int8->int8,
Relu, Clip, Identity              and TFLite's int8 Relu/Relu6)
================================  =============================================================================

A fused activation (edgec ``activation`` Relu/Clip, or Relu/Clip nodes before the QuantizeLinear)
narrows the clamp bounds (:func:`edgec.quant.fixedpoint.activation_range`). A region whose runtime
parameters do not fit its kernel (per-channel activations, unequal scales of a data-movement op, an
activation that is not Relu/Clip, output type other than int8/uint8) runs in float, node by node.
At the float -> int boundary ``QuantizeLinear`` keeps ONNX semantics (round half to even, saturate).
Subgraphs (If/Loop/Scan) are not supported; edgec Gelu, LayerNorm and Attention run in float outside regions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import EdgecError
from ..ir.core import Model, Node, Value
from ..ir.dtypes import DType
from ..ir.edgec_ops import DOMAIN as EDGEC, FUSED_OPS
from ..ops import EvaluationError, evaluate
from . import fixedpoint as fx

__all__ = ["run_integer", "run_float_reference", "QTensor", "RegionCall", "RegionKernel", "REGION_KERNELS",
           "IntegerOverflowError", "region_out_params"]

_ACT_ATTRS = ("activation", "activation_params")
_ACT_OPS = ("Relu", "Clip")
_OUT_TYPES = (np.dtype(np.int8), np.dtype(np.uint8))
_BIAS_RTOL = 1e-6


class IntegerOverflowError(EdgecError):
    """An int32 accumulator of the integer program overflows (the C code would wrap)."""


# --- values ------------------------------------------------------------------------------------------
@dataclass
class QTensor:
    """The output of a DequantizeLinear kept in integer form: ``real = (q - zero_point) * scale``."""

    q: np.ndarray
    scale: np.ndarray  # float32, shape () or (C,)
    zero_point: np.ndarray  # int64, same shape as scale
    axis: Optional[int]  # normalized axis of per-channel parameters, None per-tensor
    materialize: Callable[[], np.ndarray]  # the DequantizeLinear in float (ONNX semantics)
    _float: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1

    def params(self) -> Tuple[float, int]:
        """(scale, zero point) of a per-tensor QTensor."""
        return float(self.scale.reshape(-1)[0]), int(self.zero_point.reshape(-1)[0])

    def centered(self) -> np.ndarray:
        """``q - zero_point`` in int64 (per-channel zero points along ``axis``)."""
        zp = self.zero_point
        if self.axis is not None and zp.size > 1:
            shape = [1] * self.q.ndim
            shape[self.axis] = zp.size
            return self.q.astype(np.int64) - zp.reshape(shape)
        return self.q.astype(np.int64) - int(zp.reshape(-1)[0])

    def same_params(self, scale: float, zp: int) -> bool:
        s, z = self.params()
        return np.float32(s) == np.float32(scale) and z == zp

    def to_float(self) -> np.ndarray:
        if self._float is None:
            self._float = self.materialize()
        return self._float


@dataclass
class RegionCall:
    """What a region kernel sees: the anchor, its input values, and the output's integer parameters."""

    node: Node
    inputs: List[Any]  # QTensor for DequantizeLinear outputs, np.ndarray or None otherwise
    out_scale: float
    out_zp: int
    qmin: int  # output range narrowed by the folded activations
    qmax: int
    rounding: str
    evaluate: Callable[[Node, Sequence[Optional[np.ndarray]]], List[np.ndarray]]
    out_dtype: Any = np.int8  # the output QuantizeLinear's integer type
    opset: int = 21  # the default-domain opset of the model


#: A kernel returns the integer output (any int array, values in [qmin, qmax]) or None: run in float.
KernelFn = Callable[[RegionCall], Optional[np.ndarray]]


@dataclass(frozen=True)
class RegionKernel:
    """A region kernel and the anchor inputs that must come from DequantizeLinear (None: every input)."""

    fn: KernelFn
    quantized_inputs: Optional[Tuple[int, ...]] = (0,)
    activation_anchor: bool = False  # the anchor is itself a foldable activation (Relu/Clip)
    terminal: bool = False  # the anchor is the QuantizeLinear that ends the region


def _detached(op_type: str, n_inputs: int, attrs: Dict[str, Any]) -> Node:
    """A node outside any graph, to run one op through :func:`edgec.ops.evaluate`."""
    return Node(op_type, [Value(f"in{i}") for i in range(n_inputs)], 1, {k: v for k, v in attrs.items()})


def _plain_attrs(node: Node) -> Dict[str, Any]:
    return {k: a for k, a in node.attrs.items() if k not in _ACT_ATTRS}


def _int_exact(y: np.ndarray) -> np.ndarray:
    """Float64 results of integer inputs back to int64 (exact: every partial sum is below 2^53)."""
    return np.rint(y).astype(np.int64)


def _scalar(x: Any) -> Optional[float]:
    if x is None:
        return None
    a = np.asarray(x)
    return float(a.reshape(-1)[0]) if a.size == 1 else None


# --- region kernels ----------------------------------------------------------------------------------
def _weight_channel_axis(node: Node, w: QTensor) -> int:
    base = FUSED_OPS.get(node.op_type, node.op_type) if node.domain == EDGEC else node.op_type
    if base == "Conv":
        return 0
    if base == "ConvTranspose":
        return 1 if int(node.attr("group", 1)) == 1 else -1
    if base == "Gemm":
        return 0 if node.attr("transB", 0) else 1
    return w.q.ndim - 1  # MatMul: B's last axis


def _linear(call: RegionCall) -> Optional[np.ndarray]:
    node = call.node
    x, w = call.inputs[0], call.inputs[1]
    if not x.per_tensor:
        return None
    base = FUSED_OPS[node.op_type] if node.domain == EDGEC else node.op_type
    out_axis = 1 if base in ("Conv", "ConvTranspose") else -1
    if not w.per_tensor and w.axis != _weight_channel_axis(node, w):
        return None
    attrs = _plain_attrs(node)
    alpha = beta = 1.0
    if base == "Gemm":
        alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
        attrs.update(alpha=1.0, beta=1.0)
    acc = _int_exact(call.evaluate(_detached(base, 2, attrs), [x.centered().astype(np.float64),
                                                               w.centered().astype(np.float64)])[0])
    s_x = float(x.params()[0])
    s_acc = alpha * s_x * w.scale.astype(np.float64).reshape(-1)  # one per output channel (or one)
    bias = call.inputs[2] if len(call.inputs) > 2 else None
    if bias is not None:
        if isinstance(bias, QTensor):
            ratio = beta * bias.scale.astype(np.float64).reshape(-1) / s_acc
            qb = bias.centered()
            if np.all(np.abs(ratio - 1.0) <= _BIAS_RTOL):
                b = qb
            else:
                b = fx.round_half_even(qb * (ratio if ratio.size == 1 else _along(ratio, qb, -1))).astype(np.int64)
        else:
            fb = np.asarray(bias, dtype=np.float64)
            b = fx.round_half_even(beta * fb / (s_acc if s_acc.size == 1 else _along(s_acc, fb, -1))).astype(np.int64)
        if out_axis == 1:
            b = b.reshape([1, -1] + [1] * (acc.ndim - 2))
        acc = acc + b
    if np.any((acc < fx.INT32_MIN) | (acc > fx.INT32_MAX)):
        raise IntegerOverflowError(f"{node.op_type} node '{node.name}': the int32 accumulator overflows "
                                   f"(max |acc| = {int(np.abs(acc).max())})")
    m0, shift = fx.quantize_multipliers(s_acc / float(call.out_scale), call.rounding)
    return fx.requantize(acc, m0, shift, call.out_zp, call.qmin, call.qmax, call.rounding,
                         axis=out_axis if m0.size > 1 else None)


def _along(p: np.ndarray, like: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * max(like.ndim, 1)
    shape[axis] = p.size
    return p.reshape(shape)


def _add_sub(call: RegionCall) -> Optional[np.ndarray]:
    a, b = call.inputs[0], call.inputs[1]
    if not (a.per_tensor and b.per_tensor):
        return None
    (s1, z1), (s2, z2) = a.params(), b.params()
    p = fx.add_params(s1, z1, s2, z2, call.out_scale, call.out_zp, call.qmin, call.qmax,
                      sub=call.node.op_type == "Sub", rounding=call.rounding)
    return fx.quantized_add(a.q, b.q, p)


def _mul(call: RegionCall) -> Optional[np.ndarray]:
    a, b = call.inputs[0], call.inputs[1]
    if not (a.per_tensor and b.per_tensor):
        return None
    (s1, z1), (s2, z2) = a.params(), b.params()
    m0, shift = fx.quantize_multiplier(float(np.float32(s1)) * float(np.float32(s2)) / float(call.out_scale),
                                       call.rounding)
    return fx.quantized_mul(a.q, z1, b.q, z2, m0, shift, call.out_zp, call.qmin, call.qmax, call.rounding)


def _requant(call: RegionCall) -> Optional[np.ndarray]:
    x = call.inputs[0]
    if not x.per_tensor:
        return None
    s, _ = x.params()
    m0, shift = fx.quantize_multiplier(float(np.float32(s)) / float(call.out_scale), call.rounding)
    return fx.requantize(x.centered(), m0, shift, call.out_zp, call.qmin, call.qmax, call.rounding)


def _movement(call: RegionCall) -> Optional[np.ndarray]:
    """Pure data movement (or selection) of integers that share the output's (scale, zero point)."""
    args: List[Optional[np.ndarray]] = []
    for v in call.inputs:
        if isinstance(v, QTensor):
            if not (v.per_tensor and v.same_params(call.out_scale, call.out_zp)):
                return None
            args.append(v.q.astype(np.float64))  # exact for integers; every float kernel accepts it
        else:
            args.append(v)
    node = call.node
    y = call.evaluate(_detached(node.op_type, len(args), dict(node.attrs)), args)[0]
    return np.clip(_int_exact(y), call.qmin, call.qmax)


def _pads(node: Node, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> List[Tuple[int, int]]:
    auto = node.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    nd = len(spatial)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for s, k, st, d in zip(spatial, kernel, strides, dilations):
            total = max(0, (math.ceil(s / st) - 1) * st + (k - 1) * d + 1 - s)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return out
    if auto == "VALID":
        return [(0, 0)] * nd
    p = list(node.attr("pads", [0] * (2 * nd)))
    return [(p[i], p[i + nd]) for i in range(nd)]


def _average_pool(call: RegionCall) -> Optional[np.ndarray]:
    x, node = call.inputs[0], call.node
    if not x.per_tensor:
        return None
    s_in, zp = x.params()
    shared = x.same_params(call.out_scale, call.out_zp)
    q = x.q.astype(np.int64) if shared else x.centered()  # rescaling: sum(q - Z_in), pads count as 0
    if not shared:
        zp = 0
    nd = q.ndim - 2
    if node.op_type == "GlobalAveragePool":
        axes = tuple(range(2, q.ndim))
        s = q.sum(axis=axes, keepdims=True)
        n = np.int64(int(np.prod(q.shape[2:])))
    else:
        if node.attr("ceil_mode", 0):
            return None
        kernel = list(node.attr("kernel_shape"))
        strides = list(node.attr("strides", [1] * nd))
        dil = list(node.attr("dilations", [1] * nd))
        pads = _pads(node, q.shape[2:], kernel, strides, dil)
        include = bool(node.attr("count_include_pad", 0))
        width = [(0, 0), (0, 0)] + pads
        xp = np.pad(q, width, constant_values=zp if include else 0)
        mask = np.pad(np.ones(q.shape[2:], dtype=np.int64), pads, constant_values=1 if include else 0)
        ext = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]

        def windows(a: np.ndarray, first: int) -> np.ndarray:
            ax = tuple(range(first, first + nd))
            w = sliding_window_view(a, ext, axis=ax)
            w = w[(Ellipsis,) + tuple(slice(None, None, d) for d in dil)]
            return w[(slice(None),) * first + tuple(slice(None, None, st) for st in strides)]

        ksum = tuple(range(-nd, 0))
        s = windows(xp, 2).sum(axis=ksum)
        n = windows(mask, 0).sum(axis=ksum)
    n = np.maximum(n, 1)  # a window entirely in the padding (ONNX leaves it undefined)
    if not shared:
        if np.any(np.abs(s) > fx.INT32_MAX):
            return None
        return fx.avgpool_rescale(s, n, s_in, call.out_scale, call.out_zp, call.qmin, call.qmax, call.rounding)
    mag = (np.abs(s) + n // 2) // n
    return np.clip(np.sign(s) * mag, call.qmin, call.qmax)


def softmax_layout(node: Node, shape: Sequence[int], opset: int) -> Optional[Tuple[int, int, int]]:
    """``(outer, depth, inner)`` of a Softmax over ``shape`` (opset < 13: the 2-D coercion at ``axis``)."""
    rank = len(shape)
    if rank == 0:
        return None
    axis = int(node.attr("axis", -1 if opset >= 13 else 1))
    if not -rank <= axis < rank:
        return None
    axis %= rank
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    if opset >= 13:
        return outer, int(shape[axis]), int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, int(np.prod(shape[axis:], dtype=np.int64)), 1


def softmax_output_ok(out_scale: float, out_zp: int, out_type: Any) -> bool:
    """Whether (scale, zero point) of a Softmax output are TFLite's fixed ones: (1/256, type minimum)."""
    dt = np.dtype(out_type)
    return dt in _OUT_TYPES and np.float32(out_scale) == np.float32(fx.SOFTMAX_OUTPUT_SCALE) \
        and int(out_zp) == int(np.iinfo(dt).min)


def _softmax(call: RegionCall) -> Optional[np.ndarray]:
    x = call.inputs[0]
    if not x.per_tensor:
        return None
    out_type = np.dtype(call.out_dtype)
    if not softmax_output_ok(call.out_scale, call.out_zp, out_type):
        return None
    lay = softmax_layout(call.node, x.q.shape, call.opset)
    if lay is None or lay[1] > fx.SOFTMAX_MAX_DEPTH or lay[1] < 1:
        return None
    p = fx.softmax_params(x.params()[0], 1.0, call.rounding)
    if p is None:
        return None
    q3 = x.q.astype(np.int64).reshape(lay)
    y = fx.quantized_softmax(q3, p, out_type, axis=1, qmin=call.qmin, qmax=call.qmax)
    return y.reshape(x.q.shape)


_LINEAR = RegionKernel(_linear, (0, 1))

#: Region kernels keyed by (domain, op_type) of the anchor.
REGION_KERNELS: Dict[Tuple[str, str], RegionKernel] = {
    **{("", op): _LINEAR for op in ("Conv", "ConvTranspose", "Gemm", "MatMul")},
    **{(EDGEC, op): _LINEAR for op in FUSED_OPS},
    ("", "Add"): RegionKernel(_add_sub, (0, 1)),
    ("", "Sub"): RegionKernel(_add_sub, (0, 1)),
    ("", "Mul"): RegionKernel(_mul, (0, 1)),
    ("", "AveragePool"): RegionKernel(_average_pool),
    ("", "GlobalAveragePool"): RegionKernel(_average_pool),
    ("", "Softmax"): RegionKernel(_softmax),
    **{("", op): RegionKernel(_movement) for op in (
        "MaxPool", "GlobalMaxPool", "Reshape", "Transpose", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Gather",
        "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "ReduceMax", "ReduceMin")},
    ("", "Concat"): RegionKernel(_movement, None),
    ("", "QuantizeLinear"): RegionKernel(_requant, terminal=True),
    ("", "Identity"): RegionKernel(_requant),
    ("", "Relu"): RegionKernel(_requant, activation_anchor=True),
    ("", "Clip"): RegionKernel(_requant, activation_anchor=True),
}


# --- float evaluation --------------------------------------------------------------------------------
def _act_fn(act: str, p: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    sig = lambda y: 1.0 / (1.0 + np.exp(-y))  # noqa: E731
    table: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "Relu": lambda y: np.maximum(y, 0),
        "Clip": lambda y: np.clip(y, p[0], p[1]),
        "LeakyRelu": lambda y: np.where(y >= 0, y, p[0] * y),
        "Sigmoid": sig,
        "HardSigmoid": lambda y: np.clip(p[0] * y + p[1], 0, 1),
        "HardSwish": lambda y: y * np.clip(y / 6 + 0.5, 0, 1),
        "Gelu": lambda y: y * 0.5 * (1 + erf(y / math.sqrt(2))),
        "GeluTanh": lambda y: 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3))),
        "Silu": lambda y: y * sig(y),
        "Tanh": np.tanh,
    }
    if act not in table:
        raise EvaluationError(f"unknown activation {act!r}")
    return table[act]


def _gelu(node: Node, args: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    approx = node.attr("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    return evaluate(_detached("Gelu", 1, {"approximate": approx or "none"}), [args[0]], 20)[0]


def _layernorm(node: Node, args: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    attrs = {k: node.attr(k) for k in ("axis", "epsilon") if node.attr(k) is not None}
    return evaluate(_detached("LayerNormalization", len(args), attrs), list(args), 17)[0]


def _attention(node: Node, args: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    """edgec.Attention as its definition in :mod:`edgec.ir.edgec_ops` (float64 inside, Q's dtype out)."""
    q, k, v = (np.asarray(a, np.float64) for a in args[:3])
    h = int(node.attr("num_heads"))
    b, sq, sk = q.shape[0], q.shape[1], k.shape[1]
    dq, dv = q.shape[2] // h, v.shape[2] // h
    scale = node.attr("scale", None)
    scale = 1.0 / math.sqrt(dq) if scale is None else float(scale)

    def split(x: np.ndarray, s: int, d: int) -> np.ndarray:
        return x.reshape(b, s, h, d).transpose(0, 2, 1, 3)

    scores = scale * (split(q, sq, dq) @ split(k, sk, dq).transpose(0, 1, 3, 2))
    if len(args) > 3 and args[3] is not None:
        scores = scores + np.asarray(args[3], np.float64)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p = scores / scores.sum(axis=-1, keepdims=True)
    y = (p @ split(v, sk, dv)).transpose(0, 2, 1, 3).reshape(b, sq, h * dv)
    return y.astype(np.asarray(args[0]).dtype)


#: edgec ops (other than the Fused* ones) that run in float outside quantized regions.
_EDGEC_FLOAT: Dict[str, Callable[[Node, Sequence[Optional[np.ndarray]]], np.ndarray]] = {
    "Gelu": _gelu, "LayerNorm": _layernorm, "Attention": _attention}


def region_out_params(anchor: Node, acts: Sequence[Node], q: Node, value: Callable[[Optional[Value]], Any],
                      opset_of: Callable[[Node], int]) -> Optional[Tuple[float, int, np.dtype, int, int]]:
    """``(scale, zero point, dtype, qmin, qmax)`` of a region's output QuantizeLinear, the clamp bounds
    narrowed by the fused activation and the Relu/Clip nodes ``acts``; None when the region must run
    in float. ``value(v)`` gives a value's array (None for an omitted input)."""
    scale = _scalar(value(q.input(1)))
    zpv = value(q.input(2))
    if scale is None or (zpv is not None and np.asarray(zpv).size != 1):
        return None
    if zpv is not None:
        dt, zp = np.asarray(zpv).dtype, int(np.asarray(zpv).reshape(-1)[0])
    else:
        od = int(q.attr("output_dtype", 0) or 0)
        dt, zp = (DType(od).numpy if od else np.dtype(np.uint8)), 0
    if dt not in _OUT_TYPES:
        return None
    info = np.iinfo(dt)
    lo, hi = int(info.min), int(info.max)
    folds: List[Tuple[str, Tuple[Optional[float], ...]]] = []
    if anchor.domain == EDGEC and anchor.attr("activation", ""):
        folds.append((anchor.attr("activation"), tuple(anchor.attr("activation_params", []) or [])))
    for a in acts:
        if a.op_type == "Relu":
            folds.append(("Relu", ()))
        elif opset_of(a) >= 11:  # Clip: bounds as inputs
            folds.append(("Clip", (_scalar(value(a.input(1))), _scalar(value(a.input(2))))))
        else:  # Clip: bounds as attributes
            folds.append(("Clip", (a.attr("min", None), a.attr("max", None))))
    for act, params in folds:
        if act not in _ACT_OPS:
            return None
        lo, hi = fx.activation_range(act, params, scale, zp, lo, hi)
    return scale, zp, dt, lo, hi


class _Interpreter:
    def __init__(self, model: Model, rounding: str, integer: bool) -> None:
        if rounding not in fx.ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {fx.ROUNDING_MODES}, not {rounding!r}")
        self.model = model
        self.graph = model.graph
        self.rounding = rounding
        self.integer = integer
        self.opset = model.opset("") or 21
        self.env: Dict[Value, Any] = {}
        self.stats: Dict[str, List[str]] = {"integer": [], "float": []}
        self.regions: Dict[Node, Tuple[RegionKernel, List[Node], Node]] = self._plan() if integer else {}

    # --- planning: structure only; kernels decide on runtime parameters ---------------------------
    def _plan(self) -> Dict[Node, Tuple[RegionKernel, List[Node], Node]]:
        nodes = list(self.graph)
        pos = {n: i for i, n in enumerate(nodes)}
        claimed: set = set()
        regions: Dict[Node, Tuple[RegionKernel, List[Node], Node]] = {}

        def ready(v: Optional[Value], at: Node) -> bool:
            return v is None or v.producer is None or pos.get(v.producer, len(nodes)) < pos[at]

        def from_dq(v: Optional[Value]) -> bool:
            return v is not None and v.producer is not None and v.producer.op_type == "DequantizeLinear" \
                and v.producer.domain == ""

        for n in nodes:
            spec = REGION_KERNELS.get((n.domain, n.op_type))
            if spec is None or n in claimed or n.output(0) is None \
                    or any(o is not None and o.has_uses() for o in n.outputs[1:]):
                continue
            if not all(from_dq(n.input(i)) for i in self._qins(spec, n)):
                continue
            if spec.terminal:
                regions[n] = (spec, [], n)
                continue
            acts: List[Node] = []
            cur, q = n.output(0), None
            while q is None:
                users = cur.consumers()
                if len(users) != 1 or cur.is_graph_output() or len(cur.uses()) != 1:
                    break
                u = users[0]
                if u.domain == "" and u.op_type in _ACT_OPS and u.input(0) is cur and u not in claimed \
                        and all(ready(v, n) for v in u.inputs[1:]):
                    acts.append(u)
                    cur = u.output(0)
                elif u.domain == "" and u.op_type == "QuantizeLinear" and u.input(0) is cur \
                        and all(ready(v, n) for v in u.inputs[1:]):
                    q = u
                else:
                    break
            if q is None:
                continue
            regions[n] = (spec, acts, q)
            claimed.update(acts)
            claimed.add(q)
        return regions

    # --- evaluation ------------------------------------------------------------------------------
    def _opset_of(self, node: Node) -> int:
        return self.model.opset(node.domain) or (1 if node.domain else self.opset)

    def eval_float(self, node: Node, args: Sequence[Optional[np.ndarray]]) -> List[np.ndarray]:
        """One node in float; edgec Fused* ops as their base op plus the activation."""
        if node.domain == EDGEC:
            if node.op_type in _EDGEC_FLOAT:
                return [_EDGEC_FLOAT[node.op_type](node, args)]
            if node.op_type not in FUSED_OPS:
                raise EvaluationError(f"edgec::{node.op_type} runs only inside quantized regions")
            base = FUSED_OPS[node.op_type]
            if base == "MatMul":
                y = evaluate(_detached("MatMul", 2, {}), list(args[:2]), self.opset)[0]
                if len(args) > 2 and args[2] is not None:
                    y = (y + args[2]).astype(y.dtype)
            else:
                y = evaluate(_detached(base, len(args), _plain_attrs(node)), list(args), self.opset)[0]
            act = node.attr("activation", "") or ""
            if act:
                y = _act_fn(act, list(node.attr("activation_params", []) or []))(y).astype(y.dtype)
            return [y]
        return evaluate(node, args, self._opset_of(node))

    def _float(self, v: Any) -> Any:
        return v.to_float() if isinstance(v, QTensor) else v

    def _get(self, v: Optional[Value]) -> Any:
        return None if v is None else self.env[v]

    def _run_plain(self, node: Node) -> None:
        args = [self._float(self._get(v)) for v in node.inputs]
        if self.integer and node.domain == "" and node.op_type == "DequantizeLinear":
            qt = self._dequantize(node, args)
            if qt is not None:
                self.env[node.output(0)] = qt
                return
        for o, y in zip(node.outputs, self.eval_float(node, args)):
            if o is not None:
                self.env[o] = y
        self.stats["float"].append(node.name)

    def _dequantize(self, node: Node, args: List[Any]) -> Optional[QTensor]:
        x, scale = args[0], args[1]
        zp = args[2] if len(args) > 2 else None
        if x.dtype.kind not in "iu" or x.dtype.itemsize > 4 or int(node.attr("block_size", 0) or 0) > 0:
            return None
        scale = np.asarray(scale, dtype=np.float32)
        zp = np.zeros(scale.shape, np.int64) if zp is None else np.asarray(zp).astype(np.int64)
        axis = None
        if scale.size > 1:
            axis = int(node.attr("axis", 1)) % x.ndim
        opset = self._opset_of(node)
        return QTensor(np.asarray(x), scale, zp, axis, lambda: evaluate(node, args, opset)[0])

    def _out_params(self, anchor: Node, acts: List[Node], q: Node) -> Optional[Tuple[float, int, np.dtype, int, int]]:
        return region_out_params(anchor, acts, q, lambda v: None if v is None else self._float(self._get(v)),
                                 self._opset_of)

    def _run_region(self, anchor: Node, spec: RegionKernel, acts: List[Node], q: Node) -> None:
        chain = [anchor] if spec.activation_anchor else []
        params = self._out_params(anchor, chain + acts, q)
        y = None
        if params is not None:
            scale, zp, dt, lo, hi = params
            inputs = [self._get(v) for v in anchor.inputs]
            call = RegionCall(anchor, inputs, scale, zp, lo, hi, self.rounding,
                              lambda n, a: evaluate(n, a, self.opset), np.dtype(dt), self._opset_of(anchor))
            if all(isinstance(inputs[i], QTensor) for i in self._qins(spec, anchor)):
                y = spec.fn(call)
        if y is None:  # parameters outside the kernel's contract: the chain in float
            for n in [anchor] + acts + ([q] if q is not anchor else []):
                self._run_plain(n)
            return
        self.env[q.output(0)] = np.asarray(y).astype(dt)
        self.stats["integer"].append(anchor.name)

    @staticmethod
    def _qins(spec: RegionKernel, node: Node) -> List[int]:
        return list(range(len(node.inputs)) if spec.quantized_inputs is None else spec.quantized_inputs)

    def run(self, feeds: Dict[str, np.ndarray], return_quantized: bool) -> Dict[str, np.ndarray]:
        g = self.graph
        for v in g.initializers.values():
            c = v.const
            self.env[v] = c.to_dense() if hasattr(c, "to_dense") else c.numpy()
        for v in g.inputs:
            if v.name in feeds:
                self.env[v] = np.asarray(feeds[v.name])
            elif v not in self.env:
                raise EvaluationError(f"no feed for graph input '{v.name}'")
        interior = {n for _, acts, q in self.regions.values() for n in acts + [q]} - set(self.regions)
        for n in g:
            if n in self.regions:
                spec, acts, q = self.regions[n]
                self._run_region(n, spec, acts, q)
            elif n not in interior:
                self._run_plain(n)
        out: Dict[str, np.ndarray] = {}
        for v in g.outputs:
            val = self.env[v]
            out[v.name] = (val.q if return_quantized else val.to_float()) if isinstance(val, QTensor) else val
        return out


def run_integer(model: Model, feeds: Dict[str, np.ndarray], *, rounding: str = "double",
                return_quantized: bool = False, stats: Optional[Dict[str, List[str]]] = None) -> Dict[str, np.ndarray]:
    """Run a QDQ model as an integer back end would; returns graph outputs by name.

    ``rounding`` is the requantization mode (``'double'`` gemmlowp/TFLite, ``'single'`` CMSIS-NN).
    With ``return_quantized`` an output computed by DequantizeLinear is returned as its integer input.
    ``stats``, when given, receives the names of the anchors run in integer and the nodes run in float.
    """
    it = _Interpreter(model, rounding, integer=True)
    out = it.run(feeds, return_quantized)
    if stats is not None:
        stats.update(it.stats)
    return out


def run_float_reference(model: Model, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Run every node of the QDQ model in float (Q/DQ with ONNX semantics); returns outputs by name."""
    return _Interpreter(model, "double", integer=False).run(feeds, False)
