"""Subjects: erasure (and, as they land, profiles and export)."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from service.store import db
from service.http.auth import BEARER
from service.http.auth import current_caller
from service.usecases.erasure import erase_subject, subject_reference
from service.usecases.contact import resubscribe
from service.usecases import profiles
from service.http.schemas import AssignmentExplanation, AssignmentPath, ErasureResult, ResubscribeBody, ResubscribeResult, SubjectExport, SubjectImportResult, SubjectIn, SubjectOut, SubjectPath
from service.http.api.imports import _BODY_DOC, uploaded_file
from service.store.experiments import audit
from service.http.api.scoping import requires

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


@api.put("/subjects/<subject_id>", responses={200: SubjectOut})
@requires("subjects", "channel_or_analyst")
def put_subject(path: SubjectPath, body: SubjectIn) -> Response:
    """Create or update what the caller knows about a subject (time zone, value, loyalty, consent, attributes)."""
    session = db.session()
    profiles.upsert(session, path.subject_id, body.model_dump(exclude_unset=True))
    session.commit()
    return jsonify(profiles.profile(session, path.subject_id))


@api.get("/subjects/<subject_id>", responses={200: SubjectOut})
@requires("subjects", "analyst")
def get_subject(path: SubjectPath) -> Response:
    """The 360-degree view: supplied attributes next to engagement, value, churn risk and best channel."""
    return jsonify(profiles.profile(db.session(), path.subject_id))


@api.get("/subjects/<subject_id>/export", responses={200: SubjectExport})
@requires("subjects", "admin")
def export_subject(path: SubjectPath) -> Response:
    """Everything stored about the subject (access request), in the documented export format."""
    session = db.session()
    body = profiles.export(session, path.subject_id)
    audit(session, None, current_caller().name, "export_subject", subject_ref=subject_reference(path.subject_id))
    session.commit()
    return jsonify(body)


@api.post("/subjects/import", responses={200: SubjectImportResult}, openapi_extensions=_BODY_DOC)
@requires("subjects", "channel_or_analyst")
def import_subjects() -> Response:
    """Bulk upsert of profiles from CSV or JSON lines; rejected rows are listed by line."""
    data, fmt = uploaded_file()
    session = db.session()
    result = profiles.import_profiles(session, data, fmt)
    session.commit()
    return jsonify(result)


@api.get("/assignments/<assignment_id>", responses={200: AssignmentExplanation})
@requires("subjects", "analyst")
def explain_assignment(path: AssignmentPath) -> Response:
    """Why this decision: experiment, policy and version, features and values, propensity, contact rules."""
    from service.usecases.explain import explain

    return jsonify(explain(db.session(), path.assignment_id))
