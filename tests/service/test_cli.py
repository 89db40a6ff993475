"""The `nextbest` command line as an operator meets it: experiments, keys, schema, and failures
that are one line with a distinct exit code, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from service.store import db as db_module
from service.cli import EXIT_CODES, main
from service.clock import utcnow
from service.store.models import ApiKey
from tests.conftest import spring_email


def nextbest(database_url: str, *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env={"DATABASE_URL": database_url}, input=input)


def test_version(database_url: str) -> None:
    result = nextbest(database_url, "--version")
    assert result.exit_code == 0 and result.output.startswith("nextbest, version ")


def test_experiment_lifecycle_from_a_spec_file(app: Any, database_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "spring.json"
    spec.write_text(json.dumps(spring_email()))
    created = nextbest(database_url, "experiments", "create", "-f", str(spec))
    assert created.exit_code == 0, created.output
    assert "spring-email" in created.output and "draft" in created.output
    listed = nextbest(database_url, "experiments", "list")
    assert listed.output.split("\t")[:3] == ["spring-email", "draft", "fixed"]
    assert nextbest(database_url, "experiments", "start", "spring-email").output.strip() == "spring-email: running"
    assert nextbest(database_url, "experiments", "pause", "spring-email").output.strip() == "spring-email: paused"
    assert nextbest(database_url, "experiments", "list", "--status", "running").output == ""
    concluded = nextbest(database_url, "experiments", "conclude", "spring-email", "--winner", "mens")
    assert concluded.exit_code == 0, concluded.output
    shown = json.loads(nextbest(database_url, "experiments", "show", "spring-email").output)
    assert shown["status"] == "concluded" and shown["winner"] == "mens"
    again = nextbest(database_url, "experiments", "create", "-f", str(spec))
    assert again.exit_code == EXIT_CODES["invalid"] and "already exists" in again.output


def test_failures_are_one_line_with_their_exit_code(app: Any, database_url: str, tmp_path: Path) -> None:
    missing = nextbest(database_url, "experiments", "show", "no-such")
    assert missing.exit_code == EXIT_CODES["not_found"]
    assert missing.output.strip() == "Error: no experiment with key 'no-such'"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**spring_email(), "arms": []}))
    invalid = nextbest(database_url, "experiments", "create", "-f", str(bad))
    assert invalid.exit_code == EXIT_CODES["invalid"] and "arms" in invalid.output
    wrong_state = nextbest(database_url, "experiments", "pause", "no-such")
    assert wrong_state.exit_code == EXIT_CODES["not_found"]
    for result in (missing, invalid, wrong_state):
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    usage = nextbest(database_url, "experiments", "show")
    assert usage.exit_code == EXIT_CODES["usage"]


def test_an_unreachable_database_is_one_line_and_exit_5() -> None:
    result = nextbest("postgresql://nobody@127.0.0.1:1/nothing", "experiments", "list")
    assert result.exit_code == EXIT_CODES["database_unavailable"], result.output
    assert "database cannot be reached" in result.output and "Traceback" not in result.output
    debug = nextbest("postgresql://nobody@127.0.0.1:1/nothing", "--debug", "experiments", "list")
    assert debug.exit_code == EXIT_CODES["database_unavailable"]


def test_key_names_are_unique_and_revocation_hits_one_key(app: Any, database_url: str) -> None:
    first = nextbest(database_url, "keys", "create", "--scope", "channel", "--name", "esp")
    assert first.exit_code == 0 and first.output.strip().splitlines()[-1].startswith("nb_")
    twin = nextbest(database_url, "keys", "create", "--scope", "analyst", "--name", "esp")
    assert twin.exit_code == EXIT_CODES["invalid"] and "already exists" in twin.output
    metrics = nextbest(database_url, "keys", "create", "--scope", "metrics", "--name", "prometheus")
    assert metrics.exit_code == 0
    with db_module.get_db(app).session() as session:  # two keys made before names were unique
        for prefix in ("aaaa", "bbbb"):
            session.add(ApiKey(name="me", scope="channel", prefix=prefix, secret_hash="x" * 64,
                               created_at=utcnow()))
    ambiguous = nextbest(database_url, "keys", "revoke", "me")
    assert ambiguous.exit_code == EXIT_CODES["invalid"] and "revoke one by its id" in ambiguous.output
    with db_module.get_db(app).session() as session:
        ids = session.scalars(select(ApiKey.id).where(ApiKey.name == "me").order_by(ApiKey.id)).all()
    revoked = nextbest(database_url, "keys", "revoke", str(ids[0]))
    assert revoked.exit_code == 0 and f"id {ids[0]}" in revoked.output
    listed = nextbest(database_url, "keys", "list").output.splitlines()
    states = {line.split("\t")[0]: line.split("\t")[-1] for line in listed}
    assert states[str(ids[0])].startswith("revoked") and states[str(ids[1])] == "active"
    assert nextbest(database_url, "keys", "revoke", "nobody").exit_code == EXIT_CODES["not_found"]


def test_db_current_and_downgrade(app: Any, database_url: str) -> None:
    head = db_module.head_revision()
    assert nextbest(database_url, "db", "current").output.strip() == f"current {head}, latest {head}: up to date"
    down = nextbest(database_url, "db", "downgrade", "-1")
    assert down.exit_code == 0, down.output
    assert "run `nextbest db upgrade`" in nextbest(database_url, "db", "current").output
    assert nextbest(database_url, "experiments", "list").exit_code == EXIT_CODES["database_unavailable"]
    assert nextbest(database_url, "db", "upgrade").exit_code == 0
    assert nextbest(database_url, "experiments", "list").exit_code == 0


def test_import_shows_progress_on_stderr(app: Any, database_url: str, tmp_path: Path) -> None:
    assert nextbest(database_url, "experiments", "create", "-f", _spec_file(tmp_path)).exit_code == 0
    rows = tmp_path / "history.csv"
    rows.write_text("subject_id,arm,click\n" + "".join(f"s-{i},mens,{i % 2}\n" for i in range(50)))
    result = CliRunner().invoke(main, ["import", "spring-email", str(rows)],
                                                env={"DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["imported"] == 50
    assert "storing decisions" in result.stderr


def _spec_file(tmp_path: Path) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spring_email()))
    return str(path)


@pytest.fixture(autouse=True)
def _no_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTBEST_JOBS", "off")


def test_revoke_by_a_prefix_that_is_all_digits(app: Any, database_url: str) -> None:
    with db_module.get_db(app).session() as session:
        session.add(ApiKey(name="digits", scope="channel", prefix="123456789012", secret_hash="x" * 64,
                           created_at=utcnow()))
    revoked = nextbest(database_url, "keys", "revoke", "123456789012")
    assert revoked.exit_code == 0, revoked.output
    assert "revoked key 'digits'" in revoked.output
