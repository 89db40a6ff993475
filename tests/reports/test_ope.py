"""Off-policy estimators: coverage against known simulated values, exact identities, published figures."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bandits.candidates import evaluate_candidates
from reports.ope import (
    NO_OVERLAP,
    OpeConfig,
    direct_method,
    doubly_robust,
    fit_reward_model,
    importance_weights,
    inverse_propensity,
    on_policy,
    self_normalised,
    support_warning,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

# --------------------------------------------------------------------- simulation with a known truth

# Four customer segments, three offers. Visit probability per segment and offer, and the
# logging policy's (context-dependent, known) probability of each offer per segment.
SHARE = np.array([0.3, 0.3, 0.2, 0.2])
RATES = np.array([[0.10, 0.30, 0.20], [0.25, 0.10, 0.35], [0.40, 0.30, 0.15], [0.05, 0.20, 0.10]])
LOGGING = np.array([[0.6, 0.1, 0.3], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], [0.15, 0.7, 0.15]])
# A stochastic, context-dependent candidate.
CANDIDATE = np.array([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])


def _simulate(reps: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments, logged arms and Bernoulli rewards, shape (reps, n) each, all draws vectorised."""
    rng = np.random.default_rng(seed)
    seg = rng.choice(4, size=(reps, n), p=SHARE)
    arm = (rng.random((reps, n))[..., None] >= np.cumsum(LOGGING[seg], axis=-1)).sum(axis=-1)
    reward = (rng.random((reps, n)) < RATES[seg, arm]).astype(float)
    return seg, arm, reward


def _truth(target: np.ndarray) -> float:
    """Exact value per decision of a policy choosing arm k in segment s with probability target[s, k]."""
    return float(SHARE @ (target * RATES).sum(axis=1))


def _covers(est, truth: float) -> bool:
    return est.ci_low <= truth <= est.ci_high


def test_each_estimator_covers_the_true_value_at_its_nominal_rate() -> None:
    reps, n = 200, 4000
    seg, arm, reward = _simulate(reps, n, seed=20240)
    fixed = np.zeros((4, 3))
    fixed[:, 1] = 1.0  # always offer 1
    targets = {"fixed": fixed, "stochastic": CANDIDATE}
    truths = {name: _truth(t) for name, t in targets.items()}
    assert truths["fixed"] == pytest.approx(0.3 * 0.30 + 0.3 * 0.10 + 0.2 * 0.30 + 0.2 * 0.20)
    hits = {(c, e): 0 for c in targets for e in ("ips", "snips", "dm", "dr")}
    values = {key: [] for key in hits}
    rows = np.arange(n)
    for rep in range(reps):
        s, a, r = seg[rep], arm[rep], reward[rep]
        p = LOGGING[s, a]
        onehot = np.eye(4)[s]  # the correctly specified model: a rate per segment and arm
        model = fit_reward_model(a, r, 3, onehot, l2=1.0, seed=rep)
        for name, table in targets.items():
            pi = table[s]
            for est in (
                inverse_propensity(r, p, pi[rows, a]),
                self_normalised(r, p, pi[rows, a]),
                direct_method(pi, model),
                doubly_robust(r, p, a, pi, model),
            ):
                hits[(name, est.name)] += _covers(est, truths[name])
                values[(name, est.name)].append(est.value)
    for key, count in hits.items():
        # 200 intervals each: the binomial SE of a 95% coverage is 0.015.
        assert 0.90 <= count / reps <= 0.99, (key, count / reps)
        spread = np.std(values[key], ddof=1)
        assert abs(np.mean(values[key]) - truths[key[0]]) < 3 * spread / np.sqrt(reps), key


def test_doubly_robust_survives_a_wrong_reward_model_where_the_direct_method_does_not() -> None:
    # Per-arm means ignore the segment, but the logging policy chose offers by segment
    # (confounding), so the context-free model is wrong; the propensities are right.
    reps, n = 100, 4000
    seg, arm, reward = _simulate(reps, n, seed=7)
    fixed = np.zeros((4, 3))
    fixed[:, 1] = 1.0  # true value 0.220; offer 1's logged mean is about 0.184
    truth = _truth(fixed)
    dm_hits = dr_hits = 0
    for rep in range(reps):
        s, a, r = seg[rep], arm[rep], reward[rep]
        model = fit_reward_model(a, r, 3, None, seed=rep)
        pi = fixed[s]
        dm_hits += _covers(direct_method(pi, model), truth)
        dr_hits += _covers(doubly_robust(r, LOGGING[s, a], a, pi, model), truth)
    assert dr_hits / reps >= 0.88
    assert dm_hits / reps <= 0.2


# --------------------------------------------------------------------- exact identities


def test_fixed_arm_under_uniform_logging_is_the_arm_mean_exactly() -> None:
    rng = np.random.default_rng(3)
    k, n = 3, 9001
    a = rng.integers(k, size=n)
    r = rng.gamma(1.0, 20.0, size=n) * (rng.random(n) < 0.3)  # revenue-like rewards
    p = np.full(n, 1 / k)
    for arm in range(k):
        t = (a == arm).astype(float)
        ips = inverse_propensity(r, p, t)
        snips = self_normalised(r, p, t)
        mine = r[a == arm]
        assert ips.value == pytest.approx(np.sum((a == arm) * r * k) / n, rel=1e-13)
        assert snips.value == pytest.approx(mine.mean(), rel=1e-13)
        # Weights are k on the arm's rows and 0 elsewhere: Kish's ESS is the arm's count,
        # and the delta-method SE is the arm's (ddof=0) standard deviation over sqrt(count).
        assert ips.effective_sample_size == pytest.approx(len(mine), rel=1e-12)
        assert snips.std_error == pytest.approx(mine.std() / np.sqrt(len(mine)), rel=1e-12)
        assert ips.std_error == pytest.approx(np.std((a == arm) * r * k, ddof=1) / np.sqrt(n), rel=1e-12)
        assert ips.clipped_share == 0.0 and ips.error is None


def test_on_policy_weights_are_one() -> None:
    rng = np.random.default_rng(4)
    r = rng.random(500)
    p = rng.uniform(0.05, 1.0, 500)
    ips = inverse_propensity(r, p, p)
    base = on_policy(r)
    assert ips.value == pytest.approx(r.mean(), rel=1e-14)
    assert ips.ci_low == pytest.approx(base.ci_low, rel=1e-12) and ips.effective_sample_size == pytest.approx(500)
    assert self_normalised(r, p, p).value == pytest.approx(r.mean(), rel=1e-14)


def test_direct_method_with_a_bare_array_is_the_mean_prediction() -> None:
    pi = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    f = np.array([[0.2, 0.4], [0.1, 0.9], [0.3, 0.6]])
    est = direct_method(pi, f)
    assert est.value == pytest.approx((0.3 + 0.1 + 0.6) / 3, rel=1e-14)
    assert est.std_error == pytest.approx(np.std([0.3, 0.1, 0.6], ddof=1) / np.sqrt(3), rel=1e-12)


def test_doubly_robust_with_a_perfect_model_and_zero_noise_is_the_direct_method() -> None:
    # Rewards equal the model's prediction: every residual is 0, so DR == DM exactly.
    rng = np.random.default_rng(5)
    n = 300
    f = rng.random((n, 3))
    a = rng.integers(3, size=n)
    r = f[np.arange(n), a]
    pi = rng.dirichlet(np.ones(3), size=n)
    dr = doubly_robust(r, np.full(n, 1 / 3), a, pi, f)
    assert dr.value == pytest.approx(direct_method(pi, f).value, rel=1e-13)


def test_clipping_caps_weights_and_reports_the_share() -> None:
    r = np.array([1.0, 0.0, 1.0, 1.0])
    p = np.array([0.001, 0.5, 0.25, 0.002])
    t = np.array([1.0, 0.5, 1.0, 0.5])
    w, share = importance_weights(p, t, max_weight=100.0)
    assert w.tolist() == [100.0, 1.0, 4.0, 100.0]
    assert share == 0.5
    clipped = inverse_propensity(r, p, t, OpeConfig(max_weight=100.0))
    assert clipped.value == pytest.approx((100 + 0 + 4 + 100) / 4)
    assert clipped.clipped_share == 0.5
    raw = inverse_propensity(r, p, t, OpeConfig(max_weight=np.inf))
    assert raw.value == pytest.approx((1000 + 0 + 4 + 250) / 4) and raw.clipped_share == 0.0
    with pytest.raises(ValueError, match="max_weight"):
        OpeConfig(max_weight=0)


def test_reward_model_is_cross_fitted_and_means_without_context() -> None:
    rng = np.random.default_rng(6)
    n = 1000
    a = rng.integers(2, size=n)
    r = rng.random(n)
    model = fit_reward_model(a, r, 2, None, seed=1)
    for f in (0, 1):
        other = model.fold != f
        for k in (0, 1):
            # Each fold is predicted by the other fold's mean reward of the arm.
            expected = r[other & (a == k)].mean()
            assert np.allclose(model.predictions[model.fold == f, k], expected, rtol=1e-12)
            # and its variance is that mean's: sum of squared residuals / n_k^2 * n_k / (n_k - 1).
            resid = r[other & (a == k)] - expected
            m = len(resid)
            assert model.coef_cov[f, k, 0, 0] == pytest.approx(resid @ resid / m**2 * m / (m - 1), rel=1e-9)
    assert abs(int((model.fold == 0).sum()) - int((model.fold == 1).sum())) <= 1


# --------------------------------------------------------------------- bad input and degenerate data


@pytest.mark.parametrize(
    ("propensity", "words"),
    [
        ([0.5, None, 0.5, np.nan, 0.2], ["2 of 5 rows", "2 missing or NaN", "first at row 1"]),
        ([0.5, 0.0, 0.5, 0.5, 0.2], ["1 of 5 rows", "1 zero or negative"]),
        ([0.5, 0.5, 1.5, -0.1, 0.2], ["2 of 5 rows", "1 above 1", "1 zero or negative"]),
    ],
)
def test_missing_zero_or_impossible_propensities_are_a_clear_error(propensity, words) -> None:
    r = np.zeros(5)
    t = np.full(5, 0.5)
    for estimator in (inverse_propensity, self_normalised):
        with pytest.raises(ValueError, match="logging_propensity must be in \\(0, 1\\]") as err:
            estimator(r, propensity, t)
        for word in words:
            assert word in str(err.value)
    with pytest.raises(ValueError, match="logging_propensity"):
        doubly_robust(r, propensity, np.zeros(5, dtype=int), np.full((5, 2), 0.5), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="rows are bad"):
        evaluate_candidates([{"name": "uniform"}], ["a", "b"], ["a"] * 5, r, propensity)


def test_other_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="one target probability per logged decision"):
        inverse_propensity([1, 0], [0.5, 0.5], [0.5])
    with pytest.raises(ValueError, match="target_prob must be in"):
        inverse_propensity([1, 0], [0.5, 0.5], [0.5, 1.5])
    with pytest.raises(ValueError, match="rewards must be finite"):
        inverse_propensity([1, np.nan], [0.5, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="summing to 1"):
        direct_method([[0.5, 0.6]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="shape"):
        direct_method([[0.5, 0.5]], [[0.0, 0.0, 0.0]])


def test_degenerate_data_is_a_result() -> None:
    assert inverse_propensity([], [], []).error == "NO_DATA"
    zero = inverse_propensity(np.zeros(10), np.full(10, 0.5), np.full(10, 0.5))
    assert zero.value == 0.0 and zero.ci_low is None and zero.error == "ZERO_VARIANCE"
    never = self_normalised(np.ones(10), np.full(10, 0.5), np.zeros(10))
    assert never.value is None and never.error == NO_OVERLAP
    single = inverse_propensity([1.0], [0.5], [1.0])
    assert single.value == 2.0 and single.error == "NOT_ENOUGH_DATA"


# --------------------------------------------------------------------- support


def test_support_warning_flags_mass_where_logging_rarely_went() -> None:
    rng = np.random.default_rng(8)
    n = 20_000
    # Logging: in half the contexts arm 2 gets only 0.5%.
    rare = rng.random(n) < 0.5
    probs = np.where(rare[:, None], [0.695, 0.3, 0.005], [0.4, 0.3, 0.3])
    a = (rng.random(n)[:, None] >= probs.cumsum(axis=1)).sum(axis=1)
    p = probs[np.arange(n), a]
    always_2 = (a == 2).astype(float)
    check = support_warning(p, always_2, threshold=0.01)
    # Half the candidate's choices fall in the rare contexts (up to sampling noise).
    assert check.warn and 0.4 < check.share_below < 0.6
    assert "below 1%" in check.message
    always_0 = (a == 0).astype(float)
    fine = support_warning(p, always_0, threshold=0.01)
    assert not fine.warn and fine.share_below == 0.0 and fine.message is None
    nothing = support_warning(p, np.zeros(n))
    assert nothing.warn and nothing.share_below is None


# --------------------------------------------------------------------- public data


def _hillstrom() -> tuple[list[dict], np.ndarray, np.ndarray]:
    arm_of = {"No E-Mail": "control", "Mens E-Mail": "mens", "Womens E-Mail": "womens"}
    contexts, arms, visit = [], [], []
    with (DATA / "hillstrom.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            contexts.append({"recency": float(row["recency"]), "history": float(row["history"]),
                             "channel": row["channel"], "zip_code": row["zip_code"]})
            arms.append(arm_of[row["segment"]])
            visit.append(float(row["visit"]))
    return contexts, np.asarray(arms), np.asarray(visit)


def test_hillstrom_always_mens_and_uniform_match_the_published_rates() -> None:
    # MineThatData (2008): 64,000 customers, each e-mail version with probability 1/3;
    # Mens n = 21,307 with visit rate 18.28%; all customers 14.68%.
    contexts, arms, visit = _hillstrom()
    n = len(arms)
    assert n == 64_000 and int((arms == "mens").sum()) == 21_307
    features = [{"name": "recency", "type": "numeric"}, {"name": "history", "type": "numeric"},
                {"name": "channel", "type": "categorical"}, {"name": "zip_code", "type": "categorical"}]
    rows = evaluate_candidates(
        [{"name": "always-mens", "policy": {"name": "fixed", "arm": "mens"}},
         {"name": "uniform", "policy": {"name": "uniform"}}],
        ["control", "mens", "womens"], arms, visit, np.full(n, 1 / 3), contexts=contexts, features=features,
    )
    logging, mens, uniform = rows
    mens_rate = visit[arms == "mens"].mean()
    assert mens.snips.value == pytest.approx(mens_rate, rel=1e-13)
    assert round(mens.snips.value, 4) == 0.1828
    assert mens.ips.ci_low <= 0.1828 <= mens.ips.ci_high
    assert mens.dr.ci_low <= mens_rate <= mens.dr.ci_high
    assert mens.dm.ci_low <= mens_rate <= mens.dm.ci_high
    assert uniform.ips.value == pytest.approx(visit.mean(), rel=1e-13)  # every weight is exactly 1
    assert uniform.snips.value == pytest.approx(visit.mean(), rel=1e-13)
    assert round(uniform.ips.value, 4) == 0.1468
    assert logging.ips.value == pytest.approx(visit.mean(), rel=1e-13)
    assert not mens.warnings and not uniform.warnings


def _obd(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with (DATA / "obd" / name).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    item = np.array([int(r["item_id"]) for r in rows])
    position = np.array([int(r["position"]) for r in rows])
    click = np.array([float(r["click"]) for r in rows])
    propensity = np.array([float(r["propensity_score"]) for r in rows])
    return item, position, click, propensity


def test_open_bandit_random_policy_estimated_from_the_thompson_log() -> None:
    # Open Bandit Dataset sample (Saito et al. 2021): 80 items shown in 3 positions. In the
    # random log every row's propensity is 1/80 whatever the position: propensity_score is
    # the probability of that item in that position (not of the whole 3-item slate). So the
    # random policy gives each logged (item, position) of the Bernoulli TS log probability
    # 1/80, i.e. the candidate "uniform over the 80 items", per position.
    r_item, r_pos, r_click, r_prop = _obd("random_all.csv")
    assert np.all(r_prop == 1 / 80) and set(np.unique(r_item)) == set(range(80)) and set(r_pos) == {1, 2, 3}
    b_item, b_pos, b_click, b_prop = _obd("bts_all.csv")
    items = [str(i) for i in range(80)]
    logging, uniform = evaluate_candidates(
        [{"name": "random", "policy": {"name": "uniform"}}], items, b_item.astype(str), b_click, b_prop,
        contexts=[{"position": str(p)} for p in b_pos], features=[{"name": "position", "type": "categorical"}],
    )
    random_mean = r_click.mean()
    random_log = on_policy(r_click)
    assert logging.ips.value == pytest.approx(b_click.mean())  # BTS's own click rate, 0.42%
    assert uniform.ips.ci_low <= random_mean <= uniform.ips.ci_high
    for est in (uniform.ips, uniform.snips, uniform.dr):
        assert est.ci_low <= random_log.ci_high and random_log.ci_low <= est.ci_high, est.name
    # BTS made some items very unlikely (propensity down to 4.5e-5): a few weights exceed 100
    # and are clipped, and much of the random policy's mass sits where BTS rarely went.
    assert 0 < uniform.ips.clipped_share < 0.01
    assert uniform.support.warn
    assert {w.code for w in uniform.warnings} >= {"LOW_SUPPORT", "WEIGHTS_CLIPPED"}


def test_core_imports_no_shell_package() -> None:
    code = (
        "import sys, reports.ope, bandits.candidates; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'sqlalchemy', 'service', 'alembic'}))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
