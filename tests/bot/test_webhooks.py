"""Outgoing webhooks against a real HTTP receiver on 127.0.0.1: signed, retried with back-off, kept in the
table until acknowledged, also across a restart (on SQLite and PostgreSQL: the `database` fixture)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from sqlmodel import select

from bot.storage.database import Database
from bot.storage.leads import upsert_lead
from bot.storage.models import WebhookDelivery
from bot.webhooks import MAX_ATTEMPTS, WebhookSender, enqueue, retry_delay, tool_event

SECRET = "s3cret-s3cret-s3cret"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class Receiver:
    """A CRM's automation endpoint: answers with the next status in `statuses` (then 200)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    fake = Receiver()
    app = web.Application()
    app.router.add_post("/hook", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


def saved_lead(database: Database) -> int:
    with database.session() as session:
        lead, _ = upsert_lead(session, 7, {"full_name": "Ann Lee", "phone": "+15125550143"}, discord_user_id=1)
        enqueue(session, 7, "lead.saved", lead.id, {"created": True}, NOW)
        assert lead.id is not None
        return lead.id


def rows(database: Database) -> list[WebhookDelivery]:
    with database.session() as session:
        return list(session.exec(select(WebhookDelivery)).all())


async def test_deliveries_are_signed_retried_with_backoff_and_kept_until_acknowledged(
    database: Database, receiver: tuple[Receiver, str]
) -> None:
    fake, url = receiver
    lead_id = saved_lead(database)
    fake.statuses = [500]
    clock = [NOW]
    sender = WebhookSender(database, url, SECRET, clock=lambda: clock[0])
    async with aiohttp.ClientSession() as http:
        assert await sender.deliver_due(http) == 0  # the receiver failed: kept, due after the back-off
        [row] = rows(database)
        assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 500")
        assert row.next_attempt_at == NOW + retry_delay(1)
        clock[0] = NOW + retry_delay(1) - timedelta(seconds=1)
        assert await sender.deliver_due(http) == 0 and len(fake.requests) == 1  # not yet due
        clock[0] = NOW + retry_delay(1)
        assert await sender.deliver_due(http) == 1
    [row] = rows(database)
    assert (row.status, row.attempts, row.delivered_at) == ("delivered", 2, clock[0])
    headers, body = fake.requests[-1]
    expected = hmac.new(SECRET.encode(), headers["X-Cap-Timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["X-Cap-Signature"] == "sha256=" + expected.hexdigest()
    assert headers["X-Cap-Event"] == "lead.saved" and headers["X-Cap-Delivery"] == str(row.id)
    payload = json.loads(body)
    assert payload["event"] == "lead.saved" and payload["guild_id"] == "7"
    assert payload["lead"]["id"] == lead_id and payload["lead"]["phone_e164"] == "+15125550143"
    assert payload["lead"]["first_name"] == "Ann" and payload["data"] == {"created": True}


async def test_the_delivery_id_receivers_deduplicate_on_is_signed(
    database: Database, receiver: tuple[Receiver, str]
) -> None:
    """Review 2: X-Cap-Delivery alone is not covered by the signature, so a captured request replayed inside the
    timestamp window with another id passes verification and de-duplication (a second booking in the CRM).
    The id is in the signed body too."""
    fake, url = receiver
    saved_lead(database)
    async with aiohttp.ClientSession() as http:
        assert await WebhookSender(database, url, SECRET, clock=lambda: NOW).deliver_due(http) == 1
    [(headers, body)] = fake.requests
    assert json.loads(body)["delivery_id"] == headers["X-Cap-Delivery"]


async def test_a_redirect_is_not_followed_with_the_leads_data(database: Database) -> None:
    """Review 2: aiohttp follows redirects by default, and a 307/308 re-sends the POST body: the lead's personal
    data would go wherever the receiver (or anyone who controls its responses) points. Not acknowledged: kept."""
    elsewhere: list[bytes] = []

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def collect(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", redirect)
    app.router.add_post("/elsewhere", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        saved_lead(database)
        async with aiohttp.ClientSession() as http:
            sender = WebhookSender(database, f"http://127.0.0.1:{port}/hook", SECRET, clock=lambda: NOW)
            assert await sender.deliver_due(http) == 0
    finally:
        await runner.cleanup()
    assert elsewhere == []
    [row] = rows(database)
    assert (row.status, row.last_error) == ("pending", "HTTP 307")


async def test_undelivered_events_survive_a_restart(database: Database, receiver: tuple[Receiver, str]) -> None:
    fake, url = receiver
    saved_lead(database)
    async with aiohttp.ClientSession() as http:
        down = WebhookSender(database, "http://127.0.0.1:9/nothing-listens-here", SECRET, clock=lambda: NOW)
        assert await down.deliver_due(http) == 0
        later = NOW + retry_delay(1)
        restarted = WebhookSender(database, url, SECRET, clock=lambda: later)  # a new process, same table
        assert await restarted.deliver_due(http) == 1
    assert [row.status for row in rows(database)] == ["delivered"] and len(fake.requests) == 1


async def test_a_receiver_that_never_acknowledges_is_given_up_on(
    database: Database, receiver: tuple[Receiver, str]
) -> None:
    fake, url = receiver
    saved_lead(database)
    fake.statuses = [503] * MAX_ATTEMPTS
    clock = [NOW]
    sender = WebhookSender(database, url, SECRET, clock=lambda: clock[0])
    async with aiohttp.ClientSession() as http:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            await sender.deliver_due(http)
            clock[0] += retry_delay(attempt)
    [row] = rows(database)
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert retry_delay(1) == timedelta(seconds=30) and retry_delay(30) == timedelta(hours=4)


def test_events_from_tool_results() -> None:
    assert tool_event("save_lead", {"ok": True, "lead_id": 3}) == "lead.saved"
    assert tool_event("score_lead", {"ok": True, "lead_id": 3}) == "lead.scored"
    assert tool_event("schedule_call", {"ok": True, "lead_id": 3, "booked": True}) == "call.booked"
    assert tool_event("schedule_call", {"ok": True, "booked": False, "lead_id": 3}) is None  # only slots offered
    assert tool_event("save_lead", {"ok": False, "error": {}}) is None
