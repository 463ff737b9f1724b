"""CapVoiceClient: discord.py's VoiceClient plus a receive path, a 20 ms mixer tick and the engine's voice.

Hooks into discord.py 2.7.1 internals (re-check them when upgrading discord.py):
- `create_connection_state()` returns `VoiceConnectionState(self, hook=...)`: the hook is awaited by
  `DiscordVoiceWebSocket.received_message` after discord.py's own handling of every JSON message
  (binary DAVE/MLS frames do not reach it). `VoiceConnectionState` passes the hook to every new voice
  WebSocket it opens, so it survives reconnects, resumes and voice-server changes.
- `self._connection.add_socket_listener(cb)` registers `cb(datagram)` on the connection's one
  SocketReader thread. The reader lives as long as the VoiceConnectionState; reconnects pause and resume
  it and keep the callbacks (only a full disconnect stops it and clears them). Cap re-registers
  idempotently (remove, then add) after each READY/RESUMED anyway, which is safe whatever the reader's
  paused state.
- `self._connection.mode / .secret_key / .dave_session / .ssrc` are read by the receiver per packet, and by
  `_get_voice_packet`, which re-implements discord.py's packet builder for Cap's one mode (same bytes; a test
  compares them with discord.py's own `_get_voice_packet`, including `_incr_nonce`'s wrap-around).
- `create_connection_state()` returns `CapConnectionState` (bot/voice/connection.py): discord.py's state with
  its fixes for moves after reconnects, 4015 resumes and a dead WebSocket poller.
- `send_audio_packet()` is serialised by a lock: discord.py advances `sequence`, `timestamp` and `_incr_nonce`
  unlocked, and any thread may call it. A nonce used twice under one key breaks XChaCha20-Poly1305.
- Cap does not use `play()` / discord.py's AudioPlayer (one thread per call, waking 50 times a second): a
  speaker thread shared with up to 15 other calls (bot/voice/speaker.py) calls `_speak_step` every 20 ms,
  which sends through discord.py's `send_audio_packet` (RTP, DAVE, transport encryption) like the player did.
- `self._connection._socket_reader` is swapped for `PromptSocketReader`: discord.py's reader blocks in
  select() for up to 30 s, and closing the socket does not wake it, so after a reconnect (new socket)
  it would stay deaf for up to 30 s. Ours wakes every half second and drains all queued datagrams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import threading
from collections.abc import Callable
from typing import Any

import discord
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_state import SocketReader, VoiceConnectionState

from bot.voice.connection import CapConnectionState
from bot.voice.crypto import NONCE_COUNTER_LIMIT, SUPPORTED_MODES, TransportEncryptor, UnsupportedModeError
from bot.voice.dave import is_rust_panic, is_survivable
from bot.voice.mixer import Mixer, metronome
from bot.voice.receiver import OP_READY, OP_RESUMED, OP_SESSION_DESCRIPTION, RateLimitedLog, VoiceReceiver
from bot.voice.rtp import pack_header
from bot.voice.source import OPUS_SILENCE, EngineAudioSource, FrameSource
from bot.voice.speaker import Send, SendPacing, speaker

log = logging.getLogger(__name__)

SELECT_TIMEOUT_SECONDS = 0.5  # how soon the reader notices a replaced socket (discord.py: 30 s)
MAX_DATAGRAMS_PER_WAKE = 64
InputSink = Callable[[bytes, frozenset[int]], None]
POLLER_CHECK_TICKS = 50  # once a second, revive a voice WebSocket poller that died
# While Cap is quiet it sends no UDP at all; Discord then stops relaying callers' voice after a while
# (discord.js PR #9202, pycord #3388), so a quiet Cap would go deaf. One Opus silence packet every 5 s keeps
# the route open for ~0.1 µs per tick and one packet per 250 ticks.
KEEPALIVE_TICKS = 250


class PromptSocketReader(SocketReader):
    """discord.py's SocketReader with a short select() timeout, draining every queued datagram per wake."""

    def _do_run(self) -> None:
        while not self._end.is_set():
            if not self._running.is_set():
                self._running.wait()
                continue
            sock = self.state.socket
            try:
                readable, _, _ = select.select([sock], [], [], SELECT_TIMEOUT_SECONDS)
            except (ValueError, TypeError, OSError):  # no socket yet, or closed under us
                self._end.wait(0.05)
                continue
            if not readable:
                continue
            for _ in range(MAX_DATAGRAMS_PER_WAKE):
                try:
                    data = sock.recv(2048)
                except OSError:  # BlockingIOError once drained; other errors: the socket is going away
                    break
                for callback in list(self._callbacks):
                    try:
                        callback(data)
                    except BaseException as exc:  # a davey panic is a BaseException: it would end this thread
                        if not is_survivable(exc):
                            raise
                        log.exception("voice socket listener %s failed", callback)


def _retire_reader(reader: SocketReader) -> None:
    """Stop discord.py's own reader thread (paused, no socket yet, so it exits within milliseconds).

    Its run() clears the end flag when it starts, so a stop() that lands before that is lost: repeat it.
    """
    for _ in range(40):
        reader.stop()
        reader.join(0.025)
        if not reader.is_alive():
            return
    log.warning("discord.py's voice socket reader did not stop; it stays idle")


class CapVoiceClient(discord.VoiceClient):
    """A voice connection that hears (receiver + mixer tick into a sink) and speaks (a playback buffer)."""

    # Send and receive with the one mode the receiver decrypts (Discord offers it on every voice server).
    supported_modes = SUPPORTED_MODES

    def __init__(self, client: discord.Client, channel: discord.abc.Connectable) -> None:
        super().__init__(client, channel)
        settings = getattr(client, "settings", None)
        self.receiver = VoiceReceiver(
            self._connection, is_bot=self._is_bot, ignore_bots=getattr(settings, "ignore_bots", True)
        )
        self.mixer = Mixer(self.receiver.pull_frames)
        self._on_packet = self.receiver.on_packet  # one bound method, so remove/add find it
        self._sink: InputSink | None = None
        self._playback: FrameSource | None = None
        self._audio: EngineAudioSource | None = None
        self._on_tick = self._tick  # one bound method, so the shared metronome finds it again
        self._on_speak = self._speak_step  # likewise for the shared speaker threads
        self._pacing: SendPacing | None = None
        self._was_connected = False
        self._cleanup_callbacks: list[Callable[[], None]] = []
        self._send_lock = threading.Lock()
        self._ready_channel_id: int | None = None
        self._dave_encrypt_failed = 0
        self._log = RateLimitedLog(log)
        self._encryptor: TransportEncryptor | None = None
        self._encryptor_key: object = None
        self._encryptor_mode: object = None

    # ---- discord.py hooks -----------------------------------------------------------------------------------

    def create_connection_state(self) -> VoiceConnectionState:
        state = CapConnectionState(self, hook=self._ws_hook)
        _retire_reader(state._socket_reader)
        state._socket_reader = PromptSocketReader(state)
        state._socket_reader.start()
        return state

    async def _ws_hook(self, ws: DiscordVoiceWebSocket, msg: dict[str, Any]) -> None:
        """Every voice-WebSocket JSON message, after discord.py has handled it (event loop).

        Nothing may escape: discord.py awaits this hook unguarded in its voice-WebSocket poller, which ends
        quietly on an unexpected exception, and with it DAVE transitions and voice reconnects.
        """
        try:
            self._on_ws_message(msg)
        except Exception:
            self._log(logging.ERROR, "ws-hook", "a voice WebSocket message could not be handled", exc_info=True)

    def _on_ws_message(self, msg: dict[str, Any]) -> None:
        receiver = getattr(self, "receiver", None)  # the hook exists before __init__ finishes
        if receiver is None:
            return
        op = msg.get("op")
        if op == OP_READY and not self._new_channel_ready():
            # A new session in the same channel: callers keep their SSRCs and need not send SPEAKING again,
            # so the receiver keeps its map (SPEAKING still remaps any SSRC that changed hands).
            pass
        else:
            receiver.on_ws_message(msg)
        if op in (OP_READY, OP_RESUMED) and self._sink is not None:
            self.listen()
        elif op == OP_SESSION_DESCRIPTION and self._audio is not None:
            # discord.py sent "not speaking" with the new key: say "speaking" again before the next audible packet.
            self._audio.speaking_state_lost()

    def _get_voice_packet(self, data: bytes) -> bytes:
        """discord.py's packet, built for less, and a davey panic in `encrypt_opus` sends Opus silence instead.

        Per packet (speaker thread, under the send lock) this is discord.py's builder for the one mode Cap
        negotiates, with the key held as bytes once per session (`TransportEncryptor`), one header pack and
        one libsodium call; any other mode falls back to discord.py's code.
        The speaker thread would survive the panic (a BaseException) and lose the frame; sending silence in its
        place keeps the stream of packets unbroken. Silence is never DAVE encrypted, so the substitute needs no
        key; the RTP sequence and timestamp advance as for the lost frame.
        """
        try:
            return self._build_voice_packet(data)
        except BaseException as exc:
            if not is_rust_panic(exc):
                raise
            self._dave_encrypt_failed += 1
            self._log(logging.ERROR, "dave-encrypt", "DAVE could not encrypt a frame (%s): sent silence", exc)
            return self._build_voice_packet(OPUS_SILENCE)

    def _build_voice_packet(self, data: bytes) -> bytes:
        """discord.py 2.7.1's `VoiceClient._get_voice_packet` + `_encrypt_aead_xchacha20_poly1305_rtpsize`.

        Same order, same bytes: DAVE first (as discord.py decides), then the header, then the nonce counter,
        used and then advanced with discord.py's `checked_add('_incr_nonce', 1, 2**32 - 1)` (wraps to 0).
        """
        encryptor = self._current_encryptor()
        if encryptor is None:  # named, not super(): bench/rig.py borrows this method for its stand-in client
            return discord.VoiceClient._get_voice_packet(self, data)
        connection = self._connection
        if connection.dave_session and connection.can_encrypt:
            data = connection.dave_session.encrypt_opus(data)
        header = pack_header(self.sequence, self.timestamp, connection.ssrc)
        nonce = self._incr_nonce
        self._incr_nonce = nonce + 1 if nonce < NONCE_COUNTER_LIMIT else 0
        return encryptor.seal(header, data, nonce)

    def _current_encryptor(self) -> TransportEncryptor | None:
        """The session's encryptor, re-made when discord.py's key or mode changes (a new SESSION_DESCRIPTION).

        discord.py stores each SESSION_DESCRIPTION's key as a new list, so identity tells a new session.
        None (discord.py's own code then runs, and raises its own errors) for any mode Cap does not seal.
        """
        connection = self._connection
        key, mode = connection.secret_key, connection.mode
        if key is self._encryptor_key and mode == self._encryptor_mode:
            return self._encryptor
        self._encryptor_key, self._encryptor_mode, self._encryptor = key, mode, None
        if key and mode:
            with contextlib.suppress(UnsupportedModeError, ValueError, TypeError):
                self._encryptor = TransportEncryptor(mode, key)
        return self._encryptor

    def _new_channel_ready(self) -> bool:
        """On READY: is this session in another channel than the previous READY's?"""
        channel_id = getattr(self.channel, "id", None)
        previous, self._ready_channel_id = self._ready_channel_id, channel_id
        return previous is None or previous != channel_id

    def send_audio_packet(self, data: bytes, *, encode: bool = True) -> None:
        """discord.py's sender, one packet at a time (every sender shares the RTP and nonce counters)."""
        with self._send_lock:
            super().send_audio_packet(data, encode=encode)

    async def connect(
        self,
        *,
        reconnect: bool,
        timeout: float,  # noqa: ASYNC109 - discord.py's signature
        self_deaf: bool = False,
        self_mute: bool = False,
    ) -> None:
        await super().connect(reconnect=reconnect, timeout=timeout, self_deaf=self_deaf, self_mute=self_mute)
        self.listen()

    def listen(self) -> None:
        """Make sure the receiver gets the socket's datagrams, exactly once (idempotent)."""
        self._connection.remove_socket_listener(self._on_packet)
        self._connection.add_socket_listener(self._on_packet)

    async def disconnect(self, *, force: bool = False) -> None:
        await self.stop_conversation()
        await super().disconnect(force=force)

    def cleanup(self) -> None:
        """Called by discord.py when the connection is gone for good (also when kicked or the channel dies)."""
        self._stop_ticker()
        speaker().discard(self._on_speak)
        for callback in self._cleanup_callbacks:
            try:
                callback()
            except Exception:
                log.exception("voice cleanup callback failed")
        self._cleanup_callbacks.clear()
        super().cleanup()

    def on_cleanup(self, callback: Callable[[], None]) -> None:
        """Run `callback` (event loop) when discord.py tears this connection down."""
        self._cleanup_callbacks.append(callback)

    # ---- the conversation -----------------------------------------------------------------------------------

    def start_conversation(self, sink: InputSink, playback: FrameSource) -> None:
        """Hear: mixed 20 ms frames go to `sink(frame, speakers)`. Speak: `playback` is streamed as Opus."""
        self._sink = sink
        self._playback = playback
        self.listen()
        metronome(self.loop).add(self._on_tick)  # one 20 ms clock for every call on the loop
        self._audio = EngineAudioSource(playback, on_speaking=self._set_speaking)
        self._pacing = SendPacing(KEEPALIVE_TICKS)
        speaker().add(self._on_speak)  # a 20 ms sender thread shared by up to 16 calls

    async def stop_conversation(self) -> None:
        self._sink = None
        self._playback = None
        self._connection.remove_socket_listener(self._on_packet)  # nobody drains the receiver any more
        self._stop_ticker()
        speaker().discard(self._on_speak)
        if self._audio is not None:
            self._audio.close()
            self._audio = None

    def _tick(self) -> None:
        frame, speakers = self.mixer.tick()
        sink = self._sink
        if sink is not None:
            try:
                sink(frame, speakers)
            except Exception:
                self._log(logging.ERROR, "sink", "the engine refused an input frame", exc_info=True)
        pacing, playback = self._pacing, self._playback
        nothing_to_send = playback is None or not playback.audible or playback.paused
        if pacing is not None and not pacing.awake and not nothing_to_send:
            speaker().wake(self._on_speak)  # speech to send (not held by a barge-in): its thread may wait idle
        if self.mixer.ticks % POLLER_CHECK_TICKS == 0 and isinstance(self._connection, CapConnectionState):
            self._connection.watch_poller()

    def _speak_step(self) -> bool:
        """One 20 ms tick of Cap's voice (speaker thread): the next packet, a keepalive, or nothing; False while
        the call is asleep (its thread may then wait idle until `_tick` wakes it for speech).

        While Cap speaks and through the five silence frames Discord asks for after speech, every tick sends
        the source's packet; then the call sleeps (no encryption and no UDP packet every 20 ms for an idle call,
        bench/bench_idle.py) but for one keepalive every KEEPALIVE_TICKS. During a reconnect nothing is read
        (as discord.py's player waited), so no speech is lost; after one, "speaking" is announced again
        before the next audible packet (Discord may have forgotten it).
        """
        audio, pacing, playback = self._audio, self._pacing, self._playback
        if audio is None or pacing is None or playback is None:
            return False
        if not self.is_connected():
            self._was_connected = False
            return True  # a reconnect: keep looking every tick
        if not self._was_connected:
            self._was_connected = True
            audio.speaking_state_lost()
        send = pacing.next(speech_queued=playback.audible and not playback.paused, quiet=audio.quiet)
        if send is Send.FRAME:
            packet = audio.read()
            if packet:  # b"" once closed
                self.send_audio_packet(packet, encode=False)
        elif send is Send.KEEPALIVE:
            self._send_keepalive()
        return pacing.awake

    def _send_keepalive(self) -> None:
        """One Opus silence packet while Cap is quiet (so Discord keeps relaying the callers)."""
        if not self.is_connected():
            return
        try:
            self.send_audio_packet(OPUS_SILENCE, encode=False)
        except Exception as exc:  # e.g. davey not ready mid-transition, or no mode negotiated yet
            log.debug("voice keepalive not sent: %s", exc)

    @property
    def sleeping(self) -> bool:
        """Cap's voice is asleep: quiet, sending only keepalives."""
        return self._pacing is not None and not self._pacing.awake

    def _set_speaking(self, speaking: bool) -> None:
        """Speaker thread: tell the voice gateway whether Cap is talking (clients show the speaking ring)."""
        ws = self._connection.ws
        if not ws:
            return
        state = discord.SpeakingState.voice if speaking else discord.SpeakingState.none
        with contextlib.suppress(RuntimeError):  # the loop is closing
            asyncio.run_coroutine_threadsafe(ws.speak(state), self.loop)

    def _stop_ticker(self) -> None:
        """No more ticks for this call, from now on (event loop)."""
        metronome(self.loop).discard(self._on_tick)

    def _is_bot(self, user_id: int) -> bool:
        member = self.guild.get_member(user_id)  # members in voice are cached with the voice_states intent
        user = member or self.client.get_user(user_id)
        return bool(user and user.bot)

    def stats(self) -> dict[str, int]:
        """Receive counters plus mixer ticks and playback frames, for /cap status and the logs."""
        stats = self.receiver.stats()
        stats["mixer_ticks"] = self.mixer.ticks
        stats["mixer_ticks_with_speech"] = self.mixer.mixed_ticks
        connection = self._connection
        if isinstance(connection, CapConnectionState):
            stats["voice_gateway_deaths"] = connection.poller_deaths
            stats["voice_gateway_revivals"] = connection.poller_revivals
            stats["voice_resumes"] = connection.resumes
        stats["dave_encrypt_failed"] = self._dave_encrypt_failed
        if self._audio is not None:
            stats["frames_spoken"] = self._audio.frames_encoded
        return stats
