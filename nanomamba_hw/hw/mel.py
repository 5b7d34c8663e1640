"""Mel filterbank: 257 magnitudes per frame in, 40 mel values out, = ``fixed.mel.mel_spectrum``.

What it computes
----------------
``mel[m] = sat(round(Σ_j W[m, j] · |X|[j] / 2**14))`` in ``MEL_FMT`` (u28.16), with the 454
nonzero triangle weights of :class:`~nanomamba_hw.fixed.mel.SparseFilterbank` (u16.15) and
``|X|`` in ``MAG_FMT`` (u24.15); rounding half up, saturation at the format's top, exactly as
the fixed model.

How
---
:class:`SparseMAC` is the engine, shared with the SNR estimator's mel projection: a ROM lists
the 454 (bin, weight, last-of-band) entries band by band (one RAMB18 in 512×36 mode, or LUTs);
one entry per cycle it reads the frame buffer at ``bin`` (a synchronous block-RAM read port
owned by the caller), multiplies by the weight (one DSP48) and accumulates; at a band's last
entry the rounded, saturated sum leaves on ``o``. Four pipeline stages (ROM → buffer read →
multiply → accumulate/output) move together under one enable, ``~o.valid | o.ready``, which is
also the enable of both synchronous read ports, so a stalled consumer freezes the walk without
a skid buffer.

:class:`MelFilterbank` buffers a frame's 257 magnitudes in a 257×24 RAM (LOAD: one magnitude
per cycle), then lets the MAC walk it (RUN). The next frame is loaded as soon as the MAC has
issued its last buffer read (its final output may still wait on the consumer). Cycles per
frame with neither side stalling: 257 (load) + 454 (walk) + 5 (pipeline) = 716.

Frames are exactly 257 elements; an element with ``first`` set restarts the load at bin 0, so
a stream resynchronises on ``first`` after an abandoned partial frame.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed import mel as fmel
from ..fixed.ops import Fmt
from ..fixed.stft import MAG_FMT, N_BINS
from .common import frame_stream, shape_of

__all__ = ["MelFilterbank", "SparseMAC"]


def _entry_layout(fb: fmel.SparseFilterbank) -> data.StructLayout:
    return data.StructLayout({
        "bin": unsigned(max(1, (int(fb.bin.max())).bit_length())),
        "weight": shape_of(fmel.MEL_W_FMT),
        "last": 1,
    })


class SparseMAC(wiring.Component):
    """Walk the sparse filterbank over a frame buffer the caller owns: one MAC per cycle.

    Ports:

    - ``start`` (In): strobe, honoured when ``busy`` is low: walk all entries once;
    - ``busy`` (Out): the walk still has entries to issue or buffer reads in flight; when it
      drops, the buffer may be overwritten (the last band may still wait in ``o``);
    - ``rd_addr``/``rd_en`` (Out), ``rd_data`` (In): drive a synchronous read port of the
      caller's buffer (``rd_data`` is the word at the ``rd_addr`` of the last cycle with
      ``rd_en`` high);
    - ``o``: one value per band, ``sat(round(Σ w·x / 2**shift))`` in ``out_fmt``, with
      ``first`` on band 0 and ``last`` on the last band.
    """

    def __init__(self, *, fb: fmel.SparseFilterbank, in_width: int, shift: int, out_fmt: Fmt):
        if out_fmt.signed or shift < 1:
            raise ValueError("SparseMAC rounds a right shift into an unsigned format")
        self.fb, self.in_width, self.shift, self.out_fmt = fb, in_width, shift, out_fmt
        self.n_bands = len(fb.start) - 1
        row_max = int(fb.dense.sum(axis=1).max())
        self.acc_width = (row_max * ((1 << in_width) - 1)).bit_length()
        n_bins = fb.dense.shape[1]
        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "rd_addr": Out(range(n_bins)),
            "rd_en": Out(1),
            "rd_data": In(unsigned(in_width)),
            "o": Out(frame_stream(shape_of(out_fmt))),
        })

    def elaborate(self, platform):
        m = Module()
        fb = self.fb
        nnz = fb.nnz
        lay = _entry_layout(fb)
        last = [0] * nnz
        for b in range(self.n_bands):
            last[int(fb.start[b + 1]) - 1] = 1
        words = [lay.const({"bin": int(fb.bin[k]), "weight": int(fb.weight[k]),
                            "last": last[k]}).as_value().value for k in range(nnz)]
        rom = Memory(shape=unsigned(lay.size), depth=nnz, init=words)
        m.submodules.rom = rom
        rp = rom.read_port()

        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        # Stage 0: issue entry addresses.
        run = Signal()
        idx = Signal(range(nnz))
        m.d.comb += [rp.addr.eq(idx), rp.en.eq(en)]
        with m.If(self.start & ~self.busy):
            m.d.sync += [run.eq(1), idx.eq(0)]
        with m.Elif(en & run):
            m.d.sync += idx.eq(idx + 1)
            with m.If(idx == nnz - 1):
                m.d.sync += run.eq(0)
        # Stage 1: entry from the ROM; read the buffer at its bin.
        v1 = Signal()
        ent = data.View(lay, rp.data)
        m.d.comb += [self.rd_addr.eq(ent.bin), self.rd_en.eq(en)]
        v2, w2, l2 = Signal(), Signal(shape_of(fmel.MEL_W_FMT)), Signal()
        # Stage 2: buffer word; multiply.
        v3, l3 = Signal(), Signal()
        p3 = Signal(unsigned(self.in_width + fmel.MEL_W_FMT.bits))
        # Stage 3: accumulate; round, saturate and output at the band's last entry.
        acc = Signal(unsigned(self.acc_width))
        band = Signal(range(self.n_bands))
        total = Signal(unsigned(self.acc_width))
        m.d.comb += total.eq(acc + p3)
        rounded = (total + (1 << (self.shift - 1))) >> self.shift
        top = self.out_fmt.max_int
        with m.If(en):
            m.d.sync += [
                v1.eq(run), v2.eq(v1), w2.eq(ent.weight), l2.eq(ent.last),
                v3.eq(v2), l3.eq(l2), p3.eq(self.rd_data * w2),
                self.o.valid.eq(v3 & l3),
            ]
            with m.If(v3):
                m.d.sync += acc.eq(Mux(l3, 0, total))
                with m.If(l3):
                    m.d.sync += [
                        self.o.payload.data.eq(Mux(rounded > top, top, rounded)),
                        self.o.payload.first.eq(band == 0),
                        self.o.payload.last.eq(band == self.n_bands - 1),
                        band.eq(Mux(band == self.n_bands - 1, 0, band + 1)),
                    ]
        with m.If(self.start & ~self.busy):
            m.d.sync += band.eq(0)
        m.d.comb += self.busy.eq(run | v1 | v2 | v3)
        return m


class MelFilterbank(wiring.Component):
    """|X| frames (257 × u24.15) → mel frames (40 × ``MEL_FMT``), bit-exact with
    ``fixed.mel.mel_spectrum``. See the module docstring for timing."""

    def __init__(self, *, fb: fmel.SparseFilterbank | None = None):
        self.fb = fb if fb is not None else fmel.SparseFilterbank.build()
        self.n_bins = self.fb.dense.shape[1]
        if self.n_bins != N_BINS:
            raise ValueError(f"filterbank has {self.n_bins} bins, the STFT gives {N_BINS}")
        super().__init__({
            "i": In(frame_stream(shape_of(MAG_FMT))),
            "o": Out(frame_stream(shape_of(fmel.MEL_FMT))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.n_bins
        m.submodules.mac = mac = SparseMAC(
            fb=self.fb, in_width=MAG_FMT.bits,
            shift=MAG_FMT.frac + fmel.MEL_W_FMT.frac - fmel.MEL_FMT.frac, out_fmt=fmel.MEL_FMT)
        wiring.connect(m, mac.o, wiring.flipped(self.o))

        buf = Memory(shape=shape_of(MAG_FMT), depth=n, init=[])
        m.submodules.buf = buf
        wp, rp = buf.write_port(), buf.read_port()
        m.d.comb += [rp.addr.eq(mac.rd_addr), rp.en.eq(mac.rd_en), mac.rd_data.eq(rp.data)]

        cnt = Signal(range(n))
        addr = Mux(self.i.payload.first, 0, cnt)
        m.d.comb += [wp.addr.eq(addr), wp.data.eq(self.i.payload.data)]
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += wp.en.eq(1)
                    m.d.sync += cnt.eq(addr + 1)
                    with m.If(addr == n - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "START"
            with m.State("START"):
                m.d.comb += mac.start.eq(1)
                with m.If(~mac.busy):
                    m.next = "RUN"
            with m.State("RUN"), m.If(~mac.busy):
                m.next = "LOAD"
        return m
