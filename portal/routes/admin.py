"""Admin pages: staff accounts and the audit log (read-only). States and treatment centers are
in `admin_places.py`."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.audit.models import AuditOutcome
from core.audit.service import AuditFilter, search_events
from core.dates import parse_day_or_none
from core.errors import FieldErrors
from core.identity.access import Permission
from core.identity.models import Role, User
from core.identity.users import (
    STAFF_ROLES,
    StaffInput,
    issue_staff_password_link,
    list_users,
    reset_second_factor,
    save_staff_user,
    set_user_active,
)
from core.ids import PathId, parse_id
from core.reference import (
    list_centers,
    list_states,
)
from core.text import N_
from fhir_adapter.clients import list_clients
from portal import i18n
from portal.deps import ContextDep, PageNotFound, SessionDep, actor_for, require
from portal.onboarding import invitation_url
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
_ = i18n.gettext

UsersAdmin = Annotated[User, Depends(require(Permission.ADMIN_USERS))]
AuditReader = Annotated[User, Depends(require(Permission.AUDIT_READ))]


# --- users ----------------------------------------------------------------------------


class StaffForm(BaseModel):
    login: str = Field("", max_length=300)
    display_name: str = Field("", max_length=200)
    role: str = Field(Role.COORDINATOR.value, max_length=16)
    state_ids: list[str] = Field(default_factory=list, max_length=60)
    center_id: str = Field("", max_length=12)


def _staff_choices(session: SessionDep) -> dict[str, object]:
    return {"states": list_states(session), "centers": list_centers(session), "roles": STAFF_ROLES}


@router.get("/admin/users", name="admin_users")
def users_page(
    request: Request,
    session: SessionDep,
    user: UsersAdmin,
    role: Annotated[str, Query(max_length=16)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    chosen = Role(role) if role in Role.__members__.values() else None
    users, total = list_users(session, text=None, role=chosen, page=page)
    if page > 1 and not users and total:  # past the end: show the last page
        page = (total + 49) // 50
        users, total = list_users(session, text=None, role=chosen, page=page)
    return render(
        request,
        "portal/admin_users.html",
        {
            "users": users,
            "total": total,
            "page": page,
            "pages": max(1, (total + 49) // 50),
            "role": chosen,
            "roles": list(Role),
        },
    )


@router.get("/admin/users/new", name="admin_user_new")
def user_new(request: Request, session: SessionDep, user: UsersAdmin) -> Response:
    return render(
        request,
        "portal/admin_user.html",
        {"account": None, "form": StaffInput(), **_staff_choices(session)},
    )


def _issue_set_password_link(
    request: Request, session: SessionDep, context: ContextDep, admin: User, account: User
) -> Response:
    issued = issue_staff_password_link(
        session,
        clock=context.clock,
        actor=actor_for(request, admin),
        user=account,
        valid_for=timedelta(days=context.settings.invitation_valid_days),
    )
    return render(
        request,
        "portal/admin_user_link.html",
        {
            "account": account,
            "url": invitation_url(context.settings, issued.token),
            "days": context.settings.invitation_valid_days,
        },
    )


@router.post("/admin/users/new", name="admin_user_create")
def user_create(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: UsersAdmin,
    data: Annotated[StaffForm, Form()],
) -> Response:
    form = StaffInput(**data.model_dump())
    try:
        account = save_staff_user(
            session, clock=context.clock, actor=actor_for(request, user), data=form, user=None
        )
    except FieldErrors as problem:
        return render(
            request,
            "portal/admin_user.html",
            {
                "account": None,
                "form": form,
                "errors": i18n.translate_errors(problem.errors),
                **_staff_choices(session),
            },
            status_code=400,
        )
    return _issue_set_password_link(request, session, context, user, account)


def _account(session: SessionDep, user_id: int) -> User:
    account = session.get(User, user_id)
    if account is None:
        raise PageNotFound()
    return account


@router.get("/admin/users/{user_id}", name="admin_user")
def user_page(request: Request, session: SessionDep, user: UsersAdmin, user_id: PathId) -> Response:
    account = _account(session, user_id)
    form = StaffInput(
        login=account.login or "",
        display_name=account.display_name,
        role=account.role.value,
        state_ids=[str(state_id) for state_id in account.state_ids],
        center_id=str(account.center_id or ""),
    )
    return render(
        request,
        "portal/admin_user.html",
        {"account": account, "form": form, **_staff_choices(session)},
    )


@router.post("/admin/users/{user_id}", name="admin_user_update")
def user_update(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: UsersAdmin,
    user_id: PathId,
    data: Annotated[StaffForm, Form()],
) -> Response:
    account = _account(session, user_id)
    form = StaffInput(**data.model_dump())
    try:
        save_staff_user(
            session, clock=context.clock, actor=actor_for(request, user), data=form, user=account
        )
    except FieldErrors as problem:
        return render(
            request,
            "portal/admin_user.html",
            {
                "account": account,
                "form": form,
                "errors": i18n.translate_errors(problem.errors),
                **_staff_choices(session),
            },
            status_code=400,
        )
    return redirect(request, "/admin/users")


@router.post("/admin/users/{user_id}/action", name="admin_user_action")
def user_action(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: UsersAdmin,
    user_id: PathId,
    action: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Deactivate, reactivate, forget the authenticator, or make a new set-password link."""
    account = _account(session, user_id)
    actor = actor_for(request, user)
    try:
        if action in ("deactivate", "activate"):
            set_user_active(
                session, clock=context.clock, actor=actor, user=account, active=action == "activate"
            )
        elif action == "reset_mfa":
            reset_second_factor(session, clock=context.clock, actor=actor, user=account)
        elif action == "set_password_link":
            return _issue_set_password_link(request, session, context, user, account)
        else:
            raise FieldErrors({"": N_("Unknown action.")})
    except FieldErrors as problem:
        return render(
            request,
            "portal/error.html",
            {
                "title": _("Not possible"),
                "message": _(next(iter(problem.errors.values()))),
                "status": 400,
                "back": f"/admin/users/{account.id}",
            },
            status_code=400,
        )
    return redirect(request, f"/admin/users/{account.id}")


# --- audit log ------------------------------------------------------------------------


@router.get("/admin/audit", name="admin_audit")
def audit_page(
    request: Request,
    session: SessionDep,
    user: AuditReader,
    actor: Annotated[str, Query(max_length=254)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    patient: Annotated[str, Query(max_length=12)] = "",
    outcome: Annotated[str, Query(max_length=8)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    client: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """Read-only: there is no route that changes or deletes an audit event."""
    since_day, until_day = parse_day_or_none(since), parse_day_or_none(until)
    criteria = AuditFilter(
        actor=actor or None,
        action=action or None,
        patient_id=parse_id(patient),
        outcome=AuditOutcome(outcome) if outcome in AuditOutcome.__members__.values() else None,
        since=datetime.combine(since_day, time.min, UTC) if since_day else None,
        until=datetime.combine(until_day, time.min, UTC) + timedelta(days=1) if until_day else None,
        client_id=client.strip() or None,
    )
    events, total = search_events(session, criteria=criteria, page=page)
    if page > 1 and not events and total:  # past the end: show the last page
        page = (total + 49) // 50
        events, total = search_events(session, criteria=criteria, page=page)
    return render(
        request,
        "portal/admin_audit.html",
        {
            "events": events,
            "total": total,
            "page": page,
            "pages": max(1, (total + 49) // 50),
            "filters": {
                "actor": actor,
                "action": action,
                "patient": patient,
                "outcome": outcome,
                "since": since,
                "until": until,
                "client": client,
            },
            "outcomes": list(AuditOutcome),
            "fhir_clients": list_clients(session),
        },
        block="results",
    )
