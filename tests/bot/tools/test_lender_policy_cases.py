"""Issue 11's numbered cases, through the registry as the model calls the tools: what a caller hears must
agree with the lender's own documents (the demo lender's policy file and knowledge base)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.policy import SHIPPED_POLICY_FILE
from bot.storage.database import Database
from bot.storage.leads import list_leads, upsert_lead
from bot.tools import build_registry
from bot.tools.finance import monthly_payment
from bot.tools.scheduling import schedule_call_tool
from realtime.tools import ToolContext, ToolRegistry
from tests.bot.tools.helpers import test_settings

GUILD = 7001
ANN = 777000000000000011
FLIP = {  # 85 % of the price plus all the rehab; LTC 87.5 %, ARV-LTV 61 %: fits a fix-and-flip on leverage
    "purchase_price": 200_000,
    "loan_amount": 220_000,
    "interest_rate": 11.0,
    "interest_only": True,
    "rehab_budget": 50_000,
    "after_repair_value": 360_000,
    "program": "fix_and_flip",
}
# No rate: the deal is judged at the lender's. Rent 3,250 on a P&I of 2,517.44 (320,000 over 30 years at 8.75 %,
# the top of the tier-B range a 705 borrower is priced at): DSCR 1.29 at 80 % LTV.
RENTAL_80 = {
    "purchase_price": 400_000,
    "loan_amount": 320_000,
    "monthly_rent": 3_250,
    "property_taxes_annual": 0,
    "insurance_annual": 0,
    "program": "dscr_rental",
}
SHIPPED_POLICY = SHIPPED_POLICY_FILE.read_text(encoding="utf-8")
FIELD_NAME = re.compile(r"\b[a-z]+_[a-z_]+\b")  # monthly_rent, after_repair_value ...


@pytest.fixture
def registry(database: Database) -> ToolRegistry:
    return build_registry(test_settings(), database)


def caller() -> ToolContext:
    return ToolContext(guild_id=GUILD, channel_id=10, user_id=ANN, user_name="Ann")


async def call(registry: ToolRegistry, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return await registry.call(name, args, caller())


async def lead_with(registry: ToolRegistry, **answers: Any) -> dict[str, Any]:
    return await call(registry, "save_lead", {"full_name": "Ann Lee", "email": "ann@example.com", **answers})


def assert_sayable(text: str) -> None:
    assert not FIELD_NAME.search(text), text
    assert not re.search(r"\b0\.\d\d\b", text), text  # no ratio as a decimal ("LTV 0.80")
    assert "1 points" not in text, text


# --- 1. credit minimums ---------------------------------------------------------------------------------


async def test_1_a_645_fico_flip_borrower_is_told_the_660_minimum(registry, database) -> None:
    await lead_with(registry, credit_score=645, experience_deals=4, loan_program="fix_and_flip")
    analysis = await call(registry, "analyze_deal", FLIP)
    assert analysis["verdict"]["fits"] is False
    assert "645" in analysis["verdict"]["text"] and "660" in analysis["verdict"]["text"]
    scored = await call(registry, "score_lead", {})
    assert not scored["qualifies"] and scored["offer"] is None
    assert any("645" in blocker and "660" in blocker for blocker in scored["blockers"])
    [lead] = list_leads_in(database)
    assert lead.credit == "645"  # the exact score is kept, not only a 640-679 band


async def test_1_a_705_fico_dscr_1_29_four_deal_borrower_gets_80_percent(registry) -> None:
    await lead_with(registry, credit_score=705, experience_deals=4, loan_program="dscr_rental")
    analysis = await call(registry, "analyze_deal", RENTAL_80)
    assert analysis["verdict"]["fits"] is True, analysis["verdict"]["text"]
    scored = await call(registry, "score_lead", {})
    assert scored["qualifies"] and scored["offer"]["max_ltv"] == 0.80 and scored["offer"]["amount"] == 320_000


# --- 2. analyze_deal agrees with the documents -------------------------------------------------------------


async def test_2_80_percent_ltv_at_dscr_1_04_does_not_fit_and_score_agrees(registry) -> None:
    await lead_with(registry, credit_score=760, experience_deals=5, loan_program="dscr_rental")
    thin = {**RENTAL_80, "monthly_rent": 2_400}  # DSCR 1.05 at tier A's 7.75 %
    analysis = await call(registry, "analyze_deal", thin)
    assert analysis["verdict"]["fits"] is False
    text = analysis["verdict"]["text"]
    assert "80%" in text and "75%" in text, text
    scored = await call(registry, "score_lead", {})
    assert not scored["qualifies"] and scored["offer"] is None  # never "fits" here and 75 % there


async def test_2_a_cash_out_refinance_at_78_percent_is_over_the_75_percent_limit(registry) -> None:
    refi = {**RENTAL_80, "loan_amount": 312_000, "loan_purpose": "cash_out_refinance"}
    analysis = await call(registry, "analyze_deal", refi)
    assert analysis["verdict"]["fits"] is False and "75%" in analysis["verdict"]["text"]
    # The value is not paid on a refinance: no "cash to close" of price minus loan.
    assert analysis["results"]["cash_to_close"] is None
    with_payoff = await call(registry, "analyze_deal", {**refi, "existing_loan_balance": 200_000})
    assert with_payoff["results"]["cash_to_close"] == -112_000  # 112,000 cash out to the borrower


async def test_2_a_52k_loan_on_a_70k_house_is_under_both_minimums(registry) -> None:
    small = {"purchase_price": 70_000, "loan_amount": 52_000, "interest_rate": 7.5, "monthly_rent": 900,
             "program": "dscr_rental"}
    text = (await call(registry, "analyze_deal", small))["verdict"]["text"]
    assert "$100,000" in text and "$75,000" in text, text


async def test_2_a_4_million_dscr_loan_is_over_the_2_million_maximum(registry) -> None:
    big = {"purchase_price": 5_400_000, "loan_amount": 4_000_000, "interest_rate": 7.0, "monthly_rent": 40_000,
           "program": "dscr_rental"}
    analysis = await call(registry, "analyze_deal", big)
    assert analysis["verdict"]["fits"] is False and "$2,000,000" in analysis["verdict"]["text"]


async def test_2_a_lot_and_a_build_is_ground_up_not_a_flip(registry) -> None:
    build = {"purchase_price": 150_000, "loan_amount": 480_000, "interest_rate": 11.0, "interest_only": True,
             "rehab_budget": 450_000, "after_repair_value": 800_000}
    analysis = await call(registry, "analyze_deal", build)
    assert analysis["program"] == "ground_up_construction"


async def test_2_portfolio_is_not_offered_for_a_single_house(registry) -> None:
    analysis = await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 280_000})
    assert "portfolio" not in analysis["other_programs_that_fit"]


# --- 3. pricing from risk, not engagement --------------------------------------------------------------------


async def test_3_a_760_ten_deal_borrower_gets_the_low_rate_without_timeline_or_liquidity(registry) -> None:
    await lead_with(registry, credit_score=760, experience_deals=10, loan_program="dscr_rental")
    await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000})
    scored = await call(registry, "score_lead", {})
    assert scored["offer"]["rate_range_percent"] == [6.75, 7.75] and scored["offer"]["points"] == 1.0


async def test_3_unknown_experience_is_a_question_not_a_zero(registry) -> None:
    await lead_with(registry, credit_score=760, loan_program="dscr_rental")
    await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000})
    scored = await call(registry, "score_lead", {})
    assert any("deals" in question for question in scored["questions"]), scored


# --- 4. one policy file drives the terms ---------------------------------------------------------------------


async def test_4_a_lenders_own_policy_file_changes_every_figure(database, tmp_path: Path) -> None:
    own = SHIPPED_POLICY.replace("rate_a = [6.75, 7.75]", "rate_a = [5.5, 6.0]").replace(
        'name = "DSCR rental"\nmin_credit = 660', 'name = "DSCR rental"\nmin_credit = 720')
    policy = tmp_path / "policy.toml"
    policy.write_text(own, encoding="utf-8")
    registry = build_registry(test_settings(lender_policy_file=policy), database)
    await lead_with(registry, credit_score=700, experience_deals=10, loan_program="dscr_rental")
    analysis = await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000})
    assert analysis["verdict"]["fits"] is False and "720" in analysis["verdict"]["text"]
    await lead_with(registry, credit_score=780)
    scored = await call(registry, "score_lead", {})
    assert scored["offer"]["rate_range_percent"] == [5.5, 6.0]


def test_4_a_broken_policy_file_is_one_line_at_start_up(tmp_path: Path) -> None:
    from bot.settings import SettingsError

    policy = tmp_path / "policy.toml"
    policy.write_text(SHIPPED_POLICY.replace("min_credit = 650", "min_credit = 65"), encoding="utf-8")
    with pytest.raises(SettingsError) as error:
        test_settings(lender_policy_file=policy)
    message = str(error.value)
    assert "\n" not in message and message.startswith("LENDER_POLICY_FILE:") and "programs.bridge.min_credit" in message


# --- 5. unit slips ------------------------------------------------------------------------------------------


async def test_5_a_rate_said_as_a_fraction_is_read_as_percent_with_a_note(registry) -> None:
    slip = {"purchase_price": 400_000, "loan_amount": 300_000, "interest_rate": 0.075, "program": "dscr_rental"}
    analysis = await call(registry, "analyze_deal", slip)
    yours = analysis["at_your_rate"]  # a rate the caller names is reported apart from the lender's
    assert yours["interest_rate_percent"] == 7.5
    assert yours["monthly_principal_interest"] == round(monthly_payment(300_000, 7.5, 30), 2)
    assert "7.5%" in analysis["note"]


async def test_5_a_one_dollar_price_is_refused(registry) -> None:
    result = await call(registry, "analyze_deal", {"purchase_price": 1, "loan_amount": 300_000, "interest_rate": 7})
    assert result["ok"] is False and result["error"]["code"] == "implausible_figures"


async def test_5_ratios_come_out_as_percentages_like_the_rates_go_in(registry) -> None:
    results = (await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000}))["results"]
    assert results["ltv_percent"] == 75.0 and "ltv" not in results


# --- 6. words meant to be spoken ---------------------------------------------------------------------------


async def test_6_verdicts_and_term_sheets_are_sayable(registry) -> None:
    at_limit = await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000, "program": "bridge"})
    assert_sayable(at_limit["verdict"]["text"])
    no_rent = await call(registry, "analyze_deal", {"purchase_price": 400_000, "loan_amount": 300_000,
                                                    "interest_rate": 7, "program": "dscr_rental"})
    assert_sayable(no_rent["verdict"]["text"])
    for question in no_rent["verdict"]["questions"]:
        assert_sayable(question)
    await lead_with(registry, credit_score=760, experience_deals=10, loan_program="dscr_rental")
    await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000})
    sheet = (await call(registry, "score_lead", {}))["term_sheet"]
    assert "1 point," in sheet and "75%" in sheet
    assert_sayable(sheet)


async def test_6_a_build_has_no_loan_over_land_ratio(registry) -> None:
    build = {"purchase_price": 150_000, "loan_amount": 480_000, "interest_rate": 11.0, "interest_only": True,
             "rehab_budget": 450_000, "after_repair_value": 800_000, "program": "ground_up_construction"}
    results = (await call(registry, "analyze_deal", build))["results"]
    assert results.get("ltv") is None and results.get("ltv_percent") is None  # not "ltv 3.2"


# --- 8. scheduling ----------------------------------------------------------------------------------------


NOW = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)  # a Wednesday


def scheduler(database: Database, now: datetime = NOW) -> ToolRegistry:
    return ToolRegistry.of([schedule_call_tool(test_settings(), database, clock=lambda: now)])


@pytest.mark.parametrize("start", ["2026-12-25T10:00", "2027-01-01T10:00"])
async def test_8_federal_holidays_are_not_bookable(database, start: str) -> None:
    result = await scheduler(database).call("schedule_call", {"start_time": start}, caller())
    assert result["ok"] is False and result["error"]["code"] == "outside_business_hours"


async def test_8_est_in_summer_means_new_york_time(database) -> None:
    summer = datetime(2027, 6, 1, 13, 0, tzinfo=UTC)
    with database.session() as session:  # a booking needs the caller's saved lead and phone (issue 12)
        upsert_lead(session, GUILD, {"full_name": "Ann Lee", "phone": "+15125550143"}, discord_user_id=ANN)
    result = await scheduler(database, summer).call(
        "schedule_call", {"start_time": "2027-06-03T14:00", "timezone": "EST"}, caller())
    assert result["ok"], result
    assert result["starts_at_utc"].startswith("2027-06-03T18:00")  # 2 PM Eastern daylight time


def list_leads_in(database: Database) -> list[Any]:
    with database.session() as session:
        return list_leads(session, GUILD, limit=10)


def test_8_holidays_are_the_observed_federal_dates() -> None:
    # The `holidays` package's US calendar: federal holidays, with a Saturday holiday observed on the Friday
    # before. If an upgrade changes that, bookings would change with it: this test says so.
    from datetime import date

    from bot.tools.business_hours import ClosedDays

    closed = ClosedDays("US")
    assert date(2026, 7, 3) in closed and date(2026, 11, 26) in closed  # July 4 is a Saturday in 2026
    assert date(2026, 12, 24) not in closed and date(2027, 1, 18) in closed  # MLK Day, next year's calendar


async def test_8_a_zone_cap_cannot_place_is_a_question(database) -> None:
    result = await scheduler(database).call(
        "schedule_call", {"start_time": "2026-12-03T14:00", "timezone": "IST"}, caller())
    assert result["error"]["code"] == "invalid_timezone" and "ask the caller" in result["error"]["message"]


# --- the documents' special cases: short-term rentals, foreign nationals, non-warrantable condos ------------


async def test_a_short_term_rental_is_held_to_75_percent_and_dscr_1_25(registry) -> None:
    await lead_with(registry, credit_score=760, experience_deals=5, loan_program="dscr_rental")
    airbnb = {**RENTAL_80, "features": ["short_term_rental"]}  # 80 % LTV, DSCR 1.29: fine as a long-term rental
    analysis = await call(registry, "analyze_deal", airbnb)
    assert analysis["verdict"]["fits"] is False and "75%" in analysis["verdict"]["text"]
    thin = await call(registry, "analyze_deal", {**airbnb, "loan_amount": 300_000, "monthly_rent": 2_300})
    assert thin["verdict"]["fits"] is False and "1.25" in thin["verdict"]["text"]  # DSCR 1.21


async def test_a_foreign_national_gets_dscr_rental_only_at_65_percent(registry) -> None:
    await lead_with(registry, credit_score=760, experience_deals=5)
    abroad = {**RENTAL_80, "loan_amount": 280_000, "features": ["foreign_national"]}
    rental = await call(registry, "analyze_deal", abroad)
    assert rental["verdict"]["fits"] is False and "65%" in rental["verdict"]["text"]
    flip = await call(registry, "analyze_deal", {**FLIP, "features": ["foreign_national"]})
    assert flip["verdict"]["fits"] is False and "foreign national" in flip["verdict"]["text"]


async def test_a_non_warrantable_condo_is_held_to_70_percent(registry) -> None:
    await lead_with(registry, credit_score=760, experience_deals=5)
    condo = {**RENTAL_80, "loan_amount": 290_000, "features": ["non_warrantable_condo"]}  # 72.5 %
    analysis = await call(registry, "analyze_deal", condo)
    assert analysis["verdict"]["fits"] is False and "70%" in analysis["verdict"]["text"]


# --- the documents' remaining rules: heavy-rehab term, cash-out seasoning, liquidity --------------------------


async def test_a_flip_with_a_heavy_rehab_gets_the_18_month_term(registry) -> None:
    await lead_with(registry, credit_score=760, experience_deals=5, liquidity=500_000, loan_program="fix_and_flip")
    heavy = {**FLIP, "purchase_price": 160_000, "loan_amount": 216_000, "rehab_budget": 90_000}  # rehab 56 %
    assert (await call(registry, "analyze_deal", heavy))["verdict"]["fits"] is True
    scored = await call(registry, "score_lead", {})
    assert scored["offer"]["term_months"] == 18 and "18-month term" in scored["term_sheet"]


async def test_a_cash_out_refinance_asks_how_long_the_property_was_owned(registry) -> None:
    await lead_with(registry, credit_score=760, experience_deals=5)
    refi = {**RENTAL_80, "loan_amount": 280_000, "loan_purpose": "cash_out_refinance"}
    analysis = await call(registry, "analyze_deal", refi)
    assert any("6 months" in question for question in analysis["verdict"]["questions"])
    seasoned = await call(registry, "analyze_deal", {**refi, "months_owned": 9})
    assert seasoned["verdict"]["fits"] is True
    fresh = await call(registry, "analyze_deal", {**refi, "months_owned": 3})
    assert fresh["verdict"]["fits"] is None and "renovation" in " ".join(fresh["verdict"]["questions"])


async def test_liquidity_short_of_cash_to_close_and_reserves_blocks_and_unknown_is_asked(registry) -> None:
    await lead_with(registry, credit_score=760, experience_deals=5, loan_program="dscr_rental")
    await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000})  # 100,000 down
    unknown = await call(registry, "score_lead", {})
    assert unknown["offer"] is not None and any("cash" in q for q in unknown["questions"])
    await lead_with(registry, liquidity=60_000)
    short = await call(registry, "score_lead", {})
    assert short["offer"] is None
    assert any("$60,000" in blocker and "reserves" in blocker for blocker in short["blockers"]), short["blockers"]


async def test_5_checks_are_in_percent_too(registry) -> None:
    checks = (await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000}))["verdict"]["checks"]
    ltv = next(check for check in checks if check["metric"] == "ltv_percent")
    assert (ltv["value"], ltv["limit"]) == (75.0, 75.0)  # not 0.75 and 0.75


async def test_a_program_the_lender_does_not_offer_is_refused_by_name(database, tmp_path: Path) -> None:
    policy = tmp_path / "no-portfolio.toml"
    policy.write_text(SHIPPED_POLICY.split("[programs.portfolio]")[0], encoding="utf-8")
    registry = build_registry(test_settings(lender_policy_file=policy), database)
    result = await call(registry, "analyze_deal", {**RENTAL_80, "program": "portfolio"})
    assert result["error"]["code"] == "unknown_program" and "DSCR rental" in result["error"]["message"]
    inferred = await call(registry, "analyze_deal", {**RENTAL_80, "program": None, "property_count": 8})
    assert inferred["program"] != "portfolio"


# --- review 1: the rate a deal is judged at, and the payment terms, are the lender's ----------------------


async def test_an_80_percent_offer_needs_dscr_1_25_at_the_rate_it_is_offered_at(registry) -> None:
    """The 80 % row needs a DSCR of 1.25. The model says 6.5 % (below every DSCR rate the lender has): at it,
    rent 2,600 covers the payment 1.29 times, but the 705 borrower is offered tier B's 7.75-8.75 %, where
    it covers it at most 1.13 times. No 80 % offer may come out of that (review 1, finding 2)."""
    await lead_with(registry, credit_score=705, experience_deals=4, loan_program="dscr_rental")
    said = {**RENTAL_80, "monthly_rent": 2_600, "interest_rate": 6.5}
    analysis = await call(registry, "analyze_deal", said)
    assert analysis["verdict"]["fits"] is False, analysis["verdict"]["text"]
    offer = (await call(registry, "score_lead", {}))["offer"]
    if offer is not None:
        high_rate = offer["rate_range_percent"][1]
        dscr_at_offered_rate = said["monthly_rent"] / monthly_payment(offer["amount"], high_rate, 30)
        assert offer["max_ltv"] < 0.80 or dscr_at_offered_rate >= 1.25, offer


async def test_a_deal_is_judged_at_the_lenders_rate_and_a_rate_the_caller_names_is_reported_apart(registry) -> None:
    """No rate is needed: DSCR and payment are at the top of the borrower's tier range (tier B while credit
    and experience are unknown); a rate the caller names comes back on its own, as "at your rate"."""
    plain = await call(registry, "analyze_deal", RENTAL_80)
    assert plain["results"]["rate_percent"] == 8.75 and "at_your_rate" not in plain
    assert plain["results"]["monthly_principal_interest"] == round(monthly_payment(320_000, 8.75, 30), 2)
    assert "8.75%" in plain["rate_basis"] and "tier" not in plain["rate_basis"].split("top")[0].lower()
    named = await call(registry, "analyze_deal", {**RENTAL_80, "interest_rate": 6.5})
    assert named["results"] == plain["results"]
    yours = named["at_your_rate"]
    assert yours["interest_rate_percent"] == 6.5
    assert yours["monthly_principal_interest"] == round(monthly_payment(320_000, 6.5, 30), 2)
    assert yours["dscr"] == round(3_250 / monthly_payment(320_000, 6.5, 30), 4)
    await lead_with(registry, credit_score=760, experience_deals=5)
    tier_a = await call(registry, "analyze_deal", RENTAL_80)
    assert tier_a["results"]["rate_percent"] == 7.75  # tier A's range is 6.75-7.75 %


async def test_reserves_are_months_of_the_payment_at_the_lenders_rate(registry) -> None:
    """Six months of reserves on a DSCR rental are six months of the payment the lender will charge, not of a
    payment at a rate the model was told."""
    await lead_with(registry, credit_score=760, experience_deals=5, loan_program="dscr_rental")
    await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000, "interest_rate": 5.0})
    needed = 100_000 + 6 * monthly_payment(300_000, 7.75, 30)  # cash to close + 6 months at tier A's 7.75 %
    await lead_with(registry, liquidity=round(needed) - 500)  # enough at 5 %, short at 7.75 %
    scored = await call(registry, "score_lead", {})
    assert scored["offer"] is None and any("reserves" in blocker for blocker in scored["blockers"]), scored


async def test_a_flip_payment_is_interest_only_as_the_lenders_documents_say(registry) -> None:
    """loan-programs.md and glossary.md: fix-and-flip, bridge and construction loans are interest-only. When the
    model leaves `interest_only` out, the policy's program says so; a 30-year amortizing payment on a 12-month
    flip is wrong, and so would be reserves taken as months of it (review 1, finding 9)."""
    flip = {"purchase_price": 200_000, "loan_amount": 220_000, "interest_rate": 11.0, "rehab_budget": 50_000,
            "after_repair_value": 360_000, "program": "fix_and_flip"}
    analysis = await call(registry, "analyze_deal", flip)
    rate = analysis["results"]["rate_percent"]
    assert analysis["results"]["monthly_principal_interest"] == round(220_000 * rate / 100 / 12, 2)
    assert analysis["at_your_rate"]["monthly_principal_interest"] == round(220_000 * 0.11 / 12, 2)
    rental = await call(registry, "analyze_deal", RENTAL_80)  # a DSCR rental amortizes over 30 years
    assert rental["results"]["monthly_principal_interest"] == round(monthly_payment(320_000, 8.75, 30), 2)


async def test_offer_validity_and_the_experience_window_come_from_the_lenders_file(database, tmp_path: Path) -> None:
    """The term sheet's "valid until" and the "in the last 36 months" of an experience rule are the lender's
    to set (review 1, finding 9)."""
    own = SHIPPED_POLICY.replace("offer_valid_days = 14", "offer_valid_days = 30").replace(
        "experience_lookback_months = 36", "experience_lookback_months = 24")
    assert own != SHIPPED_POLICY
    policy = tmp_path / "policy.toml"
    policy.write_text(own, encoding="utf-8")
    registry = build_registry(test_settings(lender_policy_file=policy), database)
    await lead_with(registry, credit_score=760, experience_deals=0)
    bridge = await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 280_000, "program": "bridge"})
    assert "in the last 24 months" in bridge["verdict"]["text"], bridge["verdict"]["text"]
    await lead_with(registry, experience_deals=5, loan_program="dscr_rental")
    await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000})
    offer = (await call(registry, "score_lead", {}))["offer"]
    issued = datetime.now(UTC)
    expires = datetime.fromisoformat(offer["expires_at"])
    expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    assert 29 <= (expires - issued).days <= 30


async def test_score_lead_does_not_offer_a_loan_in_a_state_analyze_deal_refused(registry) -> None:
    """analyze_deal checks the property's state against the lender's; score_lead must judge the same deal with
    the same state, not offer a loan Cap has just said the lender cannot make (review 1, finding 6)."""
    await lead_with(registry, credit_score=760, experience_deals=5, loan_program="dscr_rental")
    analysis = await call(registry, "analyze_deal", {**RENTAL_80, "loan_amount": 300_000, "property_state": "ND"})
    assert analysis["verdict"]["fits"] is False and "ND" in analysis["verdict"]["text"]
    scored = await call(registry, "score_lead", {})
    assert not scored["qualifies"] and scored["offer"] is None, scored.get("term_sheet")


async def test_score_lead_judges_the_borrower_analyze_deal_was_told_about(registry) -> None:
    """A credit score and deal count the caller gave while the deal was analysed hold for the offer too: a
    lead saved without them must not be judged as an unknown (or an older) borrower (review 1, finding 6)."""
    await lead_with(registry, loan_program="dscr_rental")
    said = {**RENTAL_80, "loan_amount": 300_000, "credit_score": 640, "experience_deals": 5}
    analysis = await call(registry, "analyze_deal", said)
    assert analysis["verdict"]["fits"] is False and "640" in analysis["verdict"]["text"]
    scored = await call(registry, "score_lead", {})
    assert scored["offer"] is None and any("640" in blocker for blocker in scored["blockers"]), scored
    better = await call(registry, "analyze_deal", {**said, "credit_score": 760})
    assert better["verdict"]["fits"] is True, better["verdict"]["text"]
    scored = await call(registry, "score_lead", {})
    assert scored["offer"] is not None and scored["pricing_tier"] == "A", scored


async def test_a_score_told_to_analyze_deal_is_newer_than_the_one_saved_before(registry) -> None:
    """The lead says 640; the caller then says 760 and the deal is analysed with it (it fits). The offer must
    be judged with 760 too, not turned down for the older 640 (review 1, finding 6)."""
    await lead_with(registry, credit_score=640, experience_deals=1, loan_program="dscr_rental")
    said = {**RENTAL_80, "loan_amount": 300_000, "credit_score": 760, "experience_deals": 5}
    assert (await call(registry, "analyze_deal", said))["verdict"]["fits"] is True
    scored = await call(registry, "score_lead", {})
    assert scored["offer"] is not None and scored["pricing_tier"] == "A", scored
