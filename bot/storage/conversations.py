"""Conversation logs: the engine's transcript lines stored as Conversation/Turn rows.

`ConversationRecorder` is what the voice layer holds: `record()` only appends to an in-memory queue
(it never touches the database on the event loop), and one background task writes the queue in
worker threads, retrying with back-off while the database is unavailable, so a hiccup delays lines
but does not lose them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session, col, select

from bot.storage.database import Database
from bot.storage.disclosures import record_answer, record_disclosures
from bot.storage.errors import db_error_line
from bot.storage.leads import get_lead
from bot.storage.models import Conversation, Turn, utcnow
from bot.storage.usage import CallUsage
from realtime.transcript import TranscriptEntry

log = logging.getLogger(__name__)

# Errors that mean "the database is unreachable or busy right now": retry the same batch later.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError)
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)


def create_conversation(session: Session, guild_id: int, channel_id: int | None) -> Conversation:
    conversation = Conversation(guild_id=guild_id, channel_id=channel_id)
    session.add(conversation)
    session.flush()
    return conversation


def get_conversation(session: Session, guild_id: int, conversation_id: int) -> Conversation | None:
    return session.exec(
        select(Conversation).where(Conversation.guild_id == guild_id, Conversation.id == conversation_id)
    ).first()


def link_conversation_lead(session: Session, guild_id: int, conversation_id: int, lead_id: int) -> bool:
    """Point the conversation at the lead, when both belong to the guild."""
    conversation = get_conversation(session, guild_id, conversation_id)
    if conversation is None or get_lead(session, guild_id, lead_id) is None:
        return False
    conversation.lead_id = lead_id
    session.add(conversation)
    return True


def conversation_turns(session: Session, guild_id: int, conversation_id: int) -> list[Turn]:
    return list(
        session.exec(
            select(Turn)
            .where(Turn.guild_id == guild_id, Turn.conversation_id == conversation_id)
            .order_by(col(Turn.seq))
        ).all()
    )


@dataclass(frozen=True)
class _Op:
    kind: Literal["turn", "lead", "end", "disclosure", "answer"]
    seq: int = 0
    entry: TranscriptEntry | None = None
    lead_id: int | None = None
    at: datetime | None = None
    usage: CallUsage | None = None
    users: tuple[int, ...] = ()
    version: str = ""
    consent: str = ""


class ConversationRecorder:
    """Stores one conversation's transcript. Call `record()`/`link_lead()` from the event loop's thread."""

    def __init__(
        self,
        database: Database,
        guild_id: int,
        channel_id: int | None = None,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        close_timeout: float = 10.0,
    ) -> None:
        self.database = database
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.conversation_id: int | None = None
        self._retry_delays = tuple(retry_delays)
        self._close_timeout = close_timeout
        self._pending: deque[_Op] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        self._closing = False

    @property
    def pending(self) -> int:
        """Lines and links not yet stored."""
        return len(self._pending)

    async def start(self) -> int:
        """Create the Conversation row (in a worker thread) and start the writer; returns its id."""
        if self.conversation_id is None:
            self.conversation_id = await asyncio.to_thread(self._create)
            name = f"conversation-{self.conversation_id}-writer"
            self._task = asyncio.create_task(self._writer(), name=name)
        return self.conversation_id

    def record(self, entry: TranscriptEntry) -> None:
        """Queue one finished utterance; returns at once."""
        if self._closing:
            log.warning("conversation %s: line recorded after close(); dropped", self.conversation_id)
            return
        self._seq += 1
        self._push(_Op("turn", seq=self._seq, entry=entry))

    def link_lead(self, lead_id: int) -> None:
        """Queue linking this conversation to a lead of the same guild."""
        if not self._closing:
            self._push(_Op("lead", lead_id=lead_id))

    def record_disclosures(self, users: tuple[int, ...], version: str, consent: str) -> None:
        """Queue the disclosure made (now) to these participants."""
        if not self._closing and users:
            self._push(_Op("disclosure", users=users, version=version, consent=consent, at=utcnow()))

    def record_answer(self, user: int, consent: str) -> None:
        """Queue a participant's answer (yes/no) to the consent question."""
        if not self._closing:
            self._push(_Op("answer", users=(user,), consent=consent, at=utcnow()))

    async def close(self, usage: CallUsage | None = None) -> None:
        """Mark the end (with the call's usage, when given), flush what is queued (waiting at most
        `close_timeout` s), stop the writer."""
        if self._closing:
            return
        self._closing = True
        self._push(_Op("end", at=utcnow(), usage=usage))
        if self._task is None:
            if len(self._pending) > 1:
                log.error("conversation never started; %d line(s) not stored", len(self._pending) - 1)
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._close_timeout)
        except TimeoutError:
            self._task.cancel()
            log.error(
                "conversation %s: database unavailable at close; %d line(s) not stored",
                self.conversation_id,
                len(self._pending),
            )

    def _push(self, op: _Op) -> None:
        self._pending.append(op)
        self._wakeup.set()

    def _create(self) -> int:
        with self.database.session() as session:
            conversation = create_conversation(session, self.guild_id, self.channel_id)
            assert conversation.id is not None
            return conversation.id

    async def _writer(self) -> None:
        failures = 0
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = list(self._pending)
            try:
                await asyncio.to_thread(self._write, batch)
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                delay = self._retry_delays[min(failures, len(self._retry_delays) - 1)]
                failures += 1
                log.warning(
                    "conversation %s: database unavailable (%s); %d line(s) queued, retry in %.1f s",
                    self.conversation_id,
                    type(exc).__name__,
                    len(batch),
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                log.error("conversation %s: batch rejected (%s); storing its lines one by one",
                          self.conversation_id, db_error_line(exc), exc_info=_traceback_unless_db(exc))
                batch = batch[:1]
                try:
                    await asyncio.to_thread(self._write, batch)
                except TRANSIENT_ERRORS:
                    await asyncio.sleep(self._retry_delays[0])
                    continue
                except Exception as exc:
                    log.error("conversation %s: dropping one %s entry the database refuses (%s)",
                              self.conversation_id, batch[0].kind, db_error_line(exc),
                              exc_info=_traceback_unless_db(exc))
            failures = 0
            for _ in batch:
                self._pending.popleft()

    def _write(self, batch: Sequence[_Op]) -> None:
        assert self.conversation_id is not None
        with self.database.session() as session:
            for op in batch:
                if op.kind == "turn" and op.entry is not None:
                    entry = op.entry
                    session.add(
                        Turn(
                            guild_id=self.guild_id,
                            conversation_id=self.conversation_id,
                            seq=op.seq,
                            role=entry.role,
                            text=entry.text,
                            item_id=entry.item_id or None,
                            speakers=[str(user_id) for user_id in sorted(entry.speakers)],
                            interrupted=entry.interrupted,
                            spoken_at=entry.at,
                        )
                    )
                elif op.kind == "lead" and op.lead_id is not None:
                    if not link_conversation_lead(session, self.guild_id, self.conversation_id, op.lead_id):
                        log.warning(
                            "conversation %s: lead %s not in guild %s; not linked",
                            self.conversation_id,
                            op.lead_id,
                            self.guild_id,
                        )
                elif op.kind == "disclosure" and op.at is not None:
                    record_disclosures(session, self.guild_id, self.conversation_id, op.users, op.version,
                                       op.consent, op.at)
                elif op.kind == "answer" and op.at is not None:
                    record_answer(session, self.guild_id, self.conversation_id, op.users[0], op.consent, op.at)
                elif op.kind == "end":
                    conversation = get_conversation(session, self.guild_id, self.conversation_id)
                    if conversation is not None:
                        conversation.ended_at = op.at
                        if op.usage is not None:
                            op.usage.apply_to(conversation)
                        session.add(conversation)


def _traceback_unless_db(exc: BaseException) -> bool:
    """A bug deserves its traceback; a database refusal does not (its text quotes the row: a transcript)."""
    return not isinstance(exc, SQLAlchemyError)
