"""1BitSquared iCEBreaker (iCE40 UltraPlus UP5K-SG48) board top: host link over the FTDI
USB-UART and the class on the snap-off Pmod's LEDs, around any NanoMamba accelerator (the
board-independent logic is :class:`boards.common.BoardTop`).

The UP5K is the project's area target: 5,280 LUT4, 8 SB_MAC16, 30 4-kbit EBR, 4 × 256-kbit
SPRAM. ``python -m nanomamba_hw.build --board icebreaker`` reports whether the accelerator fits
and, if not, the shortfall per resource.

- ``sync``: the 12 MHz oscillator (pin 35) directly, or through SB_PLL40_PAD for another
  ``clk_freq``; reset while the PLL is unlocked and while the user button (pin 10) is pressed.
- UART: the FT2232H's second channel (pin 6 rx, pin 9 tx), 921,600 baud (12 MHz / 13, +0.16 %).
- LEDs: the snap-off Pmod (on PMOD2) shows the class index in binary on LED2–LED5 (green) and a
  clip in flight on LED1 (red, centre); on the main board the green LED is the heartbeat and
  the red LED lights for 0.25 s after an ERROR packet.
"""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from .lattice import LatticeBoardTop

__all__ = ["PLATFORMS", "ICEBreakerPlatform", "ICEBreakerTop"]

PLATFORMS = {"icebreaker": ICEBreakerPlatform}


class ICEBreakerTop(LatticeBoardTop):
    """Board top for the iCEBreaker; ``clk_freq`` default 12 MHz (the oscillator, no PLL)."""

    FAMILY = "ice40"
    OSC, OSC_FREQ = "clk12", 12e6
    RESET = ("button", 0)
    DEFAULT_CLK_FREQ = 12e6

    def board_io(self, m, platform):
        platform.add_resources(platform.break_off_pmod)
        st = self.status
        outputs = {("led_g", 0): st.heartbeat, ("led_r", 0): st.error,
                   ("led_r", 1): st.active}
        for i in range(4):
            outputs[("led_g", i + 1)] = self.led[i]
        self.drive_outputs(m, platform, outputs)
