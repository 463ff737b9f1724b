"""Schema migrations with Alembic, configured from code: the scripts ship in the package, so any cwd works.

Every function takes a database URL or an Engine (an Engine keeps SQLite's in-memory database and its
pragmas). `Database.open()` calls `upgrade` (or `ensure_current` when AUTO_MIGRATE is off): one schema
path for SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError as AlembicError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)
# Alembic logs two INFO lines per connection it inspects; Cap logs what changed itself (below).
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Several bot processes (shards) may start together against one PostgreSQL: the first to take this
# transaction-scoped advisory lock migrates, the others wait and then find nothing to do.
PG_MIGRATION_LOCK_KEY = 0x4341_5000  # "CAP\0"
# Databases made by create_all before migrations existed hold exactly this revision's tables.
LEGACY_BASELINE = "0001"
UPGRADE_HINT = "run `cap-bot db upgrade` (or set AUTO_MIGRATE=true)"


class SchemaError(RuntimeError):
    """The database's schema is not the one this copy of Cap needs; the message is one line."""


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config without alembic.ini: script_location is the package's migrations folder."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise SchemaError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


@contextmanager
def _engine(target: Engine | str) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    from bot.storage.database import make_engine  # database imports this module

    engine = make_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def is_known(revision: str) -> bool:
    """Whether this copy of Cap ships that revision (a newer Cap may have migrated the database further)."""
    try:
        return script_directory().get_revision(revision) is not None
    except AlembicError:
        return False


def _check_known(revision: str | None) -> None:
    if revision is not None and not is_known(revision):
        raise SchemaError(
            f"the database is at schema revision {revision!r}, which this version of Cap does not know "
            f"(a newer Cap migrated it?); its newest is {head_revision()!r}"
        )


def current_revision(target: Engine | str) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    with _engine(target) as engine, engine.connect() as connection:
        return _revision_of(connection)


def pending(target: Engine | str) -> bool:
    """True when the database is not at the newest revision (including a database never migrated)."""
    return current_revision(target) != head_revision()


def ensure_current(target: Engine | str) -> None:
    """Raise SchemaError (one line, naming the fix) unless the database is at the newest revision."""
    current = current_revision(target)
    _check_known(current)
    if current != head_revision():
        shown = "empty (never migrated)" if current is None else f"at revision {current!r}"
        raise SchemaError(f"the database schema is {shown}, Cap needs {head_revision()!r}: {UPGRADE_HINT}")


def upgrade(target: Engine | str, revision: str = "head") -> UpgradeResult:
    """Apply every pending migration in one transaction (PostgreSQL: under an advisory lock).

    SQLite: with foreign keys off, as SQLite's own docs prescribe for schema changes: a batch migration
    rebuilds a table (copy, DROP, rename), and dropping `lead` or `conversation` with them on would run
    their ON DELETE cascades and wipe offers and turns. `PRAGMA foreign_key_check` then vets the result
    before the commit (SchemaError and a rollback if a row lost its parent).
    """
    with _engine(target) as engine, engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        try:
            with connection.begin():
                if sqlite:
                    # pysqlite opens its transaction only at the first INSERT/UPDATE/DELETE: without this
                    # the DDL before it would commit on its own and a failed migration could not roll back.
                    connection.exec_driver_sql("BEGIN")
                if connection.dialect.name == "postgresql":
                    # No 8 s statement / 5 s lock limit here (database.PG_OPTIONS): a migration of a big
                    # table may take longer, and the other shards wait for it on the lock below.
                    connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
                    connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
                before = _revision_of(connection)
                _check_known(before)
                config = alembic_config()
                config.attributes["connection"] = connection
                if before is None and inspect(connection).has_table("lead"):
                    log.warning(
                        "database has Cap's tables but no revision: marking it %s (its schema)", LEGACY_BASELINE
                    )
                    command.stamp(config, LEGACY_BASELINE)
                command.upgrade(config, revision)
                after = _revision_of(connection)
                if sqlite:
                    _check_foreign_keys(connection)
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, on=True)
    if after != before:
        log.info("database schema upgraded: %s -> %s", before or "empty", after)
    return UpgradeResult(before, after or "")


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    """Switch SQLite's foreign key enforcement for this connection (a no-op inside a transaction, so the
    pragma runs before the migration's transaction begins and after it ends)."""
    connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    connection.commit()


def _check_foreign_keys(connection: Connection) -> None:
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        table, rowid, parent = violations[0][:3]
        raise SchemaError(
            f"the migration left {len(violations)} row(s) pointing at missing parents (first: {table} row "
            f"{rowid} -> {parent}); it was rolled back and the database is unchanged"
        )


def new_revision(message: str) -> Path:
    """Autogenerate the next migration from the models (diffed against a scratch SQLite at head); for developers.

    Review the file it writes: autogenerate misses renames and some server defaults.
    """
    from bot.storage.database import make_engine

    heads = script_directory().get_heads()
    next_id = f"{int(head_revision()) + 1:04d}" if heads else "0001"
    engine = make_engine("sqlite://")
    try:
        if heads:
            upgrade(engine)
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            script = command.revision(config, message=message, autogenerate=True, rev_id=next_id)
    finally:
        engine.dispose()
        script_directory.cache_clear()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)
