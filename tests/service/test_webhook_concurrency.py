"""Webhook deliveries under concurrent senders: four job runners and three `nextbest promote` runs at
once post each delivery exactly once, with its delivery id in a header."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service.store import db as db_module
from service.store.models import Experiment, WebhookDelivery
from service.jobs.webhooks import deliver_due, enqueue
from tests.conftest import spring_email

NEXTBEST = str(Path(sys.executable).parent / "nextbest")


class SlowReceiver:
    """Counts POSTs per delivery id; answers slowly, so concurrent senders overlap."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()
        self.attempts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.deliveries[self.headers["X-Nextbest-Delivery"]] += 1
                outer.attempts.append(self.headers["X-Nextbest-Attempt"])
                time.sleep(0.05)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def test_each_delivery_is_posted_once_by_concurrent_jobs_and_promote_runs(app: Any, api: Any,
                                                                         database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("senders in several processes against one database: PostgreSQL")
    receiver = SlowReceiver()
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
        assert len(receiver.deliveries) == 10 and set(receiver.deliveries.values()) == {1}
        assert set(receiver.attempts) == {"1"}
    finally:
        receiver.server.shutdown()
