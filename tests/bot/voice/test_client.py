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
from discord.gateway import DiscordVoiceWebSocket
from discord.player import AudioPlayer

from bot.voice.client import KEEPALIVE_TICKS, CapVoiceClient, PromptSocketReader
from bot.voice.connection import CapConnectionState
from bot.voice.crypto import TransportDecryptor
from bot.voice.mixer import metronome
from bot.voice.rtp import parse_header
from bot.voice.source import OPUS_SILENCE, EngineAudioSource
from realtime.playback import PlaybackBuffer
from tests.bot.voice.rust_panic import raise_rust_panic
from tests.bot.voice.test_source import RecordingVoiceClient
from tests.bot.voice.voice_packets import MODE, SECRET_KEY, PacketSender, frames_of, opus_encode, vowel_pcm

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
        assert all(len(frame) == 3840 and speakers == frozenset() for frame, speakers in got)
        assert not vc.is_playing()  # not connected: the player waits for a connection
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
        first.start_conversation(sink_of("first"), PlaybackBuffer())
        second.start_conversation(sink_of("second"), PlaybackBuffer())
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


async def test_the_player_sleeps_while_cap_is_quiet_and_wakes_for_speech() -> None:
    """discord.py's real AudioPlayer: paused after the trailing silence, resumed as soon as speech is queued."""
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    playback = PlaybackBuffer()
    recorder = RecordingVoiceClient(asyncio.get_running_loop())
    vc._playback = playback
    vc._audio = EngineAudioSource(playback)
    vc._player = AudioPlayer(vc._audio, recorder)  # type: ignore[arg-type]
    vc._player.start()
    try:
        assert await asyncio.to_thread(wait_until, lambda: vc._audio.quiet)
        vc._pace_player()
        assert vc.is_paused()
        await asyncio.sleep(0.2)
        sent = len(recorder.sent)
        await asyncio.sleep(0.2)
        assert len(recorder.sent) == sent, "a paused player sends nothing"
        assert all(packet == OPUS_SILENCE for packet, _ in recorder.sent)

        vc.is_connected = lambda: True  # type: ignore[method-assign]
        started: list[object] = []
        vc.play = lambda source, *, after: started.append(source)  # type: ignore[method-assign]
        vc._ensure_playing()
        assert started == [], "a paused player is not replaced by a second one"

        for frame in frames_of(vowel_pcm(0.1)):
            playback.push("item_1", frame)
        vc._pace_player()
        assert vc.is_playing()
        assert await asyncio.to_thread(recorder.speech_seen.wait, 5)
        assert await asyncio.to_thread(wait_until, lambda: vc._audio.quiet)
        vc._pace_player()
        assert vc.is_paused()

        playback.push("item_2", frames_of(vowel_pcm(0.02))[0])
        playback.pause()  # a possible barge-in holds the reply: no reason to wake the player
        vc._pace_player()
        assert vc.is_paused()
    finally:
        vc._audio.close()
        vc._player.stop()
        await asyncio.to_thread(vc._player.join, 2)
        vc._connection._socket_reader.stop()
    assert sum(packet != OPUS_SILENCE for packet, _ in recorder.sent) == 5


async def test_a_sleeping_player_keeps_the_udp_route_open() -> None:
    """Discord stops relaying callers' voice to a client that sends nothing: one silence packet every 5 s."""
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    playback = PlaybackBuffer()
    vc._playback = playback
    vc._audio = EngineAudioSource(playback)
    vc._player = AudioPlayer(vc._audio, RecordingVoiceClient(asyncio.get_running_loop()))  # type: ignore[arg-type]
    vc._player.start()
    keepalives: list[tuple[bytes, bool]] = []
    vc.send_audio_packet = lambda data, *, encode=True: keepalives.append((data, encode))  # type: ignore[method-assign]
    connected = True
    vc.is_connected = lambda: connected  # type: ignore[method-assign]
    try:
        assert await asyncio.to_thread(wait_until, lambda: vc._audio.quiet)
        vc._pace_player()
        assert vc.is_paused()
        for _ in range(2 * KEEPALIVE_TICKS):  # ten seconds of ticks
            vc._pace_player()
        assert keepalives == [(OPUS_SILENCE, False)] * 2
        connected = False  # mid-reconnect: no socket or key to send with
        for _ in range(KEEPALIVE_TICKS):
            vc._pace_player()
        assert len(keepalives) == 2
    finally:
        vc._audio.close()
        vc._player.stop()
        await asyncio.to_thread(vc._player.join, 2)
        vc._connection._socket_reader.stop()


async def test_player_is_restarted_when_a_long_reconnect_ended_it() -> None:
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    played: list[object] = []
    connected = False
    vc.is_connected = lambda: connected  # type: ignore[method-assign]
    vc.play = lambda source, *, after: played.append(source)  # type: ignore[method-assign]
    vc.is_playing = lambda: bool(played) and played[-1] is not None  # type: ignore[method-assign]
    try:
        vc.start_conversation(lambda frame, speakers: None, SimpleNamespace(read_frame=lambda: None))
        assert played == []  # not connected yet: discord.py would refuse
        connected = True
        for _ in range(50):  # the tick checks once a second
            vc._tick()
        assert len(played) == 1
        for _ in range(100):
            vc._tick()
        assert len(played) == 1  # still playing: left alone
        played.append(None)  # discord.py's player gave up waiting for a reconnect and ended
        for _ in range(50):
            vc._tick()
        assert len(played) == 3 and played[-1] is not None
        # A new session description (after a reconnect) resyncs the source's speaking state.
        await vc._ws_hook(voice_ws(vc), {"op": 4, "d": {}})
        assert vc._audio is played[-1] and vc._audio._speaking
    finally:
        await vc.stop_conversation()
        vc._connection._socket_reader.stop()


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


async def test_a_rust_panic_while_dave_encrypts_sends_silence_and_keeps_the_player() -> None:
    """discord.py's player thread catches only Exception: a davey panic in encrypt_opus would end it for good
    (its is_playing() stays True, so nothing restarts it) and Cap would fall silent."""
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
