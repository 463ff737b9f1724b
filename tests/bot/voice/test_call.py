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
from realtime.audio import SILENCE_FRAME
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


class FakeSession:
    """Stands in for realtime.engine.VoiceSession: records input, lets tests emit transcripts and tools."""

    fail_with: Exception | None = None

    def __init__(self, config: Any, registry: ToolRegistry, *, context_factory: Callable, on_transcript: Callable):
        self.config, self.registry = config, registry
        self.context_factory, self.on_transcript = context_factory, on_transcript
        self.playback = PlaybackBuffer()
        self.metrics = SessionMetrics()
        self.fed: list[tuple[bytes, frozenset[int]]] = []
        self.closed = False
        self.idle = True
        self.fatal: str | None = None

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
def database() -> Iterator[Database]:
    db = Database("sqlite://").open()
    yield db
    db.close()


def make_channel() -> MagicMock:
    guild = MagicMock(spec=discord.Guild)
    guild.id = 5
    members = {
        ALICE: MagicMock(spec=discord.Member, display_name="Alice", bot=False),
        BOB: MagicMock(spec=discord.Member, display_name="Bob", bot=False),
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


def make_call(channel: MagicMock, database: Database, clock: Clock | None = None, **overrides: Any) -> VoiceCall:
    settings = load_settings(openai_api_key="sk-test", **overrides)
    return VoiceCall(
        channel,
        settings=settings,
        database=database,
        registry_factory=registry_factory,
        session_factory=FakeSession,
        clock=clock or Clock(),
        on_end=ended.append,
    )


ended: list[VoiceCall] = []


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


async def test_transcripts_are_stored_and_posted_and_invites_attached(database: Database) -> None:
    channel = make_channel()
    call = make_call(channel, database)
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    session.on_transcript(TranscriptEntry(role="caller", text="Book me", item_id="a", speakers=frozenset({ALICE})))
    session.on_transcript(TranscriptEntry(role="cap", text="Done.", item_id="b"))
    result = await session.registry.call("schedule_call", {"when": "Tue 3 pm"}, session.context_factory(frozenset()))
    assert result["ok"] is True and result["invite"]["filename"] == "call-1.ics"  # the model still sees it all
    await drain_posts(call)
    sent = [(c.args[0], c.kwargs) for c in channel.send.await_args_list]
    assert sent[0][0] == "**Alice:** Book me" and sent[1][0] == "**Cap:** Done."
    assert all(kwargs["allowed_mentions"].to_dict()["parse"] == [] for _, kwargs in sent)
    invite_text, invite_kwargs = sent[2]
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
    channel.send.assert_not_awaited()

    channel = make_channel()
    channel.send.side_effect = discord.Forbidden(MagicMock(status=403, reason="Forbidden"), "no")
    call = make_call(channel, database)
    await call.start()
    for text in ("one", "two"):
        call.session.on_transcript(TranscriptEntry(role="cap", text=text, item_id=text))  # type: ignore[union-attr]
    await drain_posts(call)
    assert channel.send.await_count == 1
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

    async def close_recorder() -> None:
        await original_close()
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
