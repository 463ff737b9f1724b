"""What Cap did for one lead: its calls, deal analyses, latest offer and booked calls (for /leads show and exports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from bot.storage.deals import latest_offer
from bot.storage.disclosures import lead_disclosures
from bot.storage.models import Conversation, DealAnalysis, Disclosure, Offer, ScheduledCall

# /leads show lists the newest few of each; an embed holds 25 fields of 1,024 characters.
SHOWN_PER_KIND = 5


@dataclass(frozen=True)
class LeadActivity:
    conversations: list[Conversation]
    analyses: list[DealAnalysis]
    latest_offer: Offer | None
    booked_calls: list[ScheduledCall]
    disclosures: list[Disclosure] = field(default_factory=list)


def lead_activity(
    session: Session, guild_id: int, lead_id: int, discord_user_id: int | None = None, limit: int = SHOWN_PER_KIND
) -> LeadActivity:
    """The lead's newest calls and analyses, its latest offer, its booked calls (soonest first) and the newest
    disclosures made to it (to its Discord user, or in its calls)."""
    conversations = session.exec(
        select(Conversation)
        .where(Conversation.guild_id == guild_id, Conversation.lead_id == lead_id)
        .order_by(col(Conversation.started_at).desc(), col(Conversation.id).desc())
        .limit(limit)
    ).all()
    analyses = session.exec(
        select(DealAnalysis)
        .where(DealAnalysis.guild_id == guild_id, DealAnalysis.lead_id == lead_id)
        .order_by(col(DealAnalysis.created_at).desc(), col(DealAnalysis.id).desc())
        .limit(limit)
    ).all()
    booked = session.exec(
        select(ScheduledCall)
        .where(
            ScheduledCall.guild_id == guild_id,
            ScheduledCall.lead_id == lead_id,
            ScheduledCall.status == "booked",
        )
        .order_by(col(ScheduledCall.starts_at))
        .limit(limit)
    ).all()
    return LeadActivity(
        list(conversations),
        list(analyses),
        latest_offer(session, guild_id, lead_id),
        list(booked),
        lead_disclosures(session, guild_id, lead_id, discord_user_id, limit),
    )


def next_booked_calls(session: Session, guild_id: int | None, now: datetime) -> dict[int, ScheduledCall]:
    """Each lead's next booked call from `now` on (one guild's, or every guild's for the operator's export)."""
    statement = select(ScheduledCall).where(
        ScheduledCall.status == "booked", col(ScheduledCall.lead_id).is_not(None), ScheduledCall.starts_at >= now
    )
    if guild_id is not None:
        statement = statement.where(ScheduledCall.guild_id == guild_id)
    soonest: dict[int, ScheduledCall] = {}
    for call in session.exec(statement.order_by(col(ScheduledCall.starts_at).desc())).all():
        assert call.lead_id is not None
        soonest[call.lead_id] = call  # the last written is the soonest
    return soonest


def latest_offers(session: Session, guild_id: int | None) -> dict[int, Offer]:
    """Each lead's latest offer (one guild's, or every guild's for the operator's export)."""
    statement = select(Offer)
    if guild_id is not None:
        statement = statement.where(Offer.guild_id == guild_id)
    latest: dict[int, Offer] = {}
    for offer in session.exec(statement.order_by(col(Offer.created_at), col(Offer.id))).all():
        latest[offer.lead_id] = offer  # the last written is the newest
    return latest
