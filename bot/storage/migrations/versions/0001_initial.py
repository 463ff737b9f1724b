"""Initial schema: leads, deal analyses, offers, scheduled calls, conversations and turns (issue 3 models).

Revision ID: 0001
Revises:
Create Date: 2026-11-25 13:07:13.012094
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lead",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("discord_user_id", sa.BigInteger(), nullable=True),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("property_address", sa.String(length=500), nullable=True),
        sa.Column("property_type", sa.String(length=40), nullable=True),
        sa.Column("property_units", sa.Integer(), nullable=True),
        sa.Column("loan_purpose", sa.String(length=40), nullable=True),
        sa.Column("loan_program", sa.String(length=40), nullable=True),
        sa.Column("loan_amount", sa.Float(), nullable=True),
        sa.Column("purchase_price", sa.Float(), nullable=True),
        sa.Column("arv", sa.Float(), nullable=True),
        sa.Column("rehab_budget", sa.Float(), nullable=True),
        sa.Column("credit_band", sa.String(length=20), nullable=True),
        sa.Column("experience_deals", sa.Integer(), nullable=True),
        sa.Column("liquidity", sa.Float(), nullable=True),
        sa.Column("timeline", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("tier", sa.String(length=1), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("guild_id", "discord_user_id", name="uq_lead_guild_user"),
    )
    op.create_index("ix_lead_guild_email", "lead", ["guild_id", "email"], unique=False)
    op.create_index(op.f("ix_lead_guild_id"), "lead", ["guild_id"], unique=False)
    op.create_index("ix_lead_guild_phone", "lead", ["guild_id", "phone"], unique=False)
    op.create_index("ix_lead_guild_status", "lead", ["guild_id", "status"], unique=False)
    op.create_index("ix_lead_guild_tier", "lead", ["guild_id", "tier"], unique=False)

    op.create_table(
        "conversation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_conversation_guild_id"), "conversation", ["guild_id"], unique=False)
    op.create_index(op.f("ix_conversation_lead_id"), "conversation", ["lead_id"], unique=False)

    op.create_table(
        "offer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("program", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("max_ltv", sa.Float(), nullable=False),
        sa.Column("rate_min", sa.Float(), nullable=False),
        sa.Column("rate_max", sa.Float(), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_offer_guild_id"), "offer", ["guild_id"], unique=False)
    op.create_index("ix_offer_guild_lead", "offer", ["guild_id", "lead_id"], unique=False)

    op.create_table(
        "scheduled_call",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("discord_user_id", sa.BigInteger(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("topic", sa.String(length=500), nullable=True),
        sa.Column("ics_uid", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ics_uid"),
    )
    op.create_index(op.f("ix_scheduled_call_guild_id"), "scheduled_call", ["guild_id"], unique=False)
    op.create_index("ix_scheduled_call_guild_start", "scheduled_call", ["guild_id", "starts_at"], unique=False)

    op.create_table(
        "deal_analysis",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("discord_user_id", sa.BigInteger(), nullable=True),
        sa.Column("program", sa.String(length=40), nullable=True),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("ltv", sa.Float(), nullable=True),
        sa.Column("dscr", sa.Float(), nullable=True),
        sa.Column("fits_program", sa.Boolean(), nullable=True),
        sa.Column("verdict", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_deal_analysis_guild_id"), "deal_analysis", ["guild_id"], unique=False)
    op.create_index("ix_deal_analysis_guild_lead", "deal_analysis", ["guild_id", "lead_id"], unique=False)

    op.create_table(
        "turn",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("speakers", sa.JSON(), nullable=False),
        sa.Column("item_id", sa.String(length=100), nullable=True),
        sa.Column("interrupted", sa.Boolean(), nullable=False),
        sa.Column("spoken_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_turn_conversation_seq", "turn", ["conversation_id", "seq"], unique=False)
    op.create_index(op.f("ix_turn_guild_id"), "turn", ["guild_id"], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents for the foreign keys.
    for table in ("turn", "deal_analysis", "scheduled_call", "offer", "conversation", "lead"):
        op.drop_table(table)
