"""Decisions and events: no foreign key to experiments.

Both are append-only logs written at high volume; the key check cost every row a
lookup and a row lock on its experiment (half the time of a 100,000-decision
bulk write). Experiments are never deleted (they are concluded), so the
ON DELETE rule never had anything to do; the service only writes rows for an
experiment it has just read.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""
from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# SQLite keeps these constraints unnamed: batch mode names the reflected ones by this convention.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
TABLES = ("assignments", "events")


def _name(table: str) -> str:
    return f"{table}_experiment_id_fkey" if op.get_context().dialect.name == "postgresql" else \
        f"fk_{table}_experiment_id_experiments"


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            batch.drop_constraint(_name(table), type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            batch.create_foreign_key(_name(table), "experiments", ["experiment_id"], ["id"], ondelete="CASCADE")
