"""Leads are personal data: a whole call (tools, transcripts, staff notices, the invite, /leads) logs none at INFO.

The Discord and Realtime servers are faked at their edges as in tests/bot/voice/test_call.py; the tools,
the database and the call's posting are real.
"""

from __future__ import annotations

import logging
from pathlib import Path
from unittest.mock import AsyncMock, MagicMock

import pytest
from discord.ext import commands

from bot.settings import load_settings
from bot.storage.database import Database
from bot.tools import build_registry
from bot.voice.call import VoiceCall
from cogs.leads import Leads
from realtime.transcript import TranscriptEntry
from tests.bot.storage.helpers import fresh_database
from tests.bot.voice.test_call import ALICE, STAFF_CHANNEL, FakeSession, add_staff_channel, drain_posts, make_channel
from tests.cogs.test_leads import interaction

NAME, PHONE, EMAIL = "Zelda Quintero-Marsh", "+15125550143", "zelda.qm@example.com"
SPOKEN_PHONE, ADDRESS = "512-555-0143", "1428 Elm Street"
PERSONAL = (NAME, "Zelda", "Quintero", PHONE, "5125550143", SPOKEN_PHONE, EMAIL, ADDRESS, "765", "300,000", "300000")


@pytest.fixture
def database(tmp_path: Path):
    with fresh_database(tmp_path) as database:
        yield database


async def test_a_call_and_the_staff_commands_log_no_personal_data_at_info(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    channel = make_channel()
    staff = add_staff_channel(channel)
    channel.guild.get_member(ALICE).send = AsyncMock()
    settings = load_settings(_env_file=None, openai_api_key="sk-test", staff_channel_id=STAFF_CHANNEL,
                             business_timezone="America/New_York")
    call = VoiceCall(channel, settings=settings, database=database, registry_factory=build_registry,
                     session_factory=FakeSession)
    await call.start()
    session = call.session
    assert isinstance(session, FakeSession)
    context = session.context_factory(frozenset({ALICE}))
    said = f"I'm {NAME}, {SPOKEN_PHONE}, {EMAIL}, buying {ADDRESS}, credit 765, 300,000 liquid"
    session.on_transcript(TranscriptEntry(role="caller", text=said, item_id="a", speakers=frozenset({ALICE})))
    saved = await session.registry.call("save_lead", {
        "full_name": NAME, "phone": SPOKEN_PHONE, "email": EMAIL, "property_address": ADDRESS, "credit_score": 765,
        "experience_deals": 6, "liquidity": 300_000, "timeline": "within_30_days", "loan_program": "dscr_rental",
    }, context)
    await session.registry.call("save_lead", {"full_name": NAME, "email": "not an email"}, context)  # a refusal
    await session.registry.call("analyze_deal", {
        "purchase_price": 400_000, "loan_amount": 300_000, "interest_rate": 7.25, "monthly_rent": 3_200,
        "property_taxes_annual": 4_800, "insurance_annual": 1_200,
    }, context)
    await session.registry.call("score_lead", {}, context)
    slots = await session.registry.call("schedule_call", {}, context)
    booked = await session.registry.call("schedule_call", {"start_time": slots["free_slots"][0]["start_time"]}, context)
    assert saved["ok"] and booked.get("booked"), booked
    await drain_posts(call)
    await call.stop("left")
    assert staff.send.await_count >= 2  # the transcript and the notices really went out

    bot = MagicMock(spec=commands.Bot)
    bot.database, bot.settings = database, settings
    cog = Leads(bot)
    for command, args in (("show", {"lead_id": saved["lead_id"]}), ("export", {"fmt": "csv"}),
                          ("delete", {"lead_id": saved["lead_id"]})):
        fake = interaction(channel.guild.id)
        await getattr(cog, command).callback(cog, fake, **args)
    await fake.followup.send.await_args.kwargs["view"].confirm.callback(interaction(channel.guild.id))

    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records if record.levelno >= logging.INFO
    )
    assert "deleted by user" in logged  # the log was captured
    leaked = [item for item in PERSONAL if item in logged]
    assert leaked == [], f"personal data in the log: {leaked}"
