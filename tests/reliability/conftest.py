"""Reliability tests: unique ids for the generated API cases, and strict xfails for known service bugs."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        _unique_node_id(item)
        _mark_known_bugs(item)


def _unique_node_id(item: pytest.Item) -> None:
    """Give each schemathesis case its own id ("...::test_api[admin][GET /healthz]").

    pytest 9.2 builds a Function's node id from its original name, so every operation of a
    schemathesis test would share one id: xdist could not tell them apart, and reports would
    name them all `test_api`.
    """
    if type(item).__name__ == "SchemathesisFunction" and not item.nodeid.endswith(item.name):
        assert item.parent is not None
        item._id = item.parent.id.child(item.name)  # type: ignore[attr-defined]


def _mark_known_bugs(item: pytest.Item) -> None:
    """A schemathesis test module's KNOWN_BUGS maps (scope, "METHOD /path") to the reason of a strict xfail."""
    if type(item).__name__ != "SchemathesisFunction":
        return
    known = getattr(getattr(item, "module", None), "KNOWN_BUGS", None)
    for (scope, label), reason in (known or {}).items():
        if item.name.endswith(f"[{scope}][{label}]"):
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
