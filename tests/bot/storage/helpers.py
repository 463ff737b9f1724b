"""Fresh databases for tests: a tmp SQLite file, or PostgreSQL (TEST_DATABASE_URL) in a private schema.

bash scripts/test.sh starts PostgreSQL and sets TEST_DATABASE_URL; the `database` fixture in
tests/bot/conftest.py runs each test on both back-ends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from sqlmodel import SQLModel

from bot.storage.database import Database

BACKENDS = ("sqlite", "postgresql")
POSTGRES_ENV = "TEST_DATABASE_URL"


def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'cap.db'}"


@contextmanager
def fresh_database(tmp_path: Path) -> Iterator[Database]:
    """An open, empty SQLite database in tmp_path, migrated to head."""
    database = Database(database_url(tmp_path)).open()
    try:
        yield database
    finally:
        database.close()


@contextmanager
def private_schema(base_url: str) -> Iterator[str]:
    """A schema of our own in the PostgreSQL at base_url; yields a URL whose search_path is that schema.

    One per test session, so test runs sharing a server (two developers, CI) never see each other's rows.
    """
    schema = f"cap_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield (
                make_url(base_url)
                .update_query_dict({"options": f"-csearch_path={schema}"})
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@contextmanager
def emptied_database(url: str) -> Iterator[Database]:
    """An open database at url (migrated to head) with every table emptied and its ids restarted."""
    database = Database(url).open()
    try:
        tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
        with database.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        yield database
    finally:
        database.close()
