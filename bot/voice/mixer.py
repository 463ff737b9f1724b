"""The uplink clock: every 20 ms, mix what each human speaker said into one frame for the engine.

`Mixer.tick()` is plain and synchronous (tests call it directly); `run_ticker` is the asyncio task that
calls it on a drift-free 20 ms grid: it sleeps until the next grid point rather than 20 ms after the
last tick, and after a stall (a busy event loop) it catches up a few frames, then resynchronises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from realtime.audio import FRAME_MS, SILENCE_FRAME, mix_frames

TICK_SECONDS: Final = FRAME_MS / 1000
MAX_CATCH_UP_TICKS: Final = 5  # after a longer stall, skip ahead instead of bursting


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
            return SILENCE_FRAME, frozenset()
        self.mixed_ticks += 1
        return mix_frames(list(frames.values())), frozenset(frames)


async def run_ticker(
    on_tick: Callable[[], None],
    *,
    interval: float = TICK_SECONDS,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    max_catch_up: int = MAX_CATCH_UP_TICKS,
) -> None:
    """Call `on_tick` every `interval` seconds on a fixed grid until cancelled.

    An exception from `on_tick` propagates (the owner decides); late ticks are run back to back up to
    `max_catch_up`, beyond which the missed ones are dropped and the grid restarts from now.
    """
    now = clock or asyncio.get_running_loop().time
    next_at = now()
    while True:
        on_tick()
        next_at += interval
        delay = next_at - now()
        if delay < -max_catch_up * interval:
            next_at = now() + interval
            delay = interval
        if delay > 0:
            await sleep(delay)
        else:
            await sleep(0)  # let the loop breathe between catch-up ticks
