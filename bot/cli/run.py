"""`cap-bot run`: preflight checks (one line each on failure), then Cap on Discord until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
from collections.abc import Callable

import aiohttp
import discord

from bot.cli.errors import CommandError
from bot.cli.ops import prepare_database
from bot.settings import Settings
from bot.shutdown import ShutdownCoordinator
from bot.voice.libopus import load_libopus

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run Cap on Discord (needs DISCORD_TOKEN and OPENAI_API_KEY)")
    parser.set_defaults(handler=run_bot)


def _module_present(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def preflight(
    settings: Settings,
    *,
    module_present: Callable[[str], bool] = _module_present,
    opus_loaded: Callable[[], bool] | None = None,
) -> str:
    """Check everything `run` needs before touching the network; returns the token. Raises CommandError."""
    token = settings.require_discord_token()
    settings.require_openai_key()
    if not module_present("nacl"):
        raise CommandError("PyNaCl is missing (voice encryption): pip install 'discord.py[voice]>=2.7.1'")
    if not module_present("davey"):
        raise CommandError("davey is missing (Discord's DAVE voice encryption): pip install 'discord.py[voice]>=2.7.1'")
    if not (opus_loaded or load_libopus)():
        raise CommandError("libopus not found: install the Debian package libopus0")
    if settings.shard_ids and settings.shard_count is None:
        raise CommandError("SHARD_IDS needs SHARD_COUNT")
    outside = [i for i in settings.shard_ids or () if not 0 <= i < (settings.shard_count or 0)]
    if outside:  # Discord would close the gateway with "invalid shard"
        raise CommandError(f"SHARD_IDS: {outside[0]} is not a shard of SHARD_COUNT={settings.shard_count} "
                           f"(ids run from 0 to {(settings.shard_count or 1) - 1})")
    return token


def run_bot(args: argparse.Namespace, settings: Settings) -> int:
    token = preflight(settings)
    prepare_database(settings)  # pending migrations applied (AUTO_MIGRATE) or a one-line refusal
    from bot.discord_bot import CapBot  # imports the voice stack, which needs the checks above
    from bot.heap import freeze_startup_heap

    bot = CapBot(settings)
    freeze_startup_heap()  # full GCs of the start-up heap stalled every call 50-100 ms (bot/heap.py)
    return asyncio.run(_serve(bot, token))


async def _serve(bot: discord.Client, token: str) -> int:
    # SIGTERM (docker stop) and Ctrl-C close the bot: its calls end, then the shards disconnect.
    shutdown = ShutdownCoordinator(lambda: bot.close())
    shutdown.install(asyncio.get_running_loop())
    try:
        async with bot:
            try:
                await bot.start(token)
            except discord.LoginFailure:
                raise CommandError("DISCORD_TOKEN was rejected by Discord (reset it in the Developer Portal)") from None
            except discord.PrivilegedIntentsRequired:
                raise CommandError("Discord refused the requested intents") from None
            except (aiohttp.ClientError, discord.GatewayNotFound, discord.HTTPException) as exc:
                # Discord unreachable or failing at start-up (once connected, discord.py reconnects itself):
                # one line and a non-zero exit, so the container's restart policy tries again.
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise CommandError(f"cannot reach Discord: {type(exc).__name__}{f': {detail}' if detail else ''}"
                                   ) from None
        if shutdown.task is not None:
            await shutdown.task
    finally:
        shutdown.uninstall()
    return 0
