"""The floor of a call's CPU: Opus decode + encode + resampling alone, per 20 ms frame, measured now.

bench_concurrency.py counts the frames a run decoded, encoded and resampled, and prices them with these
figures (taken in the same child, on the same core, once the calls are closed) to state Cap's per-call cost
against what the codec and the resamplers alone would cost at the same duty cycle. Each unit is priced with
the code Cap runs: decode a Discord client's 48 kHz stereo packet with `bot.voice.opus_decoder.OpusDecoder` at
HEARD_PCM (48 kHz mono, what `SpeakerDecoder` uses), downsample that mono frame for the uplink, and encode the
Realtime API's 24 kHz mono as it is (SPOKEN_PCM) with Cap's `speech_encoder()`, so the floor is neither inflated
by a slower codec than Cap's nor flattered by a faster one. Cap's Discord path upsamples nothing, so its runs
count no `up` frames (still priced, for a transport that plays 48 kHz stereo).
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from pathlib import Path

from discord import opus

from bot.voice.opus_decoder import HEARD_PCM, SPOKEN_PCM, OpusDecoder
from bot.voice.source import ENCODER_SETTINGS, speech_encoder
from realtime.audio import FRAME_BYTES, REALTIME_FRAME_BYTES, Downsampler, Upsampler, to_discord_pcm

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
BATCHES = 5


def _best_us(fn: Callable[[], object], calls: int) -> float:
    best = float("inf")
    for _ in range(BATCHES):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def speech_frames() -> list[bytes]:
    with wave.open(str(FIXTURES / "question.wav")) as w:
        pcm = to_discord_pcm(w.readframes(w.getnframes()), w.getframerate(), w.getnchannels())
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]


def client_packets(frames: list[bytes]) -> list[bytes]:
    """A Discord client's packets for 48 kHz stereo `frames` (its encoder runs at 48 kHz stereo)."""
    encoder = opus.Encoder(**ENCODER_SETTINGS)  # type: ignore[arg-type]
    return [encoder.encode(frame, 960) for frame in frames]


def costs() -> dict[str, float]:
    """µs per 20 ms frame of speech: Opus decode (a caller's packet, Cap's decoder at HEARD_PCM), Opus encode
    (Cap's encoder, SPOKEN_PCM in), Downsampler (HEARD_PCM -> Realtime), Upsampler (Realtime -> 48 kHz stereo)."""
    frames = speech_frames()
    encoder = speech_encoder()
    packets = client_packets(frames)
    decoder, down, up = OpusDecoder(HEARD_PCM), Downsampler(channels=HEARD_PCM.channels), Upsampler()
    heard = [decoder.decode(packet) for packet in packets]
    pcm24 = [down.process(frame)[:REALTIME_FRAME_BYTES].ljust(REALTIME_FRAME_BYTES, b"\0") for frame in heard]
    cycle = {"decode": iter(packets * 100), "encode": iter(pcm24 * 100), "down": iter(heard * 100),
             "up": iter(pcm24 * 100)}
    calls = min(len(frames), 100)
    return {
        "decode": _best_us(lambda: decoder.decode(next(cycle["decode"])), calls),
        "encode": _best_us(lambda: encoder.encode(next(cycle["encode"]), SPOKEN_PCM.frame_samples), calls),
        "down": _best_us(lambda: down.process(next(cycle["down"])), calls),
        "up": _best_us(lambda: up.process(next(cycle["up"])), calls),
    }


def floor_percent(counts: dict[str, int], unit_us: dict[str, float], wall: float) -> float:
    """% of a core that `counts` frames (decoded, encoded, downsampled, upsampled) cost at `unit_us`."""
    busy_us = sum(counts[kind] * unit_us[kind] for kind in unit_us)
    return 100 * busy_us / 1e6 / wall
