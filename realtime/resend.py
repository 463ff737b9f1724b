"""Caller audio the server has not committed to a turn yet, kept so a new session can hear it again.

Words said into a dead socket, or while reconnecting, would otherwise be lost, and a question cut off that
way would never be answered. The latest `limit_ms` are kept (chunks in a deque: trimming costs nothing per
frame); a commit by the server clears them.
"""

from __future__ import annotations

from collections import deque

BYTES_PER_MS_24K = 48  # 24 kHz mono s16le
RESEND_LIMIT_MS = 8000
RESEND_CHUNK_BYTES = 1000 * BYTES_PER_MS_24K  # 1 s per input_audio_buffer.append when resending


class UncommittedAudio:
    """The latest caller audio (24 kHz mono PCM16) since the server's last commit."""

    def __init__(self, limit_ms: int = RESEND_LIMIT_MS) -> None:
        self._limit_bytes = limit_ms * BYTES_PER_MS_24K
        self._chunks: deque[bytes] = deque()
        self._bytes = 0

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._bytes += len(chunk)
        while self._bytes > self._limit_bytes:
            self._bytes -= len(self._chunks.popleft())

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0

    def chunks_to_resend(self) -> list[bytes]:
        """What a new session should hear, in chunks of up to 1 s; nothing when it is all digital silence."""
        pcm = b"".join(self._chunks)
        if not pcm.strip(b"\x00"):
            return []  # an idle call: nothing to hear
        return [pcm[start:start + RESEND_CHUNK_BYTES] for start in range(0, len(pcm), RESEND_CHUNK_BYTES)]
