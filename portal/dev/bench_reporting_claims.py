"""The claims figures of `cgt-access bench` (issue 12, "Scale and speed").

- `reporting.claims_import_rows_per_s`: `load_claims` reading, checking, matching and
  loading a 1,000,000-line claims file (a fictional extract of one state: inpatient and
  other-services lines for about 100,000 patients, some rows unmatched, some adjustments and
  voids of claims earlier in the file) into a throw-away SQLite database, committed; goal at
  least 50,000 rows per second.
- `reporting.claims_import_peak_mib`: the process's peak resident memory after that load
  (what the load kept in memory at most, on top of the set-up).
- `reporting.claims_reimport_ms`: loading the same file again (it changes nothing: the file's
  digest is known).

Everything is fictional: Medicaid IDs `MDB0000001`..., claim numbers `B...`.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert, text
from sqlalchemy.orm import Session

from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import make_engine, make_session_factory, transaction
from core.models import Language, Patient, PatientStatus, State, Therapy, TreatmentCenter
from portal.migrate import upgrade_database
from reporting.claims import LoadOutcome, load_claims

CLAIMS_FIGURES = (
    "reporting.claims_import_rows_per_s",
    "reporting.claims_import_peak_mib",
    "reporting.claims_reimport_ms",
)
BENCH_NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
BENCH_ROWS = 1_000_000
BENCH_PATIENTS = 100_000
CHUNK = 10_000
HEADER = (
    "FILE_TYPE,SUBMTG_STATE_CD,MSIS_IDENT_NUM,ORGNL_CLM_NUM,ADJSTMT_CLM_NUM,ADJSTMT_IND,"
    "LINE_NUM,SRVC_BGN_DT,SRVC_END_DT,ADMSN_DT,DSCHRG_DT,DGNS_CD_1,DGNS_CD_2,DGNS_CD_3,"
    "POS_CD,REV_CD\n"
)
# Diagnoses as a state's extract has them: crises, sickle-cell disease without crisis,
# fever, pain, the trait; with and without the dot.
_DIAGNOSES = (
    ("D57.00", "R50.9", ""),
    ("D5701", "", ""),
    ("D57.1", "Z79.899", ""),
    ("D57.211", "R07.9", "E86.0"),
    ("D57.40", "", ""),
    ("R52", "D57.1", ""),
    ("D57.3", "", ""),
    ("D57.819", "J18.9", "N17.9"),
)


def claims_figures(
    folder: Path, *, selected: list[str], rows: int = BENCH_ROWS
) -> Iterator[dict[str, Any]]:
    """The selected claims figures, as dicts (the caller prints them as JSON lines)."""
    wanted = [name for name in CLAIMS_FIGURES if name in selected]
    if not wanted:
        return
    url = f"sqlite:///{folder / 'claims.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    clock = FrozenClock(BENCH_NOW)
    try:
        with transaction(factory) as session:
            state_id = _seed(session, clock=clock, patients=max(rows // 10, 1))
        path = folder / "claims.csv"
        _write_file(path, rows=rows, patients=max(rows // 10, 1))
        gc.collect()
        actor = Actor.system("bench")
        started, cpu_started = time.perf_counter(), time.process_time()
        with transaction(factory) as session, path.open("rb") as stream:
            state = session.get(State, state_id)
            assert state is not None
            result = load_claims(
                session, clock=clock, actor=actor, state=state, filename=path.name, data=stream
            )
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        assert result.outcome is LoadOutcome.LOADED, result.problems[:5]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if "reporting.claims_import_rows_per_s" in wanted:
            yield _figure(
                "reporting.claims_import_rows_per_s",
                round(result.rows / elapsed),
                "rows/s",
                rows=result.rows,
                seconds=round(elapsed, 2),
                # The machine is shared: the CPU time spent and the load say how much of the
                # wall time was waiting for a core.
                cpu_seconds=round(cpu, 2),
                load_1m=round(os.getloadavg()[0], 2),
                loaded=result.loaded,
                unmatched=result.unmatched,
                replacing=result.replacing,
                voids=result.voids,
                goal=50_000,
            )
        if "reporting.claims_import_peak_mib" in wanted:
            # ru_maxrss is in KiB on Linux, bytes on macOS.
            kib = peak / 1024 if sys.platform == "darwin" else peak
            yield _figure("reporting.claims_import_peak_mib", round(kib / 1024), "MiB")
        if "reporting.claims_reimport_ms" in wanted:
            clock.advance(timedelta(minutes=5))
            started = time.perf_counter()
            with transaction(factory) as session, path.open("rb") as stream:
                state = session.get(State, state_id)
                assert state is not None
                again = load_claims(
                    session, clock=clock, actor=actor, state=state, filename=path.name, data=stream
                )
            assert again.outcome is LoadOutcome.ALREADY_LOADED
            yield _figure(
                "reporting.claims_reimport_ms",
                round((time.perf_counter() - started) * 1000, 1),
                "ms",
            )
    finally:
        engine.dispose()


def _figure(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, **extra}


def _seed(session: Session, *, clock: FrozenClock, patients: int) -> int:
    """One state, a center, a therapy and `patients` fictional patients (set-based inserts),
    with their history rows (the claims loader matches on both)."""
    now = clock.now()
    state = State(
        code="MD",
        name="Maryland",
        time_zone="America/New_York",
        program_name="Maryland Care Connect",
        program_phone="+14105550100",
        created_at=now,
    )
    therapy = Therapy(
        code="casgevy",
        brand_name="Casgevy",
        generic_name="exagamglogene autotemcel",
        manufacturer="Vertex Pharmaceuticals",
    )
    session.add_all([state, therapy])
    session.flush()
    center = TreatmentCenter(
        state_id=state.id, name="Bench Center", city="Baltimore", is_active=True, created_at=now
    )
    session.add(center)
    session.flush()
    table = Patient.__table__
    assert isinstance(table, Table)
    for start in range(0, patients, CHUNK):
        session.execute(
            insert(table),
            [
                {
                    "state_id": state.id,
                    "center_id": center.id,
                    "therapy_id": therapy.id,
                    "medicaid_id": _medicaid_id(index),
                    "center_mrn": f"BENCH-{index:07d}",
                    "given_name": "Bench",
                    "family_name": "Patient",
                    "birth_date": date(2004, 1 + index % 12, 1 + index % 28),
                    "preferred_language": Language.EN,
                    "time_zone": state.time_zone,
                    "infusion_date": date(2025, 1, 1) + timedelta(days=index % 600),
                    "status": PatientStatus.ACTIVE,
                    "created_at": now,
                    "updated_at": now,
                }
                for index in range(start, min(start + CHUNK, patients))
            ],
        )
    session.execute(
        text(
            "INSERT INTO patient_history (patient_id, version_id, valid_from, state_id,"
            " center_id, therapy_id, medicaid_id, infusion_date, status)"
            " SELECT id, version_id, created_at, state_id, center_id, therapy_id, medicaid_id,"
            " infusion_date, status FROM patients"
        )
    )
    return state.id


def _medicaid_id(index: int) -> str:
    return f"MDB{index:07d}"


def _write_file(path: Path, *, rows: int, patients: int) -> None:
    """A claims file of `rows` lines: claims of 1 to 4 lines, IP and OT, about 3% of rows for
    IDs no patient holds, and every 200th claim followed later by a replacement or a void."""
    first = date(2025, 1, 1)
    written = 0
    claim = 0
    pending: list[str] = []  # adjustments, written some claims later
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        lines: list[str] = []
        while written < rows:
            claim += 1
            patient = (claim * 7919) % patients
            medicaid = _medicaid_id(patient) if claim % 33 else f"MDX{claim:07d}"
            inpatient = claim % 5 == 0
            begin = first + timedelta(days=claim % 640)
            end = begin + timedelta(days=3 if inpatient else 0)
            codes = _DIAGNOSES[claim % len(_DIAGNOSES)]
            count = min(1 + claim % 4, rows - written)
            number = f"B{claim:09d}"
            for line in range(1, count + 1):
                if inpatient:
                    place, revenue = "", ("0120", "0250", "0300", "0450")[line - 1]
                    admission, discharge = begin.isoformat(), end.isoformat()
                else:
                    place, revenue = ("23", "11", "22", "23")[(claim + line) % 4], ""
                    admission = discharge = ""
                lines.append(
                    f"{'IP' if inpatient else 'OT'},MD,{medicaid},{number},,0,{line},"
                    f"{begin.isoformat()},{end.isoformat()},{admission},{discharge},"
                    f"{codes[0]},{codes[1]},{codes[2]},{place},{revenue}\n"
                )
            written += count
            if claim % 200 == 0 and written < rows:
                if claim % 400 == 0:
                    pending.append(
                        f"{'IP' if inpatient else 'OT'},MD,{medicaid},{number},A{claim:09d},1,1,"
                        f"{begin.isoformat()},{end.isoformat()},,,{codes[0]},,,,\n"
                    )
                else:
                    pending.append(
                        f"{'IP' if inpatient else 'OT'},MD,{medicaid},{number},A{claim:09d},4,1,"
                        f"{begin.isoformat()},{end.isoformat()},,,D57.1,,,,0450\n"
                    )
            if len(pending) > 5 and written < rows:
                lines.append(pending.pop(0))
                written += 1
            if len(lines) >= CHUNK:
                out.writelines(lines)
                lines = []
        out.writelines(lines)
