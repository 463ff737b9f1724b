from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from bot.storage.database import Database
from bot.storage.deals import add_offer
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
from bot.storage.models import Offer, ScheduledCall


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
    assert first[EXPORT_COLUMNS.index("phone_e164")] == "+12125550100"
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


STRICT_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def _lead_with_everything(database: Database, guild: int = 7) -> int:
    now = datetime.now(UTC)
    with database.session() as session:
        lead, _ = upsert_lead(
            session,
            guild,
            {"full_name": "Dr. Ann Marie Lee Jr.", "phone": "+15125550143", "email": "ann@example.com",
             "credit_score": 742, "credit_band": "720-759", "loan_program": "dscr_rental", "loan_amount": 318000.0},
            discord_user_id=1,
            notes="@SUM(A1) wants a call",
        )
        add_offer(session, Offer(guild_id=guild, lead_id=lead.id, program="dscr_rental", amount=318000.0,
                                 max_ltv=0.75, rate_min=7.25, rate_max=7.75, points=1.0, term_months=360,
                                 expires_at=now + timedelta(days=14)))
        for days, uid in ((9, "later"), (2, "sooner"), (-3, "past")):
            session.add(ScheduledCall(guild_id=guild, lead_id=lead.id, starts_at=now + timedelta(days=days),
                                      duration_minutes=30, timezone="America/Chicago", ics_uid=f"{uid}@cap-bot"))
        assert lead.id is not None
        return lead.id


def test_the_csv_imports_into_a_crm_as_read_by_the_csv_module(database: Database) -> None:
    _lead_with_everything(database)
    with database.session() as session:
        upsert_lead(session, 7, {"full_name": "=HYPERLINK(\"http://x\")", "phone": "+442079460958"}, discord_user_id=2)
    with database.session() as session:
        data = render_file(collect_records(session, 7), "csv")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    ann, evil = rows
    assert (ann["first_name"], ann["last_name"]) == ("Ann Marie", "Lee Jr.")
    assert STRICT_E164.fullmatch(ann["phone_e164"]) and ann["phone_e164"] == "+15125550143"
    assert STRICT_E164.fullmatch(evil["phone_e164"]) and evil["phone_e164"] == "+442079460958"
    assert ann["credit_score"] == "742" and ann["loan_program"] == "dscr_rental" and ann["loan_amount"] == "318000.0"
    assert ann["offer_amount"] == "318000.0" and ann["offer_rate_min"] == "7.25" and ann["offer_term_months"] == "360"
    next_call = datetime.fromisoformat(ann["next_call_at"])
    assert next_call.tzinfo is not None and timedelta(days=1) < next_call - datetime.now(UTC) < timedelta(days=3)
    assert ann["next_call_timezone"] == "America/Chicago"
    assert datetime.fromisoformat(ann["created_at"]) <= datetime.fromisoformat(ann["updated_at"])
    assert ann["notes"].startswith("'@SUM")  # free text keeps its protection
    assert evil["first_name"].startswith("'=") and evil["full_name"].startswith("'=")
    for row in rows:  # no cell but the strictly checked E.164 one may start like a formula
        for column, cell in row.items():
            if column != "phone_e164" and not _is_number(cell):
                assert not cell.lstrip().startswith(("=", "+", "-", "@")), (column, cell)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_json_phone_is_plain_e164(database: Database) -> None:
    _lead_with_everything(database)
    with database.session() as session:
        [record] = json.loads(to_json(collect_records(session, 7)))
    assert record["phone"] == record["phone_e164"] == "+15125550143"
    assert record["credit_score"] == 742 and record["first_name"] == "Ann Marie" and record["offer_points"] == 1.0


@pytest.mark.parametrize("stored", ["+1 512", "=1+1", "+1234567890123456", "15125550143", "+0123456"])
def test_the_import_column_holds_only_strict_e164(stored: str) -> None:
    from bot.storage.export import import_safe_phone

    assert import_safe_phone(stored) is None
