"""The 20 ms grid Cap's clocks keep: tick k is due at start + k x interval, whatever each tick cost.

Both the event loop's ticker (bot/voice/mixer.py) and the speaker thread (bot/voice/speaker.py) plan their
ticks with `Grid`: the next deadline is the last one plus the interval (no drift), late ticks run back to back
to catch up, but after a stall of more than `max_catch_up` ticks the missed ones are dropped and the grid
restarts from now (a burst of stale frames would help nobody).
"""

from __future__ import annotations

from typing import Final

from realtime.audio import FRAME_MS

TICK_SECONDS: Final = FRAME_MS / 1000
MAX_CATCH_UP_TICKS: Final = 5  # after a longer stall, skip ahead instead of bursting


class Grid:
    """A drift-free schedule of ticks; `deadline` is when the tick being served was due."""

    def __init__(self, start: float, interval: float = TICK_SECONDS, max_catch_up: int = MAX_CATCH_UP_TICKS) -> None:
        self.interval = interval
        self.max_catch_up = max_catch_up
        self.deadline = start
        self.skipped = 0  # ticks dropped after stalls

    def advance(self, now: float) -> float:
        """Move on to the next tick; seconds to wait for it at `now` (<= 0: it is due, run it at once)."""
        self.deadline += self.interval
        delay = self.deadline - now
        if delay < -self.max_catch_up * self.interval:
            self.skipped += int(-delay / self.interval)
            self.deadline = now + self.interval
            delay = self.interval
        return delay
