"""QuestionnaireResponse over FHIR: a submitted response reads back by id and is found by
patient, subject, questionnaire and authored, valid R4 (R4B model) and listed in the
CapabilityStatement and the patient's $everything; a draft is not served; another center's
client reads nothing and finds nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse as FhirResponse
from sqlalchemy import select

from coordination.questionnaires.loading import form_of
from coordination.questionnaires.models import Questionnaire
from coordination.questionnaires.responses import (
    Author,
    save_page,
    start_response,
    submit_response,
)
from core.clock import FrozenClock
from core.models import Language, Patient
from fhir_adapter.validation import validate_resource
from tests.conftest import Database
from tests.factories import SYSTEM
from tests.integration.fhir.test_fhir_writes import _token
from tests.support.smart import FRONT_RANGE

CHECK_IN = "https://cgt-access.example/fhir/Questionnaire/living-after-gene-therapy"


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _responses(db: Database, clock: FrozenClock) -> tuple[int, int, int]:
    """Maya (Harborview, Maryland) submits the check-in and starts it again (a draft):
    (her id, the submitted response's id, the draft's id)."""
    with db.factory() as session:
        maya = session.scalar(select(Patient).where(Patient.given_name == "Maya"))
        questionnaire = session.scalar(
            select(Questionnaire).where(
                Questionnaire.url == CHECK_IN, Questionnaire.language == Language.EN
            )
        )
        assert maya is not None and questionnaire is not None
        response = start_response(
            session, clock=clock, actor=SYSTEM, patient=maya, questionnaire=questionnaire
        )
        form = form_of(questionnaire)
        pages = [
            {"pain-days": ["1"]},
            {"fatigue": ["2"]},
            {"missed-days": ["0"]},
            {"hospital-stay": ["false"]},
        ]
        for page, answers in enumerate(pages):
            posted = {form.fields[link]: value for link, value in answers.items()}
            save_page(session, clock=clock, response=response, page=page, posted=posted)
        submit_response(
            session, clock=clock, actor=SYSTEM, response=response, author=Author(user_id=None)
        )
        draft = start_response(
            session, clock=clock, actor=SYSTEM, patient=maya, questionnaire=questionnaire
        )
        session.commit()
        return maya.id, response.id, draft.id


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [
        entry["resource"]["id"]
        for entry in bundle.get("entry", [])
        if entry["resource"]["resourceType"] == "QuestionnaireResponse"
    ]


def test_a_submitted_response_reads_and_is_found_by_the_centers_client(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    maya, submitted, draft = _responses(db, clock)
    headers = _token(db, clock, http)  # Harborview, Maya's center
    read = http.get(f"/fhir/QuestionnaireResponse/{submitted}", headers=headers)
    assert read.status_code == 200, read.text
    resource = read.json()
    FhirResponse.model_validate(resource)
    assert validate_resource(resource, expected_type="QuestionnaireResponse").errors == ()
    assert resource["subject"] == {"reference": f"Patient/{maya}"}
    assert resource["questionnaire"] == f"{CHECK_IN}|1.0.0"
    assert resource["meta"]["lastUpdated"]
    assert http.get(f"/fhir/QuestionnaireResponse/{draft}", headers=headers).status_code == 404
    for query in (
        f"patient={maya}",
        f"subject=Patient/{maya}",
        f"questionnaire={CHECK_IN}",
        f"questionnaire={CHECK_IN}|1.0.0",
        "authored=ge2026-11-01",
        f"patient={maya}&status=completed",
    ):
        found = http.get(f"/fhir/QuestionnaireResponse?{query}", headers=headers)
        assert found.status_code == 200, (query, found.text)
        assert _ids(found.json()) == [str(submitted)], query
    for query in ("questionnaire=https://example.org/other", "authored=lt2026-01-01"):
        found = http.get(f"/fhir/QuestionnaireResponse?{query}", headers=headers)
        assert _ids(found.json()) == [], query
    everything = http.get(f"/fhir/Patient/{maya}/$everything", headers=headers)
    assert everything.status_code == 200, everything.text
    assert _ids(everything.json()) == [str(submitted)]
    capability = http.get("/fhir/metadata").json()
    served = {resource["type"]: resource for resource in capability["rest"][0]["resource"]}
    assert "QuestionnaireResponse" in served
    names = {param["name"] for param in served["QuestionnaireResponse"]["searchParam"]}
    assert {"patient", "subject", "questionnaire", "authored", "status"} <= names


def test_another_centers_client_reads_and_finds_nothing(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    maya, submitted, _draft = _responses(db, clock)
    other = _token(db, clock, http, center_name=FRONT_RANGE)
    read = http.get(f"/fhir/QuestionnaireResponse/{submitted}", headers=other)
    assert read.status_code == 404 and read.json()["resourceType"] == "OperationOutcome"
    for query in (f"patient={maya}", f"questionnaire={CHECK_IN}", ""):
        found = http.get(f"/fhir/QuestionnaireResponse?{query}", headers=other)
        assert found.status_code == 200, found.text
        assert _ids(found.json()) == [], query
