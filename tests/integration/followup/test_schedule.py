"""Follow-up schedules on SQLite and PostgreSQL: generation under any sequence of infusion-date
changes (property tests), appointment times across daylight-saving changes, the nightly
missed-visit job at the edges of a far-from-UTC day, back-dated enrolments (windows closed
before follow-up began start missed and followed up), the visit's transitions and history,
protocol versions and their migration, job locks, and closing a patient's follow-up."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from apscheduler.schedulers.background import BackgroundScheduler
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordination.followup.models import FollowUpPlan, Visit, VisitEvent, VisitStatus
from coordination.followup.outcomes import record_outcomes
from coordination.followup.protocol import (
    PROTOCOL_DIR,
    Assessment,
    Protocol,
    ProtocolLibrary,
    load_protocols,
)
from coordination.followup.schedule import (
    TRANSITIONS,
    AppointmentTimeError,
    ScheduleChange,
    VisitTransitionError,
    _transition,
    acknowledge_missed,
    appointment_instant,
    book_appointment,
    cancel_visit,
    complete_visit,
    confirm_visit,
    mark_missed_visits,
    migrate_protocol,
    next_visit,
    sync_schedule,
    visit_history,
    visits_for_patient,
)
from coordination.jobs import add_jobs
from coordination.locks import acquire_lock, release_lock, run_exclusively
from coordination.models import JobLock
from coordination.texting.gateway import ConsoleGateway
from coordination.worklist.buckets import Bucket, WorklistCriteria, bucket_counts
from core.audit.service import Actor
from core.clock import FrozenClock
from core.models import Language, Patient, PatientStatus, State, Therapy, TreatmentCenter
from tests.conftest import COORDINATOR_MD, PATIENT_MD, T0, Database, user_by_login

ZONES = (
    "America/New_York",
    "America/Denver",
    "America/Phoenix",
    "Pacific/Honolulu",
    "America/Puerto_Rico",
)
THERAPIES = ("casgevy", "lyfgenia")
LIBRARY = load_protocols()
# Before every infusion date the property tests draw, so that any appointment is in the future.
EARLY = datetime(2014, 6, 1, 12, 0, tzinfo=UTC)

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)


# --- the US daylight-saving rules, written out (an oracle independent of zoneinfo) ---------

STANDARD_OFFSET_HOURS = {
    "America/New_York": -5,
    "America/Denver": -7,
    "America/Phoenix": -7,  # no daylight-saving time
    "Pacific/Honolulu": -10,  # none either
    "America/Puerto_Rico": -4,  # none either
}
OBSERVES_DST = {"America/New_York", "America/Denver"}


def _sunday(year: int, month: int, nth: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(6 - first.weekday()) % 7 + 7 * (nth - 1))


def dst_start(year: int) -> date:
    return _sunday(year, 3, 2)  # second Sunday of March, 2:00 -> 3:00


def dst_end(year: int) -> date:
    return _sunday(year, 11, 1)  # first Sunday of November, 2:00 -> 1:00


DST_DAYS = [change(year) for year in (2026, 2027) for change in (dst_start, dst_end)]


def wall_clock_offsets(zone: str, day: date, at: time) -> list[int]:
    """The UTC offsets (hours) the local time `at` on `day` has, in order of occurrence:
    none in the spring-forward gap, two in the fall-back hour, one otherwise."""
    standard = STANDARD_OFFSET_HOURS[zone]
    if zone not in OBSERVES_DST:
        return [standard]
    summer = standard + 1
    if day == dst_start(day.year):
        if at < time(2):
            return [standard]
        return [] if at < time(3) else [summer]
    if day == dst_end(day.year):
        if at < time(1):
            return [summer]
        return [summer, standard] if at < time(2) else [standard]
    return [summer] if dst_start(day.year) < day < dst_end(day.year) else [standard]


def wall_clock_exists(zone: str, day: date, at: time) -> bool:
    return bool(wall_clock_offsets(zone, day, at))


def test_the_oracle_knows_the_daylight_saving_days_of_2026_and_2027() -> None:
    assert [date(2026, 3, 8), date(2026, 11, 1), date(2027, 3, 14), date(2027, 11, 7)] == DST_DAYS
    for zone in OBSERVES_DST:
        for day in DST_DAYS:
            for at in (time(0, 30), time(1, 30), time(2, 30), time(3, 30)):
                naive = datetime.combine(day, at)
                zoneinfo_offsets = {
                    naive.replace(tzinfo=ZoneInfo(zone), fold=fold).utcoffset() for fold in (0, 1)
                }
                ours = {timedelta(hours=hours) for hours in wall_clock_offsets(zone, day, at)}
                # zoneinfo gives the gap both offsets; everywhere else it agrees with us.
                assert ours == zoneinfo_offsets or not ours


# --- building patients -------------------------------------------------------------------

_numbers = itertools.count(1)


@dataclass(frozen=True)
class Place:
    state_id: int
    center_id: int
    therapy_ids: dict[str, int]
    coordinator: Actor


def place_of(session: Session) -> Place:
    state = session.scalar(select(State).where(State.code == "MD"))
    assert state is not None
    center = session.scalar(select(TreatmentCenter).where(TreatmentCenter.state_id == state.id))
    assert center is not None
    therapies = {therapy.code: therapy.id for therapy in session.scalars(select(Therapy))}
    user = user_by_login(session, COORDINATOR_MD)
    actor = Actor(user_id=user.id, label=user.login or "", role="coordinator")
    return Place(state.id, center.id, therapies, actor)


def make_patient(
    session: Session,
    place: Place,
    *,
    clock: FrozenClock,
    zone: str = "America/New_York",
    infusion: date | None = date(2026, 11, 1),
    therapy: str = "casgevy",
    status: PatientStatus = PatientStatus.ACTIVE,
) -> Patient:
    number = next(_numbers)
    patient = Patient(
        state_id=place.state_id,
        center_id=place.center_id,
        therapy_id=place.therapy_ids[therapy],
        medicaid_id=f"TST{number:09d}",
        center_mrn=None,
        given_name="Test",
        family_name=f"Patient {number}",
        birth_date=date(2005, 6, 1),
        preferred_language=Language.EN,
        time_zone=zone,
        mobile_phone=None,
        infusion_date=infusion,
        status=status,
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    session.add(patient)
    session.flush()
    return patient


def sync(
    session: Session,
    place: Place,
    patient: Patient,
    *,
    clock: FrozenClock,
    library: ProtocolLibrary = LIBRARY,
) -> ScheduleChange:
    return sync_schedule(
        session, clock=clock, actor=place.coordinator, library=library, patient=patient
    )


def visits_by_key(session: Session, patient: Patient) -> dict[str, Visit]:
    return {visit.visit_key: visit for visit in visits_for_patient(session, patient_id=patient.id)}


def events_of(session: Session, visit: Visit) -> list[VisitEvent]:
    return visit_history(session, visit_ids=[visit.id]).get(visit.id, [])


def status_of(visit: Visit) -> VisitStatus:
    """The visit's status now (a call, so that type checkers do not keep an old one)."""
    return visit.status


def reload(session: Session, visit: Visit) -> Visit:
    session.expire_all()
    found = session.get(Visit, visit.id)
    assert found is not None
    return found


def count_events(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(VisitEvent)) or 0


def current(therapy: str, library: ProtocolLibrary = LIBRARY) -> Protocol:
    protocol = library.current(therapy)
    assert protocol is not None
    return protocol


@pytest.fixture
def place(session: Session) -> Place:
    return place_of(session)


# --- property tests: generating and regenerating schedules -------------------------------


def _dst_anchors() -> list[date]:
    """Infusion dates (2015-2030) that put a visit's target, window start or window end on
    a daylight-saving day of 2026 or 2027."""
    anchors = set()
    for therapy in THERAPIES:
        for visit in current(therapy).visits:
            for day in DST_DAYS:
                for shift in (0, visit.window_before_days, -visit.window_after_days):
                    anchor = day - timedelta(days=visit.offset_days - shift)
                    if anchor >= date(2015, 1, 1):
                        anchors.add(anchor)
    return sorted(anchors)


DST_ANCHORS = _dst_anchors()
INFUSION_DATES = st.one_of(
    st.dates(min_value=date(2015, 1, 1), max_value=date(2030, 12, 31)),
    st.sampled_from(DST_ANCHORS),
)
ACTIONS = ("complete", "miss", "cancel", "book", "confirm")
BOOKING_TIMES = (time(10, 0), time(2, 30), time(1, 30))
# Before each change: what to do to which visits (index into the schedule, action, time).
ACTION_LISTS = st.lists(
    st.tuples(st.integers(0, 60), st.sampled_from(ACTIONS), st.sampled_from(BOOKING_TIMES)),
    max_size=4,
)
STEPS = st.lists(st.tuples(INFUSION_DATES, ACTION_LISTS), min_size=1, max_size=5)


def event_counts(session: Session, patient: Patient) -> dict[int, int]:
    """How many history rows each of the patient's visits has (one query)."""
    rows = session.execute(
        select(VisitEvent.visit_id, func.count())
        .join(Visit, Visit.id == VisitEvent.visit_id)
        .where(Visit.patient_id == patient.id)
        .group_by(VisitEvent.visit_id)
    )
    return {visit_id: int(count) for visit_id, count in rows}


def count_events_of(session: Session, visit: Visit) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(VisitEvent).where(VisitEvent.visit_id == visit.id)
        )
        or 0
    )


@dataclass(frozen=True)
class Frozen:
    """What a completed, missed or cancelled visit looks like; it must never change."""

    status: VisitStatus
    target_date: date
    window_start: date
    window_end: date
    sequence: int
    protocol_version: int
    completed_on: date | None
    appointment_at: datetime | None
    updated_at: datetime
    events: int

    @classmethod
    def of(cls, session: Session, visit: Visit, events: int | None = None) -> Frozen:
        return cls(
            visit.status,
            visit.target_date,
            visit.window_start,
            visit.window_end,
            visit.sequence,
            visit.protocol_version,
            visit.completed_on,
            visit.appointment_at,
            visit.updated_at,
            count_events_of(session, visit) if events is None else events,
        )

    @classmethod
    def final_visits(cls, session: Session, patient: Patient) -> dict[str, Frozen]:
        counts = event_counts(session, patient)
        return {
            visit.visit_key: cls.of(session, visit, counts.get(visit.id, 0))
            for visit in visits_for_patient(session, patient_id=patient.id)
            if visit.status.is_final
        }


def _act(
    session: Session,
    place: Place,
    patient: Patient,
    visit: Visit,
    *,
    action: str,
    at: time,
    clock: FrozenClock,
) -> None:
    """Do `action` to `visit` through the public functions, checking that an action the
    visit's status does not allow is refused and changes nothing."""
    before = visit.status
    events_before = count_events_of(session, visit)
    actor = place.coordinator
    if action == "miss":
        # Time passes: the nightly job runs the day after the window closed.
        local_day_after = datetime.combine(
            visit.window_end + timedelta(days=1), time(1), tzinfo=ZoneInfo(patient.time_zone)
        )
        mark_missed_visits(session, clock=FrozenClock(local_day_after))
        assert status_of(visit) is (VisitStatus.MISSED if before.is_open else before)
        return
    allowed = (action, before) in TRANSITIONS
    try:
        if action == "complete":
            complete_visit(
                session, clock=clock, actor=actor, visit=visit, completed_on=visit.target_date
            )
        elif action == "cancel":
            cancel_visit(session, clock=clock, actor=actor, visit=visit, reason="moved away")
        elif action == "confirm":
            confirm_visit(session, clock=clock, actor=actor, visit=visit)
        else:
            book_appointment(
                session,
                clock=clock,
                actor=actor,
                visit=visit,
                patient=patient,
                day=visit.target_date,
                at=at,
                location="Harborview",
            )
    except VisitTransitionError as refusal:
        assert not allowed, f"{action} from {before} was refused: {refusal}"
        assert str(refusal)
    except AppointmentTimeError:
        assert allowed and action == "book"
        assert not wall_clock_exists(patient.time_zone, visit.target_date, at)
    else:
        assert allowed, f"{action} from {before} was accepted"
        assert status_of(visit) is TRANSITIONS[action, before]
        assert count_events_of(session, visit) == events_before + 1
        return
    assert status_of(visit) is before
    assert count_events_of(session, visit) == events_before


def _check_schedule(
    session: Session,
    patient: Patient,
    *,
    protocol: Protocol,
    frozen: dict[str, Frozen],
) -> None:
    """The schedule after a sync: one visit per protocol visit; the visits that were final
    before the sync exactly as they were; the others open, on the windows of the current
    infusion date, not overlapping; every date a real day in the patient's zone."""
    anchor = patient.infusion_date
    assert anchor is not None
    session.expire_all()  # read what the database holds
    visits = visits_for_patient(session, patient_id=patient.id)
    keys = [visit.visit_key for visit in visits]
    assert len(keys) == len(set(keys)), "a visit is duplicated"
    repeated = session.scalars(
        select(Visit.visit_key)
        .where(Visit.patient_id == patient.id)
        .group_by(Visit.visit_key)
        .having(func.count() > 1)
    ).all()
    assert repeated == []
    assert set(keys) == {visit.key for visit in protocol.visits}
    assert Frozen.final_visits(session, patient) == frozen

    zone = ZoneInfo(patient.time_zone)
    for visit in visits:
        for day in (visit.window_start, visit.target_date, visit.window_end):
            assert type(day) is date
            # A real calendar day in the patient's zone (noon exists on every day).
            noon = datetime.combine(day, time(12), tzinfo=zone)
            assert noon.astimezone(UTC).astimezone(zone).date() == day
        assert visit.window_start <= visit.target_date <= visit.window_end
        if visit.visit_key in frozen:
            continue
        assert status_of(visit).is_open
        protocol_visit = protocol.visit(visit.visit_key)
        assert protocol_visit is not None
        assert (visit.window_start, visit.target_date, visit.window_end) == (
            protocol_visit.window(anchor)
        )
        assert visit.protocol_version == protocol.version

    # The visits still to come never overlap: every day belongs to one visit at most.
    still_to_come = sorted(
        (visit.window_start, visit.window_end) for visit in visits if visit.status.is_open
    )
    for (_, closes), (opens, _) in itertools.pairwise(still_to_come):
        assert closes < opens


@PROPERTY
@given(
    therapy=st.sampled_from(THERAPIES),
    zone=st.sampled_from(ZONES),
    first=INFUSION_DATES,
    steps=STEPS,
)
@example(
    therapy="casgevy",
    zone="America/New_York",
    first=date(2026, 2, 6),  # day 30 on 2026-03-08, the spring-forward day
    steps=[(date(2026, 7, 24), [(1, "book", time(2, 30))])],  # day 100 on 2026-11-01
).via("daylight-saving days")
@example(
    therapy="lyfgenia",
    zone="America/Denver",
    first=date(2020, 1, 1),
    steps=[
        (date(2020, 3, 1), [(0, "complete", time(10)), (1, "miss", time(10))]),
        (date(2019, 10, 1), [(2, "cancel", time(10)), (0, "complete", time(10))]),
        (date(2021, 2, 28), [(3, "book", time(10)), (3, "confirm", time(10))]),
        (date(2020, 2, 29), [(1, "complete", time(10))]),
    ],
).via("every kind of final visit, then moves both ways")
def test_sync_schedule_under_any_sequence_of_infusion_date_changes(
    db: Database, therapy: str, zone: str, first: date, steps: list[Any]
) -> None:
    clock = FrozenClock(EARLY)
    protocol = current(therapy)
    with db.factory() as session:  # one session per example, never committed
        place = place_of(session)
        patient = make_patient(
            session, place, clock=clock, zone=zone, infusion=first, therapy=therapy
        )
        created = sync(session, place, patient, clock=clock)
        assert created.created == len(protocol.visits)
        _check_schedule(session, patient, protocol=protocol, frozen={})
        for new_date, actions in steps:
            schedule = visits_for_patient(session, patient_id=patient.id)
            for index, action, at in actions:
                visit = schedule[index % len(schedule)]
                _act(session, place, patient, visit, action=action, at=at, clock=clock)
            frozen = Frozen.final_visits(session, patient)
            patient.infusion_date = new_date
            change = sync(session, place, patient, clock=clock)
            assert (change.created, change.cancelled) == (0, 0)
            assert change.moved + change.kept == len(protocol.visits)
            _check_schedule(session, patient, protocol=protocol, frozen=frozen)
        session.rollback()


def test_syncing_twice_changes_nothing(session: Session, place: Place, clock: FrozenClock) -> None:
    patient = make_patient(session, place, clock=clock, infusion=date(2026, 10, 1))
    first = sync(session, place, patient, clock=clock)
    events = count_events(session)
    again = sync(session, place, patient, clock=clock)
    assert (again.created, again.moved, again.cancelled) == (0, 0, 0)
    assert again.kept == first.created
    assert count_events(session) == events


def test_moving_the_infusion_date_records_each_move(
    session: Session, place: Place, clock: FrozenClock
) -> None:
    # Infused 17 days before T0: every window is still open (day 30's closes 2026-12-17).
    patient = make_patient(session, place, clock=clock, infusion=date(2026, 11, 10))
    created = sync(session, place, patient, clock=clock)
    assert all(status_of(visit) is VisitStatus.DUE for visit in created.visits)
    day_30 = visits_by_key(session, patient)["day-30"]
    patient.infusion_date = date(2026, 11, 24)
    change = sync(session, place, patient, clock=clock)
    assert change.moved == len(current("casgevy").visits)
    (move,) = events_of(session, day_30)
    assert move.action == "move_window"
    assert move.actor_user_id == place.coordinator.user_id
    assert move.at == clock.now()
    assert move.reason == "infusion date or protocol changed"
    assert move.detail == {"from": "2026-12-10", "to": "2026-12-24"}
    assert move.from_status == move.to_status == "due"
    plan = session.scalar(select(FollowUpPlan).where(FollowUpPlan.patient_id == patient.id))
    assert plan is not None
    assert plan.anchor_date == date(2026, 11, 24)


# --- property test: appointment times across daylight-saving changes ---------------------

DAYS_2026_2027 = [date(2026, 1, 1) + timedelta(days=n) for n in range(730)]


@settings(max_examples=40, deadline=None, database=None)
@given(
    zone=st.sampled_from(ZONES),
    at=st.builds(time, hour=st.integers(0, 23), minute=st.sampled_from([0, 1, 15, 30, 45, 59])),
)
@example(zone="America/New_York", at=time(2, 30)).via("the spring-forward gap")
@example(zone="America/New_York", at=time(1, 30)).via("the fall-back hour")
@example(zone="America/Denver", at=time(2, 0)).via("the first minute of the gap")
@example(zone="America/Denver", at=time(1, 59)).via("the last minute of the doubled hour")
def test_appointment_instant_for_every_day_of_2026_and_2027(zone: str, at: time) -> None:
    tz = ZoneInfo(zone)
    refused = []
    for day in DAYS_2026_2027:
        offsets = wall_clock_offsets(zone, day, at)
        if not offsets:
            with pytest.raises(AppointmentTimeError, match="does not exist"):
                appointment_instant(day, at, zone)
            refused.append(day)
            continue
        instant = appointment_instant(day, at, zone)
        assert instant.utcoffset() == timedelta(0)
        # The first occurrence when the clocks go back (the summer offset).
        expected = datetime.combine(day, at, tzinfo=UTC) - timedelta(hours=offsets[0])
        assert instant == expected, (day, at)
        local = instant.astimezone(tz)
        assert (local.date(), local.time()) == (day, at)
    if zone in OBSERVES_DST and time(2) <= at < time(3):
        assert refused == [date(2026, 3, 8), date(2027, 3, 14)]
    else:
        assert refused == []


@pytest.mark.parametrize(
    ("zone", "day", "at", "utc"),
    [
        # Fall back: 1:30 happens twice; the first (summer time) is meant.
        ("America/New_York", date(2026, 11, 1), time(1, 30), datetime(2026, 11, 1, 5, 30)),
        ("America/Denver", date(2027, 11, 7), time(1, 30), datetime(2027, 11, 7, 7, 30)),
        ("America/New_York", date(2026, 11, 1), time(2, 0), datetime(2026, 11, 1, 7, 0)),
        # Spring forward: 3:00 is the first time that exists.
        ("America/New_York", date(2026, 3, 8), time(3, 0), datetime(2026, 3, 8, 7, 0)),
        ("America/New_York", date(2026, 3, 8), time(1, 59), datetime(2026, 3, 8, 6, 59)),
        # No daylight-saving time there.
        ("America/Phoenix", date(2026, 3, 8), time(2, 30), datetime(2026, 3, 8, 9, 30)),
        ("Pacific/Honolulu", date(2027, 11, 7), time(1, 30), datetime(2027, 11, 7, 11, 30)),
        ("America/Puerto_Rico", date(2027, 3, 14), time(2, 30), datetime(2027, 3, 14, 6, 30)),
    ],
)
def test_appointment_instants_on_the_days_the_clocks_change(
    zone: str, day: date, at: time, utc: datetime
) -> None:
    assert appointment_instant(day, at, zone) == utc.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "day"),
    [("America/New_York", date(2026, 3, 8)), ("America/Denver", date(2027, 3, 14))],
)
@pytest.mark.parametrize("at", [time(2, 0), time(2, 30), time(2, 59)])
def test_a_time_in_the_spring_forward_gap_is_refused(zone: str, day: date, at: time) -> None:
    with pytest.raises(AppointmentTimeError, match="does not exist on that day"):
        appointment_instant(day, at, zone)


def test_an_appointment_keeps_its_wall_clock_time_across_the_change(
    session: Session, place: Place
) -> None:
    clock = FrozenClock(datetime(2027, 1, 10, 15, 0, tzinfo=UTC))
    patient = make_patient(session, place, clock=clock, infusion=date(2027, 1, 1))
    sync(session, place, patient, clock=clock)
    visits = visits_by_key(session, patient)
    before, after = visits["day-30"], visits["day-100"]
    for visit, day in ((before, date(2027, 3, 13)), (after, date(2027, 3, 15))):
        book_appointment(
            session,
            clock=clock,
            actor=place.coordinator,
            visit=visit,
            patient=patient,
            day=day,
            at=time(9, 0),
            location="Harborview",
            # The days around the clock change, wherever the windows are.
            reason="the days around the clock change",
            outside_window_confirmed=True,
        )
    assert before.appointment_at == datetime(2027, 3, 13, 14, 0, tzinfo=UTC)
    assert after.appointment_at == datetime(2027, 3, 15, 13, 0, tzinfo=UTC)
    session.commit()
    session.expire_all()
    for visit in (before, after):
        assert visit.appointment_zone == "America/New_York"
        assert visit.appointment_at is not None
        assert visit.appointment_at.astimezone(ZoneInfo("America/New_York")).time() == time(9)

    with pytest.raises(AppointmentTimeError, match="clocks change"):
        book_appointment(
            session,
            clock=clock,
            actor=place.coordinator,
            visit=before,
            patient=patient,
            day=date(2027, 3, 14),
            at=time(2, 15),
            location="Harborview",
        )
    assert status_of(before) is VisitStatus.SCHEDULED
    assert before.appointment_at == datetime(2027, 3, 13, 14, 0, tzinfo=UTC)


# --- the nightly missed-visit job --------------------------------------------------------

# (zone, the instant the job runs, that instant's date in the zone): Honolulu is UTC-10 and
# Kiritimati UTC+14. The first two run when the UTC date is a day ahead of / behind the local
# date; the others sit one second either side of local midnight.
EDGES = [
    ("Pacific/Honolulu", datetime(2027, 5, 11, 5, 0, tzinfo=UTC), date(2027, 5, 10)),
    ("Pacific/Kiritimati", datetime(2027, 5, 10, 12, 0, tzinfo=UTC), date(2027, 5, 11)),
    ("Pacific/Honolulu", datetime(2027, 3, 14, 9, 59, 59, tzinfo=UTC), date(2027, 3, 13)),
    ("Pacific/Honolulu", datetime(2027, 3, 14, 10, 0, 0, tzinfo=UTC), date(2027, 3, 14)),
    ("Pacific/Kiritimati", datetime(2026, 12, 31, 9, 59, 59, tzinfo=UTC), date(2026, 12, 31)),
    ("Pacific/Kiritimati", datetime(2026, 12, 31, 10, 0, 0, tzinfo=UTC), date(2027, 1, 1)),
]


def _day_30_ending_on(
    session: Session, place: Place, *, zone: str, window_end: date, clock: FrozenClock
) -> tuple[Patient, Visit]:
    """A patient whose day-30 visit's window closes on `window_end` (all later ones after)."""
    protocol_visit = current("casgevy").visits[0]
    infusion = window_end - timedelta(
        days=protocol_visit.offset_days + protocol_visit.window_after_days
    )
    patient = make_patient(session, place, clock=clock, zone=zone, infusion=infusion)
    sync(session, place, patient, clock=clock)
    visit = visits_by_key(session, patient)[protocol_visit.key]
    assert visit.window_end == window_end
    return patient, visit


@pytest.mark.parametrize(("zone", "instant", "local_today"), EDGES)
def test_the_missed_visit_job_at_the_edges_of_a_far_zone_day(
    session: Session, place: Place, zone: str, instant: datetime, local_today: date
) -> None:
    assert instant.astimezone(ZoneInfo(zone)).date() == local_today
    # The job counts every visit it misses: the test world must start without visits.
    assert session.scalar(select(func.count()).select_from(Visit)) == 0
    setup = FrozenClock(instant - timedelta(days=60))
    yesterday, tomorrow = local_today - timedelta(days=1), local_today + timedelta(days=1)
    _, closed_yesterday = _day_30_ending_on(
        session, place, zone=zone, window_end=yesterday, clock=setup
    )
    _, closes_today = _day_30_ending_on(
        session, place, zone=zone, window_end=local_today, clock=setup
    )
    _, closes_tomorrow = _day_30_ending_on(
        session, place, zone=zone, window_end=tomorrow, clock=setup
    )
    # Booked and confirmed, but it did not happen: missed too.
    patient, confirmed = _day_30_ending_on(
        session, place, zone=zone, window_end=yesterday, clock=setup
    )
    book_appointment(
        session,
        clock=setup,
        actor=place.coordinator,
        visit=confirmed,
        patient=patient,
        day=confirmed.target_date,
        at=time(9),
        location="Clinic",
    )
    confirm_visit(session, clock=setup, actor=place.coordinator, visit=confirmed)
    # Completed and cancelled visits whose windows closed long ago are never touched.
    _, completed = _day_30_ending_on(
        session, place, zone=zone, window_end=yesterday - timedelta(days=40), clock=setup
    )
    complete_visit(
        session,
        clock=setup,
        actor=place.coordinator,
        visit=completed,
        completed_on=completed.target_date,
    )
    _, cancelled = _day_30_ending_on(session, place, zone=zone, window_end=yesterday, clock=setup)
    cancel_visit(session, clock=setup, actor=place.coordinator, visit=cancelled, reason="moved")
    # The UTC date is the wrong "today": a visit closing on it is judged by the local date.
    _, closes_on_utc_date = _day_30_ending_on(
        session, place, zone=zone, window_end=instant.date(), clock=setup
    )
    session.commit()
    untouched = {visit.id: (visit.status, visit.updated_at) for visit in (completed, cancelled)}

    clock = FrozenClock(instant)
    events = count_events(session)
    missed = mark_missed_visits(session, clock=clock)
    session.commit()

    expect_missed = {closed_yesterday.id, confirmed.id}
    if instant.date() < local_today:
        expect_missed.add(closes_on_utc_date.id)
    assert missed == len(expect_missed)
    assert count_events(session) == events + missed
    for visit in (closed_yesterday, closes_today, closes_tomorrow, confirmed, closes_on_utc_date):
        session.refresh(visit)
        if visit.id in expect_missed:
            assert status_of(visit) is VisitStatus.MISSED, visit.window_end
            event = events_of(session, visit)[-1]
            assert event.action == "miss"
            assert event.actor_label == "system:missed-visits"
            assert event.actor_user_id is None
            assert event.at == instant
            assert event.to_status == "missed"
            assert event.reason
        else:
            assert visit.status.is_open, visit.window_end
    assert events_of(session, confirmed)[-1].from_status == "confirmed"
    for visit in (completed, cancelled):
        session.refresh(visit)
        assert (visit.status, visit.updated_at) == untouched[visit.id]
        assert events_of(session, visit)[-1].action != "miss"

    # Idempotent: a second run at once, or later the same local day, changes nothing.
    events = count_events(session)
    assert mark_missed_visits(session, clock=clock) == 0
    end_of_day = datetime.combine(local_today, time(23, 59, 59), tzinfo=ZoneInfo(zone))
    assert mark_missed_visits(session, clock=FrozenClock(end_of_day)) == 0
    assert count_events(session) == events
    # The next local day, the visit that closed "today" is missed, and only it.
    next_day = FrozenClock(end_of_day + timedelta(seconds=1))
    assert mark_missed_visits(session, clock=next_day) == (
        2 if instant.date() == local_today else 1  # then closes_on_utc_date closes today too
    )
    session.refresh(closes_today)
    assert status_of(closes_today) is VisitStatus.MISSED
    assert closes_tomorrow.status.is_open


def test_the_scheduled_job_marks_missed_visits_once(db: Database, session: Session) -> None:
    """The hourly job as the scheduler runs it (its own transaction, under the job lock)."""
    place = place_of(session)
    honolulu = ZoneInfo("Pacific/Honolulu")
    instant = datetime(2027, 5, 11, 5, 5, tzinfo=UTC)  # 19:05 on May 10 in Honolulu
    setup = FrozenClock(instant - timedelta(days=60))
    _, overdue = _day_30_ending_on(
        session, place, zone="Pacific/Honolulu", window_end=date(2027, 5, 9), clock=setup
    )
    _, open_today = _day_30_ending_on(
        session, place, zone="Pacific/Honolulu", window_end=date(2027, 5, 10), clock=setup
    )
    session.commit()
    assert instant.astimezone(honolulu).date() == date(2027, 5, 10)

    clock = FrozenClock(instant)
    scheduler = BackgroundScheduler(timezone=UTC)
    add_jobs(
        scheduler,
        factory=db.factory,
        gateway=ConsoleGateway(),
        clock=clock,
        dispatch_interval_seconds=60,
    )
    job = scheduler.get_job("missed-visits")
    assert job is not None
    assert "minute='5'" in str(job.trigger)
    job.func()
    session.rollback()  # a fresh snapshot (SQLite keeps one per transaction)
    events = count_events(session)
    job.func()
    session.rollback()
    assert count_events(session) == events

    assert reload(session, overdue).status is VisitStatus.MISSED
    assert reload(session, open_today).status is VisitStatus.DUE
    (miss,) = [event for event in events_of(session, overdue) if event.action == "miss"]
    assert miss.actor_label == "system:missed-visits"
    lock = session.get(JobLock, "missed-visits")
    assert lock is not None
    assert lock.last_run_at == instant
    assert lock.locked_until <= instant


# --- a back-dated enrolment: windows that closed before follow-up began here -------------

BEFORE_FOLLOW_UP = "the window had closed before follow-up began here"
# 19:00 on 2027-05-10 in Honolulu (UTC-10), when the UTC date is already 2027-05-11.
HONOLULU_EVENING = datetime(2027, 5, 11, 5, 0, tzinfo=UTC)


def _missed_before_follow_up(session: Session, visit: Visit, *, at: datetime) -> VisitEvent:
    """Check that `visit` was created missed and already followed up at `at`, with its one
    history row; return that row."""
    assert status_of(visit) is VisitStatus.MISSED, visit.visit_key
    assert visit.missed_acknowledged_at == at, visit.visit_key
    assert visit.completed_on is None and visit.appointment_at is None
    (event,) = events_of(session, visit)
    assert (event.action, event.from_status, event.to_status, event.reason, event.at) == (
        "miss",
        "due",
        "missed",
        BEFORE_FOLLOW_UP,
        at,
    ), visit.visit_key
    return event


def _overdue_count(session: Session, *, clock: FrozenClock) -> int:
    """The number of rows in the Maryland coordinator's overdue bucket."""
    counts = bucket_counts(
        session,
        clock=clock,
        user=user_by_login(session, COORDINATOR_MD),
        criteria=WorklistCriteria(bucket=Bucket.OVERDUE),
        buckets=(Bucket.OVERDUE,),
    )
    return counts[Bucket.OVERDUE]


def test_a_back_dated_enrolment_records_the_closed_windows_missed_and_followed_up(
    session: Session, place: Place
) -> None:
    zone = "Pacific/Honolulu"
    clock = FrozenClock(HONOLULU_EVENING)
    today = date(2027, 5, 10)
    assert HONOLULU_EVENING.astimezone(ZoneInfo(zone)).date() == today
    assert HONOLULU_EVENING.date() == today + timedelta(days=1)
    # The world starts without visits: the nightly job's counts below are this patient's.
    assert session.scalar(select(func.count()).select_from(Visit)) == 0
    protocol = current("casgevy")
    # Infused a little over three years ago, on the day that makes year 3's window close
    # tomorrow (local), which is today's UTC date.
    infusion = date(2024, 3, 12)
    assert today.year - infusion.year == 3
    patient = make_patient(session, place, clock=clock, zone=zone, infusion=infusion)
    change = sync(session, place, patient, clock=clock)
    session.commit()
    session.expire_all()  # what the database holds

    assert change.created == len(protocol.visits)
    visits = visits_for_patient(session, patient_id=patient.id)
    by_key = {visit.visit_key: visit for visit in visits}
    closed = ["day-30", "day-100", "day-180", "month-12", "month-18", "month-24"]
    assert [visit.visit_key for visit in visits if visit.window_end < today] == closed
    for key in closed:
        event = _missed_before_follow_up(session, by_key[key], at=clock.now())
        assert event.actor_user_id == place.coordinator.user_id
    year_3 = by_key["year-3"]
    assert year_3.window_end == today + timedelta(days=1)
    for visit in visits:
        if visit.visit_key not in closed:
            assert status_of(visit) is VisitStatus.DUE, visit.visit_key
            assert visit.missed_acknowledged_at is None
            assert events_of(session, visit) == []
    # None of the closed visits comes next: the first visit still to come does; and none
    # waits in the coordinator's overdue bucket.
    assert next_visit(visits) is year_3
    assert _overdue_count(session, clock=clock) == 0

    # The nightly job has nothing to do for them, now or at the end of the local day.
    final = Frozen.final_visits(session, patient)
    assert set(final) == set(closed)
    events = count_events(session)
    assert mark_missed_visits(session, clock=clock) == 0
    end_of_day = datetime.combine(today, time(23, 59, 59), tzinfo=ZoneInfo(zone))
    assert mark_missed_visits(session, clock=FrozenClock(end_of_day)) == 0
    assert count_events(session) == events
    # Syncing again (any later change of the record) keeps them as they are, too.
    again = sync(session, place, patient, clock=clock)
    assert (again.created, again.moved, again.cancelled, again.reopened) == (0, 0, 0, 0)
    session.commit()
    session.expire_all()
    assert Frozen.final_visits(session, patient) == final

    # A result that arrives later still completes one of them.
    month_12 = by_key["month-12"]
    results = clock.now() + timedelta(days=1)
    record_outcomes(
        session,
        clock=FrozenClock(results),
        actor=place.coordinator,
        visit=month_12,
        assessments=(Assessment.HEMOGLOBIN,),
        completed_on=month_12.target_date,
        values={"hemoglobin": Decimal("11.2")},
    )
    session.commit()
    session.expire_all()
    assert status_of(month_12) is VisitStatus.COMPLETED
    assert month_12.completed_on == month_12.target_date
    assert [
        (event.action, event.from_status, event.to_status) for event in events_of(session, month_12)
    ] == [("miss", "due", "missed"), ("complete", "missed", "completed")]

    # Year 3, whose window was still open at enrolment, is missed the ordinary way: by the
    # nightly job once its window has closed (local time), waiting for a follow-up.
    next_local_day = datetime.combine(today + timedelta(days=1), time(0), tzinfo=ZoneInfo(zone))
    assert mark_missed_visits(session, clock=FrozenClock(next_local_day)) == 0
    day_after = next_local_day + timedelta(days=1)
    assert mark_missed_visits(session, clock=FrozenClock(day_after)) == 1
    session.commit()
    session.expire_all()
    assert (status_of(year_3), year_3.missed_acknowledged_at) == (VisitStatus.MISSED, None)
    (miss,) = events_of(session, year_3)
    assert (miss.actor_label, miss.at) == ("system:missed-visits", day_after)
    assert miss.reason != BEFORE_FOLLOW_UP
    assert next_visit(visits_for_patient(session, patient_id=patient.id)) is by_key["year-4"]
    assert _overdue_count(session, clock=FrozenClock(day_after)) == 1
    for key in closed:
        if key != "month-12":
            assert Frozen.of(session, by_key[key]) == final[key], key


@pytest.mark.parametrize(("zone", "instant", "local_today"), EDGES)
def test_a_window_closed_before_enrolment_is_judged_by_the_local_date(
    session: Session, place: Place, zone: str, instant: datetime, local_today: date
) -> None:
    assert instant.astimezone(ZoneInfo(zone)).date() == local_today
    assert session.scalar(select(func.count()).select_from(Visit)) == 0
    clock = FrozenClock(instant)
    # Patients enrolled at `instant` whose day-30 window closed on each of these days; the
    # UTC date is the wrong "today" (a day ahead in Honolulu, behind in Kiritimati).
    ends = {
        "yesterday": local_today - timedelta(days=1),
        "today": local_today,
        "tomorrow": local_today + timedelta(days=1),
        "the UTC date": instant.date(),
    }
    for name, window_end in ends.items():
        patient, day_30 = _day_30_ending_on(
            session, place, zone=zone, window_end=window_end, clock=clock
        )
        visits = visits_for_patient(session, patient_id=patient.id)
        if window_end < local_today:
            _missed_before_follow_up(session, day_30, at=instant)
            assert next_visit(visits) is visits[1], name
        else:
            assert status_of(day_30) is VisitStatus.DUE, name
            assert day_30.missed_acknowledged_at is None
            assert events_of(session, day_30) == []
            assert next_visit(visits) is day_30, name
        # Every later visit is still to come.
        assert all(visit.status is VisitStatus.DUE for visit in visits[1:]), name
    # Nothing was left open behind a closed window: the nightly job has nothing to do.
    assert mark_missed_visits(session, clock=clock) == 0


@PROPERTY
@given(
    therapy=st.sampled_from(THERAPIES),
    zone=st.sampled_from(ZONES),
    infusion=INFUSION_DATES,
    enrolled=st.datetimes(
        min_value=datetime(2014, 6, 1), max_value=datetime(2047, 12, 31), timezones=st.just(UTC)
    ),
    moved_to=INFUSION_DATES,
)
@example(
    therapy="casgevy",
    zone="Pacific/Honolulu",
    infusion=date(2024, 3, 12),  # year 3 closes on 2027-05-11, the UTC date of the instant
    enrolled=HONOLULU_EVENING,
    moved_to=date(2024, 3, 10),  # then it closed yesterday: the nightly job's turn
).via("local and UTC dates differ")
def test_a_schedule_made_at_any_moment_starts_the_closed_windows_missed(
    db: Database, therapy: str, zone: str, infusion: date, enrolled: datetime, moved_to: date
) -> None:
    clock = FrozenClock(enrolled)
    protocol = current(therapy)
    today = enrolled.astimezone(ZoneInfo(zone)).date()
    with db.factory() as session:  # one session per example, never committed
        place = place_of(session)
        patient = make_patient(
            session, place, clock=clock, zone=zone, infusion=infusion, therapy=therapy
        )
        change = sync(session, place, patient, clock=clock)
        assert change.created == len(protocol.visits)
        session.flush()
        session.expire_all()
        visits = visits_for_patient(session, patient_id=patient.id)
        for visit in visits:
            protocol_visit = protocol.visit(visit.visit_key)
            assert protocol_visit is not None
            closes = protocol_visit.window(infusion)[2]
            if closes < today:
                _missed_before_follow_up(session, visit, at=enrolled)
            else:
                assert status_of(visit) is VisitStatus.DUE
                assert visit.missed_acknowledged_at is None
                assert events_of(session, visit) == []
        still_to_come = [visit for visit in visits if visit.window_end >= today]
        assert next_visit(visits) is (still_to_come[0] if still_to_come else None)

        # The nightly job leaves them alone; so does moving the infusion date, which moves
        # only the visits still open.
        assert mark_missed_visits(session, clock=clock) == 0
        frozen = Frozen.final_visits(session, patient)
        assert len(frozen) == len(visits) - len(still_to_come)
        patient.infusion_date = moved_to
        moved = sync(session, place, patient, clock=clock)
        assert (moved.created, moved.cancelled) == (0, 0)
        _check_schedule(session, patient, protocol=protocol, frozen=frozen)
        # A visit moved behind today stays open until the nightly job misses it, without
        # the follow-up being taken as done.
        behind = {
            visit.id
            for visit in visits_for_patient(session, patient_id=patient.id)
            if visit.status.is_open and visit.window_end < today
        }
        assert mark_missed_visits(session, clock=clock) == len(behind)
        session.expire_all()
        for visit in visits_for_patient(session, patient_id=patient.id):
            if visit.id in behind:
                assert (visit.status, visit.missed_acknowledged_at) == (VisitStatus.MISSED, None)
                assert events_of(session, visit)[-1].reason != BEFORE_FOLLOW_UP
        after = Frozen.final_visits(session, patient)
        assert {key: after[key] for key in frozen} == frozen
        session.rollback()


# --- the visit's life: transitions and history -------------------------------------------

ACTION_NAMES = ("book", "confirm", "complete", "miss", "cancel")
BOOKED = (VisitStatus.SCHEDULED, VisitStatus.RESCHEDULED, VisitStatus.CONFIRMED)


def _put_in(session: Session, visit: Visit, status: VisitStatus) -> None:
    """Test set-up: give the visit a status directly (with an appointment when booked)."""
    visit.status = status
    if status in BOOKED:
        visit.appointment_at = datetime.combine(visit.target_date, time(15), tzinfo=UTC)
        visit.appointment_zone = "America/New_York"
    if status is VisitStatus.COMPLETED:
        visit.completed_on = visit.target_date
    session.flush()


def _do(
    session: Session,
    place: Place,
    patient: Patient,
    visit: Visit,
    action: str,
    *,
    clock: FrozenClock,
) -> VisitEvent:
    actor = place.coordinator
    if action == "book":
        return book_appointment(
            session,
            clock=clock,
            actor=actor,
            visit=visit,
            patient=patient,
            day=visit.target_date,
            at=time(10, 30),
            location="Harborview",
        )
    if action == "confirm":
        return confirm_visit(session, clock=clock, actor=actor, visit=visit)
    if action == "complete":
        return complete_visit(
            session, clock=clock, actor=actor, visit=visit, completed_on=visit.target_date
        )
    if action == "cancel":
        return cancel_visit(session, clock=clock, actor=actor, visit=visit, reason="not needed")
    assert action == "miss"
    # Only the nightly job misses visits, and it only selects open ones (tested above); the
    # table itself is checked through the function every transition goes through.
    return _transition(
        session, clock=clock, actor=Actor.system("missed-visits"), visit=visit, action="miss"
    )


@pytest.fixture
def lyfgenia_patient(session: Session, place: Place, clock: FrozenClock) -> Patient:
    """A patient with 31 visits, all in the future (infused a week before T0)."""
    patient = make_patient(
        session, place, clock=clock, therapy="lyfgenia", infusion=date(2026, 11, 20)
    )
    sync(session, place, patient, clock=clock)
    return patient


def test_the_transition_table_covers_the_visit_life() -> None:
    open_statuses = set(VisitStatus) - {
        VisitStatus.COMPLETED,
        VisitStatus.MISSED,
        VisitStatus.CANCELLED,
    }
    # Every open visit can be completed, missed or cancelled; a cancelled one is final.
    for status in open_statuses:
        assert TRANSITIONS["complete", status] is VisitStatus.COMPLETED
        assert TRANSITIONS["miss", status] is VisitStatus.MISSED
        assert TRANSITIONS["cancel", status] is VisitStatus.CANCELLED
    assert not [pair for pair in TRANSITIONS if pair[1] is VisitStatus.CANCELLED]
    assert {action for action, _ in TRANSITIONS} == set(ACTION_NAMES)


def test_every_transition_not_in_the_table_is_refused_with_a_message(
    session: Session, place: Place, clock: FrozenClock, lyfgenia_patient: Patient
) -> None:
    pairs = [
        (action, status)
        for action in ACTION_NAMES
        for status in VisitStatus
        if (action, status) not in TRANSITIONS
    ]
    assert len(pairs) == len(ACTION_NAMES) * len(VisitStatus) - len(TRANSITIONS) == 16
    visits = visits_for_patient(session, patient_id=lyfgenia_patient.id)
    for (action, status), visit in zip(pairs, visits, strict=False):
        _put_in(session, visit, status)
        events = count_events_of(session, visit)
        with pytest.raises(VisitTransitionError) as refused:
            _do(session, place, lyfgenia_patient, visit, action, clock=clock)
        message = str(refused.value)
        assert len(message) > 20 and message.endswith("."), (action, status, message)
        assert status_of(visit) is status, (action, status)
        assert count_events_of(session, visit) == events, (action, status)
        if (action, status) == ("confirm", VisitStatus.DUE):
            assert message == "Only a booked appointment can be confirmed; this visit has none."


def test_every_transition_in_the_table_is_recorded(
    session: Session, place: Place, clock: FrozenClock, lyfgenia_patient: Patient
) -> None:
    visits = visits_for_patient(session, patient_id=lyfgenia_patient.id)
    assert len(visits) >= len(TRANSITIONS)
    for ((action, status), target), visit in zip(TRANSITIONS.items(), visits, strict=False):
        _put_in(session, visit, status)
        event = _do(session, place, lyfgenia_patient, visit, action, clock=clock)
        assert status_of(visit) is target, (action, status)
        assert (event.action, event.from_status, event.to_status) == (
            action,
            status.value,
            target.value,
        )
        assert event.visit_id == visit.id
        assert event.at == clock.now()
        assert events_of(session, visit) == [event]


def test_the_history_records_who_when_and_why(
    session: Session, place: Place, clock: FrozenClock
) -> None:
    patient = make_patient(session, place, clock=clock, infusion=date(2026, 11, 20))
    sync(session, place, patient, clock=clock)
    visit = visits_by_key(session, patient)["day-30"]  # due 2026-12-20
    coordinator = place.coordinator
    maya = user_by_login(session, PATIENT_MD)
    patient_actor = Actor(user_id=maya.id, label=maya.login or "", role="patient")

    booked_at = clock.now()
    book_appointment(
        session,
        clock=clock,
        actor=coordinator,
        visit=visit,
        patient=patient,
        day=date(2026, 12, 18),
        at=time(9, 30),
        location="  Harborview Sickle Cell Center  ",
        reason="first opening",
    )
    assert status_of(visit) is VisitStatus.SCHEDULED
    assert visit.location == "Harborview Sickle Cell Center"
    first = visit.appointment_at
    assert first == datetime(2026, 12, 18, 14, 30, tzinfo=UTC)

    clock.advance(timedelta(hours=2))
    confirm_visit(session, clock=clock, actor=patient_actor, visit=visit)
    assert status_of(visit) is VisitStatus.CONFIRMED
    assert visit.confirmed_at == clock.now()

    # Moving a booked (here: confirmed) appointment makes the visit "rescheduled" and asks
    # for a new confirmation.
    clock.advance(timedelta(days=1))
    book_appointment(
        session,
        clock=clock,
        actor=coordinator,
        visit=visit,
        patient=patient,
        day=date(2026, 12, 21),
        at=time(14, 0),
        location="Harborview Sickle Cell Center",
        reason="patient asked for an afternoon",
    )
    assert status_of(visit) is VisitStatus.RESCHEDULED
    assert visit.confirmed_at is None
    second = visit.appointment_at
    assert second == datetime(2026, 12, 21, 19, 0, tzinfo=UTC)

    clock.advance(timedelta(hours=1))
    book_appointment(
        session,
        clock=clock,
        actor=coordinator,
        visit=visit,
        patient=patient,
        day=date(2026, 12, 22),
        at=time(14, 0),
        location="Harborview Sickle Cell Center",
    )
    assert status_of(visit) is VisitStatus.RESCHEDULED

    clock.advance(timedelta(hours=1))
    with pytest.raises(VisitTransitionError, match="Say why"):
        cancel_visit(session, clock=clock, actor=coordinator, visit=visit, reason="   ")
    assert status_of(visit) is VisitStatus.RESCHEDULED
    cancel_visit(
        session, clock=clock, actor=coordinator, visit=visit, reason=" moved to another state "
    )
    session.commit()

    history = events_of(session, visit)
    assert [
        (event.action, event.from_status, event.to_status, event.actor_label) for event in history
    ] == [
        ("book", "due", "scheduled", coordinator.label),
        ("confirm", "scheduled", "confirmed", "maya"),
        ("book", "confirmed", "rescheduled", coordinator.label),
        ("book", "rescheduled", "rescheduled", coordinator.label),
        ("cancel", "rescheduled", "cancelled", coordinator.label),
    ]
    assert [event.actor_user_id for event in history] == [
        coordinator.user_id,
        maya.id,
        coordinator.user_id,
        coordinator.user_id,
        coordinator.user_id,
    ]
    assert [event.at for event in history] == [
        booked_at,
        booked_at + timedelta(hours=2),
        booked_at + timedelta(days=1, hours=2),
        booked_at + timedelta(days=1, hours=3),
        booked_at + timedelta(days=1, hours=4),
    ]
    assert [event.reason for event in history] == [
        "first opening",
        None,
        "patient asked for an afternoon",
        None,
        "moved to another state",
    ]
    assert history[0].detail == {"from": None, "to": first.isoformat()}
    assert history[2].detail == {
        "from": first.isoformat(),
        "to": second.isoformat(),
    }


def test_cancelling_needs_a_reason(session: Session, place: Place, clock: FrozenClock) -> None:
    patient = make_patient(session, place, clock=clock, infusion=date(2026, 11, 20))
    sync(session, place, patient, clock=clock)
    visit = visits_by_key(session, patient)["day-30"]
    for reason in ("", "   ", "\n"):
        with pytest.raises(VisitTransitionError, match="Say why the visit is cancelled"):
            cancel_visit(session, clock=clock, actor=place.coordinator, visit=visit, reason=reason)
    assert status_of(visit) is VisitStatus.DUE
    assert events_of(session, visit) == []


def test_appointments_must_be_in_the_future(
    session: Session, place: Place, clock: FrozenClock
) -> None:
    patient = make_patient(session, place, clock=clock, infusion=date(2026, 11, 20))
    sync(session, place, patient, clock=clock)
    visit = visits_by_key(session, patient)["day-30"]
    today_local = clock.now().astimezone(ZoneInfo(patient.time_zone)).date()
    with pytest.raises(AppointmentTimeError, match="future"):
        book_appointment(
            session,
            clock=clock,
            actor=place.coordinator,
            visit=visit,
            patient=patient,
            day=today_local,
            at=time(9, 59),  # 14:59 UTC, a minute before T0
            location="Harborview",
        )
    assert status_of(visit) is VisitStatus.DUE
    assert visit.appointment_at is None


def test_only_a_missed_visit_can_be_acknowledged(
    session: Session, place: Place, clock: FrozenClock
) -> None:
    # Enrolled while every window is still open (day 30's closes 2026-12-17) ...
    patient = make_patient(session, place, clock=clock, infusion=date(2026, 11, 10))
    sync(session, place, patient, clock=clock)
    day_30, day_100 = (visits_by_key(session, patient)[key] for key in ("day-30", "day-100"))
    assert status_of(day_30) is VisitStatus.DUE
    # ... then the nightly job, two days after day 30's window closed, misses it; it waits
    # for the coordinator's follow-up.
    clock.advance(timedelta(days=22))
    assert mark_missed_visits(session, clock=clock) == 1
    assert status_of(day_30) is VisitStatus.MISSED
    assert day_30.missed_acknowledged_at is None
    assert status_of(day_100) is VisitStatus.DUE
    with pytest.raises(VisitTransitionError, match="Only a missed visit"):
        acknowledge_missed(session, clock=clock, actor=place.coordinator, visit=day_100)
    acknowledge_missed(session, clock=clock, actor=place.coordinator, visit=day_30)
    assert day_30.missed_acknowledged_at == clock.now()
    assert status_of(day_30) is VisitStatus.MISSED
    last = events_of(session, day_30)[-1]
    assert (last.action, last.from_status, last.to_status) == ("acknowledge", "missed", "missed")
    assert last.actor_user_id == place.coordinator.user_id
    # A missed visit that did happen can still be recorded.
    complete_visit(
        session, clock=clock, actor=place.coordinator, visit=day_30, completed_on=date(2026, 12, 12)
    )
    assert status_of(day_30) is VisitStatus.COMPLETED


# --- protocol versions -------------------------------------------------------------------

MONTH_54 = {
    "key": "month-54",
    "label": {"en": "Month 54 blood count", "es": "Conteo sanguíneo de los 54 meses"},
    "offset_days": 1642,
    "window_before_days": 30,
    "window_after_days": 30,
    "assessments": ["cbc"],
}


def _write_protocols(directory: Path, *, with_v2: bool) -> None:
    """Casgevy v1 (and Lyfgenia) as shipped; v2 drops month-18, adds month-54 and narrows
    the year-3 window to +-30 days."""
    for name in ("casgevy.yaml", "lyfgenia.yaml"):
        (directory / name).write_text(
            (PROTOCOL_DIR / name).read_text(encoding="utf-8"), encoding="utf-8"
        )
    if not with_v2:
        return
    data = yaml.safe_load((PROTOCOL_DIR / "casgevy.yaml").read_text(encoding="utf-8"))
    assert data["version"] == 1
    data["version"] = 2
    visits = [visit for visit in data["visits"] if visit["key"] != "month-18"]
    for visit in visits:
        if visit["key"] == "year-3":
            visit["window_before_days"] = visit["window_after_days"] = 30
    at = next(index for index, visit in enumerate(visits) if visit["key"] == "year-5")
    visits.insert(at, MONTH_54)
    data["visits"] = visits
    (directory / "casgevy-v2.yaml").write_text(
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


def _plan(session: Session, patient: Patient) -> FollowUpPlan:
    plan = session.scalar(select(FollowUpPlan).where(FollowUpPlan.patient_id == patient.id))
    assert plan is not None
    return plan


def _matches(session: Session, patient: Patient, protocol: Protocol) -> None:
    """The patient's open visits are exactly the protocol's, with its windows."""
    anchor = patient.infusion_date
    assert anchor is not None
    visits = visits_by_key(session, patient)
    open_keys = {key for key, visit in visits.items() if visit.status.is_open}
    assert open_keys <= {visit.key for visit in protocol.visits}
    for key in open_keys:
        protocol_visit = protocol.visit(key)
        assert protocol_visit is not None
        visit = visits[key]
        assert (visit.window_start, visit.target_date, visit.window_end) == (
            protocol_visit.window(anchor)
        )
        assert visit.protocol_version == protocol.version


def test_a_new_protocol_version_applies_to_new_patients_and_a_migration_moves_the_others(
    session: Session, place: Place, clock: FrozenClock, tmp_path: Path
) -> None:
    _write_protocols(tmp_path, with_v2=False)
    v1_only = load_protocols(tmp_path)
    waiting = make_patient(session, place, clock=clock, infusion=date(2026, 1, 10))
    sync(session, place, waiting, clock=clock, library=v1_only)
    # Infused 2024-06-01: the windows of day 30 ... month 24 had closed before enrolment (so
    # they start missed); the results of three of them arrive; year 4 will not happen.
    veteran = make_patient(session, place, clock=clock, infusion=date(2024, 6, 1))
    sync(session, place, veteran, clock=clock, library=v1_only)
    for key in ("day-30", "month-12", "month-18"):
        visit = visits_by_key(session, veteran)[key]
        complete_visit(
            session,
            clock=clock,
            actor=place.coordinator,
            visit=visit,
            completed_on=visit.target_date,
        )
    cancel_visit(
        session,
        clock=clock,
        actor=place.coordinator,
        visit=visits_by_key(session, veteran)["year-4"],
        reason="moving abroad",
    )
    finished = {
        key: Frozen.of(session, visit)
        for key, visit in visits_by_key(session, veteran).items()
        if visit.status.is_final
    }
    assert {key: state.status for key, state in finished.items()} == {
        "day-30": VisitStatus.COMPLETED,
        "day-100": VisitStatus.MISSED,
        "day-180": VisitStatus.MISSED,
        "month-12": VisitStatus.COMPLETED,
        "month-18": VisitStatus.COMPLETED,
        "month-24": VisitStatus.MISSED,
        "year-4": VisitStatus.CANCELLED,
    }

    _write_protocols(tmp_path, with_v2=True)
    library = load_protocols(tmp_path)
    v1, v2 = library.get("casgevy", 1), library.get("casgevy", 2)
    assert v1 is not None and v2 is not None
    assert current("casgevy", library) is v2

    # A new patient gets v2.
    newcomer = make_patient(session, place, clock=clock, infusion=date(2026, 11, 1))
    sync(session, place, newcomer, clock=clock, library=library)
    assert _plan(session, newcomer).protocol_version == 2
    assert set(visits_by_key(session, newcomer)) == {visit.key for visit in v2.visits}
    _matches(session, newcomer, v2)

    # Existing patients stay on v1, even when their schedule is regenerated.
    waiting.infusion_date = date(2026, 1, 12)
    sync(session, place, waiting, clock=clock, library=library)
    assert _plan(session, waiting).protocol_version == 1
    assert set(visits_by_key(session, waiting)) == {visit.key for visit in v1.visits}
    _matches(session, waiting, v1)

    # Until the explicit migration moves them.
    behind = session.scalar(
        select(func.count())
        .select_from(FollowUpPlan)
        .where(FollowUpPlan.therapy_code == "casgevy", FollowUpPlan.protocol_version != 2)
    )
    assert behind is not None and behind >= 2
    moved = migrate_protocol(
        session,
        clock=clock,
        actor=place.coordinator,
        library=library,
        therapy="casgevy",
        to_version=2,
    )
    assert moved == behind
    session.commit()
    session.expire_all()

    for patient in (waiting, veteran):
        assert _plan(session, patient).protocol_version == 2
        _matches(session, patient, v2)
        visits = visits_by_key(session, patient)
        assert visits["month-54"].status is VisitStatus.DUE
        year_3 = visits["year-3"]
        assert (year_3.window_end - year_3.window_start).days == 60
    # The removed visit: cancelled with the reason where it was still to come ...
    month_18 = visits_by_key(session, waiting)["month-18"]
    assert status_of(month_18) is VisitStatus.CANCELLED
    last = events_of(session, month_18)[-1]
    assert last.action == "cancel"
    assert last.reason == "not in protocol casgevy v2"
    assert last.actor_user_id == place.coordinator.user_id
    # ... and left alone where it was done, like every other finished visit.
    for key, before in finished.items():
        assert Frozen.of(session, visits_by_key(session, veteran)[key]) == before, key
    assert visits_by_key(session, veteran)["month-18"].protocol_version == 1

    # Migrating again moves nobody; an unknown version is refused.
    assert (
        migrate_protocol(
            session,
            clock=clock,
            actor=place.coordinator,
            library=library,
            therapy="casgevy",
            to_version=2,
        )
        == 0
    )
    with pytest.raises(ValueError, match="no protocol casgevy version 3"):
        migrate_protocol(
            session,
            clock=clock,
            actor=place.coordinator,
            library=library,
            therapy="casgevy",
            to_version=3,
        )


def test_a_visit_a_new_protocol_version_adds_after_its_window_closed_starts_missed(
    session: Session, place: Place, clock: FrozenClock, tmp_path: Path
) -> None:
    _write_protocols(tmp_path, with_v2=False)
    # Infused 2021-06-01: by T0 every window up to year 5 has closed.
    pioneer = make_patient(session, place, clock=clock, infusion=date(2021, 6, 1))
    sync(session, place, pioneer, clock=clock, library=load_protocols(tmp_path))
    before = Frozen.final_visits(session, pioneer)
    assert "year-3" in before and "month-18" in before

    _write_protocols(tmp_path, with_v2=True)
    clock.advance(timedelta(days=3))
    moved = migrate_protocol(
        session,
        clock=clock,
        actor=place.coordinator,
        library=load_protocols(tmp_path),
        therapy="casgevy",
        to_version=2,
    )
    assert moved == 1
    session.commit()
    session.expire_all()
    # Month 54 (2025-11-29, window closed 2025-12-29) appears already missed and followed up.
    month_54 = visits_by_key(session, pioneer)["month-54"]
    assert month_54.window_end == date(2025, 12, 29)
    event = _missed_before_follow_up(session, month_54, at=clock.now())
    assert event.actor_user_id == place.coordinator.user_id
    # The visits that were final stay exactly as they were (month 18, dropped by v2, too).
    after = Frozen.final_visits(session, pioneer)
    assert {key: after[key] for key in before} == before
    assert set(after) == set(before) | {"month-54"}
    assert mark_missed_visits(session, clock=clock) == 0


# --- job locks ---------------------------------------------------------------------------

LEASE = timedelta(minutes=10)


def test_a_lease_has_one_owner_until_it_runs_out(db: Database) -> None:
    clock = FrozenClock(T0)

    def take(owner: str) -> bool:
        return acquire_lock(db.factory, name="nightly", clock=clock, lease=LEASE, owner=owner)

    assert take("worker-a")
    assert not take("worker-b")
    assert not take("worker-a")  # not re-entrant either
    clock.advance(LEASE - timedelta(seconds=1))
    assert not take("worker-b")
    clock.advance(timedelta(seconds=1))  # the lease ran out
    assert take("worker-b")
    assert not take("worker-a")

    release_lock(db.factory, name="nightly", clock=clock, owner="worker-a")  # not its lease
    assert not take("worker-c")
    release_lock(db.factory, name="nightly", clock=clock, owner="worker-b")
    assert take("worker-c")
    with db.factory() as session:
        lock = session.get(JobLock, "nightly")
        assert lock is not None
        assert lock.owner == "worker-c"
        assert lock.locked_until == clock.now() + LEASE
        assert lock.last_run_at == clock.now()
    # Other names are other leases.
    assert acquire_lock(db.factory, name="other", clock=clock, lease=LEASE, owner="worker-a")


def test_run_exclusively_runs_the_job_once(db: Database) -> None:
    clock = FrozenClock(T0)
    runs: list[str] = []

    def job(session: Session) -> int:
        runs.append("ran")
        # While it runs nobody gets the lease, not even this process again.
        nested = run_exclusively(db.factory, name="nightly", clock=clock, job=lambda _: 0)
        assert nested == (False, None)
        return 42

    assert run_exclusively(db.factory, name="nightly", clock=clock, job=job) == (True, 42)
    assert runs == ["ran"]

    # Someone else holds the lease: the job does not run.
    assert acquire_lock(db.factory, name="nightly", clock=clock, lease=LEASE, owner="elsewhere")
    assert run_exclusively(db.factory, name="nightly", clock=clock, job=job) == (False, None)
    assert runs == ["ran"]
    clock.advance(LEASE)
    assert run_exclusively(db.factory, name="nightly", clock=clock, job=job) == (True, 42)
    assert runs == ["ran", "ran"]

    # A failing job rolls back its work and gives the lease back.
    def failing(session: Session) -> None:
        session.add(JobLock(name="written-by-failing-job", owner="x", locked_until=T0))
        session.flush()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_exclusively(db.factory, name="nightly", clock=clock, job=failing)
    with db.factory() as session:
        assert session.get(JobLock, "written-by-failing-job") is None
    assert run_exclusively(db.factory, name="nightly", clock=clock, job=lambda _: "again") == (
        True,
        "again",
    )


def _race(db: Database, *, name: str, clock: FrozenClock) -> dict[str, bool]:
    barrier = threading.Barrier(2)
    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def worker(owner: str) -> None:
        try:
            barrier.wait(timeout=10)
            results[owner] = acquire_lock(
                db.factory, name=name, clock=clock, lease=LEASE, owner=owner
            )
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(owner,)) for owner in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    if errors:
        raise errors[0]
    return results


def test_two_racing_workers_never_both_get_the_lease(db: Database) -> None:
    clock = FrozenClock(T0)
    for round_number in range(8):
        # A lease nobody held yet ...
        fresh = _race(db, name=f"race-{round_number}", clock=clock)
        assert sorted(fresh.values()) == [False, True], fresh
    # ... and one whose holder's lease ran out.
    for round_number in range(8):
        name = f"expired-{round_number}"
        assert acquire_lock(db.factory, name=name, clock=clock, lease=LEASE, owner="gone")
        later = FrozenClock(T0 + LEASE)
        expired = _race(db, name=name, clock=later)
        assert sorted(expired.values()) == [False, True], expired
        with db.factory() as session:
            lock = session.get(JobLock, name)
            assert lock is not None
            winner = next(owner for owner, won in expired.items() if won)
            assert lock.owner == winner


# --- closing and reopening a patient's follow-up ----------------------------------------

CLOSINGS = [
    pytest.param(PatientStatus.WITHDRAWN, "patient withdrawn", id="withdrawn"),
    pytest.param(PatientStatus.DECEASED, "patient deceased", id="deceased"),
    pytest.param(None, "infusion date removed", id="date-removed"),
]


def _close(patient: Patient, status: PatientStatus | None) -> None:
    if status is None:
        patient.infusion_date = None
    else:
        patient.status = status


@pytest.mark.parametrize(("status", "reason"), CLOSINGS)
def test_closing_follow_up_cancels_the_open_visits_with_the_reason(
    session: Session, place: Place, clock: FrozenClock, status: PatientStatus | None, reason: str
) -> None:
    patient = make_patient(session, place, clock=clock, infusion=date(2026, 9, 1))
    sync(session, place, patient, clock=clock)
    visits = visits_by_key(session, patient)
    complete_visit(
        session,
        clock=clock,
        actor=place.coordinator,
        visit=visits["day-30"],
        completed_on=date(2026, 10, 2),
    )
    book_appointment(
        session,
        clock=clock,
        actor=place.coordinator,
        visit=visits["day-100"],
        patient=patient,
        day=date(2026, 12, 10),
        at=time(10),
        location="Harborview",
    )
    done = Frozen.of(session, visits["day-30"])

    _close(patient, status)
    clock.advance(timedelta(hours=1))
    change = sync(session, place, patient, clock=clock)
    assert change.cancelled == len(visits) - 1
    for key, visit in visits_by_key(session, patient).items():
        if key == "day-30":
            assert Frozen.of(session, visit) == done
            continue
        assert status_of(visit) is VisitStatus.CANCELLED, key
        last = events_of(session, visit)[-1]
        assert (last.action, last.reason, last.at) == ("cancel", reason, clock.now())
        assert last.actor_user_id == place.coordinator.user_id
    assert events_of(session, visits["day-100"])[-1].from_status == "scheduled"

    events = count_events(session)
    again = sync(session, place, patient, clock=clock)
    assert again.cancelled == 0
    assert count_events(session) == events
    assert mark_missed_visits(session, clock=FrozenClock(datetime(2045, 1, 1, tzinfo=UTC))) == 0


@pytest.mark.parametrize(("status", "reason"), [CLOSINGS[0], CLOSINGS[2]])
def test_reopening_follow_up_brings_back_the_visits_still_to_come(
    session: Session, place: Place, clock: FrozenClock, status: PatientStatus | None, reason: str
) -> None:
    patient = make_patient(session, place, clock=clock, infusion=date(2026, 9, 1))
    sync(session, place, patient, clock=clock)
    visits = visits_by_key(session, patient)
    complete_visit(
        session,
        clock=clock,
        actor=place.coordinator,
        visit=visits["day-30"],
        completed_on=date(2026, 10, 2),
    )
    # A coordinator's own decision is kept whatever happens next.
    cancel_visit(
        session,
        clock=clock,
        actor=place.coordinator,
        visit=visits["year-15"],
        reason="moving abroad in 2041",
    )
    done = Frozen.of(session, visits["day-30"])
    by_hand = Frozen.of(session, visits["year-15"])
    _close(patient, status)
    sync(session, place, patient, clock=clock)
    assert all(visit.status.is_final for visit in visits_by_key(session, patient).values()), reason

    # The follow-up applies again (date set again, a little later; or the patient is back).
    clock.advance(timedelta(days=2))
    patient.infusion_date = date(2026, 6, 1)
    patient.status = PatientStatus.ACTIVE
    sync(session, place, patient, clock=clock)
    protocol = current("casgevy")
    today = clock.now().astimezone(ZoneInfo(patient.time_zone)).date()
    for key, visit in visits_by_key(session, patient).items():
        if key in ("day-30", "year-15"):
            assert Frozen.of(session, visit) == (done if key == "day-30" else by_hand)
            continue
        protocol_visit = protocol.visit(key)
        assert protocol_visit is not None
        opens, target, closes = protocol_visit.window(date(2026, 6, 1))
        if closes < today:
            # Its window closed while the follow-up was stopped: it stays cancelled.
            assert status_of(visit) is VisitStatus.CANCELLED, key
            continue
        assert status_of(visit) is VisitStatus.DUE, key
        assert (visit.window_start, visit.target_date, visit.window_end) == (opens, target, closes)
        assert visit.appointment_at is None
        history = events_of(session, visit)
        assert [event.action for event in history][-3:-1] == ["cancel", "reopen"]
    assert visits_by_key(session, patient)["day-100"].status is VisitStatus.CANCELLED
    assert visits_by_key(session, patient)["day-180"].status is VisitStatus.DUE
