"""Prometheus metrics for operators: one registry per process (each shard process is scraped on its own port).

`CapMetrics` owns the registry and the metric objects; `CallMetrics` folds one call's running figures
(session metrics, voice receive counters, tool results) into them as deltas, so a call's numbers show up
while it runs, not only when it ends. Served by prometheus_client's own HTTP server when METRICS_PORT is set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BARGE_IN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0)
# Call end reasons as labels: a fixed set, so a free-text reason cannot grow the series without bound.
END_REASONS = frozenset({"left", "alone", "idle", "disconnected", "budget", "shutdown"})
# Tool error codes that are the registry's own (the rest are a tool refusing: "refused").
_TOOL_OUTCOMES = {"timeout": "timeout", "tool_failed": "error", "invalid_arguments": "invalid",
                  "invalid_json": "invalid", "unknown_tool": "invalid"}
_DAVE_OK = frozenset({"dave_passthrough", "dave_decrypted"})


def end_reason_label(reason: str | None) -> str:
    if reason in END_REASONS:
        return reason  # type: ignore[return-value]
    if reason and reason.startswith("The voice AI stopped"):
        return "realtime_fatal"
    return "other"


def tool_outcome(result: Mapping[str, Any]) -> str:
    if result.get("ok", True):
        return "ok"
    code = str((result.get("error") or {}).get("code") or "")
    return _TOOL_OUTCOMES.get(code, "refused")


class CapMetrics:
    """Every metric Cap exports, in a registry of its own (never the process-global default one)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.active_calls = Gauge("cap_active_calls", "Calls in progress in this process", registry=registry)
        self.calls_started = Counter("cap_calls_started", "Calls started", registry=registry)
        self.calls_ended = Counter("cap_calls_ended", "Calls ended, by reason", ["reason"], registry=registry)
        self.realtime_reconnects = Counter("cap_realtime_reconnects", "Realtime reconnects", registry=registry)
        self.realtime_fatal_errors = Counter(
            "cap_realtime_fatal_errors", "Realtime sessions ended by a fatal error", registry=registry
        )
        self.barge_ins = Counter("cap_barge_ins", "Callers interrupting Cap", registry=registry)
        self.reply_latency = Histogram(
            "cap_reply_latency_seconds", "End of the caller's speech to Cap's first audio",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.barge_in_latency = Histogram(
            "cap_barge_in_latency_seconds", "Cap's local pause to the server confirming the interruption",
            buckets=BARGE_IN_BUCKETS, registry=registry,
        )
        self.tool_calls = Counter("cap_tool_calls", "Tool calls by tool and outcome", ["tool", "outcome"],
                                  registry=registry)
        self.voice_packets = Counter("cap_voice_packets", "Voice RTP packets received", registry=registry)
        self.voice_concealed = Counter(
            "cap_voice_concealed_frames", "Voice frames concealed (FEC or PLC) for lost packets", registry=registry
        )
        self.dave_failures = Counter(
            "cap_dave_failures", "DAVE end-to-end encrypted frames that could not be opened", registry=registry
        )
        self.tokens = Counter("cap_tokens", "Tokens used, by kind", ["kind"], registry=registry)
        self.cost = Counter("cap_estimated_cost_usd", "Estimated spending (USD)", registry=registry)

    def serve(self, port: int, host: str) -> Any:
        """Start the HTTP endpoint (GET /metrics) in a daemon thread; returns the server (server_port, shutdown)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, server.server_port)
        return server


class CallMetrics:
    """One call's contribution: counts what changed since the last `sync`."""

    def __init__(self, metrics: CapMetrics) -> None:
        self.metrics = metrics
        self._seen: dict[str, float] = {}
        self._samples_seen = {"reply": 0, "barge_in": 0}

    def started(self) -> None:
        self.metrics.calls_started.inc()
        self.metrics.active_calls.inc()

    def ended(self, reason: str | None) -> None:
        self.metrics.active_calls.dec()
        self.metrics.calls_ended.labels(end_reason_label(reason)).inc()
        if end_reason_label(reason) == "realtime_fatal":
            self.metrics.realtime_fatal_errors.inc()

    def tool_result(self, name: str, result: Mapping[str, Any]) -> None:
        self.metrics.tool_calls.labels(name, tool_outcome(result)).inc()

    def sync(self, session_metrics: Any, voice_stats: Mapping[str, int]) -> None:
        """Fold in the session's and the voice receiver's running totals (called every second and at the end)."""
        m = self.metrics
        summary = session_metrics.summary()
        self._add(m.realtime_reconnects, "reconnects", summary.get("reconnects", 0))
        self._add(m.barge_ins, "barge_ins", summary.get("barge_ins", 0))
        for kind, count in (summary.get("tokens") or {}).items():
            self._add(m.tokens.labels(kind), f"tokens_{kind}", count)
        self._add(m.tokens.labels("transcription"), "tokens_transcription", summary.get("transcription_tokens", 0))
        self._add(m.cost, "cost", session_metrics.cost_usd)
        self._add(m.voice_packets, "packets", voice_stats.get("packets", 0))
        self._add(m.voice_concealed, "concealed", voice_stats.get("fec", 0) + voice_stats.get("plc", 0))
        dave_failures = sum(n for name, n in voice_stats.items() if name.startswith("dave_") and name not in _DAVE_OK)
        self._add(m.dave_failures, "dave", dave_failures)
        for key, samples, histogram in (("reply", session_metrics.reply_latency_ms, m.reply_latency),
                                        ("barge_in", session_metrics.barge_in_latency_ms, m.barge_in_latency)):
            for ms in samples.since(self._samples_seen[key]):
                histogram.observe(ms / 1000)
            self._samples_seen[key] = samples.appended

    def _add(self, counter: Any, key: str, total: float) -> None:
        """Counters only go up: a total that went down (a new session's figures) counts from there."""
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._seen[key] = total
