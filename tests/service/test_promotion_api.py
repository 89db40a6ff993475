"""Promotion through the API: decision explained, auto-promotion, guardrails, SRM, concurrency, webhooks."""

from __future__ import annotations

import time

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select

from service import clock, create_app
from service.store import db as db_module
from service.store.models import AuditEntry, WebhookDelivery
from service.jobs.promotion import evaluate_all
from service.jobs.webhooks import deliver_due, verify
from tests.service.test_import_api import hillstrom_spec, import_hillstrom

DAY = 86400


@pytest.fixture(autouse=True)
def simulated_clock() -> Any:
    yield clock
    clock.reset()


def running_hillstrom(api: Any, extra: dict[str, Any] | None = None, **promotion: Any) -> None:
    spec = hillstrom_spec()
    spec["promotion"] = {"metric": "click_rate", "confidence": 0.95, "min_decisions_per_arm": 1000,
                         "min_runtime_seconds": 7 * DAY, "action": "promote", "holdback": 0.1, **promotion}
    spec.update(extra or {})
    api.create_experiment(spec, start=True)
    import_hillstrom(api)


def run_job(app: Any) -> list[dict[str, Any]]:
    with db_module.get_db(app).session() as session:
        return evaluate_all(session, holder="test")


def test_decision_explains_why_not_yet_and_then_promotes(app: Any, api: Any) -> None:
    running_hillstrom(api)
    decision = api.call("GET", "/v1/experiments/hillstrom/decision").get_json()
    assert decision["action"] == "wait"
    runtime = next(c for c in decision["conditions"] if c["name"] == "min_runtime")
    assert runtime["passed"] is False and "of 7 days" in runtime["detail"]
    assert next(c for c in decision["conditions"] if c["name"] == "beats_control")["passed"] is True
    assert run_job(app)[0]["promoted"] is False
    clock.advance(8 * DAY)
    decision = api.call("GET", "/v1/experiments/hillstrom/decision").get_json()
    assert decision["action"] == "promote" and decision["winner"] == "mens"
    results = run_job(app)
    assert results[0]["promoted"] is True
    experiment = api.call("GET", "/v1/experiments/hillstrom").get_json()
    assert experiment["winner"] == "mens" and experiment["holdback"] == 0.1
    entries = api.call("GET", "/v1/experiments/hillstrom/audit").get_json()["entries"]
    promoted = next(e for e in entries if e["action"] == "promote")
    assert promoted["details"]["winner"] == "mens" and promoted["details"]["statistics"]
    # every channel now gets the winner, less the holdback on control
    arms = [api.assign("hillstrom", f"new-{i}")["arm"] for i in range(400)]
    assert set(arms) <= {"mens", "control"}
    assert 0.04 < arms.count("control") / 400 < 0.18
    assert run_job(app) == []  # nothing left to evaluate: promoted once


def test_guardrail_breach_blocks_promotion(app: Any, api: Any) -> None:
    # Mens lifts visits by about 70%; a guardrail that caps the rise of the visit rate at 5% must block it.
    running_hillstrom(api, extra={"guardrails": [{"metric": "click_rate", "max_relative_increase": 0.05}]})
    clock.advance(8 * DAY)
    decision = api.call("GET", "/v1/experiments/hillstrom/decision").get_json()
    # a clear breach: stop is recommended (the rule does not ask the job to pause)
    assert decision["action"] == "stop" and "clearly breaches the click rate guardrail" in decision["reason"]
    guard = next(c for c in decision["conditions"] if c["name"].startswith("guardrail:"))
    assert guard["passed"] is False and "click_rate" in guard["name"]
    assert run_job(app)[0]["promoted"] is False
    assert api.call("GET", "/v1/experiments/hillstrom").get_json()["status"] == "running"


def test_sample_ratio_mismatch_blocks_promotion(app: Any, api: Any) -> None:
    spec = hillstrom_spec()
    spec["allocation"] = {"type": "fixed", "weights": {"control": 1, "mens": 2, "womens": 1}}
    spec["promotion"] = {"metric": "click_rate", "min_decisions_per_arm": 100, "min_runtime_seconds": 0}
    api.create_experiment(spec, start=True)
    import_hillstrom(api)  # equal thirds against configured 1:2:1
    decision = api.call("GET", "/v1/experiments/hillstrom/decision").get_json()
    srm = next(c for c in decision["conditions"] if c["name"] == "no_srm")
    assert srm["passed"] is False and decision["action"] == "wait"


def test_manual_promote_and_rollback_use_the_same_path(app: Any, api: Any) -> None:
    running_hillstrom(api)
    response = api.call("POST", "/v1/experiments/hillstrom/promote", json={"winner": "womens", "reason": "brand"})
    assert response.status_code == 200 and response.get_json()["winner"] == "womens"
    again = api.call("POST", "/v1/experiments/hillstrom/promote", json={"winner": "mens"})
    assert again.status_code == 409
    assert api.call("POST", "/v1/experiments/hillstrom/promote", json={"winner": "kids"}).status_code == 409
    back = api.call("POST", "/v1/experiments/hillstrom/rollback", json={"reason": "oops"})
    assert back.status_code == 200 and back.get_json()["winner"] is None
    assert api.call("POST", "/v1/experiments/hillstrom/promote", json={"winner": "kids"}).status_code == 422
    actions = [e["action"] for e in api.call("GET", "/v1/experiments/hillstrom/audit").get_json()["entries"]]
    assert actions[-2:] == ["promote", "rollback"]


@pytest.mark.postgres
def test_two_evaluators_at_once_promote_exactly_once(app: Any, api: Any, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("real concurrent connections: PostgreSQL only")
    running_hillstrom(api, min_runtime_seconds=0)
    workers = [create_app({"DATABASE_URL": database_url}) for _ in range(3)]
    barrier = threading.Barrier(len(workers))
    results: list[Any] = []

    def work(worker: Any, n: int) -> None:
        barrier.wait()
        with db_module.get_db(worker).session() as session:
            experiment = session.scalars(select(__import__("service.store.models", fromlist=["Experiment"]).Experiment)).one()
            from service.jobs.promotion import decide, promote
            decision = decide(session, experiment)
            results.append(promote(session, experiment, decision.winner, f"w{n}", holdback=0.0,
                                   reason="race") if decision.winner else None)

    threads = [threading.Thread(target=work, args=(w, n)) for n, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1, results
    with db_module.get_db(app).session() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "promote")) == 1
    for w in workers:
        db_module.get_db(w).dispose()


class Receiver:
    """A local HTTP receiver that fails the first `failures` posts and takes `delay` seconds to answer
    (so concurrent senders overlap)."""

    def __init__(self, failures: int = 0, delay: float = 0.0):
        self.failures = failures
        self.delay = delay
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append(({k: v for k, v in self.headers.items()}, body))
                code = 500 if len(outer.received) <= outer.failures else 204
                time.sleep(outer.delay)
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.server.shutdown()


def test_webhooks_are_signed_retried_and_recorded(app: Any, api: Any) -> None:
    receiver = Receiver(failures=1)
    broken = "http://127.0.0.1:9/unreachable"
    try:
        running_hillstrom(api, min_runtime_seconds=0)
        hook = api.call("POST", "/v1/webhooks", scope="admin", json={"url": receiver.url, "experiment": "hillstrom"})
        assert hook.status_code == 201
        secret = hook.get_json()["secret"]
        assert api.call("POST", "/v1/webhooks", scope="analyst", json={"url": receiver.url}).status_code == 403
        api.call("POST", "/v1/webhooks", scope="admin", json={"url": broken})
        assert run_job(app)[0]["promoted"] is True  # a failing subscriber never blocks the promotion
        with db_module.get_db(app).session() as session:
            first = deliver_due(session)
        assert first == {"delivered": 0, "retrying": 2, "failed": 0}
        clock.advance(60)
        with db_module.get_db(app).session() as session:
            second = deliver_due(session)
        assert second["delivered"] == 1
        headers, body = receiver.received[-1]
        assert verify(secret, headers["X-Nextbest-Timestamp"], body, headers["X-Nextbest-Signature"])
        assert not verify("wrong-secret-0123456789", headers["X-Nextbest-Timestamp"], body,
                          headers["X-Nextbest-Signature"])
        assert json.loads(body)["winner"] == "mens" and headers["X-Nextbest-Event"] == "experiment.promoted"
        for _ in range(8):
            clock.advance(3600)
            with db_module.get_db(app).session() as session:
                deliver_due(session)
        with db_module.get_db(app).session() as session:
            statuses = dict(session.execute(select(WebhookDelivery.status, func.count())
                                            .group_by(WebhookDelivery.status)).all())
        assert statuses == {"delivered": 1, "failed": 1}
        assert api.call("GET", "/v1/experiments/hillstrom").get_json()["winner"] == "mens"
        listed = api.call("GET", "/v1/webhooks", scope="admin").get_json()["webhooks"]
        assert listed[0]["deliveries"] == {"delivered": 1} and listed[0]["secret"] is None
    finally:
        receiver.close()
