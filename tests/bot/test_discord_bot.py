"""CapBot: no I/O in the constructor, minimal intents, extensions loaded (a broken one logged), commands synced."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from unittest.mock import AsyncMock, MagicMock

import discord
import pytest
from discord.ext import commands

from bot.discord_bot import EXTENSIONS, INTERNAL_ERROR_REPLY, CapBot, cap_intents
from bot.settings import load_settings
from bot.storage.database import Database


def make_bot(**overrides: object) -> CapBot:
    settings = load_settings(database_url="sqlite://", **overrides)
    return CapBot(settings, extensions=(*EXTENSIONS, "cogs.does_not_exist"))


def test_intents_are_guilds_and_voice_states_only() -> None:
    intents = cap_intents()
    assert intents.guilds and intents.voice_states
    assert intents.value == discord.Intents(guilds=True, voice_states=True).value
    assert not (intents.members or intents.presences or intents.message_content)


async def test_constructor_does_no_io_and_exposes_settings_and_database() -> None:
    bot = make_bot(shard_count=2, shard_ids=[1])
    assert isinstance(bot.database, Database) and bot.database._engine is None
    assert bot.settings.database_url == "sqlite://"
    assert (bot.shard_count, bot.shard_ids) == (2, [1])


async def test_setup_hook_opens_the_database_loads_cogs_and_syncs_globally(caplog) -> None:
    bot = make_bot()
    bot.tree.sync = AsyncMock(return_value=[])  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        await bot.setup_hook()
    try:
        assert bot.database._engine is not None
        assert {"Voice", "Leads"} <= set(bot.cogs)
        assert "cogs.does_not_exist" in bot.failed_extensions
        assert any("cogs.does_not_exist" in record.getMessage() for record in caplog.records)
        assert {command.name for command in bot.tree.get_commands()} >= {"cap", "leads"}
        cap = bot.tree.get_command("cap")
        assert {sub.name for sub in cap.commands} == {  # type: ignore[union-attr]
            "join", "leave", "status", "ask", "usage"}
        bot.tree.sync.assert_awaited_once_with()
    finally:
        bot.database.close()


async def test_dev_guild_gets_the_commands_at_once() -> None:
    bot = make_bot(dev_guild_id=1234)
    bot.tree.sync = AsyncMock(return_value=[])  # type: ignore[method-assign]
    await bot.setup_hook()
    try:
        guild = bot.tree.sync.await_args.kwargs["guild"]
        assert guild.id == 1234
        assert {command.name for command in bot.tree.get_commands(guild=guild)} >= {"cap", "leads"}
    finally:
        bot.database.close()


async def test_a_failed_command_sync_is_logged_and_the_bot_starts(caplog) -> None:
    bot = make_bot()
    response = type("Response", (), {"status": 503, "reason": "Service Unavailable"})()
    bot.tree.sync = AsyncMock(side_effect=discord.HTTPException(response, "upstream"))  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        await bot.setup_hook()
    try:
        assert {"Voice", "Leads"} <= set(bot.cogs)
        assert "could not sync application commands" in caplog.text
    finally:
        bot.database.close()


@pytest.mark.parametrize("shard_ids, syncs", [(None, True), ([0, 1], True), ([2, 3], False)])
async def test_only_the_process_with_shard_0_syncs_commands(shard_ids: list[int] | None, syncs: bool) -> None:
    bot = make_bot(shard_count=4, shard_ids=shard_ids) if shard_ids else make_bot()
    bot.tree.sync = AsyncMock(return_value=[])  # type: ignore[method-assign]
    await bot.setup_hook()
    try:
        assert bot.tree.sync.await_count == (1 if syncs else 0)
    finally:
        bot.database.close()


async def test_the_heartbeat_runs_with_the_bot_and_stops_when_it_closes(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(commands.AutoShardedBot, "close", AsyncMock())  # no gateway to close here
    bot = make_bot(heartbeat_file=str(tmp_path / "beat"))
    bot.tree.sync = AsyncMock(return_value=[])  # type: ignore[method-assign]
    await bot.setup_hook()
    heartbeat = bot._heartbeat
    assert heartbeat is not None and not heartbeat.done()
    await bot.close()
    await asyncio.sleep(0)
    assert heartbeat.cancelled()
    assert not (tmp_path / "beat").exists(), "a bot that never reached Discord is not alive"


async def test_transcript_retention_runs_with_the_bot_and_stops_when_it_closes(monkeypatch) -> None:
    monkeypatch.setattr(commands.AutoShardedBot, "close", AsyncMock())
    bot = make_bot(transcript_retention_days=30)
    bot.tree.sync = AsyncMock(return_value=[])  # type: ignore[method-assign]
    await bot.setup_hook()
    retention = bot._retention
    assert retention is not None and not retention.done()
    await bot.close()
    await asyncio.sleep(0)
    assert retention.cancelled()


@pytest.mark.parametrize("deferred", [True, False])
async def test_an_unexpected_command_error_still_gets_an_answer(deferred: bool, caplog) -> None:
    """No "thinking…" forever: a command that raised after deferring (e.g. /cap leave) gets a follow-up."""
    bot = make_bot()
    interaction = MagicMock(spec=discord.Interaction)
    interaction.command = bot.tree.get_command("cap") or MagicMock(qualified_name="cap leave")
    interaction.response = MagicMock(spec=discord.InteractionResponse)
    interaction.response.is_done.return_value = deferred
    interaction.response.send_message = AsyncMock()
    interaction.followup = MagicMock(spec=discord.Webhook)
    interaction.followup.send = AsyncMock()
    error = discord.app_commands.CommandInvokeError(MagicMock(), RuntimeError("boom"))
    with caplog.at_level(logging.ERROR):
        await bot.tree.on_error(interaction, error)
    answer = interaction.followup.send if deferred else interaction.response.send_message
    answer.assert_awaited_once_with(INTERNAL_ERROR_REPLY, ephemeral=True)
    assert any("failed" in record.getMessage() for record in caplog.records)


def test_the_readme_invite_link_asks_for_exactly_what_cap_uses() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    wanted = discord.Permissions(connect=True, speak=True, send_messages=True, attach_files=True,
                                 use_application_commands=True)
    assert f"scope=bot+applications.commands&permissions={wanted.value}" in readme
