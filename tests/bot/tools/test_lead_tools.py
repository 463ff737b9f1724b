"""analyze_deal, save_lead and score_lead through the registry, as the model calls them."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from bot.storage.conversations import create_conversation, get_conversation
from bot.storage.database import Database
from bot.storage.leads import get_lead, list_leads
from bot.storage.models import DealAnalysis, Lead, Offer
from bot.tools import build_registry
from bot.tools.context import console_context
from bot.tools.scheduling import schedule_call_tool
from realtime.tools import ToolContext, ToolRegistry
from tests.bot.tools.helpers import test_settings

GUILD, OTHER_GUILD = 5001, 5002
ANN, BOB = 777000000000000001, 777000000000000002
RENTAL = {
    "purchase_price": 400_000,
    "loan_amount": 300_000,
    "interest_rate": 7.25,
    "monthly_rent": 3_200,
    "property_taxes_annual": 4_800,
    "insurance_annual": 1_200,
    "closing_costs": 8_000,
}
QUALIFIED = {
    "credit_score": 765,
    "experience_deals": 6,
    "liquidity": 300_000,
    "timeline": "within_30_days",
    "loan_program": "dscr_rental",
}


@pytest.fixture
def registry(database: Database) -> ToolRegistry:
    return build_registry(test_settings(), database)


def caller(user: int = ANN, guild: int = GUILD, conversation: int | None = None) -> ToolContext:
    return ToolContext(
        guild_id=guild, channel_id=10, user_id=user, user_name="Ann", conversation_id=conversation
    )


async def call(
    registry: ToolRegistry, name: str, args: dict[str, Any], context: ToolContext
) -> dict[str, Any]:
    return await registry.call(name, args, context)


def leads_in(database: Database, guild: int) -> list[Lead]:
    with database.session() as session:
        return list_leads(session, guild, limit=100)


async def test_save_lead_normalises_contact_and_lists_what_is_missing(registry, database) -> None:
    result = await call(
        registry,
        "save_lead",
        {"full_name": " Ann Lee ", "email": "Ann.Lee@Example.COM", "phone": "(212) 555-0100"},
        caller(),
    )
    assert result["ok"] and result["created"]
    assert result["missing"][:3] == ["loan_program", "loan_purpose", "property_address"]
    [lead] = leads_in(database, GUILD)
    assert (lead.full_name, lead.email, lead.phone) == ("Ann Lee", "ann.lee@example.com", "+12125550100")
    assert lead.discord_user_id == ANN and lead.source == "voice" and lead.status == "new"


async def test_the_same_caller_is_updated_not_duplicated(registry, database) -> None:
    await call(registry, "save_lead", {"full_name": "Ann Lee", "phone": "212 555 0100"}, caller())
    again = await call(
        registry, "save_lead", {"full_name": "Ann Lee", **QUALIFIED, "loan_purpose": "purchase"}, caller()
    )
    assert not again["created"]
    [lead] = leads_in(database, GUILD)
    # The exact score is kept, not only its band.
    assert (lead.credit_score, lead.credit_band, lead.credit) == (765, "760+", "765")
    assert lead.experience_deals == 6 and lead.phone == "+12125550100"
    assert "loan_program" not in again["missing"] and "credit_band" not in again["missing"]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("email", "ann@", "invalid_email"),
        ("email", "no at sign", "invalid_email"),
        ("phone", "555-1234", "invalid_phone"),
        ("phone", "call me maybe", "invalid_phone"),
    ],
)
async def test_bad_contact_details_are_a_structured_error(registry, database, field, value, code) -> None:
    result = await call(registry, "save_lead", {"full_name": "Ann", field: value}, caller())
    assert result["ok"] is False and result["error"]["code"] == code
    assert result["error"]["details"]["field"] == field
    assert "Nothing was saved" in result["error"]["message"]  # so the retry resends every field
    assert leads_in(database, GUILD) == []


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("save_lead", {"full_name": "   ", "email": "ann@example.com"}, "full_name"),
        ("save_lead", {"full_name": "Ann", "email": "ann@example.com", "loan_amount": float("inf")}, "loan_amount"),
        ("analyze_deal", {**RENTAL, "monthly_rent": float("nan")}, "monthly_rent"),
        ("search_knowledge_base", {"query": "DSCR", "filters": {"x": 1}}, "filters"),
        ("research_market", {"market": "Austin, TX", "year": 2026}, "year"),
    ],
)
async def test_arguments_the_tools_refuse(registry, database, tool: str, args: dict, field: str) -> None:
    # A blank name would erase the stored one; 1e400 parses to infinity, which no column or JSON may hold.
    result = await call(registry, tool, args, caller())
    assert result["error"]["code"] == "invalid_arguments"
    assert field in {problem["field"] for problem in result["error"]["details"]["problems"]}
    assert leads_in(database, GUILD) == []


async def test_international_numbers_keep_their_country(registry, database) -> None:
    await call(registry, "save_lead", {"full_name": "Ann", "phone": "+44 20 7946 0958"}, caller())
    assert leads_in(database, GUILD)[0].phone == "+442079460958"


async def test_an_anonymous_caller_must_give_a_contact(registry, database) -> None:
    result = await call(registry, "save_lead", {"full_name": "Console Person"}, console_context())
    assert result["error"]["code"] == "missing_contact"
    ok = await call(
        registry, "save_lead", {"full_name": "Console Person", "email": "c@example.com"}, console_context()
    )
    assert ok["ok"] and leads_in(database, 0)[0].source == "console"
    assert leads_in(database, 0)[0].discord_user_id is None  # the console caller identifies nobody


async def test_missing_arguments_are_named(registry) -> None:
    result = await call(
        registry, "save_lead", {"email": "a@example.com", "favourite_colour": "red"}, caller()
    )
    fields = {p["field"] for p in result["error"]["details"]["problems"]}
    assert result["error"]["code"] == "invalid_arguments" and fields == {"full_name", "favourite_colour"}


async def test_a_failed_save_loses_nothing_already_stored(registry, database, monkeypatch) -> None:
    await call(registry, "save_lead", {"full_name": "Ann Lee", "email": "ann@example.com"}, caller())

    def broken(*args: Any, **kwargs: Any) -> int:
        raise OperationalError("UPDATE", {}, Exception("disk I/O error"))

    monkeypatch.setattr("bot.tools.leads.claim_analyses", broken)
    result = await call(registry, "save_lead", {"full_name": "Ann Changed", "liquidity": 1.0}, caller())
    assert result["ok"] is False and result["error"]["code"] == "storage_failed"
    [lead] = leads_in(database, GUILD)
    assert lead.full_name == "Ann Lee" and lead.liquidity is None  # the half-done update was rolled back


async def test_analysis_is_stored_and_linked_when_the_lead_comes_later(registry, database) -> None:
    with database.session() as session:
        conversation_id = create_conversation(session, GUILD, 10).id
    context = caller(conversation=conversation_id)
    analysis = await call(registry, "analyze_deal", RENTAL, context)
    assert analysis["ok"] and analysis["saved"] and analysis["lead_id"] is None
    assert analysis["program"] == "dscr_rental" and analysis["verdict"]["fits"] is None  # no credit score yet
    assert "credit score" in analysis["verdict"]["questions"][0]
    assert analysis["at_your_rate"]["monthly_principal_interest"] == 2046.53  # the 7.25 % the caller named
    assert analysis["results"]["monthly_principal_interest"] == 2360.1  # the lender's: tier B's top, 8.75 %
    saved = await call(registry, "save_lead", {"full_name": "Ann", "email": "ann@example.com"}, context)
    with database.session() as session:
        stored = session.get(DealAnalysis, analysis["analysis_id"])
        assert stored.lead_id == saved["lead_id"] and stored.guild_id == GUILD
        assert get_conversation(session, GUILD, conversation_id).lead_id == saved["lead_id"]
        lead = get_lead(session, GUILD, saved["lead_id"])
    assert lead.purchase_price == 400_000 and lead.loan_amount == 300_000  # not asked twice
    assert "purchase_price" not in saved["missing"]


async def test_analyze_deal_rejects_nonsense(registry) -> None:
    result = await call(
        registry, "analyze_deal", {"purchase_price": 0, "loan_amount": 1, "interest_rate": 99}, caller()
    )
    assert result["error"]["code"] == "invalid_arguments"
    assert {p["field"] for p in result["error"]["details"]["problems"]} == {"purchase_price", "interest_rate"}


async def test_an_early_analysis_is_judged_against_the_program_the_caller_chose(registry) -> None:
    early = {"purchase_price": 300_000, "loan_amount": 240_000, "interest_rate": 7.5}  # no rent yet
    guessed = await call(registry, "analyze_deal", early, caller(BOB))
    assert guessed["program_source"] == "inferred from the deal" and guessed["program"] != "dscr_rental"
    await call(registry, "save_lead", {"full_name": "Ann", "email": "ann@example.com",
                                       "loan_program": "dscr_rental"}, caller())
    chosen = await call(registry, "analyze_deal", early, caller())
    assert (chosen["program"], chosen["program_source"]) == ("dscr_rental", "the caller's lead")
    assert chosen["verdict"]["fits"] is None  # DSCR needs the rent; the 80 % LTV is within the program's limit
    assert {c["metric"]: c["passed"] for c in chosen["verdict"]["checks"]} == {"dscr": None, "ltv_percent": True}
    asked = await call(registry, "analyze_deal", {**early, "program": "bridge"}, caller())
    assert (asked["program"], asked["program_source"]) == ("bridge", "asked")


async def test_analysis_figures_survive_a_storage_failure(registry, monkeypatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr("bot.tools.deals.add_analysis", broken)
    result = await call(registry, "analyze_deal", RENTAL, caller())
    assert result["ok"] and result["saved"] is False and result["results"]["ltv_percent"] == 75.0


async def test_score_needs_a_lead(registry) -> None:
    result = await call(registry, "score_lead", {}, caller())
    assert result["error"]["code"] == "no_lead"


async def test_a_qualifying_lead_gets_one_offer(registry, database) -> None:
    await call(registry, "save_lead", {"full_name": "Ann", "email": "ann@example.com", **QUALIFIED}, caller())
    await call(registry, "analyze_deal", RENTAL, caller())
    first = await call(registry, "score_lead", {}, caller())
    assert first["ok"] and first["qualifies"] and first["tier"] == "A"
    assert first["offer"]["amount"] == 300_000 and first["offer"]["rate_range_percent"] == [6.75, 7.75]
    assert first["term_sheet"].startswith("Indicative DSCR rental terms")
    again = await call(registry, "score_lead", {}, caller())
    assert again["offer"]["offer_id"] == first["offer"]["offer_id"]  # re-scoring does not pile up offers
    with database.session() as session:
        assert len(session.exec(select(Offer)).all()) == 1
        lead = get_lead(session, GUILD, first["lead_id"])
    assert (lead.score, lead.tier, lead.status) == (first["score"], "A", "qualified")


async def test_a_weak_lead_hears_what_blocks_it(registry, database) -> None:
    await call(
        registry,
        "save_lead",
        {
            "full_name": "Bob",
            "email": "bob@example.com",
            "credit_band": "below_600",
            "timeline": "just_exploring",
        },
        caller(BOB),
    )
    result = await call(registry, "score_lead", {}, caller(BOB))
    assert result["ok"] and not result["qualifies"] and result["offer"] is None
    assert any("no deal analyzed" in b for b in result["blockers"])
    assert leads_in(database, GUILD)[0].status == "nurture"


async def test_a_caller_cannot_score_someone_elses_lead(registry) -> None:
    bob = await call(registry, "save_lead", {"full_name": "Bob", "email": "bob@example.com"}, caller(BOB))
    result = await call(registry, "score_lead", {"lead_id": bob["lead_id"]}, caller(ANN))
    assert result["error"]["code"] == "lead_not_found"
    # the operator's console may
    operator = ToolContext(guild_id=GUILD, user_id=0)
    assert (await call(registry, "score_lead", {"lead_id": bob["lead_id"]}, operator))["ok"]


async def test_guilds_never_see_each_other(registry, database) -> None:
    a = await call(registry, "save_lead", {"full_name": "Ann", "email": "ann@example.com"}, caller())
    b = await call(
        registry, "save_lead", {"full_name": "Ann", "email": "ann@example.com"}, caller(guild=OTHER_GUILD)
    )
    assert a["lead_id"] != b["lead_id"] and b["created"]
    foreign = await call(registry, "score_lead", {"lead_id": a["lead_id"]}, ToolContext(guild_id=OTHER_GUILD))
    assert foreign["error"]["code"] == "lead_not_found"
    assert [lead.id for lead in leads_in(database, OTHER_GUILD)] == [b["lead_id"]]


async def test_two_callers_in_one_conversation_keep_their_own_leads(registry, database) -> None:
    with database.session() as session:
        conversation_id = create_conversation(session, GUILD, 10).id
    ann, bob = caller(ANN, conversation=conversation_id), caller(BOB, conversation=conversation_id)
    ann_analysis = await call(registry, "analyze_deal", RENTAL, ann)  # before Ann has a lead
    a = await call(registry, "save_lead", {"full_name": "Ann", "email": "ann@example.com", **QUALIFIED}, ann)
    bob_analysis = await call(registry, "analyze_deal", {**RENTAL, "purchase_price": 500_000}, bob)
    assert bob_analysis["lead_id"] is None  # not Ann's lead
    b = await call(
        registry, "save_lead", {"full_name": "Bob", "email": "bob@example.com", "credit_band": "below_600"}, bob
    )
    assert b["created"] and b["lead_id"] != a["lead_id"]
    with database.session() as session:
        ann_lead, bob_lead = get_lead(session, GUILD, a["lead_id"]), get_lead(session, GUILD, b["lead_id"])
        assert session.get(DealAnalysis, ann_analysis["analysis_id"]).lead_id == a["lead_id"]
        assert session.get(DealAnalysis, bob_analysis["analysis_id"]).lead_id == b["lead_id"]
    assert (ann_lead.full_name, ann_lead.email, ann_lead.credit) == ("Ann", "ann@example.com", "765")
    assert ann_lead.purchase_price == 400_000 and bob_lead.purchase_price == 500_000
    assert (bob_lead.discord_user_id, bob_lead.credit_band) == (BOB, "below_600")


async def test_a_second_caller_cannot_score_or_schedule_the_first_callers_lead(database) -> None:
    now = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)  # Wednesday 08:00 in New York
    settings = test_settings()
    tools = [build_registry(settings, database).tools[name] for name in ("save_lead", "analyze_deal", "score_lead")]
    reg = ToolRegistry.of([*tools, schedule_call_tool(settings, database, clock=lambda: now)])
    with database.session() as session:
        conversation_id = create_conversation(session, GUILD, 10).id
    ann, bob = caller(ANN, conversation=conversation_id), caller(BOB, conversation=conversation_id)
    a = await call(reg, "save_lead", {"full_name": "Ann", "email": "ann@example.com", **QUALIFIED}, ann)
    await call(reg, "analyze_deal", RENTAL, ann)
    assert (await call(reg, "score_lead", {}, bob))["error"]["code"] == "no_lead"
    assert (await call(reg, "score_lead", {"lead_id": a["lead_id"]}, bob))["error"]["code"] == "lead_not_found"
    start = {"start_time": "2026-12-03T10:00"}
    taken = await call(reg, "schedule_call", {**start, "lead_id": a["lead_id"]}, bob)
    assert taken["error"]["code"] == "lead_not_found"
    unbooked = await call(reg, "schedule_call", start, bob)  # Bob has no lead of his own: nothing is booked
    assert unbooked["error"]["code"] == "no_lead"
    with database.session() as session:
        lead = get_lead(session, GUILD, a["lead_id"])
    assert (lead.score, lead.status) == (None, "new")
    assert (await call(reg, "score_lead", {}, ann))["lead_id"] == a["lead_id"]  # Ann still reaches hers


async def test_an_unidentified_caller_in_a_real_guild_cannot_reach_a_lead_by_id(registry, database) -> None:
    ann = await call(registry, "save_lead", {"full_name": "Ann", "email": "ann@example.com"}, caller())
    nobody = ToolContext(guild_id=GUILD, channel_id=10, user_id=None)
    result = await call(registry, "score_lead", {"lead_id": ann["lead_id"]}, nobody)
    assert result["error"]["code"] == "lead_not_found"
    # nor take it over by giving Ann's email: that makes a lead of its own
    mallory = await call(registry, "save_lead", {"full_name": "Mallory", "email": "ann@example.com"}, nobody)
    assert mallory["created"] and mallory["lead_id"] != ann["lead_id"]
    with database.session() as session:
        assert get_lead(session, GUILD, ann["lead_id"]).full_name == "Ann"
    # the console guild is the operator's: any of its leads by id
    console = await call(registry, "save_lead", {"full_name": "C", "email": "c@example.com"}, console_context())
    operator = ToolContext(guild_id=0, user_id=None)
    assert (await call(registry, "score_lead", {"lead_id": console["lead_id"]}, operator))["ok"]


async def test_an_unidentified_save_claims_only_the_conversations_anonymous_analyses(registry, database) -> None:
    with database.session() as session:
        conversation_id = create_conversation(session, GUILD, 10).id
    nobody = ToolContext(guild_id=GUILD, channel_id=10, user_id=None, conversation_id=conversation_id)
    anns = await call(registry, "analyze_deal", RENTAL, caller(ANN, conversation=conversation_id))
    anonymous = await call(registry, "analyze_deal", RENTAL, nobody)
    saved = await call(registry, "save_lead", {"full_name": "Someone", "email": "s@example.com"}, nobody)
    with database.session() as session:
        assert session.get(DealAnalysis, anonymous["analysis_id"]).lead_id == saved["lead_id"]
        assert session.get(DealAnalysis, anns["analysis_id"]).lead_id is None  # still Ann's to claim


@pytest.mark.parametrize("tool", ["score_lead", "schedule_call"])
async def test_a_lead_id_beyond_the_database_integer_is_an_argument_error(registry, tool: str) -> None:
    result = await call(registry, tool, {"lead_id": 2**31}, caller())  # PostgreSQL's int4 overflowed
    assert result["error"]["code"] == "invalid_arguments"
    assert [p["field"] for p in result["error"]["details"]["problems"]] == ["lead_id"]


def hold_the_lead_table(database: Database, started: threading.Event, seconds: float) -> None:
    """Another writer holding the lead table's lock (SQLite: the database's write lock)."""
    raw = database.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if database.engine.url.get_backend_name() == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        else:
            cursor.execute(f"LOCK TABLE {Lead.__tablename__} IN EXCLUSIVE MODE")
        started.set()
        time.sleep(seconds)
        raw.rollback()
    finally:
        raw.close()


async def test_a_save_that_timed_out_does_not_land_afterwards(database: Database) -> None:
    """The lock wait (SQLite busy timeout, PostgreSQL lock_timeout: 5 s) outlasts a short TOOL_TIMEOUT_SECONDS:
    once the model has been told the save timed out, the save must not happen after all."""
    registry = build_registry(test_settings(tool_timeout_seconds=0.6), database)
    started = threading.Event()
    blocker = threading.Thread(target=hold_the_lead_table, args=(database, started, 1.5))
    blocker.start()
    try:
        assert started.wait(5)
        result = await call(registry, "save_lead", {"full_name": "Ann Lee", "phone": "212 555 0100"}, caller())
        assert result["ok"] is False and result["error"]["code"] == "timeout"
        assert "changed nothing" in result["error"]["message"]
    finally:
        await asyncio.to_thread(blocker.join)
    await asyncio.sleep(0.5)  # the save's worker thread gets the lock and finishes its transaction
    assert leads_in(database, GUILD) == []


async def test_the_exact_credit_score_is_kept_beside_its_band(registry, database) -> None:
    saved = await call(registry, "save_lead", {"full_name": "Ann", "email": "ann@example.com", "credit_score": 742},
                       caller())
    with database.session() as session:
        lead = get_lead(session, GUILD, saved["lead_id"])
    assert (lead.credit_score, lead.credit_band) == (742, "720-759")
