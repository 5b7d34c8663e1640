"""Normalisations: instance norm (setup from the clip's Σx, Σx²; per-frame apply) and LayerNorm,
bit-exact with ``fixed.norm.normalize`` / ``fixed.norm.layer_norm``.

One :class:`NormUnit` does all three jobs (the back end runs one at a time)::

    num = n·Σx² − (Σx)² + round(eps·n²·2**(2·x_frac))            exact, up to 56 bits
    y   = round_half_up(−(log2(num) − 2·x_frac) / 2)              LOG2 (fixed.funcs), LOG_FRAC bits
    e   = y >> 16;  m = exp2(y − (e << 16))                       Exp2Unit, m ∈ [1, 2) · 2**16
    v_i = shift_round((n·x_i − Σx) · m, e − 16 − x_frac + v_frac)       (never saturates, below)
    LayerNorm only:  out_i = sat(round(v_i · γ_i / 2**(v_frac + 11 − out_frac)) + β_i)

- ``IN_SETUP`` (once per clip): per band, reads the clip's T features of the band through
  ``rd`` (``addr`` = frame, ``band``), sums x and x² on the multipliers (as LayerNorm's first
  pass does) and stores −Σx, the mantissa and the shift of the band (three 40-entry
  memories). About T + 33 cycles per band.
- ``IN_APPLY`` (per frame): reads the 40 features through ``rd`` (``addr`` = band) and emits
  the normalised values on ``o``, one per cycle.
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
from .common import OrMux, shape_of
from .funcs import LOG_OUT_WIDTH, segment_rom
from .mac import (
    MUL_B_BITS,
    MUL_LATENCY,
    MUL_P_BITS,
    clamp,
    const_mul,
    delay,
    mul_signature,
    signed_bits,
)

EXP2_IN_WIDTH = 32          # the shared Exp2Unit's input (rsqrt fraction, scan's −|A|·Δ)
EXP2_OUT_FMT = DA_FMT       # u17.16
N_BANDS = 40
DIGIT = 17                  # column width of the numerator (unsigned 17 bits fit the 18-bit side)
RSQRT_REL_ERR = 2.0 ** -11  # bound on the rsqrt's relative error (log2/exp2 tables, roundings)


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


class NormUnit(wiring.Component):
    """Instance-norm setup/apply and LayerNorm (see the module docstring).

    The ``mul`` operands leave registered (each step's term in its own register, see
    :class:`~nanomamba_hw.hw.common.OrMux`): serve them with a
    :class:`~nanomamba_hw.hw.mac.MulBank` built with ``operands_registered=True``."""

    IN_SETUP, IN_APPLY, LN = 0, 1, 2
    N_MUL = 3

    def __init__(self, *, n_frames: int, feat_fmt: Fmt, in_out_fmt: Fmt, x_fmt: Fmt, d: int,
                 ln: Sequence[LayerNormParams], n_bands: int = N_BANDS):
        self.T, self.feat_fmt, self.in_out_fmt = n_frames, feat_fmt, in_out_fmt
        self.x_fmt, self.d, self.ln, self.n_bands = x_fmt, d, list(ln), n_bands
        for p in self.ln:
            if p.norm_frac + GAMMA_FMT.frac - p.out_fmt.frac < 0:
                raise ValueError("LayerNorm output finer than its product")
        # operand widths (analytic)
        self.x_width = max(x_fmt.bits, feat_fmt.bits)
        # the largest |x| of the LayerNorm input and of a feature
        big_x = self.big_x = 1 << (x_fmt.bits - 1)
        big_f = self.big_f = 1 << (feat_fmt.bits - 1)
        self.s1_ln_w = signed_bits(-d * big_x, d * big_x)
        self.s1_in_w = signed_bits(n_frames * feat_fmt.min_int, n_frames * feat_fmt.max_int)
        self.s1_w = max(self.s1_ln_w, self.s1_in_w)
        s2_ln_max = d * big_x * big_x
        s2_in_max = n_frames * big_f * big_f
        self.s2_w = max(s2_ln_max, s2_in_max).bit_length()
        self.eps_in = int(np.floor(IN_EPS * self.T * self.T * 2.0 ** (2 * feat_fmt.frac) + 0.5))
        self.eps_ln = int(np.floor(LN_EPS * d * d * 2.0 ** (2 * x_fmt.frac) + 0.5))
        if self.eps_in < 1 or (self.ln and self.eps_ln < 1):
            raise ValueError("eps rounds to 0: log2(0) would be possible")
        num_ln_max = d * s2_ln_max + self.eps_ln
        num_in_max = self.T * s2_in_max + self.eps_in
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
        self.addr_n = max(n_bands, d, n_frames)
        n_sets = max(2, len(self.ln))
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"mode": 2, "set": range(n_sets)}))),
            "rd": Out(wiring.Signature({"en": Out(1), "addr": Out(range(self.addr_n)),
                                        "band": Out(range(max(2, n_bands))),
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
        A, B, C, ACC, P = self.mul.a, self.mul.b, self.mul.c, self.mul.acc, self.mul.p
        # the three ports' operands from every step below: AND-OR of registered terms (see
        # OrMux), the registers outside the unit's clock enable
        outer = Module()
        ports = [OrMux(m, f"mul{k}", registered=True, regs_in=outer, a=A[k], b=B[k], c=C[k],
                       acc=ACC[k]) for k in range(3)]
        q_w = max(1, (self.q_hi - self.q_lo).bit_length())
        mp_w = F.EXP_MANT + 1 + 7              # m' = m·2**j, j ≤ 7
        D = DIGIT

        mode = Signal(2)
        lset = Signal(range(max(2, n_sets)))
        is_ln = Signal()
        m.d.comb += is_ln.eq(mode == self.LN)
        # per-band instance-norm constants: −Σx, m', q − q_lo
        s1_shape = signed(self.s1_in_w + 1)
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
        # γ, β in a block RAM: as a ROM in LUTs they cost ~90 LUTs (Arty A7 synthesis)
        mem_gb = Memory(shape=gb_layout.as_shape(), depth=max(2, len(gb_init)), init=gb_init,
                        attrs={"ram_style": "block"})
        m.submodules.mem_gb = mem_gb
        r_gb = mem_gb.read_port()

        # ---- Σx (s1) and −Σx
        s1 = Signal(signed(self.s1_w))
        s1n = Signal(signed(self.s1_w + 1))
        m.d.comb += s1n.eq(-s1)
        band = Signal(range(max(2, nb + 1)))
        mr = Signal(unsigned(mp_w))            # LayerNorm m'
        qr = Signal(unsigned(q_w))             # LayerNorm q − q_lo
        n_mul = Mux(mode == self.IN_SETUP, T, d)     # n: the elements of a sum, and num's factor
        n_apply = Mux(is_ln, d, T)

        # ---- apply pipeline: element issued at e0 (one per cycle for instance norm, one per
        # two cycles for LayerNorm, whose γ product shares port 2 with the centring)
        #   e1  port 2: cen = x·n + (−Σx)
        #   e3  port 0: m'·cen[:17] + 2**(8q−1)
        #   e5  port 1: m'·cen[17:] + (P0 ≫ 17)      → P1 = (m'·cen + 2**(8q−1)) ≫ 17
        #   e7  v = the window of (P1, P0's low bits) at 8q                         (e8)
        #   e8  port 2: v·γ + β·2**s + 2**(s−1)     → out = sat(P2 ≫ s)             (e11)
        issue = Signal()
        idx = Signal(range(self.addr_n + 1))
        n_now = Signal(range(max(T, nb, d) + 1))
        m.d.comb += n_now.eq(Mux(is_ln, d, nb))
        with m.If(issue):
            m.d.comb += [self.rd.en.eq(1), self.rd.addr.eq(idx),
                         r_s1.addr.eq(idx), r_m.addr.eq(idx), r_q.addr.eq(idx)]
        m.d.comb += r_gb.addr.eq(const_mul(lset, d) + Mux(issue, idx, 0))
        x1 = self.rd.data
        xf_ = x1[:self.feat_fmt.bits]
        x_in = Mux(is_ln, x1, xf_.as_signed() if self.feat_fmt.signed else xf_)
        t1 = delay(m, issue, 1, "t1")
        i1 = delay(m, idx, 1, "i1")
        with m.If(t1):
            ports[2].drive(a=x_in, b=n_apply, c=Mux(is_ln, s1n, r_s1.data))
        m1 = Signal(unsigned(mp_w))
        q1 = Signal(unsigned(q_w))
        m.d.comb += [m1.eq(Mux(is_ln, mr, r_m.data)), q1.eq(Mux(is_ln, qr, r_q.data))]
        m3 = delay(m, m1, 2, "m")
        q3 = delay(m, q1, 2, "q")
        t3 = delay(m, t1, 2, "t3")
        qs = list(range(self.q_lo, self.q_hi + 1))
        half = Array(Const(1 << (8 * q - 1), 8 * self.q_hi) for q in qs)
        with m.If(t3):
            ports[0].drive(a=m3, b=P[2][:D], c=half[q3] if len(qs) > 1 else half[0])
        cen_hi5 = delay(m, P[2][D:self.cen_w].as_signed(), 2, "cen_hi")
        m5 = delay(m, m3, 2, "m5")
        q5 = delay(m, q3, 2, "q5")
        t5 = delay(m, t3, 2, "t5")
        with m.If(t5):
            ports[1].drive(a=m5, b=cen_hi5, c=P[0][D:MUL_P_BITS])
        lo_keep = min(8 * self.q_lo, D)
        p0_low7 = delay(m, P[0][lo_keep:D], 2, "p0low")
        q7 = delay(m, q5, 2, "q7")
        t7 = delay(m, t5, 2, "t7")
        # full = P ≫ lo_keep
        full = Cat(p0_low7, P[1]).as_signed()
        win_w = self.v_w
        wins = [full[8 * q - lo_keep:8 * q - lo_keep + win_w] for q in qs]
        v8 = Signal(signed(win_w))
        m.d.sync += v8.eq((Array(wins)[q7] if len(wins) > 1 else wins[0]).as_signed())
        t8 = delay(m, t7, 1, "t8")
        i8 = delay(m, i1, 7, "i8")
        gb8 = delay(m, r_gb.data, 7, "gb")
        gbv8 = data.View(gb_layout, gb8)
        # LayerNorm: one rounding/bias/saturation per distinct (shift, format) among the sets
        groups: dict[tuple, int] = {}
        set_group = []
        for p in self.ln:
            key = (p.norm_frac + GAMMA_FMT.frac - p.out_fmt.frac, p.out_fmt.min_int, p.out_fmt.max_int)
            set_group.append(groups.setdefault(key, len(groups)))
        gkeys = list(groups)
        grp = (Array(Const(g, range(max(2, len(gkeys)))) for g in set_group)[lset]
               if len(gkeys) > 1 else Const(0, 1))
        pg_w = self.v_w + GAMMA_FMT.bits + 1
        if gkeys:
            cs = [Cat(Const((1 << sh) >> 1, sh), gbv8.b).as_signed() if sh else gbv8.b.as_signed()
                  for sh, _, _ in gkeys]
            with m.If(t8 & is_ln):
                ports[2].drive(a=v8, b=gbv8.g, c=Array(cs)[grp] if len(cs) > 1 else cs[0])
        v10 = delay(m, v8, 2, "v10")
        t10 = delay(m, t8, 2, "t10")
        i10 = delay(m, i8, 2, "i10")
        y11 = Signal(signed(self.out_width))
        outs = [clamp(m, P[2][sh:sh + max(pg_w - sh, len(gbv8.b)) + 1].as_signed(), lo_, hi_)
                for sh, lo_, hi_ in gkeys]
        aff = (Array(outs)[grp] if len(outs) > 1 else outs[0]) if outs else 0
        m.d.sync += y11.eq(Mux(is_ln, aff, v10))
        t11 = delay(m, t10, 1, "t11")
        i11 = delay(m, i10, 1, "i11")
        m.d.comb += [self.o.valid.eq(t11), self.o.payload.index.eq(i11),
                     self.o.payload.value.eq(y11),
                     self.o.payload.last.eq(i11 == n_now - 1)]

        # ---- sums (LayerNorm pass 1, and the instance norm's setup per band):
        # Σx·x[:17] (port 0), Σx·x[17:] (port 1), Σx (port 2), accumulated in the DSPs' P
        # registers; so Σx² = P0 + P1·2**17 (P1 ≥ 0: x[17:] has the sign of x)
        p1_issue = Signal()
        p1_first = Signal()
        with m.If(p1_issue):
            m.d.comb += [self.rd.en.eq(1), self.rd.addr.eq(idx), self.rd.band.eq(band)]
        u1 = delay(m, p1_issue, 1, "u1")
        uf1 = delay(m, p1_first, 1, "uf1")
        with m.If(u1):
            ports[0].drive(a=x1, b=x1[:D], acc=~uf1)
            ports[1].drive(a=x1, b=x1[D:].as_signed(), acc=~uf1)
            ports[2].drive(a=x1, b=1, acc=~uf1)

        # ---- num = n·Σx² − (Σx)² + eps, column by column in base 2**17 on port 2 (each
        # column's terms accumulated in P2, started from the previous column's carry), with
        # Σx² = P0 + P1·2**17 held in ports 0 and 1
        big_x, big_f = self.big_x, self.big_f
        # n elements of magnitude ≤ big: |P0| ≤ n·big·(2**17 − 1), 0 ≤ P1 ≤ n·big·max(1, big ≫ 17)
        p0_hi = max(d * big_x * ((1 << D) - 1), T * big_f * ((1 << D) - 1))
        nd_a = max(1, -(-(p0_hi.bit_length() + 1) // D))
        p1_hi = max(d * big_x * max(1, big_x >> D), T * big_f * max(1, big_f >> D))
        nd_b = max(1, -(-p1_hi.bit_length() // D))
        if self.s1_w + 1 > 2 * D + 11:
            raise ValueError("Σx too wide for two digits")
        a_dig = [P[0][D * i:D * (i + 1)] if i < nd_a - 1 else P[0][D * i:].as_signed() for i in range(nd_a)]
        b_dig = [P[1][D * i:D * (i + 1)] for i in range(nd_b)]
        c0, c1 = s1[:D], s1[D:].as_signed()
        e0, e1 = s1n[:D], s1n[D:].as_signed()
        n_cols = max(nd_a, nd_b + 1, 3)
        cols = []
        for j in range(n_cols):
            terms = []
            if j < nd_a:
                terms.append((a_dig[j], n_mul))
            if 1 <= j <= nd_b:
                terms.append((b_dig[j - 1], n_mul))
            terms += {0: [(c0, e0)], 1: [(c0, e1), (c1, e0)], 2: [(c1, e1)]}.get(j, [])
            cols.append(terms)
        sched = []            # per cycle: (a, b, column or None, first)
        for j, terms in enumerate(cols):
            for i_, (a_, b_) in enumerate(terms):
                sched.append((a_, b_, j, i_ == 0))
            sched.append(None)                          # the carry's latency
        n_sched = len(sched) + 1
        col = Signal(range(n_sched + 2))                 # 1 … : schedule step col − 1
        num = Signal(unsigned(self.num_w))
        eps_v = Mux(mode == self.IN_SETUP, self.eps_in, self.eps_ln)
        # digit j is complete two cycles after its column's last term
        digit_at = {}
        t_ = 0
        for j, terms in enumerate(cols):
            t_ += len(terms)
            digit_at[t_ + 1] = j
            t_ += 1

        # ---- log2: normalise num in place, then the table
        lz = Signal(range(self.num_w + 1))               # shifts so far
        rem_bits = F.MANT_BITS - F.SEG_BITS
        # the table with −d: the DSP forms ~(log2 term) directly (see LOG2 below)
        lr, lrv = segment_rom(m, "log_rom", F.LOG2.table, negate_d=True)
        if len(lrv.a) > F.LOG_FRAC:
            raise ValueError("log2 table entry too wide")
        top = num[self.num_w - 1]
        mant = num[self.num_w - 1 - F.MANT_BITS:self.num_w - 1]
        m.d.comb += lr.addr.eq(mant[rem_bits:])
        lphase = Signal(range(MUL_LATENCY + 2))
        y_half = Signal(signed(LOG_OUT_WIDTH))
        e_w = signed_bits(*self.e_range) + 1
        e_new = Signal(signed(e_w))
        # log2(num) − 2·x_frac·2**16 = ((num_w − 1 − lz − 2·x_frac) << 16) + frac
        two_xf = Mux(mode == self.IN_SETUP, 2 * self.feat_fmt.frac, 2 * self.x_fmt.frac)
        ipart = Signal(signed(8))
        m.d.comb += ipart.eq((self.num_w - 1 - lz) - two_xf)

        with m.If(col != 0), m.Switch(col):
            for c_, st in enumerate(sched):
                if st is None:
                    continue
                a_, b_, j, first = st
                with m.Case(c_ + 1):
                    cv = eps_v if j == 0 else P[2][D:].as_signed()
                    ports[2].drive(a=a_, b=b_, c=cv if first else 0, acc=0 if first else 1)
        with m.If(lphase == 1):
            # the log2 term Y = Δtable·rem + (ipart·2**16 + table)·2**rem_bits + 2**(rem_bits−1)
            # (l = Y ≫ rem_bits) is wanted negated: y_half = (1 − l) ≫ 1. P0 = (−Δtable)·rem + ~C
            # = −Y − 1 = ~Y, and floor((1 − floor(Y/2**r))/2) = (~Y ≫ (r + 1)) + 1, so the
            # negation costs no subtractor (the complement of C folds into the port's AND-OR)
            ports[0].drive(a=lrv.d, b=mant[:rem_bits],
                           c=~Cat(Const(1 << (rem_bits - 1), rem_bits), lrv.a, ipart).as_signed())

        # ---- control
        cnt = Signal(range(max(T, nb, d) + 4))
        hold = Signal()               # ports 0 and 1 keep Σx² while the columns run
        with m.If(hold):
            ports[0].drive(acc=1)
            ports[1].drive(acc=1)
        ph = Signal()
        m.d.comb += self.exp2.o.ready.eq(1)
        m.d.comb += self.cmd.ready.eq(~self.busy)
        with m.FSM():
            with m.State("IDLE"), m.If(self.cmd.valid):
                m.d.sync += [mode.eq(self.cmd.payload.mode), lset.eq(self.cmd.payload.set),
                             self.busy.eq(1), idx.eq(0), band.eq(0), cnt.eq(0), ph.eq(0)]
                with m.If(self.cmd.payload.mode == self.IN_APPLY):
                    m.next = "APPLY"
                with m.Else():
                    m.next = "SUMS"
            with m.State("SUMS"):
                m.d.comb += [p1_issue.eq(1), p1_first.eq(idx == 0)]
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == n_mul - 1):
                    m.d.sync += [idx.eq(0), cnt.eq(0)]
                    m.next = "SUMS_DRAIN"
            with m.State("SUMS_DRAIN"):
                m.d.comb += hold.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == MUL_LATENCY):
                    m.d.sync += [s1.eq(P[2][:self.s1_w]), col.eq(1)]
                    m.next = "NUM"
            with m.State("NUM"):
                m.d.comb += hold.eq(1)
                m.d.sync += col.eq(col + 1)
                with m.Switch(col):
                    for t_, j in digit_at.items():
                        with m.Case(t_ + 1):
                            if j < n_cols - 1:
                                m.d.sync += num[j * D:(j + 1) * D].eq(P[2][:D])
                            else:
                                m.d.sync += num[j * D:].eq(P[2])
                with m.If(col == n_sched):
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
                # lphase 1 presents the interpolation; the product 2 cycles later
                m.d.sync += lphase.eq(lphase + 1)
                with m.If(lphase == 1 + MUL_LATENCY):
                    nl = P[0][rem_bits + 1:rem_bits + 1 + LOG_OUT_WIDTH].as_signed()
                    m.d.sync += [y_half.eq(nl + 1), lphase.eq(0)]
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
                                 w_q.addr.eq(band), w_q.data.eq(qv - self.q_lo), w_q.en.eq(1),
                                 w_s1.addr.eq(band), w_s1.data.eq(s1n), w_s1.en.eq(1)]
                    m.d.sync += [band.eq(band + 1), idx.eq(0)]
                    with m.If(band == nb - 1):
                        m.d.sync += self.busy.eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "SUMS"
                with m.Else():
                    m.d.sync += [mr.eq(mp), qr.eq(qv - self.q_lo), idx.eq(0), ph.eq(0)]
                    m.next = "APPLY"
            with m.State("APPLY"):
                # instance norm: one element per cycle; LayerNorm: one per two cycles
                with m.If(~ph):
                    m.d.comb += issue.eq(1)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == n_now - 1):
                        m.next = "APPLY_DRAIN"
                m.d.sync += ph.eq(is_ln & ~ph)
            with m.State("APPLY_DRAIN"), m.If(self.o.valid & self.o.payload.last):
                m.d.sync += self.busy.eq(0)
                m.next = "IDLE"
        for port in ports:
            port.emit()
        outer.submodules.gated = EnableInserter({"sync": self.busy | self.cmd.valid})(m)
        return outer
