"""The client: one service, one key, retries that are always harmless.

Event ids are generated when not given, so a retried send is stored once.
Every POST the client may retry carries an `Idempotency-Key` (decisions, batches
and events; one key per call, the same on each retry), so a retry after a timeout
returns the stored answer instead of deciding again. A POST without a key is
never re-sent. 429 and 503 answers, a 409 `idempotency_in_progress` (the first
try is still running) and connection errors or timeouts are retried with
exponential backoff, honouring Retry-After; other errors raise `ApiError` at once.

When the service cannot be reached (connection errors, timeouts, or 429/5xx answers
after every retry), `assign` and `assign_batch` do not raise: like the SDKs of
experimentation platforms they return a fallback decision, `no_offer` with reason
`unavailable` and the default payload the caller gave (per call, or per experiment in
`Client(defaults=...)`), so the channel still sends something. `Client(fallback=False)`
raises instead. Errors that retrying cannot fix (a bad request, a wrong key) always raise.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

import requests

from .models import Decision, EventResults, Report

RETRY_STATUSES = frozenset({429, 502, 503, 504})


def new_key() -> str:
    """A fresh idempotency key for one logical call (kept across its retries)."""
    return f"nbc-{uuid.uuid4().hex}"


def _in_progress(response: Any) -> bool:
    """A 409 saying the same idempotent request is still running: worth waiting for, not an error."""
    if response.status_code != 409:
        return False
    try:
        return response.json()["error"]["code"] == "idempotency_in_progress"
    except (ValueError, KeyError, TypeError):
        return False


class ApiError(Exception):
    """The service answered with an error in its JSON shape."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


class Unavailable(ApiError):
    """The service could not be reached (status 0) or kept answering 429/5xx through every retry."""

    def __init__(self, status: int, message: str):
        super().__init__(status, "unavailable", message)


def _iso(moment: datetime | None) -> str:
    """ISO 8601 in UTC with a Z, as the service writes it."""
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class Client:
    """Talks to one nextbest service with one key; safe to share between threads (one session each)."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 10.0, retries: int = 4, backoff: float = 0.2,
                 fallback: bool = True, defaults: dict[str, dict[str, Any]] | None = None):
        self.fallback = fallback
        self.defaults = dict(defaults or {})
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {key}", "User-Agent": "nextbest-client/1"})

    # -- decisions ---------------------------------------------------------------------------------------
    def assign(self, experiment: str, subject_id: str, *, context: dict[str, Any] | None = None,
               channel: str | None = None, default_payload: dict[str, Any] | None = None) -> Decision:
        """One decision; when the service is unavailable, the fallback decision (see the module docstring)."""
        body = {"experiment": experiment, "subject_id": subject_id, "context": context, "channel": channel}
        try:
            return Decision.from_json(self.request("POST", "/v1/assign", json=body, idempotency_key=new_key()))
        except Unavailable:
            if not self.fallback:
                raise
            return Decision.fallback(experiment, subject_id, self._default(experiment, default_payload))

    def assign_batch(self, experiment: str, subjects: list[dict[str, Any]], *, channel: str | None = None,
                     default_payload: dict[str, Any] | None = None) -> list[Decision]:
        """A send list in one call (retried under one key); fallback decisions when unavailable."""
        body = {"experiment": experiment, "channel": channel, "subjects": subjects}
        try:
            answer = self.request("POST", "/v1/assign/batch", json=body, idempotency_key=new_key())
        except Unavailable:
            if not self.fallback:
                raise
            payload = self._default(experiment, default_payload)
            return [Decision.fallback(experiment, s["subject_id"], payload) for s in subjects]
        return [Decision.from_json(item) for item in answer["assignments"]]

    def _default(self, experiment: str, given: dict[str, Any] | None) -> dict[str, Any] | None:
        return given if given is not None else self.defaults.get(experiment)

    # -- outcomes ----------------------------------------------------------------------------------------
    @staticmethod
    def event(event_type: str, *, assignment_id: str | None = None, experiment: str | None = None,
              subject_id: str | None = None, value: float | None = None, occurred_at: datetime | None = None,
              channel: str | None = None, event_id: str | None = None) -> dict[str, Any]:
        """An event with a fresh id: keep the dict and resend it as is to retry safely."""
        event: dict[str, Any] = {"event_id": event_id or f"evt-{uuid.uuid4().hex}", "type": event_type,
                                 "occurred_at": _iso(occurred_at)}
        for name, value_ in (("assignment_id", assignment_id), ("experiment", experiment),
                             ("subject_id", subject_id), ("value", value), ("channel", channel)):
            if value_ is not None:
                event[name] = value_
        return event

    def send_events(self, events: list[dict[str, Any]]) -> EventResults:
        answer = self.request("POST", "/v1/events", json={"events": events}, idempotency_key=new_key())
        return EventResults(answer["accepted"], answer["duplicates"], answer["rejected"], answer["results"])

    # -- analyst helpers ---------------------------------------------------------------------------------
    def create_experiment(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/experiments", json=spec)

    def action(self, experiment: str, action: str, **body: Any) -> dict[str, Any]:
        return self.request("POST", f"/v1/experiments/{experiment}/{action}", json=body or None)

    def report(self, experiment: str) -> Report:
        """The experiment's report, typed (`Report.raw` holds the whole answer)."""
        return Report.from_json(self.request("GET", f"/v1/experiments/{experiment}/report"))

    # -- transport ---------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                content_type: str | None = None, params: dict[str, Any] | None = None,
                idempotency_key: str | None = None) -> Any:
        """One call with retries on 429/5xx-unavailable and connection errors; JSON answer or ApiError.
        A POST is retried only with an idempotency key (sent on every try), so a retry never repeats it."""
        headers = {"Content-Type": content_type} if content_type else {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        retries = self.retries if method.upper() != "POST" or idempotency_key is not None else 0
        delay = self.backoff
        for attempt in range(retries + 1):
            try:
                response = self._session.request(method, self.base_url + path, json=json, data=data,
                                                  headers=headers or None, params=params, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == retries:
                    raise Unavailable(0, f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
                time.sleep(delay)
                delay *= 2
                continue
            if attempt < retries and (response.status_code in RETRY_STATUSES or _in_progress(response)):
                wait = response.headers.get("Retry-After")
                time.sleep(min(float(wait), 30.0) if wait and wait.replace(".", "", 1).isdigit() else delay)
                delay *= 2
                continue
            if response.status_code in RETRY_STATUSES:
                raise Unavailable(response.status_code, f"{method} {path}: {response.status_code} after {attempt + 1} tries")
            if response.status_code >= 400:
                try:
                    error = response.json()["error"]
                except (ValueError, KeyError, TypeError):
                    error = {"code": "http_error", "message": response.text[:200]}
                raise ApiError(response.status_code, error.get("code", "error"), error.get("message", ""),
                               error.get("details"))
            if response.headers.get("Content-Type", "").startswith("application/json"):
                return response.json()
            return response.text
        raise AssertionError("unreachable")
