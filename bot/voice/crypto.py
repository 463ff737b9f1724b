"""Transport encryption and decryption of Discord voice packets (the layer under DAVE), for the negotiated mode.

`aead_xchacha20_poly1305_rtpsize` is the only mode Cap negotiates (see `CapVoiceClient.supported_modes`);
Discord retired the xsalsa20 modes in November 2024. Its packet layout:

    | RTP header + CSRCs + ext. preamble (clear, AAD) | ciphertext + 16-byte tag | 4-byte nonce counter |

The 24-byte nonce is the 4 trailing bytes followed by 20 zero bytes. The plaintext is
`extension body | Opus (or DAVE) frame | RTP padding`: the padding is part of the encrypted payload
(SRTP, RFC 3711 §3.1), so its count byte is the last byte of the *plaintext*, not of the datagram.
Cap sends the same layout with a bare 12-byte header (no extension, no padding), as discord.py does.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Final

from nacl import _sodium
from nacl.bindings import sodium_init

from bot.voice.rtp import RtpHeader, strip_padding

XCHACHA20_RTPSIZE: Final = "aead_xchacha20_poly1305_rtpsize"
SUPPORTED_MODES: Final = (XCHACHA20_RTPSIZE,)
NONCE_COUNTER_BYTES: Final = 4
AEAD_TAG_BYTES: Final = 16
KEY_BYTES: Final = 32
NONCE_COUNTER_LIMIT: Final = 2**32 - 1  # the counter wraps to 0 after this value (discord.py's checked_add)
_NONCE_PAD: Final = bytes(24 - NONCE_COUNTER_BYTES)


# PyNaCl 1.5's public `crypto_aead_xchacha20poly1305_ietf_{en,de}crypt` check six arguments per call with
# `ensure(cond, "...".format(...))`, formatting three error messages every time: 3.9 µs a packet here, against
# 1.7 µs calling libsodium through PyNaCl's own cffi binding (`nacl._sodium`) with arguments already checked
# once per session. tests/bot/voice/test_crypto.py compares the bytes with PyNaCl's and fails once its
# wrapper stops formatting per call (then this earns nothing: go back to the public function).
_ffi, _lib = _sodium.ffi, _sodium.lib
sodium_init()  # libsodium must be initialised before any other call (PyNaCl does it once, idempotently)


def _aead_seal(plaintext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
    """libsodium's XChaCha20-Poly1305 (IETF) encryption: ciphertext + 16-byte tag."""
    size = len(plaintext) + AEAD_TAG_BYTES  # always: libsodium's length out-parameter is optional (NULL)
    sealed = _ffi.new("unsigned char[]", size)
    _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        sealed, _ffi.NULL, plaintext, len(plaintext), aad, len(aad), _ffi.NULL, nonce, key
    )
    return _ffi.buffer(sealed, size)[:]


def _aead_open(ciphertext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """libsodium's XChaCha20-Poly1305 (IETF) decryption; None when the tag does not verify."""
    size = len(ciphertext) - AEAD_TAG_BYTES
    if size < 0:
        return None
    message = _ffi.new("unsigned char[]", size or 1)
    verified = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(  # the message is always `size` bytes
        message, _ffi.NULL, _ffi.NULL, ciphertext, len(ciphertext), aad, len(aad), nonce, key
    )
    return _ffi.buffer(message, size)[:] if verified == 0 else None


class UnsupportedModeError(Exception):
    """The voice server chose a transport mode this receiver cannot decrypt."""


class DecryptFailure(Enum):
    """Why a packet's payload could not be recovered; each has a counter in the receiver's stats."""

    TOO_SHORT = "decrypt_too_short"
    AUTH_FAILED = "decrypt_failed"
    BAD_EXTENSION = "bad_extension"
    BAD_PADDING = "bad_padding"


def _session_key(mode: str, secret_key: Sequence[int] | bytes, purpose: str) -> bytes:
    """The session's key as bytes, once per session; raises for a mode or key Cap cannot use."""
    if mode not in SUPPORTED_MODES:
        raise UnsupportedModeError(
            f"voice transport mode {mode!r} is not supported for {purpose}"
            f" (supported: {', '.join(SUPPORTED_MODES)})"
        )
    key = bytes(secret_key)
    if len(key) != KEY_BYTES:
        raise ValueError(f"the voice secret key must be {KEY_BYTES} bytes, not {len(key)}")
    return key


class TransportEncryptor:
    """Seals Cap's outgoing packets of one voice session (one mode, one secret key).

    discord.py 2.7.1 builds a `nacl.secret.Aead` from the key list for every packet (list -> bytes ->
    validation), plus a nonce bytearray and an EncryptedMessage; this holds the key as bytes once and calls
    libsodium directly (`_aead_seal`). The output is byte for byte discord.py's
    (tests/bot/voice/test_send_path.py pins it).
    """

    def __init__(self, mode: str, secret_key: Sequence[int] | bytes) -> None:
        self.mode = mode
        self._key = _session_key(mode, secret_key, "sending")

    def seal(self, header: bytes, payload: bytes | bytearray | memoryview, nonce: int) -> bytes:
        """`header | ciphertext + tag | 4-byte nonce`: the header is authenticated (AAD), not encrypted."""
        counter = nonce.to_bytes(NONCE_COUNTER_BYTES, "big")
        sealed = _aead_seal(bytes(payload), header, counter + _NONCE_PAD, self._key)
        return header + sealed + counter


class TransportDecryptor:
    """Decrypts packets of one voice session (one mode, one secret key)."""

    def __init__(self, mode: str, secret_key: Sequence[int] | bytes) -> None:
        self.mode = mode
        self._key = _session_key(mode, secret_key, "receiving")

    def decrypt(self, packet: bytes, header: RtpHeader) -> bytes | DecryptFailure:
        """The media frame carried by `packet`: decrypted, extension body and RTP padding removed."""
        clear = header.header_length
        if len(packet) < clear + AEAD_TAG_BYTES + NONCE_COUNTER_BYTES:
            return DecryptFailure.TOO_SHORT
        nonce = packet[-NONCE_COUNTER_BYTES:] + _NONCE_PAD
        plaintext = _aead_open(packet[clear:-NONCE_COUNTER_BYTES], packet[:clear], nonce, self._key)
        if plaintext is None:
            return DecryptFailure.AUTH_FAILED
        if header.padding:
            stripped = strip_padding(plaintext)
            if stripped is None:
                return DecryptFailure.BAD_PADDING
            plaintext = stripped
        if header.extension_length:
            if len(plaintext) < header.extension_length:
                return DecryptFailure.BAD_EXTENSION
            plaintext = plaintext[header.extension_length :]
        return plaintext
