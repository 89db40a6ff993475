"""The ceilings for HTTP benchmarks: a bare Flask app doing the least a JSON endpoint can do.

`POST /bare` parses the JSON body and answers a small JSON object; `GET /healthz`
is there for readiness checks. Served by the same gunicorn settings as the
service (`gunicorn ... --pythonpath bench bare_app:app`), so the difference
between the two is what nextbest's own request handling costs.

With `BARE_DSN` set (a libpq connection string to a migrated nextbest database),
`POST /bare/insert` also writes one decision row to `assignments` before it
answers, the cheapest way there is: a statement prepared once on a connection
each thread keeps, run by libpq. It is the floor for any endpoint that stores
a decision before answering.
"""

from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime, timezone

from flask import Flask, jsonify, request

app = Flask(__name__)
_local = threading.local()
_INSERT = (b"INSERT INTO assignments (id, experiment_id, arm_key, subject_id, propensity, policy_version, holdout, "
           b"channel, source, created_at) VALUES ($1, 1, 'control', $2, 0.5, 0, false, 'email', 'live', $3)")


@app.post("/bare")
def bare():  # type: ignore[no-untyped-def]
    body = request.get_json()
    return jsonify(ok=True, subject_id=body.get("subject_id") if isinstance(body, dict) else None)


@app.post("/bare/insert")
def bare_insert():  # type: ignore[no-untyped-def]
    body = request.get_json()
    subject_id = body.get("subject_id") if isinstance(body, dict) else None
    pgconn = _connection()
    result = pgconn.exec_prepared(b"bare_insert", [uuid.uuid4().hex.encode(), str(subject_id).encode(),
                                                  datetime.now(timezone.utc).isoformat().encode()])
    if result.status != 1:  # COMMAND_OK
        return jsonify(error=result.error_message.decode()), 500
    return jsonify(ok=True, subject_id=subject_id)


def _connection():  # type: ignore[no-untyped-def]
    pgconn = getattr(_local, "pgconn", None)
    if pgconn is None:
        import psycopg

        connection = psycopg.connect(os.environ["BARE_DSN"], autocommit=True)
        pgconn = connection.pgconn
        prepared = pgconn.prepare(b"bare_insert", _INSERT)
        if prepared.status != 1:
            raise RuntimeError(prepared.error_message.decode())
        _local.connection, _local.pgconn = connection, pgconn
    return pgconn


@app.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")
