"""The lender's staff channel: short notices of new qualified leads and bookings, decided from tool results.

Decisions only (what to say, where, whom to ping); `bot.voice.call` does the sending. The channel and role
are looked up in the call's own guild, so a notice can never reach another server's staff.
"""

from __future__ import annotations

from typing import Any

import discord

from bot.settings import Settings


def staff_notice(tool_name: str, result: dict[str, Any]) -> str | None:
    """The notice a tool result deserves, or None. Ids and figures only: the lead's details stay in /leads show."""
    if not result.get("ok"):
        return None
    lead_id = result.get("lead_id")
    if tool_name == "score_lead" and result.get("newly_qualified"):
        offer = result.get("offer")
        has_offer = isinstance(offer, dict) and offer.get("amount")
        offered = f"; offer {offer['program']} ${offer['amount']:,.0f}" if has_offer else ""  # type: ignore[index]
        return (
            f"⭐ New qualified lead #{lead_id}: score {result.get('score')}, tier {result.get('tier')}{offered}. "
            f"`/leads show {lead_id}`"
        )
    if tool_name == "schedule_call" and result.get("booked"):
        when = result.get("when_for_lender") or result.get("starts_at_utc")
        return (
            f"📅 Call booked with lead #{lead_id} for {when} ({result.get('duration_minutes')} min). "
            f"`/leads show {lead_id}`"
        )
    return None


def staff_channel(guild: discord.Guild, settings: Settings) -> discord.abc.Messageable | None:
    """STAFF_CHANNEL_ID when it is a channel of this guild that takes messages, else None."""
    if settings.staff_channel_id is None:
        return None
    channel = guild.get_channel(settings.staff_channel_id)  # only this guild's channels
    return channel if isinstance(channel, discord.abc.Messageable) else None


def staff_mention(guild: discord.Guild, settings: Settings) -> tuple[str, discord.AllowedMentions]:
    """The role ping to put before a notice (STAFF_ROLE_ID of this guild) and the mentions allowed to ping."""
    role = guild.get_role(settings.staff_role_id) if settings.staff_role_id is not None else None
    if role is None:
        return "", discord.AllowedMentions.none()
    return f"{role.mention} ", discord.AllowedMentions(everyone=False, users=False, roles=[role])
