"""`cap-bot run`: each preflight failure is one line; a rejected token never reaches the output."""

from __future__ import annotations

import aiohttp
import discord
import pytest

from bot.cli import CommandError, main
from bot.cli.run import _serve, preflight
from bot.settings import SettingsError, load_settings

TOKEN = "MTIz.fake.token-value"


def settings(**overrides: object):
    values = {"discord_token": TOKEN, "openai_api_key": "sk-test", **overrides}
    return load_settings(**values)


def test_preflight_returns_the_token_when_everything_is_there() -> None:
    assert preflight(settings(), module_present=lambda name: True, opus_loaded=lambda: True) == TOKEN


@pytest.mark.parametrize(
    ("overrides", "present", "opus", "message"),
    [
        ({"discord_token": ""}, True, True, "DISCORD_TOKEN: missing"),
        ({"openai_api_key": ""}, True, True, "OPENAI_API_KEY: missing"),
        ({}, "davey", True, "davey is missing"),
        ({}, "nacl", True, "PyNaCl is missing"),
        ({}, True, False, "libopus not found: install the Debian package libopus0"),
        ({"shard_ids": [0, 1]}, True, True, "SHARD_IDS needs SHARD_COUNT"),
        ({"shard_ids": [2], "shard_count": 2}, True, True, "SHARD_IDS: 2 is not a shard of SHARD_COUNT=2"),
    ],
)
def test_each_preflight_failure_is_one_line(overrides, present, opus, message) -> None:
    def module_present(name: str) -> bool:
        return present is True or name != present

    with pytest.raises((CommandError, SettingsError)) as caught:
        preflight(settings(**overrides), module_present=module_present, opus_loaded=lambda: opus)
    text = str(caught.value)
    assert message in text and "\n" not in text and TOKEN not in text


def test_this_machine_has_libopus_davey_and_pynacl() -> None:
    assert preflight(settings()) == TOKEN


class RejectedLogin:
    """Stands in for CapBot: Discord answers the login with 401."""

    def __init__(self) -> None:
        self.closed = False

    async def __aenter__(self) -> RejectedLogin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True

    async def start(self, token: str) -> None:
        raise discord.LoginFailure("Improper token has been passed.")


class UnreachableDiscord(RejectedLogin):
    """Stands in for CapBot: DNS fails for discord.com."""

    async def start(self, token: str) -> None:
        raise aiohttp.ClientConnectionError("Cannot connect to host discord.com:443")


async def test_discord_unreachable_at_start_is_one_line_and_the_bot_is_closed() -> None:
    bot = UnreachableDiscord()
    with pytest.raises(CommandError, match=r"^cannot reach Discord: ClientConnectionError: Cannot connect to host"):
        await _serve(bot, TOKEN)  # type: ignore[arg-type]
    assert bot.closed


async def test_a_rejected_token_is_one_line_and_the_bot_is_closed() -> None:
    bot = RejectedLogin()
    with pytest.raises(CommandError, match=r"^DISCORD_TOKEN was rejected by Discord") as caught:
        await _serve(bot, TOKEN)  # type: ignore[arg-type]
    assert TOKEN not in str(caught.value)
    assert bot.closed


def test_cli_run_without_a_token_prints_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "")
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "cap-bot: DISCORD_TOKEN: missing (set it in the environment or .env)"


def test_run_freezes_the_start_up_heap_before_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: full GCs of the start-up heap stalled every call; `cap-bot run` freezes it, once, first."""
    import argparse

    import bot.cli.run as run
    import bot.heap

    order: list[str] = []
    monkeypatch.setattr(run, "preflight", lambda settings: TOKEN)
    monkeypatch.setattr(run, "prepare_database", lambda settings: None)
    monkeypatch.setattr(bot.heap, "freeze_startup_heap", lambda: order.append("freeze") or 1)

    async def serve(client: discord.Client, token: str) -> int:
        order.append("serve")
        return 0

    monkeypatch.setattr(run, "_serve", serve)
    assert run.run_bot(argparse.Namespace(), settings(database_url="sqlite://")) == 0
    assert order == ["freeze", "serve"]
