"""Send time: does sending at each subject's estimated hour lift the open rate?

A seeded simulation of 20,000 subjects. Each has hours of the day when they read
mail: their own hour pattern is drawn around the population's (a Dirichlet with
strength 6 around a morning, lunch and evening mix), and a send is opened with
probability 0.08 x 24 x (their share of that hour) / (1 + their share x 23), so a
send at a subject's favourite hour is opened several times as often as one at a
dead hour. Each subject has a history of past opens (Poisson, mean 5) drawn from
their own pattern. Sends go out at:

- a random hour outside quiet hours (21:00-08:00);
- the population's best hour;
- the subject's own most frequent hour in the history, unshrunk (ties to the earliest);
- the estimate of `experiments.sendtime` (hours shrunk toward the population's).

A second scenario gives every subject the population's pattern (nothing personal to
find): there the estimate should do no worse than the population's best hour.
Open rates are the mean of the open probabilities of the chosen hours (no sampling
noise in the comparison), with each subject's history drawn once per seed.

Run: .venv/bin/python bench/sendtime_bench.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.sendtime import HOURS, best_hour, fit_hour_prior, quiet_mask  # noqa: E402

SUBJECTS = 20_000
SEEDS = (1, 2, 3)
QUIET = quiet_mask("21:00", "08:00")
OPEN_HOURS = np.array([h for h in range(HOURS) if not QUIET[h]])


def population_pattern() -> np.ndarray:
    hours = np.arange(HOURS)
    bumps = (np.exp(-0.5 * ((hours - 9) / 1.2) ** 2) + 0.7 * np.exp(-0.5 * ((hours - 12.5) / 1.0) ** 2)
             + 1.1 * np.exp(-0.5 * ((hours - 19.5) / 1.5) ** 2) + 0.05)
    return bumps / bumps.sum()


def open_probability(shares: np.ndarray) -> np.ndarray:
    return 0.08 * HOURS * shares / (1 + shares * (HOURS - 1))


def run(seed: int, personal: bool) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    population = population_pattern()
    patterns = rng.dirichlet(6.0 * population, size=SUBJECTS) if personal else \
        np.tile(population, (SUBJECTS, 1))
    history = np.array([rng.multinomial(n, p) for n, p in zip(rng.poisson(5, SUBJECTS), patterns, strict=True)])
    started = time.perf_counter()
    prior = fit_hour_prior(history)
    estimated = np.array([best_hour(row, prior, QUIET).hour for row in history])
    seconds = time.perf_counter() - started
    random_hours = rng.choice(OPEN_HOURS, size=SUBJECTS)
    masked_population = np.where(QUIET, -1.0, population)
    population_best = np.full(SUBJECTS, int(np.argmax(masked_population)))
    raw = np.where(np.array(QUIET)[None, :], -1, history).argmax(axis=1)
    raw = np.where(history[:, OPEN_HOURS].sum(axis=1) > 0, raw, population_best)
    rates = open_probability(patterns)
    rows = np.arange(SUBJECTS)
    return {"random hour": rates[rows, random_hours].mean(), "population's best hour": rates[rows, population_best].mean(),
            "own most frequent hour (unshrunk)": rates[rows, raw].mean(),
            "estimated hour (shrunk)": rates[rows, estimated].mean(), "seconds": seconds,
            "strength": prior.strength, "quiet": float(np.mean([QUIET[h] for h in estimated]))}


def main() -> None:
    for personal, title in ((True, "subjects with hours of their own"), (False, "every subject like the population")):
        runs = [run(seed, personal) for seed in SEEDS]
        print(f"\nSend time, {title}: open rate by send hour ({SUBJECTS:,} subjects, seeds {SEEDS})\n")
        print("| send at | open rate (mean of seeds) | × random hour |")
        print("| --- | --- | --- |")
        base = np.mean([r["random hour"] for r in runs])
        for name in ("random hour", "population's best hour", "own most frequent hour (unshrunk)",
                     "estimated hour (shrunk)"):
            value = np.mean([r[name] for r in runs])
            print(f"| {name} | {value:.4f} | {value / base:.2f} |")
        print(f"\nfitted prior strength {np.mean([r['strength'] for r in runs]):.1f} events; estimate and choice "
              f"for {SUBJECTS:,} subjects in {np.mean([r['seconds'] for r in runs]):.2f} s; "
              f"share of estimated hours within quiet hours: {np.mean([r['quiet'] for r in runs]):.0%}")


if __name__ == "__main__":
    main()
