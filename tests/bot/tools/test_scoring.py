"""Lead scores (for the loan team) and offers sized and priced by the lender policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.policy import load_policy
from bot.tools.finance import DealInputs, analyze
from bot.tools.scoring import DealFacts, OfferTerms, credit_band_for, offer_terms, score, term_sheet, tier_for
from bot.tools.underwriting import Borrower, Deal, pricing_tier, underwrite

POLICY = load_policy()
NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
RENTAL = DealFacts(
    program="dscr_rental",
    fits_program=True,
    dscr=1.30,
    ltv=0.75,
    loan_amount=300_000,
    purchase_price=400_000,
    cash_to_close=108_000,
    monthly_pitia=2_500,
)
RENTAL_INPUTS = DealInputs(purchase_price=400_000, loan_amount=300_000, interest_rate=6.5, monthly_rent=2_600)


def terms(program: str, deal: DealInputs, borrower: Borrower) -> OfferTerms:
    """The offer score_lead would make: limits from the verdict, price from the borrower's risk."""
    verdict = underwrite(POLICY, program, Deal(deal, analyze(deal)), borrower)
    assert verdict.limits is not None, verdict.text
    facts = DealFacts(program=program, fits_program=verdict.fits, dscr=None, ltv=None,
                      loan_amount=deal.loan_amount, purchase_price=deal.purchase_price,
                      rehab_budget=deal.rehab_budget, after_repair_value=deal.after_repair_value)
    return offer_terms(program, POLICY.programs[program], verdict.limits, pricing_tier(POLICY, borrower), facts, NOW,
                       valid_days=POLICY.offer_valid_days)


@pytest.mark.parametrize(
    ("fico", "band"),
    [(850, "760+"), (760, "760+"), (759, "720-759"), (700, "680-719"), (640, "640-679"), (600, "600-639"),
     (599, "below_600")],
)
def test_credit_bands(fico: int, band: str) -> None:
    assert credit_band_for(fico) == band


@pytest.mark.parametrize(
    ("points", "tier"),
    [(100, "A"), (80, "A"), (79, "B"), (65, "B"), (64, "C"), (50, "C"), (49, "D"), (0, "D")],
)
def test_tiers(points: int, tier: str) -> None:
    assert tier_for(points) == tier


def test_a_strong_lead_scores_and_explains_itself() -> None:
    result = score(credit="780", experience_deals=8, liquidity=400_000, timeline="immediately", facts=RENTAL,
                   program=POLICY.programs["dscr_rental"])
    # credit 30 + experience 20 + deal (DSCR ≥ 1.25: 15, LTV ≤ 0.75: 8) + liquidity 15 + timeline 10
    assert result.score == 98 and result.tier == "A"
    assert result.as_dict()["reasons"][0] == "credit score 780 (30/30)"
    assert "DSCR 1.30, LTV 0.75 (23/25)" in result.as_dict()["reasons"]


def test_unknowns_score_nothing() -> None:
    result = score(credit=None, experience_deals=None, liquidity=None, timeline=None, facts=None, program=None)
    assert result.score == 0 and result.tier == "D"
    assert "credit score unknown (0/30)" in result.as_dict()["reasons"]


def test_liquidity_is_measured_against_the_cash_the_deal_needs() -> None:
    needed = 108_000 + 6 * 2_500  # cash to close + six months of PITIA
    rich = score(credit=None, experience_deals=None, liquidity=1.5 * needed, timeline=None, facts=RENTAL,
                 program=None)
    short = score(credit=None, experience_deals=None, liquidity=0.4 * needed, timeline=None, facts=RENTAL,
                  program=None)
    assert rich.factors[3].points == 15 and short.factors[3].points == 0


def test_tier_a_offer_on_a_rental() -> None:
    offer = terms("dscr_rental", RENTAL_INPUTS, Borrower.of(760, 5))
    assert offer.amount == 300_000  # what was asked; under 80 % of 400,000
    assert offer.max_ltv == 0.80
    assert (offer.rate_min, offer.rate_max, offer.points, offer.term_months) == (6.75, 7.75, 1.0, 360)
    assert offer.expires_at == NOW + timedelta(days=14)
    sheet = term_sheet(offer, POLICY.programs["dscr_rental"])
    assert sheet.startswith("Indicative DSCR rental terms: up to $300,000 at up to 80% loan-to-value, "
                            "a rate of 6.75% to 7.75%, 1 point,")
    assert "30-year term, a 5-4-3-2-1 step-down prepayment penalty;" in sheet and "December 15, 2026" in sheet


def test_tier_b_and_first_time_investors_get_less_leverage_and_pay_more() -> None:
    big_ask = DealInputs(**{**RENTAL_INPUTS.__dict__, "loan_amount": 320_000})
    first_timer = Borrower.of(760, 0)
    assert underwrite(POLICY, "dscr_rental", Deal(big_ask, analyze(big_ask)), first_timer).fits is False
    offer = terms("dscr_rental", RENTAL_INPUTS, first_timer)
    assert offer.max_ltv == 0.75 and offer.amount == 300_000
    assert (offer.rate_min, offer.rate_max, offer.points) == (7.75, 8.75, 2.0)


def test_pricing_comes_from_risk_and_asks_for_what_is_unknown() -> None:
    assert pricing_tier(POLICY, Borrower.of(760, 10)).tier == "A"
    assert pricing_tier(POLICY, Borrower.of(700, 10)).tier == "B"
    unknown = pricing_tier(POLICY, Borrower.of("720-759", None))
    assert unknown.tier == "B" and len(unknown.questions) == 1 and "deals" in unknown.questions[0]


def test_flip_offer_is_capped_by_ltc_and_arv() -> None:
    flip = DealInputs(purchase_price=200_000, loan_amount=255_000, interest_rate=11, interest_only=True,
                      rehab_budget=100_000, after_repair_value=340_000)
    offer = terms("fix_and_flip", flip, Borrower.of(760, 3))
    # caps: asked 255,000; 90 % of the price + the rehab 280,000; 90 % LTC 270,000; 75 % ARV 255,000
    assert offer.amount == 255_000
    assert offer.term_months == 12
    assert "12-month term, no prepayment penalty" in term_sheet(offer, POLICY.programs["fix_and_flip"])


def test_first_time_flippers_get_85_percent_of_price_and_cost_and_70_percent_of_arv() -> None:
    flip = DealInputs(purchase_price=200_000, loan_amount=212_000, interest_rate=11, interest_only=True,
                      rehab_budget=50_000, after_repair_value=400_000)
    seasoned = terms("fix_and_flip", flip, Borrower.of(760, 3))
    assert seasoned.max_ltv == 0.90
    for deals in (0, 2):
        first = terms("fix_and_flip", flip, Borrower.of(760, deals))
        assert (first.amount, first.max_ltv) == (212_000, 0.85)  # 85 % LTC of 250,000 = 212,500


def test_ground_up_needs_two_builds_for_the_full_85_percent_ltc() -> None:
    build = DealInputs(purchase_price=100_000, loan_amount=400_000, interest_rate=11, interest_only=True,
                       rehab_budget=400_000, after_repair_value=800_000)
    deal = Deal(build, analyze(build))
    assert underwrite(POLICY, "ground_up_construction", deal, Borrower.of(760, 2)).fits is True  # 80 % LTC
    one_build = underwrite(POLICY, "ground_up_construction", deal, Borrower.of(760, 1))
    assert one_build.fits is False and "75% maximum" in one_build.text


@pytest.mark.parametrize(("deals", "fits"), [(1, True), (0, False), (None, None)])
def test_bridge_needs_one_completed_deal(deals: int | None, fits: bool | None) -> None:
    bridge = DealInputs(purchase_price=400_000, loan_amount=280_000, interest_rate=10)
    verdict = underwrite(POLICY, "bridge", Deal(bridge, analyze(bridge)), Borrower.of(760, deals))
    assert verdict.fits is fits
    if deals is None:
        assert any("how many investment deals" in q for q in verdict.questions)


def test_a_credit_band_that_straddles_the_minimum_asks_for_the_exact_score() -> None:
    verdict = underwrite(POLICY, "fix_and_flip", Deal(RENTAL_INPUTS, analyze(RENTAL_INPUTS)),
                         Borrower.of("640-679", 5))
    assert verdict.fits is None and "exact credit score" in verdict.questions[0]
    assert underwrite(POLICY, "fix_and_flip", Deal(RENTAL_INPUTS, analyze(RENTAL_INPUTS)),
                      Borrower.of("600-639", 5)).fits is False
