"""Graceful shutdown: SIGTERM (docker stop) or SIGINT asks the bot to close once; calls end together.

The order, once a signal arrives: every call says goodbye, leaves voice, flushes its transcript to the
database and closes its Realtime session, all calls at once and within CALLS_END_TIMEOUT_SECONDS; then
discord.py disconnects the shards and `cap-bot run` exits 0. A second SIGTERM while closing is logged and
ignored (the deadline bounds the wait; docker's SIGKILL is the hard stop); a second Ctrl-C quits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

log = logging.getLogger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Under docker compose's stop_grace_period (30 s) with room for discord.py's own close afterwards.
CALLS_END_TIMEOUT_SECONDS = 20.0
# Posted in each call's text chat as Cap leaves (VoiceCall posts an unknown reason verbatim).
SHUTDOWN_REASON = "Cap is restarting, so I hung up. Use /cap join again in a minute."


class Call(Protocol):
    def stop(self, reason: str = ...) -> Awaitable[None]: ...


async def end_calls(
    calls: Iterable[Call],
    reason: str = SHUTDOWN_REASON,
    *,
    timeout: float = CALLS_END_TIMEOUT_SECONDS,  # noqa: ASYNC109
) -> int:
    """Stop every call at once and wait at most `timeout` s; returns how many had not finished by then."""
    stopping = [asyncio.ensure_future(call.stop(reason)) for call in list(calls)]
    if not stopping:
        return 0
    log.info("ending %d call(s)", len(stopping))
    done, pending = await asyncio.wait(stopping, timeout=timeout)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("a call failed to end cleanly", exc_info=task.exception())
    if pending:
        log.error("%d call(s) still ending after %.0f s; leaving them", len(pending), timeout)
    return len(pending)


class ShutdownCoordinator:
    """Turns the first shutdown signal into one `close()`; constructed without side effects, `install()`s."""

    def __init__(self, close: Callable[[], Awaitable[None]]) -> None:
        self._close = close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._installed: list[signal.Signals] = []
        self.signal_name: str | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self, loop: asyncio.AbstractEventLoop, signals: Iterable[signal.Signals] = SHUTDOWN_SIGNALS) -> None:
        self._loop = loop
        for sig in signals:
            try:
                loop.add_signal_handler(sig, self.request, sig.name)
            except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
                log.debug("cannot handle %s here", sig.name)
                continue
            self._installed.append(sig)

    def uninstall(self) -> None:
        if self._loop is not None:
            for sig in self._installed:
                self._loop.remove_signal_handler(sig)
        self._installed.clear()

    def request(self, signal_name: str = "shutdown") -> None:
        """Start closing (once); later requests are only logged."""
        if self.signal_name is not None:
            if signal_name == "SIGINT":  # Ctrl-C twice: the operator does not want to wait
                self.uninstall()
                raise KeyboardInterrupt
            log.warning("%s: already shutting down (since %s)", signal_name, self.signal_name)
            return
        self.signal_name = signal_name
        log.info("%s: shutting down gracefully", signal_name)
        self.task = asyncio.ensure_future(self._run_close())

    async def _run_close(self) -> None:
        try:
            await self._close()
        except Exception:
            log.exception("closing after %s failed", self.signal_name)
