"""Scheduled calls, always within one guild."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from bot.storage.models import ScheduledCall

# Longest call we ever store; bounds the overlap query so it can use the (guild_id, starts_at) index.
MAX_CALL_MINUTES = 240


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
