"""`nextbest serve --background` and `nextbest stop`: a server a tour or a script can start and wait for.

The server runs as `nextbest serve` in a session of its own (so it outlives the shell
command that started it), and the starter returns only once `/readyz` answers: the
schema is migrated and the database reachable, so the next command can use the API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from service.http.errors import ApiError


def start_in_background(args: list[str], host: str, port: int, pid_file: Path, log_file: Path,
                        timeout: float = 120.0) -> int:
    """Start `nextbest <args>` detached; return its pid once it is ready, or raise with its log's tail."""
    running = _running_pid(pid_file)
    if running is not None:
        raise ApiError(409, f"a server is already running (pid {running}, from {pid_file}); stop it with `nextbest stop`")
    with log_file.open("ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "service.cli", *args], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log, start_new_session=True)
    pid_file.write_text(f"{server.pid}\n")
    probe = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise ApiError(503, f"the server exited with code {server.returncode}: {_tail(log_file)}")
        try:
            with urllib.request.urlopen(probe, timeout=5) as answer:
                if answer.status == 200:
                    return server.pid
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    stop_background(pid_file)
    raise ApiError(503, f"the server did not become ready within {timeout:.0f} s: {_tail(log_file)}")


def stop_background(pid_file: Path, timeout: float = 30.0) -> int | None:
    """Stop the server named in `pid_file` (TERM: gunicorn finishes in-flight requests); its pid, or None."""
    pid = _running_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return None
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return pid


def _running_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our own child: reap it, or it lingers as a zombie
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(log_file: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log_file.read_text(errors="replace").strip().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
