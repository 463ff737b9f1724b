"""Deal math against cases worked by hand (standard amortization tables agree to the cent), and the
verdicts the lender policy gives on them."""

from __future__ import annotations

import pytest

from bot.policy import LeverageTier, load_policy
from bot.tools.finance import DealInputs, analyze, interest_only_payment, monthly_payment
from bot.tools.underwriting import Borrower, Deal, Verdict, infer_program, underwrite

POLICY = load_policy()
SEASONED = Borrower.of(760, 10)  # meets every credit and experience rule: only the deal is judged


def judge(deal: DealInputs, program: str, borrower: Borrower = SEASONED, policy=POLICY) -> Verdict:
    return underwrite(policy, program, Deal(deal, analyze(deal)), borrower)


@pytest.mark.parametrize(
    ("principal", "rate", "years", "payment"),
    [
        (300_000, 7.25, 30, 2046.53),  # r = 0.0725/12, n = 360: 300000·r/(1−(1+r)^−360)
        (200_000, 6.0, 30, 1199.10),
        (100_000, 5.0, 15, 790.79),
        (120_000, 0.0, 10, 1000.00),  # no interest: principal / months
    ],
)
def test_amortizing_payment(principal: float, rate: float, years: int, payment: float) -> None:
    assert monthly_payment(principal, rate, years) == pytest.approx(payment, abs=0.005)


def test_interest_only_payment() -> None:
    assert interest_only_payment(300_000, 7.25) == pytest.approx(1812.50)  # 300000 × 0.0725 / 12
    assert interest_only_payment(170_000, 10.0) == pytest.approx(1416.67, abs=0.005)


def test_zero_term_is_refused() -> None:
    with pytest.raises(ValueError):
        monthly_payment(100_000, 5, 0)


RENTAL = DealInputs(
    purchase_price=400_000,
    loan_amount=300_000,
    interest_rate=7.25,
    monthly_rent=3_200,
    property_taxes_annual=4_800,
    insurance_annual=1_200,
    closing_costs=8_000,
)


def test_rental_deal_by_hand() -> None:
    r = analyze(RENTAL)
    assert r.ltv == pytest.approx(0.75)  # 300000 / 400000, a decimal not a percent
    assert r.ltc == pytest.approx(0.75)  # no rehab
    assert r.arv_ltv is None
    assert r.monthly_principal_interest == pytest.approx(2046.53, abs=0.005)
    assert r.monthly_pitia == pytest.approx(2046.53 + 400 + 100, abs=0.005)  # + taxes/12 + insurance/12
    assert r.dscr == pytest.approx(3200 / 2546.53, abs=1e-4)  # 1.2566
    assert r.noi_annual == pytest.approx(38_400 - 4_800 - 1_200)  # 32,400
    assert r.cap_rate == pytest.approx(32_400 / 400_000)  # 0.081
    assert r.cash_to_close == pytest.approx(400_000 + 8_000 - 300_000)  # 108,000
    assert r.annual_cash_flow == pytest.approx(32_400 - 12 * 2046.53, abs=0.1)  # 7,841.6
    assert r.cash_on_cash == pytest.approx(7_841.65 / 108_000, abs=1e-4)  # 0.0726


def test_interest_only_deal_with_hoa() -> None:
    deal = DealInputs(
        purchase_price=250_000,
        loan_amount=200_000,
        interest_rate=6.0,
        interest_only=True,
        monthly_rent=2_000,
        property_taxes_annual=3_000,
        insurance_annual=900,
        hoa_monthly=150,
    )
    r = analyze(deal)
    assert r.monthly_principal_interest == pytest.approx(1000.00)  # 200000 × 0.06 / 12
    assert r.monthly_pitia == pytest.approx(1000 + 250 + 75 + 150)  # 1,475
    assert r.dscr == pytest.approx(2000 / 1475)
    assert r.noi_annual == pytest.approx(24_000 - 1_800 - 3_000 - 900)  # 18,300
    assert r.annual_cash_flow == pytest.approx(18_300 - 12_000)
    assert r.cash_on_cash == pytest.approx(6_300 / 50_000)


def test_flip_deal_by_hand() -> None:
    deal = DealInputs(
        purchase_price=200_000,
        loan_amount=170_000,
        interest_rate=10.0,
        term_years=1,
        interest_only=True,
        rehab_budget=50_000,
        after_repair_value=300_000,
        closing_costs=5_000,
    )
    r = analyze(deal)
    assert r.ltv == pytest.approx(0.85)
    assert r.ltc == pytest.approx(170_000 / 250_000)  # 0.68
    assert r.arv_ltv == pytest.approx(170_000 / 300_000)  # 0.5667
    assert r.monthly_principal_interest == pytest.approx(1416.67, abs=0.005)
    assert r.cash_to_close == pytest.approx(200_000 + 5_000 + 50_000 - 170_000)  # 85,000
    assert r.dscr is None and r.noi_annual is None and r.cash_on_cash is None
    assert infer_program(POLICY, Deal(deal, r)) == "fix_and_flip"
    verdict = judge(deal, "fix_and_flip")
    assert verdict.fits is True and "Fits the fix-and-flip guidelines" in verdict.text


def test_a_flip_is_judged_on_the_purchase_share_of_the_loan() -> None:
    # 90 % of the price + 100 % of the rehab: 175,000 of 200,000 plus 50,000, LTC 0.90, ARV-LTV 0.64
    deal = DealInputs(
        purchase_price=200_000,
        loan_amount=225_000,
        interest_rate=10.5,
        interest_only=True,
        rehab_budget=50_000,
        after_repair_value=350_000,
    )
    r = analyze(deal)
    assert r.ltv == pytest.approx(1.125) and r.purchase_ltv == pytest.approx(0.875)
    verdict = judge(deal, "fix_and_flip")
    assert verdict.fits is True
    assert "the loan is 87.5% of the purchase price (the rehab is funded on top), within the 90% maximum" in (
        verdict.text)
    assert judge(deal, "bridge").fits is False  # no rehab funding there
    over_deal = DealInputs(**{**deal.__dict__, "loan_amount": 235_000, "purchase_price": 205_000})
    assert analyze(over_deal).purchase_ltv == pytest.approx(185_000 / 205_000)  # 0.9024: above 90 % of the price
    assert judge(over_deal, "fix_and_flip").fits is False
    # A first flip is held to 85 % of the price: the same deal does not fit without the track record.
    first_flip = judge(deal, "fix_and_flip", Borrower.of(760, 0))
    assert first_flip.fits is False and "above the 85% maximum" in first_flip.text
    assert "3 completed deals" in first_flip.text


def test_rounded_results_are_cents_four_place_dscr_and_percentages() -> None:
    rounded = analyze(RENTAL).rounded()
    assert rounded["monthly_principal_interest"] == 2046.53
    assert rounded["dscr"] == 1.2566
    assert rounded["ltv_percent"] == 75.0


def test_verdicts() -> None:
    fits = judge(RENTAL, "dscr_rental")
    assert fits.fits is True
    assert fits.text == (
        "Fits the DSCR rental guidelines: a DSCR of 1.26 meets the 1.00 minimum; "
        "the loan is 75% of the price, within the 80% maximum."
    )
    strict_rules = POLICY.programs["portfolio"].model_copy(
        update={"min_dscr": 1.30, "leverage": (LeverageTier(max_ltv=0.70),), "min_properties": 1})
    strict = POLICY.model_copy(update={"programs": {**POLICY.programs, "portfolio": strict_rules}})
    verdict = judge(RENTAL, "portfolio", policy=strict)
    assert verdict.fits is False
    assert "a DSCR of 1.26 is below the 1.30 minimum" in verdict.text
    assert "the loan is 75% of the price, above the 70% maximum" in verdict.text
    unknown = judge(DealInputs(purchase_price=400_000, loan_amount=300_000, interest_rate=7), "dscr_rental")
    assert unknown.fits is None and "monthly rent" in unknown.questions[0]
    assert unknown.as_dict()["checks"][0] == {
        "metric": "dscr",
        "value": None,
        "limit": 1.0,
        "kind": "min",
        "passed": None,
    }


@pytest.mark.parametrize(
    ("rent_cover", "text"),
    [
        (0.9951, "a DSCR of 0.9951 is below the 1.00 minimum"),  # not "1.00 is below the 1.00 minimum"
        (0.996, "a DSCR of 0.9960 is below the 1.00 minimum"),
        (0.99, "a DSCR of 0.99 is below the 1.00 minimum"),  # two places when they tell the truth
        (1.0, "a DSCR of 1.00 meets the 1.00 minimum"),
    ],
)
def test_a_verdict_never_reads_as_failing_at_the_limit(rent_cover: float, text: str) -> None:
    pitia = monthly_payment(300_000, 7, 30)
    rental = DealInputs(purchase_price=400_000, loan_amount=300_000, interest_rate=7, monthly_rent=rent_cover * pitia)
    assert text in judge(rental, "dscr_rental").text
    over = DealInputs(purchase_price=400_000, loan_amount=300_040, interest_rate=7)  # LTV 75.01 %
    assert "the loan is 75.01% of the price, above the 75% maximum" in judge(over, "bridge").text


def test_a_ratio_exactly_at_the_limit_passes() -> None:
    at_limit = DealInputs(purchase_price=400_000, loan_amount=300_000, interest_rate=7)
    assert judge(at_limit, "bridge").fits is True


def test_inferred_program() -> None:
    def infer(deal: DealInputs, properties: int = 1, land: bool = False) -> str:
        return infer_program(POLICY, Deal(deal, analyze(deal), properties=properties), land)

    assert infer(RENTAL) == "dscr_rental"
    assert infer(RENTAL, properties=6) == "portfolio"
    assert infer(DealInputs(purchase_price=300_000, loan_amount=200_000, interest_rate=9)) == "bridge"
    lot = DealInputs(purchase_price=150_000, loan_amount=480_000, interest_rate=11, rehab_budget=450_000)
    assert infer(lot) == "ground_up_construction"
    small_lot = DealInputs(purchase_price=150_000, loan_amount=200_000, interest_rate=11, rehab_budget=100_000)
    assert infer(small_lot) == "fix_and_flip" and infer(small_lot, land=True) == "ground_up_construction"
