"""Clocking shared by the Lattice board tops (ECP5: ``boards/ulx3s.py``, ``boards/versa_ecp5.py``;
iCE40 UltraPlus: ``boards/icebreaker.py``).

A Lattice board top runs ``sync`` at the frequency asked for (``--freq`` of the build), made by
the FPGA's PLL from the board oscillator (:func:`ecp5_pll_params`, :func:`ice40_pll_params`), or
straight from the oscillator when that is the frequency asked for. ``sync`` is held in reset
until the PLL has locked, then for :data:`POR_SECONDS` more (iCE40 block RAMs read zeros for
~3 µs after configuration), and while the board's reset button is pressed.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Const, Instance, Signal
from amaranth.lib import cdc

from .common import BoardTop, pin_buffer

__all__ = ["POR_SECONDS", "EcpPll", "Ice40Pll", "LatticeBoardTop", "ecp5_pll_params",
           "ice40_pll_params"]

POR_SECONDS = 15e-6


@dataclass(frozen=True)
class EcpPll:
    """EHXPLLL settings: CLKOP = f_in / clki_div × clkfb_div (feedback from CLKOP)."""
    f_in: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_pfd(self):
        return self.f_in / self.clki_div

    @property
    def f_out(self):
        return self.f_pfd * self.clkfb_div

    @property
    def f_vco(self):
        return self.f_out * self.clkop_div


@dataclass(frozen=True)
class Ice40Pll:
    """SB_PLL40 settings (SIMPLE feedback): f_out = f_in × (divf+1) / ((divr+1) × 2^divq)."""
    f_in: float
    divr: int
    divf: int
    divq: int

    @property
    def f_pfd(self):
        return self.f_in / (self.divr + 1)

    @property
    def f_vco(self):
        return self.f_pfd * (self.divf + 1)

    @property
    def f_out(self):
        return self.f_vco / 2 ** self.divq

    @property
    def filter_range(self):
        f = self.f_pfd / 1e6
        return 1 if f < 17 else 2 if f < 26 else 3 if f < 44 else 4 if f < 66 else \
            5 if f < 101 else 6


def _check(f_out, best, what, tolerance):
    if best is None or abs(best.f_out - f_out) / f_out > tolerance:
        near = f" (nearest {best.f_out / 1e6:.4g} MHz)" if best else ""
        raise ValueError(f"the {what} cannot make {f_out / 1e6:g} MHz{near}")
    return best


def ecp5_pll_params(f_in: float, f_out: float, *, tolerance: float = 0.01) -> EcpPll:
    """The EHXPLLL setting closest to ``f_out`` (the search of Trellis' ``ecppll``: PFD
    3.125–400 MHz, VCO 400–800 MHz, output 3.125–400 MHz); ValueError if more than
    ``tolerance`` (relative) off. 25 MHz → 50 MHz: CLKI_DIV 1, CLKFB_DIV 2, CLKOP_DIV 12."""
    best = None
    for clki_div in range(1, 129):
        if not 3.125e6 <= f_in / clki_div <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            out = f_in / clki_div * clkfb_div
            if not 3.125e6 <= out <= 400e6:
                continue
            divs = [d for d in range(1, 129) if 400e6 <= out * d <= 800e6]
            if not divs:
                continue
            # the output divider that puts the VCO nearest the middle of its range
            cand = EcpPll(f_in, clki_div, clkfb_div, min(divs, key=lambda d: abs(out * d - 600e6)))
            if best is None or abs(out - f_out) < abs(best.f_out - f_out) - 1e-3:
                best = cand
    return _check(f_out, best, "ECP5 PLL", tolerance)


def ice40_pll_params(f_in: float, f_out: float, *, tolerance: float = 0.01) -> Ice40Pll:
    """The SB_PLL40 setting (SIMPLE feedback) closest to ``f_out``, as IceStorm's ``icepll``
    (PFD 10–133 MHz, VCO 533–1066 MHz, output 16–275 MHz); ValueError if more than
    ``tolerance`` off. 12 MHz → 24 MHz: DIVR 0, DIVF 63, DIVQ 5."""
    best = None
    for divr in range(16):
        if not 10e6 <= f_in / (divr + 1) <= 133e6:
            continue
        for divf in range(128):
            for divq in range(1, 7):
                cand = Ice40Pll(f_in, divr, divf, divq)
                if not (533e6 <= cand.f_vco <= 1066e6 and 16e6 <= cand.f_out <= 275e6):
                    continue
                if best is None or abs(cand.f_out - f_out) < abs(best.f_out - f_out) - 1e-3:
                    best = cand
    return _check(f_out, best, "iCE40 PLL", tolerance)


class LatticeBoardTop(BoardTop):
    """:class:`~boards.common.BoardTop` on a Lattice board: ``sync`` at ``clk_freq`` from the
    PLL (or the oscillator itself). Subclasses set the class attributes and :meth:`board_io`.

    ``clk_freq`` is the frequency asked for; :attr:`clk_freq` becomes the one the PLL makes
    (the UART divisor and timers use it), :attr:`pll` its settings (None: no PLL).
    """

    AUDIO_MODES = ("uart",)
    FAMILY = None               # "ecp5" or "ice40"
    OSC = None                  # oscillator resource name
    OSC_FREQ = None             # its frequency, Hz
    RESET = None                # (resource name, number) of the reset button, or None
    DEFAULT_CLK_FREQ = None     # sync clock when clk_freq is not given (None: the oscillator)

    def __init__(self, accelerator, *, clk_freq: float | None = None, **kwargs):
        self.requested_clk_freq = self.requested(clk_freq)
        try:
            self.pll, f_sync = self.pll_for(clk_freq)
        except ValueError:
            if hasattr(accelerator, "signature"):
                accelerator._MustUse__silence = True
            raise
        super().__init__(accelerator, clk_freq=f_sync, **kwargs)

    @classmethod
    def requested(cls, clk_freq: float | None) -> float:
        """The sync frequency asked for: ``clk_freq``, or the board's default."""
        return clk_freq if clk_freq is not None else (cls.DEFAULT_CLK_FREQ or cls.OSC_FREQ)

    @classmethod
    def pll_for(cls, clk_freq: float | None):
        """``(pll, f_sync)``: the PLL settings for ``clk_freq`` (None: the oscillator itself is
        the clock) and the frequency they make. ValueError if the PLL cannot make it — callers
        can check a frequency before they build an accelerator for it."""
        requested = cls.requested(clk_freq)
        if abs(requested - cls.OSC_FREQ) <= 1e-3:
            return None, requested
        pll = (ecp5_pll_params if cls.FAMILY == "ecp5" else ice40_pll_params)(cls.OSC_FREQ,
                                                                              requested)
        return pll, pll.f_out

    def drive_leds(self, m, platform, values):
        """Drive ``platform``'s ``led`` 0…n−1 with ``values`` (the class index bits first)."""
        self.drive_outputs(m, platform, {("led", i): v for i, v in enumerate(values)})

    def drive_outputs(self, m, platform, outputs):
        """Drive each output resource ``(name, number)`` of ``outputs`` with its value."""
        for (name, number), value in outputs.items():
            m.d.comb += pin_buffer(m, "o", platform.request(name, number, dir="-"),
                                   f"{name}{number}_pin").o.eq(value)

    def board_pins(self, m, platform):
        if platform.default_clk_frequency != self.OSC_FREQ:
            raise ValueError(f"{type(self).__name__} expects a {self.OSC_FREQ / 1e6:g} MHz "
                             f"oscillator, the platform has {platform.default_clk_frequency:g} Hz")
        rst = Const(0)
        if self.RESET is not None:
            rst = pin_buffer(m, "i", platform.request(*self.RESET, dir="-"), "reset_pin").i
        self._sync_domain(m, platform, rst)
        uart = platform.request("uart", 0, dir="-")
        m.d.comb += pin_buffer(m, "o", uart.tx, "uart_tx_pin").o.eq(self.tx)
        self.board_io(m, platform)
        return type("Pins", (), {"rx": pin_buffer(m, "i", uart.rx, "uart_rx_pin").i})

    def board_io(self, m, platform):
        """Drive the board's LEDs (from ``self.led``, ``self.rgb``, ``self.status``) and any
        other output that must hold a level."""
        raise NotImplementedError

    def _sync_domain(self, m, platform, rst):
        """``sync`` from the oscillator through the PLL; reset until lock + POR_SECONDS."""
        m.domains.sync = cd_sync = ClockDomain("sync")
        osc = platform.request(self.OSC, 0, dir="-")
        locked = Signal()
        pll = self.pll
        if pll is None:
            m.d.comb += [cd_sync.clk.eq(pin_buffer(m, "i", osc, "osc_pin").i), locked.eq(1)]
        elif self.FAMILY == "ecp5":
            m.d.comb += cd_sync.clk.eq(self._ecp5_pll(m, pin_buffer(m, "i", osc, "osc_pin").i,
                                                      locked))
        else:
            # The iCE40 oscillator pads that can feed a PLL do so directly (SB_PLL40_PAD); the
            # PLL's global output is the clock.
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=pll.divr, p_DIVF=pll.divf, p_DIVQ=pll.divq,
                p_FILTER_RANGE=pll.filter_range,
                io_PACKAGEPIN=osc.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=cd_sync.clk, o_LOCK=locked)
        platform.add_clock_constraint(cd_sync.clk, self.clk_freq)
        # Power-on reset: count POR_SECONDS of sync cycles after lock (a reset-less counter:
        # Lattice flip-flops start at their init value after configuration).
        por_cycles = max(2, int(POR_SECONDS * self.clk_freq))
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += ClockSignal("por").eq(cd_sync.clk)
        timer, ready, locked_sync = Signal(range(por_cycles + 1)), Signal(), Signal()
        m.submodules.lock_sync = cdc.FFSynchronizer(locked, locked_sync, o_domain="por")
        with m.If(~locked_sync):
            m.d.por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == por_cycles):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.submodules.reset_sync = cdc.ResetSynchronizer(~ready | rst, domain="sync")

    def _ecp5_pll(self, m, clk_in, locked):
        pll = self.pll
        clk_out = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{pll.f_in / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{pll.f_out / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll.clki_div, p_CLKFB_DIV=pll.clkfb_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll.clkop_div,
            p_CLKOP_CPHASE=(pll.clkop_div - 1) // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_in, i_CLKFB=clk_out, o_CLKOP=clk_out,
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0), o_LOCK=locked)
        return clk_out
