"""Time the CLV models on CDNOW and on a million simulated customers, and the service's fit.

Run: python bench/clv_bench.py [--customers N] [--seed S] [--no-synthetic] [--no-postgres]

1. CDNOW master (23,570 customers, calibration 1997-01-01..1997-09-30, weeks):
   summarise the raw log, fit BG/NBD and Gamma-Gamma.
2. The service path on the same purchases (imported first, not timed): the library
   alone (summary, both models, P(alive), expected purchases and the 52-week value of
   every customer) next to `service.usecases.value.fit` as of 1997-09-30, which also reads the
   purchases from the database and writes every customer's values, on SQLite and on a
   fresh PostgreSQL database; with and without the holdout to 1998-06-30.
3. N customers drawn from the BG/NBD + Gamma-Gamma generative process with the
   CDNOW-fitted parameters as the truth, acquired uniformly over 12 weeks and
   observed to week 39 like CDNOW:
   - "exact": the summary straight from the simulation (continuous times);
   - "daily log": the simulated transactions written as a dated log and
     summarised like real data (same-day purchases merge, times floor to days).
   Recovered parameters are printed next to the true ones.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from reports.clv import (
    BgNbdFit,
    GammaGammaFit,
    RfmSummary,
    fit_bgnbd,
    fit_gamma_gamma,
    summarise_transactions,
)

DATA = Path("/work/shared/data/cdnow/CDNOW_master.txt")
START = np.datetime64("1997-01-01")
CALIBRATION_END = np.datetime64("1997-09-30")


def yyyymmdd_to_days(values: np.ndarray) -> np.ndarray:
    """Turn YYYYMMDD numbers into datetime64[D] without a Python loop."""
    d = np.asarray(values, dtype=np.int64)
    months = (d // 10000 - 1970) * 12 + d // 100 % 100 - 1
    return months.astype("datetime64[M]").astype("datetime64[D]") + (d % 100 - 1)


def simulate(
    bg: BgNbdFit, gg: GammaGammaFit, n: int, rng: np.random.Generator
) -> tuple[RfmSummary, np.ndarray, np.ndarray, np.ndarray]:
    """Draw n customers; return their exact summary and their transaction log (ids, days, amounts)."""
    horizon_days = int((CALIBRATION_END - START).astype(int))
    first_day = rng.integers(0, 84, size=n)  # acquired in the first 12 weeks
    age = (horizon_days - first_day) / 7.0  # weeks to the end of calibration
    lam = rng.gamma(bg.r, 1.0 / bg.alpha, size=n)
    drop = rng.beta(bg.a, bg.b, size=n)
    # Alive until the K-th repeat purchase, K ~ Geometric(p) on {1, 2, ...}.
    k = rng.geometric(drop)
    n_poisson = rng.poisson(lam * age)
    x = np.minimum(n_poisson, k)
    # The x-th of n_poisson uniform arrival times on (0, T) is T * Beta(x, n - x + 1).
    has = x > 0
    tx = np.zeros(n)
    tx[has] = age[has] * rng.beta(x[has], n_poisson[has] - x[has] + 1)
    # Spend: nu ~ Gamma(q, rate v); each purchase ~ Gamma(p, rate nu).
    nu = rng.gamma(gg.q, 1.0 / gg.v, size=n)
    mean_spend = np.zeros(n)
    mean_spend[has] = rng.gamma(gg.p * x[has], 1.0 / (x[has] * nu[has]))
    exact = RfmSummary(x, tx, age, mean_spend, "W")

    # Transaction log: the first purchase, the x-th repeat at t_x and x-1 more
    # uniform on (0, t_x) (order statistics given the x-th arrival).
    ids = np.arange(n)
    rep_ids = np.repeat(ids[has], x[has])
    rep_tx = np.repeat(tx[has], x[has])
    last = np.zeros(rep_ids.size, dtype=bool)
    last[np.cumsum(x[has]) - 1] = True
    weeks = np.where(last, rep_tx, rep_tx * rng.random(rep_ids.size))
    rep_days = first_day[rep_ids] + np.floor(weeks * 7.0).astype(np.int64)
    rep_amount = rng.gamma(gg.p, 1.0 / nu[rep_ids])
    first_amount = rng.gamma(gg.p, 1.0 / nu)
    log_ids = np.concatenate([ids, rep_ids])
    log_days = START + np.concatenate([first_day, rep_days]).astype("timedelta64[D]")
    log_amounts = np.concatenate([first_amount, rep_amount])
    return exact, log_ids, log_days, log_amounts


REPEATS = 3


def _stats(times: list[float]) -> str:
    ordered = sorted(times)
    return f"{ordered[0]:>8.3f} {ordered[len(ordered) // 2]:>8.3f}"


def library_path(ids: np.ndarray, days: np.ndarray, amounts: np.ndarray, holdout: bool) -> None:
    """What the service computes, from arrays in memory: summary, models, values (and the holdout)."""
    from reports.clv import expected_purchases, fit_clv_model, probability_alive
    from reports.clv_holdout import calibration_and_holdout, validate_holdout

    if holdout:
        _, summary, kept = calibration_and_holdout(ids, days, amounts, CALIBRATION_END, "1998-06-30", "W")
    else:
        _, summary = summarise_transactions(ids, days, amounts, CALIBRATION_END, "W")
    model = fit_clv_model(summary)
    model.lifetime_value(summary, 52, 0.0027)
    probability_alive(model.bgnbd, summary)
    expected_purchases(model.bgnbd, summary, 52.0)
    if holdout:
        validate_holdout(model.bgnbd, summary, kept)


def service_rows(ids: np.ndarray, days: np.ndarray, amounts: np.ndarray, runs: int,
                 postgres: bool) -> list[tuple[str, list[float]]]:
    """Wall times of the library alone and of service.usecases.value.fit on SQLite and PostgreSQL."""
    import tempfile
    from contextlib import ExitStack

    from service.store import db as db_module
    from service.usecases.value import import_transactions, parse_moment
    from service.usecases.value import fit as service_fit

    lines = ["subject_id,date,amount"]
    lines += [f"{i:05d},{d},{a:.2f}" for i, d, a in zip(ids.tolist(), days.astype(str).tolist(), amounts.tolist())]
    csv = "\n".join(lines).encode()
    as_of, holdout_end = parse_moment("1997-09-30", "as_of"), parse_moment("1998-06-30", "holdout_end")
    rows: list[tuple[str, list[float]]] = []
    for holdout in (False, True):
        label = " + holdout to 1998-06-30" if holdout else ""
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            library_path(ids, days, amounts, holdout)
            times.append(time.perf_counter() - start)
        rows.append((f"library alone{label}", times))
    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="clv-bench-"))
        urls = [("SQLite", f"sqlite:///{folder}/clv.sqlite3")]
        if postgres:
            try:
                from _harness import Bench

                bench = stack.enter_context(Bench("clv"))
                urls.append(("PostgreSQL", bench.database(migrate_it=False).url))
            except Exception as exc:  # noqa: BLE001 - no server here: say so and time SQLite alone
                print(f"(PostgreSQL skipped: {exc.__class__.__name__}: {str(exc)[:120]})")
        for name, url in urls:
            db_module.upgrade(url)
            database = db_module.Database(url)
            stack.callback(database.dispose)
            with database.session() as session:
                import_transactions(session, csv, "csv")
            for holdout in (False, True):
                times = []
                for _ in range(runs):
                    with database.session() as session:
                        start = time.perf_counter()
                        service_fit(session, as_of=as_of, holdout_end=holdout_end if holdout else None)
                        session.commit()
                        times.append(time.perf_counter() - start)
                label = " + holdout to 1998-06-30" if holdout else ""
                rows.append((f"service fit, {name}{label}", times))
    return rows


def timed(fn, *args):  # type: ignore[no-untyped-def]
    """Result of fn(*args) and its best wall time over REPEATS runs (the machine is shared)."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20050101)
    parser.add_argument("--repeats", type=int, default=3, help="time each step this many times, keep the best")
    parser.add_argument("--service-runs", type=int, default=7, help="service fits per database (best and median)")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the simulated customers")
    parser.add_argument("--no-postgres", action="store_true", help="time the service on SQLite only")
    args = parser.parse_args()
    global REPEATS
    REPEATS = max(1, args.repeats)

    raw = np.loadtxt(DATA, skiprows=1)
    ids, days, amounts = raw[:, 0].astype(np.int64), yyyymmdd_to_days(raw[:, 1]), raw[:, 3]

    rows: list[tuple[str, int, int, float | None, float, float]] = []
    (_, cd_summary), t_sum = timed(summarise_transactions, ids, days, amounts, CALIBRATION_END, "W")
    cd_bg, t_bg = timed(fit_bgnbd, cd_summary)
    cd_gg, t_gg = timed(fit_gamma_gamma, cd_summary.frequency, cd_summary.monetary_value)
    rows.append(("CDNOW master", len(cd_summary), ids.size, t_sum, t_bg, t_gg))

    print("CDNOW master, calibration to 1997-09-30: the service's fit next to the library alone "
          f"(wall seconds over {args.service_runs} runs; import not timed)\n")
    header = f"{'path':<48} {'best s':>8} {'median s':>8}"
    print(header)
    print("-" * len(header))
    for name, times in service_rows(ids, days, amounts, args.service_runs, not args.no_postgres):
        print(f"{name:<48} {_stats(times)}")
    print()
    if args.no_synthetic:
        print(f"CDNOW master: summarise {t_sum:.3f} s, BG/NBD {t_bg:.3f} s, Gamma-Gamma {t_gg:.3f} s "
              f"(best of {REPEATS})")
        return

    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    exact, log_ids, log_days, log_amounts = simulate(cd_bg, cd_gg, args.customers, rng)
    t_sim = time.perf_counter() - start
    ex_bg, t_bg = timed(fit_bgnbd, exact)
    ex_gg, t_gg = timed(fit_gamma_gamma, exact.frequency, exact.monetary_value)
    rows.append(("synthetic, exact summary", len(exact), int(exact.frequency.sum()) + len(exact), None, t_bg, t_gg))
    (_, daily), t_sum = timed(summarise_transactions, log_ids, log_days, log_amounts, CALIBRATION_END, "W")
    dl_bg, t_bg = timed(fit_bgnbd, daily)
    dl_gg, t_gg = timed(fit_gamma_gamma, daily.frequency, daily.monetary_value)
    rows.append(("synthetic, daily log", len(daily), log_ids.size, t_sum, t_bg, t_gg))

    print(f"simulating {args.customers:,} customers took {t_sim:.2f} s (seed {args.seed}); "
          f"times are the best of {REPEATS} runs\n")
    header = (
        f"{'data':<26} {'customers':>10} {'transactions':>13} {'summarise s':>12} "
        f"{'BG/NBD s':>9} {'Gamma-Gamma s':>14} {'total s':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, n_cust, n_tx, ts, tb, tg in rows:
        summarise = f"{ts:>12.3f}" if ts is not None else f"{'-':>12}"
        total = (ts or 0.0) + tb + tg
        print(f"{name:<26} {n_cust:>10,} {n_tx:>13,} {summarise} {tb:>9.3f} {tg:>14.3f} {total:>8.3f}")

    print()
    header = f"{'parameter':<16} {'true (CDNOW fit)':>17} {'exact summary':>14} {'daily log':>10}"
    print(header)
    print("-" * len(header))
    for name in ("r", "alpha", "a", "b"):
        true, exact_fit, daily_fit = (getattr(fit, name) for fit in (cd_bg, ex_bg, dl_bg))
        print(f"BG/NBD {name:<9} {true:>17.4f} {exact_fit:>14.4f} {daily_fit:>10.4f}")
    for name in ("p", "q", "v"):
        true, exact_fit, daily_fit = (getattr(fit, name) for fit in (cd_gg, ex_gg, dl_gg))
        print(f"Gamma-Gamma {name:<4} {true:>17.4f} {exact_fit:>14.4f} {daily_fit:>10.4f}")
    print(f"{'converged':<16} {str(cd_bg.converged and cd_gg.converged):>17} "
          f"{str(ex_bg.converged and ex_gg.converged):>14} {str(dl_bg.converged and dl_gg.converged):>10}")


if __name__ == "__main__":
    main()
