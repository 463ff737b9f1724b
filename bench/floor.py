"""The floor of a call's CPU: Opus decode + encode + resampling alone, per 20 ms frame, measured now.

bench_concurrency.py counts the frames a run decoded, encoded and resampled, and prices them with these
figures (taken in the same child, on the same core, once the calls are closed) to state Cap's per-call cost
against what the codec and the resamplers alone would cost at the same duty cycle. Each unit is priced with
the code Cap runs: decode with `bot.voice.opus_decoder.OpusDecoder` (what `SpeakerDecoder` uses, about half
the cost of discord.py's `opus.Decoder`), encode with Cap's `speech_encoder()`, so the floor is neither
inflated by a slower decoder than Cap's nor flattered by a faster one.
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from pathlib import Path

from bot.voice.opus_decoder import OpusDecoder
from bot.voice.source import speech_encoder
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


def costs() -> dict[str, float]:
    """µs per 20 ms frame of speech: Opus decode (a caller's packet, Cap's decoder), Opus encode (Cap's encoder),
    Downsampler (caller -> Realtime), Upsampler (Realtime -> Discord)."""
    frames = speech_frames()
    encoder = speech_encoder()
    packets = [encoder.encode(frame, 960) for frame in frames]
    decoder, down, up = OpusDecoder(), Downsampler(), Upsampler()
    pcm24 = [down.process(frame)[:REALTIME_FRAME_BYTES].ljust(REALTIME_FRAME_BYTES, b"\0") for frame in frames]
    cycle = {"decode": iter(packets * 100), "encode": iter(frames * 100), "down": iter(frames * 100),
             "up": iter(pcm24 * 100)}
    calls = min(len(frames), 100)
    return {
        "decode": _best_us(lambda: decoder.decode(next(cycle["decode"])), calls),
        "encode": _best_us(lambda: encoder.encode(next(cycle["encode"]), 960), calls),
        "down": _best_us(lambda: down.process(next(cycle["down"])), calls),
        "up": _best_us(lambda: up.process(next(cycle["up"])), calls),
    }


def floor_percent(counts: dict[str, int], unit_us: dict[str, float], wall: float) -> float:
    """% of a core that `counts` frames (decoded, encoded, downsampled, upsampled) cost at `unit_us`."""
    busy_us = sum(counts[kind] * unit_us[kind] for kind in unit_us)
    return 100 * busy_us / 1e6 / wall
