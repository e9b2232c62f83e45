"""Treatment centers write through FHIR: a transaction enrols a patient with their infusion,
results and diagnosis through the platform's services (the schedule follows, a result in a
visit's window completes it), all or nothing, and the same Bundle twice stores once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from coordination.followup.models import Visit, VisitObservation, VisitStatus
from core.audit.models import AuditEvent
from core.clock import FrozenClock
from core.models import Condition, Language, Observation, Patient, PatientStatus, Therapy
from fhir_adapter.mapping.patients import THERAPY_SYSTEM
from tests.conftest import T0, Database
from tests.support.smart import FRONT_RANGE, CenterSystem, register

FHIR_JSON = {"Content-Type": "application/fhir+json"}
MEDICAID_MD = "https://cgt-access.org/fhir/sid/medicaid/md"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INFUSED = T0.date() - timedelta(days=40)


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _token(db: Database, clock: FrozenClock, http: TestClient, **kwargs: str) -> dict[str, str]:
    center = CenterSystem.generate("ES384")
    register(db, clock, center=center, scopes="system/*.cruds", **kwargs)
    token = center.token(http, clock, scope="system/*.cruds")
    return {"Authorization": f"Bearer {token}", **FHIR_JSON}


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def enrolment_bundle(
    medicaid: str = "MDT0000001", *, hemoglobin: str = "10.9", kind: str = "transaction"
) -> dict[str, Any]:
    """A center's first message about a patient: who, the infusion, a result, a diagnosis."""
    patient = _urn()
    entries = [
        {
            "fullUrl": patient,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": MEDICAID_MD, "value": medicaid}],
                "name": [{"use": "official", "family": "Rivera", "given": ["Ana", "Luz"]}],
                "gender": "female",
                "birthDate": "2008-03-14",
                "telecom": [{"system": "phone", "value": "+1 410 555 0142", "use": "mobile"}],
                "communication": [
                    {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}}
                ],
            },
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": _urn(),
            "resource": {
                "resourceType": "Procedure",
                "status": "completed",
                "code": {"coding": [{"system": THERAPY_SYSTEM, "code": "casgevy"}]},
                "subject": {"reference": patient},
                "performedDateTime": INFUSED.isoformat(),
            },
            "request": {"method": "POST", "url": "Procedure"},
        },
        {
            "fullUrl": _urn(),
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/"
                                "observation-category",
                                "code": "laboratory",
                            }
                        ]
                    }
                ],
                "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
                "subject": {"reference": patient},
                "effectiveDateTime": (INFUSED + timedelta(days=30)).isoformat(),
                "valueQuantity": {
                    "value": float(hemoglobin),
                    "unit": "g/dL",
                    "system": UCUM,
                    "code": "g/dL",
                },
            },
            "request": {"method": "POST", "url": "Observation"},
        },
        {
            "fullUrl": _urn(),
            "resource": {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D57.1"}]
                },
                "subject": {"reference": patient},
            },
            "request": {"method": "POST", "url": "Condition"},
        },
    ]
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _counts(db: Database) -> tuple[int, int, int, int]:
    with db.factory() as session:
        return (
            session.scalar(select(func.count(Patient.id))) or 0,
            session.scalar(select(func.count(Observation.id))) or 0,
            session.scalar(select(func.count(Condition.id))) or 0,
            session.scalar(select(func.count(Visit.id))) or 0,
        )


def test_a_transaction_enrols_a_patient_with_schedule_results_and_diagnosis(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    response = http.post("/fhir", json=enrolment_bundle(), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    reply = response.json()
    assert reply["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in reply["entry"]]
    assert statuses == ["201 Created"] * 4
    patient_id = int(reply["entry"][0]["response"]["location"].split("/")[1])

    with db.factory() as session:
        patient = session.get(Patient, patient_id)
        assert patient is not None
        therapy = session.get(Therapy, patient.therapy_id)
        assert therapy is not None and therapy.code == "casgevy"
        assert (patient.given_name, patient.family_name) == ("Ana Luz", "Rivera")
        assert patient.infusion_date == INFUSED
        assert patient.status is PatientStatus.ACTIVE
        assert patient.preferred_language is Language.ES
        assert patient.mobile_phone == "+14105550142"
        visits = {
            visit.visit_key: visit
            for visit in session.scalars(select(Visit).where(Visit.patient_id == patient_id))
        }
        # The 15-year schedule exists, and the result in day 30's window completed it.
        assert len(visits) >= 15
        day30 = visits["day-30"]
        assert day30.status is VisitStatus.COMPLETED
        assert day30.completed_on == INFUSED + timedelta(days=30)
        linked = session.scalar(
            select(Observation)
            .join(VisitObservation, VisitObservation.observation_id == Observation.id)
            .where(VisitObservation.visit_id == day30.id)
        )
        assert linked is not None and str(linked.value_quantity) == "10.9000"
        condition = session.scalar(select(Condition).where(Condition.patient_id == patient_id))
        assert condition is not None and (condition.code, condition.clinical_status) == (
            "D57.1",
            "active",
        )
        audited = session.scalars(
            select(AuditEvent.action).where(
                AuditEvent.patient_id == patient_id, AuditEvent.client_id.is_not(None)
            )
        ).all()
        (written,) = session.scalars(
            select(AuditEvent).where(
                AuditEvent.patient_id == patient_id, AuditEvent.action == "fhir.create"
            )
        )
    assert "fhir.create" in audited and "patient.create" in audited
    # One event for the patient's part of the transaction, naming every resource written.
    locations = [entry["response"]["location"].rsplit("/_history/")[0] for entry in reply["entry"]]
    assert written.detail == {"resources": locations}
    assert written.target == ", ".join(locations)
    assert written.client_id is not None


def test_the_same_transaction_twice_stores_once(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    first = http.post("/fhir", json=enrolment_bundle(), headers=headers)
    assert first.status_code == 200, first.text
    before = _counts(db)
    again = http.post("/fhir", json=enrolment_bundle(), headers=headers)  # new urn:uuids
    assert again.status_code == 200, again.text
    assert [entry["response"]["status"] for entry in again.json()["entry"]] == ["200 OK"] * 4
    assert _counts(db) == before
    locations = [entry["response"]["location"] for entry in first.json()["entry"]]
    assert [entry["response"]["location"] for entry in again.json()["entry"]] == locations


def test_a_transaction_with_one_bad_entry_stores_nothing(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    before = _counts(db)
    response = http.post("/fhir", json=enrolment_bundle(hemoglobin="40"), headers=headers)
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["expression"][0].startswith("Bundle.entry[2].resource")
    assert "3 to 25" in issue["diagnostics"]
    assert _counts(db) == before


def test_a_batch_keeps_the_good_entries_and_answers_for_the_bad_one(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    created = http.post("/fhir", json=enrolment_bundle(), headers=headers)
    patient_ref = created.json()["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": "4576-5"}]},
                    "subject": {"reference": patient_ref},
                    "effectiveDateTime": T0.date().isoformat(),
                    "valueQuantity": {"value": value, "unit": "%", "system": UCUM, "code": "%"},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
            for value in (31.5, 140)
        ],
    }
    response = http.post("/fhir", json=batch, headers=headers)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "422"
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    with db.factory() as session:
        fetal = session.scalars(
            select(Observation.value_quantity).where(Observation.code == "4576-5")
        )
        assert [str(value) for value in fetal] == ["31.5000"]


def test_another_centers_client_cannot_write_about_the_patient(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    own = _token(db, clock, http)
    created = http.post("/fhir", json=enrolment_bundle(), headers=own)
    patient_ref = created.json()["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]
    other = _token(db, clock, http, center_name=FRONT_RANGE)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": T0.date().isoformat(),
        "valueQuantity": {"value": 11, "unit": "g/dL", "system": UCUM, "code": "g/dL"},
    }
    refused = http.post("/fhir/Observation", json=observation, headers=other)
    assert refused.status_code == 422
    assert refused.json()["resourceType"] == "OperationOutcome"
    patient_id = patient_ref.split("/")[1]
    update = http.put(
        f"/fhir/Patient/{patient_id}",
        json={
            "resourceType": "Patient",
            "id": patient_id,
            "identifier": [{"system": MEDICAID_MD, "value": "MDT0000001"}],
            "name": [{"family": "Taken", "given": ["Over"]}],
            "birthDate": "2008-03-14",
        },
        headers=other,
    )
    assert update.status_code == 404
    with db.factory() as session:
        patient = session.get(Patient, int(patient_id))
        assert patient is not None and patient.family_name == "Rivera"


def test_create_update_and_if_match(db: Database, http: TestClient, clock: FrozenClock) -> None:
    headers = _token(db, clock, http)
    created = http.post("/fhir", json=enrolment_bundle(), headers=headers)
    location = created.json()["entry"][0]["response"]["location"]
    patient_id = location.split("/")[1]
    patient = {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": MEDICAID_MD, "value": "MDT0000001"}],
        "name": [{"use": "official", "family": "Rivera-Soto", "given": ["Ana", "Luz"]}],
        "birthDate": "2008-03-14",
    }
    stale = http.put(
        f"/fhir/Patient/{patient_id}", json=patient, headers={**headers, "If-Match": 'W/"7"'}
    )
    assert stale.status_code == 412
    current = created.json()["entry"][0]["response"]["etag"]
    changed = http.put(
        f"/fhir/Patient/{patient_id}", json=patient, headers={**headers, "If-Match": current}
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] == 'W/"2"'
    assert changed.json()["meta"]["versionId"] == "2"
    same = http.put(f"/fhir/Patient/{patient_id}", json=patient, headers=headers)
    assert same.headers["etag"] == 'W/"2"'  # the same content: no new version
    with db.factory() as session:
        stored = session.get(Patient, int(patient_id))
        assert stored is not None
        assert stored.family_name == "Rivera-Soto"
        assert stored.infusion_date == INFUSED  # FHIR's Patient does not carry it: kept
        assert stored.mobile_phone is None  # the update had no telecom


def test_conditional_create_and_update_by_identifier(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    http.post("/fhir", json=enrolment_bundle(), headers=headers)
    query = f"identifier={MEDICAID_MD}|MDT0000001"
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": MEDICAID_MD, "value": "MDT0000001"}],
        "name": [{"family": "Rivera", "given": ["Ana"]}],
        "birthDate": "2008-03-14",
    }
    exists = http.post("/fhir/Patient", json=patient, headers={**headers, "If-None-Exist": query})
    assert exists.status_code == 200
    updated = http.put(f"/fhir/Patient?{query}", json=patient, headers=headers)
    assert updated.status_code == 200, updated.text
    with db.factory() as session:
        assert (
            session.scalar(
                select(func.count(Patient.id)).where(Patient.medicaid_id == "MDT0000001")
            )
            == 1
        )
    new = dict(patient, identifier=[{"system": MEDICAID_MD, "value": "MDT0000002"}])
    created = http.put(
        f"/fhir/Patient?identifier={MEDICAID_MD}|MDT0000002",
        json={**new, "extension": [_therapy_extension()]},
        headers=headers,
    )
    assert created.status_code == 201, created.text


def _therapy_extension() -> dict[str, Any]:
    return {
        "url": "https://cgt-access.org/fhir/StructureDefinition/therapy",
        "valueCodeableConcept": {"coding": [{"system": THERAPY_SYSTEM, "code": "lyfgenia"}]},
    }


def test_what_the_adapter_does_not_take_is_named(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    response = http.post(
        "/fhir/Immunization",
        json={
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": {"text": "flu"},
            "patient": {"reference": "Patient/1"},
            "occurrenceDateTime": "2026-01-01",
        },
        headers=headers,
    )
    assert response.status_code == 422
    assert "Patient, RelatedPerson, Procedure" in response.json()["issue"][0]["diagnostics"]


def test_an_unknown_therapy_code_is_named_at_its_procedure(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    bundle = enrolment_bundle()
    bundle["entry"][1]["resource"]["code"] = {
        "coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": "00000-0000-00"}]
    }
    response = http.post("/fhir", json=bundle, headers=headers)
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.code"]
    assert "does not name a therapy" in issue["diagnostics"]
