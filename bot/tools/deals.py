"""The analyze_deal tool: the deal math from finance.py, judged against the program guidelines, stored."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from bot.settings import Settings
from bot.storage.database import Database
from bot.storage.deals import add_analysis
from bot.storage.models import DealAnalysis
from bot.tools._common import caller_lead, current_conversation, fill_from_analysis, in_transaction
from bot.tools.context import is_identified_user
from bot.tools.finance import PROGRAMS, DealInputs, Program, analyze, judge, suggest_program
from realtime.tools import Tool, ToolContext, ToolFailure

DESCRIPTION = (
    "Analyze a real-estate deal the caller describes. Call it as soon as you know at least the purchase "
    "price, the loan amount and the interest rate; add rent, taxes, insurance, HOA, rehab budget, "
    "after-repair value and closing costs when the caller gives them (omit unknown ones, never invent "
    "them). Returns LTV, purchase LTV (loan less rehab, over the price), LTC, ARV-LTV, monthly principal "
    "and interest, PITIA, DSCR (rent / PITIA), NOI, cap rate, cash to close, cash-on-cash return, and a "
    "verdict against the lender's guidelines for the program (given, or guessed from the deal), plus the "
    "other programs the deal fits. Ratios are decimals: 0.75 means 75 percent. Read out only the two or "
    "three figures that matter and the verdict."
)
NOTE = (
    "NOI is rent less taxes, insurance and HOA, before vacancy, management and repairs. "
    "Cash to close = price + closing costs + rehab - loan."
)


class AnalyzeDealArguments(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e400 is valid JSON, and infinite

    purchase_price: float = Field(gt=0, description="Purchase price in USD (for a refinance: current value).")
    loan_amount: float = Field(gt=0, description="Loan amount requested, USD.")
    interest_rate: float = Field(ge=0, le=30, description="Annual interest rate in percent, e.g. 7.25.")
    term_years: int = Field(30, ge=1, le=40, description="Amortization term in years.")
    interest_only: bool = Field(False, description="True for interest-only payments.")
    monthly_rent: float | None = Field(None, ge=0, description="Expected gross monthly rent, USD.")
    property_taxes_annual: float | None = Field(None, ge=0, description="Property taxes per year, USD.")
    insurance_annual: float | None = Field(None, ge=0, description="Hazard insurance per year, USD.")
    hoa_monthly: float | None = Field(None, ge=0, description="HOA dues per month, USD.")
    rehab_budget: float | None = Field(None, ge=0, description="Renovation or construction budget, USD.")
    after_repair_value: float | None = Field(None, gt=0, description="Value after the rehab (ARV), USD.")
    closing_costs: float | None = Field(None, ge=0, description="Closing costs paid by the borrower, USD.")
    program: Program | None = Field(
        None, description="Loan program to judge against; omit to use the one the caller chose (save_lead), "
        "else the tool picks one from the figures."
    )

    def deal(self) -> DealInputs:
        return DealInputs(
            purchase_price=self.purchase_price,
            loan_amount=self.loan_amount,
            interest_rate=self.interest_rate,
            term_years=self.term_years,
            interest_only=self.interest_only,
            monthly_rent=self.monthly_rent,
            property_taxes_annual=self.property_taxes_annual or 0.0,
            insurance_annual=self.insurance_annual or 0.0,
            hoa_monthly=self.hoa_monthly or 0.0,
            rehab_budget=self.rehab_budget or 0.0,
            after_repair_value=self.after_repair_value,
            closing_costs=self.closing_costs or 0.0,
        )


def analyze_deal_tool(settings: Settings, database: Database) -> Tool:
    guidelines = settings.program_guidelines

    async def handler(args: AnalyzeDealArguments, context: ToolContext) -> dict[str, Any]:
        try:
            deal = args.deal()
            results = analyze(deal)
        except (ValueError, ZeroDivisionError, OverflowError) as exc:
            raise ToolFailure("invalid_arguments", f"These figures cannot be analyzed: {exc}.") from None
        program, program_source = args.program, "asked"
        if program is None:
            program, program_source = await _lead_program(database, context), "the caller's lead"
        if program is None:
            program, program_source = suggest_program(deal), "suggested from the figures"
        verdict = judge(results, program, guidelines[program])
        fits = [p for p in PROGRAMS if p != program and judge(results, p, guidelines[p]).fits]
        rounded = results.rounded()

        def store(session: Session) -> tuple[int | None, int | None]:
            lead = caller_lead(session, context)
            conversation = current_conversation(session, context)
            analysis = add_analysis(
                session,
                DealAnalysis(
                    guild_id=context.guild_id,
                    lead_id=lead.id if lead else None,
                    conversation_id=conversation.id if conversation else None,
                    discord_user_id=context.user_id if is_identified_user(context.user_id) else None,
                    program=program,
                    inputs=args.model_dump(mode="json"),
                    results=rounded,
                    ltv=results.ltv,
                    dscr=results.dscr,
                    fits_program=verdict.fits,
                    verdict=verdict.text,
                ),
            )
            if lead is not None:
                fill_from_analysis(lead, analysis)
                session.add(lead)
            return analysis.id, analysis.lead_id

        result: dict[str, Any] = {
            "program": program,
            "program_source": program_source,
            "results": rounded,
            "verdict": verdict.as_dict(),
            "other_programs_that_fit": fits,
            "note": NOTE,
        }
        try:
            analysis_id, lead_id = await in_transaction(database, store, what="store the analysis")
        except ToolFailure as failure:  # the figures are still right; say they were not kept
            result.update(saved=False, warning=failure.message)
        else:
            result.update(saved=True, analysis_id=analysis_id, lead_id=lead_id)
        return result

    return Tool("analyze_deal", DESCRIPTION, AnalyzeDealArguments, handler)


async def _lead_program(database: Database, context: ToolContext) -> Program | None:
    """The program the caller already chose (save_lead), so an early analysis is judged against it."""

    def read(session: Session) -> Program | None:
        lead = caller_lead(session, context)
        program = lead.loan_program if lead is not None else None
        return program if program in PROGRAMS else None  # type: ignore[return-value]

    try:
        return await in_transaction(database, read, what="read the caller's lead")
    except ToolFailure:  # the store is down: judge by the figures alone (saving will say so)
        return None
