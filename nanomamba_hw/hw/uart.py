"""8N1 UART receiver and transmitter with ``amaranth.lib.stream`` byte ports.

Both run in the ``sync`` domain at ``clk_freq`` and derive one bit period from
:func:`baud_divisor` (``round(clk_freq / baud)`` clock cycles). The divisor is refused when the
resulting baud rate is more than 2 % off: with mid-bit sampling, a frame of 10 bits tolerates a
total sender+receiver mismatch of about 5 %, and each side should stay well inside half of that.

Receiver: the pin passes a 2-FF :class:`~amaranth.lib.cdc.FFSynchronizer`; a falling edge starts a
frame, the start bit is checked again in its middle (a glitch is ignored), and each data bit and
the stop bit are sampled in their middle. A low stop bit drops the byte, pulses ``frame_err`` and
waits for the line to go high again (a "break" gives one error, not a stream of zeros). The
received byte is held on ``o`` until accepted; a byte that completes while the previous one is
still waiting is dropped, pulses ``overrun`` and is counted in ``overrun_count``.

Transmitter: accepts a byte on ``i`` whenever it is idle and shifts out start, 8 data bits
(LSB first) and a stop bit from a register, so ``tx`` is glitch-free.
"""


from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["baud_divisor", "UARTReceiver", "UARTTransmitter"]

MAX_BAUD_ERROR = 0.02
MIN_DIVISOR = 4   # the receiver needs a few cycles per bit to find the middle of a bit


def baud_divisor(clk_freq: float, baud: float) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq``; ValueError if off by more than 2 %."""
    if clk_freq <= 0 or baud <= 0:
        raise ValueError(f"clock frequency and baud rate must be positive, got {clk_freq}, {baud}")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud rate {baud:g} is too fast for a {clk_freq / 1e6:g} MHz clock: "
                         f"{clk_freq / baud:.2f} cycles per bit, need at least {MIN_DIVISOR}")
    actual = clk_freq / divisor
    error = actual / baud - 1
    if abs(error) > MAX_BAUD_ERROR:
        raise ValueError(f"baud rate {baud:g} cannot be made from a {clk_freq / 1e6:g} MHz clock: "
                         f"divisor {divisor} gives {actual:.0f} baud ({error:+.2%}, limit "
                         f"±{MAX_BAUD_ERROR:.0%})")
    return divisor


class UARTReceiver(wiring.Component):
    """8N1 UART receiver.

    Parameters (keyword-only): ``clk_freq`` (Hz of the ``sync`` domain), ``baud``.

    Members
    -------
    rx : In(1)
        The pin (asynchronous; synchronised inside). Idles high.
    o : Out(stream.Signature(8))
        Received bytes.
    frame_err : Out(1)
        One-cycle pulse when a frame's stop bit was low (the byte is dropped).
    overrun : Out(1)
        One-cycle pulse when a byte was dropped because ``o`` still held the previous one.
    overrun_count : Out(16)
        Saturating count of overruns since reset.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    frame_err: Out(1)
    overrun: Out(1)
    overrun_count: Out(16)

    def __init__(self, *, clk_freq: float, baud: float):
        self.clk_freq = clk_freq
        self.baud = baud
        try:
            self.divisor = baud_divisor(clk_freq, baud)
        except ValueError:
            self._MustUse__silence = True      # no "never elaborated" warning for a refused one
            raise
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor

        rx = Signal(init=1)
        m.submodules.sync = cdc.FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(d))
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # half a bit to the middle of the start bit (the synchroniser already
                    # delayed the edge, which shifts every sample point equally)
                    m.d.sync += timer.eq((d - 1) // 2)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.next = "IDLE"          # glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(d - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(rx):
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.comb += self.overrun.eq(1)
                            with m.If(self.overrun_count != 0xFFFF):
                                m.d.sync += self.overrun_count.eq(self.overrun_count + 1)
                        with m.Else():
                            m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.frame_err.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """8N1 UART transmitter.

    Parameters (keyword-only): ``clk_freq`` (Hz of the ``sync`` domain), ``baud``.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; ``ready`` is high while the transmitter is idle.
    tx : Out(1)
        The pin, driven from a register; idles high.
    busy : Out(1)
        A frame is being shifted out.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, *, clk_freq: float, baud: float):
        self.clk_freq = clk_freq
        self.baud = baud
        try:
            self.divisor = baud_divisor(clk_freq, baud)
        except ValueError:
            self._MustUse__silence = True      # no "never elaborated" warning for a refused one
            raise
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor

        timer = Signal(range(d))
        left = Signal(range(11))          # bits still to send, including the one on the line
        shreg = Signal(10, init=0x3FF)    # the frame, LSB on the line first

        m.d.comb += [self.tx.eq(shreg[0]), self.busy.eq(left != 0),
                     self.i.ready.eq(left == 0)]

        with m.If(left == 0):
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq(Cat(0, self.i.payload, 1)), timer.eq(d - 1),
                             left.eq(10)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), timer.eq(d - 1), left.eq(left - 1)]
        return m
