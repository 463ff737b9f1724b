"""Per-session figures: turns, reply latency, barge-ins, tokens and an estimated cost."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Token kinds priced separately; keys of SessionConfig.prices_per_mtok (USD per million tokens).
PRICE_KEYS = ("audio_input", "audio_output", "text_input", "text_output", "cached_input")


class Samples(deque[float]):
    """Recent samples, bounded, that also count every sample ever added: a reader polling it (the metrics
    endpoint) takes just the ones added since its last look."""

    def __init__(self, maxlen: int = 500) -> None:
        super().__init__(maxlen=maxlen)
        self.appended = 0

    def append(self, value: float) -> None:
        super().append(value)
        self.appended += 1

    def since(self, seen: int) -> list[float]:
        """The samples added after the first `seen` (those still held)."""
        new = min(self.appended - seen, len(self))
        return list(self)[len(self) - new:] if new > 0 else []


@dataclass
class SessionMetrics:
    turns: int = 0
    responses: int = 0
    barge_ins: int = 0
    paused_then_resumed: int = 0
    reconnects: int = 0
    tool_calls: int = 0
    failed_responses: int = 0  # replies the service ended failed or incomplete
    addressed_turns: int = 0  # several people here: turns that named Cap (or answered it, or /cap ask)
    unaddressed_turns: int = 0  # several people here: turns Cap only listened to
    tool_loops_stopped: int = 0  # times the model was made to speak after max_tool_rounds tool-only replies
    retried_responses: int = 0  # failed replies (server_error) asked for once more
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRICE_KEYS, 0))
    # Recent reply latencies (speech_stopped -> first audio delta), bounded so hours stay flat.
    reply_latency_ms: Samples = field(default_factory=Samples)
    # Gated answers: from the caller's transcript (what the gate waits for) to Cap's first audio.
    gated_reply_ms: Samples = field(default_factory=Samples)
    # Barge-in: from Cap's local pause (the caller's speech onset) to the server confirming the turn.
    barge_in_latency_ms: Samples = field(default_factory=Samples)
    cost_usd: float = 0.0
    # The transcription model (input_audio_transcription) is billed apart, at its own prices.
    transcription_tokens: int = 0
    transcription_seconds: float = 0.0

    def add_usage(self, usage: dict[str, Any], prices_per_mtok: dict[str, float]) -> None:
        """Fold a response.done usage block into the totals and the cost estimate."""
        inp = usage.get("input_token_details") or {}
        out = usage.get("output_token_details") or {}
        counts = {
            "audio_input": int(inp.get("audio_tokens") or 0),
            "text_input": int(inp.get("text_tokens") or 0),
            "audio_output": int(out.get("audio_tokens") or 0),
            "text_output": int(out.get("text_tokens") or 0),
            "cached_input": int(inp.get("cached_tokens") or 0),
        }
        for key, count in counts.items():
            self.tokens[key] += count
        # Cached tokens are a subset of the input tokens, billed at the cached price only. The service says
        # how many of them are text and how many audio (audio costs ~8x text); split in proportion only when
        # it does not.
        details = inp.get("cached_tokens_details") or {}
        cached_text, cached_audio = int(details.get("text_tokens") or 0), int(details.get("audio_tokens") or 0)
        total_in = counts["audio_input"] + counts["text_input"]
        if counts["cached_input"] and not (cached_text or cached_audio) and total_in:
            cached_audio = round(counts["cached_input"] * counts["audio_input"] / total_in)
            cached_text = counts["cached_input"] - cached_audio
        billable = dict(counts,
                        audio_input=max(0, counts["audio_input"] - cached_audio),
                        text_input=max(0, counts["text_input"] - cached_text))
        for key, count in billable.items():
            self.cost_usd += count * prices_per_mtok.get(key, 0.0) / 1_000_000

    def add_transcription_usage(self, usage: dict[str, Any], prices_per_mtok: dict[str, float]) -> None:
        """Fold a transcription.completed usage block: tokens (priced as transcription_input/_output) or, for
        models billed by duration, seconds of audio (counted, not priced)."""
        if usage.get("type") == "duration":
            self.transcription_seconds += float(usage.get("seconds") or 0.0)
            return
        input_tokens, output_tokens = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        self.transcription_tokens += input_tokens + output_tokens
        self.cost_usd += (input_tokens * prices_per_mtok.get("transcription_input", 0.0)
                          + output_tokens * prices_per_mtok.get("transcription_output", 0.0)) / 1_000_000

    @property
    def median_reply_latency_ms(self) -> float | None:
        return statistics.median(self.reply_latency_ms) if self.reply_latency_ms else None

    def summary(self) -> dict[str, Any]:
        latency = self.median_reply_latency_ms
        return {
            "turns": self.turns,
            "responses": self.responses,
            "barge_ins": self.barge_ins,
            "paused_then_resumed": self.paused_then_resumed,
            "reconnects": self.reconnects,
            "tool_calls": self.tool_calls,
            "failed_responses": self.failed_responses,
            "addressed_turns": self.addressed_turns,
            "unaddressed_turns": self.unaddressed_turns,
            "tool_loops_stopped": self.tool_loops_stopped,
            "retried_responses": self.retried_responses,
            "median_reply_latency_ms": round(latency) if latency is not None else None,
            "tokens": dict(self.tokens),
            "transcription_tokens": self.transcription_tokens,
            "transcription_seconds": round(self.transcription_seconds, 1),
            "total_tokens": sum(self.tokens.values()) - self.tokens["cached_input"] + self.transcription_tokens,
            "estimated_cost_usd": round(self.cost_usd, 4),
        }
