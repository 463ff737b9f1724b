"""Shared fixtures: speech recordings as Discord would deliver them."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def load_frames(name: str) -> list[bytes]:
    """A fixture WAV as 20 ms frames of 48 kHz stereo s16le."""
    from bot.cli.console import read_wav_frames

    return read_wav_frames(FIXTURES / name)


@pytest.fixture(scope="session")
def speech_frames() -> list[bytes]:
    """A caller saying one sentence (espeak-ng), starting at frame 0."""
    return load_frames("hello.wav")
