"""What admins configure is what the FHIR API speaks: a state's Medicaid identifier system
is the one a center's Patient must carry (and reads serve), a center's record-number system
finds its patients, a therapy's configured code is what an infusion Procedure may name it
by (and reads serve), and a removed code is refused again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import Patient, State, Therapy, TherapyCode, TreatmentCenter
from core.reference import set_medicaid_system, set_mrn_system
from core.therapy_codes import (
    HCPCS,
    PLATFORM_SYSTEM,
    TherapyCodeInput,
    add_therapy_code,
    remove_therapy_code,
)
from tests.conftest import T0, Database
from tests.support.smart import HARBORVIEW, CenterSystem, register

FHIR_JSON = {"Content-Type": "application/fhir+json"}
DEFAULT_MEDICAID_MD = "https://cgt-access.org/fhir/sid/medicaid/md"
MEDICAID_MD = "urn:oid:2.16.840.1.113883.19.5.24"
MRN_HARBORVIEW = "https://harborview.example/fhir/sid/mrn"
INFUSED = T0.date() - timedelta(days=20)
SETUP = Actor.system("test-setup")
JSON = dict[str, Any]


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _headers(db: Database, clock: FrozenClock, http: TestClient) -> dict[str, str]:
    center = CenterSystem.generate("ES384")
    register(db, clock, center=center, scopes="system/*.cruds")
    return {"Authorization": f"Bearer {center.token(http, clock, scope='system/*.cruds')}"}


def _configure(db: Database, clock: FrozenClock) -> None:
    """What Maryland's admin sets up: the state's and Harborview's identifier systems, and
    Casgevy's HCPCS code."""
    with transaction(db.factory) as session:
        maryland = session.scalar(select(State).where(State.code == "MD"))
        harbor = session.scalar(select(TreatmentCenter).where(TreatmentCenter.name == HARBORVIEW))
        casgevy = session.scalar(select(Therapy).where(Therapy.code == "casgevy"))
        assert maryland is not None and harbor is not None and casgevy is not None
        set_medicaid_system(session, clock=clock, actor=SETUP, state=maryland, system=MEDICAID_MD)
        set_mrn_system(session, clock=clock, actor=SETUP, center=harbor, system=MRN_HARBORVIEW)
        add_therapy_code(
            session,
            clock=clock,
            actor=SETUP,
            data=TherapyCodeInput(therapy_id=str(casgevy.id), system=HCPCS, code="J3392"),
        )


def _bundle(medicaid_system: str, *, therapy: tuple[str, str] = (HCPCS, "J3392")) -> JSON:
    patient = f"urn:uuid:{uuid.uuid4()}"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [
                        {"system": medicaid_system, "value": "MDC0000777"},
                        {"system": MRN_HARBORVIEW, "value": "HV-20417"},
                    ],
                    "name": [{"family": "Okafor", "given": ["Tobi"]}],
                    "birthDate": "2009-06-02",
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Procedure",
                    "status": "completed",
                    "code": {"coding": [{"system": therapy[0], "code": therapy[1]}]},
                    "subject": {"reference": patient},
                    "performedDateTime": INFUSED.isoformat(),
                },
                "request": {"method": "POST", "url": "Procedure"},
            },
        ],
    }


def test_a_configured_medicaid_system_and_therapy_code_are_what_the_api_speaks(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    _configure(db, clock)
    headers = {**_headers(db, clock, http), **FHIR_JSON}

    # The platform's default no longer names Maryland's Medicaid IDs: the center is told
    # which system to send.
    refused = http.post("/fhir", json=_bundle(DEFAULT_MEDICAID_MD), headers=headers)
    assert refused.status_code == 422, refused.text
    issue = refused.json()["issue"][0]
    assert MEDICAID_MD in issue["diagnostics"]
    assert issue["expression"][0].startswith("Bundle.entry[0].resource")

    created = http.post("/fhir", json=_bundle(MEDICAID_MD), headers=headers)
    assert created.status_code == 200, created.text
    patient_id = int(created.json()["entry"][0]["response"]["location"].split("/")[1])
    with db.factory() as session:
        patient = session.get(Patient, patient_id)
        assert patient is not None
        assert (patient.medicaid_id, patient.center_mrn) == ("MDC0000777", "HV-20417")
        assert patient.therapy.code == "casgevy"  # named by its HCPCS code alone
        assert patient.infusion_date == INFUSED

    # Reads serve the configured systems and the therapy's codes.
    read = http.get(f"/fhir/Patient/{patient_id}", headers=headers)
    assert read.status_code == 200, read.text
    assert {(i["system"], i["value"]) for i in read.json()["identifier"]} == {
        (MEDICAID_MD, "MDC0000777"),
        (MRN_HARBORVIEW, "HV-20417"),
    }
    procedure = http.get(f"/fhir/Procedure/{patient_id}", headers=headers)
    assert procedure.status_code == 200, procedure.text
    codings = {(c["system"], c["code"]) for c in procedure.json()["code"]["coding"]}
    assert codings == {(PLATFORM_SYSTEM, "casgevy"), (HCPCS, "J3392")}

    # The record-number system finds the patient: a conditional create creates nothing.
    again = http.post(
        "/fhir/Patient",
        json=_bundle(MEDICAID_MD)["entry"][0]["resource"],
        headers={**headers, "If-None-Exist": f"identifier={MRN_HARBORVIEW}|HV-20417"},
    )
    assert again.status_code == 200, again.text
    assert again.headers["location"].split("/")[-3] == str(patient_id)


def test_a_removed_therapy_code_no_longer_names_the_therapy(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    _configure(db, clock)
    headers = {**_headers(db, clock, http), **FHIR_JSON}
    # The platform's own code is always accepted.
    own = http.post(
        "/fhir", json=_bundle(MEDICAID_MD, therapy=(PLATFORM_SYSTEM, "casgevy")), headers=headers
    )
    assert own.status_code == 200, own.text
    patient_ref = own.json()["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]

    def infusion(code: str, day: date = INFUSED) -> JSON:
        return {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"coding": [{"system": HCPCS, "code": code}]},
            "subject": {"reference": patient_ref},
            "performedDateTime": day.isoformat(),
        }

    accepted = http.post("/fhir/Procedure", json=infusion("J3392"), headers=headers)
    assert accepted.status_code in (200, 201), accepted.text
    never = http.post("/fhir/Procedure", json=infusion("J3394"), headers=headers)
    assert never.status_code == 422, never.text
    issue = never.json()["issue"][0]
    assert "configure its NDC, RxNorm or HCPCS code" in issue["diagnostics"]
    assert issue["expression"] == ["Procedure.code"]

    with transaction(db.factory) as session:
        code_id = session.scalar(select(TherapyCode.id).where(TherapyCode.code == "J3392"))
        remove_therapy_code(session, clock=clock, actor=SETUP, code_id=str(code_id))
    # (The same content resent is the record it became, whatever changed since: a new
    # infusion day is new content.)
    corrected = infusion("J3392", INFUSED + timedelta(days=1))
    removed = http.post("/fhir/Procedure", json=corrected, headers=headers)
    assert removed.status_code == 422, removed.text
    # Reads no longer serve the removed code either.
    procedure_url = "/fhir/Procedure/" + patient_ref.rsplit("/", 1)[1]
    served = http.get(procedure_url, headers=headers).json()["code"]["coding"]
    assert served == [{"system": PLATFORM_SYSTEM, "code": "casgevy", "display": "Casgevy"}]
