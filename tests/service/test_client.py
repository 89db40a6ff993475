"""The Python client: a fallback decision when the service is away, typed reports, and the client
installed alone in a clean environment, without the server's dependencies."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from service.client import ApiError, Client, Report, Unavailable
from tests.conftest import spring_email

ROOT = Path(__file__).resolve().parents[2]


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def live_url(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket is closed


def test_an_unreachable_service_gives_the_fallback_decision() -> None:
    nb = Client(f"http://127.0.0.1:{closed_port()}", key="nb_x_y", retries=1, backoff=0.01, timeout=1,
                defaults={"spring-email": {"template": "none"}})
    decision = nb.assign("spring-email", "c-1", channel="email")
    assert decision.no_offer and decision.reason == "unavailable" and decision.assignment_id is None
    assert decision.payload == {"template": "none"} and decision.arm is None
    assert nb.assign("other", "c-1", default_payload={"banner": "house"}).payload == {"banner": "house"}
    batch = nb.assign_batch("spring-email", [{"subject_id": "a"}, {"subject_id": "b"}])
    assert [d.subject_id for d in batch] == ["a", "b"] and all(d.reason == "unavailable" for d in batch)
    strict = Client(nb.base_url, key="nb_x_y", retries=0, timeout=1, fallback=False)
    with pytest.raises(Unavailable):
        strict.assign("spring-email", "c-1")


def test_errors_retrying_cannot_fix_still_raise(live_url: str, keys: dict[str, str]) -> None:
    nb = Client(live_url, key=keys["channel"], retries=0)
    with pytest.raises(ApiError) as raised:
        nb.assign("no-such-experiment", "c-1")
    assert raised.value.status == 404 and not isinstance(raised.value, Unavailable)
    with pytest.raises(ApiError) as refused:
        Client(live_url, key="nb_wrong_key", retries=0).assign("spring-email", "c-1")
    assert refused.value.status == 401


def test_the_report_comes_back_typed(live_url: str, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    channel = Client(live_url, key=keys["channel"])
    decisions = [channel.assign("spring-email", f"c-{i}", channel="email") for i in range(30)]
    assert all(d.assignment_id for d in decisions)
    channel.send_events([channel.event("conversion", assignment_id=d.assignment_id, value=10.0)
                         for d in decisions[:6]])
    report = Client(live_url, key=keys["analyst"]).report("spring-email")
    assert isinstance(report, Report) and report.experiment == "spring-email"
    assert sum(a.decisions for a in report.arms) == 30
    conversion = report.metric("conversion_rate")
    assert sum(round((a.value or 0) * a.n) for a in conversion.arms) == 6
    assert conversion.arm("control").is_control
    assert report.raw["decision_metric"] == report.decision_metric == "conversion_rate"
    with pytest.raises(KeyError, match="no metric"):
        report.metric("nope")


@pytest.mark.slow
def test_the_client_installs_alone_without_the_server(tmp_path: Path) -> None:
    env_dir = tmp_path / "client-only"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    source = tmp_path / "client-source"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(ROOT / "service" / "client", source, ignore=shutil.ignore_patterns("__pycache__"))
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(source)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    code = (
        "import importlib.util, sys\n"
        "from nextbest_client import Client, Decision, Report\n"
        "assert all(importlib.util.find_spec(m) is None for m in ('flask', 'sqlalchemy', 'service', 'numpy'))\n"
        f"nb = Client('http://127.0.0.1:{closed_port()}', key='nb_x_y', retries=0, timeout=1)\n"
        "d = nb.assign('spring-email', 'c-1', default_payload={'t': 'none'})\n"
        "print(type(d).__name__, d.reason, d.payload)\n"
    )
    run = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "Decision unavailable {'t': 'none'}"
