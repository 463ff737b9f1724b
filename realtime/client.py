"""The Realtime WebSocket: connect, send, receive. Only bytes move here; decisions live in the engine."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from realtime.errors import (
    FATAL_ERROR_CODES,
    RECOVERABLE_CLOSE_CODES,
    RealtimeError,
    RealtimeFatalError,
    fatal_message,
    redact,
)
from realtime.protocol import SessionConfig

log = logging.getLogger(__name__)

# HTTP statuses at the handshake that no retry will fix.
FATAL_HTTP_STATUSES = {401: "OPENAI_API_KEY was rejected by the Realtime API (HTTP 401)",
                       403: "the OpenAI account may not use the Realtime API (HTTP 403)",
                       404: "REALTIME_URL or REALTIME_MODEL not found (HTTP 404)"}
# A voice call cannot wait long: a Retry-After beyond this is cut to it (the attempt limit still applies).
RETRY_AFTER_CAP_SECONDS = 30.0
# Liveness on a voice call, where seconds of silence are a failure (websockets' defaults are 20 s / 20 s / 10 s):
# a ping every 3 s answered within 3 s, and a close handshake given 1 s before the socket is dropped. The ping
# is what finds a dead path while the caller talks into roomy socket buffers (bench/bench_liveness.py).
PING_INTERVAL_SECONDS = 3.0
PING_TIMEOUT_SECONDS = 3.0
CLOSE_TIMEOUT_SECONDS = 1.0


class RealtimeConnection:
    """One WebSocket to the Realtime API (one server-side session)."""

    def __init__(self, websocket: ClientConnection) -> None:
        self._websocket = websocket

    @classmethod
    async def open(cls, config: SessionConfig) -> RealtimeConnection:
        """Connect with the GA handshake: bearer key, no OpenAI-Beta header, no message size limit."""
        try:
            websocket = await connect(
                config.endpoint,
                additional_headers={"Authorization": f"Bearer {config.api_key}"},
                max_size=None,  # server events (e.g. session.created with long instructions) can exceed 1 MiB
                open_timeout=config.connect_timeout_seconds,
                ping_interval=PING_INTERVAL_SECONDS,
                ping_timeout=PING_TIMEOUT_SECONDS,
                close_timeout=CLOSE_TIMEOUT_SECONDS,
                compression=None,  # base64 audio hardly compresses; deflate only costs CPU
            )
        except InvalidStatus as exc:
            raise _refused(exc) from None
        except (OSError, TimeoutError, InvalidHandshake, ValueError) as exc:  # ValueError: e.g. a port > 65535
            detail = redact(str(exc).replace(config.api_key, "***")) if config.api_key else redact(str(exc))
            raise RealtimeError(f"cannot reach {config.url}: {detail or type(exc).__name__}") from None
        return cls(websocket)

    async def send(self, event: dict[str, Any]) -> None:
        try:
            await self._websocket.send(json.dumps(event, separators=(",", ":")))
        except ConnectionClosed as exc:
            raise _closed_error(exc) from None

    def try_send_now(self, event: dict[str, Any]) -> bool:
        """Write `event` at once when the socket can take it without waiting; False (nothing sent) otherwise.

        Saves the appends' hop through a queue and a writer task (an async context manager and a drain per
        event). False whenever `send` would have to await: the caller then queues the event for `send`, which
        waits for the buffer to drain or reports the close. Never raises for a closed socket.
        """
        websocket = self._websocket
        # websockets 17.4 asyncio Connection internals, the happy path of `send(str)` mirrored: `send` waits
        # while `send_in_progress` (a fragmented message) is set; `send_context()` requires `protocol.state` is
        # OPEN; it then calls `protocol.send_text(data.encode())` and `send_data()` (protocol.data_to_send() ->
        # transport.write), and `drain()` awaits only when `transport.is_closing()` or `paused` (set by
        # `pause_writing()` past the write buffer's high-water mark). tests/realtime/test_send_now.py pins these.
        transport = websocket.transport
        if (websocket.protocol.state is not State.OPEN or websocket.send_in_progress is not None
                or websocket.paused or transport.is_closing()):
            return False
        websocket.protocol.send_text(json.dumps(event, separators=(",", ":")).encode())
        # After send_text in OPEN, protocol.close_expected() is False: send_context's close branch is not needed.
        try:
            websocket.send_data()
        except Exception as exc:  # as send_context does: the socket is broken; the reader reports the close
            websocket.set_connection_exc(exc)
            transport.abort()
        return True

    async def recv(self) -> dict[str, Any]:
        """The next server event; malformed messages are logged and skipped, a close raises RealtimeError.

        Cancellation-safe (websockets' recv() loses nothing when cancelled), so callers may time out.
        """
        while True:
            try:
                message = await self._websocket.recv()
            except ConnectionClosed as exc:
                raise _closed_error(exc) from None
            try:
                event = json.loads(message)
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("skipping a malformed Realtime message (%d bytes)", len(message))
                continue
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                log.warning("skipping a Realtime message without a type")
                continue
            return event

    async def close(self) -> None:
        await self._websocket.close()

    def abort(self) -> None:
        """Drop a dead socket at once: no close handshake with a peer that no longer answers."""
        self._websocket.transport.abort()


def _refused(exc: InvalidStatus) -> RealtimeError:
    """A refused handshake as an error: the API's own error code and words, and how long it asked us to wait."""
    response = exc.response
    status = response.status_code
    code, message = _error_body(response.body)
    if code in FATAL_ERROR_CODES:  # e.g. a 429 that is no rate limit but an empty account
        return RealtimeFatalError(fatal_message(code, message), code=code)
    if status in FATAL_HTTP_STATUSES:
        return RealtimeFatalError(FATAL_HTTP_STATUSES[status], code=f"http_{status}")
    detail = f": {redact(message)[:200]}" if message else ""
    return RealtimeError(f"Realtime handshake refused (HTTP {status}{detail})", code=code or f"http_{status}",
                         retry_after=retry_after_seconds(response.headers.get("Retry-After")))


def _error_body(body: bytes | None) -> tuple[str | None, str | None]:
    """(code, message) of an OpenAI error body `{"error": {"code", "type", "message"}}`; Nones otherwise."""
    try:
        error = json.loads(body or b"").get("error")
    except (ValueError, AttributeError):
        return None, None
    if not isinstance(error, dict):
        return None, None
    code = error.get("code") or error.get("type")
    message = error.get("message")
    return (code if isinstance(code, str) else None), (message if isinstance(message, str) else None)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds, capped; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(when.tzinfo or UTC)).total_seconds()
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return None
    return min(seconds, RETRY_AFTER_CAP_SECONDS)


def _closed_error(exc: ConnectionClosed) -> RealtimeError:
    frame = exc.rcvd or exc.sent
    code = frame.code if frame else 1006
    reason = redact(frame.reason) if frame and frame.reason else ""
    retryable = code in RECOVERABLE_CLOSE_CODES or code == 1000
    return RealtimeError(f"Realtime connection closed ({code}{': ' + reason if reason else ''})",
                         code=f"close_{code}", retryable=retryable)
