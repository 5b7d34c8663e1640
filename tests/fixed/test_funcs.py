"""Worst-case error of every integer transcendental against numpy float, over its whole range."""

from __future__ import annotations

import numpy as np
import pytest

from nanomamba_hw.fixed import funcs as F
from nanomamba_hw.fixed.ops import Fmt, isqrt, leading_one, rshift_round, saturate, SatCounter


def test_isqrt_exact():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.arange(0, 70000), rng.integers(0, 1 << 62, 100000),
                        [(1 << 62) - 1, (1 << 50), (1 << 50) - 1]]).astype(np.int64)
    r = isqrt(x)
    assert np.all(r * r <= x) and np.all((r + 1) * (r + 1) > x)


def test_leading_one():
    x = np.array([1 << k for k in range(63)] + [(1 << k) + 1 for k in range(1, 62)], dtype=np.int64)
    assert leading_one(x).tolist() == list(range(63)) + list(range(1, 62))
    assert leading_one(np.array([0]))[0] == -1


def test_rounding_and_saturation_rules():
    assert rshift_round(np.array([3, 2, -3, -2, 1, -1]), 1).tolist() == [2, 1, -1, -1, 1, 0]
    c = SatCounter()
    out = saturate(np.array([40000, -40000, 5]), Fmt(16, 0), c, "x")
    assert out.tolist() == [32767, -32768, 5] and c["x"] == 2


def test_log2_whole_range():
    # Exhaustive over the first 2**20 integers, then every octave up to 2**62 densely.
    x = np.arange(1, 1 << 20, dtype=np.int64)
    err = np.abs(F.LOG2(x, 0) / 2 ** F.LOG_FRAC - np.log2(x))
    rng = np.random.default_rng(1)
    big = (rng.integers(1 << 20, 1 << 21, 200000) << rng.integers(0, 41, 200000)).astype(np.int64)
    err_big = np.abs(F.LOG2(big, 0) / 2 ** F.LOG_FRAC - np.log2(big.astype(np.float64)))
    worst = max(err.max(), err_big.max())
    assert worst < 8e-5, worst                 # table + interpolation + truncation
    assert F.LOG2(np.array([0]))[0] == F.LOG2.zero_value


def test_exp2_whole_range():
    out = Fmt(44, 20, signed=False)
    y = np.arange(-(24 << 16), 23 << 16, 3, dtype=np.int64)
    got = F.EXP2(y, out).astype(np.float64) / 2 ** out.frac
    ref = 2.0 ** (y / 2 ** 16)
    big = ref > 2 ** -4
    rel = np.abs(got - ref)[big] / ref[big]
    assert rel.max() < 4e-5, rel.max()         # relative error where the result has ≥ 16 bits
    assert np.abs(got - ref).max() <= max(ref.max() * 4e-5, 2 ** -out.frac)
    c = SatCounter()
    assert F.EXP2(np.array([30 << 16]), Fmt(16, 15, False), c, "e")[0] == 65535 and c["e"] == 1


def test_rsqrt_reciprocal_divide():
    rng = np.random.default_rng(2)
    x = rng.integers(1, 1 << 40, 100000).astype(np.int64)
    f = Fmt(40, 30, signed=False)
    xr = x / 2.0 ** 16
    rs = F.rsqrt(x, 16, f) / 2.0 ** 30
    ok = 1 / np.sqrt(xr) > 2 ** -14
    assert (np.abs(rs - 1 / np.sqrt(xr)) * np.sqrt(xr))[ok].max() < 1e-4
    rc = F.reciprocal(x, 16, f) / 2.0 ** 30
    ok = 1 / xr > 2 ** -12
    assert (np.abs(rc - 1 / xr) * xr)[ok].max() < 1e-4
    a = rng.integers(0, 1 << 30, 100000).astype(np.int64)
    q = F.divide(a, 0, x, 0, Fmt(44, 20, False)) / 2.0 ** 20
    ref = a / x
    ok = ref > 0.25          # results of ≥ 18 significant bits: output rounding negligible
    # two log2 errors (≤ 7.5e-5 each, ×ln2 as relative error) plus the exp2 error (≤ 3e-5)
    assert (np.abs(q - ref) / ref)[ok].max() < 1.5e-4
    assert F.divide(np.array([0]), 0, np.array([5]), 0, f)[0] == 0


@pytest.mark.parametrize("name,fn,lo,hi,above", [
    ("sigmoid", F.sigmoid_f, -16, 16, "clamp"),
    ("tanh", F.tanh_f, -8, 8, "clamp"),
    ("silu", F.silu_f, -16, 16, "identity"),
    ("softplus", F.softplus_f, -16, 16, "identity"),
])
def test_pwl_tables_whole_input_range(name, fn, lo, hi, above):
    fin, fout = Fmt(16, 11), Fmt(16, 11)
    t = F.PWLTable.build(name, fn, fin, fout, lo, hi, 9, above=above)
    x = np.arange(fin.min_int, fin.max_int + 1, dtype=np.int64)     # every input
    got = fout.to_float(t(x))
    ref = fn(fin.to_float(x))
    err = np.abs(got - ref)
    # interpolation error h²/8·max|f''| (h = 1/16) plus one output LSB of rounding, and outside
    # the table the documented asymptote (constant or identity) — within 1e-3 everywhere.
    assert err.max() < 1e-3 + fout.lsb, (name, err.max())


def test_pwl_round_trip():
    t = F.PWLTable.build("s", F.sigmoid_f, Fmt(16, 11), Fmt(16, 15, False), -16, 16, 9)
    t2 = F.PWLTable.from_dict(t.to_dict())
    x = np.arange(-32768, 32768, 7)
    np.testing.assert_array_equal(t(x), t2(x))
