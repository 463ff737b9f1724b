"""When an open socket is dead, sans I/O: a send stuck in the socket, or a reply owed and the server silent.

A half-dead path (a stuck proxy, a peer that stopped reading) keeps the TCP connection open, so nothing fails:
the caller just hears dead air. The WebSocket keepalive (realtime/client.py: a ping every 3 s, 3 s for the pong)
finds every such socket in the end, idle or not, in up to ~7 s; these two checks find the common cases sooner:
a reply the caller is waiting for (4 s without a server event) and a caller talking into a peer that reads
nothing (a send stuck 3 s). The engine feeds this object what it sees and asks it once a second; time comes
from a clock, so tests need no sleeps.
"""

from __future__ import annotations

from collections.abc import Callable


class LivenessWatch:
    """Judges one socket at a time: `dead_reason()` is None while it lives, else one line saying why it is dead."""

    def __init__(self, clock: Callable[[], float], *, send_stall_seconds: float, reply_silence_seconds: float) -> None:
        self._clock = clock
        self.send_stall_seconds = send_stall_seconds
        self.reply_silence_seconds = reply_silence_seconds
        self._last_event_at = clock()
        self._send_started_at: float | None = None
        self._owed_since: float | None = None

    def on_connected(self) -> None:
        self._last_event_at = self._clock()
        self._send_started_at = self._owed_since = None

    def on_server_event(self) -> None:
        self._last_event_at = self._clock()

    def on_send_started(self) -> None:
        self._send_started_at = self._clock()

    def on_send_finished(self) -> None:
        self._send_started_at = None

    def note_reply_owed(self, owed: bool) -> None:
        """Whether the server owes an event (a reply in progress, a request or a caller's turn unanswered)."""
        if not owed:
            self._owed_since = None
        elif self._owed_since is None:
            self._owed_since = self._clock()

    def dead_reason(self) -> str | None:
        now = self._clock()
        if self._send_started_at is not None and now - self._send_started_at >= self.send_stall_seconds:
            return f"a send has been stuck for {now - self._send_started_at:.1f} s"
        if self._owed_since is not None:
            quiet = now - max(self._last_event_at, self._owed_since)
            if quiet >= self.reply_silence_seconds:
                return f"no server event for {quiet:.1f} s while a reply was due"
        return None
