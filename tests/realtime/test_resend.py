"""Caller audio kept for a new session: bounded, latest first out, nothing for an idle call."""

from __future__ import annotations

from realtime.resend import UncommittedAudio


def test_uncommitted_audio_keeps_the_latest_and_skips_digital_silence() -> None:
    audio = UncommittedAudio(limit_ms=100)
    audio.add(bytes(48 * 60))
    assert audio.chunks_to_resend() == [], "an idle call resends nothing"
    audio.add(b"\x01\x00" * (24 * 80))  # 80 ms of sound: the oldest silence falls out past 100 ms
    assert sum(map(len, audio.chunks_to_resend())) <= 48 * 100
    assert audio.chunks_to_resend()[-1].endswith(b"\x01\x00")
    audio.clear()
    assert audio.chunks_to_resend() == []
