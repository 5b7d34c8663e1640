"""The Speech Commands loader on a tiny tree built here (nanomamba_hw.data.speech_commands)."""

import json

import numpy as np
import pytest
import soundfile as sf

from nanomamba_hw.audio import write_wav
from nanomamba_hw.config import CLASS_NAMES
from nanomamba_hw.data import DatasetError, SpeechCommands
from nanomamba_hw.errors import NanoMambaError

SR = 16000


def pcm(n, seed):
    return np.random.default_rng(seed).integers(-8000, 8000, n).astype(np.int16)


# (relative path, samples): short and long files test padding and cutting.
FILES = {
    "yes/aaaa_nohash_0.wav": 16000, "yes/bbbb_nohash_0.wav": 9000, "yes/cccc_nohash_0.wav": 16000,
    "no/aaaa_nohash_0.wav": 20000, "no/dddd_nohash_0.wav": 16000,
    "go/eeee_nohash_0.wav": 16000,
    "bed/aaaa_nohash_0.wav": 16000, "bed/ffff_nohash_0.wav": 12000,
    "marvin/gggg_nohash_0.wav": 16000,
}
VAL = ["yes/bbbb_nohash_0.wav", "bed/ffff_nohash_0.wav"]
TEST = ["no/dddd_nohash_0.wav", "marvin/gggg_nohash_0.wav"]
BACKGROUND = {"hum.wav": 3 * SR + 77, "hiss.wav": 2 * SR}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "sc"
    for i, (rel, n) in enumerate(sorted(FILES.items())):
        write_wav(root / rel, pcm(n, i))
    for i, (name, n) in enumerate(sorted(BACKGROUND.items())):
        write_wav(root / "_background_noise_" / name, pcm(n, 100 + i))
    (root / "_background_noise_" / "README.md").write_text("not audio")
    (root / "validation_list.txt").write_text("\n".join(VAL) + "\n")
    (root / "testing_list.txt").write_text("\n".join(TEST) + "\n")
    (root / "LICENSE").write_text("x")
    return root


def expected(split):
    if split == "val":
        return sorted(VAL)
    if split == "test":
        return sorted(TEST)
    return sorted(set(FILES) - set(VAL) - set(TEST))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_split_and_labels(tree, split):
    ds = SpeechCommands(tree, split, n_silence=3)
    files = expected(split)
    assert ds.paths[: ds.n_files] == files
    assert ds.paths[ds.n_files:] == ["_silence_/0", "_silence_/1", "_silence_/2"]
    assert len(ds) == len(files) + 3
    want = [CLASS_NAMES.index(p.split("/")[0]) if p.split("/")[0] in CLASS_NAMES[:10]
            else CLASS_NAMES.index("unknown") for p in files] + [CLASS_NAMES.index("silence")] * 3
    assert ds.labels.tolist() == want
    assert ds.labels.dtype == np.int64


def test_class_mapping(tree):
    ds = SpeechCommands(tree, "train", n_silence=0)
    by_path = dict(zip(ds.paths, ds.labels.tolist(), strict=True))
    assert by_path["yes/aaaa_nohash_0.wav"] == 0
    assert by_path["no/aaaa_nohash_0.wav"] == 1
    assert by_path["go/eeee_nohash_0.wav"] == 9
    assert by_path["bed/aaaa_nohash_0.wav"] == 11
    assert ds.class_counts()["unknown"] == 1 and ds.class_counts()["yes"] == 2


def test_default_silence_counts(tree):
    assert SpeechCommands(tree, "train").n_silence == 2000
    assert SpeechCommands(tree, "val").n_silence == 500
    assert SpeechCommands(tree, "validation").n_silence == 500
    assert SpeechCommands(tree, "test").n_silence == 500


def test_corpus_json_sets_silence(tree):
    manifest = {"silence_items": {"train": 7, "val": 2, "test": 1}}
    (tree / "corpus.json").write_text(json.dumps(manifest))
    assert SpeechCommands(tree, "train").n_silence == 7
    assert SpeechCommands(tree, "test").n_silence == 1
    assert SpeechCommands(tree, "test", n_silence=4).n_silence == 4


def test_pad_and_cut(tree):
    ds = SpeechCommands(tree, "train", n_silence=0)
    i = ds.paths.index("no/aaaa_nohash_0.wav")          # 20000 samples: keep the first 16000
    x, label = ds[i]
    raw, _ = sf.read(tree / "no/aaaa_nohash_0.wav", dtype="int16")
    assert x.dtype == np.float32 and x.shape == (SR,) and label == 1
    np.testing.assert_array_equal(x, raw[:SR] / np.float32(32768))
    j = ds.paths.index("bed/aaaa_nohash_0.wav")
    assert ds[j][0].shape == (SR,)
    val = SpeechCommands(tree, "val", n_silence=0)
    k = val.paths.index("yes/bbbb_nohash_0.wav")        # 9000 samples: zeros at the end
    y, _ = val[k]
    raw, _ = sf.read(tree / "yes/bbbb_nohash_0.wav", dtype="int16")
    np.testing.assert_array_equal(y[:9000], raw / np.float32(32768))
    assert np.all(y[9000:] == 0)


def test_silence_items(tree):
    ds = SpeechCommands(tree, "train", n_silence=6, seed=1)
    bg = {name: sf.read(tree / "_background_noise_" / name, dtype="float32")[0]
          for name in BACKGROUND}
    assert ds.background == ["_background_noise_/hiss.wav", "_background_noise_/hum.wav"]
    for j in range(6):
        x, label = ds[ds.n_files + j]
        assert label == 10 and x.shape == (SR,) and x.dtype == np.float32
        src = bg[ds.background[j % 2].split("/")[1]]      # cycles through the files
        # The item is 0.1 × a one-second crop of its file: find where.
        first = np.flatnonzero(np.isclose(src[: len(src) - SR + 1] * 0.1, x[0], atol=1e-7))
        starts = [s for s in first if np.allclose(src[s:s + SR] * 0.1, x, atol=1e-7)]
        assert starts, f"silence item {j} is not a crop of {ds.background[j % 2]}"
    # Same seed → same crops (reproducible evaluation); another seed redraws them.
    again = SpeechCommands(tree, "train", n_silence=6, seed=1)
    other = SpeechCommands(tree, "train", n_silence=6, seed=2)
    np.testing.assert_array_equal(ds.silence_array(), again.silence_array())
    assert not np.array_equal(ds.silence_array(), other.silence_array())
    np.testing.assert_array_equal(ds.silence_array(seed=2), other.silence_array())
    # Splits draw different crops from the same files.
    val = SpeechCommands(tree, "val", n_silence=6, seed=1)
    assert not np.array_equal(ds.silence_array(), val.silence_array())


def test_load_all_matches_items(tree):
    ds = SpeechCommands(tree, "train", n_silence=4)
    x, y = ds.load_all(progress=False)
    assert x.shape == (len(ds), SR) and x.dtype == np.float32
    np.testing.assert_array_equal(y, ds.labels)
    for i in range(len(ds)):
        np.testing.assert_array_equal(x[i], ds[i][0])
    np.testing.assert_array_equal(ds[-1][0], x[-1])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        SpeechCommands(tmp_path / "nope", "train")


def test_not_a_directory(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        SpeechCommands(f, "train")


def test_missing_lists(tree):
    (tree / "validation_list.txt").unlink()
    with pytest.raises(DatasetError, match="no validation_list.txt") as e:
        SpeechCommands(tree, "train")
    assert "testing_list" not in str(e.value)
    assert isinstance(e.value, NanoMambaError)


def test_no_word_folders(tmp_path):
    (tmp_path / "validation_list.txt").write_text("")
    (tmp_path / "_background_noise_").mkdir()
    with pytest.raises(DatasetError, match="no testing_list.txt.*no word folders"):
        SpeechCommands(tmp_path, "train")


def test_no_background_noise(tree):
    for f in (tree / "_background_noise_").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="_background_noise_"):
        SpeechCommands(tree, "train")
    assert SpeechCommands(tree, "train", n_silence=0).n_silence == 0


def test_wrong_sample_rate(tree):
    sf.write(tree / "yes" / "zzzz_nohash_0.wav", pcm(8000, 9), 8000, subtype="PCM_16")
    ds = SpeechCommands(tree, "train", n_silence=0)
    i = ds.paths.index("yes/zzzz_nohash_0.wav")
    with pytest.raises(DatasetError, match=r"zzzz_nohash_0\.wav.*8000 Hz"):
        ds[i]
    with pytest.raises(DatasetError, match="zzzz_nohash_0.wav"):
        ds.load_all(progress=False)


def test_bad_split(tree):
    with pytest.raises(ValueError, match="split"):
        SpeechCommands(tree, "dev")
