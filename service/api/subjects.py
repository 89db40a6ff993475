"""Subjects: erasure (and, as they land, profiles and export)."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from .. import db
from ..app import BEARER
from ..auth import current_caller
from ..erasure import erase_subject, subject_reference
from ..contact import resubscribe
from ..schemas import ErasureResult, ResubscribeBody, ResubscribeResult, SubjectPath
from ..store.experiments import audit
from .scoping import requires

api = APIBlueprint("subjects", __name__, url_prefix="/v1", abp_tags=[Tag(name="subjects")], abp_security=BEARER)


@api.delete("/subjects/<subject_id>", responses={200: ErasureResult})
@requires("subjects", "admin")
def erase(path: SubjectPath) -> Response:
    """Erase a subject everywhere; the audit log keeps only a pseudonym and the counts."""
    session = db.session()
    counts = erase_subject(session, path.subject_id, current_caller().name)
    session.commit()
    return jsonify(subject_ref=subject_reference(path.subject_id), erased=counts)


@api.post("/subjects/<subject_id>/resubscribe", responses={200: ResubscribeResult})
@requires("subjects", "channel")
def resubscribe_subject(path: SubjectPath, body: ResubscribeBody) -> Response:
    """Lift the suppression an unsubscribe put on a channel (the subject opted in again)."""
    session = db.session()
    lifted = resubscribe(session, path.subject_id, body.channel)
    if lifted:
        audit(session, None, current_caller().name, "resubscribe", channel=body.channel,
              subject_ref=subject_reference(path.subject_id))
    session.commit()
    return jsonify(subject_id=path.subject_id, channel=body.channel, resubscribed=lifted)
