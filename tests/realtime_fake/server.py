"""A fake OpenAI Realtime service (GA interface) on 127.0.0.1 for engine tests.

It speaks the service's side over a real WebSocket: auth and beta-header checks, `session.created`, server
VAD computed from the appended audio, auto responses streamed faster than real time, barge-in cancellation,
function calls, truncate/delete, and failure hooks (garbage frames, session expiry, dropped sockets,
refused handshakes). Every client event is checked against the SDK schema (`schema.py`); a violation is
recorded in `schema_errors` and answered with an `error` event, as the service does.

Event order of one audio response, as emitted here (and by the service):
  response.created, rate_limits.updated, response.output_item.added, conversation.item.added,
  response.content_part.added, (response.output_audio.delta | response.output_audio_transcript.delta)*,
  response.output_audio.done, response.output_audio_transcript.done, response.content_part.done,
  response.output_item.done, conversation.item.done, response.done
A text-only response (output_modalities ["text"]): response.created, rate_limits.updated,
  response.output_item.added, [conversation.item.added,] response.content_part.added,
  response.output_text.delta*, response.output_text.done, response.content_part.done,
  response.output_item.done, [conversation.item.done,] response.done; out of band (conversation "none")
  without the bracketed events, conversation_id null, and its metadata echoed.
A cancelled response ends with the same `.done` events (item status "incomplete") and
`response.done` {status "cancelled", status_details.reason "turn_detected" | "client_cancelled"}.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import itertools
import json
import re
import secrets
import socket
import string
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .schema import SchemaViolation, validate_client_event, validate_server_event

__all__ = ["SAMPLE_RATE", "ConnectionRecord", "FakeRealtimeServer", "pcm_ms", "tone_pcm"]

SAMPLE_RATE = 24_000  # the service's PCM16 mono rate, both directions
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # 48
VAD_WINDOW_MS = 10
VAD_WINDOW_BYTES = VAD_WINDOW_MS * BYTES_PER_MS
MIN_COMMIT_MS = 100  # the service refuses to commit a buffer holding less than 100 ms
# semantic_vad: the service's model ends a turn soon after words that sound finished and waits up to 8/4/2 s
# (eagerness low/medium(auto)/high, the SDK's docstring) after words that do not. This fake cannot judge words:
# it assumes every pause it hears is one a person makes mid-sentence or mid-number, and ends the turn after this
# much silence (a fraction of each maximum, so tests stay short), longer than the seed's 500 ms server VAD.
SEMANTIC_VAD_SILENCE_MS = {"low": 2000, "medium": 1200, "auto": 1200, "high": 800}
DEFAULT_MODEL = "gpt-realtime-2.1"
_ALPHABET = string.ascii_letters + string.digits
_FATAL_ERROR_TYPES = {"insufficient_quota": "insufficient_quota"}  # other codes: invalid_request_error
_FATAL_MESSAGES = {
    "insufficient_quota": "You exceeded your current quota, please check your plan and billing details.",
    "account_deactivated": "This account has been deactivated.",
    "billing_hard_limit_reached": "Billing hard limit has been reached.",
}

Event = dict[str, Any]


def _new_id(prefix: str, length: int = 21) -> str:
    """IDs shaped like the service's ("item_C9G8pGVKYnaZu8PH5YQ9O")."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def tone_pcm(seconds: float = 1.5, freq: float = 440.0, level: float = 0.25) -> bytes:
    """A sine tone as 24 kHz mono PCM16 (level is the peak as a fraction of full scale), with 10 ms fades."""
    n = int(seconds * SAMPLE_RATE)
    wave = np.sin(2 * np.pi * freq * np.arange(n) / SAMPLE_RATE) * level * 32767
    fade = min(n // 2, SAMPLE_RATE // 100)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[n - fade :] *= ramp[::-1]
    return wave.astype("<i2").tobytes()


def pcm_ms(pcm: bytes) -> int:
    """Duration in whole ms of 24 kHz mono PCM16."""
    return len(pcm) // BYTES_PER_MS


@dataclass
class ConnectionRecord:
    """What one WebSocket connection sent and saw; kept after it closes."""

    path: str
    query: dict[str, str]
    headers: Headers
    events: list[Event] = field(default_factory=list)  # client events received, parsed
    sent: list[Event] = field(default_factory=list)  # server events sent (not `send_raw` text)
    session: Event = field(default_factory=dict)  # effective session config
    items: dict[str, Event] = field(default_factory=dict)  # the conversation, in order
    input_audio: bytearray = field(default_factory=bytearray)
    close_code: int | None = None

    @property
    def model(self) -> str | None:
        return self.query.get("model")


class _ServerVad:
    """Energy VAD over 10 ms windows, sans-I/O: `feed` returns ("started", onset_ms) / ("stopped", end_ms)."""

    def __init__(self) -> None:
        self.position_ms = 0
        self._pending = b""
        self._speaking = False
        self._confirmed = False
        self._onset_ms = 0
        self._last_speech_end_ms = 0

    def reset(self) -> None:
        self._speaking = self._confirmed = False

    def feed(
        self, pcm: bytes, rms_threshold: float, silence_ms: int, min_burst_ms: int
    ) -> list[tuple[str, int]]:
        data = self._pending + pcm
        whole = len(data) // VAD_WINDOW_BYTES * VAD_WINDOW_BYTES
        self._pending = data[whole:]
        if not whole:
            return []
        windows = (
            np.frombuffer(data[:whole], dtype="<i2").astype(np.float64).reshape(-1, VAD_WINDOW_BYTES // 2)
        )
        actions: list[tuple[str, int]] = []
        for rms in np.sqrt((windows**2).mean(axis=1)):
            start, self.position_ms = self.position_ms, self.position_ms + VAD_WINDOW_MS
            if rms > rms_threshold:
                if not self._speaking:
                    self._speaking, self._confirmed, self._onset_ms = True, False, start
                self._last_speech_end_ms = self.position_ms
            if not self._speaking:
                continue
            if not self._confirmed and self._last_speech_end_ms - self._onset_ms >= min_burst_ms:
                self._confirmed = True
                actions.append(("started", self._onset_ms))
            if self.position_ms - self._last_speech_end_ms >= silence_ms:
                if self._confirmed:
                    actions.append(("stopped", self.position_ms))
                self.reset()
        return actions


@dataclass
class _Response:
    id: str
    tool_choice: str = "auto"  # response.create's response.tool_choice, else the session's
    params: Event = field(default_factory=dict)  # response.create's `response` (modalities, out of band, …)
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def _default_session(model: str) -> Event:
    """The session object the service shows in `session.created` (defaults as documented)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": _new_id("sess"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful, witty, and friendly AI.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + 3600,
        "include": None,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 200,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "voice": "alloy", "speed": 1.0},
        },
    }


def _merge(base: Event, patch: Event) -> None:
    """`session.update` semantics: only the fields present change; nested objects merge, lists replace."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


class _Session:
    """The service's state for one connection: session config, conversation, input buffer, active response."""

    def __init__(self, server: FakeRealtimeServer, ws: ServerConnection, record: ConnectionRecord) -> None:
        self.server, self.ws, self.record = server, ws, record
        self.vad = _ServerVad()
        self.response: _Response | None = None
        self.conversation_id = _new_id("conv")
        self.audio_ms: dict[str, int] = {}  # assistant item id -> ms of audio it holds
        self.audio_sent = False
        self.responses_done = 0
        self.uncommitted_ms = 0
        self.speech_item_id: str | None = None
        self.silent = False  # half-dead: sends nothing and reads nothing, the TCP connection stays open
        self._vad_queue: asyncio.Queue[tuple[str, int, str, float]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()  # the VAD worker and response streams
        self._handlers: dict[str, Callable[[Event], Awaitable[None]]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_truncate,
            "conversation.item.delete": self._on_item_delete,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_webrtc_only,
        }

    # -- connection ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await self._admit():
                self._spawn(self._vad_worker())
                async for message in self.ws:
                    await self._receive(message)
        except ConnectionClosed:
            pass
        finally:
            for task in list(self._tasks):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _admit(self) -> bool:
        """Check the key and the removed beta header, then greet with `session.created`."""
        keys = self.server.valid_keys
        auth = self.record.headers.get("Authorization", "")
        if not any(auth == f"Bearer {key}" for key in keys):
            shown = auth.removeprefix("Bearer ")[:8] + "****"
            await self._reject("invalid_api_key", f"Incorrect API key provided: {shown}.")
        elif "OpenAI-Beta" in self.record.headers:
            await self._reject(
                "beta_api_shape_disabled",
                "The Realtime API beta shape was removed; drop the OpenAI-Beta header.",
            )
        elif self.server.fatal_on_connect:
            code = self.server.fatal_on_connect
            message = _FATAL_MESSAGES.get(code, f"Fatal error: {code}.")
            await self._reject(code, message, _FATAL_ERROR_TYPES.get(code, "invalid_request_error"))
        else:
            self.record.session = _default_session(self.record.model or DEFAULT_MODEL)
            await self._emit("session.created", session=self.record.session)
            return True
        return False

    async def _reject(self, code: str, message: str, error_type: str = "invalid_request_error") -> None:
        await self._error(code, message, error_type=error_type)
        await self.ws.close(1008, code)

    async def _receive(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.server.schema_errors.append(f"not a JSON object: {str(message)[:80]!r}")
            await self._error("invalid_json", "The server could not parse the event as a JSON object.")
            return
        self.record.events.append(event)
        self.server.received.append(event)
        self.server._notify()
        try:
            validate_client_event(event)
        except SchemaViolation as exc:
            self.server.schema_errors.append(f"{event.get('type')}: {exc}")
            await self._error(exc.code, exc.message, event=event, param=exc.param)
            return
        await self._handlers[event["type"]](event)

    async def _emit(self, type_: str, **fields: Any) -> Event:
        """Send one server event (with a fresh event_id), record it, and self-check its shape."""
        text = json.dumps({"type": type_, "event_id": _new_id("event"), **fields})
        event = json.loads(text)  # the record is what went on the wire, not a live view of mutable state
        if self.silent:
            return event  # half-dead: nothing goes out, nothing is recorded as sent
        if self.server.validate_own_events:
            try:
                validate_server_event(event)
            except SchemaViolation as exc:
                self.server.own_schema_errors.append(f"{type_}: {exc}")
        self.record.sent.append(event)
        self.server.sent.append(event)
        self.server._notify()
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(text)
        return event

    async def _error(
        self,
        code: str,
        message: str,
        *,
        event: Event | None = None,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        """An `error` event; `event_id` echoes the offending client event's id, as the service does."""
        event_id = event.get("event_id") if event else None
        error = {"type": error_type, "code": code, "message": message, "param": param, "event_id": event_id}
        await self._emit("error", error=error)

    # -- session and input audio --------------------------------------------------------------------------

    @property
    def _turn_detection(self) -> Event | None:
        return self.record.session["audio"]["input"].get("turn_detection")

    def go_silent(self) -> None:
        """Half-dead: stop sending and reading (the peer's sends pile up in the socket buffers); no close."""
        self.silent = True
        self.ws.transport.pause_reading()

    async def _on_session_update(self, event: Event) -> None:
        if self.server.reject_session_update:  # e.g. a transcription model this account may not use
            param, message = self.server.reject_session_update
            await self._error("invalid_value", message, event=event, param=param)
            return
        patch = {k: v for k, v in event["session"].items() if k != "type"}
        voice = patch.get("audio", {}).get("output", {}).get("voice")
        if voice and self.audio_sent and voice != self.record.session["audio"]["output"]["voice"]:
            message = "Cannot update a conversation's voice if assistant audio is present."
            await self._error("cannot_update_voice", message, event=event, param="session.audio.output.voice")
            return
        _merge(self.record.session, patch)
        await self._emit("session.updated", session=self.record.session)

    async def _on_append(self, event: Event) -> None:
        try:
            pcm = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            await self._error("invalid_value", "Invalid base64 audio.", event=event, param="audio")
            return
        self.record.input_audio += pcm
        self.uncommitted_ms += pcm_ms(pcm)
        td = self._turn_detection
        if td is None:
            self.vad.position_ms += pcm_ms(pcm)
            return
        rms_threshold = self.server.vad_rms_threshold * (td.get("threshold") or 0.5) / 0.5
        if td.get("type") == "semantic_vad":
            silence_ms = SEMANTIC_VAD_SILENCE_MS[td.get("eagerness") or "auto"]
        else:
            silence_ms = td.get("silence_duration_ms") or 200
        now = asyncio.get_running_loop().time()
        for kind, ms in self.vad.feed(
            pcm, rms_threshold, silence_ms, self.server.suppress_speech_started_below_ms
        ):
            if kind == "started":
                self.speech_item_id = _new_id("item")
                ms = max(0, ms - (td.get("prefix_padding_ms") or 0))
            self._vad_queue.put_nowait((kind, ms, self.speech_item_id or _new_id("item"), now))
            if kind == "stopped":
                self.speech_item_id = None

    async def _vad_worker(self) -> None:
        """Emit VAD events in order; speech_started lags its audio by `speech_started_delay_ms` real time."""
        loop = asyncio.get_running_loop()
        while True:
            kind, ms, item_id, detected_at = await self._vad_queue.get()
            if kind == "started":
                await asyncio.sleep(
                    max(0.0, detected_at + self.server.speech_started_delay_ms / 1000 - loop.time())
                )
                await self._emit("input_audio_buffer.speech_started", audio_start_ms=ms, item_id=item_id)
                td = self._turn_detection or {}
                if self.response is not None and td.get("interrupt_response", True):
                    await self._cancel_response("turn_detected")
                continue
            await self._emit("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=item_id)
            await self._commit(item_id)
            if (self._turn_detection or {}).get("create_response", True) and self.response is None:
                self._start_response()

    async def _commit(self, item_id: str) -> None:
        previous = self._last_item_id()
        self.uncommitted_ms = 0
        await self._emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self._add_item(item, previous)
        await self._emit("conversation.item.done", item=item, previous_item_id=previous)
        if self.record.session["audio"]["input"].get("transcription") is None:
            return  # like the service: no transcription events unless a transcription model is configured
        transcript = next(self.server._user_transcripts)
        item["content"][0]["transcript"] = transcript
        usage = {
            "type": "tokens",
            "input_tokens": 30,
            "output_tokens": len(transcript) // 4 + 1,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 30},
        }
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        await self._emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage=usage,
        )

    async def _on_commit(self, event: Event) -> None:
        if self.uncommitted_ms < MIN_COMMIT_MS:
            message = (
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {self.uncommitted_ms}ms of audio."
            )
            await self._error("input_audio_buffer_commit_empty", message, event=event)
            return
        self.vad.reset()
        await self._commit(self.speech_item_id or _new_id("item"))
        self.speech_item_id = None

    async def _on_clear(self, event: Event) -> None:
        self.uncommitted_ms = 0
        self.vad.reset()
        await self._emit("input_audio_buffer.cleared")

    # -- conversation items -------------------------------------------------------------------------------

    def _last_item_id(self) -> str | None:
        return next(reversed(self.record.items), None)

    async def _add_item(self, item: Event, previous: str | None) -> None:
        self.record.items[item["id"]] = item
        await self._emit("conversation.item.added", item=item, previous_item_id=previous)

    async def _on_item_create(self, event: Event) -> None:
        previous = event.get("previous_item_id") or self._last_item_id()
        if previous not in (None, "root") and previous not in self.record.items:
            await self._item_not_found(previous, event, "previous_item_id")
            return
        item = {
            "id": _new_id("item"),
            **copy.deepcopy(event["item"]),
            "object": "realtime.item",
            "status": "completed",
        }
        self.server.created_items.append(item)
        if item["type"] == "function_call_output":
            self.server.function_outputs.append(item)
        await self._add_item(item, None if previous == "root" else previous)
        await self._emit(
            "conversation.item.done", item=item, previous_item_id=None if previous == "root" else previous
        )

    async def _on_item_retrieve(self, event: Event) -> None:
        item = self.record.items.get(event["item_id"])
        if item is None:
            await self._item_not_found(event["item_id"], event)
        else:
            await self._emit("conversation.item.retrieved", item=item)

    async def _on_truncate(self, event: Event) -> None:
        item_id, end_ms = event["item_id"], event["audio_end_ms"]
        if item_id not in self.record.items:
            await self._item_not_found(item_id, event)
            return
        if item_id not in self.audio_ms:
            message = "Only model output audio messages can be truncated"
            await self._error("invalid_value", message, event=event, param="item_id")
            return
        if end_ms > self.audio_ms[item_id]:
            message = f"Audio content of {self.audio_ms[item_id]}ms is already shorter than {end_ms}ms"
            await self._error("invalid_value", message, event=event, param="audio_end_ms")
            return
        self.server.truncations.append(
            {"item_id": item_id, "content_index": event["content_index"], "audio_end_ms": end_ms}
        )
        self.audio_ms[item_id] = end_ms
        await self._emit(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=event["content_index"],
            audio_end_ms=end_ms,
        )

    async def _on_item_delete(self, event: Event) -> None:
        item_id = event["item_id"]
        if self.record.items.pop(item_id, None) is None:
            await self._item_not_found(item_id, event)
            return
        self.server.deleted_items.append(item_id)
        await self._emit("conversation.item.deleted", item_id=item_id)

    async def _item_not_found(self, item_id: str, event: Event, param: str = "item_id") -> None:
        await self._error(
            "item_not_found", f"Item with item_id not found: {item_id}", event=event, param=param
        )

    async def _on_webrtc_only(self, event: Event) -> None:
        message = f"{event['type']} is only supported for WebRTC and SIP connections."
        await self._error("invalid_value", message, event=event, param="type")

    # -- responses ----------------------------------------------------------------------------------------

    async def _on_response_create(self, event: Event) -> None:
        if self.response is not None:
            message = (
                f"Conversation already has an active response in progress: {self.response.id}. "
                "Wait until the response is finished before creating a new one."
            )
            await self._error("conversation_already_has_active_response", message, event=event)
            return
        self._start_response(event.get("response") or {})

    async def _on_response_cancel(self, event: Event) -> None:
        wanted = event.get("response_id")
        if self.response is None or (wanted and wanted != self.response.id):
            message = "Cancellation failed: no active response found"
            await self._error("response_cancel_not_active", message, event=event)
            return
        await self._cancel_response("client_cancelled")

    def _start_response(self, params: Event | None = None) -> None:
        params = dict(params or {})
        tool_choice = params.get("tool_choice") or self.record.session.get("tool_choice") or "auto"
        self.response = _Response(_new_id("resp"), tool_choice, params)
        self.response.task = self._spawn(self._run_response(self.response))

    async def _cancel_response(self, reason: str) -> None:
        """Stop the active response; it sends its own closing events, which this waits for."""
        response = self.response
        if response is None or response.task is None:
            return
        response.cancel_reason = reason
        response.wake.set()
        await asyncio.shield(response.task)

    async def _pace(self, response: _Response, ms: float) -> None:
        """Wait `ms` of audio at `realtime_factor` times real time, waking early on cancel."""
        factor = self.server.realtime_factor
        seconds = ms / 1000 / factor if factor and factor > 0 else 0.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(response.wake.wait(), seconds)

    def _response_object(
        self, response: _Response, status: str, output: list[Event], usage: Event | None
    ) -> Event:
        details = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": response.cancel_reason}
        elif status == "failed":  # how the service reports e.g. an exhausted quota on a live session
            code = self.server.fail_responses_with
            details = {"type": "failed", "error": {"type": code, "code": code}}
        voice = self.record.session["audio"]["output"]["voice"]
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": status,
            "status_details": details,
            "output": output,
            # An out-of-band response (conversation "none") belongs to no conversation.
            "conversation_id": None if response.params.get("conversation") == "none" else self.conversation_id,
            "output_modalities": self._modalities(response),
            "max_output_tokens": "inf",
            "metadata": response.params.get("metadata"),
            "usage": usage,
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "voice": voice}},
        }

    def _modalities(self, response: _Response) -> list[str]:
        """The response's own output_modalities, else the session's."""
        return list(response.params.get("output_modalities") or self.record.session.get("output_modalities")
                    or ["audio"])

    async def _run_response(self, response: _Response) -> None:
        try:
            await self._emit(
                "response.created", response=self._response_object(response, "in_progress", [], None)
            )
            remaining = 40_000 - 300 * len(self.record.items)
            await self._emit(
                "rate_limits.updated",
                rate_limits=[
                    {"name": "requests", "limit": 5_000, "remaining": 4_999, "reset_seconds": 0.012},
                    {"name": "tokens", "limit": 40_000, "remaining": max(remaining, 0), "reset_seconds": 0.9},
                ],
            )
            # An out-of-band text reply (the call summary) calls no tools; a text-only session (listen mode) does.
            out_of_band = response.params.get("conversation") == "none"
            text_only = self._modalities(response) == ["text"]
            spec = self.server.function_calls.pop(0) if self.server.function_calls and not out_of_band else None
            if spec is None and self.server.function_call_storm and response.tool_choice != "none":
                spec = dict(self.server.function_call_storm, call_id=_new_id("call", 16))
            if response.tool_choice == "none":
                spec = None  # the model may not call a tool: it speaks
            previous = self._last_item_id()
            if self.server.fail_responses_with and self.server.fail_responses != 0:
                if self.server.fail_responses is not None:
                    self.server.fail_responses -= 1
                self.response = None
                failed = self._response_object(response, "failed", [], None)
                await self._emit("response.done", response=failed)
                self.server.responses.append(failed)
                return
            output: list[Event] = []
            out_audio_ms = 0
            if spec is None or spec.get("preamble"):  # a preamble: "Let me check that." and the call, one response
                if text_only:
                    audio_item = await self._stream_text(response, previous)
                else:
                    audio_item, out_audio_ms = await self._stream_audio(response, previous)
                output.append(audio_item)
                previous = audio_item["id"]
            if spec is not None and not (output and response.cancel_reason):  # a cut preamble ends the response
                output.append(await self._stream_function_call(response, spec, previous, len(output)))
            status = "cancelled" if response.cancel_reason else "completed"
            usage = self._usage(out_audio_ms, output[-1])
            # Free the slot before response.done: the client may answer it with response.create at once.
            self.response = None
            done = await self._emit(
                "response.done", response=self._response_object(response, status, output, usage)
            )
            self.server.responses.append(done["response"])
            self.responses_done += 1
            if self.server.drop_after_function_call and spec is not None and status == "completed":
                self.server.drop_after_function_call = False
                self.ws.transport.abort()  # the socket dies right after a completed function call
        except Exception as exc:  # a bug in the fake must fail the test, not hang it
            self.server.internal_errors.append(repr(exc))
            raise
        finally:
            if self.response is response:
                self.response = None

    async def _stream_audio(self, response: _Response, previous: str | None) -> tuple[Event, int]:
        item = {
            "id": _new_id("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        ids = {"response_id": response.id, "item_id": item["id"], "output_index": 0, "content_index": 0}
        await self._emit("response.output_item.added", response_id=response.id, output_index=0, item=item)
        await self._add_item(item, previous)
        await self._emit("response.content_part.added", **ids, part={"type": "audio", "transcript": ""})
        self.audio_ms[item["id"]] = 0
        pcm, transcript = self.server.reply_audio, next(self.server._reply_transcripts)
        chunk_bytes = max(1, self.server.chunk_ms) * BYTES_PER_MS
        chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm) - len(pcm) % 2, chunk_bytes)]
        words, spoken = re.findall(r"\S+\s*", transcript), 0  # transcript deltas keep pace with the audio
        for index, chunk in enumerate(chunks, 1):
            if response.cancel_reason:
                break
            await self._emit("response.output_audio.delta", **ids, delta=base64.b64encode(chunk).decode())
            self.audio_sent = True
            self.audio_ms[item["id"]] += pcm_ms(chunk)
            silent_after = self.server.silent_after_audio_ms
            if silent_after is not None and self.audio_ms[item["id"]] >= silent_after:
                self.server.silent_after_audio_ms = None
                self.go_silent()
            due = len(words) if index == len(chunks) else len(words) * index // len(chunks)
            for word in words[spoken:due]:
                await self._emit("response.output_audio_transcript.delta", **ids, delta=word)
            spoken = max(spoken, due)
            await self._pace(response, pcm_ms(chunk))
        said = "".join(words[:spoken])
        status = "incomplete" if response.cancel_reason else "completed"
        await self._emit("response.output_audio.done", **ids)
        await self._emit("response.output_audio_transcript.done", **ids, transcript=said)
        await self._emit("response.content_part.done", **ids, part={"type": "audio", "transcript": said})
        item.update(status=status, content=[{"type": "output_audio", "transcript": said}])
        await self._emit("response.output_item.done", response_id=response.id, output_index=0, item=item)
        await self._emit("conversation.item.done", item=item, previous_item_id=previous)
        return item, self.audio_ms[item["id"]]

    async def _stream_text(self, response: _Response, previous: str | None) -> Event:
        """A text-only message (output_modalities ["text"]); out of band it is not added to the conversation.
        An out-of-band reply (the call summary) says `text_reply`; a text-only session's reply the next of
        `reply_transcripts`."""
        item = {"id": _new_id("item"), "object": "realtime.item", "type": "message", "status": "in_progress",
                "role": "assistant", "content": []}
        in_conversation = response.params.get("conversation") != "none"
        ids = {"response_id": response.id, "item_id": item["id"], "output_index": 0, "content_index": 0}
        await self._emit("response.output_item.added", response_id=response.id, output_index=0, item=item)
        if in_conversation:
            await self._add_item(item, previous)
        await self._emit("response.content_part.added", **ids, part={"type": "text", "text": ""})
        text = next(self.server._reply_transcripts) if in_conversation else self.server.text_reply
        for word in re.findall(r"\S+\s*", text):
            if response.cancel_reason:
                break
            await self._emit("response.output_text.delta", **ids, delta=word)
            await self._pace(response, 5)
        await self._emit("response.output_text.done", **ids, text=text)
        await self._emit("response.content_part.done", **ids, part={"type": "text", "text": text})
        item.update(status="completed", content=[{"type": "output_text", "text": text}])
        await self._emit("response.output_item.done", response_id=response.id, output_index=0, item=item)
        if in_conversation:
            await self._emit("conversation.item.done", item=item, previous_item_id=previous)
        return item

    async def _stream_function_call(
        self, response: _Response, spec: Event, previous: str | None, output_index: int = 0
    ) -> Event:
        name, arguments = spec["name"], spec.get("arguments", "{}")
        item = {
            "id": _new_id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": spec.get("call_id") or _new_id("call", 16),
            "arguments": "",
        }
        ids = {
            "response_id": response.id,
            "item_id": item["id"],
            "output_index": output_index,
            "call_id": item["call_id"],
        }
        await self._emit(
            "response.output_item.added", response_id=response.id, output_index=output_index, item=item
        )
        await self._add_item(item, previous)
        step = max(1, len(arguments) // 3)
        for i in range(0, len(arguments), step):
            await self._emit("response.function_call_arguments.delta", **ids, delta=arguments[i : i + step])
            await self._pace(response, 20)
        await self._emit("response.function_call_arguments.done", **ids, name=name, arguments=arguments)
        if self.server.cancel_function_call_response and not response.cancel_reason:
            response.cancel_reason = "turn_detected"
        item.update(status="incomplete" if response.cancel_reason else "completed", arguments=arguments)
        await self._emit(
            "response.output_item.done", response_id=response.id, output_index=output_index, item=item
        )
        await self._emit("conversation.item.done", item=item, previous_item_id=previous)
        return item

    def _usage(self, out_audio_ms: int, item: Event) -> Event:
        """Token counts in the service's proportions: ~10 input / ~20 output audio tokens per second."""
        session = self.record.session
        text_in = (
            40
            + len(session.get("instructions") or "") // 4
            + len(json.dumps(session.get("tools") or [])) // 4
        )
        text_in += sum(
            len(json.dumps(i.get("content") or i.get("output") or "")) // 4
            for i in self.record.items.values()
        )
        audio_in = pcm_ms(self.record.input_audio) // 100
        cached_text = text_in // 64 * 64 if self.responses_done else 0  # the prompt cache warms after one
        text_out = len(json.dumps(item.get("content") or item.get("arguments") or "")) // 4
        audio_out = out_audio_ms // 50
        return {
            "total_tokens": text_in + audio_in + text_out + audio_out,
            "input_tokens": text_in + audio_in,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": cached_text,
                "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }


class FakeRealtimeServer:
    """A real WebSocket server on 127.0.0.1 playing the Realtime service; knobs are plain attributes."""

    def __init__(
        self,
        *,
        valid_keys: Iterable[str] = ("sk-test",),
        vad_rms_threshold: float = 400.0,
        speech_started_delay_ms: int = 0,
        suppress_speech_started_below_ms: int = 0,
        user_transcripts: Iterable[str] = ("Hello.",),
        reply_audio: bytes | None = None,
        reply_transcripts: Iterable[str] = ("Happy to help with that.",),
        text_reply: str = "Ann Lee called about a DSCR rental loan; Cap booked a call with the loan team.",
        chunk_ms: int = 100,
        realtime_factor: float = 10.0,
        function_calls: Iterable[Event] = (),
        cancel_function_call_response: bool = False,
        fatal_on_connect: str | None = None,
        reject_connections: int = 0,
        reject_status: int = 503,
        reject_headers: dict[str, str] | None = None,
        reject_body: str | None = None,
        handshake_delay_seconds: float = 0.0,
        silent_after_audio_ms: int | None = None,
        socket_buffer_bytes: int | None = None,
        function_call_storm: Event | None = None,
        drop_after_function_call: bool = False,
        fail_responses_with: str | None = None,
        fail_responses: int | None = None,
        reject_session_update: tuple[str, str] | None = None,
        validate_own_events: bool = True,
    ) -> None:
        self.valid_keys = frozenset(valid_keys)
        self.vad_rms_threshold = (
            vad_rms_threshold  # RMS (PCM16 units) at session threshold 0.5; scales with it
        )
        self.speech_started_delay_ms = speech_started_delay_ms
        self.suppress_speech_started_below_ms = suppress_speech_started_below_ms
        self.user_transcripts = list(user_transcripts)
        self.reply_audio = tone_pcm() if reply_audio is None else reply_audio
        self.reply_transcripts = list(reply_transcripts)
        self.text_reply = text_reply  # the text of a text-only response (output_modalities ["text"])
        self.chunk_ms = chunk_ms
        self.realtime_factor = realtime_factor  # <= 0: no pacing at all
        self.function_calls = list(
            function_calls
        )  # popped one per response: {"name", "arguments"[, "call_id", "preamble": True]}
        self.cancel_function_call_response = cancel_function_call_response
        self.fatal_on_connect = fatal_on_connect
        self.reject_connections = reject_connections
        # A refused handshake: its HTTP status, extra headers (Retry-After) and body (the API's JSON error).
        self.reject_status = reject_status
        self.reject_headers = dict(reject_headers or {})
        self.reject_body = reject_body
        self.handshake_delay_seconds = handshake_delay_seconds  # every handshake waits this long (a slow TLS path)
        self.handshake_times: list[float] = []  # loop time of every handshake request, refused or not
        self.silent_after_audio_ms = silent_after_audio_ms  # the first reply goes half-dead after this much audio
        self.socket_buffer_bytes = socket_buffer_bytes  # small kernel buffers, so a stalled peer blocks sends soon
        self.function_call_storm = function_call_storm  # every response calls this tool, unless tool_choice "none"
        self.drop_after_function_call = drop_after_function_call  # abort the socket once, after such a response
        self.fail_responses_with = fail_responses_with  # an error code: every response.done is "failed"
        self.fail_responses = fail_responses  # with fail_responses_with: only this many fail, then they work
        self.reject_session_update = reject_session_update  # (param, message) of an invalid_value error
        self.validate_own_events = validate_own_events
        self.connections: list[ConnectionRecord] = []
        self.received: list[Event] = []
        self.sent: list[Event] = []
        self.schema_errors: list[str] = []  # client events the real service would reject
        self.own_schema_errors: list[str] = []  # server events of this fake that break the SDK schema
        self.internal_errors: list[str] = []
        self.truncations: list[Event] = []
        self.deleted_items: list[str] = []
        self.function_outputs: list[Event] = []
        self.created_items: list[Event] = []
        self.responses: list[Event] = []  # the `response` object of every response.done
        self.rejected_handshakes = 0
        self._user_transcripts = itertools.cycle(self.user_transcripts or [""])
        self._reply_transcripts = itertools.cycle(self.reply_transcripts or [""])
        self._sessions: list[_Session] = []
        self._server: Server | None = None
        self._change: asyncio.Future[None] | None = None

    async def __aenter__(self) -> FakeRealtimeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        # No max_size: append events may carry up to 15 MiB of base64 audio.
        # No keepalive pings of its own: a silenced service must send nothing at all.
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request, max_size=None, ping_interval=None
        )
        if self.socket_buffer_bytes:  # accepted sockets inherit the listening socket's buffer sizes
            for sock in self._server.sockets:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.socket_buffer_bytes)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer_bytes)

    async def aclose(self) -> None:
        for session in list(self._sessions):
            if session.silent:  # it reads nothing, so it would never see a close handshake complete
                session.ws.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return next(iter(self._server.sockets)).getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def session(self) -> Event:
        """The effective session config of the latest connection."""
        return self.connections[-1].session if self.connections else {}

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshake_times.append(asyncio.get_running_loop().time())
        if self.handshake_delay_seconds:
            await asyncio.sleep(self.handshake_delay_seconds)
        if self.reject_connections > 0:
            self.reject_connections -= 1
            self.rejected_handshakes += 1
            self._notify()
            status = HTTPStatus(self.reject_status)
            response = connection.respond(status, self.reject_body or f"{status.phrase}\n")
            if self.reject_body is not None and self.reject_body.startswith("{"):
                response.headers["Content-Type"] = "application/json"
            for name, value in self.reject_headers.items():
                response.headers[name] = value
            return response
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        record = ConnectionRecord(path=url.path, query=dict(parse_qsl(url.query)), headers=ws.request.headers)
        self.connections.append(record)
        session = _Session(self, ws, record)
        self._sessions.append(session)
        self._notify()
        try:
            await session.run()
        finally:
            self._sessions.remove(session)
            record.close_code = ws.close_code
            self._notify()

    # -- failure hooks ------------------------------------------------------------------------------------

    async def send_raw(self, text: str) -> None:
        """Send `text` verbatim to every open connection (garbage, unknown events, bad payloads)."""
        for session in list(self._sessions):
            with contextlib.suppress(ConnectionClosed):
                await session.ws.send(text)

    def go_silent(self) -> None:
        """Every open connection goes half-dead: nothing sent, nothing read, the TCP connection left open."""
        for session in list(self._sessions):
            session.go_silent()

    async def expire_session(self) -> None:
        """The 60-minute limit: `error` session_expired, then close 1001."""
        for session in list(self._sessions):
            await session._error("session_expired", "Your session hit the maximum duration of 60 minutes.")
            await session.ws.close(1001, "session expired")

    async def drop_connections(self, code: int = 1011, reason: str = "internal error") -> None:
        """Close every open connection with `code`; 1006 aborts the TCP connection without a close frame."""
        for session in list(self._sessions):
            if code == 1006:
                session.ws.transport.abort()
            else:
                await session.ws.close(code, reason)

    # -- assertions helpers -------------------------------------------------------------------------------

    def events_of(self, type_: str) -> list[Event]:
        """Client events of one type, across connections, in order."""
        return [e for e in self.received if e.get("type") == type_]

    def sent_of(self, type_: str) -> list[Event]:
        """Server events of one type this fake sent, across connections, in order."""
        return [e for e in self.sent if e.get("type") == type_]

    def _notify(self) -> None:
        if self._change is not None and not self._change.done():
            self._change.set_result(None)
        self._change = None

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until `predicate()` is true, re-checking whenever this server's state changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if self._change is None:
                self._change = loop.create_future()
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(asyncio.shield(self._change), remaining)
            except TimeoutError:
                if predicate():
                    return
                raise TimeoutError(f"condition not met within {timeout} s") from None
