"""Travel support for patients and caregivers: the page beside a booked visit (what the
state funds and its limits, asking, the request's status, a decline's reason and the
confirmed arrangements). Coordinators' page: `travel_staff.py`.

Patients see their own visits; caregivers those their link shows, and may ask only with
the right to act on visits (`SCHEDULE_RESPOND`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from coordination.followup.calendar import visit_label
from coordination.followup.models import Visit
from coordination.travel.models import TravelKind, TravelPolicy, TravelStatus
from coordination.travel.policy import policy_on
from coordination.travel.requests import (
    TravelAsk,
    appointment_day,
    ask_for_travel,
    is_booked_ahead,
    travel_for_visits,
)
from core.errors import FieldErrors
from core.identity.access import Permission, may_access_patient
from core.ids import PathId
from core.text import N_
from portal import i18n
from portal.context import AppContext
from portal.deps import ContextDep, PageNotFound, PatientAccess, SessionDep, require_patient
from portal.routes.pages import page_router
from portal.web import is_htmx, redirect, render

router = page_router()
_ = i18n.gettext

TravelViewer = Annotated[PatientAccess, Depends(require_patient(Permission.SCHEDULE_VIEW))]
TravelAsker = Annotated[PatientAccess, Depends(require_patient(Permission.SCHEDULE_RESPOND))]
VisitId = PathId

ASK_NOTICES = {
    "asked": N_("Your request is sent. The care team will answer here and may call you."),
}


def visit_of(session: Session, access: PatientAccess, visit_id: int) -> Visit:
    visit = session.get(Visit, visit_id)
    if visit is None or visit.patient_id != access.patient.id:
        raise PageNotFound()
    return visit


def label_of(visit: Visit, access: PatientAccess) -> str:
    return visit_label(
        visit,
        therapy_code=access.patient.therapy.code,
        language=i18n.current_language().value,
    )


def policy_of(session: Session, access: PatientAccess, visit: Visit) -> TravelPolicy | None:
    day = appointment_day(visit, patient_zone=access.patient.time_zone)
    return policy_on(session, state_id=access.patient.state_id, day=day) if day else None


# --- patients and caregivers --------------------------------------------------------------


class AskForm(BaseModel):
    kinds: list[str] = Field(default_factory=list, max_length=len(TravelKind))
    depart_on: str = Field("", max_length=20)
    return_on: str = Field("", max_length=20)
    travellers: str = Field("1", max_length=4)
    needs: str = Field("", max_length=2000)


def _ask_page(
    request: Request,
    session: Session,
    context: AppContext,
    access: PatientAccess,
    visit: Visit,
    *,
    form: AskForm | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    """The page, or its `travel` block for htmx (which gets refusals as 200: it does not
    swap 4xx answers)."""
    patient, user = access.patient, access.user
    travel = travel_for_visits(session, visit_ids=[visit.id]).get(visit.id)
    standing = travel is not None and travel.request.status is not TravelStatus.DECLINED
    day = appointment_day(visit, patient_zone=patient.time_zone)
    values: dict[str, Any] = {
        "patient": patient,
        "visit": visit,
        "label": label_of(visit, access),
        "appointment_day": day,
        "policy": policy_of(session, access, visit),
        "travel": travel,
        "own": user.patient_id == patient.id,
        "may_ask": may_access_patient(
            session, user=user, patient=patient, permission=Permission.SCHEDULE_RESPOND
        )
        and is_booked_ahead(visit, now=context.clock.now())
        and not standing,
        "kinds": list(TravelKind),
        "form": form or AskForm(depart_on=day.isoformat() if day else "", return_on=""),
        "errors": errors or {},
        "notice": notice,
        "current_path": f"/care/{patient.id}/visits/{visit.id}/travel",
    }
    if is_htmx(request):
        status_code = 200
    return render(request, "portal/travel.html", values, block="travel", status_code=status_code)


@router.get("/care/{patient_id}/visits/{visit_id}/travel", name="care_travel")
def care_travel(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: TravelViewer,
    visit_id: VisitId,
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    visit = visit_of(session, access, visit_id)
    notice = _(ASK_NOTICES[done]) if done in ASK_NOTICES else None
    return _ask_page(request, session, context, access, visit, notice=notice)


@router.post("/care/{patient_id}/visits/{visit_id}/travel", name="care_travel_ask")
def care_travel_ask(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: TravelAsker,
    visit_id: VisitId,
    data: Annotated[AskForm, Form()],
) -> Response:
    """Ask for travel support (a caregiver needs the right to act on visits)."""
    visit = visit_of(session, access, visit_id)
    try:
        ask_for_travel(
            session,
            clock=context.clock,
            actor=access.actor,
            patient=access.patient,
            visit=visit,
            ask=TravelAsk(
                kinds=data.kinds,
                depart_on=data.depart_on,
                return_on=data.return_on,
                travellers=data.travellers,
                needs=data.needs,
            ),
        )
    except FieldErrors as problem:
        return _ask_page(
            request,
            session,
            context,
            access,
            visit,
            form=data,
            errors=i18n.translate_errors(problem.errors),
            status_code=400,
        )
    if is_htmx(request):
        return _ask_page(request, session, context, access, visit, notice=_(ASK_NOTICES["asked"]))
    return redirect(request, f"/care/{access.patient.id}/visits/{visit.id}/travel?done=asked")
