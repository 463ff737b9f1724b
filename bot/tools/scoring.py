"""Lead scoring and offer terms, pure: a transparent 0–100 score with reasons (how promising the lead is, for
the staff), and indicative terms priced from the lender policy by the borrower's risk alone."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from bot.policy import Program
from bot.tools.underwriting import Limits, Pricing, dollars, percent, plural

CreditBand = Literal["760+", "720-759", "680-719", "640-679", "600-639", "below_600"]
CREDIT_BANDS: tuple[CreditBand, ...] = typing.get_args(CreditBand)
Timeline = Literal["immediately", "within_30_days", "within_90_days", "3_to_6_months", "just_exploring"]
TIMELINES: tuple[Timeline, ...] = typing.get_args(Timeline)

CREDIT_POINTS = {"760+": 30, "720-759": 25, "680-719": 20, "640-679": 12, "600-639": 5, "below_600": 0}
TIMELINE_POINTS = {
    "immediately": 10,
    "within_30_days": 10,
    "within_90_days": 7,
    "3_to_6_months": 4,
    "just_exploring": 1,
}
TIER_FLOORS = (("A", 80), ("B", 65), ("C", 50), ("D", 0))


def credit_band_for(score: int) -> CreditBand:
    for floor, band in (
        (760, "760+"),
        (720, "720-759"),
        (680, "680-719"),
        (640, "640-679"),
        (600, "600-639"),
    ):
        if score >= floor:
            return band  # type: ignore[return-value]
    return "below_600"


def tier_for(score: int) -> str:
    return next(tier for tier, floor in TIER_FLOORS if score >= floor)


@dataclass(frozen=True)
class DealFacts:
    """What scoring needs from the lead's latest analysis."""

    program: str
    fits_program: bool | None
    dscr: float | None
    ltv: float | None
    loan_amount: float
    purchase_price: float
    rehab_budget: float = 0.0
    after_repair_value: float | None = None
    cash_to_close: float | None = None
    monthly_pitia: float | None = None

    def leverage(self, program: Program | None) -> float | None:
        """The LTV the program's limit applies to: for a rehab program (one with an LTC limit) the loan
        less the rehab budget over the price, as underwriting measures it; else the whole loan's."""
        if program is not None and program.is_rehab and self.purchase_price:
            return max(self.loan_amount - self.rehab_budget, 0.0) / self.purchase_price
        return self.ltv


@dataclass(frozen=True)
class Factor:
    name: str
    points: int
    max_points: int
    reason: str


@dataclass(frozen=True)
class LeadScore:
    """How promising the lead is for the loan team; it never decides whether a deal fits or its price."""

    score: int
    tier: str
    factors: tuple[Factor, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "tier": self.tier,
            "reasons": [f"{f.reason} ({f.points}/{f.max_points})" for f in self.factors],
        }


def _credit(credit: str | None) -> Factor:
    """`credit` is an exact score ("705") or a band ("680-719")."""
    if credit is None:
        return Factor("credit", 0, 30, "credit score unknown")
    band = credit_band_for(int(credit)) if credit.isdigit() else credit
    label = f"credit score {credit}" if credit.isdigit() else f"credit {credit}"
    return Factor("credit", CREDIT_POINTS.get(band, 0), 30, label)


def _experience(deals: int | None) -> Factor:
    if deals is None:
        return Factor("experience", 0, 20, "experience unknown")
    points = 20 if deals >= 6 else 15 if deals >= 3 else 10 if deals >= 1 else 4
    return Factor("experience", points, 20, f"{deals} deal(s) done")


def _deal(facts: DealFacts | None, program: Program | None) -> Factor:
    if facts is None:
        return Factor("deal", 0, 25, "no deal analyzed yet")
    points, parts = 0, []
    min_dscr = program.min_dscr if program and program.min_dscr else 1.0
    if facts.dscr is not None:
        points += (
            15 if facts.dscr >= 1.25 else 10 if facts.dscr >= min_dscr else 4 if facts.dscr >= 0.9 else 0
        )
        parts.append(f"DSCR {facts.dscr:.2f}")
    elif facts.after_repair_value:  # a flip or build: the margin to ARV stands in for the rent cover
        arv_ltv = facts.loan_amount / facts.after_repair_value
        points += 15 if arv_ltv <= 0.65 else 10 if arv_ltv <= 0.70 else 4 if arv_ltv <= 0.75 else 0
        parts.append(f"ARV-LTV {arv_ltv:.2f}")
    ltv = facts.leverage(program)
    if ltv is not None:
        max_ltv = program.leverage[0].max_ltv if program else 0.80
        points += 10 if ltv <= 0.65 else 8 if ltv <= 0.75 else 5 if ltv <= max_ltv else 0
        parts.append(f"LTV {ltv:.2f}")
    return Factor("deal", points, 25, ", ".join(parts) or "deal figures incomplete")


def _liquidity(liquidity: float | None, facts: DealFacts | None) -> Factor:
    if liquidity is None:
        return Factor("liquidity", 0, 15, "liquidity unknown")
    if facts is not None and facts.cash_to_close is not None and facts.cash_to_close > 0:
        # Cash to close plus six months of payments in reserve.
        needed = facts.cash_to_close + 6 * (facts.monthly_pitia or 0.0)
        cover = liquidity / needed
        points = 15 if cover >= 1.5 else 10 if cover >= 1.0 else 5 if cover >= 0.5 else 0
        return Factor(
            "liquidity", points, 15, f"liquidity covers {cover:.1f}x cash to close plus 6 months' reserves"
        )
    points = 15 if liquidity >= 250_000 else 10 if liquidity >= 100_000 else 6 if liquidity >= 50_000 else 3
    return Factor("liquidity", points if liquidity > 0 else 0, 15, f"${liquidity:,.0f} liquid")


def _timeline(timeline: str | None) -> Factor:
    if timeline is None:
        return Factor("timeline", 0, 10, "timeline unknown")
    return Factor("timeline", TIMELINE_POINTS[timeline], 10, f"timeline {timeline.replace('_', ' ')}")


def score(
    *,
    credit: str | None,
    experience_deals: int | None,
    liquidity: float | None,
    timeline: str | None,
    facts: DealFacts | None,
    program: Program | None,
) -> LeadScore:
    """Credit 30 + experience 20 + deal 25 + liquidity 15 + timeline 10 = 100."""
    factors = (
        _credit(credit),
        _experience(experience_deals),
        _deal(facts, program),
        _liquidity(liquidity, facts),
        _timeline(timeline),
    )
    total = sum(f.points for f in factors)
    return LeadScore(total, tier_for(total), factors)


@dataclass(frozen=True)
class OfferTerms:
    program: str
    amount: float
    max_ltv: float
    rate_min: float
    rate_max: float
    points: float
    term_months: int
    expires_at: datetime


def term_sheet(offer: Any, program: Program) -> str:
    """One short paragraph for an OfferTerms or a stored Offer (same attribute names)."""
    years = offer.term_months / 12
    long_term = offer.term_months >= 60 and offer.term_months % 12 == 0  # short loans are quoted in months
    term = f"{years:g}-year" if long_term else f"{offer.term_months}-month"
    expires = offer.expires_at
    return (
        f"Indicative {program.name} terms: up to {dollars(offer.amount)} at up to {percent(offer.max_ltv)} "
        f"loan-to-value, a rate of {offer.rate_min:g}% to {offer.rate_max:g}%, {plural(offer.points, 'point')}, "
        f"{term} term, {program.prepayment}; valid until {expires:%B} {expires.day}, {expires.year}. "
        "Subject to underwriting, appraisal and documentation; not an approval."
    )


def offer_terms(program_id: str, program: Program, limits: Limits, pricing: Pricing, facts: DealFacts,
                now: datetime, *, valid_days: int) -> OfferTerms:
    """Size the loan to the tightest of the limits the borrower qualifies for (and the program's maximum
    loan), and price it by the risk tier; every figure comes from the lender policy (`valid_days`: its
    offer_valid_days)."""
    caps = [facts.loan_amount, program.max_loan]
    if limits.max_ltc is not None:  # a rehab program: a share of the price plus all the rehab, within LTC
        caps.append(limits.max_ltv * facts.purchase_price + facts.rehab_budget)
        caps.append(limits.max_ltc * (facts.purchase_price + facts.rehab_budget))
    else:
        caps.append(limits.max_ltv * facts.purchase_price)
    if limits.max_arv_ltv is not None and facts.after_repair_value:
        caps.append(limits.max_arv_ltv * facts.after_repair_value)
    amount = float(int(min(caps) // 1000 * 1000))  # whole thousands, never above a cap
    tier_a = pricing.tier == "A"
    rate_min, rate_max = program.rate_a if tier_a else program.rate_b
    return OfferTerms(
        program=program_id,
        amount=amount,
        max_ltv=round(limits.max_ltv, 4),
        rate_min=rate_min,
        rate_max=rate_max,
        points=program.points_a if tier_a else program.points_b,
        term_months=_term_months(program, facts),
        expires_at=now + timedelta(days=valid_days),
    )


def _term_months(program: Program, facts: DealFacts) -> int:
    """The program's term, or its longer one when the rehab is heavy (more than a share of the price)."""
    heavy = program.heavy_rehab_term_months is not None and program.heavy_rehab_share is not None and (
        facts.rehab_budget > program.heavy_rehab_share * facts.purchase_price)
    return program.heavy_rehab_term_months if heavy and program.heavy_rehab_term_months else program.term_months
