"""Scheduled calls, always within one guild."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlmodel import Session, col, select

from bot.storage.models import ScheduledCall

# Longest call we ever store; bounds the overlap query so it can use the (guild_id, starts_at) index.
MAX_CALL_MINUTES = 240


def lock_guild_bookings(session: Session, guild_id: int) -> None:
    """Serialise bookings of one guild across processes until this transaction ends.

    Several bot processes (shards) may share one PostgreSQL: a transaction-scoped advisory lock keyed
    by the guild makes check-then-insert atomic there. SQLite allows one writer at a time and Cap uses
    it from one process, where the tool's in-process lock already serialises bookings.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.exec(text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=guild_id))


def booked_between(session: Session, guild_id: int, start: datetime, end: datetime) -> list[ScheduledCall]:
    """Booked calls overlapping [start, end)."""
    candidates = session.exec(
        select(ScheduledCall)
        .where(
            ScheduledCall.guild_id == guild_id,
            ScheduledCall.status == "booked",
            col(ScheduledCall.starts_at) < end,
            col(ScheduledCall.starts_at) > start - timedelta(minutes=MAX_CALL_MINUTES),
        )
        .order_by(col(ScheduledCall.starts_at))
    ).all()
    return [call for call in candidates if call.starts_at + timedelta(minutes=call.duration_minutes) > start]


def add_call(session: Session, call: ScheduledCall) -> ScheduledCall:
    session.add(call)
    session.flush()
    return call
