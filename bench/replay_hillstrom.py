"""Offline replay of bandit policies on the Hillstrom e-mail experiment (Li et al. 2011).

Hillstrom's 64,000 customers were split uniformly at random over three arms
(Mens e-mail, Womens e-mail, no e-mail), so each logged arm had probability
1/3. Replay streams the customers in a shuffled order; a policy decides for
each one, and only when its choice equals the logged arm is the event accepted:
its outcome counts for the policy and joins its training data. Li et al. show
that the accepted events are then distributed as if the policy had run live.
Policies learn the visit (binary reward) and are refitted every ``--batch``
accepted events; the table shows the replayed visit rate and spend per customer
(means over shuffled replays) with 95% normal intervals for one replay's
number of accepted events.

Usage: python bench/replay_hillstrom.py [--data PATH] [--batch 1000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
POLICIES: dict[str, tuple[PolicySpec | None, list[FeatureSpec]]] = {
    "uniform random": (None, FEATURES),
    "epsilon-greedy (0.1)": (PolicySpec(name="epsilon_greedy", epsilon=0.1), FEATURES),
    "UCB1 (alpha 0.5)": (PolicySpec(name="ucb1", alpha=0.5), FEATURES),
    "Thompson sampling": (PolicySpec(name="thompson_sampling"), FEATURES),
    "LinUCB (alpha 0.5), all": (PolicySpec(name="lin_ucb", alpha=0.5), FEATURES),
    "LinTS (alpha 0.25), all": (PolicySpec(name="lin_ts", alpha=0.25), FEATURES),
    "LinUCB (alpha 0.05), history": (PolicySpec(name="lin_ucb", alpha=0.05), PURCHASE_HISTORY),
    "LinTS (alpha 0.1), history": (PolicySpec(name="lin_ts", alpha=0.1), PURCHASE_HISTORY),
}


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


def replay(spec: PolicySpec | None, log: Log, order: np.ndarray, batch: int, seed: int,
           features: list[FeatureSpec] = FEATURES) -> Replay:
    """Replay one policy over the events in ``order``, refitting every ``batch`` accepted events."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    policy = Policy.cold(spec, features, ARMS, seed=seed) if spec is not None else None
    accepted: list[int] = []
    pending: list[int] = []
    pos = 0
    while pos < len(order):
        # The policy is fixed until the next refit, so decide a block at once and
        # stop at the event that completes the batch; the rest is decided again.
        block = order[pos : pos + 4 * batch]
        if policy is None:
            chosen = rng.integers(len(ARMS), size=len(block))
        else:
            decisions = policy.decide([log.contexts[i] for i in block], rng)
            chosen = np.array([ARMS.index(d.arm) for d in decisions])
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


def fixed_arm(log: Log, order: np.ndarray, arm: int) -> Replay:
    """Replay of always choosing one arm: exactly the events logged with that arm."""
    idx = order[log.arms[order] == arm]
    return Replay(log.visit[idx], log.spend[idx], 0.0)


def interval(values: np.ndarray, n: float) -> str:
    """Mean with a 95% normal interval for a sample of size ``n``."""
    mean = values.mean()
    half = 1.96 * values.std(ddof=1) / math.sqrt(n)
    return f"{mean:.4f} [{mean - half:.4f}, {mean + half:.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3, help="shuffled replays per policy, pooled")
    args = parser.parse_args()

    log = load(args.data)
    orders = [np.random.default_rng(seed).permutation(len(log.arms)) for seed in range(args.seeds)]
    rates = {arm: log.visit[log.arms == i].mean() for i, arm in enumerate(ARMS)}
    best = max(range(len(ARMS)), key=lambda i: rates[ARMS[i]])
    runs: dict[str, list[Replay]] = {}
    for name, (spec, features) in POLICIES.items():
        runs[name] = [replay(spec, log, order, args.batch, seed, features) for seed, order in enumerate(orders)]
    runs[f"best fixed arm ({ARMS[best]})"] = [fixed_arm(log, order, best) for order in orders]

    print(f"Hillstrom replay: {len(log.arms):,} customers, refit every {args.batch:,} accepted events, "
          f"{args.seeds} shuffles pooled; reward = visit; exploration floor 0.05")
    print(f"{'policy':<30} {'accepted':>9} {'visit rate [95% CI]':>28} {'spend/customer [95% CI]':>28} {'seconds':>8}")
    for name, results in runs.items():
        visits = np.concatenate([r.visits for r in results])
        spend = np.concatenate([r.spend for r in results])
        seconds = sum(r.seconds for r in results)
        # Shuffles replay the same customers, so the interval uses one replay's sample size.
        n = len(visits) / len(results)
        print(f"{name:<30} {n:>9,.0f} {interval(visits, n):>28} {interval(spend, n):>28} {seconds:>8.1f}")
    print("logged rates per arm: " + ", ".join(f"{arm} {rate:.4f}" for arm, rate in rates.items()))


if __name__ == "__main__":
    main()
