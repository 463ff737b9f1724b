"""Database errors as one safe log line.

PostgreSQL's DETAIL quotes row values ("Key (guild_id, email)=(…) already exists", "Failing row contains
(…)") and SQLAlchemy puts it in the exception's text, so a logged traceback would copy leads' personal data
and transcripts into the log. Queries' bound values are already hidden (`hide_parameters`).
"""

from __future__ import annotations


def db_error_line(exc: BaseException) -> str:
    """The driver's error class, SQLSTATE and first message line: what went wrong, never which row."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip()
    first = text.splitlines()[0] if text else ""
    code = getattr(original, "sqlstate", None)
    return f"{type(original).__name__}{f' [{code}]' if code else ''}{f': {first}' if first else ''}"
