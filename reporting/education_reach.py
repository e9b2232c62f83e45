"""Education reach: how many patients and caregivers of a state completed each module, month
by month (the coordinator's and analyst's *Education reach* page and its CSV).

Reach counts a reader once per module, in the month (the state's calendar) they first
completed it in that state: a reader who completes a new version later is not counted again,
so a module's total is the number of different people who completed it. Every figure goes
through `reporting.suppression` (counts from 1 to 10 are "<11", and nothing hidden can be
worked out from the totals) before it reaches a page or an export: the raw counts never
leave this file."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.clock import Clock, local_today
from core.models import State
from education.content import ModuleLibrary
from education.models import ModuleCompletion
from reporting.suppression import SuppressedTable, suppress_table

READER_KINDS = ("patient", "caregiver")


@dataclass(frozen=True)
class ReachModule:
    key: str
    title: str


@dataclass(frozen=True)
class ReachTable:
    """One kind of reader: modules (rows) by months (columns), suppressed."""

    readers: str  # patient | caregiver
    modules: tuple[ReachModule, ...]
    table: SuppressedTable

    @property
    def withheld(self) -> bool:
        """Not published at all: a line of it would reveal its counts whatever is hidden
        (ten or more ones and a total under 11, see `reporting.suppression`)."""
        return self.table.unprotected_lines > 0


@dataclass(frozen=True)
class StateReach:
    state: State
    year: int
    years: tuple[int, ...]  # the years there is something to show, newest first
    months: tuple[date, ...]  # the first day of each month shown
    tables: tuple[ReachTable, ...]  # patients, then caregivers


def _first_completions(session: Session, *, state: State) -> list[tuple[str, str, date]]:
    """(module key, reader kind, local month) of each reader's first completion of each
    module in the state."""
    zone = ZoneInfo(state.time_zone)
    first = func.min(ModuleCompletion.completed_at)
    rows = session.execute(
        select(ModuleCompletion.module_key, ModuleCompletion.reader_role, first)
        .where(ModuleCompletion.state_id == state.id)
        .group_by(
            ModuleCompletion.user_id, ModuleCompletion.module_key, ModuleCompletion.reader_role
        )
    )
    found = []
    for key, role, at in rows:  # min() keeps the column's type: an aware UTC instant
        local = at.astimezone(zone)
        found.append((key, role, date(local.year, local.month, 1)))
    return found


def _modules_for(
    readers: str, library: ModuleLibrary, language: str, keys_seen: set[str]
) -> tuple[ReachModule, ...]:
    shown = [
        ReachModule(m.key, m.text(language).title)
        for m in library
        if (m.for_patients() if readers == "patient" else m.for_caregivers()) or m.key in keys_seen
    ]
    # Completions of a module no longer shipped stay counted, under its key.
    shown += [ReachModule(key, key) for key in sorted(keys_seen - set(library.modules))]
    return tuple(shown)


def state_reach(
    session: Session,
    *,
    clock: Clock,
    state: State,
    year: int | None,
    library: ModuleLibrary,
    language: str,
) -> StateReach:
    """The state's reach in `year` (the current year when None or out of range)."""
    today = local_today(clock, state.time_zone)
    found = _first_completions(session, state=state)
    years = tuple(
        sorted({month.year for _k, _r, month in found if month.year <= today.year} | {today.year})
    )[::-1]
    chosen = year if year in years else today.year
    last_month = today.month if chosen == today.year else 12
    months = tuple(date(chosen, m, 1) for m in range(1, last_month + 1))
    tables = []
    for readers in READER_KINDS:
        counts = Counter(
            (key, month) for key, role, month in found if role == readers and month.year == chosen
        )
        modules = _modules_for(readers, library, language, {key for key, _m in counts})
        grid = [[counts.get((m.key, month), 0) for month in months] for m in modules]
        tables.append(ReachTable(readers=readers, modules=modules, table=suppress_table(grid)))
    return StateReach(state=state, year=chosen, years=years, months=months, tables=tuple(tables))


CSV_HEADER = ("state", "year", "readers", "module", "title", "month", "completed")
TOTAL = "total"


def reach_csv(reach: StateReach) -> str:
    """The figures as published on the page (suppressed), one per line: each module and
    month, each module's total (month "total"), each month's total (module "total") and
    the grand total. A withheld table has no lines."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    code, year = reach.state.code, reach.year
    months = [f"{month:%Y-%m}" for month in reach.months]
    for table in reach.tables:
        if table.withheld:
            continue
        kind = table.readers
        suppressed = table.table
        for module, cells, total in zip(
            table.modules, suppressed.cells, suppressed.row_totals, strict=True
        ):
            for month, cell in zip(months, cells, strict=True):
                writer.writerow((code, year, kind, module.key, module.title, month, cell.text))
            writer.writerow((code, year, kind, module.key, module.title, TOTAL, total.text))
        for month, cell in zip(months, suppressed.column_totals, strict=True):
            writer.writerow((code, year, kind, TOTAL, "", month, cell.text))
        writer.writerow((code, year, kind, TOTAL, "", TOTAL, suppressed.grand_total.text))
    return out.getvalue()
