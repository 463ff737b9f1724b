"""The whole engine over a real WebSocket against the fake Realtime service on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re

import pytest
from pydantic import BaseModel

from realtime.audio import FRAME_MS, SILENCE_FRAME
from realtime.client import RealtimeConnection
from realtime.engine import VoiceSession
from realtime.errors import RealtimeError, RealtimeFatalError
from realtime.file_transport import run_file_conversation
from realtime.protocol import SessionConfig
from realtime.tools import Tool, ToolContext, ToolRegistry
from realtime.transcript import TranscriptEntry
from tests.audio_checks import loud, runs
from tests.conftest import load_frames
from tests.realtime_fake import FakeRealtimeServer, tone_pcm


def silence(ms: int) -> list[bytes]:
    return [SILENCE_FRAME] * (ms // FRAME_MS)


class EchoArgs(BaseModel):
    text: str


def echo_registry(calls: list[tuple[str, ToolContext]]) -> ToolRegistry:
    async def echo(args: EchoArgs, context: ToolContext) -> dict:
        calls.append((args.text, context))
        return {"echo": args.text}

    return ToolRegistry.of([Tool("echo", "Repeat the text.", EchoArgs, echo)])


def config_for(server: FakeRealtimeServer, **overrides) -> SessionConfig:
    base = SessionConfig(api_key="sk-test", url=server.url, instructions="You are Cap.",
                         reconnect_base_seconds=0.05, connect_attempts=3)
    return dataclasses.replace(base, **overrides)


async def converse(server: FakeRealtimeServer, frames: list[bytes], *, pace: float = 4.0,
                   registry: ToolRegistry | None = None, **overrides):
    transcripts: list[TranscriptEntry] = []
    session = VoiceSession(config_for(server, **overrides), registry or ToolRegistry(),
                           on_transcript=transcripts.append)
    await session.start()
    try:
        output = await run_file_conversation(session, frames, tail_seconds=8, pace=pace,
                                             speakers=frozenset({7}))
    finally:
        await session.aclose()
    return output, transcripts, session


@pytest.fixture
def hello() -> list[bytes]:
    return load_frames("hello.wav")


@pytest.fixture
def question() -> list[bytes]:
    return load_frames("question.wav")


async def test_a_reply_plays_without_gaps(hello: list[bytes]) -> None:
    async with FakeRealtimeServer(reply_audio=tone_pcm(1.5)) as server:
        output, transcripts, session = await converse(server, silence(200) + hello + silence(1000))
    (reply,) = runs(loud(output)[len(hello) + 10:])
    assert abs(reply[1] - 75) <= 2  # the whole 1.5 s reply, in one piece
    assert [(t.role, t.text) for t in transcripts] == [("caller", "Hello."), ("cap", "Happy to help with that.")]
    assert transcripts[0].speakers == frozenset({7})
    (connection,) = server.connections
    assert connection.headers["Authorization"] == "Bearer sk-test"
    assert "OpenAI-Beta" not in connection.headers
    assert connection.query == {"model": "gpt-realtime-2.1"}
    assert server.schema_errors == [] and server.internal_errors == []
    assert session.metrics.turns == 1 and session.metrics.median_reply_latency_ms is not None


async def test_barge_in_with_late_server_vad_truncates_at_the_heard_position(
        hello: list[bytes], question: list[bytes]) -> None:
    async with FakeRealtimeServer(reply_audio=tone_pcm(6.0), speech_started_delay_ms=400) as server:
        lead = silence(200) + hello + silence(2000)
        output, _, session = await converse(server, lead + question[:60] + silence(1500), pace=1.0)
    flags = loud(output)
    reply_start, _ = runs(flags[len(hello) + 10:])[0]
    reply_start += len(hello) + 10
    onset = len(lead)
    cut = next(i for i in range(onset, len(flags)) if not flags[i])
    assert (cut - onset) * FRAME_MS <= 150, "playback must go silent within 150 ms of the caller's onset"
    assert not any(flags[cut:cut + 40]), "the interrupted reply must not come back"
    heard_ms = (cut - reply_start) * FRAME_MS
    (truncation,) = server.truncations
    assert abs(truncation["audio_end_ms"] - heard_ms) <= 60
    assert session.metrics.barge_ins == 1
    assert server.schema_errors == []


async def test_a_cough_pauses_then_resumes_the_reply(hello: list[bytes], question: list[bytes]) -> None:
    async with FakeRealtimeServer(reply_audio=tone_pcm(3.0), suppress_speech_started_below_ms=500) as server:
        lead = silence(200) + hello + silence(1500)
        output, _, session = await converse(server, lead + question[:12] + silence(4000), pace=1.0)
    played = runs(loud(output)[len(hello) + 10:])
    assert len(played) == 2, "paused once, then resumed"
    assert abs(sum(length for _, length in played) - 150) <= 3, "nothing of the reply was lost"
    assert server.truncations == [] and server.deleted_items == []
    assert session.metrics.paused_then_resumed == 1 and session.metrics.barge_ins == 0


async def test_function_call_output_then_response_create(hello: list[bytes]) -> None:
    calls: list[tuple[str, ToolContext]] = []
    async with FakeRealtimeServer(function_calls=[{"name": "echo", "arguments": '{"text": "hi"}'}]) as server:
        output, _, _ = await converse(server, hello + silence(1500), registry=echo_registry(calls))
    assert [text for text, _ in calls] == ["hi"]
    (item_create,) = server.function_outputs
    assert json.loads(item_create["output"]) == {"echo": "hi", "ok": True}
    types = [e["type"] for e in server.received if e["type"] != "input_audio_buffer.append"]
    assert types.index("response.create") > types.index("conversation.item.create")
    assert any(loud(output)), "Cap spoke after the tool result"
    assert server.schema_errors == []


async def test_a_spoken_preamble_and_a_tool_call_in_one_response(hello: list[bytes]) -> None:
    """The model often says "let me check" and calls the tool in the same response: both must happen."""
    calls: list[tuple[str, ToolContext]] = []
    spec = {"name": "echo", "arguments": '{"text": "hi"}', "preamble": True}
    async with FakeRealtimeServer(function_calls=[spec], reply_transcripts=["Let me check.", "Here it is."]) as server:
        output, transcripts, _ = await converse(server, hello + silence(1500), registry=echo_registry(calls))
    assert [text for text, _ in calls] == ["hi"]
    first, second = server.responses[:2]
    assert [o["type"] for o in first["output"]] == ["message", "function_call"]
    assert [o["type"] for o in second["output"]] == ["message"]  # the answer, after the tool's output
    assert [e.text for e in transcripts if e.role == "cap"] == ["Let me check.", "Here it is."]
    assert sum(loud(output)) >= 2 * 1500 // FRAME_MS * 0.95, "both 1.5 s replies played: preamble, then answer"
    assert server.schema_errors == [] and server.own_schema_errors == []


async def test_bad_tool_arguments_go_back_to_the_model(hello: list[bytes]) -> None:
    calls: list[tuple[str, ToolContext]] = []
    async with FakeRealtimeServer(function_calls=[{"name": "echo", "arguments": '{"txt": 1'}]) as server:
        await converse(server, hello + silence(1500), registry=echo_registry(calls))
    assert calls == []
    output = json.loads(server.function_outputs[0]["output"])
    assert output["ok"] is False and output["error"]["code"] == "invalid_json"


async def test_a_cancelled_responses_tool_never_runs(hello: list[bytes]) -> None:
    calls: list[tuple[str, ToolContext]] = []
    async with FakeRealtimeServer(function_calls=[{"name": "echo", "arguments": '{"text": "x"}'}],
                                  cancel_function_call_response=True) as server:
        await converse(server, hello + silence(1500), registry=echo_registry(calls))
        assert server.sent_of("response.function_call_arguments.done"), "the call was streamed"
    assert calls == [] and server.function_outputs == []


async def feed_until(session: VoiceSession, frames: list[bytes], predicate, limit_seconds: float = 10.0) -> None:
    """Feed frames (then silence) at 4x real time until predicate() holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_seconds
    n = 0
    while not predicate():
        assert loop.time() < deadline, "timed out"
        session.feed_input(frames[n] if n < len(frames) else SILENCE_FRAME, [7])
        session.playback.read_frame()
        n += 1
        await asyncio.sleep(0.005)


async def test_closing_mid_reply_still_reports_what_cap_was_saying(hello: list[bytes]) -> None:
    transcripts: list[TranscriptEntry] = []
    async with FakeRealtimeServer() as server:
        session = VoiceSession(config_for(server), ToolRegistry(), on_transcript=transcripts.append)
        await session.start()
        n = 0
        while session.playback.queued_ms() == 0:  # the caller speaks; nothing is played (no transport pulls)
            session.feed_input(hello[n] if n < len(hello) else SILENCE_FRAME, [7])
            n += 1
            await asyncio.sleep(0.005)
        await server.wait_for(lambda: server.sent_of("response.done"))
        await asyncio.sleep(0.05)
        for _ in range(10):  # the caller hears the first 200 ms
            assert session.playback.read_frame() is not None
        assert [e.role for e in transcripts] == ["caller"]  # Cap's words arrived but were not all heard yet
        await session.aclose()
    assert [(e.role, e.interrupted) for e in transcripts] == [("caller", False), ("cap", True)]


async def test_session_expired_reconnects_and_replays_the_conversation(hello: list[bytes]) -> None:
    transcripts: list[TranscriptEntry] = []
    async with FakeRealtimeServer(user_transcripts=["I have a duplex in Austin."]) as server:
        session = VoiceSession(config_for(server), ToolRegistry(), on_transcript=transcripts.append)
        await session.start()
        await feed_until(session, hello, lambda: len(transcripts) == 2)
        await server.expire_session()
        await server.wait_for(lambda: len(server.connections) == 2 and len(server.connections[1].events) >= 3)
        second = server.connections[1].events
        await session.aclose()
    assert second[0]["type"] == "session.update"
    replayed = [(e["item"]["role"], e["item"]["content"][0]["text"]) for e in second[1:3]]
    assert replayed == [("user", "I have a duplex in Austin."), ("assistant", "Happy to help with that.")]
    assert session.metrics.reconnects == 1
    assert await session.wait_closed() is None


async def test_a_dropped_socket_reconnects_after_backoff() -> None:
    async with FakeRealtimeServer(reject_connections=1) as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        await session.start()  # the first handshake is refused with 503, the retry succeeds
        await server.drop_connections(1011)
        await server.wait_for(lambda: len(server.connections) == 2)
        await session.aclose()
    assert server.rejected_handshakes == 1 and session.metrics.reconnects == 1


async def test_the_session_is_recycled_at_a_turn_boundary(hello: list[bytes]) -> None:
    transcripts: list[TranscriptEntry] = []
    async with FakeRealtimeServer() as server:
        session = VoiceSession(config_for(server, recycle_after_seconds=0.3), ToolRegistry(),
                               on_transcript=transcripts.append)
        await session.start()
        await feed_until(session, hello, lambda: len(server.connections) >= 2 and len(transcripts) >= 2,
                         limit_seconds=15)
        await session.aclose()
    assert server.connections[0].close_code == 1000
    assert session.metrics.reconnects == 0


async def test_garbage_from_the_server_is_survived(hello: list[bytes]) -> None:
    async with FakeRealtimeServer() as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        await session.start()
        for garbage in ("not json", '{"type": "weird.event"}', "[1, 2]",
                        '{"type": "response.output_audio.delta", "delta": "@@@", "item_id": "x"}',
                        '{"type": "response.done", "response": 5}'):
            await server.send_raw(garbage)
        heard: list[bytes] = []

        def spoke() -> bool:
            return any(loud(heard))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        for n in range(2000):
            assert loop.time() < deadline
            session.feed_input(hello[n] if n < len(hello) else SILENCE_FRAME)
            heard.append(session.playback.read_frame() or SILENCE_FRAME)
            if spoke():
                break
            await asyncio.sleep(0.005)
        await session.aclose()
    assert spoke() and len(server.connections) == 1


@pytest.mark.parametrize("knobs, expected", [
    ({"valid_keys": ["sk-other"]}, "OPENAI_API_KEY was rejected"),
    ({"fatal_on_connect": "insufficient_quota"}, "no quota"),
    ({"reject_session_update": ("session.audio.input.transcription.model", "Invalid value: 'gpt-transcribe'.")},
     "rejected Cap's session settings (session.audio.input.transcription.model): Invalid value"),
])
async def test_fatal_errors_end_the_session_without_retrying(knobs: dict, expected: str) -> None:
    async with FakeRealtimeServer(**knobs) as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        try:
            await session.start()
            reason = await asyncio.wait_for(session.wait_closed(), 5)
        except RealtimeFatalError as exc:
            reason = str(exc)
        await session.aclose()
        await asyncio.sleep(0.3)
    assert expected in reason and "sk-test" not in reason
    assert len(server.connections) == 1, "no retry storm"


async def test_a_reply_failing_for_lack_of_quota_ends_the_session(hello: list[bytes]) -> None:
    # The service accepts the socket and the session, then fails each response with the quota error.
    async with FakeRealtimeServer(fail_responses_with="insufficient_quota") as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        await session.start()
        await feed_until(session, hello, lambda: session.closed)
        reason = await session.wait_closed()
        await session.aclose()
    assert reason == "the OpenAI account has no quota left (insufficient_quota)"
    assert session.metrics.failed_responses == 1 and len(server.connections) == 1


async def test_a_reply_failing_for_another_reason_is_logged_and_the_call_goes_on(
        hello: list[bytes], caplog: pytest.LogCaptureFixture) -> None:
    async with FakeRealtimeServer(fail_responses_with="server_error") as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        await session.start()
        await feed_until(session, hello, lambda: session.metrics.failed_responses == 2)
        await asyncio.sleep(0.3)
        assert not session.closed
        await session.aclose()
    assert "Cap's reply failed (server_error)" in caplog.text
    assert session.metrics.failed_responses == 2 and session.metrics.retried_responses == 1, "one retry, no loop"


async def test_an_unreachable_server_gives_up_with_one_line() -> None:
    config = SessionConfig(api_key="sk-test", url="ws://127.0.0.1:9/v1/realtime",
                           reconnect_base_seconds=0.01, connect_attempts=2)
    session = VoiceSession(config, ToolRegistry())
    with pytest.raises(RealtimeFatalError, match=re.escape("cannot reach ws://127.0.0.1:9/v1/realtime")):
        await session.start()


class ClosesAtOnce:
    """A service that accepts every socket and closes it at once (an outage that looks like success)."""

    opened = 0

    @classmethod
    async def open(cls, config: SessionConfig) -> ClosesAtOnce:
        cls.opened += 1
        return cls()

    async def send(self, event: dict) -> None:
        pass

    def try_send_now(self, event: dict) -> bool:
        return True

    async def recv(self) -> dict:
        await asyncio.sleep(0)
        raise RealtimeError("Realtime connection closed (1011)", code="close_1011", retryable=True)

    async def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def test_a_server_that_keeps_closing_meets_backoff_and_a_limit() -> None:
    ClosesAtOnce.opened = 0
    config = SessionConfig(api_key="sk-test", reconnect_base_seconds=0.01, connect_attempts=4)
    session = VoiceSession(config, ToolRegistry(), connector=ClosesAtOnce.open)
    await session.start()
    reason = await asyncio.wait_for(session.wait_closed(), 5)
    await session.aclose()
    assert reason is not None and "keeps closing the connection" in reason
    assert ClosesAtOnce.opened == 4, "no tight reconnect loop"


async def test_a_connection_error_never_shows_the_key() -> None:
    """websockets may quote the bad header; only a pattern-based mask would let the key's tail through."""
    async with FakeRealtimeServer() as server:
        config = SessionConfig(api_key="sk-SECRETKEY\x01tailxyz", url=server.url)
        with pytest.raises(RealtimeError) as caught:
            await RealtimeConnection.open(config)
    assert "invalid Authorization header" in str(caught.value)
    assert "SECRETKEY" not in str(caught.value) and "tailxyz" not in str(caught.value)
