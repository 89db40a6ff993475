"""Multi-host rehearsal (`make loadtest`, after the fault test): two independent service instances
on one PostgreSQL database, one of them killed hard under load and started again.

    .venv/bin/python bench/multihost.py [--clients 4] [--seconds 40] [--kill-at 5] [--down 3]

Every option also reads an environment variable (MULTIHOST_CLIENTS, MULTIHOST_SECONDS, ...); the
defaults are small, for CI. Two `nextbest serve` masters (A and B, each with its own workers) serve
one fresh database nextbest_multihost_*, each with the background jobs on (refit, promotion and
webhooks, one runner per job through the lease rows). The channel clients of bench/loadtest.py run
throughout (the product's client, retries with an Idempotency-Key), spread over both hosts: each
round decides on one host and reports the previous round's outcomes on the other, concurrent sends
go to both at once, and half the clients fail over to the other host when theirs refuses a
connection (as a load balancer would) while the other half keep retrying their own. Meanwhile:

1. A is killed `--kill-at` seconds in (SIGKILL to the process group: master and workers, mid-request)
   and started again on the same port `--down` seconds later;
2. promotion: a fixed split with a promotion rule gets clear data (through both hosts); the
   promotion job promotes it (or, when the job cannot within --promotion-wait, the API does, and the
   table says why: a lease the killed host held blocks its job on every host until it lapses, 30 s
   for promotion and 60 s for a refit; such leases are listed), and probes of both hosts measure when each serves only the winner; a local
   webhook receiver counts the `experiment.promoted` deliveries;
3. revocation: an analyst key is probed on both hosts (its workers have it cached), revoked with
   `nextbest keys revoke` (keys have no API endpoint), and probes measure when each host refuses it.

Checks afterwards, by SQL against what the clients were told: every returned assignment_id stored
exactly once, as answered, and no decision stored that no call was answered with (an idempotent
retry decided nothing twice); the event and outcome-summary checks of the load test (an event may
be answered only `duplicate`: its batch was stored on A just before the kill cut the answer off, and
events carry no Idempotency-Key replay; it is still stored exactly once); refits one at
a time per experiment (versions contiguous, watermarks increasing, each refit's recorded start after
the previous one's snapshot, one audit entry each) and every matured decision trained exactly once;
the promotion and revocation seen by both hosts within the documented delays (the policy refresh
interval, NEXTBEST_POLICY_REFRESH_SECONDS; "at once" for revocation) plus --delay-margin; no 5xx or
connection failure other than host A's during the kill window, and no call given up; server logs
without tracebacks, crashed workers, unexpected errors or keys. Delays are printed and compared with
generous bounds only, never timed tightly.

Prints tables and exits 1 when a check fails. Only 127.0.0.1 is contacted; the database is dropped
at the end (MULTIHOST_KEEP_DB=1 keeps it).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from faulttest import unexpected_errors
from loadtest import (
    BANDIT,
    CLIENT_TIMEOUT,
    FIXED,
    HOST,
    ROOT,
    SPECS,
    Channel,
    Check,
    ClientConfig,
    ClientResult,
    Service,
    Setup,
    Totals,
    create_database,
    create_keys,
    drop_database,
    endpoint_of,
    env_number,
    free_port,
    log,
    nextbest,
    pg_connect,
    pg_url,
    print_checks,
    print_requests,
    print_table,
    raise_on_sigterm,
    run_clients,
    verify_data,
    verify_server_log,
)
from service.client import ApiError, Client

DB_PREFIX = "nextbest_multihost_"
PROMO = "mh-promo"
PROMO_WINNER = "bold"
REVOKED_NAME = "multihost-revoked"
PROMO_SPEC = {
    "key": PROMO, "name": "Multi-host promotion",
    "arms": [{"key": "control", "is_control": True, "payload": {"template": "none"}},
             {"key": PROMO_WINNER, "payload": {"template": "bold-v1"}}],
    "allocation": {"type": "fixed", "weights": {"control": 1, PROMO_WINNER: 1}},
    "reward": {"event": "click"},
    "promotion": {"metric": "click_rate", "confidence": 0.95, "min_decisions_per_arm": 100,
                  "min_runtime_seconds": 0, "action": "promote", "holdback": 0.0},
}
GRACE_SECONDS = 10.0  # NEXTBEST_REWARD_GRACE_SECONDS of both hosts (event batches commit within 5 s)
JOB_INTERVAL_SECONDS = 3.0
POLICY_REFRESH_SECONDS = 5.0  # the documented default, set explicitly so the bound below is the one served


# --------------------------------------------------------------------------------------- the hosts


class Host(Service):
    """One instance (`nextbest serve`, its own gunicorn master); a restart keeps the port and starts a new log."""

    def __init__(self, label: str, database_url: str, workers: int, threads: int, logs: Path, env: dict[str, str]):
        super().__init__(database_url, workers, threads, logs / f"multihost-{label}-1.log", env)
        self.label = label
        self.logs = logs
        self.lives: list[tuple[Path, int, list[int]]] = []  # (log, master pid, worker pids) of each start

    def start(self, timeout: float = 90.0) -> None:
        if self.lives:
            self.log_path = self.logs / f"multihost-{self.label}-{len(self.lives) + 1}.log"
        super().start(timeout)
        assert self.process is not None
        self.lives.append((self.log_path, self.process.pid, self.worker_pids()))

    def kill(self) -> None:
        """SIGKILL to the whole process group (master and workers, as a host losing power), then wait until
        no process of it is left."""
        assert self.process is not None
        group = self.process.pid
        os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"host {self.label}: processes of group {group} survived SIGKILL")

    def pids(self) -> dict[int, str]:
        """Every master and worker pid this host had, with its life: {pid: "A1"}."""
        return {pid: f"{self.label}{n}" for n, (_, master, workers) in enumerate(self.lives, 1)
                for pid in (master, *workers)}

    def log_text(self) -> str:
        return "".join(path.read_text(errors="replace") for path, _, _ in self.lives if path.exists())


def host_of_holder(holder: str, hosts: list[Host]) -> str:
    """`jobs:hostname:pid:thread` (service/jobs/leases.py) -> the host and life that ran it, e.g. "B1"."""
    parts = holder.split(":")
    pid = int(parts[2]) if len(parts) >= 4 and parts[2].isdigit() else -1
    for host in hosts:
        if pid in host.pids():
            return host.pids()[pid]
    return holder


# --------------------------------------------------------------------------------------- channel clients


class HostSession(requests.Session):
    """A channel client's transport: each exchange is noted with its host (A or B). With `failover`, a
    host that refused or dropped a connection is avoided for two seconds, so the client's retry (same
    Idempotency-Key) goes to the other host, as behind a load balancer; without, retries go back to the
    same host until it answers again."""

    def __init__(self, urls: list[str], labels: list[str], home: int, failover: bool,
                 records: list[tuple[Any, ...]]):
        super().__init__()
        self.urls, self.labels, self.home, self.failover, self.records = urls, labels, home, failover, records
        self.avoid_until = [0.0] * len(urls)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        path = str(url)[len(self.urls[self.home]):]
        target = self.home
        if self.failover and time.time() < self.avoid_until[target]:
            target = 1 - target
        endpoint = f"{self.labels[target]} {endpoint_of(self.urls[target] + path)}"
        started = time.time()
        try:
            response = super().request(method, self.urls[target] + path, *args, **kwargs)
        except requests.RequestException as exc:
            self.records.append((started, endpoint, None, time.time() - started, None, type(exc).__name__, False))
            if self.failover and isinstance(exc, requests.ConnectionError):
                self.avoid_until[target] = time.time() + 2.0
            raise
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        self.records.append((started, endpoint, response.status_code, time.time() - started,
                             response.headers.get("Retry-After"), None, replayed))
        return response


@dataclass
class MultiConfig(ClientConfig):
    urls: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    failover: bool = False


def host_client(config: MultiConfig, home: int, records: list[tuple[Any, ...]]) -> Client:
    """The product's client for one home host, its transport swapped for a HostSession."""
    client = Client(config.urls[home], config.key, timeout=CLIENT_TIMEOUT, retries=config.retries, backoff=0.2)
    session = HostSession(config.urls, config.labels, home, config.failover, records)
    session.headers.update(client._session.headers)  # the key and user agent the client set up
    client._session.close()
    client._session = session
    return client


class MultiChannel(Channel):
    """A load-test channel over two hosts: each round decides on one host and reports the previous round's
    outcomes on the other; a concurrent send goes to both hosts at the same moment."""

    def __init__(self, config: MultiConfig):
        super().__init__(config)
        for client in (self.main, self.twin):
            client._session.close()
        home = config.number % 2
        self.main = host_client(config, home, self.result.records)
        self.twin = host_client(config, 1 - home, self.result.records)

    def round(self) -> None:
        super().round()
        self.main, self.twin = self.twin, self.main

    def note_decisions(self, experiment: str, decisions: Any, via: str) -> list[Any]:
        decisions = list(decisions)
        for decision in decisions:
            if decision.reason == "unavailable":  # the client gave up and answered its fallback
                self.result.failures.append((time.time(), f"{via} {experiment}", "fallback decision (unavailable)"))
        return super().note_decisions(experiment, decisions, via)


def run_multi_client(config: MultiConfig) -> ClientResult:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    return MultiChannel(config).run()


# --------------------------------------------------------------------------------------- probes


@dataclass
class Probe:
    label: str
    started: float
    ended: float
    status: int | None
    subject: str | None = None
    assignment_id: str | None = None
    arm: str | None = None


class Prober:
    """Threads sending one request at a time to each host on a fresh connection each time (so every
    worker of the host is reached), keeping each answer as it came; no retries."""

    def __init__(self, hosts: list[Host], make: Any, threads_per_host: int = 2, pause: float = 0.03):
        self.hosts, self.make, self.pause = hosts, make, pause
        self.probes: list[Probe] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(host, n), daemon=True)
                        for host in hosts for n in range(threads_per_host)]

    def __enter__(self) -> Prober:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)

    def _run(self, host: Host, number: int) -> None:
        count = 0
        while not self.stopped.is_set():
            count += 1
            method, path, kwargs = self.make(host, f"{number}-{count}")
            started = time.time()
            try:
                response = requests.request(method, host.base_url + path, timeout=CLIENT_TIMEOUT, **kwargs)
            except requests.RequestException:
                self.probes.append(Probe(host.label, started, time.time(), None))
            else:
                probe = Probe(host.label, started, time.time(), response.status_code)
                if response.status_code == 200 and path == "/v1/assign":
                    answer = response.json()
                    probe.subject, probe.assignment_id, probe.arm = (answer.get("subject_id"),
                                                                      answer.get("assignment_id"), answer.get("arm"))
                self.probes.append(probe)
            self.stopped.wait(self.pause)

    def of(self, label: str) -> list[Probe]:
        return [p for p in self.probes if p.label == label]


# --------------------------------------------------------------------------------------- webhooks


class Receiver:
    """A local webhook subscriber: keeps every POST (delivery id, attempt, event, valid signature)."""

    def __init__(self) -> None:
        self.secret = uuid.uuid4().hex * 2
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stamp = self.headers.get("X-Nextbest-Timestamp", "")
                expected = "sha256=" + hmac.new(receiver.secret.encode(), f"{stamp}.".encode() + body,
                                                hashlib.sha256).hexdigest()
                receiver.posts.append({
                    "at": time.time(), "event": self.headers.get("X-Nextbest-Event"),
                    "delivery": self.headers.get("X-Nextbest-Delivery"),
                    "attempt": self.headers.get("X-Nextbest-Attempt"),
                    "signed": hmac.compare_digest(expected, self.headers.get("X-Nextbest-Signature", "")),
                    "payload": json.loads(body or b"{}")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, free_port()), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------- the phases


@dataclass
class Timeline:
    load_start: float = 0.0
    load_end: float = 0.0
    kill: float = 0.0
    restart_called: float = 0.0
    ready: float = 0.0


def sql(database: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with pg_connect(database) as conn:
        return conn.execute(query, params).fetchall()


def timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


@dataclass
class Promotion:
    fed: int = 0
    fed_at: float = 0.0
    promoted_at: float | None = None
    winner: str | None = None
    by: str = ""
    forced_because: str | None = None
    decisions: list[tuple[str, str, str | None, str | None, str]] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def promotion_phase(database: str, hosts: list[Host], keys: dict[str, str], subjects: int, wait: float,
                    watch: float) -> Promotion:
    """Clear data for the promotion rule through both hosts, then wait for the job to promote while both
    hosts are probed; the API promotes instead when the job cannot within `wait` seconds."""
    result = Promotion()
    clients = [Client(h.base_url, keys["channel"], timeout=CLIENT_TIMEOUT, retries=7, backoff=0.2) for h in hosts]
    events: list[dict[str, Any]] = []
    for start in range(0, subjects, 50):
        client = clients[(start // 50) % len(clients)]
        batch = [{"subject_id": f"promo-{i}"} for i in range(start, min(start + 50, subjects))]
        for decision in client.assign_batch(PROMO, batch, channel="email"):
            result.decisions.append((PROMO, decision.subject_id, decision.assignment_id, decision.arm, "promo"))
            if decision.assignment_id is None:
                result.failures.append(f"no decision for {decision.subject_id}: {decision.reason}")
                continue
            number = int(decision.subject_id.split("-")[1])
            # The winner is clicked every time, control one time in ten: clear for the rule at 100 per arm.
            if decision.arm == PROMO_WINNER or number % 10 == 0:
                events.append(Client.event("click", assignment_id=decision.assignment_id,
                                           event_id=f"promo-click-{number}"))
    for client in clients:  # every event through both hosts
        for start in range(0, len(events), 200):
            client.send_events(events[start:start + 200])
    result.fed, result.fed_at = len(result.decisions), time.time()

    def assign(host: Host, tag: str) -> tuple[str, str, dict[str, Any]]:
        return "POST", "/v1/assign", {"json": {"experiment": PROMO, "subject_id": f"probe-{host.label}-{tag}",
                                               "channel": "email"},
                                      "headers": {"Authorization": f"Bearer {keys['channel']}"}}

    with Prober(hosts, assign) as prober:
        deadline = result.fed_at + wait
        while time.time() < deadline:
            row = sql(database, "SELECT winner_arm, promoted_at FROM experiments WHERE key = %s", (PROMO,))[0]
            if row[0] is not None:
                break
            time.sleep(0.25)
        else:
            leases = sql(database, "SELECT holder, expires_at FROM job_leases WHERE name = 'promotion' "
                                   "AND expires_at > now()")
            result.forced_because = (f"the promotion lease is held by {host_of_holder(leases[0][0], hosts)} "
                                     f"until {leases[0][1]:%H:%M:%S}" if leases else "the job did not promote")
            try:
                Client(hosts[-1].base_url, keys["analyst"], timeout=30).action(PROMO, "promote", winner=PROMO_WINNER)
            except ApiError as exc:
                if exc.status != 409:  # 409: the job promoted meanwhile
                    raise
                result.forced_because = None
        winner, promoted_at = sql(database, "SELECT winner_arm, promoted_at FROM experiments WHERE key = %s",
                                  (PROMO,))[0]
        result.winner, result.promoted_at = winner, timestamp(promoted_at)
        actor = sql(database, "SELECT a.actor FROM audit_log a JOIN experiments e ON e.id = a.experiment_id "
                              "WHERE e.key = %s AND a.action = 'promote' ORDER BY a.id", (PROMO,))
        result.by = ", ".join(host_of_holder(a[0], hosts) if a[0].startswith("jobs:") else f"API ({a[0]})"
                              for a in actor)
        # Watch both hosts for the refresh interval plus the margin, or until each has served only the
        # winner for two seconds after the refresh interval.
        end = (result.promoted_at or time.time()) + watch
        settle = (result.promoted_at or time.time()) + POLICY_REFRESH_SECONDS
        while time.time() < end:
            now = time.time()
            if now > settle + 2 and all(
                    not [p for p in prober.of(h.label) if p.started > now - 2 and p.arm != winner] for h in hosts):
                break
            time.sleep(0.2)
    result.probes = prober.probes
    result.decisions += [(PROMO, p.subject, p.assignment_id, p.arm, "probe") for p in prober.probes
                         if p.assignment_id]
    return result


def visibility(probes: list[Probe], moment: float | None, good: Any) -> tuple[float | None, float | None, int]:
    """(first good answer, start of the last answer that was not good, answers after `moment`), seconds
    after `moment`; the second is when every worker that answered had caught up (0 when all were good)."""
    if moment is None:
        return None, None, 0
    after = [p for p in probes if p.ended >= moment]
    first = min((p.ended - moment for p in after if good(p)), default=None)
    bad = [p.started - moment for p in after if not good(p)]
    return first, max(0.0, max(bad)) if bad else 0.0, len(after)


@dataclass
class Revocation:
    revoked_at: float | None = None
    cli_returned: float = 0.0
    probes: list[Probe] = field(default_factory=list)


def revocation_phase(database: str, hosts: list[Host], secret: str, bound: float) -> Revocation:
    """Probe the key on both hosts (their workers cache it), revoke it with the CLI, probe on."""
    result = Revocation()

    def read(host: Host, tag: str) -> tuple[str, str, dict[str, Any]]:
        return "GET", f"/v1/experiments/{FIXED}", {"headers": {"Authorization": f"Bearer {secret}"}}

    with Prober(hosts, read) as prober:
        time.sleep(1.5)  # every worker of both hosts has looked the key up and cached it
        nextbest(["keys", "revoke", REVOKED_NAME], pg_url(database))
        result.cli_returned = time.time()
        revoked = sql(database, "SELECT revoked_at FROM api_keys WHERE name = %s", (REVOKED_NAME,))[0][0]
        result.revoked_at = timestamp(revoked)
        time.sleep(max(2.0, (result.revoked_at or 0) + bound + 1.0 - time.time()))
    result.probes = prober.probes
    return result


# --------------------------------------------------------------------------------------- checks


def refit_checks(database: str, hosts: list[Host], wait_seconds: float) -> tuple[list[Check], list[list[Any]]]:
    """One refit per experiment at a time, and every matured decision trained exactly once."""
    (experiment_id,) = sql(database, "SELECT id FROM experiments WHERE key = %s", (BANDIT,))[0]
    snapshots = sql(database, "SELECT version, trained_through, created_at, examples FROM policy_snapshots "
                              "WHERE experiment_id = %s ORDER BY version, id", (experiment_id,))
    audits = sql(database, "SELECT action, actor, details, created_at FROM audit_log WHERE experiment_id = %s "
                           "AND action IN ('refit', 'refit_failed') ORDER BY id", (experiment_id,))
    versions = [s[0] for s in snapshots]
    contiguous = versions == list(range(1, len(versions) + 1))
    rising = all(a[1] < b[1] for a, b in zip(snapshots, snapshots[1:]))
    # A refit's start is recorded: its watermark is (start - grace). The next refit must start after the
    # previous one stored its snapshot (the lease is released only after that commit).
    overlaps = [(a[0], b[0]) for a, b in zip(snapshots, snapshots[1:])
                if b[1].timestamp() + GRACE_SECONDS <= a[2].timestamp()]
    refits = [a for a in audits if a[0] == "refit"]
    failed = [a for a in audits if a[0] == "refit_failed"]
    audited = sorted(a[2].get("version") for a in refits)
    by_host = Counter(host_of_holder(a[1], hosts) for a in refits)
    wrong_counts = []
    previous = None
    details = {a[2].get("version"): a[2] for a in refits}
    for version, through, _, examples in snapshots:
        detail = details.get(version, {})
        upper = through.timestamp() - wait_seconds
        if detail.get("full") or previous is None:
            expected = sql(database, "SELECT count(*) FROM assignments WHERE experiment_id = %s AND NOT holdout "
                                     "AND source <> 'import' AND created_at <= to_timestamp(%s)",
                           (experiment_id, upper))[0][0]
            recorded = examples
        else:
            expected = sql(database, "SELECT count(*) FROM assignments WHERE experiment_id = %s AND NOT holdout "
                                     "AND source <> 'import' AND created_at > to_timestamp(%s) "
                                     "AND created_at <= to_timestamp(%s)",
                           (experiment_id, previous.timestamp() - wait_seconds, upper))[0][0]
            recorded = detail.get("new_examples")
        if recorded != expected:
            wrong_counts.append(f"v{version}: trained {recorded}, matured {expected}")
        previous = through
    final = snapshots[-1][3] if snapshots else 0
    matured = sql(database, "SELECT count(*) FROM assignments WHERE experiment_id = %s AND NOT holdout "
                            "AND source <> 'import' AND created_at <= to_timestamp(%s)",
                  (experiment_id, snapshots[-1][1].timestamp() - wait_seconds))[0][0] if snapshots else 0
    checks = [
        Check("refits: versions contiguous, no duplicate", contiguous and len(snapshots) >= 2,
              f"{len(snapshots)} snapshots of {BANDIT}, versions {versions[:1]}..{versions[-1:]}"),
        Check("refits: one at a time", rising and not overlaps,
              f"watermarks rising: {rising}; {len(overlaps)} refits started before the previous one stored"
              + (f" {overlaps[:3]}" if overlaps else "")),
        Check("refits: one audit entry each, none failed", audited == versions and not failed,
              f"{len(refits)} refit entries, {len(failed)} refit_failed; by host: "
              + " ".join(f"{k}:{v}" for k, v in sorted(by_host.items()))),
        Check("refits: each matured decision trained once", not wrong_counts and final == matured,
              f"last snapshot trained on {final} of {matured} matured decisions" +
              (f"; {wrong_counts[:3]}" if wrong_counts else "")),
    ]
    rows = [[s[0], f"{s[1]:%H:%M:%S.%f}"[:-3], f"{s[2]:%H:%M:%S.%f}"[:-3], s[3],
             details.get(s[0], {}).get("new_examples", ""),
             host_of_holder(next((a[1] for a in refits if a[2].get("version") == s[0]), "?"), hosts)]
            for s in snapshots]
    return checks, rows


def decision_checks(database: str, totals: Totals) -> tuple[Check, dict[str, int]]:
    """No decision stored that no call was answered with: a retry after a kill decided nothing twice."""
    stored = {row[0] for row in sql(database, "SELECT a.id FROM assignments a JOIN experiments e "
                                              "ON e.id = a.experiment_id WHERE e.key IN (%s, %s)", (FIXED, BANDIT))}
    returned = {d[2] for d in totals.decisions if d[2] and d[0] in (FIXED, BANDIT)}
    unanswered = stored - returned
    given_up = len(totals.failures)
    facts = {"stored": len(stored), "returned": len(returned), "unanswered": len(unanswered)}
    return Check("no decision stored twice or unanswered", not unanswered,
                 f"{len(stored)} stored, {len(returned)} answered; {len(unanswered)} stored but never answered"
                 + (f" ({given_up} calls given up)" if given_up else "")), facts


def transport_checks(totals: Totals, timeline: Timeline) -> tuple[list[Check], dict[str, int]]:
    """5xx answers and connection failures only from host A while it was down, and every call succeeded."""
    window = (timeline.kill, timeline.ready + 2.0)

    def in_window(record: tuple[Any, ...]) -> bool:
        return record[1].startswith("A ") and window[0] <= record[0] + record[3] and record[0] <= window[1]

    troubles = [r for r in totals.records if r[5] is not None or (r[2] is not None and r[2] >= 500)]
    outside = [r for r in troubles if not in_window(r)]
    during = [r for r in troubles if in_window(r)]
    replays = Counter(r[1] for r in totals.records if len(r) > 6 and r[6])
    cut_off = sum(1 for r in during if r[0] < timeline.kill)
    checks = [
        Check("no 5xx or failed connection outside the kill window", not outside,
              f"{len(during)} during A's kill window ({', '.join(sorted({str(r[2] or r[5]) for r in during}))}), "
              f"{len(outside)} outside" + (f", e.g. {outside[0][1]} {outside[0][2] or outside[0][5]}"
                                           if outside else "")),
        Check("no call given up (retries made the kill harmless)", not totals.failures,
              f"{len(totals.failures)} calls given up" +
              (f", e.g. {totals.failures[0][1]}: {totals.failures[0][2]}" if totals.failures else "")),
    ]
    return checks, {"during": len(during), "outside": len(outside),
                    "replayed": " ".join(f"{k}:{v}" for k, v in sorted(replays.items())) or "0",
                    "cut_off": cut_off}


def job_errors(text: str) -> list[str]:
    """Failed job passes (the fault test leaves these out: there the database goes away on purpose)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{") and '"nextbest.jobs"' in line:
            record = json.loads(line)
            if record.get("level") in ("error", "critical"):
                found.append(f"{record.get('message')} {record.get('exception', '')[-300:]}")
    return found


# --------------------------------------------------------------------------------------- main


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    number = env_number
    parser.add_argument("--clients", type=int, default=int(number("MULTIHOST_CLIENTS", 4)),
                        help="channel client processes (MULTIHOST_CLIENTS, default 4)")
    parser.add_argument("--seconds", type=float, default=number("MULTIHOST_SECONDS", 40),
                        help="how long the clients run (MULTIHOST_SECONDS, default 40)")
    parser.add_argument("--kill-at", type=float, default=number("MULTIHOST_KILL_AT_SECONDS", 5),
                        help="seconds of load before host A is killed (MULTIHOST_KILL_AT_SECONDS, default 5)")
    parser.add_argument("--down", type=float, default=number("MULTIHOST_DOWN_SECONDS", 3),
                        help="seconds host A stays dead before its restart (MULTIHOST_DOWN_SECONDS, default 3)")
    parser.add_argument("--batch", type=int, default=int(number("MULTIHOST_BATCH", 20)))
    parser.add_argument("--subjects", type=int, default=int(number("MULTIHOST_SUBJECTS", 2000)))
    parser.add_argument("--workers", type=int, default=int(number("MULTIHOST_WORKERS", 2)),
                        help="gunicorn workers per host (MULTIHOST_WORKERS, default 2)")
    parser.add_argument("--threads", type=int, default=int(number("MULTIHOST_THREADS", 4)))
    parser.add_argument("--retries", type=int, default=int(number("MULTIHOST_RETRIES", 7)),
                        help="client retries, 0.2 s doubling: 7 wait up to 25 s (MULTIHOST_RETRIES)")
    parser.add_argument("--promotion-subjects", type=int, default=int(number("MULTIHOST_PROMOTION_SUBJECTS", 300)))
    parser.add_argument("--promotion-wait", type=float, default=number("MULTIHOST_PROMOTION_WAIT_SECONDS", 20),
                        help="how long the promotion job may take before the API promotes "
                             "(MULTIHOST_PROMOTION_WAIT_SECONDS, default 20)")
    parser.add_argument("--delay-margin", type=float, default=number("MULTIHOST_DELAY_MARGIN_SECONDS", 5),
                        help="added to each documented delay before it counts as exceeded "
                             "(MULTIHOST_DELAY_MARGIN_SECONDS, default 5)")
    parser.add_argument("--keep-database", action="store_true", default=os.environ.get("MULTIHOST_KEEP_DB") == "1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    raise_on_sigterm()
    run_id = f"mh-{uuid.uuid4().hex[:8]}"
    database = f"{DB_PREFIX}{os.getpid()}_{int(time.time())}"
    url = pg_url(database)
    logs = ROOT / "bench" / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {"NEXTBEST_JOBS": "on", "NEXTBEST_JOB_INTERVAL_SECONDS": str(JOB_INTERVAL_SECONDS),
           "NEXTBEST_REWARD_GRACE_SECONDS": str(GRACE_SECONDS),
           "NEXTBEST_POLICY_REFRESH_SECONDS": str(POLICY_REFRESH_SECONDS)}
    hosts: list[Host] = []
    log(f"creating database {database}")
    create_database(database, DB_PREFIX)
    try:
        with Receiver() as receiver:
            return run(args, run_id, database, url, logs, env, hosts, receiver)
    finally:
        stopping = time.time()
        stoppers = [threading.Thread(target=host.stop) for host in hosts]  # both graceful shutdowns at once
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        if not args.keep_database:
            drop_database(database, DB_PREFIX)
        log(f"hosts stopped and database dropped in {time.time() - stopping:.1f} s")


def run(args: argparse.Namespace, run_id: str, database: str, url: str, logs: Path, env: dict[str, str],
        hosts: list[Host], receiver: Receiver) -> int:
    started_setup = time.time()
    nextbest(["db", "upgrade"], url)
    keys = create_keys(url, ("channel", "analyst", "admin"))
    revoked_secret = nextbest(["keys", "create", "--scope", "analyst", "--name", REVOKED_NAME],
                              url).strip().splitlines()[-1].strip()
    hosts += [Host(label, url, args.workers, args.threads, logs, env) for label in ("A", "B")]
    starters = [threading.Thread(target=host.start) for host in hosts]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join()
    if not all(host.alive() for host in hosts):
        raise RuntimeError("a host did not start:\n" + "\n".join(h.log_tail() for h in hosts))
    log("hosts " + ", ".join(f"{h.label} on port {h.port} (workers {h.worker_pids()})" for h in hosts))
    analyst = Client(hosts[0].base_url, keys["analyst"], timeout=30)
    salts = {}
    for spec in [*SPECS, PROMO_SPEC]:
        analyst.create_experiment(spec)
        salts[spec["key"]] = analyst.action(spec["key"], "start")["salt"]
    Client(hosts[1].base_url, keys["admin"], timeout=30).request(
        "POST", "/v1/webhooks", json={"url": receiver.url, "experiment": PROMO, "secret": receiver.secret})
    setup = Setup("multihost", database, hosts[0], {**keys, "revoked": revoked_secret}, salts)
    setup_seconds = time.time() - started_setup

    timeline = Timeline()
    timeline.load_start = time.time() + 2.0
    urls, labels = [h.base_url for h in hosts], [h.label for h in hosts]
    configs = [MultiConfig(number=n, run_id=run_id, base_url=urls[n % 2], key=keys["channel"],
                           end_at=timeline.load_start + args.seconds, batch=args.batch, singles=4,
                           subjects=args.subjects, seed=2000 + n, retries=args.retries, urls=urls, labels=labels,
                           failover=n % 4 >= 2) for n in range(args.clients)]
    results: list[ClientResult] = []
    load = threading.Thread(target=lambda: results.extend(run_clients(configs, run_multi_client)), name="clients")
    log(f"{args.clients} clients for {args.seconds:.0f} s over A ({urls[0]}) and B ({urls[1]}), run {run_id}; "
        f"A is killed {args.kill_at:.0f} s in for {args.down:.0f} s")
    load.start()
    time.sleep(max(0.0, timeline.load_start + args.kill_at - time.time()))
    timeline.kill = time.time()
    hosts[0].kill()
    log(f"host A killed (group of pid {hosts[0].lives[-1][1]}); restarting in {args.down:.0f} s")
    time.sleep(max(0.0, timeline.kill + args.down - time.time()))
    timeline.restart_called = time.time()
    hosts[0].start()
    timeline.ready = time.time()
    log(f"host A ready again {timeline.ready - timeline.kill:.1f} s after the kill")
    stale = [(name, holder, expires) for name, holder, expires in sql(
        database, "SELECT name, holder, expires_at FROM job_leases WHERE expires_at > now() ORDER BY name")
        if host_of_holder(holder or "", hosts) == "A1"]

    log("promotion: feeding clear data through both hosts")
    refresh_bound = POLICY_REFRESH_SECONDS + args.delay_margin
    promotion = promotion_phase(database, hosts, keys, args.promotion_subjects, args.promotion_wait,
                                refresh_bound + 1.0)
    log(f"promotion: {promotion.winner} promoted by {promotion.by}")
    revocation_bound = 1.0 + args.delay_margin  # documented: at once (a NOTIFY, milliseconds)
    revocation = revocation_phase(database, hosts, revoked_secret, revocation_bound)
    log("revocation done; waiting for the clients to finish")
    load.join()
    timeline.load_end = time.time()
    time.sleep(JOB_INTERVAL_SECONDS + 1)  # the webhook job's next pass, should a delivery still be due

    log(f"load ended; checking (the load started {time.time() - timeline.load_start:.1f} s ago)")
    checking = time.time()
    totals = Totals.merge(results)
    totals.decisions += [d for d in promotion.decisions if d[2]]
    checks, facts = verify_data(setup, totals, run_id, exactly_one_acceptance=False)
    decision_check, decision_facts = decision_checks(database, totals)
    checks.insert(0, decision_check)
    transport, transport_facts = transport_checks(totals, timeline)
    checks += transport
    refits, refit_rows = refit_checks(database, hosts, float(SPECS[1]["reward"]["wait_seconds"]))
    checks += refits

    promo_rows, promo_ok = [], promotion.winner == PROMO_WINNER and not promotion.failures
    for host in hosts:
        first, caught_up, count = visibility([p for p in promotion.probes if p.label == host.label],
                                             promotion.promoted_at, lambda p: p.arm == promotion.winner)
        ok = caught_up is not None and caught_up <= refresh_bound and first is not None
        promo_ok = promo_ok and ok
        promo_rows.append([host.label, count, f"{first:.2f}" if first is not None else "never",
                           f"{caught_up:.2f}" if caught_up is not None else "n/a", f"{refresh_bound:.0f}"])
    checks.append(Check("promotion seen by both hosts", promo_ok,
                        f"{promotion.winner} promoted by {promotion.by}"
                        + (f" (forced: {promotion.forced_because})" if promotion.forced_because else "")
                        + f"; every worker serves it within {max((float(r[3]) for r in promo_rows if r[3] != 'n/a'), default=float('nan')):.2f} s"
                        f" (bound {refresh_bound:.0f} s)" + (f"; {promotion.failures[:2]}" if promotion.failures else "")))
    promoted_posts = [p for p in receiver.posts if p["event"] == "experiment.promoted"]
    deliveries = Counter(p["delivery"] for p in promoted_posts)
    checks.append(Check("promotion webhook posted once", len(promoted_posts) == 1 and promoted_posts[0]["signed"]
                        and promoted_posts[0]["payload"].get("winner") == promotion.winner,
                        f"{len(promoted_posts)} POSTs of experiment.promoted for {len(deliveries)} deliveries"
                        + (f", {promoted_posts[0]['at'] - (promotion.promoted_at or 0):.1f} s after the promotion"
                           if promoted_posts else "")))

    revoke_rows, revoke_ok = [], revocation.revoked_at is not None
    for host in hosts:
        probes = [p for p in revocation.probes if p.label == host.label]
        before = sum(1 for p in probes if p.status == 200 and p.ended < (revocation.revoked_at or 0))
        first, last_ok, count = visibility(probes, revocation.revoked_at, lambda p: p.status == 401)
        late = [p for p in probes if p.status == 200 and revocation.revoked_at is not None
                and p.started > revocation.revoked_at + revocation_bound]
        other = Counter(str(p.status) for p in probes if p.status not in (200, 401))
        ok = before > 0 and last_ok is not None and last_ok <= revocation_bound and not late and not other
        revoke_ok = revoke_ok and ok
        revoke_rows.append([host.label, before, count, f"{first:.3f}" if first is not None else "never",
                            f"{last_ok:.3f}" if last_ok is not None else "n/a", len(late),
                            " ".join(f"{k}:{v}" for k, v in other.items()) or "-"])
    checks.append(Check("revocation seen by both hosts", revoke_ok,
                        "; ".join(f"{r[0]}: refused from {r[4]} s, {r[5]} accepted later" for r in revoke_rows)
                        + f" (bound {revocation_bound:.0f} s; documented: at once)"))

    for host in hosts:
        view = Setup(f"multihost-{host.label}", database, host, setup.keys, salts)
        for check in verify_server_log(view, host.lives[-1][2]):
            checks.append(Check(f"host {host.label}: {check.name}", check.ok, check.detail))
        errors = unexpected_errors(view) + job_errors(host.log_text())
        checks.append(Check(f"host {host.label}: no error logged", not errors,
                            f"{len(errors)}" + (f", e.g. {errors[0][:200]}" if errors else "")))

    log(f"checks took {time.time() - checking:.1f} s")
    print(f"\nMulti-host rehearsal: hosts A and B (`nextbest serve`, {args.workers} workers x {args.threads} threads "
          f"each, jobs on both every {JOB_INTERVAL_SECONDS:.0f} s) on one PostgreSQL database; {args.clients} client "
          f"processes for {args.seconds:.0f} s ({totals.rounds} rounds); setup {setup_seconds:.1f} s")
    print_table("Timeline (seconds after the load started)", [
        ["host A killed (SIGKILL to master and workers)", f"{timeline.kill - timeline.load_start:.1f}"],
        ["host A started again", f"{timeline.restart_called - timeline.load_start:.1f}"],
        ["host A ready (/readyz 200, every worker up)", f"{timeline.ready - timeline.load_start:.1f}"],
        ["promotion data fed", f"{promotion.fed_at - timeline.load_start:.1f}"],
        ["promoted", f"{(promotion.promoted_at or 0) - timeline.load_start:.1f}"],
        ["key revoked", f"{(revocation.revoked_at or 0) - timeline.load_start:.1f}"],
        ["load ended", f"{timeline.load_end - timeline.load_start:.1f}"],
    ])
    print_table("Leases the killed host left held", [[n, host_of_holder(h, hosts), f"{e:%H:%M:%S}"]
                                                     for n, h, e in stale] or [["none", "", ""]],
                ["lease", "holder", "expires"])
    print_requests(totals.records, args.seconds)
    print_table("Decisions and events", [
        ["decisions answered (clients)", facts["decisions"]],
        ["assignments stored / answered (fixed + bandit)", f"{decision_facts['stored']} / {decision_facts['returned']}"],
        ["answers replayed from an Idempotency-Key", transport_facts["replayed"]],
        ["requests cut off by the kill (in flight on A)", transport_facts["cut_off"]],
        ["5xx or connection failures during the kill window", transport_facts["during"]],
        ["bandit policy versions used", facts["policy_versions"]],
        ["events (distinct ids) sent / acknowledged", f"{facts['events_sent']} / {facts['acknowledged']}"],
        ["answers: accepted / duplicate", f"{facts['accepted_answers']} / {facts['duplicate_answers']}"],
        ["events stored (rows / distinct ids)", f"{facts['stored']} / {facts['stored_distinct']}"],
    ])
    print_table(f"Refits of {BANDIT} (watermark = start - {GRACE_SECONDS:.0f} s)", refit_rows,
                ["version", "watermark", "stored", "examples", "new", "by"])
    print_table("Promotion seen by each host (s after promoted_at)", promo_rows,
                ["host", "probes after", "first winner", "all workers", "bound"])
    print_table("Revocation seen by each host (s after revoked_at)", revoke_rows,
                ["host", "200 before", "probes after", "first 401", "last 200", "200 after bound", "other"])
    ok = print_checks(checks)
    print(f"\nmulti-host rehearsal {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
