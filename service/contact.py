"""Contact policy in the shell: fetch each subject's history in bulk, let the core judge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session


def verdicts(session: Session, runtime: Any, requests: Sequence[Any]) -> dict[int, Any]:
    """Refusals by request index; empty while no contact policy applies."""
    return {}
