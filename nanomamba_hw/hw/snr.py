"""SNR estimator: 257 magnitudes per frame in, 40 SNR values out, = ``fixed.snr.snr_bands``.

What it computes (per bin f, frame t; see ``fixed/snr.py``)
-----------------------------------------------------------
``n0 = round(Σ_{t<5} |X| · FIVE_RECIP / 2**16)``; noise = n0 (static) or the EMA
``nf += round(a·(8|X| − nf) / 2**16)`` (``a = γ`` if ``8|X| > nf`` else β, nf starting at n0)
clamped below by ``round(n0/2)``; ``r = exp2(log2 |X| − log2(ns·noise + EPS_DEN))`` saturated
in ``RATIO_FMT`` (0 where ``|X| = 0``); ``snr = tanh_table(sat(round(W·r / 2**18)))``.

How
---
Memories (block RAM unless tiny): ``store`` 5×257 magnitudes (frames 0–4 of the clip; later
frames reuse slot 0), ``n0`` 257 entries, ``nf`` 257 entries (EMA mode only), ``ratio`` 257
entries. Units: one :class:`~nanomamba_hw.hw.funcs.Log2Unit` shared by numerator and
denominator (two inputs per bin), one :class:`~nanomamba_hw.hw.funcs.Exp2Unit`, the
:class:`~nanomamba_hw.hw.mel.SparseMAC` for the mel projection and a
:class:`~nanomamba_hw.hw.funcs.PWLUnit` for ``TANH_TABLE``. Inside, the units never stall
(their outputs go to registers or RAM), so each pass is a fixed-latency pipeline; only the
MAC → tanh → ``o`` path carries backpressure.

Sequence per clip of ``n_frames`` frames:

1. LOAD frames 0…4 into store slots 0…4 (one magnitude per cycle); nothing is emitted yet.
2. INIT: per bin, read the five stored magnitudes, sum, scale → ``n0`` (and ``nf = n0``):
   5·257 + 2 cycles.
3. For t = 0…4 (replay from the store), then for each later frame as it is LOADed into slot 0:
   RATIO (two cycles per bin: the log2 unit takes |X| and then the denominator;
   EMA state read and written back in the same pass; 514 + ~14 cycles) then MAC
   (454 + ~8 cycles, the tanh of each band leaving on ``o``; the next LOAD/RATIO may start as
   soon as the MAC has issued its last ratio read).
4. After frame ``n_frames − 1`` the estimator starts the next clip by itself (frame counter
   back to 0: n0 and the EMA state are rebuilt from the new clip's first five frames). A
   synchronous reset (``ResetInserter``) abandons a partial clip.

Widths follow from the 24-bit magnitude: ``n0`` and ``nf`` are NOISE_FMT's 28 bits (a
full-scale u24 magnitude times FIVE_RECIP needs the 28th), the denominator 44 bits.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed import funcs as F
from ..fixed import mel as fmel
from ..fixed import snr as fsnr
from ..fixed.stft import MAG_FMT, N_BINS
from .common import frame_stream, shape_of
from .funcs import LOG_OUT_WIDTH, Exp2Unit, Log2Unit, PWLUnit, as_signed_value
from .mel import SparseMAC

__all__ = ["SNREstimator"]



class SNREstimator(wiring.Component):
    """|X| frames (257 × u24.15) → SNR frames (40 × ``SNR_FMT``), bit-exact with
    ``fixed.snr.snr_bands(params, fb, mag)`` for clips of ``n_frames`` (≥ 5) frames."""

    def __init__(self, *, params: fsnr.SNRParams, fb: fmel.SparseFilterbank | None = None,
                 n_frames: int = 101):
        if params.mode not in ("static", "ema"):
            raise ValueError(f"unknown SNR mode {params.mode!r}")
        if n_frames < fsnr.STATIC_FRAMES:
            raise ValueError(f"a clip needs at least {fsnr.STATIC_FRAMES} frames")
        self.p = params
        self.fb = fb if fb is not None else fmel.SparseFilterbank.build()
        self.n_frames = n_frames
        self.n_bins = self.fb.dense.shape[1]
        if self.n_bins != N_BINS:
            raise ValueError(f"filterbank has {self.n_bins} bins, the STFT gives {N_BINS}")
        mag_max = (1 << MAG_FMT.bits) - 1
        sum5_max = fsnr.STATIC_FRAMES * mag_max
        self.sum_width = sum5_max.bit_length()
        n0_max = (sum5_max * fsnr.FIVE_RECIP + (1 << (fsnr.FIVE_SHIFT - 1))) >> fsnr.FIVE_SHIFT
        self.noise_width = max(n0_max, mag_max << (fsnr.NOISE_FMT.frac - MAG_FMT.frac)).bit_length()
        den_max = params.noise_scale * ((1 << self.noise_width) - 1) + fsnr.EPS_DEN
        self.den_width = den_max.bit_length()
        super().__init__({
            "i": In(frame_stream(shape_of(MAG_FMT))),
            "o": Out(frame_stream(shape_of(fsnr.SNR_FMT))),
        })

    def elaborate(self, platform):
        m = Module()
        p, n = self.p, self.n_bins
        S = fsnr.STATIC_FRAMES
        ema = p.mode == "ema"
        NW, MW = self.noise_width, MAG_FMT.bits
        up = fsnr.NOISE_FMT.frac - MAG_FMT.frac          # |X| → noise scale (×8)

        # ---- memories
        store = Memory(shape=unsigned(MW), depth=S * n, init=[])
        n0m = Memory(shape=unsigned(NW), depth=n, init=[])
        ratio = Memory(shape=shape_of(fsnr.RATIO_FMT), depth=n, init=[])
        m.submodules.store, m.submodules.n0, m.submodules.ratio = store, n0m, ratio
        st_w, st_r = store.write_port(), store.read_port()
        n0_w, n0_r = n0m.write_port(), n0m.read_port()
        ra_w, ra_r = ratio.write_port(), ratio.read_port()
        if ema:
            nfm = Memory(shape=unsigned(NW), depth=n, init=[])
            m.submodules.nf = nfm
            nf_w, nf_r = nfm.write_port(), nfm.read_port()

        # ---- units
        m.submodules.log2 = log2 = Log2Unit(in_width=max(MW, self.den_width))
        # y = log2|X| − log2 den + (DEN_FRAC − MAG_FRAC)·2**16 (both logs taken with in_frac 0)
        y_hi = (MW + fsnr.DEN_FRAC - MAG_FMT.frac) << F.LOG_FRAC
        y_lo = -(self.den_width << F.LOG_FRAC)
        ew = max(y_hi.bit_length(), (-y_lo).bit_length()) + 2
        m.submodules.exp2 = exp2 = Exp2Unit(in_width=ew, out_fmt=fsnr.RATIO_FMT)
        m.submodules.mac = mac = SparseMAC(
            fb=self.fb, in_width=fsnr.RATIO_FMT.bits,
            shift=fsnr.RATIO_FMT.frac + fmel.MEL_W_FMT.frac - fsnr.SNR_MEL_FMT.frac,
            out_fmt=fsnr.SNR_MEL_FMT)
        m.submodules.tanh = tanh = PWLUnit(fsnr.TANH_TABLE)
        m.d.comb += [log2.o.ready.eq(1), exp2.o.ready.eq(1)]
        m.d.comb += [ra_r.addr.eq(mac.rd_addr), ra_r.en.eq(mac.rd_en), mac.rd_data.eq(ra_r.data)]
        # MAC → tanh → o (band counter restores first/last after the table)
        m.d.comb += [tanh.i.valid.eq(mac.o.valid), tanh.i.payload.eq(mac.o.payload.data),
                     mac.o.ready.eq(tanh.i.ready)]
        n_bands = mac.n_bands
        oband = Signal(range(n_bands))
        m.d.comb += [self.o.valid.eq(tanh.o.valid), tanh.o.ready.eq(self.o.ready),
                     self.o.payload.data.eq(tanh.o.payload),
                     self.o.payload.first.eq(oband == 0),
                     self.o.payload.last.eq(oband == n_bands - 1)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += oband.eq(Mux(oband == n_bands - 1, 0, oband + 1))

        # ---- one multiplier for three uses that never meet: sum5·FIVE_RECIP (INIT data cycle),
        # a·(8|X| − nf) (RATIO stage B) and ns·noise (stage C, the cycle after B; bins are issued
        # every other cycle so B and C alternate)
        mul_a = Signal(signed(NW + 2))
        mul_b = Signal(unsigned(max(fsnr.COEF_FMT.bits, fsnr.NS_FMT.bits,
                                    fsnr.FIVE_RECIP.bit_length())))
        prod = Signal(signed(mul_a.shape().width + mul_b.shape().width + 1))
        m.d.comb += prod.eq(mul_a * mul_b)

        # ---- frame bookkeeping
        t = Signal(range(self.n_frames))          # frame being loaded (LOAD) / processed
        slot_base = Signal(range(S * n))          # store address of the frame's bin 0
        replay = Signal()                         # processing frames 0..4 from the store

        # LOAD: magnitudes into store[slot_base + bin]
        cnt = Signal(range(n))
        laddr = Mux(self.i.payload.first, 0, cnt)
        m.d.comb += [st_w.addr.eq(slot_base + laddr), st_w.data.eq(self.i.payload.data)]

        # INIT: per bin, Σ of the five stored frames → n0 (and nf)
        i_f = Signal(range(n))
        i_k = Signal(range(S))
        i_addr = Signal(range(S * n))
        i_go = Signal()
        iv, ik, i_fd = Signal(), Signal(range(S)), Signal(range(n))
        acc5 = Signal(unsigned(self.sum_width))
        sum5 = Signal(unsigned(self.sum_width))
        n0_val = Signal(unsigned(NW))
        m.d.comb += [sum5.eq(Mux(ik == 0, 0, acc5) + st_r.data),
                     n0_val.eq((prod + (1 << (fsnr.FIVE_SHIFT - 1))) >> fsnr.FIVE_SHIFT)]
        m.d.sync += [iv.eq(i_go), ik.eq(i_k), i_fd.eq(i_f)]
        with m.If(iv):
            m.d.comb += [mul_a.eq(sum5), mul_b.eq(fsnr.FIVE_RECIP)]
        with m.If(iv):
            m.d.sync += acc5.eq(sum5)
            with m.If(ik == S - 1):
                m.d.comb += [n0_w.en.eq(1), n0_w.addr.eq(i_fd), n0_w.data.eq(n0_val)]
                if ema:
                    m.d.comb += [nf_w.en.eq(1), nf_w.addr.eq(i_fd), nf_w.data.eq(n0_val)]

        # RATIO: stage A issues reads (every other cycle), B: EMA update, C: denominator,
        # D: two log2 inputs, then the collector forms y for exp2, exp2 → ratio RAM.
        r_f = Signal(range(n + 1))
        r_ph = Signal()
        r_issue = Signal()
        vB, fB = Signal(), Signal(range(n))
        vC, magC, noiseC = Signal(), Signal(unsigned(MW)), Signal(unsigned(NW))
        vD1, vD2 = Signal(), Signal()
        magD, denD = Signal(unsigned(MW)), Signal(unsigned(self.den_width))
        m.d.sync += [vB.eq(r_issue), vC.eq(vB), vD1.eq(vC), vD2.eq(vD1)]
        with m.If(r_issue):
            m.d.sync += fB.eq(r_f)
        magB = st_r.data
        n0B = n0_r.data
        if ema:
            nfB = nf_r.data
            x8 = Signal(unsigned(MW + up))
            m.d.comb += x8.eq(magB << up)
            a = Mux(x8 > nfB, p.gamma, p.beta)
            diff = Signal(signed(NW + 2))
            m.d.comb += diff.eq(as_signed_value(x8) - as_signed_value(nfB))
            nf_new = Signal(unsigned(NW))
            with m.If(vB):
                m.d.comb += [mul_a.eq(diff), mul_b.eq(a)]
            m.d.comb += nf_new.eq(nfB + ((prod + (1 << (fsnr.COEF_FMT.frac - 1)))
                                         >> fsnr.COEF_FMT.frac))
            half = (n0B + 1) >> 1
            with m.If(vB):
                m.d.comb += [nf_w.en.eq(1), nf_w.addr.eq(fB), nf_w.data.eq(nf_new)]
            noiseB = Mux(nf_new > half, nf_new, half)
        else:
            noiseB = n0B
        with m.If(vB):
            m.d.sync += [magC.eq(magB), noiseC.eq(noiseB)]
        with m.If(vC):
            m.d.comb += [mul_a.eq(noiseC), mul_b.eq(p.noise_scale)]
            m.d.sync += [magD.eq(magC), denD.eq(prod + fsnr.EPS_DEN)]
        m.d.comb += [log2.i.valid.eq(vD1 | vD2), log2.i.payload.eq(Mux(vD1, magD, denD))]
        # collector: log2 outputs alternate log2|X|, log2 den
        c_ph = Signal()
        lmag = Signal(signed(LOG_OUT_WIDTH))
        with m.If(log2.o.valid):
            m.d.sync += c_ph.eq(~c_ph)
            with m.If(~c_ph):
                m.d.sync += lmag.eq(log2.o.payload)
        y = Signal(signed(ew))
        offset = (fsnr.DEN_FRAC - MAG_FMT.frac) << F.LOG_FRAC
        m.d.comb += y.eq(Mux(lmag == F.LOG2.zero_value, -(1 << (ew - 1)),
                             lmag - log2.o.payload + offset))
        m.d.comb += [exp2.i.valid.eq(log2.o.valid & c_ph), exp2.i.payload.eq(y)]
        w_f = Signal(range(n + 1))
        m.d.comb += [ra_w.addr.eq(w_f), ra_w.data.eq(exp2.o.payload), ra_w.en.eq(exp2.o.valid)]
        with m.If(exp2.o.valid):
            m.d.sync += w_f.eq(w_f + 1)

        # ---- read-port address muxes (INIT or RATIO own the store read port)
        with m.If(r_issue):
            m.d.comb += st_r.addr.eq(slot_base + r_f)
        with m.Else():
            m.d.comb += st_r.addr.eq(i_addr)
        m.d.comb += n0_r.addr.eq(r_f)
        if ema:
            m.d.comb += nf_r.addr.eq(r_f)

        def next_frame():
            """After a frame's MAC has been started: where the sequence goes next."""
            with m.If(replay & (t != S - 1)):
                m.d.sync += [t.eq(t + 1), slot_base.eq(slot_base + n)]
                m.next = "RATIO"
            with m.Elif(replay):
                m.d.sync += [replay.eq(0), t.eq(S % self.n_frames), slot_base.eq(0)]
                m.next = "LOAD"
            with m.Elif(t == self.n_frames - 1):
                m.d.sync += [t.eq(0), slot_base.eq(0)]
                m.next = "LOAD"
            with m.Else():
                m.d.sync += t.eq(t + 1)
                m.next = "LOAD"

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += st_w.en.eq(1)
                    m.d.sync += cnt.eq(laddr + 1)
                    with m.If(laddr == n - 1):
                        m.d.sync += cnt.eq(0)
                        with m.If(t < S - 1):
                            m.d.sync += [t.eq(t + 1), slot_base.eq(slot_base + n)]
                        with m.Elif(t == S - 1):
                            m.d.sync += [i_f.eq(0), i_k.eq(0), i_addr.eq(0)]
                            m.next = "INIT"
                        with m.Else():
                            m.d.sync += [r_f.eq(0), r_ph.eq(0), w_f.eq(0)]
                            m.next = "RATIO"
            with m.State("INIT"):
                m.d.comb += i_go.eq(1)
                with m.If(i_k == S - 1):
                    m.d.sync += [i_k.eq(0), i_f.eq(i_f + 1), i_addr.eq(i_f + 1)]
                    with m.If(i_f == n - 1):
                        m.next = "INIT_END"
                with m.Else():
                    m.d.sync += [i_k.eq(i_k + 1), i_addr.eq(i_addr + n)]
            with m.State("INIT_END"):
                # the last n0 write lands this cycle
                m.d.sync += [t.eq(0), slot_base.eq(0), replay.eq(1),
                             r_f.eq(0), r_ph.eq(0), w_f.eq(0)]
                m.next = "RATIO"
            with m.State("RATIO"):
                with m.If(r_f != n):
                    m.d.sync += r_ph.eq(~r_ph)
                    with m.If(~r_ph):
                        m.d.comb += r_issue.eq(1)
                        m.d.sync += r_f.eq(r_f + 1)
                with m.If(w_f == n):
                    m.next = "MAC"
            with m.State("MAC"):
                m.d.comb += mac.start.eq(1)
                with m.If(~mac.busy):
                    m.next = "MAC_WAIT"
            with m.State("MAC_WAIT"), m.If(~mac.busy):
                m.d.sync += [r_f.eq(0), r_ph.eq(0), w_f.eq(0)]
                next_frame()
        return m
