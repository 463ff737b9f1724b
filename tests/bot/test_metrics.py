"""The Prometheus endpoint, scraped over real HTTP on 127.0.0.1 while a call runs and after it ends."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Iterator
from unittest.mock import AsyncMock

import pytest
from discord.ext import commands
from prometheus_client.parser import text_string_to_metric_families

import bot.voice.call as call_module
from bot.discord_bot import CapBot
from bot.metrics import CapMetrics, end_reason_label, tool_outcome
from bot.settings import load_settings
from bot.storage.database import Database
from bot.voice.call import VoiceCall
from tests.bot.voice.test_call import ALICE, FakeSession, drain_posts, make_channel, registry_factory


@pytest.fixture
def database() -> Iterator[Database]:
    db = Database("sqlite://").open()
    yield db
    db.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_call_is_seen_on_the_endpoint_while_it_runs_and_after_it_ends(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_module, "WATCH_INTERVAL_SECONDS", 0.01)
    metrics = CapMetrics()
    server = metrics.serve(0, "127.0.0.1")
    port = server.server_port
    try:
        channel = make_channel()
        channel.connect.return_value.stats.return_value = {"packets": 1500, "fec": 3, "plc": 4,
                                                           "dave_decrypted": 1400, "dave_missing_key": 2}
        call = VoiceCall(channel, settings=load_settings(_env_file=None, openai_api_key="sk-test"),
                         database=database, registry_factory=registry_factory, session_factory=FakeSession,
                         metrics=metrics)
        await call.start()
        session = call.session
        assert isinstance(session, FakeSession)
        session.metrics.barge_ins, session.metrics.reconnects = 2, 1
        for ms in (400.0, 900.0, 2500.0):
            session.metrics.reply_latency_ms.append(ms)
        session.metrics.barge_in_latency_ms.append(150.0)
        session.metrics.add_usage({"input_token_details": {"audio_tokens": 1000},
                                   "output_token_details": {"audio_tokens": 500}},
                                  {"audio_input": 32.0, "audio_output": 64.0})
        await session.registry.call("schedule_call", {"when": "Tue"}, session.context_factory(frozenset({ALICE})))
        await session.registry.call("schedule_call", {}, session.context_factory(frozenset({ALICE})))  # invalid
        live: dict = {}
        for _ in range(500):
            live = await asyncio.to_thread(scrape, port)
            if live.get(("cap_barge_ins_total", ())) == 2:
                break
            await asyncio.sleep(0.01)
        assert live[("cap_active_calls", ())] == 1 and live[("cap_calls_started_total", ())] == 1
        assert live[("cap_barge_ins_total", ())] == 2 and live[("cap_realtime_reconnects_total", ())] == 1
        assert live[("cap_reply_latency_seconds_count", ())] == 3
        assert live[("cap_reply_latency_seconds_bucket", (("le", "1.0"),))] == 2
        assert live[("cap_barge_in_latency_seconds_count", ())] == 1
        assert live[("cap_tool_calls_total", (("outcome", "ok"), ("tool", "schedule_call")))] == 1
        assert live[("cap_tool_calls_total", (("outcome", "invalid"), ("tool", "schedule_call")))] == 1
        assert live[("cap_voice_packets_total", ())] == 1500 and live[("cap_voice_concealed_frames_total", ())] == 7
        assert live[("cap_dave_failures_total", ())] == 2
        assert live[("cap_tokens_total", (("kind", "audio_input"),))] == 1000
        assert live[("cap_estimated_cost_usd_total", ())] == pytest.approx(0.064)
        session.metrics.barge_ins = 3
        await drain_posts(call)
        await call.stop("alone")
        after = await asyncio.to_thread(scrape, port)
        assert after[("cap_active_calls", ())] == 0
        assert after[("cap_calls_ended_total", (("reason", "alone"),))] == 1
        assert after[("cap_barge_ins_total", ())] == 3  # the last figures are folded in at the end
    finally:
        server.shutdown()
        server.server_close()


def test_each_process_has_its_own_registry() -> None:
    one, two = CapMetrics(), CapMetrics()
    one.calls_started.inc()
    assert one.registry is not two.registry
    assert two.registry.get_sample_value("cap_calls_started_total") == 0


def test_labels_stay_a_fixed_set() -> None:
    assert end_reason_label("alone") == "alone" and end_reason_label("The voice AI stopped: x") == "realtime_fatal"
    assert end_reason_label("anything a user typed") == "other"
    assert tool_outcome({"ok": True}) == "ok" and tool_outcome({"ok": False, "error": {"code": "timeout"}}) == "timeout"
    assert tool_outcome({"ok": False, "error": {"code": "invalid_email"}}) == "refused"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_the_bot_serves_metrics_only_when_a_port_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands.AutoShardedBot, "close", AsyncMock())
    off = CapBot(load_settings(_env_file=None, database_url="sqlite://"))
    off.tree.sync = AsyncMock(return_value=[])  # type: ignore[method-assign]
    await off.setup_hook()
    assert off.metrics_server is None
    await off.close()
    port = free_port()
    bot = CapBot(load_settings(_env_file=None, database_url="sqlite://", metrics_port=port))
    bot.tree.sync = AsyncMock(return_value=[])  # type: ignore[method-assign]
    await bot.setup_hook()
    try:
        assert ("cap_active_calls", ()) in await asyncio.to_thread(scrape, port)
    finally:
        await bot.close()
