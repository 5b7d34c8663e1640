"""Digilent Arty A7 (35T / 100T) board top: host link over the USB-UART, optional Pmod I2S2
microphone/line input, class display on the LEDs, around any NanoMamba accelerator.

The board-independent logic (UART packet parser and sender, sample FIFO, I2S capture, LED
state) is :class:`boards.common.BoardTop`; this module adds the Arty's pins and clocks. See
``boards/README.md`` for wiring, LEDs and the protocol.

With ``platform=None`` (simulation) the pins are the component's ports: ``rx``, ``tx``,
``led``, ``rgb`` and, with ``audio="i2s2"``, ``button``, ``i2s_mclk``, ``i2s_lrck``,
``i2s_sclk``, ``i2s_sdout``; the simulator creates the ``audio`` domain, which a test clocks at
8.192 MHz (or anything unrelated to ``sync``). On a board, ``sync`` is the platform's 100 MHz
``clk100`` with the reset button, and ``audio`` comes from an MMCM (:func:`mmcm_params`).
"""

from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.hdl import C, ClockDomain, ClockSignal, Instance, ResetSignal, Signal
from amaranth.lib import cdc
from amaranth_boards.arty_a7 import ArtyA7_35Platform, ArtyA7_100Platform

from nanomamba_hw.hw.i2s import AUDIO_CLK_FREQ

from .common import CLASS_COLOURS, BoardTop, pin_buffer

__all__ = ["ArtyA7Top", "ArtyA7_35Platform", "ArtyA7_100Platform", "pmod_i2s2_resource",
           "mmcm_params", "CLASS_COLOURS", "PLATFORMS"]

PLATFORMS = {"arty_a7": ArtyA7_35Platform, "arty_a7_35": ArtyA7_35Platform,
             "arty_a7_100": ArtyA7_100Platform}


def pmod_i2s2_resource(conn=("pmod", 0), number=0) -> Resource:
    """The line-in (CS5343 ADC) half of a Digilent Pmod I2S2 on a Pmod port (JA by default).

    Pmod I2S2 header J1: pins 1–4 are the D/A (line out: MCLK, LRCK, SCLK, SDIN), pins 7–10 the
    A/D (line in: MCLK, LRCK, SCLK, SDOUT). Only the A/D is used; its JP1 jumper must be on SLV.
    """
    return Resource("pmod_i2s2_adc", number,
                    Subsignal("mclk", Pins("7", dir="o", conn=conn)),
                    Subsignal("lrck", Pins("8", dir="o", conn=conn)),
                    Subsignal("sclk", Pins("9", dir="o", conn=conn)),
                    Subsignal("sdout", Pins("10", dir="i", conn=conn)),
                    Attrs(IOSTANDARD="LVCMOS33"))


def mmcm_params(f_in: float, f_out: float) -> tuple[float, int, float]:
    """7-series MMCM settings (CLKFBOUT_MULT_F, DIVCLK_DIVIDE, CLKOUT0_DIVIDE_F) for f_out.

    Searches the legal grid (M and O0 in steps of 1/8, PFD ≥ 10 MHz, VCO 600–1200 MHz, the -1
    speed grade) and returns the closest setting; ValueError if it is more than 100 ppm off.
    For 100 MHz → 8.192 MHz this is M = 32, D = 5, O0 = 78.125 (VCO 640 MHz), exact.
    """
    best = None
    for d in range(1, 107):
        pfd = f_in / d
        if pfd < 10e6:
            break
        for m8 in range(16, 64 * 8 + 1):
            vco = pfd * m8 / 8
            if not 600e6 <= vco <= 1200e6:
                continue
            o8 = min(max(round(vco * 8 / f_out), 16), 128 * 8)
            err = abs(vco * 8 / o8 - f_out) / f_out
            if best is None or err < best[0]:
                best = (err, m8 / 8, d, o8 / 8)
    if best is None or best[0] > 100e-6:
        raise ValueError(f"no MMCM setting makes {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    return best[1:]


class ArtyA7Top(BoardTop):
    """Board top for the Arty A7 around ``accelerator`` (any
    :class:`~nanomamba_hw.hw.accel_if.AcceleratorSignature`); parameters as
    :class:`boards.common.BoardTop` (``clk_freq`` must be the board's 100 MHz outside
    simulation). ``audio="i2s2"``: BTN0 records a clip from a Pmod I2S2 on JA.
    """

    # --- pins ----------------------------------------------------------------------------------

    def board_pins(self, m, platform):
        """clk100 (the platform's default clock, RESET button) is ``sync``; UART, four LEDs,
        four RGB LEDs and, with ``"i2s2"``, BTN0, the Pmod I2S2 on JA and the audio MMCM."""
        if platform.default_clk_frequency != self.clk_freq:
            raise ValueError(f"clk_freq={self.clk_freq:g} but the platform clock is "
                             f"{platform.default_clk_frequency:g} Hz")
        def buffer(direction, port, name):
            return pin_buffer(m, direction, port, name)

        uart = platform.request("uart", 0, dir="-")
        m.d.comb += buffer("o", uart.tx, "uart_tx_pin").o.eq(self.tx)
        pins = {"rx": buffer("i", uart.rx, "uart_rx_pin").i}
        for i in range(4):
            m.d.comb += buffer("o", platform.request("led", i, dir="-"), f"led{i}_pin").o.eq(
                self.led[i])
            rgb = platform.request("rgb_led", i, dir="-")
            for j, colour in enumerate("rgb"):
                m.d.comb += buffer("o", getattr(rgb, colour), f"rgb{i}_{colour}_pin").o.eq(
                    self.rgb[3 * i + j])
        if self.audio == "i2s2":
            pins["button"] = buffer("i", platform.request("button", 0, dir="-"), "btn0_pin").i
            platform.add_resources([pmod_i2s2_resource()])
            i2s = platform.request("pmod_i2s2_adc", 0, dir="-")
            for name in ("mclk", "lrck", "sclk"):
                m.d.comb += buffer("o", getattr(i2s, name), f"i2s_{name}_pin").o.eq(
                    getattr(self, f"i2s_{name}"))
            pins["i2s_sdout"] = buffer("i", i2s.sdout, "i2s_sdout_pin").i
            self._audio_clock(m, platform)
        return type("Pins", (), pins)

    def _audio_clock(self, m, platform):
        """8.192 MHz ``audio`` domain from an MMCM fed by the ``sync`` clock (clk100 via BUFG)."""
        mult, div, odiv = mmcm_params(self.clk_freq, AUDIO_CLK_FREQ)
        m.domains.audio = cd_audio = ClockDomain("audio")
        feedback, clk_out, locked = Signal(), Signal(), Signal()
        m.submodules.audio_mmcm = Instance(
            "MMCME2_BASE",
            p_BANDWIDTH="OPTIMIZED", p_CLKIN1_PERIOD=1e9 / self.clk_freq,
            p_CLKFBOUT_MULT_F=mult, p_DIVCLK_DIVIDE=div, p_CLKOUT0_DIVIDE_F=odiv,
            i_CLKIN1=ClockSignal("sync"), i_CLKFBIN=feedback, o_CLKFBOUT=feedback,
            i_RST=ResetSignal("sync"), i_PWRDWN=C(0, 1),
            o_CLKOUT0=clk_out, o_LOCKED=locked)
        m.submodules.audio_bufg = Instance("BUFG", i_I=clk_out, o_O=cd_audio.clk)
        m.submodules.audio_rst = cdc.ResetSynchronizer(~locked, domain="audio")
        # Only the AsyncFIFO crosses between the two clocks, and it constrains its own
        # synchronisers; its RAM read path must not be timed as a synchronous path.
        pin = "[get_pins -hierarchical -filter {{NAME =~ *audio_mmcm/{}}}]"
        platform.add_file("nanomamba_audio_clock.xdc",
                          f"set_clock_groups -asynchronous "
                          f"-group [get_clocks -of_objects {pin.format('CLKOUT0')}] "
                          f"-group [get_clocks -of_objects {pin.format('CLKIN1')}]\n")
