from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.settings import DEFAULT_PROGRAM_GUIDELINES
from bot.tools.scoring import DealFacts, credit_band_for, offer_terms, score, term_sheet, tier_for

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


@pytest.mark.parametrize(
    ("fico", "band"),
    [
        (850, "760+"),
        (760, "760+"),
        (759, "720-759"),
        (700, "680-719"),
        (640, "640-679"),
        (600, "600-639"),
        (599, "below_600"),
    ],
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
    result = score(
        credit_band="760+",
        experience_deals=8,
        liquidity=400_000,
        timeline="immediately",
        facts=RENTAL,
        guideline=DEFAULT_PROGRAM_GUIDELINES["dscr_rental"],
    )
    # credit 30 + experience 20 + deal (DSCR ≥ 1.25: 15, LTV ≤ 0.75: 8) + liquidity 15 + timeline 10
    assert result.score == 98 and result.tier == "A" and result.qualifies
    assert result.as_dict()["reasons"][0] == "credit 760+ (30/30)"
    assert "DSCR 1.30, LTV 0.75 (23/25)" in result.as_dict()["reasons"]


def test_unknowns_score_nothing_and_block_the_offer() -> None:
    result = score(
        credit_band=None, experience_deals=None, liquidity=None, timeline=None, facts=None, guideline=None
    )
    assert result.score == 0 and result.tier == "D" and not result.qualifies
    assert any("no deal analyzed" in b for b in result.blockers)
    assert "credit band unknown (0/30)" in result.as_dict()["reasons"]


def test_a_deal_outside_the_guidelines_blocks_the_offer() -> None:
    facts = DealFacts(
        program="dscr_rental",
        fits_program=False,
        dscr=0.85,
        ltv=0.85,
        loan_amount=340_000,
        purchase_price=400_000,
    )
    result = score(
        credit_band="760+",
        experience_deals=10,
        liquidity=500_000,
        timeline="immediately",
        facts=facts,
        guideline=DEFAULT_PROGRAM_GUIDELINES["dscr_rental"],
    )
    assert not result.qualifies
    assert any("does not meet the DSCR rental guidelines" in b for b in result.blockers)


def test_credit_under_the_program_minimum_blocks() -> None:
    result = score(
        credit_band="600-639",
        experience_deals=10,
        liquidity=900_000,
        timeline="immediately",
        facts=RENTAL,
        guideline=DEFAULT_PROGRAM_GUIDELINES["dscr_rental"],
    )
    assert result.tier in ("A", "B") and not result.qualifies
    assert any("under the 660 minimum" in b for b in result.blockers)


def test_liquidity_is_measured_against_the_cash_the_deal_needs() -> None:
    needed = 108_000 + 6 * 2_500  # cash to close + six months of PITIA
    rich = score(
        credit_band=None,
        experience_deals=None,
        liquidity=1.5 * needed,
        timeline=None,
        facts=RENTAL,
        guideline=None,
    )
    short = score(
        credit_band=None,
        experience_deals=None,
        liquidity=0.4 * needed,
        timeline=None,
        facts=RENTAL,
        guideline=None,
    )
    assert rich.factors[3].points == 15 and short.factors[3].points == 0


def test_tier_a_offer_on_a_rental() -> None:
    terms = offer_terms(
        "A", RENTAL, DEFAULT_PROGRAM_GUIDELINES["dscr_rental"], NOW, experience_deals=5, credit_band="760+"
    )
    assert terms.amount == 300_000  # what was asked; under 80 % of 400,000
    assert terms.max_ltv == 0.80
    assert (terms.rate_min, terms.rate_max, terms.points, terms.term_months) == (6.75, 7.75, 1.0, 360)
    assert terms.expires_at == NOW + timedelta(days=14)
    sheet = term_sheet(terms)
    assert sheet.startswith("Indicative DSCR rental terms: up to $300,000 at up to 80% LTV, rate 6.75–7.75%")
    assert "30-year term" in sheet and "December 15, 2026" in sheet


def test_tier_b_and_first_time_investors_get_less_leverage_and_pay_more() -> None:
    big_ask = DealFacts(**{**RENTAL.__dict__, "loan_amount": 320_000})
    terms = offer_terms(
        "B", big_ask, DEFAULT_PROGRAM_GUIDELINES["dscr_rental"], NOW, experience_deals=0, credit_band="760+"
    )
    assert terms.max_ltv == 0.75 and terms.amount == 300_000  # capped at 75 % of 400,000
    assert (terms.rate_min, terms.rate_max, terms.points) == (7.75, 8.75, 2.0)


def test_flip_offer_is_capped_by_ltc_and_arv() -> None:
    flip = DealFacts(
        program="fix_and_flip",
        fits_program=True,
        dscr=None,
        ltv=0.9,
        loan_amount=280_000,
        purchase_price=200_000,
        rehab_budget=100_000,
        after_repair_value=340_000,
    )
    terms = offer_terms("A", flip, DEFAULT_PROGRAM_GUIDELINES["fix_and_flip"], NOW, experience_deals=3)
    # caps: asked 280,000; 90 % of the price + the rehab 280,000; 90 % LTC 270,000; 75 % ARV 255,000
    assert terms.amount == 255_000
    assert terms.term_months == 12 and "12-month term" in term_sheet(terms)


def test_a_flip_funds_the_rehab_on_top_of_the_purchase_ltv() -> None:
    # loan-programs.md: 90 % of the price + 100 % of the rehab, within 90 % LTC and 75 % ARV-LTV
    flip = DealFacts(
        program="fix_and_flip",
        fits_program=True,
        dscr=None,
        ltv=225_000 / 200_000,
        loan_amount=225_000,
        purchase_price=200_000,
        rehab_budget=50_000,
        after_repair_value=350_000,
    )
    guideline = DEFAULT_PROGRAM_GUIDELINES["fix_and_flip"]
    assert offer_terms("A", flip, guideline, NOW, experience_deals=3).amount == 225_000  # 175,000 + 50,000
    bigger = DealFacts(**{**flip.__dict__, "loan_amount": 240_000})
    assert offer_terms("A", bigger, guideline, NOW, experience_deals=3).amount == 225_000  # 90 % LTC binds
    deal = score(
        credit_band="760+",
        experience_deals=5,
        liquidity=None,
        timeline=None,
        facts=flip,
        guideline=guideline,
    ).factors[2]
    assert "LTV 0.88" in deal.reason and deal.points == 15 + 5  # ARV-LTV 0.64, purchase LTV 0.875


def test_first_time_flippers_get_85_percent_of_price_and_cost_and_70_percent_of_arv() -> None:
    flip = DealFacts(
        program="fix_and_flip",
        fits_program=True,
        dscr=None,
        ltv=1.0,
        loan_amount=250_000,
        purchase_price=200_000,
        rehab_budget=50_000,
        after_repair_value=400_000,
    )
    guideline = DEFAULT_PROGRAM_GUIDELINES["fix_and_flip"]
    seasoned = offer_terms("A", flip, guideline, NOW, experience_deals=3)
    assert (seasoned.amount, seasoned.max_ltv) == (225_000, 0.90)  # 90 % of 250,000 total cost
    for deals in (None, 0, 2):
        first = offer_terms("A", flip, guideline, NOW, experience_deals=deals)
        assert (first.amount, first.max_ltv) == (212_000, 0.85)  # 85 % LTC of 250,000 = 212,500
    near_arv = DealFacts(**{**flip.__dict__, "after_repair_value": 290_000})
    assert offer_terms("A", near_arv, guideline, NOW, experience_deals=0).amount == 203_000  # 70 % ARV
    price_bound = DealFacts(**{**flip.__dict__, "rehab_budget": 0.0, "loan_amount": 190_000})
    assert offer_terms("A", price_bound, guideline, NOW, experience_deals=1).amount == 170_000  # 85 % of price


def test_ground_up_needs_two_builds_for_the_full_85_percent_ltc() -> None:
    build = DealFacts(
        program="ground_up_construction",
        fits_program=True,
        dscr=None,
        ltv=2.0,
        loan_amount=400_000,
        purchase_price=100_000,
        rehab_budget=400_000,
        after_repair_value=800_000,
    )
    guideline = DEFAULT_PROGRAM_GUIDELINES["ground_up_construction"]
    assert offer_terms("A", build, guideline, NOW, experience_deals=2).amount == 400_000  # 80 % LTC: asked
    assert offer_terms("A", build, guideline, NOW, experience_deals=1).amount == 375_000  # 75 % of 500,000


def test_bridge_needs_one_completed_deal() -> None:
    bridge = DealFacts(
        program="bridge", fits_program=True, dscr=None, ltv=0.7, loan_amount=280_000, purchase_price=400_000
    )

    def blockers(deals: int | None) -> list[str]:
        result = score(
            credit_band="760+",
            experience_deals=deals,
            liquidity=900_000,
            timeline="immediately",
            facts=bridge,
            guideline=DEFAULT_PROGRAM_GUIDELINES["bridge"],
        )
        return list(result.blockers)

    assert blockers(1) == []
    assert any("at least one completed investment purchase or sale" in b for b in blockers(0))
    assert any("ask how many deals" in b for b in blockers(None))
