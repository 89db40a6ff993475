"""A small Python client for channel systems (and the demo, load test and README examples).

    from service.client import Client
    nb = Client("http://127.0.0.1:8000", key="nb_...")
    decision = nb.assign("spring-email", "c-123", context={"recency": 3}, channel="email")
    if not decision.no_offer:
        nb.send_events([nb.event("click", assignment_id=decision.assignment_id)])

Event ids are generated when not given, so a retried send is stored once.
Every POST the client may retry carries an `Idempotency-Key` (decisions, batches
and events; one key per call, the same on each retry), so a retry after a timeout
returns the stored answer instead of deciding again. A POST without a key is
never re-sent. 429 and 503 answers, a 409 `idempotency_in_progress` (the first
try is still running) and connection errors or timeouts are retried with
exponential backoff, honouring Retry-After; other errors raise `ApiError` at once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests

from .clock import iso_utc

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


@dataclass(frozen=True, slots=True)
class Decision:
    assignment_id: str | None
    experiment: str
    subject_id: str
    arm: str | None
    payload: dict[str, Any] | None
    propensity: float | None
    policy_version: int | None
    holdout: bool
    no_offer: bool
    reason: str | None
    retry_after: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Decision:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(**{k: body.get(k) for k in known},  # type: ignore[arg-type]
                   extra={k: v for k, v in body.items() if k not in known})


@dataclass(frozen=True, slots=True)
class EventResults:
    accepted: int
    duplicates: int
    rejected: int
    results: list[dict[str, Any]]


def _iso(moment: datetime | None) -> str:
    return iso_utc(moment or datetime.now(timezone.utc)) or ""


class Client:
    """Talks to one nextbest service with one key; safe to share between threads (one session each)."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 10.0, retries: int = 4, backoff: float = 0.2):
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {key}", "User-Agent": "nextbest-client/1"})

    # -- decisions ---------------------------------------------------------------------------------------
    def assign(self, experiment: str, subject_id: str, *, context: dict[str, Any] | None = None,
               channel: str | None = None) -> Decision:
        body = {"experiment": experiment, "subject_id": subject_id, "context": context, "channel": channel}
        return Decision.from_json(self.request("POST", "/v1/assign", json=body, idempotency_key=new_key()))

    def assign_batch(self, experiment: str, subjects: list[dict[str, Any]], *, channel: str | None = None
                     ) -> list[Decision]:
        body = {"experiment": experiment, "channel": channel, "subjects": subjects}
        answer = self.request("POST", "/v1/assign/batch", json=body, idempotency_key=new_key())
        return [Decision.from_json(item) for item in answer["assignments"]]

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

    def report(self, experiment: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/experiments/{experiment}/report")

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
            except (requests.ConnectionError, requests.Timeout):
                if attempt == retries:
                    raise
                time.sleep(delay)
                delay *= 2
                continue
            if attempt < retries and (response.status_code in RETRY_STATUSES or _in_progress(response)):
                wait = response.headers.get("Retry-After")
                time.sleep(min(float(wait), 30.0) if wait and wait.replace(".", "", 1).isdigit() else delay)
                delay *= 2
                continue
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
