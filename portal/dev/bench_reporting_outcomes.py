"""The outcome figures of `cgt-access bench` (issue 12, "Scale and speed").

- `reporting.outcomes_100k_s`: every measure of the shipped agreements (`outcome_cube` of each:
  the database evaluates every patient and counts by state, center, infusion quarter and
  status) for 100,000 infused patients, 3,000,000 observations and 1,000,000 claim lines,
  on SQLite; the goal is under 3 s.
- `reporting.outcomes_100k_pg_s`: the same on PostgreSQL, in a throw-away cluster started
  the way the tests start theirs (tests/support/pg_cluster.py: the bench runs from the
  repository root); skipped, with a note, where the PostgreSQL server binaries are absent.
- `reporting.outcomes_ratio_count`: the SQLite figure over a plain `COUNT(*)` of the
  observations table in the same run.

The data is made with set-based `INSERT ... SELECT` statements over a table of numbers, so
building it takes seconds, not the evaluation's time: half the patients get Casgevy, half
Lyfgenia, infused over 2025-2026 in six states and thirty centers; thirty observations each
(hemoglobin, fetal hemoglobin, the visit counts, some confirmed pain-crisis reports), one in
a hundred corrected (a revision kept); ten claim lines each, a tenth of them for a
vaso-occlusive crisis, some in hospital, some replaced by an adjustment; one patient in fifty
lost to follow-up, one in a hundred deceased, one in a hundred moved to another state.
Everything is fictional and lives in throw-away databases. The statements are put together
from this module's constants only (hence no SQL-injection warnings here).
"""

# ruff: noqa: S608

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, column, func, insert, select, text
from sqlalchemy import table as sa_table
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory, transaction
from core.models import Observation, State, Therapy, TreatmentCenter
from portal.migrate import upgrade_database
from reporting.agreements import shipped_agreements
from reporting.outcomes import AsOf, outcome_cube

OUTCOME_FIGURES = (
    "reporting.outcomes_100k_s",
    "reporting.outcomes_100k_pg_s",
    "reporting.outcomes_ratio_count",
)
PATIENTS = 100_000
OBSERVATIONS_PER_PATIENT = 30
CLAIM_LINES_PER_PATIENT = 10
# The moment the figures look from: after every infusion, most windows closed.
AS_OF = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
LOADED_AT = "2026-10-01 08:00:00"
STATES = (
    ("MD", "Maryland", "America/New_York"),
    ("CO", "Colorado", "America/Denver"),
    ("GA", "Georgia", "America/New_York"),
    ("TX", "Texas", "America/Chicago"),
    ("NY", "New York", "America/New_York"),
    ("CA", "California", "America/Los_Angeles"),
)
CENTERS_PER_STATE = 5
RUNS = 3  # the evaluation is timed this many times; the median is reported


def outcome_figures(
    folder: Path, *, selected: list[str], patients: int = PATIENTS
) -> Iterator[dict[str, Any]]:
    """The selected outcome figures, as dicts (the caller prints them as JSON lines)."""
    wanted = [name for name in OUTCOME_FIGURES if name in selected]
    if not wanted:
        return
    if patients < 100:
        raise ValueError("the outcome figures need at least 100 patients")
    sizes = {
        "patients": patients,
        "observations": patients * OBSERVATIONS_PER_PATIENT,
        "claim_lines": patients * CLAIM_LINES_PER_PATIENT,
    }
    if {"reporting.outcomes_100k_s", "reporting.outcomes_ratio_count"} & set(wanted):
        engine = make_engine(f"sqlite:///{folder / 'outcomes.db'}")
        try:
            seconds, count_seconds = _measure(engine, patients=patients)
        finally:
            engine.dispose()
        if "reporting.outcomes_100k_s" in wanted:
            yield {
                "name": "reporting.outcomes_100k_s",
                "value": round(seconds, 3),
                "unit": "s",
                "database": "sqlite",
                "runs": RUNS,
                **sizes,
            }
        if "reporting.outcomes_ratio_count" in wanted:
            yield {
                "name": "reporting.outcomes_ratio_count",
                "value": round(seconds / count_seconds, 1) if count_seconds > 0 else 0.0,
                "unit": "ratio",
                "count_observations_s": round(count_seconds, 4),
                **sizes,
            }
    if "reporting.outcomes_100k_pg_s" in wanted:
        yield from _postgresql_figure(patients=patients, sizes=sizes)


def _postgresql_figure(*, patients: int, sizes: dict[str, int]) -> Iterator[dict[str, Any]]:
    try:
        from tests.support.pg_cluster import PostgresUnavailable, start_cluster
    except ImportError:  # an installed copy without the repository's tests
        yield _skipped("tests/support/pg_cluster.py is not here (run from the repository)")
        return
    try:
        cluster = start_cluster()
    except PostgresUnavailable as problem:
        yield _skipped(f"PostgreSQL server binaries not found: {problem}")
        return
    try:
        engine = make_engine(cluster.create_database("bench_outcomes"))
        try:
            seconds, _count = _measure(engine, patients=patients)
        finally:
            engine.dispose()
    finally:
        cluster.stop()
    yield {
        "name": "reporting.outcomes_100k_pg_s",
        "value": round(seconds, 3),
        "unit": "s",
        "database": "postgresql",
        "runs": RUNS,
        **sizes,
    }


def _skipped(note: str) -> dict[str, Any]:
    # No value: a missing figure must not read as a fast one.
    return {
        "name": "reporting.outcomes_100k_pg_s",
        "value": None,
        "unit": "s",
        "skipped": note,
    }


def _measure(engine: Engine, *, patients: int) -> tuple[float, float]:
    """(median seconds of every measure of the shipped agreements, median seconds of a
    COUNT(*) over the observations), on a world built in `engine`'s database."""
    upgrade_database(engine.url.render_as_string(hide_password=False))
    factory = make_session_factory(engine)
    build_world(factory, patients=patients)
    library = shipped_agreements()
    as_of = AsOf(AS_OF)
    evaluations: list[float] = []
    counts: list[float] = []
    with factory() as session:
        session.execute(text("ANALYZE"))  # both databases: fresh statistics for the planner
        session.commit()
        for _ in range(RUNS):
            gc.collect()
            started = time.perf_counter()
            for agreement in library.current():
                cube = outcome_cube(session, agreement=agreement, as_of=as_of)
                assert cube.measures
            evaluations.append(time.perf_counter() - started)
            started = time.perf_counter()
            session.scalar(select(func.count()).select_from(Observation))
            counts.append(time.perf_counter() - started)
            session.rollback()
    return statistics.median(evaluations), statistics.median(counts)


# --- the world --------------------------------------------------------------------------------


def build_world(factory: sessionmaker[Session], *, patients: int) -> None:
    """States, centers, both therapies, then patients, their history, observations (with
    revisions), claim files and lines, each table in one set-based statement or a few."""
    with transaction(factory) as session:
        dialect = session.get_bind().dialect.name
        now = datetime(2026, 11, 1, tzinfo=UTC)
        therapies = {}
        for code, brand, generic, maker in (
            ("casgevy", "Casgevy", "exagamglogene autotemcel", "Vertex Pharmaceuticals"),
            ("lyfgenia", "Lyfgenia", "lovotibeglogene autotemcel", "Genetix Biotherapeutics"),
        ):
            therapy = Therapy(code=code, brand_name=brand, generic_name=generic, manufacturer=maker)
            session.add(therapy)
            therapies[code] = therapy
        for index, (code, name, zone) in enumerate(STATES):
            state = State(
                code=code,
                name=name,
                time_zone=zone,
                program_name=f"{name} Care Connect",
                program_phone=f"+1{700 + index}5550100",
                created_at=now,
            )
            session.add(state)
            session.flush()
            for number in range(CENTERS_PER_STATE):
                session.add(
                    TreatmentCenter(
                        state_id=state.id,
                        name=f"Bench Center {code}-{number}",
                        city="Benchville",
                        is_active=True,
                        created_at=now,
                    )
                )
        session.flush()
        # Ids are 1.. in insertion order in a fresh database.
        assert therapies["casgevy"].id == 1 and therapies["lyfgenia"].id == 2
        _numbers(session, count=max(patients, OBSERVATIONS_PER_PATIENT, CLAIM_LINES_PER_PATIENT))
        for statement in _world_statements(dialect, patients=patients):
            session.execute(text(statement))
        session.execute(text("DROP TABLE bench_numbers"))


def _numbers(session: Session, *, count: int) -> None:
    session.execute(text("CREATE TABLE bench_numbers (i INTEGER PRIMARY KEY)"))
    numbers = [{"i": i} for i in range(count)]
    table = sa_table("bench_numbers", column("i"))
    for start in range(0, count, 50_000):
        session.execute(insert(table), numbers[start : start + 50_000])


def _world_statements(dialect: str, *, patients: int) -> list[str]:
    """The INSERT ... SELECT statements, written for `dialect` (date arithmetic differs)."""

    def plus_days(base: str, days: str) -> str:
        if dialect == "postgresql":
            return f"(DATE {base} + ({days}))"
        return f"date({base}, '+' || ({days}) || ' days')"

    def instant(day: str, hour: int = 12) -> str:
        if dialect == "postgresql":
            return f"(({day})::timestamp + INTERVAL '{hour} hours') AT TIME ZONE 'UTC'"
        return f"(({day}) || ' {hour:02d}:00:00.000000')"

    def json(expression: str) -> str:
        return f"CAST({expression} AS JSON)" if dialect == "postgresql" else expression

    loaded = (
        f"TIMESTAMP WITH TIME ZONE '{LOADED_AT}+00'"
        if dialect == "postgresql"
        else (f"'{LOADED_AT}.000000'")
    )
    infusion = plus_days("'2025-01-01'", "(n.i * 7) % 690")
    state = f"1 + (n.i % {len(STATES)})"
    center = f"1 + ((n.i % {len(STATES)}) * {CENTERS_PER_STATE} + (n.i / 7) % {CENTERS_PER_STATE})"
    status = (
        "CASE WHEN n.i % 100 = 7 THEN 'deceased' WHEN n.i % 50 = 3 THEN 'lost_to_follow_up' "
        "ELSE 'active' END"
    )
    created = (
        "'2024-12-01 00:00:00.000000'"
        if dialect == "sqlite"
        else ("TIMESTAMP WITH TIME ZONE '2024-12-01 00:00:00+00'")
    )
    changed = (
        "'2026-06-01 00:00:00.000000'"
        if dialect == "sqlite"
        else ("TIMESTAMP WITH TIME ZONE '2026-06-01 00:00:00+00'")
    )
    statements = [
        f"""INSERT INTO patients (id, state_id, therapy_id, center_id, medicaid_id, given_name,
            family_name, birth_date, preferred_language, time_zone, infusion_date, status,
            version_id, created_at, updated_at)
        SELECT n.i + 1, {state}, 1 + n.i % 2, {center}, 'B' || n.i, 'Bench', 'Patient',
            {plus_days("'2000-01-01'", "n.i % 5000")}, 'en', 'America/New_York', {infusion},
            {status}, 1, {created}, {created}
        FROM bench_numbers n WHERE n.i < {patients}""",
        # The first version: every patient active from the start.
        """INSERT INTO patient_history (patient_id, version_id, valid_from, state_id,
            center_id, therapy_id, medicaid_id, infusion_date, status)
        SELECT id, 1, created_at, state_id, center_id, therapy_id, medicaid_id,
            infusion_date, 'active' FROM patients""",
        # A second version: left follow-up, or moved to the next state, in June 2026.
        f"""INSERT INTO patient_history (patient_id, version_id, valid_from, state_id,
            center_id, therapy_id, medicaid_id, infusion_date, status)
        SELECT id, 2, {changed},
            CASE WHEN id % 100 = 11 THEN 1 + state_id % {len(STATES)} ELSE state_id END,
            center_id, therapy_id, medicaid_id, infusion_date, status
        FROM patients WHERE status <> 'active' OR id % 100 = 11""",
    ]
    # Thirty observations a patient: what each visit records, spread over the months after
    # the infusion (the demo's kinds; the hemoglobins are what the agreements read).
    kinds = [
        ("http://loinc.org", "718-7", "Hemoglobin", "g/dL", "9 + (p.id + k.i) % 60 / 10.0"),
        ("http://loinc.org", "4576-5", "Hemoglobin F", "%", "5 + (p.id * 3 + k.i) % 400 / 10.0"),
        ("https://cgt-access.org/fhir/CodeSystem/ltfu", "voe-count", "VOE", "{events}", "0"),
        (
            "https://cgt-access.org/fhir/CodeSystem/ltfu",
            "hospitalization-count",
            "Stays",
            "{stays}",
            "0",
        ),
        ("https://cgt-access.org/fhir/CodeSystem/ltfu", "pain-crisis", "Pain crisis", None, None),
    ]
    cases = {
        column: "CASE k.i % 5 "
        + " ".join(
            f"WHEN {index} THEN {_sql_value(kind[position])}" for index, kind in enumerate(kinds)
        )
        + " END"
        for column, position in (("code_system", 0), ("code", 1), ("display", 2), ("unit", 3))
    }
    value = (
        "CASE k.i % 5 "
        + " ".join(f"WHEN {index} THEN {kind[4] or 'NULL'}" for index, kind in enumerate(kinds))
        + " END"
    )
    effective_day = plus_days("'2025-01-01'", "(p.id * 7) % 690 + 20 + k.i * 23")
    statements.append(
        f"""INSERT INTO observations (patient_id, code_system, code, display, value_quantity,
            value_unit, value_text, effective_at, source, status, version_id, created_at,
            updated_at)
        SELECT p.id, {cases["code_system"]}, {cases["code"]}, {cases["display"]}, {value},
            {cases["unit"]}, CASE k.i % 5 WHEN 4 THEN 'reported' ELSE NULL END,
            {instant(effective_day)}, CASE k.i % 5 WHEN 4 THEN 'patient' ELSE 'center' END,
            CASE WHEN k.i % 5 = 4 AND p.id % 4 <> 0 THEN 'entered-in-error'
                 WHEN (p.id + k.i) % 100 = 0 THEN 'corrected' ELSE 'final' END,
            CASE WHEN (p.id + k.i) % 100 = 0 THEN 2 ELSE 1 END,
            {instant(effective_day, 18)},
            CASE WHEN (p.id + k.i) % 100 = 0 THEN {instant(effective_day, 20)} ELSE NULL END
        FROM patients p JOIN bench_numbers k ON k.i < {OBSERVATIONS_PER_PATIENT}"""
    )
    # The version each correction replaced.
    statements.append(
        """INSERT INTO observation_revisions (observation_id, version_id, status,
            value_quantity, value_unit, effective_at, recorded_at, replaced_at,
            replaced_by_label, reason)
        SELECT id, 1, 'final', value_quantity + 1, value_unit, effective_at, created_at,
            updated_at, 'bench', 'typing error'
        FROM observations WHERE version_id = 2"""
    )
    # Claims: one file a state, ten lines a patient; a tenth for a crisis, a third of those
    # in hospital; one line in fifty replaced by an adjustment (both kept).
    diagnoses = json("""CASE WHEN (p.id + k.i) % 10 = 0 THEN '["D57.00"]' ELSE '["Z09"]' END""")
    claim_day = plus_days("'2025-01-01'", "(p.id * 7) % 690 + 10 + k.i * 61")
    statements += [
        f"""INSERT INTO claim_files (state_id, filename, sha256, loaded_at, loaded_by_label,
            rows_total, rows_loaded, rows_replacing, rows_unchanged, rows_unmatched)
        SELECT id, 'bench-' || code || '.csv', 'bench' || id, {loaded}, 'bench', 0, 0, 0, 0, 0
        FROM states""",
        f"""INSERT INTO claim_lines (file_id, state_id, patient_id, medicaid_id, claim_id,
            line_number, claim_type, service_begin, service_end, diagnoses, is_vaso_occlusive,
            is_inpatient_stay, is_ed_visit, content_hash, loaded_at, superseded_at)
        SELECT f.id, p.state_id, p.id, p.medicaid_id, 'C' || p.id || '-' || k.i, 1,
            CASE WHEN (p.id + k.i) % 3 = 0 THEN 'IP' ELSE 'OT' END,
            {claim_day}, {claim_day},
            {diagnoses},
            (p.id + k.i) % 10 = 0, (p.id + k.i) % 3 = 0, (p.id + k.i) % 7 = 0,
            'h' || p.id || '-' || k.i, {loaded},
            CASE WHEN (p.id * 3 + k.i) % 50 = 0 THEN {loaded} ELSE NULL END
        FROM patients p JOIN bench_numbers k ON k.i < {CLAIM_LINES_PER_PATIENT}
        JOIN claim_files f ON f.state_id = p.state_id""",
    ]
    return statements


def _sql_value(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"
