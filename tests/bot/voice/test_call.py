"""VoiceCall orchestration with fakes at the edges (voice client, Realtime session), a real recorder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import discord
import pytest
from pydantic import BaseModel

import bot.voice.call as call_module
from bot.settings import Settings, load_settings
from bot.storage.conversations import conversation_turns
from bot.storage.database import Database
from bot.voice.call import AutoLeave, CallError, VoiceCall, format_transcript_line
from bot.voice.client import CapVoiceClient
from realtime.address import AddressGate
from realtime.audio import SILENCE_FRAME, TransportAudio
from realtime.errors import RealtimeFatalError
from realtime.metrics import SessionMetrics
from realtime.playback import PlaybackBuffer
from realtime.tools import Tool, ToolContext, ToolRegistry
from realtime.transcript import TranscriptEntry

ALICE, BOB = 111, 222


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_auto_leave_alone_and_idle() -> None:
    clock = Clock()
    policy = AutoLeave(alone_timeout=60, idle_timeout=900, clock=clock)
    policy.observe_humans(0)
    clock.now += 59
    assert policy.reason() is None
    policy.observe_humans(2)  # someone came back: the alone timer restarts
    clock.now += 30
    policy.observe_humans(0)
    clock.now += 59.9
    assert policy.reason() is None
    clock.now += 0.1
    assert policy.reason() == "alone"

    policy = AutoLeave(alone_timeout=60, idle_timeout=900, clock=clock)
    policy.observe_humans(1)
    clock.now += 899
    policy.activity()
    clock.now += 899
    assert policy.reason() is None
    clock.now += 1
    assert policy.reason() == "idle"


def test_transcript_lines_name_the_speakers_and_escape_markdown() -> None:
    names = {ALICE: "Alice", BOB: "Bob_*"}.get
    caller = TranscriptEntry(role="caller", text="I want **10%** off", item_id="i", speakers=frozenset({BOB, ALICE}))
    assert format_transcript_line(caller, names) == "**Alice, Bob\\_\\*:** I want \\*\\*10%\\*\\* off"
    unknown = TranscriptEntry(role="caller", text="hi", item_id="i", speakers=frozenset({999}))
    assert format_transcript_line(unknown, names) == "**Caller:** hi"
    cap = TranscriptEntry(role="cap", text="Sure.", item_id="j", interrupted=True)
    assert format_transcript_line(cap, names) == "**Cap:** Sure. *(interrupted)*"


def test_a_turn_two_people_spoke_in_is_posted_under_the_one_who_said_it() -> None:
    names = {ALICE: "Alice", BOB: "Bob"}.get
    overlapped = TranscriptEntry(role="caller", text="My number is 512 555 0143", item_id="i",
                                 speakers=frozenset({ALICE, BOB}), speaker=BOB)
    assert format_transcript_line(overlapped, names) == "**Bob:** My number is 512 555 0143"


class FakeSession:
    """Stands in for realtime.engine.VoiceSession: records input, lets tests emit transcripts and tools."""

    fail_with: Exception | None = None

    def __init__(self, config: Any, registry: ToolRegistry, *, context_factory: Callable, on_transcript: Callable,
                 transport_audio: TransportAudio):
        self.config, self.registry = config, registry
        self.context_factory, self.on_transcript = context_factory, on_transcript
        self.transport_audio = transport_audio
        self.playback = PlaybackBuffer(frame_bytes=transport_audio.spoken.frame_bytes)
        self.metrics = SessionMetrics()
        self.fed: list[tuple[bytes, frozenset[int]]] = []
        self.closed = False
        self.idle = True
        self.fatal: str | None = None
        self.humans: list[int] = []  # every set_humans() value
        self.gate = AddressGate(config.reply_mode)
        self.asked: list[int] = []
        self.announced: list[str] = []

    def set_humans(self, count: int) -> None:
        self.humans.append(count)

    def ask(self, user_id: int) -> None:
        self.asked.append(user_id)

    def announce(self, note: str) -> None:
        self.announced.append(note)

    summary: str | None = "Alice asked about a DSCR loan; Cap booked a call. Her number is 512-555-0143."
    summarized: list[str]

    async def summarize(self, instructions: str, wait_seconds: float = 15.0) -> str | None:
        self.summarized = [*getattr(self, "summarized", []), instructions]
        self.summary_waits = [*getattr(self, "summary_waits", []), wait_seconds]
        return self.summary

    async def start(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def feed_input(self, frame: bytes, speakers: frozenset[int] = frozenset()) -> None:
        self.fed.append((frame, speakers))

    async def wait_closed(self) -> str | None:
        return self.fatal

    async def aclose(self) -> None:
        self.closed = True


class InviteArgs(BaseModel):
    when: str


async def book(args: InviteArgs, context: ToolContext) -> dict:
    return {
        "booked": True,
        "when_for_caller": args.when,
        "invite": {"filename": "call-1.ics", "content_type": "text/calendar", "ics": "BEGIN:VCALENDAR\r\n"},
    }


def registry_factory(settings: Settings, database: Database) -> ToolRegistry:
    return ToolRegistry.of([Tool("schedule_call", "Book a call.", InviteArgs, book)])


@pytest.fixture
def database(tmp_path) -> Iterator[Database]:
    # A file, as in production: an in-memory SQLite is one connection shared by every thread, and a call writes
    # from several (recorder, tools, webhooks) at once, which that one connection cannot keep apart.
    db = Database(f"sqlite:///{tmp_path / 'cap.db'}").open()
    yield db
    db.close()


def make_channel() -> MagicMock:
    guild = MagicMock(spec=discord.Guild)
    guild.id = 5
    members = {
        ALICE: MagicMock(spec=discord.Member, id=ALICE, display_name="Alice", bot=False),
        BOB: MagicMock(spec=discord.Member, id=BOB, display_name="Bob", bot=False),
    }
    guild.get_member.side_effect = members.get
    channel = MagicMock(spec=discord.VoiceChannel)
    channel.id, channel.mention, channel.guild = 10, "<#10>", guild
    channel.members = list(members.values())
    channel.send = AsyncMock()
    voice = MagicMock(spec=CapVoiceClient)
    voice.channel = channel
    voice.is_connected.return_value = True
    voice.stats.return_value = {"packets": 3}
    channel.connect = AsyncMock(return_value=voice)
    return channel


def make_call(channel: MagicMock, database: Database, clock: Clock | None = None, listen_only: bool = False,
              **overrides: Any) -> VoiceCall:
    settings = load_settings(openai_api_key="sk-test", **overrides)
    return VoiceCall(
        channel,
        settings=settings,
        database=database,
        registry_factory=registry_factory,
        session_factory=FakeSession,
        clock=clock or Clock(),
        on_end=ended.append,
        listen_only=listen_only,
    )


ended: list[VoiceCall] = []


def chat_posts(channel: MagicMock) -> list[tuple[str, dict[str, Any]]]:
    """What Cap posted in the voice channel's chat, besides the disclosure every call starts with."""
    return [(c.args[0], c.kwargs) for c in channel.send.await_args_list if not c.args[0].startswith("ℹ️")]


async def drain_posts(call: VoiceCall) -> None:
    await asyncio.wait_for(call._posts.join(), 5)


async def test_start_wires_voice_session_and_recorder(database: Database) -> None:
    channel = make_channel()
    call = make_call(channel, database)
    await call.start()
    try:
        voice = channel.connect.return_value
        assert channel.connect.await_args.kwargs["cls"] is CapVoiceClient
        assert channel.connect.await_args.kwargs["self_deaf"] is False
        sink, playback = voice.start_conversation.call_args.args
        session = call.session
        assert isinstance(session, FakeSession) and playback is session.playback
        sink(SILENCE_FRAME, frozenset({ALICE}))
        sink(SILENCE_FRAME, frozenset({ALICE, BOB}))
        sink(SILENCE_FRAME, frozenset())
        assert [speakers for _, speakers in session.fed] == [{ALICE}, {ALICE, BOB}, set()]
        context = session.context_factory(frozenset({ALICE, BOB}))
        assert (context.guild_id, context.channel_id, context.user_id, context.user_name) == (5, 10, ALICE, "Alice")
        assert context.conversation_id == call.recorder.conversation_id is not None
        assert session.context_factory(frozenset()).user_id == ALICE  # no speaker: the main caller
        status = call.status()
        assert status["channel"] == "<#10>" and status["turns"] == 0 and status["voice"] == {"packets": 3}
    finally:
        await call.stop("left")


async def test_transcripts_are_stored_and_posted_and_invites_sent_to_the_caller(database: Database) -> None:
    channel = make_channel()
    alice = channel.guild.get_member(ALICE)
    alice.send = AsyncMock()
    call = make_call(channel, database, transcript_destination="voice_chat")
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    session.on_transcript(TranscriptEntry(role="caller", text="Book me", item_id="a", speakers=frozenset({ALICE})))
    session.on_transcript(TranscriptEntry(role="cap", text="Done.", item_id="b"))
    context = session.context_factory(frozenset({ALICE}))
    result = await session.registry.call("schedule_call", {"when": "Tue 3 pm"}, context)
    assert result["ok"] is True and result["invite"]["filename"] == "call-1.ics"  # the model still sees it all
    assert result["invite_delivery"] == "direct_message"
    await drain_posts(call)
    sent = chat_posts(channel)
    assert [text for text, _ in sent] == ["**Alice:** Book me", "**Cap:** Done."]  # no invite in the open
    assert all(kwargs["allowed_mentions"].to_dict()["parse"] == [] for _, kwargs in sent)
    invite_text, invite_kwargs = alice.send.await_args.args[0], alice.send.await_args.kwargs
    assert "Tue 3 pm" in invite_text and invite_kwargs["file"].filename == "call-1.ics"
    conversation_id = call.recorder.conversation_id
    await call.stop("left")
    with database.session() as db:
        turns = conversation_turns(db, 5, conversation_id)
    assert [(t.role, t.text) for t in turns] == [("caller", "Book me"), ("cap", "Done.")]
    assert channel.send.await_args_list[-1].args[0] == "Bye for now!"


async def test_posting_can_be_turned_off_and_a_forbidden_channel_stops_it(database: Database) -> None:
    channel = make_channel()
    call = make_call(channel, database, post_transcripts=False)
    await call.start()
    call.session.on_transcript(TranscriptEntry(role="cap", text="Hi", item_id="x"))  # type: ignore[union-attr]
    await call.stop("left")
    assert chat_posts(channel) == []

    channel = make_channel()
    channel.send.side_effect = discord.Forbidden(MagicMock(status=403, reason="Forbidden"), "no")
    call = make_call(channel, database, transcript_destination="voice_chat")
    await call.start()
    for text in ("one", "two"):
        call.session.on_transcript(TranscriptEntry(role="cap", text=text, item_id=text))  # type: ignore[union-attr]
    await drain_posts(call)
    assert channel.send.await_count == 1  # the disclosure was refused: nothing more is tried
    await call.stop("left")


async def test_fatal_realtime_start_is_one_line_and_never_joins_voice(database: Database) -> None:
    class Refused(FakeSession):
        fail_with = RealtimeFatalError("OPENAI_API_KEY was rejected by the Realtime API (invalid_api_key)")

    channel = make_channel()
    call = VoiceCall(
        channel,
        settings=load_settings(openai_api_key="sk-bad"),
        database=database,
        registry_factory=registry_factory,
        session_factory=Refused,
    )
    with pytest.raises(CallError, match=r"^the voice AI is unavailable: OPENAI_API_KEY was rejected"):
        await call.start()
    channel.connect.assert_not_awaited()


async def test_voice_connect_failure_closes_the_session(database: Database) -> None:
    channel = make_channel()
    channel.connect.side_effect = TimeoutError()
    call = make_call(channel, database)
    with pytest.raises(CallError, match="could not connect to <#10>: timed out"):
        await call.start()
    assert call.session is not None and call.session.closed
    assert call.recorder is not None and call.recorder.conversation_id is None  # no row for a call that never was


async def test_leave_during_join_leaves_the_voice_channel(database: Database) -> None:
    channel = make_channel()
    voice = channel.connect.return_value
    handshake = asyncio.Event()

    async def slow_connect(**kwargs: Any) -> MagicMock:
        await handshake.wait()  # the voice handshake takes a moment
        return voice

    channel.connect.side_effect = slow_connect
    call = make_call(channel, database)
    starting = asyncio.create_task(call.start())  # /cap join
    await asyncio.sleep(0.05)
    await call.stop("left")  # /cap leave meanwhile
    handshake.set()
    with pytest.raises(CallError, match="ended while it was starting"):
        await starting
    assert voice.disconnect.await_count == 1, "Cap must not stay in the channel"
    assert not voice.start_conversation.called
    assert call.session.closed


async def test_leaves_when_alone_and_when_discord_drops_the_connection(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_module, "WATCH_INTERVAL_SECONDS", 0.01)
    clock = Clock()
    channel = make_channel()
    call = make_call(channel, database, clock, alone_timeout_seconds=60)
    await call.start()
    channel.members = [MagicMock(spec=discord.Member, bot=True)]  # only another bot is left
    await asyncio.sleep(0.05)
    clock.now += 61
    for _ in range(500):  # the watchdog runs every 10 ms here
        if call._stopping is not None:
            break
        await asyncio.sleep(0.01)
    assert call._stopping is not None
    await call._stopping
    assert call.end_reason == "alone"
    voice = channel.connect.return_value
    voice.disconnect.assert_awaited_once()
    assert call.session is not None and call.session.closed
    assert ended[-1] is call
    assert "Everyone left" in channel.send.await_args_list[-1].args[0]

    channel = make_channel()
    call = make_call(channel, database)
    await call.start()
    cleanup = channel.connect.return_value.on_cleanup.call_args.args[0]
    cleanup()  # discord.py tore the connection down (kicked, channel deleted, reconnects exhausted)
    assert call._stopping is not None
    await call._stopping
    assert call.end_reason == "disconnected"
    channel.connect.return_value.disconnect.assert_not_awaited()


async def test_leaving_mid_reconnect_still_disconnects_voice(database: Database) -> None:
    """discord.py reports is_connected() False while it reconnects; left alone it would rejoin with no call."""
    channel = make_channel()
    call = make_call(channel, database)
    await call.start()
    voice = channel.connect.return_value
    voice.is_connected.return_value = False
    await call.stop("idle")
    voice.disconnect.assert_awaited_once_with(force=True)


async def test_the_last_lines_are_stored_before_voice_disconnects(database: Database) -> None:
    channel = make_channel()
    call = make_call(channel, database)
    await call.start()
    order: list[str] = []
    session, recorder = call.session, call.recorder
    assert isinstance(session, FakeSession) and recorder is not None
    voice = channel.connect.return_value
    voice.disconnect.side_effect = lambda **_: order.append("voice disconnect")
    original_close = recorder.close

    async def close_recorder(usage: object = None) -> None:
        await original_close(usage)  # type: ignore[arg-type]
        order.append("transcript flushed")

    recorder.close = close_recorder  # type: ignore[method-assign]
    await call.stop("shutdown")
    assert session.closed and order == ["transcript flushed", "voice disconnect"]


@pytest.mark.parametrize("failing", ["session", "recorder"])
async def test_a_failing_close_still_leaves_voice(database: Database, failing: str) -> None:
    """Issue 9 item 6: an exception closing the Realtime session or the recorder skipped the voice disconnect,
    and discord.py kept Cap in the channel with no call attached."""
    channel = make_channel()
    call = make_call(channel, database)
    await call.start()
    broken = call.session if failing == "session" else call.recorder

    async def fail() -> None:
        raise RuntimeError("close failed")

    setattr(broken, "aclose" if failing == "session" else "close", fail)
    await call.stop("left")
    channel.connect.return_value.disconnect.assert_awaited_once_with(force=True)


async def test_a_kick_while_the_call_starts_ends_it_cleanly(database: Database,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    channel = make_channel()
    voice = channel.connect.return_value
    call = make_call(channel, database)
    original_start = call_module.ConversationRecorder.start

    async def kicked_while_recording(recorder) -> None:  # discord.py cleans up during this await
        for callback in [c.args[0] for c in voice.on_cleanup.call_args_list]:
            callback()
        await original_start(recorder)

    monkeypatch.setattr(call_module.ConversationRecorder, "start", kicked_while_recording)
    with pytest.raises(CallError, match="could not connect to <#10>: the voice connection was lost"):
        await call.start()
    assert call.session is not None and call.session.closed
    voice.start_conversation.assert_not_called()


async def test_the_session_knows_how_many_people_are_in_the_channel(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two people (Alice and Bob): the session is told before it connects; a third and a bot change it."""
    monkeypatch.setattr(call_module, "WATCH_INTERVAL_SECONDS", 0.01)
    channel = make_channel()
    call = make_call(channel, database)
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    try:
        assert session.humans[0] == 2
        channel.members = [*channel.members, MagicMock(spec=discord.Member, bot=True),
                           MagicMock(spec=discord.Member, bot=False)]
        for _ in range(200):
            if session.humans[-1] == 3:
                break
            await asyncio.sleep(0.01)
        assert session.humans[-1] == 3  # bots are not people Cap talks to
        call.ask(BOB)
        assert session.asked == [BOB]
    finally:
        await call.stop("left")


async def test_listen_mode_configures_a_session_that_never_speaks(database: Database) -> None:
    channel = make_channel()
    call = make_call(channel, database, listen_only=True)
    await call.start()
    try:
        assert isinstance(call.session, FakeSession) and call.session.config.listen_only is True
        assert call.status()["reply_mode"] == "listen"
    finally:
        await call.stop("left")
    talking = make_call(make_channel(), database)
    await talking.start()
    try:
        assert talking.session.config.listen_only is False
        assert talking.session.config.reply_mode == "adaptive"  # the setting's default
    finally:
        await talking.stop("left")


STAFF_CHANNEL, STAFF_ROLE = 31, 32


class ScoreArgs(BaseModel):
    lead_id: int


async def score(args: ScoreArgs, context: ToolContext) -> dict:
    return {"lead_id": args.lead_id, "score": 82, "tier": "A", "qualifies": True, "newly_qualified": True,
            "offer": {"program": "dscr_rental", "amount": 318000.0}}


async def booked(args: InviteArgs, context: ToolContext) -> dict:
    return {"booked": True, "lead_id": 7, "when_for_caller": args.when, "when_for_lender": "Tue 4 pm EST",
            "duration_minutes": 30, "invite": {"filename": "call-1.ics", "ics": "BEGIN:VCALENDAR\r\n"}}


def staff_registry(settings: Settings, database: Database) -> ToolRegistry:
    return ToolRegistry.of(
        [Tool("score_lead", "Score.", ScoreArgs, score), Tool("schedule_call", "Book.", InviteArgs, booked)]
    )


def add_staff_channel(channel: MagicMock) -> MagicMock:
    """A staff text channel and role in the call's guild."""
    staff = MagicMock(spec=discord.TextChannel)
    staff.id = STAFF_CHANNEL
    staff.send = AsyncMock()
    role = MagicMock(spec=discord.Role, id=STAFF_ROLE, mention=f"<@&{STAFF_ROLE}>")
    guild = channel.guild
    guild.get_channel.side_effect = {STAFF_CHANNEL: staff}.get
    guild.get_role.side_effect = {STAFF_ROLE: role}.get
    return staff


async def test_staff_hear_of_new_qualified_leads_and_bookings_with_a_role_mention(database: Database) -> None:
    channel = make_channel()
    staff = add_staff_channel(channel)
    call = make_call(channel, database, staff_channel_id=STAFF_CHANNEL, staff_role_id=STAFF_ROLE)
    call._registry_factory = staff_registry
    await call.start()
    context = call.session.context_factory(frozenset({ALICE}))  # type: ignore[union-attr]
    await call.session.registry.call("score_lead", {"lead_id": 7}, context)  # type: ignore[union-attr]
    await call.session.registry.call("schedule_call", {"when": "Tue 3 pm"}, context)  # type: ignore[union-attr]
    await drain_posts(call)
    notices = [(c.args[0], c.kwargs["allowed_mentions"]) for c in staff.send.await_args_list]
    assert len(notices) == 2
    assert notices[0][0].startswith(f"<@&{STAFF_ROLE}> ") and "lead #7" in notices[0][0] and "tier A" in notices[0][0]
    assert "Tue 4 pm EST" in notices[1][0] and "lead #7" in notices[1][0]
    assert all(mentions.to_dict()["roles"] == [STAFF_ROLE] for _, mentions in notices)
    await call.stop("left")


async def test_a_staff_channel_of_another_guild_gets_nothing(database: Database) -> None:
    channel = make_channel()
    staff = add_staff_channel(channel)
    call = make_call(channel, database, staff_channel_id=999, staff_role_id=STAFF_ROLE)  # not in this guild
    call._registry_factory = staff_registry
    await call.start()
    context = call.session.context_factory(frozenset({ALICE}))  # type: ignore[union-attr]
    await call.session.registry.call("score_lead", {"lead_id": 7}, context)  # type: ignore[union-attr]
    await drain_posts(call)
    staff.send.assert_not_awaited()
    await call.stop("left")


async def test_transcripts_go_to_the_staff_channel_by_default_with_contacts_masked(database: Database) -> None:
    channel = make_channel()
    staff = add_staff_channel(channel)
    call = make_call(channel, database, staff_channel_id=STAFF_CHANNEL, staff_role_id=STAFF_ROLE)
    await call.start()
    said = "I'm at 512-555-0143 or ann_lee@example.com"
    call.session.on_transcript(  # type: ignore[union-attr]
        TranscriptEntry(role="caller", text=said, item_id="a", speakers=frozenset({ALICE}))
    )
    await drain_posts(call)
    [line] = [c.args[0] for c in staff.send.await_args_list]
    assert line == "**Alice:** I'm at [phone] or [email]"
    assert staff.send.await_args.kwargs["allowed_mentions"].to_dict()["parse"] == []  # transcripts ping nobody
    assert chat_posts(channel) == []  # nothing in the voice channel's chat, readable by everyone there
    conversation_id = call.recorder.conversation_id
    await call.stop("left")
    with database.session() as db:
        assert [t.text for t in conversation_turns(db, 5, conversation_id)] == [said]  # stored as said


async def test_without_a_staff_channel_transcripts_are_not_posted_anywhere(database: Database) -> None:
    channel = make_channel()
    call = make_call(channel, database)
    await call.start()
    call.session.on_transcript(TranscriptEntry(role="cap", text="Hi", item_id="x"))  # type: ignore[union-attr]
    await drain_posts(call)
    assert chat_posts(channel) == []
    await call.stop("left")


async def test_a_caller_with_closed_dms_is_told_without_the_invite(database: Database) -> None:
    channel = make_channel()
    alice = channel.guild.get_member(ALICE)
    alice.send = AsyncMock(side_effect=discord.Forbidden(MagicMock(status=403, reason="Forbidden"), "closed"))
    call = make_call(channel, database)
    await call.start()
    await call.session.registry.call(  # type: ignore[union-attr]
        "schedule_call", {"when": "Tue 3 pm"}, call.session.context_factory(frozenset({ALICE}))  # type: ignore[union-attr]
    )
    await drain_posts(call)
    [(text, kwargs)] = chat_posts(channel)
    assert text == call_module.DM_REFUSED and "file" not in kwargs
    await call.stop("left")


async def test_no_invite_is_sent_when_invites_by_dm_are_off(database: Database) -> None:
    channel = make_channel()
    alice = channel.guild.get_member(ALICE)
    alice.send = AsyncMock()
    call = make_call(channel, database, invite_by_dm=False, transcript_destination="voice_chat")
    await call.start()
    result = await call.session.registry.call(  # type: ignore[union-attr]
        "schedule_call", {"when": "Tue 3 pm"}, call.session.context_factory(frozenset({ALICE}))  # type: ignore[union-attr]
    )
    await drain_posts(call)
    assert "invite_delivery" not in result  # the tool's own not_sent stands (this fake tool sets none)
    alice.send.assert_not_awaited()
    assert chat_posts(channel) == []
    await call.stop("left")


async def test_a_finished_call_stores_its_usage(database: Database) -> None:
    from bot.storage.conversations import get_conversation

    channel = make_channel()
    call = make_call(channel, database)
    await call.start()
    voice = channel.connect.return_value
    sink = voice.start_conversation.call_args.args[0]
    sink(SILENCE_FRAME, frozenset({ALICE}))
    sink(SILENCE_FRAME, frozenset({BOB}))
    metrics = call.session.metrics  # type: ignore[union-attr]
    metrics.turns, metrics.barge_ins = 7, 2
    metrics.add_usage({"input_token_details": {"audio_tokens": 1000, "text_tokens": 200, "cached_tokens": 0},
                       "output_token_details": {"audio_tokens": 500, "text_tokens": 40}},
                      {"audio_input": 32.0, "audio_output": 64.0})
    metrics.add_transcription_usage({"type": "tokens", "input_tokens": 300, "output_tokens": 12},
                                    {"transcription_input": 6.0})
    conversation_id = call.recorder.conversation_id
    await call.stop("alone")
    with database.session() as db:
        row = get_conversation(db, 5, conversation_id)
    assert row.ended_at is not None and row.duration_seconds is not None and row.end_reason == "alone"
    assert sorted(row.participants) == sorted([str(ALICE), str(BOB)])
    assert (row.turns, row.barge_ins) == (7, 2)
    assert (row.audio_input_tokens, row.text_input_tokens, row.audio_output_tokens, row.text_output_tokens) == (
        1000, 200, 500, 40)
    assert row.transcription_tokens == 312
    assert row.estimated_cost_usd == pytest.approx(1000 * 32e-6 + 500 * 64e-6 + 300 * 6e-6, abs=1e-4)


def spend(database: Database, guild: int, usd: float) -> None:
    """A finished call this month that cost `usd`."""
    from bot.storage.models import Conversation, utcnow

    with database.session() as db:
        db.add(Conversation(guild_id=guild, started_at=utcnow(), ended_at=utcnow(), estimated_cost_usd=usd))


async def test_a_guild_over_its_monthly_budget_is_refused_before_anything_connects(database: Database) -> None:
    spend(database, 5, 20.0)
    spend(database, 6, 500.0)  # another guild's spending is not this guild's
    channel = make_channel()
    call = make_call(channel, database, monthly_budget_usd=25.0)
    await call.start()  # $20 of $25: still allowed
    await call.stop("left")
    spend(database, 5, 5.0)
    channel = make_channel()
    call = make_call(channel, database, monthly_budget_usd=25.0)
    with pytest.raises(CallError, match=r"monthly budget.*\$25\.00"):
        await call.start()
    channel.connect.assert_not_awaited()


async def test_a_running_call_over_budget_ends_politely_at_the_next_turn_boundary(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_module, "WATCH_INTERVAL_SECONDS", 0.01)
    spend(database, 5, 9.0)
    channel = make_channel()
    call = make_call(channel, database, monthly_budget_usd=10.0, transcript_destination="voice_chat")
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    session.idle = False  # Cap is mid-reply
    session.metrics.cost_usd = 1.5
    await asyncio.sleep(0.1)
    assert call._stopping is None  # the reply is not cut
    session.idle = True  # the turn is over
    for _ in range(500):
        if call._stopping is not None:
            break
        await asyncio.sleep(0.01)
    assert call._stopping is not None
    await call._stopping
    assert call.end_reason == "budget"
    assert "monthly budget" in channel.send.await_args_list[-1].args[0]


def disclosures(database: Database) -> list[tuple[int, str, str]]:
    from sqlmodel import select

    from bot.storage.models import Disclosure

    with database.session() as db:
        rows = db.exec(select(Disclosure).order_by(Disclosure.id)).all()
    return [(row.discord_user_id, row.wording_version, row.consent) for row in rows]


async def test_the_disclosure_names_the_lender_of_the_policy_file(database: Database, tmp_path) -> None:
    """A lender deploying Cap with its own policy file is the one Cap names (review 1, finding 9)."""
    from bot.policy import SHIPPED_POLICY_FILE

    policy = tmp_path / "policy.toml"
    policy.write_text(SHIPPED_POLICY_FILE.read_text(encoding="utf-8").replace(
        'lender = "Capital Bridge Solutions"', 'lender = "Acme Lending"'), encoding="utf-8")
    channel = make_channel()
    call = make_call(channel, database, post_transcripts=False, lender_policy_file=str(policy))
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    assert "Acme Lending" in session.announced[0] and "Capital Bridge" not in session.announced[0]
    await drain_posts(call)
    assert "Acme Lending" in channel.send.await_args_list[0].args[0]
    await call.stop("left")


async def test_everyone_present_and_each_newcomer_is_told_by_voice_and_text_and_it_is_stored(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.disclosure import DISCLOSURE_VERSION, disclosure_text
    from bot.policy import load_policy

    disclosure = disclosure_text(load_policy().lender)  # the words every participant is told
    monkeypatch.setattr(call_module, "WATCH_INTERVAL_SECONDS", 0.01)
    channel = make_channel()
    call = make_call(channel, database, post_transcripts=False)  # the disclosure is posted all the same
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    assert len(session.announced) == 1 and disclosure in session.announced[0]
    carol = MagicMock(spec=discord.Member, id=333, display_name="Carol", bot=False)
    channel.members = [*channel.members, carol, MagicMock(spec=discord.Member, id=444, bot=True)]
    for _ in range(500):
        if len(session.announced) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(session.announced) == 2 and "Someone new" in session.announced[1]
    await drain_posts(call)
    posts = [c.args[0] for c in channel.send.await_args_list]
    assert posts[0] == f"ℹ️ <@{ALICE}> <@{BOB}>: {disclosure}" and posts[1] == f"ℹ️ <@333>: {disclosure}"
    await call.stop("left")
    assert disclosures(database) == [(ALICE, DISCLOSURE_VERSION, "not_asked"), (BOB, DISCLOSURE_VERSION, "not_asked"),
                                     (333, DISCLOSURE_VERSION, "not_asked")]  # the bot is not told


async def test_with_a_required_yes_a_caller_who_declines_is_neither_heard_nor_stored(database: Database) -> None:
    from bot.disclosure import CONSENT_QUESTION

    channel = make_channel()
    call = make_call(channel, database, require_spoken_consent=True, transcript_destination="voice_chat")
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession) and CONSENT_QUESTION in session.announced[0]
    context = session.context_factory(frozenset({ALICE}))
    refused = await session.registry.call("schedule_call", {"when": "Tue"}, context)
    assert refused["error"]["code"] == "no_consent"  # nothing saved before a yes
    session.on_transcript(TranscriptEntry(role="caller", text="Yes, that's fine.", item_id="a",
                                          speakers=frozenset({ALICE})))
    session.on_transcript(TranscriptEntry(role="caller", text="No thanks, I'd rather not.", item_id="b",
                                          speakers=frozenset({BOB})))
    session.on_transcript(TranscriptEntry(role="caller", text="My number is 512 555 0143", item_id="c",
                                          speakers=frozenset({BOB})))
    session.on_transcript(TranscriptEntry(role="caller", text="Book me for Tuesday", item_id="d",
                                          speakers=frozenset({ALICE})))
    assert (await session.registry.call("schedule_call", {"when": "Tue"}, context))["ok"]
    sink = channel.connect.return_value.start_conversation.call_args.args[0]
    session.fed.clear()
    sink(SILENCE_FRAME, frozenset({BOB}))
    sink(SILENCE_FRAME, frozenset({ALICE, BOB}))
    sink(SILENCE_FRAME, frozenset({ALICE}))
    assert [speakers for _, speakers in session.fed] == [{ALICE}]  # Bob is not sent to the model any more
    await drain_posts(call)
    conversation_id = call.recorder.conversation_id
    await call.stop("left")
    with database.session() as db:
        kept = [t.text for t in conversation_turns(db, 5, conversation_id)]
    assert kept == ["Yes, that's fine.", "Book me for Tuesday"]
    assert sorted((user, consent) for user, _, consent in disclosures(database)) == [(ALICE, "yes"), (BOB, "no")]
    posted = " ".join(text for text, _ in chat_posts(channel))
    assert "512" not in posted and "[phone]" not in posted and "I won't transcribe" in posted


async def test_a_yes_or_no_counts_only_for_the_person_who_said_it(database: Database) -> None:
    """Review 2: the consent answer of a turn belongs to its speaker, not to everyone audible in it (crosstalk,
    a cough, an open microphone): Alice's "yes" must not record Bob's consent, nor her "no" silence Bob."""
    channel = make_channel()
    call = make_call(channel, database, require_spoken_consent=True, transcript_destination="voice_chat")
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    session.on_transcript(TranscriptEntry(role="caller", text="Yes, that's fine.", item_id="a",
                                          speakers=frozenset({ALICE, BOB}), speaker=ALICE))
    assert call.consent.states == {ALICE: "yes", BOB: "pending"}
    bob = session.context_factory(frozenset({BOB}))
    refused = await session.registry.call("schedule_call", {"when": "Tue"}, bob)
    assert refused["error"]["code"] == "no_consent"  # Bob never said yes
    session.on_transcript(TranscriptEntry(role="caller", text="No, not Tuesday.", item_id="b",
                                          speakers=frozenset({ALICE, BOB}), speaker=BOB))
    assert call.consent.states == {ALICE: "yes", BOB: "no"}
    await call.stop("left")


async def test_a_caller_who_declines_is_not_kept_among_the_calls_participants(database: Database) -> None:
    """Review 2: frames Bob spoke before declining put him in the call's `participants` (stored, and shown on the
    staff's lead card) and in the pool `caller_of` picks from. Declining takes him out; his disclosure row with
    "no" stays as the record."""
    from bot.storage.conversations import get_conversation

    channel = make_channel()
    call = make_call(channel, database, require_spoken_consent=True)
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    sink = channel.connect.return_value.start_conversation.call_args.args[0]
    sink(SILENCE_FRAME, frozenset({ALICE}))
    sink(SILENCE_FRAME, frozenset({BOB}))
    sink(SILENCE_FRAME, frozenset({BOB}))
    session.on_transcript(TranscriptEntry(role="caller", text="Yes.", item_id="a", speakers=frozenset({ALICE})))
    session.on_transcript(TranscriptEntry(role="caller", text="No thanks.", item_id="b", speakers=frozenset({BOB})))
    assert call.caller_of(frozenset()) == ALICE
    conversation_id = call.recorder.conversation_id
    await call.stop("left")
    with database.session() as db:
        assert get_conversation(db, 5, conversation_id).participants == [str(ALICE)]


@pytest.mark.parametrize("listen_only", [False, True], ids=["talk", "listen"])
async def test_a_finished_call_sends_its_summary_and_lead_card_to_staff(database: Database, listen_only: bool) -> None:
    """Also in listen mode (`/cap join mode:listen`): the loan officer gets the notes and the lead."""
    from bot.storage.leads import upsert_lead

    channel = make_channel()
    staff = add_staff_channel(channel)
    call = make_call(channel, database, listen_only=listen_only, staff_channel_id=STAFF_CHANNEL)
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    session.metrics.turns = 4
    with database.session() as db:
        lead, _ = upsert_lead(db, 5, {"full_name": "Alice Lee", "loan_program": "dscr_rental",
                                      "loan_amount": 318000.0}, discord_user_id=ALICE)
        lead_id = lead.id
    call.recorder.link_lead(lead_id)
    await call.stop("left")
    assert session.summarized and "summary" in session.summarized[0]  # asked of the same session, before close
    card = next(c.kwargs["embed"] for c in staff.send.await_args_list if c.kwargs.get("embed"))
    assert card.title == f"Call ended · lead #{lead_id}"
    assert "booked a call" in card.description and "512-555" not in card.description  # contacts masked
    fields = {field.name: field.value for field in card.fields}
    assert fields["Name"] == "Alice Lee" and fields["Loan amount"] == "$318,000"
    assert fields["Details"] == f"`/leads show {lead_id}`"


async def test_a_silent_call_asks_for_no_summary(database: Database) -> None:
    channel = make_channel()
    add_staff_channel(channel)
    call = make_call(channel, database, staff_channel_id=STAFF_CHANNEL)
    await call.start()
    await call.stop("left")
    assert not getattr(call.session, "summarized", [])


async def test_no_summary_is_written_of_a_call_someone_declined(database: Database) -> None:
    """Review 2: the session heard the decliner before they said no; a summary would carry their words to staff."""
    channel = make_channel()
    add_staff_channel(channel)
    call = make_call(channel, database, require_spoken_consent=True, staff_channel_id=STAFF_CHANNEL)
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    session.metrics.turns = 3
    session.on_transcript(TranscriptEntry(role="caller", text="Yes.", item_id="a", speakers=frozenset({ALICE}),
                                          speaker=ALICE))
    session.on_transcript(TranscriptEntry(role="caller", text="No thanks.", item_id="b", speakers=frozenset({BOB}),
                                          speaker=BOB))
    await call.stop("left")
    assert not getattr(session, "summarized", []) and call.summary is None


async def test_tool_results_and_the_end_of_a_call_become_webhook_events(database: Database) -> None:
    from sqlmodel import select

    from bot.storage.leads import upsert_lead
    from bot.storage.models import WebhookDelivery

    channel = make_channel()
    call = make_call(channel, database, webhook_url="https://crm.example/hook", webhook_secret="x" * 20)
    call._registry_factory = staff_registry
    await call.start()
    with database.session() as db:
        lead, _ = upsert_lead(db, 5, {"full_name": "Alice Lee"}, discord_user_id=ALICE)
    call.recorder.link_lead(lead.id)
    context = call.session.context_factory(frozenset({ALICE}))  # type: ignore[union-attr]
    await call.session.registry.call("score_lead", {"lead_id": lead.id}, context)  # type: ignore[union-attr]
    await call.session.registry.call("schedule_call", {"when": "Tue"}, context)  # type: ignore[union-attr]
    call.session.metrics.turns = 3  # type: ignore[union-attr]
    await call.stop("left")
    with database.session() as db:
        events = [(row.event, row.status) for row in db.exec(select(WebhookDelivery).order_by(WebhookDelivery.id))]
        ended = db.exec(select(WebhookDelivery).where(WebhookDelivery.event == "call.ended")).one()
    assert events == [("lead.scored", "pending"), ("call.booked", "pending"), ("call.ended", "pending")]
    assert ended.lead_id == lead.id and ended.payload["lead"]["first_name"] == "Alice"
    assert "booked a call" in ended.payload["data"]["summary"] and "512-555" not in ended.payload["data"]["summary"]


async def test_at_a_shutdown_the_summary_waits_briefly(database: Database) -> None:
    """SIGTERM gives every call CALLS_END_TIMEOUT_SECONDS (20 s) for everything: a 15 s summary wait would leave
    the transcript, the voice disconnect, the staff package and the goodbye about 5 s."""
    for reason, wait in (("left", call_module.SUMMARY_SECONDS), ("shutdown", call_module.SHUTDOWN_SUMMARY_SECONDS)):
        channel = make_channel()
        add_staff_channel(channel)
        call = make_call(channel, database, staff_channel_id=STAFF_CHANNEL)
        await call.start()
        session = call.session
        assert isinstance(session, FakeSession)
        session.metrics.turns = 2
        await call.stop(reason)
        assert session.summary_waits == [wait]
    assert call_module.SHUTDOWN_SUMMARY_SECONDS <= 5
