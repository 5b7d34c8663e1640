"""An offline synthetic keyword corpus spoken by espeak-ng, in the Speech Commands layout.

:func:`build_corpus` writes a directory that :class:`~nanomamba_hw.data.SpeechCommands` reads
unchanged: one folder per word, ``validation_list.txt`` / ``testing_list.txt``,
``_background_noise_/`` (procedural noise for the silence items), plus ``_babble_/`` (speech of
held-out voices for babble noise) and a ``corpus.json`` manifest.

- **Words.** The ten keywords, and the 25 other Speech Commands words as "unknown" (by default
  twice a keyword's count in total, so unknown does not swamp the set as in the real data).
- **Voices.** A voice is an English accent of espeak-ng (``en``, ``en-us``, ``en-gb-scotland``,
  …) combined with a voice variant (``m1``…``m8``, ``f1``…``f5``, ``klatt``…, named variants).
  Every utterance also gets its own speed, pitch, pitch range, sentence intonation (``.``,
  ``!``, ``?``), level, position in the one-second window (sometimes partly cut, as in the real
  recordings), optional room reverberation, a gentle spectral tilt and a low noise floor.
- **Split by voice.** Whole voices go to train / val / test (≈70/15/15 of the voices left after
  a small babble-only set), so no test voice is ever heard in training.
- **Deterministic.** Same seed and parameters, same espeak-ng build → byte-identical files.
  espeak-ng keeps internal state from one utterance to the next that survives even
  ``espeak_Terminate``/``espeak_Initialize``, and seeds its breath noise from the clock unless
  told otherwise. So synthesis runs in fresh subprocesses, each over a fixed shard of the
  utterance list in a fixed order, with espeak-ng's generator reseeded before every utterance;
  the result does not depend on the number of workers. Every other random draw comes from
  ``numpy`` generators seeded by ``(seed, purpose, item index)``.
- **Cached and atomic.** Built in a hidden temporary directory and renamed into place when
  complete; a second call with the same parameters returns at once.

espeak-ng comes from the PyPI package ``espeakng-loader`` (library + data, driven here through
ctypes), so no system install is needed.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import pcm_from_float, write_wav
from ..config import CLASS_NAMES, CLIP_SAMPLES, SAMPLE_RATE
from . import noise as _noise
from .speech_commands import BACKGROUND_DIR, KEYWORDS, SPLITS, DatasetError

GENERATOR_VERSION = 1

UNKNOWN_WORDS: tuple[str, ...] = (
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four",
    "happy", "house", "learn", "nine", "one", "seven", "sheila", "six", "three", "tree", "two",
    "visual", "wow", "zero", "marvin",
)

# English accents of espeak-ng (lang/gmw/*); en-Shaw is left out (it reads Shavian script).
ACCENTS: tuple[str, ...] = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd", "en-us-nyc",
)

# Voice variants (voices/!v/*) that sound like a person; the robotic, echo-laden, whispering
# and novelty ones are left out.
VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "croak", "klatt", "klatt2", "klatt3", "klatt4", "grandpa", "grandma",
    "Andy", "Denis", "Gene", "Michael", "Mike", "adam", "david", "ed", "max", "paul", "quincy",
    "rob", "robert", "travis", "victor",
    "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "linda", "steph", "shelby", "zac",
)

# Sentences for babble. None holds a keyword, so babble cannot say one into a clip.
BABBLE_PHRASES: tuple[str, ...] = (
    "the weather is nice today", "I think we should take the train", "where did you put the keys",
    "she said it would be ready by noon", "can you pass me the salt please",
    "this coffee is far too hot", "we have a meeting after lunch", "my brother lives in the city",
    "the children are playing in the garden", "have you seen the new film",
    "please close the window", "it has been raining all week", "that was a wonderful dinner",
    "the shop closes at six", "I forgot my umbrella at home", "they are painting the kitchen",
    "the bus was late again this morning", "he reads the paper every evening",
    "we should call your mother", "the market is busy on saturdays",
    "what time does the concert begin", "I would like a cup of tea", "the cat sleeps all day",
    "our neighbours have a big dog", "she plays the piano beautifully",
    "the library is quiet in the evening", "let me check my calendar",
    "that building is very old", "he bought fresh bread and cheese",
    "the river is cold in winter", "we walked along the beach", "my phone battery is empty",
)

# Files of _background_noise_: (file stem, noise kind, seconds). Written at peak 0.5.
BACKGROUND_NOISES: tuple[tuple[str, str, int], ...] = (
    ("white_noise", "white", 20), ("pink_noise", "pink", 30),
    ("factory", "factory", 60), ("street", "street", 45),
)
BACKGROUND_PEAK = 0.5

SPLIT_FRACTIONS: tuple[float, float, float] = (0.70, 0.15, 0.15)
BABBLE_VOICE_FRACTION = 0.08
N_SHARDS = 2          # fixed, so the output never depends on the worker count
ESPEAK_RATE = 22050

_CACHE_ENV = "NANOMAMBA_CACHE"


# ------------------------------------------------------------------------------------------
# espeak-ng through ctypes


class _Espeak:
    """A synchronous espeak-ng instance in this process (the library is process-global)."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                 ctypes.c_void_p)
    _SYNCHRONOUS = 2                         # AUDIO_OUTPUT_SYNCHRONOUS
    _RATE, _PITCH, _RANGE = 1, 3, 4          # espeak_PARAMETER
    _POS_CHARACTER, _CHARS_UTF8 = 1, 1

    def __init__(self) -> None:
        import espeakng_loader

        self.data_path = espeakng_loader.get_data_path()
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        if not hasattr(lib, "espeak_ng_SetRandSeed"):
            raise DatasetError("this espeak-ng lacks espeak_ng_SetRandSeed (needs >= 1.52): its "
                               "breathy voices would be seeded from the clock, not reproducible")
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib = lib
        self.rate = lib.espeak_Initialize(self._SYNCHRONOUS, 0, self.data_path.encode(), 0)
        if self.rate <= 0:
            raise DatasetError(f"espeak-ng failed to initialise (data at {self.data_path})")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events):
            if wav and n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = self._CALLBACK(collect)  # keep a reference: C holds only a pointer
        lib.espeak_SetSynthCallback(self._callback)

    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int,
              seed: int) -> np.ndarray:
        """int16 samples at ``self.rate`` of ``text`` in ``voice`` (``accent+variant``).

        ``seed`` seeds espeak-ng's own noise (breath, aspiration); unseeded it uses the clock.
        """
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DatasetError(f"espeak-ng has no voice {voice!r}")
        for par, val in ((self._RATE, rate), (self._PITCH, pitch), (self._RANGE, pitch_range)):
            self.lib.espeak_SetParameter(par, int(val), 0)
        self.lib.espeak_ng_SetRandSeed(int(seed))
        self._chunks.clear()
        data = text.encode("utf-8")
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, self._POS_CHARACTER, 0,
                                    self._CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != 0:
            raise DatasetError(f"espeak-ng failed on {text!r} with {voice!r} (error {err})")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def espeak_version() -> str:
    """The espeak-ng library version and the ``espeakng-loader`` package version."""
    import espeakng_loader  # noqa: F401  (raises ImportError when missing)
    from importlib.metadata import PackageNotFoundError, version

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    try:
        pkg = version("espeakng-loader")
    except PackageNotFoundError:
        pkg = "unknown"
    return f"espeak-ng {lib.espeak_Info(None).decode()} (espeakng-loader {pkg})"


def espeak_status() -> tuple[bool, str]:
    """``(True, version)`` if espeak-ng can be loaded here, else ``(False, reason)``."""
    try:
        import espeakng_loader

        espeakng_loader.get_data_path()
        return True, espeak_version()
    except ImportError:
        return False, "the espeakng-loader package is not installed (pip install espeakng-loader)"
    except (OSError, RuntimeError) as e:
        return False, f"espeak-ng library cannot be loaded: {e}"


def list_voices() -> list[str]:
    """Every ``accent+variant`` voice of :data:`ACCENTS` × :data:`VARIANTS` this espeak-ng has."""
    import espeakng_loader

    data = Path(espeakng_loader.get_data_path())
    langs = {p.name.lower() for p in (data / "lang").rglob("*") if p.is_file()}
    have = {p.name for p in (data / "voices" / "!v").iterdir() if p.is_file()}
    return [f"{a}+{v}" for a in ACCENTS if a in langs for v in VARIANTS if v in have]


def _shard_worker() -> None:
    """Subprocess entry: synthesise a pickled job list from stdin, pickle the int16 arrays out."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the C library prints goes to stderr, not into our pickle
    jobs = pickle.load(sys.stdin.buffer)
    engine = _Espeak()
    result = {"rate": engine.rate, "audio": [engine.synth(*job) for job in jobs]}
    pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.close()


def _start_shard(jobs: list[tuple]) -> subprocess.Popen:
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from nanomamba_hw.data.synthetic import _shard_worker; "
                               "_shard_worker()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc._nm_input = pickle.dumps(jobs, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[attr-defined]
    return proc


def _finish_shard(proc: subprocess.Popen) -> list[np.ndarray]:
    out, err = proc.communicate(proc._nm_input)  # type: ignore[attr-defined]
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise DatasetError("espeak-ng synthesis subprocess failed:\n" + "\n".join(tail))
    result = pickle.loads(out)
    if result["rate"] != ESPEAK_RATE:
        raise DatasetError(f"espeak-ng runs at {result['rate']} Hz, expected {ESPEAK_RATE}")
    return result["audio"]


def _synthesise(jobs: list[tuple], workers: int) -> list[np.ndarray]:
    """Run the jobs in :data:`N_SHARDS` fresh subprocesses, at most ``workers`` at once."""
    bounds = np.linspace(0, len(jobs), N_SHARDS + 1).astype(int)
    shards = [jobs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    audio: list[np.ndarray] = []
    workers = max(1, workers)
    for k in range(0, len(shards), workers):
        procs = [_start_shard(s) for s in shards[k:k + workers]]
        try:
            # One thread per subprocess feeds its stdin and drains its stdout concurrently.
            with ThreadPoolExecutor(max_workers=len(procs)) as pool:
                for part in pool.map(_finish_shard, procs):
                    audio += part
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    return audio


# ------------------------------------------------------------------------------------------
# The plan: which utterance goes where, drawn from the seed before any audio exists


def _largest_remainder(total: int, fractions: tuple[float, ...]) -> list[int]:
    raw = [total * f for f in fractions]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    # Tiny corpora: give every split at least one item when there are enough to go round.
    for i in range(len(counts)):
        if counts[i] == 0 and total >= len(counts):
            counts[counts.index(max(counts))] -= 1
            counts[i] = 1
    return counts


def _assign_voices(voices: list[str], seed: int) -> dict[str, list[str]]:
    """Shuffle the voices and cut them into babble / train / val / test groups."""
    perm = [voices[i] for i in np.random.default_rng([seed, 0]).permutation(len(voices))]
    n_babble = max(8, round(BABBLE_VOICE_FRACTION * len(perm)))
    rest = perm[n_babble:]
    sizes = _largest_remainder(len(rest), SPLIT_FRACTIONS)
    groups = {"babble": sorted(perm[:n_babble])}
    start = 0
    for split, size in zip(SPLITS, sizes, strict=True):
        groups[split] = sorted(rest[start:start + size])
        start += size
    if any(not groups[s] for s in SPLITS):
        raise DatasetError(f"only {len(voices)} espeak-ng voices: too few to split by voice")
    return groups


def _plan(params: dict, voice_groups: dict[str, list[str]]) -> list[dict]:
    """Every utterance: class, split, word, voice, file name, and its espeak parameters."""
    seed = params["seed"]
    classes = [(w, [w], params["per_word"]) for w in KEYWORDS]
    classes.append(("unknown", list(UNKNOWN_WORDS), params["unknown_total"]))
    items: list[dict] = []
    per_voice_word: dict[tuple[str, str], int] = {}
    for ci, (cls, words, total) in enumerate(classes):
        split_counts = _largest_remainder(total, SPLIT_FRACTIONS)
        for si, (split, n) in enumerate(zip(SPLITS, split_counts, strict=True)):
            rng = np.random.default_rng([seed, 1, ci, si])
            vs = voice_groups[split]
            vperm = rng.permutation(len(vs))
            wperm = rng.permutation(len(words))
            for k in range(n):
                # Cycle through shuffled voices and words so each is used about equally.
                word = words[wperm[k % len(words)]]
                voice = vs[vperm[k % len(vs)]]
                m = per_voice_word.get((word, voice), 0)
                per_voice_word[(word, voice)] = m + 1
                items.append({"cls": cls, "split": split, "word": word, "voice": voice,
                              "path": f"{word}/{voice}_nohash_{m}.wav"})
    bv = voice_groups["babble"]
    rng = np.random.default_rng([seed, 5])
    pperm = rng.permutation(len(BABBLE_PHRASES))
    vperm = rng.permutation(len(bv))
    for k in range(params["babble_clips"]):
        voice = bv[vperm[k % len(bv)]]
        items.append({"cls": "_babble_", "split": "babble",
                      "word": BABBLE_PHRASES[pperm[k % len(pperm)]], "voice": voice,
                      "path": f"_babble_/{voice}_{k:04d}.wav"})
    for idx, it in enumerate(items):
        rng = np.random.default_rng([seed, 2, idx])
        babble = it["split"] == "babble"
        it["rate"] = int(rng.integers(150, 200) if babble else rng.integers(120, 241))
        it["pitch"] = int(rng.integers(20, 81))
        it["range"] = int(rng.integers(20, 81))
        punct = rng.choice(["", ".", "!", "?"], p=[0.4, 0.3, 0.15, 0.15])
        it["text"] = it["word"] + str(punct)
        it["espeak_seed"] = int(rng.integers(1, 2**31 - 1))
    return items


# ------------------------------------------------------------------------------------------
# Turning espeak's output into a recording-like one-second clip


def _trim(x: np.ndarray, rel: float = 0.01) -> np.ndarray:
    m = np.max(np.abs(x)) if x.size else 0.0
    if m <= 0.0:
        return x
    idx = np.flatnonzero(np.abs(x) >= rel * m)
    return x[idx[0]: idx[-1] + 1]


@functools.cache
def _resample_filter() -> np.ndarray:
    # resample_poly's own default low-pass for 320/441, designed once rather than per call.
    from scipy.signal import firwin

    return firwin(2 * 10 * 441 + 1, 1.0 / 441, window=("kaiser", 5.0))


def _to_16k(raw: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly

    x = raw.astype(np.float64) / 32768.0
    return resample_poly(_trim(x), 320, 441, window=_resample_filter())  # 22050 → 16000 Hz


def _colour(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small room and microphone: optional reverberation tail and first-order tilt."""
    from scipy.signal import fftconvolve, lfilter

    if rng.random() < 0.5:
        rt60 = rng.uniform(0.08, 0.4)
        n = int(0.5 * rt60 * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
        tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # first reflections arrive after ~2 ms
        drr_db = rng.uniform(3.0, 15.0)         # direct-to-reverberant energy ratio
        tail *= 10.0 ** (-drr_db / 20.0) / np.sqrt(np.sum(tail ** 2) + 1e-12)
        tail[0] = 1.0
        x = fftconvolve(x, tail)
    if rng.random() < 0.5:
        a = rng.uniform(0.2, 0.7)
        if rng.random() < 0.5:   # duller (distant or cheap microphone)
            x = lfilter([1.0 - a], [1.0, -a], x)
        else:                    # thinner (small microphone, little bass)
            x = lfilter([1.0, -a], [1.0], x)
    return x


def _render_word(raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """espeak int16 at 22.05 kHz → int16 (16000,): colour, level, position, noise floor."""
    x = _colour(_to_16k(raw), rng)
    x *= 10.0 ** (rng.uniform(-26.0, -1.0) / 20.0) / max(np.max(np.abs(x)), 1e-9)  # peak level
    n = len(x)
    out = np.zeros(CLIP_SAMPLES)
    if n >= CLIP_SAMPLES:
        start = -int(rng.integers(0, n - CLIP_SAMPLES + 1))
    elif rng.random() < 0.1:
        # Partly outside the window, as when a real recording starts late or stops early.
        cut = int(rng.uniform(0.05, 0.3) * n)
        start = -cut if rng.random() < 0.5 else CLIP_SAMPLES - n + cut
    else:
        start = int(rng.integers(0, CLIP_SAMPLES - n + 1))
    lo, hi = max(0, start), min(CLIP_SAMPLES, start + n)
    out[lo:hi] = x[lo - start: hi - start]
    if rng.random() < 0.7:  # microphone / room noise floor, 50-75 dB below full scale
        out += 10.0 ** (rng.uniform(-75.0, -50.0) / 20.0) * rng.standard_normal(CLIP_SAMPLES)
    return pcm_from_float(out)


def _render_babble(raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = _colour(_to_16k(raw), rng)
    return pcm_from_float(_noise.peak_normalise(x, 0.5))


# ------------------------------------------------------------------------------------------
# Building and caching


def corpus_params(*, seed: int = 0, per_word: int = 150, unknown_total: int | None = None,
                  babble_clips: int = 160) -> dict:
    """The parameter record that identifies a corpus (stored in ``corpus.json``, hashed)."""
    if per_word < 1:
        raise ValueError(f"per_word must be >= 1, got {per_word}")
    unknown_total = 2 * per_word if unknown_total is None else unknown_total
    if unknown_total < 0 or babble_clips < 0:
        raise ValueError("unknown_total and babble_clips must be >= 0")
    return {"seed": int(seed), "per_word": int(per_word), "unknown_total": int(unknown_total),
            "babble_clips": int(babble_clips), "split_fractions": list(SPLIT_FRACTIONS),
            "babble_voice_fraction": BABBLE_VOICE_FRACTION, "generator_version": GENERATOR_VERSION,
            "espeak": espeak_version()}


def _params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def cache_root() -> Path:
    """``$NANOMAMBA_CACHE`` if set, else ``~/.cache/nanomamba_hw``."""
    env = os.environ.get(_CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nanomamba_hw"


def default_corpus_dir(params: dict) -> Path:
    """Where a corpus with these parameters is cached: ``<cache_root>/synthetic-<hash>``."""
    return cache_root() / f"synthetic-{_params_hash(params)}"


def read_manifest(corpus_dir: str | Path) -> dict | None:
    """The ``corpus.json`` of a corpus directory, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(corpus_dir) / "corpus.json").read_text())
    except (OSError, ValueError):
        return None


def _clean_stale(out_dir: Path) -> None:
    """Remove temporary build directories left by runs that were killed."""
    for tmp in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            pass


def build_corpus(out_dir: str | Path | None = None, *, seed: int = 0, per_word: int = 150,
                 unknown_total: int | None = None, babble_clips: int = 160, workers: int = 2,
                 force: bool = False, progress: bool = True) -> Path:
    """Build (or find in the cache) a synthetic corpus and return its directory.

    ``per_word`` utterances per keyword and ``unknown_total`` (default ``2 × per_word``) spread
    over the 25 unknown words are split 70/15/15 into train/val/test; ``babble_clips`` sentences
    of babble-only voices go to ``_babble_/``. ``out_dir`` defaults to
    :func:`default_corpus_dir`. If ``out_dir`` already holds a corpus with the same parameters it
    is returned at once; one with other parameters, or any other non-empty directory, is an
    error unless ``force`` (then a corpus is replaced, never anything else). ``workers`` is how
    many synthesis subprocesses run at once; it does not change the output.
    """
    ok, why = espeak_status()
    if not ok:
        raise DatasetError(f"cannot build the synthetic corpus: {why}")
    params = corpus_params(seed=seed, per_word=per_word, unknown_total=unknown_total,
                           babble_clips=babble_clips)
    out_dir = Path(out_dir) if out_dir is not None else default_corpus_dir(params)
    if out_dir.exists():
        manifest = read_manifest(out_dir)
        if manifest is not None and manifest.get("params") == params:
            return out_dir
        if not out_dir.is_dir():
            raise DatasetError(f"{out_dir}: exists and is not a directory")
        if manifest is None and any(out_dir.iterdir()):
            raise DatasetError(f"{out_dir}: not empty and not a synthetic corpus; refusing to "
                               "write into it")
        if manifest is not None and not force:
            raise DatasetError(f"{out_dir}: holds a synthetic corpus with other parameters "
                               f"({manifest.get('params')}); pass force=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = _write_corpus(tmp, params, workers=workers, progress=progress)
        with open(tmp / "corpus.json", "w") as f:  # last: its presence means "complete"
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        if out_dir.exists():
            # Another process may have finished the same corpus meanwhile: keep theirs.
            if (read_manifest(out_dir) or {}).get("params") == params:
                shutil.rmtree(tmp)
                return out_dir
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_corpus(root: Path, params: dict, *, workers: int, progress: bool) -> dict:
    voices = list_voices()
    groups = _assign_voices(voices, params["seed"])
    items = _plan(params, groups)
    root.mkdir(parents=True)

    if progress:
        print(f"synthesising {len(items)} utterances with {len(voices)} espeak-ng voices …",
              file=sys.stderr)
    audio = _synthesise([(it["text"], it["voice"], it["rate"], it["pitch"], it["range"],
                          it["espeak_seed"]) for it in items], workers)

    lists: dict[str, list[str]] = {"val": [], "test": []}
    counts = {s: {c: 0 for c in CLASS_NAMES} for s in SPLITS}
    bar = tqdm(list(zip(items, audio, strict=True)), desc="writing corpus", unit="clip",
               disable=not progress)
    for idx, (it, raw) in enumerate(bar):
        if raw.size == 0:
            raise DatasetError(f"espeak-ng produced no audio for {it['text']!r} ({it['voice']})")
        rng = np.random.default_rng([params["seed"], 3, idx])
        if it["split"] == "babble":
            write_wav(root / it["path"], _render_babble(raw, rng))
            continue
        write_wav(root / it["path"], _render_word(raw, rng))
        counts[it["split"]][it["cls"]] += 1
        if it["split"] in lists:
            lists[it["split"]].append(it["path"])

    for name, split in (("validation_list.txt", "val"), ("testing_list.txt", "test")):
        (root / name).write_text("".join(p + "\n" for p in sorted(lists[split])))

    (root / BACKGROUND_DIR).mkdir()
    background = []
    for i, (stem, kind, seconds) in enumerate(BACKGROUND_NOISES):
        rng = np.random.default_rng([params["seed"], 4, i])
        x = _noise.make_noise(kind, seconds * SAMPLE_RATE, rng) * (BACKGROUND_PEAK / _noise.PEAK)
        rel = f"{BACKGROUND_DIR}/{stem}.wav"
        write_wav(root / rel, pcm_from_float(x))
        background.append({"file": rel, "kind": kind, "seconds": seconds})

    # Silence items per split as many as a keyword has, so silence is not a giant class.
    silence = {s: counts[s][KEYWORDS[0]] for s in SPLITS}
    for s in SPLITS:
        counts[s]["silence"] = silence[s]
    return {
        "generator": "nanomamba_hw.data.synthetic",
        "version": GENERATOR_VERSION,
        "params": params,
        "params_hash": _params_hash(params),
        "classes": list(CLASS_NAMES),
        "counts": counts,
        "silence_items": silence,
        "voices": {k: groups[k] for k in (*SPLITS, "babble")},
        "words": {"keywords": list(KEYWORDS), "unknown": list(UNKNOWN_WORDS)},
        "babble_clips": params["babble_clips"],
        "background_noise": background,
        "sample_rate": SAMPLE_RATE,
    }


# ------------------------------------------------------------------------------------------
# Command line


def _summary(out: Path, manifest: dict, seconds: float | None) -> str:
    counts = manifest["counts"]
    head = f"{'class':<9}" + "".join(f"{s:>7}" for s in SPLITS) + f"{'total':>7}"
    lines = [f"corpus: {out}", head]
    for c in CLASS_NAMES:
        row = [counts[s][c] for s in SPLITS]
        lines.append(f"{c:<9}" + "".join(f"{n:>7}" for n in row) + f"{sum(row):>7}")
    tot = [sum(counts[s].values()) for s in SPLITS]
    lines.append(f"{'total':<9}" + "".join(f"{n:>7}" for n in tot) + f"{sum(tot):>7}")
    v = manifest["voices"]
    lines.append("voices: " + ", ".join(f"{k} {len(v[k])}" for k in (*SPLITS, "babble")))
    lines.append(f"babble clips: {manifest['babble_clips']}; background noise files: "
                 f"{len(manifest['background_noise'])}; silence items are crops of those")
    lines.append(f"{manifest['params']['espeak']}")
    if seconds is not None:
        lines.append(f"time: {seconds:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m nanomamba_hw.data.synthetic --out DIR [--seed N] [--per-word N]``."""
    ap = argparse.ArgumentParser(prog="python -m nanomamba_hw.data.synthetic",
                                 description="Build the espeak-ng synthetic keyword corpus.")
    ap.add_argument("--out", type=Path, default=None,
                    help="output directory (default: the cache, $NANOMAMBA_CACHE or "
                         "~/.cache/nanomamba_hw)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-word", type=int, default=150, help="utterances per keyword")
    ap.add_argument("--unknown", type=int, default=None,
                    help="unknown-word utterances in total (default 2 × per-word)")
    ap.add_argument("--babble-clips", type=int, default=160)
    ap.add_argument("--workers", type=int, default=2, help="synthesis subprocesses at once")
    ap.add_argument("--force", action="store_true", help="replace a corpus with other parameters")
    args = ap.parse_args(argv)
    ok, why = espeak_status()
    if not ok:
        print(f"error: {why}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    try:
        params = corpus_params(seed=args.seed, per_word=args.per_word,
                               unknown_total=args.unknown, babble_clips=args.babble_clips)
        target = args.out if args.out is not None else default_corpus_dir(params)
        cached = (read_manifest(target) or {}).get("params") == params
        out = build_corpus(args.out, seed=args.seed, per_word=args.per_word,
                           unknown_total=args.unknown, babble_clips=args.babble_clips,
                           workers=args.workers, force=args.force)
    except ValueError as e:
        ap.error(str(e))
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(_summary(out, read_manifest(out), None if cached else time.perf_counter() - t0))
    if cached:
        print("(already built: nothing to do)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
