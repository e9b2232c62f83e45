"""The coordinator worklist: every bucket at its edges in two time zones, scope, search,
filters, sort, pages, counts, htmx blocks, the CSV export, assignments, the reminder action,
and a query count that does not grow with the rows shown. On SQLite and PostgreSQL.

The clock stands at 2026-11-28 05:30 UTC: already Saturday Nov 28 in Baltimore (00:30)
but still Friday Nov 27 in Denver (22:30), and the 28th in UTC. A visit whose window
closed on the 27th is overdue in Maryland and not in Colorado."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from coordination.followup.models import (
    MoveRequest,
    PatientReport,
    ReportKind,
    ReportStatus,
    RequestStatus,
    Visit,
    VisitEvent,
    VisitStatus,
)
from coordination.texting.models import (
    InboundMessage,
    InboxItem,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from coordination.travel.models import TravelPolicy, TravelRequest, TravelStatus
from coordination.worklist.assignments import AssignmentError, assign_patients
from coordination.worklist.buckets import Bucket, WorklistCriteria, bucket_counts
from coordination.worklist.models import CareAssignment
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.identity.models import Role, User, UserStateScope
from core.models import Language, Patient, PatientStatus, State
from tests.conftest import (
    CAREGIVER_CO,
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    Browser,
    Database,
    user_by_login,
)

EDGE = datetime(2026, 11, 28, 5, 30, tzinfo=UTC)
MD_TODAY = date(2026, 11, 28)  # America/New_York at EDGE
CO_TODAY = date(2026, 11, 27)  # America/Denver at EDGE
COORDINATOR_BOTH = "coordinator.both@test.cgt-access.test"
COORDINATOR_MD2 = "coordinator.md2@test.cgt-access.test"
PER_PAGE = 25
DAY = timedelta(days=1)


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    """Run a page test as a plain browser request and as an htmx partial request."""
    return bool(request.param)


# --- the world -------------------------------------------------------------------------


def _state_patients(session: Session, code: str) -> list[Patient]:
    return list(
        session.scalars(select(Patient).join(State).where(State.code == code).order_by(Patient.id))
    )


def _add_coordinator(session: Session, login: str, name: str, codes: list[str]) -> User:
    model = user_by_login(session, COORDINATOR_MD)
    states = {state.code: state.id for state in session.scalars(select(State))}
    user = User(
        login=login,
        email=login,
        display_name=name,
        role=Role.COORDINATOR,
        password_hash=model.password_hash,
        totp_secret=model.totp_secret,
        totp_enabled_at=model.totp_enabled_at,
        preferred_language=Language.EN,
        is_active=True,
        created_at=EDGE - timedelta(days=30),
    )
    user.state_scopes = [UserStateScope(state_id=states[code]) for code in codes]
    session.add(user)
    session.flush()
    return user


_sequence = iter(range(1, 10**6))


def _visit(
    session: Session,
    patient: Patient,
    key: str,
    *,
    start: date,
    end: date,
    status: VisitStatus = VisitStatus.DUE,
    appointment_at: datetime | None = None,
    acknowledged: bool = False,
) -> Visit:
    visit = Visit(
        patient_id=patient.id,
        visit_key=key,
        protocol_version=1,
        sequence=next(_sequence),
        target_date=start + (end - start) // 2,
        window_start=start,
        window_end=end,
        status=status,
        appointment_at=appointment_at,
        appointment_zone=patient.time_zone if appointment_at else None,
        missed_acknowledged_at=EDGE - timedelta(days=1) if acknowledged else None,
        created_at=EDGE - timedelta(days=400),
        updated_at=EDGE - timedelta(days=1),
    )
    session.add(visit)
    session.flush()
    return visit


def _message(
    session: Session, patient: Patient, status: MessageStatus, *, send_after: datetime
) -> OutboundMessage:
    tried = status is not MessageStatus.QUEUED
    message = OutboundMessage(
        to_phone=patient.mobile_phone or "+14105550199",
        body="A reminder from your care team.",
        purpose=MessagePurpose.REMINDER,
        patient_id=patient.id,
        status=status,
        created_at=send_after - timedelta(hours=1),
        send_after=send_after,
        claimed_at=send_after if tried else None,
        attempts=1 if tried else 0,
        last_error="30006: landline" if status is MessageStatus.FAILED else None,
    )
    session.add(message)
    session.flush()
    return message


def _report(
    session: Session,
    patient: Patient,
    by: User,
    *,
    at: datetime,
    status: ReportStatus = ReportStatus.NEW,
) -> PatientReport:
    report = PatientReport(
        patient_id=patient.id,
        kind=ReportKind.PAIN_CRISIS,
        occurred_on=(at - timedelta(days=1)).date(),
        details="Pain for two days.",
        reported_by_user_id=by.id,
        reported_at=at,
        status=status,
    )
    session.add(report)
    session.flush()
    return report


def _move_request(
    session: Session,
    visit: Visit,
    by: User,
    *,
    at: datetime,
    status: RequestStatus = RequestStatus.OPEN,
) -> MoveRequest:
    request = MoveRequest(
        visit_id=visit.id,
        patient_id=visit.patient_id,
        requested_by_user_id=by.id,
        preferred_date=visit.window_start + timedelta(days=3),
        note="Exams that week.",
        status=status,
        created_at=at,
    )
    session.add(request)
    session.flush()
    return request


def _travel_request(
    session: Session,
    visit: Visit,
    by: User,
    *,
    at: datetime,
    status: TravelStatus = TravelStatus.REQUESTED,
    to_review: bool = False,
) -> TravelRequest:
    patient = session.get(Patient, visit.patient_id)
    assert patient is not None
    policy_id = session.scalar(
        select(TravelPolicy.id).where(TravelPolicy.state_id == patient.state_id).limit(1)
    )
    assert policy_id is not None
    request = TravelRequest(
        patient_id=patient.id,
        visit_id=visit.id,
        state_id=patient.state_id,
        policy_id=policy_id,
        requested_by_user_id=by.id,
        kinds=["meals"],
        depart_on=visit.window_start,
        return_on=visit.window_start,
        travellers=1,
        status=status,
        created_at=at,
        review_needed_at=at + timedelta(hours=1) if to_review else None,
        review_reason="moved" if to_review else None,
        updated_at=at,
    )
    session.add(request)
    session.flush()
    return request


_inbound_sids = iter(range(1, 10**6))


def _inbox_item(
    session: Session, patient: Patient, *, at: datetime, handled: bool = False
) -> InboxItem:
    """A text from the patient's number that waits for a person (or waited: handled)."""
    message = InboundMessage(
        message_sid=f"SMwl{next(_inbound_sids)}",
        from_phone=patient.mobile_phone or "+14105550198",
        to_phone="+14105550100",
        body="Can I bring my sister?",
        received_at=at,
        intent="other",
        patient_id=patient.id,
        handled_note="stored for the care team",
    )
    session.add(message)
    session.flush()
    item = InboxItem(
        inbound_message_id=message.id,
        patient_id=patient.id,
        received_at=at,
        handled_at=at + timedelta(hours=1) if handled else None,
    )
    session.add(item)
    session.flush()
    return item


def _confirmation(session: Session, visit: Visit, by: User, *, at: datetime) -> VisitEvent:
    confirm = VisitEvent(
        visit_id=visit.id,
        at=at,
        actor_user_id=by.id,
        actor_label=by.login or by.display_name,
        action="confirm",
        from_status="scheduled",
        to_status="confirmed",
    )
    session.add(confirm)
    session.flush()
    return confirm


@dataclass
class Scenario:
    md: list[int]
    co: list[int]
    names: dict[int, str]  # patient id -> "Family, Given"
    medicaid: dict[int, str]
    # coordinator login -> bucket -> patient ids of the rows expected (sorted, with repeats)
    expected: dict[str, dict[Bucket, list[int]]] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)


def build_scenario(session: Session) -> Scenario:
    """One patient (or two) per case; comments say where each one belongs at EDGE."""
    md, co = _state_patients(session, "MD"), _state_patients(session, "CO")
    users = {
        login: user_by_login(session, login)
        for login in (PATIENT_MD, PATIENT_CO, CAREGIVER_MD, CAREGIVER_CO, COORDINATOR_MD)
    }
    maya, andre = users[PATIENT_MD], users[PATIENT_CO]
    _add_coordinator(session, COORDINATOR_BOTH, "Riley Both", ["MD", "CO"])
    _add_coordinator(session, COORDINATOR_MD2, "Casey Second", ["MD"])

    # md[0] Maya: a new report (reports, activity); a visit she confirmed (activity); the
    # same visit confirmed by the coordinator, and by her 15 days ago (neither shows).
    _report(session, md[0], maya, at=EDGE - 2 * DAY)
    confirmed = _visit(
        session,
        md[0],
        "day-30",
        start=MD_TODAY - 5 * DAY,
        end=MD_TODAY + 10 * DAY,
        status=VisitStatus.CONFIRMED,
        appointment_at=EDGE + 3 * DAY,
    )
    _confirmation(session, confirmed, maya, at=EDGE - DAY)
    _confirmation(session, confirmed, users[COORDINATOR_MD], at=EDGE - 2 * DAY)
    _confirmation(session, confirmed, maya, at=EDGE - 15 * DAY)
    # md[1]: the window closed yesterday (Baltimore): overdue.
    _visit(session, md[1], "day-30", start=MD_TODAY - 14 * DAY, end=MD_TODAY - DAY)
    # md[2]: the window closes today: to schedule, not overdue.
    _visit(session, md[2], "day-30", start=MD_TODAY - 14 * DAY, end=MD_TODAY)
    # md[3]: the window opens today: to schedule.
    _visit(session, md[3], "day-30", start=MD_TODAY, end=MD_TODAY + 14 * DAY)
    # md[4]: missed, nobody followed up: overdue.
    _visit(
        session,
        md[4],
        "day-30",
        start=MD_TODAY - 30 * DAY,
        end=MD_TODAY - 18 * DAY,
        status=VisitStatus.MISSED,
    )
    # md[5]: missed and followed up, then completed: nowhere.
    _visit(
        session,
        md[5],
        "day-30",
        start=MD_TODAY - 130 * DAY,
        end=MD_TODAY - 118 * DAY,
        status=VisitStatus.MISSED,
        acknowledged=True,
    )
    _visit(
        session,
        md[5],
        "day-100",
        start=MD_TODAY - 30 * DAY,
        end=MD_TODAY - 18 * DAY,
        status=VisitStatus.COMPLETED,
    )
    # md[6], md[7]: booked within 7 days, not confirmed.
    _visit(
        session,
        md[6],
        "day-30",
        start=MD_TODAY - 5 * DAY,
        end=MD_TODAY + 20 * DAY,
        status=VisitStatus.SCHEDULED,
        appointment_at=EDGE + 2 * DAY,
    )
    _visit(
        session,
        md[7],
        "day-30",
        start=MD_TODAY - 5 * DAY,
        end=MD_TODAY + 20 * DAY,
        status=VisitStatus.RESCHEDULED,
        appointment_at=EDGE + 7 * DAY - timedelta(minutes=10),
    )
    # md[8]: booked in 7 days and 10 minutes, confirmed tomorrow, booked an hour ago: nowhere.
    _visit(
        session,
        md[8],
        "day-30",
        start=MD_TODAY - 5 * DAY,
        end=MD_TODAY + 20 * DAY,
        status=VisitStatus.SCHEDULED,
        appointment_at=EDGE + 7 * DAY + timedelta(minutes=10),
    )
    _visit(
        session,
        md[8],
        "day-100",
        start=MD_TODAY + 60 * DAY,
        end=MD_TODAY + 80 * DAY,
        status=VisitStatus.CONFIRMED,
        appointment_at=EDGE + DAY,
    )
    _visit(
        session,
        md[8],
        "day-180",
        start=MD_TODAY - 5 * DAY,
        end=MD_TODAY + 20 * DAY,
        status=VisitStatus.SCHEDULED,
        appointment_at=EDGE - timedelta(hours=1),
    )

    def history(patient: Patient, statuses: list[VisitStatus]) -> None:
        for number, (key, status) in enumerate(
            zip(["day-30", "day-100", "month-12"], statuses, strict=False)
        ):
            end = MD_TODAY - (300 - number * 100) * DAY
            _visit(
                session,
                patient,
                key,
                start=end - 14 * DAY,
                end=end,
                status=status,
                acknowledged=status is VisitStatus.MISSED,
            )

    completed, missed, cancelled = VisitStatus.COMPLETED, VisitStatus.MISSED, VisitStatus.CANCELLED
    history(md[9], [completed, missed, missed])  # the two latest missed: at risk
    history(md[10], [missed, missed, completed])  # came back: not at risk
    history(md[11], [missed, cancelled, missed])  # a cancelled visit does not count: at risk
    # md[12]: the latest text failed: unreachable. md[13]: a later text went through.
    _message(session, md[12], MessageStatus.SENT, send_after=EDGE - 3 * DAY)
    _message(session, md[12], MessageStatus.FAILED, send_after=EDGE - DAY)
    # ...and a later reminder dropped on purpose neither hides nor clears the failure.
    _message(session, md[12], MessageStatus.DROPPED, send_after=EDGE - DAY / 2)
    _message(session, md[13], MessageStatus.FAILED, send_after=EDGE - 3 * DAY)
    _message(session, md[13], MessageStatus.SENT, send_after=EDGE - DAY)
    # md[14]: an open move request (and a handled one from 20 days ago).
    later = _visit(session, md[14], "day-100", start=MD_TODAY + 30 * DAY, end=MD_TODAY + 44 * DAY)
    _move_request(session, later, users[CAREGIVER_MD], at=EDGE - DAY)
    _move_request(
        session, later, users[CAREGIVER_MD], at=EDGE - 20 * DAY, status=RequestStatus.DONE
    )

    # co[0] Andre: a failed text, and the next one planned for tomorrow: unreachable.
    _message(session, co[0], MessageStatus.FAILED, send_after=EDGE - 2 * DAY)
    _message(session, co[0], MessageStatus.QUEUED, send_after=EDGE + DAY)
    # co[1]: the window closed on the 27th, which is still today in Denver: to schedule.
    _visit(session, co[1], "day-30", start=CO_TODAY - 14 * DAY, end=CO_TODAY)
    # co[2]: closed the day before: overdue.
    _visit(session, co[2], "day-30", start=CO_TODAY - 14 * DAY, end=CO_TODAY - DAY)
    # co[3]: opens on the 28th (UTC's date, Denver's tomorrow): nowhere.
    _visit(session, co[3], "day-30", start=CO_TODAY + DAY, end=CO_TODAY + 14 * DAY)
    # co[4]: two missed visits: at risk.
    history(co[4], [missed, missed])
    # co[5]: a new report, and a reviewed one from 20 days ago.
    _report(session, co[5], andre, at=EDGE - 3 * DAY)
    _report(session, co[5], andre, at=EDGE - 20 * DAY, status=ReportStatus.CONFIRMED)
    # co[6]: an open move request and one handled this week (activity shows both).
    soon = _visit(session, co[6], "day-100", start=CO_TODAY + 30 * DAY, end=CO_TODAY + 44 * DAY)
    _move_request(session, soon, users[CAREGIVER_CO], at=EDGE - 2 * DAY)
    _move_request(session, soon, users[CAREGIVER_CO], at=EDGE - 3 * DAY, status=RequestStatus.DONE)

    # md[14] asked for travel to a visit booked next month; co[6]'s arranged travel must be
    # reviewed (its visit moved); co[7]'s arranged and declined requests wait for nobody.
    def booked_ahead(patient: Patient, key: str, days: int, today: date) -> Visit:
        return _visit(
            session,
            patient,
            key,
            start=today + days * DAY,
            end=today + (days + 14) * DAY,
            status=VisitStatus.SCHEDULED,
            appointment_at=EDGE + (days + 1) * DAY,
        )

    _travel_request(
        session, booked_ahead(md[14], "month-6", 60, MD_TODAY), users[CAREGIVER_MD], at=EDGE - DAY
    )
    _travel_request(
        session,
        booked_ahead(co[6], "month-6", 60, CO_TODAY),
        users[CAREGIVER_CO],
        at=EDGE - 5 * DAY,
        status=TravelStatus.ARRANGED,
        to_review=True,
    )
    for key, status in (("month-6", TravelStatus.ARRANGED), ("month-12", TravelStatus.DECLINED)):
        _travel_request(
            session,
            booked_ahead(co[7], key, 60 if key == "month-6" else 200, CO_TODAY),
            users[CAREGIVER_CO],
            at=EDGE - 5 * DAY,
            status=status,
        )
    # md[3] and co[3] wrote a text for the care team; md[4]'s was handled already.
    _inbox_item(session, md[3], at=EDGE - 2 * DAY)
    _inbox_item(session, md[4], at=EDGE - DAY, handled=True)
    _inbox_item(session, co[3], at=EDGE - 3 * DAY)
    # co[13] is lost to follow-up (still chased): overdue. co[14] withdrew: shown only for
    # the text they wrote (a person reads it, as their reports).
    assert co[13].status is PatientStatus.LOST_TO_FOLLOW_UP
    assert co[14].status is PatientStatus.WITHDRAWN
    _visit(session, co[13], "day-30", start=CO_TODAY - 20 * DAY, end=CO_TODAY - 2 * DAY)
    _visit(session, co[14], "day-30", start=CO_TODAY - 20 * DAY, end=CO_TODAY - 2 * DAY)
    _message(session, co[14], MessageStatus.FAILED, send_after=EDGE - DAY)
    _inbox_item(session, co[14], at=EDGE - DAY)
    session.flush()

    scenario = Scenario(
        md=[patient.id for patient in md],
        co=[patient.id for patient in co],
        names={p.id: f"{p.family_name}, {p.given_name}" for p in md + co},
        medicaid={p.id: p.medicaid_id for p in md + co},
    )
    m, c = scenario.md, scenario.co
    by_md = {
        Bucket.OVERDUE: [m[1], m[4]],
        Bucket.TO_SCHEDULE: [m[2], m[3]],
        Bucket.UNCONFIRMED: [m[6], m[7]],
        Bucket.MOVE_REQUESTS: [m[14]],
        Bucket.TRAVEL: [m[14]],
        Bucket.REPORTS: [m[0]],
        Bucket.INBOX: [m[3]],
        Bucket.UNREACHABLE: [m[12]],
        Bucket.LTFU_RISK: [m[9], m[11]],
        Bucket.ACTIVITY: [m[0], m[0], m[14]],
        # md[5]'s day-100 visit happened, its questionnaire was never answered
        Bucket.QUESTIONNAIRES_OVERDUE: [m[5]],
    }
    by_co = {
        Bucket.OVERDUE: [c[2], c[13]],
        Bucket.TO_SCHEDULE: [c[1]],
        Bucket.UNCONFIRMED: [],
        Bucket.MOVE_REQUESTS: [c[6]],
        Bucket.TRAVEL: [c[6]],
        Bucket.REPORTS: [c[5]],
        Bucket.INBOX: [c[3], c[14]],
        Bucket.UNREACHABLE: [c[0]],
        Bucket.LTFU_RISK: [c[4]],
        Bucket.ACTIVITY: [c[5], c[6], c[6]],
        Bucket.QUESTIONNAIRES_OVERDUE: [],
    }
    scenario.expected = {
        COORDINATOR_MD: by_md,
        COORDINATOR_CO: by_co,
        COORDINATOR_BOTH: {bucket: sorted(by_md[bucket] + by_co[bucket]) for bucket in Bucket},
    }
    for login in (COORDINATOR_MD, COORDINATOR_CO, COORDINATOR_BOTH, COORDINATOR_MD2):
        scenario.user_ids[login] = user_by_login(session, login).id
    return scenario


@pytest.fixture
def scenario(db: Database, clock: FrozenClock) -> Scenario:
    clock.set(EDGE)
    with db.factory() as session:
        built = build_scenario(session)
        session.commit()
    return built


# --- helpers ---------------------------------------------------------------------------


def results_of(response: httpx.Response, *, htmx: bool = False) -> str:
    """Check the answer's shape (whole page or block); return the results block."""
    assert response.status_code in (200, 400), response.text
    if htmx:
        assert "<html" not in response.text, "an htmx request got the whole page"
        assert response.text.lstrip().startswith('<div id="results">')
    else:
        assert "<html" in response.text
        assert 'id="worklist-filters"' in response.text  # the filters come with the page
    return response.text[response.text.index('<div id="results">') :]


def row_patients(results: str) -> list[int]:
    return sorted(int(found) for found in re.findall(r'name="patient" value="(\d+)"', results))


def row_patients_in_order(results: str) -> list[int]:
    return [int(found) for found in re.findall(r'name="patient" value="(\d+)"', results)]


_TAB = re.compile(
    r'(?:href="/worklist\?bucket=|name="bucket" value=")(\w+)[^>]*>[^<]*<span class="badge">(\d+)<',
    re.S,
)


def tab_counts(results: str) -> dict[str, int]:
    return {bucket: int(count) for bucket, count in _TAB.findall(results)}


def current_tab(results: str) -> str:
    found = re.search(r'(?:bucket=|value=")(\w+)"?[^>]*aria-current="page"', results)
    assert found, "no tab is marked current"
    return found.group(1)


def shown_total(results: str) -> int:
    found = re.search(r'<p role="status">(\d+) rows?</p>', results)
    assert found, "no row count on the page"
    return int(found.group(1))


def audit_events(db: Database, action: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def assignments(session: Session) -> dict[int, int]:
    return dict(
        session.execute(select(CareAssignment.patient_id, CareAssignment.coordinator_user_id)).all()
    )


def csv_rows(response: httpx.Response) -> list[dict[str, str]]:
    text = response.content.decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


# --- buckets ---------------------------------------------------------------------------


@pytest.mark.parametrize("login", [COORDINATOR_MD, COORDINATOR_CO, COORDINATOR_BOTH])
def test_each_bucket_shows_exactly_its_patients_at_the_edges(
    scenario: Scenario, browsers: Callable[[str], Browser], login: str
) -> None:
    browser = browsers(login)
    expected = scenario.expected[login]
    for bucket in Bucket:
        results = results_of(browser.get(f"/worklist?bucket={bucket.value}"))
        assert row_patients(results) == sorted(expected[bucket]), bucket
        counts = tab_counts(results)
        assert counts == {b.value: len(expected[b]) for b in Bucket}, bucket
        assert shown_total(results) == len(expected[bucket])
        assert current_tab(results) == bucket.value


def test_the_worklist_opens_on_overdue_with_links_to_the_records(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser]
) -> None:
    browser = browsers(COORDINATOR_MD)
    results = results_of(browser.get("/worklist"))
    assert current_tab(results) == "overdue"
    with db.factory() as session:
        visit = session.scalar(select(Visit).where(Visit.patient_id == scenario.md[1]))
        report = session.scalar(
            select(PatientReport).where(PatientReport.patient_id == scenario.md[0])
        )
        assert visit is not None and report is not None
        visit_id, report_id = visit.id, report.id
    assert f'href="/patients/{scenario.md[1]}"' in results
    assert f'href="/patients/{scenario.md[1]}/visits/{visit_id}"' in results
    assert "Day 30 check-up" in results
    assert "Nov 27, 2026" in results  # the window closed yesterday, in Baltimore
    name = scenario.names[scenario.md[1]]
    assert '<label for="pick-1" class="visually-hidden">Choose ' in results
    assert name in results
    reports = results_of(browser.get("/worklist?bucket=reports"))
    assert f'href="/patients/{scenario.md[0]}/reports/{report_id}"' in reports
    assert "Pain crisis" in reports
    activity = results_of(browser.get("/worklist?bucket=activity"))
    assert "Confirmed: Day 30 check-up" in activity
    assert "By Maya Johnson (patient)" in activity
    assert "By Denise Johnson (caregiver)" in activity
    assert len(audit_events(db, "worklist.view")) == 3


def test_visit_labels_are_in_the_readers_language(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser]
) -> None:
    with db.factory() as session:
        user_by_login(session, COORDINATOR_MD).preferred_language = Language.ES
        session.commit()
    results = results_of(browsers(COORDINATOR_MD).get("/worklist?bucket=overdue"))
    assert "Control del día 30" in results


def test_a_followed_up_missed_visit_leaves_overdue(
    db: Database, scenario: Scenario, clock: FrozenClock
) -> None:
    with db.factory() as session:
        coordinator = user_by_login(session, COORDINATOR_MD)
        criteria = WorklistCriteria(bucket=Bucket.OVERDUE)
        before = bucket_counts(session, clock=clock, user=coordinator, criteria=criteria)
        missed = session.scalar(select(Visit).where(Visit.patient_id == scenario.md[4]))
        assert missed is not None
        missed.missed_acknowledged_at = clock.now()
        session.flush()
        after = bucket_counts(session, clock=clock, user=coordinator, criteria=criteria)
    assert after[Bucket.OVERDUE] == before[Bucket.OVERDUE] - 1 == 1


def test_today_follows_each_states_clock(
    db: Database, scenario: Scenario, clock: FrozenClock
) -> None:
    """An hour later it is the 28th in Denver too: co[1] becomes overdue, co[3] due."""
    with db.factory() as session:
        both = user_by_login(session, COORDINATOR_BOTH)
        criteria = WorklistCriteria()
        clock.set(EDGE + timedelta(hours=2))  # 00:30 in Denver
        counts = bucket_counts(session, clock=clock, user=both, criteria=criteria)
    assert counts[Bucket.OVERDUE] == len(scenario.expected[COORDINATOR_BOTH][Bucket.OVERDUE]) + 1
    # co[1] left "to schedule", co[3] came in.
    assert counts[Bucket.TO_SCHEDULE] == len(
        scenario.expected[COORDINATOR_BOTH][Bucket.TO_SCHEDULE]
    )


# --- scope -----------------------------------------------------------------------------


def test_a_colorado_coordinator_never_sees_a_maryland_patient(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser]
) -> None:
    browser = browsers(COORDINATOR_CO)
    hidden_ids = set(scenario.md)
    hidden_text = [scenario.names[i] for i in scenario.md] + [
        scenario.medicaid[i] for i in scenario.md
    ]
    with db.factory() as session:
        maryland = session.scalar(select(State).where(State.code == "MD"))
        assert maryland is not None
        maryland_id = maryland.id
    maya = scenario.names[scenario.md[0]].split(", ")[1]
    answers: list[tuple[httpx.Response, str]] = []  # (answer, what was typed)
    for bucket in Bucket:
        answers.append((browser.get(f"/worklist?bucket={bucket.value}"), ""))
        answers.append((browser.get(f"/worklist?bucket={bucket.value}&state={maryland_id}"), ""))
        for query in ("MD", maya, scenario.medicaid[scenario.md[1]], ""):
            response = browser.post("/worklist/search", {"bucket": bucket.value, "q": query})
            answers.append((response, query))
        export = browser.post("/worklist/bulk", {"bucket": bucket.value, "action": "export"})
        assert export.status_code == 200
        exported = csv_rows(export)
        assert not {int(row["Patient ID"]) for row in exported} & hidden_ids, bucket
        assert not [text for text in hidden_text if text in export.text], bucket
    for response, typed in answers:
        results = results_of(response)
        assert not set(row_patients(results)) & hidden_ids
        # The search box and the forms echo what was typed; nothing else may show.
        results = results.replace(f'value="{typed}"', "")
        assert not [text for text in hidden_text if text in results]
    # Counts leak nothing either: filtering on Maryland gives zero everywhere.
    filtered = results_of(browser.get(f"/worklist?state={maryland_id}"))
    assert set(tab_counts(filtered).values()) == {0}


def test_a_center_bound_coordinator_sees_only_their_center(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser]
) -> None:
    from core.models import TreatmentCenter

    with db.factory() as session:
        maryland = session.scalar(select(State).where(State.code == "MD"))
        assert maryland is not None
        other = TreatmentCenter(
            state_id=maryland.id,
            name="Chesapeake Children's",
            city="Annapolis",
            is_active=True,
            created_at=EDGE,
        )
        session.add(other)
        session.flush()
        user_by_login(session, COORDINATOR_MD).center_id = other.id
        session.commit()
    results = results_of(browsers(COORDINATOR_MD).get("/worklist"))
    assert row_patients(results) == []
    assert set(tab_counts(results).values()) == {0}


# --- search, filters, sort -------------------------------------------------------------


def test_search_is_a_post_and_never_lands_in_a_url(
    scenario: Scenario, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    browser = browsers(COORDINATOR_BOTH)
    family, given = scenario.names[scenario.co[2]].split(", ")
    response = browser.post("/worklist/search", {"bucket": "overdue", "q": given}, htmx=htmx)
    results = results_of(response, htmx=htmx)
    assert row_patients(results) == [scenario.co[2]]
    by_id = results_of(
        browser.post(
            "/worklist/search",
            {"bucket": "overdue", "q": scenario.medicaid[scenario.md[4]].lower()},
            htmx=htmx,
        ),
        htmx=htmx,
    )
    assert row_patients(by_id) == [scenario.md[4]]
    # The tabs now post the search again; no address on the page carries it.
    urls = re.findall(r'(?:href|action|hx-get|hx-post|hx-push-url)="([^"]*)"', response.text)
    assert not [url for url in urls if given.lower() in url.lower() or "q=" in url]
    assert 'name="q" value="' + given + '"' in results
    assert tab_counts(results)["overdue"] == 1
    assert "hx-push-url" not in results  # a POSTed search is not a place to go back to
    # A tab press keeps the search and moves to the bucket.
    tab = browser.post("/worklist/search", {"bucket": "to_schedule", "q": family}, htmx=htmx)
    assert current_tab(results_of(tab, htmx=htmx)) == "to_schedule"
    # A search term in a GET address is ignored.
    assert row_patients(results_of(browser.get(f"/worklist?q={given}"))) == sorted(
        scenario.expected[COORDINATOR_BOTH][Bucket.OVERDUE]
    )


def test_get_tabs_push_their_url_and_keep_the_filters(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser]
) -> None:
    with db.factory() as session:
        colorado = session.scalar(select(State).where(State.code == "CO"))
        assert colorado is not None
        co_id = colorado.id
    results = results_of(browsers(COORDINATOR_BOTH).get(f"/worklist?state={co_id}&sort=name"))
    assert f'hx-get="/worklist?bucket=reports&amp;state={co_id}&amp;sort=name"' in results
    assert 'hx-push-url="true"' in results


def test_filters_by_state_center_and_assignment(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser], clock: FrozenClock
) -> None:
    with db.factory() as session:
        colorado = session.scalar(select(State).where(State.code == "CO"))
        assert colorado is not None
        co_id, co_center = colorado.id, colorado.centers[0].id
        both = user_by_login(session, COORDINATOR_BOTH)
        md2 = user_by_login(session, COORDINATOR_MD2)
        actor = Actor(user_id=both.id, label=COORDINATOR_BOTH, role="coordinator")
        assign_patients(
            session,
            clock=clock,
            actor=actor,
            patient_ids=[scenario.co[2]],
            coordinator_user_id=both.id,
        )
        assign_patients(
            session,
            clock=clock,
            actor=actor,
            patient_ids=[scenario.md[1]],
            coordinator_user_id=md2.id,
        )
        session.commit()
        md2_id = md2.id
    browser = browsers(COORDINATOR_BOTH)
    overdue = scenario.expected[COORDINATOR_BOTH][Bucket.OVERDUE]
    assert row_patients(results_of(browser.get(f"/worklist?state={co_id}"))) == sorted(
        scenario.expected[COORDINATOR_CO][Bucket.OVERDUE]
    )
    assert row_patients(results_of(browser.get(f"/worklist?center={co_center}"))) == sorted(
        scenario.expected[COORDINATOR_CO][Bucket.OVERDUE]
    )
    assert row_patients(results_of(browser.get("/worklist?assigned=mine"))) == [scenario.co[2]]
    assert row_patients(results_of(browser.get(f"/worklist?assigned={md2_id}"))) == [scenario.md[1]]
    unassigned = results_of(browser.get("/worklist?assigned=unassigned"))
    assert row_patients(unassigned) == sorted(set(overdue) - {scenario.co[2], scenario.md[1]})
    assert tab_counts(unassigned)["overdue"] == len(overdue) - 2
    shown = results_of(browser.get("/worklist"))
    assert "Casey Second" in shown and "Riley Both" in shown  # the assigned column
    # The same filters in a search post.
    searched = results_of(
        browser.post("/worklist/search", {"q": "", "assigned": "mine", "state": str(co_id)})
    )
    assert row_patients(searched) == [scenario.co[2]]


def test_sort_by_date_either_way_and_by_name(
    scenario: Scenario, browsers: Callable[[str], Browser]
) -> None:
    browser = browsers(COORDINATOR_BOTH)
    # Overdue windows closed: md[4] on Nov 10, co[13] on Nov 25, co[2] on Nov 26, md[1] Nov 27.
    by_date = [scenario.md[4], scenario.co[13], scenario.co[2], scenario.md[1]]
    assert row_patients_in_order(results_of(browser.get("/worklist"))) == by_date
    assert row_patients_in_order(results_of(browser.get("/worklist?sort=date_asc"))) == by_date
    assert row_patients_in_order(results_of(browser.get("/worklist?sort=date_desc"))) == list(
        reversed(by_date)
    )
    by_name = sorted(by_date, key=lambda patient_id: scenario.names[patient_id].lower())
    assert row_patients_in_order(results_of(browser.get("/worklist?sort=name"))) == by_name
    # Activity: newest first by default.
    # Activity: newest first by default; at the same instant, by name. A day ago: Maya
    # (Johnson) confirmed, md[14]'s (Phillips) caregiver asked to move; two days ago:
    # co[6]'s (Allen) request, Maya's report; three days ago: co[6]'s handled request,
    # co[5]'s (Walker) report.
    activity = row_patients_in_order(results_of(browser.get("/worklist?bucket=activity")))
    m, c = scenario.md, scenario.co
    assert activity == [m[0], m[14], c[6], m[0], c[6], c[5]]


# --- pages and counts ------------------------------------------------------------------


def _more_patients(session: Session, code: str, count: int) -> list[Patient]:
    """`count` extra patients in a state, named so that they sort after the seeded ones."""
    model = _state_patients(session, code)[0]
    made = []
    for number in range(count):
        patient = Patient(
            state_id=model.state_id,
            center_id=model.center_id,
            therapy_id=model.therapy_id,
            medicaid_id=f"{code}X{number:06d}",
            given_name=f"Test{number:02d}",
            family_name=f"Zz{number:02d}",
            birth_date=date(2005, 1, 1),
            preferred_language=Language.EN,
            time_zone=model.time_zone,
            mobile_phone=None,
            infusion_date=date(2025, 1, 1),
            status=PatientStatus.ACTIVE,
            created_at=EDGE,
            updated_at=EDGE,
        )
        session.add(patient)
        made.append(patient)
    session.flush()
    return made


def test_pages_of_25_and_the_export_of_every_page(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    with db.factory() as session:
        extra = _more_patients(session, "MD", 30)
        for patient in extra:
            _visit(session, patient, "day-30", start=MD_TODAY - 20 * DAY, end=MD_TODAY - 3 * DAY)
        session.commit()
        extra_ids = [patient.id for patient in extra]
    browser = browsers(COORDINATOR_MD)
    expected = sorted(scenario.expected[COORDINATOR_MD][Bucket.OVERDUE] + extra_ids)
    first = results_of(browser.get("/worklist?sort=name", htmx=htmx), htmx=htmx)
    second = results_of(browser.get("/worklist?sort=name&page=2", htmx=htmx), htmx=htmx)
    past_the_end = results_of(browser.get("/worklist?sort=name&page=9", htmx=htmx), htmx=htmx)
    assert len(row_patients(first)) == PER_PAGE
    assert len(row_patients(second)) == len(expected) - PER_PAGE
    assert sorted(row_patients(first) + row_patients(second)) == expected
    assert row_patients(past_the_end) == row_patients(second)
    assert shown_total(first) == tab_counts(first)["overdue"] == len(expected)
    assert "Page 1 of 2" in first and "Page 2 of 2" in second
    assert 'href="/worklist?bucket=overdue&amp;sort=name&amp;page=2"' in first
    # Searching pages by POST.
    searched = results_of(
        browser.post("/worklist/search", {"q": "zz", "page": "2", "sort": "name"}, htmx=htmx),
        htmx=htmx,
    )
    assert len(row_patients(searched)) == 30 - PER_PAGE
    assert 'name="page" value="1"' in searched  # "Previous" is a button of the search form
    # The export has every page, in the page's order.
    export = browser.post("/worklist/bulk", {"action": "export", "sort": "name"})
    rows = csv_rows(export)
    assert [int(row["Patient ID"]) for row in rows] == row_patients_in_order(
        first
    ) + row_patients_in_order(second)


def test_whole_page_and_htmx_block(scenario: Scenario, browsers: Callable[[str], Browser]) -> None:
    browser = browsers(COORDINATOR_MD)
    page = browser.get("/worklist?bucket=unconfirmed")
    block = browser.get("/worklist?bucket=unconfirmed", htmx=True)
    assert row_patients(results_of(page)) == row_patients(results_of(block, htmx=True))
    assert "<title>" not in block.text
    assert 'name="csrf_token"' in block.text  # the bulk form works inside the block
    searched = browser.post("/worklist/search", {"bucket": "unconfirmed"}, htmx=True)
    assert row_patients(results_of(searched, htmx=True)) == sorted(
        scenario.expected[COORDINATOR_MD][Bucket.UNCONFIRMED]
    )
    # The filter form posts the bucket shown in the block (tied by the form attribute).
    assert 'name="bucket" value="unconfirmed" form="worklist-filters"' in block.text


# --- export ----------------------------------------------------------------------------


def test_export_is_a_csv_attachment_without_phi_in_its_name_and_is_audited(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser]
) -> None:
    browser = browsers(COORDINATOR_MD)
    response = browser.post("/worklist/bulk", {"bucket": "overdue", "action": "export"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition == 'attachment; filename="worklist-overdue-2026-11-28.csv"'
    rows = csv_rows(response)
    assert [int(row["Patient ID"]) for row in rows] == [scenario.md[4], scenario.md[1]]
    first = rows[1]
    assert first["Patient"] == scenario.names[scenario.md[1]]
    assert first["Medicaid ID"] == scenario.medicaid[scenario.md[1]]
    assert first["State"] == "MD"
    assert first["What"] == "Day 30 check-up"
    assert first["Date"] == "2026-11-27"
    assert first["Status"] == "To book"
    events = audit_events(db, "worklist.export")
    assert len(events) == 1
    assert events[0].detail == {"bucket": "overdue", "rows": 2, "searched": False}
    assert events[0].actor_label == COORDINATOR_MD
    # With a search: only what matches, and the audit says a search was made.
    given = scenario.names[scenario.md[4]].split(", ")[1]
    searched = browser.post("/worklist/bulk", {"bucket": "overdue", "action": "export", "q": given})
    assert [int(row["Patient ID"]) for row in csv_rows(searched)] == [scenario.md[4]]
    assert audit_events(db, "worklist.export")[1].detail == {
        "bucket": "overdue",
        "rows": 1,
        "searched": True,
    }
    # Appointments are written in the patient's local time.
    unconfirmed = csv_rows(
        browser.post("/worklist/bulk", {"bucket": "unconfirmed", "action": "export"})
    )
    assert unconfirmed[0]["Date"] == "2026-11-30T00:30-05:00"


def test_export_cells_never_run_as_formulas(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser]
) -> None:
    with db.factory() as session:
        patient = session.get(Patient, scenario.md[1])
        assert patient is not None
        patient.family_name = "=HYPERLINK(1)"
        session.commit()
    rows = csv_rows(browsers(COORDINATOR_MD).post("/worklist/bulk", {"action": "export"}))
    cell = next(row["Patient"] for row in rows if int(row["Patient ID"]) == scenario.md[1])
    assert cell.startswith("'=HYPERLINK(1), ")


# --- bulk: assign, remind --------------------------------------------------------------


def test_assign_chosen_patients_then_reassign_and_unassign(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    browser = browsers(COORDINATOR_MD)
    me, other = scenario.user_ids[COORDINATOR_MD], scenario.user_ids[COORDINATOR_MD2]
    chosen = [scenario.md[1], scenario.md[4]]
    response = browser.post(
        "/worklist/bulk",
        {"action": "assign", "patient": [str(i) for i in chosen], "coordinator": str(me)},
        htmx=htmx,
    )
    results = results_of(response, htmx=htmx)
    assert response.status_code == 200
    assert "2 patients are now followed by Morgan Reyes." in results
    with db.factory() as session:
        rows = assignments(session)
    assert rows == {scenario.md[1]: me, scenario.md[4]: me}
    events = audit_events(db, "worklist.assign")
    assert len(events) == 1
    assert events[0].detail is not None
    assert events[0].detail["patient_ids"] == sorted(chosen)
    assert events[0].target == f"user:{me}"
    mine = results_of(browser.get("/worklist?assigned=mine"))
    assert row_patients(mine) == sorted(chosen)
    # Reassign one (an upsert), then take the other's assignment away.
    browser.post(
        "/worklist/bulk",
        {"action": "assign", "patient": str(scenario.md[1]), "coordinator": str(other)},
        htmx=htmx,
    )
    removed = browser.post(
        "/worklist/bulk",
        {"action": "assign", "patient": str(scenario.md[4]), "coordinator": "none"},
        htmx=htmx,
    )
    assert "1 patient has no assigned coordinator now." in results_of(removed, htmx=htmx)
    with db.factory() as session:
        rows = assignments(session)
    assert rows == {scenario.md[1]: other}
    assert audit_events(db, "worklist.unassign")[0].detail == {
        "patient_ids": [scenario.md[4]],
        "changed": 1,
    }
    assert "Casey Second" in results_of(browser.get("/worklist"))


@pytest.mark.parametrize(
    "case", ["patient in another state", "mixed", "coordinator of another state", "nobody chosen"]
)
def test_assign_is_refused_outside_scope_and_changes_nothing(
    db: Database,
    scenario: Scenario,
    browsers: Callable[[str], Browser],
    htmx: bool,
    case: str,
) -> None:
    me, colorado = scenario.user_ids[COORDINATOR_MD], scenario.user_ids[COORDINATOR_CO]
    forms: dict[str, dict[str, Any]] = {
        "patient in another state": {"patient": str(scenario.co[2]), "coordinator": str(me)},
        "mixed": {"patient": [str(scenario.md[1]), str(scenario.co[2])], "coordinator": str(me)},
        "coordinator of another state": {
            "patient": str(scenario.md[1]),
            "coordinator": str(colorado),
        },
        "nobody chosen": {"coordinator": str(me)},
    }
    form = forms[case]
    response = browsers(COORDINATOR_MD).post(
        "/worklist/bulk", {"action": "assign", **form}, htmx=htmx
    )
    assert response.status_code == (200 if htmx else 400)
    results = results_of(response, htmx=htmx)
    assert 'class="alert alert-error" role="alert"' in results
    assert scenario.names[scenario.co[2]] not in results
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(CareAssignment)) == 0
    assert audit_events(db, "worklist.assign") == []


def test_assigning_to_a_coordinator_who_lacks_the_patients_state_is_refused(
    db: Database, scenario: Scenario, clock: FrozenClock
) -> None:
    with db.factory() as session:
        both = user_by_login(session, COORDINATOR_BOTH)
        actor = Actor(user_id=both.id, label=COORDINATOR_BOTH, role="coordinator")
        with pytest.raises(AssignmentError, match="does not work for the state"):
            assign_patients(
                session,
                clock=clock,
                actor=actor,
                patient_ids=[scenario.md[1], scenario.co[2]],
                coordinator_user_id=scenario.user_ids[COORDINATOR_MD],
            )
        with pytest.raises(AssignmentError, match="Only a care coordinator"):
            assign_patients(
                session,
                clock=clock,
                actor=Actor.system("test"),
                patient_ids=[scenario.md[1]],
                coordinator_user_id=both.id,
            )
        assert session.scalar(select(func.count()).select_from(CareAssignment)) == 0


def test_the_reminder_action_reports_each_refusal_and_queues_nothing_without_consent(
    db: Database, scenario: Scenario, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    """The action itself is tested in test_texts_page.py; here: it answers in the worklist."""
    browser = browsers(COORDINATOR_MD)
    with db.factory() as session:
        messages_before = session.scalar(select(func.count()).select_from(OutboundMessage))
        last_event = session.scalar(select(func.max(AuditEvent.id)))
    response = browser.post(
        "/worklist/bulk",
        {"action": "remind", "patient": [str(scenario.md[1]), str(scenario.md[4])]},
        htmx=htmx,
    )
    assert response.status_code == 200
    results = results_of(response, htmx=htmx)
    assert "Reminders queued for 0 numbers. 2 refused:" in results
    assert results.count("This number never agreed to get texts. Record consent first.") == 2
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboundMessage)) == (
            messages_before
        )
        assert session.scalar(select(func.count()).select_from(CareAssignment)) == 0
        actions = list(session.scalars(select(AuditEvent.action).where(AuditEvent.id > last_event)))
    assert actions == ["sms.remind_now", "sms.remind_now", "worklist.view"]


def test_an_unknown_bulk_action_is_refused(
    scenario: Scenario, browsers: Callable[[str], Browser]
) -> None:
    response = browsers(COORDINATOR_MD).post("/worklist/bulk", {"action": "delete"})
    assert response.status_code == 400
    assert "Choose what to do with the chosen patients." in response.text


# --- the query count -------------------------------------------------------------------


def _rows_for(session: Session, bucket: Bucket, patients: list[Patient]) -> None:
    """One row of `bucket` for each patient."""
    maya, denise = user_by_login(session, PATIENT_MD), user_by_login(session, CAREGIVER_MD)
    for number, patient in enumerate(patients):
        match bucket:
            case Bucket.OVERDUE:
                _visit(
                    session, patient, "day-30", start=MD_TODAY - 20 * DAY, end=MD_TODAY - 2 * DAY
                )
            case Bucket.QUESTIONNAIRES_OVERDUE:
                _visit(
                    session,
                    patient,
                    "day-100",
                    start=MD_TODAY - 30 * DAY,
                    end=MD_TODAY - 2 * DAY,
                    status=VisitStatus.COMPLETED,
                )
            case Bucket.TO_SCHEDULE:
                _visit(session, patient, "day-30", start=MD_TODAY - 2 * DAY, end=MD_TODAY + 9 * DAY)
            case Bucket.UNCONFIRMED:
                _visit(
                    session,
                    patient,
                    "day-30",
                    start=MD_TODAY - 2 * DAY,
                    end=MD_TODAY + 9 * DAY,
                    status=VisitStatus.SCHEDULED,
                    appointment_at=EDGE + timedelta(hours=number + 1),
                )
            case Bucket.MOVE_REQUESTS:
                visit = _visit(
                    session, patient, "day-100", start=MD_TODAY + 30 * DAY, end=MD_TODAY + 44 * DAY
                )
                _move_request(session, visit, denise, at=EDGE - timedelta(hours=number + 1))
            case Bucket.TRAVEL:
                visit = _visit(
                    session,
                    patient,
                    "day-100",
                    start=MD_TODAY + 30 * DAY,
                    end=MD_TODAY + 44 * DAY,
                    status=VisitStatus.SCHEDULED,
                    appointment_at=EDGE + 31 * DAY,
                )
                _travel_request(session, visit, denise, at=EDGE - timedelta(hours=number + 1))
            case Bucket.REPORTS:
                _report(session, patient, maya, at=EDGE - timedelta(hours=number + 1))
            case Bucket.INBOX:
                _inbox_item(session, patient, at=EDGE - timedelta(hours=number + 1))
            case Bucket.UNREACHABLE:
                _message(
                    session, patient, MessageStatus.FAILED, send_after=EDGE - timedelta(hours=1)
                )
            case Bucket.LTFU_RISK:
                for key, back in (("day-30", 200), ("day-100", 100)):
                    _visit(
                        session,
                        patient,
                        key,
                        start=MD_TODAY - (back + 10) * DAY,
                        end=MD_TODAY - back * DAY,
                        status=VisitStatus.MISSED,
                        acknowledged=True,
                    )
            case Bucket.ACTIVITY:
                visit = _visit(
                    session,
                    patient,
                    "day-100",
                    start=MD_TODAY + 30 * DAY,
                    end=MD_TODAY + 44 * DAY,
                    status=VisitStatus.CONFIRMED,
                    appointment_at=EDGE + 31 * DAY,
                )
                at = EDGE - timedelta(hours=number + 1)
                if number % 3 == 0:
                    _confirmation(session, visit, maya, at=at)
                elif number % 3 == 1:
                    _move_request(session, visit, denise, at=at, status=RequestStatus.DONE)
                else:
                    _report(session, patient, denise, at=at, status=ReportStatus.CONFIRMED)
    session.flush()


class StatementCounter:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.count = engine, 0

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: object) -> None:
        self.count += 1


@pytest.mark.parametrize("bucket", list(Bucket), ids=[bucket.value for bucket in Bucket])
def test_the_query_count_does_not_grow_with_the_rows_shown(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], bucket: Bucket
) -> None:
    clock.set(EDGE)
    with db.factory() as session:
        patients = _more_patients(session, "MD", PER_PAGE)
        _rows_for(session, bucket, patients[:3])
        session.commit()
    browser = browsers(COORDINATOR_MD)
    url = f"/worklist?bucket={bucket.value}"
    browser.get(url)  # warm: the login's first touch is not part of the page
    counts = []
    for shown in (3, PER_PAGE):
        if shown == PER_PAGE:
            with db.factory() as session:
                more = list(
                    session.scalars(
                        select(Patient).where(Patient.id.in_([p.id for p in patients[3:]]))
                    )
                )
                _rows_for(session, bucket, more)
                session.commit()
        for htmx in (False, True):
            with StatementCounter(db.engine) as counter:
                response = browser.get(url, htmx=htmx)
            assert len(row_patients(results_of(response, htmx=htmx))) == shown
            counts.append(counter.count)
    assert len(set(counts)) == 1, f"{bucket.value}: statements per page {counts}"
    assert counts[0] <= 20, counts
