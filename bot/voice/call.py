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
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import discord
from sqlalchemy.exc import SQLAlchemyError

from bot.budget import BUDGET_REACHED_GOODBYE, BudgetGuard, budget_refusal
from bot.disclosure import (
    CONSENT_GATED_TOOLS,
    CONSENT_QUESTION,
    DECLINED_TEXT,
    DISCLOSURE_VERSION,
    ConsentBook,
    announcement,
    posted_text,
)
from bot.metrics import CallMetrics, CapMetrics
from bot.post_call import SUMMARY_INSTRUCTIONS, CallPackage, lead_card, load_package
from bot.privacy import mask_contacts
from bot.session_factory import make_session_config
from bot.settings import Settings
from bot.staff import staff_channel, staff_mention, staff_notice
from bot.storage.conversations import ConversationRecorder
from bot.storage.database import Database
from bot.storage.errors import db_error_line
from bot.storage.models import utcnow
from bot.storage.usage import CallUsage, spent_this_month
from bot.voice.client import CapVoiceClient
from bot.voice.opus_decoder import VOICE_AUDIO
from bot.webhooks import enqueue, tool_event
from realtime.engine import VoiceSession
from realtime.errors import RealtimeFatalError
from realtime.tools import ToolContext, ToolRegistry, tool_error
from realtime.transcript import TranscriptEntry

log = logging.getLogger(__name__)

WATCH_INTERVAL_SECONDS: Final = 1.0
SUMMARY_SECONDS: Final = 15.0  # the post-call summary: a few seconds of text
SHUTDOWN_SUMMARY_SECONDS: Final = 5.0
VOICE_CONNECT_TIMEOUT_SECONDS: Final = 30.0
POST_QUEUE_LIMIT: Final = 200
MESSAGE_LIMIT: Final = 2000  # Discord's message length limit
LEAVE_MESSAGES: Final = {
    "alone": "Everyone left, so I hung up.",
    "idle": "Nobody has said anything for a while, so I hung up. Use /cap join to talk again.",
    "left": "Bye for now!",
    "disconnected": "I was disconnected from the voice channel.",
    "budget": BUDGET_REACHED_GOODBYE,
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
    """The same tools, with every result also handed to `on_result(name, result, context)` (.ics invites and
    staff notices), and a `gate(name, context)` that may refuse a call first (no consent yet)."""

    def __init__(
        self,
        inner: ToolRegistry,
        on_result: Callable[[str, dict[str, Any], ToolContext], None],
        gate: Callable[[str, ToolContext], dict[str, Any] | None] = lambda name, context: None,
    ) -> None:
        super().__init__(tools=inner.tools, timeout_seconds=inner.timeout_seconds)
        self._on_result = on_result
        self._gate = gate

    async def call(self, name: str, arguments: str | dict[str, Any], context: ToolContext) -> dict[str, Any]:
        refusal = self._gate(name, context)
        if refusal is not None:
            return refusal
        result = await super().call(name, arguments, context)
        try:
            self._on_result(name, result, context)
        except Exception:
            log.exception("tool result observer failed for %s", name)
        return result


# Where a post goes: the voice channel's own text chat, the lender's staff channel (bot.staff), or a direct
# message to one caller (the .ics invite).
Destination = Literal["chat", "staff", "dm"]
DM_REFUSED: Final = (
    "📅 The call is booked, but I couldn't send the calendar invite by direct message (DMs from this server "
    "may be off). The loan team has the booking."
)


@dataclass(frozen=True)
class _Post:
    content: str
    filename: str | None = None
    data: bytes | None = None
    to: Destination = "chat"
    mentions: discord.AllowedMentions = field(default_factory=discord.AllowedMentions.none)
    user_id: int | None = None  # the recipient of a direct message
    embed: discord.Embed | None = None


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
        listen_only: bool = False,
        metrics: CapMetrics | None = None,
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
        self.listen_only = listen_only  # `/cap join mode:listen`: Cap transcribes and fills the lead, never speaks
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
        self._blocked: set[Destination] = set()  # destinations that refused us (Forbidden)
        self._budget: BudgetGuard | None = None
        self.consent = ConsentBook(settings.require_spoken_consent)
        self._metrics = CallMetrics(metrics) if metrics is not None else None
        self._voice_stats: dict[str, int] = {}
        self.summary: str | None = None
        self._background: set[asyncio.Task[None]] = set()  # webhook rows being written
        self._last_webhook: asyncio.Task[None] | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the Realtime session, then voice, then the recorder; raises CallError (one line) and
        leaves nothing running."""
        self.recorder = ConversationRecorder(self.database, self.guild.id, self.channel.id)
        await self._check_budget()
        try:
            if self._registry_factory is None:
                from bot.tools import build_registry

                self._registry_factory = build_registry
            registry = ObservedRegistry(
                self._registry_factory(self.settings, self.database), self._on_tool_result, self._tool_gate
            )
            self.session = self._session_factory(
                make_session_config(self.settings, listen_only=self.listen_only),
                registry,
                context_factory=self._tool_context,
                on_transcript=self._on_transcript,
                transport_audio=VOICE_AUDIO,  # what CapVoiceClient's Opus decodes to and encodes from
            )
            self.session.set_humans(_humans_in(self.channel))  # before it connects: the first session is right
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
        if self._metrics is not None:
            self._metrics.started()
        self._disclose(newcomers_only=False)

    async def _check_budget(self) -> None:
        """Refuse (CallError) a guild over its monthly budget; otherwise arm the guard for this call."""
        budget = self.settings.monthly_budget_usd
        if budget is None:
            return
        now = utcnow()

        def spent() -> float:
            with self.database.session() as session:
                return spent_this_month(session, self.guild.id, now)

        try:
            spent_usd = await asyncio.to_thread(spent)
        except SQLAlchemyError as exc:
            raise CallError(f"the usage store is unavailable ({db_error_line(exc)})") from None
        refusal = budget_refusal(spent_usd, budget, now)
        if refusal is not None:
            raise CallError(refusal)
        self._budget = BudgetGuard(budget, spent_usd)

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
            if self._metrics is not None and self.started_at is not None:
                self._sync_metrics()
                self._metrics.ended(reason)
            await self._post_package()
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
                if self._wants_summary():
                    # At a shutdown the whole goodbye has CALLS_END_TIMEOUT_SECONDS: the summary gets a short wait,
                    # so the transcript, the voice disconnect and the staff package still fit after it.
                    wait = SHUTDOWN_SUMMARY_SECONDS if self.end_reason == "shutdown" else SUMMARY_SECONDS
                    self.summary = await self.session.summarize(SUMMARY_INSTRUCTIONS, wait_seconds=wait)
            except Exception:
                log.exception("the call summary failed")
            try:
                await self.session.aclose()
            except Exception:
                log.exception("closing the Realtime session failed")
        if self.recorder is not None:
            try:
                await self.recorder.close(self._usage())
            except Exception:
                log.exception("closing the conversation recorder failed")
        if voice is not None:
            # Always, connected or not: a connection in the middle of discord.py's reconnect reports
            # is_connected() False, and left alone it rejoins the channel with no call attached.
            with contextlib.suppress(Exception):
                await voice.disconnect(force=True)

    def _wants_summary(self) -> bool:
        """A call someone talked in (and, when a yes is required, someone agreed in) whose session is alive."""
        session = self.session
        if session is None or session.closed or self.started_at is None or session.metrics.turns == 0:
            return False
        # Someone declined: the session heard them before they did (the model cannot tell voices apart), and a
        # summary would carry what they said to staff and to the webhook. The lead card still goes out.
        if "no" in self.consent.states.values():
            return False
        return not self.consent.required or "yes" in self.consent.states.values()

    def _webhook(self, event: str, lead_id: int | None, data: dict[str, Any]) -> None:
        """Store an outgoing webhook (bot.webhooks delivers it); written in a worker thread, awaited at stop."""
        if self.settings.webhook_url is None:
            return
        now = utcnow()

        def store() -> None:
            with self.database.session() as session:
                enqueue(session, self.guild.id, event, lead_id, data, now)

        previous = self._last_webhook

        async def run() -> None:
            if previous is not None:  # in the order they happened: a receiver sees lead.scored before call.booked
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await asyncio.to_thread(store)
            except SQLAlchemyError as exc:
                log.error("guild %s: webhook %s not stored (%s)", self.guild.id, event, db_error_line(exc))

        task = asyncio.create_task(run(), name=f"cap-webhook-{self.guild.id}")
        self._last_webhook = task
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _post_package(self) -> None:
        """The summary and the lead card to the staff channel, and the call.ended webhook, once the call's rows
        are stored."""
        conversation_id = self.recorder.conversation_id if self.recorder is not None else None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        wanted_staff = staff_channel(self.guild, self.settings) is not None
        if conversation_id is None or not (wanted_staff or self.settings.webhook_url):
            return

        def load() -> CallPackage | None:
            with self.database.session() as session:
                return load_package(session, self.guild.id, conversation_id, utcnow())

        try:
            package = await asyncio.to_thread(load)
        except SQLAlchemyError as exc:
            log.warning("guild %s: no post-call package (%s)", self.guild.id, db_error_line(exc))
            return
        if package is None:
            return
        if wanted_staff:
            card = lead_card(package, self.summary, self.settings.phone_default_region)
            self._enqueue(_Post("📋 Call summary", to="staff", embed=card))
        call = package.conversation
        self._webhook("call.ended", call.lead_id, {
            "conversation_id": call.id, "started_at": call.started_at.isoformat(),
            "ended_at": call.ended_at.isoformat() if call.ended_at else None,
            "duration_seconds": call.duration_seconds, "turns": call.turns, "end_reason": call.end_reason,
            "estimated_cost_usd": call.estimated_cost_usd,
            "summary": mask_contacts(self.summary, self.settings.phone_default_region) if self.summary else None,
        })
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _sync_metrics(self) -> None:
        if self._metrics is None or self.session is None:
            return
        if self.voice is not None:
            self._voice_stats = dict(self.voice.stats())
        self._metrics.sync(self.session.metrics, self._voice_stats)

    def _usage(self) -> CallUsage:
        """What the call used, for its conversation row (read after the session has closed: final figures)."""
        summary = self.session.metrics.summary() if self.session is not None else {}
        return CallUsage.from_summary(summary, self._spoken, self.end_reason)

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
            humans = _humans_in(self.current_channel)
            self.auto_leave.observe_humans(humans)
            session.set_humans(humans)  # a second person joined or left: whom Cap answers changes
            self._disclose(newcomers_only=True)
            self._sync_metrics()
            if not session.idle:
                self.auto_leave.activity()
            reason = self.auto_leave.reason()
            if reason is None and self._budget is not None and self._budget.reached(session.metrics.cost_usd):
                reason = "budget" if session.idle else None  # at a turn boundary: never cut a reply
            if reason is not None:
                self.stop(reason)
                return

    # ---- audio and transcript -------------------------------------------------------------------------------

    def _feed(self, frame: bytes, speakers: frozenset[int]) -> None:
        """Every 20 ms from the mixer tick (event loop)."""
        if any(self.consent.declined(user) for user in speakers):
            return  # someone who declined: neither heard nor transcribed (others talking over them too)
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

    def ask(self, user_id: int) -> None:
        """`/cap ask`: Cap answers this member's next turn without being named."""
        if self.session is not None:
            self.session.ask(user_id)

    @property
    def reply_mode(self) -> str:
        """How Cap decides to answer now, for /cap status."""
        if self.listen_only:
            return "listen"
        session = self.session
        if session is None:
            return self.settings.reply_mode
        gate = session.gate
        return f"{gate.mode} ({'answers when addressed' if gate.gated else 'answers every turn'})"

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

    def _disclose(self, *, newcomers_only: bool) -> None:
        """Tell participants not yet told (voice and text) that Cap is an AI and the call is transcribed; store it."""
        members = getattr(self.current_channel, "members", None) or ()
        new = self.consent.newcomers(member.id for member in members if not member.bot)
        if not new:
            return
        required, lender = self.consent.required, self.settings.policy.lender
        if self.session is not None and not self.session.closed:
            self.session.announce(announcement(required, newcomer=newcomers_only, lender=lender))
        mentions = " ".join(f"<@{user}>" for user in new)
        self._enqueue(_Post(posted_text(required, mentions, lender)[:MESSAGE_LIMIT]))  # always: callers must see it
        if self.recorder is not None:
            self.recorder.record_disclosures(tuple(new), DISCLOSURE_VERSION, self.consent.states[new[0]])

    def _tool_gate(self, name: str, context: ToolContext) -> dict[str, Any] | None:
        if name in CONSENT_GATED_TOOLS and not self.consent.may_record(context.user_id):
            return tool_error(
                "no_consent",
                f"Nothing was done: this caller has not said yes to the disclosure yet. Ask \"{CONSENT_QUESTION}\" "
                "and wait for a yes before saving, scoring, analysing or booking anything for them.",
            )
        return None

    def _may_keep(self, entry: TranscriptEntry) -> bool:
        """Caller lines only of participants who agreed; Cap's lines once anyone has (when a yes is required)."""
        if entry.role == "cap":
            return not self.consent.required or "yes" in self.consent.states.values()
        if not self.consent.required:
            return True
        return bool(entry.speakers) and all(self.consent.may_record(user) for user in entry.speakers)

    def _on_transcript(self, entry: TranscriptEntry) -> None:
        if entry.role == "caller":
            # The answer is the speaker's (the one heard most), not everyone audible in the turn: someone's
            # open microphone under another's "yes" is not their consent. Unknown speaker of several: ask again.
            answerers = {entry.speaker} if entry.speaker is not None else (
                entry.speakers if len(entry.speakers) == 1 else frozenset())
            for user, answer in self.consent.answer(answerers, entry.text).items():
                if self.recorder is not None:
                    self.recorder.record_answer(user, answer)
                if answer == "no":
                    self._spoken.pop(user, None)  # nothing of theirs kept: not a participant, never "the caller"
                    self._enqueue(_Post(f"<@{user}>: {DECLINED_TEXT}"))
        if not self._may_keep(entry):
            return
        if self.recorder is not None:
            self.recorder.record(entry)
        masked = replace(entry, text=mask_contacts(entry.text, self.settings.phone_default_region))
        line = format_transcript_line(masked, self._display_name)
        if self.settings.transcript_destination == "voice_chat":
            self._post(line)
        elif self._posting_enabled and staff_channel(self.guild, self.settings) is not None:
            self._enqueue(_Post(line[:MESSAGE_LIMIT], to="staff"))

    def _on_tool_result(self, name: str, result: dict[str, Any], context: ToolContext) -> None:
        if self._metrics is not None:
            self._metrics.tool_result(name, result)
        event = tool_event(name, result)
        if event is not None:
            keep = ("created", "missing", "score", "tier", "qualifies", "offer", "call_id", "starts_at_utc",
                    "duration_minutes", "newly_qualified")
            self._webhook(event, result.get("lead_id"), {key: result[key] for key in keep if key in result})
        notice = staff_notice(name, result)
        if notice is not None:
            self._post_staff(notice)
        invite = result.get("invite") if result.get("ok") else None
        if not (isinstance(invite, dict) and isinstance(invite.get("ics"), str)):
            return
        if self.settings.invite_by_dm and context.user_id is not None and self.guild.get_member(context.user_id):
            when = result.get("when_for_caller") or "the booked time"
            filename = str(invite.get("filename") or "invite.ics")
            text = f"📅 Your call with the loan team is booked for {when}. Add it to your calendar:"
            self._enqueue(_Post(text, filename, invite["ics"].encode(), to="dm", user_id=context.user_id))
            result["invite_delivery"] = "direct_message"  # the model tells the caller where to look

    def _post(self, content: str, filename: str | None = None, data: bytes | None = None) -> None:
        if self._posting_enabled and content:
            self._enqueue(_Post(content[:MESSAGE_LIMIT], filename, data))

    def _post_staff(self, content: str) -> None:
        """A notice for the staff channel, with the staff role's mention when one is set."""
        if staff_channel(self.guild, self.settings) is None:
            return
        mention, allowed = staff_mention(self.guild, self.settings)
        self._enqueue(_Post((mention + content)[:MESSAGE_LIMIT], to="staff", mentions=allowed))

    def _enqueue(self, post: _Post) -> None:
        try:
            self._posts.put_nowait(post)
        except asyncio.QueueFull:
            log.warning("posting is behind; dropped a %s message", post.to)

    def _destination(self, post: _Post) -> discord.abc.Messageable | None:
        if post.to in self._blocked:
            return None
        if post.to == "dm":
            return self.guild.get_member(post.user_id) if post.user_id is not None else None
        return staff_channel(self.guild, self.settings) if post.to == "staff" else self.current_channel

    async def _post_loop(self) -> None:
        while True:
            post = await self._posts.get()
            destination = self._destination(post)
            if destination is None:  # turned off or refused after lines were queued
                self._posts.task_done()
                continue
            try:
                file = discord.File(io.BytesIO(post.data), filename=post.filename) if post.data else None
                kwargs: dict[str, Any] = {"allowed_mentions": post.mentions}
                if file is not None:
                    kwargs["file"] = file
                if post.embed is not None:
                    kwargs["embed"] = post.embed
                await destination.send(post.content, **kwargs)
            except discord.Forbidden:
                if post.to == "dm":  # this caller's DMs are closed; others' may not be
                    log.info("guild %s: a caller's DMs are closed; the invite was not delivered", self.guild.id)
                    self._post(DM_REFUSED)
                    continue
                log.warning("no permission to post in the %s channel of guild %s; posting there is off",
                            post.to, self.guild.id)
                self._blocked.add(post.to)
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
            "reply_mode": self.reply_mode,
            **summary,
            "voice": self.voice.stats() if self.voice is not None else {},
        }


def format_transcript_line(entry: TranscriptEntry, name_of: Callable[[int | None], str | None]) -> str:
    """'**Alice:** text' for a caller turn, '**Cap:** text' for Cap; markdown in the text is escaped."""
    if entry.role == "cap":
        who = "Cap"
    elif entry.speaker is not None:  # the one heard most in the turn said it
        who = name_of(entry.speaker) or "Caller"
    else:
        names = sorted(filter(None, (name_of(user_id) for user_id in entry.speakers)))
        who = ", ".join(names) or "Caller"
    text = discord.utils.escape_markdown(entry.text.strip())
    suffix = " *(interrupted)*" if entry.interrupted else ""
    return f"**{discord.utils.escape_markdown(who)}:** {text}{suffix}"
