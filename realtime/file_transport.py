"""The console transport: caller audio from memory at real-time pace, Cap's audio collected tick by tick.

It plays the part Discord plays in production: one 20 ms input frame in and one output frame out per
tick, so output frame n is exactly what Cap would have played while input frame n arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from realtime.audio import FRAME_MS, SILENCE_FRAME
from realtime.engine import VoiceSession

FRAME_SECONDS = FRAME_MS / 1000


async def run_file_conversation(session: VoiceSession, frames: Sequence[bytes], *, tail_seconds: float = 20.0,
                                speakers: frozenset[int] = frozenset(), settle_seconds: float = 1.5,
                                pace: float = 1.0) -> list[bytes]:
    """Feed `frames`, then silence until Cap has finished (idle for `settle_seconds`, at most `tail_seconds`).

    Returns the output frames, one per input tick (silence where Cap is quiet). `pace` > 1 runs faster
    than real time (benchmarks); the conversation logic is the same.
    """
    loop = asyncio.get_running_loop()
    tick = FRAME_SECONDS / pace
    started = loop.time()
    output: list[bytes] = []
    tail_ticks = int(tail_seconds / FRAME_SECONDS)
    settle_ticks = max(1, int(settle_seconds / FRAME_SECONDS))
    idle_run = 0
    n = 0
    while not session.closed:
        if n < len(frames):
            session.feed_input(frames[n], speakers)
        else:
            if n - len(frames) >= tail_ticks:
                break
            session.feed_input(SILENCE_FRAME)
            idle_run = idle_run + 1 if session.idle else 0
            if idle_run >= settle_ticks:
                break
        output.append(session.playback.read_frame() or SILENCE_FRAME)
        n += 1
        delay = started + n * tick - loop.time()
        await asyncio.sleep(max(0.0, delay))
    return output
