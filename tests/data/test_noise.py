"""Noise generators and SNR mixing (nanomamba_hw.data.noise)."""

import numpy as np
import pytest

from nanomamba_hw.data.noise import (
    NOISE_TYPES, babble, make_noise, mix_at_snr, peak_normalise, rms,
)

SR = 16000


def fake_speech(n_clips=12, seed=0):
    """Harmonic, amplitude-modulated 'syllables' of varying pitch: a stand-in speech source."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n_clips):
        n = int(rng.integers(4000, 12000))
        t = np.arange(n) / SR
        f0 = rng.uniform(90, 250)
        x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 8))
        x *= np.hanning(n) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))
        clips.append(np.concatenate([np.zeros(500), x, np.zeros(500)]).astype(np.float32))
    return clips


SPEECH = fake_speech()


def noise(kind, n=SR, seed=0):
    return make_noise(kind, n, np.random.default_rng(seed), speech_source=SPEECH)


def band_energy(x, lo, hi):
    p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return p[(f >= lo) & (f < hi)].sum()


@pytest.mark.parametrize("kind", NOISE_TYPES)
def test_generator_deterministic_finite_peak(kind):
    a, b, c = noise(kind, seed=3), noise(kind, seed=3), noise(kind, seed=4)
    assert a.dtype == np.float32 and a.shape == (SR,)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(np.isfinite(a))
    assert np.max(np.abs(a)) == pytest.approx(0.7, abs=1e-6)
    # An integer seed is the same as a Generator made from it.
    assert np.array_equal(make_noise(kind, SR, 3, speech_source=SPEECH), a)


@pytest.mark.parametrize("kind", ["factory", "street", "pink", "white", "babble"])
def test_long_noise(kind):
    x = noise(kind, n=5 * SR + 123)
    assert x.shape == (5 * SR + 123,) and np.all(np.isfinite(x))
    assert np.max(np.abs(x)) == pytest.approx(0.7, abs=1e-6)


def test_pink_has_more_low_than_high_energy():
    for seed in range(3):
        p, w = noise("pink", seed=seed), noise("white", seed=seed)
        pink_ratio = band_energy(p, 0, 1000) / band_energy(p, 4000, 8000)
        white_ratio = band_energy(w, 0, 1000) / band_energy(w, 4000, 8000)
        assert pink_ratio > 5          # ≈ ln(1000)/ln(2) = 10 for a 1/f spectrum
        assert 0.15 < white_ratio < 0.4  # flat: the bandwidth ratio 1/4


def test_street_energy_below_1khz():
    for seed in range(5):
        s = noise("street", seed=seed)
        frac = band_energy(s, 0, 1000) / band_energy(s, 0, 8001)
        assert frac > 0.5


def test_factory_has_mains_hum():
    x = noise("factory", seed=1)
    p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2  # 1 Hz bins for a 1 s clip
    assert p[50] > 100 * np.median(p)
    assert p[100] > 100 * np.median(p)


def test_babble_needs_speech_and_uses_it():
    with pytest.raises(ValueError, match="speech_source"):
        make_noise("babble", SR, 0)
    with pytest.raises(ValueError):
        babble(SR, 0, speech_source=[])
    # A callable source works as well as a list, and so does a 2-D array of clips.
    calls = []

    def source(rng):
        calls.append(1)
        return SPEECH[int(rng.integers(0, len(SPEECH)))]

    assert np.max(np.abs(babble(SR, 0, speech_source=source))) == pytest.approx(0.7, abs=1e-6)
    assert len(calls) >= 5  # at least one clip per talker
    grid = np.stack([np.resize(c, 8000) for c in SPEECH])
    assert np.all(np.isfinite(babble(SR, 0, speech_source=grid)))
    # Babble made of harmonic speech keeps most of its energy below 4 kHz.
    b = noise("babble", seed=2)
    assert band_energy(b, 0, 4000) > 0.9 * band_energy(b, 0, 8001)


def test_unknown_noise_type():
    with pytest.raises(ValueError, match="unknown noise type"):
        make_noise("traffic", SR, 0)


def test_peak_normalise_zero_stays_zero():
    assert np.array_equal(peak_normalise(np.zeros(10)), np.zeros(10, np.float32))


def realised_snr(clean, mixed):
    c = np.asarray(clean, np.float64)
    n = np.asarray(mixed, np.float64) - c
    return 20 * np.log10(np.sqrt(np.mean(c ** 2, -1)) / np.sqrt(np.mean(n ** 2, -1)))


@pytest.mark.parametrize("kind", NOISE_TYPES)
@pytest.mark.parametrize("snr", [-15, -5, 0, 5, 15])
def test_mix_hits_snr(kind, snr):
    clean = 0.3 * SPEECH[0][:SR] if len(SPEECH[0]) >= SR else np.resize(0.3 * SPEECH[0], SR)
    mixed = mix_at_snr(clean, noise(kind, seed=snr + 20), snr)
    assert mixed.dtype == np.float32 and mixed.shape == (SR,)
    assert realised_snr(clean, mixed) == pytest.approx(snr, abs=0.1)


def test_mix_batch_shared_and_per_row():
    rng = np.random.default_rng(0)
    levels = np.array([[0.01], [0.1], [0.3], [0.05]])
    clean = (rng.standard_normal((4, SR)) * levels).astype(np.float32)
    snrs = np.array([-10.0, 0.0, 7.5, 20.0])
    shared = noise("pink", seed=1)
    mixed = mix_at_snr(clean, shared, snrs)
    assert mixed.shape == (4, SR)
    np.testing.assert_allclose(realised_snr(clean, mixed), snrs, atol=0.1)
    # Row by row gives the same result.
    for i in range(4):
        np.testing.assert_allclose(mixed[i], mix_at_snr(clean[i], shared, snrs[i]), atol=1e-6)
    per_row = np.stack([noise("white", seed=s) for s in range(4)])
    np.testing.assert_allclose(realised_snr(clean, mix_at_snr(clean, per_row, 5.0)), 5.0, atol=0.1)


def test_mix_follows_the_recipe_formula():
    rng = np.random.default_rng(5)
    c, z = rng.standard_normal(SR) * 0.2, rng.standard_normal(SR)
    rc, rn = np.sqrt(np.mean(c ** 2) + 1e-10), np.sqrt(np.mean(z ** 2) + 1e-10)
    np.testing.assert_allclose(mix_at_snr(c, z, 3.0), c + z * rc * 10 ** (-3 / 20) / rn, atol=1e-6)
    assert rms(np.zeros(5)) == pytest.approx(1e-5)
    # No clipping: a loud mix may exceed full scale.
    assert np.max(np.abs(mix_at_snr(np.full(SR, 0.9), z, -10.0))) > 1.0


def test_mix_length_mismatch():
    with pytest.raises(ValueError, match="samples"):
        mix_at_snr(np.zeros(SR), np.zeros(SR - 1), 0.0)
