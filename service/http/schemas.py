"""Request and response models of the HTTP API (they also generate /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from experiments.spec import (
    SLUG,
    Allocation,
    ArmSpec,
    ContactPolicy,
    ExperimentSpec,
    Guardrail,
    PromotionRule,
    RewardSpec,
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExperimentPath(BaseModel):
    key: str = Field(pattern=SLUG)


class ExperimentListQuery(BaseModel):
    status: Literal["draft", "running", "paused", "concluded"] | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: int | None = Field(default=None, ge=0, le=2**31 - 1)


class ExperimentOut(ExperimentSpec):
    model_config = ConfigDict(extra="allow", frozen=False)
    id: int
    status: str
    salt: str
    winner: str | None = None
    holdback: float = 0.0
    revision: int
    allowed_actions: list[str]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    promoted_at: datetime | None = None
    concluded_at: datetime | None = None


class ExperimentList(BaseModel):
    experiments: list[ExperimentOut]
    next_cursor: int | None
    total: int


class ExperimentPatch(_In):
    """Any spec fields; what may change depends on the experiment's status."""

    key: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    arms: list[ArmSpec] | None = Field(default=None, min_length=2, max_length=1000)
    allocation: Allocation | None = None
    reward: RewardSpec | None = None
    attribution_window_seconds: int | None = None
    custom_events: list[str] | None = None
    metrics: list[str] | None = None
    covariate: str | None = None
    guardrails: list[Guardrail] | None = None
    promotion: PromotionRule | None = None
    contact_policy: ContactPolicy | None = None
    unsubscribe_value_share: float | None = None
    default_subject_value: float | None = None
    subject_value_field: str | None = None


class ActionBody(_In):
    reason: str | None = Field(default=None, max_length=2000)


class ConcludeBody(_In):
    winner: str | None = Field(default=None, max_length=64, description="arm key; omit to conclude without a winner")
    reason: str | None = Field(default=None, max_length=2000)


class AuditEntryOut(BaseModel):
    id: int
    actor: str
    action: str
    details: dict[str, Any]
    created_at: datetime


class AuditList(BaseModel):
    experiment: str
    entries: list[AuditEntryOut]


class Health(BaseModel):
    status: str
    database: str | None = None
    revision: str | None = None
    expected_revision: str | None = None
    message: str | None = None


SubjectId = Field(min_length=1, max_length=200)


class AssignRequest(_In):
    experiment: str = Field(pattern=SLUG)
    subject_id: str = SubjectId
    context: dict[str, Any] | None = None
    channel: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, min_length=1, max_length=200,
                                   description="makes a retry harmless, as an Idempotency-Key header does")


class AssignResponse(BaseModel):
    assignment_id: str | None
    experiment: str
    subject_id: str
    arm: str | None
    payload: dict[str, Any] | None
    propensity: float | None
    policy_version: int | None
    holdout: bool
    no_offer: bool
    reason: str | None
    retry_after: datetime | None


class BatchSubject(_In):
    subject_id: str = SubjectId
    context: dict[str, Any] | None = None


class BatchAssignRequest(_In):
    experiment: str = Field(pattern=SLUG)
    channel: str | None = Field(default=None, max_length=64)
    subjects: list[BatchSubject] = Field(min_length=1)
    request_id: str | None = Field(default=None, min_length=1, max_length=200,
                                   description="makes a retry harmless, as an Idempotency-Key header does")


class BatchAssignResponse(BaseModel):
    experiment: str
    assignments: list[AssignResponse]
    suppressed: int = 0


class EventIn(BaseModel):
    """One outcome (documentation of the per-event shape; each is validated on its own)."""

    event_id: str = Field(max_length=200, description="client-chosen, unique: a retry with the same id is a duplicate")
    type: str = Field(max_length=64, description="open, click, conversion, unsubscribe, or a declared custom type")
    assignment_id: str | None = None
    experiment: str | None = None
    subject_id: str | None = None
    value: float | None = Field(default=None, description="revenue, for conversions")
    occurred_at: datetime
    channel: str | None = None


class EventBatchIn(_In):
    events: list[Any] = Field(description="up to 10,000 events (see EventIn); each is accepted or rejected on its own")


class EventResult(BaseModel):
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    attribution: str | None = None
    reason: str | None = None


class EventBatchOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class ReportQuery(BaseModel):
    format: Literal["json", "csv", "html"] = "json"


class SegmentQuery(BaseModel):
    by: str = Field(max_length=80, description="loyalty_tier, timezone or attributes.<name> of the subject profile")


class SegmentReport(BaseModel):
    value: str | None
    report: dict[str, Any]


class SegmentReports(BaseModel):
    experiment: str
    by: str
    segments: list[SegmentReport]


class PowerRequest(_In):
    metric_type: Literal["rate", "mean"] = "rate"
    baseline: float = Field(description="baseline rate (0..1) for rates, baseline mean for means")
    std_dev: float | None = Field(default=None, gt=0, description="standard deviation, for means")
    mde_relative: float | None = Field(default=None, gt=0, description="relative minimum detectable effect")
    sample_size_per_arm: int | None = Field(default=None, ge=2)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0.5, lt=1)
    arms: int = Field(default=2, ge=2, le=100)
    daily_traffic: float | None = Field(default=None, gt=0, description="decisions per day over all arms")
    alternative: Literal["two-sided", "larger", "smaller"] = "two-sided"
    correction: Literal["none", "bonferroni"] = "none"
    sequential_tuning_n: float = Field(
        default=10_000, gt=0, le=1e12, description="the always-valid interval's tuning, as the promotion job uses it")


class ImportQuery(BaseModel):
    columns: str | None = Field(
        default=None, max_length=4000,
        description="rename source columns first, e.g. segment:arm,visit:click,spend:revenue,recency:context.recency",
    )
    generate_subject_ids: bool = Field(
        default=False, description="data without a subject_id column: one subject per row, named line-<n>"
    )


class ImportResult(BaseModel):
    """Counts, and the rejected rows by line number."""

    imported: int
    duplicates: int
    events: int
    rejected: list[dict[str, Any]]
    rejected_count: int
    ignored_columns: list[str]


class SubjectPath(BaseModel):
    subject_id: str = Field(min_length=1, max_length=200)


class ErasureResult(BaseModel):
    subject_ref: str
    erased: dict[str, int]


class ResubscribeBody(_In):
    channel: str = Field(min_length=1, max_length=64)


class ResubscribeResult(BaseModel):
    subject_id: str
    channel: str
    resubscribed: bool


class ConditionOut(BaseModel):
    name: str
    passed: bool
    detail: str
    values: dict[str, Any]


class PromotionDecisionOut(BaseModel):
    experiment: str
    action: Literal["promote", "notify", "wait", "stop", "none"]
    winner: str | None
    promoted_winner: str | None
    conditions: list[ConditionOut]
    summary: str
    statistics: dict[str, Any]
    reason: str | None = Field(default=None, description="with action stop: the harm found")
    stop_reason: str | None = None
    post_promotion: dict[str, Any] | None = Field(
        default=None, description="after promotion: the winner against its holdback on matured decisions")


class PromoteBody(_In):
    winner: str = Field(max_length=64)
    holdback: float | None = Field(default=None, ge=0, le=0.5, description="default: the rule's holdback, or 0")
    reason: str = Field(default="promoted by hand", max_length=2000)


class RollbackBody(_In):
    reason: str = Field(default="rolled back by hand", max_length=2000)


class WebhookIn(_In):
    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://")
    experiment: str | None = Field(default=None, pattern=SLUG, description="omit for every experiment")
    secret: str | None = Field(default=None, min_length=16, max_length=200)


class WebhookOut(BaseModel):
    id: int
    url: str
    experiment: str | None
    active: bool
    secret: str | None = Field(default=None, description="returned once, at creation")
    deliveries: dict[str, int] = {}


class WebhookPath(BaseModel):
    webhook_id: int = Field(ge=1, le=2**31 - 1)


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


def _report_model() -> type[BaseModel]:
    from pydantic import RootModel

    from reports import Report
    from reports.power import PowerResult

    class ReportOut(RootModel[Report]):  # type: ignore[misc]
        """The A/B report (JSON); ?format=csv and ?format=html return text."""

    class PowerOut(RootModel[PowerResult]):  # type: ignore[misc]
        """A sample-size plan."""

    return ReportOut, PowerOut  # type: ignore[return-value]


ReportOut, PowerOut = _report_model()  # type: ignore[misc]


class EvaluateRequest(_In):
    candidates: list[dict[str, Any]] = Field(min_length=1, max_length=20, description=(
        'each {"name": label, "policy": {"name": "fixed", "arm": "mens"} | {"name": "uniform"} | a bandit policy '
        'spec (optionally with "features")}'))
    refit_every: int = Field(default=1000, ge=10, le=1_000_000, description="decisions between candidate refits")
    max_weight: float = Field(default=100.0, gt=1, description="importance weights are clipped here")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class EvaluateResponse(BaseModel):
    experiment: str
    decisions: int = Field(description="matured decisions evaluated on")
    pending: int = Field(default=0, description="decisions younger than the reward wait, left out")
    reward_wait_seconds: int | None = None
    reward: dict[str, Any]
    candidates: list[dict[str, Any]]


class SubjectIn(_In):
    """Caller-supplied profile fields; fields left out keep their stored values."""

    timezone: str | None = Field(default=None, max_length=64, description="IANA name, e.g. Europe/Berlin")
    lifetime_value: float | None = Field(default=None, ge=0, description="supplied value; beats the model's")
    loyalty_tier: str | None = Field(default=None, max_length=64)
    loyalty_points: float | None = None
    consent: dict[str, StrictBool] | None = Field(default=None, description="channel -> consented (true or false)")
    attributes: dict[str, Any] | None = None


class SubjectOut(BaseModel):
    subject_id: str
    known: bool
    attributes: dict[str, Any]
    computed: dict[str, Any]
    suppressions: list[dict[str, Any]]
    recent_decisions: list[dict[str, Any]]


class SubjectImportResult(BaseModel):
    stored: int
    rejected: list[dict[str, Any]]
    rejected_count: int


class AssignmentPath(BaseModel):
    assignment_id: str = Field(min_length=1, max_length=64)


class AssignmentExplanation(BaseModel):
    assignment_id: str
    experiment: str
    subject_id: str
    arm: str
    propensity: float
    allocation: dict[str, Any]
    policy_version: int
    holdout: bool
    features: dict[str, Any]
    profile_features: dict[str, Any]
    contact_rules: list[str]
    channel: str | None
    decided_at: datetime
    explanation: str


class SubjectExport(BaseModel):
    """Everything stored about one subject: nextbest-subject-export/1."""

    format: str
    subject_id: str
    exported_at: datetime
    profile: dict[str, Any] | None
    decisions: list[dict[str, Any]]
    outcome_summaries: list[dict[str, Any]]
    events: list[dict[str, Any]]
    suppressions: list[dict[str, Any]]
    transactions: list[dict[str, Any]]
    model_values: list[dict[str, Any]]
