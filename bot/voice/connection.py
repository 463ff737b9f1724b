"""CapConnectionState: discord.py 2.7.1's VoiceConnectionState with three fixes a long call needs.

Each works around a discord.py 2.7.1 behaviour (reproduced against tests/discord_emulator; the scenario tests in
tests/bot/voice/test_call_on_discord.py fail without the fix, and tests/bot/voice/test_connection.py fails if
an upgrade changes the behaviour):
- `_disconnected` is set whenever a VOICE_STATE_UPDATE without a channel arrives and cleared only inside
  `_voice_disconnect`, before that update comes back. After any full reconnect (close 4006, 1001, 1006, a
  missed heartbeat) it stays set, so the next 4014 (a moderator's move, a voice-server change) is taken for a
  kick and the call ends. A READY (op 2) means a live voice session: the flag is cleared there. A real kick
  still sets it (its VOICE_STATE_UPDATE arrives after the READY).
- Close 4015 ("voice server crashed, resume") goes through `_connect(resume=True)`, which sends a gateway op 4
  for the channel Cap is already in and waits for both voice updates (Discord sends no VOICE_SERVER_UPDATE for
  it), then waits for a `secret_key` that a RESUMEd session never sends again: the call ends after 30 s.
  Here a resume opens a new voice WebSocket, sends RESUME and waits for RESUMED (op 9) only; if the server
  refuses, it falls back to the full reconnect discord.py makes for other close codes.
- An exception inside the voice WebSocket poller (e.g. davey's `ValueError` from `process_proposals` on one
  bad MLS message) ends the poller task silently while `is_connected()` stays True: no more SPEAKING, DAVE
  transitions or heartbeat ACKs. `watch_poller()` notices a poller that ended with an exception and makes a
  full reconnect (a fresh voice session, a fresh DAVE session), tried again with backoff as discord.py's poller
  does after a dropped voice WebSocket, so one refused or timed-out attempt does not end the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

import aiohttp
from discord.backoff import ExponentialBackoff
from discord.errors import ConnectionClosed
from discord.gateway import DiscordVoiceWebSocket
from discord.utils import MISSING
from discord.voice_state import ConnectionFlowState, VoiceConnectionState

log = logging.getLogger(__name__)

OP_READY: Final = 2
OP_RESUMED: Final = 9
RESUME_TIMEOUT_SECONDS: Final = 10.0
REVIVE_ATTEMPTS: Final = 5  # with discord.py's backoff (up to 2, 4, 8, 16 s between): about half a minute
WebsocketHook = Callable[[DiscordVoiceWebSocket, dict[str, Any]], Coroutine[Any, Any, Any]]


class CapConnectionState(VoiceConnectionState):
    """VoiceConnectionState that keeps moves working after reconnects, resumes 4015, and revives its poller."""

    def __init__(self, voice_client: Any, *, hook: WebsocketHook | None = None) -> None:
        super().__init__(voice_client, hook=self._on_message)
        self._cap_hook = hook
        self._resumed = asyncio.Event()
        self._revival: asyncio.Task[None] | None = None
        self.poller_deaths = 0
        self.poller_revivals = 0
        self.resumes = 0

    async def _on_message(self, ws: DiscordVoiceWebSocket, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == OP_READY:
            self._disconnected.clear()  # a live session: any earlier "left the channel" is history
        elif op == OP_RESUMED:
            self._resumed.set()
        if self._cap_hook is not None:
            await self._cap_hook(ws, msg)

    # ---- close 4015: resume ----------------------------------------------------------------------------------

    async def _connect(
        self,
        reconnect: bool,
        timeout: float,  # noqa: ASYNC109 - discord.py's signature
        self_deaf: bool,
        self_mute: bool,
        resume: bool,
    ) -> None:
        if not resume or self.ws is MISSING or not self.secret_key:
            await super()._connect(reconnect, timeout, self_deaf, self_mute, resume)
            return
        try:
            await asyncio.wait_for(self._resume(), min(timeout, RESUME_TIMEOUT_SECONDS))
        except (ConnectionClosed, TimeoutError, OSError, aiohttp.ClientError) as exc:
            log.info("voice resume failed (%s); reconnecting", exc)
            await self.disconnect(cleanup=False)
            await super()._connect(reconnect, timeout, self_deaf, self_mute, False)
        else:
            self.resumes += 1
            log.info("voice session resumed")

    async def _resume(self) -> None:
        previous = self.ws
        self._resumed.clear()
        self.ws = await self._connect_websocket(True)  # sends RESUME with the last seq_ack
        try:
            await previous.close(4015)  # stops its heartbeat thread
        except Exception:
            log.debug("closing the crashed voice WebSocket failed", exc_info=True)
        while not self._resumed.is_set():
            await self.ws.poll_event()
        self.state = ConnectionFlowState.connected  # same key, SSRC and UDP route: nothing else to wait for

    # ---- a dead poller ------------------------------------------------------------------------------------------

    def poller_error(self) -> BaseException | None:
        """The exception that ended the voice WebSocket poller, if it died (rather than stopped or was cancelled)."""
        runner = self._runner
        if runner is None or not runner.done() or runner.cancelled():
            return None
        return runner.exception()

    def watch_poller(self) -> bool:
        """Start a reconnect if the poller died; True when one was started (event loop, call it often)."""
        if self._revival is not None and not self._revival.done():
            return False
        error = self.poller_error()
        if error is None:
            return False
        self.poller_deaths += 1
        log.error("the voice gateway reader stopped (%s: %s); reconnecting", type(error).__name__, error)
        self._runner = None  # so _connect starts a new one
        self._revival = asyncio.get_running_loop().create_task(self._revive(), name="cap-voice-revive")
        return True

    async def disconnect(self, *, force: bool = True, cleanup: bool = True, wait: bool = False) -> None:
        """discord.py's disconnect; a reconnect started by watch_poller is called off first (a /cap leave
        during it must not be followed by Cap rejoining the channel)."""
        revival = self._revival
        if revival is not None and not revival.done() and revival is not asyncio.current_task():
            revival.cancel()
        await super().disconnect(force=force, cleanup=cleanup, wait=wait)

    async def _revive(self) -> None:
        voice_state = self.self_voice_state
        self_deaf = voice_state.self_deaf if voice_state is not None else self.self_deaf
        self_mute = voice_state.self_mute if voice_state is not None else self.self_mute
        backoff = ExponentialBackoff()
        for attempt in range(1, REVIVE_ATTEMPTS + 1):
            try:
                await self.disconnect(cleanup=False)
                await self._connect(self.reconnect, self.timeout, self_deaf, self_mute, False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == REVIVE_ATTEMPTS:
                    log.exception("reconnecting after the voice gateway reader stopped failed %d times; leaving voice",
                                  attempt)
                    await self.disconnect()
                    return
                delay = backoff.delay()
                log.warning("reconnecting after the voice gateway reader stopped failed (%s: %s); again in %.1f s",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
            else:
                self.poller_revivals += 1
                log.info("voice reconnected after the voice gateway reader stopped")
                return
