"""Per-op shape rules for :mod:`edgec.ir.shapes` (default ONNX domain).

Each rule takes a :class:`~edgec.ir.shapes.ShapeContext` and returns one ``Type | None`` per
output (a shorter list leaves the rest unknown), or None. Rules never guess: unknown stays unknown.
Attribute-or-input parameters (Squeeze axes, Split sizes, Reduce axes, Slice, Pad...) are read from
whichever form the node uses, so the rules work across opsets.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .dtypes import DType
from .shapes import (
    Dims, ShapeContext, broadcast_shapes, constant_array, dim_add, dim_div, dim_mul, dim_prod, dim_sub, dims_equal, shape_rule,
    unify_dim,
)
from .types import Dim, SequenceType, Shape, TensorType

INT64 = DType.INT64
BIG = 2**62  # slice bounds beyond this mean "to the end"


def T(dtype: Optional[DType], dims: Optional[Sequence[Dim]]) -> Optional[TensorType]:
    """A tensor type, or None when the element type is unknown."""
    if dtype is None:
        return None
    return TensorType(dtype, Shape(None if dims is None else tuple(dims)))


def _axis(a: int, rank: int) -> Optional[int]:
    a = int(a)
    if a < 0:
        a += rank
    return a if 0 <= a < rank else None


def _unknown_dims(ctx: ShapeContext, i: int) -> Optional[Dims]:
    d = ctx.dims(i)
    return None if d is None else (None,) * len(d)


# --- elementwise ---------------------------------------------------------------------------------
SAME = (
    "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Gelu",
    "Erf", "Softplus", "Softsign", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round",
    "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
    "ThresholdedRelu", "Mish", "Shrink", "BitwiseNot", "Softmax", "LogSoftmax", "Hardmax", "CumSum", "Trilu",
    "LRN", "MeanVarianceNormalization", "InstanceNormalization", "LpNormalization", "GroupNormalization",
    "RMSNormalization", "ReverseSequence", "PRelu", "Swish", "ScatterND", "ScatterElements", "Scatter",
)


@shape_rule(*SAME)
def _same(ctx: ShapeContext):
    t = ctx.tensor_type(0)
    if t is None:
        return None
    return [TensorType(t.dtype, t.shape)]


@shape_rule("Identity")
def _identity(ctx: ShapeContext):
    ctx.set_shape_value(0, ctx.shape_value(0))
    t = ctx.type(0)
    return [TensorType(t.dtype, t.shape) if isinstance(t, TensorType) else t]


@shape_rule("Not", "IsNaN", "IsInf")
def _bool_unary(ctx: ShapeContext):
    return [T(DType.BOOL, ctx.dims(0))]


@shape_rule("Dropout")
def _dropout(ctx: ShapeContext):
    t = ctx.tensor_type(0)
    return [T(ctx.dtype(0), ctx.dims(0)), T(DType.BOOL, ctx.dims(0))] if t is not None else None


_SV_OPS = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


def _sv_arith(ctx: ShapeContext, op: str, dims: Optional[Dims]) -> None:
    """Shape-value arithmetic on small integer tensors."""
    if dims is None or len(dims) > 1 or ctx.dtype(0) is None or not ctx.dtype(0).is_integer:
        return
    a, b = ctx.shape_value(0), ctx.shape_value(1)
    if a is None or b is None:
        return
    n = max(len(a), len(b))
    if len(a) not in (1, n) or len(b) not in (1, n):
        return
    out: List[Dim] = []
    for i in range(n):
        x, y = a[i if len(a) > 1 else 0], b[i if len(b) > 1 else 0]
        if isinstance(x, int) and isinstance(y, int):
            if op == "add":
                r: Dim = x + y
            elif op == "sub":
                r = x - y
            elif op == "mul":
                r = x * y
            else:
                r = x // y if y and x % y == 0 else (x // y if y > 0 and x >= 0 else None)
        elif op == "add":
            r = dim_add(x, y)
        elif op == "sub":
            r = dim_sub(x, y)
        elif op == "mul":
            r = dim_mul(x, y)
        else:
            r = dim_div(x, y)
        out.append(r)
    ctx.set_shape_value(0, out)


BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
          "Max", "Min", "Sum", "Mean")


@shape_rule(*BINARY)
def _broadcast_same(ctx: ShapeContext):
    dims = broadcast_shapes(*[ctx.dims(i) for i in range(ctx.num_inputs)])
    op = ctx.node.op_type
    if op in _SV_OPS:
        _sv_arith(ctx, _SV_OPS[op], dims)
    return [T(ctx.dtype(0), dims)]


@shape_rule("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor")
def _compare(ctx: ShapeContext):
    dims = broadcast_shapes(ctx.dims(0), ctx.dims(1))
    if ctx.node.op_type == "Equal" and dims is not None and len(dims) <= 1:
        a, b = ctx.shape_value(0), ctx.shape_value(1)
        if a is not None and b is not None and len(a) in (1, len(b)) and len(b) in (1, len(a)):
            n = max(len(a), len(b))
            ctx.set_shape_value(0, [_sv_equal(a[i % len(a)], b[i % len(b)]) for i in range(n)])
    return [T(DType.BOOL, dims)]


def _sv_equal(x: Dim, y: Dim) -> Dim:
    """Equality of two shape-value elements as 1/0 (dims are never negative), or None."""
    if isinstance(x, int) and isinstance(y, int):
        return int(x == y)
    if x is not None and dims_equal(x, y):
        return 1
    if (isinstance(x, str) and isinstance(y, int) and y < 0) or (isinstance(y, str) and isinstance(x, int) and x < 0):
        return 0
    return None


@shape_rule("Where")
def _where(ctx: ShapeContext):
    dims = broadcast_shapes(ctx.dims(0), ctx.dims(1), ctx.dims(2))
    c, a, b = ctx.shape_value(0), ctx.shape_value(1), ctx.shape_value(2)
    if dims is not None and len(dims) <= 1 and c is not None and a is not None and b is not None:
        n = max(len(c), len(a), len(b))
        if all(len(v) in (1, n) for v in (c, a, b)):
            out: List[Dim] = []
            for i in range(n):
                ci = c[i % len(c)]
                out.append(None if ci is None else (a[i % len(a)] if ci else b[i % len(b)]))
            ctx.set_shape_value(0, out)
    return [T(ctx.dtype(1) or ctx.dtype(2), dims)]


@shape_rule("Cast")
def _cast(ctx: ShapeContext):
    to = ctx.attr("to")
    if to is None:
        return None
    to = DType(int(to))
    src = ctx.dtype(0)
    if to.is_integer and src is not None and (src.is_integer or src == DType.BOOL):
        ctx.set_shape_value(0, ctx.shape_value(0))
    return [T(to, ctx.dims(0))]


@shape_rule("CastLike")
def _castlike(ctx: ShapeContext):
    return [T(ctx.dtype(1), ctx.dims(0))]


@shape_rule("BatchNormalization")
def _batchnorm(ctx: ShapeContext):
    x = ctx.dims(0)
    c: Dim = x[1] if x is not None and len(x) > 1 else None
    for i in range(1, 5):
        d = ctx.dims(i)
        if d is not None and len(d) == 1:
            c = unify_dim(c, d[0])
    dt = ctx.dtype(0)
    stat = ctx.dtype(3) or ctx.dtype(1) or dt
    return [T(dt, x), T(stat, (c,)), T(stat, (c,)), T(stat, (c,)), T(stat, (c,))]


@shape_rule("LayerNormalization")
def _layernorm(ctx: ShapeContext):
    x = ctx.dims(0)
    stash = DType(int(ctx.attr("stash_type", 1)))
    if x is None:
        return [T(ctx.dtype(0), None), T(stash, None), T(stash, None)]
    ax = _axis(ctx.attr("axis", -1), len(x))
    if ax is None:
        return [T(ctx.dtype(0), x)]
    red = tuple(x[:ax]) + (1,) * (len(x) - ax)
    return [T(ctx.dtype(0), x), T(stash, red), T(stash, red)]


# --- quantization --------------------------------------------------------------------------------
@shape_rule("QuantizeLinear")
def _quantize(ctx: ShapeContext):
    if ctx.has_input(2):
        dt = ctx.dtype(2)
    elif ctx.attr("output_dtype", 0):
        dt = DType(int(ctx.attr("output_dtype")))
    else:
        dt = DType.UINT8
    return [T(dt, ctx.dims(0))]


@shape_rule("DequantizeLinear")
def _dequantize(ctx: ShapeContext):
    if ctx.attr("output_dtype", 0):
        dt: Optional[DType] = DType(int(ctx.attr("output_dtype")))
    elif ctx.opset >= 19:
        dt = ctx.dtype(1)
    else:
        dt = DType.FLOAT
    return [T(dt, ctx.dims(0))]


@shape_rule("DynamicQuantizeLinear")
def _dyn_quant(ctx: ShapeContext):
    return [T(DType.UINT8, ctx.dims(0)), T(DType.FLOAT, ()), T(DType.UINT8, ())]


# --- convolution and pooling ---------------------------------------------------------------------
def _spatial_out(ctx: ShapeContext, x: Dims, kernel: Sequence[int], is_pool: bool) -> List[Dim]:
    n = len(kernel)
    strides = list(ctx.attr("strides", None) or [1] * n)
    dil = list(ctx.attr("dilations", None) or [1] * n)
    pads = list(ctx.attr("pads", None) or [0] * (2 * n))
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    ceil_mode = bool(ctx.attr("ceil_mode", 0)) if is_pool else False
    out: List[Dim] = []
    for i in range(n):
        d, s, k = x[2 + i], int(strides[i]), (int(kernel[i]) - 1) * int(dil[i]) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append((-(-d // s) if isinstance(d, int) else (d if s == 1 else None)))
        elif auto_pad == "VALID":
            if isinstance(d, int):
                out.append((d - k) // s + 1 if d >= k else None)
            else:
                out.append(dim_sub(d, k - 1) if s == 1 else None)
        else:
            pb, pe = int(pads[i]), int(pads[i + n])
            if isinstance(d, int):
                num = d + pb + pe - k
                if ceil_mode:
                    o = -(-num // s) + 1
                    if (o - 1) * s >= d + pb:
                        o -= 1
                else:
                    o = num // s + 1
                out.append(o)
            else:
                out.append(dim_add(d, pb + pe - k + 1) if s == 1 else None)
    return out


@shape_rule("Conv", "ConvInteger", "QLinearConv")
def _conv(ctx: ShapeContext):
    op = ctx.node.op_type
    xi, wi = (0, 3) if op == "QLinearConv" else (0, 1)
    dt = {"Conv": ctx.dtype(0), "ConvInteger": DType.INT32,
          "QLinearConv": ctx.dtype(7) if ctx.has_input(7) else ctx.dtype(0)}[op]
    x, w = ctx.dims(xi), ctx.dims(wi)
    kernel = ctx.attr("kernel_shape", None)
    if kernel is None and w is not None and all(isinstance(d, int) for d in w[2:]):
        kernel = list(w[2:])
    rank = len(x) if x is not None else (len(w) if w is not None else None)
    if rank is None:
        return [T(dt, None)]
    m: Dim = w[0] if w is not None else None
    if x is None or kernel is None or len(kernel) != rank - 2:
        return [T(dt, (x[0] if x is not None else None, m) + (None,) * (rank - 2))]
    return [T(dt, [x[0], m] + _spatial_out(ctx, x, kernel, False))]


@shape_rule("ConvTranspose")
def _conv_transpose(ctx: ShapeContext):
    x, w = ctx.dims(0), ctx.dims(1)
    dt = ctx.dtype(0)
    if x is None:
        return [T(dt, None)]
    n = len(x) - 2
    group = int(ctx.attr("group", 1))
    c: Dim = dim_mul(w[1], group) if w is not None and len(w) == n + 2 else None
    kernel = ctx.attr("kernel_shape", None)
    if kernel is None and w is not None and all(isinstance(d, int) for d in w[2:]):
        kernel = list(w[2:])
    out_shape = ctx.attr("output_shape", None)
    if out_shape is not None:
        out_shape = list(out_shape)[-n:] if len(out_shape) in (n, n + 2) else None
        if out_shape is not None:
            return [T(dt, [x[0], c] + [int(v) for v in out_shape])]
    if kernel is None or len(kernel) != n:
        return [T(dt, [x[0], c] + [None] * n)]
    strides = list(ctx.attr("strides", None) or [1] * n)
    dil = list(ctx.attr("dilations", None) or [1] * n)
    pads = list(ctx.attr("pads", None) or [0] * (2 * n))
    opad = list(ctx.attr("output_padding", None) or [0] * n)
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    out: List[Dim] = []
    for i in range(n):
        d, s = x[2 + i], int(strides[i])
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(dim_mul(d, s))
            continue
        k = (int(kernel[i]) - 1) * int(dil[i]) + 1
        extra = int(opad[i]) + k - (0 if auto_pad == "VALID" else int(pads[i]) + int(pads[i + n]))
        out.append(dim_add(dim_mul(dim_sub(d, 1), s), extra) if d is not None else None)
    return [T(dt, [x[0], c] + out)]


@shape_rule("MaxPool", "AveragePool", "LpPool")
def _pool(ctx: ShapeContext):
    x = ctx.dims(0)
    kernel = ctx.attr("kernel_shape", None)
    dt = ctx.dtype(0)
    if x is None or kernel is None or len(kernel) != len(x) - 2:
        r = None if x is None else [x[0], x[1]] + [None] * (len(x) - 2)
        return [T(dt, r), T(INT64, r)]
    dims = [x[0], x[1]] + _spatial_out(ctx, x, kernel, True)
    return [T(dt, dims), T(INT64, dims)]


@shape_rule("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(ctx: ShapeContext):
    x = ctx.dims(0)
    return [T(ctx.dtype(0), None if x is None else tuple(x[:2]) + (1,) * (len(x) - 2))]


# --- linear algebra ------------------------------------------------------------------------------
@shape_rule("MatMul", "MatMulInteger", "QLinearMatMul")
def _matmul(ctx: ShapeContext):
    op = ctx.node.op_type
    ai, bi = (0, 3) if op == "QLinearMatMul" else (0, 1)
    dt = {"MatMul": ctx.dtype(0), "MatMulInteger": DType.INT32,
          "QLinearMatMul": ctx.dtype(7) if ctx.has_input(7) else ctx.dtype(0)}[op]
    a, b = ctx.dims(ai), ctx.dims(bi)
    if a is None or b is None or not a or not b:
        return [T(dt, None)]
    a1, b1 = len(a) == 1, len(b) == 1
    aa = (1,) + tuple(a) if a1 else tuple(a)
    bb = tuple(b) + (1,) if b1 else tuple(b)
    batch = broadcast_shapes(aa[:-2], bb[:-2])
    out = list(batch or ()) + [aa[-2], bb[-1]]
    if a1:
        out.pop(-2)
    if b1:
        out.pop(-1)
    return [T(dt, out)]


@shape_rule("Gemm")
def _gemm(ctx: ShapeContext):
    a, b = ctx.dims(0), ctx.dims(1)
    m = None if a is None or len(a) != 2 else a[1 if ctx.attr("transA", 0) else 0]
    n = None if b is None or len(b) != 2 else b[0 if ctx.attr("transB", 0) else 1]
    return [T(ctx.dtype(0), (m, n))]


@shape_rule("Einsum")
def _einsum(ctx: ShapeContext):
    eq = (ctx.attr("equation", "") or "").replace(" ", "")
    dt = ctx.dtype(0)
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != ctx.num_inputs:
        return [T(dt, None)]
    letters: dict = {}
    ell: Optional[Dims] = ()
    counts: dict = {}
    for i, term in enumerate(terms):
        d = ctx.dims(i)
        if d is None:
            return [T(dt, None)]
        if "..." in term:
            pre, post = term.split("...")
            n_ell = len(d) - len(pre) - len(post)
            if n_ell < 0:
                return [T(dt, None)]
            ell = broadcast_shapes(ell, tuple(d[len(pre):len(pre) + n_ell]))
            named = list(zip(pre, d[:len(pre)])) + list(zip(post, d[len(d) - len(post):]))
        else:
            if len(term) != len(d):
                return [T(dt, None)]
            named = list(zip(term, d))
        for ch, dim in named:
            counts[ch] = counts.get(ch, 0) + 1
            letters[ch] = unify_dim(letters[ch], dim) if ch in letters else dim
    if not arrow:
        rhs = ("..." if any("..." in t for t in terms) else "") + "".join(sorted(c for c, k in counts.items() if k == 1))
    out: List[Dim] = []
    rest = rhs
    if "..." in rhs:
        pre, post = rhs.split("...")
        if ell is None:
            return [T(dt, None)]
        out = [letters.get(c) for c in pre] + list(ell) + [letters.get(c) for c in post]
    else:
        out = [letters.get(c) for c in rest]
    return [T(dt, out)]


# --- shape manipulation --------------------------------------------------------------------------
@shape_rule("Flatten")
def _flatten(ctx: ShapeContext):
    x = ctx.dims(0)
    if x is None:
        return [T(ctx.dtype(0), (None, None))]
    ax = int(ctx.attr("axis", 1))
    if ax < 0:
        ax += len(x)
    return [T(ctx.dtype(0), (dim_prod(x[:ax]), dim_prod(x[ax:])))]


@shape_rule("Reshape")
def _reshape(ctx: ShapeContext):
    dt = ctx.dtype(0)
    x = ctx.dims(0)
    target = ctx.shape_value(1)
    allowzero = int(ctx.attr("allowzero", 0))
    if target is None:
        sd = ctx.dims(1)
        return [T(dt, None if sd is None or len(sd) != 1 or not isinstance(sd[0], int) else (None,) * sd[0])]
    out: List[Dim] = []
    neg = -1
    for i, v in enumerate(target):
        if v == 0 and not allowzero:
            out.append(x[i] if x is not None and i < len(x) else None)
        elif v == -1:
            neg = i
            out.append(None)
        elif isinstance(v, int) and v < 0:
            return [T(dt, None)]
        else:
            out.append(v)
    if neg >= 0 and x is not None:
        rest = dim_prod(out[:neg] + out[neg + 1:])
        total = dim_prod(x)
        if rest is not None and total is not None and rest != 0:
            out[neg] = dim_div(total, rest)
    sv = ctx.shape_value(0)
    if sv is not None and len(out) <= 1:
        ctx.set_shape_value(0, sv)
    return [T(dt, out)]


@shape_rule("Transpose")
def _transpose(ctx: ShapeContext):
    x = ctx.dims(0)
    if x is None:
        return [T(ctx.dtype(0), None)]
    perm = ctx.attr("perm", None)
    perm = list(range(len(x)))[::-1] if perm is None else [int(p) for p in perm]
    if sorted(_axis(p, len(x)) or 0 for p in perm) != list(range(len(x))):
        return None
    return [T(ctx.dtype(0), [x[_axis(p, len(x))] for p in perm])]  # type: ignore[index]


def _axes(ctx: ShapeContext, idx: int = 1) -> Tuple[bool, Optional[List[int]]]:
    """(given, axes) from the ``axes`` attribute or input ``idx``; axes None when not constant."""
    if ctx.has_attr("axes"):
        return True, [int(a) for a in ctx.attr("axes")]
    if ctx.has_input(idx):
        return True, ctx.ints(idx)
    return False, None


@shape_rule("Squeeze")
def _squeeze(ctx: ShapeContext):
    x = ctx.dims(0)
    dt = ctx.dtype(0)
    given, axes = _axes(ctx)
    if x is None:
        return [T(dt, None)]
    if not given:
        if all(isinstance(d, int) for d in x):
            return [T(dt, [d for d in x if d != 1])]
        return [T(dt, None)]
    if axes is None:
        return [T(dt, None)]
    ax = {_axis(a, len(x)) for a in axes}
    if None in ax:
        return None
    sv = ctx.shape_value(0)
    if sv is not None and len(x) == 1:
        ctx.set_shape_value(0, sv)
    return [T(dt, [d for i, d in enumerate(x) if i not in ax])]


@shape_rule("Unsqueeze")
def _unsqueeze(ctx: ShapeContext):
    x = ctx.dims(0)
    dt = ctx.dtype(0)
    _, axes = _axes(ctx)
    if x is None or axes is None:
        return [T(dt, None)]
    r = len(x) + len(axes)
    ax = sorted(_axis(a, r) for a in axes)  # type: ignore[type-var]
    if None in ax or len(set(ax)) != len(ax):
        return None
    out: List[Dim] = []
    it = iter(x)
    for i in range(r):
        out.append(1 if i in ax else next(it))
    sv = ctx.shape_value(0)
    if sv is not None and len(x) == 0:
        ctx.set_shape_value(0, sv)
    return [T(dt, out)]


@shape_rule("Concat")
def _concat(ctx: ShapeContext):
    ins = [ctx.dims(i) for i in range(ctx.num_inputs) if ctx.has_input(i)]
    dt = next((ctx.dtype(i) for i in range(ctx.num_inputs) if ctx.dtype(i) is not None), None)
    known = [d for d in ins if d is not None]
    if not known:
        return [T(dt, None)]
    r = len(known[0])
    ax = _axis(ctx.attr("axis", 0), r)
    if ax is None or any(len(d) != r for d in known):
        return None
    out: List[Dim] = []
    for i in range(r):
        if i == ax:
            out.append(None if len(known) != len(ins) else _sum(d[i] for d in known))
        else:
            v: Dim = None
            for d in known:
                v = unify_dim(v, d[i])
            out.append(v)
    if r == 1 and len(known) == len(ins):
        svs = [ctx.shape_value(i) for i in range(ctx.num_inputs) if ctx.has_input(i)]
        if all(s is not None for s in svs):
            ctx.set_shape_value(0, [e for s in svs for e in s])  # type: ignore[union-attr]
    return [T(dt, out)]


def _sum(dims) -> Dim:
    out: Dim = 0
    for d in dims:
        out = dim_add(out, d)
        if out is None:
            return None
    return out


@shape_rule("Split")
def _split(ctx: ShapeContext):
    x = ctx.dims(0)
    dt = ctx.dtype(0)
    n = len(ctx.node.outputs)
    if x is None:
        return [T(dt, None)] * n
    ax = _axis(ctx.attr("axis", 0), len(x))
    if ax is None:
        return None
    sizes: Optional[List[Dim]] = None
    if ctx.has_attr("split"):
        sizes = [int(s) for s in ctx.attr("split")]
    elif ctx.has_input(1):
        sizes = ctx.ints(1)  # type: ignore[assignment]
    else:
        d = x[ax]
        if ctx.has_attr("num_outputs") and isinstance(d, int):
            chunk = -(-d // n)
            sizes = [chunk] * (n - 1) + [d - chunk * (n - 1)]
        else:
            q = dim_div(d, n)
            sizes = [q] * n if q is not None else None
    if sizes is None or len(sizes) != n:
        sizes = [None] * n
    return [T(dt, x[:ax] + (s,) + x[ax + 1:]) for s in sizes]


def _slice_len(d: Dim, start: int, end: int, step: int) -> Dim:
    if isinstance(d, int):
        return len(range(*slice(start, end, step).indices(d)))
    if d is not None and step == 1 and start >= 0 and end >= BIG:
        return dim_sub(d, start) if start else d  # assumes d >= start
    return None


@shape_rule("Slice")
def _slice(ctx: ShapeContext):
    x = ctx.dims(0)
    dt = ctx.dtype(0)
    if x is None:
        return [T(dt, None)]
    r = len(x)
    if ctx.has_attr("starts"):
        starts, ends = list(ctx.attr("starts")), list(ctx.attr("ends", []))
        axes_given, axes = ctx.has_attr("axes"), ctx.attr("axes", None)
        steps: Optional[List[int]] = None
    else:
        starts, ends = ctx.ints(1), ctx.ints(2)  # type: ignore[assignment]
        axes_given, axes = ctx.has_input(3), ctx.ints(3) if ctx.has_input(3) else None
        steps = ctx.ints(4) if ctx.has_input(4) else None
        if ctx.has_input(4) and steps is None:
            starts = None  # type: ignore[assignment]
    if axes_given and axes is None:
        return [T(dt, (None,) * r)]
    if starts is None or ends is None:
        if axes is None:
            return [T(dt, (None,) * r)]
        ax = {_axis(a, r) for a in axes}
        return [T(dt, [None if i in ax else d for i, d in enumerate(x)])]
    if axes is None:
        axes = list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)):
        return None
    out = list(x)
    for s, e, a, st in zip(starts, ends, axes, steps):
        i = _axis(a, r)
        if i is None or st == 0:
            return None
        out[i] = _slice_len(x[i], int(s), int(e), int(st))
    sv = ctx.shape_value(0)
    if sv is not None and r == 1 and len(sv) == x[0]:
        ctx.set_shape_value(0, sv[slice(int(starts[0]), int(ends[0]), int(steps[0]))])
    return [T(dt, out)]


@shape_rule("Gather")
def _gather(ctx: ShapeContext):
    x, idx = ctx.dims(0), ctx.dims(1)
    dt = ctx.dtype(0)
    if x is None or idx is None:
        return [T(dt, None)]
    ax = _axis(ctx.attr("axis", 0), len(x))
    if ax is None:
        return None
    sv = ctx.shape_value(0)
    ind = ctx.ints(1)
    if sv is not None and len(x) == 1 and ind is not None and ax == 0:
        n = len(sv)
        if all(-n <= i < n for i in ind):
            ctx.set_shape_value(0, [sv[i] for i in ind])
    return [T(dt, tuple(x[:ax]) + tuple(idx) + tuple(x[ax + 1:]))]


@shape_rule("GatherElements")
def _gather_elements(ctx: ShapeContext):
    return [T(ctx.dtype(0), ctx.dims(1))]


@shape_rule("GatherND")
def _gather_nd(ctx: ShapeContext):
    x, idx = ctx.dims(0), ctx.dims(1)
    dt = ctx.dtype(0)
    b = int(ctx.attr("batch_dims", 0))
    if x is None or idx is None or not idx or not isinstance(idx[-1], int):
        return [T(dt, None)]
    return [T(dt, tuple(idx[:-1]) + tuple(x[b + idx[-1]:]))]


@shape_rule("Shape")
def _shape(ctx: ShapeContext):
    x = ctx.dims(0)
    if x is None:
        return [T(INT64, (None,))]
    r = len(x)
    start, end = int(ctx.attr("start", 0)), ctx.attr("end", None)
    sel = x[slice(*slice(start, None if end is None else int(end)).indices(r))]
    ctx.set_shape_value(0, sel)
    return [T(INT64, (len(sel),))]


@shape_rule("Size")
def _size(ctx: ShapeContext):
    x = ctx.dims(0)
    if x is not None:
        ctx.set_shape_value(0, (dim_prod(x),))
    return [T(INT64, ())]


def _dims_from_shape_input(ctx: ShapeContext, i: int) -> Optional[Dims]:
    sv = ctx.shape_value(i)
    if sv is not None:
        return tuple(None if isinstance(v, int) and v < 0 else v for v in sv)
    sd = ctx.dims(i)
    if sd is not None and len(sd) == 1 and isinstance(sd[0], int):
        return (None,) * sd[0]
    return None


@shape_rule("Expand")
def _expand(ctx: ShapeContext):
    target = _dims_from_shape_input(ctx, 1)
    return [T(ctx.dtype(0), broadcast_shapes(ctx.dims(0), target))]


@shape_rule("Tile")
def _tile(ctx: ShapeContext):
    x = ctx.dims(0)
    reps = ctx.shape_value(1)
    if x is None:
        return [T(ctx.dtype(0), None)]
    if reps is None or len(reps) != len(x):
        return [T(ctx.dtype(0), (None,) * len(x))]
    return [T(ctx.dtype(0), [dim_mul(d, r) for d, r in zip(x, reps)])]


@shape_rule("ConstantOfShape")
def _constant_of_shape(ctx: ShapeContext):
    v = ctx.attr("value", None)
    dt = v.dtype if v is not None else DType.FLOAT
    dims = _dims_from_shape_input(ctx, 0)
    if dims is not None and v is not None and v.numel == 1 and dt.is_integer and all(isinstance(d, int) for d in dims):
        n = dim_prod(dims)
        if isinstance(n, int) and n <= 64 and len(dims) <= 1:
            ctx.set_shape_value(0, [int(v.numpy().reshape(-1)[0])] * n)
    return [T(dt, dims)]


@shape_rule("Range")
def _range(ctx: ShapeContext):
    dt = ctx.dtype(0) or ctx.dtype(1) or ctx.dtype(2)
    s, l, d = ctx.const(0), ctx.const(1), ctx.const(2)
    if s is not None and l is not None and d is not None and s.size == l.size == d.size == 1:
        sv, lv, dv = s.reshape(-1)[0], l.reshape(-1)[0], d.reshape(-1)[0]
        if dv == 0:
            return None
        if s.dtype.kind in "iu":
            n = max(-(-(int(lv) - int(sv)) // int(dv)), 0)
        else:
            n = max(int(math.ceil((float(lv) - float(sv)) / float(dv))), 0)
        return [T(dt, (n,))]
    ssv, lsv, dsv = ctx.shape_value(0), ctx.shape_value(1), ctx.shape_value(2)
    if ssv is not None and lsv is not None and dsv is not None and len(ssv) == len(lsv) == len(dsv) == 1:
        st, li, de = ssv[0], lsv[0], dsv[0]
        if isinstance(st, int) and isinstance(li, int) and isinstance(de, int) and de:
            return [T(dt, (max(-(-(li - st) // de), 0),))]
        if de == 1 and isinstance(st, int) and st >= 0:
            return [T(dt, (dim_sub(li, st),))]  # assumes limit >= start
    return [T(dt, (None,))]


@shape_rule("Pad")
def _pad(ctx: ShapeContext):
    x = ctx.dims(0)
    dt = ctx.dtype(0)
    if x is None:
        return [T(dt, None)]
    r = len(x)
    attr = "pads" if ctx.has_attr("pads") else "paddings"
    pads = [int(p) for p in ctx.attr(attr)] if ctx.has_attr(attr) else ctx.ints(1)
    if pads is None:
        return [T(dt, (None,) * r)]
    if ctx.has_input(3):
        axes = ctx.ints(3)
        if axes is None:
            return [T(dt, (None,) * r)]
        axes = [_axis(a, r) for a in axes]
    else:
        axes = list(range(r))
    if len(pads) != 2 * len(axes) or None in axes:
        return None
    out = list(x)
    n = len(axes)
    for k, a in enumerate(axes):
        d = dim_add(x[a], pads[k] + pads[k + n])
        out[a] = None if isinstance(d, int) and d < 0 else d
    return [T(dt, out)]


def _scaled(d: Dim, s: float) -> Dim:
    if isinstance(d, int):
        return int(np.floor(np.float32(d) * np.float32(s)))
    if d is not None and float(s).is_integer():
        return dim_mul(d, int(s))
    return None


@shape_rule("Resize", "Upsample")
def _resize(ctx: ShapeContext):
    x = ctx.dims(0)
    dt = ctx.dtype(0)
    if x is None:
        return [T(dt, None)]
    r = len(x)
    if ctx.has_attr("scales"):
        scales_i, sizes_i = None, None
        scales: Optional[List[float]] = [float(s) for s in ctx.attr("scales")]
    else:
        scales_i, sizes_i = (1, None) if ctx.num_inputs == 2 else (2, 3)
        scales = ctx.floats(scales_i) if ctx.has_input(scales_i) else None
        if scales is not None and not scales:
            scales = None
    axes = ctx.attr("axes", None)
    axes = list(range(r)) if axes is None else [_axis(a, r) for a in axes]
    if None in axes:
        return None
    sizes = _dims_from_shape_input(ctx, sizes_i) if sizes_i is not None and ctx.has_input(sizes_i) else None
    out = list(x)
    if sizes is not None and len(sizes) == len(axes):
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch") or "stretch"
        for k, a in enumerate(axes):
            out[a] = sizes[k] if policy == "stretch" else None
        return [T(dt, out)]
    if scales is not None and len(scales) == len(axes):
        for k, a in enumerate(axes):
            out[a] = _scaled(x[a], scales[k])
        return [T(dt, out)]
    return [T(dt, (None,) * r)]


# --- reductions ----------------------------------------------------------------------------------
REDUCE = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@shape_rule(*REDUCE)
def _reduce(ctx: ShapeContext):
    x = ctx.dims(0)
    dt = ctx.dtype(0)
    keep = int(ctx.attr("keepdims", 1))
    given, axes = _axes(ctx)
    if x is None:
        return [T(dt, None)]
    r = len(x)
    if given and axes is None:
        return [T(dt, [1 if d == 1 else None for d in x] if keep else None)]
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return [T(dt, x)]
        axes = list(range(r))
    ax = {_axis(a, r) for a in axes}
    if None in ax:
        return None
    if keep:
        return [T(dt, [1 if i in ax else d for i, d in enumerate(x)])]
    return [T(dt, [d for i, d in enumerate(x) if i not in ax])]


@shape_rule("ArgMax", "ArgMin")
def _argmax(ctx: ShapeContext):
    x = ctx.dims(0)
    if x is None:
        return [T(INT64, None)]
    ax = _axis(ctx.attr("axis", 0), len(x))
    if ax is None:
        return None
    if int(ctx.attr("keepdims", 1)):
        return [T(INT64, x[:ax] + (1,) + x[ax + 1:])]
    return [T(INT64, x[:ax] + x[ax + 1:])]


@shape_rule("TopK")
def _topk(ctx: ShapeContext):
    x = ctx.dims(0)
    dt = ctx.dtype(0)
    if x is None:
        return [T(dt, None), T(INT64, None)]
    ax = _axis(ctx.attr("axis", -1), len(x))
    if ax is None:
        return None
    if ctx.has_attr("k"):
        k: Dim = int(ctx.attr("k"))
    else:
        sv = ctx.shape_value(1)
        k = sv[0] if sv is not None and len(sv) == 1 else None
    out = x[:ax] + (k,) + x[ax + 1:]
    return [T(dt, out), T(INT64, out)]


@shape_rule("NonZero")
def _nonzero(ctx: ShapeContext):
    return [T(INT64, (ctx.rank(0), None))]


@shape_rule("OneHot")
def _onehot(ctx: ShapeContext):
    idx = ctx.dims(0)
    dt = ctx.dtype(2)
    if idx is None:
        return [T(dt, None)]
    depth = ctx.const(1)
    dep: Dim = None
    if depth is not None and depth.size == 1:
        dep = int(np.asarray(depth).reshape(-1)[0])
    r = len(idx) + 1
    ax = _axis(ctx.attr("axis", -1), r)
    if ax is None:
        return None
    out = list(idx)
    out.insert(ax, dep)
    return [T(dt, out)]


@shape_rule("Constant")
def _constant(ctx: ShapeContext):
    node = ctx.node
    if ctx.has_attr("value"):
        t = ctx.attr("value")
        if t is None or not hasattr(t, "dims"):
            return None
        arr = constant_array(node.output(0), 64) if t.numel <= 64 else None
        if arr is not None and arr.ndim <= 1 and t.dtype.is_integer:
            ctx.set_shape_value(0, [int(v) for v in arr.reshape(-1)])
        return [TensorType(t.dtype, Shape(t.dims))]
    if ctx.has_attr("value_float"):
        return [T(DType.FLOAT, ())]
    if ctx.has_attr("value_floats"):
        return [T(DType.FLOAT, (len(ctx.attr("value_floats")),))]
    if ctx.has_attr("value_int"):
        ctx.set_shape_value(0, [int(ctx.attr("value_int"))])
        return [T(INT64, ())]
    if ctx.has_attr("value_ints"):
        vals = [int(v) for v in ctx.attr("value_ints")]
        ctx.set_shape_value(0, vals)
        return [T(INT64, (len(vals),))]
    if ctx.has_attr("value_string"):
        return [T(DType.STRING, ())]
    if ctx.has_attr("value_strings"):
        return [T(DType.STRING, (len(ctx.attr("value_strings")),))]
    if ctx.has_attr("sparse_value"):
        sp = ctx.attr("sparse_value")
        return [TensorType(sp.dtype, Shape(sp.dims))]
    return None


# --- spatial rearrangement -----------------------------------------------------------------------
@shape_rule("DepthToSpace", "SpaceToDepth")
def _depth_space(ctx: ShapeContext):
    x = ctx.dims(0)
    b = int(ctx.attr("blocksize", 0))
    if x is None or len(x) != 4 or b <= 0:
        return [T(ctx.dtype(0), None if x is None else (None,) * len(x))]
    n, c, h, w = x
    if ctx.node.op_type == "DepthToSpace":
        out = (n, dim_div(c, b * b), dim_mul(h, b), dim_mul(w, b))
    else:
        out = (n, dim_mul(c, b * b), dim_div(h, b), dim_div(w, b))
    return [T(ctx.dtype(0), out)]


# --- recurrent -----------------------------------------------------------------------------------
@shape_rule("LSTM", "GRU", "RNN")
def _rnn(ctx: ShapeContext):
    x, w = ctx.dims(0), ctx.dims(1)
    dt = ctx.dtype(0)
    dirs = 2 if (ctx.attr("direction", "forward") or "forward") == "bidirectional" else 1
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[ctx.node.op_type]
    hidden: Dim = ctx.attr("hidden_size", None)
    if hidden is None and w is not None and len(w) == 3:
        hidden = dim_div(w[1], gates)
    layout = int(ctx.attr("layout", 0))
    seq: Dim = None
    batch: Dim = None
    if x is not None and len(x) == 3:
        seq, batch = (x[1], x[0]) if layout else (x[0], x[1])
    if layout:
        y, yh = (batch, seq, dirs, hidden), (batch, dirs, hidden)
    else:
        y, yh = (seq, dirs, batch, hidden), (dirs, batch, hidden)
    outs = [T(dt, y), T(dt, yh)]
    if ctx.node.op_type == "LSTM":
        outs.append(T(dt, yh))
    return outs


# --- sequences (types only) ----------------------------------------------------------------------
@shape_rule("SplitToSequence")
def _split_to_sequence(ctx: ShapeContext):
    t = ctx.tensor_type(0)
    return [SequenceType(TensorType(t.dtype)) if t is not None else None]



@shape_rule("STFT")
def _stft(ctx: ShapeContext):
    # A rule of our own: onnx's inference ignores the default onesided=1 (onnx 1.23).
    x = ctx.dims(0)
    dt = ctx.dtype(0)
    if x is None or len(x) != 3:
        return [T(dt, None if x is None else (None,) * 4)]
    n: Dim = None
    if ctx.has_input(3):
        fl = ctx.shape_value(3)
        n = fl[0] if fl is not None and len(fl) == 1 else None
    elif ctx.has_input(2):
        w = ctx.dims(2)
        n = w[0] if w is not None and len(w) == 1 else None
    step = ctx.shape_value(1)
    s = step[0] if step is not None and len(step) == 1 else None
    frames: Dim = None
    if isinstance(x[1], int) and isinstance(n, int) and isinstance(s, int) and s > 0 and x[1] >= n:
        frames = (x[1] - n) // s + 1
    bins: Dim = None
    if isinstance(n, int):
        bins = n // 2 + 1 if int(ctx.attr("onesided", 1)) else n
    return [T(dt, (x[0], frames, bins, 2))]
