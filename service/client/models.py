"""What the service answers, as typed values: decisions, event results and reports.

Each keeps the fields a channel system or analyst reads first and the whole answer in `raw`
(or `extra`), so fields the service adds later are never lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Decision:
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
    retry_after: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Decision:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(**{k: body.get(k) for k in known},  # type: ignore[arg-type]
                   extra={k: v for k, v in body.items() if k not in known})

    @classmethod
    def fallback(cls, experiment: str, subject_id: str, payload: dict[str, Any] | None) -> Decision:
        """What a channel renders when the service cannot be reached: the default payload, nothing logged."""
        return cls(assignment_id=None, experiment=experiment, subject_id=subject_id, arm=None, payload=payload,
                   propensity=None, policy_version=None, holdout=False, no_offer=True, reason="unavailable",
                   retry_after=None)


@dataclass(frozen=True, slots=True)
class EventResults:
    accepted: int
    duplicates: int
    rejected: int
    results: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ArmSummary:
    arm: str
    is_control: bool
    decisions: int
    subjects: int
    event_counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class ArmMetric:
    """One arm's number for one metric, with its interval and its comparison with control."""

    arm: str
    is_control: bool
    n: int
    value: float | None
    ci_low: float | None
    ci_high: float | None
    lift: float | None
    lift_ci_low: float | None
    lift_ci_high: float | None
    p_value: float | None
    significant: bool | None
    chance_to_beat_control: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Metric:
    metric: str
    kind: str
    higher_is_better: bool
    arms: tuple[ArmMetric, ...]

    def arm(self, key: str) -> ArmMetric:
        return next(a for a in self.arms if a.arm == key)


@dataclass(frozen=True, slots=True)
class Report:
    """An experiment's report (`GET /v1/experiments/{key}/report`)."""

    experiment: str
    decision_metric: str
    arms: tuple[ArmSummary, ...]
    metrics: tuple[Metric, ...]
    srm_warning: bool
    warnings: tuple[str, ...]
    raw: dict[str, Any]

    def metric(self, name: str) -> Metric:
        """One metric's block; KeyError names the metrics there are."""
        for block in self.metrics:
            if block.metric == name:
                return block
        raise KeyError(f"no metric {name!r} in the report; it has {[m.metric for m in self.metrics]}")

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Report:
        arms = tuple(ArmSummary(a["arm"], bool(a.get("is_control")), int(a.get("decisions") or 0),
                                int(a.get("subjects") or 0), dict(a.get("event_counts") or {}))
                     for a in body.get("arms", []))
        metrics = tuple(
            Metric(m["metric"], m.get("kind", ""), bool(m.get("higher_is_better", True)), tuple(
                ArmMetric(r["arm"], bool(r.get("is_control")), int(r.get("n") or 0), r.get("value"), r.get("ci_low"),
                          r.get("ci_high"), r.get("lift"), r.get("lift_ci_low"), r.get("lift_ci_high"),
                          r.get("p_value_holm", r.get("p_value")), r.get("significant"),
                          r.get("chance_to_beat_control"), r.get("error"))
                for r in m.get("arms", [])))
            for m in body.get("metrics", []))
        srm = body.get("srm") or {}
        return cls(str(body.get("experiment", "")), str(body.get("decision_metric", "")), arms, metrics,
                   bool(srm.get("warning")), tuple(body.get("warnings") or ()), body)
