"""Function units in the Amaranth simulator, bit-exact with ``fixed.funcs`` (with stalls)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from nanomamba_hw.fixed import funcs as F
from nanomamba_hw.fixed.frontend import GATE_TABLE
from nanomamba_hw.fixed.ops import Fmt
from nanomamba_hw.fixed.snr import TANH_TABLE
from nanomamba_hw.hw.funcs import Exp2Unit, Log2Unit, PWLUnit
from nanomamba_hw.hw.sim_util import run_sim, stream_get_n, stream_put_all


def _through(dut, inputs, stall=0.3, seed=0):
    got = []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, inputs, stall=stall, rng=random.Random(seed))

    async def drain(ctx):
        got.extend(await stream_get_n(ctx, dut.o, len(inputs), stall=stall,
                                      rng=random.Random(seed + 1)))

    run_sim(dut, [feed, drain])
    return np.array(got, dtype=np.int64)


def test_log2_unit_bit_exact():
    rng = np.random.default_rng(0)
    width, frac = 40, 16
    xs = [0, 1, 2, 3, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, (1 << width) - 1, 1 << (width - 1)]
    xs += [int(v) for v in rng.integers(1, 1 << 20, 300)]
    xs += [int(v) for v in (rng.integers(1, 1 << 20, 300) << rng.integers(0, 20, 300))]
    xs = [x for x in xs if x < (1 << width)]
    got = _through(Log2Unit(in_width=width, in_frac=frac), xs)
    np.testing.assert_array_equal(got, F.LOG2(np.array(xs), frac))


@pytest.mark.parametrize("out_fmt", [Fmt(16, 15, False), Fmt(40, 16, False), Fmt(17, 16, False)])
def test_exp2_unit_bit_exact(out_fmt):
    rng = np.random.default_rng(1)
    width = 28
    ys = [0, -1, 1, (1 << 16) - 1, -(1 << 16), -(30 << 16), 40 << 16, -(1 << (width - 1)),
          (1 << (width - 1)) - 1]
    ys += [int(v) for v in rng.integers(-(24 << 16), 24 << 16, 500)]
    got = _through(Exp2Unit(in_width=width, out_fmt=out_fmt), ys)
    np.testing.assert_array_equal(got, F.EXP2(np.array(ys), out_fmt))


@pytest.mark.parametrize("table", [
    TANH_TABLE, GATE_TABLE,
    F.PWLTable.build("silu", F.silu_f, Fmt(16, 10), Fmt(16, 11), -16.0, 16.0, 9, above="identity"),
    F.PWLTable.build("softplus", F.softplus_f, Fmt(16, 9), Fmt(16, 10), -16.0, 16.0, 9,
                     above="identity"),
], ids=lambda t: t.name)
def test_pwl_unit_bit_exact(table):
    fi = table.in_fmt
    rng = np.random.default_rng(2)
    xs = list(range(fi.min_int, fi.max_int + 1, 97)) + [fi.min_int, fi.max_int, table.lo,
                                                        table.lo - 1, table.hi, table.hi - 1]
    xs = [x for x in xs if fi.min_int <= x <= fi.max_int]
    xs += [int(v) for v in rng.integers(fi.min_int, fi.max_int + 1, 200)]
    got = _through(PWLUnit(table), xs, stall=0.2)
    np.testing.assert_array_equal(got, table(np.array(xs)))


def test_units_accept_one_input_per_cycle():
    """Without stalls, N inputs come out in N + latency cycles: full throughput."""
    dut = Exp2Unit(in_width=24, out_fmt=Fmt(16, 15, False))
    n = 64
    result = {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        outs, cycle = 0, 0
        while outs < n:
            ctx.set(dut.i.payload, -(cycle << 10))
            *_, ov = await ctx.tick().sample(dut.o.valid)
            cycle += 1
            outs += int(ov)
        result["cycles"] = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert result["cycles"] <= n + dut.latency + 1
