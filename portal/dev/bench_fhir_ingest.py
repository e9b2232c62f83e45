"""The FHIR ingest figures of `cgt-access bench` (issue 11, "ingest speed").

- `fhir.ingest_resources_per_s`: a treatment center's transaction load of `resources` (10,000
  by default: 1,000 patients, each with the infusion Procedure and 8 Observations: hemoglobin
  and fetal hemoglobin in a visit's window and outside every window, the counts of the
  outcome form, vital signs) posted through the real route, `POST /fhir`, in Bundles of
  `BUNDLE_PATIENTS` patients' worth (1,000 entries), timed end to end: the HTTP request in
  process (`TestClient`), the token check, validation, the mapping, the schedules the
  infusions create, the audit, the commit and the response Bundle.
- `fhir.ingest_ratio_bare_parse`: that rate over the rate of parsing exactly the same
  resources with `fhir.resources` R4B alone (`model_validate` on each resource's JSON), in
  the same run: how much the platform adds to the unavoidable parse. Goal: 0.5 or more.

Extra keys: the same load as one Bundle of all the resources (`one_bundle_resources_per_s`),
the whole load sent again (`resend_resources_per_s`: every entry found and unchanged), and
what bounds the ratio: `database_replay_s`, SQLite's own time for every statement the load
sends (recorded in a third run, replayed with the sqlite3 module alone on a copy of the
database as it was), and `ratio_ceiling`, the bare parse's time over that time plus the
bare parse's: the ratio of a platform that did nothing but parse and run those statements.

The world is a throw-away SQLite file (migrated) holding one state, one center, the two
therapies and the center's FHIR client, registered with a key pair made here (joserfc, as a
center does: see README, "Connecting a treatment center"); the token comes from the real
token endpoint with a signed client assertion. The clock stands still at `BENCH_NOW`.
Phone numbers are in the 555-01xx range, which reaches nobody.
"""

from __future__ import annotations

import gc
import json
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir.resources.R4B import get_fhir_model_class
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import make_engine, make_session_factory, transaction
from core.models import Observation, Patient, State, Therapy, TreatmentCenter
from fhir_adapter.clients import ClientInput, register_client
from fhir_adapter.tokens import CLIENT_ASSERTION_TYPE
from portal.dev.bench_app import bench_app, in_process
from portal.migrate import upgrade_database

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

FHIR_INGEST_FIGURES = ("fhir.ingest_resources_per_s", "fhir.ingest_ratio_bare_parse")
# Friday noon in Baltimore: a fixed instant, so the load's dates and windows never move.
BENCH_NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
BASE_URL = "http://testserver"
CLIENT_ID = "bench-center-system"
SCOPE = "system/*.cruds"
# Resources per patient: the Patient, its infusion Procedure, 8 Observations.
PER_PATIENT = 10
# A realistic transaction: 100 patients' worth (1,000 entries, about 1 MB).
BUNDLE_PATIENTS = 100

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LTFU = "https://cgt-access.org/fhir/CodeSystem/ltfu"
THERAPY_SYSTEM = "https://cgt-access.org/fhir/CodeSystem/therapy"
LAB_ACCESSION = "https://lab.bench-center.example.org/accession"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _figure(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, **extra}


def fhir_ingest_figures(
    folder: Path, *, selected: list[str], resources: int = 10_000
) -> Iterator[dict[str, Any]]:
    """The selected FHIR ingest figures, as dicts (the caller prints them as JSON lines).
    `resources` is rounded down to whole patients (10 resources each)."""
    wanted = [name for name in FHIR_INGEST_FIGURES if name in selected]
    if not wanted:
        return
    patients = resources // PER_PATIENT
    if patients < 1:
        raise ValueError(f"the FHIR ingest figures need at least {PER_PATIENT} resources")
    load = ingest_load(patients)
    count = sum(len(bundle["entry"]) for bundle in load)
    bare_s = bare_parse_seconds(load)
    with _World.build(folder / "fhir-ingest.db") as world:
        ingest_s = world.post_all(load)
        world.check_stored(patients=patients, observations=8 * patients)
        resend_s = world.post_all(ingest_load(patients))  # new urn:uuids, same content
        world.check_stored(patients=patients, observations=8 * patients)
    with _World.build(folder / "fhir-ingest-one.db") as world:
        one_s = world.post_all([_one_bundle(load)])
        world.check_stored(patients=patients, observations=8 * patients)
    database_s = _database_seconds(folder, ingest_load(patients))
    rate = count / ingest_s
    bare_rate = count / bare_s
    extra = {
        "n": count,
        "patients": patients,
        "bundle_entries": BUNDLE_PATIENTS * PER_PATIENT,
        "bare_parse_resources_per_s": round(bare_rate, 1),
        "one_bundle_resources_per_s": round(count / one_s, 1),
        "resend_resources_per_s": round(count / resend_s, 1),
        # SQLite's own time for the statements the load sends (replayed), and the ratio the
        # load could reach if the platform did nothing but the parse and those statements.
        "database_replay_s": round(database_s, 3),
        "ratio_ceiling": round(bare_s / (bare_s + database_s), 3),
    }
    if "fhir.ingest_resources_per_s" in wanted:
        yield _figure("fhir.ingest_resources_per_s", round(rate, 1), "resource/s", **extra)
    if "fhir.ingest_ratio_bare_parse" in wanted:
        yield _figure(
            "fhir.ingest_ratio_bare_parse",
            round(round(rate, 1) / round(bare_rate, 1), 3),
            "ratio",
            **extra,
        )


# --- the load -------------------------------------------------------------------------------


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _observation(
    patient: str,
    *,
    system: str,
    code: str,
    display: str,
    day: date,
    value: dict[str, Any],
    category: str,
    accession: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "subject": {"reference": patient},
        "effectiveDateTime": f"{day.isoformat()}T14:30:00-05:00",
        **value,
    }
    if accession is not None:  # lab results carry the lab's accession number
        resource["identifier"] = [{"system": LAB_ACCESSION, "value": accession}]
    return resource


def patient_resources(index: int, *, today: date) -> list[tuple[str, dict[str, Any]]]:
    """One patient's 10 resources (fullUrl, resource): the Patient, the infusion Procedure
    (4 months to 4 years ago), and 8 Observations (results at day 100 and day 180, in those
    visits' windows, one at day 60, outside every window, and vital signs)."""
    patient = _urn()
    infused = today - timedelta(days=120 + (index * 37) % 1400)
    therapy = "casgevy" if index % 3 else "lyfgenia"
    day60, day100, day180 = (infused + timedelta(days=days) for days in (60, 100, 180))
    if day180 > today:
        day180 = day100 + timedelta(days=5)
    lab = f"B{index:06d}"
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "identifier": [
                {
                    "system": "https://cgt-access.org/fhir/sid/medicaid/md",
                    "value": f"MDB{index:07d}",
                },
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "MR",
                            }
                        ]
                    },
                    "system": "https://bench-center.example.org/mrn",
                    "value": f"MRN-{index:07d}",
                },
            ],
            "name": [{"use": "official", "family": f"Bench{index}", "given": ["Ana", "Luz"]}],
            "gender": "female" if index % 2 else "male",
            "birthDate": date(2000 + index % 12, 1 + index % 12, 1 + index % 28).isoformat(),
            "telecom": [
                {"system": "phone", "value": f"+1 410 555 01{index % 100:02d}", "use": "mobile"}
            ],
            "communication": [
                {
                    "language": {
                        "coding": [
                            {"system": "urn:ietf:bcp:47", "code": "es" if index % 5 else "en"}
                        ]
                    },
                    "preferred": True,
                }
            ],
        },
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"coding": [{"system": THERAPY_SYSTEM, "code": therapy}]},
            "subject": {"reference": patient},
            "performedDateTime": infused.isoformat(),
        },
        _observation(
            patient,
            system=LOINC,
            code="718-7",
            display="Hemoglobin [Mass/volume] in Blood",
            day=day100,
            value={"valueQuantity": _quantity(11.2 + index % 30 / 10, "g/dL")},
            category="laboratory",
            accession=f"{lab}-1",
        ),
        _observation(
            patient,
            system=LOINC,
            code="4576-5",
            display="Hemoglobin F/Hemoglobin.total in Blood",
            day=day100,
            value={"valueQuantity": _quantity(30 + index % 20, "%")},
            category="laboratory",
            accession=f"{lab}-2",
        ),
        _observation(
            patient,
            system=LOINC,
            code="718-7",
            display="Hemoglobin [Mass/volume] in Blood",
            day=day60,
            value={"valueQuantity": _quantity(9.8 + index % 20 / 10, "g/dL")},
            category="laboratory",
            accession=f"{lab}-3",
        ),
        _observation(
            patient,
            system=LTFU,
            code="voe-count",
            display="Vaso-occlusive events since last visit",
            day=day180,
            value={"valueInteger": index % 2},
            category="survey",
        ),
        _observation(
            patient,
            system=LTFU,
            code="hospitalization-count",
            display="Hospitalizations since last visit",
            day=day180,
            value={"valueInteger": index % 3 // 2},
            category="survey",
        ),
        _observation(
            patient,
            system=LOINC,
            code="8867-4",
            display="Heart rate",
            day=day100,
            value={"valueQuantity": _quantity(60 + index % 40, "/min")},
            category="vital-signs",
        ),
        _observation(
            patient,
            system=LOINC,
            code="29463-7",
            display="Body weight",
            day=day60,
            value={"valueQuantity": _quantity(40 + index % 50 + 0.5, "kg")},
            category="vital-signs",
        ),
        _observation(
            patient,
            system=LOINC,
            code="8310-5",
            display="Body temperature",
            day=day180,
            value={"valueQuantity": _quantity(36.6 + index % 8 / 10, "Cel")},
            category="vital-signs",
        ),
    ]
    return [(patient if item is resources[0] else _urn(), item) for item in resources]


def ingest_load(patients: int, *, today: date | None = None) -> list[dict[str, Any]]:
    """The load as transaction Bundles of `BUNDLE_PATIENTS` patients' worth each."""
    today = today or BENCH_NOW.date()
    bundles = []
    for start in range(0, patients, BUNDLE_PATIENTS):
        entries = [
            {
                "fullUrl": full_url,
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
            for index in range(start, min(start + BUNDLE_PATIENTS, patients))
            for full_url, resource in patient_resources(index, today=today)
        ]
        bundles.append({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return bundles


def _one_bundle(load: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [entry for bundle in load for entry in bundle["entry"]],
    }


def bare_parse_seconds(load: list[dict[str, Any]]) -> float:
    """Seconds to parse every resource of the load with its R4B model, nothing else (the
    best of two rounds, after a warm-up on the first Bundle)."""
    resources = [entry["resource"] for bundle in load for entry in bundle["entry"]]
    models = {kind: get_fhir_model_class(kind) for kind in {r["resourceType"] for r in resources}}
    for resource in load[0]["entry"][:50]:
        models[resource["resource"]["resourceType"]].model_validate(resource["resource"])
    best = float("inf")
    for _round in range(2):
        gc.collect()
        started = time.perf_counter()
        for resource in resources:
            models[resource["resourceType"]].model_validate(resource)
        best = min(best, time.perf_counter() - started)
    return best


def _database_seconds(folder: Path, load: list[dict[str, Any]]) -> float:
    """Seconds SQLite itself takes for what posting `load` asks of it: every statement the
    route sent (reads, writes, commits) is recorded in one run, then replayed with the
    sqlite3 module alone on a copy of the database as it was before that run."""
    path, before = folder / "fhir-ingest-replay.db", folder / "fhir-ingest-before.db"
    sent: list[tuple[str, Any, bool]] = []
    with _World.build(path) as world:
        engine = world.factory.kw["bind"]
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(path, before)

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(*args: Any) -> None:
            _connection, _cursor, statement, parameters, _context, many = args
            sent.append((statement, list(parameters) if many else parameters, many))

        @event.listens_for(engine, "commit")
        def _commit(_connection: Any) -> None:
            sent.append(("COMMIT", None, False))

        world.post_all(load)
    replay = sqlite3.connect(before, isolation_level=None)
    try:
        for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
            replay.execute(f"PRAGMA {pragma}")
        gc.collect()
        started = time.perf_counter()
        for statement, parameters, many in sent:
            if statement == "COMMIT":
                if replay.in_transaction:
                    replay.execute("COMMIT")
                continue
            if not replay.in_transaction:
                replay.execute("BEGIN")
            # SQLAlchemy's "insertmanyvalues" runs one statement of many rows (flat values).
            if many and parameters and isinstance(parameters[0], tuple | list | dict):
                replay.executemany(statement, parameters)
            else:
                replay.execute(statement, parameters or ()).fetchall()
        return time.perf_counter() - started
    finally:
        replay.close()


# --- the world ------------------------------------------------------------------------------


@dataclass
class _World:
    factory: sessionmaker[Session]
    http: TestClient
    headers: dict[str, str]

    @classmethod
    def build(cls, path: Path) -> _World:
        url = f"sqlite:///{path}"
        upgrade_database(url)
        clock = FrozenClock(BENCH_NOW)
        factory = make_session_factory(make_engine(url))
        key = ECKey.generate_key("P-384", parameters={"kid": "bench-es384", "use": "sig"})
        with transaction(factory) as session:
            _seed_place(session, clock=clock, public_jwks={"keys": [key.as_dict(private=False)]})
        http = in_process(
            bench_app(url=url, clock=clock, factory=factory, public_base_url=BASE_URL)
        )
        http.__enter__()
        token = _token(http, key, clock=clock)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        return cls(factory=factory, http=http, headers=headers)

    def __enter__(self) -> _World:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.__exit__(None, None, None)
        self.factory.kw["bind"].dispose()

    def post_all(self, load: list[dict[str, Any]]) -> float:
        """Seconds to post every Bundle (bodies serialized beforehand, as a center's system
        has them ready), each answered 200 with a response entry per entry."""
        bodies = [json.dumps(bundle).encode() for bundle in load]
        gc.collect()
        started = time.perf_counter()
        for bundle, body in zip(load, bodies, strict=True):
            response = self.http.post("/fhir", content=body, headers=self.headers)
            if response.status_code != 200:
                raise RuntimeError(f"POST /fhir answered {response.status_code}: {response.text}")
            if len(response.json()["entry"]) != len(bundle["entry"]):
                raise RuntimeError("the transaction-response does not answer every entry")
        return time.perf_counter() - started

    def check_stored(self, *, patients: int, observations: int) -> None:
        """The load is stored once: so many patients and observations, not more."""
        with self.factory() as session:
            found = (
                session.scalar(select(func.count(Patient.id))) or 0,
                session.scalar(select(func.count(Observation.id))) or 0,
            )
        if found != (patients, observations):
            raise RuntimeError(f"stored {found}, expected {(patients, observations)}")


def _seed_place(session: Session, *, clock: FrozenClock, public_jwks: dict[str, Any]) -> None:
    """Maryland, one center, the two therapies, and the center's registered FHIR client."""
    now = clock.now()
    state = State(
        code="MD",
        name="Maryland",
        time_zone="America/New_York",
        program_name="Maryland Care Connect",
        program_phone="+14105550100",
        created_at=now,
    )
    session.add(state)
    session.flush()
    center = TreatmentCenter(
        state_id=state.id,
        name="Bench Medical Center",
        city="Baltimore",
        phone="+14105550101",
        is_active=True,
        mrn_system="https://bench-center.example.org/mrn",
        created_at=now,
    )
    session.add_all(
        [
            center,
            Therapy(
                code="casgevy",
                brand_name="Casgevy",
                generic_name="exagamglogene autotemcel",
                manufacturer="Vertex Pharmaceuticals",
            ),
            Therapy(
                code="lyfgenia",
                brand_name="Lyfgenia",
                generic_name="lovotibeglogene autotemcel",
                manufacturer="Genetix Biotherapeutics (formerly bluebird bio)",
            ),
        ]
    )
    session.flush()
    register_client(
        session,
        clock=clock,
        actor=Actor.system("bench"),
        data=ClientInput(
            client_id=CLIENT_ID,
            name="Bench center's system",
            center_id=str(center.id),
            jwks=json.dumps(public_jwks),
            scopes=[SCOPE],
        ),
        allow_http_loopback=False,
    )


def _token(http: TestClient, key: ECKey, *, clock: FrozenClock) -> str:
    """An access token from the real token endpoint, for a fresh signed client assertion."""
    now = int(clock.now().timestamp())
    claims = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": f"{BASE_URL}/auth/token",
        "exp": now + 240,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.encode(
        {"alg": "ES384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["ES384"]
    )
    response = http.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": SCOPE,
        },
    )
    if response.status_code != 200:
        raise RuntimeError(f"the token endpoint answered {response.status_code}: {response.text}")
    token: str = response.json()["access_token"]
    return token
