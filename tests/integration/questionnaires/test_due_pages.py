"""Due questionnaires on the pages: the patient's home says the questionnaire is ready (before
the infusion, or for a visit), a caregiver with the right sees it for the patient, one
without the right sees its status beside the visit but cannot start it; starting from home
ties the response to its visit; Spanish for a Spanish reader. Page tests on SQLite (the
services run on both backends)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from sqlalchemy import select

from coordination.followup.models import Visit
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import sync_schedule
from coordination.questionnaires.loading import form_of
from coordination.questionnaires.models import Questionnaire, QuestionnaireResponse
from coordination.questionnaires.responses import (
    Author,
    save_page,
    start_response,
    submit_response,
)
from core.audit.models import AuditEvent
from core.clock import FrozenClock
from core.models import CaregiverLink, Language, Patient
from tests.conftest import (
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_MD,
    T0,
    Browser,
    Database,
    plain,
    user_by_login,
)
from tests.factories import SYSTEM

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _patient(db: Database, given_name: str) -> tuple[int, dict[str, int]]:
    """The patient's id and their visits' ids by key (their schedule made if the test
    world has none)."""
    with db.factory() as session:
        patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
        assert patient is not None
        sync_schedule(
            session,
            clock=FrozenClock(T0),
            actor=SYSTEM,
            library=shipped_protocols(),
            patient=patient,
        )
        session.commit()
        visits = session.scalars(select(Visit).where(Visit.patient_id == patient.id))
        return patient.id, {visit.visit_key: visit.id for visit in visits}


def _denise_may_answer_for(db: Database, patient_id: int) -> None:
    with db.factory() as session:
        denise = user_by_login(session, CAREGIVER_MD)
        link = session.scalar(
            select(CaregiverLink).where(
                CaregiverLink.caregiver_id == denise.caregiver_id,
                CaregiverLink.patient_id == patient_id,
            )
        )
        assert link is not None
        link.can_answer_questionnaires = True
        session.commit()


def _start_form(page: str, patient_id: int) -> dict[str, str]:
    """The fields of the first due questionnaire's start form on a page."""
    found = re.search(
        rf'action="/care/{patient_id}/questionnaires".*?name="questionnaire_id" value="(\d+)"'
        r'.*?name="visit_id" value="(\d*)"',
        page,
        re.S,
    )
    assert found, "a due questionnaire can be started"
    return {"questionnaire_id": found.group(1), "visit_id": found.group(2)}


def test_before_the_infusion_the_patient_and_her_mother_see_it_ready(
    browsers: Callable[[str], Browser], db: Database, htmx: bool
) -> None:
    maya, _visits = _patient(db, "Maya")  # infusion planned in 20 days
    home = plain(browsers(PATIENT_MD).get("/home", htmx=htmx).text)
    assert "Your questionnaire before your infusion is ready." in home
    denise = browsers(CAREGIVER_MD)
    home = plain(denise.get("/home", htmx=htmx).text)
    assert "Maya's questionnaire before the infusion is ready." in home
    schedule = plain(denise.get(f"/care/{maya}/schedule", htmx=htmx).text)
    assert "Before your infusion Questionnaire: To answer Answer now" in schedule


def test_a_visit_questionnaire_is_ready_and_starting_it_ties_it_to_the_visit(
    browsers: Callable[[str], Browser], db: Database
) -> None:
    imani, visits = _patient(db, "Imani")  # 104 days after infusion: day 100's window
    denise = browsers(CAREGIVER_MD)  # her aunt: sees the schedule only
    schedule = plain(denise.get(f"/care/{imani}/schedule").text)
    assert "Questionnaire: To answer" in schedule
    assert "Answer now" not in schedule.split("Day 100 check-up", 1)[1].split("Later visits")[0]
    home = plain(denise.get("/home").text)
    assert "Imani's questionnaire" not in home
    refused = denise.post(
        f"/care/{imani}/questionnaires",
        {"questionnaire_id": "1", "visit_id": str(visits["day-100"])},
    )
    assert refused.status_code == 404

    _denise_may_answer_for(db, imani)
    home_page = denise.get("/home").text
    assert "Imani's questionnaire for the Day 100 check-up is ready." in plain(home_page)
    form = _start_form(home_page.split("Imani's questionnaire", 1)[1], imani)
    assert form["visit_id"] == str(visits["day-100"])
    started = denise.post(f"/care/{imani}/questionnaires", form)
    assert started.status_code == 303
    response_id = int(started.headers["location"].rsplit("/", 1)[1])
    with db.factory() as session:
        response = session.get(QuestionnaireResponse, response_id)
        assert response is not None and response.visit_id == visits["day-100"]
    schedule = plain(denise.get(f"/care/{imani}/schedule").text)
    assert "Questionnaire: Started Carry on" in schedule


def test_a_visit_where_it_is_not_open_is_refused_in_words(
    browsers: Callable[[str], Browser], db: Database
) -> None:
    imani, visits = _patient(db, "Imani")
    _denise_may_answer_for(db, imani)
    denise = browsers(CAREGIVER_MD)
    form = _start_form(denise.get("/home").text.split("Imani's questionnaire", 1)[1], imani)
    for visit_id in (str(visits["day-30"]), str(visits["day-180"]), "x", "99999"):
        refused = denise.post(f"/care/{imani}/questionnaires", {**form, "visit_id": visit_id})
        assert refused.status_code == 400, visit_id
        assert "This questionnaire is not open for that visit." in plain(refused.text)


def test_in_spanish_for_a_spanish_reader(
    browsers: Callable[[str], Browser], db: Database, htmx: bool
) -> None:
    with db.factory() as session:
        maya = session.scalar(select(Patient).where(Patient.given_name == "Maya"))
        assert maya is not None
        user_by_login(session, PATIENT_MD).preferred_language = Language.ES
        session.commit()
        maya_id = maya.id
    browser = browsers(PATIENT_MD)
    home = plain(browser.get("/home", htmx=htmx).text)
    assert "Su cuestionario antes de la infusión está listo." in home
    schedule = plain(browser.get(f"/care/{maya_id}/schedule", htmx=htmx).text)
    assert "Cuestionario: Por responder Responder ahora" in schedule


def _answer_day_100(db: Database, patient_id: int, visit_id: int) -> int:
    """Imani answers the check-in for her day-100 visit (through the services)."""
    with db.factory() as session:
        patient = session.get(Patient, patient_id)
        visit = session.get(Visit, visit_id)
        questionnaire = session.scalar(
            select(Questionnaire).where(Questionnaire.language == Language.EN).limit(1)
        )
        assert patient is not None and visit is not None and questionnaire is not None
        clock = FrozenClock(T0)
        response = start_response(
            session,
            clock=clock,
            actor=SYSTEM,
            patient=patient,
            questionnaire=questionnaire,
            visit=visit,
        )
        form = form_of(questionnaire)
        pages = {0: {"pain-days": ["2"]}, 1: {"fatigue": ["3"]}, 2: {"missed-days": ["0"]}}
        pages[3] = {"hospital-stay": ["false"]}
        for page, answers in pages.items():
            posted = {form.fields[link]: value for link, value in answers.items()}
            save_page(session, clock=clock, response=response, page=page, posted=posted)
        submit_response(
            session, clock=clock, actor=SYSTEM, response=response, author=Author(user_id=None)
        )
        session.commit()
        return response.id


def test_the_coordinator_sees_what_is_due_and_reads_the_answers_in_their_language(
    browsers: Callable[[str], Browser], db: Database, htmx: bool
) -> None:
    imani, visits = _patient(db, "Imani")
    coordinator = browsers(COORDINATOR_MD)
    page = plain(coordinator.get(f"/patients/{imani}/questionnaires", htmx=htmx).text)
    assert "Asked by the follow-up protocol" in page
    assert "Day 100 check-up How are you living" in page and "To answer" in page
    response_id = _answer_day_100(db, imani, visits["day-100"])
    page = plain(coordinator.get(f"/patients/{imani}/questionnaires", htmx=htmx).text)
    assert "Answered" in page and "To answer" not in page
    row = page.split("Asked by the follow-up protocol")[2].split("Every response")[0]
    assert "Day 100 check-up How are you living" in row
    assert "Answered November 9, 2026 to December 7, 2026 11/27/26, 10:00 AM 3" in row
    # The coordinator reads in Spanish: the question texts come in Spanish.
    with db.factory() as session:
        user_by_login(session, COORDINATOR_MD).preferred_language = Language.ES
        session.commit()
    read = coordinator.get(f"/patients/{imani}/questionnaires/{response_id}", htmx=htmx)
    assert read.status_code == 200
    assert "¿En cuántos de los últimos 7 días tuvo dolor" in plain(read.text)
    with db.factory() as session:
        audited = session.scalars(
            select(AuditEvent.action).where(
                AuditEvent.patient_id == imani,
                AuditEvent.target == f"questionnaire_response:{response_id}",
            )
        ).all()
    assert "questionnaire_response.read" in audited


def test_another_states_coordinator_gets_a_404(
    browsers: Callable[[str], Browser], db: Database
) -> None:
    imani, visits = _patient(db, "Imani")
    response_id = _answer_day_100(db, imani, visits["day-100"])
    colorado = browsers(COORDINATOR_CO)
    assert colorado.get(f"/patients/{imani}/questionnaires").status_code == 404
    assert colorado.get(f"/patients/{imani}/questionnaires/{response_id}").status_code == 404
