"""Customer profiles: what nextbest computes about one subject, next to what the caller supplied.

A profile answers "how engaged is this customer, how likely are they still with us,
what will they buy, and where should we reach them?":

- engagement score: points per event type (open, click, conversion, unsubscribe),
  each event's points halved every `half_life_days`, the way loyalty programmes
  score activity so that last week's click outweighs last year's;
- CLV block: probability alive, churn risk, expected purchases, the probability of
  at least one purchase and the expected discounted value in a horizon, from the
  BG/NBD + Gamma-Gamma model of `reports.clv`;
- channel response rates shrunk toward each channel's population rate (empirical
  Bayes with a beta-binomial prior), so a single click on one SMS does not make
  SMS the subject's "best" channel;
- best channel: the highest expected value per contact among channels the subject
  has not left and has not refused consent for.

Everything here is pure: the service reads events, transactions and per-channel
counts, and hands plain values and arrays in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats

from reports.clv import (
    ClvModel,
    RfmSummary,
    TimeUnit,
    customer_lifetime_value,
    expected_purchases,
    probability_alive,
)

__all__ = [
    "DEFAULT_POINTS",
    "BetaPrior",
    "ChannelChoice",
    "ChannelStats",
    "ClvProfile",
    "ClvProfiles",
    "EngagementBand",
    "EngagementBands",
    "EngagementConfig",
    "ShrunkRate",
    "SkipReason",
    "SubjectProfile",
    "best_channel",
    "clv_profile",
    "clv_profiles",
    "engagement_band",
    "engagement_bands",
    "engagement_score",
    "engagement_scores",
    "fit_beta_prior",
    "fit_channel_priors",
    "probability_of_purchase",
    "shrunk_rate",
]

FloatArray = NDArray[np.float64]

_SECONDS_PER_DAY = 86_400.0


# --------------------------------------------------------------------------
# Engagement score
# --------------------------------------------------------------------------

DEFAULT_POINTS: Mapping[str, float] = MappingProxyType(
    {"open": 1.0, "click": 3.0, "conversion": 10.0, "unsubscribe": -20.0}
)


@dataclass(frozen=True, slots=True)
class EngagementConfig:
    """Points per event type and how fast they fade.

    Event types not in `points` (custom events) score 0, so adding a new event type
    to the feed never changes scores until someone decides what it is worth.
    An unsubscribe scores negative: leaving a channel is the clearest disengagement.
    """

    points: Mapping[str, float] = field(default_factory=lambda: DEFAULT_POINTS)
    half_life_days: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.points, str) or not isinstance(self.points, Mapping):
            raise ValueError(f"points must map event types to numbers, got {type(self.points).__name__}")
        frozen: dict[str, float] = {}
        for event_type, value in self.points.items():
            if not isinstance(event_type, str) or not event_type:
                raise ValueError(f"points keys must be non-empty event type names, got {event_type!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"points[{event_type!r}] must be a finite number, got {value!r}")
            frozen[event_type] = float(value)
        object.__setattr__(self, "points", MappingProxyType(frozen))
        half_life = self.half_life_days
        if isinstance(half_life, bool) or not isinstance(half_life, (int, float)) or not (
            math.isfinite(half_life) and half_life > 0
        ):
            raise ValueError(f"half_life_days must be a finite number > 0, got {half_life!r}")
        object.__setattr__(self, "half_life_days", float(half_life))


def _require_aware(name: str, moment: Any) -> None:
    if not isinstance(moment, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")


def engagement_score(
    events: Sequence[tuple[str, datetime]],
    now: datetime,
    config: EngagementConfig = EngagementConfig(),
) -> float:
    """Score one subject's engagement from their events, recent ones counting most.

    score = sum over events of points[type] * 0.5 ** (age_days / half_life_days),
    with age_days = (now - occurred_at) in days. An event dated after `now` (a
    channel's clock running ahead) counts as age 0, never more than its full points.
    Datetimes must be timezone-aware, so that events from channels in different
    zones are aged on one clock.
    """
    _require_aware("now", now)
    total = 0.0
    for position, item in enumerate(events):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"events[{position}] must be a (type, occurred_at) pair, got {item!r}")
        event_type, occurred_at = item
        _require_aware(f"events[{position}] occurred_at", occurred_at)
        points = config.points.get(event_type, 0.0)
        if points == 0.0:
            continue
        age_days = max((now - occurred_at).total_seconds() / _SECONDS_PER_DAY, 0.0)
        total += points * 0.5 ** (age_days / config.half_life_days)
    return total


def engagement_scores(
    subject_index: ArrayLike,
    types: ArrayLike,
    ages_days: ArrayLike,
    config: EngagementConfig = EngagementConfig(),
    n_subjects: int | None = None,
) -> FloatArray:
    """Score many subjects at once from one flat event table, for bulk recomputation.

    Row i is one event of subject `subject_index[i]` (0 .. n_subjects-1) with type
    `types[i]`, `ages_days[i]` days old. The same formula as `engagement_score`
    (negative ages count as 0); subjects without events score 0. One pass of numpy:
    the event types are mapped to points once per distinct type, not once per row.
    """
    index = np.asarray(subject_index)
    kinds = np.asarray(types)
    ages = np.asarray(ages_days, dtype=np.float64)
    if index.ndim != 1 or kinds.ndim != 1 or ages.ndim != 1:
        raise ValueError(
            "subject_index, types and ages_days must be one-dimensional, "
            f"got shapes {index.shape}, {kinds.shape}, {ages.shape}"
        )
    if not (index.shape == kinds.shape == ages.shape):
        raise ValueError(
            "subject_index, types and ages_days must have equal lengths, "
            f"got {index.shape[0]}, {kinds.shape[0]}, {ages.shape[0]}"
        )
    if index.size and index.dtype.kind not in "iu":
        raise ValueError(f"subject_index must hold integers, got dtype {index.dtype}")
    if n_subjects is None:
        n_subjects = int(index.max()) + 1 if index.size else 0
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, (int, np.integer)) or n_subjects < 0:
        raise ValueError(f"n_subjects must be a whole number >= 0, got {n_subjects!r}")
    if index.size == 0:
        return np.zeros(int(n_subjects))
    if int(index.min()) < 0 or int(index.max()) >= n_subjects:
        bad = index[(index < 0) | (index >= n_subjects)][0]
        raise ValueError(f"subject_index must lie in [0, n_subjects={n_subjects}), got {bad}")
    if not np.all(np.isfinite(ages)):
        raise ValueError(f"ages_days must be finite, got {ages[~np.isfinite(ages)][0]}")
    distinct, which = np.unique(kinds, return_inverse=True)
    points_of = np.array([config.points.get(str(kind), 0.0) for kind in distinct], dtype=np.float64)
    weights = points_of[which.ravel()] * np.exp2(-np.maximum(ages, 0.0) / config.half_life_days)
    return np.bincount(index.astype(np.intp, copy=False), weights=weights, minlength=int(n_subjects))


EngagementBand = Literal["none", "low", "medium", "high"]
_BAND_NAMES: tuple[EngagementBand, ...] = ("none", "low", "medium", "high")


@dataclass(frozen=True, slots=True)
class EngagementBands:
    """Score thresholds for report breakdowns: none <= low < low band < medium <= medium band < high <= high.

    With the default points and thresholds, a fresh click (3) is "low", a fresh
    conversion (10) "medium", and 20 or more points "high"; a subject whose score is
    0 or below (no recent activity, or an unsubscribe outweighing it) is "none".
    """

    low: float = 0.0
    medium: float = 5.0
    high: float = 20.0

    def __post_init__(self) -> None:
        for name in ("low", "medium", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not (self.low < self.medium < self.high):
            raise ValueError(
                f"thresholds must rise, low < medium < high, got {self.low}, {self.medium}, {self.high}"
            )


def engagement_band(score: float, bands: EngagementBands = EngagementBands()) -> EngagementBand:
    """Name the band of one engagement score, for a profile or a report row."""
    if not math.isfinite(score):
        raise ValueError(f"score must be finite, got {score}")
    if score <= bands.low:
        return "none"
    if score < bands.medium:
        return "low"
    if score < bands.high:
        return "medium"
    return "high"


def engagement_bands(scores: ArrayLike, bands: EngagementBands = EngagementBands()) -> NDArray[np.str_]:
    """Name the band of many scores at once, for report breakdowns over all subjects."""
    values = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"scores must be finite, got {values[~np.isfinite(values)].ravel()[0]}")
    # "none" is closed on the right (score <= low), the others on the left.
    position = np.where(values <= bands.low, 0, np.searchsorted([bands.medium, bands.high], values, side="right") + 1)
    return np.asarray(_BAND_NAMES)[position]


# --------------------------------------------------------------------------
# Empirical-Bayes response rates
# --------------------------------------------------------------------------

# Log-parameters are kept within these bounds: with no successes at all the
# likelihood keeps rising as alpha -> 0 (and with rates of only 0 or 1 as
# alpha + beta -> 0); the bound stops the search at a finite prior that says so.
# Without over-dispersion the prior is set to this bound's strength directly.
_LOG_BOUND = math.log(1e8)


@dataclass(frozen=True, slots=True)
class BetaPrior:
    """A population's response rates ~ Beta(alpha, beta), fitted across its subjects.

    log_likelihood is the beta-binomial marginal log-likelihood of the data it was
    fitted on (binomial coefficients included), n_subjects the subjects with at
    least one trial. `error` names degenerate data ("NO_TRIALS"); alpha and beta
    are then NaN and the prior cannot rank anything. `converged` is False when the
    maximum lies at an edge: no over-dispersion (alpha + beta runs off toward
    infinity: every subject gets the pooled rate), or no successes or no failures
    at all (the mean runs off to 0 or 1). The prior is still usable and says just that.
    """

    alpha: float
    beta: float
    log_likelihood: float = math.nan
    n_subjects: int = 0
    converged: bool = True
    error: str | None = None

    def __post_init__(self) -> None:
        if self.error is None:
            for name in ("alpha", "beta"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0
                ):
                    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    @property
    def mean(self) -> float:
        """The population's mean rate, alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def strength(self) -> float:
        """alpha + beta: how many trials of a subject's own it takes to weigh as much as the population."""
        return self.alpha + self.beta


def _counts(successes: ArrayLike, trials: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    s = np.asarray(successes)
    n = np.asarray(trials)
    if s.ndim != 1 or n.ndim != 1:
        raise ValueError(f"successes and trials must be one-dimensional, got shapes {s.shape}, {n.shape}")
    if s.shape != n.shape:
        raise ValueError(f"successes and trials must have equal lengths, got {s.shape[0]}, {n.shape[0]}")
    for name, arr in (("successes", s), ("trials", n)):
        as_float = arr.astype(np.float64)
        bad = ~np.isfinite(as_float) | (as_float < 0) | (as_float != np.round(as_float))
        if np.any(bad):
            raise ValueError(f"{name} must hold whole numbers >= 0, got {arr[bad][0]}")
    s, n = s.astype(np.int64), n.astype(np.int64)
    if np.any(s > n):
        i = int(np.flatnonzero(s > n)[0])
        raise ValueError(f"successes must be <= trials, got {s[i]} of {n[i]} at index {i}")
    return s, n


def _betabinom_negll(
    theta: FloatArray, s: FloatArray, n: FloatArray, weight: FloatArray, log_choose: float
) -> tuple[float, FloatArray]:
    """Negative beta-binomial log-likelihood and its gradient in (log alpha, log beta)."""
    a, b = np.exp(theta)
    # log P(s | n, a, b) = log C(n, s) + log B(s + a, n - s + b) - log B(a, b)
    ll = log_choose + float(weight @ (special.betaln(s + a, n - s + b) - special.betaln(a, b)))
    dg = special.digamma
    common = dg(a + b) - dg(n + a + b)
    g_a = float(weight @ (dg(s + a) - dg(a) + common))
    g_b = float(weight @ (dg(n - s + b) - dg(b) + common))
    return -ll, -np.array([g_a * a, g_b * b])


def _moments_start(s: FloatArray, n: FloatArray, weight: FloatArray) -> FloatArray:
    """Method-of-moments (alpha, beta) as log-parameters: the optimiser's start.

    For rates p ~ Beta with mean mu and intra-class correlation rho = 1 / (alpha + beta + 1),
    Var(s/n) = mu (1 - mu) (1/n + (1 - 1/n) rho); averaging over subjects and solving for rho.
    """
    total = float(weight @ n)
    mu = min(max(float(weight @ s) / total, 1e-6), 1.0 - 1e-6)
    count = float(weight.sum())
    raw = s / n
    spread = float(weight @ (raw - mu) ** 2) / count
    inv_n = float(weight @ (1.0 / n)) / count
    rho = (spread / (mu * (1.0 - mu)) - inv_n) / max(1.0 - inv_n, 1e-9)
    rho = min(max(rho, 1e-4), 0.5)
    strength = 1.0 / rho - 1.0
    return np.log([mu * strength, (1.0 - mu) * strength])


def fit_beta_prior(successes: ArrayLike, trials: ArrayLike) -> BetaPrior:
    """Fit a population's Beta prior of response rates by maximising the beta-binomial marginal likelihood.

    Each subject i contributes P(s_i | n_i) = C(n_i, s_i) B(s_i + alpha, n_i - s_i + beta) / B(alpha, beta)
    (the beta-binomial; e.g. Casella 1985, "An introduction to empirical Bayes data
    analysis"). It is maximised over (log alpha, log beta) with L-BFGS-B and its
    analytic gradient, from the method-of-moments estimate. Subjects without trials
    carry no information and are left out; identical (s, n) pairs are evaluated once.
    """
    s, n = _counts(successes, trials)
    keep = n > 0
    s, n = s[keep], n[keep]
    if s.size == 0:
        return BetaPrior(math.nan, math.nan, math.nan, 0, False, "NO_TRIALS")
    pairs, weight = np.unique(np.stack([s, n], axis=1), axis=0, return_counts=True)
    ps, pn = pairs[:, 0].astype(np.float64), pairs[:, 1].astype(np.float64)
    w = weight.astype(np.float64)
    log_choose = float(
        w @ (special.gammaln(pn + 1.0) - special.gammaln(ps + 1.0) - special.gammaln(pn - ps + 1.0))
    )
    pooled = float(ps @ w) / float(pn @ w)
    if 0.0 < pooled < 1.0 and _overdispersion_score(ps, pn, w, pooled) <= 0.0:
        # The likelihood rises all the way to alpha + beta -> inf: the binomial at the pooled
        # rate, i.e. complete pooling. Say so with the strongest prior the bounds allow
        # rather than wherever a search along that flat ridge would stop.
        strength = math.exp(_LOG_BOUND)
        limit = log_choose + float(w @ (special.xlogy(ps, pooled) + special.xlog1py(pn - ps, -pooled)))
        return BetaPrior(pooled * strength, (1.0 - pooled) * strength, limit, int(s.size), False)
    args = (ps, pn, w, log_choose)
    start = np.clip(_moments_start(ps, pn, w), -_LOG_BOUND, _LOG_BOUND)
    result = optimize.minimize(
        _betabinom_negll,
        start,
        args=args,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 2,
        options={"maxiter": 1000, "ftol": 1e-14, "gtol": 1e-9},
    )
    theta = np.asarray(result.x, dtype=np.float64)
    alpha, beta = (float(v) for v in np.exp(theta))
    # With no successes (or no failures) at all the mean runs off to 0 (or 1): a bound, not a maximum.
    converged = 0.0 < pooled < 1.0 and _at_interior_maximum(theta, args)
    return BetaPrior(alpha, beta, -float(result.fun), int(s.size), converged)


def _overdispersion_score(s: FloatArray, n: FloatArray, weight: FloatArray, mu: float) -> float:
    """Slope of the log-likelihood in theta = 1 / (alpha + beta) at theta = 0 (the binomial), mean held at mu.

    Writing B(s+a, n-s+b) / B(a, b) as prod_{j<s} (mu + j theta) prod_{j<n-s} (1 - mu + j theta)
    / prod_{j<n} (1 + j theta), its log's derivative at theta = 0 is
    s(s-1) / (2 mu) + (n-s)(n-s-1) / (2 (1-mu)) - n(n-1) / 2 per subject. Summed at the
    pooled mu it equals sum[(s - n mu)^2 - n mu (1-mu)] / (2 mu (1-mu)), the numerator of
    Tarone's (1979, Biometrika 66) test of the binomial against the beta-binomial: positive
    when the rates vary more than binomial noise explains. At or below 0 the likelihood
    has no interior maximum.
    """
    per_subject = s * (s - 1.0) / (2.0 * mu) + (n - s) * (n - s - 1.0) / (2.0 * (1.0 - mu)) - n * (n - 1.0) / 2.0
    return float(weight @ per_subject)


def _at_interior_maximum(theta: FloatArray, args: tuple[Any, ...]) -> bool:
    """True when theta is a proper maximum: off the bounds, a positive definite Hessian, a vanishing Newton step.

    The optimiser's own verdict is not enough: without over-dispersion it reports
    success somewhere along the flat ridge alpha + beta -> inf. The Hessian comes
    from central differences of the analytic gradient.
    """
    if not np.all(np.isfinite(theta)) or np.any(np.abs(theta) >= _LOG_BOUND * (1.0 - 1e-6)):
        return False
    gradient = _betabinom_negll(theta, *args)[1]
    h = 1e-4
    hessian = np.empty((2, 2))
    for i in range(2):
        step = np.zeros(2)
        step[i] = h
        hessian[:, i] = (_betabinom_negll(theta + step, *args)[1] - _betabinom_negll(theta - step, *args)[1]) / (2 * h)
    hessian = 0.5 * (hessian + hessian.T)
    try:
        chol = np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return False
    newton = np.linalg.solve(chol.T, np.linalg.solve(chol, gradient))
    return bool(np.all(np.isfinite(newton)) and np.max(np.abs(newton)) < 1e-4)


def fit_channel_priors(channels: ArrayLike, successes: ArrayLike, trials: ArrayLike) -> dict[str, BetaPrior]:
    """Fit one prior per channel from rows of (channel, successes, trials), one row per subject and channel.

    This is the shape a GROUP BY subject, channel query returns; each channel's
    population is the subjects contacted on it.
    """
    names = np.asarray(channels)
    s, n = _counts(successes, trials)
    if names.ndim != 1 or names.shape != s.shape:
        raise ValueError(f"channels must be one-dimensional with the counts' length {s.shape[0]}, got {names.shape}")
    priors: dict[str, BetaPrior] = {}
    for name in np.unique(names):
        mask = names == name
        priors[str(name)] = fit_beta_prior(s[mask], n[mask])
    return priors


@dataclass(frozen=True, slots=True)
class ShrunkRate:
    """A subject's response rate after shrinkage, with an equal-tailed credible interval.

    The interval is the posterior Beta(alpha + s, beta + n - s) with the prior's
    parameters taken as known (parametric empirical Bayes): it does not widen for
    the uncertainty in alpha and beta, which is small next to one subject's when
    the population has thousands of subjects.
    """

    rate: float
    lower: float
    upper: float
    successes: int
    trials: int
    credibility: float


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def shrunk_rate(successes: int, trials: int, prior: BetaPrior, credibility: float = 0.95) -> ShrunkRate:
    """Shrink one subject's observed rate toward the population's: (alpha + s) / (alpha + beta + n).

    The posterior mean under a Beta(alpha, beta) prior and a binomial likelihood;
    with few trials it stays near the population mean, with many it follows the
    subject's own rate.
    """
    s = _whole("successes", successes)
    n = _whole("trials", trials)
    if s > n:
        raise ValueError(f"successes must be <= trials, got {s} of {n}")
    if prior.error is not None:
        raise ValueError(f"prior must be fitted, got one with error {prior.error!r}")
    if isinstance(credibility, bool) or not isinstance(credibility, (int, float)) or not (0 < credibility < 1):
        raise ValueError(f"credibility must lie in (0, 1), got {credibility!r}")
    a, b = prior.alpha + s, prior.beta + n - s
    tail = (1.0 - credibility) / 2.0
    lower, upper = stats.beta.ppf([tail, 1.0 - tail], a, b)
    return ShrunkRate(a / (a + b), float(lower), float(upper), s, n, float(credibility))


# --------------------------------------------------------------------------
# Best channel
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """One subject's history on one channel: responses (successes) out of contacts (trials)."""

    successes: int = 0
    trials: int = 0

    def __post_init__(self) -> None:
        _whole("successes", self.successes)
        _whole("trials", self.trials)
        if self.successes > self.trials:
            raise ValueError(f"successes must be <= trials, got {self.successes} of {self.trials}")


SkipReason = Literal["unsubscribed", "no_consent", "no_prior", "no_value"]
ChoiceReason = Literal["highest_expected_value", "no_eligible_channel", "no_channels"]


@dataclass(frozen=True, slots=True)
class ChannelChoice:
    """The best channel for a subject, what every eligible channel is worth, and why others were left out.

    expected_value_per_contact and rates hold the ranked (eligible) channels, best
    first; skipped maps every other known channel to its reason. channel is None
    when no channel is eligible (reason "no_eligible_channel") or none is known
    ("no_channels").
    """

    channel: str | None
    expected_value_per_contact: dict[str, float]
    reason: ChoiceReason
    skipped: dict[str, SkipReason]
    rates: dict[str, ShrunkRate] = field(default_factory=dict)


def _per_channel(name: str, value: Mapping[str, float] | float, channel: str) -> float | None:
    if isinstance(value, Mapping):
        found = value.get(channel)
        if found is None:
            return None
    else:
        found = value
    if isinstance(found, bool) or not isinstance(found, (int, float)) or not math.isfinite(found):
        raise ValueError(f"{name} for channel {channel!r} must be a finite number, got {found!r}")
    return float(found)


def best_channel(
    channel_stats: Mapping[str, ChannelStats],
    priors: Mapping[str, BetaPrior],
    value_per_response: Mapping[str, float] | float,
    left: Set[str] = frozenset(),
    consent: Mapping[str, bool] | None = None,
    *,
    require_consent: bool = False,
    cost_per_contact: Mapping[str, float] | float = 0.0,
    credibility: float = 0.95,
) -> ChannelChoice:
    """Pick the channel with the highest expected value per contact that the subject may be reached on.

    Expected value per contact = shrunk response rate x value per response - cost per
    contact. Candidates are the channels with a population prior or with the
    subject's own history (a channel never used on this subject is rated at its
    population mean). Skipped, in this order: channels the subject unsubscribed from
    ("unsubscribed"), channels whose consent is False, or missing when
    `require_consent` is set ("no_consent"), channels without a fitted prior
    ("no_prior") and without a value per response ("no_value"). Ties go to the
    channel whose name sorts first, so the answer does not depend on dict order.
    """
    if isinstance(left, str):
        raise ValueError(f"left must be a set of channel names, got the string {left!r}")
    consent = {} if consent is None else consent
    for channel, given in consent.items():
        if not isinstance(given, bool):
            raise ValueError(f"consent for channel {channel!r} must be true or false, got {given!r}")
    for channel, channel_history in channel_stats.items():
        if not isinstance(channel_history, ChannelStats):
            raise ValueError(
                f"channel_stats[{channel!r}] must be ChannelStats, got {type(channel_history).__name__}"
            )

    candidates = sorted(set(priors) | set(channel_stats))
    if not candidates:
        return ChannelChoice(None, {}, "no_channels", {})
    skipped: dict[str, SkipReason] = {}
    values: dict[str, float] = {}
    rates: dict[str, ShrunkRate] = {}
    for channel in candidates:
        prior = priors.get(channel)
        value = _per_channel("value_per_response", value_per_response, channel)
        if channel in left:
            skipped[channel] = "unsubscribed"
        elif consent.get(channel, not require_consent) is False:
            skipped[channel] = "no_consent"
        elif prior is None or prior.error is not None:
            skipped[channel] = "no_prior"
        elif value is None:
            skipped[channel] = "no_value"
        else:
            cost = _per_channel("cost_per_contact", cost_per_contact, channel) or 0.0
            history = channel_stats.get(channel, ChannelStats())
            rate = shrunk_rate(history.successes, history.trials, prior, credibility)
            rates[channel] = rate
            values[channel] = rate.rate * value - cost
    if not values:
        return ChannelChoice(None, {}, "no_eligible_channel", skipped)
    ranked = sorted(values, key=lambda c: (-values[c], c))
    return ChannelChoice(
        ranked[0],
        {c: values[c] for c in ranked},
        "highest_expected_value",
        skipped,
        {c: rates[c] for c in ranked},
    )


# --------------------------------------------------------------------------
# CLV block
# --------------------------------------------------------------------------


def probability_of_purchase(model: ClvModel, summary: RfmSummary, horizon: float | ArrayLike) -> FloatArray:
    """Probability that each customer buys at least once in the next `horizon` time units.

    Exact under the BG/NBD model (and MBG/NBD, whose P(alive) it then uses), derived here from its individual-level
    assumptions (Fader, Hardie & Lee 2005, "Counting your customers the easy way",
    section 3): purchases arrive as Poisson(lambda) while the customer is alive, and
    dropout happens only right after a purchase. A customer who has dropped out never
    buys again; one who is alive at T buys in (T, T + t] unless the Poisson process
    is silent for t, with probability e^(-lambda t). Given the history (x, t_x, T)
    and alive, p and lambda are independent and lambda ~ Gamma(r + x, alpha + T)
    (the "alive" branch of the likelihood, (1-p)^x lambda^x e^(-lambda T), times the
    priors), so

        P(X(t) > 0 | x, t_x, T) = P(alive | x, t_x, T) * (1 - ((alpha + T) / (alpha + T + t))^(r + x)),

    which is 1 - P(X(t) = 0 | x, t_x, T), the n = 0 term of the model's conditional
    distribution. It is not expected purchases: those count repeat buys, this does not.
    """
    if summary.time_unit != model.time_unit:
        raise ValueError(f"summary time_unit must be the model's {model.time_unit!r}, got {summary.time_unit!r}")
    t = np.asarray(horizon, dtype=np.float64)
    if np.any(~(t >= 0)):
        raise ValueError(f"horizon must be >= 0, got {t[~(t >= 0)].ravel()[0]}")
    fit = model.bgnbd
    alive = probability_alive(fit, summary)
    x = summary.frequency.astype(np.float64)
    # 1 - (1 - u)^k with u = t / (alpha + T + t), as -expm1(k log1p(-u)) for small horizons.
    u = t / (fit.alpha + summary.T + t)
    return alive * -np.expm1((fit.r + x) * np.log1p(-u))


@dataclass(frozen=True, slots=True)
class ClvProfile:
    """A subject's value block: are they still a customer, and what will they buy in the horizon.

    churn_risk = 1 - probability_alive. Under BG/NBD a customer drops out only right
    after a repeat purchase, so one with no repeat purchase yet is alive with
    probability 1 (churn risk 0) however long ago they bought; their
    purchase_probability is the better signal of lapsing. Under MBG/NBD they may
    have left right after the first purchase, and P(alive) falls with time.
    `single_purchase` says the value rests on one purchase (no repeat), and `note`
    says so in words. purchase_probability is P(at least one purchase in the
    horizon), expected_purchases the mean count, expected_value the discounted
    expected spend (purchase model x Gamma-Gamma). `error` names why fields are None:
    "NO_MODEL" (no model yet), the BG/NBD fit's error (e.g. "NO_REPEAT_PURCHASES"),
    or, for expected_value alone, "SPEND_" + the Gamma-Gamma fit's error or
    "SPEND_UNBOUNDED" (fitted q <= 1: the mean spend does not exist).
    """

    probability_alive: float | None
    churn_risk: float | None
    expected_purchases: float | None
    purchase_probability: float | None
    expected_value: float | None
    horizon: float
    time_unit: TimeUnit | None
    error: str | None = None
    model: str | None = None  # "bgnbd" or "mbgnbd"
    repeat_purchases: int | None = None
    single_purchase: bool | None = None
    note: str | None = None
    as_of: str | None = None  # the calibration end the values are measured at (set by the service)


SINGLE_PURCHASE_NOTES = {
    "bgnbd": ("Rests on a single purchase. Under BG/NBD a customer who never bought again cannot have dropped "
              "out, so probability_alive is 1 by the model's construction, not by evidence; read "
              "purchase_probability instead, or fit with model mbgnbd."),
    "mbgnbd": ("Rests on a single purchase: these values come from how similar customers behaved and from the "
               "time since that purchase, nothing else about this customer."),
}


@dataclass(frozen=True, slots=True)
class ClvProfiles:
    """The value block of many subjects as arrays (NaN where not computable), for bulk recomputation."""

    probability_alive: FloatArray
    churn_risk: FloatArray
    expected_purchases: FloatArray
    purchase_probability: FloatArray
    expected_value: FloatArray
    horizon: float
    time_unit: TimeUnit | None
    error: str | None = None


def _horizon_args(horizon_periods: int, discount: float, period_length: float) -> float:
    if isinstance(horizon_periods, bool) or not isinstance(horizon_periods, (int, np.integer)) or horizon_periods < 1:
        raise ValueError(f"horizon_periods must be a whole number >= 1, got {horizon_periods!r}")
    if isinstance(discount, bool) or not isinstance(discount, (int, float)) or not (
        math.isfinite(discount) and discount > -1.0
    ):
        raise ValueError(f"discount must be a finite rate per period > -1, got {discount!r}")
    if isinstance(period_length, bool) or not isinstance(period_length, (int, float)) or not (
        math.isfinite(period_length) and period_length > 0
    ):
        raise ValueError(f"period_length must be a finite number > 0, got {period_length!r}")
    return float(horizon_periods) * float(period_length)


def clv_profiles(
    model: ClvModel | None,
    summary: RfmSummary,
    horizon_periods: int,
    discount: float,
    period_length: float = 1.0,
) -> ClvProfiles:
    """Compute the value block of every customer in an RFM summary over `horizon_periods` periods.

    A period is `period_length` of the model's time units (weeks by default);
    `discount` is the discount rate per period, applied to expected value only.
    """
    horizon = _horizon_args(horizon_periods, discount, period_length)
    n = len(summary)
    nan = np.full(n, np.nan)
    if model is None:
        return ClvProfiles(nan, nan, nan, nan, nan, horizon, None, "NO_MODEL")
    if summary.time_unit != model.time_unit:
        raise ValueError(f"summary time_unit must be the model's {model.time_unit!r}, got {summary.time_unit!r}")
    if model.bgnbd.error is not None:
        return ClvProfiles(nan, nan, nan, nan, nan, horizon, model.time_unit, model.bgnbd.error)
    alive = probability_alive(model.bgnbd, summary)
    purchases = expected_purchases(model.bgnbd, summary, horizon)
    buy = probability_of_purchase(model, summary, horizon)
    error: str | None = None
    if model.gamma_gamma.error is not None:
        value, error = nan, f"SPEND_{model.gamma_gamma.error}"
    else:
        value = customer_lifetime_value(
            model.bgnbd, model.gamma_gamma, summary, int(horizon_periods), float(discount), float(period_length)
        )
        if not np.all(np.isfinite(value)):
            value, error = np.where(np.isfinite(value), value, np.nan), "SPEND_UNBOUNDED"
    return ClvProfiles(alive, 1.0 - alive, purchases, buy, value, horizon, model.time_unit, error)


def _optional(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def clv_profile(
    model: ClvModel | None,
    frequency: int,
    recency: float,
    T: float,
    monetary: float,
    horizon_periods: int,
    discount: float,
    period_length: float = 1.0,
) -> ClvProfile:
    """Compute one customer's value block from their RFM row, in the model's time unit.

    frequency is repeat purchases, recency the time of the last one since the first
    purchase, T the time since the first purchase, monetary the mean repeat spend
    (see `reports.clv.RfmSummary`). A subject who never bought has no RFM row and
    no value block.
    """
    unit = model.time_unit if model is not None else "W"
    summary = RfmSummary(
        np.array([frequency]), np.array([recency], dtype=np.float64), np.array([T], dtype=np.float64),
        np.array([monetary], dtype=np.float64), unit,
    )
    block = clv_profiles(model, summary, horizon_periods, discount, period_length)
    single = int(summary.frequency[0]) == 0
    kind = model.bgnbd.model if model is not None else None
    return ClvProfile(
        probability_alive=_optional(block.probability_alive[0]),
        churn_risk=_optional(block.churn_risk[0]),
        expected_purchases=_optional(block.expected_purchases[0]),
        purchase_probability=_optional(block.purchase_probability[0]),
        expected_value=_optional(block.expected_value[0]),
        horizon=block.horizon,
        time_unit=block.time_unit,
        error=block.error,
        model=kind,
        repeat_purchases=int(summary.frequency[0]),
        single_purchase=single,
        note=SINGLE_PURCHASE_NOTES.get(kind or "bgnbd") if single else None,
    )


# --------------------------------------------------------------------------
# The profile
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubjectProfile:
    """The 360-degree view: caller-supplied attributes next to what nextbest computed."""

    subject_id: str
    attributes: Mapping[str, Any]
    engagement_score: float
    engagement_band: EngagementBand
    clv: ClvProfile | None
    channel: ChannelChoice | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form: computed fields apart from the supplied ones, non-finite numbers as null."""
        clv = None
        if self.clv is not None:
            clv = {
                "probability_alive": self.clv.probability_alive,
                "churn_risk": self.clv.churn_risk,
                "expected_purchases": self.clv.expected_purchases,
                "purchase_probability": self.clv.purchase_probability,
                "expected_value": self.clv.expected_value,
                "horizon": self.clv.horizon,
                "time_unit": self.clv.time_unit,
                "error": self.clv.error,
                "model": self.clv.model,
                "as_of": self.clv.as_of,
                "repeat_purchases": self.clv.repeat_purchases,
                "single_purchase": self.clv.single_purchase,
                "note": self.clv.note,
            }
        channel = None
        if self.channel is not None:
            channel = {
                "best": self.channel.channel,
                "reason": self.channel.reason,
                "expected_value_per_contact": {
                    name: _optional(value) for name, value in self.channel.expected_value_per_contact.items()
                },
                "rates": {
                    name: {"rate": rate.rate, "lower": rate.lower, "upper": rate.upper,
                           "successes": rate.successes, "trials": rate.trials}
                    for name, rate in self.channel.rates.items()
                },
                "skipped": dict(self.channel.skipped),
            }
        return {
            "subject_id": self.subject_id,
            "attributes": dict(self.attributes),
            "computed": {
                "engagement": {"score": _optional(self.engagement_score), "band": self.engagement_band},
                "clv": clv,
                "channel": channel,
            },
        }
