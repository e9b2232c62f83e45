"""Request dependencies: the transaction, who is logged in, the one permission check, CSRF.

Every route that is not public declares `require(Permission.X)` or
`require_patient(Permission.X)`; the permission-matrix test finds them by these markers."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from itsdangerous import BadSignature, Signer

from core import web
from core.audit.service import Actor, record_event
from core.identity.access import Permission, may_access_patient, role_allows
from core.identity.auth import resume_session
from core.identity.models import LoginSession, User
from core.ids import PathId
from core.models import Patient
from core.service import get_patient
from portal.context import AppContext

SESSION_COOKIE = "cgt_session"
CSRF_COOKIE = "cgt_csrf"
LANGUAGE_COOKIE = "cgt_lang"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class LoginRequired(Exception):
    pass


class SecondFactorRequired(Exception):
    def __init__(self, *, enrolled: bool) -> None:
        self.enrolled = enrolled


class Forbidden(Exception):
    pass


class PageNotFound(Exception):
    pass


class CsrfRejected(Exception):
    pass


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


# The request's transaction lives in `core.web` so that every room's routes share it (one
# session per request, whichever room's dependency asks for it); re-exported here.
get_session = web.get_session
SessionDep = web.SessionDep


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def session_signer(context: AppContext) -> Signer:
    return Signer(context.settings.secret, salt="cgt-access.session")


def set_session_cookie(response: Response, context: AppContext, token: str) -> None:
    """The login cookie: signed, HttpOnly, SameSite=Lax, Secure behind TLS, no Max-Age
    (the browser forgets it when closed; the server enforces idle and absolute timeouts)."""
    response.set_cookie(
        SESSION_COOKIE,
        session_signer(context).sign(token).decode(),
        httponly=True,
        samesite="lax",
        secure=context.settings.uses_tls,
        path="/",
    )


def get_login(request: Request, session: SessionDep, context: ContextDep) -> LoginSession | None:
    """The live login session of this browser, or None (cached for the request)."""
    if hasattr(request.state, "login"):
        cached: LoginSession | None = request.state.login
        return cached
    login: LoginSession | None = None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        try:
            token = session_signer(context).unsign(cookie).decode()
        except BadSignature:
            token = None
        if token:
            login = resume_session(
                session, clock=context.clock, token=token, timeouts=context.timeouts
            )
    request.state.login = login
    request.state.user = login.user if login else None
    return login


LoginDep = Annotated[LoginSession | None, Depends(get_login)]


def actor_for(request: Request, user: User | None) -> Actor:
    """Who is acting, for the audit log: the user, their role, their address."""
    return Actor(
        user_id=user.id if user else None,
        label=(user.login or user.display_name) if user else "anonymous",
        role=user.role.value if user else None,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


def require(permission: Permission) -> Callable[..., User]:
    """A dependency that lets the request through only for a user whose role has
    `permission` (and, for staff, who passed the second factor)."""

    def check(login: LoginDep, context: ContextDep) -> User:
        if login is None:
            raise LoginRequired()
        user = login.user
        if user.needs_mfa and login.mfa_passed_at is None:
            raise SecondFactorRequired(enrolled=user.totp_enabled_at is not None)
        if not role_allows(user, permission):
            raise Forbidden()
        return user

    check.permission = permission  # type: ignore[attr-defined]
    return check


@dataclass(frozen=True)
class PatientAccess:
    user: User
    patient: Patient
    actor: Actor


def require_patient(permission: Permission) -> Callable[..., PatientAccess]:
    """`require(permission)` plus: the patient in the path is one this user may act on.

    Out-of-scope records answer 404, like records that do not exist, so nobody learns
    who else is enrolled. A staff member's GET of a record is written to the audit log."""
    role_check = require(permission)

    def check(
        request: Request,
        session: SessionDep,
        context: ContextDep,
        patient_id: PathId,
        # A default, not Annotated: the closure's `role_check` is not a module global, so a
        # string annotation (from __future__ annotations) could not be resolved.
        user: User = Depends(role_check),
    ) -> PatientAccess:
        patient = get_patient(session, patient_id=patient_id)
        if patient is None or not may_access_patient(
            session, user=user, patient=patient, permission=permission
        ):
            raise PageNotFound()
        actor = actor_for(request, user)
        if user.role.is_staff and request.method == "GET":
            record_event(
                session,
                clock=context.clock,
                actor=actor,
                action="patient.read",
                patient_id=patient.id,
                target=getattr(request.scope.get("route"), "name", None),
            )
        return PatientAccess(user=user, patient=patient, actor=actor)

    check.permission = permission  # type: ignore[attr-defined]
    check.patient_scoped = True  # type: ignore[attr-defined]
    return check


def csrf_token_for(secret: str, seed: str) -> str:
    return hmac.new(secret.encode(), f"csrf:{seed}".encode(), hashlib.sha256).hexdigest()


async def refuse_nul(request: Request) -> None:
    """No text a page takes holds a NUL character: nobody types one, and PostgreSQL cannot
    store one (the request would end in a 500). Such a request answers 400 like any other
    value that cannot be read."""
    values = [*request.path_params.values(), *request.query_params.values()]
    if request.method in UNSAFE_METHODS:
        form = await request.form()  # read once: the route's own fields reuse it
        values += [value for value in form.values() if isinstance(value, str)]
    if any("\x00" in str(value) for value in values):
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("request",), "msg": "a NUL character"}]
        )


async def check_csrf(request: Request, context: ContextDep) -> None:
    """Refuse a state-changing request whose token does not match this browser's cookie."""
    if request.method not in UNSAFE_METHODS:
        return
    seed = request.cookies.get(CSRF_COOKIE)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if (
        not seed
        or not sent
        or not hmac.compare_digest(sent, csrf_token_for(context.settings.secret, seed))
    ):
        raise CsrfRejected()
