"""One JSON error shape for every failure: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from experiments.history import UnreadableFile

from service.store.db import is_transient

log = logging.getLogger("nextbest")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = []


class ErrorResponse(BaseModel):
    """The one error shape of the API."""

    error: ErrorBody


class ApiError(Exception):
    """An expected failure with its HTTP status and machine-readable code."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or []}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as [{field, message, type}] with dotted field paths."""
    details = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = [str(part) for part in err.get("loc", ())]
        details.append({"field": ".".join(loc) or None, "message": err.get("msg", ""), "type": err.get("type", "")})
    return details


def validation_error_response(exc: ValidationError) -> Response:
    details = validation_details(exc)
    first = details[0] if details else {"field": None, "message": "invalid input"}
    where = f" at {first['field']}" if first.get("field") else ""
    return error_response(422, "validation_error", f"{first['message']}{where}", details)


def register(app: Flask) -> None:
    app.register_error_handler(Exception, response_for)


def response_for(exc: Exception) -> Response:
    """The answer, in the one error shape, to anything a request raised (needs an app context)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, ValidationError):
        return validation_error_response(exc)
    if isinstance(exc, UnreadableFile):
        return error_response(422, "validation_error", str(exc))
    if isinstance(exc, HTTPException):
        if exc.response is not None and exc.response.status_code == 422:
            return exc.response  # already in our shape (validation callback)
        status = exc.code or 500
        return error_response(status, _CODES.get(status, "error"), exc.description or exc.name)
    if is_transient(exc):
        log.warning("transaction rolled back by the database (%s); the client is told to retry",
                    getattr(getattr(exc, "orig", None), "sqlstate", "?"))
        return error_response(503, "database_busy", "the database rolled this request back; send it again",
                              headers={"Retry-After": "1"})
    if isinstance(exc, DBAPIError) and _is_connection_error(exc):
        log.warning("database unavailable: %s", exc.__class__.__name__)
        return error_response(
            503, "database_unavailable", "the database is unavailable; retry shortly", headers={"Retry-After": "5"},
        )
    log.error("unexpected error", exc_info=exc, extra={"request_id": getattr(g, "request_id", None)})
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def _is_connection_error(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig is not None else ""
    return any(
        marker in text
        for marker in ("connection", "could not connect", "server closed", "terminating", "database is locked")
    )
