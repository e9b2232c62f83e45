"""Coordinators' visit page: one follow-up visit of one patient, its history, the patient's
requests to move it, and what can be done from its status (book or move the appointment,
confirm it, cancel it, follow up a missed visit, record the outcomes).

Also the follow-up helpers the record page uses: keeping the schedule in step with the
record, and showing appointments in the patient's local time."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_time
from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.corrections import (
    OutcomeChangeError,
    form_text,
    read_revision_values,
    revise_outcomes,
    standing_values,
)
from coordination.followup.health_events import REPORT_MEASURES
from coordination.followup.models import MoveRequest, Visit, VisitStatus
from coordination.followup.outcomes import (
    MEASURES,
    MEASURES_BY_KEY,
    Measure,
    measures_for,
    read_outcome_values,
    record_outcomes,
)
from coordination.followup.protocol import ProtocolVisit, shipped_protocols
from coordination.followup.requests import open_move_requests
from coordination.followup.schedule import (
    TRANSITIONS,
    AppointmentTimeError,
    OutsideWindowError,
    VisitTransitionError,
    acknowledge_missed,
    allowed_actions,
    book_appointment,
    cancel_visit,
    confirm_visit,
)
from coordination.texting.changes import plan_change_notices
from coordination.worklist.timeline import observations_for_visit, visit_history_entries
from core.clock import local_today
from core.dates import parse_day_or_none
from core.db import after_commit
from core.errors import FieldErrors
from core.identity.access import Permission
from core.identity.models import User
from core.ids import PathId
from core.models import Patient
from core.text import N_
from portal import i18n
from portal.deps import ContextDep, PageNotFound, PatientAccess, SessionDep, require_patient
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
_ = i18n.gettext

VisitManager = Annotated[PatientAccess, Depends(require_patient(Permission.VISIT_MANAGE))]
VisitId = PathId

# Shown after a redirect; keys in the URL.
NOTICES = {
    "scheduled": N_("The appointment is booked."),
    "rescheduled": N_("The appointment is moved. The patient is asked to confirm it again."),
    "rescheduled_texted": N_(
        "The appointment is moved. A text tells the patient (and the caregivers who get "
        "reminders) the new day and time and asks to confirm it."
    ),
    "rescheduled_untexted": N_(
        "The appointment is moved, but no text can tell of it (no number agreed to texts, "
        "the texting limits are reached, or it is too soon). Call the patient."
    ),
    "confirmed": N_("The appointment is confirmed."),
    "cancelled": N_("The visit is cancelled."),
    "acknowledged": N_("The missed visit is marked as followed up."),
    "completed": N_("The visit is completed and its outcomes are saved."),
    "corrected": N_("The values are saved; what was recorded before is kept."),
}
# The longest a typed outcome value may be before it is cut (text fields allow 1000).
VALUE_MAX = 2000


# --- helpers shared with the record page ------------------------------------------------


def _local(visit: Visit, patient: Patient) -> datetime | None:
    if visit.appointment_at is None:
        return None
    return visit.appointment_at.astimezone(ZoneInfo(visit.appointment_zone or patient.time_zone))


def appointment_text(visit: Visit, patient: Patient) -> str:
    """The appointment's day and wall-clock time where it takes place, in the reader's
    language, with the zone's abbreviation (e.g. "Thursday, December 3, 2026, 9:30 AM EST")."""
    local = _local(visit, patient)
    if local is None:
        return ""
    locale = Locale.parse(i18n.current_language().value)
    clock_time = format_time(local, format="short", tzinfo=local.tzinfo, locale=locale)
    return f"{i18n.format_day(local.date(), 'full')}, {clock_time} {local.tzname() or ''}".strip()


def measure_labels() -> dict[str, str]:
    """Words for each observation code (the outcome form's and patients' reports), in the
    reader's language."""
    measures = [*MEASURES, *REPORT_MEASURES.values()]
    return {measure.code: _(measure.label) for measure in measures}


# --- the visit page --------------------------------------------------------------------


def _visit_of(session: Session, access: PatientAccess, visit_id: int) -> Visit:
    """The visit, if it is this patient's; any other answers 404 like a missing one."""
    visit = session.get(Visit, visit_id)
    if visit is None or visit.patient_id != access.patient.id:
        raise PageNotFound()
    return visit


def _protocol_visit(visit: Visit, patient: Patient) -> ProtocolVisit | None:
    return shipped_protocols().visit_of(
        patient.therapy.code, visit.protocol_version, visit.visit_key
    )


def _measures(visit: Visit, patient: Patient) -> list[Measure]:
    protocol_visit = _protocol_visit(visit, patient)
    return measures_for(protocol_visit.assessments if protocol_visit is not None else ())


def _appointment_defaults(
    visit: Visit, patient: Patient, today: date, requests: list[MoveRequest]
) -> dict[str, str]:
    """The booking form's starting values: the current appointment, else the patient's
    preferred date (from their open move `requests`), else the visit's target day (if still
    ahead), at the patient's center."""
    local = _local(visit, patient)
    if local is not None:
        day, at = local.date(), local.time()
    else:
        preferred = next(
            (request.preferred_date for request in requests if request.preferred_date is not None),
            None,
        )
        day, at = preferred or max(visit.target_date, today), time(9, 0)
    return {
        "day": day.isoformat(),
        "time": at.strftime("%H:%M"),
        "location": visit.location or patient.center.name,
        "reason": "",
    }


def _outcome_defaults(visit: Visit, patient: Patient, today: date) -> dict[str, str]:
    local = _local(visit, patient)
    on = local.date() if local is not None and local.date() <= today else today
    return {"completed_on": on.isoformat()}


def visit_page(
    request: Request,
    session: Session,
    context: ContextDep,
    access: PatientAccess,
    visit: Visit,
    *,
    notice: str | None = None,
    failed: str | None = None,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    removed: list[str] | None = None,
    status_code: int = 200,
    block: str | None = None,
) -> Response:
    """The whole page, or (htmx) the card of the form that `failed`."""
    patient = access.patient
    today = local_today(context.clock, patient.time_zone)
    protocol_visit = _protocol_visit(visit, patient)
    language = i18n.current_language().value
    requests = open_move_requests(session, visit_id=visit.id)
    requester_ids = {request.requested_by_user_id for request in requests}
    requesters = (
        {user.id: user for user in session.scalars(select(User).where(User.id.in_(requester_ids)))}
        if requester_ids
        else {}
    )
    appointment_form = _appointment_defaults(visit, patient, today, requests)
    outcome_form = _outcome_defaults(visit, patient, today)
    cancel_form = {"cancel_reason": ""}
    if failed == "appointment" and form is not None:
        appointment_form = form
    elif failed == "outcomes" and form is not None:
        outcome_form = form
    elif failed == "cancel" and form is not None:
        cancel_form = form
    standing = standing_values(session, visit_id=visit.id)
    correction_form = {key: form_text(value) for key, value in standing.items()}
    correction_removed: list[str] = []
    if failed == "corrections" and form is not None:
        correction_form = form
        correction_removed = removed or []
    values: dict[str, Any] = {
        "patient": patient,
        "visit": visit,
        "label": protocol_visit.label.text(language) if protocol_visit else visit.visit_key,
        "assessments": [a.value for a in protocol_visit.assessments] if protocol_visit else [],
        "appointment": appointment_text(visit, patient),
        "today": today,
        "notice": notice,
        "allowed": allowed_actions(visit),
        "history": visit_history_entries(session, visit_id=visit.id),
        "requests": requests,
        "requesters": requesters,
        "measures": _measures(visit, patient),
        "recorded": observations_for_visit(session, visit_id=visit.id),
        "measure_labels": measure_labels(),
        # Translated here: a label such as "Fetal hemoglobin (%)" must not go through the
        # templates' gettext, which %-formats every message.
        "field_labels": {measure.key: _(measure.label) for measure in MEASURES},
        "appointment_form": appointment_form,
        "outcome_form": outcome_form,
        "cancel_form": cancel_form,
        "can_revise": visit.status is VisitStatus.COMPLETED,
        "standing": standing,
        "correction_form": correction_form,
        "correction_removed": correction_removed,
        "failed": failed,
        "errors": errors or {},
        "zone": patient.state.time_zone,
    }
    return render(request, "portal/visit.html", values, block=block, status_code=status_code)


def _visit_url(visit: Visit, done: str | None = None) -> str:
    url = f"/patients/{visit.patient_id}/visits/{visit.id}"
    return f"{url}?done={done}" if done else url


@router.get("/patients/{patient_id}/visits/{visit_id}", name="visit")
def visit_view(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: VisitManager,
    visit_id: VisitId,
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    visit = _visit_of(session, access, visit_id)
    notice = _(NOTICES[done]) if done in NOTICES else None
    return visit_page(request, session, context, access, visit, notice=notice)


class AppointmentForm(BaseModel):
    day: str = Field("", max_length=20)
    time: str = Field("", max_length=10)
    location: str = Field("", max_length=400)
    reason: str = Field("", max_length=1000)
    # Ticked on the second submit, once the page warned that the day is outside the window.
    outside_window: str = Field("", max_length=8)


def _parse_time(text: str) -> time | None:
    try:
        parsed = time.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.replace(second=0, microsecond=0, tzinfo=None)


@router.post("/patients/{patient_id}/visits/{visit_id}/appointment", name="visit_book")
def visit_book(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: VisitManager,
    visit_id: VisitId,
    data: Annotated[AppointmentForm, Form()],
) -> Response:
    """Book the appointment, or move it (the visit becomes 'rescheduled' and the patient is
    asked again); the patient's open requests to move it are then handled."""
    visit = _visit_of(session, access, visit_id)
    form = data.model_dump()
    errors: dict[str, str] = {}
    day, at = parse_day_or_none(data.day), _parse_time(data.time)
    if day is None:
        errors["day"] = _("Enter the date as YYYY-MM-DD.")
    if at is None:
        errors["time"] = _("Enter the time as HH:MM, e.g. 09:30 or 14:15.")
    location = data.location.strip()
    if not location:
        errors["location"] = _("Say where the visit takes place.")
    elif len(location) > 200:
        errors["location"] = _("Use at most 200 characters.")
    if len(data.reason.strip()) > 500:
        errors["reason"] = _("Use at most 500 characters.")
    if not errors:
        assert day is not None and at is not None
        try:
            event = book_appointment(
                session,
                clock=context.clock,
                actor=access.actor,
                visit=visit,
                patient=access.patient,
                day=day,
                at=at,
                location=location,
                reason=data.reason.strip() or None,
                outside_window_confirmed=bool(data.outside_window),
            )
        except AppointmentTimeError as problem:
            errors["time"] = i18n.translate(problem.args[0])
        except VisitTransitionError as problem:
            errors[""] = i18n.translate(problem.args[0])
        except OutsideWindowError as problem:
            # Nothing is booked: the card asks to confirm, keeping what was typed.
            form["outside_window_asked"] = "yes"
            if problem.needs_reason:
                errors["reason"] = i18n.translate(problem.args[0])
            else:
                errors["outside_window"] = _(
                    "%(day)s is outside the visit's window (%(start)s to %(end)s). "
                    "To book it anyway, tick the box and say why."
                ) % {
                    "day": i18n.format_day(day, "medium"),
                    "start": i18n.format_day(problem.window_start, "medium"),
                    "end": i18n.format_day(problem.window_end, "medium"),
                }
    if errors:
        return visit_page(
            request,
            session,
            context,
            access,
            visit,
            failed="appointment",
            form=form,
            errors=errors,
            status_code=400,
            block="appointment_card",
        )
    done = event.to_status
    if event.from_status != VisitStatus.DUE.value:
        # A move: the text that tells of it is planned now (the planner would within
        # minutes), so that the coordinator learns whether one goes.
        notices = plan_change_notices(session, clock=context.clock, visit_ids=[visit.id])
        if notices.planned:
            after_commit(session, context.wake_dispatcher)
        done = "rescheduled_texted" if notices.planned else "rescheduled_untexted"
    return redirect(request, _visit_url(visit, done))


@router.post("/patients/{patient_id}/visits/{visit_id}/confirm", name="visit_confirm")
def visit_confirm(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: VisitManager,
    visit_id: VisitId,
) -> Response:
    """The coordinator confirms the booked appointment on the patient's behalf."""
    visit = _visit_of(session, access, visit_id)
    try:
        confirm_visit(session, clock=context.clock, actor=access.actor, visit=visit)
    except VisitTransitionError as problem:
        return visit_page(
            request,
            session,
            context,
            access,
            visit,
            failed="confirm",
            errors={"": i18n.translate(problem.args[0])},
            status_code=400,
        )
    return redirect(request, _visit_url(visit, "confirmed"))


@router.post("/patients/{patient_id}/visits/{visit_id}/cancel", name="visit_cancel")
def visit_cancel(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: VisitManager,
    visit_id: VisitId,
    cancel_reason: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """Cancel a visit that will not happen; the reason is required and kept in its history."""
    visit = _visit_of(session, access, visit_id)
    reason = cancel_reason.strip()
    problem_text: str | None = None
    if len(reason) > 500:
        problem_text = _("Use at most 500 characters.")
    else:
        try:
            cancel_visit(
                session, clock=context.clock, actor=access.actor, visit=visit, reason=reason
            )
        except VisitTransitionError as problem:
            problem_text = i18n.translate(problem.args[0])
    if problem_text is not None:
        # A missing or long reason is the reason field's problem; a wrong status is the visit's.
        field = "cancel_reason" if not reason or len(reason) > 500 else ""
        return visit_page(
            request,
            session,
            context,
            access,
            visit,
            failed="cancel",
            form={"cancel_reason": cancel_reason},
            errors={field: problem_text},
            status_code=400,
        )
    return redirect(request, _visit_url(visit, "cancelled"))


@router.post("/patients/{patient_id}/visits/{visit_id}/acknowledge", name="visit_acknowledge")
def visit_acknowledge(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: VisitManager,
    visit_id: VisitId,
) -> Response:
    """The coordinator has followed up a missed visit (it leaves the overdue bucket)."""
    visit = _visit_of(session, access, visit_id)
    try:
        acknowledge_missed(session, clock=context.clock, actor=access.actor, visit=visit)
    except VisitTransitionError as problem:
        return visit_page(
            request,
            session,
            context,
            access,
            visit,
            failed="acknowledge",
            errors={"": i18n.translate(problem.args[0])},
            status_code=400,
        )
    return redirect(request, _visit_url(visit, "acknowledged"))


async def outcome_fields(request: Request) -> dict[str, str]:
    """The outcome form as sent: the visit date and one value per known measure (the
    measures vary with the visit's protocol, so the form has no fixed model)."""
    form = await request.form()
    wanted = {"completed_on", *MEASURES_BY_KEY}
    return {
        name: value.strip()[:VALUE_MAX]
        for name, value in form.items()
        if name in wanted and isinstance(value, str)
    }


@router.post("/patients/{patient_id}/visits/{visit_id}/outcomes", name="visit_outcomes")
def visit_outcomes(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: VisitManager,
    visit_id: VisitId,
    fields: Annotated[dict[str, str], Depends(outcome_fields)],
) -> Response:
    """Record the visit's outcomes (the measures its protocol assesses) and complete it.
    A value outside its plausible range is refused with the range, and nothing is saved."""
    visit = _visit_of(session, access, visit_id)
    patient = access.patient
    errors: dict[str, str] = {}
    if ("complete", visit.status) not in TRANSITIONS:
        errors[""] = _("This visit is already completed or cancelled.")
    else:
        completed_on = parse_day_or_none(fields.get("completed_on", ""))
        protocol_visit = _protocol_visit(visit, patient)
        assessments = protocol_visit.assessments if protocol_visit is not None else ()
        try:
            values = read_outcome_values(measures_for(assessments), fields)
            if completed_on is None:
                raise FieldErrors({})
            record_outcomes(
                session,
                clock=context.clock,
                actor=access.actor,
                visit=visit,
                assessments=assessments,
                completed_on=completed_on,
                values=values,
            )
        except FieldErrors as problem:
            errors = i18n.translate_errors(problem.errors)
            if completed_on is None:
                errors["completed_on"] = _("Enter the visit date as YYYY-MM-DD.")
        except VisitTransitionError as problem:
            errors[""] = i18n.translate(problem.args[0])
    if errors:
        return visit_page(
            request,
            session,
            context,
            access,
            visit,
            failed="outcomes",
            form=fields,
            errors=errors,
            status_code=400,
            block="outcome_card",
        )
    return redirect(request, _visit_url(visit, "completed"))


async def correction_fields(request: Request) -> tuple[dict[str, str], list[str]]:
    """The correction form as sent: one value per known measure, the reason, and the
    measures whose value is to be removed as entered in error."""
    form = await request.form()
    wanted = {"reason", *MEASURES_BY_KEY}
    fields = {
        name: value.strip()[:VALUE_MAX]
        for name, value in form.items()
        if name in wanted and isinstance(value, str)
    }
    removed = [
        value
        for value in form.getlist("remove")
        if isinstance(value, str) and value in MEASURES_BY_KEY
    ]
    return fields, removed


@router.post(
    "/patients/{patient_id}/visits/{visit_id}/outcomes/corrections", name="visit_corrections"
)
def visit_corrections(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: VisitManager,
    visit_id: VisitId,
    sent: Annotated[tuple[dict[str, str], list[str]], Depends(correction_fields)],
) -> Response:
    """Correct, complete or remove (entered in error) the values of a completed visit, with
    the reason; what was recorded before is kept."""
    fields, removed = sent
    visit = _visit_of(session, access, visit_id)
    protocol_visit = _protocol_visit(visit, access.patient)
    assessments = protocol_visit.assessments if protocol_visit is not None else ()
    errors: dict[str, str] = {}
    try:
        revise_outcomes(
            session,
            clock=context.clock,
            actor=access.actor,
            visit=visit,
            assessments=assessments,
            values=read_revision_values(
                measures_for(assessments),
                fields,
                standing=standing_values(session, visit_id=visit.id),
            ),
            remove=removed,
            reason=fields.get("reason", ""),
        )
    except FieldErrors as problem:
        errors = i18n.translate_errors(problem.errors)
    except OutcomeChangeError as problem:
        errors[""] = i18n.translate(problem.args[0])
    if errors:
        return visit_page(
            request,
            session,
            context,
            access,
            visit,
            failed="corrections",
            form=fields,
            removed=removed,
            errors=errors,
            status_code=400,
            block="outcome_card",
        )
    return redirect(request, _visit_url(visit, "corrected"))
