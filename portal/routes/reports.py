"""Health events reported between visits: the patient's or caregiver's short form, and the
coordinator's review (confirm, after correcting if needed, or dismiss with a reason)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from coordination.followup.health_events import (
    DETAILS_MAX,
    AlreadyReviewed,
    earliest_day,
    get_report,
    people_of,
    review_report,
    submit_report,
)
from coordination.followup.models import PatientReport, ReportKind
from core.clock import Clock, local_today
from core.dates import parse_day_or_none
from core.errors import FieldErrors
from core.identity.access import Permission
from core.identity.models import Role
from core.ids import PathId, QueryId
from core.text import N_
from portal import i18n
from portal.deps import ContextDep, PageNotFound, PatientAccess, SessionDep, require_patient
from portal.routes.pages import page_router
from portal.web import is_htmx, redirect, render

router = page_router()

ReportAccess = Annotated[PatientAccess, Depends(require_patient(Permission.EVENTS_REPORT))]
ReviewAccess = Annotated[PatientAccess, Depends(require_patient(Permission.REPORT_REVIEW))]
ReportId = PathId

# Shown after a redirect; keys in the URL, never names.
NOTICES = {
    "confirmed": N_("The report is confirmed and added to the record."),
    "dismissed": N_("The report is dismissed."),
}
# Generous on purpose: the service refuses more than 500 characters with a message in
# words; this limit only stops floods (beyond it the request is refused as malformed).
TEXT_LIMIT = 5_000


class ReportForm(BaseModel):
    kind: str = Field("", max_length=32)
    occurred_on: str = Field("", max_length=32)
    details: str = Field("", max_length=TEXT_LIMIT)


class ReviewForm(ReportForm):
    decision: str = Field("", max_length=16)
    note: str = Field("", max_length=TEXT_LIMIT)  # confirming: optional
    reason: str = Field("", max_length=TEXT_LIMIT)  # dismissing: required


# --- the patient's or caregiver's form -------------------------------------------------


def _form_context(
    access: PatientAccess, clock: Clock, *, form: dict[str, str], errors: dict[str, str]
) -> dict[str, Any]:
    today = local_today(clock, access.patient.time_zone)
    return {
        "patient": access.patient,
        "for_self": access.user.role is Role.PATIENT,
        "kinds": list(ReportKind),
        "form": form,
        "errors": errors,
        "today": today.isoformat(),
        "earliest": earliest_day(today).isoformat(),
        "details_max": DETAILS_MAX,
    }


@router.get("/care/{patient_id}/report", name="care_report")
def care_report(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ReportAccess,
    sent: QueryId = None,
) -> Response:
    """The form; after sending (`?sent=<id>`, from the redirect), the thank-you page."""
    if sent is not None:
        report = get_report(session, patient_id=access.patient.id, report_id=sent)
        return render(
            request,
            "portal/report_thanks.html",
            {
                "patient": access.patient,
                "for_self": access.user.role is Role.PATIENT,
                "report": report,
            },
        )
    form = {"kind": "", "occurred_on": "", "details": ""}
    return render(
        request,
        "portal/report_form.html",
        _form_context(access, context.clock, form=form, errors={}),
        block="report",
    )


@router.post("/care/{patient_id}/report", name="care_report_submit")
def care_report_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ReportAccess,
    data: Annotated[ReportForm, Form()],
) -> Response:
    try:
        report = submit_report(
            session,
            clock=context.clock,
            actor=access.actor,
            patient=access.patient,
            kind=data.kind,
            occurred_on=parse_day_or_none(data.occurred_on),
            details=data.details,
        )
    except FieldErrors as problem:
        return render(
            request,
            "portal/report_form.html",
            _form_context(
                access,
                context.clock,
                form=data.model_dump(),
                errors=i18n.translate_errors(problem.errors),
            ),
            block="report",
            status_code=400,
        )
    if is_htmx(request):  # the form's card becomes the thank-you card
        return render(
            request,
            "portal/report_thanks.html",
            {
                "patient": access.patient,
                "for_self": access.user.role is Role.PATIENT,
                "report": report,
            },
            block="report",
        )
    return redirect(request, f"/care/{access.patient.id}/report?sent={report.id}")


# --- the coordinator's review ----------------------------------------------------------


def _review_context(
    session: Session,
    access: PatientAccess,
    report: PatientReport,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
) -> dict[str, Any]:
    return {
        "patient": access.patient,
        "report": report,
        "people": people_of(session, report=report),
        "kinds": list(ReportKind),
        # The report's values, with what was just typed in the form that was sent.
        "form": {
            "kind": report.kind.value,
            "occurred_on": report.occurred_on.isoformat(),
            "details": report.details or "",
            "note": "",
            "reason": "",
            **(form or {}),
        },
        "errors": errors or {},
        "notice": notice,
        "details_max": DETAILS_MAX,
    }


def _report_or_404(session: Session, access: PatientAccess, report_id: int) -> PatientReport:
    report = get_report(session, patient_id=access.patient.id, report_id=report_id)
    if report is None:
        raise PageNotFound()
    return report


@router.get("/patients/{patient_id}/reports/{report_id}", name="report_review")
def report_review(
    request: Request,
    session: SessionDep,
    access: ReviewAccess,
    report_id: ReportId,
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    report = _report_or_404(session, access, report_id)
    notice = i18n.gettext(NOTICES[done]) if done in NOTICES else None
    return render(
        request,
        "portal/report_review.html",
        _review_context(session, access, report, notice=notice),
        block="review",
    )


@router.post("/patients/{patient_id}/reports/{report_id}", name="report_review_submit")
def report_review_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ReviewAccess,
    report_id: ReportId,
    data: Annotated[ReviewForm, Form()],
) -> Response:
    report = _report_or_404(session, access, report_id)
    dismissing = data.decision == "dismiss"
    try:
        review_report(
            session,
            clock=context.clock,
            actor=access.actor,
            report=report,
            decision=data.decision,
            kind=data.kind,
            occurred_on=parse_day_or_none(data.occurred_on),
            details=data.details,
            note=data.reason if dismissing else data.note,
        )
    except FieldErrors as problem:
        errors = i18n.translate_errors(problem.errors)
        sent = data.model_dump()
        fields = ("reason",) if dismissing else ("kind", "occurred_on", "details", "note")
        typed = {name: sent[name] for name in fields}
        if dismissing and "note" in errors:  # the dismiss form calls its note "reason"
            errors["reason"] = errors.pop("note")
        return render(
            request,
            "portal/report_review.html",
            _review_context(session, access, report, form=typed, errors=errors),
            block="review",
            status_code=409 if isinstance(problem, AlreadyReviewed) else 400,
        )
    outcome = "dismissed" if dismissing else "confirmed"
    if is_htmx(request):
        return render(
            request,
            "portal/report_review.html",
            _review_context(session, access, report, notice=i18n.gettext(NOTICES[outcome])),
            block="review",
        )
    return redirect(request, f"/patients/{access.patient.id}/reports/{report.id}?done={outcome}")
