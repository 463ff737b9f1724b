"""The conversation's decisions, sans I/O: server events and caller audio in, client events and actions out.

`Conversation` never touches a socket or a thread. The I/O shell (`realtime.engine.VoiceSession`)
feeds it caller frames and server events, then drains `events_to_send()`, `tool_calls_to_run()` and
`transcripts_ready()`. Time comes in through a clock, so tests can run a conversation without sleeping.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from realtime import protocol
from realtime.address import AddressGate
from realtime.attribution import Addressee, SpeakerTimeline
from realtime.audio import (
    FRAME_MS,
    STEREO_48K_AUDIO,
    Downsampler,
    Framer,
    Passthrough,
    SpeechOnsetDetector,
    TransportAudio,
    Upsampler,
    from_realtime,
    to_realtime,
)
from realtime.errors import FATAL_ERROR_CODES, fatal_message, redact
from realtime.metrics import SessionMetrics
from realtime.playback import PlaybackBuffer
from realtime.resend import UncommittedAudio
from realtime.transcript import TranscriptEntry

log = logging.getLogger(__name__)

BYTES_PER_MS_24K = 48  # 24 kHz mono s16le
UPLINK_MAX_BYTES = 40 * BYTES_PER_MS_24K  # append at most 40 ms per event: low latency, few events
REPLAY_LIMIT = 200  # utterances replayed into a new session; older ones are dropped
TURN_SPEAKERS_LIMIT = 50  # caller turns still waiting for their transcript (normally one or two)
# The server's copy of an item can be ~85 ms shorter than the audio we received (pipecat reports it),
# and truncating past its end is an error: never claim the last 100 ms were heard.
TRUNCATE_END_MARGIN_MS = 100
# Digital silence (nobody transmitting: Discord sends nothing and the mixer fills zeros) goes up only for this
# long beyond the longest pause that ends a turn (silence_duration_ms, or semantic_vad's 2-8 s) after the last
# sound (or a connect), so the server still hears the pause that ends a turn; then the uplink stops, and an idle
# call costs no resampling, JSON or socket writes (measured by bench/bench_idle.py). At least 1 s, so the local
# VAD's noise window is all silence too and skipping more zeros leaves it exactly as feeding them would.
UPLINK_SILENCE_TAIL_MS = 1000
# A tool answer held back while the caller talked is asked for by us if the server has not answered their
# turn this long after they stopped (e.g. the server's VAD dropped the turn).
DEFERRED_RESPONSE_SECONDS = 1.5
REPLIES_TRACKED = 20  # replies in flight whose addressee is remembered (normally one or two)


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made in a response that completed; `epoch` is the socket it came on."""

    call_id: str
    name: str
    arguments: str
    speakers: frozenset[int]
    epoch: int
    caller: int | None = None  # of the answered turn's speakers, the one heard most: whose "my phone is ..." it is


@dataclass
class _AudioItem:
    """One assistant audio item: its converter to the transport's PCM, framing, and how much audio arrived."""

    item_id: str
    response_id: str | None
    epoch: int
    to_transport: Upsampler | Passthrough = field(default_factory=Upsampler)
    framer: Framer = field(default_factory=Framer)
    received_bytes: int = 0
    transcript: list[str] = field(default_factory=list)
    interrupted: bool = False
    heard_ms: int | None = None  # set when interrupted: what the caller actually heard
    finished: bool = False  # output_audio.done seen
    transcript_done: bool = False  # no more transcript will come for it
    reported: bool = False  # transcript handed out (once it has played out, or was cut off)
    addressee: Addressee | None = None  # the turn this reply answers

    @property
    def received_ms(self) -> int:
        return self.received_bytes // BYTES_PER_MS_24K


class Conversation:
    """State of one Cap conversation across reconnects: playback, barge-in, tools, transcripts, replay."""

    def __init__(self, config: protocol.SessionConfig, tools: list[dict[str, Any]], playback: PlaybackBuffer,
                 metrics: SessionMetrics, clock: Callable[[], float],
                 transport_audio: TransportAudio = STEREO_48K_AUDIO) -> None:
        self.config = config
        self.tools = tools
        self.playback = playback
        self.metrics = metrics
        self.clock = clock
        self.fatal_error: str | None = None
        self.connected = False
        self.epoch = 0
        self._connected_at = 0.0
        self._heard = transport_audio.heard  # what feed_input gets
        self._spoken = transport_audio.spoken  # what the playback buffer holds
        self._to_realtime: Downsampler | Passthrough = to_realtime(self._heard)
        self._onset = SpeechOnsetDetector(pcm=self._heard)
        self._uplink = bytearray()
        self._uncommitted = UncommittedAudio()  # caller audio since the server's last commit, for a new session
        self._silent_frames = 0  # consecutive digital-silence frames fed
        self._silence_tail_frames = (protocol.turn_end_silence_ms(config) + UPLINK_SILENCE_TAIL_MS) // FRAME_MS
        self._outbox: list[dict[str, Any]] = []
        self._tool_calls: list[ToolCall] = []
        self._transcripts: list[TranscriptEntry] = []
        self._response_id: str | None = None
        self._response_audio_done = False  # the current response's audio has all arrived
        self._turn_unanswered = False  # a caller's turn was committed and no response has started since
        self._results_undelivered = False  # tool results kept while disconnected: ask for a reply once connected
        self._unconfirmed_outputs: dict[str, tuple[ToolCall, dict[str, Any]]] = {}  # sent, not yet seen added
        self._tool_rounds = 0  # responses in a row that only called tools, since the caller last spoke
        self._failed_reply_retried = False  # one retry of a server_error reply per caller turn
        self._create_pending = False  # response.create sent, response.created not seen yet
        self._response_wanted = False  # send response.create when the current response is done
        self._deferred_for_caller = False  # the caller is talking: the response to their turn will cover it
        self._cancelled_responses: set[str] = set()  # barged-in responses whose late deltas must not play
        self._awaiting_outputs: set[str] = set()
        self._items: dict[str, _AudioItem] = {}
        self._playing_out: dict[str, _AudioItem] = {}  # transcript complete, audio still playing: not reported
        self._caller_speaking = False
        self._speech_stopped_at: float | None = None
        self._paused_at: float | None = None
        # Who said each turn, and whom each reply answers (its tool calls and questions are for them).
        self._timeline = SpeakerTimeline(FRAME_MS)
        self._last_turn = Addressee()
        self._turns: dict[str, tuple[Addressee, bool]] = {}  # committed, transcript to come: (who, gated then)
        self._next_addressee: Addressee | None = None  # whom the next reply answers, when not the last turn
        self._reply_addressees: OrderedDict[str, Addressee] = OrderedDict()  # by response id, in flight
        self.gate = AddressGate(config.reply_mode, clock=clock)  # type: ignore[arg-type]
        self._update_count = 0  # session.update events sent on this socket
        self._gate_opened_at: float | None = None  # when a transcript opened the gate, until Cap's reply starts
        self._history: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self._announcements = 0
        self._summary_instructions: str | None = None  # asked for, waiting for the current reply to end
        self._summary_asked: str | None = None  # the summary's instructions until it is finished (asked again
        # of a new session when a drop cut it off); while set the call is closing and no other reply is asked for
        self._resend_until_transcript: str | None = None  # a gated turn whose transcript has not come yet
        self.summary: str | None = None
        self.summary_finished = False
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "session.created": self._ignore,
            "session.updated": self._ignore,
            "conversation.item.added": self._on_item_added,
            "error": self._on_error,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._on_speech_stopped,
            "input_audio_buffer.committed": self._on_committed,
            "conversation.item.input_audio_transcription.completed": self._on_caller_transcript,
            "conversation.item.input_audio_transcription.failed": self._on_caller_transcript_failed,
            "response.created": self._on_response_created,
            "response.output_audio.delta": self._on_audio_delta,
            "response.output_audio.done": self._on_audio_done,
            "response.output_audio_transcript.delta": self._on_transcript_delta,
            "response.output_audio_transcript.done": self._on_transcript_done,
            "response.done": self._on_response_done,
        }

    # ----- outputs, drained by the I/O shell -----

    def events_to_send(self) -> list[dict[str, Any]]:
        events, self._outbox = self._outbox, []
        return events

    def tool_calls_to_run(self) -> list[ToolCall]:
        calls, self._tool_calls = self._tool_calls, []
        return calls

    def transcripts_ready(self) -> list[TranscriptEntry]:
        entries, self._transcripts = self._transcripts, []
        return entries

    # ----- connection lifecycle -----

    def on_connected(self) -> None:
        """A new socket is a new session with no memory: configure it, replay what was said (and the results of
        tools the old session never saw), then ask for the reply the caller was owed when the old one died."""
        reply_cut_short = self._reply_cut_short()
        for call, output in self._unconfirmed_outputs.values():  # sent into a socket that died: maybe never read
            self._keep_result_for_next_session(call, output)
        self._unconfirmed_outputs.clear()
        self.epoch += 1
        self.connected = True
        self._connected_at = self.clock()
        self._outbox.clear()
        self._uplink.clear()
        self._silent_frames = 0  # a new session hears the tail of silence too
        self._response_id = None
        self._response_audio_done = False
        self._turn_unanswered = False
        self._create_pending = False
        self._response_wanted = False
        self._deferred_for_caller = False
        self._cancelled_responses.clear()
        self._awaiting_outputs.clear()
        self._turns.clear()
        self._reply_addressees.clear()
        self._update_count = 0
        self._caller_speaking = False
        for item in list(self._items.values()):
            if not item.reported:
                # Its remaining deltas are gone; what arrived still plays (and can be cut, then it is logged as
                # cut). The new session must know what Cap is saying: its text is replayed below.
                item.finished = item.transcript_done = True
                text = "".join(item.transcript).strip()
                if text and not item.interrupted and item.item_id in self._history:
                    self._remember(item.item_id, "assistant", text)
                self._settle(item)
        self._outbox.append(protocol.session_update(self.config, self.tools, self._session_update_id,
                                                    answer_turns=not self.gate.gated))
        for role, text in list(self._history.values())[-REPLAY_LIMIT:]:
            if text:
                self._outbox.append(protocol.replay_message(role, text))
        resent = self._uncommitted.chunks_to_resend()  # the caller's words the old session never committed
        for chunk in resent:
            self._outbox.append(protocol.input_audio_append(chunk))
        self._timeline.new_session(sum(map(len, resent)) // BYTES_PER_MS_24K)
        if reply_cut_short or self._results_undelivered:
            self._results_undelivered = False
            self._request_response()
        if self._summary_asked is not None and not self.summary_finished:
            self._summary_instructions = self._summary_asked  # the old session took the request with it
            self._send_summary_request()

    def _reply_cut_short(self) -> bool:
        """The socket died owing the caller a reply: one asked for, unanswered, or still streaming its audio."""
        return (self._create_pending or self._response_wanted or self._deferred_for_caller or self._turn_unanswered
                or (self._response_id is not None and not self._response_audio_done))

    @property
    def reply_owed(self) -> bool:
        """The server owes events now (a reply in progress, asked for, or a caller's turn unanswered): a socket
        that stays silent meanwhile is dead."""
        return self.connected and (self._response_id is not None or self._create_pending or self._turn_unanswered
                                   or self._summary_owed)

    @property
    def _summary_owed(self) -> bool:
        return self._summary_asked is not None and not self.summary_finished

    @property
    def _session_update_id(self) -> str:
        return f"cap_session_update_{self.epoch}"

    def _is_our_session_update(self, event_id: object) -> bool:
        return isinstance(event_id, str) and event_id.startswith(self._session_update_id)

    # ----- who is in the channel, and whom Cap answers -----

    def set_humans(self, count: int) -> None:
        """The number of people in the channel; with two or more (adaptive mode) Cap answers only when addressed.
        The server stops creating replies by itself then, and Cap asks for the ones the gate lets through."""
        was_gated = self.gate.gated
        self.gate.humans = count
        if self.gate.gated != was_gated and self.connected and not self.config.listen_only:
            self._update_count += 1
            event_id = f"{self._session_update_id}_{self._update_count}"
            self._outbox.append(protocol.turn_detection_update(self.config, event_id,
                                                               answer_turns=not self.gate.gated))
            log.info("%s: Cap now %s", "several people here" if self.gate.gated else "one caller",
                     "answers only when addressed" if self.gate.gated else "answers every turn")

    def ask(self, user_id: int) -> None:
        """`/cap ask`: answer this user's next turn even when Cap was not named."""
        self.gate.ask(user_id)

    @property
    def _gated(self) -> bool:
        """Cap decides which turns to answer (the server answers none by itself); never in listen mode."""
        return self.gate.gated and not self.config.listen_only

    def _may_interrupt(self, speakers: frozenset[int]) -> bool:
        """Several people here: only the person Cap is answering cuts its reply short, not a bystander's
        "mm-hm" to them (the server does not interrupt while gated; Cap decides)."""
        if not self._gated:
            return True
        playing = [item.addressee for item in self._audible_items() if item.addressee is not None]
        return not playing or not playing[0].people or bool(playing[0].people & speakers)

    @property
    def uplinked_ms(self) -> int:
        """Caller audio this conversation sent (or kept for a new session), in ms (benchmarks count frames by it)."""
        return self._timeline.now_ms

    def audio_dropped(self, ms: int) -> None:
        """The I/O shell shed caller audio this conversation had sent (a stalled socket)."""
        self._timeline.dropped(ms)

    def on_disconnected(self) -> None:
        self.connected = False
        self._uplink.clear()

    def recycle_due(self) -> bool:
        """True when the session is old and the conversation is at a turn boundary (nobody talking)."""
        if not self.connected or self.clock() - self._connected_at < self.config.recycle_after_seconds:
            return False
        return self.idle

    @property
    def idle(self) -> bool:
        return (self._response_id is None and not self._create_pending and not self._caller_speaking
                and not self._awaiting_outputs and not self._response_wanted and not self._deferred_for_caller
                and not self.playback.audible and not self._summary_owed)

    # ----- caller audio -----

    def feed_input(self, frame: bytes, speakers: Iterable[int] = ()) -> None:
        """One 20 ms frame of caller audio in the transport's PCM: local barge-in check, then uplink."""
        now = self.clock()
        speakers = frozenset(speakers)
        self._silent_frames = self._silent_frames + 1 if frame == self._heard.silence else 0
        if self._silent_frames > self._silence_tail_frames:
            self._timeline.heard(speakers)
            self.tick()  # long digital silence: nothing for the local VAD or the server to hear
            return
        if not self.playback.audible:
            self._onset.note_level(frame)  # nothing to barge in on: only the noise floor is kept
        elif self._onset.update(frame) and not self.playback.paused and self._may_interrupt(speakers):
            # Pause at once; the server's speech_started may come hundreds of ms later.
            self.playback.pause()
            self._paused_at = now
        self.tick()
        self._timeline.frame(speakers)
        self._uplink += self._to_realtime.process(frame)
        while self._uplink:
            chunk = bytes(self._uplink[:UPLINK_MAX_BYTES])
            del self._uplink[:UPLINK_MAX_BYTES]
            self._uncommitted.add(chunk)
            if self.connected:  # while reconnecting it is only kept, and sent to the new session
                self._outbox.append(protocol.input_audio_append(chunk))


    def tick(self) -> None:
        """Timers: resume a reply the caller only coughed over; speak a deferred tool answer if no turn came;
        report Cap's words once they have played out."""
        now = self.clock()
        for item in list(self._playing_out.values()):
            self._settle(item)
        if (self._deferred_for_caller and not self._caller_speaking and self._speech_stopped_at is not None
                and now - self._speech_stopped_at >= DEFERRED_RESPONSE_SECONDS):
            self._deferred_for_caller = False
            self._request_response()
        if self._paused_at is not None and now - self._paused_at >= self.config.barge_in_confirm_seconds:
            self._paused_at = None
            if self.playback.paused:
                self.playback.resume()
                self.metrics.paused_then_resumed += 1

    # ----- tool results -----

    def on_tool_result(self, call: ToolCall, output: dict[str, Any]) -> None:
        # The reply to a tool's result goes on answering the person the tool call was for.
        self._next_addressee = Addressee(call.speakers, call.caller)
        if not self.connected:
            # Anything sent now would be queued for a dead socket and lost: keep it for the next session.
            self._awaiting_outputs.discard(call.call_id)
            self._keep_result_for_next_session(call, output)
            return
        if call.epoch != self.epoch or call.call_id not in self._awaiting_outputs:
            # The call's session is gone, but its side effects happened: tell the new session as a note.
            note = self._keep_result_for_next_session(call, output)
            self._results_undelivered = False
            self._outbox.append(protocol.replay_message("system", note))
            self._request_response()
            return
        self._awaiting_outputs.discard(call.call_id)
        self._outbox.append(protocol.function_call_output(call.call_id, output))
        self._unconfirmed_outputs[call.call_id] = (call, output)
        if not self._awaiting_outputs:
            self._request_response()

    def _keep_result_for_next_session(self, call: ToolCall, output: dict[str, Any]) -> str:
        """A result the server may never have seen becomes a note in the replayed history (once per call), and
        the next session is asked for a reply after its replay."""
        note = f"Result of the {call.name} tool call made before the connection was renewed: " + \
            json.dumps(output, ensure_ascii=False, default=str)
        self._remember(f"note_{call.call_id}", "system", note)
        self._results_undelivered = True
        log.info("keeping the %s tool's result for the next Realtime session", call.name)
        return note

    def announce(self, note: str) -> None:
        """A system note the model acts on at once (e.g. a disclosure to say), remembered across reconnects."""
        self._announcements += 1
        self._remember(f"announcement_{self._announcements}", "system", note)
        if self.connected:
            self._outbox.append(protocol.replay_message("system", note))
            # What Cap says for the note answers nobody's turn: a question Cap had asked stays open.
            self._next_addressee = Addressee(note=True)
            self._request_response()

    def request_summary(self, instructions: str) -> None:
        """The call is over: ask for a text-only, out-of-band reply (`summary`, `summary_finished` when it is
        done). A reply still in progress is cancelled first; no other reply is asked for after this."""
        self.summary, self.summary_finished = None, False
        self._summary_instructions = self._summary_asked = instructions
        self._response_wanted = self._deferred_for_caller = False
        if self._response_id is not None:
            self._outbox.append(protocol.response_cancel())
        elif not self._create_pending:
            self._send_summary_request()

    def _send_summary_request(self) -> None:
        if self._summary_instructions is not None:
            self._outbox.append(protocol.text_response_create(self._summary_instructions, SUMMARY_METADATA))
            self._summary_instructions = None

    def _request_response(self) -> None:
        """Ask for a reply once nothing else is in the way (one response at a time; none over the caller)."""
        if self._summary_asked is not None:
            return  # the call is over: a tool result or a note still goes up, but nobody would hear a reply
        if not self.connected:
            self._results_undelivered = True  # on_connected asks the next session, after its replay
        elif self._response_id is not None or self._create_pending:
            self._response_wanted = True  # ask again when the current response is done
        elif self._caller_speaking:
            self._deferred_for_caller = True  # server VAD answers their turn, with the tool output in view
        else:
            if self._tool_rounds >= self.config.max_tool_rounds:
                log.warning("the model called tools %d times in a row without a word to the caller; "
                            "its next reply may not call tools", self._tool_rounds)
                self.metrics.tool_loops_stopped += 1
                self._outbox.append(protocol.response_create(tool_choice="none"))
            else:
                self._outbox.append(protocol.response_create())
            self._create_pending = True
            self._response_wanted = self._deferred_for_caller = False

    # ----- server events -----

    def handle_event(self, event: dict[str, Any]) -> None:
        handler = self._handlers.get(event.get("type", ""))
        if handler is None:
            log.debug("ignoring Realtime event %s", event.get("type"))
            return
        try:
            handler(event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("skipping a malformed %s event: %s", event.get("type"), exc)

    def _ignore(self, event: dict[str, Any]) -> None:
        pass

    def _on_error(self, event: dict[str, Any]) -> None:
        error = event.get("error") or {}
        code = error.get("code")
        if code in FATAL_ERROR_CODES:
            self.fatal_error = fatal_message(code, error.get("message"))
        elif self._is_our_session_update(error.get("event_id")) and error.get("type") == "invalid_request_error":
            # Without its session Cap would run on the service's defaults: no persona, tools or transcripts.
            where = f" ({error['param']})" if error.get("param") else ""
            self.fatal_error = redact(f"the Realtime API rejected Cap's session settings{where}: "
                                      f"{error.get('message') or code}")
        elif code == "response_cancel_not_active":
            log.debug("response.cancel raced the server's own cancel")
        elif code == "conversation_already_has_active_response":
            # Our response.create raced one the server started: ask again when that one is done.
            self._create_pending = False
            self._response_wanted = True
        elif code == "session_expired":
            log.info("Realtime session expired; a new one will replay the conversation")
        else:
            log.warning("Realtime error %s: %s", code, redact(str(error.get("message"))))

    def _on_item_added(self, event: dict[str, Any]) -> None:
        item = event["item"]
        if item.get("type") == "function_call_output":  # the session has it: a later drop cannot lose it
            self._unconfirmed_outputs.pop(item.get("call_id"), None)

    def _on_speech_started(self, event: dict[str, Any]) -> None:
        self._caller_speaking = True
        self._tool_rounds = 0
        start_ms = event.get("audio_start_ms")
        if isinstance(event.get("item_id"), str) and isinstance(start_ms, int):
            self._timeline.turn_started(event["item_id"], start_ms)
            if self._gated and not self._may_interrupt(self._timeline.speakers_since(start_ms)):
                log.debug("someone else spoke while Cap answered another person: Cap goes on")
                return
        if self._paused_at is not None:
            self.metrics.barge_in_latency_ms.append((self.clock() - self._paused_at) * 1000)
        self._paused_at = None
        if self._response_id is not None:
            self._cancelled_responses.add(self._response_id)  # the server cancels it; late deltas stay silent
        heard_items = self._audible_items()
        if not heard_items:
            self.playback.resume()
            return
        # The caller really interrupted: drop the rest, tell the server what was actually heard of each
        # item (a preamble may be playing while the next item already streams in).
        self.metrics.barge_ins += 1
        played = {item.item_id: self.playback.played_ms(item.item_id) for item in heard_items}
        self.playback.clear()
        if self._response_id is not None:
            self._outbox.append(protocol.response_cancel())
        for item in heard_items:
            item.interrupted = True
            item.heard_ms = min(played[item.item_id], max(0, item.received_ms - TRUNCATE_END_MARGIN_MS))
            if item.epoch == self.epoch:  # an item of an earlier socket does not exist in this session
                if item.heard_ms > 0:
                    self._outbox.append(protocol.item_truncate(item.item_id, item.heard_ms))
                else:
                    self._outbox.append(protocol.item_delete(item.item_id))
            self._settle(item)

    def _audible_items(self) -> list[_AudioItem]:
        """Assistant items the caller hears or is about to hear: queued frames, or still streaming in."""
        return [item for item in self._items.values() if not item.interrupted and (
            self.playback.queued_ms(item.item_id) > 0
            or (not item.finished and item.response_id is not None and item.response_id == self._response_id))]

    def _on_speech_stopped(self, event: dict[str, Any]) -> None:
        self._caller_speaking = False
        self._speech_stopped_at = self.clock()
        if isinstance(event.get("item_id"), str) and isinstance(event.get("audio_end_ms"), int):
            self._timeline.turn_stopped(event["item_id"], event["audio_end_ms"])

    def _on_committed(self, event: dict[str, Any]) -> None:
        item_id = event["item_id"]
        self.metrics.turns += 1
        self._last_turn = self._timeline.turn_committed(item_id)
        # Whether Cap decides to answer this turn is fixed now: the server already answers it when not gated,
        # also if a second person joins before its transcript comes.
        self._turns[item_id] = (self._last_turn, self._gated)
        while len(self._turns) > TURN_SPEAKERS_LIMIT:  # a transcription result that never came
            del self._turns[next(iter(self._turns))]
        if not self._gated:
            self._next_addressee = self._last_turn  # the server's reply to this turn is for its speaker
        # The server owes a reply to a turn it answers itself; a gated turn owes only its transcript (which may
        # take longer than the watchdog's silence), and Cap decides when it comes.
        self._turn_unanswered = not self._gated
        if self._gated:
            self._resend_until_transcript = item_id  # a drop before its transcript: the new session hears it again
        else:
            self._uncommitted.clear()  # the server holds this turn's audio now
        self._tool_rounds = 0
        self._failed_reply_retried = False
        self._remember(item_id, "user", None)

    def _on_caller_transcript(self, event: dict[str, Any]) -> None:
        item_id = event["item_id"]
        self.metrics.add_transcription_usage(event.get("usage") or {}, self.config.prices_per_mtok)
        text = (event.get("transcript") or "").strip()
        turn, gated = self._turns.pop(item_id, (self._last_turn, self._gated))
        self._transcribed(item_id)
        if not text:
            return
        self._remember(item_id, "user", text)
        self._transcripts.append(TranscriptEntry(role="caller", text=text, item_id=item_id, speakers=turn.speakers,
                                                 speaker=turn.caller))
        if gated:
            self._open_gate(item_id, text, turn)

    def _transcribed(self, item_id: str) -> None:
        """A gated turn's transcript came (or failed): its audio need not be resent to a new session."""
        if self._resend_until_transcript == item_id:
            self._resend_until_transcript = None
            if not self._caller_speaking:
                self._uncommitted.clear()

    def _open_gate(self, item_id: str, text: str, turn: Addressee) -> None:
        """Several people here: Cap answers this turn only when it was addressed (the server created no reply)."""
        reason = self.gate.reason(text, turn.people)
        if reason is None:
            self.metrics.unaddressed_turns += 1
            log.debug("turn %s was not addressed to Cap: listening", item_id)
            return
        self.metrics.addressed_turns += 1
        self._gate_opened_at = self.clock()
        self._next_addressee = turn  # its tool calls and questions are theirs, whoever speaks meanwhile
        self._request_response()

    def _on_caller_transcript_failed(self, event: dict[str, Any]) -> None:
        self._turns.pop(event["item_id"], None)  # gated: Cap cannot tell whether it was addressed, so stays quiet
        self._transcribed(event["item_id"])
        log.warning("the caller's words could not be transcribed (item %s)", event["item_id"])

    def _on_response_created(self, event: dict[str, Any]) -> None:
        if _is_summary(event["response"]):
            return  # out of band: no audio, nothing to barge into
        self._response_id = event["response"]["id"]
        self._reply_addressees[self._response_id] = self._next_addressee or self._last_turn
        self._next_addressee = None
        while len(self._reply_addressees) > REPLIES_TRACKED:
            self._reply_addressees.popitem(last=False)
        self._response_audio_done = False
        self._turn_unanswered = False
        # The service handles events in order: a response started after our outputs went up has them, also
        # where it never said conversation.item.added for them.
        self._unconfirmed_outputs.clear()
        self._create_pending = False
        self._deferred_for_caller = False  # the response to the caller's turn sees every output sent
        self.metrics.responses += 1
        self._prune_items()

    def _on_audio_delta(self, event: dict[str, Any]) -> None:
        item_id = event["item_id"]
        item = self._items.get(item_id)
        if item is None:
            response_id = event.get("response_id")
            item = self._items[item_id] = _AudioItem(item_id, response_id, self.epoch, from_realtime(self._spoken),
                                                     Framer(self._spoken.frame_bytes))
            item.addressee = self._reply_addressees.get(response_id or "")
            self._remember(item_id, "assistant", None)
            if response_id in self._cancelled_responses:
                # A new item of a reply the caller already cut: none of it will play, so none stays.
                item.interrupted, item.heard_ms = True, 0
                self._outbox.append(protocol.item_delete(item_id))
            if self._speech_stopped_at is not None:
                self.metrics.reply_latency_ms.append((self.clock() - self._speech_stopped_at) * 1000)
                self._speech_stopped_at = None
            if self._gate_opened_at is not None:
                # A gated answer waits for the caller's transcript: from its arrival to Cap's first audio.
                self.metrics.gated_reply_ms.append((self.clock() - self._gate_opened_at) * 1000)
                self._gate_opened_at = None
        if item.interrupted:
            return
        try:
            pcm = base64.b64decode(event["delta"], validate=True)
        except (binascii.Error, ValueError):
            log.warning("skipping undecodable audio in item %s", item_id)
            return
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        item.received_bytes += len(pcm)
        for frame in item.framer.push(item.to_transport.process(pcm)):
            self.playback.push(item_id, frame)

    def _on_audio_done(self, event: dict[str, Any]) -> None:
        item = self._items.get(event["item_id"])
        if item is not None and item.response_id == self._response_id:
            self._response_audio_done = True
        if item is None or item.interrupted or item.finished:
            return
        item.finished = True
        frames = item.framer.push(item.to_transport.flush())
        tail = item.framer.flush()
        for frame in [*frames, *([tail] if tail else [])]:
            self.playback.push(item.item_id, frame)

    def _on_transcript_delta(self, event: dict[str, Any]) -> None:
        item = self._items.get(event["item_id"])
        if item is not None and not item.reported:
            item.transcript.append(event.get("delta") or "")

    def _on_transcript_done(self, event: dict[str, Any]) -> None:
        item = self._items.get(event["item_id"])
        if item is None or item.reported:
            return
        item.transcript = [event.get("transcript") or "".join(item.transcript)]
        item.transcript_done = True
        self._settle(item)

    def _settle(self, item: _AudioItem) -> None:
        """Report Cap's words once the caller has heard all of them, or was cut off (then the heard share is
        known). The service streams audio and transcript faster than real time, so a reply whose transcript is
        complete may still be cut by a barge-in seconds later: reporting it then would log and replay words
        the caller never heard."""
        if item.reported:
            return
        if item.interrupted or (item.finished and self.playback.queued_ms(item.item_id) == 0):
            self._playing_out.pop(item.item_id, None)
            self._report_cap(item)
        elif item.transcript_done:
            self._playing_out[item.item_id] = item

    def finish(self) -> None:
        """The session is ending: report everything Cap said, cutting what had not played out at what had."""
        for item in list(self._items.values()):
            if not item.reported and not item.interrupted and (
                    not item.finished or self.playback.queued_ms(item.item_id) > 0):
                item.interrupted = True
                item.heard_ms = min(self.playback.played_ms(item.item_id), item.received_ms)
            self._settle(item)

    def _report_cap(self, item: _AudioItem) -> None:
        if item.reported:
            return
        item.reported = True
        text = "".join(item.transcript).strip()
        if not text:
            return
        self._keep_heard_share(item, text)
        if item.heard_ms == 0:
            return  # the caller heard none of it: nothing was said
        self._transcripts.append(TranscriptEntry(role="cap", text=text, item_id=item.item_id,
                                                 interrupted=item.interrupted))
        if not item.interrupted:  # a question Cap finished asking is for whoever it answered: no name needed
            addressee = item.addressee or self._last_turn
            if not addressee.note:
                self.gate.cap_said(text, addressee.people)

    def _keep_heard_share(self, item: _AudioItem, text: str) -> None:
        """What a later session is told Cap said: no more than the caller heard."""
        if item.heard_ms == 0:
            self._history.pop(item.item_id, None)  # deleted from the conversation: the caller heard none of it
        elif item.item_id in self._history:
            # After a truncation the service keeps only what was heard; replay no more than that share.
            share = 1.0 if item.heard_ms is None or not item.received_ms else item.heard_ms / item.received_ms
            heard_text = text if share >= 1.0 else text[: int(len(text) * share)].rstrip() + "…"
            self._remember(item.item_id, "assistant", heard_text)

    def _on_response_done(self, event: dict[str, Any]) -> None:
        response = event.get("response") or {}
        if _is_summary(response):
            self.metrics.add_usage(response.get("usage") or {}, self.config.prices_per_mtok)
            self.summary = _output_text(response) if response.get("status") == "completed" else None
            self.summary_finished = True
            return
        if response.get("id") in (None, self._response_id):
            self._response_id = None
        self._cancelled_responses.discard(response.get("id"))
        addressee = self._reply_addressees.pop(response.get("id") or "", None) or self._last_turn
        self._gate_opened_at = None  # a gated answer without audio (tools only, cancelled) is not a latency sample
        self.metrics.add_usage(response.get("usage") or {}, self.config.prices_per_mtok)
        for item in self._items.values():
            if item.response_id == response.get("id"):
                item.finished = item.transcript_done = True
                self._settle(item)
        status = response.get("status")
        if status == "completed":
            self._failed_reply_retried = False
            outputs = response.get("output") or []
            if any(o.get("type") == "function_call" for o in outputs) and not any(
                    o.get("type") == "message" for o in outputs):
                self._tool_rounds += 1  # the caller heard nothing from this one
            # Only a completed response's function calls run: cancelled ones may have side effects.
            for output in outputs:
                if output.get("type") != "function_call":
                    continue
                if not output.get("call_id") or not output.get("name"):
                    log.warning("skipping a function call without call_id or name")
                    continue
                self._awaiting_outputs.add(output["call_id"])
                self.metrics.tool_calls += 1
                self._tool_calls.append(ToolCall(output["call_id"], output["name"],
                                                 output.get("arguments") or "{}", addressee.speakers,
                                                 self.epoch, addressee.caller))
        elif status in ("failed", "incomplete"):
            self._on_response_not_completed(status, response.get("status_details") or {})
        if self._response_wanted and not self._awaiting_outputs:
            self._request_response()
        if self._response_id is None and not self._create_pending:
            self._send_summary_request()

    def _on_response_not_completed(self, status: str, details: dict[str, Any]) -> None:
        """A failed reply carries its error here, not in an `error` event: out of quota, for one, looks like
        this on a session that connected fine. Fatal codes end the session; the rest are logged."""
        self.metrics.failed_responses += 1
        if status == "incomplete":
            log.warning("Cap's reply was cut short by the service (%s)", details.get("reason") or "no reason given")
            return
        error = details.get("error") or {}
        code = error.get("code") or error.get("type")
        if code in FATAL_ERROR_CODES:
            self.fatal_error = fatal_message(code, error.get("message"))
            return
        log.warning("Cap's reply failed (%s): %s", code or "no code", redact(str(error.get("message"))))
        if code == "server_error" and not self._failed_reply_retried and not self._caller_speaking:
            # A passing fault on the service's side: ask once more, or the caller's turn stays unanswered.
            # Not while the caller talks (their turn brings a reply), and only once (not in a loop).
            self._failed_reply_retried = True
            self.metrics.retried_responses += 1
            log.info("asking once more for the reply that failed")
            self._request_response()

    # ----- bookkeeping -----

    def _remember(self, item_id: str, role: str, text: str | None) -> None:
        self._history[item_id] = (role, text)
        while len(self._history) > REPLAY_LIMIT:
            self._history.popitem(last=False)

    def _prune_items(self) -> None:
        """Forget assistant items that are fully played, so memory stays flat over hours."""
        for item_id in [i for i, item in self._items.items()
                        if item.reported and self.playback.queued_ms(i) == 0]:
            del self._items[item_id]
            self.playback.forget(item_id)


SUMMARY_METADATA = {"cap": "summary"}


def _is_summary(response: dict[str, Any]) -> bool:
    return (response.get("metadata") or {}).get("cap") == SUMMARY_METADATA["cap"]


def _output_text(response: dict[str, Any]) -> str:
    """The text parts of a text-only response's output messages."""
    return "".join(
        part.get("text") or ""
        for output in response.get("output") or []
        if output.get("type") == "message"
        for part in output.get("content") or []
        if part.get("type") == "output_text"
    ).strip()
