"""Admins' travel policy page: for each state, what it funds to get patients to their visits,
its limits and rates, the version in force and every earlier or upcoming one; a form adds a
version from a day (today or later). Versions are never edited: a new one replaces it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from coordination.travel.models import TravelKind
from coordination.travel.policy import PolicyInput, add_policy, policy_history
from core.errors import FieldErrors
from core.identity.access import Permission
from core.identity.models import User
from core.reference import list_states
from core.text import N_
from portal import i18n
from portal.context import AppContext
from portal.deps import ContextDep, SessionDep, actor_for, require
from portal.routes.pages import page_router
from portal.web import is_htmx, redirect, render

router = page_router()
_ = i18n.gettext

PolicyAdmin = Annotated[User, Depends(require(Permission.TRAVEL_POLICY))]
NOTICES = {"added": N_("The new version is added. Earlier versions stay in the history.")}


class PolicyForm(BaseModel):
    state_id: str = Field("", max_length=12)
    effective_from: str = Field("", max_length=20)
    kinds: list[str] = Field(default_factory=list, max_length=len(TravelKind))
    mileage_rate: str = Field("", max_length=20)
    max_lodging_nights: str = Field("", max_length=4)
    lodging_night_cap: str = Field("", max_length=20)
    meal_per_diem: str = Field("", max_length=20)
    max_travellers: str = Field("1", max_length=4)


def _policy_page(
    request: Request,
    session: Session,
    context: AppContext,
    *,
    form: PolicyForm | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    states = list_states(session)
    values: dict[str, Any] = {
        "states": states,
        "history": {
            state.id: policy_history(session, clock=context.clock, state=state) for state in states
        },
        "kinds": list(TravelKind),
        "form": form or PolicyForm(),
        "errors": errors or {},
        "notice": notice,
    }
    if is_htmx(request):
        status_code = 200  # htmx does not swap a 4xx answer: the errors come in the block
    return render(
        request, "portal/admin_travel.html", values, block="policies", status_code=status_code
    )


@router.get("/admin/travel", name="admin_travel")
def admin_travel(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: PolicyAdmin,
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    notice = _(NOTICES[done]) if done in NOTICES else None
    return _policy_page(request, session, context, notice=notice)


@router.post("/admin/travel", name="admin_travel_add")
def admin_travel_add(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: PolicyAdmin,
    data: Annotated[PolicyForm, Form()],
) -> Response:
    try:
        add_policy(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            data=PolicyInput(
                state_id=data.state_id,
                effective_from=data.effective_from,
                kinds=data.kinds,
                mileage_rate=data.mileage_rate,
                max_lodging_nights=data.max_lodging_nights,
                lodging_night_cap=data.lodging_night_cap,
                meal_per_diem=data.meal_per_diem,
                max_travellers=data.max_travellers,
            ),
        )
    except FieldErrors as problem:
        return _policy_page(
            request,
            session,
            context,
            form=data,
            errors=i18n.translate_errors(problem.errors),
            status_code=400,
        )
    return redirect(request, "/admin/travel?done=added")
