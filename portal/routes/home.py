"""The patient's and caregiver's home, the account page, and the reports placeholder."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response

from core.errors import FieldErrors
from core.identity.access import Permission, linked_patients
from core.identity.auth import change_password as change_password_of
from core.identity.models import User
from portal import i18n
from portal.deps import (
    ContextDep,
    LoginDep,
    SessionDep,
    actor_for,
    require,
    set_session_cookie,
)
from portal.routes.auth import account_texts
from portal.routes.pages import page_router
from portal.routes.schedule import NOTICES as SCHEDULE_NOTICES
from portal.routes.schedule import person_summary
from portal.web import redirect, render

router = page_router()
_ = i18n.gettext
# Shown after a redirect back home (the confirm button on the home page).
HOME_NOTICES = {"confirmed": SCHEDULE_NOTICES["confirmed"]}


@router.get("/home", name="home")
def home(
    request: Request,
    session: SessionDep,
    user: Annotated[User, Depends(require(Permission.PORTAL_HOME))],
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """A patient sees their own follow-up; a caregiver, each patient they help: the next
    visit (with the right to see the schedule) and what they may do."""
    people = [
        person_summary(session, patient=patient, link=link)
        for patient, link in linked_patients(session, user=user)
    ]
    notice = _(HOME_NOTICES[done]) if done in HOME_NOTICES else None
    return render(request, "portal/home.html", {"people": people, "notice": notice})


@router.get("/reports", name="reports")
def reports(
    request: Request, user: Annotated[User, Depends(require(Permission.REPORTS_VIEW))]
) -> Response:
    return render(request, "portal/reports.html", {})


@router.get("/account", name="account")
def account(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Annotated[User, Depends(require(Permission.ACCOUNT))],
    texts: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    return render(request, "portal/account.html", account_texts(session, context, user, done=texts))


@router.post("/account/password", name="account_password")
def change_password(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    login: LoginDep,
    user: Annotated[User, Depends(require(Permission.ACCOUNT))],
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
