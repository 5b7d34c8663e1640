"""Feature buffer: a clip's features and SNR values, and the per-band Σx, Σx² of the features.

The instance norm (``fixed.norm.normalize`` over the T frames of a band) needs the statistics
of the whole clip before the first frame can be normalised, so the front end's features and
the SNR estimator's values are stored here while the sums accumulate exactly:
``Σx`` (signed) and ``Σx²`` (unsigned) per band, over the clip's ``n_frames`` frames; their
widths come from the analytic bound ``n_frames · 2**(2(bits−1))`` of the feature format, so
they never wrap.

Storage
-------
One word per (frame t, band m) at ``t · n_mels + m``: the feature, stored in
:class:`FeatCode` form (``bits`` bits of ``x − offset``), beside the SNR value (16 bits). The
front ends produce features whose range is known exactly (DualPCEN ≥ 0, log-mel within
``ln(1e-8) … ln(4096)``), so 15 bits hold them and a word is 31 bits: 4K × 31 is three RAMB36
(4K × 9 each) plus one RAMB18 (4K × 4) — the memory is split that way explicitly, yosys would
otherwise use four RAMB36. A 16-bit code (32-bit words, four RAMB36) is the fallback when
the range cannot be shown.

Write side (driven by the spectral engine, :class:`~nanomamba_hw.hw.spectral.Spectral`)
-------------------------------------------------------------------------------------
A plain memory port on the bank being written: ``addr``, ``wdata``, ``we``; ``re`` reads
``addr`` (``rdata`` the next cycle). The engine writes whole words: a feature or an SNR value
that arrives second is merged with the word read back (read-modify-write), and it also uses
words of frames not yet written as scratch (the SNR estimator's five look-ahead frames).
``stat_en`` with ``stat_m``, ``stat_x``, ``stat_first`` (frame 0) adds a final feature to the
statistics; ``done`` (strobe) marks the clip complete: the bank goes to the read side, and
``wr_ok`` is low while no bank is free for writing.

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

Reads may be in any order and repeated (random access).

Streamed read-out: :class:`FeatureStreamer` turns ``rd`` into three streams for a back end
that wants them — ``stats`` (``n_mels`` entries ``{s1: Σx, s2: Σx²}``, :func:`stats_layout`),
then frames t = 0…T−1 on ``feat`` and ``snr`` (``frame_stream``, ``n_mels`` values each; the two
streams advance independently within an element, so either consumer may stall), then one
``release`` strobe. Two cycles per element (≈ 8.2k cycles per clip); the back end is far slower.

Banks. ``n_banks=1`` (default): while a complete clip waits for the back end, the writer is
held off (``wr_ok`` low), so the front end — and behind it the framer, whose 1,024-sample
buffer absorbs 64 ms of input — waits for ``release``. The back end's pass takes a few ms;
one read port then serves both sides. ``n_banks=2`` doubles the memory (and gives the engine
its own read port) so the front end can run on into the next clip.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed.ops import Fmt
from ..fixed.snr import SNR_FMT
from .common import frame_stream, shape_of

__all__ = ["FeatCode", "FeatureBuffer", "FeatureReadSignature", "FeatureStreamer", "stat_widths",
           "stats_layout"]

BRAM_COLUMN = 27            # 4K × 27 = three RAMB36 (4K × 9); the rest goes to a 4K × 4 RAMB18


@dataclass(frozen=True)
class FeatCode:
    """A feature stored in ``bits`` bits as ``x − offset`` (unsigned), or two's complement
    (``signed``, offset 0)."""

    bits: int
    offset: int = 0
    signed: bool = False

    @classmethod
    def full(cls, fmt: Fmt) -> "FeatCode":
        return cls(fmt.bits, 0, fmt.signed)

    @classmethod
    def for_range(cls, lo: int, hi: int, fmt: Fmt, bits: int = 15,
                  align: int = 12) -> "FeatCode":
        """The narrowest code for features known to lie in [lo, hi]: ``bits`` bits with an
        offset that is a multiple of 2**align (so decoding adds only to the top bits), or the
        full format if the range does not fit."""
        if 0 <= lo and hi < 1 << bits:
            return cls(bits)
        off = (lo >> align) << align
        if hi - off < 1 << bits:
            return cls(bits, off)
        return cls.full(fmt)

    def encode(self, x):
        return (x - self.offset)[:self.bits] if self.offset else x[:self.bits]

    def decode(self, v):
        if self.signed:
            return v.as_signed()
        return v + self.offset if self.offset else v


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
    """Stores a clip's features and SNR values; Σx and Σx² per band; random-access reads.

    ``code`` (default: the feature format itself) says how features are stored; ``min_words``
    makes the memory at least that deep (the engine's scratch use on short test clips).
    """

    def __init__(self, *, feat_fmt: Fmt, n_frames: int = 101, n_mels: int = 40,
                 snr_fmt: Fmt = SNR_FMT, n_banks: int = 1, code: FeatCode | None = None,
                 min_words: int = 0):
        if n_banks not in (1, 2):
            raise ValueError("n_banks must be 1 or 2")
        self.feat_fmt, self.snr_fmt = feat_fmt, snr_fmt
        self.n_frames, self.n_mels, self.n_banks = n_frames, n_mels, n_banks
        self.code = code or FeatCode.full(feat_fmt)
        self.word_bits = self.code.bits + snr_fmt.bits
        self.words = max(n_frames * n_mels, min_words)
        self.sum_width, self.sq_width = stat_widths(feat_fmt, n_frames)
        super().__init__({
            "wr_ok": Out(1),
            "done": In(1),
            "addr": In(range(self.words)),
            "wdata": In(self.word_bits),
            "we": In(1),
            "re": In(1),
            "rdata": Out(self.word_bits),
            "stat_en": In(1),
            "stat_m": In(range(n_mels)),
            "stat_x": In(shape_of(feat_fmt)),
            "stat_first": In(1),
            "rd": In(FeatureReadSignature(n_frames=n_frames, n_mels=n_mels, feat_fmt=feat_fmt,
                                          snr_fmt=snr_fmt)),
        })

    def elaborate(self, platform):
        m = Module()
        n, B, W = self.n_mels, self.n_banks, self.word_bits
        aw = max(1, (self.words - 1).bit_length())
        mb = max(1, (n - 1).bit_length())
        rd = self.rd

        full = Signal(B)
        wbank, rbank = Signal(), Signal()

        def bank(addr, bk, width):
            return Cat(addr[:width], bk) if B == 2 else addr

        # ---- features + SNR, in BRAM-shaped columns
        depth = (2 << aw) if B == 2 else self.words
        raddr = Signal(range(self.words))
        # t·n as shifted copies of t (one per set bit of n: 2 for n = 40), not a multiplier
        m.d.comb += raddr.eq(sum(rd.t << k for k in range(n.bit_length()) if (n >> k) & 1)
                             + rd.m)
        cols = [(0, min(BRAM_COLUMN, W))] + ([(BRAM_COLUMN, W)] if W > BRAM_COLUMN else [])
        rd_word, eng_word = [], []
        for k, (lo, hi) in enumerate(cols):
            mem = Memory(shape=unsigned(hi - lo), depth=depth, init=[],
                         attrs={"ram_style": "block"})
            m.submodules[f"words{k}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(bank(self.addr, wbank, aw)), wp.data.eq(self.wdata[lo:hi]),
                         wp.en.eq(self.we)]
            rp = mem.read_port(transparent_for=())
            if B == 1:      # one port: the back end's while a clip is full, else the engine's
                m.d.comb += [rp.addr.eq(Mux(full[0], raddr, self.addr)),
                             rp.en.eq(Mux(full[0], rd.en, self.re))]
                rd_word.append(rp.data)
                eng_word.append(rp.data)
            else:
                ep = mem.read_port(transparent_for=())
                m.d.comb += [rp.addr.eq(bank(raddr, rbank, aw)), rp.en.eq(rd.en),
                             ep.addr.eq(bank(self.addr, wbank, aw)), ep.en.eq(self.re)]
                rd_word.append(rp.data)
                eng_word.append(ep.data)
        rdw = Cat(*rd_word)
        m.d.comb += [self.rdata.eq(Cat(*eng_word)),
                     rd.feat.eq(self.code.decode(rdw[:self.code.bits])),
                     rd.snr.eq(rdw[self.code.bits:])]

        # ---- statistics: Σx in one adder, Σx² in a DSP48E1 (x·x + previous), LUT RAM
        sdepth = n * B if B == 1 else 2 << mb
        sum_mem = Memory(shape=signed(self.sum_width), depth=sdepth, init=[])
        sq_mem = Memory(shape=unsigned(self.sq_width), depth=sdepth, init=[])
        m.submodules.sum_mem, m.submodules.sq_mem = sum_mem, sq_mem
        sum_w, sq_w = sum_mem.write_port(), sq_mem.write_port()
        sidx = bank(self.stat_m, wbank, mb)
        ridx = bank(rd.m, rbank, mb)
        if B == 1:
            sum_r, sq_r = sum_mem.read_port(domain="comb"), sq_mem.read_port(domain="comb")
            m.d.comb += [sum_r.addr.eq(Mux(full[0], ridx, sidx)),
                         sq_r.addr.eq(Mux(full[0], ridx, sidx))]
            sum_rd, sq_rd = sum_r, sq_r
        else:
            sum_r, sq_r = sum_mem.read_port(domain="comb"), sq_mem.read_port(domain="comb")
            sum_rd, sq_rd = sum_mem.read_port(domain="comb"), sq_mem.read_port(domain="comb")
            m.d.comb += [sum_r.addr.eq(sidx), sq_r.addr.eq(sidx),
                         sum_rd.addr.eq(ridx), sq_rd.addr.eq(ridx)]
        x = self.stat_x
        m.d.comb += [sum_w.addr.eq(sidx), sum_w.en.eq(self.stat_en),
                     sum_w.data.eq(Mux(self.stat_first, 0, sum_r.data) + x)]
        x1, c1 = Signal.like(x), Signal(unsigned(self.sq_width))
        v1, v2 = Signal(), Signal()
        i1, i2 = Signal(sidx.shape()), Signal(sidx.shape())
        m.d.sync += [x1.eq(x), c1.eq(Mux(self.stat_first, 0, sq_r.data)), v1.eq(self.stat_en),
                     i1.eq(sidx), v2.eq(v1), i2.eq(i1)]
        p = Signal(unsigned(self.sq_width))
        m.d.sync += p.eq(x1 * x1 + c1)
        m.d.comb += [sq_w.addr.eq(i2), sq_w.data.eq(p), sq_w.en.eq(v2)]
        with m.If(rd.en):
            m.d.sync += [rd.sum.eq(sum_rd.data), rd.sq.eq(sq_rd.data)]

        # ---- banks: `done` hands the bank over once the statistics pipeline has drained
        done_d = Signal(3)
        m.d.sync += done_d.eq(Cat(self.done, done_d[:2]))
        m.d.comb += [self.wr_ok.eq(~full.bit_select(wbank, 1) & ~done_d.any()),
                     rd.full.eq(full.bit_select(rbank, 1))]
        with m.If(done_d[2]):
            m.d.sync += full.bit_select(wbank, 1).eq(1)
            if B == 2:
                m.d.sync += wbank.eq(~wbank)
        with m.If(rd.release & rd.full):
            m.d.sync += full.bit_select(rbank, 1).eq(0)
            if B == 2:
                m.d.sync += rbank.eq(~rbank)
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
