"""Database tables (SQLAlchemy 2.0 typed models). The schema changes only through alembic."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import (
    text,
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on every database (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


Timestamp = UtcDateTime()


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: Timestamp}


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    # The validated spec minus its arms (those live in `arms`).
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    salt: Mapped[str] = mapped_column(String(64))
    winner_arm: Mapped[str | None] = mapped_column(String(64))
    holdback: Mapped[float] = mapped_column(Float, default=0.0)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    promoted_at: Mapped[datetime | None]
    concluded_at: Mapped[datetime | None]

    arms: Mapped[list[Arm]] = relationship(
        back_populates="experiment", order_by="Arm.position", cascade="all, delete-orphan", lazy="selectin"
    )


class Arm(Base):
    __tablename__ = "arms"
    __table_args__ = (UniqueConstraint("experiment_id", "key", name="uq_arms_experiment_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_control: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer)

    experiment: Mapped[Experiment] = relationship(back_populates="arms")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))
    # Public identifier embedded in the key; the secret itself is only stored hashed.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="SET NULL"), index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


# On PostgreSQL the decision and event logs are partitioned by week (alembic 0014), and a key must include
# the partition column: these are their unique keys there, which ON CONFLICT names. Elsewhere the
# models' own primary keys hold (the ORM identity stays the id on both).
PARTITIONED_KEYS: dict[str, tuple[str, ...]] = {
    "assignments": ("id", "created_at"),
    "events": ("id", "received_at"),
    "decision_outcomes": ("assignment_id", "day"),
    "decision_custom_outcomes": ("assignment_id", "event_type", "day"),
}


def unique_key(model: Any, dialect: str) -> list[str]:
    """The columns of `model`'s primary key as the database has it (`dialect`: "postgresql", "sqlite")."""
    table = model.__table__
    if dialect == "postgresql" and table.name in PARTITIONED_KEYS:
        return list(PARTITIONED_KEYS[table.name])
    return [column.name for column in table.primary_key.columns]


class Assignment(Base):
    """One decision: the audit trail and the training data."""

    __tablename__ = "assignments"
    __table_args__ = (
        Index("ix_assignments_experiment_subject", "experiment_id", "subject_id", "created_at"),
        Index("ix_assignments_experiment_created", "experiment_id", "created_at"),
        Index("ix_assignments_subject_channel", "subject_id", "channel", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # No foreign key: checking it cost every logged decision a lookup and a lock on its experiment,
    # and experiments are never deleted (alembic 0009).
    experiment_id: Mapped[int] = mapped_column(Integer)
    arm_key: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str] = mapped_column(String(200))
    propensity: Mapped[float] = mapped_column(Float)
    policy_version: Mapped[int] = mapped_column(Integer, default=0)
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    channel: Mapped[str | None] = mapped_column(String(64))
    covariate: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16), default="live")
    # Why this decision: profile features used, arms left out by the contact policy.
    notes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]


class Event(Base):
    """One outcome as received; the source of truth the summaries are rebuilt from.

    event_id is unique on SQLite; on PostgreSQL (partitioned by received_at) `event_keys` keeps it unique."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_assignment", "assignment_id"),
        Index("ix_events_subject_type", "subject_id", "type", "occurred_at"),
        Index("ix_events_unattributed", "experiment_id", "unattributed_reason",
              postgresql_where=text("attribution = 'unattributed'"), sqlite_where=text("attribution = 'unattributed'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    experiment_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key, as for assignments
    assignment_id: Mapped[str | None] = mapped_column(String(32))
    subject_id: Mapped[str | None] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    # "assignment" (by id), "subject" (resolved in the window) or "unattributed".
    attribution: Mapped[str] = mapped_column(String(16))
    unattributed_reason: Mapped[str | None] = mapped_column(String(64))


class DecisionOutcome(Base):
    """Per-decision outcome summary kept current at ingestion, so reports scan one narrow table."""

    __tablename__ = "decision_outcomes"
    __table_args__ = (Index("ix_decision_outcomes_experiment_day", "experiment_id", "day", "arm_key"),)

    assignment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    arm_key: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)
    propensity: Mapped[float] = mapped_column(Float)
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    covariate: Mapped[float | None] = mapped_column(Float)
    opens: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    conversions: Mapped[int] = mapped_column(Integer, default=0)
    unsubscribes: Mapped[int] = mapped_column(Integer, default=0)
    custom: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[float] = mapped_column(Float, default=0.0)
    first_reward_at: Mapped[datetime | None]
    # When the first rewarding event was received: the moment the reward became known for training.
    reward_received_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class DecisionCustomOutcome(Base):
    """Counts of experiment-declared custom event types per decision."""

    __tablename__ = "decision_custom_outcomes"

    assignment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    arm_key: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer, default=0)
    # The decision's UTC day, as in decision_outcomes: the rows retire with their decisions' partition.
    day: Mapped[date] = mapped_column(Date)


class EventKey(Base):
    """Every event_id stored (PostgreSQL): the exactly-once check, which a partitioned `events` cannot keep.

    Ingestion inserts here first and stores only the events whose keys it inserted. Keys are deleted
    with their events' partitions when those are retired; an event sent again after that is stored again.
    SQLite leaves it empty: events.event_id is unique there."""

    __tablename__ = "event_keys"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime]


class LogRetention(Base):
    """One retired (dropped) log partition: which table, which range, when (service/store/partitions.py)."""

    __tablename__ = "log_retention"
    __table_args__ = (Index("ix_log_retention_table", "table_name", "retired_before"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    table_name: Mapped[str] = mapped_column(String(64))
    partition_name: Mapped[str] = mapped_column(String(64))
    retired_from: Mapped[datetime | None]
    retired_before: Mapped[datetime]
    row_estimate: Mapped[int | None] = mapped_column(BigInteger)
    retired_at: Mapped[datetime]


class PolicySnapshot(Base):
    __tablename__ = "policy_snapshots"
    __table_args__ = (UniqueConstraint("experiment_id", "version", name="uq_policy_snapshots_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    trained_through: Mapped[datetime | None]
    examples: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]


class JobLease(Base):
    """One row per periodic job: whoever holds an unexpired lease runs it, across all workers and hosts."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime | None]


class Suppression(Base):
    """A subject left a channel: no offers on it, in any experiment, until a re-subscribe."""

    __tablename__ = "suppressions"

    subject_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64))
    source_event_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class SuppressedRequest(Base):
    """Daily counts of requests that got no offer, by reason, so reports show them."""

    __tablename__ = "suppressed_requests"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class Webhook(Base):
    """A subscriber to promotion notices: for one experiment, or all when experiment_id is null."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class WebhookDelivery(Base):
    """One notice to one subscriber, retried with backoff; its outcome is recorded, never blocking."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="SET NULL"))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class Subject(Base):
    """What callers tell us about a customer: time zone, value, loyalty, consent, free attributes."""

    __tablename__ = "subjects"

    subject_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    timezone: Mapped[str | None] = mapped_column(String(64))
    supplied_value: Mapped[float | None] = mapped_column(Float)
    loyalty_tier: Mapped[str | None] = mapped_column(String(64))
    loyalty_points: Mapped[float | None] = mapped_column(Float)
    consent: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Transaction(Base):
    """A purchase for the CLV model: imported, or taken from a conversion event."""

    __tablename__ = "transactions"
    __table_args__ = (Index("ix_transactions_subject", "subject_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    subject_id: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime]
    amount: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class ClvFit(Base):
    """A fitted BG/NBD + Gamma-Gamma model, and the per-subject values it implies."""

    __tablename__ = "clv_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[dict[str, Any]] = mapped_column(JSON)
    customers: Mapped[int] = mapped_column(Integer)
    calibration_end: Mapped[datetime]
    horizon_periods: Mapped[int] = mapped_column(Integer)
    discount_rate: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    # The holdout comparison of a fit with holdout_end (reports.clv_holdout), else None.
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SubjectValue(Base):
    """The model's per-subject estimates from the latest CLV fit."""

    __tablename__ = "subject_values"

    subject_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model_id: Mapped[int] = mapped_column(Integer)  # the clv_models row; no key check (see migration 0012)
    expected_value: Mapped[float] = mapped_column(Float)
    probability_alive: Mapped[float] = mapped_column(Float)
    expected_purchases: Mapped[float] = mapped_column(Float)
    frequency: Mapped[int] = mapped_column(Integer)
    recency: Mapped[float] = mapped_column(Float)
    age: Mapped[float] = mapped_column(Float)
    monetary: Mapped[float] = mapped_column(Float)


class IdempotencyRecord(Base):
    """The stored answer of a decision request sent with an Idempotency-Key, per API key."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)

    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(100))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class DoNotContact(Base):
    """An erased subject's channel suppressions, keyed by an HMAC of the id (never the id itself)."""

    __tablename__ = "do_not_contact"

    subject_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class ServerSecret(Base):
    """A secret generated once per database (the pseudonym key when none is configured)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class SubjectArmSums(Base):
    """One subject's totals in one arm of an experiment, kept by database triggers (alembic 0013).

    The subject-clustered statistics need sums over subjects of n_i^2, y_i^2 and n_i*y_i, which
    do not add up across days; the triggers keep each subject's n_i and y_i here so that every
    change to them can add its exact difference to `arm_cluster_sums`.
    """

    __tablename__ = "subject_arm_sums"

    # The subject first: erasure finds a subject's rows by the key.
    subject_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arm_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    decisions: Mapped[int] = mapped_column(BigInteger, default=0)
    opened: Mapped[int] = mapped_column(BigInteger, default=0)
    clicked: Mapped[int] = mapped_column(BigInteger, default=0)
    converted: Mapped[int] = mapped_column(BigInteger, default=0)
    unsubscribed: Mapped[int] = mapped_column(BigInteger, default=0)
    opened_clicked: Mapped[int] = mapped_column(BigInteger, default=0)
    revenue: Mapped[float] = mapped_column(Float, default=0.0)
    converter_revenue: Mapped[float] = mapped_column(Float, default=0.0)


class ArmDayRollup(Base):
    """Per experiment, arm, decision day and holdout flag: the additive sums every report reads.

    `shard` spreads concurrent writers over several rows (PostgreSQL: the backend's pid modulo 8);
    readers add the shards up. Kept by the triggers of alembic 0013, rebuilt by `nextbest rollups rebuild`.
    """

    __tablename__ = "arm_day_rollups"

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arm_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    holdout: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    decisions: Mapped[int] = mapped_column(BigInteger, default=0)
    propensity_sum: Mapped[float] = mapped_column(Float, default=0.0)
    weight_sum: Mapped[float] = mapped_column(Float, default=0.0)
    weight2_sum: Mapped[float] = mapped_column(Float, default=0.0)
    opened: Mapped[int] = mapped_column(BigInteger, default=0)
    clicked: Mapped[int] = mapped_column(BigInteger, default=0)
    converted: Mapped[int] = mapped_column(BigInteger, default=0)
    unsubscribed: Mapped[int] = mapped_column(BigInteger, default=0)
    opens: Mapped[int] = mapped_column(BigInteger, default=0)
    clicks: Mapped[int] = mapped_column(BigInteger, default=0)
    conversions: Mapped[int] = mapped_column(BigInteger, default=0)
    unsubscribes: Mapped[int] = mapped_column(BigInteger, default=0)
    revenue: Mapped[float] = mapped_column(Float, default=0.0)
    revenue2: Mapped[float] = mapped_column(Float, default=0.0)
    converter_revenue: Mapped[float] = mapped_column(Float, default=0.0)
    converter_revenue2: Mapped[float] = mapped_column(Float, default=0.0)
    weighted_opened: Mapped[float] = mapped_column(Float, default=0.0)
    weighted2_opened: Mapped[float] = mapped_column(Float, default=0.0)
    weighted_clicked: Mapped[float] = mapped_column(Float, default=0.0)
    weighted2_clicked: Mapped[float] = mapped_column(Float, default=0.0)
    weighted_converted: Mapped[float] = mapped_column(Float, default=0.0)
    weighted2_converted: Mapped[float] = mapped_column(Float, default=0.0)
    weighted_unsubscribed: Mapped[float] = mapped_column(Float, default=0.0)
    weighted2_unsubscribed: Mapped[float] = mapped_column(Float, default=0.0)
    weighted_revenue: Mapped[float] = mapped_column(Float, default=0.0)
    weighted2_revenue: Mapped[float] = mapped_column(Float, default=0.0)
    weighted2_revenue2: Mapped[float] = mapped_column(Float, default=0.0)


class ArmClusterSums(Base):
    """Per experiment and arm: the sums over subjects that cluster every interval on subjects
    (`reports.stats.SubjectSums`), kept from `subject_arm_sums` by triggers, sharded as above."""

    __tablename__ = "arm_cluster_sums"

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arm_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    subjects: Mapped[int] = mapped_column(BigInteger, default=0)
    decisions2: Mapped[int] = mapped_column(BigInteger, default=0)
    opened_sq: Mapped[int] = mapped_column(BigInteger, default=0)
    opened_by_decisions: Mapped[int] = mapped_column(BigInteger, default=0)
    clicked_sq: Mapped[int] = mapped_column(BigInteger, default=0)
    clicked_by_decisions: Mapped[int] = mapped_column(BigInteger, default=0)
    converted_sq: Mapped[int] = mapped_column(BigInteger, default=0)
    converted_by_decisions: Mapped[int] = mapped_column(BigInteger, default=0)
    unsubscribed_sq: Mapped[int] = mapped_column(BigInteger, default=0)
    unsubscribed_by_decisions: Mapped[int] = mapped_column(BigInteger, default=0)
    revenue_sq: Mapped[float] = mapped_column(Float, default=0.0)
    revenue_by_decisions: Mapped[float] = mapped_column(Float, default=0.0)
    converters: Mapped[int] = mapped_column(BigInteger, default=0)
    converter_revenue_sq: Mapped[float] = mapped_column(Float, default=0.0)
    converter_revenue_by_converted: Mapped[float] = mapped_column(Float, default=0.0)
    openers: Mapped[int] = mapped_column(BigInteger, default=0)
    opened_clicked_sq: Mapped[int] = mapped_column(BigInteger, default=0)
    opened_clicked_by_opened: Mapped[int] = mapped_column(BigInteger, default=0)
