"""Where the call's end (summary), the address gate and disclosures meet reconnects and the reply-owed logic."""

from __future__ import annotations

from bot.disclosure import announcement, disclosure_text
from realtime.audio import SILENCE_FRAME
from realtime.conversation import Conversation
from realtime.metrics import SessionMetrics
from realtime.playback import PlaybackBuffer
from realtime.protocol import SessionConfig
from tests.realtime.test_conversation import TOOL, Clock, function_call_done, play_out, sent, start_reply

ALICE = 11
LENDER = "Capital Bridge Solutions"


def connected(**config: object) -> Conversation:
    clock = Clock()
    conversation = Conversation(SessionConfig(api_key="sk-test", instructions="Be Cap.", **config),  # type: ignore[arg-type]
                                [TOOL], PlaybackBuffer(clock), SessionMetrics(), clock)
    conversation.on_connected()
    sent(conversation)
    return conversation


def reconnect(conversation: Conversation) -> list[dict]:
    conversation.on_disconnected()
    conversation.on_connected()
    return sent(conversation)


def is_summary_request(event: dict) -> bool:
    return event["type"] == "response.create" and (event.get("response") or {}).get("metadata") == {"cap": "summary"}


def voice_reply_requests(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "response.create" and not is_summary_request(e)]


def test_a_gated_turn_whose_transcript_a_drop_lost_is_not_answered_on_the_new_session() -> None:
    """Two people, adaptive mode: the server creates no reply and Cap decides from the transcript. A socket that
    drops between the commit and the transcript (or one the watchdog kills because a slow transcription sent
    nothing for 4 s) left `_turn_unanswered` set, and `_reply_cut_short()` makes the new session answer a turn
    that was never addressed to Cap ("so Bob, what do you think?")."""
    conversation = connected(reply_mode="adaptive")
    conversation.set_humans(2)
    sent(conversation)
    conversation.handle_event({"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0})
    conversation.handle_event({"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900})
    conversation.handle_event({"type": "input_audio_buffer.committed", "item_id": "u1"})
    assert not conversation.reply_owed  # a slow transcription is not a dead socket
    assert voice_reply_requests(reconnect(conversation)) == []


def test_a_tool_result_after_the_summary_was_asked_for_asks_for_no_voice_reply() -> None:
    """`request_summary` promises no other reply after it; a tool still running at hang-up (the usual case: the
    caller says goodbye while save_lead runs) sends its output and then a `response.create` for a spoken reply
    nobody will hear, while the out-of-band summary is in progress (tokens, and a second active response)."""
    conversation = connected()
    conversation.handle_event({"type": "response.created", "response": {"id": "resp_f"}})
    conversation.handle_event(function_call_done("completed"))
    (call,) = conversation.tool_calls_to_run()
    conversation.request_summary("Summarise.")
    assert [is_summary_request(e) for e in sent(conversation)] == [True]
    conversation.on_tool_result(call, {"ok": True})
    assert voice_reply_requests(sent(conversation)) == []


def test_a_summary_cut_off_by_a_drop_is_asked_for_again_on_the_new_session() -> None:
    """The summary request went into a socket that then died (or the watchdog aborted it: `reply_owed` ignores
    the summary, so only the keepalive notices). The new session is never asked, `summary_finished` never
    comes, and the call's end waits the full SUMMARY_TIMEOUT_SECONDS (15 s) for nothing."""
    conversation = connected()
    conversation.request_summary("Summarise.")
    assert [is_summary_request(e) for e in sent(conversation)] == [True]
    events = reconnect(conversation)
    assert [e for e in events if is_summary_request(e)], "the summary is asked of the new session"
    assert voice_reply_requests(events) == []


def caller_turn(conversation: Conversation, user: int, item_id: str, text: str) -> None:
    """One committed caller turn (no VAD span: the speakers fed since the last turn) and its transcript."""
    conversation.feed_input(SILENCE_FRAME, frozenset({user}))
    conversation.handle_event({"type": "input_audio_buffer.committed", "item_id": item_id})
    conversation.handle_event({"type": "conversation.item.input_audio_transcription.completed",
                               "item_id": item_id, "content_index": 0, "transcript": text})


def cap_says(conversation: Conversation, response_id: str, item_id: str, text: str) -> None:
    start_reply(conversation, item_id, ms=300, response_id=response_id)
    conversation.handle_event({"type": "response.output_audio.done", "item_id": item_id,
                               "response_id": response_id})
    conversation.handle_event({"type": "response.output_audio_transcript.done", "item_id": item_id,
                               "response_id": response_id, "transcript": text})
    conversation.handle_event({"type": "response.done", "response": {"id": response_id, "status": "completed"}})
    play_out(conversation)


def test_a_newcomers_disclosure_does_not_close_the_question_cap_just_asked_the_caller() -> None:
    """Alice is alone; Cap asks her for the address. Bob joins: Cap is now gated (issue 15) and says the
    disclosure for Bob (issue 12). The disclosure is Cap speaking, so `gate.cap_said` replaces the open
    follow-up for Alice with nothing, and Alice's answer, not addressed by name, is ignored: Cap goes quiet on
    her exactly when a second person joins."""
    conversation = connected(reply_mode="adaptive")
    caller_turn(conversation, ALICE, "u1", "I want a DSCR loan on a rental.")
    cap_says(conversation, "resp_1", "item_1", "Sure. What's the property address?")
    conversation.set_humans(2)
    conversation.announce(announcement(consent_required=False, newcomer=True, lender=LENDER))
    sent(conversation)
    cap_says(conversation, "resp_2", "item_2", f"Welcome! {disclosure_text(LENDER)}")
    caller_turn(conversation, ALICE, "u2", "It's 12 Oak Street in Austin.")
    assert voice_reply_requests(sent(conversation)), "Alice's answer to Cap's question is answered"


def test_a_late_unaddressed_transcript_does_not_cancel_the_reply_owed_for_a_later_turn() -> None:
    """u1 is committed while two people are here (Cap decides); one leaves, the server answers u2 itself, and they
    are back before u1's transcript, which turns out unaddressed: the reply owed for u2 stays owed."""
    conversation = connected(reply_mode="adaptive")
    conversation.set_humans(2)
    conversation.handle_event({"type": "input_audio_buffer.committed", "item_id": "u1"})
    conversation.set_humans(1)
    conversation.handle_event({"type": "input_audio_buffer.committed", "item_id": "u2"})
    conversation.set_humans(2)  # they are back before u1's transcript comes
    conversation.handle_event({"type": "conversation.item.input_audio_transcription.completed",
                               "item_id": "u1", "content_index": 0, "transcript": "So Bob, what do you think?"})
    assert conversation.reply_owed
