"""The questionnaire pages: a patient starts the check-in from home, answers page by page
(plain requests and htmx), sees range and required errors tied to the question, resumes
where they left off, reviews and sends; Spanish for a Spanish reader; a caregiver without
the right is refused, another patient's response is a 404; the admin page loads and lists
questionnaires. Page tests run on SQLite (the services run on both backends)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse as FhirResponse
from sqlalchemy import select

from coordination.questionnaires.models import QuestionnaireResponse, ResponseStatus
from core.audit.models import AuditEvent
from core.models import CaregiverLink, Observation, Patient
from tests.conftest import (
    ADMIN,
    CAREGIVER_CO,
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    Browser,
    Database,
    plain,
    user_by_login,
)

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
CHECK_IN = "https://cgt-access.example/fhir/Questionnaire/living-after-gene-therapy"


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _patient_id(db: Database, given_name: str) -> int:
    with db.factory() as session:
        patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
        assert patient is not None
        return patient.id


def _questionnaire_id(browser: Browser, patient_id: int) -> str:
    home = browser.get("/home").text
    found = re.search(
        rf'action="/care/{patient_id}/questionnaires".*?name="questionnaire_id" value="(\d+)"',
        home,
        re.S,
    )
    assert found, "the home page offers the check-in"
    return found.group(1)


def _start(browser: Browser, patient_id: int) -> str:
    """Start the check-in from home; returns the response's base URL."""
    started = browser.post(
        f"/care/{patient_id}/questionnaires",
        {"questionnaire_id": _questionnaire_id(browser, patient_id)},
    )
    assert started.status_code == 303
    base = started.headers["location"]
    assert re.fullmatch(rf"/care/{patient_id}/questionnaires/\d+", base)
    return base


def _follow(browser: Browser, response_location: str) -> str:
    resumed = browser.get(response_location)
    assert resumed.status_code == 303
    return str(resumed.headers["location"])


def _went_to(response: object, htmx: bool) -> str:
    headers = response.headers  # type: ignore[attr-defined]
    if htmx:
        assert response.status_code == 204  # type: ignore[attr-defined]
        return str(headers["HX-Redirect"])
    assert response.status_code == 303  # type: ignore[attr-defined]
    return str(headers["location"])


def test_a_patient_answers_resumes_reviews_and_sends(
    browsers: Callable[[str], Browser], db: Database, htmx: bool
) -> None:
    maya = _patient_id(db, "Maya")
    browser = browsers(PATIENT_MD)
    base = _start(browser, maya)
    assert _follow(browser, base) == f"{base}/pages/1"

    page = browser.get(f"{base}/pages/1", htmx=htmx)
    assert page.status_code == 200
    assert ("<html" in page.text) is not htmx
    text = plain(page.text)
    assert "Page 1 of 4" in text
    assert "On how many of the last 7 days did you have pain" in text
    assert "A number from 0 to 7 (days)" in text

    # Out of range: refused with the range, tied to the field; nothing saved.
    refused = browser.post(f"{base}/pages/1", {"q1": "9"}, htmx=htmx)
    assert refused.status_code == 400
    assert "Enter a number from 0 to 7." in plain(refused.text)
    assert 'id="f-q1-error"' in refused.text
    assert re.search(r'id="f-q1"[^>]*aria-describedby="[^"]*f-q1-error', refused.text)
    assert 'value="9"' in refused.text  # what was typed stays

    assert _went_to(browser.post(f"{base}/pages/1", {"q1": "3"}, htmx=htmx), htmx) == (
        f"{base}/pages/2"
    )
    # Leave, come back (another device would do the same): on page two.
    assert _follow(browser, base) == f"{base}/pages/2"
    again = browsers(PATIENT_MD)
    assert _follow(again, base) == f"{base}/pages/2"

    missing = again.post(f"{base}/pages/2", {}, htmx=htmx)
    assert missing.status_code == 400
    assert "Answer this question." in plain(missing.text)
    assert re.search(r'<fieldset id="f-q3"[^>]*aria-describedby="f-q3-error"', missing.text)
    assert _went_to(again.post(f"{base}/pages/2", {"q3": "4"}, htmx=htmx), htmx) == (
        f"{base}/pages/3"
    )
    assert _went_to(again.post(f"{base}/pages/3", {"q6": "0"}, htmx=htmx), htmx) == (
        f"{base}/pages/4"
    )
    hospital = plain(again.get(f"{base}/pages/4").text)
    # The follow-up depends on this page's answer: shown with a note.
    assert "How many nights in all?" in hospital
    assert "Answer this only if it applies, after your answer above." in hospital
    assert "Answer this question." in plain(
        again.post(f"{base}/pages/4", {"q8": "true"}, htmx=htmx).text
    )
    assert (
        _went_to(again.post(f"{base}/pages/4", {"q8": "true", "q9": "2"}, htmx=htmx), htmx)
        == f"{base}/review"
    )

    review = plain(again.get(f"{base}/review", htmx=htmx).text)
    assert "Check your answers" in review
    assert "Very tired" in review and "Yes" in review and "2" in review
    sent = again.post(f"{base}/submit", {}, htmx=htmx)
    assert _went_to(sent, htmx) == base
    done = again.get(base)
    assert done.status_code == 200 and "Thank you" in plain(done.text)
    # A sent response cannot change.
    assert browser.post(f"{base}/pages/1", {"q1": "1"}).status_code == 303

    with db.factory() as session:
        stored = session.get(QuestionnaireResponse, int(base.rsplit("/", 1)[-1]))
        assert stored is not None and stored.status is ResponseStatus.COMPLETED
        FhirResponse.model_validate(stored.resource)
        assert stored.score == 4
        assert session.get(Observation, stored.observation_id) is not None


def test_no_answer_goes_into_a_url(browsers: Callable[[str], Browser], db: Database) -> None:
    maya = _patient_id(db, "Maya")
    browser = browsers(PATIENT_MD)
    base = _start(browser, maya)
    moved = browser.post(f"{base}/pages/1", {"q1": "6"})
    assert "6" not in moved.headers["location"].replace(base, "")


def test_a_spanish_reader_answers_in_spanish(
    browsers: Callable[[str], Browser], db: Database, htmx: bool
) -> None:
    andre = _patient_id(db, "Andre")
    rosa = browsers(CAREGIVER_CO)  # Andre's grandmother, Spanish
    with db.factory() as session:
        link = session.scalar(
            select(CaregiverLink).where(
                CaregiverLink.caregiver_id == user_by_login(session, CAREGIVER_CO).caregiver_id
            )
        )
        assert link is not None
        link.can_answer_questionnaires = True
        session.commit()
    home = plain(rosa.get("/home").text)
    assert "¿Cómo vive con la enfermedad de células falciformes" in home
    base = _start(rosa, andre)
    page = plain(rosa.get(f"{base}/pages/1", htmx=htmx).text)
    assert "¿En cuántos de los últimos 7 días tuvo dolor" in page
    refused = rosa.post(f"{base}/pages/1", {"q1": "8"}, htmx=htmx)
    assert "Escriba un número del 0 al 7." in plain(refused.text)


def test_a_caregiver_without_the_right_is_refused(
    browsers: Callable[[str], Browser], db: Database
) -> None:
    andre = _patient_id(db, "Andre")
    rosa = browsers(CAREGIVER_CO)  # may see Andre's schedule, not answer for him
    assert "questionnaire_id" not in rosa.get("/home").text
    refused = rosa.post(f"/care/{andre}/questionnaires", {"questionnaire_id": "1"})
    assert refused.status_code == 404


def test_another_patients_response_is_a_404(
    browsers: Callable[[str], Browser], db: Database
) -> None:
    maya, andre = _patient_id(db, "Maya"), _patient_id(db, "Andre")
    base = _start(browsers(PATIENT_MD), maya)
    response_id = base.rsplit("/", 1)[-1]
    andre_browser = browsers(PATIENT_CO)
    for url in (
        f"/care/{andre}/questionnaires/{response_id}",
        f"/care/{andre}/questionnaires/{response_id}/pages/1",
        f"/care/{maya}/questionnaires/{response_id}/pages/1",
    ):
        assert andre_browser.get(url).status_code == 404
    # Denise, Maya's mother with every right, answers for her.
    denise = browsers(CAREGIVER_MD)
    assert denise.get(f"{base}/pages/1").status_code == 200
    assert denise.get(f"{base}/pages/9").status_code == 404


def test_the_admin_loads_and_lists_questionnaires(
    browsers: Callable[[str], Browser], htmx: bool
) -> None:
    admin = browsers(ADMIN)
    page = admin.get("/admin/questionnaires", htmx=htmx)
    assert page.status_code == 200
    text = plain(page.text)
    assert "How are you living with sickle cell disease after gene therapy?" in text
    assert ADMIN in text and "Active" in text
    bad = {
        "resourceType": "Questionnaire",
        "status": "active",
        "url": "https://example.org/q",
        "version": "1",
        "language": "en",
        "item": [{"linkId": "photo", "type": "attachment", "text": "A photo"}],
    }
    refused = admin.client.post(
        "/admin/questionnaires",
        data={"csrf_token": admin.token},
        files={"file": ("photo.json", json.dumps(bad).encode(), "application/json")},
        headers={"HX-Request": "true"} if htmx else {},
    )
    assert refused.status_code == 400
    assert "item 'photo' (item[0]): type 'attachment' is not supported" in plain(refused.text)
    bad["item"] = [{"linkId": "name", "type": "string", "text": "Your name?"}]
    loaded = admin.client.post(
        "/admin/questionnaires",
        data={"csrf_token": admin.token},
        files={"file": ("ok.json", json.dumps(bad).encode(), "application/json")},
    )
    assert loaded.status_code == 303 and loaded.headers["location"].endswith("done=loaded")
    assert "The questionnaire is loaded." in plain(admin.get(loaded.headers["location"]).text)


def test_a_coordinator_cannot_load_questionnaires(browsers: Callable[[str], Browser]) -> None:
    assert browsers(COORDINATOR_MD).get("/admin/questionnaires").status_code == 403


def test_staff_read_a_response_and_the_read_is_audited(
    browsers: Callable[[str], Browser], db: Database, htmx: bool
) -> None:
    maya = _patient_id(db, "Maya")
    patient = browsers(PATIENT_MD)
    base = _start(patient, maya)
    patient.post(f"{base}/pages/1", {"q1": "5"})
    response_id = base.rsplit("/", 1)[-1]
    coordinator = browsers(COORDINATOR_MD)
    listed = coordinator.get(f"/patients/{maya}/questionnaires", htmx=htmx)
    assert listed.status_code == 200
    assert "Started, not sent" in plain(listed.text)
    read = coordinator.get(f"/patients/{maya}/questionnaires/{response_id}", htmx=htmx)
    assert read.status_code == 200
    text = plain(read.text)
    assert "On how many of the last 7 days did you have pain" in text and "5" in text
    with db.factory() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(
                AuditEvent.patient_id == maya,
                AuditEvent.target == f"questionnaire_response:{response_id}",
            )
        ).all()
    assert "questionnaire_response.read" in actions
    # Another state's coordinator sees nothing.
    assert (
        browsers(COORDINATOR_CO).get(f"/patients/{maya}/questionnaires/{response_id}").status_code
        == 404
    )
