"""Lead scoring and offer terms, pure: a transparent 0–100 score with reasons, and indicative terms."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from bot.settings import ProgramGuideline
from bot.tools.finance import PROGRAM_NAMES

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
QUALIFYING_TIERS = frozenset({"A", "B"})
OFFER_VALID_DAYS = 14


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

    def leverage(self, guideline: ProgramGuideline | None) -> float | None:
        """The LTV the program's limit applies to: for a rehab program (one with an LTC limit) the loan
        less the rehab budget over the price, as finance.judge measures it; else the whole loan's."""
        if guideline is not None and guideline.max_ltc is not None and self.purchase_price:
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
    score: int
    tier: str
    factors: tuple[Factor, ...]
    qualifies: bool
    blockers: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "tier": self.tier,
            "qualifies": self.qualifies,
            "reasons": [f"{f.reason} ({f.points}/{f.max_points})" for f in self.factors],
            "blockers": list(self.blockers),
        }


def _credit(band: str | None) -> Factor:
    if band is None:
        return Factor("credit", 0, 30, "credit band unknown")
    return Factor("credit", CREDIT_POINTS[band], 30, f"credit {band}")


def _experience(deals: int | None) -> Factor:
    if deals is None:
        return Factor("experience", 0, 20, "experience unknown")
    points = 20 if deals >= 6 else 15 if deals >= 3 else 10 if deals >= 1 else 4
    return Factor("experience", points, 20, f"{deals} deal(s) done")


def _deal(facts: DealFacts | None, guideline: ProgramGuideline | None) -> Factor:
    if facts is None:
        return Factor("deal", 0, 25, "no deal analyzed yet")
    points, parts = 0, []
    min_dscr = guideline.min_dscr if guideline and guideline.min_dscr else 1.0
    if facts.dscr is not None:
        points += (
            15 if facts.dscr >= 1.25 else 10 if facts.dscr >= min_dscr else 4 if facts.dscr >= 0.9 else 0
        )
        parts.append(f"DSCR {facts.dscr:.2f}")
    elif facts.after_repair_value:  # a flip or build: the margin to ARV stands in for the rent cover
        arv_ltv = facts.loan_amount / facts.after_repair_value
        points += 15 if arv_ltv <= 0.65 else 10 if arv_ltv <= 0.70 else 4 if arv_ltv <= 0.75 else 0
        parts.append(f"ARV-LTV {arv_ltv:.2f}")
    ltv = facts.leverage(guideline)
    if ltv is not None:
        max_ltv = guideline.max_ltv if guideline else 0.80
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
    credit_band: str | None,
    experience_deals: int | None,
    liquidity: float | None,
    timeline: str | None,
    facts: DealFacts | None,
    guideline: ProgramGuideline | None,
) -> LeadScore:
    """Credit 30 + experience 20 + deal 25 + liquidity 15 + timeline 10 = 100."""
    factors = (
        _credit(credit_band),
        _experience(experience_deals),
        _deal(facts, guideline),
        _liquidity(liquidity, facts),
        _timeline(timeline),
    )
    total = sum(f.points for f in factors)
    tier = tier_for(total)
    blockers = []
    if tier not in QUALIFYING_TIERS:
        blockers.append(f"score {total} is below the 65 needed for an offer")
    program = facts.program if facts else None
    minimum = PROGRAM_TERMS[program].min_credit if program in PROGRAM_TERMS else 600
    if credit_band is not None and _BAND_CEILING[credit_band] < minimum:
        blockers.append(f"credit {credit_band} is under the {minimum} minimum for this program")
    if program == "bridge" and (experience_deals or 0) < BRIDGE_MIN_DEALS:
        blockers.append(
            "bridge loans need at least one completed investment purchase or sale in the last 36 months"
            + (": ask how many deals the caller has done" if experience_deals is None else "")
        )
    if facts is None:
        blockers.append("no deal analyzed yet: run analyze_deal with the deal's figures")
    elif facts.fits_program is not True:
        name = PROGRAM_NAMES.get(facts.program, facts.program)
        blockers.append(
            f"the latest analysis does not meet the {name} guidelines"
            if facts.fits_program is False
            else f"the latest analysis could not be fully checked against the {name} guidelines"
        )
    return LeadScore(total, tier, factors, not blockers, tuple(blockers))


@dataclass(frozen=True)
class ProgramTerms:
    """One program's pricing for tiers A and B; every figure inside the knowledge base's published ranges."""

    rate_a: tuple[float, float]  # annual percent, low–high
    rate_b: tuple[float, float]
    points_a: float
    points_b: float
    term_months: int
    min_credit: int  # lowest FICO the program takes


# Mirrors bot/data/knowledge/loan-programs.md (tests/bot/tools/test_published_terms.py keeps them equal):
# tier A gets the lower half of each rate range.
PROGRAM_TERMS = {
    "dscr_rental": ProgramTerms((6.75, 7.75), (7.75, 8.75), 1.0, 2.0, 360, 660),
    "fix_and_flip": ProgramTerms((9.75, 11.0), (11.0, 12.25), 1.5, 3.0, 12, 660),
    "bridge": ProgramTerms((9.5, 10.5), (10.5, 11.75), 1.0, 2.5, 12, 650),
    "ground_up_construction": ProgramTerms((10.5, 11.5), (11.5, 12.75), 2.0, 3.0, 18, 680),
    "portfolio": ProgramTerms((6.95, 7.75), (7.75, 8.5), 1.0, 2.0, 120, 680),
}
TIER_B_LTV_CUT = 0.05
# Highest score in each band, to tell when a band is surely under a program's minimum.
_BAND_CEILING = {
    "760+": 850,
    "720-759": 759,
    "680-719": 719,
    "640-679": 679,
    "600-639": 639,
    "below_600": 599,
}
_BAND_FLOOR = {"760+": 760, "720-759": 720, "680-719": 680, "640-679": 640, "600-639": 600, "below_600": 300}
# DSCR rental: the top LTV needs DSCR 1.25+, credit 700+ and experience; otherwise 75 % (loan-programs.md).
DSCR_FULL_LEVERAGE = 1.25
DSCR_FULL_LEVERAGE_CREDIT = 700
DSCR_REDUCED_LTV = 0.75
# Experience limits (loan-programs.md). Fix-and-flip: fewer than 3 completed flips caps the purchase
# LTV, LTC and ARV-LTV. Ground-up: the full LTC needs 2 completed builds, else 75 % LTC. Bridge: at least
# one completed deal. Unknown experience counts as none until the caller says.
FLIP_FULL_LEVERAGE_DEALS = 3
FIRST_FLIP_LIMITS = (0.85, 0.85, 0.70)  # max LTV (of the price), LTC, ARV-LTV
GROUND_UP_FULL_LEVERAGE_DEALS = 2
GROUND_UP_REDUCED_LTC = 0.75
BRIDGE_MIN_DEALS = 1


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


def _lower(limit: float | None, cap: float) -> float | None:
    return None if limit is None else min(limit, cap)


def term_sheet(offer: Any) -> str:
    """One short paragraph for an OfferTerms or a stored Offer (same attribute names)."""
    years = offer.term_months / 12
    long_term = offer.term_months >= 60 and offer.term_months % 12 == 0  # short loans are quoted in months
    term = f"{years:g}-year" if long_term else f"{offer.term_months}-month"
    expires = offer.expires_at
    return (
        f"Indicative {PROGRAM_NAMES.get(offer.program, offer.program)} terms: up to "
        f"${offer.amount:,.0f} at up to {offer.max_ltv:.0%} LTV, "
        f"rate {offer.rate_min:.2f}–{offer.rate_max:.2f}%, "
        f"{offer.points:g} points, {term} term; valid until {expires:%B} {expires.day}, {expires.year}. "
        "Subject to underwriting, appraisal and documentation."
    )


def offer_terms(
    tier: str,
    facts: DealFacts,
    guideline: ProgramGuideline,
    now: datetime,
    *,
    experience_deals: int | None = None,
    credit_band: str | None = None,
) -> OfferTerms:
    """Size the loan to the tightest of the program's limits (lower for less experienced borrowers) and
    price it by tier."""
    base = PROGRAM_TERMS.get(facts.program, PROGRAM_TERMS["bridge"])
    tier_b = tier != "A"
    max_ltv = guideline.max_ltv - (TIER_B_LTV_CUT if tier_b else 0.0)
    max_ltc, max_arv_ltv = guideline.max_ltc, guideline.max_arv_ltv
    deals = experience_deals or 0
    if facts.program == "fix_and_flip" and deals < FLIP_FULL_LEVERAGE_DEALS:
        first_ltv, first_ltc, first_arv_ltv = FIRST_FLIP_LIMITS
        max_ltv = min(max_ltv, first_ltv)
        max_ltc = _lower(max_ltc, first_ltc)
        max_arv_ltv = _lower(max_arv_ltv, first_arv_ltv)
    if facts.program == "ground_up_construction" and deals < GROUND_UP_FULL_LEVERAGE_DEALS:
        max_ltc = _lower(max_ltc, GROUND_UP_REDUCED_LTC)
    full_leverage = (
        (facts.dscr or 0.0) >= DSCR_FULL_LEVERAGE
        and bool(experience_deals)
        and _BAND_FLOOR.get(credit_band or "below_600", 0) >= DSCR_FULL_LEVERAGE_CREDIT
    )
    if facts.program == "dscr_rental" and not full_leverage:
        max_ltv = min(max_ltv, DSCR_REDUCED_LTV)
    max_ltv = round(max_ltv, 4)
    caps = [facts.loan_amount]
    if max_ltc is not None:  # a rehab program: a share of the price plus all the rehab, within LTC
        caps.append(max_ltv * facts.purchase_price + facts.rehab_budget)
        caps.append(max_ltc * (facts.purchase_price + facts.rehab_budget))
    else:
        caps.append(max_ltv * facts.purchase_price)
    if max_arv_ltv is not None and facts.after_repair_value:
        caps.append(max_arv_ltv * facts.after_repair_value)
    amount = float(int(min(caps) // 1000 * 1000))  # whole thousands, never above a cap
    rate_min, rate_max = base.rate_b if tier_b else base.rate_a
    return OfferTerms(
        program=facts.program,
        amount=amount,
        max_ltv=max_ltv,
        rate_min=rate_min,
        rate_max=rate_max,
        points=base.points_b if tier_b else base.points_a,
        term_months=base.term_months,
        expires_at=now + timedelta(days=OFFER_VALID_DAYS),
    )
