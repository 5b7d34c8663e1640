"""The espeak-ng synthetic corpus (nanomamba_hw.data.synthetic): determinism, voice split,
cache, atomic writes, and that the Speech Commands loader and babble read it."""

import hashlib
import json
import time

import numpy as np
import pytest

from nanomamba_hw.data import DatasetError, SpeechCommands, make_noise, speech_source_from_corpus
from nanomamba_hw.data import synthetic
from nanomamba_hw.data.speech_commands import SPLITS

OK, WHY = synthetic.espeak_status()
pytestmark = pytest.mark.skipif(not OK, reason=f"espeak-ng unavailable: {WHY}")

TINY = dict(per_word=7, unknown_total=14, babble_clips=10, progress=False)


def digest(root):
    """sha256 of every file under root, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def voice_of(rel):
    return rel.split("/")[-1].split("_nohash_")[0]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    a = synthetic.build_corpus(base / "a", seed=0, workers=2, **TINY)
    b = synthetic.build_corpus(base / "b", seed=0, workers=1, **TINY)
    c = synthetic.build_corpus(base / "c", seed=1, workers=2, **TINY)
    return a, b, c


def test_same_seed_is_byte_identical(corpora):
    a, b, _ = corpora
    da, db = digest(a), digest(b)
    assert len(da) > 60
    assert da == db  # also shows the worker count does not change the output


def test_other_seed_differs(corpora):
    a, _, c = corpora
    da, dc = digest(a), digest(c)
    wav_a = {h for k, h in da.items() if k.endswith(".wav")}
    wav_c = {h for k, h in dc.items() if k.endswith(".wav")}
    assert not wav_a & wav_c  # no audio file in common
    assert da["corpus.json"] != dc["corpus.json"]


def test_layout_and_manifest(corpora):
    root = corpora[0]
    m = json.loads((root / "corpus.json").read_text())
    assert m["params"]["seed"] == 0 and m["params"]["per_word"] == 7
    assert m["version"] == synthetic.GENERATOR_VERSION
    for kw in synthetic.KEYWORDS:
        assert (root / kw).is_dir()
    assert [m["counts"][s]["yes"] for s in SPLITS] == [5, 1, 1]
    assert [m["counts"][s]["unknown"] for s in SPLITS] == [10, 2, 2]
    assert len(list((root / "_babble_").glob("*.wav"))) == 10
    n_noise = len(synthetic.BACKGROUND_NOISES)
    assert len(list((root / "_background_noise_").glob("*.wav"))) == n_noise
    assert (root / "validation_list.txt").is_file() and (root / "testing_list.txt").is_file()
    assert not list(root.parent.glob(".*partial*"))  # no temporary directory left behind


def test_split_by_voice(corpora):
    root = corpora[0]
    m = json.loads((root / "corpus.json").read_text())
    groups = {k: set(v) for k, v in m["voices"].items()}
    names = [*SPLITS, "babble"]
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not groups[x] & groups[y], f"{x} and {y} share voices"
    assert len(groups["train"]) > 2 * len(groups["test"]) > 0
    # The files agree with the manifest: every clip's voice belongs to its split's group.
    for split in SPLITS:
        ds = SpeechCommands(root, split, n_silence=0)
        assert ds.n_files > 0
        for rel in ds.paths:
            assert voice_of(rel) in groups[split], (split, rel)
    for p in (root / "_babble_").glob("*.wav"):
        assert p.name.rsplit("_", 1)[0] in groups["babble"]


def test_loader_reads_corpus(corpora):
    root = corpora[0]
    m = json.loads((root / "corpus.json").read_text())
    for split in SPLITS:
        ds = SpeechCommands(root, split)
        assert ds.class_counts() == m["counts"][split]
        assert ds.n_silence == m["silence_items"][split]
        x, y = ds.load_all(progress=False)
        assert x.shape == (len(ds), 16000) and np.all(np.isfinite(x))
        speech = x[y != 10]
        assert np.all(np.max(np.abs(speech), axis=1) > 0.02)  # every word clip holds sound
        assert np.max(np.abs(x)) < 1.0


def test_babble_from_held_out_voices(corpora):
    root = corpora[0]
    clips = speech_source_from_corpus(root)
    assert len(clips) == 10 and all(c.dtype == np.float32 for c in clips)
    a = make_noise("babble", 16000, 5, speech_source=clips)
    assert np.array_equal(a, make_noise("babble", 16000, 5, speech_source=clips))
    assert np.max(np.abs(a)) == pytest.approx(0.7, abs=1e-6)
    test_clips = speech_source_from_corpus(root, source="test", max_clips=3)
    assert len(test_clips) == 3


def test_cache_hit_returns_at_once(corpora):
    a = corpora[0]
    before = digest(a)
    t0 = time.perf_counter()
    assert synthetic.build_corpus(a, seed=0, **TINY) == a
    assert time.perf_counter() - t0 < 1.0
    assert digest(a) == before


def test_refuses_other_params_and_foreign_dirs(corpora, tmp_path):
    a = corpora[0]
    with pytest.raises(DatasetError, match="other parameters"):
        synthetic.build_corpus(a, seed=5, **TINY)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="refusing"):
        synthetic.build_corpus(foreign, seed=0, **TINY)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_force_replaces_a_corpus(tmp_path):
    out = synthetic.build_corpus(tmp_path / "x", seed=0, per_word=2, unknown_total=0,
                                 babble_clips=0, progress=False)
    synthetic.build_corpus(out, seed=3, per_word=2, unknown_total=0, babble_clips=0,
                           progress=False, force=True)
    assert json.loads((out / "corpus.json").read_text())["params"]["seed"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary or old copy left


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(root, params, **kw):
        root.mkdir(parents=True)
        (root / "yes").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_corpus", boom)
    with pytest.raises(KeyboardInterrupt):
        synthetic.build_corpus(tmp_path / "y", seed=0, **TINY)
    assert list(tmp_path.iterdir()) == []


def test_default_location_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOMAMBA_CACHE", str(tmp_path / "cache"))
    params = synthetic.corpus_params(seed=0, per_word=7, unknown_total=14, babble_clips=10)
    where = synthetic.default_corpus_dir(params)
    assert where.parent == tmp_path / "cache" and where.name.startswith("synthetic-")
    # Another seed, another directory.
    assert synthetic.default_corpus_dir({**params, "seed": 1}) != where


def test_cli_summary(corpora, capsys):
    a = corpora[0]
    assert synthetic.main(["--out", str(a), "--per-word", "7", "--unknown", "14",
                           "--babble-clips", "10"]) == 0
    out = capsys.readouterr().out
    assert "unknown" in out and "already built" in out and "voices: train" in out
    assert synthetic.main(["--out", str(a), "--per-word", "5"]) == 1
