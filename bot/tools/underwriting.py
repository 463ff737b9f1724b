"""A deal and a borrower judged against the lender policy, pure: which rules block or limit it, said in words.

Every rule that blocks or limits a deal is named with the deal's figure and the limit as a caller would hear
them ("the loan is 80% of the price; with a DSCR of 1.04 the most is 75%"): percentages, dollars, no field
names. What cannot be checked yet becomes a question for Cap to ask, never a silent pass or a silent fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.policy import FEATURE_WORDS, LenderPolicy, LeverageTier, Overlay, Program
from bot.tools.finance import DealInputs, DealResults

Status = Literal["ok", "blocks", "unknown"]
CREDIT_CEILING = 850
CREDIT_FLOOR = 300


def percent(ratio: float, places: int = 1) -> str:
    """0.8 -> "80%", 0.775 -> "77.5%": what a voice says."""
    text = f"{ratio * 100:.{places}f}".rstrip("0").rstrip(".")
    return f"{text}%"


def dollars(amount: float) -> str:
    return f"${amount:,.0f}"


def plural(count: float, word: str) -> str:
    """'1 point', '2.5 points', '1 completed deal'."""
    return f"{count:g} {word}" if count == 1 else f"{count:g} {word}s"


def credit_range(credit: str | int | None) -> tuple[int, int] | None:
    """The lowest and highest score a stored credit answer allows: an exact score ("645") or a band
    ("640-679", "760+", "below_600"); None when unknown."""
    if credit is None:
        return None
    text = str(credit).strip()
    if text.isdigit():
        return int(text), int(text)
    if match := re.fullmatch(r"(\d{3})-(\d{3})", text):
        return int(match[1]), int(match[2])
    if match := re.fullmatch(r"(\d{3})\+", text):
        return int(match[1]), CREDIT_CEILING
    if match := re.fullmatch(r"below_(\d{3})", text):
        return CREDIT_FLOOR, int(match[1]) - 1
    return None


@dataclass(frozen=True)
class Borrower:
    credit: tuple[int, int] | None = None  # credit_range()
    deals: int | None = None  # completed investment deals
    state: str | None = None  # two-letter code of the property's state

    @classmethod
    def of(cls, credit: str | int | None, deals: int | None, state: str | None = None) -> Borrower:
        return cls(credit_range(credit), deals, state.strip().upper() if state else None)

    def credit_at_least(self, minimum: int) -> bool | None:
        if self.credit is None:
            return None
        low, high = self.credit
        return True if low >= minimum else False if high < minimum else None

    def credit_words(self) -> str:
        assert self.credit is not None
        low, high = self.credit
        if low == high:
            return f"a credit score of {low}"
        if high == CREDIT_CEILING:
            return f"a credit score of {low} or more"
        return f"a credit score between {low} and {high}"


@dataclass(frozen=True)
class Finding:
    """One rule checked: `blocks` fails the deal, `unknown` needs an answer, `ok` is said as support."""

    rule: str
    status: Status
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "status": self.status, "text": self.text}


@dataclass(frozen=True)
class Check:
    """A ratio against its limit (kept for the stored record and the staff views)."""

    metric: str  # "dscr", "ltv", "purchase_ltv", "ltc", "arv_ltv"
    value: float | None
    limit: float
    kind: Literal["min", "max"]

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        value = round(self.value, 4)  # at the precision reported: 0.8000000001 meets a 0.80 maximum
        return value >= self.limit if self.kind == "min" else value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        """As the results show them: DSCR as a ratio, the others in percent (`ltv_percent` 80.0)."""
        if self.metric == "dscr":
            value = None if self.value is None else round(self.value, 4)
            return {"metric": "dscr", "value": value, "limit": self.limit, "kind": self.kind, "passed": self.passed}
        value = None if self.value is None else round(self.value * 100, 2)
        return {"metric": f"{self.metric}_percent", "value": value, "limit": round(self.limit * 100, 2),
                "kind": self.kind, "passed": self.passed}


@dataclass(frozen=True)
class Limits:
    """The leverage a deal may use: one row of the policy's grid, cash-out limit applied."""

    max_ltv: float
    max_ltc: float | None
    max_arv_ltv: float | None


@dataclass(frozen=True)
class Verdict:
    program: str
    fits: bool | None  # None: nothing fails but something is still unknown
    text: str
    findings: tuple[Finding, ...] = ()
    checks: tuple[Check, ...] = ()
    questions: tuple[str, ...] = ()
    limits: Limits | None = None  # the leverage this borrower and deal qualify for

    @property
    def blockers(self) -> list[str]:
        return [f.text for f in self.findings if f.status == "blocks"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "fits": self.fits,
            "text": self.text,
            "blocked_by": self.blockers,
            "questions": list(self.questions),
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class Deal:
    """What underwriting needs besides the math: the purpose and how many properties."""

    inputs: DealInputs
    results: DealResults
    cash_out: bool = False
    refinance: bool = False
    properties: int = 1
    features: frozenset[str] = frozenset()  # policy.Feature values: "short_term_rental" ...
    months_owned: int | None = None  # a refinance: how long the borrower has owned the property

    def overlays(self, program: Program) -> list[Overlay]:
        """The program's extra rules for this deal's features."""
        return [overlay for overlay in program.overlays if overlay.feature in self.features]


# --- the leverage grid ----------------------------------------------------------------------------------


def _conditions(tier: LeverageTier, deal: Deal, borrower: Borrower) -> tuple[list[str], list[str]]:
    """(unmet, unknown) conditions of one grid row, in words: "a DSCR of 1.25", "a 700 credit score"."""
    unmet, unknown = [], []
    if tier.min_dscr is not None:
        dscr = deal.results.dscr
        target = unknown if dscr is None else unmet if round(dscr, 4) < tier.min_dscr else None
        if target is not None:
            target.append(f"a DSCR of {tier.min_dscr:.2f} or more")
    if tier.min_credit is not None:
        met = borrower.credit_at_least(tier.min_credit)
        if met is not True:
            (unknown if met is None else unmet).append(f"a {tier.min_credit} credit score")
    if tier.min_deals:
        if borrower.deals is None:
            unknown.append(plural(tier.min_deals, "completed deal"))
        elif borrower.deals < tier.min_deals:
            unmet.append(plural(tier.min_deals, "completed deal"))
    return unmet, unknown


def _tier_limits(tier: LeverageTier, program: Program, deal: Deal) -> Limits:
    max_ltv = tier.max_ltv
    if deal.cash_out and program.cash_out_max_ltv is not None:
        max_ltv = min(max_ltv, program.cash_out_max_ltv)
    for overlay in deal.overlays(program):
        if overlay.max_ltv is not None:
            max_ltv = min(max_ltv, overlay.max_ltv)
    return Limits(max_ltv, tier.max_ltc, tier.max_arv_ltv)


def _checks(limits: Limits, program: Program, results: DealResults) -> list[Check]:
    # A rehab program funds the rehab on top of a share of the price: its LTV limit is on the loan less
    # the rehab budget (the purchase LTV), not on the whole loan.
    checks = [Check("purchase_ltv" if program.is_rehab else "ltv",
                    results.purchase_ltv if program.is_rehab else results.ltv, limits.max_ltv, "max")]
    if limits.max_ltc is not None:
        checks.append(Check("ltc", results.ltc, limits.max_ltc, "max"))
    if limits.max_arv_ltv is not None:
        checks.append(Check("arv_ltv", results.arv_ltv, limits.max_arv_ltv, "max"))
    return checks


_OF_WHAT = {
    "ltv": "of the price",
    "purchase_ltv": "of the purchase price (the rehab is funded on top)",
    "ltc": "of the total cost, price plus rehab",
    "arv_ltv": "of the after-repair value",
}


def _ratio_words(check: Check, refinance: bool) -> str:
    """E.g. "the loan is 80% of the price, above the 75% maximum"."""
    assert check.value is not None
    shown = percent(check.value)
    if check.passed is False and round(check.value * 100, 1) <= check.limit * 100:
        shown = percent(check.value, 2)  # "75%" above a 75% maximum would confuse: say 75.01%
    of_what = _OF_WHAT[check.metric]
    if refinance and check.metric == "ltv":
        of_what = "of the value"
    relation = "within" if check.passed else "above"
    return f"the loan is {shown} {of_what}, {relation} the {percent(check.limit)} maximum"


def _leverage(program: Program, deal: Deal, borrower: Borrower) -> tuple[list[Finding], list[Check], list[str],
                                                                          Limits | None]:
    """The most generous grid row this deal can use, and what stands in the way of a better one."""
    rows = []
    for tier in program.leverage:
        unmet, unknown = _conditions(tier, deal, borrower)
        limits = _tier_limits(tier, program, deal)
        checks = _checks(limits, program, deal.results)
        rows.append((tier, unmet, unknown, limits, checks))
    usable = [row for row in rows if not row[1]]  # conditions met or not known yet
    qualified = [row for row in usable if not row[2]]  # conditions met
    limits = qualified[0][3] if qualified else None  # the most the borrower qualifies for
    for with_unknowns in (False, True):
        for _tier, _unmet, unknown, _row_limits, checks in usable:
            if bool(unknown) != with_unknowns or any(c.passed is False for c in checks):
                continue
            findings = [Finding(c.metric, "ok", _ratio_words(c, deal.refinance)) for c in checks if c.passed]
            questions = []
            if unknown:  # this row would do, if the borrower turns out to meet it
                needs = " and ".join(unknown)
                questions.append(f"Ask about the borrower's {_topics(unknown)}: this much leverage needs {needs}.")
                findings.append(Finding("leverage", "unknown", f"this much leverage needs {needs}"))
            return findings, checks, questions, limits
    # Nothing usable fits: judge by the best row the borrower can use, and say what a better one needs.
    _tier, _unmet, unknown, _row_limits, checks = usable[0] if usable else rows[-1]
    findings = [
        Finding(c.metric, "blocks" if c.passed is False else "ok", _ratio_words(c, deal.refinance))
        for c in checks if c.passed is not None
    ]
    for _tier, unmet, _unknown, _limits_of_row, tier_checks in rows:
        if unmet and all(c.passed is not False for c in tier_checks):
            findings.append(Finding("leverage", "blocks", f"that much leverage needs {' and '.join(unmet)}"))
            break
    return findings, checks, [], limits


def _topics(conditions: list[str]) -> str:
    topics = []
    for condition in conditions:
        topic = ("rent (DSCR)" if "DSCR" in condition else "credit score" if "credit" in condition
                 else "completed deals")
        topics.append(topic)
    return " and ".join(dict.fromkeys(topics))


# --- the whole verdict ----------------------------------------------------------------------------------


def underwrite(policy: LenderPolicy, program_id: str, deal: Deal, borrower: Borrower) -> Verdict:
    """Every rule of one program applied to a deal and a borrower."""
    program = policy.programs[program_id]
    overlays = deal.overlays(program)
    # The strictest rule of the program and its overlays, said as "DSCR rental loans for short-term rentals".
    said = " and ".join(FEATURE_WORDS[o.feature] for o in overlays if o.allowed)
    name = f"{program.name} ({said})" if said else program.name
    loans = f"{program.name} loans for {said}" if said else f"{program.name} loans"
    findings: list[Finding] = []
    questions: list[str] = []
    min_credit = max([program.min_credit, *(o.min_credit for o in overlays if o.min_credit is not None)])
    dscr_floors = [program.min_dscr, *(o.min_dscr for o in overlays)]
    min_dscr = max((floor for floor in dscr_floors if floor is not None), default=None)

    for overlay in overlays:
        if not overlay.allowed:
            findings.append(Finding("feature", "blocks",
                                    f"{program.name} loans are not available for {FEATURE_WORDS[overlay.feature]}"))

    credit_ok = borrower.credit_at_least(min_credit)
    if credit_ok is False:
        findings.append(Finding("credit_minimum", "blocks",
                                f"{borrower.credit_words()} is under the {min_credit} minimum for {loans}"))
    elif credit_ok is None:
        if borrower.credit is None:
            questions.append(f"Ask for the caller's credit score: {loans} need {min_credit} or more.")
        else:
            questions.append(f"Ask for the caller's exact credit score: {borrower.credit_words()} may be under "
                             f"the {min_credit} minimum for {loans}.")
        findings.append(Finding("credit_minimum", "unknown", f"{loans} need a {min_credit} credit score"))

    if program.min_deals:
        need = plural(program.min_deals, "completed investment deal")
        if borrower.deals is None:
            questions.append(f"Ask how many investment deals the caller has completed in the last "
                             f"{policy.experience_lookback_months} months: {loans} need {need}.")
            findings.append(Finding("experience", "unknown", f"{loans} need {need}"))
        elif borrower.deals < program.min_deals:
            findings.append(Finding("experience", "blocks",
                                    f"{loans} need {need} in the last {policy.experience_lookback_months} months"))

    if deal.properties < program.min_properties:
        findings.append(Finding("property_count", "blocks",
                                f"{loans} are for {program.min_properties} or more properties, "
                                f"and this deal has {deal.properties}"))

    if deal.cash_out and program.cash_out_max_ltv is None:
        findings.append(Finding("cash_out", "blocks", f"{loans} do not offer a cash-out refinance"))
    elif deal.cash_out and program.cash_out_seasoning_months:
        months = program.cash_out_seasoning_months
        if deal.months_owned is None:
            questions.append(f"Ask how long the caller has owned the property: a cash-out refinance uses today's "
                             f"value after {months} months, before that the purchase price plus documented "
                             "renovation cost.")
            findings.append(Finding("seasoning", "unknown", f"the value used depends on {months} months of ownership"))
        elif deal.months_owned < months:
            questions.append(f"Ask what the caller paid for the property and spent on documented renovation: with "
                             f"under {months} months of ownership that total, not today's value, is what the loan "
                             "is measured against; analyze again with it as the value.")
            findings.append(Finding("seasoning", "unknown",
                                    f"with under {months} months of ownership the value is the price plus renovation"))

    loan, price = deal.inputs.loan_amount, deal.inputs.purchase_price
    if loan < program.min_loan:
        findings.append(Finding("min_loan", "blocks",
                                f"a {dollars(loan)} loan is under the {dollars(program.min_loan)} minimum for "
                                f"{loans}"))
    if loan > program.max_loan:
        findings.append(Finding("max_loan", "blocks",
                                f"a {dollars(loan)} loan is over the {dollars(program.max_loan)} maximum for "
                                f"{loans}"))
    if price < policy.min_property_value and program_id != "ground_up_construction":  # a lot may be cheap
        findings.append(Finding("min_property_value", "blocks",
                                f"a property worth {dollars(price)} is under the {dollars(policy.min_property_value)} "
                                "minimum we finance"))
    if borrower.state is not None and borrower.state not in policy.states:
        findings.append(Finding("state", "blocks", f"we do not lend in {borrower.state}"))

    checks: list[Check] = []
    if min_dscr is not None:
        dscr_check = Check("dscr", deal.results.dscr, min_dscr, "min")
        checks.append(dscr_check)
        if dscr_check.passed is None:
            questions.append(f"Ask for the monthly rent (and taxes and insurance): {loans} need a DSCR of "
                             f"{min_dscr:.2f} or more.")
            findings.append(Finding("dscr", "unknown", f"{loans} need a DSCR of {min_dscr:.2f}"))
        else:
            findings.append(Finding("dscr", "ok" if dscr_check.passed else "blocks", _dscr_words(dscr_check)))

    leverage_findings, leverage_checks, leverage_questions, limits = _leverage(program, deal, borrower)
    findings.extend(leverage_findings)
    checks.extend(leverage_checks)
    questions.extend(leverage_questions)
    for check in leverage_checks:
        if check.passed is None:
            questions.append("Ask for the after-repair value: the loan may be at most "
                             f"{percent(check.limit)} of it.")
            findings.append(Finding(check.metric, "unknown", "the after-repair value is needed"))

    blocks = [f.text for f in findings if f.status == "blocks"]
    support = [f.text for f in findings if f.status == "ok"]
    if blocks:
        return Verdict(program_id, False, f"Does not fit the {name} guidelines: {'; '.join(blocks)}.",
                       tuple(findings), tuple(checks), tuple(questions), limits)
    if questions:
        so_far = f" So far: {'; '.join(support)}." if support else ""
        return Verdict(program_id, None, f"Cannot fully judge against the {name} guidelines yet.{so_far}",
                       tuple(findings), tuple(checks), tuple(questions), limits)
    return Verdict(program_id, True, f"Fits the {name} guidelines: {'; '.join(support)}.",
                   tuple(findings), tuple(checks), (), limits)


def _dscr_words(check: Check) -> str:
    """E.g. "a DSCR of 0.92 is below the 1.00 minimum": two places unless that hides a failure."""
    assert check.value is not None
    shown = f"{check.value:.2f}"
    if check.passed is False and round(check.value, 2) >= check.limit:
        shown = f"{check.value:.4f}"
    relation = "meets" if check.passed else "is below"
    return f"a DSCR of {shown} {relation} the {check.limit:.2f} minimum"


# --- the program a deal means, and its price --------------------------------------------------------------


def infer_program(policy: LenderPolicy, deal: Deal, land: bool = False) -> str:
    """The program a deal most likely means when the caller did not say: land plus a build is ground-up,
    a rehab or an ARV is a flip, five or more properties a portfolio, rent a DSCR rental, else bridge."""
    inputs = deal.inputs
    building = inputs.rehab_budget > 0 and (land or inputs.rehab_budget > inputs.purchase_price)
    portfolio = policy.programs.get("portfolio")
    candidates = [
        ("ground_up_construction", building),
        ("fix_and_flip", inputs.rehab_budget > 0 or inputs.after_repair_value is not None),
        ("portfolio", portfolio is not None and deal.properties >= portfolio.min_properties),
        ("dscr_rental", inputs.monthly_rent is not None),
        ("bridge", True),
    ]
    for program_id, applies in candidates:
        if applies and program_id in policy.programs:
            return program_id
    return next(iter(policy.programs))


@dataclass(frozen=True)
class Pricing:
    tier: Literal["A", "B"]
    questions: tuple[str, ...] = field(default=())


def pricing_tier(policy: LenderPolicy, borrower: Borrower) -> Pricing:
    """Tier A when the borrower's risk meets every tier-A rule; an unknown answer prices at B and becomes a
    question (it could lower the rate). Engagement (timeline, how much was asked) never moves the price."""
    rule = policy.pricing_tier_a
    credit = borrower.credit_at_least(rule.min_credit)
    deals = None if borrower.deals is None else borrower.deals >= rule.min_deals
    questions = []
    if credit is None:
        questions.append(f"Ask for the exact credit score: {rule.min_credit} or more gets the lower rate range.")
    if deals is None:
        questions.append(f"Ask how many deals the caller has completed: {rule.min_deals} or more gets the lower "
                         "rate range.")
    return Pricing("A" if credit and deals else "B", tuple(questions))


def liquidity_needed(program: Program, deal: Deal) -> float:
    """Cash to close (none on a refinance that pays out) plus the program's reserves."""
    inputs, results = deal.inputs, deal.results
    cash_to_close = max(results.cash_to_close or 0.0, 0.0)
    return (cash_to_close + program.reserve_months * results.monthly_pitia
            + program.reserve_rehab_share * inputs.rehab_budget
            + program.reserve_cost_share * (inputs.purchase_price + inputs.rehab_budget))


def liquidity_check(program: Program, deal: Deal, liquidity: float | None) -> Finding:
    """The borrower's liquid funds against what the deal needs; unknown is a question, not a zero."""
    needed = liquidity_needed(program, deal)
    if liquidity is None:
        return Finding("liquidity", "unknown",
                       f"Ask how much cash the caller has available: this deal needs about {dollars(needed)} for "
                       "cash to close and reserves.")
    if liquidity + 0.5 < needed:
        return Finding("liquidity", "blocks",
                       f"liquid funds of {dollars(liquidity)} are short of the about {dollars(needed)} needed for "
                       "cash to close and reserves")
    return Finding("liquidity", "ok", f"liquid funds of {dollars(liquidity)} cover cash to close and reserves")
