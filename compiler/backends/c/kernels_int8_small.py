"""Fast int8 convolutions of small planes with output channels on the vector lanes.

The pixel-panel GEMM and the plane-wise depthwise kernel of :mod:`.kernels_int8_fast` put 16 output pixels
on the lanes; on the 12x12 to 3x3 planes at the end of a MobileNet most of a vector is padding and the
packing costs as much as the arithmetic. Here the lanes hold 16 output channels:

* ``edgec_q8_conv_cv`` (one group, 1x1 windows): the weights are packed at compile time as
  ``[ceil(M/16)][K/2][16][2]`` int8 (pairs of adjacent k, widened to int16 as they are loaded), the input
  as one ``(x(k), x(k+1))`` int16 pair per k pair and pixel (``[K/2][P4]``, P rounded up to 4), and a
  16 x 4 tile (channels x pixels) of int32 accumulators, started from the bias, takes one ``vpmaddwd`` per
  8 channels, pixel and k pair; the last 1-2 pixels run one at a time.
* ``edgec_q8_dw_cv`` (depthwise, any window up to 25 taps): each block of 16 planes is transposed once into
  ``[Hp][Wb][16]`` int16 with zero-point borders and paired along the rows (each pixel next to the one a
  dilation to its right, in ``vpunpckl/hwd`` lane order), so that two taps of a window row are one load and
  one ``vpmaddwd`` with the pair's weights (packed at compile time in the same order); a tile of 4 pixels
  shares each weight pair.

Both requantize the channel vectors with per-lane multipliers and shifts (``vpsravd``) and transpose 4
pixels x 16 channels so that every channel stores its 4 pixels at once. A block whose requantization is
not a branch-free case (shifts outside [-31, 0], double rounding with M0 <= 0) is requantized element by
element with ``edgec_q_requant1``; the portable C99 twins (``-DEDGEC_Q8_PORTABLE``) compute the same integers, so all
are bit-identical with :func:`edgec.quant.reference.run_integer`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from ...ir import ArrayTensor, Node, Shape, TensorType, Value
from ...ir.dtypes import DType
from . import kernels as K
from .kernels_int8_fast import requant_flags  # and registers q8_fast (EDGEC_Q8_AVX2, EDGEC_Q8_FN) before q8_small
from .kernels import KernelContext

__all__ = ["MC", "PT", "dw_lanes_pays", "pack_dw_lanes", "pack_weights_lanes", "small_conv", "small_depthwise",
           "small_pays"]

#: Register tile: output channels (two vectors of 8) x output pixels.
MC, PT = 16, 4
#: Largest output plane (pixels) this kernel takes; larger planes fill the pixel panels of the GEMM.
MAX_PIXELS = 48
#: Fewest output channels: below, the padding of the 16-channel blocks and the packing outweigh the panels' waste.
MIN_CHANNELS = 48

_HELPER = """\
/* --- int8 convolution of small planes, output channels on the lanes (portable C99; AVX2 when available) --- */
#define EDGEC_Q8_MC 16
#define EDGEC_Q8_PT 4
#define EDGEC_Q8_CV_MAXP @MAXP@ /* the largest plane (pixels) edgec_q8_conv_cv takes */

/* Packs the im2col matrix of x (one image) as k pairs: xp[kk][j] = (X(2kk, j), X(2kk + 1, j)) for j < P (the
   input zero point where a window leaves the input, 0 for the odd k), pixels P..P4-1 zero; xq: working memory
   of a full convolution. */
static inline void edgec_q8_cv_pack(const edgec_q_conv_params* p, const int8_t* restrict x, long P4, long K2,
                                    int16_t* restrict xp, int8_t* restrict xq)
{
    const long C = p->c, H = p->h, W = p->w, OW = p->ow, KH = p->kh, KW = p->kw, K0 = C * KH * KW, P = p->oh * OW;
    if (KH == 1 && KW == 1 && p->sh == 1 && p->sw == 1 && p->ph == 0 && p->pw == 0 && p->oh == H && OW == W) {
        for (long kk = 0; kk < K2; ++kk) { /* pointwise: two input planes interleaved */
            const int8_t* restrict x0 = x + 2 * kk * P;
            const int8_t* restrict x1 = x0 + P;
            int16_t* restrict d = xp + 2 * P4 * kk;
            long j = 0;
            if (2 * kk + 1 < K0) {
#if EDGEC_Q8_AVX2
                for (; j + 16 <= P; j += 16) {
                    const __m128i a = _mm_loadu_si128((const __m128i*)(const void*)(x0 + j));
                    const __m128i b = _mm_loadu_si128((const __m128i*)(const void*)(x1 + j));
                    _mm256_storeu_si256((__m256i*)(void*)(d + 2 * j), _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b)));
                    _mm256_storeu_si256((__m256i*)(void*)(d + 2 * j + 16),
                                        _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b)));
                }
#endif
                for (; j < P; ++j) {
                    d[2 * j] = x0[j];
                    d[2 * j + 1] = x1[j];
                }
            } else {
                for (; j < P; ++j) {
                    d[2 * j] = x0[j];
                    d[2 * j + 1] = 0;
                }
            }
            for (j = 2 * P; j < 2 * P4; ++j) d[j] = 0;
        }
        return;
    }
    /* otherwise the image is copied once into planes bordered with the input zero point (xq: C x HR x WR), so
       every tap of every pixel is one load at a fixed offset */
    const long HR = (p->oh - 1) * p->sh + (KH - 1) * p->dh + 1, WR = (OW - 1) * p->sw + (KW - 1) * p->dw + 1;
    const long lw = p->pw < WR ? p->pw : WR, cw = W < WR - lw ? W : WR - lw; /* image columns at [lw, lw + cw) */
    memset(xq, p->x_zp, (size_t)(C * HR * WR));
    for (long c = 0; c < C; ++c)
        for (long ih = 0; ih < H && ih + p->ph < HR; ++ih)
            edgec_q8_copy_row(xq + (c * HR + ih + p->ph) * WR + lw, x + (c * H + ih) * W, cw);
    long off[EDGEC_Q8_CV_MAXP]; /* window origins of the pixels in xq */
    for (long j = 0, oh = 0, ow = 0; j < P; ++j) {
        off[j] = oh * p->sh * WR + ow * p->sw;
        if (++ow == OW) {
            ow = 0;
            ++oh;
        }
    }
    long c = 0, kh = 0, kw = 0;
    for (long k = 0; k < 2 * K2; ++k) {
        int16_t* restrict d = xp + 2 * P4 * (k / 2) + (k & 1);
        if (k < K0) {
            const int8_t* restrict xk = xq + (c * HR + kh * p->dh) * WR + kw * p->dw;
            for (long j = 0; j < P; ++j) d[2 * j] = xk[off[j]];
            if (++kw == KW) {
                kw = 0;
                if (++kh == KH) {
                    kh = 0;
                    ++c;
                }
            }
        } else {
            for (long j = 0; j < P; ++j) d[2 * j] = 0;
        }
        for (long j = P; j < P4; ++j) d[2 * j] = 0;
    }
}

/* The requantization parameters of the block of 16 channels [c0, c0 + nc) (the first repeated past nc): bias b,
   M0 mv and e = -shift ev; *fast: double rounding on vectors, *sg: single rounding on vectors. */
static inline void edgec_q8_block_params(long c0, long nc, const int32_t* restrict bias, const int32_t* restrict mult,
                                         const int32_t* restrict shift, int32_t pc, int32_t single, int32_t* b,
                                         int32_t* mv, int32_t* ev, int* fast, int* sg)
{
    *fast = !single;
    *sg = single;
    for (long r = 0; r < 16; ++r) {
        const long c = c0 + (r < nc ? r : 0), k = pc ? c : 0;
        b[r] = bias[c];
        mv[r] = mult[k];
        ev[r] = -shift[k];
        *fast = *fast && mult[k] > 0 && shift[k] <= 0 && shift[k] >= -31;
        *sg = *sg && shift[k] <= 0 && shift[k] >= -31;
    }
}

#if EDGEC_Q8_AVX2
/* The 16 int8 outputs of two vectors of edgec_q8_rqv8 (q: the output stage), in order. */
static inline __m128i edgec_q8_pack16(__m256i a, __m256i b, const edgec_q8_rqv* q, int kind)
{
    return _mm_shuffle_epi32(edgec_q8_out16(a, b, q, kind), 0xD8);
}

/* Stores a tile of 4 pixels x 16 channels (q[j]: pixel j's 16 int8 channels, in order) as the first nj <= 4
   pixels of the rows y + r * P of channels r < nc. */
static inline void edgec_q8_store_cols(const __m128i* q, int8_t* restrict y, long P, long nc, long nj)
{
    const __m128i a01 = _mm_unpacklo_epi8(q[0], q[1]), b01 = _mm_unpackhi_epi8(q[0], q[1]);
    const __m128i a23 = _mm_unpacklo_epi8(q[2], q[3]), b23 = _mm_unpackhi_epi8(q[2], q[3]);
    const __m128i c0 = _mm_unpacklo_epi16(a01, a23), c1 = _mm_unpackhi_epi16(a01, a23); /* channels 0-3, 4-7 */
    const __m128i c2 = _mm_unpacklo_epi16(b01, b23), c3 = _mm_unpackhi_epi16(b01, b23); /* 8-11, 12-15 */
    if (nj == 4 && nc == 16) { /* the 4 pixels of each channel straight from the registers */
#define EDGEC_Q8_COL(v, i, r)                                                                                      \
    do {                                                                                                           \
        const int32_t t_ = _mm_extract_epi32(v, i);                                                                \
        memcpy(y + (r) * P, &t_, 4);                                                                               \
    } while (0)
        EDGEC_Q8_COL(c0, 0, 0); EDGEC_Q8_COL(c0, 1, 1); EDGEC_Q8_COL(c0, 2, 2); EDGEC_Q8_COL(c0, 3, 3);
        EDGEC_Q8_COL(c1, 0, 4); EDGEC_Q8_COL(c1, 1, 5); EDGEC_Q8_COL(c1, 2, 6); EDGEC_Q8_COL(c1, 3, 7);
        EDGEC_Q8_COL(c2, 0, 8); EDGEC_Q8_COL(c2, 1, 9); EDGEC_Q8_COL(c2, 2, 10); EDGEC_Q8_COL(c2, 3, 11);
        EDGEC_Q8_COL(c3, 0, 12); EDGEC_Q8_COL(c3, 1, 13); EDGEC_Q8_COL(c3, 2, 14); EDGEC_Q8_COL(c3, 3, 15);
#undef EDGEC_Q8_COL
        return;
    }
    int8_t cols[16][4]; /* cols[r]: the 4 pixels of channel r */
    _mm_storeu_si128((__m128i*)(void*)cols, c0);
    _mm_storeu_si128((__m128i*)(void*)cols[4], c1);
    _mm_storeu_si128((__m128i*)(void*)cols[8], c2);
    _mm_storeu_si128((__m128i*)(void*)cols[12], c3);
    for (long r = 0; r < nc; ++r)
        for (long j = 0; j < nj && j < 4; ++j) y[r * P + j] = cols[r][j];
}
#endif

/* Convolution (one group) of a small output plane: y[m][j] = requant(bias[m] + sum_k W[m][k] X[k][j]) with the
   weights wp packed as [ceil(M/16)][K2][16][2] int16 and the pixel-major pairs of X in the scratch xp. */
EDGEC_Q8_FN void edgec_q8_conv_cv(const edgec_q_conv_params* p, const int8_t* restrict x, const int8_t* restrict wp,
                                 const int32_t* restrict bias, const int32_t* restrict mult,
                                 const int32_t* restrict shift, int8_t* restrict y, int16_t* restrict xp, int rqflags)
{
    const long C = p->c, M = p->m, P = (long)p->oh * p->ow, K2 = ((long)C * p->kh * p->kw + 1) / 2;
    const long P4 = (P + EDGEC_Q8_PT - 1) / EDGEC_Q8_PT * EDGEC_Q8_PT;
    const int tiefree = rqflags & 1, kind = rqflags >> 1; /* the AVX2 path's */
    (void)tiefree;
    (void)kind;
    const int32_t zy = p->y_zp, lo = p->qmin, hi = p->qmax, pc = p->per_channel, single = p->single;
    for (long n = 0; n < p->n; ++n) {
        edgec_q8_cv_pack(p, x + n * C * p->h * p->w, P4, K2, xp, (int8_t*)(void*)(xp + 2 * K2 * P4));
        int8_t* restrict yn = y + n * M * P;
        for (long m0 = 0; m0 < M; m0 += EDGEC_Q8_MC) {
            const long mc = M - m0 < EDGEC_Q8_MC ? M - m0 : EDGEC_Q8_MC;
            const int8_t* restrict ap = wp + 2 * EDGEC_Q8_MC * K2 * (m0 / EDGEC_Q8_MC);
            int32_t b[EDGEC_Q8_MC], mv[EDGEC_Q8_MC], ev[EDGEC_Q8_MC];
            int fast = 1, sg = 0;
#if EDGEC_Q8_AVX2
            edgec_q8_rqv rv[2]; /* channels 0-7 and 8-15 */
            __m256i b0, b1;
            if (kind && pc && mc == EDGEC_Q8_MC) { /* a whole block with per-channel parameters: vector loads */
#define EDGEC_Q8_L(a, o) _mm256_loadu_si256((const __m256i*)(const void*)((a) + m0 + (o)))
                for (int h = 0; h < 2; ++h) rv[h] = edgec_q8_rqv_vec(EDGEC_Q8_L(mult, 8 * h), EDGEC_Q8_L(shift, 8 * h), kind,
                                                                    zy, lo, hi);
                b0 = EDGEC_Q8_L(bias, 0);
                b1 = EDGEC_Q8_L(bias, 8);
#undef EDGEC_Q8_L
            } else {
                edgec_q8_block_params(m0, mc, bias, mult, shift, pc, single, b, mv, ev, &fast, &sg);
                int tf = fast && tiefree;
                for (long r = 0; r < EDGEC_Q8_MC; ++r) tf = tf && ev[r] >= 1;
                if (kind || fast || sg)
                    for (int h = 0; h < 2; ++h) rv[h] = edgec_q8_rqv_make(mv + 8 * h, ev + 8 * h, sg ? 2 : tf, zy, lo, hi);
                b0 = _mm256_loadu_si256((const __m256i*)(const void*)b);
                b1 = _mm256_loadu_si256((const __m256i*)(const void*)(b + 8));
            }
#define EDGEC_Q8_RQ(a, h) edgec_q8_rqv8(a, &rv[h], kind)
            long j0 = 0;
            for (; P - j0 >= 3; j0 += EDGEC_Q8_PT) { /* tiles of 4 pixels (the last may hold 3) */
                const int16_t* restrict x0 = xp + 2 * j0;
                __m256i c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1, c30 = b0, c31 = b1;
#define EDGEC_Q8_W(off) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(const void*)(ap + (off))))
                EDGEC_Q8_UNROLL2
                for (long k = 0; k < K2; ++k) {
                    const __m256i w0 = EDGEC_Q8_W(32 * k), w1 = EDGEC_Q8_W(32 * k + 16);
#define EDGEC_Q8_BX(j) _mm256_broadcastd_epi32(_mm_loadu_si32((const void*)(x0 + 2 * P4 * k + 2 * (j))))
                    __m256i v = EDGEC_Q8_BX(0);
                    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(w0, v));
                    c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(w1, v));
                    v = EDGEC_Q8_BX(1);
                    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(w0, v));
                    c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(w1, v));
                    v = EDGEC_Q8_BX(2);
                    c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(w0, v));
                    c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(w1, v));
                    v = EDGEC_Q8_BX(3);
                    c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(w0, v));
                    c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(w1, v));
#undef EDGEC_Q8_BX
                }
                const long nj = P - j0 < EDGEC_Q8_PT ? P - j0 : EDGEC_Q8_PT;
                if (!kind && !fast && !sg) {
                    int32_t t[EDGEC_Q8_PT][EDGEC_Q8_MC];
                    const __m256i acc[EDGEC_Q8_PT][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
                    for (int j = 0; j < EDGEC_Q8_PT; ++j)
                        for (int h = 0; h < 2; ++h)
                            _mm256_storeu_si256((__m256i*)(void*)(t[j] + 8 * h), acc[j][h]);
                    for (long r = 0; r < mc && r < EDGEC_Q8_MC; ++r)
                        for (long j = 0; j < nj && j < EDGEC_Q8_PT; ++j)
                            yn[(m0 + r) * P + j0 + j] = edgec_q_requant1(t[j][r], mv[r], -ev[r], zy, lo, hi, single);
                    continue;
                }
                /* one vector of 16 channels per pixel, then transposed: 4 pixels of each channel in one int32 */
                const __m128i q0 = edgec_q8_pack16(EDGEC_Q8_RQ(c00, 0), EDGEC_Q8_RQ(c01, 1), rv, kind);
                const __m128i q1 = edgec_q8_pack16(EDGEC_Q8_RQ(c10, 0), EDGEC_Q8_RQ(c11, 1), rv, kind);
                const __m128i q2 = edgec_q8_pack16(EDGEC_Q8_RQ(c20, 0), EDGEC_Q8_RQ(c21, 1), rv, kind);
                const __m128i q3 = edgec_q8_pack16(EDGEC_Q8_RQ(c30, 0), EDGEC_Q8_RQ(c31, 1), rv, kind);
                const __m128i qs[4] = {q0, q1, q2, q3};
                edgec_q8_store_cols(qs, yn + m0 * P + j0, P, mc, nj);
            }
            /* the last 1 or 2 pixels one at a time (a tile would be mostly padding); the explicit bound keeps GCC's
               loop analysis of the constant-propagated clones from assuming more */
            for (const long jt = j0 + 2 < P ? j0 + 2 : P; j0 < jt; ++j0) {
                const int16_t* restrict x0 = xp + 2 * j0;
                __m256i a0 = b0, a1 = b1, e0 = _mm256_setzero_si256(), e1 = e0; /* even and odd k: 4 chains */
#define EDGEC_Q8_X(kk) _mm256_broadcastd_epi32(_mm_loadu_si32((const void*)(x0 + 2 * P4 * (kk))))
                long k = 0;
                for (; k + 1 < K2; k += 2) {
                    const __m256i v = EDGEC_Q8_X(k), u = EDGEC_Q8_X(k + 1);
                    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(EDGEC_Q8_W(32 * k), v));
                    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(EDGEC_Q8_W(32 * k + 16), v));
                    e0 = _mm256_add_epi32(e0, _mm256_madd_epi16(EDGEC_Q8_W(32 * k + 32), u));
                    e1 = _mm256_add_epi32(e1, _mm256_madd_epi16(EDGEC_Q8_W(32 * k + 48), u));
                }
                if (k < K2) {
                    const __m256i v = EDGEC_Q8_X(k);
                    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(EDGEC_Q8_W(32 * k), v));
                    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(EDGEC_Q8_W(32 * k + 16), v));
                }
#undef EDGEC_Q8_X
                a0 = _mm256_add_epi32(a0, e0);
                a1 = _mm256_add_epi32(a1, e1);
                int32_t t[EDGEC_Q8_MC];
                if (!kind && !fast && !sg) {
                    _mm256_storeu_si256((__m256i*)(void*)t, a0);
                    _mm256_storeu_si256((__m256i*)(void*)(t + 8), a1);
                    for (long r = 0; r < mc; ++r)
                        yn[(m0 + r) * P + j0] = edgec_q_requant1(t[r], mv[r], -ev[r], zy, lo, hi, single);
                    continue;
                }
                int8_t q[EDGEC_Q8_MC];
                _mm_storeu_si128((__m128i*)(void*)q, edgec_q8_pack16(EDGEC_Q8_RQ(a0, 0), EDGEC_Q8_RQ(a1, 1), rv, kind));
                for (long r = 0; r < mc; ++r) yn[(m0 + r) * P + j0] = q[r];
            }
#undef EDGEC_Q8_W
#undef EDGEC_Q8_RQ
#else
            edgec_q8_block_params(m0, mc, bias, mult, shift, pc, single, b, mv, ev, &fast, &sg);
            (void)fast;
            (void)sg;
            for (long j = 0; j < P; ++j) {
                for (long r = 0; r < mc; ++r) {
                    int32_t acc = b[r];
                    for (long k = 0; k < K2; ++k)
                        acc += ap[32 * k + 2 * r] * xp[2 * P4 * k + 2 * j] +
                               ap[32 * k + 2 * r + 1] * xp[2 * P4 * k + 2 * j + 1];
                    yn[(m0 + r) * P + j] = edgec_q_requant1(acc, mv[r], -ev[r], zy, lo, hi, single);
                }
            }
#endif
        }
    }
}
/* The lane order of vpunpckl/hwd on 16 channels: "lo" holds channels {0-3, 8-11}, "hi" {4-7, 12-15}; lane l
   holds channel edgec_q8_dw_lane[l] (and channel r lane edgec_q8_dw_lane[r]: the table is its own inverse). */
static const int edgec_q8_dw_lane[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};

/* Depthwise convolution (one input channel per output channel, any window, stride and dilation) with 16
   channels on the lanes: each block of 16 input planes is transposed once into buf ([Hp][Wb][16] int16, the
   borders the input zero point, written once per call) and then paired along the rows into pb ([Hp][Wp][32]:
   pixel (i, j) holds the channels of (i, j) and (i, j + dw) interleaved, in vpunpckl/hwd order), so that
   taps (kh, 2k2) and (kh, 2k2 + 1) of a pixel are one load and one vpmaddwd per 8 channels with the pair's
   weights (packed at compile time as [KH][ceil(KW/2)][16][2], weight 0 for an odd row's last tap). A tile of
   4 output pixels shares each pair's weights; the 16 channels are requantized and stored as in
   edgec_q8_conv_cv. */
EDGEC_Q8_FN void edgec_q8_dw_cv(const edgec_q_conv_params* p, const int8_t* restrict x, const int16_t* restrict wq,
                               const int32_t* restrict bias, const int32_t* restrict mult,
                               const int32_t* restrict shift, int8_t* restrict y, int16_t* restrict buf, int rqflags)
{
    const long C = p->c, H = p->h, W = p->w, OH = p->oh, OW = p->ow, KH = p->kh, KW = p->kw;
    const int tiefree = rqflags & 1, kind = rqflags >> 1; /* the AVX2 path's */
    (void)tiefree;
    (void)kind;
    const long sh = p->sh, sw = p->sw, dh = p->dh, dw = p->dw, P = OH * OW;
    const int32_t zy = p->y_zp, lo = p->qmin, hi = p->qmax, pc = p->per_channel, single = p->single;
#if EDGEC_Q8_AVX2
    const long Hp = (OH - 1) * sh + (KH - 1) * dh + 1, Wp = (OW - 1) * sw + (KW - 1) * dw + 1;
    const long ihe = H < Hp - p->ph ? H : Hp - p->ph, iwe = W < Wp - p->pw ? W : Wp - p->pw;
    const long Wb = Wp + dw, KW2 = (KW + 1) / 2; /* an odd row's last pair reads dw columns past the reach */
    const int16_t zx = (int16_t)p->x_zp;
    int16_t* restrict pb = buf + Hp * Wb * 16;
    int8_t* restrict zplane = (int8_t*)(void*)(pb + Hp * Wp * 32); /* the planes past the last channel */
    memset(zplane, p->x_zp, (size_t)(H * W));
    for (long i = 0; i < Hp * Wb * 16; ++i) buf[i] = zx; /* the borders, once */
#endif
    for (long n = 0; n < p->n; ++n) {
        for (long c0 = 0; c0 < C; c0 += 16) {
            const long nc = C - c0 < 16 ? C - c0 : 16;
            int32_t b[16], mv[16], ev[16];
            int fast = 1, sg = 0;
#if EDGEC_Q8_AVX2
            const int8_t* xr[16]; /* the 16 input planes (past the last channel: the zero point's) */
            for (long r = 0; r < 16; ++r) xr[r] = r < nc ? x + (n * C + c0 + r) * H * W : zplane;
            /* chunks of 8 pixels of the flattened planes (any width), transposed to 8 x 16 channels; the last chunk
               overlaps the one before (the same pixels are written twice) */
            const long HW = H * W, nf = HW < 8 ? 0 : (HW + 7) / 8;
            long ih0 = 0, iw0 = 0; /* the chunk's first pixel */
            for (long i8 = 0; i8 < nf; ++i8) {
                const long f = i8 + 1 < nf ? 8 * i8 : HW - 8;
                if (f != 8 * i8) {
                    ih0 = f / W;
                    iw0 = f - ih0 * W;
                }
                __m128i t[8], u[8], v[8], px[8];
                for (int i = 0; i < 8; ++i)
                    t[i] = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i*)(const void*)(xr[2 * i] + f)),
                                             _mm_loadl_epi64((const __m128i*)(const void*)(xr[2 * i + 1] + f)));
                for (int i = 0; i < 4; ++i) {
                    u[2 * i] = _mm_unpacklo_epi16(t[2 * i], t[2 * i + 1]);
                    u[2 * i + 1] = _mm_unpackhi_epi16(t[2 * i], t[2 * i + 1]);
                }
                for (int i = 0; i < 2; ++i) { /* i = 0: channels 0-7, 1: 8-15 */
                    v[4 * i] = _mm_unpacklo_epi32(u[4 * i], u[4 * i + 2]);
                    v[4 * i + 1] = _mm_unpackhi_epi32(u[4 * i], u[4 * i + 2]);
                    v[4 * i + 2] = _mm_unpacklo_epi32(u[4 * i + 1], u[4 * i + 3]);
                    v[4 * i + 3] = _mm_unpackhi_epi32(u[4 * i + 1], u[4 * i + 3]);
                }
                for (int i = 0; i < 4; ++i) {
                    px[2 * i] = _mm_unpacklo_epi64(v[i], v[4 + i]);
                    px[2 * i + 1] = _mm_unpackhi_epi64(v[i], v[4 + i]);
                }
                for (int i = 0; i < 8; ++i) { /* pixels outside the window reach (ihe x iwe) are not needed */
                    if (ih0 < ihe && iw0 < iwe)
                        _mm256_storeu_si256((__m256i*)(void*)(buf + ((ih0 + p->ph) * Wb + iw0 + p->pw) * 16),
                                            _mm256_cvtepi8_epi16(px[i]));
                    if (++iw0 == W) {
                        iw0 = 0;
                        ++ih0;
                    }
                }
            }
            for (long f = 8 * nf; f < HW; ++f) { /* planes of fewer than 8 pixels */
                const long ih = f / W, iw = f % W;
                if (ih < ihe && iw < iwe)
                    for (long r = 0; r < 16; ++r) buf[((ih + p->ph) * Wb + iw + p->pw) * 16 + r] = xr[r][f];
            }
            for (long i = 0; i < Hp; ++i) /* the row pairs */
                for (long j = 0; j < Wp; ++j) {
                    const int16_t* restrict s = buf + (i * Wb + j) * 16;
                    const __m256i a = _mm256_loadu_si256((const __m256i*)(const void*)s);
                    const __m256i e = _mm256_loadu_si256((const __m256i*)(const void*)(s + 16 * dw));
                    _mm256_storeu_si256((__m256i*)(void*)(pb + (i * Wp + j) * 32), _mm256_unpacklo_epi16(a, e));
                    _mm256_storeu_si256((__m256i*)(void*)(pb + (i * Wp + j) * 32 + 16), _mm256_unpackhi_epi16(a, e));
                }
            const int16_t* restrict wb = wq + (c0 / 16) * KH * KW2 * 32;
            __m256i vb[2];
            edgec_q8_rqv rv[2];
            if (kind && pc && nc == 16) { /* a whole block with per-channel parameters: vector loads, in lane order */
#define EDGEC_Q8_L(a, imm)                                                                                         \
    _mm256_permute2x128_si256(_mm256_loadu_si256((const __m256i*)(const void*)((a) + c0)),                           \
                              _mm256_loadu_si256((const __m256i*)(const void*)((a) + c0 + 8)), imm)
                vb[0] = EDGEC_Q8_L(bias, 0x20); /* channels 0-3, 8-11 */
                vb[1] = EDGEC_Q8_L(bias, 0x31); /* 4-7, 12-15 */
                rv[0] = edgec_q8_rqv_vec(EDGEC_Q8_L(mult, 0x20), EDGEC_Q8_L(shift, 0x20), kind, zy, lo, hi);
                rv[1] = edgec_q8_rqv_vec(EDGEC_Q8_L(mult, 0x31), EDGEC_Q8_L(shift, 0x31), kind, zy, lo, hi);
#undef EDGEC_Q8_L
            } else {
                edgec_q8_block_params(c0, nc, bias, mult, shift, pc, single, b, mv, ev, &fast, &sg);
                int32_t bl[16], ml[16], el[16]; /* in lane order */
                for (int l = 0; l < 16; ++l) {
                    bl[l] = b[edgec_q8_dw_lane[l]];
                    ml[l] = mv[edgec_q8_dw_lane[l]];
                    el[l] = ev[edgec_q8_dw_lane[l]];
                }
                int tf = fast && tiefree;
                for (int l = 0; l < 16; ++l) tf = tf && el[l] >= 1;
                for (int h = 0; h < 2; ++h) {
                    vb[h] = _mm256_loadu_si256((const __m256i*)(const void*)(bl + 8 * h));
                    if (kind || fast || sg) rv[h] = edgec_q8_rqv_make(ml + 8 * h, el + 8 * h, sg ? 2 : tf, zy, lo, hi);
                }
            }
            long oh = 0, ow = 0; /* the next pixel's row and column */
            for (long j0 = 0; j0 < P; j0 += 4) {
                const long nj = P - j0 < 4 ? P - j0 : 4;
                __m128i q[4];
                int32_t t[4][16];
                const int16_t* o[4]; /* the tile's pixels (past the plane: pixel j0 + nj - 1 again) */
                for (long j = 0; j < 4; ++j) {
                    o[j] = pb + (oh * sh * Wp + ow * sw) * 32;
                    if (j + 1 < nj && ++ow == OW) {
                        ow = 0;
                        ++oh;
                    }
                }
                /* the 8 accumulators as named variables: arrays indexed in a loop stay on the stack */
                __m256i a0 = vb[0], a1 = vb[0], a2 = vb[0], a3 = vb[0], h0 = vb[1], h1 = vb[1], h2 = vb[1], h3 = vb[1];
                /* 3x3 windows (most of them) with constant trip counts: the tap loops unroll */
                const long nkh = KH == 3 && KW2 == 2 ? 3 : KH, nk2 = KH == 3 && KW2 == 2 ? 2 : KW2;
                for (long kh = 0; kh < nkh; ++kh)
                    for (long k2 = 0; k2 < nk2; ++k2) {
                        const long off = (kh * dh * Wp + 2 * k2 * dw) * 32;
                        const int16_t* restrict wt = wb + (kh * nk2 + k2) * 32;
                        const __m256i wl = _mm256_loadu_si256((const __m256i*)(const void*)wt);
                        const __m256i wh = _mm256_loadu_si256((const __m256i*)(const void*)(wt + 16));
#define EDGEC_Q8_DWP(j, al, ah)                                                                                    \
    al = _mm256_add_epi32(al, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(const void*)(o[j] + off)), wl)); \
    ah = _mm256_add_epi32(ah, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(const void*)(o[j] + off + 16)), wh))
                        EDGEC_Q8_DWP(0, a0, h0);
                        EDGEC_Q8_DWP(1, a1, h1);
                        EDGEC_Q8_DWP(2, a2, h2);
                        EDGEC_Q8_DWP(3, a3, h3);
#undef EDGEC_Q8_DWP
                    }
                const __m256i al[4] = {a0, a1, a2, a3}, ah[4] = {h0, h1, h2, h3};
                for (long j = 0; j < 4; ++j) {
                    if (!kind && !fast && !sg) {
                        _mm256_storeu_si256((__m256i*)(void*)t[j], al[j]);
                        _mm256_storeu_si256((__m256i*)(void*)(t[j] + 8), ah[j]);
                        continue;
                    }
                    q[j] = edgec_q8_out16(edgec_q8_rqv8(al[j], &rv[0], kind), edgec_q8_rqv8(ah[j], &rv[1], kind), rv,
                                          kind); /* lane order */
                }
                if (nj == 4 && ++ow == OW) { /* pixel j0 + 4 */
                    ow = 0;
                    ++oh;
                }
                if (!kind && !fast && !sg) {
                    for (long l = 0; l < 16; ++l) {
                        const long r = edgec_q8_dw_lane[l];
                        if (r >= nc) continue;
                        for (long j = 0; j < nj && j < 4; ++j)
                            y[(n * C + c0 + r) * P + j0 + j] =
                                edgec_q_requant1(t[j][l], mv[r], -ev[r], zy, lo, hi, single);
                    }
                    continue;
                }
                edgec_q8_store_cols(q, y + (n * C + c0) * P + j0, P, nc, nj);
            }
#else
            (void)buf;
            edgec_q8_block_params(c0, nc, bias, mult, shift, pc, single, b, mv, ev, &fast, &sg);
            (void)fast;
            (void)sg;
            for (long r = 0; r < nc; ++r) {
                const long c = c0 + r;
                const int8_t* restrict xc = x + (n * C + c) * H * W;
                for (long j = 0; j < P; ++j) {
                    int32_t acc = b[r];
                    for (long t = 0; t < KH * KW; ++t) {
                        const long ih = j / OW * sh - p->ph + t / KW * dh, iw = j % OW * sw - p->pw + t % KW * dw;
                        acc += wq[((c / 16 * KH + t / KW) * ((KW + 1) / 2) + t % KW / 2) * 32 +
                                  2 * edgec_q8_dw_lane[c % 16] + t % KW % 2] *
                               ((ih >= 0 && ih < H && iw >= 0 && iw < W) ? xc[ih * W + iw] : p->x_zp);
                    }
                    y[(n * C + c) * P + j] = edgec_q_requant1(acc, mv[r], -ev[r], zy, lo, hi, single);
                }
            }
#endif
        }
    }
}
"""

K.HELPERS["q8_small"] = _HELPER.replace("@MAXP@", str(MAX_PIXELS))
K.HELPER_DEPS["q8_small"] = ("q_common", "q_kernels", "q8_fast")  # EDGEC_Q8_AVX2, EDGEC_Q8_FN


def pack_weights_lanes(w: np.ndarray) -> np.ndarray:
    """[M, C, KH, KW] int8 -> ``[ceil(M/MC)][ceil(K/2)][MC][2]`` int8 (K = C*KH*KW; zero-padded rows and k); the
    kernel widens 16 at a time as it loads them (int16 copies would double the bytes for the same speed)."""
    m = int(w.shape[0])
    k0 = int(np.prod(w.shape[1:]))
    mp, k2 = -(-m // MC) * MC, -(-k0 // 2)
    a = np.zeros((mp, 2 * k2), np.int8)
    a[:m, :k0] = np.asarray(w, np.int8).reshape(m, k0)
    return np.ascontiguousarray(a.reshape(mp // MC, MC, k2, 2).transpose(0, 2, 1, 3).reshape(-1))


def _packed(k: KernelContext, base: Value, tag: str, pack: Callable[[np.ndarray], np.ndarray]) -> Value:
    """The int16 copy ``pack(base)`` of the constant weight ``base`` (cached: layers sharing a weight share it)."""
    cache = k.__dict__.setdefault(f"_{tag}", {})
    if id(base) not in cache:
        arr = pack(np.asarray(base.const.numpy()))
        dtype = DType.INT8 if arr.dtype == np.int8 else DType.INT16
        cache[id(base)] = (base, Value(f"{base.name}_{tag}", TensorType(dtype, Shape((arr.size,))),
                                       ArrayTensor(arr)))
    return cache[id(base)][1]


def small_pays(f: Dict[str, int]) -> bool:
    """Whether a one-group convolution goes to the channel-lane kernel: 1x1 windows on planes up to ``MAX_PIXELS``
    pixels (the pixel panels of 16 are then mostly padding), at least ``MIN_CHANNELS`` outputs. Measured on the
    benchmark models (again on the digits CNN's 3x3 layers on 4x4 and 2x2 planes): larger windows gain nothing
    over the generic kernel (the im2col costs as much as the arithmetic on a 2x2 plane)."""
    return (f["groups"] == 1 and f["kh"] == f["kw"] == 1 and f["oh"] * f["ow"] <= MAX_PIXELS
            and f["m"] >= MIN_CHANNELS)


def small_conv(node: Node, k: KernelContext, f: Dict[str, int]) -> Optional[K.NodeCode]:
    """The ``edgec_q8_conv_cv`` call of an inline-CPU one-group ``edgec.QConv`` on a small plane, or None."""
    if f["acc64"] or not node.input(1).is_constant() or not small_pays(f):
        return None
    ops = list(node.inputs)
    ops[1] = _packed(k, node.input(1), "q8lanes", pack_weights_lanes)
    k2 = (f["c"] * f["kh"] * f["kw"] + 1) // 2
    p4 = -(-f["oh"] * f["ow"] // PT) * PT
    init = "{" + ", ".join(f".{n} = {int(v)}" for n, v in f.items()) + "}"
    body = (f"    static const edgec_q_conv_params p = {init};\n"
            f"    edgec_q8_conv_cv(&p, x0, x1, x2, x3, x4, y0, s0, {requant_flags(node, f)});\n")
    pointwise = (f["kh"] == f["kw"] == f["sh"] == f["sw"] == 1 and f["ph"] == f["pw"] == 0
                 and (f["oh"], f["ow"]) == (f["h"], f["w"]))
    hr = (f["oh"] - 1) * f["sh"] + (f["kh"] - 1) * f["dh"] + 1
    wr = (f["ow"] - 1) * f["sw"] + (f["kw"] - 1) * f["dw"] + 1
    planes = 0 if pointwise else f["c"] * hr * wr  # the zero-point bordered image (the same sizes as the C)
    code = K.NodeCode(ops, body, ["q8_small"], typed=True, scratch=2 * 2 * k2 * p4 + planes)
    code.scratch_ctype = "int16_t"  # type: ignore[attr-defined]
    return code


#: Largest output plane of the channel-lane depthwise kernel (larger planes: the plane-wise edgec_q8_dw3x3).
DW_MAX_PIXELS = 256
#: Most taps of its window (the largest measured: 5x5).
DW_MAX_TAPS = 25


def _dw_lanes_scratch(f: Dict[str, int]) -> int:
    """Bytes of the transposed padded block of 16 planes, of its row pairs and of a zero-point input plane (the
    same sizes as the C)."""
    hp = (f["oh"] - 1) * f["sh"] + (f["kh"] - 1) * f["dh"] + 1
    wp = (f["ow"] - 1) * f["sw"] + (f["kw"] - 1) * f["dw"] + 1
    return 2 * 16 * hp * (wp + f["dw"]) + 2 * 32 * hp * wp + f["h"] * f["w"]


def dw_lanes_pays(f: Dict[str, int]) -> bool:
    """Whether a depthwise layer goes to the channel-lane kernel: planes up to ``DW_MAX_PIXELS`` pixels."""
    return (f["groups"] == f["c"] == f["m"] and f["kh"] * f["kw"] <= DW_MAX_TAPS
            and f["oh"] * f["ow"] <= DW_MAX_PIXELS)


#: Lane l of the depthwise kernel's vectors holds channel DW_LANE[l] of a block of 16 (vpunpckl/hwd order).
DW_LANE = np.array([0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15])


def pack_dw_lanes(w: np.ndarray) -> np.ndarray:
    """[C, 1, KH, KW] int8 -> ``[ceil(C/16)][KH][ceil(KW/2)][16][2]`` int16: block q, row kh, pair k2, lane l
    holds taps (kh, 2k2) and (kh, 2k2 + 1) of channel ``16q + DW_LANE[l]`` (zero-padded channels and an odd
    row's last tap)."""
    c, kh, kw = int(w.shape[0]), int(w.shape[2]), int(w.shape[3])
    cp, kw2 = -(-c // 16) * 16, -(-kw // 2)
    a = np.zeros((cp, kh, 2 * kw2), np.int16)
    a[:c, :, :kw] = np.asarray(w, np.int64).reshape(c, kh, kw)
    a = a.reshape(cp // 16, 16, kh, kw2, 2)[:, DW_LANE]
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1, 4).reshape(-1))


def small_depthwise(node: Node, k: KernelContext, f: Dict[str, int]) -> Optional[K.NodeCode]:
    """The ``edgec_q8_dw_cv`` call of an inline-CPU depthwise ``edgec.QConv``, or None."""
    if f["acc64"] or not node.input(1).is_constant() or not dw_lanes_pays(f):
        return None
    init = "{" + ", ".join(f".{n} = {int(v)}" for n, v in f.items()) + "}"
    body = (f"    static const edgec_q_conv_params p = {init};\n"
            f"    edgec_q8_dw_cv(&p, x0, x1, x2, x3, x4, y0, s0, {requant_flags(node, f)});\n")
    ops = list(node.inputs)
    ops[1] = _packed(k, node.input(1), "q8dw", pack_dw_lanes)
    code = K.NodeCode(ops, body, ["q8_small"], typed=True, scratch=_dw_lanes_scratch(f))
    code.scratch_ctype = "int16_t"  # type: ignore[attr-defined]
    return code
