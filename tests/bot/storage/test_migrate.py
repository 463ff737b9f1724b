"""Migrations: the shipped scripts build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel, select

from bot.storage import migrate
from bot.storage.database import Database, make_engine
from bot.storage.models import Conversation, Lead, Offer, Turn, utcnow
from tests.bot.storage.helpers import POSTGRES_ENV, private_schema

MODEL_TABLES = {table.name for table in SQLModel.metadata.sorted_tables}
LEGACY_SCHEMA = migrate.LEGACY_BASELINE  # what create_all made before migrations existed


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cap.db'}"


def test_migrations_build_exactly_the_models_schema(database: Database) -> None:
    with database.engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diffs == [], (
        "the models differ from what the migrations build: add a migration with "
        "`cap-bot db revision -m 'what changed'`, review it, and commit it"
    )


def test_open_brings_the_database_to_head(database: Database) -> None:
    assert migrate.current_revision(database.engine) == migrate.head_revision()
    assert not migrate.pending(database.engine)


def test_downgrade_to_nothing_and_back(database: Database) -> None:
    config = migrate.alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert MODEL_TABLES.isdisjoint(inspect(database.engine).get_table_names())
    result = migrate.upgrade(database.engine)
    assert (result.before, result.after, result.changed) == (None, migrate.head_revision(), True)
    assert set(inspect(database.engine).get_table_names()) >= MODEL_TABLES


def test_upgrade_by_url_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the scripts ship in the package; nothing is read from the cwd
    url = sqlite_url(tmp_path)
    assert migrate.current_revision(url) is None
    assert migrate.pending(url)
    first = migrate.upgrade(url)
    second = migrate.upgrade(url)
    assert first.changed and not second.changed
    assert migrate.current_revision(url) == migrate.head_revision()


def test_without_auto_migrate_a_pending_database_is_refused_in_one_line(tmp_path: Path) -> None:
    database = Database(sqlite_url(tmp_path), migrate=False)
    with pytest.raises(migrate.SchemaError) as raised:
        database.open()
    message = str(raised.value)
    assert "\n" not in message and "cap-bot db upgrade" in message and "never migrated" in message
    with pytest.raises(RuntimeError, match="open"):
        _ = database.engine  # nothing left half-open
    migrate.upgrade(database.url)
    database.open()  # at head: accepted
    database.close()


def test_a_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    """Cap once made its tables with create_all (the 0001 schema): such a file is stamped 0001, upgraded and
    keeps its rows."""
    migrate.upgrade(sqlite_url(tmp_path), LEGACY_SCHEMA)
    engine = make_engine(sqlite_url(tmp_path))
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(
            text(
                "INSERT INTO lead (guild_id, status, source, created_at, updated_at) "
                "VALUES (1, 'new', 'voice', '2026-01-01', '2026-01-01')"
            )
        )
    engine.dispose()
    database = Database(sqlite_url(tmp_path)).open()
    try:
        assert migrate.current_revision(database.engine) == migrate.head_revision()
        with database.session() as session:
            assert len(session.exec(select(Lead)).all()) == 1
    finally:
        database.close()


def test_a_revision_this_code_does_not_know_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    for action in (migrate.upgrade, migrate.ensure_current):
        with pytest.raises(migrate.SchemaError, match="does not know"):
            action(url)


def test_new_revision_autogenerates_nothing_when_the_models_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)
    migrate.script_directory.cache_clear()
    head = migrate.head_revision()
    try:
        path = migrate.new_revision("nothing changed")
        source = path.read_text()
    finally:
        migrate.script_directory.cache_clear()
    assert path.name == f"{int(head) + 1:04d}_nothing_changed.py"
    assert f'down_revision: str | Sequence[str] | None = "{head}"' in source.replace("'", '"')
    assert "op." not in source.split("def upgrade")[1].split("def downgrade")[0]


def test_shards_starting_together_migrate_once() -> None:
    """Several processes against one PostgreSQL: the advisory lock lets one migrate while the others wait."""
    base_url = os.environ.get(POSTGRES_ENV, "").strip()
    if not base_url:
        pytest.skip(f"PostgreSQL variant: {POSTGRES_ENV} is not set")
    with private_schema(base_url) as url:
        results: list[migrate.UpgradeResult] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def start() -> None:
            try:
                barrier.wait()
                results.append(migrate.upgrade(url))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert sorted(result.changed for result in results) == [False, False, False, True]
        assert migrate.current_revision(url) == migrate.head_revision()


THROWAWAY_MIGRATION = '''
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"


def upgrade() -> None:
    with op.batch_alter_table("lead") as batch:  # widening a column makes SQLite rebuild the table
        batch.alter_column("timeline", type_=sa.String(80), existing_type=sa.String(40))
    {extra}


def downgrade() -> None:
    pass
'''


def _with_throwaway_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.head_revision()
    following = f"{int(head) + 1:04d}"
    (scripts / "versions" / f"{following}_throwaway.py").write_text(
        THROWAWAY_MIGRATION.format(extra=extra, revision=following, down_revision=head)
    )
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)
    migrate.script_directory.cache_clear()


def _populated_sqlite(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path)
    database = Database(url).open()
    try:
        with database.session() as session:
            lead = Lead(guild_id=1, full_name="Ann")
            session.add(lead)
            session.flush()
            conversation = Conversation(guild_id=1, lead_id=lead.id)
            session.add(conversation)
            session.flush()
            session.add(
                Turn(guild_id=1, conversation_id=conversation.id, seq=1, role="user", text="hi", spoken_at=utcnow())
            )
            session.add(
                Offer(
                    guild_id=1,
                    lead_id=lead.id,
                    program="bridge",
                    amount=1.0,
                    max_ltv=0.7,
                    rate_min=9.5,
                    rate_max=10.5,
                    points=1.0,
                    term_months=12,
                    expires_at=datetime.now(UTC) + timedelta(days=14),
                )
            )
    finally:
        database.close()
    return url


def _counts(url: str) -> tuple[int, int, int, int | None]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            one = lambda sql: connection.execute(text(sql)).scalar()  # noqa: E731
            return (
                one("SELECT count(*) FROM lead"),
                one("SELECT count(*) FROM offer"),
                one("SELECT count(*) FROM turn"),
                one("SELECT lead_id FROM conversation"),
            )
    finally:
        engine.dispose()


def test_a_sqlite_batch_migration_of_lead_keeps_its_offers_and_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _populated_sqlite(tmp_path)
    _with_throwaway_migration(tmp_path, monkeypatch)
    try:
        result = migrate.upgrade(url)
    finally:
        migrate.script_directory.cache_clear()
    assert int(result.after) == int(result.before) + 1
    assert _counts(url) == (1, 1, 1, 1)  # with foreign keys on, DROP TABLE lead cascaded: 1, 0, 1, None
    engine = make_engine(url)
    with engine.connect() as connection:  # and enforcement is back on for everything after the migration
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_a_sqlite_migration_that_orphans_rows_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _populated_sqlite(tmp_path)
    head = migrate.head_revision()
    _with_throwaway_migration(tmp_path, monkeypatch, extra='op.execute("DELETE FROM lead")')
    try:
        with pytest.raises(migrate.SchemaError, match=r"2 row\(s\) pointing at missing parents.*-> lead.*rolled back"):
            migrate.upgrade(url)
    finally:
        migrate.script_directory.cache_clear()
    assert migrate.current_revision(url) == head
    assert _counts(url) == (1, 1, 1, 1)
    engine = make_engine(url)
    assert "_alembic_tmp_lead" not in inspect(engine).get_table_names()  # the rebuild's DDL was undone too
    engine.dispose()


def test_postgres_migrations_run_without_the_statement_and_lock_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base_url = os.environ.get(POSTGRES_ENV, "").strip()
    if not base_url:
        pytest.skip(f"PostgreSQL variant: {POSTGRES_ENV} is not set")
    with private_schema(base_url) as url, tempfile.TemporaryDirectory() as scripts:
        migrate.upgrade(url)
        head = migrate.head_revision()
        show = 'op.get_bind().exec_driver_sql("SHOW {}").scalar()'
        check = f"assert ({show.format('statement_timeout')}, {show.format('lock_timeout')}) == ('0', '0')"
        _with_throwaway_migration(Path(scripts), monkeypatch, extra=check)
        try:
            assert migrate.upgrade(url).after == f"{int(head) + 1:04d}"
        finally:
            migrate.script_directory.cache_clear()
