"""Bookings of one guild are serialised across processes on PostgreSQL (shards share one database)."""

from __future__ import annotations

from sqlalchemy import text

from bot.storage.calls import lock_guild_bookings
from bot.storage.database import Database


def test_a_booking_transaction_holds_the_guilds_lock_until_it_ends(database: Database) -> None:
    if database.is_sqlite:
        # SQLite has one writer at a time; the lock is a no-op there and must not fail.
        with database.session() as session:
            lock_guild_bookings(session, 42)
        return
    with database.session() as first:
        lock_guild_bookings(first, 42)
        with database.session() as second:  # another connection, as another process would have
            taken = second.exec(text("SELECT pg_try_advisory_xact_lock(42)")).one()[0]
            other_guild = second.exec(text("SELECT pg_try_advisory_xact_lock(43)")).one()[0]
        assert taken is False, "a second booking of the same guild must wait"
        assert other_guild is True, "other guilds are not held up"
    with database.session() as third:
        assert third.exec(text("SELECT pg_try_advisory_xact_lock(42)")).one()[0] is True
