"""Function units: log2, exp2 and interpolated tables, bit-exact with ``fixed.funcs``.

Each unit is a pipeline with stream ports ``i``/``o``: one input accepted per cycle, the result
``latency`` cycles later, and the whole pipeline holding still while ``o`` is not ready
(``en = ~o.valid | o.ready``). Tables are the fixed model's arrays (``fixed.funcs.LOG2.table``,
``EXP2.table``, a :class:`~nanomamba_hw.fixed.funcs.PWLTable`'s ``table``); nothing is
recomputed here.

- :class:`Log2Unit` — unsigned integer (``in_width`` bits, ``in_frac`` fractional) → signed
  log2 with ``LOG_FRAC`` fractional bits; leading-one detector, normalising shift, table of 65
  entries, one 17×10-bit multiply for the interpolation.
- :class:`Exp2Unit` — signed log2-domain value → unsigned result in ``out_fmt``, saturating;
  table of 65 entries, one multiply, an output barrel shifter with rounding.
- :class:`PWLUnit` — a bounded smooth function (sigmoid, tanh, SiLU, softplus) over a clamped
  input range with "clamp"/"identity" rules outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed import funcs as F
from ..fixed.ops import Fmt
from .common import rom_init, shape_of
from .mac import clamp, rshift_round_v

LOG_OUT_WIDTH = 32      # log2 results: |log2| < 2**15 with LOG_FRAC = 16 fraction bits


def segment_rom(m: Module, name: str, table, *, negate_d: bool = False):
    """A combinational-read ROM of an increasing segment table's (entry, difference) pairs:
    word i holds ``a = table[i]`` and ``d = table[i + 1] − table[i]`` for the 2**SEG_BITS
    segments, so one read port (no second port at i + 1, no subtractor) feeds
    :func:`_interp_d`. Returns ``(port, word)``: the read port (the caller drives ``addr``)
    and its data as a View with fields ``a`` and ``d``. With ``negate_d`` the field ``d``
    holds −d (signed), for a caller that interpolates the negated table."""
    t = [int(v) for v in table]
    pairs = [(t[i], t[i + 1] - t[i]) for i in range(len(t) - 1)]
    if min(min(a, dd) for a, dd in pairs) < 0:
        raise ValueError(f"{name}: segment table must be non-negative and increasing")
    d_bits = max(1, max(dd for _, dd in pairs).bit_length())
    layout = data.StructLayout({"a": unsigned(max(a for a, _ in pairs).bit_length()),
                                "d": signed(d_bits + 1) if negate_d else unsigned(d_bits)})
    sign = -1 if negate_d else 1
    mem = Memory(shape=layout.as_shape(), depth=len(pairs),
                 init=[layout.const({"a": a, "d": sign * dd}).as_value().value for a, dd in pairs])
    m.submodules[name] = mem
    port = mem.read_port(domain="comb")
    return port, data.View(layout, port.data)


def _stage(m: Module, en, name: str, shape, value):
    """A pipeline register loaded with ``value`` when ``en``."""
    r = Signal(shape, name=name)
    with m.If(en):
        m.d.sync += r.eq(value)
    return r


def as_signed_value(v: Value) -> Value:
    """``v`` as a signed value of the same numeric value (zero-extends unsigned values)."""
    v = Value.cast(v)
    return v if v.shape().signed else Cat(v, Const(0, 1)).as_signed()


def _interp(a, b, rem, rem_bits: int):
    """a + round_half_up((b − a)·rem / 2**rem_bits), as ``fixed.funcs._interp``."""
    a, b = as_signed_value(a), as_signed_value(b)
    return _interp_d(a, b - a, rem, rem_bits)


def _interp_d(a, d, rem, rem_bits: int):
    """:func:`_interp` from ``a`` and the difference ``d = b − a``."""
    prod = as_signed_value(d) * Value.cast(rem).as_unsigned()
    return as_signed_value(a) + ((prod + (1 << (rem_bits - 1))) >> rem_bits)


class Log2Unit(wiring.Component):
    """Pipelined log2 of an unsigned integer, bit-exact with ``fixed.funcs.LOG2(x, in_frac)``.

    Latency 4 cycles. ``x == 0`` gives ``LOG2.zero_value``.
    """

    latency = 4

    def __init__(self, *, in_width: int, in_frac: int = 0):
        if not 1 <= in_width <= 62:
            raise ValueError("in_width must be 1..62")
        self.in_width, self.in_frac = in_width, in_frac
        super().__init__({"i": In(stream.Signature(unsigned(in_width))),
                          "o": Out(stream.Signature(signed(LOG_OUT_WIDTH)))})

    def elaborate(self, platform):
        m = Module()
        M, S = F.MANT_BITS, F.SEG_BITS
        rem_bits = M - S
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        ew = max(1, (self.in_width - 1).bit_length())

        # 1: register the input
        v1 = _stage(m, en, "v1", 1, self.i.valid)
        x1 = _stage(m, en, "x1", unsigned(self.in_width), self.i.payload)
        # 2: leading one
        lod = Signal(ew)
        for k in range(self.in_width):          # the highest set bit wins
            with m.If(x1[k]):
                m.d.comb += lod.eq(k)
        v2 = _stage(m, en, "v2", 1, v1)
        x2 = _stage(m, en, "x2", unsigned(self.in_width), x1)
        e2 = _stage(m, en, "e2", ew, lod)
        z2 = _stage(m, en, "z2", 1, x1 == 0)
        # 3: normalise: the MANT_BITS bits below the leading one (truncating)
        right = (x2 >> (e2 - M).as_unsigned())[:M] if self.in_width > M else Const(0, M)
        left = (x2 << (M - e2).as_unsigned())[:M]
        mant = Mux(e2 >= M, right, left)
        v3 = _stage(m, en, "v3", 1, v2)
        idx3 = _stage(m, en, "idx3", S, mant[rem_bits:M])
        rem3 = _stage(m, en, "rem3", rem_bits, mant[:rem_bits])
        e3 = _stage(m, en, "e3", ew, e2)
        z3 = _stage(m, en, "z3", 1, z2)
        # 4: table + interpolation + exponent
        port, seg = segment_rom(m, "table", F.LOG2.table)
        m.d.comb += port.addr.eq(idx3)
        frac = _interp_d(seg.a, seg.d, rem3, rem_bits)
        value = ((as_signed_value(e3) - self.in_frac) << F.LOG_FRAC) + frac
        with m.If(en):
            m.d.sync += [self.o.valid.eq(v3),
                         self.o.payload.eq(Mux(z3, F.LOG2.zero_value, value))]
        return m


class Exp2Unit(wiring.Component):
    """Pipelined 2**y, bit-exact with ``fixed.funcs.EXP2(y, out_fmt)``.

    ``in_width`` is the signed width of ``y`` (LOG_FRAC fractional bits). Latency 4 cycles.
    """

    latency = 4

    def __init__(self, *, in_width: int, out_fmt: Fmt):
        if out_fmt.signed or out_fmt.bits > 44:
            raise ValueError("Exp2Unit outputs an unsigned format of at most 44 bits")
        self.in_width, self.out_fmt = in_width, out_fmt
        super().__init__({"i": In(stream.Signature(signed(in_width))),
                          "o": Out(stream.Signature(shape_of(out_fmt)))})

    def elaborate(self, platform):
        m = Module()
        L, S, P = F.LOG_FRAC, F.SEG_BITS, F.EXP_MANT
        rem_bits = L - S
        W = self.out_fmt.bits
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        v1 = _stage(m, en, "v1", 1, self.i.valid)
        y1 = _stage(m, en, "y1", signed(self.in_width), self.i.payload)
        # 2: split into integer part (→ shift) and table address / remainder
        ishape = signed(max(2, self.in_width - L + 1))
        v2 = _stage(m, en, "v2", 1, v1)
        shift2 = _stage(m, en, "shift2", signed(ishape.width + 8),
                        (y1 >> L) + (self.out_fmt.frac - P))
        idx2 = _stage(m, en, "idx2", S, y1[rem_bits:L])
        rem2 = _stage(m, en, "rem2", rem_bits, y1[:rem_bits])
        # 3: table + interpolation → mantissa in [2**16, 2**17)
        port, seg = segment_rom(m, "table", F.EXP2.table)
        m.d.comb += port.addr.eq(idx2)
        mant = _interp_d(seg.a, seg.d, rem2, rem_bits)
        v3 = _stage(m, en, "v3", 1, v2)
        mant3 = _stage(m, en, "mant3", unsigned(P + 1), mant)
        shift3 = _stage(m, en, "shift3", shift2.shape(), shift2)
        # 4: barrel shift with round-half-up on right shifts, saturate on the left
        max_out = (1 << W) - 1
        rsh = Signal(range(P + 3))
        m.d.comb += rsh.eq(Mux(-shift3 > P + 2, P + 2, -shift3))
        wide = Signal(unsigned(P + 2))
        m.d.comb += wide.eq((mant3 + Mux(rsh == 0, 0, (Const(1, P + 2) << (rsh - 1).as_unsigned())[:P + 2])) >> rsh)
        lsh = Signal(range(W + 1))
        m.d.comb += lsh.eq(Mux(shift3 > W, W, shift3))
        shifted = Signal(unsigned(P + 1 + W))
        m.d.comb += shifted.eq(mant3 << lsh)
        result = Signal(unsigned(W))
        with m.If(shift3 < 0):
            m.d.comb += result.eq(Mux(wide > max_out, max_out, wide))
        with m.Elif((shift3 >= W) | (shifted > max_out)):
            m.d.comb += result.eq(max_out)
        with m.Else():
            m.d.comb += result.eq(shifted)
        with m.If(en):
            m.d.sync += [self.o.valid.eq(v3), self.o.payload.eq(result)]
        return m


class PWLUnit(wiring.Component):
    """A :class:`~nanomamba_hw.fixed.funcs.PWLTable` in hardware (latency 3 cycles).

    The table lives in a ROM with two synchronous read ports (entries idx and idx + 1), which
    synthesis maps to one block RAM: the ports' address registers are the pipeline's stage-2
    registers, so a BRAM costs no extra latency.
    """

    latency = 3

    def __init__(self, table: F.PWLTable):
        self.t = table
        super().__init__({"i": In(stream.Signature(shape_of(table.in_fmt))),
                          "o": Out(stream.Signature(shape_of(table.out_fmt)))})

    def elaborate(self, platform):
        m = Module()
        t = self.t
        fi, fo = t.in_fmt, t.out_fmt
        span = t.hi - t.lo
        sl = t.seg_log2
        n_idx = max(1, (len(t.table) - 1).bit_length())
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        v1 = _stage(m, en, "v1", 1, self.i.valid)
        x1 = _stage(m, en, "x1", shape_of(fi), self.i.payload)
        # 2: offset, clamp, split; identity path
        xs = as_signed_value(x1)
        d = Signal(signed(fi.bits + 2))
        m.d.comb += d.eq(xs - t.lo)
        dc = Mux(d < 0, 0, Mux(d >= span, span - 1, d))
        v2 = _stage(m, en, "v2", 1, v1)
        idx = Signal(n_idx)
        m.d.comb += idx.eq((dc >> sl)[:n_idx])
        rem2 = _stage(m, en, "rem2", max(sl, 1), dc[:sl] if sl else 0)
        below2 = _stage(m, en, "below2", 1, xs < t.lo)
        above2 = _stage(m, en, "above2", 1, xs >= t.hi)
        sh = fi.frac - fo.frac
        ident = (xs + (1 << (sh - 1))) >> sh if sh > 0 else xs << (-sh)
        ident_sat = clamp(m, ident, fo.min_int, fo.max_int)
        ident2 = _stage(m, en, "ident2", shape_of(fo), ident_sat)
        # 3: table + interpolation + outside-range rules
        mem_shape = shape_of(fo)
        mem = Memory(shape=mem_shape, depth=len(t.table), init=rom_init(t.table, mem_shape),
                     attrs={"rom_style": "block"})
        m.submodules.table = mem
        ra = mem.read_port(domain="sync", transparent_for=())
        rb = mem.read_port(domain="sync", transparent_for=())
        m.d.comb += [ra.addr.eq(idx), rb.addr.eq(idx + 1), ra.en.eq(en), rb.en.eq(en)]
        if sl:
            y = _interp(ra.data, rb.data, rem2, sl)
        else:
            y = ra.data
        out = Signal(shape_of(fo))
        m.d.comb += out.eq(y)
        if t.below == "identity":
            with m.If(below2):
                m.d.comb += out.eq(ident2)
        if t.above == "identity":
            with m.If(above2):
                m.d.comb += out.eq(ident2)
        else:
            with m.If(above2):
                m.d.comb += out.eq(int(t.table[-1]))
        with m.If(en):
            m.d.sync += [self.o.valid.eq(v2), self.o.payload.eq(out)]
        return m



class PWLMultiUnit(wiring.Component):
    """Several :class:`~nanomamba_hw.fixed.funcs.PWLTable` s behind one interpolator and one
    block RAM, selected per input (latency 4 cycles, one input per cycle), bit-exact with each
    table's ``__call__``.

    ``i.payload``: ``x`` (signed, wide enough for every table's input format) and ``sel`` (the
    table's index in ``tables``); ``o.payload``: the result as a signed integer wide enough for
    every output format (an unsigned table's values are non-negative). Per-table constants
    (range, segment width, rules outside the range, identity shift and saturation, signedness)
    are selected by ``sel``; the tables' first ``n_seg`` entries lie back to back in one memory
    with two synchronous read ports (entries idx and idx + 1; the last entry of each table is a
    constant), so the four activation tables of a block (4 × 512 × 16 bits) fill one RAMB36.
    Interpolation uses one multiplier: the remainder is left-aligned to the widest segment, which
    leaves ``a + round_half_up((b − a)·rem / 2**seg_log2)`` unchanged.
    """

    latency = 4

    def __init__(self, tables):
        self.tables = list(tables)
        if not self.tables:
            raise ValueError("PWLMultiUnit needs at least one table")
        ts = self.tables
        self.in_width = max(t.in_fmt.bits + (0 if t.in_fmt.signed else 1) for t in ts)
        self.out_width = max(t.out_fmt.bits + (0 if t.out_fmt.signed else 1) for t in ts)
        super().__init__({
            "i": In(stream.Signature(pwl_multi_layout(self.in_width, len(ts)))),
            "o": Out(stream.Signature(signed(self.out_width))),
        })

    def elaborate(self, platform):
        from amaranth.hdl import Array
        m = Module()
        ts = self.tables
        nt = len(ts)
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        def pick(values, shape, sel):
            vals = [int(v) for v in values]
            if len(set(vals)) == 1:
                return Const(vals[0], shape)
            return Array(Const(v, shape) for v in vals)[sel]

        segs = [len(t.table) - 1 for t in ts]
        bases = [sum(segs[:k]) for k in range(nt)]
        depth = sum(segs)
        max_sl = max(t.seg_log2 for t in ts)
        n_idx = max(1, (max(segs) - 1).bit_length())
        mem_w = max(t.out_fmt.bits for t in ts)
        dw = max(t.in_fmt.bits for t in ts) + 3
        d_shape = signed(max(dw, max(_signed_bits(t.lo, t.hi) for t in ts) + 2))

        v1 = _stage(m, en, "v1", 1, self.i.valid)
        x1 = _stage(m, en, "x1", signed(self.in_width), self.i.payload.x)
        s1 = _stage(m, en, "s1", range(max(2, nt)), self.i.payload.sel)
        # 2: offset, clamp, split; identity path
        d = Signal(d_shape)
        m.d.comb += d.eq(x1 - pick([t.lo for t in ts], d_shape, s1))
        span_m1 = pick([t.hi - t.lo - 1 for t in ts], d_shape, s1)
        dc = Signal(d_shape)
        m.d.comb += dc.eq(Mux(d < 0, 0, Mux(d > span_m1, span_m1, d)))
        sls = sorted({t.seg_log2 for t in ts})
        if len(sls) == 1:
            idx = (dc >> sls[0])[:n_idx]
            rem = (dc[:sls[0]] << (max_sl - sls[0])) if sls[0] else Const(0, 1)
        else:
            which = pick([sls.index(t.seg_log2) for t in ts], range(len(sls)), s1)
            idx = Array((dc >> s)[:n_idx] for s in sls)[which]
            rem = Array(((dc[:s] << (max_sl - s)) if s else Const(0, max(1, max_sl)))
                        for s in sls)[which]
        addr = Signal(range(max(2, depth)))
        m.d.comb += addr.eq(pick(bases, range(max(2, depth)), s1) + idx)
        v2 = _stage(m, en, "v2", 1, v1)
        s2 = _stage(m, en, "s2", range(max(2, nt)), s1)
        rem2 = _stage(m, en, "rem2", max(1, max_sl), rem)
        below2 = _stage(m, en, "below2", 1, x1 < pick([t.lo for t in ts], d_shape, s1))
        above2 = _stage(m, en, "above2", 1, x1 >= pick([t.hi for t in ts], d_shape, s1))
        b_last2 = _stage(m, en, "b_last2", 1, idx == pick([sg - 1 for sg in segs], n_idx + 1, s1))
        out_shape = signed(self.out_width)
        idents = {}
        for k, t in enumerate(ts):
            if "identity" not in (t.below, t.above):
                continue
            fi, fo = t.in_fmt, t.out_fmt
            sh = fi.frac - fo.frac
            key = (sh, fo.min_int, fo.max_int)
            if key not in idents:
                iv = Signal(signed(self.in_width + max(0, -sh) + 1), name=f"ident{len(idents)}")
                m.d.comb += iv.eq((x1 + (1 << (sh - 1))) >> sh if sh > 0 else x1 << (-sh))
                idents[key] = clamp(m, iv, fo.min_int, fo.max_int)
        keys = list(idents)
        if keys:
            key_of = [keys.index((t.in_fmt.frac - t.out_fmt.frac, t.out_fmt.min_int,
                                  t.out_fmt.max_int)) if "identity" in (t.below, t.above) else 0
                      for t in ts]
            iv = idents[keys[0]] if len(keys) == 1 else \
                Array(idents[k] for k in keys)[pick(key_of, range(len(keys)), s1)]
            ident2 = _stage(m, en, "ident2", out_shape, iv)
        else:
            ident2 = Const(0, out_shape)
        # 3: table + interpolation + outside-range rules
        words = []
        for t in ts:
            mask = (1 << mem_w) - 1
            words += [int(v) & mask for v in t.table[:-1]]
        mem = Memory(shape=unsigned(mem_w), depth=max(2, depth), init=words,
                     attrs={"rom_style": "block", "ram_style": "block"})
        m.submodules.table = mem
        ra = mem.read_port(domain="sync", transparent_for=())
        rb = mem.read_port(domain="sync", transparent_for=())
        m.d.comb += [ra.addr.eq(addr), rb.addr.eq(addr + 1), ra.en.eq(en), rb.en.eq(en)]
        sgn = [t.out_fmt.signed for t in ts]

        def ext(raw):
            sx = Cat(raw, Mux(raw[mem_w - 1], Const(-1, 2), Const(0, 2))).as_signed()
            zx = Cat(raw, Const(0, 2)).as_signed()
            if all(sgn):
                return sx
            if not any(sgn):
                return zx
            return Mux(pick([int(s) for s in sgn], 1, s2), sx, zx)

        a = ext(ra.data)
        b = Mux(b_last2, pick([int(t.table[-1]) for t in ts], out_shape, s2), ext(rb.data))
        # the entries and their difference are registered before the multiply-add: a block
        # RAM read, a subtraction, a multiply and an add in one cycle are too slow at 50 MHz
        # on an ECP5
        v3 = _stage(m, en, "v3", 1, v2)
        s3 = _stage(m, en, "s3", range(max(2, nt)), s2)
        a3 = _stage(m, en, "a3", a.shape(), a)
        d3 = _stage(m, en, "d3", signed(len(a) + 1), b - a)
        rem3 = _stage(m, en, "rem3", max(1, max_sl), rem2)
        below3 = _stage(m, en, "below3", 1, below2)
        above3 = _stage(m, en, "above3", 1, above2)
        ident3 = _stage(m, en, "ident3", out_shape, ident2)
        # 4: interpolation + outside-range rules
        last = pick([int(t.table[-1]) for t in ts], out_shape, s3)
        y = _interp_d(a3, d3, rem3, max_sl) if max_sl else a3
        out = Signal(out_shape)
        m.d.comb += out.eq(y)
        below_id = [t.below == "identity" for t in ts]
        above_id = [t.above == "identity" for t in ts]
        with m.If(below3 & pick([int(v) for v in below_id], 1, s3)):
            m.d.comb += out.eq(ident3)
        with m.If(above3):
            m.d.comb += out.eq(Mux(pick([int(v) for v in above_id], 1, s3), ident3, last))
        with m.If(en):
            m.d.sync += [self.o.valid.eq(v3), self.o.payload.eq(out)]
        return m


def pwl_multi_layout(width: int, n: int):
    """Input payload of :class:`PWLMultiUnit`: ``x`` and the table index ``sel``."""
    from amaranth.lib import data as _data
    return _data.StructLayout({"x": signed(width), "sel": range(max(2, n))})


def _signed_bits(lo: int, hi: int) -> int:
    """Width of the smallest signed shape holding [lo, hi]."""
    return max(max(hi, 0).bit_length(), (-min(lo, 0) - 1).bit_length() if lo < 0 else 0) + 1


class Exp2NarrowUnit(Exp2Unit):
    """:class:`Exp2Unit` with the same ports, latency and results (``fixed.funcs.EXP2``), for
    narrow outputs (the scan's and the rsqrt's ``DA_FMT``, u17.16).

    The shift s = floor(y) + out_fmt.frac − EXP_MANT is clamped in stage 2 to
    [−(EXP_MANT + 2), W − EXP_MANT] (W = output bits): a right shift of EXP_MANT + 2 or more
    leaves 0 (the mantissa is < 2**(EXP_MANT + 1)), and a left shift of W − EXP_MANT or more
    saturates (the mantissa is ≥ 2**EXP_MANT). The output shifter then spans only those few
    positions instead of the output width.
    """

    def elaborate(self, platform):
        m = Module()
        L, S, P = F.LOG_FRAC, F.SEG_BITS, F.EXP_MANT
        rem_bits = L - S
        W = self.out_fmt.bits
        s_lo, s_hi = -(P + 2), max(0, W - P)
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        v1 = _stage(m, en, "v1", 1, self.i.valid)
        y1 = _stage(m, en, "y1", signed(self.in_width), self.i.payload)
        # 2: split into the clamped shift and table address / remainder
        s_full = Signal(signed(max(2, self.in_width - L + 1) + 8))
        m.d.comb += s_full.eq((y1 >> L) + (self.out_fmt.frac - P))
        s_shape = signed(max((-s_lo).bit_length(), s_hi.bit_length()) + 1)
        v2 = _stage(m, en, "v2", 1, v1)
        shift2 = _stage(m, en, "shift2", s_shape,
                        Mux(s_full < s_lo, s_lo, Mux(s_full > s_hi, s_hi, s_full)))
        rem2 = _stage(m, en, "rem2", rem_bits, y1[:rem_bits])
        # the table is read here and its entries registered, so stage 3 holds only the
        # interpolation's multiply-add (a ROM, a subtractor and a multiplier in one stage do
        # not fit a 50 MHz cycle on an ECP5)
        port, seg = segment_rom(m, "table", F.EXP2.table)
        m.d.comb += port.addr.eq(y1[rem_bits:L])
        a2 = _stage(m, en, "a2", seg.a.shape(), seg.a)
        d2 = _stage(m, en, "d2", seg.d.shape(), seg.d)
        # 3: interpolation → mantissa in [2**16, 2**17]
        mant = _interp_d(a2, d2, rem2, rem_bits)
        v3 = _stage(m, en, "v3", 1, v2)
        mant3 = _stage(m, en, "mant3", unsigned(P + 1), mant)
        shift3 = _stage(m, en, "shift3", s_shape, shift2)
        # 4: right shift with round-half-up, or a short left shift with saturation
        max_out = (1 << W) - 1
        rsh = Signal(range(P + 3))
        m.d.comb += rsh.eq(-shift3)
        wide = Signal(unsigned(P + 2))
        m.d.comb += wide.eq(rshift_round_v(mant3, rsh))
        result = Signal(unsigned(W))
        with m.If(shift3 < 0):
            m.d.comb += result.eq(Mux(wide > max_out, max_out, wide))
        with m.Elif(shift3 >= s_hi):
            m.d.comb += result.eq(max_out)
        with m.Else():
            lsh = Signal(range(max(2, s_hi)))
            m.d.comb += lsh.eq(shift3)
            shifted = Signal(unsigned(P + 1 + s_hi))
            m.d.comb += shifted.eq(mant3 << lsh)
            m.d.comb += result.eq(Mux(shifted > max_out, max_out, shifted))
        with m.If(en):
            m.d.sync += [self.o.valid.eq(v3), self.o.payload.eq(result)]
        return m


# ------------------------------------------------------------------------------------------------
# A shared unit: log2, exp2 and interpolated tables in one pipeline
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FuncOp:
    """One operation of a :class:`FuncUnit`, defined bit for bit by ``fixed.funcs``.

    - ``log2``: ``LOG2(x, in_frac)`` of an unsigned integer (``zero_value`` for 0);
    - ``exp2`` of ``y = x − sub``: ``min(shift_round(mant(y), floor(y / 2**16) + shift) + add,
      cap)`` — that is
      ``EXP2(y, out_fmt)`` with ``out_fmt.frac = EXP_MANT + shift`` before saturation, plus an
      addend supplied with the operand, clamped above at ``cap``. ``EXP2(y, fmt)`` itself is
      ``min(·, fmt.max_int)`` with ``add = 0``; an integer offset ``k`` on ``y`` is ``shift + k``;
    - ``pwl``: a :class:`~nanomamba_hw.fixed.funcs.PWLTable` with "clamp" rules on both sides.
    """

    kind: str
    in_frac: int = 0
    shift: int = 0
    cap: int = (1 << 40) - 1
    table: F.PWLTable | None = None

    @classmethod
    def log2(cls, in_frac: int = 0) -> "FuncOp":
        return cls("log2", in_frac=in_frac)

    @classmethod
    def exp2(cls, out_frac: int, *, cap: int, offset: int = 0) -> "FuncOp":
        return cls("exp2", shift=out_frac - F.EXP_MANT + offset, cap=cap)

    @classmethod
    def pwl(cls, table: F.PWLTable) -> "FuncOp":
        return cls("pwl", table=table)

    def reference(self, x, add=0, sub=0):
        """The operation on numpy integers, from the fixed model's functions (exp2 of
        ``x − sub``)."""
        x = np.asarray(x, dtype=np.int64)
        if self.kind == "log2":
            return F.LOG2(x, self.in_frac)
        if self.kind == "exp2":
            wide = Fmt(62, F.EXP_MANT + self.shift, signed=False)
            y = x - np.asarray(sub, dtype=np.int64)
            return np.minimum(F.EXP2(y, wide) + np.asarray(add, dtype=np.int64), self.cap)
        return self.table(x)


class FuncUnit(wiring.Component):
    """log2, exp2 and table interpolation in one pipeline, one operation per cycle.

    ``ops`` lists the operations (:class:`FuncOp`); ``i_op`` selects one by index. All of them
    share one table memory (``LOG2.table``, ``EXP2.table`` and the tables of the ``pwl`` ops,
    one block RAM with two read ports: entries idx and idx + 1) and one interpolation multiply
    ``a + rshift_round((b − a)·rem, 10)`` as ``(b − a)·rem + (a·2¹⁰ + 2⁹)``, the product
    registered before the addition (tables with fewer remainder bits get their remainder scaled
    up, which is exact).

    - log2: leading-one normalisation of a ``log_width``-bit input in two pipeline stages
      (shifts by 16, then by 4 and 1), exponent − ``in_frac`` added after the table.
    - exp2: table → mantissa in [2¹⁶, 2¹⁷], placed by a three-stage left shifter at
      ``ipart + shift + 18`` bit positions, then one adder forms the rounded value plus the
      addend (round half up of the right shifts: ``(Z >> 17) + 1 + 2·add >> 1``), clamped at
      the op's ``cap``.
    - pwl: offset, clamp, segment index and remainder; "above" gives the last table entry.

    No handshake and no stalls: operands are presented with ``i_valid`` and the result appears
    ``LAT_LP`` (log2, pwl) or ``LAT_EXP`` (exp2) cycles later on ``o_lp`` / ``o_exp`` with its
    valid flag.

    ``inputs_registered``: the caller's ``i_*`` are already the operand registers (an
    :class:`~nanomamba_hw.hw.common.OrMux` with ``registered=True``) and the unit's own operand
    stage is left out; the latencies then count from the caller's issue, one cycle before the
    operands reach the unit.
    """

    LAT_LP = 5
    LAT_EXP = 8
    EXP_OUT_WIDTH = 43
    _LMAX = 42                # placements beyond this are larger than any cap

    def __init__(self, ops: list[FuncOp], *, log_width: int = 44, exp_width: int = 34,
                 add_width: int = 22, inputs_registered: bool = False):
        if not 17 <= log_width <= 48:
            raise ValueError("log_width must be 17..48")
        for op in ops:
            if op.kind == "pwl":
                t = op.table
                if t.below != "clamp" or t.above != "clamp":
                    raise ValueError(f"{t.name}: only clamp rules are supported")
                if t.seg_log2 > 10 or int(np.min(t.table)) < 0 or int(np.max(t.table)) >= 1 << 18:
                    raise ValueError(f"{t.name}: table does not fit the unit")
            elif op.kind == "exp2":
                if not 0 < op.cap < 1 << (self.EXP_OUT_WIDTH - 2):
                    raise ValueError("exp2 cap out of range")
            elif op.kind != "log2":
                raise ValueError(f"unknown op kind {op.kind!r}")
        self.ops = list(ops)
        self.log_width, self.exp_width, self.add_width = log_width, exp_width, add_width
        self.inputs_registered = inputs_registered
        pwl_bits = [op.table.in_fmt.bits for op in ops if op.kind == "pwl"]
        self.x_width = max([log_width + 1, exp_width] + pwl_bits)
        self.sub_width = exp_width
        # table layout
        self._bases, entries = {}, []
        if any(op.kind == "log2" for op in ops):
            self._bases["log2"] = len(entries)
            entries += [int(v) for v in F.LOG2.table]
        if any(op.kind == "exp2" for op in ops):
            self._bases["exp2"] = len(entries)
            entries += [int(v) for v in F.EXP2.table]
        for op in ops:
            if op.kind == "pwl" and op.table.name not in self._bases:
                self._bases[op.table.name] = len(entries)
                entries += [int(v) for v in op.table.table]
        self._entries = entries
        super().__init__({
            "i_valid": In(1),
            "i_op": In(range(max(2, len(ops)))),
            "i_x": In(signed(self.x_width)),
            "i_add": In(signed(add_width)),
            "i_sub": In(signed(self.sub_width)),
            "o_lp": Out(signed(LOG_OUT_WIDTH)),
            "o_lp_valid": Out(1),
            "o_exp": Out(signed(self.EXP_OUT_WIDTH)),
            "o_exp_valid": Out(1),
        })

    def _base(self, op: FuncOp) -> int:
        return self._bases[op.table.name if op.kind == "pwl" else op.kind]

    def elaborate(self, platform):
        m = Module()
        ops = self.ops
        R = F.LOG_FRAC - F.SEG_BITS              # 10 remainder bits
        LW = self.log_width

        def per_op(name, shape, value_of):
            """A signal holding value_of(op) for the op code ``opc`` (constants only)."""
            def build(opc):
                sig = Signal(shape, name=name)
                with m.Switch(opc):
                    for k, op in enumerate(ops):
                        v = value_of(op)
                        if v is not None:
                            with m.Case(k):
                                m.d.comb += sig.eq(v)
                return sig
            return build

        def kind_is(opc, kind):
            codes = [k for k, op in enumerate(ops) if op.kind == kind]
            if not codes:
                return Const(0, 1)
            return Cat(*(opc == k for k in codes)).any()

        def stage(name, shape, value, en=1):
            r = Signal(shape, name=name)
            m.d.sync += r.eq(value)
            return r

        # ---- S1: operands (registered here, or by the caller: ``inputs_registered``)
        def operand(name, port):
            return port if self.inputs_registered else stage(name, port.shape(), port)
        v1, op1, x1 = (operand("v1", self.i_valid), operand("op1", self.i_op),
                       operand("x1", self.i_x))
        add1, sub1 = operand("add1", self.i_add), operand("sub1", self.i_sub)

        # ---- cycle 1: log2 coarse shift; exp2 split; pwl offset/clamp
        xx = Signal(48)
        m.d.comb += xx.eq(x1[:LW] << (48 - LW))
        z16, z32 = xx[32:] == 0, xx[16:] == 0
        sh1 = Signal(2)
        m.d.comb += sh1.eq(Mux(z32, 2, Mux(z16, 1, 0)))
        xs = Signal(32)
        m.d.comb += xs.eq(Mux(z32, xx[:16] << 16, Mux(z16, xx[:32], xx[16:])))

        y1 = Signal(signed(self.exp_width))
        m.d.comb += y1.eq(x1 - sub1)
        ipart = y1 >> F.LOG_FRAC
        L = Signal(signed(max(8, self.exp_width - F.LOG_FRAC + 3)))
        lshift = per_op("lshift", signed(8), lambda op: op.shift + 18 if op.kind == "exp2" else None)
        m.d.comb += L.eq(ipart + lshift(op1))

        pwl_ops = [(k, op) for k, op in enumerate(ops) if op.kind == "pwl"]
        idx_p, rem_p, above_p = Signal(9), Signal(R), Signal()
        for k, op in pwl_ops:
            t = op.table
            span = t.hi - t.lo
            xv = x1[:t.in_fmt.bits]
            xv = xv.as_signed() if t.in_fmt.signed else xv
            d = Signal(signed(t.in_fmt.bits + 2), name=f"d_{t.name}")
            m.d.comb += d.eq(xv - t.lo)
            dc = Mux(d < 0, 0, Mux(d >= span, span - 1, d))
            with m.If(op1 == k):
                m.d.comb += [idx_p.eq(dc >> t.seg_log2),
                             rem_p.eq((dc & ((1 << t.seg_log2) - 1)) << (R - t.seg_log2)),
                             above_p.eq(d >= span)]
        is_exp1 = kind_is(op1, "exp2")
        v2 = stage("v2", 1, v1)
        op2 = stage("op2", op1.shape(), op1)
        add2 = stage("add2", add1.shape(), add1)
        xs2 = stage("xs2", 32, xs)
        sh1_2 = stage("sh1_2", 2, sh1)
        idx2 = stage("idx2", 9, Mux(is_exp1, y1[R:F.LOG_FRAC], idx_p))
        rem2 = stage("rem2", R, Mux(is_exp1, y1[:R], rem_p))
        above2 = stage("above2", 1, above_p)
        lneg2 = stage("lneg2", 1, L < 0)
        lbig2 = stage("lbig2", 1, L > self._LMAX)
        l2 = stage("l2", 6, L[:6])

        # ---- cycle 2: log2 fine shift (4, then 1); table address
        z4, z8, z12 = xs2[28:] == 0, xs2[24:] == 0, xs2[20:] == 0
        sh2 = Signal(2)
        m.d.comb += sh2.eq(Mux(z12, 3, Mux(z8, 2, Mux(z4, 1, 0))))
        x2 = Signal(20)
        m.d.comb += x2.eq(Mux(z12, xs2[:20], Mux(z8, xs2[4:24], Mux(z4, xs2[8:28], xs2[12:32]))))
        sh3 = Signal(2)
        m.d.comb += sh3.eq(Mux(x2[19], 0, Mux(x2[18], 1, Mux(x2[17], 2, 3))))
        x3 = Signal(17)
        m.d.comb += x3.eq(Mux(x2[19], x2[3:20], Mux(x2[18], x2[2:19], Mux(x2[17], x2[1:18],
                                                                         x2[:17]))))
        # e − in_frac = (47 − (48 − LW) − in_frac) − (16·sh1 + 4·sh2 + sh3)
        econst = per_op("econst", signed(8),
                        lambda op: LW - 1 - op.in_frac if op.kind == "log2" else None)
        e_adj = Signal(signed(9))
        m.d.comb += e_adj.eq(econst(op2) - Cat(sh3, sh2, sh1_2))
        is_log2 = kind_is(op2, "log2")
        idx = Signal(9)
        rem = Signal(R)
        m.d.comb += [idx.eq(Mux(is_log2, x3[R:16], idx2)), rem.eq(Mux(is_log2, x3[:R], rem2))]
        mem_shape = unsigned(18)
        mem = Memory(shape=mem_shape, depth=len(self._entries),
                     init=rom_init(self._entries, mem_shape), attrs={"rom_style": "block"})
        m.submodules.table = mem
        ra = mem.read_port(domain="sync", transparent_for=())
        rb = mem.read_port(domain="sync", transparent_for=())
        base = per_op("base", range(len(self._entries)), self._base)
        addr = Signal(range(len(self._entries) + 1))
        m.d.comb += [addr.eq(base(op2) + idx), ra.addr.eq(addr), rb.addr.eq(addr + 1),
                     ra.en.eq(1), rb.en.eq(1)]
        v3 = stage("v3", 1, v2)
        op3 = stage("op3", op2.shape(), op2)
        add3 = stage("add3", add2.shape(), add2)
        rem3 = stage("rem3", R, rem)
        e3 = stage("e3", signed(9), e_adj)
        zero3 = stage("zero3", 1, xs2 == 0)
        above3 = stage("above3", 1, above2)
        lneg3, lbig3, l3 = stage("lneg3", 1, lneg2), stage("lbig3", 1, lbig2), stage("l3", 6, l2)

        # ---- cycle 3: the interpolation's product (b − a)·rem; a·2^10 + 2^9 is added in
        # cycle 4 (a block RAM read, a subtraction, a multiply and a 40-bit add are too much
        # for one cycle at 50 MHz on an ECP5)
        dif = Signal(signed(20))
        m.d.comb += dif.eq(rb.data - ra.data)
        prod = Signal(signed(40))
        m.d.sync += prod.eq(dif * rem3)
        a4 = stage("a4", mem_shape, ra.data)
        v4 = stage("v4", 1, v3)
        op4 = stage("op4", op3.shape(), op3)
        add4 = stage("add4", add3.shape(), add3)
        e4, zero4, above4 = stage("e4", signed(9), e3), stage("zero4", 1, zero3), \
            stage("above4", 1, above3)
        lneg4, lbig4, l4 = stage("lneg4", 1, lneg3), stage("lbig4", 1, lbig3), stage("l4", 6, l3)

        # ---- cycle 4: log2 / pwl results; exp2 shifter stage A
        p = Signal(signed(40))
        m.d.comb += p.eq(prod + Cat(Const(1 << (R - 1), R), a4))
        interp = p[R:R + 19]
        lp = Signal(signed(LOG_OUT_WIDTH))
        m.d.comb += lp.eq(interp[:18])
        with m.If(kind_is(op4, "log2")):
            m.d.comb += lp.eq(Mux(zero4, F.LOG2.zero_value,
                                  Cat(interp[:F.LOG_FRAC], (e4 + interp[F.LOG_FRAC]))
                                  .as_signed()))
        for k, op in pwl_ops:
            with m.If((op4 == k) & above4):
                m.d.comb += lp.eq(int(op.table.table[-1]))
        m.d.sync += [self.o_lp.eq(lp), self.o_lp_valid.eq(v4 & ~kind_is(op4, "exp2"))]

        mant = Mux(lneg4, 0, interp[:18])
        za = stage("za", 21, mant << l4[:2])
        v5, op5, add5 = stage("v5", 1, v4 & kind_is(op4, "exp2")), stage("op5", op4.shape(), op4), \
            stage("add5", add4.shape(), add4)
        lbig5, l5 = stage("lbig5", 1, lbig4), stage("l5", 4, l4[2:])
        # ---- cycle 5: stage B (by 4·L[3:2])
        zb = stage("zb", 33, za << Cat(Const(0, 2), l5[:2]))
        v6, op6, add6 = stage("v6", 1, v5), stage("op6", op5.shape(), op5), \
            stage("add6", add5.shape(), add5)
        lbig6, l6 = stage("lbig6", 1, lbig5), stage("l6", 2, l5[2:])
        # ---- cycle 6: stage C (by 16·L[5:4]); keep bits 17..59
        zfull = Signal(60)
        m.d.comb += zfull.eq(zb << Cat(Const(0, 4), l6))
        zc = stage("zc", 43, zfull[17:60])
        v7, op7, add7 = stage("v7", 1, v6), stage("op7", op6.shape(), op6), \
            stage("add7", add6.shape(), add6)
        lbig7 = stage("lbig7", 1, lbig6)
        # ---- cycle 7: round + addend, clamp at the op's cap
        ssum = Signal(signed(self.EXP_OUT_WIDTH + 2))
        m.d.comb += ssum.eq(zc + Cat(Const(1, 1), add7).as_signed())
        xp = Signal(signed(self.EXP_OUT_WIDTH + 1))
        m.d.comb += xp.eq(ssum >> 1)
        caps = sorted({op.cap for op in ops if op.kind == "exp2"})
        over = Signal()
        cap_v = Signal(self.EXP_OUT_WIDTH)
        for cap in caps:
            codes = [k for k, op in enumerate(ops) if op.kind == "exp2" and op.cap == cap]
            with m.If(Cat(*(op7 == k for k in codes)).any()):
                m.d.comb += [over.eq(lbig7 | (xp > cap)), cap_v.eq(cap)]
        m.d.sync += [self.o_exp.eq(Mux(over, cap_v, xp)), self.o_exp_valid.eq(v7)]
        return m
