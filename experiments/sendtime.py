"""The moment: which hour of the day a subject is most likely to respond, outside quiet hours.

Each subject's opens and clicks, counted by hour of the day in the subject's own time
zone, are few; the population's are many. A Dirichlet-multinomial model shrinks the
subject's hours toward the population's pattern (parametric empirical Bayes, as the
best channel's rates are shrunk with a beta-binomial): the population's hour shares
`p` are the prior mean, and the prior's weight `A` (in events) is fitted by maximum
likelihood over all subjects' hour counts. A subject with n events then gets

    share[h] = (count[h] + A * p[h]) / (n + A)

so one click at 03:00 moves little, and fifty opens at 19:00 move a lot. The send
time is the next start of the best hour outside the quiet hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

HOURS = 24


@dataclass(frozen=True, slots=True)
class HourPrior:
    """The population's hour pattern: mean shares `shares` (sum 1) with weight `strength` events."""

    shares: tuple[float, ...]
    strength: float
    subjects: int = 0
    events: int = 0

    @classmethod
    def uniform(cls) -> HourPrior:
        return cls(shares=tuple([1.0 / HOURS] * HOURS), strength=HOURS)


@dataclass(frozen=True, slots=True)
class HourChoice:
    hour: int | None  # local hour of day (0-23), None when every hour is quiet
    shares: tuple[float, ...]  # the shrunk response share of each hour
    events: int  # the subject's own events behind the estimate
    reason: str


def _as_counts(counts: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(counts, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.shape[-1] != HOURS:
        raise ValueError(f"hour counts need {HOURS} columns, got {array.shape[-1]}")
    if (array < 0).any() or not np.isfinite(array).all():
        raise ValueError("hour counts must be finite and non-negative")
    return array


def fit_hour_prior(counts_per_subject: ArrayLike, min_strength: float = 1.0, max_strength: float = 1e4) -> HourPrior:
    """Fit the population's hour prior by maximum likelihood of the Dirichlet-multinomial.

    The mean shares are the pooled shares (with one pseudo-event per hour, so no hour
    is impossible); the strength maximises the marginal likelihood of every subject's
    counts (subjects with fewer than two events carry no information on it)."""
    counts = _as_counts(counts_per_subject)
    totals = counts.sum(axis=1)
    pooled = counts.sum(axis=0) + 1.0
    shares = pooled / pooled.sum()
    informative = counts[totals >= 2]
    if len(informative) == 0:
        return HourPrior(shares=tuple(shares), strength=float(HOURS), subjects=len(counts), events=int(totals.sum()))
    n = informative.sum(axis=1)

    def negative_log_likelihood(log_strength: float) -> float:
        a = float(np.exp(log_strength))
        alpha = a * shares
        return -float(np.sum(gammaln(a) - gammaln(n + a))
                      + np.sum(gammaln(informative + alpha) - gammaln(alpha)))

    best = minimize_scalar(negative_log_likelihood, bounds=(np.log(min_strength), np.log(max_strength)),
                           method="bounded", options={"xatol": 1e-6})
    return HourPrior(shares=tuple(float(s) for s in shares), strength=float(np.exp(best.x)), subjects=len(counts),
                     events=int(totals.sum()))


def shrunk_shares(subject_counts: ArrayLike, prior: HourPrior) -> NDArray[np.float64]:
    """The subject's posterior mean response share per hour."""
    counts = _as_counts(subject_counts)[0]
    return (counts + prior.strength * np.asarray(prior.shares)) / (counts.sum() + prior.strength)


def quiet_mask(start: str | None, end: str | None) -> tuple[bool, ...]:
    """Which whole local hours fall in quiet hours HH:MM-HH:MM (wrapping midnight); an hour is quiet if any of it is."""
    if not start or not end:
        return tuple([False] * HOURS)
    begin, finish = _minutes(start), _minutes(end)
    quiet = []
    for hour in range(HOURS):
        minutes = range(hour * 60, hour * 60 + 60)
        if begin <= finish:
            quiet.append(any(begin <= m < finish for m in minutes))
        else:
            quiet.append(any(m >= begin or m < finish for m in minutes))
    return tuple(quiet)


def best_hour(subject_counts: ArrayLike, prior: HourPrior, quiet: Sequence[bool] = (False,) * HOURS) -> HourChoice:
    """The hour with the highest shrunk share among the hours that are not quiet."""
    shares = shrunk_shares(subject_counts, prior)
    events = int(_as_counts(subject_counts).sum())
    open_hours = [h for h in range(HOURS) if not quiet[h]]
    if not open_hours:
        return HourChoice(None, tuple(float(s) for s in shares), events, "every hour is within quiet hours")
    hour = max(open_hours, key=lambda h: (shares[h], -h))
    basis = (f"{events} of the subject's own opens and clicks, shrunk toward the population's hours "
             f"(worth {prior.strength:.1f} events)") if events else "the population's hours (no own opens or clicks yet)"
    return HourChoice(hour, tuple(float(s) for s in shares), events,
                      f"{hour:02d}:00 local has the highest expected response share ({shares[hour]:.1%}) from {basis}")


def next_send_at(now: datetime, hour: int, timezone: str) -> datetime:
    """The next moment at or after `now` that lies in `hour` local time (now itself when already in it)."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    if local.hour == hour:
        return now
    day = local.date()
    for _ in range(3):
        candidate = datetime.combine(day, time(hour), tzinfo=zone)
        # A local hour skipped by a daylight-saving change does not exist: take the next real instant.
        candidate = candidate.astimezone(ZoneInfo("UTC")).astimezone(zone)
        if candidate > local:
            return candidate.astimezone(now.tzinfo)
        day += timedelta(days=1)
    raise AssertionError("an hour of the day recurs within three days")


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)
