"""The terms Cap offers and checks must be the ones the shipped knowledge base publishes.

Cap reads loan-programs.md aloud (search_knowledge_base) and prices offers from scoring.PROGRAM_TERMS and
settings.DEFAULT_PROGRAM_GUIDELINES: if someone edits one side, a caller would hear two different answers.
"""

from __future__ import annotations

import re

import pytest

from bot.settings import DEFAULT_PROGRAM_GUIDELINES
from bot.tools.knowledge import SHIPPED_KNOWLEDGE_DIR
from bot.tools.scoring import PROGRAM_TERMS

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
    assert set(PUBLISHED) == set(PROGRAM_TERMS) == set(DEFAULT_PROGRAM_GUIDELINES)


@pytest.mark.parametrize("program", sorted(PROGRAM_TERMS))
def test_offer_terms_are_the_published_ones(program: str) -> None:
    terms, published = PROGRAM_TERMS[program], PUBLISHED[program]
    low, high = percent_range(published["Rate range"])
    # Tier A takes the bottom of the published range, tier B the top, with no gap between them.
    assert (terms.rate_a[0], terms.rate_a[1], terms.rate_b[1]) == (low, terms.rate_b[0], high)
    points_low, points_high = (float(n) for n in re.findall(NUMBER, published["Points"]))
    assert points_low <= terms.points_a <= terms.points_b <= points_high
    assert terms.term_months in months_allowed(published["Term"])
    assert terms.min_credit == int(published["Min credit score"])


@pytest.mark.parametrize("program", sorted(DEFAULT_PROGRAM_GUIDELINES))
def test_deal_guidelines_are_the_published_ones(program: str) -> None:
    guideline, published = DEFAULT_PROGRAM_GUIDELINES[program], PUBLISHED[program]
    min_dscr = published["Min DSCR"]
    assert guideline.min_dscr == (None if min_dscr == "none" else float(min_dscr.split()[0]))
    leverage_text = published["Max leverage"]
    assert guideline.max_ltc == leverage(leverage_text, "LTC")
    assert guideline.max_arv_ltv == leverage(leverage_text, "ARV-LTV|of completed value")
    published_ltv = leverage(leverage_text, "LTV|of purchase")
    if published_ltv is not None:  # ground-up publishes LTC and completed value, not a purchase LTV
        assert guideline.max_ltv == published_ltv
