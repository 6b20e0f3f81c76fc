"""Quantization arithmetic: integer ranges, scales and zero points, rounding, int32 bias.

Conventions (ONNX QuantizeLinear / DequantizeLinear):

- ``q = saturate(round_half_to_even(x / scale) + zero_point)``, ``x' = (q - zero_point) * scale``;
- activations: per tensor; asymmetric by default, the real range always includes 0 so that 0 is
  exactly representable (the zero point is an integer in ``[qmin, qmax]``);
- weights: symmetric per channel (zero point 0, signed types use the narrow range ``[-127, 127]`` /
  ``[-7, 7]`` so that ``-q`` never saturates); blocked along an axis when ``block_size > 0``;
- bias: int32 with ``scale = s_in * s_w[c]`` and zero point 0; a bias too large for int32 at that
  scale enlarges the weight scale of its channel (onnxruntime PR #22020) and says so.

The traps: a zero range gets :data:`TINY_SCALE` (never 0) and a warning; an all-zero weight channel
gets scale 1.0; NaN or Inf weights raise :class:`edgec.errors.EdgecError` naming the tensor.
"""

from __future__ import annotations

import warnings
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import EdgecError
from ..ir.dtypes import DType

__all__ = [
    "TINY_SCALE", "INT32_MAX", "QuantWarning", "as_dtype", "quant_range", "activation_params", "weight_params",
    "blocked_shape", "expand_params", "quantize_array", "dequantize_array", "BiasQuant", "bias_params",
    "check_finite", "SEARCH_RATIOS", "search_weight_params",
]

#: The scale given to a zero (or vanishing) real range: small, positive, finite.
TINY_SCALE = 1e-7
INT32_MAX = 2**31 - 1

DTypeLike = Union[DType, str, np.dtype, type]
Warn = Optional[Callable[[str], None]]

_NAMES = {"int8": DType.INT8, "uint8": DType.UINT8, "int4": DType.INT4, "uint4": DType.UINT4,
          "int16": DType.INT16, "uint16": DType.UINT16, "int32": DType.INT32}
_RANGES = {DType.INT8: (-128, 127), DType.UINT8: (0, 255), DType.INT4: (-8, 7), DType.UINT4: (0, 15),
           DType.INT16: (-32768, 32767), DType.UINT16: (0, 65535), DType.INT32: (-(2**31), INT32_MAX)}


class QuantWarning(UserWarning):
    """A quantization trap that was handled (zero range, ...); passes forward these to ``ctx.warn``."""


def _warn(message: str, warn: Warn) -> None:
    if warn is not None:
        warn(message)
    else:
        warnings.warn(message, QuantWarning, stacklevel=3)


def as_dtype(dtype: DTypeLike) -> DType:
    """A quantized element type from a DType, a name (``"int8"``, ``"u8"``) or a numpy dtype."""
    if isinstance(dtype, DType):
        d = dtype
    elif isinstance(dtype, str):
        d = _NAMES.get(dtype) or DType.from_short(dtype)
    else:
        d = DType.from_numpy(np.dtype(dtype))
    if d not in _RANGES:
        raise EdgecError(f"unsupported quantized element type {d.name.lower()} (int8, uint8, int4, uint4, int16, uint16)")
    return d


def quant_range(dtype: DTypeLike, *, narrow: bool = False) -> Tuple[int, int]:
    """``(qmin, qmax)`` of an integer type; ``narrow`` drops the most negative value of signed types
    (``[-127, 127]`` for int8: symmetric weights)."""
    d = as_dtype(dtype)
    lo, hi = _RANGES[d]
    if narrow and lo < 0:
        lo = -hi
    return lo, hi


def _symmetric_zero_point(qmin: int, qmax: int) -> int:
    return 0 if qmin < 0 else (qmin + qmax + 1) // 2  # 128 for uint8, 8 for uint4


def activation_params(lo: float, hi: float, dtype: DTypeLike = DType.INT8, symmetric: bool = False, *,
                      name: str = "tensor", warn: Warn = None) -> Tuple[np.ndarray, np.ndarray]:
    """Per-tensor ``(scale, zero_point)`` (0-d float32 and 0-d ``dtype``) covering ``[lo, hi]`` and 0."""
    d = as_dtype(dtype)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise EdgecError(f"quantization range of '{name}' is not finite ({lo}, {hi}): check the calibration data")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = quant_range(d)
    if symmetric:
        zp = _symmetric_zero_point(qmin, qmax)
        scale = max(-lo, hi) / float(qmax - zp)
    else:
        scale = (hi - lo) / float(qmax - qmin)
        zp = 0
    if not scale >= TINY_SCALE:
        _warn(f"'{name}': real range [{lo:g}, {hi:g}] is {'zero' if hi == lo else 'vanishing'}; "
              f"using scale {TINY_SCALE:g}", warn)
        scale = TINY_SCALE
    scale = float(np.float32(scale))
    if not symmetric:
        zp = int(np.clip(np.round(qmin - lo / scale), qmin, qmax))
    return np.asarray(scale, np.float32), np.asarray(zp, dtype=d.numpy)


def check_finite(w: np.ndarray, name: str) -> None:
    """Raise :class:`EdgecError` naming ``name`` when ``w`` holds NaN or Inf."""
    if w.dtype.kind == "f" and not np.all(np.isfinite(w)):
        bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
        raise EdgecError(f"weight '{name}' has {bad} NaN/Inf value(s); cannot quantize it")


def blocked_shape(shape: Sequence[int], axis: int, block_size: int) -> Tuple[int, ...]:
    """Shape of blocked scales: ``shape`` with ``ceil(shape[axis] / block_size)`` at ``axis``."""
    out = list(shape)
    out[axis] = -(-out[axis] // block_size)
    return tuple(out)


def _channel_minmax(w: np.ndarray, axis: Optional[int], block_size: int) -> Tuple[np.ndarray, np.ndarray]:
    if axis is None:
        return np.asarray(np.min(w, initial=0.0)), np.asarray(np.max(w, initial=0.0))
    axis = axis % w.ndim
    if block_size > 0:
        k = w.shape[axis]
        nb = -(-k // block_size)
        pad = [(0, 0)] * w.ndim
        pad[axis] = (0, nb * block_size - k)
        wp = np.pad(w, pad)
        shp = wp.shape[:axis] + (nb, block_size) + wp.shape[axis + 1:]
        wb = wp.reshape(shp)
        return np.minimum(wb.min(axis=axis + 1), 0.0), np.maximum(wb.max(axis=axis + 1), 0.0)
    red = tuple(i for i in range(w.ndim) if i != axis)
    if w.size == 0:
        z = np.zeros(w.shape[axis], w.dtype)
        return z, z
    return np.minimum(w.min(axis=red), 0.0), np.maximum(w.max(axis=red), 0.0)


def weight_params(w: np.ndarray, axis: Optional[int] = 0, dtype: DTypeLike = DType.INT8, symmetric: bool = True,
                  *, block_size: int = 0, name: str = "weight", reduce_range: bool = False
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """``(scale, zero_point)`` of a weight: per channel along ``axis`` (1-D, one per slice), per
    tensor for ``axis=None`` (0-d), or blocked (``block_size > 0``: same rank as ``w``, see
    :func:`blocked_shape`). All-zero channels get scale 1.0; NaN/Inf raise.

    ``reduce_range`` uses one bit less (int8: ``[-63, 63]`` symmetric, ``[-64, 63]`` else), which
    keeps x86 u8s8 kernels without VNNI (pairwise int16 sums) from saturating."""
    w = np.asarray(w)
    check_finite(w, name)
    d = as_dtype(dtype)
    if block_size > 0 and axis is None:
        raise EdgecError("blocked quantization needs an axis")
    lo, hi = _channel_minmax(w.astype(np.float64), axis, block_size)
    full = quant_range(d)
    if reduce_range:
        full = (full[0] // 2, full[1] // 2) if full[0] < 0 else (full[0], full[1] // 2)
    if symmetric:
        qmin, qmax = (-full[1], full[1]) if full[0] < 0 else full
        zp0 = _symmetric_zero_point(*full)
        scale = np.maximum(-lo, hi) / float(qmax - zp0 if qmin >= 0 else qmax)
        zp = np.full(scale.shape, zp0)
    else:
        qmin, qmax = full
        scale = (hi - lo) / float(qmax - qmin)
        zp = None
    scale = scale.astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)  # all-zero channel: 1.0
    if zp is None:
        zp = np.clip(np.round(qmin - lo / scale.astype(np.float64)), qmin, qmax)
    return scale, zp.astype(d.numpy)


#: Clipping ratios :func:`search_weight_params` tries (1.0: the min/max range; 0.875: a symmetric
#: int4 scale of ``absmax / 8``, onnxruntime's choice).
SEARCH_RATIOS: Tuple[float, ...] = tuple(float(r) for r in np.round(np.arange(1.0, 0.525, -0.025), 3))


def _groups(w: np.ndarray, axis: Optional[int], block_size: int) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """``w`` as ``[groups, group_len]`` (one row per tensor / channel / block, blocks zero-padded)
    and the shape of the parameters (as :func:`weight_params` returns them)."""
    if axis is None:
        return w.reshape(1, -1), ()
    axis = axis % w.ndim
    if block_size <= 0:
        return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1), (w.shape[axis],)
    k = w.shape[axis]
    nb = -(-k // block_size)
    pad = [(0, 0)] * w.ndim
    pad[axis] = (0, nb * block_size - k)
    wb = np.pad(w, pad).reshape(w.shape[:axis] + (nb, block_size) + w.shape[axis + 1:])
    return np.moveaxis(wb, axis + 1, -1).reshape(-1, block_size), blocked_shape(w.shape, axis, block_size)


def search_weight_params(w: np.ndarray, axis: Optional[int] = 0, dtype: DTypeLike = DType.INT4,
                         symmetric: bool = True, *, block_size: int = 0, name: str = "weight",
                         ratios: Sequence[float] = SEARCH_RATIOS) -> Tuple[np.ndarray, np.ndarray]:
    """Like :func:`weight_params` (same shapes and types), but each channel / block takes, among
    ``ratios`` of its min/max range, the scale whose round-to-nearest quantization has the least
    squared error ("RTN with an MSE-optimal scale"; clipping a few outliers makes the step finer
    for all the others). Uses the full integer range (``[-8, 7]`` for int4: weight-only kernels
    have no use for the narrow range). ~20 quantize passes over ``w``."""
    w = np.asarray(w)
    check_finite(w, name)
    d = as_dtype(dtype)
    if block_size > 0 and axis is None:
        raise EdgecError("blocked quantization needs an axis")
    wg, pshape = _groups(w.astype(np.float32), axis, block_size)
    qmin, qmax = quant_range(d)
    lo = np.minimum(wg.min(axis=1, initial=0.0), 0.0)
    hi = np.maximum(wg.max(axis=1, initial=0.0), 0.0)
    zp0 = _symmetric_zero_point(qmin, qmax)
    best_err = np.full(wg.shape[0], np.inf)
    best_s = np.ones(wg.shape[0], np.float32)
    best_z = np.full(wg.shape[0], zp0 if symmetric else 0, np.float64)
    for r in ratios:
        if symmetric:
            s = (np.maximum(-lo, hi) * r / float(qmax - zp0)).astype(np.float32)
            z = np.full(s.shape, float(zp0))
        else:
            s = ((hi - lo) * r / float(qmax - qmin)).astype(np.float32)
        s = np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
        if not symmetric:
            z = np.clip(np.round(qmin - lo * r / s.astype(np.float64)), qmin, qmax)
        sc, zc = s[:, None], z[:, None].astype(np.float32)
        q = np.clip(np.rint(wg / sc) + zc, qmin, qmax)
        err = np.square((q - zc) * sc - wg).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_z = np.where(better, z, best_z)
    return best_s.reshape(pshape).astype(np.float32), best_z.reshape(pshape).astype(d.numpy)


def expand_params(p: np.ndarray, shape: Sequence[int], axis: Optional[int], block_size: int = 0) -> np.ndarray:
    """Broadcast per-tensor, per-axis or blocked parameters to ``shape``."""
    p = np.asarray(p)
    if axis is None or p.ndim == 0 or (p.size == 1 and block_size == 0):
        return p.reshape(()) if p.size == 1 else p
    rank = len(shape)
    axis = axis % rank
    if block_size > 0:
        return np.repeat(p, block_size, axis=axis).take(np.arange(shape[axis]), axis=axis)
    view = [1] * rank
    view[axis] = -1
    return p.reshape(view)


def quantize_array(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, dtype: DTypeLike = DType.INT8,
                   axis: Optional[int] = None, block_size: int = 0) -> np.ndarray:
    """ONNX QuantizeLinear: ``saturate(round_half_to_even(x / scale) + zero_point)`` (float32 math)."""
    d = as_dtype(dtype)
    x = np.asarray(x, np.float32)
    s = expand_params(np.asarray(scale, np.float32), x.shape, axis, block_size)
    z = expand_params(np.asarray(zero_point).astype(np.int64), x.shape, axis, block_size)
    qmin, qmax = quant_range(d)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.rint(x / s).astype(np.float64) + z
    q = np.clip(np.nan_to_num(q, nan=0.0), qmin, qmax)
    return q.astype(np.int64).astype(d.numpy)


def dequantize_array(q: np.ndarray, scale: np.ndarray, zero_point: Optional[np.ndarray] = None,
                     axis: Optional[int] = None, block_size: int = 0) -> np.ndarray:
    """ONNX DequantizeLinear: ``(q - zero_point) * scale`` in float32."""
    q = np.asarray(q)
    qi = q.astype(np.int64)
    s = expand_params(np.asarray(scale, np.float32), q.shape, axis, block_size)
    z = 0 if zero_point is None else expand_params(np.asarray(zero_point).astype(np.int64), q.shape, axis, block_size)
    return ((qi - z).astype(np.float32) * s).astype(np.float32)


class BiasQuant(NamedTuple):
    """An int32 bias: values, scale (``s_in * s_w``), the weight scale to use (possibly enlarged)
    and the channels whose weight scale was enlarged to keep the bias inside int32."""

    values: np.ndarray
    scale: np.ndarray
    weight_scale: np.ndarray
    adjusted: List[int]


def bias_params(bias: np.ndarray, s_in: float, s_w: np.ndarray, *, name: str = "bias",
                limit: int = INT32_MAX) -> BiasQuant:
    """Quantize ``bias`` to int32 with scale ``s_in * s_w`` (per-tensor or one per channel).

    When ``|bias / (s_in*s_w)|`` would exceed ``limit``, that channel's weight scale grows to
    ``|bias| / (s_in * limit)`` (a little more, for rounding), so the bias fits; the caller must
    quantize the weight with the returned ``weight_scale``.
    """
    b = np.asarray(bias, np.float64).reshape(-1)
    check_finite(b, name)
    s_w = np.asarray(s_w, np.float32)
    sw = np.broadcast_to(s_w.astype(np.float64).reshape(-1), b.shape).copy() if s_w.size > 1 else \
        np.full(b.shape, float(s_w.reshape(-1)[0]))
    s_in = float(s_in)
    need = np.abs(b) / (s_in * float(limit))
    over = need > sw
    adjusted: List[int] = []
    if np.any(over):
        if s_w.size > 1:
            adjusted = [int(i) for i in np.nonzero(over)[0]]
            sw[over] = need[over] * (1 + 1e-6)
            new_sw = sw.astype(np.float32)
        else:
            adjusted = [0]
            new_sw = np.asarray(np.float32(need.max() * (1 + 1e-6)))
            sw[:] = float(new_sw)
    else:
        new_sw = s_w
    scale = (np.float32(s_in) * np.asarray(new_sw, np.float32)).astype(np.float32)
    scale_full = np.broadcast_to(scale.reshape(-1), b.shape) if scale.size > 1 else scale.reshape(())
    safe = np.where(scale_full > 0, scale_full, np.float32(1.0))
    q = np.clip(np.rint(b / safe.astype(np.float64)), -limit - 1, limit).astype(np.int32)
    return BiasQuant(q.reshape(np.shape(bias)), scale, np.asarray(new_sw, np.float32), adjusted)
