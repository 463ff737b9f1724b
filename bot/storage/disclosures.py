"""Disclosure records: who was told what (wording version) and when, and their answer when one was asked."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, or_, select, update

from bot.storage.models import Conversation, Disclosure


def record_disclosures(
    session: Session, guild_id: int, conversation_id: int, users: Iterable[int], version: str, consent: str,
    at: datetime,
) -> None:
    for user in users:
        session.add(Disclosure(guild_id=guild_id, conversation_id=conversation_id, discord_user_id=user,
                               wording_version=version, disclosed_at=at, consent=consent))


def record_answer(session: Session, guild_id: int, conversation_id: int, user: int, consent: str, at: datetime) -> None:
    """The participant's answer on their pending disclosure in this call."""
    session.exec(
        update(Disclosure)
        .where(Disclosure.guild_id == guild_id, Disclosure.conversation_id == conversation_id,  # type: ignore[arg-type]
               Disclosure.discord_user_id == user, Disclosure.consent == "pending")
        .values(consent=consent, answered_at=at)
    )


def lead_disclosures(
    session: Session, guild_id: int, lead_id: int, discord_user_id: int | None, limit: int = 5
) -> list[Disclosure]:
    """The newest disclosures made to the lead's Discord user or in the lead's calls, within the guild."""
    in_lead_calls = col(Disclosure.conversation_id).in_(
        select(Conversation.id).where(Conversation.guild_id == guild_id, Conversation.lead_id == lead_id)
    )
    owners = [in_lead_calls] + ([Disclosure.discord_user_id == discord_user_id] if discord_user_id else [])
    return list(
        session.exec(
            select(Disclosure)
            .where(Disclosure.guild_id == guild_id, or_(*owners))
            .order_by(col(Disclosure.disclosed_at).desc(), col(Disclosure.id).desc())
            .limit(limit)
        ).all()
    )
