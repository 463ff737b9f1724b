"""`cap-bot usage`: calls, tokens and estimated cost per guild for a month, for operators (every guild)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from bot.cli.database import open_database, settings_database
from bot.cli.errors import CommandError
from bot.settings import Settings
from bot.storage.usage import next_month_start, usage_by_guild
from bot.usage_report import format_operator_table, operator_rows, parse_month


def register(subparsers: argparse._SubParsersAction) -> None:
    usage = subparsers.add_parser("usage", help="calls, tokens and estimated cost per guild for a month")
    usage.add_argument("--month", default=None, help="YYYY-MM (default: this month, UTC)")
    usage.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    usage.set_defaults(handler=run_usage, log_level=logging.WARNING)


def run_usage(args: argparse.Namespace, settings: Settings) -> int:
    try:
        month = parse_month(args.month, datetime.now(UTC))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    database = open_database(settings_database(settings))
    try:
        with database.session() as session:
            guilds = usage_by_guild(session, month, next_month_start(month))
    except SQLAlchemyError as exc:
        raise CommandError(f"cannot read the usage: {type(exc).__name__}") from None
    finally:
        database.close()
    rows = operator_rows(guilds)
    sys.stdout.write(json.dumps(rows, indent=2) + "\n" if args.json else format_operator_table(rows, month))
    return 0
