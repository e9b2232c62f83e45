"""The patient's schedule in the portal: the next visit first (its window in plain words, the
appointment, confirm, ask to move it), later and past visits, a `.ics` file per visit, and a
private calendar subscription (a secret URL, revocable) that phone calendars follow.

Patients see their own schedule; caregivers each linked patient whose link allows seeing the
schedule; coordinators the patients in their scope."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_time
from fastapi import Depends, Form, Query, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.orm import Session

from coordination.followup.calendar import (
    FEED_ROLES,
    FeedNotAllowed,
    active_feed,
    create_feed,
    feed_by_token,
    feed_ics,
    revoke_feed,
    visit_ics,
    visit_label,
)
from coordination.followup.models import MoveRequest, Visit, VisitStatus
from coordination.followup.requests import open_move_requests, request_move
from coordination.followup.schedule import (
    VisitTransitionError,
    confirm_visit,
    next_visit,
    visits_for_patient,
)
from coordination.travel.requests import travel_for_visits
from core.dates import parse_day
from core.errors import FieldErrors
from core.identity.access import Permission, linked_patients, may_access_patient
from core.identity.models import User
from core.ids import PathId
from core.models import CaregiverLink, Language, Patient, ProxyRight
from core.text import N_
from portal import i18n
from portal.context import AppContext
from portal.deps import (
    ContextDep,
    PageNotFound,
    PatientAccess,
    SessionDep,
    get_context,
    require,
    require_patient,
)
from portal.routes.pages import page_router
from portal.routes.questionnaires_due import by_visit, due_lines
from portal.web import is_htmx, redirect, render
from portal.words import word

router = page_router()
_ = i18n.gettext

ScheduleViewer = Annotated[PatientAccess, Depends(require_patient(Permission.SCHEDULE_VIEW))]
ScheduleResponder = Annotated[PatientAccess, Depends(require_patient(Permission.SCHEDULE_RESPOND))]
VisitId = PathId

# Shown after a redirect; keys in the URL, never names.
NOTICES = {
    "confirmed": N_("Thank you: the appointment is confirmed."),
    "move_requested": N_(
        "Your request is sent. Your care team will contact you to agree on a new date."
    ),
    "feed_revoked": N_("The calendar subscription is stopped. Its link no longer works."),
}
CONFIRMABLE = (VisitStatus.SCHEDULED, VisitStatus.RESCHEDULED)


# --- what the pages show ---------------------------------------------------------------


@dataclass(frozen=True)
class VisitView:
    """One visit as the reader sees it: its label and dates in their language."""

    visit: Visit
    label: str
    status_text: str
    appointment_day: date | None = None
    appointment_time: str | None = None
    can_confirm: bool = False
    move_request: MoveRequest | None = None

    @property
    def id(self) -> int:
        return self.visit.id

    @property
    def is_booked(self) -> bool:
        return self.visit.appointment_at is not None


def visit_view(
    visit: Visit, *, patient: Patient, with_requests: Session | None = None
) -> VisitView:
    """`visit` in the reader's language; `with_requests` (a session) also looks up its open
    move request (for the next visit only: one query)."""
    language = i18n.current_language().value
    day: date | None = None
    at: str | None = None
    if visit.appointment_at is not None:
        zone = ZoneInfo(visit.appointment_zone or patient.time_zone)
        local = visit.appointment_at.astimezone(zone)
        day = local.date()
        at = format_time(local, format="short", tzinfo=zone, locale=Locale.parse(language))
    requests = (
        open_move_requests(with_requests, visit_id=visit.id) if with_requests is not None else []
    )
    return VisitView(
        visit=visit,
        label=visit_label(visit, therapy_code=patient.therapy.code, language=language),
        status_text=word("patient_visit_status", visit.status),
        appointment_day=day,
        appointment_time=at,
        can_confirm=visit.status in CONFIRMABLE,
        move_request=requests[-1] if requests else None,
    )


@dataclass(frozen=True)
class ScheduleView:
    next: VisitView | None
    later: list[VisitView]
    past: list[VisitView]


def schedule_view(session: Session, *, patient: Patient) -> ScheduleView:
    """The next visit, the later open ones in date order, the past ones newest first."""
    visits = visits_for_patient(session, patient_id=patient.id)
    upcoming = next_visit(visits)
    return ScheduleView(
        next=(
            visit_view(upcoming, patient=patient, with_requests=session)
            if upcoming is not None
            else None
        ),
        later=[
            visit_view(visit, patient=patient)
            for visit in visits
            if visit.status.is_open and visit is not upcoming
        ],
        past=[
            visit_view(visit, patient=patient)
            for visit in reversed(visits)
            if visit.status.is_final
        ],
    )


def person_summary(
    session: Session,
    *,
    patient: Patient,
    link: CaregiverLink | None,
    visits: list[Visit] | None = None,
) -> dict[str, Any]:
    """What the home page shows for one person: their next visit (when the reader may see
    the schedule) and whether the reader may report a health event for them. `visits`, the
    patient's visits in date order when already read (the home page reads everyone's at
    once), saves reading them again; they are used only if the reader may see the schedule."""
    rights = link.rights() if link is not None else None
    sees_schedule = rights is None or ProxyRight.VIEW_SCHEDULE in rights
    upcoming: Visit | None = None
    if sees_schedule:
        if visits is None:
            visits = visits_for_patient(session, patient_id=patient.id)
        upcoming = next_visit(visits)
    return {
        "patient": patient,
        "link": link,
        "rights": rights,
        "sees_schedule": sees_schedule,
        "next": visit_view(upcoming, patient=patient) if upcoming is not None else None,
        "can_report": rights is None or ProxyRight.REPORT_EVENTS in rights,
        # Confirming or asking to move a visit takes its own right, not only seeing it.
        "may_respond": rights is None or ProxyRight.MANAGE_VISITS in rights,
    }


def _visit_of(session: Session, patient: Patient, visit_id: int) -> Visit:
    visit = session.get(Visit, visit_id)
    if visit is None or visit.patient_id != patient.id:
        raise PageNotFound()
    return visit


def _uid_domain(context: AppContext) -> str:
    return urlsplit(context.settings.public_base_url).hostname or "cgt-access"


def _feed_urls(context: AppContext, token: str) -> dict[str, str]:
    https = f"{context.settings.public_base_url}/calendar/{token}.ics"
    return {"https": https, "webcal": "webcal://" + https.split("://", 1)[1]}


def _schedule_context(session: Session, access: PatientAccess, **extra: Any) -> dict[str, Any]:
    patient, user = access.patient, access.user
    shows_feed = user.role in FEED_ROLES
    schedule = schedule_view(session, patient=patient)
    upcoming = ([schedule.next] if schedule.next else []) + schedule.later
    values: dict[str, Any] = {
        "patient": patient,
        "schedule": schedule,
        # Travel support beside each visit to come: its request, the arrangements confirmed.
        "travel": travel_for_visits(session, visit_ids=[item.id for item in upcoming]),
        "own": user.patient_id == patient.id,
        # The forms that act on a visit show only to those who may send them.
        "may_respond": may_access_patient(
            session, user=user, patient=patient, permission=Permission.SCHEDULE_RESPOND
        ),
        "shows_feed": shows_feed,
        "feed": (
            active_feed(session, user_id=user.id, patient_id=patient.id) if shows_feed else None
        ),
        "feed_urls": None,
        "notice": None,
        "error": None,
        "move_errors": {},
        "move_form": {"preferred_date": "", "note": ""},
        "zone": patient.time_zone,
        # After a form post, the language switch comes back to the page, not the form's URL.
        "current_path": f"/care/{patient.id}/schedule",
    }
    values.update(extra)
    return values


def _schedule_page(
    request: Request,
    session: Session,
    access: PatientAccess,
    *,
    block: str | None = None,
    status_code: int = 200,
    **extra: Any,
) -> Response:
    """The schedule page, or only `block` of it for htmx. htmx does not swap 4xx answers,
    so a refusal reaches htmx as 200 with the message in the block."""
    if block is not None and is_htmx(request):
        status_code = 200
    # The questionnaires the protocol asks for, beside their visits (coming ones too).
    may_answer = may_access_patient(
        session,
        user=access.user,
        patient=access.patient,
        permission=Permission.QUESTIONNAIRE_ANSWER,
    )
    due = by_visit(
        due_lines(
            session,
            clock=get_context(request).clock,
            patient=access.patient,
            may_answer=may_answer,
            include_future=True,
        )
    )
    return render(
        request,
        "portal/schedule.html",
        _schedule_context(session, access, due=due, **extra),
        block=block,
        status_code=status_code,
    )


def _home_card(request: Request, session: Session, access: PatientAccess, **extra: Any) -> Response:
    """The home page's card of one person (after a confirm sent from the home page)."""
    link = next(
        (
            found
            for patient, found in linked_patients(session, user=access.user)
            if patient.id == access.patient.id
        ),
        None,
    )
    person = person_summary(session, patient=access.patient, link=link)
    return render(request, "portal/home.html", {"person": person, **extra}, block="visit_card")


# --- pages ---------------------------------------------------------------------------


@router.get("/schedule", name="my_schedule")
def my_schedule(
    request: Request,
    session: SessionDep,
    user: Annotated[User, Depends(require(Permission.SCHEDULE_VIEW))],
) -> Response:
    """A patient's own schedule; a caregiver's only patient's, or a list to choose from."""
    if user.role.is_staff:
        return redirect(request, "/worklist")
    people = linked_patients(session, user=user, right=ProxyRight.VIEW_SCHEDULE)
    if len(people) == 1:
        return redirect(request, f"/care/{people[0][0].id}/schedule")
    return render(request, "portal/schedule_choose.html", {"people": people})


@router.get("/care/{patient_id}/schedule", name="care_schedule")
def care_schedule(
    request: Request,
    session: SessionDep,
    access: ScheduleViewer,
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    notice = _(NOTICES[done]) if done in NOTICES else None
    return _schedule_page(request, session, access, block="schedule", notice=notice)


@router.post("/care/{patient_id}/visits/{visit_id}/confirm", name="care_visit_confirm")
def care_visit_confirm(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ScheduleResponder,
    visit_id: VisitId,
    view: Annotated[str, Form(max_length=16)] = "schedule",
) -> Response:
    """Confirm a booked appointment. From the home page (`view=home`) htmx gets that page's
    card back; without JavaScript, a redirect to where the button was."""
    visit = _visit_of(session, access.patient, visit_id)
    try:
        confirm_visit(session, clock=context.clock, actor=access.actor, visit=visit)
    except VisitTransitionError as problem:
        message = i18n.translate(problem.args[0])
        if view == "home" and is_htmx(request):
            return _home_card(request, session, access, card_error=message)
        return _schedule_page(
            request, session, access, block="next_visit", status_code=400, card_error=message
        )
    if is_htmx(request):
        if view == "home":
            return _home_card(request, session, access, card_notice=_(NOTICES["confirmed"]))
        return _schedule_page(
            request, session, access, block="next_visit", card_notice=_(NOTICES["confirmed"])
        )
    base = "/home" if view == "home" else f"/care/{access.patient.id}/schedule"
    return redirect(request, f"{base}?done=confirmed")


def _preferred_day(value: str) -> date | None:
    try:
        return parse_day(value)
    except ValueError:
        raise FieldErrors({"preferred_date": N_("Enter a date like 2027-03-14.")}) from None


@router.post("/care/{patient_id}/visits/{visit_id}/move", name="care_visit_move")
def care_visit_move(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ScheduleResponder,
    visit_id: VisitId,
    preferred_date: Annotated[str, Form(max_length=20)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Ask the care team to move a visit (a preferred date and a short note); it lands on
    the coordinator's worklist. A second request replaces the first."""
    visit = _visit_of(session, access.patient, visit_id)
    try:
        request_move(
            session,
            clock=context.clock,
            actor=access.actor,
            visit=visit,
            preferred_date=_preferred_day(preferred_date),
            note=note,
        )
    except FieldErrors as problem:
        return _schedule_page(
            request,
            session,
            access,
            block="next_visit",
            status_code=400,
            move_errors=i18n.translate_errors(problem.errors),
            move_form={"preferred_date": preferred_date, "note": note},
        )
    if is_htmx(request):
        return _schedule_page(
            request, session, access, block="next_visit", card_notice=_(NOTICES["move_requested"])
        )
    return redirect(request, f"/care/{access.patient.id}/schedule?done=move_requested")


@router.get("/care/{patient_id}/visits/{visit_id}.ics", name="care_visit_ics")
def care_visit_ics(
    session: SessionDep, context: ContextDep, access: ScheduleViewer, visit_id: VisitId
) -> Response:
    """One visit as a calendar file, in the reader's language (no name in the file name)."""
    patient = access.patient
    visit = _visit_of(session, patient, visit_id)
    language = i18n.current_language().value
    body = visit_ics(
        visit,
        clock=context.clock,
        patient_zone=patient.time_zone,
        label=visit_label(visit, therapy_code=patient.therapy.code, language=language),
        program_name=patient.state.program_name,
        program_phone=patient.state.program_phone,
        location=visit.location,
        uid_domain=_uid_domain(context),
        language=language,
        translate=i18n.translate,
    )
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="visit.ics"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/care/{patient_id}/calendar-feed", name="care_feed_create")
def care_feed_create(
    request: Request, session: SessionDep, context: ContextDep, access: ScheduleViewer
) -> Response:
    """Start a subscription (replacing the reader's previous one for this patient) and show
    its secret URL, once: it is never put in a redirect, a log or the database."""
    try:
        token = create_feed(
            session,
            clock=context.clock,
            user=access.user,
            patient=access.patient,
            actor=access.actor,
        )
    except FeedNotAllowed as problem:
        return _schedule_page(
            request,
            session,
            access,
            block="feed",
            status_code=400,
            feed_error=i18n.translate(problem.args[0]),
        )
    return _schedule_page(
        request, session, access, block="feed", feed_urls=_feed_urls(context, token)
    )


@router.post("/care/{patient_id}/calendar-feed/revoke", name="care_feed_revoke")
def care_feed_revoke(
    request: Request, session: SessionDep, context: ContextDep, access: ScheduleViewer
) -> Response:
    revoke_feed(
        session, clock=context.clock, user=access.user, patient=access.patient, actor=access.actor
    )
    if is_htmx(request):
        return _schedule_page(
            request, session, access, block="feed", feed_notice=_(NOTICES["feed_revoked"])
        )
    return redirect(request, f"/care/{access.patient.id}/schedule?done=feed_revoked")


def _translator(language: Language) -> Callable[[str], str]:
    """The feed is written in its owner's language, whatever the fetching app asks for."""
    i18n.set_language(language)
    return i18n.translate


@router.get("/calendar/{token}.ics", name="calendar_feed")
def calendar_feed(session: SessionDep, context: ContextDep, token: str) -> Response:
    """A subscribed calendar's fetch. Public: the token is the secret. It is checked anew
    each time (revoked feed, removed right, deactivated account: 404)."""
    feed = feed_by_token(session, token=token)
    body = (
        feed_ics(
            session,
            clock=context.clock,
            feed=feed,
            uid_domain=_uid_domain(context),
            translator=_translator,
        )
        if feed is not None
        else None
    )
    if body is None:
        return PlainTextResponse(
            "This calendar link does not work (any more).\n",
            status_code=404,
            headers={"Cache-Control": "no-store"},
        )
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={
            "Content-Disposition": 'inline; filename="follow-up.ics"',
            "Cache-Control": "no-store",
        },
    )
