"""Operations: Prometheus metrics, structured JSON logs with a request id, per-key rate limits.

Metrics work under gunicorn with several workers through prometheus-client's
multiprocess mode: `nextbest serve` sets PROMETHEUS_MULTIPROC_DIR to a fresh
directory before the workers fork (set it yourself when starting gunicorn
directly), and /metrics aggregates every worker's numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.config import switched_on
from service.http.errors import ApiError

REQUESTS = Counter("nextbest_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram("nextbest_request_seconds", "HTTP request latency", ["endpoint"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DECISIONS = Counter("nextbest_decisions_total", "decisions answered", ["kind"])
EVENTS = Counter("nextbest_events_total", "events received", ["status"])
# Per experiment, so a dashboard can show each offer's traffic (experiments are few; ids never become labels).
EXPERIMENT_DECISIONS = Counter("nextbest_experiment_decisions_total", "decisions answered per experiment",
                               ["experiment", "kind"])
EXPERIMENT_EVENTS = Counter("nextbest_experiment_events_total", "events accepted per experiment", ["experiment"])
REFITS = Counter("nextbest_refits_total", "policy refits", ["status"])
PROMOTIONS = Counter("nextbest_promotions_total", "promotions", ["how"])
ERRORS = Counter("nextbest_errors_total", "unexpected errors (500): each one is a bug", [])
UNAVAILABLE = Counter("nextbest_unavailable_total",
                      "expected 503 answers (database away or not migrated), with Retry-After", [])
JOB_LAST_SUCCESS = Gauge("nextbest_job_last_success_timestamp_seconds",
                         "when each periodic job last finished without error (Unix time)", ["job"],
                         multiprocess_mode="max")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "method", "path", "status", "ms", "key_name", "endpoint"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    root = logging.getLogger("nextbest")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


class RateLimiter:
    """Token bucket per API key in this worker: `rate` requests a second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: int) -> float | None:
        """None when allowed; otherwise seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key_id] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[key_id] = (tokens - 1, now)
            return None


_SUBJECT_PATH = "/v1/subjects/"


def pseudonymous_path(path: str, key: bytes) -> str:
    """The path with a subject id replaced by `subject:<16 hex>` (a keyed hash: the same subject gives the
    same pseudonym in one deployment, and the id cannot be read back from the access log)."""
    if not path.startswith(_SUBJECT_PATH):
        return path
    subject, slash, rest = path[len(_SUBJECT_PATH):].partition("/")
    if not subject or subject == "import":
        return path
    digest = hmac.new(key, subject.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]
    return f"{_SUBJECT_PATH}subject:{digest}{slash}{rest}"


class RequestRecorder:
    """Counts, times and logs each answered request: the metrics and the access line."""

    def __init__(self, access_log: bool, pseudonym_key: bytes = b""):
        self.access_log = access_log
        self.pseudonym_key = pseudonym_key
        self._log = logging.getLogger("nextbest.access")
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def record(self, endpoint: str, method: str, path: str, status: int, elapsed: float,
               request_id: str | None, caller: Any) -> None:
        counter, histogram = self._metrics_for(endpoint, method, status)
        counter.inc()
        histogram.observe(elapsed)
        if status == 503:
            UNAVAILABLE.inc()
        elif status >= 500:
            ERRORS.inc()
        log = self._log
        if self.access_log and log.isEnabledFor(logging.INFO):
            # makeRecord + handle: the same record log.info would make, without its search of the
            # call stack for a source line the JSON line never shows.
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "request", None, None, extra={
                "request_id": request_id, "method": method, "path": pseudonymous_path(path, self.pseudonym_key),
                "status": status,
                "ms": round(elapsed * 1000, 2), "key_name": caller.name if caller is not None else None,
                "endpoint": endpoint,
            }))

    def _metrics_for(self, endpoint: str, method: str, status: int) -> tuple[Any, Any]:
        """The counter and histogram children of one label set, looked up once per worker."""
        key = (endpoint, method, status)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (REQUESTS.labels(endpoint, method, str(status)), LATENCY.labels(endpoint))
        return found


MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,%d}" % MAX_REQUEST_ID)


def request_id(given: str | None) -> str:
    """The caller's X-Request-Id when it is 1-128 visible ASCII characters of the usual id alphabet
    (letters, digits, . _ : / + = @ -), else a new one: it is echoed and logged, so it is bounded."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(16).hex()


def init_app(app: Flask) -> None:
    configure_logging(str(app.config["NEXTBEST_LOG_LEVEL"]))
    access_log = switched_on(app.config, "NEXTBEST_ACCESS_LOG")
    rate = float(app.config.get("NEXTBEST_RATE_LIMIT_PER_SECOND", 0) or 0)
    limiter = RateLimiter(rate, max(rate * 2, 1.0)) if rate > 0 else None
    app.extensions["nextbest.ratelimiter"] = limiter
    recorder = app.extensions["nextbest.recorder"] = RequestRecorder(
        access_log, str(app.config.get("SECRET_KEY") or "").encode())

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        recorder.record(req.endpoint or "unmatched", req.method, req.path, response.status_code,
                        time.perf_counter() - g.get("started", time.perf_counter()), g.get("request_id"),
                        g.get("caller"))
        return response


def check_rate_limit(key_id: int) -> None:
    """Raise 429 with Retry-After when this key exceeded its rate in this worker."""
    limiter = current_app.extensions.get("nextbest.ratelimiter")
    if limiter is None:
        return
    wait = limiter.check(key_id)
    if wait is not None:
        raise ApiError(429, "rate limit exceeded for this key; slow down", headers={"Retry-After": f"{max(1, round(wait))}"})


def count_decisions(experiment: str, kind: str, count: int = 1) -> None:
    """Count answered decisions (`logged`, `no_offer` or `default`) in total and per experiment."""
    DECISIONS.labels(kind).inc(count)
    EXPERIMENT_DECISIONS.labels(experiment, kind).inc(count)


def job_succeeded(job: str) -> None:
    """Record that a periodic job (refit, promotion, webhooks) finished without error."""
    JOB_LAST_SUCCESS.labels(job).set(time.time())


def metrics_response(state: Any = None) -> Response:
    """Every worker's counters, plus `state` (a collector of what the database holds now)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    if state is not None:
        scraped = CollectorRegistry()
        scraped.register(state)
        data += generate_latest(scraped)
    # content_type, not mimetype: the constant already names its charset.
    return Response(data, content_type=CONTENT_TYPE_LATEST)
