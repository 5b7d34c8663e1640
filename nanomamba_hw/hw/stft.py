"""STFT magnitude: Hann window, 512-point radix-2 FFT and exact integer magnitude, bit for bit
as :mod:`nanomamba_hw.fixed.stft` (window → :func:`~nanomamba_hw.fixed.stft.fft` →
:func:`~nanomamba_hw.fixed.stft.magnitude`).

Data path
---------
Frames arrive as 512 int16 samples (``first``/``last`` flags, e.g. from
:class:`~nanomamba_hw.hw.framer.Framer`); 257 magnitudes (bins 0…256, u24.15) leave per frame.

1. **Input buffer** (1024 × 16 bits, one RAMB18): two halves, ping-pong. The loader writes
   the raw samples of a frame into one half in natural order while the engine works on the
   frame in the other half, so loading is fully overlapped with computing. A sample flagged
   ``first`` is always written as element 0 (a truncated frame is dropped and the loader
   resynchronises); a half counts as full after element 511.

2. **FFT stage 0 with the window folded in.** The fixed model windows, then permutes into
   bit-reversed order (``BITREV``), then runs 9 radix-2 DIT stages. Stage 0's twiddle is
   W⁰ = 65536/2¹⁶ = 1 exactly (``rshift_round(b·65536, 16) = b``, imaginary part 0), so its
   butterflies need no twiddle multiply. The engine therefore reads the raw samples straight
   from the input buffer at the bit-reversed addresses ``BITREV[2k]``, ``BITREV[2k+1]`` (the
   data RAM's stage-0 input "written at bit-reversed addresses" is never materialised), windows
   them in the otherwise idle multiplier (``rshift_round(x·w, WIN_SHIFT)``, window ROM
   ``WINDOW``), and writes the stage-0 butterfly outputs into the data RAM. The window costs no
   DSP and no extra pass.

3. **Stages 1…8**, in place in the data RAM (512 words × (2 × 25 bits) = re and im of
   ``FFT_DATA_BITS`` each, one RAMB36 in simple dual-port mode: one read and one write port).
   One butterfly unit takes **2 cycles per butterfly**, matched to the RAM's ports (2 reads +
   2 writes per butterfly), with **2 real multipliers** of 25 × 18 bits (one DSP48E1 each)
   used every cycle: cycle A forms ``br·wr`` and ``bi·wi`` (→ ``tr = rshift_round(· − ·, 16)``),
   cycle B forms ``br·wi`` and ``bi·wr`` (→ ``ti``). Twiddles come from one 256 × 36 ROM
   (``TW_RE``, ``TW_IM``); outputs of the stages in ``SCALE_STAGES`` are halved with
   ``rshift_round(·, 1)``. A butterfly read at cycle 2k (a) and 2k+1 (b) is written back at
   2k+5 (a') and 2k+6 (b'); a stage issues its 256 butterflies in 512 cycles and drains for 5
   more before the next stage reads (517 cycles per stage, 4,653 per FFT).

4. **Magnitude**, bins 0…256 in natural order (DIT output order): the same two multipliers form
   re² + im² in 2 cycles (``x² = x·lo + (x·hi)·2¹⁷`` with ``lo = x mod 2¹⁷`` and
   ``hi = x >> 17``: four 25 × 18 products), then a digit-by-digit (restoring) integer square
   root produces ``sqrt_bits_per_cycle`` result bits per cycle (24 bits: 12 cycles at the
   default 2) and hands the result to the output register. The radicand of bin k+1 is
   prepared while the root of bin k runs, so a bin costs ``24/sqrt_bits_per_cycle + 1`` cycles.
   Output backpressure stalls the root unit, then the magnitude reader, then the next frame.

Cycle counts (measured by ``tests/hw/test_stft.py::test_cycles_per_frame``, see
docs/hw_stft.md), defaults: 4,653 FFT + 257 × 13 magnitude cycles; 8,513 cycles from a frame's
first sample in to its last magnitude out, and one frame every 7,979 cycles back to back (the
512 loading cycles are hidden by the ping-pong input buffer). Real time needs one frame per
10 ms hop: 160,000 cycles at 16 MHz, so the STFT uses 5 % of that budget.

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

__all__ = ["FFT_LATENCY", "STAGE_CYCLES", "STFT"]

N = fstft.N_FFT
LOG2 = fstft.LOG2_N
NB = fstft.N_BINS
DW = fstft.FFT_DATA_BITS                 # 25: data word per component
TWB = fstft.TWIDDLE_FMT.bits             # 18
TW_FRAC = fstft.TWIDDLE_FMT.frac         # 16
MAG_BITS = fstft.MAG_FMT.bits            # 24
MUL_A, MUL_B = 25, 18                    # DSP48E1 multiplier port widths
FFT_LATENCY = 5                          # cycles from a butterfly's first read to its first write
STAGE_CYCLES = N + FFT_LATENCY           # issue 256 butterflies (2 cycles each), then drain
SQ_SPLIT = MUL_B - 1                     # x² = x·(x mod 2¹⁷) + (x·(x >> 17))·2¹⁷


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
    if fstft.FFT_IN_FMT.bits > MUL_A or fstft.WIN_FMT.bits + 1 > MUL_B or TWB > MUL_B:
        raise AssertionError("operands do not fit the 25 x 18 multipliers")
    if DW > MUL_A or DW - SQ_SPLIT + 1 > MUL_B:
        raise AssertionError("data words do not fit the 25 x 18 multipliers")


class STFT(wiring.Component):
    """Window, FFT and magnitude of 512-sample frames, bit-exact with the fixed model.

    Parameters (keyword-only)
    -------------------------
    butterflies : int
        Butterfly units. Only 1 is implemented: one butterfly every 2 cycles on one
        simple-dual-port data RAM with two 25 × 18 multipliers (see the module docstring; a
        frame takes ~8k cycles against a real-time budget of 160k at 16 MHz, so more
        parallelism would only cost area).
    sqrt_bits_per_cycle : int
        Result bits of the square root per cycle; must divide 24 (1, 2, 3, 4, 6, 8, 12, 24).

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

    def __init__(self, *, butterflies: int = 1, sqrt_bits_per_cycle: int = 2):
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
        return LOG2 * STAGE_CYCLES

    @property
    def bin_cycles(self) -> int:
        return self.sqrt_cycles + 1

    def elaborate(self, platform):
        m = Module()

        # --- memories --------------------------------------------------------------------------
        m.submodules.inbuf = inbuf = Memory(shape=signed(16), depth=2 * N, init=[],
                                            attrs={"ram_style": "block"})
        in_w = inbuf.write_port()
        in_r = inbuf.read_port()
        m.submodules.win_rom = win_rom = Memory(
            shape=unsigned(fstft.WIN_FMT.bits), depth=N,
            init=rom_init(fstft.WINDOW, unsigned(fstft.WIN_FMT.bits)),
            attrs={"rom_style": "block"})
        win_r = win_rom.read_port()
        tw_re = rom_init(fstft.TW_RE, signed(TWB))
        tw_im = rom_init(fstft.TW_IM, signed(TWB))
        mask = (1 << TWB) - 1
        m.submodules.tw_rom = tw_rom = Memory(
            shape=unsigned(2 * TWB), depth=N // 2,
            init=[(r & mask) | ((i & mask) << TWB) for r, i in zip(tw_re, tw_im)],
            attrs={"rom_style": "block"})
        tw_r = tw_rom.read_port()
        m.submodules.data = dram = Memory(shape=unsigned(2 * DW), depth=N, init=[],
                                          attrs={"ram_style": "block"})
        d_w = dram.write_port()
        d_r = dram.read_port()
        m.d.comb += [in_r.en.eq(1), win_r.en.eq(1), tw_r.en.eq(1), d_r.en.eq(1)]

        d_re, d_im = d_r.data[:DW].as_signed(), d_r.data[DW:].as_signed()
        w_re, w_im = tw_r.data[:TWB].as_signed(), tw_r.data[TWB:].as_signed()

        # --- loader: raw samples into the free half of the input buffer -----------------------
        fill = Signal()                      # half being filled
        proc = Signal()                      # half being (or next to be) processed
        full = Signal(2)
        set_full = Signal(2)
        clr_full = Signal(2)
        le = Signal(range(N))
        lidx = Signal(range(N))
        m.d.comb += [
            lidx.eq(Mux(self.i.payload.first, 0, le)),
            self.i.ready.eq(~full.bit_select(fill, 1)),
            in_w.addr.eq(Cat(lidx, fill)),
            in_w.data.eq(self.i.payload.data),
            in_w.en.eq(self.i.valid & self.i.ready),
        ]
        with m.If(in_w.en):
            m.d.sync += le.eq(lidx + 1)
            with m.If(lidx == N - 1):
                m.d.sync += [le.eq(0), fill.eq(~fill)]
                m.d.comb += set_full.bit_select(fill, 1).eq(1)
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # --- shared multipliers (25 x 18, one DSP48E1 each) -----------------------------------
        opa0, opa1 = Signal(signed(MUL_A)), Signal(signed(MUL_A))
        opb0, opb1 = Signal(signed(MUL_B)), Signal(signed(MUL_B))
        m0, m1 = Signal(signed(MUL_A + MUL_B)), Signal(signed(MUL_A + MUL_B))
        m.d.sync += [m0.eq(opa0 * opb0), m1.eq(opa1 * opb1)]

        # --- engine state -----------------------------------------------------------------------
        s = Signal(range(LOG2))              # FFT stage
        c = Signal(range(STAGE_CYCLES))      # cycle within the stage
        in_fft = Signal()
        in_mag = Signal()
        ph = c[0]                            # 0: read a / issue, 1: read b
        s0 = Signal()
        halve = Signal()
        m.d.comb += [
            s0.eq(s == 0),
            halve.eq(Cat(*(s == v for v in fstft.SCALE_STAGES)).any()),
        ]

        # address generation: butterfly k = c >> 1 of stage s reads/writes ia = k with a 0
        # inserted at bit s, then ib = ia | 2**s; twiddle index (k mod 2**s) * 2**(8 - s)
        raddr = Signal(LOG2)
        waddr = Signal(LOG2)
        twaddr = Signal(LOG2 - 1)
        cw = Signal(range(STAGE_CYCLES))
        m.d.comb += cw.eq(c - FFT_LATENCY)
        with m.Switch(s):
            for sv in range(LOG2):
                with m.Case(sv):
                    m.d.comb += [
                        raddr.eq(Cat(c[1:sv + 1], c[0], c[sv + 1:LOG2])),
                        waddr.eq(Cat(cw[1:sv + 1], cw[0], cw[sv + 1:LOG2])),
                        twaddr.eq(Cat(Const(0, LOG2 - 1 - sv), c[1:sv + 1])),
                    ]

        # butterfly pipeline registers (see the module docstring for the schedule)
        a_re, a_im = Signal(signed(DW)), Signal(signed(DW))          # a, read at ph 0
        a2_re, a2_im = Signal(signed(DW)), Signal(signed(DW))        # a, one butterfly later
        b_re, b_im = Signal(signed(DW)), Signal(signed(DW))
        wr_re, wr_im = Signal(signed(TWB)), Signal(signed(TWB))
        t_w = MUL_A + MUL_B + 1 - TW_FRAC                            # 28: rounded products
        tr = Signal(signed(t_w))
        ti = Signal(signed(t_w))
        top_re, top_im = Signal(signed(DW)), Signal(signed(DW))
        bot_re, bot_im = Signal(signed(DW)), Signal(signed(DW))

        def rnd(x, sh):
            return (x + (1 << (sh - 1))) >> sh

        win_prod = rnd(m0, fstft.WIN_SHIFT)

        with m.If(ph == 1):
            m.d.sync += [a_re.eq(d_re), a_im.eq(d_im),
                         tr.eq(Mux(s0, win_prod, rnd(m0 - m1, TW_FRAC)))]
        with m.Else():
            m.d.sync += [b_re.eq(d_re), b_im.eq(d_im), wr_re.eq(w_re), wr_im.eq(w_im)]
            with m.If(s0):
                m.d.sync += [a2_re.eq(win_prod), a2_im.eq(0)]
            with m.Else():
                m.d.sync += [a2_re.eq(a_re), a2_im.eq(a_im)]
        m.d.comb += ti.eq(Mux(s0, 0, rnd(m0 + m1, TW_FRAC)))

        wide = signed(t_w + 2)
        sums = []
        for a, t, op in ((a2_re, tr, "+"), (a2_im, ti, "+"), (a2_re, tr, "-"), (a2_im, ti, "-")):
            full_v = Signal(wide)
            m.d.comb += full_v.eq(a + t if op == "+" else a - t)
            sums.append(Mux(halve, rnd(full_v, 1), full_v))
        ovf_now = Signal()
        with m.If(ph == 0):
            m.d.sync += [top_re.eq(sums[0]), top_im.eq(sums[1]),
                         bot_re.eq(sums[2]), bot_im.eq(sums[3])]
            fits = [(v >= -(1 << (DW - 1))) & (v < (1 << (DW - 1))) for v in sums]
            m.d.comb += ovf_now.eq(in_fft & (c >= 4) & (c < N + 4) & ~Cat(*fits).all())
        with m.If(ovf_now):
            m.d.sync += self.overflow.eq(1)

        # writes: a' at c = 2k + 5, b' one cycle later
        m.d.comb += [
            d_w.addr.eq(waddr),
            d_w.data.eq(Mux(cw[0], Cat(bot_re, bot_im), Cat(top_re, top_im))),
            d_w.en.eq(in_fft & (c >= FFT_LATENCY)),
        ]

        # --- magnitude reader: bin → re² + im² (radicand) ------------------------------------
        mbin = Signal(range(NB + 1))
        mv = Signal(3)                       # read issued 1 / 2 / 3 cycles ago
        im_hold = Signal(signed(DW))
        sq = Signal(2 * DW)
        rad = Signal(2 * DW)
        rad_full = Signal()
        rad_take = Signal()
        mag_issue = Signal()
        m.d.comb += mag_issue.eq(in_mag & (mbin < NB) & (mv == 0) & ~rad_full)
        m.d.sync += mv.eq(Cat(mag_issue, mv[0], mv[1]))
        with m.If(mag_issue):
            m.d.sync += mbin.eq(mbin + 1)
        sq_x = Signal(signed(DW))
        m.d.comb += sq_x.eq(Mux(mv[0], d_re, im_hold))
        with m.If(mv[0]):
            m.d.sync += im_hold.eq(d_im)
        part = m0 + (m1 << SQ_SPLIT)         # x·lo + x·hi·2^17 = x²
        with m.If(mv[1]):
            m.d.sync += sq.eq(part)
        with m.If(mv[2]):
            m.d.sync += [rad.eq(sq + part), rad_full.eq(1)]
        with m.Elif(rad_take):
            m.d.sync += rad_full.eq(0)

        # multiplier operands
        with m.If(in_mag):
            m.d.comb += [
                opa0.eq(sq_x), opb0.eq(sq_x[:SQ_SPLIT]),                  # x · (x mod 2^17)
                opa1.eq(sq_x), opb1.eq(sq_x[SQ_SPLIT:].as_signed()),    # x · (x >> 17)
            ]
        with m.Elif(s0):
            m.d.comb += [opa0.eq(in_r.data), opb0.eq(win_r.data)]        # x · w
        with m.Elif(ph == 0):
            m.d.comb += [opa0.eq(d_re), opb0.eq(w_re), opa1.eq(d_im), opb1.eq(w_im)]
        with m.Else():
            m.d.comb += [opa0.eq(b_re), opb0.eq(wr_im), opa1.eq(b_im), opb1.eq(wr_re)]

        # read addresses
        m.d.comb += [
            in_r.addr.eq(Cat(_bitrev(raddr), proc)),
            win_r.addr.eq(_bitrev(raddr)),
            tw_r.addr.eq(twaddr),
            d_r.addr.eq(Mux(in_mag, mbin, raddr)),
        ]

        # --- sequencing ---------------------------------------------------------------------------
        with m.FSM(name="engine"):
            with m.State("IDLE"):
                with m.If(full.bit_select(proc, 1)):
                    m.d.sync += [s.eq(0), c.eq(0)]
                    m.next = "FFT"
            with m.State("FFT"):
                m.d.comb += in_fft.eq(1)
                m.d.sync += c.eq(c + 1)
                with m.If(c == STAGE_CYCLES - 1):
                    m.d.sync += [c.eq(0), s.eq(s + 1)]
                    with m.If(s0):          # input half read completely: hand it back
                        m.d.comb += clr_full.bit_select(proc, 1).eq(1)
                        m.d.sync += proc.eq(~proc)
                    with m.If(s == LOG2 - 1):
                        m.d.sync += [s.eq(0), mbin.eq(0)]
                        m.next = "MAG"
            with m.State("MAG"):
                m.d.comb += in_mag.eq(1)
                with m.If((mbin == NB) & (mv == 0)):
                    m.next = "IDLE"         # last radicand formed: RAM and multipliers free

        # --- square root: digit by digit, sqrt_bits_per_cycle result bits per cycle ------------
        RB = 2 * MAG_BITS                    # radicand bits the root consumes (48)
        sh = Signal(RB)
        q = Signal(MAG_BITS)
        r = Signal(MAG_BITS + 2)
        sat = Signal()
        cnt = Signal(range(self.sqrt_cycles))
        root_busy = Signal()
        res = Signal(MAG_BITS)
        res_pending = Signal()
        out_free = ~self.o.valid | self.o.ready
        push = Signal()
        m.d.comb += [
            push.eq(res_pending & out_free),
            rad_take.eq(rad_full & ~root_busy & (~res_pending | push)),
        ]

        r_c, q_c, sh_c = r, q, sh
        for _ in range(self.sqrt_bits_per_cycle):
            r2 = Cat(sh_c[RB - 2:], r_c)                 # (r << 2) | next two radicand bits
            trial = Cat(Const(1, 2), q_c)                # (q << 2) | 1
            ge = r2 >= trial
            r_c = Mux(ge, r2 - trial, r2)[:MAG_BITS + 2]
            q_c = Cat(ge, q_c)[:MAG_BITS]
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

        engine_idle = Signal()
        m.d.comb += [
            engine_idle.eq(~in_fft & ~in_mag),
            self.busy.eq(~engine_idle | (full != 0) | (le != 0) | rad_full | root_busy |
                         res_pending | self.o.valid),
        ]
        return m
