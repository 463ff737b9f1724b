"""Cost and quality of realtime/audio.py, beside naive numpy floors measured in the same run.

Run as `.venv/bin/python bench/bench_audio.py` (about 15 s, one core). It re-measures the figures quoted
in realtime/audio.py: resampler cost and quality per libsamplerate converter, SpeechOnsetDetector cost,
false onsets on noise and music and detection delay on espeak-ng speech, mixing and event framing cost.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from realtime import protocol
from realtime.audio import (
    FRAME_BYTES,
    REALTIME_FRAME_BYTES,
    RESAMPLER_CONVERTER,
    SAMPLE_RATE_DISCORD,
    SAMPLE_RATE_REALTIME,
    Downsampler,
    SpeechOnsetDetector,
    Upsampler,
    frame_rms,
    mix_frames,
    rms_to_dbfs,
    to_discord_pcm,
)

CONVERTERS = ("sinc_fastest", "sinc_medium", "sinc_best", "linear", "zero_order_hold")
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
TIMING_BATCHES = 5  # best of: other processes on the machine only ever make a batch slower
SIGNAL_SECONDS = 60
QUALITY_SECONDS = 0.5
PASSBAND_HZ = (1000, 3000, 6000, 9000, 10000)
ALIAS_HZ = (12050, 12500, 14000, 15000, 18000, 20000, 22000, 23500)
IMAGE_SOURCE_HZ = (1000, 3000, 6000, 9000, 11000)
SPEECH_ONSET_DBFS = -40.0  # reference onset: first 20 ms frame of the clean utterance above this
LEAD_IN_SECONDS = 2
SNR_DB = 10.0
UTTERANCES = (
    "Hi, I want to buy a rental property in Austin",
    "What interest rate can I get on a fix and flip loan?",
    "Can you call me back tomorrow morning?",
    "My credit score is about seven hundred.",
    "Yes.",
    "No, thanks.",
    "Okay, let's do it.",
)
VOICES = ("en-us", "en-us+f3", "en-gb", "en-us+m7", "en-us+f5")

rng = np.random.default_rng(7)


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """Best-of-batches microseconds per call."""
    best = float("inf")
    for _ in range(TIMING_BATCHES):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def row(label: str, value: str, floor: str = "", note: str = "") -> None:
    print(f"  {label:<44} {value:>12} {floor:>12}  {note}")


# --- signals -------------------------------------------------------------------------------------------


def at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20)


def colored_noise(n: int, exponent: float) -> np.ndarray:
    """1/f**exponent noise: 0 white, 1 pink, 2 brown."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE_DISCORD)
    freqs[0] = freqs[1]
    return np.fft.irfft(spectrum / freqs ** (exponent / 2), n)


def chords(n: int) -> np.ndarray:
    """Held major triads of six-harmonic tones, a new chord every 2 s."""
    t = np.arange(n) / SAMPLE_RATE_DISCORD
    out = np.zeros(n)
    segment = 2 * SAMPLE_RATE_DISCORD
    for index, start in enumerate(range(0, n, segment)):
        root = (261.63, 220.0, 174.61, 196.0)[index % 4]
        tt = t[start : start + segment]
        for interval in (1.0, 1.26, 1.5):
            for harmonic in range(1, 7):
                out[start : start + segment] += np.sin(2 * np.pi * root * interval * harmonic * tt) / harmonic
    return out


def drums(n: int) -> np.ndarray:
    """A 120 bpm pulse: a pitch-dropping kick plus a short noise hat on every beat."""
    out = np.zeros(n)
    beat = SAMPLE_RATE_DISCORD // 2
    for start in range(0, n, beat):
        m = min(beat, n - start)
        t = np.arange(m) / SAMPLE_RATE_DISCORD
        kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
        out[start : start + m] += kick + 0.3 * rng.standard_normal(m) * np.exp(-t * 60)
    return out


def discord_frames(mono48: np.ndarray) -> list[bytes]:
    """Float mono at 48 kHz -> whole 20 ms frames of 48 kHz stereo s16le."""
    pcm = np.clip(np.rint(mono48), -32768, 32767).astype("<i2")
    data = np.repeat(pcm[: len(pcm) // 960 * 960], 2).tobytes()
    return [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


def tone(freq: float, rate: int, seconds: float, amplitude: float = 16384.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


# --- resamplers ----------------------------------------------------------------------------------------


def stream(
    converter_cls: type[Downsampler] | type[Upsampler], converter: str, pcm: bytes, chunk: int
) -> bytes:
    conv = converter_cls(converter)
    return b"".join(conv.process(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk)) + conv.flush()


def tone_gain_db(out: np.ndarray, freq: float, rate: int, amplitude: float) -> float:
    """Level of `freq` in `out` (edges trimmed) relative to the input amplitude, Hann-windowed."""
    x = out[len(out) // 10 : -len(out) // 10]
    t = np.arange(len(x)) / rate
    w = np.hanning(len(x))
    level = 2 * abs(np.sum(x * w * np.exp(-2j * np.pi * freq * t))) / np.sum(w)
    return 20 * np.log10(level / amplitude + 1e-15)


def down_quality(converter: str) -> tuple[dict[int, float], float]:
    """Passband gains, and the loudest output from any 12-24 kHz input (dB re input)."""
    amp = 16384.0
    gains, worst_alias = {}, -400.0
    for freq in PASSBAND_HZ + ALIAS_HZ:
        stereo = np.repeat(tone(freq, SAMPLE_RATE_DISCORD, QUALITY_SECONDS, amp).astype("<i2"), 2)
        out = np.frombuffer(stream(Downsampler, converter, stereo.tobytes(), FRAME_BYTES), "<i2")
        if freq in PASSBAND_HZ:
            gains[freq] = tone_gain_db(out.astype(float), freq, SAMPLE_RATE_REALTIME, amp)
        else:
            core = out[len(out) // 10 : -len(out) // 10].astype(float)
            worst_alias = max(
                worst_alias, 20 * np.log10(np.sqrt(np.mean(core**2)) / (amp / np.sqrt(2)) + 1e-15)
            )
    return gains, worst_alias


def up_quality(converter: str) -> tuple[dict[int, float], float]:
    """Passband gains, and the worst energy above 12 kHz relative to the input tone (dB)."""
    amp = 16384.0
    gains, worst_image = {}, -400.0
    for freq in sorted(set(PASSBAND_HZ + IMAGE_SOURCE_HZ)):
        mono = tone(freq, SAMPLE_RATE_REALTIME, QUALITY_SECONDS, amp).astype("<i2").tobytes()
        out = np.frombuffer(stream(Upsampler, converter, mono, 960), "<i2")[0::2].astype(float)
        if freq in PASSBAND_HZ:
            gains[freq] = tone_gain_db(out, freq, SAMPLE_RATE_DISCORD, amp)
        if freq in IMAGE_SOURCE_HZ:
            core = out[len(out) // 10 : -len(out) // 10]
            window = np.blackman(len(core))
            power = np.abs(np.fft.rfft(core * window)) ** 2
            ideal = tone(freq, SAMPLE_RATE_DISCORD, 1.0, amp)[: len(core)]
            reference = np.sum(np.abs(np.fft.rfft(ideal * window)) ** 2)
            freqs = np.fft.rfftfreq(len(core), 1 / SAMPLE_RATE_DISCORD)
            ratio = power[freqs > SAMPLE_RATE_REALTIME / 2].sum() / reference
            worst_image = max(worst_image, 10 * np.log10(ratio + 1e-30))
    return gains, worst_image


def noise_frames() -> tuple[bytes, bytes]:
    """One 20 ms frame of noise as Discord sends it (48 kHz stereo) and as the Realtime API does (24 kHz mono)."""
    noise = np.clip(rng.standard_normal(SAMPLE_RATE_DISCORD * 2) * 3000, -32768, 32767).astype("<i2")
    return noise[: FRAME_BYTES // 2].tobytes(), noise[:480].tobytes()


def naive_down(frame48: bytes) -> bytes:
    """The floor: downmix and drop every other sample, no filter (aliases)."""
    s = np.frombuffer(frame48, "<i2").reshape(-1, 2).astype(np.int32)
    return ((s[:, 0] + s[:, 1]) >> 1)[::2].astype("<i2").tobytes()


def naive_up(frame24: bytes) -> bytes:
    """The floor: repeat every sample (images)."""
    return np.repeat(np.frombuffer(frame24, "<i2"), 4).tobytes()


def bench_resamplers() -> None:
    frame48, frame24 = noise_frames()
    down_floor = per_call_us(lambda: naive_down(frame48), 2000)
    up_floor = per_call_us(lambda: naive_up(frame24), 2000)
    print("\nResamplers, µs per 20 ms frame (floor: naive numpy, no filter)")
    print("  quality bar: passband to 6 kHz within 1 dB, aliases/images >= 60 dB down (re the input tone;")
    print("  int16 rounding of input and output alone puts a floor near -88 dB on the alias figure)")
    row("converter / direction", "µs", "floor µs", "quality")
    for converter in CONVERTERS:
        down, up = Downsampler(converter), Upsampler(converter)
        down_us = per_call_us(lambda d=down: d.process(frame48), 1000)
        up_us = per_call_us(lambda u=up: u.process(frame24), 1000)
        d_gains, alias = down_quality(converter)
        u_gains, image = up_quality(converter)
        d_ok = all(abs(g) <= 1 for f, g in d_gains.items() if f <= 6000) and alias <= -60
        u_ok = all(abs(g) <= 1 for f, g in u_gains.items() if f <= 6000) and image <= -60
        chosen = " (chosen)" if converter == RESAMPLER_CONVERTER else ""
        d_note = " ".join(f"{f // 1000}k:{g:+.1f}" for f, g in d_gains.items())
        u_note = " ".join(f"{f // 1000}k:{g:+.1f}" for f, g in u_gains.items())
        row(
            f"{converter}{chosen} 48k st -> 24k mono",
            f"{down_us:.1f}",
            f"{down_floor:.1f}",
            f"{'PASS' if d_ok else 'FAIL'} dB {d_note}; worst alias {alias:.0f} dB",
        )
        row(
            f"{converter}{chosen} 24k mono -> 48k st",
            f"{up_us:.1f}",
            f"{up_floor:.1f}",
            f"{'PASS' if u_ok else 'FAIL'} dB {u_note}; worst image {image:.0f} dB",
        )


# --- VAD -------------------------------------------------------------------------------------------------


def espeak_utterances() -> list[np.ndarray]:
    """Mono 48 kHz float utterances: many voices via espeak-ng if installed, else the two fixtures."""
    paths: list[Path] = []
    tmp = tempfile.TemporaryDirectory()
    if shutil.which("espeak-ng"):
        for i, text in enumerate(UTTERANCES):
            for j, voice in enumerate(VOICES):
                path = Path(tmp.name) / f"u{i}_{j}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
                paths.append(path)
    else:
        paths = [FIXTURES / "hello.wav", FIXTURES / "question.wav"]
    out = []
    for path in paths:
        with wave.open(str(path)) as w:
            pcm = w.readframes(w.getnframes())
            rate = w.getframerate()
        out.append(np.frombuffer(to_discord_pcm(pcm, rate, 1), "<i2")[0::2].astype(float))
    tmp.cleanup()
    return out


def onsets(frames: list[bytes], **kwargs: float | None) -> list[int]:
    detector = SpeechOnsetDetector(**kwargs)
    return [i for i, frame in enumerate(frames) if detector.update(frame)]


def speaking_share(frames: list[bytes], **kwargs: float | None) -> float:
    """Share of frames the detector spends in `speaking`: stuck at 100 % means it can never fire again."""
    detector = SpeechOnsetDetector(**kwargs)
    return float(np.mean([detector.update(frame) or detector.speaking for frame in frames]))


def detection_delays(speech: list[np.ndarray], background: np.ndarray | None, **kwargs: float | None) -> str:
    """Delay from each utterance's energy onset to the end of the frame where the detector fires."""
    lead = LEAD_IN_SECONDS * SAMPLE_RATE_DISCORD
    delays: list[int] = []
    for utterance in speech:
        clean = np.concatenate([np.zeros(lead), utterance, np.zeros(SAMPLE_RATE_DISCORD // 2)])
        mixed = clean
        if background is not None:
            noise = background[: len(clean)]
            speech_part = noise[lead : lead + len(utterance)]
            gain = np.sqrt(np.mean(speech_part**2) / np.mean(utterance**2)) * 10 ** (SNR_DB / 20)
            mixed = noise.copy()
            mixed[lead : lead + len(utterance)] += utterance * gain
        levels = [rms_to_dbfs(frame_rms(f)) for f in discord_frames(clean)]
        reference = next(i for i, level in enumerate(levels) if level > SPEECH_ONSET_DBFS)
        fired = [i for i in onsets(discord_frames(mixed), **kwargs) if i >= reference]
        if fired:
            delays.append((fired[0] + 1 - reference) * 20)
    if not delays:
        return f"detected 0/{len(speech)}"
    return f"detected {len(delays)}/{len(speech)}, median {np.median(delays):.0f} ms, max {max(delays)} ms"


# The detector before issue 14, as the same-run reference: three 20 ms frames, 6 dB above the noise floor.
PREVIOUS_DETECTOR: dict[str, float | None] = {"analysis_ms": 20, "onset_ms": 60, "noise_margin_db": 6.0}


def noise_and_music(n: int) -> dict[str, np.ndarray]:
    """The signals false onsets are counted on: coloured noise at four levels, chords, drums, both."""
    signals = {}
    for level in (-40, -30, -25, -20):
        signals[f"white {level} dBFS"] = at_dbfs(colored_noise(n, 0), level)
        signals[f"pink {level} dBFS"] = at_dbfs(colored_noise(n, 1), level)
        signals[f"brown {level} dBFS"] = at_dbfs(colored_noise(n, 2), level)
    signals["chords -20 dBFS"] = at_dbfs(chords(n), -20)
    signals["drum pulse -20 dBFS"] = at_dbfs(drums(n), -20)
    signals["chords + drums -20 dBFS"] = at_dbfs(chords(n) + 2 * drums(n), -20)
    return signals


def onset_figures(**kwargs: float | None) -> tuple[float, float, int]:
    """A detector's own onset time from silence on the espeak-ng utterances (median, max ms) and its false
    onsets per minute summed over `noise_and_music` (the first sound of each signal counts once)."""
    lead = LEAD_IN_SECONDS * SAMPLE_RATE_DISCORD
    delays = []
    for utterance in espeak_utterances():
        clean = np.concatenate([np.zeros(lead), utterance, np.zeros(SAMPLE_RATE_DISCORD // 2)])
        frames = discord_frames(clean)
        reference = next(i for i, f in enumerate(frames) if rms_to_dbfs(frame_rms(f)) > SPEECH_ONSET_DBFS)
        fired = [i for i in onsets(frames, **kwargs) if i >= reference]
        if fired:
            delays.append((fired[0] + 1 - reference) * 20)
    n = SIGNAL_SECONDS * SAMPLE_RATE_DISCORD
    false = sum(len(onsets(discord_frames(signal), **kwargs)) * 60 // SIGNAL_SECONDS
                for signal in noise_and_music(n).values())
    return float(np.median(delays)), float(max(delays)), false


def encoder_figures() -> tuple[float, float, float, float]:
    """Cap's Opus encoder against libopus' default complexity (both fed SPOKEN_PCM, as Cap's voice is) on the
    speech fixtures: µs per 20 ms frame each, and each one's log-spectral distance (dB) from the source after a
    Discord client's 48 kHz stereo decoder."""
    from discord import opus

    from bot.voice.opus_decoder import SPOKEN_PCM
    from bot.voice.source import ENCODER_SETTINGS, SpeechEncoder, speech_encoder

    pcm = b""
    for name in ("hello.wav", "question.wav"):
        with wave.open(str(FIXTURES / name)) as w:
            pcm += to_discord_pcm(w.readframes(w.getnframes()), w.getframerate(), w.getnchannels())
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]
    down = Downsampler()
    voice = b"".join(down.process(frame) for frame in frames) + down.flush()
    size = SPOKEN_PCM.frame_bytes
    voice_frames = [voice[i : i + size] for i in range(0, len(voice) - size + 1, size)]
    source = np.frombuffer(b"".join(frames), "<i2")[0::2].astype(float)
    figures = []
    for encoder_of in (speech_encoder, lambda: SpeechEncoder(**ENCODER_SETTINGS)):  # type: ignore[arg-type]
        samples = SPOKEN_PCM.frame_samples
        cost = per_call_us(partial(encoder_of().encode, voice_frames[len(voice_frames) // 2], samples), 200)
        encoder, decoder = encoder_of(), opus.Decoder()
        decoded = b"".join(decoder.decode(encoder.encode(f, samples), fec=False) for f in voice_frames)
        figures += [cost, log_spectral_distance(source, np.frombuffer(decoded, "<i2")[0::2].astype(float))]
    return figures[0], figures[2], figures[1], figures[3]


def log_spectral_distance(source: np.ndarray, decoded: np.ndarray) -> float:
    """Mean RMS difference of the 20 ms log spectra (dB) over the louder 70 % of frames, after finding the
    codec's delay."""
    n = 960
    lag = max(range(0, 800, 2), key=lambda k: float(np.dot(source[: len(source) - k], decoded[k:])))
    decoded = decoded[lag:]
    m = min(len(source), len(decoded)) // n * n
    window = np.hanning(n)
    a = np.abs(np.fft.rfft(source[:m].reshape(-1, n) * window, axis=1)) + 1
    b = np.abs(np.fft.rfft(decoded[:m].reshape(-1, n) * window, axis=1)) + 1
    loud = np.sum(a**2, axis=1) > np.percentile(np.sum(a**2, axis=1), 30)
    return float(np.mean(np.sqrt(np.mean((20 * np.log10(a[loud] / b[loud])) ** 2, axis=1))))


def bench_vad() -> None:
    n = SIGNAL_SECONDS * SAMPLE_RATE_DISCORD
    speech = espeak_utterances()
    speech_frames = discord_frames(np.concatenate(speech))
    silence = bytes(FRAME_BYTES)
    detector = SpeechOnsetDetector()
    it = iter(speech_frames * 10)
    vad_us = per_call_us(lambda: detector.update(next(it)), 1000)
    silent_us = per_call_us(lambda: detector.update(silence), 1000)
    floor_us = per_call_us(lambda: frame_rms(speech_frames[40]) > 100.0, 1000)
    print("\nSpeechOnsetDetector, µs per 20 ms frame (floor: numpy RMS gate alone)")
    row("update() on speech", f"{vad_us:.1f}", f"{floor_us:.1f}")
    row("update() on digital silence", f"{silent_us:.1f}", f"{floor_us:.1f}")

    signals = noise_and_music(n)
    configs = {"defaults": {}, "before issue 14 (20 ms analysis, 60 ms onset, 6 dB)": PREVIOUS_DETECTOR,
               "webrtcvad + RMS floor only": {"noise_margin_db": None}}
    print(f"\n  false onsets per minute ({SIGNAL_SECONDS} s each; the first sound after silence counts once)")
    print("  and share of the time spent 'speaking' (100 % = stuck: real speech can no longer fire)")
    row("signal", "defaults", "webrtcvad+RMS", "(onsets/min, speaking %)")
    for name, signal in signals.items():
        frames = discord_frames(signal)
        cells = [
            f"{len(onsets(frames, **kw)) * 60 // SIGNAL_SECONDS}, {100 * speaking_share(frames, **kw):.0f} %"
            for kw in configs.values()
        ]
        row(name, *cells)

    print(f"\n  detection delay on {len(speech)} espeak-ng utterances", end=" ")
    print(f"(onset = first frame > {SPEECH_ONSET_DBFS:.0f} dBFS; ends at the end of the firing frame)")
    pink = at_dbfs(colored_noise(n, 1), -30)
    music = at_dbfs(chords(n), -30)
    for name, kwargs in configs.items():
        print(f"  [{name}]")
        print(f"    from silence:                   {detection_delays(speech, None, **kwargs)}")
        print(
            f"    over -30 dBFS pink noise, {SNR_DB:.0f} dB SNR: {detection_delays(speech, pink, **kwargs)}"
        )
        print(
            f"    over -30 dBFS chords, {SNR_DB:.0f} dB SNR:     {detection_delays(speech, music, **kwargs)}"
        )


# --- mixing and event framing --------------------------------------------------------------------------


def speaker_frames(count: int = 3) -> list[bytes]:
    return [
        np.clip(rng.standard_normal(FRAME_BYTES // 2) * 8000, -32768, 32767).astype("<i2").tobytes()
        for _ in range(count)
    ]


def naive_mix(frames: list[bytes]) -> bytes:
    """The floor: an int16 sum that wraps around on overflow."""
    total = np.frombuffer(frames[0], "<i2").copy()
    for frame in frames[1:]:
        total += np.frombuffer(frame, "<i2")
    return total.tobytes()


def append_event(pcm: bytes) -> str:
    """An input_audio_buffer.append as it goes on the socket (the engine's protocol builder + json.dumps)."""
    return json.dumps(protocol.input_audio_append(pcm), separators=(",", ":"))


def naive_append(pcm: bytes) -> str:
    """The floor: base64 and string concatenation."""
    return '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(pcm).decode() + '"}'


def bench_mix_and_framing() -> None:
    speakers = speaker_frames()
    print("\nMixing and event framing, µs per call")
    row(
        "mix_frames, 3 speakers",
        f"{per_call_us(lambda: mix_frames(speakers), 5000):.1f}",
        f"{per_call_us(lambda: naive_mix(speakers), 5000):.1f}",
        "floor: int16 sum that wraps",
    )
    pcm_40ms = speakers[0][: 2 * REALTIME_SAMPLES_40MS]
    row(
        "base64 + json, one 40 ms append event",
        f"{per_call_us(lambda: append_event(pcm_40ms), 5000):.1f}",
        f"{per_call_us(lambda: naive_append(pcm_40ms), 5000):.1f}",
        "floor: base64 + string concatenation",
    )


def frame_costs() -> list[tuple[str, float, str, float]]:
    """Per 20 ms frame, Cap's audio work beside its naive numpy floor, measured now: (work, µs, floor, µs)."""
    frame48, frame24 = noise_frames()
    speakers = speaker_frames()
    pcm_20ms = speakers[0][:REALTIME_FRAME_BYTES]  # what one caller frame becomes upstream
    down, up = Downsampler(), Upsampler()
    return [
        (f"Downsampler 48 kHz stereo → 24 kHz mono ({RESAMPLER_CONVERTER})",
         per_call_us(lambda: down.process(frame48), 2000),
         "naive downmix + decimate", per_call_us(lambda: naive_down(frame48), 2000)),
        (f"Upsampler 24 kHz mono → 48 kHz stereo ({RESAMPLER_CONVERTER})",
         per_call_us(lambda: up.process(frame24), 2000),
         "naive sample repeat", per_call_us(lambda: naive_up(frame24), 2000)),
        ("mixer: mix_frames of 3 speakers",
         per_call_us(lambda: mix_frames(speakers), 5000),
         "int16 sum that wraps", per_call_us(lambda: naive_mix(speakers), 5000)),
        ("framing: one 20 ms input_audio_buffer.append (base64 + JSON)",
         per_call_us(lambda: append_event(pcm_20ms), 5000),
         "base64 + concatenation", per_call_us(lambda: naive_append(pcm_20ms), 5000)),
    ]


REALTIME_SAMPLES_40MS = SAMPLE_RATE_REALTIME * 40 // 1000


def bench_encoder() -> None:
    cap_us, default_us, cap_lsd, default_lsd = encoder_figures()
    print("\nOpus encode of the speech fixtures, µs per 20 ms frame and log-spectral distance to the source")
    row("Cap's encoder (complexity 5)", f"{cap_us:.0f}", f"{cap_lsd:.2f} dB")
    row("libopus default (complexity 9)", f"{default_us:.0f}", f"{default_lsd:.2f} dB")


def main() -> None:
    started = time.perf_counter()
    print(f"bench_audio: numpy {np.__version__}, chosen converter {RESAMPLER_CONVERTER}")
    bench_encoder()
    bench_resamplers()
    bench_vad()
    bench_mix_and_framing()
    print(f"\n(ran in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
