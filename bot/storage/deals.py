"""Deal analyses and offers, always within one guild."""

from __future__ import annotations

from sqlmodel import Session, and_, col, or_, select, update

from bot.storage.models import DealAnalysis, Offer


def add_analysis(session: Session, analysis: DealAnalysis) -> DealAnalysis:
    session.add(analysis)
    session.flush()
    return analysis


def latest_analysis(session: Session, guild_id: int, lead_id: int) -> DealAnalysis | None:
    return session.exec(
        select(DealAnalysis)
        .where(DealAnalysis.guild_id == guild_id, DealAnalysis.lead_id == lead_id)
        .order_by(col(DealAnalysis.created_at).desc(), col(DealAnalysis.id).desc())
    ).first()


def claim_analyses(
    session: Session,
    guild_id: int,
    lead_id: int,
    *,
    conversation_id: int | None = None,
    discord_user_id: int | None = None,
) -> int:
    """Link the not-yet-owned analyses of this Discord user, or the anonymous ones of this conversation
    (an identified speaker's analyses in a shared call are theirs, not the conversation's), to the lead."""
    owners = []
    if conversation_id is not None:
        owners.append(
            and_(DealAnalysis.conversation_id == conversation_id, col(DealAnalysis.discord_user_id).is_(None))
        )
    if discord_user_id is not None:
        owners.append(DealAnalysis.discord_user_id == discord_user_id)
    if not owners:
        return 0
    result = session.exec(
        update(DealAnalysis)
        .where(DealAnalysis.guild_id == guild_id, col(DealAnalysis.lead_id).is_(None), or_(*owners))
        .values(lead_id=lead_id)
    )
    return int(result.rowcount or 0)


def add_offer(session: Session, offer: Offer) -> Offer:
    session.add(offer)
    session.flush()
    return offer


def latest_offer(session: Session, guild_id: int, lead_id: int) -> Offer | None:
    return session.exec(
        select(Offer)
        .where(Offer.guild_id == guild_id, Offer.lead_id == lead_id)
        .order_by(col(Offer.created_at).desc(), col(Offer.id).desc())
    ).first()
