"""Next best action: one call picks the offer, the channel and the moment for a subject."""

from __future__ import annotations

from typing import Annotated, Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from service.store import db
from service.http.auth import BEARER
from service.usecases.nba import next_best_action
from service.http.observability import count_decisions
from service.http.api.decisions import runtime_cache
from service.http.api.scoping import requires

api = APIBlueprint("nba", __name__, url_prefix="/v1", abp_tags=[Tag(name="decisions")], abp_security=BEARER)

Channel = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class NextBestActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_id: str = Field(min_length=1, max_length=200)
    channels: list[Annotated[str, Channel]] | None = Field(
        default=None, min_length=1, max_length=20, description="channels allowed (default: NEXTBEST_CHANNELS)")
    context: dict[str, Any] | None = None
    costs: dict[str, Annotated[float, Field(ge=0, le=1e9)]] | None = Field(default=None, description="contact cost per channel, in value units")
    exploration: float | None = Field(default=None, ge=0, le=1,
                                      description="share of choices spread over every offer worth contacting")
    dry_run: bool = Field(default=False, description="score and choose, but store nothing")


class NextBestActionResponse(BaseModel):
    assignment_id: str | None
    experiment: str | None
    arm: str | None
    channel: str | None
    send_at: str | None
    no_offer: bool
    reason: str | None
    runners_up: list[dict[str, Any]]
    excluded: list[dict[str, Any]]


@api.post("/next-best-action", responses={200: NextBestActionResponse})
@requires("nba", "channel")
def decide_next_best_action(body: NextBestActionRequest) -> Response:
    """Across every running offer the subject is eligible for: the best (offer, channel, moment), or no offer."""
    session = db.session()
    answer = next_best_action(session, runtime_cache(), db.session, body.subject_id, body.channels, body.context,
                              dry_run=body.dry_run, costs=body.costs, exploration=body.exploration)
    session.commit()
    if not body.dry_run:
        count_decisions(answer["experiment"] or "none", "no_offer" if answer["no_offer"] else "logged")
    return jsonify(answer)
