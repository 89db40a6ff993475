"""The nextbest service: the Flask shell around the experiments, bandits and reports core."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `nextbest serve` can set PROMETHEUS_MULTIPROC_DIR before anything
    # imports prometheus_client (which fixes its storage at import): the CLI needs no app to start.
    if name == "create_app":
        from service.app import create_app

        return create_app
    raise AttributeError(f"module 'service' has no attribute {name!r}")
