"""The save_lead and score_lead tools: capture and qualify the caller, then score them and make an offer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session

from bot.settings import Settings
from bot.storage.database import Database
from bot.storage.deals import add_offer, claim_analyses, latest_analysis, latest_offer
from bot.storage.leads import upsert_lead
from bot.storage.models import MAX_ROW_ID, DealAnalysis, Lead, Offer, utcnow
from bot.tools._common import caller_lead, current_conversation, fill_from_analysis, in_transaction
from bot.tools.context import CONSOLE_GUILD_ID, is_identified_user
from bot.tools.deal_terms import lender_deal
from bot.tools.finance import Program
from bot.tools.scoring import (
    CreditBand,
    DealFacts,
    OfferTerms,
    Timeline,
    credit_band_for,
    offer_terms,
    score,
    term_sheet,
)
from bot.tools.underwriting import Borrower, Verdict, liquidity_check, pricing_tier, underwrite
from realtime.tools import Tool, ToolContext, ToolFailure

PropertyType = Literal[
    "single_family",
    "multi_family_2_4",
    "multi_family_5_plus",
    "condo",
    "townhouse",
    "mixed_use",
    "commercial",
    "land",
]
LoanPurpose = Literal["purchase", "refinance", "cash_out_refinance", "construction"]

SAVE_DESCRIPTION = (
    "Save or update the caller as a lead. Call it once you have their full name and a phone number or "
    "email, then again whenever they tell you more (send only what is new or changed; never guess). "
    "The same caller is updated, not duplicated. Returns lead_id and `missing`: the qualification "
    "questions still unanswered, in the order worth asking; ask the first one or two naturally. "
    "An invalid email or phone comes back as an error naming the field: ask the caller to repeat it."
)
SCORE_DESCRIPTION = (
    "Check the caller's lead against the lender's policy and score it 0-100 (A-D, for the loan team). Call "
    "it after save_lead and analyze_deal. When the latest deal fits the policy, an indicative offer priced "
    "by the borrower's risk is created and returned as a short term sheet you may read out; otherwise "
    "`blockers` says what stands in the way in words you can say, and `questions` what to ask next (one at "
    "a time). Never promise approval: offers are indicative."
)

# Asked in this order: the deal first, then the borrower.
QUALIFICATION_ORDER = (
    "loan_program",
    "loan_purpose",
    "property_address",
    "property_type",
    "purchase_price",
    "loan_amount",
    "rehab_budget",
    "after_repair_value",
    "credit_band",
    "experience_deals",
    "liquidity",
    "timeline",
)
REHAB_PROGRAMS = frozenset({"fix_and_flip", "ground_up_construction"})


class SaveLeadArguments(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e400 is valid JSON, and infinite

    full_name: str = Field(min_length=1, max_length=200, description="The caller's full name.")

    @field_validator("full_name")
    @classmethod
    def _name_is_not_blank(cls, value: str) -> str:
        if not value.strip():  # would overwrite the stored name with nothing
            raise ValueError("the caller's name is blank; ask for it")
        return value.strip()
    email: str | None = Field(None, max_length=320, description="Email address, as spelled by the caller.")
    phone: str | None = Field(
        None, max_length=40, description="Phone number; include the country code if not US."
    )
    property_address: str | None = Field(
        None, max_length=500, description="Subject property address or city."
    )
    property_type: PropertyType | None = None
    property_units: int | None = Field(None, ge=1, le=10000, description="Number of units.")
    loan_purpose: LoanPurpose | None = None
    loan_program: Program | None = None
    loan_amount: float | None = Field(None, gt=0, description="Loan amount wanted, USD.")
    purchase_price: float | None = Field(None, gt=0, description="Purchase price or current value, USD.")
    after_repair_value: float | None = Field(None, gt=0, description="After-repair value (ARV), USD.")
    rehab_budget: float | None = Field(None, ge=0, description="Rehab or construction budget, USD.")
    credit_band: CreditBand | None = Field(
        None, description="Credit score band, only if the caller gave a range rather than a number."
    )
    credit_score: int | None = Field(
        None, ge=300, le=850, description="Credit score, if the caller gave a number (kept exactly)."
    )
    experience_deals: int | None = Field(None, ge=0, le=10000, description="Real-estate deals completed.")
    liquidity: float | None = Field(None, ge=0, description="Cash and liquid reserves available, USD.")
    timeline: Timeline | None = Field(None, description="When the caller wants to close.")
    notes: str | None = Field(
        None, max_length=2000, description="Anything else worth a loan officer's attention."
    )


class ScoreLeadArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead_id: int | None = Field(
        None, ge=1, le=MAX_ROW_ID, description="The lead to score; omit for the current caller's lead."
    )


def normalise_email(raw: str) -> str:
    """Syntax check and normalisation only: no DNS look-up (no network on a voice call's clock)."""
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        raise ToolFailure(
            "invalid_email",
            f"That email address is not valid: {reason}. Nothing was saved: ask the caller to spell it, then "
            "call save_lead again with every field from this call.",
            field="email",
        ) from None


def normalise_phone(raw: str, region: str) -> str:
    """E.164 (+12125550100); numbers without a country code are read in the default region."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise ToolFailure(
            "invalid_phone",
            "That phone number is not valid. Nothing was saved: ask the caller to repeat it (with the country "
            "code if it is not a US number), then call save_lead again with every field from this call.",
            field="phone",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def missing_fields(lead: Lead) -> list[str]:
    """The qualification answers this lead still lacks, contact first."""
    missing = [] if (lead.email or lead.phone) else ["email_or_phone"]
    values = {name: getattr(lead, name, None) for name in QUALIFICATION_ORDER}
    values["after_repair_value"] = lead.arv
    for name in QUALIFICATION_ORDER:
        if name in ("rehab_budget", "after_repair_value") and lead.loan_program not in REHAB_PROGRAMS:
            continue
        if values[name] is None:
            missing.append(name)
    return missing


def deal_facts(analysis: DealAnalysis | None) -> DealFacts | None:
    if analysis is None:
        return None
    inputs, results = analysis.inputs, analysis.results
    return DealFacts(
        program=analysis.program or "bridge",
        fits_program=analysis.fits_program,
        dscr=analysis.dscr,
        ltv=analysis.ltv,
        loan_amount=float(inputs["loan_amount"]),
        purchase_price=float(inputs["purchase_price"]),
        rehab_budget=float(inputs.get("rehab_budget") or 0.0),
        after_repair_value=inputs.get("after_repair_value"),
        cash_to_close=results.get("cash_to_close"),
        monthly_pitia=results.get("monthly_pitia"),
    )


def analysis_borrower(lead: Lead, analysis: DealAnalysis | None) -> Borrower:
    """The borrower a deal is judged for: the lead's answers, else what the caller told analyze_deal (credit,
    deals), and the property's state from the analysis, so score_lead judges what analyze_deal judged."""
    inputs = analysis.inputs if analysis is not None else {}
    credit = lead.credit if lead.credit is not None else inputs.get("credit_score")
    deals = lead.experience_deals if lead.experience_deals is not None else inputs.get("experience_deals")
    return Borrower.of(credit, deals, inputs.get("property_state"))


def offer_dict(offer: Offer | OfferTerms, offer_id: int | None) -> dict[str, Any]:
    expires: datetime = offer.expires_at
    return {
        "offer_id": offer_id,
        "program": offer.program,
        "amount": offer.amount,
        "max_ltv": offer.max_ltv,
        "rate_range_percent": [offer.rate_min, offer.rate_max],
        "points": offer.points,
        "term_months": offer.term_months,
        "expires_at": expires.isoformat(),
    }


def save_lead_tool(settings: Settings, database: Database) -> Tool:
    region = settings.phone_default_region

    async def handler(args: SaveLeadArguments, context: ToolContext) -> dict[str, Any]:
        fields: dict[str, Any] = args.model_dump(exclude={"after_repair_value", "notes"})
        fields["full_name"] = args.full_name.strip()
        fields["email"] = normalise_email(args.email) if args.email and args.email.strip() else None
        fields["phone"] = normalise_phone(args.phone, region) if args.phone and args.phone.strip() else None
        fields["arv"] = args.after_repair_value
        if args.credit_band is None and args.credit_score is not None:
            # The exact score is kept in its own column (lender minimums like 650 or 660 fall inside the bands);
            # the band is derived from it for staff views and exports.
            fields["credit_band"] = credit_band_for(args.credit_score)
        user_id = context.user_id if is_identified_user(context.user_id) else None

        def save(session: Session) -> dict[str, Any]:
            existing = caller_lead(session, context)
            if existing is None and not (fields["email"] or fields["phone"] or user_id):
                raise ToolFailure(
                    "missing_contact",
                    "Ask for a phone number or email before saving; nothing was saved yet.",
                    field="email_or_phone",
                )
            if existing is None:
                fields["source"] = "console" if context.guild_id == CONSOLE_GUILD_ID else "voice"
            lead, created = upsert_lead(
                session,
                context.guild_id,
                fields,
                discord_user_id=user_id,
                notes=args.notes,
                existing=existing,
            )
            assert lead.id is not None
            conversation = current_conversation(session, context)
            if conversation is not None:
                conversation.lead_id = lead.id
                session.add(conversation)
            claim_analyses(  # an identified caller's own; the conversation's only for an unidentified one
                session,
                context.guild_id,
                lead.id,
                discord_user_id=user_id,
                conversation_id=conversation.id if conversation and user_id is None else None,
            )
            fill_from_analysis(lead, latest_analysis(session, context.guild_id, lead.id))
            session.add(lead)
            missing = missing_fields(lead)
            return {
                "lead_id": lead.id,
                "created": created,
                "status": lead.status,
                "missing": missing,
                "message": ("Saved. Still to ask: " + ", ".join(missing[:3]) + ".")
                if missing
                else "Saved. The lead is fully qualified: score it with score_lead.",
            }

        return await in_transaction(database, save, what="save the lead")

    return Tool("save_lead", SAVE_DESCRIPTION, SaveLeadArguments, handler)


def score_lead_tool(settings: Settings, database: Database) -> Tool:
    policy = settings.policy

    async def handler(args: ScoreLeadArguments, context: ToolContext) -> dict[str, Any]:
        def run(session: Session) -> dict[str, Any]:
            lead = caller_lead(session, context, args.lead_id)
            if lead is None or lead.id is None:
                raise ToolFailure(
                    "no_lead", "There is no saved lead for this caller yet: call save_lead first."
                )
            analysis = latest_analysis(session, context.guild_id, lead.id)
            facts = deal_facts(analysis)
            program_id = facts.program if facts else lead.loan_program
            program = policy.programs.get(program_id) if program_id else None
            result = score(
                credit=lead.credit,
                experience_deals=lead.experience_deals,
                liquidity=lead.liquidity,
                timeline=lead.timeline,
                facts=facts,
                program=program,
            )
            borrower = analysis_borrower(lead, analysis)
            verdict: Verdict | None = None
            blockers: list[str] = []
            questions: list[str] = []
            if analysis is None or program is None or program_id is None:
                blockers.append("no deal analyzed yet: run analyze_deal with the deal's figures")
            else:
                # Re-judged at the lender's rate for this borrower now: the rate the offer is priced at.
                deal = lender_deal(policy, program_id, analysis.inputs, borrower)
                verdict = underwrite(policy, program_id, deal, borrower)
                blockers.extend(verdict.blockers)
                questions.extend(verdict.questions)
                cash = liquidity_check(program, deal, lead.liquidity)
                if cash.status == "blocks":
                    blockers.append(cash.text)
                elif cash.status == "unknown":
                    questions.append(cash.text)  # worth asking; it does not hold the indicative offer back
            qualifies = verdict is not None and verdict.fits is True and verdict.limits is not None and not blockers
            lead.score, lead.tier = result.score, result.tier
            was_qualified = lead.status == "qualified"
            if lead.status in ("new", "qualified", "nurture"):
                lead.status = "qualified" if qualifies else "nurture"
            lead.updated_at = utcnow()
            session.add(lead)
            out: dict[str, Any] = {"lead_id": lead.id, **result.as_dict(), "qualifies": qualifies,
                                   "blockers": blockers, "questions": questions, "offer": None}
            out["newly_qualified"] = lead.status == "qualified" and not was_qualified  # staff are told once
            if qualifies and verdict is not None and verdict.limits is not None and program is not None:
                assert facts is not None and program_id is not None
                pricing = pricing_tier(policy, borrower)
                questions.extend(pricing.questions)
                now = utcnow()
                terms = offer_terms(program_id, program, verdict.limits, pricing, facts, now,
                                    valid_days=policy.offer_valid_days)
                offer = _reuse_or_issue(session, context.guild_id, lead.id, terms, now)
                out["pricing_tier"] = pricing.tier
                out["offer"] = offer_dict(offer, offer.id)
                out["term_sheet"] = term_sheet(offer, program)
            return out

        return await in_transaction(database, run, what="score the lead")

    return Tool("score_lead", SCORE_DESCRIPTION, ScoreLeadArguments, handler)


def _reuse_or_issue(session: Session, guild_id: int, lead_id: int, terms: OfferTerms, now: datetime) -> Offer:
    """The same unexpired offer again rather than a new row each time the model re-scores."""
    previous = latest_offer(session, guild_id, lead_id)
    same = (
        previous is not None
        and previous.expires_at > now
        and all(
            getattr(previous, name) == getattr(terms, name)
            for name in ("program", "amount", "max_ltv", "rate_min", "rate_max", "points", "term_months")
        )
    )
    if same and previous is not None:
        return previous
    return add_offer(
        session,
        Offer(
            guild_id=guild_id,
            lead_id=lead_id,
            program=terms.program,
            amount=terms.amount,
            max_ltv=terms.max_ltv,
            rate_min=terms.rate_min,
            rate_max=terms.rate_max,
            points=terms.points,
            term_months=terms.term_months,
            expires_at=terms.expires_at,
        ),
    )
