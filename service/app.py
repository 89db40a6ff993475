"""Application factory: config, database, auth, error shape, blueprints, OpenAPI."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from flask import Flask, Request, Response, g, jsonify, redirect, request
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_openapi3 import Info, OpenAPI

from experiments import validity

from service import config as config_module
from service.store import db as db_module
from service.http import errors, observability
from service.http.auth import check_request
from service.http.guards import MAX_JSON_DEPTH as _MAX_JSON_DEPTH
from service.http.guards import depth as _depth
from service.http.guards import is_migrated, may_be_deep

log = logging.getLogger("nextbest")



def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class ApiRequest(Request):
    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        detail = f": {e}" if e is not None else ""
        raise errors.ApiError(400, f"the body is not valid JSON{detail}", code="malformed_json")


class StrictJSONProvider(DefaultJSONProvider):
    """Standard JSON only: NaN and Infinity are refused on input and never produced. Keys keep the
    order they are built in (as the API documents them), which also spares sorting the keys of a
    100,000-decision batch answer."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_constant", _reject_constant)
        kwargs.setdefault("parse_float", validity.json_float)  # 1e400 would become infinity
        kwargs.setdefault("parse_int", validity.json_int)
        try:
            return json.loads(s, **kwargs)
        except RecursionError:  # nesting deep enough to exhaust the parser: malformed for us
            raise ValueError(f"JSON nested deeper than {_MAX_JSON_DEPTH} levels") from None

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


class DashboardSessionInterface(SecureCookieSessionInterface):
    """Only the dashboard signs in with a cookie; API calls carry a key, so they skip the cookie's
    signing serializer (a noticeable share of a single decision's time)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when the request came over TLS, or always when NEXTBEST_SECURE_COOKIES is on."""
        setting = str(app.config.get("NEXTBEST_SECURE_COOKIES", "auto")).lower()
        if setting in ("on", "1", "true", "yes") or app.config.get("SESSION_COOKIE_SECURE"):
            return True
        return setting == "auto" and request.is_secure

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if not request.path.startswith("/dashboard"):
            return self.make_null_session(app)
        return super().open_session(app, request)




def refuse_bad_text(value: Any, where: str = "") -> None:
    """422 naming the field when a text cannot be stored (NUL, unpaired surrogate: experiments.validity)."""
    bad = validity.first_bad_text(value, where)
    if bad:
        field, problem = bad
        raise errors.ApiError(422, f"{field} {problem}", details=[{"field": field, "message": problem,
                                                                   "type": "text_invalid"}])


def check_url_text(req: Request) -> None:
    """Path parameters and query values follow the text rules of bodies (a NUL or a lone surrogate
    in a subject id would otherwise reach the database)."""
    if req.view_args:
        refuse_bad_text({k: v for k, v in req.view_args.items() if isinstance(v, str)})
    if req.args:
        refuse_bad_text(req.args.to_dict(flat=False))


def create_app(config: dict[str, Any] | None = None) -> OpenAPI:
    """Build the service. `config` overrides environment variables (tests pass DATABASE_URL here)."""
    settings = config_module.load(config)
    app = OpenAPI(
        __name__,
        info=Info(title="nextbest", version="1.0.0", description="Experiments and bandits for next-best-offer"),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        doc_prefix="/docs",
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_model=errors.ErrorResponse,
        validation_error_callback=errors.validation_error_response,
    )
    app.json = StrictJSONProvider(app)
    app.request_class = ApiRequest
    app.session_interface = DashboardSessionInterface()
    app.config.update(settings)
    app.config["MAX_CONTENT_LENGTH"] = int(settings["NEXTBEST_MAX_BODY_BYTES"])
    app.config["SECRET_KEY"] = settings["NEXTBEST_SECRET_KEY"] or secrets.token_hex(32)
    app.config.setdefault("ENDPOINT_SCOPES", {})

    db_module.init_app(app)
    errors.register(app)
    observability.init_app(app)
    _register_request_hooks(app)
    _register_blueprints(app)
    _register_openapi_routes(app)
    from service.jobs import scheduler as jobs

    jobs.start(app)
    _start_key_cache(app)
    if config_module.switched_on(app.config, "NEXTBEST_DIRECT_ASSIGN"):
        from service.http.direct_assign import DirectAssign

        app.wsgi_app = DirectAssign(app, app.wsgi_app)  # type: ignore[method-assign]
    return app


def _start_key_cache(app: OpenAPI) -> None:
    if not config_module.switched_on(app.config, "NEXTBEST_KEY_CACHE") or not str(app.config["DATABASE_URL"]).startswith("postgresql"):
        return
    from service.http import keycache

    cache = keycache.KeyCache()
    app.extensions["nextbest.keycache"] = cache
    db_module.get_db(app).key_listener = keycache.start(app.config["DATABASE_URL"], cache)


# Body limits per route (README, "Limits and validation"): batches and imports may be large, a decision
# is small, everything else is a JSON document of modest size. Answered 413 before the body is read.
_LARGE_BODIES = frozenset({"decisions.assign_batch", "events.send_events", "imports.import_history",
                           "subjects.import_subjects", "value.import_purchases"})
_FILE_BODIES = frozenset({"imports.import_history", "subjects.import_subjects", "value.import_purchases"})


def body_limit(app: Flask, endpoint: str | None) -> int:
    """The most bytes a request body to `endpoint` may hold."""
    overall = int(app.config["MAX_CONTENT_LENGTH"])  # NEXTBEST_MAX_BODY_BYTES
    if endpoint in _LARGE_BODIES:
        return overall
    key = "NEXTBEST_MAX_DECISION_BYTES" if endpoint == "decisions.assign" else "NEXTBEST_MAX_JSON_BYTES"
    return min(int(app.config[key]), overall)


def check_body(app: Flask, req: Request, endpoint: str | None) -> None:
    """413 for a body over its route's limit (by Content-Length, before reading; a chunked body stops being
    read at the limit); 415 for a non-JSON body sent to a JSON route of the API."""
    if endpoint is None or req.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    limit = body_limit(app, endpoint)
    if req.content_length is not None and req.content_length > limit:
        raise errors.ApiError(413, f"the body is {req.content_length} bytes; this route takes at most {limit}",
                              details=[{"limit_bytes": limit}])
    req.max_content_length = limit
    has_body = req.content_length != 0 if req.content_length is not None else "chunked" in req.headers.get(
        "Transfer-Encoding", "").lower()
    if has_body and endpoint not in _FILE_BODIES and req.path.startswith("/v1/") and not req.is_json:
        raise errors.ApiError(415, f"send the body as application/json, got {req.mimetype or 'no content type'!r}")


_UNGUARDED = {"health.healthz", "health.readyz", "openapi_json", "docs", "metrics", "openapi.doc_url", "openapi.openapi",
              "static"}


def _register_request_hooks(app: OpenAPI) -> None:
    scopes: dict[str, str] = app.config["ENDPOINT_SCOPES"]

    @app.before_request
    def _before() -> Response | None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        endpoint = req.endpoint
        g.request_id = observability.request_id(req.headers.get("X-Request-Id"))
        check_body(app, req, endpoint)
        # One decision is one INSERT (or one counter upsert): atomic on its own, no transaction needed.
        g.single_write = endpoint == "decisions.assign"
        if not is_migrated(app) and endpoint not in _UNGUARDED:
            raise errors.ApiError(
                503, "the database is not at the latest migration; run `nextbest db upgrade`",
                code="database_not_migrated", headers={"Retry-After": "30"},
            )
        required = scopes.get(endpoint or "")
        if required is not None:
            caller = check_request(db_module.session, required)
            observability.check_rate_limit(caller.key_id)
        check_url_text(req)
        if req.method in ("POST", "PUT", "PATCH") and req.is_json and req.content_length != 0:
            body = req.get_json(silent=False)  # malformed JSON -> 400 in the error shape
            # Events are judged one by one (flat objects of text and numbers, bad text refused per event), so
            # the envelope needs no walk; everything else is checked for depth and text here.
            if endpoint != "events.send_events":
                raw = req.get_data(cache=True)
                if may_be_deep(raw) and _depth(body, _MAX_JSON_DEPTH) > _MAX_JSON_DEPTH:
                    raise errors.ApiError(400, f"JSON nested deeper than {_MAX_JSON_DEPTH} levels")
                if validity.may_hold_bad_text(raw):
                    refuse_bad_text(body)
        return None

    @app.after_request
    def _after(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


def _register_blueprints(app: OpenAPI) -> None:
    from service.http.api import decisions, evaluation, events, experiments, health, imports, nba, promotions, reports, subjects, value

    for module in (health, experiments, decisions, nba, events, imports, reports, evaluation, promotions, subjects,
                   value):
        app.register_api(module.api)
    from service.http.dashboard import bp as dashboard

    app.register_blueprint(dashboard)
    for endpoint, scope in _declared_scopes().items():
        app.config["ENDPOINT_SCOPES"][endpoint] = scope


def _declared_scopes() -> dict[str, str]:
    from service.http.api import scoping

    return dict(scoping.DECLARED)


def _register_openapi_routes(app: OpenAPI) -> None:
    @app.get("/openapi.json", doc_ui=False)
    def openapi_json() -> Response:
        return jsonify(openapi_document(app))

    @app.get("/metrics", doc_ui=False)
    def metrics() -> Response:
        """Prometheus metrics of every worker (a metrics or admin key)."""
        from service.http.metrics_state import DatabaseState

        check_request(db_module.session, "metrics")
        return observability.metrics_response(DatabaseState(db_module.get_db(app)))

    @app.get("/docs", doc_ui=False)
    def docs() -> Response:
        return redirect("/docs/swagger", code=302)


_ERROR_TEXT = {
    "400": "malformed JSON: not JSON, NaN or Infinity, a number out of float range, nesting deeper than 32",
    "401": "missing or invalid key",
    "403": "wrong scope",
    "404": "not found",
    "409": "wrong lifecycle state, duplicate key or frozen field",
    "413": "body over this route's limit, or a batch over its size",
    "415": "unsupported content type",
    "422": "invalid input (the field is named)",
    "429": "rate limited (Retry-After)",
    "503": "database unavailable or not migrated (Retry-After)",
}
_REPORT_PATH = "/v1/experiments/{key}/report"
# Bodies that name an experiment, which may not exist.
_NAMES_AN_EXPERIMENT = {("post", "/v1/assign"), ("post", "/v1/assign/batch"), ("post", "/v1/webhooks")}


def declared_errors(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    """Every error status the operation can answer (a test checks the routes keep to it)."""
    statuses = ["422", "503"]
    if operation.get("security"):
        statuses += ["401", "403", "429"]
    if method in ("post", "put", "patch", "delete"):
        statuses += ["400", "409", "413", "415"]
    if "{" in path or (method, path) in _NAMES_AN_EXPERIMENT:
        statuses.append("404")
    return sorted(set(statuses))


# OpenAPI links: which value of an answer names what another operation takes (clients and stateful
# testing follow them). (operation, status) -> [(target path, method, parameter, JSON pointer)].
_EXPERIMENT_KEY_TARGETS = [
    ("/v1/experiments/{key}", "get"), ("/v1/experiments/{key}", "patch"), ("/v1/experiments/{key}/start", "post"),
    ("/v1/experiments/{key}/pause", "post"), ("/v1/experiments/{key}/conclude", "post"),
    ("/v1/experiments/{key}/audit", "get"), ("/v1/experiments/{key}/report", "get"),
    ("/v1/experiments/{key}/report/segments", "get"), ("/v1/experiments/{key}/decision", "get"),
    ("/v1/experiments/{key}/promote", "post"), ("/v1/experiments/{key}/rollback", "post"),
    ("/v1/experiments/{key}/import", "post"), ("/v1/experiments/{key}/evaluate", "post"),
]
_SUBJECT_TARGETS = [("/v1/subjects/{subject_id}", "get"), ("/v1/subjects/{subject_id}", "put"),
                    ("/v1/subjects/{subject_id}/export", "get"), ("/v1/subjects/{subject_id}/resubscribe", "post"),
                    ("/v1/subjects/{subject_id}", "delete")]
_LINKS: dict[tuple[str, str, str], list[tuple[str, str, str, str]]] = {
    ("/v1/experiments", "post", "201"): [(p, m, "key", "/key") for p, m in _EXPERIMENT_KEY_TARGETS],
    ("/v1/experiments/{key}/start", "post", "200"): [(p, m, "key", "/key") for p, m in _EXPERIMENT_KEY_TARGETS],
    ("/v1/assign", "post", "200"): [("/v1/assignments/{assignment_id}", "get", "assignment_id", "/assignment_id")]
    + [(p, m, "subject_id", "/subject_id") for p, m in _SUBJECT_TARGETS],
    ("/v1/subjects/{subject_id}", "put", "200"): [(p, m, "subject_id", "/subject_id") for p, m in _SUBJECT_TARGETS],
    ("/v1/webhooks", "post", "201"): [("/v1/webhooks/{webhook_id}", "delete", "webhook_id", "/id")],
}


def _add_links(document: dict[str, Any]) -> None:
    paths = document.get("paths", {})
    for (path, method, status), targets in _LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for target, target_method, parameter, pointer in targets:
            if target_method not in paths.get(target, {}):
                continue
            name = f"{target_method.upper()} {target}".replace("/", "_").replace(" ", "").replace("{", "")\
                .replace("}", "")
            ref = "#/paths/" + target.replace("~", "~0").replace("/", "~1") + "/" + target_method
            links[name] = {"operationRef": ref, "parameters": {parameter: f"$response.body#{pointer}"}}


def openapi_document(app: OpenAPI) -> dict[str, Any]:
    """The generated OpenAPI document, with every error status each route can answer in our error shape,
    the Retry-After of 429 and 503, and the CSV and HTML forms of the report."""
    cached = app.extensions.get("nextbest.openapi")
    if cached is not None:
        return cached
    document = json.loads(json.dumps(app.api_doc))
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    retry_after = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    for path, item in document.get("paths", {}).items():
        if path == "/healthz":
            continue  # liveness: answered without the database, key or body
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for status in declared_errors(path, method, operation):
                if path == "/readyz" and status != "503":
                    continue
                answer: dict[str, Any] = {"description": _ERROR_TEXT[status],
                                          "content": {"application/json": {"schema": ref}}}
                if status in ("429", "503"):
                    answer["headers"] = retry_after
                if path == "/readyz" and status == "503":
                    continue  # the generated 503 (not ready, in the Health shape) stays
                responses[status] = answer
            if path == _REPORT_PATH and method == "get":
                content = responses["200"].setdefault("content", {})
                content["text/csv"] = {"schema": {"type": "string"}}
                content["text/html"] = {"schema": {"type": "string"}}
    _add_links(document)
    app.extensions["nextbest.openapi"] = document
    return document
