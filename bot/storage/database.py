"""The database handle: one engine, short transactional sessions; the same code for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine

from bot.storage import migrate, models  # noqa: F401  (models registers the tables on SQLModel.metadata)

log = logging.getLogger(__name__)

# How long a SQLite writer waits for another writer's lock before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 5000
# PostgreSQL: fail fast instead of hanging a tool call until the model gives up on it (Settings'
# tool_timeout_seconds, 10 s): connect within 5 s, cancel a statement after 8 s and a lock wait after 5 s.
# Constants, not settings: Cap's queries take milliseconds. Options in DATABASE_URL still win;
# migrate.upgrade lifts both limits for its own transaction.
PG_CONNECT_TIMEOUT_SECONDS = 5
PG_OPTIONS = "-c statement_timeout=8000 -c lock_timeout=5000"
URL_EXAMPLES = "postgresql+psycopg://user:password@host:5432/cap or sqlite:///data/cap.db"


class DatabaseURLError(ArgumentError):
    """DATABASE_URL cannot be used as written: not a URL, a port that is not a number, an unknown database
    or a driver that is not installed. One line naming DATABASE_URL, never its password. An ArgumentError,
    so every caller that already reports a bad URL in one line reports this one too."""


def parse_database_url(url: str) -> URL:
    try:
        return make_url(url)
    except ValueError:  # int() of the port
        raise DatabaseURLError(f"DATABASE_URL has a port that is not a number; e.g. {URL_EXAMPLES}") from None
    except ArgumentError:  # its message quotes the whole URL, password and all
        raise DatabaseURLError(f"DATABASE_URL is not a database URL; e.g. {URL_EXAMPLES}") from None


def shown_url(url: URL) -> str:
    """The URL for logs and reports: the password masked, also one passed as a query parameter."""
    secret_keys = [key for key in url.query if any(word in key.lower() for word in ("pass", "secret", "key"))]
    return url.set(query={**url.query, **dict.fromkeys(secret_keys, "hidden")}).render_as_string(hide_password=True)


def create_database_engine(url: URL, **kwargs: Any) -> Engine:
    """create_engine, with the mistakes DATABASE_URL can hold raised as DatabaseURLError."""
    try:
        return create_engine(url, **kwargs)
    except NoSuchModuleError:
        hint = ": write postgresql+psycopg:// for PostgreSQL" if url.drivername == "postgres" else ""
        raise DatabaseURLError(
            f"DATABASE_URL names a database SQLAlchemy does not know ({url.drivername}){hint}; e.g. {URL_EXAMPLES}"
        ) from None
    except ModuleNotFoundError as exc:
        raise DatabaseURLError(
            f"DATABASE_URL needs the Python driver {exc.name!r}, which is not installed "
            "(Cap runs on SQLite or PostgreSQL; for PostgreSQL: pip install 'cap-bot[postgres]')"
        ) from None
    except (ArgumentError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if url.password:
            detail = detail.replace(str(url.password), "***")
        raise DatabaseURLError(f"DATABASE_URL cannot be used: {detail}") from None


class Database:
    """Owns the engine. The constructor does no I/O; `open()` connects and brings the schema to head."""

    def __init__(self, url: str, *, echo: bool = False, migrate: bool = True) -> None:
        self.url = url
        self.echo = echo
        self.migrate = migrate
        self._engine: Engine | None = None

    @property
    def is_sqlite(self) -> bool:
        return parse_database_url(self.url).get_backend_name() == "sqlite"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("Database.open() has not been called")
        return self._engine

    def open(self) -> Database:
        """Create the engine (and the SQLite file's folder), then migrate the schema to head. Idempotent.

        With `migrate=False` the schema is only checked: migrate.SchemaError (one line) if it is behind.
        A DATABASE_URL that cannot work raises DatabaseURLError (one line).
        """
        if self._engine is not None:
            return self
        engine = make_engine(self.url, echo=self.echo)
        try:
            if self.migrate:
                migrate.upgrade(engine)
            else:
                migrate.ensure_current(engine)
        except Exception:
            engine.dispose()
            raise
        self._engine = engine
        log.info("database ready: %s", shown_url(engine.url))
        return self

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back (and re-raised) on any error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for the URL (SQLite: the file's folder, thread sharing and pragmas); does not touch the schema.

    A URL that cannot work raises DatabaseURLError."""
    parsed = parse_database_url(url)
    # Errors would otherwise quote the bound values (names, phones, emails, transcript text) into the log.
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        # Tools run their queries in worker threads (asyncio.to_thread).
        kwargs["connect_args"] = {"check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or each worker thread would see its own empty database.
            kwargs["poolclass"] = StaticPool
        else:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs["pool_pre_ping"] = True
    if parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = _postgres_connect_args(parsed)
    engine = create_database_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _postgres_connect_args(url: URL) -> dict[str, Any]:
    """The timeouts, merged with the URL's own: connect_args would replace its `options`, not add to them."""
    query = url.query
    own = query.get("options", ())
    options = " ".join([PG_OPTIONS, *([own] if isinstance(own, str) else own)])
    args: dict[str, Any] = {"options": options}
    if "connect_timeout" not in query:
        args["connect_timeout"] = PG_CONNECT_TIMEOUT_SECONDS
    return args


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; foreign keys are off by default in SQLite."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()
