"""Lead exports as CSV (safe to open in Excel) or JSON: the one code path behind the CLI and /leads export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlmodel import Session

from bot.storage.leads import all_guild_leads, guild_leads
from bot.storage.models import Lead

ExportFormat = Literal["csv", "json"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "json")

# Stable column order: the CSV header and the JSON keys.
EXPORT_COLUMNS = (
    "id",
    "guild_id",
    "discord_user_id",
    "full_name",
    "email",
    "phone",
    "property_address",
    "property_type",
    "property_units",
    "loan_purpose",
    "loan_program",
    "loan_amount",
    "purchase_price",
    "arv",
    "rehab_budget",
    "credit_band",
    "experience_deals",
    "liquidity",
    "timeline",
    "status",
    "score",
    "tier",
    "source",
    "notes",
    "created_at",
    "updated_at",
)
# Discord snowflakes go out as strings: spreadsheets and JSON readers round 19-digit numbers.
_SNOWFLAKES = frozenset({"guild_id", "discord_user_id"})
# OWASP CSV injection: a cell starting with one of these may be run as a formula by a spreadsheet, also
# after leading whitespace (" =1+1" and "\n=1+1" are formulas to some), and a leading NUL can hide one.
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_HIDING_PREFIXES = ("\0",)


def lead_record(lead: Lead) -> dict[str, Any]:
    """One lead as a flat dict in EXPORT_COLUMNS order (datetimes ISO 8601, snowflakes as strings)."""
    record: dict[str, Any] = {}
    for column in EXPORT_COLUMNS:
        value = getattr(lead, column)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif column in _SNOWFLAKES and value is not None:
            value = str(value)
        record[column] = value
    return record


def collect_records(session: Session, guild_id: int | None) -> list[dict[str, Any]]:
    """The guild's leads, or every guild's when guild_id is None (operator CLI only)."""
    leads = all_guild_leads(session) if guild_id is None else guild_leads(session, guild_id)
    return [lead_record(lead) for lead in leads]


def neutralise_cell(value: Any) -> Any:
    """Prefix a text cell that a spreadsheet could read as a formula with a single quote.

    Only text: numbers (loan amounts, liquidity, a negative figure) stay numbers."""
    if isinstance(value, str) and (
        value.startswith(_FORMULA_TRIGGERS + _HIDING_PREFIXES) or value.lstrip().startswith(_FORMULA_TRIGGERS)
    ):
        return "'" + value
    return value


def to_csv(records: Iterable[dict[str, Any]], columns: Sequence[str] = EXPORT_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow(["" if record.get(c) is None else neutralise_cell(record.get(c)) for c in columns])
    return buffer.getvalue()


def to_json(records: Iterable[dict[str, Any]]) -> str:
    return json.dumps(list(records), ensure_ascii=False, indent=2) + "\n"


def render(records: Sequence[dict[str, Any]], fmt: ExportFormat) -> str:
    if fmt == "csv":
        return to_csv(records)
    if fmt == "json":
        return to_json(records)
    raise ValueError(f"unknown export format: {fmt!r}")


def render_file(records: Sequence[dict[str, Any]], fmt: ExportFormat) -> bytes:
    """File contents: UTF-8, with a byte-order mark on CSV so Excel does not read it as ANSI."""
    return render(records, fmt).encode("utf-8-sig" if fmt == "csv" else "utf-8")


def export_filename(fmt: ExportFormat, guild_id: int | None, now: datetime) -> str:
    scope = "all-guilds" if guild_id is None else f"guild-{guild_id}"
    return f"cap-leads-{scope}-{now:%Y%m%d-%H%M%S}.{fmt}"
