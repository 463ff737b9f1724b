"""Deal math, pure: no I/O, no settings, no rounding until presentation. Ratios are decimals (0.75)."""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass
from typing import Any, Literal

Program = Literal["dscr_rental", "fix_and_flip", "bridge", "ground_up_construction", "portfolio"]
PROGRAMS: tuple[Program, ...] = typing.get_args(Program)


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
    term_years: float = 30  # amortization, years
    interest_only: bool = False
    monthly_rent: float | None = None
    property_taxes_annual: float = 0.0
    insurance_annual: float = 0.0
    hoa_monthly: float = 0.0
    rehab_budget: float = 0.0
    after_repair_value: float | None = None
    closing_costs: float = 0.0
    refinance: bool = False  # purchase_price is then the current value
    existing_loan_balance: float | None = None  # a refinance's payoff; None: not known


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
    cash_to_close: float | None  # negative: cash out to the borrower; None: a refinance without its payoff
    annual_cash_flow: float | None
    cash_on_cash: float | None

    def rounded(self) -> dict[str, Any]:
        """Money to cents, DSCR to four places, the other ratios as percentages (rates go in as percent,
        so ratios come out as percent too: `ltv_percent` 80.0, never `ltv` 0.8)."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if name in _RATIOS and name != "dscr":
                out[f"{name}_percent"] = None if value is None else round(value * 100, 2)
            else:
                out[name] = None if value is None else round(value, 4 if name == "dscr" else 2)
        return out


def analyze(deal: DealInputs) -> DealResults:
    """LTV on price, purchase LTV = (loan − rehab) / price, LTC on price + rehab, ARV-LTV; P&I; PITIA;
    DSCR = rent / PITIA; NOI before vacancy and upkeep (the inputs do not give them); cap rate = NOI / price;
    cash to close = price + closing + rehab − loan (a refinance: payoff + closing + rehab − loan);
    cash-on-cash = (NOI − annual P&I) / cash to close."""
    if deal.interest_only:
        principal_interest = interest_only_payment(deal.loan_amount, deal.interest_rate)
    else:
        principal_interest = monthly_payment(deal.loan_amount, deal.interest_rate, deal.term_years)
    escrow = deal.property_taxes_annual / 12 + deal.insurance_annual / 12 + deal.hoa_monthly
    pitia = principal_interest + escrow
    cash_to_close: float | None = deal.purchase_price + deal.closing_costs + deal.rehab_budget - deal.loan_amount
    if deal.refinance:  # the value is not paid: the old loan is
        cash_to_close = None
        if deal.existing_loan_balance is not None:
            cash_to_close = deal.existing_loan_balance + deal.closing_costs + deal.rehab_budget - deal.loan_amount
    dscr = noi = cap_rate = cash_flow = cash_on_cash = None
    if deal.monthly_rent is not None:
        dscr = ratio(deal.monthly_rent, pitia)
        noi = 12 * (deal.monthly_rent - deal.hoa_monthly) - deal.property_taxes_annual - deal.insurance_annual
        cap_rate = ratio(noi, deal.purchase_price)
        cash_flow = noi - 12 * principal_interest
        cash_on_cash = cash_flow / cash_to_close if cash_to_close is not None and cash_to_close > 0 else None
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
