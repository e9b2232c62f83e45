"""Request dependencies: the transaction, who is logged in, the one permission check, CSRF.

Every route that is not public declares `require(Permission.X)` or
`require_patient(Permission.X)`; the permission-matrix test finds them by these markers."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from itsdangerous import BadSignature, Signer, TimestampSigner

from core import web
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.identity.access import Permission, may_access_patient, role_allows
from core.identity.auth import KnownDevice, resume_session
from core.identity.models import LoginSession, User
from core.ids import PathId
from core.models import Patient
from core.patient_list import get_patient
from core.settings import Settings
from portal.context import AppContext

SESSION_COOKIE = "cgt_session"
CSRF_COOKIE = "cgt_csrf"
DEVICE_COOKIE = "cgt_device"
LANGUAGE_COOKIE = "cgt_lang"
HOST_ONLY_PREFIX = "__Host-"
KNOWN_DEVICE_DAYS = 180
KNOWN_DEVICE_ACCOUNTS = 5  # a family's shared tablet: each person's login counts
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


class RecordRefused(PageNotFound):
    """A patient's record that exists but is not this person's to see: the person gets the
    same 404 as for a missing record, and the attempt goes to the audit log with outcome
    `denied` (written by the error handler, after the request's transaction rolled back)."""

    def __init__(
        self, *, actor: Actor, patient_id: int, route: str | None, detail: dict[str, str]
    ) -> None:
        super().__init__(patient_id)
        self.actor = actor
        self.patient_id = patient_id
        self.route = route
        self.detail = detail


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


def cookie_name(settings: Settings, name: str) -> str:
    """The name of a security cookie. Over https it carries the `__Host-` prefix: browsers
    then accept it only with Secure, Path=/ and no Domain, so a sibling subdomain or a plain
    http page cannot plant or overwrite it (and a cookie without the prefix is not read)."""
    return HOST_ONLY_PREFIX + name if settings.uses_tls else name


def session_signer(context: AppContext) -> Signer:
    return Signer(context.settings.secret, salt="cgt-access.session")


def set_session_cookie(response: Response, context: AppContext, token: str) -> None:
    """The login cookie: signed, HttpOnly, SameSite=Lax, Secure behind TLS, no Max-Age
    (the browser forgets it when closed; the server enforces idle and absolute timeouts)."""
    response.set_cookie(
        cookie_name(context.settings, SESSION_COOKIE),
        session_signer(context).sign(token).decode(),
        httponly=True,
        samesite="lax",
        secure=context.settings.uses_tls,
        path="/",
    )


def clear_session_cookie(response: Response, context: AppContext) -> None:
    """Forget the login cookie, with the attributes it was set with (a browser ignores the
    deletion of a `__Host-` cookie that is not Secure)."""
    response.delete_cookie(
        cookie_name(context.settings, SESSION_COOKIE),
        path="/",
        secure=context.settings.uses_tls,
        httponly=True,
        samesite="lax",
    )


class _ClockSigner(TimestampSigner):
    """A timestamped signature on the application's clock (tests move it)."""

    def __init__(self, secret: str, *, salt: str, clock: Clock) -> None:
        super().__init__(secret, salt=salt)
        self.clock = clock

    def get_timestamp(self) -> int:
        return int(self.clock.now().timestamp())


def _device_signer(context: AppContext) -> _ClockSigner:
    return _ClockSigner(context.settings.secret, salt="cgt-access.device", clock=context.clock)


def known_device(request: Request, context: AppContext) -> KnownDevice | None:
    """This browser as a known device (see `core.identity.auth`), from its signed cookie;
    None when it has none, or one that is forged, malformed or older than 180 days."""
    cookie = request.cookies.get(cookie_name(context.settings, DEVICE_COOKIE))
    if not cookie or len(cookie) > 400:
        return None
    try:
        payload = _device_signer(context).unsign(cookie, max_age=KNOWN_DEVICE_DAYS * 86400)
    except BadSignature:  # also an expired one
        return None
    device_id, _, accounts = payload.decode().partition("~")
    user_ids = tuple(int(part) for part in accounts.split("~") if part.isdigit())
    return KnownDevice(device_id=device_id, user_ids=user_ids) if device_id else None


def remember_device(response: Response, request: Request, context: AppContext, user: User) -> None:
    """Make this browser a known device of `user`, after a completed login (for staff, after
    the second factor). The cookie is signed, so nobody can add an account to it; it keeps
    the device's id and its last few accounts, and lasts 180 days from the last login."""
    device = known_device(request, context)
    device_id = device.device_id if device else secrets.token_urlsafe(18)
    others = [user_id for user_id in (device.user_ids if device else ()) if user_id != user.id]
    accounts = [user.id, *others][:KNOWN_DEVICE_ACCOUNTS]
    payload = "~".join([device_id, *(str(user_id) for user_id in accounts)])
    response.set_cookie(
        cookie_name(context.settings, DEVICE_COOKIE),
        _device_signer(context).sign(payload).decode(),
        max_age=KNOWN_DEVICE_DAYS * 86400,
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
    cookie = request.cookies.get(cookie_name(context.settings, SESSION_COOKIE))
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
    who else is enrolled; asking for one that exists is audited as denied (`RecordRefused`).
    A staff member's GET of a record is written to the audit log."""
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
        if patient is None:
            raise PageNotFound()  # nothing to audit: the log points only at real patients
        actor = actor_for(request, user)
        if not may_access_patient(session, user=user, patient=patient, permission=permission):
            raise RecordRefused(
                actor=actor,
                patient_id=patient.id,
                route=getattr(request.scope.get("route"), "name", None),
                detail={"method": request.method, "permission": permission.value},
            )
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


def csrf_token_for(secret: str, seed: str, session_cookie: str) -> str:
    """The CSRF token of a browser (its random seed cookie) in its current login session
    (the session cookie, "" when anonymous). Bound to both: a token handed out before a
    login, or in another session, does not work in this one."""
    session_part = hashlib.sha256(session_cookie.encode()).hexdigest() if session_cookie else ""
    message = f"csrf:{seed}:{session_part}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def csrf_token_of(request: Request, settings: Settings, seed: str) -> str:
    """The token that this request's pages hand out and its forms must send back."""
    session_cookie = request.cookies.get(cookie_name(settings, SESSION_COOKIE), "")
    return csrf_token_for(settings.secret, seed, session_cookie)


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
    """Refuse a state-changing request whose token does not match this browser's cookie
    and login session."""
    if request.method not in UNSAFE_METHODS:
        return
    seed = request.cookies.get(cookie_name(context.settings, CSRF_COOKIE))
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if (
        not seed
        or not sent
        or not hmac.compare_digest(sent, csrf_token_of(request, context.settings, seed))
    ):
        raise CsrfRejected()
