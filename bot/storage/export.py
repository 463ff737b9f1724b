"""Lead exports as CSV (safe to open in Excel, ready for a CRM import) or JSON: the one code path behind the CLI
and /leads export.

CSV injection: every text cell that a spreadsheet could read as a formula gets a leading apostrophe
(`neutralise_cell`), names, notes and addresses included; numbers stay numbers. The only exception is
`phone_e164`, written only when it is strictly E.164, so CRMs import it as is; `phone` is the same number
as free text, protected like the rest."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from nameparser import HumanName
from sqlmodel import Session

from bot.storage.lead_activity import latest_offers, next_booked_calls
from bot.storage.leads import all_guild_leads, guild_leads
from bot.storage.models import Lead, Offer, ScheduledCall, utcnow

ExportFormat = Literal["csv", "json"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "json")

# Stable column order: the CSV header and the JSON keys. Names follow what CRM imports map (HubSpot,
# Salesforce): first/last name, an E.164 phone, the offer and the next booked call as their own columns.
EXPORT_COLUMNS = (
    "id",
    "guild_id",
    "discord_user_id",
    "full_name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "phone_e164",
    "property_address",
    "property_type",
    "property_units",
    "loan_purpose",
    "loan_program",
    "loan_amount",
    "purchase_price",
    "arv",
    "rehab_budget",
    "credit_score",
    "credit_band",
    "experience_deals",
    "liquidity",
    "timeline",
    "status",
    "score",
    "tier",
    "offer_program",
    "offer_amount",
    "offer_max_ltv",
    "offer_rate_min",
    "offer_rate_max",
    "offer_points",
    "offer_term_months",
    "offer_expires_at",
    "next_call_at",
    "next_call_timezone",
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
# The one column exempt from the apostrophe: it holds a value only when it is exactly "+" and up to 15 digits
# (E.164), which no spreadsheet can run as anything but a number, so a CRM imports it as written.
IMPORT_SAFE_COLUMNS = frozenset({"phone_e164"})
_STRICT_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def import_safe_phone(phone: str | None) -> str | None:
    """The stored phone when it is strictly E.164 (what save_lead stores), else None."""
    return phone if phone is not None and _STRICT_E164.fullmatch(phone) else None


def split_name(full_name: str | None) -> tuple[str | None, str | None]:
    """(first, last) as a CRM wants them: middle names stay with the first, suffixes with the last, titles go."""
    if not full_name or not full_name.strip():
        return None, None
    name = HumanName(full_name.strip())
    first = " ".join(part for part in (name.first, name.middle) if part)
    last = " ".join(part for part in (name.last, name.suffix) if part)
    if not first and not last:  # a single word nameparser took for a title ("Prince"): keep it as the first name
        return full_name.strip(), None
    if not first:  # one name only: CRMs want a first name before a last
        return last, None
    return first, last or None


def lead_record(lead: Lead, offer: Offer | None = None, next_call: ScheduledCall | None = None) -> dict[str, Any]:
    """One lead as a flat dict in EXPORT_COLUMNS order (datetimes ISO 8601, snowflakes as strings)."""
    first, last = split_name(lead.full_name)
    derived: dict[str, Any] = {
        "first_name": first,
        "last_name": last,
        "phone_e164": import_safe_phone(lead.phone),
        "offer_program": offer.program if offer else None,
        "offer_amount": offer.amount if offer else None,
        "offer_max_ltv": offer.max_ltv if offer else None,
        "offer_rate_min": offer.rate_min if offer else None,
        "offer_rate_max": offer.rate_max if offer else None,
        "offer_points": offer.points if offer else None,
        "offer_term_months": offer.term_months if offer else None,
        "offer_expires_at": offer.expires_at if offer else None,
        "next_call_at": next_call.starts_at if next_call else None,
        "next_call_timezone": next_call.timezone if next_call else None,
    }
    record: dict[str, Any] = {}
    for column in EXPORT_COLUMNS:
        value = derived[column] if column in derived else getattr(lead, column)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif column in _SNOWFLAKES and value is not None:
            value = str(value)
        record[column] = value
    return record


def collect_records(session: Session, guild_id: int | None, now: datetime | None = None) -> list[dict[str, Any]]:
    """The guild's leads, or every guild's when guild_id is None (operator CLI only), with each one's latest
    offer and next booked call (from `now`, default the current time)."""
    leads = all_guild_leads(session) if guild_id is None else guild_leads(session, guild_id)
    offers = latest_offers(session, guild_id)
    calls = next_booked_calls(session, guild_id, now or utcnow())
    return [lead_record(lead, offers.get(lead.id or 0), calls.get(lead.id or 0)) for lead in leads]


def neutralise_cell(value: Any) -> Any:
    """Prefix a text cell that a spreadsheet could read as a formula with a single quote.

    Only text: numbers (loan amounts, liquidity, a negative figure) stay numbers."""
    if isinstance(value, str) and (
        value.startswith(_FORMULA_TRIGGERS + _HIDING_PREFIXES) or value.lstrip().startswith(_FORMULA_TRIGGERS)
    ):
        return "'" + value
    return value


def _csv_cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if column in IMPORT_SAFE_COLUMNS and import_safe_phone(value) == value:
        return value
    return neutralise_cell(value)


def to_csv(records: Iterable[dict[str, Any]], columns: Sequence[str] = EXPORT_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([_csv_cell(column, record.get(column)) for column in columns])
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
