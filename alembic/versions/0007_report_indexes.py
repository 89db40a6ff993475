"""Reports: a partial index so counting unattributed events does not scan every event.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    where = sa.text("attribution = 'unattributed'")
    op.create_index("ix_events_unattributed", "events", ["experiment_id", "unattributed_reason"],
                    postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    op.drop_index("ix_events_unattributed", table_name="events")
