"""Contact rules and idempotency under real concurrency: threads against gunicorn (2 workers x 4
threads) on PostgreSQL, as in production. Bounded: a few hundred requests per test."""

from __future__ import annotations

import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import text

from bench._harness import start_gunicorn
from service.store import db as db_module
from tests.conftest import spring_email

CAP_ONE = {"max_per_subject": {"count": 1, "per_seconds": 86400}}


@pytest.fixture(params=["on", "off"], ids=["direct", "flask"])
def direct(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def live(app: Any, database_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The service under gunicorn on this test's PostgreSQL schema, with or without the direct path."""
    if not database_url.startswith("postgresql"):
        pytest.skip("several workers against one database: PostgreSQL")
    mode = request.getfixturevalue("direct") if "direct" in request.fixturenames else "on"
    env = {"DATABASE_URL": database_url, "NEXTBEST_DIRECT_ASSIGN": mode,
           "NEXTBEST_POLICY_REFRESH_SECONDS": "0", "NEXTBEST_ACCESS_LOG": "off",
           "NEXTBEST_RATE_LIMIT_PER_SECOND": "0", "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="nb-test-")}
    server = start_gunicorn(f"test-contact-{uuid.uuid4().hex[:8]}", "service.wsgi:app", env=env, timeout=90)
    try:
        yield server.url()
    finally:
        server.stop()


def stored(app: Any, where: str = "") -> int:
    with db_module.get_db(app).engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM assignments {where}")).scalar()


def together(count: int, work: Any) -> list[Any]:
    """Run work(i) on `count` threads released at the same moment; their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_eight_simultaneous_requests_per_subject_under_a_cap_of_one(app: Any, api: Any, keys: dict[str, str],
                                                                  direct: str, live: str) -> None:
    api.create_experiment(spring_email(contact_policy=CAP_ONE), start=True)
    subjects = [f"c-{i}" for i in range(20)]
    headers = {"Authorization": f"Bearer {keys['channel']}"}

    def send(_: int) -> list[tuple[int, Any]]:
        answers = []
        with requests.Session() as session:
            for subject in subjects:  # all eight threads ask for the same subject at about the same time
                response = session.post(f"{live}/v1/assign", headers=headers, timeout=60,
                                        json={"experiment": "spring-email", "subject_id": subject, "channel": "email"})
                answers.append((response.status_code, response.json()))
        return answers

    answers = [a for per_thread in together(8, send) for a in per_thread]
    assert {status for status, _ in answers} == {200}
    decided = Counter(body["subject_id"] for _, body in answers if not body["no_offer"])
    refused = Counter(body["reason"] for _, body in answers if body["no_offer"])
    assert decided == Counter({s: 1 for s in subjects})
    assert refused == Counter({"frequency_cap": 140})
    assert stored(app) == 20


def test_two_simultaneous_send_lists_of_the_same_subjects(app: Any, api: Any, keys: dict[str, str],
                                                         live: str) -> None:
    for key in ("spring-a", "spring-b"):
        api.create_experiment(spring_email(key=key, contact_policy=CAP_ONE), start=True)
    subjects = [{"subject_id": f"c-{i}"} for i in range(100)]
    headers = {"Authorization": f"Bearer {keys['channel']}"}

    def send(i: int) -> Any:
        body = {"experiment": ("spring-a", "spring-b")[i % 2], "channel": "email", "subjects": subjects}
        return requests.post(f"{live}/v1/assign/batch", headers=headers, json=body, timeout=60).json()

    answers = together(4, send)  # two lists per experiment, all at once
    decided = Counter(a["subject_id"] for answer in answers for a in answer["assignments"] if not a["no_offer"])
    assert decided == Counter({s["subject_id"]: 1 for s in subjects})
    assert stored(app) == 100
    the_same_idempotent_batch_sent_four_times_at_once_is_stored_once(app, api, keys, live)


def the_same_idempotent_batch_sent_four_times_at_once_is_stored_once(app: Any, api: Any, keys: dict[str, str],
                                                                   live: str) -> None:
    """(Run on the same server as the test above, to start one server fewer.)"""
    api.create_experiment(spring_email(contact_policy=None), start=True)
    body = {"experiment": "spring-email", "channel": "email", "subjects": [{"subject_id": f"c-{i}"} for i in range(500)]}
    headers = {"Authorization": f"Bearer {keys['channel']}", "Idempotency-Key": "list-7"}

    def send(_: int) -> requests.Response:
        return requests.post(f"{live}/v1/assign/batch", headers=headers, json=body, timeout=60)

    answers = together(4, send)
    done = [a for a in answers if a.status_code == 200]
    busy = [a for a in answers if a.status_code == 409]
    assert len(done) + len(busy) == 4 and done
    assert all(a.json()["error"]["code"] == "idempotency_in_progress" and a.headers["Retry-After"] for a in busy)
    assert len({a.content for a in done}) == 1
    retried = send(0)
    assert retried.status_code == 200 and retried.content == done[0].content
    assert stored(app, "WHERE experiment_id = (SELECT id FROM experiments WHERE key = 'spring-email')") == 500


def test_simultaneous_requests_under_a_cap_on_one_threaded_process(app: Any, api: Any, keys: dict[str, str]) -> None:
    """The same rule on either database with one process of many threads (SQLite's write lock
    serialises them; PostgreSQL's advisory locks)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log(self, *args: Any) -> None:
            pass

    api.create_experiment(spring_email(contact_policy=CAP_ONE), start=True)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    headers = {"Authorization": f"Bearer {keys['channel']}"}
    subjects = [f"c-{i}" for i in range(10)]

    def send(i: int) -> list[Any]:
        with requests.Session() as session:
            if i % 2:  # half the senders use a batch of every subject
                body = {"experiment": "spring-email", "channel": "email",
                        "subjects": [{"subject_id": s} for s in subjects]}
                return session.post(f"{url}/v1/assign/batch", headers=headers, json=body, timeout=60
                                    ).json()["assignments"]
            return [session.post(f"{url}/v1/assign", headers=headers, timeout=60,
                                 json={"experiment": "spring-email", "subject_id": s, "channel": "email"}).json()
                    for s in subjects]

    try:
        answers = [a for per_thread in together(6, send) for a in per_thread]
    finally:
        server.shutdown()
        thread.join(timeout=10)
    assert Counter(a["subject_id"] for a in answers if not a["no_offer"]) == Counter({s: 1 for s in subjects})
    assert stored(app) == 10
