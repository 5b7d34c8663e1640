"""The host tool against a fake serial port: a Python object with pyserial's read/write/timeout
behaviour, answering like the board with the dummy accelerator's computation."""

import json
import time

import numpy as np
import pytest

from nanomamba_hw import host
from nanomamba_hw import protocol as P
from nanomamba_hw.audio import load_clip, write_wav
from nanomamba_hw.config import CLASS_NAMES
from nanomamba_hw.hw.accel_if import dummy_result


class FakeBoard:
    """Serial-port stand-in: bytes written are parsed like the board does and answered with
    :func:`dummy_result` (cycles = clip length + 40). ``silent`` never answers, ``corrupt``
    answers CLIPs with a bad checksum, ``chunk`` limits bytes per read (split reads)."""

    def __init__(self, *, clip_len=16000, silent=False, corrupt=False, garble=False, chunk=7):
        self.timeout = 0.01
        self.clip_len = clip_len
        self.silent = silent
        self.corrupt = corrupt
        self.garble = garble
        self.chunk = chunk
        self.parser = P.PacketParser(clip_len=clip_len, commands=P.HOST_TO_BOARD)
        self.out = bytearray(b"\x00junk")       # line noise from power-up; flushed by the host
        self.regs = {i: 0 for i in range(16)}
        self.clips = []
        self.closed = False

    def write(self, data):
        for pkt in self.parser.feed(data):
            self.out += self.answer(pkt)
        return len(data)

    def answer(self, pkt):
        if self.silent:
            return b""
        if self.garble:              # what a board at another baud rate looks like
            return b"\x93NM\x82\x01\x00\x00\xf0"
        match pkt:
            case P.BadPacket():
                return P.encode_error(P.ErrorCode.CHECKSUM)
            case P.Clip(pcm):
                self.clips.append(pcm)
                if self.corrupt:
                    return P.encode_error(P.ErrorCode.CHECKSUM)
                r = dummy_result(pcm)
                return b"NM" + P.encode_ack(1) + P.encode_result(r.index, r.logits, len(pcm) + 40)
            case P.WriteReg(addr, value):
                self.regs[addr] = value
                return P.encode_ack(addr)
            case P.ReadReg(addr):
                return P.encode_reg(addr, self.regs.get(addr, 0))
        raise AssertionError(pkt)

    def read(self, n=1):
        if not self.out:
            time.sleep(self.timeout)        # what pyserial does when nothing arrives
            return b""
        n = min(n, self.chunk)
        data, self.out[:n] = bytes(self.out[:n]), b""
        return data

    def reset_input_buffer(self):
        self.out.clear()

    def close(self):
        self.closed = True


@pytest.fixture
def wavs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"clip{i}.wav"
        write_wav(p, rng.integers(-3000, 3000, 16000).astype(np.int16))
        paths.append(p)
    return paths


def run(argv, board, capsys):
    code = host.main(argv, serial_factory=lambda port, baud: board)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output(wavs, capsys):
    board = FakeBoard()
    code, out, err = run(["--port", "fake0", "--json", *map(str, wavs)], board, capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    for path, obj in zip(wavs, lines):
        want = dummy_result(load_clip(path).pcm)
        assert obj == {"file": str(path), "index": want.index, "label": CLASS_NAMES[want.index],
                       "logits": want.logits, "logits_int": want.logits, "cycles": 16040}
    assert board.closed
    assert [list(c) for c in board.clips] == [load_clip(p).pcm.tolist() for p in wavs]


def test_text_output(wavs, capsys):
    code, out, _ = run(["--port", "fake0", str(wavs[0])], FakeBoard(), capsys)
    want = dummy_result(load_clip(wavs[0]).pcm)
    assert code == 0
    assert out.startswith(f"{wavs[0]}\t{CLASS_NAMES[want.index]}\t(class {want.index}, "
                          f"logit {want.logits[want.index]}, 16040 cycles)")


def test_timeout_is_a_clear_error(wavs, capsys):
    t0 = time.monotonic()
    code, out, err = run(["--port", "/dev/ttyFAKE", "--baud", "115200", "--timeout", "0.2",
                          *map(str, wavs)], FakeBoard(silent=True), capsys)
    assert code == 1
    assert out == ""
    assert ("no answer from the board on /dev/ttyFAKE within 0.2 s — is it programmed and at "
            "115200 baud?") in err
    assert err.count("no answer") == 1              # the remaining files are not tried
    assert time.monotonic() - t0 < 2


def test_garbled_answer(wavs, capsys):
    code, _, err = run(["--port", "fake0", "--timeout", "0.1", str(wavs[0])],
                         FakeBoard(garble=True), capsys)
    assert code == 1
    assert "only garbled answers from the board on fake0 within 0.1 s (checksum)" in err


def test_missing_port(wavs, capsys):
    code, _, err = run_real(["--port", "/dev/does-not-exist-nanomamba", str(wavs[0])], capsys)
    assert code == 2
    assert "cannot open serial port /dev/does-not-exist-nanomamba" in err
    assert "Traceback" not in err


def run_real(argv, capsys):
    code = host.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_board_error_is_reported_and_next_file_continues(wavs, capsys, monkeypatch):
    monkeypatch.setattr(host, "ERROR_PAUSE", 0)
    code, _, err = run(["--port", "fake0", *map(str, wavs[:2])], FakeBoard(corrupt=True),
                         capsys)
    assert code == 1
    assert err.count("board answered ERROR 1 (checksum mismatch)") == 2


def test_unreadable_wav_is_skipped(wavs, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    code, out, err = run(["--port", "fake0", str(bad), str(wavs[0])], FakeBoard(), capsys)
    assert code == 1
    assert "bad.wav" in err
    assert len(out.splitlines()) == 1


def test_registers(capsys):
    board = FakeBoard()
    code, out, err = run(["--port", "fake0", "--json", "--write-reg", "eps_min=0x1234",
                          "--write-reg", "5=-1", "--read-reg", "3", "--read-reg", "bgate_floor"],
                         board, capsys)
    assert code == 0, err
    assert [json.loads(x) for x in out.splitlines()] == [
        {"write_reg": 3, "value": 0x1234}, {"write_reg": 5, "value": 0xFFFFFFFF},
        {"reg": 3, "value": 0x1234}, {"reg": 5, "value": 0xFFFFFFFF}]


def test_bad_register_argument(capsys):
    with pytest.raises(SystemExit) as e:
        host.main(["--port", "x", "--read-reg", "nonsense"], serial_factory=lambda p, b: None)
    assert e.value.code == 2
    assert "unknown register 'nonsense'" in capsys.readouterr().err


def test_board_class_directly():
    board = host.Board(FakeBoard(clip_len=24), clip_len=24, timeout=1)
    pcm = list(range(-12, 12))
    res = board.classify(pcm)
    want = dummy_result(pcm)
    assert (res.index, list(res.logits)) == (want.index, want.logits)
    with pytest.raises(ValueError, match="24 samples"):
        board.classify([0] * 10)
