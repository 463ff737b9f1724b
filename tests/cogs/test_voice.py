"""/cap commands with fake interactions bound to discord.py's real classes."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import AsyncMock, MagicMock

import discord
import pytest

import cogs.voice as voice_cog
from bot.voice.call import CallError
from cogs.voice import NOT_ON_A_CALL, Voice, format_status

GUILD_ID = 5


def make_channel(channel_id: int = 10, *, connect: bool = True, speak: bool = True) -> MagicMock:
    channel = MagicMock(spec=discord.VoiceChannel)
    channel.id = channel_id
    channel.mention = f"<#{channel_id}>"
    channel.user_limit = 0
    channel.members = []
    channel.permissions_for.return_value = discord.Permissions(connect=connect, speak=speak)
    return channel


def make_interaction(channel: MagicMock | None) -> MagicMock:
    guild = MagicMock(spec=discord.Guild)
    guild.id = GUILD_ID
    guild.voice_client = None
    if channel is not None:
        channel.guild = guild
    member = MagicMock(spec=discord.Member)
    member.voice = MagicMock(spec=discord.VoiceState, channel=channel) if channel is not None else None
    interaction = MagicMock(spec=discord.Interaction)
    interaction.guild = guild
    interaction.guild_id = GUILD_ID
    interaction.user = member
    interaction.response = MagicMock(spec=discord.InteractionResponse)
    interaction.response.send_message = AsyncMock()
    interaction.response.defer = AsyncMock()
    interaction.followup = MagicMock(spec=discord.Webhook)
    interaction.followup.send = AsyncMock()
    return interaction


@pytest.fixture
def cog() -> Voice:
    bot = MagicMock(spec=discord.ext.commands.Bot)
    bot.settings = SimpleNamespace()
    bot.database = object()
    return Voice(bot)


def ephemeral_reply(interaction: MagicMock) -> str:
    interaction.response.send_message.assert_awaited_once()
    args, kwargs = interaction.response.send_message.call_args
    assert kwargs.get("ephemeral") is True
    return args[0]


async def test_join_refuses_a_caller_who_is_not_in_voice(cog: Voice) -> None:
    interaction = make_interaction(None)
    await cog.join.callback(cog, interaction)
    assert "Join a voice channel first" in ephemeral_reply(interaction)
    assert cog.calls == {}


@pytest.mark.parametrize(
    ("connect", "speak", "missing"),
    [(False, True, "Connect permission"), (True, False, "Speak permission"), (False, False, "Connect and Speak")],
)
async def test_join_refuses_without_connect_or_speak(cog: Voice, connect: bool, speak: bool, missing: str) -> None:
    interaction = make_interaction(make_channel(connect=connect, speak=speak))
    await cog.join.callback(cog, interaction)
    reply = ephemeral_reply(interaction)
    assert missing in reply and "<#10>" in reply
    assert cog.calls == {}


async def test_join_refuses_when_already_busy_in_another_channel(cog: Voice) -> None:
    interaction = make_interaction(make_channel(10))
    cog.calls[GUILD_ID] = SimpleNamespace(current_channel=make_channel(99))  # type: ignore[assignment]
    await cog.join.callback(cog, interaction)
    assert "already on a call in <#99>" in ephemeral_reply(interaction)

    interaction = make_interaction(make_channel(10))
    interaction.guild.voice_client = SimpleNamespace(channel=make_channel(10))
    cog.calls.clear()
    await cog.join.callback(cog, interaction)
    assert "already here" in ephemeral_reply(interaction)


async def test_join_refuses_stage_channels_and_full_channels(cog: Voice) -> None:
    stage = MagicMock(spec=discord.StageChannel)
    stage.id, stage.mention = 11, "<#11>"
    interaction = make_interaction(stage)
    await cog.join.callback(cog, interaction)
    assert "stage" in ephemeral_reply(interaction)

    full = make_channel(12)
    full.user_limit = 2
    full.members = [object(), object()]
    interaction = make_interaction(full)
    await cog.join.callback(cog, interaction)
    assert "full" in ephemeral_reply(interaction)


class FakeCall:
    """Stands in for VoiceCall: records construction, succeeds or fails to start."""

    error: Exception | None = None

    def __init__(self, channel: MagicMock, **kwargs: object) -> None:
        self.channel = self.current_channel = channel
        self.guild = channel.guild
        self.kwargs = kwargs
        self.started_by = kwargs.get("started_by")
        self.started_at: float | None = None
        self.stopped: list[str] = []
        self.listen_only = bool(kwargs.get("listen_only"))
        self.asked: list[int] = []

    def ask(self, user_id: int) -> None:
        self.asked.append(user_id)

    async def start(self) -> None:
        if self.error is not None:
            raise self.error
        self.started_at = 0.0

    async def stop(self, reason: str = "left") -> None:
        self.stopped.append(reason)
        self.kwargs["on_end"](self)  # type: ignore[operator]

    def status(self) -> dict:
        return {
            "channel": "<#10>",
            "connected_seconds": 125,
            "turns": 3,
            "barge_ins": 1,
            "median_reply_latency_ms": 640,
            "total_tokens": 12345,
            "estimated_cost_usd": 0.1234,
        }


async def test_join_then_status_then_leave(cog: Voice, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice_cog, "VoiceCall", FakeCall)
    channel = make_channel(10)
    interaction = make_interaction(channel)
    await cog.join.callback(cog, interaction)
    interaction.response.defer.assert_awaited_once_with(ephemeral=True, thinking=True)
    assert "I'm on <#10>" in interaction.followup.send.call_args.args[0]
    call = cog.calls[GUILD_ID]
    assert call.kwargs["settings"] is cog.bot.settings and call.kwargs["database"] is cog.bot.database

    status = make_interaction(channel)
    await cog.status.callback(cog, status)
    text = ephemeral_reply(status)
    assert "<#10>" in text and "2:05" in text and "Turns: 3" in text and "640 ms" in text
    assert "12,345" in text and "$0.1234" in text

    leave = make_interaction(channel)
    await cog.leave.callback(cog, leave)
    assert call.stopped == ["left"]
    assert cog.calls == {}
    assert "left" in leave.followup.send.call_args.args[0]


async def test_a_failed_start_frees_the_guild_and_says_why(cog: Voice, monkeypatch: pytest.MonkeyPatch) -> None:
    class Failing(FakeCall):
        error = CallError("the voice AI is unavailable: OPENAI_API_KEY was rejected")

    monkeypatch.setattr(voice_cog, "VoiceCall", Failing)
    interaction = make_interaction(make_channel(10))
    await cog.join.callback(cog, interaction)
    assert "OPENAI_API_KEY was rejected" in interaction.followup.send.call_args.args[0]
    assert cog.calls == {}


async def test_leave_and_status_without_a_call(cog: Voice) -> None:
    for command in (cog.leave, cog.status):
        interaction = make_interaction(make_channel(10))
        await command.callback(cog, interaction)
        assert ephemeral_reply(interaction) == NOT_ON_A_CALL


async def test_leave_ends_a_voice_connection_that_outlived_its_call(cog: Voice) -> None:
    interaction = make_interaction(make_channel(10))
    stray = MagicMock(spec=discord.VoiceClient)
    stray.disconnect = AsyncMock()
    interaction.guild.voice_client = stray
    await cog.leave.callback(cog, interaction)
    stray.disconnect.assert_awaited_once_with(force=True)
    interaction.followup.send.assert_awaited_once_with("I left the call.", ephemeral=True)


def test_status_text_without_latency_yet() -> None:
    text = format_status({"channel": "<#1>", "connected_seconds": 3725})
    assert "1:02:05" in text and "n/a" in text and "$0.0000" in text


def test_status_text_shows_how_the_callers_are_heard_and_failed_replies() -> None:
    text = format_status({"channel": "<#1>", "connected_seconds": 5, "failed_responses": 2, "voice": {
        "packets": 1500, "decoded": 1400, "fec": 3, "plc": 9, "dave_no_key": 4, "dave_plaintext_refused": 1,
        "dave_decrypted": 1390, "dave_passthrough": 10}})
    assert "Replies the service failed: 2" in text
    assert "Voice in: 1,500 packets · 1,400 frames decoded · 12 concealed · 5 DAVE frames not opened" in text
    assert "Voice in" not in format_status({"channel": "<#1>", "connected_seconds": 5})


async def test_join_in_listen_mode_and_ask(cog: Voice, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice_cog, "VoiceCall", FakeCall)
    channel = make_channel(10)
    interaction = make_interaction(channel)
    await cog.join.callback(cog, interaction, mode="listen")
    call = cog.calls[GUILD_ID]
    assert call.kwargs["listen_only"] is True and call.listen_only
    assert "I won't speak" in interaction.followup.send.call_args.args[0]
    ask = make_interaction(channel)
    await cog.ask.callback(cog, ask)
    assert "only listening" in ephemeral_reply(ask) and call.asked == []
    call.listen_only = False
    ask = make_interaction(channel)
    await cog.ask.callback(cog, ask)
    assert "answer what you say next" in ephemeral_reply(ask)
    assert call.asked == [ask.user.id]


async def test_ask_without_a_call(cog: Voice) -> None:
    interaction = make_interaction(make_channel(10))
    await cog.ask.callback(cog, interaction)
    assert ephemeral_reply(interaction) == NOT_ON_A_CALL


def test_status_text_shows_whom_cap_answers() -> None:
    text = format_status({"channel": "<#1>", "connected_seconds": 5,
                          "reply_mode": "adaptive (answers when addressed)", "addressed_turns": 2,
                          "unaddressed_turns": 7})
    assert "Replies: adaptive (answers when addressed)" in text
    assert "With several people: 2 turns for Cap · 7 only listened to" in text
