"""The engine against an adversarial Realtime service (issue 13): refused handshakes with Retry-After and error
bodies, half-dead sockets, tool-call storms, drops right after a function call, failed replies."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from realtime.client import retry_after_seconds
from realtime.engine import VoiceSession
from realtime.errors import RealtimeFatalError
from realtime.protocol import SessionConfig
from realtime.tools import ToolRegistry
from tests.realtime_fake import FakeRealtimeServer

QUOTA_BODY = json.dumps({"error": {
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}})


def config_for(server: FakeRealtimeServer, **overrides) -> SessionConfig:
    base = SessionConfig(api_key="sk-test", url=server.url, instructions="You are Cap.",
                         reconnect_base_seconds=0.05, connect_attempts=3)
    return dataclasses.replace(base, **overrides)


# ----- 4. handshake errors -----

async def test_a_429_handshake_waits_as_long_as_retry_after_says(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with FakeRealtimeServer(reject_connections=1, reject_status=429, reject_headers={"Retry-After": "1"},
                                  reject_body='{"error": {"type": "rate_limit_exceeded", "code": '
                                              '"rate_limit_exceeded", "message": "Slow down."}}') as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        await session.start()
        await session.aclose()
    first, second = server.handshake_times
    assert second - first >= 0.9, "the server asked for 1 s; the backoff alone would retry within 0.05 s"
    assert "HTTP 429" in caplog.text and "Slow down." in caplog.text and "retrying in 1.0 s" in caplog.text


async def test_a_long_retry_after_is_capped() -> None:

    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("3600") == 30.0  # capped: a call cannot wait an hour
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert retry_after_seconds("-4") is None


async def test_a_429_whose_body_says_insufficient_quota_is_fatal_with_its_own_words() -> None:
    async with FakeRealtimeServer(reject_connections=5, reject_status=429, reject_body=QUOTA_BODY) as server:
        session = VoiceSession(config_for(server), ToolRegistry())
        with pytest.raises(RealtimeFatalError) as caught:
            await session.start()
        await session.aclose()
    assert str(caught.value) == "the OpenAI account has no quota left (insufficient_quota)"
    assert server.rejected_handshakes == 1, "no retries: more attempts only burn time"
