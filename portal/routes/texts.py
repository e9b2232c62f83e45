"""A patient's text messages, for coordinators: the consent of each number (with its
history and a form to record a consent given by phone or on paper), numbers flagged by the
provider, the texts sent and received, and sending an approved one-off text or a reminder
now. Everything sent stays bound by consent, texting hours and the caps (the services say
why when they refuse)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from coordination.texting.by_hand import ManualOutcome, send_one_off, send_reminder_now
from coordination.texting.rules import MOVED_RULE, TextingHours
from coordination.texting.words import ONE_OFF
from coordination.worklist.texts_page import (
    TextsError,
    clear_number_flag,
    numbers_of_patient,
    one_off_choices,
    record_consent,
    texts_about_patient,
)
from core.db import after_commit
from core.identity.access import Permission
from core.identity.models import User
from core.models import Patient
from core.text import N_
from portal import i18n
from portal.deps import ContextDep, PatientAccess, SessionDep, require_patient
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
_ = i18n.gettext

Reader = Annotated[PatientAccess, Depends(require_patient(Permission.RECORD_VIEW))]
# Consent and a number's flag are facts of the record; texting is outreach.
ConsentKeeper = Annotated[PatientAccess, Depends(require_patient(Permission.PATIENT_EDIT))]
Texter = Annotated[PatientAccess, Depends(require_patient(Permission.NOTES_WRITE))]

# Shown after a redirect; keys in the URL, never numbers.
NOTICES = {
    "opted_in": N_("The consent is recorded: texts may go to this number."),
    "opted_out": N_("The opt-out is recorded: no more texts go to this number."),
    "flag_cleared": N_("The flag is cleared: texts may go to this number again."),
}
NO_VISIT = N_("There is no open visit to remind of: nothing was sent.")
CHOOSE_TEMPLATE = N_("Choose one of the approved messages.")


def _outcome_rows(outcomes: list[ManualOutcome]) -> list[dict[str, Any]]:
    return [
        {
            "phone": outcome.phone,
            "is_caregiver": outcome.is_caregiver,
            "queued": outcome.queued,
            "reason": i18n.translate(outcome.reason) if outcome.reason else None,
        }
        for outcome in outcomes
    ]


def texts_page(
    request: Request,
    session: Session,
    patient: Patient,
    *,
    viewer: User,
    notice: str | None = None,
    errors: list[str] | None = None,
    outcomes: list[ManualOutcome] | None = None,
    outcome_title: str | None = None,
    chosen: str = "",
    status_code: int = 200,
) -> Response:
    numbers = numbers_of_patient(session, patient=patient, viewer=viewer)
    context: dict[str, Any] = {
        "patient": patient,
        "numbers": numbers,
        "by_phone": {view.phone: view for view in numbers},
        "texts": texts_about_patient(session, patient_id=patient.id),
        "choices": one_off_choices(patient),
        "one_off_titles": {key: template.title for key, template in ONE_OFF.items()},
        "moved_rule": MOVED_RULE,
        "hours": TextingHours.of(patient.state),
        "notice": notice,
        "errors": errors or [],
        "outcomes": _outcome_rows(outcomes) if outcomes is not None else None,
        "outcome_title": outcome_title,
        "chosen": chosen,
    }
    return render(request, "portal/texts.html", context, block="texts", status_code=status_code)


@router.get("/patients/{patient_id}/texts", name="patient_texts")
def patient_texts(
    request: Request,
    session: SessionDep,
    access: Reader,
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """The page; reading it is audited like reading the record (by `require_patient`)."""
    return texts_page(
        request,
        session,
        access.patient,
        viewer=access.user,
        notice=_(NOTICES[done]) if done in NOTICES else None,
    )


@router.post("/patients/{patient_id}/texts/consent", name="patient_texts_consent")
def patient_texts_consent(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ConsentKeeper,
    phone: Annotated[str, Form(max_length=20)] = "",
    decision: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Record the answer a person gave by phone or on paper (opt in or out)."""
    if decision not in ("opt_in", "opt_out"):
        return texts_page(
            request,
            session,
            access.patient,
            viewer=access.user,
            errors=[_("Choose whether the person agreed to get texts or asked to stop.")],
            status_code=400,
        )
    try:
        record_consent(
            session,
            clock=context.clock,
            actor=access.actor,
            patient=access.patient,
            phone=phone,
            agreed=decision == "opt_in",
            viewer=access.user,
        )
    except TextsError as problem:
        return texts_page(
            request,
            session,
            access.patient,
            viewer=access.user,
            errors=[i18n.translate(str(problem))],
            status_code=400,
        )
    done = "opted_in" if decision == "opt_in" else "opted_out"
    return redirect(request, f"/patients/{access.patient.id}/texts?done={done}")


@router.post("/patients/{patient_id}/texts/flag", name="patient_texts_clear_flag")
def patient_texts_clear_flag(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ConsentKeeper,
    phone: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """A coordinator checked a number the provider refused for good: clear its flag."""
    try:
        clear_number_flag(
            session,
            clock=context.clock,
            actor=access.actor,
            patient=access.patient,
            phone=phone,
            viewer=access.user,
        )
    except TextsError as problem:
        return texts_page(
            request,
            session,
            access.patient,
            viewer=access.user,
            errors=[i18n.translate(str(problem))],
            status_code=400,
        )
    return redirect(request, f"/patients/{access.patient.id}/texts?done=flag_cleared")


def _after_sending(
    request: Request,
    session: Session,
    context: ContextDep,
    access: PatientAccess,
    outcomes: list[ManualOutcome],
    title: str,
    *,
    chosen: str = "",
) -> Response:
    if any(outcome.queued for outcome in outcomes):
        # Sent right after the commit; the dispatcher job would pick it up anyway.
        after_commit(session, context.wake_dispatcher)
    return texts_page(
        request,
        session,
        access.patient,
        viewer=access.user,
        outcomes=outcomes,
        outcome_title=title,
        errors=[_(NO_VISIT)] if not outcomes else None,
        chosen=chosen,
    )


@router.post("/patients/{patient_id}/texts/send", name="patient_texts_send")
def patient_texts_send(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: Texter,
    template: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Send an approved one-off text to the patient and the caregivers who get reminders."""
    if template not in ONE_OFF:
        return texts_page(
            request,
            session,
            access.patient,
            viewer=access.user,
            errors=[_(CHOOSE_TEMPLATE)],
            status_code=400,
        )
    outcomes = send_one_off(
        session,
        clock=context.clock,
        actor=access.actor,
        patient=access.patient,
        template_key=template,
    )
    return _after_sending(
        request,
        session,
        context,
        access,
        outcomes,
        _("Message: %(title)s") % {"title": _(ONE_OFF[template].title)},
        chosen=template,
    )


@router.post("/patients/{patient_id}/texts/remind", name="patient_texts_remind")
def patient_texts_remind(
    request: Request, session: SessionDep, context: ContextDep, access: Texter
) -> Response:
    """Send a reminder about the next visit now, to the patient and caregivers who get them."""
    outcomes = send_reminder_now(
        session, clock=context.clock, actor=access.actor, patient=access.patient
    )
    return _after_sending(
        request, session, context, access, outcomes, _("Reminder of the next visit")
    )
