"""`cap-bot doctor`'s checks: plain functions returning a CheckResult, and the ✓/✗ table they make.

No check prints, and none lets a secret into its result: the OpenAI key and the Discord token are masked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes.util
import importlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from bot.settings import Settings, SettingsError, load_settings
from bot.storage import migrate
from bot.storage.database import DatabaseURLError, create_database_engine, parse_database_url, shown_url
from bot.storage.errors import first_message_line
from bot.voice.libopus import load_libopus
from realtime.errors import redact

Status = Literal["ok", "fail", "skip"]
MARKS: dict[Status, str] = {"ok": "✓", "fail": "✗", "skip": "–"}

VOICE_EXTRA = "pip install 'discord.py[voice]>=2.7.1'"
DISCORD_API = "https://discord.com/api/v10"
NETWORK_TIMEOUT_SECONDS = 10.0
DB_CONNECT_TIMEOUT_SECONDS = 5
# A bot token: base64url(user id) "." base64url(timestamp) "." HMAC, each part non-empty.
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "ok", detail)


def fail(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, "fail", detail, fix)


def skip(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "skip", detail)


# -- settings ------------------------------------------------------------------------------------------


def check_settings(load: Callable[[], Settings] = load_settings) -> tuple[CheckResult, Settings | None]:
    try:
        settings = load()
    except SettingsError as exc:
        return fail("settings", str(exc), "fix that value in .env or the environment (see .env.example)"), None
    return ok("settings", "environment and .env read, every value valid"), settings


def check_sharding(settings: Settings) -> CheckResult:
    count, ids = settings.shard_count, settings.shard_ids
    if ids and count is None:
        return fail("sharding", f"SHARD_IDS={ids} without SHARD_COUNT", "set SHARD_COUNT (shards over all processes)")
    if ids:
        wrong = [shard for shard in ids if not 0 <= shard < (count or 0)]
        if wrong or len(set(ids)) != len(ids):
            return fail(
                "sharding",
                f"SHARD_IDS={ids} is not a set of ids below SHARD_COUNT={count}",
                f"give each process distinct ids in 0..{(count or 1) - 1}",
            )
        return ok("sharding", f"this process runs shards {','.join(map(str, ids))} of {count}")
    if count:
        return ok("sharding", f"all {count} shards in this process")
    return ok("sharding", "one process, shard count chosen by Discord")


# -- voice libraries -----------------------------------------------------------------------------------


def check_opus(
    load: Callable[[], bool] = load_libopus, find: Callable[[str], str | None] = ctypes.util.find_library
) -> CheckResult:
    fix = "install the Debian package libopus0 (apt-get install libopus0)"
    name = find("opus")
    if not load():
        return fail("libopus", "not found" if name is None else f"{name} found but does not load", fix)
    return ok("libopus", f"{name or 'libopus'} loaded")


def check_module(name: str, purpose: str, fix: str = VOICE_EXTRA) -> CheckResult:
    label = {"nacl": "PyNaCl"}.get(name, name)
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken native extension
        return fail(label, f"cannot import ({first_message_line(exc)}); needed for {purpose}", fix)
    version = getattr(module, "__version__", None)
    return ok(label, f"{version or 'imported'} ({purpose})")


# -- database ------------------------------------------------------------------------------------------


def check_database(settings: Settings) -> CheckResult:
    """Reachable, and at the newest schema revision; never creates or changes anything."""
    try:
        url = parse_database_url(settings.database_url)
    except DatabaseURLError as exc:
        return fail("database", str(exc), "fix DATABASE_URL in .env or the environment")
    shown = shown_url(url)
    connect_args: dict[str, object] = {}
    if url.get_backend_name() == "sqlite":
        if url.database not in (None, "", ":memory:") and not Path(url.database).expanduser().is_file():
            return fail(
                "database",
                f"no database file at {url.database}",
                "run `cap-bot db upgrade` (or start Cap once: AUTO_MIGRATE=true creates it)",
            )
    elif url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = DB_CONNECT_TIMEOUT_SECONDS
    try:
        engine = create_database_engine(url, poolclass=NullPool, connect_args=connect_args)
    except DatabaseURLError as exc:  # an unknown database (postgres://) or a driver not installed
        return fail("database", str(exc), "fix DATABASE_URL, or install the driver it names")
    try:
        current = migrate.current_revision(engine)
    except (SQLAlchemyError, OSError) as exc:
        return fail(
            "database",
            f"cannot connect to {shown}: {first_message_line(exc)}",
            "check DATABASE_URL and that the database server is running and reachable",
        )
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if current == head:
        return ok("database", f"{shown} at schema {head} (newest)")
    if current is None:
        return fail("database", f"{shown} reachable but never migrated", "run `cap-bot db upgrade`")
    if not migrate.is_known(current):
        return fail(
            "database",
            f"{shown} at schema {current!r}, which this Cap does not know (a newer Cap migrated it)",
            "deploy the newer Cap, or restore the database from before that upgrade",
        )
    return fail("database", f"{shown} at schema {current}, newest is {head}", "run `cap-bot db upgrade`")


# -- OpenAI Realtime -----------------------------------------------------------------------------------


def _masked(text: str, secret: str) -> str:
    return redact(text.replace(secret, "***") if secret else text)


REALTIME_FIXES = {
    "invalid_api_key": "set a valid OPENAI_API_KEY (platform.openai.com → API keys)",
    "model_not_found": "set REALTIME_MODEL to a Realtime model your account can use, e.g. gpt-realtime-2.1",
    "insufficient_quota": "add credit or raise the project's limits on platform.openai.com",
}
HTTP_FIXES = {
    401: REALTIME_FIXES["invalid_api_key"],
    403: "give the key's project access to the Realtime API",
    404: "check REALTIME_URL and REALTIME_MODEL",
}


async def check_realtime(settings: Settings, *, timeout: float = NETWORK_TIMEOUT_SECONDS) -> CheckResult:  # noqa: ASYNC109
    """Open the Realtime WebSocket with the key and wait for `session.created` (or an `error`), then hang up."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    try:
        key = settings.require_openai_key()
    except SettingsError:
        return fail("realtime", "OPENAI_API_KEY is not set", "set OPENAI_API_KEY in .env")
    endpoint = f"{settings.realtime_url}?model={quote(settings.realtime_model)}"
    try:
        async with asyncio.timeout(timeout):
            async with connect(
                endpoint,
                additional_headers={"Authorization": f"Bearer {key}"},  # GA: no OpenAI-Beta header
                max_size=None,
                compression=None,
                open_timeout=timeout,
            ) as websocket:
                while True:
                    try:
                        event = json.loads(await websocket.recv())
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        continue
                    kind = event.get("type") if isinstance(event, dict) else None
                    if kind == "session.created":
                        model = (event.get("session") or {}).get("model") or settings.realtime_model
                        return ok("realtime", f"key accepted, session.created for {model}")
                    if kind == "error":
                        error = event.get("error") or {}
                        code = str(error.get("code") or error.get("type") or "error")
                        detail = _masked(f"{code}: {error.get('message') or 'no message'}", key)
                        return fail("realtime", detail, REALTIME_FIXES.get(code, "see the error; check the key"))
    except InvalidStatus as exc:
        status = exc.response.status_code
        return fail("realtime", f"handshake refused (HTTP {status})", HTTP_FIXES.get(status, "try again later"))
    except TimeoutError:
        return fail(
            "realtime",
            f"no session.created within {timeout:g} s",
            "check the network path to REALTIME_URL (proxy, firewall); use --offline to skip",
        )
    except ConnectionClosed as exc:
        return fail("realtime", _masked(f"closed before session.created ({exc})", key), "check the key and model")
    except (OSError, InvalidHandshake) as exc:
        return fail(
            "realtime",
            _masked(f"cannot reach {settings.realtime_url}: {first_message_line(exc)}", key),
            "check REALTIME_URL and the network; use --offline to skip",
        )


# -- Discord -------------------------------------------------------------------------------------------

TOKEN_FIX = "copy the token from the Developer Portal → your application → Bot → Reset Token"


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_discord_token(settings: Settings) -> CheckResult:
    """The token's shape only (three base64url parts, the first the bot's id); nothing is sent anywhere."""
    raw = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    if not raw:
        return fail("discord token", "DISCORD_TOKEN is not set", f"set DISCORD_TOKEN in .env: {TOKEN_FIX}")
    if raw.lower().startswith("bot "):
        return fail("discord token", "starts with 'Bot '", "remove the 'Bot ' prefix: DISCORD_TOKEN is the bare token")
    if not TOKEN_SHAPE.match(raw):
        return fail(
            "discord token",
            f"not three base64url parts separated by dots ({raw.count('.') + 1} part(s))",
            f"{TOKEN_FIX} (not the client secret or the public key)",
        )
    try:
        bot_id = _b64url(raw.split(".", 1)[0]).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        bot_id = ""
    if not bot_id.isdigit():
        return fail("discord token", "its first part is not a user id", TOKEN_FIX)
    return ok("discord token", f"well formed, for bot id {bot_id}")


async def check_discord_login(
    settings: Settings,
    *,
    api_base: str = DISCORD_API,
    timeout: float = NETWORK_TIMEOUT_SECONDS,  # noqa: ASYNC109
) -> CheckResult:
    """Ask Discord who the token belongs to (GET /users/@me): the one check that proves the token works."""
    import aiohttp

    raw = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    if not raw:
        return skip("discord login", "no DISCORD_TOKEN")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(f"{api_base}/users/@me", headers={"Authorization": f"Bot {raw}"}) as response,
        ):
            if response.status == 200:
                user = await response.json()
                return ok("discord login", f"token accepted: {user.get('username', '?')} ({user.get('id', '?')})")
            if response.status == 401:
                return fail("discord login", "Discord rejected the token (HTTP 401)", TOKEN_FIX)
            return fail("discord login", f"Discord answered HTTP {response.status}", "try again later")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return fail(
            "discord login",
            _masked(f"cannot reach Discord: {first_message_line(exc)}", raw),
            "check the network; use --offline to skip",
        )


def check_heartbeat(settings: Settings, max_age: float | None = None) -> CheckResult:
    """The running bot's liveness: its heartbeat file is fresh (only meaningful where the bot runs)."""
    from bot.heartbeat import HEARTBEAT_MAX_AGE_SECONDS, heartbeat_age

    limit = HEARTBEAT_MAX_AGE_SECONDS if max_age is None else max_age
    if settings.heartbeat_file is None:
        return fail("heartbeat", "HEARTBEAT_FILE is not set", "set HEARTBEAT_FILE (the Docker image sets it)")
    age = heartbeat_age(settings.heartbeat_file)
    if age is None:
        return fail("heartbeat", "the bot has not reported a live Discord connection yet",
                    "is `cap-bot run` running? see its log for the login or gateway error")
    if age > limit:
        return fail("heartbeat", f"no live Discord connection reported for {age:.0f} s",
                    "the gateway connection or the event loop is stuck: see the log, restart the bot")
    return ok("heartbeat", f"live Discord connection reported {age:.0f} s ago")


# -- all of them ---------------------------------------------------------------------------------------


def run_checks(
    settings: Settings | None,
    *,
    offline: bool = False,
    heartbeat: bool = False,
    settings_result: CheckResult | None = None,
) -> list[CheckResult]:
    """Every check in table order; those needing valid settings are skipped without them."""
    results = [settings_result or ok("settings", "environment and .env read, every value valid")]
    results += [
        check_opus(),
        check_module("davey", "Discord's DAVE end-to-end voice encryption"),
        check_module("nacl", "voice transport encryption"),
    ]
    names = ("sharding", "database", "realtime", "discord token", "discord login")
    if settings is None:
        return results + [skip(name, "needs valid settings") for name in names]
    results += [check_sharding(settings), check_database(settings)]
    if offline:
        has_key = settings.openai_api_key is not None and settings.openai_api_key.get_secret_value().strip()
        results.append(skip("realtime", "--offline (OPENAI_API_KEY is set)") if has_key else
                       fail("realtime", "OPENAI_API_KEY is not set", "set OPENAI_API_KEY in .env"))
    else:
        results.append(asyncio.run(check_realtime(settings)))
    results.append(check_discord_token(settings))
    if offline:
        results.append(skip("discord login", "--offline"))
    elif results[-1].status == "ok":
        results.append(asyncio.run(check_discord_login(settings)))
    else:
        results.append(skip("discord login", "the token is malformed"))
    if heartbeat:
        results.append(check_heartbeat(settings))
    return results


def render(results: Iterable[CheckResult], *, quiet: bool = False) -> str:
    """The ✓/✗ table, a fix under each ✗ and a summary; quiet: only the failures."""
    results = list(results)
    shown = [r for r in results if r.status == "fail"] if quiet else results
    width = max((len(r.name) for r in shown), default=0)
    lines = []
    for result in shown:
        lines.append(f"{MARKS[result.status]} {result.name.ljust(width)}  {result.detail}")
        if result.fix:
            lines.append(f"  {' ' * width}  → {result.fix}")
    if not quiet:
        counts = {status: sum(r.status == status for r in results) for status in MARKS}
        lines.append(f"doctor: {counts['ok']} ok, {counts['fail']} to fix, {counts['skip']} skipped")
    return "\n".join(lines) + ("\n" if lines else "")
