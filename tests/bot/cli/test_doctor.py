"""cap-bot doctor's checks, each on its own: fakes for the network (the fake Realtime service, a local
aiohttp app for Discord), real SQLite/PostgreSQL for the database."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import text
from websockets.asyncio.server import ServerConnection, serve

from bot.cli import doctor
from bot.cli.doctor import CheckResult
from bot.settings import Settings, SettingsError
from bot.storage import migrate
from bot.storage.database import Database, make_engine
from tests.bot.tools.helpers import test_settings
from tests.realtime_fake import FakeRealtimeServer

BOT_ID = "123456789012345678"
TOKEN = base64.urlsafe_b64encode(BOT_ID.encode()).decode().rstrip("=") + ".GaBcDe." + "x" * 38


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"openai_api_key": "sk-test", "discord_token": TOKEN}
    values.update(overrides)
    return test_settings(**values)


# -- settings and sharding ----------------------------------------------------------------------------


def test_settings_that_load_pass() -> None:
    result, loaded = doctor.check_settings(lambda: settings())
    assert result.status == "ok" and loaded is not None


def test_a_bad_setting_is_named_with_a_fix() -> None:
    def broken() -> Settings:
        raise SettingsError("SHARD_COUNT: Input should be a valid integer")

    result, loaded = doctor.check_settings(broken)
    assert (result.status, loaded) == ("fail", None)
    assert "SHARD_COUNT" in result.detail and ".env" in result.fix


@pytest.mark.parametrize(
    ("count", "ids", "status"),
    [
        (None, None, "ok"),
        (4, None, "ok"),
        (4, [0, 1], "ok"),
        (None, [0], "fail"),
        (2, [2], "fail"),
        (4, [1, 1], "fail"),
    ],
)
def test_sharding(count: int | None, ids: list[int] | None, status: str) -> None:
    assert doctor.check_sharding(settings(shard_count=count, shard_ids=ids)).status == status


# -- voice libraries ----------------------------------------------------------------------------------


def test_libopus_missing_names_the_debian_package() -> None:
    result = doctor.check_opus(load=lambda: False, find=lambda name: None)
    assert result.status == "fail" and "libopus0" in result.fix


def test_libopus_found_but_broken() -> None:
    result = doctor.check_opus(load=lambda: False, find=lambda name: "libopus.so.0")
    assert result.status == "fail" and "does not load" in result.detail


def test_libopus_on_this_machine() -> None:
    assert doctor.check_opus().status == "ok"  # scripts/setup.sh installs libopus0


def test_davey_and_pynacl_import_here() -> None:
    assert doctor.check_module("davey", "DAVE").status == "ok"
    assert doctor.check_module("nacl", "voice").name == "PyNaCl"


def test_a_missing_module_says_how_to_install_it() -> None:
    result = doctor.check_module("cap_no_such_module", "testing")
    assert result.status == "fail" and "discord.py[voice]" in result.fix


# -- database -----------------------------------------------------------------------------------------


def test_a_migrated_database_passes(database: Database) -> None:
    result = doctor.check_database(settings(database_url=database.url))
    assert result.status == "ok", result
    assert migrate.head_revision() in result.detail


def test_a_database_that_was_never_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cap.db'}"
    make_engine(url).connect().close()  # an empty file
    result = doctor.check_database(settings(database_url=url))
    assert result.status == "fail" and "never migrated" in result.detail and "db upgrade" in result.fix


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    result = doctor.check_database(settings(database_url=f"sqlite:///{tmp_path / 'none' / 'cap.db'}"))
    assert result.status == "fail" and not (tmp_path / "none").exists()


def test_a_schema_from_a_newer_cap(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cap.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = doctor.check_database(settings(database_url=url))
    assert result.status == "fail" and "does not know" in result.detail


def test_an_unreachable_server_hides_the_password() -> None:
    result = doctor.check_database(settings(database_url="postgresql+psycopg://cap:hunter2@127.0.0.1:9/cap"))
    assert result.status == "fail" and "hunter2" not in result.detail and "***" in result.detail


# -- OpenAI Realtime (the fake service) ---------------------------------------------------------------


async def test_realtime_accepts_the_key() -> None:
    async with FakeRealtimeServer() as server:
        result = await doctor.check_realtime(settings(realtime_url=server.url))
        assert result.status == "ok" and "session.created" in result.detail
        assert server.connections[0].query["model"] == "gpt-realtime-2.1"
        assert "OpenAI-Beta" not in server.connections[0].headers


async def test_realtime_rejects_the_key_without_printing_it() -> None:
    secret = "sk-proj-THISISSECRET1234567890"
    async with FakeRealtimeServer() as server:
        result = await doctor.check_realtime(settings(realtime_url=server.url, openai_api_key=secret))
    assert result.status == "fail" and "invalid_api_key" in result.detail and "OPENAI_API_KEY" in result.fix
    assert secret not in repr(result) and "THISISSECRET" not in repr(result)


async def test_realtime_http_refusal() -> None:
    async with FakeRealtimeServer(reject_connections=1) as server:
        result = await doctor.check_realtime(settings(realtime_url=server.url))
    assert result.status == "fail" and "HTTP 503" in result.detail


async def test_realtime_without_a_key() -> None:
    result = await doctor.check_realtime(settings(openai_api_key=None))
    assert result.status == "fail" and "OPENAI_API_KEY" in result.detail


async def test_realtime_unreachable() -> None:
    result = await doctor.check_realtime(settings(realtime_url="ws://127.0.0.1:9/v1/realtime"), timeout=2)
    assert result.status == "fail" and "cannot reach" in result.detail


async def test_realtime_silent_server_times_out() -> None:
    async def silent(websocket: ServerConnection) -> None:
        await websocket.wait_closed()  # accepts, then never says a word

    async with serve(silent, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        result = await doctor.check_realtime(settings(realtime_url=f"ws://127.0.0.1:{port}"), timeout=0.3)
    assert result.status == "fail" and "within" in result.detail


# -- Discord token ------------------------------------------------------------------------------------


def test_a_well_formed_token() -> None:
    result = doctor.check_discord_token(settings())
    assert result.status == "ok" and BOT_ID in result.detail and TOKEN not in result.detail


@pytest.mark.parametrize(
    ("token", "words"),
    [
        (None, "not set"),
        ("", "not set"),
        (f"Bot {TOKEN}", "'Bot '"),
        ("abc.def", "2 part(s)"),
        ("abc.def.ghi/jkl", "base64url"),
        ("bm90LWFuLWlk.GaBcDe.xxxxxxxx", "user id"),  # "not-an-id"
    ],
)
def test_malformed_tokens(token: str | None, words: str) -> None:
    result = doctor.check_discord_token(settings(discord_token=token))
    assert result.status == "fail" and words in result.detail and result.fix


@pytest.fixture
async def discord_api() -> AsyncIterator[str]:
    async def me(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {TOKEN}":
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        return web.json_response({"id": BOT_ID, "username": "Cap"})

    app = web.Application()
    app.router.add_get("/api/v10/users/@me", me)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/api/v10"
    finally:
        await runner.cleanup()


async def test_discord_login_accepted(discord_api: str) -> None:
    result = await doctor.check_discord_login(settings(), api_base=discord_api)
    assert result.status == "ok" and "Cap" in result.detail


async def test_discord_login_rejected(discord_api: str) -> None:
    other = TOKEN[:-4] + "zzzz"
    result = await doctor.check_discord_login(settings(discord_token=other), api_base=discord_api)
    assert result.status == "fail" and "401" in result.detail and other not in repr(result)


# -- the table ----------------------------------------------------------------------------------------


def test_without_settings_the_rest_is_skipped() -> None:
    bad = CheckResult("settings", "fail", "SHARD_COUNT: bad", "fix it")
    results = doctor.run_checks(None, offline=True, settings_result=bad)
    by_name = {result.name: result.status for result in results}
    assert by_name["settings"] == "fail" and by_name["libopus"] == "ok"
    assert by_name["database"] == by_name["realtime"] == by_name["discord token"] == "skip"


def test_offline_makes_no_network_check(database: Database) -> None:
    results = doctor.run_checks(settings(database_url=database.url), offline=True)
    by_name = {result.name: result for result in results}
    assert by_name["realtime"].status == by_name["discord login"].status == "skip"
    assert all(result.ok for result in results), doctor.render(results)


def test_render_table_and_quiet() -> None:
    results = [
        CheckResult("settings", "ok", "fine"),
        CheckResult("libopus", "fail", "not found", "install the Debian package libopus0"),
        CheckResult("realtime", "skip", "--offline"),
    ]
    table = doctor.render(results)
    assert "✓ settings" in table and "✗ libopus" in table and "– realtime" in table
    assert "→ install the Debian package libopus0" in table
    assert table.rstrip().endswith("doctor: 1 ok, 1 to fix, 1 skipped")
    quiet = doctor.render(results, quiet=True)
    assert "settings" not in quiet and "libopus0" in quiet
    assert doctor.render(results[:1], quiet=True) == ""
