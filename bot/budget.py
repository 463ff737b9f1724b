"""A guild's monthly spending limit (MONTHLY_BUDGET_USD, the same for each guild, counted per guild).

Plain decisions: `budget_refusal` for /cap join, `BudgetGuard` for a running call (the call ends itself at
the next turn boundary once its own cost takes the month over the limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.storage.usage import next_month_start

BUDGET_REACHED_GOODBYE = (
    "This server has used its monthly budget for Cap, so I'm ending the call here. "
    "The loan team can still follow up with you."
)


def budget_refusal(spent_usd: float, budget_usd: float | None, now: datetime) -> str | None:
    """Why a new call may not start, or None. One line for the user, with what an admin can do."""
    if budget_usd is None or spent_usd < budget_usd:
        return None
    resume = next_month_start(now)
    return (
        f"this server has used its monthly budget for Cap (${spent_usd:,.2f} of ${budget_usd:,.2f}); "
        f"calls resume on {resume:%B} {resume.day} (UTC), or an operator can raise MONTHLY_BUDGET_USD"
    )


@dataclass(frozen=True)
class BudgetGuard:
    """The month's budget, less what the guild had spent before this call started."""

    budget_usd: float
    spent_before_usd: float

    def reached(self, call_cost_usd: float) -> bool:
        return self.spent_before_usd + call_cost_usd >= self.budget_usd
