"""A fresh database per test: TEST_DATABASE_URL (e.g. a CI PostgreSQL) when set, else a tmp SQLite file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlmodel import SQLModel

from bot.storage.database import Database


def database_url(tmp_path: Path) -> str:
    return os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'data' / 'cap.db'}"


@contextmanager
def fresh_database(tmp_path: Path) -> Iterator[Database]:
    """An open, empty database; a shared server database is emptied before and after the test."""
    database = Database(database_url(tmp_path)).open()
    shared = "TEST_DATABASE_URL" in os.environ
    if shared:
        SQLModel.metadata.drop_all(database.engine)
        SQLModel.metadata.create_all(database.engine)
    try:
        yield database
    finally:
        if shared:
            SQLModel.metadata.drop_all(database.engine)
        database.close()
