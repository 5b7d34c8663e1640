"""Normalisations: instance norm (setup from the clip's Σx, Σx²; per-frame apply) and LayerNorm,
bit-exact with ``fixed.norm.normalize`` / ``fixed.norm.layer_norm``.

One :class:`NormUnit` does all three jobs (the back end runs one at a time)::

    num = n·Σx² − (Σx)² + round(eps·n²·2**(2·x_frac))            exact, up to 56 bits
    y   = round_half_up(−(log2(num) − 2·x_frac) / 2)              LOG2 (fixed.funcs), LOG_FRAC bits
    e   = y >> 16;  m = exp2(y − (e << 16))                       Exp2Unit, m ∈ [1, 2) · 2**16
    v_i = shift_round((n·x_i − Σx) · m, e − 16 − x_frac + v_frac)       (never saturates, below)
    LayerNorm only:  out_i = sat(round(v_i · γ_i / 2**(v_frac + 11 − out_frac)) + β_i)

- ``IN_SETUP`` (once per clip): takes the 40 (Σx, Σx²) pairs from ``stats`` and stores Σx, the
  mantissa and the shift per band (three 40-entry memories). About 25 cycles per band.
- ``IN_APPLY`` (per frame): reads the 40 features through ``rd`` and emits the normalised
  values on ``o``, one per cycle.
- ``LN`` (per frame and LayerNorm ``set``): reads the d residual values twice through ``rd``
  (sums, then apply) and emits d outputs on ``o``. About 2·d + 35 cycles.

How the arithmetic is kept small (all exact):

- **num** is built column by column in base 2**17 on two multiplier ports (n·digit of Σx² on
  one, the digit products of (Σx)² on the other), the low 17 bits of each column going straight
  into the ``num`` register: one ~40-bit adder instead of a 56-bit adder with shifted inputs.
- **log2** (``fixed.funcs.LOG2``, no Log2Unit): the ``num`` register itself is normalised by
  shifting it left by 8 or 1 per cycle until its top bit is set (a handful of cycles), the 16
  bits below the leading one address a 64-word ROM of (table[i], table[i+1] − table[i]) and the
  interpolation product uses multiplier port 0 — no DSP of its own.
- **the variable rounding shift** r = −(e − 16 − x_frac + v_frac) ≥ 1 is split as
  r = 8·q − j (j ∈ 0…7): the mantissa is stored pre-shifted, m' = m·2**j (24 bits), so the apply
  path shifts the product (n·x − Σx)·m' right by a multiple of 8 (a 4:1 mux for Tiny) instead of
  a barrel shifter; ``(P + 2**(8q−1)) >> 8q == (P·2**−j + 2**(r−1)) >> r`` exactly.
- **no saturation of v**: Σ_i (n·x_i − Σx)² = n·(n·Σx² − (Σx)²) ≤ n·num, so every
  |(n·x_i − Σx)/sqrt(num)| ≤ sqrt(n); the format of v has 6 integer bits (±32) and the rsqrt's
  relative error is < 2**−11, so for n ≤ 1000 the value never reaches the saturation bound
  (checked at construction). Only the window of the product that holds v is formed.

Multiplies use three shared :class:`~nanomamba_hw.hw.mac.MulBank` ports: (n·x − Σx)·m' as two
products (17-bit chunks of the centred value), γ one, so the apply pipeline accepts one element
per cycle. exp2 goes to the shared :class:`~nanomamba_hw.hw.funcs.Exp2Unit` through the ``exp2``
port (format ``DA_FMT``, u17.16: for the rsqrt mantissa, whose input lies in [0, 1), it gives
exactly ``RS_MANT_FMT``'s values, so the scan shares it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from amaranth.hdl import (
    Array,
    Cat,
    Const,
    EnableInserter,
    Module,
    Mux,
    Signal,
    signed,
    unsigned,
)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed import funcs as F
from ..fixed.formats import DA_FMT
from ..fixed.norm import GAMMA_FMT, IN_EPS, LN_EPS, LayerNormParams
from ..fixed.ops import Fmt
from .common import shape_of
from .funcs import LOG_OUT_WIDTH
from .mac import (
    MUL_B_BITS,
    MUL_LATENCY,
    clamp,
    const_mul,
    mul_signature,
    rshift_round_c,
    signed_bits,
)

EXP2_IN_WIDTH = 32          # the shared Exp2Unit's input (rsqrt fraction, scan's −|A|·Δ)
EXP2_OUT_FMT = DA_FMT       # u17.16
N_BANDS = 40
STATS_FRAMES = 101          # the analytic bound of the stats interface
DIGIT = 17                  # column width of the numerator (unsigned 17 bits fit the 18-bit side)
RSQRT_REL_ERR = 2.0 ** -11  # bound on the rsqrt's relative error (log2/exp2 tables, roundings)


def stats_layout(feat_fmt: Fmt, n_frames: int = STATS_FRAMES) -> data.StructLayout:
    """Per-band Σx and Σx² of a clip's features: widths from n_frames·max|x| and n_frames·max x²."""
    big = max(-feat_fmt.min_int, feat_fmt.max_int)
    return data.StructLayout({
        "s1": signed(signed_bits(n_frames * feat_fmt.min_int, n_frames * feat_fmt.max_int)),
        "s2": unsigned((n_frames * big * big).bit_length()),
    })


def log2_port(width: int) -> wiring.Signature:
    """A Log2Unit seen from its user (flip of the unit's own signature)."""
    return wiring.Signature({"i": In(stream.Signature(unsigned(width))),
                             "o": Out(stream.Signature(signed(LOG_OUT_WIDTH)))}).flip()


def exp2_port() -> wiring.Signature:
    """The shared Exp2Unit seen from its user."""
    return wiring.Signature({"i": In(stream.Signature(signed(EXP2_IN_WIDTH))),
                             "o": Out(stream.Signature(shape_of(EXP2_OUT_FMT)))}).flip()


def _e_range(num_lo: int, num_hi: int, x_frac: int) -> tuple[int, int]:
    """Bounds of the rsqrt exponent e for num in [num_lo, num_hi] (one octave of margin)."""
    y_hi = -(math.log2(num_lo) - 2 * x_frac) / 2
    y_lo = -(math.log2(num_hi) - 2 * x_frac) / 2
    return math.floor(y_lo) - 1, math.floor(y_hi) + 1


def log2_rom_words() -> list[tuple[int, int]]:
    """(table[i], table[i + 1] − table[i]) of ``fixed.funcs.LOG2`` for i = 0 … 2**SEG_BITS − 1."""
    t = [int(v) for v in F.LOG2.table]
    return [(t[i], t[i + 1] - t[i]) for i in range(len(t) - 1)]


class NormUnit(wiring.Component):
    """Instance-norm setup/apply and LayerNorm (see the module docstring)."""

    IN_SETUP, IN_APPLY, LN = 0, 1, 2
    N_MUL = 3

    def __init__(self, *, n_frames: int, feat_fmt: Fmt, in_out_fmt: Fmt, x_fmt: Fmt, d: int,
                 ln: Sequence[LayerNormParams], n_bands: int = N_BANDS,
                 stats_frames: int = STATS_FRAMES):
        self.T, self.feat_fmt, self.in_out_fmt = n_frames, feat_fmt, in_out_fmt
        self.x_fmt, self.d, self.ln, self.n_bands = x_fmt, d, list(ln), n_bands
        self.stats_layout = stats_layout(feat_fmt, max(stats_frames, n_frames))
        for p in self.ln:
            if p.norm_frac + GAMMA_FMT.frac - p.out_fmt.frac < 0:
                raise ValueError("LayerNorm output finer than its product")
        # operand widths (analytic)
        self.x_width = max(x_fmt.bits, feat_fmt.bits)
        big_x = 1 << (x_fmt.bits - 1)
        big_f = 1 << (feat_fmt.bits - 1)
        self.s1_ln_w = signed_bits(-d * big_x, d * big_x)
        self.s1_w = max(self.s1_ln_w, self.stats_layout["s1"].shape.width)
        s2_ln_max = d * big_x * big_x
        self.s2_w = max(s2_ln_max.bit_length(), self.stats_layout["s2"].shape.width)
        self.eps_in = int(np.floor(IN_EPS * self.T * self.T * 2.0 ** (2 * feat_fmt.frac) + 0.5))
        self.eps_ln = int(np.floor(LN_EPS * d * d * 2.0 ** (2 * x_fmt.frac) + 0.5))
        if self.eps_in < 1 or (self.ln and self.eps_ln < 1):
            raise ValueError("eps rounds to 0: log2(0) would be possible")
        num_ln_max = d * s2_ln_max + self.eps_ln
        num_in_max = self.T * max(stats_frames, n_frames) * big_f * big_f + self.eps_in
        self.num_w = max(num_ln_max, num_in_max).bit_length()
        self.n_cols = max(3, -(-self.s2_w // DIGIT))
        if self.num_w > DIGIT * self.n_cols + 8 or self.s1_w > 2 * DIGIT:
            raise ValueError("variance numerator too wide for the column schedule")
        # centred value n·x − Σx: two 17-bit chunks on the multipliers' 18-bit side
        self.cen_w = max(signed_bits(-2 * d * big_x, 2 * d * big_x),
                         signed_bits(-2 * self.T * big_f, 2 * self.T * big_f))
        if self.cen_w > DIGIT + MUL_B_BITS:
            raise ValueError("centred value too wide for two DSP products")
        # the rounding shift r = −(e + k) ≥ 1, split as 8·q − j
        e_in = _e_range(self.eps_in, num_in_max, feat_fmt.frac)
        e_ln = _e_range(max(1, self.eps_ln), num_ln_max, x_fmt.frac)
        self.k_in = -F.EXP_MANT - feat_fmt.frac + in_out_fmt.frac
        self.k_ln = [-F.EXP_MANT - x_fmt.frac + p.norm_frac for p in self.ln]
        r_lo = min([-(e_in[1] + self.k_in)] + [-(e_ln[1] + k) for k in self.k_ln])
        r_hi = max([-(e_in[0] + self.k_in)] + [-(e_ln[0] + k) for k in self.k_ln])
        if r_lo < 1:
            raise ValueError("normalisation would need a left shift: unsupported")
        self.q_lo, self.q_hi = -(-r_lo // 8), -(-r_hi // 8)
        self.e_range = (min(e_in[0], e_ln[0]), max(e_in[1], e_ln[1]))
        self.v_fmts = [in_out_fmt] + [Fmt(p.norm_frac + 6, p.norm_frac) for p in self.ln]
        for n_, f_ in [(self.T, in_out_fmt)] + [(d, f_) for f_ in self.v_fmts[1:]]:
            bound = math.sqrt(n_) * (1 + RSQRT_REL_ERR) * 2 ** f_.frac + 2
            if bound >= f_.max_int:
                raise ValueError(f"normalised value may saturate {f_} (n = {n_}): unsupported")
        self.v_w = max(f_.bits for f_ in self.v_fmts)
        self.out_width = max([in_out_fmt.bits] + [p.out_fmt.bits for p in self.ln])
        self.addr_n = max(n_bands, d)
        n_sets = max(2, len(self.ln))
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"mode": 2, "set": range(n_sets)}))),
            "stats": In(stream.Signature(self.stats_layout)),
            "rd": Out(wiring.Signature({"en": Out(1), "addr": Out(range(self.addr_n)),
                                        "data": In(signed(self.x_width))})),
            "o": Out(stream.Signature(data.StructLayout({
                "index": range(self.addr_n), "value": signed(self.out_width), "last": 1}),
                always_ready=True)),
            "busy": Out(1),
            "mul": Out(mul_signature(self.N_MUL)),
            "exp2": Out(exp2_port()),
        })

    def elaborate(self, platform):
        m = Module()
        T, d, nb = self.T, self.d, self.n_bands
        n_sets = max(1, len(self.ln))
        A, B, P = self.mul.a, self.mul.b, self.mul.p
        q_w = max(1, (self.q_hi - self.q_lo).bit_length())
        mp_w = F.EXP_MANT + 1 + 7              # m' = m·2**j, j ≤ 7

        mode = Signal(2)
        lset = Signal(range(max(2, n_sets)))
        is_ln = Signal()
        m.d.comb += is_ln.eq(mode == self.LN)
        # per-band instance-norm constants
        s1_shape = signed(self.stats_layout["s1"].shape.width)
        mem_s1 = Memory(shape=s1_shape, depth=nb, init=[])
        mem_m = Memory(shape=unsigned(mp_w), depth=nb, init=[])
        mem_q = Memory(shape=unsigned(q_w), depth=nb, init=[])
        m.submodules.mem_s1, m.submodules.mem_m, m.submodules.mem_q = mem_s1, mem_m, mem_q
        w_s1, w_m, w_q = mem_s1.write_port(), mem_m.write_port(), mem_q.write_port()
        r_s1, r_m, r_q = mem_s1.read_port(), mem_m.read_port(), mem_q.read_port()
        # γ, β of every LayerNorm set, one ROM word per (set, channel)
        gb_layout = data.StructLayout({"g": signed(GAMMA_FMT.bits),
                                       "b": signed(max(p.out_fmt.bits for p in self.ln) if self.ln else 2)})
        gb_init = []
        for p in self.ln:
            for i in range(d):
                gb_init.append(gb_layout.const({"g": int(p.gamma[i]), "b": int(p.beta[i])}).as_value().value)
        mem_gb = Memory(shape=gb_layout.as_shape(), depth=max(2, len(gb_init)), init=gb_init)
        m.submodules.mem_gb = mem_gb
        r_gb = mem_gb.read_port()

        # ---- statistics and rsqrt registers
        s1 = Signal(signed(self.s1_w))
        s2 = Signal(unsigned(self.s2_w))
        band = Signal(range(max(2, nb + 1)))
        mr = Signal(unsigned(mp_w))            # LayerNorm m'
        qr = Signal(unsigned(q_w))             # LayerNorm q − q_lo

        # ---- apply pipeline (IN_APPLY and LN pass 2), one element per cycle
        issue = Signal()
        idx = Signal(range(self.addr_n + 1))
        n_now = Signal(range(max(T, nb, d) + 1))
        m.d.comb += n_now.eq(Mux(is_ln, d, nb))
        t1, i1 = Signal(), Signal.like(idx)
        m.d.sync += [t1.eq(issue), i1.eq(idx)]
        with m.If(issue):
            m.d.comb += [self.rd.en.eq(1), self.rd.addr.eq(idx),
                         r_s1.addr.eq(idx), r_m.addr.eq(idx), r_q.addr.eq(idx)]
        m.d.comb += r_gb.addr.eq(lset * d + Mux(issue, idx, 0))
        x1 = self.rd.data
        cen = Signal(signed(self.cen_w))
        m2 = Signal(unsigned(mp_w))
        q2 = Signal(unsigned(q_w))
        t2, i2 = Signal(), Signal.like(idx)
        gb2 = Signal.like(r_gb.data)
        xf_ = x1[:self.feat_fmt.bits]
        nx = Mux(is_ln, const_mul(x1, d),
                 const_mul(xf_.as_signed() if self.feat_fmt.signed else xf_, T))
        m.d.sync += [t2.eq(t1), i2.eq(i1), cen.eq(nx - Mux(is_ln, s1, r_s1.data)),
                     m2.eq(Mux(is_ln, mr, r_m.data)), q2.eq(Mux(is_ln, qr, r_q.data)),
                     gb2.eq(r_gb.data)]
        # stage 2: (n·x − Σx)·m' as two products (17-bit unsigned low chunk, signed high part)
        t4, i4, q4, gb4 = Signal(), Signal.like(idx), Signal.like(q2), Signal.like(gb2)
        t3, i3, q3, gb3 = Signal(), Signal.like(idx), Signal.like(q2), Signal.like(gb2)
        m.d.sync += [t3.eq(t2), i3.eq(i2), q3.eq(q2), gb3.eq(gb2),
                     t4.eq(t3), i4.eq(i3), q4.eq(q3), gb4.eq(gb3)]
        # stage 4: the window of P = P0 + P1·2**17 at bit 8q − 1 (v_w + 1 bits), then round
        p0_w = DIGIT + mp_w + 1
        p1_w = (self.cen_w - DIGIT) + mp_w + 1
        prod_w = max(p0_w, p1_w + DIGIT) + 1
        prod = Signal(signed(prod_w))
        m.d.comb += prod.eq(P[0][:p0_w].as_signed() + (P[1][:p1_w].as_signed() << DIGIT))
        win_w = self.v_w + 1
        wins = []
        for q in range(self.q_lo, self.q_hi + 1):
            lo_bit = 8 * q - 1
            wins.append(prod[lo_bit:lo_bit + win_w] if lo_bit + win_w <= prod_w else
                        (prod >> lo_bit)[:win_w])
        win5 = Signal(signed(win_w))
        t5, i5, gb5 = Signal(), Signal.like(idx), Signal.like(gb2)
        m.d.sync += [t5.eq(t4), i5.eq(i4), gb5.eq(gb4),
                     win5.eq((Array(wins)[q4] if len(wins) > 1 else wins[0]).as_signed())]
        v5 = Signal(signed(self.v_w))
        m.d.comb += v5.eq((win5 + 1) >> 1)
        # stage 5: v·γ on port 2 (LayerNorm)
        gbv5 = data.View(gb_layout, gb5)
        t6, i6, gb6, v6 = Signal(), Signal.like(idx), Signal.like(gb2), Signal.like(v5)
        t7, i7, gb7, v7 = Signal(), Signal.like(idx), Signal.like(gb2), Signal.like(v5)
        m.d.sync += [t6.eq(t5), i6.eq(i5), gb6.eq(gb5), v6.eq(v5),
                     t7.eq(t6), i7.eq(i6), gb7.eq(gb6), v7.eq(v6)]
        gbv7 = data.View(gb_layout, gb7)
        aff = Signal(signed(self.out_width + 2))
        pg_w = self.v_w + GAMMA_FMT.bits
        pg = P[2][:pg_w].as_signed()
        # one rounding/bias/saturation path per distinct (shift, format) among the sets
        groups: dict[tuple, int] = {}
        set_group = []
        for p in self.ln:
            key = (p.norm_frac + GAMMA_FMT.frac - p.out_fmt.frac, p.out_fmt.min_int, p.out_fmt.max_int)
            set_group.append(groups.setdefault(key, len(groups)))
        outs = [clamp(m, rshift_round_c(pg, sh) + gbv7.b, lo_, hi_) for sh, lo_, hi_ in groups]
        if len(outs) > 1:
            grp = Array(Const(g, range(len(outs))) for g in set_group)[lset]
            m.d.comb += aff.eq(Array(outs)[grp])
        elif outs:
            m.d.comb += aff.eq(outs[0])
        y8 = Signal(signed(self.out_width))
        t8, i8 = Signal(), Signal.like(idx)
        m.d.sync += [t8.eq(t7), i8.eq(i7), y8.eq(Mux(is_ln, aff, v7))]
        m.d.comb += [self.o.valid.eq(t8), self.o.payload.index.eq(i8),
                     self.o.payload.value.eq(y8),
                     self.o.payload.last.eq(i8 == n_now - 1)]

        # ---- LN pass 1: Σx, Σx² (x² as two products)
        p1_issue = Signal()
        q1 = Signal()
        m.d.sync += q1.eq(p1_issue)
        q1d = Signal()
        q3_ = Signal()
        m.d.sync += [q1d.eq(q1), q3_.eq(q1d)]
        with m.If(p1_issue):
            m.d.comb += [self.rd.en.eq(1), self.rd.addr.eq(idx)]
        xx_w = 2 * self.x_fmt.bits

        # ---- num, column by column: digit i of n·Σx² − (Σx)² + eps
        C = self.n_cols
        n_mul = Mux(mode == self.IN_SETUP, T, d)
        a0 = s1[:DIGIT]
        a1 = s1[DIGIT:].as_signed()
        col = Signal(range(C + MUL_LATENCY + 2))         # 1 … C issue columns 0 … C−1
        num = Signal(unsigned(self.num_w))
        n_bits = max(T, d).bit_length()
        acc_w = max(max(self.eps_in, self.eps_ln).bit_length(), 2 * DIGIT + 2, DIGIT + n_bits + 1) + 3
        acc = Signal(signed(acc_w))
        eps_v = Mux(mode == self.IN_SETUP, self.eps_in, self.eps_ln)

        # ---- log2: normalise num in place, then the table
        lz = Signal(range(self.num_w + 1))               # shifts so far
        rom = log2_rom_words()
        rem_bits = F.MANT_BITS - F.SEG_BITS
        rom_layout = data.StructLayout({"a": unsigned(F.LOG_FRAC + 1),
                                        "d": unsigned(max(w for _, w in rom).bit_length())})
        log_rom = Memory(shape=rom_layout.as_shape(), depth=len(rom),
                         init=[rom_layout.const({"a": a, "d": dd}).as_value().value for a, dd in rom])
        m.submodules.log_rom = log_rom
        lr = log_rom.read_port(domain="comb")
        top = num[self.num_w - 1]
        mant = num[self.num_w - 1 - F.MANT_BITS:self.num_w - 1]
        m.d.comb += lr.addr.eq(mant[rem_bits:])
        lrv = data.View(rom_layout, lr.data)
        la = Signal.like(lrv.a)
        lphase = Signal(range(MUL_LATENCY + 2))
        y_half = Signal(signed(LOG_OUT_WIDTH))
        e_w = signed_bits(*self.e_range) + 1
        e_new = Signal(signed(e_w))
        # log2(num) − 2·x_frac·2**16 = ((num_w − 1 − lz − 2·x_frac) << 16) + frac
        two_xf = Mux(mode == self.IN_SETUP, 2 * self.feat_fmt.frac, 2 * self.x_fmt.frac)

        # ---- multiplier operand routing
        with m.If(t2):
            m.d.comb += [A[0].eq(m2), B[0].eq(cen[:DIGIT]), A[1].eq(m2), B[1].eq(cen[DIGIT:].as_signed())]
        with m.Elif(q1):
            m.d.comb += [A[0].eq(x1), B[0].eq(x1[:DIGIT]), A[1].eq(x1), B[1].eq(x1[DIGIT:].as_signed())]
        with m.Elif(col != 0), m.Switch(col):
            for c in range(C):
                with m.Case(c + 1):
                    hi_ = min((c + 1) * DIGIT, self.s2_w)
                    if c * DIGIT < hi_:
                        m.d.comb += [A[0].eq(s2[c * DIGIT:hi_]), B[0].eq(n_mul)]
                    if c == 0:
                        m.d.comb += [A[1].eq(a0), B[1].eq(a0)]
                    elif c == 1:
                        m.d.comb += [A[1].eq(a0), B[1].eq(a1 << 1)]
                    elif c == 2:
                        m.d.comb += [A[1].eq(a1), B[1].eq(a1)]
        with m.Elif(lphase == 1):
            m.d.comb += [A[0].eq(lrv.d), B[0].eq(mant[:rem_bits])]
        with m.If(t5):
            m.d.comb += [A[2].eq(v5), B[2].eq(gbv5.g)]

        with m.If(q1):
            m.d.sync += s1.eq(s1 + x1)
        with m.If(q3_):
            m.d.sync += s2.eq(s2 + P[0][:xx_w].as_signed() + (P[1][:xx_w].as_signed() << DIGIT))

        # column results: acc + n·digit − (Σx)² digit product
        p0c = P[0][:DIGIT + n_bits + 1].as_signed()
        p1c = P[1][:max(2 * DIGIT + 1, self.s1_w + 2)].as_signed()
        colsum = Signal(signed(acc_w + 1))
        m.d.comb += colsum.eq(acc + p0c - p1c)

        # ---- control
        cnt = Signal(range(max(T, nb, d) + 2))
        m.d.comb += self.exp2.o.ready.eq(1)
        m.d.comb += self.cmd.ready.eq(~self.busy)
        with m.FSM():
            with m.State("IDLE"), m.If(self.cmd.valid):
                m.d.sync += [mode.eq(self.cmd.payload.mode), lset.eq(self.cmd.payload.set),
                             self.busy.eq(1), idx.eq(0), band.eq(0), cnt.eq(0),
                             s1.eq(0), s2.eq(0)]
                with m.Switch(self.cmd.payload.mode):
                    with m.Case(self.IN_SETUP):
                        m.next = "STATS"
                    with m.Case(self.IN_APPLY):
                        m.next = "APPLY"
                    with m.Default():
                        m.next = "SUMS"
            with m.State("STATS"):
                m.d.comb += self.stats.ready.eq(1)
                with m.If(self.stats.valid):
                    m.d.sync += [s1.eq(self.stats.payload.s1), s2.eq(self.stats.payload.s2),
                                 col.eq(1)]
                    m.d.comb += [w_s1.addr.eq(band), w_s1.data.eq(self.stats.payload.s1),
                                 w_s1.en.eq(1)]
                    m.next = "NUM"
            with m.State("SUMS"):
                m.d.comb += p1_issue.eq(1)
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == d - 1):
                    m.d.sync += [idx.eq(0), cnt.eq(0)]
                    m.next = "SUMS_DRAIN"
            with m.State("SUMS_DRAIN"):
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == MUL_LATENCY + 1):
                    m.d.sync += col.eq(1)
                    m.next = "NUM"
            with m.State("NUM"):
                # phase c + 1 presents column c; its products arrive MUL_LATENCY cycles later
                m.d.sync += col.eq(col + 1)
                with m.If(col == 1):
                    m.d.sync += acc.eq(eps_v)
                with m.Switch(col):
                    for c in range(C):
                        with m.Case(c + 1 + MUL_LATENCY):
                            if c < C - 1:
                                m.d.sync += [num[c * DIGIT:(c + 1) * DIGIT].eq(colsum[:DIGIT]),
                                             acc.eq(colsum >> DIGIT)]
                            else:
                                m.d.sync += num[c * DIGIT:].eq(colsum)
                with m.If(col == C + MUL_LATENCY):
                    m.d.sync += [col.eq(0), lz.eq(0)]
                    m.next = "NORM"
            with m.State("NORM"):
                # shift num left until its top bit is set: 8 at a time while the top 8 are 0
                with m.If(top):
                    m.d.sync += lphase.eq(1)
                    m.next = "LOG2"
                with m.Elif(num[max(0, self.num_w - 8):] == 0):
                    m.d.sync += [num.eq(num << 8), lz.eq(lz + 8)]
                with m.Else():
                    m.d.sync += [num.eq(num << 1), lz.eq(lz + 1)]
            with m.State("LOG2"):
                # lphase 1 presents (table[i+1] − table[i])·rem; the product 2 cycles later
                m.d.sync += lphase.eq(lphase + 1)
                with m.If(lphase == 1):
                    m.d.sync += la.eq(lrv.a)
                with m.If(lphase == 1 + MUL_LATENCY):
                    frac = la + rshift_round_c(P[0][:F.LOG_FRAC + 12].as_signed(), rem_bits)
                    ipart = (self.num_w - 1 - lz) - two_xf
                    l_ = Signal(signed(LOG_OUT_WIDTH))
                    m.d.comb += l_.eq((ipart << F.LOG_FRAC) + frac)
                    m.d.sync += [y_half.eq((-l_ + 1) >> 1), lphase.eq(0)]
                    m.next = "EXP2"
            with m.State("EXP2"):
                m.d.comb += [self.exp2.i.valid.eq(1),
                             self.exp2.i.payload.eq(Cat(y_half[:F.LOG_FRAC], Const(0, 1)))]
                m.d.sync += e_new.eq(y_half >> F.LOG_FRAC)
                with m.If(self.exp2.i.ready):
                    m.next = "EXP2_WAIT"
            with m.State("EXP2_WAIT"), m.If(self.exp2.o.valid):
                # r = −(e + k) = 8·q − j: store m·2**j and q − q_lo
                kv = Mux(is_ln, Array(Const(k, signed(8)) for k in self.k_ln or [0])[lset],
                         self.k_in)
                r = Signal(signed(e_w + 2))
                m.d.comb += r.eq(-(e_new + kv))
                qv = Signal(signed(e_w + 2))
                m.d.comb += qv.eq((r + 7) >> 3)
                j = Signal(3)
                m.d.comb += j.eq((qv << 3) - r)
                mp = Signal(unsigned(mp_w))
                m.d.comb += mp.eq(self.exp2.o.payload << j)
                with m.If(mode == self.IN_SETUP):
                    m.d.comb += [w_m.addr.eq(band), w_m.data.eq(mp), w_m.en.eq(1),
                                 w_q.addr.eq(band), w_q.data.eq(qv - self.q_lo), w_q.en.eq(1)]
                    m.d.sync += band.eq(band + 1)
                    with m.If(band == nb - 1):
                        m.d.sync += self.busy.eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "STATS"
                with m.Else():
                    m.d.sync += [mr.eq(mp), qr.eq(qv - self.q_lo), idx.eq(0)]
                    m.next = "APPLY"
            with m.State("APPLY"):
                m.d.comb += issue.eq(1)
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == n_now - 1):
                    m.next = "APPLY_DRAIN"
            with m.State("APPLY_DRAIN"), m.If(self.o.valid & self.o.payload.last):
                m.d.sync += self.busy.eq(0)
                m.next = "IDLE"
        return EnableInserter({"sync": self.busy | self.cmd.valid})(m)
