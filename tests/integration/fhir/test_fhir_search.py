"""Searching the FHIR API as a treatment center's system does: every parameter and prefix,
paging by links that carry no PHI while data keeps arriving, `_include` and `_revinclude`,
`Patient/[id]/$everything`, and never a record of another center by any path. Every Bundle
the server returns passes the same validation as inbound data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordination.followup.models import Visit, VisitStatus
from core.audit.models import AuditEvent
from core.clock import FrozenClock
from core.db import transaction
from fhir_adapter.search_types import SEARCH_TYPES
from fhir_adapter.validation import validate_resource
from tests.conftest import T0, Database
from tests.integration.fhir.test_fhir_writes import FHIR_JSON, LOINC, _token
from tests.integration.fhir.test_fhir_writes import enrolment_bundle as _enrolment_bundle
from tests.support.smart import FRONT_RANGE, HARBORVIEW, CenterSystem, center_id, register

BASE = "http://testserver/fhir"
MEDICAID_MD = "https://cgt-access.org/fhir/sid/medicaid/md"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
UNITS = {"718-7": "g/dL", "4576-5": "%"}  # hemoglobin, fetal hemoglobin


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


# --- making data through the write path ---------------------------------------------------

_numbers = iter(range(10, 100))


def _enrol(
    db: Database,
    http: TestClient,
    headers: dict[str, str],
    medicaid: str,
    *,
    family: str = "Rivera",
    given: tuple[str, ...] = ("Ana", "Luz"),
    birth: str = "2008-03-14",
    mrn: str | None = None,
    caregiver: bool = False,
) -> int:
    """A patient enrolled by a transaction (infusion, a hemoglobin result, a diagnosis)."""
    bundle = _enrolment_bundle(medicaid)
    patient = bundle["entry"][0]["resource"]
    patient["name"] = [{"use": "official", "family": family, "given": list(given)}]
    patient["birthDate"] = birth
    patient["telecom"] = [{"system": "phone", "value": f"+1 410 555 01{next(_numbers)}"}]
    if mrn is not None:
        system = f"https://cgt-access.org/fhir/sid/mrn/center-{center_id(db, HARBORVIEW)}"
        patient["identifier"].append({"system": system, "value": mrn})
    if caregiver:
        bundle["entry"].append(
            {
                "resource": {
                    "resourceType": "RelatedPerson",
                    "patient": {"reference": bundle["entry"][0]["fullUrl"]},
                    "relationship": [{"text": "mother"}],
                    "name": [{"family": family, "given": ["Marta"]}],
                },
                "request": {"method": "POST", "url": "RelatedPerson"},
            }
        )
    response = http.post("/fhir", json=bundle, headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["entry"][0]["response"]["location"].split("/")[1])


def _observe(
    http: TestClient,
    headers: dict[str, str],
    patient_id: int,
    results: list[tuple[str, str, float]],
) -> list[int]:
    """Observations of a patient by transaction: (LOINC code, effective instant, value)."""
    entries = []
    for code, when, value in results:
        unit = UNITS[code]
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": code}]},
                    "subject": {"reference": f"Patient/{patient_id}"},
                    "effectiveDateTime": when,
                    "valueQuantity": {
                        "value": value,
                        "unit": unit,
                        "system": "http://unitsofmeasure.org",
                        "code": unit,
                    },
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = http.post("/fhir", json=bundle, headers=headers)
    assert response.status_code == 200, response.text
    return [int(e["response"]["location"].split("/")[1]) for e in response.json()["entry"]]


# --- reading answers -------------------------------------------------------------------------


def _valid_bundle(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle: dict[str, Any] = response.json()
    result = validate_resource(bundle, expected_type="Bundle")
    assert result.errors == (), [issue.as_json() for issue in result.errors]
    assert bundle["type"] == "searchset"
    for link in bundle["link"]:
        assert link["url"].startswith(BASE + "/")
    return bundle


def _search(http: TestClient, headers: dict[str, str], query: str) -> dict[str, Any]:
    return _valid_bundle(http.get(f"/fhir/{query}", headers=headers))


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[int]:
    return [
        int(entry["resource"]["id"])
        for entry in bundle.get("entry", [])
        if entry["search"]["mode"] == mode
    ]


def _typed(bundle: dict[str, Any], mode: str = "match") -> list[tuple[str, int]]:
    return [
        (entry["resource"]["resourceType"], int(entry["resource"]["id"]))
        for entry in bundle.get("entry", [])
        if entry["search"]["mode"] == mode
    ]


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    found = [link["url"] for link in bundle["link"] if link["relation"] == relation]
    return found[0].removeprefix("http://testserver") if found else None


def _outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


def _walk(http: TestClient, headers: dict[str, str], query: str) -> list[dict[str, Any]]:
    pages = [_search(http, headers, query)]
    while (following := _link(pages[-1], "next")) is not None:
        pages.append(_valid_bundle(http.get(following, headers=headers)))
        assert len(pages) < 100
    return pages


# --- Patient ---------------------------------------------------------------------------------


@pytest.fixture
def family(db: Database, http: TestClient, clock: FrozenClock) -> dict[str, Any]:
    """Three patients a minute apart: Ana Luz Zephyrine (2008-03-14, with an MRN), Bruno
    Zephyrine-Okafor (2010-07-01), Mar Zephyrine Quixley (1999-12-31)."""
    headers = _token(db, clock, http)
    ana = _enrol(db, http, headers, "MDZ0000001", family="Zephyrine", mrn="MRN-Z1")
    clock.advance(timedelta(minutes=1))
    bruno = _enrol(
        db,
        http,
        headers,
        "MDZ0000002",
        family="Zephyrine-Okafor",
        given=("Bruno",),
        birth="2010-07-01",
    )
    clock.advance(timedelta(minutes=1))
    mar = _enrol(
        db,
        http,
        headers,
        "MDZ0000003",
        family="Quixley",
        given=("Mar", "Zephyrine"),
        birth="1999-12-31",
    )
    return {"headers": headers, "ana": ana, "bruno": bruno, "mar": mar}


def _patients(http: TestClient, family: dict[str, Any], query: str) -> set[str]:
    """Which of the three the search finds (narrowed to them by name)."""
    names = {family["ana"]: "ana", family["bruno"]: "bruno", family["mar"]: "mar"}
    bundle = _search(http, family["headers"], f"Patient?name=zephyrine&{query}")
    return {names[found] for found in _ids(bundle)}


BIRTHDATES = [
    ("birthdate=2008-03-14", {"ana"}),
    ("birthdate=eq2008-03-14", {"ana"}),
    ("birthdate=2008", {"ana"}),
    ("birthdate=2008-03", {"ana"}),
    ("birthdate=ne2008-03-14", {"bruno", "mar"}),
    ("birthdate=lt2008-03-14", {"mar"}),
    ("birthdate=le2008-03-14", {"ana", "mar"}),
    ("birthdate=gt2008-03-14", {"bruno"}),
    ("birthdate=ge2008-03-14", {"ana", "bruno"}),
    ("birthdate=sa2008-03-14", {"bruno"}),
    ("birthdate=eb2008-03-14", {"mar"}),
    ("birthdate=ge2000&birthdate=lt2009", {"ana"}),
    ("birthdate=1999-12-31,2010-07-01", {"bruno", "mar"}),
    ("birthdate=2008-03-14T10:00Z", set()),  # a minute inside the day: not the whole day
    ("birthdate=le2008-03-14T10:00Z", {"ana", "mar"}),
]


def test_birthdate_with_each_prefix(http: TestClient, family: dict[str, Any]) -> None:
    found = {query: _patients(http, family, query) for query, _ in BIRTHDATES}
    assert found == dict(BIRTHDATES)


NAMES = [
    ("", {"ana", "bruno", "mar"}),  # family Zephyrine..., or a second given name
    ("name=ZEPH", {"ana", "bruno", "mar"}),
    ("name=luz", {"ana"}),  # the second given name
    ("name=bru", {"bruno"}),
    ("name=okafor", set()),  # starts-with, not contains
    ("name:contains=okafor", {"bruno"}),
    ("name:exact=Zephyrine", {"ana", "mar"}),  # a whole name part as written
    ("name:exact=zephyrine", set()),
    ("name=quix,bruno", {"bruno", "mar"}),
]


def test_name_starts_with_any_part_ignoring_case(http: TestClient, family: dict[str, Any]) -> None:
    found = {query: _patients(http, family, query) for query, _ in NAMES}
    assert found == dict(NAMES)


def test_identifier_by_system_and_value(
    db: Database, http: TestClient, family: dict[str, Any]
) -> None:
    mrn_system = f"https://cgt-access.org/fhir/sid/mrn/center-{center_id(db, HARBORVIEW)}"
    assert _patients(http, family, f"identifier={MEDICAID_MD}|MDZ0000002") == {"bruno"}
    assert _patients(http, family, "identifier=MDZ0000003") == {"mar"}
    assert _patients(http, family, "identifier=mdz0000003") == {"mar"}  # Medicaid IDs: any case
    assert _patients(http, family, f"identifier={mrn_system}|MRN-Z1") == {"ana"}
    assert _patients(http, family, "identifier=MRN-Z1") == {"ana"}
    assert _patients(http, family, f"identifier={mrn_system}|") == {"ana"}
    assert _patients(http, family, "identifier=https://elsewhere.example|MDZ0000002") == set()
    assert _patients(http, family, "identifier=|MDZ0000002") == set()
    assert _patients(http, family, f"identifier={MEDICAID_MD}|MDZ0000001,MDZ0000003") == {
        "ana",
        "mar",
    }


def test_last_updated_and_id(http: TestClient, family: dict[str, Any]) -> None:
    half_past = (T0 + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _patients(http, family, f"_lastUpdated=gt{half_past}") == {"bruno", "mar"}
    assert _patients(http, family, f"_lastUpdated=lt{half_past}") == {"ana"}
    assert _patients(http, family, "_lastUpdated=2026-11-27T15:01Z") == {"bruno"}
    assert _patients(http, family, "_lastUpdated=ge2026-11-27T16:01:00%2B01:00") == {
        "bruno",
        "mar",
    }
    assert _patients(http, family, "_lastUpdated=2026-11-27") == {"ana", "bruno", "mar"}
    assert _patients(http, family, f"_id={family['bruno']},{family['mar']}") == {"bruno", "mar"}
    assert _patients(http, family, "_id=not-ours") == set()


def test_sorting_by_last_updated(http: TestClient, family: dict[str, Any]) -> None:
    headers = family["headers"]
    order = [family["ana"], family["bruno"], family["mar"]]
    newest_first = _search(http, headers, "Patient?name=zephyrine&_sort=-_lastUpdated")
    assert _ids(newest_first) == order[::-1]
    oldest_first = _search(http, headers, "Patient?name=zephyrine&_sort=_lastUpdated")
    assert _ids(oldest_first) == order


# --- Observation -----------------------------------------------------------------------------


@pytest.fixture
def results(db: Database, http: TestClient, clock: FrozenClock) -> dict[str, Any]:
    """A patient with four results: the enrolment's hemoglobin (2026-11-17), hemoglobin on
    October 1st and 15th at 10:00Z, fetal hemoglobin on October 15th at 12:00Z."""
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDR0000001")
    first, second, fetal = _observe(
        http,
        headers,
        patient,
        [
            ("718-7", "2026-10-01T10:00:00Z", 10.1),
            ("718-7", "2026-10-15T10:00:00Z", 10.5),
            ("4576-5", "2026-10-15T12:00:00Z", 30.0),
        ],
    )
    everything = _ids(_search(http, headers, f"Observation?patient={patient}"))
    (enrolment,) = set(everything) - {first, second, fetal}
    return {
        "headers": headers,
        "patient": patient,
        "enrolment": enrolment,
        "first": first,
        "second": second,
        "fetal": fetal,
    }


def _observations(http: TestClient, results: dict[str, Any], query: str) -> set[str]:
    names = {results[name]: name for name in ("enrolment", "first", "second", "fetal")}
    bundle = _search(http, results["headers"], f"Observation?patient={results['patient']}&{query}")
    assert bundle["total"] == len(_ids(bundle))
    return {names[found] for found in _ids(bundle)}


ALL_FOUR = {"enrolment", "first", "second", "fetal"}
HEMOGLOBIN = {"enrolment", "first", "second"}


OBSERVATION_QUERIES = [
    ("", ALL_FOUR),
    ("code=718-7", HEMOGLOBIN),
    (f"code={LOINC}|718-7", HEMOGLOBIN),
    (f"code={LOINC}|", ALL_FOUR),
    ("code=http://snomed.info/sct|718-7", set()),
    ("code=|718-7", set()),
    ("code=718-7,4576-5", ALL_FOUR),
    ("code=4576-5&code=718-7", set()),  # repeated: AND
    ("date=2026-10-15", {"second", "fetal"}),
    ("date=2026-10", {"first", "second", "fetal"}),
    ("date=lt2026-10-15", {"first"}),
    ("date=le2026-10-15", {"first", "second", "fetal"}),
    ("date=gt2026-10-15", {"enrolment"}),
    ("date=ge2026-10-15T11:00Z", {"fetal", "enrolment"}),
    ("date=2026-10-15T10:00Z", {"second"}),
    ("date=2026-10-15T06:00-04:00", {"second"}),  # the same minute in Baltimore
    ("date=ne2026-10-15", {"first", "enrolment"}),
    ("date=sa2026-10-31", {"enrolment"}),
    ("date=eb2026-10-02", {"first"}),
    ("date=ge2026-10-01&date=lt2026-10-15T12:00Z", {"first", "second"}),
    ("status=final", ALL_FOUR),
    ("status=http://hl7.org/fhir/observation-status|final", ALL_FOUR),
    ("status=entered-in-error", set()),
]


def test_observation_by_code_date_and_status(http: TestClient, results: dict[str, Any]) -> None:
    found = {query: _observations(http, results, query) for query, _ in OBSERVATION_QUERIES}
    assert found == dict(OBSERVATION_QUERIES)


def test_observation_by_patient_in_every_form(http: TestClient, results: dict[str, Any]) -> None:
    headers, patient = results["headers"], results["patient"]
    forms = [
        f"patient={patient}",
        f"patient=Patient/{patient}",
        f"patient={BASE}/Patient/{patient}",
        f"subject={patient}",
        f"subject:Patient=Patient/{patient}",
    ]
    for form in forms:
        bundle = _search(http, headers, f"Observation?{form}")
        assert len(_ids(bundle)) == 4, form
    chains = [
        f"patient.identifier={MEDICAID_MD}|MDR0000001",
        "patient.identifier=MDR0000001",
        "subject:Patient.identifier=MDR0000001",
        "patient.name=rivera&patient.birthdate=2008-03-14",
    ]
    for chain in chains:
        bundle = _search(http, headers, f"Observation?{chain}")
        assert sorted(_ids(bundle)) == sorted(
            _ids(_search(http, headers, f"Observation?patient={patient}"))
        ), chain
    assert _ids(_search(http, headers, "Observation?patient.identifier=MDR0000002")) == []
    assert _ids(_search(http, headers, "Observation?patient.name:exact=rivera")) == []
    refused = http.get("/fhir/Observation?patient.organization=x", headers=headers)
    assert _outcome(refused, 400)["issue"][0]["code"] == "not-supported"
    assert _ids(_search(http, headers, "Observation?patient=Group/1")) == []
    assert _ids(_search(http, headers, "Observation?patient=99999999999")) == []


def test_observation_id_last_updated_and_sort(
    http: TestClient, results: dict[str, Any], clock: FrozenClock
) -> None:
    headers, patient = results["headers"], results["patient"]
    clock.advance(timedelta(minutes=1))
    (later,) = _observe(http, headers, patient, [("718-7", "2026-11-27T09:00:00Z", 11.0)])
    since = (T0 + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _ids(
        _search(http, headers, f"Observation?patient={patient}&_lastUpdated=gt{since}")
    ) == [later]
    picked = _search(http, headers, f"Observation?_id={results['first']},{results['fetal']},abc")
    assert sorted(_ids(picked)) == sorted([results["first"], results["fetal"]])
    by_date = _ids(_search(http, headers, f"Observation?patient={patient}&_sort=date"))
    assert by_date == [
        results["first"],
        results["second"],
        results["fetal"],
        results["enrolment"],
        later,
    ]
    newest = _ids(_search(http, headers, f"Observation?patient={patient}&_sort=-date"))
    assert newest == by_date[::-1]


# --- the other types -------------------------------------------------------------------------


def test_each_type_by_patient(db: Database, http: TestClient, clock: FrozenClock) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDT0000009", caregiver=True)
    with db.factory() as session:
        visits = list(session.scalars(select(Visit).where(Visit.patient_id == patient)))
    completed = [visit.id for visit in visits if visit.status is VisitStatus.COMPLETED]
    found = {
        name: _search(http, headers, f"{name}?patient={patient}")
        for name in (
            "Procedure",
            "Condition",
            "RelatedPerson",
            "Encounter",
            "Appointment",
            "CarePlan",
        )
    }
    assert _ids(found["Procedure"]) == [patient]  # the infusion's id is the patient's
    assert len(_ids(found["Condition"])) == 1
    assert len(_ids(found["RelatedPerson"])) == 1
    assert _ids(found["Encounter"]) == completed and completed
    assert sorted(_ids(found["Appointment"])) == sorted(visit.id for visit in visits)
    assert len(_ids(found["CarePlan"])) == 1
    for bundle in found.values():
        assert bundle["total"] == len(bundle["entry"])
        for entry in bundle["entry"]:
            reference = entry["resource"].get("subject") or entry["resource"].get("patient")
            actors = [p["actor"] for p in entry["resource"].get("participant", [])]
            assert (reference or actors[0])["reference"] == f"Patient/{patient}"
    condition = f"Condition?patient={patient}&code="
    assert len(_ids(_search(http, headers, condition + "D57.1"))) == 1
    assert len(_ids(_search(http, headers, condition + f"{ICD10}|D57.1"))) == 1
    assert _ids(_search(http, headers, condition + "D57.0")) == []


def test_appointments_by_date_and_status(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDT0000010")
    with transaction(db.factory) as session:
        visits = list(
            session.scalars(
                select(Visit).where(Visit.patient_id == patient).order_by(Visit.target_date)
            )
        )
        due = next(v for v in visits if v.status is VisitStatus.DUE)
        booked = next(v for v in visits if v.status is VisitStatus.DUE and v.id != due.id)
        day = booked.window_start + timedelta(days=2)
        booked.status = VisitStatus.SCHEDULED
        booked.appointment_at = datetime(day.year, day.month, day.day, 15, tzinfo=UTC)
        window = (due.window_start, due.window_end)
        completed = next(v.id for v in visits if v.status is VisitStatus.COMPLETED)
        due_id, booked_id = due.id, booked.id

    def found(query: str) -> set[int]:
        return set(_ids(_search(http, headers, f"Appointment?patient={patient}&{query}")))

    # Unbooked: the window is the appointment's date.
    assert due_id in found(f"date=ge{window[0]}&date=le{window[1]}")
    assert due_id not in found(f"date=lt{window[0]}")
    assert due_id not in found(f"date=gt{window[1]}")
    assert due_id not in found(f"date=sa{window[1]}")
    assert due_id in found(f"date=sa{window[0] - timedelta(days=1)}")
    # Booked: its start (a day inside a window that spans many).
    assert booked_id in found(f"date={day}")
    assert booked_id not in found(f"date={day + timedelta(days=1)}")
    assert booked_id in found(f"date=ge{day}T14:00Z&date=lt{day}T16:00Z")
    assert found("status=booked") == {booked_id}
    assert found("status=fulfilled") == {completed}
    assert due_id in found("status=proposed") and booked_id not in found("status=proposed")
    assert found("status=fulfilled,booked") == {completed, booked_id}
    encounters = f"Encounter?patient={patient}&date="
    with db.factory() as session:
        visit = session.get(Visit, completed)
        assert visit is not None and visit.completed_on is not None
        done = visit.completed_on
    assert _ids(_search(http, headers, encounters + f"{done}")) == [completed]
    assert _ids(_search(http, headers, encounters + f"ne{done}")) == []
    assert _ids(_search(http, headers, encounters + f"{done.year}")) == [completed]


# --- refusals ---------------------------------------------------------------------------------


MALFORMED = [
    ("Patient?birthdate=2026-13-40", "invalid", "birthdate"),
    ("Patient?birthdate=2026-02-30", "invalid", "not a date that exists"),
    ("Patient?birthdate=xx2026", "invalid", "not a prefix"),
    ("Patient?birthdate=ap2026", "not-supported", "'ap'"),
    ("Patient?birthdate=26-01-01", "invalid", "not a FHIR date"),
    ("Observation?date=2026-10-15T25:00Z", "invalid", "date"),
    ("Observation?_lastUpdated=2026-10-15T10:00%2B15:00", "invalid", "_lastUpdated"),
    ("Observation?code=a|b|c", "invalid", "system|code"),
    ("Observation?status=bogus", "invalid", "not a status"),
    ("Patient?name:phonetic=ana", "not-supported", "modifier"),
    ("Observation?code:text=hemoglobin", "not-supported", "modifier"),
    ("Patient?_count=ten", "invalid", "_count"),
    ("Patient?_count=-1", "invalid", "_count"),
    ("Patient?_sort=birthdate", "not-supported", "_sort"),
    ("Patient?_sort=_id,_lastUpdated", "not-supported", "_sort"),
    ("Patient?_total=maybe", "invalid", "_total"),
    ("Observation?_include=Observation:performer", "not-supported", "_include"),
    ("Observation?_include:iterate=Observation:patient", "not-supported", "iterate"),
    ("Observation?_revinclude=Condition:patient", "not-supported", "_revinclude"),
    ("Patient?_cursor=not-a-cursor", "invalid", "_cursor"),
]


def test_malformed_values_are_400_naming_the_parameter(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    for query, code, says in MALFORMED:
        outcome = _outcome(http.get(f"/fhir/{query}", headers=headers), 400)
        issue = outcome["issue"][0]
        assert (issue["code"], says in issue["diagnostics"]) == (code, True), (query, issue)


def test_unknown_parameters_are_ignored_and_named_unless_strict(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    lenient = _search(http, headers, "Patient?gender=female&_elements=name&_count=1")
    outcomes = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    said = " ".join(issue["diagnostics"] for issue in outcomes[0]["resource"]["issue"])
    assert "gender" in said and "_elements" in said and "female" not in said
    assert len(_ids(lenient)) == 1
    # The next page says so too.
    following = _link(lenient, "next")
    assert following is not None
    again = _valid_bundle(http.get(following, headers=headers))
    assert [e["search"]["mode"] for e in again["entry"]][-1] == "outcome"
    strict = http.get(
        "/fhir/Patient?gender=female", headers={**headers, "Prefer": "handling=strict"}
    )
    assert "gender" in _outcome(strict, 400)["issue"][0]["diagnostics"]
    lenient_header = http.get(
        "/fhir/Patient?gender=female", headers={**headers, "Prefer": "handling=lenient"}
    )
    assert lenient_header.status_code == 200


def test_types_not_searched_are_404(db: Database, http: TestClient, clock: FrozenClock) -> None:
    headers = _token(db, clock, http)
    assert (
        "not an R4"
        in _outcome(http.get("/fhir/Visit", headers=headers), 404)["issue"][0]["diagnostics"]
    )
    said = _outcome(http.get("/fhir/Group", headers=headers), 404)["issue"][0]["diagnostics"]
    assert "not searched here" in said and "Observation" in said


RESULT_PARAMETERS = ("_count", "_sort", "_total", "_include", "_revinclude", "_summary", "_cursor")
# What broke routes before (see test_route_fuzz): digits int() refuses or reads oddly, numbers
# past any database integer, NUL (PostgreSQL cannot hold one), very long text, stray syntax.
ODD_VALUES = [
    "²",
    "٣",
    "9" * 30,
    "-1",
    "\x00",
    "x" * 5000,
    "|",
    "a|b|c",
    ",",
    "\\",
    "Patient/",
    "ge",
    "lt2026-01-01T25:61Z",
    "☃",
]


def test_no_odd_value_in_any_parameter_is_a_5xx(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    # Each parameter once (`_id` and `_lastUpdated` read the same way on every type).
    asked = [("Patient", name) for name in SEARCH_TYPES["Patient"].params]
    asked += [("Patient", name) for name in RESULT_PARAMETERS]
    asked += [
        (kind, name)
        for kind, spec in SEARCH_TYPES.items()
        if kind != "Patient"
        for name in spec.params
        if not name.startswith("_")
    ]
    failures = []
    for kind, parameter in asked:
        for value in ODD_VALUES:
            response = http.get(
                f"/fhir/{kind}", params={parameter: value, "_count": "1"}, headers=headers
            )
            if response.status_code >= 500 or "resourceType" not in response.json():
                failures.append(f"{kind}?{parameter}={value[:12]!r}: {response.status_code}")
    for parameter in ("_since", "_type", "_count", "_cursor"):
        for value in ODD_VALUES:
            response = http.get(
                "/fhir/Patient/1/$everything", params={parameter: value}, headers=headers
            )
            if response.status_code >= 500:
                failures.append(f"$everything?{parameter}={value[:12]!r}: {response.status_code}")
    assert failures == []


# --- paging ----------------------------------------------------------------------------------


def test_pages_keep_their_total_and_miss_nothing_while_results_arrive(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDP0000001")
    start = datetime(2026, 9, 1, 10, tzinfo=UTC)
    _observe(
        http,
        headers,
        patient,
        [("718-7", (start + timedelta(days=n)).isoformat(), 10 + n / 10) for n in range(23)],
    )
    query = f"Observation?patient={patient}&code=718-7&_count=5"
    first = _search(http, headers, query)
    assert first["total"] == 24 and len(_ids(first)) == 5
    assert _link(first, "previous") is None
    pages = [first]
    seen = list(_ids(first))
    while (following := _link(pages[-1], "next")) is not None:
        if len(pages) == 2:  # results keep arriving while the client pages
            _observe(http, headers, patient, [("718-7", "2026-11-20T10:00:00Z", 12.0)])
            clock.advance(timedelta(minutes=1))
            _observe(http, headers, patient, [("718-7", "2026-11-21T10:00:00Z", 12.1)])
        page = _valid_bundle(http.get(following, headers=headers))
        assert page["total"] == 24
        seen += _ids(page)
        pages.append(page)
    assert len(pages) == 5
    assert len(seen) == 24 and len(set(seen)) == 24 and seen == sorted(seen)
    # A new search sees the new results; the walk above saw each old one exactly once.
    assert _search(http, headers, query)["total"] == 26
    # Walking back with `previous` gives the same pages.
    back = [pages[-1]]
    while (earlier := _link(back[-1], "previous")) is not None:
        back.append(_valid_bundle(http.get(earlier, headers=headers)))
    assert [_ids(page) for page in back[::-1]] == [_ids(page) for page in pages]
    # `first` starts over; `self` repeats the page.
    restart = _link(pages[3], "first")
    assert restart is not None
    assert _ids(_valid_bundle(http.get(restart, headers=headers))) == _ids(first)
    itself = _link(pages[3], "self")
    assert itself is not None
    assert _ids(_valid_bundle(http.get(itself, headers=headers))) == _ids(pages[3])


def test_paging_links_carry_no_search_values(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDQ0000001", family="Privatename")
    bundle = _search(http, headers, "Patient?name=privaten&identifier=MDQ0000001&_count=1")
    assert _ids(bundle) == [patient]
    for link in bundle["link"]:
        query = parse_qs(urlsplit(link["url"]).query)
        assert list(query) == ["_cursor"]
        assert "rivaten" not in link["url"].lower() and "MDQ" not in link["url"]


@pytest.mark.parametrize("sort", ["-_lastUpdated", "_lastUpdated", "-date", "date", "-_id"])
def test_paging_in_every_order_covers_each_result_once(
    db: Database, http: TestClient, clock: FrozenClock, sort: str
) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDS0000001")
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)
    for batch in range(3):  # three change times, several results each (ties broken by id)
        clock.advance(timedelta(minutes=1))
        _observe(
            http,
            headers,
            patient,
            [("718-7", (start + timedelta(days=batch * 5 + n)).isoformat(), 9.0) for n in range(4)],
        )
    whole = _ids(_search(http, headers, f"Observation?patient={patient}&_sort={sort}"))
    pages = _walk(http, headers, f"Observation?patient={patient}&_sort={sort}&_count=3")
    assert [found for page in pages for found in _ids(page)] == whole
    assert len(whole) == 13 and len(set(whole)) == 13


def test_count_zero_total_none_and_summary_count(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDC0000001")
    only_total = _search(http, headers, f"Observation?patient={patient}&_count=0")
    assert only_total["total"] == 1 and "entry" not in only_total
    assert _link(only_total, "next") is None
    summary = _search(http, headers, f"Observation?patient={patient}&_summary=count")
    assert summary["total"] == 1 and "entry" not in summary
    uncounted = _search(http, headers, f"Observation?patient={patient}&_total=none")
    assert "total" not in uncounted and len(_ids(uncounted)) == 1
    capped = _search(http, headers, "Appointment?_count=5000")
    assert len(_ids(capped)) <= 1000


# --- includes ------------------------------------------------------------------------------


def test_include_adds_each_patient_once(db: Database, http: TestClient, clock: FrozenClock) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDI0000001", caregiver=True)
    for include in (
        "Observation:patient",
        "Observation:subject",
        "Condition:patient",
        "RelatedPerson:patient",
        "Procedure:patient",
        "Encounter:patient",
        "Appointment:patient",
        "CarePlan:patient",
    ):
        kind = include.split(":")[0]
        bundle = _search(http, headers, f"{kind}?patient={patient}&_include={include}")
        assert _ids(bundle), include
        assert _typed(bundle, "include") == [("Patient", patient)], include
        assert bundle["total"] == len(_ids(bundle))  # includes are not counted
    without = _search(http, headers, f"Observation?patient={patient}")
    assert _typed(without, "include") == []


def test_revinclude_on_patient(db: Database, http: TestClient, clock: FrozenClock) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDI0000002", caregiver=True)
    bundle = _search(
        http,
        headers,
        f"Patient?_id={patient}&_revinclude=Observation:patient"
        "&_revinclude=Condition:patient,RelatedPerson:patient",
    )
    assert _typed(bundle) == [("Patient", patient)]
    kinds = sorted(kind for kind, _ in _typed(bundle, "include"))
    assert kinds == ["Condition", "Observation", "RelatedPerson"]


# --- $everything --------------------------------------------------------------------------------


def test_everything_about_a_patient_in_pages(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDE0000001", caregiver=True)
    other = _enrol(db, http, headers, "MDE0000002")
    whole = _search(http, headers, f"Patient/{patient}/$everything?_count=1000")
    found = _typed(whole)
    kinds = {kind for kind, _ in found}
    assert kinds == {
        "Patient",
        "Procedure",
        "Condition",
        "RelatedPerson",
        "Observation",
        "Appointment",
        "Encounter",
        "CarePlan",
    }
    assert found[0] == ("Patient", patient)
    assert whole["total"] == len(found) == len(set(found))
    for entry in whole["entry"]:
        resource = entry["resource"]
        about = (resource.get("subject") or resource.get("patient") or {}).get("reference")
        actors = [p["actor"]["reference"] for p in resource.get("participant", [])]
        assert resource["id"] == str(patient) or f"Patient/{patient}" in [about, *actors]
        assert f"Patient/{other}" not in (about, *actors)
    pages = _walk(http, headers, f"Patient/{patient}/$everything?_count=4")
    paged = [item for page in pages for item in _typed(page)]
    assert paged == found
    assert all(page["total"] == whole["total"] for page in pages)
    assert len(pages) == -(-len(found) // 4)
    picked = _search(http, headers, f"Patient/{patient}/$everything?_type=Observation,Condition")
    assert {kind for kind, _ in _typed(picked)} == {"Observation", "Condition"}
    clock.advance(timedelta(minutes=1))
    (later,) = _observe(http, headers, patient, [("4576-5", "2026-11-27T09:00:00Z", 31.0)])
    since = (T0 + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = _search(http, headers, f"Patient/{patient}/$everything?_since={since}")
    assert ("Observation", later) in _typed(recent)
    assert ("Condition", found[2][1]) not in _typed(recent)
    bad = http.get(f"/fhir/Patient/{patient}/$everything?_type=Group", headers=headers)
    assert _outcome(bad, 400)["issue"][0]["code"] == "not-supported"
    assert http.get("/fhir/Patient/99999/$everything", headers=headers).status_code == 404


# --- only the caller's center, by every path ---------------------------------------------


def test_another_center_gets_nothing_by_any_path(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    own = _token(db, clock, http)
    patient = _enrol(db, http, own, "MDX0000001", family="Crossley", caregiver=True)
    observations = _ids(_search(http, own, f"Observation?patient={patient}"))
    other = _token(db, clock, http, center_name=FRONT_RANGE)
    for query in (
        f"Patient?_id={patient}",
        "Patient?identifier=MDX0000001",
        f"Patient?identifier={MEDICAID_MD}|MDX0000001",
        "Patient?name=crossley",
        f"Observation?patient={patient}",
        "Observation?patient.identifier=MDX0000001",
        f"Observation?_id={observations[0]}",
        f"Procedure?patient={patient}",
        f"Condition?patient={patient}",
        f"RelatedPerson?patient={patient}",
        f"Encounter?patient={patient}",
        f"Appointment?patient={patient}",
        f"CarePlan?patient={patient}",
    ):
        bundle = _search(http, other, query)
        assert bundle["total"] == 0 and "entry" not in bundle, query
    for kind in ("Patient", "Observation", "Appointment", "CarePlan", "Procedure"):
        include = "" if kind == "Patient" else f"&_include={kind}:patient"
        for page in _walk(http, other, f"{kind}?_count=1000{include}"):
            for entry in page.get("entry", []):
                resource = entry["resource"]
                assert (resource["resourceType"], resource["id"]) != ("Patient", str(patient))
                about = (resource.get("subject") or resource.get("patient") or {}).get("reference")
                assert about != f"Patient/{patient}"
    revincluded = _search(http, other, "Patient?_count=1000&_revinclude=Observation:patient")
    assert not set(observations) & set(_ids(revincluded, "include"))
    assert http.get(f"/fhir/Patient/{patient}/$everything", headers=other).status_code == 404
    # A paging link is the center's own: another center's client cannot open it...
    page = _search(http, own, f"Observation?patient={patient}&_count=0")
    stolen = _link(page, "self")
    assert stolen is not None
    _outcome(http.get(stolen, headers=other), 400)
    everything = _search(http, own, f"Patient/{patient}/$everything?_count=2")
    stolen_everything = _link(everything, "next")
    assert stolen_everything is not None
    assert http.get(stolen_everything, headers=other).status_code == 404
    # ... nor alter one, nor use one on another type.
    cursor = stolen.split("_cursor=")[1]
    forged = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    _outcome(http.get(f"/fhir/Observation?_cursor={forged}", headers=own), 400)
    _outcome(http.get(f"/fhir/Patient?_cursor={cursor}", headers=own), 400)
    _outcome(http.get(f"/fhir/Observation?_cursor={cursor}&patient=1", headers=own), 400)


# --- scopes, the form POST, the audit ------------------------------------------------------


def _scoped_token(
    db: Database, clock: FrozenClock, http: TestClient, scopes: str
) -> dict[str, str]:
    center = CenterSystem.generate("ES384")
    register(db, clock, center=center, scopes=scopes)
    return {"Authorization": f"Bearer {center.token(http, clock, scope=scopes)}"}


def test_searching_needs_the_search_scope(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDG0000001")
    reader = _scoped_token(db, clock, http, "system/Patient.r system/Observation.r")
    refused = _outcome(http.get("/fhir/Patient", headers=reader), 403)
    assert refused["issue"][0]["code"] == "forbidden"
    _outcome(http.post("/fhir/Observation/_search", headers=reader), 403)
    searcher = _scoped_token(db, clock, http, "system/Observation.s")
    assert http.get(f"/fhir/Observation?patient={patient}", headers=searcher).status_code == 200
    _outcome(
        http.get(
            f"/fhir/Observation?patient={patient}&_include=Observation:patient", headers=searcher
        ),
        403,
    )
    _outcome(http.get(f"/fhir/Patient/{patient}/$everything", headers=searcher), 403)
    # $everything with only Patient.r: the patient, and a note of what was left out.
    only_patient = _scoped_token(db, clock, http, "system/Patient.r")
    bundle = _search(http, only_patient, f"Patient/{patient}/$everything")
    assert _typed(bundle) == [("Patient", patient)]
    (note,) = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "Observation" in note["resource"]["issue"][0]["diagnostics"]


def test_the_form_post_searches_like_get(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    patient = _enrol(db, http, headers, "MDF0000001")
    plain = {"Authorization": headers["Authorization"]}
    got = _search(http, headers, f"Patient?identifier={MEDICAID_MD}|MDF0000001")
    posted = _valid_bundle(
        http.post(
            "/fhir/Patient/_search",
            data={"identifier": f"{MEDICAID_MD}|MDF0000001"},
            headers=plain,
        )
    )
    assert _ids(posted) == _ids(got) == [patient]
    assert "MDF" not in " ".join(link["url"] for link in posted["link"])
    mixed = _valid_bundle(
        http.post(
            f"/fhir/Observation/_search?patient={patient}", data={"code": "718-7"}, headers=plain
        )
    )
    assert len(_ids(mixed)) == 1
    refused = http.post(
        "/fhir/Patient/_search", json={"identifier": "x"}, headers={**plain, **FHIR_JSON}
    )
    _outcome(refused, 415)


def test_every_search_is_audited_per_patient_without_values(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    first = _enrol(db, http, headers, "MDA0000001", family="Auditee")
    second = _enrol(db, http, headers, "MDA0000002", family="Auditee")
    with db.factory() as session:
        before = session.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1))
    _search(http, headers, "Patient?name=auditee&birthdate=2008-03-14")
    _search(http, headers, "Observation?code=nothing-like-it")
    with db.factory() as session:
        events = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.id > (before or 0)).order_by(AuditEvent.id)
            )
        )
    searches = [event for event in events if event.action == "fhir.search"]
    assert sorted((e.target, e.patient_id) for e in searches) == sorted(
        [("Patient", first), ("Patient", second), ("Observation", None)]
    )
    for event in searches:
        assert event.client_id is not None and event.actor_role == "fhir_client"
        shown = f"{event.target} {event.detail}"
        assert "auditee" not in shown.lower() and "2008" not in shown and "nothing" not in shown
    assert searches[0].detail == {"parameters": ["birthdate", "name"]}


def test_capability_statement_lists_the_searches(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    statement = http.get("/fhir/metadata").json()
    resources = {entry["type"]: entry for entry in statement["rest"][0]["resource"]}
    observation = resources["Observation"]
    assert {"code": "search-type"} in observation["interaction"]
    params = {param["name"] for param in observation["searchParam"]}
    assert {"patient", "subject", "code", "date", "status", "_id", "_lastUpdated"} <= params
    assert observation["searchInclude"] == ["Observation:patient", "Observation:subject"]
    assert "Observation:patient" in resources["Patient"]["searchRevInclude"]
    assert any(op["name"] == "everything" for op in resources["Patient"]["operation"])
