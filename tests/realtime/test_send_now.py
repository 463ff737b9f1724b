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

from websockets.asyncio.server import ServerConnection, serve

from realtime.client import RealtimeConnection
from realtime.protocol import SessionConfig
from tests.discord_emulator.emulator import wait_until


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
