"""Several people in one channel, callers who pause mid-number, and listen mode: the engine against the fake
Realtime service on 127.0.0.1 (every event Cap sends is checked against the openai schema there)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from realtime.audio import FRAME_MS, SILENCE_FRAME
from realtime.engine import VoiceSession
from realtime.protocol import SessionConfig
from realtime.tools import Tool, ToolContext, ToolRegistry
from realtime.transcript import TranscriptEntry
from tests.audio_checks import loud
from tests.realtime_fake import FakeRealtimeServer, tone_pcm

ALICE, BOB = 11, 22
PACE = 4.0  # the fake's VAD counts audio, not wall time: faster than real time changes nothing it decides


def speech(ms: int, freq: float = 300.0) -> list[bytes]:
    """A loud tone as 20 ms frames of 48 kHz stereo s16le: the fake's energy VAD hears it as speech."""
    t = np.arange(ms * 48) / 48000
    mono = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    pcm = np.repeat(mono, 2).tobytes()
    return [pcm[i:i + 3840] for i in range(0, len(pcm), 3840)]


def silence(ms: int) -> list[bytes]:
    return [SILENCE_FRAME] * (ms // FRAME_MS)


Script = list[tuple[bytes, frozenset[int]]]


def said(by: int, ms: int = 600, freq: float = 300.0) -> Script:
    return [(frame, frozenset({by})) for frame in speech(ms, freq)]


def pause(ms: int) -> Script:
    return [(frame, frozenset()) for frame in silence(ms)]


async def play(session: VoiceSession, script: Sequence[tuple[bytes, frozenset[int]]], *,
               humans: int | None = None, tail_ms: int = 3000) -> list[bytes]:
    """Feed the script at PACE times real time, then silence until Cap is idle; Cap's output frames."""
    loop = asyncio.get_running_loop()
    if humans is not None:
        session.set_humans(humans)
    full = [*script, *pause(tail_ms)]
    output: list[bytes] = []
    started = loop.time()
    for n, (frame, speakers) in enumerate(full, 1):
        session.feed_input(frame, speakers)
        output.append(session.playback.read_frame() or SILENCE_FRAME)
        await asyncio.sleep(max(0.0, started + n * FRAME_MS / 1000 / PACE - loop.time()))
    for _ in range(int(3 * 1000 / FRAME_MS)):  # let a late reply finish
        if session.idle:
            break
        session.feed_input(SILENCE_FRAME)
        output.append(session.playback.read_frame() or SILENCE_FRAME)
        await asyncio.sleep(FRAME_MS / 1000 / PACE)
    return output


def config_for(server: FakeRealtimeServer, **overrides) -> SessionConfig:
    base = SessionConfig(api_key="sk-test", url=server.url, instructions="You are Cap.",
                         reconnect_base_seconds=0.05, connect_attempts=3)
    return dataclasses.replace(base, **overrides)


async def open_session(server: FakeRealtimeServer, registry: ToolRegistry | None = None,
                       contexts: list[ToolContext] | None = None, **overrides):
    transcripts: list[TranscriptEntry] = []
    session = VoiceSession(config_for(server, **overrides), registry or ToolRegistry(),
                           on_transcript=transcripts.append,
                           context_factory=lambda speakers: ToolContext(guild_id=1, user_id=min(speakers)))
    await session.start()
    return session, transcripts


def caller_turns(transcripts: list[TranscriptEntry]) -> list[tuple[str, int | None]]:
    return [(t.text, t.speaker) for t in transcripts if t.role == "caller"]


# ---- the address gate --------------------------------------------------------------------------------------------


async def test_two_people_talking_to_each_other_get_no_reply_until_one_names_cap() -> None:
    transcripts_said = ["So what did you think of the house?", "I liked it, the kitchen needs work.",
                        "Cap, what's the most you'd lend on a flip?"]
    async with FakeRealtimeServer(user_transcripts=transcripts_said, reply_audio=tone_pcm(0.6),
                                  reply_transcripts=["Up to ninety percent of cost."]) as server:
        session, transcripts = await open_session(server, reply_mode="adaptive")
        try:
            await play(session, [*pause(200), *said(ALICE), *pause(1200), *said(BOB), *pause(1200)], humans=2)
            assert server.responses == []  # two turns of people talking to each other: Cap only listened
            assert session.metrics.unaddressed_turns == 2
            await play(session, [*said(ALICE), *pause(1000)])
        finally:
            await session.aclose()
    assert len(server.responses) == 1 and session.metrics.addressed_turns == 1
    assert [t.text for t in transcripts if t.role == "cap"] == ["Up to ninety percent of cost."]
    # Cap heard everything: the listened-to turns are in the conversation the model answers from.
    assert len(caller_turns(transcripts)) == 3
    (connection,) = server.connections
    detection = connection.session["audio"]["input"]["turn_detection"]
    assert detection["create_response"] is False  # the server never answers by itself while gated
    assert server.schema_errors == []


async def test_people_talking_to_each_other_is_not_a_dead_connection() -> None:
    """An unaddressed turn is owed no reply: the server's silence after it is not a half-dead socket."""
    async with FakeRealtimeServer(user_transcripts=["So what did you think of the house?"]) as server:
        session, _ = await open_session(server, reply_mode="adaptive", reply_silence_seconds=0.5)
        try:
            await play(session, [*pause(200), *said(ALICE), *pause(1200)], humans=2)
            await play(session, pause(2000))  # 0.5 s of the server's silence would count as dead if a reply were owed
        finally:
            await session.aclose()
    assert len(server.connections) == 1 and session.metrics.reconnects == 0
    assert server.responses == []


async def test_one_caller_is_answered_every_turn_as_before() -> None:
    async with FakeRealtimeServer(user_transcripts=["What rates do you have?"], reply_audio=tone_pcm(0.4)) as server:
        session, _ = await open_session(server, reply_mode="adaptive")
        try:
            await play(session, [*pause(200), *said(ALICE), *pause(1200)], humans=1)
        finally:
            await session.aclose()
    assert len(server.responses) == 1
    assert server.sent_of("response.created") and not [e for e in server.received if e["type"] == "response.create"]
    assert server.connections[0].session["audio"]["input"]["turn_detection"]["create_response"] is True


async def test_a_second_person_joining_switches_the_server_to_listening_and_back() -> None:
    async with FakeRealtimeServer(user_transcripts=["Hello there."], reply_audio=tone_pcm(0.3)) as server:
        session, _ = await open_session(server, reply_mode="adaptive")
        try:
            session.set_humans(2)
            await server.wait_for(lambda: server.connections[0].session["audio"]["input"]["turn_detection"]
                                  ["create_response"] is False)
            session.set_humans(1)
            await server.wait_for(lambda: server.connections[0].session["audio"]["input"]["turn_detection"]
                                  ["create_response"] is True)
        finally:
            await session.aclose()
    updates = [e for e in server.received if e["type"] == "session.update"]
    assert len(updates) == 3 and server.schema_errors == []


async def test_the_person_cap_asked_a_question_is_answered_without_the_name() -> None:
    async with FakeRealtimeServer(user_transcripts=["Cap, can you look at a deal for me?", "About three fifty.",
                                                    "Three fifty sounds high to me."],
                                  reply_audio=tone_pcm(0.4),
                                  reply_transcripts=["Sure. What's the purchase price?", "Got it."]) as server:
        session, transcripts = await open_session(server, reply_mode="adaptive")
        try:
            await play(session, [*pause(200), *said(ALICE), *pause(1200)], humans=2)
            await play(session, [*said(ALICE), *pause(1200)])  # Alice answers Cap's question: no name needed
            await play(session, [*said(BOB), *pause(1200)])  # Bob comments to Alice: Cap listens
        finally:
            await session.aclose()
    assert [t.text for t in transcripts if t.role == "cap"] == ["Sure. What's the purchase price?", "Got it."]
    assert session.metrics.unaddressed_turns == 1


async def test_cap_ask_lets_a_caller_in_without_the_name() -> None:
    async with FakeRealtimeServer(user_transcripts=["What's the rate on a rental?"],
                                  reply_audio=tone_pcm(0.3)) as server:
        session, _ = await open_session(server, reply_mode="adaptive")
        try:
            session.ask(BOB)
            await play(session, [*pause(200), *said(BOB), *pause(1200)], humans=3)
        finally:
            await session.aclose()
    assert len(server.responses) == 1


# ---- turn-taking: callers who pause mid-number ------------------------------------------------------------------


def phone_number_read_with_pauses(by: int) -> Script:
    """Ten digits, 300 ms each, 600 ms between them: how people read a phone number aloud."""
    script: Script = []
    for digit in range(10):
        script += said(by, 300, freq=250 + 20 * digit)
        if digit < 9:
            script += pause(600)
    return script


async def test_semantic_vad_answers_a_number_read_with_pauses_once_after_the_last_digit() -> None:
    async with FakeRealtimeServer(user_transcripts=["five one two, five five five, zero one four three"],
                                  reply_audio=tone_pcm(0.3)) as server:
        session, _ = await open_session(server, turn_detection="semantic_vad", vad_eagerness="low")
        try:
            number = phone_number_read_with_pauses(ALICE)
            output = await play(session, [*pause(200), *number, *pause(2500)])
        finally:
            await session.aclose()
    assert len(server.sent_of("input_audio_buffer.committed")) == 1 and len(server.responses) == 1
    first_reply = loud(output).index(True)
    assert first_reply > 10 + len(number)  # after the last digit, not in a pause between digits
    detection = server.connections[0].session["audio"]["input"]["turn_detection"]
    assert detection["type"] == "semantic_vad" and detection["eagerness"] == "low"
    assert server.schema_errors == []


async def test_the_seeds_server_vad_cuts_a_number_read_with_pauses_into_many_turns() -> None:
    """Why semantic_vad exists as a setting: 500 ms of silence ends a turn, so Cap talks between the digits."""
    async with FakeRealtimeServer(reply_audio=tone_pcm(0.2)) as server:
        session, _ = await open_session(server)
        try:
            await play(session, [*pause(200), *phone_number_read_with_pauses(ALICE), *pause(1500)])
        finally:
            await session.aclose()
    assert len(server.sent_of("input_audio_buffer.committed")) >= 5


# ---- who said it ------------------------------------------------------------------------------------------------


class SaveArgs(BaseModel):
    phone: str


async def test_each_turn_is_attributed_to_who_spoke_it_and_tools_save_for_them() -> None:
    saved: list[tuple[str, int | None]] = []

    async def save(args: SaveArgs, context: ToolContext) -> dict:
        saved.append((args.phone, context.user_id))
        return {"ok": True}

    registry = ToolRegistry.of([Tool("save_lead", "Save the caller's phone.", SaveArgs, save)])
    calls = [{"name": "save_lead", "arguments": '{"phone": "5125550143"}'}]
    async with FakeRealtimeServer(user_transcripts=["I'm the loan officer, go ahead.", "My number is 512 555 0143."],
                                  reply_audio=tone_pcm(0.3), function_calls=[]) as server:
        session, transcripts = await open_session(server, registry)
        try:
            # Alice (who talks most over the call) speaks first; then Bob gives his number, with Alice saying
            # "mm-hm" over the start of it. The number is Bob's.
            await play(session, [*pause(200), *said(ALICE, 2000), *pause(1500)])
            server.function_calls = calls
            overlap = [(frame, frozenset({ALICE, BOB})) for frame in speech(200)]
            await play(session, [*overlap, *said(BOB, 800, freq=330), *pause(1500)])
            await server.wait_for(lambda: saved)
        finally:
            await session.aclose()
    assert caller_turns(transcripts) == [("I'm the loan officer, go ahead.", ALICE),
                                         ("My number is 512 555 0143.", BOB)]
    bobs_turn = [t for t in transcripts if t.role == "caller"][-1]
    assert bobs_turn.speakers == {ALICE, BOB}  # both were heard in it; Bob said it
    assert saved == [("5125550143", BOB)]


# ---- listen mode ------------------------------------------------------------------------------------------------


async def test_listen_mode_never_speaks_and_still_fills_the_lead() -> None:
    saved: list[tuple[str, int | None]] = []

    async def save(args: SaveArgs, context: ToolContext) -> dict:
        saved.append((args.phone, context.user_id))
        return {"ok": True}

    registry = ToolRegistry.of([Tool("save_lead", "Save the caller's phone.", SaveArgs, save)])
    async with FakeRealtimeServer(user_transcripts=["Call me at 512 555 0143."], reply_transcripts=["noted"],
                                  function_calls=[{"name": "save_lead", "arguments": '{"phone": "5125550143"}'}],
                                  ) as server:
        session, transcripts = await open_session(server, registry, listen_only=True, reply_mode="adaptive")
        try:
            output = await play(session, [*pause(200), *said(BOB, 1000), *pause(1500)], humans=2)
            await server.wait_for(lambda: len(server.responses) >= 2)  # the tool call, then the text note
        finally:
            await session.aclose()
    assert not any(loud(output))  # not a sound from Cap
    assert saved == [("5125550143", BOB)]
    assert [t.role for t in transcripts] == ["caller"]  # its text notes are not said, so not logged as said
    session_config = server.connections[0].session
    assert session_config["output_modalities"] == ["text"]
    assert session_config["audio"]["input"]["turn_detection"]["interrupt_response"] is False
    assert "listen mode" in session_config["instructions"]
    assert server.sent_of("response.output_audio.delta") == [] and server.schema_errors == []
