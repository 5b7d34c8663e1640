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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed import funcs as F
from ..fixed.ops import Fmt
from .common import rom_init, shape_of

LOG_OUT_WIDTH = 32      # log2 results: |log2| < 2**15 with LOG_FRAC = 16 fraction bits


def _rom(m: Module, name: str, values, width: int, signed_: bool = False):
    """A combinational-read ROM with two read ports (entries idx and idx + 1)."""
    shape = signed(width) if signed_ else unsigned(width)
    mem = Memory(shape=shape, depth=len(values), init=rom_init(values, shape))
    m.submodules[name] = mem
    return mem.read_port(domain="comb"), mem.read_port(domain="comb")


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
    prod = (b - a) * Value.cast(rem).as_unsigned()
    return a + ((prod + (1 << (rem_bits - 1))) >> rem_bits)


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
        ra, rb = _rom(m, "table", F.LOG2.table, F.LOG_FRAC + 1)
        m.d.comb += [ra.addr.eq(idx3), rb.addr.eq(idx3 + 1)]
        frac = _interp(ra.data, rb.data, rem3, rem_bits)
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
        ra, rb = _rom(m, "table", F.EXP2.table, P + 2)
        m.d.comb += [ra.addr.eq(idx2), rb.addr.eq(idx2 + 1)]
        mant = _interp(ra.data, rb.data, rem2, rem_bits)
        v3 = _stage(m, en, "v3", 1, v2)
        mant3 = _stage(m, en, "mant3", unsigned(P + 1), mant)
        shift3 = _stage(m, en, "shift3", shift2.shape(), shift2)
        # 4: barrel shift with round-half-up on right shifts, saturate on the left
        max_out = (1 << W) - 1
        rsh = Signal(range(P + 3))
        m.d.comb += rsh.eq(Mux(-shift3 > P + 2, P + 2, -shift3))
        wide = Signal(unsigned(P + 2))
        m.d.comb += wide.eq((mant3 + Mux(rsh == 0, 0, Const(1, P + 2) << (rsh - 1).as_unsigned())) >> rsh)
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

    The table lives in a two-read-port memory (block RAM for long tables).
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
        idx2 = _stage(m, en, "idx2", n_idx, (dc >> sl)[:n_idx])
        rem2 = _stage(m, en, "rem2", max(sl, 1), dc[:sl] if sl else 0)
        below2 = _stage(m, en, "below2", 1, xs < t.lo)
        above2 = _stage(m, en, "above2", 1, xs >= t.hi)
        sh = fi.frac - fo.frac
        ident = (xs + (1 << (sh - 1))) >> sh if sh > 0 else xs << (-sh)
        ident_sat = Mux(ident > fo.max_int, fo.max_int, Mux(ident < fo.min_int, fo.min_int, ident))
        ident2 = _stage(m, en, "ident2", shape_of(fo), ident_sat)
        # 3: table + interpolation + outside-range rules
        mem_shape = shape_of(fo)
        mem = Memory(shape=mem_shape, depth=len(t.table), init=rom_init(t.table, mem_shape))
        m.submodules.table = mem
        ra, rb = mem.read_port(domain="comb"), mem.read_port(domain="comb")
        m.d.comb += [ra.addr.eq(idx2), rb.addr.eq(idx2 + 1)]
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

