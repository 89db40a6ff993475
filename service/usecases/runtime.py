"""What a worker needs to decide fast: experiments and policy snapshots, cached and refreshed.

Workers hold no state that matters: each entry is rebuilt from the database
when the experiment's revision or its latest policy snapshot changes, checked
at most every NEXTBEST_POLICY_REFRESH_SECONDS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from experiments.bucketing import Splitter, winner_split
from experiments.spec import BanditAllocation, ExperimentSpec

from service.http.errors import ApiError
from service.store.models import Experiment, PolicySnapshot
from service.store.experiments import spec_of


@dataclass
class ExperimentRuntime:
    id: int
    key: str
    status: str
    revision: int
    spec: ExperimentSpec
    salt: str
    winner: str | None
    holdback: float
    payloads: dict[str, dict[str, Any]]
    enabled_arms: list[str]
    splitter: Splitter | None  # fixed split, or the winner's split after promotion
    policy: Any = None  # bandits.Policy for a running bandit
    policy_version: int = 0
    checked_at: float = field(default_factory=time.monotonic)

    @property
    def control(self) -> str:
        return self.spec.control_arm

    @property
    def is_bandit(self) -> bool:
        return isinstance(self.spec.allocation, BanditAllocation) and self.winner is None


def _latest_snapshot_version(session: Session, experiment_id: int) -> int:
    return session.scalar(
        select(func.coalesce(func.max(PolicySnapshot.version), 0)).where(PolicySnapshot.experiment_id == experiment_id)
    ) or 0


def build_runtime(session: Session, experiment: Experiment) -> ExperimentRuntime:
    spec = spec_of(experiment)
    enabled = [arm.key for arm in spec.arms if arm.enabled]
    payloads = {arm.key: dict(arm.payload) for arm in spec.arms}
    runtime = ExperimentRuntime(
        id=experiment.id, key=experiment.key, status=experiment.status, revision=experiment.revision, spec=spec,
        salt=experiment.salt, winner=experiment.winner_arm, holdback=experiment.holdback, payloads=payloads,
        enabled_arms=enabled, splitter=None,
    )
    if experiment.winner_arm is not None:
        runtime.splitter = Splitter(winner_split(experiment.winner_arm, spec.control_arm, experiment.holdback))
    elif isinstance(spec.allocation, BanditAllocation):
        _load_policy(session, runtime)
    else:
        runtime.splitter = Splitter(spec.fixed_weights())
    return runtime


def _load_policy(session: Session, runtime: ExperimentRuntime) -> None:
    from bandits import Policy

    allocation = runtime.spec.allocation
    assert isinstance(allocation, BanditAllocation)
    snapshot = session.scalars(
        select(PolicySnapshot)
        .where(PolicySnapshot.experiment_id == runtime.id)
        .order_by(PolicySnapshot.version.desc())
        .limit(1)
    ).first()
    if snapshot is None:
        runtime.policy = Policy.cold(allocation.policy, allocation.features, runtime.enabled_arms,
                                     seed=int(runtime.salt[:8], 16))
        runtime.policy_version = 0
    else:
        policy = Policy.from_state(allocation.policy, allocation.features, snapshot.state)
        if list(policy.arms) != runtime.enabled_arms:
            policy = policy.with_arms(runtime.enabled_arms)
        runtime.policy = policy
        runtime.policy_version = snapshot.version


class RuntimeCache:
    """Per-worker cache of ExperimentRuntime by key."""

    def __init__(self, refresh_seconds: float):
        self.refresh_seconds = refresh_seconds
        self._entries: dict[str, ExperimentRuntime] = {}
        self._lock = threading.Lock()

    def get(self, open_session: Callable[[], Session], key: str) -> ExperimentRuntime:
        """The runtime for `key`; the database is asked (through `open_session`) only when the
        entry is missing or older than the refresh interval."""
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and now - entry.checked_at < self.refresh_seconds:
            return entry
        session = open_session()
        row = session.execute(
            select(Experiment.id, Experiment.revision).where(Experiment.key == key)
        ).first()
        if row is None:
            self._entries.pop(key, None)
            raise ApiError(404, f"no experiment with key {key!r}")
        if entry is not None and entry.id == row.id and entry.revision == row.revision:
            if not entry.is_bandit or _latest_snapshot_version(session, entry.id) == entry.policy_version:
                entry.checked_at = now
                return entry
        experiment = session.get(Experiment, row.id)
        assert experiment is not None
        fresh = build_runtime(session, experiment)
        with self._lock:
            self._entries[key] = fresh
        return fresh

    def invalidate(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)
