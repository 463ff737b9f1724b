"""The analyze_deal tool: the deal math from finance.py, judged against the lender policy, stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from bot.policy import Feature
from bot.settings import Settings
from bot.storage.database import Database
from bot.storage.deals import add_analysis
from bot.storage.models import DealAnalysis
from bot.tools._common import caller_lead, current_conversation, fill_from_analysis, in_transaction
from bot.tools.context import is_identified_user
from bot.tools.finance import DealInputs, DealResults, Program, analyze
from bot.tools.underwriting import Borrower, Deal, dollars, infer_program, underwrite
from realtime.tools import Tool, ToolContext, ToolFailure

DESCRIPTION = (
    "Analyze a real-estate deal the caller describes. Call it as soon as you know at least the purchase "
    "price (or, for a refinance, the current value), the loan amount and the interest rate; add rent, taxes, "
    "insurance, HOA, rehab or construction budget, after-repair value, closing costs, the purpose and the "
    "caller's credit score and completed deals when the caller gives them (omit unknown ones, never invent "
    "them). Returns the figures (ratios in percent, DSCR as a ratio) and a verdict against the lender's "
    "policy for the program (given, or inferred from the deal): `verdict.text` says what fits or blocks it "
    "in words you can read out, `verdict.questions` are what to ask next (one at a time). Read out only the "
    "two or three figures that matter and the verdict; never promise approval."
)
NOTE = (
    "NOI is rent less taxes, insurance and HOA, before vacancy, management and repairs. "
    "Cash to close = price + closing costs + rehab - loan; for a refinance, payoff + closing costs + rehab "
    "- loan (negative: cash out to the borrower)."
)
# Below these a figure is a slip of the tongue or of the transcription, not a deal (a $1 price, a $300 loan).
MIN_PLAUSIBLE_PRICE = 10_000
MIN_PLAUSIBLE_LOAN = 5_000
# A loan this many times the whole cost (price plus rehab) is a unit slip, not leverage.
MAX_PLAUSIBLE_LOAN_TO_COST = 1.5
LoanPurpose = Literal["purchase", "refinance", "cash_out_refinance"]
LOAN_PURPOSES: tuple[str, ...] = get_args(LoanPurpose)


class AnalyzeDealArguments(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e400 is valid JSON, and infinite

    purchase_price: float = Field(gt=0, description="Purchase price in USD (for a refinance: current value).")
    loan_amount: float = Field(gt=0, description="Loan amount requested, USD.")
    interest_rate: float = Field(
        ge=0, le=30, description="Annual interest rate in percent, e.g. 7.25 (not 0.0725)."
    )
    term_years: int = Field(30, ge=1, le=40, description="Amortization term in years.")
    interest_only: bool = Field(False, description="True for interest-only payments.")
    monthly_rent: float | None = Field(None, ge=0, description="Expected gross monthly rent, USD.")
    property_taxes_annual: float | None = Field(None, ge=0, description="Property taxes per year, USD.")
    insurance_annual: float | None = Field(None, ge=0, description="Hazard insurance per year, USD.")
    hoa_monthly: float | None = Field(None, ge=0, description="HOA dues per month, USD.")
    rehab_budget: float | None = Field(None, ge=0, description="Renovation or construction budget, USD.")
    after_repair_value: float | None = Field(None, gt=0, description="Value after the rehab (ARV), USD.")
    closing_costs: float | None = Field(None, ge=0, description="Closing costs paid by the borrower, USD.")
    loan_purpose: LoanPurpose | None = Field(
        None, description="purchase, refinance or cash_out_refinance; omit to use the caller's lead (else purchase)."
    )
    existing_loan_balance: float | None = Field(
        None, ge=0, description="For a refinance: what is owed on the property now, USD."
    )
    months_owned: int | None = Field(
        None, ge=0, le=1200, description="For a refinance: how many months the caller has owned the property."
    )
    land_and_construction: bool = Field(
        False, description="True when the price is for land or a lot and the budget is to build."
    )
    property_count: int = Field(1, ge=1, le=1000, description="How many properties the loan covers.")
    features: list[Feature] = Field(
        default_factory=list, max_length=3,
        description="What the caller said applies: a short-term rental (Airbnb, VRBO), a foreign national "
        "borrower, a non-warrantable condo.",
    )
    property_state: str | None = Field(
        None, min_length=2, max_length=2, description="The property's state, two letters, e.g. TX."
    )
    credit_score: int | None = Field(
        None, ge=300, le=850, description="The caller's credit score; omit to use the one saved on the lead."
    )
    experience_deals: int | None = Field(
        None, ge=0, le=10000, description="Investment deals the caller has completed; omit to use the lead's."
    )
    program: Program | None = Field(
        None, description="Loan program to judge against; omit to use the one the caller chose (save_lead), "
        "else the tool infers one from the deal."
    )

    def deal(self, interest_rate: float, purpose: str) -> DealInputs:
        return DealInputs(
            purchase_price=self.purchase_price,
            loan_amount=self.loan_amount,
            interest_rate=interest_rate,
            term_years=self.term_years,
            interest_only=self.interest_only,
            monthly_rent=self.monthly_rent,
            property_taxes_annual=self.property_taxes_annual or 0.0,
            insurance_annual=self.insurance_annual or 0.0,
            hoa_monthly=self.hoa_monthly or 0.0,
            rehab_budget=self.rehab_budget or 0.0,
            after_repair_value=self.after_repair_value,
            closing_costs=self.closing_costs or 0.0,
            refinance=purpose != "purchase",
            existing_loan_balance=self.existing_loan_balance,
        )


def read_rate(rate: float) -> tuple[float, str | None]:
    """A rate under 1 is a fraction said as a decimal (0.075 meant 7.5 %): read it so, and say so."""
    if 0 < rate < 1:
        return rate * 100, (f"The interest rate {rate:g} was read as {rate * 100:g}%; confirm it with the caller.")
    return rate, None


def implausible(args: AnalyzeDealArguments) -> str | None:
    """Why these figures cannot be a real deal (a unit slip), in words to check with the caller; else None."""
    if args.purchase_price < MIN_PLAUSIBLE_PRICE:
        return (f"A price or value of {dollars(args.purchase_price)} is not plausible for an investment property; "
                "ask the caller to repeat it.")
    if args.loan_amount < MIN_PLAUSIBLE_LOAN:
        return f"A loan of {dollars(args.loan_amount)} is not plausible; ask the caller to repeat the amount."
    cost = args.purchase_price + (args.rehab_budget or 0.0)
    if args.loan_amount > MAX_PLAUSIBLE_LOAN_TO_COST * cost:
        return (f"A {dollars(args.loan_amount)} loan on {dollars(cost)} of price and rehab cannot be right; "
                "check both figures with the caller.")
    return None


def analyze_deal_tool(settings: Settings, database: Database) -> Tool:
    policy = settings.policy

    async def handler(args: AnalyzeDealArguments, context: ToolContext) -> dict[str, Any]:
        if (problem := implausible(args)) is not None:
            raise ToolFailure("implausible_figures", problem)
        rate, rate_note = read_rate(args.interest_rate)
        lead = await _lead_facts(database, context)
        purpose = args.loan_purpose or (lead.loan_purpose if lead.loan_purpose in LOAN_PURPOSES else "purchase")
        try:
            deal_inputs = args.deal(rate, purpose)
            results = analyze(deal_inputs)
        except (ValueError, ZeroDivisionError, OverflowError) as exc:
            raise ToolFailure("invalid_arguments", f"These figures cannot be analyzed: {exc}.") from None
        deal = Deal(deal_inputs, results, cash_out=purpose == "cash_out_refinance", refinance=purpose != "purchase",
                    properties=args.property_count, features=frozenset(args.features),
                    months_owned=args.months_owned)
        borrower = Borrower.of(
            args.credit_score if args.credit_score is not None else lead.credit,
            args.experience_deals if args.experience_deals is not None else lead.deals,
            args.property_state,
        )
        program, program_source = args.program, "asked"
        if program is None and lead.program in policy.programs:
            program, program_source = lead.program, "the caller's lead"  # type: ignore[assignment]
        if program is None:
            land = args.land_and_construction or lead.property_type == "land"
            program, program_source = infer_program(policy, deal, land), "inferred from the deal"  # type: ignore[assignment]
        if program not in policy.programs:
            names = ", ".join(p.name for p in policy.programs.values())
            raise ToolFailure("unknown_program", f"This lender does not offer that program; its programs are {names}.")
        verdict = underwrite(policy, program, deal, borrower)
        fits = [p for p in policy.programs if p != program and underwrite(policy, p, deal, borrower).fits]
        rounded = present(results, ground_up=program == "ground_up_construction")

        def store(session: Session) -> tuple[int | None, int | None]:
            lead_row = caller_lead(session, context)
            conversation = current_conversation(session, context)
            analysis = add_analysis(
                session,
                DealAnalysis(
                    guild_id=context.guild_id,
                    lead_id=lead_row.id if lead_row else None,
                    conversation_id=conversation.id if conversation else None,
                    discord_user_id=context.user_id if is_identified_user(context.user_id) else None,
                    program=program,
                    inputs={**args.model_dump(mode="json"), "interest_rate": rate, "loan_purpose": purpose},
                    results=rounded,
                    ltv=results.ltv,
                    dscr=results.dscr,
                    fits_program=verdict.fits,
                    verdict=verdict.text,
                ),
            )
            if lead_row is not None:
                fill_from_analysis(lead_row, analysis)
                session.add(lead_row)
            return analysis.id, analysis.lead_id

        result: dict[str, Any] = {
            "program": program,
            "program_source": program_source,
            "results": rounded,
            "verdict": verdict.as_dict(),
            "other_programs_that_fit": fits,
            "note": NOTE if rate_note is None else f"{rate_note} {NOTE}",
        }
        try:
            analysis_id, lead_id = await in_transaction(database, store, what="store the analysis")
        except ToolFailure as failure:  # the figures are still right; say they were not kept
            result.update(saved=False, warning=failure.message)
        else:
            result.update(saved=True, analysis_id=analysis_id, lead_id=lead_id)
        return result

    return Tool("analyze_deal", DESCRIPTION, AnalyzeDealArguments, handler)


def present(results: DealResults, ground_up: bool) -> dict[str, Any]:
    """The rounded figures; for a build the loan over the land price is no one's LTV, so it is left out."""
    rounded = results.rounded()
    if ground_up:
        rounded["ltv_percent"] = None
    return rounded


@dataclass(frozen=True)
class LeadFacts:
    """What the caller's saved lead already says about the deal and the borrower."""

    program: str | None = None
    loan_purpose: str | None = None
    property_type: str | None = None
    credit: str | None = None
    deals: int | None = None


async def _lead_facts(database: Database, context: ToolContext) -> LeadFacts:
    """The caller's answers so far (save_lead), so an analysis is judged against what they told Cap."""

    def read(session: Session) -> LeadFacts:
        lead = caller_lead(session, context)
        if lead is None:
            return LeadFacts()
        return LeadFacts(lead.loan_program, lead.loan_purpose, lead.property_type, lead.credit,
                         lead.experience_deals)

    try:
        return await in_transaction(database, read, what="read the caller's lead")
    except ToolFailure:  # the store is down: judge by the figures alone (saving will say so)
        return LeadFacts()
