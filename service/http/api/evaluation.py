"""Off-policy evaluation: what candidate policies would have earned on the logged decisions."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Response, current_app, has_app_context, jsonify
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy.orm import Session

from experiments.spec import BanditAllocation

from service.store import db
from service.http.auth import BEARER
from service.clock import utcnow
from service.http.errors import ApiError
from service.config import reward_grace_seconds
from service.jobs.learning import known_decisions, watermark
from service.http.schemas import EvaluateRequest, EvaluateResponse, ExperimentPath
from service.store import experiments as store
from service.http.api.scoping import requires

api = APIBlueprint("evaluation", __name__, url_prefix="/v1", abp_tags=[Tag(name="reports")], abp_security=BEARER)


def evaluate_experiment(session: Session, key: str, request: EvaluateRequest) -> dict[str, Any]:
    """Replay each candidate over the experiment's logged decisions in time order and estimate its value."""
    from bandits.candidates import EvaluationConfig, evaluate_candidates

    experiment = store.get(session, key)
    spec = store.spec_of(experiment)
    # Only matured decisions, as for training: an open decision has had no time to fail yet.
    grace = reward_grace_seconds(current_app.config if has_app_context() else None)
    logged = known_decisions(session, experiment, spec, None, watermark(utcnow(), grace), include_holdout=True)
    if not logged.arms:
        raise ApiError(409, f"no matured decisions yet ({logged.pending} pending: a decision counts once it is "
                            f"reward.wait_seconds = {spec.reward_wait_seconds} s old); nothing to evaluate",
                       code="not_enough_data")
    features = spec.allocation.features if isinstance(spec.allocation, BanditAllocation) else []
    config = EvaluationConfig(refit_every=request.refit_every, max_weight=request.max_weight,
                              confidence=request.confidence)
    try:
        rows = evaluate_candidates(
            request.candidates, [arm.key for arm in spec.arms], logged.arms, logged.rewards, logged.propensities,
            contexts=logged.contexts, order=np.array([d.timestamp() for d in logged.decided_at]),
            features=features, config=config,
        )
    except ValueError as exc:
        raise ApiError(422, str(exc), details=[{"field": "candidates"}]) from None
    return {"experiment": experiment.key, "decisions": len(logged.arms), "pending": logged.pending,
            "reward_wait_seconds": spec.reward_wait_seconds,
            "reward": spec.reward.model_dump(mode="json"), "candidates": [row.to_dict() for row in rows]}


@api.post("/experiments/<key>/evaluate", responses={200: EvaluateResponse})
@requires("evaluation", "analyst")
def evaluate(path: ExperimentPath, body: EvaluateRequest) -> Response:
    """Estimate candidates' reward per decision (IPS, SNIPS, DM, DR) with intervals and effective sample size."""
    return jsonify(evaluate_experiment(db.session(), path.key, body))
