"""Customer profiles: engagement by hand, empirical Bayes against simulation, best channel, CLV block.

Sources:
- Beta-binomial likelihood: scipy.stats.betabinom.logpmf, summed, is the reference
  the fitted marginal log-likelihood must equal; an independent Nelder-Mead search
  on that sum must find the same maximum.
- BG/NBD purchase probability: checked against a Monte Carlo simulation of the
  model's individual-level story (Fader, Hardie & Lee 2005, "Counting your
  customers the easy way", section 3) with fixed seeds, at the published CDNOW
  parameters r=0.243, alpha=4.414, a=0.793, b=2.426 (same paper, table 1).
- Real data: the CDNOW 1/10 sample (/work/shared/data/cdnow/CDNOW_sample.txt),
  39-week calibration ending 1997-09-30, as in tests/reports/test_clv.py.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from experiments.profiles import (
    BetaPrior,
    ChannelChoice,
    ChannelStats,
    ClvProfile,
    EngagementBands,
    EngagementConfig,
    SubjectProfile,
    best_channel,
    clv_profile,
    clv_profiles,
    engagement_band,
    engagement_bands,
    engagement_score,
    engagement_scores,
    fit_beta_prior,
    fit_channel_priors,
    probability_of_purchase,
    shrunk_rate,
)
from reports.clv import (
    BgNbdFit,
    ClvModel,
    GammaGammaFit,
    RfmSummary,
    expected_purchases,
    fit_clv_model,
    summarise_transactions,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)
CDNOW = Path(__file__).resolve().parents[3] / "shared" / "data" / "cdnow"
PUBLISHED_BGNBD = BgNbdFit(r=0.243, alpha=4.414, a=0.793, b=2.426, log_likelihood=-9582.4,
                           n_customers=2357, converged=True)
PUBLISHED_GG = GammaGammaFit(p=6.25, q=3.74, v=15.44, log_likelihood=math.nan, n_customers=946)
PUBLISHED = ClvModel(PUBLISHED_BGNBD, PUBLISHED_GG, "W")


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


# --- engagement score ----------------------------------------------------------------


def test_engagement_score_by_hand() -> None:
    # Default points open 1, click 3, conversion 10, unsubscribe -20; half-life 30 days:
    #   conversion 30 days ago   10 * 0.5**1  =  5
    #   click 60 days ago         3 * 0.5**2  =  0.75
    #   open just now             1 * 0.5**0  =  1
    #   open 90 days ago          1 * 0.5**3  =  0.125
    #   unsubscribe 120 days ago -20 * 0.5**4 = -1.25
    #   custom event              0 (no points configured)
    #   total                                 =  5.625
    # The conversion is given in UTC+01:00: 2026-01-30 01:00+01:00 is 2026-01-30 00:00 UTC, 30 days before NOW.
    events = [
        ("conversion", datetime(2026, 1, 30, 1, 0, tzinfo=timezone(timedelta(hours=1)))),
        ("click", days_ago(60)),
        ("open", NOW),
        ("open", days_ago(90)),
        ("unsubscribe", days_ago(120)),
        ("wishlist_add", days_ago(1)),
    ]
    assert engagement_score(events, NOW) == pytest.approx(5.625, abs=1e-12)


def test_engagement_score_uses_the_configured_points_and_half_life() -> None:
    # Half-life 7 days, a click worth 2: a click 14 days ago is 2 * 0.5**2 = 0.5; opens are worth nothing.
    config = EngagementConfig(points={"click": 2}, half_life_days=7)
    events = [("click", days_ago(14)), ("open", NOW)]
    assert engagement_score(events, NOW, config) == pytest.approx(0.5, abs=1e-12)


def test_an_event_after_now_counts_its_full_points_only() -> None:
    assert engagement_score([("click", NOW + timedelta(days=3))], NOW) == pytest.approx(3.0)
    assert engagement_score([], NOW) == 0.0


def test_engagement_score_rejects_naive_datetimes_and_bad_events() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        engagement_score([("click", datetime(2026, 1, 1))], NOW)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        engagement_score([], datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="pair"):
        engagement_score([("click",)], NOW)  # type: ignore[list-item]


def test_engagement_config_is_validated_and_frozen() -> None:
    with pytest.raises(ValueError, match="half_life_days must be a finite number > 0, got 0"):
        EngagementConfig(half_life_days=0)
    with pytest.raises(ValueError, match=r"points\['click'\] must be a finite number"):
        EngagementConfig(points={"click": math.inf})
    supplied = {"click": 3.0}
    config = EngagementConfig(points=supplied)
    supplied["click"] = 100.0  # the caller's dict changing later does not change the config
    assert config.points["click"] == 3.0
    with pytest.raises(TypeError):
        config.points["click"] = 5.0  # type: ignore[index]


def test_vectorised_scores_match_the_hand_worked_example_and_the_scalar_score() -> None:
    # Subject 0 has the hand-worked events (5.625), subject 1 none, subject 2 one click 30 days ago (1.5).
    index = np.array([0, 0, 0, 0, 0, 0, 2])
    types = np.array(["conversion", "click", "open", "open", "unsubscribe", "wishlist_add", "click"])
    ages = np.array([30.0, 60.0, 0.0, 90.0, 120.0, 1.0, 30.0])
    scores = engagement_scores(index, types, ages, EngagementConfig(), n_subjects=3)
    np.testing.assert_allclose(scores, [5.625, 0.0, 1.5], atol=1e-12)

    rng = np.random.default_rng(7)
    n_events, n_subjects = 2_000, 50
    index = rng.integers(0, n_subjects, n_events)
    types = rng.choice(["open", "click", "conversion", "unsubscribe", "custom"], n_events)
    ages = rng.uniform(-2.0, 400.0, n_events)
    config = EngagementConfig(half_life_days=45)
    bulk = engagement_scores(index, types, ages, config, n_subjects)
    for subject in range(n_subjects):
        rows = np.flatnonzero(index == subject)
        events = [(str(types[i]), NOW - timedelta(days=float(ages[i]))) for i in rows]
        assert bulk[subject] == pytest.approx(engagement_score(events, NOW, config), rel=1e-9, abs=1e-9)


def test_vectorised_scores_validate_their_arrays() -> None:
    with pytest.raises(ValueError, match=r"subject_index must lie in \[0, n_subjects=2\), got 2"):
        engagement_scores(np.array([0, 2]), np.array(["open", "open"]), np.array([1.0, 1.0]), n_subjects=2)
    with pytest.raises(ValueError, match="equal lengths"):
        engagement_scores(np.array([0]), np.array(["open", "open"]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="ages_days must be finite"):
        engagement_scores(np.array([0]), np.array(["open"]), np.array([math.nan]))
    assert engagement_scores(np.array([], dtype=int), np.array([]), np.array([]), n_subjects=4).tolist() == [0] * 4


def test_engagement_bands_follow_the_thresholds() -> None:
    scores = [-3.0, 0.0, 0.1, 4.99, 5.0, 19.9, 20.0, 500.0]
    expected = ["none", "none", "low", "low", "medium", "medium", "high", "high"]
    assert [engagement_band(s) for s in scores] == expected
    assert engagement_bands(scores).tolist() == expected
    custom = EngagementBands(low=1, medium=2, high=3)
    assert engagement_bands([1.0, 1.5, 2.0, 3.0], custom).tolist() == ["none", "low", "medium", "high"]
    with pytest.raises(ValueError, match="low < medium < high"):
        EngagementBands(low=5, medium=5, high=20)


# --- empirical-Bayes response rates ----------------------------------------------------


def _simulate(seed: int, a: float, b: float, n_subjects: int, lo: int, hi: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    rates = rng.beta(a, b, n_subjects)
    trials = rng.integers(lo, hi + 1, n_subjects)
    return rates, rng.binomial(trials, rates), trials


@pytest.fixture(scope="module")
def simulated() -> tuple[np.ndarray, np.ndarray, np.ndarray, BetaPrior]:
    rates, successes, trials = _simulate(2026, 2.0, 38.0, 5_000, 5, 300)
    return rates, successes, trials, fit_beta_prior(successes, trials)


def test_fit_recovers_the_simulated_prior(simulated: tuple[np.ndarray, np.ndarray, np.ndarray, BetaPrior]) -> None:
    # Across 40 seeds the estimates scatter by about 2.6% (alpha) and 2.5% (beta): 10% is about 4 sd.
    _, _, _, prior = simulated
    assert prior.error is None and prior.converged
    assert prior.n_subjects == 5_000
    assert prior.alpha == pytest.approx(2.0, rel=0.10)
    assert prior.beta == pytest.approx(38.0, rel=0.10)
    assert prior.mean == pytest.approx(0.05, abs=0.003)


def test_fitted_log_likelihood_is_the_betabinom_maximum(
    simulated: tuple[np.ndarray, np.ndarray, np.ndarray, BetaPrior],
) -> None:
    _, successes, trials, prior = simulated

    def reference(a: float, b: float) -> float:
        return float(stats.betabinom.logpmf(successes, trials, a, b).sum())

    assert prior.log_likelihood == pytest.approx(reference(prior.alpha, prior.beta), rel=1e-10)
    # A maximum: no better than the truth nor a nearby point, and found again by an independent search.
    assert prior.log_likelihood >= reference(2.0, 38.0)
    for da, db in ((1.02, 1.0), (0.98, 1.0), (1.0, 1.02), (1.0, 0.98)):
        assert prior.log_likelihood > reference(prior.alpha * da, prior.beta * db)
    other = optimize.minimize(
        lambda th: -reference(*np.exp(th)), np.log([1.0, 10.0]), method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 2000},
    )
    assert np.exp(other.x) == pytest.approx([prior.alpha, prior.beta], rel=1e-3)
    assert -other.fun == pytest.approx(prior.log_likelihood, abs=1e-6)


def test_shrunk_rates_beat_raw_rates_and_their_intervals_cover(
    simulated: tuple[np.ndarray, np.ndarray, np.ndarray, BetaPrior],
) -> None:
    rates, successes, trials, prior = simulated
    shrunk = [shrunk_rate(int(s), int(n), prior) for s, n in zip(successes, trials, strict=True)]
    posterior_mean = np.array([r.rate for r in shrunk])
    np.testing.assert_allclose(posterior_mean, (prior.alpha + successes) / (prior.alpha + prior.beta + trials))
    raw_error = np.mean((successes / trials - rates) ** 2)
    shrunk_error = np.mean((posterior_mean - rates) ** 2)
    assert shrunk_error < 0.8 * raw_error
    lower = np.array([r.lower for r in shrunk])
    upper = np.array([r.upper for r in shrunk])
    coverage = np.mean((lower <= rates) & (rates <= upper))
    assert coverage == pytest.approx(0.95, abs=0.015)  # binomial sd of the coverage is 0.003


def test_shrunk_rate_by_hand() -> None:
    # Beta(2, 98), 1 of 1: (2 + 1) / (2 + 98 + 1) = 3 / 101; the interval is Beta(3, 98)'s 2.5% and 97.5% points.
    rate = shrunk_rate(1, 1, BetaPrior(2.0, 98.0))
    assert rate.rate == pytest.approx(3 / 101)
    assert (rate.lower, rate.upper) == pytest.approx(tuple(stats.beta.ppf([0.025, 0.975], 3, 98)))
    assert shrunk_rate(0, 0, BetaPrior(2.0, 98.0)).rate == pytest.approx(0.02)
    with pytest.raises(ValueError, match="successes must be <= trials, got 2 of 1"):
        shrunk_rate(2, 1, BetaPrior(2.0, 98.0))
    with pytest.raises(ValueError, match="prior must be fitted"):
        shrunk_rate(0, 1, BetaPrior(math.nan, math.nan, error="NO_TRIALS"))


def test_degenerate_populations_give_results_not_exceptions() -> None:
    empty = fit_beta_prior(np.array([0, 0]), np.array([0, 0]))
    assert (empty.error, empty.n_subjects) == ("NO_TRIALS", 0)
    never = fit_beta_prior(np.zeros(100, dtype=int), np.full(100, 20))
    assert never.error is None and not never.converged and never.mean < 1e-6
    # Every subject at exactly 10%: no over-dispersion, so everyone is shrunk all the way to the pooled rate,
    # and the log-likelihood is the binomial's at that rate.
    flat = fit_beta_prior(np.full(300, 2), np.full(300, 20))
    assert not flat.converged and flat.strength == pytest.approx(1e8)
    assert flat.mean == pytest.approx(0.1, rel=1e-12)
    assert flat.log_likelihood == pytest.approx(300 * stats.binom.logpmf(2, 20, 0.1), rel=1e-12)
    assert shrunk_rate(20, 20, flat).rate == pytest.approx(0.1, rel=1e-5)
    # One trial per subject says nothing about how rates vary: complete pooling too.
    once = fit_beta_prior(np.array([1] * 30 + [0] * 70), np.ones(100, dtype=int))
    assert not once.converged and once.mean == pytest.approx(0.3)
    # Fifty subjects are enough to find over-dispersion when it is there.
    _, few_s, few_n = _simulate(5, 2.0, 38.0, 50, 5, 300)
    assert fit_beta_prior(few_s, few_n).converged
    with pytest.raises(ValueError, match="successes must be <= trials"):
        fit_beta_prior(np.array([3]), np.array([2]))
    with pytest.raises(ValueError, match="trials must hold whole numbers >= 0, got -1"):
        fit_beta_prior(np.array([0]), np.array([-1]))


def test_channel_priors_are_fitted_per_channel() -> None:
    _, s_email, n_email = _simulate(1, 2.0, 38.0, 2_000, 10, 200)
    _, s_sms, n_sms = _simulate(2, 8.0, 32.0, 2_000, 10, 200)
    channels = np.array(["email"] * 2_000 + ["sms"] * 2_000)
    priors = fit_channel_priors(channels, np.concatenate([s_email, s_sms]), np.concatenate([n_email, n_sms]))
    assert set(priors) == {"email", "sms"}
    assert priors["email"].mean == pytest.approx(0.05, abs=0.005)
    assert priors["sms"].mean == pytest.approx(0.20, abs=0.01)
    assert priors["email"] == fit_beta_prior(s_email, n_email)


# --- best channel ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def low_rate_priors() -> dict[str, BetaPrior]:
    """Both channels' populations respond at about 2%: rates ~ Beta(2, 98)."""
    _, s_email, n_email = _simulate(11, 2.0, 98.0, 3_000, 20, 300)
    _, s_sms, n_sms = _simulate(12, 2.0, 98.0, 3_000, 20, 300)
    channels = np.array(["email"] * 3_000 + ["sms"] * 3_000)
    return fit_channel_priors(channels, np.concatenate([s_email, s_sms]), np.concatenate([n_email, n_sms]))


def test_one_of_one_ranks_below_forty_of_two_hundred(low_rate_priors: dict[str, BetaPrior]) -> None:
    assert low_rate_priors["sms"].mean == pytest.approx(0.02, abs=0.003)
    stats_ = {"sms": ChannelStats(1, 1), "email": ChannelStats(40, 200)}
    assert 1 / 1 > 40 / 200  # the raw rates would pick sms
    choice = best_channel(stats_, low_rate_priors, 25.0, set(), {})
    assert choice.channel == "email"
    assert choice.reason == "highest_expected_value"
    assert list(choice.expected_value_per_contact) == ["email", "sms"]  # best first
    # About 3/101 against 42/300 at Beta(2, 98).
    assert choice.rates["sms"].rate < 0.05 < 0.12 < choice.rates["email"].rate
    for channel, value in choice.expected_value_per_contact.items():
        assert value == pytest.approx(choice.rates[channel].rate * 25.0)
    # Value per response counts: if an SMS response is worth ten times more, sms wins.
    richer = best_channel(stats_, low_rate_priors, {"sms": 250.0, "email": 25.0}, set(), {})
    assert richer.channel == "sms"
    # So does the cost of a contact.
    costly = best_channel(stats_, low_rate_priors, {"sms": 250.0, "email": 25.0}, set(), {},
                          cost_per_contact={"sms": 10.0})
    assert costly.channel == "email"


def test_best_channel_skips_unsubscribed_and_non_consented_channels() -> None:
    prior = BetaPrior(2.0, 98.0)
    priors = {"email": prior, "sms": prior, "push": prior, "web": BetaPrior(1.0, 9.0), "call": prior}
    history = {"email": ChannelStats(50, 100), "sms": ChannelStats(30, 100), "push": ChannelStats(5, 100),
               "web": ChannelStats(0, 10), "fax": ChannelStats(9, 10)}
    values = {"email": 10.0, "sms": 10.0, "push": 10.0, "web": 10.0, "fax": 10.0}
    choice = best_channel(history, priors, values, left={"email"}, consent={"sms": False, "push": True})
    assert choice.skipped == {"email": "unsubscribed", "sms": "no_consent", "fax": "no_prior", "call": "no_value"}
    assert choice.channel == "web"  # 1/20 beats push's 7/200
    assert list(choice.expected_value_per_contact) == ["web", "push"]

    # Missing consent is allowed unless consent is required; an explicit True always is.
    strict = best_channel(history, priors, values, left={"email"}, consent={"sms": False, "push": True},
                          require_consent=True)
    assert strict.channel == "push"
    assert strict.skipped["web"] == "no_consent"

    # Unsubscribed wins over every other reason.
    assert best_channel(history, priors, values, left={"sms"}, consent={"sms": False}).skipped["sms"] == "unsubscribed"


def test_best_channel_without_an_eligible_channel_says_why() -> None:
    prior = BetaPrior(2.0, 98.0)
    none_left = best_channel({}, {"email": prior, "sms": prior}, 1.0, left={"email"}, consent={"sms": False})
    assert none_left == ChannelChoice(None, {}, "no_eligible_channel", {"email": "unsubscribed", "sms": "no_consent"})
    assert best_channel({}, {}, 1.0, set(), {}).reason == "no_channels"


def test_best_channel_rates_unused_channels_at_the_population_mean_and_breaks_ties_by_name() -> None:
    priors = {"sms": BetaPrior(1.0, 9.0), "email": BetaPrior(1.0, 9.0)}
    choice = best_channel({}, priors, 5.0, set(), {})
    assert choice.channel == "email"
    assert choice.expected_value_per_contact == pytest.approx({"email": 0.5, "sms": 0.5})


def test_best_channel_rejects_bad_input() -> None:
    prior = {"email": BetaPrior(1.0, 9.0)}
    with pytest.raises(ValueError, match="left must be a set of channel names"):
        best_channel({}, prior, 1.0, "email", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="consent for channel 'email' must be true or false, got 'no'"):
        best_channel({}, prior, 1.0, set(), {"email": "no"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="value_per_response for channel 'email' must be a finite number"):
        best_channel({}, prior, math.nan, set(), {})
    with pytest.raises(ValueError, match="successes must be <= trials, got 3 of 2"):
        ChannelStats(3, 2)


# --- purchase probability against Monte Carlo -------------------------------------------


def _simulate_bgnbd(
    fit: BgNbdFit, ages: np.ndarray, horizon: float, seed: int
) -> tuple[RfmSummary, np.ndarray, np.ndarray]:
    """Simulate customers by the BG/NBD story itself: returns their calibration RFM and holdout purchases.

    Each customer draws lambda ~ Gamma(r, rate alpha) and p ~ Beta(a, b), makes the
    first purchase at time 0, then buys at Poisson(lambda) times while alive and,
    after each repeat purchase, drops out for good with probability p.
    """
    rng = np.random.default_rng(seed)
    n = ages.size
    lam = rng.gamma(fit.r, 1.0 / fit.alpha, n)
    p = rng.beta(fit.a, fit.b, n)
    now = np.zeros(n)
    x = np.zeros(n, dtype=np.int64)
    tx = np.zeros(n)
    future = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    while active.size:
        now[active] += rng.exponential(1.0 / lam[active])
        before = now[active] <= ages[active]
        within = ~before & (now[active] <= ages[active] + horizon)
        x[active[before]] += 1
        tx[active[before]] = now[active[before]]
        future[active[within]] += 1
        survives = (before | within) & (rng.random(active.size) >= p[active])
        active = active[survives]
    return RfmSummary(x, tx, ages, np.zeros(n), "W"), future, lam


def test_purchase_probability_matches_a_simulation_of_the_model() -> None:
    horizon = 26.0
    ages = np.random.default_rng(3).uniform(1.0, 78.0, 200_000)
    summary, future, _ = _simulate_bgnbd(PUBLISHED_BGNBD, ages, horizon, seed=4)
    predicted = probability_of_purchase(PUBLISHED, summary, horizon)
    bought = (future > 0).astype(np.float64)
    # Given each history, "buys in the holdout" is Bernoulli(predicted) if the formula is right.
    groups = {"x=0": summary.frequency == 0, "x=1-2": (summary.frequency >= 1) & (summary.frequency <= 2),
              "x>=3": summary.frequency >= 3, "all": np.ones(ages.size, dtype=bool)}
    for name, mask in groups.items():
        sd = math.sqrt(float(np.sum(predicted[mask] * (1 - predicted[mask])))) / mask.sum()
        assert abs(bought[mask].mean() - predicted[mask].mean()) < 4 * sd, name
    # The same simulation reproduces expected purchases, so it is the model the formulas describe.
    mean_count = expected_purchases(PUBLISHED_BGNBD, summary, horizon)
    assert future.mean() == pytest.approx(mean_count.mean(), rel=0.03)
    # And the two are different things: at least one purchase is rarer than the mean count suggests for buyers.
    frequent = summary.frequency >= 3
    assert np.all(predicted[frequent] < mean_count[frequent])


def test_purchase_probability_for_one_history_matches_importance_sampling() -> None:
    # FHL's customer 1 (x=2, t_x=30.43, T=38.86), 39 weeks ahead. Posterior by weighting prior draws of
    # (lambda, p) with the individual likelihood; then "alive" and "a purchase within t" are simulated.
    x, tx, age, t = 2, 30.43, 38.86, 39.0
    rng = np.random.default_rng(5)
    n = 1_000_000
    lam = rng.gamma(PUBLISHED_BGNBD.r, 1 / PUBLISHED_BGNBD.alpha, n)
    p = rng.beta(PUBLISHED_BGNBD.a, PUBLISHED_BGNBD.b, n)
    w_alive = (1 - p) ** x * lam**x * np.exp(-lam * age)
    w_dropped = p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * tx)
    weight = w_alive + w_dropped
    alive = rng.random(n) < w_alive / weight
    buys = alive & (rng.exponential(1 / lam) < t)
    estimate = float(weight @ buys / weight.sum())
    one = RfmSummary(np.array([x]), np.array([tx]), np.array([age]), np.array([0.0]), "W")
    assert probability_of_purchase(PUBLISHED, one, t)[0] == pytest.approx(estimate, abs=0.005)


def test_purchase_probability_edges() -> None:
    one = RfmSummary(np.array([3]), np.array([20.0]), np.array([30.0]), np.array([0.0]), "W")
    assert probability_of_purchase(PUBLISHED, one, 0.0)[0] == 0.0
    long_run = probability_of_purchase(PUBLISHED, one, 1e9)[0]
    from reports.clv import probability_alive
    assert long_run == pytest.approx(probability_alive(PUBLISHED_BGNBD, one)[0], rel=1e-6)
    with pytest.raises(ValueError, match="horizon must be >= 0"):
        probability_of_purchase(PUBLISHED, one, -1.0)


# --- CLV block ---------------------------------------------------------------------------


def _days(yyyymmdd: np.ndarray) -> np.ndarray:
    d = yyyymmdd.astype(np.int64)
    months = (d // 10000 - 1970) * 12 + d // 100 % 100 - 1
    return months.astype("datetime64[M]").astype("datetime64[D]") + (d % 100 - 1)


@pytest.fixture(scope="module")
def cdnow() -> tuple[RfmSummary, ClvModel]:
    path = CDNOW / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    raw = np.loadtxt(path)  # master id, sample id, date YYYYMMDD, CDs, dollars
    _, summary = summarise_transactions(raw[:, 1].astype(np.int64), _days(raw[:, 2]), raw[:, 4],
                                        np.datetime64("1997-09-30"), "W")
    return summary, fit_clv_model(summary)


def test_churn_risk_on_cdnow_is_a_probability_and_lower_for_recent_frequent_buyers(
    cdnow: tuple[RfmSummary, ClvModel],
) -> None:
    summary, model = cdnow
    assert model.bgnbd.converged
    block = clv_profiles(model, summary, horizon_periods=52, discount=0.0)
    assert block.error is None
    churn = block.churn_risk
    assert np.all((churn >= 0) & (churn <= 1))
    np.testing.assert_allclose(churn, 1 - block.probability_alive)
    since_last = summary.T - summary.recency
    recent_frequent = (summary.frequency >= 5) & (since_last <= 4)
    lapsed_repeat = (summary.frequency >= 1) & (summary.frequency <= 2) & (since_last >= 26)
    assert recent_frequent.sum() >= 20 and lapsed_repeat.sum() >= 100
    # Every recent frequent buyer is at lower risk than every lapsed one (observed: at most 0.19 against at least 0.54).
    assert churn[recent_frequent].max() < churn[lapsed_repeat].min()
    assert churn[recent_frequent].mean() < 0.2 < 0.5 < churn[lapsed_repeat].mean()
    # Purchase probability: a probability, no more than alive, no more than the expected count, and higher
    # for the recent frequent buyers.
    buy = block.purchase_probability
    assert np.all((buy >= 0) & (buy <= block.probability_alive + 1e-12))
    assert np.all(buy <= block.expected_purchases + 1e-12)
    assert buy[recent_frequent].mean() > 0.8 > 0.25 > buy[lapsed_repeat].mean()
    assert np.all(np.isfinite(block.expected_value)) and np.all(block.expected_value >= 0)


def test_one_subjects_clv_profile_matches_the_bulk_row(cdnow: tuple[RfmSummary, ClvModel]) -> None:
    summary, model = cdnow
    block = clv_profiles(model, summary, horizon_periods=12, discount=0.01, period_length=4.0)
    i = int(np.argmax(summary.frequency))
    one = clv_profile(model, int(summary.frequency[i]), float(summary.recency[i]), float(summary.T[i]),
                      float(summary.monetary_value[i]), horizon_periods=12, discount=0.01, period_length=4.0)
    assert one.horizon == 48.0 and one.time_unit == "W" and one.error is None
    assert one.churn_risk == pytest.approx(block.churn_risk[i])
    assert one.purchase_probability == pytest.approx(block.purchase_probability[i])
    assert one.expected_purchases == pytest.approx(block.expected_purchases[i])
    assert one.expected_value == pytest.approx(block.expected_value[i])
    assert one.expected_value == pytest.approx(
        model.lifetime_value(summary.take([i]), 12, 0.01, 4.0)[0]
    )


def test_clv_profile_at_published_parameters() -> None:
    # FHL's customer 1: E[Y(39) | x=2, t_x=30.43, T=38.86] = 1.226 (Fader, Hardie & Lee 2005, Excel note).
    profile = clv_profile(PUBLISHED, 2, 30.43, 38.86, 20.0, horizon_periods=39, discount=0.0)
    assert profile.expected_purchases == pytest.approx(1.226, abs=0.001)
    assert profile.churn_risk == pytest.approx(1 - profile.probability_alive)  # type: ignore[operator]
    assert 0 < profile.purchase_probability < profile.probability_alive  # type: ignore[operator]
    assert profile.purchase_probability < profile.expected_purchases  # type: ignore[operator]


def test_clv_profile_without_a_usable_model_is_a_result() -> None:
    nothing = clv_profile(None, 1, 2.0, 10.0, 5.0, horizon_periods=10, discount=0.0)
    assert nothing == ClvProfile(None, None, None, None, None, 10.0, None, "NO_MODEL", None, 1, False, None)
    unfitted = ClvModel(BgNbdFit(math.nan, math.nan, math.nan, math.nan, math.nan, 5, False, "NO_REPEAT_PURCHASES"),
                        GammaGammaFit(math.nan, math.nan, math.nan, math.nan, 0, False, "NO_REPEAT_PURCHASES"))
    assert clv_profile(unfitted, 0, 0.0, 10.0, 0.0, 10, 0.0).error == "NO_REPEAT_PURCHASES"
    no_spend = ClvModel(PUBLISHED_BGNBD, GammaGammaFit(math.nan, math.nan, math.nan, math.nan, 0, False,
                                                       "NO_REPEAT_PURCHASES"))
    partial = clv_profile(no_spend, 2, 30.43, 38.86, 20.0, 39, 0.0)
    assert partial.error == "SPEND_NO_REPEAT_PURCHASES" and partial.expected_value is None
    assert partial.purchase_probability is not None
    heavy_tail = ClvModel(PUBLISHED_BGNBD, GammaGammaFit(6.25, 0.9, 15.44, math.nan, 946))
    assert clv_profile(heavy_tail, 0, 0.0, 10.0, 0.0, 10, 0.0).error == "SPEND_UNBOUNDED"


def test_a_value_resting_on_one_purchase_says_so() -> None:
    # BG/NBD: a one-time buyer is alive for sure, however long ago; the profile says why, in words
    one_time = clv_profile(PUBLISHED, 0, 0.0, 38.0, 0.0, 39, 0.0)
    assert one_time.single_purchase is True and one_time.repeat_purchases == 0 and one_time.model == "bgnbd"
    assert one_time.probability_alive == 1.0 and "by the model's construction" in (one_time.note or "")
    assert one_time.purchase_probability is not None and one_time.purchase_probability < 0.5
    repeat = clv_profile(PUBLISHED, 2, 30.43, 38.86, 20.0, 39, 0.0)
    assert repeat.single_purchase is False and repeat.note is None
    # MBG/NBD (BTYDplus's CDNOW estimates): the same customer may have left after that first purchase
    mbg = ClvModel(BgNbdFit(0.525, 6.183, 0.891, 1.614, math.nan, 2357, True, model="mbgnbd"), PUBLISHED.gamma_gamma)
    modified = clv_profile(mbg, 0, 0.0, 38.0, 0.0, 39, 0.0)
    assert modified.single_purchase is True and modified.model == "mbgnbd"
    assert modified.probability_alive is not None and modified.probability_alive < 0.5
    assert modified.churn_risk == pytest.approx(1 - modified.probability_alive)
    assert "similar customers" in (modified.note or "")
    with pytest.raises(ValueError, match="recency must lie in"):
        clv_profile(PUBLISHED, 1, 12.0, 10.0, 5.0, 10, 0.0)
    with pytest.raises(ValueError, match="horizon_periods must be a whole number >= 1, got 0"):
        clv_profile(PUBLISHED, 1, 2.0, 10.0, 5.0, 0, 0.0)
    with pytest.raises(ValueError, match="time_unit"):
        clv_profiles(PUBLISHED, RfmSummary(np.array([0]), np.zeros(1), np.ones(1), np.zeros(1), "D"), 1, 0.0)


# --- the profile --------------------------------------------------------------------------


def test_subject_profile_puts_supplied_and_computed_fields_side_by_side() -> None:
    events = [("click", days_ago(30)), ("conversion", days_ago(1))]
    score = engagement_score(events, NOW)
    channel = best_channel({"email": ChannelStats(3, 10)}, {"email": BetaPrior(2.0, 38.0)}, 20.0, set(), {})
    profile = SubjectProfile(
        subject_id="c-123",
        attributes={"ltv": 120.0, "timezone": "Europe/Berlin"},
        engagement_score=score,
        engagement_band=engagement_band(score),
        clv=clv_profile(PUBLISHED, 2, 30.43, 38.86, 20.0, 39, 0.0),
        channel=channel,
    )
    data = profile.to_dict()
    assert data["attributes"] == {"ltv": 120.0, "timezone": "Europe/Berlin"}
    assert data["computed"]["engagement"] == {"score": pytest.approx(1.5 + 10 * 0.5 ** (1 / 30)), "band": "medium"}
    assert data["computed"]["channel"]["best"] == "email"
    assert data["computed"]["channel"]["rates"]["email"]["rate"] == pytest.approx(5 / 50)
    assert data["computed"]["clv"]["churn_risk"] == pytest.approx(profile.clv.churn_risk)  # type: ignore[union-attr]


def test_profiles_stay_in_the_pure_core() -> None:
    import experiments.profiles as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    forbidden = {"flask", "flask_openapi3", "sqlalchemy", "alembic", "service"}
    assert not {name.split(".")[0] for name in imported} & forbidden, imported
    code = "import sys, experiments.profiles; print(sorted({m.split('.')[0] for m in sys.modules} & %r))" % forbidden
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(module.__file__).resolve().parents[1], timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
