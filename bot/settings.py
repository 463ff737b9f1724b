"""Cap's settings, read from the environment and `.env`; a bad value is a one-line error naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from realtime.persona import DEFAULT_INSTRUCTIONS

Voice = Literal["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]


class SettingsError(Exception):
    """A missing or malformed setting; the message is one line and names the setting."""


class Settings(BaseSettings):
    """Every setting Cap reads; names are the environment variables in upper case."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # OpenAI Realtime (GA interface only).
    openai_api_key: SecretStr | None = None
    realtime_url: str = "wss://api.openai.com/v1/realtime"
    realtime_model: str = "gpt-realtime-2.1"
    realtime_voice: Voice = "alloy"
    transcription_model: str = "gpt-4o-mini-transcribe"
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0)
    vad_prefix_padding_ms: int = Field(300, ge=0, le=5000)
    vad_silence_duration_ms: int = Field(500, ge=0, le=10000)
    instructions_file: Path | None = None
    tool_timeout_seconds: float = Field(10.0, gt=0)
    # Sessions are capped at 60 minutes by the service; recycle at a turn boundary before that.
    session_recycle_minutes: float = Field(50.0, gt=0, le=60)
    # USD per million tokens, for the per-session cost estimate.
    price_audio_input_per_mtok: float = Field(32.0, ge=0)
    price_audio_output_per_mtok: float = Field(64.0, ge=0)
    price_text_input_per_mtok: float = Field(4.0, ge=0)
    price_text_output_per_mtok: float = Field(16.0, ge=0)
    price_cached_input_per_mtok: float = Field(0.4, ge=0)

    # Storage.
    database_url: str = "sqlite:///data/cap.db"

    # Discord.
    discord_token: SecretStr | None = None
    dev_guild_id: int | None = None

    @field_validator("realtime_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value.rstrip("/")

    @field_validator("instructions_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def instructions(self) -> str:
        """The system prompt: the file's text when INSTRUCTIONS_FILE is set, else the seed's persona."""
        if self.instructions_file is None:
            return DEFAULT_INSTRUCTIONS
        return self.instructions_file.read_text(encoding="utf-8").strip()

    def require_openai_key(self) -> str:
        if self.openai_api_key is None or not self.openai_api_key.get_secret_value().strip():
            raise SettingsError("OPENAI_API_KEY: missing (set it in the environment or .env)")
        return self.openai_api_key.get_secret_value().strip()

    def require_discord_token(self) -> str:
        if self.discord_token is None or not self.discord_token.get_secret_value().strip():
            raise SettingsError("DISCORD_TOKEN: missing (set it in the environment or .env)")
        return self.discord_token.get_secret_value().strip()


def load_settings(**overrides: object) -> Settings:
    """Load settings, turning pydantic's report into one line per setting that names it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise SettingsError(f"{name}: {first['msg']}") from None
