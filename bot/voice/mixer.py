"""The uplink clock: every 20 ms, mix what each human speaker said into one frame for the engine.

`Mixer.tick()` is plain and synchronous (tests call it directly); `run_ticker` is the asyncio task that
calls it on a drift-free 20 ms grid (bot/voice/grid.py): it sleeps until the next grid point rather than
20 ms after the last tick, and after a stall (a busy event loop) it catches up a few frames, then resynchronises.
`Metronome` shares one such ticker among every call on an event loop, and lets the loop run between slices
of a tick so that what the first calls queued (their uplink appends) goes out before the last calls are done.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from bot.voice.grid import MAX_CATCH_UP_TICKS, TICK_SECONDS, Grid
from bot.voice.opus_decoder import HEARD_PCM
from realtime.audio import mix_frames

log = logging.getLogger(__name__)

__all__ = ["MAX_CATCH_UP_TICKS", "TICK_SECONDS", "Metronome", "Mixer", "metronome", "run_ticker"]
# The shared tick of N talking calls runs ~N x 0.25 ms of work in one go; meanwhile no task runs, so the
# appends the first calls queued wait for the last call (uplink lag p99 41 ms at N = 48, bench_concurrency).
# Yielding to the loop after each ~2 ms slice lets the writers send them at once.
TICK_SLICE_SECONDS: Final = 0.002


class Mixer:
    """Pulls one frame per active speaker and sums them (saturating); silence when nobody speaks."""

    def __init__(self, pull_frames: Callable[[], Mapping[int, bytes]]) -> None:
        self._pull_frames = pull_frames
        self.ticks = 0
        self.mixed_ticks = 0  # ticks with at least one speaker

    def tick(self) -> tuple[bytes, frozenset[int]]:
        """This 20 ms frame of the mixed room and the user ids heard in it."""
        frames = self._pull_frames()
        self.ticks += 1
        if not frames:
            return HEARD_PCM.silence, frozenset()
        self.mixed_ticks += 1
        return mix_frames(list(frames.values())), frozenset(frames)


async def run_ticker(
    on_tick: Callable[[], Awaitable[None] | None],
    *,
    interval: float = TICK_SECONDS,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    max_catch_up: int = MAX_CATCH_UP_TICKS,
    grid: Grid | None = None,
) -> None:
    """Call `on_tick` every `interval` seconds on a fixed grid until cancelled.

    `on_tick` may be a coroutine function (awaited before the next tick is planned). An exception from
    `on_tick` propagates (the owner decides); late ticks are run back to back up to `max_catch_up`, beyond
    which the missed ones are dropped and the grid restarts from now. A caller that passes its own `grid`
    (on `clock`) can read when the tick being run was due.
    """
    now = clock or asyncio.get_running_loop().time
    if grid is None:
        grid = Grid(now(), interval, max_catch_up)
    while True:
        outcome = on_tick()
        if inspect.isawaitable(outcome):
            await outcome
        delay = grid.advance(now())
        if delay > 0:
            await sleep(delay)
        else:
            await sleep(0)  # let the loop breathe between catch-up ticks


class Metronome:
    """One 20 ms ticker for every call on an event loop: N calls cost one wake-up per tick, not N.

    A wake-up of the event loop costs far more than an idle call's tick (bench/bench_idle.py), so calls
    share the grid. Callbacks run in the order they were added; one that raises is logged and the others
    still run. The ticker task runs only while callbacks are registered. After every `slice_seconds` of
    callbacks the tick yields once to the event loop (tasks ready by then run, e.g. the uplink writers).
    """

    def __init__(self, slice_seconds: float = TICK_SLICE_SECONDS, **ticker_options: object) -> None:
        self._callbacks: dict[Callable[[], None], None] = {}  # an ordered set
        self._slice_seconds = slice_seconds
        self._options = ticker_options
        self._task: asyncio.Task[None] | None = None
        self._grid: Grid | None = None
        self._failing: set[Callable[[], None]] = set()

    def add(self, callback: Callable[[], None]) -> None:
        """Call `callback` every tick from now on (idempotent); must be called on the event loop."""
        self._callbacks[callback] = None
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            clock = self._options.get("clock") or loop.time
            self._grid = Grid(clock(), self._options.get("interval", TICK_SECONDS),  # type: ignore[operator,arg-type]
                              self._options.get("max_catch_up", MAX_CATCH_UP_TICKS))  # type: ignore[arg-type]
            self._task = loop.create_task(
                run_ticker(self._tick_in_slices, grid=self._grid, **self._options),  # type: ignore[arg-type]
                name="voice-metronome",
            )

    def discard(self, callback: Callable[[], None]) -> None:
        """Stop calling `callback` (it is not called again, even later in the current tick)."""
        self._callbacks.pop(callback, None)
        self._failing.discard(callback)
        if not self._callbacks and self._task is not None:
            self._task.cancel()
            self._task = None

    def __contains__(self, callback: object) -> bool:
        return callback in self._callbacks

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def deadline(self) -> float | None:
        """When the tick being run was due, on the ticker's clock (the event loop's): how late the loop is."""
        return self._grid.deadline if self.running and self._grid is not None else None

    def _tick(self) -> None:
        """One tick of every callback, without yielding."""
        for callback in list(self._callbacks):
            self._call(callback)

    async def _tick_in_slices(self) -> None:
        """One tick of every callback, letting the loop run after each slice of `slice_seconds`."""
        slice_started = time.perf_counter()
        for callback in list(self._callbacks):
            self._call(callback)
            if time.perf_counter() - slice_started >= self._slice_seconds:
                await asyncio.sleep(0)
                slice_started = time.perf_counter()

    def _call(self, callback: Callable[[], None]) -> None:
        if callback not in self._callbacks:  # discarded by an earlier callback of this tick
            return
        try:
            callback()
        except Exception:
            if callback not in self._failing:  # once per failing spell, not 50 times a second
                log.exception("voice tick %r failed; it keeps being called", callback)
                self._failing.add(callback)
        else:
            self._failing.discard(callback)


_metronomes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Metronome] = weakref.WeakKeyDictionary()


def metronome(loop: asyncio.AbstractEventLoop) -> Metronome:
    """The shared Metronome of `loop`."""
    shared = _metronomes.get(loop)
    if shared is None:
        shared = _metronomes[loop] = Metronome()
    return shared
