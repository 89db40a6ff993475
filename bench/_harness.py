"""Shared benchmark helpers: fresh PostgreSQL databases, gunicorn servers, keys, a load generator, tables.

Everything talks to 127.0.0.1 only. A benchmark script typically does::

    with Bench("assign") as bench:
        db = bench.database()                    # fresh, migrated nextbest_bench_assign_<pid>
        api = bench.service(db)                  # gunicorn on service.wsgi:app, keys created
        bare = bench.bare()                      # gunicorn on bench/bare_app.py, same settings
        result = load(bare.url("/bare"), [body], layout=(2, 4), seconds=3)

and everything it started is stopped, and every database it created dropped, on exit
(also on Ctrl-C or SIGTERM).

Timings are printed, never asserted: speed targets are ratios measured within one run.
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")
DB_PREFIX = "nextbest_bench_"

# The server layout every HTTP benchmark uses (service and ceiling alike).
WORKERS = 2
THREADS = 4


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the result tables."""
    print(message, file=sys.stderr, flush=True)


def _raise_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------- PostgreSQL


def pg_dsn(dbname: str) -> str:
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={dbname}"


def pg_url(dbname: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def pg_connect(dbname: str, **kwargs: Any) -> psycopg.Connection:
    return psycopg.connect(pg_dsn(dbname), **kwargs)


@dataclass
class Database:
    name: str

    @property
    def url(self) -> str:
        return pg_url(self.name)

    @property
    def dsn(self) -> str:
        return pg_dsn(self.name)

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        return pg_connect(self.name, **kwargs)

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect(autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []


def create_database(name: str) -> Database:
    if not name.startswith(DB_PREFIX):
        raise ValueError(f"benchmark databases are named {DB_PREFIX}*, got {name!r}")
    with pg_connect("postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return Database(name)


def drop_database(name: str) -> None:
    if not name.startswith(DB_PREFIX):
        raise ValueError(f"refusing to drop {name!r}")
    with pg_connect("postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def nextbest(args: Sequence[str], database: Database, check: bool = True) -> str:
    """Run the `nextbest` CLI against `database`; returns stdout."""
    env = dict(os.environ, DATABASE_URL=database.url)
    done = subprocess.run([str(VENV_BIN / "nextbest"), *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"nextbest {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def migrate(database: Database) -> None:
    nextbest(["db", "upgrade"], database)


def create_key(database: Database, scope: str, name: str | None = None) -> str:
    """A new API key's secret (the CLI prints it on its last line)."""
    return create_keys(database, [scope], name)[scope]


def create_keys(database: Database, scopes: Sequence[str], name: str | None = None) -> dict[str, str]:
    """One key per scope, the CLI runs side by side: {scope: secret}."""
    env = dict(os.environ, DATABASE_URL=database.url)
    running = {
        scope: subprocess.Popen([str(VENV_BIN / "nextbest"), "keys", "create", "--scope", scope,
                                 "--name", name or f"bench-{scope}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        for scope in scopes
    }
    keys = {}
    for scope, process in running.items():
        out, err = process.communicate(timeout=120)
        if process.returncode != 0:
            raise RuntimeError(f"nextbest keys create --scope {scope} failed:\n{out}\n{err}")
        keys[scope] = out.strip().splitlines()[-1].strip()
    return keys


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        """The gunicorn worker processes (children of the master)."""
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # gunicorn: graceful shutdown of the workers
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the master and its workers
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_gunicorn(name: str, app: str, env: dict[str, str] | None = None, extra: Sequence[str] = (),
                   workers: int = WORKERS, threads: int = THREADS, ready_path: str = "/healthz",
                   timeout: float = 30.0) -> Server:
    """`gunicorn -w 2 --threads 4 -k gthread -b 127.0.0.1:PORT app`, waiting until it answers `ready_path`."""
    LOGS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = LOGS / f"{name}.log"
    command = [
        str(VENV_BIN / "gunicorn"), "-w", str(workers), "--threads", str(threads), "-k", "gthread",
        "-b", f"{HOST}:{port}", "--graceful-timeout", "5", "--log-level", "warning", *extra, app,
    ]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, **(env or {})), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, port, process, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(server.url(ready_path), timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not become ready in {timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(0.1)
    # The first worker to answer is ready; wait until every worker has loaded the app (its CPU time stops moving).
    _wait_workers_settled(server, workers, deadline)
    with requests.Session() as session:
        for _ in range(4 * workers):
            session.get(server.url(ready_path), timeout=10)
    return server


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_workers_settled(server: Server, workers: int, deadline: float) -> None:
    last: dict[int, float] = {}
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        pids = server.worker_pids()
        now = {pid: _cpu_seconds(pid) for pid in pids}
        quiet = quiet + 1 if len(pids) >= workers and now == last else 0
        last = now
        time.sleep(0.2)


class Api:
    """The service as a channel system and an analyst use it (requests, keep-alive)."""

    def __init__(self, server: Server, keys: dict[str, str]):
        self.server = server
        self.keys = keys
        self.http = requests.Session()

    def url(self, path: str) -> str:
        return self.server.url(path)

    def headers(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def call(self, method: str, path: str, scope: str = "analyst", expect: int | None = 200, **kw: Any) -> Any:
        response = self.http.request(method, self.url(path), headers=self.headers(scope), timeout=600, **kw)
        if expect is not None and response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response

    def create_experiment(self, spec: dict[str, Any], start: bool = True) -> dict[str, Any]:
        created = self.call("POST", "/v1/experiments", json=spec, expect=201).json()
        if start:
            return self.call("POST", f"/v1/experiments/{spec['key']}/start").json()
        return created

    def assign(self, experiment: str, subject_id: str, context: dict[str, Any] | None = None,
               channel: str = "email", expect: int | None = 200) -> Any:
        body: dict[str, Any] = {"experiment": experiment, "subject_id": subject_id, "channel": channel}
        if context is not None:
            body["context"] = context
        return self.call("POST", "/v1/assign", scope="channel", json=body, expect=expect)

    def assign_batch(self, experiment: str, subjects: list[dict[str, Any]], channel: str = "email") -> list[Any]:
        body = {"experiment": experiment, "channel": channel, "subjects": subjects}
        return self.call("POST", "/v1/assign/batch", scope="channel", json=body).json()["assignments"]

    def close(self) -> None:
        self.http.close()


class Bench:
    """Owns what a benchmark starts: databases, servers; cleans them all up on exit."""

    def __init__(self, name: str):
        self.name = name
        self._stack = ExitStack()
        self._count = 0

    def __enter__(self) -> Bench:
        _raise_on_sigterm()
        self._stack.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._stack.__exit__(*exc)

    def database(self, migrate_it: bool = True) -> Database:
        self._count += 1
        name = f"{DB_PREFIX}{self.name}_{os.getpid()}_{self._count}"
        db = create_database(name)
        self._stack.callback(drop_database, name)
        if migrate_it:
            migrate(db)
        return db

    def service(self, db: Database, env: dict[str, str] | None = None, name: str | None = None) -> Api:
        """The service under gunicorn as in production: its default configuration, metrics in
        multiprocess mode (a fresh PROMETHEUS_MULTIPROC_DIR, as `nextbest serve` sets it)."""
        keys = create_keys(db, ("channel", "analyst", "admin"))
        metrics_dir = tempfile.mkdtemp(prefix="nextbest-bench-metrics-")
        self._stack.callback(shutil.rmtree, metrics_dir, True)
        server = start_gunicorn(name or f"{self.name}-service", "service.wsgi:app",
                                env={"DATABASE_URL": db.url, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, **(env or {})},
                                ready_path="/readyz")
        self._stack.callback(server.stop)
        api = Api(server, keys)
        self._stack.callback(api.close)
        return api

    def bare(self, db: Database | None = None) -> Server:
        """The bare Flask ceiling; given a database, also its `POST /bare/insert` floor."""
        env = {"BARE_DSN": db.dsn} if db is not None else None
        server = start_gunicorn(f"{self.name}-bare", "bare_app:app", env=env, extra=["--pythonpath", str(BENCH)])
        self._stack.callback(server.stop)
        return server


# --------------------------------------------------------------------------- load generator


@dataclass
class LoadResult:
    label: str
    layout: tuple[int, int]
    seconds: float
    ok: int
    errors: int
    latencies: list[float]  # seconds, requests started inside the measured window
    first_error: str | None = None
    sample: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def p50_ms(self) -> float:
        return self.percentile(50) * 1000

    @property
    def p99_ms(self) -> float:
        return self.percentile(99) * 1000


ID_MARK = b"@ID@"


def _client_thread(kind: str, port: int, path: str, headers: dict[str, str], bodies: Sequence[bytes], tag: str,
                   window: tuple[float, float, float], expect: int, out: dict[str, Any]) -> None:
    start_at, measure_from, end_at = window
    latencies = array("d")
    ok = errors = 0
    first_error: str | None = None
    sample: bytes | None = None
    n = 0
    conn: Any
    if kind == "requests":
        conn = requests.Session()
        url = f"http://{HOST}:{port}{path}"
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
    while time.monotonic() < start_at:
        time.sleep(0.001)
    try:
        while True:
            t0 = time.monotonic()
            if t0 >= end_at:
                break
            body = bodies[n % len(bodies)].replace(ID_MARK, f"{tag}-{n}".encode())
            n += 1
            try:
                if kind == "requests":
                    response = conn.post(url, data=body, headers=headers, timeout=120)
                    status, data = response.status_code, response.content
                else:
                    conn.request("POST", path, body, headers)
                    response = conn.getresponse()
                    status, data = response.status, response.read()
            except (OSError, http.client.HTTPException, requests.RequestException) as exc:
                status, data = -1, repr(exc).encode()
                if kind != "requests":
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=120)
            t1 = time.monotonic()
            if t0 < measure_from:
                continue
            if status == expect:
                if t1 <= end_at:
                    ok += 1
                latencies.append(t1 - t0)
                sample = data
            else:
                errors += 1
                if first_error is None:
                    first_error = f"{status}: {data[:500]!r}"
    finally:
        conn.close()
    out.update(latencies=latencies, ok=ok, errors=errors, first_error=first_error, sample=sample)


def _client_process(kind: str, threads: int, port: int, path: str, headers: dict[str, str],
                    bodies: Sequence[bytes], tag: str, window: tuple[float, float, float], expect: int,
                    queue: Any) -> None:
    outs: list[dict[str, Any]] = [{} for _ in range(threads)]
    workers = [threading.Thread(target=_client_thread, daemon=True,
                                args=(kind, port, path, headers, bodies, f"{tag}t{i}", window, expect, outs[i]))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    latencies = array("d")
    ok = errors = 0
    first_error = sample = None
    for o in outs:
        latencies.extend(o.get("latencies", array("d")))
        ok += o.get("ok", 0)
        errors += o.get("errors", 0)
        first_error = first_error or o.get("first_error")
        sample = sample or o.get("sample")
    queue.put({"latencies": latencies.tobytes(), "ok": ok, "errors": errors, "first_error": first_error,
               "sample": sample})


def load(url: str, bodies: Sequence[bytes], *, layout: tuple[int, int] = (2, 4), seconds: float = 4.0,
         warmup: float = 1.0, headers: dict[str, str] | None = None, expect: int = 200, label: str = "",
         kind: str = "http.client", run_tag: str = "r") -> LoadResult:
    """POST `bodies` (cycled; `@ID@` in a body becomes a unique id per request) to `url` from
    `layout` = (processes, threads per process) keep-alive connections for `warmup` + `seconds`.
    Only requests started after the warm-up count; the rate counts those that finished in the window."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    processes, threads = layout
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    start_at = time.monotonic() + 0.3 + 0.05 * processes
    window = (start_at, start_at + warmup, start_at + warmup + seconds)
    procs = [ctx.Process(target=_client_process, daemon=True,
                         args=(kind, threads, port, path, all_headers, bodies, f"{run_tag}p{i}", window, expect,
                               queue))
             for i in range(processes)]
    for p in procs:
        p.start()
    parts_out: list[dict[str, Any]] = []
    give_up = time.monotonic() + warmup + seconds + 180
    while len(parts_out) < len(procs):
        try:
            parts_out.append(queue.get(timeout=1.0))
        except Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > give_up:
                for p in procs:
                    p.terminate()
                raise RuntimeError(f"load generator failed: exit codes {[p.exitcode for p in procs]}")
    for p in procs:
        p.join(timeout=10)
    latencies = array("d")
    ok = errors = 0
    first_error = sample = None
    for o in parts_out:
        chunk = array("d")
        chunk.frombytes(o["latencies"])
        latencies.extend(chunk)
        ok += o["ok"]
        errors += o["errors"]
        first_error = first_error or o["first_error"]
        sample = sample or o["sample"]
    return LoadResult(label=label, layout=layout, seconds=seconds, ok=ok, errors=errors,
                      latencies=list(latencies), first_error=first_error, sample=sample)


@dataclass
class SendResult:
    wall: float  # first request sent to last answer read
    latencies: list[float]
    statuses: list[int]
    answers: list[bytes]

    @property
    def errors(self) -> int:
        return sum(1 for s in self.statuses if s != 200)


def send_all(url: str, bodies: Sequence[bytes], *, connections: int = 4, headers: dict[str, str] | None = None,
             method: str = "POST") -> SendResult:
    """Send every body once over `connections` keep-alive connections (threads; for large bodies, where
    the client's work per request is small next to the server's); returns the wall time of the whole run."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    latencies = [0.0] * len(bodies)
    statuses = [0] * len(bodies)
    answers = [b""] * len(bodies)
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    barrier = threading.Barrier(connections + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, parts.port or 80, timeout=600)
        barrier.wait()
        try:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    conn.request(method, parts.path, bodies[i], all_headers)
                    response = conn.getresponse()
                    answers[i] = response.read()
                    statuses[i] = response.status
                except (OSError, http.client.HTTPException) as exc:
                    answers[i], statuses[i] = repr(exc).encode(), -1
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, parts.port or 80, timeout=600)
                latencies[i] = time.perf_counter() - t0
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return SendResult(time.perf_counter() - t0, latencies, statuses, answers)


CLIENT_LAYOUTS: list[tuple[str, tuple[int, int]]] = [
    ("http.client", (1, 8)),
    ("http.client", (2, 4)),
    ("http.client", (4, 2)),
    ("http.client", (8, 1)),
    ("requests", (2, 4)),
]


def calibrate(bare: Server, seconds: float = 2.0) -> tuple[tuple[str, tuple[int, int]], list[list[str]]]:
    """Try client layouts against the bare endpoint; the fastest is the one every row then uses."""
    body = json.dumps({"experiment": "bench", "subject_id": "@ID@", "channel": "email"}).encode()
    rows, best, best_rate = [], CLIENT_LAYOUTS[0], -1.0
    for kind, layout in CLIENT_LAYOUTS:
        result = load(bare.url("/bare"), [body], layout=layout, seconds=seconds, warmup=0.5, kind=kind,
                      run_tag=f"cal{layout[0]}x{layout[1]}{kind[0]}")
        log(f"  calibration {kind} {layout[0]}x{layout[1]}: {result.rate:,.0f}/s")
        rows.append([kind, f"{layout[0]} x {layout[1]}", f"{layout[0] * layout[1]}", fmt_int(result.rate),
                     fmt_ms(result.p50_ms), fmt_ms(result.p99_ms), str(result.errors)])
        if result.errors == 0 and result.rate > best_rate:
            best, best_rate = (kind, layout), result.rate
    for row, (kind, layout) in zip(rows, CLIENT_LAYOUTS):
        row.append("<- used" if (kind, layout) == best else "")
    return best, rows


# --------------------------------------------------------------------------- timing and tables


def median_time(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def fmt_int(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def fmt_s(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.2f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**NO**")


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]], notes: Sequence[str] = ()) -> None:
    """A Markdown table on stdout (readable as is in a terminal, pasteable into the README)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            numeric = i > 0 and (c[:1].isdigit() or c[:1] in "-+." or c == "n/a")
            out.append(c.rjust(widths[i]) if numeric else c.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    print(f"\n### {title}\n")
    print(line([str(h) for h in header]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    if notes:
        print()
        for note in notes:
            print(f"- {note}")
    sys.stdout.flush()


def machine_note() -> str:
    cores = os.cpu_count()
    with pg_connect("postgres") as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    load1, load5, _ = os.getloadavg()
    return (f"{cores} cores, PostgreSQL {version} on {PG_HOST}, gunicorn -w {WORKERS} --threads {THREADS} -k gthread; "
            f"clients share the machine with the server and the database; load average {load1:.1f} (1 min), "
            f"{load5:.1f} (5 min) at the end of the run")
