"""`nextbest demo`: the whole loop on real customers, end to end through the HTTP API.

It starts the service on an embedded SQLite database, then acts as a channel
system with the Hillstrom e-mail customers: an A/B test (Mens e-mail, Womens
e-mail, no e-mail) and a Thompson-sampling bandit with a 10% holdout on the same
arms. Customers arrive in daily waves; for each decision, the outcome is drawn
from a real customer with the same profile (purchase-history segment, channel,
newbie) who actually received that arm, so the data stay real. Customers arrive
in four waves a day; outcomes arrive up to two days late, as they do. The
bandit learns from each decision once it is a day old (the default reward wait),
with what arrived by then, whatever the outcome; the reports still count two
weeks (its attribution window). The refit and promotion jobs run every six
hours as in production. Time is simulated, so two weeks take seconds.
"""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service import clock
from service.store import db as db_module

ARMS = [
    {"key": "control", "name": "No E-Mail", "is_control": True, "payload": {"template": "none"}},
    {"key": "mens", "name": "Mens E-Mail", "payload": {"template": "mens-v1"}},
    {"key": "womens", "name": "Womens E-Mail", "payload": {"template": "womens-v1"}},
]
SEGMENT_TO_ARM = {"No E-Mail": "control", "Mens E-Mail": "mens", "Womens E-Mail": "womens"}
PUBLISHED_VISIT = {"mens": 0.1828, "womens": 0.1514, "control": 0.1062}
PUBLISHED_CONVERSION = {"mens": 0.01253, "womens": 0.00884, "control": 0.00573}
DAY = 86400
TICKS_PER_DAY = 4  # customers arrive, outcomes are delivered and jobs run every six hours


@dataclass(frozen=True, slots=True)
class Customer:
    features: dict[str, Any]
    profile: tuple[str, str, int]
    arm: str
    visit: int
    conversion: int
    spend: float


def load_customers(path: Path) -> list[Customer]:
    customers = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            features = {"recency": int(row["recency"]), "history": float(row["history"]),
                        "mens": int(row["mens"]), "womens": int(row["womens"]), "newbie": int(row["newbie"]),
                        "zip_code": row["zip_code"], "channel": row["channel"],
                        "history_segment": row["history_segment"]}
            customers.append(Customer(
                features=features, profile=(row["history_segment"], row["channel"], int(row["newbie"])),
                arm=SEGMENT_TO_ARM[row["segment"]], visit=int(row["visit"]), conversion=int(row["conversion"]),
                spend=float(row["spend"]),
            ))
    return customers


class OutcomeSampler:
    """Draw what a customer would have done with an arm from real customers like them who got it."""

    def __init__(self, customers: list[Customer], rng: np.random.Generator):
        self.rng = rng
        self.pools: dict[tuple[Any, ...], list[Customer]] = defaultdict(list)
        for customer in customers:
            self.pools[(customer.profile, customer.arm)].append(customer)
            self.pools[("any", customer.arm)].append(customer)

    def draw(self, customer: Customer, arm: str) -> Customer:
        pool = self.pools.get((customer.profile, arm)) or self.pools[("any", arm)]
        return pool[int(self.rng.integers(len(pool)))]


def ab_spec(key: str) -> dict[str, Any]:
    return {
        "key": key, "name": "Hillstrom e-mail: A/B test", "arms": ARMS,
        "allocation": {"type": "fixed", "weights": {"control": 1, "mens": 1, "womens": 1}},
        "reward": {"event": "click"}, "attribution_window_seconds": 7 * DAY,
        # Hillstrom recorded no unsubscribes, so an unsubscribe guardrail could never be checked here.
        "promotion": {"metric": "click_rate", "confidence": 0.95, "min_decisions_per_arm": 1000,
                      "min_runtime_seconds": 7 * DAY, "action": "promote", "holdback": 0.05},
    }


def bandit_spec(key: str) -> dict[str, Any]:
    return {
        "key": key, "name": "Hillstrom e-mail: Thompson-sampling bandit", "arms": ARMS,
        "allocation": {"type": "bandit", "policy": {"name": "thompson_sampling"}, "holdout": 0.1,
                       "refit_interval_seconds": DAY // TICKS_PER_DAY},
        # Learns from a click received within a day of the decision (the default wait, said here to be seen);
        # the report attributes clicks over two weeks.
        "reward": {"event": "click", "wait_seconds": DAY}, "attribution_window_seconds": 14 * DAY,
    }


class Progress:
    def __init__(self, total: int, stream: Any = sys.stderr, width: int = 30):
        self.total, self.stream, self.width, self.done = total, stream, width, 0

    def step(self, label: str) -> None:
        self.done += 1
        filled = int(self.width * self.done / self.total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {label:<40}")
        self.stream.flush()
        if self.done == self.total:
            self.stream.write("\n")


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, str]:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://{host}:{server.server_port}"


def run_demo(data: Path, out: Path, *, days: int = 14, per_day: int = 1500, seed: int = 2008,
             port: int = 8000, keep_serving: bool = False, stream: Any = sys.stdout) -> dict[str, Any]:
    """Run the loop; returns the summary (also printed) so tests can check it against the data."""
    from service.app import create_app
    from service.http.auth import create_key
    from service.client import Client
    from service.jobs.learning import refit_all
    from service.jobs.leases import holder_name

    out.mkdir(parents=True, exist_ok=True)
    database = out / "demo.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    db_module.upgrade(url)
    app = create_app({"DATABASE_URL": url, "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0, "NEXTBEST_ACCESS_LOG": "off"})
    with db_module.get_db(app).session() as session:
        _, analyst_key = create_key(session, "demo-analyst", "analyst")
        _, channel_key = create_key(session, "demo-channel", "channel")
    try:
        server, base = serve_in_thread(app, port=port)
    except OSError:
        server, base = serve_in_thread(app, port=0)
    analyst, channel = Client(base, analyst_key), Client(base, channel_key)
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    customers = load_customers(data)
    sampler = OutcomeSampler(customers, rng)
    analyst.create_experiment(ab_spec("hillstrom-ab"))
    analyst.create_experiment(bandit_spec("hillstrom-bandit"))
    for key in ("hillstrom-ab", "hillstrom-bandit"):
        analyst.action(key, "start")

    pending: list[tuple[float, dict[str, Any]]] = []  # (deliver at simulated time, event)
    shares: list[dict[str, float]] = []
    promotions: list[dict[str, Any]] = []
    progress = Progress(days, stream=sys.stderr)
    order = rng.permutation(len(customers))
    cursor = 0
    for day in range(days):
        counts: Counter[str] = Counter()
        delivered = 0
        for tick in range(TICKS_PER_DAY):
            now_ts = clock.utcnow().timestamp()
            for key in ("hillstrom-ab", "hillstrom-bandit"):
                size = per_day // TICKS_PER_DAY + (1 if tick < per_day % TICKS_PER_DAY else 0)
                wave = [customers[i] for i in order[cursor:cursor + size]]
                cursor = (cursor + size) % (len(customers) - per_day)
                subjects = [{"subject_id": f"{key}-{day}-{tick}-{n}", "context": c.features}
                            for n, c in enumerate(wave)]
                decisions = channel.assign_batch(key, subjects, channel="email")
                for customer, decision in zip(wave, decisions):
                    if decision.no_offer or decision.assignment_id is None:
                        continue
                    real = sampler.draw(customer, decision.arm or "control")
                    delay = float(rng.uniform(0.1, 2.0)) * DAY  # outcomes arrive late
                    if real.visit:
                        pending.append((now_ts + delay, channel.event(
                            "click", assignment_id=decision.assignment_id,
                            occurred_at=_at(now_ts + delay * 0.5))))
                    if real.conversion:
                        pending.append((now_ts + delay, channel.event(
                            "conversion", assignment_id=decision.assignment_id, value=real.spend,
                            occurred_at=_at(now_ts + delay * 0.9))))
                if key == "hillstrom-bandit":
                    counts.update(d.arm for d in decisions if not d.holdout)
            clock.advance(DAY // TICKS_PER_DAY)
            now = clock.utcnow().timestamp()
            due = [event for at, event in pending if at <= now]
            pending = [(at, event) for at, event in pending if at > now]
            for start in range(0, len(due), 5000):
                channel.send_events(due[start:start + 5000])
            delivered += len(due)
            with db_module.get_db(app).session() as session:
                refit_all(session, holder=holder_name("demo"))
                promotions.extend(_promote(session))
        total = sum(counts.values()) or 1
        shares.append({arm: counts[arm] / total for arm in ("control", "mens", "womens")})
        progress.step(f"day {day + 1}: {delivered} late outcomes delivered")
    clock.advance(7 * DAY)
    late = [event for _, event in pending]
    for start in range(0, len(late), 5000):
        channel.send_events(late[start:start + 5000])

    report = analyst.report("hillstrom-ab").raw
    html = analyst.request("GET", "/v1/experiments/hillstrom-ab/report", params={"format": "html"})
    (out / "hillstrom-ab-report.html").write_text(html)
    bandit_report = analyst.report("hillstrom-bandit").raw
    summary = _summary(report, bandit_report, shares, promotions, time.monotonic() - started)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary, stream)
    stream.write(f"\nHTML report: {out / 'hillstrom-ab-report.html'}\n")
    stream.write(f"Dashboard:   {base}/dashboard/   (sign in with the analyst key)\n")
    stream.write(f"API docs:    {base}/docs\n")
    stream.write(f"Analyst key: {analyst_key}\nChannel key: {channel_key}\n")
    stream.flush()
    if keep_serving:
        stream.write("Serving until Ctrl-C.\n")
        stream.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    server.shutdown()
    db_module.get_db(app).dispose()
    clock.reset()
    return summary


def _at(timestamp: float) -> Any:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def _promote(session: Any) -> list[dict[str, Any]]:
    """Run the promotion job as production does; returns what it promoted."""
    from service.jobs.promotion import evaluate_all

    return [r for r in evaluate_all(session, holder="demo") if r.get("promoted")]


def _metric(report: dict[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    block = next((m for m in report["metrics"] if m["metric"] == metric), None)
    return {row["arm"]: row for row in (block["arms"] if block else [])}


def _summary(report: dict[str, Any], bandit: dict[str, Any], shares: list[dict[str, float]],
             promotions: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    visits, conversions = _metric(report, "click_rate"), _metric(report, "conversion_rate")
    arms = {}
    for arm in ("mens", "womens", "control"):
        row, conv = visits.get(arm, {}), conversions.get(arm, {})
        arms[arm] = {
            "decisions": next((a["decisions"] for a in report["arms"] if a["arm"] == arm), 0),
            "visit_rate": row.get("value"), "visit_ci": [row.get("ci_low"), row.get("ci_high")],
            "published_visit_rate": PUBLISHED_VISIT[arm],
            "conversion_rate": conv.get("value"), "published_conversion_rate": PUBLISHED_CONVERSION[arm],
            "visit_lift": row.get("lift"), "p_value_holm": row.get("p_value_holm"),
            "chance_to_beat_control": row.get("chance_to_beat_control"),
        }
    final = shares[-1] if shares else {}
    return {
        "ab": arms, "srm_warning": report["srm"]["warning"],
        "bandit": {"final_allocation": final, "first_allocation": shares[0] if shares else {}, "daily": shares,
                   "decisions": sum(a["decisions"] for a in bandit["arms"]),
                   "holdout": (bandit.get("bandit") or {}).get("holdout_comparison")},
        "promotions": promotions, "seconds": round(seconds, 1),
    }


def _print_summary(summary: dict[str, Any], stream: Any) -> None:
    w = stream.write
    w("\nA/B test on real Hillstrom customers (visit = click):\n")
    w(f"{'arm':<8} {'decisions':>9} {'visit rate':>11} {'95% interval':>17} {'published':>9} {'lift':>7}\n")
    for arm, row in summary["ab"].items():
        ci = row["visit_ci"]
        lift = f"{100 * row['visit_lift']:+.0f}%" if row["visit_lift"] is not None else ""
        interval = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci[0] is not None else ""
        rate = f"{row['visit_rate']:.3f}" if row["visit_rate"] is not None else "-"
        w(f"{arm:<8} {row['decisions']:>9} {rate:>11} {interval:>17} {row['published_visit_rate']:>9.3f} {lift:>7}\n")
    w(f"Sample ratio mismatch: {'YES' if summary['srm_warning'] else 'no'}\n")
    bandit = summary["bandit"]
    w("\nThompson-sampling bandit, share of traffic per arm and day (excluding the 10% holdout;\n"
      "it learns from each decision once it is a day old, with the clicks received by then):\n")
    w(share_chart(bandit["daily"]))
    if summary["promotions"]:
        for promotion in summary["promotions"]:
            w(f"\nPromoted in {promotion['experiment']}: {promotion.get('winner')} - {promotion.get('summary', '')}\n")
    else:
        w("\nNothing was promoted.\n")
    w(f"\nFinished in {summary['seconds']} s.\n")


def share_chart(daily: list[dict[str, float]], width: int = 40) -> str:
    """A text chart: one line per day, the arms' shares as numbers and as a stacked bar of their initials."""
    if not daily:
        return ""
    arms = list(daily[0])
    lines = ["  day " + "".join(f"{arm:>8}" for arm in arms) + "   " + ", ".join(f"{a[0]} = {a}" for a in arms)]
    for day, shares in enumerate(daily, start=1):
        cells, used = [], 0
        for i, arm in enumerate(arms):
            n = width - used if i == len(arms) - 1 else round(shares.get(arm, 0.0) * width)
            cells.append(arm[0] * max(n, 0))
            used += n
        lines.append(f"  {day:>3} " + "".join(f"{shares.get(a, 0.0):>8.1%}" for a in arms) + "   " + "".join(cells))
    return "\n".join(lines) + "\n"
