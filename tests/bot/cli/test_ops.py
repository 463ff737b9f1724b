"""cap-bot db upgrade/current and cap-bot doctor through the real command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import CommandError, main
from bot.cli.ops import prepare_database
from bot.storage import migrate
from tests.bot.tools.helpers import test_settings


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """No .env from the work tree; DATABASE_URL a SQLite file that does not exist yet."""
    monkeypatch.chdir(tmp_path)
    for name in ("DISCORD_TOKEN", "OPENAI_API_KEY", "SHARD_COUNT", "SHARD_IDS", "AUTO_MIGRATE"):
        monkeypatch.delenv(name, raising=False)
    database_url = f"sqlite:///{tmp_path / 'db' / 'cap.db'}"
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def test_db_upgrade_then_current(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    head = migrate.head_revision()
    assert main(["db", "current"]) == 0
    assert "never migrated" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"database upgraded: empty -> {head}"
    assert main(["db", "upgrade"]) == 0
    assert "already at the newest schema" in capsys.readouterr().out
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == f"{head} (newest)"


def test_db_upgrade_unreachable_is_one_line(url: str, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://cap:secret@127.0.0.1:9/cap")
    assert main(["db", "upgrade"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cap-bot: DATABASE_URL: cannot use the database:") and "\n" not in err
    assert "secret" not in err


def test_start_up_applies_pending_migrations(url: str) -> None:
    result = prepare_database(test_settings(database_url=url))
    assert result is not None and result.changed
    assert prepare_database(test_settings(database_url=url, auto_migrate=False)) is None


def test_start_up_refuses_a_pending_schema_without_auto_migrate(url: str) -> None:
    with pytest.raises(CommandError) as raised:
        prepare_database(test_settings(database_url=url, auto_migrate=False))
    assert "cap-bot db upgrade" in str(raised.value) and "\n" not in str(raised.value)
    assert migrate.current_revision(url) is None  # nothing applied


def test_doctor_exit_status(url: str, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    assert main(["doctor", "--offline"]) == 1  # no token, no key, no database yet
    out = capsys.readouterr().out
    assert "✗ discord token" in out and "✗ database" in out and "✗ realtime" in out
    assert "OPENAI_API_KEY is not set" in out
    main(["db", "upgrade"])
    monkeypatch.setenv("DISCORD_TOKEN", "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe." + "x" * 38)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    capsys.readouterr()
    assert main(["doctor", "--offline", "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_doctor_reports_bad_settings_in_its_table(url: str, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SHARD_COUNT", "many")
    assert main(["doctor", "--offline"]) == 1
    out = capsys.readouterr().out
    assert "✗ settings" in out and "SHARD_COUNT" in out and "✓ libopus" in out


def test_other_commands_still_stop_at_bad_settings(url: str, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SHARD_COUNT", "many")
    assert main(["db", "current"]) == 1
    assert capsys.readouterr().err.startswith("cap-bot: SHARD_COUNT:")


BAD_URLS = [
    ("postgresql+psycopg://cap:S3cretPW@127.0.0.1:notaport/cap", "port that is not a number"),
    ("postgres://cap:S3cretPW@127.0.0.1/cap", "write postgresql+psycopg://"),
    ("mysql://cap:S3cretPW@127.0.0.1/cap", "driver 'MySQLdb', which is not installed"),
    ("cap:S3cretPW@127.0.0.1/cap", "is not a database URL"),
]


@pytest.mark.parametrize(("bad_url", "reason"), BAD_URLS)
@pytest.mark.parametrize(
    "argv",
    [["db", "upgrade"], ["db", "current"], ["run"], ["leads", "export"], ["tools", "call", "score_lead"]],
)
def test_a_database_url_that_cannot_work_is_one_line(
    url: str, monkeypatch, capsys, bad_url: str, reason: str, argv: list[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", bad_url)
    monkeypatch.setattr("bot.cli.run.preflight", lambda settings: "token")  # `run` gets as far as the database
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "S3cret" not in err
    assert err.startswith("cap-bot: DATABASE_URL") and reason in err


@pytest.mark.parametrize(("bad_url", "reason"), BAD_URLS)
def test_doctor_shows_a_database_url_that_cannot_work_as_a_failed_row(
    url: str, monkeypatch, capsys, bad_url: str, reason: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", bad_url)
    assert main(["doctor", "--offline"]) == 1
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith("✗ database")]
    assert "DATABASE_URL" in row and reason in row and "S3cret" not in out
