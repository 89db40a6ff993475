"""Next best action: for one subject, now, which running offer (if any), on which channel, and when.

It gathers every running experiment (offer family) the subject is eligible for,
scores each (family, channel) the contact rules allow by expected value
(`experiments.arbitration`), draws one with known probabilities, lets that family's
own policy choose the arm (so the decision is logged with its true propensity and
the bandit keeps learning), and plans the send for the subject's best hour outside
quiet hours (`experiments.sendtime`). Contact rules are judged at that moment, under
the same (subject, channel) locks as every other decision, so caps across offers and
channels hold. `dry_run` answers the same question without storing anything (the
dashboard's arbitration view).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from flask import current_app, has_app_context
from sqlalchemy import case, func, literal, select
from sqlalchemy.orm import Session

from experiments import arbitration, eligibility
from experiments.arbitration import ArmOption, Candidate
from experiments.bucketing import in_holdout, unit_position
from experiments.sendtime import HOURS, HourPrior, best_hour, fit_hour_prior, next_send_at, quiet_mask
from experiments.spec import BanditAllocation

from service.usecases import contact
from service.store import contact_locks
from service.usecases import decisions as core
from service.clock import iso_utc, utcnow
from service.http.errors import ApiError
from service.store.models import Assignment, DecisionCustomOutcome, DecisionOutcome, Event, Experiment, Subject
from service.usecases.profiles import profile, profile_features
from service.usecases.runtime import ExperimentRuntime, RuntimeCache

DEFAULT_CHANNELS = ("email", "sms", "push")
PRIOR_RESPONSE = 0.05  # a family's response rate before it has any decisions
PRIOR_WEIGHT = 20.0  # decisions' worth of that prior in a fixed split's measured rate
_SUMMARY = {"open": DecisionOutcome.opens, "click": DecisionOutcome.clicks,
            "conversion": DecisionOutcome.conversions, "unsubscribe": DecisionOutcome.unsubscribes}


@dataclass(frozen=True, slots=True)
class ArmStats:
    decisions: int
    responses: int
    revenue: float
    conversions: int


class _TimedCache:
    """Per-process values recomputed at most every `seconds` (measured rates, the population's hours)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._values: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            found = self._values.get(key)
        if found is not None and now - found[0] < self.seconds:
            return found[1]
        value = compute()
        with self._lock:
            self._values[key] = (now, value)
        return value


def _cache(name: str, seconds: float) -> _TimedCache:
    """A cache of this app (each app has its own database, so nothing crosses from one to another)."""
    holder = current_app.extensions if has_app_context() else _CACHES
    found = holder.get(f"nextbest.nba.{name}")
    if found is None:
        found = holder[f"nextbest.nba.{name}"] = _TimedCache(seconds)
    return found


_CACHES: dict[str, _TimedCache] = {}


def next_best_action(session: Session, cache: RuntimeCache, open_session: Callable[[], Session], subject_id: str,
                     channels: Sequence[str] | None, context: Mapping[str, Any] | None, *, dry_run: bool = False,
                     costs: Mapping[str, float] | None = None, exploration: float | None = None,
                     rng: np.random.Generator | None = None) -> dict[str, Any]:
    """The answer of `POST /v1/next-best-action`; stores the chosen decision unless `dry_run`."""
    now = utcnow()
    context = dict(context or {})
    channels = sorted(set(channels or _setting("NEXTBEST_CHANNELS", DEFAULT_CHANNELS)))
    costs = {**_contact_costs(), **(costs or {})}
    exploration = _exploration() if exploration is None else exploration
    runtimes = _running(session, cache, open_session)
    facts, subject_zone = _facts(session, subject_id, context, now)
    if not dry_run and runtimes:
        # Every lock this request may need, taken at once in the global order: no deadlock with
        # decisions that lock the same subject's channels.
        keys = contact_locks.keys_for(((subject_id, c) for c in channels), per_subject=True)
        contact_locks.serialise(session, keys)

    excluded: list[dict[str, Any]] = []
    candidates: list[Candidate] = []
    plans: dict[tuple[str, str], dict[str, Any]] = {}
    # One time zone for the subject's hour counts, the quiet hours and the send time: the request's,
    # else the profile's, else the operator's default (as the contact rules read it).
    zone = _valid_zone(str(context.get("timezone") or subject_zone or contact.default_timezone() or "UTC"))
    hours = _subject_hours(session, subject_id, zone)
    prior = _cache("hours", 3600.0).get("prior", lambda: _population_prior(open_session))
    for runtime in runtimes:
        verdict = eligibility.check(runtime.spec.eligibility, facts)
        if not verdict.eligible:
            excluded.append({"experiment": runtime.key, "reason": "not_eligible",
                             "detail": "; ".join(eligibility.describe(f) for f in verdict.failed)})
            continue
        family_context = _with_profile_features(session, runtime, subject_id, context)
        try:
            arms = _arm_options(session, runtime, subject_id, family_context)
        except ApiError as exc:  # the context does not fit this family's features
            excluded.append({"experiment": runtime.key, "reason": "context_does_not_fit", "detail": exc.message})
            continue
        hour = best_hour(hours, prior, _quiet_hours(runtime))
        if hour.hour is None:
            excluded.append({"experiment": runtime.key, "reason": "quiet_hours", "detail": hour.reason})
            continue
        send_at = next_send_at(now, hour.hour, zone)
        for channel in channels:
            request = core.Request(subject_id, context or None, channel)
            judged = contact.verdicts(session, runtime, [request], now=send_at).get(0)
            if judged is not None and not judged.allowed:
                excluded.append({"experiment": runtime.key, "channel": channel, "reason": judged.reason,
                                 "retry_after": iso_utc(judged.retry_after)})
                continue
            candidates.append(Candidate(runtime.key, channel, arms, runtime.spec.priority,
                                        float(costs.get(channel, 0.0))))
            plans[(runtime.key, channel)] = {"send_at": send_at, "hour": hour, "zone": zone,
                                             "context": family_context}

    result = arbitration.arbitrate(candidates, exploration, rng or np.random.default_rng())
    runners = [_scored_json(s) for s in result.ranked]
    if result.chosen is None:
        reason = result.reason
        if not candidates and excluded and len({e["reason"] for e in excluded}) == 1:
            reason = excluded[0]["reason"]  # one rule kept every offer away: say which
        return {"assignment_id": None, "experiment": None, "arm": None, "channel": None, "send_at": None,
                "no_offer": True, "reason": reason, "dry_run": dry_run, "runners_up": runners,
                "excluded": excluded}
    chosen = result.chosen.candidate
    runtime = next(r for r in runtimes if r.key == chosen.experiment)
    plan = plans[(chosen.experiment, chosen.channel)]
    score = {**_scored_json(result.chosen), "send_at": iso_utc(plan["send_at"]),
             "send_time": plan["hour"].reason, "time_zone": plan["zone"]}
    answer: dict[str, Any] = {
        "experiment": runtime.key, "channel": chosen.channel, "send_at": iso_utc(plan["send_at"]),
        "score": score, "runners_up": [r for r in runners if (r["experiment"], r["channel"]) !=
                                       (chosen.experiment, chosen.channel)][:10],
        "excluded": excluded, "dry_run": dry_run,
    }
    if dry_run:
        return {**answer, "assignment_id": None, "arm": None, "payload": None, "propensity": None,
                "arbitration_probability": result.chosen.probability, "no_offer": False, "reason": None}
    notes = {"arbitration": {
        "probability": result.chosen.probability, "expected_value": result.chosen.expected_value,
        "candidates": len(candidates), "send_at": iso_utc(plan["send_at"]), "send_time": plan["hour"].reason,
        "runners_up": answer["runners_up"][:5], "excluded": excluded[:20],
    }}
    used = plan["context"]
    if used != context:
        notes["profile_features"] = {k: v for k, v in used.items() if k not in context}
    request = core.Request(subject_id, used or None, chosen.channel, notes)
    judged = contact.verdicts(session, runtime, [request], now=plan["send_at"])
    (outcome,) = core.decide(runtime, [request], judged)
    if outcome.row is not None:
        core.store(session, [outcome])
    body = core.to_json(runtime, outcome)
    return {**body, **answer, "arbitration_probability": result.chosen.probability,
            "action_probability": (result.chosen.probability * outcome.propensity
                                   if outcome.propensity is not None else None)}


# ---------------------------------------------------------------------------------------------
# What arbitration needs to know


def _running(session: Session, cache: RuntimeCache, open_session: Callable[[], Session]) -> list[ExperimentRuntime]:
    keys = session.scalars(select(Experiment.key).where(Experiment.status == "running").order_by(Experiment.id))
    return [cache.get(open_session, key) for key in keys]


def _with_profile_features(session: Session, runtime: ExperimentRuntime, subject_id: str,
                           context: Mapping[str, Any]) -> dict[str, Any]:
    """The context with the features this family sources from the profile filled in (the request's win)."""
    allocation = runtime.spec.allocation
    names = [f.name for f in getattr(allocation, "features", []) if f.source == "profile"]
    if not names:
        return dict(context)
    return {**profile_features(session, names, [subject_id])[subject_id], **context}


def _facts(session: Session, subject_id: str, context: Mapping[str, Any], now: datetime
           ) -> tuple[dict[str, Any], str | None]:
    """{"profile": ..., "context": ...} for eligibility: supplied attributes and computed values."""
    body = profile(session, subject_id, recent=0)
    supplied = dict(body.get("attributes") or {})
    computed = body.get("computed") or {}
    clv = computed.get("clv") or {}
    channel = computed.get("channel") or {}
    last = contact.last_purchase(session, subject_id)
    facts = {
        **supplied,
        "engagement_score": (computed.get("engagement") or {}).get("score"),
        "engagement_band": (computed.get("engagement") or {}).get("band"),
        "churn_risk": clv.get("churn_risk"), "probability_alive": clv.get("probability_alive"),
        "purchase_probability": clv.get("purchase_probability"), "expected_value": clv.get("expected_value"),
        "best_channel": channel.get("best"),
        "days_since_last_purchase": (now - last).total_seconds() / 86400 if last else None,
    }
    return {"profile": facts, "context": dict(context)}, supplied.get("timezone")


def _arm_options(session: Session, runtime: ExperimentRuntime, subject_id: str,
                 context: Mapping[str, Any]) -> tuple[ArmOption, ...]:
    """Each enabled arm's probability under the family's own policy for this subject, its response
    probability and its value."""
    spec = runtime.spec
    arms = runtime.enabled_arms
    if runtime.splitter is not None:  # a fixed split (or a promoted winner): the subject's hashed arm
        mine = runtime.splitter.arm_at(unit_position(runtime.salt, subject_id))
        probabilities = {a: 1.0 if a == mine else 0.0 for a in arms}
    elif isinstance(spec.allocation, BanditAllocation) and in_holdout(runtime.salt, subject_id,
                                                                        spec.allocation.holdout):
        probabilities = {a: 1.0 / len(arms) for a in arms}
    else:
        contexts = core.check_contexts(runtime, [core.Request(subject_id, context or None, None)])
        vector = runtime.policy.probabilities(contexts if runtime.policy.contextual else None)[0]
        probabilities = dict(zip(runtime.policy.arms, (float(p) for p in vector)))
    stats = _cache("rates", 60.0).get((runtime.id, runtime.revision, runtime.policy_version),
                                      lambda: _arm_stats(session, runtime))
    expectations = _bandit_expectations(runtime, subject_id, context)
    pooled = sum(s.responses for s in stats.values()) / max(1, sum(s.decisions for s in stats.values()))
    prior = max(pooled, 1e-3) if sum(s.decisions for s in stats.values()) else PRIOR_RESPONSE
    options = []
    revenue_reward = spec.reward.type == "ltv_adjusted" or spec.reward.value == "revenue"
    for arm in arms:
        s = stats.get(arm, ArmStats(0, 0, 0.0, 0))
        if expectations is not None and arm in expectations:
            # The bandit's estimate for this subject, shrunk toward the family's measured rate by how
            # little the arm has been tried: a ridge estimate from a handful of failures is 0, and an
            # offer scored 0 would never be explored again.
            estimate = ((s.decisions * max(0.0, expectations[arm]) + PRIOR_WEIGHT * prior)
                        / (s.decisions + PRIOR_WEIGHT))
        else:
            estimate = (s.responses + PRIOR_WEIGHT * prior) / (s.decisions + PRIOR_WEIGHT)
        value = _arm_value(spec, arm, s)
        if revenue_reward:  # the estimate is already money per decision
            options.append(ArmOption(arm, probabilities.get(arm, 0.0), 1.0, estimate))
        else:
            options.append(ArmOption(arm, probabilities.get(arm, 0.0), min(1.0, estimate), value))
    total = sum(o.probability for o in options)
    return tuple(ArmOption(o.arm, o.probability / total, o.response, o.value) for o in options)


def _arm_value(spec: Any, arm: str, stats: ArmStats) -> float:
    """The arm's stated value, else its measured revenue per conversion, else 1 (rank by response)."""
    declared = next((a.value for a in spec.arms if a.key == arm), None)
    if declared is not None:
        return float(declared)
    if stats.conversions and stats.revenue > 0:
        return stats.revenue / stats.conversions
    return 1.0


def _bandit_expectations(runtime: ExperimentRuntime, subject_id: str,
                         context: Mapping[str, Any]) -> dict[str, float] | None:
    if runtime.splitter is not None or runtime.policy is None or not runtime.policy.trained:
        return None
    contexts = core.check_contexts(runtime, [core.Request(subject_id, context or None, None)])
    row = runtime.policy.expectations(contexts if runtime.policy.contextual else None)[0]
    return dict(zip(runtime.policy.arms, (float(v) for v in row)))


def _arm_stats(session: Session, runtime: ExperimentRuntime) -> dict[str, ArmStats]:
    """Decisions, decisions with the reward event, revenue and converted decisions per arm (GROUP BY in
    SQL; the caller caches them per policy version)."""
    eid = runtime.id
    decided = dict(session.execute(
        select(Assignment.arm_key, func.count()).where(Assignment.experiment_id == eid)
        .group_by(Assignment.arm_key)).all())
    event = runtime.spec.reward.event
    column = _SUMMARY.get(event)
    responded = func.sum(case((column > 0, 1), else_=0)) if column is not None else literal(0)
    outcomes = {arm: (responses, revenue, conversions) for arm, responses, revenue, conversions in session.execute(
        select(DecisionOutcome.arm_key, responded, func.coalesce(func.sum(DecisionOutcome.revenue), 0.0),
               func.sum(case((DecisionOutcome.conversions > 0, 1), else_=0)))
        .where(DecisionOutcome.experiment_id == eid).group_by(DecisionOutcome.arm_key))}
    if column is None:  # a custom reward event is counted in its own table
        custom = dict(session.execute(
            select(DecisionCustomOutcome.arm_key, func.count()).where(
                DecisionCustomOutcome.experiment_id == eid, DecisionCustomOutcome.event_type == event,
                DecisionCustomOutcome.count > 0).group_by(DecisionCustomOutcome.arm_key)).all())
    stats = {}
    for arm in set(decided) | set(outcomes):
        responses, revenue, conversions = outcomes.get(arm, (0, 0.0, 0))
        if column is None:
            responses = custom.get(arm, 0)
        stats[arm] = ArmStats(int(decided.get(arm, 0)), int(responses or 0), float(revenue or 0.0),
                              int(conversions or 0))
    return stats


def _quiet_hours(runtime: ExperimentRuntime) -> tuple[bool, ...]:
    """Local hours any of the family's policies (global default included) keeps quiet."""
    mask = [False] * HOURS
    for policy in contact.policies_for(runtime):
        if policy.quiet_hours:
            for h, quiet in enumerate(quiet_mask(policy.quiet_hours.start, policy.quiet_hours.end)):
                mask[h] = mask[h] or quiet
    return tuple(mask)


def _subject_hours(session: Session, subject_id: str, zone: str) -> np.ndarray:
    """The subject's opens and clicks by hour of day in `zone`."""
    since = utcnow() - timedelta(days=365)
    moments = session.scalars(select(Event.occurred_at).where(
        Event.subject_id == subject_id, Event.type.in_(("open", "click")), Event.occurred_at >= since)).all()
    return _hour_counts(moments, zone)


def _population_prior(open_session: Callable[[], Session]) -> HourPrior:
    """The population's hour pattern from the last 90 days' opens and clicks (at most 200,000 events)."""
    session = open_session()
    since = utcnow() - timedelta(days=90)
    rows = session.execute(
        select(Event.subject_id, Event.occurred_at, Subject.timezone)
        .outerjoin(Subject, Subject.subject_id == Event.subject_id)
        .where(Event.type.in_(("open", "click")), Event.occurred_at >= since, Event.subject_id.is_not(None))
        .limit(200_000)).all()
    if not rows:
        return HourPrior.uniform()
    per_subject: dict[str, list[datetime]] = {}
    zones: dict[str, str] = {}
    for subject, moment, zone in rows:
        per_subject.setdefault(subject, []).append(moment)
        zones[subject] = zone or contact.default_timezone() or "UTC"
    counts = np.array([_hour_counts(m, _valid_zone(zones[s])) for s, m in per_subject.items()])
    return fit_hour_prior(counts)


def _hour_counts(moments: Sequence[datetime], zone: str) -> np.ndarray:
    tz = ZoneInfo(zone)
    counts = np.zeros(HOURS)
    for moment in moments:
        counts[moment.astimezone(tz).hour] += 1
    return counts


def _valid_zone(zone: str) -> str:
    try:
        ZoneInfo(zone)
        return zone
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"


def _scored_json(scored: arbitration.Scored) -> dict[str, Any]:
    c = scored.candidate
    return {
        "experiment": c.experiment, "channel": c.channel, "expected_value": round(scored.expected_value, 6),
        "probability": round(scored.probability, 6), "priority": c.priority, "contact_cost": c.contact_cost,
        "arms": [{"arm": o.arm, "policy_probability": round(o.probability, 6), "response": round(o.response, 6),
                  "value": round(o.value, 6), "score": round(scored.arm_values[o.arm], 6)} for o in c.arms],
    }


def _setting(name: str, default: Sequence[str]) -> Sequence[str]:
    raw = current_app.config.get(name) if has_app_context() else None
    if not raw:
        return default
    return [c.strip() for c in str(raw).split(",") if c.strip()]


def _contact_costs() -> dict[str, float]:
    raw = current_app.config.get("NEXTBEST_CONTACT_COSTS") if has_app_context() else None
    if not raw:
        return {}
    return {str(k): float(v) for k, v in (json.loads(raw) if isinstance(raw, str) else raw).items()}


def _exploration() -> float:
    raw = current_app.config.get("NEXTBEST_NBA_EXPLORATION") if has_app_context() else None
    return 0.1 if raw in (None, "") else float(raw)
