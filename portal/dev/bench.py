"""The benchmarks behind `cgt-access bench` (and `make bench ONLY=prefix`).

Each figure is one JSON object per line: `{"name": ..., "value": ..., "unit": ...}`, plus
extra keys that say how it was measured ("n", "patients"). The set-up is built only when a
selected figure needs it: a throw-away SQLite file, migrated, seeded with the demo world and
filled with many more fictional patients (phone numbers in 555-01xx only, which reach nobody).
The dispatch figures (planning, sending, the dispatcher's tick) and the FHIR figures (search,
bulk export, ingest) build worlds of their own: portal/dev/bench_dispatch.py,
portal/dev/bench_fhir_search.py, portal/dev/bench_fhir_export.py and
portal/dev/bench_fhir_ingest.py.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyotp
from httpx import Response
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from coordination.followup.bulk import generate_schedules
from coordination.followup.models import FollowUpPlan, Visit, VisitStatus
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import sync_schedule
from core.audit.service import Actor
from core.clock import Clock, SystemClock
from core.db import make_engine, make_session_factory, transaction
from core.identity.models import Role, User
from core.models import Language, Patient, PatientStatus, State, Therapy, TreatmentCenter
from portal.dev.bench_app import bench_app, in_process
from portal.dev.bench_dispatch import DISPATCH_FIGURES, dispatch_figures
from portal.dev.bench_fhir_export import FHIR_EXPORT_FIGURES, fhir_export_figures
from portal.dev.bench_fhir_ingest import FHIR_INGEST_FIGURES, fhir_ingest_figures
from portal.dev.bench_fhir_search import FHIR_SEARCH_FIGURES, fhir_search_figures
from portal.dev.bench_pro import PRO_FIGURES, pro_figures
from portal.dev.bench_reporting_claims import CLAIMS_FIGURES, claims_figures
from portal.dev.bench_reporting_dashboard import DASHBOARD_FIGURES, dashboard_figures
from portal.dev.bench_reporting_outcomes import OUTCOME_FIGURES, outcome_figures
from portal.dev.demo import DEMO_PASSWORD, seed_demo_data, seed_demo_follow_up
from portal.migrate import upgrade_database

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

# Every figure this module can report, in the order it reports them.
SETUP_FIGURES = ("setup.migrate_s", "setup.seed_s")
PORTAL_FIGURES = (
    "portal.healthz_p50_ms",
    "portal.healthz_p95_ms",
    "portal.patient_home_p50_ms",
    "portal.patient_home_p95_ms",
    "portal.patient_home_p95_ratio_healthz",
)
SCHEDULE_FIGURES = (
    "schedule.enroll_10k_s",
    "schedule.visits_per_s",
    "schedule.regenerate_ms",
    "schedule.regenerate_p95_ms",
)
WORKLIST_FIGURES = ("worklist.p50_ms", "worklist.p95_ms", "worklist.p95_ratio_healthz")
WORKLIST_BUCKETS = (
    "overdue",
    "to_schedule",
    "unconfirmed",
    "move_requests",
    "reports",
    "unreachable",
    "ltfu_risk",
    "activity",
)
EDUCATION_FIGURES = ("education.section_p95_ms", "education.section_p95_ratio_healthz")
FIGURES = (
    SETUP_FIGURES
    + SCHEDULE_FIGURES
    + PORTAL_FIGURES
    + WORKLIST_FIGURES
    + DISPATCH_FIGURES
    + EDUCATION_FIGURES
    + PRO_FIGURES
    + FHIR_SEARCH_FIGURES
    + FHIR_EXPORT_FIGURES
    + FHIR_INGEST_FIGURES
    + OUTCOME_FIGURES
    + CLAIMS_FIGURES
    + DASHBOARD_FIGURES
)
# The portal world (demo data and `patients` more) serves these; the dispatch figures build
# worlds of their own (portal/bench_dispatch.py).
WORLD_FIGURES = (
    SETUP_FIGURES
    + SCHEDULE_FIGURES
    + PORTAL_FIGURES
    + WORKLIST_FIGURES
    + EDUCATION_FIGURES
    + PRO_FIGURES
)
BENCH_COORDINATOR_LOGIN = "coordinator.md@demo.cgt-access.test"
# The bench coordinator's authenticator secret (this throw-away database only).
BENCH_TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
REGENERATIONS = 50

WARM_UP = 100
CHUNK = 2_000
BENCH_PATIENT_LOGIN = "maya"  # the demo patient (portal/demo.py)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

_GIVEN = ("Ava", "Noah", "Zuri", "Kofi", "Lena", "Rafael", "Tia", "Jonah", "Esme", "Andrés")
_FAMILY = ("Morgan", "Ellis", "Quinn", "Reyes", "Okoye", "Baptiste", "Lindqvist", "Ortega")


def figure(name: str, value: float, unit: str, **extra: Any) -> str:
    """One JSON line as the Makefile contract describes it."""
    return json.dumps({"name": name, "value": value, "unit": unit, **extra})


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile (the smallest sample at or above `fraction` of them)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def run_benchmarks(
    *,
    only: str,
    patients: int,
    requests: int,
    future_rows: int = 1_000_000,
    export_observations: int = 1_000_000,
    fhir_resources: int = 10_000,
    claim_rows: int = 1_000_000,
    dashboard_patients: int = 100_000,
    outcome_patients: int = 100_000,
) -> Iterator[str]:
    """Run the figures whose name starts with `only`; yield one JSON line per figure.

    `future_rows` is the big outbox of `dispatch.tick_1m_ms`, `export_observations` the
    size of the `fhir.export_` run, `fhir_resources` the load of the FHIR ingest figures,
    `claim_rows` the claims file of `reporting.claims_import_rows_per_s`,
    `dashboard_patients` the world of `reporting.dashboard_p95_ms`, `outcome_patients` the
    world of `reporting.outcomes_*` (all smaller in the unit tests)."""
    selected = [name for name in FIGURES if name.startswith(only)]
    if not selected:
        return
    if patients < 0 or requests < 1:
        raise ValueError("patients must be >= 0 and requests >= 1")
    with (
        _quiet_logging(),
        _heap_set_aside(),
        tempfile.TemporaryDirectory(prefix="cgt-access-bench-") as folder,
    ):
        if any(name in selected for name in WORLD_FIGURES):
            yield from _world_figures(
                Path(folder), selected=selected, patients=patients, requests=requests
            )
        for item in dispatch_figures(
            Path(folder), selected=selected, patients=patients, future_rows=future_rows
        ):
            yield json.dumps(item)
        for item in fhir_search_figures(
            Path(folder), selected=selected, patients=patients, requests=requests
        ):
            yield json.dumps(item)
        for item in fhir_export_figures(
            Path(folder), selected=selected, observations=export_observations
        ):
            yield json.dumps(item)
        for item in fhir_ingest_figures(Path(folder), selected=selected, resources=fhir_resources):
            yield json.dumps(item)
        for item in outcome_figures(Path(folder), selected=selected, patients=outcome_patients):
            yield json.dumps(item)
        for item in claims_figures(Path(folder), selected=selected, rows=claim_rows):
            yield json.dumps(item)
        for item in dashboard_figures(Path(folder), selected=selected, patients=dashboard_patients):
            yield json.dumps(item)


@contextlib.contextmanager
def _heap_set_aside() -> Iterator[None]:
    """Leave what the process held before the run out of the collections the figures make
    between samples (`gc.freeze`): they then scan only the run's own objects. In a test
    worker, whose heap is large, each of those collections took seconds."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _world_figures(
    folder: Path, *, selected: list[str], patients: int, requests: int
) -> Iterator[str]:
    world = _World.build(folder / "bench.db", patients=patients)
    try:
        if "setup.migrate_s" in selected:
            yield figure("setup.migrate_s", round(world.migrate_s, 3), "s")
        if "setup.seed_s" in selected:
            yield figure("setup.seed_s", round(world.seed_s, 3), "s", patients=world.patient_count)
        yield from _schedule_figures(world, selected=selected, patients=patients)
        if any(name in selected for name in PORTAL_FIGURES + WORKLIST_FIGURES):
            yield from _portal_figures(world, selected=selected, requests=requests)
        yield from _education_figures(world, selected=selected, requests=requests)
        # Last: it adds a questionnaire response for every patient.
        yield from pro_figures(world, selected=selected, requests=requests)
    finally:
        world.factory.kw["bind"].dispose()


# --- set-up ---------------------------------------------------------------------------


@dataclass
class _World:
    url: str
    factory: sessionmaker[Session]
    clock: Clock
    patient_count: int
    patient_given_name: str
    migrate_s: float
    seed_s: float
    enroll_s: float
    visits: int

    @classmethod
    def build(cls, path: Path, *, patients: int) -> _World:
        url = f"sqlite:///{path}"
        started = time.perf_counter()
        upgrade_database(url)
        migrated = time.perf_counter()
        clock = SystemClock()
        factory = make_session_factory(make_engine(url))
        with transaction(factory) as session:
            users = seed_demo_data(session, clock=clock)
            seed_demo_follow_up(session, clock=clock, users=users)
        seeded = time.perf_counter()
        # What `schedule.enroll_10k_s` measures: the patients and their 15-year schedules.
        with transaction(factory) as session:
            _add_patients(session, clock=clock, count=patients)
            visits = generate_schedules(
                session, clock=clock, library=shipped_protocols(), patient_ids=None
            )
        enrolled = time.perf_counter()
        with transaction(factory) as session:
            _age_schedules(session, clock=clock)
            coordinator = session.get(User, users[BENCH_COORDINATOR_LOGIN].id)
            assert coordinator is not None
            coordinator.totp_secret, coordinator.totp_enabled_at = BENCH_TOTP, clock.now()
        with factory() as session:
            count = session.scalar(select(func.count()).select_from(Patient)) or 0
            patient = session.scalar(
                select(Patient)
                .join(User, User.patient_id == Patient.id)
                .where(User.id == users[BENCH_PATIENT_LOGIN].id)
            )
            assert patient is not None
            given_name = patient.given_name
        return cls(
            url=url,
            factory=factory,
            clock=clock,
            patient_count=count,
            patient_given_name=given_name,
            migrate_s=migrated - started,
            seed_s=seeded - migrated,
            enroll_s=enrolled - seeded,
            visits=visits,
        )


def _add_patients(session: Session, *, clock: Clock, count: int) -> None:
    """Bulk-insert `count` fictional patients spread over the seeded states and centers."""
    if count == 0:
        return
    now = clock.now()
    today = now.date()
    therapies = list(session.scalars(select(Therapy.id).order_by(Therapy.id)))
    places = [
        (state.id, state.code, state.time_zone, center.id, "410" if state.code == "MD" else "303")
        for state, center in session.execute(
            select(State, TreatmentCenter)
            .join(TreatmentCenter, TreatmentCenter.state_id == State.id)
            .order_by(State.id, TreatmentCenter.id)
        )
    ]
    assert places and therapies, "the demo seed must come first"
    statuses = (PatientStatus.ACTIVE,) * 8 + (
        PatientStatus.ENROLLED,
        PatientStatus.LOST_TO_FOLLOW_UP,
    )
    table = Patient.__table__
    assert isinstance(table, Table)
    for start in range(0, count, CHUNK):
        rows: list[dict[str, Any]] = []
        for index in range(start, min(start + CHUNK, count)):
            state_id, code, zone, center_id, area = places[index % len(places)]
            days = (index * 37) % (15 * 365)
            infusion = today - timedelta(days=days)
            rows.append(
                {
                    "state_id": state_id,
                    "center_id": center_id,
                    "therapy_id": therapies[index % len(therapies)],
                    # Demo ids look like MD00100200 and demo MRNs like MRN-40000: no clash.
                    "medicaid_id": f"{code}9{index:07d}",
                    "center_mrn": f"BENCH-{index:07d}",
                    "given_name": _GIVEN[index % len(_GIVEN)],
                    "family_name": _FAMILY[(index // len(_GIVEN)) % len(_FAMILY)],
                    "birth_date": date(infusion.year - 12 - index % 24, 1 + index % 12, 1),
                    "preferred_language": Language.ES if index % 5 == 0 else Language.EN,
                    "time_zone": zone,
                    "mobile_phone": f"+1{area}55501{index % 100:02d}",
                    "infusion_date": infusion,
                    "status": statuses[index % len(statuses)],
                    "created_at": now - timedelta(days=days + 60),
                    "updated_at": now,
                }
            )
        session.execute(insert(table), rows)


def _age_schedules(session: Session, *, clock: Clock) -> None:
    """Give the bulk cohort a past: most closed windows completed, some missed, some
    upcoming appointments (set-based, so the worklist has realistic buckets)."""
    today = clock.now().date()
    closed = Visit.window_end < today
    session.execute(
        update(Visit)
        .where(closed, Visit.id % 10 != 3)
        .values(
            status=VisitStatus.COMPLETED,
            completed_on=Visit.target_date,
            missed_acknowledged_at=None,
        )
    )
    # The rest stay missed; a third of them not yet followed up (the overdue bucket).
    session.execute(
        update(Visit).where(closed, Visit.id % 30 == 3).values(missed_acknowledged_at=None)
    )
    soon = clock.now() + timedelta(days=3)
    session.execute(
        update(Visit)
        .where(
            Visit.status == VisitStatus.DUE,
            Visit.window_start <= today,
            Visit.window_end >= today,
            Visit.id % 2 == 0,
        )
        .values(status=VisitStatus.SCHEDULED, appointment_at=soon, appointment_zone="UTC")
    )


# --- schedules ------------------------------------------------------------------------


def _schedule_figures(world: _World, *, selected: list[str], patients: int) -> Iterator[str]:
    if not any(name in selected for name in SCHEDULE_FIGURES):
        return
    extra = {"patients": patients, "visits": world.visits}
    if "schedule.enroll_10k_s" in selected:
        yield figure("schedule.enroll_10k_s", round(world.enroll_s, 3), "s", **extra)
    if "schedule.visits_per_s" in selected:
        per_second = world.visits / world.enroll_s if world.enroll_s > 0 else 0.0
        yield figure("schedule.visits_per_s", round(per_second, 1), "visit/s", **extra)
    if not any(name.startswith("schedule.regenerate") for name in selected):
        return
    samples = _regenerations(world)
    regenerate = {
        "schedule.regenerate_ms": round(percentile(samples, 0.50), 3),
        "schedule.regenerate_p95_ms": round(percentile(samples, 0.95), 3),
    }
    for name, value in regenerate.items():
        if name in selected:
            yield figure(name, value, "ms", n=len(samples), **extra)


def _regenerations(world: _World) -> list[float]:
    """Milliseconds to move one patient's schedule after an infusion-date change, each in
    its own transaction (load, regenerate, commit), as the edit form does."""
    library = shipped_protocols()
    actor = Actor.system("bench")
    with world.factory() as session:
        ids = list(
            session.scalars(
                select(FollowUpPlan.patient_id)
                .order_by(FollowUpPlan.patient_id)
                .limit(REGENERATIONS)
            )
        )
    samples: list[float] = []
    for patient_id in ids:
        started = time.perf_counter()
        with transaction(world.factory) as session:
            patient = session.get(Patient, patient_id)
            assert patient is not None and patient.infusion_date is not None
            patient.infusion_date += timedelta(days=9)
            change = sync_schedule(
                session, clock=world.clock, actor=actor, library=library, patient=patient
            )
        samples.append((time.perf_counter() - started) * 1000)
        if change.moved == 0 and change.created == 0:
            raise RuntimeError("regenerating a schedule moved no visit")
    return samples


# --- the portal -----------------------------------------------------------------------


def _portal_figures(world: _World, *, selected: list[str], requests: int) -> Iterator[str]:
    app = bench_app(url=world.url, clock=world.clock, factory=world.factory)
    wants_home = any(name in selected for name in PORTAL_FIGURES[2:])
    wants_worklist = any(name in selected for name in WORKLIST_FIGURES)
    with in_process(app) as client:
        healthz = _measure(client, ["/healthz"], requests, check=_is_ok)
        home: list[float] = []
        if wants_home:
            _log_in(client, BENCH_PATIENT_LOGIN, DEMO_PASSWORD)
            greeting = world.patient_given_name
            home = _measure(
                client, ["/home"], requests, check=lambda response: _shows(response, greeting)
            )
    worklist: list[float] = []
    if wants_worklist:
        with in_process(app) as client:
            _log_in(client, BENCH_COORDINATOR_LOGIN, DEMO_PASSWORD, totp_secret=BENCH_TOTP)
            paths = [f"/worklist?bucket={bucket}" for bucket in WORKLIST_BUCKETS]
            worklist = _measure(
                client, paths, requests, check=lambda response: _shows(response, 'id="results"')
            )

    extra = {"n": requests, "patients": world.patient_count}
    healthz_p95 = round(percentile(healthz, 0.95), 3)
    values = {
        "portal.healthz_p50_ms": (round(percentile(healthz, 0.50), 3), "ms"),
        "portal.healthz_p95_ms": (healthz_p95, "ms"),
    }
    if home:
        home_p95 = round(percentile(home, 0.95), 3)
        values["portal.patient_home_p50_ms"] = (round(percentile(home, 0.50), 3), "ms")
        values["portal.patient_home_p95_ms"] = (home_p95, "ms")
        values["portal.patient_home_p95_ratio_healthz"] = (ratio(home_p95, healthz_p95), "ratio")
    if worklist:
        worklist_p95 = round(percentile(worklist, 0.95), 3)
        values["worklist.p50_ms"] = (round(percentile(worklist, 0.50), 3), "ms")
        values["worklist.p95_ms"] = (worklist_p95, "ms")
        values["worklist.p95_ratio_healthz"] = (ratio(worklist_p95, healthz_p95), "ratio")
    for name in PORTAL_FIGURES + WORKLIST_FIGURES:
        if name in selected and name in values:
            value, unit = values[name]
            yield figure(name, value, unit, **extra)


def ratio(numerator: float, denominator: float) -> float:
    """The ratio of two figures as reported (from their rounded values), to 3 decimals."""
    if denominator <= 0:
        raise ValueError("the denominator figure is not positive")
    return round(numerator / denominator, 3)


def _measure(
    client: TestClient, paths: list[str], requests: int, *, check: Callable[[Response], None]
) -> list[float]:
    """Milliseconds of each of `requests` GETs (of `paths` in turn), after a warm-up; every
    answer checked."""
    for index in range(WARM_UP):
        check(client.get(paths[index % len(paths)]))
    gc.collect()
    samples: list[float] = []
    for index in range(requests):
        path = paths[index % len(paths)]
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        check(response)
    return samples


def _is_ok(response: Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(
            f"GET {response.request.url.path} answered {response.status_code}, not 200"
        )


def _shows(response: Response, text: str) -> None:
    _is_ok(response)
    if text not in response.text:
        raise RuntimeError(f"GET {response.request.url.path} does not show {text!r}")


def _log_in(
    client: TestClient, login: str, password: str, *, totp_secret: str | None = None
) -> None:
    """Log in through the real form (its page hands out the CSRF token and cookie), and
    through the second-factor step for staff."""
    page = client.get("/login")
    _is_ok(page)
    match = _CSRF.search(page.text)
    if match is None:
        raise RuntimeError("no CSRF token on /login")
    response = client.post(
        "/login", data={"login": login, "password": password, "csrf_token": match.group(1)}
    )
    if response.status_code != 303:
        raise RuntimeError(f"logging in as {login!r} failed: {response.status_code}")
    if totp_secret is not None:
        # The login page's token stops working at the login: the next page has the new one.
        page = client.get("/login/mfa")
        _is_ok(page)
        match = _CSRF.search(page.text)
        if match is None:
            raise RuntimeError("no CSRF token on /login/mfa")
        response = client.post(
            "/login/mfa",
            data={"code": pyotp.TOTP(totp_secret).now(), "csrf_token": match.group(1)},
        )
        if response.status_code != 303:
            raise RuntimeError(f"the second factor of {login!r} failed: {response.status_code}")


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Only JSON lines on stdout, and no per-request INFO lines (the access log, httpx,
    Alembic) on stderr either; warnings and errors still show."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


# --- education ------------------------------------------------------------------------


EDUCATION_MODULE = "what-is-gene-therapy"  # core: offered to the bench patient


def _education_figures(world: _World, *, selected: list[str], requests: int) -> Iterator[str]:
    """A module section page for the logged-in demo patient, with a login and ten progress
    rows (one per module) for every bulk patient, and its ratio to /healthz measured in
    the same run."""
    if not any(name in selected for name in EDUCATION_FIGURES):
        return
    from education.content import shipped_modules

    module = shipped_modules().get(EDUCATION_MODULE)
    assert module is not None
    with transaction(world.factory) as session:
        rows = _add_education_readers(session, clock=world.clock)
    app = bench_app(url=world.url, clock=world.clock, factory=world.factory)
    section = module.en.sections[1]
    path = f"/learn/{module.key}/{section.id}"
    with in_process(app) as client:
        healthz = _measure(client, ["/healthz"], requests, check=_is_ok)
        _log_in(client, BENCH_PATIENT_LOGIN, DEMO_PASSWORD)
        page = _measure(client, [path], requests, check=lambda r: _shows(r, 'id="section"'))
    extra = {"n": requests, "patients": world.patient_count, "progress_rows": rows}
    page_p95 = round(percentile(page, 0.95), 3)
    values = {
        "education.section_p95_ms": (page_p95, "ms"),
        "education.section_p95_ratio_healthz": (
            ratio(page_p95, round(percentile(healthz, 0.95), 3)),
            "ratio",
        ),
    }
    for name in EDUCATION_FIGURES:
        if name in selected:
            value, unit = values[name]
            yield figure(name, value, unit, **extra)


def _add_education_readers(session: Session, *, clock: Clock) -> int:
    """Give every patient without a login one (no password: nobody logs in with it) and
    a progress row in every module; the bench patient is half-way through the measured
    module. Returns the number of progress rows."""
    from education.content import shipped_modules
    from education.models import ModuleProgress

    now = clock.now()
    users = User.__table__
    progress = ModuleProgress.__table__
    assert isinstance(users, Table) and isinstance(progress, Table)
    missing = session.execute(
        select(Patient.id, Patient.given_name, Patient.preferred_language)
        .outerjoin(User, User.patient_id == Patient.id)
        .where(User.id.is_(None))
        .order_by(Patient.id)
    ).all()
    for start in range(0, len(missing), CHUNK):
        session.execute(
            insert(users),
            [
                {
                    "login": f"bench-reader-{patient_id}",
                    "display_name": given_name,
                    "role": Role.PATIENT,
                    "patient_id": patient_id,
                    "preferred_language": language,
                    "is_active": True,
                    "created_at": now,
                }
                for patient_id, given_name, language in missing[start : start + CHUNK]
            ],
        )
    modules = list(shipped_modules())
    bench_patient = session.scalar(select(User.id).where(User.login == BENCH_PATIENT_LOGIN))
    reader_ids = list(
        session.scalars(select(User.id).where(User.login.like("bench-reader-%")).order_by(User.id))
    )
    rows: list[dict[str, Any]] = []
    count = 0
    for index, user_id in enumerate(reader_ids):
        for module in modules:
            ids = module.section_ids
            done = ids[: 1 + (index + len(module.key)) % len(ids)]
            rows.append(
                {
                    "user_id": user_id,
                    "module_key": module.key,
                    "module_version": module.version,
                    "current_section": done[-1],
                    "sections_done": done,
                    "started_at": now - timedelta(days=index % 90),
                    "updated_at": now,
                }
            )
        if len(rows) >= CHUNK:
            session.execute(insert(progress), rows)
            count += len(rows)
            rows = []
    measured = shipped_modules().get(EDUCATION_MODULE)
    assert measured is not None and bench_patient is not None
    rows.append(
        {
            "user_id": bench_patient,
            "module_key": measured.key,
            "module_version": measured.version,
            "current_section": measured.section_ids[1],
            "sections_done": list(measured.section_ids[:1]),
            "started_at": now,
            "updated_at": now,
        }
    )
    session.execute(insert(progress), rows)
    return count + len(rows)
