"""The database as `cap-bot` commands use it: AUTO_MIGRATE honoured, every failure one line naming DATABASE_URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bot.cli.errors import CommandError
from bot.settings import Settings
from bot.storage import migrate
from bot.storage.database import Database, DatabaseURLError
from bot.storage.errors import first_message_line


def settings_database(settings: Settings) -> Database:
    """The configured database, not opened yet: opening migrates it only when AUTO_MIGRATE allows."""
    return Database(settings.database_url, migrate=settings.auto_migrate)


def open_database(database: Database) -> Database:
    """Open it (migrate or check the schema), or fail in one line."""
    with database_errors(database.url):
        return database.open()


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn what DATABASE_URL's database can raise into a CommandError of one line, without the password."""
    try:
        yield
    except (DatabaseURLError, migrate.SchemaError) as exc:  # already one line naming the setting or the fix
        raise CommandError(str(exc)) from None
    except (ArgumentError, SQLAlchemyError, OSError, ValueError, ModuleNotFoundError) as exc:
        text = _without_password(first_message_line(exc), url)
        raise CommandError(f"DATABASE_URL: cannot use the database: {text}") from None


def _without_password(text: str, url: str) -> str:
    try:
        password = make_url(url).password
    except ArgumentError:
        return text
    return text.replace(str(password), "***") if password else text
