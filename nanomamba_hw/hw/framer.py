"""Framer: one clip of PCM in, the reflect-padded frames of :func:`fixed.stft.frames` out.

What it computes
----------------
For a clip of ``L = clip_samples`` samples it emits ``T = 1 + L // hop`` frames of ``n_fft``
samples, element by element: frame ``t`` holds the samples with (unpadded) index
``hop·t − n_fft/2 … hop·t + n_fft/2 − 1``, reflected at both clip edges exactly like
``np.pad(mode="reflect")`` / ``torch.stft(center=True)``: index ``−k`` is sample ``k`` and index
``L−1+k`` is sample ``L−1−k``. ``first`` marks element 0 of a frame, ``last`` element
``n_fft − 1``.

How it streams
--------------
Samples are written, in arrival order, to a circular buffer (one block RAM) at address
``n mod depth``. Frame ``t`` is emitted as soon as its last needed sample has been accepted:

- frame 0 needs samples 0…256 (its leftmost padded index −256 reflects to sample 256);
- frame ``t ≥ 1`` needs up to sample ``hop·t + 255``, or, when that lies past the clip end, the
  clip's last sample: those frames (99 and 100 for a 16,000-sample clip) have reflected right
  halves, so they wait for the end of the clip.

Buffer size. One frame never needs more than ``n_fft`` distinct samples (the end frames need
fewer: frame 99 of a 16,000-sample clip reads samples 15,584…15,999, 416 of them, frame 100
reads 15,744…15,999), so ``depth = n_fft = 512`` would be correct, but then every frame's
emission would hold the input off. ``depth = 2·n_fft = 1024`` samples × 16 bits is still one
RAMB18 (1K × 18), so it costs nothing more and lets the input run up to 512 samples (3.2 hops)
ahead of the frame being emitted. The input is held off (``i.ready`` low) only when accepting
sample ``n`` would overwrite sample ``n − depth`` that the oldest frame not yet fully emitted
still needs (``n ≥ max(0, hop·t − 256) + depth``), and while the clip's last frames are still
being emitted after its ``L``-th sample.

Reading the buffer for frame ``t`` needs no multiplier: a running signed index steps through
``hop·t − 256 …`` and is reflected (negate, or ``2(L−1) − n``) before the address is taken
modulo ``depth``. The read port is synchronous (block RAM); its output is the stream's ``data``
directly, and the port's enable is the output register's "can advance" condition, so a stalled
consumer freezes the payload without a skid buffer. Throughput: one frame element per cycle,
``T·n_fft`` = 51,712 cycles per 16,000-sample clip when neither side stalls.

Clips
-----
Exactly ``L`` accepted samples make one clip; after its last frame has been offered, the framer
starts the next clip by itself. ``clip_start`` is a synchronous restart: the partial clip is
abandoned immediately, including a frame in the middle of emission (``o.valid`` drops and that
frame's ``last`` is never sent; a consumer that must see whole frames resynchronises on
``first``), and the next accepted sample is sample 0 of a new clip. ``i.ready`` is low during
the ``clip_start`` cycle, so a sample offered together with the strobe becomes sample 0.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..config import CLIP_SAMPLES
from ..fixed import stft as fstft
from .common import frame_stream

__all__ = ["Framer"]


class Framer(wiring.Component):
    """Reflect-padded overlapping frames of one clip, streamed from a circular block-RAM buffer.

    Parameters (keyword-only)
    -------------------------
    n_fft : int
        Frame length (a power of two; 512 for the model).
    hop : int
        Frame step (160).
    clip_samples : int
        Samples per clip (16,000; tests use shorter clips). Must exceed ``n_fft / 2`` so that a
        single reflection reaches every padded index.

    Members
    -------
    i : In(stream.Signature(signed(16)))
        PCM samples, ``clip_samples`` per clip.
    o : Out(frame_stream(signed(16)))
        ``1 + clip_samples // hop`` frames of ``n_fft`` samples each, in order.
    clip_start : In(1)
        One-cycle strobe: abandon the current clip (see the module docstring).
    clip_done : Out(1)
        One-cycle strobe on the transfer of the last element of a clip's last frame.
    busy : Out(1)
        A clip is in progress: samples accepted or frames still to be transferred.
    """

    def __init__(self, *, n_fft: int = fstft.N_FFT, hop: int = fstft.HOP,
                 clip_samples: int = CLIP_SAMPLES):
        try:
            if n_fft < 4 or n_fft & (n_fft - 1):
                raise ValueError(f"n_fft must be a power of two, got {n_fft}")
            if not 1 <= hop <= n_fft:
                raise ValueError(f"hop must be in 1..n_fft, got {hop}")
            if clip_samples <= n_fft // 2:
                raise ValueError(f"clip_samples must exceed n_fft/2 = {n_fft // 2} for "
                                 f"reflect padding, got {clip_samples}")
        except ValueError:
            self._MustUse__silence = True      # no "never elaborated" warning for a refused one
            raise
        self.n_fft = n_fft
        self.hop = hop
        self.clip_samples = clip_samples
        self.pad = n_fft // 2
        self.n_frames = 1 + clip_samples // hop
        self.depth = 2 * n_fft
        super().__init__({
            "i": In(stream.Signature(signed(16))),
            "o": Out(frame_stream(signed(16))),
            "clip_start": In(1),
            "clip_done": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        L, hop, pad, depth = self.clip_samples, self.hop, self.pad, self.depth
        T, N = self.n_frames, self.n_fft
        abits = ceil_log2(depth)

        m.submodules.buf = buf = Memory(shape=signed(16), depth=depth, init=[],
                                        attrs={"ram_style": "block"})
        wr = buf.write_port()
        rd = buf.read_port()

        # every padded index lies in -pad .. L-1+pad; sample counts in 0 .. L
        idx_shape = signed(max(L + pad, depth + hop + pad, 2 * L).bit_length() + 1)
        n_in = Signal(range(L + 1))          # samples of this clip accepted so far
        t = Signal(range(T))                 # frame being (or next to be) emitted
        e = Signal(range(N))                 # element of frame t to issue next
        fbase = Signal(idx_shape, init=-pad)             # hop·t − pad
        pos = Signal(idx_shape, init=-pad)               # fbase + e
        need = Signal(idx_shape, init=pad)               # last needed sample of frame t
        first = Signal()
        last = Signal()
        last_of_clip = Signal()

        low = Signal(idx_shape)              # oldest sample frame t still needs
        m.d.comb += low.eq(Mux(fbase < 0, 0, fbase))

        # --- input: write at n mod depth unless that sample is still needed ----------------
        m.d.comb += [
            self.i.ready.eq((n_in < L) & (n_in < low + depth) & ~self.clip_start),
            wr.addr.eq(n_in[:abits]),
            wr.data.eq(self.i.payload),
            wr.en.eq(self.i.valid & self.i.ready),
        ]
        with m.If(wr.en):
            m.d.sync += n_in.eq(n_in + 1)

        # --- output: a synchronous read whose data is the payload ----------------------------
        frame_ready = (n_in > need) | (n_in == L)
        advance = ~self.o.valid | self.o.ready
        issue = Signal()
        m.d.comb += issue.eq(advance & frame_ready)

        # reflect the padded index into the clip, then address the circular buffer
        refl = Signal(idx_shape)
        with m.If(pos < 0):
            m.d.comb += refl.eq(-pos)
        with m.Elif(pos > L - 1):
            m.d.comb += refl.eq(2 * (L - 1) - pos)
        with m.Else():
            m.d.comb += refl.eq(pos)
        m.d.comb += [
            rd.addr.eq(refl[:abits]),
            rd.en.eq(advance),
            self.o.payload.data.eq(rd.data),
            self.o.payload.first.eq(first),
            self.o.payload.last.eq(last),
        ]

        with m.If(advance):
            m.d.sync += self.o.valid.eq(issue)
        with m.If(issue):
            m.d.sync += [
                first.eq(e == 0),
                last.eq(e == N - 1),
                last_of_clip.eq((e == N - 1) & (t == T - 1)),
                e.eq(e + 1),
                pos.eq(pos + 1),
            ]
            with m.If(e == N - 1):
                m.d.sync += e.eq(0)
                with m.If(t == T - 1):
                    # clip complete (n_in == L here): start the next clip
                    m.d.sync += [t.eq(0), n_in.eq(0), fbase.eq(-pad), pos.eq(-pad),
                                 need.eq(pad)]
                with m.Else():
                    m.d.sync += [
                        t.eq(t + 1),
                        fbase.eq(fbase + hop),
                        pos.eq(fbase + hop),
                        # frame 0 needs one sample more (its index -pad reflects to +pad)
                        need.eq(need + hop - (t == 0)),
                    ]

        m.d.comb += [
            self.clip_done.eq(self.o.valid & self.o.ready & last_of_clip),
            self.busy.eq((n_in != 0) | (t != 0) | (e != 0) | self.o.valid),
        ]

        # --- clip_start: synchronous restart (overrides everything above) --------------------
        with m.If(self.clip_start):
            m.d.sync += [n_in.eq(0), t.eq(0), e.eq(0), fbase.eq(-pad), pos.eq(-pad),
                         need.eq(pad), self.o.valid.eq(0), last_of_clip.eq(0)]
        return m
