"""Logging in and out, the second factor, invitations, forgotten passwords, the language."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response

from core.identity.auth import (
    LoginRefusal,
    authenticate,
    end_session,
    log_out,
    login_lock_remaining,
    pass_second_factor,
)
from core.identity.invitations import (
    InvitationProblem,
    LoginTaken,
    accept_invitation,
    find_invitation,
)
from core.identity.models import Invitation, LoginSession, Role
from core.identity.password_reset import ResetProblem, ResetThrottled, reset_password
from core.identity.passwords import WeakPassword
from core.models import Language
from portal import i18n
from portal.deps import (
    LANGUAGE_COOKIE,
    ContextDep,
    LoginDep,
    LoginRequired,
    SessionDep,
    actor_for,
    clear_session_cookie,
    client_ip,
    known_device,
    remember_device,
    set_session_cookie,
)
from portal.onboarding import record_language, send_reset_code
from portal.routes.pages import page_router
from portal.web import redirect, render, safe_next

router = page_router()
_ = i18n.gettext

ShortText = Annotated[str, Form(max_length=300)]
Password = Annotated[str, Form(max_length=256)]


def home_for(role: Role) -> str:
    return {
        Role.PATIENT: "/home",
        Role.CAREGIVER: "/home",
        Role.COORDINATOR: "/worklist",  # what to do today
        Role.STATE_ANALYST: "/reports",
        Role.ADMIN: "/admin/users",
    }[role]


def try_again_in(wait: timedelta) -> str:
    """The sentence that says when to try again ("Try again in 20 minutes."), rounded up,
    in hours past an hour and a half."""
    minutes = max(1, math.ceil(wait.total_seconds() / 60))
    if minutes <= 90:
        return i18n.ngettext(
            "Try again in %(num)d minute.", "Try again in %(num)d minutes.", minutes
        ) % {"num": minutes}
    hours = math.ceil(minutes / 60)
    return i18n.ngettext("Try again in %(num)d hour.", "Try again in %(num)d hours.", hours) % {
        "num": hours
    }


def require_login_session(login: LoginDep) -> LoginSession:
    """Logged in, second factor not necessarily passed yet (the MFA pages themselves)."""
    if login is None:
        raise LoginRequired()
    return login


require_login_session.login_only = True  # type: ignore[attr-defined]
PendingLogin = Annotated[LoginSession, Depends(require_login_session)]


@router.get("/", name="root")
def root(login: LoginDep) -> Response:
    if login is None:
        return Response(status_code=303, headers={"Location": "/login"})
    return Response(status_code=303, headers={"Location": home_for(login.user.role)})


@router.get("/login", name="login")
def login_page(request: Request, login: LoginDep, next: str | None = None) -> Response:
    if login is not None and (login.mfa_passed_at or not login.user.needs_mfa):
        return redirect(request, safe_next(next, home_for(login.user.role)))
    return render(request, "portal/login.html", {"next": safe_next(next, "")})


@router.post("/login", name="login_submit")
def login_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    login: ShortText = "",
    password: Password = "",
    next: ShortText = "",
) -> Response:
    result = authenticate(
        session,
        clock=context.clock,
        login=login,
        password=password,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        device=known_device(request, context),
    )
    if not result.ok:
        if result.refusal in (LoginRefusal.LOCKED, LoginRefusal.IP_THROTTLED):
            minutes = (
                max(1, int((result.retry_after.total_seconds() + 59) // 60))
                if (result.retry_after)
                else 15
            )
            error = i18n.ngettext(
                "Too many failed attempts. Try again in %(num)d minute, or reset your password.",
                "Too many failed attempts. Try again in %(num)d minutes, or reset your password.",
                minutes,
            ) % {"num": minutes}
            status = 429
        else:
            error = _("The username or password is not right.")
            status = 400
        return render(
            request,
            "portal/login.html",
            {"error": error, "login": login, "next": safe_next(next, "")},
            status_code=status,
        )
    assert result.user is not None and result.session_token is not None
    user = result.user
    if user.needs_mfa:
        target = "/login/mfa" if user.totp_enabled_at else "/account/mfa"
        target += f"?next={quote(safe_next(next, ''))}" if next else ""
    else:
        target = safe_next(next, home_for(user.role))
    response = redirect(request, target)
    set_session_cookie(response, context, result.session_token)
    if not user.needs_mfa:  # staff: once the second factor is passed too
        remember_device(response, request, context, user)
    language = user.preferred_language
    response.set_cookie(LANGUAGE_COOKIE, language.value, max_age=365 * 86400, samesite="lax")
    return response


@router.post("/logout", name="logout")
def logout(request: Request, session: SessionDep, context: ContextDep, login: LoginDep) -> Response:
    if login is not None:
        log_out(
            session, clock=context.clock, actor=actor_for(request, login.user), login_session=login
        )
    response = redirect(request, "/login?logged_out=1")
    clear_session_cookie(response, context)
    return response


@router.get("/login/mfa", name="mfa_page")
def mfa_page(request: Request, login: PendingLogin, next: str | None = None) -> Response:
    if not login.user.needs_mfa:
        return redirect(request, home_for(login.user.role))
    if login.user.totp_enabled_at is None:
        return redirect(request, "/account/mfa")
    return render(request, "portal/mfa.html", {"next": safe_next(next, "")})


@router.post("/login/mfa", name="mfa_submit")
def mfa_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    login: PendingLogin,
    code: ShortText = "",
    next: ShortText = "",
) -> Response:
    user = login.user
    device = known_device(request, context)
    locked = login_lock_remaining(
        session, clock=context.clock, login=user.login or "", user=user, device=device
    )
    if locked is not None:
        end_session(session, clock=context.clock, login_session=login)
        response = redirect(request, "/login")
        clear_session_cookie(response, context)
        return response
    if not pass_second_factor(
        session,
        clock=context.clock,
        actor=actor_for(request, user),
        login_session=login,
        code=code,
        device=device,
    ):
        return render(
            request,
            "portal/mfa.html",
            {
                "error": _("This code is not right. Check the time on your phone and try again."),
                "next": safe_next(next, ""),
            },
            status_code=400,
        )
    response = redirect(request, safe_next(next, home_for(user.role)))
    remember_device(response, request, context, user)
    return response


def _unusable_link(request: Request, problem: InvitationProblem) -> Response:
    """The page for a link that is used, expired or replaced (410 Gone)."""
    return render(
        request,
        "portal/invitation.html",
        {"problem": i18n.translate(problem.args[0])},
        status_code=410,
    )


def _speak_invitees_language(request: Request, invitation: Invitation, chosen: str) -> Language:
    """An invitation speaks the invited person's language, the one their record says (not
    the browser's: a shared or borrowed phone, a clinic tablet), unless they chose another
    with the language switch (`chosen`, from the page's address or its form)."""
    language = i18n.parse_language(chosen) or record_language(invitation.user)
    i18n.set_language(language)
    request.state.language = language
    request.state.page_context = {**request.state.page_context, "language": language}
    return language


@router.get("/invite/{token}", name="invitation")
def invitation_page(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    token: str,
    lang: Annotated[str, Query(max_length=5)] = "",
) -> Response:
    try:
        invitation = find_invitation(session, clock=context.clock, token=token[:100])
    except InvitationProblem as problem:
        return _unusable_link(request, problem)
    language = _speak_invitees_language(request, invitation, lang)
    return render(
        request,
        "portal/invitation.html",
        {"token": token, "name": invitation.user.display_name, "lang": language.value},
    )


@router.post("/invite/{token}", name="invitation_submit")
def invitation_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    token: str,
    login: ShortText = "",
    password: Password = "",
    password_again: Password = "",
    lang: ShortText = "",
) -> Response:
    errors: dict[str, str] = {}
    try:
        # The account keeps the language the person read the page in (their record's).
        language = _speak_invitees_language(
            request, find_invitation(session, clock=context.clock, token=token[:100]), lang
        )
    except InvitationProblem as problem:
        return _unusable_link(request, problem)
    if password != password_again:
        errors["password_again"] = _("The two passwords are not the same.")
    else:
        try:
            accept_invitation(
                session,
                clock=context.clock,
                token=token[:100],
                login=login,
                password=password,
                language=language,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
        except InvitationProblem as problem:
            return _unusable_link(request, problem)
        except LoginTaken as problem:
            errors["login"] = i18n.translate(problem.args[0])
        except WeakPassword as problem:
            errors["password"] = i18n.translate(problem.args[0])
        else:
            # The login page that follows speaks it too.
            response = redirect(request, "/login?welcome=1")
            response.set_cookie(
                LANGUAGE_COOKIE, language.value, max_age=365 * 86400, samesite="lax"
            )
            return response
    try:
        invitation = find_invitation(session, clock=context.clock, token=token[:100])
    except InvitationProblem as problem:  # e.g. already used or expired, and a typo as well
        return _unusable_link(request, problem)
    return render(
        request,
        "portal/invitation.html",
        {
            "token": token,
            "name": invitation.user.display_name,
            "errors": errors,
            "login": login,
            "lang": language.value,
        },
        status_code=400,
    )


@router.get("/password/forgot", name="forgot_password")
def forgot_page(request: Request) -> Response:
    return render(request, "portal/forgot.html", {"step": "ask"})


@router.post("/password/forgot", name="forgot_password_submit")
def forgot_submit(
    request: Request, session: SessionDep, context: ContextDep, login: ShortText = ""
) -> Response:
    if login.strip():
        try:
            send_reset_code(
                session,
                clock=context.clock,
                settings=context.settings,
                wake_dispatcher=context.wake_dispatcher,
                login=login,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
        except ResetThrottled as refusal:
            error = f"{i18n.translate(refusal.args[0])} {try_again_in(refusal.retry_after)}"
            return render(
                request,
                "portal/forgot.html",
                {"step": "ask", "login": login.strip(), "error": error},
                status_code=429,
            )
    return render(request, "portal/forgot.html", {"step": "code", "login": login.strip()})


@router.post("/password/reset", name="reset_password")
def reset_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    login: ShortText = "",
    code: ShortText = "",
    password: Password = "",
    password_again: Password = "",
) -> Response:
    error: str | None = None
    if password != password_again:
        error = _("The two passwords are not the same.")
    else:
        try:
            reset_password(
                session,
                clock=context.clock,
                login=login,
                code=code,
                new_password=password,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
                device=known_device(request, context),
            )
        except (ResetProblem, WeakPassword) as problem:
            error = i18n.translate(problem.args[0])
        else:
            return redirect(request, "/login?reset=1")
    return render(
        request,
        "portal/forgot.html",
        {"step": "code", "login": login, "error": error},
        status_code=400,
    )


@router.post("/language", name="language")
def switch_language(
    request: Request,
    session: SessionDep,
    login: LoginDep,
    lang: ShortText = "",
    next: ShortText = "",
) -> Response:
    language = i18n.parse_language(lang) or i18n.DEFAULT_LANGUAGE
    if login is not None:
        login.user.preferred_language = language
        session.flush()
    target = safe_next(next, "/")
    if target.startswith("/invite/") and "?" not in target:
        # An invitation otherwise speaks its invitee's language: say which one was chosen.
        target += f"?lang={language.value}"
    response = redirect(request, target)
    response.set_cookie(LANGUAGE_COOKIE, language.value, max_age=365 * 86400, samesite="lax")
    return response
