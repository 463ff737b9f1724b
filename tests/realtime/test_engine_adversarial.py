"""The engine against an adversarial Realtime service (issue 13): refused handshakes with Retry-After and error
bodies, half-dead sockets, tool-call storms, drops right after a function call, failed replies."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket

import numpy as np
import pytest
from pydantic import BaseModel

from realtime.audio import FRAME_MS, SILENCE_FRAME
from realtime.client import RealtimeConnection
from realtime.engine import VoiceSession
from realtime.errors import RealtimeFatalError
from realtime.protocol import SessionConfig
from realtime.tools import Tool, ToolContext, ToolRegistry
from tests.audio_checks import loud
from tests.conftest import load_frames
from tests.realtime_fake import FakeRealtimeServer, tone_pcm

QUOTA_BODY = json.dumps({"error": {
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}})


def config_for(server: FakeRealtimeServer, **overrides) -> SessionConfig:
    base = SessionConfig(api_key="sk-test", url=server.url, instructions="You are Cap.",
                         reconnect_base_seconds=0.05, connect_attempts=3)
    return dataclasses.replace(base, **overrides)


# ----- 4. handshake errors -----

async def test_a_429_handshake_waits_as_long_as_retry_after_says(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with FakeRealtimeServer(reject_connections=1, reject_status=429, reject_headers={"Retry-After": "1"},
                                  reject_body='{"error": {"type": "rate_limit_exceeded", "code": '
                                              '"rate_limit_exceeded", "message": "Slow down."}}') as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        await session.start()
        await session.aclose()
    first, second = server.handshake_times
    assert second - first >= 0.9, "the server asked for 1 s; the backoff alone would retry within 0.05 s"
    assert "HTTP 429" in caplog.text and "Slow down." in caplog.text and "retrying in 1.0 s" in caplog.text


def test_a_long_retry_after_is_capped() -> None:
    from realtime.client import retry_after_seconds  # new in issue 13: imported here so the file runs on older code

    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("3600") == 30.0  # capped: a call cannot wait an hour
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert retry_after_seconds("-4") is None


async def test_a_429_whose_body_says_insufficient_quota_is_fatal_with_its_own_words() -> None:
    async with FakeRealtimeServer(reject_connections=5, reject_status=429, reject_body=QUOTA_BODY) as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        with pytest.raises(RealtimeFatalError) as caught:
            await session.start()
        await session.aclose()
    assert str(caught.value) == "the OpenAI account has no quota left (insufficient_quota)"
    assert server.rejected_handshakes == 1, "no retries: more attempts only burn time"


# ----- 1. half-dead sockets -----

def talking_frame(index: int) -> bytes:
    """20 ms of a caller talking without pause (a loud 220 Hz tone, 48 kHz stereo), far above any VAD."""
    t = (np.arange(960) + index * 960) / 48000
    mono = (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2")
    return np.repeat(mono, 2).tobytes()


class SmallBufferConnection(RealtimeConnection):
    """Cap's own connection with a small kernel send buffer, so a peer that stops reading blocks sends soon
    (production buffers are larger: there the keepalive ping finds the dead path, in up to ~7 s)."""

    @classmethod
    async def open(cls, config: SessionConfig) -> RealtimeConnection:
        connection = await super().open(config)
        sock = connection._websocket.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return connection


class Caller:
    """The transport's side, at real time: feeds a frame and pulls one every 20 ms; notes what Cap said when."""

    def __init__(self, session: VoiceSession, server: FakeRealtimeServer) -> None:
        self.session, self.server = session, server
        self.heard: list[tuple[int, bool]] = []  # (connections open so far, audible?) per frame pulled

    async def run(self, frame_at, until, limit_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not until():
            assert loop.time() - start < limit_seconds, f"not within {limit_seconds} s"
            self.session.feed_input(frame_at(n), [7])
            played = self.session.playback.read_frame()
            self.heard.append((len(self.server.connections), played is not None and loud([played])[0]))
            n += 1
            await asyncio.sleep(FRAME_MS / 1000)

    def spoke_on_connection(self, number: int) -> bool:
        return any(audible for connections, audible in self.heard if connections >= number)


def new_session_reply_heard(caller: Caller, server: FakeRealtimeServer) -> bool:
    return len(server.connections) >= 2 and bool(server.connections[1].sent) and any(
        e["type"] == "response.output_audio.delta" for e in server.connections[1].sent) and \
        caller.spoke_on_connection(2)


async def test_a_silent_service_mid_reply_is_left_and_cap_talks_on_a_new_session(
        caplog: pytest.LogCaptureFixture) -> None:
    """The caller heard 1 s of a reply, then the service went quiet with the socket open: no 40 s of dead air."""
    caplog.set_level(logging.INFO)
    async with FakeRealtimeServer(reply_audio=tone_pcm(3.0), silent_after_audio_ms=1000) as server:
        session = VoiceSession(config_for(server, reply_silence_seconds=1.0), ToolRegistry())
        await session.start()
        caller = Caller(session, server)
        hello = load_frames("hello.wav")
        await caller.run(lambda n: hello[n] if n < len(hello) else SILENCE_FRAME,
                         lambda: new_session_reply_heard(caller, server), limit_seconds=10)
        await session.aclose()
    assert "no server event for" in caplog.text, "the watchdog found it, not the keepalive"
    second = [e["type"] for e in server.connections[1].events if e["type"] != "input_audio_buffer.append"]
    assert second[0] == "session.update" and second.count("response.create") == 1
    assert session.metrics.reconnects == 1
    assert server.schema_errors == []


async def test_a_silent_service_while_the_caller_talks_is_left_when_a_send_sticks(
        caplog: pytest.LogCaptureFixture) -> None:
    """The caller keeps talking into a socket nobody reads: the send buffers fill and a send sticks, which shows
    the socket is dead sooner than the keepalive; the new session hears everything the caller said."""
    caplog.set_level(logging.INFO)
    async with FakeRealtimeServer(socket_buffer_bytes=4096) as server:
        session = VoiceSession(config_for(server, send_stall_seconds=1.0), ToolRegistry(),
                               connector=SmallBufferConnection.open)
        await session.start()
        caller = Caller(session, server)
        talk_until = 150  # 3 s of talking; the service goes silent 0.5 s in
        silenced = False

        def frame_at(n: int) -> bytes:
            nonlocal silenced
            if n == 25 and not silenced:
                silenced = True
                server.go_silent()
            return talking_frame(n) if n < talk_until else SILENCE_FRAME

        await caller.run(frame_at, lambda: new_session_reply_heard(caller, server), limit_seconds=12)
        await session.aclose()
    assert "a send has been stuck" in caplog.text
    assert session.metrics.reconnects == 1
    heard_ms = loud_ms(server.connections[1].input_audio)
    assert heard_ms >= talk_until * FRAME_MS - 100, f"the new session heard only {heard_ms} ms of the 3 s said"
    assert server.schema_errors == []


def loud_ms(pcm24: bytes | bytearray) -> int:
    """How much of some 24 kHz caller audio is loud (talking), in 20 ms windows."""
    samples = np.frombuffer(bytes(pcm24[: len(pcm24) // 960 * 960]), "<i2").reshape(-1, 480).astype(float)
    return int((np.sqrt((samples**2).mean(axis=1)) > 1000).sum()) * FRAME_MS


# ----- 5. smaller items -----

async def test_a_reply_failing_with_server_error_is_asked_for_once_more() -> None:
    """A passing fault on the service's side must not leave the caller's question unanswered."""
    async with FakeRealtimeServer(fail_responses_with="server_error", fail_responses=1) as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        await session.start()
        caller = Caller(session, server)
        hello = load_frames("hello.wav")
        await caller.run(lambda n: hello[n] if n < len(hello) else SILENCE_FRAME,
                         lambda: caller.spoke_on_connection(1), limit_seconds=10)
        await server.wait_for(lambda: len(server.responses) >= 2)
        await session.aclose()
    statuses = [r["status"] for r in server.responses]
    assert statuses[:2] == ["failed", "completed"]
    assert session.metrics.failed_responses == 1 and session.metrics.retried_responses == 1
    assert len(server.connections) == 1


async def test_a_drop_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """The reader and the writer fail on the same dead socket; the log gets one line, not two."""
    caplog.set_level(logging.WARNING)
    async with FakeRealtimeServer(socket_buffer_bytes=4096) as server:
        session = VoiceSession(config_for(server), ToolRegistry(), connector=SmallBufferConnection.open)
        await session.start()
        caller = Caller(session, server)
        await caller.run(talking_frame, lambda: len(caller.heard) >= 10, limit_seconds=5)
        server.go_silent()
        await caller.run(talking_frame, lambda: len(caller.heard) >= 60, limit_seconds=5)  # the writer is stuck
        await server.drop_connections(1006)
        await caller.run(talking_frame, lambda: len(server.connections) >= 2, limit_seconds=5)
        await session.aclose()
    drops = [r for r in caplog.records if "reconnecting" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]


# ----- 2. tool-call storm -----

class EchoArgs(BaseModel):
    text: str


def echo_registry(calls: list[str], delay: float = 0.0) -> ToolRegistry:
    async def echo(args: EchoArgs, context: ToolContext) -> dict:
        await asyncio.sleep(delay)
        calls.append(args.text)
        return {"echo": args.text}

    return ToolRegistry.of([Tool("echo", "Repeat the text.", EchoArgs, echo)])


async def test_a_model_that_only_calls_tools_is_made_to_speak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    calls: list[str] = []
    storm = {"name": "echo", "arguments": '{"text": "again"}'}
    async with FakeRealtimeServer(function_call_storm=storm) as server:
        session = VoiceSession(config_for(server, max_tool_rounds=3), echo_registry(calls))
        await session.start()
        caller = Caller(session, server)
        hello = load_frames("hello.wav")
        await caller.run(lambda n: hello[n] if n < len(hello) else SILENCE_FRAME,
                         lambda: caller.spoke_on_connection(1), limit_seconds=10)
        await server.wait_for(lambda: any(r["status"] == "completed" and r["output"][0]["type"] == "message"
                                          for r in server.responses))
        await session.aclose()
    assert len(calls) == 3, "three tool-only rounds, then the model must speak"
    creates = server.events_of("response.create")
    assert [c.get("response", {}).get("tool_choice") for c in creates] == [None, None, "none"]
    assert len(server.function_outputs) == 3, "the last output still went back"
    assert session.metrics.tool_loops_stopped == 1
    assert "called tools 3 times in a row" in caplog.text
    assert server.schema_errors == []


# ----- 3. a tool result across a reconnect -----

async def test_a_tool_result_that_lands_while_reconnecting_reaches_the_new_session_once() -> None:
    """The socket dies right after a completed function call and the new handshake is slower than the tool
    (a TLS handshake is slower than a database write): the result must reach the new session, exactly once."""
    calls: list[str] = []
    async with FakeRealtimeServer(function_calls=[{"name": "echo", "arguments": '{"text": "lead saved"}'}],
                                  drop_after_function_call=True) as server:
        session = VoiceSession(config_for(server), echo_registry(calls, delay=0.1))
        await session.start()
        server.handshake_delay_seconds = 0.6  # the reconnect, not the first connect, is slow
        caller = Caller(session, server)
        hello = load_frames("hello.wav")
        await caller.run(lambda n: hello[n] if n < len(hello) else SILENCE_FRAME,
                         lambda: new_session_reply_heard(caller, server), limit_seconds=10)
        await session.aclose()
    assert calls == ["lead saved"]
    second = [e for e in server.connections[1].events if e["type"] != "input_audio_buffer.append"]
    notes = [e for e in second if e["type"] == "conversation.item.create" and e["item"]["role"] == "system"]
    assert len(notes) == 1 and "lead saved" in notes[0]["item"]["content"][0]["text"]
    assert [e["type"] for e in second].count("response.create") == 1
    assert second.index(notes[0]) < [e["type"] for e in second].index("response.create")
    assert server.function_outputs == [], "no output for a call the new session never made"
    assert server.schema_errors == []
