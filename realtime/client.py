"""The Realtime WebSocket: connect, send, receive. Only bytes move here; decisions live in the engine."""

from __future__ import annotations

import json
import logging
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime.errors import RECOVERABLE_CLOSE_CODES, RealtimeError, RealtimeFatalError, redact
from realtime.protocol import SessionConfig

log = logging.getLogger(__name__)

# HTTP statuses at the handshake that no retry will fix.
FATAL_HTTP_STATUSES = {401: "OPENAI_API_KEY was rejected by the Realtime API (HTTP 401)",
                       403: "the OpenAI account may not use the Realtime API (HTTP 403)",
                       404: "REALTIME_URL or REALTIME_MODEL not found (HTTP 404)"}


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
                ping_interval=20,
                ping_timeout=20,
                compression=None,  # base64 audio hardly compresses; deflate only costs CPU
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in FATAL_HTTP_STATUSES:
                raise RealtimeFatalError(FATAL_HTTP_STATUSES[status], code=f"http_{status}") from None
            raise RealtimeError(f"Realtime handshake refused (HTTP {status})") from None
        except (OSError, TimeoutError, InvalidHandshake, ValueError) as exc:  # ValueError: e.g. a port > 65535
            detail = redact(str(exc).replace(config.api_key, "***")) if config.api_key else redact(str(exc))
            raise RealtimeError(f"cannot reach {config.url}: {detail or type(exc).__name__}") from None
        return cls(websocket)

    async def send(self, event: dict[str, Any]) -> None:
        try:
            await self._websocket.send(json.dumps(event, separators=(",", ":")))
        except ConnectionClosed as exc:
            raise _closed_error(exc) from None

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


def _closed_error(exc: ConnectionClosed) -> RealtimeError:
    frame = exc.rcvd or exc.sent
    code = frame.code if frame else 1006
    reason = redact(frame.reason) if frame and frame.reason else ""
    retryable = code in RECOVERABLE_CLOSE_CODES or code == 1000
    return RealtimeError(f"Realtime connection closed ({code}{': ' + reason if reason else ''})",
                         code=f"close_{code}", retryable=retryable)
