"""Hearing callers: raw UDP voice packets in, one decoded 20 ms PCM frame per speaker per tick out.

Two threads meet here. discord.py's socket reader thread calls `on_packet` for every datagram; it does
the cheap, order-independent work (RTP parse, transport decrypt, DAVE) and appends the Opus frame to the
speaker's bounded inbox. The event loop calls `on_ws_message` (the voice WebSocket hook: who owns which
SSRC) and, every 20 ms, `pull_frames`, which moves inboxes into the jitter buffers and decodes. Decoding
on the tick keeps the socket thread light and keeps each decoder on one thread.
Rule for shared state: only the event loop adds or removes speakers and SSRC mappings; the socket thread
only reads those dicts and appends to inboxes (deque appends and pops are atomic in CPython). Packets of
an SSRC whose owner is not announced yet are held under `_held_lock` and handed over the moment SPEAKING
maps the SSRC (on the event loop), so a short answer that ends before its SPEAKING is still heard.
Every datagram ends in exactly one of PACKET_OUTCOMES (`stats()` adds up to `packets`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from bot.voice.crypto import DecryptFailure, TransportDecryptor, UnsupportedModeError
from bot.voice.dave import DaveDecryptor, DaveFailure, is_survivable
from bot.voice.jitter import MAX_DELAY, RESTART_DISTANCE, JitterBuffer, Push, SpeakerDecoder
from bot.voice.rtp import OPUS_PAYLOAD_TYPE, Reject, parse_header, sequence_delta
from realtime.audio import mix_frames

log = logging.getLogger(__name__)

INBOX_PACKETS: Final = 100  # 2 s per speaker between socket thread and tick; beyond it the oldest go
PENDING_PACKETS: Final = 50  # 1 s kept per SSRC whose owner is not announced yet (DAVE needs the user)
PENDING_SSRCS: Final = 16
HELD_MAX_AGE_TICKS: Final = PENDING_PACKETS  # held audio older than this is stale when SPEAKING comes
DEPARTED_SECONDS: Final = 5.0  # a departed user's packets still in flight are dropped for this long
DEPARTED_PRUNE_TICKS: Final = 50  # expired departed SSRCs are forgotten once a second
LOG_INTERVAL_SECONDS: Final = 30.0

# Where each datagram ends up: `stats()` counts every one in exactly one of these.
PACKET_OUTCOMES: Final = (
    *(reject.value for reject in Reject),
    "video",
    "other_payload_type",
    "own",
    "bot",
    "no_transport_key",
    "unsupported_mode",
    *(failure.value for failure in DecryptFailure),
    *(failure.value for failure in DaveFailure),
    "departed",  # sent by a user after CLIENT_DISCONNECT, still in flight
    "held_overflow",  # more than PENDING_PACKETS held before the owner was known
    "held_stale",  # held longer than HELD_MAX_AGE_TICKS when the owner was announced
    "pending_evicted",  # held for an SSRC pushed out by PENDING_SSRCS newer unknown SSRCs
    "held_dropped",  # held when a new voice session began
    "inbox_overflow",
    Push.DUPLICATE.value,
    Push.LATE.value,
    "jitter_trimmed",
    "decoded",  # played
    "shed",  # a quiet packet dropped to shrink the delay
    "decode_errors",
    "unplayed",  # still queued when its speaker left
    "in_flight",  # held, in an inbox or in a jitter buffer right now
    "internal_error",
)

# Voice gateway opcodes the receiver listens to (discord.py's DiscordVoiceWebSocket names most of them).
OP_READY: Final = 2
OP_SESSION_DESCRIPTION: Final = 4
OP_SPEAKING: Final = 5
OP_RESUMED: Final = 9
OP_CLIENTS_CONNECT: Final = 11
OP_VIDEO: Final = 12  # {user_id, audio_ssrc, video_ssrc, rtx_ssrc, streams: [{ssrc, rtx_ssrc, ...}]}
OP_CLIENT_DISCONNECT: Final = 13
OP_DAVE_EXECUTE_TRANSITION: Final = 22


class TransportState(Protocol):
    """What the receiver reads from discord.py's VoiceConnectionState, fresh for every packet."""

    mode: Any
    secret_key: Any
    dave_session: Any
    ssrc: Any


class RateLimitedLog:
    """Logs a message per key at most once per interval, with the number of repeats swallowed."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._swallowed: Counter[str] = Counter()

    def __call__(self, level: int, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._swallowed[key] += 1
            return
        self._last[key] = now
        repeats = self._swallowed.pop(key, 0)
        suffix = f" (and {repeats} more since)" if repeats else ""
        self._logger.log(level, message + suffix, *args, exc_info=exc_info)


@dataclass
class _Speaker:
    user_id: int
    ignored: bool  # another bot, with IGNORE_BOTS on
    decoder: SpeakerDecoder | None
    # (sequence, RTP timestamp, Opus frame, arrival tick)
    inbox: deque[tuple[int, int, bytes, int]] = field(default_factory=lambda: deque(maxlen=INBOX_PACKETS))
    last_sequence: int | None = None  # socket thread: tells this stream's stragglers from a new owner's


class VoiceReceiver:
    """SSRC bookkeeping plus the per-packet pipeline rtp -> transport decrypt -> DAVE -> speaker inbox."""

    def __init__(
        self,
        transport: TransportState,
        *,
        is_bot: Callable[[int], bool] = lambda _user_id: False,
        ignore_bots: bool = True,
        max_delay: int = MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._is_bot = is_bot
        self._ignore_bots = ignore_bots
        self._max_delay = max_delay
        self._clock = clock
        self._dave = DaveDecryptor(lambda: self._transport.dave_session)
        self._cipher: TransportDecryptor | None = None
        self._cipher_key: object = None
        self._cipher_mode: object = None
        self._speakers: dict[int, _Speaker] = {}  # by SSRC; loop thread writes, socket thread reads
        self._video_ssrcs: set[int] = set()  # read per packet (socket thread)
        self._video_by_user: dict[int, set[int]] = {}  # so they go when the user leaves
        self._pending: dict[int, deque[tuple[int, int, bytes, int]]] = {}  # under _held_lock
        self._held_lock = threading.Lock()
        # SSRC -> (until when, the departed stream's last sequence); loop thread writes, socket thread reads
        self._departed: dict[int, tuple[float, int | None]] = {}
        self._ticks = 0  # 20 ms ticks so far (loop writes, socket thread reads): packets' arrival times
        self.connected_users: set[int] = set()
        self._counts: Counter[str] = Counter()  # socket thread
        self._tick_counts: Counter[str] = Counter()  # event loop
        self._retired: Counter[str] = Counter()  # decoder stats of speakers that left
        self._log = RateLimitedLog(log, clock=clock)

    # ---- event loop: the voice WebSocket hook ------------------------------------------------------------

    def on_ws_message(self, msg: Mapping[str, Any]) -> None:
        """Track SSRC owners from one voice gateway message; unknown or malformed messages are ignored."""
        try:
            op = msg.get("op")
            data = msg.get("d") or {}
            handler = self._ws_handlers.get(op)
            if handler is not None:
                handler(self, data)
        except (TypeError, ValueError, AttributeError, KeyError):
            log.warning("ignored a malformed voice gateway message (op %s)", msg.get("op"))

    def _on_ready(self, _data: Mapping[str, Any]) -> None:
        # A new voice session (first connect, reconnect, new voice server): SSRCs are reassigned.
        self.reset()

    def _on_speaking(self, data: Mapping[str, Any]) -> None:
        if "user_id" in data and "ssrc" in data:
            self.map_ssrc(int(data["ssrc"]), int(data["user_id"]))

    def _on_clients_connect(self, data: Mapping[str, Any]) -> None:
        self.connected_users.update(int(user_id) for user_id in data.get("user_ids", ()))

    def _on_video(self, data: Mapping[str, Any]) -> None:
        user_id = int(data["user_id"])
        audio_ssrc = int(data.get("audio_ssrc") or 0)
        if audio_ssrc:
            self.map_ssrc(audio_ssrc, user_id)
        video = [data.get("video_ssrc"), data.get("rtx_ssrc")]
        for stream in data.get("streams") or ():
            video += [stream.get("ssrc"), stream.get("rtx_ssrc")]
        ssrcs = {int(ssrc) for ssrc in video if ssrc}
        self._video_by_user[user_id] = ssrcs
        self._video_ssrcs = set().union(*self._video_by_user.values())

    def _on_client_disconnect(self, data: Mapping[str, Any]) -> None:
        self.forget_user(int(data["user_id"]))

    def _on_dave_transition_executed(self, _data: Mapping[str, Any]) -> None:
        self._dave.transition_executed(int(getattr(self._transport, "dave_protocol_version", 0) or 0))

    _ws_handlers: Final[dict[Any, Callable[[VoiceReceiver, Mapping[str, Any]], None]]] = {
        OP_READY: _on_ready,
        OP_SPEAKING: _on_speaking,
        OP_CLIENTS_CONNECT: _on_clients_connect,
        OP_VIDEO: _on_video,
        OP_CLIENT_DISCONNECT: _on_client_disconnect,
        OP_DAVE_EXECUTE_TRANSITION: _on_dave_transition_executed,
    }

    def map_ssrc(self, ssrc: int, user_id: int) -> None:
        """Record that `ssrc` carries `user_id`'s microphone (from op 5 SPEAKING or op 12)."""
        self.connected_users.add(user_id)
        current = self._speakers.get(ssrc)
        if current is not None and current.user_id == user_id:
            return
        for other_ssrc, speaker in list(self._speakers.items()):
            if speaker.user_id == user_id and other_ssrc != ssrc:  # the user reconnected with a new SSRC
                self._retire(other_ssrc)
        if current is not None:
            self._retire(ssrc)
        self._departed.pop(ssrc, None)
        ignored = self._ignore_bots and self._safe_is_bot(user_id)
        speaker = _Speaker(user_id, ignored, None if ignored else SpeakerDecoder(self._new_jitter()))
        self._speakers[ssrc] = speaker
        self._flush_held(ssrc, speaker)

    def forget_user(self, user_id: int) -> None:
        """A user left the channel: drop their SSRCs, buffers and decoder, and their packets still in flight."""
        self.connected_users.discard(user_id)
        if self._video_by_user.pop(user_id, None) is not None:
            self._video_ssrcs = set().union(*self._video_by_user.values())
        until = self._clock() + DEPARTED_SECONDS
        for ssrc, speaker in list(self._speakers.items()):
            if speaker.user_id == user_id:
                self._departed[ssrc] = (until, speaker.last_sequence)
                self._retire(ssrc)

    def reset(self) -> None:
        """Forget every SSRC (a new voice session); counters are kept."""
        for ssrc in list(self._speakers):
            self._retire(ssrc)
        self._video_ssrcs = set()
        self._video_by_user = {}
        with self._held_lock:
            self._tick_counts["held_dropped"] += sum(len(held) for held in self._pending.values())
            self._pending = {}
        self._departed = {}
        self.connected_users = set()

    def _retire(self, ssrc: int) -> None:
        speaker = self._speakers.pop(ssrc, None)
        if speaker is not None and speaker.decoder is not None:
            self._retired.update(speaker.decoder.stats)
            jitter = speaker.decoder.jitter
            self._retired["jitter_trimmed"] += jitter.trimmed
            self._retired["jitter_lost"] += jitter.lost
            self._retired["jitter_grown"] += jitter.grown
            self._retired["unplayed"] += len(jitter) + len(speaker.inbox)
            speaker.inbox.clear()

    def _new_jitter(self) -> JitterBuffer:
        jitter = JitterBuffer(max_delay=self._max_delay)
        jitter.now = self._ticks  # arrival ticks of held packets are on the receiver's clock
        return jitter

    def _flush_held(self, ssrc: int, speaker: _Speaker) -> None:
        """Hand the packets held for `ssrc` to its newly announced owner now, not when its next packet comes.

        Runs on the event loop, so DAVE opens these frames here rather than on the socket thread.
        """
        with self._held_lock:
            held = self._pending.pop(ssrc, None)
        if held:
            self._hand_over(speaker, held, self._tick_counts)

    def _hand_over(
        self, speaker: _Speaker, held: deque[tuple[int, int, bytes, int]], counts: Counter[str]
    ) -> None:
        """Deliver packets held before `speaker` was announced; either thread (whichever popped them first)."""
        for sequence, timestamp, frame, arrived in held:
            if speaker.ignored:
                counts["bot"] += 1
            elif self._ticks - arrived > HELD_MAX_AGE_TICKS:
                counts["held_stale"] += 1
            else:
                self._deliver(speaker, sequence, timestamp, frame, arrived, counts)
        if speaker.last_sequence is None:  # a straggler check after they leave needs their stream's sequence
            speaker.last_sequence = held[-1][0]

    def _safe_is_bot(self, user_id: int) -> bool:
        try:
            return bool(self._is_bot(user_id))
        except Exception:
            log.debug("is_bot(%s) failed; treating the user as human", user_id, exc_info=True)
            return False

    # ---- socket reader thread ------------------------------------------------------------------------------

    def on_packet(self, packet: bytes) -> None:
        """Handle one UDP datagram (called on discord.py's socket reader thread). Never raises."""
        try:
            self._on_packet(packet)
        except BaseException as exc:  # a bug, or a davey panic (a BaseException), must not kill the reader thread
            if not is_survivable(exc):
                raise
            self._counts["internal_error"] += 1
            self._log(logging.ERROR, "internal", "voice packet handling failed", exc_info=True)

    def _on_packet(self, packet: bytes) -> None:
        counts = self._counts
        counts["packets"] += 1
        header = parse_header(packet)
        if isinstance(header, Reject):
            counts[header.value] += 1
            return
        ssrc = header.ssrc
        if ssrc in self._video_ssrcs:
            counts["video"] += 1
            return
        if header.payload_type != OPUS_PAYLOAD_TYPE:
            counts["other_payload_type"] += 1
            return
        if ssrc == self._transport.ssrc:
            counts["own"] += 1
            return
        speaker = self._speakers.get(ssrc)
        if speaker is not None and speaker.ignored:
            counts["bot"] += 1
            return
        if speaker is None and self._departed and self._is_straggler(ssrc, header.sequence):
            counts["departed"] += 1
            return
        cipher = self._current_cipher()
        if cipher is None:
            return
        frame = cipher.decrypt(packet, header)
        if isinstance(frame, DecryptFailure):
            counts[frame.value] += 1
            self._log(logging.DEBUG, frame.value, "dropped voice packets: %s", frame.value)
            return
        arrived = self._ticks
        if speaker is None:
            self._hold(ssrc, header.sequence, header.timestamp, frame, arrived)
            return
        if self._pending:  # held just as SPEAKING was handled: hand those over first, in order
            with self._held_lock:
                held = self._pending.pop(ssrc, None)
            if held:
                self._hand_over(speaker, held, counts)
        speaker.last_sequence = header.sequence
        self._deliver(speaker, header.sequence, header.timestamp, frame, arrived, counts)

    def _is_straggler(self, ssrc: int, sequence: int) -> bool:
        """A departed user's packet still in flight: their SSRC, soon after, continuing their sequence.

        A new owner of the SSRC starts a sequence of its own, so its first words are held, not dropped.
        """
        departed = self._departed.get(ssrc)
        if departed is None or departed[0] <= self._clock():
            return False
        last = departed[1]
        return last is None or abs(sequence_delta(sequence, last)) < RESTART_DISTANCE

    def _deliver(
        self, speaker: _Speaker, sequence: int, timestamp: int, frame: bytes, arrived: int, counts: Counter[str]
    ) -> None:
        opus = self._dave.decrypt(speaker.user_id, frame)
        if isinstance(opus, DaveFailure):
            counts[opus.value] += 1
            self._log(
                logging.INFO,
                opus.value,
                "could not open a DAVE frame of user %s (%s): concealed",
                speaker.user_id,
                self._dave.last_error or opus.value,
            )
            return
        if len(speaker.inbox) == INBOX_PACKETS:
            counts["inbox_overflow"] += 1  # the deque drops its oldest
        speaker.inbox.append((sequence, timestamp, opus, arrived))
        counts["delivered"] += 1

    def _hold(self, ssrc: int, sequence: int, timestamp: int, frame: bytes, arrived: int) -> None:
        counts = self._counts
        counts["unknown_ssrc"] += 1  # an event, not an outcome: the packet is delivered or dropped later
        self._log(logging.DEBUG, "unknown_ssrc", "voice packets from SSRC %s before its owner is known", ssrc)
        with self._held_lock:
            held = self._pending.get(ssrc)
            if held is None:
                if len(self._pending) >= PENDING_SSRCS:
                    # The longest-waiting SSRC's owner is never coming (it left, or is a stream we do not
                    # track): make room rather than refuse every new speaker's first words until the next READY.
                    counts["pending_evicted"] += len(self._pending.pop(next(iter(self._pending))))
                held = self._pending[ssrc] = deque(maxlen=PENDING_PACKETS)
            if len(held) == PENDING_PACKETS:
                counts["held_overflow"] += 1  # the deque drops its oldest
            held.append((sequence, timestamp, frame, arrived))

    def _current_cipher(self) -> TransportDecryptor | None:
        key, mode = self._transport.secret_key, self._transport.mode
        if key is self._cipher_key and mode == self._cipher_mode:
            if self._cipher is None:
                self._counts["no_transport_key" if not (key and mode) else "unsupported_mode"] += 1
            return self._cipher
        self._cipher_key, self._cipher_mode, self._cipher = key, mode, None
        if not (key and mode):
            self._counts["no_transport_key"] += 1
            return None
        try:
            self._cipher = TransportDecryptor(mode, key)
        except (UnsupportedModeError, ValueError) as exc:
            log.error("cannot hear this voice channel: %s", exc)  # once per (mode, key), not per packet
            self._counts["unsupported_mode"] += 1
        return self._cipher

    # ---- event loop: the 20 ms tick ------------------------------------------------------------------------

    def pull_frames(self) -> dict[int, bytes]:
        """One 20 ms PCM frame per human currently speaking, keyed by user id (decodes on this thread)."""
        frames: dict[int, bytes] = {}
        now = self._ticks
        for speaker in list(self._speakers.values()):
            decoder = speaker.decoder
            if decoder is None:
                continue
            inbox = speaker.inbox
            while inbox:
                sequence, timestamp, opus, arrived = inbox.popleft()
                outcome = decoder.push(sequence, timestamp, opus, now - arrived)
                if outcome is not Push.ACCEPTED:
                    self._tick_counts[outcome.value] += 1
            frame = decoder.next_frame()
            if frame is not None:
                if speaker.user_id in frames:  # two SSRCs of one user in a handover: mix them
                    frame = mix_frames([frames[speaker.user_id], frame])
                frames[speaker.user_id] = frame
        self._ticks = now + 1
        if self._departed and self._ticks % DEPARTED_PRUNE_TICKS == 0:
            self._prune_departed()
        return frames

    def _prune_departed(self) -> None:
        """Forget departed SSRCs whose straggler window has passed (a new dict: the socket thread reads it)."""
        now = self._clock()
        self._departed = {ssrc: entry for ssrc, entry in self._departed.items() if entry[0] > now}

    # ---- either thread -------------------------------------------------------------------------------------

    @property
    def speakers(self) -> dict[int, int]:
        """SSRC -> user id of every announced audio stream (bots included)."""
        return {ssrc: speaker.user_id for ssrc, speaker in list(self._speakers.items())}

    def stats(self) -> dict[str, int]:
        """Counters for every packet outcome (PACKET_OUTCOMES add up to `packets`), plus decode/jitter totals."""
        totals: Counter[str] = Counter(self._counts)
        totals.update(self._tick_counts)
        totals.update(self._retired)
        in_flight = sum(len(held) for held in list(self._pending.values()))
        target = 0
        for speaker in list(self._speakers.values()):
            in_flight += len(speaker.inbox)
            if speaker.decoder is not None:
                jitter = speaker.decoder.jitter
                totals.update(speaker.decoder.stats)
                totals["jitter_trimmed"] += jitter.trimmed
                totals["jitter_lost"] += jitter.lost
                totals["jitter_grown"] += jitter.grown
                in_flight += len(jitter)
                target = max(target, jitter.target)
        totals["in_flight"] = in_flight
        totals["jitter_target_frames"] = target  # the deepest speaker's target delay right now
        totals["dave_passthrough"] = self._dave.passthrough
        totals["dave_decrypted"] = self._dave.decrypted
        totals["speakers"] = len(self._speakers)
        return dict(totals)
