"""Deal math, pure: no I/O, no settings, no rounding until presentation. Ratios are decimals (0.75)."""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bot.settings import ProgramGuideline

Program = Literal["dscr_rental", "fix_and_flip", "bridge", "ground_up_construction", "portfolio"]
PROGRAMS: tuple[Program, ...] = typing.get_args(Program)
PROGRAM_NAMES: dict[str, str] = {
    "dscr_rental": "DSCR rental",
    "fix_and_flip": "fix-and-flip",
    "bridge": "bridge",
    "ground_up_construction": "ground-up construction",
    "portfolio": "portfolio",
}


def monthly_payment(principal: float, annual_rate_percent: float, term_years: float) -> float:
    """Fully amortizing monthly principal and interest: P·r / (1 − (1 + r)^−n), r monthly, n months."""
    months = round(term_years * 12)
    if months <= 0:
        raise ValueError("term must be at least one month")
    rate = annual_rate_percent / 100 / 12
    if rate == 0:
        return principal / months
    return principal * rate / (1 - (1 + rate) ** -months)


def interest_only_payment(principal: float, annual_rate_percent: float) -> float:
    return principal * annual_rate_percent / 100 / 12


def ratio(numerator: float, denominator: float | None) -> float | None:
    return None if not denominator else numerator / denominator


@dataclass(frozen=True)
class DealInputs:
    purchase_price: float
    loan_amount: float
    interest_rate: float  # annual percent, e.g. 7.25
    term_years: int = 30
    interest_only: bool = False
    monthly_rent: float | None = None
    property_taxes_annual: float = 0.0
    insurance_annual: float = 0.0
    hoa_monthly: float = 0.0
    rehab_budget: float = 0.0
    after_repair_value: float | None = None
    closing_costs: float = 0.0


_RATIOS = frozenset({"ltv", "purchase_ltv", "ltc", "arv_ltv", "dscr", "cap_rate", "cash_on_cash"})


@dataclass(frozen=True)
class DealResults:
    ltv: float | None
    purchase_ltv: float | None  # (loan − rehab) / price: the part of the price a rehab loan funds
    ltc: float | None
    arv_ltv: float | None
    monthly_principal_interest: float
    monthly_pitia: float
    dscr: float | None
    noi_annual: float | None
    cap_rate: float | None
    cash_to_close: float
    annual_cash_flow: float | None
    cash_on_cash: float | None

    def rounded(self) -> dict[str, Any]:
        """Money to cents, ratios to four places: what the model reads out."""
        return {
            name: None if value is None else round(value, 4 if name in _RATIOS else 2)
            for name, value in asdict(self).items()
        }


def analyze(deal: DealInputs) -> DealResults:
    """LTV on price, purchase LTV = (loan − rehab) / price, LTC on price + rehab, ARV-LTV; P&I; PITIA;
    DSCR = rent / PITIA; NOI before vacancy and upkeep (the inputs do not give them); cap rate = NOI / price;
    cash to close = price + closing + rehab − loan; cash-on-cash = (NOI − annual P&I) / cash to close."""
    if deal.interest_only:
        principal_interest = interest_only_payment(deal.loan_amount, deal.interest_rate)
    else:
        principal_interest = monthly_payment(deal.loan_amount, deal.interest_rate, deal.term_years)
    escrow = deal.property_taxes_annual / 12 + deal.insurance_annual / 12 + deal.hoa_monthly
    pitia = principal_interest + escrow
    cash_to_close = deal.purchase_price + deal.closing_costs + deal.rehab_budget - deal.loan_amount
    dscr = noi = cap_rate = cash_flow = cash_on_cash = None
    if deal.monthly_rent is not None:
        dscr = ratio(deal.monthly_rent, pitia)
        noi = 12 * (deal.monthly_rent - deal.hoa_monthly) - deal.property_taxes_annual - deal.insurance_annual
        cap_rate = ratio(noi, deal.purchase_price)
        cash_flow = noi - 12 * principal_interest
        cash_on_cash = cash_flow / cash_to_close if cash_to_close > 0 else None
    return DealResults(
        ltv=ratio(deal.loan_amount, deal.purchase_price),
        purchase_ltv=ratio(max(deal.loan_amount - deal.rehab_budget, 0.0), deal.purchase_price),
        ltc=ratio(deal.loan_amount, deal.purchase_price + deal.rehab_budget),
        arv_ltv=ratio(deal.loan_amount, deal.after_repair_value),
        monthly_principal_interest=principal_interest,
        monthly_pitia=pitia,
        dscr=dscr,
        noi_annual=noi,
        cap_rate=cap_rate,
        cash_to_close=cash_to_close,
        annual_cash_flow=cash_flow,
        cash_on_cash=cash_on_cash,
    )


def suggest_program(deal: DealInputs) -> Program:
    """The program a deal most likely means when the caller did not say."""
    if deal.rehab_budget > 0 or deal.after_repair_value is not None:
        return "fix_and_flip"
    if deal.monthly_rent is not None:
        return "dscr_rental"
    return "bridge"


@dataclass(frozen=True)
class Check:
    metric: str  # "dscr", "ltv", "purchase_ltv", "ltc", "arv_ltv"
    value: float | None
    limit: float
    kind: Literal["min", "max"]

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        # Compare at the precision we report, so 0.8000000001 does not fail a 0.80 maximum.
        value = round(self.value, 4)
        return value >= self.limit if self.kind == "min" else value <= self.limit


@dataclass(frozen=True)
class Verdict:
    program: str
    fits: bool | None  # None: some limit could not be checked and none failed
    checks: list[Check] = field(default_factory=list)
    text: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "fits": self.fits,
            "checks": [
                {
                    "metric": c.metric,
                    "value": None if c.value is None else round(c.value, 4),
                    "limit": c.limit,
                    "kind": c.kind,
                    "passed": c.passed,
                }
                for c in self.checks
            ],
            "text": self.text,
        }


_LABELS = {"dscr": "DSCR", "ltv": "LTV", "purchase_ltv": "purchase LTV", "ltc": "LTC", "arv_ltv": "ARV-LTV"}
_NEEDS = {"dscr": "monthly_rent", "arv_ltv": "after_repair_value"}


def judge(results: DealResults, program: str, guideline: ProgramGuideline) -> Verdict:
    """Compare the results with one program's limits and say so in one plain sentence.

    A program with an LTC limit (fix-and-flip, ground-up) funds the rehab on top of a share of the price,
    so its LTV limit applies to the loan less the rehab budget, not to the whole loan."""
    rehab_program = guideline.max_ltc is not None
    limits: list[tuple[str, float | None, float | None, Literal["min", "max"]]] = [
        ("dscr", results.dscr, guideline.min_dscr, "min"),
        ("purchase_ltv", results.purchase_ltv, guideline.max_ltv, "max")
        if rehab_program
        else ("ltv", results.ltv, guideline.max_ltv, "max"),
        ("ltc", results.ltc, guideline.max_ltc, "max"),
        ("arv_ltv", results.arv_ltv, guideline.max_arv_ltv, "max"),
    ]
    checks = [Check(metric, value, limit, kind) for metric, value, limit, kind in limits if limit is not None]
    name = PROGRAM_NAMES.get(program, program)
    failed = [c for c in checks if c.passed is False]
    passed = "; ".join(_describe(c) for c in checks if c.passed)
    if failed:
        reasons = "; ".join(_describe(c) for c in failed)
        return Verdict(program, False, checks, f"Does not fit the {name} guidelines: {reasons}.")
    unknown = [c for c in checks if c.passed is None]
    if unknown:
        needs = ", ".join(_NEEDS.get(c.metric, c.metric) for c in unknown)
        so_far = f" So far: {passed}." if passed else ""
        text = f"Cannot fully judge against the {name} guidelines without {needs}.{so_far}"
        return Verdict(program, None, checks, text)
    return Verdict(program, True, checks, f"Fits the {name} guidelines: {passed}.")


def _describe(check: Check) -> str:
    """E.g. "DSCR 0.92 is below the 1.00 minimum" or "LTV 0.75 is within the 0.80 maximum".

    Two places unless that would hide a failure ("DSCR 1.00 is below the 1.00 minimum" for 0.9951):
    then the four the check compared at."""
    assert check.value is not None  # only passed or failed checks are described
    two_places = round(check.value, 2)
    hides_failure = check.passed is False and (
        two_places >= check.limit if check.kind == "min" else two_places <= check.limit
    )
    label = f"{_LABELS[check.metric]} " + (f"{check.value:.4f}" if hides_failure else f"{two_places:.2f}")
    if check.kind == "min":
        relation = "meets the" if check.passed else "is below the"
        return f"{label} {relation} {check.limit:.2f} minimum"
    relation = "is within the" if check.passed else "is above the"
    return f"{label} {relation} {check.limit:.2f} maximum"
