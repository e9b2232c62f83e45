"""The write path under abuse: broken resources and Bundles, resources that are valid FHIR but
break the platform's rules, transactions with one bad entry, the same data sent twice, and
another center trying to reach a center's patient by every door. Every answer is an
OperationOutcome with a 4xx (or the 200/201 of what is valid), never a 500 or HTML, and a
refused request stores nothing."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from coordination.followup.models import Visit, VisitObservation, VisitStatus
from core.clock import FrozenClock
from core.models import CaregiverLink, Condition, Observation, Patient
from fhir_adapter.mapping.patients import THERAPY_EXTENSION, THERAPY_SYSTEM
from fhir_adapter.models import ResourceIdentifier, ResourceKey
from tests.conftest import Database
from tests.factories import building
from tests.integration.fhir.test_fhir_writes import (
    INFUSED,
    LOINC,
    MEDICAID_MD,
    UCUM,
    _token,
    enrolment_bundle,
)
from tests.support.fhir_examples import all_examples
from tests.support.fhir_strategies import broken_bundles, broken_examples
from tests.support.smart import FRONT_RANGE

# A second center in Maryland: same state, same Medicaid IDs, not the same patients.
CHESAPEAKE = "Chesapeake Children's Hospital"
ENROLLED_MEDICAID = "MDR0000001"
LAB = "https://lab.harborview.example.org/accession"
ROLE_CODES = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
DAY_30 = INFUSED + timedelta(days=30)  # inside the day-30 visit's window
BETWEEN_WINDOWS = INFUSED + timedelta(days=60)  # after day 30's window, before day 100's


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def own(db: Database, clock: FrozenClock, http: TestClient) -> dict[str, str]:
    """Harborview's system (Maryland), allowed everything."""
    return _token(db, clock, http)


@pytest.fixture
def enrolled(http: TestClient, own: dict[str, str]) -> str:
    """Harborview's patient (`Patient/<id>`), enrolled with its infusion 40 days ago."""
    response = http.post("/fhir", json=enrolment_bundle(ENROLLED_MEDICAID), headers=own)
    assert response.status_code == 200, response.text
    return str(response.json()["entry"][0]["response"]["location"].rsplit("/_history", 1)[0])


@pytest.fixture
def other(db: Database, clock: FrozenClock, http: TestClient) -> dict[str, str]:
    """The system of another Maryland center, allowed everything."""
    with building(db.factory, clock) as make:
        make.center(make.state("MD"), name=CHESAPEAKE)
    return _token(db, clock, http, center_name=CHESAPEAKE)


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _rows(db: Database) -> dict[str, int]:
    """How many rows a write could have added, by table."""
    tables: dict[str, Any] = {
        "patients": Patient,
        "observations": Observation,
        "conditions": Condition,
        "caregiver links": CaregiverLink,
        "visits": Visit,
        "visit observations": VisitObservation,
        "resource keys": ResourceKey,
        "resource identifiers": ResourceIdentifier,
    }
    with db.factory() as session:
        counts = {
            name: session.scalar(select(func.count()).select_from(table)) or 0
            for name, table in tables.items()
        }
        counts["completed visits"] = (
            session.scalar(
                select(func.count(Visit.id)).where(Visit.status == VisitStatus.COMPLETED)
            )
            or 0
        )
    return counts


def _outcome(response: Response, status: int) -> dict[str, Any]:
    """The OperationOutcome a refusal carries, as FHIR JSON."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], "an OperationOutcome has issues"
    return body


def _answered_well(response: Response) -> dict[str, Any]:
    """Any answer of the write path: FHIR JSON, 2xx or 4xx, an OperationOutcome when refused."""
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/fhir+json"), response.text
    body: dict[str, Any] = response.json()
    if response.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome"
        assert all(issue["severity"] in ("error", "fatal", "warning") for issue in body["issue"])
    return body


def _location_id(response: Response) -> str:
    return str(response.headers["location"].split("/_history")[0].rsplit("/", 1)[1])


# --- resources valid in FHIR that break the platform's rules -----------------------------


def _hemoglobin(subject: str, value: float, unit: str = "g/dL") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": DAY_30.isoformat(),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def _patient(medicaid: str | None, *, therapy: bool = True) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Okafor", "given": ["Jude"]}],
        "birthDate": "2009-05-02",
    }
    if medicaid is not None:
        resource["identifier"] = [{"system": MEDICAID_MD, "value": medicaid}]
    if therapy:
        resource["extension"] = [
            {
                "url": THERAPY_EXTENSION,
                "valueCodeableConcept": {"coding": [{"system": THERAPY_SYSTEM, "code": "casgevy"}]},
            }
        ]
    return resource


def _front_range_patient(db: Database) -> str:
    """A patient of Colorado's center (the demo world's)."""
    from core.models import TreatmentCenter

    with db.factory() as session:
        patient_id = session.scalar(
            select(Patient.id)
            .join(TreatmentCenter, TreatmentCenter.id == Patient.center_id)
            .where(TreatmentCenter.name == FRONT_RANGE)
            .limit(1)
        )
    assert patient_id is not None
    return f"Patient/{patient_id}"


def _encounter(subject: str, start: str) -> dict[str, Any]:
    """A finished visit that began at `start`."""
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": subject},
        "period": {"start": start},
    }


def _breaking(subject: str, db: Database) -> dict[str, tuple[dict[str, Any], str, str]]:
    """Valid FHIR that the platform refuses: name -> (resource, element named, words)."""
    return {
        "unknown therapy code": (
            {
                "resourceType": "Procedure",
                "status": "completed",
                "code": {"coding": [{"system": THERAPY_SYSTEM, "code": "zolgensma"}]},
                "subject": {"reference": subject},
                "performedDateTime": INFUSED.isoformat(),
            },
            "Procedure.code",
            "therapy",
        ),
        "another center's patient": (
            _hemoglobin(_front_range_patient(db), 11.0),
            "Observation.subject",
            "not one of your resources",
        ),
        "out-of-range value": (_hemoglobin(subject, 40), "Observation.value", "3 to 25"),
        "wrong unit": (_hemoglobin(subject, 109, "g/L"), "Observation.valueQuantity", "g/dL"),
        "an Encounter outside every window": (
            _encounter(subject, BETWEEN_WINDOWS.isoformat()),
            "Encounter.period",
            "window",
        ),
        "a Patient without the Medicaid ID": (
            _patient(None),
            "Patient.identifier",
            "Medicaid",
        ),
        "a Patient without a therapy": (
            _patient("MDR0000077", therapy=False),
            "Patient.extension",
            "therapy",
        ),
    }


BREAKING = [
    "unknown therapy code",
    "another center's patient",
    "out-of-range value",
    "wrong unit",
    "an Encounter outside every window",
    "a Patient without the Medicaid ID",
    "a Patient without a therapy",
]


@pytest.mark.parametrize("case", BREAKING)
def test_what_breaks_the_platforms_rules_is_a_422_naming_the_element(
    db: Database, http: TestClient, own: dict[str, str], enrolled: str, case: str
) -> None:
    resource, element, words = _breaking(enrolled, db)[case]
    before = _rows(db)

    response = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=own)

    issues = _outcome(response, 422)["issue"]
    named = [issue for issue in issues if any(e.startswith(element) for e in issue["expression"])]
    assert named, issues
    assert words.lower() in " ".join(issue["diagnostics"] for issue in named).lower()
    assert _rows(db) == before


@pytest.mark.parametrize("case", BREAKING)
def test_a_transaction_with_one_bad_entry_stores_nothing(
    db: Database, http: TestClient, own: dict[str, str], enrolled: str, case: str
) -> None:
    bundle = enrolment_bundle("MDR0000002")
    patient_url = bundle["entry"][0]["fullUrl"]
    resource, element, _words = _breaking(patient_url, db)[case]
    if resource["resourceType"] == "Patient":
        # The bad Patient stands alone (with its Procedure it would get its therapy).
        bundle["entry"] = [bundle["entry"][0]]
        bundle["entry"][0]["resource"] = resource
        index = 0
    else:
        bundle["entry"].append(
            {
                "fullUrl": _urn(),
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
        index = len(bundle["entry"]) - 1
    before = _rows(db)

    response = http.post("/fhir", json=bundle, headers=own)

    issues = _outcome(response, 422)["issue"]
    expected = f"Bundle.entry[{index}].resource" + element.removeprefix(resource["resourceType"])
    assert any(e.startswith(expected) for issue in issues for e in issue["expression"]), issues
    assert _rows(db) == before


# --- the same data twice stores once ---------------------------------------------------------


def _every_kind_bundle(medicaid: str) -> dict[str, Any]:
    """A transaction with every kind of resource the adapter maps: the patient and its
    infusion, a caregiver, a diagnosis, a finished visit, a vital sign without identifiers,
    and a lab result created only if none has its identifier (`ifNoneExist`)."""
    bundle = enrolment_bundle(medicaid)
    patient = bundle["entry"][0]["fullUrl"]
    extra = [
        {
            "resourceType": "RelatedPerson",
            "patient": {"reference": patient},
            "relationship": [{"coding": [{"system": ROLE_CODES, "code": "MTH"}]}],
            "name": [{"family": "Rivera", "given": ["Marta"]}],
            "telecom": [{"system": "phone", "value": "+1 410 555 0143", "use": "mobile"}],
        },
        _encounter(patient, DAY_30.isoformat()),
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
            "subject": {"reference": patient},
            "effectiveDateTime": DAY_30.isoformat(),
            "valueQuantity": {"value": 72, "unit": "/min", "system": UCUM, "code": "/min"},
        },
    ]
    for resource in extra:
        bundle["entry"].append(
            {
                "fullUrl": _urn(),
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
    fetal = {
        "resourceType": "Observation",
        "identifier": [{"system": LAB, "value": f"{medicaid}-HBF"}],
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "4576-5"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": DAY_30.isoformat(),
        "valueQuantity": {"value": 31.5, "unit": "%", "system": UCUM, "code": "%"},
    }
    bundle["entry"].append(
        {
            "fullUrl": _urn(),
            "resource": fetal,
            "request": {
                "method": "POST",
                "url": "Observation",
                "ifNoneExist": f"identifier={LAB}|{medicaid}-HBF",
            },
        }
    )
    return bundle


def test_the_same_transaction_of_every_kind_twice_stores_once(
    db: Database, http: TestClient, own: dict[str, str]
) -> None:
    first = http.post("/fhir", json=_every_kind_bundle("MDR0000003"), headers=own)
    assert first.status_code == 200, first.text
    assert {entry["response"]["status"] for entry in first.json()["entry"]} == {"201 Created"}
    stored = _rows(db)
    assert stored["caregiver links"] >= 1 and stored["completed visits"] >= 1

    again = http.post("/fhir", json=_every_kind_bundle("MDR0000003"), headers=own)  # new urns

    assert again.status_code == 200, again.text
    assert [entry["response"]["status"] for entry in again.json()["entry"]] == ["200 OK"] * len(
        first.json()["entry"]
    )
    assert [entry["response"]["location"] for entry in again.json()["entry"]] == [
        entry["response"]["location"] for entry in first.json()["entry"]
    ]
    assert _rows(db) == stored


@pytest.mark.parametrize("kind", ["RelatedPerson", "Condition", "Encounter", "Observation"])
def test_the_same_resource_twice_is_one_record(
    db: Database, http: TestClient, own: dict[str, str], enrolled: str, kind: str
) -> None:
    bundle = _every_kind_bundle("MDR0000004")
    resource = [
        copy.deepcopy(entry["resource"])
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == kind and "identifier" not in entry["resource"]
    ][-1]  # (not the enrolment's own result or diagnosis: those are stored already)
    for key in ("subject", "patient"):
        if key in resource:
            resource[key] = {"reference": enrolled}
    if kind == "Condition":
        resource["code"]["coding"][0]["code"] = "D57.00"

    first = http.post(f"/fhir/{kind}", json=resource, headers=own)
    assert first.status_code == 201, first.text
    stored = _rows(db)
    again = http.post(f"/fhir/{kind}", json=resource, headers=own)

    assert again.status_code == 200, again.text
    assert _location_id(again) == _location_id(first)
    assert again.headers["etag"] == first.headers["etag"]
    assert _rows(db) == stored


def test_if_none_exist_creates_once(
    db: Database, http: TestClient, own: dict[str, str], enrolled: str
) -> None:
    fetal = next(
        entry["resource"]
        for entry in _every_kind_bundle("MDR0000005")["entry"]
        if "identifier" in entry["resource"] and entry["resource"]["resourceType"] == "Observation"
    )
    fetal["subject"] = {"reference": enrolled}
    condition = {"If-None-Exist": f"identifier={LAB}|MDR0000005-HBF"}

    first = http.post("/fhir/Observation", json=fetal, headers={**own, **condition})
    assert first.status_code == 201, first.text
    stored = _rows(db)
    changed = dict(fetal, valueQuantity={**fetal["valueQuantity"], "value": 12.5})
    again = http.post("/fhir/Observation", json=changed, headers={**own, **condition})

    assert again.status_code == 200, again.text  # it exists: nothing is created or changed
    assert _location_id(again) == _location_id(first)
    assert _rows(db) == stored
    with db.factory() as session:
        value = session.scalar(
            select(Observation.value_quantity).where(Observation.id == int(_location_id(first)))
        )
    assert value is not None and float(value) == 31.5


# --- another center cannot reach the patient ---------------------------------------------


def _unchanged(db: Database, patient_ref: str) -> None:
    with db.factory() as session:
        patient = session.get(Patient, int(patient_ref.split("/")[1]))
        assert patient is not None
        assert (patient.family_name, patient.given_name, patient.version_id) == (
            "Rivera",
            "Ana Luz",
            1,
        )


def _reveals_nothing(response: Response, patient_ref: str, *, sent: str = "") -> None:
    """Nothing about the patient that the client did not send itself: not the id, the name,
    nor the center."""
    text = response.text.replace(sent, "") if sent else response.text
    for detail in (patient_ref, patient_ref.split("/")[1], "Rivera", "Ana", "Harborview"):
        assert detail not in text, f"{detail!r} in {text}"


def test_another_center_cannot_enrol_the_patient_again_by_its_medicaid_id(
    db: Database, http: TestClient, enrolled: str, other: dict[str, str]
) -> None:
    before = _rows(db)
    taken = dict(_patient(ENROLLED_MEDICAID), name=[{"family": "Taken", "given": ["Over"]}])

    response = http.post("/fhir/Patient", json=taken, headers=other)

    _outcome(response, response.status_code)
    assert 400 <= response.status_code < 500
    _reveals_nothing(response, enrolled)
    _unchanged(db, enrolled)
    assert _rows(db) == before


def test_another_center_cannot_update_the_patient_by_a_known_identifier(
    db: Database, http: TestClient, enrolled: str, other: dict[str, str]
) -> None:
    before = _rows(db)
    taken = dict(_patient(ENROLLED_MEDICAID), name=[{"family": "Taken", "given": ["Over"]}])
    query = f"identifier={MEDICAID_MD}|{ENROLLED_MEDICAID}"

    conditional = http.put(f"/fhir/Patient?{query}", json=taken, headers=other)
    if_none_exist = http.post(
        "/fhir/Patient", json=taken, headers={**other, "If-None-Exist": query}
    )

    for response in (conditional, if_none_exist):
        _outcome(response, response.status_code)
        assert 400 <= response.status_code < 500
        _reveals_nothing(response, enrolled)
    _unchanged(db, enrolled)
    assert _rows(db) == before


def test_another_center_cannot_update_the_patient_by_id(
    db: Database, http: TestClient, enrolled: str, other: dict[str, str]
) -> None:
    patient_id = enrolled.split("/")[1]
    taken = dict(_patient(ENROLLED_MEDICAID), id=patient_id)

    response = http.put(f"/fhir/Patient/{patient_id}", json=taken, headers=other)
    batch = http.post(
        "/fhir",
        json={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"resource": taken, "request": {"method": "PUT", "url": f"Patient/{patient_id}"}}
            ],
        },
        headers=other,
    )

    _outcome(response, 404)
    assert batch.status_code == 200, batch.text
    assert batch.json()["entry"][0]["response"]["status"] == "404"
    _unchanged(db, enrolled)


def _conditional(medicaid: str) -> str:
    return f"Patient?identifier={MEDICAID_MD}|{medicaid}"


@pytest.mark.parametrize("reference", ["by id", "by identifier"])
def test_another_center_cannot_write_about_the_patient_by_reference(
    db: Database,
    http: TestClient,
    own: dict[str, str],
    enrolled: str,
    other: dict[str, str],
    reference: str,
) -> None:
    subject = enrolled if reference == "by id" else _conditional(ENROLLED_MEDICAID)
    result = _hemoglobin(subject, 11.0)
    caregiver = next(
        entry["resource"]
        for entry in _every_kind_bundle("MDR0000006")["entry"]
        if entry["resource"]["resourceType"] == "RelatedPerson"
    )
    caregiver["patient"] = {"reference": subject}
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": _urn(), "resource": resource, "request": {"method": "POST", "url": kind}}
            for resource, kind in ((result, "Observation"), (caregiver, "RelatedPerson"))
        ],
    }
    before = _rows(db)

    alone = http.post("/fhir/Observation", json=result, headers=other)
    inside = http.post("/fhir", json=transaction, headers=other)

    for response in (alone, inside):
        _outcome(response, 422)
        _reveals_nothing(response, enrolled, sent=subject)
    # The refusal says what it would say of a patient nobody has.
    nobody = "Patient/999999" if reference == "by id" else _conditional("MDZ9999999")
    refused_for_nobody = http.post(
        "/fhir/Observation", json=_hemoglobin(nobody, 11.0), headers=other
    )
    _outcome(refused_for_nobody, 422)
    assert alone.text.replace(subject, nobody) == refused_for_nobody.text
    assert _rows(db) == before
    # The center whose patient it is writes the same, by the same reference.
    assert http.post("/fhir/Observation", json=result, headers=own).status_code == 201
    assert http.post("/fhir", json=transaction, headers=own).status_code == 200


# --- hypothesis: broken resources and Bundles -----------------------------------------------

FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _retargeted(resource: Any, subject: str) -> Any:
    """The resource with its references to a patient pointed at `subject` (so that more of
    them get past the references to the mapping)."""
    if isinstance(resource, dict):
        copied = {key: _retargeted(value, subject) for key, value in resource.items()}
        reference = copied.get("reference")
        if isinstance(reference, str) and reference.startswith(("Patient/", "urn:uuid:")):
            copied["reference"] = subject
        return copied
    if isinstance(resource, list):
        return [_retargeted(item, subject) for item in resource]
    return resource


WRITES = ["create", "update by id", "conditional update"]


def _send(
    http: TestClient, headers: dict[str, str], how: str, resource: Any, patient: str
) -> Response:
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    kind = kind if isinstance(kind, str) and kind.isalpha() else "Patient"
    response: Response
    if how == "create":
        response = http.post(f"/fhir/{kind}", json=resource, headers=headers)
    elif how == "update by id":
        response = http.put(f"/fhir/{kind}/{patient.split('/')[1]}", json=resource, headers=headers)
    else:
        query = f"identifier={MEDICAID_MD}|{ENROLLED_MEDICAID}"
        response = http.put(f"/fhir/{kind}?{query}", json=resource, headers=headers)
    return response


@FUZZ
@given(
    resource=broken_examples(),
    how=st.sampled_from(WRITES),
    retarget=st.booleans(),
)
def test_broken_resources_get_a_4xx_outcome_and_store_nothing(
    db: Database,
    http: TestClient,
    own: dict[str, str],
    enrolled: str,
    resource: dict[str, Any],
    how: str,
    retarget: bool,
) -> None:
    if retarget:
        resource = _retargeted(resource, enrolled)
    before = _rows(db)

    response = _send(http, own, how, resource, enrolled)

    event(f"{how}: {response.status_code}")
    _answered_well(response)
    if response.status_code >= 400:
        assert _rows(db) == before


@FUZZ
@given(bundle=broken_bundles(), retarget=st.booleans())
def test_broken_bundles_get_a_4xx_outcome_and_store_nothing(
    db: Database,
    http: TestClient,
    own: dict[str, str],
    enrolled: str,
    bundle: dict[str, Any],
    retarget: bool,
) -> None:
    if retarget:
        bundle = _retargeted(bundle, enrolled)
    before = _rows(db)

    response = http.post("/fhir", json=bundle, headers=own)

    event(f"{bundle.get('type')}: {response.status_code}")
    body = _answered_well(response)
    if response.status_code >= 400:
        assert _rows(db) == before
    elif body.get("type") == "batch-response":
        for entry in body["entry"]:
            status = entry["response"]["status"]
            assert status[:1] in ("2", "4"), entry
            if status.startswith("4"):
                assert entry["response"]["outcome"]["resourceType"] == "OperationOutcome"
    else:
        assert body["type"] == "transaction-response"


# --- hypothesis: valid-looking resources with odd values -----------------------------------

_ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "x" * 300,
        "Patient/1",
        "Patient/999999999999",
        f"Patient?identifier={MEDICAID_MD}|{ENROLLED_MEDICAID}",
        "urn:uuid:3f2b9c1e-5c1a-4f5e-9a7e-2d4b6c8e0f11",
        "2026-02-30",
        "1900-01-01",
        "2999-12-31",
        "2026-11-27T25:00:00Z",
        "entered-in-error",
        "cancelled",
        "unknown",
        "g/L",
        "%",
        "{events}",
        "casgevy",
        "D57.1",
        "718-7",
        "es",
        "Ünïcødé ✓",
        "\u0000",
    ]
) | st.text(max_size=20)
_DATE = st.dates().map(lambda day: day.isoformat()) | st.datetimes(
    timezones=st.sampled_from([None])
).map(lambda moment: moment.isoformat(timespec="seconds") + "Z")


def _odd_like(value: Any) -> st.SearchStrategy[Any]:
    """A value of the same JSON type as `value` (a date where it is a date)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-(2**40), max_value=2**40)
    if isinstance(value, float):
        return st.floats(allow_nan=False, allow_infinity=False, width=32) | st.sampled_from(
            [0.0, -1.0, 1e-9, 99999999999.0]
        )
    if isinstance(value, str) and len(value) >= 10 and value[4:5] == "-" and value[:4].isdigit():
        return _DATE | _ODD_TEXT
    return _ODD_TEXT


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    elif path and path[-1] != "resourceType":
        yield path


def _baselines(subject: str) -> list[dict[str, Any]]:
    """Resources the platform takes, one of each kind, about `subject`."""
    found = []
    bundle = _every_kind_bundle("MDR0000009")
    for entry in bundle["entry"]:
        resource = _retargeted(copy.deepcopy(entry["resource"]), subject)
        if resource["resourceType"] == "Patient":
            resource = _patient("MDR0000009")
        found.append(resource)
    return found


@st.composite
def odd_values(draw: st.DrawFn, subject: str) -> dict[str, Any]:
    """A resource the platform takes with one to three of its values replaced by values of
    the same JSON type: valid FHIR more often than not, odd for the platform."""
    resource = copy.deepcopy(draw(st.sampled_from(_baselines(subject))))
    leaves = list(_leaves(resource))
    for path in draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=3, unique=True)):
        parent: Any = resource
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = draw(_odd_like(parent[path[-1]]))
    drawn: dict[str, Any] = resource
    return drawn


@FUZZ
@given(data=st.data(), how=st.sampled_from(WRITES))
def test_odd_values_get_a_4xx_outcome_or_are_kept_whole(
    db: Database,
    http: TestClient,
    own: dict[str, str],
    enrolled: str,
    data: st.DataObject,
    how: str,
) -> None:
    resource = data.draw(odd_values(enrolled))
    before = _rows(db)

    response = _send(http, own, how, resource, enrolled)

    event(f"{how} {resource['resourceType']}: {response.status_code}")
    body = _answered_well(response)
    if response.status_code >= 400:
        assert _rows(db) == before
    else:
        assert body["resourceType"] == resource["resourceType"]


@FUZZ
@given(data=st.data())
def test_a_transaction_with_an_odd_entry_is_all_or_nothing(
    db: Database,
    http: TestClient,
    own: dict[str, str],
    enrolled: str,
    data: st.DataObject,
) -> None:
    medicaid = f"MDH{uuid.uuid4().int % 10**7:07d}"
    bundle = _every_kind_bundle(medicaid)
    patient_url = bundle["entry"][0]["fullUrl"]
    odd = data.draw(odd_values(patient_url))
    if odd["resourceType"] == "Patient":
        bundle["entry"][0]["resource"] = odd
    else:
        bundle["entry"].append(
            {
                "fullUrl": _urn(),
                "resource": odd,
                "request": {"method": "POST", "url": odd["resourceType"]},
            }
        )
    before = _rows(db)

    response = http.post("/fhir", json=bundle, headers=own)

    event(f"{odd['resourceType']}: {response.status_code}")
    body = _answered_well(response)
    if response.status_code >= 400:
        assert _rows(db) == before
        return
    assert [entry["response"]["status"][:3] for entry in body["entry"]] != []
    assert all(entry["response"]["status"][:1] == "2" for entry in body["entry"])
    assert _rows(db)["patients"] in (before["patients"], before["patients"] + 1)


# --- values no record can hold -------------------------------------------------------------


def _heart_rate(subject: str, **changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": DAY_30.isoformat(),
        "valueQuantity": {"value": 72, "unit": "/min", "system": UCUM, "code": "/min"},
    }
    resource.update(changes)
    return resource


def _coded(subject: str, system: str, code: str) -> dict[str, Any]:
    return _heart_rate(
        subject,
        code={"coding": [{"system": LOINC, "code": "72166-2"}]},
        valueQuantity=None,
        valueCodeableConcept={"coding": [{"system": system, "code": code}]},
    )


UNHOLDABLE: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "a unit longer than any unit": (
        lambda subject: _heart_rate(
            subject,
            code={"coding": [{"system": LOINC, "code": "2345-7"}]},
            valueQuantity={"value": 90, "unit": "mg/dL" * 10, "system": UCUM, "code": "x" * 40},
        ),
        "Observation.valueQuantity",
    ),
    "a coded value's long code": (
        lambda subject: _coded(subject, "http://snomed.info/sct", "8" * 100),
        "Observation.value",
    ),
    "a coded value's long system": (
        lambda subject: _coded(subject, "http://example.org/" + "s" * 200, "8517006"),
        "Observation.value",
    ),
    "the first instant FHIR can write, east of Greenwich": (
        lambda subject: (
            _hemoglobin(subject, 11.0) | {"effectiveDateTime": "0001-01-01T00:00:00+14:00"}
        ),
        "Observation.effective",
    ),
    "a result on the first day of year 1": (
        lambda subject: _hemoglobin(subject, 11.0) | {"effectiveDateTime": "0001-01-01T01:00:00Z"},
        "Observation.effective",
    ),
    "a result in year 9999": (
        lambda subject: (
            _hemoglobin(subject, 11.0) | {"effectiveDateTime": "9999-12-31T23:00:00-12:00"}
        ),
        "Observation.effective",
    ),
    "an Encounter in year 1": (
        lambda subject: _encounter(subject, "0001-01-01T00:30:00+14:00"),
        "Encounter.period",
    ),
    "an identifier longer than any kept": (
        lambda subject: _heart_rate(subject, identifier=[{"system": LAB, "value": "7" * 300}]),
        "Observation.identifier",
    ),
}


@pytest.mark.parametrize("case", list(UNHOLDABLE))
def test_values_no_record_can_hold_are_a_422(
    db: Database, http: TestClient, own: dict[str, str], enrolled: str, case: str
) -> None:
    build, element = UNHOLDABLE[case]
    resource = {key: value for key, value in build(enrolled).items() if value is not None}
    before = _rows(db)

    response = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=own)

    issues = _outcome(response, 422)["issue"]
    assert any(e.startswith(element) for issue in issues for e in issue["expression"]), issues
    assert _rows(db) == before


@pytest.mark.parametrize("kind", ["transaction", "batch"])
@pytest.mark.parametrize("target", ["Observation/99999999999999999999", "Patient/123456789012"])
def test_ids_no_record_can_have_are_unknown(
    db: Database, http: TestClient, own: dict[str, str], enrolled: str, kind: str, target: str
) -> None:
    resource = _heart_rate(enrolled)
    if target.startswith("Patient"):
        resource["subject"] = {"reference": target}
        request = {"method": "POST", "url": "Observation"}
    else:
        resource["id"] = target.split("/")[1]
        request = {"method": "PUT", "url": target}
    before = _rows(db)

    response = http.post(
        "/fhir",
        json={
            "resourceType": "Bundle",
            "type": kind,
            "entry": [{"fullUrl": _urn(), "resource": resource, "request": request}],
        },
        headers=own,
    )

    body = _answered_well(response)
    if kind == "transaction":
        assert 400 <= response.status_code < 500
    else:
        assert body["entry"][0]["response"]["status"][:1] == "4"
    assert _rows(db) == before


def test_control_characters_are_refused_where_they_are(
    db: Database, http: TestClient, own: dict[str, str], enrolled: str
) -> None:
    """FHIR strings hold no control characters but tab, CR and LF (and PostgreSQL cannot
    store U+0000 at all): a 400 naming the element, the batch's other entries kept."""
    broken = _patient("MDR0000010")
    broken["name"][0]["family"] = "Oka\x00for"
    before = _rows(db)

    alone = http.post("/fhir/Patient", json=broken, headers=own)
    transaction = enrolment_bundle("MDR0000011")
    transaction["entry"][2]["resource"]["valueQuantity"]["unit"] = "g/dL\x07"
    inside = http.post("/fhir", json=transaction, headers=own)

    issues = _outcome(alone, 400)["issue"]
    assert [issue["expression"] for issue in issues] == [["Patient.name[0].family"]]
    issues = _outcome(inside, 400)["issue"]
    assert ["Bundle.entry[2].resource.valueQuantity.unit"] in [i["expression"] for i in issues]
    assert _rows(db) == before

    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": broken, "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": _heart_rate(enrolled),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = http.post("/fhir", json=batch, headers=own)

    assert response.status_code == 200, response.text
    statuses = [entry["response"]["status"] for entry in response.json()["entry"]]
    assert statuses == ["400", "201 Created"]
    assert _rows(db)["patients"] == before["patients"]
    assert _rows(db)["observations"] == before["observations"] + 1


# --- the public examples ---------------------------------------------------------------------

MAPPED_TYPES = ("Patient", "RelatedPerson", "Procedure", "Observation", "Encounter", "Condition")


def _as_the_platform_requires(resource: dict[str, Any], patient: str, number: int) -> Any:
    """An example given what the platform requires of it: a Patient gets the state's
    Medicaid identifier and a therapy; references to a patient point at `patient` (enrolled
    here); an Encounter's dates fall in that patient's day-30 visit window."""
    resource = _to_patient(copy.deepcopy(resource), patient)
    for key in ("subject", "patient"):
        if isinstance(resource.get(key), dict):
            resource[key] = {"reference": patient}
    kind = resource["resourceType"]
    if kind == "Patient":
        resource["identifier"] = [
            *resource.get("identifier", []),
            {"system": MEDICAID_MD, "value": f"MDX{number:07d}"},
        ]
        resource["extension"] = [*resource.get("extension", []), *_patient("")["extension"]]
    if kind == "Encounter":
        resource["period"] = {"start": f"{DAY_30.isoformat()}T10:00:00-05:00"}
    return resource


def _to_patient(value: Any, patient: str) -> Any:
    """`value` with its `Patient/...` references pointed at `patient`."""
    if isinstance(value, dict):
        copied = {key: _to_patient(item, patient) for key, item in value.items()}
        if str(copied.get("reference", "")).startswith("Patient/"):
            copied["reference"] = patient
        return copied
    if isinstance(value, list):
        return [_to_patient(item, patient) for item in value]
    return value


def _import_outcome(response: Response) -> str:
    """`201`, or the status and the first error's diagnostics (what a reader needs)."""
    body = _answered_well(response)
    if response.status_code < 400:
        return str(response.status_code)
    error = next(issue for issue in body["issue"] if issue["severity"] in ("error", "fatal"))
    return f"{response.status_code} {error['diagnostics']}"


SYNTHEA = "Bundle/synthea-transaction-clemente-kreiger.json"
SYNTHEA_PATIENTS = "ndjson/synthea-bulk-Patient.000.ndjson"
SYNTHEA_PROCEDURES = "ndjson/synthea-bulk-Procedure.first20.ndjson"
NOT_YOURS = "is not in this request and is not one of your resources"
# What the examples come to, besides a 201 (created, and the same again is a 200 that
# changes nothing): 422 with these words, or 200 where an example is a record an earlier
# example made.
EXAMPLE_OUTCOMES: dict[str, dict[str, str]] = {
    "Patient": {
        # Its MR-typed identifier (12345) is the record number of an earlier example patient.
        "Bundle/deqm-bundle-transaction-mrp-submit-obs.json#entry[1]": (
            "422 Another patient at this center has this record number."
        ),
        # Synthea's record numbers are UUIDs: 36 characters where the record keeps 32.
        f"{SYNTHEA}#entry[0]": "422 Use at most 32 characters.",
        **{f"{SYNTHEA_PATIENTS}:{line}": "422 Use at most 32 characters." for line in range(1, 14)},
    },
    "RelatedPerson": {},
    "Procedure": {
        # None is the infusion of a therapy the platform follows; most refer to an Encounter
        # or an Observation that is not on this server (the platform keeps those types, so a
        # reference to one must name the center's own).
        "Procedure/core-procedure-ambulation-not-done.json": (
            f"422 Observation/blood-pressure {NOT_YOURS}"
        ),
        "Procedure/core-procedure-example.json": "422 The code does not name a therapy",
        "Procedure/core-procedure-f201-chemotherapy.json": f"422 Encounter/f202 {NOT_YOURS}",
        "Procedure/uscore-procedure-defib-implant.json": f"422 Encounter/example-1 {NOT_YOURS}",
        f"{SYNTHEA}#entry[64]": "422 The code does not name a therapy",
        **{f"{SYNTHEA_PROCEDURES}:{line}": "422 Encounter/" for line in range(1, 21)},
    },
    "Observation": {
        "Observation/core-abdo-tender-valueboolean.json": f"422 Encounter/example {NOT_YOURS}",
        "Observation/core-decimal-components.json": "422 The resource must name its patient.",
        # The same identifier as core-lab-cancelled-dataabsent-unsat: that record, updated.
        "Observation/core-lab-glucose-f001.json": "200",
        # The same identifier as core-vitals-blood-pressure-dataabsent: that record, updated.
        "Observation/core-vitals-blood-pressure.json": "200",
        "Observation/core-vitals-panel-hasmember.json": (
            f"422 Observation/respiratory-rate {NOT_YOURS}"
        ),
        "Observation/uscore-survey-phq9-panel-44249-1.json": (
            f"422 Observation/PHQ9-item-example-44250-9 {NOT_YOURS}"
        ),
        "Observation/uscore-vitals-bp-data-absent.json": f"422 Encounter/1036 {NOT_YOURS}",
        **{
            f"Bundle/core-bundle-collection-lipids.json#entry[{index}]": (
                "422 The Observation needs when it holds"
            )
            for index in range(1, 5)
        },
        "Bundle/deqm-bundle-transaction-mrp-submit-obs.json#entry[2]": (
            f"422 Encounter/encounter01 {NOT_YOURS}"
        ),
    },
    "Encounter": {
        "Encounter/core-encounter-example.json": "422 Only a finished Encounter is kept here",
        "Encounter/uscore-encounter-1036.json": "422 Only a finished Encounter is kept here",
        # Once their dates are in the window, the same content as entry[3]: that record.
        f"{SYNTHEA}#entry[25]": "200",
        f"{SYNTHEA}#entry[41]": "200",
    },
    "Condition": {
        "Condition/uscore-condition-encounter-diagnosis-example1.json": (
            f"422 Encounter/example-1 {NOT_YOURS}"
        ),
    },
}


@pytest.mark.parametrize("kind", MAPPED_TYPES)
def test_the_public_examples_import_once_given_what_the_platform_requires(
    db: Database, http: TestClient, own: dict[str, str], enrolled: str, kind: str
) -> None:
    """Each public example of a type the adapter maps, given what the platform requires
    (`_as_the_platform_requires`), is imported (201; sent again, a 200 naming the same
    record) or refused with a 422 saying why, as EXAMPLE_OUTCOMES lists."""
    outcomes: dict[str, str] = {}
    for number, found in enumerate(all_examples()):
        if found.resource_type != kind:
            continue
        resource = _as_the_platform_requires(found.resource, enrolled, number)
        before = _rows(db)
        first = http.post(f"/fhir/{kind}", json=resource, headers=own)
        outcomes[found.name] = _import_outcome(first)
        if first.status_code == 201:
            again = http.post(f"/fhir/{kind}", json=resource, headers=own)
            assert again.status_code == 200, again.text
            assert _location_id(again) == _location_id(first)
        elif first.status_code >= 400:
            assert _rows(db) == before, found.name

    expected = EXAMPLE_OUTCOMES[kind]
    assert {name for name, outcome in outcomes.items() if outcome != "201"} == set(expected)
    for name, words in expected.items():
        assert outcomes[name].startswith(words), (name, outcomes[name])
