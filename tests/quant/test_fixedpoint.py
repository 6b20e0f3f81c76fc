"""edgec.quant.fixedpoint against brute-force big-integer / rational reference implementations."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import List, Tuple

import numpy as np
import pytest

from edgec.quant import fixedpoint as fx

I32_MIN, I32_MAX = fx.INT32_MIN, fx.INT32_MAX
HALF = Fraction(1, 2)


# --- reference definitions: the rounding written as mathematics, on Python ints -----------------
def ref_srdhm(a: int, b: int) -> int:
    """round(a*b / 2^31), ties towards +inf; INT32_MIN^2 saturates."""
    if a == b == I32_MIN:
        return I32_MAX
    return math.floor(Fraction(a * b, 1 << 31) + HALF)


def ref_rdbpot(x: int, e: int) -> int:
    """round(x / 2^e), ties away from zero."""
    f = Fraction(x, 1 << e)
    lo = math.floor(f)
    r = f - lo
    if r > HALF or (r == HALF and x > 0):
        return lo + 1
    return lo


def sat32(v: int) -> int:
    return max(I32_MIN, min(I32_MAX, v))


def ref_mbqm(x: int, m0: int, shift: int, rounding: str) -> int:
    if rounding == "double":
        left, right = max(shift, 0), max(-shift, 0)
        return ref_rdbpot(ref_srdhm(sat32(x * (1 << left)), m0), right)
    return sat32(math.floor(Fraction(x * m0, 1 << (31 - shift)) + HALF))


def edge_values(rng: np.random.Generator, n: int) -> np.ndarray:
    special = [0, 1, -1, 2, -2, 3, -3, I32_MIN, I32_MIN + 1, I32_MAX, I32_MAX - 1, 1 << 30, -(1 << 30),
               (1 << 15) + 1, -(1 << 15) - 1, 127, -128, 255, -255, 1 << 20, -(1 << 20) + 1]
    rand = list(rng.integers(I32_MIN, I32_MAX, n, endpoint=True))
    small = list(rng.integers(-4096, 4096, n))
    return np.array(special + rand + small, dtype=np.int64)


# --- rounding helpers ----------------------------------------------------------------------------
def test_round_helpers() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999999999999994, -0.49999999999999994, 2.4, -2.6, 7.0])
    assert fx.round_half_even(x).tolist() == [0, 2, 2, -0, -2, -2, 0, -0, 2, -3, 7]
    assert fx.round_half_away(x).tolist() == [1, 2, 3, -1, -2, -3, 0, -0, 2, -3, 7]
    f32 = np.array([0.5, -1.5, 4194304.5], dtype=np.float32)
    assert fx.round_half_away(f32).tolist() == [1, -2, 4194305]


# --- QuantizeMultiplier --------------------------------------------------------------------------
@pytest.mark.parametrize("m, expect", [
    (0.002, (1099511628, -8)),
    (0.02 * 0.005 / 0.05, (1099511628, -8)),
    (0.5, (1 << 30, 0)),
    (1.0, (1 << 30, 1)),
    (0.75, (1610612736, 0)),
    (1.0 - 2.0 ** -40, (1 << 30, 1)),  # M0 rounds to 2^31: halved, shift + 1
    (2.0 ** -40, (0, 0)),  # shift < -31
    (2.0 ** -31, (1 << 30, -30)),
    (0.0, (0, 0)),
])
def test_quantize_multiplier_examples(m: float, expect: Tuple[int, int]) -> None:
    assert fx.quantize_multiplier(m) == expect


def test_quantize_multiplier_single_clamps_shift() -> None:
    assert fx.quantize_multiplier(2.0 ** 31) == (1 << 30, 32)
    assert fx.quantize_multiplier(2.0 ** 31, "single") == ((1 << 31) - 1, 30)
    assert fx.quantize_multiplier(3.0, "single") == fx.quantize_multiplier(3.0)
    with pytest.raises(ValueError):
        fx.quantize_multiplier(-1.0)
    with pytest.raises(ValueError):
        fx.quantize_multiplier(float("nan"))


def test_quantize_multiplier_random_against_rational() -> None:
    rng = np.random.default_rng(0)
    ms = np.concatenate([10.0 ** rng.uniform(-9, 2, 3000), rng.uniform(0.4, 1.1, 1000)])
    for m in ms:
        m0, shift = fx.quantize_multiplier(float(m))
        e = math.frexp(m)[1]
        exact = Fraction(float(m)) * (1 << (31 - e))  # in [2^30, 2^31)
        q = math.floor(exact + HALF)  # half away from zero for a positive value
        if q == 1 << 31:
            q, e = 1 << 30, e + 1
        if e < -31:
            q, e = 0, 0
        assert (m0, shift) == (q, e)
        if m0:
            assert abs(Fraction(m0) / (1 << (31 - shift)) - Fraction(float(m))) <= Fraction(1, 1 << (32 - shift))
    m0s, shifts = fx.quantize_multipliers(ms[:5])
    assert [(int(a), int(b)) for a, b in zip(m0s, shifts)] == [fx.quantize_multiplier(float(v)) for v in ms[:5]]


# --- SRDHM / RoundingDivideByPOT -----------------------------------------------------------------
def test_srdhm_against_reference() -> None:
    rng = np.random.default_rng(1)
    a = edge_values(rng, 1500)
    b = np.concatenate([edge_values(rng, 1500)[: len(a)]])
    rng.shuffle(b)
    # ties: a*b = odd * 2^30
    ta = rng.integers(-(1 << 20), 1 << 20, 500) * 2 + 1
    a = np.concatenate([a, ta, ta, [I32_MIN, I32_MIN, I32_MAX]])
    b = np.concatenate([b, np.full(500, 1 << 30), np.full(500, -(1 << 30)), [I32_MIN, I32_MAX, I32_MIN]])
    got = fx.srdhm(a, b)
    want = [ref_srdhm(int(x), int(y)) for x, y in zip(a, b)]
    assert got.tolist() == want
    assert fx.srdhm(np.array([I32_MIN]), np.array([I32_MIN]))[0] == I32_MAX


def test_rdbpot_against_reference() -> None:
    rng = np.random.default_rng(2)
    xs = edge_values(rng, 300)
    xs_list: List[int] = []
    es_list: List[int] = []
    for e in range(0, 32):
        xs_list += [int(v) for v in xs]
        es_list += [e] * len(xs)
        if e:
            k = rng.integers(-1000, 1000, 50)
            ties = k * (1 << e) + (1 << (e - 1))  # exact halves, both signs
            ties = ties[(ties >= I32_MIN) & (ties <= I32_MAX)]
            xs_list += [int(v) for v in ties]
            es_list += [e] * len(ties)
    x, e = np.array(xs_list, dtype=np.int64), np.array(es_list, dtype=np.int64)
    assert fx.rounding_divide_by_pot(x, e).tolist() == [ref_rdbpot(a, b) for a, b in zip(xs_list, es_list)]
    assert fx.rounding_divide_by_pot(np.array([-3, -1, 1, 3, 5, -5]), 1).tolist() == [-2, -1, 1, 2, 3, -3]


# --- MultiplyByQuantizedMultiplier, both modes ---------------------------------------------------
@pytest.mark.parametrize("rounding", ["double", "single"])
def test_mbqm_against_reference(rounding: str) -> None:
    rng = np.random.default_rng(3)
    xs, m0s, shifts = [], [], []
    m_pool = [0, 1, 1 << 30, (1 << 30) + 1, I32_MAX, 1099511628, 1518500250]
    for shift in range(-31, 31):
        x = edge_values(rng, 40)
        m = np.concatenate([rng.integers(1 << 30, 1 << 31, len(x) - len(m_pool)), m_pool])
        rng.shuffle(m)
        xs.append(x)
        m0s.append(m)
        shifts.append(np.full(len(x), shift))
        # ties of the final rounding: M0 = 2^30, odd multiples of 2^(-shift)
        if shift <= 0:
            k = rng.integers(-(1 << 10), 1 << 10, 20) * 2 + 1
            xs.append(k << min(-shift, 20))
            m0s.append(np.full(20, 1 << 30))
            shifts.append(np.full(20, shift))
    x, m0, sh = (np.concatenate(v).astype(np.int64) for v in (xs, m0s, shifts))
    got = fx.multiply_by_quantized_multiplier(x, m0, sh, rounding)
    want = [ref_mbqm(int(a), int(b), int(c), rounding) for a, b, c in zip(x, m0, sh)]
    assert got.tolist() == want
    # both modes stay within one unit of the exact product when nothing saturates
    exact = np.array([float(Fraction(int(a) * int(b), 1 << (31 - int(c)))) for a, b, c in zip(x, m0, sh)])
    inside = (np.abs(exact) < 2 ** 30) & (np.abs(x.astype(float) * 2.0 ** np.maximum(sh, 0)) <= I32_MAX)
    assert np.all(np.abs(got[inside] - exact[inside]) <= 1.0)


def test_mbqm_modes_differ_on_ties() -> None:
    # x * 2^-2 with x = -6: exact -1.5; double: SRDHM(-6, 2^30) = -3, RDBPOT(-3, 1) = -2 (away from zero);
    # single: floor(-1.5 + 0.5) = -1 (towards +inf).
    m0, shift = fx.quantize_multiplier(0.25)
    assert fx.multiply_by_quantized_multiplier(np.array([-6]), m0, shift, "double").tolist() == [-2]
    assert fx.multiply_by_quantized_multiplier(np.array([-6]), m0, shift, "single").tolist() == [-1]
    assert fx.multiply_by_quantized_multiplier(np.array([6]), m0, shift, "double").tolist() == [2]
    assert fx.multiply_by_quantized_multiplier(np.array([6]), m0, shift, "single").tolist() == [2]
    with pytest.raises(ValueError):
        fx.multiply_by_quantized_multiplier(np.array([1]), 1 << 30, 31, "single")
    with pytest.raises(ValueError):
        fx.multiply_by_quantized_multiplier(np.array([1 << 31]), 1 << 30, 0)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_requantize_per_channel(rounding: str) -> None:
    rng = np.random.default_rng(4)
    acc = rng.integers(-(1 << 20), 1 << 20, (2, 3, 4, 5))
    ms = np.array([0.0031, 0.0007, 0.012])
    m0, sh = fx.quantize_multipliers(ms, rounding)
    got = fx.requantize(acc, m0, sh, -5, -128, 127, rounding, axis=1)
    for c in range(3):
        one = fx.requantize(acc[:, c], int(m0[c]), int(sh[c]), -5, -128, 127, rounding)
        assert np.array_equal(got[:, c], one)
        ref = np.array([min(127, max(-128, ref_mbqm(int(a), int(m0[c]), int(sh[c]), rounding) - 5))
                        for a in acc[:, c].reshape(-1)])
        assert np.array_equal(one.reshape(-1), ref)
    assert got.min() >= -128 and got.max() <= 127


def test_activation_range() -> None:
    assert fx.activation_range("Relu", (), 0.05, -10, -128, 127) == (-10, 127)
    assert fx.activation_range("Clip", (0.0, 6.0), 0.05, -10, -128, 127) == (-10, 110)
    assert fx.activation_range("Clip", (None, 1.0), 0.1, 0, -128, 127) == (-128, 10)
    assert fx.activation_range("", (), 0.1, 0, -128, 127) == (-128, 127)
    # TFLite rounds the bounds half away from zero: 0.25 / 0.1 = 2.5 -> 3
    assert fx.activation_range("Clip", (-0.25, 0.25), np.float32(0.1), 0, -128, 127) == (-3, 3)


# --- Add / Sub / Mul -----------------------------------------------------------------------------
def ref_add(q1: int, q2: int, p: fx.AddParams) -> int:
    a = ref_mbqm((q1 + p.input1_offset) << p.left_shift, p.input1_multiplier, p.input1_shift, p.rounding)
    b = ref_mbqm((q2 + p.input2_offset) << p.left_shift, p.input2_multiplier, p.input2_shift, p.rounding)
    raw = a - b if p.sub else a + b
    return min(p.qmax, max(p.qmin, ref_mbqm(raw, p.output_multiplier, p.output_shift, p.rounding) + p.output_offset))


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("sub", [False, True])
def test_quantized_add(rounding: str, sub: bool) -> None:
    rng = np.random.default_rng(5)
    q1 = rng.integers(-128, 128, 3000)
    q2 = rng.integers(-128, 128, 3000)
    s1, z1, s2, z2, so, zo = 0.031, 7, 0.0123, -20, 0.04, 3
    p = fx.add_params(s1, z1, s2, z2, so, zo, -128, 127, sub=sub, rounding=rounding)
    assert p.left_shift == 20 and p.input1_offset == -7 and p.input2_offset == 20
    got = fx.quantized_add(q1, q2, p)
    assert got.tolist() == [ref_add(int(a), int(b), p) for a, b in zip(q1, q2)]
    f1, f2 = float(np.float32(s1)) * (q1 - z1), float(np.float32(s2)) * (q2 - z2)
    real = (f1 - f2 if sub else f1 + f2) / float(np.float32(so)) + zo
    ideal = np.clip(np.rint(real), -128, 127)
    assert np.abs(got - ideal).max() <= 1
    assert np.mean(got == ideal) > 0.97
    # broadcasting
    assert fx.quantized_add(q1[:4].reshape(4, 1), q2[:3].reshape(1, 3), p).shape == (4, 3)


def test_sub_of_equal_inputs_is_zero_point() -> None:
    p = fx.add_params(0.02, 5, 0.02, 5, 0.05, -3, sub=True)
    q = np.arange(-128, 128)
    assert np.all(fx.quantized_add(q, q, p) == -3)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_quantized_mul(rounding: str) -> None:
    rng = np.random.default_rng(6)
    q1, q2 = rng.integers(-128, 128, 2000), rng.integers(-128, 128, 2000)
    s1, s2, so = 0.02, 0.03, 0.07
    m0, sh = fx.quantize_multiplier(float(np.float32(s1)) * float(np.float32(s2)) / float(np.float32(so)), rounding)
    got = fx.quantized_mul(q1, 4, q2, -9, m0, sh, 1, -128, 127, rounding)
    want = [min(127, max(-128, ref_mbqm((int(a) - 4) * (int(b) + 9), m0, sh, rounding) + 1)) for a, b in zip(q1, q2)]
    assert got.tolist() == want
