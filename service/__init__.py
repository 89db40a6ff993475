"""The nextbest service: the Flask shell around the experiments, bandits and reports core."""

from .app import create_app

__all__ = ["create_app"]
