"""Education as staff see it: admins set what each state funds (`/admin/education`),
coordinators see a patient's readings and assign modules (`/patients/{id}/education`),
and analysts and coordinators see their state's reach (`/education/reach`, and its CSV),
always suppressed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from core.audit.service import record_event
from core.caregivers import caregiver_links
from core.clock import local_today
from core.db import after_commit
from core.errors import FieldErrors
from core.identity.access import Permission, role_allows
from core.identity.models import User
from core.ids import parse_id, parse_int
from core.models import Patient, State
from core.reference import list_states
from core.text import N_
from education.assignments import (
    AssignmentResult,
    ReaderChoice,
    assign_module,
    assignable_modules_by_reader,
    readers_of_patient,
)
from education.content import shipped_modules
from education.funding import add_funding, end_funding, funding_windows
from education.readings import patient_education
from portal import i18n
from portal.context import AppContext
from portal.deps import (
    ContextDep,
    PageNotFound,
    PatientAccess,
    SessionDep,
    actor_for,
    require,
    require_patient,
)
from portal.routes.pages import page_router
from portal.web import attachment, redirect, render
from reporting.education_reach import StateReach, reach_csv, state_reach

router = page_router()
_ = i18n.gettext

Funder = Annotated[User, Depends(require(Permission.EDUCATION_FUND))]
ReachReader = Annotated[User, Depends(require(Permission.EDUCATION_REACH))]
RecordReader = Annotated[PatientAccess, Depends(require_patient(Permission.RECORD_VIEW))]
Assigner = Annotated[PatientAccess, Depends(require_patient(Permission.EDUCATION_ASSIGN))]

# Shown after a redirect; keys in the URL.
FUNDING_NOTICES = {
    "added": N_("The funding window is added."),
    "ended": N_("The funding window is ended. It stays in the history below."),
}


# --- funding (admins) ---------------------------------------------------------------------


class FundingForm(BaseModel):
    state_id: str = Field("", max_length=12)
    module_key: str = Field("", max_length=64)
    funded_from: str = Field("", max_length=20)
    funded_until: str = Field("", max_length=20)


def _funding_page(
    request: Request,
    session: Session,
    app: AppContext,
    *,
    form: FundingForm | None = None,
    errors: dict[str, str] | None = None,
    end_error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    library = shipped_modules()
    windows = funding_windows(session, clock=app.clock)
    states = list_states(session)
    by_state = {state.id: [w for w in windows if w.state.id == state.id] for state in states}
    context: dict[str, Any] = {
        "modules": list(library),
        "titles": {module.key: module.en.title for module in library},
        "fundable": [module for module in library if not module.core],
        "states": states,
        "windows_by_state": by_state,
        "form": form or FundingForm(),
        "errors": errors or {},
        "end_error": end_error,
        "notice": notice,
    }
    return render(
        request,
        "portal/admin_education.html",
        context,
        block="funding",
        status_code=status_code,
    )


@router.get("/admin/education", name="admin_education")
def admin_education(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Funder,
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    notice = _(FUNDING_NOTICES[done]) if done in FUNDING_NOTICES else None
    return _funding_page(request, session, context, notice=notice)


@router.post("/admin/education", name="admin_education_add")
def admin_education_add(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Funder,
    data: Annotated[FundingForm, Form()],
) -> Response:
    try:
        add_funding(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            library=shipped_modules(),
            state_id=data.state_id,
            module_key=data.module_key,
            funded_from=data.funded_from,
            funded_until=data.funded_until,
        )
    except FieldErrors as problem:
        return _funding_page(
            request,
            session,
            context,
            form=data,
            errors=i18n.translate_errors(problem.errors),
            status_code=400,
        )
    return redirect(request, "/admin/education?done=added")


@router.post("/admin/education/end", name="admin_education_end")
def admin_education_end(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Funder,
    funding_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """End a window (the row stays: ending is history, not deletion)."""
    try:
        end_funding(
            session, clock=context.clock, actor=actor_for(request, user), funding_id=funding_id
        )
    except FieldErrors as problem:
        return _funding_page(
            request,
            session,
            context,
            end_error=" ".join(i18n.translate_errors(problem.errors).values()),
            status_code=400,
        )
    return redirect(request, "/admin/education?done=ended")


# --- one patient (coordinators) -------------------------------------------------------------


class AssignForm(BaseModel):
    reader: str = Field("", max_length=12)
    module_key: str = Field("", max_length=64)
    due_on: str = Field("", max_length=20)
    send_text: str = Field("", max_length=8)


def _education_page(
    request: Request,
    session: Session,
    app: AppContext,
    user: User,
    patient: Patient,
    *,
    readers: list[ReaderChoice] | None = None,
    form: AssignForm | None = None,
    errors: dict[str, str] | None = None,
    result: AssignmentResult | None = None,
    status_code: int = 200,
) -> Response:
    language = i18n.current_language().value
    library = shipped_modules()
    if readers is None:
        readers = readers_of_patient(session, patient=patient)
    may_assign = role_allows(user, Permission.EDUCATION_ASSIGN)
    choices = (
        assignable_modules_by_reader(
            session,
            clock=app.clock,
            patient=patient,
            readers=readers,
            language=language,
            library=library,
        )
        if may_assign
        else {}
    )
    with_login = {choice.caregiver.id for choice in readers if choice.caregiver is not None}
    outcome: dict[str, Any] | None = None
    if result is not None:
        module = library.get(result.assignment.module_key)
        text = result.text
        outcome = {
            "title": module.text(language).title if module else result.assignment.module_key,
            "name": result.reader.name,
            "texted": text is not None and text.queued,
            "refusal": i18n.translate(text.reason) if text is not None and text.reason else None,
        }
    context: dict[str, Any] = {
        "patient": patient,
        "education": patient_education(
            session,
            clock=app.clock,
            patient=patient,
            library=library,
            language=language,
            readers=readers,
        ),
        "patient_has_login": any(not choice.is_caregiver for choice in readers),
        "caregivers_without_login": [
            link.caregiver
            for link in caregiver_links(session, patient_id=patient.id)
            if link.caregiver_id not in with_login
        ],
        "may_assign": may_assign,
        "choices": choices,
        "form": form or AssignForm(),
        "errors": errors or {},
        "outcome": outcome,
        "today": local_today(app.clock, patient.state.time_zone),
        "zone": patient.state.time_zone,
    }
    return render(
        request,
        "portal/patient_education.html",
        context,
        block="education",
        status_code=status_code,
    )


@router.get("/patients/{patient_id}/education", name="patient_education")
def patient_education_page(
    request: Request, session: SessionDep, context: ContextDep, access: RecordReader
) -> Response:
    """A patient's readings and their caregivers'; reading it is audited (`require_patient`)."""
    return _education_page(request, session, context, access.user, access.patient)


@router.post("/patients/{patient_id}/education", name="patient_education_assign")
def patient_education_assign(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: Assigner,
    data: Annotated[AssignForm, Form()],
) -> Response:
    """Assign a module to the patient or a caregiver, and maybe text them the link."""
    readers = readers_of_patient(session, patient=access.patient)
    try:
        result = assign_module(
            session,
            clock=context.clock,
            actor=access.actor,
            patient=access.patient,
            reader_user_id=data.reader,
            module_key=data.module_key,
            due_on=data.due_on,
            send_text=data.send_text == "yes",
            public_base_url=context.settings.public_base_url,
            language=i18n.current_language().value,
            readers=readers,
        )
    except FieldErrors as problem:
        return _education_page(
            request,
            session,
            context,
            access.user,
            access.patient,
            readers=readers,
            form=data,
            errors=i18n.translate_errors(problem.errors),
            status_code=400,
        )
    if result.text is not None and result.text.queued:
        # Sent right after the commit; the dispatcher job would pick it up anyway.
        after_commit(session, context.wake_dispatcher)
    return _education_page(
        request, session, context, access.user, access.patient, readers=readers, result=result
    )


# --- a state's reach (analysts and coordinators) ---------------------------------------------


def _reach_of(
    request: Request,
    session: Session,
    app: AppContext,
    user: User,
    state: str,
    year: str,
    *,
    export: bool,
) -> tuple[StateReach | None, list[State]]:
    """The reach of one of the user's states (another state's answers 404: its figures are
    not this user's to see, even suppressed), audited."""
    states = list_states(session, state_ids=user.state_ids)
    if not states:
        return None, states
    wanted = parse_id(state) if state else states[0].id
    chosen = next((s for s in states if s.id == wanted), None)
    if chosen is None:
        raise PageNotFound()
    reach = state_reach(
        session,
        clock=app.clock,
        state=chosen,
        year=parse_int(year, low=1000, high=9999),
        library=shipped_modules(),
        language=i18n.current_language().value,
    )
    record_event(
        session,
        clock=app.clock,
        actor=actor_for(request, user),
        action="education.reach_export" if export else "education.reach",
        target=f"state:{chosen.code}",
        detail={"year": reach.year},
    )
    return reach, states


@router.get("/education/reach", name="education_reach")
def education_reach(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ReachReader,
    state: Annotated[str, Query(max_length=12)] = "",
    year: Annotated[str, Query(max_length=4)] = "",
) -> Response:
    reach, states = _reach_of(request, session, context, user, state, year, export=False)
    return render(
        request,
        "portal/education_reach.html",
        {"reach": reach, "states": states},
        block="reach",
    )


@router.get("/education/reach.csv", name="education_reach_csv")
def education_reach_csv(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ReachReader,
    state: Annotated[str, Query(max_length=12)] = "",
    year: Annotated[str, Query(max_length=4)] = "",
) -> Response:
    """The same suppressed figures as the page, one per line."""
    reach, _states = _reach_of(request, session, context, user, state, year, export=True)
    if reach is None:
        raise PageNotFound()
    filename = f"education-reach-{reach.state.code}-{reach.year}.csv"
    return attachment(reach_csv(reach), filename=filename)
