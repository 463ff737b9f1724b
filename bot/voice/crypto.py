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

from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.exceptions import CryptoError

from bot.voice.rtp import RtpHeader, strip_padding

XCHACHA20_RTPSIZE: Final = "aead_xchacha20_poly1305_rtpsize"
SUPPORTED_MODES: Final = (XCHACHA20_RTPSIZE,)
NONCE_COUNTER_BYTES: Final = 4
AEAD_TAG_BYTES: Final = 16
KEY_BYTES: Final = 32
NONCE_COUNTER_LIMIT: Final = 2**32 - 1  # the counter wraps to 0 after this value (discord.py's checked_add)
_NONCE_PAD: Final = bytes(24 - NONCE_COUNTER_BYTES)


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
    libsodium directly. The output is byte for byte discord.py's (tests/bot/voice/test_send_path.py pins it).
    """

    def __init__(self, mode: str, secret_key: Sequence[int] | bytes) -> None:
        self.mode = mode
        self._key = _session_key(mode, secret_key, "sending")

    def seal(self, header: bytes, payload: bytes | bytearray | memoryview, nonce: int) -> bytes:
        """`header | ciphertext + tag | 4-byte nonce`: the header is authenticated (AAD), not encrypted."""
        counter = nonce.to_bytes(NONCE_COUNTER_BYTES, "big")
        # bytes(): PyNaCl refuses a bytearray or memoryview (discord.py converts too); free for bytes.
        sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(bytes(payload), header, counter + _NONCE_PAD, self._key)
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
        try:
            plaintext = crypto_aead_xchacha20poly1305_ietf_decrypt(
                packet[clear:-NONCE_COUNTER_BYTES], packet[:clear], nonce, self._key
            )
        except CryptoError:
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
