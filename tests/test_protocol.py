"""Host↔board packet protocol: exact bytes, round trips, and the streaming parser on garbage,
split reads and corrupted packets."""

import random
import struct

import numpy as np
import pytest

from nanomamba_hw import protocol as P


def test_exact_bytes():
    ack = P.encode_ack(3)
    assert ack == b"NM\x82\x03" + struct.pack("<H", ord("N") + ord("M") + 0x82 + 3)
    assert P.encode_read_reg(5) == b"NM\x03\x05\xa3\x00"
    assert P.encode_write_reg(1, 0x12345678) == (
        b"NM\x02\x01\x78\x56\x34\x12" + struct.pack("<H", 0x4E + 0x4D + 2 + 1 + 0x78 + 0x56 +
                                                      0x34 + 0x12))
    assert P.encode_error(P.ErrorCode.CHECKSUM) == b"NM\xee\x01\x8a\x01"
    res = P.encode_result(2, [1, -1], 7)
    assert res[:5] == b"NM\x81\x02\x02"
    assert res[5:13] == b"\x01\x00\x00\x00\xff\xff\xff\xff"
    assert res[13:17] == b"\x07\x00\x00\x00"
    assert len(res) == 3 + 2 + 8 + 4 + 2


def test_checksum_wraps_at_16_bits():
    pcm = [32767] * 1000           # byte sum far above 65535
    pkt = P.encode_clip(pcm)
    assert struct.unpack("<H", pkt[-2:])[0] == sum(pkt[:-2]) % 65536
    assert sum(pkt[:-2]) > 65535


def test_clip_length_and_numpy_input():
    pcm = np.arange(-8000, 8000, dtype=np.int16)
    pkt = P.encode_clip(pcm)
    assert len(pkt) == 3 + 32000 + 2
    assert P.decode(pkt) == P.Clip(tuple(int(x) for x in pcm))


PACKETS = [
    P.Clip(tuple(range(-5, 5))),
    P.WriteReg(4, 0xFFFFFFFF),
    P.ReadReg(0),
    P.Result(11, tuple([-(1 << 31), (1 << 31) - 1] + list(range(10))), 123456),
    P.Ack(5),
    P.Reg(2, 0xDEADBEEF),
    P.Error(P.ErrorCode.FRAMING),
]


@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: type(p).__name__)
def test_round_trip(packet):
    data = P.encode(packet)
    assert P.decode(data) == packet
    assert P.PacketParser(clip_len=10).feed(data) == [packet]


def test_write_reg_accepts_signed_values():
    assert P.decode(P.encode_write_reg(1, -1)) == P.WriteReg(1, 0xFFFFFFFF)


@pytest.mark.parametrize("call, match", [
    (lambda: P.encode_clip([40000]), "int16"),
    (lambda: P.encode_write_reg(256, 0), "address"),
    (lambda: P.encode_write_reg(1, 1 << 32), "value"),
    (lambda: P.encode_result(0, [1 << 31], 0), "logit"),
    (lambda: P.encode_result(0, [0], -1), "cycle"),
])
def test_encode_range_errors(call, match):
    with pytest.raises(P.ProtocolError, match=match):
        call()


def test_decode_errors():
    good = P.encode_reg(1, 2)
    with pytest.raises(P.ProtocolError, match="checksum"):
        P.decode(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(P.ProtocolError, match="unknown command 0x55"):
        P.decode(b"NM\x55\x00\x00\x00")
    with pytest.raises(P.ProtocolError, match="payload of 4 bytes, expected 5"):
        P.decode(good[:-3] + good[-2:])
    with pytest.raises(P.ProtocolError, match="not a packet"):
        P.decode(b"XX\x82\x01\x00\x00")


def test_parser_split_reads_byte_by_byte():
    stream = b"".join(P.encode(p) for p in PACKETS)
    parser = P.PacketParser(clip_len=10)
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i:i + 1])
    assert got == PACKETS
    assert parser.skipped == 0 and parser.pending == 0


def test_parser_random_chunks_with_garbage():
    rng = random.Random(1)
    stream = bytearray()
    want = []
    for _ in range(50):
        # garbage without the sync pattern ('N' only at the very end is allowed to be held back)
        stream += bytes(rng.choice(b"abcXYZ\x00\xffM") for _ in range(rng.randint(0, 20)))
        p = rng.choice(PACKETS)
        stream += P.encode(p)
        want.append(p)
    parser = P.PacketParser(clip_len=10)
    got, i = [], 0
    while i < len(stream):
        n = rng.randint(1, 40)
        got += parser.feed(bytes(stream[i:i + n]))
        i += n
    assert got == want
    assert parser.skipped > 0


def test_parser_resyncs_after_bad_checksum_and_false_sync():
    good = P.encode_ack(7)
    bad = bytearray(P.encode_reg(1, 2))
    bad[-1] ^= 0x40
    # "NM" followed by a valid-looking command inside garbage, then a real packet
    stream = b"NM\x82" + bytes(bad) + b"zzNM" + good
    got = P.PacketParser().feed(stream)
    packets = [p for p in got if not isinstance(p, P.BadPacket)]
    bads = [p for p in got if isinstance(p, P.BadPacket)]
    assert packets == [P.Ack(7)]
    assert {b.reason for b in bads} <= {"checksum", "unknown command"}
    assert any(b.reason == "checksum" for b in bads)


def test_parser_unknown_command_and_command_filter():
    parser = P.PacketParser(commands=P.BOARD_TO_HOST)
    got = parser.feed(b"NM\x42" + P.encode_clip([0] * 4)[:10] + P.encode_error(2))
    assert got[0] == P.BadPacket("unknown command", b"NM\x42")
    # CLIP is not a board→host command: its header is rejected at once, not awaited for 32 kB
    assert got[1].reason == "unknown command"
    assert got[-1] == P.Error(2)


def test_parser_waits_for_result_length():
    pkt = P.encode_result(1, [5] * 12, 99)
    parser = P.PacketParser()
    assert parser.feed(pkt[:4]) == []           # class count not seen yet
    assert parser.feed(pkt[4:-1]) == []
    assert parser.feed(pkt[-1:]) == [P.Result(1, (5,) * 12, 99)]


def test_error_descriptions():
    assert P.Error(1).description == "checksum mismatch"
    assert P.ErrorCode.describe(99) == "unknown error code 99"
