"""A local Discord voice server for discord.py to connect to: gateway voice events, Voice WebSocket v8 over
TLS, the UDP relay and the REST calls a call makes. Reusable from bench/ (import tests.discord_emulator)."""

from tests.discord_emulator.emulator import (
    BOT_ID,
    GUILD_ID,
    LOBBY_ID,
    STAGE_ID,
    TEXT_ID,
    DiscordEmulator,
    PostedMessage,
    wait_until,
)
from tests.discord_emulator.voice_server import Caller, CapPacket, VoiceServer, VoiceSession

__all__ = [
    "BOT_ID",
    "GUILD_ID",
    "LOBBY_ID",
    "STAGE_ID",
    "TEXT_ID",
    "Caller",
    "CapPacket",
    "DiscordEmulator",
    "PostedMessage",
    "VoiceServer",
    "VoiceSession",
    "wait_until",
]
