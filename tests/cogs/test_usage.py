"""/cap usage (guild admins, one guild, this month by day) and `cap-bot usage` (operators, every guild)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock

import discord
import pytest

from bot.cli import main
from bot.storage.database import Database
from bot.storage.models import Conversation, utcnow
from bot.storage.usage import month_start
from cogs.voice import Voice
from tests.bot.storage.helpers import fresh_database
from tests.cogs.test_voice import GUILD_ID, make_interaction

OTHER_GUILD = 6


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with fresh_database(tmp_path) as database:
        yield database


def add_call(database: Database, guild: int, minutes: float, cost: float, *, days_ago: int = 0) -> None:
    start = max(utcnow() - timedelta(days=days_ago), month_start(utcnow()))
    with database.session() as session:
        session.add(Conversation(guild_id=guild, started_at=start, ended_at=start + timedelta(minutes=minutes),
                                 turns=4, audio_input_tokens=1000, audio_output_tokens=500, transcription_tokens=50,
                                 estimated_cost_usd=cost))


def cog_with(database: Database, **settings: object) -> Voice:
    bot = MagicMock(spec=discord.ext.commands.Bot)
    bot.settings = SimpleNamespace(**{"monthly_budget_usd": None, **settings})
    bot.database = database
    return Voice(bot)


async def test_admins_see_this_guilds_month_by_day(database: Database) -> None:
    add_call(database, GUILD_ID, 12, 0.42)
    add_call(database, GUILD_ID, 3, 0.08)
    add_call(database, OTHER_GUILD, 60, 9.99)
    cog = cog_with(database, monthly_budget_usd=25.0)
    interaction = make_interaction(None)
    interaction.permissions = discord.Permissions(manage_guild=True)
    await cog.usage.callback(cog, interaction)
    interaction.response.defer.assert_awaited_once_with(ephemeral=True, thinking=True)
    text = interaction.followup.send.await_args.args[0]
    assert interaction.followup.send.await_args.kwargs["ephemeral"] is True
    assert "2 call(s)" in text and "15.0 min" in text and "$0.50" in text and "3,100 tokens (100 transcription)" in text
    assert "Monthly budget: $25.00 · left $24.50" in text
    assert "9.99" not in text  # another guild's spending is not shown


async def test_members_without_manage_server_are_refused(database: Database) -> None:
    cog = cog_with(database)
    interaction = make_interaction(None)
    interaction.permissions = discord.Permissions(connect=True)
    await cog.usage.callback(cog, interaction)
    args, kwargs = interaction.response.send_message.await_args
    assert "Manage Server" in args[0] and kwargs["ephemeral"] is True


def test_operators_see_every_guild(database: Database, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path) -> None:
    add_call(database, GUILD_ID, 12, 0.42)
    add_call(database, OTHER_GUILD, 60, 9.99)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database.url)
    assert main(["usage", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["guild_id"], row["calls"], row["estimated_cost_usd"]) for row in rows] == [
        (str(OTHER_GUILD), 1, 9.99), (str(GUILD_ID), 1, 0.42)]
    assert main(["usage"]) == 0
    table = capsys.readouterr().out
    assert "10.41" in table and str(OTHER_GUILD) in table
    assert main(["usage", "--month", "December"]) == 1
    assert "--month must look like 2026-12" in capsys.readouterr().err
