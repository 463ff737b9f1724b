"""Events written straight from the tick (`RealtimeConnection.try_send_now`) when the socket can take them.

The fast path mirrors the happy path of websockets' own `Connection.send` for one text message through its
Sans-I/O layer; these tests pin the websockets internals it relies on (`protocol.state`, `send_in_progress`,
`paused`, `transport.is_closing()`, `protocol.send_text` + `send_data()`), so an upgrade that changes them fails
here, and check that mixing it with the queue and the writer task never reorders what reaches the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve

from realtime.client import RealtimeConnection
from realtime.engine import VoiceSession
from realtime.protocol import SessionConfig
from realtime.tools import ToolRegistry
from tests.discord_emulator.emulator import wait_until
from tests.realtime_fake import FakeRealtimeServer


def wire(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


@dataclasses.dataclass
class RecordingServer:
    """A bare WebSocket server on 127.0.0.1 that keeps every message as the exact text it received."""

    url: str
    messages: list[str]
    reading: asyncio.Event


@contextlib.asynccontextmanager
async def recording_server() -> AsyncIterator[RecordingServer]:
    messages: list[str] = []
    reading = asyncio.Event()
    reading.set()

    async def handler(ws: ServerConnection) -> None:
        await reading.wait()  # while clear, the server reads nothing: the client's write buffer fills up
        async for message in ws:
            messages.append(message)  # type: ignore[arg-type]

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        try:
            yield RecordingServer(f"ws://127.0.0.1:{port}/v1/realtime", messages, reading)
        finally:
            reading.set()  # a failed test must not leave the handler waiting: closing the server waits for it


def config(url: str) -> SessionConfig:
    return SessionConfig(api_key="sk-test", url=url, instructions="You are Cap.", reconnect_base_seconds=0.05,
                         connect_attempts=3)


NOTE = {"type": "conversation.item.create",
        "item": {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "naïve €5 “ok”"}]}}
APPEND = {"type": "input_audio_buffer.append", "audio": "AAAAAAAA"}


# ----- the connection -----

async def test_an_open_idle_socket_takes_the_fast_path_and_the_server_gets_the_same_text_as_send() -> None:
    async with recording_server() as server:
        connection = await RealtimeConnection.open(config(server.url))
        try:
            await connection.send(NOTE)
            taken = [connection.try_send_now(NOTE), connection.try_send_now(APPEND)]
            await connection.send(APPEND)
            await wait_until(lambda: len(server.messages) == 4)
        finally:
            await connection.close()
    assert taken == [True, True], "websockets' internals changed: the fast path is never taken"
    assert server.messages == [wire(NOTE), wire(NOTE), wire(APPEND), wire(APPEND)]


async def test_a_full_write_buffer_refuses_the_fast_path_until_it_drains_and_nothing_is_lost() -> None:
    big = {"type": "input_audio_buffer.append", "audio": "A" * 65536}
    async with recording_server() as server:
        server.reading.clear()
        connection = await RealtimeConnection.open(config(server.url))
        try:
            written = refusals = 0
            while refusals < 5:  # refused 5 times in a row over 0.1 s: the peer's buffers are full too
                if connection.try_send_now(dict(big, event_id=f"e{written}")):
                    written, refusals = written + 1, 0
                    assert written < 5000, "the socket never pushed back"
                    continue
                # websockets' flow control: the transport called pause_writing() past the high-water mark.
                assert connection._websocket.paused, "websockets no longer flags a full write buffer as `paused`"
                refusals += 1
                await asyncio.sleep(0.02)
            queued = asyncio.create_task(connection.send(dict(big, event_id=f"e{written}")))
            await asyncio.sleep(0.05)
            assert not queued.done(), "send() must wait for the buffer to drain"
            server.reading.set()
            await asyncio.wait_for(queued, 10)
            assert connection.try_send_now(dict(big, event_id="after"))
            await wait_until(lambda: len(server.messages) == written + 2, 10)
        finally:
            await connection.close()
    ids = [json.loads(message)["event_id"] for message in server.messages]
    assert ids == [f"e{n}" for n in range(written + 1)] + ["after"]


async def test_a_closed_socket_refuses_the_fast_path_without_raising() -> None:
    async with recording_server() as server:
        closed = await RealtimeConnection.open(config(server.url))
        await closed.close()
        aborted = await RealtimeConnection.open(config(server.url))
        aborted.abort()  # the transport is closing, but the protocol has not heard of it yet (still OPEN)
        refused = [closed.try_send_now(APPEND), aborted.try_send_now(APPEND)]
        await asyncio.sleep(0.05)
        refused.append(aborted.try_send_now(APPEND))
    assert refused == [False, False, False]


# ----- the engine: the fast path and the queue together -----

class GatedConnection(RealtimeConnection):
    """Cap's connection whose queued sends (the writer task's) wait for a permit while `hold` is set: a slow
    writer, holding an event it has taken from the queue but not yet written."""

    hold = False
    permits: asyncio.Semaphore

    async def send(self, event: dict[str, Any]) -> None:
        if self.hold:
            await self.permits.acquire()
        await super().send(event)


def loud_frame(index: int) -> bytes:
    t = (np.arange(960) + index * 960) / 48000
    mono = (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2")
    return np.repeat(mono, 2).tobytes()


async def gated_session(server: FakeRealtimeServer) -> tuple[VoiceSession, list[dict[str, Any]]]:
    """A connected session whose events handed to the socket (fast or queued) are recorded in order."""
    async def connect(session_config: SessionConfig) -> RealtimeConnection:
        connection = await GatedConnection.open(session_config)
        assert isinstance(connection, GatedConnection)
        connection.permits = asyncio.Semaphore(0)
        return connection

    session = VoiceSession(config(server.url), ToolRegistry(), connector=connect)
    handed: list[dict[str, Any]] = []
    drain = session.conversation.events_to_send

    def events_to_send() -> list[dict[str, Any]]:
        events = drain()
        handed.extend(events)
        return events

    session.conversation.events_to_send = events_to_send  # type: ignore[method-assign]
    await session.start()
    await wait_until(lambda: len(server.received) == len(handed) and bool(handed))
    return session, handed


async def test_appends_never_overtake_an_event_the_writer_holds() -> None:
    """A control event sits in a slow writer (taken from the queue, not yet written) with the queue empty; the
    caller's audio that follows must wait behind it, not go straight to the socket."""
    async with FakeRealtimeServer() as server:
        session, handed = await gated_session(server)
        try:
            connection = session._connection
            assert isinstance(connection, GatedConnection)
            connection.hold = True
            connection._websocket.pause_writing()  # the transport's flow-control callback: buffer full
            session.announce("Say that this call is recorded.")
            connection._websocket.resume_writing()
            async with asyncio.timeout(5):
                while not (session._send_queue.empty() and session._writing):
                    connection.permits.release()
                    await asyncio.sleep(0.01)
            for n in range(20):
                session.feed_input(loud_frame(n), [7])
            assert any(e["type"] == "input_audio_buffer.append" for e in handed[-5:])
            connection.hold = False
            connection.permits.release()
            await wait_until(lambda: len(server.received) == len(handed))
            await asyncio.sleep(0.05)
        finally:
            await session.aclose()
    assert [e["type"] for e in server.received] == [e["type"] for e in handed]
    assert server.received == handed
    assert not server.schema_errors


async def test_while_the_socket_is_paused_events_queue_and_arrive_in_order_after_it_resumes() -> None:
    async with FakeRealtimeServer() as server:
        session, handed = await gated_session(server)
        try:
            connection = session._connection
            assert connection is not None
            fast_before = session.sent_at_once
            connection._websocket.pause_writing()
            for n in range(10):
                session.feed_input(loud_frame(n), [7])
            session.announce("Say that this call is recorded.")
            for n in range(10, 20):
                session.feed_input(loud_frame(n), [7])
            assert session.sent_at_once == fast_before, "nothing may skip the queue while the socket is paused"
            assert not session._send_queue.empty()
            connection._websocket.resume_writing()
            await wait_until(lambda: session._send_queue.empty() and not session._writing)
            for n in range(20, 30):
                session.feed_input(loud_frame(n), [7])
            await wait_until(lambda: len(server.received) == len(handed))
            await asyncio.sleep(0.05)
        finally:
            await session.aclose()
    assert session.sent_at_once > fast_before, "once drained, events go straight to the socket again"
    assert server.received == handed
    assert not server.schema_errors


async def test_a_talking_call_writes_its_appends_straight_from_the_tick() -> None:
    """The quick check that the fast path is what a normal call uses (bench figures depend on it)."""
    async with FakeRealtimeServer() as server:
        session, handed = await gated_session(server)
        try:
            for n in range(100):
                session.feed_input(loud_frame(n), [7])
                await asyncio.sleep(0.002)
            await wait_until(lambda: len(server.received) >= len(handed))
        finally:
            await session.aclose()
    appends = sum(e["type"] == "input_audio_buffer.append" for e in handed)
    assert appends > 0 and session.sent_at_once >= appends, (session.sent_at_once, appends)
