"""The README's five-minute tour, run as written: every shell block of the section, in order,
against a fresh database and a real `make serve`; only the port is changed to a free one."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HILLSTROM = ROOT.parent / "shared" / "data" / "hillstrom.csv"


def tour_blocks(readme: str) -> list[str]:
    """The ```sh blocks of the "A five-minute tour" section, in order."""
    section = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_tour_has_the_steps_it_promises() -> None:
    blocks = tour_blocks((ROOT / "README.md").read_text())
    script = "\n".join(blocks)
    assert len(blocks) >= 4 and script.startswith("export DATABASE_URL=")
    for step in ("make serve", "keys create", "/v1/experiments", "/v1/assign", "/v1/events", "/report",
                 "/decision", "experiments create", "nextbest import", "make stop"):
        assert step in script, step


@pytest.mark.skipif(not HILLSTROM.exists(), reason="the Hillstrom file is in ../shared/data")
def test_the_readme_tour_runs_as_written() -> None:
    port = _free_port()
    script = "\n".join(tour_blocks((ROOT / "README.md").read_text())).replace("localhost:8000", f"localhost:{port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTBEST_", "PROMETHEUS_", "DATABASE_URL"))}
    env.update(PORT=str(port), NEXTBEST_ACCESS_LOG="off")
    try:
        run = subprocess.run(["bash", "-e", "-u", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)
    finally:
        subprocess.run([str(ROOT / ".venv" / "bin" / "nextbest"), "stop"], cwd=ROOT, capture_output=True, timeout=60)
        for leftover in ("tour.sqlite3", "tour.sqlite3-wal", "tour.sqlite3-shm", "nextbest.log", "spring.json",
                         "imported.json"):
            (ROOT / leftover).unlink(missing_ok=True)
    out = run.stdout
    assert run.returncode == 0, f"{out}\n{run.stderr}"
    assert f"serving on http://127.0.0.1:{port}" in out
    lines = out.splitlines()
    assert "spring-email draft ['start']" in lines
    assert any(line.startswith("spring-email running 20") for line in lines)
    assert '"no_offer":false' in out and '"propensity":0.333333' in out
    assert '"accepted":1' in out and '"rejected":0' in out
    assert "arm,metric,is_control,n,successes,value,ci_low,ci_high" in lines
    assert sum(line.split(",")[1:2] == ["conversion_rate"] for line in lines) == 3
    assert "wait" in lines
    assert "created experiment 'hillstrom' (draft); start it with `nextbest experiments start hillstrom`" in lines
    assert '  "imported": 64000,' in lines and '  "rejected_count": 0,' in lines
    clicks = {line.split(",")[0]: line.split(",") for line in lines if line.split(",")[1:2] == ["click_rate"]}
    # Hillstrom's Mens e-mail group: 21,307 customers, 3,894 visits (a visit rate of 18.28%)
    assert clicks["mens"][3:5] == ["21307", "3894"]
    assert "stopped the server" in out
    assert "storing decisions" in run.stderr
    assert "Traceback" not in run.stderr
