"""Subjects: erasure (and, as they land, profiles and export)."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from .. import db
from ..app import BEARER
from ..auth import current_caller
from ..erasure import erase_subject, subject_reference
from ..schemas import ErasureResult, SubjectPath
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
