"""Report rollups kept by triggers: reports read O(arms x days) rows, whatever the size of the logs.

Three tables (see service/store/rollup_sql.py for what each column sums):

- `subject_arm_sums`: per experiment, subject and arm, the subject's decisions and outcome totals;
- `arm_day_rollups`: per experiment, arm, decision day, holdout flag and writer shard, additive sums;
- `arm_cluster_sums`: per experiment, arm and shard, the sums over subjects of n^2, y^2 and n*y that
  cluster every interval on subjects.

Triggers on `assignments`, `decision_outcomes` and `subject_arm_sums` keep them current in the
transaction of every write, and the upgrade fills them from the logs already stored. A later change
to what the triggers compute comes with its own migration that replaces them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store import rollup_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_FLOAT = {"revenue", "converter_revenue", "propensity_sum", "weight_sum", "weight2_sum", "revenue2",
          "converter_revenue2", "revenue_sq", "revenue_by_decisions", "converter_revenue_sq",
          "converter_revenue_by_converted"}


def _sum_column(name: str) -> sa.Column:
    if name in _FLOAT or name.startswith("weighted"):
        return sa.Column(name, sa.Float(), nullable=False, server_default="0")
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "subject_arm_sums",
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("arm_key", sa.String(64), nullable=False),
        *[_sum_column(c) for c in rollup_sql.SUBJECT_COLUMNS],
        sa.PrimaryKeyConstraint(*rollup_sql.SUBJECT_KEYS),
    )
    op.create_table(
        "arm_day_rollups",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("arm_key", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        *[_sum_column(c) for c in rollup_sql.DAY_COLUMNS],
        sa.PrimaryKeyConstraint(*rollup_sql.DAY_KEYS),
    )
    op.create_table(
        "arm_cluster_sums",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("arm_key", sa.String(64), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        *[_sum_column(c) for c in rollup_sql.CLUSTER_COLUMNS],
        sa.PrimaryKeyConstraint(*rollup_sql.CLUSTER_KEYS),
    )
    bind = op.get_bind()
    for statement in rollup_sql.trigger_ddl(bind.dialect.name):
        op.execute(statement)
    from service.store.rollups import rebuild

    rebuild(bind)


def downgrade() -> None:
    for statement in rollup_sql.drop_trigger_ddl(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("arm_cluster_sums")
    op.drop_table("arm_day_rollups")
    op.drop_table("subject_arm_sums")
