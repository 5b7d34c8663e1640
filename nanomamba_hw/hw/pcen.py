"""Frequency floor + DualPCEN v1: mel frames in, features out, = ``fixed.frontend.dual_pcen``.

What it computes (per band m, frame t; ``fixed/frontend.py`` has the formulas)
-----------------------------------------------------------------------------
``E = max(mel, floor_m)``; per expert (stat, nonstat) the smoother
``M = E·16`` at the clip's first frame, else ``M += round(s·(16E − M) / 2**16)``;
``v = sat(exp2(log2 E − round(α·log2(M + 1, 20) / 2**16)) + δ)`` (GAIN_FMT),
``out = sat(exp2(round(r·log2 v / 2**16)) − δ^r)`` (PCEN_FMT); the routing gate
``g = σ(gate_temp·(SF' − 0.5))`` from the frame's spectral flatness (and, with routing
``"sf+tilt"``, the tilt term);
``F = sat(round((nonstat + round(g·(stat − nonstat) / 2**15)) / 8))``.

How: one log2 unit, one exp2 unit, sequenced in passes
------------------------------------------------------
Every transcendental goes through **one** :class:`~nanomamba_hw.hw.funcs.Log2Unit`
(in_frac 16, 40-bit input; other input scalings are a constant added to the result) and
**one** :class:`~nanomamba_hw.hw.funcs.Exp2Unit` (out_fmt GAIN_FMT; narrower formats are
the same unit with the integer part of ``y`` lowered by ``16 − frac`` and a second
saturation), plus the gate table's :class:`~nanomamba_hw.hw.funcs.PWLUnit`. Per frame:

====  =========================================================  =====================
pass  work                                                       unit uses
====  =========================================================  =====================
P0    accept 40 mel values (one per 4 cycles): floor, ΣE, Σlow,  log2 ×120 (+3 tail)
      Σhigh; both smoothers (state RAM, read-modify-write);
      log2 E, log2(M_stat + 1), log2(M_nonstat + 1); then
      log2 ΣE (and log2 of the tilt numerator/denominator)
P1    v for 80 (expert, band) pairs                              exp2 ×80
RT    SF (and tilt) by exp2, SF', gate argument, gate table      exp2 ×2, table ×1
P2    log2 v for the 80 pairs                                    log2 ×80
P3    v^r − δ^r for the 80 pairs                                 exp2 ×80
P4    mix of the two experts → ``o``, one band per cycle          —
====  =========================================================  =====================

Because the gate needs sums over all 40 bands, the two experts' outputs are buffered (two
40-entry RAMs) and the mix is emitted only in P4 — the frame's 40 features leave together,
after the whole frame has been read. Intermediates live in small RAMs indexed by
(expert, band): log2 E (40), log2 M then log2 v (80, shared), v (80), expert outputs (2×40);
the smoother state M is 2×40 words kept across frames. The units never stall inside (their
results go to RAM or registers); only P4's output register waits on ``o.ready``, and the next
frame's P0 may start while the last feature still waits there.

Cycles per frame with neither side stalling: 160 (P0) + ~10 (tail) + 80+6 (P1) + ~12 (RT)
+ 80+5 (P2) + 80+6 (P3) + 41 (P4) ≈ 480; measured figures are in ``docs/hw_frontend.md``.
The smoothers restart at frame 0 of every clip of ``n_frames`` frames (frame counter); a
synchronous reset (``ResetInserter``) abandons a partial clip.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed import frontend as ffe
from ..fixed.funcs import LOG_FRAC
from ..fixed.mel import MEL_FMT
from .common import frame_stream, rom_init, shape_of
from .funcs import LOG_OUT_WIDTH, Exp2Unit, Log2Unit, PWLUnit, as_signed_value

__all__ = ["DualPCEN"]


def _sat(v, lo: int, hi: int):
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


def _const_mul(v, k: int):
    """v·k for a small constant k as a sum of shifted copies of v (no multiplier)."""
    return sum(v << b for b in range(k.bit_length()) if (k >> b) & 1)


def _rshift_round(v, s: int):
    return (v + (1 << (s - 1))) >> s


class DualPCEN(wiring.Component):
    """Floored mel → DualPCEN features (``FEAT_FMTS["dualpcen"]``), bit-exact with
    ``fixed.frontend.dual_pcen(params, mel)`` on clips of ``n_frames`` frames."""

    def __init__(self, *, params: ffe.FrontendParams, n_frames: int = 101):
        if params.kind != "dualpcen":
            raise ValueError("DualPCEN needs dualpcen front-end parameters")
        if params.routing not in ("sf", "sf+tilt"):
            raise ValueError(f"unknown routing {params.routing!r}")
        self.p = params
        self.n_frames = n_frames
        self.n_mels = n = len(params.floor)
        self.n_low = n // ffe.LOW_BANDS_DIV
        self.high_start = 2 * n // ffe.LOW_BANDS_DIV
        self.n_high = n - self.high_start
        e_max = (1 << MEL_FMT.bits) - 1
        # log2 inputs: E, M + 1, v, ΣE, tilt numerator and denominator
        num_max = self.n_low * e_max * self.n_high
        den_max = num_max + self.n_high * e_max * self.n_low
        self.log_in_width = max(ffe.GAIN_FMT.bits, ffe.M_FMT.bits, (n * e_max).bit_length(),
                                den_max.bit_length())
        super().__init__({
            "i": In(frame_stream(shape_of(MEL_FMT))),
            "o": Out(frame_stream(shape_of(ffe.FEAT_FMTS["dualpcen"]))),
        })

    def elaborate(self, platform):
        m = Module()
        p, n = self.p, self.n_mels
        tilt_on = p.routing == "sf+tilt"
        mb = max(1, (n - 1).bit_length())           # band field of (expert, band) addresses
        EW = LOG_OUT_WIDTH + 2                      # exp2 input width (log-domain sums)
        LW = LOG_OUT_WIDTH
        up = ffe.M_FMT.frac - MEL_FMT.frac          # E → M scale
        MW = ffe.M_FMT.bits
        GW = ffe.GAIN_FMT.bits
        GW_FRAC = ffe.GAIN_FMT.frac                  # the exp2 unit's output scaling
        one_sf = ffe.ONE_SF
        experts = (p.stat, p.nonstat)               # expert 0 = stat, 1 = nonstat

        # ---- units
        m.submodules.log2 = log2 = Log2Unit(in_width=self.log_in_width, in_frac=MEL_FMT.frac)
        m.submodules.exp2 = exp2 = Exp2Unit(in_width=EW, out_fmt=ffe.GAIN_FMT)
        m.submodules.gate = gate = PWLUnit(ffe.GATE_TABLE)
        m.d.comb += [log2.o.ready.eq(1), exp2.o.ready.eq(1), gate.o.ready.eq(1)]

        # ---- constant ROMs (combinational read: LUTs)
        def rom(name, values, shape):
            mem = Memory(shape=shape, depth=len(values), init=rom_init(values, shape))
            m.submodules[name] = mem
            return mem.read_port(domain="comb")

        def per_expert(attr):
            vals = np.zeros(2 << mb, dtype=np.int64)
            for e, ex in enumerate(experts):
                vals[(e << mb):(e << mb) + n] = getattr(ex, attr)
            return vals

        coef = shape_of(ffe.PCEN_COEF_FMT)
        floor_rom = rom("floor", p.floor, shape_of(MEL_FMT))
        s_rom = rom("s", per_expert("s"), coef)
        alpha_rom = rom("alpha", per_expert("alpha"), coef)
        r_rom = rom("r", per_expert("r"), coef)
        delta_rom = rom("delta", per_expert("delta"), shape_of(ffe.DELTA_FMT))
        dr_rom = rom("delta_r", per_expert("delta_r"), shape_of(ffe.PCEN_FMT))

        # ---- RAMs
        def ram(name, shape, depth):
            mem = Memory(shape=shape, depth=depth, init=[])
            m.submodules[name] = mem
            return mem.write_port(), mem.read_port()

        Mw = [ram(f"M{e}", unsigned(MW), n) for e in range(2)]        # smoother state
        le_w, le_r = ram("logE", signed(LW), n)
        lx_w, lx_r = ram("logx", signed(LW), 2 << mb)                  # log2 M, then log2 v
        v_w, v_r = ram("v", unsigned(GW), 2 << mb)
        out_w = [ram(f"out{e}", shape_of(ffe.PCEN_FMT), n) for e in range(2)]

        # ---- frame bookkeeping
        t = Signal(range(self.n_frames))
        first_frame = Signal()
        m.d.comb += first_frame.eq(t == 0)

        # ---- pass counters shared by P1/P2/P3: issue (ie, im), stage 1 (e1, m1), writes (we, wm)
        irun = Signal()
        ie, im = Signal(), Signal(range(n))
        issue = Signal()
        v1, e1, m1 = Signal(), Signal(), Signal(range(n))
        m.d.sync += [v1.eq(issue), e1.eq(ie), m1.eq(im)]
        with m.If(issue):
            m.d.sync += im.eq(Mux(im == n - 1, 0, im + 1))
            with m.If(im == n - 1):
                m.d.sync += ie.eq(~ie)
                with m.If(ie):
                    m.d.sync += irun.eq(0)
        we, wm = Signal(), Signal(range(n + 1))
        wlast = Signal()
        m.d.comb += wlast.eq(we & (wm == n - 1))

        def advance_write():
            m.d.sync += wm.eq(Mux(wm == n - 1, 0, wm + 1))
            with m.If(wm == n - 1):
                m.d.sync += we.eq(~we)

        def start_pass():
            m.d.sync += [irun.eq(1), ie.eq(0), im.eq(0), we.eq(0), wm.eq(0)]

        ad1 = Cat(m1, e1)                   # (expert, band) address at stage 1
        adw = Cat(wm[:mb], we)              # ... at the write side
        m.d.comb += [le_r.addr.eq(im), lx_r.addr.eq(Cat(im, ie)), v_r.addr.eq(Cat(im, ie)),
                     alpha_rom.addr.eq(ad1), r_rom.addr.eq(ad1),
                     delta_rom.addr.eq(adw), dr_rom.addr.eq(adw)]

        # ---- P0: input, smoothers, first log2s
        ph = Signal(2)
        mcnt = Signal(range(n))
        m_in = Mux(self.i.payload.first, 0, mcnt)
        E_r = Signal(unsigned(MEL_FMT.bits))
        m_r = Signal(range(n))
        sumE = Signal(unsigned((n * ((1 << MEL_FMT.bits) - 1)).bit_length()))
        low, high = Signal.like(sumE), Signal.like(sumE)
        mel_in = self.i.payload.data
        E_in = Signal(unsigned(MEL_FMT.bits))
        m.d.comb += [floor_rom.addr.eq(m_in),
                     E_in.eq(Mux(mel_in > floor_rom.data, mel_in, floor_rom.data))]
        # One smoother datapath (one multiplier): expert 0 at ph 1, expert 1 at ph 2. The state
        # RAMs are read at the accept (ph 0) and keep that address until the band is done.
        for e in range(2):
            m.d.comb += Mw[e][1].addr.eq(Mux(ph == 0, m_in, m_r))
        E4 = Signal(unsigned(MW))
        m.d.comb += E4.eq(E_r << up)
        Mn = [Signal(unsigned(MW), name=f"Mn{e}") for e in range(2)]
        sel = Signal()
        m.d.comb += [sel.eq(ph == 2), s_rom.addr.eq(Cat(m_r, sel))]
        M_old = Mux(sel, Mw[1][1].data, Mw[0][1].data)
        d = as_signed_value(E4) - as_signed_value(M_old)
        Mnew = Signal(unsigned(MW))
        m.d.comb += Mnew.eq(Mux(first_frame, E4,
                                M_old + _rshift_round(d * s_rom.data, ffe.PCEN_COEF_FMT.frac)))
        for e in range(2):
            m.d.comb += [Mw[e][0].addr.eq(m_r), Mw[e][0].data.eq(Mnew)]

        # log2 output routing during P0: (wm0 band, ws0 which)
        wm0 = Signal(range(n + 1))
        ws0 = Signal(range(3))
        slog = Signal(signed(LW + n.bit_length() + 1))
        lsum, lnum, lden = Signal(signed(LW)), Signal(signed(LW)), Signal(signed(LW))
        num_max = self.n_low * ((1 << MEL_FMT.bits) - 1) * self.n_high
        num_r = Signal(unsigned(num_max.bit_length()))
        m_adj = (ffe.M_FMT.frac - MEL_FMT.frac) << LOG_FRAC   # log2(M, 20) = raw − 4·2**16
        n_rt = 3 if tilt_on else 1

        def p0_log_out():
            o = log2.o.payload
            with m.If(log2.o.valid):
                m.d.sync += ws0.eq(Mux(ws0 == 2, 0, ws0 + 1))
                with m.If(ws0 == 2):
                    m.d.sync += wm0.eq(wm0 + 1)
                with m.If(wm0 < n), m.Switch(ws0):
                    with m.Case(0):
                        m.d.comb += [le_w.en.eq(1), le_w.addr.eq(wm0), le_w.data.eq(o)]
                        m.d.sync += slog.eq(Mux(wm0 == 0, 0, slog) + o)
                    with m.Case(1):
                        m.d.comb += [lx_w.en.eq(1), lx_w.addr.eq(Cat(wm0[:mb], 0)),
                                     lx_w.data.eq(o - m_adj)]
                    with m.Case(2):
                        m.d.comb += [lx_w.en.eq(1), lx_w.addr.eq(Cat(wm0[:mb], 1)),
                                     lx_w.data.eq(o - m_adj)]
                with m.Else(), m.Switch(ws0):
                    with m.Case(0):
                        m.d.sync += lsum.eq(o)
                    with m.Case(1):
                        m.d.sync += lnum.eq(o)
                    with m.Case(2):
                        m.d.sync += lden.eq(o)

        # ---- routing values
        mean_log = Signal(signed(LW + 2))
        m.d.comb += mean_log.eq(_rshift_round(slog * ffe.mean_recip(n), ffe.MEAN_FRAC))
        log_n = ffe.log2_const(n)
        lsf = Signal(signed(LW + 3))
        m.d.comb += lsf.eq(mean_log - (lsum - log_n))
        y_sf = Signal(signed(EW))
        m.d.comb += y_sf.eq(Mux(lsf > 0, 0, lsf) - ((GW_FRAC - ffe.SF_FMT.frac) << LOG_FRAC))
        y_tilt = Signal(signed(EW))
        m.d.comb += y_tilt.eq(lnum - lden - ((GW_FRAC - ffe.TILT_RAW_FMT.frac) << LOG_FRAC))
        sf_r = Signal(unsigned(ffe.SF_FMT.bits))
        tilt_r = Signal(unsigned(ffe.SF_FMT.bits))
        sfp_r = Signal(unsigned(ffe.SF_FMT.bits))
        g_r = Signal(shape_of(ffe.SF_FMT))
        rc = Signal(range(3))
        ro = Signal(range(3))
        eo = exp2.o.payload
        sf_max = ffe.SF_FMT.max_int
        tr_max = ffe.TILT_RAW_FMT.max_int
        sf_val = Mux(eo > sf_max, sf_max, eo)
        tr_val = Mux(num_r == 0, 0, Mux(eo > tr_max, tr_max, eo))
        relu = Signal(unsigned(ffe.SF_FMT.bits))
        m.d.comb += relu.eq(Mux(tilt_r > ffe.TILT_THRESHOLD, tilt_r - ffe.TILT_THRESHOLD, 0))
        sfp = sf_r + _rshift_round((one_sf - sf_r) * relu, ffe.SF_FMT.frac) if tilt_on else sf_r
        sh_arg = ffe.GATE_TEMP_FMT.frac + ffe.SF_FMT.frac - ffe.GATE_ARG_FMT.frac
        arg = _rshift_round(p.gate_temp * (as_signed_value(sfp_r) - one_sf // 2), sh_arg)
        af = ffe.GATE_ARG_FMT
        m.d.comb += gate.i.payload.eq(_sat(arg, af.min_int, af.max_int))

        # ---- P1/P3 exp2 inputs, P2 log2 input
        # one multiplier for α·log2 M (P1) and r·log2 v (P3)
        in_p3 = Signal()
        scaled = Signal(signed(EW))
        m.d.comb += scaled.eq(_rshift_round(lx_r.data * Mux(in_p3, r_rom.data, alpha_rom.data),
                                            ffe.PCEN_COEF_FMT.frac))
        y_gain = Signal(signed(EW))
        m.d.comb += y_gain.eq(le_r.data - scaled)
        y_pow = Signal(signed(EW))
        m.d.comb += y_pow.eq(scaled - ((GW_FRAC - ffe.POW_FMT.frac) << LOG_FRAC))
        v_new = eo + delta_rom.data
        pw = Mux(eo > ffe.POW_FMT.max_int, ffe.POW_FMT.max_int, eo)
        pcen_out = as_signed_value(pw) - dr_rom.data
        pf = ffe.PCEN_FMT

        # ---- P4: mix and output (pipeline with o's backpressure)
        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)
        prun, pm = Signal(), Signal(range(n))
        pv1, pm1 = Signal(), Signal(range(n))
        out_r = [out_w[e][1] for e in range(2)]
        for e in range(2):
            m.d.comb += [out_r[e].addr.eq(pm), out_r[e].en.eq(en)]
        stat, non = out_r[0].data, out_r[1].data
        mix = non + _rshift_round(g_r * (stat - non), ffe.SF_FMT.frac)
        ff = ffe.FEAT_FMTS["dualpcen"]
        feat = _rshift_round(mix, pf.frac - ff.frac)
        with m.If(en):
            m.d.sync += [pv1.eq(prun), pm1.eq(pm), self.o.valid.eq(pv1)]
            with m.If(prun):
                m.d.sync += pm.eq(pm + 1)
                with m.If(pm == n - 1):
                    m.d.sync += [prun.eq(0), pm.eq(0)]
            with m.If(pv1):
                m.d.sync += [self.o.payload.data.eq(_sat(feat, ff.min_int, ff.max_int)),
                             self.o.payload.first.eq(pm1 == 0),
                             self.o.payload.last.eq(pm1 == n - 1)]

        with m.FSM():
            with m.State("P0"):
                p0_log_out()
                with m.Switch(ph):
                    with m.Case(0):
                        m.d.comb += self.i.ready.eq(1)
                        with m.If(self.i.valid):
                            lo_in = Mux(m_in < self.n_low, E_in, 0)
                            hi_in = Mux(m_in >= self.high_start, E_in, 0)
                            first_band = m_in == 0
                            m.d.sync += [E_r.eq(E_in), m_r.eq(m_in), ph.eq(1),
                                         sumE.eq(Mux(first_band, 0, sumE) + E_in),
                                         low.eq(Mux(first_band, 0, low) + lo_in),
                                         high.eq(Mux(first_band, 0, high) + hi_in)]
                    with m.Case(1):
                        m.d.comb += [log2.i.valid.eq(1), log2.i.payload.eq(E_r), Mw[0][0].en.eq(1)]
                        m.d.sync += [Mn[0].eq(Mnew), ph.eq(2)]
                    with m.Case(2):
                        m.d.comb += [log2.i.valid.eq(1), log2.i.payload.eq(Mn[0] + ffe.M_EPS),
                                     Mw[1][0].en.eq(1)]
                        m.d.sync += [Mn[1].eq(Mnew), ph.eq(3)]
                    with m.Case(3):
                        m.d.comb += [log2.i.valid.eq(1), log2.i.payload.eq(Mn[1] + ffe.M_EPS)]
                        m.d.sync += [ph.eq(0), mcnt.eq(Mux(m_r == n - 1, 0, m_r + 1))]
                        with m.If(m_r == n - 1):
                            m.d.sync += [rc.eq(0), num_r.eq(_const_mul(low, self.n_high))]
                            m.next = "P0_TAIL"
            with m.State("P0_TAIL"):
                p0_log_out()
                with m.If(rc < n_rt):
                    m.d.sync += rc.eq(rc + 1)
                    m.d.comb += log2.i.valid.eq(1)
                    with m.Switch(rc):
                        with m.Case(0):
                            m.d.comb += log2.i.payload.eq(sumE)
                        with m.Case(1):
                            m.d.comb += log2.i.payload.eq(num_r)
                        with m.Case(2):
                            m.d.comb += log2.i.payload.eq(num_r + _const_mul(high, self.n_low))
                with m.If(log2.o.valid & (wm0 == n) & (ws0 == n_rt - 1)):
                    start_pass()
                    m.next = "P1"
            with m.State("P1"):
                m.d.comb += issue.eq(irun)
                m.d.comb += [exp2.i.valid.eq(v1), exp2.i.payload.eq(y_gain)]
                with m.If(exp2.o.valid):
                    m.d.comb += [v_w.en.eq(1), v_w.addr.eq(adw),
                                 v_w.data.eq(Mux(v_new > ffe.GAIN_FMT.max_int,
                                                 ffe.GAIN_FMT.max_int, v_new))]
                    advance_write()
                    with m.If(wlast):
                        m.d.sync += [rc.eq(0), ro.eq(0)]
                        m.next = "RT_EXP"
            with m.State("RT_EXP"):
                with m.If(rc < (2 if tilt_on else 1)):
                    m.d.sync += rc.eq(rc + 1)
                    m.d.comb += [exp2.i.valid.eq(1),
                                 exp2.i.payload.eq(Mux(rc == 0, y_sf, y_tilt))]
                with m.If(exp2.o.valid):
                    m.d.sync += ro.eq(ro + 1)
                    with m.If(ro == 0):
                        m.d.sync += sf_r.eq(Mux(sf_val > one_sf, one_sf, sf_val))
                    with m.Else():
                        m.d.sync += tilt_r.eq(Mux(tr_val > one_sf, one_sf, tr_val))
                    with m.If(ro == (1 if tilt_on else 0)):
                        m.next = "RT_SFP"
            with m.State("RT_SFP"):
                m.d.sync += sfp_r.eq(sfp)
                m.next = "RT_GATE"
            with m.State("RT_GATE"):
                m.d.comb += gate.i.valid.eq(1)
                m.next = "RT_WAIT"
            with m.State("RT_WAIT"), m.If(gate.o.valid):
                m.d.sync += g_r.eq(gate.o.payload)
                start_pass()
                m.next = "P2"
            with m.State("P2"):
                m.d.comb += issue.eq(irun)
                m.d.comb += [log2.i.valid.eq(v1), log2.i.payload.eq(v_r.data)]
                with m.If(log2.o.valid):
                    m.d.comb += [lx_w.en.eq(1), lx_w.addr.eq(adw), lx_w.data.eq(log2.o.payload)]
                    advance_write()
                    with m.If(wlast):
                        start_pass()
                        m.next = "P3"
            with m.State("P3"):
                m.d.comb += issue.eq(irun)
                m.d.comb += [in_p3.eq(1), exp2.i.valid.eq(v1), exp2.i.payload.eq(y_pow)]
                with m.If(exp2.o.valid):
                    for e in range(2):
                        m.d.comb += [out_w[e][0].addr.eq(wm),
                                     out_w[e][0].data.eq(_sat(pcen_out, pf.min_int, pf.max_int))]
                    m.d.comb += out_w[0][0].en.eq(~we)
                    m.d.comb += out_w[1][0].en.eq(we)
                    advance_write()
                    with m.If(wlast):
                        m.d.sync += [prun.eq(1), pm.eq(0)]
                        m.next = "P4"
            with m.State("P4"), m.If(~prun & ~pv1):
                m.d.sync += [t.eq(Mux(t == self.n_frames - 1, 0, t + 1)),
                             wm0.eq(0), ws0.eq(0), ph.eq(0)]
                m.next = "P0"
        return m
