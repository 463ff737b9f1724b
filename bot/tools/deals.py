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
from bot.storage.models import DealAnalysis, Lead
from bot.tools._common import caller_lead, current_conversation, fill_from_analysis, in_transaction
from bot.tools.context import is_identified_user
from bot.tools.deal_terms import amounts_only, deal_at_rate, judging_rate, lender_deal
from bot.tools.finance import DealResults, Program
from bot.tools.scoring import credit_band_for
from bot.tools.underwriting import Borrower, dollars, infer_program, underwrite
from realtime.tools import Tool, ToolContext, ToolFailure

DESCRIPTION = (
    "Analyze a real-estate deal the caller describes. Call it as soon as you know at least the purchase "
    "price (or, for a refinance, the current value) and the loan amount; add rent, taxes, "
    "insurance, HOA, rehab or construction budget, after-repair value, closing costs, the purpose and the "
    "caller's credit score and completed deals when the caller gives them (omit unknown ones, never invent "
    "them). Returns the figures (ratios in percent, DSCR as a ratio) and a verdict against the lender's "
    "policy for the program (given, or inferred from the deal): `verdict.text` says what fits or blocks it "
    "in words you can read out, `verdict.questions` are what to ask next (one at a time). The figures are at "
    "the lender's own rate for this borrower (`rate_basis`); pass interest_rate only when the caller names a "
    "rate, and its figures come back apart in `at_your_rate`. Read out only the two or three figures that "
    "matter and the verdict; never promise approval."
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
    interest_rate: float | None = Field(
        None, ge=0, le=30, description="Only if the caller names a rate: annual percent, e.g. 7.25 (not 0.0725). "
        "Never guess one: the deal is judged at the lender's own rate.",
    )
    term_years: int | None = Field(
        None, ge=1, le=40, description="Amortization in years, only if the caller asks for one; omit for the "
        "program's.",
    )
    interest_only: bool | None = Field(
        None, description="Only if the caller asks for it; omit for the program's terms (flips, bridge and "
        "construction loans are interest-only).",
    )
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
        named_rate, rate_note = read_rate(args.interest_rate) if args.interest_rate is not None else (None, None)
        lead = await _lead_facts(database, context)
        purpose = args.loan_purpose or (lead.loan_purpose if lead.loan_purpose in LOAN_PURPOSES else "purchase")
        inputs = {**args.model_dump(mode="json"), "interest_rate": named_rate, "loan_purpose": purpose}
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
            program, program_source = (  # type: ignore[assignment]
                infer_program(policy, amounts_only(inputs), land), "inferred from the deal")
        if program not in policy.programs:
            names = ", ".join(p.name for p in policy.programs.values())
            raise ToolFailure("unknown_program", f"This lender does not offer that program; its programs are {names}.")
        try:  # each program judged at its own rate and payment terms for this borrower
            deal = lender_deal(policy, program, inputs, borrower)
            fits = [p for p in policy.programs
                    if p != program and underwrite(policy, p, lender_deal(policy, p, inputs, borrower), borrower).fits]
            yours = None if named_rate is None else deal_at_rate(policy.programs[program], inputs, named_rate)
        except (ValueError, ZeroDivisionError, OverflowError) as exc:
            raise ToolFailure("invalid_arguments", f"These figures cannot be analyzed: {exc}.") from None
        verdict = underwrite(policy, program, deal, borrower)
        rate = judging_rate(policy, program, borrower)
        rounded = {"rate_percent": rate.percent,
                   **present(deal.results, ground_up=program == "ground_up_construction")}

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
                    inputs=inputs,
                    results=rounded,
                    ltv=deal.results.ltv,
                    dscr=deal.results.dscr,
                    fits_program=verdict.fits,
                    verdict=verdict.text,
                ),
            )
            if lead_row is not None:
                fill_from_analysis(lead_row, analysis)
                keep_borrower_answers(lead_row, args)
                session.add(lead_row)
            return analysis.id, analysis.lead_id

        result: dict[str, Any] = {
            "program": program,
            "program_source": program_source,
            "results": rounded,
            "rate_basis": f"Figures at {rate.words}; a loan officer confirms the rate.",
            "verdict": verdict.as_dict(),
            "other_programs_that_fit": fits,
            "note": NOTE if rate_note is None else f"{rate_note} {NOTE}",
        }
        if yours is not None and named_rate is not None:
            result["at_your_rate"] = at_rate(named_rate, yours)
        try:
            analysis_id, lead_id = await in_transaction(database, store, what="store the analysis")
        except ToolFailure as failure:  # the figures are still right; say they were not kept
            result.update(saved=False, warning=failure.message)
        else:
            result.update(saved=True, analysis_id=analysis_id, lead_id=lead_id)
        return result

    return Tool("analyze_deal", DESCRIPTION, AnalyzeDealArguments, handler)


def keep_borrower_answers(lead: Lead, args: AnalyzeDealArguments) -> None:
    """A credit score or deal count the caller gave for this deal is their newest answer: the lead keeps it,
    so score_lead judges the borrower analyze_deal judged."""
    if args.credit_score is not None:
        lead.credit_score, lead.credit_band = args.credit_score, credit_band_for(args.credit_score)
    if args.experience_deals is not None:
        lead.experience_deals = args.experience_deals


def at_rate(rate: float, results: DealResults) -> dict[str, Any]:
    """The payment-side figures at the rate the caller named: said as "at your X%", never judged."""
    rounded = results.rounded()
    names = ("monthly_principal_interest", "monthly_pitia", "dscr", "annual_cash_flow", "cash_on_cash_percent")
    return {"interest_rate_percent": rate, **{name: rounded[name] for name in names}}


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
