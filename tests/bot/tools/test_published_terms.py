"""The lender policy file and the shipped knowledge base must say the same thing.

Cap reads loan-programs.md aloud (search_knowledge_base) and judges deals and prices offers from the policy
file (bot/data/lender_policy.toml): if someone edits one side, a caller would hear two different answers.
"""

from __future__ import annotations

import re

import pytest

from bot.policy import load_policy
from bot.tools.knowledge import SHIPPED_KNOWLEDGE_DIR

POLICY = load_policy()
PROGRAMS = POLICY.programs

NUMBER = r"(\d+(?:\.\d+)?)"


def published_programs() -> dict[str, dict[str, str]]:
    """The 'Program comparison' table of loan-programs.md, keyed by program id (dscr_rental, …)."""
    text = (SHIPPED_KNOWLEDGE_DIR / "loan-programs.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    programs = {}
    for row in rows[2:]:
        cells = dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True))
        programs[re.sub(r"[- ]", "_", cells["Program"].lower())] = cells
    return programs


PUBLISHED = published_programs()


def percent_range(text: str) -> tuple[float, float]:
    low, high = re.fullmatch(rf"{NUMBER}%–{NUMBER}%", text).groups()
    return float(low), float(high)


def months_allowed(text: str) -> set[int]:
    """'30 years' -> {360}; '12–24 months' -> 12..24; '5, 7 or 10 years fixed' -> {60, 84, 120}."""
    scale = 12 if "year" in text else 1
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    if "–" in text:
        return set(range(numbers[0] * scale, numbers[1] * scale + 1))
    return {n * scale for n in numbers}


def leverage(text: str, kind: str) -> float | None:
    """The percentage before `kind` (a regex) in a 'Max leverage' cell, as a ratio."""
    match = re.search(rf"{NUMBER}% (?:{kind})", text)
    return float(match.group(1)) / 100 if match else None


def test_the_table_covers_every_program_cap_prices() -> None:
    assert set(PUBLISHED) == set(PROGRAMS)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_offer_terms_are_the_published_ones(program: str) -> None:
    terms, published = PROGRAMS[program], PUBLISHED[program]
    low, high = percent_range(published["Rate range"])
    # Tier A takes the bottom of the published range, tier B the top, with no gap between them.
    assert (terms.rate_a[0], terms.rate_a[1], terms.rate_b[1]) == (low, terms.rate_b[0], high)
    points_low, points_high = (float(n) for n in re.findall(NUMBER, published["Points"]))
    assert points_low <= terms.points_a <= terms.points_b <= points_high
    assert terms.term_months in months_allowed(published["Term"])
    assert terms.min_credit == int(published["Min credit score"])


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_deal_limits_are_the_published_ones(program: str) -> None:
    policy, published = PROGRAMS[program], PUBLISHED[program]
    best = policy.leverage[0]  # the table gives the maximums
    min_dscr = published["Min DSCR"]
    assert policy.min_dscr == (None if min_dscr == "none" else float(min_dscr.split()[0]))
    leverage_text = published["Max leverage"]
    assert best.max_ltc == leverage(leverage_text, "LTC")
    assert best.max_arv_ltv == leverage(leverage_text, "ARV-LTV|of completed value")
    published_ltv = leverage(leverage_text, "LTV purchase|LTV|of purchase")
    if published_ltv is not None:  # ground-up publishes LTC and completed value, not a purchase LTV
        assert best.max_ltv == published_ltv
    assert policy.cash_out_max_ltv == leverage(leverage_text, "cash-out")


def program_section(program: str) -> str:
    """The body of one program's section of loan-programs.md (e.g. '## Bridge Loans' up to the next '## ')."""
    text = (SHIPPED_KNOWLEDGE_DIR / "loan-programs.md").read_text(encoding="utf-8")
    title = {"dscr_rental": "DSCR Rental", "fix_and_flip": "Fix-and-Flip", "bridge": "Bridge",
             "ground_up_construction": "Ground-Up Construction", "portfolio": "Portfolio"}[program]
    return text.split(f"## {title} Loans", 1)[1].split("\n## ", 1)[0]


def money(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_loan_sizes_are_the_published_ones(program: str) -> None:
    low, high = re.search(r"[Ll]oan amounts from \$([\d,]+) to \$([\d,]+)", program_section(program)).groups()
    assert (PROGRAMS[program].min_loan, PROGRAMS[program].max_loan) == (money(low), money(high))


def test_the_leverage_grid_is_the_published_one() -> None:
    dscr = PROGRAMS["dscr_rental"].leverage
    assert "up to 80% LTV with DSCR 1.25+ and a 700+ credit score" in program_section("dscr_rental")
    assert (dscr[0].max_ltv, dscr[0].min_dscr, dscr[0].min_credit) == (0.80, 1.25, 700)
    assert "first-time investors are limited to 75% LTV" in program_section("dscr_rental")
    assert dscr[0].min_deals == 1 and dscr[-1].max_ltv == 0.75
    flip = PROGRAMS["fix_and_flip"].leverage
    assert "up to 85% of purchase,\n  85% LTC and 70% ARV-LTV" in program_section("fix_and_flip")
    assert (flip[0].min_deals, flip[-1].max_ltv, flip[-1].max_ltc, flip[-1].max_arv_ltv) == (3, 0.85, 0.85, 0.70)
    build = PROGRAMS["ground_up_construction"].leverage
    assert "At least 2 completed ground-up builds" in program_section("ground_up_construction")
    assert (build[0].min_deals, build[-1].max_ltc) == (2, 0.75)
    assert "At least one completed investment property purchase" in program_section("bridge")
    assert PROGRAMS["bridge"].min_deals == 1
    assert "group of 5 to 100" in program_section("portfolio") and PROGRAMS["portfolio"].min_properties == 5


def test_states_and_the_smallest_property_are_the_published_ones() -> None:
    about = (SHIPPED_KNOWLEDGE_DIR / "about-capital-bridge.md").read_text(encoding="utf-8")
    assert f"Properties worth less than ${POLICY.min_property_value:,.0f}" in about
    assert f"We currently lend in {len(POLICY.states) - 1} states and Washington, DC" in about


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_prepayment_is_the_published_one(program: str) -> None:
    said, section = PROGRAMS[program].prepayment, program_section(program)
    if said.startswith("no "):
        assert "No prepayment penalty." in section
    else:
        assert "5-4-3-2-1 step-down" in said and "5-4-3-2-1 step-down" in section


def test_the_special_cases_are_the_published_ones() -> None:
    overlays = {o.feature: o for o in PROGRAMS["dscr_rental"].overlays}
    short_term = overlays["short_term_rental"]
    assert (short_term.min_dscr, short_term.max_ltv, short_term.min_credit) == (1.25, 0.75, 680)
    assert "minimum DSCR 1.25, maximum 75% LTV and a 680 credit score" in program_section("dscr_rental")
    abroad = overlays["foreign_national"]
    faq = (SHIPPED_KNOWLEDGE_DIR / "faq.md").read_text(encoding="utf-8")
    assert (abroad.max_ltv, abroad.min_dscr) == (0.65, 1.25)
    assert "on the DSCR rental program only, at up to 65% LTV with a minimum DSCR of 1.25" in faq
    for program in set(PROGRAMS) - {"dscr_rental"}:
        assert any(o.feature == "foreign_national" and not o.allowed for o in PROGRAMS[program].overlays), program
    assert overlays["non_warrantable_condo"].max_ltv == 0.70
    assert "Non-warrantable condos: up to 70% LTV." in program_section("dscr_rental")


def test_terms_reserves_and_seasoning_are_the_published_ones() -> None:
    flip, dscr = PROGRAMS["fix_and_flip"], PROGRAMS["dscr_rental"]
    assert (flip.heavy_rehab_term_months, flip.heavy_rehab_share) == (18, 0.5)
    assert "18 months when the rehab budget is more than 50% of the purchase price" in program_section("fix_and_flip")
    assert (flip.reserve_rehab_share, flip.reserve_months) == (0.10, 3)
    assert "plus 10% of the rehab budget and 3 months\n  of interest payments" in program_section("fix_and_flip")
    assert dscr.reserve_months == PROGRAMS["portfolio"].reserve_months == 6
    assert "Reserves: 6 months of PITIA" in program_section("dscr_rental")
    assert "Reserves: 6 months of PITIA" in program_section("portfolio")
    assert PROGRAMS["ground_up_construction"].reserve_cost_share == 0.10
    assert "Liquidity of 10% of total project cost" in program_section("ground_up_construction")
    assert dscr.cash_out_seasoning_months == 6 and "owned for 6 months" in program_section("dscr_rental")


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_payment_terms_are_the_published_ones(program: str) -> None:
    """Interest-only where the documents say so, else the 30-year amortization they publish (review 1,
    finding 9): the payment, DSCR and reserves Cap quotes are computed on these."""
    said, section = PROGRAMS[program], program_section(program)
    assert said.interest_only == bool(re.search(r"\d%, interest-only", section)), program
    if not said.interest_only:
        assert said.amortization_months == 360 and re.search(r"30-year (?:fixed|term|amortization)", section)


def test_the_experience_look_back_is_the_published_one() -> None:
    text = (SHIPPED_KNOWLEDGE_DIR / "loan-programs.md").read_text(encoding="utf-8")
    windows = {int(n) for n in re.findall(r"in the last (\d+) months", text)}
    assert windows == {POLICY.experience_lookback_months}
