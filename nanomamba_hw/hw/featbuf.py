"""Feature buffer: a clip's features and SNR values, and the per-band Σx, Σx² of the features.

The instance norm (``fixed.norm.normalize`` over the T frames of a band) needs the statistics
of the whole clip before the first frame can be normalised, so the front end's features and
the SNR estimator's values are stored here while the sums accumulate exactly:
``Σx`` (signed) and ``Σx²`` (unsigned) per band, over the clip's ``n_frames`` frames; their
widths come from the analytic bound ``n_frames · 2**(2(bits−1))`` of the feature format, so
they never wrap.

Write side
----------
``i_feat`` (``frame_stream(FEAT_FMT)``) and ``i_snr`` (``frame_stream(SNR_FMT)``), each
``n_frames × n_mels`` values in order (frame t, band m). The two streams are independent (the
SNR lags by the estimator's 5-frame look-ahead); each is accepted only while the bank being
filled is free. A clip is complete when both streams have delivered all its values; the bank
is then handed to the read side and the writers move to the other bank (with ``n_banks=2``)
or wait for ``release`` (with ``n_banks=1``). ``clip_start`` (strobe) abandons the clip being
written (counters back to frame 0); complete banks are kept.

Read side: ``rd`` (:func:`FeatureReadSignature`, seen from the back end)
------------------------------------------------------------------------
==============  ======  ========================================================================
member          dir.    meaning
==============  ======  ========================================================================
``full``        → BE    a complete clip is readable; stays high until ``release``
``t``, ``m``    ← BE    frame 0…n_frames−1 and band 0…n_mels−1 to read
``en``          ← BE    read strobe: ``feat``/``snr``/``sum``/``sq`` show (t, m) the next cycle,
                        and hold until the next ``en`` (synchronous block-RAM reads)
``feat``        → BE    feature x[t, m] (``FEAT_FMTS[kind]``)
``snr``         → BE    SNR[t, m] (``SNR_FMT``)
``sum``, ``sq`` → BE    Σ_t x[t, m] and Σ_t x[t, m]² of band m (integers, frac = feat frac
                        and 2·feat frac)
``release``     ← BE    strobe (while ``full``): the back end is done with this clip
==============  ======  ========================================================================

Reads may be in any order and repeated (random access): the back end reads frame t's 40
features and 40 SNR values (e.g. ``m`` = 0…39 with ``en`` high, one per cycle, for the patch
projection and the SSM's snr input) and the statistics once per band.

Streamed read-out: :class:`FeatureStreamer` turns ``rd`` into three streams for a back end
that wants them — ``stats`` (``n_mels`` entries ``{s1: Σx, s2: Σx²}``, :func:`stats_layout`),
then frames t = 0…T−1 on ``feat`` and ``snr`` (``frame_stream``, ``n_mels`` values each; the two
streams advance independently within an element, so either consumer may stall), then one
``release`` strobe. Two cycles per element (≈ 8.2k cycles per clip); the back end is far slower.

Memory: per bank ``n_frames · n_mels`` words of features and of SNR (4040 × 16 bits each:
2 RAMB36 each as 2K×18), plus 2 × n_mels sums (LUT RAM). ``n_banks = 2`` (default) doubles the
block RAM (8 RAMB36 in all) so the front end can run on into the next clip while the back end
works: with one bank the whole front end — and, behind it, the framer — would stall at the next
clip's first frame until ``release``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed.ops import Fmt
from ..fixed.snr import SNR_FMT
from .common import frame_stream, shape_of

__all__ = ["FeatureBuffer", "FeatureReadSignature", "FeatureStreamer", "stat_widths",
           "stats_layout"]


def stat_widths(feat_fmt: Fmt, n_frames: int) -> tuple[int, int]:
    """(signed width of Σx, unsigned width of Σx²) that hold any clip exactly."""
    big = 1 << (feat_fmt.bits - 1)                 # the largest |x| of the format
    sum_w = (n_frames * big).bit_length() + 1
    sq_w = (n_frames * big * big).bit_length()
    return sum_w, sq_w


def stats_layout(feat_fmt: Fmt, n_frames: int) -> data.StructLayout:
    """One band's statistics as a stream payload: ``s1`` = Σx (signed), ``s2`` = Σx²."""
    sum_w, sq_w = stat_widths(feat_fmt, n_frames)
    return data.StructLayout({"s1": signed(sum_w), "s2": unsigned(sq_w)})


def FeatureReadSignature(*, n_frames: int = 101, n_mels: int = 40, feat_fmt: Fmt,
                         snr_fmt: Fmt = SNR_FMT) -> wiring.Signature:
    """The feature buffer's read interface, seen from the back end (Out = driven by it)."""
    sum_w, sq_w = stat_widths(feat_fmt, n_frames)
    return wiring.Signature({
        "full": In(1),
        "t": Out(range(n_frames)),
        "m": Out(range(n_mels)),
        "en": Out(1),
        "feat": In(shape_of(feat_fmt)),
        "snr": In(shape_of(snr_fmt)),
        "sum": In(signed(sum_w)),
        "sq": In(unsigned(sq_w)),
        "release": Out(1),
    })


class FeatureBuffer(wiring.Component):
    """Stores a clip's features and SNR values; Σx and Σx² per band; random-access reads."""

    def __init__(self, *, feat_fmt: Fmt, n_frames: int = 101, n_mels: int = 40,
                 snr_fmt: Fmt = SNR_FMT, n_banks: int = 2):
        if n_banks not in (1, 2):
            raise ValueError("n_banks must be 1 or 2")
        self.feat_fmt, self.snr_fmt = feat_fmt, snr_fmt
        self.n_frames, self.n_mels, self.n_banks = n_frames, n_mels, n_banks
        self.sum_width, self.sq_width = stat_widths(feat_fmt, n_frames)
        super().__init__({
            "i_feat": In(frame_stream(shape_of(feat_fmt))),
            "i_snr": In(frame_stream(shape_of(snr_fmt))),
            "clip_start": In(1),
            "rd": In(FeatureReadSignature(n_frames=n_frames, n_mels=n_mels, feat_fmt=feat_fmt,
                                          snr_fmt=snr_fmt)),
        })

    def elaborate(self, platform):
        m = Module()
        T, n, B = self.n_frames, self.n_mels, self.n_banks
        words = T * n
        aw = max(1, (words - 1).bit_length())
        mb = max(1, (n - 1).bit_length())

        def bank_addr(offset, bank, width):
            return Cat(offset[:width], bank) if B == 2 else offset[:width]

        depth = (B << aw) if B == 2 else words
        sdepth = (B << mb) if B == 2 else n
        feat_mem = Memory(shape=shape_of(self.feat_fmt), depth=depth, init=[])
        snr_mem = Memory(shape=shape_of(self.snr_fmt), depth=depth, init=[])
        sum_mem = Memory(shape=signed(self.sum_width), depth=sdepth, init=[])
        sq_mem = Memory(shape=unsigned(self.sq_width), depth=sdepth, init=[])
        m.submodules.feat_mem, m.submodules.snr_mem = feat_mem, snr_mem
        m.submodules.sum_mem, m.submodules.sq_mem = sum_mem, sq_mem
        fw, fr = feat_mem.write_port(), feat_mem.read_port()
        sw, sr = snr_mem.write_port(), snr_mem.read_port()
        sumw, sumr_w, sumr_r = sum_mem.write_port(), sum_mem.read_port(), sum_mem.read_port()
        sqw, sqr_w, sqr_r = sq_mem.write_port(), sq_mem.read_port(), sq_mem.read_port()

        full = Signal(B)
        wbank, rbank = Signal(), Signal()

        # ---- writers: one per stream, with (frame, band, linear address) counters
        def writer(name, stream, wport):
            t = Signal(range(T), name=f"{name}_t")
            mm = Signal(range(n), name=f"{name}_m")
            addr = Signal(range(words), name=f"{name}_addr")
            done = Signal(name=f"{name}_done")
            take = Signal(name=f"{name}_take")
            m.d.comb += [stream.ready.eq(~done & ~full.bit_select(wbank, 1)),
                         take.eq(stream.valid & stream.ready),
                         wport.addr.eq(bank_addr(addr, wbank, aw)),
                         wport.data.eq(stream.payload.data), wport.en.eq(take)]
            with m.If(take):
                m.d.sync += [addr.eq(addr + 1), mm.eq(Mux(mm == n - 1, 0, mm + 1))]
                with m.If(mm == n - 1):
                    m.d.sync += t.eq(t + 1)
                    with m.If(t == T - 1):
                        m.d.sync += [done.eq(1), t.eq(0), addr.eq(0)]
            return t, mm, addr, done, take

        ft, fm, faddr, fdone, ftake = writer("feat", self.i_feat, fw)
        st, sm, saddr, sdone, _stake = writer("snr", self.i_snr, sw)

        # ---- statistics: read-modify-write per accepted feature (band m recurs n values later)
        x = self.i_feat.payload.data
        m.d.comb += [sumr_w.addr.eq(bank_addr(fm, wbank, mb)),
                     sqr_w.addr.eq(bank_addr(fm, wbank, mb))]
        pv, px, pm, pfirst = Signal(), Signal.like(x), Signal(range(n)), Signal()
        m.d.sync += pv.eq(ftake)
        with m.If(ftake):
            m.d.sync += [px.eq(x), pm.eq(fm), pfirst.eq(ft == 0)]
        sq = px * px
        m.d.comb += [
            sumw.addr.eq(bank_addr(pm, wbank, mb)), sqw.addr.eq(bank_addr(pm, wbank, mb)),
            sumw.data.eq(Mux(pfirst, 0, sumr_w.data) + px),
            sqw.data.eq(Mux(pfirst, 0, sqr_w.data) + sq),
            sumw.en.eq(pv), sqw.en.eq(pv),
        ]

        # ---- clip complete → hand the bank over
        with m.If(fdone & sdone & ~pv):
            m.d.sync += [fdone.eq(0), sdone.eq(0), full.bit_select(wbank, 1).eq(1)]
            if B == 2:
                m.d.sync += wbank.eq(~wbank)
        with m.If(self.clip_start):
            m.d.sync += [fdone.eq(0), sdone.eq(0), ft.eq(0), fm.eq(0), faddr.eq(0),
                         st.eq(0), sm.eq(0), saddr.eq(0), pv.eq(0)]

        # ---- read side
        rd = self.rd
        m.d.comb += rd.full.eq(full.bit_select(rbank, 1))
        with m.If(rd.release & rd.full):
            m.d.sync += full.bit_select(rbank, 1).eq(0)
            if B == 2:
                m.d.sync += rbank.eq(~rbank)
        raddr = Signal(range(words))
        # t·n as shifted copies of t (one per set bit of n: 2 for n = 40), not a multiplier
        m.d.comb += raddr.eq(sum(rd.t << k for k in range(n.bit_length()) if (n >> k) & 1) + rd.m)
        for port in (fr, sr):
            m.d.comb += [port.addr.eq(bank_addr(raddr, rbank, aw)), port.en.eq(rd.en)]
        for port in (sumr_r, sqr_r):
            m.d.comb += [port.addr.eq(bank_addr(rd.m, rbank, mb)), port.en.eq(rd.en)]
        m.d.comb += [rd.feat.eq(fr.data), rd.snr.eq(sr.data),
                     rd.sum.eq(sumr_r.data), rd.sq.eq(sqr_r.data)]
        return m


class FeatureStreamer(wiring.Component):
    """Reads each complete clip of a :class:`FeatureBuffer` out as streams, then releases it.

    ``rd`` connects to the buffer's ``rd`` (``wiring.connect(m, streamer.rd, buffer.rd)``).
    Per clip: ``stats`` carries bands 0…n_mels−1 (:func:`stats_layout`); then for t = 0…T−1
    ``feat`` and ``snr`` carry frame t (``first`` on band 0, ``last`` on the last band). Each
    element is offered on both ``feat`` and ``snr``; the next is read once both have taken it.
    After the last frame, ``rd.release`` is pulsed and the next full clip is streamed.
    """

    def __init__(self, *, feat_fmt: Fmt, n_frames: int = 101, n_mels: int = 40,
                 snr_fmt: Fmt = SNR_FMT):
        self.n_frames, self.n_mels = n_frames, n_mels
        super().__init__({
            "rd": Out(FeatureReadSignature(n_frames=n_frames, n_mels=n_mels, feat_fmt=feat_fmt,
                                           snr_fmt=snr_fmt)),
            "stats": Out(stream.Signature(stats_layout(feat_fmt, n_frames))),
            "feat": Out(frame_stream(shape_of(feat_fmt))),
            "snr": Out(frame_stream(shape_of(snr_fmt))),
        })

    def elaborate(self, platform):
        m = Module()
        T, n = self.n_frames, self.n_mels
        rd = self.rd
        t, band = Signal(range(T)), Signal(range(n))
        took_f, took_s = Signal(), Signal()
        m.d.comb += [rd.t.eq(t), rd.m.eq(band),
                     self.stats.payload.s1.eq(rd.sum), self.stats.payload.s2.eq(rd.sq)]
        for st, src in ((self.feat, rd.feat), (self.snr, rd.snr)):
            m.d.comb += [st.payload.data.eq(src), st.payload.first.eq(band == 0),
                         st.payload.last.eq(band == n - 1)]
        done_f = took_f | self.feat.ready
        done_s = took_s | self.snr.ready
        with m.FSM():
            with m.State("IDLE"), m.If(rd.full):
                m.d.sync += [t.eq(0), band.eq(0)]
                m.next = "S_READ"
            with m.State("S_READ"):
                m.d.comb += rd.en.eq(1)
                m.next = "S_OUT"
            with m.State("S_OUT"):
                m.d.comb += self.stats.valid.eq(1)
                with m.If(self.stats.ready):
                    m.d.sync += band.eq(Mux(band == n - 1, 0, band + 1))
                    with m.If(band == n - 1):
                        m.next = "F_READ"
                    with m.Else():
                        m.next = "S_READ"
            with m.State("F_READ"):
                m.d.comb += rd.en.eq(1)
                m.d.sync += [took_f.eq(0), took_s.eq(0)]
                m.next = "F_OUT"
            with m.State("F_OUT"):
                m.d.comb += [self.feat.valid.eq(~took_f), self.snr.valid.eq(~took_s)]
                m.d.sync += [took_f.eq(done_f), took_s.eq(done_s)]
                with m.If(done_f & done_s):
                    m.d.sync += band.eq(Mux(band == n - 1, 0, band + 1))
                    with m.If(band == n - 1):
                        m.d.sync += t.eq(Mux(t == T - 1, 0, t + 1))
                        with m.If(t == T - 1):
                            m.next = "RELEASE"
                        with m.Else():
                            m.next = "F_READ"
                    with m.Else():
                        m.next = "F_READ"
            with m.State("RELEASE"):
                m.d.comb += rd.release.eq(1)
                m.next = "IDLE"
        return m
