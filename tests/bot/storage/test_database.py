from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlmodel import Session, select

from bot.storage.database import (
    PG_OPTIONS,
    Database,
    _postgres_connect_args,
    make_engine,
    parse_database_url,
    shown_url,
)
from bot.storage.models import Lead, Offer
from bot.tools._common import in_transaction
from realtime.tools import ToolFailure


def test_constructor_does_no_io(tmp_path: Path) -> None:
    Database(f"sqlite:///{tmp_path / 'nested' / 'cap.db'}")
    assert not (tmp_path / "nested").exists()


def test_session_before_open_is_an_error() -> None:
    with pytest.raises(RuntimeError), Database("sqlite://").session():
        pass


def test_open_creates_folder_tables_and_sqlite_pragmas(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'nested' / 'cap.db'}").open()
    try:
        assert (tmp_path / "nested" / "cap.db").exists()
        with database.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert database.open() is database  # idempotent
    finally:
        database.close()


def test_session_commits_or_rolls_back(database: Database) -> None:
    with database.session() as session:
        session.add(Lead(guild_id=1, full_name="Kept"))
    with pytest.raises(ZeroDivisionError), database.session() as session:
        session.add(Lead(guild_id=1, full_name="Lost"))
        session.flush()
        _ = 1 / 0
    with database.session() as session:
        assert [lead.full_name for lead in session.exec(select(Lead))] == ["Kept"]


def test_timestamps_come_back_aware_utc(database: Database) -> None:
    created = datetime(2026, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=-4)))
    with database.session() as session:
        session.add(Lead(guild_id=1, full_name="T", created_at=created))
    with database.session() as session:
        lead = session.exec(select(Lead)).one()
    assert lead.created_at == created
    assert lead.created_at.tzinfo is not None and lead.created_at.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused(database: Database) -> None:
    with pytest.raises(Exception, match="naive"), database.session() as session:
        session.add(Lead(guild_id=1, full_name="N", created_at=datetime(2026, 1, 1)))
        session.flush()


def test_discord_snowflakes_fit(database: Database) -> None:
    snowflake = 1_234_567_890_123_456_789
    with database.session() as session:
        session.add(Lead(guild_id=snowflake, discord_user_id=snowflake, full_name="Big"))
    with database.session() as session:
        assert session.exec(select(Lead)).one().discord_user_id == snowflake


def test_in_memory_database_is_shared_across_threads() -> None:
    database = Database("sqlite://").open()
    try:

        def write() -> None:
            with database.session() as session:
                session.add(Lead(guild_id=1, full_name="From a thread", created_at=datetime.now(UTC)))

        worker = threading.Thread(target=write)
        worker.start()
        worker.join()
        with database.session() as session:
            assert session.exec(select(Lead)).one().full_name == "From a thread"
    finally:
        database.close()


async def test_a_failed_insert_logs_no_personal_data(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    def insert(session: Session) -> None:
        session.add(Lead(guild_id=1, full_name="Alice Private", email="alice.private@example.com"))
        session.flush()
        orphan = Offer(  # no lead 999999: a foreign key violation
            guild_id=1,
            lead_id=999_999,
            program="Alice Private",
            amount=1.0,
            max_ltv=0.7,
            rate_min=9.5,
            rate_max=10.5,
            points=1.0,
            term_months=12,
            expires_at=datetime.now(UTC),
        )
        session.add(orphan)
        session.flush()

    with caplog.at_level(logging.ERROR), pytest.raises(ToolFailure, match="Could not save the lead"):
        await in_transaction(database, insert, what="save the lead")
    assert "save the lead: integrity error twice" in caplog.text  # the error is logged, in one line ...
    assert "Alice" not in caplog.text and "alice.private" not in caplog.text  # ... but not the values


def test_postgres_connections_time_out_and_keep_the_urls_own_options(postgres_url: str) -> None:
    engine = make_engine(postgres_url)  # the URL carries options=-csearch_path=<private schema>
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "8s"
            assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "5s"
            assert connection.exec_driver_sql("SHOW search_path").scalar().startswith("cap_test_")
            assert connection.connection.dbapi_connection.info.get_parameters()["connect_timeout"] == "5"
    finally:
        engine.dispose()
    own = make_url("postgresql+psycopg://u@h/db?connect_timeout=2&options=-c%20lock_timeout=100")
    assert _postgres_connect_args(own) == {"options": f"{PG_OPTIONS} -c lock_timeout=100"}  # later -c wins


def test_shown_urls_hide_the_password_also_as_a_query_parameter() -> None:
    url = parse_database_url("postgresql+psycopg://cap:pw1@db:5432/cap?password=hunter2&sslmode=require")
    shown = shown_url(url)
    assert "pw1" not in shown and "hunter2" not in shown and "sslmode=require" in shown
