"""Send time: the Dirichlet-multinomial hour prior against scipy's own distribution, shrinkage,
quiet hours and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from scipy.stats import dirichlet_multinomial

from experiments.sendtime import HOURS, HourPrior, best_hour, fit_hour_prior, next_send_at, quiet_mask, shrunk_shares


def simulated_counts(strength: float, subjects: int, events: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(HOURS, 5.0))
    per_subject = rng.dirichlet(strength * shares, size=subjects)
    counts = np.array([rng.multinomial(events, p) for p in per_subject])
    return counts, shares


def test_the_fitted_strength_maximises_scipys_dirichlet_multinomial_likelihood() -> None:
    counts, _ = simulated_counts(strength=8.0, subjects=400, events=12, seed=3)
    prior = fit_hour_prior(counts)
    shares = np.asarray(prior.shares)

    def loglik(strength: float) -> float:  # scipy's pmf, multinomial coefficient and all
        return float(sum(dirichlet_multinomial.logpmf(row, strength * shares, row.sum()) for row in counts))

    best = loglik(prior.strength)
    for factor in (0.9, 1.1, 0.97, 1.03):
        assert best >= loglik(prior.strength * factor)
    assert 5.0 < prior.strength < 13.0  # the simulated strength, 8, within sampling error


def test_a_few_events_move_little_and_many_move_a_lot() -> None:
    prior = HourPrior(shares=tuple([1 / HOURS] * HOURS), strength=24.0)
    one = np.zeros(HOURS)
    one[3] = 1
    many = np.zeros(HOURS)
    many[19] = 50
    assert shrunk_shares(one, prior)[3] == pytest.approx((1 + 1) / (1 + 24))
    assert shrunk_shares(many, prior)[19] == pytest.approx((50 + 1) / (50 + 24))
    assert best_hour(many, prior).hour == 19


def test_the_best_hour_is_never_quiet() -> None:
    prior = HourPrior(shares=tuple([1 / HOURS] * HOURS), strength=4.0)
    counts = np.zeros(HOURS)
    counts[[2, 22]] = [40, 10]
    quiet = quiet_mask("21:00", "08:00")
    assert [h for h in range(HOURS) if quiet[h]] == [0, 1, 2, 3, 4, 5, 6, 7, 21, 22, 23]
    choice = best_hour(counts, prior, quiet)
    assert choice.hour not in (2, 22) and not quiet[choice.hour]
    assert best_hour(counts, prior, (True,) * HOURS).hour is None
    assert quiet_mask("12:30", "13:00") == tuple(h == 12 for h in range(HOURS))


def test_next_send_at_in_the_subjects_time_zone_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # 23:00 in Berlin, the night clocks go forward
    at = next_send_at(now, 2, "Europe/Berlin")  # 02:00 does not exist on 29 March
    assert at > now and at.astimezone(berlin).hour == 3 and at.astimezone(berlin).day == 29
    at = next_send_at(now, 19, "Europe/Berlin")
    assert at.astimezone(berlin) == datetime(2026, 3, 29, 19, 0, tzinfo=berlin)  # CEST now: 17:00 UTC
    assert at.astimezone(UTC).hour == 17
    inside = datetime(2026, 3, 29, 17, 30, tzinfo=UTC)
    assert next_send_at(inside, 19, "Europe/Berlin") == inside
    tokyo = next_send_at(now, 9, "Asia/Tokyo")
    assert tokyo.astimezone(ZoneInfo("Asia/Tokyo")).hour == 9 and tokyo > now


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="24 columns"):
        fit_hour_prior(np.zeros((3, 12)))
    with pytest.raises(ValueError, match="non-negative"):
        fit_hour_prior(-np.ones((3, HOURS)))
