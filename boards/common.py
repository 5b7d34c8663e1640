"""The board-independent part of every board top: host link over a UART (the protocol engine of
:mod:`nanomamba_hw.protocol` in hardware), optional I2S audio capture, and the status shown on
LEDs, around any NanoMamba accelerator. A board module (``boards/arty_a7.py``,
``boards/ulx3s.py``, …) subclasses :class:`BoardTop` and only says how the pins and clocks of
its board reach this logic (:meth:`BoardTop.board_pins`).

Data path::

    uart rx ─ UARTReceiver ─ packet parser (FSM) ─┬─ sample FIFO ─┐
                                                  │               ├─ mux ─ accelerator.pcm
    I2S ADC (audio domain) ─ I2SReceiver ─────────┼───────────────┘
                                                  └─ register port
    accelerator.result ─ verdict gate ─ packet sender ─ UARTTransmitter ─ uart tx

The parser hunts for ``NM``, reads the command, streams a CLIP's samples into the accelerator as
they arrive and checks the checksum at the end. Each completed clip gets a *verdict* (send, or
drop when the checksum was bad) in a small FIFO; the accelerator's results are matched to
verdicts in order, so a result is only sent for a clip whose checksum was right. See
``boards/README.md`` for the protocol and each board's wiring and LEDs.

With ``platform=None`` (simulation) the pins are the component's ports: ``rx``, ``tx``, ``led``
(class index, 4 bits), ``rgb`` (four RGB LEDs, PWM-dimmed, 12 bits) and, with ``audio="i2s2"``,
``button``, ``i2s_mclk``, ``i2s_lrck``, ``i2s_sclk``, ``i2s_sdout``; the simulator creates the
``audio`` domain. Boards without RGB LEDs show the same state on plain LEDs through the
single-bit status signals :attr:`BoardTop.status` (``heartbeat``, ``active``, ``error``,
``recording``, ``audio_lost``).
"""

from amaranth.hdl import (
    Array,
    C,
    Cat,
    Const,
    Module,
    Mux,
    ResetInserter,
    Signal,
    signed,
)
from amaranth.lib import cdc, fifo, io, wiring
from amaranth.lib.wiring import In, Out

from nanomamba_hw.config import CLIP_SAMPLES
from nanomamba_hw.hw.accel_if import N_REGS, AcceleratorSignature
from nanomamba_hw.hw.i2s import I2SReceiver
from nanomamba_hw.hw.uart import UARTReceiver, UARTTransmitter, baud_divisor
from nanomamba_hw.protocol import SYNC, Cmd, ErrorCode

__all__ = ["BoardTop", "CLASS_COLOURS", "STATUS_NAMES", "pin_buffer"]

# RGB LED 0 colour per class (8-bit PWM duty; RGB LEDs are very bright, so all dim).
CLASS_COLOURS = (
    (0, 48, 0),     # yes      green
    (48, 0, 0),     # no       red
    (0, 0, 48),     # up       blue
    (40, 24, 0),    # down     yellow
    (0, 32, 32),    # left     cyan
    (32, 0, 32),    # right    magenta
    (24, 24, 24),   # on       white
    (48, 12, 0),    # off      orange
    (48, 4, 16),    # stop     pink
    (16, 48, 0),    # go       lime
    (0, 0, 6),      # silence  faint blue
    (6, 6, 6),      # unknown  faint white
)

# Single-bit status, for boards with plain LEDs (the RGB port shows the same, in colour):
# heartbeat 1 Hz blink; active: a clip is being received or computed; error: 0.25 s after an
# ERROR packet; recording: an I2S clip is being recorded; audio_lost: I2S samples were lost.
STATUS_NAMES = ("heartbeat", "active", "error", "recording", "audio_lost")


def pin_buffer(m, direction, port, name):
    """An ``io.Buffer`` on a requested (``dir="-"``) pin, added to ``m`` as ``name``."""
    m.submodules[name] = buf = io.Buffer(direction, port)
    return buf


class BoardTop(wiring.Component):
    """Board-independent top around ``accelerator`` (any :class:`AcceleratorSignature`).

    Subclasses implement :meth:`board_pins` (the board's pins, clocks and reset) and may
    restrict :attr:`AUDIO_MODES`.

    Parameters
    ----------
    accelerator : wiring.Component
        Anything with an :class:`AcceleratorSignature` (the real accelerator or
        :class:`~nanomamba_hw.hw.accel_if.DummyAccelerator`).
    baud : int
        UART rate; the host tool's default is 921,600.
    clk_freq : float
        ``sync`` clock frequency (simulations use e.g. 4 MHz with 1 Mbaud).
    audio : "uart" or "i2s2"
        ``"uart"``: clips come from the host only. ``"i2s2"``: additionally, a button records
        ``clip_len`` samples from an I2S ADC and the RESULT is sent over the UART too.
    clip_len : int or None
        Samples per clip; default: the accelerator's ``clip_len`` attribute, else 16,000.
    idle_timeout : float
        Seconds of line silence after which a half-received packet is abandoned, and after
        which the board listens again following an error that lost the packet boundary.
    debounce : float
        Seconds the record button must be stable.
    sample_fifo_depth : int
        Samples buffered between the UART and a momentarily busy accelerator.
    """

    AUDIO_MODES = ("uart", "i2s2")

    def __init__(self, accelerator, *, baud: int = 921600, clk_freq: float = 100e6,
                 audio: str = "uart", clip_len: int | None = None, idle_timeout: float = 0.1,
                 debounce: float = 0.01, sample_fifo_depth: int = 64):
        sig = getattr(accelerator, "signature", None)
        try:
            if audio not in self.AUDIO_MODES:
                raise ValueError(f"audio must be {' or '.join(map(repr, self.AUDIO_MODES))} "
                                 f"on this board, got {audio!r}")
            if not isinstance(sig, AcceleratorSignature):
                raise TypeError(f"accelerator must have an AcceleratorSignature, not {sig!r}")
            self.divisor = baud_divisor(clk_freq, baud)
        except (ValueError, TypeError):
            self._MustUse__silence = True      # no "never elaborated" warning for a refused one
            raise
        self.accelerator = accelerator
        self.n_classes = sig.n_classes
        self.logit_bits = sig.logit_bits
        self.baud = baud
        self.clk_freq = clk_freq
        self.audio = audio
        self.clip_len = clip_len or getattr(accelerator, "clip_len", CLIP_SAMPLES)
        self.idle_cycles = max(1, int(idle_timeout * clk_freq))
        self.debounce_cycles = max(1, int(debounce * clk_freq))
        self.sample_fifo_depth = sample_fifo_depth
        self.status = type("Status", (), {n: Signal(name=f"status_{n}") for n in STATUS_NAMES})
        members = {"rx": In(1, init=1), "tx": Out(1, init=1), "led": Out(4), "rgb": Out(12)}
        if audio == "i2s2":
            members |= {"button": In(1), "i2s_mclk": Out(1), "i2s_lrck": Out(1),
                        "i2s_sclk": Out(1), "i2s_sdout": In(1)}
        super().__init__(members)

    # --- pins ----------------------------------------------------------------------------------

    def _pins(self, m, platform):
        """Internal pin signals: the ports in simulation, the board's resources otherwise."""
        if platform is None:
            return self
        return self.board_pins(m, platform)

    def board_pins(self, m, platform):
        """Connect the board: drive its output pins from ``self.tx``, ``self.led``, ``self.rgb``
        (or :attr:`status`), the I2S outputs; create the ``sync`` domain unless the platform's
        default clock is meant (and ``audio`` with ``audio="i2s2"``); return an object with the
        input pins as attributes ``rx`` (and ``button``, ``i2s_sdout`` with ``"i2s2"``)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to connect a board")

    # --- design --------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        pins = self._pins(m, platform)
        accel = self.accelerator
        m.submodules.accel = accel
        clip_len = self.clip_len

        m.submodules.uart_rx = rx = UARTReceiver(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.uart_tx = tx = UARTTransmitter(clk_freq=self.clk_freq, baud=self.baud)
        m.d.comb += [rx.rx.eq(pins.rx), self.tx.eq(tx.tx), rx.o.ready.eq(1)]

        clip_start = Signal()          # to the accelerator (and flushes the sample FIFO)
        m.submodules.samples = samples = ResetInserter(clip_start)(
            fifo.SyncFIFO(width=16, depth=self.sample_fifo_depth))
        m.submodules.verdicts = verdicts = fifo.SyncFIFO(width=1, depth=4)
        m.d.comb += accel.clip_start.eq(clip_start)

        # Requests to the packet sender: an error, a register reply. Set by the parser and the
        # capture logic, cleared by the sender; a set in the same cycle wins (written later).
        err_pending, err_code = Signal(), Signal(8)
        reply_pending, reply_cmd = Signal(), Signal(8)
        reply_addr, reply_value = Signal(8), Signal(32)
        error_sent = Signal()
        shown = Signal(4)              # class on the LEDs
        have_result = Signal()

        self._sender(m, tx, accel, verdicts, err_pending, err_code, reply_pending, reply_cmd,
                     reply_addr, reply_value, error_sent, shown, have_result)

        # --- audio capture (i2s2) ---
        capturing = Signal()
        uart_clip = Signal()           # the parser is inside a CLIP packet
        i2s_overflow = Signal()
        pcm = accel.pcm
        if self.audio == "i2s2":
            m.submodules.i2s = i2s = I2SReceiver(domain="audio")
            m.d.comb += [self.i2s_mclk.eq(i2s.mclk), self.i2s_lrck.eq(i2s.lrck),
                         self.i2s_sclk.eq(i2s.sclk), i2s.sdout.eq(pins.i2s_sdout),
                         i2s_overflow.eq(i2s.overflow)]
            pressed = self._button(m, pins.button)
            captured = Signal(range(clip_len))
            start_capture = Signal()
            # A press is ignored while a complete clip is still on its way (its result must come
            # out first); a partial clip left in the accelerator is abandoned by clip_start.
            idle = ~capturing & ~uart_clip & ~samples.r_rdy & ~verdicts.r_rdy
            m.d.comb += start_capture.eq(pressed & idle)
            with m.If(start_capture):
                m.d.comb += clip_start.eq(1)
                m.d.sync += [capturing.eq(1), captured.eq(0)]
            with m.If(capturing):
                m.d.comb += [pcm.payload.eq(i2s.o.payload), pcm.valid.eq(i2s.o.valid),
                             i2s.o.ready.eq(pcm.ready), samples.r_en.eq(1)]
                with m.If(pcm.valid & pcm.ready):
                    m.d.sync += captured.eq(captured + 1)
                    with m.If(captured == clip_len - 1):
                        m.d.sync += capturing.eq(0)
                        m.d.comb += [verdicts.w_en.eq(1), verdicts.w_data.eq(1)]
            with m.Else():
                m.d.comb += [pcm.payload.eq(samples.r_data),
                             pcm.valid.eq(samples.r_rdy & ~clip_start),
                             samples.r_en.eq(pcm.ready & ~clip_start), i2s.o.ready.eq(1)]
        else:
            start_capture = C(0, 1)
            m.d.comb += [pcm.payload.eq(samples.r_data), pcm.valid.eq(samples.r_rdy & ~clip_start),
                         samples.r_en.eq(pcm.ready & ~clip_start)]

        self._parser(m, rx, accel, samples, verdicts, clip_start, start_capture, capturing,
                     uart_clip, err_pending, err_code, reply_pending, reply_cmd, reply_addr,
                     reply_value)
        self._leds(m, accel, shown, have_result, error_sent, uart_clip, capturing, i2s_overflow)
        return m

    def _button(self, m, pin):
        """BTN0 synchronised and debounced; returns a one-cycle pulse per press."""
        raw, stable, prev = Signal(), Signal(), Signal()
        m.submodules.button_sync = cdc.FFSynchronizer(pin, raw)
        count = Signal(range(self.debounce_cycles + 1))
        with m.If(raw == stable):
            m.d.sync += count.eq(0)
        with m.Elif(count == self.debounce_cycles):
            m.d.sync += [stable.eq(raw), count.eq(0)]
        with m.Else():
            m.d.sync += count.eq(count + 1)
        m.d.sync += prev.eq(stable)
        return stable & ~prev

    def _parser(self, m, rx, accel, samples, verdicts, clip_start, start_capture, capturing,
                uart_clip, err_pending, err_code, reply_pending, reply_cmd, reply_addr,
                reply_value):
        byte, got = rx.o.payload, rx.o.valid
        csum = Signal(16)
        cmd = Signal(8)
        addr = Signal(8)
        wdata = Signal(32)
        nbytes = Signal(range(4))
        lo = Signal(8)
        nsamp = Signal(range(self.clip_len))
        ck_lo = Signal(8)
        lost = Signal()                # a sample of this CLIP did not reach the accelerator
        silent = Signal(range(self.idle_cycles + 1))
        timed_out = silent == self.idle_cycles

        with m.If(got):
            m.d.sync += silent.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += silent.eq(silent + 1)

        def error(code):
            m.d.sync += [err_pending.eq(1), err_code.eq(code)]

        # register port: address from the packet, write strobe from the checksum state
        in_range = addr < N_REGS
        m.d.comb += [accel.reg_addr.eq(addr[:4]), accel.reg_wdata.eq(wdata)]

        def packet_state(name, body, *, summed=True):
            """A state inside a packet: line errors and silence abort it."""
            with m.State(name):
                with m.If(rx.frame_err | rx.overrun):
                    error(Mux(rx.frame_err, ErrorCode.FRAMING, ErrorCode.OVERRUN))
                    m.next = "DISCARD"
                with m.Elif(timed_out):
                    m.next = "SYNC0"
                with m.Elif(got):
                    if summed:
                        m.d.sync += csum.eq(csum + byte)
                    body()

        with m.FSM() as fsm:
            with m.State("SYNC0"):
                with m.If(got & (byte == SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                with m.If(got):
                    with m.If(byte == SYNC[1]):
                        m.next = "CMD"
                    with m.Elif(byte != SYNC[0]):
                        m.next = "SYNC0"

            def on_cmd():
                m.d.sync += [cmd.eq(byte), csum.eq(SYNC[0] + SYNC[1] + byte)]
                with m.Switch(byte):
                    with m.Case(Cmd.CLIP):
                        # during an I2S capture the UART clip cannot reach the accelerator
                        with m.If(capturing | start_capture):
                            m.d.sync += lost.eq(1)
                        with m.Else():
                            m.d.comb += clip_start.eq(1)
                            m.d.sync += lost.eq(0)
                        m.d.sync += nsamp.eq(0)
                        m.next = "CLIP_LO"
                    with m.Case(Cmd.WRITE_REG, Cmd.READ_REG):
                        m.next = "ADDR"
                    with m.Default():
                        error(ErrorCode.UNKNOWN_COMMAND)
                        m.next = "DISCARD"
            packet_state("CMD", on_cmd)

            def on_addr():
                m.d.sync += [addr.eq(byte), nbytes.eq(0)]
                with m.If(cmd == Cmd.READ_REG):
                    m.next = "CK_LO"
                with m.Else():
                    m.next = "DATA"
            packet_state("ADDR", on_addr)

            def on_data():
                m.d.sync += [wdata.eq(Cat(wdata[8:], byte)), nbytes.eq(nbytes + 1)]
                with m.If(nbytes == 3):
                    m.next = "CK_LO"
            packet_state("DATA", on_data)

            def on_clip_lo():
                m.d.sync += lo.eq(byte)
                m.next = "CLIP_HI"
            packet_state("CLIP_LO", on_clip_lo)

            def on_clip_hi():
                m.d.comb += [samples.w_data.eq(Cat(lo, byte)),
                             samples.w_en.eq(~lost & ~capturing)]
                with m.If(~samples.w_rdy | capturing):
                    m.d.sync += lost.eq(1)
                m.d.sync += nsamp.eq(nsamp + 1)
                m.next = "CLIP_LO"
                with m.If(nsamp == self.clip_len - 1):
                    m.next = "CK_LO"
            packet_state("CLIP_HI", on_clip_hi)

            def on_ck_lo():
                m.d.sync += ck_lo.eq(byte)
                m.next = "CK_HI"
            packet_state("CK_LO", on_ck_lo, summed=False)

            def on_ck_hi():
                ok = Cat(ck_lo, byte) == csum
                m.next = "SYNC0"
                with m.Switch(cmd):
                    with m.Case(Cmd.CLIP):
                        with m.If(lost):
                            error(ErrorCode.OVERRUN)
                        with m.Else():
                            # a result will come for this clip: send it, or drop it
                            m.d.comb += [verdicts.w_en.eq(1), verdicts.w_data.eq(ok)]
                            with m.If(~ok):
                                error(ErrorCode.CHECKSUM)
                    with m.Case(Cmd.WRITE_REG):
                        with m.If(ok):
                            m.d.comb += accel.reg_we.eq(in_range)
                            m.d.sync += [reply_pending.eq(1), reply_cmd.eq(Cmd.ACK),
                                         reply_addr.eq(addr)]
                        with m.Else():
                            error(ErrorCode.CHECKSUM)
                    with m.Case(Cmd.READ_REG):
                        with m.If(ok):
                            m.d.sync += [reply_pending.eq(1), reply_cmd.eq(Cmd.REG),
                                         reply_addr.eq(addr),
                                         reply_value.eq(Mux(in_range, accel.reg_rdata, 0))]
                        with m.Else():
                            error(ErrorCode.CHECKSUM)
            packet_state("CK_HI", on_ck_hi, summed=False)

            with m.State("DISCARD"):
                # the packet boundary is lost: wait for the line to fall silent
                with m.If(timed_out):
                    m.next = "SYNC0"

        m.d.comb += uart_clip.eq((cmd == Cmd.CLIP) & (fsm.ongoing("CLIP_LO") |
                                 fsm.ongoing("CLIP_HI") | fsm.ongoing("CK_LO") |
                                 fsm.ongoing("CK_HI")))

    def _sender(self, m, tx, accel, verdicts, err_pending, err_code, reply_pending, reply_cmd,
                reply_addr, reply_value, error_sent, shown, have_result):
        """Serialises ERROR, ACK/REG and RESULT packets (in that priority) into the UART."""
        n = self.n_classes
        result_len = 3 + 2 + 4 * n + 4       # bytes before the checksum
        body = Signal(8 * result_len)
        left = Signal(range(result_len + 1))
        csum = Signal(16)
        head = lambda cmd: Cat(C(SYNC[0], 8), C(SYNC[1], 8), C(cmd, 8))

        res = accel.result.payload
        logits32 = []
        for i in range(n):
            v = Signal(signed(32), name=f"logit{i}_i32")
            m.d.comb += v.eq(res.logits[i])       # sign-extends logit_bits to int32
            logits32.append(v)
        result_body = Cat(head(Cmd.RESULT), res.index, C(0, 4), C(n, 8), *logits32, res.cycles)

        m.d.comb += tx.i.payload.eq(body[:8])
        with m.FSM():
            with m.State("IDLE"):
                with m.If(err_pending):
                    m.d.sync += [body.eq(Cat(head(Cmd.ERROR), err_code)), left.eq(4),
                                 err_pending.eq(0), csum.eq(0)]
                    m.d.comb += error_sent.eq(1)
                    m.next = "BODY"
                with m.Elif(reply_pending):
                    m.d.sync += [body.eq(Cat(C(SYNC[0], 8), C(SYNC[1], 8), reply_cmd,
                                             reply_addr, reply_value)),
                                 left.eq(Mux(reply_cmd == Cmd.ACK, 4, 8)),
                                 reply_pending.eq(0), csum.eq(0)]
                    m.next = "BODY"
                with m.Elif(verdicts.r_rdy & accel.result.valid):
                    m.d.comb += [verdicts.r_en.eq(1), accel.result.ready.eq(1)]
                    with m.If(verdicts.r_data):
                        m.d.sync += [body.eq(result_body), left.eq(result_len), csum.eq(0),
                                     shown.eq(res.index), have_result.eq(1)]
                        m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += tx.i.valid.eq(1)
                with m.If(tx.i.ready):
                    m.d.sync += [body.eq(body >> 8), csum.eq(csum + body[:8]), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "CK_LO"
            with m.State("CK_LO"):
                m.d.comb += [tx.i.valid.eq(1), tx.i.payload.eq(csum[:8])]
                with m.If(tx.i.ready):
                    m.next = "CK_HI"
            with m.State("CK_HI"):
                m.d.comb += [tx.i.valid.eq(1), tx.i.payload.eq(csum[8:])]
                with m.If(tx.i.ready):
                    m.next = "IDLE"

    def _leds(self, m, accel, shown, have_result, error_sent, uart_clip, capturing, i2s_overflow):
        """LED 0–3: class index in binary. RGB 0: class colour. RGB 1: heartbeat (blue, 1 Hz).
        RGB 2: green while a clip is in flight, red for 0.25 s after an ERROR. RGB 3 (i2s2):
        red while recording, yellow once audio samples were lost. The same as single bits in
        :attr:`status`."""
        m.d.comb += self.led.eq(Mux(have_result, shown, 0))

        pwm = Signal(8)
        m.d.sync += pwm.eq(pwm + 1)

        def colour(r, g, b):
            return Cat(pwm < r, pwm < g, pwm < b)

        table = Array(Const(r | g << 8 | b << 16, 24) for r, g, b in
                      (CLASS_COLOURS + ((0, 0, 0),) * 16)[:16])
        entry = table[shown]
        rgb0 = Mux(have_result, colour(entry[:8], entry[8:16], entry[16:]), 0)

        half_second = max(1, int(self.clk_freq / 2))
        beat, beat_count = Signal(), Signal(range(half_second))
        with m.If(beat_count == half_second - 1):
            m.d.sync += [beat_count.eq(0), beat.eq(~beat)]
        with m.Else():
            m.d.sync += beat_count.eq(beat_count + 1)
        rgb1 = Mux(beat, colour(0, 0, 16), 0)

        quarter = max(1, int(self.clk_freq / 4))
        err_led = Signal(range(quarter + 1))
        with m.If(error_sent):
            m.d.sync += err_led.eq(quarter)
        with m.Elif(err_led != 0):
            m.d.sync += err_led.eq(err_led - 1)
        rgb2 = Mux(err_led != 0, colour(32, 0, 0),
                   Mux(accel.busy | uart_clip | capturing, colour(0, 24, 0), 0))
        rgb3 = Mux(capturing, colour(32, 0, 0), Mux(i2s_overflow, colour(32, 24, 0), 0))
        m.d.comb += self.rgb.eq(Cat(rgb0, rgb1, rgb2, rgb3))
        st = self.status
        m.d.comb += [st.heartbeat.eq(beat), st.error.eq(err_led != 0),
                     st.active.eq(accel.busy | uart_clip | capturing),
                     st.recording.eq(capturing), st.audio_lost.eq(i2s_overflow)]
