"""What patients and caregivers report between visits (a pain crisis, an emergency room
visit, a hospital stay), and the coordinator's review of it.

A report starts NEW and lands on the worklist. The coordinator either confirms it, after
correcting what was reported if needed, and it becomes an Observation in `core` (source:
patient, so the FHIR adapter and the outcome measures count it), or dismisses it with a
reason (a duplicate, a mistake). A report is reviewed once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from coordination.followup.models import PatientReport, ReportKind, ReportStatus
from coordination.followup.outcomes import LTFU_SYSTEM, Measure, observation_for
from core.audit.service import Actor, record_event
from core.clock import Clock, local_today
from core.errors import FieldErrors
from core.identity.models import Role, User
from core.models import Caregiver, CaregiverLink, Observation, ObservationSource, Patient
from core.text import N_

DETAILS_MAX = 500
NOTE_MAX = 500
DECISIONS = ("confirm", "dismiss")

# What a confirmed report becomes: one coded Observation per kind of event.
REPORT_MEASURES: dict[ReportKind, Measure] = {
    ReportKind.PAIN_CRISIS: Measure(
        "pain_crisis", N_("Pain crisis"), LTFU_SYSTEM, "pain-crisis",
        "Pain crisis reported between visits", "text",
    ),
    ReportKind.EMERGENCY_VISIT: Measure(
        "emergency_visit", N_("Emergency room visit"), LTFU_SYSTEM, "emergency-visit",
        "Emergency department visit reported between visits", "text",
    ),
    ReportKind.HOSPITAL_STAY: Measure(
        "hospital_stay", N_("Hospital stay"), LTFU_SYSTEM, "hospital-stay",
        "Hospital stay reported between visits", "text",
    ),
}  # fmt: skip


class AlreadyReviewed(FieldErrors):
    """The report was confirmed or dismissed before (perhaps by someone else a moment ago)."""

    def __init__(self) -> None:
        super().__init__({"": N_("This report was already reviewed; it cannot be reviewed again.")})


@dataclass(frozen=True)
class Reporter:
    """Who sent a report, in words for the coordinator."""

    name: str
    is_patient: bool
    relationship: str | None = None  # a caregiver's relationship to the patient


@dataclass(frozen=True)
class ReportPeople:
    reporter: Reporter
    reviewer_name: str | None


# --- checking what was typed -----------------------------------------------------------


def _year_before(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # February 29
        return day.replace(year=day.year - 1, day=28)


def earliest_day(today: date) -> date:
    """The oldest day a report may be about: one year back."""
    return _year_before(today)


def _check_event(
    errors: dict[str, str],
    *,
    kind: str | None,
    occurred_on: date | None,
    details: str | None,
    today: date,
    earliest: date,
) -> tuple[ReportKind | None, str | None]:
    """Check what happened, when (from `earliest` to `today`), and the few words; add
    messages to `errors`. Returns the kind and the cleaned details (None when empty)."""
    chosen: ReportKind | None = None
    try:
        chosen = ReportKind(kind or "")
    except ValueError:
        errors["kind"] = N_("Choose what happened.")
    if occurred_on is None:
        errors["occurred_on"] = N_("Enter the day it happened.")
    elif occurred_on > today:
        errors["occurred_on"] = N_("The day cannot be in the future.")
    elif occurred_on < earliest:
        errors["occurred_on"] = N_("Choose a day in the last 12 months.")
    text = (details or "").strip()
    if len(text) > DETAILS_MAX:
        errors["details"] = N_(
            "Use at most %(limit)d characters; this text has %(count)d.",
            limit=DETAILS_MAX,
            count=len(text),
        )
    return chosen, text or None


def _patient_zone(session: Session, *, patient_id: int) -> str:
    zone = session.scalar(select(Patient.time_zone).where(Patient.id == patient_id))
    assert zone is not None
    return zone


# --- submitting ------------------------------------------------------------------------


def submit_report(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    kind: str,
    occurred_on: date | None,
    details: str | None,
) -> PatientReport:
    """A patient (or a caregiver with the right to report events) tells the care team about
    a pain crisis, an emergency room visit or a hospital stay. It lands on the worklist.

    `occurred_on` is a day in the patient's time zone, not in the future and not more than a
    year back; `details` is optional, at most 500 characters. Raises FieldErrors and changes
    nothing when something is wrong. The caller checks the permission."""
    if actor.user_id is None:
        raise ValueError("a report needs a person")
    errors: dict[str, str] = {}
    today = local_today(clock, patient.time_zone)
    chosen, text = _check_event(
        errors,
        kind=kind,
        occurred_on=occurred_on,
        details=details,
        today=today,
        earliest=earliest_day(today),
    )
    if errors:
        raise FieldErrors(errors)
    assert chosen is not None and occurred_on is not None
    report = PatientReport(
        patient_id=patient.id,
        kind=chosen,
        occurred_on=occurred_on,
        details=text,
        reported_by_user_id=actor.user_id,
        reported_at=clock.now(),
        status=ReportStatus.NEW,
    )
    session.add(report)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="report.submit",
        patient_id=patient.id,
        target=f"report:{report.id}",
    )
    return report


# --- reviewing -------------------------------------------------------------------------


def review_report(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    report: PatientReport,
    decision: str,
    kind: str | None = None,
    occurred_on: date | None = None,
    details: str | None = None,
    note: str = "",
) -> Observation | None:
    """A coordinator confirms or dismisses a report. The caller checks the permission.

    "confirm": `kind`, `occurred_on` and `details` are what the report should say (the
    reported values, or corrected ones; the same rules as when it was sent, the year counted
    back from the day it was reported). The report is corrected, then becomes an Observation
    (source: patient, effective at noon UTC on the day), linked from the report, which is
    CONFIRMED. `note` is optional. Returns the Observation.

    "dismiss": `note` says why (required); the report is DISMISSED. Returns None.

    A report already reviewed raises AlreadyReviewed (also when another coordinator got
    there first, between reading and writing). Raises FieldErrors and changes nothing when
    something is wrong."""
    if actor.user_id is None:
        raise ValueError("a review needs a person")
    if report.status is not ReportStatus.NEW:
        raise AlreadyReviewed()
    errors: dict[str, str] = {}
    note_text = note.strip()
    if len(note_text) > NOTE_MAX:
        errors["note"] = N_(
            "Use at most %(limit)d characters; this text has %(count)d.",
            limit=NOTE_MAX,
            count=len(note_text),
        )
    chosen: ReportKind | None = None
    text: str | None = None
    if decision == "confirm":
        zone = _patient_zone(session, patient_id=report.patient_id)
        today = local_today(clock, zone)
        # A late review may keep a day that was within the year when it was reported.
        reported_day = min(today, report.reported_at.astimezone(ZoneInfo(zone)).date())
        chosen, text = _check_event(
            errors,
            kind=kind,
            occurred_on=occurred_on,
            details=details,
            today=today,
            earliest=earliest_day(reported_day),
        )
    elif decision == "dismiss":
        if not note_text:
            errors["note"] = N_("Say why the report is dismissed.")
    else:
        errors["decision"] = N_("Choose to confirm or dismiss the report.")
    if errors:
        raise FieldErrors(errors)

    now = clock.now()
    status = ReportStatus.CONFIRMED if decision == "confirm" else ReportStatus.DISMISSED
    # Claim the report with a conditional write: of two coordinators reviewing it at the
    # same time, one wins and the other is told, instead of both creating an Observation.
    claimed = cast(
        CursorResult[Any],
        session.execute(
            update(PatientReport)
            .where(PatientReport.id == report.id, PatientReport.status == ReportStatus.NEW)
            .values(
                status=status,
                reviewed_by_user_id=actor.user_id,
                reviewed_at=now,
                review_note=note_text or None,
            )
            .execution_options(synchronize_session="fetch")
        ),
    )
    if claimed.rowcount != 1:
        session.refresh(report)
        raise AlreadyReviewed()

    observation: Observation | None = None
    corrected: list[str] = []
    if decision == "confirm":
        assert chosen is not None and occurred_on is not None
        corrected = [
            name
            for name, before, after in (
                ("kind", report.kind, chosen),
                ("occurred_on", report.occurred_on, occurred_on),
                ("details", report.details, text),
            )
            if before != after
        ]
        if corrected:
            # Keep what the patient or caregiver first sent, word for word.
            report.as_reported = {
                "kind": report.kind.value,
                "occurred_on": report.occurred_on.isoformat(),
                "details": report.details,
            }
        report.kind, report.occurred_on, report.details = chosen, occurred_on, text
        measure = REPORT_MEASURES[chosen]
        observation = observation_for(
            measure,
            text or "",
            patient_id=report.patient_id,
            effective_at=datetime.combine(occurred_on, time(12), tzinfo=UTC),
            source=ObservationSource.PATIENT,
            recorded_by=report.reported_by_user_id,
            now=now,
        )
        observation.value_text = text
        observation.extra = {"patient_report_id": report.id}
        session.add(observation)
        session.flush()
        report.observation_id = observation.id
    session.flush()
    detail: dict[str, Any] = {"decision": decision}
    if corrected:
        detail["corrected"] = corrected
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="report.review",
        patient_id=report.patient_id,
        target=f"report:{report.id}",
        detail=detail,
    )
    return observation


# --- reading ---------------------------------------------------------------------------


def get_report(session: Session, *, patient_id: int, report_id: int) -> PatientReport | None:
    """One report of this patient (None for another patient's report: answer 404)."""
    report = session.get(PatientReport, report_id)
    if report is None or report.patient_id != patient_id:
        return None
    return report


def reports_for_patient(
    session: Session,
    *,
    patient_id: int,
    status: ReportStatus | None = None,
    limit: int | None = None,
) -> list[PatientReport]:
    """A patient's reports, newest first (optionally only those in one status)."""
    query = select(PatientReport).where(PatientReport.patient_id == patient_id)
    if status is not None:
        query = query.where(PatientReport.status == status)
    query = query.order_by(PatientReport.reported_at.desc(), PatientReport.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def reporters(session: Session, *, patient_id: int, user_ids: set[int]) -> dict[int, Reporter]:
    """Who the reporting users are for this patient (the patient, or which caregiver and
    how they are related), by user id: one query for a whole timeline."""
    if not user_ids:
        return {}
    rows = session.execute(
        select(User, Caregiver, CaregiverLink.relationship_label)
        .outerjoin(Caregiver, Caregiver.id == User.caregiver_id)
        .outerjoin(
            CaregiverLink,
            (CaregiverLink.caregiver_id == User.caregiver_id)
            & (CaregiverLink.patient_id == patient_id),
        )
        .where(User.id.in_(user_ids))
    )
    found: dict[int, Reporter] = {}
    for user, caregiver, relationship in rows:
        if user.role is Role.CAREGIVER and caregiver is not None:
            found[user.id] = Reporter(caregiver.full_name, False, relationship)
        else:
            found[user.id] = Reporter(user.display_name, user.role is Role.PATIENT)
    return found


def people_of(session: Session, *, report: PatientReport) -> ReportPeople:
    """Who sent the report and who reviewed it, for the review page."""
    reporter = reporters(
        session, patient_id=report.patient_id, user_ids={report.reported_by_user_id}
    ).get(report.reported_by_user_id, Reporter("?", False))
    reviewer = session.get(User, report.reviewed_by_user_id) if report.reviewed_by_user_id else None
    return ReportPeople(
        reporter=reporter, reviewer_name=reviewer.display_name if reviewer else None
    )
