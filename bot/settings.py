"""Cap's settings, read from the environment and `.env`; a bad value is a one-line error naming it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from bot.policy import WEEKDAYS, LenderPolicy, PolicyError, load_policy
from realtime.persona import persona_for

Voice = Literal["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]

__all__ = ["WEEKDAYS", "Settings", "SettingsError", "load_settings"]


class SettingsError(Exception):
    """A missing or malformed setting; the message is one line and names the setting."""


class Settings(BaseSettings):
    """Every setting Cap reads; names are the environment variables in upper case."""

    # env_ignore_empty: `NAME=` (as .env.example writes every optional setting) means "the default", also for
    # settings read as JSON (SHARD_IDS), which would otherwise fail to parse.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    # OpenAI Realtime (GA interface only).
    openai_api_key: SecretStr | None = None
    realtime_url: str = "wss://api.openai.com/v1/realtime"
    realtime_model: str = "gpt-realtime-2.1"
    realtime_voice: Voice = "alloy"
    # gpt-4o-mini-transcribe shuts down 2027-02-26 (openai SDK 3.57 notes); gpt-transcribe is current.
    transcription_model: str = "gpt-transcribe"
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0)
    vad_prefix_padding_ms: int = Field(300, ge=0, le=5000)
    vad_silence_duration_ms: int = Field(500, ge=0, le=10000)
    # semantic_vad lets callers pause mid-number (a model judges whether they finished; eagerness low waits most).
    turn_detection: Literal["server_vad", "semantic_vad"] = "server_vad"
    vad_eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    # Whom Cap answers: every turn (always), only when addressed once two or more people are in the channel
    # (adaptive), or only when addressed (name).
    reply_mode: Literal["always", "adaptive", "name"] = "adaptive"
    instructions_file: Path | None = None
    tool_timeout_seconds: float = Field(10.0, gt=0)
    # Sessions are capped at 60 minutes by the service; recycle at a turn boundary before that.
    session_recycle_minutes: float = Field(50.0, gt=0, le=60)
    # Connection failures in a row (backoff with jitter between them) before a session gives up.
    realtime_connect_attempts: int = Field(6, ge=1, le=50)
    # Replies in a row that only call tools, since the caller last spoke; past it the model must speak.
    max_tool_rounds: int = Field(5, ge=1, le=50)
    # USD per million tokens, for the per-session cost estimate.
    price_audio_input_per_mtok: float = Field(32.0, ge=0)
    price_audio_output_per_mtok: float = Field(64.0, ge=0)
    price_text_input_per_mtok: float = Field(4.0, ge=0)
    price_text_output_per_mtok: float = Field(16.0, ge=0)
    price_cached_input_per_mtok: float = Field(0.4, ge=0)
    # The transcription model's own prices (audio in, text out), USD per million tokens.
    price_transcription_input_per_mtok: float = Field(6.0, ge=0)
    price_transcription_output_per_mtok: float = Field(10.0, ge=0)
    # Prometheus metrics endpoint (GET /metrics) of this process; None: off. Each shard process needs its own port.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # Outgoing webhooks (lead saved/scored, call booked/ended): HMAC-SHA256-signed JSON POSTed to this URL.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # Each guild's monthly spending limit (USD, by the estimate above); None: no limit.
    monthly_budget_usd: float | None = Field(None, gt=0)

    # Storage.
    database_url: str = "sqlite:///data/cap.db"
    # Apply pending schema migrations at start-up; false: refuse to start until `cap-bot db upgrade` has run.
    auto_migrate: bool = True

    # search_knowledge_base's Markdown folder and research_market's CSV; None: the data shipped in bot/data/.
    knowledge_base_dir: Path | None = None
    market_data_csv: Path | None = None

    # Lender business rules for the tools (schedule_call, analyze_deal, save_lead, /leads).
    business_timezone: str = "America/New_York"
    business_hours_start: int = Field(9, ge=0, le=23)
    business_hours_end: int = Field(17, ge=1, le=24)
    # None: the lender policy's business days.
    business_days: str | None = None
    call_duration_minutes: int = Field(30, ge=5, le=240)
    # The lender's programs, limits, pricing, states and holidays (TOML); None: the demo lender's shipped
    # bot/data/lender_policy.toml. Read and validated at start-up.
    lender_policy_file: Path | None = None
    phone_default_region: str = "US"
    leads_role_id: int | None = None
    # The lender's staff: a text channel (id) for notices of new qualified leads and bookings, and a role (id)
    # to mention in them; each is used only in the guild it belongs to.
    staff_channel_id: int | None = None
    staff_role_id: int | None = None

    # Discord.
    discord_token: SecretStr | None = None
    dev_guild_id: int | None = None
    # The running bot touches this file while its gateway connection is alive (the Docker image sets it);
    # `cap-bot doctor --heartbeat` checks its age.
    heartbeat_file: Path | None = None
    # Sharding for large bots: SHARD_IDS ("0,1" or [0,1]) are the shards this process runs; needs SHARD_COUNT.
    shard_count: int | None = Field(None, ge=1)
    shard_ids: list[int] | None = None
    # Voice: other bots in the channel are not heard; who said what is posted in the channel's text chat.
    ignore_bots: bool = True
    post_transcripts: bool = True
    # Privacy: where posted transcripts go (the staff channel, or the voice channel's own chat, readable by
    # everyone there), .ics invites by direct message to the caller, and how long transcripts are kept.
    transcript_destination: Literal["staff", "voice_chat"] = "staff"
    invite_by_dm: bool = True
    transcript_retention_days: int = Field(90, ge=0)  # 0 keeps them forever
    # Cap always says (and posts) that it is an AI assistant and the call is transcribed; with this, each
    # participant must also say yes before anything they say is transcribed or saved.
    require_spoken_consent: bool = False
    alone_timeout_seconds: float = Field(60.0, gt=0)
    idle_timeout_seconds: float = Field(900.0, gt=0)

    @field_validator("realtime_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        try:
            parse_uri(value)
        except (InvalidURI, ValueError) as exc:  # no host, a port over 65535, a broken IPv6 address ...
            raise ValueError(f"not a usable WebSocket URL ({exc})") from None
        return value.rstrip("/")

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _http_url(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// on a private network)")
        return value

    @field_validator("openai_api_key", "discord_token", "webhook_secret")
    @classmethod
    def _printable_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # A stray newline or control character would break the HTTP header, and error texts could echo it.
        if value is not None and not value.get_secret_value().strip().isprintable():
            raise ValueError("contains a line break or control character (check the copy and paste)")
        return value

    @field_validator("business_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone: {value!r}") from None
        return value

    @field_validator("business_hours_end")
    @classmethod
    def _end_after_start(cls, value: int, info: ValidationInfo) -> int:
        start = info.data.get("business_hours_start")
        if start is not None and value <= start:
            raise ValueError("must be later than BUSINESS_HOURS_START")
        return value

    @field_validator("business_days")
    @classmethod
    def _weekday_names(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        days = [day.strip().lower()[:3] for day in value.split(",") if day.strip()]
        unknown = [day for day in days if day not in WEEKDAYS]
        if not days or unknown:
            raise ValueError(f"comma-separated weekdays like mon,tue,wed expected, got {value!r}")
        return ",".join(days)

    @field_validator("lender_policy_file", mode="before")
    @classmethod
    def _blank_policy_is_shipped(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("lender_policy_file")
    @classmethod
    def _valid_policy(cls, value: Path | None) -> Path | None:
        try:
            load_policy(value)  # cached: the tools get the same validated object
        except PolicyError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def policy(self) -> LenderPolicy:
        """The lender's rules (validated when the settings were loaded)."""
        return load_policy(self.lender_policy_file)

    @field_validator(
        "leads_role_id", "staff_channel_id", "staff_role_id", "dev_guild_id", "shard_count", "shard_ids",
        "monthly_budget_usd", "metrics_port", mode="before"
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        # pydantic-settings reads a list from the environment as JSON first, so SHARD_IDS=0 arrives as 0.
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if isinstance(value, str) and value.strip() and not value.strip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("phone_default_region")
    @classmethod
    def _region_code(cls, value: str) -> str:
        if len(value.strip()) != 2 or not value.strip().isalpha():
            raise ValueError("a two-letter region code like US expected")
        return value.strip().upper()

    @property
    def business_weekdays(self) -> frozenset[int]:
        """BUSINESS_DAYS (else the policy's business days) as datetime.weekday() numbers (Monday is 0)."""
        if self.business_days is None:
            return self.policy.schedule.weekdays
        return frozenset(WEEKDAYS.index(day) for day in self.business_days.split(","))

    @field_validator("instructions_file", "market_data_csv")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        if value is not None:
            try:
                value.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot be read as UTF-8 text: {value} ({type(exc).__name__})") from None
        return value

    @field_validator("knowledge_base_dir", "market_data_csv", "instructions_file", "heartbeat_file", mode="before")
    @classmethod
    def _blank_path_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("knowledge_base_dir")
    @classmethod
    def _existing_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"no such folder: {value}")
        return value

    @property
    def instructions(self) -> str:
        """The system prompt: the file's text when INSTRUCTIONS_FILE is set, else the seed's persona; `{lender}`
        in either is the lender policy's name."""
        if self.instructions_file is None:
            return persona_for(self.policy.lender)
        return persona_for(self.policy.lender, self.instructions_file.read_text(encoding="utf-8").strip())

    def require_openai_key(self) -> str:
        if self.openai_api_key is None or not self.openai_api_key.get_secret_value().strip():
            raise SettingsError("OPENAI_API_KEY: missing (set it in the environment or .env)")
        return self.openai_api_key.get_secret_value().strip()

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> Settings:
        # WEBHOOK_SECRET is required once WEBHOOK_URL is set: a receiver cannot trust an unsigned webhook.
        secret = self.webhook_secret.get_secret_value().strip() if self.webhook_secret else ""
        if self.webhook_url and len(secret) < 16:
            raise ValueError("WEBHOOK_SECRET: set a random secret of at least 16 characters with WEBHOOK_URL")
        return self

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
        raise SettingsError(f"{name}: {first['msg'].removeprefix('Value error, ')}") from None
    except PydanticSettingsError as exc:  # a JSON setting (SHARD_IDS) that does not parse
        field = re.search(r'field "(\w+)"', str(exc))
        raise SettingsError(f"{field[1].upper() if field else 'settings'}: not valid JSON") from None
    except UnicodeDecodeError:
        raise SettingsError(".env: not UTF-8 text") from None
