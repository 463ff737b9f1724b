"""RTP parsing: header fields, CSRCs, the 0xBEDE extension preamble, RTCP, padding, garbage."""

from __future__ import annotations

import random
import struct

import pytest

from bot.voice.rtp import (
    OPUS_PAYLOAD_TYPE,
    Reject,
    RtpHeader,
    is_rtcp,
    parse_header,
    sequence_delta,
    strip_padding,
)


def rtp(*, first: int = 0x80, second: int = 0x78, seq: int = 7, ts: int = 960, ssrc: int = 42) -> bytes:
    return struct.pack(">BBHII", first, second, seq, ts, ssrc)


def test_fixed_header_fields() -> None:
    header = parse_header(rtp(second=0x80 | 0x78, seq=65535, ts=0xFFFFFFFF, ssrc=0xDEADBEEF) + b"payload")
    assert isinstance(header, RtpHeader)
    assert header.marker is True
    assert header.payload_type == OPUS_PAYLOAD_TYPE
    assert (header.sequence, header.timestamp, header.ssrc) == (65535, 0xFFFFFFFF, 0xDEADBEEF)
    assert header.header_length == 12
    assert header.padding is False
    assert header.extension_length == 0


def test_csrcs_and_extension_preamble_extend_the_clear_header() -> None:
    csrcs = struct.pack(">II", 1, 2)
    preamble = struct.pack(">HH", 0xBEDE, 3)  # three 32-bit words of (encrypted) body follow
    header = parse_header(rtp(first=0x80 | 0x10 | 0x20 | 2) + csrcs + preamble + bytes(40))
    assert isinstance(header, RtpHeader)
    assert header.csrc_count == 2
    assert header.padding is True
    assert header.header_length == 12 + 8 + 4
    assert header.extension_profile == 0xBEDE
    assert header.extension_length == 12


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", Reject.TOO_SHORT),
        (rtp()[:11], Reject.TOO_SHORT),
        (rtp(first=0x00), Reject.NOT_RTP),  # IP discovery replies start with 0x00 0x02
        (rtp(first=0x40), Reject.NOT_RTP),
        (rtp(second=200), Reject.RTCP),  # sender report
        (rtp(second=201), Reject.RTCP),  # receiver report: PT 73 with the marker bit
        (rtp(first=0x80 | 15), Reject.BAD_HEADER),  # 15 CSRCs announced, none present
        (rtp(first=0x90), Reject.BAD_HEADER),  # extension bit without a preamble
    ],
)
def test_rejects(packet: bytes, reason: Reject) -> None:
    assert parse_header(packet) is reason


def test_is_rtcp() -> None:
    assert is_rtcp(rtp(second=200))
    assert is_rtcp(rtp(second=204))
    assert not is_rtcp(rtp(second=0x78))
    assert not is_rtcp(b"\x80")


def test_garbage_never_raises() -> None:
    rng = random.Random(4)
    for _ in range(5000):
        packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        result = parse_header(packet)
        assert isinstance(result, RtpHeader | Reject)
        if isinstance(result, RtpHeader):
            assert result.header_length <= len(packet)


def test_strip_padding_counts_itself() -> None:
    assert strip_padding(b"opus" + b"\0\0\x03") == b"opus"
    assert strip_padding(b"opus\x01") == b"opus"
    assert strip_padding(b"\x05" * 5) == b""
    assert strip_padding(b"opus\x00") is None  # a zero count is malformed
    assert strip_padding(b"ab\x09") is None  # longer than the payload
    assert strip_padding(b"") is None


@pytest.mark.parametrize(
    ("newer", "older", "delta"),
    [(5, 3, 2), (3, 5, -2), (0, 65535, 1), (65535, 0, -1), (2, 65530, 8), (32767, 0, 32767)],
)
def test_sequence_delta_wraps(newer: int, older: int, delta: int) -> None:
    assert sequence_delta(newer, older) == delta
