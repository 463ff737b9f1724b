"""/cap join, /cap leave, /cap status: Cap on a voice call. The call itself lives in bot.voice.call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy.exc import SQLAlchemyError

from bot.shutdown import end_calls
from bot.storage.errors import db_error_line
from bot.usage_report import guild_usage_text
from bot.voice.call import CallError, VoiceCall, join_refusal, leave_refusal

log = logging.getLogger(__name__)

NOT_IN_GUILD = "Use this in a server."
NOT_ON_A_CALL = "I'm not on a call in this server. Use `/cap join` from a voice channel."
USAGE_REFUSED = "You need the Manage Server permission to see Cap's usage and spending."


def format_status(status: dict[str, Any]) -> str:
    """The /cap status reply: channel, time connected, turns, latency, barge-ins, tokens and cost."""
    minutes, seconds = divmod(int(status.get("connected_seconds", 0)), 60)
    hours, minutes = divmod(minutes, 60)
    connected = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    latency = status.get("median_reply_latency_ms")
    lines = [
        f"**On a call in** {status['channel']} for {connected}",
        *([f"Replies: {status['reply_mode']}"] if status.get("reply_mode") else []),
        f"Turns: {status.get('turns', 0)} · Barge-ins: {status.get('barge_ins', 0)}",
        f"Reply latency (median): {f'{latency} ms' if latency is not None else 'n/a'}",
        f"Tokens: {status.get('total_tokens', 0):,} · Estimated cost: ${status.get('estimated_cost_usd', 0.0):.4f}",
    ]
    if status.get("addressed_turns") or status.get("unaddressed_turns"):
        lines.append(f"With several people: {status.get('addressed_turns', 0)} turns for Cap · "
                     f"{status.get('unaddressed_turns', 0)} only listened to")
    if status.get("failed_responses"):
        lines.append(f"Replies the service failed: {status['failed_responses']} (see the bot's log)")
    voice = status.get("voice") or {}
    if voice:
        concealed = voice.get("fec", 0) + voice.get("plc", 0)
        unopened = sum(count for name, count in voice.items()
                       if name.startswith("dave_") and name not in ("dave_passthrough", "dave_decrypted"))
        lines.append(f"Voice in: {voice.get('packets', 0):,} packets · {voice.get('decoded', 0):,} frames decoded · "
                     f"{concealed:,} concealed · {unopened:,} DAVE frames not opened")
        if voice.get("voice_gateway_deaths"):
            lines.append(f"Voice gateway: its reader stopped {voice['voice_gateway_deaths']} time(s); reconnected "
                         f"{voice.get('voice_gateway_revivals', 0)} time(s) (see the bot's log)")
    return "\n".join(lines)


@app_commands.guild_only()
class Voice(commands.GroupCog, group_name="cap", group_description="Talk with Cap, the loan companion, in voice"):
    """Needs `bot.database` (an open Database) and `bot.settings` (Settings). One call per guild."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.calls: dict[int, VoiceCall] = {}

    async def cog_unload(self) -> None:
        """The bot is closing (SIGTERM): every call says goodbye, leaves, flushes and closes, all at once."""
        await end_calls(self.calls.values())

    def busy_channel(self, guild: discord.Guild) -> discord.abc.GuildChannel | None:
        """The channel Cap is on a call in (or connecting to) in this guild, if any."""
        call = self.calls.get(guild.id)
        if call is not None:
            return call.current_channel
        voice_client = guild.voice_client
        return getattr(voice_client, "channel", None)

    @app_commands.command(name="join", description="Cap joins your voice channel and talks with you")
    @app_commands.describe(mode="talk: Cap answers (default); listen: Cap only takes notes and fills the lead")
    @app_commands.choices(mode=[app_commands.Choice(name="talk", value="talk"),
                                app_commands.Choice(name="listen", value="listen")])
    async def join(self, interaction: discord.Interaction, mode: str = "talk") -> None:
        guild = interaction.guild
        caller = interaction.user
        if guild is None or not isinstance(caller, discord.Member):
            await interaction.response.send_message(NOT_IN_GUILD, ephemeral=True)
            return
        refusal = join_refusal(caller, self.busy_channel(guild))
        if refusal is not None:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        assert caller.voice is not None and caller.voice.channel is not None
        channel = caller.voice.channel
        call = VoiceCall(
            channel,  # type: ignore[arg-type]
            settings=self.bot.settings,  # type: ignore[attr-defined]
            database=self.bot.database,  # type: ignore[attr-defined]
            on_end=self._call_ended,
            listen_only=mode == "listen",
            metrics=getattr(self.bot, "metrics", None),
            started_by=caller.id,
        )
        self.calls[guild.id] = call  # claimed before any await: a second /cap join now sees it busy
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await call.start()
        except CallError as exc:
            self._call_ended(call)
            await self._reply_later(interaction, f"I couldn't join: {exc}")
            return
        except Exception:
            self._call_ended(call)
            log.exception("joining %s failed", channel)
            await self._reply_later(interaction, "I couldn't join because of an internal error.")
            return
        if mode == "listen":
            await self._reply_later(interaction, f"I'm listening on {channel.mention}: I won't speak; I'll take "
                                                 "notes and fill in the lead.")
        else:
            await self._reply_later(interaction, f"I'm on {channel.mention}. Say hello!")

    @app_commands.command(name="leave", description="Cap hangs up")
    async def leave(self, interaction: discord.Interaction) -> None:
        call = self.calls.get(interaction.guild_id or 0)
        stray = interaction.guild.voice_client if interaction.guild is not None else None
        if call is None and stray is None:
            await interaction.response.send_message(NOT_ON_A_CALL, ephemeral=True)
            return
        if isinstance(interaction.user, discord.Member):
            channel = call.current_channel if call is not None else getattr(stray, "channel", None)
            refusal = leave_refusal(interaction.user, channel, call.started_by if call is not None else None)
            if refusal is not None:
                await interaction.response.send_message(refusal, ephemeral=True)
                return
        await interaction.response.defer(ephemeral=True, thinking=True)
        if call is not None:
            await call.stop("left")
        else:  # a voice connection without a call (it outlived one): the way out must still work
            with contextlib.suppress(Exception):
                await stray.disconnect(force=True)  # type: ignore[union-attr]
        await interaction.followup.send("I left the call.", ephemeral=True)

    @app_commands.command(name="ask", description="Cap answers your next question without being named")
    async def ask(self, interaction: discord.Interaction) -> None:
        call = self.calls.get(interaction.guild_id or 0)
        if call is None or call.started_at is None:
            await interaction.response.send_message(NOT_ON_A_CALL, ephemeral=True)
            return
        if call.listen_only:
            await interaction.response.send_message("I'm only listening on this call; I won't answer.",
                                                    ephemeral=True)
            return
        call.ask(interaction.user.id)
        await interaction.response.send_message("Go ahead, I'm listening: I'll answer what you say next.",
                                                ephemeral=True)

    @app_commands.command(name="status", description="Cap's current call: time, turns, latency, tokens and cost")
    async def status(self, interaction: discord.Interaction) -> None:
        call = self.calls.get(interaction.guild_id or 0)
        if call is None or call.started_at is None:
            await interaction.response.send_message(NOT_ON_A_CALL, ephemeral=True)
            return
        await interaction.response.send_message(format_status(call.status()), ephemeral=True)

    @app_commands.command(name="usage", description="This server's Cap calls, tokens and estimated cost this month")
    async def usage(self, interaction: discord.Interaction) -> None:
        permissions = interaction.permissions
        if interaction.guild_id is None:
            await interaction.response.send_message(NOT_IN_GUILD, ephemeral=True)
            return
        if not (permissions.manage_guild or permissions.administrator):
            await interaction.response.send_message(USAGE_REFUSED, ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)  # Discord's 3 s rule, then the query
        guild_id, budget = interaction.guild_id, self.bot.settings.monthly_budget_usd  # type: ignore[attr-defined]

        def report() -> str:
            with self.bot.database.session() as session:  # type: ignore[attr-defined]
                return guild_usage_text(session, guild_id, datetime.now(UTC), budget)

        try:
            text = await asyncio.to_thread(report)
        except SQLAlchemyError as exc:
            log.error("/cap usage failed: %s", db_error_line(exc))
            text = "The usage store is unavailable right now; try again in a moment."
        await self._reply_later(interaction, text)

    @staticmethod
    async def _reply_later(interaction: discord.Interaction, text: str) -> None:
        with contextlib.suppress(discord.HTTPException):  # the interaction may have expired meanwhile
            await interaction.followup.send(text, ephemeral=True)

    def _call_ended(self, call: VoiceCall) -> None:
        if self.calls.get(call.guild.id) is call:
            del self.calls[call.guild.id]


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Voice(bot))
