"""Business-hours arithmetic for schedule_call, pure and DST-correct: local opening hours are turned into
UTC instants per day with zoneinfo, and every comparison is made in UTC."""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
from icalendar import Calendar, Event

from bot.settings import WEEKDAYS, Settings

SLOT_STEP = timedelta(minutes=30)
MIN_NOTICE = timedelta(minutes=15)  # the team needs a moment to see a booking
SEARCH_DAYS = 14  # how far either side of the requested time to look for free slots
MAX_AHEAD = timedelta(days=90)  # further out is more likely a wrong year from the model than a real plan

Interval = tuple[datetime, datetime]


class NonexistentTime(ValueError):
    """A wall-clock time skipped by a daylight-saving change (e.g. 02:30 on the spring-forward day)."""


def localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Attach the zone, refusing times the DST gap skips; an ambiguous time takes its first occurrence."""
    aware = naive.replace(tzinfo=zone, fold=0)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise NonexistentTime(f"{naive:%Y-%m-%d %H:%M} does not exist in {zone.key} (clocks jump forward)")
    return aware


def parse_start(text: str, zone: ZoneInfo) -> datetime:
    """ISO 8601 → aware UTC; a time without an offset is wall-clock time in `zone`. Raises ValueError."""
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = localize(parsed, zone)
    return parsed.astimezone(UTC)


def describe(instant: datetime, zone: ZoneInfo) -> str:
    """E.g. "Tuesday, December 1, 2026 at 2:30 PM EST"."""
    local = instant.astimezone(zone)
    hour = local.hour % 12 or 12
    return f"{local:%A, %B} {local.day}, {local.year} at {hour}:{local:%M %p %Z}"


def overlaps(start: datetime, end: datetime, busy: Sequence[Interval]) -> bool:
    return any(start < busy_end and busy_start < end for busy_start, busy_end in busy)


class ClosedDays:
    """A country's public holidays on their observed dates (the `holidays` package: US gives the federal
    ones, e.g. Independence Day 2026 on Friday July 3) plus the lender's own closed dates."""

    def __init__(self, country: str, extra: frozenset[date] = frozenset()) -> None:
        # holidays' calendars fill in years on demand (expand=True), so a booking next January is covered.
        self._holidays = holidays.country_holidays(country) if country else None
        self._extra = extra

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, date):
            return False
        return day in self._extra or (self._holidays is not None and day in self._holidays)


@dataclass(frozen=True)
class BusinessHours:
    zone: ZoneInfo
    start_hour: int
    end_hour: int  # exclusive; 24 means midnight
    weekdays: frozenset[int]  # Monday is 0
    duration: timedelta
    closed_days: Container[date] = field(default_factory=frozenset)  # holidays, local dates

    @classmethod
    def from_settings(cls, settings: Settings) -> BusinessHours:
        schedule = settings.policy.schedule
        return cls(
            ZoneInfo(settings.business_timezone),
            settings.business_hours_start,
            settings.business_hours_end,
            settings.business_weekdays,
            timedelta(minutes=settings.call_duration_minutes),
            ClosedDays(schedule.holiday_calendar, frozenset(schedule.closed_dates)),
        )

    def summary(self) -> str:
        days = ", ".join(WEEKDAYS[d].capitalize() for d in sorted(self.weekdays))
        closed = ", closed on holidays" if isinstance(self.closed_days, ClosedDays) else ""
        return f"{days}, {self.start_hour:02d}:00-{self.end_hour:02d}:00 {self.zone.key}{closed}"

    def opening(self, day: date) -> Interval | None:
        """That local day's opening hours as UTC instants, or None on a closed day."""
        if day.weekday() not in self.weekdays or day in self.closed_days:
            return None
        opens = datetime.combine(day, time(self.start_hour), tzinfo=self.zone)
        closes = datetime.combine(day, time(0), tzinfo=self.zone) + timedelta(hours=self.end_hour)
        if self.end_hour == 24:
            closes = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
        return opens.astimezone(UTC), closes.astimezone(UTC)

    def contains(self, start: datetime) -> bool:
        """Whether a call starting at `start` (aware) begins and ends within one day's opening hours."""
        hours = self.opening(start.astimezone(self.zone).date())
        return hours is not None and hours[0] <= start and start + self.duration <= hours[1]

    def slots(self, day: date) -> Iterator[datetime]:
        """Candidate starts on a day, every SLOT_STEP of real time from opening (UTC)."""
        hours = self.opening(day)
        if hours is None:
            return
        slot = hours[0]
        while slot + self.duration <= hours[1]:
            yield slot
            slot += SLOT_STEP

    def problem(self, start: datetime, now: datetime, busy: Sequence[Interval]) -> tuple[str, str] | None:
        """(code, message) when a call cannot start at `start`, else None."""
        if start < now:
            return "in_the_past", "That time has already passed."
        if start < now + MIN_NOTICE:
            return "too_soon", f"Calls need at least {int(MIN_NOTICE.total_seconds() // 60)} minutes' notice."
        if start > now + MAX_AHEAD:
            return "too_far_ahead", (f"Calls can be booked up to {MAX_AHEAD.days} days ahead; "
                                     "check the date and the year with the caller.")
        if start.astimezone(self.zone).date() in self.closed_days:
            return "outside_business_hours", f"The office is closed that day for a holiday ({self.summary()})."
        if not self.contains(start):
            return "outside_business_hours", f"That is outside business hours ({self.summary()})."
        if overlaps(start, start + self.duration, busy):
            return "conflict", "The team already has a call booked then."
        return None

    def nearest_free(
        self, target: datetime, now: datetime, busy: Sequence[Interval], count: int = 3
    ) -> list[datetime]:
        """The `count` free slots nearest `target` (before or after it, never past), in time order."""
        target_day = target.astimezone(self.zone).date()
        today = now.astimezone(self.zone).date()
        first = max(today, target_day - timedelta(days=SEARCH_DAYS))
        candidates = []
        for offset in range((target_day + timedelta(days=SEARCH_DAYS) - first).days + 1):
            for slot in self.slots(first + timedelta(days=offset)):
                if now + MIN_NOTICE <= slot <= now + MAX_AHEAD and not overlaps(slot, slot + self.duration, busy):
                    candidates.append(slot)
        candidates.sort(key=lambda slot: (abs(slot - target), slot))
        return sorted(candidates[:count])


def make_ics(
    *, uid: str, start: datetime, duration: timedelta, summary: str, description: str, now: datetime
) -> str:
    """A one-event RFC 5545 calendar (times in UTC, which every client converts to its own zone)."""
    calendar = Calendar()
    calendar.add("prodid", "-//Capital Bridge Solutions//Cap//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", now.astimezone(UTC))
    event.add("dtstart", start.astimezone(UTC))
    event.add("dtend", (start + duration).astimezone(UTC))
    event.add("summary", summary)
    event.add("description", description)
    event.add("status", "CONFIRMED")
    calendar.add_component(event)
    return calendar.to_ical().decode("utf-8")
