"""Admin pages: the states running the model and their treatment centers, with the
identifier systems their FHIR data uses (a state's Medicaid IDs, a center's record numbers)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.errors import FieldErrors
from core.identity.access import Permission
from core.identity.models import User
from core.ids import PathId
from core.models import State, TreatmentCenter
from core.reference import (
    CenterInput,
    StateInput,
    list_centers,
    list_states,
    save_center,
    save_state,
    set_medicaid_system,
    set_mrn_system,
)
from portal import i18n
from portal.deps import ContextDep, PageNotFound, SessionDep, actor_for, require
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
STATE_TEMPLATE = "portal/admin_state.html"
CENTER_TEMPLATE = "portal/admin_center.html"

StatesAdmin = Annotated[User, Depends(require(Permission.ADMIN_STATES))]
CentersAdmin = Annotated[User, Depends(require(Permission.ADMIN_CENTERS))]


# --- states ---------------------------------------------------------------------------


class StateForm(BaseModel):
    code: str = Field("", max_length=8)
    name: str = Field("", max_length=200)
    time_zone: str = Field("", max_length=64)
    program_name: str = Field("", max_length=200)
    program_phone: str = Field("", max_length=40)
    # Local hours texts may arrive (core.reference checks them); a form without them keeps
    # the defaults.
    texts_from_hour: str = Field("8", max_length=8)
    texts_until_hour: str = Field("21", max_length=8)


@router.get("/admin/states", name="admin_states")
def states_page(request: Request, session: SessionDep, user: StatesAdmin) -> Response:
    return render(
        request, "portal/admin_states.html", {"states": list_states(session), "form": StateInput()}
    )


@router.post("/admin/states", name="admin_state_create")
def state_create(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: StatesAdmin,
    data: Annotated[StateForm, Form()],
) -> Response:
    form = StateInput(**data.model_dump())
    try:
        save_state(
            session, clock=context.clock, actor=actor_for(request, user), data=form, state=None
        )
    except FieldErrors as problem:
        return render(
            request,
            "portal/admin_states.html",
            {
                "states": list_states(session),
                "form": form,
                "errors": i18n.translate_errors(problem.errors),
            },
            status_code=400,
        )
    return redirect(request, "/admin/states")


def _state_context(state: State, **values: Any) -> dict[str, Any]:
    form = StateInput(
        code=state.code,
        name=state.name,
        time_zone=state.time_zone,
        program_name=state.program_name,
        program_phone=state.program_phone,
        texts_from_hour=str(state.texts_from_hour),
        texts_until_hour=str(state.texts_until_hour),
    )
    return {
        "state": state,
        "form": form,
        "medicaid_id_system": state.medicaid_id_system or "",
        **values,
    }


@router.get("/admin/states/{state_id}", name="admin_state")
def state_page(
    request: Request, session: SessionDep, user: StatesAdmin, state_id: PathId
) -> Response:
    state = session.get(State, state_id)
    if state is None:
        raise PageNotFound()
    return render(request, STATE_TEMPLATE, _state_context(state), block="state")


@router.post("/admin/states/{state_id}", name="admin_state_update")
def state_update(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: StatesAdmin,
    state_id: PathId,
    data: Annotated[StateForm, Form()],
) -> Response:
    state = session.get(State, state_id)
    if state is None:
        raise PageNotFound()
    form = StateInput(**data.model_dump())
    try:
        save_state(
            session, clock=context.clock, actor=actor_for(request, user), data=form, state=state
        )
    except FieldErrors as problem:
        return render(
            request,
            STATE_TEMPLATE,
            _state_context(state, form=form, errors=i18n.translate_errors(problem.errors)),
            status_code=400,
        )
    return redirect(request, "/admin/states")


class MedicaidSystemForm(BaseModel):
    medicaid_id_system: str = Field("", max_length=400)


@router.post("/admin/states/{state_id}/medicaid-system", name="admin_state_medicaid_system")
def state_medicaid_system(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: StatesAdmin,
    state_id: PathId,
    data: Annotated[MedicaidSystemForm, Form()],
) -> Response:
    """Set the system URI centers send with this state's Medicaid IDs (empty: default)."""
    state = session.get(State, state_id)
    if state is None:
        raise PageNotFound()
    try:
        set_medicaid_system(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            state=state,
            system=data.medicaid_id_system,
        )
    except FieldErrors as problem:
        return render(
            request,
            STATE_TEMPLATE,
            _state_context(
                state,
                medicaid_id_system=data.medicaid_id_system,
                system_errors=i18n.translate_errors(problem.errors),
            ),
            block="medicaid_system",
            status_code=400,
        )
    return redirect(request, f"/admin/states/{state.id}")


# --- treatment centers ----------------------------------------------------------------


class CenterForm(BaseModel):
    name: str = Field("", max_length=200)
    city: str = Field("", max_length=100)
    state_id: str = Field("", max_length=12)
    phone: str = Field("", max_length=40)
    is_active: str = Field("", max_length=8)


def _center_input(data: CenterForm) -> CenterInput:
    return CenterInput(
        name=data.name,
        city=data.city,
        state_id=data.state_id,
        phone=data.phone,
        is_active=data.is_active == "on",
    )


@router.get("/admin/centers", name="admin_centers")
def centers_page(request: Request, session: SessionDep, user: CentersAdmin) -> Response:
    return render(
        request,
        "portal/admin_centers.html",
        {"centers": list_centers(session), "states": list_states(session), "form": CenterInput()},
    )


@router.post("/admin/centers", name="admin_center_create")
def center_create(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: CentersAdmin,
    data: Annotated[CenterForm, Form()],
) -> Response:
    form = _center_input(data)
    form.is_active = True
    try:
        save_center(
            session, clock=context.clock, actor=actor_for(request, user), data=form, center=None
        )
    except FieldErrors as problem:
        return render(
            request,
            "portal/admin_centers.html",
            {
                "centers": list_centers(session),
                "states": list_states(session),
                "form": form,
                "errors": i18n.translate_errors(problem.errors),
            },
            status_code=400,
        )
    return redirect(request, "/admin/centers")


def _center_context(session: SessionDep, center: TreatmentCenter, **values: Any) -> dict[str, Any]:
    form = CenterInput(
        name=center.name,
        city=center.city,
        state_id=str(center.state_id),
        phone=center.phone or "",
        is_active=center.is_active,
    )
    return {
        "center": center,
        "form": form,
        "states": list_states(session),
        "mrn_system": center.mrn_system or "",
        **values,
    }


@router.get("/admin/centers/{center_id}", name="admin_center")
def center_page(
    request: Request, session: SessionDep, user: CentersAdmin, center_id: PathId
) -> Response:
    center = session.get(TreatmentCenter, center_id)
    if center is None:
        raise PageNotFound()
    return render(request, CENTER_TEMPLATE, _center_context(session, center), block="center")


@router.post("/admin/centers/{center_id}", name="admin_center_update")
def center_update(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: CentersAdmin,
    center_id: PathId,
    data: Annotated[CenterForm, Form()],
) -> Response:
    center = session.get(TreatmentCenter, center_id)
    if center is None:
        raise PageNotFound()
    form = _center_input(data)
    try:
        save_center(
            session, clock=context.clock, actor=actor_for(request, user), data=form, center=center
        )
    except FieldErrors as problem:
        return render(
            request,
            CENTER_TEMPLATE,
            _center_context(
                session, center, form=form, errors=i18n.translate_errors(problem.errors)
            ),
            status_code=400,
        )
    return redirect(request, "/admin/centers")


class MrnSystemForm(BaseModel):
    mrn_system: str = Field("", max_length=400)


@router.post("/admin/centers/{center_id}/mrn-system", name="admin_center_mrn_system")
def center_mrn_system(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: CentersAdmin,
    center_id: PathId,
    data: Annotated[MrnSystemForm, Form()],
) -> Response:
    """Set the system URI centers send with this center's record numbers (empty: default)."""
    center = session.get(TreatmentCenter, center_id)
    if center is None:
        raise PageNotFound()
    try:
        set_mrn_system(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            center=center,
            system=data.mrn_system,
        )
    except FieldErrors as problem:
        return render(
            request,
            CENTER_TEMPLATE,
            _center_context(
                session,
                center,
                mrn_system=data.mrn_system,
                system_errors=i18n.translate_errors(problem.errors),
            ),
            block="mrn_system",
            status_code=400,
        )
    return redirect(request, f"/admin/centers/{center.id}")
