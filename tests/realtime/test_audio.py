"""realtime/audio.py: lengths, streaming, filter quality, saturation, framing, mixing and the local VAD."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from realtime.audio import (
    FRAME_BYTES,
    REALTIME_FRAME_BYTES,
    SAMPLE_RATE_DISCORD,
    SAMPLE_RATE_REALTIME,
    SILENCE_FRAME,
    Downsampler,
    Framer,
    SpeechOnsetDetector,
    Upsampler,
    frame_rms,
    mix_frames,
    rms_to_dbfs,
    to_discord_pcm,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HALF_SCALE = 16384.0
SPEECH_ONSET_DBFS = -40.0  # reference onset of a fixture: its first 20 ms frame above this
MAX_ONSET_DELAY_FRAMES = 6  # 120 ms: the worst case measured over 35 espeak-ng utterances (bench_audio.py)


def tone(freq: float, rate: int, seconds: float, amplitude: float = HALF_SCALE) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)


def pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def stereo(samples: np.ndarray) -> bytes:
    """Mono float samples -> interleaved stereo s16le with L = R."""
    return np.repeat(np.frombuffer(pcm(samples), "<i2"), 2).tobytes()


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float64)


def level_db(x: np.ndarray, freq: float, rate: int, amplitude: float = HALF_SCALE) -> float:
    """Level of `freq` in x (10 % trimmed at each end) relative to `amplitude`, Hann-windowed."""
    core = x[len(x) // 10 : -len(x) // 10]
    window = np.hanning(len(core))
    phase = np.exp(-2j * np.pi * freq * np.arange(len(core)) / rate)
    return 20 * np.log10(2 * abs(np.sum(core * window * phase)) / np.sum(window) / amplitude)


def run(converter: Downsampler | Upsampler, data: bytes, chunks: list[int] | None = None) -> bytes:
    """Push `data` through in the given chunk sizes (one chunk if None), then flush."""
    if chunks is None:
        return converter.process(data) + converter.flush()
    out, start = [], 0
    for size in chunks:
        out.append(converter.process(data[start : start + size]))
        start += size
    out.append(converter.process(data[start:]))
    return b"".join(out) + converter.flush()


def random_chunks(total: int, seed: int) -> list[int]:
    """Chunk sizes of 1..5000 bytes, odd ones included, covering `total`."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(1, 5000)))
    return sizes


def read_fixture(name: str) -> tuple[bytes, int]:
    with wave.open(str(FIXTURES / name)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.readframes(w.getnframes()), w.getframerate()


def discord_frames(data: bytes) -> list[bytes]:
    return [data[i : i + FRAME_BYTES] for i in range(0, len(data) - FRAME_BYTES + 1, FRAME_BYTES)]


# --- constants ------------------------------------------------------------------------------------------


def test_frame_constants_match_the_formats() -> None:
    assert FRAME_BYTES == SAMPLE_RATE_DISCORD // 50 * 2 * 2 == 3840
    assert REALTIME_FRAME_BYTES == SAMPLE_RATE_REALTIME // 50 * 2 == 960
    assert bytes(3840) == SILENCE_FRAME


# --- Downsampler / Upsampler ----------------------------------------------------------------------------


def test_downsampler_turns_each_discord_frame_into_a_realtime_frame() -> None:
    down = Downsampler()
    frame = stereo(tone(440, SAMPLE_RATE_DISCORD, 0.02))
    outputs = [down.process(frame) for _ in range(50)]
    assert all(len(out) == REALTIME_FRAME_BYTES for out in outputs[1:])  # the first is shorter by the delay
    assert REALTIME_FRAME_BYTES - 100 < len(outputs[0]) <= REALTIME_FRAME_BYTES
    assert sum(map(len, outputs)) + len(down.flush()) == 50 * REALTIME_FRAME_BYTES


def test_downsampler_skips_the_converter_on_digital_silence_with_the_same_output() -> None:
    """Issue 14: a caller who is not talking costs no libsamplerate call once the filter holds only zeros."""
    rng = np.random.default_rng(4)
    noise = [stereo(rng.standard_normal(960) * 4000) for _ in range(6)]
    sequence = [noise[0], noise[1], *[SILENCE_FRAME] * 4, noise[2], SILENCE_FRAME, noise[3], *[SILENCE_FRAME] * 7,
                noise[4], noise[5], *[SILENCE_FRAME] * 3]
    reference = Downsampler()
    reference._SILENT_HISTORY_SAMPLES = 10**12  # type: ignore[misc]  # never skips: the converter runs on all
    expected = b"".join(reference.process(frame) for frame in sequence) + reference.flush()
    down = Downsampler()
    converter_calls = 0
    process = down._stream.process

    def counting(*args: object) -> object:
        nonlocal converter_calls
        converter_calls += 1
        return process(*args)

    down._stream.process = counting  # type: ignore[method-assign]
    assert b"".join(down.process(frame) for frame in sequence) + down.flush() == expected
    # The converter runs on the 6 noise frames and on the first silent frame after each sound only.
    assert converter_calls == 6 + 4
    assert down.silent_frames_skipped == 15 - 4


def test_upsampler_turns_each_realtime_frame_into_a_discord_frame() -> None:
    up = Upsampler()
    frame = pcm(tone(440, SAMPLE_RATE_REALTIME, 0.02))
    outputs = [up.process(frame) for _ in range(50)]
    assert all(len(out) == FRAME_BYTES for out in outputs[1:])
    assert sum(map(len, outputs)) + len(up.flush()) == 50 * FRAME_BYTES


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_downsampler_streaming_in_random_chunks_matches_one_shot(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = stereo(rng.standard_normal(SAMPLE_RATE_DISCORD) * 4000)
    one_shot = samples(run(Downsampler(), data))
    streamed = samples(run(Downsampler(), data, random_chunks(len(data), seed)))
    assert len(one_shot) == len(streamed) == SAMPLE_RATE_REALTIME
    assert np.max(np.abs(one_shot - streamed)) <= 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_upsampler_streaming_in_random_chunks_matches_one_shot(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = pcm(rng.standard_normal(SAMPLE_RATE_REALTIME) * 4000)
    one_shot = samples(run(Upsampler(), data))
    streamed = samples(run(Upsampler(), data, random_chunks(len(data), seed)))
    assert len(one_shot) == len(streamed) == 2 * SAMPLE_RATE_DISCORD
    assert np.max(np.abs(one_shot - streamed)) <= 1


def test_partial_samples_wait_for_their_other_bytes() -> None:
    data = stereo(tone(1000, SAMPLE_RATE_DISCORD, 0.1))
    down = Downsampler()
    out = b"".join(down.process(data[i : i + 1]) for i in range(len(data))) + down.flush()
    assert out == run(Downsampler(), data)
    up = Upsampler()
    assert up.process(b"\x01") == b""
    assert len(up.process(b"\x00" + bytes(958))) > 0


def test_flush_ends_the_stream_and_the_next_one_starts_fresh() -> None:
    data = stereo(tone(1000, SAMPLE_RATE_DISCORD, 0.1))
    down = Downsampler()
    run(down, stereo(tone(3000, SAMPLE_RATE_DISCORD, 0.1)))
    assert run(down, data) == run(Downsampler(), data)
    down.process(data[:1001])
    down.reset()
    assert run(down, data) == run(Downsampler(), data)


def test_upsampler_output_is_stereo_with_equal_channels() -> None:
    out = samples(run(Upsampler(), pcm(tone(1000, SAMPLE_RATE_REALTIME, 0.1))))
    assert np.array_equal(out[0::2], out[1::2])


def test_downsampler_averages_the_two_channels() -> None:
    left = tone(1000, SAMPLE_RATE_DISCORD, 0.5)
    interleaved = np.column_stack([left, np.zeros_like(left)]).reshape(-1)
    out = samples(run(Downsampler(), pcm(interleaved)))
    assert level_db(out, 1000, SAMPLE_RATE_REALTIME) == pytest.approx(-6.02, abs=0.1)


def test_1khz_tone_keeps_its_level_both_ways() -> None:
    down = samples(run(Downsampler(), stereo(tone(1000, SAMPLE_RATE_DISCORD, 0.5))))
    assert abs(level_db(down, 1000, SAMPLE_RATE_REALTIME)) < 1.0
    up = samples(run(Upsampler(), pcm(tone(1000, SAMPLE_RATE_REALTIME, 0.5))))[0::2]
    assert abs(level_db(up, 1000, SAMPLE_RATE_DISCORD)) < 1.0
    round_trip = samples(run(Upsampler(), pcm(down)))[0::2]
    assert abs(level_db(round_trip, 1000, SAMPLE_RATE_DISCORD)) < 1.0


def test_6khz_is_still_in_the_passband() -> None:
    down = samples(run(Downsampler(), stereo(tone(6000, SAMPLE_RATE_DISCORD, 0.5))))
    assert abs(level_db(down, 6000, SAMPLE_RATE_REALTIME)) < 1.0


@pytest.mark.parametrize("freq", [13000, 15000, 20000])
def test_downsampler_removes_what_would_alias(freq: int) -> None:
    x = tone(freq, SAMPLE_RATE_DISCORD, 0.5)
    out = samples(run(Downsampler(), stereo(x)))
    core = out[len(out) // 10 : -len(out) // 10]
    assert np.sqrt(np.mean(core**2)) <= HALF_SCALE / np.sqrt(2) * 10 ** (-60 / 20)


@pytest.mark.parametrize("freq", [12500, 15000])
def test_the_mono_downsampler_removes_what_would_alias_too(freq: int) -> None:
    """Cap's Discord path hears 48 kHz mono (libopus downmixes): the same filter, the same bar."""
    x = tone(freq, SAMPLE_RATE_DISCORD, 0.5)
    out = samples(run(Downsampler(channels=1), pcm(x)))
    core = out[len(out) // 10 : -len(out) // 10]
    assert np.sqrt(np.mean(core**2)) <= HALF_SCALE / np.sqrt(2) * 10 ** (-60 / 20)


def test_the_mono_downsampler_gives_what_the_stereo_one_gives_for_the_channels_mean() -> None:
    mono = tone(1000, SAMPLE_RATE_DISCORD, 0.3)
    assert run(Downsampler(channels=1), pcm(mono)) == run(Downsampler(), stereo(mono))


def test_upsampled_content_above_12khz_is_60db_down() -> None:
    rng = np.random.default_rng(4)
    out = samples(run(Upsampler(), pcm(rng.standard_normal(SAMPLE_RATE_REALTIME) * 4000)))[0::2]
    power = np.abs(np.fft.rfft(out * np.hanning(len(out)))) ** 2
    freqs = np.fft.rfftfreq(len(out), 1 / SAMPLE_RATE_DISCORD)
    assert 10 * np.log10(power[freqs > 12000].sum() / power.sum()) <= -60


@pytest.mark.parametrize("level", [32767, -32768])
def test_full_scale_dc_stays_full_scale(level: int) -> None:
    down = samples(run(Downsampler(), bytes(np.full(2 * 4800, level, "<i2"))))
    up = samples(run(Upsampler(), bytes(np.full(2400, level, "<i2"))))
    for out in (down, up):
        assert np.all(np.sign(out) == np.sign(level))  # no wraparound anywhere, ramp-in and tail included
        assert np.all(out[200:-200] == level)


def test_full_scale_square_wave_clips_instead_of_wrapping() -> None:
    period = SAMPLE_RATE_DISCORD // 1000
    square = np.where(np.arange(SAMPLE_RATE_DISCORD // 10) % period < period // 2, 32767.0, -32768.0)
    out = samples(run(Downsampler(), stereo(square)))
    expected = np.where(np.arange(len(out)) % (period // 2) < period // 4, 1, -1)
    phase = np.arange(len(out)) % (period // 4)
    away_from_edges = (phase >= 2) & (phase <= period // 4 - 2)
    assert out.max() == 32767 and out.min() == -32768  # Gibbs overshoot is clipped
    assert np.all(np.sign(out[away_from_edges]) == expected[away_from_edges])


# --- Framer -----------------------------------------------------------------------------------------------


def test_framer_cuts_exact_frames_from_any_chunks() -> None:
    data = bytes(range(256)) * 100
    framer = Framer()
    frames = []
    start = 0
    for size in random_chunks(len(data), 5):
        frames += framer.push(data[start : start + size])
        start += size
    assert all(len(frame) == FRAME_BYTES for frame in frames)
    assert b"".join(frames) == data[: len(frames) * FRAME_BYTES]
    assert framer.pending_bytes == len(data) % FRAME_BYTES
    tail = framer.flush()
    assert tail == data[len(frames) * FRAME_BYTES :] + bytes(FRAME_BYTES - len(data) % FRAME_BYTES)
    assert framer.pending_bytes == 0
    assert framer.flush() is None


def test_framer_with_a_custom_size_and_several_frames_per_push() -> None:
    framer = Framer(REALTIME_FRAME_BYTES)
    assert framer.push(b"") == []
    assert framer.push(bytes(3 * REALTIME_FRAME_BYTES + 1)) == [bytes(REALTIME_FRAME_BYTES)] * 3
    assert framer.pending_bytes == 1
    assert framer.push(bytes(REALTIME_FRAME_BYTES - 1)) == [bytes(REALTIME_FRAME_BYTES)]
    assert framer.flush() is None
    with pytest.raises(ValueError):
        Framer(0)


# --- to_discord_pcm ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels", "seconds"), [(22050, 1, 1.0), (44100, 2, 0.5), (24000, 1, 0.3)])
def test_to_discord_pcm_gives_the_right_duration_and_level(rate: int, channels: int, seconds: float) -> None:
    x = tone(1000, rate, seconds)
    data = pcm(np.repeat(x, channels))
    out = samples(to_discord_pcm(data, rate, channels))
    assert len(out) == pytest.approx(2 * SAMPLE_RATE_DISCORD * seconds, abs=2 * 2)
    assert len(out) % 2 == 0
    assert np.array_equal(out[0::2], out[1::2])
    assert abs(level_db(out[0::2], 1000, SAMPLE_RATE_DISCORD)) < 1.0


def test_to_discord_pcm_keeps_stereo_channels_apart() -> None:
    left = tone(1000, 44100, 0.5)
    data = pcm(np.column_stack([left, np.zeros_like(left)]).reshape(-1))
    out = samples(to_discord_pcm(data, 44100, 2))
    assert abs(level_db(out[0::2], 1000, SAMPLE_RATE_DISCORD)) < 1.0
    assert np.max(np.abs(out[1::2])) == 0


def test_to_discord_pcm_passes_48k_stereo_through_and_drops_a_partial_frame() -> None:
    data = stereo(tone(1000, SAMPLE_RATE_DISCORD, 0.1))
    assert to_discord_pcm(data + b"\x01\x02\x03", SAMPLE_RATE_DISCORD, 2) == data
    assert to_discord_pcm(b"", 22050, 1) == b""
    with pytest.raises(ValueError):
        to_discord_pcm(data, SAMPLE_RATE_DISCORD, 6)


def test_to_discord_pcm_reads_the_fixtures() -> None:
    data, rate = read_fixture("hello.wav")
    out = to_discord_pcm(data, rate, 1)
    assert len(out) // 4 == pytest.approx(len(data) // 2 * SAMPLE_RATE_DISCORD / rate, abs=2)


# --- mix_frames, frame_rms ---------------------------------------------------------------------------------


def test_mix_frames_sums_and_saturates() -> None:
    loud = np.full(FRAME_BYTES // 2, 30000, "<i2").tobytes()
    quiet = np.full(FRAME_BYTES // 2, -1000, "<i2").tobytes()
    assert samples(mix_frames([loud, loud])).min() == 32767
    assert samples(mix_frames([samples_neg(loud), samples_neg(loud), loud])).max() == -30000
    assert samples(mix_frames([samples_neg(loud)] * 3)).max() == -32768
    assert np.all(samples(mix_frames([loud, quiet])) == 29000)
    assert mix_frames([]) == SILENCE_FRAME
    assert mix_frames([quiet]) == quiet
    with pytest.raises(ValueError):
        mix_frames([loud, quiet[:-2]])


def samples_neg(frame: bytes) -> bytes:
    return (-np.frombuffer(frame, "<i2")).astype("<i2").tobytes()


def test_frame_rms_and_dbfs() -> None:
    assert frame_rms(np.full(960, 1000, "<i2").tobytes()) == pytest.approx(1000)
    assert frame_rms(pcm(tone(1000, SAMPLE_RATE_DISCORD, 0.02))) == pytest.approx(
        HALF_SCALE / np.sqrt(2), rel=1e-3
    )
    assert frame_rms(b"") == 0.0
    assert frame_rms(SILENCE_FRAME) == 0.0
    assert rms_to_dbfs(32768) == pytest.approx(0.0)
    assert rms_to_dbfs(HALF_SCALE) == pytest.approx(-6.02, abs=0.01)
    assert rms_to_dbfs(0.0) < -150


# --- SpeechOnsetDetector -----------------------------------------------------------------------------------


def fixture_frames(name: str, lead_seconds: float = 1.0, gain: float = 1.0) -> tuple[list[bytes], int | None]:
    """A fixture as Discord frames after `lead_seconds` of silence, and the index of its onset frame."""
    data, rate = read_fixture(name)
    speech = samples(to_discord_pcm(data, rate, 1)) * gain
    lead = np.zeros(int(2 * SAMPLE_RATE_DISCORD * lead_seconds))
    frames = discord_frames(pcm(np.concatenate([lead, speech])))
    onset = next((i for i, f in enumerate(frames) if rms_to_dbfs(frame_rms(f)) > SPEECH_ONSET_DBFS), None)
    return frames, onset


@pytest.mark.parametrize("name", ["hello.wav", "question.wav"])
def test_vad_fires_within_a_few_frames_of_speech_onset(name: str) -> None:
    frames, onset = fixture_frames(name)
    assert onset is not None
    detector = SpeechOnsetDetector()
    fired = [i for i, frame in enumerate(frames) if detector.update(frame)]
    assert fired, "no onset detected"
    assert onset + detector.onset_frames - 1 <= fired[0] <= onset + MAX_ONSET_DELAY_FRAMES - 1


@pytest.mark.parametrize("name", ["hello.wav", "question.wav"])
def test_vad_fires_on_the_second_frame_of_a_clean_onset(name: str) -> None:
    """Barge-in speed (issue 14): 40 ms of speech in 10 ms analysis frames, not three 20 ms frames."""
    frames, onset = fixture_frames(name)
    assert onset is not None
    detector = SpeechOnsetDetector()
    fired = next(i for i, frame in enumerate(frames) if detector.update(frame))
    assert fired <= onset + 1


def test_vad_onset_waits_for_onset_ms() -> None:
    frames, _ = fixture_frames("hello.wav")
    first = {}
    for needed in (20, 60):
        detector = SpeechOnsetDetector(onset_ms=needed)
        first[needed] = next(i for i, frame in enumerate(frames) if detector.update(frame))
    assert first[60] >= first[20] + 2


def test_vad_returns_true_once_per_onset_and_rearms_after_the_hangover() -> None:
    frames, _ = fixture_frames("question.wav")
    detector = SpeechOnsetDetector()
    results = [detector.update(frame) for frame in frames]
    assert results.count(True) >= 1
    first = results.index(True)
    assert detector.speaking or results[first + 1 :].count(True) == 0
    silence = [detector.update(SILENCE_FRAME) for _ in range(detector.hangover_frames)]
    assert not any(silence) and not detector.speaking
    again = [detector.update(frame) for frame in frames]
    assert any(again)


def test_vad_reset_forgets_speech() -> None:
    frames, onset = fixture_frames("hello.wav")
    assert onset is not None
    detector = SpeechOnsetDetector()
    for frame in frames[: onset + 10]:
        detector.update(frame)
    assert detector.speaking
    detector.reset()
    assert not detector.speaking


def test_vad_ignores_silence_and_low_noise() -> None:
    detector = SpeechOnsetDetector()
    assert not any(detector.update(SILENCE_FRAME) for _ in range(250))
    rng = np.random.default_rng(6)
    low_noise = discord_frames(
        stereo(rng.standard_normal(SAMPLE_RATE_DISCORD * 5) * 32768 * 10 ** (-55 / 20))
    )
    assert not any(detector.update(frame) for frame in low_noise)
    assert not detector.speaking


def test_vad_never_fires_below_min_rms_even_on_speech() -> None:
    frames, _ = fixture_frames("hello.wav")  # its loudest 20 ms frame is about -12 dBFS
    assert not any(SpeechOnsetDetector(min_rms=32768 * 10 ** (-6 / 20)).update(frame) for frame in frames)


def test_vad_settles_on_steady_noise() -> None:
    rng = np.random.default_rng(8)
    noise = discord_frames(stereo(rng.standard_normal(SAMPLE_RATE_DISCORD * 10) * 32768 * 10 ** (-30 / 20)))
    detector = SpeechOnsetDetector()
    fired = [i for i, frame in enumerate(noise) if detector.update(frame)]
    assert all(i < 50 for i in fired)  # at most the start of the sound, within its first second
    assert not detector.speaking


def test_vad_rejects_frames_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        SpeechOnsetDetector().update(bytes(REALTIME_FRAME_BYTES))


def loud_noise_frames(seconds: float, seed: int = 8) -> list[bytes]:
    """-20 dBFS white noise: webrtcvad calls much of it speech; only the relative noise floor rejects it."""
    rng = np.random.default_rng(seed)
    return discord_frames(stereo(rng.standard_normal(int(SAMPLE_RATE_DISCORD * seconds)) * 32768 * 0.1))


def test_noise_noted_while_cap_is_quiet_sets_the_floor_barge_in_judges_by() -> None:
    """Issue 14: while Cap is quiet the detector skips webrtcvad but must still learn the room's noise."""
    noise = loud_noise_frames(2.0)
    unwarned = SpeechOnsetDetector()
    assert any(unwarned.update(frame) for frame in noise[50:]), "control: this noise fools a detector with no floor"
    detector = SpeechOnsetDetector()
    for frame in noise[:50]:  # one second heard while Cap was quiet
        detector.note_level(frame)
    assert not any(detector.update(frame) for frame in noise[50:])


def test_note_level_forgets_speech_so_speech_under_way_fires_once_cap_speaks() -> None:
    frames, onset = fixture_frames("hello.wav")
    assert onset is not None
    detector = SpeechOnsetDetector()
    for frame in frames[: onset + 5]:
        detector.update(frame)
    assert detector.speaking
    detector.note_level(frames[onset + 5])
    assert not detector.speaking
    fired = [i for i, frame in enumerate(frames[onset + 6 : onset + 12]) if detector.update(frame)]
    assert fired and fired[0] <= 1  # 40 ms of the speech still going on


def test_note_level_refuses_a_frame_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="3840-byte"):
        SpeechOnsetDetector().note_level(bytes(100))
