"""Helpers of the spectral-engine tests (``test_mel``, ``test_snr``, ``test_frontend``,
``test_spectral``).

- stream payloads of magnitude / mel frames, real magnitudes of the seed clips, extreme frames;
- :func:`expected`: the fixed model's stage outputs for one clip of magnitudes (mel, SNR,
  features), each from its own ``nanomamba_hw.fixed`` function;
- :func:`run_spectral`: a :class:`~nanomamba_hw.hw.spectral.Spectral` run (magnitudes in with
  optional input stalls, an abandoned clip cut by ``clip_start``, a reader that may hold a full
  bank for a while) returning, per clip, what the feature buffer holds and — on request — the
  mel values the bin pipeline wrote for the front-end pass (read at the engine's RAM B write
  port when the band accumulator closes a mel band);
- :class:`PassSpectral`: the same shared units, RAM B layout and feature buffer, but the
  engine only loads 40 mel values per frame from a stream into RAM B and runs the front-end
  pass on them (:func:`run_pass`), so a pass can be tested on any mel values and parameters
  without the 2,000-cycle bin phase of every frame.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Fragment, Module, Signal, unsigned
from amaranth.lib import stream

from nanomamba_hw.fixed import frontend as ffe
from nanomamba_hw.fixed import mel as fmel
from nanomamba_hw.fixed import snr as fsnr
from nanomamba_hw.fixed import stft
from nanomamba_hw.hw.common import frame_layout
from nanomamba_hw.hw.sim_util import run_sim, stream_put_all
from nanomamba_hw.hw.spectral import Spectral, SpectralEngine

from .test_featbuf import read_clip

KINDS = {"logmel": "NanoMamba-Tiny", "dualpcen": "NanoMamba-Tiny-DualPCEN"}
CLIP_WORDS = ("yes", "no", "up", "down", "go", "stop")
FB = fmel.SparseFilterbank.build()
N_MELS = 40
MAG_MAX = stft.MAG_FMT.max_int
MEL_MAX = fmel.MEL_FMT.max_int


def frame_payloads(x: np.ndarray) -> list[dict]:
    """(n, T) values → frame-stream payloads, frame after frame."""
    n, T = x.shape
    return [{"data": int(x[j, t]), "first": int(j == 0), "last": int(j == n - 1)}
            for t in range(T) for j in range(n)]


def real_mags(word: str, seed_clip) -> np.ndarray:
    """(257, 101) magnitudes of a seed clip, by the fixed model's STFT."""
    from nanomamba_hw.audio import load_clip
    return stft.stft_magnitude(load_clip(seed_clip(word)).pcm[None])[0]


def extreme_mags(rng: np.random.Generator, T: int) -> np.ndarray:
    """(257, T) magnitudes: random over the whole u24 range and over many octaves, with a
    full-scale frame (mel saturates), a silent frame, a single loud bin, one bin loud in every
    frame, and bins 200… silent in frames 0–4 (n0 = 0), then bins 200–229 at |X| = 1 (the
    smallest magnitude: the SNR ratio and the projection saturate, in EMA mode too, whose
    noise floor stays 0 when γ·8|X| rounds to 0) and bins 230… loud."""
    a = rng.integers(0, 1 << 22, (257, T)) >> rng.integers(0, 22, (257, T))
    a[:, 0] = rng.integers(0, MAG_MAX + 1, 257)
    a[:, 1] = MAG_MAX
    a[:, 3] = 0
    a[:, T - 1] = np.where(np.arange(257) == 77, MAG_MAX, 0)
    a[5, :] = MAG_MAX
    a[200:, :5] = 0
    a[200:230, 5:] = 1
    a[230:, 5:] = rng.integers(1 << 10, 1 << 20, (27, T - 5))
    return a


def expected(p, mag: np.ndarray) -> dict:
    """The fixed model's stage outputs for one clip of magnitudes (257, T): ``mel`` (MEL_FMT),
    ``snr`` (SNR_FMT) and ``feat`` (the front end's features), each (40, T)."""
    fb = fmel.SparseFilterbank.build(p.config.n_mels, p.config.n_fft, p.config.sample_rate)
    mel = fmel.mel_spectrum(fb, mag[None])
    return {"mel": mel[0], "snr": fsnr.snr_bands(p.snr, fb, mag[None])[0],
            "feat": ffe.features(p.frontend, mel)[0]}


@dataclass
class ClipOut:
    """One clip as the hardware delivered it."""

    feat: np.ndarray
    snr: np.ndarray
    mel: np.ndarray | None = None


@dataclass
class RunInfo:
    cycles: int = 0                                      # cycles since the run started
    frame_in: list = field(default_factory=list)         # cycle each frame's last |X| was taken
    full_at: list = field(default_factory=list)          # cycle each clip became readable
    front_cycles: list = field(default_factory=list)     # cycles of each front-end pass


def check_features(out: ClipOut, feat: np.ndarray) -> None:
    """The features the buffer holds."""
    np.testing.assert_array_equal(out.feat, feat)


def _cut(payloads: list[dict], cut: int, n: int) -> tuple[list, list]:
    """Payloads before ``clip_start`` and the rest of the frame in progress after it."""
    end = -(-cut // n) * n
    return payloads[:cut], payloads[cut:end]


async def _reader(ctx, dut, T, n_clips, got, info, release_wait, seed):
    rng = random.Random(seed)
    for _ in range(n_clips):
        while not ctx.get(dut.rd.full):
            await ctx.tick()
        info.full_at.append(info.cycles)
        if release_wait:
            await ctx.tick().repeat(rng.randint(1, release_wait))
        got.append(await read_clip(ctx, dut.rd, T))


def _monitors(dut, info, watch, record):
    """Background testbenches: a cycle counter, and (``watch``) a recorder of ``record(ctx,
    sampled values)`` on every clock edge; its list is emptied by ``clip_start``."""
    async def count(ctx):
        async for _ in ctx.tick():
            info.cycles += 1

    if not watch:
        return [count]
    sigs, store = watch

    async def monitor(ctx):
        async for _, _, cs, *vals in ctx.tick().sample(dut.clip_start, *sigs):
            if cs:
                store.clear()
            record(store, vals)
    return [count, monitor]


def run_spectral(p, mags: list[np.ndarray], *, stall: float = 0.0, max_stall: int = 4,
                 n_banks: int = 2, junk: np.ndarray | None = None, cut: int = 0,
                 release_wait: int = 0, watch_mel: bool = False, seed: int = 0,
                 deadline: float = 5.0) -> tuple[list[ClipOut], RunInfo]:
    """Clips of magnitudes (257, T each) into :class:`Spectral` back to back.

    With ``junk`` (magnitudes), its first ``cut`` payloads go first, then ``clip_start``, then
    the rest of the frame that was in progress (the engine must drop it). ``stall``: idle
    cycles on the input (1…``max_stall``); ``release_wait``: the reader keeps each full clip
    1…``release_wait`` cycles before reading and releasing it (with one bank the engine
    waits). ``watch_mel`` also returns the mel values handed to the front-end pass."""
    T = mags[0].shape[1]
    dut = Spectral(params=p, n_frames=T, n_banks=n_banks)
    top = dut
    got, info, mels = [], RunInfo(), []

    async def feed(ctx):
        rng = random.Random(seed)
        if junk is not None:
            before, after = _cut(frame_payloads(junk), cut, junk.shape[0])
            await stream_put_all(ctx, dut.i, before, stall=stall, max_stall=max_stall, rng=rng)
            ctx.set(dut.clip_start, 1)
            await ctx.tick()
            ctx.set(dut.clip_start, 0)
            await stream_put_all(ctx, dut.i, after, stall=stall, max_stall=max_stall, rng=rng)
        for mag in mags:
            for t in range(mag.shape[1]):
                await stream_put_all(ctx, dut.i, frame_payloads(mag[:, t:t + 1]), stall=stall,
                                     max_stall=max_stall, rng=rng)
                info.frame_in.append(info.cycles)

    async def reader(ctx):
        await _reader(ctx, dut, T, len(mags), got, info, release_wait, seed + 1)

    watch = None
    if watch_mel:
        # Spectral builds its engine in elaborate(): elaborate it here and simulate that
        # fragment, so the signals watched are the simulated ones.
        top = Fragment.get(dut, None)
        eng = dut._engine
        watch = ((eng.mac.o_valid, eng.mac.o_stream, eng.rb_w.data), mels)

    def record(store, vals):
        ov, os_, data = vals
        if ov and os_ == 0:                     # a mel band closes: its value goes to RAM B
            store.append(int(data))

    run_sim(top, [feed, reader], background=_monitors(dut, info, watch, record),
            deadline=deadline)
    out = [ClipOut(*g) for g in got]
    if watch_mel:
        assert len(mels) == len(mags) * T * N_MELS, len(mels)
        arr = np.array(mels, dtype=np.int64).reshape(len(mags), T, N_MELS)
        for c, o in enumerate(out):
            o.mel = arr[c].T
    return out, info


# ----------------------------------------------------------------------------------------------
# The front-end pass alone: mel values in, features out, on the engine's shared units

class PassEngine(SpectralEngine):
    """:meth:`SpectralEngine.shared_units` and the front-end pass of ``params``, sequenced per
    frame as LOAD (40 mel values from ``mel_i`` into RAM B's mel words, where the bin pipeline
    would have written them) → FRONT (the pass: ``run`` held until ``done``), ``n_frames``
    frames per clip, then ``fb_done``; a clip starts once ``fb_wr_ok`` is high."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.mel_i = stream.Signature(frame_layout(unsigned(fmel.MEL_FMT.bits))).create(
            path=("mel_i",))

    def elaborate(self, platform):
        m = Module()
        self.shared_units(m)
        n, T = self.n_mels, self.n_frames
        self.front = front = self.fe_cls(self)
        b = Signal(range(n))
        with m.FSM(name="harness"):
            with m.State("WAIT"):
                with m.If(self.fb_wr_ok):
                    m.d.sync += [self.t.eq(0), self.fbase.eq(0), b.eq(0)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += self.mel_i.ready.eq(1)
                with m.If(self.mel_i.valid):
                    m.d.comb += [self.rb_w.en.eq(1), self.rb_w.addr.eq(self.MEL_BASE + b),
                                 self.rb_w.data.eq(self.mel_i.payload.data)]
                    m.d.sync += b.eq(b + 1)
                    with m.If(b == n - 1):
                        m.d.sync += b.eq(0)
                        m.next = "FRONT"
            with m.State("FRONT"):
                m.d.comb += front.run.eq(1)
                with m.If(front.done):
                    with m.If(self.t == T - 1):
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [self.t.eq(self.t + 1), self.fbase.eq(self.fbase + n)]
                        m.next = "LOAD"
            with m.State("DONE"):
                m.d.comb += self.fb_done.eq(1)
                m.next = "WAIT"
        self.finish_shared()
        return m


class PassSpectral(Spectral):
    """:class:`Spectral` (feature buffer, ``clip_start`` reset, ``rd``) around a
    :class:`PassEngine`; the mel input is ``self.engine.mel_i``."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.engine = None

    def make_engine(self, buf):
        self.engine = PassEngine(params=self.params, n_frames=self.n_frames, fb_words=buf.words,
                                 code=self.code, word_bits=buf.word_bits)
        return self.engine


def run_pass(p, mels: list[np.ndarray], *, stall: float = 0.0, n_banks: int = 1,
             junk: np.ndarray | None = None, cut: int = 0, release_wait: int = 0,
             seed: int = 0, deadline: float = 2.0) -> tuple[list[ClipOut], RunInfo]:
    """Clips of mel values (40, T each) through the front-end pass of ``p`` back to back
    (optionally after ``cut`` values of a ``junk`` clip and ``clip_start``); returns what the
    feature buffer holds per clip and the cycles of every pass (FRONT state)."""
    T = mels[0].shape[1]
    dut = PassSpectral(params=p, n_frames=T, n_banks=n_banks)
    top = Fragment.get(dut, None)           # elaborated here: the engine's signals are watched
    eng = dut.engine
    got, info, front = [], RunInfo(), []

    async def feed(ctx):
        rng = random.Random(seed)
        if junk is not None:
            await stream_put_all(ctx, eng.mel_i, frame_payloads(junk)[:cut], stall=stall,
                                 rng=rng)
            ctx.set(dut.clip_start, 1)
            await ctx.tick()
            ctx.set(dut.clip_start, 0)
        for x in mels:
            await stream_put_all(ctx, eng.mel_i, frame_payloads(x), stall=stall, rng=rng)

    async def reader(ctx):
        await _reader(ctx, dut, T, len(mels), got, info, release_wait, seed + 1)

    state = {"n": 0}

    def record(store, vals):
        run, = vals
        if run:
            state["n"] += 1
        elif state["n"]:
            store.append(state["n"])
            state["n"] = 0

    run_sim(top, [feed, reader], background=_monitors(dut, info, ((eng.front.run,), front),
                                                      record), deadline=deadline)
    info.front_cycles = front
    return [ClipOut(*g) for g in got], info
