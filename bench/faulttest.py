"""Fault test (`make loadtest`, after the load test): PostgreSQL stops for about ten seconds in
the middle of a load run, then starts again.

    .venv/bin/python bench/faulttest.py [--clients 3] [--seconds 30] [--outage 10] [--warmup 6]

Options also read FAULTTEST_CLIENTS, FAULTTEST_SECONDS, FAULTTEST_OUTAGE_SECONDS,
FAULTTEST_WARMUP_SECONDS. The channel clients of bench/loadtest.py run throughout (the product's
client retries 429/503 with backoff and Retry-After, timeout 10 s), and a prober sends one
decision request every 100 ms without retries, to see each answer as it is. Checks:

- while the database is down, every answer is a 503 in the error shape with Retry-After, and
  none takes longer than the client timeout (no hangs);
- no worker crashed: the same gunicorn worker pids before and after, the master alive;
- the service recovers by itself: the time from PostgreSQL accepting connections again to the
  prober's first 200 (printed; it must be under FAULTTEST_MAX_RECOVERY_SECONDS, default 15);
- no 5xx other than those 503s, and no 503 once recovered;
- every acknowledged event is stored, exactly once; events the clients gave up on are sent
  again with the same ids after recovery, and are then stored exactly once too; the SQL checks
  of the load test hold (assignments, fixed split, outcome summaries).

The outage never touches the machine's shared PostgreSQL: the script creates a private cluster
(`initdb` into a temporary directory, binaries from the newest /usr/lib/postgresql/*/bin or
FAULTTEST_PG_BIN), serves it on a free port of 127.0.0.1 with its socket in that directory, runs
the load against it, stops it with `pg_ctl stop -m fast` for the outage and starts it again, and
ALWAYS stops it and removes the directory in a finally block. Run as root, the cluster is owned
and run by the `postgres` user (initdb refuses root). Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

import loadtest
from loadtest import (
    CLIENT_TIMEOUT,
    FIXED,
    Check,
    Setup,
    Totals,
    client_configs,
    env_number,
    free_port,
    log,
    print_checks,
    print_requests,
    print_table,
    raise_on_sigterm,
    recording_client,
    run_clients,
    set_up,
    status_counts,
    tear_down,
    verify_data,
)

def pg_bin_dir() -> Path:
    """The newest PostgreSQL server binaries on the machine (or FAULTTEST_PG_BIN)."""
    if os.environ.get("FAULTTEST_PG_BIN"):
        return Path(os.environ["FAULTTEST_PG_BIN"])
    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")])
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin (set FAULTTEST_PG_BIN)")
    return found[-1]


class PrivateCluster:
    """A throw-away PostgreSQL cluster in a temporary directory, on its own port: only it goes down."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.bin = pg_bin_dir()
        self.host = host
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="nextbest-faulttest-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            owner = pwd.getpwnam(os.environ.get("FAULTTEST_PG_OS_USER", "postgres"))
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", owner.pw_name, "--"]

    @property
    def version(self) -> str:
        return self.bin.parent.name

    def _run(self, *command: str, timeout: float = 120) -> None:
        full = [*self._as_user, str(self.bin / command[0]), *command[1:]]
        log("$ " + " ".join(full))
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(full)} failed ({done.returncode}): {done.stdout} {done.stderr}")

    def create(self) -> None:
        """initdb (trust authentication for the postgres role, on loopback only) and start."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        self.start()

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c max_connections=100 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "-t", "60",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        done = subprocess.run([*self._as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True, text=True, timeout=30)
        return done.returncode == 0

    def ready(self) -> bool:
        return subprocess.run([str(self.bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"],
                              timeout=30).returncode == 0

    def remove(self) -> None:
        """Stop the cluster if it runs (immediately if a fast stop fails) and delete its directory."""
        try:
            if self.data.exists() and self.running():
                try:
                    self.stop("fast")
                except Exception:  # noqa: BLE001 - fall back to an immediate stop
                    self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


CLUSTER: PrivateCluster | None = None


def cluster() -> PrivateCluster:
    if CLUSTER is None:
        raise RuntimeError("the private PostgreSQL cluster is not created yet")
    return CLUSTER


def pg_ready() -> bool:
    return cluster().ready()


def ensure_pg_running(timeout: float = 60.0) -> bool:
    """Start the private cluster if it is not accepting connections, and wait until it does."""
    deadline = time.monotonic() + timeout
    if not pg_ready():
        try:
            if not cluster().running():
                cluster().start()
        except Exception as exc:  # noqa: BLE001 - report and keep waiting; the caller checks the result
            log(f"starting PostgreSQL failed: {exc}")
    while time.monotonic() < deadline:
        if pg_ready():
            return True
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------------------- the prober


@dataclass
class Probe:
    started: float
    elapsed: float
    status: int | None
    retry_after: str | None
    error_shape: bool
    failure: str | None = None


@dataclass
class Prober:
    """One POST /v1/assign every `interval` seconds, no retries, each answer kept as it came."""

    setup: Setup
    interval: float = 0.1
    probes: list[Probe] = field(default_factory=list)
    decisions: list[tuple[str, str, str | None, str | None, str]] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.setup.keys['channel']}"
        number = 0
        while not self.stopped.is_set():
            number += 1
            subject = f"probe-{number % 500}"
            started = time.time()
            try:
                response = session.post(f"{self.setup.url}/v1/assign", timeout=CLIENT_TIMEOUT,
                                        json={"experiment": FIXED, "subject_id": subject, "channel": "email"})
            except requests.RequestException as exc:
                self.probes.append(Probe(started, time.time() - started, None, None, False, type(exc).__name__))
            else:
                body = _json(response)
                shaped = isinstance(body, dict) and isinstance(body.get("error"), dict) and \
                    {"code", "message", "details"} <= set(body["error"])
                self.probes.append(Probe(started, time.time() - started, response.status_code,
                                         response.headers.get("Retry-After"), shaped))
                if response.status_code == 200 and isinstance(body, dict):
                    self.decisions.append((FIXED, subject, body.get("assignment_id"), body.get("arm"), "probe"))
            self.stopped.wait(max(0.0, self.interval - (time.time() - started)))


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# --------------------------------------------------------------------------------------- main


def options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=int(env_number("FAULTTEST_CLIENTS", 3)),
                        help="client processes (FAULTTEST_CLIENTS, default 3)")
    parser.add_argument("--seconds", type=float, default=env_number("FAULTTEST_SECONDS", 30),
                        help="how long the clients run in all (FAULTTEST_SECONDS, default 30)")
    parser.add_argument("--warmup", type=float, default=env_number("FAULTTEST_WARMUP_SECONDS", 6),
                        help="seconds of load before PostgreSQL stops (FAULTTEST_WARMUP_SECONDS, default 6)")
    parser.add_argument("--outage", type=float, default=env_number("FAULTTEST_OUTAGE_SECONDS", 10),
                        help="seconds PostgreSQL stays down (FAULTTEST_OUTAGE_SECONDS, default 10)")
    parser.add_argument("--max-recovery", type=float, default=env_number("FAULTTEST_MAX_RECOVERY_SECONDS", 15),
                        help="longest acceptable recovery (FAULTTEST_MAX_RECOVERY_SECONDS, default 15)")
    parser.add_argument("--batch", type=int, default=int(env_number("FAULTTEST_BATCH", 20)))
    parser.add_argument("--subjects", type=int, default=int(env_number("FAULTTEST_SUBJECTS", 2000)))
    parser.add_argument("--workers", type=int, default=int(env_number("FAULTTEST_WORKERS", 3)))
    parser.add_argument("--threads", type=int, default=int(env_number("FAULTTEST_THREADS", 4)))
    args = parser.parse_args(argv)
    if args.seconds < args.warmup + args.outage + 5:
        parser.error("--seconds must leave at least 5 s of load after the outage")
    return args


@dataclass
class Outage:
    stop_called: float = 0.0
    stopped: float = 0.0  # the stop command returned: nothing accepts connections
    start_called: float = 0.0
    ready: float = 0.0  # PostgreSQL accepts connections again


def cause_outage(outage: Outage, warmup: float, seconds: float, started: float) -> None:
    """Stop PostgreSQL after `warmup`, for `seconds`; started again by the caller's finally too."""
    time.sleep(max(0.0, started + warmup - time.time()))
    outage.stop_called = time.time()
    cluster().stop("fast")
    outage.stopped = time.time()
    time.sleep(max(0.0, outage.stop_called + seconds - time.time()))
    outage.start_called = time.time()
    errors: list[BaseException] = []
    starter = threading.Thread(target=lambda: _capture(errors, cluster().start), name="pg-start")
    starter.start()  # meanwhile, note the moment PostgreSQL accepts connections (before pg_ctl returns)
    while not pg_ready():
        if not starter.is_alive() and errors:
            raise errors[0]
        time.sleep(0.05)
    outage.ready = time.time()
    starter.join()
    if errors:
        raise errors[0]


def _capture(errors: list[BaseException], work: Any) -> None:
    try:
        work()
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
        errors.append(exc)


def main(argv: Sequence[str] | None = None) -> int:
    global CLUSTER
    args = options(argv)
    raise_on_sigterm()
    CLUSTER = PrivateCluster()
    try:
        log(f"creating a private PostgreSQL {CLUSTER.version} cluster in {CLUSTER.root} on port {CLUSTER.port}")
        CLUSTER.create()
        if not ensure_pg_running():
            print("the private PostgreSQL cluster does not accept connections", file=sys.stderr)
            return 1
        loadtest.use_postgres(CLUSTER.host, CLUSTER.port)
        return run(args)
    finally:
        CLUSTER.remove()
        log(f"private PostgreSQL cluster stopped and {CLUSTER.root} removed")


def run(args: argparse.Namespace) -> int:
    run_id = f"fault-{uuid.uuid4().hex[:8]}"
    setup = set_up("faulttest", args.workers, args.threads,
                   env={"NEXTBEST_JOBS": "on", "NEXTBEST_JOB_INTERVAL_SECONDS": "3"})
    outage = Outage()
    checks: list[Check] = []
    try:
        workers_before = setup.service.worker_pids()
        prober = Prober(setup)
        configs = client_configs(setup, run_id, args.clients, args.seconds, args.batch, args.subjects, start_in=0.5)
        for config in configs:
            # Half the channels retry through the outage (4 retries honouring Retry-After: 5 s); half do not
            # retry at once and send what failed again, with the same event ids, once the service is back.
            config.retries = 4 if config.number % 2 == 0 else 0
        started = time.time() + 0.5
        results: list[Any] = []
        load = threading.Thread(target=lambda: results.extend(run_clients(configs)), name="clients")
        probe_thread = threading.Thread(target=prober.run, name="prober", daemon=True)
        probe_thread.start()
        load.start()
        try:
            log(f"load for {args.warmup:.0f} s, then the private PostgreSQL {cluster().version} on port "
                f"{cluster().port} stops for "
                f"{args.outage:.0f} s")
            cause_outage(outage, args.warmup, args.outage, started)
            log(f"PostgreSQL accepts connections again after {outage.ready - outage.stop_called:.1f} s")
        finally:
            if not ensure_pg_running():
                checks.append(Check("PostgreSQL running again", False, "the private cluster did not come back"))
        load.join()
        time.sleep(1.0)
        prober.stopped.set()
        probe_thread.join(timeout=CLIENT_TIMEOUT + 5)
        workers_after = setup.service.worker_pids()
        totals = Totals.merge(results)
        totals.decisions += prober.decisions

        # Events the clients gave up on (503 after every retry): a channel sends them again later, same ids.
        retry_records: list[tuple[Any, ...]] = []
        resent = list(totals.unacknowledged.values())
        retried_answers: dict[str, str] = {}
        resend_failures: list[str] = []
        if resent:
            client = recording_client(setup.url, setup.keys["channel"], retry_records, retries=4)
            for start in range(0, len(resent), 500):
                try:
                    answer = client.send_events(resent[start:start + 500])
                except Exception as exc:  # noqa: BLE001 - a failed check, reported below
                    resend_failures.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                for item in answer.results:
                    retried_answers[item["event_id"]] = item["status"]
                    if item["status"] == "accepted":
                        totals.accepted[item["event_id"]] += 1
                    elif item["status"] == "duplicate":
                        totals.duplicates[item["event_id"]] += 1
        still_unacknowledged = [e for e in totals.unacknowledged if e not in totals.acknowledged]

        data_checks, facts = verify_data(setup, totals, run_id, exactly_one_acceptance=False)
        checks += outage_checks(args, outage, prober, totals, workers_before, workers_after, setup)
        checks.append(Check("given-up events acknowledged when sent again",
                            not still_unacknowledged and not resend_failures,
                            f"{len(resent)} sent again: " + " ".join(
                                f"{k}:{v}" for k, v in sorted(status_counts_of(retried_answers).items())) +
                            (f"; failed: {resend_failures[0]}" if resend_failures else "")))
        checks += data_checks
        recovery = recovery_seconds(prober, outage)
    finally:
        tear_down(setup)
        if not ensure_pg_running():
            print("WARNING: PostgreSQL is not accepting connections", file=sys.stderr)

    print(f"\nFault test: {args.clients} client processes + a prober for {args.seconds:.0f} s, gunicorn "
          f"{args.workers} workers x {args.threads} threads; PostgreSQL stopped {args.warmup:.0f} s in, "
          f"for {outage.ready - outage.stop_called:.1f} s (stop took {outage.stopped - outage.stop_called:.1f} s)")
    print_requests(totals.records + retry_records, args.seconds)
    print_table("Prober (POST /v1/assign every 100 ms, no retries)", prober_rows(prober, outage),
                ["phase", "requests", "answers by status", "with Retry-After", "max ms"])
    print_table("Outage", [
        ["database down (stop called to accepting again)", f"{outage.ready - outage.stop_called:.1f} s"],
        ["recovery: accepting again to first 200", f"{recovery:.2f} s" if recovery is not None else "never"],
        ["client calls given up during the run", len(totals.failures)],
        ["events sent again after recovery", len(resent)],
    ])
    print_table("Decisions and events", [
        ["decisions answered", facts["decisions"]], ["assignments stored", facts["assignments_stored"]],
        ["events (distinct ids) sent", facts["events_sent"]], ["events acknowledged", facts["acknowledged"]],
        ["answers: accepted", facts["accepted_answers"]], ["answers: duplicate", facts["duplicate_answers"]],
        ["events stored (rows / distinct ids)", f"{facts['stored']} / {facts['stored_distinct']}"],
        ["duplicate event rows stored", facts["stored"] - facts["stored_distinct"]],
    ])
    ok = print_checks(checks)
    print(f"\nfault test {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


def status_counts_of(answers: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in answers.values():
        counts[status] = counts.get(status, 0) + 1
    return counts


def recovery_seconds(prober: Prober, outage: Outage) -> float | None:
    after = [p for p in prober.probes if p.status == 200 and p.started >= outage.ready]
    return after[0].started + after[0].elapsed - outage.ready if after else None


def phase_of(moment: float, outage: Outage, recovered: float | None) -> str:
    if moment < outage.stop_called:
        return "before"
    if outage.stopped <= moment < outage.start_called:
        return "down"
    if moment < outage.stopped:
        return "stopping"
    if recovered is None or moment < recovered:
        return "restarting"
    return "after"


def prober_rows(prober: Prober, outage: Outage) -> list[list[Any]]:
    recovery = recovery_seconds(prober, outage)
    recovered = outage.ready + recovery if recovery is not None else None
    rows = []
    for phase in ("before", "stopping", "down", "restarting", "after"):
        probes = [p for p in prober.probes if phase_of(p.started, outage, recovered) == phase]
        if not probes:
            continue
        statuses = status_counts((None, None, p.status, None, None, p.failure) for p in probes)
        rows.append([phase, len(probes), " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
                     sum(1 for p in probes if p.retry_after), f"{max(p.elapsed for p in probes) * 1000:.0f}"])
    return rows


def outage_checks(args: argparse.Namespace, outage: Outage, prober: Prober, totals: Totals,
                  workers_before: list[int], workers_after: list[int], setup: Setup) -> list[Check]:
    checks = []
    recovery = recovery_seconds(prober, outage)
    recovered = outage.ready + recovery if recovery is not None else float("inf")
    down = [p for p in prober.probes if outage.stopped <= p.started < outage.start_called]
    bad_down = [p for p in down if p.status != 503 or not p.retry_after or not p.error_shape]
    checks.append(Check("while down: 503 with Retry-After", bool(down) and not bad_down,
                        f"{len(down) - len(bad_down)}/{len(down)} probes; others: "
                        f"{dict(status_counts((None, None, p.status, None, None, p.failure) for p in bad_down))}"))
    everything = [(r[0], r[3], r[2], r[4], r[5]) for r in totals.records] + \
        [(p.started, p.elapsed, p.status, p.retry_after, p.failure) for p in prober.probes]
    hung = [e for e in everything if e[1] >= CLIENT_TIMEOUT or e[4] in ("ReadTimeout", "Timeout", "ConnectTimeout")]
    slowest = max((e[1] for e in everything), default=0.0)
    checks.append(Check("no request hangs", not hung,
                        f"slowest answer {slowest:.2f} s (client timeout {CLIENT_TIMEOUT:.0f} s); "
                        f"{len(hung)} timed out"))
    refused = [e for e in everything if e[4] is not None and e not in hung]
    checks.append(Check("the server always answers", not refused,
                        f"{len(refused)} connection failures" + (f", e.g. {refused[0][4]}" if refused else "")))
    checks.append(Check("no crashed worker", workers_before == workers_after and setup.service.alive(),
                        f"workers {workers_before} -> {workers_after}"))
    checks.append(Check("recovers by itself", recovery is not None and recovery <= args.max_recovery,
                        f"first 200 {recovery:.2f} s after PostgreSQL accepted connections again"
                        if recovery is not None else "no 200 after the restart"))
    other_5xx = [e for e in everything if e[2] is not None and e[2] >= 500 and e[2] != 503]
    unshaped_503 = [e for e in everything if e[2] == 503 and not e[3]]
    checks.append(Check("no 5xx but 503, every 503 with Retry-After", not other_5xx and not unshaped_503,
                        f"{len(other_5xx)} other 5xx, {len(unshaped_503)} 503 without Retry-After"))
    late_503 = [(r[0], r[1]) for r in totals.records if r[2] == 503 and r[0] > recovered + 1.0] + \
        [(p.started, "prober") for p in prober.probes if p.status == 503 and p.started > recovered + 1.0]
    checks.append(Check("no 503 once recovered", not late_503, f"{len(late_503)} after the first 200 (+1 s)" + (
        ": " + ", ".join(f"{endpoint} at +{started - recovered:.1f} s" for started, endpoint in late_503[:5])
        if late_503 else "")))
    api_errors = unexpected_errors(setup)
    checks.append(Check("no unexpected error (500) logged", not api_errors,
                        f"{len(api_errors)}" + (f", e.g. {api_errors[0][:200]}" if api_errors else "")))
    return checks


def unexpected_errors(setup: Setup) -> list[str]:
    """Log records of unexpected errors in request handling (job failures while down are expected)."""
    found = []
    for line in setup.service.log_text().splitlines():
        if not line.startswith("{"):
            if "Traceback (most recent call last)" in line:
                found.append(line)
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("level") in ("error", "critical") and record.get("logger") != "nextbest.jobs":
            found.append(f"{record.get('logger')}: {record.get('message')} {record.get('exception', '')[-300:]}")
    return found


if __name__ == "__main__":
    sys.exit(main())
