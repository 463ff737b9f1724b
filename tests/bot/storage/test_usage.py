"""Spending per guild and month from the conversation rows, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.budget import BudgetGuard, budget_refusal
from bot.storage.database import Database
from bot.storage.models import Conversation
from bot.storage.usage import month_start, next_month_start, spent_this_month, usage_by_day, usage_by_guild

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _call(database: Database, guild: int, started: datetime, cost: float) -> None:
    with database.session() as session:
        session.add(Conversation(guild_id=guild, started_at=started, ended_at=started + timedelta(minutes=10),
                                 estimated_cost_usd=cost, text_output_tokens=10, cached_input_tokens=99))


def test_month_totals_are_per_guild_and_reset_on_the_first(database: Database) -> None:
    _call(database, 1, datetime(2026, 11, 30, 23, 59, tzinfo=UTC), 100.0)  # last month
    _call(database, 1, datetime(2026, 12, 1, 0, 0, tzinfo=UTC), 1.25)
    _call(database, 1, datetime(2026, 12, 6, 9, 0, tzinfo=UTC), 2.5)
    _call(database, 2, datetime(2026, 12, 6, 9, 0, tzinfo=UTC), 40.0)
    with database.session() as session:
        assert spent_this_month(session, 1, NOW) == 3.75
        assert spent_this_month(session, 3, NOW) == 0.0
        days = usage_by_day(session, 1, month_start(NOW), next_month_start(NOW))
        guilds = usage_by_guild(session, month_start(NOW), next_month_start(NOW))
    assert sorted(days) == [datetime(2026, 12, 1).date(), datetime(2026, 12, 6).date()]
    assert days[datetime(2026, 12, 1).date()].tokens == 10  # cached input is part of the input, not added
    assert {guild: totals.cost_usd for guild, totals in guilds.items()} == {1: 3.75, 2: 40.0}
    assert next_month_start(datetime(2026, 12, 31, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)


def test_budget_decisions() -> None:
    assert budget_refusal(24.99, 25.0, NOW) is None and budget_refusal(1000.0, None, NOW) is None
    refusal = budget_refusal(25.0, 25.0, NOW)
    assert refusal is not None and "$25.00 of $25.00" in refusal and "January 1" in refusal
    guard = BudgetGuard(10.0, 9.0)
    assert not guard.reached(0.99) and guard.reached(1.0)
