"""A direct WSGI path for the common single decision.

Flask's per-request machinery (request and URL objects, context proxies, hooks, the
response object, the OpenAPI wrapper) cost as much CPU as the decision and its
write together. `POST /v1/assign` is the call channels make per customer, so this
middleware answers its common case itself, running the same functions the Flask
route runs: the same key check and rate limit, the same body model, the same
decision and insert, the same JSON, headers, metrics and access line.

It answers only what Flask would answer with a decision. Anything else (a missing
or unknown key, a body that does not validate, an unknown experiment, a context
that does not fit, a database not yet migrated, any failure before the write) goes
to Flask untouched, with the body it read, so every refusal keeps one code path
and one error shape. Nothing is written before that point, so handing over is
harmless. A failure of the write itself is answered here, by the same error
handler Flask uses. `NEXTBEST_DIRECT_ASSIGN=off` sends everything through Flask.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, g
from werkzeug.http import HTTP_STATUS_CODES

from service.store import db
from service.http import errors, observability
from service.http.api.decisions import commit_decision, decide_one, store_and_answer
from service.http.guards import is_migrated, may_be_deep_or_hold_nul
from service.http.auth import caller_for
from service.http.schemas import AssignRequest

ENDPOINT = "decisions.assign"
PATH = "/v1/assign"

StartResponse = Callable[..., Any]


class DirectAssign:
    """WSGI middleware in front of the Flask app (`app.wsgi_app = DirectAssign(app, app.wsgi_app)`)."""

    def __init__(self, app: Flask, flask_wsgi: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]):
        self.app = app
        self.flask_wsgi = flask_wsgi

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST" or self.app.debug:
            return self.flask_wsgi(environ, start_response)
        started = time.perf_counter()
        length = _content_length(environ)
        if length is None or length > self.app.config["NEXTBEST_MAX_DECISION_BYTES"] or not _is_json(environ):
            return self.flask_wsgi(environ, start_response)
        raw = environ["wsgi.input"].read(length)
        with self.app.app_context():
            answer = self._answer(environ, raw)
            if answer is not None:
                status, headers, body = answer
                request_id, caller = g.request_id, g.caller
                headers += [("X-Request-Id", request_id), ("X-Content-Type-Options", "nosniff")]
                recorder: observability.RequestRecorder = self.app.extensions["nextbest.recorder"]
                recorder.record(ENDPOINT, "POST", PATH, status, time.perf_counter() - started, request_id, caller)
        if answer is None:  # Flask answers, in its own app context, from the same bytes
            environ["wsgi.input"] = io.BytesIO(raw)
            return self.flask_wsgi(environ, start_response)
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}", headers)  # as werkzeug words it
        return [body]

    def _answer(self, environ: dict[str, Any], raw: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """Status, headers and body, or None to let Flask answer. Runs in an app context, as the route does."""
        app = self.app
        if not is_migrated(app) or may_be_deep_or_hold_nul(raw) or "HTTP_IDEMPOTENCY_KEY" in environ:
            return None  # an idempotent request is answered (and its answer stored) by Flask
        try:
            body = AssignRequest.model_validate(app.json.loads(raw))
            if body.request_id is not None:
                return None
            g.request_id = observability.request_id(environ.get("HTTP_X_REQUEST_ID"))
            g.single_write = True
            g.caller = caller_for(environ.get("HTTP_AUTHORIZATION", ""), db.session,
                                  app.extensions.get("nextbest.keycache"), app.config["ENDPOINT_SCOPES"][ENDPOINT])
            observability.check_rate_limit(g.caller.key_id)
            runtime, outcome = decide_one(body)
        except Exception:
            # A refusal (Flask gives it, in the one shape) or a failed read, such as a lost
            # connection (Flask runs it again on a fresh one).
            return None
        try:
            answer = store_and_answer(runtime, outcome)
            commit_decision()
        except Exception as exc:  # the write failed: answered as Flask would, never run twice
            failed = errors.response_for(exc)
            return failed.status_code, list(failed.headers.items()), failed.get_data()
        # What jsonify writes outside debug mode: compact JSON and a newline.
        body_bytes = f"{app.json.dumps(answer, separators=(',', ':'))}\n".encode()
        return 200, [("Content-Type", app.json.mimetype), ("Content-Length", str(len(body_bytes)))], body_bytes


def _content_length(environ: dict[str, Any]) -> int | None:
    value = environ.get("CONTENT_LENGTH") or ""
    return int(value) if value.isdigit() else None


def _is_json(environ: dict[str, Any]) -> bool:
    return environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() == "application/json"
