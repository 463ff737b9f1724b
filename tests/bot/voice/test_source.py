"""EngineAudioSource: Opus packets for speech, Opus silence (no encode) while quiet, barge-in at the next tick."""

from __future__ import annotations

import asyncio
import ctypes

import numpy as np
import pytest
from discord import opus

from bot.voice.opus_decoder import SPOKEN_PCM
from bot.voice.source import (
    ENCODER_COMPLEXITY,
    OPUS_GET_SAMPLE_RATE,
    OPUS_SILENCE,
    QUIET_FRAMES_BEFORE_NOT_SPEAKING,
    EngineAudioSource,
    encoder_complexity,
    speech_encoder,
)
from bot.voice.speaker import Speaker
from realtime.audio import FRAME_BYTES
from realtime.playback import PlaybackBuffer
from tests.bot.voice.test_client import Speaking, wait_until
from tests.bot.voice.voice_packets import correlation, spoken_frames_of, vowel_pcm


class CountingEncoder(opus.Encoder):
    def __init__(self) -> None:
        super().__init__(application="voip", bitrate=64)
        self.calls = 0

    def encode(self, pcm: bytes, frame_size: int) -> bytes:
        self.calls += 1
        return super().encode(pcm, frame_size)


def test_speech_frames_are_encoded_and_decode_back() -> None:
    """Cap's 24 kHz mono frames, encoded as they are, play on a Discord client's 48 kHz stereo decoder."""
    said = vowel_pcm(0.4)
    speech = spoken_frames_of(said)
    playback = PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes)
    for frame in speech:
        playback.push("item_1", frame)
    source = EngineAudioSource(playback)
    assert source.is_opus()
    packets = [source.read() for _ in speech]
    assert all(packet not in (b"", OPUS_SILENCE) for packet in packets)
    decoder = opus.Decoder()  # a Discord client's
    decoded = [decoder.decode(packet, fec=False) for packet in packets]
    assert all(len(frame) == FRAME_BYTES for frame in decoded)
    assert correlation(said, b"".join(decoded)) > 0.85
    assert playback.played_ms("item_1") == 20 * len(speech)


def test_caps_encoder_takes_the_engines_24_khz_mono_as_it_is() -> None:
    """No resampler before Opus: libopus itself runs at SPOKEN_PCM. Fails if discord.py's Encoder stops building
    its state from the class's SAMPLING_RATE and CHANNELS."""
    encoder = EngineAudioSource(PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes))._encoder
    rate = ctypes.c_int()
    opus._lib.opus_encoder_ctl(encoder._state, OPUS_GET_SAMPLE_RATE, ctypes.byref(rate))
    assert (rate.value, SPOKEN_PCM.rate) == (24000, 24000)
    mono_packet = encoder.encode(bytes(SPOKEN_PCM.frame_bytes), SPOKEN_PCM.frame_samples)
    assert opus.Decoder.packet_get_nb_channels(mono_packet) == 1


@pytest.mark.parametrize("freq", [1000, 3000, 6000, 9000, 11000])
def test_caps_24_khz_voice_leaves_no_images_above_12_khz(freq: int) -> None:
    """The Upsampler's bar (realtime/audio.py), kept without it: a tone of Cap's 24 kHz voice, encoded as it is and
    decoded by a Discord client at 48 kHz, has nothing 60 dB or less below it above 12 kHz."""
    t = np.arange(SPOKEN_PCM.rate) / SPOKEN_PCM.rate
    pcm = (12000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()
    encoder, decoder = speech_encoder(), opus.Decoder()
    size = SPOKEN_PCM.frame_bytes
    heard = b"".join(decoder.decode(encoder.encode(pcm[i : i + size], SPOKEN_PCM.frame_samples), fec=False)
                     for i in range(0, len(pcm), size))
    left = np.frombuffer(heard, "<i2")[0::2].astype(float)
    core = left[len(left) // 5 : -len(left) // 10]
    power = np.abs(np.fft.rfft(core * np.blackman(len(core)))) ** 2
    freqs = np.fft.rfftfreq(len(core), 1 / 48000)
    assert 10 * np.log10(power[freqs > 12000].sum() / power.sum()) < -60


def test_caps_encoder_runs_at_the_cheaper_complexity() -> None:
    """Issue 14: half the encode cost. discord.py has no setter, so this fails if the raw CTL stops taking."""
    source = EngineAudioSource(PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes))
    assert encoder_complexity(source._encoder) == ENCODER_COMPLEXITY == 5
    assert encoder_complexity(opus.Encoder(application="voip")) > ENCODER_COMPLEXITY  # libopus' default (9)


def test_quiet_means_opus_silence_without_encoding_and_never_end_of_stream() -> None:
    encoder = CountingEncoder()
    source = EngineAudioSource(PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes), encoder=encoder)
    assert all(source.read() == OPUS_SILENCE for _ in range(500))  # 10 s of quiet
    assert encoder.calls == 0
    source.close()
    assert source.read() == b""  # only a closed source ends playback


def test_barge_in_silences_at_the_next_tick_and_speaking_state_follows() -> None:
    changes: list[bool] = []
    playback = PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes)
    for frame in spoken_frames_of(vowel_pcm(0.2)):
        playback.push("item_1", frame)
    source = EngineAudioSource(playback, on_speaking=changes.append)
    assert source.read() != OPUS_SILENCE
    assert changes == [True]  # said before the first audible packet leaves
    playback.pause()  # the engine's barge-in
    assert source.read() == OPUS_SILENCE
    assert playback.played_ms("item_1") == 20  # what the caller heard stops growing at once
    for _ in range(QUIET_FRAMES_BEFORE_NOT_SPEAKING + 10):
        source.read()
    assert changes == [True, False]  # "not speaking" once, after the trailing silence frames
    playback.clear()
    for frame in spoken_frames_of(vowel_pcm(0.04)):
        playback.push("item_2", frame)
    assert source.read() != OPUS_SILENCE
    assert changes == [True, False, True]
    source.speaking_state_lost()  # discord.py said "not speaking" with a new session key
    assert source.read() != OPUS_SILENCE
    assert changes == [True, False, True, True]  # said again before the next audible packet
    for _ in range(QUIET_FRAMES_BEFORE_NOT_SPEAKING):
        source.read()
    assert changes == [True, False, True, True, False]


def test_a_source_that_stays_quiet_never_says_speaking() -> None:
    changes: list[bool] = []
    source = EngineAudioSource(PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes), on_speaking=changes.append)
    for _ in range(3 * QUIET_FRAMES_BEFORE_NOT_SPEAKING):
        source.read()
    assert changes == [] and source.quiet
    source.speaking_state_lost()  # a reconnect while quiet
    source.read()
    assert changes == []


def test_wrong_sized_frames_are_fitted_not_fatal() -> None:
    class Odd:
        def read_frame(self) -> bytes:
            return b"\x01\x00" * 100

    packet = EngineAudioSource(Odd()).read()
    assert len(opus.Decoder().decode(packet, fec=False)) == FRAME_BYTES


async def test_the_speaker_thread_streams_the_source_through_quiet_and_speech_unencoded() -> None:
    """The source on a real speaker thread, through CapVoiceClient's send step: silence, sleep, then speech."""
    call = Speaking(asyncio.get_running_loop())
    thread = Speaker(name="test-speaker")
    thread.add(call.vc._speak_step)
    try:
        assert await asyncio.to_thread(wait_until, lambda: call.vc.sleeping)
        for frame in spoken_frames_of(vowel_pcm(0.1)):
            call.playback.push("item_1", frame)
        assert await asyncio.to_thread(wait_until, lambda: call.playback.played_ms("item_1") == 100)
        assert await asyncio.to_thread(wait_until, lambda: call.vc.sleeping)
    finally:
        thread.discard(call.vc._speak_step)
        call.vc._audio.close()
        call.close()
    assert all(encode is False for _, encode in call.sent)
    assert [data for data, _ in call.sent[:5]] == [OPUS_SILENCE] * 5
    assert sum(data != OPUS_SILENCE for data, _ in call.sent) == 5
    assert [data for data, _ in call.sent[-5:]] == [OPUS_SILENCE] * 5
