"""Hearing callers: raw UDP voice packets in, one decoded 20 ms PCM frame per speaker per tick out.

Two threads meet here. discord.py's socket reader thread calls `on_packet` for every datagram; it does
the cheap, order-independent work (RTP parse, transport decrypt, DAVE) and appends the Opus frame to the
speaker's bounded inbox. The event loop calls `on_ws_message` (the voice WebSocket hook: who owns which
SSRC) and, every 20 ms, `pull_frames`, which moves inboxes into the jitter buffers and decodes. Decoding
on the tick keeps the socket thread light and keeps each decoder on one thread.
Rule for shared state: only the event loop adds or removes speakers and SSRC mappings; the socket thread
only reads those dicts and appends to inboxes (deque appends and pops are atomic in CPython).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from bot.voice.crypto import DecryptFailure, TransportDecryptor, UnsupportedModeError
from bot.voice.dave import DaveDecryptor, DaveFailure, is_survivable
from bot.voice.jitter import DEFAULT_DEPTH, Push, SpeakerDecoder
from bot.voice.rtp import OPUS_PAYLOAD_TYPE, Reject, parse_header
from realtime.audio import mix_frames

log = logging.getLogger(__name__)

INBOX_PACKETS: Final = 50  # 1 s per speaker between socket thread and tick; beyond it the oldest go
PENDING_PACKETS: Final = 10  # 200 ms kept per SSRC whose owner is not announced yet (DAVE needs the user)
PENDING_SSRCS: Final = 16
LOG_INTERVAL_SECONDS: Final = 30.0

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
    inbox: deque[tuple[int, bytes]] = field(default_factory=lambda: deque(maxlen=INBOX_PACKETS))


class VoiceReceiver:
    """SSRC bookkeeping plus the per-packet pipeline rtp -> transport decrypt -> DAVE -> speaker inbox."""

    def __init__(
        self,
        transport: TransportState,
        *,
        is_bot: Callable[[int], bool] = lambda _user_id: False,
        ignore_bots: bool = True,
        depth: int = DEFAULT_DEPTH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._is_bot = is_bot
        self._ignore_bots = ignore_bots
        self._depth = depth
        self._dave = DaveDecryptor(lambda: self._transport.dave_session)
        self._cipher: TransportDecryptor | None = None
        self._cipher_key: object = None
        self._cipher_mode: object = None
        self._speakers: dict[int, _Speaker] = {}  # by SSRC; loop thread writes, socket thread reads
        self._video_ssrcs: set[int] = set()  # read per packet (socket thread)
        self._video_by_user: dict[int, set[int]] = {}  # so they go when the user leaves
        self._pending: dict[int, deque[tuple[int, bytes]]] = {}  # socket thread only
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
        ignored = self._ignore_bots and self._safe_is_bot(user_id)
        self._speakers[ssrc] = _Speaker(user_id, ignored, None if ignored else SpeakerDecoder(self._depth))

    def forget_user(self, user_id: int) -> None:
        """A user left the channel: drop their SSRCs, buffers and decoder."""
        self.connected_users.discard(user_id)
        if self._video_by_user.pop(user_id, None) is not None:
            self._video_ssrcs = set().union(*self._video_by_user.values())
        for ssrc, speaker in list(self._speakers.items()):
            if speaker.user_id == user_id:
                self._retire(ssrc)

    def reset(self) -> None:
        """Forget every SSRC (a new voice session); counters are kept."""
        for ssrc in list(self._speakers):
            self._retire(ssrc)
        self._video_ssrcs = set()
        self._video_by_user = {}
        self._pending = {}
        self.connected_users = set()

    def _retire(self, ssrc: int) -> None:
        speaker = self._speakers.pop(ssrc, None)
        if speaker is not None and speaker.decoder is not None:
            self._retired.update(speaker.decoder.stats)
            self._retired["jitter_trimmed"] += speaker.decoder.jitter.trimmed

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
        if header.payload_type != OPUS_PAYLOAD_TYPE or ssrc in self._video_ssrcs:
            counts["video"] += 1
            return
        if ssrc == self._transport.ssrc:
            counts["own"] += 1
            return
        speaker = self._speakers.get(ssrc)
        if speaker is not None and speaker.ignored:
            counts["bot"] += 1
            if self._pending:
                self._pending.pop(ssrc, None)  # held before we knew it was a bot
            return
        cipher = self._current_cipher()
        if cipher is None:
            return
        frame = cipher.decrypt(packet, header)
        if isinstance(frame, DecryptFailure):
            counts[frame.value] += 1
            self._log(logging.DEBUG, frame.value, "dropped voice packets: %s", frame.value)
            return
        if speaker is None:
            self._hold(ssrc, header.sequence, frame)
            return
        pending = self._pending.pop(ssrc, None) if self._pending else None
        if pending:
            for sequence, held in pending:
                self._deliver(speaker, sequence, held)
        self._deliver(speaker, header.sequence, frame)

    def _deliver(self, speaker: _Speaker, sequence: int, frame: bytes) -> None:
        opus = self._dave.decrypt(speaker.user_id, frame)
        if isinstance(opus, DaveFailure):
            self._counts[opus.value] += 1
            self._log(
                logging.INFO,
                opus.value,
                "could not open a DAVE frame of user %s (%s): concealed",
                speaker.user_id,
                self._dave.last_error or opus.value,
            )
            return
        if len(speaker.inbox) == INBOX_PACKETS:
            self._counts["inbox_overflow"] += 1
        speaker.inbox.append((sequence, opus))
        self._counts["delivered"] += 1

    def _hold(self, ssrc: int, sequence: int, frame: bytes) -> None:
        self._counts["unknown_ssrc"] += 1
        self._log(logging.DEBUG, "unknown_ssrc", "voice packets from SSRC %s before its owner is known", ssrc)
        held = self._pending.get(ssrc)
        if held is None:
            if len(self._pending) >= PENDING_SSRCS:
                # The longest-waiting SSRC's owner is never coming (it left, or is a stream we do not
                # track): make room rather than refuse every new speaker's first words until the next READY.
                del self._pending[next(iter(self._pending))]
                self._counts["pending_evicted"] += 1
            held = self._pending[ssrc] = deque(maxlen=PENDING_PACKETS)
        held.append((sequence, frame))

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
        for speaker in list(self._speakers.values()):
            decoder = speaker.decoder
            if decoder is None:
                continue
            inbox = speaker.inbox
            while inbox:
                sequence, opus = inbox.popleft()
                outcome = decoder.push(sequence, opus)
                if outcome is not Push.ACCEPTED:
                    self._tick_counts[outcome.value] += 1
            frame = decoder.next_frame()
            if frame is not None:
                if speaker.user_id in frames:  # two SSRCs of one user in a handover: mix them
                    frame = mix_frames([frames[speaker.user_id], frame])
                frames[speaker.user_id] = frame
        return frames

    # ---- either thread -------------------------------------------------------------------------------------

    @property
    def speakers(self) -> dict[int, int]:
        """SSRC -> user id of every announced audio stream (bots included)."""
        return {ssrc: speaker.user_id for ssrc, speaker in list(self._speakers.items())}

    def stats(self) -> dict[str, int]:
        """Counters for every packet outcome and drop reason, plus decode/jitter totals."""
        totals: Counter[str] = Counter(self._counts)
        totals.update(self._tick_counts)
        totals.update(self._retired)
        for speaker in list(self._speakers.values()):
            if speaker.decoder is not None:
                totals.update(speaker.decoder.stats)
                totals["jitter_trimmed"] += speaker.decoder.jitter.trimmed
        totals["dave_passthrough"] = self._dave.passthrough
        totals["dave_decrypted"] = self._dave.decrypted
        totals["speakers"] = len(self._speakers)
        return dict(totals)
