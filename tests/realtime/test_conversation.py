"""The conversation's decisions without sockets or sleeps: a fake clock and scripted server events."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from realtime.audio import FRAME_BYTES, SILENCE_FRAME, SpeechOnsetDetector
from realtime.conversation import Conversation
from realtime.metrics import SessionMetrics
from realtime.playback import PlaybackBuffer
from realtime.protocol import SessionConfig
from tests.realtime_fake.schema import validate_client_event

TOOL = {"type": "function", "name": "echo", "description": "Echo.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tone_24k(ms: int, freq: float = 440.0) -> bytes:
    t = np.arange(ms * 24) / 24000
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def delta(item_id: str, pcm: bytes, response_id: str = "resp_1") -> dict:
    return {"type": "response.output_audio.delta", "event_id": "e", "response_id": response_id,
            "item_id": item_id, "output_index": 0, "content_index": 0,
            "delta": base64.b64encode(pcm).decode()}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def conv(clock: Clock) -> Conversation:
    config = SessionConfig(api_key="sk-test", instructions="Be Cap.")
    conversation = Conversation(config, [TOOL], PlaybackBuffer(clock), SessionMetrics(), clock)
    conversation.on_connected()
    return conversation


def sent(conv: Conversation) -> list[dict]:
    events = conv.events_to_send()
    for event in events:
        validate_client_event(event)
    return events


def start_reply(conv: Conversation, item_id: str = "item_a", ms: int = 1000, response_id: str = "resp_1") -> None:
    conv.handle_event({"type": "response.created", "response": {"id": response_id, "status": "in_progress"}})
    for _ in range(ms // 100):
        conv.handle_event(delta(item_id, tone_24k(100), response_id))


def play_out(conv: Conversation) -> int:
    """Play every queued frame (the transport's ticks), then run the timers; returns the frames played."""
    frames = 0
    while conv.playback.read_frame() is not None:
        frames += 1
        conv.tick()
    conv.tick()
    return frames


def test_first_events_configure_the_seed_session(conv: Conversation) -> None:
    (update,) = sent(conv)
    session = update["session"]
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
        "create_response": True, "interrupt_response": True}
    assert session["audio"]["output"]["voice"] == "alloy"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["transcription"]["model"]
    assert session["tools"] == [TOOL]
    assert "sk-test" not in json.dumps(update)


def test_uplink_appends_at_most_40_ms_per_event(conv: Conversation) -> None:
    sent(conv)
    for _ in range(10):
        conv.feed_input(SILENCE_FRAME)
    appends = sent(conv)
    assert appends and all(e["type"] == "input_audio_buffer.append" for e in appends)
    sizes = [len(base64.b64decode(e["audio"])) for e in appends]
    assert max(sizes) <= 40 * 48
    assert 180 * 48 <= sum(sizes) <= 200 * 48  # ~200 ms of 24 kHz mono, minus the resampler's delay


def test_no_uplink_while_disconnected(conv: Conversation) -> None:
    sent(conv)
    conv.on_disconnected()
    conv.feed_input(SILENCE_FRAME)
    assert sent(conv) == []


def uplink_ms(events: list[dict]) -> int:
    return sum(len(base64.b64decode(e["audio"])) for e in events if e["type"] == "input_audio_buffer.append") // 48


def test_digital_silence_goes_up_only_for_a_tail_after_the_last_sound(conv: Conversation,
                                                                       speech_frames: list[bytes]) -> None:
    sent(conv)
    for frame in speech_frames[:50]:
        conv.feed_input(frame)
    assert 980 <= uplink_ms(sent(conv)) <= 1000
    tail = []
    for _ in range(200):  # 4 s of nobody transmitting
        conv.feed_input(SILENCE_FRAME)
        tail.append(uplink_ms(sent(conv)))
    # The server VAD's 500 ms silence_duration_ms plus 1 s of margin, then nothing more.
    assert 1500 <= sum(tail) <= 1520
    assert not any(tail[80:])
    conv.feed_input(speech_frames[50])
    assert uplink_ms(sent(conv)) > 0, "speech goes up again at once"


def test_a_new_session_gets_the_silence_tail_again(conv: Conversation) -> None:
    sent(conv)
    for _ in range(200):
        conv.feed_input(SILENCE_FRAME)
    sent(conv)
    conv.on_disconnected()
    conv.on_connected()
    sent(conv)
    conv.feed_input(SILENCE_FRAME)
    assert uplink_ms(sent(conv)) > 0


def test_frames_alone_time_the_barge_in_window_even_in_long_silence(clock: Clock,
                                                                     speech_frames: list[bytes]) -> None:
    """The engine's housekeeping runs once a second: the 20 ms frames must resume a paused reply on time,
    also after the uplink has stopped sending silence (a window longer than the 1.5 s silence tail)."""
    config = SessionConfig(api_key="sk-test", barge_in_confirm_seconds=3.0)
    conv = Conversation(config, [], PlaybackBuffer(clock), SessionMetrics(), clock)
    conv.on_connected()
    start_reply(conv, ms=10_000)
    for frame in speech_frames[:25]:
        conv.feed_input(frame)
        clock.now += 0.02
        if conv.playback.paused:
            break
    assert conv.playback.paused
    paused_at = clock.now
    while conv.playback.paused:
        conv.feed_input(SILENCE_FRAME)  # no conv.tick(): only frames
        clock.now += 0.02
    assert 3.0 <= clock.now - paused_at <= 3.04
    assert conv.metrics.paused_then_resumed == 1


def test_the_local_vad_fires_on_the_same_frame_after_a_long_skipped_silence(
        conv: Conversation, speech_frames: list[bytes]) -> None:
    frames = [SILENCE_FRAME] * 300 + speech_frames[:40]
    detector = SpeechOnsetDetector()
    expected = next(i for i, frame in enumerate(frames) if detector.update(frame))
    start_reply(conv, ms=10_000)
    paused_at = None
    for i, frame in enumerate(frames):
        conv.feed_input(frame)
        if conv.playback.paused:
            paused_at = i
            break
    assert paused_at == expected


def test_speech_under_way_when_a_reply_starts_pauses_it_after_40_ms(
        conv: Conversation, speech_frames: list[bytes]) -> None:
    """The local VAD listens only while Cap has something to say (issue 14); speech that began before the reply
    counts as an onset once the reply starts, so Cap does not talk over someone still speaking."""
    detector = SpeechOnsetDetector()
    onset = next(i for i, frame in enumerate(speech_frames) if detector.update(frame))
    for frame in speech_frames[: onset + 5]:  # the caller has been talking for a while; Cap is quiet
        conv.feed_input(frame)
    start_reply(conv, ms=2000)
    for frame in speech_frames[onset + 5 : onset + 7]:
        conv.feed_input(frame)
    assert conv.playback.paused


def test_reply_plays_without_gaps_and_counts_heard_ms(conv: Conversation) -> None:
    start_reply(conv, ms=1000)
    conv.handle_event({"type": "response.output_audio.done", "item_id": "item_a", "response_id": "resp_1",
                       "output_index": 0, "content_index": 0, "event_id": "e"})
    frames = []
    while (frame := conv.playback.read_frame()) is not None:
        frames.append(frame)
    assert len(frames) == 50  # 1000 ms in 20 ms frames, no gap, nothing lost
    assert all(len(f) == FRAME_BYTES for f in frames)
    pcm = np.frombuffer(b"".join(frames), "<i2").reshape(-1, 2)
    assert np.abs(pcm[2000:-2000]).max() > 7000  # the tone, not silence, all through
    assert conv.playback.played_ms("item_a") == 1000


def test_barge_in_truncates_at_the_heard_position(conv: Conversation) -> None:
    sent(conv)
    start_reply(conv, ms=2000)
    for _ in range(15):  # the caller heard 300 ms before interrupting
        conv.playback.read_frame()
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": "u1"})
    events = sent(conv)
    assert [e["type"] for e in events] == ["response.cancel", "conversation.item.truncate"]
    assert events[1] == {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
                         "audio_end_ms": 300}
    assert conv.playback.read_frame() is None  # silent at the next tick
    assert conv.metrics.barge_ins == 1
    # Deltas still in flight for the interrupted reply are not played.
    conv.handle_event(delta("item_a", tone_24k(100)))
    assert conv.playback.read_frame() is None


def test_barge_in_before_anything_was_heard_deletes_the_item(conv: Conversation) -> None:
    sent(conv)
    start_reply(conv, ms=500)
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    events = sent(conv)
    assert {"type": "conversation.item.delete", "item_id": "item_a"} in events
    assert all(e["type"] != "conversation.item.truncate" for e in events)


def test_no_cancel_once_the_response_is_done(conv: Conversation) -> None:
    sent(conv)
    start_reply(conv, ms=1000)
    conv.handle_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": []}})
    conv.playback.read_frame()
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    types = [e["type"] for e in sent(conv)]
    assert "response.cancel" not in types
    assert "conversation.item.truncate" in types


def test_speech_with_cap_quiet_is_not_a_barge_in(conv: Conversation) -> None:
    sent(conv)
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    assert sent(conv) == []
    assert conv.metrics.barge_ins == 0


def test_local_vad_pauses_at_once_and_a_cough_resumes(conv: Conversation, clock: Clock,
                                                      speech_frames: list[bytes]) -> None:
    sent(conv)
    start_reply(conv, ms=3000)
    conv.playback.read_frame()
    for frame in speech_frames[:25]:  # 500 ms of caller speech, the server says nothing
        conv.feed_input(frame)
        clock.now += 0.02
        if conv.playback.paused:
            break
    assert conv.playback.paused and conv.playback.read_frame() is None
    clock.now += 0.7
    conv.tick()
    assert not conv.playback.paused and conv.playback.read_frame() is not None
    assert conv.metrics.paused_then_resumed == 1
    assert not [e for e in sent(conv) if e["type"] != "input_audio_buffer.append"]


def function_call_done(status: str, call_id: str = "call_1", name: str = "echo") -> dict:
    return {"type": "response.done", "response": {
        "id": "resp_f", "status": status,
        "output": [{"type": "function_call", "id": "item_f", "call_id": call_id, "name": name,
                    "arguments": '{"text": "hi"}'}]}}


def test_a_function_call_without_a_call_id_is_skipped_and_the_others_run(conv: Conversation) -> None:
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    event = function_call_done("completed")
    event["response"]["output"].insert(0, {"type": "function_call", "id": "item_x", "name": "echo",
                                            "arguments": "{}"})
    conv.handle_event(event)
    assert [call.call_id for call in conv.tool_calls_to_run()] == ["call_1"]


def test_completed_function_call_runs_then_asks_for_a_response(conv: Conversation) -> None:
    sent(conv)
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_1", "echo", {"text": "hi"})
    conv.on_tool_result(call, {"ok": True, "echo": "hi"})
    events = sent(conv)
    assert [e["type"] for e in events] == ["conversation.item.create", "response.create"]
    assert events[0]["item"]["call_id"] == "call_1"
    assert json.loads(events[0]["item"]["output"]) == {"ok": True, "echo": "hi"}


def test_cancelled_response_tool_never_runs(conv: Conversation) -> None:
    conv.handle_event({"type": "response.function_call_arguments.done", "call_id": "call_1", "name": "echo",
                       "arguments": "{}", "item_id": "item_f", "output_index": 0, "response_id": "resp_f"})
    conv.handle_event(function_call_done("cancelled"))
    assert conv.tool_calls_to_run() == []


def test_response_create_waits_for_the_active_response(conv: Conversation) -> None:
    sent(conv)
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    conv.handle_event({"type": "response.created", "response": {"id": "resp_2"}})  # the caller spoke again
    conv.on_tool_result(call, {"ok": True})
    assert [e["type"] for e in sent(conv)] == ["conversation.item.create"]
    conv.handle_event({"type": "response.done", "response": {"id": "resp_2", "status": "completed"}})
    assert [e["type"] for e in sent(conv)] == ["response.create"]


def test_reconnect_replays_the_conversation(conv: Conversation) -> None:
    conv.feed_input(SILENCE_FRAME, speakers=[42])
    conv.handle_event({"type": "input_audio_buffer.committed", "item_id": "u1", "previous_item_id": None})
    conv.handle_event({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
                       "content_index": 0, "transcript": "I have a duplex in Austin."})
    start_reply(conv, ms=200)
    conv.handle_event({"type": "response.output_audio_transcript.done", "item_id": "item_a",
                       "response_id": "resp_1", "output_index": 0, "content_index": 0,
                       "transcript": "Great, what's the price?"})
    conv.handle_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    play_out(conv)
    entries = conv.transcripts_ready()
    assert [(e.role, e.text) for e in entries] == [("caller", "I have a duplex in Austin."),
                                                   ("cap", "Great, what's the price?")]
    assert entries[0].speakers == frozenset({42})
    sent(conv)
    conv.on_disconnected()
    conv.on_connected()
    events = sent(conv)
    assert events[0]["type"] == "session.update"
    assert [(e["item"]["role"], e["item"]["content"][0]["text"]) for e in events[1:]] == [
        ("user", "I have a duplex in Austin."), ("assistant", "Great, what's the price?")]


def test_a_tool_result_after_a_reconnect_reaches_the_new_session_as_a_note(conv: Conversation) -> None:
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    conv.on_disconnected()
    conv.on_connected()
    sent(conv)
    conv.on_tool_result(call, {"ok": True, "booked": True})  # its side effects happened: don't lose them
    note, create = sent(conv)
    assert note["item"]["role"] == "system" and '"booked": true' in note["item"]["content"][0]["text"]
    assert create == {"type": "response.create"}
    conv.on_disconnected()
    conv.on_connected()
    assert any(e.get("item", {}).get("role") == "system" for e in sent(conv)), "replayed on later sockets too"


@pytest.mark.parametrize("code", ["invalid_api_key", "insufficient_quota"])
def test_fatal_error_codes_end_the_session(conv: Conversation, code: str) -> None:
    conv.handle_event({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                   "message": "Incorrect API key provided: sk-abc123456."}})
    assert conv.fatal_error and code in conv.fatal_error and "sk-abc" not in conv.fatal_error


def test_garbage_events_are_survived(conv: Conversation) -> None:
    start_reply(conv, ms=200)
    for event in ({"type": "weird.event"}, {"type": "response.output_audio.delta", "item_id": "item_a",
                                             "delta": "@@@not base64"},
                  {"type": "response.output_audio.delta"}, {"type": "response.done", "response": None},
                  {"type": "input_audio_buffer.committed"}, {"type": "error"}):
        conv.handle_event(event)
    assert conv.fatal_error is None
    assert conv.playback.read_frame() is not None


def test_usage_is_totalled_with_an_estimated_cost(clock: Clock) -> None:
    config = SessionConfig(api_key="k", prices_per_mtok={"audio_input": 32.0, "audio_output": 64.0})
    conv = Conversation(config, [], PlaybackBuffer(clock), SessionMetrics(), clock)
    conv.handle_event({"type": "response.done", "response": {"id": "r", "status": "completed", "usage": {
        "total_tokens": 1500, "input_tokens": 1000, "output_tokens": 500,
        "input_token_details": {"audio_tokens": 1000, "text_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"audio_tokens": 500, "text_tokens": 0}}}})
    summary = conv.metrics.summary()
    assert summary["tokens"]["audio_input"] == 1000 and summary["tokens"]["audio_output"] == 500
    assert summary["estimated_cost_usd"] == pytest.approx(1000 * 32e-6 + 500 * 64e-6)


@pytest.mark.parametrize("cached_details, expected_usd", [
    # 1920 of the 2000 text tokens cached, the 500 audio tokens not: audio is billed in full.
    ({"text_tokens": 1920, "audio_tokens": 0}, 80 * 4e-6 + 500 * 32e-6 + 1920 * 0.4e-6),
    ({"text_tokens": 1520, "audio_tokens": 400}, 480 * 4e-6 + 100 * 32e-6 + 1920 * 0.4e-6),
    (None, (2000 - 1536) * 4e-6 + (500 - 384) * 32e-6 + 1920 * 0.4e-6),  # no split given: in proportion
])
def test_cached_tokens_are_billed_by_their_own_kind(clock: Clock, cached_details: dict | None,
                                                    expected_usd: float) -> None:
    prices = {"text_input": 4.0, "audio_input": 32.0, "cached_input": 0.4}
    metrics = SessionMetrics()
    details = {"text_tokens": 2000, "audio_tokens": 500, "cached_tokens": 1920}
    if cached_details is not None:
        details["cached_tokens_details"] = cached_details
    metrics.add_usage({"input_token_details": details}, prices)
    assert metrics.cost_usd == pytest.approx(expected_usd)


def test_truncation_never_claims_the_items_last_100_ms(conv: Conversation) -> None:
    sent(conv)
    start_reply(conv, ms=500)
    for _ in range(24):  # 480 ms of a 500 ms item heard
        conv.playback.read_frame()
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    truncate = next(e for e in sent(conv) if e["type"] == "conversation.item.truncate")
    assert truncate["audio_end_ms"] == 400  # the server's copy may be shorter than what we received


def test_a_reply_cut_by_a_reconnect_is_replayed_and_can_still_be_interrupted(conv: Conversation) -> None:
    start_reply(conv, ms=3000)
    conv.handle_event({"type": "response.output_audio_transcript.delta", "item_id": "item_a", "delta": "Hello there"})
    for _ in range(10):
        conv.playback.read_frame()
    conv.on_disconnected()
    conv.on_connected()
    assert conv.transcripts_ready() == []  # still playing: logged once it has played out or been cut
    assert any(e.get("item", {}).get("role") == "assistant" for e in sent(conv)), "replayed"
    assert conv.playback.queued_ms() > 2000  # what arrived still plays...
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    assert conv.playback.queued_ms() == 0  # ...and the caller can cut it
    assert sent(conv) == []  # but the item belongs to the old session: nothing to truncate in this one
    assert [(e.role, e.text, e.interrupted) for e in conv.transcripts_ready()] == [("cap", "Hello there", True)]


def test_barge_in_during_a_preamble_truncates_it_and_deletes_the_unheard_reply(conv: Conversation) -> None:
    sent(conv)
    start_reply(conv, item_id="item_a", ms=2000, response_id="resp_1")  # "Let me check that..."
    conv.handle_event({"type": "response.output_audio.done", "item_id": "item_a", "response_id": "resp_1"})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    conv.on_tool_result(call, {"ok": True})
    start_reply(conv, item_id="item_b", ms=2000, response_id="resp_2")  # the answer streams in behind it
    sent(conv)
    for _ in range(25):
        conv.playback.read_frame()  # 500 ms of the preamble heard
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    events = sent(conv)
    assert {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
            "audio_end_ms": 500} in events
    assert {"type": "conversation.item.delete", "item_id": "item_b"} in events


def test_deltas_of_a_response_cancelled_before_its_first_delta_stay_silent(conv: Conversation) -> None:
    conv.handle_event({"type": "response.created", "response": {"id": "resp_1"}})
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    for _ in range(5):
        conv.handle_event(delta("item_a", tone_24k(100), "resp_1"))
    assert conv.playback.queued_ms() == 0


def test_a_rejected_response_create_is_retried_after_the_active_response(conv: Conversation) -> None:
    sent(conv)
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    conv.on_tool_result(call, {"ok": True})
    assert [e["type"] for e in sent(conv)] == ["conversation.item.create", "response.create"]
    conv.handle_event({"type": "error", "error": {"type": "invalid_request_error",
                                                   "code": "conversation_already_has_active_response"}})
    conv.handle_event({"type": "response.created", "response": {"id": "resp_2"}})
    conv.handle_event({"type": "response.done", "response": {"id": "resp_2", "status": "completed"}})
    assert [e["type"] for e in sent(conv)] == ["response.create"], "the tool's answer must still be spoken"


def test_a_tool_answer_waits_for_a_talking_caller(conv: Conversation, clock: Clock) -> None:
    sent(conv)
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    conv.on_tool_result(call, {"ok": True})
    assert [e["type"] for e in sent(conv)] == ["conversation.item.create"]  # no reply over the caller
    conv.handle_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "u1"})
    clock.now += 2.0
    conv.tick()  # the server never answered that turn: ask ourselves
    assert [e["type"] for e in sent(conv)] == ["response.create"]


def test_a_server_answer_to_the_callers_turn_covers_a_deferred_tool_answer(conv: Conversation,
                                                                              clock: Clock) -> None:
    sent(conv)
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    conv.on_tool_result(call, {"ok": True})
    conv.handle_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "u1"})
    conv.handle_event({"type": "response.created", "response": {"id": "resp_2"}})
    clock.now += 2.0
    conv.tick()
    conv.handle_event({"type": "response.done", "response": {"id": "resp_2", "status": "completed"}})
    assert [e["type"] for e in sent(conv)] == ["conversation.item.create"]  # no second reply


def replayed_after_a_reconnect(conv: Conversation) -> list[str]:
    """The texts a new session is told (what the caller and Cap said so far)."""
    conv.on_disconnected()
    conv.on_connected()
    return [e["item"]["content"][0]["text"] for e in sent(conv) if e["type"] == "conversation.item.create"]


def test_replay_after_a_barge_in_keeps_only_what_was_heard(conv: Conversation) -> None:
    start_reply(conv, ms=2000)
    conv.handle_event({"type": "response.output_audio_transcript.delta", "item_id": "item_a",
                       "delta": "The rate is seven and a quarter percent for thirty years."})
    for _ in range(25):  # 500 ms of 2000 ms heard
        conv.playback.read_frame()
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    (entry,) = conv.transcripts_ready()
    assert entry.interrupted
    (replayed,) = replayed_after_a_reconnect(conv)
    assert replayed.endswith("…") and len(replayed) < 25


def whole_reply(conv: Conversation, text: str, ms: int = 2000) -> None:
    """A reply that has fully arrived (audio, transcript, response.done) long before it has been played."""
    start_reply(conv, ms=ms)
    conv.handle_event({"type": "response.output_audio.done", "item_id": "item_a", "response_id": "resp_1"})
    conv.handle_event({"type": "response.output_audio_transcript.done", "item_id": "item_a",
                       "response_id": "resp_1", "transcript": text})
    conv.handle_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})


def test_cap_is_reported_once_the_reply_has_played_out(conv: Conversation) -> None:
    whole_reply(conv, "The rate is seven and a quarter percent.")
    assert conv.transcripts_ready() == []  # arrived, but the caller has not heard it yet
    assert play_out(conv) >= 95
    (entry,) = conv.transcripts_ready()
    assert (entry.text, entry.interrupted) == ("The rate is seven and a quarter percent.", False)


def test_a_barge_in_after_the_whole_reply_arrived_cuts_the_log_and_the_replay(conv: Conversation) -> None:
    sent(conv)
    whole_reply(conv, "The rate is seven and a quarter percent for thirty years.")
    for _ in range(25):  # 500 ms of 2000 ms heard
        conv.playback.read_frame()
        conv.tick()
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    assert {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
            "audio_end_ms": 500} in sent(conv)
    (entry,) = conv.transcripts_ready()
    assert entry.interrupted
    (replayed,) = replayed_after_a_reconnect(conv)
    assert replayed.endswith("…") and len(replayed) < 25


def test_a_new_item_of_a_cut_reply_is_deleted_and_never_logged_or_replayed(conv: Conversation) -> None:
    sent(conv)
    start_reply(conv, ms=1000)
    for _ in range(10):
        conv.playback.read_frame()
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    sent(conv)
    conv.handle_event(delta("item_b", tone_24k(100)))  # the server had already begun a second item
    assert {"type": "conversation.item.delete", "item_id": "item_b"} in sent(conv)
    conv.handle_event({"type": "response.output_audio_transcript.done", "item_id": "item_b",
                       "response_id": "resp_1", "transcript": "Never heard words."})
    conv.handle_event({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}})
    assert all(e.item_id != "item_b" for e in conv.transcripts_ready())
    conv.on_disconnected()
    conv.on_connected()
    assert "Never heard words." not in json.dumps(sent(conv))


def test_a_reply_cut_after_a_reconnect_is_replayed_only_as_heard(conv: Conversation) -> None:
    start_reply(conv, ms=2000)
    conv.handle_event({"type": "response.output_audio_transcript.done", "item_id": "item_a", "response_id": "resp_1",
                       "transcript": "The rate is seven and a quarter percent for thirty years."})
    for _ in range(10):
        conv.playback.read_frame()
    conv.on_disconnected()
    conv.on_connected()  # still playing: reported and replayed whole, as the caller is about to hear it
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})
    (replayed,) = replayed_after_a_reconnect(conv)
    assert replayed.endswith("…") and len(replayed) < 20


def test_a_session_ending_mid_reply_still_logs_it_as_cut(conv: Conversation) -> None:
    whole_reply(conv, "Let me walk you through the documents we need.")
    for _ in range(50):
        conv.playback.read_frame()
    conv.finish()
    (entry,) = conv.transcripts_ready()
    assert entry.interrupted and entry.text == "Let me walk you through the documents we need."


def test_a_failed_transcription_forgets_the_turn(conv: Conversation) -> None:
    conv.feed_input(SILENCE_FRAME, speakers=[5])
    conv.handle_event({"type": "input_audio_buffer.committed", "item_id": "u1"})
    conv.handle_event({"type": "conversation.item.input_audio_transcription.failed", "item_id": "u1",
                       "content_index": 0, "error": {"message": "no speech"}})
    assert conv._turns == {}


def test_turns_whose_transcript_never_comes_are_not_kept_for_ever(conv: Conversation) -> None:
    for n in range(500):
        conv.handle_event({"type": "input_audio_buffer.committed", "item_id": f"u{n}"})
    assert len(conv._turns) <= 50 and "u499" in conv._turns


# ----- issue 13: replies owed across a reconnect, tool results kept, tool-only rounds bounded -----

def test_a_tool_result_that_lands_while_disconnected_is_delivered_once_after_the_replay(conv: Conversation) -> None:
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    sent(conv)
    conv.on_disconnected()
    conv.on_tool_result(call, {"ok": True, "lead_id": 7})  # the reconnect is slower than the tool
    assert sent(conv) == [], "nothing may go to a socket that is gone"
    conv.on_connected()
    events = sent(conv)
    assert [e["type"] for e in events] == ["session.update", "conversation.item.create", "response.create"]
    assert '"lead_id": 7' in events[1]["item"]["content"][0]["text"]
    conv.handle_event({"type": "response.created", "response": {"id": "resp_2"}})
    conv.handle_event({"type": "response.done", "response": {"id": "resp_2", "status": "completed"}})
    conv.on_disconnected()
    conv.on_connected()
    assert [e["type"] for e in sent(conv)].count("response.create") == 0, "delivered once, not on every socket"


def test_a_tool_output_sent_into_a_socket_that_died_unread_is_replayed_as_a_note(conv: Conversation) -> None:
    sent(conv)
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    conv.on_tool_result(call, {"ok": True, "booked": True})
    assert [e["type"] for e in sent(conv)] == ["conversation.item.create", "response.create"]
    conv.on_disconnected()  # the server never said it added the output
    conv.on_connected()
    events = sent(conv)
    assert [e["type"] for e in events] == ["session.update", "conversation.item.create", "response.create"]
    assert '"booked": true' in events[1]["item"]["content"][0]["text"]


def test_a_tool_output_the_server_added_is_not_sent_again(conv: Conversation) -> None:
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    conv.on_tool_result(call, {"ok": True})
    conv.handle_event({"type": "conversation.item.added", "previous_item_id": "item_f",
                       "item": {"id": "item_o", "type": "function_call_output", "call_id": "call_1",
                                "output": "{}"}})
    conv.handle_event({"type": "response.created", "response": {"id": "resp_2"}})
    start_reply(conv, "item_b", ms=300, response_id="resp_2")
    conv.handle_event({"type": "response.output_audio.done", "item_id": "item_b", "response_id": "resp_2",
                       "output_index": 0, "content_index": 0})
    conv.handle_event({"type": "response.done", "response": {"id": "resp_2", "status": "completed"}})
    sent(conv)
    conv.on_disconnected()
    conv.on_connected()
    assert [e["type"] for e in sent(conv)] == ["session.update"], "nothing owed, nothing doubled"


def test_a_reply_cut_off_by_a_dead_socket_is_asked_for_on_the_new_one(conv: Conversation) -> None:
    start_reply(conv, ms=500)  # streaming; no output_audio.done yet
    assert conv.reply_owed
    sent(conv)
    conv.on_disconnected()
    conv.on_connected()
    assert [e["type"] for e in sent(conv)][-1] == "response.create"


def test_a_callers_turn_left_unanswered_by_a_dead_socket_is_answered_on_the_new_one(conv: Conversation) -> None:
    conv.handle_event({"type": "input_audio_buffer.committed", "item_id": "u1", "previous_item_id": None})
    assert conv.reply_owed
    sent(conv)
    conv.on_disconnected()
    conv.on_connected()
    assert [e["type"] for e in sent(conv)][-1] == "response.create"
    conv.handle_event({"type": "response.created", "response": {"id": "resp_9"}})
    assert conv.reply_owed  # a reply in progress owes events until response.done
    conv.handle_event({"type": "response.done", "response": {"id": "resp_9", "status": "completed"}})
    assert not conv.reply_owed


def tool_only_round(conv: Conversation, n: int) -> dict:
    """One response that only calls a tool, and its output going back; returns the response.create sent."""
    conv.handle_event({"type": "response.created", "response": {"id": f"resp_{n}"}})
    done = function_call_done("completed", call_id=f"call_{n}")
    done["response"]["id"] = f"resp_{n}"
    conv.handle_event(done)
    (call,) = conv.tool_calls_to_run()
    conv.on_tool_result(call, {"ok": True})
    return next(e for e in sent(conv) if e["type"] == "response.create")


def test_tool_only_rounds_are_bounded_then_the_model_must_speak(clock: Clock) -> None:
    config = SessionConfig(api_key="sk-test", max_tool_rounds=2)
    conv = Conversation(config, [TOOL], PlaybackBuffer(clock), SessionMetrics(), clock)
    conv.on_connected()
    sent(conv)
    assert "response" not in tool_only_round(conv, 1)
    assert tool_only_round(conv, 2) == {"type": "response.create", "response": {"tool_choice": "none"}}
    assert conv.metrics.tool_loops_stopped == 1
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u2"})
    conv.handle_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "u2"})
    assert "response" not in tool_only_round(conv, 3), "the caller spoke: the count starts again"


def test_words_said_while_reconnecting_reach_the_new_session(conv: Conversation) -> None:
    loud = np.repeat((np.sin(np.arange(960) / 10) * 8000).astype("<i2"), 2).tobytes()
    conv.feed_input(loud)
    sent(conv)
    conv.on_disconnected()
    for _ in range(10):
        conv.feed_input(loud)  # 200 ms into a socket that is gone
    assert sent(conv) == []
    conv.on_connected()
    resent = [e for e in sent(conv) if e["type"] == "input_audio_buffer.append"]
    assert sum(len(base64.b64decode(e["audio"])) for e in resent) >= 200 * 48, "all 220 ms said since the commit"
    conv.handle_event({"type": "input_audio_buffer.committed", "item_id": "u1", "previous_item_id": None})
    conv.on_disconnected()
    conv.on_connected()
    types = [e["type"] for e in sent(conv)]
    assert "input_audio_buffer.append" not in types, "a committed turn is not sent twice"
    assert types[-1] == "response.create", "and it is answered on the new session"


def test_a_response_started_after_a_tool_output_confirms_it(conv: Conversation) -> None:
    """Without conversation.item.added for the output, the response that followed it shows the server had it."""
    conv.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conv.handle_event(function_call_done("completed"))
    (call,) = conv.tool_calls_to_run()
    conv.on_tool_result(call, {"ok": True})
    conv.handle_event({"type": "response.created", "response": {"id": "resp_2"}})
    conv.handle_event({"type": "response.done", "response": {"id": "resp_2", "status": "completed"}})
    sent(conv)
    conv.on_disconnected()
    conv.on_connected()
    assert [e["type"] for e in sent(conv)] == ["session.update"], "no note, no extra reply after a recycle"


def loud_frame() -> bytes:
    t = np.arange(960) / 48000
    mono = (np.sin(2 * np.pi * 300 * t) * 9000).astype("<i2")
    return np.repeat(mono, 2).tobytes()


def test_a_turn_resent_to_a_new_session_is_still_attributed_to_who_said_it(conv: Conversation) -> None:
    """Alice spoke on the old socket (her turn was committed); Bob's words were never committed when it died, so
    the new session hears them resent first: its clock starts at Bob's words, not at Alice's."""
    alice, bob = 1, 2
    for _ in range(50):
        conv.feed_input(loud_frame(), [alice])
    for event in ({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "a"},
                  {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1000, "item_id": "a"},
                  {"type": "input_audio_buffer.committed", "item_id": "a"}):
        conv.handle_event(event)
    for _ in range(30):
        conv.feed_input(loud_frame(), [bob])
    conv.on_disconnected()
    for _ in range(20):
        conv.feed_input(loud_frame(), [bob])  # still talking while Cap reconnects: kept for the new session
    conv.on_connected()
    resent = sum(len(base64.b64decode(e["audio"])) for e in sent(conv) if e["type"] == "input_audio_buffer.append")
    assert resent == 1000 * 48  # Bob's second of words, nothing of Alice's
    for event in ({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "b"},
                  {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1000, "item_id": "b"},
                  {"type": "input_audio_buffer.committed", "item_id": "b"},
                  {"type": "conversation.item.input_audio_transcription.completed", "item_id": "b",
                   "content_index": 0, "transcript": "My number is 512 555 0143."}):
        conv.handle_event(event)
    (entry,) = conv.transcripts_ready()
    assert entry.speaker == bob and entry.speakers == {bob}
