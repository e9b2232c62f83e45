"""Visit reminders on SQLite and PostgreSQL, moving the clock (never sleeping): planning
into the outbox (once, on a 30-day horizon, to consenting numbers only, in each recipient's
language and zone, 10:00 local across daylight-saving changes, inside the state's texting
hours, within the caps), the check right before sending (a visit done, cancelled, booked or
moved, consent revoked, a right removed, a patient withdrawn: dropped with the reason;
outside texting hours or over the caps: deferred), and the texts coordinators send by hand.

The clock starts at Friday 2026-11-27 15:00 UTC: 10:00 in Baltimore, 8:00 in Denver, 5:00
in Honolulu."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordination.followup.models import FollowUpPlan, Visit, VisitStatus
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import (
    acknowledge_missed,
    book_appointment,
    cancel_visit,
    complete_visit,
    confirm_visit,
    outside_window,
    sync_schedule,
)
from coordination.texting import planning as reminders
from coordination.texting.by_hand import (
    ManualOutcome,
    send_one_off,
    send_reminder_now,
    send_reminders_now,
)
from coordination.texting.consent import consent_status, flag_number, opt_in, opt_out
from coordination.texting.dispatcher import DispatchReport, dispatch_due
from coordination.texting.gateway import SendResult
from coordination.texting.inbound import handle_inbound
from coordination.texting.models import (
    ConsentHow,
    ConsentStatus,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from coordination.texting.planning import PlanReport, plan_reminders
from coordination.texting.rules import MOVED_RULE
from coordination.texting.words import ONE_OFF
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import (
    Caregiver,
    CaregiverLink,
    Language,
    Patient,
    PatientStatus,
    State,
    Therapy,
    TreatmentCenter,
)
from core.text import Text
from tests.conftest import COORDINATOR_MD, T0, Database, user_by_login

NEW_YORK = "America/New_York"
DENVER = "America/Denver"
HONOLULU = "Pacific/Honolulu"
TODAY = date(2026, 11, 27)  # in Baltimore at T0
PROGRAM = "Maryland Care Connect"
PROGRAM_PHONE = "(410) 555-0100"
VISIT_KEYS = ("day-30", "day-100", "day-180", "month-12", "month-18", "month-24")
DAY_CAP = "cap: already one text that day"
WEEK_CAP = "cap: already three texts that week"


def at(day: date, hour: int, zone: str = NEW_YORK, minute: int = 0) -> datetime:
    """A local wall-clock time as a UTC instant."""
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def local(moment: datetime, zone: str = NEW_YORK) -> datetime:
    return moment.astimezone(ZoneInfo(zone))


def days(n: int) -> date:
    return TODAY + timedelta(days=n)


# --- the world ---------------------------------------------------------------------------


@dataclass
class RecordingGateway:
    """A provider that takes every message and remembers it."""

    name: str = "recording"
    sent: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, *, to: str, body: str, reference: str) -> SendResult:
        with self._lock:
            self.sent.append((to, body))
            return SendResult(provider_message_id=f"SM{len(self.sent):032d}")

    def find_sent(self, *, to: str, body: str, since: datetime) -> list[str]:
        return []

    @property
    def phones(self) -> list[str]:
        return [to for to, _body in self.sent]


@dataclass
class World:
    """Builds patients, caregivers, visits and consents in the seeded test world."""

    db: Database
    session: Session
    clock: FrozenClock
    md: State
    center_id: int
    therapy_id: int
    coordinator: Actor
    numbers: Iterator[int] = field(default_factory=lambda: itertools.count(100))
    gateway: RecordingGateway = field(default_factory=RecordingGateway)

    def phone(self) -> str:
        number = next(self.numbers)
        assert number <= 199, "demo numbers stay in 555-01xx"
        return f"+1202555{number:04d}"

    def consent(self, phone: str) -> None:
        opt_in(
            self.session,
            clock=self.clock,
            phone=phone,
            how=ConsentHow.COORDINATOR,
            by_user_id=self.coordinator.user_id,
            wording="Texts about your follow-up visits. Reply STOP to opt out.",
        )

    def state(self, code: str, zone: str, *, texts: tuple[int, int] = (8, 21)) -> State:
        state = State(
            code=code,
            name=f"State {code}",
            time_zone=zone,
            program_name=f"{code} Care Connect",
            program_phone="+18085550100",
            texts_from_hour=texts[0],
            texts_until_hour=texts[1],
            created_at=self.clock.now(),
        )
        self.session.add(state)
        self.session.flush()
        return state

    def patient(
        self,
        *,
        zone: str = NEW_YORK,
        language: Language = Language.EN,
        phone: str | None = "new",
        consent: bool = True,
        state: State | None = None,
    ) -> Patient:
        number = next(self.numbers)
        mobile = self.phone() if phone == "new" else phone
        patient = Patient(
            state_id=(state or self.md).id,
            center_id=self.center_id,
            therapy_id=self.therapy_id,
            medicaid_id=f"RMD{number:09d}",
            given_name="Test",
            family_name=f"Patient {number}",
            birth_date=date(2006, 4, 1),
            preferred_language=language,
            time_zone=zone,
            mobile_phone=mobile,
            infusion_date=date(2026, 6, 1),
            status=PatientStatus.ACTIVE,
            created_at=self.clock.now(),
            updated_at=self.clock.now(),
        )
        self.session.add(patient)
        self.session.flush()
        self.session.add(
            FollowUpPlan(
                patient_id=patient.id,
                therapy_code="casgevy",
                protocol_version=1,
                anchor_date=date(2026, 6, 1),
                created_at=self.clock.now(),
                updated_at=self.clock.now(),
            )
        )
        if consent and mobile:
            self.consent(mobile)
        self.session.flush()
        return patient

    def caregiver(
        self,
        patient: Patient,
        *,
        phone: str | None = None,
        language: Language = Language.ES,
        zone: str = NEW_YORK,
        reminders: bool = True,
        consent: bool = True,
    ) -> tuple[Caregiver, CaregiverLink]:
        person = Caregiver(
            given_name="Care",
            family_name="Giver",
            mobile_phone=phone or self.phone(),
            preferred_language=language,
            time_zone=zone,
            created_at=self.clock.now(),
        )
        self.session.add(person)
        self.session.flush()
        link = CaregiverLink(
            caregiver_id=person.id,
            patient_id=patient.id,
            relationship_label="mother",
            can_view_schedule=True,
            can_receive_reminders=reminders,
            can_view_education=True,
            can_report_events=False,
            created_at=self.clock.now(),
            updated_at=self.clock.now(),
        )
        self.session.add(link)
        if consent and phone is None:
            assert person.mobile_phone is not None
            self.consent(person.mobile_phone)
        self.session.flush()
        return person, link

    def visit(self, patient: Patient, *, opens: date, length: int = 14) -> Visit:
        taken = self.session.scalars(
            select(Visit.visit_key).where(Visit.patient_id == patient.id)
        ).all()
        key = next(k for k in VISIT_KEYS if k not in taken)
        visit = Visit(
            patient_id=patient.id,
            visit_key=key,
            protocol_version=1,
            sequence=VISIT_KEYS.index(key) + 1,
            target_date=opens + timedelta(days=length // 2),
            window_start=opens,
            window_end=opens + timedelta(days=length),
            status=VisitStatus.DUE,
            created_at=self.clock.now(),
            updated_at=self.clock.now(),
        )
        self.session.add(visit)
        self.session.flush()
        return visit

    def book(
        self, patient: Patient, visit: Visit, day: date, hour: int = 9, minute: int = 30
    ) -> Visit:
        book_appointment(
            self.session,
            clock=self.clock,
            actor=self.coordinator,
            visit=visit,
            patient=patient,
            day=day,
            at=time(hour, minute),
            location="Harborview Medical Center",
            # The day the test needs, wherever the window is (the visit page warns first).
            reason="the day the test needs" if outside_window(visit, day) else None,
            outside_window_confirmed=True,
        )
        self.session.flush()
        return visit

    def appointment(self, patient: Patient, day: date, hour: int = 9, minute: int = 30) -> Visit:
        """A visit whose window is open, booked for `day`."""
        visit = self.visit(patient, opens=min(day, TODAY) - timedelta(days=3), length=40)
        return self.book(patient, visit, day, hour, minute)

    def plan(self, **kwargs: Any) -> PlanReport:
        report = plan_reminders(self.session, clock=self.clock, **kwargs)
        self.session.commit()
        return report

    def rows(
        self, *, phone: str | None = None, status: MessageStatus | None = None
    ) -> list[OutboundMessage]:
        self.session.flush()  # the test's changes, before the objects are reloaded
        self.session.expire_all()
        query = select(OutboundMessage).where(
            OutboundMessage.purpose.in_((MessagePurpose.REMINDER, MessagePurpose.ONE_OFF))
        )
        if phone is not None:
            query = query.where(OutboundMessage.to_phone == phone)
        if status is not None:
            query = query.where(OutboundMessage.status == status)
        return list(
            self.session.scalars(query.order_by(OutboundMessage.send_after, OutboundMessage.id))
        )

    def queued(self, phone: str | None = None) -> list[OutboundMessage]:
        return self.rows(phone=phone, status=MessageStatus.QUEUED)

    def dispatch(self, when: datetime | None = None) -> DispatchReport:
        """Commit, move the clock to `when`, and run one dispatcher tick."""
        self.session.commit()
        if when is not None:
            self.clock.set(when)
        report = DispatchReport()
        dispatch_due(self.db.factory, gateway=self.gateway, clock=self.clock, report=report)
        self.session.expire_all()
        return report

    def dispatch_everything(self, until: datetime) -> None:
        """Run the dispatcher at every moment a queued row is due, up to `until`."""
        while True:
            due = [row.send_after for row in self.queued() if row.send_after <= until]
            if not due:
                return
            self.dispatch(max(min(due), self.clock.now()))


@pytest.fixture
def world(db: Database, clock: FrozenClock) -> Iterator[World]:
    with db.factory() as session:
        md = session.scalar(select(State).where(State.code == "MD"))
        assert md is not None
        center = session.scalar(select(TreatmentCenter).where(TreatmentCenter.state_id == md.id))
        therapy = session.scalar(select(Therapy).where(Therapy.code == "casgevy"))
        assert center is not None and therapy is not None
        user = user_by_login(session, COORDINATOR_MD)
        actor = Actor(user_id=user.id, label=user.login or "", role="coordinator")
        yield World(db, session, clock, md, center.id, therapy.id, actor)


def status_of(row: OutboundMessage) -> MessageStatus:
    """The row's status now (a call, so that type checkers do not keep an old one)."""
    return row.status


def rules(rows: list[OutboundMessage]) -> list[str | None]:
    return [row.rule for row in rows]


# --- planning: once, on the horizon ---------------------------------------------------------


def test_planning_twice_makes_no_second_row(world: World) -> None:
    patient = world.patient()
    world.visit(patient, opens=days(20))  # "time to book" on day 6
    world.appointment(patient, days(10))  # reminders on days 7 and 9
    first = world.plan()
    assert first.planned == 3 and first.capped == 0
    planned = [(row.id, row.rule, row.send_after) for row in world.rows()]
    assert rules(world.rows()) == [
        "window_opens:window-14d",
        "appointment:appt-3d",
        "appointment:appt-1d",
    ]

    again = world.plan()
    world.clock.advance(timedelta(minutes=10))  # the next run of the job
    later = world.plan()
    assert again.planned == later.planned == 0
    assert [(row.id, row.rule, row.send_after) for row in world.rows()] == planned


def test_two_planners_racing_make_one_row_per_reminder(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = world.patient()
    world.appointment(patient, days(10))
    world.session.commit()
    # Both planners have looked at the outbox before either writes: only the unique
    # dedupe_key can keep the second from making the same rows.
    barrier = threading.Barrier(2, timeout=20)
    original = reminders._insert_within_caps

    def racing(*args: Any, **kwargs: Any) -> None:
        barrier.wait()
        original(*args, **kwargs)

    monkeypatch.setattr(reminders, "_insert_within_caps", racing)
    errors: list[BaseException] = []

    def planner() -> None:
        try:
            with transaction(world.db.factory) as session:
                plan_reminders(session, clock=world.clock)
        except BaseException as problem:  # reported below
            errors.append(problem)

    threads = [threading.Thread(target=planner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    rows = world.rows()
    assert rules(rows) == ["appointment:appt-3d", "appointment:appt-1d"]

    # And a row planned by hand with a taken key is refused by the database itself.
    copy = rows[0]
    with world.db.factory() as other, pytest.raises(IntegrityError):
        other.add(
            OutboundMessage(
                to_phone=copy.to_phone,
                body=copy.body,
                purpose=MessagePurpose.REMINDER,
                patient_id=copy.patient_id,
                visit_id=copy.visit_id,
                rule=copy.rule,
                dedupe_key=copy.dedupe_key,
                status=MessageStatus.QUEUED,
                created_at=world.clock.now(),
                send_after=copy.send_after,
                attempts=0,
            )
        )
        other.flush()


def test_only_the_thirty_day_horizon_is_planned(world: World) -> None:
    patient = world.patient()
    world.visit(patient, opens=days(60))  # "time to book" on day 46
    assert world.plan().planned == 0
    assert world.rows() == []

    world.clock.advance(timedelta(days=15))  # day 46 is 31 days ahead
    assert world.plan().planned == 0
    world.clock.advance(timedelta(days=2))  # 29 days ahead
    assert world.plan().planned == 1
    [row] = world.rows()
    assert row.rule == "window_opens:window-14d"
    assert row.send_after == at(days(46), 10)


# --- planning: who gets what ----------------------------------------------------------------


def _withdraw(world: World, patient: Patient) -> None:
    patient.status = PatientStatus.WITHDRAWN


def _decease(world: World, patient: Patient) -> None:
    patient.status = PatientStatus.DECEASED


def _opt_out(world: World, patient: Patient) -> None:
    assert patient.mobile_phone
    opt_out(
        world.session, clock=world.clock, phone=patient.mobile_phone, how=ConsentHow.SMS_KEYWORD
    )


def _flag(world: World, patient: Patient) -> None:
    assert patient.mobile_phone
    flag_number(world.session, clock=world.clock, phone=patient.mobile_phone, code="21211")


NOBODY_TO_TEXT: dict[str, Callable[[World, Patient], None]] = {
    "opted out": _opt_out,
    "flagged number": _flag,
    "withdrawn": _withdraw,
    "deceased": _decease,
}


@pytest.mark.parametrize("case", ["no consent", *NOBODY_TO_TEXT])
def test_nothing_is_planned_for_a_number_or_patient_we_may_not_text(
    world: World, case: str
) -> None:
    texted = world.patient()
    world.appointment(texted, days(10))
    patient = world.patient(consent=case != "no consent")
    world.visit(patient, opens=days(20))
    world.appointment(patient, days(10))
    if case in NOBODY_TO_TEXT:
        NOBODY_TO_TEXT[case](world, patient)
    world.plan()
    assert {row.to_phone for row in world.rows()} == {texted.mobile_phone}


def test_a_caregiver_with_the_right_gets_the_caregiver_text_in_their_language(
    world: World,
) -> None:
    patient = world.patient(language=Language.EN)
    mother, _ = world.caregiver(patient, language=Language.ES, zone=HONOLULU)
    uncle, _ = world.caregiver(patient, language=Language.EN, reminders=False)
    world.appointment(patient, days(10), hour=15, minute=45)  # Monday Dec 7, 15:45
    world.plan()

    own = world.rows(phone=patient.mobile_phone)
    hers = world.rows(phone=mother.mobile_phone)
    assert world.rows(phone=uncle.mobile_phone) == []
    assert rules(own) == rules(hers) == ["appointment:appt-3d", "appointment:appt-1d"]
    assert {(row.language, row.caregiver_id) for row in own} == {("en", None)}
    assert {(row.language, row.caregiver_id) for row in hers} == {("es", mother.id)}
    assert own[0].body == (
        f"{PROGRAM}: reminder of your follow-up visit on Mon Dec 7 at 3:45 PM. Reply C to "
        f"confirm or R to change it. Questions: {PROGRAM_PHONE}. Reply STOP to opt out."
    )
    assert hers[0].body == (
        f"{PROGRAM}: le recordamos la visita de seguimiento de la persona que usted cuida el "
        f"lun 7 dic a las 15:45. Responda C para confirmar o R para cambiarla. Dudas: "
        f"{PROGRAM_PHONE}. PARAR para salir."
    )
    # Each at 10:00 where they live.
    assert [local(row.send_after, HONOLULU) for row in hers] == [
        datetime(2026, 12, 4, 10, tzinfo=ZoneInfo(HONOLULU)),
        datetime(2026, 12, 6, 10, tzinfo=ZoneInfo(HONOLULU)),
    ]
    assert [row.send_after for row in own] == [at(days(7), 10), at(days(9), 10)]


def test_a_number_shared_by_patient_and_caregiver_gets_one_text_per_reminder(
    world: World,
) -> None:
    patient = world.patient(language=Language.ES)
    assert patient.mobile_phone
    world.caregiver(patient, phone=patient.mobile_phone, language=Language.EN)
    world.visit(patient, opens=days(20))
    world.appointment(patient, days(10))
    world.plan()
    rows = world.rows()
    assert {row.to_phone for row in rows} == {patient.mobile_phone}
    assert len(rows) == len({row.rule for row in rows}) == 3
    assert {(row.language, row.caregiver_id) for row in rows} == {("es", None)}


def test_spanish_speakers_get_spanish(world: World) -> None:
    patient = world.patient(language=Language.ES)
    world.visit(patient, opens=days(20))  # window from Thu Dec 17 to Thu Dec 31
    world.plan()
    [row] = world.rows()
    assert row.language == "es"
    assert row.body == (
        f"{PROGRAM}: es hora de reservar su proxima visita de seguimiento, entre el jue 17 dic "
        f"y el jue 31 dic. Llame al {PROGRAM_PHONE}. Responda AYUDA para ayuda, PARAR para "
        "no recibir mas."
    )


# --- planning: when -------------------------------------------------------------------------


@pytest.mark.parametrize("zone", [NEW_YORK, DENVER, HONOLULU])
def test_reminders_go_at_ten_in_the_recipients_zone(world: World, zone: str) -> None:
    patient = world.patient(zone=zone)
    world.visit(patient, opens=days(20))
    world.plan()
    [row] = world.rows()
    assert row.send_after == at(days(6), 10, zone)


@pytest.mark.parametrize("zone", [NEW_YORK, DENVER])
@pytest.mark.parametrize(
    ("planned_from", "appointment", "change"),
    [
        (date(2027, 3, 1), date(2027, 3, 16), date(2027, 3, 14)),
        (date(2027, 10, 25), date(2027, 11, 9), date(2027, 11, 7)),
    ],
    ids=["spring", "autumn"],
)
def test_reminders_stay_at_ten_across_a_clock_change(
    world: World, zone: str, planned_from: date, appointment: date, change: date
) -> None:
    world.clock.set(at(planned_from, 10, zone))
    patient = world.patient(zone=zone)
    world.visit(patient, opens=change + timedelta(days=14))  # "time to book" on the day itself
    visit = world.visit(patient, opens=planned_from, length=30)
    world.book(patient, visit, appointment, hour=14)
    world.plan()
    rows = world.rows()
    assert rules(rows) == ["appointment:appt-3d", "window_opens:window-14d", "appointment:appt-1d"]
    assert [local(row.send_after, zone).date() for row in rows] == [
        appointment - timedelta(days=3),
        change,
        appointment - timedelta(days=1),
    ]
    assert {local(row.send_after, zone).time() for row in rows} == {time(10)}
    # The same wall-clock time is another UTC hour on each side of the change.
    assert rows[0].send_after.hour != rows[2].send_after.hour


def test_a_states_texting_hours_move_the_send_time_inside_them(world: World) -> None:
    noon_to_six = world.state("HI", HONOLULU, texts=(12, 18))
    patient = world.patient(zone=HONOLULU, state=noon_to_six)
    world.appointment(patient, days(10))
    world.plan()
    rows = world.rows()
    assert [row.send_after for row in rows] == [
        at(days(7), 12, HONOLULU),
        at(days(9), 12, HONOLULU),
    ]
    assert rows[0].body.startswith("HI Care Connect: ")
    assert "(808) 555-0100" in rows[0].body


def test_a_reminder_whose_moment_passed_goes_at_the_next_texting_hour(world: World) -> None:
    # Friday 10:00: an appointment is booked for Sunday. "3 days before" passed unseen: it
    # goes now; "1 day before" goes on Saturday at 10:00 as planned.
    patient = world.patient()
    world.appointment(patient, days(2), hour=14)
    world.plan()
    assert [(row.rule, row.send_after) for row in world.rows()] == [
        ("appointment:appt-3d", T0),
        ("appointment:appt-1d", at(days(1), 10)),
    ]


def test_only_the_latest_passed_reminder_goes_at_the_next_texting_hour(world: World) -> None:
    # Friday 22:30, outside texting hours: an appointment is booked for Saturday 15:00. Both
    # "3 days before" and "1 day before" passed: one text only, Saturday at 8:00.
    world.clock.set(at(TODAY, 22, minute=30))
    patient = world.patient()
    world.appointment(patient, days(1), hour=15)
    window = world.patient()
    world.visit(window, opens=days(5))  # "14 days before the window" passed too
    world.plan()
    assert [(row.rule, row.send_after) for row in world.rows(phone=patient.mobile_phone)] == [
        ("appointment:appt-1d", at(days(1), 8))
    ]
    assert [(row.rule, row.send_after) for row in world.rows(phone=window.mobile_phone)] == [
        ("window_opens:window-14d", at(days(1), 8))
    ]


def test_a_reminder_too_close_to_the_appointment_is_not_planned(world: World) -> None:
    # Booked at 10:00 for 11:30 the same day: a reminder would be no help.
    patient = world.patient()
    world.appointment(patient, TODAY, hour=11)
    world.plan()
    assert world.rows() == []


# --- planning: the caps ---------------------------------------------------------------------


def _assert_within_caps(rows: list[OutboundMessage], zone: str = NEW_YORK) -> None:
    sent_days = sorted(local(row.send_after, zone).date() for row in rows)
    assert len(sent_days) == len(set(sent_days)), "two texts on one day"
    for first in sent_days:
        week = [d for d in sent_days if first <= d < first + timedelta(days=7)]
        assert len(week) <= 3, f"{len(week)} texts in the week from {first}"


def test_the_caps_hold_when_visits_come_close_together(world: World) -> None:
    patient = world.patient()
    for day in (6, 7, 8):  # three appointments: Thursday, Friday, Saturday
        world.appointment(patient, days(day))
    report = world.plan()
    rows = world.rows()
    queued = [row for row in rows if row.status is MessageStatus.QUEUED]
    dropped = [row for row in rows if row.status is MessageStatus.DROPPED]
    # Every reminder is recorded: six planned, three held back by the caps.
    assert (len(rows), report.planned, report.capped) == (6, 3, 3)
    _assert_within_caps(queued)
    assert [local(row.send_after).date() for row in queued] == [days(3), days(4), days(5)]
    assert {row.drop_reason for row in dropped} == {DAY_CAP, WEEK_CAP}
    assert {row.drop_reason for row in queued} == {None}

    # Planned again later, the dropped ones stay dropped and nothing new squeezes in.
    world.clock.advance(timedelta(days=1))
    world.plan()
    assert len(world.rows()) == 6
    _assert_within_caps(world.queued())


def test_reminders_planned_in_an_earlier_run_count_in_the_caps(world: World) -> None:
    patient = world.patient()
    world.appointment(patient, days(6))
    world.plan()
    assert [local(row.send_after).date() for row in world.queued()] == [days(3), days(5)]

    # Booked later: its reminders (days 4 and 6) meet the two still waiting to go.
    world.clock.advance(timedelta(hours=1))
    world.appointment(patient, days(7))
    report = world.plan()
    assert (report.planned, report.capped) == (1, 1)
    _assert_within_caps(world.queued())
    assert [local(row.send_after).date() for row in world.queued()] == [days(3), days(4), days(5)]


def test_a_time_to_book_notice_waits_a_day_rather_than_being_dropped(world: World) -> None:
    patient = world.patient()
    world.appointment(patient, days(10))  # reminders on days 7 and 9
    world.visit(patient, opens=days(21))  # "time to book" on day 7 too
    world.plan()
    assert [(row.rule, local(row.send_after).date()) for row in world.queued()] == [
        ("appointment:appt-3d", days(7)),
        ("window_opens:window-14d", days(8)),
        ("appointment:appt-1d", days(9)),
    ]


def test_the_caps_count_per_number_and_across_patients(world: World) -> None:
    # A mother gets the reminders of two children: one text a day to her phone.
    first = world.patient()
    second = world.patient()
    mother, _ = world.caregiver(first, language=Language.EN)
    assert mother.mobile_phone
    world.session.add(
        CaregiverLink(
            caregiver_id=mother.id,
            patient_id=second.id,
            relationship_label="mother",
            can_receive_reminders=True,
            created_at=T0,
            updated_at=T0,
        )
    )
    world.appointment(first, days(10))
    world.appointment(second, days(10), hour=11)
    world.plan()
    hers = world.rows(phone=mother.mobile_phone)
    assert len(hers) == 4
    _assert_within_caps([row for row in hers if row.status is MessageStatus.QUEUED])
    assert len(world.queued(first.mobile_phone)) == len(world.queued(second.mobile_phone)) == 2


# --- a moved appointment ------------------------------------------------------------------


def test_a_moved_appointment_gets_new_reminders_and_the_old_ones_are_dropped(
    world: World,
) -> None:
    patient = world.patient()
    visit = world.appointment(patient, days(10))  # Monday Dec 7
    world.plan()
    old = world.queued()
    assert [local(row.send_after).date() for row in old] == [days(7), days(9)]

    world.book(patient, visit, days(11))  # moved to Tuesday Dec 8
    world.plan()
    new = [row for row in world.queued() if row.id not in {o.id for o in old}]
    notice, *reminders = new  # the text that tells of the move goes first, now
    assert notice.rule == MOVED_RULE and notice.send_after == T0
    assert [local(row.send_after).date() for row in reminders] == [days(8), days(10)]
    assert not {row.dedupe_key for row in new} & {row.dedupe_key for row in old}
    assert all("Tue Dec 8" in row.body for row in new)

    world.dispatch_everything(until=at(days(11), 8))
    assert world.gateway.sent == [(patient.mobile_phone, row.body) for row in new]
    for row in old:
        world.session.refresh(row)
        assert (row.status, row.drop_reason) == (MessageStatus.DROPPED, "the appointment moved")


def notices(world: World) -> list[OutboundMessage]:
    """The texts that tell of a moved appointment, in the order they go."""
    return [row for row in world.rows() if row.rule == MOVED_RULE]


def test_a_moved_appointment_texts_the_new_time_once_to_each_number_in_its_language(
    world: World,
) -> None:
    patient = world.patient()
    mother, _ = world.caregiver(patient)  # Spanish, gets reminders
    world.caregiver(patient, reminders=False, language=Language.EN)  # no right: nothing
    world.caregiver(patient, consent=False)  # never agreed to texts: nothing
    visit = world.appointment(patient, days(10))  # Monday Dec 7, 9:30
    world.plan()
    assert notices(world) == []  # the first booking is a booking, not a change

    world.book(patient, visit, days(12), hour=14, minute=0)  # Wednesday Dec 9, 2:00 PM
    world.plan()
    world.plan()  # planning twice makes no second text
    sent = notices(world)
    assert [(row.to_phone, row.language, row.status, row.send_after) for row in sent] == [
        (patient.mobile_phone, "en", MessageStatus.QUEUED, T0),
        (mother.mobile_phone, "es", MessageStatus.QUEUED, T0),
    ]
    assert sent[0].body == (
        f"{PROGRAM}: your follow-up visit has moved to Wed Dec 9 at 2:00 PM. Reply C to "
        f"confirm or R to change it. Questions: {PROGRAM_PHONE}. Reply STOP to opt out."
    )
    assert sent[1].body == (
        f"{PROGRAM}: la visita de seguimiento de la persona que usted cuida cambio al mié 9 "
        f"dic a las 14:00. Responda C para confirmar o R para cambiarla. Dudas: "
        f"{PROGRAM_PHONE}. PARAR para salir."
    )
    assert all(patient.family_name not in row.body for row in sent)  # no name

    world.dispatch(T0)
    assert world.gateway.sent == [(row.to_phone, row.body) for row in sent]
    # Only the place changes: no text.
    assert visit.appointment_at is not None
    book_appointment(
        world.session,
        clock=world.clock,
        actor=world.coordinator,
        visit=visit,
        patient=patient,
        day=days(12),
        at=time(14),
        location="Another clinic",
    )
    world.plan()
    assert len(notices(world)) == 2


def test_moved_twice_before_the_text_leaves_texts_once_with_the_latest_time(
    world: World,
) -> None:
    patient = world.patient()
    visit = world.appointment(patient, days(10))
    world.plan()
    world.clock.set(at(TODAY, 21, minute=30))  # after texting hours: it waits for 8:00
    world.book(patient, visit, days(12))
    world.plan()
    [first] = notices(world)
    assert first.send_after == at(days(1), 8)

    world.clock.advance(timedelta(minutes=5))
    world.book(patient, visit, days(13), hour=11)  # moved again (11:30) before it left
    world.plan()
    first, second = notices(world)
    assert (first.status, first.drop_reason) == (
        MessageStatus.DROPPED,
        "a later move superseded it",
    )
    assert second.status is MessageStatus.QUEUED and "Thu Dec 10 at 11:30 AM" in second.body

    # Moved twice between two planning runs: only the latest move is told.
    world.book(patient, visit, days(14))
    world.book(patient, visit, days(15), hour=15)
    world.plan()
    queued = [row for row in notices(world) if row.status is MessageStatus.QUEUED]
    assert len(queued) == 1 and "Sat Dec 12 at 3:30 PM" in queued[0].body

    world.dispatch_everything(until=at(days(1), 9))
    assert world.gateway.sent == [(patient.mobile_phone, queued[0].body)]


def test_a_move_notice_waits_for_room_in_the_caps_and_counts_in_them(world: World) -> None:
    patient = world.patient()
    visit = world.appointment(patient, days(10))
    _sent_earlier(world, patient, at(TODAY, 8, minute=30))  # a text this morning
    world.book(patient, visit, days(6))  # Thursday Dec 3
    world.plan()
    [notice] = notices(world)
    assert (notice.status, notice.send_after) == (MessageStatus.QUEUED, at(days(1), 10))
    # It counts in the caps: the new appointment's 3-day reminder goes (the third text in
    # seven days), the 1-day one would be a fourth.
    reminders_left = [row for row in world.rows() if row.rule != MOVED_RULE][1:]
    assert [(local(row.send_after).date(), row.drop_reason) for row in reminders_left] == [
        (days(3), None),
        (days(5), WEEK_CAP),
    ]

    # Moved to tomorrow morning: no day with room before it, recorded as not sent.
    other = world.patient()
    soon = world.appointment(other, days(10))
    _sent_earlier(world, other, at(TODAY, 8, minute=30))
    world.book(other, soon, days(1), hour=9)
    world.plan()
    [capped] = [row for row in notices(world) if row.patient_id == other.id]
    assert (capped.status, capped.drop_reason) == (MessageStatus.DROPPED, DAY_CAP)


def test_a_move_notice_planned_before_the_confirmation_says_it_is_confirmed(
    world: World,
) -> None:
    patient = world.patient()
    visit = world.appointment(patient, days(10))
    world.clock.set(at(TODAY, 22))  # it waits for the morning
    world.book(patient, visit, days(12))
    world.plan()
    [notice] = notices(world)
    assert "Reply C to confirm" in notice.body
    _confirm(world, visit)  # the patient confirms the new time in the portal overnight
    world.dispatch(notice.send_after)
    [(_to, body)] = world.gateway.sent
    assert body.startswith(f"{PROGRAM}: your follow-up visit has moved to Wed Dec 9 at 9:30 AM")
    assert "and is confirmed. Reply R to change it." in body


def test_a_window_that_moved_gets_a_new_time_to_book_notice(world: World) -> None:
    patient = world.patient()
    patient.infusion_date = days(-3)  # the day-30 visit: window from day 20 to day 34
    sync_schedule(
        world.session,
        clock=world.clock,
        actor=world.coordinator,
        library=shipped_protocols(),
        patient=patient,
    )
    world.plan()
    [old] = world.queued()
    assert local(old.send_after).date() == days(6)

    patient.infusion_date = days(2)  # the center corrects the date: five days later
    sync_schedule(
        world.session,
        clock=world.clock,
        actor=world.coordinator,
        library=shipped_protocols(),
        patient=patient,
    )
    world.plan()
    new = [row for row in world.queued() if row.id != old.id]
    assert [local(row.send_after).date() for row in new] == [days(11)]
    assert "between Tue Dec 22 and Tue Jan 5" in new[0].body

    world.dispatch_everything(until=at(days(12), 8))
    assert world.gateway.sent == [(patient.mobile_phone, new[0].body)]
    world.session.refresh(old)
    assert (old.status, old.drop_reason) == (MessageStatus.DROPPED, "the visit moved")


# --- a confirmed appointment --------------------------------------------------------------


def _confirm(world: World, visit: Visit) -> None:
    confirm_visit(world.session, clock=world.clock, actor=world.coordinator, visit=visit)


def test_a_confirmed_appointment_is_reminded_without_asking_to_confirm_it_again(
    world: World,
) -> None:
    patient = world.patient()
    mother, _ = world.caregiver(patient)  # Spanish
    visit = world.appointment(patient, days(10))  # Monday Dec 7, 9:30
    _confirm(world, visit)
    world.plan()
    mine = world.queued(patient.mobile_phone)
    hers = world.queued(mother.mobile_phone)
    assert [local(row.send_after).date() for row in mine] == [days(7), days(9)]
    assert {row.body for row in mine} == {
        f"{PROGRAM}: your follow-up visit on Mon Dec 7 at 9:30 AM is confirmed. See you then! "
        f"Reply R to change it. Questions: {PROGRAM_PHONE}. Reply STOP to opt out."
    }
    assert {row.body for row in hers} == {
        f"{PROGRAM}: la visita de seguimiento de la persona que usted cuida el lun 7 dic a las "
        f"9:30 esta confirmada. ¡Les esperamos! Responda R para cambiarla. Dudas: "
        f"{PROGRAM_PHONE}. PARAR para salir."
    }


def test_a_reminder_planned_before_the_confirmation_does_not_ask_again_when_it_leaves(
    world: World,
) -> None:
    patient = world.patient()
    visit = world.appointment(patient, days(5))  # Wednesday Dec 2: reminders on days 2 and 4
    world.plan()
    first, second = world.queued()
    assert "Reply C to confirm or R to change it" in first.body

    _confirm(world, visit)  # the patient confirms in the portal, after planning
    world.dispatch(first.send_after)
    [(to, body)] = world.gateway.sent
    assert to == patient.mobile_phone
    assert body.startswith(f"{PROGRAM}: your follow-up visit on Wed Dec 2 at 9:30 AM is confirmed.")
    assert "C to confirm" not in body
    world.session.refresh(first)
    assert (first.status, first.body) == (MessageStatus.SENT, body)  # the row says what left

    # Booked again at the same time, it is to be confirmed again: the next one asks.
    world.book(patient, visit, days(5))
    assert visit.status is VisitStatus.RESCHEDULED
    world.dispatch(second.send_after)
    assert "Reply C to confirm or R to change it" in world.gateway.sent[-1][1]


# --- the check right before sending ----------------------------------------------------------


def _complete(world: World, visit: Visit) -> None:
    complete_visit(
        world.session, clock=world.clock, actor=world.coordinator, visit=visit, completed_on=TODAY
    )


def _cancel(world: World, visit: Visit) -> None:
    cancel_visit(
        world.session, clock=world.clock, actor=world.coordinator, visit=visit, reason="moved away"
    )


def _book(world: World, visit: Visit) -> None:
    patient = world.session.get(Patient, visit.patient_id)
    assert patient is not None
    world.book(patient, visit, visit.window_start + timedelta(days=2))


def _move(world: World, visit: Visit) -> None:
    assert visit.appointment_at is not None
    patient = world.session.get(Patient, visit.patient_id)
    assert patient is not None
    world.book(patient, visit, local(visit.appointment_at).date() + timedelta(days=20))


def _acknowledge(world: World, visit: Visit) -> None:
    acknowledge_missed(world.session, clock=world.clock, actor=world.coordinator, visit=visit)


def _withdraw_patient(world: World, visit: Visit) -> None:
    patient = world.session.get(Patient, visit.patient_id)
    assert patient is not None
    patient.status = PatientStatus.WITHDRAWN


# (what the reminder is about, what happens after planning, the reason it is dropped)
CHANGES: dict[str, tuple[str, Callable[[World, Visit], None], str]] = {
    "completed": ("appointment", _complete, "the visit was completed"),
    "cancelled": ("appointment", _cancel, "the visit was cancelled"),
    "window booked": ("window", _book, "an appointment was booked"),
    "window completed": ("window", _complete, "the visit was completed"),
    "moved": ("appointment", _move, "the appointment moved"),
    "missed, followed up": ("overdue", _acknowledge, "a coordinator already followed up"),
    "missed, completed late": ("overdue", _complete, "the visit was completed"),
    "withdrawn": ("appointment", _withdraw_patient, "the patient is no longer followed"),
}


@pytest.mark.parametrize("case", list(CHANGES))
def test_a_change_since_planning_drops_the_reminder_with_its_reason(
    world: World, case: str
) -> None:
    about, change, reason = CHANGES[case]
    patient = world.patient()
    if about == "appointment":
        visit = world.appointment(patient, days(5))  # reminder on day 2
    elif about == "window":
        visit = world.visit(patient, opens=days(16))  # reminder on day 2
    else:
        visit = world.visit(patient, opens=days(-20), length=19)  # closed yesterday
        visit.status = VisitStatus.MISSED  # as the nightly job leaves it
    world.plan()
    [first, *_] = world.queued()
    change(world, visit)
    world.dispatch(max(first.send_after, world.clock.now()))
    world.session.refresh(first)
    assert (first.status, first.drop_reason) == (MessageStatus.DROPPED, reason)
    assert world.gateway.sent == []


def test_a_reminder_unchanged_since_planning_is_sent(world: World) -> None:
    patient = world.patient()
    world.appointment(patient, days(5))
    world.plan()
    [first, _second] = world.queued()
    report = world.dispatch(first.send_after)
    assert report.sent == 1 and world.gateway.sent == [(patient.mobile_phone, first.body)]
    world.session.refresh(first)
    assert first.status is MessageStatus.SENT and first.sent_at == at(days(2), 10)


def test_stop_from_a_shared_number_stops_everyone_who_uses_it(world: World) -> None:
    # A mother gets her son's reminders on her phone; her daughter, also a patient, uses the
    # same phone. One STOP from it ends both; the son's own number still gets his.
    son = world.patient()
    mother, _ = world.caregiver(son, language=Language.EN)
    daughter = world.patient(phone=mother.mobile_phone, consent=False)
    world.appointment(son, days(6))  # texts on days 3 and 5
    world.appointment(daughter, days(20))  # texts on days 17 and 19
    world.plan()
    assert mother.mobile_phone and son.mobile_phone
    assert len(world.queued(mother.mobile_phone)) == 4

    world.clock.advance(timedelta(hours=1))
    reply = handle_inbound(
        world.session,
        clock=world.clock,
        message_sid="SM" + "5" * 32,
        from_phone=mother.mobile_phone,
        to_phone="+14105550100",
        body="Stop",
    )
    assert reply == ""
    assert consent_status(world.session, phone=mother.mobile_phone) is ConsentStatus.OPTED_OUT
    world.dispatch_everything(until=at(days(30), 10))

    assert world.gateway.phones == [son.mobile_phone] * 2
    hers = world.rows(phone=mother.mobile_phone)
    assert {(row.status, row.drop_reason) for row in hers} == {
        (MessageStatus.DROPPED, "the number opted out (STOP)")
    }


def test_a_caregiver_whose_right_was_removed_gets_nothing_more(world: World) -> None:
    patient = world.patient()
    mother, link = world.caregiver(patient)
    world.appointment(patient, days(5))
    world.plan()
    link.can_receive_reminders = False
    world.dispatch_everything(until=at(days(5), 8))
    assert world.gateway.phones == [patient.mobile_phone] * 2
    assert {row.drop_reason for row in world.rows(phone=mother.mobile_phone)} == {
        "the caregiver no longer gets reminders"
    }


@pytest.mark.parametrize(
    ("evening", "appointment", "next_morning"),
    [
        # Saturday 22:30 EST; Sunday 8:00 is already EDT.
        (datetime(2027, 3, 13, 22, 30), date(2027, 3, 16), datetime(2027, 3, 14, 12, tzinfo=UTC)),
        # Saturday 22:30 EDT; Sunday 8:00 is EST again.
        (datetime(2027, 11, 6, 22, 30), date(2027, 11, 9), datetime(2027, 11, 7, 13, tzinfo=UTC)),
    ],
    ids=["spring", "autumn"],
)
def test_outside_texting_hours_a_due_reminder_waits_for_the_next_morning_where_they_live(
    world: World, evening: datetime, appointment: date, next_morning: datetime
) -> None:
    world.clock.set(at(appointment - timedelta(days=10), 10))
    patient = world.patient()
    aunt, _ = world.caregiver(patient, language=Language.EN, zone=HONOLULU)
    world.appointment(patient, appointment, hour=14)
    world.plan()
    [mine, *_] = world.queued(patient.mobile_phone)
    assert mine.send_after == at(appointment - timedelta(days=3), 10)

    # The dispatcher was down all day: at 22:30 in Baltimore it is 17:30 in Honolulu.
    report = world.dispatch(evening.replace(tzinfo=ZoneInfo(NEW_YORK)).astimezone(UTC))
    assert world.gateway.phones == [aunt.mobile_phone]
    assert (report.sent, report.deferred, report.dropped) == (1, 1, 0)
    world.session.refresh(mine)
    assert mine.status is MessageStatus.QUEUED and mine.drop_reason is None
    assert mine.send_after == next_morning
    assert local(mine.send_after).hour == 8
    assert mine.last_error == "waiting for texting hours (8:00-21:00)"

    world.dispatch(next_morning - timedelta(minutes=1))
    assert len(world.gateway.sent) == 1
    world.dispatch(next_morning)
    assert world.gateway.phones == [aunt.mobile_phone, patient.mobile_phone]


def test_a_state_with_narrow_texting_hours_defers_to_its_own_start(world: World) -> None:
    noon_to_six = world.state("HI", HONOLULU, texts=(12, 18))
    patient = world.patient(zone=HONOLULU, state=noon_to_six)
    world.appointment(patient, days(5))
    world.plan()
    [first, *_] = world.queued()
    assert first.send_after == at(days(2), 12, HONOLULU)
    world.dispatch(at(days(2), 18, HONOLULU))
    assert world.gateway.sent == []
    world.session.refresh(first)
    assert first.send_after == at(days(3), 12, HONOLULU)
    assert first.last_error == "waiting for texting hours (12:00-18:00)"


def test_a_one_off_sent_today_makes_a_reminder_due_today_wait_until_tomorrow(
    world: World,
) -> None:
    world.clock.set(at(TODAY, 8))
    patient = world.patient()
    world.appointment(patient, days(3), hour=14)  # reminders today and Sunday at 10:00
    world.plan()
    [reminder, _] = world.queued()
    assert reminder.send_after == at(TODAY, 10)

    world.clock.set(at(TODAY, 9))
    [outcome] = send_one_off(
        world.session,
        clock=world.clock,
        actor=world.coordinator,
        patient=patient,
        template_key="tried_to_call",
    )
    assert outcome.queued
    world.dispatch()
    assert len(world.gateway.sent) == 1

    report = world.dispatch(at(TODAY, 10))
    assert report.deferred == 1 and len(world.gateway.sent) == 1
    world.session.refresh(reminder)
    assert reminder.status is MessageStatus.QUEUED
    assert reminder.send_after == at(days(1), 10)
    assert reminder.last_error == DAY_CAP

    world.dispatch(at(days(1), 10))
    assert len(world.gateway.sent) == 2
    world.session.refresh(reminder)
    assert status_of(reminder) is MessageStatus.SENT


# --- coordinators sending by hand ------------------------------------------------------------


def _audit(world: World, action: str) -> list[AuditEvent]:
    return list(world.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_send_reminder_now_queues_for_each_consenting_number(world: World) -> None:
    patient = world.patient()
    mother, _ = world.caregiver(patient, language=Language.ES)
    father, _ = world.caregiver(patient, language=Language.EN, consent=False)
    world.appointment(patient, days(10), hour=15, minute=45)
    outcomes = send_reminder_now(
        world.session, clock=world.clock, actor=world.coordinator, patient=patient
    )
    assert [(o.phone, o.is_caregiver, o.queued) for o in outcomes] == [
        (patient.mobile_phone, False, True),
        (mother.mobile_phone, True, True),
        (father.mobile_phone, True, False),
    ]
    assert outcomes[2].reason == "This number never agreed to get texts. Record consent first."
    rows = world.queued()
    assert [(row.to_phone, row.rule, row.send_after) for row in rows] == [
        (patient.mobile_phone, "manual", T0),
        (mother.mobile_phone, "manual", T0),
    ]
    assert "Mon Dec 7 at 3:45 PM" in rows[0].body
    assert "lun 7 dic a las 15:45" in rows[1].body and "usted cuida" in rows[1].body
    [event] = _audit(world, "sms.remind_now")
    assert event.actor_user_id == world.coordinator.user_id
    assert event.patient_id == patient.id
    assert event.detail == {"queued": 2, "refused": 1}

    world.dispatch()
    assert len(world.gateway.phones) == 2
    assert set(world.gateway.phones) == {patient.mobile_phone, mother.mobile_phone}


def test_send_reminder_now_without_a_visit_queues_nothing(world: World) -> None:
    patient = world.patient()
    assert (
        send_reminder_now(
            world.session, clock=world.clock, actor=world.coordinator, patient=patient
        )
        == []
    )
    assert world.rows() == []


def test_send_one_off_queues_the_approved_text_in_each_language(world: World) -> None:
    patient = world.patient(language=Language.ES)
    world.caregiver(patient, language=Language.EN)
    outcomes = send_one_off(
        world.session,
        clock=world.clock,
        actor=world.coordinator,
        patient=patient,
        template_key="call_us",
    )
    assert [o.queued for o in outcomes] == [True, True]
    rows = world.queued()
    assert [(row.purpose, row.rule, row.language) for row in rows] == [
        (MessagePurpose.ONE_OFF, "call_us", "es"),
        (MessagePurpose.ONE_OFF, "call_us", "en"),
    ]
    assert (
        rows[0].body == f"{PROGRAM}: por favor llamenos al {PROGRAM_PHONE} sobre su seguimiento. "
        "Responda PARAR para no recibir mas."
    )
    assert rows[1].body == ONE_OFF["call_us"].en.format(program=PROGRAM, phone=PROGRAM_PHONE)
    [event] = _audit(world, "sms.one_off")
    assert event.patient_id == patient.id and event.detail == {"queued": 2, "refused": 0}
    with pytest.raises(KeyError):
        send_one_off(
            world.session,
            clock=world.clock,
            actor=world.coordinator,
            patient=patient,
            template_key="free text",
        )


def _sent_earlier(world: World, patient: Patient, *when: datetime) -> None:
    assert patient.mobile_phone
    for moment in when:
        world.session.add(
            OutboundMessage(
                to_phone=patient.mobile_phone,
                body="A reminder.",
                purpose=MessagePurpose.REMINDER,
                patient_id=patient.id,
                status=MessageStatus.DELIVERED,
                created_at=moment,
                send_after=moment,
                claimed_at=moment,
                sent_at=moment,
                attempts=1,
            )
        )
    world.session.flush()


REFUSALS: dict[str, tuple[Callable[[World, Patient], None], str]] = {
    "no consent": (
        lambda w, p: None,
        "This number never agreed to get texts. Record consent first.",
    ),
    "opted out": (_opt_out, "This number opted out of texts (STOP). It cannot be texted."),
    "flagged": (_flag, "Texts to this number failed for good (error 21211). Check the number."),
    "late evening": (
        lambda w, p: w.clock.set(at(TODAY, 21, minute=5)),
        "It is outside texting hours (8:00-21:00) where this person lives. Try later.",
    ),
    "early morning": (
        lambda w, p: w.clock.set(at(TODAY, 7, minute=55)),
        "It is outside texting hours (8:00-21:00) where this person lives. Try later.",
    ),
    "one today": (
        lambda w, p: _sent_earlier(w, p, at(TODAY, 8, minute=30)),
        "This number already got a text today (at most one a day).",
    ),
    "three this week": (
        lambda w, p: _sent_earlier(w, p, at(days(-6), 10), at(days(-4), 10), at(days(-1), 10)),
        "This number already got three texts this week (at most three a week).",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_texts_by_hand_are_refused_with_a_clear_reason(world: World, case: str) -> None:
    setup, reason = REFUSALS[case]
    patient = world.patient(consent=case != "no consent")
    world.appointment(patient, days(10))
    setup(world, patient)
    before = len(world.rows())
    outcomes: list[ManualOutcome] = [
        *send_reminder_now(
            world.session, clock=world.clock, actor=world.coordinator, patient=patient
        ),
        *send_one_off(
            world.session,
            clock=world.clock,
            actor=world.coordinator,
            patient=patient,
            template_key="book_visit",
        ),
    ]
    assert [(o.queued, o.reason) for o in outcomes] == [(False, reason)] * 2
    assert len(world.rows()) == before
    refused = [*_audit(world, "sms.remind_now"), *_audit(world, "sms.one_off")]
    assert [event.detail for event in refused] == [{"queued": 0, "refused": 1}] * 2
    if case in ("flagged", "late evening"):
        assert isinstance(outcomes[0].reason, Text)  # translated where it is shown


# --- "send reminder now" for a page of patients (the worklist's bulk action) -------------------


@dataclass
class Selection:
    """Patients chosen on the worklist, one of each case, in the order chosen."""

    fine: Patient  # and their mother, who gets reminders
    sibling: Patient  # shares the mother's number: it already got the first one's reminder
    opted_out: Patient
    capped: Patient  # texted earlier today
    asleep: Patient  # in Honolulu: 5:00 there
    idle: Patient  # no visit to remind of

    @property
    def patients(self) -> list[Patient]:
        return [self.fine, self.sibling, self.opted_out, self.capped, self.asleep, self.idle]


def _selection(world: World) -> Selection:
    fine = world.patient()
    mother, _ = world.caregiver(fine)
    sibling = world.patient()
    world.caregiver(sibling, phone=mother.mobile_phone)
    opted_out = world.patient()
    _opt_out(world, opted_out)
    capped = world.patient()
    _sent_earlier(world, capped, at(TODAY, 8, minute=30))
    asleep = world.patient(zone=HONOLULU)
    for patient in (fine, sibling, opted_out, capped, asleep):
        world.appointment(patient, days(10))
    chosen = Selection(fine, sibling, opted_out, capped, asleep, world.patient())
    world.session.commit()
    return chosen


def _what_was_done(
    world: World, since: int
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The texts queued and the events audited after audit event `since`."""
    world.session.flush()
    texts: list[tuple[object, ...]] = [
        (
            row.to_phone,
            row.body,
            row.purpose,
            row.patient_id,
            row.caregiver_id,
            row.visit_id,
            row.rule,
            row.language,
            row.send_after,
            row.requested_by_user_id,
        )
        for row in world.queued()
    ]
    events: list[tuple[object, ...]] = [
        (audit.action, audit.actor_user_id, audit.patient_id, audit.target, audit.detail)
        for audit in world.session.scalars(
            select(AuditEvent).where(AuditEvent.id > since).order_by(AuditEvent.id)
        )
    ]
    return texts, events


def _last_audit_id(world: World) -> int:
    return world.session.scalar(select(func.max(AuditEvent.id))) or 0


def test_reminders_for_a_page_decide_as_one_patient_at_a_time(world: World) -> None:
    chosen = _selection(world)
    since = _last_audit_id(world)
    one_by_one = {
        patient.id: send_reminder_now(
            world.session, clock=world.clock, actor=world.coordinator, patient=patient
        )
        for patient in chosen.patients
    }
    done_one_by_one = _what_was_done(world, since)
    world.session.rollback()

    at_once = send_reminders_now(
        world.session, clock=world.clock, actor=world.coordinator, patients=chosen.patients
    )

    assert at_once == one_by_one
    assert _what_was_done(world, since) == done_one_by_one
    reasons = {
        patient_id: [(o.is_caregiver, o.queued, o.reason) for o in outcomes]
        for patient_id, outcomes in at_once.items()
    }
    assert reasons == {
        chosen.fine.id: [(False, True, None), (True, True, None)],
        chosen.sibling.id: [
            (False, True, None),
            (True, False, "This number already got a text today (at most one a day)."),
        ],
        chosen.opted_out.id: [
            (False, False, "This number opted out of texts (STOP). It cannot be texted.")
        ],
        chosen.capped.id: [
            (False, False, "This number already got a text today (at most one a day).")
        ],
        chosen.asleep.id: [
            (
                False,
                False,
                "It is outside texting hours (8:00-21:00) where this person lives. Try later.",
            )
        ],
        chosen.idle.id: [],
    }
    texts, events = done_one_by_one
    assert [text[3] for text in texts] == [chosen.fine.id, chosen.fine.id, chosen.sibling.id]
    assert [(audit[0], audit[2], audit[4]) for audit in events] == [
        ("sms.remind_now", chosen.fine.id, {"queued": 2, "refused": 0}),
        ("sms.remind_now", chosen.sibling.id, {"queued": 1, "refused": 1}),
        ("sms.remind_now", chosen.opted_out.id, {"queued": 0, "refused": 1}),
        ("sms.remind_now", chosen.capped.id, {"queued": 0, "refused": 1}),
        ("sms.remind_now", chosen.asleep.id, {"queued": 0, "refused": 1}),
    ]


def test_reminders_for_a_page_read_in_a_fixed_number_of_statements(world: World) -> None:
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    counts = []
    for groups in (1, 4):
        chosen = [patient for _ in range(groups) for patient in _selection(world).patients]
        before = world.session.scalar(select(func.max(AuditEvent.id))) or 0
        statements.clear()
        event.listen(world.db.engine, "before_cursor_execute", seen)
        try:
            send_reminders_now(
                world.session, clock=world.clock, actor=world.coordinator, patients=chosen
            )
            world.session.flush()  # the audit events go with the next flush
        finally:
            event.remove(world.db.engine, "before_cursor_execute", seen)
        audited = [s for s in statements if s.lstrip().startswith("INSERT INTO audit_events")]
        counts.append(len(statements) - len(audited))
        world.session.commit()
        # One audit event per patient with a visit, as one patient at a time would write
        # (the ORM batches them as the database allows: their statements are not counted).
        written = world.session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.id > before)
        )
        assert written == 5 * groups
    # The visits, states, caregivers, consents and texts so far; the texts queued.
    assert counts == [6, 6], counts


# --- travel support: one sentence, never the details ------------------------------------------

TRAVEL_EN = "Your travel is arranged; details in the portal."
TRAVEL_ES = "Su viaje esta organizado; los detalles estan en el portal."


def _arrange_travel(world: World, visit: Visit) -> None:
    """Travel support arranged for the visit (as coordinators record it, in short)."""
    from coordination.travel.models import TravelPolicy, TravelRequest, TravelStatus

    patient = world.session.get(Patient, visit.patient_id)
    assert patient is not None
    policy_id = world.session.scalar(
        select(TravelPolicy.id).where(TravelPolicy.state_id == patient.state_id).limit(1)
    )
    assert policy_id is not None and world.coordinator.user_id is not None
    world.session.add(
        TravelRequest(
            patient_id=patient.id,
            visit_id=visit.id,
            state_id=patient.state_id,
            policy_id=policy_id,
            requested_by_user_id=world.coordinator.user_id,
            kinds=["flight"],
            depart_on=TODAY,
            return_on=TODAY,
            travellers=1,
            status=TravelStatus.ARRANGED,
            created_at=world.clock.now(),
            updated_at=world.clock.now(),
        )
    )
    world.session.flush()


def test_an_arranged_trip_adds_one_sentence_to_the_appointment_reminder(world: World) -> None:
    patient = world.patient()
    mother, _ = world.caregiver(patient)  # Spanish
    visit = world.appointment(patient, days(10))
    _arrange_travel(world, visit)
    world.plan()
    mine = world.queued(patient.mobile_phone)
    hers = world.queued(mother.mobile_phone)
    assert mine and hers
    for row in mine:
        assert row.body.endswith(f"Reply STOP to opt out. {TRAVEL_EN}")
    for row in hers:
        assert row.body.endswith(f"PARAR para salir. {TRAVEL_ES}")
    # Nothing of what was booked.
    assert not any("flight" in row.body.lower() or "vuelo" in row.body for row in mine + hers)


def test_travel_arranged_after_planning_is_said_when_the_reminder_leaves(world: World) -> None:
    patient = world.patient()
    visit = world.appointment(patient, days(5))
    world.plan()
    first = world.queued()[0]
    assert TRAVEL_EN not in first.body
    _arrange_travel(world, visit)
    world.dispatch(first.send_after)
    assert world.gateway.sent[-1][1].endswith(TRAVEL_EN)
    # The appointment moves: its travel is to review, and the reminders no longer say it.
    world.book(patient, visit, days(6), hour=11)
    world.plan()
    sent_before = len(world.gateway.sent)
    world.dispatch_everything(at(days(6), 8))
    later = [body for _to, body in world.gateway.sent[sent_before:]]
    assert later, "the moved appointment is texted"
    assert all(TRAVEL_EN not in body for body in later)
