"""MBG/NBD against published estimates, direct integration of its individual-level model, and BG/NBD.

Sources:
- [BDF07] Batislam, Denizel & Filiztekin (2007), "Empirical validation and comparison
  of models for customer base analysis", IJRM 24(3): the model. A customer buys at
  Poisson rate lambda ~ Gamma(r, alpha) and drops out with probability p ~ Beta(a, b)
  right after the first purchase and right after every repeat purchase.
- [BTYDplus] Platzer's BTYDplus (R) MBG/NBD estimates on the CDNOW 1/10 sample with the
  39-week calibration of Fader, Hardie & Lee (2005): r=0.525, alpha=6.183, a=0.891,
  b=1.614, as quoted in lifetimes' test suite (test_params_out_is_close_to_BTYDplus).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from reports.clv import (
    BgNbdFit,
    ClvModel,
    GammaGammaFit,
    RfmSummary,
    expected_purchases,
    expected_purchases_new,
    fit_bgnbd,
    fit_clv_model,
    fit_mbgnbd,
    fit_purchase_model,
    log_likelihood,
    probability_alive,
)
from tests.reports.test_clv import _beta_expect, _gamma_expect, sample  # noqa: F401 - the CDNOW sample fixture

BTYDPLUS = BgNbdFit(r=0.525, alpha=6.183, a=0.891, b=1.614, log_likelihood=math.nan, n_customers=2357,
                    converged=True, model="mbgnbd")


def _one(x: int, tx: float, age: float) -> RfmSummary:
    return RfmSummary(np.array([x]), np.array([tx]), np.array([age]), np.array([0.0]))


def _mbg_by_integration(fit: BgNbdFit, x: int, tx: float, age: float, t: float) -> tuple[float, float, float]:
    """Likelihood, P(alive) and E[Y(t)] by integrating [BDF07]'s individual-level model over Gamma x Beta.

    Individual likelihood: (1-p)^(x+1) l^x e^(-l T)   (alive: survived x + 1 dropout chances)
                         + p (1-p)^x l^x e^(-l t_x)   (left right after the x-th repeat, or the first purchase);
    an active customer buys (1 - e^(-l p t)) / p times in the next t on average.
    """
    r, alpha, a, b = fit.r, fit.alpha, fit.a, fit.b
    alive = _gamma_expect(lambda lam: lam**x * math.exp(-lam * age), r, alpha) * _beta_expect(
        lambda p: (1 - p) ** (x + 1), a, b
    )
    dropped = _gamma_expect(lambda lam: lam**x * math.exp(-lam * tx), r, alpha) * _beta_expect(
        lambda p: p * (1 - p) ** x, a, b
    )
    future = _beta_expect(
        lambda p: (1 - p) ** (x + 1)
        * _gamma_expect(lambda lam: lam**x * math.exp(-lam * age) * -math.expm1(-lam * p * t) / p, r, alpha),
        a,
        b,
    )
    total = alive + dropped
    return total, alive / total, future / total


@pytest.fixture(scope="module")
def sample_mbg(sample: tuple[np.ndarray, RfmSummary]) -> BgNbdFit:  # noqa: F811
    return fit_mbgnbd(sample[1])


def test_mbgnbd_recovers_the_btydplus_estimates_on_cdnow(sample_mbg: BgNbdFit) -> None:
    f = sample_mbg
    assert f.model == "mbgnbd" and f.converged and f.error is None and f.n_customers == 2357
    for name in ("r", "alpha", "a", "b"):
        assert getattr(f, name) == pytest.approx(getattr(BTYDPLUS, name), abs=5e-4), name
    # its own maximum beats BG/NBD's in-sample (-9582.43, [FHL05]) by a little
    assert f.log_likelihood == pytest.approx(-9582.14, abs=0.01)


@pytest.mark.parametrize("x, tx, age", [(0, 0.0, 30.0), (0, 0.0, 2.0), (1, 5.0, 35.0), (4, 20.0, 25.0), (12, 37.0, 38.5)])
def test_likelihood_and_predictions_match_direct_integration(x: int, tx: float, age: float) -> None:
    fit = BTYDPLUS
    like, alive, future = _mbg_by_integration(fit, x, tx, age, 39.0)
    customer = _one(x, tx, age)
    assert log_likelihood(fit, customer) == pytest.approx(math.log(like), abs=1e-8)
    assert probability_alive(fit, customer)[0] == pytest.approx(alive, rel=1e-7)
    assert expected_purchases(fit, customer, 39.0)[0] == pytest.approx(future, rel=1e-6)


def test_a_one_time_buyer_may_have_left_and_fades_with_time() -> None:
    alive = [probability_alive(BTYDPLUS, _one(0, 0.0, age))[0] for age in (1.0, 10.0, 39.0, 78.0)]
    assert all(0 < p < 1 for p in alive) and alive == sorted(alive, reverse=True)
    # under BG/NBD the same customer is alive for sure, however long ago they bought
    bg = BgNbdFit(0.243, 4.414, 0.793, 2.426, math.nan, 0, True)
    assert probability_alive(bg, _one(0, 0.0, 78.0))[0] == 1.0
    # at T = 0 the one-time buyer is alive with the chance of not leaving after the first purchase, E[1 - p]
    assert probability_alive(BTYDPLUS, _one(0, 0.0, 0.0))[0] == pytest.approx(BTYDPLUS.b / (BTYDPLUS.a + BTYDPLUS.b))


def test_for_repeat_buyers_mbgnbd_is_bgnbd_with_one_more_dropout_survived() -> None:
    # [BDF07]: a repeat buyer's MBG/NBD odds of having left, a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x), are BG/NBD's
    # a/(b'+x-1) (...)^(r+x) with b' = b + 1, and so are the conditional expectations.
    shifted = BgNbdFit(BTYDPLUS.r, BTYDPLUS.alpha, BTYDPLUS.a, BTYDPLUS.b + 1, math.nan, 0, True)
    repeat = RfmSummary(np.array([1, 2, 5, 9]), np.array([3.0, 10.0, 20.0, 30.0]), np.array([30.0, 12.0, 39.0, 31.0]),
                        np.zeros(4))
    np.testing.assert_allclose(probability_alive(BTYDPLUS, repeat), probability_alive(shifted, repeat), rtol=1e-12)
    np.testing.assert_allclose(expected_purchases(BTYDPLUS, repeat, 26.0), expected_purchases(shifted, repeat, 26.0),
                               rtol=1e-12)


def test_new_customer_expectation_matches_integration() -> None:
    # E[X(t)] = E[(1-p) (1 - e^(-lambda p t)) / p]: b/(a-1) [...], as PyMC-Marketing has it; lifetimes'
    # (b+1)/(a-1) [...] would give 2.92 at t = 78 instead of 1.80.
    fit = BTYDPLUS
    for t in (0.5, 10.0, 39.0, 78.0):
        # E over lambda of e^(-lambda p t) is (alpha / (alpha + p t))^r
        direct = _beta_expect(lambda p, t=t: (1 - p) * -math.expm1(fit.r * math.log(fit.alpha / (fit.alpha + p * t))) / p,
                              fit.a, fit.b)
        assert expected_purchases_new(fit, t) == pytest.approx(direct, rel=1e-7)
    assert expected_purchases_new(fit, 78.0) == pytest.approx(1.8048, abs=5e-5)


def test_mbgnbd_recovers_simulated_parameters() -> None:
    true = BgNbdFit(r=0.8, alpha=5.0, a=1.5, b=4.0, log_likelihood=math.nan, n_customers=0, converged=True,
                    model="mbgnbd")
    rng = np.random.default_rng(11)
    n = 100_000
    age = rng.uniform(26.0, 52.0, n)
    lam = rng.gamma(true.r, 1 / true.alpha, n)
    drop = rng.beta(true.a, true.b, n)
    arrivals = rng.poisson(lam * age)
    # [BDF07]: leaves right after the first purchase with probability p, and after each repeat; so the number of
    # repeat purchases made before leaving is Geometric(p) on {0, 1, ...}.
    x = np.minimum(arrivals, rng.geometric(drop) - 1)
    tx = np.where(x > 0, age * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    f = fit_mbgnbd(RfmSummary(x, tx, age, np.zeros(n)))
    assert f.converged
    for name in ("r", "alpha", "a", "b"):
        assert getattr(f, name) == pytest.approx(getattr(true, name), rel=0.1), name
    # and BG/NBD on the same data fits worse: it cannot explain one-time buyers who left
    assert fit_bgnbd(RfmSummary(x, tx, age, np.zeros(n))).log_likelihood < f.log_likelihood - 10


def test_model_choice_round_trips_and_old_models_read_as_bgnbd(sample: tuple[np.ndarray, RfmSummary]) -> None:  # noqa: F811
    s = sample[1]
    model = fit_clv_model(s, "mbgnbd")
    stored = model.to_dict()
    assert stored["bgnbd"]["model"] == "mbgnbd"
    again = ClvModel.from_dict(stored)
    assert again == model
    del stored["bgnbd"]["model"]
    assert ClvModel.from_dict(stored).bgnbd.model == "bgnbd"
    stored["bgnbd"]["model"] = "pareto"
    with pytest.raises(ValueError, match="bgnbd.model must be one of bgnbd, mbgnbd"):
        ClvModel.from_dict(stored)
    with pytest.raises(ValueError, match="model must be one of bgnbd, mbgnbd"):
        fit_purchase_model(s, "pareto")  # type: ignore[arg-type]
    empty = RfmSummary(np.zeros(3, dtype=int), np.zeros(3), np.full(3, 4.0), np.zeros(3))
    assert fit_mbgnbd(empty).error == "NO_REPEAT_PURCHASES"
    gg = GammaGammaFit(6.25, 3.74, 15.44, math.nan, 946)
    values = ClvModel(fit_mbgnbd(s), gg).lifetime_value(s, 52, 0.0)
    assert np.all(np.isfinite(values)) and np.all(values >= 0)


def test_expected_purchases_shares_work_between_customers_without_changing_answers() -> None:
    rng = np.random.default_rng(3)
    n = 500
    age = rng.choice([10.0, 20.0, 30.0], n)
    x = rng.integers(0, 4, n)
    tx = np.where(x > 0, age * rng.random(n), 0.0)
    s = RfmSummary(x, tx, age, np.zeros(n))
    for fit in (BTYDPLUS, BgNbdFit(0.243, 4.414, 0.793, 2.426, math.nan, 0, True)):
        grid = np.array([[1.0], [13.0], [52.0]])
        together = expected_purchases(fit, s, grid)
        one_by_one = np.array([[expected_purchases(fit, s.take([i]), float(t[0]))[0] for i in range(n)] for t in grid])
        np.testing.assert_allclose(together, one_by_one, rtol=1e-13)
        # a horizon per customer is evaluated customer by customer
        horizon = rng.uniform(1, 40, n)
        np.testing.assert_allclose(expected_purchases(fit, s, horizon),
                                   [expected_purchases(fit, s.take([i]), horizon[i])[0] for i in range(n)], rtol=1e-13)
