"""Soak: does Cap's memory stay flat over a long call? Growth per call per hour, talking calls against idle ones.

Run as `.venv/bin/python bench/bench_soak.py [CALLS] [SECONDS]` (defaults 4 calls, 180 s measured; ~3.5 min).
Four fresh processes run at the same time, each pinned to Cap's core with its far side on the others (rig.py):
- talk: CALLS calls over the whole Discord path of rig.py, every caller in turns with Cap (a fixture sentence,
  Cap's spoken reply, the other sentence, and 300 ms into that reply a barge-in that Cap answers in turn);
- idle (the reference): CALLS calls connected, nobody speaking, which is what "flat" looks like;
each once under tracemalloc (the Python heap, and where it grew) and once without it (the RSS: tracemalloc's
own record of every allocation fragments the C heap, and grows the RSS by itself).
Time cannot be compressed: the relay and Cap's player run on the real 20 ms grid, so the run measures
SECONDS of conversation and extrapolates the slope to an hour. The bounded stores of a conversation (the
replay history, the recent reply latencies) are pre-filled to their bounds first, as they are an hour into
a call; in a window of minutes their filling would look like a leak (its cost per call is printed).
After a warm-up, each process samples every INTERVAL_SECONDS, after a gc.collect(), one of:
- heap: the memory traced by tracemalloc (Python allocations since just before the first call), less the
  replies queued for playback (the fake service streams a 3 s reply, ~600 KB, at 10x real time: in flight);
- RSS: /proc/self/statm after glibc's malloc_trim, less the same queued audio; it also sees libopus,
  libsodium and the allocators' fragmentation.
Each figure is the least-squares slope in KB per call per hour (± 2 standard errors); the slope of the second
half is beside it, to tell a bounded structure still filling (it flattens) from a leak (it does not). The
allocation sites that grew most, by size, come from tracemalloc snapshots at the start and the end of the
window (innermost frame, plus the first frame in Cap's own code when the innermost is a library). The rig's
own timing lists (PlayerClient.spurt_starts, CallRig.resumed_at) are emptied at every sample and left out.
Not exercised: session recycling (every 50 min) and reconnects, tools, DAVE, the database, VoiceCall's tasks.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import rig

from realtime import conversation
from realtime.audio import FRAME_BYTES, FRAME_MS

GOAL_KB_PER_CALL_HOUR = 256.0  # the heap of an 8-hour call may grow by at most 2 MB
WARM_UP_SECONDS = 20.0
INTERVAL_SECONDS = 2.0
STAGGER_SECONDS = 4.0
TRACE_FRAMES = 10
TOP_SITES = 3
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# A queued playback frame: its bytes, the (item_id, frame) tuple and the deque slot.
QUEUED_FRAME_BYTES = sys.getsizeof(bytes(FRAME_BYTES)) + sys.getsizeof((None, None)) + 8
OWN_CODE = tuple(str(rig.ROOT / part) + os.sep for part in ("bot", "realtime"))
CONVERSATION: list[list[Any]] = [
    ["say", "hello.wav", None, None], ["await_audible", 1], ["await_quiet", 0.6],
    ["say", "question.wav", None, None], ["await_audible", 15], ["say", "question.wav", 40, "barge"],
    ["await_audible", 1], ["await_quiet", 0.6],
]
RUNS = (("talk", "heap"), ("idle", "heap"), ("talk", "rss"), ("idle", "rss"))

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)  # glibc: hand the free pages of every arena back
_STATM = os.open("/proc/self/statm", os.O_RDONLY)  # read in place: opening it each time leaves allocations


def rss_bytes() -> int:
    return int(os.pread(_STATM, 128, 0).split()[1]) * PAGE_BYTES


def prefill(rigs: Sequence[rig.CallRig]) -> None:
    """Fill each call's bounded stores to their bounds, as they are an hour into a call: the replay history
    (REPLAY_LIMIT utterances, told to the next session) and the recent reply latencies (a bounded deque)."""
    for call in rigs:
        for index in range(conversation.REPLAY_LIMIT):  # ids and texts shaped like the service's, each its own
            user = index % 2 == 0
            text = (b"Hello." if user else b"Happy to help with that.").decode()
            call.session.conversation._remember(f"item_{index:021d}", "user" if user else "assistant", text)
        latencies = call.session.metrics.reply_latency_ms
        latencies.extend(float(index) for index in range(latencies.maxlen or 0))


def where(filename: str, lineno: int) -> str:
    path = Path(filename)
    with_root = path.is_relative_to(rig.ROOT) and ".venv" not in path.parts
    shown = path.relative_to(rig.ROOT) if with_root else Path(*path.parts[-2:])
    return f"{shown}:{lineno}"


def snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, rig.__file__),  # the rig's own timing lists
    ])


def grown_sites(start: tracemalloc.Snapshot, end: tracemalloc.Snapshot) -> tuple[list[dict[str, Any]], int]:
    """The allocation sites (innermost frame) that grew most by size, each with the first frame in Cap's code
    on its largest-growing call stack; and the change in bytes allocated here (the pre-filled entries that new
    ones pushed out of the bounded stores: their replacements count at Cap's sites)."""
    sites: dict[str, dict[str, Any]] = {}
    own_bytes = 0
    for stat in end.compare_to(start, "traceback"):
        frames = list(stat.traceback)  # oldest first
        if frames[-1].filename == __file__:
            own_bytes += stat.size_diff
            continue
        site = where(frames[-1].filename, frames[-1].lineno)
        entry = sites.setdefault(site, {"site": site, "bytes": 0, "blocks": 0, "via": None, "_best": None})
        entry["bytes"] += stat.size_diff
        entry["blocks"] += stat.count_diff
        if entry["_best"] is None or stat.size_diff > entry["_best"]:
            entry["_best"] = stat.size_diff
            own = next((f for f in reversed(frames) if f.filename.startswith(OWN_CODE)), None)
            entry["via"] = where(own.filename, own.lineno) if own is not None and own is not frames[-1] else None
    top = sorted((s for s in sites.values() if s["bytes"] > 0), key=lambda s: s["bytes"], reverse=True)
    return [{k: v for k, v in s.items() if k != "_best"} for s in top[:TOP_SITES]], own_bytes


async def child(mode: str, probe: str, calls: int, seconds: float) -> dict[str, Any]:
    rig.pin_to_core()
    heap = probe == "heap"
    if heap:
        tracemalloc.start(TRACE_FRAMES)
    async with rig.FarSide({"reply": ["hello.wav"]}) as far:
        rigs = await rig.open_calls(calls, far)
        # Rows of (seconds, memory less queued playback, memory) in an array allocated once: a list growing by
        # a row per sample would be growth too.
        columns, rows = 3, int(seconds / INTERVAL_SECONDS) + 3
        table = array("d", bytes(8 * columns * rows))
        taken = replies = 0

        def sample(t0: float) -> None:
            nonlocal replies, taken
            for call in rigs:  # the rig's timing lists grow per reply; they are not Cap's
                replies += len(call.client.spurt_starts)
                call.client.spurt_starts.clear()
                call.resumed_at.clear()
            gc.collect()
            in_flight = sum(call.session.playback.queued_ms() for call in rigs) // FRAME_MS * QUEUED_FRAME_BYTES
            if heap:
                memory = tracemalloc.get_traced_memory()[0]
            else:
                if _MALLOC_TRIM is not None:
                    _MALLOC_TRIM(0)
                memory = rss_bytes()
            table[taken * columns:(taken + 1) * columns] = array(
                "d", (time.perf_counter() - t0, memory - in_flight, memory))
            taken += 1

        try:
            gc.collect()
            unfilled = tracemalloc.get_traced_memory()[0]
            prefill(rigs)
            gc.collect()
            fill_kb = (tracemalloc.get_traced_memory()[0] - unfilled) / 1024 / calls
            if mode == "talk":
                for index, call in enumerate(rigs):
                    await rig.add_caller(far, call, CONVERSATION, repeat=True,
                                         start_after=STAGGER_SECONDS * index / calls)
            await asyncio.sleep(WARM_UP_SECONDS)
            metrics = [call.session.metrics for call in rigs]
            turns, barge_ins = sum(m.turns for m in metrics), sum(m.barge_ins for m in metrics)
            if heap:
                snapshot()  # once before the window: the filters' patterns are compiled and cached now
            t0 = time.perf_counter()
            sample(t0)
            replies = taken = 0
            start = snapshot() if heap else None
            sample(t0)
            while table[(taken - 1) * columns] < seconds and taken < rows:
                await asyncio.sleep(min(INTERVAL_SECONDS, seconds - table[(taken - 1) * columns]))
                sample(t0)
            sites, evicted = grown_sites(start, snapshot()) if start is not None else ([], 0)
            return {
                "mode": mode,
                "probe": probe,
                "calls": calls,
                "samples": [list(table[i * columns:(i + 1) * columns]) for i in range(taken)],
                "sites": sites,
                "turns": sum(m.turns for m in metrics) - turns,
                "barge_ins": sum(m.barge_ins for m in metrics) - barge_ins,
                "replies": replies,
                "history": [len(call.session.conversation._history) for call in rigs],
                "fill_kb": fill_kb,
                "evicted_kb": evicted / 1024,
            }
        finally:
            await rig.close_calls(rigs)


def run_child(mode: str, probe: str, calls: int, seconds: float) -> dict[str, Any]:
    return rig.run_child(__file__, mode, probe, calls, seconds)


def kb_per_call_hour(samples: list[list[float]], column: int, calls: int) -> tuple[float, float]:
    """Least-squares slope in KB per call-hour, and its standard error."""
    if len(samples) < 3:
        return float("nan"), float("nan")
    xs, ys = [s[0] for s in samples], [s[column] for s in samples]
    fit = statistics.linear_regression(xs, ys)
    mean_x = statistics.fmean(xs)
    residual = sum((y - fit.intercept - fit.slope * x) ** 2 for x, y in zip(xs, ys, strict=True)) / (len(xs) - 2)
    error = (residual / sum((x - mean_x) ** 2 for x in xs)) ** 0.5
    scale = 3600 / 1024 / calls
    return fit.slope * scale, error * scale


def growth(result: dict[str, Any], column: int = 1) -> dict[str, float]:
    """Slope (± standard error) over the whole window and over its second half, KB per call-hour; net KB."""
    samples, calls = result["samples"], result["calls"]
    slope, error = kb_per_call_hour(samples, column, calls)
    late = kb_per_call_hour(samples[len(samples) // 2:], column, calls)[0]
    net = (samples[-1][column] - samples[0][column]) / 1024
    return {"slope": slope, "error": error, "late": late, "net": net, "now": samples[-1][column] / 2**20}


def per_minute(result: dict[str, Any]) -> str:
    """KB per call above the first sample, about once a minute."""
    samples, calls = result["samples"], result["calls"]
    marks, next_at = [], 0.0
    for sample in samples:
        if sample[0] >= next_at:
            marks.append(f"{(sample[1] - samples[0][1]) / 1024 / calls:+.0f}")
            next_at += 60
    return " ".join(marks)


def figure(g: dict[str, float]) -> str:
    return f"{g['slope']:+.0f} ± {2 * g['error']:.0f} KB per call-hour (2nd half {g['late']:+.0f})"


def describe(result: dict[str, Any]) -> str:
    memory, raw = growth(result, 1), growth(result, 2)
    what = "heap (tracemalloc)" if result["probe"] == "heap" else "RSS after malloc_trim"
    text = (f"{result['mode']} {result['probe']}: {result['calls']} calls, {result['samples'][-1][0]:.0f} s, "
            f"{result['turns']} turns, {result['replies']} replies played, {result['barge_ins']} barge-ins; "
            f"{what} {figure(memory)}; net {memory['net']:+.0f} KB, now {memory['now']:.1f} MB; "
            f"KB per call by minute {per_minute(result)}; counting queued playback {raw['slope']:+.0f}")
    if result["probe"] == "heap":
        text += (f"; bounded stores pre-filled ({result['fill_kb']:.0f} KB per call; replay history at the end "
                 f"{'/'.join(map(str, result['history']))} entries)")
    return text


def measure(calls: int = 4, seconds: float = 180.0,
            log: Callable[[str], None] | None = None) -> tuple[list[rig.Row], list[str]]:
    with ThreadPoolExecutor(len(RUNS)) as pool:  # at once, so the window is the same for all four
        futures = {run: pool.submit(run_child, *run, calls, seconds) for run in RUNS}
        results = {run: future.result() for run, future in futures.items()}
    if log:
        for result in results.values():
            log("  " + describe(result))
    talk, ref = results["talk", "heap"], results["idle", "heap"]
    heap, rss = growth(talk), growth(results["talk", "rss"])
    minutes = talk["samples"][-1][0] / 60
    rows = [
        rig.Row(f"7. memory growth per talking call: Python heap (tracemalloc; {calls} calls, {minutes:.0f} min, "
                f"{talk['turns']} turns, {talk['barge_ins']} barge-ins)",
                figure(heap), f"idle calls: {figure(growth(ref))}",
                f"≤ {GOAL_KB_PER_CALL_HOUR:.0f} KB", heap["slope"] <= GOAL_KB_PER_CALL_HOUR),
        rig.Row(f"7b. ... resident set (RSS after malloc_trim, without tracemalloc; "
                f"{results['talk', 'rss']['turns']} turns)",
                figure(rss), f"idle calls: {figure(growth(results['idle', 'rss']))}", "—"),
    ]
    notes = []
    for result in (talk, ref):
        for site in result["sites"]:
            via = f" (via {site['via']})" if site["via"] else ""
            notes.append(f"{result['mode']}: {site['site']}{via} grew {site['bytes'] / 1024:+.1f} KB "
                         f"in {site['blocks']:+d} blocks")
        notes.append(f"{result['mode']}: pre-filled entries pushed out of the bounded stores by new ones: "
                     f"{result['evicted_kb']:+.1f} KB")
    return rows, notes


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        rig.count_errors()
        result = asyncio.run(child(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
        print(json.dumps({**result, "log_errors": rig.logged_errors()}))
        return
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 180.0
    rows, notes = measure(calls, seconds, log=lambda text: print(text, file=sys.stderr, flush=True))
    rig.print_rows(rows)
    print()
    print(f"Largest growing allocation sites over the window (top {TOP_SITES} by size):")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
