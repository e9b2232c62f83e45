"""Program figures (`reporting.program`) on small cohorts whose figures are worked out by hand
below, now and as of past moments: adherence (in the window, outside it, missed, cancelled,
nothing recorded), retention, reminder reach, patients' reports, and the days from a missed
visit to the next contact."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time

from sqlalchemy import select
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
from coordination.followup.notes import add_outreach_note
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import (
    book_appointment,
    cancel_visit,
    complete_visit,
    confirm_visit,
)
from coordination.records import change_record
from coordination.texting.consent import opt_out
from coordination.texting.models import (
    ConsentHow,
    DeliveryEvent,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from core.audit.service import Actor
from core.clock import FrozenClock
from core.identity.models import Role
from core.models import Patient, PatientStatus
from core.service import PatientData
from reporting.program import (
    SMS_MOVE_NOTE,
    Figure,
    Period,
    ProgramCube,
    Selection,
    end_of_day,
    program_cube,
)
from tests.conftest import T0, Database
from tests.factories import Factory, building

INFUSED = date(2025, 1, 1)
STAFF = Actor(user_id=None, label="test-coordinator", role="coordinator")


def _at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def _visits(session: Session, patient: Patient) -> dict[str, Visit]:
    return {
        visit.visit_key: visit
        for visit in session.scalars(select(Visit).where(Visit.patient_id == patient.id))
    }


def _miss(session: Session, visit: Visit, day: date) -> None:
    """What the nightly job does the morning after the window closed (for this visit only:
    the cohort leaves some visits open on purpose)."""
    session.add(
        VisitEvent(
            visit_id=visit.id,
            at=_at(day, 6),
            actor_label="system:missed-visits",
            action="miss",
            from_status=visit.status.value,
            to_status=VisitStatus.MISSED.value,
        )
    )
    visit.status = VisitStatus.MISSED
    session.flush()


def _complete(make: Factory, clock: FrozenClock, visit: Visit, on: date, recorded: date) -> None:
    clock.set(_at(recorded))
    complete_visit(make.session, clock=clock, actor=STAFF, visit=visit, completed_on=on)
    make.session.flush()


def _table(cube: ProgramCube, figure: Figure, *, by: str = "row") -> dict[tuple[str, str], int]:
    """The cube's counts of one figure added up by (row or period, column)."""
    found: dict[tuple[str, str], int] = {}
    for cell in cube.cells:
        if cell.figure is figure:
            key = (cell.row if by == "row" else cell.period, cell.column)
            found[key] = found.get(key, 0) + cell.count
    return found


def _cohort(db: Database, clock: FrozenClock) -> dict[str, int]:
    """Four Maryland patients of one center, three infused on 2025-01-01 (Casgevy: day-30
    window 01-24..02-07, day-100 03-28..04-25, day-180 06-09..07-21, month-12
    2025-12-02..2026-01-31, month-18 2026-06-03..08-02; month-24 still open on T0):

    | patient | day-30            | day-100                  | day-180   | month-12 | month-18 |
    | P1      | done 02-01 (in)   | done 04-30, told 06-10   | missed    | in       | open     |
    | P2      | missed            | in                       | cancelled | missed   | missed   |
    | P3      | in                | in                       | cancelled (withdrawn 2025-06-01)  |
    | P4      | enrolled, not infused: no visits                                       |

    Contacts after a missed visit: P1's day-180 (closed 07-21) a call on 07-25 (4 days);
    P2's day-30 (closed 02-07) an appointment booked on 02-20 (13 days) and a call on 03-01;
    P2's month-12 and month-18: none."""
    clock.set(_at(INFUSED))
    with building(db.factory, clock) as make:
        center = make.center(make.state("MD"))
        p1, p2, p3 = (make.patient(center=center, infusion_date=INFUSED) for _ in range(3))
        p4 = make.patient(center=center)
        writer = make.staff(Role.COORDINATOR, states=[make.state("MD")])
        ids = {"P1": p1.id, "P2": p2.id, "P3": p3.id, "P4": p4.id, "center": center.id}
        ids["state"] = center.state_id
        ids["writer"] = writer.id
    with building(db.factory, clock) as make:
        session = make.session
        p1, p2, p3 = (session.get_one(Patient, ids[key]) for key in ("P1", "P2", "P3"))
        v1, v2, v3 = _visits(session, p1), _visits(session, p2), _visits(session, p3)
        author = Actor(user_id=ids["writer"], label="coordinator", role="coordinator")
        # In time order: the history is what as-of reads.
        _complete(make, clock, v3["day-30"], date(2025, 1, 31), date(2025, 1, 31))
        _complete(make, clock, v1["day-30"], date(2025, 2, 1), date(2025, 2, 1))
        _miss(session, v2["day-30"], date(2025, 2, 8))
        clock.set(_at(date(2025, 2, 20)))
        book_appointment(
            session,
            clock=clock,
            actor=STAFF,
            visit=v2["day-100"],
            patient=p2,
            day=date(2025, 4, 11),
            at=time(10),
            location="Clinic",
        )
        clock.set(_at(date(2025, 3, 1)))
        add_outreach_note(
            session,
            clock=clock,
            actor=author,
            patient=p2,
            channel="call",
            outcome="reached",
            note="",
            next_step="",
        )
        _complete(make, clock, v3["day-100"], date(2025, 4, 10), date(2025, 4, 10))
        _complete(make, clock, v2["day-100"], date(2025, 4, 11), date(2025, 4, 11))
        clock.set(_at(date(2025, 5, 1)))
        cancel_visit(session, clock=clock, actor=STAFF, visit=v2["day-180"], reason="travel")
        clock.set(_at(date(2025, 6, 1)))
        change_record(
            session,
            clock=clock,
            actor=STAFF,
            library=shipped_protocols(),
            patient=p3,
            data=replace(PatientData.of(p3), status=PatientStatus.WITHDRAWN),
            allowed_state_ids=None,
        )
        _complete(make, clock, v1["day-100"], date(2025, 4, 30), date(2025, 6, 10))
        _miss(session, v1["day-180"], date(2025, 7, 22))
        clock.set(_at(date(2025, 7, 25)))
        add_outreach_note(
            session,
            clock=clock,
            actor=author,
            patient=p1,
            channel="call",
            outcome="no_answer",
            note="",
            next_step="",
        )
        _complete(make, clock, v1["month-12"], date(2026, 1, 10), date(2026, 1, 10))
        _miss(session, v2["month-12"], date(2026, 2, 1))
        _miss(session, v2["month-18"], date(2026, 8, 3))
    clock.set(T0)
    return ids


def test_adherence_by_visit_retention_and_contact_now(
    empty_db: Database, clock: FrozenClock
) -> None:
    _cohort(empty_db, clock)
    with empty_db.factory() as session:
        cube = program_cube(session, as_of=T0, now=T0)

    # | visit    | in | outside | missed | cancelled | open |
    # | day-30   | 2  |         | 1      |           |      |
    # | day-100  | 2  | 1       |        |           |      |
    # | day-180  |    |         | 1      | 2         |      |
    # | month-12 | 1  |         | 1      | 1         |      |
    # | month-18 |    |         | 1      | 1         | 1    |
    assert _table(cube, Figure.ADHERENCE) == {
        ("day-30", "in_window"): 2,
        ("day-30", "missed"): 1,
        ("day-100", "in_window"): 2,
        ("day-100", "outside_window"): 1,
        ("day-180", "missed"): 1,
        ("day-180", "cancelled"): 2,
        ("month-12", "in_window"): 1,
        ("month-12", "missed"): 1,
        ("month-12", "cancelled"): 1,
        ("month-18", "missed"): 1,
        ("month-18", "cancelled"): 1,
        ("month-18", "open"): 1,
    }
    # Windows closed by quarter: day-30 Q1, day-100 Q2, day-180 Q3 2025; month-12 Q1 and
    # month-18 Q3 2026.
    by_quarter = _table(cube, Figure.ADHERENCE, by="period")
    assert by_quarter[("2025-Q1", "in_window")] == 2
    assert by_quarter[("2026-Q3", "open")] == 1
    # Retention: P1 and P2 active, P3 withdrawn (infused in 2025-Q1), P4 enrolled.
    retention = {
        (cell.cohort, cell.row): cell.count
        for cell in cube.cells
        if cell.figure is Figure.RETENTION
    }
    assert retention == {
        ("2025-Q1", "active"): 2,
        ("2025-Q1", "withdrawn"): 1,
        ("", "enrolled"): 1,
    }
    # Missed visits and the days to the next contact: 4 (P1 day-180), 13 (P2 day-30),
    # none yet for P2's month-12 and month-18.
    assert _table(cube, Figure.CONTACT) == {("4", ""): 1, ("13", ""): 1, ("", ""): 2}


def test_as_of_a_past_day_reads_the_history(empty_db: Database, clock: FrozenClock) -> None:
    ids = _cohort(empty_db, clock)
    with empty_db.factory() as session:
        # As of the end of 2025-06-01: windows closed by then are day-30 and day-100. P1's
        # day-100 was completed on 04-30 but only recorded on 06-10: still open then. P3
        # was withdrawn that day.
        june = program_cube(session, as_of=end_of_day(date(2025, 6, 1)), now=T0)
        # As of 2025-02-15: P2's day-30 was missed (02-08), nobody had called yet.
        february = program_cube(session, as_of=end_of_day(date(2025, 2, 15)), now=T0)
        may = program_cube(session, as_of=end_of_day(date(2025, 5, 1)), now=T0)

    assert _table(june, Figure.ADHERENCE) == {
        ("day-30", "in_window"): 2,
        ("day-30", "missed"): 1,
        ("day-100", "in_window"): 2,
        ("day-100", "open"): 1,
    }
    june_retention = {
        cell.row: cell.count for cell in june.cells if cell.figure is Figure.RETENTION
    }
    assert june_retention == {"active": 2, "withdrawn": 1, "enrolled": 1}
    may_retention = {cell.row: cell.count for cell in may.cells if cell.figure is Figure.RETENTION}
    assert may_retention == {"active": 3, "enrolled": 1}
    assert _table(february, Figure.CONTACT) == {("", ""): 1}
    assert _table(february, Figure.ADHERENCE) == {
        ("day-30", "in_window"): 2,
        ("day-30", "missed"): 1,
    }
    assert ids["P4"]  # enrolled all along


def test_a_selection_keeps_to_its_states_centers_cohorts_and_period(
    empty_db: Database, clock: FrozenClock
) -> None:
    ids = _cohort(empty_db, clock)
    with building(empty_db.factory, clock) as make:
        colorado = make.center(make.state("CO"))
        other = make.patient(center=colorado, infusion_date=date(2025, 1, 1))
        other_id = other.id
    with empty_db.factory() as session:
        everyone = program_cube(session, as_of=T0, now=T0)
        maryland = program_cube(
            session, as_of=T0, now=T0, selection=Selection(state_ids=frozenset({ids["state"]}))
        )
        q1 = program_cube(
            session,
            as_of=T0,
            now=T0,
            selection=Selection(period=Period.parse("2025-Q1") or Period("all", None, None)),
        )
        cohort_2024 = program_cube(session, as_of=T0, now=T0, selection=Selection(cohort="2024"))

    everyone_states = {cell.state_id for cell in everyone.cells}
    assert len(everyone_states) == 2
    assert {cell.state_id for cell in maryland.cells} == {ids["state"]}
    # The Colorado patient's visits were all created missed at enrolment (windows past):
    # day-30 has one more missed visit in everyone's figures than in Maryland's.
    assert _table(everyone, Figure.ADHERENCE)[("day-30", "missed")] == 2
    assert _table(maryland, Figure.ADHERENCE)[("day-30", "missed")] == 1
    # 2025-Q1: only day-30's windows closed then (three Maryland, one Colorado).
    assert {row for row, _column in _table(q1, Figure.ADHERENCE)} == {"day-30"}
    # Retention has no quarter: the period leaves it whole.
    assert sum(c.count for c in q1.cells if c.figure is Figure.RETENTION) == 5
    assert cohort_2024.cells == ()
    # The same selection over the whole cube (what a snapshot serves) gives the same cells.
    chosen = Selection(state_ids=frozenset({ids["state"]}))
    assert tuple(cell for cell in everyone.cells if chosen.keeps(cell)) == maryland.cells
    assert other_id


def test_reminder_reach_answers_opt_outs_and_reports(
    empty_db: Database, clock: FrozenClock
) -> None:
    """Texts (reminders) by what came of them and the quarter they were tried in:

    | quarter | delivered | failed | no report |
    | 2026-Q1 | 1         | 1      |           |
    | 2026-Q2 |           | 1      | 1         |

    (a queued reminder and a text sent by hand are not reminders tried); answers: one
    confirmation by text, one in the portal, one by the care team, a move asked by text
    and one in the portal; opt-outs: STOP from P1's number, and from a caregiver's number
    (counted for the patient); reports: a pain crisis confirmed, an ED visit dismissed, a
    hospital stay awaiting review (reviewed after the as-of moment)."""
    clock.set(_at(date(2026, 1, 5)))
    with building(empty_db.factory, clock) as make:
        center = make.center(make.state("MD"))
        p1 = make.patient(
            center=center, infusion_date=date(2026, 1, 1), mobile_phone="+12025550181"
        )
        p2 = make.patient(center=center, infusion_date=date(2026, 1, 1))
        p3 = make.patient(center=center, infusion_date=date(2026, 1, 1))
        helper = make.caregiver(p2)
        login = make.patient_login(p2)
        session = make.session

        def text(
            patient: Patient, sent: datetime | None, status: MessageStatus, **extra: object
        ) -> OutboundMessage:
            message = OutboundMessage(
                to_phone="+12025550181",
                body="Reminder",
                purpose=extra.pop("purpose", MessagePurpose.REMINDER),
                patient_id=patient.id,
                status=status,
                created_at=_at(date(2026, 1, 1)),
                send_after=sent or _at(date(2026, 4, 2)),
                claimed_at=extra.pop("claimed_at", sent),
                sent_at=sent,
                provider_message_id=extra.pop("sid", None),
                **extra,
            )
            session.add(message)
            return message

        text(p1, _at(date(2026, 3, 1)), MessageStatus.DELIVERED, sid="SM1")
        text(p1, _at(date(2026, 3, 2)), MessageStatus.FAILED, sid="SM2")
        text(p2, _at(date(2026, 4, 1)), MessageStatus.SENT, sid="SM3")
        text(p2, None, MessageStatus.FAILED, claimed_at=_at(date(2026, 4, 2)))
        text(p2, None, MessageStatus.QUEUED)
        text(p1, _at(date(2026, 5, 1)), MessageStatus.SENT, purpose=MessagePurpose.ONE_OFF)
        session.add_all(
            [
                DeliveryEvent(message_sid="SM1", status="delivered", at=_at(date(2026, 3, 1), 13)),
                DeliveryEvent(
                    message_sid="SM2", status="undelivered", at=_at(date(2026, 3, 2), 13)
                ),
            ]
        )
        session.flush()

        # Answers, all in 2026-Q2.
        for patient, actor in (
            (p1, Actor(user_id=None, label="sms:***0181", role=None)),
            (p2, Actor(user_id=login.id, label="patient", role="patient")),
            (p3, STAFF),
        ):
            visit = _visits(session, patient)["day-100"]
            clock.set(_at(date(2026, 4, 1)))
            book_appointment(
                session,
                clock=clock,
                actor=STAFF,
                visit=visit,
                patient=patient,
                day=visit.target_date,
                at=time(10),
                location="Clinic",
            )
            clock.set(_at(date(2026, 4, 3)))
            confirm_visit(session, clock=clock, actor=actor, visit=visit)
        for patient, note in ((p1, SMS_MOVE_NOTE), (p2, "Exams that week")):
            session.add(
                MoveRequest(
                    visit_id=_visits(session, patient)["day-180"].id,
                    patient_id=patient.id,
                    note=note,
                    status=RequestStatus.OPEN,
                    created_at=_at(date(2026, 5, 5)),
                )
            )
        clock.set(_at(date(2026, 5, 6)))
        opt_out(session, clock=clock, phone="+12025550181", how=ConsentHow.SMS_KEYWORD)
        assert helper.caregiver.mobile_phone is not None
        opt_out(session, clock=clock, phone=helper.caregiver.mobile_phone, how=ConsentHow.PORTAL)
        for kind, status, reviewed in (
            (ReportKind.PAIN_CRISIS, ReportStatus.CONFIRMED, date(2026, 6, 2)),
            (ReportKind.EMERGENCY_VISIT, ReportStatus.DISMISSED, date(2026, 6, 2)),
            (ReportKind.HOSPITAL_STAY, ReportStatus.CONFIRMED, date(2026, 7, 2)),
        ):
            session.add(
                PatientReport(
                    patient_id=p2.id,
                    kind=kind,
                    occurred_on=date(2026, 5, 20),
                    reported_by_user_id=login.id,
                    reported_at=_at(date(2026, 6, 1)),
                    status=status,
                    reviewed_at=_at(reviewed),
                )
            )
        session.flush()
    with empty_db.factory() as session:
        cube = program_cube(session, as_of=end_of_day(date(2026, 6, 30)), now=T0)
        before_reports = program_cube(session, as_of=end_of_day(date(2026, 3, 1)), now=T0)

    assert _table(cube, Figure.TEXTS, by="period") == {
        ("2026-Q1", "delivered"): 1,
        ("2026-Q1", "failed"): 1,
        ("2026-Q2", "failed"): 1,
        ("2026-Q2", "no_report"): 1,
    }
    assert _table(cube, Figure.ANSWERS, by="period") == {
        ("2026-Q2", "confirmed_by_text"): 1,
        ("2026-Q2", "confirmed_in_portal"): 1,
        ("2026-Q2", "confirmed_by_staff"): 1,
        ("2026-Q2", "move_by_text"): 1,
        ("2026-Q2", "move_in_portal"): 1,
    }
    assert _table(cube, Figure.OPT_OUTS, by="period") == {
        ("2026-Q2", "sms_keyword"): 1,
        ("2026-Q2", "portal"): 1,
    }
    assert _table(cube, Figure.REPORTS) == {
        ("pain_crisis", "confirmed"): 1,
        ("emergency_visit", "dismissed"): 1,
        ("hospital_stay", "awaiting"): 1,
    }
    # As of 2026-03-01 noon... end of day: the first text delivered (13:00), nothing else.
    assert _table(before_reports, Figure.TEXTS, by="period") == {("2026-Q1", "delivered"): 1}
    assert _table(before_reports, Figure.REPORTS) == {}
