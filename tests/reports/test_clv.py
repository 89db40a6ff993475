"""CLV models against Fader & Hardie's published CDNOW figures and independent integrals.

Sources:
- [FHL05] Fader, Hardie & Lee (2005), "Counting your customers the easy way: an
  alternative to the Pareto/NBD model", Marketing Science 24(2): BG/NBD on the
  CDNOW 1/10 sample, 39-week calibration: r=0.243, alpha=4.414, a=0.793,
  b=2.426, LL=-9582.4 (to four places r=0.2426, alpha=4.4136, a=0.7929,
  b=2.4259, LL=-9582.43, /work/shared/data/README.md).
- [FHL05x] Fader, Hardie & Lee (2005), "Implementing the BG/NBD model for
  customer base analysis in Excel" (brucehardie.com/notes/004): the calibration
  summary (customer 1: x=2, t_x=30.43, T=38.86), E[X(t)] for a new customer and
  E[Y(39) | x=2, t_x=30.43, T=38.86] = 1.226.
- [FH13] Fader & Hardie (2013), "The Gamma-Gamma model of monetary value"
  (brucehardie.com/notes/025) and its spreadsheet: p=6.25, q=3.74, v=15.44 on
  the same sample's repeat customers (946), and the expected average spend of
  the first ten customers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, special

from reports.clv import (
    BgNbdFit,
    ClvModel,
    GammaGammaFit,
    RfmSummary,
    customer_lifetime_value,
    expected_average_value,
    expected_purchases,
    expected_purchases_new,
    fit_bgnbd,
    fit_clv_model,
    fit_gamma_gamma,
    probability_alive,
    summarise_transactions,
)

CDNOW = Path(__file__).resolve().parents[3] / "shared" / "data" / "cdnow"
CALIBRATION_END = np.datetime64("1997-09-30")
PUBLISHED_BGNBD = BgNbdFit(
    r=0.243, alpha=4.414, a=0.793, b=2.426, log_likelihood=-9582.4, n_customers=2357, converged=True
)
PUBLISHED_GG = GammaGammaFit(p=6.25, q=3.74, v=15.44, log_likelihood=math.nan, n_customers=946)


def _days(yyyymmdd: np.ndarray) -> np.ndarray:
    d = yyyymmdd.astype(np.int64)
    months = (d // 10000 - 1970) * 12 + d // 100 % 100 - 1
    return months.astype("datetime64[M]").astype("datetime64[D]") + (d % 100 - 1)


def _load(name: str, skiprows: int) -> np.ndarray:
    path = CDNOW / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return np.loadtxt(path, skiprows=skiprows)


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, RfmSummary]:
    # columns: master id, sample id (1..2357), date YYYYMMDD, number of CDs, dollars
    raw = _load("CDNOW_sample.txt", 0)
    return summarise_transactions(raw[:, 1].astype(np.int64), _days(raw[:, 2]), raw[:, 4], CALIBRATION_END, "W")


@pytest.fixture(scope="module")
def sample_fit(sample: tuple[np.ndarray, RfmSummary]) -> BgNbdFit:
    return fit_bgnbd(sample[1])


@pytest.fixture(scope="module")
def sample_gg(sample: tuple[np.ndarray, RfmSummary]) -> GammaGammaFit:
    return fit_gamma_gamma(sample[1].frequency, sample[1].monetary_value)


def _one(x: int, tx: float, age: float, m: float = 0.0) -> RfmSummary:
    return RfmSummary(np.array([x]), np.array([tx]), np.array([age]), np.array([m]))


# --- independent integrals over the mixing distributions ----------------------------


def _gamma_expect(h, r: float, alpha: float) -> float:  # type: ignore[no-untyped-def]
    """E[h(lambda)], lambda ~ Gamma(r, rate alpha); lambda = w^(1/r) removes the pole at 0."""
    value, _ = integrate.quad(
        lambda w: h(w ** (1 / r)) * math.exp(-alpha * w ** (1 / r)), 0, np.inf, limit=200, epsabs=0, epsrel=1e-10
    )
    return value * alpha**r / math.gamma(r + 1)


def _beta_expect(h, a: float, b: float) -> float:  # type: ignore[no-untyped-def]
    """E[h(p)], p ~ Beta(a, b) with b >= 1; p = u^(1/a) removes the pole at 0."""
    value, _ = integrate.quad(
        lambda u: h(u ** (1 / a)) * (1 - u ** (1 / a)) ** (b - 1), 0, 1, limit=200, epsabs=0, epsrel=1e-10
    )
    return value / (a * special.beta(a, b))


def _posterior_by_integration(fit: BgNbdFit, x: int, tx: float, age: float, t: float) -> tuple[float, float]:
    """P(alive) and E[Y(t)] by integrating the individual-level BG/NBD over Gamma x Beta.

    Individual likelihood (1-p)^x l^x e^(-l T) + [x>0] p (1-p)^(x-1) l^x e^(-l t_x)
    and, for an active customer, E[Y(t) | l, p] = (1 - e^(-l p t)) / p  ([FHL05], individual level).
    """
    r, alpha, a, b = fit.r, fit.alpha, fit.a, fit.b
    alive_rate = _gamma_expect(lambda lam: lam**x * math.exp(-lam * age), r, alpha)
    alive = alive_rate * _beta_expect(lambda p: (1 - p) ** x, a, b)
    dropped = 0.0
    if x > 0:
        dropped = _gamma_expect(lambda lam: lam**x * math.exp(-lam * tx), r, alpha) * _beta_expect(
            lambda p: p * (1 - p) ** (x - 1), a, b
        )
    future = _beta_expect(
        lambda p: (1 - p) ** x
        * _gamma_expect(lambda lam: lam**x * math.exp(-lam * age) * -math.expm1(-lam * p * t) / p, r, alpha),
        a,
        b,
    )
    total = alive + dropped
    return alive / total, future / total


# --- RFM summary -------------------------------------------------------------------


def test_summary_reproduces_published_cdnow_calibration_rows(sample: tuple[np.ndarray, RfmSummary]) -> None:
    ids, s = sample
    # [FHL05x] calibration summary, customers 1-10: x, t_x, T (weeks), mean repeat spend ([FH13])
    published = np.array(
        [
            [2, 30.43, 38.86, 22.35],
            [1, 1.71, 38.86, 11.77],
            [0, 0.00, 38.86, 0.00],
            [0, 0.00, 38.86, 0.00],
            [0, 0.00, 38.86, 0.00],
            [7, 29.43, 38.86, 73.74],
            [1, 5.00, 38.86, 11.77],
            [0, 0.00, 38.86, 0.00],
            [2, 35.71, 38.86, 25.55],
            [0, 0.00, 38.86, 0.00],
        ]
    )
    assert len(s) == 2357
    np.testing.assert_array_equal(ids[:10], np.arange(1, 11))
    np.testing.assert_array_equal(s.frequency[:10], published[:, 0])
    np.testing.assert_allclose(s.recency[:10], published[:, 1], atol=0.006)
    np.testing.assert_allclose(s.T[:10], published[:, 2], atol=0.006)
    np.testing.assert_allclose(s.monetary_value[:10], published[:, 3], atol=0.006)
    assert int((s.frequency > 0).sum()) == 946  # [FH13]: 946 repeat customers


def test_summary_merges_same_day_purchases_and_ignores_later_ones() -> None:
    ids = np.array(["b", "a", "a", "a", "a", "b", "c"])
    when = np.array(
        [
            "2024-01-08T18:00",
            "2024-01-01T09:00",
            "2024-01-01T17:30",
            "2024-01-15",
            "2024-01-15",
            "2024-02-10",
            "2024-03-01",
        ],
        dtype="datetime64[m]",
    )
    amount = np.array([5.0, 10.0, 2.0, 3.0, 4.0, 99.0, 1.0])
    out_ids, s = summarise_transactions(ids, when, amount, dt.date(2024, 1, 29), time_unit="D")
    np.testing.assert_array_equal(out_ids, ["a", "b"])  # c first bought after the end
    np.testing.assert_array_equal(s.frequency, [1, 0])  # a: two days; b's repeat is after the end
    np.testing.assert_allclose(s.recency, [14.0, 0.0])
    np.testing.assert_allclose(s.T, [28.0, 21.0])
    np.testing.assert_allclose(s.monetary_value, [7.0, 0.0])  # 3 + 4 on one day
    assert s.time_unit == "D"

    _, weekly = summarise_transactions(ids, when, amount, "2024-01-29")
    np.testing.assert_allclose(weekly.T, [4.0, 3.0])

    dates = [dt.date(2024, 1, 1), dt.date(2024, 1, 8), dt.date(2024, 1, 8)]
    _, s2 = summarise_transactions([7, 7, 7], dates, [1.0, 2.0, 3.0], np.datetime64("2024-01-08"))
    np.testing.assert_array_equal(s2.frequency, [1])
    np.testing.assert_allclose(s2.monetary_value, [5.0])


def test_summary_rejects_bad_input() -> None:
    day = np.array(["2024-01-01"], dtype="datetime64[D]")
    with pytest.raises(ValueError, match="equal lengths"):
        summarise_transactions([1, 2], day, [1.0], "2024-02-01")
    with pytest.raises(ValueError, match="amounts must be finite"):
        summarise_transactions([1], day, [math.nan], "2024-02-01")
    with pytest.raises(ValueError, match="time_unit must be 'W' or 'D'"):
        summarise_transactions([1], day, [1.0], "2024-02-01", time_unit="M")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaT"):
        summarise_transactions([1], np.array(["NaT"], dtype="datetime64[D]"), [1.0], "2024-02-01")
    with pytest.raises(ValueError, match=r"recency must lie in \[0, T\]"):
        RfmSummary(np.array([1]), np.array([5.0]), np.array([4.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="frequency must be >= 0"):
        RfmSummary(np.array([-1]), np.array([0.0]), np.array([4.0]), np.array([1.0]))
    ids, empty = summarise_transactions([1], day, [1.0], "2023-12-31")
    assert len(ids) == 0 and len(empty) == 0


# --- BG/NBD ---------------------------------------------------------------------------


def test_bgnbd_recovers_published_cdnow_estimates(sample_fit: BgNbdFit) -> None:
    f = sample_fit
    assert f.converged and f.n_customers == 2357 and f.error is None
    # [FHL05] to three significant figures ...
    for name, value in (("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)):
        assert getattr(f, name) == pytest.approx(value, abs=5e-4), name
    # ... and to the four decimals of the reference table
    assert f.r == pytest.approx(0.2426, abs=5e-5)
    assert f.alpha == pytest.approx(4.4136, abs=5e-5)
    assert f.a == pytest.approx(0.7929, abs=5e-5)
    assert f.b == pytest.approx(2.4259, abs=5e-5)
    assert f.log_likelihood == pytest.approx(-9582.43, abs=5e-3)


def test_age_to_the_end_of_the_last_day_does_not_reproduce_the_paper(sample: tuple[np.ndarray, RfmSummary]) -> None:
    # Measuring T to the end of 1997-09-30 (one more day) moves the fit away from [FHL05]:
    # the published estimates need T = (1997-09-30 - first purchase day) / 7.
    s = sample[1]
    shifted = fit_bgnbd(RfmSummary(s.frequency, s.recency, s.T + 1 / 7, s.monetary_value))
    assert shifted.log_likelihood < -9585
    assert abs(shifted.a - 0.793) > 0.01


def test_conditional_expectation_matches_hardie_spreadsheet(sample_fit: BgNbdFit) -> None:
    # [FHL05x]: E[Y(39) | x=2, t_x=30.43, T=38.86] = 1.226
    customer = _one(2, 30.43, 38.86)
    assert expected_purchases(sample_fit, customer, 39.0)[0] == pytest.approx(1.226, abs=5e-4)
    assert expected_purchases(PUBLISHED_BGNBD, customer, 39.0)[0] == pytest.approx(1.226, abs=5e-4)


def test_expected_purchases_new_customer_matches_hardie_spreadsheet(sample_fit: BgNbdFit) -> None:
    # [FHL05x] E[X(t)], eq. 7, at 1 day, 1, 3, 31 6/7, 32 and 78 weeks
    t = np.array([0.1429, 1.0, 3.00, 31.8571, 32.00, 78.00])
    published = np.array([0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576])
    np.testing.assert_allclose(expected_purchases_new(sample_fit, t), published, atol=1e-3)
    assert expected_purchases_new(sample_fit, 0.0) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("fit", "x", "tx", "age", "t"),
    [
        (PUBLISHED_BGNBD, 2, 30.43, 38.86, 39.0),
        (PUBLISHED_BGNBD, 0, 0.0, 32.0, 52.0),
        (PUBLISHED_BGNBD, 7, 20.0, 38.0, 10.0),
        (BgNbdFit(1.7, 9.0, 2.5, 6.0, math.nan, 0, True), 4, 11.0, 30.0, 26.0),  # a > 1
    ],
)
def test_probability_alive_and_expectation_match_numerical_integration(
    fit: BgNbdFit, x: int, tx: float, age: float, t: float
) -> None:
    alive, future = _posterior_by_integration(fit, x, tx, age, t)
    customer = _one(x, tx, age)
    assert probability_alive(fit, customer)[0] == pytest.approx(alive, rel=1e-6)
    assert expected_purchases(fit, customer, t)[0] == pytest.approx(future, rel=1e-6)


def test_expected_purchases_is_stable_for_extreme_customers(sample_fit: BgNbdFit) -> None:
    s = RfmSummary(
        np.array([0, 3000, 3000, 1]),
        np.array([0.0, 38.86, 1.0, 0.001]),
        np.array([0.0, 38.86, 38.86, 1e4]),
        np.zeros(4),
    )
    alive = probability_alive(sample_fit, s)
    future = expected_purchases(sample_fit, s, np.array([[0.0], [52.0], [1e4]]))
    assert np.all(np.isfinite(alive)) and np.all(np.isfinite(future))
    assert alive[0] == 1.0 and alive[1] > 0.999 and alive[2] < 1e-100
    np.testing.assert_array_equal(future[0], 0.0)
    assert np.all(np.diff(future, axis=0) >= 0)
    # Given alive, lambda ~ Gamma(r+x, alpha+T) and p ~ Beta(a, b+x) independently, and
    # E[1 - e^(-lambda p t)] = 1 - ((alpha+T)/(alpha+T+p t))^(r+x): one integral over p.
    f, x, age, t = sample_fit, 3000, 38.86, 52.0
    by_integration = alive[1] * _beta_expect(
        lambda p: -math.expm1((f.r + x) * (math.log(f.alpha + age) - math.log(f.alpha + age + p * t))) / p, f.a, f.b + x
    )
    assert future[1, 1] == pytest.approx(by_integration, rel=1e-6)


def test_expectation_is_continuous_through_a_equal_one() -> None:
    customer = _one(3, 20.0, 30.0)
    values = [
        expected_purchases(BgNbdFit(0.5, 5.0, a, 3.0, math.nan, 0, True), customer, 26.0)[0]
        for a in (1.0 - 1e-3, 1.0 - 1e-7, 1.0, 1.0 + 1e-7, 1.0 + 1e-3)
    ]
    assert np.ptp(values[1:4]) < 1e-6
    assert abs(values[0] - values[2]) < 1e-3 and abs(values[4] - values[2]) < 1e-3
    fit = BgNbdFit(0.5, 5.0, 1.0, 3.0, math.nan, 0, True)
    assert values[2] == pytest.approx(_posterior_by_integration(fit, 3, 20.0, 30.0, 26.0)[1], rel=1e-6)
    _, new_customer = _posterior_by_integration(fit, 0, 0.0, 0.0, 26.0)
    assert expected_purchases_new(fit, 26.0) == pytest.approx(new_customer, rel=1e-6)


def test_bgnbd_fit_on_cdnow_master_agrees_with_the_published_sample_fit() -> None:
    # The sample is a 1/10 random draw of the master's customers, so the master fit
    # must land near [FHL05] (within sampling error of the 2,357-customer sample).
    raw = _load("CDNOW_master.txt", 1)
    ids, s = summarise_transactions(raw[:, 0].astype(np.int64), _days(raw[:, 1]), raw[:, 3], CALIBRATION_END)
    assert len(ids) == 23570
    f = fit_bgnbd(s)
    assert f.converged
    assert f.r == pytest.approx(0.243, rel=0.1)
    assert f.alpha == pytest.approx(4.414, rel=0.15)
    assert f.a == pytest.approx(0.793, rel=0.15)
    assert f.b == pytest.approx(2.426, rel=0.15)
    gg = fit_gamma_gamma(s.frequency, s.monetary_value)
    assert gg.converged and gg.n_excluded == 1  # one repeat customer whose repeat purchases cost $0
    assert gg.population_mean == pytest.approx(PUBLISHED_GG.population_mean, rel=0.1)


def test_bgnbd_recovers_simulated_parameters_with_a_above_one() -> None:
    true = BgNbdFit(r=1.7, alpha=9.0, a=2.5, b=6.0, log_likelihood=math.nan, n_customers=0, converged=True)
    rng = np.random.default_rng(7)
    n = 200_000
    # [FHL05] section 2: lambda ~ Gamma(r, alpha); dropout p ~ Beta(a, b) after each repeat purchase.
    age = rng.uniform(26.0, 52.0, n)
    lam = rng.gamma(true.r, 1 / true.alpha, n)
    drop = rng.beta(true.a, true.b, n)
    arrivals = rng.poisson(lam * age)
    x = np.minimum(arrivals, rng.geometric(drop))
    tx = np.where(x > 0, age * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    f = fit_bgnbd(RfmSummary(x, tx, age, np.zeros(n)))
    assert f.converged
    for name in ("r", "alpha", "a", "b"):
        assert getattr(f, name) == pytest.approx(getattr(true, name), rel=0.08), name


def test_degenerate_data_is_a_result() -> None:
    f = fit_bgnbd(RfmSummary(np.zeros(3, dtype=int), np.zeros(3), np.full(3, 10.0), np.zeros(3)))
    assert f.error == "NO_REPEAT_PURCHASES" and not f.converged and math.isnan(f.r)
    assert fit_bgnbd(RfmSummary(np.zeros(0, dtype=int), np.zeros(0), np.zeros(0), np.zeros(0))).error == "NO_CUSTOMERS"
    g = fit_gamma_gamma([0, 0], [0.0, 0.0])
    assert g.error == "NO_REPEAT_PURCHASES" and math.isnan(g.p)
    with pytest.raises(ValueError, match="r must be a finite number > 0"):
        BgNbdFit(-1.0, 1.0, 1.0, 1.0, 0.0, 1, True)


# --- Gamma-Gamma -------------------------------------------------------------------


def test_gamma_gamma_recovers_published_cdnow_estimates(sample_gg: GammaGammaFit) -> None:
    # [FH13]: mean spend per repeat transaction (same-day purchases merged), 946 customers
    g = sample_gg
    assert g.converged and g.n_customers == 946 and g.n_excluded == 0
    assert g.p == pytest.approx(6.25, abs=0.005)
    assert g.q == pytest.approx(3.74, abs=0.005)
    assert g.v == pytest.approx(15.44, abs=0.005)


def test_expected_average_value_matches_hardie_spreadsheet(
    sample: tuple[np.ndarray, RfmSummary], sample_gg: GammaGammaFit
) -> None:
    # [FH13] spreadsheet, E[M | x, m] of customers 1-10
    s = sample[1]
    published = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]
    got = expected_average_value(sample_gg, s.frequency[:10], s.monetary_value[:10])
    np.testing.assert_allclose(got, published, atol=0.006)


def test_gamma_gamma_likelihood_and_mean_match_numerical_integration(
    sample: tuple[np.ndarray, RfmSummary], sample_gg: GammaGammaFit
) -> None:
    # f(m | x) = integral of Gamma(m; p x, rate x nu) Gamma(nu; q, rate v) d nu, summed in logs over
    # the 946 repeat customers, must equal the closed-form maximum the fit reports.
    g = sample_gg
    s = sample[1]
    repeat = s.frequency > 0
    pairs, counts = np.unique(np.stack([s.frequency[repeat], s.monetary_value[repeat]]), axis=1, return_counts=True)

    def log_gamma_pdf(value: float, shape: float, rate: float) -> float:
        return shape * math.log(rate) + (shape - 1) * math.log(value) - rate * value - math.lgamma(shape)

    def density(x: float, m: float, h=lambda nu: 1.0) -> float:  # type: ignore[no-untyped-def]
        def inner(nu: float) -> float:
            if nu <= 0:
                return 0.0
            return h(nu) * math.exp(log_gamma_pdf(m, g.p * x, x * nu) + log_gamma_pdf(nu, g.q, g.v))

        mode = g.q / g.v
        pieces = ((0, mode), (mode, np.inf))
        return sum(integrate.quad(inner, lo, hi, limit=200, epsabs=0, epsrel=1e-11)[0] for lo, hi in pieces)

    total = sum(c * math.log(density(x, m)) for (x, m), c in zip(pairs.T, counts, strict=True))
    assert total == pytest.approx(g.log_likelihood, abs=1e-4)
    for x, m in ((1, 11.77), (7, 73.74)):
        posterior_mean = density(x, m, lambda nu: g.p / nu) / density(x, m)
        assert expected_average_value(g, [x], [m])[0] == pytest.approx(posterior_mean, rel=1e-7)


def test_gamma_gamma_leaves_out_and_counts_non_positive_spend() -> None:
    g = fit_gamma_gamma([2, 1, 3, 1, 0, 2, 5], [10.0, 0.0, 12.0, 30.0, 0.0, 8.0, 11.0])
    assert g.n_customers == 5 and g.n_excluded == 1
    # These five spends vary no more than Gamma noise around one mean: the likelihood
    # rises forever along q, v -> inf (no heterogeneity), which is reported, not hidden.
    assert not g.converged and g.q > 1e6
    assert g.population_mean == pytest.approx(np.mean([10.0, 12.0, 30.0, 8.0, 11.0]), rel=0.2)
    with pytest.raises(ValueError, match="monetary_value must be finite"):
        fit_gamma_gamma([1], [math.inf])
    with pytest.raises(ValueError, match="frequency must hold whole numbers"):
        fit_gamma_gamma([1.5], [3.0])


# --- lifetime value ----------------------------------------------------------------


def test_clv_of_hardie_customer_one_from_the_two_published_spreadsheets() -> None:
    # One 39-week period, no discount: E[Y(39)] = 1.226 [FHL05x] times E[M] = 24.65 [FH13].
    customer = _one(2, 30.43, 38.86, 22.345)
    value = customer_lifetime_value(PUBLISHED_BGNBD, PUBLISHED_GG, customer, 1, 0.0, period_length=39.0)
    assert value[0] == pytest.approx(1.226 * 24.65, rel=1e-3)


def test_discounted_clv_matches_integrated_expectations() -> None:
    # Four 13-week quarters at 3% a quarter, each quarter's purchases from the integrals.
    customer = _one(2, 30.43, 38.86, 22.345)
    cumulative = [_posterior_by_integration(PUBLISHED_BGNBD, 2, 30.43, 38.86, 13.0 * k)[1] for k in range(5)]
    per_quarter = np.diff(cumulative)
    expected = float(per_quarter @ 1.03 ** -np.arange(1, 5)) * 24.65
    value = customer_lifetime_value(PUBLISHED_BGNBD, PUBLISHED_GG, customer, 4, 0.03, period_length=13.0)
    assert value[0] == pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="horizon_periods must be a whole number >= 1"):
        customer_lifetime_value(PUBLISHED_BGNBD, PUBLISHED_GG, customer, 0, 0.03)
    with pytest.raises(ValueError, match="discount_rate_per_period must be finite and > -1"):
        customer_lifetime_value(PUBLISHED_BGNBD, PUBLISHED_GG, customer, 4, -1.0)


def test_clv_model_round_trips_through_json(sample: tuple[np.ndarray, RfmSummary]) -> None:
    s = sample[1]
    model = fit_clv_model(s)
    restored = ClvModel.from_dict(json.loads(json.dumps(model.to_dict(), allow_nan=False)))
    assert restored == model
    monthly = (12, 0.01, 52 / 12)  # a year of months at 1% a month, in weeks
    np.testing.assert_array_equal(restored.lifetime_value(s, *monthly), model.lifetime_value(s, *monthly))

    degenerate = ClvModel(fit_bgnbd(s.take(s.frequency == 0)), fit_gamma_gamma([0], [0.0]), "W")
    stored = json.dumps(degenerate.to_dict(), allow_nan=False)  # NaN is stored as null
    back = ClvModel.from_dict(json.loads(stored))
    assert back.bgnbd.error == "NO_REPEAT_PURCHASES" and math.isnan(back.bgnbd.r)

    broken = model.to_dict()
    broken["bgnbd"]["r"] = "0.24"
    with pytest.raises(ValueError, match=r"bgnbd.r must be a number or null, got '0.24'"):
        ClvModel.from_dict(broken)
    with pytest.raises(ValueError, match="summary time_unit must be the model's 'W'"):
        model.lifetime_value(RfmSummary(s.frequency, s.recency * 7, s.T * 7, s.monetary_value, "D"), 4, 0.0)
