"""Streaming statistics per tensor, merged batch by batch, and the calibration range methods.

``TensorStats.update(batch)`` folds one batch into running min/max/mean (global and, optionally,
per channel along an axis) and an optional :class:`HistogramObserver`; activations are never kept.
``compute_range(stats, method)`` turns the statistics into a clipping range ``lo <= 0 <= hi`` with
one of ``minmax``, ``percentile``, ``entropy`` (KL divergence, TensorRT/ORT style) or ``mse``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from ..errors import CalibrationError

__all__ = ["TensorStats", "HistogramObserver", "compute_range", "METHODS", "MIN_RANGE", "DEFAULT_BINS"]

METHODS = ("minmax", "percentile", "entropy", "mse")
#: The narrowest range ``compute_range`` returns (all-zero or constant-zero tensors).
MIN_RANGE = 1e-6
DEFAULT_BINS = 2048


class HistogramObserver:
    """A histogram over ``[-bound, bound]`` with a fixed, even number of bins (zero is a bin edge).

    The bound starts at the first nonzero batch's largest magnitude; a batch beyond it doubles the
    bound as often as needed (``bound * 2**k``) and merges every ``2**k`` old bins into one new bin on
    each side of zero, which is exact. The resolution stays within 2x of the final range's.
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if bins < 2 or bins % 2:
            raise ValueError(f"histogram bins must be even and >= 2, got {bins}")
        self.bins = bins
        self.bound = 0.0
        self.counts = np.zeros(bins, dtype=np.int64)
        self._zeros = 0  # exact zeros seen while bound == 0

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self._zeros

    @property
    def width(self) -> float:
        return 2.0 * self.bound / self.bins

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(-self.bound, self.bound, self.bins + 1)

    def update(self, x: np.ndarray, amax: Optional[float] = None) -> None:
        """Add the values of ``x`` (finite); ``amax`` (max |x|) may be passed when already known."""
        x = np.asarray(x)
        if x.size == 0:
            return
        if amax is None:
            amax = float(np.max(np.abs(x)))
        if self.bound == 0.0:
            if amax == 0.0:
                self._zeros += x.size
                return
            self.bound = amax
            self.counts[self.bins // 2] += self._zeros
            self._zeros = 0
        elif amax > self.bound:
            k = max(1, math.ceil(math.log2(amax / self.bound)))
            while self.bound * 2.0 ** k < amax:
                k += 1
            self._widen(k)
        h, _ = np.histogram(x, bins=self.bins, range=(-self.bound, self.bound))
        self.counts += h

    def _widen(self, k: int) -> None:
        half = self.bins // 2
        c = np.arange(self.bins, dtype=np.int64) - half
        kk = min(k, 62)
        new_c = np.where(c >= 0, c >> kk, -(((-c - 1) >> kk) + 1))
        self.counts = np.bincount(new_c + half, weights=self.counts, minlength=self.bins).astype(np.int64)
        self.bound *= 2.0 ** k

    def merge(self, other: "HistogramObserver") -> None:
        """Fold another histogram into this one (its bins land by their centers: exact to a bin width)."""
        if other.bound == 0.0:
            if self.bound == 0.0:
                self._zeros += other._zeros
            else:
                self.counts[self.bins // 2] += other._zeros
            return
        centers = (other.edges[:-1] + other.edges[1:]) / 2
        amax = float(np.abs(centers[other.counts > 0]).max()) if other.counts.any() else 0.0
        if self.bound == 0.0:
            self.bound = other.bound
            self.counts[self.bins // 2] += self._zeros
            self._zeros = 0
        elif amax > self.bound:
            k = max(1, math.ceil(math.log2(amax / self.bound)))
            while self.bound * 2.0 ** k < amax:
                k += 1
            self._widen(k)
        h, _ = np.histogram(centers, bins=self.bins, range=(-self.bound, self.bound), weights=other.counts)
        self.counts += np.rint(h).astype(np.int64)
        self.counts[self.bins // 2] += other._zeros

    def abs_counts(self) -> np.ndarray:
        """Histogram of |x| over ``[0, bound]`` with ``bins // 2`` bins (exact fold)."""
        half = self.bins // 2
        return self.counts[half:] + self.counts[:half][::-1]


class TensorStats:
    """Running statistics of one tensor: min/max/mean (global and per channel), count, histogram."""

    def __init__(self, name: str = "", *, axis: Optional[int] = None, histogram: bool = False,
                 bins: int = DEFAULT_BINS) -> None:
        self.name = name
        self.axis = axis
        self.count = 0  # elements seen
        self.batches = 0
        self.min = math.inf
        self.max = -math.inf
        self.sum = 0.0
        self.channel_min: Optional[np.ndarray] = None
        self.channel_max: Optional[np.ndarray] = None
        self.channel_sum: Optional[np.ndarray] = None
        self.channel_count = 0  # elements per channel
        self.histogram: Optional[HistogramObserver] = HistogramObserver(bins) if histogram else None

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    @property
    def channel_mean(self) -> Optional[np.ndarray]:
        if self.channel_sum is None or not self.channel_count:
            return None
        return self.channel_sum / self.channel_count

    def update(self, x: np.ndarray) -> None:
        """Fold one batch into the statistics; raises CalibrationError on NaN/Inf."""
        x = np.asarray(x)
        if x.size == 0:
            return
        if x.dtype.kind == "b":
            x = x.astype(np.uint8)
        elif x.dtype.kind not in "iuf":
            x = x.astype(np.float32)
        mn, mx = float(np.min(x)), float(np.max(x))
        if not (math.isfinite(mn) and math.isfinite(mx)):
            bad = "NaN" if (math.isnan(mn) or math.isnan(mx)) else "Inf"
            raise CalibrationError(f"tensor '{self.name}': {bad} values in calibration batch {self.batches}")
        self.min, self.max = min(self.min, mn), max(self.max, mx)
        self.sum += float(np.sum(x, dtype=np.float64))
        self.count += x.size
        self.batches += 1
        if self.axis is not None:
            self._update_channels(x)
        if self.histogram is not None:
            self.histogram.update(x, max(-mn, mx))

    def _update_channels(self, x: np.ndarray) -> None:
        ax = self.axis if self.axis >= 0 else self.axis + x.ndim  # type: ignore[operator]
        if not 0 <= ax < x.ndim:
            raise CalibrationError(f"tensor '{self.name}': channel axis {self.axis} out of range for rank {x.ndim}")
        flat = np.moveaxis(x, ax, 0).reshape(x.shape[ax], -1)
        cmin, cmax = flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
        csum = flat.sum(axis=1, dtype=np.float64)
        if self.channel_sum is None:
            self.channel_min, self.channel_max, self.channel_sum = cmin, cmax, csum
        else:
            if self.channel_sum.shape != csum.shape:
                raise CalibrationError(f"tensor '{self.name}': {csum.shape[0]} channels on axis {self.axis}, "
                                       f"earlier batches had {self.channel_sum.shape[0]}")
            np.minimum(self.channel_min, cmin, out=self.channel_min)
            np.maximum(self.channel_max, cmax, out=self.channel_max)
            self.channel_sum += csum
        self.channel_count += flat.shape[1]

    def merge(self, other: "TensorStats") -> None:
        """Fold statistics gathered elsewhere (another process or data shard) into these."""
        if other.count == 0:
            return
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.sum += other.sum
        self.count += other.count
        self.batches += other.batches
        if other.channel_sum is not None:
            if self.channel_sum is None:
                self.channel_min, self.channel_max = other.channel_min.copy(), other.channel_max.copy()  # type: ignore[union-attr]
                self.channel_sum = other.channel_sum.copy()
            else:
                np.minimum(self.channel_min, other.channel_min, out=self.channel_min)
                np.maximum(self.channel_max, other.channel_max, out=self.channel_max)
                self.channel_sum += other.channel_sum
            self.channel_count += other.channel_count
        if other.histogram is not None:
            if self.histogram is None:
                self.histogram = HistogramObserver(other.histogram.bins)
            self.histogram.merge(other.histogram)

    def __repr__(self) -> str:
        return f"TensorStats({self.name!r}, n={self.count}, min={self.min:g}, max={self.max:g}, mean={self.mean:g})"


# --- ranges ----------------------------------------------------------------------------------------
def _finish(lo: float, hi: float, symmetric: bool) -> Tuple[float, float]:
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        a = max(-lo, hi)
        lo, hi = -a, a
    if hi - lo < MIN_RANGE:
        if symmetric:
            return -MIN_RANGE / 2, MIN_RANGE / 2
        return lo, lo + MIN_RANGE
    return lo, hi


def _quantile(counts: np.ndarray, start: float, width: float, q: float) -> float:
    """The ``q`` quantile (0..1) of a histogram, interpolated linearly inside the bin."""
    total = counts.sum()
    cum = np.cumsum(counts)
    target = q * total
    i = int(np.searchsorted(cum, target, side="left"))
    i = min(i, len(counts) - 1)
    before = cum[i - 1] if i > 0 else 0
    frac = (target - before) / counts[i] if counts[i] else 0.0
    return start + (i + float(np.clip(frac, 0.0, 1.0))) * width


def _smooth(p: np.ndarray, eps: float = 1e-4) -> Optional[np.ndarray]:
    zeros = p == 0
    nz = p.size - int(zeros.sum())
    if nz == 0:
        return None
    eps1 = eps * (p.size - nz) / nz
    out = p + eps * zeros - eps1 * ~zeros
    return np.maximum(out, 1e-12)


def _kl(hist: np.ndarray, i: int, nq: int) -> float:
    sliced = hist[:i].astype(np.float64)
    p = sliced.copy()
    p[-1] += hist[i:].sum()
    nonzero = p != 0
    m = i // nq
    group = np.minimum(np.arange(i) // m, nq - 1)
    qbins = np.bincount(group, weights=sliced, minlength=nq)
    norm = np.bincount(group, weights=nonzero, minlength=nq)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(norm > 0, qbins / np.maximum(norm, 1), 0.0)
    q = per[group] * nonzero
    ps, qs = _smooth(p), _smooth(q)
    if ps is None or qs is None:
        return math.inf
    ps, qs = ps / ps.sum(), qs / qs.sum()
    return float(np.sum(ps * np.log(ps / qs)))


def _entropy_threshold(hist: np.ndarray, nq: int) -> int:
    """TensorRT-style: the bin count ``i`` (threshold = i bins) minimizing KL(P_i || Q_i)."""
    n = len(hist)
    if n <= nq:
        return n
    last_nonzero = int(np.nonzero(hist)[0].max()) + 1 if hist.any() else n
    hi_i = max(nq, min(n, last_nonzero))
    stride = max(1, (hi_i - nq) // 256)
    cands = list(range(nq, hi_i + 1, stride))
    if cands[-1] != hi_i:
        cands.append(hi_i)
    kls = [_kl(hist, i, nq) for i in cands]
    best = cands[int(np.argmin(kls))]
    if stride > 1:
        local = range(max(nq, best - stride + 1), min(hi_i, best + stride - 1) + 1)
        kls = [_kl(hist, i, nq) for i in local]
        best = local[int(np.argmin(kls))]
    return best


def _mse_range(h: HistogramObserver, stats: TensorStats, bits: int, symmetric: bool) -> Tuple[float, float]:
    """Shrink the observed range by the factor minimizing the simulated quantization MSE.

    Each occupied bin contributes ``sub`` evenly spaced points carrying its count; factors are searched
    on a coarse grid, then refined around the best one.
    """
    sub = 4
    w = h.width
    nz = np.nonzero(h.counts)[0]
    left = -h.bound + nz * w
    x = (left[:, None] + (np.arange(sub) + 0.5)[None, :] * (w / sub)).reshape(-1)
    wt = np.repeat(h.counts[nz].astype(np.float64) / sub, sub)
    lo0, hi0 = min(stats.min, 0.0), max(stats.max, 0.0)
    amax = max(-lo0, hi0)

    def err_and_range(alpha: float) -> Tuple[float, Tuple[float, float]]:
        if symmetric:
            t = alpha * amax
            qmax = 2 ** (bits - 1) - 1
            s = t / qmax
            deq = np.clip(np.round(x / s), -qmax, qmax) * s
            rng = (-t, t)
        else:
            lo, hi = alpha * lo0, alpha * hi0
            qmax = 2 ** bits - 1
            s = (hi - lo) / qmax
            zp = round(-lo / s)
            deq = (np.clip(np.round(x / s) + zp, 0, qmax) - zp) * s
            rng = (lo, hi)
        return float(np.dot(wt, (x - deq) ** 2)), rng

    best_alpha, best_err, best = 1.0, math.inf, (lo0, hi0)
    for grid in (np.linspace(0.05, 1.0, 20), None):
        if grid is None:
            grid = np.clip(np.linspace(best_alpha - 0.05, best_alpha + 0.05, 21), 0.01, 1.0)
        for alpha in grid:
            err, rng = err_and_range(float(alpha))
            if err < best_err:
                best_alpha, best_err, best = float(alpha), err, rng
    return best


def compute_range(stats: TensorStats, method: str, *, bits: int = 8, symmetric: bool = False,
                  percentile: float = 99.999) -> Tuple[float, float]:
    """The clipping range ``(lo, hi)`` of a tensor, ``lo <= 0 <= hi`` and ``hi - lo >= MIN_RANGE``.

    ``minmax``: the observed range. ``percentile``: symmetric -> the ``percentile`` of |x|; else
    ``(100 - percentile) / 2`` percent cut from each tail. ``entropy``: the threshold minimizing the
    KL divergence between the clipped histogram and its ``2**(bits-1)``-level quantization (``2**bits``
    for one-sided non-negative data when not symmetric). ``mse``: the shrink factor of the observed
    range that minimizes the simulated ``bits``-bit quantization error over the histogram.
    The histogram methods need ``TensorStats(histogram=True)``.
    """
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method '{method}' (choose one of {', '.join(METHODS)})")
    if stats.count == 0:
        raise CalibrationError(f"tensor '{stats.name}': no calibration data observed")
    if not (math.isfinite(stats.min) and math.isfinite(stats.max)):
        raise CalibrationError(f"tensor '{stats.name}': NaN or Inf in calibration statistics")
    if method == "minmax":
        return _finish(stats.min, stats.max, symmetric)
    h = stats.histogram
    if h is None:
        raise CalibrationError(f"tensor '{stats.name}': method '{method}' needs a histogram (collect with histogram=True)")
    if h.bound == 0.0:  # every value was zero
        return _finish(0.0, 0.0, symmetric)
    amax = max(-stats.min, stats.max)
    w = h.width
    if method == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
        if symmetric:
            t = min(_quantile(h.abs_counts(), 0.0, w, percentile / 100.0), amax)
            return _finish(-t, t, True)
        cut = (100.0 - percentile) / 200.0
        lo = max(_quantile(h.counts, -h.bound, w, cut), stats.min)
        hi = min(_quantile(h.counts, -h.bound, w, 1.0 - cut), stats.max)
        return _finish(lo, hi, False)
    if method == "entropy":
        if not symmetric and stats.min >= 0.0:
            half = h.bins // 2
            i = _entropy_threshold(h.counts[half:], 2 ** bits)
            return _finish(0.0, min(i * w, stats.max), False)
        i = _entropy_threshold(h.abs_counts(), 2 ** (bits - 1))
        t = i * w
        if symmetric:
            return _finish(-min(t, amax), min(t, amax), True)
        return _finish(max(-t, stats.min), min(t, stats.max), False)
    return _finish(*_mse_range(h, stats, bits, symmetric), symmetric)
