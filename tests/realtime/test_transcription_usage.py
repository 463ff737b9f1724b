"""The transcription model's usage (billed apart from the Realtime model's) is counted and priced."""

from __future__ import annotations

import pytest

from realtime.conversation import Conversation
from realtime.metrics import SessionMetrics
from realtime.playback import PlaybackBuffer
from realtime.protocol import SessionConfig


def transcript_event(item_id: str, usage: dict) -> dict:
    return {"type": "conversation.item.input_audio_transcription.completed", "event_id": "e", "item_id": item_id,
            "content_index": 0, "transcript": "my number is five five five", "usage": usage}


def test_transcription_tokens_and_seconds_are_counted_and_priced() -> None:
    prices = {"audio_input": 32.0, "transcription_input": 6.0, "transcription_output": 10.0}
    clock = lambda: 0.0  # noqa: E731
    conv = Conversation(SessionConfig(api_key="k", prices_per_mtok=prices), [], PlaybackBuffer(clock),
                        SessionMetrics(), clock)
    conv.handle_event(transcript_event("a", {"type": "tokens", "input_tokens": 300, "output_tokens": 12,
                                             "total_tokens": 312, "input_token_details": {"audio_tokens": 300}}))
    conv.handle_event(transcript_event("b", {"type": "duration", "seconds": 4.5}))
    summary = conv.metrics.summary()
    assert summary["transcription_tokens"] == 312 and summary["transcription_seconds"] == 4.5
    assert summary["estimated_cost_usd"] == pytest.approx(300 * 6e-6 + 12 * 10e-6, abs=1e-4)
    assert summary["total_tokens"] == 312
