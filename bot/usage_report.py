"""Usage and spending reports: `/cap usage` (one guild, this month by day) and `cap-bot usage` (operators,
every guild, in bot.cli.usage). Plain rendering functions over bot.storage.usage totals."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from bot.storage.usage import UsageTotals, month_start, next_month_start, usage_by_day


def parse_month(text: str | None, now: datetime) -> datetime:
    """'2026-12' as the first instant of that month (UTC); None: the current month."""
    if text is None:
        return month_start(now)
    try:
        parsed = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise ValueError(f"--month must look like 2026-12, not {text!r}") from None
    return datetime(parsed.year, parsed.month, 1, tzinfo=UTC)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:,.1f} min"


def totals_line(totals: UsageTotals) -> str:
    return (
        f"{totals.calls} call(s) · {_minutes(totals.seconds)} · {totals.turns} turns · "
        f"{totals.tokens:,} tokens ({totals.transcription_tokens:,} transcription) · ${totals.cost_usd:,.2f}"
    )


def month_total(days: dict[date, UsageTotals]) -> UsageTotals:
    total = UsageTotals()
    for day in days.values():
        total.calls += day.calls
        total.seconds += day.seconds
        total.turns += day.turns
        total.barge_ins += day.barge_ins
        total.tokens += day.tokens
        total.transcription_tokens += day.transcription_tokens
        total.cost_usd += day.cost_usd
    return total


def format_guild_usage(days: dict[date, UsageTotals], month: datetime, budget_usd: float | None) -> str:
    """The /cap usage reply: the month's total, the budget when one is set, then one line per day."""
    total = month_total(days)
    lines = [f"**Cap usage for {month:%B %Y}** (UTC)", totals_line(total)]
    if budget_usd is not None:
        left = max(0.0, budget_usd - total.cost_usd)
        lines.append(f"Monthly budget: ${budget_usd:,.2f} · left ${left:,.2f}")
    for day in sorted(days)[-31:]:
        lines.append(f"`{day:%m-%d}` {totals_line(days[day])}")
    if not days:
        lines.append("No calls this month.")
    lines.append("Costs are estimates from the configured prices.")
    return "\n".join(lines)


def operator_rows(guilds: dict[int, UsageTotals]) -> list[dict[str, Any]]:
    return [
        {
            "guild_id": str(guild_id),
            "calls": totals.calls,
            "minutes": round(totals.seconds / 60, 1),
            "turns": totals.turns,
            "barge_ins": totals.barge_ins,
            "tokens": totals.tokens,
            "transcription_tokens": totals.transcription_tokens,
            "estimated_cost_usd": round(totals.cost_usd, 4),
        }
        for guild_id, totals in sorted(guilds.items(), key=lambda item: -item[1].cost_usd)
    ]


def format_operator_table(rows: list[dict[str, Any]], month: datetime) -> str:
    header = f"{'guild':>20}  {'calls':>6}  {'minutes':>9}  {'tokens':>12}  {'cost USD':>10}"
    lines = [f"Cap usage for {month:%Y-%m} (UTC), every guild", header]
    for row in rows:
        lines.append(f"{row['guild_id']:>20}  {row['calls']:>6}  {row['minutes']:>9,.1f}  {row['tokens']:>12,}  "
                     f"{row['estimated_cost_usd']:>10,.2f}")
    total = sum(row["estimated_cost_usd"] for row in rows)
    lines.append(f"{'total':>20}  {sum(r['calls'] for r in rows):>6}  {'':>9}  {'':>12}  {total:>10,.2f}")
    return "\n".join(lines) + "\n"


def guild_usage_text(session: Any, guild_id: int, now: datetime, budget_usd: float | None) -> str:
    """One guild's month so far, rendered (run in a worker thread by /cap usage)."""
    start = month_start(now)
    return format_guild_usage(usage_by_day(session, guild_id, start, next_month_start(now)), start, budget_usd)
