"""One Cap call in one guild: the voice connection, the Realtime session, the transcript, auto-leave.

Decisions live in plain objects that tests drive directly: `join_refusal` (may Cap join here?) and
`AutoLeave` (has Cap been alone or idle too long?). `VoiceCall` is the thin orchestration around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import discord

from bot.session_factory import make_session_config
from bot.settings import Settings
from bot.storage.conversations import ConversationRecorder
from bot.storage.database import Database
from bot.voice.client import CapVoiceClient
from realtime.engine import VoiceSession
from realtime.errors import RealtimeFatalError
from realtime.tools import ToolContext, ToolRegistry
from realtime.transcript import TranscriptEntry

log = logging.getLogger(__name__)

WATCH_INTERVAL_SECONDS: Final = 1.0
VOICE_CONNECT_TIMEOUT_SECONDS: Final = 30.0
POST_QUEUE_LIMIT: Final = 200
MESSAGE_LIMIT: Final = 2000  # Discord's message length limit
LEAVE_MESSAGES: Final = {
    "alone": "Everyone left, so I hung up.",
    "idle": "Nobody has said anything for a while, so I hung up. Use /cap join to talk again.",
    "left": "Bye for now!",
    "disconnected": "I was disconnected from the voice channel.",
}


class CallError(Exception):
    """Cap could not start a call; the message is one line for the user."""


def join_refusal(caller: discord.Member, busy_channel: discord.abc.GuildChannel | None) -> str | None:
    """Why Cap should not join the caller's voice channel now, as an ephemeral reply; None means go."""
    voice = caller.voice
    channel = voice.channel if voice is not None else None
    if channel is None:
        return "Join a voice channel first, then use `/cap join`."
    if busy_channel is not None:
        if busy_channel.id == channel.id:
            return f"I'm already here in {channel.mention}."
        return f"I'm already on a call in {busy_channel.mention}. Use `/cap leave` first."
    if isinstance(channel, discord.StageChannel):
        return "I can't talk in stage channels yet; use a regular voice channel."
    permissions = channel.permissions_for(channel.guild.me)
    missing = [name for name, ok in (("Connect", permissions.connect), ("Speak", permissions.speak)) if not ok]
    if missing:
        return f"I need the {' and '.join(missing)} permission{'s' * (len(missing) > 1)} in {channel.mention}."
    limit = channel.user_limit
    if limit and len(channel.members) >= limit and not permissions.move_members:
        return f"{channel.mention} is full."
    return None


def leave_refusal(
    member: discord.Member, channel: discord.abc.GuildChannel | None, started_by: int | None
) -> str | None:
    """Why `member` may not end Cap's call in `channel`, as an ephemeral reply; None means they may.

    Allowed: whoever started the call, anyone in the call's voice channel (they are the ones Cap is talking
    with), and staff who could end it by hand anyway (Move Members or Manage Channels there). Anyone else in the
    guild could otherwise hang up on a conversation they are not part of.
    """
    if channel is None or member.id == started_by:
        return None
    voice = member.voice
    if voice is not None and voice.channel is not None and voice.channel.id == channel.id:
        return None
    permissions = channel.permissions_for(member)
    if permissions.move_members or permissions.manage_channels:
        return None
    return (f"Only the people in {channel.mention}, whoever started the call, or staff who can move members "
            "can end it.")


@dataclass
class AutoLeave:
    """Leave after `alone_timeout` s with no human in the channel, or `idle_timeout` s without speech."""

    alone_timeout: float
    idle_timeout: float
    clock: Callable[[], float] = time.monotonic
    _alone_since: float | None = field(default=None, init=False)
    _active_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._active_at = self.clock()

    def observe_humans(self, count: int) -> None:
        if count > 0:
            self._alone_since = None
        elif self._alone_since is None:
            self._alone_since = self.clock()

    def activity(self) -> None:
        """Someone spoke, or Cap is talking or thinking."""
        self._active_at = self.clock()

    def reason(self) -> str | None:
        """'alone' or 'idle' once a timeout has passed, else None."""
        now = self.clock()
        if self._alone_since is not None and now - self._alone_since >= self.alone_timeout:
            return "alone"
        if now - self._active_at >= self.idle_timeout:
            return "idle"
        return None


class ObservedRegistry(ToolRegistry):
    """The same tools, with every result also handed to `on_result(name, result)` (for .ics invites)."""

    def __init__(self, inner: ToolRegistry, on_result: Callable[[str, dict[str, Any]], None]) -> None:
        super().__init__(tools=inner.tools, timeout_seconds=inner.timeout_seconds)
        self._on_result = on_result

    async def call(self, name: str, arguments: str | dict[str, Any], context: ToolContext) -> dict[str, Any]:
        result = await super().call(name, arguments, context)
        try:
            self._on_result(name, result)
        except Exception:
            log.exception("tool result observer failed for %s", name)
        return result


@dataclass(frozen=True)
class _Post:
    content: str
    filename: str | None = None
    data: bytes | None = None


def _humans_in(channel: discord.abc.GuildChannel | None) -> int:
    members = getattr(channel, "members", None) or ()
    return sum(1 for member in members if not member.bot)


class VoiceCall:
    """Ties CapVoiceClient, VoiceSession, ConversationRecorder and the text chat together for one guild."""

    def __init__(
        self,
        channel: discord.VoiceChannel,
        *,
        settings: Settings,
        database: Database,
        registry_factory: Callable[[Settings, Database], ToolRegistry] | None = None,
        session_factory: Callable[..., VoiceSession] = VoiceSession,
        clock: Callable[[], float] = time.monotonic,
        on_end: Callable[[VoiceCall], None] | None = None,
        started_by: int | None = None,
    ) -> None:
        self.guild = channel.guild
        self.channel = channel
        self.settings = settings
        self.database = database
        self._registry_factory = registry_factory
        self._session_factory = session_factory
        self._clock = clock
        self._on_end = on_end
        self.started_by = started_by  # the member who ran /cap join (may always end the call)
        self.auto_leave = AutoLeave(settings.alone_timeout_seconds, settings.idle_timeout_seconds, clock)
        self.voice: CapVoiceClient | None = None
        self.session: VoiceSession | None = None
        self.recorder: ConversationRecorder | None = None
        self.started_at: float | None = None
        self.end_reason: str | None = None
        self._spoken: Counter[int] = Counter()  # 20 ms frames heard per user: who the caller is
        self._posts: asyncio.Queue[_Post] = asyncio.Queue(POST_QUEUE_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Task[None] | None = None
        self._posting_enabled = settings.post_transcripts

    # ---- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the Realtime session, then voice, then the recorder; raises CallError (one line) and
        leaves nothing running."""
        self.recorder = ConversationRecorder(self.database, self.guild.id, self.channel.id)
        try:
            if self._registry_factory is None:
                from bot.tools import build_registry

                self._registry_factory = build_registry
            registry = ObservedRegistry(self._registry_factory(self.settings, self.database), self._on_tool_result)
            self.session = self._session_factory(
                make_session_config(self.settings),
                registry,
                context_factory=self._tool_context,
                on_transcript=self._on_transcript,
            )
            await self.session.start()
            self._check_not_stopped()
            self.voice = await self.channel.connect(
                cls=CapVoiceClient, self_deaf=False, timeout=VOICE_CONNECT_TIMEOUT_SECONDS, reconnect=True
            )
            self.voice.on_cleanup(self._voice_gone)  # at once: a kick during the awaits below must be seen
            self._check_not_stopped()
            await self.recorder.start()  # only now: a call that never connected leaves no conversation row
            self._check_not_stopped()
            if self.voice is None or not self.voice.is_connected():
                # Kicked or the channel deleted meanwhile, or discord.py gave up its handshakes quietly.
                raise discord.ClientException("the voice connection was lost")
        except RealtimeFatalError as exc:
            await self._teardown()
            raise CallError(f"the voice AI is unavailable: {exc}") from None
        except (TimeoutError, discord.ClientException, OSError) as exc:
            await self._teardown()
            detail = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
            raise CallError(f"could not connect to {self.channel.mention}: {detail}") from None
        except BaseException:
            await self._teardown()
            raise
        self.voice.start_conversation(self._feed, self.session.playback)
        self.started_at = self._clock()
        self.auto_leave.activity()
        self._tasks = [
            asyncio.create_task(self._watch(), name=f"cap-call-watch-{self.guild.id}"),
            asyncio.create_task(self._post_loop(), name=f"cap-call-posts-{self.guild.id}"),
        ]
        log.info("call started in guild %s channel %s", self.guild.id, self.channel.id)

    def _check_not_stopped(self) -> None:
        """`/cap leave` (or shutdown) may land while start() awaits: then undo what start() did so far."""
        if self._stopping is not None:
            raise CallError("the call was ended while it was starting")

    def stop(self, reason: str = "left") -> asyncio.Task[None]:
        """End the call (idempotent); returns the task doing it so callers may await it."""
        if self._stopping is None:
            self.end_reason = reason
            self._stopping = asyncio.create_task(self._stop(reason), name=f"cap-call-stop-{self.guild.id}")
        return self._stopping

    async def _stop(self, reason: str) -> None:
        log.info("call in guild %s ends: %s", self.guild.id, reason)
        self._post(LEAVE_MESSAGES.get(reason, reason))
        current = asyncio.current_task()
        watch = self._tasks[0] if self._tasks else None
        if watch is not None and watch is not current:
            watch.cancel()
        try:
            await self._teardown()
            poster = self._tasks[1] if len(self._tasks) > 1 else None
            if poster is not None:  # let the goodbye and the last lines out, briefly
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._posts.join(), 5)
                poster.cancel()
        finally:
            if self._on_end is not None:
                self._on_end(self)

    async def _teardown(self) -> None:
        voice, self.voice = self.voice, None
        if voice is not None:
            with contextlib.suppress(Exception):
                await voice.stop_conversation()
        # What was said is stored before the voice disconnect, which may wait for Discord for many seconds
        # (a shutdown's deadline could otherwise pass with the last lines unwritten).
        # Each step is guarded: an exception in one must not skip the voice disconnect below.
        if self.session is not None:
            try:
                await self.session.aclose()
            except Exception:
                log.exception("closing the Realtime session failed")
        if self.recorder is not None:
            try:
                await self.recorder.close()
            except Exception:
                log.exception("closing the conversation recorder failed")
        if voice is not None:
            # Always, connected or not: a connection in the middle of discord.py's reconnect reports
            # is_connected() False, and left alone it rejoins the channel with no call attached.
            with contextlib.suppress(Exception):
                await voice.disconnect(force=True)

    def _voice_gone(self) -> None:
        """discord.py tore the voice connection down (kicked, channel deleted, reconnects exhausted)."""
        if self.started_at is None:
            self.voice = None  # still starting: start() sees it and gives up cleanly
        elif self._stopping is None:
            self.voice = None
            self.stop("disconnected")

    async def _watch(self) -> None:
        session = self.session
        assert session is not None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            if session.closed:
                fatal = await session.wait_closed()
                self.stop(f"The voice AI stopped: {fatal}" if fatal else "left")
                return
            self.auto_leave.observe_humans(_humans_in(self.current_channel))
            if not session.idle:
                self.auto_leave.activity()
            reason = self.auto_leave.reason()
            if reason is not None:
                self.stop(reason)
                return

    # ---- audio and transcript -------------------------------------------------------------------------------

    def _feed(self, frame: bytes, speakers: frozenset[int]) -> None:
        """Every 20 ms from the mixer tick (event loop)."""
        if speakers:
            self._spoken.update(speakers)
            self.auto_leave.activity()
        if self.session is not None and not self.session.closed:
            self.session.feed_input(frame, speakers)

    @property
    def current_channel(self) -> discord.VoiceChannel:
        """Where Cap is now: discord.py updates the voice client's channel when Cap is moved."""
        voice = self.voice
        if voice is not None and voice.channel is not None:
            self.channel = voice.channel  # type: ignore[assignment]
        return self.channel

    def caller_of(self, speakers: frozenset[int]) -> int | None:
        """The caller of a turn: of its speakers, the one heard most in this call."""
        pool = speakers or frozenset(self._spoken)
        if not pool:
            return None
        return max(pool, key=lambda user_id: (self._spoken[user_id], -user_id))

    def _display_name(self, user_id: int | None) -> str | None:
        if user_id is None:
            return None
        member = self.guild.get_member(user_id)
        return member.display_name if member is not None else None

    def _tool_context(self, speakers: frozenset[int]) -> ToolContext:
        caller = self.caller_of(speakers)
        return ToolContext(
            guild_id=self.guild.id,
            channel_id=self.current_channel.id,
            user_id=caller,
            user_name=self._display_name(caller),
            conversation_id=self.recorder.conversation_id if self.recorder else None,
        )

    def _on_transcript(self, entry: TranscriptEntry) -> None:
        if self.recorder is not None:
            self.recorder.record(entry)
        self._post(format_transcript_line(entry, self._display_name))

    def _on_tool_result(self, name: str, result: dict[str, Any]) -> None:
        invite = result.get("invite") if result.get("ok") else None
        if isinstance(invite, dict) and isinstance(invite.get("ics"), str):
            when = result.get("when_for_caller") or "the booked time"
            filename = str(invite.get("filename") or "invite.ics")
            self._post(f"📅 Call booked for {when}. Add it to your calendar:", filename, invite["ics"].encode())

    def _post(self, content: str, filename: str | None = None, data: bytes | None = None) -> None:
        if not self._posting_enabled or not content:
            return
        try:
            self._posts.put_nowait(_Post(content[:MESSAGE_LIMIT], filename, data))
        except asyncio.QueueFull:
            log.warning("transcript posting is behind; dropped a line")

    async def _post_loop(self) -> None:
        while True:
            post = await self._posts.get()
            if not self._posting_enabled:  # turned off after lines were queued
                self._posts.task_done()
                continue
            try:
                file = discord.File(io.BytesIO(post.data), filename=post.filename) if post.data else None
                kwargs: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
                if file is not None:
                    kwargs["file"] = file
                await self.current_channel.send(post.content, **kwargs)
            except discord.Forbidden:
                log.warning("no permission to post in %s's text chat; transcript posting off", self.current_channel)
                self._posting_enabled = False
            except discord.HTTPException as exc:
                log.warning("could not post a transcript line: %s", exc)
            finally:
                self._posts.task_done()

    # ---- status ---------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What /cap status shows: channel, time connected and the session's figures."""
        summary = self.session.metrics.summary() if self.session is not None else {}
        connected = self._clock() - self.started_at if self.started_at is not None else 0.0
        return {
            "channel": self.current_channel.mention,
            "connected_seconds": connected,
            **summary,
            "voice": self.voice.stats() if self.voice is not None else {},
        }


def format_transcript_line(entry: TranscriptEntry, name_of: Callable[[int | None], str | None]) -> str:
    """'**Alice:** text' for a caller turn, '**Cap:** text' for Cap; markdown in the text is escaped."""
    if entry.role == "cap":
        who = "Cap"
    else:
        names = sorted(filter(None, (name_of(user_id) for user_id in entry.speakers)))
        who = ", ".join(names) or "Caller"
    text = discord.utils.escape_markdown(entry.text.strip())
    suffix = " *(interrupted)*" if entry.interrupted else ""
    return f"**{discord.utils.escape_markdown(who)}:** {text}{suffix}"
