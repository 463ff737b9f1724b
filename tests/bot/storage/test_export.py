from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from bot.storage.database import Database
from bot.storage.export import (
    EXPORT_COLUMNS,
    collect_records,
    export_filename,
    neutralise_cell,
    render_file,
    to_csv,
    to_json,
)
from bot.storage.leads import upsert_lead


@pytest.mark.parametrize(
    "payload",
    [
        "=1+1",
        "+1234",
        "-2+3",
        "@SUM(A1)",
        "\tx",
        "\rx",
        '=HYPERLINK("http://x","click")',
        " =1+1",  # after leading whitespace
        "\n=1+1",
        "  \t@SUM(A1)",
        "\0=1+1",  # a leading NUL
        "\0",
    ],
)
def test_formula_triggers_are_neutralised(payload: str) -> None:
    assert neutralise_cell(payload) == "'" + payload
    row = next(csv.reader(io.StringIO(to_csv([{"notes": payload}], columns=("notes",)).split("\r\n", 1)[1])))
    assert row == ["'" + payload]


@pytest.mark.parametrize("value", ["Ann Lee", "a=b", "", "  ", " Ann", "x\0=1", 42, -5.5, -200_000.0, None])
def test_other_cells_are_left_alone(value: object) -> None:
    assert neutralise_cell(value) == value


def test_csv_has_header_stable_columns_and_utf8(database: Database) -> None:
    with database.session() as session:
        upsert_lead(
            session,
            7,
            {
                "full_name": "José Müller =evil",
                "phone": "+12125550100",
                "email": "jose@example.com",
                "liquidity": 1000.5,
            },
            discord_user_id=1,
        )
        upsert_lead(session, 7, {"full_name": "=cmd|' /C calc'!A0"}, discord_user_id=2)
        upsert_lead(session, 8, {"full_name": "Other guild"}, discord_user_id=3)
    with database.session() as session:
        records = collect_records(session, 7)
    data = render_file(records, "csv")
    assert data.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads the file as UTF-8
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert len(rows) == 3
    by_name = {row[EXPORT_COLUMNS.index("full_name")]: row for row in rows[1:]}
    assert "José Müller =evil" in by_name
    assert "'=cmd|' /C calc'!A0" in by_name
    first = by_name["José Müller =evil"]
    assert first[EXPORT_COLUMNS.index("phone")] == "'+12125550100"
    assert first[EXPORT_COLUMNS.index("liquidity")] == "1000.5"  # numbers stay numbers
    assert first[EXPORT_COLUMNS.index("guild_id")] == "7"


def test_json_keeps_types_and_column_order(database: Database) -> None:
    with database.session() as session:
        upsert_lead(
            session, 7, {"full_name": "=1+1", "loan_amount": 250000.0}, discord_user_id=1234567890123456789
        )
    with database.session() as session:
        records = json.loads(to_json(collect_records(session, 7)))
    assert list(records[0]) == list(EXPORT_COLUMNS)
    assert records[0]["full_name"] == "=1+1"  # JSON is data, not a spreadsheet
    assert records[0]["loan_amount"] == 250000.0
    assert records[0]["discord_user_id"] == "1234567890123456789"
    assert datetime.fromisoformat(records[0]["created_at"]).tzinfo is not None


def test_all_guilds_only_when_asked(database: Database) -> None:
    with database.session() as session:
        upsert_lead(session, 7, {"full_name": "A"}, discord_user_id=1)
        upsert_lead(session, 8, {"full_name": "B"}, discord_user_id=1)
    with database.session() as session:
        assert [r["full_name"] for r in collect_records(session, 8)] == ["B"]
        assert sorted(r["full_name"] for r in collect_records(session, None)) == ["A", "B"]


def test_filename() -> None:
    now = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert export_filename("csv", 7, now) == "cap-leads-guild-7-20261201-093000.csv"
    assert export_filename("json", None, now) == "cap-leads-all-guilds-20261201-093000.json"
