"""The schedule_call tool: book a call with the lender's team inside business hours, with an .ics invite."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from bot.settings import Settings
from bot.storage.calls import add_call, booked_between, lock_guild_bookings
from bot.storage.database import Database
from bot.storage.models import MAX_ROW_ID, Lead, ScheduledCall, utcnow
from bot.tools._common import caller_lead, in_transaction
from bot.tools.business_hours import (
    MAX_AHEAD,
    SEARCH_DAYS,
    BusinessHours,
    NonexistentTime,
    describe,
    make_ics,
    parse_start,
)
from bot.tools.context import is_identified_user
from bot.tools.time_zones import UnknownTimeZone, resolve_zone
from realtime.tools import Tool, ToolContext, ToolFailure

DESCRIPTION = (
    "Book a call between the caller and the lender's loan team. Ask for a day and time (and the caller's "
    "time zone if they may not be in the lender's), then call with start_time as ISO 8601 local time, e.g. "
    "2026-12-03T14:30. Without start_time it returns the next free slots and the current date, so you can "
    "offer times. A time in the past, outside business hours or taken comes back as an error with "
    "`suggested_slots`: offer one or two of those. Booking needs the caller's saved lead with a phone number. "
    "On success the call is booked and `when_for_caller` is the phrase to read back; `invite_delivery` says "
    "whether the caller gets a calendar invite (direct_message) or not (not_sent): mention one only if sent."
)

# Bookings are checked and written under one lock so two calls at once cannot take the same slot.
_BOOKING_LOCK = threading.Lock()


class ScheduleCallArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_time: str | None = Field(
        None,
        max_length=40,
        description=(
            "Requested start as ISO 8601, local time in `timezone` (e.g. 2026-12-03T14:30). "
            "Omit to list the next free slots."
        ),
    )
    timezone: str | None = Field(
        None,
        max_length=64,
        description=(
            "The caller's time zone: an IANA name (America/Chicago) or a US zone as said (Eastern, CST, "
            "Pacific); omit to use the lender's."
        ),
    )
    topic: str | None = Field(None, max_length=300, description="What the caller wants to discuss.")
    lead_id: int | None = Field(
        None, ge=1, le=MAX_ROW_ID, description="The lead; omit for the current caller's lead."
    )


def refuse_without_phone(lead: Lead | None) -> None:
    """A booking staff cannot act on is worse than none: it needs the caller's saved lead and phone number."""
    if lead is None:
        raise ToolFailure(
            "no_lead",
            "Nothing was booked: save the caller's name and phone number with save_lead first, then book.",
        )
    if not lead.phone:
        raise ToolFailure(
            "missing_phone",
            "Nothing was booked: ask for the caller's phone number and save it with save_lead, then book.",
            field="phone",
        )


def schedule_call_tool(
    settings: Settings,
    database: Database,
    clock: Callable[[], datetime] = utcnow,
) -> Tool:
    hours = BusinessHours.from_settings(settings)

    def slot_dict(slot: datetime, zone: ZoneInfo) -> dict[str, str]:
        return {
            "start_time": slot.astimezone(zone).isoformat(timespec="minutes"),
            "when_for_caller": describe(slot, zone),
        }

    async def handler(args: ScheduleCallArguments, context: ToolContext) -> dict[str, Any]:
        try:
            zone = resolve_zone(args.timezone) if args.timezone and args.timezone.strip() else hours.zone
        except UnknownTimeZone as exc:
            raise ToolFailure("invalid_timezone", str(exc), field="timezone") from None
        now = clock()
        invalid_start = ToolFailure(
            "invalid_start_time",
            "Give start_time as ISO 8601 local time, e.g. 2026-12-03T14:30.",
            field="start_time",
        )
        start: datetime | None = None
        if args.start_time:
            try:
                start = parse_start(args.start_time, zone)
            except NonexistentTime as exc:
                raise ToolFailure(
                    "nonexistent_time", f"{exc}; pick another time.", field="start_time"
                ) from None
            except (ValueError, OverflowError):  # OverflowError: a year like 0001 or 9999 leaves datetime's range
                raise invalid_start from None
        # Slots are offered around the time asked for, or around now when that time has passed or is too far out.
        target = start if start is not None and now <= start <= now + MAX_AHEAD else now
        try:
            window = (max(now, target - timedelta(days=SEARCH_DAYS + 1)), target + timedelta(days=SEARCH_DAYS + 1))
        except OverflowError:
            raise invalid_start from None

        def book(session: Session) -> dict[str, Any]:
            lock_guild_bookings(session, context.guild_id)
            busy = [
                (call.starts_at, call.starts_at + timedelta(minutes=call.duration_minutes))
                for call in booked_between(session, context.guild_id, *window)
            ]
            try:
                free = [slot_dict(slot, zone) for slot in hours.nearest_free(target, now, busy)]
            except OverflowError:  # near the end of datetime's range in some zone
                raise invalid_start from None
            if start is None:
                return {
                    "booked": False,
                    "now_for_caller": describe(now, zone),
                    "business_hours": hours.summary(),
                    "free_slots": free,
                }
            problem = hours.problem(start, now, busy)
            if problem is not None:
                code, message = problem
                raise ToolFailure(
                    code,
                    f"{message} Offer one of the suggested slots.",
                    suggested_slots=free,
                    now_for_caller=describe(now, zone),
                    business_hours=hours.summary(),
                )
            lead = caller_lead(session, context, args.lead_id)
            refuse_without_phone(lead)
            assert lead is not None
            uid = f"{uuid.uuid4()}@cap-bot"
            call = add_call(
                session,
                ScheduledCall(
                    guild_id=context.guild_id,
                    lead_id=lead.id if lead else None,
                    discord_user_id=context.user_id if is_identified_user(context.user_id) else None,
                    starts_at=start,
                    duration_minutes=int(hours.duration.total_seconds() // 60),
                    timezone=zone.key,
                    topic=args.topic,
                    ics_uid=uid,
                ),
            )
            if lead is not None and lead.status in ("new", "qualified", "nurture"):
                lead.status = "scheduled"
                session.add(lead)
            name = (lead.full_name if lead else None) or context.user_name or "caller"
            ics = make_ics(
                uid=uid,
                start=start,
                duration=hours.duration,
                now=now,
                summary=f"Capital Bridge Solutions call with {name}",
                description=args.topic or "Call with the Capital Bridge Solutions loan team.",
            )
            return {
                "booked": True,
                "call_id": call.id,
                "lead_id": call.lead_id,
                "starts_at_utc": start.astimezone(UTC).isoformat(),
                "when_for_caller": describe(start, zone),
                "when_for_lender": describe(start, hours.zone),
                "duration_minutes": call.duration_minutes,
                "invite_delivery": "not_sent",  # the voice layer sets direct_message when it sends one
                "invite": {
                    "filename": f"capital-bridge-call-{call.id}.ics",
                    "content_type": "text/calendar",
                    "ics": ics,
                },
            }

        return await in_transaction(database, book, what="book the call", lock=_BOOKING_LOCK)

    return Tool("schedule_call", DESCRIPTION, ScheduleCallArguments, handler)
