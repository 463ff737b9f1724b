"""Cap's voice into Discord: a `discord.AudioSource` that streams the engine's playback buffer as Opus.

The speaker thread (CapVoiceClient._speak_step) calls `read()` every 20 ms while Cap speaks and sends whatever
comes back, already Opus; `b''` means closed. While Cap is quiet (nothing queued, or playback paused by a
barge-in) it returns the 3-byte Opus silence frame instead of encoding 20 ms of zeros, which costs ~0.5 ms
per frame: the packet only gets DAVE (a silence frame passes through unencrypted) and transport encryption.
It says "speaking" before the first audible frame and, after a few quiet frames, "not speaking", so Discord
clients show Cap's speaking ring exactly while it talks.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Final, Protocol

import discord
from discord import opus

from bot.voice.opus_decoder import SPOKEN_PCM

log = logging.getLogger(__name__)

OPUS_SILENCE: Final = opus.OPUS_SILENCE  # b"\xf8\xff\xfe"
# Discord asks for five silence frames after speech so receivers' decoders fade out cleanly.
QUIET_FRAMES_BEFORE_NOT_SPEAKING: Final = 5
# Speech-tuned encoder: Discord voice channels default to 64 kbps; 'voip' favours intelligibility.
ENCODER_SETTINGS: Final = {
    "application": "voip",
    "bitrate": 64,
    "fec": True,
    "expected_packet_loss": 0.1,
    "bandwidth": "full",
    "signal_type": "voice",
}
# Opus encode is the largest cost of a talking call (bench/bench_audio.py). libopus 1.3 defaults to complexity
# 9; 5 halves the encode time (~500 -> ~250 µs per 20 ms frame here) for speech whose log-spectral distance to
# the source moves by about 0.1 dB at 64 kbps. discord.py's Encoder has no setter for it, hence the raw CTL.
ENCODER_COMPLEXITY: Final = 5
OPUS_SET_COMPLEXITY: Final = 4010  # opus_defines.h
OPUS_GET_COMPLEXITY: Final = 4011
OPUS_GET_SAMPLE_RATE: Final = 4029


class SpeechEncoder(opus.Encoder):
    """discord.py's Opus encoder fed SPOKEN_PCM, the Realtime API's 24 kHz mono, as the engine plays it.

    libopus takes 24 kHz input itself (CELT codes it at 48 kHz with the bands above 12 kHz empty, as an
    upsampled copy would have them), so Cap's voice needs no resampler: 179 µs per 20 ms frame here against
    212 µs of 48 kHz stereo encode plus 76 µs of Upsampler (issue 14), and images of 1-11 kHz tones stay at
    least 60 dB down, the Upsampler's bar (tests/bot/voice/test_source.py). Any Opus decoder plays the packets at
    its own rate and channels, Discord's 48 kHz stereo included (RFC 6716 §2; WebRTC sends mono by default).
    discord.py 2.7.1's `Encoder._create_state` reads the class's SAMPLING_RATE and CHANNELS, hence the
    subclass; tests/bot/voice/test_source.py asks libopus for the rate and fails if that changes.
    """

    SAMPLING_RATE = SPOKEN_PCM.rate
    CHANNELS = SPOKEN_PCM.channels
    SAMPLES_PER_FRAME = SPOKEN_PCM.frame_samples
    SAMPLE_SIZE = 2 * SPOKEN_PCM.channels
    FRAME_SIZE = SPOKEN_PCM.frame_bytes


def speech_encoder() -> opus.Encoder:
    """Cap's Opus encoder (SPOKEN_PCM in) with Cap's settings, complexity included."""
    encoder = SpeechEncoder(**ENCODER_SETTINGS)  # type: ignore[arg-type]
    opus._lib.opus_encoder_ctl(encoder._state, OPUS_SET_COMPLEXITY, ENCODER_COMPLEXITY)
    return encoder


def encoder_complexity(encoder: opus.Encoder) -> int:
    """What libopus says the encoder's complexity is (tests and benchmarks check the raw CTL took)."""
    value = ctypes.c_int()
    opus._lib.opus_encoder_ctl(encoder._state, OPUS_GET_COMPLEXITY, ctypes.byref(value))
    return value.value


class FrameSource(Protocol):
    """The engine's playback buffer as the speaker thread sees it (thread-safe)."""

    def read_frame(self) -> bytes | None: ...

    @property
    def audible(self) -> bool:
        """Speech is queued (paused or not)."""
        ...

    @property
    def paused(self) -> bool:
        """Playback is held back (a possible barge-in)."""
        ...


class EngineAudioSource(discord.AudioSource):
    """Streams `playback.read_frame()` as Opus packets; Opus silence (no encode) while Cap is quiet."""

    def __init__(
        self,
        playback: FrameSource,
        *,
        on_speaking: Callable[[bool], None] | None = None,
        encoder: opus.Encoder | None = None,
    ) -> None:
        self._playback = playback
        self._on_speaking = on_speaking
        self._encoder = encoder or speech_encoder()
        self._closed = threading.Event()
        self._speaking = False  # what Discord was last told
        self._quiet_run = 0
        self.frames_encoded = 0
        self.frames_silent = 0
        self.encode_errors = 0

    def is_opus(self) -> bool:
        return True

    def read(self) -> bytes:
        """One Opus packet for the next 20 ms (speaker thread). `b''` only once closed."""
        if self._closed.is_set():
            return b""
        frame = self._playback.read_frame()
        if frame is None:
            self.frames_silent += 1
            self._quiet_run += 1
            if self._speaking and self._quiet_run >= QUIET_FRAMES_BEFORE_NOT_SPEAKING:
                self._speaking = False
                self._notify(False)
            return OPUS_SILENCE
        if not self._speaking:
            self._speaking = True
            self._notify(True)
        self._quiet_run = 0
        if len(frame) != SPOKEN_PCM.frame_bytes:
            frame = frame[: SPOKEN_PCM.frame_bytes].ljust(SPOKEN_PCM.frame_bytes, b"\0")
        try:
            packet = self._encoder.encode(frame, SPOKEN_PCM.frame_samples)
        except Exception:  # an encoder failure loses one frame, not the call
            self.encode_errors += 1
            log.exception("Opus encode failed; sending silence for this frame")
            return OPUS_SILENCE
        self.frames_encoded += 1
        return packet

    @property
    def quiet(self) -> bool:
        """The last reads were all silence: "not speaking" is sent and Discord has its trailing silence frames."""
        return self._quiet_run >= QUIET_FRAMES_BEFORE_NOT_SPEAKING

    def speaking_state_lost(self) -> None:
        """Discord was told "not speaking" (discord.py does with every new session key) or may have forgotten
        (a reconnect): say "speaking" again before the next audible frame."""
        self._speaking = False

    def close(self) -> None:
        """End playback: the next read returns `b''`."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def cleanup(self) -> None:
        self._closed.set()

    def _notify(self, speaking: bool) -> None:
        if self._on_speaking is None:
            return
        try:
            self._on_speaking(speaking)
        except Exception:
            log.debug("speaking-state callback failed", exc_info=True)
