"""The whole accelerator: int16 PCM in, one decision per clip out.

::

    pcm ─► Framer ─► STFT ─► Spectral (mel, SNR, front end, feature buffer)
                                                                   │ rd (random access)
    result ◄─ (cycles) ◄──────────────────────────────────── Backend ◄┘

Generated entirely from a :class:`~nanomamba_hw.fixed.model.FixedParams` (formats, tables,
weights): no constant is written here. The ports are the
:class:`~nanomamba_hw.hw.accel_if.AcceleratorSignature` (pcm and result streams, ``clip_start``,
the register port, ``busy``), so board tops and the host link work with it unchanged.

- ``result.cycles``: clock cycles from the clip's first accepted sample to its result.
- Registers 1–5: the SSM calibration constants in REG_FMT (u16.16), reset to the checkpoint's
  values; the back end samples them when it starts a clip, so a write applies from the next
  clip whose back-end pass has not started.
- The front end runs while samples arrive. With ``n_banks=1`` (the default: 4 RAMB36 fewer)
  the next clip's samples are held off (``pcm.ready`` low) until the back end has done its
  last frame of the current clip, ~4.7 ms at 100 MHz; with ``n_banks=2`` the next clip's front end
  overlaps the current clip's back end, for continuous input without pauses.
- ``clip_start`` abandons the clip being received: framer, STFT and spectral engine restart
  (a complete clip in the feature buffer or the back end is kept).
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered

from ..fixed.model import FixedParams
from ..fixed.stft import HOP, N_FFT
from .accel_if import (
    REG_BGATE_FLOOR,
    REG_DELTA_FLOOR_MAX,
    REG_DELTA_FLOOR_MIN,
    REG_EPS_MAX,
    REG_EPS_MIN,
    REG_STATUS,
    STATUS_BUSY,
    STATUS_RESULT_VALID,
    AcceleratorSignature,
)
from .backend import Backend
from .framer import Framer
from .spectral import Spectral
from .stft import STFT

REG_FIELDS = {REG_DELTA_FLOOR_MIN: "delta_floor_min", REG_DELTA_FLOOR_MAX: "delta_floor_max",
              REG_EPS_MIN: "eps_min", REG_EPS_MAX: "eps_max", REG_BGATE_FLOOR: "bgate_floor"}


class Accelerator(wiring.Component):
    """NanoMamba accelerator for ``params`` (see the module docstring).

    ``clip_samples`` (default 16,000) may be shortened for simulation tests; the number of
    frames follows (1 + clip_samples // 160). ``lanes`` is the MAC engine's parallelism.
    """

    def __init__(self, params: FixedParams, *, lanes: int = 1, clip_samples: int = 16000,
                 n_banks: int = 1):
        self.params, self.lanes = params, lanes
        self.clip_samples = clip_samples
        self.n_frames = 1 + clip_samples // HOP
        logits = params.formats["logits"]
        if logits.bits > 32:
            raise ValueError("logits wider than the result's 32 bits")
        super().__init__(AcceleratorSignature(params.config.n_classes, logit_bits=logits.bits))
        self.framer = Framer(n_fft=N_FFT, hop=HOP, clip_samples=clip_samples)
        self.stft = STFT()
        self.spectral = Spectral(params=params, n_frames=self.n_frames, n_banks=n_banks)
        self.backend = Backend(params, lanes=lanes, n_frames=self.n_frames)

    @property
    def clip_len(self) -> int:
        """Samples per clip (what board tops and the host link send)."""
        return self.clip_samples

    def elaborate(self, platform):
        m = Module()
        m.submodules.framer = fr = self.framer
        # clip_start restarts the whole front end: a frame the STFT holds belongs to the
        # abandoned clip and must not become frame 0 of the next one
        m.submodules.stft = ResetInserter({"sync": self.clip_start})(self.stft)
        stft = self.stft
        m.submodules.spectral = sp = self.spectral
        m.submodules.backend = be = self.backend

        wiring.connect(m, wiring.flipped(self.pcm), fr.i)
        wiring.connect(m, fr.o, stft.i)
        wiring.connect(m, stft.o, sp.i)
        wiring.connect(m, be.rd, sp.rd)        # the back end reads the feature buffer
        m.d.comb += [fr.clip_start.eq(self.clip_start), sp.clip_start.eq(self.clip_start)]

        # Cycle count per clip: the start time of each completed clip waits in a FIFO until
        # its result leaves (the front end may be a clip ahead of the back end).
        now = Signal(32)
        m.d.sync += now.eq(now + 1)
        count = Signal(range(self.clip_samples))
        start = Signal(32)
        starts = m.submodules.starts = SyncFIFOBuffered(width=32, depth=4)
        take = self.pcm.valid & self.pcm.ready
        m.d.comb += [starts.w_data.eq(start), starts.w_en.eq(0)]
        with m.If(self.clip_start):
            m.d.sync += count.eq(0)
        with m.Elif(take):
            with m.If(count == 0):
                m.d.sync += start.eq(now)
            with m.If(count == self.clip_samples - 1):
                m.d.sync += count.eq(0)
                m.d.comb += [starts.w_en.eq(1),
                             starts.w_data.eq(now if self.clip_samples == 1 else start)]
            with m.Else():
                m.d.sync += count.eq(count + 1)

        res, out = be.result, self.result
        m.d.comb += [out.valid.eq(res.valid), res.ready.eq(out.ready),
                     out.payload.index.eq(res.payload.index),
                     out.payload.cycles.eq(now - starts.r_data),
                     starts.r_en.eq(res.valid & out.ready)]
        for i in range(self.params.config.n_classes):
            m.d.comb += out.payload.logits[i].eq(res.payload.logits[i])

        # Register port: status + the five SSM calibration registers of the back end.
        regs = be.registers
        with m.If(self.reg_we):
            for addr, name in REG_FIELDS.items():
                with m.If(self.reg_addr == addr):
                    m.d.sync += getattr(regs, name).eq(self.reg_wdata)
        busy = (count != 0) | starts.r_rdy | res.valid
        m.d.comb += self.busy.eq(busy)
        with m.Switch(self.reg_addr):
            with m.Case(REG_STATUS):
                m.d.comb += self.reg_rdata.eq(busy * STATUS_BUSY | res.valid * STATUS_RESULT_VALID)
            for addr, name in REG_FIELDS.items():
                with m.Case(addr):
                    m.d.comb += self.reg_rdata.eq(getattr(regs, name))
        return m
