"""Run every benchmark in turn and collect their tables (`make bench`).

Each script runs as its own process; its tables (stdout) are shown as they
come and gathered, its progress (stderr) is passed through. At the end all
tables are printed together and written, as Markdown, to bench/results/latest.md
(ignored by git) for pasting into the README. Timings are reported, never
asserted: the exit status is non-zero only when a script fails to run.

Run: .venv/bin/python bench/run_all.py [NAME ...]   (names: assign ingest report clv replay, then any other
bench/*.py by its name without `_bench`, e.g. ope)
"""

from __future__ import annotations

import ast
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

# (name, script, title, time limit in seconds); scripts that are not there are skipped. Any other
# bench/*.py (not starting with "_") runs after these, titled by its docstring's first line.
NOT_BENCHMARKS = {"run_all.py", "bare_app.py", "loadtest.py", "faulttest.py", "multihost.py"}  # `make loadtest` runs these
OTHER_LIMIT = 240
SCRIPTS = [
    ("assign", "assign_bench.py", "Decisions: POST /v1/assign and /v1/assign/batch", 240),
    ("ingest", "ingest_bench.py", "Outcomes: POST /v1/events", 240),
    ("report", "report_bench.py", "Reports: GET /v1/experiments/{key}/report at 1M and 20M decisions (3 events each)", 5400),
    ("clv", "clv_bench.py", "Lifetime value models (CDNOW and simulated customers)", 240),
    ("replay", "replay_hillstrom.py", "Offline replay of bandit policies on Hillstrom", 240),
]


def _pump(stream: object, sink: object, keep: list[str] | deque[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sink.write(line)  # type: ignore[attr-defined]
        sink.flush()  # type: ignore[attr-defined]
        keep.append(line)


def run_script(script: Path, limit: float) -> tuple[str, str, float, str | None]:
    """(stdout, stderr tail, seconds, failure or None)."""
    t0 = time.monotonic()
    process = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, bufsize=1,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out: list[str] = []
    err: deque[str] = deque(maxlen=40)
    pumps = [threading.Thread(target=_pump, args=(process.stdout, sys.stdout, out), daemon=True),
             threading.Thread(target=_pump, args=(process.stderr, sys.stderr, err), daemon=True)]
    for p in pumps:
        p.start()
    failure = None
    try:
        process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        failure = f"stopped after {limit:.0f} s (time limit)"
        process.send_signal(signal.SIGTERM)  # the script cleans up its servers and databases
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        raise
    for p in pumps:
        p.join(timeout=5)
    if failure is None and process.returncode != 0:
        failure = f"exited with status {process.returncode}"
    return "".join(out), "".join(err), time.monotonic() - t0, failure


def is_markdown(text: str) -> bool:
    lines = text.splitlines()
    return any(line.startswith("|") for line in lines) and any(line.startswith("|-") for line in lines)


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        return done.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def all_scripts() -> list[tuple[str, str, str, int]]:
    """The known benchmarks, then any other script in bench/."""
    known = {filename for _, filename, *_ in SCRIPTS}
    found = list(SCRIPTS)
    for path in sorted(BENCH.glob("*.py")):
        if path.name in known or path.name in NOT_BENCHMARKS or path.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        except SyntaxError:
            doc = ""
        title = (doc.strip().splitlines() or [path.stem])[0].rstrip(".")
        found.append((path.stem.removesuffix("_bench"), path.name, title, OTHER_LIMIT))
    return found


def main() -> int:
    scripts = all_scripts()
    wanted = set(sys.argv[1:])
    unknown = wanted - {name for name, *_ in scripts}
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from "
              f"{', '.join(name for name, *_ in scripts)}", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    sections: list[tuple[str, str, str, float, str | None]] = []
    for name, filename, title, limit in scripts:
        if wanted and name not in wanted:
            continue
        script = BENCH / filename
        if not script.exists():
            print(f"\n== {title}: skipped ({filename} is not there)", file=sys.stderr)
            continue
        print(f"\n== {title} ({filename})", file=sys.stderr, flush=True)
        out, err, seconds, failure = run_script(script, limit)
        if failure:
            out += f"\n**{filename} {failure}.** Last lines of its log:\n\n```text\n{err.strip()}\n```\n"
        sections.append((title, filename, out, seconds, failure))

    load1, load5, load15 = os.getloadavg()
    header = [
        "# nextbest benchmarks",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, commit {git_commit()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average at the end {load1:.1f} / {load5:.1f} / {load15:.1f} "
        "(1 / 5 / 15 min). Speed targets are ratios measured within one run; nothing here is asserted.",
    ]
    body = []
    for title, filename, out, seconds, failure in sections:
        body.append(f"\n## {title}\n\n`bench/{filename}`, {seconds:.0f} s" + (f", **{failure}**" if failure else ""))
        text = out.strip()
        if not text:
            body.append("\n(no output)")
        elif is_markdown(text):
            body.append("\n" + text)
        else:
            body.append("\n```text\n" + text + "\n```")
    document = "\n".join(header + body) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(document)

    print("\n" + "=" * 100 + "\n")
    print(document)
    print(f"written to {(RESULTS / 'latest.md').relative_to(ROOT)}", file=sys.stderr)
    return 1 if any(failure for *_, failure in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
