"""A deal at the lender's own terms, pure: the rate, payment kind and amortization a deal is judged at.

The model does not know the lender's rate (the persona forbids inventing one), so analyze_deal and
score_lead judge DSCR, the payment and the reserves at the rate the policy gives this borrower: the top (or,
if the lender's file says so, the bottom) of the range of their pricing tier. "top" is conservative: a deal
that fits there fits at every rate an offer quotes. A rate the caller names is computed apart, as "at your
rate", and never decides a verdict. Both tools build the deal from the same stored arguments through here,
so what analyze_deal says and what score_lead offers cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.policy import LenderPolicy, Program
from bot.tools.finance import DealInputs, DealResults, analyze
from bot.tools.underwriting import Borrower, Deal, pricing_tier


@dataclass(frozen=True)
class JudgingRate:
    percent: float
    words: str  # "8.75%, the top of the lender's DSCR rental range for this borrower (7.75% to 8.75%)"


def judging_rate(policy: LenderPolicy, program_id: str, borrower: Borrower) -> JudgingRate:
    """The rate of the borrower's pricing tier (an unknown answer prices at B) at the policy's chosen end."""
    program = policy.programs[program_id]
    tier = pricing_tier(policy, borrower).tier
    low, high = program.rate_a if tier == "A" else program.rate_b
    end = policy.judge_at_rate
    rate = high if end == "top" else low
    return JudgingRate(rate, f"{rate:g}%, the {end} of the lender's {program.name} range for this borrower "
                             f"({low:g}% to {high:g}%)")


def payment_terms(program: Program, inputs: Mapping[str, Any]) -> tuple[float, bool]:
    """(amortization in years, interest-only): what the caller said, else the program's terms."""
    interest_only = inputs.get("interest_only")
    if interest_only is None:
        interest_only = program.interest_only
    years = inputs.get("term_years")
    return (float(years) if years else program.amortization_months / 12), bool(interest_only)


def deal_inputs(inputs: Mapping[str, Any], rate: float, term_years: float = 30, interest_only: bool = False
                ) -> DealInputs:
    """analyze_deal's arguments (as stored with the analysis, `loan_purpose` resolved) at one rate."""
    purpose = inputs.get("loan_purpose") or "purchase"

    def money(name: str) -> float:
        return float(inputs.get(name) or 0.0)

    return DealInputs(
        purchase_price=float(inputs["purchase_price"]),
        loan_amount=float(inputs["loan_amount"]),
        interest_rate=rate,
        term_years=term_years,
        interest_only=interest_only,
        monthly_rent=inputs.get("monthly_rent"),
        property_taxes_annual=money("property_taxes_annual"),
        insurance_annual=money("insurance_annual"),
        hoa_monthly=money("hoa_monthly"),
        rehab_budget=money("rehab_budget"),
        after_repair_value=inputs.get("after_repair_value"),
        closing_costs=money("closing_costs"),
        refinance=purpose != "purchase",
        existing_loan_balance=inputs.get("existing_loan_balance"),
    )


def as_deal(inputs: Mapping[str, Any], deal: DealInputs, results: DealResults | None = None) -> Deal:
    purpose = inputs.get("loan_purpose") or "purchase"
    return Deal(deal, results or analyze(deal), cash_out=purpose == "cash_out_refinance",
                refinance=purpose != "purchase", properties=int(inputs.get("property_count") or 1),
                features=frozenset(inputs.get("features") or ()), months_owned=inputs.get("months_owned"))


def amounts_only(inputs: Mapping[str, Any]) -> Deal:
    """The deal's amounts for choosing a program (which reads no rate): priced at 0 %, judged by nothing."""
    return as_deal(inputs, deal_inputs(inputs, 0.0))


def lender_deal(policy: LenderPolicy, program_id: str, inputs: Mapping[str, Any], borrower: Borrower) -> Deal:
    """The deal as the lender would price it for this borrower on this program: what every verdict judges."""
    program = policy.programs[program_id]
    years, interest_only = payment_terms(program, inputs)
    return as_deal(inputs, deal_inputs(inputs, judging_rate(policy, program_id, borrower).percent, years,
                                       interest_only))


def deal_at_rate(program: Program, inputs: Mapping[str, Any], rate: float) -> DealResults:
    """The figures at a rate the caller named, on the same payment terms: said as "at your rate" only."""
    years, interest_only = payment_terms(program, inputs)
    return analyze(deal_inputs(inputs, rate, years, interest_only))
