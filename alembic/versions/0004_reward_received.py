"""Learning loop: when each decision's reward became known.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decision_outcomes") as batch:
        batch.add_column(sa.Column("reward_received_at", sa.DateTime(timezone=True)))
    op.execute("UPDATE decision_outcomes SET reward_received_at = first_reward_at WHERE first_reward_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("decision_outcomes") as batch:
        batch.drop_column("reward_received_at")
