"""No reward skipped, none learned twice, however ingestion and refits interleave (PostgreSQL, real connections)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from service import clock, create_app
from service.store import db as db_module
from service.jobs.learning import refit_all
from service.store.models import Assignment, AuditEntry, Event, PolicySnapshot
from tests.conftest import Api
from tests.service.test_bandits_api import bandit_spec, iso

WAIT = 600  # simulated seconds
GRACE = 60.0  # simulated seconds; ingestion must commit within half of it
DECISIONS = 4000
EVENTS = 8000
BATCH = 100


@pytest.mark.postgres
def test_refits_in_a_tight_loop_during_concurrent_ingestion_train_every_reward_once(
        database_url: str, keys: dict[str, str], app: Any) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("real concurrent connections: PostgreSQL only")
    # A service whose refits trail `now` by GRACE, and whose ingestion refuses stamps older than GRACE / 2.
    service = create_app({"DATABASE_URL": database_url, "TESTING": True, "NEXTBEST_ACCESS_LOG": "off",
                          "NEXTBEST_REWARD_GRACE_SECONDS": GRACE, "NEXTBEST_RATE_LIMIT_PER_SECOND": 0,
                          "NEXTBEST_DB_POOL_SIZE": 10})
    api = Api(service.test_client(), keys)
    spec = bandit_spec(attribution_window_seconds=14 * 86400)
    spec["reward"] = {"event": "conversion", "wait_seconds": WAIT}
    api.create_experiment(spec, start=True)
    ids: list[str] = []
    for group in range(4):  # decided over 300 s, so they mature one group after another during ingestion
        ids += [d["assignment_id"] for d in api.assign_batch("nbo", [
            {"subject_id": f"s{group}-{i}"} for i in range(DECISIONS // 4)])]
        clock.advance(100)
    rng = np.random.default_rng(20)
    events = [{"event_id": f"e{k}", "type": "conversion", "assignment_id": ids[int(rng.integers(len(ids)))]}
              for k in range(EVENTS)]
    batches = [events[i:i + BATCH] for i in range(0, EVENTS, BATCH)]
    done = threading.Event()
    errors: list[BaseException] = []
    retried = [0]
    refits: list[str] = []

    def ingest(worker: int) -> None:
        client = Api(service.test_client(), keys)
        try:
            for batch in batches[worker::4]:
                for _ in range(200):
                    stamped = [{**e, "occurred_at": iso(clock.utcnow())} for e in batch]
                    response = client.call("POST", "/v1/events", scope="channel", json={"events": stamped})
                    if response.status_code == 503:  # held its stamp too long: nothing stored, send again
                        retried[0] += 1
                        continue
                    assert response.status_code == 200, response.get_json()
                    break
                else:
                    raise AssertionError("a batch was refused 200 times")
                clock.advance(8)  # simulated time moves with progress, so maturities fall mid-ingestion
                seen = len(refits)  # and refits keep pace: wait (a little) until a loop has run again
                for _ in range(2000):
                    if len(refits) > seen or done.is_set():
                        break
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def refit_loop(name: str) -> None:
        try:
            with db_module.get_db(service).session() as session:
                while not done.is_set():
                    refits.extend(r.status for r in refit_all(session, holder=name, grace_seconds=GRACE))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        loops = [threading.Thread(target=refit_loop, args=(f"loop-{i}",)) for i in range(2)]
        writers = [threading.Thread(target=ingest, args=(w,)) for w in range(4)]
        for thread in loops + writers:
            thread.start()
        for thread in writers:
            thread.join()
        done.set()
        for thread in loops:
            thread.join()
        assert not errors, errors
        clock.advance(WAIT + GRACE + 10)  # every decision has matured, every stamp is committed
        with db_module.get_db(service).session() as session:
            final = refit_all(session, holder="final", grace_seconds=GRACE)
            assert [r.status for r in final] in (["refit"], ["nothing_new"])
            decided = dict(session.execute(select(Assignment.id, Assignment.created_at)).all())
            rewarded, late = set(), set()
            for assignment_id, received_at in session.execute(select(Event.assignment_id, Event.received_at)):
                if received_at <= decided[assignment_id] + timedelta(seconds=WAIT):
                    rewarded.add(assignment_id)
                else:
                    late.add(assignment_id)
            trained = session.scalars(select(AuditEntry.details).where(AuditEntry.action == "refit")).all()
            snapshot = session.scalars(select(PolicySnapshot).order_by(PolicySnapshot.version.desc())).first()
        assert session is not None and snapshot is not None
        assert late - rewarded, "some rewards must arrive after their decision's wait for the test to mean anything"
        assert len(trained) > 3 and refits.count("refit") > 2, Counter(refits)  # the loops really refitted during ingestion
        assert sum(t["new_examples"] for t in trained) == DECISIONS == snapshot.examples  # each decision once
        assert sum(t["reward_sum"] for t in trained) == len(rewarded)  # each reward once, none skipped
        prior = len(snapshot.state["model"]["success"])  # MABWiser starts each arm at one success, one failure
        successes = sum(snapshot.state["model"]["success"]) - prior
        failures = sum(snapshot.state["model"]["failure"]) - prior
        assert (successes, failures) == (len(rewarded), DECISIONS - len(rewarded))
        print(f"\n{len(trained)} refits during ingestion; {retried[0]} batches sent again; "
              f"{len(rewarded)} rewarded decisions trained, {len(late - rewarded)} rewarded only after the wait")
    finally:
        done.set()
        db_module.get_db(service).dispose()
        clock.reset()
