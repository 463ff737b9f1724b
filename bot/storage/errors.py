"""Database errors as one safe log line.

PostgreSQL's DETAIL quotes row values ("Key (guild_id, email)=(…) already exists", "Failing row contains
(…)") and SQLAlchemy puts it in the exception's text, so a logged traceback would copy leads' personal data
and transcripts into the log. Queries' bound values are already hidden (`hide_parameters`).
"""

from __future__ import annotations


def first_message_line(exc: BaseException) -> str:
    """The driver's (or else the exception's) first message line, or its class name when it has no text; for
    one-line reports (doctor, the command line) of any exception, database or not."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip()
    return text.splitlines()[0] if text else type(original).__name__


def db_error_line(exc: BaseException) -> str:
    """The driver's error class, SQLSTATE and first message line: what went wrong, never which row."""
    original = getattr(exc, "orig", None) or exc
    code = getattr(original, "sqlstate", None)
    first = first_message_line(exc) if str(original).strip() else ""
    return f"{type(original).__name__}{f' [{code}]' if code else ''}{f': {first}' if first else ''}"
