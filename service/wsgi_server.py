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
        from .wsgi import app

        return app


def run(host: str, port: int, workers: int = 1, threads: int = 4) -> None:
    _Server({
        "bind": f"{host}:{port}", "workers": workers, "threads": threads, "worker_class": "gthread",
        "timeout": 60, "graceful_timeout": 30, "accesslog": None, "loglevel": "info",
    }).run()
