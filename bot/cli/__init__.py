"""The `cap-bot` command line: one sub-command per module of this package, each a `register(subparsers)` function.

Every failure a user can cause ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from bot.cli.errors import CommandError
from bot.settings import SettingsError, load_settings

__all__ = ["CommandError", "build_parser", "configure_logging", "main"]

log = logging.getLogger("cap")

# Modules that add sub-commands; each has `register(subparsers)` and sets `handler(args, settings) -> int`.
COMMAND_MODULES = (
    "bot.cli.console",
    "bot.cli.admin",
    "bot.cli.run",
    "bot.cli.ops",
    "bot.cli.usage",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cap-bot", description="Cap, the AI loan companion for Discord voice.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def configure_logging(verbose: bool, level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # websockets at DEBUG would log frames; keep it quiet so nothing sensitive reaches the log.
    logging.getLogger("websockets").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    # A command may ask for quieter logs (the console keeps stdout/stderr for the conversation).
    configure_logging(args.verbose, getattr(args, "log_level", logging.INFO))
    try:
        try:
            settings = load_settings()
        except SettingsError:
            if not getattr(args, "settings_optional", False):
                raise
            settings = None  # the command reports bad settings itself (cap-bot doctor)
        return int(args.handler(args, settings) or 0)
    except (SettingsError, CommandError) as exc:
        print(f"cap-bot: {exc}", file=sys.stderr)
        return getattr(exc, "status", 1)
    except KeyboardInterrupt:
        return 130

