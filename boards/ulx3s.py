"""Radiona ULX3S (ECP5 LFE5U-85F, also 12F/25F/45F) board top: host link over the FTDI USB-UART
and the class on the eight LEDs, around any NanoMamba accelerator (the board-independent logic
is :class:`boards.common.BoardTop`).

- ``sync``: the EHXPLLL makes ``clk_freq`` (default 50 MHz) from the 25 MHz oscillator (G2);
  reset while the PLL is unlocked and while the PWR button (BTN0, D6) is pressed.
- UART: the US1 micro-USB connector's FT231X (``/dev/ttyUSB0`` usually), 8N1, 921,600 baud by
  default (50 MHz / 54, +0.47 %).
- LEDs D0–D3: class index of the last result in binary (dark before the first result); D4
  heartbeat (1 Hz); D5 a clip is being received or computed; D6 0.25 s after an ERROR packet.
- The ESP32's GPIO0 (L2) is driven high so that the ESP32 cannot reset the FPGA.
"""

from amaranth_boards.ulx3s import (
    ULX3S_12F_Platform,
    ULX3S_25F_Platform,
    ULX3S_45F_Platform,
    ULX3S_85F_Platform,
)

from .common import pin_buffer
from .lattice import LatticeBoardTop

__all__ = ["PLATFORMS", "ULX3STop", "ULX3S_12F_Platform", "ULX3S_25F_Platform",
           "ULX3S_45F_Platform", "ULX3S_85F_Platform"]

PLATFORMS = {"ulx3s_85f": ULX3S_85F_Platform, "ulx3s_45f": ULX3S_45F_Platform,
             "ulx3s_25f": ULX3S_25F_Platform, "ulx3s_12f": ULX3S_12F_Platform}


class ULX3STop(LatticeBoardTop):
    """Board top for the ULX3S; ``clk_freq`` is the ``sync`` frequency the PLL makes from
    25 MHz (default 50 MHz), other parameters as :class:`boards.common.BoardTop`."""

    FAMILY = "ecp5"
    OSC, OSC_FREQ = "clk25", 25e6
    RESET = ("button_pwr", 0)
    DEFAULT_CLK_FREQ = 50e6

    def board_io(self, m, platform):
        st = self.status
        self.drive_leds(m, platform, [*self.led, st.heartbeat, st.active, st.error, 0])
        esp32 = platform.request("esp32", 0, dir="-")
        m.d.comb += pin_buffer(m, "o", esp32.gpio0, "esp32_gpio0_pin").o.eq(1)
