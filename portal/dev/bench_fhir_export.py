"""The bulk export figures of `cgt-access bench` (issue 11, "Bulk Data export").

- `fhir.export_resources_per_s`: a worker running one `$export` job of 1,000,000
  Observations (a few hundred patients of one center, every measure the platform keeps:
  hemoglobin, fetal hemoglobin, event counts, yes/no, text; one in fifty corrected) from the
  claim to the job marked complete with its NDJSON files written.
- `fhir.export_peak_rss_mb`: the peak resident memory of the process that ran it.

The export runs in a process of its own, as in a worker: its peak memory is that process's
alone (`VmHWM`, imports included), not the bench runner's, which built the data; the figure
also says how much it held before and during the export. The
data are made set-based (executemany of plain tuples, as the database stores them), never
through ORM objects. SQLite by default; `BENCH_EXPORT_DATABASE_URL` names an empty
PostgreSQL database to measure there instead.

The files are checked before a figure is reported: as many resources as were made, each
file within the per-file limit, and the first line of every file valid R4 by the inbound
validation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, select

from core.clock import FrozenClock
from core.db import make_engine, make_session_factory, transaction
from core.models import (
    Language,
    Observation,
    ObservationSource,
    ObservationStatus,
    Patient,
    PatientStatus,
    Therapy,
    TreatmentCenter,
)

FHIR_EXPORT_FIGURES = ("fhir.export_resources_per_s", "fhir.export_peak_rss_mb")
OBSERVATIONS = 1_000_000
PATIENTS = 300
FILE_MAX = 100_000
INSERT_ROWS = 20_000
CORRECTED_EVERY = 50
BENCH_NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# Run with `python -c` in the repository root: claim the one queued job, run it, report.
_CHILD_SCRIPT = """
import json, resource, sys, threading, time
from datetime import timedelta
from pathlib import Path
from core.clock import SystemClock
from core.db import make_engine, make_session_factory
from fhir_adapter.export_jobs import ExportConfig, claim_export, run_export
url, folder, per_file = sys.argv[1], sys.argv[2], int(sys.argv[3])
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
def memory_kb(field):
    # From /proc: this program's own. ru_maxrss would carry over the bench runner's peak,
    # which Linux keeps across the fork and exec that started us.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError("no " + field + " in /proc/self/status")
factory = make_session_factory(make_engine(url))
config = ExportConfig(export_dir=Path(folder), keep=timedelta(hours=1), max_per_file=per_file)
clock = SystemClock()
ready_kb = memory_kb("VmRSS")
during = [ready_kb]
done = threading.Event()
def watch():
    while not done.wait(0.2):
        during.append(memory_kb("VmRSS"))
threading.Thread(target=watch, daemon=True).start()
started, cpu_started = time.perf_counter(), cpu()
claim = claim_export(factory, clock=clock, owner="bench")
status = run_export(factory, clock=clock, claim=claim, config=config)
seconds, cpu_s = time.perf_counter() - started, cpu() - cpu_started
done.set()
during.append(memory_kb("VmRSS"))
print(json.dumps({
    "status": status.value, "s": seconds, "cpu_s": cpu_s, "ready_kb": ready_kb,
    "during_kb": max(during), "peak_kb": memory_kb("VmHWM"),
}))
"""

# (code system, code, display, kind, unit): what the platform keeps (outcomes.MEASURES).
_LOINC = "http://loinc.org"
_LTFU = "https://cgt-access.org/fhir/CodeSystem/ltfu"
_MEASURES = (
    (_LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood", "quantity", "g/dL"),
    (_LOINC, "4576-5", "Hemoglobin F/Hemoglobin.total in Blood", "quantity", "%"),
    (_LTFU, "voe-count", "Vaso-occlusive events since last visit", "count", "{events}"),
    (_LTFU, "hospitalization-count", "Hospitalizations since last visit", "count", "{stays}"),
    (
        _LTFU,
        "transfusion-count",
        "Red blood cell transfusions since last visit",
        "count",
        "{transfusions}",
    ),
    (_LTFU, "pro-completed", "Patient-reported outcome questionnaire completed", "boolean", None),
    (_LTFU, "adverse-events", "Adverse events since last visit", "text", None),
)


def _figure(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, **extra}


def fhir_export_figures(
    folder: Path, *, selected: list[str], observations: int = OBSERVATIONS
) -> Iterator[dict[str, Any]]:
    """The selected export figures, as dicts (the caller prints them as JSON lines)."""
    wanted = [name for name in FHIR_EXPORT_FIGURES if name in selected]
    if not wanted:
        return
    if observations < 1:
        raise ValueError("the export figures need at least one observation")
    url = os.environ.get("BENCH_EXPORT_DATABASE_URL") or f"sqlite:///{folder / 'export.db'}"
    _build_world(url, observations=observations)
    exports = folder / "exports"
    per_file = min(FILE_MAX, max(1, observations // 10))
    child = subprocess.run(
        [sys.executable, "-c", _CHILD_SCRIPT, url, str(exports), str(per_file)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    if child.returncode != 0:
        raise RuntimeError(f"the export process failed:\n{child.stderr[-2000:]}")
    report = json.loads(child.stdout.strip().splitlines()[-1])
    if report["status"] != "complete":
        raise RuntimeError(f"the export ended {report['status']}")
    files = _check_files(exports, observations=observations, per_file=per_file)
    extra = {"n": observations, "patients": PATIENTS, "files": files, "backend": url.split(":")[0]}
    if "fhir.export_resources_per_s" in wanted:
        yield _figure(
            "fhir.export_resources_per_s",
            round(observations / report["s"], 1),
            "resource/s",
            s=round(report["s"], 3),
            # The export's own CPU time: on a busy machine the wall-clock rate falls, this
            # one much less.
            cpu_s=round(report["cpu_s"], 3),
            per_cpu_s=round(observations / report["cpu_s"], 1),
            **extra,
        )
    if "fhir.export_peak_rss_mb" in wanted:
        yield _figure(
            "fhir.export_peak_rss_mb",
            round(report["peak_kb"] / 1024, 1),
            "MB",
            # Resident memory before the export began (imports done) and the most it held
            # while exporting (sampled five times a second): the export's own share, which
            # does not grow with the number of resources. The peak may be the imports'.
            ready_mb=round(report["ready_kb"] / 1024, 1),
            exporting_mb=round(report["during_kb"] / 1024, 1),
            **extra,
        )


# --- the data ------------------------------------------------------------------------------


def _build_world(url: str, *, observations: int) -> None:
    """Migrate, seed the demo world, add PATIENTS patients of one center with
    `observations` observations between them, a FHIR client and its queued export job."""
    from fhir_adapter.clients import ClientInput, register_client
    from fhir_adapter.models import ExportJob, ExportStatus
    from portal.dev.demo import seed_demo_data
    from portal.migrate import upgrade_database

    upgrade_database(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    clock = FrozenClock(BENCH_NOW)
    try:
        with transaction(factory) as session:
            seed_demo_data(session, clock=clock)
            center = session.scalars(select(TreatmentCenter).order_by(TreatmentCenter.id)).first()
            therapy = session.scalars(select(Therapy).order_by(Therapy.id)).first()
            assert center is not None and therapy is not None
            connection = session.connection()
            patient_ids = _add_patients(connection, center=center, therapy=therapy, clock=clock)
            _add_observations(connection, patient_ids=patient_ids, count=observations, clock=clock)
            from core.audit.service import Actor

            client = register_client(
                session,
                clock=clock,
                actor=Actor.system("bench"),
                data=ClientInput(
                    name="Bench export system",
                    center_id=str(center.id),
                    jwks_url="https://keys.example.org/jwks.json",
                    scopes=["system/*.rs"],
                ),
                allow_http_loopback=False,
            )
            session.add(
                ExportJob(
                    job_id="bench-export-job-0000000000000000",
                    client_pk=client.id,
                    center_id=center.id,
                    level="system",
                    request_url="http://bench.invalid/fhir/$export?_type=Observation",
                    types=["Observation"],
                    since=None,
                    output_format="application/fhir+ndjson",
                    status=ExportStatus.QUEUED,
                    requested_at=clock.now(),
                    updated_at=clock.now(),
                )
            )
    finally:
        engine.dispose()


def _stored(table: Table, connection: Connection, column: str, value: Any) -> Any:
    """`value` as the database stores it in `column` (what an executemany of plain tuples
    must send: the column type's own conversion, e.g. an instant on SQLite)."""
    # The dialect's own conversion (SQLite stores an instant as SQLAlchemy writes it).
    processor = (
        table.c[column].type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
    )
    return processor(value) if processor is not None else value


def _insert_tuples(
    connection: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    # Table and column names from our own metadata; the values go as parameters.
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([marker] * len(columns))})"  # noqa: S608, E501
    connection.exec_driver_sql(sql, rows)


def _add_patients(
    connection: Connection, *, center: TreatmentCenter, therapy: Therapy, clock: FrozenClock
) -> list[int]:
    table = Patient.__table__
    assert isinstance(table, Table)
    now = clock.now()
    columns = (
        "state_id",
        "therapy_id",
        "center_id",
        "medicaid_id",
        "center_mrn",
        "given_name",
        "family_name",
        "birth_date",
        "preferred_language",
        "time_zone",
        "mobile_phone",
        "infusion_date",
        "status",
        "version_id",
        "created_at",
        "updated_at",
    )
    stored_now = _stored(table, connection, "created_at", now)
    rows = []
    for index in range(PATIENTS):
        infusion = now.date() - timedelta(days=30 + index * 17 % 5000)
        values = {
            "state_id": center.state_id,
            "therapy_id": therapy.id,
            "center_id": center.id,
            "medicaid_id": f"XB{index:08d}",
            "center_mrn": f"EXPORT-{index:06d}",
            "given_name": "Bench",
            "family_name": f"Export {index}",
            "birth_date": infusion.replace(year=infusion.year - 15 - index % 20, day=1),
            "preferred_language": Language.ES if index % 4 == 0 else Language.EN,
            "time_zone": "America/New_York",
            "mobile_phone": None,
            "infusion_date": infusion,
            "status": PatientStatus.ACTIVE,
            "version_id": 1,
        }
        stored = [_stored(table, connection, name, values[name]) for name in columns[:-2]]
        stored += [stored_now, stored_now]
        rows.append(tuple(stored))
    _insert_tuples(connection, table, columns, rows)
    return list(
        connection.scalars(
            select(Patient.id).where(Patient.center_mrn.like("EXPORT-%")).order_by(Patient.id)
        )
    )


def _add_observations(
    connection: Connection, *, patient_ids: list[int], count: int, clock: FrozenClock
) -> None:
    table = Observation.__table__
    assert isinstance(table, Table)
    columns = (
        "patient_id",
        "code_system",
        "code",
        "display",
        "value_quantity",
        "value_unit",
        "value_text",
        "value_boolean",
        "effective_at",
        "source",
        "status",
        "version_id",
        "created_at",
        "updated_at",
    )
    now = clock.now()
    days = 15 * 365
    # Instants as stored, one per day of fifteen years (and the day after, when recorded).
    instants = [
        _stored(table, connection, "effective_at", now - timedelta(days=day, hours=3))
        for day in range(days + 1)
    ]
    source = _stored(table, connection, "source", ObservationSource.CENTER)
    final = _stored(table, connection, "status", ObservationStatus.FINAL)
    amended = _stored(table, connection, "status", ObservationStatus.AMENDED)
    quantities = [
        _stored(table, connection, "value_quantity", Decimal(f"{9 + tenth / 10:.1f}"))
        for tenth in range(60)
    ]
    counts = [_stored(table, connection, "value_quantity", Decimal(n)) for n in range(4)]
    rows: list[tuple[Any, ...]] = []
    for index in range(count):
        system, code, display, kind, unit = _MEASURES[index % len(_MEASURES)]
        quantity = text = boolean = None
        if kind == "quantity":
            quantity = quantities[index % len(quantities)]
        elif kind == "count":
            quantity = counts[index % len(counts)]
        elif kind == "boolean":
            boolean = index % 3 != 0
        else:
            text = "None reported" if index % 5 else "Headache after the visit, resolved"
        day = (index * 7) % days
        corrected = index % CORRECTED_EVERY == 0
        rows.append(
            (
                patient_ids[index % len(patient_ids)],
                system,
                code,
                display,
                quantity,
                unit,
                text,
                boolean,
                instants[day + 1],
                source,
                amended if corrected else final,
                2 if corrected else 1,
                instants[day],
                instants[max(0, day - 1)] if corrected else None,
            )
        )
        if len(rows) >= INSERT_ROWS:
            _insert_tuples(connection, table, columns, rows)
            rows = []
    if rows:
        _insert_tuples(connection, table, columns, rows)


# --- checking the result -------------------------------------------------------------------


def _check_files(exports: Path, *, observations: int, per_file: int) -> int:
    """The export wrote every observation, no file over the limit, each file's first line a
    valid Observation; returns how many files."""
    from fhir_adapter.validation import validate_resource

    files = sorted(exports.glob("*/Observation-*.ndjson"))
    total = 0
    for path in files:
        with path.open("rb") as lines:
            first = lines.readline()
            count = 1 + sum(1 for _ in lines)
        if count > per_file:
            raise RuntimeError(f"{path.name} holds {count} resources, more than {per_file}")
        total += count
        result = validate_resource(json.loads(first), expected_type="Observation")
        if result.errors:
            raise RuntimeError(f"{path.name}: {[issue.as_json() for issue in result.errors]}")
    if total != observations:
        raise RuntimeError(f"the export wrote {total} of {observations} observations")
    return len(files)
