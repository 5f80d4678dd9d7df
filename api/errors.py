"""The one place that maps errors to HTTP, and the one JSON error shape every answer uses.

    {"message": "result 7 is already completed ...",
     "error": {"status": 409, "code": "conflict", "message": "result 7 is already completed ..."}}

The top-level `message` repeats the error's: the origin's send-result Action prints
`parsed.message` (docs/writing-checks.md). Validation errors add
`"details": [{"key": ..., "message": ...}, ...]` to `error`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from reconciler.errors import (
    CatalogError,
    CatalogFileError,
    ConfigError,
    Conflict,
    DispatchError,
    InvalidInput,
    NotAllowed,
    NotFound,
    SourceError,
    SyncRefused,
    WritebackError,
)

log = logging.getLogger("catalog.api")

# Reconciler errors -> HTTP status. The most specific class wins (looked up along the MRO).
STATUS_BY_ERROR: dict[type[CatalogError], int] = {
    NotFound: 404,
    Conflict: 409,
    NotAllowed: 403,
    SyncRefused: 409,
    InvalidInput: 422,
    CatalogFileError: 422,
    ConfigError: 503,      # the server is not configured for this (e.g. no webhook secret)
    SourceError: 502,      # the catalog repository could not be reached
    DispatchError: 502,    # GitHub (or the local dispatcher) failed
    WritebackError: 502,
    CatalogError: 400,
}

# Stable machine-readable codes, so clients need not parse messages.
CODE_BY_STATUS = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",  # "timed_out" for an answer after its check's timeout (errors.TooLate)
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    502: "upstream_error",
    503: "unavailable",
}


def error_body(status: int, message: str, *, code: str | None = None, details: list | None = None) -> dict:
    """The JSON error shape, as a dict."""
    error: dict = {"status": status, "code": code or CODE_BY_STATUS.get(status, _phrase(status)), "message": message}
    if details:
        error["details"] = details
    return {"message": message, "error": error}


def error_response(status: int, message: str, *, code: str | None = None, details: list | None = None,
                   headers: dict | None = None) -> Response:
    return Response(error_body(status, message, code=code, details=details), status_code=status,
                    media_type=MediaType.JSON, headers=headers)


def status_for(error: CatalogError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def catalog_error_handler(request: Request, error: CatalogError) -> Response:
    return error_response(status_for(error), str(error), code=error.code)


def http_error_handler(request: Request, error: HTTPException) -> Response:
    details = None
    if isinstance(error, ValidationException) and isinstance(error.extra, list):
        details = [_detail(item) for item in error.extra]
    message = error.detail or _phrase(error.status_code)
    return error_response(error.status_code, message, details=details, headers=error.headers)


def internal_error_handler(request: Request, error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error; the server log has the details")


EXCEPTION_HANDLERS = {
    CatalogError: catalog_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}


def _detail(item: object) -> dict:
    if isinstance(item, dict):
        return {"key": item.get("key"), "message": item.get("message")}
    return {"key": None, "message": str(item)}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return "error"
