"""Normalisations: instance norm (setup from the clip's Σx, Σx²; per-frame apply) and LayerNorm,
bit-exact with ``fixed.norm.normalize`` / ``fixed.norm.layer_norm``.

One :class:`NormUnit` does all three jobs (the back end runs one at a time)::

    num = n·Σx² − (Σx)² + round(eps·n²·2**(2·x_frac))            exact, up to 56 bits
    y   = round_half_up(−(log2(num) − 2·x_frac) / 2)              Log2Unit, LOG_FRAC bits
    e   = y >> 16;  m = exp2(y − (e << 16))                       Exp2Unit, m ∈ [1, 2) · 2**16
    v_i = sat(shift_round((n·x_i − Σx) · m, e − 16 − x_frac + v_frac))
    LayerNorm only:  out_i = sat(round(v_i · γ_i / 2**(v_frac + 11 − out_frac)) + β_i)

- ``IN_SETUP`` (once per clip): takes the 40 (Σx, Σx²) pairs from ``stats`` and stores Σx, m, e
  per band (three 40-entry memories). About 15 cycles per band.
- ``IN_APPLY`` (per frame): reads the 40 features through ``rd`` and emits the normalised
  values on ``o``, one per cycle.
- ``LN`` (per frame and LayerNorm ``set``): reads the d residual values twice through ``rd``
  (sums, then apply) and emits d outputs on ``o``. About 2·d + 30 cycles.

Multiplies use three shared :class:`~nanomamba_hw.hw.mac.MulBank` ports: operands wider than a
DSP are split into 24/17-bit chunks (x² and (n·x − Σx)·m take two DSP products, γ one), so the
apply pipelines accept one element per cycle. log2/exp2 go to the shared
:class:`~nanomamba_hw.hw.funcs.Log2Unit`/:class:`~nanomamba_hw.hw.funcs.Exp2Unit` through the
``log2``/``exp2`` ports (the Exp2Unit's format is ``DA_FMT``, u17.16: for the rsqrt mantissa,
whose input lies in [0, 1), it gives exactly ``RS_MANT_FMT``'s values, so the scan shares it).
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
    MUL_A_BITS,
    MUL_LATENCY,
    clamp,
    const_mul,
    mul_signature,
    rshift_round_c,
    rshift_round_v,
    signed_bits,
)

EXP2_IN_WIDTH = 32          # the shared Exp2Unit's input (rsqrt fraction, scan's −|A|·Δ)
EXP2_OUT_FMT = DA_FMT       # u17.16
N_BANDS = 40
STATS_FRAMES = 101          # the analytic bound of the stats interface


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


def shift_round_var(m: Module, x, sh, sh_min: int, sh_max: int, width: int, name: str):
    """``fixed.ops.shift_round(x, sh)`` for sh in [sh_min, sh_max], exact on ``width``-bit x.

    Left shifts are computed exactly (callers saturate); right shifts of ``width`` or more give 0.
    """
    out_w = width + max(0, sh_max) + 1
    out = Signal(signed(out_w), name=name)
    if sh_min < 0:
        r = Signal(range(width + 1), name=f"{name}_r")
        m.d.comb += r.eq(Mux(-sh > width, width, -sh))
        xw = Signal(signed(width + 1), name=f"{name}_xw")
        m.d.comb += xw.eq(x)
        right = rshift_round_v(xw, r)
    else:
        right = x
    if sh_max > 0:
        lsh = Signal(range(sh_max + 1), name=f"{name}_l")
        m.d.comb += lsh.eq(Mux(sh > 0, sh, 0))
        left = x << lsh
        m.d.comb += out.eq(Mux(sh >= 0, left, right))
    else:
        m.d.comb += out.eq(right)
    return out


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
        xb = max(x_fmt.bits, feat_fmt.bits)
        self.x_width = xb
        big_x = 1 << (x_fmt.bits - 1)
        self.s1_ln_w = signed_bits(-d * big_x, d * big_x)
        self.s1_w = max(self.s1_ln_w, self.stats_layout["s1"].shape.width)
        self.s2_ln_max = d * big_x * big_x
        self.s2_w = max(self.s2_ln_max.bit_length(), self.stats_layout["s2"].shape.width) + 1
        num_ln_max = d * self.s2_ln_max
        big_f = 1 << (feat_fmt.bits - 1)
        num_in_max = self.T * max(stats_frames, n_frames) * big_f * big_f
        self.num_w = max(num_ln_max, num_in_max).bit_length() + 1
        if self.num_w > 62:
            raise ValueError("variance numerator exceeds the 62-bit log2 unit")
        self.eps_in = int(np.floor(IN_EPS * self.T * self.T * 2.0 ** (2 * feat_fmt.frac) + 0.5))
        self.eps_ln = int(np.floor(LN_EPS * d * d * 2.0 ** (2 * x_fmt.frac) + 0.5))
        # centred value n·x − Σx and its product with m (u17)
        self.cen_w = max(signed_bits(-2 * d * big_x, 2 * d * big_x),
                         signed_bits(-2 * self.T * big_f, 2 * self.T * big_f))
        if self.cen_w > 24 + MUL_A_BITS:
            raise ValueError("centred value too wide for two DSP products")
        self.prod_w = self.cen_w + EXP2_OUT_FMT.bits + 1
        # the variable shift e − 16 − x_frac + v_frac
        e_in = _e_range(max(1, self.eps_in), num_in_max + self.eps_in, feat_fmt.frac)
        e_ln = _e_range(max(1, self.eps_ln), num_ln_max + self.eps_ln, x_fmt.frac)
        k_in = -F.EXP_MANT - feat_fmt.frac + in_out_fmt.frac
        self.k_ln = [-F.EXP_MANT - x_fmt.frac + p.norm_frac for p in self.ln]
        lo = [e_in[0] + k_in] + [e_ln[0] + k for k in self.k_ln]
        hi = [e_in[1] + k_in] + [e_ln[1] + k for k in self.k_ln]
        self.k_in = k_in
        self.sh_range = (min(lo), max(hi))
        self.e_range = (min(e_in[0], e_ln[0]), max(e_in[1], e_ln[1]))
        self.v_fmts = [in_out_fmt] + [Fmt(p.norm_frac + 6, p.norm_frac) for p in self.ln]
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
            "log2": Out(log2_port(self.num_w)),
            "exp2": Out(exp2_port()),
        })

    def elaborate(self, platform):
        m = Module()
        T, d, nb = self.T, self.d, self.n_bands
        n_sets = max(1, len(self.ln))
        e_w = signed_bits(*self.e_range) + 1

        mode = Signal(2)
        lset = Signal(range(max(2, n_sets)))
        # per-band instance-norm constants
        s1_shape = signed(self.stats_layout["s1"].shape.width)
        mem_s1 = Memory(shape=s1_shape, depth=nb, init=[])
        mem_m = Memory(shape=unsigned(EXP2_OUT_FMT.bits), depth=nb, init=[])
        mem_e = Memory(shape=signed(e_w), depth=nb, init=[])
        m.submodules.mem_s1, m.submodules.mem_m, m.submodules.mem_e = mem_s1, mem_m, mem_e
        w_s1, w_m, w_e = mem_s1.write_port(), mem_m.write_port(), mem_e.write_port()
        r_s1, r_m, r_e = mem_s1.read_port(), mem_m.read_port(), mem_e.read_port()
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

        # ---- statistics registers
        s1 = Signal(signed(self.s1_w))
        s2 = Signal(unsigned(self.s2_w))
        band = Signal(range(max(2, nb + 1)))
        mr = Signal(unsigned(EXP2_OUT_FMT.bits))       # LayerNorm rsqrt
        er = Signal(signed(e_w))

        # ---- shared multiplier ports: default zero
        A, B, P = self.mul.a, self.mul.b, self.mul.p

        # ---- apply pipeline (IN_APPLY and LN pass 2), one element per cycle
        issue = Signal()
        idx = Signal(range(self.addr_n + 1))
        n_now = Signal(range(max(T, nb, d) + 1))
        m.d.comb += n_now.eq(Mux(mode == self.LN, d, nb))
        # stage 1: operands
        t1 = Signal()
        i1 = Signal.like(idx)
        m.d.sync += [t1.eq(issue), i1.eq(idx)]
        with m.If(issue):
            m.d.comb += [self.rd.en.eq(1), self.rd.addr.eq(idx),
                         r_s1.addr.eq(idx), r_m.addr.eq(idx), r_e.addr.eq(idx)]
        m.d.comb += r_gb.addr.eq(lset * d + Mux(issue, idx, 0))
        x1 = self.rd.data
        s1v = Mux(mode == self.LN, s1, r_s1.data)
        mv = Mux(mode == self.LN, mr, r_m.data)
        ev = Mux(mode == self.LN, er, r_e.data)
        kv = Mux(mode == self.LN, Array(Const(k, signed(8)) for k in self.k_ln or [0])[lset],
                 self.k_in)
        cen = Signal(signed(self.cen_w))
        nx = Mux(mode == self.LN, const_mul(x1, d), const_mul(x1, T))
        t2, i2 = Signal(), Signal.like(idx)
        m2 = Signal(unsigned(EXP2_OUT_FMT.bits))
        sh_w = signed_bits(*self.sh_range) + 1
        sh2 = Signal(signed(sh_w))
        gb2 = Signal.like(r_gb.data)
        m.d.sync += [t2.eq(t1), i2.eq(i1), cen.eq(nx - s1v), m2.eq(mv), sh2.eq(ev + kv),
                     gb2.eq(r_gb.data)]
        # stage 2: (n·x − Σx)·m as two products (low 24 bits unsigned, high part signed)
        apply_mul = Signal()
        m.d.comb += apply_mul.eq(t2)
        # stage 2 + MUL_LATENCY: product, variable shift, saturation
        t4, i4 = Signal(), Signal.like(idx)
        sh4 = Signal.like(sh2)
        gb4 = Signal.like(gb2)
        t3, i3, sh3, gb3 = Signal(), Signal.like(idx), Signal.like(sh2), Signal.like(gb2)
        m.d.sync += [t3.eq(t2), i3.eq(i2), sh3.eq(sh2), gb3.eq(gb2),
                     t4.eq(t3), i4.eq(i3), sh4.eq(sh3), gb4.eq(gb3)]
        prod = Signal(signed(self.prod_w))
        m.d.comb += prod.eq(P[0] + (P[1] << 24))
        vsh = shift_round_var(m, prod, sh4, *self.sh_range, self.prod_w, "vsh")
        v_lo = Mux(mode == self.LN, Array(Const(f.min_int, signed(32)) for f in self.v_fmts[1:] or [self.in_out_fmt])[lset],
                   self.in_out_fmt.min_int)
        v_hi = Mux(mode == self.LN, Array(Const(f.max_int, signed(32)) for f in self.v_fmts[1:] or [self.in_out_fmt])[lset],
                   self.in_out_fmt.max_int)
        v5 = Signal(signed(max(f.bits for f in self.v_fmts)))
        t5, i5, gb5 = Signal(), Signal.like(idx), Signal.like(gb2)
        m.d.sync += [t5.eq(t4), i5.eq(i4), gb5.eq(gb4), v5.eq(clamp(m, vsh, v_lo, v_hi))]
        # stage 5: v·γ on port 2 (LayerNorm)
        gbv5 = data.View(gb_layout, gb5)
        t6, i6, gb6, v6 = Signal(), Signal.like(idx), Signal.like(gb2), Signal.like(v5)
        t7, i7, gb7, v7 = Signal(), Signal.like(idx), Signal.like(gb2), Signal.like(v5)
        m.d.sync += [t6.eq(t5), i6.eq(i5), gb6.eq(gb5), v6.eq(v5),
                     t7.eq(t6), i7.eq(i6), gb7.eq(gb6), v7.eq(v6)]
        gbv7 = data.View(gb_layout, gb7)
        aff = Signal(signed(self.out_width + 2))
        # one rounding/bias/saturation path per distinct (shift, format) among the sets
        groups: dict[tuple, int] = {}
        set_group = []
        for p in self.ln:
            key = (p.norm_frac + GAMMA_FMT.frac - p.out_fmt.frac, p.out_fmt.min_int, p.out_fmt.max_int)
            set_group.append(groups.setdefault(key, len(groups)))
        outs = [clamp(m, rshift_round_c(P[2], sh) + gbv7.b, lo_, hi_) for sh, lo_, hi_ in groups]
        if len(outs) > 1:
            grp = Array(Const(g, range(len(outs))) for g in set_group)[lset]
            m.d.comb += aff.eq(Array(outs)[grp])
        elif outs:
            m.d.comb += aff.eq(outs[0])
        y8 = Signal(signed(self.out_width))
        t8, i8 = Signal(), Signal.like(idx)
        m.d.sync += [t8.eq(t7), i8.eq(i7), y8.eq(Mux(mode == self.LN, aff, v7))]
        m.d.comb += [self.o.valid.eq(t8), self.o.payload.index.eq(i8),
                     self.o.payload.value.eq(y8),
                     self.o.payload.last.eq(i8 == n_now - 1)]

        # ---- LN pass 1 pipeline: Σx, Σx² (x² as two products)
        p1_issue = Signal()
        q1 = Signal()
        m.d.sync += q1.eq(p1_issue)
        q2, q3 = Signal(), Signal()
        m.d.sync += [q2.eq(q1), q3.eq(q2)]
        with m.If(p1_issue):
            m.d.comb += [self.rd.en.eq(1), self.rd.addr.eq(idx)]

        # ---- num = n·Σx² − (Σx)² + eps, one chunk product per cycle on port 0 (n·Σx² as
        # 24-bit chunks of Σx² times n; (Σx)² as four chunk products), accumulated with shifts
        n_mul = Mux(mode == self.IN_SETUP, T, d)
        terms = []                      # (a, b, shift, subtract)
        for c in range(0, self.s2_w, 24):
            terms.append((s2[c:min(c + 24, self.s2_w)], n_mul, c, False))
        if self.s1_w > 24 + MUL_A_BITS or self.s1_w - 17 > 18:
            raise ValueError("Σx too wide for the chunked square")
        for a_, sa in ((s1[:24], 0), (s1 >> 24, 24)):
            for b_, sb in ((s1[:17], 0), (s1 >> 17, 17)):
                terms.append((a_, b_, sa + sb, True))
        sq_phase = Signal(range(len(terms) + MUL_LATENCY + 2))
        numr = Signal(signed(self.num_w + 1))
        log_off = Mux(mode == self.IN_SETUP, (2 * self.feat_fmt.frac) << F.LOG_FRAC,
                      (2 * self.x_fmt.frac) << F.LOG_FRAC)

        # ---- multiplier operand routing
        with m.If(apply_mul):
            m.d.comb += [A[0].eq(cen[:24]), B[0].eq(m2), A[1].eq(cen >> 24), B[1].eq(m2)]
        with m.Elif(q1):
            m.d.comb += [A[0].eq(x1), B[0].eq(x1[:17]), A[1].eq(x1), B[1].eq(x1 >> 17)]
        with m.Elif(sq_phase != 0), m.Switch(sq_phase):
            for j, (a_, b_, _, _) in enumerate(terms):
                with m.Case(j + 1):
                    m.d.comb += [A[0].eq(a_), B[0].eq(b_)]
        with m.If(t5):
            m.d.comb += [A[2].eq(v5), B[2].eq(gbv5.g)]

        with m.If(q1):
            m.d.sync += s1.eq(s1 + x1)
        with m.If(q3):
            m.d.sync += s2.eq(s2 + P[0] + (P[1] << 17))

        # ---- control
        cnt = Signal(range(max(T, nb, d) + 2))
        e_new = Signal(signed(e_w))
        y_half = Signal(signed(LOG_OUT_WIDTH))
        m.d.comb += [self.log2.o.ready.eq(1), self.exp2.o.ready.eq(1)]
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
                                 sq_phase.eq(1)]
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
                with m.If(cnt == 3):
                    m.d.sync += sq_phase.eq(1)
                    m.next = "NUM"
            with m.State("NUM"):
                # phase j + 1 presents term j; its product arrives MUL_LATENCY cycles later
                m.d.sync += sq_phase.eq(sq_phase + 1)
                with m.If(sq_phase == 1):
                    m.d.sync += numr.eq(Mux(mode == self.IN_SETUP, self.eps_in, self.eps_ln))
                with m.Switch(sq_phase):
                    for j, (_, _, sh, sub) in enumerate(terms):
                        with m.Case(j + 1 + MUL_LATENCY):
                            t_ = P[0] << sh
                            m.d.sync += numr.eq(numr - t_ if sub else numr + t_)
                with m.If(sq_phase == len(terms) + MUL_LATENCY):
                    m.d.sync += sq_phase.eq(0)
                    m.next = "LOG2"
            with m.State("LOG2"):
                m.d.comb += [self.log2.i.valid.eq(1), self.log2.i.payload.eq(numr[:self.num_w])]
                with m.If(self.log2.i.ready):
                    m.next = "LOG2_WAIT"
            with m.State("LOG2_WAIT"), m.If(self.log2.o.valid):
                l = self.log2.o.payload - log_off
                m.d.sync += y_half.eq((-l + 1) >> 1)
                m.next = "EXP2"
            with m.State("EXP2"):
                m.d.comb += [self.exp2.i.valid.eq(1),
                             self.exp2.i.payload.eq(Cat(y_half[:F.LOG_FRAC], Const(0, 1)))]
                m.d.sync += e_new.eq(y_half >> F.LOG_FRAC)
                with m.If(self.exp2.i.ready):
                    m.next = "EXP2_WAIT"
            with m.State("EXP2_WAIT"), m.If(self.exp2.o.valid):
                with m.If(mode == self.IN_SETUP):
                    m.d.comb += [w_m.addr.eq(band), w_m.data.eq(self.exp2.o.payload), w_m.en.eq(1),
                                 w_e.addr.eq(band), w_e.data.eq(e_new), w_e.en.eq(1)]
                    m.d.sync += band.eq(band + 1)
                    with m.If(band == nb - 1):
                        m.d.sync += self.busy.eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "STATS"
                with m.Else():
                    m.d.sync += [mr.eq(self.exp2.o.payload), er.eq(e_new), idx.eq(0)]
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
