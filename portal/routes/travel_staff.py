"""Coordinators' travel page of one visit: its requests with their history, and the steps
(approve, decline with a reason the patient reads, record what was booked, mark arranged,
cancel a booking, mark reviewed after the visit moved or was cancelled). Coordinators of
the patient's state (and center) only: anyone else gets 404, like a record that does not
exist."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from coordination.followup.models import Visit
from coordination.travel.models import TravelRequest
from coordination.travel.requests import appointment_day
from coordination.travel.service import (
    ArrangementInput,
    TravelStepRefused,
    add_arrangement,
    approve_request,
    cancel_arrangement,
    decline_request,
    mark_arranged,
    mark_reviewed,
    names_in,
    requests_of_visit,
)
from core.errors import FieldErrors
from core.identity.access import Permission
from core.ids import PathId, parse_id
from core.text import N_
from portal import i18n
from portal.context import AppContext
from portal.deps import ContextDep, PatientAccess, SessionDep, require_patient
from portal.routes.pages import page_router
from portal.routes.travel import label_of, policy_of, visit_of
from portal.web import is_htmx, redirect, render

router = page_router()
_ = i18n.gettext

TravelArranger = Annotated[PatientAccess, Depends(require_patient(Permission.TRAVEL_ARRANGE))]
VisitId = PathId
STAFF_NOTICES = {
    "approved": N_("The request is approved. Record what you book below."),
    "declined": N_("The request is declined. The patient reads your reason."),
    "booked": N_("The booking is recorded."),
    "arranged": N_("The travel is arranged: the patient sees it beside the appointment."),
    "reviewed": N_("The travel is reviewed: the flag is cleared."),
    "cancelled": N_("The booking is recorded as cancelled. Its cost stays in the history."),
}


class DeclineForm(BaseModel):
    request_id: str = Field("", max_length=12)
    reason: str = Field("", max_length=2000)


class BookingForm(BaseModel):
    request_id: str = Field("", max_length=12)
    kind: str = Field("", max_length=16)
    summary: str = Field("", max_length=1000)
    starts_on: str = Field("", max_length=20)
    ends_on: str = Field("", max_length=20)
    miles: str = Field("", max_length=8)
    cost: str = Field("", max_length=20)


def _staff_page(
    request: Request,
    session: Session,
    context: AppContext,
    access: PatientAccess,
    visit: Visit,
    *,
    notice: str | None = None,
    failed_id: int | None = None,
    error: str | None = None,
    errors: dict[str, str] | None = None,
    booking: BookingForm | None = None,
    decline: DeclineForm | None = None,
    status_code: int = 200,
) -> Response:
    patient = access.patient
    details = requests_of_visit(session, patient_id=patient.id, visit_id=visit.id)
    names = names_in(session, details=details)
    values: dict[str, Any] = {
        "patient": patient,
        "visit": visit,
        "label": label_of(visit, access),
        "appointment_day": appointment_day(visit, patient_zone=patient.time_zone),
        "policy": policy_of(session, access, visit),
        "details": details,
        "names": names,
        "zone": patient.time_zone,
        "notice": notice,
        "failed_id": failed_id,
        "error": error,
        "errors": errors or {},
        "booking": booking or BookingForm(),
        "decline": decline or DeclineForm(),
    }
    if is_htmx(request):
        status_code = 200
    return render(
        request, "portal/travel_staff.html", values, block="requests", status_code=status_code
    )


def _done(access: PatientAccess, visit: Visit, done: str) -> str:
    return f"/patients/{access.patient.id}/visits/{visit.id}/travel?done={done}"


@router.get("/patients/{patient_id}/visits/{visit_id}/travel", name="visit_travel")
def visit_travel(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: TravelArranger,
    visit_id: VisitId,
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    visit = visit_of(session, access, visit_id)
    notice = _(STAFF_NOTICES[done]) if done in STAFF_NOTICES else None
    return _staff_page(request, session, context, access, visit, notice=notice)


def _step(
    request: Request,
    session: Session,
    context: AppContext,
    access: PatientAccess,
    visit_id: int,
    request_id: str,
    done: str,
    *,
    decline: DeclineForm | None = None,
    booking: BookingForm | None = None,
    arrangement_id: str = "",
) -> Response:
    """Apply one coordinator's step to the visit's request, then show the page again."""
    visit = visit_of(session, access, visit_id)
    chosen = parse_id(request_id)
    travel = session.get(TravelRequest, chosen) if chosen is not None else None
    if travel is None or travel.visit_id != visit.id:
        return _staff_page(
            request,
            session,
            context,
            access,
            visit,
            error=_("Choose a request of this visit."),
            status_code=400,
        )
    clock, actor = context.clock, access.actor
    try:
        if done == "approved":
            approve_request(session, clock=clock, actor=actor, request=travel)
        elif done == "declined" and decline is not None:
            decline_request(
                session, clock=clock, actor=actor, request=travel, reason=decline.reason
            )
        elif done == "booked" and booking is not None:
            add_arrangement(
                session,
                clock=clock,
                actor=actor,
                request=travel,
                data=ArrangementInput(
                    kind=booking.kind,
                    summary=booking.summary,
                    starts_on=booking.starts_on,
                    ends_on=booking.ends_on,
                    cost=booking.cost,
                    miles=booking.miles,
                ),
            )
        elif done == "arranged":
            mark_arranged(session, clock=clock, actor=actor, request=travel)
        elif done == "reviewed":
            mark_reviewed(session, clock=clock, actor=actor, request=travel)
        elif done == "cancelled":
            cancel_arrangement(
                session,
                clock=clock,
                actor=actor,
                request=travel,
                arrangement_id=parse_id(arrangement_id) or 0,
            )
    except TravelStepRefused as problem:
        return _staff_page(
            request,
            session,
            context,
            access,
            visit,
            failed_id=travel.id,
            error=i18n.translate(problem.args[0]),
            status_code=400,
        )
    except FieldErrors as problem:
        return _staff_page(
            request,
            session,
            context,
            access,
            visit,
            failed_id=travel.id,
            errors=i18n.translate_errors(problem.errors),
            booking=booking,
            decline=decline,
            status_code=400,
        )
    if is_htmx(request):
        return _staff_page(request, session, context, access, visit, notice=_(STAFF_NOTICES[done]))
    return redirect(request, _done(access, visit, done))


@router.post("/patients/{patient_id}/visits/{visit_id}/travel/approve", name="travel_approve")
def travel_approve(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: TravelArranger,
    visit_id: VisitId,
    request_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    return _step(request, session, context, access, visit_id, request_id, "approved")


@router.post("/patients/{patient_id}/visits/{visit_id}/travel/decline", name="travel_decline")
def travel_decline(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: TravelArranger,
    visit_id: VisitId,
    data: Annotated[DeclineForm, Form()],
) -> Response:
    return _step(
        request, session, context, access, visit_id, data.request_id, "declined", decline=data
    )


@router.post("/patients/{patient_id}/visits/{visit_id}/travel/book", name="travel_book")
def travel_book(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: TravelArranger,
    visit_id: VisitId,
    data: Annotated[BookingForm, Form()],
) -> Response:
    """Record one thing booked (kind, provider or summary, dates, cost)."""
    return _step(
        request, session, context, access, visit_id, data.request_id, "booked", booking=data
    )


@router.post("/patients/{patient_id}/visits/{visit_id}/travel/arranged", name="travel_arranged")
def travel_arranged(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: TravelArranger,
    visit_id: VisitId,
    request_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    return _step(request, session, context, access, visit_id, request_id, "arranged")


@router.post("/patients/{patient_id}/visits/{visit_id}/travel/reviewed", name="travel_reviewed")
def travel_reviewed(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: TravelArranger,
    visit_id: VisitId,
    request_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    return _step(request, session, context, access, visit_id, request_id, "reviewed")


@router.post(
    "/patients/{patient_id}/visits/{visit_id}/travel/cancel-booking", name="travel_cancel_booking"
)
def travel_cancel_booking(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: TravelArranger,
    visit_id: VisitId,
    request_id: Annotated[str, Form(max_length=12)] = "",
    arrangement_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Record that one booking was cancelled (kept, with its cost)."""
    return _step(
        request,
        session,
        context,
        access,
        visit_id,
        request_id,
        "cancelled",
        arrangement_id=arrangement_id,
    )
