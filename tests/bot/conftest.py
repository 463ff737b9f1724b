"""The `database` fixture: every storage, tools and export test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.storage.database import Database
from tests.bot.storage.helpers import BACKENDS, POSTGRES_ENV, emptied_database, fresh_database, private_schema


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private schema in the PostgreSQL at TEST_DATABASE_URL; an unreachable server is an error, not a skip."""
    base_url = os.environ.get(POSTGRES_ENV, "").strip()
    if not base_url:
        pytest.skip(f"PostgreSQL variant: {POSTGRES_ENV} is not set (bash scripts/test.sh starts a server and sets it)")
    with private_schema(base_url) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An open database at the newest schema with no rows, on each back-end in turn."""
    if request.param == "postgresql":
        with emptied_database(request.getfixturevalue("postgres_url")) as database:
            yield database
    else:
        with fresh_database(tmp_path) as database:
            yield database
