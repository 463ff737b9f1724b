"""RTP parsing for Discord voice (RFC 3550), pure and total: garbage gives a reject reason, never raises.

Discord relays each speaker's Opus as RTP over UDP. With the `*_rtpsize` transport modes only the fixed
header, the CSRC list and the 4-byte header-extension preamble (profile + length) travel in the clear;
the extension body, the Opus payload and any RTP padding are inside the ciphertext. So this module
reports where the clear header ends and how long the (still encrypted) extension body is; stripping the
body and the padding happens after decryption (`bot.voice.crypto`).
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import Final, NamedTuple

RTP_VERSION: Final = 2
FIXED_HEADER_BYTES: Final = 12
EXTENSION_PREAMBLE_BYTES: Final = 4
# RFC 8285 one-byte header extensions, which Discord uses.
ONE_BYTE_EXTENSION_PROFILE: Final = 0xBEDE
# Discord's payload type for Opus audio (0x78).
OPUS_PAYLOAD_TYPE: Final = 120
# RFC 5761: with RTP and RTCP on one port, a second byte of 192-223 (PT 64-95 with the marker bit) is RTCP;
# Discord sends sender/receiver reports (200/201) on the voice socket.
_RTCP_SECOND_BYTE: Final = range(192, 224)

_HEADER: Final = struct.Struct(">BBHII")
_EXTENSION: Final = struct.Struct(">HH")


class Reject(Enum):
    """Why a datagram is not an audio packet we can use; each has a counter in the receiver's stats."""

    TOO_SHORT = "too_short"
    NOT_RTP = "not_rtp"
    RTCP = "rtcp"
    BAD_HEADER = "bad_header"


class RtpHeader(NamedTuple):
    """The clear part of one RTP packet (a NamedTuple: one is built per packet received, and a frozen dataclass
    of ten fields costs ~0.8 µs more to build, issue 14)."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    padding: bool
    csrc_count: int
    # Length of the clear header: fixed part + CSRCs + the extension preamble when present.
    header_length: int
    # Profile and length (bytes) of the header-extension body, which rtpsize modes encrypt; 0 when absent.
    extension_profile: int
    extension_length: int


def is_rtcp(packet: bytes) -> bool:
    """True for an RTCP packet multiplexed on the RTP port (RFC 5761 payload-type ranges)."""
    return len(packet) >= 2 and packet[0] >> 6 == RTP_VERSION and packet[1] in _RTCP_SECOND_BYTE


def pack_header(sequence: int, timestamp: int, ssrc: int) -> bytes:
    """The 12-byte header of a packet Cap sends, as discord.py writes it: version 2, nothing optional, PT 0x78."""
    return _HEADER.pack(RTP_VERSION << 6, OPUS_PAYLOAD_TYPE, sequence, timestamp, ssrc)


def parse_header(packet: bytes) -> RtpHeader | Reject:
    """Parse the clear RTP header of `packet`; a `Reject` says why it is not usable RTP."""
    if len(packet) < FIXED_HEADER_BYTES:
        return Reject.TOO_SHORT
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(packet)
    if first >> 6 != RTP_VERSION:
        return Reject.NOT_RTP  # e.g. the 74-byte IP discovery reply
    if second in _RTCP_SECOND_BYTE:
        return Reject.RTCP
    csrc_count = first & 0x0F
    length = FIXED_HEADER_BYTES + 4 * csrc_count
    profile = 0
    extension_length = 0
    if first & 0x10:
        if len(packet) < length + EXTENSION_PREAMBLE_BYTES:
            return Reject.BAD_HEADER
        profile, words = _EXTENSION.unpack_from(packet, length)
        length += EXTENSION_PREAMBLE_BYTES
        extension_length = 4 * words
    if len(packet) < length:
        return Reject.BAD_HEADER
    return RtpHeader(
        marker=bool(second & 0x80),
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        padding=bool(first & 0x20),
        csrc_count=csrc_count,
        header_length=length,
        extension_profile=profile,
        extension_length=extension_length,
    )


def strip_padding(payload: bytes) -> bytes | None:
    """Drop RTP padding: the last byte counts the padding bytes, itself included (RFC 3550 §5.1).

    None when the count is zero or longer than the payload (a malformed packet).
    """
    if not payload:
        return None
    count = payload[-1]
    if count == 0 or count > len(payload):
        return None
    return payload[:-count]


def sequence_delta(newer: int, older: int) -> int:
    """Signed distance from `older` to `newer` in 16-bit sequence space (wraparound-aware, -32768..32767)."""
    return (newer - older + 0x8000) % 0x10000 - 0x8000
