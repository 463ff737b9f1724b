"""Dead connections and tool loops (issue 13): how long a caller waits for Cap when the Realtime service dies.

Run as `.venv/bin/python bench/bench_liveness.py [RUNS]` (default 3 runs per case, ~2 minutes). The engine runs
with its default settings against the fake Realtime service (tests/realtime_fake) in this process, at real time:
a caller feeds and pulls one 20 ms frame per tick, exactly as the console and Discord transports do.

- Idle caller: the service goes half-dead (sends nothing, reads nothing, TCP left open) after 1 s of a 3 s reply.
  Figure: service silent -> Cap audible again, from a new session; and the dead air the caller hears (last audible
  frame of the old reply -> first of the new one). Reference, same run: the service closing the socket (1011) at
  the same point, which the engine sees at once: the floor of reconnect + replay + reply. A second reference
  runs the old liveness (websockets' default keepalive 20 s / 20 s / 10 s, no watchdog) once.
- Talking caller: the service goes half-dead 1 s into a 4 s utterance; with the kernel's default socket buffers
  (the keepalive ping finds it) and with small ones (the ping queues behind audio; a stuck send finds it).
  Figure: service silent -> Cap audible from a new session; dead air = caller stops -> Cap audible. Reference:
  the same utterance on a healthy service.
- Tool storm: a model that answers every response with a function call. Figure: tool rounds before the model is
  made to speak, and caller stops -> Cap audible. Reference: one tool call, then an answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fake lives in tests/

from pydantic import BaseModel  # noqa: E402

from realtime import client  # noqa: E402
from realtime.audio import FRAME_MS, SILENCE_FRAME  # noqa: E402
from realtime.client import RealtimeConnection  # noqa: E402
from realtime.engine import VoiceSession  # noqa: E402
from realtime.protocol import SessionConfig  # noqa: E402
from realtime.tools import Tool, ToolContext, ToolRegistry  # noqa: E402
from tests.realtime_fake import FakeRealtimeServer, tone_pcm  # noqa: E402

LOUD_REPLY = tone_pcm(3.0, level=0.6)
TARGET_SECONDS = 10.0  # issue 13: silent service -> Cap talking on a new session
LIMIT_SECONDS = 75.0  # a case that has not recovered by then is reported as "> 75 s"
AUDIBLE_PEAK = 500
# Replies after the failure are louder (peak ~0.6 of full scale against ~0.25 before), so a frame of the old reply
# still playing out is never taken for the new session's.
NEW_REPLY_PEAK = 14000


def talking_frame(index: int) -> bytes:
    t = (np.arange(960) + index * 960) / 48000
    return np.repeat((np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2"), 2).tobytes()


def loudness(frame: bytes | None) -> int:
    """0: silent; 1: audible; 2: a reply of the session after the failure."""
    peak = 0 if frame is None else int(np.abs(np.frombuffer(frame, "<i2")).max())
    return 2 if peak > NEW_REPLY_PEAK else 1 if peak > AUDIBLE_PEAK else 0


class SmallBufferConnection(RealtimeConnection):
    @classmethod
    async def open(cls, config: SessionConfig) -> RealtimeConnection:
        connection = await super().open(config)
        connection._websocket.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return connection


@dataclasses.dataclass
class Timeline:
    """What one call heard, tick by tick: (time, loudness)."""

    ticks: list[tuple[float, int]] = dataclasses.field(default_factory=list)

    def first_audible(self, after: float, level: int = 1) -> float | None:
        return next((t for t, loud in self.ticks if loud >= level and t >= after), None)

    def last_audible(self, before: float) -> float | None:
        return next((t for t, loud in reversed(self.ticks) if loud and t < before), None)


async def run_call(server: FakeRealtimeServer, session: VoiceSession, frame_at: Callable[[int], bytes],
                   until: Callable[[Timeline], bool],
                   event: Callable[[int, Timeline], None] | None = None) -> Timeline:
    """Feed and pull one frame per 20 ms tick of real time until `until` holds (or LIMIT_SECONDS pass)."""
    timeline = Timeline()
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while not until(timeline) and loop.time() - start < LIMIT_SECONDS:
        if event is not None:
            event(n, timeline)
        session.feed_input(frame_at(n), [7])
        timeline.ticks.append((loop.time(), loudness(session.playback.read_frame())))
        n += 1
        await asyncio.sleep(max(0.0, start + n * FRAME_MS / 1000 - loop.time()))
    return timeline


def config_for(server: FakeRealtimeServer, **overrides: Any) -> SessionConfig:
    return dataclasses.replace(SessionConfig(api_key="sk-test", url=server.url, instructions="You are Cap."),
                               **overrides)


async def idle_caller(failure: str, **overrides: Any) -> tuple[float | None, float | None]:
    """(failure -> Cap audible on a new session, dead air heard) for a caller listening to a reply."""
    marks: dict[str, float] = {}
    async with FakeRealtimeServer(reply_audio=tone_pcm(3.0), realtime_factor=1.0) as server:
        session = VoiceSession(config_for(server, **overrides), ToolRegistry())
        await session.start()
        frames = [talking_frame(i) for i in range(50)]  # the caller asks for 1 s, then listens

        def event(n: int, timeline: Timeline) -> None:
            # The reply streams at real time here: 1 s after Cap became audible, the service fails.
            heard = timeline.first_audible(0.0)
            if "failed" not in marks and heard is not None and asyncio.get_running_loop().time() - heard >= 1.0:
                marks["failed"] = asyncio.get_running_loop().time()
                server.reply_audio = LOUD_REPLY
                if failure == "silent":
                    server.go_silent()
                else:
                    asyncio.get_running_loop().create_task(server.drop_connections(1011))

        def until(timeline: Timeline) -> bool:
            return "failed" in marks and timeline.first_audible(marks["failed"], level=2) is not None

        timeline = await run_call(server, session, lambda n: frames[n] if n < len(frames) else SILENCE_FRAME,
                                  until, event)
        await session.aclose()
    if "failed" not in marks:
        return None, None
    back = timeline.first_audible(marks["failed"], level=2)
    if back is None:
        return None, None
    return back - marks["failed"], back - (timeline.last_audible(back) or marks["failed"])


async def talking_caller(failure: str | None, small_buffers: bool) -> tuple[float | None, float | None]:
    """(service silent -> Cap audible on a new session, caller stops -> Cap audible) for a 4 s utterance."""
    marks: dict[str, float] = {}
    knobs: dict[str, Any] = {"socket_buffer_bytes": 4096} if small_buffers else {}
    async with FakeRealtimeServer(realtime_factor=1.0, **knobs) as server:
        connector = SmallBufferConnection.open if small_buffers else RealtimeConnection.open
        session = VoiceSession(config_for(server), ToolRegistry(), connector=connector)
        await session.start()
        talk_frames = 200

        def event(n: int, timeline: Timeline) -> None:
            now = asyncio.get_running_loop().time()
            if n == 50 and failure == "silent":
                marks["failed"] = now
                server.go_silent()
            if n == 50:
                server.reply_audio = LOUD_REPLY
            if n == talk_frames:
                marks["stopped"] = now

        timeline = await run_call(
            server, session, lambda n: talking_frame(n) if n < talk_frames else SILENCE_FRAME,
            lambda tl: "stopped" in marks and tl.first_audible(marks["stopped"], 2) is not None, event)
        await session.aclose()
    back = timeline.first_audible(marks.get("stopped", 0.0), 2)
    if back is None:
        return None, None
    return (back - marks["failed"] if failure else None), back - marks["stopped"]


class EchoArgs(BaseModel):
    text: str


async def tool_storm(storm: bool) -> tuple[int, float | None]:
    """(tool rounds before Cap spoke, caller stops -> Cap audible)."""
    calls: list[str] = []

    async def echo(args: EchoArgs, context: ToolContext) -> dict:
        calls.append(args.text)
        return {"echo": args.text}

    registry = ToolRegistry.of([Tool("echo", "Repeat the text.", EchoArgs, echo)])
    spec = {"name": "echo", "arguments": '{"text": "again"}'}
    knobs: dict[str, Any] = {"function_call_storm": spec} if storm else {"function_calls": [spec]}
    marks: dict[str, float] = {}
    async with FakeRealtimeServer(realtime_factor=1.0, **knobs) as server:
        session = VoiceSession(config_for(server), registry)
        await session.start()

        def event(n: int, timeline: Timeline) -> None:
            if n == 50:
                marks["stopped"] = asyncio.get_running_loop().time()

        timeline = await run_call(server, session, lambda n: talking_frame(n) if n < 50 else SILENCE_FRAME,
                                  lambda tl: "stopped" in marks and tl.first_audible(marks["stopped"]) is not None,
                                  event)
        await session.aclose()
    back = timeline.first_audible(marks["stopped"])
    return len(calls), (back - marks["stopped"] if back is not None else None)


def spread(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return f"> {LIMIT_SECONDS:.0f} s"
    text = f"{statistics.median(got):.1f} / {max(got):.1f} s"
    missing = len(values) - len(got)
    return text + (f" ({missing} of {len(values)} never)" if missing else "")


async def measure(runs: int) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    progress("idle caller ...")
    silent = [await idle_caller("silent") for _ in range(runs)]
    dropped = [await idle_caller("drop") for _ in range(runs)]
    progress("idle caller with the old liveness (one run, up to ~50 s) ...")
    saved = (client.PING_INTERVAL_SECONDS, client.PING_TIMEOUT_SECONDS, client.CLOSE_TIMEOUT_SECONDS)
    client.PING_INTERVAL_SECONDS, client.PING_TIMEOUT_SECONDS, client.CLOSE_TIMEOUT_SECONDS = 20.0, 20.0, 10.0
    try:
        old = await idle_caller("silent", send_stall_seconds=1e9, reply_silence_seconds=1e9)
    finally:
        client.PING_INTERVAL_SECONDS, client.PING_TIMEOUT_SECONDS, client.CLOSE_TIMEOUT_SECONDS = saved
    rows.append(("idle caller: service silent -> Cap audible from a new session (median / max)",
                 spread([s[0] for s in silent]),
                 f"socket closed instead: {spread([d[0] for d in dropped])}; old liveness: {spread([old[0]])}"))
    rows.append(("idle caller: dead air heard mid-reply (median / max)", spread([s[1] for s in silent]),
                 f"socket closed instead: {spread([d[1] for d in dropped])}"))
    for small in (False, True):
        label = "small socket buffers" if small else "default socket buffers"
        progress(f"talking caller, {label} ...")
        talk = [await talking_caller("silent", small) for _ in range(runs)]
        healthy = [await talking_caller(None, small) for _ in range(runs)]
        rows.append((f"talking caller ({label}): service silent -> Cap audible from a new session",
                     spread([t[0] for t in talk]), "—"))
        rows.append((f"talking caller ({label}): caller stops -> Cap audible", spread([t[1] for t in talk]),
                     f"healthy service: {spread([h[1] for h in healthy])}"))
    progress("tool storm ...")
    storms = [await tool_storm(True) for _ in range(runs)]
    single = [await tool_storm(False) for _ in range(runs)]
    rows.append(("tool storm: tool rounds before the model is made to speak",
                 ", ".join(str(s[0]) for s in storms), "one tool call: " + ", ".join(str(s[0]) for s in single)))
    rows.append(("tool storm: caller stops -> Cap audible", spread([s[1] for s in storms]),
                 f"one tool call: {spread([s[1] for s in single])}"))
    return rows


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    started = time.perf_counter()
    rows = asyncio.run(measure(runs))
    print(f"bench_liveness.py: {runs} runs per case in {time.perf_counter() - started:.0f} s; "
          f"target silent service -> Cap talking on a new session <= {TARGET_SECONDS:.0f} s\n")
    print("| measure | figure | reference, same run |\n|---|---|---|")
    for measure_, figure, reference in rows:
        print(f"| {measure_} | {figure} | {reference} |")


if __name__ == "__main__":
    main()
