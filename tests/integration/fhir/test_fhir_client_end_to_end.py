"""A treatment center's system as it is, end to end over HTTP: a real FHIR client (fhirpy)
against the platform served by uvicorn on a loopback port. The center makes its key pair,
gets a token by SMART Backend Services, posts a transaction, searches it back and pages
through the results, and runs a bulk export whose NDJSON it reads (fhirpy has no bulk-data
support: the export's kick-off, polling and download are plain HTTP, as a center's scripts
do them; the export itself is run as `cgt-access fhir export-run` runs it, since the test
server has no scheduler)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpy import SyncFHIRClient
from sqlalchemy import select

from core.audit.service import Actor
from core.clock import SystemClock
from core.db import make_engine, make_session_factory, transaction
from core.models import TreatmentCenter
from fhir_adapter.clients import ClientInput, register_client
from fhir_adapter.export_jobs import ExportConfig, run_queued_exports
from fhir_adapter.tokens import CLIENT_ASSERTION_TYPE
from tests.e2e.conftest import LiveServer, serve_platform
from tests.support.smart import HARBORVIEW, CenterSystem

MEDICAID_MD = "https://cgt-access.org/fhir/sid/medicaid/md"
THERAPY = "https://cgt-access.org/fhir/CodeSystem/therapy"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SCOPES = "system/*.cruds"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve_platform(tmp_path_factory.mktemp("fhir-e2e")) as live:
        yield live


def _register(server: LiveServer, center: CenterSystem) -> None:
    factory = make_session_factory(make_engine(server.database_url))
    with transaction(factory) as session:
        center_id = session.scalar(
            select(TreatmentCenter.id).where(TreatmentCenter.name == HARBORVIEW)
        )
        register_client(
            session,
            clock=_Now(),
            actor=Actor.system("test"),
            data=ClientInput(
                client_id=center.client_id,
                name="Harborview's EHR",
                center_id=str(center_id),
                jwks=json.dumps(center.public_jwks()),
                scopes=SCOPES.split(),
            ),
            allow_http_loopback=True,
        )
    factory.kw["bind"].dispose()


class _Now:
    def now(self) -> datetime:
        return datetime.now(UTC)


def _token(server: LiveServer, center: CenterSystem) -> str:
    assertion = center.assertion(datetime.now(UTC), aud=f"{server.url}/auth/token")
    response = httpx.post(
        f"{server.url}/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": SCOPES,
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _bundle(patients: int, observations: int) -> dict[str, Any]:
    infused = datetime.now(UTC).date() - timedelta(days=200)
    entries: list[dict[str, Any]] = []
    for number in range(patients):
        urn = f"urn:uuid:{uuid.uuid4()}"
        entries.append(
            {
                "fullUrl": urn,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": MEDICAID_MD, "value": f"MDE2E{number:05d}"}],
                    "name": [{"family": "Fhirpy", "given": [f"Test{number}"]}],
                    "birthDate": "2007-06-01",
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Procedure",
                    "status": "completed",
                    "code": {"coding": [{"system": THERAPY, "code": "casgevy"}]},
                    "subject": {"reference": urn},
                    "performedDateTime": infused.isoformat(),
                },
                "request": {"method": "POST", "url": "Procedure"},
            }
        )
        for day in range(observations):
            entries.append(
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
                        "subject": {"reference": urn},
                        "effectiveDateTime": (infused + timedelta(days=10 * day + 1)).isoformat(),
                        "valueQuantity": {
                            "value": 10 + day / 10,
                            "unit": "g/dL",
                            "system": UCUM,
                            "code": "g/dL",
                        },
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_a_center_enrols_searches_pages_and_exports_with_a_real_fhir_client(
    server: LiveServer, tmp_path: Path
) -> None:
    center = CenterSystem.generate("RS384")
    _register(server, center)
    token = _token(server, center)
    client = SyncFHIRClient(f"{server.url}/fhir", authorization=f"Bearer {token}")

    reply = client.execute("", method="post", data=_bundle(patients=3, observations=7))
    assert reply["type"] == "transaction-response"
    assert all(entry["response"]["status"] == "201 Created" for entry in reply["entry"])

    patients = client.resources("Patient").search(identifier=f"{MEDICAID_MD}|MDE2E00001")
    found = patients.fetch()
    assert [patient["name"][0]["family"] for patient in found] == ["Fhirpy"]
    patient_id = found[0]["id"]

    # Paging: 7 observations of the patient, 3 a page, all fetched through `next` links.
    observations = (
        client.resources("Observation").search(patient=patient_id, code=f"{LOINC}|718-7").limit(3)
    )
    every = observations.fetch_all()
    assert len(every) == 7
    assert len({observation["id"] for observation in every}) == 7
    assert observations.count() == 7

    read_back = client.reference("Patient", patient_id).to_resource()
    assert read_back["identifier"][0]["value"] == "MDE2E00001"

    _export_and_read(server, token, expected_patients=3, expected_observations=21, folder=tmp_path)


def _export_and_read(
    server: LiveServer,
    token: str,
    *,
    expected_patients: int,
    expected_observations: int,
    folder: Path,
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    kickoff = httpx.get(
        f"{server.url}/fhir/$export",
        params={"_type": "Patient,Observation"},
        headers={**headers, "Prefer": "respond-async"},
    )
    assert kickoff.status_code == 202, kickoff.text
    status_url = kickoff.headers["content-location"]
    waiting = httpx.get(status_url, headers=headers)
    assert waiting.status_code == 202 and "x-progress" in waiting.headers
    factory = make_session_factory(make_engine(server.database_url))
    config = ExportConfig(
        export_dir=server.export_dir, keep=timedelta(hours=1), max_per_file=100_000
    )
    assert run_queued_exports(factory, clock=SystemClock(), config=config) == 1
    factory.kw["bind"].dispose()
    status = httpx.get(status_url, headers=headers)
    assert status.status_code == 200, status.text
    manifest = status.json()
    counts: dict[str, int] = {}
    for output in manifest["output"]:
        download = httpx.get(output["url"], headers=headers)
        assert download.status_code == 200
        lines = [json.loads(line) for line in download.text.splitlines() if line.strip()]
        assert all(line["resourceType"] == output["type"] for line in lines)
        counts[output["type"]] = counts.get(output["type"], 0) + len(lines)
        (folder / f"{output['type']}.ndjson").write_text(download.text)
    assert counts["Patient"] >= expected_patients
    assert counts["Observation"] >= expected_observations
