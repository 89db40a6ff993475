"""Load test (`make loadtest`): the service under gunicorn on a fresh PostgreSQL database, many
concurrent channel clients, then SQL checks that nothing was lost, duplicated or changed.

    .venv/bin/python bench/loadtest.py [--clients 4] [--seconds 15] [--batch 25] [--workers 3] [--threads 4]

Every option also reads an environment variable (LOADTEST_CLIENTS, LOADTEST_SECONDS, ...); the
defaults are small, for CI. Each client is its own process using the product's Python client
(`service.client.Client`, retries on 429/503) and, in a loop until the time is up:

- decides single subjects and whole batches on a fixed split (`load-fixed`) and on a
  Thompson-sampling bandit (`load-ts`), subjects drawn from one shared pool, so the same
  subject is decided many times by different workers;
- reports outcomes of the previous round's decisions (outcomes come later than decisions),
  every event at least twice; every third batch is sent by two clients at the same moment
  (two threads, two connections) before it is sent again.

Afterwards, by SQL: every acknowledged event (accepted or duplicate) is stored exactly once,
with the decision it named, and was accepted exactly once over all its sends; nothing else is
stored; every returned assignment_id exists, as returned; each fixed-split subject always got
the same arm, the one the README's formula gives; the per-decision outcome summaries match the
events, and the report rollups the triggers kept under all that concurrency match the logs
(`nextbest rollups check`); no request got a 5xx or failed; the server log has no traceback,
crashed worker or key.

Prints a table and exits 1 when a check fails. Only 127.0.0.1 is contacted; the database is
named nextbest_load_* and dropped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import requests

from service.client import ApiError, Client

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")
DB_PREFIX = "nextbest_load_"
CLIENT_TIMEOUT = 10.0

FIXED = "load-fixed"
BANDIT = "load-ts"
ARMS = [{"key": "control", "is_control": True, "payload": {"template": "none"}},
        {"key": "mens", "payload": {"template": "mens-v1"}},
        {"key": "womens", "payload": {"template": "womens-v1"}}]
FIXED_WEIGHTS = {"control": 1, "mens": 1, "womens": 2}
SPECS = [
    {"key": FIXED, "name": "Load test fixed split", "arms": ARMS,
     "allocation": {"type": "fixed", "weights": FIXED_WEIGHTS}, "reward": {"event": "conversion"}},
    {"key": BANDIT, "name": "Load test bandit", "arms": ARMS,
     "allocation": {"type": "bandit", "policy": {"name": "thompson_sampling"}, "holdout": 0.1,
                    "refit_interval_seconds": 5},
     "reward": {"event": "click", "wait_seconds": 2}},
]


def log(message: str) -> None:
    """Progress on stderr; stdout carries the tables."""
    print(message, file=sys.stderr, flush=True)


def env_number(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# --------------------------------------------------------------------------------------- PostgreSQL


def use_postgres(host: str, port: int) -> None:
    """Point the helpers of this module (databases, URLs, SQL checks) at another PostgreSQL."""
    global PG_HOST, PG_PORT
    PG_HOST, PG_PORT = host, port


def pg_connect(dbname: str, **kwargs: Any) -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, connect_timeout=5, **kwargs)


def pg_url(dbname: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def create_database(name: str, prefix: str = DB_PREFIX) -> None:
    assert name.startswith(prefix), name
    with pg_connect("postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str, prefix: str = DB_PREFIX) -> None:
    assert name.startswith(prefix), name
    try:
        with pg_connect("postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error as exc:
        log(f"could not drop {name}: {exc}")


def nextbest(args: Sequence[str], database_url: str) -> str:
    done = subprocess.run([str(VENV_BIN / "nextbest"), *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, DATABASE_URL=database_url), timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"nextbest {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def create_keys(database_url: str, scopes: Sequence[str]) -> dict[str, str]:
    """`nextbest keys create` for each scope, side by side; the secret is the last line of its output."""
    env = dict(os.environ, DATABASE_URL=database_url)
    running = {scope: subprocess.Popen([str(VENV_BIN / "nextbest"), "keys", "create", "--scope", scope, "--name",
                                        f"load-{scope}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True) for scope in scopes}
    keys = {}
    for scope, process in running.items():
        out, err = process.communicate(timeout=120)
        if process.returncode != 0:
            raise RuntimeError(f"nextbest keys create --scope {scope} failed:\n{out}\n{err}")
        keys[scope] = out.strip().splitlines()[-1].strip()
    return keys


# --------------------------------------------------------------------------------------- the service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Service:
    """`nextbest serve --workers W --threads T` on 127.0.0.1, its output in a log file."""

    def __init__(self, database_url: str, workers: int, threads: int, log_path: Path,
                 env: dict[str, str] | None = None):
        self.database_url = database_url
        self.workers = workers
        self.threads = threads
        self.log_path = log_path
        self.env = env or {}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._metrics_dir = tempfile.mkdtemp(prefix="nextbest-load-metrics-")

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ, DATABASE_URL=self.database_url, PROMETHEUS_MULTIPROC_DIR=self._metrics_dir,
                   NEXTBEST_SECRET_KEY=uuid.uuid4().hex, **self.env)
        command = [str(VENV_BIN / "nextbest"), "serve", "--host", HOST, "--port", str(self.port),
                   "--workers", str(self.workers), "--threads", str(self.threads)]
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                ready = requests.get(self.base_url + "/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                ready = False
            if ready and len(self.worker_pids()) >= self.workers:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the service was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        """gunicorn's workers: the children of the master (the `nextbest serve` process)."""
        if self.process is None:
            return []
        try:
            return sorted(int(p) for p in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
                          .read_text().split())
        except OSError:
            return []

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # graceful: the master stops its workers
            try:
                self.process.wait(timeout=35)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: master and workers
                self.process.wait(timeout=5)
        shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@dataclass
class Setup:
    """A fresh database, migrated, with keys, both experiments running, and the service serving it."""

    name: str
    database: str
    service: Service
    keys: dict[str, str]
    salts: dict[str, str]

    @property
    def url(self) -> str:
        return self.service.base_url


def set_up(name: str, workers: int, threads: int, env: dict[str, str] | None = None) -> Setup:
    database = f"{DB_PREFIX}{name}_{os.getpid()}_{int(time.time())}"
    log(f"creating database {database}")
    create_database(database)
    url = pg_url(database)
    try:
        nextbest(["db", "upgrade"], url)
        keys = create_keys(url, ("channel", "analyst"))
        logs = ROOT / "bench" / "results" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        service = Service(url, workers, threads, logs / f"{name}-service.log", env)
        log(f"starting nextbest serve --workers {workers} --threads {threads} on port {service.port}")
        service.start()
    except BaseException:
        drop_database(database)
        raise
    setup = Setup(name, database, service, keys, {})
    try:
        analyst = Client(setup.url, keys["analyst"], timeout=30)
        for spec in SPECS:
            analyst.create_experiment(spec)
            started = analyst.action(spec["key"], "start")
            setup.salts[spec["key"]] = started["salt"]
    except BaseException:
        tear_down(setup)
        raise
    return setup


def tear_down(setup: Setup, keep_database: bool = False) -> None:
    setup.service.stop()
    if not keep_database:
        drop_database(setup.database)


# --------------------------------------------------------------------------------------- clients


def endpoint_of(url: str) -> str:
    path = url.split(HOST, 1)[-1].split(":", 1)[-1]
    path = path[path.index("/"):] if "/" in path else path
    return path.split("?", 1)[0]


class RecordingSession(requests.Session):
    """A requests session that notes every HTTP exchange: when, which endpoint, the answer, how long."""

    def __init__(self, records: list[tuple[Any, ...]]):
        super().__init__()
        self.records = records

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        started = time.time()
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException as exc:
            self.records.append((started, endpoint_of(str(url)), None, time.time() - started, None,
                                 type(exc).__name__))
            raise
        self.records.append((started, endpoint_of(str(url)), response.status_code, time.time() - started,
                             response.headers.get("Retry-After"), None))
        return response


def recording_client(base_url: str, key: str, records: list[tuple[Any, ...]], retries: int) -> Client:
    """The product's client, its transport swapped for one that records every exchange (retries too)."""
    client = Client(base_url, key, timeout=CLIENT_TIMEOUT, retries=retries, backoff=0.2)
    session = RecordingSession(records)
    session.headers.update(client._session.headers)  # the key and user agent the client set up
    client._session.close()
    client._session = session
    return client


@dataclass
class ClientConfig:
    number: int
    run_id: str
    base_url: str
    key: str
    end_at: float  # wall clock, shared by all processes
    batch: int
    singles: int
    subjects: int
    seed: int
    retries: int = 4
    max_rounds: int = 1_000_000


@dataclass
class ClientResult:
    number: int
    rounds: int = 0
    records: list[tuple[Any, ...]] = field(default_factory=list)
    decisions: list[tuple[str, str, str | None, str | None, str]] = field(default_factory=list)
    events: dict[str, tuple[str | None, str, str | None]] = field(default_factory=dict)
    accepted: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    sends: int = 0
    failures: list[tuple[float, str, str]] = field(default_factory=list)  # client gave up: when, what, why
    unacknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class Channel:
    """One simulated channel system (one process)."""

    def __init__(self, config: ClientConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.result = ClientResult(config.number)
        self.main = recording_client(config.base_url, config.key, self.result.records, config.retries)
        self.twin = recording_client(config.base_url, config.key, self.result.records, config.retries)
        self.sequence = 0
        self.pending: list[dict[str, Any]] = []  # outcomes of the last round's decisions, reported next round
        self.lock = threading.Lock()

    def attempt(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (ApiError, requests.RequestException) as exc:
            self.result.failures.append((time.time(), what, f"{type(exc).__name__}: {exc}"[:300]))
            time.sleep(0.5)  # the client gave up; a channel system backs off before its next call
            return None

    def subject(self) -> str:
        return f"u-{self.rng.randrange(self.config.subjects)}"

    def note_decisions(self, experiment: str, decisions: Iterable[Any], via: str) -> list[Any]:
        kept = []
        for decision in decisions:
            self.result.decisions.append((experiment, decision.subject_id, decision.assignment_id, decision.arm, via))
            if decision.assignment_id:
                kept.append((experiment, decision))
        return kept

    def new_event(self, experiment: str, decision: Any) -> dict[str, Any]:
        self.sequence += 1
        event_id = f"{self.config.run_id}-{self.config.number}-{self.sequence}"
        kind = self.rng.choices(["open", "click", "conversion"], weights=[5, 3, 2])[0]
        value = round(self.rng.uniform(5, 80), 2) if kind == "conversion" else None
        if self.rng.random() < 0.1:  # attributed by experiment and subject instead of the assignment id
            event = Client.event(kind, experiment=experiment, subject_id=decision.subject_id, value=value,
                                 event_id=event_id)
            self.result.events[event_id] = (None, kind, experiment)
        else:
            event = Client.event(kind, assignment_id=decision.assignment_id, value=value, event_id=event_id)
            self.result.events[event_id] = (decision.assignment_id, kind, experiment)
        event["occurred_at"] = _now_iso()
        return event

    def send(self, client: Client, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.result.sends += 1
        answer = self.attempt("events", lambda: client.send_events(events))
        with self.lock:
            if answer is None:
                for event in events:
                    if event["event_id"] not in self.result.accepted and \
                            event["event_id"] not in self.result.duplicates:
                        self.result.unacknowledged[event["event_id"]] = event
                return
            for item in answer.results:
                event_id = item["event_id"]
                if item["status"] == "accepted":
                    self.result.accepted[event_id] += 1
                elif item["status"] == "duplicate":
                    self.result.duplicates[event_id] += 1
                else:
                    self.result.rejected.append((event_id, str(item.get("reason"))))
                if item["status"] in ("accepted", "duplicate"):
                    self.result.unacknowledged.pop(event_id, None)

    def send_concurrently(self, events: list[dict[str, Any]]) -> None:
        """The same batch from two clients at the same moment."""
        barrier = threading.Barrier(2)

        def go(client: Client) -> None:
            barrier.wait(timeout=30)
            self.send(client, events)

        threads = [threading.Thread(target=go, args=(c,)) for c in (self.main, self.twin)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def round(self) -> None:
        config = self.config
        decided: list[Any] = []
        for _ in range(config.singles):
            experiment = self.rng.choice((FIXED, BANDIT))
            subject = self.subject()
            decision = self.attempt("assign", lambda: self.main.assign(experiment, subject, channel="email"))
            if decision is not None:
                decided += self.note_decisions(experiment, [decision], "single")
        for experiment in (FIXED, BANDIT):
            subjects = [{"subject_id": self.subject()} for _ in range(config.batch)]
            decisions = self.attempt("assign/batch",
                                     lambda: self.main.assign_batch(experiment, subjects, channel="email"))
            if decisions is not None:
                decided += self.note_decisions(experiment, decisions, "batch")
        due, self.pending = self.pending, [self.new_event(experiment, decision) for experiment, decision in decided]
        self.report(due)

    def report(self, events: list[dict[str, Any]]) -> None:
        """Send each event twice; every third batch is first sent by two clients at once."""
        if not events:
            return
        if self.result.rounds % 3 == 0:
            self.send_concurrently(events)
        else:
            self.send(self.main, events)
        resent = list(events)
        self.rng.shuffle(resent)
        self.send(self.main, resent)

    def run(self) -> ClientResult:
        while time.time() < self.config.end_at and self.result.rounds < self.config.max_rounds:
            self.round()
            self.result.rounds += 1
        self.report(self.pending)
        return self.result


def run_client(config: ClientConfig) -> ClientResult:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    return Channel(config).run()


def run_clients(configs: list[ClientConfig],
                runner: Callable[[Any], ClientResult] = run_client) -> list[ClientResult]:
    """One process per client (`runner` must be importable by name: the pool spawns)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(configs)) as pool:
        return pool.map(runner, configs, chunksize=1)


def client_configs(setup: Setup, run_id: str, clients: int, seconds: float, batch: int, subjects: int,
                   start_in: float = 2.0) -> list[ClientConfig]:
    end_at = time.time() + start_in + seconds
    return [ClientConfig(number=n, run_id=run_id, base_url=setup.url, key=setup.keys["channel"], end_at=end_at,
                         batch=batch, singles=4, subjects=subjects, seed=1000 + n) for n in range(clients)]


# --------------------------------------------------------------------------------------- checks


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Totals:
    """Everything the clients saw, merged."""

    records: list[tuple[Any, ...]] = field(default_factory=list)
    decisions: list[tuple[str, str, str | None, str | None, str]] = field(default_factory=list)
    events: dict[str, tuple[str | None, str, str | None]] = field(default_factory=dict)
    accepted: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    unacknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)
    sends: int = 0
    rounds: int = 0

    @classmethod
    def merge(cls, results: Iterable[ClientResult]) -> Totals:
        totals = cls()
        for result in results:
            totals.records += result.records
            totals.decisions += result.decisions
            totals.events.update(result.events)
            totals.accepted.update(result.accepted)
            totals.duplicates.update(result.duplicates)
            totals.rejected += result.rejected
            totals.failures += result.failures
            totals.unacknowledged.update(result.unacknowledged)
            totals.sends += result.sends
            totals.rounds += result.rounds
        for event_id in list(totals.unacknowledged):
            if event_id in totals.accepted or event_id in totals.duplicates:
                del totals.unacknowledged[event_id]
        return totals

    @property
    def acknowledged(self) -> set[str]:
        return set(self.accepted) | set(self.duplicates)


def fixed_split_arm(salt: str, subject_id: str) -> str:
    """The README's formula: the first arm whose cumulative normalised weight exceeds u."""
    u = int(hashlib.sha256(f"{salt}:{subject_id}".encode()).hexdigest()[:15], 16) / 16**15
    total = sum(FIXED_WEIGHTS.values())
    cumulative = 0.0
    for arm in ARMS:
        cumulative += FIXED_WEIGHTS[arm["key"]] / total
        if u < cumulative:
            return arm["key"]
    return ARMS[-1]["key"]


def verify_data(setup: Setup, totals: Totals, run_id: str, exactly_one_acceptance: bool) -> tuple[list[Check],
                                                                                                   dict[str, Any]]:
    """The database against what the clients were told."""
    checks: list[Check] = []
    facts: dict[str, Any] = {}
    with pg_connect(setup.database) as conn:
        stored_rows = conn.execute(
            "SELECT event_id, assignment_id, type, attribution FROM events WHERE event_id LIKE %s",
            (f"{run_id}-%",)).fetchall()
        assignment_rows = conn.execute(
            "SELECT a.id, e.key, a.subject_id, a.arm_key FROM assignments a "
            "JOIN experiments e ON e.id = a.experiment_id"
        ).fetchall()
        split_conflicts = conn.execute(
            "SELECT a.subject_id, array_agg(DISTINCT a.arm_key) FROM assignments a JOIN experiments e "
            "ON e.id = a.experiment_id WHERE e.key = %s GROUP BY a.subject_id HAVING count(DISTINCT a.arm_key) > 1",
            (FIXED,)).fetchall()
        facts["policy_versions"] = conn.execute(
            "SELECT count(DISTINCT a.policy_version) FROM assignments a JOIN experiments e ON e.id = a.experiment_id "
            "WHERE e.key = %s", (BANDIT,)).fetchone()[0]
        summary_mismatches = conn.execute("""
            WITH e AS (
                SELECT assignment_id,
                       count(*) FILTER (WHERE type = 'open') AS opens,
                       count(*) FILTER (WHERE type = 'click') AS clicks,
                       count(*) FILTER (WHERE type = 'conversion') AS conversions
                FROM events WHERE attribution <> 'unattributed' GROUP BY assignment_id)
            SELECT count(*) FROM e FULL JOIN decision_outcomes d USING (assignment_id)
            WHERE e.assignment_id IS NULL OR d.assignment_id IS NULL
               OR (d.opens, d.clicks, d.conversions) IS DISTINCT FROM (e.opens, e.clicks, e.conversions)
        """).fetchone()[0]

    stored_count = Counter(row[0] for row in stored_rows)
    stored = set(stored_count)
    acknowledged = totals.acknowledged
    sent = set(totals.events)
    lost = acknowledged - stored
    doubled = {event_id for event_id, count in stored_count.items() if count > 1}
    phantom = stored - sent
    misattributed = [row[0] for row in stored_rows
                     if totals.events.get(row[0], (None,))[0] is not None and row[1] != totals.events[row[0]][0]]
    accepted_twice = [e for e, n in totals.accepted.items() if n > 1]
    never_accepted = [e for e in acknowledged if totals.accepted[e] == 0]
    facts.update(events_sent=len(sent), event_sends=totals.sends, acknowledged=len(acknowledged),
                 accepted_answers=sum(totals.accepted.values()), duplicate_answers=sum(totals.duplicates.values()),
                 rejected=len(totals.rejected), stored=len(stored_rows), stored_distinct=len(stored),
                 unacknowledged=len(totals.unacknowledged))
    checks.append(Check("acknowledged events stored", not lost,
                        f"{len(acknowledged) - len(lost)}/{len(acknowledged)} stored" +
                        (f"; lost e.g. {sorted(lost)[:3]}" if lost else "")))
    checks.append(Check("stored exactly once", not doubled,
                        f"{len(doubled)} event ids stored more than once" +
                        (f": {sorted(doubled)[:3]}" if doubled else "")))
    checks.append(Check("nothing stored that was not sent", not phantom, f"{len(phantom)} unknown event ids"))
    checks.append(Check("events keep their decision", not misattributed,
                        f"{len(misattributed)} stored with another assignment_id"))
    checks.append(Check("accepted at most once over all sends", not accepted_twice,
                        f"{len(accepted_twice)} event ids answered 'accepted' more than once" +
                        (f": {accepted_twice[:3]}" if accepted_twice else "")))
    if exactly_one_acceptance:
        checks.append(Check("accepted exactly once over all sends", not never_accepted,
                            f"{len(never_accepted)} acknowledged only as duplicates"))
    checks.append(Check("no event rejected", not totals.rejected,
                        f"{len(totals.rejected)} rejected" +
                        (f", e.g. {totals.rejected[:2]}" if totals.rejected else "")))

    by_id = {row[0]: row[1:] for row in assignment_rows}
    returned = [(e, s, a, arm) for e, s, a, arm, _ in totals.decisions if a]
    missing = [a for _, _, a, _ in returned if a not in by_id]
    altered = [a for e, s, a, arm in returned if a in by_id and by_id[a] != (e, s, arm)]
    facts.update(decisions=len(totals.decisions), assignment_ids=len(returned), assignments_stored=len(by_id),
                 no_offer=sum(1 for d in totals.decisions if not d[2]))
    checks.append(Check("every assignment_id exists", not missing,
                        f"{len(returned) - len(missing)}/{len(returned)} found" +
                        (f"; missing e.g. {missing[:3]}" if missing else "")))
    checks.append(Check("assignments stored as answered", not altered, f"{len(altered)} differ from the answer"))
    ids = [a for _, _, a, _ in returned]
    checks.append(Check("assignment ids unique", len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} repeated"))

    arms_seen: dict[str, set[str]] = defaultdict(set)
    for experiment, subject, _, arm, _ in totals.decisions:
        if experiment == FIXED and arm:
            arms_seen[subject].add(arm)
    salt = setup.salts[FIXED]
    flipping = [s for s, arms in arms_seen.items() if len(arms) > 1]
    off_formula = [s for s, arms in arms_seen.items() if arms != {fixed_split_arm(salt, s)}]
    repeated = sum(1 for e, *_ in totals.decisions if e == FIXED) - len(arms_seen)
    facts.update(fixed_subjects=len(arms_seen), fixed_repeats=repeated)
    checks.append(Check("fixed split: one arm per subject", not flipping and not split_conflicts,
                        f"{len(arms_seen)} subjects, {repeated} repeat decisions; {len(flipping)} answered two arms, "
                        f"{len(split_conflicts)} stored with two"))
    checks.append(Check("fixed split: the README formula", not off_formula,
                        f"{len(off_formula)} subjects got another arm than sha256(salt:subject) gives"))
    checks.append(Check("outcome summaries match events", summary_mismatches == 0,
                        f"{summary_mismatches} decisions whose summary differs from their events"))
    rollups = subprocess.run([str(VENV_BIN / "nextbest"), "rollups", "check"], cwd=ROOT, capture_output=True,
                             text=True, env=dict(os.environ, DATABASE_URL=setup.service.database_url), timeout=600)
    differences = rollups.stdout.strip().splitlines()
    checks.append(Check("report rollups match the logs", rollups.returncode == 0,
                        differences[-1] if differences else rollups.stderr.strip()[-200:]))
    if rollups.returncode != 0:
        log("rollup differences:\n" + "\n".join(differences[:20]))
    return checks, facts


def verify_server_log(setup: Setup, workers_before: list[int]) -> list[Check]:
    text = setup.service.log_text()
    secrets = [key.split("_", 2)[-1] for key in setup.keys.values()]
    tracebacks = text.count("Traceback (most recent call last)")
    crashes = sum(text.count(marker) for marker in ("WORKER TIMEOUT", "Worker exited", "was sent SIGKILL",
                                                     "Worker failed to boot"))
    workers_after = setup.service.worker_pids()
    return [
        Check("no traceback in the server log", tracebacks == 0, f"{tracebacks} tracebacks"),
        Check("no crashed worker", crashes == 0 and workers_after == workers_before and setup.service.alive(),
              f"workers {workers_before} -> {workers_after}, {crashes} crash lines"),
        Check("no key in the server log", not any(s in text for s in secrets), "secrets searched in the server log"),
    ]


# --------------------------------------------------------------------------------------- reporting


def status_counts(records: Iterable[tuple[Any, ...]]) -> Counter[str]:
    return Counter(str(r[2]) if r[2] is not None else r[5] for r in records)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def print_table(title: str, rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> None:
    cells = [[str(c) for c in row] for row in ([header] if header else []) + list(rows)]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(max(map(len, cells)))]
    numeric = [all(_numeric(row[i]) for row in cells[1 if header else 0:] if i < len(row)) for i in range(len(widths))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        line = "  ".join(c.rjust(widths[i]) if numeric[i] and i else c.ljust(widths[i]) for i, c in enumerate(row))
        print("  " + line.rstrip())
        if header and index == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _numeric(cell: str) -> bool:
    return cell.replace(".", "", 1).replace(" / ", "").replace("-", "", 1).isdigit() or cell in ("", "nan")


def print_requests(records: list[tuple[Any, ...]], seconds: float) -> None:
    by_endpoint: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for record in records:
        by_endpoint[record[1]].append(record)
    rows = []
    for name in sorted(by_endpoint):
        group = by_endpoint[name]
        statuses = status_counts(group)
        latencies = [r[3] * 1000 for r in group if r[2] is not None]
        rows.append([name, len(group), f"{len(group) / seconds:.1f}", f"{percentile(latencies, 50):.0f}",
                     f"{percentile(latencies, 99):.0f}", " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))])
    statuses = status_counts(records)
    rows.append(["all", len(records), f"{len(records) / seconds:.1f}", "", "",
                 " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))])
    print_table("Requests", rows, ["endpoint", "requests", "per s", "p50 ms", "p99 ms", "answers by status"])


def print_checks(checks: list[Check]) -> bool:
    print_table("Checks", [[c.name, "ok" if c.ok else "FAILED", c.detail] for c in checks],
                ["check", "result", "detail"])
    return all(c.ok for c in checks)


# --------------------------------------------------------------------------------------- main


def options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=int(env_number("LOADTEST_CLIENTS", 4)),
                        help="client processes (LOADTEST_CLIENTS, default 4)")
    parser.add_argument("--seconds", type=float, default=env_number("LOADTEST_SECONDS", 15),
                        help="how long the clients run (LOADTEST_SECONDS, default 15)")
    parser.add_argument("--max-rounds", type=int, default=int(env_number("LOADTEST_MAX_ROUNDS", 1_000_000)),
                        help="at most this many rounds per client (LOADTEST_MAX_ROUNDS)")
    parser.add_argument("--batch", type=int, default=int(env_number("LOADTEST_BATCH", 25)),
                        help="subjects per batch decision (LOADTEST_BATCH, default 25)")
    parser.add_argument("--subjects", type=int, default=int(env_number("LOADTEST_SUBJECTS", 3000)),
                        help="size of the shared subject pool (LOADTEST_SUBJECTS, default 3000)")
    parser.add_argument("--workers", type=int, default=int(env_number("LOADTEST_WORKERS", 3)),
                        help="gunicorn workers (LOADTEST_WORKERS, default 3)")
    parser.add_argument("--threads", type=int, default=int(env_number("LOADTEST_THREADS", 4)),
                        help="threads per worker (LOADTEST_THREADS, default 4)")
    parser.add_argument("--keep-database", action="store_true", default=os.environ.get("LOADTEST_KEEP_DB") == "1",
                        help="do not drop the nextbest_load_* database at the end")
    return parser.parse_args(argv)


def raise_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = options(argv)
    raise_on_sigterm()
    run_id = f"load-{uuid.uuid4().hex[:8]}"
    # Jobs on, so bandit refits (and their leases) run under the load as in production; decisions
    # mature within the run (a 2 s reward wait, a 10 s grace: batches must be stored within 5 s).
    setup = set_up("loadtest", args.workers, args.threads,
                   env={"NEXTBEST_JOBS": "on", "NEXTBEST_JOB_INTERVAL_SECONDS": "3",
                        "NEXTBEST_REWARD_GRACE_SECONDS": "10"})
    try:
        workers_before = setup.service.worker_pids()
        configs = client_configs(setup, run_id, args.clients, args.seconds, args.batch, args.subjects)
        for config in configs:
            config.max_rounds = args.max_rounds
        log(f"{args.clients} clients for {args.seconds:.0f} s against {setup.url} (run {run_id})")
        started = time.time()
        totals = Totals.merge(run_clients(configs))
        elapsed = max(time.time() - started, 1e-9)
        checks, facts = verify_data(setup, totals, run_id, exactly_one_acceptance=True)
        server_errors = [r for r in totals.records if r[2] is not None and r[2] >= 500]
        checks.append(Check("no 5xx answer", not server_errors,
                            f"{len(server_errors)} of {len(totals.records)}" +
                            (f", e.g. {server_errors[0][1]} {server_errors[0][2]}" if server_errors else "")))
        checks.append(Check("no failed request", not totals.failures,
                            f"{len(totals.failures)} calls given up" +
                            (f", e.g. {totals.failures[0][1]}: {totals.failures[0][2]}" if totals.failures else "")))
        checks += verify_server_log(setup, workers_before)
    finally:
        tear_down(setup, keep_database=args.keep_database)

    measured = max(args.seconds, 1e-9)
    print(f"\nLoad test: {args.clients} client processes, {args.seconds:.0f} s, gunicorn {args.workers} workers x "
          f"{args.threads} threads, PostgreSQL {PG_HOST}:{PG_PORT} (wall time {elapsed:.1f} s, "
          f"{totals.rounds} rounds)")
    print_requests(totals.records, measured)
    print_table("Decisions and events", [
        ["decisions answered", facts["decisions"]], ["  with an assignment_id", facts["assignment_ids"]],
        ["  no offer", facts["no_offer"]], ["assignments stored", facts["assignments_stored"]],
        ["fixed-split subjects / repeat decisions", f"{facts['fixed_subjects']} / {facts['fixed_repeats']}"],
        ["bandit policy versions used (refits under load)", facts["policy_versions"]],
        ["events (distinct ids) sent", facts["events_sent"]], ["event batches sent", facts["event_sends"]],
        ["events acknowledged", facts["acknowledged"]], ["answers: accepted", facts["accepted_answers"]],
        ["answers: duplicate", facts["duplicate_answers"]], ["answers: rejected", facts["rejected"]],
        ["events stored (rows / distinct ids)", f"{facts['stored']} / {facts['stored_distinct']}"],
        ["duplicate event rows stored", facts["stored"] - facts["stored_distinct"]],
    ])
    ok = print_checks(checks)
    print(f"\nload test {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
