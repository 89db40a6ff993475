"""Offline replay of bandit policies on the Hillstrom e-mail experiment (Li et al. 2011).

Hillstrom's 64,000 customers were split uniformly at random over three arms
(Mens e-mail, Womens e-mail, no e-mail), so each logged arm had probability
1/3. Replay streams the customers in a shuffled order; a policy decides for
each one, and only when its choice equals the logged arm is the event accepted:
its outcome counts for the policy and joins its training data. Li et al. show
that the accepted events are then distributed as if the policy had run live.
Policies learn the visit (binary reward) and are refitted every ``--batch``
accepted events.

Measurement. Every policy replays the same shuffles, and within a shuffle every
customer position has one uniform number that all policies use to draw their
choice from their exact choice probabilities (``Policy.probabilities``, then the
inverse-CDF draw ``Policy.decide`` makes): common random numbers, so two
policies that give a customer the same probabilities make the same choice, and
the comparison between policies is paired. The table shows the mean over
shuffles with a 95% normal interval for one replay's number of accepted events;
below it, each policy's difference from Thompson sampling, shuffle by shuffle,
with its standard error across shuffles. That error measures the replay's own
randomness (order and draws) on these 64,000 customers; it does not cover the
sampling of the customers themselves.

Tuning. The alphas of the linear policies were chosen with ``--tune`` on
shuffles 100-104, which are never reported; the table uses shuffles 0, 1, ...
Two rows are hindsight bounds computed from all 64,000 outcomes, not policies:
the best single arm, and the best arm in each purchase-history cell, which is
the most any policy on those features could reach.

Why the contextual policies can at best tie Thompson sampling here: the Mens
e-mail is the best arm in every purchase-history cell but one (women's-only
buyers who are not new, where Womens leads by 0.0075 with a standard error of
0.008), so the best per-cell policy beats always-Mens by about 0.0015, while a
linear policy learns four coefficients per arm instead of one rate and pays
for them while it learns. An additive model in (mens, womens, newbie) cannot
even represent that one cell: fitted on all the data it still sends Mens there.

Usage: python bench/replay_hillstrom.py [--data PATH] [--batch 1000] [--seeds 10] [--tune]
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from bandits import Policy
from experiments.spec import FeatureSpec, PolicySpec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hillstrom.csv"
ARMS = ("control", "mens", "womens")
SEGMENT_TO_ARM = {"No E-Mail": "control", "Mens E-Mail": "mens", "Womens E-Mail": "womens"}
FEATURES = [
    FeatureSpec(name="recency", type="numeric"),
    FeatureSpec(name="history", type="numeric"),
    FeatureSpec(name="mens", type="numeric"),
    FeatureSpec(name="womens", type="numeric"),
    FeatureSpec(name="newbie", type="numeric"),
    FeatureSpec(name="zip_code", type="categorical"),
    FeatureSpec(name="channel", type="categorical"),
    FeatureSpec(name="history_segment", type="categorical"),
]
# The customer's purchase history in men's and women's merchandise: what should decide between
# a men's and a women's e-mail. With every feature, the linear policies spend their data on
# dimensions that barely separate the arms.
PURCHASE_HISTORY = [FeatureSpec(name=name, type="numeric") for name in ("mens", "womens", "newbie")]
BASELINE = "Thompson sampling"
# Shuffles for choosing alpha; the reported shuffles are 0 .. --seeds - 1.
TUNING_SEEDS = tuple(range(100, 105))
ALPHA_GRID = (0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8)
# Linear policies to tune: (label, policy name, features). The alphas below are the --tune winners.
LINEAR = {
    "LinUCB, all": ("lin_ucb", FEATURES),
    "LinTS, all": ("lin_ts", FEATURES),
    "LinUCB, history": ("lin_ucb", PURCHASE_HISTORY),
    "LinTS, history": ("lin_ts", PURCHASE_HISTORY),
}
# Visit rate is flat in alpha below 0.1 on the tuning shuffles (differences within their noise):
# the exploration floor already explores, and a wider bound only costs visits.
TUNED_ALPHA = {"LinUCB, all": 0.025, "LinTS, all": 0.025, "LinUCB, history": 0.01, "LinTS, history": 0.1}


def row_name(label: str, alpha: float) -> str:
    """Table label with the alpha in use, e.g. 'LinUCB (alpha 0.01), history'."""
    policy, features = label.split(", ")
    return f"{policy} (alpha {alpha:g}), {features}"


POLICIES: dict[str, tuple[PolicySpec | None, list[FeatureSpec]]] = {
    "uniform random": (None, FEATURES),
    "epsilon-greedy (0.1)": (PolicySpec(name="epsilon_greedy", epsilon=0.1), FEATURES),
    "UCB1 (alpha 0.5)": (PolicySpec(name="ucb1", alpha=0.5), FEATURES),
    BASELINE: (PolicySpec(name="thompson_sampling"), FEATURES),
    **{
        row_name(label, TUNED_ALPHA[label]): (PolicySpec(name=name, alpha=TUNED_ALPHA[label]), features)
        for label, (name, features) in LINEAR.items()
    },
}
CELL = ("mens", "womens", "newbie")


@dataclass(frozen=True)
class Log:
    contexts: list[dict]
    arms: np.ndarray  # index into ARMS
    visit: np.ndarray
    spend: np.ndarray


@dataclass(frozen=True)
class Replay:
    visits: np.ndarray
    spend: np.ndarray
    seconds: float

    @property
    def rate(self) -> float:
        return float(self.visits.mean())


@dataclass(frozen=True)
class Paired:
    """Shuffle-by-shuffle difference of two policies' visit rates."""

    mean: float
    se: float
    wins: int
    n: int


def load(path: Path) -> Log:
    contexts, arms, visit, spend = [], [], [], []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            contexts.append(
                {
                    "recency": float(row["recency"]),
                    "history": float(row["history"]),
                    "mens": float(row["mens"]),
                    "womens": float(row["womens"]),
                    "newbie": float(row["newbie"]),
                    "zip_code": row["zip_code"],
                    "channel": row["channel"],
                    "history_segment": row["history_segment"],
                }
            )
            arms.append(ARMS.index(SEGMENT_TO_ARM[row["segment"]]))
            visit.append(float(row["visit"]))
            spend.append(float(row["spend"]))
    return Log(contexts, np.array(arms), np.array(visit), np.array(spend))


def shuffle(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The customer order of one replay and one uniform number per position, shared by all policies."""
    rng = np.random.default_rng(seed)
    return rng.permutation(n), rng.random(n)


def draw(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Arm index per row from its probability vector and a given uniform (the inverse CDF ``decide`` uses)."""
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    return (u[:, None] >= cdf).sum(axis=1)


def replay(spec: PolicySpec | None, log: Log, order: np.ndarray, u: np.ndarray, batch: int, seed: int,
           features: list[FeatureSpec] = FEATURES) -> Replay:
    """Replay one policy over the events in ``order``, refitting every ``batch`` accepted events."""
    start = time.perf_counter()
    policy = Policy.cold(spec, features, ARMS, seed=seed) if spec is not None else None
    accepted: list[int] = []
    pending: list[int] = []
    pos = 0
    while pos < len(order):
        # The policy is fixed until the next refit, so decide a block at once and
        # stop at the event that completes the batch; the rest is decided again.
        block = order[pos : pos + 4 * batch]
        if policy is None:
            p = np.full((len(block), len(ARMS)), 1.0 / len(ARMS))
        else:
            p = policy.probabilities([log.contexts[i] for i in block])
        chosen = draw(p, u[pos : pos + len(block)])
        used = len(block)
        for j in np.flatnonzero(chosen == log.arms[block]).tolist():
            pending.append(int(block[j]))
            if len(pending) == batch:
                used = j + 1
                break
        pos += used
        if len(pending) == batch or pos >= len(order):
            accepted.extend(pending)
            if policy is not None and pending:
                policy = policy.update(
                    [log.contexts[i] for i in pending], [ARMS[log.arms[i]] for i in pending], log.visit[pending]
                )
            pending = []
    idx = np.array(accepted)
    return Replay(log.visit[idx], log.spend[idx], time.perf_counter() - start)


def fixed(log: Log, order: np.ndarray, arm_of: np.ndarray) -> Replay:
    """Replay of a deterministic policy (arm index per customer): exactly the events logged with its arm."""
    idx = order[log.arms[order] == arm_of[order]]
    return Replay(log.visit[idx], log.spend[idx], 0.0)


def best_per_cell(log: Log) -> np.ndarray:
    """Arm with the highest logged visit rate in each customer's purchase-history cell (hindsight)."""
    cells = np.array([[ctx[name] for name in CELL] for ctx in log.contexts])
    _, cell = np.unique(cells, axis=0, return_inverse=True)
    cell = cell.ravel()
    rates = np.zeros((cell.max() + 1, len(ARMS)))
    for arm in range(len(ARMS)):
        hit = log.arms == arm
        rates[:, arm] = np.bincount(cell[hit], log.visit[hit]) / np.bincount(cell[hit])
    return rates.argmax(axis=1)[cell]


def paired(a: list[Replay], b: list[Replay]) -> Paired:
    """Mean of the per-shuffle differences a - b in visit rate and its standard error across shuffles."""
    d = np.array([x.rate - y.rate for x, y in zip(a, b, strict=True)])
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    return Paired(float(d.mean()), se, int((d >= 0).sum()), len(d))


def interval(values: np.ndarray, n: float) -> str:
    """Mean with a 95% normal interval for a sample of size ``n``."""
    mean = values.mean()
    half = 1.96 * values.std(ddof=1) / math.sqrt(n)
    return f"{mean:.4f} [{mean - half:.4f}, {mean + half:.4f}]"


def tune(log: Log, batch: int) -> None:
    """Print each linear policy's visit rate over the alpha grid on the tuning shuffles, and the best alpha."""
    shuffles = [shuffle(len(log.arms), seed) for seed in TUNING_SEEDS]
    baseline = POLICIES[BASELINE][0]
    ts = [replay(baseline, log, o, u, batch, s) for s, (o, u) in zip(TUNING_SEEDS, shuffles)]
    print(f"alpha tuning on shuffles {TUNING_SEEDS[0]}-{TUNING_SEEDS[-1]} (never reported); "
          f"{BASELINE} {np.mean([r.rate for r in ts]):.4f}")
    print(f"{'policy':<18} {'alpha':>6} {'visit rate':>11} {'minus TS [SE]':>18}")
    for label, (name, features) in LINEAR.items():
        results = {}
        for alpha in ALPHA_GRID:
            spec = PolicySpec(name=name, alpha=alpha)
            runs = [replay(spec, log, o, u, batch, s, features) for s, (o, u) in zip(TUNING_SEEDS, shuffles)]
            results[alpha] = float(np.mean([r.rate for r in runs]))
            diff = paired(runs, ts)
            print(f"{label:<18} {alpha:>6g} {results[alpha]:>11.4f} {diff.mean:>+9.4f} [{diff.se:.4f}]", flush=True)
        print(f"{label:<18} best alpha {max(results, key=results.get):g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=10, help="shuffled replays per policy (shuffles 0 .. N-1)")
    parser.add_argument("--tune", action="store_true", help=f"choose alpha on shuffles {TUNING_SEEDS} instead")
    args = parser.parse_args()

    log = load(args.data)
    if args.tune:
        tune(log, args.batch)
        return
    seeds = range(args.seeds)
    shuffles = [shuffle(len(log.arms), seed) for seed in seeds]
    rates = {arm: log.visit[log.arms == i].mean() for i, arm in enumerate(ARMS)}
    best = max(range(len(ARMS)), key=lambda i: rates[ARMS[i]])
    runs: dict[str, list[Replay]] = {}
    for name, (spec, features) in POLICIES.items():
        runs[name] = [replay(spec, log, o, u, args.batch, s, features) for s, (o, u) in zip(seeds, shuffles)]
    runs[f"best fixed arm ({ARMS[best]})"] = [fixed(log, o, np.full(len(log.arms), best)) for o, _ in shuffles]
    cell_arm = best_per_cell(log)
    runs["best arm per history cell"] = [fixed(log, o, cell_arm) for o, _ in shuffles]

    print(f"Hillstrom replay: {len(log.arms):,} customers, refit every {args.batch:,} accepted events, "
          f"shuffles 0-{args.seeds - 1} (alphas chosen on shuffles {TUNING_SEEDS[0]}-{TUNING_SEEDS[-1]}); "
          f"reward = visit; exploration floor 0.05; last two rows: hindsight bounds")
    print(f"{'policy':<30} {'accepted':>9} {'visit rate [95% CI]':>28} {'spend/customer [95% CI]':>28} {'seconds':>8}")
    for name, results in runs.items():
        visits = np.concatenate([r.visits for r in results])
        spend = np.concatenate([r.spend for r in results])
        seconds = sum(r.seconds for r in results)
        # Shuffles replay the same customers, so the interval uses one replay's sample size.
        n = len(visits) / len(results)
        print(f"{name:<30} {n:>9,.0f} {interval(visits, n):>28} {interval(spend, n):>28} {seconds:>8.1f}")
    print("logged rates per arm: " + ", ".join(f"{arm} {rate:.4f}" for arm, rate in rates.items()))
    print(f"visit rate minus {BASELINE}, paired over {args.seeds} shuffles: mean [standard error], "
          f"95% t interval, shuffles where not behind")
    for name in POLICIES:
        if name == BASELINE or POLICIES[name][0] is None:
            continue
        d = paired(runs[name], runs[BASELINE])
        half = float(stats.t.ppf(0.975, d.n - 1)) * d.se  # t interval: few shuffles
        print(f"  {name:<28} {d.mean:+.4f} [{d.se:.4f}]  [{d.mean - half:+.4f}, {d.mean + half:+.4f}]"
              f"  {d.wins}/{d.n}")


if __name__ == "__main__":
    main()
