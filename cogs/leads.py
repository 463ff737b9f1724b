"""`/leads`: staff export, list, show and delete the leads Cap captured, within their own server only.

The decisions (who may, what a page shows) are plain functions below the cog so they are tested without
Discord; every query runs in a worker thread and is scoped to `interaction.guild_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from bot.storage.errors import db_error_line
from bot.storage.export import ExportFormat, collect_records, export_filename, render_file
from bot.storage.lead_activity import LeadActivity, lead_activity
from bot.storage.leads import count_leads, delete_lead, get_lead, list_leads
from bot.storage.models import MAX_ROW_ID, Lead
from bot.tools.business_hours import describe

if TYPE_CHECKING:
    from bot.settings import Settings
    from bot.storage.database import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE_SIZE = 10
# Discord's smallest per-guild upload limit is larger than this; bigger exports go through the CLI.
MAX_ATTACHMENT_BYTES = 8 * 1024 * 1024
VIEW_TIMEOUT_SECONDS = 300
CONFIRM_TIMEOUT_SECONDS = 60
FIELD_LIMIT = 1024  # Discord's limit on an embed field's value
REFUSED = "You need the Manage Server permission (or the leads role) to use /leads."
NOT_IN_GUILD = "/leads works only inside a server."
STORE_DOWN = "The lead store is unavailable right now; try again in a moment."
INTERNAL_ERROR = "Something went wrong on my side; nothing was changed. The error is in the bot's log."
DELETE_ERASES = (
    "This erases the lead and everything derived from it: its offers, deal analyses, booked calls, "
    "calls and their transcripts."
)

StatusChoice = Literal["new", "qualified", "nurture", "scheduled", "closed", "lost"]
# Discord refuses anything else before the command runs (a bigger id would overflow PostgreSQL's int4).
LeadId = app_commands.Range[int, 1, MAX_ROW_ID]
TierChoice = Literal["A", "B", "C", "D"]


# --- decisions, no Discord I/O ------------------------------------------------------------------------


def may_manage_leads(
    permissions: discord.Permissions | None, role_ids: Iterable[int], leads_role_id: int | None
) -> bool:
    """Manage Server (or Administrator) always may; otherwise only holders of LEADS_ROLE_ID."""
    if permissions is not None and (permissions.manage_guild or permissions.administrator):
        return True
    return leads_role_id is not None and leads_role_id in set(role_ids)


def page_count(total: int, size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(total / size))


def clamp_page(page: int, total: int, size: int = PAGE_SIZE) -> int:
    return min(max(page, 0), page_count(total, size) - 1)


def _clean(text: str | None, limit: int = 60) -> str:
    """Caller-supplied text made inert in an embed: no markdown, no mentions, bounded length."""
    if not text:
        return "—"
    text = discord.utils.escape_mentions(discord.utils.escape_markdown(text.replace("\n", " ")))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lead_line(lead: Lead) -> str:
    contact = lead.email or lead.phone
    score = "—" if lead.score is None else str(lead.score)
    return (
        f"`#{lead.id}` **{_clean(lead.full_name, 40)}** · {lead.status} · tier {lead.tier or '—'} · "
        f"score {score} · {_clean(contact, 40)}"
    )


def filters_text(status: str | None, tier: str | None) -> str:
    parts = [f"status {status}" if status else "", f"tier {tier}" if tier else ""]
    return ", ".join(p for p in parts if p) or "all leads"


def list_embed(
    leads: list[Lead], page: int, total: int, status: str | None, tier: str | None
) -> discord.Embed:
    embed = discord.Embed(title="Leads", colour=discord.Colour.blurple())
    embed.description = "\n".join(lead_line(lead) for lead in leads) or "No leads match."
    embed.set_footer(
        text=f"{filters_text(status, tier)} · {total} lead(s) · page {page + 1}/{page_count(total)}"
    )
    return embed


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.0f}"


def _calls_text(activity: LeadActivity) -> str:
    """When, who, how long and what it cost, newest first."""
    lines = []
    for call in activity.conversations:
        seconds = call.duration_seconds
        length = "in progress" if seconds is None else f"{max(1, round(seconds / 60))} min"
        who = " ".join(f"<@{user_id}>" for user_id in call.participants[:5]) or "console"
        lines.append(f"{call.started_at:%Y-%m-%d %H:%M} UTC · {length} · {who} · ${call.estimated_cost_usd:.2f}")
    return "\n".join(lines) or "—"


def _analyses_text(activity: LeadActivity) -> str:
    lines = []
    for analysis in activity.analyses:
        figures = [f"LTV {analysis.ltv:.0%}" if analysis.ltv is not None else "",
                   f"DSCR {analysis.dscr:.2f}" if analysis.dscr is not None else "",
                   {True: "fits", False: "does not fit", None: ""}[analysis.fits_program]]
        summary = " · ".join(part for part in figures if part)
        lines.append(f"{analysis.created_at:%Y-%m-%d} {analysis.program or '—'}: {summary or _clean(analysis.verdict)}")
    return "\n".join(lines) or "—"


def _offer_text(activity: LeadActivity) -> str:
    offer = activity.latest_offer
    if offer is None:
        return "—"
    return (
        f"{offer.program}: {_money(offer.amount)} at {offer.rate_min:g}–{offer.rate_max:g} %, {offer.points:g} pt, "
        f"{offer.term_months} months, max LTV {offer.max_ltv:.0%} · {offer.status}, expires {offer.expires_at:%Y-%m-%d}"
    )


def _booked_text(activity: LeadActivity) -> str:
    lines = []
    for call in activity.booked_calls:
        try:
            when = describe(call.starts_at, ZoneInfo(call.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            when = f"{call.starts_at:%Y-%m-%d %H:%M} UTC"
        lines.append(f"{when} · {call.duration_minutes} min · {_clean(call.topic)}")
    return "\n".join(lines) or "—"


def _disclosures_text(activity: LeadActivity) -> str:
    """Who was told (AI assistant, transcribed), when, which wording, and their answer."""
    lines = [
        f"{record.disclosed_at:%Y-%m-%d %H:%M} UTC · <@{record.discord_user_id}> · wording {record.wording_version}"
        f" · consent {record.consent.replace('_', ' ')}"
        for record in activity.disclosures
    ]
    return "\n".join(lines) or "—"


def detail_embed(lead: Lead, activity: LeadActivity | None = None) -> discord.Embed:
    embed = discord.Embed(
        title=f"Lead #{lead.id}: {_clean(lead.full_name, 200)}", colour=discord.Colour.blurple()
    )
    rows: list[tuple[str, Any]] = [
        ("Email", _clean(lead.email, 320)),
        ("Phone", _clean(lead.phone)),
        ("Discord user", f"<@{lead.discord_user_id}>" if lead.discord_user_id else "—"),
        ("Status", lead.status),
        ("Score", "—" if lead.score is None else f"{lead.score} (tier {lead.tier})"),
        ("Program", lead.loan_program or "—"),
        ("Purpose", lead.loan_purpose or "—"),
        ("Loan amount", _money(lead.loan_amount)),
        ("Purchase price", _money(lead.purchase_price)),
        ("ARV", _money(lead.arv)),
        ("Rehab budget", _money(lead.rehab_budget)),
        ("Property", _clean(lead.property_address, 200)),
        ("Type / units", f"{lead.property_type or '—'} / {lead.property_units or '—'}"),
        ("Credit", f"{lead.credit_score} ({lead.credit_band})" if lead.credit_score else lead.credit_band or "—"),
        ("Experience", "—" if lead.experience_deals is None else f"{lead.experience_deals} deal(s)"),
        ("Liquidity", _money(lead.liquidity)),
        ("Timeline", (lead.timeline or "—").replace("_", " ")),
        ("Source", lead.source),
    ]
    for name, value in rows:
        embed.add_field(name=name, value=value, inline=True)
    if lead.notes:
        embed.add_field(name="Notes", value=_clean(lead.notes, 1000), inline=False)
    if activity is not None:
        for name, text in (("Calls", _calls_text(activity)), ("Deal analyses", _analyses_text(activity)),
                           ("Latest offer", _offer_text(activity)), ("Booked calls", _booked_text(activity)),
                           ("Disclosures", _disclosures_text(activity))):
            embed.add_field(name=name, value=text[:FIELD_LIMIT], inline=False)
    embed.set_footer(
        text=f"Created {lead.created_at:%Y-%m-%d %H:%M} UTC · updated {lead.updated_at:%Y-%m-%d %H:%M} UTC"
    )
    return embed


# --- the cog ------------------------------------------------------------------------------------------


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Leads(
    commands.GroupCog, group_name="leads", group_description="Export and manage the leads Cap captured"
):
    """Needs `bot.database` (an open Database) and `bot.settings` (Settings)."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @property
    def database(self) -> Database:
        return self.bot.database  # type: ignore[attr-defined]

    @property
    def settings(self) -> Settings:
        return self.bot.settings  # type: ignore[attr-defined]

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Anything unexpected still gets an answer, not an endless "thinking…" (discord.py logs the error)."""
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(INTERNAL_ERROR, ephemeral=True)
            else:
                await interaction.response.send_message(INTERNAL_ERROR, ephemeral=True)

    async def run(self, work: Callable[[Session], T]) -> T:
        """One transaction in a worker thread (the voice engine shares this event loop)."""

        def job() -> T:
            with self.database.session() as session:
                return work(session)

        return await asyncio.to_thread(job)

    def may_manage(self, interaction: discord.Interaction) -> bool:
        role_ids = [role.id for role in getattr(interaction.user, "roles", [])]
        return may_manage_leads(interaction.permissions, role_ids, self.settings.leads_role_id)

    async def authorised_guild(self, interaction: discord.Interaction) -> int | None:
        """The guild to work in, or None after telling the user (ephemerally) why not.

        When authorised the interaction is deferred (ephemeral) before any query: Discord drops an interaction
        not answered within 3 s, and a slow database must still reach the user with its own message. Replies
        then go through `interaction.followup`.
        """
        if interaction.guild_id is None:
            await interaction.response.send_message(NOT_IN_GUILD, ephemeral=True)
            return None
        if not self.may_manage(interaction):
            await interaction.response.send_message(REFUSED, ephemeral=True)
            return None
        await interaction.response.defer(ephemeral=True, thinking=True)
        return interaction.guild_id

    @app_commands.command(name="export", description="Download this server's leads as a CSV or JSON file")
    @app_commands.rename(fmt="format")
    @app_commands.describe(fmt="csv opens safely in Excel; json keeps types")
    async def export(self, interaction: discord.Interaction, fmt: ExportFormat) -> None:
        guild_id = await self.authorised_guild(interaction)
        if guild_id is None:
            return

        def build(session: Session) -> tuple[int, bytes | None]:
            # Rendered here in the worker thread too: a big guild's file takes a few hundred ms of CPU.
            records = collect_records(session, guild_id)
            data = render_file(records, fmt)
            return len(records), data if len(data) <= MAX_ATTACHMENT_BYTES else None

        try:
            count, data = await self.run(build)
        except SQLAlchemyError as exc:
            log.error("/leads export failed: %s", db_error_line(exc))
            await interaction.followup.send(STORE_DOWN, ephemeral=True)
            return
        if data is None:
            await interaction.followup.send(
                f"{count} leads make a file too large for Discord; ask an operator to run "
                f"`cap-bot leads export --guild {guild_id}`.",
                ephemeral=True,
            )
            return
        filename = export_filename(fmt, guild_id, datetime.now(UTC))
        log.info("/leads export: %d lead(s) of guild %s by user %s", count, guild_id, interaction.user.id)
        await interaction.followup.send(
            f"{count} lead(s). This file holds personal data: keep it safe.",
            file=discord.File(io.BytesIO(data), filename=filename),
            ephemeral=True,
        )

    @app_commands.command(name="list", description="Browse this server's leads")
    @app_commands.describe(status="only leads with this status", tier="only leads in this tier")
    async def list_command(
        self,
        interaction: discord.Interaction,
        status: StatusChoice | None = None,
        tier: TierChoice | None = None,
    ) -> None:
        guild_id = await self.authorised_guild(interaction)
        if guild_id is None:
            return
        pager = LeadPager(self, interaction, guild_id, status, tier)
        try:
            embed = await pager.load(0)
        except SQLAlchemyError as exc:
            log.error("/leads list failed: %s", db_error_line(exc))
            await interaction.followup.send(STORE_DOWN, ephemeral=True)
            return
        await interaction.followup.send(embed=embed, view=pager, ephemeral=True)

    async def _lead_for(self, interaction: discord.Interaction, lead_id: int, command: str) -> tuple[int, Lead] | None:
        """This guild's lead #lead_id, or None after telling the user why not (refused, store down, no such lead)."""
        guild_id = await self.authorised_guild(interaction)
        if guild_id is None:
            return None
        try:
            lead = await self.run(lambda session: get_lead(session, guild_id, lead_id))
        except SQLAlchemyError as exc:
            log.error("/leads %s failed: %s", command, db_error_line(exc))
            await interaction.followup.send(STORE_DOWN, ephemeral=True)
            return None
        if lead is None:
            await interaction.followup.send(f"No lead #{lead_id} in this server.", ephemeral=True)
            return None
        return guild_id, lead

    @app_commands.command(name="show", description="Show one lead")
    @app_commands.describe(lead_id="the lead's number, as shown by /leads list")
    async def show(self, interaction: discord.Interaction, lead_id: LeadId) -> None:
        found = await self._lead_for(interaction, lead_id, "show")
        if found is None:
            return
        guild_id, lead = found
        try:
            activity = await self.run(lambda session: lead_activity(session, guild_id, lead_id, lead.discord_user_id))
        except SQLAlchemyError as exc:
            log.error("/leads show failed: %s", db_error_line(exc))
            await interaction.followup.send(STORE_DOWN, ephemeral=True)
            return
        await interaction.followup.send(embed=detail_embed(lead, activity), ephemeral=True)

    @app_commands.command(name="delete", description="Delete one lead (asks for confirmation)")
    @app_commands.describe(lead_id="the lead's number, as shown by /leads list")
    async def delete(self, interaction: discord.Interaction, lead_id: LeadId) -> None:
        found = await self._lead_for(interaction, lead_id, "delete")
        if found is None:
            return
        guild_id, lead = found
        view = ConfirmDelete(self, interaction, guild_id, lead_id)
        await interaction.followup.send(
            f"Delete lead #{lead_id} ({_clean(lead.full_name)})? {DELETE_ERASES} This cannot be undone.",
            view=view,
            ephemeral=True,
        )


class _OwnedView(discord.ui.View):
    """Buttons on an ephemeral reply: only its opener may press them, and only while still allowed to.

    Presses are deferred before any query (Discord's 3 s rule) and answered by editing the reply; on
    timeout the buttons are disabled rather than left looking live.
    """

    def __init__(self, cog: Leads, opened_by: discord.Interaction, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.cog = cog
        self.latest = opened_by  # edits go through the newest token: each is valid for 15 minutes only
        self.owner_id = opened_by.user.id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.owner_id:
            await interaction.response.send_message("These buttons are not yours.", ephemeral=True)
            return False
        if not self.cog.may_manage(interaction):  # the role may have been taken away since
            await interaction.response.send_message(REFUSED, ephemeral=True)
            return False
        return True

    async def on_timeout(self) -> None:
        for item in self.children:
            if isinstance(item, discord.ui.Button):
                item.disabled = True
        with contextlib.suppress(discord.HTTPException):  # the reply may be gone (dismissed)
            await self.latest.edit_original_response(**self.timed_out_message())

    def timed_out_message(self) -> dict[str, Any]:
        return {"view": self}


class LeadPager(_OwnedView):
    """Previous/next over one guild's filtered leads."""

    def __init__(
        self, cog: Leads, opened_by: discord.Interaction, guild_id: int, status: str | None, tier: str | None
    ) -> None:
        super().__init__(cog, opened_by, VIEW_TIMEOUT_SECONDS)
        self.guild_id, self.status, self.tier = guild_id, status, tier
        self.page = 0
        self.total = 0

    async def load(self, page: int) -> discord.Embed:
        """Fetch `page` (clamped to what exists now) and set the buttons to match."""

        def fetch(session: Session) -> tuple[int, int, list[Lead]]:
            total = count_leads(session, self.guild_id, status=self.status, tier=self.tier)
            current = clamp_page(page, total)
            rows = list_leads(
                session,
                self.guild_id,
                status=self.status,
                tier=self.tier,
                offset=current * PAGE_SIZE,
                limit=PAGE_SIZE,
            )
            return total, current, rows

        self.total, self.page, leads = await self.cog.run(fetch)
        self.previous_page.disabled = self.page <= 0
        self.next_page.disabled = self.page >= page_count(self.total) - 1
        return list_embed(leads, self.page, self.total, self.status, self.tier)

    async def _turn(self, interaction: discord.Interaction, page: int) -> None:
        await interaction.response.defer()
        self.latest = interaction  # its token edits this same message, and outlives the opener's
        try:
            embed = await self.load(page)
        except SQLAlchemyError as exc:
            log.error("/leads list paging failed: %s", db_error_line(exc))
            await interaction.followup.send(STORE_DOWN, ephemeral=True)
            return
        await interaction.edit_original_response(embed=embed, view=self)

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary)
    async def previous_page(
        self, interaction: discord.Interaction, button: discord.ui.Button[LeadPager]
    ) -> None:
        await self._turn(interaction, self.page - 1)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary)
    async def next_page(self, interaction: discord.Interaction, button: discord.ui.Button[LeadPager]) -> None:
        await self._turn(interaction, self.page + 1)


class ConfirmDelete(_OwnedView):
    def __init__(self, cog: Leads, opened_by: discord.Interaction, guild_id: int, lead_id: int) -> None:
        super().__init__(cog, opened_by, CONFIRM_TIMEOUT_SECONDS)
        self.guild_id, self.lead_id = guild_id, lead_id

    def timed_out_message(self) -> dict[str, Any]:
        return {"content": f"No answer: kept lead #{self.lead_id}.", "view": None}

    @discord.ui.button(label="Delete", style=discord.ButtonStyle.danger)
    async def confirm(
        self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmDelete]
    ) -> None:
        self.stop()
        await interaction.response.defer()
        try:
            deleted = await self.cog.run(lambda session: delete_lead(session, self.guild_id, self.lead_id))
        except SQLAlchemyError as exc:
            log.error("/leads delete failed: %s", db_error_line(exc))
            await interaction.edit_original_response(content=STORE_DOWN + " Nothing was deleted.", view=None)
            return
        if deleted:
            log.info(
                "lead %s of guild %s deleted by user %s", self.lead_id, self.guild_id, interaction.user.id
            )
        text = f"Lead #{self.lead_id} deleted." if deleted else f"Lead #{self.lead_id} was already gone."
        await interaction.edit_original_response(content=text, view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(
        self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmDelete]
    ) -> None:
        self.stop()
        await interaction.response.edit_message(content=f"Kept lead #{self.lead_id}.", view=None)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Leads(bot))
