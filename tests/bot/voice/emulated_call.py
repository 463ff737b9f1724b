"""Cap on the emulated Discord: the real CapBot, Voice cog, VoiceCall and CapVoiceClient, connected by
discord.py's own code to tests/discord_emulator, with the fake Realtime service behind the session."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from unittest.mock import AsyncMock, MagicMock

import discord
from discord import opus

from bot.discord_bot import CapBot
from bot.settings import load_settings
from bot.storage.database import Database
from bot.voice.call import VoiceCall
from bot.voice.client import CapVoiceClient
from bot.voice.source import OPUS_SILENCE
from cogs.voice import Voice
from tests.bot.voice.voice_packets import fixture_pcm, frames_of, opus_encode
from tests.discord_emulator import GUILD_ID, LOBBY_ID, DiscordEmulator, wait_until
from tests.realtime_fake import FakeRealtimeServer, tone_pcm

ALICE, BOB, SAM, EVE = 900_000_000_000_000_001, 900_000_000_000_000_002, 900_000_000_000_000_003, 900_000_000_000_004
_SPEECH: dict[str, list[bytes]] = {}


def speech(fixture: str = "hello.wav", frames: int | None = None) -> list[bytes]:
    """A fixture sentence as the Opus frames a caller's client sends (encoded once per test run)."""
    if fixture not in _SPEECH:
        _SPEECH[fixture] = opus_encode(frames_of(fixture_pcm(fixture)))
    return _SPEECH[fixture][:frames]


def interaction_from(member: discord.Member) -> MagicMock:
    """A slash-command interaction by `member`, bound to discord.py's classes (the edge: Discord's HTTP)."""
    interaction = MagicMock(spec=discord.Interaction)
    interaction.guild = member.guild
    interaction.guild_id = member.guild.id
    interaction.user = member
    interaction.response = MagicMock(spec=discord.InteractionResponse)
    interaction.response.send_message = AsyncMock()
    interaction.response.defer = AsyncMock()
    interaction.followup = MagicMock(spec=discord.Webhook)
    interaction.followup.send = AsyncMock()
    return interaction


def reply_text(interaction: MagicMock) -> str:
    """The last thing the interaction answered, however it answered."""
    for sender in (interaction.followup.send, interaction.response.send_message):
        if sender.await_args is not None:
            return sender.await_args.args[0]
    raise AssertionError("the interaction got no answer")


@dataclass
class CapOnDiscord:
    bot: CapBot
    cog: Voice
    guild: discord.Guild
    discord: DiscordEmulator
    realtime: FakeRealtimeServer

    def member(self, user_id: int) -> discord.Member:
        """The member as an interaction carries it (built from the payload: with only the voice-states intent
        discord.py caches just the members in voice)."""
        data = self.discord.users[user_id].member()
        return discord.Member(data=data, guild=self.guild, state=self.bot._connection)  # type: ignore[arg-type]

    @property
    def call(self) -> VoiceCall | None:
        return self.cog.calls.get(GUILD_ID)

    @property
    def voice(self) -> CapVoiceClient | None:
        client = self.guild.voice_client
        return client if isinstance(client, CapVoiceClient) else None

    async def join(self, user_id: int = ALICE) -> MagicMock:
        interaction = interaction_from(self.member(user_id))
        await self.cog.join.callback(self.cog, interaction)
        return interaction

    async def command(self, name: str, user_id: int = ALICE) -> str:
        interaction = interaction_from(self.member(user_id))
        await getattr(self.cog, name).callback(self.cog, interaction)
        return reply_text(interaction)

    def heard(self, user_id: int = ALICE) -> int:
        """20 ms frames of `user_id` the call has heard (mixed into the session's input)."""
        call = self.call
        return call._spoken[user_id] if call is not None else 0

    async def hears(self, user_id: int = ALICE, frames: int = 50, *, announce: bool = True) -> None:
        """The caller says something short and Cap hears most of it."""
        before = self.heard(user_id)
        await self.discord.say(user_id, speech(frames=frames), announce=announce)
        await wait_until(lambda: self.heard(user_id) - before >= frames // 2, what=f"Cap hearing {user_id}")

    async def connected_in(self, channel_id: int = LOBBY_ID) -> None:
        """Cap's voice connection is up in `channel_id` with a session that has media."""
        def up() -> bool:
            voice, session = self.voice, self.discord.voice_server.current
            return (voice is not None and voice.is_connected() and voice.channel is not None
                    and voice.channel.id == channel_id and session is not None and session.media_ready
                    and session.channel_id == channel_id)
        await wait_until(up, what=f"Cap connected in {channel_id}")

    def cap_audio(self, since: int = 0) -> list[bytes]:
        """What a caller hears of Cap (decoded), from Cap's `since`-th packet on; Opus silence is skipped."""
        decoder = opus.Decoder()
        return [decoder.decode(packet.payload, fec=False) for packet in self.discord.voice_server.cap_packets[since:]
                if packet.payload != OPUS_SILENCE]


@contextlib.asynccontextmanager
async def cap_on_discord(*, dave_protocol_version: int = 0, reply_seconds: float = 1.0,
                         user_transcripts: tuple[str, ...] = ("Hi Cap.",),
                         **settings: object) -> AsyncIterator[CapOnDiscord]:
    """Cap logged in to the emulated guild; Alice is in the Lobby, Sam (staff) and Eve are not in voice."""
    async with (
        FakeRealtimeServer(reply_audio=tone_pcm(reply_seconds), user_transcripts=user_transcripts) as realtime,
        DiscordEmulator(dave_protocol_version=dave_protocol_version) as emulator,
    ):
        emulator.add_member(ALICE, "Alice", in_channel=LOBBY_ID)
        emulator.add_member(BOB, "Bob")
        emulator.add_member(SAM, "Sam", staff=True)
        emulator.add_member(EVE, "Eve")
        config = load_settings(openai_api_key="sk-test", realtime_url=realtime.url, database_url="sqlite://",
                               realtime_connect_attempts=2, **settings)
        bot = CapBot(config, database=Database("sqlite://"))
        guild = await emulator.attach(bot)
        bot.database.open()
        cog = Voice(bot)
        await bot.add_cog(cog)
        try:
            yield CapOnDiscord(bot, cog, guild, emulator, realtime)
        finally:
            await bot.close()
