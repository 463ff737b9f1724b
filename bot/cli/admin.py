"""`cap-bot tools …` and `cap-bot leads …`: the operator's way to the same tool and export code paths."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bot.cli.database import open_database, settings_database
from bot.cli.errors import CommandError
from bot.settings import Settings
from bot.storage.export import EXPORT_FORMATS, collect_records, render_file
from bot.tools import build_registry
from bot.tools.context import CONSOLE_GUILD_ID, CONSOLE_USER_ID, CONSOLE_USER_NAME
from realtime.tools import ToolContext

# Tool errors that mean the command line itself was wrong: one line on stderr rather than a JSON result.
_USAGE_ERRORS = frozenset({"unknown_tool", "invalid_json", "invalid_arguments"})


def register(subparsers: argparse._SubParsersAction) -> None:
    tools = subparsers.add_parser("tools", help="list Cap's function tools or call one")
    tools_sub = tools.add_subparsers(dest="tools_command", metavar="ACTION", required=True)
    listing = tools_sub.add_parser("list", help="print the tools as the model is given them (JSON)")
    listing.set_defaults(handler=run_tools_list, log_level=logging.WARNING)
    call = tools_sub.add_parser("call", help="run one tool and print its JSON result")
    call.add_argument("name", help="tool name, e.g. analyze_deal")
    call.add_argument("--args", default="{}", help="the arguments as a JSON object (default {})")
    call.add_argument(
        "--guild", type=int, default=CONSOLE_GUILD_ID, help="guild id (default: the console guild)"
    )
    call.add_argument(
        "--user", type=int, default=CONSOLE_USER_ID, help="caller's Discord user id (default: console)"
    )
    call.set_defaults(handler=run_tools_call, log_level=logging.WARNING)

    leads = subparsers.add_parser("leads", help="export the stored leads")
    leads_sub = leads.add_subparsers(dest="leads_command", metavar="ACTION", required=True)
    export = leads_sub.add_parser("export", help="write the leads as CSV or JSON")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="csv", help="csv (Excel-safe) or json")
    export.add_argument("--guild", type=int, default=None, help="only this guild (default: every guild)")
    export.add_argument("--output", type=Path, default=None, help="file to write (default: stdout)")
    export.set_defaults(handler=run_leads_export, log_level=logging.WARNING)


def run_tools_list(args: argparse.Namespace, settings: Settings) -> int:
    registry = build_registry(settings, settings_database(settings))  # no I/O until a tool runs
    specs = [
        {"name": s["name"], "description": s["description"], "parameters": s["parameters"]}
        for s in registry.specs()
    ]
    print(json.dumps(specs, indent=2, ensure_ascii=False))
    return 0


def _one_line(result: dict[str, Any]) -> str:
    error = result["error"]
    problems = error.get("details", {}).get("problems")
    if problems:
        return "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return error["message"]


def run_tools_call(args: argparse.Namespace, settings: Settings) -> int:
    database = settings_database(settings)
    registry = build_registry(settings, database)
    if args.name not in registry.tools:
        raise CommandError(f"unknown tool {args.name!r}; available: {', '.join(registry.tools)}")
    try:
        arguments = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--args is not valid JSON: {exc.msg} (at character {exc.pos})") from None
    if not isinstance(arguments, dict):
        raise CommandError("--args must be a JSON object, e.g. '{\"purchase_price\": 400000}'")
    context = ToolContext(
        guild_id=args.guild,
        user_id=args.user,
        user_name=CONSOLE_USER_NAME if args.user == CONSOLE_USER_ID else None,
    )
    open_database(database)
    try:
        result = asyncio.run(registry.call(args.name, arguments, context))
    finally:
        database.close()
    if not result.get("ok", True) and result["error"]["code"] in _USAGE_ERRORS:
        raise CommandError(f"{args.name}: invalid arguments: {_one_line(result)}")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if result.get("ok", True) else 1


def run_leads_export(args: argparse.Namespace, settings: Settings) -> int:
    database = open_database(settings_database(settings))
    try:
        with database.session() as session:
            records = collect_records(session, args.guild)
    except SQLAlchemyError as exc:
        raise CommandError(f"cannot read the leads: {type(exc).__name__}") from None
    finally:
        database.close()
    if args.output is None:  # the same bytes as --output (the CSV's BOM included), so `> x.csv` is the same file
        sys.stdout.flush()
        sys.stdout.buffer.write(render_file(records, args.format))
        sys.stdout.buffer.flush()
        return 0
    try:
        args.output.write_bytes(render_file(records, args.format))
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    scope = "every guild" if args.guild is None else f"guild {args.guild}"
    print(
        f"wrote {len(records)} lead(s) from {scope} to {args.output} "
        f"at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        file=sys.stderr,
    )
    return 0
