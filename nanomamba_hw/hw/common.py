"""Conventions shared by every accelerator stage.

- Shapes come from the fixed model's formats: :func:`shape_of` turns a
  :class:`~nanomamba_hw.fixed.ops.Fmt` into an Amaranth shape, so no width is written twice.
- Frame-structured streams carry :func:`frame_layout` payloads: the element plus ``first``
  (first element of a frame) and ``last`` (last element of a frame) flags.
- ROM contents come from the fixed model's arrays via :func:`rom_init`.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream

from ..fixed.ops import Fmt


def shape_of(fmt: Fmt) -> Shape:
    """The Amaranth shape holding integers of ``fmt``."""
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


def frame_layout(shape) -> data.StructLayout:
    """Payload of a frame-structured stream: ``data`` plus ``first``/``last`` markers."""
    return data.StructLayout({"data": shape, "first": 1, "last": 1})


def frame_stream(shape) -> stream.Signature:
    return stream.Signature(frame_layout(shape))


def rom_init(values, shape: Shape) -> list[int]:
    """ROM initial contents from integer arrays, checked to fit ``shape``."""
    vals = [int(v) for v in np.asarray(values).ravel()]
    s = Shape.cast(shape)
    lo = -(1 << (s.width - 1)) if s.signed else 0
    hi = (1 << (s.width - 1)) - 1 if s.signed else (1 << s.width) - 1
    bad = [v for v in vals if not lo <= v <= hi]
    if bad:
        raise ValueError(f"ROM value {bad[0]} does not fit {s}")
    return vals


def delay_taps(m: Module, value, n: int, name: str, *, reset_less: bool | None = None) -> list:
    """``value`` and its copies delayed by 1…``n`` clock cycles (a shift register): taps 0…n.

    ``reset_less`` (default: as ``value`` if it is a signal, else False): True makes the stages
    ignore the domain's reset — for data whose valid flag travels in its own delay line. Their
    flip-flops' reset input is then free for a constant select in ``value`` (``Mux(c, 0, x)``),
    which would otherwise cost a LUT per bit; but a reset-less chain of several stages becomes
    shift-register LUTs (LUT as memory), so such a stage is best followed by ones with reset."""
    taps = [value]
    for k in range(n):
        cur = taps[-1]
        if isinstance(cur, Signal):
            rl = cur.reset_less if reset_less is None else reset_less
            r = Signal.like(cur, name=f"{name}_d{k + 1}", reset_less=rl)
        else:
            r = Signal(cur.shape(), name=f"{name}_d{k + 1}", reset_less=bool(reset_less))
        m.d.sync += r.eq(cur)
        taps.append(r)
    return taps


def value_key(v):
    """A hashable key equal for structurally identical Amaranth expressions (same signals, same
    operators and constants); anything it does not know is keyed by identity, so two values share
    a key only if they certainly compute the same thing. Identity keys are only meaningful while
    the values compared are alive (a freed object's id can be reused): the caller keeps them."""
    from amaranth.hdl import Const, Signal, Value
    from amaranth.hdl._ast import Concat, Operator, Slice
    if isinstance(v, int):
        return ("int", v)
    v = Value.cast(v)
    if isinstance(v, Signal):
        return ("sig", id(v))
    if isinstance(v, Const):
        return ("const", v.value, v.shape().width, v.shape().signed)
    if isinstance(v, Slice):
        return ("slice", value_key(v.value), v.start, v.stop)
    if isinstance(v, Operator):
        return ("op", v.operator, tuple(value_key(o) for o in v.operands))
    if isinstance(v, Concat):
        return ("cat", tuple(value_key(p) for p in v.parts))
    return ("id", id(v))


class OrMux:
    """The operands of a shared unit, driven from many call sites that are never active in the
    same cycle, combined by AND-OR instead of a priority multiplexer.

    Driving a signal under ``with m.If(...)`` from N places builds a chain of N 2:1 multiplexers
    per bit. Here each call of :meth:`drive` gets a ``use`` strobe, set to 1 in the call's own
    control context (If, Switch case, FSM state), and the target becomes
    ``OR over sites (use ? value : 0)`` — about a third fewer LUTs, and the unused bits of
    narrow or constant operands fold away. Targets not given at a site are 0 there, as
    with combinational defaults. Two sites active at once would OR their values: the
    schedules of the units using this guarantee they never are (the bit-exact tests check).
    Call :meth:`emit` once, after the last :meth:`drive`.

    ``registered=True``: the targets are the *registered* operands (a site driving in cycle c
    is seen in c + 1), and each group's term is a register of its own, ``use ? value : 0``
    with ``use`` on the flip-flop's synchronous reset — so the AND costs nothing and only
    the OR tree is left in LUTs (on a 6-input LUT, twice the terms per LUT). For a unit
    that registers its operands anyway (a DSP's input registers, a pipeline's first stage):
    the registers move in front of the OR. ``regs_in`` (default ``m``) is the module that holds
    those registers: a unit whose domain is gated by an ``EnableInserter`` puts them in a module
    outside it — under the enable, the domain's reset and ``use`` would be two resets, which a
    flip-flop cannot merge (a LUT per bit again).
    """

    def __init__(self, m: Module, name: str, *, registered: bool = False,
                 regs_in: Module | None = None, **targets):
        self.m, self.name, self.targets = m, name, targets
        self.registered = registered
        self.regs_in = m if regs_in is None else regs_in
        self.sites: list[tuple[Signal, dict]] = []

    def drive(self, **values) -> None:
        unknown = set(values) - set(self.targets)
        if unknown:
            raise KeyError(f"{self.name}: no operand {sorted(unknown)}")
        use = Signal(name=f"{self.name}_use{len(self.sites)}")
        self.m.d.comb += use.eq(1)
        self.sites.append((use, values))

    def emit(self) -> None:
        from amaranth.hdl import Mux, Value
        for key, target in self.targets.items():
            # sites giving the same expression share one term: (use_i | use_j) ? v : 0
            groups: dict = {}
            alive = []      # value_key keys unknown nodes by id(): keep every node alive meanwhile
            for use, vals in self.sites:
                if key in vals:
                    v = Value.cast(vals[key])
                    alive.append(v)
                    k = value_key(v)
                    if k in groups:
                        groups[k] = (groups[k][0] | use, v)
                    else:
                        groups[k] = (use, v)
            terms = [Mux(use, v, 0) for use, v in groups.values()]
            if self.registered:
                regs = []
                for i, t in enumerate(terms):
                    # the term in the target's shape (each extended by its own signedness,
                    # as the OR below would): a register whose reset does the AND
                    r = Signal(target.shape(), name=f"{self.name}_{key}_t{i}")
                    self.regs_in.d.sync += r.eq(t)
                    regs.append(r)
                terms = regs
            if terms:
                acc = terms[0]
                for t in terms[1:]:
                    acc = acc | t
                self.m.d.comb += target.eq(acc)
