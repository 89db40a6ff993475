"""Retries of decision requests: an Idempotency-Key (or a batch's request_id) replays the stored answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from werkzeug.serving import WSGIRequestHandler, make_server

from service.store import db as db_module
from service.http.auth import create_key
from service.client import Client, Unavailable
from tests.conftest import spring_email


def decisions(app: Any) -> int:
    with db_module.get_db(app).engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM assignments")).scalar()


def batch(api: Any, subjects: list[str], key: str | None = None, scope: str = "channel", **extra: Any) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    body = {"experiment": "spring-email", "channel": "email", "subjects": [{"subject_id": s} for s in subjects],
            **extra}
    return api.call("POST", "/v1/assign/batch", scope=scope, json=body, headers=headers)


@pytest.mark.parametrize("policy", [None, {"max_per_subject": {"count": 1, "per_seconds": 86400}}])
def test_a_batch_retried_with_the_same_key_gets_the_same_answer_and_stores_nothing(app: Any, api: Any,
                                                                                  policy: Any) -> None:
    api.create_experiment(spring_email(contact_policy=policy), start=True)
    subjects = [f"c-{i}" for i in range(50)]
    first = batch(api, subjects, key="send-2026-12-05")
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    assert decisions(app) == 50
    again = batch(api, subjects, key="send-2026-12-05")
    assert again.status_code == 200 and again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true" and decisions(app) == 50
    other = batch(api, subjects[:10], key="send-2026-12-05")
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    assert decisions(app) == 50
    # Keys are per API key: another caller's identical key is its own request, and never sees this answer.
    with db_module.get_db(app).session() as session:
        _, api.keys["channel-2"] = create_key(session, "second-esp", "channel")
    theirs = batch(api, [f"d-{i}" for i in range(5)], key="send-2026-12-05", scope="channel-2")
    assert theirs.status_code == 200 and b"c-1" not in theirs.get_data()
    assert decisions(app) == 55


def test_a_batch_with_a_request_id_is_safe_to_retry_without_a_header(app: Any, api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    first = batch(api, ["a", "b"], request_id="list-42")
    again = batch(api, ["a", "b"], request_id="list-42")
    assert first.status_code == again.status_code == 200 and again.get_data() == first.get_data()
    assert decisions(app) == 2
    assert batch(api, ["a", "b"], request_id="list-43").status_code == 200 and decisions(app) == 4


@pytest.mark.parametrize("direct", ["on", "off"])
def test_a_single_decision_retried_with_the_same_key_is_stored_once(app: Any, api: Any, direct: str) -> None:
    app.config["NEXTBEST_DIRECT_ASSIGN"] = direct
    api.create_experiment(spring_email(contact_policy=None), start=True)
    body = {"experiment": "spring-email", "subject_id": "c-1", "channel": "email"}
    answers = [api.call("POST", "/v1/assign", scope="channel", json=body, headers={"Idempotency-Key": "k-1"})
               for _ in range(3)]
    assert {a.status_code for a in answers} == {200} and len({a.get_data() for a in answers}) == 1
    assert decisions(app) == 1
    plain = api.call("POST", "/v1/assign", scope="channel", json=body)  # no key: a new decision
    assert plain.status_code == 200 and decisions(app) == 2
    with_id = [api.call("POST", "/v1/assign", scope="channel", json={**body, "request_id": "r-1"}) for _ in range(2)]
    assert with_id[0].get_data() == with_id[1].get_data() and decisions(app) == 3
    bad = api.call("POST", "/v1/assign", scope="channel", json=body, headers={"Idempotency-Key": "x" * 300})
    assert bad.status_code == 422 and bad.get_json()["error"]["details"][0]["field"] == "Idempotency-Key"


def test_stored_answers_expire_after_the_retention_period(app: Any, api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    assert batch(api, ["a"], key="k").status_code == 200
    app.config["NEXTBEST_IDEMPOTENCY_RETENTION_SECONDS"] = 0
    assert batch(api, ["a"], key="k").headers.get("Idempotent-Replayed") is None
    assert decisions(app) == 2
    from service.store import idempotency

    with app.app_context(), db_module.get_db(app).session() as session:
        assert idempotency.prune(session) == 1


class _SlowFirstAnswers:
    """A server whose first answer to each idempotency key arrives after the client has given up
    (the decision is stored, the answer lost to the timeout), as a slow server's would."""

    def __init__(self, wsgi: Any, delay: float):
        self.wsgi, self.delay, self.seen, self.calls = wsgi, delay, set(), 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = list(self.wsgi(environ, start_response))
        key = environ.get("HTTP_IDEMPOTENCY_KEY")
        with self.lock:
            self.calls += 1
            first = key is not None and key not in self.seen
            self.seen.add(key)
        if first:
            time.sleep(self.delay)
        return body


class _Quiet(WSGIRequestHandler):
    def log(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_server(app: Any) -> Iterator[tuple[str, _SlowFirstAnswers]]:
    slow = _SlowFirstAnswers(app.wsgi_app, delay=1.0)
    app.wsgi_app = slow
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", slow
    server.shutdown()
    thread.join(timeout=10)


def test_the_client_with_a_tiny_timeout_stores_each_decision_once(app: Any, api: Any, keys: dict[str, str],
                                                                 slow_server: Any) -> None:
    url, slow = slow_server
    api.create_experiment(spring_email(contact_policy={"max_per_subject": {"count": 3, "per_seconds": 86400}}),
                          start=True)
    client = Client(url, key=keys["channel"], timeout=0.4, retries=4, backoff=0.05)
    answers = client.assign_batch("spring-email", [{"subject_id": f"c-{i}"} for i in range(300)], channel="email")
    assert len(answers) == 300 and all(not a.no_offer for a in answers)
    single = client.assign("spring-email", "c-solo", channel="email")
    assert single.assignment_id is not None
    assert slow.calls >= 4  # each call timed out once and was answered on its retry
    assert decisions(app) == 301
    with db_module.get_db(app).engine.connect() as conn:
        stored = set(conn.execute(text("SELECT id FROM assignments")).scalars())
    assert {a.assignment_id for a in answers} | {single.assignment_id} == stored


def test_the_client_never_re_sends_a_post_without_a_key() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:  # a server that takes every request and never answers
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    client = Client(f"http://127.0.0.1:{listener.getsockname()[1]}", key="nb_x_y", timeout=0.2, retries=2,
                    backoff=0.01)
    try:
        with pytest.raises(Unavailable):
            client.request("POST", "/v1/experiments", json={"key": "k"})
        assert len(accepted) == 1
        with pytest.raises(Unavailable):
            client.request("POST", "/v1/assign", json={}, idempotency_key="k-1")
        deadline = time.monotonic() + 5
        while len(accepted) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(accepted) == 4  # three tries, one key
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
