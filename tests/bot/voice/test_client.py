"""CapVoiceClient against discord.py's real connection state, voice-WS dispatch and socket reader thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from unittest.mock import MagicMock

import discord
import pytest
from discord.gateway import DiscordVoiceWebSocket

from bot.voice.client import KEEPALIVE_TICKS, CapVoiceClient, PromptSocketReader
from bot.voice.connection import CapConnectionState
from bot.voice.crypto import TransportDecryptor
from bot.voice.mixer import metronome
from bot.voice.opus_decoder import HEARD_PCM, SPOKEN_PCM
from bot.voice.rtp import parse_header
from bot.voice.source import OPUS_SILENCE, EngineAudioSource, speech_encoder
from bot.voice.speaker import SendPacing, speaker
from realtime.playback import PlaybackBuffer
from tests.bot.voice.rust_panic import raise_rust_panic
from tests.bot.voice.voice_packets import (
    MODE,
    SECRET_KEY,
    PacketSender,
    frames_of,
    opus_encode,
    spoken_frames_of,
    vowel_pcm,
)

ALICE, HELPER_BOT = 111, 999
ALICE_SSRC, BOT_SSRC = 0x1001, 0x3003


def fake_discord_client(loop: asyncio.AbstractEventLoop, *, ignore_bots: bool = True) -> MagicMock:
    client = MagicMock(spec=discord.Client)
    client._connection = SimpleNamespace(loop=loop, _remove_voice_client=MagicMock())
    client.settings = SimpleNamespace(ignore_bots=ignore_bots)
    client.get_user.return_value = None
    return client


def fake_channel() -> MagicMock:
    channel = MagicMock(spec=discord.VoiceChannel)
    channel.id = 42
    channel.guild.id = 7
    helper = MagicMock(spec=discord.Member, bot=True)
    channel.guild.get_member.side_effect = lambda user_id: helper if user_id == HELPER_BOT else None
    channel._get_voice_client_key.return_value = (7, "guild_id")
    return channel


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll from a worker thread (the socket reader is a real thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def voice_ws(vc: CapVoiceClient) -> DiscordVoiceWebSocket:
    """A voice WebSocket as discord.py builds it, minus the network: messages go through its real dispatch."""
    ws = DiscordVoiceWebSocket(MagicMock(), vc.loop, hook=vc._connection.hook)
    ws._connection = vc._connection
    return ws


def test_connection_state_carries_the_hook_and_a_prompt_socket_reader() -> None:
    loop = asyncio.new_event_loop()
    try:
        before = {thread.name for thread in threading.enumerate()}
        vc = CapVoiceClient(fake_discord_client(loop), fake_channel())
        assert isinstance(vc._connection, CapConnectionState) and vc._connection._cap_hook == vc._ws_hook
        assert CapVoiceClient.supported_modes == (MODE,)
        assert isinstance(vc._connection._socket_reader, PromptSocketReader)
        assert wait_until(lambda: len({t.name for t in threading.enumerate()} - before) == 1)  # one reader
        vc._connection._socket_reader.stop()
    finally:
        loop.close()


async def test_speaking_and_disconnect_reach_the_receiver_through_discord_pys_dispatch() -> None:
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    try:
        ws = voice_ws(vc)
        await ws.received_message({"op": 5, "d": {"user_id": str(ALICE), "ssrc": ALICE_SSRC, "speaking": 1}})
        await ws.received_message({"op": 5, "d": {"user_id": str(HELPER_BOT), "ssrc": BOT_SSRC, "speaking": 1}})
        assert vc.receiver.speakers == {ALICE_SSRC: ALICE, BOT_SSRC: HELPER_BOT}
        await ws.received_message({"op": 13, "d": {"user_id": str(ALICE)}})
        assert vc.receiver.speakers == {BOT_SSRC: HELPER_BOT}
        assert vc._is_bot(HELPER_BOT) and not vc._is_bot(ALICE)
    finally:
        vc._connection._socket_reader.stop()


async def test_listener_registered_once_across_reconnects_and_packets_flow_from_the_reader_thread() -> None:
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    state = vc._connection
    sender_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ws = voice_ws(vc)
        packets = opus_encode(frames_of(vowel_pcm(0.2)))
        alice = PacketSender(ALICE_SSRC)
        for round_ in range(2):  # connect, then a reconnect to a new voice server (new socket, new READY)
            state._create_socket()  # what discord.py does on VOICE_SERVER_UPDATE
            state.socket.bind(("127.0.0.1", 0))
            state.mode, state.secret_key = MODE, list(SECRET_KEY)
            for op in (2, 9, 2):  # READY / RESUMED, again and again: registration stays single
                # Straight to the hook: discord.py's own READY handling would start UDP IP discovery.
                await vc._ws_hook(ws, {"op": op, "d": {"ssrc": 1, "ip": "127.0.0.1", "port": 1, "modes": []}})
            vc.listen()
            assert state._socket_reader._callbacks.count(vc._on_packet) == 1
            await ws.received_message({"op": 5, "d": {"user_id": str(ALICE), "ssrc": ALICE_SSRC, "speaking": 1}})
            delivered_before = vc.receiver.stats().get("delivered", 0)
            for packet in packets:
                sender_socket.sendto(alice.packet(packet), state.socket.getsockname())
            target = delivered_before + len(packets)
            arrived = await asyncio.to_thread(
                wait_until, lambda target=target: vc.receiver.stats().get("delivered", 0) >= target
            )
            assert arrived, f"round {round_}: {vc.receiver.stats()}"
            frames = [vc.receiver.pull_frames() for _ in range(len(packets) + 2)]
            assert sum(ALICE in frame for frame in frames) >= len(packets)
            # discord.py's disconnect(cleanup=False) before reconnecting: pause the reader, close the socket.
            state._socket_reader.pause()
            state.socket.close()
    finally:
        sender_socket.close()
        state._socket_reader.stop()


async def test_conversation_ticks_feed_the_sink_and_stop_cleanly() -> None:
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    got: list[tuple[bytes, frozenset[int]]] = []
    enough = asyncio.Event()

    def sink(frame: bytes, speakers: frozenset[int]) -> None:
        got.append((frame, speakers))
        if len(got) >= 5:
            enough.set()

    try:
        vc.start_conversation(sink, SimpleNamespace(read_frame=lambda: None))
        await asyncio.wait_for(enough.wait(), 5)
        await vc.stop_conversation()
        count = len(got)
        await asyncio.sleep(0.05)
        assert len(got) == count  # the ticker is gone
        assert all(len(frame) == HEARD_PCM.frame_bytes and speakers == frozenset() for frame, speakers in got)
        assert vc._on_speak not in speaker()  # no more sending either
    finally:
        vc._connection._socket_reader.stop()


async def test_a_failing_sink_does_not_stop_the_ticker() -> None:
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    calls = 0
    enough = asyncio.Event()

    def sink(frame: bytes, speakers: frozenset[int]) -> None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            enough.set()
        raise RuntimeError("engine hiccup")

    try:
        vc.start_conversation(sink, SimpleNamespace(read_frame=lambda: None))
        await asyncio.wait_for(enough.wait(), 5)
    finally:
        await vc.stop_conversation()
        vc._connection._socket_reader.stop()


async def test_cleanup_runs_callbacks_and_stops_the_ticker() -> None:
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    gone = []
    vc.on_cleanup(lambda: gone.append(True))
    vc.start_conversation(lambda frame, speakers: None, SimpleNamespace(read_frame=lambda: None))
    shared = metronome(vc.loop)
    assert vc._on_tick in shared and shared.running
    vc.cleanup()
    assert gone == [True]
    assert vc._on_tick not in shared and not shared.running
    vc._connection._socket_reader.stop()


async def test_calls_on_one_loop_share_one_ticker() -> None:
    loop = asyncio.get_running_loop()
    first, second = (CapVoiceClient(fake_discord_client(loop), fake_channel()) for _ in range(2))
    heard: dict[str, int] = {"first": 0, "second": 0}
    enough = asyncio.Event()

    def sink_of(name: str) -> Callable[[bytes, frozenset[int]], None]:
        def sink(frame: bytes, speakers: frozenset[int]) -> None:
            heard[name] += 1
            if min(heard.values()) >= 5:
                enough.set()

        return sink

    try:
        first.start_conversation(sink_of("first"), PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes))
        second.start_conversation(sink_of("second"), PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes))
        await asyncio.wait_for(enough.wait(), 5)
        assert [t for t in asyncio.all_tasks() if t.get_name() == "voice-metronome"] == [metronome(loop)._task]
        await first.stop_conversation()
        count = heard["first"]
        enough.clear()
        heard["second"] = 0
        await asyncio.wait_for(enough.wait(), 5)  # the second call goes on ticking
        assert heard["first"] == count
    finally:
        for vc in (first, second):
            await vc.stop_conversation()
            vc._connection._socket_reader.stop()


class Speaking:
    """A CapVoiceClient ready to speak, its sends and speaking announcements recorded, ticked by hand."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.vc = vc = CapVoiceClient(fake_discord_client(loop), fake_channel())
        self.playback = PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes)
        self.sent: list[tuple[bytes, bool]] = []
        self.announced: list[bool] = []
        self.connected = True
        vc.send_audio_packet = lambda data, *, encode=True: self.sent.append((data, encode))  # type: ignore[method-assign]
        vc.is_connected = lambda: self.connected  # type: ignore[method-assign]
        vc._set_speaking = self.announced.append  # type: ignore[method-assign]
        vc._playback = self.playback
        vc._audio = EngineAudioSource(self.playback, on_speaking=vc._set_speaking)
        vc._pacing = SendPacing(KEEPALIVE_TICKS)

    def ticks(self, count: int) -> list[bytes]:
        """Run the speaker thread's step `count` times; the packets sent meanwhile."""
        before = len(self.sent)
        for _ in range(count):
            self.vc._speak_step()
        return [packet for packet, _ in self.sent[before:]]

    def close(self) -> None:
        self.vc._connection._socket_reader.stop()


async def test_cap_sleeps_while_quiet_and_wakes_for_speech() -> None:
    """Five silence frames after speech (as Discord asks), then nothing; speech wakes the call at the next tick."""
    call = Speaking(asyncio.get_running_loop())
    try:
        assert call.ticks(6) == [OPUS_SILENCE] * 5  # a new call opens its UDP route at once, then sleeps
        assert call.vc.sleeping
        assert call.ticks(100) == [], "a sleeping call sends nothing"

        for frame in spoken_frames_of(vowel_pcm(0.1)):
            call.playback.push("item_1", frame)
        reply = call.ticks(5)
        assert not call.vc.sleeping and all(packet != OPUS_SILENCE for packet in reply)
        assert call.ticks(6) == [OPUS_SILENCE] * 5
        assert call.vc.sleeping

        call.playback.push("item_2", spoken_frames_of(vowel_pcm(0.02))[0])
        call.playback.pause()  # a possible barge-in holds the reply: no reason to wake up
        assert call.ticks(10) == [] and call.vc.sleeping
        assert call.announced == [True, False]  # "speaking" before the reply, "not speaking" after its silence
        assert all(encode is False for _, encode in call.sent)
    finally:
        call.close()


async def test_a_paused_reply_leaves_the_sleeping_sender_thread_asleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a possible barge-in holds the reply (up to 3 s), the event loop's tick does not wake the call's sender
    thread: woken, it would tick 50 times a second to send nothing. Resumed speech wakes it at the next tick."""
    call = Speaking(asyncio.get_running_loop())
    woken: list[object] = []
    monkeypatch.setattr(speaker(), "wake", woken.append)
    try:
        call.ticks(6)
        assert call.vc.sleeping
        call.playback.push("item_1", spoken_frames_of(vowel_pcm(0.02))[0])
        call.playback.pause()
        call.vc._tick()
        assert woken == []
        call.playback.resume()
        call.vc._tick()
        assert woken == [call.vc._on_speak]
    finally:
        call.close()


async def test_a_sleeping_call_keeps_the_udp_route_open() -> None:
    """Discord stops relaying callers' voice to a client that sends nothing: one silence packet every 5 s."""
    call = Speaking(asyncio.get_running_loop())
    try:
        call.ticks(6)
        assert call.vc.sleeping
        assert call.ticks(2 * KEEPALIVE_TICKS) == [OPUS_SILENCE] * 2  # ten seconds of ticks
        call.connected = False  # mid-reconnect: no socket or key to send with
        assert call.ticks(KEEPALIVE_TICKS) == []
    finally:
        call.close()


async def test_the_shared_speaker_resumes_sending_after_a_reconnect() -> None:
    """During a reconnect nothing is read (no speech lost); after it the reply goes on, and "speaking" is said
    again before its next packet, since discord.py said "not speaking" with the new session key."""
    call = Speaking(asyncio.get_running_loop())
    vc = call.vc
    frames = spoken_frames_of(vowel_pcm(1.0))
    try:
        vc.start_conversation(lambda frame, speakers: None, call.playback)
        vc._audio._on_speaking = call.announced.append
        assert vc._on_speak in speaker() and speaker().running
        assert await asyncio.to_thread(wait_until, lambda: vc.sleeping)
        call.connected = False
        for frame in frames:
            call.playback.push("item_1", frame)
        await asyncio.sleep(0.2)
        assert call.playback.played_ms("item_1") == 0 and call.announced == []

        await vc._ws_hook(voice_ws(vc), {"op": 4, "d": {}})  # the new session's description
        call.connected = True
        assert await asyncio.to_thread(wait_until, lambda: call.playback.played_ms("item_1") >= 200)
        await vc._ws_hook(voice_ws(vc), {"op": 4, "d": {}})  # a second reconnect, mid-speech
        assert await asyncio.to_thread(wait_until, lambda: vc.sleeping)
        assert call.announced == [True, True, False]
        audible = [packet for packet, _ in call.sent if packet != OPUS_SILENCE]
        assert audible == opus_encode_like_cap(frames)  # every frame, in order
    finally:
        await vc.stop_conversation()
        call.close()
    assert vc._on_speak not in speaker()


def opus_encode_like_cap(frames: list[bytes]) -> list[bytes]:
    """What EngineAudioSource sends for `frames` (libopus is deterministic for one encoder's state)."""
    encoder = speech_encoder()
    return [encoder.encode(frame, SPOKEN_PCM.frame_samples) for frame in frames]


async def test_a_voice_websocket_message_that_breaks_the_receiver_does_not_reach_discord_py(caplog) -> None:
    """discord.py awaits the hook unguarded; an exception would silently end its voice-WebSocket poller."""
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())

    def broken(msg: dict) -> None:
        raise RuntimeError("libopus went away")

    vc.receiver.on_ws_message = broken  # type: ignore[method-assign]
    await vc._ws_hook(None, {"op": 5, "d": {"user_id": "1", "ssrc": 2, "speaking": 1}})  # type: ignore[arg-type]
    assert "a voice WebSocket message could not be handled" in caplog.text
    vc._connection._socket_reader.stop()


async def test_a_rust_panic_in_a_socket_listener_does_not_kill_the_reader_thread() -> None:
    """davey's panics are BaseExceptions: `except Exception` let one end the thread, and Cap went deaf."""
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    state = vc._connection
    reader = state._socket_reader
    sender_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    received: list[bytes] = []

    def panicking(datagram: bytes) -> None:
        if datagram == b"first":
            raise_rust_panic()

    try:
        state._create_socket()
        state.socket.bind(("127.0.0.1", 0))
        reader.register(panicking)
        reader.register(received.append)
        for datagram in (b"first", b"second", b"third"):
            sender_socket.sendto(datagram, state.socket.getsockname())
        assert await asyncio.to_thread(wait_until, lambda: len(received) == 3), received
        assert reader.is_alive()
    finally:
        sender_socket.close()
        reader.stop()


async def test_a_rust_panic_while_dave_encrypts_sends_silence_in_its_place() -> None:
    """A davey panic in encrypt_opus costs one frame, which goes out as Opus silence: the stream of packets
    stays unbroken (the speaker thread survives the panic anyway, test_speaker.py)."""
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    state = vc._connection
    state._socket_reader.stop()
    state.mode, state.secret_key, state.ssrc = MODE, list(SECRET_KEY), 0x4004

    class PanickingEncryptor:
        ready = True

        def encrypt_opus(self, data: bytes) -> bytes:
            if data == OPUS_SILENCE:  # davey passes silence through untouched
                return data
            raise_rust_panic()

    state.dave_protocol_version, state.dave_session = 1, PanickingEncryptor()
    packet = bytes(vc._get_voice_packet(b"\x78an-opus-frame"))  # discord.py builds a bytearray

    header = parse_header(packet)
    assert TransportDecryptor(MODE, SECRET_KEY).decrypt(packet, header) == OPUS_SILENCE
    assert vc.stats()["dave_encrypt_failed"] == 1
    assert packet[-4:] == bytes(4) and vc._incr_nonce == 1  # the lost frame used no nonce, the silence one
