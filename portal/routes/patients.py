"""Coordinators' pages: the patient list, enrolment, a patient's record (with the follow-up
schedule and the timeline), editing it, outreach notes. Caregivers and invitations are in
`caregivers.py`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from coordination.followup.models import OutreachChannel, OutreachOutcome, VisitStatus
from coordination.followup.notes import add_outreach_note
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import next_visit, visits_for_patient
from coordination.records import change_record, enrol_patient
from coordination.texting.consent import (
    ConsentBox,
    ConsentTick,
    CoordinatorConsent,
    consent_box,
    tick_kept,
)

# Re-exported: the caregiver form (caregivers.py) reads its wording the same way.
from coordination.texting.consent import consent_language as consent_language
from coordination.travel.record import travel_for_record
from coordination.worklist.texts_page import numbers_of_patient
from coordination.worklist.timeline import patient_timeline, visit_labels
from core.caregivers import caregiver_links
from core.errors import FieldErrors
from core.identity.access import Permission, role_allows
from core.identity.invitations import invitations_for_patient
from core.identity.models import User
from core.ids import parse_id
from core.models import Language, Patient, PatientStatus, ProxyRight
from core.patient_list import PatientCriteria, patient_list_page
from core.reference import list_centers, list_states, list_therapies
from core.service import (
    PatientInput,
    patient_input_from,
    read_patient_input,
)
from core.text import N_
from portal import i18n
from portal.context import AppContext
from portal.deps import (
    ContextDep,
    PatientAccess,
    SessionDep,
    actor_for,
    get_context,
    require,
    require_patient,
)
from portal.routes.pages import page_router
from portal.routes.questionnaires_due import due_lines, questionnaire_counts
from portal.routes.visits import appointment_text, measure_labels
from portal.web import redirect, render

router = page_router()
_ = i18n.gettext
PER_PAGE = 25
TIMELINE_LENGTH = 50

Coordinator = Annotated[User, Depends(require(Permission.PATIENT_LIST))]
Enroller = Annotated[User, Depends(require(Permission.PATIENT_ENROLL))]
RecordReader = Annotated[PatientAccess, Depends(require_patient(Permission.RECORD_VIEW))]
RecordEditor = Annotated[PatientAccess, Depends(require_patient(Permission.PATIENT_EDIT))]
NoteWriter = Annotated[PatientAccess, Depends(require_patient(Permission.NOTES_WRITE))]

# Shown after a redirect; keys in the URL, never names.
NOTICES = {
    "enrolled": N_("The patient is enrolled."),
    "saved": N_("The changes are saved."),
    "invited_sms": N_("The invitation was texted."),
    "caregiver_added": N_("The caregiver is added."),
    "rights_saved": N_("The proxy rights are saved."),
    "note_added": N_("The outreach note is saved."),
}


class ConsentFields(BaseModel):
    """The consent box of a form: the tick, and the wording the page showed in each language."""

    sms_consent: str = Field("", max_length=8)
    sms_wording_en: str = Field("", max_length=1000)
    sms_wording_es: str = Field("", max_length=1000)

    def tick(self, language: str) -> ConsentTick:
        """The box, with the wording shown in `language` (the one read to the person)."""
        shown = self.sms_wording_es if language == Language.ES else self.sms_wording_en
        return ConsentTick(agreed=self.sms_consent == "yes", shown=shown)


CONSENT_FIELDS = set(ConsentFields.model_fields)


def box_context(box: ConsentBox, *, agreed: bool) -> dict[str, Any]:
    """The consent box as the form's template reads it, with the box ticked or not."""
    return {"wordings": box.wordings, "agreed": agreed, "number": box.number, "zone": box.zone}


def form_consent_box(
    session: Session,
    app: AppContext,
    *,
    viewer: User,
    state_id: int | str | None,
    phone_typed: str = "",
    phone_on_file: str | None = None,
    zone: str = "",
) -> ConsentBox:
    """The consent box of `viewer`'s form (see `consent_box`); `state_id` may be the form's
    text."""
    if isinstance(state_id, str):
        state_id = parse_id(state_id)
    return consent_box(
        session,
        default_program=app.settings.program_name,
        state_id=state_id,
        phone_typed=phone_typed,
        phone_on_file=phone_on_file,
        zone=zone,
        viewer=viewer,
    )


def consent_context(
    session: Session,
    app: AppContext,
    *,
    viewer: User,
    state_id: int | str | None,
    phone_typed: str = "",
    phone_on_file: str | None = None,
    zone: str = "",
    agreed: bool = False,
) -> dict[str, Any]:
    """The consent box of a form, for its template, with the box as typed."""
    box = form_consent_box(
        session,
        app,
        viewer=viewer,
        state_id=state_id,
        phone_typed=phone_typed,
        phone_on_file=phone_on_file,
        zone=zone,
    )
    return box_context(box, agreed=agreed)


def _form_consent_problems(consent: CoordinatorConsent, form: PatientInput) -> dict[str, str]:
    """The consent box's problems, to show with the fields' own when the form cannot even
    be read (the use case checks the box again with the typed values)."""
    return consent.problems(
        preferred_language=form.preferred_language, phone_typed=form.mobile_phone
    )


class PatientForm(ConsentFields):
    given_name: str = Field("", max_length=200)
    family_name: str = Field("", max_length=200)
    birth_date: str = Field("", max_length=20)
    medicaid_id: str = Field("", max_length=64)
    center_mrn: str = Field("", max_length=64)
    state_id: str = Field("", max_length=12)
    center_id: str = Field("", max_length=12)
    therapy_id: str = Field("", max_length=12)
    preferred_language: str = Field("en", max_length=5)
    time_zone: str = Field("", max_length=64)
    mobile_phone: str = Field("", max_length=40)
    infusion_date: str = Field("", max_length=20)
    status: str = Field(PatientStatus.ENROLLED.value, max_length=32)


def _criteria(state_id: str, center_id: str, status: str, text: str = "") -> PatientCriteria:
    try:
        chosen_status = PatientStatus(status) if status else None
    except ValueError:
        chosen_status = None
    return PatientCriteria(
        text=text or None,
        state_id=parse_id(state_id),
        center_id=parse_id(center_id),
        status=chosen_status,
    )


def _list_page(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: User,
    criteria: PatientCriteria,
    page: int,
) -> Response:
    listed = patient_list_page(
        session,
        clock=context.clock,
        actor=actor_for(request, user),
        user=user,
        criteria=criteria,
        page=page,
        per_page=PER_PAGE,
    )
    patients, total, page, pages = listed.patients, listed.total, listed.page, listed.pages
    return render(
        request,
        "portal/patients.html",
        {
            "patients": patients,
            "total": total,
            "page": page,
            "pages": pages,
            "criteria": criteria,
            "states": list_states(session, state_ids=user.state_ids),
            "centers": list_centers(session, state_ids=user.state_ids),
            "statuses": list(PatientStatus),
        },
        block="results",
    )


@router.get("/patients", name="patients")
def patients(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Coordinator,
    state: Annotated[str, Query(max_length=12)] = "",
    center: Annotated[str, Query(max_length=12)] = "",
    status: Annotated[str, Query(max_length=32)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """The list, filtered by state, center and status (safe to keep in a URL)."""
    return _list_page(request, session, context, user, _criteria(state, center, status), page)


@router.post("/patients/search", name="patients_search")
def patients_search(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Coordinator,
    q: Annotated[str, Form(max_length=100)] = "",
    state: Annotated[str, Form(max_length=12)] = "",
    center: Annotated[str, Form(max_length=12)] = "",
    status: Annotated[str, Form(max_length=32)] = "",
    page: Annotated[int, Form(ge=1, le=100_000)] = 1,
) -> Response:
    """Searching by name or ID is a POST, so that names never end up in URLs and logs."""
    return _list_page(
        request, session, context, user, _criteria(state, center, status, q.strip()), page
    )


def _form_choices(session: SessionDep, user: User) -> dict[str, object]:
    return {
        "states": list_states(session, state_ids=user.state_ids),
        "centers": list_centers(session, state_ids=user.state_ids),
        "therapies": list_therapies(session),
        "statuses": list(PatientStatus),
    }


@router.get("/patients/new", name="patient_new")
def patient_new(
    request: Request, session: SessionDep, context: ContextDep, user: Enroller
) -> Response:
    states = list_states(session, state_ids=user.state_ids)
    form = PatientInput(state_id=str(states[0].id) if len(states) == 1 else "")
    return render(
        request,
        "portal/patient_form.html",
        {
            "form": form,
            "mode": "new",
            "consent": consent_context(session, context, viewer=user, state_id=form.state_id),
            **_form_choices(session, user),
        },
    )


@router.post("/patients/new", name="patient_create")
def patient_create(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Enroller,
    data: Annotated[PatientForm, Form()],
) -> Response:
    form = PatientInput(**data.model_dump(exclude=CONSENT_FIELDS))
    # The wording recorded is the one shown in the patient's language, for the chosen state.
    consent = CoordinatorConsent(
        box=form_consent_box(
            session,
            context,
            viewer=user,
            state_id=form.state_id,
            phone_typed=form.mobile_phone,
            zone=form.time_zone.strip(),
        ),
        tick=data.tick(consent_language(form.preferred_language)),
    )
    try:
        patient = enrol_patient(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            library=shipped_protocols(),
            data=read_patient_input(form, other_errors=_form_consent_problems(consent, form)),
            allowed_state_ids=user.state_ids,
            consent=consent,
        ).patient
    except FieldErrors as problem:
        form.errors = i18n.translate_errors(problem.errors)
        kept = box_context(consent.box, agreed=tick_kept(consent.tick, errors=problem.errors))
        return render(
            request,
            "portal/patient_form.html",
            {"form": form, "mode": "new", "consent": kept, **_form_choices(session, user)},
            status_code=400,
        )
    return redirect(request, f"/patients/{patient.id}?done=enrolled")


def record_page(
    request: Request,
    session: Session,
    patient: Patient,
    *,
    viewer: User,
    notice: str | None = None,
    note_form: dict[str, str] | None = None,
    note_errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """The patient's record: facts, portal access, caregivers, the follow-up schedule, the
    travel requests, the outreach-note form and the timeline. A fixed number of queries,
    whatever the history."""
    library = shipped_protocols()
    # Travel's details (a decline's reason, the link to costs and needs) are for those who
    # arrange travel; the timeline's travel lines never carry costs or needs.
    arranges_travel = role_allows(viewer, Permission.TRAVEL_ARRANGE)
    visits = visits_for_patient(session, patient_id=patient.id)
    labels = visit_labels(
        library,
        therapy_code=patient.therapy.code,
        visits=visits,
        language=i18n.current_language().value,
    )
    coming = next_visit(visits)
    context: dict[str, Any] = {
        "patient": patient,
        "links": caregiver_links(session, patient_id=patient.id),
        "invitations": invitations_for_patient(session, patient_id=patient.id),
        "rights": list(ProxyRight),
        "notice": notice,
        "visits": visits,
        "visit_labels": labels,
        "appointments": {visit.id: appointment_text(visit, patient) for visit in visits},
        "next_visit_id": coming.id if coming is not None else None,
        "completed_count": sum(1 for visit in visits if visit.status is VisitStatus.COMPLETED),
        "has_protocol": library.current(patient.therapy.code) is not None,
        "timeline": patient_timeline(session, patient_id=patient.id, limit=TIMELINE_LENGTH),
        "arranges_travel": arranges_travel,
        "travel": travel_for_record(session, patient_id=patient.id) if arranges_travel else [],
        "measure_labels": measure_labels(),
        "note_form": note_form or {"channel": "call", "outcome": "", "note": "", "next_step": ""},
        "note_errors": note_errors or {},
        "channels": list(OutreachChannel),
        "outcomes": list(OutreachOutcome),
        "texting_numbers": numbers_of_patient(session, patient=patient, with_history=False),
        # The questionnaires the protocol asked for so far, counted by status (a fixed number
        # of queries); the questionnaires page lists them.
        "questionnaires_due": questionnaire_counts(
            due_lines(
                session,
                clock=get_context(request).clock,
                patient=patient,
                may_answer=False,
                for_staff=True,
            )
        ),
    }
    return render(request, "portal/patient.html", context, status_code=status_code)


@router.get("/patients/{patient_id}", name="patient_record")
def patient_record(
    request: Request,
    session: SessionDep,
    access: RecordReader,
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    return record_page(
        request,
        session,
        access.patient,
        viewer=access.user,
        notice=_(NOTICES[done]) if done in NOTICES else None,
    )


class NoteForm(BaseModel):
    channel: str = Field("", max_length=16)
    outcome: str = Field("", max_length=16)
    note: str = Field("", max_length=2000)
    next_step: str = Field("", max_length=600)


@router.post("/patients/{patient_id}/notes", name="patient_note")
def patient_note(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: NoteWriter,
    data: Annotated[NoteForm, Form()],
) -> Response:
    """A coordinator records an outreach attempt; it shows on the timeline."""
    try:
        add_outreach_note(
            session,
            clock=context.clock,
            actor=access.actor,
            patient=access.patient,
            channel=data.channel,
            outcome=data.outcome,
            note=data.note,
            next_step=data.next_step,
        )
    except FieldErrors as problem:
        return record_page(
            request,
            session,
            access.patient,
            viewer=access.user,
            note_form=data.model_dump(),
            note_errors=i18n.translate_errors(problem.errors),
            status_code=400,
        )
    return redirect(request, f"/patients/{access.patient.id}?done=note_added")


@router.get("/patients/{patient_id}/edit", name="patient_edit")
def patient_edit(
    request: Request, session: SessionDep, context: ContextDep, access: RecordEditor
) -> Response:
    patient = access.patient
    return render(
        request,
        "portal/patient_form.html",
        {
            "form": patient_input_from(patient),
            "mode": "edit",
            "patient": patient,
            "consent": consent_context(
                session,
                context,
                viewer=access.user,
                state_id=patient.state_id,
                phone_on_file=patient.mobile_phone,
                zone=patient.time_zone,
            ),
            **_form_choices(session, access.user),
        },
    )


@router.post("/patients/{patient_id}/edit", name="patient_update")
def patient_update(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: RecordEditor,
    data: Annotated[PatientForm, Form()],
) -> Response:
    form = PatientInput(**data.model_dump(exclude=CONSENT_FIELDS))
    # A number that opted out is only opted in again by this explicit tick (never pre-ticked).
    consent = CoordinatorConsent(
        box=form_consent_box(
            session,
            context,
            viewer=access.user,
            state_id=form.state_id,
            phone_typed=form.mobile_phone,
            phone_on_file=access.patient.mobile_phone,
            zone=access.patient.time_zone,
        ),
        tick=data.tick(consent_language(form.preferred_language)),
    )
    try:
        change_record(
            session,
            clock=context.clock,
            actor=access.actor,
            library=shipped_protocols(),
            patient=access.patient,
            data=read_patient_input(form, other_errors=_form_consent_problems(consent, form)),
            allowed_state_ids=access.user.state_ids,
            consent=consent,
        )
    except FieldErrors as problem:
        form.errors = i18n.translate_errors(problem.errors)
        kept = box_context(consent.box, agreed=tick_kept(consent.tick, errors=problem.errors))
        return render(
            request,
            "portal/patient_form.html",
            {
                "form": form,
                "mode": "edit",
                "patient": access.patient,
                "consent": kept,
                **_form_choices(session, access.user),
            },
            status_code=400,
        )
    return redirect(request, f"/patients/{access.patient.id}?done=saved")
