"""Ingestion: drop two event indexes that no query needs (each one slowed every insert).

ix_events_subject is a prefix of ix_events_subject_type; ix_events_experiment_type
served no query (unattributed counts have their own partial index).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""
from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_subject", table_name="events")
    op.drop_index("ix_events_experiment_type", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_experiment_type", "events", ["experiment_id", "type"])
    op.create_index("ix_events_subject", "events", ["subject_id"])
