"""Every failure under `/fhir` becomes an OperationOutcome (`application/fhir+json`) with the
right status: a refusal (`FhirError`), a malformed query (FastAPI's RequestValidationError), a
route that does not exist (404) or a method it does not take (405), and any unexpected
exception (500, a generic message, the traceback only in the log). Never an HTML page.

The application installs its own handlers (HTML pages for people); each of them first asks
`is_fhir_request` and hands FHIR requests to `fhir_error_response`, so that one handler per
exception type serves both worlds and the FHIR rules live here.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from fhir_adapter.errors import FhirError, Issue, operation_outcome
from fhir_adapter.http import FhirResponse
from fhir_adapter.schema import resource_types

log = logging.getLogger("cgt_access.fhir")

FHIR_PREFIX = "/fhir"

# The OperationOutcome issue type (R4 issue-type) that fits an HTTP status.
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "business-rule",
    429: "throttled",
}


def is_fhir_request(request: Request) -> bool:
    """True for the FHIR API's paths: `/fhir` and everything under it."""
    path = request.url.path
    return path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/")


def fhir_error_response(request: Request, exc: Exception) -> Response:
    """The OperationOutcome response for any exception raised while serving a FHIR request."""
    if isinstance(exc, FhirError):
        return FhirResponse(exc.outcome(), exc.status, exc.headers)
    if isinstance(exc, RequestValidationError):
        return _bad_request(exc)
    if isinstance(exc, HTTPException):
        return _http_error(request, exc)
    return _crash(request, exc)


def install_fhir_error_handler(app: FastAPI) -> None:
    """Register the handler of FhirError (the other exception types are shared with the
    application's pages, whose handlers delegate to `fhir_error_response`)."""

    async def handle(request: Request, exc: Exception) -> Response:
        return fhir_error_response(request, exc)

    app.add_exception_handler(FhirError, handle)


def _bad_request(exc: RequestValidationError) -> Response:
    issues = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        issues.append(Issue(code="invalid", diagnostics=f"{where}: {error.get('msg', 'invalid')}"))
    return FhirResponse(operation_outcome(issues or [Issue("invalid", "Invalid request")]), 400)


def _http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    method, path = request.method, request.url.path
    if status == 404:
        diagnostics = _not_found(method, path)
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        diagnostics = f"{method} is not supported on {path[:200]}" + (
            f"; use {allowed}" if allowed else ""
        )
    else:
        diagnostics = str(exc.detail)
    code = _ISSUE_CODES.get(status, "processing" if status < 500 else "exception")
    return FhirResponse(
        operation_outcome([Issue(code=code, diagnostics=diagnostics)]), status, exc.headers
    )


def _not_found(method: str, path: str) -> str:
    segments = [segment for segment in path[len(FHIR_PREFIX) :].split("/") if segment]
    first = segments[0] if segments else ""
    if first[:1].isupper() and first not in resource_types():
        return f"'{first[:64]}' is not an R4 resource type"
    return (
        f"This server has no {method} {path[:200]}; GET {FHIR_PREFIX}/metadata lists what it "
        "supports"
    )


def _crash(request: Request, exc: Exception) -> Response:
    # The client learns that it was our fault and a reference to quote; the traceback, which
    # may hold patient data, stays in the log.
    incident = secrets.token_hex(6)
    log.error(
        "unhandled error %s on %s %s",
        incident,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return FhirResponse(
        operation_outcome(
            [
                Issue(
                    code="exception",
                    diagnostics=(
                        "The server failed to process this request; nothing was changed. "
                        f"Quote incident {incident} when reporting it."
                    ),
                    severity="fatal",
                )
            ]
        ),
        500,
    )
