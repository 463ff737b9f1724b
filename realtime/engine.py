"""VoiceSession: the thin I/O shell that runs a `Conversation` over a Realtime WebSocket.

One task owns the socket: it connects, pumps server events into the conversation, reconnects with
exponential backoff and full jitter on drops and expiry, and recycles the session before the
service's 60-minute cap. Tools run as tasks of their own. The transport (Discord or the console)
calls `feed_input()` every 20 ms on the event loop and pulls `playback.read_frame()` from any thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from realtime.address import AddressGate
from realtime.audio import STEREO_48K_AUDIO, TransportAudio
from realtime.client import RealtimeConnection
from realtime.conversation import BYTES_PER_MS_24K, Conversation, ToolCall
from realtime.errors import RealtimeError, RealtimeFatalError
from realtime.liveness import LivenessWatch
from realtime.metrics import SessionMetrics
from realtime.playback import PlaybackBuffer
from realtime.protocol import SessionConfig
from realtime.tools import ToolContext, ToolRegistry
from realtime.transcript import TranscriptEntry

log = logging.getLogger(__name__)

Connector = Callable[[SessionConfig], Awaitable[RealtimeConnection]]
# The transport's feed_input() every 20 ms already runs the conversation's timers; this task is the fallback when
# no frames come, and checks recycling. Each wake-up of an idle call costs CPU (bench/bench_idle.py): once a second.
HOUSEKEEPING_SECONDS = 1.0
SEND_QUEUE_LIMIT = 500  # ~10 s of uplink; past that the socket is stuck and new audio is dropped
STABLE_SECONDS = 10.0  # a socket up this long resets the count of failures in a row
SUMMARY_TIMEOUT_SECONDS = 15.0  # the post-call summary: a few seconds of text, well inside a shutdown's grace


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter; `attempts` consecutive failures end the session."""

    base_seconds: float = 0.5
    max_seconds: float = 30.0
    attempts: int = 6

    def delay(self, failures: int) -> float:
        return random.uniform(0, min(self.max_seconds, self.base_seconds * 2 ** max(0, failures - 1)))


def _default_context(speakers: frozenset[int]) -> ToolContext:
    return ToolContext(guild_id=0, user_id=min(speakers) if speakers else None)


class VoiceSession:
    """One conversation with the Realtime API, independent of where the audio comes from."""

    def __init__(self, config: SessionConfig, registry: ToolRegistry, *,
                 context_factory: Callable[[frozenset[int]], ToolContext] = _default_context,
                 on_transcript: Callable[[TranscriptEntry], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 connector: Connector = RealtimeConnection.open,
                 transport_audio: TransportAudio = STEREO_48K_AUDIO) -> None:
        self.config = config
        self.registry = registry
        self.transport_audio = transport_audio  # the frames feed_input takes and the playback buffer holds
        self.playback = PlaybackBuffer(clock, transport_audio.spoken.frame_bytes)
        self.metrics = SessionMetrics()
        self.conversation = Conversation(config, registry.specs(), self.playback, self.metrics, clock,
                                         transport_audio)
        self.liveness = LivenessWatch(clock, send_stall_seconds=config.send_stall_seconds,
                                      reply_silence_seconds=config.reply_silence_seconds)
        self._context_factory = context_factory
        self._on_transcript = on_transcript
        self._connector = connector
        self._backoff = Backoff(base_seconds=config.reconnect_base_seconds, attempts=config.connect_attempts)
        self._connection: RealtimeConnection | None = None
        self._send_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # audio is bounded in _dispatch
        self._runner: asyncio.Task[None] | None = None
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._fatal: str | None = None
        self._dropped_sends = 0
        self._writing = False  # the writer task holds an event it has not finished sending
        self.sent_at_once = 0  # events written straight from _dispatch, not through the queue (a bench figure)
        self._summary_waiter: asyncio.Future[str | None] | None = None

    # ----- public API -----

    async def start(self) -> None:
        """Connect (retrying transient failures); raises RealtimeFatalError with a one-line reason."""
        connection = await self._connect()
        self._runner = asyncio.create_task(self._run(connection), name="realtime-session")

    def feed_input(self, frame: bytes, speakers: Iterable[int] = ()) -> None:
        """One 20 ms frame of caller audio in `transport_audio.heard` (event loop thread)."""
        self.conversation.feed_input(frame, speakers)
        self._dispatch()

    def set_humans(self, count: int) -> None:
        """How many people are in the channel (two or more: Cap answers only when addressed, in adaptive mode)."""
        self.conversation.set_humans(count)
        self._dispatch()

    def ask(self, user_id: int) -> None:
        """`/cap ask`: Cap answers this user's next turn."""
        self.conversation.ask(user_id)

    @property
    def gate(self) -> AddressGate:
        """Whom Cap answers (mode, people present): for /cap status."""
        return self.conversation.gate

    def announce(self, note: str) -> None:
        """Have the model act on a system note now (a disclosure to say): sent, then a reply requested."""
        self.conversation.announce(note)
        self._dispatch()

    async def summarize(self, instructions: str, wait_seconds: float = SUMMARY_TIMEOUT_SECONDS) -> str | None:
        """Before closing: a text-only reply from this same session (it knows the whole call), or None when the
        session is gone, the reply failed or it took longer than `wait_seconds`."""
        if self.closed or self._connection is None or self._fatal is not None:
            return None
        self._summary_waiter = asyncio.get_running_loop().create_future()
        self.conversation.request_summary(instructions)
        self._dispatch()
        try:
            return await asyncio.wait_for(asyncio.shield(self._summary_waiter), wait_seconds)
        except TimeoutError:
            log.warning("the call summary took longer than %.0f s; going on without it", wait_seconds)
            return None
        finally:
            self._summary_waiter = None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def idle(self) -> bool:
        """Nobody is speaking, nothing is playing and no reply or tool is pending."""
        return self.conversation.idle and not self._tool_tasks

    async def wait_closed(self) -> str | None:
        """Wait for the session to end; the fatal reason, or None after a normal close."""
        await self._closed.wait()
        return self._fatal

    async def aclose(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for task in list(self._tool_tasks):
            task.cancel()
        if self._tool_tasks:
            await asyncio.gather(*self._tool_tasks, return_exceptions=True)
        await self._close_connection()
        self._closed.set()

    # ----- the socket task -----

    async def _connect(self, failures: int = 0) -> RealtimeConnection:
        """Open a socket, retrying with backoff; `failures` carries over drops of short-lived sockets."""
        while True:
            try:
                connection = await self._connector(self.config)
            except RealtimeFatalError:
                raise
            except RealtimeError as exc:
                failures += 1
                if failures >= self._backoff.attempts:
                    raise RealtimeFatalError(f"{exc} (gave up after {failures} attempts)") from None
                delay = max(self._backoff.delay(failures), exc.retry_after or 0.0)
                log.warning("%s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            self._connection = connection
            self.liveness.on_connected()
            self.conversation.on_connected()
            self._drain_queue()
            self._dispatch()
            return connection

    async def _run(self, connection: RealtimeConnection) -> None:
        loop = asyncio.get_running_loop()
        drops = 0  # sockets in a row that closed before they had been up for STABLE_SECONDS
        try:
            while True:
                opened_at = loop.time()
                recycle = await self._pump(connection)
                self.conversation.on_disconnected()
                await self._close_connection(abort=not recycle)  # a dropped or dead socket gets no close handshake
                if self._fatal is not None:
                    return
                if not recycle:
                    # A server that accepts and closes at once must meet the same backoff and limit as one
                    # that refuses: otherwise the session reconnects (and replays) in a tight loop for ever.
                    self.metrics.reconnects += 1
                    drops = drops + 1 if loop.time() - opened_at < STABLE_SECONDS else 1
                    if drops >= self._backoff.attempts:
                        raise RealtimeFatalError(f"the Realtime API keeps closing the connection "
                                                 f"(gave up after {drops} attempts)")
                    if drops > 1:
                        await asyncio.sleep(self._backoff.delay(drops - 1))
                connection = await self._connect(failures=drops if not recycle else 0)
        except RealtimeFatalError as exc:
            self._fatal = str(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Realtime session crashed")
            self._fatal = "the Realtime session crashed (see the log)"
        finally:
            if self._fatal:
                log.info("Realtime session ended: %s", self._fatal)  # the owner reports it to the user
            self.conversation.finish()  # what Cap said but had not played out yet is logged too, cut
            self._deliver_transcripts()
            await self._close_connection()
            self._closed.set()

    async def _pump(self, connection: RealtimeConnection) -> bool:
        """Move events both ways until the socket drops (False) or is due for recycling (True)."""
        writer = asyncio.create_task(self._write(connection), name="realtime-writer")
        reader = asyncio.create_task(self._read(connection), name="realtime-reader")
        keeper = asyncio.create_task(self._housekeeping(), name="realtime-housekeeping")
        tasks = {writer, reader, keeper}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # One line per drop: the reader and the writer often fail together on the same closed socket.
            errors = [exc for task in done if (exc := task.exception()) is not None]
            for exc in errors:
                if not isinstance(exc, RealtimeError):
                    raise exc
            if errors:
                first = errors[0]
                if not first.retryable:
                    self._fatal = self._fatal or str(first)
                elif self._fatal is None:
                    log.warning("%s; reconnecting", first)
                return False
            return keeper in done and keeper.result() is True
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, connection: RealtimeConnection) -> None:
        while self._fatal is None:
            event = await connection.recv()
            self.liveness.on_server_event()
            self.conversation.handle_event(event)
            self._dispatch()

    async def _housekeeping(self) -> bool:
        """Timers that need no event: the barge-in confirmation window, recycling (returns True), and the
        liveness watchdog (returns False: the socket is dead, reconnect)."""
        # A separate task rather than a timeout on recv(): asyncio.wait_for on Python 3.11 can swallow
        # a cancellation that races a completed recv, which would hang shutdown.
        while self._fatal is None:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.conversation.tick()
            self._dispatch()
            dead = self.liveness.dead_reason()
            if dead is not None:
                log.warning("Realtime connection is dead (%s); reconnecting", dead)
                return False
            if self.conversation.recycle_due() and not self._tool_tasks:
                log.info("recycling the Realtime session before the service's 60-minute limit")
                return True
        return False

    async def _write(self, connection: RealtimeConnection) -> None:
        while True:
            event = await self._send_queue.get()
            self._writing = True  # from here until the send returns, _dispatch must queue behind this event
            self.liveness.on_send_started()
            try:
                await connection.send(event)
            finally:
                self._writing = False
            self.liveness.on_send_finished()

    # ----- plumbing between the conversation and the world -----

    def _dispatch(self) -> None:
        """Drain the conversation's outputs: events to send, tools to run, transcripts to report."""
        conversation = self.conversation
        for event in conversation.events_to_send():
            # A stalled socket sheds caller audio only; control events (truncate, tool output) always go.
            if event["type"] == "input_audio_buffer.append" and self._send_queue.qsize() >= SEND_QUEUE_LIMIT:
                self._dropped_sends += 1
                # The service never hears it: its audio clock falls behind the one speakers are timed on.
                conversation.audio_dropped(len(base64.b64decode(event["audio"])) // BYTES_PER_MS_24K)
                if self._dropped_sends % 100 == 1:
                    log.warning("Realtime socket is not keeping up; dropped %d audio chunks", self._dropped_sends)
                continue
            if not self._send_now(event):
                self._send_queue.put_nowait(event)
        for call in conversation.tool_calls_to_run():
            task = asyncio.create_task(self._run_tool(call), name=f"tool-{call.name}")
            self._tool_tasks.add(task)
            task.add_done_callback(self._tool_tasks.discard)
        self._deliver_transcripts()
        self.liveness.note_reply_owed(conversation.reply_owed)
        waiter = self._summary_waiter
        if waiter is not None and not waiter.done() and conversation.summary_finished:
            waiter.set_result(conversation.summary)
        if conversation.fatal_error and self._fatal is None:
            self._fatal = conversation.fatal_error

    def _send_now(self, event: dict[str, Any]) -> bool:
        """Write `event` from this tick when nothing is ahead of it and the socket needs no waiting (the common
        case: no hop through the queue and the writer task); False leaves it to the queue, in order."""
        connection = self._connection
        # An event the writer has taken but not yet sent, or any event queued, must reach the wire first.
        if connection is None or self._writing or not self._send_queue.empty():
            return False
        self.liveness.on_send_started()  # a write that cannot wait cannot stall; the watchdog still sees it
        sent = connection.try_send_now(event)
        self.liveness.on_send_finished()
        if sent:
            self.sent_at_once += 1
        return sent

    def _deliver_transcripts(self) -> None:
        for entry in self.conversation.transcripts_ready():
            if self._on_transcript is not None:
                try:
                    self._on_transcript(entry)
                except Exception:
                    log.exception("transcript callback failed")

    async def _run_tool(self, call: ToolCall) -> None:
        # The turn's main speaker owns what the tool saves ("my phone is ..."), not whoever talked most all call.
        context = self._context_factory(frozenset({call.caller}) if call.caller is not None else call.speakers)
        log.info("tool call %s", call.name)
        result = await self.registry.call(call.name, call.arguments, context)
        self.conversation.on_tool_result(call, result)
        self._dispatch()

    def _drain_queue(self) -> None:
        while not self._send_queue.empty():
            self._send_queue.get_nowait()

    async def _close_connection(self, *, abort: bool = False) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                if abort:
                    connection.abort()
                else:
                    await connection.close()
