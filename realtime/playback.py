"""Cap's outgoing speech: 20 ms frames waiting to be played, and exactly how much of each item was heard.

The Realtime service sends audio faster than real time, so "received" is not "heard". The transport
(Discord's player thread, or the console clock) pulls one frame per tick with `read_frame()`; the
buffer counts the frames handed out per assistant item, which is what `conversation.item.truncate`
needs after a barge-in. All methods are thread-safe: frames are pushed on the event loop and pulled
on the player thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from realtime.audio import FRAME_BYTES, FRAME_MS


class PlaybackBuffer:
    """A FIFO of (item_id, frame) with pause/resume/clear and a per-item played-frames count."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, frame_bytes: int = FRAME_BYTES) -> None:
        self._clock = clock
        self.frame_bytes = frame_bytes  # 20 ms in the transport's PcmFormat
        self._lock = threading.Lock()
        self._frames: deque[tuple[str, bytes]] = deque()
        self._queued: dict[str, int] = {}  # frames waiting per item (asked for every tick while a reply plays)
        self._played: dict[str, int] = {}
        self._first_played_at: dict[str, float] = {}
        self._paused = False

    def push(self, item_id: str, frame: bytes) -> None:
        """Queue one whole 20 ms frame (`frame_bytes`) of the given assistant item."""
        if len(frame) != self.frame_bytes:
            raise ValueError(f"playback frames are {self.frame_bytes} bytes, got {len(frame)}")
        with self._lock:
            self._frames.append((item_id, frame))
            self._queued[item_id] = self._queued.get(item_id, 0) + 1

    def read_frame(self) -> bytes | None:
        """The next frame to play, or None while Cap is quiet (nothing queued, or paused by barge-in)."""
        with self._lock:
            if self._paused or not self._frames:
                return None
            item_id, frame = self._frames.popleft()
            waiting = self._queued.pop(item_id) - 1
            if waiting:
                self._queued[item_id] = waiting
            played = self._played.get(item_id, 0)
            if played == 0:
                self._first_played_at[item_id] = self._clock()
            self._played[item_id] = played + 1
            return frame

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    def clear(self) -> None:
        """Drop everything not yet played and un-pause (the reply was interrupted)."""
        with self._lock:
            self._frames.clear()
            self._queued.clear()
            self._paused = False

    def forget(self, item_id: str) -> None:
        """Stop tracking an item whose playback is settled (keeps memory flat over long sessions)."""
        with self._lock:
            self._played.pop(item_id, None)
            self._first_played_at.pop(item_id, None)

    def played_ms(self, item_id: str) -> int:
        with self._lock:
            return self._played.get(item_id, 0) * FRAME_MS

    def first_played_at(self, item_id: str) -> float | None:
        with self._lock:
            return self._first_played_at.get(item_id)

    def queued_ms(self, item_id: str | None = None) -> int:
        """Milliseconds waiting to be played (of one item, or in all)."""
        with self._lock:
            if item_id is None:
                return len(self._frames) * FRAME_MS
            return self._queued.get(item_id, 0) * FRAME_MS

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def audible(self) -> bool:
        """True while there is speech queued to play (paused or not)."""
        return bool(self._frames)
