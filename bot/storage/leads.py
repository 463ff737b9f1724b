"""Lead queries. Every function takes the guild it works in; nothing here reads across guilds except
`all_guild_leads`, which exists only for the operator's `cap-bot leads export` without --guild."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, or_, select

from bot.storage.models import (
    Conversation,
    DealAnalysis,
    Disclosure,
    Lead,
    Offer,
    ScheduledCall,
    Turn,
    WebhookDelivery,
    utcnow,
)

# The fields a caller's answers may set (everything but identity, bookkeeping and scoring).
LEAD_FIELDS = (
    "full_name",
    "phone",
    "email",
    "property_address",
    "property_type",
    "property_units",
    "loan_purpose",
    "loan_program",
    "loan_amount",
    "purchase_price",
    "arv",
    "rehab_budget",
    "credit_band",
    "credit_score",
    "experience_deals",
    "liquidity",
    "timeline",
    "source",
)


def find_lead(
    session: Session,
    guild_id: int,
    *,
    discord_user_id: int | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> Lead | None:
    """The guild's lead for this Discord user, else with this email, else with this phone."""
    if discord_user_id is not None:
        lead = session.exec(
            select(Lead).where(Lead.guild_id == guild_id, Lead.discord_user_id == discord_user_id)
        ).first()
        if lead is not None:
            return lead
    if email:
        lead = session.exec(
            select(Lead)
            .where(Lead.guild_id == guild_id, func.lower(Lead.email) == email.lower())
            .order_by(col(Lead.id))
        ).first()
        if lead is not None:
            return lead
    if phone:
        return session.exec(
            select(Lead).where(Lead.guild_id == guild_id, Lead.phone == phone).order_by(col(Lead.id))
        ).first()
    return None


def upsert_lead(
    session: Session,
    guild_id: int,
    fields: Mapping[str, Any],
    *,
    discord_user_id: int | None = None,
    notes: str | None = None,
    existing: Lead | None = None,
) -> tuple[Lead, bool]:
    """Create the lead or update the matching one (fields given as None are left alone); notes are appended.

    The match is `existing` when the caller already knows it, else by Discord user, email, phone.
    Returns (lead, created). The caller's transaction decides whether it sticks.
    """
    unknown = set(fields) - set(LEAD_FIELDS)
    if unknown:
        raise ValueError(f"not lead fields: {sorted(unknown)}")
    if existing is not None and existing.guild_id != guild_id:
        raise ValueError("lead of another guild")
    lead = existing or find_lead(
        session,
        guild_id,
        discord_user_id=discord_user_id,
        email=fields.get("email"),
        phone=fields.get("phone"),
    )
    if (
        lead is not None
        and existing is None
        and lead.discord_user_id is not None
        and lead.discord_user_id != discord_user_id
    ):
        lead = None  # a Discord user's email or phone: only that user may update their lead
    created = lead is None
    if lead is None:
        lead = Lead(guild_id=guild_id, discord_user_id=discord_user_id)
    elif lead.discord_user_id is None and discord_user_id is not None:
        lead.discord_user_id = discord_user_id
    for name, value in fields.items():
        if value is not None:
            setattr(lead, name, value)
    if notes and notes.strip():
        note = notes.strip()
        if not lead.notes:
            lead.notes = note
        elif f"\n{note}\n" not in f"\n{lead.notes}\n":  # whole lines: "rentals" is new beside "two rentals"
            lead.notes = f"{lead.notes}\n{note}"
    lead.updated_at = utcnow()
    session.add(lead)
    session.flush()
    return lead, created


def get_lead(session: Session, guild_id: int, lead_id: int) -> Lead | None:
    return session.exec(select(Lead).where(Lead.guild_id == guild_id, Lead.id == lead_id)).first()


def _filtered(statement: Any, status: str | None, tier: str | None) -> Any:
    if status:
        statement = statement.where(Lead.status == status)
    if tier:
        statement = statement.where(Lead.tier == tier)
    return statement


def list_leads(
    session: Session,
    guild_id: int,
    *,
    status: str | None = None,
    tier: str | None = None,
    offset: int = 0,
    limit: int = 10,
) -> list[Lead]:
    """Newest first."""
    statement = _filtered(select(Lead).where(Lead.guild_id == guild_id), status, tier)
    statement = statement.order_by(col(Lead.updated_at).desc(), col(Lead.id).desc())
    statement = statement.offset(offset).limit(limit)
    return list(session.exec(statement).all())


def count_leads(
    session: Session,
    guild_id: int,
    *,
    status: str | None = None,
    tier: str | None = None,
) -> int:
    statement = select(func.count()).select_from(Lead).where(Lead.guild_id == guild_id)
    statement = _filtered(statement, status, tier)
    return int(session.exec(statement).one())


def delete_lead(session: Session, guild_id: int, lead_id: int) -> bool:
    """Erase the lead and everything derived from it: offers, deal analyses (also the anonymous ones of its
    calls), booked calls, its conversations, their transcripts and the disclosures made to it. The caller's
    transaction makes it all or nothing."""
    lead = get_lead(session, guild_id, lead_id)
    if lead is None:
        return False
    conversation_ids = select(Conversation.id).where(
        Conversation.guild_id == guild_id, Conversation.lead_id == lead_id
    )
    session.exec(
        delete(DealAnalysis).where(
            DealAnalysis.guild_id == guild_id,  # type: ignore[arg-type]
            or_(DealAnalysis.lead_id == lead_id, col(DealAnalysis.conversation_id).in_(conversation_ids)),
        )
    )
    session.exec(delete(Turn).where(Turn.guild_id == guild_id, col(Turn.conversation_id).in_(conversation_ids)))
    told = [col(Disclosure.conversation_id).in_(conversation_ids)]
    if lead.discord_user_id is not None:
        told.append(Disclosure.discord_user_id == lead.discord_user_id)
    session.exec(delete(Disclosure).where(Disclosure.guild_id == guild_id, or_(*told)))  # type: ignore[arg-type]
    for model in (Offer, ScheduledCall, Conversation, WebhookDelivery):  # pending webhooks carry the lead too
        session.exec(
            delete(model).where(model.guild_id == guild_id, model.lead_id == lead_id)  # type: ignore[arg-type]
        )
    session.delete(lead)
    session.flush()
    return True


def guild_leads(session: Session, guild_id: int) -> Sequence[Lead]:
    """Every lead of one guild, oldest first (exports)."""
    return session.exec(select(Lead).where(Lead.guild_id == guild_id).order_by(col(Lead.id))).all()


def all_guild_leads(session: Session) -> Sequence[Lead]:
    """Every lead of every guild: operator exports only, never reachable from Discord."""
    return session.exec(select(Lead).order_by(col(Lead.guild_id), col(Lead.id))).all()
