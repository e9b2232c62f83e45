"""Bulk Data export as a treatment center's system uses it (FHIR Bulk Data Access IG 2.0.0):
kick-off, polling, the manifest, the NDJSON files (every line valid R4), `_type` and
`_since`, cancelling, expiry; a center never gets another center's patients by any of it;
of several workers, one runs a job."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from coordination.followup.models import FollowUpPlan, Visit, VisitStatus
from coordination.questionnaires.models import QuestionnaireResponse, ResponseStatus
from core.audit.models import AuditEvent
from core.clock import FrozenClock
from core.db import transaction
from core.models import CaregiverLink, Condition, Observation, Patient
from core.settings import Settings
from fhir_adapter import export_streams
from fhir_adapter.export_jobs import (
    LEASE,
    ExportConfig,
    claim_export,
    expire_exports,
    run_export,
    run_queued_exports,
)
from fhir_adapter.export_streams import EXPORT_TYPES
from fhir_adapter.models import ExportJob, ExportStatus
from fhir_adapter.validation import validate_resource
from portal.cli import app as cli
from portal.scheduler import build_scheduler
from tests.conftest import TEST_SECRET, Database, make_settings
from tests.integration.fhir.test_fhir_reads import _enrolled
from tests.integration.fhir.test_fhir_writes import FHIR_JSON, _token
from tests.integration.questionnaires.test_fhir_questionnaire_responses import (
    submitted_responses as submit_a_questionnaire,
)
from tests.support.smart import FRONT_RANGE, HARBORVIEW, CenterSystem, center_id, register

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
BASE = "http://testserver/fhir"


@pytest.fixture
def settings(db: Database, tmp_path: Path) -> Settings:
    return make_settings(db.url, export_dir=str(tmp_path / "exports"))


@pytest.fixture
def config(settings: Settings) -> ExportConfig:
    return ExportConfig.from_settings(settings)


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@dataclass
class Client:
    """A center's registered system, which gets a fresh token whenever asked (tests move
    the clock past a token's life)."""

    center: CenterSystem
    http: TestClient
    clock: FrozenClock

    @property
    def headers(self) -> dict[str, str]:
        token = self.center.token(self.http, self.clock, scope="system/*.cruds")
        return {"Authorization": f"Bearer {token}", **FHIR_JSON}


def _client(
    db: Database, clock: FrozenClock, http: TestClient, center_name: str = HARBORVIEW
) -> Client:
    center = CenterSystem.generate("ES384")
    register(db, clock, center=center, scopes="system/*.cruds", center_name=center_name)
    return Client(center, http, clock)


def _kick_off(http: TestClient, headers: dict[str, str], path: str = "/fhir/$export") -> str:
    response = http.get(path, headers={**headers, **ASYNC})
    assert response.status_code == 202, response.text
    location: str = response.headers["content-location"]
    assert location.startswith(f"{BASE}/$export-status/")
    return location.removeprefix("http://testserver")


def _run(db: Database, clock: FrozenClock, config: ExportConfig) -> int:
    return run_queued_exports(db.factory, clock=clock, config=config)


def _manifest(http: TestClient, headers: dict[str, str], status_path: str) -> dict[str, Any]:
    response = http.get(status_path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "expires" in response.headers
    manifest: dict[str, Any] = response.json()
    return manifest


def _download(http: TestClient, headers: dict[str, str], url: str) -> list[dict[str, Any]]:
    response = http.get(
        url.removeprefix("http://testserver"),
        headers={**headers, "Accept": "application/fhir+ndjson"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    assert response.content.endswith(b"\n")
    return [orjson.loads(line) for line in response.content.splitlines()]


def _export(
    http: TestClient,
    db: Database,
    clock: FrozenClock,
    config: ExportConfig,
    headers: dict[str, str],
    path: str = "/fhir/$export",
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Kick off, run, and fetch every file: (the manifest, the resources by type)."""
    status = _kick_off(http, headers, path)
    assert _run(db, clock, config) == 1
    manifest = _manifest(http, headers, status)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for output in manifest["output"]:
        lines = _download(http, headers, output["url"])
        assert len(lines) == output["count"]
        assert {line["resourceType"] for line in lines} == {output["type"]}
        by_type.setdefault(output["type"], []).extend(lines)
    return manifest, by_type


def _patient_of(resource: dict[str, Any]) -> int:
    if resource["resourceType"] == "Patient":
        return int(resource["id"])
    for key in ("subject", "patient"):
        if key in resource:
            return int(resource[key]["reference"].split("/")[1])
    return int(resource["participant"][0]["actor"]["reference"].split("/")[1])


def _center_patients(db: Database, name: str) -> set[int]:
    with db.factory() as session:
        return set(
            session.scalars(select(Patient.id).where(Patient.center_id == center_id(db, name)))
        )


def _expected_counts(db: Database, patients: set[int]) -> dict[str, int]:
    with db.factory() as session:

        def count(column: Any, *where: Any) -> int:
            return int(
                session.scalar(select(func.count()).where(column.in_(patients), *where)) or 0
            )

        return {
            "Patient": len(patients),
            "Procedure": len(patients),
            "Observation": count(Observation.patient_id),
            "Condition": count(Condition.patient_id),
            "RelatedPerson": count(CaregiverLink.patient_id),
            "Appointment": count(Visit.patient_id),
            "Encounter": count(Visit.patient_id, Visit.status == VisitStatus.COMPLETED),
            "CarePlan": count(FollowUpPlan.patient_id),
            "QuestionnaireResponse": count(
                QuestionnaireResponse.patient_id,
                QuestionnaireResponse.status == ResponseStatus.COMPLETED,
            ),
        }


# --- the whole flow ----------------------------------------------------------------------


def test_a_center_exports_its_patients_as_valid_ndjson(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    headers = _token(db, clock, http)
    _enrolled(db, http, headers)  # a patient with a caregiver, a result and a diagnosis
    submit_a_questionnaire(db, clock)  # Maya (Harborview) sends the check-in
    status = _kick_off(http, headers, "/fhir/$export?_outputFormat=application/fhir%2Bndjson")

    waiting = http.get(status, headers=headers)
    assert waiting.status_code == 202
    assert waiting.headers["x-progress"] == "queued"
    assert int(waiting.headers["retry-after"]) > 0

    assert _run(db, clock, config) == 1
    manifest = _manifest(http, headers, status)
    assert manifest["transactionTime"] == "2026-11-27T15:00:00.000Z"
    assert manifest["request"] == f"{BASE}/$export?_outputFormat=application/fhir%2Bndjson"
    assert manifest["requiresAccessToken"] is True
    assert manifest["error"] == []

    own = _center_patients(db, HARBORVIEW)
    expected = _expected_counts(db, own)
    counted: dict[str, int] = {}
    for output in manifest["output"]:
        lines = _download(http, headers, output["url"])
        assert len(lines) == output["count"]
        counted[output["type"]] = counted.get(output["type"], 0) + len(lines)
        for resource in lines:
            assert resource["resourceType"] == output["type"]
            result = validate_resource(resource, expected_type=output["type"])
            assert result.errors == (), (resource, [i.as_json() for i in result.errors])
            assert _patient_of(resource) in own
    assert counted == {name: count for name, count in expected.items() if count}
    assert set(counted) == set(EXPORT_TYPES)  # the seeded world has some of every type

    with db.factory() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("fhir.export%")).order_by(AuditEvent.id)
        ).all()
    assert [event.action for event in events] == ["fhir.export"] + ["fhir.export.download"] * len(
        manifest["output"]
    )
    assert all(event.client_id and event.patient_id is None for event in events)
    assert events[0].detail == {"level": "system", "types": list(EXPORT_TYPES), "since": None}


def test_patient_and_group_level_export_the_same_patients(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    headers = _token(db, clock, http)
    own = center_id(db, HARBORVIEW)
    patients = set()
    for path in ("/fhir/Patient/$export?_type=Patient", f"/fhir/Group/{own}/$export?_type=Patient"):
        _, by_type = _export(http, db, clock, config, headers, path)
        patients.add(frozenset(int(patient["id"]) for patient in by_type["Patient"]))
    assert patients == {frozenset(_center_patients(db, HARBORVIEW))}


def test_type_limits_the_export_and_files_split_at_the_limit(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    headers = _token(db, clock, http)
    _enrolled(db, http, headers)
    small = ExportConfig(export_dir=config.export_dir, keep=config.keep, max_per_file=2)
    status = _kick_off(http, headers, "/fhir/$export?_type=Observation,Condition&_type=Patient")
    assert _run(db, clock, small) == 1
    manifest = _manifest(http, headers, status)

    types = [output["type"] for output in manifest["output"]]
    assert set(types) == {"Patient", "Observation", "Condition"}
    assert all(output["count"] <= 2 for output in manifest["output"])
    own = _center_patients(db, HARBORVIEW)
    expected = _expected_counts(db, own)
    assert (
        sum(o["count"] for o in manifest["output"] if o["type"] == "Observation")
        == (expected["Observation"])
    )
    assert types.count("Patient") == -(-len(own) // 2)  # ceil: every file full but the last
    ids = [
        int(line["id"])
        for output in manifest["output"]
        if output["type"] == "Patient"
        for line in _download(http, headers, output["url"])
    ]
    assert sorted(ids) == sorted(own) and len(ids) == len(set(ids))


def test_since_exports_only_what_changed_after_it(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    client = _client(db, clock, http)
    first, _ = _export(http, db, clock, config, client.headers, "/fhir/$export")
    clock.advance(timedelta(hours=2))
    newcomer = _enrolled(db, http, client.headers)

    since = quote(first["transactionTime"])
    headers = client.headers
    _, changed = _export(http, db, clock, config, headers, f"/fhir/$export?_since={since}")

    assert [patient["id"] for patient in changed["Patient"]] == [str(newcomer)]
    assert {_patient_of(r) for resources in changed.values() for r in resources} == {newcomer}
    assert {"Observation", "Condition", "RelatedPerson", "Procedure", "CarePlan"} <= set(changed)
    # An unencoded "+" (read as a space) is understood too.
    late = (clock.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S") + " 00:00"
    _, nothing = _export(http, db, clock, config, headers, f"/fhir/$export?_since={late}")
    assert nothing == {}


# --- refusals at kick-off ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("", {"Prefer": ""}, 400),
        ("?_outputFormat=text/csv", {}, 400),
        ("?_type=Foo", {}, 400),
        ("?_type=Medication", {}, 400),
        ("?_since=yesterday", {}, 400),
        ("?_since=2026-11-27", {}, 400),
        ("?_typeFilter=Observation%3Fcode%3D718-7", {}, 400),
        ("?_elements=id", {}, 400),
    ],
)
def test_a_kick_off_the_server_cannot_honour_is_refused_with_an_outcome(
    db: Database,
    http: TestClient,
    clock: FrozenClock,
    query: str,
    headers: dict[str, str],
    status: int,
) -> None:
    token = _token(db, clock, http)
    response = http.get(f"/fhir/$export{query}", headers={**token, **ASYNC, **headers})
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(ExportJob)) == 0


def test_lenient_handling_ignores_what_is_not_supported(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    token = _token(db, clock, http)
    response = http.get(
        "/fhir/$export?_typeFilter=Observation%3Fcode%3D1&_type=Observation,Medication",
        headers={**token, **ASYNC, "Prefer": "respond-async, handling=lenient"},
    )
    assert response.status_code == 202, response.text
    with db.factory() as session:
        assert session.scalars(select(ExportJob.types)).one() == ["Observation"]


def test_the_export_holds_only_the_types_the_token_may_read(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    center = CenterSystem.generate("ES384")
    register(db, clock, center=center, scopes="system/Patient.rs system/Observation.r")
    token = {"Authorization": f"Bearer {center.token(http, clock, scope='system/Patient.rs')}"}

    refused = http.get("/fhir/$export?_type=Observation", headers={**token, **ASYNC})
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"
    _, by_type = _export(http, db, clock, config, token)
    assert set(by_type) == {"Patient"}


def test_a_client_has_at_most_a_few_exports_waiting(
    db: Database, http: TestClient, clock: FrozenClock
) -> None:
    headers = _token(db, clock, http)
    for _ in range(3):
        _kick_off(http, headers)
    response = http.get("/fhir/$export", headers={**headers, **ASYNC})
    assert response.status_code == 429
    assert "retry-after" in response.headers
    assert response.json()["issue"][0]["code"] == "throttled"


# --- cancel, expiry, failure -------------------------------------------------------------


def test_delete_cancels_a_queued_export(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    headers = _token(db, clock, http)
    status = _kick_off(http, headers)

    assert http.delete(status, headers=headers).status_code == 202
    assert http.get(status, headers=headers).status_code == 404
    assert http.delete(status, headers=headers).status_code == 404
    assert _run(db, clock, config) == 0
    with db.factory() as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions[-1] == "fhir.export.cancel"


def test_delete_of_a_complete_export_deletes_its_files(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    headers = _token(db, clock, http)
    status = _kick_off(http, headers, "/fhir/$export?_type=Patient")
    _run(db, clock, config)
    url = _manifest(http, headers, status)["output"][0]["url"]
    folder = config.export_dir / status.rsplit("/", 1)[1]
    assert any(folder.iterdir())

    assert http.delete(status, headers=headers).status_code == 202
    assert not folder.exists()
    assert http.get(status, headers=headers).status_code == 404
    assert http.get(url.removeprefix("http://testserver"), headers=headers).status_code == 404


def test_a_running_export_stops_when_cancelled_and_leaves_no_files(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    headers = _token(db, clock, http)
    status = _kick_off(http, headers)
    claim = claim_export(db.factory, clock=clock, owner="worker-a")
    assert claim is not None
    running = http.get(status, headers=headers)
    assert running.status_code == 202 and running.headers["x-progress"] == "starting"

    assert http.delete(status, headers=headers).status_code == 202
    assert run_export(db.factory, clock=clock, claim=claim, config=config) is (
        ExportStatus.CANCELLED
    )
    assert not (config.export_dir / claim.job_id).exists()
    assert http.get(status, headers=headers).status_code == 404


def test_files_expire(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    client = _client(db, clock, http)
    status = _kick_off(http, client.headers, "/fhir/$export?_type=Patient")
    _run(db, clock, config)
    manifest = http.get(status, headers=client.headers)
    assert manifest.headers["expires"] == "Sat, 28 Nov 2026 15:00:00 GMT"
    url = manifest.json()["output"][0]["url"].removeprefix("http://testserver")
    folder = config.export_dir / status.rsplit("/", 1)[1]

    clock.advance(config.keep - timedelta(seconds=1))
    assert http.get(url, headers=client.headers).status_code == 200
    clock.advance(timedelta(seconds=1))
    headers = client.headers
    assert http.get(status, headers=headers).status_code == 404
    assert http.get(url, headers=headers).status_code == 404

    with transaction(db.factory) as session:
        assert expire_exports(session, clock=clock, config=config) == 1
    assert not folder.exists()
    with db.factory() as session:
        assert session.scalars(select(ExportJob.status)).one() is ExportStatus.EXPIRED


def test_a_failed_export_answers_500_with_an_outcome_and_leaves_no_files(
    db: Database,
    http: TestClient,
    clock: FrozenClock,
    config: ExportConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = _token(db, clock, http)
    status = _kick_off(http, headers, "/fhir/$export?_type=Patient,Observation")

    def broken(*_args: Any) -> Iterator[dict[str, Any]]:
        yield {"resourceType": "Observation", "id": "1"}
        raise RuntimeError("the disk is full")

    stream = export_streams.STREAMS["Observation"]
    monkeypatch.setitem(
        export_streams.STREAMS, "Observation", export_streams.TypeStream(stream.count, broken)
    )
    _run(db, clock, config)

    response = http.get(status, headers=headers)
    assert response.status_code == 500
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "incident" in outcome["issue"][0]["diagnostics"]
    assert "disk" not in response.text
    assert not (config.export_dir / status.rsplit("/", 1)[1]).exists()


# --- one worker per job ------------------------------------------------------------------


def test_a_job_claimed_by_one_worker_is_not_run_by_another(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    headers = _token(db, clock, http)
    _kick_off(http, headers)
    first = claim_export(db.factory, clock=clock, owner="worker-a")
    assert first is not None
    assert claim_export(db.factory, clock=clock, owner="worker-b") is None
    assert run_queued_exports(db.factory, clock=clock, config=config, owner="worker-b") == 0

    # Another job goes to the other worker: several workers run different jobs.
    _kick_off(http, headers)
    second = claim_export(db.factory, clock=clock, owner="worker-b")
    assert second is not None and second.pk != first.pk

    # Worker A fell silent: once its lease ran out, B takes the job over, and A, if it
    # comes back, stops instead of writing the files twice.
    clock.advance(LEASE + timedelta(seconds=1))
    taken_over = claim_export(db.factory, clock=clock, owner="worker-b")
    assert taken_over is not None and taken_over.pk == first.pk
    assert run_export(db.factory, clock=clock, claim=first, config=config) is (
        ExportStatus.CANCELLED
    )
    assert run_export(db.factory, clock=clock, claim=taken_over, config=config) is (
        ExportStatus.COMPLETE
    )
    with db.factory() as session:
        job = session.get(ExportJob, first.pk)
        assert job is not None and job.attempts == 2 and job.owner == "worker-b"


# --- centers apart -----------------------------------------------------------------------


def test_a_center_cannot_read_another_centers_patients_by_export(
    db: Database, http: TestClient, clock: FrozenClock, config: ExportConfig
) -> None:
    harbor = _token(db, clock, http)
    _enrolled(db, http, harbor)
    status = _kick_off(http, harbor)
    _run(db, clock, config)
    url = _manifest(http, harbor, status)["output"][0]["url"].removeprefix("http://testserver")

    front = _token(db, clock, http, center_name=FRONT_RANGE)
    group = http.get(f"/fhir/Group/{center_id(db, HARBORVIEW)}/$export", headers={**front, **ASYNC})
    assert group.status_code == 404
    assert group.json()["resourceType"] == "OperationOutcome"
    assert http.get(status, headers=front).status_code == 404
    assert http.get(url, headers=front).status_code == 404
    assert http.delete(status, headers=front).status_code == 404
    assert http.get(status, headers=harbor).status_code == 200  # untouched by the attempt

    # Another client of the same center does not see the job either: a job is its client's.
    same_center = _token(db, clock, http)
    assert http.get(status, headers=same_center).status_code == 404

    _, theirs = _export(http, db, clock, config, front)
    exported = {_patient_of(r) for resources in theirs.values() for r in resources}
    assert exported and exported <= _center_patients(db, FRONT_RANGE)
    assert exported.isdisjoint(_center_patients(db, HARBORVIEW))
    assert {p["id"] for p in theirs["Patient"]} == {
        str(i) for i in _center_patients(db, FRONT_RANGE)
    }


def test_unknown_jobs_and_files_are_404(db: Database, http: TestClient, clock: FrozenClock) -> None:
    headers = _token(db, clock, http)
    for path in (
        "/fhir/$export-status/nosuchjobnosuchjob",
        "/fhir/$export-status/..%2F..%2Fetc",
        "/fhir/$export-file/nosuchjobnosuchjob/Patient-1.ndjson",
        "/fhir/$export-file/nosuchjobnosuchjob/..%2Fpasswd",
    ):
        response = http.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["resourceType"] == "OperationOutcome"


# --- the worker and the command ------------------------------------------------------------


def test_the_workers_scheduler_runs_queued_exports_and_expires_old_ones(
    db: Database, http: TestClient, clock: FrozenClock, app: Any, config: ExportConfig
) -> None:
    client = _client(db, clock, http)
    status = _kick_off(http, client.headers, "/fhir/$export?_type=Patient")
    scheduler = build_scheduler(app.state.context, blocking=False)
    runner = scheduler.get_job("fhir-export-runner")
    cleanup = scheduler.get_job("fhir-export-cleanup")
    assert runner is not None and cleanup is not None

    runner.func()
    assert _manifest(http, client.headers, status)["output"][0]["type"] == "Patient"
    clock.advance(config.keep)
    cleanup.func()
    assert not (config.export_dir / status.rsplit("/", 1)[1]).exists()
    assert http.get(status, headers=client.headers).status_code == 404


def test_export_run_command_runs_the_queued_exports(
    db: Database,
    http: TestClient,
    clock: FrozenClock,
    config: ExportConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = _token(db, clock, http)
    status = _kick_off(http, headers, "/fhir/$export?_type=Patient")
    monkeypatch.setenv("DATABASE_URL", db.url)
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("DEMO_MODE", "false")
    monkeypatch.setenv("EXPORT_DIR", str(config.export_dir))

    result = CliRunner().invoke(cli, ["fhir", "export-run"])

    assert result.exit_code == 0, result.output
    assert "ran 1 export(s)" in result.output
    assert _manifest(http, headers, status)["output"][0]["count"] == len(
        _center_patients(db, HARBORVIEW)
    )
