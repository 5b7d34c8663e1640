"""Lattice ECP5 Versa (LFE5UM-45F-8BG381) board top: host link over the FTDI USB-UART and the
class on the LEDs, around any NanoMamba accelerator (the board-independent logic is
:class:`boards.common.BoardTop`).

- ``sync``: the EHXPLLL makes ``clk_freq`` (default 50 MHz) from the 100 MHz LVDS oscillator
  (P3/P4); reset while the PLL is unlocked and while the PERST button (T1) is pressed.
- UART: the mini-USB connector's FT2232H second channel (C11 rx, A11 tx), 921,600 baud.
- LEDs D0–D3 (LED 0–3): class index in binary; LED 4 heartbeat; LED 5 a clip is in flight;
  LED 6 0.25 s after an ERROR packet.
"""

from amaranth_boards.versa_ecp5 import VersaECP5Platform

from .lattice import LatticeBoardTop

__all__ = ["PLATFORMS", "VersaECP5Platform", "VersaECP5Top"]

PLATFORMS = {"versa_ecp5": VersaECP5Platform}


class VersaECP5Top(LatticeBoardTop):
    """Board top for the ECP5 Versa; ``clk_freq`` (default 50 MHz) from the 100 MHz clock."""

    FAMILY = "ecp5"
    OSC, OSC_FREQ = "clk100", 100e6
    RESET = ("rst", 0)
    DEFAULT_CLK_FREQ = 50e6

    def board_io(self, m, platform):
        st = self.status
        self.drive_leds(m, platform, [*self.led, st.heartbeat, st.active, st.error, 0])
