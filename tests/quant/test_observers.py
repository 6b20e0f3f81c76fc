"""Streaming statistics, histogram merging and the range methods."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.errors import CalibrationError
from edgec.quant.observers import MIN_RANGE, HistogramObserver, TensorStats, compute_range


def _stream(parts, **kw) -> TensorStats:
    s = TensorStats("t", **kw)
    for p in parts:
        s.update(p)
    return s


def test_streaming_equals_one_shot() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, 5, 6)) * 3 + 1).astype(np.float32)
    parts = np.split(x, [1, 9, 10, 30])
    s = _stream(parts, axis=1)
    assert s.min == x.min() and s.max == x.max() and s.count == x.size and s.batches == 5
    assert s.mean == pytest.approx(x.astype(np.float64).mean(), rel=1e-12)
    np.testing.assert_array_equal(s.channel_min, x.min(axis=(0, 2)))
    np.testing.assert_array_equal(s.channel_max, x.max(axis=(0, 2)))
    np.testing.assert_allclose(s.channel_mean, x.astype(np.float64).mean(axis=(0, 2)), rtol=1e-12)
    neg = _stream(parts, axis=-1)
    np.testing.assert_allclose(neg.channel_mean, x.astype(np.float64).mean(axis=(0, 1)), rtol=1e-12)
    a, b = _stream(parts[:2], axis=1, histogram=True), _stream(parts[2:], axis=1, histogram=True)
    a.merge(b)
    assert (a.min, a.max, a.count) == (s.min, s.max, s.count)
    np.testing.assert_allclose(a.channel_mean, s.channel_mean)
    assert a.histogram.total == x.size


def test_channel_count_change_is_an_error() -> None:
    s = TensorStats("c", axis=1)
    s.update(np.ones((2, 3)))
    with pytest.raises(CalibrationError, match="'c': 4 channels"):
        s.update(np.ones((2, 4)))


def test_histogram_widens_exactly_and_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    # ranges grow batch after batch: the histogram widens several times
    parts = [rng.standard_normal(20000) * scale + shift for scale, shift in [(0.1, 0), (1, 0.5), (3, -1), (0.5, 2), (10, 0)]]
    x = np.concatenate(parts)
    s = _stream(parts, histogram=True)
    h = s.histogram
    assert h.total == x.size and h.bound >= np.abs(x).max() and h.bound < 2 * np.abs(x).max()
    # widening merged bins exactly: the same as binning all the data on the final grid
    direct, _ = np.histogram(x, bins=h.bins, range=(-h.bound, h.bound))
    assert np.abs(direct - h.counts).sum() <= 4  # only values sitting on a bin edge may move
    for p in (99.0, 99.9, 99.999):
        lo, hi = compute_range(s, "percentile", percentile=p)
        cut = (100 - p) / 2
        # the sample at that rank lies in the bin where the histogram interpolates
        assert abs(hi - np.percentile(x, 100 - cut, method="inverted_cdf")) <= h.width * 1.001
        assert abs(lo - np.percentile(x, cut, method="inverted_cdf")) <= h.width * 1.001
        slo, shi = compute_range(s, "percentile", percentile=p, symmetric=True)
        assert slo == -shi and abs(shi - np.percentile(np.abs(x), p, method="inverted_cdf")) <= h.width * 1.001


def test_histogram_merge_of_observers() -> None:
    rng = np.random.default_rng(2)
    a_data, b_data = rng.standard_normal(5000), rng.standard_normal(5000) * 4
    a, b = HistogramObserver(256), HistogramObserver(256)
    a.update(a_data)
    b.update(b_data)
    a.merge(b)
    assert a.total == 10000 and a.bound >= np.abs(b_data).max()


@pytest.mark.parametrize("method, batches", [("entropy", 1), ("mse", 1), ("mse", 7)])
def test_entropy_and_mse_clip_gaussian_outliers(method, batches) -> None:
    # entropy (KL) needs a well-resolved histogram: with 1024 |x| bins, a range widened 2x mid-stream
    # leaves too few bins under the data for its staircase KL curve to favour clipping.
    x = np.random.default_rng(3).standard_normal(1_000_000).astype(np.float32)
    s = _stream(np.array_split(x, batches), histogram=True)
    lo, hi = compute_range(s, method, symmetric=True)
    assert 2.0 < hi < np.abs(x).max() * 0.95 and lo == -hi
    lo, hi = compute_range(s, method)
    assert x.min() <= lo < 0 < hi <= x.max() and hi - lo < (x.max() - x.min()) * 0.97
    r = _stream([np.maximum(x, 0)], histogram=True)  # one-sided (ReLU)
    lo, hi = compute_range(r, method)
    assert lo == 0 and 0.5 < hi < x.max()


def test_minmax_and_bits() -> None:
    x = np.random.default_rng(4).standard_normal(100000)
    s = _stream([np.abs(x) + 3], histogram=True)
    assert compute_range(s, "minmax") == (0.0, pytest.approx(np.abs(x).max() + 3))  # includes zero
    m8, m4 = compute_range(s, "mse", bits=8)[1], compute_range(s, "mse", bits=4)[1]
    assert m4 < m8  # fewer bits: clip harder


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("value", [0.0, 3.0, -2.0])
def test_degenerate_constant_tensors(method, symmetric, value) -> None:
    s = _stream([np.full((4, 4), value, np.float32)] * 3, histogram=True)
    lo, hi = compute_range(s, method, symmetric=symmetric)
    assert lo <= 0 <= hi and hi - lo >= MIN_RANGE
    if value == 0:
        assert hi - lo < 1e-3
    else:
        assert max(-lo, hi) == pytest.approx(abs(value))
    if symmetric:
        assert lo == -hi


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_raise(bad) -> None:
    s = TensorStats("conv1_out")
    s.update(np.ones(3))
    with pytest.raises(CalibrationError, match="tensor 'conv1_out'"):
        s.update(np.array([1.0, bad]))


def test_range_errors() -> None:
    with pytest.raises(CalibrationError, match="no calibration data"):
        compute_range(TensorStats("e"), "minmax")
    s = _stream([np.ones(4)])
    with pytest.raises(CalibrationError, match="needs a histogram"):
        compute_range(s, "entropy")
    with pytest.raises(CalibrationError, match="unknown calibration method"):
        compute_range(s, "magic")


def test_integer_and_bool_tensors() -> None:
    s = _stream([np.array([[1, 5], [-3, 2]], np.int8), np.array([[7, 0]], np.int8)], histogram=True)
    assert (s.min, s.max, s.count) == (-3, 7, 6) and s.mean == pytest.approx(12 / 6)
    b = _stream([np.array([True, False, True])])
    assert (b.min, b.max) == (0, 1)
