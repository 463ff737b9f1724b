"""Idle cost: N calls connected to the fake Realtime service, nobody speaking, CPU per call as % of one core.

Run as `.venv/bin/python bench/bench_idle.py [N] [SECONDS] [REF]` (defaults 10 calls, 2 rounds of 6 s; about 90 s;
REF's tree, default eb19fa9, runs as one more mode, `none` skips it; run_all.py uses 40 calls).
Each figure comes from a fresh process pinned to one core, measured with getrusage after a warm-up, minus
a bare event loop measured the same way. The modes run in interleaved rounds, each cut into 2 windows, and
the quietest window of each mode counts (like the best-of timings in bench_audio.py: other load on the
machine only ever adds); the mean of all windows is printed beside it.
What runs per idle call is what Cap runs in Discord while nobody speaks (see rig.py): the mixer tick on the
shared 20 ms Metronome with no speaker (the engine stops the uplink 1.5 s into digital silence), the voice
socket's reader thread waiting, the call's send step asleep on the shared speaker thread after
EngineAudioSource's trailing Opus silence (a keepalive packet every 5 s), the session's housekeeping once a
second. Reference: bare 20 ms clocks, one asyncio ticker and one player thread per call doing nothing (the
floor of a design that ticks per call, as Cap did before: on this kind of machine every wake-up counts).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import before as before_tree
import rig
from discord import AudioSource, SpeakingState
from discord.player import AudioPlayer

from bot.voice.mixer import run_ticker
from bot.voice.source import OPUS_SILENCE

GOAL_PERCENT = 0.1  # issue 14 (was 0.2)
WARM_UP_SECONDS = 2.0
WINDOWS = 2
ROUNDS = 2


class _Silence(AudioSource):
    def __init__(self) -> None:
        self.closed = False

    def read(self) -> bytes:
        return b"" if self.closed else OPUS_SILENCE

    def is_opus(self) -> bool:
        return True


class _NullClient:
    """Just enough VoiceClient for AudioPlayer to tick; sends nothing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.client = type("C", (), {"loop": loop})()
        self.ws = type("W", (), {"speak": staticmethod(_no_speak)})()
        self.timeout = 5.0

    def is_connected(self) -> bool:
        return True

    def send_audio_packet(self, data: bytes, *, encode: bool = True) -> None:
        return None


async def _no_speak(state: SpeakingState) -> None:
    return None


async def _measure(seconds: float) -> dict[str, float]:
    """CPU share over the quietest of WINDOWS windows: other load on the machine only ever adds to it."""
    await asyncio.sleep(WARM_UP_SECONDS)
    shares = []
    for _ in range(WINDOWS):
        cpu, wall = rig.cpu_seconds(), time.perf_counter()
        await asyncio.sleep(seconds / WINDOWS)
        shares.append((rig.cpu_seconds() - cpu) / (time.perf_counter() - wall))
    return {"share": min(shares), "mean_share": statistics.mean(shares)}


async def child(mode: str, calls: int, seconds: float) -> dict[str, float]:
    rig.pin_to_core()
    if mode == "baseline":
        return await _measure(seconds)
    if mode == "clocks":
        loop = asyncio.get_running_loop()
        tickers = [asyncio.create_task(run_ticker(lambda: None)) for _ in range(calls)]
        sources = [_Silence() for _ in range(calls)]
        players = [AudioPlayer(source, _NullClient(loop)) for source in sources]  # type: ignore[arg-type]
        for player in players:
            player.start()
        try:
            return await _measure(seconds)
        finally:
            for ticker in tickers:
                ticker.cancel()
            for source in sources:
                source.closed = True
    async with rig.FarSide() as far:
        rig_calls = await rig.open_calls(calls, far)
        try:
            result = await _measure(seconds)
            result["silent_ticks"] = sum(call.source.frames_silent for call in rig_calls)
            return result
        finally:
            await rig.close_calls(rig_calls)


def run_child(mode: str, calls: int, seconds: float, before: Path | None = None) -> dict[str, float]:
    """One mode in a fresh process; mode "before" is Cap in the `before` tree (before_tree.py)."""
    if mode == "before":
        return rig.run_child(before_tree.script("bench_idle.py", before), "cap", calls, seconds)
    return rig.run_child(__file__, mode, calls, seconds)


def measure(calls: int = 10, seconds: float = 6.0, rounds: int = ROUNDS, before: Path | None = None) -> list[rig.Row]:
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "clocks": [], "cap": []}
    if before is not None:
        runs["before"] = []
    for _ in range(rounds):  # interleaved, so a noisy spell of the machine does not hit one mode only
        for mode, results in runs.items():
            results.append(run_child(mode, calls, seconds, before))
    base, clocks, cap = (min(runs[mode], key=lambda r: r["share"]) for mode in ("baseline", "clocks", "cap"))
    mean = {mode: statistics.mean(r["mean_share"] for r in results) for mode, results in runs.items()}

    def per_call(share: float, base_share: float) -> float:
        return (share - base_share) * 100 / calls

    cap_pct, clock_pct = per_call(cap["share"], base["share"]), per_call(clocks["share"], base["share"])
    mean_pct = per_call(mean["cap"], mean["baseline"])
    reference = f"a bare 20 ms ticker + player thread per call: {clock_pct:.3f} %"
    if before is not None:
        old = min(runs["before"], key=lambda r: r["share"])
        reference = (f"before issue 14, same run: {per_call(old['share'], base['share']):.3f} % "
                     f"(mean {per_call(mean['before'], mean['baseline']):.3f} %); {reference}")
    return [rig.Row(
        f"2. idle CPU per connected call ({calls} calls, nobody speaking)",
        f"{cap_pct:.3f} % of a core (quietest {seconds / WINDOWS:.2g} s; mean of {rounds * seconds:.0f} s "
        f"{mean_pct:.3f} %)",
        reference,
        f"≤ {GOAL_PERCENT} %",
        cap_pct <= GOAL_PERCENT,
    )]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, calls, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        rig.count_errors()
        result = asyncio.run(child(mode, calls, seconds))
        print(json.dumps({**result, "log_errors": rig.logged_errors()}))
        return
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 6.0
    before = before_tree.tree(sys.argv[3] if len(sys.argv) > 3 else before_tree.BEFORE_REF)
    rig.print_rows(measure(calls, seconds, before=before))


if __name__ == "__main__":
    main()
