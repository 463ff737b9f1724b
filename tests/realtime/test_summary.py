"""The post-call summary: a text-only, out-of-band reply from the same Realtime session before it closes,
against the fake service over a real WebSocket on 127.0.0.1."""

from __future__ import annotations

import dataclasses

from realtime.engine import VoiceSession
from realtime.file_transport import run_file_conversation
from realtime.protocol import SessionConfig
from realtime.tools import ToolRegistry
from tests.conftest import load_frames
from tests.realtime.test_engine import silence
from tests.realtime_fake import FakeRealtimeServer

SUMMARY = "Ann Lee asked about a DSCR rental loan; Cap quoted a range and booked a call for Tuesday."


async def test_the_same_session_writes_the_summary_in_text_before_it_closes() -> None:
    async with FakeRealtimeServer(text_reply=SUMMARY) as server:
        config = dataclasses.replace(SessionConfig(api_key="sk-test", url=server.url, instructions="You are Cap."),
                                     prices_per_mtok={"text_output": 16.0})
        session = VoiceSession(config, ToolRegistry())
        await session.start()
        try:
            await run_file_conversation(session, silence(200) + load_frames("hello.wav") + silence(1000),
                                        tail_seconds=8, pace=4.0, speakers=frozenset({7}))
            cost_before = session.metrics.cost_usd
            summary = await session.summarize("Summarise the call for the lender's staff.")
        finally:
            await session.aclose()
    assert summary == SUMMARY
    assert not server.schema_errors and not server.own_schema_errors and not server.internal_errors
    assert len(server.connections) == 1  # the same session, not a new one
    request = [e for e in server.received if e["type"] == "response.create" and e.get("response")][-1]
    assert request["response"]["output_modalities"] == ["text"] and request["response"]["conversation"] == "none"
    assert server.responses[-1]["metadata"] == {"cap": "summary"}
    assert SUMMARY not in [item.get("content") for item in server.created_items]  # nothing added to the call
    assert session.metrics.cost_usd > cost_before  # its tokens are counted like any reply's


async def test_a_session_already_gone_gives_no_summary() -> None:
    async with FakeRealtimeServer() as server:
        session = VoiceSession(SessionConfig(api_key="sk-test", url=server.url), ToolRegistry())
        await session.start()
        await session.aclose()
        assert await session.summarize("Summarise.") is None


def test_a_reply_in_progress_is_cancelled_and_the_summary_asked_for_after_it() -> None:
    from realtime.conversation import Conversation
    from realtime.metrics import SessionMetrics
    from realtime.playback import PlaybackBuffer
    from tests.realtime_fake.schema import validate_client_event

    clock = lambda: 0.0  # noqa: E731
    conv = Conversation(SessionConfig(api_key="k"), [], PlaybackBuffer(clock), SessionMetrics(), clock)
    conv.on_connected()
    conv.events_to_send()
    conv.handle_event({"type": "response.created", "response": {"id": "resp_1", "metadata": None}})
    conv.request_summary("Summarise.")
    assert [e["type"] for e in conv.events_to_send()] == ["response.cancel"]
    conv.handle_event({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}})
    [request] = conv.events_to_send()
    validate_client_event(request)
    assert request["response"]["metadata"] == {"cap": "summary"}
    conv.handle_event({"type": "response.created", "response": {"id": "resp_2", "metadata": {"cap": "summary"}}})
    assert not conv.idle  # the summary is being written: a recycle at an idle moment would cut it off
    conv.handle_event({"type": "response.done", "response": {
        "id": "resp_2", "status": "completed", "metadata": {"cap": "summary"},
        "output": [{"type": "message", "content": [{"type": "output_text", "text": " A short summary. "}]}]}})
    assert conv.summary_finished and conv.summary == "A short summary." and conv.idle
    assert conv.events_to_send() == []  # no reply is asked for after it
