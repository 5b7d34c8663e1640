"""The MAC engine: every :class:`~nanomamba_hw.fixed.linear.QLinear` of the model on one datapath,
bit-exact with ``QLinear.__call__``; plus the DSP-sized multipliers the back end shares.

**Multipliers.** Every product of the back end is a 25 × 18-bit signed multiply (one DSP48E1)
with a fixed latency of :data:`MUL_LATENCY` cycles (operand registers + product register).
A unit does not own its multipliers: it presents operands on ``mul.a[k]``/``mul.b[k]`` and
reads ``mul.p[k]`` ``MUL_LATENCY`` cycles later. :class:`MulBank` provides the multipliers,
either to one unit (tests) or shared by several (the back end selects the active unit; the
back end runs one unit at a time, so sharing costs a 2:1 or 3:1 operand mux, not a DSP).

**The MAC engine** executes one layer per job (``job`` stream: the layer's index in the list
given to the constructor). For output channel o (``lanes`` channels in parallel)::

    acc = Σ_i W[o, i] · x[i]                       one multiply per lane per cycle (exact)
    acc' = (acc + 2**(pre−1)) >> pre               pre per layer
    y = sat((acc' · m[o] + b[o] + 2**(sh[o]−1)) >> sh[o])    m, sh, b per channel from ROM

- Weights of all layers live in one ROM (``lanes`` weights per word, per-layer base address);
  m, sh, b in one ROM per lane. Layer constants (sizes, pre, saturation bounds, bases) are a
  small table indexed by the job.
- The input vector is read through ``rd``: the engine puts (``o``, ``i``) on ``rd`` with
  ``rd.en`` and expects ``rd.data`` one cycle later (a synchronous memory read). Dense layers
  use ``i`` only; a depthwise layer (the convolution) reads channel ``o``'s own history, tap
  ``i``, and runs on lane 0 alone.
- Results leave on ``o`` one per cycle (``index``, ``value``, ``last``), never stalled: every
  consumer inside the back end is always ready. A group of ``lanes`` results is spaced at
  least ``lanes`` cycles from the next (jobs with fewer inputs than lanes are padded), so the
  serialiser never overflows.

Cycles per job: ``ceil(n_out / lanes) · max(n_in, lanes)`` plus a pipeline latency of
:attr:`MACEngine.latency` cycles from the job's acceptance to its first result's
requantisation, plus the serialisation of the last group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from amaranth.hdl import (
    Array,
    Const,
    Elaboratable,
    EnableInserter,
    Module,
    Mux,
    Signal,
    Value,
    signed,
    unsigned,
)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed.linear import QLinear
from .common import delay_taps, rom_init

MUL_A_BITS = 25
MUL_B_BITS = 18
MUL_P_BITS = 48            # the DSP48E1's P register: product plus the post-adder's C or P
MUL_C_BITS = 48
MUL_LATENCY = 2
# the spectral engine's wide multiply-add (hw/spectral.py): operand register, then A·B + K
GMUL_LATENCY = 2


def mul_signature(n: int) -> wiring.Signature:
    """``n`` multiplier ports seen from the unit that uses them.

    Port k computes ``p = a·b + (p if acc else c)`` (operands, ``c`` and ``acc`` registered
    together — by the bank, or by the unit: ``MulBank(operands_registered=True)`` — the sum
    registered: latency :data:`MUL_LATENCY`). ``c`` and ``acc`` default to 0:
    a plain product. Yosys maps the whole port into one DSP48E1 (AREG/BREG/CREG, the post-adder
    with OPMODE choosing C or the P feedback, PREG), so an addend, a rounding constant or an
    accumulation costs no fabric adder."""
    return wiring.Signature({
        "a": Out(signed(MUL_A_BITS)).array(n),
        "b": Out(signed(MUL_B_BITS)).array(n),
        "c": Out(signed(MUL_C_BITS)).array(n),
        "acc": Out(1).array(n),
        "p": In(signed(MUL_P_BITS)).array(n),
    })


class MulBank(Elaboratable):
    """``n`` registered 25 × 18 multiply-adds (one DSP48E1 each) shared by several units.

    ``clients`` are the units' ``mul`` interfaces (:func:`mul_signature`). Port ``k`` of every
    client maps to multiplier ``k``. The clients' operands are ORed: a unit drives zeros on
    every port it is not using (all operands are combinational defaults), and the back end
    never runs two clients of a bank at once — so sharing costs one OR per operand bit (which
    the synthesiser folds into the clients' own operand selection) instead of a multiplexer.
    Every client sees the one product register.

    ``operands_registered``: the clients present their operands already registered (an
    :class:`~nanomamba_hw.hw.common.OrMux` with ``registered=True``), so the bank ORs them
    straight into the multipliers; the latency counted from the clients' issue is the same.
    """

    def __init__(self, clients: Sequence, *, operands_registered: bool = False):
        self.clients = list(clients)
        self.operands_registered = operands_registered
        self.n = max(len(c.a) for c in self.clients)

    def elaborate(self, platform):
        m = Module()
        for k in range(self.n):
            users = [c for c in self.clients if k < len(c.a)]
            a = Signal(signed(MUL_A_BITS), name=f"a{k}")
            b = Signal(signed(MUL_B_BITS), name=f"b{k}")
            c = Signal(signed(MUL_C_BITS), name=f"c{k}")
            acc = Signal(name=f"acc{k}")
            p = Signal(signed(MUL_P_BITS), name=f"p{k}")

            def any_of(xs):
                out = xs[0]
                for x in xs[1:]:
                    out = out | x
                return out
            operands = m.d.comb if self.operands_registered else m.d.sync
            operands += [a.eq(any_of([u.a[k] for u in users])),
                         b.eq(any_of([u.b[k] for u in users])),
                         c.eq(any_of([u.c[k] for u in users])),
                         acc.eq(any_of([u.acc[k] for u in users]))]
            m.d.sync += p.eq(a * b + Mux(acc, p, c))
            for u in users:
                m.d.comb += u.p[k].eq(p)
        return m


# ----------------------------------------------------------------------------------------------
# Small arithmetic helpers shared by the back-end units (all exact, as fixed.ops)

def rshift_round_c(x, s: int):
    """``fixed.ops.rshift_round`` by a constant: ``(x + 2**(s−1)) >> s``, computed as
    ``((x >> (s−1)) + 1) >> 1`` (the same integer; the adder spans only the kept bits)."""
    if s > 0:
        return ((Value.cast(x) >> (s - 1)) + 1) >> 1
    if s < 0:
        return x << (-s)
    return x


def rshift_round_v(x, sh):
    """Rounding right shift by a variable unsigned amount: ``(x + 2**(sh−1)) >> sh``.

    Computed as ``((x >> (sh − 1)) + 1) >> 1`` (the same integer), which needs one barrel
    shifter of x's width instead of a shifted constant as wide as 2**width(sh).
    """
    x = Value.cast(x)
    t = x >> (sh - 1)[:len(sh)] if len(Value.cast(sh)) > 0 else x
    return Mux(sh == 0, x, (t + 1) >> 1)


def clamp(m: Module, x, lo, hi):
    """``fixed.ops.saturate`` to [lo, hi] (x held in a signal so it is computed once).

    For a two's-complement range [−2**(b−1), 2**(b−1) − 1] (every ``Fmt``) the test is whether
    the bits above b−1 all equal the sign — one wide AND instead of two comparators."""
    v = Value.cast(x)
    if not isinstance(v, Signal):
        s = Signal(v.shape())
        m.d.comb += s.eq(v)
        v = s
    if isinstance(lo, int) and isinstance(hi, int):
        w = len(v)
        if lo < 0 and lo == -hi - 1 and (hi + 1) & hi == 0:
            b = (hi + 1).bit_length()               # signed b bits
            if not v.shape().signed:
                if w < b:
                    return v
                return Mux(v[b - 1:].any(), hi, v[:b - 1])
            if w <= b:
                return v
            top = v[b - 1:]
            ok = ~top.any() | top.all()
            return Mux(ok, v[:b].as_signed(), Mux(v[-1], lo, hi))
        if lo == 0 and (hi + 1) & hi == 0:
            b = hi.bit_length()                     # unsigned b bits
            if not v.shape().signed:
                if w <= b:
                    return v
                return Mux(v[b:].any(), hi, v[:b])
            if w <= b + 1:
                return Mux(v[-1], 0, v)
            return Mux(v[-1], 0, Mux(v[b:].any(), hi, v[:b]))
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


def signed_bits(lo: int, hi: int) -> int:
    """Width of the smallest signed shape holding [lo, hi]."""
    return max(max(hi, 0).bit_length(), (-min(lo, 0) - 1).bit_length() if lo < 0 else 0) + 1


def const_mul(x, k: int):
    """x · k for a non-negative constant by shifts and adds (no DSP: left as ``x * k``, Yosys
    puts such a product on a MULT18X18D of an ECP5, ~4 ns on a RAM address path)."""
    if k < 0:
        raise ValueError("const_mul takes k >= 0")
    terms = [x << i for i in range(k.bit_length()) if (k >> i) & 1]
    if not terms:
        return Const(0, 1)
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def delay(m: Module, value, n: int, name: str, *, reset_less: bool | None = None):
    """``value`` delayed by ``n`` clock cycles (a shift register); returns the last stage
    (``reset_less``: see :func:`~nanomamba_hw.hw.common.delay_taps`)."""
    return delay_taps(m, value, n, name, reset_less=reset_less)[-1]


# ----------------------------------------------------------------------------------------------
# MAC engine

@dataclass(frozen=True)
class LayerPlan:
    """Where one layer lives in the engine's ROMs and how it is sequenced."""

    name: str
    n_in: int
    n_out: int
    depthwise: bool
    lanes: int            # lanes used (1 for depthwise)
    n_groups: int
    group_cycles: int     # max(n_in, lanes): cycles between groups
    w_base: int
    rq_base: int
    pre: int
    lo: int
    hi: int

    @property
    def cycles(self) -> int:
        return self.n_groups * self.group_cycles


def plan_layers(layers: Sequence[QLinear], lanes: int) -> list[LayerPlan]:
    plans, w_base, rq_base = [], 0, 0
    for q in layers:
        n_out, n_in = q.w.shape
        ln = 1 if q.depthwise else lanes
        n_groups = -(-n_out // ln)
        plans.append(LayerPlan(q.name, n_in, n_out, q.depthwise, ln, n_groups, max(n_in, lanes),
                               w_base, rq_base, q.pre, q.out_fmt.min_int, q.out_fmt.max_int))
        w_base += n_groups * n_in
        rq_base += n_groups
    return plans


def mac_cycles(layers: Sequence[QLinear], lanes: int) -> int:
    """Multiply cycles of all layers (the engine's lower bound, latency excluded)."""
    return sum(p.cycles for p in plan_layers(layers, lanes))


class MACEngine(wiring.Component):
    """Executes any of ``layers`` (dense or depthwise :class:`QLinear`) per job, bit-exact.

    Ports: ``job`` (layer index; accepted when idle), ``rd`` (input read: ``en``, ``o``, ``i``
    out, ``data`` in one cycle later), ``o`` (results: ``index``, ``value``, ``last``; always
    ready), ``busy``, ``mul`` (``2·lanes`` multiplier ports: lanes MACs, then lanes requants).
    """

    def __init__(self, layers: Sequence[QLinear], *, lanes: int = 1, in_width: int = 24):
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        self.layers = list(layers)
        self.lanes = lanes
        self.in_width = in_width
        self.plans = plan_layers(self.layers, lanes)
        for q in self.layers:
            if q.in_fmt.bits + (0 if q.in_fmt.signed else 1) > in_width:
                raise ValueError(f"{q.name}: input {q.in_fmt} wider than the {in_width}-bit port")
            if in_width > MUL_A_BITS or q.weight_bits > MUL_B_BITS:
                raise ValueError(f"{q.name}: operands exceed the {MUL_A_BITS}x{MUL_B_BITS} multiplier")
            if q.acc_bits - q.pre > MUL_A_BITS:
                raise ValueError(f"{q.name}: rounded accumulator exceeds {MUL_A_BITS} bits")
            if int(q.m.max()) >= 1 << (MUL_B_BITS - 1):
                raise ValueError(f"{q.name}: requantisation multiplier exceeds {MUL_B_BITS - 1} bits")
        self.max_out = max(p.n_out for p in self.plans)
        self.max_in = max(p.n_in for p in self.plans)
        self.out_width = max(q.out_fmt.bits + (0 if q.out_fmt.signed else 1) for q in self.layers)
        self.acc_width = max(q.acc_bits for q in self.layers) + 1
        self.sh_max = max(int(q.sh.max()) for q in self.layers)
        self.sh_min = min(int(q.sh.min()) for q in self.layers)
        # the ROM holds b + 2**(sh−1) (the rounding constant of the final shift, added by the
        # DSP) and sh − sh_min (the engine shifts by sh_min by wiring)
        self.b_width = max(signed_bits(int(q.b.min()) + ((1 << int(q.sh.min())) >> 1),
                                       int(q.b.max()) + ((1 << int(q.sh.max())) >> 1))
                           for q in self.layers)
        self.wbits = max(q.weight_bits for q in self.layers)
        self.out_layout = data.StructLayout({"index": range(self.max_out),
                                             "value": signed(self.out_width), "last": 1})
        super().__init__({
            "job": In(stream.Signature(range(max(2, len(self.layers))))),
            "rd": Out(wiring.Signature({"en": Out(1), "o": Out(range(self.max_out)),
                                        "i": Out(range(self.max_in)),
                                        "data": In(signed(in_width))})),
            "o": Out(stream.Signature(self.out_layout, always_ready=True)),
            "busy": Out(1),
            "mul": Out(mul_signature(2 * lanes)),
        })

    # ROM images (also used by the tests and the resource notes)
    def weight_words(self) -> list[list[int]]:
        """Per lane, the weight ROM contents (one word per group and input)."""
        L = self.lanes
        words = [[] for _ in range(L)]
        for q, p in zip(self.layers, self.plans):
            for g in range(p.n_groups):
                for i in range(p.n_in):
                    for j in range(L):
                        o = g * p.lanes + j
                        ok = j < p.lanes and o < p.n_out
                        words[j].append(int(q.w[o, i]) if ok else 0)
        return words

    def rq_words(self) -> list[list[tuple[int, int, int]]]:
        """Per lane, (m, sh − sh_min, b + 2**(sh−1)) per group."""
        L = self.lanes
        words = [[] for _ in range(L)]
        for q, p in zip(self.layers, self.plans):
            for g in range(p.n_groups):
                for j in range(L):
                    o = g * p.lanes + j
                    ok = j < p.lanes and o < p.n_out
                    if ok:
                        sh = int(q.sh[o])
                        words[j].append((int(q.m[o]), sh - self.sh_min, int(q.b[o]) + ((1 << sh) >> 1)))
                    else:
                        words[j].append((0, 0, 0))
        return words

    #: Cycles from a job's acceptance to the first result on ``o`` (a one-input job).
    latency = 1 + 1 + MUL_LATENCY + 1 + MUL_LATENCY + 2

    def elaborate(self, platform):
        m = Module()
        L = self.lanes
        plans = self.plans
        nl = len(plans)

        # ---- ROMs
        wshape = signed(self.wbits)
        w_words = self.weight_words()
        w_depth = len(w_words[0])
        w_rd = []
        for j in range(L):
            mem = Memory(shape=wshape, depth=max(2, w_depth), init=rom_init(w_words[j], wshape),
                         attrs={"rom_style": "block", "ram_style": "block"})
            m.submodules[f"wrom{j}"] = mem
            w_rd.append(mem.read_port(domain="sync"))
        sh_w = max(1, (self.sh_max - self.sh_min).bit_length())
        rq_layout = data.StructLayout({"m": unsigned(MUL_B_BITS - 1), "sh": unsigned(sh_w),
                                       "b": signed(self.b_width)})
        rq_rd = []
        for j, ws in enumerate(self.rq_words()):
            init = [rq_layout.const({"m": mm, "sh": s, "b": b}).as_value().value for mm, s, b in ws]
            mem = Memory(shape=rq_layout.as_shape(), depth=max(2, len(init)), init=init,
                         attrs={"rom_style": "block", "ram_style": "block"})
            m.submodules[f"rqrom{j}"] = mem
            rq_rd.append(mem.read_port(domain="sync"))

        # ---- layer table (latched at job start)
        def tab(values, shape):
            return Array(Const(v, shape) for v in values)

        job = Signal(range(max(2, nl)))
        n_in_m1 = Signal(range(self.max_in))
        n_groups_m1 = Signal(range(max(p.n_groups for p in plans)))
        gcyc_m1 = Signal(range(max(p.group_cycles for p in plans)))
        lanes_used = Signal(range(L + 1))
        dw = Signal()
        w_base = Signal(range(max(2, w_depth)))
        rq_base = Signal(range(max(2, len(rq_rd) and sum(p.n_groups for p in plans))))
        # the layers' pre-shifts are a few distinct values: a select among those shifts is
        # smaller than a barrel shifter over every amount up to the largest
        pres = sorted({p.pre for p in plans})
        pre_i = Signal(range(max(2, len(pres))))
        max_pre = max(q.pre for q in self.layers)
        half_pre = Signal(unsigned(max(1, max_pre)))   # 2**(pre−1): the accumulator's start
        n_out = Signal(range(self.max_out + 1))
        ranges = sorted({(p.lo, p.hi) for p in plans})
        sat = Signal(range(max(2, len(ranges))))         # the output range's class

        # ---- address generator
        running = Signal()
        g = Signal.like(n_groups_m1)
        c = Signal.like(gcyc_m1)
        waddr = Signal.like(w_base)
        m.d.comb += self.job.ready.eq(~self.busy)
        with m.If(self.job.valid & self.job.ready):
            jp = self.job.payload
            m.d.sync += [
                job.eq(jp), running.eq(1), self.busy.eq(1), g.eq(0), c.eq(0),
                n_in_m1.eq(tab([p.n_in - 1 for p in plans], n_in_m1.shape())[jp]),
                n_groups_m1.eq(tab([p.n_groups - 1 for p in plans], n_groups_m1.shape())[jp]),
                gcyc_m1.eq(tab([p.group_cycles - 1 for p in plans], gcyc_m1.shape())[jp]),
                lanes_used.eq(tab([p.lanes for p in plans], lanes_used.shape())[jp]),
                dw.eq(tab([int(p.depthwise) for p in plans], 1)[jp]),
                waddr.eq(tab([p.w_base for p in plans], w_base.shape())[jp]),
                rq_base.eq(tab([p.rq_base for p in plans], rq_base.shape())[jp]),
                pre_i.eq(tab([pres.index(p.pre) for p in plans], pre_i.shape())[jp]),
                half_pre.eq(tab([(1 << p.pre) >> 1 for p in plans], half_pre.shape())[jp]),
                n_out.eq(tab([p.n_out for p in plans], n_out.shape())[jp]),
                sat.eq(tab([ranges.index((p.lo, p.hi)) for p in plans], sat.shape())[jp]),
            ]
        active = Signal()       # this cycle issues a multiply-accumulate
        first = Signal()
        last = Signal()
        m.d.comb += [active.eq(running & (c <= n_in_m1)), first.eq(c == 0),
                     last.eq(running & (c == gcyc_m1))]
        for j in range(L):
            m.d.comb += [w_rd[j].addr.eq(waddr), w_rd[j].en.eq(1)]
        m.d.comb += [self.rd.en.eq(active), self.rd.i.eq(c),
                     self.rd.o.eq(Mux(dw, g, 0))]
        with m.If(running):
            with m.If(active):
                m.d.sync += waddr.eq(waddr + 1)
            with m.If(c == gcyc_m1):
                m.d.sync += [c.eq(0), g.eq(g + 1)]
                with m.If(g == n_groups_m1):
                    m.d.sync += running.eq(0)
            with m.Else():
                m.d.sync += c.eq(c + 1)

        # ---- stage 1: operands (memory data valid); stage 1+MUL_LATENCY: products
        v1 = delay(m, active, 1, "act")
        f1 = delay(m, first, 1, "first")
        l1 = delay(m, last, 1, "last")
        g1 = delay(m, g, 1, "grp")
        # the accumulator is the DSP's own P register: the group's first product is added to
        # 2**(pre−1) (the rounding constant of the pre-shift), the others to P; a padded cycle
        # multiplies by 0
        for j in range(L):
            m.d.comb += [self.mul.a[j].eq(self.rd.data),
                         self.mul.b[j].eq(Mux(v1, w_rd[j].data, 0)),
                         self.mul.c[j].eq(half_pre), self.mul.acc[j].eq(~f1)]
        lP = delay(m, l1, MUL_LATENCY, "lastp")
        gP = delay(m, g1, MUL_LATENCY, "grpp")

        # ---- requantisation: R0 rounded accumulator + ROM read, R0+MUL_LATENCY
        # P = acc'·m + (b + 2**(sh−1)) (b and the rounding constant on the DSP's C input, one
        # ROM field), then the plain shift and the saturation
        r0v = Signal()
        r0g = Signal.like(gP)
        m.d.sync += [r0v.eq(lP), r0g.eq(gP)]
        accr = [Signal(signed(MUL_A_BITS), name=f"accr{j}") for j in range(L)]
        for j in range(L):
            with m.If(lP):
                acc_j = self.mul.p[j][:self.acc_width].as_signed()
                m.d.sync += accr[j].eq(Array(acc_j >> v for v in pres)[pre_i])
            m.d.comb += [rq_rd[j].addr.eq(rq_base + gP), rq_rd[j].en.eq(lP)]
        rq = [data.View(rq_layout, rq_rd[j].data) for j in range(L)]
        for j in range(L):
            m.d.comb += [self.mul.a[L + j].eq(accr[j]), self.mul.b[L + j].eq(rq[j].m),
                         self.mul.c[L + j].eq(rq[j].b)]
        shq = [delay(m, rq[j].sh, MUL_LATENCY, f"sh{j}") for j in range(L)]
        rPv = delay(m, r0v, MUL_LATENCY, "rpv")
        rPg = delay(m, r0g, MUL_LATENCY, "rpg")
        sum_w = max(MUL_A_BITS + MUL_B_BITS, self.b_width) + 1
        shifted = [Signal(signed(sum_w - self.sh_min), name=f"rsh{j}") for j in range(L)]
        for j in range(L):
            full = self.mul.p[j + L][:sum_w].as_signed() >> self.sh_min
            m.d.sync += shifted[j].eq(full >> shq[j])
        rSv = delay(m, rPv, 1, "rsv")
        rSg = delay(m, rPg, 1, "rsg")
        outs = [Signal(signed(self.out_width), name=f"rout{j}") for j in range(L)]
        for j in range(L):
            cl = [clamp(m, shifted[j], lo_, hi_) for lo_, hi_ in ranges]
            m.d.sync += outs[j].eq(Array(cl)[sat] if len(cl) > 1 else cl[0])
        rOv = delay(m, rSv, 1, "rov")
        rOg = delay(m, rSg, 1, "rog")

        # ---- serialiser: lane j's result is channel g·lanes_used + j
        pend = Signal(range(L + 1))            # results left in the shift register
        shreg = [Signal(signed(self.out_width), name=f"ser{j}") for j in range(L)]
        idx = Signal(range(self.max_out + L))
        o_valid = Signal()
        o_index = Signal(range(self.max_out + L))
        o_value = Signal(signed(self.out_width))
        base = Signal(range(self.max_out + L))
        m.d.comb += base.eq(Mux(dw, rOg, const_mul(rOg, L)))
        with m.If(rOv):
            # emit lane 0 now, keep the others
            m.d.comb += [o_valid.eq(1), o_index.eq(base), o_value.eq(outs[0])]
            for j in range(L - 1):
                m.d.sync += shreg[j].eq(outs[j + 1])
            m.d.sync += [pend.eq(lanes_used - 1), idx.eq(base + 1)]
        with m.Elif(pend != 0):
            m.d.comb += [o_valid.eq(idx < n_out), o_index.eq(idx), o_value.eq(shreg[0])]
            for j in range(L - 2):
                m.d.sync += shreg[j].eq(shreg[j + 1])
            m.d.sync += [pend.eq(pend - 1), idx.eq(idx + 1)]
        is_last = o_index == n_out - 1
        m.d.comb += [self.o.valid.eq(o_valid & (o_index < n_out)),
                     self.o.payload.index.eq(o_index), self.o.payload.value.eq(o_value),
                     self.o.payload.last.eq(is_last)]
        with m.If(self.o.valid & is_last):
            m.d.sync += self.busy.eq(0)
        # idle: nothing moves (a job drains completely before busy falls); this also keeps the
        # simulator from evaluating the pipeline when another unit is working
        return EnableInserter({"sync": self.busy | self.job.valid})(m)
