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
from coordination.questionnaires.models import QuestionnaireResponse
from core.clock import FrozenClock
from core.models import CaregiverLink, Language, Patient
from tests.conftest import (
    CAREGIVER_MD,
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
