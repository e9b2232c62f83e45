"""The FHIR search figures of `cgt-access bench` (issue 11, "Outbound").

- `fhir.search_p50_ms` / `fhir.search_p95_ms`: `GET /fhir/Observation?patient=..&code=..`
  (hemoglobin, LOINC 718-7) through the real route, with a real SMART token, one patient after
  another of the client's center, on 10,000 patients with 30 observations each (300,000
  rows); the goal is a p95 of at most 50 ms. Each answer is checked (200, a searchset with
  the patient's results). `fhir.search_p95_ratio_healthz`: that p95 over `/healthz`'s in the
  same run (how much the search itself costs, whatever else the machine is doing).
- `fhir.search_next_page_p95_ms`: following `next` links of a center-wide search
  (`Observation?code=718-7&_count=50`, about 40,000 matches) two hundred pages deep: keyset
  paging makes page 200 cost what page 2 costs.

The world lives in a throw-away SQLite file: the demo's states, centers and therapies, then
patients and observations inserted set-based (not through the ORM one by one). The client is
registered as an admin would (a pasted public key) and gets its token at `/auth/token` with a
signed assertion, as a center's system does.
"""

from __future__ import annotations

import gc
import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session, sessionmaker

from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import make_engine, make_session_factory, transaction
from core.models import (
    Language,
    Observation,
    ObservationSource,
    ObservationStatus,
    Patient,
    PatientStatus,
    State,
    Therapy,
    TreatmentCenter,
)
from fhir_adapter.clients import ClientInput, register_client
from fhir_adapter.tokens import CLIENT_ASSERTION_TYPE
from portal.dev.bench_app import bench_app, in_process
from portal.dev.demo import seed_demo_data
from portal.migrate import upgrade_database

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from httpx import Response

FHIR_SEARCH_FIGURES = (
    "fhir.search_p50_ms",
    "fhir.search_p95_ms",
    "fhir.search_p95_ratio_healthz",
    "fhir.search_next_page_p95_ms",
)
BENCH_NOW = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
OBSERVATIONS_PER_PATIENT = 30
NEXT_PAGES = 200
WARM_UP = 50
CHUNK = 5_000
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# What a follow-up record holds, in turn: hemoglobin, fetal hemoglobin, crises, stays.
_RESULTS = (
    ("718-7", LOINC, "Hemoglobin [Mass/volume] in Blood", "g/dL"),
    ("4576-5", LOINC, "Hemoglobin F/Hemoglobin.total in Blood", "%"),
    ("voe-count", "https://cgt-access.org/fhir/CodeSystem/outcome", "Vaso-occlusive events", None),
    ("hospitalization-count", "https://cgt-access.org/fhir/CodeSystem/outcome", "Stays", None),
)
_GIVEN = ("Ava", "Noah", "Zuri", "Kofi", "Lena", "Rafael", "Tia", "Jonah", "Esme", "Andrés")
_FAMILY = ("Morgan", "Ellis", "Quinn", "Reyes", "Okoye", "Baptiste", "Lindqvist", "Ortega")


def _figure(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, **extra}


def _percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile, as portal/dev/bench.py reports them."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def fhir_search_figures(
    folder: Path, *, selected: list[str], patients: int, requests: int
) -> Iterator[dict[str, Any]]:
    """The selected FHIR search figures, as dicts (the caller prints them as JSON lines)."""
    wanted = [name for name in FHIR_SEARCH_FIGURES if name in selected]
    if not wanted:
        return
    if patients < 1:
        raise ValueError("the FHIR search figures need patients >= 1")
    clock = FrozenClock(BENCH_NOW)
    world = _World.build(folder / "fhir-search.db", clock=clock, patients=patients)
    try:
        yield from _measure(world, selected=wanted, requests=requests)
    finally:
        world.factory.kw["bind"].dispose()


# --- the world --------------------------------------------------------------------------


@dataclass
class _World:
    url: str
    factory: sessionmaker[Session]
    clock: FrozenClock
    center_id: int
    center_patients: list[int]
    patients: int
    observations: int
    key: ECKey
    client_id: str

    @classmethod
    def build(cls, path: Path, *, clock: FrozenClock, patients: int) -> _World:
        url = f"sqlite:///{path}"
        upgrade_database(url)
        factory = make_session_factory(make_engine(url))
        key = ECKey.generate_key("P-384", parameters={"kid": "bench", "use": "sig"})
        client_id = f"bench-{uuid.uuid4().hex[:8]}"
        with transaction(factory) as session:
            seed_demo_data(session, clock=clock)
            _add_patients(session, clock=clock, count=patients)
            observations = _add_observations(session, clock=clock)
            center_id = session.scalar(select(TreatmentCenter.id).order_by(TreatmentCenter.id))
            assert center_id is not None
            register_client(
                session,
                clock=clock,
                actor=Actor.system("bench"),
                data=ClientInput(
                    client_id=client_id,
                    name="Bench center system",
                    center_id=str(center_id),
                    jwks_url="",
                    jwks=_jwks(key),
                    scopes=["system/*.rs"],
                ),
                allow_http_loopback=False,
            )
        with factory() as session:
            own = list(
                session.scalars(
                    select(Patient.id).where(Patient.center_id == center_id).order_by(Patient.id)
                )
            )
            total = session.scalar(select(Patient.id).order_by(Patient.id.desc()).limit(1)) or 0
        return cls(
            url=url,
            factory=factory,
            clock=clock,
            center_id=center_id,
            center_patients=own,
            patients=total,
            observations=observations,
            key=key,
            client_id=client_id,
        )


def _jwks(key: ECKey) -> str:
    return json.dumps({"keys": [key.as_dict(private=False)]})


def _add_patients(session: Session, *, clock: FrozenClock, count: int) -> None:
    """`count` fictional patients over the demo's centers (phones in 555-01xx only)."""
    now = clock.now()
    therapies = list(session.scalars(select(Therapy.id).order_by(Therapy.id)))
    places = [
        (state.id, state.code, state.time_zone, center.id)
        for state, center in session.execute(
            select(State, TreatmentCenter)
            .join(TreatmentCenter, TreatmentCenter.state_id == State.id)
            .order_by(State.id, TreatmentCenter.id)
        )
    ]
    table = Patient.__table__
    assert isinstance(table, Table)
    for start in range(0, count, CHUNK):
        rows = []
        for index in range(start, min(start + CHUNK, count)):
            state_id, code, zone, center_id = places[index % len(places)]
            infusion = now.date() - timedelta(days=(index * 37) % (15 * 365))
            rows.append(
                {
                    "state_id": state_id,
                    "center_id": center_id,
                    "therapy_id": therapies[index % len(therapies)],
                    "medicaid_id": f"{code}8{index:07d}",
                    "center_mrn": f"FHIRBENCH-{index:07d}",
                    "given_name": _GIVEN[index % len(_GIVEN)],
                    "family_name": _FAMILY[(index // len(_GIVEN)) % len(_FAMILY)],
                    "birth_date": date(infusion.year - 12 - index % 24, 1 + index % 12, 1),
                    "preferred_language": Language.ES if index % 5 == 0 else Language.EN,
                    "time_zone": zone,
                    "mobile_phone": f"+1{700 + index // 100}55501{index % 100:02d}",
                    "infusion_date": infusion,
                    "status": PatientStatus.ACTIVE,
                    "version_id": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        session.execute(insert(table), rows)


def _add_observations(session: Session, *, clock: FrozenClock) -> int:
    """`OBSERVATIONS_PER_PATIENT` results per patient, the four kinds in turn, a month
    apart (set-based inserts)."""
    now = clock.now()
    table = Observation.__table__
    assert isinstance(table, Table)
    patient_ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
    rows: list[dict[str, Any]] = []
    count = 0
    for patient_id in patient_ids:
        for number in range(OBSERVATIONS_PER_PATIENT):
            code, system, display, unit = _RESULTS[number % len(_RESULTS)]
            value = Decimal(9 + (patient_id + number) % 50 / 10) if unit else Decimal(number % 3)
            rows.append(
                {
                    "patient_id": patient_id,
                    "code_system": system,
                    "code": code,
                    "display": display,
                    "value_quantity": value,
                    "value_unit": unit or "1",
                    "effective_at": now - timedelta(days=30 * number + patient_id % 30),
                    "source": ObservationSource.CENTER,
                    "status": ObservationStatus.FINAL,
                    "version_id": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        if len(rows) >= CHUNK:
            session.execute(insert(table), rows)
            count += len(rows)
            rows = []
    if rows:
        session.execute(insert(table), rows)
        count += len(rows)
    return count


# --- measuring ----------------------------------------------------------------------------


def _measure(world: _World, *, selected: list[str], requests: int) -> Iterator[dict[str, Any]]:
    app = bench_app(url=world.url, clock=world.clock, factory=world.factory)
    extra = {"patients": world.patients, "observations": world.observations}
    with in_process(app) as client:
        headers = {"Authorization": f"Bearer {_token(client, world)}"}
        if set(FHIR_SEARCH_FIGURES[:3]) & set(selected):
            healthz = _healthz(client, requests)
            samples = _by_patient_and_code(client, headers, world, requests)
            p95 = round(_percentile(samples, 0.95), 3)
            values = {
                "fhir.search_p50_ms": (round(_percentile(samples, 0.50), 3), "ms"),
                "fhir.search_p95_ms": (p95, "ms"),
                "fhir.search_p95_ratio_healthz": (
                    round(p95 / round(_percentile(healthz, 0.95), 3), 3),
                    "ratio",
                ),
            }
            for name in FHIR_SEARCH_FIGURES[:3]:
                if name in selected:
                    value, unit = values[name]
                    yield _figure(name, value, unit, n=len(samples), **extra)
        if "fhir.search_next_page_p95_ms" in selected:
            pages, first = _next_pages(client, headers)
            yield _figure(
                "fhir.search_next_page_p95_ms",
                round(_percentile(pages, 0.95), 3),
                "ms",
                n=len(pages),
                first_page_ms=round(first, 3),
                **extra,
            )


def _token(client: TestClient, world: _World) -> str:
    """A token from `/auth/token`, as a center's system gets one (a signed assertion)."""
    now = world.clock.now()
    claims = {
        "iss": world.client_id,
        "sub": world.client_id,
        "aud": "http://testserver/auth/token",
        "exp": int((now + timedelta(minutes=4)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    header = {"alg": "ES384", "kid": "bench"}
    assertion = jwt.encode(header, claims, world.key, algorithms=["ES384"])
    response = client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": "system/*.rs",
        },
    )
    if response.status_code != 200:
        raise RuntimeError(f"the bench client got no token: {response.status_code}")
    token: str = response.json()["access_token"]
    return token


def _checked(response: Response, *, matches: bool) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"a FHIR search answered {response.status_code}: {response.text[:200]}")
    bundle: dict[str, Any] = response.json()
    if bundle.get("type") != "searchset" or (matches and not bundle.get("entry")):
        raise RuntimeError("a FHIR search did not find the patient's results")
    return bundle


def _healthz(client: TestClient, requests: int) -> list[float]:
    """Milliseconds of `/healthz` in the same run (the floor of any request here)."""
    for _ in range(WARM_UP):
        client.get("/healthz")
    samples: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get("/healthz")
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"/healthz answered {response.status_code}")
    return samples


def _by_patient_and_code(
    client: TestClient, headers: dict[str, str], world: _World, requests: int
) -> list[float]:
    """Milliseconds of each search (a different patient each time), after a warm-up."""
    patients = world.center_patients
    paths = [
        f"/fhir/Observation?patient={patients[(index * 7919) % len(patients)]}&code={LOINC}|718-7"
        for index in range(WARM_UP + requests)
    ]
    for path in paths[:WARM_UP]:
        _checked(client.get(path, headers=headers), matches=True)
    gc.collect()
    samples: list[float] = []
    for path in paths[WARM_UP:]:
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        _checked(response, matches=True)
    return samples


def _next_pages(client: TestClient, headers: dict[str, str]) -> tuple[list[float], float]:
    """Milliseconds of each `next` page of a center-wide search, and of its first page."""
    started = time.perf_counter()
    bundle = _checked(
        client.get("/fhir/Observation?code=718-7&_count=50", headers=headers), matches=True
    )
    first = (time.perf_counter() - started) * 1000
    samples: list[float] = []
    for _ in range(NEXT_PAGES):
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        started = time.perf_counter()
        response = client.get(following[0], headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        bundle = _checked(response, matches=True)
    if not samples:
        raise RuntimeError("the center-wide search had a single page")
    return samples, first
