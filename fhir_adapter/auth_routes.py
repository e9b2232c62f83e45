"""The machine-facing auth endpoints: the token endpoint and SMART discovery.

No login cookie and no CSRF token here: these routes are not on the portal's page router,
so `check_csrf` does not apply; the client assertion authenticates the caller."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from core.web import ClockDep, SessionDep, request_context
from fhir_adapter.keys import ALGORITHMS
from fhir_adapter.scopes import supported_scopes
from fhir_adapter.tokens import TOKEN_PATH, TokenRefused, issue_token, token_url

router = APIRouter()

# RFC 6749 section 5.1: token responses are never cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM_FIELDS = 20
# A token request is a few form fields and one assertion (at most 16,000 characters).
MAX_BODY_BYTES = 32 * 1024


def _oauth_error(refusal: TokenRefused) -> Response:
    return JSONResponse(refusal.as_json(), status_code=refusal.status, headers=_NO_STORE)


@router.post(TOKEN_PATH, name="fhir_token")
async def token(request: Request, session: SessionDep, clock: ClockDep) -> Response:
    """RFC 6749 client_credentials with an RFC 7523 private_key_jwt assertion. The form is
    read here (not by FastAPI's validation, whose errors are HTML pages for people) so
    that every refusal is an RFC 6749 JSON error."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length", "")
    if length and (not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY_BYTES):
        return _oauth_error(TokenRefused("invalid_request", "the request body is too large"))
    if content_type != "application/x-www-form-urlencoded":
        return _oauth_error(
            TokenRefused(
                "invalid_request",
                "send the token request as application/x-www-form-urlencoded",
            )
        )
    try:
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    except Exception:  # malformed body or too many fields: the client's mistake
        return _oauth_error(TokenRefused("invalid_request", "the form could not be read"))
    values: dict[str, list[str]] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            return _oauth_error(TokenRefused("invalid_request", "no files here"))
        values.setdefault(name, []).append(value)
    settings = request_context(request).settings
    try:
        # In a worker thread: the database, and perhaps fetching the center's key set
        # (up to a few seconds), must not hold up the event loop.
        issued = await run_in_threadpool(
            issue_token,
            session,
            clock=clock,
            form=values,
            audience=token_url(settings.public_base_url),
            ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
        )
    except TokenRefused as refusal:
        # Returned, not raised: the refusal's audit event commits with the request.
        return _oauth_error(refusal)
    return JSONResponse(issued.as_json(), headers=_NO_STORE)


def smart_configuration(public_base_url: str) -> dict[str, Any]:
    """The SMART configuration document (SMART App Launch 2.x, backend services)."""
    return {
        "token_endpoint": token_url(public_base_url),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": supported_scopes(),
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }


@router.get("/.well-known/smart-configuration", name="smart_configuration")
def discovery(request: Request) -> Response:
    settings = request_context(request).settings
    return JSONResponse(smart_configuration(settings.public_base_url))


@router.get("/fhir/.well-known/smart-configuration", name="fhir_smart_configuration")
def fhir_discovery(request: Request) -> Response:
    """The same document under the FHIR base URL, where SMART clients look for it."""
    settings = request_context(request).settings
    return JSONResponse(smart_configuration(settings.public_base_url))
