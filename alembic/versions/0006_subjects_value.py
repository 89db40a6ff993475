"""Subjects and value: profiles, transactions, CLV fits and per-subject values; decision notes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("subject_id", sa.String(200), primary_key=True),
        sa.Column("timezone", sa.String(64)),
        sa.Column("supplied_value", sa.Float()),
        sa.Column("loyalty_tier", sa.String(64)),
        sa.Column("loyalty_points", sa.Float()),
        sa.Column("consent", sa.JSON()),
        sa.Column("attributes", sa.JSON()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("external_id", sa.String(200), nullable=False, unique=True),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_transactions_subject", "transactions", ["subject_id", "occurred_at"])
    op.create_table(
        "clv_models",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model", sa.JSON(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("calibration_end", TS, nullable=False),
        sa.Column("horizon_periods", sa.Integer(), nullable=False),
        sa.Column("discount_rate", sa.Float(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "subject_values",
        sa.Column("subject_id", sa.String(200), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("clv_models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("expected_value", sa.Float(), nullable=False),
        sa.Column("probability_alive", sa.Float(), nullable=False),
        sa.Column("expected_purchases", sa.Float(), nullable=False),
        sa.Column("frequency", sa.Integer(), nullable=False),
        sa.Column("recency", sa.Float(), nullable=False),
        sa.Column("age", sa.Float(), nullable=False),
        sa.Column("monetary", sa.Float(), nullable=False),
    )
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("notes", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("notes")
    for table in ("subject_values", "clv_models", "transactions", "subjects"):
        op.drop_table(table)
