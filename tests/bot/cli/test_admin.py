"""`cap-bot tools …` and `cap-bot leads export`, run in-process against a per-test database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.storage import migrate
from bot.tools import TOOL_NAMES, build_registry
from tests.bot.storage.helpers import fresh_database
from tests.bot.tools.helpers import test_settings


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No .env from the work tree; DATABASE_URL pointing at the test database."""
    monkeypatch.chdir(tmp_path)
    with fresh_database(tmp_path) as database:
        monkeypatch.setenv("DATABASE_URL", database.url)
        yield


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("cap-bot:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def save(capsys: pytest.CaptureFixture[str], guild: int, **args: Any) -> dict[str, Any]:
    status, out, _ = run(
        capsys, "tools", "call", "save_lead", "--args", json.dumps(args), "--guild", str(guild)
    )
    assert status == 0
    return json.loads(out)


def test_tools_list_is_exactly_what_the_model_is_given(capsys) -> None:
    status, out, _ = run(capsys, "tools", "list")
    listed = json.loads(out)
    assert status == 0 and [tool["name"] for tool in listed] == list(TOOL_NAMES)
    assert all(set(tool) == {"name", "description", "parameters"} for tool in listed)
    from bot.storage.database import Database

    specs = build_registry(test_settings(), Database("sqlite://")).specs()
    assert listed == [{k: spec[k] for k in ("name", "description", "parameters")} for spec in specs]


def test_a_call_prints_the_json_result(capsys) -> None:
    args = json.dumps({"purchase_price": 400000, "loan_amount": 300000, "interest_rate": 7.25,
                       "program": "dscr_rental"})
    status, out, _ = run(capsys, "tools", "call", "analyze_deal", "--args", args)
    result = json.loads(out)
    assert status == 0 and result["ok"] and result["at_your_rate"]["monthly_principal_interest"] == 2046.53


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tools", "call", "no_such_tool"], "unknown tool 'no_such_tool'; available: analyze_deal"),
        (["tools", "call", "save_lead", "--args", "{bad json"], "--args is not valid JSON"),
        (["tools", "call", "save_lead", "--args", "[1, 2]"], "--args must be a JSON object"),
        (["tools", "call", "save_lead", "--args", '{"email": "a@example.com"}'], "full_name: Field required"),
        (["tools", "call", "analyze_deal", "--args", '{"purchase_price": "lots"}'], "invalid arguments"),
    ],
)
def test_command_line_mistakes_are_one_line(capsys, argv: list[str], message: str) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 1 and out == ""
    assert message in one_line_error(err)


def test_a_tool_refusal_prints_its_json_and_exits_non_zero(capsys) -> None:
    status, out, _ = run(
        capsys, "tools", "call", "schedule_call", "--args", '{"start_time": "2001-01-02T10:00"}'
    )
    assert status == 1 and json.loads(out)["error"]["code"] == "in_the_past"


def test_an_unusable_database_is_one_line(capsys, monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'file' / 'cap.db'}")
    status, _, err = run(capsys, "leads", "export")
    assert status == 1 and "DATABASE_URL: cannot use the database" in one_line_error(err)
    monkeypatch.setenv("DATABASE_URL", "nosuchdb://x")
    status, _, err = run(capsys, "tools", "call", "score_lead")
    assert status == 1 and "DATABASE_URL" in one_line_error(err)


def test_without_auto_migrate_an_old_schema_is_refused_not_migrated(capsys, monkeypatch, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never_migrated.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("AUTO_MIGRATE", "false")
    for argv in (("leads", "export"), ("tools", "call", "score_lead")):
        status, out, err = run(capsys, *argv)
        assert status == 1 and out == "" and "cap-bot db upgrade" in one_line_error(err)
    assert migrate.current_revision(url) is None  # the operator decides when the schema changes


def test_export_scopes_to_a_guild_or_covers_all(capsys) -> None:
    save(capsys, 1, full_name="Ann One", email="ann@example.com")
    save(capsys, 2, full_name="=Bob Two", email="bob@example.com")
    status, out, _ = run(capsys, "leads", "export", "--format", "csv", "--guild", "1")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert status == 0 and [row["full_name"] for row in rows] == ["Ann One"]
    status, out, _ = run(capsys, "leads", "export")
    assert sorted(row["full_name"] for row in csv.DictReader(io.StringIO(out))) == ["'=Bob Two", "Ann One"]
    status, out, _ = run(capsys, "leads", "export", "--format", "json", "--guild", "2")
    assert [lead["full_name"] for lead in json.loads(out)] == ["=Bob Two"]


def test_export_to_a_file(capsys, tmp_path: Path) -> None:
    save(capsys, 1, full_name="José", email="jose@example.com")
    target = tmp_path / "leads.csv"
    status, out, err = run(capsys, "leads", "export", "--output", str(target), "--guild", "1")
    assert status == 0 and out == "" and "wrote 1 lead(s) from guild 1" in err
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and "José".encode() in data
    status, _, err = run(capsys, "leads", "export", "--output", str(tmp_path / "missing" / "x.csv"))
    assert status == 1 and "cannot write" in one_line_error(err)


def test_guilds_stay_apart_through_the_cli(capsys) -> None:
    lead = save(capsys, 1, full_name="Ann", email="ann@example.com")
    status, out, _ = run(
        capsys,
        "tools",
        "call",
        "score_lead",
        "--args",
        json.dumps({"lead_id": lead["lead_id"]}),
        "--guild",
        "2",
    )
    assert status == 1 and json.loads(out)["error"]["code"] == "lead_not_found"


def test_stdout_csv_has_the_same_bytes_as_output(capsysbinary, tmp_path: Path) -> None:
    """`leads export > x.csv` and `--output x.csv` make the same file: with the BOM Excel needs for UTF-8."""
    save(capsysbinary, 1, full_name="José Lee", email="jose@example.com")
    target = tmp_path / "leads.csv"
    assert run(capsysbinary, "leads", "export", "--guild", "1", "--output", str(target))[0] == 0
    status = main(["leads", "export", "--guild", "1"])
    out = capsysbinary.readouterr().out
    assert status == 0 and out.startswith(b"\xef\xbb\xbf") and out == target.read_bytes()
