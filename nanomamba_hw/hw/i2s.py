"""I2S receiver for the Digilent Pmod I2S2 line-in (Cirrus CS5343 ADC, 24-bit I2S).

Clocking (a 16 kHz sample rate directly, no decimation)
-------------------------------------------------------
The CS5343 in slave mode (Pmod I2S2 jumper JP1 on SLV) takes MCLK, LRCK and SCLK from the FPGA.
Its single-speed mode accepts MCLK/LRCK = 256 (or 384) for sample rates of 4–24 kHz, with
SCLK/LRCK = 64, and requires LRCK and SCLK to be derived synchronously from MCLK. So:

=========  =================  ==============================
signal     frequency          derived as
=========  =================  ==============================
``audio``  8.192 MHz          clock domain (512 × 16 kHz)
MCLK       4.096 MHz          ``audio`` / 2  = 256 × Fs
SCLK       1.024 MHz          ``audio`` / 8  = 64 × Fs
LRCK       16 kHz             ``audio`` / 512 = Fs
=========  =================  ==============================

All three are bits of one free-running 9-bit counter in the ``audio`` domain, so they are
registered (glitch-free) and exactly in the ratios the ADC needs. On the Arty A7 the ``audio``
clock comes from an MMCM: 100 MHz × 32 / 5 / 78.125 = 8.192 MHz exactly (VCO 640 MHz), see
``boards/arty_a7.py``. The 48 kHz + decimation alternative was not needed.

Frame format (I2S, MSB first, one SCLK of delay): LRCK low is the left channel. LRCK changes on
a falling SCLK edge; the ADC shifts data out on falling edges; the left sample's MSB is read on
the second rising SCLK edge after LRCK falls (slot 1 of the 32 slots per channel), then 23 more
bits (slots 2–24); slots 25–31 and 0 carry no data. We sample SDOUT in the middle of the SCLK
high phase (after a 2-FF synchroniser, which makes the pin's timing irrelevant at this rate).

The 24-bit sample is truncated to its top 16 bits (``sample >> 8``, i.e. floor) and crosses into
the ``sync`` domain through an :class:`~amaranth.lib.fifo.AsyncFIFO`. If the consumer stalls
until the FIFO is full, new samples are dropped and the sticky ``overflow`` flag is set.
"""


from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import cdc, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SAMPLE_RATE", "AUDIO_CLK_PER_SAMPLE", "AUDIO_CLK_FREQ", "I2SReceiver"]

SAMPLE_RATE = 16000
AUDIO_CLK_PER_SAMPLE = 512                      # audio-domain cycles per LRCK period
AUDIO_CLK_FREQ = AUDIO_CLK_PER_SAMPLE * SAMPLE_RATE   # 8.192 MHz
_SCLK_DIV_BITS = 3                              # SCLK = audio / 8
_SLOT_BITS = 5                                  # 32 SCLK slots per channel
_SAMPLE_PHASE = 6                               # audio cycle within an SCLK period to sample


class I2SReceiver(wiring.Component):
    """I2S master-clock generator and receiver for one channel of a 24-bit ADC.

    Parameters (keyword-only)
    -------------------------
    domain : str
        Clock domain of the I2S side, running at 512 × the sample rate (8.192 MHz for 16 kHz).
    channel : "left" or "right"
        Which channel to deliver.
    fifo_depth : int
        Depth of the clock-crossing FIFO (a power of 2).

    Members
    -------
    mclk, lrck, sclk : Out(1)
        Clocks to the ADC (``audio`` domain, registered).
    sdout : In(1)
        Serial data from the ADC.
    o : Out(stream.Signature(signed(16)))
        Samples in the ``sync`` domain, in order, one per LRCK period while not stalled.
    overflow : Out(1)
        Sticky (until the ``audio`` domain is reset): a sample was dropped because the FIFO was
        full. Synchronised into ``sync``.
    """

    mclk: Out(1)
    lrck: Out(1)
    sclk: Out(1)
    sdout: In(1)
    o: Out(stream.Signature(signed(16)))
    overflow: Out(1)

    def __init__(self, *, domain: str = "audio", channel: str = "left", fifo_depth: int = 16):
        if channel not in ("left", "right"):
            self._MustUse__silence = True      # no "never elaborated" warning for a refused one
            raise ValueError(f"channel must be 'left' or 'right', got {channel!r}")
        self.domain = domain
        self.channel = channel
        self.fifo_depth = fifo_depth
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        audio = m.d[self.domain]

        cnt = Signal(1 + _SCLK_DIV_BITS + _SLOT_BITS)   # 9 bits: one LRCK period
        audio += cnt.eq(cnt + 1)
        m.d.comb += [
            self.mclk.eq(cnt[0]),
            self.sclk.eq(cnt[_SCLK_DIV_BITS - 1]),
            self.lrck.eq(cnt[-1]),
        ]
        phase = cnt[:_SCLK_DIV_BITS]
        slot = cnt[_SCLK_DIV_BITS:-1]
        want_lrck = 0 if self.channel == "left" else 1

        sdout = Signal()
        m.submodules.sdout_sync = cdc.FFSynchronizer(self.sdout, sdout, o_domain=self.domain)

        shreg = Signal(24)
        write = Signal()
        audio += write.eq(0)
        # the synchroniser delays the pin by 2 cycles: phase 6 sees the pin at phase 4, the
        # moment SCLK rose
        with m.If((phase == _SAMPLE_PHASE) & (cnt[-1] == want_lrck) &
                  (slot >= 1) & (slot <= 24)):
            audio += shreg.eq(Cat(sdout, shreg[:-1]))
            with m.If(slot == 24):
                audio += write.eq(1)

        m.submodules.fifo = cross = fifo.AsyncFIFO(width=16, depth=self.fifo_depth,
                                                   w_domain=self.domain, r_domain="sync")
        overflow = Signal()
        m.d.comb += [cross.w_data.eq(shreg[8:]), cross.w_en.eq(write)]
        with m.If(write & ~cross.w_rdy):
            audio += overflow.eq(1)
        m.submodules.overflow_sync = cdc.FFSynchronizer(overflow, self.overflow, o_domain="sync")

        m.d.comb += [
            self.o.payload.eq(cross.r_data),
            self.o.valid.eq(cross.r_rdy),
            cross.r_en.eq(self.o.ready),
        ]
        return m
