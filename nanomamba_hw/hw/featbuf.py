"""Feature buffer: a clip's features and SNR values, written by the front end and read by the
back end.

The instance norm (``fixed.norm.normalize`` over the T frames of a band) needs the whole clip
before the first frame can be normalised, so the front end's features and the SNR estimator's
values are stored here; the back end reads them in any order (its NormUnit sums each band
over the clip, then every stage reads frame by frame).

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
``done`` (strobe) marks the clip complete: the bank goes to the read side, and ``wr_ok`` is
low while no bank is free for writing.

Read side: ``rd`` (:func:`FeatureReadSignature`, seen from the back end)
------------------------------------------------------------------------
==============  ======  ========================================================================
member          dir.    meaning
==============  ======  ========================================================================
``full``        → BE    a complete clip is readable; stays high until ``release``
``t``, ``m``    ← BE    frame 0…n_frames−1 and band 0…n_mels−1 to read
``en``          ← BE    read strobe: ``feat`` and ``snr`` show (t, m) the next cycle, and hold
                        until the next ``en`` (synchronous block-RAM reads)
``feat``        → BE    feature x[t, m] (``FEAT_FMTS[kind]``)
``snr``         → BE    SNR[t, m] (``SNR_FMT``)
``release``     ← BE    strobe (while ``full``): the back end is done with this clip
==============  ======  ========================================================================

Reads may be in any order and repeated (random access).

Banks. ``n_banks=1`` (default): while a complete clip waits for the back end, the writer is
held off (``wr_ok`` low), so the front end — and behind it the framer, whose 1,024-sample
buffer absorbs 64 ms of input — waits for ``release`` (after the back end's last frame).
The back end's pass takes a few ms;
one read port then serves both sides. ``n_banks=2`` doubles the memory (and gives the engine
its own read port) so the front end can run on into the next clip.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed.ops import Fmt
from ..fixed.snr import SNR_FMT
from .common import shape_of

__all__ = ["FeatCode", "FeatureBuffer", "FeatureReadSignature"]

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


def FeatureReadSignature(*, n_frames: int = 101, n_mels: int = 40, feat_fmt: Fmt,
                         snr_fmt: Fmt = SNR_FMT) -> wiring.Signature:
    """The feature buffer's read interface, seen from the back end (Out = driven by it)."""
    return wiring.Signature({
        "full": In(1),
        "t": Out(range(n_frames)),
        "m": Out(range(n_mels)),
        "en": Out(1),
        "feat": In(shape_of(feat_fmt)),
        "snr": In(shape_of(snr_fmt)),
        "release": Out(1),
    })


class FeatureBuffer(wiring.Component):
    """Stores a clip's features and SNR values; random-access reads.

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
        super().__init__({
            "wr_ok": Out(1),
            "done": In(1),
            "addr": In(range(self.words)),
            "wdata": In(self.word_bits),
            "we": In(1),
            "re": In(1),
            "rdata": Out(self.word_bits),
            "rd": In(FeatureReadSignature(n_frames=n_frames, n_mels=n_mels, feat_fmt=feat_fmt,
                                          snr_fmt=snr_fmt)),
        })

    def elaborate(self, platform):
        m = Module()
        n, B, W = self.n_mels, self.n_banks, self.word_bits
        aw = max(1, (self.words - 1).bit_length())
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

        # ---- banks: `done` hands the bank over (three cycles later)
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
