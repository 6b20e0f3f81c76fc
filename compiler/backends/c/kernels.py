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

__all__ = ["NodeCode", "KernelContext", "GENERATORS", "HELPERS", "VIEW_OPS", "flit", "dlit", "act_helper",
           "helper_closure"]


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
    "act_fast": """\
/* Activation over n floats: Relu, Clip and Gelu as branch-free loops the compiler vectorizes (one
   conditional assignment per bound maps to max/min instructions with the ONNX NaN behaviour); Gelu's
   erf is a rational approximation on [-4, 4] (abs error ~1e-7). Other codes: edgec_act. */
static void edgec_act_fast(float* restrict y, long n, int act, float p0, float p1)
{
    if (act == 1) {
        for (long i = 0; i < n; ++i) {
            const float v = y[i];
            y[i] = v > 0.0f ? v : 0.0f;
        }
    } else if (act == 2) {
        for (long i = 0; i < n; ++i) {
            float v = y[i];
            v = v < p0 ? p0 : v;
            v = v > p1 ? p1 : v;
            y[i] = v;
        }
    } else if (act == 7) {
        for (long i = 0; i < n; ++i) {
            const float v = y[i];
            float z = v * 0x1.6a09e6p-1f;
            z = z < -4.0f ? -4.0f : z;
            z = z > 4.0f ? 4.0f : z;
            const float z2 = z * z;
            float pz = z2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
            pz = z2 * pz - 2.10102402082508e-06f;
            pz = z2 * pz - 5.69250639462346e-05f;
            pz = z2 * pz - 7.34990630326855e-04f;
            pz = z2 * pz - 2.95459980854025e-03f;
            pz = z2 * pz - 1.60960333262415e-02f;
            float qz = z2 * -1.45660718464996e-05f - 2.13374055278905e-04f;
            qz = z2 * qz - 1.68282697438203e-03f;
            qz = z2 * qz - 7.37332916720468e-03f;
            qz = z2 * qz - 1.42647390514189e-02f;
            y[i] = 0.5f * v * (1.0f + z * pz / qz);
        }
    } else if (act != 0) {
        edgec_act(y, n, act, p0, p1);
    }
}
""",
    "gemm_core": """\
/* Register-blocked GEMM: EDGEC_MR x EDGEC_NR tiles of Y accumulated in registers over the whole K.
   B is always packed in panels of EDGEC_NR columns (panel q: element (k, j) at Bp[q*K*NR + k*NR + j],
   zero-padded), A is read through one pointer per tile row (A(r, k) = ap[r][k * aks]): compile-time
   packed weights (panels of MR rows, zero-padded) or a row-major / transposed activation matrix. */
#define EDGEC_MR 6
#define EDGEC_NR 16
#if (defined(__GNUC__) || defined(__clang__)) && !defined(EDGEC_NO_VECTOR_EXT)
typedef float edgec_v8 __attribute__((vector_size(32)));
typedef float edgec_v8u __attribute__((vector_size(32), aligned(4)));
typedef int edgec_v8i __attribute__((vector_size(32)));
/* lanes of a where the comparison mask m is set, else of b (no branches) */
#define EDGEC_VSEL(m, a, b) ((edgec_v8)(((m) & (edgec_v8i)(a)) | (~(m) & (edgec_v8i)(b))))
#define EDGEC_VEC 1
#else
#define EDGEC_VEC 0
#endif
/* Fused multiply-add in the accumulation loops even in ISO C mode (GCC's -std=c99 turns contraction off;
   clang contracts within an expression by default). */
#ifndef EDGEC_CONTRACT
#if defined(__GNUC__) && !defined(__clang__)
#define EDGEC_CONTRACT __attribute__((optimize("fp-contract=fast")))
#else
#define EDGEC_CONTRACT
#endif
#endif

/* y[r*ldy + j] = act(alpha * sum_k A(r,k) B(k,j) + beta * C(r,j)) for r < mr, j < nr;
   C(r, j) = cm[r*csm + j*csn] (cm NULL: none). */
EDGEC_CONTRACT static void edgec_ukernel(long K, const float* const* ap, long aks, const float* restrict bp, long ldb,
                                         float* restrict y,
                          long ldy, long mr, long nr, float alpha, float beta, const float* restrict cm, long csm,
                          long csn, int act, float p0, float p1)
{
    float t[EDGEC_MR][EDGEC_NR];
    const float* restrict a0 = ap[0];
    const float* restrict a1 = ap[1];
    const float* restrict a2 = ap[2];
    const float* restrict a3 = ap[3];
    const float* restrict a4 = ap[4];
    const float* restrict a5 = ap[5];
#if EDGEC_VEC
    edgec_v8 c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    edgec_v8 c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    if (mr == 1) { /* one row (a matrix-vector product): no redundant rows */
        for (long k = 0; k < K; ++k) {
            const float s = a0[k * aks];
            const edgec_v8 av = {s, s, s, s, s, s, s, s};
            c00 += av * *(const edgec_v8u*)(bp + k * ldb);
            c01 += av * *(const edgec_v8u*)(bp + k * ldb + 8);
        }
    } else {
        for (long k = 0; k < K; ++k) {
            const edgec_v8 b0 = *(const edgec_v8u*)(bp + k * ldb);
            const edgec_v8 b1 = *(const edgec_v8u*)(bp + k * ldb + 8);
            const long o = k * aks;
            float s;
            edgec_v8 av;
            s = a0[o]; av = (edgec_v8){s, s, s, s, s, s, s, s}; c00 += av * b0; c01 += av * b1;
            s = a1[o]; av = (edgec_v8){s, s, s, s, s, s, s, s}; c10 += av * b0; c11 += av * b1;
            s = a2[o]; av = (edgec_v8){s, s, s, s, s, s, s, s}; c20 += av * b0; c21 += av * b1;
            s = a3[o]; av = (edgec_v8){s, s, s, s, s, s, s, s}; c30 += av * b0; c31 += av * b1;
            s = a4[o]; av = (edgec_v8){s, s, s, s, s, s, s, s}; c40 += av * b0; c41 += av * b1;
            s = a5[o]; av = (edgec_v8){s, s, s, s, s, s, s, s}; c50 += av * b0; c51 += av * b1;
        }
    }
    *(edgec_v8u*)&t[0][0] = c00; *(edgec_v8u*)&t[0][8] = c01;
    *(edgec_v8u*)&t[1][0] = c10; *(edgec_v8u*)&t[1][8] = c11;
    *(edgec_v8u*)&t[2][0] = c20; *(edgec_v8u*)&t[2][8] = c21;
    *(edgec_v8u*)&t[3][0] = c30; *(edgec_v8u*)&t[3][8] = c31;
    *(edgec_v8u*)&t[4][0] = c40; *(edgec_v8u*)&t[4][8] = c41;
    *(edgec_v8u*)&t[5][0] = c50; *(edgec_v8u*)&t[5][8] = c51;
#else
    for (int r = 0; r < EDGEC_MR; ++r)
        for (int j = 0; j < EDGEC_NR; ++j) t[r][j] = 0.0f;
    for (long k = 0; k < K; ++k) {
        const float* restrict b = bp + k * ldb;
        const long o = k * aks;
        const float av[EDGEC_MR] = {a0[o], a1[o], a2[o], a3[o], a4[o], a5[o]};
        for (int r = 0; r < EDGEC_MR; ++r)
            for (int j = 0; j < EDGEC_NR; ++j) t[r][j] += av[r] * b[j];
    }
#endif
    /* epilogue: alpha, the C / bias term and Relu / Clip on whole 8-float vectors where possible */
    for (long r = 0; r < mr; ++r) {
        float* restrict tr = t[r];
        float* restrict yr = y + r * ldy;
        const int general_c = cm != NULL && csn != 0;
        if (general_c) {
            const float* restrict cr = cm + r * csm;
            for (long j = 0; j < nr; ++j) tr[j] = alpha * tr[j] + beta * cr[j * csn];
        }
#if EDGEC_VEC
        edgec_v8 v0 = *(const edgec_v8u*)tr, v1 = *(const edgec_v8u*)(tr + 8);
        if (!general_c) {
            const float cs = cm ? beta * cm[r * csm] : 0.0f;
            const edgec_v8 va = {alpha, alpha, alpha, alpha, alpha, alpha, alpha, alpha};
            const edgec_v8 vc = {cs, cs, cs, cs, cs, cs, cs, cs};
            v0 = v0 * va + vc;
            v1 = v1 * va + vc;
        }
        if (act == 1) {
            const edgec_v8 z = {0};
            v0 = EDGEC_VSEL(v0 > z, v0, z);
            v1 = EDGEC_VSEL(v1 > z, v1, z);
        } else if (act == 2) {
            const edgec_v8 lo = {p0, p0, p0, p0, p0, p0, p0, p0}, hi = {p1, p1, p1, p1, p1, p1, p1, p1};
            v0 = EDGEC_VSEL(v0 < lo, lo, v0);
            v1 = EDGEC_VSEL(v1 < lo, lo, v1);
            v0 = EDGEC_VSEL(v0 > hi, hi, v0);
            v1 = EDGEC_VSEL(v1 > hi, hi, v1);
        }
        if (act <= 2 && nr == EDGEC_NR) {
            *(edgec_v8u*)yr = v0;
            *(edgec_v8u*)(yr + 8) = v1;
            continue;
        }
        *(edgec_v8u*)tr = v0;
        *(edgec_v8u*)(tr + 8) = v1;
        if (act > 2) edgec_act_fast(tr, nr, act, p0, p1);
#else
        if (!general_c) {
            const float cs = cm ? beta * cm[r * csm] : 0.0f;
            for (long j = 0; j < nr; ++j) tr[j] = alpha * tr[j] + cs;
        }
        edgec_act_fast(tr, nr, act, p0, p1);
#endif
        for (long j = 0; j < nr; ++j) yr[j] = tr[j];
    }
}

/* Y[M, N] (row stride ldy) = act(alpha * A B + beta * C). B: ldb == 0, packed panels (Bp); ldb > 0, a
   row-major matrix with row stride ldb read in place (N a multiple of NR). A: apacked ? compile-time
   panels (panel p: K x MR at A + p*K*MR) : element (i, k) at A[i*ars + k*aks]. Column blocks of nc
   columns keep the B block in cache while every row panel of A passes over it. */
static void edgec_gemm_packed(long M, long N, long K, const float* A, long ars, long aks, int apacked,
                              const float* restrict Bp, long ldb, float* restrict Y, long ldy, float alpha,
                              float beta,
                              const float* Cm, long csm, long csn, long nc, int act, float p0, float p1)
{
    for (long j0 = 0; j0 < N; j0 += nc) {
        const long j1 = j0 + nc < N ? j0 + nc : N;
        for (long i0 = 0; i0 < M; i0 += EDGEC_MR) {
            const long mr = M - i0 < EDGEC_MR ? M - i0 : EDGEC_MR;
            const float* ap[EDGEC_MR];
            long ks;
            if (apacked) {
                for (long r = 0; r < EDGEC_MR; ++r) ap[r] = A + (i0 / EDGEC_MR) * K * EDGEC_MR + r;
                ks = EDGEC_MR;
            } else {
                for (long r = 0; r < EDGEC_MR; ++r) ap[r] = A + (i0 + (r < mr ? r : mr - 1)) * ars;
                ks = aks;
            }
            for (long j = j0; j < j1; j += EDGEC_NR) {
                const long nr = j1 - j < EDGEC_NR ? j1 - j : EDGEC_NR;
                edgec_ukernel(K, ap, ks, ldb ? Bp + j : Bp + (j / EDGEC_NR) * K * EDGEC_NR, ldb ? ldb : EDGEC_NR,
                              Y + i0 * ldy + j, ldy, mr, nr, alpha, beta, Cm ? Cm + i0 * csm + j * csn : NULL, csm,
                              csn, act, p0, p1);
            }
        }
    }
}
""",
    "conv": """\
/* Direct convolution, NCHW, groups/dilations/strides/pads; act applied per output plane. Used when
   there are too few output channels per group for the GEMM path. */
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
            edgec_act_fast(yp, plane, act, p0, p1);
        }
    }
}
""",
    "conv_small": """\
#ifndef EDGEC_CONTRACT
#if defined(__GNUC__) && !defined(__clang__)
#define EDGEC_CONTRACT __attribute__((optimize("fp-contract=fast")))
#else
#define EDGEC_CONTRACT
#endif
#endif
/* Convolution without scratch for small layers: for each output pixel, the output channels of a group
   in chunks of 16 accumulate over the taps; weights transposed at compile time to [G][K][mg rounded up
   to 16] (K = cg*KH*KW, zero-padded), so the chunk update is one contiguous, vectorizable row. */
EDGEC_CONTRACT static void edgec_conv_small(const float* restrict x, const float* restrict wt,
                                            const float* restrict b, float* restrict y, long N, long C, long H,
                                            long W, long M, long OH, long OW, long KH, long KW, long sh, long sw,
                                            long dh, long dw, long ph, long pw, long G, int act, float p0, float p1)
{
    const long cg = C / G, mg = M / G, K = cg * KH * KW, P = OH * OW, mgp = (mg + 15) / 16 * 16;
    for (long n = 0; n < N; ++n) {
        for (long g = 0; g < G; ++g) {
            const float* restrict xg = x + (n * C + g * cg) * H * W;
            for (long oh = 0; oh < OH; ++oh) {
                for (long ow = 0; ow < OW; ++ow) {
                    for (long m0 = 0; m0 < mg; m0 += 16) {
                        float acc[16];
                        for (int j = 0; j < 16; ++j) acc[j] = 0.0f;
                        const float* restrict wg = wt + g * K * mgp + m0;
                        for (long kh = 0; kh < KH; ++kh) {
                            const long ih = oh * sh - ph + kh * dh;
                            if (ih < 0 || ih >= H) continue;
                            for (long kw = 0; kw < KW; ++kw) {
                                const long iw = ow * sw - pw + kw * dw;
                                if (iw < 0 || iw >= W) continue;
                                const float* restrict xp = xg + ih * W + iw;
                                const float* restrict wr = wg + (kh * KW + kw) * mgp;
                                for (long c = 0; c < cg; ++c) {
                                    const float xv = xp[c * H * W];
                                    const float* restrict wc = wr + c * KH * KW * mgp;
                                    for (int j = 0; j < 16; ++j) acc[j] += wc[j] * xv;
                                }
                            }
                        }
                        const long mr = mg - m0 < 16 ? mg - m0 : 16;
                        float* restrict yp = y + (n * M + g * mg + m0) * P + oh * OW + ow;
                        for (long j = 0; j < mr; ++j) yp[j * P] = acc[j] + (b ? b[g * mg + m0 + j] : 0.0f);
                    }
                }
            }
        }
        edgec_act_fast(y + n * M * P, M * P, act, p0, p1);
    }
}
""",
    "conv_gemm": """\
/* Packs output pixels [p0, p0 + np) of the im2col matrix of one group (cg channels) into NR-wide
   panels: row k = (c, kh, kw), zero outside the image and in the padding columns of the last panel.
   A 1x1, stride-1, unpadded convolution copies rows of x. */
static void edgec_im2col_pack(const float* restrict x, float* restrict bp, long cg, long H, long W, long OW,
                              long KH, long KW, long sh, long sw, long dh, long dw, long ph, long pw, long p0,
                              long np)
{
    const long K = cg * KH * KW;
    const int pointwise = KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
    for (long q = 0; q < np; q += EDGEC_NR) {
        const long w = np - q < EDGEC_NR ? np - q : EDGEC_NR;
        float* restrict dst = bp + (q / EDGEC_NR) * K * EDGEC_NR;
        if (pointwise) {
            for (long c = 0; c < cg; ++c) {
                const float* restrict src = x + c * H * W + p0 + q;
                float* restrict d = dst + c * EDGEC_NR;
#if EDGEC_VEC
                if (w == EDGEC_NR) {
                    *(edgec_v8u*)d = *(const edgec_v8u*)src;
                    *(edgec_v8u*)(d + 8) = *(const edgec_v8u*)(src + 8);
                    continue;
                }
#endif
                for (long j = 0; j < w; ++j) d[j] = src[j];
                for (long j = w; j < EDGEC_NR; ++j) d[j] = 0.0f;
            }
            continue;
        }
        /* the panel's pixels as runs within one output row: (oh, first ow, first j, length) */
        long run_oh[EDGEC_NR], run_ow[EDGEC_NR], run_j[EDGEC_NR], run_n[EDGEC_NR], runs = 0;
        for (long j = 0; j < w;) {
            const long p = p0 + q + j, oh = p / OW, ow = p % OW;
            const long n = OW - ow < w - j ? OW - ow : w - j;
            run_oh[runs] = oh;
            run_ow[runs] = ow;
            run_j[runs] = j;
            run_n[runs] = n;
            ++runs;
            j += n;
        }
        for (long kh = 0; kh < KH; ++kh) {
            for (long kw = 0; kw < KW; ++kw) {
                const long kk = kh * KW + kw, cs = KH * KW * EDGEC_NR; /* row of channel c: kk + c * KH * KW */
                for (long r = 0; r < runs; ++r) {
                    float* restrict d = dst + kk * EDGEC_NR + run_j[r];
                    const long n = run_n[r], ih = run_oh[r] * sh - ph + kh * dh;
                    /* iw = iw0 + j * sw inside [0, W) for j in [jl, jh) */
                    const long iw0 = run_ow[r] * sw - pw + kw * dw;
                    long jl = iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw;
                    long jh = W - iw0 <= 0 ? 0 : (W - iw0 + sw - 1) / sw;
                    if (jh > n) jh = n;
                    if (ih < 0 || ih >= H) jh = 0;
                    if (jl > jh) jl = jh;
                    const float* restrict src = x + (ih < 0 || ih >= H ? 0 : ih * W) + iw0;
                    if (jl == 0 && jh == n && sw == 1) {
#if EDGEC_VEC
                        if (n == EDGEC_NR) {
                            for (long c = 0; c < cg; ++c, d += cs, src += H * W) {
                                *(edgec_v8u*)d = *(const edgec_v8u*)src;
                                *(edgec_v8u*)(d + 8) = *(const edgec_v8u*)(src + 8);
                            }
                            continue;
                        }
#endif
                        for (long c = 0; c < cg; ++c, d += cs, src += H * W)
                            for (long j = 0; j < n; ++j) d[j] = src[j];
                        continue;
                    }
                    for (long c = 0; c < cg; ++c, d += cs, src += H * W) {
                        for (long j = 0; j < jl; ++j) d[j] = 0.0f;
                        for (long j = jl; j < jh; ++j) d[j] = src[j * sw];
                        for (long j = jh; j < n; ++j) d[j] = 0.0f;
                    }
                }
                if (w < EDGEC_NR) {
                    float* restrict d = dst + kk * EDGEC_NR;
                    for (long c = 0; c < cg; ++c, d += cs)
                        for (long j = w; j < EDGEC_NR; ++j) d[j] = 0.0f;
                }
            }
        }
    }
}

/* Convolution as GEMM per group: Y_g[mg, OH*OW] = W_g[mg, cg*KH*KW] im2col(X_g), with the weights packed
   at compile time (groups one after the other, mg rounded up to MR) and the im2col matrix packed
   block by block (nc output pixels) into the scratch buffer; bias and activation in the epilogue. */
static void edgec_conv_gemm(const float* restrict x, const float* restrict wp, const float* restrict b,
                            float* restrict y, float* restrict scratch, long N, long C, long H, long W, long M,
                            long OH, long OW, long KH, long KW, long sh, long sw, long dh, long dw, long ph,
                            long pw, long G, long nc, int act, float p0, float p1)
{
    const long cg = C / G, mg = M / G, K = cg * KH * KW, P = OH * OW;
    const long mgp = (mg + EDGEC_MR - 1) / EDGEC_MR * EDGEC_MR;
    for (long n = 0; n < N; ++n) {
        for (long g = 0; g < G; ++g) {
            const float* restrict xg = x + (n * C + g * cg) * H * W;
            float* restrict yg = y + (n * M + g * mg) * P;
            const float* restrict wg = wp + g * mgp * K;
            const float* restrict bg = b ? b + g * mg : NULL;
            long j0 = 0;
            if (KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0) {
                /* 1x1: the input planes are B itself; full panels are read in place, the tail is packed */
                const long full = P / EDGEC_NR * EDGEC_NR;
                if (full > 0)
                    edgec_gemm_packed(mg, full, K, wg, 0, 0, 1, xg, P, yg, P, 1.0f, 1.0f, bg, 1, 0, nc, act, p0, p1);
                j0 = full;
            }
            for (; j0 < P; j0 += nc) {
                const long np = P - j0 < nc ? P - j0 : nc;
                edgec_im2col_pack(xg, scratch, cg, H, W, OW, KH, KW, sh, sw, dh, dw, ph, pw, j0, np);
                edgec_gemm_packed(mg, np, K, wg, 0, 0, 1, scratch, 0, yg + j0, P, 1.0f, 1.0f, bg, 1, 0, np, act, p0,
                                  p1);
            }
        }
    }
}
""",
    "dwconv": """\
#ifndef EDGEC_CONTRACT
#if defined(__GNUC__) && !defined(__clang__)
#define EDGEC_CONTRACT __attribute__((optimize("fp-contract=fast")))
#else
#define EDGEC_CONTRACT
#endif
#endif
/* Depthwise convolution through a zero-padded copy of each input plane (Hp x Wp, Hp = (OH-1)*sh +
   (KH-1)*dh + 1, Wp likewise), written as qh*qw phase planes of Hq x Wq: phase (a, b) holds padded
   (r*qh + a, c*qw + b), q = the strides. Output (oh, ow), tap (kh, kw) then reads phase ((kh*dh)%sh,
   (kw*dw)%sw) at row oh + kh*dh/sh, column ow + kw*dw/sw: every tap is a unit-stride shift of one
   phase plane, for every stride and dilation, and the strided loads leave the inner loop (one
   deinterleaving copy per input instead of shuffles on every tap). Rows of at least EDGEC_DW_DIRECT
   outputs are computed straight into y; narrower planes (14x14, 7x7) would leave the vector loop
   mostly in its remainder, so chunks of rows are computed at row pitch Wq as one flat loop into the
   scratch (the pitch-padding columns are computed and dropped) and copied out. 3x3 is unrolled.
   Scratch (keep in step with gen_conv): sh*sw*Hq*Wq floats, plus edgec_dw_rows(OH, Wq) * Wq for the
   flat chunks when OW < EDGEC_DW_DIRECT. */
#define EDGEC_DW_CHUNK 512
#define EDGEC_DW_DIRECT 32
#define EDGEC_DW_TAPS 64
/* output rows per flat chunk */
static long edgec_dw_rows(long OH, long Wq)
{
    const long r = EDGEC_DW_CHUNK / Wq;
    return r < 1 ? 1 : (r > OH ? OH : r);
}
/* Offset of tap (kh, kw) into the phase planes: phase ((kh*dh)%qh, (kw*dw)%qw), row kh*dh/qh, column
   kw*dw/qw. */
static long edgec_dw_tap(long kh, long kw, long Hq, long Wq, long qh, long qw, long dh, long dw)
{
    return (((kh * dh) % qh * qw + (kw * dw) % qw) * Hq + (kh * dh) / qh) * Wq + (kw * dw) / qw;
}
/* o[i] = bias + sum of the 9 taps w[t] * p[toff[t] + i], i < L. The output is a parameter of its own
   (restrict), so the compiler sees that it never overlaps the padded planes: no alias checks. */
EDGEC_CONTRACT static void edgec_dw_3x3(float* restrict o, const float* restrict p, const long* restrict toff,
                                        const float* restrict w, float bias, long L)
{
    const float* restrict r0 = p + toff[0];
    const float* restrict r1 = p + toff[1];
    const float* restrict r2 = p + toff[2];
    const float* restrict r3 = p + toff[3];
    const float* restrict r4 = p + toff[4];
    const float* restrict r5 = p + toff[5];
    const float* restrict r6 = p + toff[6];
    const float* restrict r7 = p + toff[7];
    const float* restrict r8 = p + toff[8];
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    for (long i = 0; i < L; ++i)
        o[i] = bias + w0 * r0[i] + w1 * r1[i] + w2 * r2[i] + w3 * r3[i] + w4 * r4[i] + w5 * r5[i]
             + w6 * r6[i] + w7 * r7[i] + w8 * r8[i];
}
/* o[i] += wv * r[i], i < L (one tap of a general kernel) */
EDGEC_CONTRACT static void edgec_dw_tap_acc(float* restrict o, const float* restrict r, float wv, long L)
{
    for (long i = 0; i < L; ++i) o[i] += wv * r[i];
}
/* Copies image plane xp (rows of W, h1 x w1 of it inside the padded plane) into its phase planes;
   the zero padding is written once by the caller (every channel fills the same positions). The
   phase arithmetic is per column phase and incremental per row: no division in the row loop. */
static void edgec_dw_scatter(const float* restrict xp, float* restrict buf, long W, long h1, long w1,
                             long Hq, long Wq, long qh, long qw, long ph, long pw)
{
    for (long b = 0; b < qw; ++b) {
        const long iw0 = ((b - pw) % qw + qw) % qw; /* first image column of column phase b */
        const long n = iw0 < w1 ? (w1 - iw0 + qw - 1) / qw : 0;
        float* restrict db = buf + b * Hq * Wq + (iw0 + pw) / qw;
        long ra = ph % qh, rq = ph / qh; /* padded row ih + ph = rq * qh + ra */
        for (long ih = 0; ih < h1; ++ih) {
            float* restrict d = db + (ra * qw * Hq + rq) * Wq;
            const float* restrict si = xp + ih * W + iw0;
            if (qw == 1) {
                for (long t = 0; t < n; ++t) d[t] = si[t];
            } else if (qw == 2) { /* a constant stride: vectorized as loads and shuffles */
                for (long t = 0; t < n; ++t) d[t] = si[2 * t];
            } else {
                for (long t = 0; t < n; ++t) d[t] = si[t * qw];
            }
            if (++ra == qh) {
                ra = 0;
                ++rq;
            }
        }
    }
}
EDGEC_CONTRACT static void edgec_dwconv2d_padded(const float* restrict x, const float* restrict w,
                                                 const float* restrict b, float* restrict y, float* restrict buf,
                                                 long N, long C, long H, long W, long OH, long OW, long KH, long KW,
                                                 long sh, long sw, long dh, long dw, long ph, long pw, int act,
                                                 float p0, float p1)
{
    const long Hp = (OH - 1) * sh + (KH - 1) * dh + 1, Wp = (OW - 1) * sw + (KW - 1) * dw + 1;
    const long qh = sh, qw = sw; /* phase split */
    const long Hq = (Hp + qh - 1) / qh, Wq = (Wp + qw - 1) / qw;
    const long h1 = H < Hp - ph ? H : Hp - ph, w1 = W < Wp - pw ? W : Wp - pw; /* image part inside buf */
    const int flat = OW < EDGEC_DW_DIRECT;
    const long rows = flat ? edgec_dw_rows(OH, Wq) : 1;
    float* restrict acc = buf + qh * qw * Hq * Wq;
    long toff[EDGEC_DW_TAPS]; /* the taps' offsets into the phase planes (computed once: divisions) */
    const long ntap = KH * KW <= EDGEC_DW_TAPS ? KH * KW : 0;
    for (long t = 0; t < ntap; ++t) toff[t] = edgec_dw_tap(t / KW, t % KW, Hq, Wq, qh, qw, dh, dw);
    for (long i = 0; i < qh * qw * Hq * Wq; ++i) buf[i] = 0.0f;
    for (long n = 0; n < N; ++n) {
        for (long c = 0; c < C; ++c) {
            edgec_dw_scatter(x + (n * C + c) * H * W, buf, W, h1, w1, Hq, Wq, qh, qw, ph, pw);
            const float* restrict wc = w + c * KH * KW;
            float* restrict yp = y + (n * C + c) * OH * OW;
            const float bias = b ? b[c] : 0.0f;
            for (long oh0 = 0; oh0 < OH; oh0 += rows) {
                const long nr = OH - oh0 < rows ? OH - oh0 : rows;
                const long L = (nr - 1) * Wq + OW; /* outputs of this chunk (row pitch Wq when flat) */
                float* restrict o = flat ? acc : yp + oh0 * OW;
                const float* restrict base = buf + oh0 * Wq;
                if (KH == 3 && KW == 3) {
                    edgec_dw_3x3(o, base, toff, wc, bias, L);
                } else {
                    for (long i = 0; i < L; ++i) o[i] = bias;
                    for (long t = 0; t < KH * KW; ++t) {
                        const long off = t < ntap ? toff[t] : edgec_dw_tap(t / KW, t % KW, Hq, Wq, qh, qw, dh, dw);
                        edgec_dw_tap_acc(o, base + off, wc[t], L);
                    }
                }
                for (long r = 0; r < nr && flat; ++r) {
                    float* restrict yr = yp + (oh0 + r) * OW;
                    const float* restrict ar = acc + r * Wq;
                    for (long ow = 0; ow < OW; ++ow) yr[ow] = ar[ow];
                }
            }
            edgec_act_fast(yp, OH * OW, act, p0, p1);
        }
    }
}
""",
    "gemm": """\
/* Y[M,N] = act(alpha * A B + beta * C): A(i, k) = A[i*ars + k*aks]; B compile-time packed (bpacked) or
   B(k, j) = B[k*bks + j*bjs], packed into the scratch buffer first; C(i, j) = Cm[i*csm + j*csn]. */
static void edgec_gemm(const float* restrict A, long ars, long aks, const float* restrict B, int bpacked, long bks,
                       long bjs, const float* restrict Cm, float* restrict Y, long M, long N, long K, float alpha,
                       float beta, long csm, long csn, long nc, int act, float p0, float p1, float* restrict scratch)
{
    const float* Bp = B;
    if (!bpacked) {
        for (long q = 0; q < N; q += EDGEC_NR) {
            const long w = N - q < EDGEC_NR ? N - q : EDGEC_NR;
            float* restrict d = scratch + (q / EDGEC_NR) * K * EDGEC_NR;
            for (long k = 0; k < K; ++k) {
                const float* restrict s = B + k * bks + q * bjs;
                if (bjs == 1) {
                    for (long j = 0; j < w; ++j) d[k * EDGEC_NR + j] = s[j];
                } else {
                    for (long j = 0; j < w; ++j) d[k * EDGEC_NR + j] = s[j * bjs];
                }
                for (long j = w; j < EDGEC_NR; ++j) d[k * EDGEC_NR + j] = 0.0f;
            }
        }
        Bp = scratch;
    }
    edgec_gemm_packed(M, N, K, A, ars, aks, 0, Bp, 0, Y, N, alpha, beta, Cm, csm, csn, nc, act, p0, p1);
}
""",
    "softmax": """\
#ifndef EDGEC_F8_DEFINED
#define EDGEC_F8_DEFINED
/* 8-float vectors for the row loops of softmax / layernorm (GCC >= 9, clang); scalar loops otherwise */
#if (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9)) && !defined(EDGEC_NO_VECTOR_EXT)
typedef float edgec_f8 __attribute__((vector_size(32)));
typedef float edgec_f8u __attribute__((vector_size(32), aligned(4)));
typedef int edgec_i8 __attribute__((vector_size(32)));
#define EDGEC_F8 1
#define EDGEC_F8SEL(m, a, b) ((edgec_f8)(((m) & (edgec_i8)(a)) | (~(m) & (edgec_i8)(b))))
#define EDGEC_F8SET(s) ((edgec_f8){(s), (s), (s), (s), (s), (s), (s), (s)})
#else
#define EDGEC_F8 0
#endif
#endif
/* exp(x) without libm, branch-free (Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial;
   relative error ~1e-7, about 1 ULP). Valid for x <= 88 (softmax arguments are <= 0); 0 below -87.34 (no
   subnormal results); NaN propagates. The 8-wide copy is written out in edgec_row_exp. */
static inline float edgec_expf(float x)
{
    float z = x < 88.0f ? x : 88.0f;
    z = z > -87.33654f ? z : -87.33654f;
    const float fx = z * 1.44269504088896341f;
    const int ni = (int)(fx + (fx < 0.0f ? -0.5f : 0.5f));
    const float n = (float)ni;
    const float r = (z - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    union { unsigned u; float f; } s; /* 2^n */
    s.u = (unsigned)(ni + 127) << 23;
    p = x < -87.33654f ? 0.0f : p * s.f;
    return x == x ? p : x;
}
/* max of x[0..n) (NaN ignored; -INFINITY when n == 0) */
static inline float edgec_row_max(const float* x, long n)
{
    float m = -INFINITY;
    long j = 0;
#if EDGEC_F8
    const long n8 = n - n % 8;
    if (n8 > 0) {
        edgec_f8 a = *(const edgec_f8u*)x;
        for (j = 8; j < n8; j += 8) {
            const edgec_f8 v = *(const edgec_f8u*)(x + j);
            a = EDGEC_F8SEL(v > a, v, a);
        }
        for (int l = 0; l < 8; ++l) m = a[l] > m ? a[l] : m;
    }
#endif
    for (; j < n; ++j) m = x[j] > m ? x[j] : m;
    return m;
}
/* y[j] = exp(x0[j] - m) (y may be x0); returns the sum */
static inline float edgec_row_exp(const float* x0, float* y, long n, float m)
{
    float s = 0.0f;
    long j = 0;
#if EDGEC_F8
    const long n8 = n - n % 8;
    edgec_f8 a = EDGEC_F8SET(0.0f);
    const edgec_f8 mv = EDGEC_F8SET(m), hi = EDGEC_F8SET(88.0f), lo = EDGEC_F8SET(-87.33654f);
    const edgec_f8 zero = EDGEC_F8SET(0.0f), half = EDGEC_F8SET(0.5f), mhalf = EDGEC_F8SET(-0.5f);
    for (j = 0; j < n8; j += 8) {
        const edgec_f8 x = *(const edgec_f8u*)(x0 + j) - mv;
        edgec_f8 z = EDGEC_F8SEL(x < hi, x, hi);
        z = EDGEC_F8SEL(z > lo, z, lo);
        edgec_f8 fx = z * EDGEC_F8SET(1.44269504088896341f);
        fx = fx + EDGEC_F8SEL(fx < zero, mhalf, half);
        const edgec_i8 ni = __builtin_convertvector(fx, edgec_i8);
        const edgec_f8 n8 = __builtin_convertvector(ni, edgec_f8);
        const edgec_f8 r = (z - n8 * EDGEC_F8SET(0.693359375f)) - n8 * EDGEC_F8SET(-2.12194440e-4f);
        edgec_f8 p = EDGEC_F8SET(1.9875691500e-4f);
        p = p * r + EDGEC_F8SET(1.3981999507e-3f);
        p = p * r + EDGEC_F8SET(8.3334519073e-3f);
        p = p * r + EDGEC_F8SET(4.1665795894e-2f);
        p = p * r + EDGEC_F8SET(1.6666665459e-1f);
        p = p * r + EDGEC_F8SET(5.0000001201e-1f);
        p = p * (r * r) + r + EDGEC_F8SET(1.0f);
        p = EDGEC_F8SEL(x < lo, zero, p * (edgec_f8)((ni + 127) << 23));
        const edgec_f8 e = EDGEC_F8SEL(x == x, p, x);
        *(edgec_f8u*)(y + j) = e;
        a += e;
    }
    for (int l = 0; l < 8; ++l) s += a[l];
#endif
    for (; j < n; ++j) {
        const float e = edgec_expf(x0[j] - m);
        y[j] = e;
        s += e;
    }
    return s;
}
static inline void edgec_row_scale(float* restrict y, long n, float s)
{
    for (long j = 0; j < n; ++j) y[j] *= s;
}
/* (Log)Softmax over the middle axis of [outer, n, inner]: contiguous rows (inner == 1) with the row
   loops above; otherwise blocks of up to 64 inner lanes, each pass a contiguous loop over the lanes. */
static inline void edgec_softmax(const float* restrict x, float* restrict y, long outer, long n, long inner, int log_)
{
    for (long o = 0; o < outer; ++o) {
        const float* restrict xo = x + o * n * inner;
        float* restrict yo = y + o * n * inner;
        if (inner == 1) {
            const float m = edgec_row_max(xo, n);
            const float s = edgec_row_exp(xo, yo, n, m);
            if (log_) {
                const float ls = logf(s);
                for (long k = 0; k < n; ++k) yo[k] = xo[k] - m - ls;
            } else {
                edgec_row_scale(yo, n, 1.0f / s);
            }
            continue;
        }
        for (long i0 = 0; i0 < inner; i0 += 64) {
            const long w = inner - i0 < 64 ? inner - i0 : 64;
            float m[64], s[64];
            for (long i = 0; i < w; ++i) {
                m[i] = -INFINITY;
                s[i] = 0.0f;
            }
            for (long k = 0; k < n; ++k) {
                const float* restrict xr = xo + k * inner + i0;
                for (long i = 0; i < w; ++i) m[i] = xr[i] > m[i] ? xr[i] : m[i];
            }
            for (long k = 0; k < n; ++k) {
                const float* restrict xr = xo + k * inner + i0;
                float* restrict yr = yo + k * inner + i0;
                for (long i = 0; i < w; ++i) {
                    const float e = edgec_expf(xr[i] - m[i]);
                    s[i] += e;
                    if (!log_) yr[i] = e;
                }
            }
            if (log_) {
                for (long i = 0; i < w; ++i) s[i] = m[i] + logf(s[i]);
                for (long k = 0; k < n; ++k) {
                    const float* restrict xr = xo + k * inner + i0;
                    float* restrict yr = yo + k * inner + i0;
                    for (long i = 0; i < w; ++i) yr[i] = xr[i] - s[i];
                }
            } else {
                for (long i = 0; i < w; ++i) s[i] = 1.0f / s[i];
                for (long k = 0; k < n; ++k) {
                    float* restrict yr = yo + k * inner + i0;
                    for (long i = 0; i < w; ++i) yr[i] *= s[i];
                }
            }
        }
    }
}
""",
    "layernorm": """\
#ifndef EDGEC_F8_DEFINED
#define EDGEC_F8_DEFINED
/* 8-float vectors for the row loops of softmax / layernorm (GCC >= 9, clang); scalar loops otherwise */
#if (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9)) && !defined(EDGEC_NO_VECTOR_EXT)
typedef float edgec_f8 __attribute__((vector_size(32)));
typedef float edgec_f8u __attribute__((vector_size(32), aligned(4)));
typedef int edgec_i8 __attribute__((vector_size(32)));
#define EDGEC_F8 1
#define EDGEC_F8SEL(m, a, b) ((edgec_f8)(((m) & (edgec_i8)(a)) | (~(m) & (edgec_i8)(b))))
#define EDGEC_F8SET(s) ((edgec_f8){(s), (s), (s), (s), (s), (s), (s), (s)})
#else
#define EDGEC_F8 0
#endif
#endif
/* sum of (x - c) and of (x - c)^2 over x[0..n), 8 lanes at a time */
static inline void edgec_row_moments(const float* x, long n, float c, float* sum, float* sq)
{
    float s = 0.0f, q = 0.0f;
    long i = 0;
#if EDGEC_F8
    const long n8 = n - n % 8;
    edgec_f8 a = EDGEC_F8SET(0.0f), b = EDGEC_F8SET(0.0f);
    const edgec_f8 cv = EDGEC_F8SET(c);
    for (i = 0; i < n8; i += 8) {
        const edgec_f8 d = *(const edgec_f8u*)(x + i) - cv;
        a += d;
        b += d * d;
    }
    for (int l = 0; l < 8; ++l) {
        s += a[l];
        q += b[l];
    }
#endif
    for (; i < n; ++i) {
        const float d = x[i] - c;
        s += d;
        q += d * d;
    }
    *sum = s;
    *sq = q;
}
/* LayerNormalization over the last n elements of each of `outer` rows (two passes: the mean, summed
   about the first element, then the variance about the mean; then one fused scale/shift pass). */
static void edgec_layernorm(const float* restrict x, const float* restrict scale, const float* restrict bias,
                            float* restrict y, long outer, long n, float eps)
{
    for (long o = 0; o < outer; ++o) {
        const float* restrict xp = x + o * n;
        float* restrict yp = y + o * n;
        const float x0 = n > 0 ? xp[0] : 0.0f;
        float sum, var, dummy;
        edgec_row_moments(xp, n, x0, &sum, &dummy);
        const float mean = x0 + sum / (float)n;
        edgec_row_moments(xp, n, mean, &dummy, &var);
        var /= (float)n;
        const float inv = 1.0f / sqrtf(var + eps);
        if (bias) {
            for (long i = 0; i < n; ++i) yp[i] = (xp[i] - mean) * inv * scale[i] + bias[i];
        } else {
            for (long i = 0; i < n; ++i) yp[i] = (xp[i] - mean) * inv * scale[i];
        }
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
HELPER_DEPS: Dict[str, Tuple[str, ...]] = {"act_fast": ("act",), "conv": ("act", "act_fast"),
                                           "gemm": ("act", "act_fast", "gemm_core"),
                                           "gemm_core": ("act", "act_fast"),
                                           "conv_gemm": ("act", "act_fast", "gemm_core"),
                                           "dwconv": ("act", "act_fast"), "conv_small": ("act", "act_fast")}


def helper_closure(names: Sequence[str]) -> List[str]:
    """``names`` with every helper they call, directly or not, in emission order (a helper is registered
    after the helpers it calls, so registration order puts dependencies first)."""
    out: List[str] = []

    def add(h: str) -> None:
        if h not in out:
            out.append(h)
            for d in HELPER_DEPS.get(h, ()):
                add(d)

    for h in names:
        add(h)
    order = ["act", *HELPERS]
    return sorted(out, key=order.index)


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
    #: Bytes of temporary storage the body needs (``s0``, a 16-byte aligned ``float*`` into the arena,
    #: live during this node only); 0: none.
    scratch: int = 0


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


def window_2d(node: Node, x: Tuple[int, ...], y: Tuple[int, ...], ks: Sequence[int]
              ) -> Tuple[Tuple[int, ...], Tuple[int, ...], List[int], List[int], List[int], List[int]]:
    """A 1-D or 2-D sliding window (Conv, pools) as 2-D: ``(x, y, kernel, strides, dilations, begin pads)``
    with strides/dilations from the attributes and pads from ``pads``/``auto_pad``; a 1-D window
    becomes height 1 (``x``/``y`` get a unit H dim)."""
    ns = len(ks)
    st = [int(v) for v in node.attr("strides", [1] * ns)]
    dl = [int(v) for v in node.attr("dilations", [1] * ns)]
    ks = [int(v) for v in ks]
    pb, _ = _spatial(node, x, y, ks, st, dl)
    if ns == 1:
        return (x[0], x[1], 1, x[2]), (y[0], y[1], 1, y[2]), [1] + ks, [1] + st, [1] + dl, [0] + pb
    return tuple(x), tuple(y), ks, st, dl, pb


#: Register tile of the GEMM micro-kernel (``EDGEC_MR`` x ``EDGEC_NR`` in the ``gemm_core`` helper).
_MR, _NR = 6, 16
#: Floats of one packed B block (K x nc) that the GEMM keeps in cache while every row panel of A
#: passes over it; also the size of a convolution's im2col scratch (128 KiB).
_BLOCK_FLOATS = 32768
#: Convolutions with fewer MACs use the pixel-wise kernel without scratch: the im2col scratch (part of
#: the arena) would cost more RAM on tiny models than the GEMM saves time there.
GEMM_MIN_MACS = 1 << 17


def _round_up(n: int, m: int) -> int:
    return (int(n) + m - 1) // m * m


def _block_cols(kk: int, n: int) -> int:
    """Columns of one packed B block: a multiple of NR, at most ``n`` rounded up."""
    nc = max(_NR, (_BLOCK_FLOATS // max(1, kk)) // _NR * _NR)
    return min(nc, _round_up(max(1, n), _NR))


def _packed_const(k: KernelContext, base: Value, tag: str, make: Callable[[np.ndarray], np.ndarray]) -> Value:
    """A new float32 constant ``make(base)`` (weights repacked at compile time for a kernel), cached per
    (base, tag) so that nodes sharing a weight share the packed copy."""
    from ...ir import ArrayTensor, Shape, TensorType

    cache = k.__dict__.setdefault("_packed", {})
    key = (id(base), tag)
    if key not in cache:
        arr = np.ascontiguousarray(make(np.asarray(base.const.numpy(), dtype=np.float32)), dtype=np.float32)
        cache[key] = (base, Value(f"{base.name}_{tag}", TensorType(DType.FLOAT, Shape(tuple(arr.shape))),
                                  ArrayTensor(arr)))
    return cache[key][1]


def _pack_a(w: np.ndarray, groups: int) -> np.ndarray:
    """[M, K] per group -> panels of MR rows (rows padded with zeros to a multiple of MR), each K x MR."""
    m, kk = w.shape[0], int(np.prod(w.shape[1:]))
    mg = m // groups
    mgp = _round_up(mg, _MR)
    out = []
    for g in range(groups):
        a = np.zeros((mgp, kk), np.float32)
        a[:mg] = w[g * mg:(g + 1) * mg].reshape(mg, kk)
        out.append(a.reshape(mgp // _MR, _MR, kk).transpose(0, 2, 1).reshape(-1))
    return np.concatenate(out)


def _pack_small(w: np.ndarray, groups: int) -> np.ndarray:
    """[M, cg, KH, KW] -> per group [K, mg rounded up to 16] (transposed, zero-padded)."""
    m, kk = w.shape[0], int(np.prod(w.shape[1:]))
    mg = m // groups
    mgp = _round_up(mg, 16)
    out = []
    for g in range(groups):
        t = np.zeros((kk, mgp), np.float32)
        t[:, :mg] = w[g * mg:(g + 1) * mg].reshape(mg, kk).T
        out.append(t.reshape(-1))
    return np.concatenate(out)


def _pack_b(b: np.ndarray) -> np.ndarray:
    """[..., K, N] -> per matrix, panels of NR columns (zero-padded), each K x NR."""
    kk, n = b.shape[-2], b.shape[-1]
    lead = b.shape[:-2]
    b = b.reshape((-1, kk, n))
    np_ = _round_up(n, _NR)
    p = np.zeros((b.shape[0], kk, np_), np.float32)
    p[:, :, :n] = b
    return p.reshape(b.shape[0], kk, np_ // _NR, _NR).transpose(0, 2, 1, 3).reshape(lead + (kk * np_,))


#: Flat outputs per chunk of the depthwise kernel (``EDGEC_DW_CHUNK`` in the ``dwconv`` helper).
_DW_CHUNK = 512
#: Output widths from which the depthwise kernel writes rows straight into y (``EDGEC_DW_DIRECT``).
_DW_DIRECT = 32


def _dw_scratch_floats(y: Sequence[int], ks: Sequence[int], st: Sequence[int], dl: Sequence[int]) -> int:
    """Scratch of ``edgec_dwconv2d_padded`` (same sizes as the C code): the padded input plane as
    sh*sw phase planes of Hq x Wq, plus one chunk of output rows at row pitch Wq for outputs narrower
    than ``_DW_DIRECT`` (``edgec_dw_rows``)."""
    hp = (y[2] - 1) * st[0] + (ks[0] - 1) * dl[0] + 1
    wp = (y[3] - 1) * st[1] + (ks[1] - 1) * dl[1] + 1
    hq, wq = -(-hp // st[0]), -(-wp // st[1])
    rows = min(max(1, _DW_CHUNK // wq), y[2])
    return st[0] * st[1] * hq * wq + (rows * wq if y[3] < _DW_DIRECT else 0)


def gen_conv(node: Node, k: KernelContext) -> NodeCode:
    """Depthwise: a direct kernel over the padded input plane split into stride phase planes (3x3
    unrolled; scratch :func:`_dw_scratch_floats`). Constant weights: at least :data:`GEMM_MIN_MACS` MACs,
    im2col blocks + packed GEMM with bias and activation in the epilogue (1x1 convolutions pack their
    input rows as is); fewer, a pixel-wise kernel over transposed weights (no scratch). Runtime
    weights: the direct kernel."""
    x, w, y = k.dims(node.input(0)), k.dims(node.input(1)), k.dims(node.output(0))
    if len(x) not in (3, 4):
        raise unsupported(node, f"only 1-D and 2-D convolution (input rank {len(x)})")
    x, y, ks, st, dl, pb = window_2d(node, x, y, w[2:])
    g = int(node.attr("group", 1))
    act, p0, p1 = _activation(node)
    ops = [node.input(0), node.input(1)] + ([node.input(2)] if node.input(2) is not None else [])
    bias = "x2" if len(ops) == 3 else "NULL"
    macs = _prod(y) * _prod(w[1:])
    tail = f"{ACT_CODES[act]}, {flit(p0)}, {flit(p1)});\n"
    geo = f"{ks[0]}, {ks[1]}, {st[0]}, {st[1]}, {dl[0]}, {dl[1]}, {pb[0]}, {pb[1]}"
    cg, mg = x[1] // g, y[1] // g
    wc = k.const(node.input(1))
    if cg == 1 and mg == 1:
        body = (f"    edgec_dwconv2d_padded(x0, x1, {bias}, y0, s0, {x[0]}, {x[1]}, {x[2]}, {x[3]}, {y[2]}, {y[3]}, "
                f"{geo}, " + tail)
        return NodeCode(ops, body, ["dwconv"], [act], macs=macs, scratch=4 * _dw_scratch_floats(y, ks, st, dl))
    if wc is not None and wc.dtype == np.float32 and macs >= GEMM_MIN_MACS:
        kk, p = cg * ks[0] * ks[1], y[2] * y[3]
        nc = _block_cols(kk, p)
        scratch = 4 * kk * nc
        if ks == [1, 1] and st == [1, 1] and pb == [0, 0]:  # 1x1: only the last partial panel is packed
            scratch = 4 * kk * _NR if p % _NR else 0
        ops[1] = _packed_const(k, node.input(1), f"packed{_MR}g{g}", lambda a: _pack_a(a, g))
        body = (f"    edgec_conv_gemm(x0, x1, {bias}, y0, {'s0' if scratch else 'NULL'}, {x[0]}, {x[1]}, {x[2]}, "
                f"{x[3]}, {y[1]}, {y[2]}, {y[3]}, {geo}, {g}, {nc}, " + tail)
        return NodeCode(ops, body, ["conv_gemm"], [act], macs=macs, scratch=scratch)
    if wc is not None and wc.dtype == np.float32:
        ops[1] = _packed_const(k, node.input(1), f"t16g{g}", lambda a: _pack_small(a, g))
        body = (f"    edgec_conv_small(x0, x1, {bias}, y0, {x[0]}, {x[1]}, {x[2]}, {x[3]}, {y[1]}, {y[2]}, {y[3]}, "
                f"{geo}, {g}, " + tail)
        return NodeCode(ops, body, ["conv_small"], [act], macs=macs)
    body = (f"    edgec_conv2d(x0, x1, {bias}, y0, {x[0]}, {x[1]}, {x[2]}, {x[3]}, {y[1]}, {y[2]}, {y[3]}, "
            f"{geo}, {g}, " + tail)
    return NodeCode(ops, body, ["conv"], [act], macs=macs)


def gen_gemm(node: Node, k: KernelContext) -> NodeCode:
    """Packed GEMM: a constant B is packed at compile time, a runtime B into the node's scratch."""
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
    ars, aks = (1, m) if ta else (kk, 1)
    bc = k.const(node.input(1))
    scratch = 0
    if bc is not None and bc.dtype == np.float32:
        ops[1] = _packed_const(k, node.input(1), f"packed{_NR}t{tb}", lambda w: _pack_b(w.T if tb else w))
        bargs, sarg = "1, 0, 0", "NULL"
    else:
        bargs, sarg = ("0, 1, " + str(kk) if tb else f"0, {n}, 1"), "s0"
        scratch = 4 * kk * _round_up(n, _NR)
    body = (f"    edgec_gemm(x0, {ars}, {aks}, x1, {bargs}, {c_arg}, y0, {m}, {n}, {kk}, {flit(alpha)}, "
            f"{flit(beta)}, {csm}, {csn}, {_block_cols(kk, n)}, {ACT_CODES[act]}, {flit(p0)}, {flit(p1)}, {sarg});\n")
    return NodeCode(ops, body, ["gemm"], [act], macs=_prod(y) * kk, scratch=scratch)


def gen_matmul(node: Node, k: KernelContext) -> NodeCode:
    """Batched packed GEMM; a constant B is packed at compile time (once when broadcast over the batch)."""
    a, b = k.dims(node.input(0)), k.dims(node.input(1))
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    m, kk, n = a2[-2], a2[-1], b2[-1]
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2])) if len(a2) > 2 or len(b2) > 2 else ()
    act, p0, p1 = _activation(node)
    ops = [node.input(0), node.input(1)]
    bias, csn = "NULL", 0
    if node.domain == "edgec" and node.input(2) is not None:
        if _prod(k.dims(node.input(2))) != n:
            raise unsupported(node, "FusedMatMul bias must have N elements")
        ops.append(node.input(2))
        bias, csn = "x2", 1
    bc = k.const(node.input(1))
    scratch = 0
    if bc is not None and bc.dtype == np.float32:
        ops[1] = _packed_const(k, node.input(1), f"packed{_NR}", lambda w: _pack_b(w.reshape(b2)))
        bmat = kk * _round_up(n, _NR)
        bargs, sarg = "1, 0, 0", "NULL"
    else:
        bmat = kk * n
        bargs, sarg = f"0, {n}, 1", "s0"
        scratch = 4 * kk * _round_up(n, _NR)
    a_st = [s * m * kk for s in _bcast_strides(a2[:-2], batch)] if batch else []
    b_st = [s * bmat for s in _bcast_strides(b2[:-2], batch)] if batch else []
    y_st = [s * m * n for s in _strides(batch)]
    nc = _block_cols(kk, n)
    call = (lambda o: f"edgec_gemm(x0 + {o[0]}, {kk}, 1, x1 + {o[1]}, {bargs}, {bias}, y0 + {o[2]}, {m}, {n}, {kk}, "
            f"1.0f, 1.0f, 0, {csn}, {nc}, {ACT_CODES[act]}, {flit(p0)}, {flit(p1)}, {sarg});")
    body = loop_nest(batch, [(0, a_st), (0, b_st), (0, y_st)], call)
    return NodeCode(ops, body, ["gemm"], [act], macs=_prod(batch) * m * n * kk, scratch=scratch)


# Pooling (MaxPool, AveragePool and the global pools, N-D, typed): kernels_pool.py.


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


def _float_literal(c: np.ndarray, v: Value) -> Optional[str]:
    return flit(float(c.reshape(-1)[0])) if c.dtype == np.float32 else None


def _elementwise(node: Node, k: KernelContext, inputs: Sequence[Value], expr: Callable[[List[str]], str], *,
                 out: int = 0, literal: Callable[[np.ndarray, Value], Optional[str]] = _float_literal,
                 typed: bool = False) -> NodeCode:
    """``y<out> = expr(operands)`` with numpy broadcasting; scalar constants that ``literal`` can write
    (default: float32 ones) become literals. ``typed``: the caller checked the element types."""
    y = k.dims(node.output(out))
    ops: List[Value] = []
    reads: List[str] = []
    nest_ops: List[Tuple[int, List[int]]] = [(0, _strides(y))]
    for v in inputs:
        c = k.const(v)
        text = literal(c, v) if c is not None and c.size == 1 else None
        if text is not None:
            reads.append(text)
            continue
        if v in ops:
            reads.append(f"@{ops.index(v)}")
            continue
        ops.append(v)
        reads.append(f"@{len(ops) - 1}")
        nest_ops.append((0, _bcast_strides(k.dims(v), y)))
    ydt = node.output(out).type.dtype  # type: ignore[union-attr]
    inplace = any(k.dims(v) == y and v.type.dtype == ydt for v in ops)  # type: ignore[union-attr]

    def body(o: List[str]) -> str:
        args = [r if not r.startswith("@") else f"x{r[1:]}[{o[1 + int(r[1:])]}]" for r in reads]
        return f"y{out}[{o[0]}] = {expr(args)};"

    return NodeCode(ops, loop_nest(y, nest_ops, body), inplace=inplace, typed=typed)


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
