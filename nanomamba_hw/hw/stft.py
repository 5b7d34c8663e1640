"""STFT magnitude: Hann window, 512-point radix-2 FFT and exact integer magnitude, bit for bit
as :mod:`nanomamba_hw.fixed.stft` (window → :func:`~nanomamba_hw.fixed.stft.fft` →
:func:`~nanomamba_hw.fixed.stft.magnitude`).

Data path
---------
Frames arrive as 512 int16 samples (``first``/``last`` flags, e.g. from
:class:`~nanomamba_hw.hw.framer.Framer`); 257 magnitudes (bins 0…256, u24.15) leave per frame.
Everything lives in **one data RAM** (512 × (2 × 25 bits): re and im of ``FFT_DATA_BITS``, one
RAMB36 in simple dual-port mode) and **one ROM** (512 × 36: the twiddles ``TW_RE``/``TW_IM`` in
words 0…255, the window pairs ``(WINDOW[j], WINDOW[j + 256])`` in words 256…511; one RAMB18).
There is no separate input buffer.

1. **Load + stage 0.** The fixed model windows, permutes into bit-reversed order (``BITREV``)
   and runs 9 radix-2 DIT stages. Stage 0 pairs ``x[j]`` with ``x[j + 256]`` (its twiddle is
   W⁰ = 1 exactly, ``rshift_round(b·65536, 16) = b``), and the pair's outputs go to positions
   ``BITREV[j]`` and ``BITREV[j] + 1``. So the first half of a frame is windowed on arrival
   (``rshift_round(x·w, WIN_SHIFT)``) and written to ``BITREV[j]`` (one sample per cycle); each
   sample of the second half is windowed on arrival and combined with its stored partner by the
   butterfly datapath below (one sample per two cycles: two writes). Loading a frame takes
   789 cycles (below) and overlaps nothing but the previous frame's last roots (the data RAM
   holds one frame).

2. **Stages 1…8**, in place, one butterfly every 2 cycles (2 reads + 2 writes on the RAM's one
   read and one write port) with **two DSP48E1 in cascade**: ``P1 = A1·B1 + K``,
   ``P0 = A0·B0 + P1``. ``tr = (br·wr − bi·wi + 2¹⁵) >> 16`` is ``P1 = bi·(−wi) + 2¹⁵`` then
   ``P0 = br·wr + P1``, ``ti`` likewise — the rounding constant, the sum and the difference of
   the products never touch the fabric. The window products of the load use the same cascade
   (``(x·16)·w + 2¹⁵ >> 16 = rshift_round(x·w, 12)``). The butterfly outputs
   ``(a ± t)``, halved with rounding at the stages in ``SCALE_STAGES``, are formed by one
   add/subtract unit per component, time-shared between ``a + t`` and ``a − t``:
   ``rshift_round(a ± t, 1) = (a + 1 ± t) >> 1``, so ``a + 1`` is formed once when ``a`` is
   read. Schedule of the butterfly read at cycle c (a) and c + 1 (b): twiddle at c + 2,
   products at c + 4…c + 6, ``tr`` at c + 6, ``ti`` at c + 7, writes at c + 8 (a′) and c + 9
   (b′); a stage issues 256 butterflies in 512 cycles and drains 8 more
   (``STAGE_CYCLES`` = 520 per stage, 4,160 per FFT).

3. **Magnitude**, bins 0…256 in natural order: the same cascade forms
   ``re·(re mod 2¹⁷) + im·(im mod 2¹⁷)`` and ``re·(re >> 17) + im·(im >> 17)`` (four 25 × 18
   products), one fabric adder gives ``re² + im²``, and a non-restoring digit-by-digit square
   root (one add/subtract per result bit, ``sqrt_bits_per_cycle`` per cycle; 24 result bits:
   8 cycles at the default 3) gives the exact floor root. The next bin's radicand is prepared
   while the current root runs: ``max(24 / sqrt_bits_per_cycle, RAD_LATENCY) + 1`` cycles per
   bin (``bin_cycles``; 9 at the default, and no faster with more bits per cycle: the radicand
   register is free again only ``RAD_LATENCY`` + 1 cycles after a bin's read). Output
   backpressure stalls the root unit, then the magnitude reader.

Cycles per frame, no stalls, default ``sqrt_bits_per_cycle`` = 3 (the schedule that
``tests/hw/test_stft.py::test_cycles_per_frame`` checks exactly, see docs/hw_stft.md):

- load: 256 (first half, one sample per cycle) + 11 (``DEPTH`` + 1: the pipeline drains) +
  511 (second half, one sample every 2 cycles) + 11 (drain) = 789;
- FFT: stages 1…8, 8 × ``STAGE_CYCLES`` = 4,160;
- magnitudes: bins 0…256 issued ``bin_cycles`` = 9 apart, 256 × 9 = 2,304 from the first to
  the last; the last one's magnitude leaves 19 cycles after its issue (radicand
  ``RAD_LATENCY`` = 8, root start 1, root 8, result 1, output register 1);
- first sample in → last magnitude out: 789 + 4,160 + 2,304 + 19 = **7,272** cycles; back to
  back, a frame every 789 + 4,160 + 2,304 + 12 = **7,265** cycles (the next load starts once
  the last bin's pipeline has drained, ``DEPTH`` + 2 cycles after its issue; its root and
  output overlap that load).

Real time needs one frame per 10 ms hop (160 samples at 16 kHz): 7,265 cycles per hop is a
clock of 0.73 MHz; at 16 MHz it is 4.5 % of the 160,000 cycles of a hop.

Range: the fixed model guarantees (and tests) that every FFT value fits 25 bits and
``|X| < 2²⁴`` so the magnitude fits u24; the hardware computes the butterfly sums wide and
raises the sticky ``overflow`` flag if a value written to the data RAM would not fit 25 bits
(never, for int16 input), and saturates a magnitude ≥ 2²⁴ to 2²⁴ − 1 (unreachable:
|X| ≤ 2¹⁸·Σw/8 = 2²³ up to rounding; a frame of −32768 reaches 2²³ exactly). The root
therefore runs 24 iterations where :func:`~nanomamba_hw.fixed.ops.isqrt` runs 32: the first 8
can only produce zeros when the radicand is below 2⁴⁸.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..fixed import stft as fstft
from .common import frame_stream, rom_init, shape_of

__all__ = ["DEPTH", "FFT_LATENCY", "RAD_LATENCY", "STAGE_CYCLES", "STFT"]

N = fstft.N_FFT
HALF = N // 2
LOG2 = fstft.LOG2_N
NB = fstft.N_BINS
DW = fstft.FFT_DATA_BITS                 # 25: data word per component
TWB = fstft.TWIDDLE_FMT.bits             # 18
TW_FRAC = fstft.TWIDDLE_FMT.frac         # 16
MAG_BITS = fstft.MAG_FMT.bits            # 24
MUL_A, MUL_B = 25, 18                    # DSP48E1 multiplier port widths
FFT_LATENCY = 8                          # cycles from a butterfly's first read to its first write
STAGE_CYCLES = N + FFT_LATENCY           # issue 256 butterflies (2 cycles each), then drain
SQ_SPLIT = MUL_B - 1                     # x² = x·(x mod 2¹⁷) + (x·(x >> 17))·2¹⁷
WIN_UP = TW_FRAC - fstft.WIN_SHIFT       # window products are formed as (x << 4)·w >> 16
T_BITS = DW + 2                          # t = P0 >> 16 kept 27 bits wide
SUM_BITS = T_BITS + 1                    # a + 1 ± t
DEPTH = 10                               # issue-delay taps used by the datapath
RAD_LATENCY = 8                          # a bin's issue → its radicand registered (iss[7])


def _bitrev(x):
    return Cat(*(x[LOG2 - 1 - b] for b in range(LOG2)))


def _check_constants():
    """The wiring above must agree with the fixed model's constants (never recomputed)."""
    # _bitrev's output bit b is input bit LOG2-1-b
    wired = [sum(((v >> (LOG2 - 1 - b)) & 1) << b for b in range(LOG2)) for v in range(N)]
    if list(map(int, fstft.BITREV)) != wired:
        raise AssertionError("fixed.stft.BITREV is not the 9-bit bit reversal the address "
                             "wiring implements")
    if int(fstft.TW_RE[0]) != 1 << TW_FRAC or int(fstft.TW_IM[0]) != 0:
        raise AssertionError("stage 0 relies on W^0 = 1 exactly in TWIDDLE_FMT")
    if fstft.SCALE_STAGES[0] != 0 or any(s >= LOG2 for s in fstft.SCALE_STAGES):
        raise AssertionError("the load assumes stage 0 is a scaling stage")
    if fstft.FFT_IN_FMT.bits > MUL_A or fstft.WIN_FMT.bits + 1 > MUL_B or TWB > MUL_B:
        raise AssertionError("operands do not fit the 25 x 18 multipliers")
    if 16 + WIN_UP > MUL_A or WIN_UP < 0:
        raise AssertionError("window products do not fit the 25 x 18 multipliers")
    if DW > MUL_A or DW - SQ_SPLIT + 1 > MUL_B:
        raise AssertionError("data words do not fit the 25 x 18 multipliers")
    if int(abs(fstft.TW_IM).max()) >= 1 << (TWB - 1):
        raise AssertionError("-TW_IM must fit the twiddle width")


def _rom_words() -> list[int]:
    """Twiddles (re, im) in words 0…255, window pairs (w[j], w[j + 256]) in words 256…511."""
    mask = (1 << TWB) - 1
    tw_re = rom_init(fstft.TW_RE, signed(TWB))
    tw_im = rom_init(fstft.TW_IM, signed(TWB))
    win = rom_init(fstft.WINDOW, unsigned(TWB))
    words = [(r & mask) | ((i & mask) << TWB) for r, i in zip(tw_re, tw_im)]
    words += [win[j] | (win[j + HALF] << TWB) for j in range(HALF)]
    return words


class STFT(wiring.Component):
    """Window, FFT and magnitude of 512-sample frames, bit-exact with the fixed model.

    Parameters (keyword-only)
    -------------------------
    butterflies : int
        Butterfly units. Only 1 is implemented (one butterfly every 2 cycles on one
        simple-dual-port data RAM; a frame takes ~7k cycles against a real-time budget of
        160k at 16 MHz, so more parallelism would only cost area).
    sqrt_bits_per_cycle : int
        Result bits of the square root per cycle; must divide 24 (1, 2, 3, 4, 6, 8, 12, 24).
        Beyond 3 the frame does not get faster (see ``bin_cycles``).

    Members
    -------
    i : In(frame_stream(signed(16)))
        Frames of 512 PCM samples.
    o : Out(frame_stream(unsigned(24)))
        Per frame, the magnitudes of bins 0…256 (``first`` on bin 0, ``last`` on bin 256).
    busy : Out(1)
        A frame is being loaded, computed or output.
    overflow : Out(1)
        Sticky: an FFT value exceeded ``FFT_DATA_BITS`` (cannot happen for int16 frames).
    """

    def __init__(self, *, butterflies: int = 1, sqrt_bits_per_cycle: int = 3):
        try:
            if butterflies != 1:
                raise ValueError(f"only butterflies=1 is implemented, got {butterflies}")
            if sqrt_bits_per_cycle < 1 or MAG_BITS % sqrt_bits_per_cycle:
                raise ValueError(f"sqrt_bits_per_cycle must divide {MAG_BITS}, "
                                 f"got {sqrt_bits_per_cycle}")
            _check_constants()
        except (ValueError, AssertionError):
            self._MustUse__silence = True      # no "never elaborated" warning for a refused one
            raise
        self.butterflies = butterflies
        self.sqrt_bits_per_cycle = sqrt_bits_per_cycle
        self.sqrt_cycles = MAG_BITS // sqrt_bits_per_cycle
        super().__init__({
            "i": In(frame_stream(signed(16))),
            "o": Out(frame_stream(shape_of(fstft.MAG_FMT))),
            "busy": Out(1),
            "overflow": Out(1),
        })

    @property
    def fft_cycles(self) -> int:
        return (LOG2 - 1) * STAGE_CYCLES

    @property
    def bin_cycles(self) -> int:
        """Cycles per bin in steady state: the root's ``sqrt_cycles`` + 1 (handing over the
        radicand), but at least ``RAD_LATENCY`` + 1 (a bin is read only once the radicand
        register is free again), so 9 from ``sqrt_bits_per_cycle`` = 3 up."""
        return max(self.sqrt_cycles, RAD_LATENCY) + 1

    def elaborate(self, platform):
        m = Module()

        # --- memories --------------------------------------------------------------------------
        m.submodules.data = dram = Memory(shape=unsigned(2 * DW), depth=N, init=[],
                                          attrs={"ram_style": "block"})
        d_w = dram.write_port()
        d_r = dram.read_port(transparent_for=())
        m.submodules.rom = rom = Memory(shape=unsigned(2 * TWB), depth=N, init=_rom_words(),
                                        attrs={"rom_style": "block"})
        r_r = rom.read_port()
        m.d.comb += [d_r.en.eq(1), r_r.en.eq(1)]
        d_re, d_im = d_r.data[:DW].as_signed(), d_r.data[DW:].as_signed()
        f0, f1 = r_r.data[:TWB].as_signed(), r_r.data[TWB:].as_signed()

        # --- engine mode and counters ----------------------------------------------------------
        # LOAD1: first half, one sample per cycle; LOAD2: second half + stage 0, one sample per
        # two cycles; FFT: stages 1..8; MAG: magnitudes. GAP/DRAIN: wait for the pipeline.
        issue = Signal()                     # a sample / butterfly / bin enters the pipeline
        iss = Signal(DEPTH + 1)              # iss[k]: issued k cycles ago
        m.d.comb += iss[0].eq(issue)
        m.d.sync += iss[1:].eq(iss[:DEPTH])
        in_flight = iss[1:].any()
        load1, load2, fft, mag = Signal(), Signal(), Signal(), Signal()
        s = Signal(range(LOG2))              # FFT stage (0 during the load)
        c = Signal(range(STAGE_CYCLES))      # cycle within the stage / load counter
        halve = Signal()
        m.d.comb += halve.eq(~load1 & Cat(*(s == v for v in fstft.SCALE_STAGES)).any())

        # --- load: input handshake -------------------------------------------------------------
        j = Signal(range(HALF))              # sample index within the half being loaded
        lph = Signal()                       # LOAD2: accept on even cycles only
        flush = Signal()                     # a `first` arrived mid-frame: drain, then restart
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        x_in = Signal(signed(16))
        m.d.comb += x_in.eq(self.i.payload.data)
        restart = self.i.valid & self.i.payload.first & ((j != 0) | load2)

        # sample delay line for the window product (needed 5 cycles after the accept)
        x_d = [x_in]
        for k in range(5):
            r = Signal(signed(16), name=f"x_d{k + 1}")
            m.d.sync += r.eq(x_d[-1])
            x_d.append(r)
        j_d = [j]
        for k in range(FFT_LATENCY + 1):
            r = Signal(range(HALF), name=f"j_d{k + 1}")
            m.d.sync += r.eq(j_d[-1])
            j_d.append(r)

        # --- read address (data RAM) and ROM address ------------------------------------------
        raddr = Signal(LOG2)
        twaddr = Signal(LOG2 - 1)
        waddr = Signal(LOG2)
        c2 = Signal(range(STAGE_CYCLES))     # c − 2: the ROM is read for the butterfly of c − 2
        cw = Signal(range(STAGE_CYCLES))     # c − 8: the write side
        m.d.comb += [c2.eq(c - 2), cw.eq(c - FFT_LATENCY)]
        with m.Switch(s):
            for sv in range(1, LOG2):
                with m.Case(sv):
                    m.d.comb += [
                        raddr.eq(Cat(c[1:sv + 1], c[0], c[sv + 1:LOG2])),
                        waddr.eq(Cat(cw[1:sv + 1], cw[0], cw[sv + 1:LOG2])),
                        twaddr.eq(Cat(Const(0, LOG2 - 1 - sv), c2[1:sv + 1])),
                    ]
        mbin = Signal(range(NB + 1))
        mbin_iss = Signal(LOG2)              # the bin issued last (a register, not mbin − 1)
        with m.If(mag):
            m.d.comb += d_r.addr.eq(mbin_iss)
        with m.Elif(load2):
            m.d.comb += d_r.addr.eq(_bitrev(Cat(j, Const(0, 1))))
        with m.Else():
            m.d.comb += d_r.addr.eq(raddr)
        # ROM: twiddle of the butterfly issued 2 cycles ago; window pair of the sample accepted
        # 2 (LOAD2) or 3 (LOAD1) cycles ago
        with m.If(fft):
            m.d.comb += r_r.addr.eq(twaddr)
        with m.Else():
            m.d.comb += r_r.addr.eq(Cat(Mux(load1, j_d[3], j_d[2]), Const(1, 1)))

        # --- a: read at c, a + halve formed at c + 1, used at c + 7 (re) / c + 8 (im) -----------
        a_mask_re = ~load1                   # LOAD1 has no partner: a = 0
        a_mask_im = fft                      # LOAD2's stored sample is real
        a1_re = Signal(signed(DW + 1))
        a1_im = Signal(signed(DW + 1))
        m.d.comb += [a1_re.eq(Mux(a_mask_re, d_re, 0) + halve),
                     a1_im.eq(Mux(a_mask_im, d_im, 0) + halve)]
        a_re_d, a_im_d = [a1_re], [a1_im]
        for k in range(6):
            r1 = Signal(signed(DW + 1), name=f"a1re_d{k + 1}")
            r2 = Signal(signed(DW + 1), name=f"a1im_d{k + 1}")
            m.d.sync += [r1.eq(a_re_d[-1]), r2.eq(a_im_d[-1])]
            a_re_d.append(r1)
            a_im_d.append(r2)
        a1x = Signal(signed(DW + 1))         # valid c + 7, c + 8
        a1y = Signal(signed(DW + 1))         # valid c + 8, c + 9
        with m.If(iss[6]):
            m.d.sync += a1x.eq(a_re_d[5])
        with m.If(iss[7]):
            m.d.sync += a1y.eq(a_im_d[6])

        # --- b: read at c + 1 (butterfly) / c + 1 (bin), in b_reg at c + 4…c + 5 -------------
        b_d = Signal(2 * DW)
        b_reg = Signal(2 * DW)
        b2_re = Signal(signed(DW))
        m.d.sync += b_d.eq(d_r.data)
        with m.If(iss[3]):
            m.d.sync += b_reg.eq(b_d)
        with m.If(iss[4]):
            m.d.sync += b2_re.eq(b_reg[:DW].as_signed())
        b_im = b_reg[DW:].as_signed()

        # ROM word captured at c + 3 (c + 4 for LOAD1), held for c + 4…c + 5
        rom_q0 = Signal(signed(TWB))
        rom_q1 = Signal(signed(TWB))
        nwi_q = Signal(signed(TWB))
        wi2 = Signal(signed(TWB))
        with m.If(Mux(load1, iss[4], iss[3])):
            m.d.sync += [rom_q0.eq(f0), rom_q1.eq(f1), nwi_q.eq((-f1)[:TWB].as_signed())]
        with m.If(iss[5]):
            m.d.sync += wi2.eq(rom_q1)

        # --- the two DSP48E1 in cascade: P1 = A1·B1 + K1, P0 = A0·B0 + P1 ----------------------
        a1_op, b1_op = Signal(signed(MUL_A)), Signal(signed(MUL_B))
        a0_op, b0_op = Signal(signed(MUL_A)), Signal(signed(MUL_B))
        k1 = Signal(signed(2))               # K1 = k1 · 2^15 (2^15: rounding; 0: squares)
        p1 = Signal(signed(48))
        p0 = Signal(signed(48))
        m.d.sync += [p1.eq(a1_op * b1_op + (k1 << (TW_FRAC - 1))),
                     p0.eq(a0_op * b0_op + p1)]
        first_op = iss[4]                    # DSP1's first op of a butterfly / bin
        m.d.comb += a1_op.eq(b_im)
        with m.If(mag):
            m.d.comb += [
                b1_op.eq(Mux(first_op, Cat(b_im[:SQ_SPLIT], Const(0, 1)),
                             b_im[SQ_SPLIT:].as_signed())),
                a0_op.eq(b2_re),
                b0_op.eq(Mux(iss[5], Cat(b2_re[:SQ_SPLIT], Const(0, 1)),
                             b2_re[SQ_SPLIT:].as_signed())),
            ]
        with m.Elif(fft):
            m.d.comb += [
                k1.eq(1),
                b1_op.eq(Mux(first_op, nwi_q, rom_q0)),      # bi·(−wi), then bi·wr
                a0_op.eq(b2_re),
                b0_op.eq(Mux(iss[5], rom_q0, wi2)),          # br·wr, then br·wi
            ]
        with m.Else():                        # load: P1 = 2^15, P0 = (x·16)·w + 2^15
            m.d.comb += [
                k1.eq(1),
                a0_op.eq(x_d[5] << WIN_UP),
                b0_op.eq(Mux(iss[5], Mux(load1, rom_q0, rom_q1), 0)),
            ]

        # --- t = P0 >> 16; a + 1 ± t, halved; write a' at c + 8, b' at c + 9 --------------------
        tr = Signal(signed(T_BITS))
        ti = Signal(signed(T_BITS))
        with m.If(iss[6]):
            m.d.sync += tr.eq(p0[TW_FRAC:TW_FRAC + T_BITS])
        with m.If(iss[7]):
            m.d.sync += ti.eq(p0[TW_FRAC:TW_FRAC + T_BITS])
        sub_x = iss[8] & ~load1
        sub_y = iss[9]
        sx = Signal(signed(SUM_BITS))
        sy = Signal(signed(SUM_BITS))
        # one adder each: a ± t = a + (t XOR sub) + sub
        m.d.comb += [sx.eq(a1x + Mux(sub_x, ~tr, tr) + sub_x),
                     sy.eq(a1y + Mux(sub_y, ~ti, ti) + sub_y)]
        hx = Signal(signed(SUM_BITS))
        hy = Signal(signed(SUM_BITS))
        m.d.comb += [hx.eq(Mux(halve, sx >> 1, sx)), hy.eq(Mux(halve, sy >> 1, sy))]
        xo = Signal(signed(DW))
        with m.If(iss[7] | iss[8]):
            m.d.sync += xo.eq(hx[:DW])
        lo, hi = -(1 << (DW - 1)), (1 << (DW - 1)) - 1
        ovf_x = Signal()
        with m.If(iss[7] | iss[8]):
            m.d.sync += ovf_x.eq((hx < lo) | (hx > hi))
        wr_top = iss[8]
        wr_bot = iss[9] & ~load1
        m.d.comb += [d_w.data.eq(Cat(xo, hy[:DW])), d_w.en.eq((wr_top | wr_bot) & ~mag)]
        with m.If(load1):
            m.d.comb += d_w.addr.eq(_bitrev(Cat(j_d[FFT_LATENCY], Const(0, 1))))
        with m.Elif(load2):
            m.d.comb += d_w.addr.eq(_bitrev(Cat(Mux(wr_bot, j_d[FFT_LATENCY + 1], j_d[FFT_LATENCY]),
                                                Const(0, 1))) | wr_bot)
        with m.Else():
            m.d.comb += d_w.addr.eq(waddr)
        y_bad = ~load1 & ((hy < lo) | (hy > hi))
        with m.If(d_w.en & (ovf_x | y_bad)):
            m.d.sync += self.overflow.eq(1)

        # --- magnitude: radicand = S_lo + S_hi·2^17 -------------------------------------------
        s_lo = Signal(signed(44))
        with m.If(mag & iss[6]):
            m.d.sync += s_lo.eq(p0)
        rad = Signal(2 * DW)
        rad_full = Signal()
        rad_take = Signal()
        with m.If(mag & iss[RAD_LATENCY - 1]):
            m.d.sync += [rad.eq(s_lo + (p0 << SQ_SPLIT)), rad_full.eq(1)]
        with m.Elif(rad_take):
            m.d.sync += rad_full.eq(0)

        # --- sequencing ---------------------------------------------------------------------------
        with m.FSM(name="engine"):
            with m.State("LOAD1"):
                m.d.comb += [load1.eq(1), self.i.ready.eq(~flush)]
                with m.If(self.i.valid & ~flush):
                    m.d.comb += issue.eq(1)
                    with m.If(self.i.payload.first):
                        m.d.sync += j.eq(1)
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        with m.If(j == HALF - 1):
                            m.next = "GAP"
                with m.If(restart & ~flush):
                    m.d.comb += [self.i.ready.eq(0), issue.eq(0)]
                    m.d.sync += flush.eq(1)
                with m.If(flush & ~in_flight):
                    m.d.sync += [flush.eq(0), j.eq(0)]
            with m.State("GAP"):
                m.d.comb += load1.eq(1)
                with m.If(~in_flight):
                    m.d.sync += [j.eq(0), lph.eq(0), s.eq(0)]
                    m.next = "LOAD2"
            with m.State("LOAD2"):
                m.d.comb += [load2.eq(1), self.i.ready.eq(~lph & ~restart)]
                m.d.sync += lph.eq(take)
                with m.If(take):
                    m.d.comb += issue.eq(1)
                    m.d.sync += [j.eq(j + 1), lph.eq(1)]
                    with m.If(j == HALF - 1):
                        m.next = "DRAIN2"
                with m.If(restart):
                    m.d.sync += flush.eq(1)
                    m.next = "LOAD1"
            with m.State("DRAIN2"):
                m.d.comb += load2.eq(1)
                with m.If(~in_flight):
                    m.d.sync += [s.eq(1), c.eq(0), j.eq(0)]
                    m.next = "FFT"
            with m.State("FFT"):
                m.d.comb += [fft.eq(1), issue.eq((c < N) & ~c[0])]
                m.d.sync += c.eq(c + 1)
                with m.If(c == STAGE_CYCLES - 1):
                    m.d.sync += [c.eq(0), s.eq(s + 1)]
                    with m.If(s == LOG2 - 1):
                        m.d.sync += [s.eq(0), mbin.eq(0)]
                        m.next = "MAG"
            with m.State("MAG"):
                m.d.comb += [mag.eq(1),
                             issue.eq((mbin < NB) & ~iss[1:8].any() & ~rad_full)]
                with m.If(issue):
                    m.d.sync += [mbin.eq(mbin + 1), mbin_iss.eq(mbin)]
                with m.If((mbin == NB) & ~in_flight):
                    m.next = "LOAD1"     # last radicand formed: RAM and multipliers free

        # --- square root: non-restoring, sqrt_bits_per_cycle result bits per cycle -------------
        RB = 2 * MAG_BITS                    # radicand bits the root consumes (48)
        RW = MAG_BITS + 3                    # signed remainder
        sh = Signal(RB)
        q = Signal(MAG_BITS)
        r = Signal(signed(RW))
        sat = Signal()
        cnt = Signal(range(self.sqrt_cycles))
        root_busy = Signal()
        # read only while res_pending (reset) is set: without a reset, its flip-flops' set
        # input takes the saturation instead of a LUT per bit
        res = Signal(MAG_BITS, reset_less=True)
        res_pending = Signal()
        out_free = ~self.o.valid | self.o.ready
        push = Signal()
        m.d.comb += [
            push.eq(res_pending & out_free),
            rad_take.eq(rad_full & ~root_busy & (~res_pending | push)),
        ]
        r_c, q_c, sh_c = r, q, sh
        for _ in range(self.sqrt_bits_per_cycle):
            neg = r_c[-1]
            r4 = Cat(sh_c[RB - 2:], r_c)[:RW].as_signed()       # 4r + next two radicand bits
            r_n = Signal(signed(RW))
            # r ≥ 0: 4r + d − (4q + 1); r < 0: 4r + d + (4q + 3). Both are one adder:
            # −(4q + 1) = 4·(~q) + 3 in RW bits, so the addend is 3 + 4·(q, or ~q when r ≥ 0)
            # and r4 (flip-flops or the stage before) drives the carry chain's DI inputs
            qx = Cat(q_c, Const(0, RW - 2 - MAG_BITS))
            m.d.comb += r_n.eq(r4 + Cat(Const(3, 2), qx ^ (~neg).replicate(RW - 2)).as_signed())
            r_c = r_n
            q_c = Cat(~r_n[-1], q_c)[:MAG_BITS]
            sh_c = Cat(Const(0, 2), sh_c)[:RB]
        with m.If(rad_take):
            m.d.sync += [sh.eq(rad[:RB]), q.eq(0), r.eq(0), sat.eq(rad[RB:] != 0),
                         cnt.eq(0), root_busy.eq(1)]
        with m.Elif(root_busy):
            m.d.sync += [sh.eq(sh_c), q.eq(q_c), r.eq(r_c), cnt.eq(cnt + 1)]
            with m.If(cnt == self.sqrt_cycles - 1):
                m.d.sync += [root_busy.eq(0), res_pending.eq(1),
                             res.eq(Mux(sat, (1 << MAG_BITS) - 1, q_c))]
        with m.If(push & ~(root_busy & (cnt == self.sqrt_cycles - 1))):
            m.d.sync += res_pending.eq(0)

        # --- output register --------------------------------------------------------------------
        ob = Signal(range(NB))
        o_data = Signal(MAG_BITS)
        o_first = Signal()
        o_last = Signal()
        m.d.comb += [self.o.payload.data.eq(o_data), self.o.payload.first.eq(o_first),
                     self.o.payload.last.eq(o_last)]
        with m.If(push):
            m.d.sync += [self.o.valid.eq(1), o_data.eq(res), o_first.eq(ob == 0),
                         o_last.eq(ob == NB - 1), ob.eq(Mux(ob == NB - 1, 0, ob + 1))]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        m.d.comb += self.busy.eq(~load1 | (j != 0) | flush | in_flight | rad_full | root_busy |
                                 res_pending | self.o.valid)
        return m
