"""The spectral half of the accelerator: STFT magnitudes in, a filled feature buffer out.

::

                       ┌─ MelFilterbank ─ LogMel | DualPCEN ─┐
    i (|X|, 257/frame) ┤  (fork)                             ├─ FeatureBuffer ── rd (back end)
                       └─ SNREstimator ──────────────────────┘

``i`` takes the STFT's magnitude frames (``frame_stream(unsigned(24))``, 257 bins per frame,
``n_frames`` frames per clip). The fork offers every magnitude to both the mel filterbank
and the SNR estimator and accepts it from upstream only once both have taken it (a per-branch
"taken" flag, so neither branch sees a value twice and neither ``valid`` depends on its own
``ready``). The mel branch runs up to five frames ahead of the SNR branch (the estimator's
look-ahead); the feature buffer takes the two streams independently, so neither blocks the
other. ``rd`` is the :class:`~nanomamba_hw.hw.featbuf.FeatureBuffer` read interface
(:func:`~nanomamba_hw.hw.featbuf.FeatureReadSignature`), forwarded unchanged.

``clip_start`` (strobe) abandons the clip in progress: mel, SNR, front end and fork are reset
(``ResetInserter``) and the feature buffer drops the partial clip (complete clips awaiting the
back end are kept). ``i.ready`` is low in the strobe's cycle.
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..fixed import mel as fmel
from ..fixed.model import FixedParams
from ..fixed.snr import SNR_FMT
from ..fixed.stft import MAG_FMT
from .common import frame_stream, shape_of
from .featbuf import FeatureBuffer, FeatureReadSignature
from .frontend import make_frontend
from .mel import MelFilterbank
from .snr import SNREstimator

__all__ = ["Spectral"]


class Spectral(wiring.Component):
    """Mel + SNR + front end + feature buffer for the fixed model ``params``.

    ``n_frames`` (default ``params.config.n_frames``, 101) is the number of frames per clip;
    any value ≥ 5 works (tests use short clips).
    """

    def __init__(self, *, params: FixedParams, n_frames: int | None = None, n_banks: int = 2):
        cfg = params.config
        self.params = params
        self.n_frames = n_frames if n_frames is not None else cfg.n_frames
        self.n_mels = cfg.n_mels
        self.n_banks = n_banks
        self.fb = fmel.SparseFilterbank.build(cfg.n_mels, cfg.n_fft, cfg.sample_rate)
        self.feat_fmt = params.feat_fmt
        super().__init__({
            "i": In(frame_stream(shape_of(MAG_FMT))),
            "clip_start": In(1),
            "rd": In(FeatureReadSignature(n_frames=self.n_frames, n_mels=self.n_mels,
                                          feat_fmt=self.feat_fmt, snr_fmt=SNR_FMT)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        mel = MelFilterbank(fb=self.fb)
        snr = SNREstimator(params=p.snr, fb=self.fb, n_frames=self.n_frames)
        fe = make_frontend(p.frontend, n_frames=self.n_frames, n_mels=self.n_mels)
        buf = FeatureBuffer(feat_fmt=self.feat_fmt, n_frames=self.n_frames, n_mels=self.n_mels,
                            snr_fmt=SNR_FMT, n_banks=self.n_banks)
        restart = ResetInserter({"sync": self.clip_start})
        m.submodules.mel = restart(mel)
        m.submodules.snr = restart(snr)
        m.submodules.frontend = restart(fe)
        m.submodules.buffer = buf

        # fork: each branch takes the value once; upstream advances when both have it
        took_mel, took_snr = Signal(), Signal()
        for br in (mel.i, snr.i):
            m.d.comb += br.payload.eq(self.i.payload)
        m.d.comb += [
            mel.i.valid.eq(self.i.valid & ~took_mel & ~self.clip_start),
            snr.i.valid.eq(self.i.valid & ~took_snr & ~self.clip_start),
            self.i.ready.eq((took_mel | mel.i.ready) & (took_snr | snr.i.ready)
                            & ~self.clip_start),
        ]
        with m.If(self.clip_start | (self.i.valid & self.i.ready)):
            m.d.sync += [took_mel.eq(0), took_snr.eq(0)]
        with m.Else():
            with m.If(mel.i.valid & mel.i.ready):
                m.d.sync += took_mel.eq(1)
            with m.If(snr.i.valid & snr.i.ready):
                m.d.sync += took_snr.eq(1)

        wiring.connect(m, mel.o, fe.i)
        wiring.connect(m, fe.o, buf.i_feat)
        wiring.connect(m, snr.o, buf.i_snr)
        m.d.comb += buf.clip_start.eq(self.clip_start)
        wiring.connect(m, wiring.flipped(self.rd), buf.rd)
        return m
