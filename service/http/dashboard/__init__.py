"""Analyst dashboard: server-rendered pages (no front-end build, nothing from a CDN)."""

from __future__ import annotations

from service.http.dashboard import subjects, value_page, views  # noqa: F401  (they register the pages on bp)
from service.http.dashboard.blueprint import bp

__all__ = ["bp"]
