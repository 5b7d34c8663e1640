"""Framer, Hann window, radix-2 FFT and exact magnitude, in integers.

Data flow per frame (B clips at once):

1. :func:`frames` — int16 PCM → (B, 101, 512) int16 frames with 256 samples of reflect padding
   at both clip edges (``torch.stft(center=True)``): frame t covers samples 160t−256 … 160t+255.
2. window — ``a[n] = round(pcm[n] · w[n] / 2**WIN_SHIFT)``: ``w`` is the periodic Hann window
   in u16.15 (w[256] = 1.0 = 32768); ``a`` is s19.18 in units of the float model (pcm/32768).
3. FFT — 512-point radix-2 decimation in time, in place: input in bit-reversed order, stage s
   combines blocks of 2**(s+1) with twiddles W^(k·256/2**s), W = exp(−2πj/512) in s18.16.
   Butterfly: t = round((b · W) / 2**16) per component; (a + t, a − t), halved with rounding at
   the stages in ``SCALE_STAGES`` (three halvings keep every intermediate within 25 bits:
   the DSP48's wide port). Output X·2**15 (s25.15).
4. magnitude — ``isqrt(re² + im²)`` (floor of the exact square root), u24.15, bins 0…256.
"""

from __future__ import annotations

import numpy as np

from .ops import I64, Fmt, isqrt, rshift_round

N_FFT = 512
HOP = 160
N_BINS = N_FFT // 2 + 1
LOG2_N = 9
PAD = N_FFT // 2

WIN_FMT = Fmt(16, 15, signed=False)     # Hann window ROM
WIN_SHIFT = 12                          # pcm(s16.15) · w(u16.15) >> 12 → s19.18
FFT_IN_FMT = Fmt(19, 18)
TWIDDLE_FMT = Fmt(18, 16)
SCALE_STAGES = (0, 3, 6)                # stages whose butterfly outputs are halved
FFT_DATA_BITS = 25                      # every FFT intermediate fits this many bits (tested)
FFT_OUT_FMT = Fmt(25, 18 - len(SCALE_STAGES))   # s25.15
MAG_FMT = Fmt(24, 15, signed=False)


def n_frames(n_samples: int) -> int:
    return 1 + n_samples // HOP


def frames(pcm: np.ndarray) -> np.ndarray:
    """(B, samples) int16 → (B, T, 512) frames, reflect-padded by 256 at both ends."""
    pcm = np.asarray(pcm)
    if pcm.ndim == 1:
        pcm = pcm[None]
    padded = np.pad(pcm.astype(I64), ((0, 0), (PAD, PAD)), mode="reflect")
    T = n_frames(pcm.shape[1])
    idx = np.arange(T)[:, None] * HOP + np.arange(N_FFT)[None, :]
    return padded[:, idx]


def window_rom() -> np.ndarray:
    """Periodic Hann window in WIN_FMT: round(0.5·(1 − cos(2πn/512)) · 2**15)."""
    n = np.arange(N_FFT)
    return WIN_FMT.quantize(0.5 * (1.0 - np.cos(2.0 * np.pi * n / N_FFT)))


def twiddle_rom() -> tuple[np.ndarray, np.ndarray]:
    """cos and −sin of 2πk/512 for k = 0…255 in TWIDDLE_FMT (W^k = cos − j·sin)."""
    k = np.arange(N_FFT // 2)
    ang = 2.0 * np.pi * k / N_FFT
    return TWIDDLE_FMT.quantize(np.cos(ang)), TWIDDLE_FMT.quantize(-np.sin(ang))


def bit_reverse(n_bits: int = LOG2_N) -> np.ndarray:
    idx = np.arange(1 << n_bits)
    rev = np.zeros_like(idx)
    for b in range(n_bits):
        rev |= ((idx >> b) & 1) << (n_bits - 1 - b)
    return rev


WINDOW = window_rom()
TW_RE, TW_IM = twiddle_rom()
BITREV = bit_reverse()


def apply_window(fr: np.ndarray) -> np.ndarray:
    """Frames (…, 512) int16 → windowed s19.18."""
    return rshift_round(fr * WINDOW, WIN_SHIFT)


def fft(a: np.ndarray, track: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer FFT of real windowed frames (…, 512) → (re, im), each (…, 512) in s25.15.

    ``track``, when given, receives the largest |value| seen at any stage (for the width test).
    """
    re = np.asarray(a, dtype=I64)[..., BITREV].copy()
    im = np.zeros_like(re)
    peak = 0
    for s in range(LOG2_N):
        half = 1 << s
        step = N_FFT // (2 * half)            # twiddle index stride
        j = np.arange(half)
        wr, wi = TW_RE[j * step], TW_IM[j * step]
        shape = re.shape[:-1] + (N_FFT // (2 * half), 2 * half)
        re_b, im_b = re.reshape(shape), im.reshape(shape)
        ar, ai = re_b[..., :half], im_b[..., :half]
        br, bi = re_b[..., half:], im_b[..., half:]
        tr = rshift_round(br * wr - bi * wi, TWIDDLE_FMT.frac)
        ti = rshift_round(br * wi + bi * wr, TWIDDLE_FMT.frac)
        top_r, top_i, bot_r, bot_i = ar + tr, ai + ti, ar - tr, ai - ti
        if s in SCALE_STAGES:
            top_r, top_i, bot_r, bot_i = (rshift_round(v, 1) for v in (top_r, top_i, bot_r, bot_i))
        re = np.concatenate([top_r, bot_r], axis=-1).reshape(re.shape)
        im = np.concatenate([top_i, bot_i], axis=-1).reshape(im.shape)
        if track is not None:
            peak = max(peak, int(np.abs(re).max(initial=0)), int(np.abs(im).max(initial=0)))
    if track is not None:
        track["fft_peak"] = max(track.get("fft_peak", 0), peak)
    return re, im


def magnitude(re: np.ndarray, im: np.ndarray) -> np.ndarray:
    """Exact integer magnitude floor(sqrt(re² + im²)) of bins 0…256 → u24.15."""
    re, im = re[..., :N_BINS], im[..., :N_BINS]
    return isqrt(re * re + im * im)


def stft_magnitude(pcm: np.ndarray, track: dict | None = None) -> np.ndarray:
    """(B, samples) int16 → (B, 257, T) magnitude in MAG_FMT, the layout of the float model."""
    fr = frames(pcm)
    re, im = fft(apply_window(fr), track)
    return np.swapaxes(magnitude(re, im), -1, -2)
