"""The account page: the password, text messages to one's own number, and setting up the
second factor (staff)."""

from __future__ import annotations

import base64
from typing import Annotated

import segno
from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from coordination.texting.consent import (
    ConsentTick,
    agree_to_own_texts,
    contact_of,
    own_texts,
    stop_texts,
)
from coordination.texting.models import ConsentHow
from core.errors import FieldErrors
from core.identity.access import Permission
from core.identity.auth import change_password as change_password_of
from core.identity.auth import (
    enable_second_factor,
    skip_second_factor,
    start_totp_enrolment,
    totp_uri,
)
from core.identity.models import User
from core.text import N_
from portal import i18n
from portal.context import AppContext
from portal.deps import (
    ContextDep,
    LoginDep,
    SessionDep,
    actor_for,
    remember_device,
    require,
    set_session_cookie,
)
from portal.routes.auth import PendingLogin, ShortText, home_for
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
_ = i18n.gettext

AccountUser = Annotated[User, Depends(require(Permission.ACCOUNT))]
TEXTS_NOTICES = {
    "on": N_("Done: this number gets text messages."),
    "off": N_("Done: this number gets no more text messages."),
}


def account_texts(
    session: Session,
    app: AppContext,
    user: User,
    *,
    errors: dict[str, str] | None = None,
    done: str = "",
) -> dict[str, object]:
    """The account page's "Text messages" part, for a patient or caregiver: their number,
    whether it gets texts, and the wording to agree to in the language of the page."""
    texts = own_texts(
        session,
        user=user,
        language=i18n.current_language().value,
        default_program=app.settings.program_name,
    )
    if texts is None:
        return {"texts": None}
    return {
        "texts": {
            "phone": texts.phone,
            "number": texts.number,
            "wording": texts.wording,
            "language": texts.language,
            "zone": texts.zone,
            "errors": errors or {},
            "notice": _(TEXTS_NOTICES[done]) if done in TEXTS_NOTICES else None,
        }
    }


@router.get("/account", name="account")
def account(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: AccountUser,
    texts: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    return render(request, "portal/account.html", account_texts(session, context, user, done=texts))


@router.post("/account/password", name="account_password")
def change_password(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    login: LoginDep,
    user: AccountUser,
    current: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    password_again: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    assert login is not None  # require() let a logged-in user through
    try:
        token = change_password_of(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            login_session=login,
            current=current,
            new=password,
            new_again=password_again,
        )
    except FieldErrors as problem:
        return render(
            request,
            "portal/account.html",
            {
                "errors": i18n.translate_errors(problem.errors),
                **account_texts(session, context, user),
            },
            block="password",
            status_code=400,
        )
    response = redirect(request, "/account?changed=1")
    set_session_cookie(response, context, token)
    return response


# --- text messages to one's own number ---------------------------------------------------


@router.post("/account/texts/on", name="account_texts_on")
def account_texts_on(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: AccountUser,
    sms_consent: ShortText = "",
    sms_wording: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """The person agrees to texts at their number, with the wording the page showed them."""
    contact = contact_of(session, user=user, default_program=context.settings.program_name)
    if contact is None:  # staff get no texts: nothing to agree to
        return redirect(request, "/account")
    errors = agree_to_own_texts(
        session,
        clock=context.clock,
        contact=contact,
        tick=ConsentTick(agreed=sms_consent == "yes", shown=sms_wording),
        language=i18n.current_language().value,
        by_user_id=user.id,
    )
    if errors is not None:  # the part again with its error (htmx: only that part)
        return render(
            request,
            "portal/account.html",
            account_texts(session, context, user, errors=i18n.translate_errors(errors)),
            block="texts",
            status_code=400,
        )
    return redirect(request, "/account?texts=on#texts-card")


@router.post("/account/texts/off", name="account_texts_off")
def account_texts_off(
    request: Request, session: SessionDep, context: ContextDep, user: AccountUser
) -> Response:
    """The person stops texts to their number (for everyone who shares it)."""
    contact = contact_of(session, user=user, default_program=context.settings.program_name)
    if contact is None or not contact.phone:
        return redirect(request, "/account")
    stop_texts(
        session, clock=context.clock, phone=contact.phone, how=ConsentHow.PORTAL, by_user_id=user.id
    )
    return redirect(request, "/account?texts=off#texts-card")


# --- the second factor (staff) -----------------------------------------------------------


def _qr_data_uri(uri: str) -> str:
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#1b2a3a", light="#ffffff")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


@router.get("/account/mfa", name="mfa_setup")
def mfa_setup(
    request: Request, session: SessionDep, context: ContextDep, login: PendingLogin
) -> Response:
    user = login.user
    if not user.needs_mfa:  # only staff use a second factor
        return redirect(request, home_for(user.role))
    if user.totp_enabled_at is not None:
        return redirect(request, "/login/mfa" if login.mfa_passed_at is None else "/account")
    if user.totp_secret is None:
        start_totp_enrolment(session, user=user)
    uri = totp_uri(user)
    return render(
        request,
        "portal/mfa_setup.html",
        {"secret": user.totp_secret, "qr": _qr_data_uri(uri), "uri": uri},
    )


@router.post("/account/mfa", name="mfa_setup_submit")
def mfa_setup_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    login: PendingLogin,
    code: ShortText = "",
) -> Response:
    user = login.user
    if not user.needs_mfa or user.totp_enabled_at is not None:
        return redirect(request, home_for(user.role))
    if not enable_second_factor(
        session, clock=context.clock, actor=actor_for(request, user), login_session=login, code=code
    ):
        uri = totp_uri(user)
        return render(
            request,
            "portal/mfa_setup.html",
            {
                "secret": user.totp_secret,
                "qr": _qr_data_uri(uri),
                "uri": uri,
                "error": _("This code is not right. Scan the code again and type the 6 digits."),
            },
            status_code=400,
        )
    response = redirect(request, home_for(user.role))
    remember_device(response, request, context, user)
    return response


@router.post("/account/mfa/skip", name="mfa_skip")
def mfa_skip(
    request: Request, session: SessionDep, context: ContextDep, login: PendingLogin
) -> Response:
    """Demo mode only: look around without an authenticator app."""
    if not context.settings.demo_mode:
        return render(
            request,
            "portal/error.html",
            {
                "title": _("Not possible here"),
                "message": _("The second factor can only be skipped in demo mode."),
                "status": 403,
            },
            status_code=403,
        )
    skip_second_factor(
        session, clock=context.clock, actor=actor_for(request, login.user), login_session=login
    )
    response = redirect(request, home_for(login.user.role))
    remember_device(response, request, context, login.user)
    return response
