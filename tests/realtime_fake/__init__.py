"""A fake OpenAI Realtime (GA) service for engine tests, and strict schema checks of the wire events."""

from .schema import SchemaViolation, validate_client_event, validate_server_event
from .server import SAMPLE_RATE, ConnectionRecord, FakeRealtimeServer, pcm_ms, tone_pcm

__all__ = [
    "SAMPLE_RATE",
    "ConnectionRecord",
    "FakeRealtimeServer",
    "SchemaViolation",
    "pcm_ms",
    "tone_pcm",
    "validate_client_event",
    "validate_server_event",
]
