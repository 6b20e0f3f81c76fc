"""C kernels of the C back end: shared helper templates and one generator per op family.

A generator ``gen_<family>(node, k)`` gets the node and a :class:`KernelContext` and returns a
:class:`NodeCode`: the runtime operands the node reads (``x0``, ``x1``, ... in the body), the body
of the node's C function (outputs are ``y0``, ``y1``, ...), the shared helpers it calls and
whether the body is safe when ``y0`` overlaps a same-shaped operand (``inplace``: pure
elementwise code that reads every element before writing it at the same index).

Everything is fp32 (``float``); Gather indices are int64/int32. Parameters that the ONNX op takes
as constant tensors (shapes, axes, pads, Clip bounds...) are read at compile time and baked into
the code; a node whose parameter is not constant is an unsupported node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import UnsupportedModelError
from ...ir import Node, Value
from ...ir.dtypes import DType

__all__ = ["NodeCode", "KernelContext", "GENERATORS", "HELPERS", "VIEW_OPS", "flit", "dlit", "act_helper"]


# --- literals and small utilities ---------------------------------------------------------------

def flit(v: float) -> str:
    """An exact C float literal (hex float, ``f`` suffix) of a float32 value."""
    f = float(np.float32(v))
    if math.isnan(f):
        return "NAN"
    if math.isinf(f):
        return "INFINITY" if f > 0 else "(-INFINITY)"
    h = f.hex()  # e.g. -0x1.8000000000000p+1
    mant, exp = h.split("p")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return f"{mant}p{exp}f"


def dlit(v: float) -> str:
    """An exact C double literal (hex float) of a float64 value."""
    f = float(v)
    if math.isnan(f):
        return "((double)NAN)"
    if math.isinf(f):
        return "((double)INFINITY)" if f > 0 else "(-(double)INFINITY)"
    return f.hex()


def _prod(xs: Sequence[int]) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def _strides(dims: Sequence[int]) -> List[int]:
    out = [1] * len(dims)
    for i in range(len(dims) - 2, -1, -1):
        out[i] = out[i + 1] * int(dims[i + 1])
    return out


def _bcast_strides(in_dims: Sequence[int], out_dims: Sequence[int]) -> List[int]:
    """Strides to read ``in_dims`` broadcast (numpy rules) to ``out_dims``: 0 on broadcast axes."""
    pad = len(out_dims) - len(in_dims)
    st = _strides(in_dims)
    out = [0] * len(out_dims)
    for i, d in enumerate(in_dims):
        out[pad + i] = 0 if (d == 1 and out_dims[pad + i] != 1) else st[i]
    return out


def loop_nest(dims: Sequence[int], operands: Sequence[Tuple[int, Sequence[int]]], body: Callable[[List[str]], str],
              indent: str = "    ") -> str:
    """C loops over ``dims``; ``operands`` are ``(base offset, strides)``; ``body(offset exprs)`` is the statement.

    Size-1 axes are dropped and adjacent axes merged when every operand allows it, so the
    innermost loop is as long and as contiguous as possible (vectorizable with constant bounds).
    """
    dims = [int(d) for d in dims]
    strides = [list(s) for _, s in operands]
    keep = [i for i, d in enumerate(dims) if d != 1]
    dims = [dims[i] for i in keep]
    strides = [[s[i] for i in keep] for s in strides]
    i = len(dims) - 2
    while i >= 0:  # merge axis i into i+1 when contiguous for every operand
        if all(s[i] == s[i + 1] * dims[i + 1] for s in strides):
            dims[i + 1] *= dims[i]
            for s in strides:
                del s[i]
            del dims[i]
        i -= 1
    exprs = []
    for (base, _), st in zip(operands, strides):
        terms = [str(base)] if base else []
        for ax, s in enumerate(st):
            if s == 1:
                terms.append(f"i{ax}")
            elif s:
                terms.append(f"i{ax} * {s}" if s > 0 else f"i{ax} * ({s})")
        exprs.append(" + ".join(terms) if terms else "0")
    lines = []
    for ax, d in enumerate(dims):
        lines.append(f"{indent}{'    ' * ax}for (long i{ax} = 0; i{ax} < {d}; ++i{ax})")
    stmt = body(exprs)
    lines.append(f"{indent}{'    ' * len(dims)}{stmt}")
    if not dims:
        lines = [f"{indent}{{ {stmt} }}"]
    return "\n".join(lines) + "\n"


# --- activations --------------------------------------------------------------------------------

ACT_CODES: Dict[str, int] = {"": 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3, "Sigmoid": 4, "HardSigmoid": 5,
                             "HardSwish": 6, "Gelu": 7, "GeluTanh": 8, "Silu": 9, "Tanh": 10}
_INV_SQRT2 = flit(1.0 / math.sqrt(2.0))
_SQRT_2_PI = flit(math.sqrt(2.0 / math.pi))


def act_expr(name: str, v: str, p: Sequence[str]) -> str:
    """C expression of activation ``name`` applied to ``v``; ``p`` holds parameter expressions."""
    if name == "Relu":
        return f"({v} > 0.0f ? {v} : 0.0f)"
    if name == "Clip":
        return f"({v} < {p[0]} ? {p[0]} : ({v} > {p[1]} ? {p[1]} : {v}))"
    if name == "LeakyRelu":
        return f"({v} >= 0.0f ? {v} : {p[0]} * {v})"
    if name == "Sigmoid":
        return f"(1.0f / (1.0f + expf(-{v})))"
    if name == "HardSigmoid":
        return f"fmaxf(0.0f, fminf(1.0f, {p[0]} * {v} + {p[1]}))"
    if name == "HardSwish":
        return f"({v} * fmaxf(0.0f, fminf(1.0f, {v} * {flit(1 / 6)} + 0.5f)))"
    if name == "Gelu":
        return f"(0.5f * {v} * (1.0f + erff({v} * {_INV_SQRT2})))"
    if name == "GeluTanh":
        return f"(0.5f * {v} * (1.0f + tanhf({_SQRT_2_PI} * ({v} + {flit(0.044715)} * {v} * {v} * {v}))))"
    if name == "Silu":
        return f"({v} / (1.0f + expf(-{v})))"
    if name == "Tanh":
        return f"tanhf({v})"
    raise KeyError(name)


def act_helper(used: Sequence[str]) -> str:
    """``edgec_act``: applies activation code ``act`` in place, with cases for ``used`` only."""
    cases = []
    for name in sorted(set(used) - {""}, key=lambda n: ACT_CODES[n]):
        e = act_expr(name, "y[i]", ["p0", "p1"])
        cases.append(f"    case {ACT_CODES[name]}: for (long i = 0; i < n; ++i) y[i] = {e}; break;")
    return ("static void edgec_act(float* restrict y, long n, int act, float p0, float p1)\n{\n"
            "    (void)p0; (void)p1;\n    switch (act) {\n" + "\n".join(cases) +
            ("\n" if cases else "") + "    default: (void)y; (void)n; break;\n    }\n}\n")


# --- shared helpers (C templates) ---------------------------------------------------------------

HELPERS: Dict[str, str] = {
    "conv": """\
/* Direct convolution, NCHW, groups/dilations/strides/pads; act applied per output plane. */
static void edgec_conv2d(const float* restrict x, const float* restrict w, const float* restrict b,
                         float* restrict y, long N, long C, long H, long W, long M, long OH, long OW,
                         long KH, long KW, long sh, long sw, long dh, long dw, long ph, long pw, long G,
                         int act, float p0, float p1)
{
    const long cg = C / G, mg = M / G, plane = OH * OW;
    for (long n = 0; n < N; ++n) {
        for (long m = 0; m < M; ++m) {
            const long g = m / mg;
            float* restrict yp = y + (n * M + m) * plane;
            const float bias = b ? b[m] : 0.0f;
            for (long i = 0; i < plane; ++i) yp[i] = bias;
            for (long c = 0; c < cg; ++c) {
                const float* restrict xp = x + (n * C + g * cg + c) * H * W;
                const float* restrict wp = w + (m * cg + c) * KH * KW;
                for (long kh = 0; kh < KH; ++kh) {
                    for (long oh = 0; oh < OH; ++oh) {
                        const long ih = oh * sh - ph + kh * dh;
                        if (ih < 0 || ih >= H) continue;
                        const float* restrict xr = xp + ih * W;
                        float* restrict yr = yp + oh * OW;
                        for (long kw = 0; kw < KW; ++kw) {
                            const float wv = wp[kh * KW + kw];
                            const long off = kw * dw - pw; /* iw = ow * sw + off */
                            const long ow0 = off >= 0 ? 0 : (-off + sw - 1) / sw;
                            long ow1 = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
                            if (ow1 > OW) ow1 = OW;
                            if (sw == 1) {
                                for (long ow = ow0; ow < ow1; ++ow) yr[ow] += wv * xr[ow + off];
                            } else {
                                for (long ow = ow0; ow < ow1; ++ow) yr[ow] += wv * xr[ow * sw + off];
                            }
                        }
                    }
                }
            }
            edgec_act(yp, plane, act, p0, p1);
        }
    }
}
""",
    "gemm": """\
/* Y[M,N] = act(alpha * op(A) op(B) + beta * C); C read with strides (csm, csn) (0: broadcast). */
static void edgec_gemm(const float* restrict A, const float* restrict B, const float* restrict Cm,
                       float* restrict Y, long M, long N, long K, int ta, int tb, float alpha, float beta,
                       long csm, long csn, int act, float p0, float p1)
{
    for (long i = 0; i < M; ++i) {
        float* restrict y = Y + i * N;
        if (Cm) {
            for (long j = 0; j < N; ++j) y[j] = beta * Cm[i * csm + j * csn];
        } else {
            for (long j = 0; j < N; ++j) y[j] = 0.0f;
        }
        if (!tb) {
            for (long k = 0; k < K; ++k) {
                const float a = alpha * (ta ? A[k * M + i] : A[i * K + k]);
                const float* restrict b = B + k * N;
                for (long j = 0; j < N; ++j) y[j] += a * b[j];
            }
        } else {
            for (long j = 0; j < N; ++j) {
                const float* restrict b = B + j * K;
                float s = 0.0f;
                if (!ta) {
                    const float* restrict a = A + i * K;
                    for (long k = 0; k < K; ++k) s += a[k] * b[k];
                } else {
                    for (long k = 0; k < K; ++k) s += A[k * M + i] * b[k];
                }
                y[j] += alpha * s;
            }
        }
        edgec_act(y, N, act, p0, p1);
    }
}
""",
    "pool": """\
/* Max or average pooling over NC planes; pads begin (ph, pw) and end (peh, pew). */
static void edgec_pool2d(const float* restrict x, float* restrict y, long NC, long H, long W, long OH, long OW,
                         long KH, long KW, long sh, long sw, long dh, long dw, long ph, long pw, long peh,
                         long pew, int is_max, int include_pad)
{
    for (long p = 0; p < NC; ++p) {
        const float* restrict xp = x + p * H * W;
        float* restrict yp = y + p * OH * OW;
        for (long oh = 0; oh < OH; ++oh) {
            for (long ow = 0; ow < OW; ++ow) {
                const long hs = oh * sh - ph, ws = ow * sw - pw;
                if (is_max) {
                    float m = -INFINITY;
                    for (long kh = 0; kh < KH; ++kh) {
                        const long ih = hs + kh * dh;
                        if (ih < 0 || ih >= H) continue;
                        for (long kw = 0; kw < KW; ++kw) {
                            const long iw = ws + kw * dw;
                            if (iw < 0 || iw >= W) continue;
                            const float v = xp[ih * W + iw];
                            m = v > m ? v : m;
                        }
                    }
                    yp[oh * OW + ow] = m;
                } else {
                    long he = hs + KH, we = ws + KW;
                    if (he > H + peh) he = H + peh;
                    if (we > W + pew) we = W + pew;
                    const long full = (he - hs) * (we - ws);
                    const long h0 = hs < 0 ? 0 : hs, w0 = ws < 0 ? 0 : ws;
                    const long h1 = he > H ? H : he, w1 = we > W ? W : we;
                    float s = 0.0f;
                    for (long ih = h0; ih < h1; ++ih)
                        for (long iw = w0; iw < w1; ++iw) s += xp[ih * W + iw];
                    const long cnt = include_pad ? full : (h1 - h0) * (w1 - w0);
                    yp[oh * OW + ow] = cnt > 0 ? s / (float)cnt : 0.0f;
                }
            }
        }
    }
}
""",
    "global_pool": """\
static void edgec_global_pool(const float* restrict x, float* restrict y, long NC, long S, int is_max)
{
    for (long p = 0; p < NC; ++p) {
        const float* restrict xp = x + p * S;
        if (is_max) {
            float m = -INFINITY;
            for (long i = 0; i < S; ++i) m = xp[i] > m ? xp[i] : m;
            y[p] = m;
        } else {
            float s = 0.0f;
            for (long i = 0; i < S; ++i) s += xp[i];
            y[p] = s / (float)S;
        }
    }
}
""",
    "softmax": """\
/* (Log)Softmax over the middle axis of [outer, n, inner]. */
static void edgec_softmax(const float* restrict x, float* restrict y, long outer, long n, long inner, int log_)
{
    for (long o = 0; o < outer; ++o) {
        for (long i = 0; i < inner; ++i) {
            const float* restrict xp = x + o * n * inner + i;
            float* restrict yp = y + o * n * inner + i;
            float m = xp[0];
            for (long k = 1; k < n; ++k) m = xp[k * inner] > m ? xp[k * inner] : m;
            float s = 0.0f;
            if (log_) {
                for (long k = 0; k < n; ++k) s += expf(xp[k * inner] - m);
                const float ls = logf(s);
                for (long k = 0; k < n; ++k) yp[k * inner] = xp[k * inner] - m - ls;
            } else {
                for (long k = 0; k < n; ++k) {
                    const float e = expf(xp[k * inner] - m);
                    yp[k * inner] = e;
                    s += e;
                }
                for (long k = 0; k < n; ++k) yp[k * inner] /= s;
            }
        }
    }
}
""",
    "layernorm": """\
/* LayerNormalization over the last n elements of each of `outer` rows. */
static void edgec_layernorm(const float* restrict x, const float* restrict scale, const float* restrict bias,
                            float* restrict y, long outer, long n, float eps)
{
    for (long o = 0; o < outer; ++o) {
        const float* restrict xp = x + o * n;
        float* restrict yp = y + o * n;
        float mean = 0.0f, var = 0.0f;
        for (long i = 0; i < n; ++i) mean += xp[i];
        mean /= (float)n;
        for (long i = 0; i < n; ++i) {
            const float d = xp[i] - mean;
            var += d * d;
        }
        var /= (float)n;
        const float inv = 1.0f / sqrtf(var + eps);
        for (long i = 0; i < n; ++i) yp[i] = (xp[i] - mean) * inv * scale[i] + (bias ? bias[i] : 0.0f);
    }
}
""",
    "batchnorm": """\
static void edgec_batchnorm(const float* restrict x, const float* restrict scale, const float* restrict b,
                            const float* restrict mean, const float* restrict var, float* restrict y,
                            long N, long C, long S, float eps)
{
    for (long n = 0; n < N; ++n) {
        for (long c = 0; c < C; ++c) {
            const float a = scale[c] / sqrtf(var[c] + eps);
            const float o = b[c] - mean[c] * a;
            const float* restrict xp = x + (n * C + c) * S;
            float* restrict yp = y + (n * C + c) * S;
            for (long i = 0; i < S; ++i) yp[i] = xp[i] * a + o;
        }
    }
}
""",
}

#: helper -> helpers it calls.
HELPER_DEPS: Dict[str, Tuple[str, ...]] = {"conv": ("act",), "gemm": ("act",)}


# --- the generator interface --------------------------------------------------------------------

@dataclass
class NodeCode:
    """The C code of one node: operands it reads at run time, its body, helpers, in-place safety."""

    operands: List[Value]
    body: str
    helpers: List[str] = field(default_factory=list)
    acts: List[str] = field(default_factory=list)
    inplace: bool = False
    macs: int = 0
    #: True when the generator checked the element types of its operands and outputs itself;
    #: otherwise the emitter accepts float32 only (plus Gather indices).
    typed: bool = False


class KernelContext:
    """What generators need besides the node: static shapes, constants, opset, C types."""

    def __init__(self, opset: int) -> None:
        self.opset = opset

    @staticmethod
    def dims(v: Optional[Value]) -> Tuple[int, ...]:
        return tuple(int(d) for d in v.type.shape.dims)  # type: ignore[union-attr]

    @staticmethod
    def const(v: Optional[Value]) -> Optional[np.ndarray]:
        if v is None or not v.is_constant() or not hasattr(v.const, "numpy"):
            return None
        return np.asarray(v.const.numpy())

    def need_const(self, node: Node, i: int, what: str) -> np.ndarray:
        arr = self.const(node.input(i))
        if arr is None:
            raise unsupported(node, f"{what} (input {i}) must be a constant")
        return arr


def unsupported(node: Node, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"C target: node '{node.name}' ({node.qualified_op}): {why}")


def _norm_axis(node: Node, axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < max(rank, 1):
        raise unsupported(node, f"axis {axis} out of range for rank {rank}")
    return a


def _activation(node: Node) -> Tuple[str, float, float]:
    name = node.attr("activation", "") or ""
    if isinstance(name, bytes):
        name = name.decode()
    if name and name not in ACT_CODES:
        raise unsupported(node, f"activation '{name}'")
    params = list(node.attr("activation_params", []) or [])
    defaults = {"LeakyRelu": [0.01], "HardSigmoid": [0.2, 0.5], "Clip": [-math.inf, math.inf]}
    if not params:
        params = defaults.get(name, [])
    params = params + [0.0, 0.0]
    return name, float(params[0]), float(params[1])


# --- op families --------------------------------------------------------------------------------

def _spatial(node: Node, x: Tuple[int, ...], y: Tuple[int, ...], k: Sequence[int], strides: Sequence[int],
             dil: Sequence[int]) -> Tuple[List[int], List[int]]:
    """Begin and end pads from ``pads`` or ``auto_pad`` (output sizes are known)."""
    ns = len(k)
    auto = node.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(ns):
            total = max(0, (y[2 + i] - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - x[2 + i])
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begin.append(lo)
            end.append(total - lo)
        return begin, end
    if auto == "VALID":
        return [0] * ns, [0] * ns
    pads = list(node.attr("pads", [0] * (2 * ns)))
    return pads[:ns], pads[ns:]


def gen_conv(node: Node, k: KernelContext) -> NodeCode:
    x, w, y = k.dims(node.input(0)), k.dims(node.input(1)), k.dims(node.output(0))
    if len(x) not in (3, 4):
        raise unsupported(node, f"only 1-D and 2-D convolution (input rank {len(x)})")
    ns = len(x) - 2
    ks = list(w[2:])
    st = list(node.attr("strides", [1] * ns))
    dl = list(node.attr("dilations", [1] * ns))
    pb, _ = _spatial(node, x, y, ks, st, dl)
    if ns == 1:
        x, y, ks, st, dl, pb = (x[0], x[1], 1, x[2]), (y[0], y[1], 1, y[2]), [1] + ks, [1] + st, [1] + dl, [0] + pb
    g = int(node.attr("group", 1))
    act, p0, p1 = _activation(node)
    ops = [node.input(0), node.input(1)] + ([node.input(2)] if node.input(2) is not None else [])
    bias = "x2" if len(ops) == 3 else "NULL"
    body = (f"    edgec_conv2d(x0, x1, {bias}, y0, {x[0]}, {x[1]}, {x[2]}, {x[3]}, {y[1]}, {y[2]}, {y[3]}, "
            f"{ks[0]}, {ks[1]}, {st[0]}, {st[1]}, {dl[0]}, {dl[1]}, {pb[0]}, {pb[1]}, {g}, "
            f"{ACT_CODES[act]}, {flit(p0)}, {flit(p1)});\n")
    return NodeCode(ops, body, ["conv"], [act], macs=_prod(y) * _prod(w[1:]))


def gen_gemm(node: Node, k: KernelContext) -> NodeCode:
    a, b, y = k.dims(node.input(0)), k.dims(node.input(1)), k.dims(node.output(0))
    ta, tb = int(node.attr("transA", 0)), int(node.attr("transB", 0))
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    m, kk = (a[1], a[0]) if ta else (a[0], a[1])
    n = b[0] if tb else b[1]
    act, p0, p1 = _activation(node)
    ops = [node.input(0), node.input(1)]
    c_arg, csm, csn = "NULL", 0, 0
    cv = node.input(2)
    if cv is not None and beta != 0.0:
        cd = k.dims(cv)
        st = _bcast_strides(cd, (m, n))
        ops.append(cv)
        c_arg, csm, csn = "x2", st[0], st[1]
    body = (f"    edgec_gemm(x0, x1, {c_arg}, y0, {m}, {n}, {kk}, {ta}, {tb}, {flit(alpha)}, {flit(beta)}, "
            f"{csm}, {csn}, {ACT_CODES[act]}, {flit(p0)}, {flit(p1)});\n")
    return NodeCode(ops, body, ["gemm"], [act], macs=_prod(y) * kk)


def gen_matmul(node: Node, k: KernelContext) -> NodeCode:
    a, b = k.dims(node.input(0)), k.dims(node.input(1))
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    m, kk, n = a2[-2], a2[-1], b2[-1]
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2])) if len(a2) > 2 or len(b2) > 2 else ()
    act, p0, p1 = _activation(node)
    ops = [node.input(0), node.input(1)]
    bias = "NULL"
    if node.domain == "edgec" and node.input(2) is not None:
        if _prod(k.dims(node.input(2))) != n:
            raise unsupported(node, "FusedMatMul bias must have N elements")
        ops.append(node.input(2))
        bias = "x2"
    a_st = [s * m * kk for s in _bcast_strides(a2[:-2], batch)] if batch else []
    b_st = [s * kk * n for s in _bcast_strides(b2[:-2], batch)] if batch else []
    y_st = [s * m * n for s in _strides(batch)]
    call = (lambda o: f"edgec_gemm(x0 + {o[0]}, x1 + {o[1]}, {bias}, y0 + {o[2]}, {m}, {n}, {kk}, 0, 0, 1.0f, "
            f"1.0f, 0, 1, {ACT_CODES[act]}, {flit(p0)}, {flit(p1)});")
    body = loop_nest(batch, [(0, a_st), (0, b_st), (0, y_st)], call)
    return NodeCode(ops, body, ["gemm"], [act], macs=_prod(batch) * m * n * kk)


def gen_pool(node: Node, k: KernelContext) -> NodeCode:
    x, y = k.dims(node.input(0)), k.dims(node.output(0))
    if len(node.outputs) > 1 and node.output(1) is not None and node.output(1).has_uses():
        raise unsupported(node, "MaxPool Indices output")
    if len(x) not in (3, 4):
        raise unsupported(node, f"only 1-D and 2-D pooling (input rank {len(x)})")
    ns = len(x) - 2
    ks = list(node.attr("kernel_shape"))
    st = list(node.attr("strides", [1] * ns))
    dl = list(node.attr("dilations", [1] * ns))
    is_max = node.op_type == "MaxPool"
    if not is_max and any(d != 1 for d in dl):
        raise unsupported(node, "AveragePool dilations")
    pb, pe = _spatial(node, x, y, ks, st, dl)
    if ns == 1:
        x, y = (x[0], x[1], 1, x[2]), (y[0], y[1], 1, y[2])
        ks, st, dl, pb, pe = [1] + ks, [1] + st, [1] + dl, [0] + pb, [0] + pe
    inc = int(node.attr("count_include_pad", 0))
    body = (f"    edgec_pool2d(x0, y0, {x[0] * x[1]}, {x[2]}, {x[3]}, {y[2]}, {y[3]}, {ks[0]}, {ks[1]}, "
            f"{st[0]}, {st[1]}, {dl[0]}, {dl[1]}, {pb[0]}, {pb[1]}, {pe[0]}, {pe[1]}, {int(is_max)}, {inc});\n")
    return NodeCode([node.input(0)], body, ["pool"])


def gen_global_pool(node: Node, k: KernelContext) -> NodeCode:
    x = k.dims(node.input(0))
    body = f"    edgec_global_pool(x0, y0, {x[0] * x[1]}, {_prod(x[2:])}, {int(node.op_type == 'GlobalMaxPool')});\n"
    return NodeCode([node.input(0)], body, ["global_pool"])


_UNARY: Dict[str, Callable[[Node, str], str]] = {
    "Relu": lambda n, v: act_expr("Relu", v, []),
    "Sigmoid": lambda n, v: act_expr("Sigmoid", v, []),
    "Tanh": lambda n, v: f"tanhf({v})",
    "Exp": lambda n, v: f"expf({v})",
    "Log": lambda n, v: f"logf({v})",
    "Sqrt": lambda n, v: f"sqrtf({v})",
    "Neg": lambda n, v: f"(-{v})",
    "Abs": lambda n, v: f"fabsf({v})",
    "Erf": lambda n, v: f"erff({v})",
    "Reciprocal": lambda n, v: f"(1.0f / {v})",
    "Floor": lambda n, v: f"floorf({v})",
    "Ceil": lambda n, v: f"ceilf({v})",
    "Round": lambda n, v: f"rintf({v})",
    "Sin": lambda n, v: f"sinf({v})",
    "Cos": lambda n, v: f"cosf({v})",
    "Softsign": lambda n, v: f"({v} / (1.0f + fabsf({v})))",
    "Identity": lambda n, v: v,
    "LeakyRelu": lambda n, v: act_expr("LeakyRelu", v, [flit(n.attr("alpha", 0.01))]),
    "HardSigmoid": lambda n, v: act_expr("HardSigmoid", v, [flit(n.attr("alpha", 0.2)), flit(n.attr("beta", 0.5))]),
    "HardSwish": lambda n, v: act_expr("HardSwish", v, []),
    "Elu": lambda n, v: f"({v} >= 0.0f ? {v} : {flit(n.attr('alpha', 1.0))} * (expf({v}) - 1.0f))",
    "Selu": lambda n, v: (f"({flit(n.attr('gamma', 1.0507009873554805))} * ({v} > 0.0f ? {v} : "
                          f"{flit(n.attr('alpha', 1.6732632423543772))} * (expf({v}) - 1.0f)))"),
    "Gelu": lambda n, v: act_expr("GeluTanh" if (n.attr("approximate", "none") in ("tanh", b"tanh")) else "Gelu", v, []),
}

_BINARY: Dict[str, Callable[[str, str], str]] = {
    "Add": lambda a, b: f"{a} + {b}",
    "Sub": lambda a, b: f"{a} - {b}",
    "Mul": lambda a, b: f"{a} * {b}",
    "Div": lambda a, b: f"{a} / {b}",
    "Pow": lambda a, b: f"powf({a}, {b})",
    "Max": lambda a, b: f"({a} > {b} ? {a} : {b})",
    "Min": lambda a, b: f"({a} < {b} ? {a} : {b})",
    "Sum": lambda a, b: f"{a} + {b}",
    "PRelu": lambda a, b: f"({a} >= 0.0f ? {a} : {a} * {b})",
}


def _elementwise(node: Node, k: KernelContext, inputs: Sequence[Value], expr: Callable[[List[str]], str]) -> NodeCode:
    """``y0 = expr(operands)`` with numpy broadcasting; scalar constants become literals."""
    y = k.dims(node.output(0))
    ops: List[Value] = []
    reads: List[Optional[str]] = []
    nest_ops: List[Tuple[int, List[int]]] = [(0, _strides(y))]
    for v in inputs:
        c = k.const(v)
        if c is not None and c.size == 1 and c.dtype == np.float32:
            reads.append(flit(float(c.reshape(-1)[0])))
            continue
        if v in ops:
            reads.append(f"@{ops.index(v)}")
            continue
        ops.append(v)
        reads.append(f"@{len(ops) - 1}")
        nest_ops.append((0, _bcast_strides(k.dims(v), y)))
    inplace = any(k.dims(v) == y for v in ops)

    def body(o: List[str]) -> str:
        args = [r if not r.startswith("@") else f"x{r[1:]}[{o[1 + int(r[1:])]}]" for r in reads]
        return f"y0[{o[0]}] = {expr(args)};"

    code = loop_nest(y, nest_ops, body)
    return NodeCode(ops, code, inplace=inplace)


def gen_unary(node: Node, k: KernelContext) -> NodeCode:
    f = _UNARY[node.op_type]
    return _elementwise(node, k, [node.input(0)], lambda a: f(node, a[0]))


def gen_clip(node: Node, k: KernelContext) -> NodeCode:
    if k.opset < 11:
        lo, hi = float(node.attr("min", -math.inf)), float(node.attr("max", math.inf))
    else:
        lo = float(k.need_const(node, 1, "min").reshape(-1)[0]) if node.input(1) is not None else -math.inf
        hi = float(k.need_const(node, 2, "max").reshape(-1)[0]) if node.input(2) is not None else math.inf
    return _elementwise(node, k, [node.input(0)], lambda a: act_expr("Clip", a[0], [flit(lo), flit(hi)]))


def gen_binary(node: Node, k: KernelContext) -> NodeCode:
    ins = [v for v in node.inputs if v is not None]
    if node.op_type == "Mean":
        return _elementwise(node, k, ins, lambda a: f"({' + '.join(a)}) / {flit(len(a))}")
    f = _BINARY[node.op_type]

    def expr(args: List[str]) -> str:
        e = args[0]
        for a in args[1:]:
            e = f"({f(e, a)})"
        return e

    return _elementwise(node, k, ins, expr)


def gen_expand(node: Node, k: KernelContext) -> NodeCode:
    return _elementwise(node, k, [node.input(0)], lambda a: a[0])


def gen_softmax(node: Node, k: KernelContext) -> NodeCode:
    x = k.dims(node.input(0))
    r = len(x)
    if k.opset < 13:
        ax = _norm_axis(node, int(node.attr("axis", 1)), r)
        outer, n, inner = _prod(x[:ax]), _prod(x[ax:]), 1
    else:
        ax = _norm_axis(node, int(node.attr("axis", -1)), r)
        outer, n, inner = _prod(x[:ax]), x[ax], _prod(x[ax + 1:])
    lg = int(node.op_type == "LogSoftmax")
    return NodeCode([node.input(0)], f"    edgec_softmax(x0, y0, {outer}, {n}, {inner}, {lg});\n", ["softmax"])


def gen_layernorm(node: Node, k: KernelContext) -> NodeCode:
    for i in (1, 2):
        if len(node.outputs) > i and node.output(i) is not None and node.output(i).has_uses():
            raise unsupported(node, "Mean/InvStdDev outputs")
    x = k.dims(node.input(0))
    ax = _norm_axis(node, int(node.attr("axis", -1)), len(x))
    outer, n = _prod(x[:ax]), _prod(x[ax:])
    eps = float(node.attr("epsilon", 1e-5))
    ops = [node.input(0)]
    args = []
    for i in (1, 2):
        v = node.input(i)
        if v is None:
            args.append("NULL")
            continue
        if _prod(k.dims(v)) != n:
            raise unsupported(node, "scale/bias must cover the normalized shape exactly")
        ops.append(v)
        args.append(f"x{len(ops) - 1}")
    return NodeCode(ops, f"    edgec_layernorm(x0, {args[0]}, {args[1]}, y0, {outer}, {n}, {flit(eps)});\n",
                    ["layernorm"])


def gen_batchnorm(node: Node, k: KernelContext) -> NodeCode:
    if int(node.attr("training_mode", 0)):
        raise unsupported(node, "training_mode")
    x = k.dims(node.input(0))
    eps = float(node.attr("epsilon", 1e-5))
    ops = [node.input(i) for i in range(5)]
    body = f"    edgec_batchnorm(x0, x1, x2, x3, x4, y0, {x[0]}, {x[1] if len(x) > 1 else 1}, {_prod(x[2:])}, {flit(eps)});\n"
    return NodeCode(ops, body, ["batchnorm"])


def gen_transpose(node: Node, k: KernelContext) -> NodeCode:
    x, y = k.dims(node.input(0)), k.dims(node.output(0))
    perm = list(node.attr("perm", list(range(len(x)))[::-1]))
    xs = _strides(x)
    return NodeCode([node.input(0)], loop_nest(y, [(0, _strides(y)), (0, [xs[p] for p in perm])],
                                               lambda o: f"y0[{o[0]}] = x0[{o[1]}];"))


def gen_concat(node: Node, k: KernelContext) -> NodeCode:
    y = k.dims(node.output(0))
    ax = _norm_axis(node, int(node.attr("axis")), len(y))
    ys = _strides(y)
    body, ops, off = "", [], 0
    for v in node.inputs:
        d = k.dims(v)
        if _prod(d) == 0:
            continue
        if v not in ops:
            ops.append(v)
        i = ops.index(v)
        body += loop_nest(d, [(off * ys[ax], ys), (0, _strides(d))], lambda o, i=i: f"y0[{o[0]}] = x{i}[{o[1]}];")
        off += d[ax]
    return NodeCode(ops, body)


def gen_split(node: Node, k: KernelContext) -> NodeCode:
    x = k.dims(node.input(0))
    ax = _norm_axis(node, int(node.attr("axis", 0)), len(x))
    xs = _strides(x)
    body, off = "", 0
    for j, out in enumerate(node.outputs):
        d = k.dims(out)
        body += loop_nest(d, [(0, _strides(d)), (off * xs[ax], xs)], lambda o, j=j: f"y{j}[{o[0]}] = x0[{o[1]}];")
        off += d[ax]
    return NodeCode([node.input(0)], body)


def gen_slice(node: Node, k: KernelContext) -> NodeCode:
    x, y = k.dims(node.input(0)), k.dims(node.output(0))
    r = len(x)
    if k.opset < 10:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes = list(node.attr("axes", list(range(len(starts)))))
        steps = [1] * len(starts)
    else:
        starts = [int(v) for v in k.need_const(node, 1, "starts").reshape(-1)]
        ends = [int(v) for v in k.need_const(node, 2, "ends").reshape(-1)]
        axes = ([int(v) for v in k.need_const(node, 3, "axes").reshape(-1)] if node.input(3) is not None
                else list(range(len(starts))))
        steps = ([int(v) for v in k.need_const(node, 4, "steps").reshape(-1)] if node.input(4) is not None
                 else [1] * len(starts))
    xs = _strides(x)
    base, st = 0, list(xs)
    for s, e, a, stp in zip(starts, ends, axes, steps):
        a = _norm_axis(node, a, r)
        e = max(min(e, 2**62), -2**62)
        s = max(min(s, 2**62), -2**62)
        start, _, _ = slice(s, e, stp).indices(x[a])
        base += start * xs[a]
        st[a] = xs[a] * stp
    return NodeCode([node.input(0)], loop_nest(y, [(0, _strides(y)), (base, st)], lambda o: f"y0[{o[0]}] = x0[{o[1]}];"))


def gen_pad(node: Node, k: KernelContext) -> NodeCode:
    x, y = k.dims(node.input(0)), k.dims(node.output(0))
    r = len(x)
    mode = node.attr("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise unsupported(node, f"Pad mode '{mode}' (only constant)")
    if k.opset < 11:
        pads, value = list(node.attr("pads")), float(node.attr("value", 0.0))
    else:
        pads = [int(v) for v in k.need_const(node, 1, "pads").reshape(-1)]
        value = float(k.need_const(node, 2, "constant_value").reshape(-1)[0]) if node.input(2) is not None else 0.0
        if node.input(3) is not None:
            axes = [_norm_axis(node, int(a), r) for a in k.need_const(node, 3, "axes").reshape(-1)]
            full = [0] * (2 * r)
            for i, a in enumerate(axes):
                full[a], full[r + a] = pads[i], pads[len(axes) + i]
            pads = full
    begin = pads[:r]
    ys, xs = _strides(y), _strides(x)
    n = _prod(y)
    body = f"    for (long i = 0; i < {n}; ++i) y0[i] = {flit(value)};\n"
    dims, ybase, xbase = [], 0, 0
    for a in range(r):
        lo_out = max(0, begin[a])
        lo_in = max(0, -begin[a])
        cnt = min(x[a] - lo_in, y[a] - lo_out)
        if cnt <= 0:
            return NodeCode([node.input(0)], body)
        dims.append(cnt)
        ybase += lo_out * ys[a]
        xbase += lo_in * xs[a]
    body += loop_nest(dims, [(ybase, ys), (xbase, xs)], lambda o: f"y0[{o[0]}] = x0[{o[1]}];")
    return NodeCode([node.input(0)], body)


def gen_gather(node: Node, k: KernelContext) -> NodeCode:
    x = k.dims(node.input(0))
    ax = _norm_axis(node, int(node.attr("axis", 0)), len(x))
    iv = node.input(1)
    nidx = _prod(k.dims(iv))
    outer, d, inner = _prod(x[:ax]), x[ax], _prod(x[ax + 1:])
    ci = k.const(iv)
    ops = [node.input(0)]
    if ci is not None:
        idx = [int(i) + d if int(i) < 0 else int(i) for i in ci.reshape(-1)]
        if any(not 0 <= i < d for i in idx):
            raise unsupported(node, f"constant index out of range [0, {d})")
        if nidx == 1:
            src = f"(long){idx[0]}"
            decl = ""
        else:
            decl = f"    static const long idx[{nidx}] = {{{', '.join(map(str, idx))}}};\n"
            src = "idx[j]"
        fix = ""
    else:
        if iv.type.dtype not in (DType.INT64, DType.INT32):
            raise unsupported(node, "indices must be int64 or int32")
        ops.append(iv)
        decl, src = "", "(long)x1[j]"
        fix = f"            if (ix < 0) ix += {d};\n            if (ix < 0 || ix >= {d}) ix = 0; /* out of range: row 0 */\n"
    body = (decl + f"    for (long o = 0; o < {outer}; ++o) {{\n"
            f"        for (long j = 0; j < {nidx}; ++j) {{\n            long ix = {src};\n" + fix +
            f"            const float* restrict s = x0 + (o * {d} + ix) * {inner};\n"
            f"            float* restrict t = y0 + (o * {nidx} + j) * {inner};\n"
            f"            for (long i = 0; i < {inner}; ++i) t[i] = s[i];\n        }}\n    }}\n")
    return NodeCode(ops, body)


_REDUCE_INIT = {"ReduceSum": "0.0f", "ReduceMean": "0.0f", "ReduceMax": "(-INFINITY)", "ReduceMin": "INFINITY",
                "ReduceProd": "1.0f", "ReduceSumSquare": "0.0f", "ReduceL1": "0.0f", "ReduceL2": "0.0f"}
_REDUCE_STEP = {"ReduceSum": "{y} += {x};", "ReduceMean": "{y} += {x};", "ReduceMax": "{y} = {x} > {y} ? {x} : {y};",
                "ReduceMin": "{y} = {x} < {y} ? {x} : {y};", "ReduceProd": "{y} *= {x};",
                "ReduceSumSquare": "{y} += {x} * {x};", "ReduceL1": "{y} += fabsf({x});", "ReduceL2": "{y} += {x} * {x};"}


def gen_reduce(node: Node, k: KernelContext) -> NodeCode:
    x = k.dims(node.input(0))
    r = len(x)
    op = node.op_type
    axes_in_input = k.opset >= 18 or (op == "ReduceSum" and k.opset >= 13)
    if axes_in_input:
        axes = [int(a) for a in k.need_const(node, 1, "axes").reshape(-1)] if node.input(1) is not None else []
    else:
        axes = list(node.attr("axes", []) or [])
    if not axes:
        if int(node.attr("noop_with_empty_axes", 0)):
            return _elementwise(node, k, [node.input(0)], lambda a: a[0])
        axes = list(range(r))
    axes = sorted({_norm_axis(node, a, r) for a in axes})
    ydims = [1 if i in axes else d for i, d in enumerate(x)]
    ys = _strides(ydims)
    ystr = [0 if i in axes else ys[i] for i in range(r)]
    n_out = _prod(ydims)
    cnt = _prod(x[a] for a in axes)
    body = f"    for (long i = 0; i < {n_out}; ++i) y0[i] = {_REDUCE_INIT[op]};\n"
    step = _REDUCE_STEP[op]
    body += loop_nest(x, [(0, ystr), (0, _strides(x))], lambda o: step.format(y=f"y0[{o[0]}]", x=f"x0[{o[1]}]"))
    if op == "ReduceMean":
        body += f"    for (long i = 0; i < {n_out}; ++i) y0[i] /= {flit(cnt)};\n"
    if op == "ReduceL2":
        body += f"    for (long i = 0; i < {n_out}; ++i) y0[i] = sqrtf(y0[i]);\n"
    return NodeCode([node.input(0)], body)


#: (domain, op) -> generator.
GENERATORS: Dict[Tuple[str, str], Callable[[Node, KernelContext], NodeCode]] = {}
for _op in ("Conv",):
    GENERATORS[("", _op)] = gen_conv
GENERATORS[("edgec", "FusedConv")] = gen_conv
GENERATORS[("", "Gemm")] = gen_gemm
GENERATORS[("edgec", "FusedGemm")] = gen_gemm
GENERATORS[("", "MatMul")] = gen_matmul
GENERATORS[("edgec", "FusedMatMul")] = gen_matmul
for _op in ("MaxPool", "AveragePool"):
    GENERATORS[("", _op)] = gen_pool
for _op in ("GlobalAveragePool", "GlobalMaxPool"):
    GENERATORS[("", _op)] = gen_global_pool
for _op in _UNARY:
    if _op != "Identity":
        GENERATORS[("", _op)] = gen_unary
GENERATORS[("edgec", "Gelu")] = gen_unary
GENERATORS[("", "Clip")] = gen_clip
for _op in list(_BINARY) + ["Mean"]:
    GENERATORS[("", _op)] = gen_binary
GENERATORS[("", "Expand")] = gen_expand
for _op in ("Softmax", "LogSoftmax"):
    GENERATORS[("", _op)] = gen_softmax
GENERATORS[("", "LayerNormalization")] = gen_layernorm
GENERATORS[("edgec", "LayerNorm")] = gen_layernorm
GENERATORS[("", "BatchNormalization")] = gen_batchnorm
GENERATORS[("", "Transpose")] = gen_transpose
GENERATORS[("", "Concat")] = gen_concat
GENERATORS[("", "Split")] = gen_split
GENERATORS[("", "Slice")] = gen_slice
GENERATORS[("", "Pad")] = gen_pad
GENERATORS[("", "Gather")] = gen_gather
for _op in _REDUCE_INIT:
    GENERATORS[("", _op)] = gen_reduce

#: Ops whose output is its first input, reinterpreted (no code, no copy).
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
