"""Graceful shutdown: a real SIGTERM to this process ends every call (goodbye, voice left, transcript
flushed, Realtime closed) before the bot closes; the pieces with fakes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from unittest.mock import AsyncMock

import pytest

from bot.cli.run import _serve
from bot.discord_bot import CapBot
from bot.settings import load_settings
from bot.shutdown import SHUTDOWN_REASON, ShutdownCoordinator, end_calls
from bot.storage.conversations import conversation_turns
from bot.storage.database import Database
from bot.voice.call import VoiceCall
from realtime.transcript import TranscriptEntry
from tests.bot.voice.test_call import FakeSession, make_channel, registry_factory


class SlowCall:
    def __init__(self, seconds: float, error: Exception | None = None) -> None:
        self.seconds, self.error = seconds, error
        self.reasons: list[str] = []

    async def stop(self, reason: str = "left") -> None:
        self.reasons.append(reason)
        await asyncio.sleep(self.seconds)
        if self.error is not None:
            raise self.error


async def test_calls_end_together_not_one_after_another() -> None:
    calls = [SlowCall(0.2) for _ in range(5)]
    started = time.monotonic()
    assert await end_calls(calls) == 0
    assert time.monotonic() - started < 0.6  # 5 × 0.2 s in sequence would be 1 s
    assert all(call.reasons == [SHUTDOWN_REASON] for call in calls)


async def test_a_stuck_call_does_not_hold_the_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    stuck, fine = SlowCall(30), SlowCall(0)
    with caplog.at_level(logging.ERROR):
        assert await end_calls([stuck, fine], timeout=0.1) == 1
    assert "still ending" in caplog.text


async def test_a_failing_call_is_logged_and_the_others_end(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert await end_calls([SlowCall(0, RuntimeError("boom")), SlowCall(0)]) == 0
    assert "failed to end cleanly" in caplog.text


async def test_no_calls_is_instant() -> None:
    assert await end_calls([]) == 0


async def test_the_first_signal_closes_once_and_a_second_sigterm_is_ignored() -> None:
    close = AsyncMock()
    coordinator = ShutdownCoordinator(close)
    assert not coordinator.requested
    coordinator.request("SIGTERM")
    coordinator.request("SIGTERM")
    assert coordinator.task is not None
    await coordinator.task
    close.assert_awaited_once()
    assert coordinator.signal_name == "SIGTERM"


async def test_a_second_ctrl_c_quits_at_once() -> None:
    coordinator = ShutdownCoordinator(AsyncMock())
    coordinator.request("SIGINT")
    with pytest.raises(KeyboardInterrupt):
        coordinator.request("SIGINT")
    await coordinator.task  # type: ignore[misc]


async def test_a_failing_close_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    coordinator = ShutdownCoordinator(AsyncMock(side_effect=RuntimeError("gateway gone")))
    with caplog.at_level(logging.ERROR):
        coordinator.request("SIGTERM")
        await coordinator.task  # type: ignore[misc]
    assert "closing after SIGTERM failed" in caplog.text


async def test_install_handles_a_real_signal_and_uninstall_restores() -> None:
    closed = asyncio.Event()

    async def close() -> None:
        closed.set()

    coordinator = ShutdownCoordinator(close)
    coordinator.install(asyncio.get_running_loop(), [signal.SIGUSR1])
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(closed.wait(), 5)
        assert coordinator.signal_name == "SIGUSR1"
    finally:
        coordinator.uninstall()
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.default_int_handler)


class OfflineCapBot(CapBot):
    """CapBot with everything real except the Discord login: `start` runs setup_hook and idles until closed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self.tree.sync = AsyncMock(return_value=[])  # type: ignore[method-assign]

    async def start(self, token: str, *, reconnect: bool = True) -> None:
        await self.setup_hook()
        self.ready.set()
        await self.closed.wait()  # as discord.py's connect loop ends once the client closes

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self.closed.set()


async def test_sigterm_ends_every_call_then_closes_the_bot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cap.db'}"
    settings = load_settings(_env_file=None, database_url=url, openai_api_key="sk-test", discord_token="x.y.z")
    bot = OfflineCapBot(settings, extensions=("cogs.voice",))
    serving = asyncio.create_task(_serve(bot, "x.y.z"))
    await asyncio.wait_for(bot.ready.wait(), 5)
    cog = bot.get_cog("Voice")
    assert cog is not None
    calls: list[VoiceCall] = []
    for guild_id in (5, 6):
        channel = make_channel()
        channel.guild.id = guild_id
        call = VoiceCall(
            channel,
            settings=settings,
            database=bot.database,
            registry_factory=registry_factory,
            session_factory=FakeSession,
            on_end=cog._call_ended,
        )
        await call.start()
        cog.calls[guild_id] = call
        calls.append(call)
        call.session.on_transcript(TranscriptEntry(role="caller", text=f"Hi from {guild_id}", item_id="a"))  # type: ignore[union-attr]
    voices = [call.voice for call in calls]
    sessions = [call.session for call in calls]
    conversations = [call.recorder.conversation_id for call in calls]  # type: ignore[union-attr]

    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(serving, 10) == 0

    assert cog.calls == {}
    for call, voice, session in zip(calls, voices, sessions, strict=True):
        voice.disconnect.assert_awaited_once_with(force=True)  # type: ignore[union-attr]
        assert session.closed  # type: ignore[union-attr]
        assert call.channel.send.await_args_list[-1].args[0] == SHUTDOWN_REASON  # type: ignore[attr-defined]
    assert bot.is_closed() and bot.database._engine is None
    database = Database(url).open()
    try:
        with database.session() as session:
            for guild_id, conversation_id in zip((5, 6), conversations, strict=True):
                turns = conversation_turns(session, guild_id, conversation_id)  # type: ignore[arg-type]
                assert [turn.text for turn in turns] == [f"Hi from {guild_id}"]
    finally:
        database.close()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone with the bot
