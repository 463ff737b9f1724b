from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from bot.storage import leads as repo
from bot.storage.conversations import create_conversation
from bot.storage.database import Database
from bot.storage.deals import add_analysis, add_offer
from bot.storage.models import (
    Conversation,
    DealAnalysis,
    Disclosure,
    Lead,
    Offer,
    ScheduledCall,
    Turn,
    WebhookDelivery,
)

GUILD_A, GUILD_B = 111, 222
ANN, BOB = 9001, 9002


def save(database: Database, guild: int, user: int | None = None, notes: str | None = None, **fields):
    with database.session() as session:
        lead, created = repo.upsert_lead(session, guild, fields, discord_user_id=user, notes=notes)
        return lead.id, created


def test_upsert_creates_then_updates_by_discord_user(database: Database) -> None:
    first, created = save(database, GUILD_A, ANN, full_name="Ann Lee", email="ann@example.com")
    again, created_again = save(database, GUILD_A, ANN, full_name="Ann Lee", liquidity=50_000.0)
    assert created and not created_again and first == again
    with database.session() as session:
        lead = repo.get_lead(session, GUILD_A, first)
    assert lead.email == "ann@example.com" and lead.liquidity == 50_000.0  # None fields never erase


def test_upsert_matches_email_case_insensitively_then_phone(database: Database) -> None:
    by_email, _ = save(database, GUILD_A, full_name="C", email="carol@example.com")
    assert save(database, GUILD_A, full_name="C", email="CAROL@example.com")[0] == by_email
    by_phone, _ = save(database, GUILD_A, full_name="D", phone="+12125550100")
    assert save(database, GUILD_A, full_name="D2", phone="+12125550100")[0] == by_phone
    with database.session() as session:
        assert repo.count_leads(session, GUILD_A) == 2


def test_email_match_adopts_the_discord_user_but_never_takes_anothers_lead(database: Database) -> None:
    cli_lead, _ = save(database, GUILD_A, full_name="Ann", email="ann@example.com")
    adopted, created = save(database, GUILD_A, ANN, full_name="Ann", email="ann@example.com")
    assert adopted == cli_lead and not created
    other, created = save(database, GUILD_A, BOB, full_name="Mallory", email="ann@example.com")
    assert created and other != cli_lead
    with database.session() as session:
        assert repo.get_lead(session, GUILD_A, cli_lead).full_name == "Ann"


def test_notes_are_appended_not_replaced(database: Database) -> None:
    lead_id, _ = save(database, GUILD_A, ANN, notes="Wants a quick close.", full_name="Ann")
    save(database, GUILD_A, ANN, notes="Has two rentals already.", full_name="Ann")
    save(database, GUILD_A, ANN, notes="Has two rentals already.", full_name="Ann")
    with database.session() as session:
        assert (
            repo.get_lead(session, GUILD_A, lead_id).notes == "Wants a quick close.\nHas two rentals already."
        )


def test_a_new_note_inside_an_old_one_is_still_added(database: Database) -> None:
    lead_id, _ = save(database, GUILD_A, ANN, notes="Has two rentals already.\nWants 12 months.", full_name="Ann")
    save(database, GUILD_A, ANN, notes="rentals", full_name="Ann")  # a substring, but a note of its own
    save(database, GUILD_A, ANN, notes="Wants 12 months.", full_name="Ann")  # a whole line already there
    save(database, GUILD_A, ANN, notes="Has two rentals already.\nWants 12 months.", full_name="Ann")
    with database.session() as session:
        notes = repo.get_lead(session, GUILD_A, lead_id).notes
    assert notes == "Has two rentals already.\nWants 12 months.\nrentals"


def test_unknown_fields_are_refused(database: Database) -> None:
    with pytest.raises(ValueError), database.session() as session:
        repo.upsert_lead(session, GUILD_A, {"guild_id": GUILD_B})


def test_guild_isolation(database: Database) -> None:
    a_id, _ = save(database, GUILD_A, ANN, full_name="Ann in A", email="ann@example.com")
    b_id, created = save(database, GUILD_B, ANN, full_name="Ann in B", email="ann@example.com")
    assert created and a_id != b_id  # same person, same email: still two tenants' rows
    with database.session() as session:
        assert repo.get_lead(session, GUILD_B, a_id) is None
        assert [lead.id for lead in repo.list_leads(session, GUILD_A)] == [a_id]
        assert repo.count_leads(session, GUILD_B) == 1
        assert repo.find_lead(session, GUILD_B, email="ann@example.com").id == b_id
        assert repo.delete_lead(session, GUILD_B, a_id) is False
        assert [lead.id for lead in repo.guild_leads(session, GUILD_B)] == [b_id]
        assert {lead.id for lead in repo.all_guild_leads(session)} == {a_id, b_id}


def test_list_filters_and_pages_newest_first(database: Database) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with database.session() as session:
        for n in range(25):
            lead, _ = repo.upsert_lead(session, GUILD_A, {"full_name": f"L{n}"}, discord_user_id=n + 1)
            lead.status = "qualified" if n % 2 else "new"
            lead.tier = "A" if n % 5 == 0 else "C"
            lead.updated_at = base + timedelta(hours=n)
            session.add(lead)
    with database.session() as session:
        first_page = repo.list_leads(session, GUILD_A, limit=10)
        assert [lead.full_name for lead in first_page[:2]] == ["L24", "L23"]
        assert len(repo.list_leads(session, GUILD_A, offset=20, limit=10)) == 5
        assert repo.count_leads(session, GUILD_A, status="qualified") == 12
        assert repo.count_leads(session, GUILD_A, tier="A") == 5
        assert repo.count_leads(session, GUILD_A, status="new", tier="A") == 3
        assert all(lead.tier == "A" for lead in repo.list_leads(session, GUILD_A, tier="A"))


def _offer(lead_id: int) -> Offer:
    return Offer(guild_id=GUILD_A, lead_id=lead_id, program="bridge", amount=1.0, max_ltv=0.7, rate_min=9,
                 rate_max=10, points=2, term_months=12, expires_at=datetime.now(UTC) + timedelta(days=1))


def _derived(database: Database, lead_id: int, channel: int) -> None:
    """An offer, an analysis, a booked call and a conversation with a turn and an anonymous analysis."""
    with database.session() as session:
        add_offer(session, _offer(lead_id))
        add_analysis(session, DealAnalysis(guild_id=GUILD_A, lead_id=lead_id))
        conversation = create_conversation(session, GUILD_A, channel)
        conversation.lead_id = lead_id
        session.add(Turn(guild_id=GUILD_A, conversation_id=conversation.id, seq=1, role="caller",
                         text="my number is 512 555 0143", spoken_at=datetime.now(UTC)))
        add_analysis(session, DealAnalysis(guild_id=GUILD_A, conversation_id=conversation.id))
        session.add(Disclosure(guild_id=GUILD_A, conversation_id=conversation.id, discord_user_id=channel,
                               wording_version="v1"))
        session.add(WebhookDelivery(guild_id=GUILD_A, lead_id=lead_id, event="lead.saved", payload={"lead": {}}))
        session.add(ScheduledCall(guild_id=GUILD_A, lead_id=lead_id, starts_at=datetime.now(UTC), duration_minutes=30,
                                  timezone="UTC", ics_uid=f"{lead_id}@cap-bot"))


def _rows(database: Database) -> dict[str, int]:
    with database.session() as session:
        return {model.__name__: len(session.exec(select(model)).all())
                for model in (Lead, Offer, DealAnalysis, Conversation, Turn, ScheduledCall, Disclosure,
                              WebhookDelivery)}


def test_delete_erases_everything_derived_from_the_lead(database: Database) -> None:
    lead_id, _ = save(database, GUILD_A, ANN, full_name="Ann")
    kept_id, _ = save(database, GUILD_A, BOB, full_name="Bob")
    _derived(database, lead_id, 5)
    _derived(database, kept_id, 6)
    with database.session() as session:
        assert repo.delete_lead(session, GUILD_A, lead_id)
    with database.session() as session:
        assert repo.get_lead(session, GUILD_A, lead_id) is None
    one_lead = {"Lead": 1, "Offer": 1, "DealAnalysis": 2, "Conversation": 1, "Turn": 1, "ScheduledCall": 1,
                "Disclosure": 1, "WebhookDelivery": 1}
    assert _rows(database) == one_lead  # Bob's are all still there, Ann's all gone


def test_a_failed_delete_erases_nothing(database: Database) -> None:
    lead_id, _ = save(database, GUILD_A, ANN, full_name="Ann")
    _derived(database, lead_id, 5)
    before = _rows(database)
    with pytest.raises(RuntimeError), database.session() as session:
        assert repo.delete_lead(session, GUILD_A, lead_id)
        raise RuntimeError("the connection dropped before the commit")
    assert _rows(database) == before  # one transaction: all or nothing
