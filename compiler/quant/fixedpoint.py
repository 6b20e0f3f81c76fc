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
* Float -> int boundary (``QuantizeLinear``): ONNX rounds half to even (:func:`round_half_even`);
  TFLite's quantizer uses ``TfLiteRound`` = half away from zero (:func:`round_half_away`).
  Results differ only on exact ties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "ADD_LEFT_SHIFT", "ROUNDING_MODES", "round_half_even", "round_half_away",
    "quantize_multiplier", "quantize_multipliers", "srdhm", "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier", "requantize", "AddParams", "add_params", "quantized_add",
    "quantized_mul", "activation_range",
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
