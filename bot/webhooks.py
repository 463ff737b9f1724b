"""Outgoing webhooks: HMAC-signed JSON for lead saved, lead scored, call booked and call ended, so a lender's
team can feed HubSpot, Salesforce or a calendar through their own automation.

Events are rows in `webhook_delivery` (written in the same worker thread as the lead they describe), and a
sender delivers due rows, retrying with exponential back-off until the receiver answers 2xx; the table
keeps them across restarts. Receivers verify `X-Cap-Signature` = "sha256=" + HMAC-SHA256(WEBHOOK_SECRET,
X-Cap-Timestamp + "." + body) and reject stale timestamps (replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import aiohttp
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from bot.storage.database import Database
from bot.storage.deals import latest_offer
from bot.storage.errors import db_error_line
from bot.storage.export import lead_record
from bot.storage.lead_activity import next_booked_calls
from bot.storage.leads import get_lead
from bot.storage.models import WebhookDelivery, utcnow

log = logging.getLogger(__name__)

EVENTS: Final = ("lead.saved", "lead.scored", "call.booked", "call.ended")
MAX_ATTEMPTS: Final = 12  # ~a day of back-off, then "failed" (the row stays for an operator)
FIRST_RETRY_SECONDS: Final = 30.0
MAX_RETRY_SECONDS: Final = 4 * 3600.0
CLAIM_SECONDS: Final = 60.0  # a claimed row is due again after this, should its sender die mid-delivery
REQUEST_TIMEOUT_SECONDS: Final = 10.0
POLL_SECONDS: Final = 5.0
BATCH: Final = 20
USER_AGENT: Final = "cap-bot-webhooks/1"


def tool_event(tool_name: str, result: Mapping[str, Any]) -> str | None:
    """The event a tool result is, if any."""
    if not result.get("ok") or result.get("lead_id") is None:
        return None
    if tool_name == "save_lead":
        return "lead.saved"
    if tool_name == "score_lead":
        return "lead.scored"
    if tool_name == "schedule_call" and result.get("booked"):
        return "call.booked"
    return None


def retry_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: 30 s, 60 s, 2 min, … capped at 4 h."""
    return timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** max(0, attempts - 1), MAX_RETRY_SECONDS))


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def enqueue(
    session: Session, guild_id: int, event: str, lead_id: int | None, data: Mapping[str, Any], now: datetime
) -> WebhookDelivery:
    """Store one event (with the lead as exported, its latest offer and next call) for delivery."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    lead = get_lead(session, guild_id, lead_id) if lead_id is not None else None
    record = None
    if lead is not None and lead.id is not None:
        record = lead_record(lead, latest_offer(session, guild_id, lead.id),
                             next_booked_calls(session, guild_id, now).get(lead.id))
    payload = {"event": event, "guild_id": str(guild_id), "occurred_at": now.isoformat(), "lead": record,
               "data": dict(data)}
    delivery = WebhookDelivery(guild_id=guild_id, lead_id=lead_id, event=event, payload=payload,
                               next_attempt_at=now, created_at=now)
    session.add(delivery)
    session.flush()
    return delivery


def claim_due(session: Session, now: datetime, limit: int = BATCH) -> list[WebhookDelivery]:
    """Due pending rows, pushed CLAIM_SECONDS on so a second sender (another process) skips them meanwhile."""
    statement = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == "pending", col(WebhookDelivery.next_attempt_at) <= now)
        .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    rows = list(session.exec(statement).all())
    for row in rows:
        row.next_attempt_at = now + timedelta(seconds=CLAIM_SECONDS)
        session.add(row)
    return rows


def settle(session: Session, delivery_id: int, error: str | None, now: datetime) -> None:
    """Record one attempt: delivered, or due again after the back-off (failed after MAX_ATTEMPTS)."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None:  # deleted meanwhile (/leads delete)
        return
    row.attempts += 1
    if error is None:
        row.status, row.delivered_at, row.last_error = "delivered", now, None
    else:
        row.last_error = error[:200]
        if row.attempts >= MAX_ATTEMPTS:
            row.status = "failed"
        else:
            row.next_attempt_at = now + retry_delay(row.attempts)
    session.add(row)


class WebhookSender:
    """Delivers due rows every POLL_SECONDS until cancelled. Constructor does no I/O."""

    def __init__(self, database: Database, url: str, secret: str, *, clock: Callable[[], datetime] = utcnow,
                 poll_seconds: float = POLL_SECONDS) -> None:
        self.database, self.url, self._secret = database, url, secret
        self._clock, self._poll = clock, poll_seconds

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT}) as http:
            while True:
                try:
                    await self.deliver_due(http)
                except SQLAlchemyError as exc:
                    log.warning("webhooks: the delivery table is unavailable (%s); retrying", db_error_line(exc))
                await asyncio.sleep(self._poll)

    async def deliver_due(self, http: aiohttp.ClientSession) -> int:
        """One round: claim, POST, settle. Returns how many were delivered."""
        now = self._clock()

        def claim() -> list[tuple[int, str, bytes]]:
            with self.database.session() as session:
                rows = claim_due(session, now)
                # The id receivers de-duplicate on goes in the signed body too: the X-Cap-Delivery header alone
                # could be changed on a replayed request without breaking the signature.
                return [(row.id or 0, row.event,
                         json.dumps({**row.payload, "delivery_id": str(row.id)}, separators=(",", ":")).encode())
                        for row in rows]

        delivered = 0
        for delivery_id, event, body in await asyncio.to_thread(claim):
            error = await self._post(http, delivery_id, event, body)
            delivered += error is None

            def record(delivery_id: int = delivery_id, error: str | None = error) -> None:
                with self.database.session() as session:
                    settle(session, delivery_id, error, self._clock())

            await asyncio.to_thread(record)
        return delivered

    async def _post(self, http: aiohttp.ClientSession, delivery_id: int, event: str, body: bytes) -> str | None:
        """None when acknowledged (2xx), else a short reason (never the body: it holds personal data)."""
        timestamp = str(int(self._clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "X-Cap-Event": event,
            "X-Cap-Delivery": str(delivery_id),
            "X-Cap-Timestamp": timestamp,
            "X-Cap-Signature": signature(self._secret, timestamp, body),
        }
        try:
            # No redirects: aiohttp follows them by default, and a 307/308 would re-send the lead's data elsewhere.
            async with http.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__
