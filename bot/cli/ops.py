"""`cap-bot db …` and `cap-bot doctor`: the operator's commands for deploying and checking Cap."""

from __future__ import annotations

import argparse
import logging
import sys

from bot.cli.database import database_errors
from bot.settings import Settings
from bot.storage import migrate


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="database schema: apply migrations, show the revision")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply every pending migration (DATABASE_URL)")
    upgrade.set_defaults(handler=run_db_upgrade, log_level=logging.WARNING)
    current = db_sub.add_parser("current", help="print the database's schema revision and the newest one")
    current.set_defaults(handler=run_db_current, log_level=logging.WARNING)
    revision = db_sub.add_parser("revision", help="developers: autogenerate the next migration from the models")
    revision.add_argument("-m", "--message", required=True, help="what changed, e.g. 'add lead.referrer'")
    revision.set_defaults(handler=run_db_revision, log_level=logging.WARNING)

    doctor = subparsers.add_parser("doctor", help="check settings, voice libraries, database, OpenAI key, token")
    doctor.add_argument("--offline", action="store_true", help="no network checks (OpenAI Realtime, Discord)")
    doctor.add_argument("--quiet", action="store_true", help="print only what fails (for health checks)")
    doctor.add_argument("--heartbeat", action="store_true",
                        help="also check that the running bot reported a live Discord connection lately")
    doctor.set_defaults(handler=run_doctor, settings_optional=True, log_level=logging.WARNING)


def prepare_database(settings: Settings) -> migrate.UpgradeResult | None:
    """At start-up: apply pending migrations (AUTO_MIGRATE) or refuse to start; one line on failure."""
    with database_errors(settings.database_url):
        if settings.auto_migrate:
            return migrate.upgrade(settings.database_url)
        migrate.ensure_current(settings.database_url)
        return None


def run_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    with database_errors(settings.database_url):
        result = migrate.upgrade(settings.database_url)
    if result.changed:
        print(f"database upgraded: {result.before or 'empty'} -> {result.after}")
    else:
        print(f"database already at the newest schema ({result.after})")
    return 0


def run_db_current(args: argparse.Namespace, settings: Settings) -> int:
    with database_errors(settings.database_url):
        current = migrate.current_revision(settings.database_url)
    head = migrate.head_revision()
    if current == head:
        print(f"{current} (newest)")
    elif current is None:
        print(f"none: never migrated; newest is {head} (run `cap-bot db upgrade`)")
    elif not migrate.is_known(current):
        print(f"{current}: unknown to this Cap (a newer one migrated it); newest here is {head}")
    else:
        print(f"{current}: behind, newest is {head} (run `cap-bot db upgrade`)")
    return 0


def run_db_revision(args: argparse.Namespace, settings: Settings) -> int:
    path = migrate.new_revision(args.message)
    print(f"wrote {path}: review it (autogenerate misses renames), then commit it")
    return 0


def run_doctor(args: argparse.Namespace, settings: Settings | None) -> int:
    from bot.cli import doctor  # imports discord and websockets only when asked

    settings_result, loaded = doctor.check_settings(lambda: settings) if settings else doctor.check_settings()
    results = doctor.run_checks(loaded, offline=args.offline, heartbeat=args.heartbeat,
                                settings_result=settings_result)
    sys.stdout.write(doctor.render(results, quiet=args.quiet))
    return 0 if all(result.ok for result in results) else 1
