"""Run the app under gunicorn from the CLI (production-like, several workers)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication


class _Server(BaseApplication):
    def __init__(self, options: dict[str, Any]):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from service.wsgi import app

        return app


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def run(host: str, port: int, workers: int = 1, threads: int = 4) -> None:
    import os
    import tempfile

    # Metrics from every worker are aggregated through files in this directory.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="nextbest-metrics-"))
    _Server({
        "child_exit": _child_exit,
        "bind": f"{host}:{port}", "workers": workers, "threads": threads, "worker_class": "gthread",
        "timeout": 60, "graceful_timeout": 30, "accesslog": None, "loglevel": "info",
    }).run()
