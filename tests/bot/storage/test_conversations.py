from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from bot.storage.conversations import ConversationRecorder, conversation_turns, get_conversation
from bot.storage.database import Database
from bot.storage.leads import upsert_lead
from realtime.transcript import TranscriptEntry

GUILD = 42
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def entry(n: int, role: str = "caller", speakers: frozenset[int] = frozenset()) -> TranscriptEntry:
    return TranscriptEntry(
        role=role,
        text=f"line {n}",
        item_id=f"item_{n}",
        speakers=speakers,  # type: ignore[arg-type]
        at=T0 + timedelta(seconds=n),
    )


class FlakyDatabase(Database):
    """Fails the next `failures` sessions as an unreachable database would."""

    def __init__(self, inner: Database, failures: int = 0) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self.failures = failures
        self.attempts = 0

    @contextmanager
    def session(self) -> Iterator[Session]:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        with self.inner.session() as session:
            yield session


def make_lead(database: Database, guild: int) -> int:
    with database.session() as session:
        lead, _ = upsert_lead(session, guild, {"full_name": "Ann"}, discord_user_id=1)
        return lead.id


async def test_lines_are_stored_in_order_with_speakers(database: Database) -> None:
    recorder = ConversationRecorder(database, GUILD, channel_id=555)
    conversation_id = await recorder.start()
    recorder.record(entry(1, speakers=frozenset({1234567890123456789, 2})))
    recorder.record(entry(2, role="cap"))
    lead_id = make_lead(database, GUILD)
    recorder.link_lead(lead_id)
    recorder.record(entry(3, role="caller"))
    await recorder.close()
    with database.session() as session:
        turns = conversation_turns(session, GUILD, conversation_id)
        conversation = get_conversation(session, GUILD, conversation_id)
    assert [(t.seq, t.role, t.text) for t in turns] == [
        (1, "caller", "line 1"),
        (2, "cap", "line 2"),
        (3, "caller", "line 3"),
    ]
    assert turns[0].speakers == ["2", "1234567890123456789"]
    assert turns[0].spoken_at == T0 + timedelta(seconds=1)
    assert conversation.channel_id == 555 and conversation.lead_id == lead_id
    assert conversation.ended_at is not None
    assert recorder.pending == 0


async def test_lines_before_start_are_kept(database: Database) -> None:
    recorder = ConversationRecorder(database, GUILD)
    recorder.record(entry(1))
    conversation_id = await recorder.start()
    await recorder.close()
    with database.session() as session:
        assert len(conversation_turns(session, GUILD, conversation_id)) == 1


async def test_a_database_hiccup_delays_lines_but_loses_none(database: Database) -> None:
    flaky = FlakyDatabase(database)
    recorder = ConversationRecorder(flaky, GUILD, retry_delays=(0.01,))
    conversation_id = await recorder.start()
    flaky.failures = 3
    for n in range(1, 6):
        recorder.record(entry(n))  # returns at once even though the database is down
    assert recorder.pending >= 5
    await asyncio.sleep(0.2)
    recorder.record(entry(6))
    await recorder.close()
    assert flaky.attempts >= 4
    with database.session() as session:
        assert [t.seq for t in conversation_turns(session, GUILD, conversation_id)] == [1, 2, 3, 4, 5, 6]


async def test_close_gives_up_after_its_timeout_and_says_so(database: Database, caplog) -> None:
    flaky = FlakyDatabase(database)
    recorder = ConversationRecorder(flaky, GUILD, retry_delays=(0.01,), close_timeout=0.1)
    await recorder.start()
    flaky.failures = 10_000
    recorder.record(entry(1))
    with caplog.at_level(logging.ERROR):
        await recorder.close()
    assert "not stored" in caplog.text
    recorder.record(entry(2))  # after close: ignored, no error


async def test_link_to_another_guilds_lead_is_refused(database: Database) -> None:
    other = make_lead(database, GUILD + 1)
    recorder = ConversationRecorder(database, GUILD)
    conversation_id = await recorder.start()
    recorder.link_lead(other)
    await recorder.close()
    with database.session() as session:
        assert get_conversation(session, GUILD, conversation_id).lead_id is None
        assert get_conversation(session, GUILD + 1, conversation_id) is None


async def test_record_does_not_touch_the_database(database: Database) -> None:
    flaky = FlakyDatabase(database)
    recorder = ConversationRecorder(flaky, GUILD)
    await recorder.start()
    before = flaky.attempts
    for n in range(100):
        recorder.record(entry(n))
    assert flaky.attempts == before  # writes happen later, on the writer task's worker thread
    await recorder.close()


@pytest.mark.parametrize("interrupted", [True, False])
async def test_interrupted_flag_is_kept(database: Database, interrupted: bool) -> None:
    recorder = ConversationRecorder(database, GUILD)
    conversation_id = await recorder.start()
    recorder.record(TranscriptEntry(role="cap", text="Well—", item_id="i", interrupted=interrupted, at=T0))
    await recorder.close()
    with database.session() as session:
        assert conversation_turns(session, GUILD, conversation_id)[0].interrupted is interrupted
