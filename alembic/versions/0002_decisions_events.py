"""Decisions, events, per-decision outcome summaries, policy snapshots, job leases.

Every table that grows with traffic carries experiment_id, so it can be
distributed or partitioned by it later without changing the code.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _experiment_fk(nullable: bool = False) -> sa.Column:
    return sa.Column(
        "experiment_id", sa.Integer(), sa.ForeignKey("experiments.id", ondelete="CASCADE"), nullable=nullable
    )


def upgrade() -> None:
    op.create_table(
        "assignments",
        sa.Column("id", sa.String(32), primary_key=True),
        _experiment_fk(),
        sa.Column("arm_key", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("context", sa.JSON()),
        sa.Column("channel", sa.String(64)),
        sa.Column("covariate", sa.Float()),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_assignments_experiment_subject", "assignments", ["experiment_id", "subject_id", "created_at"])
    op.create_index("ix_assignments_experiment_created", "assignments", ["experiment_id", "created_at"])
    op.create_index("ix_assignments_subject_channel", "assignments", ["subject_id", "channel", "created_at"])

    op.create_table(
        "events",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(200), nullable=False, unique=True),
        _experiment_fk(nullable=True),
        sa.Column("assignment_id", sa.String(32)),
        sa.Column("subject_id", sa.String(200)),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("attribution", sa.String(16), nullable=False),
        sa.Column("unattributed_reason", sa.String(64)),
    )
    op.create_index("ix_events_experiment_type", "events", ["experiment_id", "type"])
    op.create_index("ix_events_assignment", "events", ["assignment_id"])
    op.create_index("ix_events_subject", "events", ["subject_id"])

    op.create_table(
        "decision_outcomes",
        sa.Column("assignment_id", sa.String(32), primary_key=True),
        _experiment_fk(),
        sa.Column("arm_key", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("covariate", sa.Float()),
        sa.Column("opens", sa.Integer(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("conversions", sa.Integer(), nullable=False),
        sa.Column("unsubscribes", sa.Integer(), nullable=False),
        sa.Column("custom", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=False),
        sa.Column("first_reward_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_decision_outcomes_experiment_day", "decision_outcomes", ["experiment_id", "day", "arm_key"])

    op.create_table(
        "decision_custom_outcomes",
        sa.Column("assignment_id", sa.String(32), primary_key=True),
        sa.Column("event_type", sa.String(64), primary_key=True),
        _experiment_fk(),
        sa.Column("arm_key", sa.String(64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_index("ix_decision_custom_outcomes_experiment_id", "decision_custom_outcomes", ["experiment_id"])

    op.create_table(
        "policy_snapshots",
        sa.Column("id", sa.Integer(), primary_key=True),
        _experiment_fk(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("trained_through", TS),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("experiment_id", "version", name="uq_policy_snapshots_version"),
    )
    op.create_index("ix_policy_snapshots_experiment_id", "policy_snapshots", ["experiment_id"])

    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(100)),
        sa.Column("expires_at", TS),
    )


def downgrade() -> None:
    for table in ("job_leases", "policy_snapshots", "decision_custom_outcomes", "decision_outcomes", "events",
                  "assignments"):
        op.drop_table(table)
