"""The discord.py 2.7.1 behaviours CapConnectionState and CapVoiceClient work around, pinned against the stock
classes through the emulated Discord: if an upgrade changes one, its test fails and the workaround can go."""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import AsyncIterator

import discord
from discord.voice_state import VoiceConnectionState

from bot.voice.client import PromptSocketReader, _retire_reader
from bot.voice.source import OPUS_SILENCE
from tests.bot.voice.emulated_call import cap_on_discord
from tests.discord_emulator import LOBBY_ID, STAGE_ID, DiscordEmulator, wait_until

OP_MLS_PROPOSALS = 27


class StockVoiceClient(discord.VoiceClient):
    """discord.py's VoiceClient and VoiceConnectionState; only the socket reader is Cap's, because the stock one
    blocks up to 30 s in select() on a replaced socket and would miss the reconnect's IP discovery."""

    def create_connection_state(self) -> VoiceConnectionState:
        state = VoiceConnectionState(self)
        _retire_reader(state._socket_reader)
        state._socket_reader = PromptSocketReader(state)
        state._socket_reader.start()
        return state


@contextlib.asynccontextmanager
async def stock_voice_client(
    *, dave_protocol_version: int = 0, heartbeat_interval_ms: int | None = None
) -> AsyncIterator[tuple[DiscordEmulator, discord.VoiceClient]]:
    """discord.py's own VoiceClient, connected to the emulator's Lobby."""
    async with DiscordEmulator(dave_protocol_version=dave_protocol_version) as emulator:
        if heartbeat_interval_ms is not None:
            emulator.voice_server.heartbeat_interval_ms = heartbeat_interval_ms
        intents = discord.Intents.none()
        intents.guilds = intents.voice_states = True
        client = discord.Client(intents=intents)
        guild = await emulator.attach(client)
        channel = guild.get_channel(LOBBY_ID)
        assert isinstance(channel, discord.VoiceChannel)
        voice = await channel.connect(timeout=20, cls=StockVoiceClient)
        try:
            yield emulator, voice
        finally:
            await client.close()


async def test_discord_py_takes_a_move_after_a_full_reconnect_for_a_kick() -> None:
    """Worked around in CapConnectionState._on_message (READY clears `_disconnected`)."""
    async with stock_voice_client() as (emulator, voice):
        emulator.close_voice(4006)
        await wait_until(lambda: len(emulator.voice_server.sessions) == 2 and voice.is_connected(), what="reconnect")
        assert voice._connection._disconnected.is_set()  # the stale flag
        emulator.move_cap(STAGE_ID)
        # Taken for a kick: discord.py leaves the channel (gateway op 4 without a channel) instead of following.
        await wait_until(lambda: emulator.gateway.requests[-1] is None, what="the stock client leaving")
        await wait_until(lambda: voice.guild.voice_client is None, what="the stock client cleaned up")


def test_discord_py_resumes_through_a_full_voice_handshake() -> None:
    """Worked around in CapConnectionState._connect: discord.py 2.7.1's resume path (close 4015) sends op 4 and
    waits for both voice updates, then for a secret key, which a RESUMEd session never sends."""
    inner = inspect.getsource(VoiceConnectionState._inner_connect)
    assert "await self._voice_connect(" in inner
    assert "self._wait_for_state(ConnectionFlowState.got_both_voice_updates)" in inner
    assert "while self.ws.secret_key is None" in inspect.getsource(VoiceConnectionState._handshake_websocket)


async def test_discord_py_loses_its_poller_to_one_bad_mls_message() -> None:
    """Worked around by CapConnectionState.watch_poller."""
    async with stock_voice_client(dave_protocol_version=1) as (emulator, voice):
        session = emulator.voice_server.current
        assert session is not None
        await wait_until(lambda: bool(session.client_binary), what="the key package")
        await emulator.voice_server.send_binary(session, OP_MLS_PROPOSALS, b"\x00\x03bad")
        runner = voice._connection._runner
        assert runner is not None
        await wait_until(runner.done, what="the poller ending")
        assert isinstance(runner.exception(), ValueError)
        assert voice.is_connected()  # nobody notices


def test_discord_py_sends_without_a_lock() -> None:
    """Worked around in CapVoiceClient.send_audio_packet."""
    source = inspect.getsource(discord.VoiceClient.send_audio_packet)
    assert "lock" not in source.lower() and "self.checked_add('sequence'" in source


async def test_two_senders_never_share_a_sequence_number_or_nonce() -> None:
    """Any two threads send through one lock: a second send that starts while
    the first is between counting and encrypting waits for it."""
    async with cap_on_discord() as cap:
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        voice = cap.voice
        assert voice is not None
        packets = cap.discord.voice_server.cap_packets
        await wait_until(lambda: voice.sleeping, what="Cap's voice asleep")
        before = len(packets)
        build = voice._get_voice_packet
        other = threading.Thread(target=voice.send_audio_packet, args=(OPUS_SILENCE,), kwargs={"encode": False})

        def interleaved(data: bytes) -> bytes:
            if not other.is_alive() and other.ident is None:
                other.start()
                other.join(0.3)  # without the lock it sends a whole packet right here
            return build(data)

        voice._get_voice_packet = interleaved  # type: ignore[method-assign]
        voice.send_audio_packet(OPUS_SILENCE, encode=False)
        await wait_until(lambda: not other.is_alive() and len(packets) >= before + 2, what="both packets")
        sent = packets[before:]
        assert len({p.sequence for p in sent}) == len(sent)
        assert len({p.nonce for p in sent}) == len(sent)
