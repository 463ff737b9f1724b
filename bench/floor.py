"""The floor of a call's CPU: Opus decode + encode + resampling alone, per 20 ms frame, measured now.

bench_concurrency.py counts the frames a run decoded, encoded and resampled, and prices them with these
figures (taken in the same child, on the same core, once the calls are closed) to state Cap's per-call cost
against what the codec and the resamplers alone would cost at the same duty cycle. Each unit is priced with
the code Cap runs: decode a Discord client's 48 kHz stereo packet with `bot.voice.opus_decoder.OpusDecoder` at
HEARD_PCM (48 kHz mono, what `SpeakerDecoder` uses), downsample that mono frame for the uplink, and encode the
Realtime API's 24 kHz mono as it is (SPOKEN_PCM) with Cap's `speech_encoder()`, so the floor is neither inflated
by a slower codec than Cap's nor flattered by a faster one. Cap's Discord path upsamples nothing, so its runs
count no `up` frames (still priced, for a transport that plays 48 kHz stereo).

`costs()` prices frames in a hot loop: one decoder, one converter, one encoder, each run back to back. A call's
codec work does not run like that: every 20 ms each call's own decoder, converter and encoder runs once and the
core then waits for the next tick, so their state and code are cold again by then. `paced_percent()` is the
floor as issue 14 defines it, "Opus decode + encode + resampling alone for N calls at the same duty cycle": the
run's frames, spread over N calls' own codec objects on the 20 ms grid, alone on one thread, its CPU measured.
On this VM it costs ~1.15-1.55x the hot-loop price (more with fewer calls: the idle gaps are longer).
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from pathlib import Path

from discord import opus

from bot.voice.grid import TICK_SECONDS, Grid
from bot.voice.opus_decoder import HEARD_PCM, SPOKEN_PCM, OpusDecoder
from bot.voice.source import ENCODER_SETTINGS, speech_encoder
from realtime.audio import FRAME_BYTES, REALTIME_FRAME_BYTES, Downsampler, Upsampler, to_discord_pcm

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
BATCHES = 5
TICKS_PER_SECOND = round(1 / TICK_SECONDS)
PACED_SECONDS = 3.0
PACED_WARM_UP_TICKS = 10
KINDS = ("decode", "encode", "down", "up")


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


def _inputs() -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The fixture as each unit's input: a client's packets (decode), their HEARD_PCM frames (downsampling) and
    the Realtime API's 24 kHz mono frames (encode, upsampling)."""
    packets = client_packets(speech_frames())
    decoder, down = OpusDecoder(HEARD_PCM), Downsampler(channels=HEARD_PCM.channels)
    heard = [decoder.decode(packet) for packet in packets]
    pcm24 = [down.process(frame)[:REALTIME_FRAME_BYTES].ljust(REALTIME_FRAME_BYTES, b"\0") for frame in heard]
    return packets, heard, pcm24


def costs() -> dict[str, float]:
    """µs per 20 ms frame of speech: Opus decode (a caller's packet, Cap's decoder at HEARD_PCM), Opus encode
    (Cap's encoder, SPOKEN_PCM in), Downsampler (HEARD_PCM -> Realtime), Upsampler (Realtime -> 48 kHz stereo)."""
    packets, heard, pcm24 = _inputs()
    encoder = speech_encoder()
    decoder, down, up = OpusDecoder(HEARD_PCM), Downsampler(channels=HEARD_PCM.channels), Upsampler()
    cycle = {"decode": iter(packets * 100), "encode": iter(pcm24 * 100), "down": iter(heard * 100),
             "up": iter(pcm24 * 100)}
    calls = min(len(packets), 100)
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


class _PacedCalls:
    """N calls' own codec objects, each fed its next fixture frame of a kind when the rotation reaches it."""

    def __init__(self, calls: int) -> None:
        self._packets, self._heard, self._pcm24 = _inputs()
        self._decoders = [OpusDecoder(HEARD_PCM) for _ in range(calls)]
        self._encoders = [speech_encoder() for _ in range(calls)]
        self._downs = [Downsampler(channels=HEARD_PCM.channels) for _ in range(calls)]
        self._ups = [Upsampler() for _ in range(calls)]
        self._calls = calls
        self._turn = dict.fromkeys(KINDS, 0)  # whose turn it is next, per kind
        self._position = [0] * calls  # each call's place in the fixture (its stream goes on frame by frame)

    def run(self, kind: str) -> None:
        call = self._turn[kind] % self._calls
        self._turn[kind] += 1
        at = self._position[call] % len(self._packets)
        self._position[call] += 1
        if kind == "decode":
            self._decoders[call].decode(self._packets[at])
        elif kind == "down":
            self._downs[call].process(self._heard[at])
        elif kind == "encode":
            self._encoders[call].encode(self._pcm24[at], SPOKEN_PCM.frame_samples)
        else:
            self._ups[call].process(self._pcm24[at])


def paced_percent(counts: dict[str, int], wall: float, calls: int, seconds: float = PACED_SECONDS) -> float:
    """% of a core that `counts` frames (over `wall` seconds) cost when run alone as `calls` calls run them: per
    20 ms tick, each kind's share of the frames on the calls' own codec objects in turn, then sleep to the next
    tick. Measured with this thread's CPU time, so call it with nothing else running in the process."""
    per_tick = {kind: counts[kind] / wall / TICKS_PER_SECOND for kind in KINDS}
    paced = _PacedCalls(calls)
    owed = dict.fromkeys(KINDS, 0.0)

    def tick() -> None:
        for kind in KINDS:
            owed[kind] += per_tick[kind]
            while owed[kind] >= 1:
                owed[kind] -= 1
                paced.run(kind)

    _on_the_grid(tick, PACED_WARM_UP_TICKS)  # the converters and encoders start; not counted
    cpu, wall_started = time.thread_time(), time.monotonic()
    _on_the_grid(tick, round(seconds * TICKS_PER_SECOND))
    return 100 * (time.thread_time() - cpu) / (time.monotonic() - wall_started)


def _on_the_grid(tick: Callable[[], None], ticks: int) -> None:
    """`tick()` on Cap's 20 ms grid, sleeping in between, as the speaker threads do."""
    grid = Grid(time.monotonic())
    for _ in range(ticks):
        tick()
        delay = grid.advance(time.monotonic())
        if delay > 0:
            time.sleep(delay)
