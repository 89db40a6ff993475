"""The experiment spec: what an analyst submits, validated once at the boundary.

These pydantic models are the single source of truth for an experiment's shape:
the service validates request bodies with them and generates its OpenAPI
document from them, so the contract and the checks cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from reports.metrics import METRICS, RATE_METRICS, VALUE_METRICS  # noqa: F401  (re-exported)

from .eligibility import Condition

SLUG = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_SLUG_RE = re.compile(SLUG)
_HHMM_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

# The reward wait when the spec names none: bandits learn within a day, reports attribute over the window.
DEFAULT_REWARD_WAIT_SECONDS = 86400

BUILTIN_EVENTS = ("open", "click", "conversion", "unsubscribe")
# Bounds of the spec's numbers (README, "Limits and validation"): weights are relative, so a million to one
# is any split anyone needs, and their sum stays far from float overflow; money amounts stay where sums
# of squares over millions of decisions are still finite.
MAX_WEIGHT = 1e6
MAX_MONEY = 1e12
DECISION_METRICS = ("conversion_rate", "click_rate", "open_rate", "revenue_per_decision", "ltv_adjusted_value")

PolicyName = Literal[
    "thompson_sampling", "ucb1", "epsilon_greedy", "softmax", "lin_ucb", "lin_ts", "lin_greedy"
]
CONTEXTUAL_POLICIES = frozenset({"lin_ucb", "lin_ts", "lin_greedy"})

# Which tuning parameters each policy accepts; anything else is a spec error.
POLICY_PARAMS: dict[str, frozenset[str]] = {
    "thompson_sampling": frozenset(),
    "ucb1": frozenset({"alpha"}),
    "epsilon_greedy": frozenset({"epsilon"}),
    "softmax": frozenset({"tau"}),
    "lin_ucb": frozenset({"alpha", "l2_lambda"}),
    "lin_ts": frozenset({"alpha", "l2_lambda"}),
    "lin_greedy": frozenset({"epsilon", "l2_lambda"}),
}

Slug = Annotated[str, Field(pattern=SLUG, description="lower-case letters, digits, '_', '-', '.'")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmSpec(_Strict):
    key: Slug
    name: str | None = Field(default=None, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict, description="returned to the channel as is")
    is_control: bool = False
    enabled: bool = True
    value: float | None = Field(
        default=None, ge=0, le=1e9,
        description="what a conversion on this arm is worth (its margin), for next best action; "
                    "default: the arm's measured revenue per conversion",
    )


class FixedAllocation(_Strict):
    type: Literal["fixed"]
    weights: dict[str, float] | None = Field(
        default=None, description="relative weight per arm key; equal weights when omitted"
    )

    @field_validator("weights")
    @classmethod
    def _positive(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is not None:
            for arm, weight in weights.items():
                if not 0 < weight <= MAX_WEIGHT:
                    raise ValueError(f"weight of arm {arm!r} must be a positive number, got {weight} "
                                     f"(weights are at most {MAX_WEIGHT:g})")
        return weights


class PolicySpec(_Strict):
    name: PolicyName
    alpha: float | None = Field(default=None, ge=0, le=100)
    epsilon: float | None = Field(default=None, ge=0, le=1)
    tau: float | None = Field(default=None, gt=0, le=100)
    l2_lambda: float | None = Field(default=None, gt=0, le=1e6)
    exploration_floor: float = Field(
        default=0.05,
        ge=0,
        le=0.5,
        description="share of decisions drawn uniformly at random, so every arm keeps a known non-zero probability",
    )

    @field_validator("alpha", "epsilon", "tau", "l2_lambda")
    @classmethod
    def _known_param(cls, value: float | None, info: ValidationInfo) -> float | None:
        name = info.data.get("name")
        if value is not None and name in POLICY_PARAMS and info.field_name not in POLICY_PARAMS[name]:
            raise ValueError(f"policy {name!r} takes no parameter {info.field_name!r}")
        return value

    @property
    def contextual(self) -> bool:
        return self.name in CONTEXTUAL_POLICIES

    def params(self) -> dict[str, float]:
        """Only the tuning parameters that were set."""
        return {p: getattr(self, p) for p in POLICY_PARAMS[self.name] if getattr(self, p) is not None}


class FeatureSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")]
    type: Literal["numeric", "categorical"]
    required: bool = True
    source: Literal["context", "profile"] = "context"


class BanditAllocation(_Strict):
    type: Literal["bandit"]
    policy: PolicySpec
    features: list[FeatureSpec] = Field(default_factory=list, max_length=200, validate_default=True)
    holdout: float = Field(default=0.0, ge=0, le=0.5, description="share of decisions allocated uniformly at random")
    refit_interval_seconds: int = Field(default=300, ge=1, le=86400 * 7)
    training_window_days: int | None = Field(
        default=None, ge=1, le=3650, description="train only on decisions of the last N days"
    )

    @field_validator("features")
    @classmethod
    def _features_fit_policy(cls, features: list[FeatureSpec], info: ValidationInfo) -> list[FeatureSpec]:
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        policy = info.data.get("policy")
        if policy is not None and policy.contextual and not features:
            raise ValueError(f"policy {policy.name!r} is contextual and needs at least one feature")
        return features


Allocation = Annotated[FixedAllocation | BanditAllocation, Field(discriminator="type")]


class RewardSpec(_Strict):
    type: Literal["event", "ltv_adjusted"] = "event"
    event: str = Field(default="conversion", max_length=64)
    value: Literal["revenue"] | None = Field(default=None, description="reward the event's value, not 1")
    default: float = Field(default=0.0, ge=-MAX_MONEY, le=MAX_MONEY, allow_inf_nan=False,
                           description="reward of a decision whose reward wait passes without the event")
    wait_seconds: int | None = Field(
        default=None, ge=1, le=366 * 86400,
        description="a decision trains once this old, with the rewarding events received by then, whatever "
                    "its outcome; default one day (or the attribution window, if shorter)",
    )


class Guardrail(_Strict):
    metric: Literal[METRICS]  # type: ignore[valid-type]
    max_relative_increase: float | None = Field(default=None, ge=0)
    max_relative_decrease: float | None = Field(default=None, ge=0)
    mode: Literal["harm", "non_inferiority"] = Field(
        default="harm",
        description="harm: fails on evidence of harm (the point estimate beyond the bound, or the always-valid "
        "interval showing the metric worse than control); non_inferiority: passes only once the always-valid "
        "interval rules a breach out",
    )

    @model_validator(mode="after")
    def _one_bound(self) -> Guardrail:
        if self.max_relative_increase is None and self.max_relative_decrease is None:
            raise ValueError("a guardrail needs max_relative_increase or max_relative_decrease")
        return self


class PromotionRule(_Strict):
    metric: Literal[DECISION_METRICS] = "conversion_rate"  # type: ignore[valid-type]
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_decisions_per_arm: int = Field(default=1000, ge=1)
    min_runtime_seconds: int = Field(default=7 * 86400, ge=0)
    action: Literal["promote", "notify"] = "promote"
    holdback: float = Field(default=0.0, ge=0, le=0.5, description="share kept on control after promotion")
    on_harm: Literal["recommend", "stop"] = Field(
        default="recommend",
        description="when /decision says stop (every treatment clearly worse, or a guardrail clearly breached): "
        "recommend only, or stop: the job pauses the experiment, audited, with a webhook",
    )
    on_regression: Literal["notify", "rollback"] = Field(
        default="notify",
        description="after promotion, when a guardrail shows harm on the holdback: notify, or roll back",
    )


class FrequencyCap(_Strict):
    count: int = Field(ge=1)
    per_seconds: int = Field(ge=1)


class QuietHours(_Strict):
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM_RE.match(value):
            raise ValueError(f"expected HH:MM (24h), got {value!r}")
        return value


class ContactPolicy(_Strict):
    max_per_subject: FrequencyCap | None = None
    # No bombardment: decisions per subject across every channel (and every experiment).
    max_per_subject_all_channels: FrequencyCap | None = None
    cooldown_after_conversion_seconds: int | None = Field(default=None, ge=0)
    quiet_hours: QuietHours | None = None
    exclude_converted_arms: bool = False


class ExperimentSpec(_Strict):
    key: Slug
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    arms: list[ArmSpec] = Field(min_length=2, max_length=1000)
    allocation: Allocation = Field(default_factory=lambda: FixedAllocation(type="fixed"))
    custom_events: list[Annotated[str, Field(pattern=SLUG)]] = Field(default_factory=list, max_length=50)
    reward: RewardSpec = Field(default_factory=RewardSpec)
    attribution_window_seconds: int = Field(default=14 * 86400, ge=60, le=366 * 86400)
    metrics: list[Literal[METRICS]] = Field(default_factory=lambda: list(METRICS))  # type: ignore[valid-type]
    covariate: str | None = Field(
        default=None, max_length=64, description="numeric context field measured before the decision, for CUPED"
    )
    guardrails: list[Guardrail] = Field(default_factory=list, max_length=20)
    promotion: PromotionRule | None = None
    contact_policy: ContactPolicy | None = None
    unsubscribe_value_share: float = Field(
        default=1.0, ge=0, le=1, description="share of a subject's future value an unsubscribe destroys"
    )
    default_subject_value: float = Field(default=0.0, ge=0, le=MAX_MONEY, allow_inf_nan=False)
    subject_value_field: str | None = Field(
        default=None, max_length=64, description="context field carrying the subject's lifetime value, if any"
    )
    eligibility: list[Condition] = Field(
        default_factory=list, max_length=50,
        description="who may get this offer: conditions on profile.* and context.* fields, all of which must hold",
    )
    priority: float = Field(default=1.0, gt=0, le=1e6,
                            description="business weight of this offer family in next best action")

    @field_validator("arms")
    @classmethod
    def _arms(cls, arms: list[ArmSpec]) -> list[ArmSpec]:
        seen: set[str] = set()
        for arm in arms:
            if arm.key in seen:
                raise ValueError(f"arm keys must be unique; {arm.key!r} appears twice")
            seen.add(arm.key)
        controls = [arm.key for arm in arms if arm.is_control]
        if len(controls) != 1:
            raise ValueError(f"exactly one arm must have is_control: true, found {len(controls)}")
        if not any(arm.enabled for arm in arms):
            raise ValueError("at least one arm must be enabled")
        names = [arm.name.strip().lower() for arm in arms if arm.name]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique (imports match arms by name)")
        return arms

    @field_validator("allocation")
    @classmethod
    def _weights_name_every_arm(cls, allocation: Any, info: ValidationInfo) -> Any:
        arms = info.data.get("arms")
        if arms is None or not isinstance(allocation, FixedAllocation) or allocation.weights is None:
            return allocation
        keys = {arm.key for arm in arms}
        weights = set(allocation.weights)
        if weights != keys:
            raise ValueError(
                f"weights must name every arm exactly: missing {sorted(keys - weights)}, unknown {sorted(weights - keys)}"
            )
        return allocation

    @field_validator("custom_events")
    @classmethod
    def _custom_events(cls, events: list[str]) -> list[str]:
        for event in events:
            if event in BUILTIN_EVENTS:
                raise ValueError(f"custom event {event!r} is a built-in event type")
        if len(set(events)) != len(events):
            raise ValueError("custom events must be unique")
        return events

    @field_validator("reward")
    @classmethod
    def _reward_event_known(cls, reward: RewardSpec, info: ValidationInfo) -> RewardSpec:
        custom = info.data.get("custom_events") or []
        if reward.type == "event" and reward.event not in (*BUILTIN_EVENTS, *custom):
            raise ValueError(f"reward event {reward.event!r} is neither built in nor a custom event")
        allocation = info.data.get("allocation")
        binary = reward.type == "event" and reward.value is None
        if isinstance(allocation, BanditAllocation) and allocation.policy.name == "thompson_sampling" and not binary:
            raise ValueError("thompson_sampling learns from 0/1 rewards; use a binary event reward or another policy")
        return reward

    @model_validator(mode="after")
    def _reward_wait_fits(self) -> ExperimentSpec:
        wait = self.reward.wait_seconds
        if wait is not None and wait > self.attribution_window_seconds:
            raise ValueError(f"reward.wait_seconds ({wait}) must not exceed attribution_window_seconds "
                             f"({self.attribution_window_seconds}): events after the window are not attributed")
        allocation = self.allocation
        if isinstance(allocation, BanditAllocation) and allocation.training_window_days is not None:
            days = allocation.training_window_days
            if days * 86400 < self.reward_wait_seconds:
                raise ValueError(
                    f"allocation.training_window_days ({days} days) is shorter than the reward wait "
                    f"({self.reward_wait_seconds} s): no decision in the window would have matured")
        return self

    @property
    def reward_wait_seconds(self) -> int:
        """How old a decision must be to train (and enter off-policy evaluation), whatever its outcome."""
        if self.reward.wait_seconds is not None:
            return self.reward.wait_seconds
        return min(DEFAULT_REWARD_WAIT_SECONDS, self.attribution_window_seconds)

    @property
    def control_arm(self) -> str:
        return next(arm.key for arm in self.arms if arm.is_control)

    @property
    def event_types(self) -> tuple[str, ...]:
        return (*BUILTIN_EVENTS, *self.custom_events)

    def fixed_weights(self) -> dict[str, float]:
        """Normalised configured shares of the enabled arms (equal when unset)."""
        enabled = [arm.key for arm in self.arms if arm.enabled]
        raw = (
            self.allocation.weights
            if isinstance(self.allocation, FixedAllocation) and self.allocation.weights
            else {}
        )
        weights = {key: float(raw.get(key, 1.0)) for key in enabled}
        total = sum(weights.values())
        return {key: w / total for key, w in weights.items()}


def is_slug(value: str) -> bool:
    return bool(_SLUG_RE.match(value))
