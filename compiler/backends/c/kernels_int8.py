"""int8 C kernels: the integer ops of :mod:`.integerize`, Q/DQ at the float boundaries, typed int8 data movement.

Requantization follows :mod:`edgec.quant.fixedpoint` exactly (SRDHM + RDBPOT for ``double``
rounding, one int64 rounding for ``single``); no float arithmetic in any quantized layer.

Placement (``generate_c(..., placement=fn)``, ``fn(node) -> "npu" | "cpu"``, default ``"npu"``):

* ``npu``: the layer calls the accelerator HAL (``<name>_npu.h``): ``npu_conv2d_s8``,
  ``npu_fully_connected_s8``, ``npu_add_s8``, ``npu_mul_s8``, ``npu_avgpool_s8``, ``npu_requant_s8``,
  each taking a parameter struct and NCHW int8 tensors. ``<name>_npu_ref.c`` is the portable
  reference implementation (weak symbols with GCC/Clang); ``<name>.c`` includes it unless
  ``EDGEC_NPU_EXTERNAL`` is defined, so a vendor links hardware calls with the same model code.
* ``cpu``: the same C code, as static functions inside ``<name>.c`` (prefix ``edgec_q_``).

Both are generated from one template, so they are bit-identical. An NPU node the HAL cannot take
(broadcasting Add/Mul) runs on the CPU; the report's layer entry says where each layer runs.

Convolution kernels (int32 accumulation; the zero-point terms are folded into the bias by
:mod:`.integerize` and padding reads the input zero point, so the inner loops are pure dot products):

* im2col + int16 GEMM (``conv_gemm``): blocks of up to 64 output pixels gathered into int16 rows padded
  to a multiple of 16 (zeros in both operands), 4 output channels per pass over each row, contiguous
  ``int16 x int16 -> int32`` dot products (``pmaddwd`` with AVX2); 1x1 convolutions gather
  without bounds checks;
* depthwise (``conv_dw``): one zero-point-padded int16 plane per channel, 3x3 taps unrolled (stride 1,
  2 or generic); planes up to 8x8 are interleaved 8 channels at a time so every tap is one
  multiply-add across channels;
* requantization after the dot products, over runs of outputs (``requant_run``: per-element M0 and
  shift, so the small planes of several channels form one vectorizable run).

On the CPU placement the common layers (one-group convolutions, depthwise 3x3, same-shape Add) take the
register-blocked / vectorized kernels of :mod:`.kernels_int8_fast` (weights packed at compile time,
working memory in the arena); the kernels below run the rest, and the HAL reference.

The working memory is on the stack (bounded by ``GEMM_ROWS``/``GEMM_MAX_K``/``DW_MAX_HW``; larger layers
use the kernels without it). On the CPU the dispatch and the kernels are inlined into each layer
(``always_inline`` with GCC/Clang), so the constant parameters become compile-time trip counts: about
twice as fast as the HAL reference, which stays generic (runtime parameters), at the cost of code size.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ...errors import UnsupportedModelError
from ...ir import Node
from ...ir.dtypes import DType
from . import kernels as K
from .kernels import KernelContext, NodeCode, flit, loop_nest, unsupported

__all__ = ["hal_header", "hal_reference", "HAL_FUNCTIONS"]

EDGEC = "edgec"

# --- C templates (@P@: name prefix, @S@: storage of the public entry points) --------------------------

_STRUCTS = """\
typedef struct {
    int32_t n, c, h, w, m, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw, groups;
    int32_t x_zp, y_zp, qmin, qmax, per_channel, single, acc64;
} @P@conv_params;
typedef struct { int32_t rows, n, k, x_zp, y_zp, qmin, qmax, per_channel, single, acc64; } @P@fc_params;
typedef struct {
    int32_t size, in1_offset, in2_offset, out_offset, left_shift, m1, s1, m2, s2, mo, so, qmin, qmax, sub, single;
} @P@add_params;
typedef struct { int32_t size, a_zp, b_zp, m, s, y_zp, qmin, qmax, single; } @P@mul_params;
typedef struct {
    int32_t nc, h, w, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw, include_pad, x_zp, qmin, qmax;
} @P@pool_params;
typedef struct { int32_t size, x_zp, y_zp, m, s, qmin, qmax, single; } @P@requant_params;
"""

_COMMON = """\
/* Fixed-point requantization, bit-exact with edgec.quant.fixedpoint (TFLite / gemmlowp / CMSIS-NN). */
static inline int32_t @P@sat32(int64_t v)
{
    return v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : (int32_t)v);
}
/* SaturatingRoundingDoublingHighMul: (a*b + nudge) / 2^31 truncated, ties towards +inf. */
static inline int32_t @P@srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}
/* RoundingDivideByPOT: x / 2^e, ties away from zero (arithmetic shift). */
static inline int32_t @P@rdbpot(int32_t x, int e)
{
    const int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
    const int32_t rem = x & mask;
    const int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (rem > thr ? 1 : 0);
}
/* MultiplyByQuantizedMultiplier: x * M0 * 2^(s - 31), double (gemmlowp) or single (CMSIS-NN) rounding. */
static inline int32_t @P@mbqm(int32_t x, int32_t m, int32_t s, int single)
{
    if (single) {
        const int total = 31 - s;
        return @P@sat32(((int64_t)x * m + ((int64_t)1 << (total - 1))) >> total);
    }
    const int left = s > 0 ? (s > 31 ? 31 : s) : 0;
    const int right = s > 0 ? 0 : -s;
    return @P@rdbpot(@P@srdhm(@P@sat32((int64_t)x * ((int64_t)1 << left)), m), right);
}
static inline int8_t @P@clamp8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}
/* clamp(MBQM(acc) + zy): the common double-rounding case (shift <= 0) without branches on the rounding. */
static inline int8_t @P@requant1(int32_t acc, int32_t m0, int32_t s0, int32_t zy, int32_t lo, int32_t hi, int single)
{
    if (!single && s0 <= 0) {
        const int e = -s0;
        const int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
        const int64_t ab = (int64_t)acc * m0;
        const int64_t sn = ab + (ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
        const int32_t t = (int32_t)((sn + (sn < 0 ? (((int64_t)1 << 31) - 1) : 0)) >> 31);
        const int32_t v = (t >> e) + ((t & mask) > ((mask >> 1) + (t < 0)) ? 1 : 0) + zy;
        return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
    }
    return @P@clamp8(@P@mbqm(acc, m0, s0, single) + zy, lo, hi);
}
static inline int8_t @P@add_elem(const @P@add_params* p, int32_t a, int32_t b)
{
    const int32_t sa = @P@mbqm((a + p->in1_offset) * (1 << p->left_shift), p->m1, p->s1, p->single);
    const int32_t sb = @P@mbqm((b + p->in2_offset) * (1 << p->left_shift), p->m2, p->s2, p->single);
    const int32_t raw = p->sub ? sa - sb : sa + sb;
    return @P@clamp8(@P@mbqm(raw, p->mo, p->so, p->single) + p->out_offset, p->qmin, p->qmax);
}
static inline int8_t @P@mul_elem(const @P@mul_params* p, int32_t a, int32_t b)
{
    return @P@clamp8(@P@mbqm((a - p->a_zp) * (b - p->b_zp), p->m, p->s, p->single) + p->y_zp, p->qmin, p->qmax);
}
"""

_CONV_ROWS = """\
/* One output pixel at a time: gather its patch (cg*kh*kw int8, padding = the input zero point), then one
   int8 dot product per output channel of the group (contiguous weights [M, cg*kh*kw]). */
@R@void @P@conv2d_@ACC@(const @P@conv_params* p, const int8_t* x, const int8_t* w, const int32_t* bias,
                        const int32_t* mult, const int32_t* shift, int8_t* y, int8_t* patch)
{
    const long N = p->n, C = p->c, H = p->h, W = p->w, M = p->m, OH = p->oh, OW = p->ow, KH = p->kh, KW = p->kw;
    const long sh = p->sh, sw = p->sw, dh = p->dh, dw = p->dw, ph = p->ph, pw = p->pw, G = p->groups;
    const long cg = C / G, mg = M / G, K = cg * KH * KW;
    const int32_t zx = p->x_zp, zy = p->y_zp, lo = p->qmin, hi = p->qmax, pc = p->per_channel, single = p->single;
    const @T@ xoff = @XOFF@; /* int64: (x - zx) * w, bias not folded; int32: x * w, zx terms folded in the bias */
    for (long n = 0; n < N; ++n) {
        for (long g = 0; g < G; ++g) {
            const int8_t* xg = x + (n * C + g * cg) * H * W;
            for (long oh = 0; oh < OH; ++oh) {
                for (long ow = 0; ow < OW; ++ow) {
                    int8_t* pp = patch;
                    const long ih0 = oh * sh - ph, iw0 = ow * sw - pw;
                    if (ih0 >= 0 && ih0 + (KH - 1) * dh < H && iw0 >= 0 && iw0 + (KW - 1) * dw < W) {
                        for (long c = 0; c < cg; ++c) { /* interior: no bounds checks */
                            const int8_t* xp = xg + c * H * W + ih0 * W + iw0;
                            for (long kh = 0; kh < KH; ++kh)
                                for (long kw = 0; kw < KW; ++kw) *pp++ = xp[kh * dh * W + kw * dw];
                        }
                    } else for (long c = 0; c < cg; ++c) {
                        const int8_t* xp = xg + c * H * W;
                        for (long kh = 0; kh < KH; ++kh) {
                            const long ih = oh * sh - ph + kh * dh;
                            if (ih < 0 || ih >= H) {
                                for (long kw = 0; kw < KW; ++kw) *pp++ = (int8_t)zx;
                                continue;
                            }
                            const int8_t* xr = xp + ih * W;
                            for (long kw = 0; kw < KW; ++kw) {
                                const long iw = ow * sw - pw + kw * dw;
                                *pp++ = (iw >= 0 && iw < W) ? xr[iw] : (int8_t)zx;
                            }
                        }
                    }
                    for (long m = g * mg; m < (g + 1) * mg; ++m) {
                        const int8_t* wm = w + m * K;
                        @T@ acc = bias[m];
                        for (long k = 0; k < K; ++k) acc += ((@T@)patch[k] + xoff) * wm[k];
                        const long c = pc ? m : 0;
                        y[((n * M + m) * OH + oh) * OW + ow] =
                            @P@requant1(@P@sat32(acc), mult[c], shift[c], zy, lo, hi, single);
                    }
                }
            }
        }
    }
}
"""

_CONV_FAST = """\
/* Requantize a tile of accumulators (per-channel parameters fixed for the tile). */
static inline void @P@requant_tile_@ACC@(const @T@* acc, long n, int32_t m0, int32_t s0, int32_t zy, int32_t lo,
                                         int32_t hi, int single, int8_t* y)
{
    if (!single && s0 <= 0) { /* the common case, branch-free: SRDHM (M0 < 2^31, no saturation case) + RDBPOT */
        const int e = -s0;
        const int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
        for (long i = 0; i < n; ++i) {
            const int64_t ab = (int64_t)@P@sat32(acc[i]) * m0;
            const int64_t sn = ab + (ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
            const int32_t t = (int32_t)((sn + (sn < 0 ? (((int64_t)1 << 31) - 1) : 0)) >> 31); /* trunc division */
            const int32_t v = (t >> e) + ((t & mask) > ((mask >> 1) + (t < 0)) ? 1 : 0) + zy;
            y[i] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
        }
        return;
    }
    for (long i = 0; i < n; ++i) y[i] = @P@clamp8(@P@mbqm(@P@sat32(acc[i]), m0, s0, single) + zy, lo, hi);
}
/* 1x1 convolution, stride 1, no padding: per output channel, a tile of pixels accumulates over the inputs. */
@R@void @P@conv1x1_@ACC@(const @P@conv_params* p, const int8_t* x, const int8_t* w, const int32_t* bias,
                         const int32_t* mult, const int32_t* shift, int8_t* y)
{
    enum { TILE = 128 };
    const long N = p->n, C = p->c, M = p->m, HW = (long)p->h * p->w, G = p->groups, cg = C / G, mg = M / G;
    const int32_t zy = p->y_zp, lo = p->qmin, hi = p->qmax, pc = p->per_channel, single = p->single;
    const @T@ xoff = @XOFF@;
    for (long n = 0; n < N; ++n) {
        for (long g = 0; g < G; ++g) {
            for (long t0 = 0; t0 < HW; t0 += TILE) {
                const long nt = t0 + TILE < HW ? TILE : HW - t0;
                for (long m = g * mg; m < (g + 1) * mg; ++m) {
                    @T@ acc[TILE];
                    const @T@ b = bias[m];
                    for (long t = 0; t < nt; ++t) acc[t] = b;
                    const int8_t* wm = w + m * cg;
                    for (long c = 0; c < cg; ++c) {
                        const @T@ wv = wm[c];
                        const int8_t* xc = x + (n * C + g * cg + c) * HW + t0;
                        for (long t = 0; t < nt; ++t) acc[t] += wv * ((@T@)xc[t] + xoff);
                    }
                    const long k = pc ? m : 0;
                    @P@requant_tile_@ACC@(acc, nt, mult[k], shift[k], zy, lo, hi, single, y + (n * M + m) * HW + t0);
                }
            }
        }
    }
}
/* Few inputs per output (depthwise): per output row, every tap adds a shifted input row (vectorized over
   the row); padding reads the input zero point. */
@R@void @P@conv_rows_@ACC@(const @P@conv_params* p, const int8_t* x, const int8_t* w, const int32_t* bias,
                           const int32_t* mult, const int32_t* shift, int8_t* y)
{
    enum { TILE = 128 };
    const long C = p->c, H = p->h, W = p->w, M = p->m, OH = p->oh, OW = p->ow, KH = p->kh, KW = p->kw;
    const long sh = p->sh, sw = p->sw, dh = p->dh, dw = p->dw, ph = p->ph, pw = p->pw;
    const long cg = C / p->groups, mg = M / p->groups;
    const int32_t zy = p->y_zp, lo = p->qmin, hi = p->qmax, pc = p->per_channel, single = p->single;
    const @T@ zx = p->x_zp;
    const @T@ xoff = @XOFF@;
    for (long n = 0; n < p->n; ++n) {
        for (long m = 0; m < M; ++m) {
            const long g = m / mg;
            const int8_t* wm = w + m * cg * KH * KW;
            const long k = pc ? m : 0;
            int8_t* yp = y + (n * M + m) * OH * OW;
            for (long oh = 0; oh < OH; ++oh) {
                for (long t0 = 0; t0 < OW; t0 += TILE) {
                    const long t1 = t0 + TILE < OW ? t0 + TILE : OW;
                    @T@ acc[TILE];
                    for (long i = 0; i < t1 - t0; ++i) acc[i] = bias[m];
                    for (long c = 0; c < cg; ++c) {
                        const int8_t* xp = x + (n * C + g * cg + c) * H * W;
                        const int8_t* wp = wm + c * KH * KW;
                        for (long kh = 0; kh < KH; ++kh) {
                            const long ih = oh * sh - ph + kh * dh;
                            for (long kw = 0; kw < KW; ++kw) {
                                const @T@ wv = wp[kh * KW + kw];
                                const @T@ wz = wv * (zx + xoff);
                                if (ih < 0 || ih >= H) {
                                    for (long i = 0; i < t1 - t0; ++i) acc[i] += wz;
                                    continue;
                                }
                                const long off = kw * dw - pw; /* iw = ow * sw + off */
                                long a = off >= 0 ? 0 : (-off + sw - 1) / sw;
                                long b = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
                                a = a < t0 ? t0 : (a > t1 ? t1 : a);
                                b = b < a ? a : (b > t1 ? t1 : b);
                                const int8_t* xr = xp + ih * W;
                                for (long ow = t0; ow < a; ++ow) acc[ow - t0] += wz;
                                if (sw == 1) {
                                    for (long ow = a; ow < b; ++ow) acc[ow - t0] += wv * ((@T@)xr[ow + off] + xoff);
                                } else {
                                    for (long ow = a; ow < b; ++ow) acc[ow - t0] += wv * ((@T@)xr[ow * sw + off] + xoff);
                                }
                                for (long ow = b; ow < t1; ++ow) acc[ow - t0] += wz;
                            }
                        }
                    }
                    @P@requant_tile_@ACC@(acc, t1 - t0, mult[k], shift[k], zy, lo, hi, single, yp + oh * OW + t0);
                }
            }
        }
    }
}
"""

_CONV_GEMM = """\
/* Requantize n int32 accumulators whose (M0, shift) change along the run (mv, sv: per element), all in the
   common double-rounding case (shift <= 0): vectorizable with per-lane multipliers and shifts. */
static inline void @P@requant_run(const int32_t* restrict acc, long n, const int32_t* restrict mv,
                                  const int32_t* restrict sv, int32_t zy, int32_t lo, int32_t hi, int8_t* restrict y)
{
    for (long i = 0; i < n; ++i) {
        const int32_t e = -sv[i];
        const int32_t mask = (int32_t)(((uint32_t)1 << e) - 1u);
        const int64_t ab = (int64_t)acc[i] * mv[i];
        const int64_t sn = ab + (ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
        const int32_t t = (int32_t)((sn + (sn < 0 ? (((int64_t)1 << 31) - 1) : 0)) >> 31); /* trunc division */
        const int32_t v = (t >> e) + ((t & mask) > ((mask >> 1) + (t < 0)) ? 1 : 0) + zy;
        y[i] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
    }
}
/* Convolution as im2col + GEMM (int32 accumulation, zero-point terms folded in the bias): PB output pixels
   at a time are gathered into int16 rows a[PB][KP] (padding = the input zero point; KP: K rounded up to
   16, the extra columns zero in both operands), the weights of 4 output channels are widened into
   wb[4][KP], and each row meets the 4 weight rows in one pass of contiguous int16 dot products over KP
   (pmaddwd-friendly); requantization per tile of pixels afterwards. buf: (PB + 4) * KP int16. */
@AI@@R@void @P@conv_gemm(const @P@conv_params* p, const int8_t* restrict x, const int8_t* restrict w,
                     const int32_t* restrict bias, const int32_t* restrict mult, const int32_t* restrict shift,
                     int8_t* restrict y, int16_t* restrict buf, long PB)
{
    const long N = p->n, C = p->c, H = p->h, W = p->w, M = p->m, OH = p->oh, OW = p->ow, KH = p->kh, KW = p->kw;
    const long sh = p->sh, sw = p->sw, dh = p->dh, dw = p->dw, ph = p->ph, pw = p->pw, G = p->groups;
    const long cg = C / G, mg = M / G, K0 = cg * KH * KW, K = (K0 + 15) / 16 * 16, P = OH * OW;
    const int32_t zy = p->y_zp, lo = p->qmin, hi = p->qmax, pc = p->per_channel, single = p->single;
    const int16_t zx = (int16_t)p->x_zp;
    const int pointwise = KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0 && OH == H && OW == W;
    int16_t* restrict a = buf;
    int16_t* restrict wb = buf + PB * K;
    int32_t acc[4][@PBMAX@];
    for (long q = 0; q < PB; ++q)
        for (long k = K0; k < K; ++k) a[q * K + k] = 0;
    for (long n = 0; n < N; ++n) {
        for (long g = 0; g < G; ++g) {
            const int8_t* restrict xg = x + (n * C + g * cg) * H * W;
            for (long p0 = 0; p0 < P; p0 += PB) {
                const long np = P - p0 < PB ? P - p0 : PB;
                if (pointwise) {
                    for (long c = 0; c < cg; ++c) {
                        const int8_t* restrict xc = xg + c * H * W + p0;
                        for (long q = 0; q < np; ++q) a[q * K + c] = xc[q];
                    }
                } else {
                    for (long q = 0; q < np; ++q) {
                        const long oh = (p0 + q) / OW, ow = (p0 + q) % OW;
                        const long ih0 = oh * sh - ph, iw0 = ow * sw - pw;
                        int16_t* restrict ap = a + q * K;
                        if (ih0 >= 0 && ih0 + (KH - 1) * dh < H && iw0 >= 0 && iw0 + (KW - 1) * dw < W) {
                            for (long c = 0; c < cg; ++c) {
                                const int8_t* restrict xp = xg + c * H * W + ih0 * W + iw0;
                                for (long kh = 0; kh < KH; ++kh)
                                    for (long kw = 0; kw < KW; ++kw) *ap++ = xp[kh * dh * W + kw * dw];
                            }
                        } else {
                            for (long c = 0; c < cg; ++c) {
                                const int8_t* restrict xp = xg + c * H * W;
                                for (long kh = 0; kh < KH; ++kh) {
                                    const long ih = ih0 + kh * dh;
                                    if (ih < 0 || ih >= H) {
                                        for (long kw = 0; kw < KW; ++kw) *ap++ = zx;
                                        continue;
                                    }
                                    for (long kw = 0; kw < KW; ++kw) {
                                        const long iw = iw0 + kw * dw;
                                        *ap++ = (iw >= 0 && iw < W) ? (int16_t)xp[ih * W + iw] : zx;
                                    }
                                }
                            }
                        }
                    }
                }
                for (long m0 = g * mg; m0 < (g + 1) * mg; m0 += 4) {
                    const long nm = (g + 1) * mg - m0 < 4 ? (g + 1) * mg - m0 : 4;
                    for (long i = 0; i < 4; ++i) {
                        const int8_t* restrict wm = w + (m0 + (i < nm ? i : 0)) * K0;
                        for (long k = 0; k < K0; ++k) wb[i * K + k] = wm[k];
                        for (long k = K0; k < K; ++k) wb[i * K + k] = 0;
                    }
                    const int16_t* restrict w0 = wb;
                    const int16_t* restrict w1 = wb + K;
                    const int16_t* restrict w2 = wb + 2 * K;
                    const int16_t* restrict w3 = wb + 3 * K;
                    for (long q = 0; q < np; ++q) {
                        const int16_t* restrict aq = a + q * K;
                        int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                        for (long k = 0; k < K; ++k) {
                            const int32_t v = aq[k];
                            s0 += v * w0[k];
                            s1 += v * w1[k];
                            s2 += v * w2[k];
                            s3 += v * w3[k];
                        }
                        acc[0][q] = s0;
                        acc[1][q] = s1;
                        acc[2][q] = s2;
                        acc[3][q] = s3;
                    }
                    int common = !single && np == P; /* one run over the nm channels' whole planes */
                    for (long i = 0; i < nm; ++i) {
                        const long m = m0 + i, c = pc ? m : 0;
                        const int32_t b = bias[m];
                        for (long q = 0; q < np; ++q) acc[i][q] += b;
                        common = common && shift[c] <= 0 && shift[c] >= -31;
                    }
                    if (common) {
                        int32_t run[4 * @PBMAX@], mv[4 * @PBMAX@], sv[4 * @PBMAX@];
                        for (long i = 0; i < nm; ++i) {
                            const long c = pc ? m0 + i : 0;
                            for (long q = 0; q < np; ++q) {
                                run[i * np + q] = acc[i][q];
                                mv[i * np + q] = mult[c];
                                sv[i * np + q] = shift[c];
                            }
                        }
                        @P@requant_run(run, nm * np, mv, sv, zy, lo, hi, y + (n * M + m0) * P);
                        continue;
                    }
                    for (long i = 0; i < nm; ++i) {
                        const long m = m0 + i, c = pc ? m : 0;
                        @P@requant_tile_i32(acc[i], np, mult[c], shift[c], zy, lo, hi, single, y + (n * M + m) * P + p0);
                    }
                }
            }
        }
    }
}
"""

_CONV_DW = """\
/* Depthwise convolution (one input channel per group): each input plane is copied once into an int16
   plane padded with the input zero point (buf: Hp * Wp int16), so every tap of a row of outputs is a
   branch-free multiply-add over the row. Small planes: the accumulators of consecutive channels are
   collected (up to RUN outputs) and requantized in one vectorizable run; large planes: per row tile. */
@AI@@R@void @P@conv_dw(const @P@conv_params* p, const int8_t* restrict x, const int8_t* restrict w,
                   const int32_t* restrict bias, const int32_t* restrict mult, const int32_t* restrict shift,
                   int8_t* restrict y, int16_t* restrict buf)
{
    enum { TILE = @PBMAX@, RUN = 4 * @PBMAX@, FLAT = 1024 };
    const long C = p->c, H = p->h, W = p->w, M = p->m, OH = p->oh, OW = p->ow, KH = p->kh, KW = p->kw;
    const long sh = p->sh, sw = p->sw, dh = p->dh, dw = p->dw, ph = p->ph, pw = p->pw, mg = M / p->groups;
    const long Hp = (OH - 1) * sh + (KH - 1) * dh + 1, Wp = (OW - 1) * sw + (KW - 1) * dw + 1, P = OH * OW;
    const int32_t zy = p->y_zp, lo = p->qmin, hi = p->qmax, pc = p->per_channel, single = p->single;
    const int16_t zx = (int16_t)p->x_zp;
    const int batch = P <= RUN && OW <= TILE && !single;
    int32_t run[RUN], mv[RUN], sv[RUN];
    long nrun = 0, mrun = 0;
    if (M == p->groups && OH <= 8 && OW <= 8 && KH * KW <= 25 && !single) {
        /* tiny planes: 8 channels per pass, interleaved (buf[(r * Wp + c) * 8 + channel], Hp * Wp * 8 int16),
           so every tap is one multiply-add across 8 channels whatever the plane size */
        for (long n = 0; n < p->n; ++n) {
            for (long m0 = 0; m0 < M; m0 += 8) {
                const long nb = M - m0 < 8 ? M - m0 : 8;
                int32_t wt[25 * 8], b8[8];
                int ok = 1;
                const long ihe = H < Hp - ph ? H : Hp - ph, iwe = W < Wp - pw ? W : Wp - pw;
                for (long i = 0; i < Hp * Wp * 8; ++i) buf[i] = zx;
                for (long ch = 0; ch < 8; ++ch) {
                    if (ch < nb) {
                        const int8_t* restrict xp = x + (n * C + m0 + ch) * H * W;
                        for (long ih = 0; ih < ihe; ++ih)
                            for (long iw = 0; iw < iwe; ++iw) buf[((ih + ph) * Wp + iw + pw) * 8 + ch] = xp[ih * W + iw];
                    }
                    for (long t = 0; t < KH * KW; ++t) wt[t * 8 + ch] = ch < nb ? w[(m0 + ch) * KH * KW + t] : 0;
                    b8[ch] = ch < nb ? bias[m0 + ch] : 0;
                    if (ch < nb) {
                        const int32_t sk = shift[pc ? m0 + ch : 0];
                        ok = ok && sk <= 0 && sk >= -31;
                    }
                }
                int32_t out[8 * 64];
                for (long oh = 0; oh < OH; ++oh) {
                    for (long ow = 0; ow < OW; ++ow) {
                        int32_t acc[8];
                        for (long ch = 0; ch < 8; ++ch) acc[ch] = b8[ch];
                        for (long kh = 0; kh < KH; ++kh) {
                            for (long kw = 0; kw < KW; ++kw) {
                                const int16_t* restrict bp = buf + ((oh * sh + kh * dh) * Wp + ow * sw + kw * dw) * 8;
                                const int32_t* restrict wp = wt + (kh * KW + kw) * 8;
                                for (long ch = 0; ch < 8; ++ch) acc[ch] += wp[ch] * bp[ch];
                            }
                        }
                        for (long ch = 0; ch < nb; ++ch) out[ch * P + oh * OW + ow] = acc[ch];
                    }
                }
                if (ok) {
                    int32_t mv8[8 * 64], sv8[8 * 64];
                    for (long ch = 0; ch < nb; ++ch) {
                        const long k = pc ? m0 + ch : 0;
                        for (long q = 0; q < P; ++q) {
                            mv8[ch * P + q] = mult[k];
                            sv8[ch * P + q] = shift[k];
                        }
                    }
                    @P@requant_run(out, nb * P, mv8, sv8, zy, lo, hi, y + (n * M + m0) * P);
                } else {
                    for (long ch = 0; ch < nb; ++ch) {
                        const long k = pc ? m0 + ch : 0;
                        @P@requant_tile_i32(out + ch * P, P, mult[k], shift[k], zy, lo, hi, single,
                                            y + (n * M + m0 + ch) * P);
                    }
                }
            }
        }
        return;
    }
    for (long n = 0; n < p->n; ++n) {
        for (long m = 0; m < M; ++m) {
            if (m % mg == 0) { /* the padded plane of input channel m / mg */
                const int8_t* restrict xp = x + (n * C + m / mg) * H * W;
                for (long r = 0; r < Hp; ++r) {
                    const long ih = r - ph;
                    int16_t* restrict br = buf + r * Wp;
                    if (ih < 0 || ih >= H) {
                        for (long c = 0; c < Wp; ++c) br[c] = zx;
                        continue;
                    }
                    const long c0 = pw < Wp ? pw : Wp, c1 = W + pw < Wp ? W + pw : Wp;
                    for (long c = 0; c < c0; ++c) br[c] = zx;
                    for (long c = c0; c < c1; ++c) br[c] = xp[ih * W + c - pw];
                    for (long c = c1 > c0 ? c1 : c0; c < Wp; ++c) br[c] = zx;
                }
            }
            const int8_t* restrict wm = w + m * KH * KW;
            const int32_t b = bias[m];
            const long k = pc ? m : 0;
            const int use_run = batch && shift[k] <= 0 && shift[k] >= -31;
            int8_t* restrict ym = y + (n * M + m) * P;
            if (use_run && nrun + P > RUN) { /* flush the collected channels */
                @P@requant_run(run, nrun, mv, sv, zy, lo, hi, y + (n * M + mrun) * P);
                nrun = 0;
            }
            if (use_run && nrun == 0) mrun = m;
            if (use_run && KH == 3 && KW == 3 && sw == 1 && dw == 1 && (OH - 1) * sh * Wp + OW <= FLAT) {
                /* small plane: one run over the flattened padded plane (row pitch Wp), then the OW valid
                   outputs of every row */
                const int32_t w0 = wm[0], w1 = wm[1], w2 = wm[2], w3 = wm[3], w4 = wm[4], w5 = wm[5], w6 = wm[6],
                              w7 = wm[7], w8 = wm[8];
                const long L = (OH - 1) * sh * Wp + OW;
                const int16_t* restrict r0 = buf;
                const int16_t* restrict r1 = buf + dh * Wp;
                const int16_t* restrict r2 = buf + 2 * dh * Wp;
                int32_t flat[FLAT];
                for (long t = 0; t < L; ++t)
                    flat[t] = b + w0 * r0[t] + w1 * r0[t + 1] + w2 * r0[t + 2] + w3 * r1[t] + w4 * r1[t + 1] +
                              w5 * r1[t + 2] + w6 * r2[t] + w7 * r2[t + 1] + w8 * r2[t + 2];
                for (long oh = 0; oh < OH; ++oh)
                    for (long ow = 0; ow < OW; ++ow) run[nrun + oh * OW + ow] = flat[oh * sh * Wp + ow];
            } else
            for (long oh = 0; oh < OH; ++oh) {
                for (long t0 = 0; t0 < OW; t0 += TILE) {
                    const long nt = OW - t0 < TILE ? OW - t0 : TILE;
                    int32_t tile[TILE];
                    int32_t* restrict acc = use_run ? run + nrun + oh * OW : tile;
                    if (KH == 3 && KW == 3) { /* the common 3x3: all nine taps per output, unrolled */
                        const int32_t w0 = wm[0], w1 = wm[1], w2 = wm[2], w3 = wm[3], w4 = wm[4], w5 = wm[5],
                                      w6 = wm[6], w7 = wm[7], w8 = wm[8];
                        const int16_t* restrict r0 = buf + oh * sh * Wp + t0 * sw;
                        const int16_t* restrict r1 = r0 + dh * Wp;
                        const int16_t* restrict r2 = r1 + dh * Wp;
                        if (sw == 1 && dw == 1) {
                            for (long t = 0; t < nt; ++t)
                                acc[t] = b + w0 * r0[t] + w1 * r0[t + 1] + w2 * r0[t + 2] + w3 * r1[t] + w4 * r1[t + 1] +
                                         w5 * r1[t + 2] + w6 * r2[t] + w7 * r2[t + 1] + w8 * r2[t + 2];
                        } else if (sw == 2 && dw == 1) {
                            for (long t = 0; t < nt; ++t)
                                acc[t] = b + w0 * r0[2 * t] + w1 * r0[2 * t + 1] + w2 * r0[2 * t + 2] + w3 * r1[2 * t] +
                                         w4 * r1[2 * t + 1] + w5 * r1[2 * t + 2] + w6 * r2[2 * t] + w7 * r2[2 * t + 1] +
                                         w8 * r2[2 * t + 2];
                        } else {
                            for (long t = 0; t < nt; ++t) {
                                const long o = t * sw;
                                acc[t] = b + w0 * r0[o] + w1 * r0[o + dw] + w2 * r0[o + 2 * dw] + w3 * r1[o] +
                                         w4 * r1[o + dw] + w5 * r1[o + 2 * dw] + w6 * r2[o] + w7 * r2[o + dw] +
                                         w8 * r2[o + 2 * dw];
                            }
                        }
                    } else {
                        for (long t = 0; t < nt; ++t) acc[t] = b;
                        for (long kh = 0; kh < KH; ++kh) {
                            const int16_t* restrict br = buf + (oh * sh + kh * dh) * Wp + t0 * sw;
                            for (long kw = 0; kw < KW; ++kw) {
                                const int32_t wv = wm[kh * KW + kw];
                                const int16_t* restrict bk = br + kw * dw;
                                if (sw == 1) {
                                    for (long t = 0; t < nt; ++t) acc[t] += wv * bk[t];
                                } else {
                                    for (long t = 0; t < nt; ++t) acc[t] += wv * bk[t * sw];
                                }
                            }
                        }
                    }
                    if (!use_run)
                        @P@requant_tile_i32(acc, nt, mult[k], shift[k], zy, lo, hi, single, ym + oh * OW + t0);
                }
            }
            if (use_run) {
                for (long q = 0; q < P; ++q) {
                    mv[nrun + q] = mult[k];
                    sv[nrun + q] = shift[k];
                }
                nrun += P;
            } else if (nrun > 0) {
                @P@requant_run(run, nrun, mv, sv, zy, lo, hi, y + (n * M + mrun) * P);
                nrun = 0;
            }
        }
        if (nrun > 0) {
            @P@requant_run(run, nrun, mv, sv, zy, lo, hi, y + (n * M + mrun) * P);
            nrun = 0;
        }
    }
}
"""

_ENTRY = """\
/* Which convolution kernel runs (1: im2col + int16 GEMM, *pb pixels per block; 2: depthwise over padded
   planes; 0: the kernels without working memory) and how many int16 elements of working memory it needs. */
@AI@static inline long @P@conv_plan(const @P@conv_params* p, int* kind, long* pb)
{
    const long k = (long)(p->c / p->groups) * p->kh * p->kw, kp = (k + 15) / 16 * 16;
    const long hp = (long)(p->oh - 1) * p->sh + (long)(p->kh - 1) * p->dh + 1;
    const long wp = (long)(p->ow - 1) * p->sw + (long)(p->kw - 1) * p->dw + 1;
    *kind = 0;
    *pb = 0;
    if (!p->acc64 && k >= @GEMM_MIN_K@ && k <= @GEMM_MAX_K@ && p->c / p->groups > 1 && !(k < 16 && p->kh == 1 && p->kw == 1)) {
        *kind = 1;
        *pb = @GEMM_ROWS@ / kp < 1 ? 1 : (@GEMM_ROWS@ / kp > @PBMAX@ ? @PBMAX@ : @GEMM_ROWS@ / kp);
        return (*pb + 4) * kp; /* im2col rows + 4 widened weight rows */
    }
    if (!p->acc64 && p->c == p->groups && hp <= @DW_MAX_HW@ && wp <= @DW_MAX_HW@ && hp * wp <= @DW_MAX_HW@) {
        *kind = 2; /* one padded input plane, or 8 interleaved ones for tiny planes */
        return p->m == p->groups && p->oh <= 8 && p->ow <= 8 && p->kh * p->kw <= 25 && !p->single ? hp * wp * 8 : hp * wp;
    }
    return 0;
}
/* The convolutions without working memory (one im2col row on the stack for the generic one). */
static inline void @P@conv2d_other(const @P@conv_params* p, const int8_t* x, const int8_t* w, const int32_t* bias,
                                   const int32_t* mult, const int32_t* shift, int8_t* y)
{
    const long k = (long)(p->c / p->groups) * p->kh * p->kw;
    if (p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->ph == 0 && p->pw == 0 && p->oh == p->h &&
        p->ow == p->w && (long)p->h * p->w >= 16) { /* pointwise over enough pixels to vectorize */
        if (p->acc64) @P@conv1x1_i64(p, x, w, bias, mult, shift, y);
        else @P@conv1x1_i32(p, x, w, bias, mult, shift, y);
    } else if (k <= 32) { /* depthwise and other thin convolutions: row by row */
        if (p->acc64) @P@conv_rows_i64(p, x, w, bias, mult, shift, y);
        else @P@conv_rows_i32(p, x, w, bias, mult, shift, y);
    } else {
        int8_t patch[k]; /* one im2col row (C99 variable-length array) */
        if (p->acc64) @P@conv2d_i64(p, x, w, bias, mult, shift, y, patch);
        else @P@conv2d_i32(p, x, w, bias, mult, shift, y, patch);
    }
}
/* The convolution with caller-provided working memory (buf: conv_plan(p) int16 elements). */
@AI@static inline int @P@conv2d_run(const @P@conv_params* p, const int8_t* x, const int8_t* w, const int32_t* bias,
                                    const int32_t* mult, const int32_t* shift, int8_t* y, int16_t* buf)
{
    int kind;
    long pb;
    (void)@P@conv_plan(p, &kind, &pb);
    if (kind == 1) {
        @P@conv_gemm(p, x, w, bias, mult, shift, y, buf, pb);
    } else if (kind == 2) {
        @P@conv_dw(p, x, w, bias, mult, shift, y, buf);
    } else {
        @P@conv2d_other(p, x, w, bias, mult, shift, y);
    }
    return 0;
}
/* 2-D convolution (NCHW, groups, strides, dilations, pads), int8 in/out, int32 (or int64) accumulation;
   working memory on the stack (C99 variable-length array). */
@S@int @P@conv2d_s8(const @P@conv_params* p, const int8_t* x, const int8_t* w, const int32_t* bias,
                    const int32_t* mult, const int32_t* shift, int8_t* y)
{
    int kind;
    long pb;
    const long nb = @P@conv_plan(p, &kind, &pb);
    int16_t buf[nb > 0 ? nb : 1];
    return @P@conv2d_run(p, x, w, bias, mult, shift, y, buf);
}
/* Fully connected: y[r, j] = requant(bias[j] + sum_k x[r, k] * w[j, k]). */
@S@int @P@fully_connected_s8(const @P@fc_params* p, const int8_t* x, const int8_t* w, const int32_t* bias,
                             const int32_t* mult, const int32_t* shift, int8_t* y)
{
    const long N = p->n, K = p->k, R = p->rows;
    const int32_t zx = p->x_zp, zy = p->y_zp, lo = p->qmin, hi = p->qmax, pc = p->per_channel, single = p->single;
    const int acc64 = p->acc64;
    for (long r = 0; r < R; ++r) {
        const int8_t* xr = x + r * K;
        for (long j = 0; j < N; ++j) {
            const int8_t* wr = w + j * K;
            int32_t a32;
            if (acc64) {
                int64_t acc = bias[j];
                for (long k = 0; k < K; ++k) acc += ((int64_t)xr[k] - zx) * wr[k];
                a32 = @P@sat32(acc);
            } else {
                int32_t acc = bias[j];
                for (long k = 0; k < K; ++k) acc += (int32_t)xr[k] * wr[k];
                a32 = acc;
            }
            const long c = pc ? j : 0;
            y[r * N + j] = @P@requant1(a32, mult[c], shift[c], zy, lo, hi, single);
        }
    }
    return 0;
}
/* Elementwise Add/Sub of same-shaped tensors (TFLite PrepareAdd parameters). */
@S@int @P@add_s8(const @P@add_params* p, const int8_t* a, const int8_t* b, int8_t* y)
{
    if (!p->single && p->s1 <= 0 && p->s2 <= 0 && p->so <= 0 && p->s1 >= -31 && p->s2 >= -31 && p->so >= -31 &&
        p->left_shift >= 0 && p->left_shift <= 22 &&
        p->m1 >= 0 && p->m2 >= 0 && p->mo >= 0) {
        /* the common case without saturation (|(q + offset) << left_shift| < 2^31, multipliers >= 0): the
           same SRDHM + RDBPOT steps, branch-free and vectorizable */
        const int32_t ls = p->left_shift, o1 = p->in1_offset, o2 = p->in2_offset, oo = p->out_offset;
        const int32_t m1 = p->m1, m2 = p->m2, mo = p->mo, e1 = -p->s1, e2 = -p->s2, eo = -p->so;
        const int32_t k1 = (int32_t)(((uint32_t)1 << e1) - 1u), k2 = (int32_t)(((uint32_t)1 << e2) - 1u);
        const int32_t ko = (int32_t)(((uint32_t)1 << eo) - 1u), lo = p->qmin, hi = p->qmax, sub = p->sub;
        const long size = p->size;
        const int8_t* restrict ar = a;
        const int8_t* restrict br = b;
        int8_t* restrict yr = y;
        for (long i = 0; i < size; ++i) {
            const int32_t xa = (ar[i] + o1) * (1 << ls), xb = (br[i] + o2) * (1 << ls);
            const int64_t pa = (int64_t)xa * m1, pb = (int64_t)xb * m2;
            const int64_t na = pa + (pa >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
            const int64_t nb = pb + (pb >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
            const int32_t ta = (int32_t)((na + (na < 0 ? (((int64_t)1 << 31) - 1) : 0)) >> 31);
            const int32_t tb = (int32_t)((nb + (nb < 0 ? (((int64_t)1 << 31) - 1) : 0)) >> 31);
            const int32_t sa = (ta >> e1) + ((ta & k1) > ((k1 >> 1) + (ta < 0)) ? 1 : 0);
            const int32_t sb = (tb >> e2) + ((tb & k2) > ((k2 >> 1) + (tb < 0)) ? 1 : 0);
            const int32_t raw = sub ? sa - sb : sa + sb;
            const int64_t po = (int64_t)raw * mo;
            const int64_t no = po + (po >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
            const int32_t to = (int32_t)((no + (no < 0 ? (((int64_t)1 << 31) - 1) : 0)) >> 31);
            const int32_t v = (to >> eo) + ((to & ko) > ((ko >> 1) + (to < 0)) ? 1 : 0) + oo;
            yr[i] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
        }
        return 0;
    }
    for (long i = 0; i < p->size; ++i) y[i] = @P@add_elem(p, a[i], b[i]);
    return 0;
}
/* Elementwise Mul of same-shaped tensors. */
@S@int @P@mul_s8(const @P@mul_params* p, const int8_t* a, const int8_t* b, int8_t* y)
{
    for (long i = 0; i < p->size; ++i) y[i] = @P@mul_elem(p, a[i], b[i]);
    return 0;
}
/* Average pool over nc planes (global: one window over the plane); sum(q)/n rounded half away from zero. */
@S@int @P@avgpool_s8(const @P@pool_params* p, const int8_t* x, int8_t* y)
{
    const long H = p->h, W = p->w, OH = p->oh, OW = p->ow;
    for (long q = 0; q < p->nc; ++q) {
        const int8_t* xp = x + q * H * W;
        for (long oh = 0; oh < OH; ++oh) {
            for (long ow = 0; ow < OW; ++ow) {
                int32_t s = 0, cnt = 0;
                for (long kh = 0; kh < p->kh; ++kh) {
                    const long ih = oh * p->sh - p->ph + kh * p->dh;
                    for (long kw = 0; kw < p->kw; ++kw) {
                        const long iw = ow * p->sw - p->pw + kw * p->dw;
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                            s += xp[ih * W + iw];
                            ++cnt;
                        } else if (p->include_pad) {
                            s += p->x_zp;
                            ++cnt;
                        }
                    }
                }
                if (cnt < 1) cnt = 1;
                const int32_t mag = ((s < 0 ? -s : s) + cnt / 2) / cnt;
                y[(q * OH + oh) * OW + ow] = @P@clamp8(s < 0 ? -mag : mag, p->qmin, p->qmax);
            }
        }
    }
    return 0;
}
/* Requantization to new (scale, zero point), with the clamp of fused Relu/Clip. */
@S@int @P@requant_s8(const @P@requant_params* p, const int8_t* x, int8_t* y)
{
    for (long i = 0; i < p->size; ++i)
        y[i] = @P@clamp8(@P@mbqm(x[i] - p->x_zp, p->m, p->s, p->single) + p->y_zp, p->qmin, p->qmax);
    return 0;
}
"""

#: The HAL entry points (name -> parameter struct).
HAL_FUNCTIONS = {"conv2d_s8": "conv_params", "fully_connected_s8": "fc_params", "add_s8": "add_params",
                 "mul_s8": "mul_params", "avgpool_s8": "pool_params", "requant_s8": "requant_params"}

_PROTOS = """\
int npu_conv2d_s8(const npu_conv_params* p, const int8_t* x, const int8_t* w, const int32_t* bias,
                  const int32_t* mult, const int32_t* shift, int8_t* y);
int npu_fully_connected_s8(const npu_fc_params* p, const int8_t* x, const int8_t* w, const int32_t* bias,
                           const int32_t* mult, const int32_t* shift, int8_t* y);
int npu_add_s8(const npu_add_params* p, const int8_t* a, const int8_t* b, int8_t* y);
int npu_mul_s8(const npu_mul_params* p, const int8_t* a, const int8_t* b, int8_t* y);
int npu_avgpool_s8(const npu_pool_params* p, const int8_t* x, int8_t* y);
int npu_requant_s8(const npu_requant_params* p, const int8_t* x, int8_t* y);
"""


def _sub(text: str, prefix: str, storage: str = "static ") -> str:
    return text.replace("@P@", prefix).replace("@S@", storage)


#: Pixels per im2col block (the accumulator tile of the GEMM kernels), im2col elements per block of the
#: HAL reference (stack buffer), and the patch lengths it takes the GEMM path for.
PB_MAX = 64
GEMM_ROWS = 4096
GEMM_MIN_K = 9
GEMM_MAX_K = 2048
#: Largest padded input plane (elements) of the depthwise kernel in the HAL reference (stack buffer).
DW_MAX_HW = 8192


def _consts(text: str) -> str:
    return (text.replace("@PBMAX@", str(PB_MAX)).replace("@GEMM_ROWS@", str(GEMM_ROWS))
            .replace("@GEMM_MIN_K@", str(GEMM_MIN_K)).replace("@GEMM_MAX_K@", str(GEMM_MAX_K))
            .replace("@DW_MAX_HW@", str(DW_MAX_HW)))


#: The inline CPU kernels: the convolution dispatch and the int32 kernels are inlined into every layer
#: (GCC/Clang), so the layer's constant parameters become compile-time trip counts and dead paths vanish.
_SPECIALIZE = """\
#if defined(__GNUC__) || defined(__clang__)
#define EDGEC_Q_SPECIALIZE __attribute__((always_inline))
#else
#define EDGEC_Q_SPECIALIZE
#endif
"""


def _ai(text: str, inline: bool) -> str:
    return text.replace("@AI@", "EDGEC_Q_SPECIALIZE " if inline else "")


def _rows(prefix: str, storage: str) -> str:
    return "".join(_sub((_CONV_FAST + _CONV_ROWS).replace("@ACC@", a).replace("@T@", t).replace("@R@", storage)
                        .replace("@XOFF@", off), prefix)
                   for a, t, off in (("i32", "int32_t", "0"), ("i64", "int64_t", "-(int64_t)p->x_zp"))) + \
        _consts(_ai(_sub((_CONV_GEMM + _CONV_DW).replace("@R@", storage), prefix), prefix == "edgec_q_"))


def hal_header() -> str:
    """``<name>_npu.h``: the accelerator HAL (model-independent)."""
    return "\n".join([
        "/* Accelerator HAL of edgec int8 models. Generated by edgec; the same for every model. */",
        "/* Tensors are NCHW int8 (weights [M, C/G, kh, kw], fully connected [N, K]); bias, multipliers and */",
        "/* shifts int32 (one per output channel when per_channel, else one). Functions return 0 on success. */",
        "/* Bias: acc64 == 0: q_b - x_zp * sum(W[m]) (zero-point terms folded at compile time; padding reads */",
        "/* x_zp); acc64 == 1 (static int32 overflow bound exceeded): q_b, the kernel accumulates (x - x_zp) * w. */",
        "/* real = scale * (q - zero_point); requantization: edgec.quant.fixedpoint (single: CMSIS-NN rounding). */",
        "#ifndef EDGEC_NPU_HAL_H_", "#define EDGEC_NPU_HAL_H_", "", "#include <stdint.h>", "",
        "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
        _sub(_STRUCTS, "npu_"), _PROTOS, "#ifdef __cplusplus", "}", "#endif", "", "#endif /* EDGEC_NPU_HAL_H_ */", ""])


def hal_reference(name: str) -> str:
    """``<name>_npu_ref.c``: the portable reference implementation of the HAL (weak symbols)."""
    return "\n".join([
        "/* Portable reference implementation of the edgec accelerator HAL (bit-exact with the integer reference).",
        " * Generated by edgec. Replace it by linking hardware implementations: the functions are weak with",
        f" * GCC/Clang, and {name}.c includes this file only when EDGEC_NPU_EXTERNAL is not defined. */",
        f'#include "{name}_npu.h"', "", "#include <stdint.h>", "",
        "#if defined(__GNUC__) || defined(__clang__)", "#define EDGEC_NPU_WEAK __attribute__((weak))", "#else",
        "#define EDGEC_NPU_WEAK", "#endif", "",
        _sub(_COMMON, "npu_"), _rows("npu_", "static "), _consts(_ai(_sub(_ENTRY, "npu_", "EDGEC_NPU_WEAK "), False)), ""])


# --- helpers registered with the emitter ---------------------------------------------------------------
def _hal_include(name: str) -> str:
    return (f'/* accelerator HAL: NPU-placed layers call it; the reference implementation is compiled in */\n'
            f'#include "{name}_npu.h"\n#ifndef EDGEC_NPU_EXTERNAL\n#include "{name}_npu_ref.c"\n#endif\n')


K.HELPERS["npu_hal"] = _hal_include  # type: ignore[assignment]  # the emitter calls it with the model name
K.HELPERS["q_common"] = _sub(_STRUCTS, "edgec_q_") + _sub(_COMMON, "edgec_q_")
K.HELPERS["q_kernels"] = (_SPECIALIZE + _rows("edgec_q_", "static inline ") +
                          _consts(_ai(_sub(_ENTRY, "edgec_q_", "static inline "), True)))
K.HELPER_DEPS["q_kernels"] = ("q_common",)
_files: Dict[str, Callable[[str], Dict[str, str]]] = getattr(K, "HELPER_FILES", None) or {}
_files["npu_hal"] = lambda name: {f"{name}_npu.h": hal_header(), f"{name}_npu_ref.c": hal_reference(name)}
K.HELPER_FILES = _files  # type: ignore[attr-defined]  # extra files the emitter writes when a helper is used


# --- generators ------------------------------------------------------------------------------------------
def _check_int8(node: Node, values: Sequence[Any]) -> None:
    for v in values:
        if v is not None and v.dtype != DType.INT8:
            raise unsupported(node, f"'{v.name}' must be int8, not {v.dtype.name if v.dtype else 'untyped'}")


def _check_int32(node: Node, values: Sequence[Any]) -> None:
    for v in values:
        if v is not None and v.dtype != DType.INT32:
            raise unsupported(node, f"'{v.name}' must be int32")


def _place(node: Node, k: KernelContext) -> str:
    fn = getattr(k, "placement", None)
    where = fn(node) if fn is not None else "cpu"  # no target description: no accelerator, inline kernels
    if where not in ("npu", "cpu"):
        raise UnsupportedModelError(f"placement of node '{node.name}' must be 'npu' or 'cpu', not {where!r}")
    return where


def _init(fields: Dict[str, int]) -> str:
    return "{" + ", ".join(f".{k} = {int(v)}" for k, v in fields.items()) + "}"


def _code(node: Node, operands: List[Any], struct: str, fields: Dict[str, int], fn: str, args: str, where: str,
          macs: int = 0, why: str = "") -> NodeCode:
    prefix = "npu_" if where == "npu" else "edgec_q_"
    body = (f"    static const {prefix}{struct} p = {_init(fields)};\n"
            f"    (void){prefix}{fn}(&p, {args});\n")
    code = NodeCode(operands, body, ["npu_hal"] if where == "npu" else ["q_kernels"], macs=macs, typed=True)
    rep = {"placement": where, "source_op": node.attr("source_op", node.op_type),
           "fused": list(node.attr("fused", []) or [])}
    if why:
        rep["placement_note"] = why
    code.report = rep  # type: ignore[attr-defined]  # merged into the layer's report entry
    return code


def _rq(node: Node) -> Dict[str, int]:
    rounding = node.attr("rounding", "double")
    rounding = rounding.decode() if isinstance(rounding, bytes) else rounding
    if rounding not in ("double", "single"):
        raise unsupported(node, f"rounding '{rounding}'")
    return {"qmin": int(node.attr("qmin", -128)), "qmax": int(node.attr("qmax", 127)), "single": int(rounding == "single")}


def gen_qconv(node: Node, k: KernelContext) -> NodeCode:
    x, w, y = k.dims(node.input(0)), k.dims(node.input(1)), k.dims(node.output(0))
    _check_int8(node, [node.input(0), node.input(1), node.output(0)])
    _check_int32(node, node.inputs[2:])
    if len(x) not in (3, 4):
        raise unsupported(node, f"only 1-D and 2-D convolution (input rank {len(x)})")
    x, y, ks, st, dl, pb = K.window_2d(node, x, y, w[2:])
    fields = {"n": x[0], "c": x[1], "h": x[2], "w": x[3], "m": y[1], "oh": y[2], "ow": y[3], "kh": ks[0], "kw": ks[1],
              "sh": st[0], "sw": st[1], "dh": dl[0], "dw": dl[1], "ph": pb[0], "pw": pb[1],
              "groups": int(node.attr("group", 1)), "x_zp": int(node.attr("x_zero_point", 0)),
              "y_zp": int(node.attr("y_zero_point", 0)), **_rq(node),
              "per_channel": int(k.dims(node.input(3)) != (1,) and int(np.prod(k.dims(node.input(3)))) > 1),
              "acc64": int(node.attr("acc", "int32") in ("int64", b"int64"))}
    where = _place(node, k)
    code = _code(node, list(node.inputs), "conv_params", fields, "conv2d_s8", "x0, x1, x2, x3, x4, y0", where,
                 macs=int(np.prod(y)) * int(np.prod(w[1:])))
    from .kernels_int8_fast import fast_conv  # imported here: its helper comes after q_common

    fast = fast_conv(node, k, fields) if where == "cpu" and getattr(k, "int8_kernels", "fast") == "fast" else None
    if fast is not None:  # register-blocked GEMM / vectorized depthwise (kernels_int8_fast)
        fast.macs, fast.report = code.macs, code.report  # type: ignore[attr-defined]
        return fast
    if where == "cpu":  # the kernel inlined with this layer's constants; working memory sized at compile time
        code.body = (f"    static const edgec_q_conv_params p = {_init(fields)};\n"
                     "    int kind;\n    long pb;\n"
                     "    const long nb = edgec_q_conv_plan(&p, &kind, &pb);\n"
                     "    int16_t buf[nb > 0 ? nb : 1];\n"
                     "    (void)edgec_q_conv2d_run(&p, x0, x1, x2, x3, x4, y0, buf);\n")
    return code


def gen_qgemm(node: Node, k: KernelContext) -> NodeCode:
    x, w = k.dims(node.input(0)), k.dims(node.input(1))
    _check_int8(node, [node.input(0), node.input(1), node.output(0)])
    _check_int32(node, node.inputs[2:])
    n, kk = w
    if x[-1] != kk:
        raise unsupported(node, f"input last dim {x[-1]} != K {kk}")
    rows = int(np.prod(x[:-1])) if len(x) > 1 else 1
    fields = {"rows": rows, "n": n, "k": kk, "x_zp": int(node.attr("x_zero_point", 0)),
              "y_zp": int(node.attr("y_zero_point", 0)), **_rq(node),
              "per_channel": int(int(np.prod(k.dims(node.input(3)))) > 1),
              "acc64": int(node.attr("acc", "int32") in ("int64", b"int64"))}
    return _code(node, list(node.inputs), "fc_params", fields, "fully_connected_s8", "x0, x1, x2, x3, x4, y0",
                 _place(node, k), macs=rows * n * kk)


def _binary(node: Node, k: KernelContext, struct: str, fields: Dict[str, int], fn: str, elem: str) -> NodeCode:
    a, b, y = node.input(0), node.input(1), node.output(0)
    _check_int8(node, [a, b, y])
    yd = k.dims(y)
    where = _place(node, k)
    ops = [a] if a is b else [a, b]
    same = k.dims(a) == yd and k.dims(b) == yd
    if same:
        fields = {"size": int(np.prod(yd)), **fields}
        code = _code(node, ops, struct, fields, fn, "x0, x0, y0" if a is b else "x0, x1, y0", where)
        if where == "cpu" and fn == "add_s8":
            from .kernels_int8_fast import fast_add  # imported here: its helper comes after q_kernels

            code = fast_add(code)
        return code
    why = "broadcasting runs on the CPU" if where == "npu" else ""
    fields = {"size": int(np.prod(yd)), **fields}
    nest = [(0, K._strides(yd)), (0, K._bcast_strides(k.dims(a), yd))]
    if a is not b:
        nest.append((0, K._bcast_strides(k.dims(b), yd)))
    body = (f"    static const edgec_q_{struct} p = {_init(fields)};\n" +
            loop_nest(yd, nest, lambda o: f"y0[{o[0]}] = edgec_q_{elem}(&p, x0[{o[1]}], "
                                          f"{'x0' if a is b else 'x1'}[{o[-1]}]);"))
    code = NodeCode(ops, body, ["q_common"], typed=True)
    code.report = {"placement": "cpu", "source_op": node.attr("source_op", node.op_type),  # type: ignore[attr-defined]
                   "fused": list(node.attr("fused", []) or []), **({"placement_note": why} if why else {})}
    return code


def gen_qadd(node: Node, k: KernelContext) -> NodeCode:
    f = {"in1_offset": node.attr("input1_offset"), "in2_offset": node.attr("input2_offset"),
         "out_offset": node.attr("output_offset"), "left_shift": node.attr("left_shift", 20),
         "m1": node.attr("input1_multiplier"), "s1": node.attr("input1_shift"), "m2": node.attr("input2_multiplier"),
         "s2": node.attr("input2_shift"), "mo": node.attr("output_multiplier"), "so": node.attr("output_shift"),
         "sub": int(node.attr("sub", 0))}
    r = _rq(node)
    fields = {**f, "qmin": r["qmin"], "qmax": r["qmax"], "single": r["single"]}
    fields = {k2: fields[k2] for k2 in ("in1_offset", "in2_offset", "out_offset", "left_shift", "m1", "s1", "m2", "s2",
                                         "mo", "so", "qmin", "qmax", "sub", "single")}
    return _binary(node, k, "add_params", fields, "add_s8", "add_elem")


def gen_qmul(node: Node, k: KernelContext) -> NodeCode:
    r = _rq(node)
    fields = {"a_zp": node.attr("a_zero_point", 0), "b_zp": node.attr("b_zero_point", 0), "m": node.attr("multiplier"),
              "s": node.attr("shift"), "y_zp": node.attr("y_zero_point", 0), "qmin": r["qmin"], "qmax": r["qmax"],
              "single": r["single"]}
    return _binary(node, k, "mul_params", fields, "mul_s8", "mul_elem")


def gen_qavgpool(node: Node, k: KernelContext) -> NodeCode:
    x, y = k.dims(node.input(0)), k.dims(node.output(0))
    _check_int8(node, [node.input(0), node.output(0)])
    if len(x) not in (3, 4):
        raise unsupported(node, f"only 1-D and 2-D pooling (input rank {len(x)})")
    if len(x) == 3:
        x, y = (x[0], x[1], 1, x[2]), (y[0], y[1], 1, y[2])
    if int(node.attr("global", 0)):
        ks, st, dl, pb, inc = [x[2], x[3]], [1, 1], [1, 1], [0, 0], 0
    else:
        _, _, ks, st, dl, pb = K.window_2d(node, k.dims(node.input(0)), k.dims(node.output(0)),
                                           node.attr("kernel_shape"))
        inc = int(node.attr("count_include_pad", 0))
    r = _rq(node)
    fields = {"nc": x[0] * x[1], "h": x[2], "w": x[3], "oh": y[2], "ow": y[3], "kh": ks[0], "kw": ks[1], "sh": st[0],
              "sw": st[1], "dh": dl[0], "dw": dl[1], "ph": pb[0], "pw": pb[1], "include_pad": inc,
              "x_zp": int(node.attr("x_zero_point", 0)), "qmin": r["qmin"], "qmax": r["qmax"]}
    return _code(node, [node.input(0)], "pool_params", fields, "avgpool_s8", "x0, y0", _place(node, k))


def gen_qrequant(node: Node, k: KernelContext) -> NodeCode:
    _check_int8(node, [node.input(0), node.output(0)])
    r = _rq(node)
    fields = {"size": int(np.prod(k.dims(node.output(0)))), "x_zp": int(node.attr("x_zero_point", 0)),
              "y_zp": int(node.attr("y_zero_point", 0)), "m": int(node.attr("multiplier")),
              "s": int(node.attr("shift")), **r}
    return _code(node, [node.input(0)], "requant_params", fields, "requant_s8", "x0, y0", _place(node, k))


# --- float <-> int8 boundaries (ONNX semantics: round half to even, saturate) ---------------------------
def _qparams(node: Node, k: KernelContext) -> tuple:
    s = k.need_const(node, 1, "scale")
    z = k.need_const(node, 2, "zero point") if node.input(2) is not None else np.zeros(np.shape(s), np.int64)
    return np.asarray(s, np.float32).reshape(-1), np.asarray(z).astype(np.int64).reshape(-1)


def gen_quantize(node: Node, k: KernelContext) -> NodeCode:
    x, y = node.input(0), node.output(0)
    if x.dtype != DType.FLOAT or y.dtype not in (DType.INT8, DType.UINT8):
        raise unsupported(node, "QuantizeLinear float32 -> int8/uint8 only")
    if int(node.attr("block_size", 0) or 0):
        raise unsupported(node, "blocked QuantizeLinear")
    s, z = _qparams(node, k)
    if s.size != 1:
        raise unsupported(node, "per-axis QuantizeLinear at the float boundary")
    lo, hi = (-128, 127) if y.dtype == DType.INT8 else (0, 255)
    ct = "int8_t" if y.dtype == DType.INT8 else "uint8_t"
    n = int(np.prod(k.dims(y)))
    if y.dtype == DType.INT8 and getattr(k, "int8_kernels", "fast") == "fast":  # vectorized (same integers)
        from .kernels_int8_fast import fast_quantize  # imported here: its helper comes after q_kernels

        return fast_quantize(x, n, float(s[0]), int(z[0]))
    body = (f"    for (long i = 0; i < {n}; ++i) {{\n"
            f"        const float r = rintf(x0[i] / {flit(s[0])}) + {flit(float(z[0]))};\n"
            f"        y0[i] = ({ct})(r >= {flit(hi)} ? {hi} : (r > {flit(lo)} ? r : {lo}));\n    }}\n")
    code = NodeCode([x], body, typed=True, inplace=False)
    code.report = {"placement": "cpu", "source_op": "QuantizeLinear", "fused": []}  # type: ignore[attr-defined]
    return code


def gen_dequantize(node: Node, k: KernelContext) -> NodeCode:
    x, y = node.input(0), node.output(0)
    if y.dtype != DType.FLOAT or x.dtype not in (DType.INT8, DType.UINT8, DType.INT32):
        raise unsupported(node, "DequantizeLinear int8/uint8/int32 -> float32 only")
    if int(node.attr("block_size", 0) or 0):
        raise unsupported(node, "blocked DequantizeLinear")
    s, z = _qparams(node, k)
    xd = k.dims(x)
    if s.size == 1:
        n = int(np.prod(xd))
        body = f"    for (long i = 0; i < {n}; ++i) y0[i] = ((float)x0[i] - {flit(float(z[0]))}) * {flit(s[0])};\n"
    else:
        ax = int(node.attr("axis", 1)) % len(xd)
        outer, c, inner = int(np.prod(xd[:ax])), xd[ax], int(np.prod(xd[ax + 1:]))
        body = (f"    static const float sc[{c}] = {{{', '.join(flit(v) for v in s)}}};\n"
                f"    static const float zp[{c}] = {{{', '.join(flit(float(v)) for v in np.broadcast_to(z, s.shape))}}};\n"
                f"    for (long o = 0; o < {outer}; ++o)\n        for (long c = 0; c < {c}; ++c)\n"
                f"            for (long i = 0; i < {inner}; ++i) {{\n"
                f"                const long j = (o * {c} + c) * {inner} + i;\n"
                f"                y0[j] = ((float)x0[j] - zp[c]) * sc[c];\n            }}\n")
    code = NodeCode([x], body, typed=True)
    code.report = {"placement": "cpu", "source_op": "DequantizeLinear", "fused": []}  # type: ignore[attr-defined]
    return code


# --- int8 data movement (typed versions when the generic generator is float-only) ------------------------
def _movement_s8(node: Node, k: KernelContext, code: Optional[NodeCode]) -> NodeCode:
    op = node.op_type
    if code is None:
        raise unsupported(node, "no int8 kernel")
    if op == "Gather":
        code.body = code.body.replace("const float* restrict s", "const int8_t* restrict s") \
            .replace("float* restrict t", "int8_t* restrict t")
    for v in [*code.operands, *node.outputs]:
        if v is None or (op == "Gather" and v is node.input(1)):
            continue
        if v.dtype != DType.INT8:
            raise unsupported(node, f"'{v.name}' is {v.dtype.name if v.dtype else 'untyped'} (int8 data movement)")
    code.typed = True
    return code


def _typed(orig: Optional[Callable[[Node, KernelContext], NodeCode]]) -> Callable[[Node, KernelContext], NodeCode]:
    def gen(node: Node, k: KernelContext) -> NodeCode:
        x = node.input(0)
        if x is None or x.dtype != DType.INT8:
            if orig is None:
                raise unsupported(node, "no kernel")
            return orig(node, k)
        code = None
        if orig is not None:
            try:
                code = orig(node, k)
            except UnsupportedModelError:
                code = None
            if code is not None and code.typed:
                return code
        return _movement_s8(node, k, code)

    gen.__name__ = f"gen_typed_{getattr(orig, '__name__', 'none')}"
    return gen


for _op in ("Transpose", "Concat", "Slice", "Split", "Gather", "Expand"):  # pools: kernels_pool (every type)
    K.GENERATORS[("", _op)] = _typed(K.GENERATORS.get(("", _op)))

K.GENERATORS[(EDGEC, "QConv")] = gen_qconv
K.GENERATORS[(EDGEC, "QGemm")] = gen_qgemm
K.GENERATORS[(EDGEC, "QAdd")] = gen_qadd
K.GENERATORS[(EDGEC, "QMul")] = gen_qmul
K.GENERATORS[(EDGEC, "QAvgPool")] = gen_qavgpool
K.GENERATORS[(EDGEC, "QRequant")] = gen_qrequant
K.GENERATORS[("", "QuantizeLinear")] = gen_quantize
K.GENERATORS[("", "DequantizeLinear")] = gen_dequantize
