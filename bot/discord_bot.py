"""CapBot: the Discord application. Loads the cogs, owns the database, syncs the slash commands."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import discord
from discord.ext import commands

from bot.heartbeat import beat, gateway_alive
from bot.metrics import CapMetrics
from bot.settings import Settings
from bot.storage.database import Database
from bot.storage.retention import purge_periodically
from bot.webhooks import WebhookSender

log = logging.getLogger(__name__)

EXTENSIONS: Final = ("cogs.voice", "cogs.leads")
INTERNAL_ERROR_REPLY: Final = "Something went wrong on my side (it is in the bot's log). Please try again."


def cap_intents() -> discord.Intents:
    """Guilds and voice states only: no privileged intents (members in voice are cached via voice states)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.voice_states = True
    return intents


class CapBot(commands.AutoShardedBot):
    """Cap on Discord. The constructor does no I/O; `setup_hook` opens the database and loads the cogs."""

    def __init__(
        self, settings: Settings, *, database: Database | None = None, extensions: tuple[str, ...] = EXTENSIONS
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,  # slash commands only; no message content intent
            intents=cap_intents(),
            help_command=None,
            shard_count=settings.shard_count,
            shard_ids=settings.shard_ids,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings = settings
        self.database = database or Database(settings.database_url, migrate=settings.auto_migrate)
        self.extensions_to_load = extensions
        self.failed_extensions: dict[str, str] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self.metrics = CapMetrics()  # this process's registry: each shard process is scraped on its own
        self.metrics_server: Any = None
        self._webhooks: asyncio.Task[None] | None = None
        self.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]

    async def setup_hook(self) -> None:
        self.database.open()
        for name in self.extensions_to_load:
            try:
                await self.load_extension(name)
            except Exception as exc:  # one broken feature must not keep the others offline
                self.failed_extensions[name] = f"{type(exc).__name__}: {exc}"
                log.exception("could not load extension %s", name)
        if self.owns_command_sync:
            try:
                await self.sync_commands()
            except discord.HTTPException as exc:  # Discord 5xx/429: the commands synced last time still work
                log.error("could not sync application commands (%s); continuing with the last synced set", exc)
        if self.settings.metrics_port is not None:
            self.metrics_server = self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)
        if self.owns_command_sync:  # one process purges (and delivers webhooks) for all shards
            self._retention = asyncio.create_task(
                purge_periodically(self.database, self.settings.transcript_retention_days), name="cap-retention"
            )
            if self.settings.webhook_url and self.settings.webhook_secret is not None:
                sender = WebhookSender(
                    self.database, self.settings.webhook_url, self.settings.webhook_secret.get_secret_value().strip()
                )
                self._webhooks = asyncio.create_task(sender.run(), name="cap-webhooks")
        if self.settings.heartbeat_file is not None:
            self._heartbeat = asyncio.create_task(
                beat(self.settings.heartbeat_file, lambda: gateway_alive(self)), name="cap-heartbeat"
            )

    @property
    def owns_command_sync(self) -> bool:
        """Only the process running shard 0 syncs slash commands, so N shard processes make one sync."""
        return not self.settings.shard_ids or 0 in self.settings.shard_ids

    async def sync_commands(self) -> list[discord.app_commands.AppCommand]:
        """To DEV_GUILD_ID at once when set (copying the global commands there), else globally."""
        if self.settings.dev_guild_id:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d application commands to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global application commands (they can take up to an hour to appear)", len(synced))
        return synced

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: discord.app_commands.AppCommandError
    ) -> None:
        """One answer for every slash command that failed: an unexpected error must not leave "thinking…"."""
        if isinstance(error, discord.app_commands.CheckFailure):
            reply = str(error) or "You can't use this command here."
        else:
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error("/%s failed", command, exc_info=error)
            reply = INTERNAL_ERROR_REPLY
        try:
            if interaction.response.is_done():  # deferred ("thinking…") or already answered
                await interaction.followup.send(reply, ephemeral=True)
            else:
                await interaction.response.send_message(reply, ephemeral=True)
        except discord.HTTPException as exc:  # the interaction expired meanwhile
            log.warning("could not tell the user that /%s failed: %s", getattr(interaction.command, "name", "?"), exc)

    async def on_ready(self) -> None:
        log.info("logged in as %s (%s) in %d guild(s)", self.user, getattr(self.user, "id", "?"), len(self.guilds))

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()  # a closing bot is no longer healthy
        for task in (self._retention, self._webhooks):
            if task is not None:
                task.cancel()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        try:
            await super().close()  # unloads the cogs, which end their calls
        finally:
            self.database.close()
