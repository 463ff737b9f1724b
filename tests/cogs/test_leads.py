"""/leads with fake interactions: mocks bound to the real discord.py classes, a real per-test database."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import discord
import pytest
from discord.ext import commands
from sqlalchemy.exc import OperationalError

import cogs.leads
from bot.storage.database import Database
from bot.storage.lead_activity import LeadActivity, lead_activity
from bot.storage.leads import get_lead, upsert_lead
from cogs.leads import (
    NOT_IN_GUILD,
    PAGE_SIZE,
    REFUSED,
    STORE_DOWN,
    ConfirmDelete,
    LeadPager,
    Leads,
    clamp_page,
    lead_line,
    may_manage_leads,
    page_count,
)
from tests.bot.storage.helpers import fresh_database
from tests.bot.tools.helpers import test_settings

GUILD, OTHER_GUILD = 700, 800
STAFF, OTHER_STAFF = 1, 2
LEADS_ROLE = 4242


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with fresh_database(tmp_path) as database:
        yield database


@pytest.fixture
def cog(database: Database) -> Leads:
    bot = MagicMock(spec=commands.Bot)
    bot.database = database
    bot.settings = test_settings(leads_role_id=LEADS_ROLE)
    return Leads(bot)


def interaction(
    guild_id: int | None = GUILD, *, user_id: int = STAFF, manage: bool = True, roles: tuple[int, ...] = ()
) -> MagicMock:
    fake = MagicMock(spec=discord.Interaction)
    fake.guild_id = guild_id
    fake.permissions = discord.Permissions(manage_guild=manage)
    user = MagicMock(spec=discord.Member)
    user.id = user_id
    user.roles = [MagicMock(spec=discord.Role, id=role) for role in roles]
    fake.user = user
    fake.response = MagicMock(spec=discord.InteractionResponse)
    fake.followup = MagicMock(spec=discord.Webhook)
    return fake


def add_leads(database: Database, guild: int, count: int, **fields: Any) -> list[int]:
    ids = []
    with database.session() as session:
        for n in range(count):
            lead, _ = upsert_lead(
                session, guild, {"full_name": f"Lead {n}", **fields}, discord_user_id=guild * 1000 + n
            )
            ids.append(lead.id)
    return ids


def sent(fake: MagicMock) -> dict[str, Any]:
    """The kwargs (plus content) of the one reply the command made: a refusal straight away, or a followup
    after an ephemeral defer that came before any query (Discord's 3 s rule)."""
    if fake.response.send_message.await_count:
        fake.response.send_message.assert_awaited_once()
        fake.followup.send.assert_not_awaited()
        args, kwargs = fake.response.send_message.await_args
    else:
        fake.response.defer.assert_awaited_once_with(ephemeral=True, thinking=True)
        fake.followup.send.assert_awaited_once()
        args, kwargs = fake.followup.send.await_args
    return {"content": args[0] if args else kwargs.get("content"), **kwargs}


# --- pure decisions -----------------------------------------------------------------------------------


def test_who_may_manage_leads() -> None:
    assert may_manage_leads(discord.Permissions(manage_guild=True), [], None)
    assert may_manage_leads(discord.Permissions(administrator=True), [], None)
    assert not may_manage_leads(discord.Permissions(send_messages=True), [LEADS_ROLE], None)
    assert may_manage_leads(discord.Permissions.none(), [7, LEADS_ROLE], LEADS_ROLE)
    assert not may_manage_leads(discord.Permissions.none(), [7], LEADS_ROLE)
    assert not may_manage_leads(None, [], LEADS_ROLE)


@pytest.mark.parametrize(("total", "pages"), [(0, 1), (1, 1), (PAGE_SIZE, 1), (PAGE_SIZE + 1, 2), (95, 10)])
def test_page_count(total: int, pages: int) -> None:
    assert page_count(total) == pages


def test_clamp_page() -> None:
    assert clamp_page(-3, 25) == 0 and clamp_page(7, 25) == 2 and clamp_page(1, 0) == 0


def test_lead_lines_are_inert() -> None:
    from bot.storage.models import Lead

    lead = Lead(id=3, guild_id=1, full_name="**@everyone** _x_", email="a@example.com", status="new")
    line = lead_line(lead)
    assert "@\u200beveryone" in line and "\\*\\*" in line


def test_the_group_is_guild_only_and_defaults_to_manage_server(cog: Leads) -> None:
    group = cog.app_command
    assert group.name == "leads" and group.guild_only
    assert group.default_permissions == discord.Permissions(manage_guild=True)
    assert sorted(command.name for command in group.commands) == ["delete", "export", "list", "show"]
    export = group.get_command("export")
    options = [(p.display_name, [c.value for c in p.choices]) for p in export.parameters]
    assert options == [("format", ["csv", "json"])]


@pytest.mark.parametrize("name", ["show", "delete"])
def test_lead_ids_are_bounded_to_what_the_database_holds(cog: Leads, name: str) -> None:
    [lead_id] = cog.app_command.get_command(name).parameters
    assert (lead_id.name, lead_id.min_value, lead_id.max_value) == ("lead_id", 1, 2**31 - 1)  # int4


# --- permission and guild checks ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["export", "list_command", "show", "delete"])
async def test_members_without_permission_are_refused_ephemerally(cog: Leads, database: Database, command):
    add_leads(database, GUILD, 1)
    fake = interaction(manage=False, roles=(99,))
    args = {"export": {"fmt": "csv"}, "show": {"lead_id": 1}, "delete": {"lead_id": 1}}.get(command, {})
    await getattr(cog, command).callback(cog, fake, **args)
    reply = sent(fake)
    assert reply["content"] == REFUSED and reply["ephemeral"] is True
    fake.followup.send.assert_not_awaited()
    fake.response.defer.assert_not_awaited()


async def test_the_leads_role_is_enough(cog: Leads, database: Database) -> None:
    add_leads(database, GUILD, 2)
    fake = interaction(manage=False, roles=(LEADS_ROLE,))
    await cog.list_command.callback(cog, fake)
    assert "embed" in sent(fake)


async def test_outside_a_guild_is_refused(cog: Leads) -> None:
    fake = interaction(guild_id=None)
    await cog.show.callback(cog, fake, lead_id=1)
    assert sent(fake)["content"] == NOT_IN_GUILD


# --- export -------------------------------------------------------------------------------------------


async def test_export_csv_is_an_ephemeral_attachment_of_this_guild_only(cog: Leads, database: Database):
    add_leads(database, GUILD, 2, email="lead@example.com")
    with database.session() as session:
        upsert_lead(session, GUILD, {"full_name": '=HYPERLINK("http://evil")'}, discord_user_id=55)
    add_leads(database, OTHER_GUILD, 3)
    fake = interaction()
    await cog.export.callback(cog, fake, fmt="csv")
    fake.response.defer.assert_awaited_once_with(ephemeral=True, thinking=True)
    fake.followup.send.assert_awaited_once()
    kwargs = fake.followup.send.await_args.kwargs
    assert kwargs["ephemeral"] is True
    attachment: discord.File = kwargs["file"]
    assert attachment.filename.startswith(f"cap-leads-guild-{GUILD}-")
    assert attachment.filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(attachment.fp.getvalue().decode("utf-8-sig"))))
    assert len(rows) == 3 and {row["guild_id"] for row in rows} == {str(GUILD)}
    assert '\'=HYPERLINK("http://evil")' in {row["full_name"] for row in rows}


async def test_export_json(cog: Leads, database: Database) -> None:
    add_leads(database, GUILD, 1)
    add_leads(database, OTHER_GUILD, 1)
    fake = interaction()
    await cog.export.callback(cog, fake, fmt="json")
    attachment = fake.followup.send.await_args.kwargs["file"]
    records = json.loads(attachment.fp.getvalue())
    assert attachment.filename.endswith(".json") and [r["guild_id"] for r in records] == [str(GUILD)]


async def test_export_renders_off_the_event_loop_and_refuses_a_file_too_large(
    cog: Leads, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_leads(database, GUILD, 3)
    loops: list[bool] = []

    def render_file(records: list[dict[str, Any]], fmt: str) -> bytes:
        try:
            asyncio.get_running_loop()
            loops.append(True)  # on the voice engine's event loop
        except RuntimeError:
            loops.append(False)
        return real_render_file(records, fmt)

    real_render_file = cogs.leads.render_file
    monkeypatch.setattr(cogs.leads, "render_file", render_file)
    monkeypatch.setattr(cogs.leads, "MAX_ATTACHMENT_BYTES", 100)
    fake = interaction()
    await cog.export.callback(cog, fake, fmt="json")
    assert loops == [False]
    fake.followup.send.assert_awaited_once()
    args, kwargs = fake.followup.send.await_args
    assert "too large for Discord" in args[0] and "file" not in kwargs


# --- list, show, delete -------------------------------------------------------------------------------


async def test_list_pages_through_this_guilds_leads(cog: Leads, database: Database) -> None:
    add_leads(database, GUILD, PAGE_SIZE + 3)
    add_leads(database, OTHER_GUILD, 4)
    fake = interaction()
    await cog.list_command.callback(cog, fake)
    reply = sent(fake)
    assert reply["ephemeral"] is True
    embed: discord.Embed = reply["embed"]
    assert embed.description.count("\n") == PAGE_SIZE - 1
    assert f"{PAGE_SIZE + 3} lead(s) · page 1/2" in embed.footer.text
    pager: LeadPager = reply["view"]
    assert pager.previous_page.disabled and not pager.next_page.disabled

    click = interaction()
    await pager.next_page.callback(click)
    click.response.defer.assert_awaited_once_with()
    click.edit_original_response.assert_awaited_once()
    second = click.edit_original_response.await_args.kwargs["embed"]
    assert "page 2/2" in second.footer.text and second.description.count("\n") == 2
    assert pager.next_page.disabled and not pager.previous_page.disabled


async def test_list_filters(cog: Leads, database: Database) -> None:
    ids = add_leads(database, GUILD, 3)
    with database.session() as session:
        lead = get_lead(session, GUILD, ids[0])
        lead.status, lead.tier = "qualified", "A"
        session.add(lead)
    fake = interaction()
    await cog.list_command.callback(cog, fake, status="qualified", tier="A")
    embed = sent(fake)["embed"]
    assert f"#{ids[0]}" in embed.description and f"#{ids[1]}" not in embed.description
    assert "status qualified, tier A · 1 lead(s)" in embed.footer.text


async def test_only_the_opener_may_turn_pages(cog: Leads, database: Database) -> None:
    add_leads(database, GUILD, 1)
    fake = interaction()
    await cog.list_command.callback(cog, fake)
    pager: LeadPager = sent(fake)["view"]
    stranger = interaction(user_id=OTHER_STAFF)
    assert await pager.interaction_check(stranger) is False
    assert sent(stranger)["ephemeral"] is True
    demoted = interaction(manage=False)  # the opener, after losing Manage Server
    assert await pager.interaction_check(demoted) is False
    assert sent(demoted)["content"] == REFUSED
    assert await pager.interaction_check(interaction()) is True


async def test_buttons_are_disabled_when_they_time_out(cog: Leads, database: Database) -> None:
    [lead_id] = add_leads(database, GUILD, PAGE_SIZE + 1)[:1]
    fake = interaction()
    await cog.list_command.callback(cog, fake)
    pager: LeadPager = sent(fake)["view"]
    await pager.on_timeout()
    fake.edit_original_response.assert_awaited_once_with(view=pager)
    assert pager.previous_page.disabled and pager.next_page.disabled

    fake = interaction()
    await cog.list_command.callback(cog, fake)
    pager = sent(fake)["view"]
    click = interaction()
    await pager.next_page.callback(click)
    await pager.on_timeout()  # after paging: the opener's token may be over 15 minutes old
    click.edit_original_response.assert_awaited_with(view=pager)
    fake.edit_original_response.assert_not_awaited()

    fake = interaction()
    await cog.delete.callback(cog, fake, lead_id=lead_id)
    await sent(fake)["view"].on_timeout()
    fake.edit_original_response.assert_awaited_once_with(content=f"No answer: kept lead #{lead_id}.", view=None)


async def test_show_is_scoped_to_the_guild(cog: Leads, database: Database) -> None:
    [mine] = add_leads(database, GUILD, 1, email="ann@example.com", loan_amount=250_000.0)
    [theirs] = add_leads(database, OTHER_GUILD, 1)
    fake = interaction()
    await cog.show.callback(cog, fake, lead_id=mine)
    embed = sent(fake)["embed"]
    assert sent(fake)["ephemeral"] is True and embed.title == f"Lead #{mine}: Lead 0"
    fields = {field.name: field.value for field in embed.fields}
    assert fields["Email"] == "ann@example.com" and fields["Loan amount"] == "$250,000"
    other = interaction()
    await cog.show.callback(cog, other, lead_id=theirs)
    assert sent(other)["content"] == f"No lead #{theirs} in this server." and "embed" not in sent(other)


async def test_delete_asks_first_then_deletes(cog: Leads, database: Database) -> None:
    [lead_id] = add_leads(database, GUILD, 1)
    add_activity(database, GUILD, lead_id)
    fake = interaction()
    await cog.delete.callback(cog, fake, lead_id=lead_id)
    reply = sent(fake)
    assert reply["ephemeral"] is True and "cannot be undone" in reply["content"]
    assert "offers, deal analyses, booked calls, calls and their transcripts" in reply["content"]  # says what goes
    view: ConfirmDelete = reply["view"]
    with database.session() as session:
        assert get_lead(session, GUILD, lead_id) is not None  # nothing happens before the click
    click = interaction()
    await view.confirm.callback(click)
    click.response.defer.assert_awaited_once_with()
    click.edit_original_response.assert_awaited_once_with(content=f"Lead #{lead_id} deleted.", view=None)
    with database.session() as session:
        assert get_lead(session, GUILD, lead_id) is None
        assert lead_activity(session, GUILD, lead_id) == LeadActivity([], [], None, [], [])  # nothing derived is left


async def test_delete_can_be_cancelled(cog: Leads, database: Database) -> None:
    [lead_id] = add_leads(database, GUILD, 1)
    fake = interaction()
    await cog.delete.callback(cog, fake, lead_id=lead_id)
    click = interaction()
    await sent(fake)["view"].cancel.callback(click)
    click.response.edit_message.assert_awaited_once_with(content=f"Kept lead #{lead_id}.", view=None)
    with database.session() as session:
        assert get_lead(session, GUILD, lead_id) is not None


async def test_delete_cannot_reach_another_guild(cog: Leads, database: Database) -> None:
    [theirs] = add_leads(database, OTHER_GUILD, 1)
    fake = interaction()
    await cog.delete.callback(cog, fake, lead_id=theirs)
    assert sent(fake)["content"] == f"No lead #{theirs} in this server." and "view" not in sent(fake)
    with database.session() as session:
        assert get_lead(session, OTHER_GUILD, theirs) is not None


class DownDatabase(Database):
    """Every session fails as an unreachable database server would."""

    @contextmanager
    def session(self) -> Iterator[Any]:
        raise OperationalError("SELECT", {}, Exception("connection refused"))
        yield  # pragma: no cover


@pytest.mark.parametrize("command", ["export", "list_command", "show", "delete"])
async def test_a_database_outage_is_a_polite_ephemeral_reply(cog: Leads, command: str) -> None:
    cog.bot.database = DownDatabase("sqlite://")
    fake = interaction()
    args = {"export": {"fmt": "csv"}, "show": {"lead_id": 1}, "delete": {"lead_id": 1}}.get(command, {})
    await getattr(cog, command).callback(cog, fake, **args)
    if command == "export":
        fake.followup.send.assert_awaited_once_with(STORE_DOWN, ephemeral=True)
    else:
        assert sent(fake) == {"content": STORE_DOWN, "ephemeral": True}


@pytest.mark.parametrize("answered", [False, True])
async def test_an_unexpected_error_still_gets_an_answer(cog: Leads, answered: bool) -> None:
    fake = interaction()
    fake.response.is_done.return_value = answered
    await cog.cog_app_command_error(fake, discord.app_commands.AppCommandError("boom"))
    reply = fake.followup.send if answered else fake.response.send_message
    reply.assert_awaited_once_with(cogs.leads.INTERNAL_ERROR, ephemeral=True)


def add_activity(database: Database, guild: int, lead_id: int) -> None:
    """A finished call, a deal analysis, two offers and a booked call for the lead."""
    from datetime import timedelta

    from bot.storage.models import Conversation, DealAnalysis, Disclosure, Offer, ScheduledCall, utcnow

    now = utcnow()
    with database.session() as session:
        conversation = Conversation(
            guild_id=guild, lead_id=lead_id, started_at=now - timedelta(minutes=12), ended_at=now,
            participants=["4321"], turns=9, estimated_cost_usd=0.4213,
        )
        session.add(conversation)
        session.flush()
        session.add(Disclosure(guild_id=guild, conversation_id=conversation.id, discord_user_id=4321,
                               wording_version="2026-12-v1", consent="yes"))
        session.add(
            DealAnalysis(
                guild_id=guild, lead_id=lead_id, program="dscr_rental", ltv=0.75, dscr=1.31, fits_program=True,
                verdict="Fits DSCR rental.",
            )
        )
        for amount in (300_000.0, 318_000.0):
            session.add(
                Offer(
                    guild_id=guild, lead_id=lead_id, program="dscr_rental", amount=amount, max_ltv=0.75,
                    rate_min=7.25, rate_max=7.75, points=1.0, term_months=360, expires_at=now + timedelta(days=14),
                )
            )
            session.flush()
        session.add(
            ScheduledCall(
                guild_id=guild, lead_id=lead_id, starts_at=now + timedelta(days=1), duration_minutes=30,
                timezone="America/Chicago", topic="Rate lock", ics_uid=f"uid-{lead_id}@cap-bot",
            )
        )


async def test_show_lists_the_calls_analyses_latest_offer_and_booked_calls(cog: Leads, database: Database) -> None:
    [lead_id] = add_leads(database, GUILD, 1, email="ann@example.com")
    add_activity(database, GUILD, lead_id)
    fake = interaction()
    await cog.show.callback(cog, fake, lead_id=lead_id)
    fields = {field.name: field.value for field in sent(fake)["embed"].fields}
    assert "12 min" in fields["Calls"] and "<@4321>" in fields["Calls"] and "$0.42" in fields["Calls"]
    assert "dscr_rental" in fields["Deal analyses"] and "DSCR 1.31" in fields["Deal analyses"]
    assert "$318,000" in fields["Latest offer"] and "7.25" in fields["Latest offer"]
    assert "Rate lock" in fields["Booked calls"] and "CST" in fields["Booked calls"]
    assert "<@4321>" in fields["Disclosures"] and "2026-12-v1" in fields["Disclosures"]
    assert "consent yes" in fields["Disclosures"]
