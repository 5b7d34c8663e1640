"""The head: running Σ over frames of the final LayerNorm, logits, argmax, the result stream.

The final LayerNorm itself runs on the shared :class:`~nanomamba_hw.hw.norm.NormUnit` (its last
γ/β set) and the classifier on the shared MAC engine (its input is this unit's Σ memory, read
through ``pool_rd``; ``fixed.model.run``: ``pooled = Σ_t final_norm``, then
``classifier(pooled)`` whose multiplier folds in the 1/T of the mean). :class:`Head`:

- ``fn``: final-LayerNorm outputs (``index``, ``value``) of one frame; with ``first`` high (the
  clip's first frame) they overwrite the sums, otherwise they are added (read-modify-write, one
  element per cycle). The sums are exact (``pool_fmt`` of the classifier input, no saturation,
  as the fixed model).
- ``logit``: the classifier's results in channel order; each is stored and compared with the
  best so far, strictly greater wins, so the first maximum is kept (``numpy.argmax``).
- ``result``: once the last logit is in, ``{index, logits}`` is offered until accepted
  (``busy`` until then).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed.ops import Fmt
from .common import shape_of


def result_layout(logits_fmt: Fmt, n_classes: int) -> data.StructLayout:
    return data.StructLayout({"index": 4, "logits": data.ArrayLayout(shape_of(logits_fmt), n_classes)})


class Head(wiring.Component):
    """Σ over frames, logits, argmax and the result stream (see the module docstring)."""

    def __init__(self, *, d: int, fn_fmt: Fmt, pool_fmt: Fmt, logits_fmt: Fmt, n_classes: int,
                 in_width: int = 24):
        if not 2 <= n_classes <= 16:
            raise ValueError("n_classes must be 2..16 (a 4-bit index)")
        self.d, self.fn_fmt, self.pool_fmt = d, fn_fmt, pool_fmt
        self.logits_fmt, self.n_classes = logits_fmt, n_classes
        self.layout = result_layout(logits_fmt, n_classes)
        item = lambda shape, n: data.StructLayout({"index": range(n), "value": shape, "last": 1})
        super().__init__({
            "fn": In(stream.Signature(item(signed(in_width), d), always_ready=True)),
            "first": In(1),
            "pool_rd": Out(wiring.Signature({"addr": In(range(d)), "data": Out(signed(in_width))})),
            "logit": In(stream.Signature(item(signed(in_width), n_classes), always_ready=True)),
            "result": Out(stream.Signature(self.layout)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d, nc = self.d, self.n_classes
        pool = Memory(shape=shape_of(self.pool_fmt), depth=max(2, d), init=[])
        m.submodules.pool = pool
        rmw = pool.read_port()
        mac = pool.read_port()
        w = pool.write_port()
        # Σ over frames: read now, write next cycle
        fn = self.fn
        m.d.comb += [rmw.addr.eq(fn.payload.index), mac.addr.eq(self.pool_rd.addr),
                     self.pool_rd.data.eq(mac.data)]
        v1 = Signal()
        i1 = Signal(range(d))
        x1 = Signal(signed(fn.payload.value.shape().width))
        f1 = Signal()
        m.d.sync += [v1.eq(fn.valid), i1.eq(fn.payload.index), x1.eq(fn.payload.value),
                     f1.eq(self.first)]
        m.d.comb += [w.addr.eq(i1), w.en.eq(v1),
                     w.data.eq(x1 + Mux(f1, 0, rmw.data))]

        # logits and argmax
        logits = Signal(data.ArrayLayout(shape_of(self.logits_fmt), nc))
        best = Signal(shape_of(self.logits_fmt))
        best_i = Signal(4)
        lg = self.logit
        with m.If(lg.valid):
            for o in range(nc):
                with m.If(lg.payload.index == o):
                    m.d.sync += logits[o].eq(lg.payload.value)
            with m.If((lg.payload.index == 0) | (lg.payload.value > best)):
                m.d.sync += [best.eq(lg.payload.value), best_i.eq(lg.payload.index)]
            with m.If(lg.payload.last):
                m.d.sync += [self.result.valid.eq(1), self.busy.eq(1)]
        m.d.comb += [self.result.payload.index.eq(best_i), self.result.payload.logits.eq(logits)]
        self.state = {"pool": pool}
        with m.If(self.result.valid & self.result.ready):
            m.d.sync += [self.result.valid.eq(0), self.busy.eq(0)]
        return m
