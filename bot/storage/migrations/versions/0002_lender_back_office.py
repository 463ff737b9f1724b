"""Lender back office (issue 12): each call's usage on its conversation row, the exact credit score, the
disclosure (and consent) record per participant, and outgoing webhook deliveries kept until acknowledged.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 07:41:55.488989
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Conversation usage counters; existing rows (calls before this revision) read as zero.
USAGE_COUNTERS = (
    "turns",
    "barge_ins",
    "audio_input_tokens",
    "audio_output_tokens",
    "text_input_tokens",
    "text_output_tokens",
    "cached_input_tokens",
    "transcription_tokens",
)


def upgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("end_reason", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("participants", sa.JSON(), server_default="[]", nullable=False))
        for name in USAGE_COUNTERS:
            batch_op.add_column(sa.Column(name, sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("estimated_cost_usd", sa.Float(), server_default="0", nullable=False))
        batch_op.create_index("ix_conversation_guild_started", ["guild_id", "started_at"], unique=False)

    with op.batch_alter_table("lead", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credit_score", sa.Integer(), nullable=True))

    op.create_table(
        "disclosure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("discord_user_id", sa.BigInteger(), nullable=False),
        sa.Column("wording_version", sa.String(length=40), nullable=False),
        sa.Column("disclosed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consent", sa.String(length=20), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_disclosure_conversation_id"), "disclosure", ["conversation_id"], unique=False)
    op.create_index(op.f("ix_disclosure_guild_id"), "disclosure", ["guild_id"], unique=False)
    op.create_index("ix_disclosure_guild_user", "disclosure", ["guild_id", "discord_user_id"], unique=False)

    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_delivery_due", "webhook_delivery", ["status", "next_attempt_at"], unique=False)
    op.create_index("ix_webhook_delivery_guild_lead", "webhook_delivery", ["guild_id", "lead_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_delivery_guild_lead", table_name="webhook_delivery")
    op.drop_index("ix_webhook_delivery_due", table_name="webhook_delivery")
    op.drop_table("webhook_delivery")

    op.drop_index("ix_disclosure_guild_user", table_name="disclosure")
    op.drop_index(op.f("ix_disclosure_guild_id"), table_name="disclosure")
    op.drop_index(op.f("ix_disclosure_conversation_id"), table_name="disclosure")
    op.drop_table("disclosure")

    with op.batch_alter_table("lead", schema=None) as batch_op:
        batch_op.drop_column("credit_score")

    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_guild_started")
        batch_op.drop_column("estimated_cost_usd")
        for name in reversed(USAGE_COUNTERS):
            batch_op.drop_column(name)
        batch_op.drop_column("participants")
        batch_op.drop_column("end_reason")
