"""Concurrency: how many simultaneous conversations one core carries with under 0.5 % late playback frames.

Run as `.venv/bin/python bench/bench_concurrency.py [SECONDS] [REF]` (default 6 s measured per N; about 8 minutes
with the tree before issue 14 (REF, default eb19fa9; `none`: only this tree) run in pairs, see before.py).
`--dave-cost` instead compares Cap's core load at 32 conversations with DAVE off and on (bench/dave_rig.py: a real
MLS group per call), runs interleaved so a busy machine hits both alike (about 1.5 minutes).
Each N runs in a fresh process pinned to one core: N calls over the whole Discord path of rig.py (reader
thread, decrypt, jitter buffer, Opus decode, mixer, engine, Opus encode, encrypt, the shared speaker
threads), against the fake Realtime service and the fake voice relay on the other cores. Every caller talks
in turns with Cap: a fixture sentence, Cap's 3 s spoken reply, the other sentence, and so on; the callers
start spread over the first seconds. A playback frame is late when the speaker thread sends it more than
20 ms after its slot on that thread's own grid. A run passes with < 0.5 % late frames provided Cap kept the
conversations' pace (it played at least 80 % as many frames per call as in the smallest run: an overloaded
Cap answers late, plays less, and would flatter the count). N doubles from 8 until a run fails, then is
bisected; a failing N (late frames or uplink p99) runs twice and the better run counts (one stall of a shared
machine should not decide).
Playback runs on the speaker threads, so it can stay on time while the event loop falls behind; the
runs also record the uplink lag (frame due on the 20 ms grid -> append on the socket: appends are written
from the tick, so the tick's own lateness is what this measures), and the table gives the largest N run
whose lag stayed within the 25 ms goal at the 99th percentile as well.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import before as before_tree
import dave_rig
import floor
import rig

from realtime.audio import REALTIME_PCM

LATE_LIMIT_PERCENT = 0.5
UPLINK_P99_LIMIT_MS = 25.0
SUSTAINED_SHARE = 0.8
GOAL_CALLS = 25
STEADY_GOAL_CALLS = 50  # issue 14: twice the calls per core with the event loop keeping up
FLOOR_RATIO_GOAL = 1.5  # issue 14: Cap's per-call CPU within 1.5x of codec + resampling alone
FLOOR_N = 32  # compared at the N the issue profiled: busy, not saturated (a saturated Cap slows the talk)
FLOOR_RUNS = 3
FIRST_N = 8
MAX_N = 256
STAGGER_SECONDS = 4.0
WARM_UP_SECONDS = STAGGER_SECONDS + 1.0
CONVERSATION: list[list[Any]] = [
    ["say", "hello.wav", None, None], ["await_audible", 1], ["await_quiet", 0.6],
    ["say", "question.wav", None, None], ["await_audible", 1], ["await_quiet", 0.6],
]


async def child(calls: int, seconds: float, dave: bool = False) -> dict[str, Any]:
    rig.pin_to_core()
    async with rig.FarSide({"reply": ["hello.wav"]}) as far:
        rigs = await rig.open_calls(calls, far, probed=True)
        try:
            if dave:
                for call in rigs:
                    await dave_rig.join_dave(far, call)
            for index, call in enumerate(rigs):
                await rig.add_caller(far, call, CONVERSATION, repeat=True, start_after=STAGGER_SECONDS * index / calls)
            await asyncio.sleep(WARM_UP_SECONDS)
            for call in rigs:
                call.client.reset_counts()
                call.session.probe.uplink_lags.clear()  # type: ignore[attr-defined]
            counted = frame_counts(rigs)
            cpu, far_cpu, wall = rig.cpu_seconds(), far.cpu_seconds(), time.perf_counter()
            await asyncio.sleep(seconds)
            cpu, wall = rig.cpu_seconds() - cpu, time.perf_counter() - wall
            counted = {kind: count - counted[kind] for kind, count in frame_counts(rigs).items()}
            far_cpu = {name: 100 * (used - far_cpu[name]) / wall for name, used in far.cpu_seconds().items()}
            ticks = sum(call.client.ticks for call in rigs)
            late = sum(call.client.late for call in rigs)
            lags = [lag for call in rigs for lag in call.session.probe.uplink_lags]  # type: ignore[attr-defined]
            return {
                "calls": calls,
                "ticks": ticks,
                "late": late,
                "late_percent": 100 * late / max(1, ticks),
                "worst_ms": rig.ms(max(call.client.worst_lateness for call in rigs)),
                "cpu_percent": 100 * cpu / wall,
                "uplink_median_ms": rig.ms(statistics.median(lags)) if lags else None,
                "uplink_p99_ms": rig.ms(statistics.quantiles(lags, n=100)[98]) if len(lags) > 1 else None,
                "uplink_max_ms": rig.ms(max(lags)) if lags else None,
                "turns": sum(call.session.metrics.turns for call in rigs),
                "far_side_percent": far_cpu,
                "frames": counted,
                "wall": wall,
                "dave": dave,
                "dave_decrypted": sum(call.receiver.stats().get("dave_decrypted", 0) for call in rigs),
            }
        finally:
            await rig.close_calls(rigs)


def frame_counts(rigs: list[rig.CallRig]) -> dict[str, int]:
    """Frames so far that the floor prices: caller packets decoded, Cap's frames encoded, caller frames
    downsampled for the uplink (digital silence, which needs no converter, not), and Cap's frames upsampled
    (none on Cap's Discord path: libopus encodes the Realtime API's 24 kHz mono as it is)."""
    encoded = sum(call.source.frames_encoded for call in rigs)
    uplinked = sum(call.session.conversation.uplinked_ms for call in rigs) // 20
    skipped = sum(call.session.conversation._to_realtime.silent_frames_skipped for call in rigs)
    upsampled = sum(call.source.frames_encoded for call in rigs if call.session.transport_audio.spoken != REALTIME_PCM)
    return {"decode": sum(call.receiver.stats()["decoded"] for call in rigs), "encode": encoded, "up": upsampled,
            "down": uplinked - skipped}


async def child_with_floor(calls: int, seconds: float, dave: bool = False) -> dict[str, Any]:
    """A run, then the floor of its frame counts measured on the same core once the calls are closed: run alone
    as N calls on the 20 ms grid (the issue's floor), and priced at hot-loop costs per frame."""
    result = await child(calls, seconds, dave)
    result["paced_floor_percent"] = floor.paced_percent(result["frames"], result["wall"], calls,
                                                        min(floor.PACED_SECONDS, seconds))
    unit_us = floor.costs()
    result["floor_percent"] = floor.floor_percent(result["frames"], unit_us, result["wall"])
    result["floor_unit_us"] = unit_us
    return result


def run_child(calls: int, seconds: float, before: Path | None = None, dave: bool = False) -> dict[str, Any]:
    """One N in a fresh process: this tree's child (DAVE on or off), or the `before` tree's."""
    extra = (1,) if dave else ()
    return rig.run_child(before_tree.script("bench_concurrency.py", before), calls, seconds, *extra)


def sustained(result: dict[str, Any], reference: dict[str, Any]) -> bool:
    """The conversations kept their pace: Cap played at least SUSTAINED_SHARE of the frames per call that it
    played in the smallest run. An overloaded Cap answers late and so plays less, which would flatter the
    late-frame count."""
    rate = result["ticks"] / result["calls"]
    return rate >= SUSTAINED_SHARE * reference["ticks"] / reference["calls"]


def passes(result: dict[str, Any], reference: dict[str, Any]) -> bool:
    return result["ticks"] > 0 and result["late_percent"] < LATE_LIMIT_PERCENT and sustained(result, reference)


def largest(predicate: Any, results: dict[int, dict[str, Any]], run: Any, tolerance: float) -> int:
    """Largest N whose run satisfies `predicate`: double from FIRST_N, then bisect until the bracket is within
    `tolerance` (a fraction of N, at least 2 calls). Runs already in `results` are reused."""

    def ok(n: int) -> bool:
        if n not in results:
            results[n] = run(n)
        return predicate(results[n])

    good, bad, n = 0, None, FIRST_N
    while n <= MAX_N:
        if not ok(n):
            bad = n
            break
        good, n = n, n * 2
    if bad is None:
        return good
    while bad - good > max(2, int(good * tolerance)):
        middle = (good + bad) // 2
        if ok(middle):
            good = middle
        else:
            bad = middle
    return max(n for n in [good, *results] if n < bad and (n == good or predicate(results[n])))


def search(seconds: float, log: Any = None, before: Path | None = None) -> dict[str, Searched]:
    """Per variant ("after": this tree; "before": the `before` tree, if given): N with < 0.5 % late frames (to
    10 %), N that also keeps the uplink p99 within 25 ms (to 25 %), and every run. The variants run in pairs,
    back to back at each N either search asks for, so a noisy spell of the machine hits both."""
    trees = {"after": None, **({"before": before} if before is not None else {})}
    results: dict[str, dict[int, dict[str, Any]]] = {variant: {} for variant in trees}

    def run_one(variant: str, n: int) -> dict[str, Any]:
        result = run_child(n, seconds, trees[variant])
        if log:
            log(f"{variant:>6} " + describe(result))
        reference = results[variant].get(FIRST_N)
        if reference is not None and n != FIRST_N and not keeps_up(result, reference):
            # One stall of a shared machine can fail a run, on late frames or on the uplink's p99 alike.
            again = run_child(n, seconds, trees[variant])
            if log:
                log(f"{variant:>6} " + describe(again) + " (again)")
            result = max(result, again, key=lambda r: (passes(r, reference), keeps_up(r, reference),
                                                       -r["late_percent"]))
        return result

    def runner(variant: str) -> Any:
        def run(n: int) -> dict[str, Any]:
            for other in trees:  # the pair: this variant's run, and the other's at the same N if not run yet
                if other != variant and n not in results[other]:
                    results[other][n] = run_one(other, n)
            return run_one(variant, n)
        return run

    searched = {}
    for variant in trees:
        mine = results[variant]
        best = largest(lambda r, mine=mine: passes(r, mine[FIRST_N]), mine, runner(variant), 0.1)
        steady = largest(lambda r, mine=mine: keeps_up(r, mine[FIRST_N]), mine, runner(variant), 0.25)
        searched[variant] = Searched(best, steady, mine)
    return searched


@dataclass(frozen=True)
class Searched:
    best: int
    steady: int
    results: dict[int, dict[str, Any]]


def keeps_up(result: dict[str, Any], reference: dict[str, Any]) -> bool:
    return passes(result, reference) and (result["uplink_p99_ms"] or 0.0) <= UPLINK_P99_LIMIT_MS


def describe(r: dict[str, Any]) -> str:
    uplink = (f"uplink lag median {r['uplink_median_ms']:.1f} / p99 {r['uplink_p99_ms']:.1f} / "
              f"max {r['uplink_max_ms']:.1f} ms" if r["uplink_p99_ms"] is not None else "no uplink")
    far = ", ".join(f"{name} {percent:.0f} %" for name, percent in r["far_side_percent"].items())
    return (f"  N={r['calls']:>3}: {r['late']}/{r['ticks']} playback frames late ({r['late_percent']:.2f} %; "
            f"{r['ticks'] / r['calls']:.0f} per call), "
            f"worst {r['worst_ms']:.0f} ms; Cap's core {r['cpu_percent']:.0f} % busy; {uplink}; "
            f"{r['turns']} turns; far side {far}")


def measure(seconds: float = 6.0, log: Any = None, before: Path | None = None) -> list[rig.Row]:
    searched = search(seconds, log, before)
    after = searched["after"]
    best, steady_n, results = after.best, after.steady, after.results
    smallest = results[min(results)]
    at_best = results.get(best)
    above = [n for n in results if n > best]
    figure = f"N = {best}"
    if at_best:
        figure += f" ({at_best['late']}/{at_best['ticks']} = {at_best['late_percent']:.2f} % late)"
    if above:
        first_fail = results[min(above)]
        figure += f"; N = {first_fail['calls']}: {first_fail['late_percent']:.2f} %"
        if not sustained(first_fail, smallest):
            pace = first_fail["ticks"] / first_fail["calls"] / (smallest["ticks"] / smallest["calls"])
            figure += f", but only {100 * pace:.0f} % of the conversations' pace"
    reference = f"Cap's core {smallest['cpu_percent']:.0f} % busy at N = {smallest['calls']}"
    if at_best:
        reference += f", {at_best['cpu_percent']:.0f} % at N = {best}"
    next_tried = min((n for n in results if n > steady_n), default=None)
    steady_figure = f"N = {steady_n} (uplink p99 {results[steady_n]['uplink_p99_ms']:.0f} ms)" if steady_n else "none"
    steady_reference = "largest N run"
    if next_tried is not None and results[next_tried]["uplink_p99_ms"] is not None:
        steady_reference = f"next N run: {next_tried}, uplink p99 {results[next_tried]['uplink_p99_ms']:.0f} ms"
    old = searched.get("before")
    if old is not None:
        old_smallest = old.results[min(old.results)]
        reference = (f"before issue 14, same run: N = {old.best}; {reference}; before: "
                     f"{old_smallest['cpu_percent']:.0f} % at N = {old_smallest['calls']}")
        old_p99 = old.results[old.steady]["uplink_p99_ms"] if old.steady else None
        steady_reference = (f"before issue 14, same run: N = {old.steady}"
                            + (f" (uplink p99 {old_p99:.0f} ms)" if old_p99 is not None else "")
                            + f"; {steady_reference}")
    return [
        rig.Row("3. simultaneous conversations on one core with < 0.5 % late playback frames", figure, reference,
                f"≥ {GOAL_CALLS}", best >= GOAL_CALLS),
        rig.Row("3b. ... with the uplink lag's 99th percentile also ≤ 25 ms (the event loop keeps up)",
                steady_figure, steady_reference, f"≥ {STEADY_GOAL_CALLS}", steady_n >= STEADY_GOAL_CALLS),
        floor_row(floor_runs(results, seconds, log)),
    ]


def floor_runs(results: dict[int, dict[str, Any]], seconds: float, log: Any = None) -> list[dict[str, Any]]:
    """FLOOR_RUNS runs at FLOOR_N (the search's own run among them): one run's ratio moves by ~0.15 on this VM."""
    runs = [results[FLOOR_N]] if FLOOR_N in results else []
    while len(runs) < FLOOR_RUNS:
        runs.append(run_child(FLOOR_N, seconds))
        if log:
            log(" floor " + describe(runs[-1]))
    return runs


def floor_row(runs: list[dict[str, Any]]) -> rig.Row:
    """Cap's CPU against the floor (the same frames' Opus decode + encode + resampling alone, as N calls on the
    20 ms grid): the median run, with the same frames priced at hot-loop costs beside it."""
    def ratio(run: dict[str, Any]) -> float:
        return run["cpu_percent"] / run["paced_floor_percent"]

    result = sorted(runs, key=ratio)[len(runs) // 2]
    unit = result["floor_unit_us"]
    frames = result["frames"]
    return rig.Row(
        f"3c. CPU of N = {result['calls']} talking calls against the floor (their frames' Opus decode + encode + "
        "resampling alone, as N calls on the 20 ms grid)",
        f"Cap's core {result['cpu_percent']:.0f} % busy = {ratio(result):.2f}x the floor of "
        f"{result['paced_floor_percent']:.0f} % (median of {len(runs)} runs: "
        + ", ".join(f"{ratio(run):.2f}x" for run in sorted(runs, key=ratio)) + ")",
        f"the same frames at hot-loop costs: {result['floor_percent']:.0f} % = "
        f"{result['cpu_percent'] / result['floor_percent']:.2f}x ({frames['decode']} decodes x "
        f"{unit['decode']:.0f} µs, {frames['encode']} encodes x {unit['encode']:.0f} µs, {frames['up']} "
        f"upsamplings x {unit['up']:.0f} µs, {frames['down']} downsamplings x {unit['down']:.0f} µs in "
        f"{result['wall']:.1f} s)",
        f"≤ {FLOOR_RATIO_GOAL}x", ratio(result) <= FLOOR_RATIO_GOAL)


def dave_cost(calls: int = 32, seconds: float = 6.0, rounds: int = 3, log: Any = None) -> list[rig.Row]:
    """Cap's core load at a fixed N with DAVE off and on, runs interleaved so a busy machine hits both alike."""
    busy: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for dave in (False, True):
            result = run_child(calls, seconds, dave=dave)
            if log:
                log(describe(result))
            if dave and not result["dave_decrypted"]:
                raise RuntimeError("a DAVE-on run opened no DAVE frame: the figures would be DAVE off")
            busy[dave].append(result["cpu_percent"])
    off, on = statistics.median(busy[False]), statistics.median(busy[True])
    return [rig.Row(f"3e. Cap's core busy with {calls} conversations, DAVE on (median of {rounds}, interleaved)",
                    f"{on:.1f} % ({on - off:+.1f} points)", f"DAVE off: {off:.1f} %")]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        rig.count_errors()
        dave = len(sys.argv) > 4 and sys.argv[4] == "1"
        result = asyncio.run(child_with_floor(int(sys.argv[2]), float(sys.argv[3]), dave))
        print(json.dumps({**result, "log_errors": rig.logged_errors()}))
        return
    if "--dave-cost" in sys.argv:
        args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
        rig.print_rows(dave_cost(seconds=float(args[0]) if args else 6.0, log=print))
        return
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
    before = before_tree.tree(sys.argv[2] if len(sys.argv) > 2 else before_tree.BEFORE_REF)
    rig.print_rows(measure(seconds, log=print, before=before))


if __name__ == "__main__":
    main()
