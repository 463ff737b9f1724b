"""Realtime failures, split by what to do about them: retry, or stop with one clear line."""

from __future__ import annotations

import re

_SECRET = re.compile(r"(sk-|Bearer\s+)[A-Za-z0-9_\-*]{3,}")

# Error codes after which retrying only burns quota or floods the log.
FATAL_ERROR_CODES = frozenset({
    "invalid_api_key",
    "insufficient_quota",
    "account_deactivated",
    "billing_hard_limit_reached",
    "model_not_found",
    "beta_api_shape_disabled",
    "unsupported_country_region_territory",
})

# Close codes after which a new socket is worth trying.
RECOVERABLE_CLOSE_CODES = frozenset({1001, 1005, 1006, 1011, 1012, 1013, 1015})

FATAL_HINTS = {
    "invalid_api_key": "OPENAI_API_KEY was rejected by the Realtime API",
    "insufficient_quota": "the OpenAI account has no quota left",
    "account_deactivated": "the OpenAI account is deactivated",
    "billing_hard_limit_reached": "the OpenAI account reached its billing limit",
    "model_not_found": "REALTIME_MODEL is not available to this key",
    "beta_api_shape_disabled": "the server refused a beta-shaped request (Cap speaks GA only)",
}


class RealtimeError(Exception):
    """A Realtime failure; `retryable` says whether a new connection may help."""

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = True,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After), if it said


class RealtimeFatalError(RealtimeError):
    """The session cannot go on (bad key, no quota, server unreachable): end it with this one line."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, retryable=False)


def redact(text: str) -> str:
    """Mask anything that looks like an API key before it reaches a log or a user."""
    return _SECRET.sub(lambda m: m.group(1) + "***", text)


def fatal_message(code: str | None, server_message: str | None) -> str:
    hint = FATAL_HINTS.get(code or "")
    if hint:
        return f"{hint} ({code})"
    return redact(f"Realtime API error {code}: {server_message or 'no message'}")
