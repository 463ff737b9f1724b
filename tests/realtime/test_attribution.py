"""Who a caller turn, a tool call and a question of Cap's belong to when several people talk, and what may cut
Cap's answer short. Sans-I/O: the Conversation with a fake clock and scripted server events."""

from __future__ import annotations

import numpy as np

from realtime.audio import FRAME_MS
from realtime.conversation import Conversation
from realtime.metrics import SessionMetrics
from realtime.playback import PlaybackBuffer
from realtime.protocol import SessionConfig

ALICE, BOB = 11, 22
TOOL = {"type": "function", "name": "save_lead", "description": "Save.",
        "parameters": {"type": "object", "properties": {"phone": {"type": "string"}}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def loud_frame() -> bytes:
    t = np.arange(960) / 48000
    mono = (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2")
    return np.repeat(mono, 2).tobytes()


def conversation(clock: Clock, **config) -> Conversation:
    conv = Conversation(SessionConfig(api_key="sk-test", instructions="Be Cap.", **config), [TOOL],
                        PlaybackBuffer(clock), SessionMetrics(), clock)
    return conv


def talk(conv: Conversation, clock: Clock, who: int | None, ms: int) -> None:
    frame = loud_frame()
    for _ in range(ms // FRAME_MS):
        conv.feed_input(frame, {who} if who is not None else ())
        clock.now += FRAME_MS / 1000


def turn(conv: Conversation, item_id: str, start_ms: int, end_ms: int) -> None:
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": start_ms,
                       "item_id": item_id})
    conv.handle_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": item_id})
    conv.handle_event({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None})


def transcript(conv: Conversation, item_id: str, text: str) -> None:
    conv.handle_event({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                       "content_index": 0, "transcript": text})


def response_created(conv: Conversation, response_id: str) -> None:
    conv.handle_event({"type": "response.created", "response": {"id": response_id, "status": "in_progress"}})


def response_done_with_save_lead(conv: Conversation, response_id: str) -> None:
    conv.handle_event({"type": "response.done", "response": {
        "id": response_id, "status": "completed",
        "output": [{"type": "function_call", "call_id": "call_1", "name": "save_lead",
                    "arguments": '{"phone": "5125550143"}'}]}})


def test_a_gated_answers_tool_call_is_for_the_person_who_addressed_cap_not_whoever_spoke_last() -> None:
    """Alice: "Cap, my number is 512 555 0143." Bob: "mm-hm" (committed before Alice's transcript arrives, as
    transcription takes ~1 s). The gate opens on Alice's transcript: the save_lead of the reply is Alice's."""
    clock = Clock()
    conv = conversation(clock, reply_mode="adaptive")
    conv.set_humans(2)
    conv.on_connected()
    conv.events_to_send()
    talk(conv, clock, ALICE, 1000)  # uplink 0..1000 ms
    talk(conv, clock, None, 600)    # 1000..1600 (quiet, nobody)
    turn(conv, "u1", 0, 1500)
    talk(conv, clock, BOB, 400)     # 1600..2000
    turn(conv, "u2", 1600, 2500)
    transcript(conv, "u1", "Cap, my number is 512 555 0143.")
    assert any(e["type"] == "response.create" for e in conv.events_to_send())  # the gate opened for Alice
    transcript(conv, "u2", "Mm-hm.")
    response_created(conv, "resp_1")
    response_done_with_save_lead(conv, "resp_1")
    (call,) = conv.tool_calls_to_run()
    assert call.caller == ALICE, f"Alice's phone number would be saved on {call.caller}'s lead"


def test_listen_mode_tool_call_is_for_the_turn_it_answers_even_if_someone_spoke_meanwhile() -> None:
    """Listen mode: the server creates a (text) reply per turn and interrupt_response is off, so the reply to
    Bob's "my number is ..." runs on while Alice says "great, thanks": the save_lead it makes is Bob's."""
    clock = Clock()
    conv = conversation(clock, listen_only=True, reply_mode="adaptive")
    conv.set_humans(2)
    conv.on_connected()
    conv.events_to_send()
    talk(conv, clock, BOB, 1500)    # 0..1500
    talk(conv, clock, None, 600)
    turn(conv, "u1", 0, 2000)
    response_created(conv, "resp_1")  # the server answers the turn by itself (create_response: true)
    talk(conv, clock, ALICE, 600)   # 2100..2700: Alice talks while the reply (and its tool call) is generated
    turn(conv, "u2", 2100, 3200)
    response_done_with_save_lead(conv, "resp_1")
    (call,) = conv.tool_calls_to_run()
    assert call.caller == BOB, f"Bob's phone number would be saved on {call.caller}'s lead"


# ---- the uplink clock against the server's -------------------------------------------------------------------


class StallingConnection:
    """A socket that stops taking writes until `flowing` is set (a TCP stall that later recovers), and hands the
    engine whatever events the test pushes. It records how much caller audio the service really got."""

    def __init__(self) -> None:
        import asyncio

        self.flowing = asyncio.Event()
        self.incoming: asyncio.Queue[dict] = asyncio.Queue()
        self.audio_bytes = 0

    async def send(self, event: dict) -> None:
        await self.flowing.wait()
        self._count(event)

    def try_send_now(self, event: dict) -> bool:
        if not self.flowing.is_set():
            return False
        self._count(event)
        return True

    def _count(self, event: dict) -> None:
        import base64

        if event["type"] == "input_audio_buffer.append":
            self.audio_bytes += len(base64.b64decode(event["audio"]))

    async def recv(self) -> dict:
        return await self.incoming.get()

    async def close(self) -> None:
        pass


async def test_audio_shed_by_a_stalled_socket_does_not_shift_who_said_the_next_turns() -> None:
    """The engine drops caller audio when its send queue is full (SEND_QUEUE_LIMIT, ~10 s): the service's
    audio_start_ms/audio_end_ms then run behind Cap's clock, and the turns after it must still be credited to
    whoever said them."""
    import asyncio

    from realtime.engine import SEND_QUEUE_LIMIT, VoiceSession
    from realtime.tools import ToolRegistry

    connection = StallingConnection()

    async def connect(_config: SessionConfig) -> StallingConnection:
        return connection

    transcripts = []
    session = VoiceSession(SessionConfig(api_key="sk-test", instructions="Be Cap."), ToolRegistry(),
                           on_transcript=transcripts.append, connector=connect)  # type: ignore[arg-type]
    await session.start()
    try:
        frame = loud_frame()
        for _ in range(SEND_QUEUE_LIMIT + 150):  # ~13 s of background noise into a stalled socket
            session.feed_input(frame, ())
        await asyncio.sleep(0)
        connection.flowing.set()
        await asyncio.sleep(0.05)
        alice_from = connection.audio_bytes // 48  # ms of audio the service has when Alice starts (24 kHz s16)
        for _ in range(100):  # Alice 2 s
            session.feed_input(frame, (ALICE,))
        await asyncio.sleep(0.05)
        bob_from = connection.audio_bytes // 48
        for _ in range(100):  # Bob 2 s
            session.feed_input(frame, (BOB,))
        await asyncio.sleep(0.05)
        bob_to = connection.audio_bytes // 48
        assert bob_from - alice_from == 2000
        for event in ({"type": "input_audio_buffer.speech_started", "audio_start_ms": bob_from, "item_id": "u1"},
                      {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": bob_to, "item_id": "u1"},
                      {"type": "input_audio_buffer.committed", "item_id": "u1", "previous_item_id": None},
                      {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
                       "content_index": 0, "transcript": "My number is 512 555 0143."}):
            connection.incoming.put_nowait(event)
        for _ in range(50):
            await asyncio.sleep(0.01)
            if transcripts:
                break
    finally:
        await session.aclose()
    (entry,) = [t for t in transcripts if t.role == "caller"]
    assert entry.speaker == BOB, f"Bob's turn is attributed to {entry.speaker}"


def test_a_turn_the_server_already_answers_is_not_answered_twice_when_a_second_person_joins_meanwhile() -> None:
    """Alice is alone: the server answers her turn itself (create_response: true). Bob joins before her
    transcript arrives (people are counted once a second, transcription takes ~1 s): her transcript names Cap,
    and Cap must not ask for a second answer on top of the server's."""
    clock = Clock()
    conv = conversation(clock, reply_mode="adaptive")
    conv.set_humans(1)
    conv.on_connected()
    conv.events_to_send()
    talk(conv, clock, ALICE, 1000)
    talk(conv, clock, None, 600)
    turn(conv, "u1", 0, 1500)
    conv.handle_event({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    conv.set_humans(2)  # Bob joins
    transcript(conv, "u1", "Cap, what's the rate on a rental?")
    conv.handle_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": []}})
    creates = [e for e in conv.events_to_send() if e["type"] == "response.create"]
    assert creates == [], "a second reply to a turn the server already answered"


def test_a_question_cap_asks_in_a_gated_answer_is_for_the_person_who_addressed_it() -> None:
    """Cap's reply to Alice ends in a question while Bob's "mm-hm" committed before Alice's transcript: Alice's
    answer needs no name, Bob's next remark is not taken for it."""
    import base64

    clock = Clock()
    conv = conversation(clock, reply_mode="adaptive")
    conv.set_humans(2)
    conv.on_connected()
    conv.events_to_send()
    talk(conv, clock, ALICE, 1000)
    talk(conv, clock, None, 600)
    turn(conv, "u1", 0, 1500)
    talk(conv, clock, BOB, 400)
    turn(conv, "u2", 1600, 2500)
    transcript(conv, "u1", "Cap, can you look at a deal for me?")
    transcript(conv, "u2", "Mm-hm.")
    conv.handle_event({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    conv.handle_event({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "a1",
                       "output_index": 0, "content_index": 0, "delta": base64.b64encode(bytes(4800)).decode()})
    conv.handle_event({"type": "response.output_audio.done", "response_id": "resp_1", "item_id": "a1",
                       "output_index": 0, "content_index": 0})
    conv.handle_event({"type": "response.output_audio_transcript.done", "response_id": "resp_1", "item_id": "a1",
                       "output_index": 0, "content_index": 0, "transcript": "Sure. What's the purchase price?"})
    conv.handle_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": []}})
    while conv.playback.read_frame() is not None:  # the caller hears all of it
        clock.now += FRAME_MS / 1000
    conv.tick()
    assert conv.gate.reason("about three fifty", frozenset({ALICE})) == "follow_up"


def test_a_bystanders_mm_hm_does_not_end_cap_s_answer_to_the_person_who_asked() -> None:
    """Gated (two people): Alice asks Cap; while Cap answers, Bob says "mm-hm" to her. Cap goes on answering
    Alice (the server does not interrupt while gated, and Cap does not cut its reply for a bystander)."""
    import base64

    clock = Clock()
    conv = conversation(clock, reply_mode="adaptive")
    conv.set_humans(2)
    conv.on_connected()
    conv.events_to_send()
    talk(conv, clock, ALICE, 1000)
    talk(conv, clock, None, 600)
    turn(conv, "u1", 0, 1500)
    transcript(conv, "u1", "Cap, what's the most you'd lend on a flip?")
    conv.handle_event({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    conv.handle_event({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "a1",
                       "output_index": 0, "content_index": 0, "delta": base64.b64encode(bytes(48000)).decode()})
    conv.playback.read_frame()
    conv.events_to_send()
    # Bob, to Alice: "mm-hm" while Cap is talking.
    talk(conv, clock, BOB, 300)
    conv.handle_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1600, "item_id": "u2"})
    conv.handle_event({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled", "output": []}})
    talk(conv, clock, None, 600)
    conv.handle_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 2400, "item_id": "u2"})
    conv.handle_event({"type": "input_audio_buffer.committed", "item_id": "u2", "previous_item_id": "u1"})
    transcript(conv, "u2", "Mm-hm.")
    clock.now += 5
    conv.tick()
    events = conv.events_to_send()
    answered = any(e["type"] == "response.create" for e in events) or conv.playback.audible
    assert answered, "Alice's question was dropped by a bystander's back-channel"


def test_an_hour_of_talk_keeps_a_few_runs_not_a_frame_each() -> None:
    """Attribution memory stays small: a run per change of speakers, not an entry per 20 ms frame."""
    from realtime.attribution import SpeakerTimeline

    timeline = SpeakerTimeline(FRAME_MS)
    for minute in range(60):
        for _ in range(60 * 1000 // FRAME_MS):
            timeline.frame({ALICE} if minute % 2 else {BOB})
    assert len(timeline._activity) == 60
    timeline.turn_started("u", (59 * 60 + 10) * 1000)
    timeline.turn_stopped("u", (59 * 60 + 20) * 1000)
    assert timeline.turn_committed("u").caller == ALICE  # minute 59 was Alice's
