"""Frequency floor + DualPCEN v1 as the front-end pass of the spectral engine,
= ``fixed.frontend.dual_pcen``.

What it computes (per band m, frame t; ``fixed/frontend.py`` has the formulas)
-----------------------------------------------------------------------------
``E = max(mel, floor_m)``; per expert (stat, nonstat) the smoother
``M = E·16`` at the clip's first frame, else ``M += round(s·(16E − M) / 2**16)``;
``v = sat(exp2(log2 E − round(α·log2(M + 1, 20) / 2**16)) + δ)`` (GAIN_FMT),
``out = sat(exp2(round(r·log2 v / 2**16)) − δ^r)`` (PCEN_FMT); the routing gate
``g = σ(gate_temp·(SF' − 0.5))`` from the frame's spectral flatness (and, with routing
``"sf+tilt"``, the tilt term); ``F = sat(round((nonstat + round(g·(stat − nonstat) / 2**15)) / 8))``.

How: three passes over the frame's 40 mel values
------------------------------------------------
All arithmetic goes through the engine's shared units (the function unit FU, the wide
multiply-add GMUL ``A·B + K``) and its RAM B, which holds, per band, six words of constants
(``s``, ``r``; ``−α``, ``δ``; ``−δ^r`` and half of ``floor`` for each expert), the smoother
states as ``M + 1`` (the ε of ``log2(M + ε)`` is 1 LSB of M_FMT, so storing ``M + 1`` makes the
log2 operand a stored word: the update ``M' + 1 = (M + 1) + round(s·(16E + 1 − (M + 1)))`` has
the same form, and the first frame is the same update with ``s = 1.0``), and the frame's mel
values (written by the bin pipeline, replaced by E in pass 1).

1. **Pass 1** (3 cycles per band): ``E = max(mel, floor)`` back to RAM B; ``ΣE``, ``Σ_high E``
   (bands 26…39), ``Σ_low E`` (bands 0…12: ΣE after band 12), and ``Σ log2 E`` (FU).
2. **Gate** (29 cycles): ``mean log2 E`` (GMUL, with ``log2 40`` folded into the rounding
   constant), ``log2 ΣE`` (FU), SF = exp2 of the difference capped at 1.0 (capping is the
   model's ``min(·, 0)`` in the exponent: exp2 is monotone); with tilt: ``num = low·14``,
   ``den = high·13 + num`` (GMUL), ``tilt = exp2(log2 num − log2 den)``,
   ``SF' = SF + round((1 − SF)·relu(tilt − 0.6))`` (GMUL, the SF term in K); the gate argument
   ``gate_temp·SF' − gate_temp/2`` (GMUL) and the gate table (FU).
3. **Pass 2** (a band every 34 cycles, the next band starting while the previous one's last
   10 steps run; ``P2_SCHEDULE``): the smoothers (GMUL, ``K = (M + 1)·2¹⁶ + 2¹⁵``),
   ``log2 E``, ``log2(M + 1)``,
   ``log2 E − round(α·log2 M)`` (GMUL with ``−α`` and ``K = log2E·2¹⁶ + 2¹⁵ − 1``), exp2 with
   ``+δ`` added by the FU's output adder, log2 v, ``round(r·log2 v)`` (GMUL), exp2 with
   ``−δ^r`` added and the PCEN_FMT cap; then the mix (GMUL, the nonstat term in K), the
   rounding and saturation, and the feature into the feature buffer.

A pass takes ``schedule_cycles(40)`` = 1,531 cycles. The smoothers restart at frame 0 of
every clip (``eng.first_frame``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, signed

from ..fixed import frontend as ffe
from ..fixed.funcs import LOG_FRAC
from ..fixed.mel import MEL_FMT
from .common import delay_taps
from .funcs import FuncOp, FuncUnit
from .mac import GMUL_LATENCY, clamp, const_mul

__all__ = ["DualPCENPass"]

WORDS_PER_BAND = 6
FLOOR_HALF = 14
M_BITS = ffe.M_FMT.bits                      # 32
M_UP = ffe.M_FMT.frac - MEL_FMT.frac         # E → M scale (16E)


def _twos(v: int, bits: int) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if not lo <= v <= hi:
        raise ValueError(f"{v} does not fit {bits} signed bits")
    return v & ((1 << bits) - 1)


def _p2_schedule(g: int, lat_lp: int, lat_exp: int) -> dict[str, int]:
    """Pass 2's issue steps of expert 0 from the shared units' latencies (see
    ``DualPCENPass.P2_SCHEDULE``)."""
    sch = {"smooth": 8}                       # GMUL: M' + 1 (the state read at step 7)
    sch["log2_m"] = sch["smooth"] + g         # M' + 1 back to RAM B; FU log2(M' + 1)
    sch["alpha"] = sch["log2_m"] + lat_lp     # GMUL: log2 E − round(α·log2 M)
    sch["gain"] = sch["alpha"] + g            # FU exp2 → v (+δ)
    sch["log2_v"] = sch["gain"] + lat_exp     # FU log2 v
    sch["r"] = sch["log2_v"] + lat_lp         # GMUL: round(r·log2 v)
    sch["pow"] = sch["r"] + g                 # FU exp2 (−δ^r, cap) → the expert's output
    sch["stat"] = sch["pow"] + lat_exp        # expert 0's output (kept); feature word read
    sch["mix"] = sch["stat"] + 1              # expert 1's: GMUL nonstat + round(g·(stat − non))
    sch["feature"] = sch["mix"] + g           # round, saturate, write the feature
    return sch


def _check_p2_schedule(sch: dict[str, int], steps: int, lat_lp: int, lat_exp: int) -> None:
    """Raise unless pass 2's schedule ``sch`` works with ``steps`` steps per band, a band's
    steps counted modulo ``steps`` (the previous band's last steps overlap the next band):
    the FU and the GMUL are each issued at most once per step, the FU's log2/table results
    (``o_lp``) and its exp2 results (``o_exp``) each arrive at most once per step, and the
    band's constant words (registered at steps 2…7) are not overwritten by the next band's
    before their last use (expert 1's exp2 with −δ^r)."""
    two = ("log2_m", "gain", "log2_v", "pow", "smooth", "alpha", "r")
    at = {k: [sch[k], sch[k] + 1] for k in two}
    checks = {
        "FU issue": [1] + at["log2_m"] + at["gain"] + at["log2_v"] + at["pow"],
        "GMUL issue": at["smooth"] + at["alpha"] + at["r"] + [sch["mix"]],
        "FU log2 result": [1 + lat_lp] + [k + lat_lp for k in at["log2_m"] + at["log2_v"]],
        "FU exp2 result": [k + lat_exp for k in at["gain"] + at["pow"]],
    }
    for what, ks in checks.items():
        mod = [k % steps for k in ks]
        if len(set(mod)) != len(mod):
            raise ValueError(f"PCEN pass 2 with {steps} steps per band: {what} twice in one "
                             f"step ({sorted(mod)})")
    if sch["pow"] + 1 >= steps + 2 or sch["feature"] >= 2 * steps:
        raise ValueError(f"PCEN pass 2: the schedule does not fit {steps} steps per band")


class DualPCENPass:
    """The DualPCEN pass of the engine ``eng``: ``run`` (held) → ``done``."""

    OPS = {
        "log2_16": FuncOp.log2(16),                          # E, v, ΣE (MEL/GAIN: frac 16)
        "log2_20": FuncOp.log2(ffe.M_FMT.frac),              # M + 1
        "gain": FuncOp.exp2(ffe.GAIN_FMT.frac, cap=ffe.GAIN_FMT.max_int),       # + δ
        "pow": FuncOp.exp2(ffe.POW_FMT.frac, cap=ffe.PCEN_FMT.max_int),        # − δ^r
        "sf": FuncOp.exp2(ffe.SF_FMT.frac, cap=ffe.ONE_SF),                    # SF, tilt
        "gate": FuncOp.pwl(ffe.GATE_TABLE),
    }

    @staticmethod
    def ram_layout(fe: ffe.FrontendParams) -> list[int]:
        """Per band 6 constant words, then 2 × 40 smoother words (``M + 1``)."""
        n = len(fe.floor)
        if MEL_FMT.frac != ffe.GAIN_FMT.frac or ffe.M_EPS != 1:
            raise ValueError("the pass assumes MEL and GAIN share frac 16 and M_EPS = 1 LSB")
        words = []
        for mb in range(n):
            fl = int(fe.floor[mb])
            # E = max(mel, floor) ≥ 1 keeps log2 E finite (never LOG2's zero value), so the
            # 35-bit Σ log2 E cannot wrap; the model's floor is ≥ 163 LSB (0.05·e⁻³)
            if not 1 <= fl < 1 << (2 * FLOOR_HALF):
                raise ValueError("floor out of range")
            for e, ex in enumerate((fe.stat, fe.nonstat)):
                s, a, d, r, dr = (int(ex.s[mb]), int(ex.alpha[mb]), int(ex.delta[mb]),
                                  int(ex.r[mb]), int(ex.delta_r[mb]))
                if not (0 <= s < 1 << 17 and 0 <= r < 1 << 17 and 0 <= d < 1 << 20):
                    raise ValueError("PCEN constant out of range")
                flp = (fl >> (FLOOR_HALF * e)) & ((1 << FLOOR_HALF) - 1)
                words += [s | (r << 17),
                          _twos(-a, 18) | ((d & ((1 << 18) - 1)) << 18),
                          (d >> 18) | (_twos(-dr, 20) << 2) | (flp << 22)]
        return words + [0] * (2 * n)

    P2_STEPS = 34                            # cycles per band in pass 2
    GATE_STEPS = 29                          # cycles of the gate computation
    # Pass 2, one band: the step (k) at which each operation of expert 0 issues (expert 1 one
    # step later). RAM B is read at steps 0…8 (E, the six constant words, the two smoother
    # states), log2 E issues at step 1 and lands at 6. Each step is the one before it plus the
    # latency of its producer (GMUL_LATENCY, the FU's LAT_LP for log2 and tables, LAT_EXP for
    # exp2). The last steps (≥ P2_STEPS) run during the next band's first ones (or in the
    # tail after the last band); _check_p2_schedule rejects a schedule whose shared-unit
    # issues or results collide, or that overwrites a band's constants too early.
    P2_SCHEDULE = _p2_schedule(GMUL_LATENCY, FuncUnit.LAT_LP, FuncUnit.LAT_EXP)
    # k of the last band's tail at which pass 2 ends: two steps after its feature's write
    TAIL_END = P2_SCHEDULE["feature"] - P2_STEPS + 2

    @classmethod
    def schedule_cycles(cls, n_mels: int) -> int:
        """Cycles of one pass (``run`` high up to and including ``done``): 1 (IDLE) + pass 1
        (a band every 3 cycles, 9 more for the last one's log2 E to reach Σ log2 E, 1 to leave:
        3·(n − 1) + 11) + the gate (29) + pass 2 (34 per band, then the last band's tail up to
        ``TAIL_END``: 12 cycles) + 1 (END, ``done``) = 37·n + 51."""
        return (1 + 3 * (n_mels - 1) + 11 + cls.GATE_STEPS + cls.P2_STEPS * n_mels
                + cls.TAIL_END + 1 + 1)

    def __init__(self, eng):
        _check_p2_schedule(self.P2_SCHEDULE, self.P2_STEPS, FuncUnit.LAT_LP, FuncUnit.LAT_EXP)
        if (GMUL_LATENCY, FuncUnit.LAT_LP, FuncUnit.LAT_EXP) != (2, 5, 8):
            raise ValueError("the gate's step numbers below are written for GMUL 2, "
                             "FU log2 5 and exp2 8 cycles")
        m = eng.m
        fe = eng.params.frontend
        self.run = Signal(name="pcen_run")
        self.done = Signal(name="pcen_done")
        n = eng.n_mels
        n_low = n // ffe.LOW_BANDS_DIV
        high_start = 2 * n // ffe.LOW_BANDS_DIV
        n_high = n - high_start
        tilt_on = fe.routing == "sf+tilt"
        rb, rbw, fu = eng.rb, eng.rb_w, eng.fu
        CB = eng.FE_BASE
        MB = eng.FE_BASE + WORDS_PER_BAND * n
        EB = eng.MEL_BASE
        gp = eng.g_p
        E_BITS = MEL_FMT.bits

        p1_m = Signal(range(n + 1))
        p1_ph = Signal(range(3))
        p1_issue = Signal()
        pv = delay_taps(m, p1_issue, 9, "p1v")
        pm = delay_taps(m, p1_m, 9, "p1m")
        sumE = Signal(range(n << E_BITS))
        low = Signal.like(sumE)
        high = Signal.like(sumE)
        slog = Signal(signed(LOG_FRAC + 12 + n.bit_length() + 1))
        g = Signal(range(32))
        meanr = Signal(signed(34))
        num_r = Signal(range((n_low * n_high) << E_BITS))
        num_zero = Signal()
        lnum = Signal(signed(32))
        sf_r = Signal(range(ffe.ONE_SF + 1))
        g_r = Signal(range(ffe.ONE_SF + 1))
        mfr = ffe.MEAN_FRAC
        k_mean = (1 << (mfr - 1)) + (ffe.log2_const(n) << mfr)
        sh_arg = ffe.GATE_TEMP_FMT.frac + ffe.SF_FMT.frac - ffe.GATE_ARG_FMT.frac
        k_arg = (1 << (sh_arg - 1)) - (ffe.ONE_SF // 2) * int(fe.gate_temp)
        af = ffe.GATE_ARG_FMT
        k = Signal(range(self.P2_STEPS))
        cm = Signal(range(n + 2))
        with m.FSM(name="pcen"):
            with m.State("IDLE"):
                with m.If(self.run):
                    m.next = "P1"
            # ---------------------------------------------------------------- pass 1
            with m.State("P1"):
                m.d.comb += p1_issue.eq((p1_ph == 0) & (p1_m < n))
                m.d.sync += p1_ph.eq(Mux(p1_ph == 2, 0, p1_ph + 1))
                with m.If(p1_issue):
                    m.d.sync += p1_m.eq(p1_m + 1)
                with m.If((p1_m == n) & ~Cat(*pv[1:]).any()):
                    m.next = "GATE"
            # ---------------------------------------------------------------- gate
            with m.State("GATE"):
                m.d.sync += g.eq(g + 1)
                # step numbers: GMUL results 2 cycles after the issue, FU log2 and tables 5,
                # FU exp2 8 (GATE_STEPS cycles in all)
                with m.Switch(g):
                    with m.Case(0):
                        eng.gmul(slog, ffe.mean_recip(n), k_mean)
                        eng.fu_issue("log2_16", sumE)
                    with m.Case(1):
                        if tilt_on:
                            eng.gmul(low, n_high, 0)
                    with m.Case(2):
                        m.d.sync += meanr.eq(gp[mfr:].as_signed())
                    with m.Case(3):
                        if tilt_on:
                            m.d.sync += [num_r.eq(gp), num_zero.eq(gp == 0)]
                            eng.fu_issue("log2_0", gp[:40])
                    with m.Case(4):
                        if tilt_on:
                            eng.gmul(high, n_low, num_r)
                    with m.Case(5):
                        eng.fu_issue("sf", meanr, sub=fu.o_lp)
                    with m.Case(6):
                        if tilt_on:
                            eng.fu_issue("log2_0", gp[:40])
                    with m.Case(8):
                        m.d.sync += lnum.eq(fu.o_lp)
                    with m.Case(11):
                        if tilt_on:
                            eng.fu_issue("sf", lnum, sub=fu.o_lp)
                    with m.Case(13):
                        m.d.sync += sf_r.eq(fu.o_exp)
                    with m.Case(19):
                        # the "sf" op caps tilt at ONE_SF: its bits above are zero
                        tilt = Mux(num_zero, 0, fu.o_exp[:ffe.ONE_SF.bit_length()])
                        relu = Mux(tilt > ffe.TILT_THRESHOLD, tilt - ffe.TILT_THRESHOLD, 0)
                        eng.gmul(relu if tilt_on else 0, ffe.ONE_SF - sf_r,
                                 Cat(Const(1 << 14, 15), sf_r))
                    with m.Case(21):
                        eng.gmul(gp[15:32], int(fe.gate_temp), k_arg)
                    with m.Case(23):
                        arg = gp[sh_arg:].as_signed()
                        eng.fu_issue("gate", clamp(m, arg, af.min_int, af.max_int))
                    with m.Case(self.GATE_STEPS - 1):
                        m.d.sync += g_r.eq(fu.o_lp)
                        m.next = "P2"

            # ---------------------------------------------------------------- pass 2
            with m.State("P2"):
                m.d.sync += k.eq(Mux(k == self.P2_STEPS - 1, 0, k + 1))
                with m.If(k == self.P2_STEPS - 1):
                    m.d.sync += cm.eq(cm + 1)
                with m.If((cm == n) & (k == self.TAIL_END)):
                    m.next = "END"
            with m.State("END"):
                m.d.comb += self.done.eq(1)
                with m.If(~self.run):
                    m.next = "IDLE"
        with m.If(~self.run):
            m.d.sync += [p1_m.eq(0), p1_ph.eq(0), g.eq(0), k.eq(0), cm.eq(0)]

        with m.If(pv[0]):
            m.d.comb += rb.addr.eq(EB + p1_m)
        with m.If(pv[1]):
            m.d.comb += rb.addr.eq(CB + 2 + const_mul(pm[1], WORDS_PER_BAND))
        with m.If(pv[2]):
            m.d.comb += rb.addr.eq(CB + 3 + 2 + const_mul(pm[2], WORDS_PER_BAND))
        mel_r = Signal(E_BITS)
        flo = Signal(FLOOR_HALF)
        with m.If(pv[1]):
            m.d.sync += mel_r.eq(rb.data[:E_BITS])
        with m.If(pv[2]):
            m.d.sync += flo.eq(rb.data[22:22 + FLOOR_HALF])
        # the floor's upper half is registered before E = max(mel, floor) is formed: a RAM read,
        # a compare, a select and the sums in one cycle are too slow at 50 MHz on an ECP5
        fhi = Signal(FLOOR_HALF)
        with m.If(pv[3]):
            m.d.sync += fhi.eq(rb.data[22:22 + FLOOR_HALF])
        floor = Cat(flo, fhi)
        E = Signal(E_BITS)
        m.d.comb += E.eq(Mux(mel_r > floor, mel_r, floor))
        with m.If(pv[4]):
            m.d.comb += [rbw.en.eq(1), rbw.addr.eq(EB + pm[4]), rbw.data.eq(E)]
            eng.fu_issue("log2_16", E)
        # the sums take E from a register a cycle later: E's compare-and-select is then built
        # once, not folded into each adder's LUTs
        E5 = Signal(E_BITS)
        m.d.sync += E5.eq(E)
        # each sum adds E5 itself (not a selection of it), so E5 drives the carry chain's
        # DI inputs directly: one LUT per bit; Σ_high starts over at its first band
        with m.If(pv[5]):
            m.d.sync += sumE.eq(Mux(pm[5] == 0, 0, sumE) + E5)
            with m.If(pm[5] >= high_start):
                m.d.sync += high.eq(Mux(pm[5] == high_start, 0, high) + E5)
            with m.If(pm[5] == n_low):
                m.d.sync += low.eq(sumE)
        with m.If(pv[9]):
            m.d.sync += slog.eq(Mux(pm[9] == 0, 0, slog) + fu.o_lp)


        p2 = Signal()
        m.d.comb += p2.eq(self.run & (g == self.GATE_STEPS) & (cm < n))
        # g stays at GATE_STEPS in P2 (the GATE state leaves at GATE_STEPS − 1)
        cur = p2
        kk = k
        wbase = CB + const_mul(cm, WORDS_PER_BAND)
        with m.If(cur & (kk <= 6)):
            m.d.comb += rb.addr.eq(Mux(kk == 0, EB + cm, wbase + kk - 1))
        with m.If(cur & (kk == 7)):
            m.d.comb += rb.addr.eq(MB + Cat(Const(0, 1), cm))
        with m.If(cur & (kk == 8)):
            m.d.comb += rb.addr.eq(MB + Cat(Const(1, 1), cm))
        E_r = Signal(E_BITS)
        w = [Signal(36, name=f"pw{i}") for i in range(6)]
        with m.If(cur & (kk == 1)):
            m.d.sync += E_r.eq(rb.data[:E_BITS])
            eng.fu_issue("log2_16", rb.data[:E_BITS])
        for i in range(6):
            with m.If(cur & (kk == 2 + i)):
                m.d.sync += w[i].eq(rb.data)
        lE = Signal(signed(32))
        with m.If(cur & (kk == 6)):
            m.d.sync += lE.eq(fu.o_lp)
        s_e = [w[0][:17], w[3][:17]]
        r_e = [w[0][17:34], w[3][17:34]]
        na_e = [w[1][:18].as_signed(), w[4][:18].as_signed()]
        d_e = [Cat(w[1][18:36], w[2][:2]), Cat(w[4][18:36], w[5][:2])]
        ndr_e = [w[2][2:22].as_signed(), w[5][2:22].as_signed()]
        E16 = Cat(Const(1, 1), Const(0, M_UP - 1), E_r)           # 16E + 1
        one = 1 << ffe.PCEN_COEF_FMT.frac
        S = self.P2_SCHEDULE
        for e in range(2):
            mp = rb.data[:M_BITS]
            with m.If(cur & (kk == S["smooth"] + e)):
                # K = (M + 1)·2**16 + 2**15 is unsigned 48 bits: the GMUL's result is exact in
                # the bits below 48, which hold M' + 1 (bits 16…47, read below)
                eng.gmul(E16 - mp, Mux(eng.first_frame, one, s_e[e]),
                         Cat(Const(1 << 15, 16), mp), k_unsigned48=True)
            with m.If(cur & (kk == S["log2_m"] + e)):
                newm = gp[16:16 + M_BITS]
                m.d.comb += [rbw.en.eq(1), rbw.addr.eq(MB + Cat(Const(e, 1), cm)),
                             rbw.data.eq(newm)]
                eng.fu_issue("log2_20", newm)
            with m.If(cur & (kk == S["alpha"] + e)):
                eng.gmul(fu.o_lp, na_e[e], Cat(Const((1 << 15) - 1, 16), lE).as_signed())
            with m.If(cur & (kk == S["gain"] + e)):
                eng.fu_issue("gain", gp[16:16 + 34].as_signed(), add=d_e[e])
            with m.If(cur & (kk == S["log2_v"] + e)):
                eng.fu_issue("log2_16", fu.o_exp[:ffe.GAIN_FMT.bits])     # v ≥ 0, GAIN_FMT
            with m.If(cur & (kk == S["r"] + e)):
                eng.gmul(fu.o_lp, r_e[e], 1 << 15)
            with m.If(cur & (kk == S["pow"] + e)):
                eng.fu_issue("pow", gp[16:16 + 34].as_signed(), add=ndr_e[e])

        # tail of the previous band (its steps ≥ P2_STEPS run in this band's first steps)
        tail = Signal()
        m.d.comb += tail.eq(self.run & (g == self.GATE_STEPS) & (cm >= 1) & (cm <= n))
        pmb = Signal(range(n))
        m.d.comb += pmb.eq(cm - 1)
        fb = eng.fb
        stat_r = Signal(signed(ffe.PCEN_FMT.bits))
        with m.If(tail & (kk == S["stat"] - self.P2_STEPS)):
            m.d.sync += stat_r.eq(fu.o_exp)
            m.d.comb += [fb.re.eq(1), fb.addr.eq(eng.fbase + pmb)]
        with m.If(tail & (kk == S["mix"] - self.P2_STEPS)):
            non = fu.o_exp[:ffe.PCEN_FMT.bits].as_signed()
            eng.gmul(stat_r - non, g_r, Cat(Const(1 << 14, 15), non).as_signed())
        ff = ffe.FEAT_FMTS["dualpcen"]
        mix = gp[ffe.SF_FMT.frac:].as_signed()
        sh = ffe.PCEN_FMT.frac - ff.frac
        fr = Signal(signed(ffe.PCEN_FMT.bits + 2))
        m.d.comb += fr.eq((mix + (1 << (sh - 1))) >> sh)
        feat = Signal(signed(ff.bits))
        m.d.comb += feat.eq(clamp(m, fr, ff.min_int, ff.max_int))
        with m.If(tail & (kk == S["feature"] - self.P2_STEPS)):
            eng.write_feature(eng.fbase + pmb, feat)
