"""Mixer ticks and the drift-free 20 ms ticker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from bot.voice.mixer import Metronome, Mixer, metronome, run_ticker
from bot.voice.opus_decoder import HEARD_PCM


def constant(value: int) -> bytes:
    return np.full(HEARD_PCM.frame_bytes // 2, value, "<i2").tobytes()


def test_silence_and_no_speakers_when_nobody_talks() -> None:
    mixer = Mixer(dict)
    assert mixer.tick() == (HEARD_PCM.silence, frozenset())


def test_sums_speakers_with_saturation_and_names_them() -> None:
    frames = {1: constant(20_000), 2: constant(20_000), 3: constant(-100)}
    frame, speakers = Mixer(lambda: frames).tick()
    assert speakers == frozenset({1, 2, 3})
    assert len(frame) == HEARD_PCM.frame_bytes
    assert set(np.frombuffer(frame, "<i2")) == {32767}  # clipped, not wrapped to negative

    frame, speakers = Mixer(lambda: {7: constant(123)}).tick()
    assert (frame, speakers) == (constant(123), frozenset({7}))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


async def run_for(ticks: int, clock: FakeClock, work: list[float]) -> list[float]:
    """Run the ticker until `ticks` calls; work[i] is how long tick i takes. Returns tick times."""
    times: list[float] = []

    def on_tick() -> None:
        times.append(clock.now)
        clock.now += work[len(times) - 1] if len(times) - 1 < len(work) else 0.001
        if len(times) == ticks:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run_ticker(on_tick, clock=clock.time, sleep=clock.sleep)
    return times


async def test_ticks_stay_on_the_grid_despite_work_time() -> None:
    clock = FakeClock()
    times = await run_for(50, clock, [0.007] * 50)
    assert times == pytest.approx([100.0 + 0.02 * i for i in range(50)])


async def test_a_short_stall_is_caught_up_and_a_long_one_resynchronises() -> None:
    clock = FakeClock()
    times = await run_for(8, clock, [0.001, 0.065, 0.001, 0.001, 0.001, 0.001, 0.001])
    # After a 65 ms tick the next ones run back to back until the grid is reached again.
    assert times[2:5] == pytest.approx([100.085, 100.086, 100.087])
    assert times[5] == pytest.approx(100.1)

    clock = FakeClock()
    times = await run_for(4, clock, [0.001, 0.5, 0.001])
    assert times[2] == pytest.approx(times[1] + 0.5 + 0.02)  # skipped ahead: no burst of 25 ticks
    assert times[3] == pytest.approx(times[2] + 0.02, abs=0.002)


async def test_one_metronome_ticks_every_call_on_one_grid() -> None:
    clock = FakeClock()
    shared = Metronome(clock=clock.time, sleep=clock.sleep)
    ticks: list[tuple[str, float]] = []

    def a() -> None:
        ticks.append(("a", clock.now))

    def b() -> None:
        ticks.append(("b", clock.now))

    shared.add(a)
    shared.add(b)
    shared.add(a)  # idempotent
    for _ in range(20):
        await asyncio.sleep(0)
    assert shared.running
    assert [name for name, _ in ticks[:6]] == ["a", "b"] * 3
    assert [t for name, t in ticks if name == "a"][:3] == pytest.approx([100.0, 100.02, 100.04])
    shared.discard(a)
    seen = len(ticks)
    for _ in range(10):
        await asyncio.sleep(0)
    assert all(name == "b" for name, _ in ticks[seen:])
    shared.discard(b)
    assert not shared.running and a not in shared and b not in shared


async def test_a_metronome_tells_when_the_tick_it_runs_was_due() -> None:
    """The bench's uplink lag starts at that deadline: a tick run late by a busy loop shows in it."""
    clock = FakeClock()
    shared = Metronome(clock=clock.time, sleep=clock.sleep)
    seen: list[tuple[float | None, float]] = []

    def call() -> None:
        seen.append((shared.deadline, clock.now))
        if len(seen) == 2:
            clock.now += 0.035  # this tick's work makes the next one 35 ms late (caught up back to back)

    assert shared.deadline is None  # not ticking
    shared.add(call)
    for _ in range(10):
        await asyncio.sleep(0)
    shared.discard(call)
    deadlines = [deadline for deadline, _ in seen[:4]]
    assert deadlines == pytest.approx([100.0, 100.02, 100.04, 100.06])
    assert seen[2][1] - seen[2][0] == pytest.approx(0.015)  # run 15 ms after it was due
    assert shared.deadline is None


async def test_a_failing_call_is_logged_once_and_the_others_keep_ticking(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    shared = Metronome(clock=clock.time, sleep=clock.sleep)
    good: list[float] = []

    def broken() -> None:
        raise RuntimeError("decoder exploded")

    shared.add(broken)
    shared.add(lambda: good.append(clock.now))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(good) >= 5 and shared.running
    failures = [r for r in caplog.records if r.name == "bot.voice.mixer"]
    assert len(failures) == 1 and "decoder exploded" in (failures[0].exc_text or "")
    shared.discard(broken)


async def test_a_call_discarded_during_a_tick_is_not_called_again() -> None:
    shared = Metronome()
    calls: list[str] = []

    def first() -> None:
        calls.append("first")
        shared.discard(second)

    def second() -> None:
        calls.append("second")

    shared.add(first)
    shared.add(second)
    shared._tick()
    assert calls == ["first"]
    shared.discard(first)


async def test_each_event_loop_has_one_shared_metronome() -> None:
    loop = asyncio.get_running_loop()
    assert metronome(loop) is metronome(loop)
    other = asyncio.new_event_loop()
    try:
        assert metronome(other) is not metronome(loop)
    finally:
        other.close()


async def test_a_long_tick_lets_the_loop_run_between_slices() -> None:
    """Issue 14: what the first calls of a tick queued goes out before the last calls are done."""
    shared = Metronome(slice_seconds=0.001)
    order: list[str] = []

    def busy_call(name: str) -> Callable[[], None]:
        def tick() -> None:
            order.append(name)
            if name == "first":
                asyncio.get_running_loop().call_soon(order.append, "writer")  # e.g. its uplink append's writer
            deadline = time.perf_counter() + 0.002
            while time.perf_counter() < deadline:  # 2 ms of work per call
                pass
        return tick

    calls = [busy_call(name) for name in ("first", "second", "third")]
    for call in calls:
        shared.add(call)
    for _ in range(20):
        await asyncio.sleep(0)
    for call in calls:
        shared.discard(call)
    assert order[:4] == ["first", "writer", "second", "third"]
