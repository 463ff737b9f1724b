"""Usage and spending per call, per guild and per month, read from the conversation rows a call leaves.

Sums are made here in Python over one month's rows (a few thousand at most), the same on SQLite and
PostgreSQL, whose date functions differ.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from bot.storage.models import Conversation

# metrics.summary()["tokens"] keys -> Conversation columns
TOKEN_COLUMNS = {
    "audio_input": "audio_input_tokens",
    "audio_output": "audio_output_tokens",
    "text_input": "text_input_tokens",
    "text_output": "text_output_tokens",
    "cached_input": "cached_input_tokens",
}


@dataclass(frozen=True)
class CallUsage:
    """What one call used, as stored on its conversation row when it ends."""

    participants: tuple[int, ...] = ()
    turns: int = 0
    barge_ins: int = 0
    tokens: Mapping[str, int] = field(default_factory=dict)  # TOKEN_COLUMNS keys
    transcription_tokens: int = 0
    estimated_cost_usd: float = 0.0
    end_reason: str | None = None

    @classmethod
    def from_summary(
        cls, summary: Mapping[str, Any], participants: Iterable[int], end_reason: str | None
    ) -> CallUsage:
        """From realtime.metrics.SessionMetrics.summary()."""
        return cls(
            participants=tuple(sorted(participants)),
            turns=int(summary.get("turns") or 0),
            barge_ins=int(summary.get("barge_ins") or 0),
            tokens={key: int((summary.get("tokens") or {}).get(key) or 0) for key in TOKEN_COLUMNS},
            transcription_tokens=int(summary.get("transcription_tokens") or 0),
            estimated_cost_usd=float(summary.get("estimated_cost_usd") or 0.0),
            end_reason=end_reason,
        )

    def apply_to(self, conversation: Conversation) -> None:
        conversation.participants = [str(user_id) for user_id in self.participants]
        conversation.turns, conversation.barge_ins = self.turns, self.barge_ins
        for key, column in TOKEN_COLUMNS.items():
            setattr(conversation, column, int(self.tokens.get(key, 0)))
        conversation.transcription_tokens = self.transcription_tokens
        conversation.estimated_cost_usd = self.estimated_cost_usd
        conversation.end_reason = (self.end_reason or "")[:200] or None


@dataclass
class UsageTotals:
    calls: int = 0
    seconds: float = 0.0
    turns: int = 0
    barge_ins: int = 0
    tokens: int = 0  # every kind but cached input (a subset of the input), transcription included
    transcription_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, conversation: Conversation) -> None:
        self.calls += 1
        self.seconds += conversation.duration_seconds or 0.0
        self.turns += conversation.turns
        self.barge_ins += conversation.barge_ins
        self.tokens += (
            sum(getattr(conversation, column) for key, column in TOKEN_COLUMNS.items() if key != "cached_input")
            + conversation.transcription_tokens
        )
        self.transcription_tokens += conversation.transcription_tokens
        self.cost_usd += conversation.estimated_cost_usd


def month_start(now: datetime) -> datetime:
    """The first instant of `now`'s calendar month in UTC (budgets and reports reset then)."""
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def _calls(session: Session, guild_id: int | None, start: datetime, end: datetime) -> list[Conversation]:
    statement = select(Conversation).where(col(Conversation.started_at) >= start, col(Conversation.started_at) < end)
    if guild_id is not None:
        statement = statement.where(Conversation.guild_id == guild_id)
    return list(session.exec(statement.order_by(col(Conversation.started_at))).all())


def usage_by_day(session: Session, guild_id: int, start: datetime, end: datetime) -> dict[date, UsageTotals]:
    """The guild's calls started in [start, end), totalled per UTC day (days without calls left out)."""
    days: dict[date, UsageTotals] = defaultdict(UsageTotals)
    for conversation in _calls(session, guild_id, start, end):
        days[conversation.started_at.astimezone(UTC).date()].add(conversation)
    return dict(days)


def usage_by_guild(session: Session, start: datetime, end: datetime) -> dict[int, UsageTotals]:
    """Every guild's calls started in [start, end): the operator's view, never reachable from Discord."""
    guilds: dict[int, UsageTotals] = defaultdict(UsageTotals)
    for conversation in _calls(session, None, start, end):
        guilds[conversation.guild_id].add(conversation)
    return dict(guilds)


def spent_this_month(session: Session, guild_id: int, now: datetime) -> float:
    """The guild's estimated spending (USD) on the calls it started this month."""
    total = session.exec(
        select(func.coalesce(func.sum(Conversation.estimated_cost_usd), 0.0)).where(
            Conversation.guild_id == guild_id,
            col(Conversation.started_at) >= month_start(now),
            col(Conversation.started_at) < next_month_start(now),
        )
    ).one()
    return float(total or 0.0)
