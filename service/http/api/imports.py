"""History import: decisions and outcomes delivered elsewhere, as CSV or JSON lines."""

from __future__ import annotations

from flask import Response, current_app, jsonify, request
from flask_openapi3 import APIBlueprint, Tag

from service.store import db
from service.http.auth import BEARER
from service.http.auth import current_caller
from service.http.errors import ApiError
from service.store.history import import_file
from service.http.schemas import ExperimentPath, ImportQuery, ImportResult
from service.http.api.scoping import requires

api = APIBlueprint("imports", __name__, url_prefix="/v1", abp_tags=[Tag(name="experiments")], abp_security=BEARER)

_FORMATS = {"text/csv": "csv", "application/csv": "csv", "application/x-ndjson": "ndjson",
            "application/jsonl": "ndjson", "application/x-jsonlines": "ndjson"}
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


def uploaded_file() -> tuple[bytes, str]:
    """The request body and its format (csv or ndjson), or 415/422 in the error shape."""
    fmt = _FORMATS.get(request.mimetype)
    if fmt is None:
        raise ApiError(415, f"send text/csv or application/x-ndjson, got {request.mimetype or 'no content type'!r}")
    data = request.get_data(cache=False)
    if not data.strip():
        raise ApiError(422, "the body is empty")
    return data, fmt


@api.post("/experiments/<key>/import", responses={200: ImportResult}, openapi_extensions=_BODY_DOC)
@requires("imports", "analyst")
def import_history(path: ExperimentPath, query: ImportQuery) -> Response:
    """Import logged decisions (one row each) with their outcomes; rejected rows are listed by line."""
    data, fmt = uploaded_file()
    session = db.session()
    result = import_file(session, path.key, data, fmt, query.columns,
                         max_rows=int(current_app.config["NEXTBEST_MAX_IMPORT_ROWS"]), actor=current_caller().name,
                         generate_subject_ids=query.generate_subject_ids)
    session.commit()
    return jsonify(result)
