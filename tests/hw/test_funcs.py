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


def _multi_inputs(tables, n_rand, seed):
    rng = np.random.default_rng(seed)
    items = []
    for k, t in enumerate(tables):
        fi = t.in_fmt
        xs = list(range(fi.min_int, fi.max_int + 1, 211)) + [
            fi.min_int, fi.max_int, t.lo, t.lo - 1, t.lo + 1, t.hi, t.hi - 1, t.hi + 1, 0, -1]
        xs += [int(v) for v in rng.integers(fi.min_int, fi.max_int + 1, n_rand)]
        items += [(x, k) for x in xs if fi.min_int <= x <= fi.max_int]
    rng.shuffle(items)
    return items


def test_pwl_multi_unit_activation_tables():
    """The block's four activation tables (and the front end's tanh and gate tables, other
    formats and rules) behind one PWLMultiUnit, table chosen per input, with stalls."""
    from nanomamba_hw.fixed.block import activation_tables
    from nanomamba_hw.fixed.formats import Formats
    from nanomamba_hw.hw.funcs import PWLMultiUnit
    obs = {"norm": 4, "resid": 60, "ln": 4, "inproj": 20, "conv": 9, "xc": 9, "xproj": 6,
           "q": 9, "dtin": 8, "dtpre": 30, "delta": 3, "dbx": 0.05, "h": 0.05, "y": 0.1,
           "siluz": 4, "yz": 0.05, "fn": 4, "logits": 10}
    for f in (Formats.calibrate(obs),):
        tables = list(activation_tables(f).values()) + [TANH_TABLE, GATE_TABLE]
        items = _multi_inputs(tables, 150, 3)
        got = _through(PWLMultiUnit(tables), [{"x": x, "sel": k} for x, k in items], stall=0.2)
        want = [int(tables[k](np.array([x]))[0]) for x, k in items]
        np.testing.assert_array_equal(got, want)


def test_pwl_multi_unit_model_tables():
    """The shipped model's four activation tables, every input of a strided sweep."""
    from pathlib import Path

    from nanomamba_hw.fixed.block import activation_tables
    from nanomamba_hw.fixed.model import FixedParams
    from nanomamba_hw.hw.funcs import PWLMultiUnit
    art = Path(__file__).resolve().parents[2] / "model" / "nanomamba-tiny-dualpcen.int8.json"
    tables = list(activation_tables(FixedParams.load(art).formats).values())
    items = _multi_inputs(tables, 100, 4)
    got = _through(PWLMultiUnit(tables), [{"x": x, "sel": k} for x, k in items], stall=0.1)
    want = [int(tables[k](np.array([x]))[0]) for x, k in items]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("out_fmt", [Fmt(17, 16, False), Fmt(16, 15, False), Fmt(18, 16, False),
                                     Fmt(40, 16, False), Fmt(12, 14, False)])
def test_exp2_narrow_unit_bit_exact(out_fmt):
    """Exp2NarrowUnit (clamped shift) gives EXP2's values over the whole shift range."""
    from nanomamba_hw.hw.funcs import Exp2NarrowUnit
    rng = np.random.default_rng(5)
    width = 32
    ys = [0, -1, 1, (1 << 16) - 1, -(1 << 16), -(17 << 16), -(18 << 16), -(19 << 16) + 5,
          (1 << 16) + 7, 2 << 16, 40 << 16, -(1 << (width - 1)), (1 << (width - 1)) - 1]
    ys += [int(v) for v in rng.integers(-(24 << 16), 24 << 16, 400)]
    ys += [int(v) for v in rng.integers(-(3 << 16), 3 << 16, 300)]
    got = _through(Exp2NarrowUnit(in_width=width, out_fmt=out_fmt), ys)
    np.testing.assert_array_equal(got, F.EXP2(np.array(ys), out_fmt))


# ------------------------------------------------------------------------------------------------
# FuncUnit: one pipeline for every log2 / exp2 / table operation of the spectral stages
# ------------------------------------------------------------------------------------------------

def _func_ops():
    from nanomamba_hw.hw.funcs import FuncOp
    return [
        FuncOp.log2(0), FuncOp.log2(16), FuncOp.log2(20), FuncOp.log2(30),
        FuncOp.exp2(11, offset=15, cap=(1 << 22) - 1),      # SNR ratio
        FuncOp.exp2(16, cap=(1 << 40) - 1),                 # PCEN gain (+ δ)
        FuncOp.exp2(14, cap=(1 << 19) - 1),                 # PCEN power (− δ^r)
        FuncOp.exp2(15, cap=1 << 15),                       # SF, tilt: min(·, 1.0)
        FuncOp.pwl(TANH_TABLE), FuncOp.pwl(GATE_TABLE),
    ]


def _func_operands(ops, rng, n):
    """Random operations with operands covering each op's whole domain and its edges."""
    out = []
    for _ in range(n):
        sub = 0
        k = int(rng.integers(len(ops)))
        op = ops[k]
        add = 0
        if op.kind == "log2":
            e = int(rng.integers(0, 45))
            x = int(rng.integers(0, 1 << e)) if e else int(rng.integers(0, 2))
            if rng.random() < 0.1:
                x = int(rng.choice([0, 1, (1 << 44) - 1, 1 << 43, (1 << 16) - 1, 1 << 16]))
        elif op.kind == "exp2":
            x = int(rng.integers(-(60 << 16), 60 << 16))
            if rng.random() < 0.3:
                x = int(rng.integers(-(30 << 16), 30 << 16))
            if rng.random() < 0.05:
                x = int(rng.choice([-(1 << 33), (1 << 33) - 1, 0, -1, 1 << 16]))
            add = int(rng.integers(-(1 << 19), 1 << 20)) if rng.random() < 0.5 else 0
            sub = int(rng.integers(-(20 << 16), 20 << 16)) if rng.random() < 0.5 else 0
            x += sub
        else:
            fi = op.table.in_fmt
            x = int(rng.integers(fi.min_int, fi.max_int + 1))
        out.append((k, x, add, sub))
    return out


def check_func_unit(dut, ops, seq, rng):
    """Drive ``seq`` ((op index, x, add, sub) tuples) into FuncUnit ``dut``, one per cycle with
    ~10 % idle cycles, and assert every log2/table and exp2 result equals the fixed model's
    function (``FuncOp.reference``) in issue order."""
    from nanomamba_hw.hw.funcs import FuncUnit
    got_lp, got_exp = [], []

    async def tb(ctx):
        pending = []
        for cyc in range(len(seq) + FuncUnit.LAT_EXP + 2):
            if cyc < len(seq) and rng.random() < 0.9:
                k, x, add, sub = seq[cyc]
                for sig, v in ((dut.i_valid, 1), (dut.i_op, k), (dut.i_x, x), (dut.i_add, add),
                               (dut.i_sub, sub)):
                    ctx.set(sig, v)
                pending.append((k, x, add, sub))
            else:
                ctx.set(dut.i_valid, 0)
            await ctx.tick()
            if ctx.get(dut.o_lp_valid):
                got_lp.append(ctx.get(dut.o_lp))
            if ctx.get(dut.o_exp_valid):
                got_exp.append(ctx.get(dut.o_exp))
        assert got_lp == [int(ops[k].reference(x)) for k, x, _, _ in pending
                          if ops[k].kind != "exp2"]
        assert got_exp == [int(ops[k].reference(x, a, s)) for k, x, a, s in pending
                           if ops[k].kind == "exp2"]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("seed", [0, 1])
def test_func_unit_bit_exact(seed):
    """Random op sequences, one per cycle (with idle cycles): every result equals the fixed
    model's function (``FuncOp.reference``), at the unit's fixed latencies."""
    from nanomamba_hw.hw.funcs import FuncUnit
    ops = _func_ops()
    rng = np.random.default_rng(seed)
    check_func_unit(FuncUnit(ops, log_width=44, exp_width=34), ops,
                    _func_operands(ops, rng, 1500), rng)


def test_func_unit_latencies():
    """A result leaves exactly LAT_LP / LAT_EXP cycles after its operands are presented."""
    from nanomamba_hw.hw.funcs import FuncOp, FuncUnit
    ops = [FuncOp.log2(0), FuncOp.exp2(16, cap=(1 << 40) - 1)]
    dut = FuncUnit(ops)
    seen = {}

    async def tb(ctx):
        for k in range(2):
            ctx.set(dut.i_valid, 1)
            ctx.set(dut.i_op, k)
            ctx.set(dut.i_x, 5 << 16 if k else 1000)
            await ctx.tick()
            ctx.set(dut.i_valid, 0)
            for cyc in range(1, 12):
                if ctx.get(dut.o_exp_valid if k else dut.o_lp_valid):
                    seen[k] = cyc
                    break
                await ctx.tick()
        assert seen == {0: FuncUnit.LAT_LP, 1: FuncUnit.LAT_EXP}

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("negate_d", [False, True], ids=["d", "neg_d"])
@pytest.mark.parametrize("table", [F.LOG2.table, F.EXP2.table], ids=["log2", "exp2"])
def test_segment_rom_words(table, negate_d):
    """Every word of a segment ROM read back in simulation is (table[i], table[i+1] − table[i])
    of the fixed model's table (the difference negated with ``negate_d``); the units above
    interpolate from these."""
    from amaranth.hdl import Module

    from nanomamba_hw.hw.funcs import segment_rom
    m = Module()
    port, seg = segment_rom(m, "rom", table, negate_d=negate_d)
    t = [int(v) for v in table]
    got = []

    async def read_all(ctx):
        for i in range(len(t) - 1):
            ctx.set(port.addr, i)
            got.append((ctx.get(seg.a), ctx.get(seg.d)))

    sim = Simulator(m)
    sim.add_testbench(read_all)
    sim.run()
    sign = -1 if negate_d else 1
    assert got == [(t[i], sign * (t[i + 1] - t[i])) for i in range(len(t) - 1)]


def test_segment_rom_rejects_decreasing_table():
    from amaranth.hdl import Fragment, Module

    from nanomamba_hw.hw.funcs import segment_rom
    m = Module()
    with pytest.raises(ValueError, match="increasing"):
        segment_rom(m, "rom", [0, 5, 3])
    Fragment.get(m, None)           # elaborated, so Amaranth does not warn it was unused
