"""Narrow element types of the C target: storage ABI, C conversion helpers, bit patterns.

The C target has no half, bfloat16, float8 or sub-byte arithmetic. It *stores* those tensors
unpacked, with the memory layout numpy / ml_dtypes use for one element:

* float16, bfloat16: the 16-bit pattern in a ``uint16_t``;
* float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0), float4e2m1: the bit pattern in a ``uint8_t``;
* int4, uint4, int2, uint2: one element per ``uint8_t``, the two's complement bits in the low bits
  and the upper bits zero, exactly as ml_dtypes holds them (ml_dtypes' int4 -1 is the byte 0x0F,
  not 0xFF); readers ignore the upper bits, so a sign-extended byte reads the same.

Computation happens in float32 / int32 (:mod:`.legalize_types`); the conversions are the C helpers
here (registered in :data:`kernels.HELPERS`, emitted only when used), which the Cast kernel calls.
They follow what the ONNX reference does (ml_dtypes / ``onnx.numpy_helper``): round to nearest
even, ``saturate`` for float8, no negative zero and NaN = 0x80 for the fnuz types, e8m0's
``round_mode``, and float -> int4/int2 conversion by truncation and wrap-around as ml_dtypes does.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ...ir.dtypes import DType
from . import kernels as K

__all__ = ["NARROW", "NARROW_FLOATS", "NARROW_INTS", "FLOAT_FORMATS", "INT_FORMATS", "storage_ctype",
           "bit_patterns", "decode_expr", "encode_expr", "helpers_for"]

#: Narrow float formats: (exponent bits, mantissa bits, exponent bias, kind). Kinds: 0 IEEE-like
#: (inf and NaN at the top exponent), 1 "fn" (no inf, S.1111.111 is NaN), 2 "fnuz" (no inf, no
#: negative zero, 0x80 is NaN), 3 no inf and no NaN (float4e2m1: saturates).
FLOAT_FORMATS: Dict[DType, Tuple[int, int, int, int]] = {
    DType.FLOAT16: (5, 10, 15, 0),
    DType.BFLOAT16: (8, 7, 127, 0),
    DType.FLOAT8E4M3FN: (4, 3, 7, 1),
    DType.FLOAT8E4M3FNUZ: (4, 3, 8, 2),
    DType.FLOAT8E5M2: (5, 2, 15, 0),
    DType.FLOAT8E5M2FNUZ: (5, 2, 16, 2),
    DType.FLOAT4E2M1: (2, 1, 1, 3),
}
#: Sub-byte integer formats: (bits, signed).
INT_FORMATS: Dict[DType, Tuple[int, bool]] = {DType.INT4: (4, True), DType.UINT4: (4, False),
                                              DType.INT2: (2, True), DType.UINT2: (2, False)}
#: The float8 types Cast's ``saturate`` attribute applies to.
SATURATING = frozenset({DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ,
                        DType.FLOAT8E8M0})
NARROW_FLOATS = frozenset(FLOAT_FORMATS) | {DType.FLOAT8E8M0}
NARROW_INTS = frozenset(INT_FORMATS)
NARROW = NARROW_FLOATS | NARROW_INTS


def storage_ctype(d: DType) -> str:
    """The C type that holds one element of narrow type ``d`` (its bit pattern)."""
    return "uint16_t" if d in (DType.FLOAT16, DType.BFLOAT16) else "uint8_t"


def abi_note(d: DType) -> str:
    """How one element of narrow type ``d`` is stored (for the generated header's comments)."""
    if d in INT_FORMATS:
        return f"one element per byte: {INT_FORMATS[d][0]}-bit two's complement in the low bits, upper bits 0" \
            if INT_FORMATS[d][1] else f"one element per byte: the value in the low {INT_FORMATS[d][0]} bits"
    return f"{d.name.lower()} bit patterns in {storage_ctype(d)}, as ml_dtypes stores them"


def bit_patterns(arr: np.ndarray, d: DType) -> np.ndarray:
    """The stored bit patterns (``uint16``/``uint8``) of the values ``arr`` of narrow type ``d``."""
    a = np.asarray(arr)
    if d in INT_FORMATS:  # two's complement in the low bits, upper bits zero (ml_dtypes' layout)
        bits, _ = INT_FORMATS[d]
        return (a.astype(d.numpy).astype(np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    a = a.astype(d.numpy)
    return a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint8)


# --- C helpers ----------------------------------------------------------------------------------------

_NF_DEC = """\
/* Narrow float bit pattern -> float (exact). eb/mb: exponent/mantissa bits; kind: 0 IEEE-like (inf
   and NaN at the top exponent), 1 fn (no inf, S.1111.111 is NaN), 2 fnuz (0x80 is NaN, no -0),
   3 no inf/NaN (float4e2m1). */
static float edgec_nf_dec(uint32_t b, int eb, int mb, int bias, int kind)
{
    const uint32_t sign = (b >> (eb + mb)) & 1u;
    const uint32_t e = (b >> mb) & ((1u << eb) - 1u), m = b & ((1u << mb) - 1u), top = (1u << eb) - 1u;
    float v;
    if (kind == 2 && sign && e == 0u && m == 0u) return NAN;
    if (kind == 0 && e == top) v = m ? NAN : INFINITY;
    else if (kind == 1 && e == top && m == (1u << mb) - 1u) v = NAN;
    else if (e == 0u) v = ldexpf((float)m, 1 - bias - mb);
    else v = ldexpf((float)(m | (1u << mb)), (int)e - bias - mb);
    return sign ? -v : v;
}
"""

_D2F = """\
/* double -> float32 with IEEE overflow (inf beyond the rounding range) and no undefined behaviour. */
static float edgec_d2f(double x)
{
    if (!(fabs(x) > 0x1.fffffep+127)) return (float)x; /* in range, or NaN */
    if (fabs(x) < 0x1.ffffffp+127) return x < 0 ? -0x1.fffffep+127f : 0x1.fffffep+127f;
    return x < 0 ? -INFINITY : INFINITY;
}
"""

_NF_ENC = """\
/* double -> narrow float bit pattern, rounded to nearest even (a double holds every float32 and
   float64 input exactly, so this is a single rounding). Overflow: the largest finite value when
   sat != 0 or the type has neither inf nor NaN, else inf (kind 0) or NaN. NaN of float4e2m1 (no NaN)
   becomes a zero with the sign flipped, as ml_dtypes converts it. via_float: round to float32 first
   (ml_dtypes converts a double to its types through float32). */
static uint32_t edgec_nf_enc(double x, int eb, int mb, int bias, int kind, int sat, int via_float)
{
    if (via_float) x = (double)edgec_d2f(x);
    const uint32_t sbit = 1u << (eb + mb), top = (1u << eb) - 1u, mmask = (1u << mb) - 1u;
    const uint32_t maxb = kind == 0 ? ((top - 1u) << mb) | mmask : kind == 1 ? (top << mb) | (mmask - 1u)
                                                                             : (top << mb) | mmask;
    const uint32_t nanb = kind == 0 ? (top << mb) | (1u << (mb - 1)) : kind == 1 ? (top << mb) | mmask : 0u;
    const uint32_t s = signbit(x) ? sbit : 0u;
    uint32_t r;
    if (isnan(x)) return kind == 3 ? (s ^ sbit) : kind == 2 ? sbit : (s | nanb);
    if (isinf(x)) {
        r = maxb + 1u;
    } else if (x == 0.0) {
        r = 0u;
    } else {
        const double a = fabs(x);
        int e;
        (void)frexp(a, &e);
        e -= 1; /* a in [2^e, 2^(e+1)) */
        if (e < 1 - bias) e = 1 - bias; /* subnormal range: fixed quantum */
        const double m = ldexp(a, mb - e); /* the significand in units of the last place, < 2^(mb+1) */
        double q = floor(m);
        const double fr = m - q;
        if (fr > 0.5 || (fr == 0.5 && fmod(q, 2.0) != 0.0)) q += 1.0;
        uint32_t qi = (uint32_t)q;
        if (qi >= (2u << mb)) { /* rounding carried into the next binade */
            qi >>= 1;
            e += 1;
        }
        if (qi < (1u << mb)) r = qi; /* subnormal or zero */
        else if (e + bias > (int)top + 1) r = maxb + 1u;
        else r = ((uint32_t)(e + bias) << mb) | (qi - (1u << mb));
    }
    if (r > maxb) {
        if (sat || kind == 3) r = maxb;
        else if (kind == 0) r = top << mb;
        else return kind == 2 ? sbit : (s | nanb);
    }
    if (kind == 2 && r == 0u) return 0u;
    return s | r;
}
"""

_E8M0_DEC = """\
/* float8e8m0 (a power of two, 0xFF is NaN) -> float. */
static float edgec_e8m0_dec(uint32_t b)
{
    return b == 0xFFu ? NAN : ldexpf(1.0f, (int)b - 127);
}
"""

_E8M0_ENC = """\
/* float -> float8e8m0 as onnx.numpy_helper.to_float8e8m0: the float32 exponent, rounded by mode
   (0 up, 1 down, 2 nearest); inf and NaN give 0xFF; sat keeps 0xFE from rounding up to 0xFF. */
static uint32_t edgec_e8m0_enc(double x, int sat, int mode)
{
    union { float f; uint32_t u; } c;
    c.f = edgec_d2f(x);
    const uint32_t f = c.u, e = (f >> 23) & 0xFFu;
    uint32_t up = 0u;
    if (e == 0xFFu) return 0xFFu;
    if (mode == 0) up = (f & 0x7FFFFFu) != 0u;
    else if (mode == 2) up = ((f >> 22) & 1u) && (((f >> 21) & 1u) || (f & 0x1FFFFFu) != 0u || e > 0u);
    if (up && sat && e == 0xFEu) up = 0u;
    return e + up;
}
"""

_NI_DEC = """\
/* Sub-byte integer (bits wide, low bits of the byte; the upper bits are ignored) -> int32. */
static int32_t edgec_ni_dec(uint32_t b, int bits, int sgn)
{
    const uint32_t v = b & ((1u << bits) - 1u), half = 1u << (bits - 1);
    return sgn ? (int32_t)(v ^ half) - (int32_t)half : (int32_t)v;
}
"""

_NI_ENC_F = """\
/* Float -> sub-byte integer bits as ml_dtypes converts: truncate to int32 (NaN and values out of the
   int32 range give INT32_MIN, as x86 does), keep the low bits. */
static uint32_t edgec_ni_enc_f(double x, int bits)
{
    const int32_t i = (isnan(x) || x >= 2147483648.0 || x <= -2147483649.0) ? INT32_MIN : (int32_t)x;
    return (uint32_t)i & ((1u << bits) - 1u);
}
"""

_HELPERS = {"d2f": _D2F, "nf_dec": _NF_DEC, "nf_enc": _NF_ENC, "e8m0_dec": _E8M0_DEC, "e8m0_enc": _E8M0_ENC,
            "ni_dec": _NI_DEC, "ni_enc_f": _NI_ENC_F}


def _register_helpers() -> None:
    for name, text in _HELPERS.items():
        K.HELPERS.setdefault(name, text)
    for name in ("nf_enc", "e8m0_enc"):  # emitted after the helpers they call
        K.HELPER_DEPS.setdefault(name, ("d2f",))


_register_helpers()


def decode_expr(src: str, d: DType) -> Tuple[str, str, str]:
    """(C expression, its C type, helper) reading the stored element ``src`` of narrow type ``d``:
    float for the float types, int32_t for the integer ones."""
    if d in FLOAT_FORMATS:
        eb, mb, bias, kind = FLOAT_FORMATS[d]
        return f"edgec_nf_dec((uint32_t){src}, {eb}, {mb}, {bias}, {kind})", "float", "nf_dec"
    if d == DType.FLOAT8E8M0:
        return f"edgec_e8m0_dec((uint32_t){src})", "float", "e8m0_dec"
    bits, sgn = INT_FORMATS[d]
    return f"edgec_ni_dec((uint32_t){src}, {bits}, {int(sgn)})", "int32_t", "ni_dec"


def encode_expr(src: str, src_is_float: bool, d: DType, *, saturate: bool = True,
                round_mode: str = "up") -> Tuple[str, str]:
    """(C expression of the stored element of narrow type ``d`` for the value ``src``, helper or "").

    ``src`` is a float/double value when ``src_is_float``, else an integer value; ``saturate`` and
    ``round_mode`` are Cast's attributes (float8 only)."""
    ct = storage_ctype(d)
    if d in FLOAT_FORMATS:
        eb, mb, bias, kind = FLOAT_FORMATS[d]
        sat = int(bool(saturate)) if d in SATURATING else 0
        # ml_dtypes (the ONNX reference) converts a double to its types through float32 (two roundings);
        # numpy's float16 rounds a double once. Both are matched.
        via = int(d != DType.FLOAT16)
        return f"({ct})edgec_nf_enc((double)({src}), {eb}, {mb}, {bias}, {kind}, {sat}, {via})", "nf_enc"
    if d == DType.FLOAT8E8M0:
        mode = {"up": 0, "down": 1, "nearest": 2}.get(round_mode)
        if mode is None:
            raise ValueError(f"round_mode '{round_mode}'")
        return f"({ct})edgec_e8m0_enc((double)({src}), {int(bool(saturate))}, {mode})", "e8m0_enc"
    bits, _ = INT_FORMATS[d]
    if src_is_float:
        return f"({ct})edgec_ni_enc_f((double)({src}), {bits})", "ni_enc_f"
    return f"({ct})((uint64_t)({src}) & {(1 << bits) - 1}u)", ""


def helpers_for(*names: str) -> list:
    """The helper names among ``names`` that are not empty (for ``NodeCode.helpers``)."""
    return [n for n in names if n]
