"""OrMux (hw/common.py): the shared-operand AND-OR, combinational and registered.

Seven sites drive a signed 20-bit target with operands of mixed widths and signedness (two
sites share one expression: six terms). Each cycle the testbench picks at most one site and
random source values; the expected target is computed here from the pick alone (the chosen
operand extended by its own signedness and cut to 20 bits, or 0), so the OrMux's grouping,
extension and OR are checked against plain integer arithmetic. The registered form must show
the same value one cycle later, also when the unit's domain is gated by an ``EnableInserter``
and the registers sit outside it (``regs_in``), and it must leave the AND to the flip-flops: a
synthesis check counts its LUTs.
"""

from __future__ import annotations

import random

import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, EnableInserter, Module, Signal, signed, unsigned

from nanomamba_hw.hw.common import OrMux
from nanomamba_hw.hw.sim_util import run_sim

TARGET_BITS = 20
# (width, signed) of the sources; sites 3 and 4 both drive source 3
SOURCES = [(12, False), (20, True), (7, True), (16, False), (20, True), (20, False)]
SITE_SOURCE = [0, 1, 2, 3, 3, 4, 5]


class _Unit(Elaboratable):
    """Sites 0…6 drive ``t`` with source ``SITE_SOURCE[k]`` while ``pick == k``; with
    ``gated``, the unit's domain only runs while ``en`` is high (the registered terms outside)."""

    def __init__(self, *, registered: bool, gated: bool = False):
        self.registered, self.gated = registered, gated
        self.pick = Signal(range(len(SITE_SOURCE) + 1))     # len(SITE_SOURCE): no site
        self.src = [Signal(signed(w) if s else unsigned(w), name=f"src{i}")
                    for i, (w, s) in enumerate(SOURCES)]
        self.en = Signal(init=1)
        self.t = Signal(signed(TARGET_BITS))
        self.ticks = Signal(8)      # a register: even the combinational form has a clock

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.ticks.eq(self.ticks + 1)
        outer = Module() if self.gated else None
        bus = OrMux(m, "bus", registered=self.registered, regs_in=outer, t=self.t)
        with m.Switch(self.pick):
            for k, s in enumerate(SITE_SOURCE):
                with m.Case(k):
                    bus.drive(t=self.src[s])
        bus.emit()
        if not self.gated:
            return m
        outer.submodules.core = EnableInserter({"sync": self.en})(m)
        return outer


def _expected(pick: int, vals: list[int]) -> int:
    if pick >= len(SITE_SOURCE):
        return 0
    v = vals[SITE_SOURCE[pick]]                  # the source's integer value (signed as given)
    v &= (1 << TARGET_BITS) - 1                  # extension by its sign, cut to the target
    return v - (1 << TARGET_BITS) if v >> (TARGET_BITS - 1) else v


def _random_values(rng: random.Random) -> list[int]:
    out = []
    for w, s in SOURCES:
        lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if s else (0, (1 << w) - 1)
        out.append(rng.choice([lo, hi, rng.randint(lo, hi)]))
    return out


@pytest.mark.parametrize("registered,gated", [(False, False), (True, False), (True, True)])
def test_ormux_selects_the_active_site(registered, gated):
    dut = _Unit(registered=registered, gated=gated)
    rng = random.Random(7)
    steps = [(rng.randrange(len(SITE_SOURCE) + 1), _random_values(rng)) for _ in range(300)]

    async def tb(ctx):
        prev = None
        for pick, vals in steps:
            ctx.set(dut.pick, pick)
            for sig, v in zip(dut.src, vals):
                ctx.set(sig, v)
            if gated:
                ctx.set(dut.en, rng.random() < 0.7)    # the registers ignore the unit's enable
            if registered:
                if prev is not None:
                    assert ctx.get(dut.t) == _expected(*prev)
            else:
                assert ctx.get(dut.t) == _expected(pick, vals)
            prev = (pick, vals)
            await ctx.tick()

    run_sim(dut, [tb])


def test_registered_terms_leave_the_and_to_the_flip_flops(tmp_path):
    """The registered form of a six-term, 20-bit bus inside a clock-enabled unit: each term's
    AND goes into its flip-flops' reset, so the LUTs are the OR (six terms fit one LUT per bit)
    and the site decoding — against two to three LUTs per bit for the AND-OR."""
    from nanomamba_hw.synth import synth_xilinx

    def luts(registered: bool) -> int:
        dut = _Unit(registered=registered, gated=True)
        ports = [dut.pick, dut.en, *dut.src, dut.t, dut.ticks]
        v = tmp_path / f"ormux_{int(registered)}.v"
        v.write_text(verilog.convert(dut, name="ormux", ports=ports, emit_src=False))
        return synth_xilinx([v], "ormux", tmp_path / f"synth{int(registered)}").resources["LUT"]

    reg, comb = luts(True), luts(False)
    assert reg <= TARGET_BITS + 12, reg
    assert comb >= reg + TARGET_BITS, (comb, reg)
