"""Rebate statements (reporting/rebates.py) and snapshots (reporting/snapshots.py) on the
hand-computed cohort of test_outcomes.py, on SQLite and PostgreSQL.

The measure `no-voc-stay` (10% of 1,000,000: 100,000.00 a patient), Maryland's patients,
by quarter. A result not met is owed in the quarter it was decided, to the state the
patient was in that day; a past quarter is computed as of its end; a result that changed
later shows as added or withdrawn in the quarter it changed:

quarter   owed                                 added           withdrawn
2025-Q3   start_day, event_then_died, adjusted
2025-Q4
2026-Q1   moved_state (in Maryland until May)                  adjusted (its claim adjusted
                                                               on 2026-02-01: no crisis)
2026-Q2
2026-Q3   late_claim
2026-Q4   (runs: as of 2026-11-27)             moved_infusion (its infusion date set right
                                               on 2026-10-01 puts its August stay in the
                                               window; decided 2026-08-10, in 2026-Q3)

Added up: 5 patients, Maryland's five results not met today."""

from __future__ import annotations

import csv
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination import locks
from coordination.locks import acquire_lock
from core.audit.models import AuditEvent
from core.clock import FrozenClock
from core.models import Patient
from portal.scheduler import build_scheduler
from reporting import snapshots
from reporting.agreements import AgreementLibrary, shipped_agreements
from reporting.jobs import SNAPSHOT_LOCK, nightly_snapshots
from reporting.models import ReportSnapshot
from reporting.outcome_report import Selection
from reporting.outcomes import AsOf, outcome_cube
from reporting.program import Period
from reporting.rebates import LineKind, Quarter, statement_counts, statement_lines
from reporting.snapshots import NIGHTLY, cube_of, reproduce, take_snapshot, take_snapshots
from tests.conftest import Browser, Database, plain
from tests.integration.reporting.conftest import Staff
from tests.integration.reporting.test_outcomes import (
    STAY_BY_PERIOD,
    World,
    assert_no_small_count,
    build,
    cells_of,
    counted,
)
from tests.support.outcome_world import agreement_for_tests, claim

MEASURE = "no-voc-stay"
UNIT = 100_000

# quarter: (owed, added, withdrawn) patients of `no-voc-stay` in Maryland.
EXPECTED_MARYLAND = {
    "2025-Q3": ({"start_day", "event_then_died", "adjusted"}, set(), set()),
    "2025-Q4": (set(), set(), set()),
    "2026-Q1": ({"moved_state"}, set(), {"adjusted"}),
    "2026-Q2": (set(), set(), set()),
    "2026-Q3": ({"late_claim"}, set(), set()),
    "2026-Q4": (set(), {"moved_infusion"}, set()),
}


@pytest.fixture
def world(empty_db: Database) -> World:
    return build(empty_db)


def lines_by_kind(
    session: Session, world: World, *, state_id: int, quarter: str
) -> tuple[set[str], set[str], set[str]]:
    """The patients of `no-voc-stay`'s lines on a statement: (owed, added, withdrawn)."""
    names = {patient_id: name for name, patient_id in world.ids.items()}
    chosen = Quarter.parse(quarter)
    assert chosen is not None
    found: dict[LineKind, set[str]] = {kind: set() for kind in LineKind}
    for line in statement_lines(
        session,
        clock=world.clock,
        agreement=agreement_for_tests(),
        state_id=state_id,
        quarter=chosen,
    ):
        if line.measure.key == MEASURE:
            expected_amount = -UNIT if line.kind is LineKind.WITHDRAWN else UNIT
            assert line.amount == expected_amount
            found[line.kind].add(names[line.patient_id])
    return found[LineKind.OWED], found[LineKind.ADDED], found[LineKind.WITHDRAWN]


@pytest.mark.parametrize("quarter", list(EXPECTED_MARYLAND))
def test_each_quarter_owes_what_was_decided_in_it_with_later_changes_as_adjustments(
    empty_db: Database, world: World, quarter: str
) -> None:
    owed, added, withdrawn = EXPECTED_MARYLAND[quarter]
    with empty_db.factory() as session:
        lines = lines_by_kind(session, world, state_id=world.maryland, quarter=quarter)
        chosen = Quarter.parse(quarter)
        assert chosen is not None
        counts = statement_counts(
            session,
            clock=world.clock,
            agreement=agreement_for_tests(),
            state_id=world.maryland,
            quarter=chosen,
        )
    assert lines == (owed, added, withdrawn)
    measure = next(item for item in counts.measures if item.measure.key == MEASURE)
    assert (measure.owed, measure.added, measure.withdrawn) == tuple(
        map(len, (owed, added, withdrawn))
    )
    assert measure.amount == UNIT * (len(owed) + len(added) - len(withdrawn))
    assert counts.provisional is (quarter == "2026-Q4")


def test_the_statements_add_up_to_todays_results_and_colorado_owes_nothing_for_maryland(
    empty_db: Database, world: World
) -> None:
    total = sum(
        len(owed) + len(added) - len(withdrawn)
        for owed, added, withdrawn in EXPECTED_MARYLAND.values()
    )
    assert total == 5  # start_day, event_then_died, moved_state, late_claim, moved_infusion
    with empty_db.factory() as session:
        for quarter in EXPECTED_MARYLAND:
            # moved_state's stay was decided while the patient was in Maryland.
            assert lines_by_kind(session, world, state_id=world.colorado, quarter=quarter) == (
                set(),
                set(),
                set(),
            )


def test_a_past_quarter_reads_the_same_after_new_data_arrived(
    empty_db: Database, world: World
) -> None:
    with empty_db.factory() as session:
        before = lines_by_kind(session, world, state_id=world.maryland, quarter="2025-Q3")
        # A claim for a crisis stay in 2025-Q3 arrives today for the patient without events.
        clean = session.get(Patient, world.ids["clean"])
        assert clean is not None
        claim(session, clean, service="2025-08-20", loaded="2026-11-27", crisis=True, stay=True)
        session.commit()
        after = lines_by_kind(session, world, state_id=world.maryland, quarter="2025-Q3")
        current = lines_by_kind(session, world, state_id=world.maryland, quarter="2026-Q4")
    assert after == before == EXPECTED_MARYLAND["2025-Q3"]
    # Decided the day it arrived: owed in the quarter that runs.
    assert current == ({"clean"}, {"moved_infusion"}, set())


def test_a_snapshot_computed_again_as_of_its_moment_gives_its_figures_after_new_data(
    empty_db: Database, world: World
) -> None:
    agreement = agreement_for_tests()
    library = AgreementLibrary(versions={agreement.key: {1: agreement}}, definition_hash="t")
    with empty_db.factory() as session:
        kept = take_snapshot(
            session,
            clock=world.clock,
            agreement=agreement,
            library=library,
            as_of=AsOf.end_of(date(2026, 3, 31)),
            computed_by="test",
        )
        today = take_snapshot(
            session,
            clock=world.clock,
            agreement=agreement,
            library=library,
            as_of=AsOf(world.clock.now()),
            computed_by="test",
        )
        session.commit()
        # New data: a crisis stay in the window of a patient who met every measure.
        clean = session.get(Patient, world.ids["clean"])
        assert clean is not None
        claim(session, clean, service="2025-08-20", loaded="2026-11-27", crisis=True, stay=True)
        session.commit()
        world.clock.advance(timedelta(hours=1))
        again = reproduce(session, snapshot=kept, library=library)
        now_again = reproduce(session, snapshot=today, library=library)
    assert again.same and again.changed_measures == () and not again.terms_changed
    # The check can fail: the snapshot as of 15:00 today was taken before the claim was
    # written, but the claim reads as loaded at 08:00 (as a load restored from a backup
    # would): computed again, its figures differ, and the page says which measures.
    assert not now_again.same
    assert set(now_again.changed_measures) == {"no-voc-stay", "no-voc-any", "no-stay"}


def test_a_snapshot_keeps_the_quarter_each_result_was_decided_in(
    empty_db: Database, world: World, staff: Staff, open_as: Callable[[str], Browser]
) -> None:
    """The period filter works from a snapshot as it does live; a snapshot kept before
    the quarter decided was (its cells without it) still reads and reproduces, and the
    page says the period cannot apply to it."""
    agreement = agreement_for_tests()
    library = AgreementLibrary(versions={agreement.key: {1: agreement}}, definition_hash="t")
    q3 = Period.parse("2026-Q3")
    assert q3 is not None
    with empty_db.factory() as session:
        kept = take_snapshot(
            session,
            clock=world.clock,
            agreement=agreement,
            library=library,
            as_of=AsOf(world.clock.now()),
            computed_by="test",
        )
        live = outcome_cube(session, agreement=agreement, as_of=AsOf(world.clock.now()))
        for selection in (Selection(), Selection(period=q3)):
            assert counted(cube_of(kept), MEASURE, selection) == counted(live, MEASURE, selection)
        assert counted(cube_of(kept), MEASURE, Selection(period=q3)) == STAY_BY_PERIOD["2026-Q3"]
        old = as_kept_before(kept)
        session.add(old)
        assert not cube_of(old).has_decided
        assert counted(cube_of(old), MEASURE, Selection()) == STAY_BY_PERIOD["all"]
        assert reproduce(session, snapshot=old, library=library).same
        assert reproduce(session, snapshot=kept, library=library).same
        # The shipped agreement's, for its page.
        shipped = shipped_agreements()
        casgevy = shipped.get("casgevy-2025")
        assert casgevy is not None
        new = take_snapshot(
            session,
            clock=world.clock,
            agreement=casgevy,
            library=shipped,
            as_of=AsOf(world.clock.now()),
            computed_by="test",
        )
        before = as_kept_before(new)
        session.add(before)
        session.commit()
        new_id, before_id = new.id, before.id
    coordinator = open_as(staff.coordinator_md)
    page = coordinator.get(f"/reports/snapshots/{new_id}?period=2026-Q3")
    assert page.status_code == 200
    assert "Only the results decided in 2026-Q3 are counted" in plain(page.text)
    assert_no_small_count(page.text)
    page = coordinator.get(f"/reports/snapshots/{before_id}?period=2026-Q3")
    assert page.status_code == 200
    assert "the period cannot apply" in plain(page.text)
    assert "Only the results decided in" not in plain(page.text)


def as_kept_before(snapshot: ReportSnapshot) -> ReportSnapshot:
    """A copy of `snapshot` as snapshots were kept before the quarter decided: six columns
    a cell, the counts added up over the quarters decided."""
    old_cube: dict[str, list[list[object]]] = {}
    for key, cells in snapshot.figures["cube"].items():
        added: Counter[tuple[object, ...]] = Counter()
        for *where, count, _year, _quarter in cells:
            added[tuple(where)] += count
        old_cube[key] = [[*where, count] for where, count in added.items()]
    return ReportSnapshot(
        report=snapshot.report,
        parameters=snapshot.parameters,
        definition_hash=snapshot.definition_hash,
        as_of=snapshot.as_of,
        computed_at=snapshot.computed_at,
        computed_by="test",
        figures={"cube": old_cube, "patients": snapshot.figures["patients"]},
    )


# --- the statement's page and CSV: who sees the per-patient basis ------------------------------

REBATES = "/reports/rebates?agreement=casgevy-2025"


def medicaid_ids(empty_db: Database, world: World, *names: str) -> list[str]:
    with empty_db.factory() as session:
        found = []
        for name in names:
            patient = session.get(Patient, world.ids[name])
            assert patient is not None
            found.append(patient.medicaid_id)
    return found


@pytest.mark.parametrize("htmx", [False, True])
def test_an_analyst_gets_the_counts_small_ones_hidden_and_no_patient(
    empty_db: Database,
    world: World,
    staff: Staff,
    open_as: Callable[[str], Browser],
    htmx: bool,
) -> None:
    analyst = open_as(staff.analyst_md)
    url = f"{REBATES}&state={world.maryland}&quarter=2025-Q3"
    page = analyst.get(url, htmx=htmx)
    assert page.status_code == 200
    assert "Illustrative terms." in plain(page.text)
    assert_no_small_count(page.text)
    # 2025-Q3 owes three patients the crisis-stay measure (100,000 x 3 under the test
    # terms; 220,000 each under the shipped ones): a count the analyst sees as "<11".
    assert "&lt;11" in page.text or "<11" in plain(page.text)
    exported = analyst.get(url.replace("/reports/rebates?", "/reports/rebates/statement.csv?"))
    assert exported.status_code == 200
    assert exported.text.startswith("# ILLUSTRATIVE")
    for medicaid_id in medicaid_ids(empty_db, world, "start_day", "event_then_died", "adjusted"):
        assert medicaid_id not in page.text and medicaid_id not in exported.text
    rows = list(csv.reader(line for line in exported.text.splitlines() if line[:1] != "#"))
    assert rows[0][-2:] == ["patients", "amount"]
    counts = [row[-2] for row in rows[1:]]
    assert counts and not [count for count in counts if count.isdigit() and 1 <= int(count) <= 10]
    # Another state's statement is not the analyst's to see.
    assert analyst.get(f"{REBATES}&state={world.colorado}&quarter=2025-Q3").status_code == 404


def test_a_coordinator_sees_the_basis_only_when_they_may_see_every_patient_on_it(
    empty_db: Database, world: World, staff: Staff, open_as: Callable[[str], Browser]
) -> None:
    coordinator = open_as(staff.coordinator_md)
    page = coordinator.get(f"{REBATES}&state={world.maryland}&quarter=2025-Q3")
    assert page.status_code == 200
    owed = medicaid_ids(empty_db, world, "start_day", "event_then_died", "adjusted")
    assert all(medicaid_id in page.text for medicaid_id in owed)
    with empty_db.factory() as session:
        read = {
            event.patient_id
            for event in session.scalars(
                select(AuditEvent).where(AuditEvent.action == "rebates.statement")
            )
        }
    assert read == {world.ids[name] for name in ("start_day", "event_then_died", "adjusted")}
    # 2026-Q1 owes Maryland for moved_state, who lives in Colorado now: outside this
    # coordinator's patients, so the basis is not shown, only the counts.
    later = coordinator.get(f"{REBATES}&state={world.maryland}&quarter=2026-Q1")
    assert later.status_code == 200
    assert "The per-patient basis is not shown" in plain(later.text)
    (moved,) = medicaid_ids(empty_db, world, "moved_state")
    assert moved not in later.text


def test_the_nightly_job_takes_the_snapshots_once_a_day_under_its_lease(
    empty_db: Database, world: World
) -> None:
    agreement = agreement_for_tests()
    library = AgreementLibrary(versions={agreement.key: {1: agreement}}, definition_hash="t")
    clock = world.clock
    # Another worker holds the lease: this one takes nothing.
    assert acquire_lock(
        empty_db.factory, name=SNAPSHOT_LOCK, clock=clock, lease=timedelta(hours=1), owner="other"
    )
    assert nightly_snapshots(empty_db.factory, clock, library=library) is None
    clock.advance(timedelta(hours=2))  # its lease ran out
    # The agreement's outcome figures and the program figures; then nothing more today.
    assert nightly_snapshots(empty_db.factory, clock, library=library) == 2
    clock.advance(timedelta(hours=1))
    assert nightly_snapshots(empty_db.factory, clock, library=library) == 0
    clock.advance(timedelta(days=1))
    assert nightly_snapshots(empty_db.factory, clock, library=library) == 2
    with empty_db.factory() as session:
        kept = session.scalars(select(ReportSnapshot).order_by(ReportSnapshot.id)).all()
    assert [snapshot.report for snapshot in kept] == [
        "outcomes:test-2025",
        "program",
        "outcomes:test-2025",
        "program",
    ]
    assert all(snapshot.as_of == snapshot.computed_at for snapshot in kept)


# --- the worker's scheduler ---------------------------------------------------------------------


def _kept(db: Database) -> list[str]:
    with db.factory() as session:
        return list(session.scalars(select(ReportSnapshot.report).order_by(ReportSnapshot.id)))


def test_the_workers_scheduler_takes_the_nightly_snapshots_at_02_15_once(
    empty_db: Database, empty_app: FastAPI, clock: FrozenClock
) -> None:
    context = empty_app.state.context
    job = build_scheduler(context, blocking=False).get_job("outcome-snapshots")
    assert job is not None
    # It fires at 02:15 UTC, then hourly (a night missed while the worker was down is
    # caught up within the hour).
    midnight = datetime(2026, 11, 28, tzinfo=UTC)
    assert job.trigger.get_next_fire_time(None, midnight) == midnight.replace(hour=2, minute=15)
    assert job.trigger.get_next_fire_time(None, midnight.replace(hour=2, minute=16)) == (
        midnight.replace(hour=3, minute=15)
    )
    every = [f"outcomes:{agreement.key}" for agreement in shipped_agreements().current()]
    clock.set(midnight.replace(hour=2, minute=15))
    job.func()
    assert _kept(empty_db) == [*every, "program"]
    clock.set(midnight.replace(hour=3, minute=15))
    job.func()  # the next hour: tonight's are there
    assert _kept(empty_db) == [*every, "program"]
    clock.set(midnight.replace(day=29, hour=2, minute=15))
    job.func()
    assert _kept(empty_db) == [*every, "program"] * 2


def test_two_workers_at_the_nightly_time_store_the_snapshots_once(
    empty_db: Database, empty_app: FastAPI, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers' schedulers fire together: both go for the job lease at the same
    moment; one takes the snapshots, the other finds the lease held (the winner waits
    until then, so that the lease, not the "taken tonight" check, keeps the second out)."""
    clock.set(datetime(2026, 11, 28, 2, 15, tzinfo=UTC))
    workers = [
        build_scheduler(empty_app.state.context, blocking=False).get_job("outcome-snapshots")
        for _ in range(2)
    ]
    together = threading.Barrier(2, timeout=20)
    loser_done = threading.Event()
    taking: list[str] = []
    original_lease, original_take = locks.run_exclusively, snapshots.take_nightly_snapshots

    def racing_lease(*args: Any, **kwargs: Any) -> Any:
        together.wait()
        ran, taken = original_lease(*args, **kwargs)
        if not ran:
            loser_done.set()
        return ran, taken

    def slow_take(*args: Any, **kwargs: Any) -> Any:
        taking.append(threading.current_thread().name)
        loser_done.wait(timeout=20)
        return original_take(*args, **kwargs)

    # The job's own names for them (reporting/jobs.py imported both).
    monkeypatch.setattr("reporting.jobs.run_exclusively", racing_lease)
    monkeypatch.setattr("reporting.jobs.take_nightly_snapshots", slow_take)
    threads = [
        threading.Thread(target=worker.func, name=f"worker-{index}")
        for index, worker in enumerate(workers)
        if worker is not None
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert loser_done.is_set()  # the second worker was refused the lease
    assert len(taking) == 1
    every = [f"outcomes:{agreement.key}" for agreement in shipped_agreements().current()]
    assert _kept(empty_db) == [*every, "program"]


def test_without_an_as_of_day_the_dashboard_reads_last_nights_snapshot(
    empty_db: Database,
    world: World,
    staff: Staff,
    open_as: Callable[[str], Browser],
    clock: FrozenClock,
) -> None:
    """The figures stay those of the nightly snapshot until the next one (the patients
    behind them too, as of its moment); an as-of day counts from the record."""
    shipped = shipped_agreements()
    with empty_db.factory() as session:
        take_snapshots(
            session,
            clock=world.clock,
            library=shipped,
            as_of=AsOf(world.clock.now()),
            computed_by=NIGHTLY,
            kind=NIGHTLY,
        )
        # The next day a crisis stay of a patient who met the measure arrives.
        clean = session.get(Patient, world.ids["clean"])
        assert clean is not None
        claim(session, clean, service="2025-08-20", loaded="2026-11-28", crisis=True, stay=True)
        session.commit()
    clock.set(datetime(2026, 11, 29, 12, tzinfo=UTC))
    coordinator = open_as(staff.coordinator_md)
    casgevy = "/reports/outcomes/casgevy-2025"
    page = coordinator.get(casgevy)
    assert "from the nightly snapshot" in plain(page.text)
    # Maryland as of the snapshot: 12 met (test_outcomes' page test).
    assert cells_of(page.text)[9] == "12"
    behind = coordinator.get(f"{casgevy}/no-voc-stay-6-18/patients?status=not_met")
    (clean_id,) = medicaid_ids(empty_db, world, "clean")
    assert clean_id not in behind.text
    # As of the end of yesterday, counted: the stay is there.
    live = coordinator.get(f"{casgevy}?as_of=2026-11-28")
    assert "from the nightly snapshot" not in plain(live.text)
    assert cells_of(live.text)[9] == "11"
    behind = coordinator.get(f"{casgevy}/no-voc-stay-6-18/patients?status=not_met&as_of=2026-11-28")
    assert clean_id in behind.text
    # Two days on, the snapshot is stale: counted now.
    clock.set(datetime(2026, 11, 30, 16, tzinfo=UTC))
    assert "from the nightly snapshot" not in plain(coordinator.get(casgevy).text)
