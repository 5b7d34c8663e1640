"""SNR estimator and mel accumulation, bin by bin: = ``fixed.snr.snr_bands`` and the mel sums
of ``fixed.mel.mel_spectrum``, inside the spectral engine (:mod:`nanomamba_hw.hw.spectral`).

What it computes (per bin f, frame t; see ``fixed/snr.py``)
-----------------------------------------------------------
``n0 = round(Σ_{t<5} |X| · FIVE_RECIP / 2**16)``; noise = n0 (static) or the EMA
``nf += round(a·(8|X| − nf) / 2**16)`` (``a = γ`` if ``8|X| > nf`` else β, nf starting at n0)
clamped below by ``round(n0/2)``; ``r = exp2(log2 |X| − log2(ns·noise + EPS_DEN))`` saturated
in ``RATIO_FMT`` (0 where ``|X| = 0``: log2 0 is ``zero_value``, so the difference is far below
the exp2 range and gives 0 by itself); ``snr = tanh_table(sat(round(W·r / 2**18)))``.

How: a bin pipeline with a fixed schedule
-----------------------------------------
A bin enters every ``II = 8`` cycles (slot boundary) and passes fixed stages; each shared
resource is used by a bin at a fixed offset, and the offsets of one resource differ modulo 8,
so bins overlap without conflicts (up to four in flight, 31 cycles from issue to the last
write). ``c_k`` = k cycles after the issue; the GMUL's result is there ``GMUL_LATENCY`` = 2
cycles after its issue, the band accumulators' two cycles after their input:

====  =========================================================================================
c0    accept |X| (or read it back from the feature buffer, replay); read the bin's weight
      (RAM B) and its state word 0 (RAM A: nf, or the running Σ during frames 0…4). A frame
      begins with its ``first`` element: elements offered before it are accepted and dropped
      (the rest of a frame cut by ``clip_start``, which resets the engine)
c1    GMUL ``a·(8|X| − nf) + nf·2¹⁶ + 2¹⁵`` (EMA: nf′ = P >> 16) or ``|X|·2¹⁶ + Σ·2¹⁶ + 2¹⁵``
      (frames 0…4: Σ′ = P >> 16); FU log2 |X|; MAC mel lower band ``w·|X|``; store |X|
      (frames 0…4); read state word 1 (n0 + 1)
c2    MAC mel upper band ``(1 − w)·|X|``; state word 1 arrives (held)
c3    write nf′ / Σ′; noise = max(nf′, (n0 + 1) >> 1); a closing mel band → saturated mel
      value to RAM B
c4    GMUL ``ns·noise + EPS_DEN`` = den
c6    FU log2 den
c12   FU exp2(log2 |X| − log2 den) → ratio (saturated at RATIO_FMT's top)
c21   MAC SNR lower band ``w·r``;  c22: upper band ``(1 − w)·r``; a closing band → snr_mel
c24   FU tanh table;  c29/c30: SNR value into the feature buffer (read-modify-write)
====  =========================================================================================

Frames 0…4 (the look-ahead): mel only, |X| is kept in the feature buffer's words of later
frames (scratch) and Σ|X| per bin in the state RAM. After frame 4 (and its features): INIT
turns Σ into n0 (and n0 + 1, whose half is the EMA floor) by two GMUL operations per bin,
then frames 0…4 are replayed from the scratch words through the SNR half of the pipeline.
Later frames run both halves as they arrive. The state RAM holds two 28-bit words per bin
(bins 1…255: bins 0 and 256 have no mel weight, so nothing depends on them): 510 of 512
words of one RAMB18.

Widths follow from the 24-bit magnitude: n0 and nf are NOISE_FMT's 28 bits (a full-scale u24
magnitude times FIVE_RECIP needs the 28th), the denominator 44 bits.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned  # noqa: F401

from ..fixed import mel as fmel
from ..fixed import snr as fsnr
from ..fixed.stft import MAG_FMT, N_BINS
from .common import delay_taps
from .funcs import FuncOp
from .mac import GMUL_LATENCY

__all__ = ["BinPipeline", "II", "snr_ops"]

II = 8                                   # cycles per bin
DEPTH = 31                               # pipeline stages c0…c30
STORE_FRAMES = fsnr.STATIC_FRAMES
NOISE_BITS = fsnr.NOISE_FMT.bits         # 28
MEL_SHIFT = MAG_FMT.frac + fmel.MEL_W_FMT.frac - fmel.MEL_FMT.frac          # 14
SNR_SHIFT = fsnr.RATIO_FMT.frac + fmel.MEL_W_FMT.frac - fsnr.SNR_MEL_FMT.frac  # 18


def snr_ops() -> dict[str, FuncOp]:
    """The function-unit operations of the SNR estimator."""
    return {
        "log2_0": FuncOp.log2(0),
        # log2|X| (frac 15 taken as 0) − log2 den (frac 30 taken as 0) + 15 → RATIO_FMT
        "ratio": FuncOp.exp2(fsnr.RATIO_FMT.frac, offset=fsnr.DEN_FRAC - MAG_FMT.frac,
                             cap=fsnr.RATIO_FMT.max_int),
        "tanh": FuncOp.pwl(fsnr.TANH_TABLE),
    }


class BinPipeline:
    """Builds the bin pipeline into the engine ``eng`` (see :mod:`~nanomamba_hw.hw.spectral`).

    Control (driven by the engine): ``run`` (a frame's bins may be issued), ``mode`` (0: frames
    0…4 live, 1: later frames live, 2: replay of frames 0…4), ``init_run`` (INIT pass);
    status: ``done`` (all bins of the frame issued and the pipeline empty), ``init_done``.
    """

    def __init__(self, eng):
        self.eng = eng
        m = eng.m
        p = eng.params.snr
        self.ema = p.mode == "ema"
        self.run = Signal(name="bins_run")
        self.mode = Signal(2, name="bins_mode")
        self.done = Signal(name="bins_done")
        self.init_run = Signal(name="init_run")
        self.init_done = Signal(name="init_done")
        self.store_rewind = Signal(name="store_rewind")     # replay restarts at frame 0
        self._build(m, eng, p)

    def _build(self, m, eng, p):
        G = GMUL_LATENCY
        if G != 2:
            raise ValueError("the bin pipeline's schedule is written for a 2-cycle GMUL")
        ema = self.ema
        live_init = self.mode == 0
        snr_on = self.mode != 0
        mel_on = self.mode != 2
        replay = self.mode == 2
        NBIN = N_BINS

        # ---- slot counter and bin counter
        slot = Signal(range(II))
        m.d.sync += slot.eq(Mux(slot == II - 1, 0, slot + 1))
        j = Signal(range(NBIN + 1))          # next bin to accept / read
        finished = Signal()
        issue = Signal()
        live = ~replay
        first_in = live & eng.i.payload.first
        with m.If(self.run & ~finished & (slot == 0)):
            with m.If(live):
                # A frame starts with its `first` element: anything before it (the rest of a
                # frame cut by clip_start's reset) is accepted and dropped.
                m.d.comb += [eng.i.ready.eq(1), issue.eq(eng.i.valid & (first_in | (j != 0)))]
            with m.Else():
                m.d.comb += issue.eq(1)
        jj = Signal(range(NBIN + 1))         # index of the bin issued now
        m.d.comb += jj.eq(Mux(replay, j, Mux(first_in, 0, j)))
        with m.If(issue):
            m.d.sync += j.eq(jj + 1)
            with m.If(jj == Mux(replay, NBIN - 2, NBIN - 1)):
                m.d.sync += finished.eq(1)
        with m.If(~self.run):
            m.d.sync += [j.eq(Mux(replay, 1, 0)), finished.eq(0)]
        vbin = (jj >= 1) & (jj <= NBIN - 2)
        v = delay_taps(m, issue & vbin, DEPTH, "v")
        in_flight = Cat(*v[1:]).any()
        m.d.comb += self.done.eq(self.run & finished & ~in_flight)

        jb = Signal(range(NBIN - 2))         # bin − 1: the state RAM's row
        m.d.comb += jb.eq(jj - 1)
        jb_d = delay_taps(m, jb, 1 + G, "jb")

        # ---- c0: reads
        ra, rb = eng.ra, eng.rb
        with m.If(issue):
            m.d.comb += [ra.addr.eq(Cat(Const(0, 1), jb)), rb.addr.eq(eng.W_BASE + (jj >> 1))]
        half = delay_taps(m, jj[0], 1, "half")[1]
        fb = eng.fb
        store_ptr = Signal(range(eng.fb_words))
        with m.If(self.store_rewind):
            m.d.sync += store_ptr.eq(eng.STORE_BASE)
        with m.If(issue & vbin & replay):
            m.d.comb += [fb.re.eq(1), fb.addr.eq(store_ptr)]
            m.d.sync += store_ptr.eq(store_ptr + 1)
        x_reg = Signal(unsigned(MAG_FMT.bits))
        m.d.sync += x_reg.eq(eng.i.payload.data)

        # ---- c1
        x1 = Signal(unsigned(MAG_FMT.bits))
        m.d.comb += x1.eq(Mux(replay, fb.rdata[:MAG_FMT.bits], x_reg))
        wq = Mux(half, rb.data[18:36], rb.data[:18])
        w1, close1 = Signal(range(1 << 16)), Signal()
        m.d.comb += [w1.eq(wq[:16]), close1.eq(wq[16])]
        word0 = ra.data[:NOISE_BITS]
        with m.If(v[1] & snr_on & ema):
            m.d.comb += ra.addr.eq(Cat(Const(1, 1), jb_d[1]))
        up = fsnr.NOISE_FMT.frac - MAG_FMT.frac
        diff = Signal(signed(NOISE_BITS + 2))
        m.d.comb += diff.eq((x1 << up) - word0)
        # diff > 0 as its own comparison, beside the subtraction rather than after it (one
        # carry chain instead of two before the GMUL's operand register)
        coef = Mux((x1 << up) > word0, p.gamma, p.beta)
        first_clip_frame = eng.first_frame
        k_state = Cat(Const(1 << 15, 16), Mux(live_init & first_clip_frame, 0, word0))
        with m.If(v[1] & live_init):
            eng.gmul(x1, 1 << 16, k_state)           # Σ + |X|
        if ema:
            with m.If(v[1] & snr_on):
                eng.gmul(diff, coef, k_state)         # nf + round(a·(8|X| − nf))
        with m.If(v[1] & snr_on):
            eng.fu_issue("log2_0", x1)
        with m.If(v[1] & live_init):
            m.d.comb += [fb.we.eq(1), fb.addr.eq(store_ptr), fb.wdata.eq(x1)]
            m.d.sync += store_ptr.eq(store_ptr + 1)
        mac = eng.mac
        with m.If(v[1] & mel_on):
            m.d.comb += [mac.valid.eq(1), mac.stream.eq(0), mac.hi.eq(0), mac.close.eq(close1),
                         mac.x.eq(x1), mac.w.eq(w1)]
        x1r = Signal.like(x1)
        m.d.sync += x1r.eq(x1)
        w_d = delay_taps(m, w1, 21, "w")
        c_d = delay_taps(m, close1, 21, "close")
        word0r = Signal(NOISE_BITS)
        m.d.sync += word0r.eq(word0)
        word0h = Signal(NOISE_BITS)                  # the bin's word 0, held for c3
        with m.If(v[1]):
            m.d.sync += word0h.eq(word0)

        # ---- c2: state word 1 (n0 + 1) arrives; its half is the EMA's floor
        half_n0 = Signal(NOISE_BITS - 1)
        with m.If(v[2]):
            m.d.sync += half_n0.eq(ra.data[1:NOISE_BITS])
        # ---- c3 (c1 + GMUL_LATENCY): write nf′ / Σ′; noise
        newstate = eng.g_p[16:16 + NOISE_BITS]
        with m.If(v[3] & (live_init | (snr_on & ema))):
            m.d.comb += [eng.ra_w.en.eq(1), eng.ra_w.addr.eq(Cat(Const(0, 1), jb_d[3])),
                         eng.ra_w.data.eq(newstate)]
        noise = Signal(NOISE_BITS)
        if ema:
            m.d.comb += noise.eq(Mux(newstate > half_n0, newstate, half_n0))
        else:
            m.d.comb += noise.eq(word0h)
        noise_r = Signal(NOISE_BITS)
        m.d.sync += noise_r.eq(noise)
        with m.If(v[2] & mel_on):
            m.d.comb += [mac.valid.eq(1), mac.stream.eq(0), mac.hi.eq(1), mac.close.eq(c_d[1]),
                         mac.x.eq(x1r), mac.w.eq(w_d[1])]
        # mel band closing (MAC output of the c1 product)
        mm = Signal(range(eng.n_mels + 1))
        mel_v = mac.o_value
        mel_over = mel_v[MEL_SHIFT + fmel.MEL_FMT.bits:] != 0
        mel_val = Mux(mel_over, fmel.MEL_FMT.max_int,
                      mel_v[MEL_SHIFT:MEL_SHIFT + fmel.MEL_FMT.bits])
        with m.If(mac.o_valid & (mac.o_stream == 0)):
            m.d.comb += [eng.rb_w.en.eq(1), eng.rb_w.addr.eq(eng.MEL_BASE + mm),
                         eng.rb_w.data.eq(mel_val)]
            m.d.sync += mm.eq(mm + 1)

        # ---- c4: den = ns·noise + EPS_DEN
        with m.If(v[4] & snr_on):
            eng.gmul(noise_r, p.noise_scale, fsnr.EPS_DEN)
        # ---- c6: log2 den
        with m.If(v[6] & snr_on):
            eng.fu_issue("log2_0", eng.g_p[:44])
        # ---- c6 / c11: hold the logs;  c12: ratio
        lx, ld = Signal(signed(32)), Signal(signed(32))
        with m.If(v[6]):
            m.d.sync += lx.eq(eng.fu.o_lp)
        with m.If(v[11]):
            m.d.sync += ld.eq(eng.fu.o_lp)
        with m.If(v[12] & snr_on):
            eng.fu_issue("ratio", lx, sub=ld)
        # ---- c20: ratio → c21, c22: SNR projection
        r = Signal(unsigned(fsnr.RATIO_FMT.bits))
        self.dbg = dict(v=v, r=r, lx=lx, ld=ld, noise_r=noise_r, x1=x1, word0=word0, jb=jb_d)
        with m.If(v[20]):
            m.d.sync += r.eq(eng.fu.o_exp)
        with m.If(v[21] & snr_on):
            m.d.comb += [mac.valid.eq(1), mac.stream.eq(1), mac.hi.eq(0), mac.close.eq(c_d[20]),
                         mac.x.eq(r), mac.w.eq(w_d[20])]
        with m.If(v[22] & snr_on):
            m.d.comb += [mac.valid.eq(1), mac.stream.eq(1), mac.hi.eq(1), mac.close.eq(0),
                         mac.x.eq(r), mac.w.eq(w_d[21])]
        ms = Signal(range(eng.n_mels + 1))
        sn_v = mac.o_value
        sn_bits = fsnr.SNR_MEL_FMT.bits
        sn_over = sn_v[SNR_SHIFT + sn_bits:] != 0
        snm = Signal(sn_bits)
        sclose = Signal()
        saddr = Signal(range(eng.fb_words))
        m.d.sync += sclose.eq(0)
        with m.If(mac.o_valid & (mac.o_stream == 1)):
            m.d.sync += [snm.eq(Mux(sn_over, (1 << sn_bits) - 1,
                                    sn_v[SNR_SHIFT:SNR_SHIFT + sn_bits])),
                         sclose.eq(1), saddr.eq(eng.sbase + ms), ms.eq(ms + 1)]
        # ---- c24: tanh;  c29: read the word;  c30: write it with the SNR value
        with m.If(sclose):
            eng.fu_issue("tanh", snm)
        sc_d = delay_taps(m, sclose, 6, "sclose")
        sa_d = delay_taps(m, saddr, 6, "saddr")
        snr_val = Signal(unsigned(fsnr.SNR_FMT.bits))
        with m.If(sc_d[5]):
            m.d.comb += [fb.re.eq(1), fb.addr.eq(sa_d[5])]
            m.d.sync += snr_val.eq(eng.fu.o_lp)
        with m.If(sc_d[6]):
            bits = eng.code.bits
            m.d.comb += [fb.we.eq(1), fb.addr.eq(sa_d[6]),
                         fb.wdata.eq(Cat(fb.rdata[:bits], snr_val))]
        with m.If(~self.run):
            m.d.sync += [mm.eq(0), ms.eq(0)]

        # ---- INIT: n0 = round(Σ·FIVE_RECIP / 2**16); word 1 = n0 + 1 (EMA)
        ib = Signal(range(NBIN))
        iph = Signal()
        ifin = Signal()
        iv = delay_taps(m, self.init_run & ~ifin & ~iph, 3 + G, "iv")
        m.d.sync += iph.eq(self.init_run & ~iph & ~ifin)
        with m.If(iv[0]):
            m.d.comb += ra.addr.eq(Cat(Const(0, 1), ib))
            m.d.sync += ib.eq(ib + 1)
            with m.If(ib == NBIN - 3):
                m.d.sync += ifin.eq(1)
        ib_d = delay_taps(m, ib, 3 + G, "ib")
        rnd = 1 << (fsnr.FIVE_SHIFT - 1)
        with m.If(iv[2]):
            eng.gmul(word0r, fsnr.FIVE_RECIP, rnd)
        if ema:
            sum5_hold = Signal(NOISE_BITS)
            m.d.sync += sum5_hold.eq(word0r)
            with m.If(iv[3]):
                eng.gmul(sum5_hold, fsnr.FIVE_RECIP, rnd + (1 << fsnr.FIVE_SHIFT))
        with m.If(iv[2 + G]):
            m.d.comb += [eng.ra_w.en.eq(1), eng.ra_w.addr.eq(Cat(Const(0, 1), ib_d[2 + G])),
                         eng.ra_w.data.eq(newstate)]
        if ema:
            with m.If(iv[3 + G]):
                m.d.comb += [eng.ra_w.en.eq(1), eng.ra_w.addr.eq(Cat(Const(1, 1), ib_d[3 + G])),
                             eng.ra_w.data.eq(newstate)]
        m.d.comb += self.init_done.eq(self.init_run & ifin & ~Cat(*iv[1:]).any())
        with m.If(~self.init_run):
            m.d.sync += [ib.eq(0), ifin.eq(0)]
