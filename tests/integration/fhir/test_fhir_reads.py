"""Reading back what a center sent, and what the platform made of it (the schedule as
Appointments and a CarePlan, a completed visit as an Encounter, the infusion as a
Procedure): every resource served is valid R4 by the same validation as inbound data, and
only the center's own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordination.followup.models import FollowUpPlan, Visit, VisitStatus
from core.clock import FrozenClock
from core.models import CaregiverLink, Condition, Observation
from fhir_adapter.validation import validate_resource
from tests.conftest import Database
from tests.integration.fhir.test_fhir_writes import _token, enrolment_bundle
from tests.support.smart import FRONT_RANGE


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _enrolled(db: Database, http: TestClient, headers: dict[str, str]) -> int:
    bundle = enrolment_bundle()
    bundle["entry"].append(
        {
            "resource": {
                "resourceType": "RelatedPerson",
                "patient": {"reference": bundle["entry"][0]["fullUrl"]},
                "relationship": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                "code": "MTH",
                            }
                        ]
                    }
                ],
                "name": [{"family": "Rivera", "given": ["Marta"]}],
                "telecom": [{"system": "phone", "value": "+1 410 555 0143", "use": "mobile"}],
            },
            "request": {"method": "POST", "url": "RelatedPerson"},
        }
    )
    response = http.post("/fhir", json=bundle, headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["entry"][0]["response"]["location"].split("/")[1])


def test_every_resource_served_is_valid_r4_and_carries_its_version(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    patient_id = _enrolled(db, http, headers)
    with db.factory() as session:
        visits = session.scalars(select(Visit).where(Visit.patient_id == patient_id)).all()
        completed = next(visit.id for visit in visits if visit.status is VisitStatus.COMPLETED)
        open_visit = next(visit.id for visit in visits if visit.status is VisitStatus.DUE)
        plan = session.scalar(select(FollowUpPlan.id).where(FollowUpPlan.patient_id == patient_id))
        observation = session.scalar(
            select(Observation.id).where(Observation.patient_id == patient_id)
        )
        condition = session.scalar(select(Condition.id).where(Condition.patient_id == patient_id))
        link = session.scalar(
            select(CaregiverLink.id).where(CaregiverLink.patient_id == patient_id)
        )
        planned_for = session.scalar(select(FollowUpPlan.patient_id).where(FollowUpPlan.id == plan))
    assert planned_for == patient_id
    paths = [
        f"Patient/{patient_id}",
        f"Procedure/{patient_id}",
        f"Observation/{observation}",
        f"Condition/{condition}",
        f"RelatedPerson/{link}",
        f"Appointment/{completed}",
        f"Appointment/{open_visit}",
        f"Encounter/{completed}",
        f"CarePlan/{plan}",
    ]
    for path in paths:
        response = http.get(f"/fhir/{path}", headers=headers)
        assert response.status_code == 200, (path, response.text)
        resource = response.json()
        result = validate_resource(resource, expected_type=path.split("/")[0])
        assert result.errors == (), (path, [issue.as_json() for issue in result.errors])
        assert response.headers["etag"] == f'W/"{resource["meta"]["versionId"]}"'
        assert "last-modified" in response.headers
    patient = http.get(f"/fhir/Patient/{patient_id}", headers=headers).json()
    assert patient["identifier"][0]["value"] == "MDT0000001"
    assert patient["communication"][0]["language"]["coding"][0]["code"] == "es"
    appointment = http.get(f"/fhir/Appointment/{open_visit}", headers=headers).json()
    assert appointment["status"] == "proposed" and appointment["requestedPeriod"]
    care_plan = http.get(f"/fhir/CarePlan/{plan}", headers=headers).json()
    assert len(care_plan["activity"]) == len(visits)
    procedure = http.get(f"/fhir/Procedure/{patient_id}", headers=headers).json()
    assert procedure["status"] == "completed" and procedure["performedDateTime"]
    not_modified = http.get(
        f"/fhir/Patient/{patient_id}",
        headers={**headers, "If-None-Match": f'W/"{patient["meta"]["versionId"]}"'},
    )
    assert not_modified.status_code == 304


def test_another_centers_records_read_as_unknown(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    patient_id = _enrolled(db, http, _token(db, clock, http))
    other = _token(db, clock, http, center_name=FRONT_RANGE)
    for path in (f"Patient/{patient_id}", f"Procedure/{patient_id}", "Group/1"):
        response = http.get(f"/fhir/{path}", headers=other)
        assert response.status_code == 404, path
        assert response.json()["resourceType"] == "OperationOutcome"
