"""Fast int8 kernels of the inline CPU placement (register-blocked int16 GEMM, vectorized depthwise and Add).

:mod:`.kernels_int8` keeps the generic kernels (runtime parameters, the accelerator HAL reference); this
module takes the layers that dominate MobileNet-style models when they run on the CPU:

* ``edgec_q8_conv_gemm``: convolutions with one group (pointwise and full ones) as
  ``Y[M, P] = W[M, K] im2col(X)[K, P]``. The weights are packed at compile time in panels of
  ``EDGEC_Q8_MR`` output channels with pairs of k adjacent (``[M/MR][K/2][MR][2]`` int16, zero-padded),
  the input is packed in panels of ``EDGEC_Q8_NR`` output pixels in the same pair layout
  (``[K/2][NR][2]`` int16, blocks of panels in the node's scratch), so that
  ``acc += w(k) x(k) + w(k+1) x(k+1)`` is one ``vpmaddwd`` (``_mm256_madd_epi16``) per 8 pixels: a 4 x 16
  tile of int32 accumulators lives in registers over the whole K and is requantized from the registers.
* ``edgec_q8_dw3x3``: depthwise 3x3 (stride 1 or 2, dilation 1) over one int16 plane per channel padded
  with the input zero point (the padding written once per layer): taps (kh, 0) and (kh, 1) are an adjacent
  pair in memory, so each row of taps is two ``vpmaddwd`` per 8 outputs (stride 1: even and odd outputs
  separately, over the flattened plane).
* ``edgec_q8_add``: same-shape Add, 16 elements at a time.
* requantization of 8 lanes at a time: the SRDHM (``(x * M0 + 2^30) >> 31``, which equals gemmlowp's
  nudged truncating division whenever not both operands are INT32_MIN) with ``vpmuldq`` on even and odd
  lanes, the rounding shift and the clamp on whole vectors. When :func:`tie_free` proves at compile time
  that no accumulator of the layer sits on a rounding tie, one rounding of the magnitude gives the same
  integers with 13 instead of 18 instructions per 8 lanes.

Every AVX2 path (``#if defined(__AVX2__)``, off with ``-DEDGEC_Q8_PORTABLE``) has a portable C99 twin
that computes the same integers; integer arithmetic is exact, so both are bit-identical with
:func:`edgec.quant.reference.run_integer`. Single rounding (CMSIS-NN) runs on vectors too (one 64-bit
rounding shift); shifts outside [-31, 0] requantize element by element with ``edgec_q_requant1`` (the
generic kernels' function). Working memory is the
layer's arena scratch (``s0``, ``int16_t*``), never the stack.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ...ir import ArrayTensor, Node, Shape, TensorType, Value
from ...ir.dtypes import DType
from . import kernels as K
from .kernels import KernelContext

__all__ = ["MR", "NR", "fast_add", "fast_conv", "fast_quantize", "pack_weights_pairs"]

#: Register tile of the GEMM: output channels x output pixels.
MR, NR = 4, 16
#: int16 elements of one block of packed input panels (48 KiB: stays in L1/L2 while every panel of output
#: channels passes over it); also the GEMM's scratch.
GEMM_BLOCK_INT16 = 24576

#: The vector path's switch and the function attributes, shared by the fast kernels and the float boundary.
_SIMD = """\
/* --- AVX2 when available (-DEDGEC_Q8_PORTABLE: the portable C99 paths) --- */
#include <string.h>
#if defined(__AVX2__) && !defined(EDGEC_Q8_PORTABLE)
#include <immintrin.h>
#define EDGEC_Q8_AVX2 1
#else
#define EDGEC_Q8_AVX2 0
#endif
#if defined(__GNUC__) || defined(__clang__)
#define EDGEC_Q8_FN static __attribute__((unused)) /* a model may use only some of the kernels */
#else
#define EDGEC_Q8_FN static
#endif
#if defined(__GNUC__) || defined(__clang__)
#define EDGEC_Q8_INLINE static inline __attribute__((always_inline)) /* the requantization and the register tile: hot, and GCC leaves them out of line (5-8% of a MobileNet) */
#else
#define EDGEC_Q8_INLINE static inline
#endif
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)
#define EDGEC_Q8_UNROLL2 _Pragma("GCC unroll 2") /* the k loops of the register tiles: ~6% of a MobileNet */
#else
#define EDGEC_Q8_UNROLL2
#endif
"""

_HELPER = """\
/* --- fast int8 kernels of the CPU placement (portable C99; AVX2 intrinsics when available) --- */
#define EDGEC_Q8_MR 4
#define EDGEC_Q8_NR 16

#if EDGEC_Q8_AVX2
/* Requantization parameters of 8 lanes (one channel's, broadcast, or 8 channels'): mode 0 is gemmlowp's
   double rounding (SRDHM, then RoundingDivideByPOT by e), 1 the tie-free single rounding of |x| (see
   edgec_q8_rq_make), 2 single rounding (CMSIS-NN). 64-bit quantities hold the even lanes' values in ke/ce,
   the odd lanes' in ko/co. */
typedef struct {
    __m256i m, mo;          /* M0 per lane; mo = m >> 32 puts the odd lanes' M0 where vpmuldq reads it */
    __m256i e, mask, half;  /* double rounding: e per lane, 2^e - 1, mask >> 1 */
    __m256i ke, ko, ce, co; /* tie-free: 2^30 + 2^(30+e), shift counts 31 + e (even) and e - 1 (odd: the result
                               lands in the high half); single: 2^(30+e) + 2^62 (so the 64-bit shift may be a
                               logical one), counts 31 + e */
    __m256i fix;            /* single rounding: less the 2^(31-e) that 2^62 leaves in the result */
    __m256i zy16;           /* the output zero point, int16 lanes: added after the first (saturating) pack */
    __m128i lo8, hi8;       /* the clamp bounds, int8 lanes (only when narrower than int8: clamp) */
    int mode, clamp;
} edgec_q8_rqv;

/* The per-lane constants of a lane with shift e (h: 0 for an even lane, 1 for an odd one). */
static inline int32_t edgec_q8_rqv_mask(int mode, int e) { return mode == 0 ? (int32_t)(((uint32_t)1 << e) - 1u) : 0; }
static inline int32_t edgec_q8_rqv_fix(int mode, int e) { return mode == 2 ? (int32_t)(0u - ((uint32_t)1 << (31 - e))) : 0; }
static inline int64_t edgec_q8_rqv_k(int mode, int e)
{
    return mode == 1 ? ((int64_t)1 << 30) + ((int64_t)1 << (30 + e))
           : mode == 2 ? ((int64_t)1 << (30 + e)) + ((int64_t)1 << 62) : 0;
}
static inline int64_t edgec_q8_rqv_count(int mode, int e, int h) { return mode == 1 && h ? e - 1 : 31 + e; }
/* The output stage: zy (int16 lanes), the clamp to [lo, hi] (within [-128, 127]; none when it is all of int8). */
static inline void edgec_q8_rqv_out(edgec_q8_rqv* v, int32_t zy, int32_t lo, int32_t hi)
{
    v->zy16 = _mm256_set1_epi16((int16_t)zy);
    v->lo8 = _mm_set1_epi8((char)lo);
    v->hi8 = _mm_set1_epi8((char)hi);
    v->clamp = lo > -128 || hi < 127;
}
/* m8, e8: M0 and e = -shift of the 8 lanes (e in [0, 31]; [1, 31] for mode 1; M0 > 0 for modes 0 and 1). */
EDGEC_Q8_INLINE edgec_q8_rqv edgec_q8_rqv_make(const int32_t* m8, const int32_t* e8, int mode, int32_t zy, int32_t lo,
                                             int32_t hi)
{
    edgec_q8_rqv v;
    int32_t mk[8], z[8];
    int64_t k[2][4], c[2][4];
    for (int j = 0; j < 8; ++j) {
        mk[j] = edgec_q8_rqv_mask(mode, e8[j]);
        z[j] = edgec_q8_rqv_fix(mode, e8[j]);
    }
    for (int i = 0; i < 4; ++i)
        for (int h = 0; h < 2; ++h) { /* h = 0: lane 2i, 1: lane 2i + 1 */
            k[h][i] = edgec_q8_rqv_k(mode, e8[2 * i + h]);
            c[h][i] = edgec_q8_rqv_count(mode, e8[2 * i + h], h);
        }
#define EDGEC_Q8_LD(a) _mm256_loadu_si256((const __m256i*)(const void*)(a))
    v.m = EDGEC_Q8_LD(m8);
    v.mo = _mm256_srli_epi64(v.m, 32);
    v.e = EDGEC_Q8_LD(e8);
    v.mask = EDGEC_Q8_LD(mk);
    v.half = _mm256_srai_epi32(v.mask, 1);
    v.ke = EDGEC_Q8_LD(k[0]);
    v.ko = EDGEC_Q8_LD(k[1]);
    v.ce = EDGEC_Q8_LD(c[0]);
    v.co = EDGEC_Q8_LD(c[1]);
    v.fix = EDGEC_Q8_LD(z);
#undef EDGEC_Q8_LD
    edgec_q8_rqv_out(&v, zy, lo, hi);
    v.mode = mode;
    return v;
}
/* The same for a mode fixed at compile time (kind 1 or 2, as edgec_q8_rqv8's) from vectors of the 8 lanes' M0
   and shift (= -e): a few vector instructions instead of the per-lane tables (the 16-channel blocks of the
   small-plane kernels set it up once per block). */
EDGEC_Q8_INLINE edgec_q8_rqv edgec_q8_rqv_vec(__m256i m, __m256i shift, int kind, int32_t zy, int32_t lo, int32_t hi)
{
    edgec_q8_rqv v;
    const __m256i zero = _mm256_setzero_si256(), e = _mm256_sub_epi32(zero, shift);
    const __m256i ee = _mm256_blend_epi32(e, zero, 0xAA), eo = _mm256_srli_epi64(e, 32); /* e of even, odd lanes */
    const __m256i c30 = _mm256_set1_epi64x((int64_t)1 << 30), c31 = _mm256_set1_epi64x(31);
    v.m = m;
    v.mo = _mm256_srli_epi64(m, 32);
    v.e = e;
    v.mask = v.half = zero;
    if (kind == 1) { /* 2^30 + 2^(30+e); counts 31 + e (even) and e - 1 (odd) */
        v.ke = _mm256_add_epi64(c30, _mm256_sllv_epi64(c30, ee));
        v.ko = _mm256_add_epi64(c30, _mm256_sllv_epi64(c30, eo));
        v.ce = _mm256_add_epi64(ee, c31);
        v.co = _mm256_sub_epi64(eo, _mm256_set1_epi64x(1));
        v.fix = zero;
    } else { /* 2^(30+e) + 2^62; counts 31 + e; less 2^(31-e) */
        const __m256i c62 = _mm256_set1_epi64x((int64_t)1 << 62);
        v.ke = _mm256_add_epi64(c62, _mm256_sllv_epi64(c30, ee));
        v.ko = _mm256_add_epi64(c62, _mm256_sllv_epi64(c30, eo));
        v.ce = _mm256_add_epi64(ee, c31);
        v.co = _mm256_add_epi64(eo, c31);
        v.fix = _mm256_sub_epi32(zero, _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_sub_epi32(_mm256_set1_epi32(31), e)));
    }
    edgec_q8_rqv_out(&v, zy, lo, hi);
    v.mode = kind;
    return v;
}
/* The same with one M0 and e for all lanes (one channel), from broadcasts. */
EDGEC_Q8_INLINE edgec_q8_rqv edgec_q8_rqv_set1(int32_t m0, int e, int mode, int32_t zy, int32_t lo, int32_t hi)
{
    edgec_q8_rqv v;
    v.m = v.mo = _mm256_set1_epi32(m0);
    v.e = _mm256_set1_epi32(e);
    v.mask = _mm256_set1_epi32(edgec_q8_rqv_mask(mode, e));
    v.half = _mm256_srai_epi32(v.mask, 1);
    v.ke = v.ko = _mm256_set1_epi64x(edgec_q8_rqv_k(mode, e));
    v.ce = _mm256_set1_epi64x(edgec_q8_rqv_count(mode, e, 0));
    v.co = _mm256_set1_epi64x(edgec_q8_rqv_count(mode, e, 1));
    v.fix = _mm256_set1_epi32(edgec_q8_rqv_fix(mode, e));
    edgec_q8_rqv_out(&v, zy, lo, hi);
    v.mode = mode;
    return v;
}
/* gemmlowp SaturatingRoundingDoublingHighMul of 8 lanes by m (mo = m >> 32; not both INT32_MIN):
   (x * m + 2^30) >> 31, with vpmuldq on the even and the odd lanes. */
static inline __m256i edgec_q8_srdhm8(__m256i x, __m256i m, __m256i mo)
{
    const __m256i rnd = _mm256_set1_epi64x((int64_t)1 << 30);
    const __m256i pe = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, m), rnd), 31);
    const __m256i po = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), mo), rnd), 31);
    return _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA); /* low 32 bits of each >> 31 */
}
/* RoundingDivideByPOT of 8 lanes by e per lane (mask = 2^e - 1, half = mask >> 1): ties away from zero. */
static inline __m256i edgec_q8_rdbpot8(__m256i s, __m256i e, __m256i mask, __m256i half)
{
    const __m256i up = _mm256_cmpgt_epi32(_mm256_and_si256(s, mask), _mm256_sub_epi32(half, _mm256_srai_epi32(s, 31)));
    return _mm256_sub_epi32(_mm256_srav_epi32(s, e), up);
}
/* 8 lanes of requant(x), before the output zero point (x: the accumulators with the bias); the outputs are
   edgec_q8_out16 of two such vectors. kind: rqflags >> 1 of the layer (kernels_int8_fast.requant_flags; 0: the
   mode of q, 1 or 2: that mode, a constant in the kernel's clone). */
EDGEC_Q8_INLINE __m256i edgec_q8_rqv8(__m256i x, const edgec_q8_rqv* q, int kind)
{
    __m256i r;
    const int mode = kind ? kind : q->mode;
    if (mode == 1) {
        const __m256i a = _mm256_abs_epi32(x);
        const __m256i pe = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epu32(a, q->m), q->ke), q->ce);
        const __m256i po =
            _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), q->mo), q->ko), q->co);
        r = _mm256_sign_epi32(_mm256_blend_epi32(pe, po, 0xAA), x);
    } else if (mode == 2) {
        const __m256i pe = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, q->m), q->ke), q->ce);
        const __m256i po =
            _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), q->mo), q->ko), q->co);
        r = _mm256_add_epi32(_mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA), q->fix);
    } else {
        r = edgec_q8_rdbpot8(edgec_q8_srdhm8(x, q->m, q->mo), q->e, q->mask, q->half);
    }
    return r;
}
/* The 16 int8 outputs clamp(r + zy) of two vectors a, b of edgec_q8_rqv8 (same zy and bounds), as bytes
   a0-3 b0-3 a4-7 b4-7 (the packs' lane order). The zero point is added to the int16 lanes with saturation:
   sat8(sat16(sat16(r) + zy)) = sat8(r + zy) for |zy| <= 128, so the clamp to int8 is the packs' own and
   [lo, hi] costs two instructions per 16 outputs only when it is narrower. */
EDGEC_Q8_INLINE __m128i edgec_q8_out16(__m256i a, __m256i b, const edgec_q8_rqv* q, int kind)
{
    const __m256i w = _mm256_adds_epi16(_mm256_packs_epi32(a, b), q->zy16);
    const __m128i v = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    return !kind && q->clamp ? _mm_min_epi8(_mm_max_epi8(v, q->lo8), q->hi8) : v;
}
#endif

/* Requantization of one output channel: shifts in [-31, 0] (double rounding: M0 > 0) branch-free on
   vectors; anything else element by element with edgec_q_requant1. */
typedef struct {
    int32_t b, m0, s0, zy, lo, hi, single, fast;
#if EDGEC_Q8_AVX2
    __m256i vb;     /* the bias, broadcast */
    edgec_q8_rqv v; /* the requantization, broadcast */
#endif
} edgec_q8_rq;

/* tiefree (set at compile time by kernels_int8_fast.tie_free): every accumulator of the layer has
   |acc| < 2^31, the shift e = -s0 is in [1, 31], and no |acc| makes |acc| * M0 + 2^30 + 2^(30+e) a multiple
   of 2^(31+e). Then requant(acc) = sign(acc) * ((|acc| * M0 + 2^30 + 2^(30+e)) >> (31 + e)): one rounding
   of the magnitude instead of gemmlowp's two (5 of 18 vector instructions fewer). */
static inline edgec_q8_rq edgec_q8_rq_make(int32_t b, int32_t m0, int32_t s0, int32_t zy, int32_t lo, int32_t hi,
                                           int32_t single, int tiefree)
{
    edgec_q8_rq r;
    r.b = b; r.m0 = m0; r.s0 = s0; r.zy = zy; r.lo = lo; r.hi = hi; r.single = single;
    r.fast = s0 <= 0 && s0 >= -31 && (single || m0 > 0);
#if EDGEC_Q8_AVX2
    r.vb = _mm256_set1_epi32(b);
    if (r.fast) r.v = edgec_q8_rqv_set1(m0, -s0, single ? 2 : tiefree && s0 <= -1 ? 1 : 0, zy, lo, hi);
#else
    (void)tiefree;
#endif
    return r;
}
/* y[j] = requant(t[j] + b) for j < n (t: 16 accumulators without the bias). */
static inline void edgec_q8_requant16(const int32_t* restrict t, const edgec_q8_rq* q, int8_t* restrict y, long n)
{
    int8_t out[16];
    if (!q->fast || q->single) {
        for (long j = 0; j < n && j < 16; ++j)
            y[j] = edgec_q_requant1(t[j] + q->b, q->m0, q->s0, q->zy, q->lo, q->hi, q->single);
        return;
    }
    const int e = -q->s0;
    const int32_t mask = (int32_t)(((uint32_t)1 << e) - 1u), half = mask >> 1;
    for (long j = 0; j < 16; ++j) {
        /* gemmlowp SRDHM: (ab + nudge) / 2^31 truncated == (ab + 2^30) >> 31 (floor) for every ab */
        const int32_t s = (int32_t)(((int64_t)(t[j] + q->b) * q->m0 + ((int64_t)1 << 30)) >> 31);
        const int32_t v = (s >> e) + ((s & mask) > half + (s < 0) ? 1 : 0) + q->zy;
        out[j] = (int8_t)(v < q->lo ? q->lo : (v > q->hi ? q->hi : v));
    }
    for (long j = 0; j < n && j < 16; ++j) y[j] = out[j];
}
#if EDGEC_Q8_AVX2
/* y[0, n) = the first n <= 16 bytes of v. (The copies from the 16-element arrays here and below also stop at 16:
   GCC's -Warray-bounds cannot always prove n <= 16 once a whole layer is inlined.) */
static inline void edgec_q8_put16(__m128i v, int8_t* restrict y, long n)
{
    if (n == 16) {
        _mm_storeu_si128((__m128i*)(void*)y, v);
    } else {
        int8_t t[16];
        _mm_storeu_si128((__m128i*)(void*)t, v);
        for (long j = 0; j < n && j < 16; ++j) y[j] = t[j];
    }
}
/* Requantize and store n <= 16 outputs of one channel held as lo = outputs {0-3, 8-11}, hi = {4-7, 12-15}
   (accumulators without the bias). */
EDGEC_Q8_INLINE void edgec_q8_store16(__m256i lo, __m256i hi, const edgec_q8_rq* q, int8_t* restrict y, long n,
                                   int kind)
{
    lo = _mm256_add_epi32(lo, q->vb);
    hi = _mm256_add_epi32(hi, q->vb);
    if (!kind && !q->fast) {
        int32_t t[16];
        _mm256_storeu_si256((__m256i*)(void*)t, _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i*)(void*)(t + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
        for (long j = 0; j < n && j < 16; ++j)
            y[j] = edgec_q_requant1(t[j], q->m0, q->s0, q->zy, q->lo, q->hi, q->single);
        return;
    }
    edgec_q8_put16(edgec_q8_out16(edgec_q8_rqv8(lo, &q->v, kind), edgec_q8_rqv8(hi, &q->v, kind), &q->v, kind), y,
                   n); /* 0-15 */
}
/* Requantize and store n <= 16 outputs of one channel held in order (a: outputs 0-7, b: 8-15), the bias
   already in the accumulators. */
EDGEC_Q8_INLINE void edgec_q8_store16_seq(__m256i a, __m256i b, const edgec_q8_rq* q, int8_t* restrict y, long n,
                                       int kind)
{
    if (!kind && !q->fast) {
        int32_t t[16];
        _mm256_storeu_si256((__m256i*)(void*)t, a);
        _mm256_storeu_si256((__m256i*)(void*)(t + 8), b);
        for (long j = 0; j < n && j < 16; ++j)
            y[j] = edgec_q_requant1(t[j], q->m0, q->s0, q->zy, q->lo, q->hi, q->single);
        return;
    }
    /* bytes 0-3 8-11 4-7 12-15 */
    edgec_q8_put16(
        _mm_shuffle_epi32(edgec_q8_out16(edgec_q8_rqv8(a, &q->v, kind), edgec_q8_rqv8(b, &q->v, kind), &q->v, kind), 0xD8),
        y, n);
}
#endif

/* One MR x NR tile: sum over k of A(r, k) B(k, j) (ap: K2 pairs of [MR][2] int16, bp: K2 pairs of [NR][2]
   int16), requantized with q[r] and stored as y[r * ldy + j] for r < mr, j < nj. */
EDGEC_Q8_INLINE void edgec_q8_tile(long K2, const int16_t* restrict ap, const int16_t* restrict bp, const edgec_q8_rq* q,
                                 long mr, int8_t* restrict y, long ldy, long nj, int kind)
{
#if EDGEC_Q8_AVX2
    /* the accumulators start from the bias */
    __m256i c00 = q[0].vb, c01 = c00, c10 = q[1].vb, c11 = c10, c20 = q[2].vb, c21 = c20, c30 = q[3].vb, c31 = c30;
    EDGEC_Q8_UNROLL2
    for (long k = 0; k < K2; ++k) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i*)(const void*)(bp + 32 * k));
        const __m256i b1 = _mm256_loadu_si256((const __m256i*)(const void*)(bp + 32 * k + 16));
        /* the (w(k), w(k+1)) pair of row r, broadcast straight from memory (a set1 of a scalar goes through a
           general register) */
#define EDGEC_Q8_BC(r) _mm256_broadcastd_epi32(_mm_loadu_si32((const void*)(ap + 8 * k + 2 * (r))))
        __m256i w = EDGEC_Q8_BC(0);
        c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(w, b0));
        c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(w, b1));
        w = EDGEC_Q8_BC(1);
        c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(w, b0));
        c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(w, b1));
        w = EDGEC_Q8_BC(2);
        c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(w, b0));
        c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(w, b1));
        w = EDGEC_Q8_BC(3);
        c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(w, b0));
        c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(w, b1));
#undef EDGEC_Q8_BC
    }
#define EDGEC_Q8_ROW(r, a, b) edgec_q8_store16_seq(a, b, q + (r), y + (r) * ldy, nj, kind)
    EDGEC_Q8_ROW(0, c00, c01);
    if (mr > 1) EDGEC_Q8_ROW(1, c10, c11);
    if (mr > 2) EDGEC_Q8_ROW(2, c20, c21);
    if (mr > 3) EDGEC_Q8_ROW(3, c30, c31);
#undef EDGEC_Q8_ROW
#else
    (void)kind;
    int32_t t[EDGEC_Q8_MR][EDGEC_Q8_NR];
    for (int r = 0; r < EDGEC_Q8_MR; ++r)
        for (int j = 0; j < EDGEC_Q8_NR; ++j) t[r][j] = 0;
    for (long k = 0; k < K2; ++k) {
        const int16_t* restrict b = bp + 2 * EDGEC_Q8_NR * k;
        for (int r = 0; r < EDGEC_Q8_MR; ++r) {
            const int32_t w0 = ap[2 * EDGEC_Q8_MR * k + 2 * r], w1 = ap[2 * EDGEC_Q8_MR * k + 2 * r + 1];
            for (int j = 0; j < EDGEC_Q8_NR; ++j) t[r][j] += w0 * b[2 * j] + w1 * b[2 * j + 1];
        }
    }
    for (long r = 0; r < mr; ++r) edgec_q8_requant16(t[r], q + r, y + r * ldy, nj);
#endif
}

/* The im2col row offsets of x: koff[k] = c * H * W + kh * dh * W + kw * dw for k = (c, kh, kw) < K (K = C*KH*KW),
   and koff[K] = koff[K - 1] for an odd K (the last pair's second half, read with weight 0). */
static inline void edgec_q8_koff(const edgec_q_conv_params* p, int32_t* restrict koff)
{
    const long K0 = (long)p->c * p->kh * p->kw;
    long k = 0;
    for (long c = 0; c < p->c; ++c)
        for (long kh = 0; kh < p->kh; ++kh)
            for (long kw = 0; kw < p->kw; ++kw)
                koff[k++] = (int32_t)(c * p->h * p->w + kh * p->dh * p->w + kw * p->dw);
    if (K0 & 1) koff[K0] = koff[K0 - 1];
}

/* Packs output pixels [j0, j0 + nj) (nj <= NR) of the im2col matrix of x (one image) into one panel
   bp[K2][NR][2] int16: k pairs adjacent, unused columns and the odd k zero (koff: edgec_q8_koff of p).
   Precondition: every window lies inside x (no pads: edgec_q8_conv_gemm packs a padded convolution from
   zero-point bordered copies of its planes). */
EDGEC_Q8_FN void edgec_q8_pack_panel(const edgec_q_conv_params* p, const int8_t* restrict x, long j0, long nj,
                                int16_t* restrict bp, const int32_t* restrict koff)
{
    const long C = p->c, H = p->h, W = p->w, OW = p->ow, KH = p->kh, KW = p->kw, K0 = C * KH * KW;
    const long K2 = (K0 + 1) / 2, HW = H * W;
    nj = nj < EDGEC_Q8_NR ? nj : EDGEC_Q8_NR; /* (for GCC's bounds analysis: the caller passes nj <= NR) */
    if (KH == 1 && KW == 1 && p->sh == 1 && p->sw == 1 && p->ph == 0 && p->pw == 0 && p->oh == p->h && OW == W) {
        for (long kk = 0; kk < K2; ++kk) { /* pointwise: the input planes are the rows of B */
            const int8_t* restrict x0 = x + 2 * kk * HW + j0;
            const int8_t* restrict x1 = x0 + HW;
            int16_t* restrict d = bp + 2 * EDGEC_Q8_NR * kk;
            const int pair = 2 * kk + 1 < K0;
#if EDGEC_Q8_AVX2
            if (nj == EDGEC_Q8_NR && pair) {
                const __m128i a = _mm_loadu_si128((const __m128i*)(const void*)x0);
                const __m128i b = _mm_loadu_si128((const __m128i*)(const void*)x1);
                _mm256_storeu_si256((__m256i*)(void*)d, _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b)));
                _mm256_storeu_si256((__m256i*)(void*)(d + 16), _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b)));
                continue;
            }
#endif
            for (long j = 0; j < EDGEC_Q8_NR; ++j) {
                d[2 * j] = j < nj ? x0[j] : 0;
                d[2 * j + 1] = j < nj && pair ? x1[j] : 0;
            }
        }
        return;
    }
    const long oh0 = j0 / OW, ow0 = j0 - oh0 * OW, sh = p->sh, sw = p->sw; /* the panel's first pixel */
    if (nj == EDGEC_Q8_NR && ow0 + EDGEC_Q8_NR <= OW) {
        /* the common case: 16 pixels of one output row: strided copies */
        const int8_t* restrict xb = x + oh0 * sh * W + ow0 * sw;
#if EDGEC_Q8_AVX2
        const int wide = (xb - x) + koff[K0 - 1] + 31 < C * HW; /* 32-byte reads stay inside the input */
#endif
        for (long kk = 0; kk < K2; ++kk) {
            const int8_t* restrict a = xb + koff[2 * kk];
            const int8_t* restrict b = xb + koff[2 * kk + 1];
            const int16_t m = 2 * kk + 1 < K0; /* odd K: the last pair's second half is 0 */
            int16_t* restrict d = bp + 2 * EDGEC_Q8_NR * kk;
#if EDGEC_Q8_AVX2
            if (m && sw == 1) { /* 16 bytes of each row, interleaved, widened */
                const __m128i va = _mm_loadu_si128((const __m128i*)(const void*)a);
                const __m128i vb = _mm_loadu_si128((const __m128i*)(const void*)b);
                _mm256_storeu_si256((__m256i*)(void*)d, _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(va, vb)));
                _mm256_storeu_si256((__m256i*)(void*)(d + 16), _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(va, vb)));
                continue;
            }
            if (m && sw == 2 && wide) { /* 32 bytes per row, even ones */
                const __m256i va = _mm256_loadu_si256((const __m256i*)(const void*)a);
                const __m256i vb = _mm256_loadu_si256((const __m256i*)(const void*)b);
                const __m256i ea = _mm256_srai_epi16(_mm256_slli_epi16(va, 8), 8); /* a[2j], j < 16 */
                const __m256i eb = _mm256_srai_epi16(_mm256_slli_epi16(vb, 8), 8);
                const __m256i lo = _mm256_unpacklo_epi16(ea, eb), hi = _mm256_unpackhi_epi16(ea, eb);
                _mm256_storeu_si256((__m256i*)(void*)d, _mm256_permute2x128_si256(lo, hi, 0x20));
                _mm256_storeu_si256((__m256i*)(void*)(d + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
                continue;
            }
#endif
            for (long j = 0; j < EDGEC_Q8_NR; ++j) {
                d[2 * j] = a[j * sw];
                d[2 * j + 1] = (int16_t)(m * b[j * sw]);
            }
        }
        return;
    }
    /* panels across output rows (or the last, partial one): gathers from the pixels' window origins */
    const int8_t* xj[EDGEC_Q8_NR];
    for (long j = 0, oh = oh0, ow = ow0; j < EDGEC_Q8_NR; ++j) {
        xj[j] = j < nj ? x + oh * sh * W + ow * sw : x; /* (past nj: unread) */
        if (++ow == OW) {
            ow = 0;
            ++oh;
        }
    }
    for (long kk = 0; kk < K2; ++kk) {
        const long o0 = koff[2 * kk], o1 = koff[2 * kk + 1];
        const int16_t m = 2 * kk + 1 < K0;
        int16_t* restrict d = bp + 2 * EDGEC_Q8_NR * kk;
        long j = 0;
        for (; j < nj; ++j) {
            d[2 * j] = xj[j][o0];
            d[2 * j + 1] = (int16_t)(m * xj[j][o1]);
        }
        for (; j < EDGEC_Q8_NR; ++j) d[2 * j] = d[2 * j + 1] = 0;
    }
}

/* One-group convolution as GEMM: blocks of up to nb panels of NR output pixels are packed from the input
   (im2col, scratch bp: nb * K2 * NR * 2 int16), then every panel of MR output channels of the compile-time
   packed weights wp (with its requantization parameters, set up once per block) meets each packed panel in
   the register tile. A padded convolution first copies each image into a plane per channel bordered with the
   input zero point (int8, after the panels in the scratch), so that every panel packs by strided copies (16
   pixels of one output row) or by gathers without bounds checks (panels across rows, narrow outputs). */
EDGEC_Q8_FN void edgec_q8_conv_gemm(const edgec_q_conv_params* p, const int8_t* restrict x, const int16_t* restrict wp,
                                   const int32_t* restrict bias, const int32_t* restrict mult,
                                   const int32_t* restrict shift, int8_t* restrict y, int16_t* restrict bp, long nb,
                                   int rqflags)
{
    const int tiefree = rqflags & 1, kind = EDGEC_Q8_AVX2 ? rqflags >> 1 : 0;
    const long C = p->c, M = p->m, P = (long)p->oh * p->ow, K2 = ((long)C * p->kh * p->kw + 1) / 2;
    const long PS = 2 * EDGEC_Q8_NR * K2; /* int16 per packed panel */
    const long H = p->h, W = p->w, ph = p->ph, pw = p->pw;
    /* the rows and columns the windows span (beyond H, W: the implicit end pads) */
    const long HR = ((long)p->oh - 1) * p->sh + ((long)p->kh - 1) * p->dh + 1;
    const long WR = ((long)p->ow - 1) * p->sw + ((long)p->kw - 1) * p->dw + 1;
    const int pad = ph > 0 || pw > 0 || HR > H || WR > W;
    const long HP = HR + 1; /* a row of slack: the stride-2 packing reads 32 bytes for 31 */
    int32_t* restrict koff = (int32_t*)(void*)bp; /* the im2col offsets, then the panels */
    bp += 4 * K2;
    int8_t* restrict xp = (int8_t*)(void*)(bp + nb * PS);
    edgec_q_conv_params pp = *p; /* the convolution of the padded planes: no pads */
    if (pad) {
        pp.h = (int32_t)HP;
        pp.w = (int32_t)WR;
        pp.ph = pp.pw = 0;
        memset(xp, p->x_zp, (size_t)(C * HP * WR)); /* the borders, once: the images overwrite the same spans */
    }
    edgec_q8_koff(pad ? &pp : p, koff);
    const long lw = pw < WR ? pw : WR, cw = W < WR - lw ? W : WR - lw; /* image columns at [lw, lw + cw) */
    for (long n = 0; n < p->n; ++n) {
        const int8_t* xn = x + n * C * H * W;
        int8_t* restrict yn = y + n * M * P;
        if (pad) {
            for (long c = 0; c < C; ++c)
                for (long ih = 0; ih < H && ih + ph < HP; ++ih)
                    memcpy(xp + (c * HP + ih + ph) * WR + lw, xn + (c * H + ih) * W, (size_t)cw);
            xn = xp;
        }
        for (long b0 = 0; b0 < P; b0 += nb * EDGEC_Q8_NR) {
            const long b1 = b0 + nb * EDGEC_Q8_NR < P ? b0 + nb * EDGEC_Q8_NR : P;
            for (long j0 = b0; j0 < b1; j0 += EDGEC_Q8_NR)
                if (pad) /* two calls: the unpadded one keeps the layer's constant parameters (inlined) */
                    edgec_q8_pack_panel(&pp, xn, j0, b1 - j0 < EDGEC_Q8_NR ? b1 - j0 : EDGEC_Q8_NR,
                                        bp + (j0 - b0) / EDGEC_Q8_NR * PS, koff);
                else
                    edgec_q8_pack_panel(p, xn, j0, b1 - j0 < EDGEC_Q8_NR ? b1 - j0 : EDGEC_Q8_NR,
                                        bp + (j0 - b0) / EDGEC_Q8_NR * PS, koff);
            for (long m0 = 0; m0 < M; m0 += EDGEC_Q8_MR) {
                const long mr = M - m0 < EDGEC_Q8_MR ? M - m0 : EDGEC_Q8_MR;
                edgec_q8_rq q[EDGEC_Q8_MR];
                for (long r = 0; r < EDGEC_Q8_MR; ++r) {
                    const long m = m0 + (r < mr ? r : 0), c = p->per_channel ? m : 0;
                    q[r] = edgec_q8_rq_make(bias[m], mult[c], shift[c], p->y_zp, p->qmin, p->qmax, p->single, tiefree);
                }
                const int16_t* restrict ap = wp + 2 * EDGEC_Q8_MR * K2 * (m0 / EDGEC_Q8_MR);
                const int16_t* restrict bj = bp;
                int8_t* restrict yj = yn + m0 * P + b0;
                long j0 = b0;
                for (; j0 + EDGEC_Q8_NR <= b1; j0 += EDGEC_Q8_NR, bj += PS, yj += EDGEC_Q8_NR) /* whole panels */
                    edgec_q8_tile(K2, ap, bj, q, mr, yj, P, EDGEC_Q8_NR, kind);
                if (j0 < b1) edgec_q8_tile(K2, ap, bj, q, mr, yj, P, b1 - j0, kind);
            }
        }
    }
}

/* 16 outputs of a depthwise 3x3 channel: output j reads rp[kh * pitch + j * s + {0, 1, 2}] (kh < 3), an
   int16 plane padded with the input zero point; y: n <= 16 requantized outputs. */
static inline void edgec_q8_dw16(const int16_t* restrict rp, long pitch, long s, const int8_t* restrict wc,
                                 const edgec_q8_rq* q, int8_t* restrict y, long n, int kind)
{
#if EDGEC_Q8_AVX2
    __m256i a = _mm256_setzero_si256(), b = a;
    for (int kh = 0; kh < 3; ++kh) {
        /* taps (kh, 0) and (kh, 1) are the adjacent pair at j * s, tap (kh, 2) the pair at j * s + 2 (weight 0 on
           its second half) */
        const __m256i w01 = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)wc[3 * kh + 1] << 16) |
                                                        (uint32_t)(uint16_t)wc[3 * kh]));
        const __m256i w2 = _mm256_set1_epi32((int32_t)(uint32_t)(uint16_t)wc[3 * kh + 2]);
        const int16_t* restrict r = rp + kh * pitch;
#define EDGEC_Q8_LD(off) _mm256_loadu_si256((const __m256i*)(const void*)(r + (off)))
        if (s == 1) { /* a: even outputs 0, 2, .., 14; b: odd ones */
            a = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_madd_epi16(EDGEC_Q8_LD(0), w01),
                                                     _mm256_madd_epi16(EDGEC_Q8_LD(2), w2)));
            b = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_madd_epi16(EDGEC_Q8_LD(1), w01),
                                                     _mm256_madd_epi16(EDGEC_Q8_LD(3), w2)));
        } else { /* s == 2: a: outputs 0-7, b: 8-15 */
            a = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_madd_epi16(EDGEC_Q8_LD(0), w01),
                                                     _mm256_madd_epi16(EDGEC_Q8_LD(2), w2)));
            b = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_madd_epi16(EDGEC_Q8_LD(16), w01),
                                                     _mm256_madd_epi16(EDGEC_Q8_LD(18), w2)));
        }
#undef EDGEC_Q8_LD
    }
    if (s == 1) /* interleave even and odd: outputs {0-3, 8-11} and {4-7, 12-15} */
        edgec_q8_store16(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b), q, y, n, kind);
    else
        edgec_q8_store16(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31), q, y, n, kind);
#else
    (void)kind;
    int32_t t[16];
    for (long j = 0; j < 16; ++j) {
        const int16_t* restrict r = rp + j * s;
        int32_t acc = 0;
        for (int kh = 0; kh < 3; ++kh)
            acc += wc[3 * kh] * r[kh * pitch] + wc[3 * kh + 1] * r[kh * pitch + 1] + wc[3 * kh + 2] * r[kh * pitch + 2];
        t[j] = acc;
    }
    edgec_q8_requant16(t, q, y, n);
#endif
}

/* Copies the input plane xc (H x W) into rows [ph, ph + H) and columns [pw, pw + W) of buf (rows x pitch wb):
   the borders, written with the zero point once per layer, stay as they are. */
static inline void edgec_q8_copy_plane(const int8_t* restrict xc, long H, long W, long ph, long pw, long rows, long wb,
                                       int16_t* restrict buf)
{
    const long h1 = H < rows - ph ? H : rows - ph, w1 = W < wb - pw ? W : wb - pw;
    for (long ih = 0; ih < h1; ++ih) {
        int16_t* restrict br = buf + (ih + ph) * wb + pw;
        const int8_t* restrict xr = xc + ih * W;
        long iw = 0;
#if EDGEC_Q8_AVX2
        for (; iw + 16 <= w1; iw += 16)
            _mm256_storeu_si256((__m256i*)(void*)(br + iw),
                                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(const void*)(xr + iw))));
#endif
        for (; iw < w1; ++iw) br[iw] = xr[iw];
    }
}

/* dst[0, n) = src[0, n) for short rows (a libc memcpy call per row costs more than the copy). */
static inline void edgec_q8_copy_row(int8_t* restrict dst, const int8_t* restrict src, long n)
{
    long i = 0;
    for (; i + 8 <= n; i += 8) memcpy(dst + i, src + i, 8);
    for (; i < n; ++i) dst[i] = src[i];
}

/* Depthwise 3x3 (one input channel per output channel, dilation 1, stride s = 1 or 2 in both directions) over
   one int16 plane per channel padded with the input zero point (scratch buf). Stride 1: the plane has pitch
   OW + 2 and the outputs are computed over the flattened plane (output (oh, ow) at flat index
   oh * (OW + 2) + ow; the two columns between rows are computed and dropped), requantized into the int8 tail
   of buf and gathered; stride 2: row by row, 16 outputs at a time. */
EDGEC_Q8_FN void edgec_q8_dw3x3(const edgec_q_conv_params* p, const int8_t* restrict x, const int8_t* restrict w,
                               const int32_t* restrict bias, const int32_t* restrict mult,
                               const int32_t* restrict shift, int8_t* restrict y, int16_t* restrict buf, int rqflags)
{
    const int tiefree = rqflags & 1, kind = EDGEC_Q8_AVX2 ? rqflags >> 1 : 0;
    const long C = p->c, H = p->h, W = p->w, OH = p->oh, OW = p->ow, s = p->sh, P = OH * OW;
    const long Wp = OW + 2, L = (OH - 1) * Wp + OW, LP = (L + 15) / 16 * 16; /* stride 1 */
    const long WB = s * ((OW + 15) / 16 * 16) + 4, Hp = (OH - 1) * s + 3;   /* stride 2 */
    const long rows = (LP + 2 * Wp + 4 + Wp - 1) / Wp; /* stride 1: whole rows covering every read */
    const int16_t zx = (int16_t)p->x_zp;
    int8_t* restrict flat = (int8_t*)(void*)(buf + rows * Wp);
    const long nplane = s == 1 ? rows * Wp : Hp * WB;
    for (long i = 0; i < nplane; ++i) buf[i] = zx; /* the padding, once */
    for (long n = 0; n < p->n; ++n) {
        for (long c = 0; c < C; ++c) {
            const int8_t* restrict xc = x + (n * C + c) * H * W;
            const int8_t* restrict wc = w + 9 * c;
            const long k = p->per_channel ? c : 0;
            const edgec_q8_rq q = edgec_q8_rq_make(bias[c], mult[k], shift[k], p->y_zp, p->qmin, p->qmax, p->single,
                                                     tiefree);
            int8_t* restrict yc = y + (n * C + c) * P;
            if (s == 1) {
                edgec_q8_copy_plane(xc, H, W, p->ph, p->pw, rows, Wp, buf);
                for (long t0 = 0; t0 < L; t0 += 16)
                    edgec_q8_dw16(buf + t0, Wp, 1, wc, &q, flat + t0, 16, kind);
                for (long oh = 0; oh < OH; ++oh) edgec_q8_copy_row(yc + oh * OW, flat + oh * Wp, OW);
            } else {
                edgec_q8_copy_plane(xc, H, W, p->ph, p->pw, Hp, WB, buf);
                for (long oh = 0; oh < OH; ++oh)
                    for (long o0 = 0; o0 < OW; o0 += 16)
                        edgec_q8_dw16(buf + oh * s * WB + o0 * s, WB, s, wc, &q, yc + oh * OW + o0,
                                      OW - o0 < 16 ? OW - o0 : 16, kind);
            }
        }
    }
}

#if EDGEC_Q8_AVX2
/* One input's stage of edgec_q8_add before its rounding divide: SRDHM((x + o) << left_shift, m) of 8 int8 x as
   (x + o) * mh + (((x + o) * ml + rnd) >> d) (m = mh 2^d + ml, rnd = 2^(d-1), d = 31 - left_shift). */
static inline __m256i edgec_q8_add_in(__m128i x, __m256i o, __m256i mh, __m256i ml, __m256i rnd, __m128i d)
{
    const __m256i v = _mm256_add_epi32(_mm256_cvtepi8_epi32(x), o);
    return _mm256_add_epi32(_mm256_mullo_epi32(v, mh), _mm256_sra_epi32(_mm256_add_epi32(_mm256_mullo_epi32(v, ml), rnd), d));
}
#endif

/* Elementwise Add/Sub of same-shaped int8 tensors (TFLite parameters; a, b and y may alias): in the case
   edgec_q_add_s8 runs branch-free (no saturation), 16 elements at a time with AVX2; everything else, and the
   portable build, by edgec_q_add_s8. */
EDGEC_Q8_FN void edgec_q8_add(const edgec_q_add_params* p, const int8_t* a, const int8_t* b, int8_t* y)
{
    long i = 0;
#if EDGEC_Q8_AVX2
    if (!p->single && p->s1 <= 0 && p->s2 <= 0 && p->so <= 0 && p->s1 >= -31 && p->s2 >= -31 && p->so >= -31 &&
        p->left_shift >= 9 && p->left_shift <= 22 && p->m1 >= 0 && p->m2 >= 0 && p->mo >= 0) {
        /* the inputs' stage exactly in 32 bits: with |v| < 2^9 and d = 31 - left_shift in [9, 22] (both products
           below 2^31), SRDHM(v << left_shift, m) = floor((v * m + 2^(d-1)) / 2^d)
           = v * (m >> d) + ((v * (m mod 2^d) + 2^(d-1)) >> d) */
        const int d = 31 - p->left_shift;
        const __m256i o1 = _mm256_set1_epi32(p->in1_offset), o2 = _mm256_set1_epi32(p->in2_offset);
        const __m256i m1h = _mm256_set1_epi32(p->m1 >> d), m1l = _mm256_set1_epi32(p->m1 & ((1 << d) - 1));
        const __m256i m2h = _mm256_set1_epi32(p->m2 >> d), m2l = _mm256_set1_epi32(p->m2 & ((1 << d) - 1));
        const __m256i rnd = _mm256_set1_epi32(1 << (d - 1)), mo = _mm256_set1_epi32(p->mo);
        const __m128i dv = _mm_cvtsi32_si128(d);
        const __m256i e1 = _mm256_set1_epi32(-p->s1), e2 = _mm256_set1_epi32(-p->s2), eo = _mm256_set1_epi32(-p->so);
        const int32_t k1 = (int32_t)(((uint32_t)1 << -p->s1) - 1u), k2 = (int32_t)(((uint32_t)1 << -p->s2) - 1u);
        const int32_t ko = (int32_t)(((uint32_t)1 << -p->so) - 1u);
        const __m256i mk1 = _mm256_set1_epi32(k1), h1 = _mm256_set1_epi32(k1 >> 1);
        const __m256i mk2 = _mm256_set1_epi32(k2), h2 = _mm256_set1_epi32(k2 >> 1);
        const __m256i mko = _mm256_set1_epi32(ko), ho = _mm256_set1_epi32(ko >> 1);
        const __m256i oo = _mm256_set1_epi16((int16_t)p->out_offset);
        const __m128i lo = _mm_set1_epi8((char)p->qmin), hi = _mm_set1_epi8((char)p->qmax);
        const int clamp = p->qmin > -128 || p->qmax < 127;
        for (; i + 16 <= p->size; i += 16) {
            const __m128i va = _mm_loadu_si128((const __m128i*)(const void*)(a + i));
            const __m128i vb = _mm_loadu_si128((const __m128i*)(const void*)(b + i));
            __m256i r[2];
            for (int h = 0; h < 2; ++h) { /* elements 0-7, then 8-15 */
                const __m128i ha = h ? _mm_srli_si128(va, 8) : va, hb = h ? _mm_srli_si128(vb, 8) : vb;
                __m256i sa = edgec_q8_add_in(ha, o1, m1h, m1l, rnd, dv);
                __m256i sb = edgec_q8_add_in(hb, o2, m2h, m2l, rnd, dv);
                if (p->s1) sa = edgec_q8_rdbpot8(sa, e1, mk1, h1);
                if (p->s2) sb = edgec_q8_rdbpot8(sb, e2, mk2, h2);
                const __m256i raw = p->sub ? _mm256_sub_epi32(sa, sb) : _mm256_add_epi32(sa, sb);
                r[h] = edgec_q8_rdbpot8(edgec_q8_srdhm8(raw, mo, mo), eo, mko, ho);
            }
            /* + out_offset on int16 lanes with saturation, as edgec_q8_out16: elements 0-3 8-11 | 4-7 12-15 */
            const __m256i w = _mm256_adds_epi16(_mm256_packs_epi32(r[0], r[1]), oo);
            __m128i q = _mm_shuffle_epi32(_mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)), 0xD8);
            if (clamp) q = _mm_min_epi8(_mm_max_epi8(q, lo), hi);
            _mm_storeu_si128((__m128i*)(void*)(y + i), q);
        }
    }
#endif
    if (i < p->size) {
        edgec_q_add_params rest = *p;
        rest.size = (int32_t)(p->size - i);
        (void)edgec_q_add_s8(&rest, a + i, b + i, y + i);
    }
}
"""

#: The float -> int8 boundary (float arithmetic: its own helper, apart from the integer-only kernels).
_QUANT = """\
/* QuantizeLinear of n floats to int8 at the float boundary: y[i] = saturate(round_half_even(x[i] / s) + zp) (a NaN
   quotient gives -128), 32 at a time with AVX2 and otherwise with the generic kernel's formula. */
EDGEC_Q8_FN void edgec_q8_quantize(const float* restrict x, int8_t* restrict y, long n, float s, int32_t zp)
{
#if EDGEC_Q8_AVX2
    const long nv = n / 32 * 32; /* (the tail's start apart from the loop: GCC's loop analysis) */
    const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-256.0f), hi = _mm256_set1_ps(256.0f);
    const __m256i vz = _mm256_set1_epi32(zp), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (long i = 0; i < nv; i += 32) {
        __m256i v[4];
        for (int h = 0; h < 4; ++h) {
            /* the quotient clamped to [-256, 256] (max first: a NaN becomes -256) rounds like rintf in the default
               rounding mode; past +-256 the int8 saturation of the packs is reached anyway */
            const __m256 q = _mm256_div_ps(_mm256_loadu_ps(x + i + 8 * h), vs);
            v[h] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(q, lo), hi)), vz);
        }
        const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
        _mm256_storeu_si256((__m256i*)(void*)(y + i), _mm256_permutevar8x32_epi32(w, order));
    }
#else
    const long nv = 0;
#endif
    for (long i = nv; i < n; ++i) {
        const float r = rintf(x[i] / s) + (float)zp;
        y[i] = (int8_t)(r >= 127.0f ? 127 : (r > -128.0f ? r : -128));
    }
}
"""

K.HELPERS["q8_simd"] = _SIMD
K.HELPERS["q8_fast"] = _HELPER
K.HELPER_DEPS["q8_fast"] = ("q_common", "q_kernels", "q8_simd")  # falls back to the generic kernels (edgec_q_add_s8)
K.HELPERS["q8_quant"] = _QUANT
K.HELPER_DEPS["q8_quant"] = ("q8_simd",)


def pack_weights_pairs(w: np.ndarray) -> np.ndarray:
    """[M, C, KH, KW] int8 -> ``[ceil(M/MR)][ceil(K/2)][MR][2]`` int16 (K = C*KH*KW; zero-padded rows and k)."""
    m = int(w.shape[0])
    k0 = int(np.prod(w.shape[1:]))
    mp, k2 = -(-m // MR) * MR, -(-k0 // 2)
    a = np.zeros((mp, 2 * k2), np.int16)
    a[:m, :k0] = np.asarray(w, np.int64).reshape(m, k0)
    return np.ascontiguousarray(a.reshape(mp // MR, MR, k2, 2).transpose(0, 2, 1, 3).reshape(-1))


def _packed_int16(k: KernelContext, base: Value) -> Value:
    """The packed-pairs copy of the constant weight ``base`` (cached: layers sharing a weight share it)."""
    cache = k.__dict__.setdefault("_q8_packed", {})
    if id(base) not in cache:
        arr = pack_weights_pairs(np.asarray(base.const.numpy()))
        cache[id(base)] = (base, Value(f"{base.name}_q8pairs", TensorType(DType.INT16, Shape((arr.size,))),
                                       ArrayTensor(arr)))
    return cache[id(base)][1]


def fast_add(code: K.NodeCode) -> K.NodeCode:
    """An inline-CPU same-shape ``edgec.QAdd`` (``code`` from the generic generator) through ``edgec_q8_add``."""
    call = "(void)edgec_q_add_s8(&p, "
    assert call in code.body, code.body
    code.body = code.body.replace(call, "edgec_q8_add(&p, ")
    code.helpers = ["q8_fast"]
    return code


def fast_quantize(x: Value, n: int, scale: float, zp: int) -> K.NodeCode:
    """A float -> int8 ``QuantizeLinear`` of ``n`` elements through ``edgec_q8_quantize``."""
    code = K.NodeCode([x], f"    edgec_q8_quantize(x0, y0, {n}, {K.flit(scale)}, {zp});\n", ["q8_quant"], typed=True,
                      inplace=False)
    code.report = {"placement": "cpu", "source_op": "QuantizeLinear", "fused": []}  # type: ignore[attr-defined]
    return code


def _int16_scratch(code: K.NodeCode) -> K.NodeCode:
    """The layer's scratch pointer ``s0`` as ``int16_t*`` (the emitter's default is ``float*``)."""
    code.scratch_ctype = "int16_t"  # type: ignore[attr-defined]
    return code


def _dw_scratch(f: Dict[str, int]) -> int:
    """Bytes of working memory of ``edgec_q8_dw3x3`` (the same sizes as its C)."""
    oh, ow, s = f["oh"], f["ow"], f["sh"]
    if s == 1:
        wp = ow + 2
        lp = -(-((oh - 1) * wp + ow) // 16) * 16
        rows = -(-(lp + 2 * wp + 4) // wp)
        return 2 * rows * wp + lp  # the plane, then the flat int8 outputs
    return 2 * ((oh - 1) * s + 3) * (s * (-(-ow // 16) * 16) + 4)


def first_tie(m0: int, e: int) -> int:
    """The smallest a >= 1 with a * m0 + 2^30 + 2^(30+e) a multiple of 2^(31+e) (m0 > 0, e >= 1): where the
    tie-free requantization's single rounding of |acc| could differ from gemmlowp's double rounding of a
    negative acc = -a. Solves the congruence a * m0 = -(2^30 + 2^(30+e)) mod 2^(31+e)."""
    mod = 1 << (31 + e)
    target = -((1 << 30) + (1 << (30 + e))) % mod
    v = (m0 & -m0).bit_length() - 1  # 2^v divides m0
    if target % (1 << v):
        return mod  # no solution below the modulus (none at all)
    modv = mod >> v
    a = (target >> v) * pow(m0 >> v, -1, modv) % modv
    return a or modv


def tie_free(node: Node, f: Dict[str, int]) -> bool:
    """Whether the layer's fast kernels may requantize with one rounding of the magnitude (``tiefree`` in the
    C): double rounding, every shift e in [1, 31], and for every output channel the bound |bias| + 128 *
    sum|w| of its accumulators (< 2^31) below :func:`first_tie`. Equal to gemmlowp's double rounding for
    every accumulator the layer can produce (tests/c/test_int8_c_fast.py checks it exhaustively)."""
    if f["single"] or f["acc64"] or not all(node.input(i).is_constant() for i in range(1, 5)):
        return False
    w = np.asarray(node.input(1).const.numpy(), np.int64)
    bias = np.asarray(node.input(2).const.numpy(), np.int64).reshape(-1)
    mult = np.asarray(node.input(3).const.numpy(), np.int64).reshape(-1)
    shift = np.asarray(node.input(4).const.numpy(), np.int64).reshape(-1)
    bound = np.abs(bias) + 128 * np.abs(w.reshape(w.shape[0], -1)).sum(axis=1)
    if bound.max(initial=0) >= 2 ** 31:
        return False
    for m in range(w.shape[0]):
        m0, e = int(mult[m if mult.size > 1 else 0]), -int(shift[m if shift.size > 1 else 0])
        if m0 <= 0 or not 1 <= e <= 31 or first_tie(m0, e) <= int(bound[m]):
            return False
    return True


def requant_flags(node: Node, f: Dict[str, int]) -> int:
    """The ``rqflags`` argument of the fast kernels: bit 0 :func:`tie_free`; bits 1-2 the requantization every
    output channel of the layer takes on vectors when it is the same for all and the clamp is all of int8
    (1: the tie-free single rounding of the magnitude, 2: single rounding; 0: chosen per channel at run
    time), so that the kernels' clones have no branch on it."""
    tf = tie_free(node, f)
    if f["acc64"] or f["qmin"] > -128 or f["qmax"] < 127 or not all(node.input(i).is_constant() for i in (3, 4)):
        return int(tf)
    shift = np.asarray(node.input(4).const.numpy(), np.int64).reshape(-1)
    if f["single"]:
        kind = 2 if bool(np.all((shift <= 0) & (shift >= -31))) else 0
    else:
        kind = 1 if tf else 0  # tie_free: every M0 > 0 and e in [1, 31]
    return int(tf) | kind << 1


def _gemm_pays(f: Dict[str, int]) -> bool:
    """Whether the pixel-panel GEMM beats the generic kernel (measured on the benchmark models): not on tiny
    planes, where a 16-pixel panel is mostly padding and a full convolution's im2col is all border."""
    pixels = f["oh"] * f["ow"]
    pointwise = f["kh"] == f["kw"] == 1 and f["sh"] == f["sw"] == 1 and f["ph"] == f["pw"] == 0
    return pixels >= NR // 2 and (pointwise or pixels > NR)


def fast_conv(node: Node, k: KernelContext, f: Dict[str, int]) -> Optional[K.NodeCode]:
    """The fast kernel call of an inline-CPU ``edgec.QConv`` with the conv parameters ``f``, or None when no
    fast kernel takes it (int64 accumulation, runtime weights, grouped non-depthwise layers, tiny planes)."""
    if f["acc64"] or not node.input(1).is_constant():
        return None
    from .kernels_int8_small import small_conv, small_depthwise  # here: its helper registers after q8_fast

    small = small_conv(node, k, f) or small_depthwise(node, k, f)  # channels on the lanes: small planes
    if small is not None:
        return small
    init = "{" + ", ".join(f".{n} = {int(v)}" for n, v in f.items()) + "}"
    head = f"    static const edgec_q_conv_params p = {init};\n"
    if f["groups"] == 1 and _gemm_pays(f):
        k2 = (f["c"] * f["kh"] * f["kw"] + 1) // 2
        ops = list(node.inputs)
        ops[1] = _packed_int16(k, node.input(1))
        panels = -(-f["oh"] * f["ow"] // NR)
        nb = max(1, min(panels, GEMM_BLOCK_INT16 // (2 * NR * k2)))  # packed panels per block
        body = head + f"    edgec_q8_conv_gemm(&p, x0, x1, x2, x3, x4, y0, s0, {nb}, {requant_flags(node, f)});\n"
        # then, for a padded convolution, its zero-point bordered int8 planes (the same sizes as the C)
        hr = (f["oh"] - 1) * f["sh"] + (f["kh"] - 1) * f["dh"] + 1
        wr = (f["ow"] - 1) * f["sw"] + (f["kw"] - 1) * f["dw"] + 1
        pad = f["ph"] > 0 or f["pw"] > 0 or hr > f["h"] or wr > f["w"]
        planes = f["c"] * (hr + 1) * wr if pad else 0
        return _int16_scratch(K.NodeCode(ops, body, ["q8_fast"], typed=True,
                                         scratch=4 * 2 * k2 + 2 * 2 * NR * k2 * nb + planes))  # offsets, panels
    dw3 = (f["groups"] == f["c"] == f["m"] and f["kh"] == f["kw"] == 3 and f["dh"] == f["dw"] == 1
           and f["sh"] == f["sw"] and f["sh"] in (1, 2))
    if dw3:
        body = head + f"    edgec_q8_dw3x3(&p, x0, x1, x2, x3, x4, y0, s0, {requant_flags(node, f)});\n"
        return _int16_scratch(K.NodeCode(list(node.inputs), body, ["q8_fast"], typed=True, scratch=_dw_scratch(f)))
    return None
