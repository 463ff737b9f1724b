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
# Rent 2,600 on PITIA about 2,015: DSCR 1.29 at 80 % LTV.
RENTAL_80 = {
    "purchase_price": 400_000,
    "loan_amount": 320_000,
    "interest_rate": 6.5,
    "monthly_rent": 2_600,
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
    thin = {**RENTAL_80, "monthly_rent": 2_100}  # DSCR 1.04
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
    slip = {"purchase_price": 400_000, "loan_amount": 300_000, "interest_rate": 0.075}
    analysis = await call(registry, "analyze_deal", slip)
    assert analysis["results"]["monthly_principal_interest"] == round(monthly_payment(300_000, 7.5, 30), 2)
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
