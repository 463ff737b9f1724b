"""Turns Cap's settings into a Realtime session configuration (one place for both Discord and console)."""

from __future__ import annotations

from bot.settings import Settings
from realtime.protocol import SessionConfig


def make_session_config(settings: Settings, *, listen_only: bool = False) -> SessionConfig:
    """`listen_only`: Cap never speaks in this call (`/cap join mode:listen`)."""
    return SessionConfig(
        api_key=settings.require_openai_key(),
        url=settings.realtime_url,
        model=settings.realtime_model,
        voice=settings.realtime_voice,
        instructions=settings.instructions,
        transcription_model=settings.transcription_model,
        vad_threshold=settings.vad_threshold,
        vad_prefix_padding_ms=settings.vad_prefix_padding_ms,
        vad_silence_duration_ms=settings.vad_silence_duration_ms,
        turn_detection=settings.turn_detection,
        vad_eagerness=settings.vad_eagerness,
        reply_mode=settings.reply_mode,
        listen_only=listen_only,
        recycle_after_seconds=settings.session_recycle_minutes * 60,
        connect_attempts=settings.realtime_connect_attempts,
        max_tool_rounds=settings.max_tool_rounds,
        prices_per_mtok={
            "audio_input": settings.price_audio_input_per_mtok,
            "audio_output": settings.price_audio_output_per_mtok,
            "text_input": settings.price_text_input_per_mtok,
            "text_output": settings.price_text_output_per_mtok,
            "cached_input": settings.price_cached_input_per_mtok,
            "transcription_input": settings.price_transcription_input_per_mtok,
            "transcription_output": settings.price_transcription_output_per_mtok,
        },
    )
