"""Transcript retention: old lines go, recent ones and the conversations' usage stay; a periodic job runs it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlmodel import select

from bot.storage.conversations import create_conversation
from bot.storage.database import Database
from bot.storage.models import Conversation, Turn
from bot.storage.retention import purge_periodically, purge_transcripts

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _lines(database: Database, ages_in_days: list[float]) -> None:
    with database.session() as session:
        for guild in (1, 2):
            conversation = create_conversation(session, guild, 10)
            for seq, age in enumerate(ages_in_days):
                session.add(Turn(guild_id=guild, conversation_id=conversation.id, seq=seq, role="caller",
                                 text=f"{age} days ago", spoken_at=NOW - timedelta(days=age)))


def _texts(database: Database) -> list[str]:
    with database.session() as session:
        return sorted({turn.text for turn in session.exec(select(Turn)).all()})


def test_lines_older_than_the_cutoff_are_deleted_in_every_guild(database: Database) -> None:
    _lines(database, [91, 90.5, 89, 1])
    with database.session() as session:
        assert purge_transcripts(session, NOW - timedelta(days=90)) == 4
    assert _texts(database) == ["1 days ago", "89 days ago"]
    with database.session() as session:
        assert len(session.exec(select(Conversation)).all()) == 2  # usage and cost stay


async def test_the_periodic_job_purges_and_keeps_going(database: Database) -> None:
    _lines(database, [40, 10])
    clock = [NOW]
    task = asyncio.create_task(purge_periodically(database, 30, interval=0.01, clock=lambda: clock[0]))
    try:
        for _ in range(500):
            if _texts(database) == ["10 days ago"]:
                break
            await asyncio.sleep(0.01)
        assert _texts(database) == ["10 days ago"]
        clock[0] = NOW + timedelta(days=25)  # a later round: the 10-day-old line is now 35 days old
        for _ in range(500):
            if _texts(database) == []:
                break
            await asyncio.sleep(0.01)
        assert _texts(database) == []
    finally:
        task.cancel()


async def test_zero_days_keeps_everything(database: Database) -> None:
    _lines(database, [4000])
    await asyncio.wait_for(purge_periodically(database, 0, interval=0.01), 1)
    assert _texts(database) == ["4000 days ago"]


def test_settled_webhook_deliveries_go_with_the_transcripts(database: Database) -> None:
    from bot.storage.models import WebhookDelivery

    with database.session() as session:
        for status, age in (("delivered", 100), ("failed", 100), ("pending", 100), ("delivered", 1)):
            session.add(WebhookDelivery(guild_id=1, event="lead.saved", status=status,
                                        created_at=NOW - timedelta(days=age)))
    with database.session() as session:
        purge_transcripts(session, NOW - timedelta(days=90))
    with database.session() as session:
        left = sorted((row.status, row.created_at) for row in session.exec(select(WebhookDelivery)).all())
    assert [status for status, _ in left] == ["delivered", "pending"]  # not yet delivered: kept until it is
