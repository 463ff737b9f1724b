"""schedule_call: business hours, conflicts, time zones, DST and the .ics invite, on a fixed clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar
from sqlmodel import select

from bot.storage.database import Database
from bot.storage.leads import find_lead, upsert_lead
from bot.storage.models import ScheduledCall
from bot.tools.business_hours import BusinessHours, NonexistentTime, describe, localize, parse_start
from bot.tools.scheduling import schedule_call_tool
from realtime.tools import ToolContext, ToolRegistry
from tests.bot.tools.helpers import test_settings

NY = ZoneInfo("America/New_York")
GUILD = 6001
# Wednesday 2 December 2026, 08:00 in New York (EST, UTC-5).
NOW = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)
HOURS = BusinessHours(NY, 9, 17, frozenset(range(5)), timedelta(minutes=30))


def registry(database: Database, now: datetime = NOW, **settings: Any) -> ToolRegistry:
    """The tool, with caller 42 saved as a lead with a phone number in GUILD and the next guild."""
    with database.session() as session:
        for guild in (GUILD, GUILD + 1):
            if find_lead(session, guild, discord_user_id=42) is None:
                upsert_lead(session, guild, {"full_name": "Ann Lee", "phone": "+15125550143"}, discord_user_id=42)
    return ToolRegistry.of([schedule_call_tool(test_settings(**settings), database, clock=lambda: now)])


async def book(reg: ToolRegistry, guild: int = GUILD, **args: Any) -> dict[str, Any]:
    return await reg.call("schedule_call", args, ToolContext(guild_id=guild, user_id=42, user_name="Ann"))


def ny(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=NY).astimezone(UTC)


# --- business hours, pure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "inside"),
    [
        (ny(2026, 12, 3, 9, 0), True),
        (ny(2026, 12, 3, 16, 30), True),  # ends exactly at 17:00
        (ny(2026, 12, 3, 16, 45), False),  # would end after closing
        (ny(2026, 12, 3, 8, 59), False),
        (ny(2026, 12, 5, 10, 0), False),  # Saturday
    ],
)
def test_business_hours(start: datetime, inside: bool) -> None:
    assert HOURS.contains(start) is inside


def test_opening_hours_follow_daylight_saving() -> None:
    # US clocks spring forward on Sunday 8 March 2026: 09:00 New York is 14:00 UTC before, 13:00 after.
    assert HOURS.opening(date(2026, 3, 6))[0] == datetime(2026, 3, 6, 14, 0, tzinfo=UTC)
    assert HOURS.opening(date(2026, 3, 9))[0] == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    every_day = BusinessHours(NY, 9, 17, frozenset(range(7)), timedelta(minutes=30))
    assert every_day.opening(date(2026, 3, 8)) == (
        datetime(2026, 3, 8, 13, 0, tzinfo=UTC),
        datetime(2026, 3, 8, 21, 0, tzinfo=UTC),
    )
    assert every_day.opening(date(2026, 11, 1)) == (
        datetime(2026, 11, 1, 14, 0, tzinfo=UTC),
        datetime(2026, 11, 1, 22, 0, tzinfo=UTC),
    )


def test_slots_across_a_dst_change_are_real_half_hours() -> None:
    night = BusinessHours(NY, 1, 4, frozenset(range(7)), timedelta(minutes=30))
    slots = list(night.slots(date(2026, 3, 8)))  # 01:00–04:00 local is only two real hours that night
    assert len(slots) == 4
    assert [s.astimezone(NY).strftime("%H:%M") for s in slots] == ["01:00", "01:30", "03:00", "03:30"]


def test_times_the_clock_skips_are_refused_and_repeated_ones_take_the_first() -> None:
    with pytest.raises(NonexistentTime):
        localize(datetime(2026, 3, 8, 2, 30), NY)
    assert localize(datetime(2026, 11, 1, 1, 30), NY).astimezone(UTC).hour == 5  # EDT, the first 01:30


def test_parse_start() -> None:
    assert parse_start("2026-12-03T14:30", NY) == datetime(2026, 12, 3, 19, 30, tzinfo=UTC)
    assert parse_start("2026-12-03T14:30-08:00", NY) == datetime(2026, 12, 3, 22, 30, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_start("next Tuesday", NY)


def test_nearest_free_slots_skip_busy_and_past_times() -> None:
    busy = [(ny(2026, 12, 3, 10, 0), ny(2026, 12, 3, 10, 30))]
    slots = HOURS.nearest_free(ny(2026, 12, 3, 10, 0), NOW, busy)
    # 09:30 and 10:30 are 30 minutes away, then 09:00 wins the tie with 11:00 by being earlier.
    assert [s.astimezone(NY).strftime("%H:%M") for s in slots] == ["09:00", "09:30", "10:30"]
    assert all(s > NOW for s in HOURS.nearest_free(NOW - timedelta(days=3), NOW, []))


def test_describe() -> None:
    assert describe(ny(2026, 12, 3, 14, 30), NY) == "Thursday, December 3, 2026 at 2:30 PM EST"


# --- the tool ------------------------------------------------------------------------------------------


async def test_books_a_call_and_returns_an_invite(database: Database) -> None:
    result = await book(registry(database), start_time="2026-12-03T14:30", topic="DSCR refinance")
    assert result["ok"] and result["booked"]
    assert result["starts_at_utc"] == "2026-12-03T19:30:00+00:00"
    assert result["when_for_caller"] == "Thursday, December 3, 2026 at 2:30 PM EST"
    with database.session() as session:
        stored = session.exec(select(ScheduledCall)).one()
    assert (
        stored.guild_id == GUILD and stored.duration_minutes == 30 and stored.timezone == "America/New_York"
    )
    assert stored.starts_at == datetime(2026, 12, 3, 19, 30, tzinfo=UTC) and stored.status == "booked"
    invite = result["invite"]
    assert invite["content_type"] == "text/calendar" and invite["filename"].endswith(".ics")
    assert "\r\n" in invite["ics"]
    event = Calendar.from_ical(invite["ics"]).walk("VEVENT")[0]
    assert str(event["UID"]) == stored.ics_uid
    assert event.decoded("DTSTART") == datetime(2026, 12, 3, 19, 30, tzinfo=UTC)
    assert event.decoded("DTEND") - event.decoded("DTSTART") == timedelta(minutes=30)
    assert "DSCR refinance" in str(event["DESCRIPTION"])


async def test_a_caller_in_another_zone(database: Database) -> None:
    # 10:00 in Chicago is 11:00 in New York.
    result = await book(registry(database), start_time="2026-12-03T10:00", timezone="America/Chicago")
    assert result["booked"] and result["when_for_lender"].endswith("11:00 AM EST")
    assert result["when_for_caller"].endswith("10:00 AM CST")


async def test_london_caller_in_the_weeks_when_only_the_us_has_changed_clocks(database: Database) -> None:
    # 9 March 2026: New York is on EDT (UTC-4), London still on GMT, so the gap is 4 hours, not 5.
    reg = registry(database, now=datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    result = await book(reg, start_time="2026-03-09T15:00", timezone="Europe/London")
    assert result["booked"] and result["starts_at_utc"] == "2026-03-09T15:00:00+00:00"
    assert result["when_for_lender"] == "Monday, March 9, 2026 at 11:00 AM EDT"


async def test_on_the_dst_change_day(database: Database) -> None:
    reg = registry(
        database, now=datetime(2026, 3, 1, 12, 0, tzinfo=UTC), business_days="mon,tue,wed,thu,fri,sun"
    )
    result = await book(reg, start_time="2026-03-08T09:00")
    assert result["booked"] and result["starts_at_utc"] == "2026-03-08T13:00:00+00:00"
    skipped = await book(reg, start_time="2026-03-08T02:30")
    assert skipped["error"]["code"] == "nonexistent_time"


@pytest.mark.parametrize(
    ("start", "code"),
    [
        ("2026-12-01T10:00", "in_the_past"),
        ("2025-12-03T14:30", "in_the_past"),  # more than SEARCH_DAYS ago: slots from now on, not none
        ("0001-01-01T09:00", "in_the_past"),
        ("2026-12-02T08:10", "too_soon"),
        ("2026-12-03T18:00", "outside_business_hours"),
        ("2026-12-05T11:00", "outside_business_hours"),  # Saturday
    ],
)
async def test_refusals_come_with_suggestions(database: Database, start: str, code: str) -> None:
    result = await book(registry(database), start_time=start)
    assert result["ok"] is False and result["error"]["code"] == code
    slots = result["error"]["details"]["suggested_slots"]
    assert len(slots) == 3
    for slot in slots:
        instant = datetime.fromisoformat(slot["start_time"])
        assert instant > NOW and HOURS.contains(instant)
    with database.session() as session:
        assert session.exec(select(ScheduledCall)).all() == []


async def test_conflicts_are_refused_with_the_nearest_free_slots(database: Database) -> None:
    reg = registry(database)
    assert (await book(reg, start_time="2026-12-03T10:00"))["booked"]
    clash = await book(reg, start_time="2026-12-03T10:15")
    assert clash["error"]["code"] == "conflict"
    starts = [slot["start_time"] for slot in clash["error"]["details"]["suggested_slots"]]
    assert "2026-12-03T10:00-05:00" not in starts
    assert starts == sorted(starts) and "2026-12-03T10:30-05:00" in starts
    assert (await book(reg, start_time=starts[0]))["booked"]  # a suggestion can be booked as given


async def test_other_guilds_calls_do_not_conflict(database: Database) -> None:
    reg = registry(database)
    assert (await book(reg, start_time="2026-12-03T10:00"))["booked"]
    assert (await book(reg, guild=GUILD + 1, start_time="2026-12-03T10:00"))["booked"]


async def test_without_a_time_it_offers_the_next_slots_and_today(database: Database) -> None:
    result = await book(registry(database))
    assert result["ok"] and result["booked"] is False
    assert result["now_for_caller"] == "Wednesday, December 2, 2026 at 8:00 AM EST"
    assert [s["start_time"] for s in result["free_slots"]] == [
        "2026-12-02T09:00-05:00",
        "2026-12-02T09:30-05:00",
        "2026-12-02T10:00-05:00",
    ]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"start_time": "tomorrow at ten"}, "invalid_start_time"),
        ({"start_time": "2026-12-03T10:00", "timezone": "Mars/Olympus"}, "invalid_timezone"),
        ({"start_time": "2026-12-03T10:00", "timezone": "US"}, "invalid_timezone"),  # a folder of zones
        # a wrong year, most likely: refused with slots near now
        ({"start_time": "2027-12-03T10:00"}, "too_far_ahead"),
        ({"start_time": "9999-12-30T14:30"}, "too_far_ahead"),
        # beyond datetime's range once converted: an error the model can act on
        ({"start_time": "9999-12-31T23:00", "timezone": "Pacific/Kiritimati"}, "too_far_ahead"),
        ({"start_time": "0001-01-01T00:00", "timezone": "Asia/Tokyo"}, "invalid_start_time"),
    ],
)
async def test_bad_arguments(database: Database, args: dict[str, str], code: str) -> None:
    assert (await book(registry(database), **args))["error"]["code"] == code


async def test_custom_hours_and_length_from_settings(database: Database) -> None:
    reg = registry(
        database,
        business_timezone="America/Los_Angeles",
        business_hours_start=7,
        business_hours_end=12,
        call_duration_minutes=60,
    )
    late = await book(reg, start_time="2026-12-03T11:30")
    assert late["error"]["code"] == "outside_business_hours"
    assert "07:00-12:00 America/Los_Angeles" in late["error"]["details"]["business_hours"]
    ok = await book(reg, start_time="2026-12-03T11:00")
    assert ok["booked"] and ok["duration_minutes"] == 60


async def test_a_date_too_far_ahead_offers_slots_soon(database: Database) -> None:
    result = await book(registry(database), start_time="2027-12-03T10:00")  # a year out: the model's slip
    slots = result["error"]["details"]["suggested_slots"]
    assert slots and all(slot["start_time"].startswith("2026-12-02") for slot in slots)


async def test_slots_offered_near_the_horizon_can_all_be_booked(database: Database) -> None:
    reg = registry(database)
    # 07:00 on the 90th day is before opening; 09:00 that day would already be past the 90-day limit.
    result = await book(reg, start_time="2027-03-02T07:00")
    assert result["error"]["code"] == "outside_business_hours"
    slots = result["error"]["details"]["suggested_slots"]
    assert slots and all(slot["start_time"] < "2027-03-02" for slot in slots)
    for slot in slots:
        assert (await book(reg, start_time=slot["start_time"]))["booked"]


async def test_a_call_is_booked_only_for_a_saved_lead_with_a_phone_number(database: Database) -> None:
    reg = registry(database)
    stranger = await reg.call(
        "schedule_call", {"start_time": "2026-12-03T10:00"}, ToolContext(guild_id=GUILD, user_id=77, user_name="Bo")
    )
    assert stranger["ok"] is False and stranger["error"]["code"] == "no_lead"
    with database.session() as session:
        upsert_lead(session, GUILD, {"full_name": "Bo", "email": "bo@example.com"}, discord_user_id=77)
    no_phone = await reg.call(
        "schedule_call", {"start_time": "2026-12-03T10:00"}, ToolContext(guild_id=GUILD, user_id=77, user_name="Bo")
    )
    assert no_phone["ok"] is False and no_phone["error"]["code"] == "missing_phone"
    assert "save_lead" in no_phone["error"]["message"]
    with database.session() as session:
        assert session.exec(select(ScheduledCall)).all() == []
    slots = await reg.call("schedule_call", {}, ToolContext(guild_id=GUILD, user_id=77, user_name="Bo"))
    assert slots["ok"] and slots["free_slots"]  # offering times needs no lead yet


async def test_the_tool_promises_no_invite_it_cannot_deliver(database: Database) -> None:
    reg = registry(database)
    description = reg.specs()[0]["description"]
    assert "posted" not in description and "invite_delivery" in description
    result = await book(reg, start_time="2026-12-03T10:00")
    assert result["invite_delivery"] == "not_sent"  # only the Discord call layer sends one, and then says so
