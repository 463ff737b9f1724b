"""Self-tests of the fake Realtime service, driven by a plain `websockets` client speaking the GA protocol.

Every server event the fake sends is checked against the SDK schema (`validate_server_event`) when each
test's server closes, so the fake never teaches the engine a wrong shape.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.realtime_fake import (
    SAMPLE_RATE,
    FakeRealtimeServer,
    SchemaViolation,
    pcm_ms,
    tone_pcm,
    validate_client_event,
    validate_server_event,
)

Event = dict[str, Any]
MODEL = "gpt-realtime-2.1"
FRAME_MS = 20

# The seed's session in GA form (ARCHITECTURE.md section 2).
GA_SESSION_UPDATE: Event = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "instructions": "You are Cap, a loan companion.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                },
                "transcription": {"model": "gpt-4o-mini-transcribe"},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
        },
        "tools": [
            {
                "type": "function",
                "name": "capture_lead",
                "description": "Save a caller's contact details.",
                "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
            }
        ],
    },
}


def noise(ms: int, rms: float, seed: int = 7) -> bytes:
    """Gaussian noise as 24 kHz mono PCM16 with the given RMS (PCM16 units)."""
    samples = np.random.default_rng(seed).normal(0.0, rms, SAMPLE_RATE * ms // 1000)
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(SAMPLE_RATE * 2 * ms // 1000)


def speech(ms: int) -> bytes:
    """A loud burst standing in for a caller's voice (RMS ~6500, far above the VAD threshold)."""
    return noise(ms, rms=6500.0)


@contextlib.asynccontextmanager
async def running(**knobs: Any) -> AsyncIterator[FakeRealtimeServer]:
    """A started fake; on a clean exit, every event it sent must pass the SDK schema."""
    async with FakeRealtimeServer(**knobs) as server:
        yield server
        for event in server.sent:
            validate_server_event(event)
        assert server.own_schema_errors == []
        assert server.internal_errors == []


async def open_client(
    server: FakeRealtimeServer, key: str | None = "sk-test", headers: dict[str, str] | None = None
) -> ClientConnection:
    extra = dict(headers or {})
    if key is not None:
        extra["Authorization"] = f"Bearer {key}"
    return await connect(f"{server.url}?model={MODEL}", additional_headers=extra, max_size=None)


@contextlib.asynccontextmanager
async def session(
    server: FakeRealtimeServer, update: Event | None = GA_SESSION_UPDATE
) -> AsyncIterator[ClientConnection]:
    """A connected client past `session.created` (and `session.updated` when `update` is given)."""
    async with await open_client(server) as ws:
        assert (await recv(ws))["type"] == "session.created"
        if update is not None:
            await send(ws, update)
            await recv_until(ws, "session.updated")
        yield ws


async def send(ws: ClientConnection, event: Event) -> None:
    await ws.send(json.dumps(event))


async def recv(ws: ClientConnection, within: float = 3.0) -> Event:
    async with asyncio.timeout(within):
        return json.loads(await ws.recv())


async def recv_until(ws: ClientConnection, type_: str, within: float = 3.0) -> list[Event]:
    """Every event up to and including the first of `type_`."""
    events: list[Event] = []
    async with asyncio.timeout(within):
        while not events or events[-1]["type"] != type_:
            events.append(json.loads(await ws.recv()))
    return events


async def append(ws: ClientConnection, pcm: bytes) -> None:
    """Stream audio as 20 ms `input_audio_buffer.append` events (as fast as the socket takes them)."""
    step = SAMPLE_RATE * 2 * FRAME_MS // 1000
    for i in range(0, len(pcm), step):
        await send(
            ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + step]).decode()}
        )


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def audio_of(events: list[Event]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


# -- connecting ---------------------------------------------------------------------------------------------


async def test_good_key_gets_a_full_session_created() -> None:
    async with running() as server, await open_client(server) as ws:
        created = await recv(ws)
        assert created["type"] == "session.created"
        assert created["event_id"].startswith("event_")
        assert created["session"]["id"].startswith("sess_")
        assert created["session"]["model"] == MODEL
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        record = server.connections[0]
        assert record.path == "/v1/realtime"
        assert record.query == {"model": MODEL}
        assert record.headers["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("key", ["sk-wrong", None])
async def test_bad_or_missing_key_gets_invalid_api_key_then_close(key: str | None) -> None:
    async with running() as server, await open_client(server, key=key) as ws:
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_openai_beta_header_is_rejected() -> None:
    async with running() as server, await open_client(server, headers={"OpenAI-Beta": "realtime=v1"}) as ws:
        error = await recv(ws)
        assert error["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert not server.sent_of("session.created")


async def test_fatal_on_connect_sends_the_code_then_closes() -> None:
    async with running(fatal_on_connect="insufficient_quota") as server, await open_client(server) as ws:
        error = await recv(ws)
        assert error["error"]["code"] == "insufficient_quota"
        with pytest.raises(ConnectionClosed):
            await recv(ws)


async def test_rejected_handshakes_answer_503_then_accept() -> None:
    async with running(reject_connections=2) as server:
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                await open_client(server)
            assert refused.value.response.status_code == 503
        async with await open_client(server) as ws:
            assert (await recv(ws))["type"] == "session.created"
        assert server.rejected_handshakes == 2


# -- session and schema -------------------------------------------------------------------------------------


async def test_session_update_is_merged_and_echoed() -> None:
    async with running() as server, session(server, update=None) as ws:
        await send(ws, GA_SESSION_UPDATE)
        updated = (await recv_until(ws, "session.updated"))[-1]["session"]
        assert updated["instructions"] == "You are Cap, a loan companion."
        assert updated["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
        assert updated["audio"]["input"]["turn_detection"]["create_response"] is True  # kept from defaults
        assert updated["tools"][0]["name"] == "capture_lead"
        assert server.session["audio"]["output"]["voice"] == "alloy"
        assert server.schema_errors == []


async def test_the_ga_session_update_passes_the_client_schema() -> None:
    validate_client_event(GA_SESSION_UPDATE)


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        ({"type": "session.update", "session": {"type": "realtime", "modalities": ["audio"]}},
         "unknown_parameter", "session.modalities"),
        ({"type": "session.update", "session": {"type": "realtime", "temperature": 0.8}},
         "unknown_parameter", "session.temperature"),
        ({"type": "response.create", "response": {"voice": "alloy"}}, "unknown_parameter", "response.voice"),
        ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
        ({"type": "weird.event"}, "invalid_value", "type"),
    ],
)  # fmt: skip
async def test_invalid_client_events_land_in_schema_errors(event: Event, code: str, param: str) -> None:
    async with running() as server, session(server) as ws:
        await send(ws, {**event, "event_id": "evt_client_1"})
        error = (await recv_until(ws, "error"))[-1]["error"]
        assert (error["code"], error["param"], error["event_id"]) == (code, param, "evt_client_1")
        assert len(server.schema_errors) == 1
        server.schema_errors.clear()
        assert "modalities" not in server.session  # a rejected update changes nothing


async def test_non_json_is_answered_with_an_error() -> None:
    async with running() as server, session(server) as ws:
        await ws.send("not json")
        assert (await recv(ws))["error"]["code"] == "invalid_json"
        assert len(server.schema_errors) == 1
        server.schema_errors.clear()


def test_server_schema_rejects_unknown_fields_and_wrong_names() -> None:
    good = {
        "type": "input_audio_buffer.speech_started",
        "event_id": "event_1",
        "audio_start_ms": 0,
        "item_id": "i",
    }
    validate_server_event(good)
    with pytest.raises(SchemaViolation, match="Unknown parameter: 'extra'"):
        validate_server_event({**good, "extra": 1})
    with pytest.raises(SchemaViolation):
        validate_server_event({**good, "type": "response.audio.delta"})  # the beta name


# -- server VAD and responses -------------------------------------------------------------------------------


async def test_speech_gives_vad_commit_transcript_and_an_audio_response() -> None:
    async with running() as server, session(server) as ws:
        await append(ws, silence(500) + speech(600) + silence(700))
        events = await recv_until(ws, "response.done")
        started, stopped = events[0], events[1]
        assert types(events[:6]) == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.completed",
        ]
        assert started["audio_start_ms"] == 500 - 300  # onset minus prefix_padding_ms
        assert stopped["audio_end_ms"] == 500 + 600 + 500  # end of speech plus silence_duration_ms
        assert started["item_id"] == stopped["item_id"] == events[2]["item_id"]
        assert events[3]["item"]["content"][0]["type"] == "input_audio"
        assert events[5]["transcript"] == "Hello."
        response = events[6:]
        assert types(response[:5]) == [
            "response.created",
            "rate_limits.updated",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
        ]
        assert types(response[-6:]) == [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        assert audio_of(response) == server.reply_audio
        assert response[-5]["transcript"] == "Happy to help with that."
        deltas = "".join(
            e["delta"] for e in response if e["type"] == "response.output_audio_transcript.delta"
        )
        assert deltas == "Happy to help with that."
        done = response[-1]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["role"] == "assistant"
        assert done["usage"]["output_token_details"]["audio_tokens"] > 0
        assert done["usage"]["input_token_details"]["audio_tokens"] > 0
        assert server.schema_errors == []


async def test_quiet_noise_and_silence_never_trigger_vad() -> None:
    async with running() as server, session(server) as ws:
        await append(ws, silence(300) + noise(1500, rms=60.0) + silence(600))
        await send(ws, {"type": "input_audio_buffer.clear"})
        assert types(await recv_until(ws, "input_audio_buffer.cleared")) == ["input_audio_buffer.cleared"]
        assert not server.sent_of("input_audio_buffer.speech_started")


async def test_a_short_burst_below_the_suppression_knob_is_ignored() -> None:
    async with running(suppress_speech_started_below_ms=300) as server, session(server) as ws:
        await append(ws, speech(100) + silence(700))
        await send(ws, {"type": "input_audio_buffer.clear"})
        await recv_until(ws, "input_audio_buffer.cleared")
        assert not server.sent_of("input_audio_buffer.speech_started")
        await append(ws, speech(400))
        assert (await recv(ws))["type"] == "input_audio_buffer.speech_started"


async def test_speech_started_can_lag_by_real_time() -> None:
    async with running(speech_started_delay_ms=400) as server, session(server) as ws:
        began = time.monotonic()
        await append(ws, speech(300))
        assert (await recv(ws))["type"] == "input_audio_buffer.speech_started"
        assert time.monotonic() - began >= 0.38
        assert server.sent_of("input_audio_buffer.speech_started")


async def test_barge_in_cancels_the_response_and_truncate_is_checked() -> None:
    async with running(reply_audio=tone_pcm(3.0), realtime_factor=2.0) as server, session(server) as ws:
        await send(ws, {"type": "response.create"})
        first = (await recv_until(ws, "response.output_audio.delta"))[-1]
        item_id = first["item_id"]
        await append(ws, speech(300))
        events = await recv_until(ws, "response.done")
        assert "input_audio_buffer.speech_started" in types(events)
        assert types(events).index("input_audio_buffer.speech_started") < types(events).index("response.done")
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert done["output"][0]["status"] == "incomplete"
        sent_ms = pcm_ms(audio_of([first, *events]))
        assert 0 < sent_ms < 3000

        await send(ws, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                        "audio_end_ms": sent_ms + 100})  # fmt: skip
        error = (await recv_until(ws, "error"))[-1]["error"]
        assert error["code"] == "invalid_value" and error["param"] == "audio_end_ms"
        await send(ws, {"type": "conversation.item.truncate", "item_id": "item_nope", "content_index": 0,
                        "audio_end_ms": 10})  # fmt: skip
        assert (await recv_until(ws, "error"))[-1]["error"]["code"] == "item_not_found"
        await send(ws, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                        "audio_end_ms": 100})  # fmt: skip
        truncated = (await recv_until(ws, "conversation.item.truncated"))[-1]
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 100)
        assert server.truncations == [{"item_id": item_id, "content_index": 0, "audio_end_ms": 100}]
        assert server.schema_errors == []


async def test_response_create_while_active_and_cancel_semantics() -> None:
    async with running(reply_audio=tone_pcm(3.0), realtime_factor=2.0) as server, session(server) as ws:
        await send(ws, {"type": "response.cancel"})
        assert (await recv(ws))["error"]["code"] == "response_cancel_not_active"
        await send(ws, {"type": "response.create"})
        await send(ws, {"type": "response.create"})
        events = await recv_until(ws, "error")
        assert events[-1]["error"]["code"] == "conversation_already_has_active_response"
        await send(ws, {"type": "response.cancel"})
        done = (await recv_until(ws, "response.done"))[-1]["response"]
        assert done["status_details"]["reason"] == "client_cancelled"
        assert server.responses[-1]["status"] == "cancelled"


# -- function calls and items -------------------------------------------------------------------------------


async def test_function_call_flow_then_output_and_follow_up_response() -> None:
    call = {"name": "capture_lead", "arguments": json.dumps({"name": "Ana Silva", "phone": "+1 555 0100"})}
    async with running(function_calls=[call]) as server, session(server) as ws:
        await send(ws, {"type": "response.create"})
        events = await recv_until(ws, "response.done")
        assert types(events)[:5] == [
            "response.created",
            "rate_limits.updated",
            "response.output_item.added",
            "conversation.item.added",
            "response.function_call_arguments.delta",
        ]
        assert events[2]["item"]["type"] == "function_call" and events[2]["item"]["arguments"] == ""
        args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert (args_done["name"], args_done["arguments"]) == ("capture_lead", call["arguments"])
        assert args_done["call_id"].startswith("call_")
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
        assert deltas == call["arguments"]
        assert types(events)[-3:] == ["response.output_item.done", "conversation.item.done", "response.done"]
        done = events[-1]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["type"] == "function_call"
        assert done["output"][0]["call_id"] == args_done["call_id"]

        output = {"type": "function_call_output", "call_id": args_done["call_id"], "output": '{"ok": true}'}
        await send(ws, {"type": "conversation.item.create", "item": output})
        added = (await recv_until(ws, "conversation.item.done"))[0]
        assert added["type"] == "conversation.item.added"
        assert added["previous_item_id"] == args_done["item_id"]
        await send(ws, {"type": "response.create"})
        follow_up = await recv_until(ws, "response.done")
        assert audio_of(follow_up) == server.reply_audio
        assert [o["call_id"] for o in server.function_outputs] == [args_done["call_id"]]
        assert server.schema_errors == []


async def test_a_cancelled_function_call_response_says_so_in_response_done() -> None:
    call = {"name": "capture_lead", "arguments": '{"name": "Ana"}'}
    async with (
        running(function_calls=[call], cancel_function_call_response=True) as server,
        session(server) as ws,
    ):
        await send(ws, {"type": "response.create"})
        events = await recv_until(ws, "response.done")
        assert "response.function_call_arguments.done" in types(events)
        assert events[-1]["response"]["status"] == "cancelled"
        assert events[-1]["response"]["output"][0]["status"] == "incomplete"


async def test_history_items_can_be_created_retrieved_and_deleted() -> None:
    async with running() as server, session(server) as ws:
        message = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hi, I'm Ana."}],
        }
        await send(ws, {"type": "conversation.item.create", "item": message})
        item = (await recv_until(ws, "conversation.item.done"))[-1]["item"]
        assert item["id"].startswith("item_") and item["content"] == message["content"]
        await send(ws, {"type": "conversation.item.retrieve", "item_id": item["id"]})
        assert (await recv(ws))["item"]["id"] == item["id"]
        await send(ws, {"type": "conversation.item.delete", "item_id": item["id"]})
        assert (await recv(ws)) | {"event_id": None} == {
            "type": "conversation.item.deleted",
            "event_id": None,
            "item_id": item["id"],
        }
        await send(ws, {"type": "conversation.item.delete", "item_id": item["id"]})
        assert (await recv(ws))["error"]["code"] == "item_not_found"
        assert server.deleted_items == [item["id"]]
        assert len(server.created_items) == 1


async def test_manual_commit_needs_100_ms() -> None:
    async with running() as server, session(server) as ws:
        await send(ws, {"type": "input_audio_buffer.commit"})
        assert (await recv(ws))["error"]["code"] == "input_audio_buffer_commit_empty"
        await append(ws, silence(200))
        await send(ws, {"type": "input_audio_buffer.commit"})
        assert types(await recv_until(ws, "conversation.item.input_audio_transcription.completed"))[0] == (
            "input_audio_buffer.committed"
        )
        assert not server.sent_of("response.created")  # a manual commit does not start a response


# -- failure hooks ------------------------------------------------------------------------------------------


async def test_send_raw_reaches_the_client_verbatim() -> None:
    async with running() as server, session(server) as ws:
        for text in (
            "not json",
            '{"type":"weird.event"}',
            '{"type":"response.output_audio.delta","delta":"@@@"}',
        ):
            await server.send_raw(text)
            assert await ws.recv() == text


async def test_expire_session_sends_session_expired_and_closes_1001() -> None:
    async with running() as server, session(server) as ws:
        await server.expire_session()
        assert (await recv(ws))["error"]["code"] == "session_expired"
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


@pytest.mark.parametrize("code", [1011, 1012, 1006])
async def test_drop_connections_closes_with_the_code(code: int) -> None:
    async with running() as server, session(server) as ws:
        await server.drop_connections(code)
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        received = ws.close_code
        assert received == code
        await server.wait_for(lambda: server.connections[0].close_code is not None, 2.0)


async def test_wait_for_wakes_on_client_events_and_times_out() -> None:
    async with running() as server, session(server) as ws:
        waiter = asyncio.create_task(server.wait_for(lambda: server.events_of("response.cancel"), 2.0))
        await send(ws, {"type": "response.cancel"})
        await waiter
        with pytest.raises(TimeoutError):
            await server.wait_for(lambda: server.events_of("response.create"), 0.05)
