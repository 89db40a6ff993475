"""Analyst dashboard: server-rendered pages (no front-end build, nothing from a CDN)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static", static_url_path="/static")

from service.http.dashboard import value_page, views
