"""The experiment spec: what an analyst submits, validated once at the boundary.

These pydantic models are the single source of truth for an experiment's shape:
the service validates request bodies with them and generates its OpenAPI
document from them, so the contract and the checks cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SLUG = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_SLUG_RE = re.compile(SLUG)
_HHMM_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

BUILTIN_EVENTS = ("open", "click", "conversion", "unsubscribe")
RATE_METRICS = ("open_rate", "click_rate", "click_to_open_rate", "conversion_rate", "unsubscribe_rate")
VALUE_METRICS = ("revenue_per_decision", "revenue_per_converter", "ltv_adjusted_value")
METRICS = RATE_METRICS + VALUE_METRICS
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
                if not weight > 0 or weight != weight or weight == float("inf"):
                    raise ValueError(f"weight of arm {arm!r} must be a positive number, got {weight}")
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

    @model_validator(mode="after")
    def _known_params(self) -> PolicySpec:
        allowed = POLICY_PARAMS[self.name]
        for param in ("alpha", "epsilon", "tau", "l2_lambda"):
            if getattr(self, param) is not None and param not in allowed:
                raise ValueError(f"policy {self.name!r} takes no parameter {param!r}")
        return self

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
    features: list[FeatureSpec] = Field(default_factory=list, max_length=200)
    holdout: float = Field(default=0.0, ge=0, le=0.5, description="share of decisions allocated uniformly at random")
    refit_interval_seconds: int = Field(default=300, ge=1, le=86400 * 7)
    training_window_days: int | None = Field(
        default=None, ge=1, le=3650, description="train only on decisions of the last N days"
    )

    @model_validator(mode="after")
    def _features_fit_policy(self) -> BanditAllocation:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if self.policy.contextual and not self.features:
            raise ValueError(f"policy {self.policy.name!r} is contextual and needs at least one feature")
        return self


Allocation = Annotated[FixedAllocation | BanditAllocation, Field(discriminator="type")]


class RewardSpec(_Strict):
    type: Literal["event", "ltv_adjusted"] = "event"
    event: str = Field(default="conversion", max_length=64)
    value: Literal["revenue"] | None = Field(default=None, description="reward the event's value, not 1")
    default: float = Field(default=0.0, description="reward of a decision whose window closes without the event")


class Guardrail(_Strict):
    metric: Literal[METRICS]  # type: ignore[valid-type]
    max_relative_increase: float | None = Field(default=None, ge=0)
    max_relative_decrease: float | None = Field(default=None, ge=0)

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
    cooldown_after_conversion_seconds: int | None = Field(default=None, ge=0)
    quiet_hours: QuietHours | None = None
    exclude_converted_arms: bool = False


class ExperimentSpec(_Strict):
    key: Slug
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    arms: list[ArmSpec] = Field(min_length=2, max_length=1000)
    allocation: Allocation = Field(default_factory=lambda: FixedAllocation(type="fixed"))
    reward: RewardSpec = Field(default_factory=RewardSpec)
    attribution_window_seconds: int = Field(default=14 * 86400, ge=60, le=366 * 86400)
    custom_events: list[Annotated[str, Field(pattern=SLUG)]] = Field(default_factory=list, max_length=50)
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
    default_subject_value: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        keys = [arm.key for arm in self.arms]
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise ValueError(f"arm keys must be unique; {key!r} appears twice")
            seen.add(key)
        controls = [arm.key for arm in self.arms if arm.is_control]
        if len(controls) != 1:
            raise ValueError(f"exactly one arm must have is_control: true, found {len(controls)}")
        if isinstance(self.allocation, FixedAllocation) and self.allocation.weights is not None:
            weights = self.allocation.weights
            if set(weights) != set(keys):
                missing = sorted(set(keys) - set(weights))
                unknown = sorted(set(weights) - set(keys))
                raise ValueError(f"weights must name every arm exactly: missing {missing}, unknown {unknown}")
        for event in self.custom_events:
            if event in BUILTIN_EVENTS:
                raise ValueError(f"custom event {event!r} is a built-in event type")
        if self.reward.type == "event" and self.reward.event not in (*BUILTIN_EVENTS, *self.custom_events):
            raise ValueError(f"reward event {self.reward.event!r} is neither built in nor a custom event")
        return self

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
