"""The ceiling for HTTP benchmarks: a bare Flask app doing the least a JSON endpoint can do.

`POST /bare` parses the JSON body and answers a small JSON object; `GET /healthz`
is there for readiness checks. Served by the same gunicorn settings as the
service (`gunicorn ... --pythonpath bench bare_app:app`), so the difference
between the two is what nextbest's own request handling costs.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/bare")
def bare():  # type: ignore[no-untyped-def]
    body = request.get_json()
    return jsonify(ok=True, subject_id=body.get("subject_id") if isinstance(body, dict) else None)


@app.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")
