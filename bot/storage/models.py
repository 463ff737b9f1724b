"""Cap's tables. Every row carries guild_id (the tenant); no query may cross guilds.

Conventions, kept portable between SQLite and PostgreSQL (and friendly to Alembic):
explicit table names; Discord snowflakes as BIGINT; our own ids as INTEGER; money as float (USD);
ratios as decimals (0.75, not 75); every timestamp a timezone-aware UTC datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

LEAD_STATUSES = ("new", "qualified", "nurture", "scheduled", "closed", "lost")
TIERS = ("A", "B", "C", "D")
# Row ids are INTEGER: on PostgreSQL an int4, so a larger id from a caller is an error, not a lookup.
MAX_ROW_ID = 2**31 - 1


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns them aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _guild() -> Any:
    return Field(sa_type=BigInteger, index=True)


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime)


class Lead(SQLModel, table=True):
    """A prospective borrower and what they told Cap."""

    __tablename__ = "lead"
    __table_args__ = (
        # NULL user ids (console and CLI leads) never collide: both databases treat NULLs as distinct.
        UniqueConstraint("guild_id", "discord_user_id", name="uq_lead_guild_user"),
        Index("ix_lead_guild_email", "guild_id", "email"),
        Index("ix_lead_guild_phone", "guild_id", "phone"),
        Index("ix_lead_guild_status", "guild_id", "status"),
        Index("ix_lead_guild_tier", "guild_id", "tier"),
    )

    id: int | None = Field(default=None, primary_key=True)
    guild_id: int = _guild()
    discord_user_id: int | None = Field(default=None, sa_type=BigInteger)
    full_name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=32)  # E.164
    email: str | None = Field(default=None, max_length=320)  # normalised, lower case
    property_address: str | None = Field(default=None, max_length=500)
    property_type: str | None = Field(default=None, max_length=40)
    property_units: int | None = None
    loan_purpose: str | None = Field(default=None, max_length=40)
    loan_program: str | None = Field(default=None, max_length=40)
    loan_amount: float | None = None
    purchase_price: float | None = None
    arv: float | None = None
    rehab_budget: float | None = None
    credit_band: str | None = Field(default=None, max_length=20)
    credit_score: int | None = None  # the exact figure, when the caller gave one (the band is derived from it)
    experience_deals: int | None = None
    liquidity: float | None = None
    timeline: str | None = Field(default=None, max_length=40)
    status: str = Field(default="new", max_length=20)
    score: int | None = None
    tier: str | None = Field(default=None, max_length=1)
    source: str = Field(default="voice", max_length=20)
    notes: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _created()
    updated_at: datetime = _created()

    @property
    def credit(self) -> str | None:
        """What the rules are judged on: the exact score when the caller gave one ("705"), else their band."""
        return str(self.credit_score) if self.credit_score is not None else self.credit_band


class DealAnalysis(SQLModel, table=True):
    """One analyze_deal run: the inputs, the results, and the figures scoring needs as columns."""

    __tablename__ = "deal_analysis"
    __table_args__ = (Index("ix_deal_analysis_guild_lead", "guild_id", "lead_id"),)

    id: int | None = Field(default=None, primary_key=True)
    guild_id: int = _guild()
    lead_id: int | None = Field(default=None, foreign_key="lead.id", ondelete="SET NULL")
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", ondelete="SET NULL")
    discord_user_id: int | None = Field(default=None, sa_type=BigInteger)
    program: str | None = Field(default=None, max_length=40)
    inputs: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    results: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    ltv: float | None = None
    dscr: float | None = None
    fits_program: bool | None = None
    verdict: str = Field(default="", sa_type=Text)
    created_at: datetime = _created()


class Offer(SQLModel, table=True):
    """An indicative term sheet issued by score_lead to a qualifying lead."""

    __tablename__ = "offer"
    __table_args__ = (Index("ix_offer_guild_lead", "guild_id", "lead_id"),)

    id: int | None = Field(default=None, primary_key=True)
    guild_id: int = _guild()
    lead_id: int = Field(foreign_key="lead.id", ondelete="CASCADE")
    program: str = Field(max_length=40)
    amount: float
    max_ltv: float
    rate_min: float  # annual percent
    rate_max: float
    points: float
    term_months: int
    expires_at: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default="issued", max_length=20)
    created_at: datetime = _created()


class ScheduledCall(SQLModel, table=True):
    """A call booked with the lender's team; starts_at is UTC, timezone is the caller's zone."""

    __tablename__ = "scheduled_call"
    __table_args__ = (Index("ix_scheduled_call_guild_start", "guild_id", "starts_at"),)

    id: int | None = Field(default=None, primary_key=True)
    guild_id: int = _guild()
    lead_id: int | None = Field(default=None, foreign_key="lead.id", ondelete="SET NULL")
    discord_user_id: int | None = Field(default=None, sa_type=BigInteger)
    starts_at: datetime = Field(sa_type=UTCDateTime)
    duration_minutes: int
    timezone: str = Field(max_length=64)
    status: str = Field(default="booked", max_length=20)
    topic: str | None = Field(default=None, max_length=500)
    ics_uid: str = Field(max_length=200, unique=True)
    created_at: datetime = _created()


class Conversation(SQLModel, table=True):
    """One voice session in a channel (or the console), linked to the lead saved during it.

    Its usage (participants, turns, tokens by kind, estimated cost) is written when the call ends: the
    per-call, per-guild and monthly spending reports and the budget read these columns.
    """

    __tablename__ = "conversation"
    __table_args__ = (Index("ix_conversation_guild_started", "guild_id", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    guild_id: int = _guild()
    channel_id: int | None = Field(default=None, sa_type=BigInteger)
    lead_id: int | None = Field(default=None, foreign_key="lead.id", ondelete="SET NULL", index=True)
    started_at: datetime = _created()
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    end_reason: str | None = Field(default=None, max_length=200)
    # Discord user ids (strings, as in Turn.speakers) of everyone heard in the call.
    participants: list[str] = Field(default_factory=list, sa_type=JSON, sa_column_kwargs={"server_default": "[]"})
    turns: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    barge_ins: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    audio_input_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    audio_output_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    text_input_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    text_output_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    cached_input_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    transcription_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    estimated_cost_usd: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})

    @property
    def duration_seconds(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at is not None else None


class Turn(SQLModel, table=True):
    """One finished utterance: who (role, Discord user ids heard), what, when."""

    __tablename__ = "turn"
    __table_args__ = (Index("ix_turn_conversation_seq", "conversation_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    guild_id: int = _guild()
    conversation_id: int = Field(foreign_key="conversation.id", ondelete="CASCADE")
    seq: int
    role: str = Field(max_length=10)
    text: str = Field(sa_type=Text)
    # Discord user ids as strings: snowflakes exceed what JSON readers without big ints keep exactly.
    speakers: list[str] = Field(default_factory=list, sa_type=JSON)
    item_id: str | None = Field(default=None, max_length=100)
    interrupted: bool = False
    spoken_at: datetime = Field(sa_type=UTCDateTime)


class Disclosure(SQLModel, table=True):
    """Cap told one participant of one call that it is an AI assistant and that the call is transcribed.

    Kept per participant with the wording's version and, when a spoken yes is required, their answer: what
    a lender shows when a transcript is ever questioned. consent is "not_asked" (no yes required),
    "pending", "yes" or "no".
    """

    __tablename__ = "disclosure"
    __table_args__ = (Index("ix_disclosure_guild_user", "guild_id", "discord_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    guild_id: int = _guild()
    conversation_id: int = Field(foreign_key="conversation.id", ondelete="CASCADE", index=True)
    discord_user_id: int = Field(sa_type=BigInteger)
    wording_version: str = Field(max_length=40)
    disclosed_at: datetime = _created()
    consent: str = Field(default="not_asked", max_length=20)
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookDelivery(SQLModel, table=True):
    """One outgoing webhook (HMAC-signed JSON), kept until the receiver acknowledges it (2xx).

    status: "pending" (due at next_attempt_at, retried with back-off), "delivered" or "failed" (gave up).
    Rows survive restarts; a sender claims due rows by moving next_attempt_at on, so processes sharing the
    database do not send one twice.
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_guild_lead", "guild_id", "lead_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    guild_id: int = Field(sa_type=BigInteger)
    lead_id: int | None = None  # not a foreign key: deleting the lead deletes its deliveries explicitly
    event: str = Field(max_length=40)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    status: str = Field(default="pending", max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = _created()
    last_error: str | None = Field(default=None, max_length=200)
    created_at: datetime = _created()
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
