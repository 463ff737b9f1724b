"""The post-call package for the staff channel: the call's summary (written by the same Realtime session, in
text, before it closes) and the lead card, as one embed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import discord
from sqlmodel import Session

from bot.privacy import mask_contacts
from bot.storage.conversations import get_conversation
from bot.storage.deals import latest_offer
from bot.storage.lead_activity import next_booked_calls
from bot.storage.leads import get_lead
from bot.storage.models import Conversation, Lead, Offer, ScheduledCall

SUMMARY_INSTRUCTIONS = (
    "The call has ended. Write a summary for the lender's loan officers, in plain text, at most 120 words: who "
    "called (first name), the deal (program, amount, property), what you answered, the outcome (saved, scored, "
    "offer, booked) and the next step. No phone numbers, emails or street addresses. Do not address the caller."
)
EMBED_DESCRIPTION_LIMIT = 4096  # Discord's limit on an embed's description


@dataclass(frozen=True)
class CallPackage:
    conversation: Conversation
    lead: Lead | None
    offer: Offer | None
    next_call: ScheduledCall | None


def load_package(session: Session, guild_id: int, conversation_id: int, now: datetime) -> CallPackage | None:
    """The finished call and the lead saved in it (with its latest offer and next booked call), if any."""
    conversation = get_conversation(session, guild_id, conversation_id)
    if conversation is None:
        return None
    lead = get_lead(session, guild_id, conversation.lead_id) if conversation.lead_id else None
    if lead is None or lead.id is None:
        return CallPackage(conversation, None, None, None)
    return CallPackage(conversation, lead, latest_offer(session, guild_id, lead.id),
                       next_booked_calls(session, guild_id, now).get(lead.id))


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.0f}"


def lead_card(package: CallPackage, summary: str | None, region: str = "US") -> discord.Embed:
    """Summary on top, then the lead's essentials; contacts masked (they are in /leads show)."""
    call, lead = package.conversation, package.lead
    minutes = max(1, round((call.duration_seconds or 0) / 60))
    title = f"Call ended · lead #{lead.id}" if lead is not None else "Call ended · no lead saved"
    embed = discord.Embed(title=title, colour=discord.Colour.green() if lead else discord.Colour.light_grey())
    text = mask_contacts(summary, region) if summary else "No summary (the voice AI was not available)."
    embed.description = discord.utils.escape_mentions(text)[:EMBED_DESCRIPTION_LIMIT]
    if lead is not None:
        rows = [
            ("Name", discord.utils.escape_markdown(lead.full_name or "—")[:200]),
            ("Status", lead.status),
            ("Score", "—" if lead.score is None else f"{lead.score} (tier {lead.tier})"),
            ("Program", lead.loan_program or "—"),
            ("Loan amount", _money(lead.loan_amount)),
        ]
        if package.offer is not None:
            offer = package.offer
            rows.append(("Offer", f"{_money(offer.amount)} at {offer.rate_min:g}–{offer.rate_max:g} %"))
        if package.next_call is not None:
            rows.append(("Next call", f"<t:{int(package.next_call.starts_at.timestamp())}:f>"))
        for name, value in rows:
            embed.add_field(name=name, value=value, inline=True)
        embed.add_field(name="Details", value=f"`/leads show {lead.id}`", inline=False)
    who = " ".join(f"<@{user}>" for user in call.participants[:10]) or "—"
    embed.add_field(name="Call", value=f"{minutes} min · {call.turns} turns · ${call.estimated_cost_usd:.2f} · {who}",
                    inline=False)
    return embed
