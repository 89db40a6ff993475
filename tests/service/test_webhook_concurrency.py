"""Webhook deliveries under concurrent senders: four job runners and three `nextbest promote` runs at
once post each delivery exactly once, with its delivery id in a header."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.store import db as db_module
from service.store.models import Experiment, WebhookDelivery
from service.jobs.webhooks import deliver_due, enqueue
from tests.conftest import spring_email
from tests.service.test_promotion_api import Receiver

NEXTBEST = str(Path(sys.executable).parent / "nextbest")


def test_each_delivery_is_posted_once_by_concurrent_jobs_and_promote_runs(app: Any, api: Any,
                                                                         database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("senders in several processes against one database: PostgreSQL")
    receiver = Receiver(delay=0.05)
    try:
        api.create_experiment(spring_email(contact_policy=None), start=True)
        assert api.call("POST", "/v1/webhooks", scope="admin", json={"url": receiver.url}).status_code == 201
        database = db_module.get_db(app)
        with database.session() as session:
            experiment = session.query(Experiment).filter_by(key="spring-email").one()
            for n in range(10):
                enqueue(session, experiment, "experiment.promoted", {"n": n})
        barrier = threading.Barrier(4)

        def job() -> None:
            barrier.wait(timeout=30)
            with database.session() as session:
                deliver_due(session)

        env = dict(os.environ, DATABASE_URL=database_url)
        runs = [subprocess.Popen([NEXTBEST, "promote"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for _ in range(3)]
        threads = [threading.Thread(target=job) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for run in runs:
            _, err = run.communicate(timeout=120)
            assert run.returncode == 0, err.decode()[-2000:]
        with database.session() as session:
            statuses = Counter(d.status for d in session.query(WebhookDelivery))
        assert statuses == Counter({"delivered": 10})
        deliveries = Counter(headers["X-Nextbest-Delivery"] for headers, _ in receiver.received)
        assert len(deliveries) == 10 and set(deliveries.values()) == {1}
        assert {headers["X-Nextbest-Attempt"] for headers, _ in receiver.received} == {"1"}
    finally:
        receiver.close()
