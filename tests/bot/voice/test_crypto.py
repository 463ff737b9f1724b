"""Transport decryption against packets encrypted by discord.py's own sender code."""

from __future__ import annotations

import inspect

import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.exceptions import CryptoError

from bot.voice.crypto import DecryptFailure, TransportDecryptor, UnsupportedModeError, _aead_open, _aead_seal
from bot.voice.rtp import RtpHeader, parse_header
from tests.bot.voice.voice_packets import MODE, SECRET_KEY, PacketSender

OPUS = bytes(range(1, 120))


def open_packet(packet: bytes, key: list[int] = SECRET_KEY) -> bytes | DecryptFailure:
    header = parse_header(packet)
    assert isinstance(header, RtpHeader)
    return TransportDecryptor(MODE, key).decrypt(packet, header)


def test_plain_packet_as_discord_py_sends_it() -> None:
    assert open_packet(PacketSender(1).packet(OPUS, extension=None)) == OPUS


def test_extension_body_is_encrypted_and_skipped() -> None:
    packet = PacketSender(1).packet(OPUS)
    assert open_packet(packet) == OPUS


@pytest.mark.parametrize("padding", [1, 2, 3, 16, 255])
def test_padding_is_stripped_from_the_plaintext_end(padding: int) -> None:
    # The count byte is the plaintext's last byte; the datagram ends with the 4-byte nonce instead.
    for extension in (None, bytes([0x10, 0x5A, 0, 0]), bytes(12)):
        packet = PacketSender(1).packet(OPUS, extension=extension, padding=padding)
        assert open_packet(packet) == OPUS


def test_each_packet_uses_its_own_nonce_counter() -> None:
    sender = PacketSender(1)
    packets = [sender.packet(bytes([i]) * 30) for i in range(5)]
    assert [p[-4:] for p in packets] == [i.to_bytes(4, "big") for i in range(5)]
    assert [open_packet(p) for p in packets] == [bytes([i]) * 30 for i in range(5)]


def test_tampering_and_wrong_key_fail_authentication() -> None:
    packet = bytearray(PacketSender(1).packet(OPUS))
    assert open_packet(bytes(packet), key=[0] * 32) is DecryptFailure.AUTH_FAILED
    packet[3] ^= 1  # the header is authenticated (AAD)
    assert open_packet(bytes(packet)) is DecryptFailure.AUTH_FAILED
    packet[3] ^= 1
    packet[30] ^= 1
    assert open_packet(bytes(packet)) is DecryptFailure.AUTH_FAILED


def test_malformed_padding_and_extension_are_reported() -> None:
    def sealed(first_byte: int, body: bytes, preamble: bytes = b"") -> bytes:
        header = bytes([first_byte, 0x78]) + bytes(10) + preamble
        return PacketSender(1)._sender.encrypt(header, body)

    padded = 0x80 | 0x20
    assert open_packet(sealed(padded, OPUS[:10] + b"\x00")) is DecryptFailure.BAD_PADDING  # zero count
    assert open_packet(sealed(padded, b"ab\x09")) is DecryptFailure.BAD_PADDING  # longer than the payload
    long_body = b"\xbe\xde\x00\x08"  # 32 bytes of extension body announced, 5 bytes of plaintext
    assert open_packet(sealed(0x90, b"short", long_body)) is DecryptFailure.BAD_EXTENSION


def test_too_short_for_tag_and_nonce() -> None:
    packet = PacketSender(1).packet(OPUS, extension=None)
    header = parse_header(packet)
    assert isinstance(header, RtpHeader)
    assert TransportDecryptor(MODE, SECRET_KEY).decrypt(packet[: 12 + 19], header) is DecryptFailure.TOO_SHORT


def test_unsupported_mode_and_bad_key_raise_once_at_construction() -> None:
    with pytest.raises(UnsupportedModeError, match="xsalsa20_poly1305_lite"):
        TransportDecryptor("xsalsa20_poly1305_lite", SECRET_KEY)
    with pytest.raises(ValueError, match="32 bytes"):
        TransportDecryptor(MODE, [1, 2, 3])


@pytest.mark.parametrize("size", [0, 1, 119, 1400])
def test_direct_libsodium_calls_give_pynacls_bytes_and_refusals(size: int) -> None:
    key, nonce, aad = bytes(SECRET_KEY), bytes(range(24)), bytes(range(12))
    plaintext = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    assert _aead_seal(plaintext, aad, nonce, key) == sealed
    assert _aead_open(sealed, aad, nonce, key) == plaintext
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(CryptoError):
        crypto_aead_xchacha20poly1305_ietf_decrypt(tampered, aad, nonce, key)
    assert _aead_open(tampered, aad, nonce, key) is None
    assert _aead_open(sealed[:15], aad, nonce, key) is None  # shorter than a tag


def test_pynacls_public_aead_wrapper_still_formats_its_checks_on_every_call() -> None:
    """Why crypto.py calls libsodium through `nacl._sodium`: fails once PyNaCl stops formatting its argument
    checks' messages per call (measure again; the public function may then cost no more)."""
    for wrapper in (crypto_aead_xchacha20poly1305_ietf_encrypt, crypto_aead_xchacha20poly1305_ietf_decrypt):
        assert inspect.getsource(wrapper).count(".format(") >= 3
