"""EngineAudioSource: Opus packets for speech, Opus silence (no encode) while quiet, barge-in at the next tick."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from discord import opus
from discord.player import AudioPlayer

from bot.voice.source import (
    ENCODER_COMPLEXITY,
    OPUS_SILENCE,
    QUIET_FRAMES_BEFORE_NOT_SPEAKING,
    EngineAudioSource,
    encoder_complexity,
)
from realtime.audio import FRAME_BYTES
from realtime.playback import PlaybackBuffer
from tests.bot.voice.voice_packets import correlation, frames_of, vowel_pcm


class CountingEncoder(opus.Encoder):
    def __init__(self) -> None:
        super().__init__(application="voip", bitrate=64)
        self.calls = 0

    def encode(self, pcm: bytes, frame_size: int) -> bytes:
        self.calls += 1
        return super().encode(pcm, frame_size)


def test_speech_frames_are_encoded_and_decode_back() -> None:
    speech = frames_of(vowel_pcm(0.4))
    playback = PlaybackBuffer()
    for frame in speech:
        playback.push("item_1", frame)
    source = EngineAudioSource(playback)
    assert source.is_opus()
    packets = [source.read() for _ in speech]
    assert all(packet not in (b"", OPUS_SILENCE) for packet in packets)
    decoder = opus.Decoder()
    decoded = [decoder.decode(packet, fec=False) for packet in packets]
    assert all(len(frame) == FRAME_BYTES for frame in decoded)
    assert correlation(b"".join(speech), b"".join(decoded)) > 0.85
    assert playback.played_ms("item_1") == 20 * len(speech)


def test_caps_encoder_runs_at_the_cheaper_complexity() -> None:
    """Issue 14: half the encode cost. discord.py has no setter, so this fails if the raw CTL stops taking."""
    source = EngineAudioSource(PlaybackBuffer())
    assert encoder_complexity(source._encoder) == ENCODER_COMPLEXITY == 5
    assert encoder_complexity(opus.Encoder(application="voip")) > ENCODER_COMPLEXITY  # libopus' default (9)


def test_quiet_means_opus_silence_without_encoding_and_never_end_of_stream() -> None:
    encoder = CountingEncoder()
    source = EngineAudioSource(PlaybackBuffer(), encoder=encoder)
    assert all(source.read() == OPUS_SILENCE for _ in range(500))  # 10 s of quiet
    assert encoder.calls == 0
    source.close()
    assert source.read() == b""  # only a closed source ends playback


def test_barge_in_silences_at_the_next_tick_and_speaking_state_follows() -> None:
    changes: list[bool] = []
    playback = PlaybackBuffer()
    for frame in frames_of(vowel_pcm(0.2)):
        playback.push("item_1", frame)
    source = EngineAudioSource(playback, on_speaking=changes.append)
    assert source.read() != OPUS_SILENCE
    assert changes == []  # discord.py's player already said "speaking" when it started
    playback.pause()  # the engine's barge-in
    assert source.read() == OPUS_SILENCE
    assert playback.played_ms("item_1") == 20  # what the caller heard stops growing at once
    for _ in range(QUIET_FRAMES_BEFORE_NOT_SPEAKING + 10):
        source.read()
    assert changes == [False]  # "not speaking" once, after the trailing silence frames
    playback.clear()
    playback.push("item_2", frames_of(vowel_pcm(0.02))[0])
    assert source.read() != OPUS_SILENCE
    assert changes == [False, True]
    source.assume_speaking()  # the player re-announced "speaking" after a reconnect
    for _ in range(QUIET_FRAMES_BEFORE_NOT_SPEAKING):
        source.read()
    assert changes == [False, True, False]


def test_a_source_that_starts_quiet_takes_back_the_players_speaking_state() -> None:
    changes: list[bool] = []
    source = EngineAudioSource(PlaybackBuffer(), on_speaking=changes.append)
    for _ in range(QUIET_FRAMES_BEFORE_NOT_SPEAKING - 1):
        source.read()
    assert changes == []
    source.read()
    assert changes == [False]


def test_wrong_sized_frames_are_fitted_not_fatal() -> None:
    class Odd:
        def read_frame(self) -> bytes:
            return b"\x01\x00" * 100

    packet = EngineAudioSource(Odd()).read()
    assert len(opus.Decoder().decode(packet, fec=False)) == FRAME_BYTES


class RecordingVoiceClient:
    """The parts of a connected VoiceClient that discord.py's AudioPlayer touches, recording packets."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.client = SimpleNamespace(loop=loop)
        self.ws = SimpleNamespace(speak=self._speak)
        self.timeout = 1.0
        self.quiet_seen = threading.Event()
        self.speech_seen = threading.Event()

    async def _speak(self, state: object) -> None:
        pass

    def is_connected(self) -> bool:
        return True

    def send_audio_packet(self, data: bytes, *, encode: bool) -> None:
        self.sent.append((data, encode))
        if len(self.sent) >= 10:
            self.quiet_seen.set()
        if sum(packet != OPUS_SILENCE for packet, _ in self.sent) >= 5:
            self.speech_seen.set()


async def test_discord_players_thread_keeps_reading_through_quiet_and_sends_silence_unencoded() -> None:
    """discord.py's real AudioPlayer, with a recording stand-in for the connected VoiceClient."""
    client = RecordingVoiceClient(asyncio.get_running_loop())
    playback = PlaybackBuffer()
    source = EngineAudioSource(playback)
    player = AudioPlayer(source, client)  # type: ignore[arg-type]
    player.start()
    try:
        assert await asyncio.to_thread(client.quiet_seen.wait, 10)
        for frame in frames_of(vowel_pcm(0.1)):
            playback.push("item_1", frame)
        assert await asyncio.to_thread(client.speech_seen.wait, 10)
    finally:
        player.stop()
        await asyncio.to_thread(player.join, 2)
    assert not player.is_alive()
    assert all(encode is False for _, encode in client.sent)
    assert client.sent[0][0] == OPUS_SILENCE
    assert sum(data != OPUS_SILENCE for data, _ in client.sent) == 5
    assert source.closed  # the player cleaned the source up
