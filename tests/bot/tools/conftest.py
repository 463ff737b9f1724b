from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.storage.database import Database
from tests.bot.storage.helpers import fresh_database


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with fresh_database(tmp_path) as database:
        yield database
