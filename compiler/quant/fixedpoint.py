"""Exact integer arithmetic of int8 inference, bit-identical to TFLite / gemmlowp (vectorised numpy int64).

This module is the written contract that the C backend follows. Every function works on numpy int64
arrays that hold int32 values, and does in int64 what the C code does in int32/int64.

Rounding contract
-----------------
* ``quantize_multiplier(M)`` (TFLite ``QuantizeMultiplier``): ``(q, e) = frexp(M)`` (double),
  ``M0 = round_half_away(q * 2^31)``; if ``M0 == 2^31`` then ``M0 = 2^30, e += 1``; if ``e < -31`` then
  ``M0 = 0, e = 0``. For single rounding, ``e > 30`` becomes ``M0 = 2^31 - 1, e = 30``. ``M ~= M0 * 2^(e-31)``.
* ``rounding='double'`` (gemmlowp, TFLite default, ARM ``VQRDMULH`` + rounding shift):
  ``L = max(e, 0)``, ``R = max(-e, 0)``; ``t = SRDHM(sat32(acc * 2^L), M0)``; ``y = RDBPOT(t, R)``.

  - ``SRDHM(a, b) = trunc((a*b + nudge) / 2^31)`` in int64, ``nudge = 2^30`` if ``a*b >= 0`` else
    ``1 - 2^30``: ties round towards +inf. ``SRDHM(INT32_MIN, INT32_MIN) = INT32_MAX`` (saturation).
  - ``RDBPOT(x, R) = (x >> R) + ((x & mask) > ((mask >> 1) + (x < 0)))``, ``mask = 2^R - 1``
    (arithmetic shift): ties round away from zero.
  - ``sat32(acc * 2^L)``: TFLite computes ``acc * (1 << L)`` in int32 (overflow is undefined there);
    the contract saturates to int32. It only matters for ``M >= 1`` and huge accumulators.
* ``rounding='single'`` (``TFLITE_SINGLE_ROUNDING``, CMSIS-NN ``arm_nn_requantize`` single mode):
  ``y = (acc * M0 + 2^(30-e)) >> (31-e)`` in int64, ``-31 <= e <= 30``: one rounding, ties towards +inf.
  The result is saturated to int32 (TFLite asserts it fits).
* Requantization: ``out = clamp(y + Z_out, qmin, qmax)``; ``[qmin, qmax]`` is the output type's range
  intersected with a fused activation (Relu: ``Z_out``; Clip/Relu6: ``Z_out + round_half_away(v / S_out)``,
  float32 division as in TFLite ``CalculateActivationRangeQuantized``).
* Add/Sub (TFLite ``PrepareAdd``, ``reference_ops::AddElementwise`` / ``SubElementwise``, int8):
  ``left_shift = 20``, ``twice_max = 2 * max(S1, S2)`` (double of the float32 scales),
  ``M1 = S1 / twice_max``, ``M2 = S2 / twice_max``, ``Mout = twice_max / (2^20 * S_out)``;
  ``a_i = MBQM((q_i - Z_i) * 2^20, M_i)``; ``raw = a1 + a2`` (Sub: ``a1 - a2``);
  ``out = clamp(MBQM(raw, Mout) + Z_out, qmin, qmax)``, MBQM in the chosen rounding mode.
* Mul: ``out = clamp(MBQM((q1 - Z1) * (q2 - Z2), S1*S2/S_out) + Z_out, qmin, qmax)``.
* Average pool with its own output parameters (TFLite-style rescale; same (S, Z) keeps the plain
  ``sum(q) / n`` of the reference): ``acc = sum(q - Z_in)`` over the ``n`` counted elements of the window
  (int32; a counted pad is ``Z_in``, i.e. 0), ``out = clamp(MBQM(acc, M[n]) + Z_out, qmin, qmax)`` with
  ``M[n] = S_in / (S_out * n)`` (float32 scales, double math, :func:`quantize_multiplier` in the chosen
  rounding). See :func:`avgpool_multipliers` / :func:`avgpool_rescale`.
* Softmax (TFLite reference ``Softmax`` for int8/uint8 = TFLM = CMSIS-NN ``arm_softmax_s8``; the
  gemmlowp fixed-point kernel, *not* the float-LUT optimized kernel), over rows of ``depth <= 4095``
  values, ``beta = 1``; the output must be ``(1/256, type minimum)`` (int8: zp -128, uint8: zp 0):

  - prepare (``PreprocessSoftmaxScaling``, ``kScaledDiffIntegerBits = 5``):
    ``real = min(beta * S_in * 2^26, cap)`` in double, ``cap = 2^31 - 1`` (``single``: ``2^30 - 1``);
    ``(M, L) = quantize_multiplier(real)`` (``L >= 0``, else the region runs in float);
    ``diff_min = -floor(31 * 2^26 / 2^L)`` (``CalculateInputRadius(5, L, 31)``).
  - per row: ``d = q - max(q)``; elements with ``d < diff_min`` output the type minimum; else
    ``r = MBQM(d, M, L)`` (``double``: ``SRDHM(d * 2^L, M)``, ``MultiplyByQuantizedMultiplierGreaterThanOne``;
    ``single``: the single-rounding formula), ``e = exp_on_negative_values(r)`` (Q5.26 in, Q0.31 out),
    ``sum = sum(RDBPOT(e, 12))`` (Q12.19, int32; depth <= 4095 cannot overflow);
    ``recip, nb = GetReciprocal(sum, 12)``: ``h = clz32(sum)``, ``nb = 12 - h``,
    ``recip = one_over_one_plus_x_for_x_in_0_1((sum << h) - 2^31)``;
    ``out = clamp(RDBPOT(SRDHM(recip, e), nb + 23) + type_min, type range)`` (``RDBPOT`` by 32 or more is
    0 here: exact rounding of a non-negative int32, where gemmlowp asserts exponent <= 31).
  - gemmlowp ``FixedPoint`` arithmetic: ``a * b`` is ``SRDHM``; ``+``/``-`` are plain int32; ``Rescale``
    up by ``k`` bits is a saturating left shift (``SaturatingRoundingMultiplyByPOT<k>``), down is ``RDBPOT``.
    ``exp_on_negative_values(a)`` (Q5.26): ``t = (a & (2^24 - 1)) - 2^24``,
    ``res = exp_on_interval(sat_shl(t, 5))``, ``rem = t - a``; for ``(k, c)`` in ``(-2, 1672461947)``,
    ``(-1, 1302514674)``, ``(0, 790015084)``, ``(1, 290630308)``, ``(2, 39332535)``, ``(3, 720401)``,
    ``(4, 242)``: if ``rem & 2^(26+k)`` then ``res = SRDHM(res, c)``; ``a == 0`` gives ``2^31 - 1``.
    ``exp_on_interval(a)`` (a in [-1/4, 0), Q0.31): ``x = a + 2^28``, ``x2 = SRDHM(x, x)``,
    ``x3 = SRDHM(x2, x)``, ``x4 = SRDHM(x2, x2)``, ``p = RDBPOT(SRDHM(RDBPOT(x4, 2) + x3, 715827883) + x2, 1)``,
    ``exp = 1895147668 + SRDHM(1895147668, x + p)``.
    ``one_over_one_plus_x_for_x_in_0_1(a)``: ``hd = (a + 2^31 - 1 + 1) / 2`` (``RoundingHalfSum``, C division),
    ``x = 1515870810 + SRDHM(hd, -1010580540)`` (Q2.29), three times
    ``x = x + sat_shl(SRDHM(x, 2^29 - SRDHM(hd, x)), 2)``; result ``sat_shl(x, 1)``.
* Float -> int boundary (``QuantizeLinear``): ONNX rounds half to even (:func:`round_half_even`);
  TFLite's quantizer uses ``TfLiteRound`` = half away from zero (:func:`round_half_away`).
  Results differ only on exact ties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "ADD_LEFT_SHIFT", "ROUNDING_MODES", "round_half_even", "round_half_away",
    "quantize_multiplier", "quantize_multipliers", "srdhm", "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier", "requantize", "AddParams", "add_params", "quantized_add",
    "quantized_mul", "activation_range", "avgpool_multipliers", "avgpool_rescale", "SoftmaxParams",
    "softmax_params", "exp_on_negative_values", "one_over_one_plus_x_for_x_in_0_1", "get_reciprocal",
    "quantized_softmax", "SOFTMAX_OUTPUT_SCALE", "SOFTMAX_MAX_DEPTH",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
#: TFLite PrepareAdd's left shift for int8 inputs.
ADD_LEFT_SHIFT = 20
ROUNDING_MODES = ("double", "single")

ArrayLike = Union[int, np.ndarray]


def _check_rounding(rounding: str) -> None:
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, not {rounding!r}")


def _i64(x: ArrayLike) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iub":
        raise TypeError(f"integer array expected, got {a.dtype}")
    return a.astype(np.int64)


def _sat32(x: np.ndarray) -> np.ndarray:
    return np.clip(x, INT32_MIN, INT32_MAX)


# --- rounding helpers ----------------------------------------------------------------------------
def round_half_even(x: ArrayLike) -> np.ndarray:
    """Round to nearest, ties to even (ONNX QuantizeLinear, numpy ``rint``)."""
    return np.rint(np.asarray(x))


def round_half_away(x: ArrayLike) -> np.ndarray:
    """Round to nearest, ties away from zero (C ``round``, ``TfLiteRound``); exact for every float."""
    a = np.asarray(x)
    t = np.trunc(a)
    frac = a - t  # exact in binary floating point
    return t + np.where(np.abs(frac) >= 0.5, np.sign(a), 0).astype(t.dtype)


# --- multiplier ----------------------------------------------------------------------------------
def quantize_multiplier(m: float, rounding: str = "double") -> Tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``(M0, shift)`` with ``m ~= M0 * 2^(shift - 31)``, M0 in Q0.31."""
    _check_rounding(rounding)
    m = float(m)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"multiplier must be finite and >= 0, got {m}")
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = int(round_half_away(q * float(1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if rounding == "single" and shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, shift


def quantize_multipliers(ms: ArrayLike, rounding: str = "double") -> Tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_multiplier` of every element: int64 arrays ``(M0, shift)`` of ``ms``'s shape."""
    arr = np.asarray(ms, dtype=np.float64)
    pairs = [quantize_multiplier(float(v), rounding) for v in arr.reshape(-1)]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64).reshape(arr.shape)
    sh = np.array([p[1] for p in pairs], dtype=np.int64).reshape(arr.shape)
    return m0, sh


# --- gemmlowp primitives -------------------------------------------------------------------------
def srdhm(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Saturating rounding doubling high multiply of int32 values (gemmlowp, ARM ``VQRDMULH``)."""
    a64, b64 = _i64(a), _i64(b)
    ab = a64 * b64
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    # C division truncates toward zero; numpy >> floors, so divide the magnitude.
    hi = np.where(s >= 0, s >> 31, -((-s) >> 31))
    overflow = (a64 == INT32_MIN) & (b64 == INT32_MIN)
    return np.where(overflow, np.int64(INT32_MAX), hi)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> np.ndarray:
    """``x / 2^exponent`` rounded to nearest, ties away from zero (gemmlowp ``RoundingDivideByPOT``)."""
    x64, e = _i64(x), _i64(exponent)
    if np.any((e < 0) | (e > 31)):
        raise ValueError("exponent must be in [0, 31]")
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0).astype(np.int64)
    return (x64 >> e) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(acc: ArrayLike, m0: ArrayLike, shift: ArrayLike,
                                     rounding: str = "double") -> np.ndarray:
    """``acc * M0 * 2^(shift-31)`` rounded as TFLite ``MultiplyByQuantizedMultiplier`` (int32 result)."""
    _check_rounding(rounding)
    x, m, s = _i64(acc), _i64(m0), _i64(shift)
    if np.any((x < INT32_MIN) | (x > INT32_MAX)):
        raise ValueError("accumulator outside the int32 range")
    if np.any((m < 0) | (m > INT32_MAX)):
        raise ValueError("M0 must be in [0, 2^31 - 1]")
    if rounding == "double":
        left = np.minimum(np.maximum(s, 0), 31)  # any larger shift saturates the same way
        right = np.maximum(-s, 0)
        return rounding_divide_by_pot(srdhm(_sat32(x << left), m), right)
    if np.any((s < -31) | (s > 30)):
        raise ValueError("single rounding needs -31 <= shift <= 30 (use quantize_multiplier(m, 'single'))")
    total = 31 - s
    y = (x * m + (np.int64(1) << (total - 1))) >> total
    return _sat32(y)


def _channel_shape(x: np.ndarray, p: np.ndarray, axis: Union[int, None]) -> np.ndarray:
    if axis is None or p.ndim == 0 or p.size == 1:
        return p.reshape(()) if p.size == 1 else p
    ax = axis % x.ndim
    shape = [1] * x.ndim
    shape[ax] = p.size
    return p.reshape(shape)


def requantize(acc: ArrayLike, m0: ArrayLike, shift: ArrayLike, zp_out: int, qmin: int, qmax: int,
               rounding: str = "double", axis: Union[int, None] = None) -> np.ndarray:
    """``clamp(MBQM(acc, M0[c], shift[c]) + zp_out, qmin, qmax)``; per-channel parameters along ``axis``.

    ``m0``/``shift`` are scalars or 1-D arrays (one per slice of ``axis`` of ``acc``); with ``axis``
    None they broadcast as given. Returns int64 values in ``[qmin, qmax]``.
    """
    x = _i64(acc)
    m = _channel_shape(x, _i64(m0), axis)
    s = _channel_shape(x, _i64(shift), axis)
    y = multiply_by_quantized_multiplier(x, m, s, rounding) + int(zp_out)
    return np.clip(y, int(qmin), int(qmax))


def activation_range(act: str, params: Tuple[Optional[float], ...], scale: float, zero_point: int,
                     qmin: int, qmax: int) -> Tuple[int, int]:
    """``[qmin, qmax]`` narrowed by a fused Relu/Clip (TFLite ``CalculateActivationRangeQuantized``)."""

    def quant(v: float) -> int:
        return int(zero_point) + int(round_half_away(np.float32(v) / np.float32(scale)))

    lo, hi = int(qmin), int(qmax)
    if act == "Relu":
        lo = max(lo, quant(0.0))
    elif act == "Clip":
        vmin, vmax = params
        if vmin is not None and math.isfinite(vmin):
            lo = max(lo, quant(vmin))
        if vmax is not None and math.isfinite(vmax):
            hi = min(hi, quant(vmax))
    elif act:
        raise ValueError(f"activation {act!r} cannot be folded into the clamp")
    return lo, hi  # lo > hi clamps everything to hi, as std::min(hi, std::max(lo, y)) does


# --- Add / Sub / Mul -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AddParams:
    """TFLite ``ArithmeticParams`` of an int8 Add/Sub (offsets are the negated input zero points)."""

    input1_offset: int
    input2_offset: int
    output_offset: int
    left_shift: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    qmin: int
    qmax: int
    sub: bool = False
    rounding: str = "double"


def add_params(s1: float, z1: int, s2: float, z2: int, s_out: float, z_out: int, qmin: int = -128,
               qmax: int = 127, *, sub: bool = False, rounding: str = "double",
               left_shift: int = ADD_LEFT_SHIFT) -> AddParams:
    """TFLite ``PrepareAdd`` / ``PrepareGeneralSubOp`` for int8 (scales taken as float32, math in double)."""
    _check_rounding(rounding)
    f1, f2, fo = (float(np.float32(v)) for v in (s1, s2, s_out))
    twice_max = 2.0 * max(f1, f2)
    m1, e1 = quantize_multiplier(f1 / twice_max, rounding)
    m2, e2 = quantize_multiplier(f2 / twice_max, rounding)
    mo, eo = quantize_multiplier(twice_max / ((1 << left_shift) * fo), rounding)
    return AddParams(-int(z1), -int(z2), int(z_out), left_shift, m1, e1, m2, e2, mo, eo, int(qmin), int(qmax),
                     sub, rounding)


def quantized_add(q1: ArrayLike, q2: ArrayLike, p: AddParams) -> np.ndarray:
    """TFLite int8 Add (or Sub when ``p.sub``) with numpy broadcasting; int64 values in ``[qmin, qmax]``."""
    a = (_i64(q1) + p.input1_offset) << p.left_shift
    b = (_i64(q2) + p.input2_offset) << p.left_shift
    a = multiply_by_quantized_multiplier(a, p.input1_multiplier, p.input1_shift, p.rounding)
    b = multiply_by_quantized_multiplier(b, p.input2_multiplier, p.input2_shift, p.rounding)
    raw = a - b if p.sub else a + b
    out = multiply_by_quantized_multiplier(raw, p.output_multiplier, p.output_shift, p.rounding) + p.output_offset
    return np.clip(out, p.qmin, p.qmax)


def quantized_mul(q1: ArrayLike, z1: int, q2: ArrayLike, z2: int, m0: int, shift: int, z_out: int, qmin: int,
                  qmax: int, rounding: str = "double") -> np.ndarray:
    """TFLite int8 Mul: ``clamp(MBQM((q1-z1)*(q2-z2), M0, shift) + z_out)``, M from ``S1*S2/S_out``."""
    prod = (_i64(q1) - int(z1)) * (_i64(q2) - int(z2))
    return requantize(prod, m0, shift, z_out, qmin, qmax, rounding)



# --- average pool with its own output parameters ---------------------------------------------------------
def avgpool_multipliers(s_in: float, s_out: float, counts: ArrayLike,
                        rounding: str = "double") -> Tuple[np.ndarray, np.ndarray]:
    """``(M0, shift)`` of ``S_in / (S_out * n)`` for every window count ``n`` in ``counts`` (int64 arrays)."""
    n = np.asarray(counts, dtype=np.int64)
    if np.any(n < 1):
        raise ValueError("window counts must be >= 1")
    si, so = float(np.float32(s_in)), float(np.float32(s_out))
    return quantize_multipliers(si / (so * n.astype(np.float64)), rounding)


def avgpool_rescale(acc: ArrayLike, counts: ArrayLike, s_in: float, s_out: float, zp_out: int, qmin: int,
                    qmax: int, rounding: str = "double") -> np.ndarray:
    """``clamp(MBQM(acc, S_in/(S_out*n)) + Z_out, qmin, qmax)``: ``acc = sum(q - Z_in)`` of each window and
    ``counts`` its element count ``n`` (broadcast against ``acc``)."""
    a = _i64(acc)
    n = np.broadcast_to(np.asarray(counts, dtype=np.int64), a.shape)
    uniq, inv = np.unique(n, return_inverse=True)
    m0, sh = avgpool_multipliers(s_in, s_out, uniq, rounding)
    return requantize(a, m0[inv].reshape(a.shape), sh[inv].reshape(a.shape), zp_out, qmin, qmax, rounding)


# --- softmax (TFLite reference int8/uint8 kernel, gemmlowp fixed point) ----------------------------------
#: The output scale TFLite requires of an int8/uint8 Softmax (zero point: the type's minimum).
SOFTMAX_OUTPUT_SCALE = 1.0 / 256.0
#: Longest softmax row: the Q12.19 sum of ``depth`` exps (each <= 2^19) stays below 2^31.
SOFTMAX_MAX_DEPTH = 4095
_SCALED_DIFF_INTEGER_BITS = 5
_ACCUM_INTEGER_BITS = 12


@dataclass(frozen=True)
class SoftmaxParams:
    """TFLite ``SoftmaxParams`` of an int8/uint8 softmax: the input multiplier, its left shift, diff_min."""

    input_multiplier: int
    input_left_shift: int
    diff_min: int
    rounding: str = "double"


def softmax_params(s_in: float, beta: float = 1.0, rounding: str = "double") -> Optional[SoftmaxParams]:
    """``PreprocessSoftmaxScaling`` + ``CalculateInputRadius`` (kScaledDiffIntegerBits 5); None when the
    multiplier is below 1 (an input scale under ~1.5e-8: TFLite's QuantizeMultiplierGreaterThanOne fails)."""
    _check_rounding(rounding)
    cap = float((1 << 30) - 1) if rounding == "single" else float((1 << 31) - 1)
    real = min(float(beta) * float(np.float32(s_in)) * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)), cap)
    if not math.isfinite(real) or real <= 1.0:
        return None
    m, shift = quantize_multiplier(real, rounding)
    if shift < 0:
        return None
    radius = math.floor(((1 << _SCALED_DIFF_INTEGER_BITS) - 1) * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS))
                        / float(1 << shift))
    return SoftmaxParams(m, shift, -int(radius), rounding)


def _sat_shl(x: np.ndarray, e: int) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<e>`` for ``e > 0``: a left shift saturated to int32."""
    return _sat32(x << e)


def _exp_on_interval(a: np.ndarray) -> np.ndarray:
    """gemmlowp ``exp_on_interval_between_negative_one_quarter_and_0_excl`` (Q0.31 in and out)."""
    c_term, c_third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(srdhm(x4_over_4 + x3, c_third) + x2, 1)
    return c_term + srdhm(np.int64(c_term), x + poly)


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
               (4, 242))


def exp_on_negative_values(a: ArrayLike) -> np.ndarray:
    """gemmlowp ``exp_on_negative_values`` of Q5.26 values ``a <= 0``; returns ``exp(a)`` in Q0.31 (int64)."""
    a = _i64(a)
    frac = 31 - _SCALED_DIFF_INTEGER_BITS  # 26
    quarter = np.int64(1 << (frac - 2))
    t = (a & (quarter - 1)) - quarter
    res = _exp_on_interval(_sat_shl(t, _SCALED_DIFF_INTEGER_BITS))
    rem = t - a
    for k, c in _EXP_BARREL:
        bit = np.int64(1 << (frac + k))
        res = np.where((rem & bit) != 0, srdhm(res, np.int64(c)), res)
    return np.where(a == 0, np.int64(INT32_MAX), res)


def one_over_one_plus_x_for_x_in_0_1(a: ArrayLike) -> np.ndarray:
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1`` (Q0.31 in, Q0.31 out): three Newton-Raphson steps."""
    a = _i64(a)
    s = a + INT32_MAX  # RoundingHalfSum(a, One): (s + sign(s)) / 2, C division
    hd = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))
    x = 1515870810 + srdhm(hd, np.int64(-1010580540))
    for _ in range(3):
        one_minus = (1 << 29) - srdhm(hd, x)
        x = x + _sat_shl(srdhm(x, one_minus), 2)
    return _sat_shl(x, 1)


def _clz32(x: np.ndarray) -> np.ndarray:
    """Leading zeros of positive int32 values."""
    _, e = np.frexp(x.astype(np.float64))  # exact: x < 2^31
    return 32 - e.astype(np.int64)


def get_reciprocal(x: ArrayLike, integer_digits: int = _ACCUM_INTEGER_BITS) -> Tuple[np.ndarray, np.ndarray]:
    """TFLite ``GetReciprocal`` of positive Q(integer_digits) values: ``(recip Q0.31, num_bits_over_unit)``."""
    x = _i64(x)
    if np.any(x <= 0):
        raise ValueError("get_reciprocal needs positive values")
    h = _clz32(x)
    shifted = (x << h) - (np.int64(1) << 31)
    return one_over_one_plus_x_for_x_in_0_1(shifted), integer_digits - h


def quantized_softmax(q: ArrayLike, p: SoftmaxParams, out_dtype: Any = np.int8, axis: int = -1,
                      qmin: Optional[int] = None, qmax: Optional[int] = None) -> np.ndarray:
    """TFLite reference int8/uint8 softmax over ``axis`` of the integers ``q`` (output scale 1/256, zero point
    the type minimum); int64 values clamped to ``[qmin, qmax]`` (default: the output type's range)."""
    x = np.moveaxis(_i64(q), axis, -1)
    if x.shape[-1] > SOFTMAX_MAX_DEPTH:
        raise ValueError(f"softmax depth {x.shape[-1]} > {SOFTMAX_MAX_DEPTH}")
    info = np.iinfo(np.dtype(out_dtype))
    tmin, tmax = int(info.min), int(info.max)
    lo = tmin if qmin is None else max(tmin, int(qmin))
    hi = tmax if qmax is None else min(tmax, int(qmax))
    diff = x - x.max(axis=-1, keepdims=True)
    valid = diff >= p.diff_min
    d = np.where(valid, diff, 0)
    r = multiply_by_quantized_multiplier(d, p.input_multiplier, p.input_left_shift, p.rounding)
    e = exp_on_negative_values(r)
    total = np.where(valid, rounding_divide_by_pot(e, _ACCUM_INTEGER_BITS), 0).sum(axis=-1, keepdims=True)
    recip, nb = get_reciprocal(total)
    shift = nb + 31 - (8 * np.dtype(out_dtype).itemsize)
    prod = srdhm(np.broadcast_to(recip, e.shape), e)
    sh = np.broadcast_to(shift, e.shape)
    unsat = np.where(sh > 31, 0, rounding_divide_by_pot(prod, np.minimum(sh, 31)))
    out = np.where(valid, np.clip(unsat + tmin, tmin, tmax), tmin)
    return np.moveaxis(np.clip(out, lo, hi), -1, axis)
