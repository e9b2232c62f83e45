"""When questionnaires are due (the services): each CIBMTR time point of the protocol asks
for the check-in from the day its window opens; it is in progress once started, done once
submitted for that visit, overdue once the window closed without it; before the infusion
it is due with no visit; a moved infusion date moves it; a questionnaire the protocol names
but nobody loaded shows as not loaded, never fails. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.protocol import Protocol, ProtocolLibrary, shipped_protocols
from coordination.followup.schedule import sync_schedule
from coordination.questionnaires.due import (
    LATE_ANSWER_DAYS,
    DueQuestionnaire,
    DueStatus,
    due_questionnaires,
    open_to_answer,
    overdue_visits_query,
    visits_with_questionnaires_due,
)
from coordination.questionnaires.loading import form_of
from coordination.questionnaires.models import Questionnaire, QuestionnaireResponse
from coordination.questionnaires.responses import (
    Author,
    save_page,
    start_response,
    submit_response,
)
from core.clock import FrozenClock, local_today
from core.models import Language, Patient
from tests.factories import SYSTEM, Factory

CHECK_IN = "https://cgt-access.example/fhir/Questionnaire/living-after-gene-therapy"
LIBRARY = shipped_protocols()


def _today(clock: FrozenClock, patient: Patient) -> date:
    return local_today(clock, patient.time_zone)


def _patient(session: Session, clock: FrozenClock, *, days_since_infusion: int | None) -> Patient:
    make = Factory(session, clock)
    infusion = (
        None
        if days_since_infusion is None
        else local_today(clock, "America/New_York") - timedelta(days=days_since_infusion)
    )
    return make.patient(infusion_date=infusion)


def _due(session: Session, clock: FrozenClock, patient: Patient) -> list[DueQuestionnaire]:
    return due_questionnaires(session, clock=clock, library=LIBRARY, patient=patient)


def _chased(
    session: Session, clock: FrozenClock, patient: Patient, library: ProtocolLibrary = LIBRARY
) -> set[int]:
    """The patient's visits on the overdue-questionnaire list (the SQL for lists)."""
    query = overdue_visits_query(library=library, today=_today(clock, patient))
    return {visit_id for visit_id, patient_id in session.execute(query) if patient_id == patient.id}


def _check_in(session: Session) -> Questionnaire:
    found = session.scalar(
        select(Questionnaire).where(
            Questionnaire.url == CHECK_IN, Questionnaire.language == Language.EN
        )
    )
    assert found is not None
    return found


def _answer(
    session: Session, clock: FrozenClock, patient: Patient, item: DueQuestionnaire
) -> QuestionnaireResponse:
    """Answer and submit the check-in for the time point of `item`."""
    response = start_response(
        session,
        clock=clock,
        actor=SYSTEM,
        patient=patient,
        questionnaire=_check_in(session),
        visit=item.visit,
    )
    fields = {
        0: {"pain-days": ["0"]},
        1: {"fatigue": ["1"]},
        2: {"missed-days": ["0"]},
        3: {"hospital-stay": ["false"]},
    }
    form = form_of(response.questionnaire)
    for page, answers in fields.items():
        posted = {form.fields[link]: value for link, value in answers.items()}
        save_page(session, clock=clock, response=response, page=page, posted=posted)
    return submit_response(
        session, clock=clock, actor=SYSTEM, response=response, author=Author(user_id=None)
    )


def test_nothing_is_due_before_a_time_points_window_opens(
    session: Session, clock: FrozenClock
) -> None:
    # Day 40: the day-30 visit asks for nothing, day 100's window opens on day 86.
    patient = _patient(session, clock, days_since_infusion=40)
    assert _due(session, clock, patient) == []
    future = due_questionnaires(
        session, clock=clock, library=LIBRARY, patient=patient, include_future=True
    )
    assert [item.key for item in future][:3] == ["day-100", "day-180", "month-12"]
    assert {item.status for item in future} == {DueStatus.NOT_STARTED}


def test_each_cibmtr_time_point_asks_for_the_check_in_in_its_window(
    session: Session, clock: FrozenClock
) -> None:
    # Each visit's window opens (target - window_before) and the check-in is due that day.
    for days, key in [(86, "day-100"), (159, "day-180"), (335, "month-12"), (1035, "year-3")]:
        patient = _patient(session, clock, days_since_infusion=days)
        due = _due(session, clock, patient)
        assert [(item.key, item.status) for item in due] == [(key, DueStatus.NOT_STARTED)], days
        assert due[0].loaded and due[0].url == CHECK_IN
        assert due[0].visit is not None and due[0].visit.window_start == _today(clock, patient)
        # the day before its window opened, nothing
        earlier = _patient(session, clock, days_since_infusion=days - 1)
        assert _due(session, clock, earlier) == [], days


def test_started_is_in_progress_and_submitted_is_done(session: Session, clock: FrozenClock) -> None:
    patient = _patient(session, clock, days_since_infusion=100)
    (item,) = _due(session, clock, patient)
    start_response(
        session,
        clock=clock,
        actor=SYSTEM,
        patient=patient,
        questionnaire=_check_in(session),
        visit=item.visit,
    )
    (item,) = _due(session, clock, patient)
    assert item.status is DueStatus.IN_PROGRESS and item.response is not None
    response = _answer(session, clock, patient, item)
    (item,) = _due(session, clock, patient)
    assert item.status is DueStatus.DONE and item.response is not None
    assert item.response.id == response.id and item.response.visit_id == item.visit.id  # type: ignore[union-attr]
    assert open_to_answer(_due(session, clock, patient), clock=clock, patient=patient) == []


def test_a_response_with_no_visit_does_not_count_for_a_visit(
    session: Session, clock: FrozenClock
) -> None:
    patient = _patient(session, clock, days_since_infusion=100)
    free = start_response(
        session, clock=clock, actor=SYSTEM, patient=patient, questionnaire=_check_in(session)
    )
    assert free.visit_id is None
    (item,) = _due(session, clock, patient)
    assert item.status is DueStatus.NOT_STARTED


def test_overdue_after_the_window_closes_then_answerable_for_a_while(
    session: Session, clock: FrozenClock
) -> None:
    patient = _patient(session, clock, days_since_infusion=100)
    (item,) = _due(session, clock, patient)
    assert item.visit is not None
    closes = item.visit.window_end
    clock.advance(timedelta(days=(closes - _today(clock, patient)).days))
    (item,) = _due(session, clock, patient)
    assert item.status is DueStatus.NOT_STARTED  # the window's last day
    clock.advance(timedelta(days=1))
    (item,) = _due(session, clock, patient)
    assert item.status is DueStatus.OVERDUE and item.visit is not None
    assert open_to_answer([item], clock=clock, patient=patient) == [item]
    assert _chased(session, clock, patient) == {item.visit.id}
    # Past the late-answer days: still overdue on the record, no longer answerable or chased.
    clock.advance(timedelta(days=LATE_ANSWER_DAYS))
    overdue = [i for i in _due(session, clock, patient) if i.key == "day-100"]
    assert overdue[0].status is DueStatus.OVERDUE
    assert open_to_answer(overdue, clock=clock, patient=patient) == []
    assert item.visit.id not in _chased(session, clock, patient)


def test_answered_late_is_done_and_leaves_the_overdue_list(
    session: Session, clock: FrozenClock
) -> None:
    patient = _patient(session, clock, days_since_infusion=100)
    (item,) = _due(session, clock, patient)
    assert item.visit is not None
    clock.advance(timedelta(days=(item.visit.window_end - _today(clock, patient)).days + 3))
    (item,) = _due(session, clock, patient)
    assert item.status is DueStatus.OVERDUE
    _answer(session, clock, patient, item)
    (item,) = _due(session, clock, patient)
    assert item.status is DueStatus.DONE
    assert _chased(session, clock, patient) == set()


def test_before_infusion_it_is_due_without_a_visit_until_the_infusion(
    session: Session, clock: FrozenClock
) -> None:
    patient = _patient(session, clock, days_since_infusion=None)
    (item,) = _due(session, clock, patient)
    assert (item.key, item.visit, item.status) == ("before-infusion", None, DueStatus.NOT_STARTED)
    assert item.time_point.en == "Before your infusion"
    assert open_to_answer([item], clock=clock, patient=patient) == [item]
    # An infusion planned in 20 days: still due, answerable until the day before.
    patient.infusion_date = _today(clock, patient) + timedelta(days=20)
    sync_schedule(session, clock=clock, actor=SYSTEM, library=LIBRARY, patient=patient)
    (item,) = _due(session, clock, patient)
    assert item.answer_by == patient.infusion_date - timedelta(days=1)
    _answer(session, clock, patient, item)
    # After the infusion the baseline stays done; the visits come in their windows.
    clock.advance(timedelta(days=120))
    due = _due(session, clock, patient)
    assert [(i.key, i.status) for i in due] == [
        ("before-infusion", DueStatus.DONE),
        ("day-100", DueStatus.NOT_STARTED),
    ]


def test_a_baseline_not_answered_before_the_infusion_is_not_chased(
    session: Session, clock: FrozenClock
) -> None:
    patient = _patient(session, clock, days_since_infusion=None)
    patient.infusion_date = _today(clock, patient) + timedelta(days=2)
    sync_schedule(session, clock=clock, actor=SYSTEM, library=LIBRARY, patient=patient)
    clock.advance(timedelta(days=3))
    assert _due(session, clock, patient) == []


def test_a_moved_infusion_date_moves_what_is_due(session: Session, clock: FrozenClock) -> None:
    patient = _patient(session, clock, days_since_infusion=95)
    (item,) = _due(session, clock, patient)
    assert item.key == "day-100"
    # The infusion was in fact 30 days later: day 100's window has not opened yet.
    assert patient.infusion_date is not None
    patient.infusion_date += timedelta(days=30)
    sync_schedule(session, clock=clock, actor=SYSTEM, library=LIBRARY, patient=patient)
    assert _due(session, clock, patient) == []
    clock.advance(timedelta(days=30))
    (item,) = _due(session, clock, patient)
    assert item.key == "day-100" and item.status is DueStatus.NOT_STARTED


def test_a_questionnaire_not_loaded_shows_as_such_and_is_not_offered(
    session: Session, clock: FrozenClock
) -> None:
    shipped = LIBRARY.current("casgevy")
    assert shipped is not None
    missing = "https://example.org/fhir/Questionnaire/not-loaded-yet"
    raw = shipped.model_dump()
    for visit in raw["visits"]:
        if visit["questionnaires"]:
            visit["questionnaires"] = [CHECK_IN, missing]
    raw["before_infusion"] = None
    library = ProtocolLibrary(versions={"casgevy": {1: Protocol.model_validate(raw)}})
    patient = _patient(session, clock, days_since_infusion=100)
    due = due_questionnaires(session, clock=clock, library=library, patient=patient)
    assert [(item.url, item.loaded) for item in due] == [(CHECK_IN, True), (missing, False)]
    assert [item.url for item in open_to_answer(due, clock=clock, patient=patient)] == [CHECK_IN]
    # and no one chases the missing one on the worklist
    (item,) = [i for i in due if i.loaded]
    _answer(session, clock, patient, item)
    assert item.visit is not None
    clock.advance(timedelta(days=(item.visit.window_end - _today(clock, patient)).days + 1))
    assert _chased(session, clock, patient, library) == set()


def test_the_reminder_planning_knows_which_visits_have_one_waiting(
    session: Session, clock: FrozenClock
) -> None:
    patient = _patient(session, clock, days_since_infusion=100)
    (item,) = _due(session, clock, patient)
    assert item.visit is not None
    ids = visits_with_questionnaires_due(session, clock=clock, library=LIBRARY, patient=patient)
    assert ids == {item.visit.id}
    _answer(session, clock, patient, item)
    assert not visits_with_questionnaires_due(
        session, clock=clock, library=LIBRARY, patient=patient
    )
