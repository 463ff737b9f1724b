"""Cap's packet builder against discord.py's own: same state in, same bytes out, and Cap's receiver opens them."""

from __future__ import annotations

import asyncio
import struct

import discord
import nacl.secret
import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from bot.voice.client import CapVoiceClient
from bot.voice.crypto import NONCE_COUNTER_LIMIT, TransportDecryptor, TransportEncryptor
from bot.voice.rtp import parse_header
from tests.bot.voice.test_client import fake_channel, fake_discord_client
from tests.bot.voice.voice_packets import MODE, SECRET_KEY

OPUS = bytes(range(1, 90))
CAP_SSRC = 0x4004
# (sequence, timestamp, _incr_nonce): the first packet, mid-call, and the ends of each counter's range.
STATES = [
    (0, 0, 0),
    (1234, 960 * 77, 4321),
    (65535, 2**32 - 960, NONCE_COUNTER_LIMIT - 1),
    (65535, 2**32 - 1, NONCE_COUNTER_LIMIT),
]


class FakeDave:
    """A ready DAVE session that marks what it encrypted (deterministic, so both builders can be compared)."""

    ready = True

    def encrypt_opus(self, data: bytes) -> bytes:
        return bytes(reversed(data)) + b"\xfa\xfa"


async def voice_client(key: list[int] = SECRET_KEY, mode: str = MODE) -> CapVoiceClient:
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    state = vc._connection
    state._socket_reader.stop()
    state.mode, state.secret_key, state.ssrc = mode, list(key), CAP_SSRC
    return vc


def discord_pys_packet(vc: CapVoiceClient, data: bytes, nonce: int) -> tuple[bytes, int]:
    """discord.py's own `_get_voice_packet` on the same client state: the packet and the nonce after it."""
    vc._incr_nonce = nonce
    packet = bytes(discord.VoiceClient._get_voice_packet(vc, data))  # discord.py returns a bytearray
    return packet, vc._incr_nonce


def caps_packet(vc: CapVoiceClient, data: bytes, nonce: int) -> tuple[bytes, int]:
    vc._incr_nonce = nonce
    packet = vc._get_voice_packet(data)
    return packet, vc._incr_nonce


@pytest.mark.parametrize("dave", ["none", "ready", "not-negotiated"])
@pytest.mark.parametrize(("sequence", "timestamp", "nonce"), STATES)
async def test_caps_packet_is_discord_pys_byte_for_byte(dave: str, sequence: int, timestamp: int, nonce: int) -> None:
    vc = await voice_client()
    if dave != "none":  # protocol version 0: discord.py sends plain Opus although a session object exists
        vc._connection.dave_protocol_version = 1 if dave == "ready" else 0
        vc._connection.dave_session = FakeDave()
    vc.sequence, vc.timestamp = sequence, timestamp

    ours, nonce_after = caps_packet(vc, OPUS, nonce)
    theirs, their_nonce_after = discord_pys_packet(vc, OPUS, nonce)

    assert ours == theirs
    assert nonce_after == their_nonce_after == (0 if nonce == NONCE_COUNTER_LIMIT else nonce + 1)
    header = parse_header(ours)
    assert (header.sequence, header.timestamp, header.ssrc) == (sequence, timestamp, CAP_SSRC)
    expected = FakeDave().encrypt_opus(OPUS) if dave == "ready" else OPUS
    assert TransportDecryptor(MODE, SECRET_KEY).decrypt(ours, header) == expected


async def test_consecutive_packets_match_discord_pys_through_the_nonce_wrap() -> None:
    vc = await voice_client()
    ours_vc, theirs_vc = vc, await voice_client()
    for vc_ in (ours_vc, theirs_vc):
        vc_._incr_nonce = NONCE_COUNTER_LIMIT - 2
    for i in range(5):
        frame = bytes([i]) * 40
        ours = ours_vc._get_voice_packet(frame)
        theirs = bytes(discord.VoiceClient._get_voice_packet(theirs_vc, frame))
        assert ours == theirs, i
    assert ours_vc._incr_nonce == theirs_vc._incr_nonce == 2


async def test_any_bytes_like_frame_is_sent_as_discord_py_sends_it() -> None:
    vc = await voice_client()
    for frame in (bytearray(OPUS), memoryview(OPUS)):
        ours, _ = caps_packet(vc, frame, 3)
        theirs, _ = discord_pys_packet(vc, frame, 3)
        assert ours == theirs


async def test_a_new_session_key_is_used_from_the_next_packet() -> None:
    """After a reconnect's SESSION_DESCRIPTION discord.py holds a new key list: the cached encryptor follows."""
    vc = await voice_client()
    vc._get_voice_packet(OPUS)
    new_key = [(i * 11 + 5) % 256 for i in range(32)]
    vc._connection.secret_key = new_key

    packet = vc._get_voice_packet(OPUS)

    assert TransportDecryptor(MODE, new_key).decrypt(packet, parse_header(packet)) == OPUS


async def test_the_key_is_prepared_once_per_session_not_per_packet(monkeypatch: pytest.MonkeyPatch) -> None:
    """discord.py 2.7.1 builds a nacl Aead (key list -> bytes -> checks) for every packet; Cap does not."""
    built: list[bytes] = []
    real_aead = nacl.secret.Aead

    def counting_aead(key: bytes) -> nacl.secret.Aead:
        built.append(key)
        return real_aead(key)

    monkeypatch.setattr(nacl.secret, "Aead", counting_aead)
    vc = await voice_client()
    for _ in range(3):
        vc._get_voice_packet(OPUS)
    assert built == []
    encryptor = vc._encryptor
    vc._get_voice_packet(OPUS)
    assert vc._encryptor is encryptor


async def test_another_mode_falls_back_to_discord_pys_code() -> None:
    vc = await voice_client(mode="xsalsa20_poly1305_lite")
    ours, _ = caps_packet(vc, OPUS, 7)
    theirs, _ = discord_pys_packet(vc, OPUS, 7)
    assert ours == theirs
    assert vc._encryptor is None


async def test_a_short_key_still_fails_as_discord_py_fails() -> None:
    vc = await voice_client(key=[1, 2, 3])
    with pytest.raises(Exception) as ours:
        vc._get_voice_packet(OPUS)
    with pytest.raises(Exception) as theirs:
        discord.VoiceClient._get_voice_packet(vc, OPUS)
    assert type(ours.value) is type(theirs.value)


async def test_pin_discord_pys_packet_layout_for_cap_s_mode() -> None:
    """Cap re-implements discord.py 2.7.1's builder for aead_xchacha20_poly1305_rtpsize. If an upgrade changes
    the header, the layout `header | ciphertext + tag | 4-byte big-endian nonce`, the nonce scheme (counter +
    20 zero bytes, used then advanced, wrapping after 2**32 - 1) or the method names, this fails: re-check
    `CapVoiceClient._build_voice_packet` against the new code."""
    vc = await voice_client()
    assert discord.VoiceClient.checked_add is not None
    assert hasattr(discord.VoiceClient, "_encrypt_" + MODE)
    key = bytes(SECRET_KEY)
    for nonce in (0, 1, 0x01020304, NONCE_COUNTER_LIMIT):
        vc.sequence, vc.timestamp = 513, 0x0A0B0C0D
        packet, nonce_after = discord_pys_packet(vc, OPUS, nonce)

        header, counter = packet[:12], packet[-4:]
        assert header == struct.pack(">BBHII", 0x80, 0x78, 513, 0x0A0B0C0D, CAP_SSRC)
        assert counter == nonce.to_bytes(4, "big")
        assert crypto_aead_xchacha20poly1305_ietf_decrypt(packet[12:-4], header, counter + bytes(20), key) == OPUS
        assert nonce_after == (nonce + 1) % 2**32
        assert packet == TransportEncryptor(MODE, SECRET_KEY).seal(header, OPUS, nonce)
