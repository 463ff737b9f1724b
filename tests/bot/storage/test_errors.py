"""Database errors reach the log without the row values PostgreSQL quotes in DETAIL (personal data)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import IntegrityError

from bot.storage.database import Database
from bot.storage.errors import db_error_line
from bot.tools._common import in_transaction
from realtime.tools import ToolFailure


class UniqueViolation(Exception):
    """Shaped like psycopg's: a SQLSTATE, and the server's message with its DETAIL line."""

    sqlstate = "23505"


def duplicate_email() -> IntegrityError:
    driver = UniqueViolation('duplicate key value violates unique constraint "uq_lead_guild_email"\n'
                             "DETAIL:  Key (guild_id, email)=(5, ann@example.com) already exists.")
    return IntegrityError("INSERT INTO lead ...", None, driver)


def test_one_line_without_the_detail() -> None:
    assert db_error_line(duplicate_email()) == (
        'UniqueViolation [23505]: duplicate key value violates unique constraint "uq_lead_guild_email"')
    assert db_error_line(ValueError()) == "ValueError"


async def test_a_tool_storage_failure_logs_no_personal_data(caplog: pytest.LogCaptureFixture) -> None:
    def work(session: object) -> None:
        raise duplicate_email()

    database = Database("sqlite://").open()
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(ToolFailure):
            await in_transaction(database, work, what="save the lead")
    finally:
        database.close()
    assert "uq_lead_guild_email" in caplog.text and "ann@example.com" not in caplog.text
