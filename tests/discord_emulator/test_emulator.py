"""The emulator against discord.py's stock voice code: what each side expects of the other holds."""

from __future__ import annotations

from tests.bot.voice.test_connection import stock_voice_client
from tests.discord_emulator import wait_until


async def test_heartbeats_acknowledge_the_last_sequence_number() -> None:
    async with stock_voice_client(heartbeat_interval_ms=300) as (emulator, voice):
        session = emulator.voice_server.current
        assert session is not None and voice.is_connected()
        await wait_until(lambda: len(session.heartbeats) >= 2, what="two heartbeats")
        assert all(seq_ack == server_seq for seq_ack, server_seq in session.heartbeats)
        assert voice.latency < float("inf")  # discord.py took the ACKs


async def test_the_udp_route_and_key_are_discord_py_s() -> None:
    async with stock_voice_client() as (emulator, voice):
        session = emulator.voice_server.current
        assert session is not None
        assert session.address == voice._connection.socket.getsockname()  # learnt from IP discovery
        assert bytes(voice._connection.secret_key) == session.secret_key
        assert voice._connection.ssrc == session.ssrc and session.mode == voice._connection.mode
