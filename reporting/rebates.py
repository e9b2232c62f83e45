"""Rebate statements: what a manufacturer owes a state under an outcomes-based agreement for
one calendar quarter, and the per-patient basis of it.

A patient's `not_met` result is owed in the calendar quarter of the day it was decided
(`decided_on`), to the state the patient belonged to on that day, at the measure's rebate
(a share of the agreement's price basis, or a fixed amount). A statement for a quarter is
computed as of the quarter's end (midnight UTC after its last day, or now while it runs):
data that arrived later is left out, so a past quarter's statement reads the same whenever
it is run again.

A result can change after its quarter (an adjusted claim removes the crisis, a corrected
value, an infusion date set right): the next statement shows it as a prior-period
adjustment. It compares what the earlier quarters owed as of this quarter's start with what
they owe as of its end: a result owed now and not then is *added*, one owed then and not
now is *withdrawn* (a credit). Added up over the quarters, the statements owe exactly what
the record says today.

The counts are computed by the database (`statement_counts`); the patient lines
(`statement_lines`) are for staff who may see every patient on the statement."""

from __future__ import annotations

import csv
import enum
import io
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, String, case, func, literal, select, type_coerce, union_all
from sqlalchemy.orm import Session

from core.clock import Clock
from core.models import PatientHistory
from reporting.agreements import Agreement, Measure
from reporting.outcomes import AsOf, Status, agreement_results, population_of
from reporting.sqlfunc import utc_day
from reporting.suppression import Figure, suppress_table

_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")


@dataclass(frozen=True, order=True)
class Quarter:
    year: int
    number: int  # 1-4

    @classmethod
    def parse(cls, text: str) -> Quarter | None:
        """`2026-Q3`, or None for anything else."""
        found = _QUARTER.match(text.strip())
        if found is None or not 1900 <= int(found.group(1)) <= 2999:
            return None
        return cls(int(found.group(1)), int(found.group(2)))

    @classmethod
    def containing(cls, day: date) -> Quarter:
        return cls(day.year, (day.month - 1) // 3 + 1)

    @property
    def start(self) -> date:
        return date(self.year, 3 * self.number - 2, 1)

    @property
    def end(self) -> date:
        """The first day after the quarter."""
        return self.next().start

    def next(self) -> Quarter:
        return (
            Quarter(self.year + 1, 1) if self.number == 4 else Quarter(self.year, self.number + 1)
        )

    def previous(self) -> Quarter:
        return (
            Quarter(self.year - 1, 4) if self.number == 1 else Quarter(self.year, self.number - 1)
        )

    def __str__(self) -> str:
        return f"{self.year}-Q{self.number}"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def statement_as_of(quarter: Quarter, *, clock: Clock) -> tuple[AsOf, bool]:
    """The moment a quarter's statement looks from: its end, or now while it runs (then
    the statement is provisional: True)."""
    end = _midnight(quarter.end)
    now = clock.now()
    return (AsOf(end), False) if end <= now else (AsOf(now), True)


def quarters_of(agreement: Agreement, *, clock: Clock) -> list[Quarter]:
    """The quarters a statement may be asked for: from the agreement's first infusions to
    the current quarter, newest first."""
    first = Quarter.containing(agreement.infusions.from_)
    current = Quarter.containing(clock.now().astimezone(UTC).date())
    found = []
    quarter = first
    while quarter <= current:
        found.append(quarter)
        quarter = quarter.next()
    return found[::-1]


class LineKind(enum.StrEnum):
    OWED = "owed"  # decided in this quarter
    ADDED = "added"  # owed for an earlier quarter, known only now
    WITHDRAWN = "withdrawn"  # owed for an earlier quarter before, no longer


def _owed_before(
    agreement: Agreement,
    session: Session,
    *,
    as_of: AsOf,
    state_id: int,
    before: date,
    name: str,
) -> Any:
    """The not-met results as of `as_of` decided before `before`, of patients who belonged
    to the state on the day decided: (measure_key, patient_id, medicaid_id, infusion_date,
    decided_on)."""
    results = agreement_results(
        agreement, population_of(session, agreement), as_of=as_of, name=name
    )
    history = PatientHistory.__table__.alias(f"then_{name}")
    state_then = (
        select(history.c.state_id)
        .where(
            history.c.patient_id == results.c.patient_id,
            utc_day(history.c.valid_from) <= results.c.decided_on,
        )
        .order_by(history.c.version_id.desc())
        .limit(1)
        .correlate(results)
        .scalar_subquery()
    )
    return select(
        results.c.measure_key,
        results.c.patient_id,
        results.c.medicaid_id,
        results.c.infusion_date,
        results.c.decided_on,
    ).where(
        results.c.status == Status.NOT_MET.value,
        results.c.decided_on < before,
        state_then == state_id,
    )


def _lines_query(
    session: Session,
    *,
    agreement: Agreement,
    state_id: int,
    quarter: Quarter,
    as_of: AsOf,
) -> Any:
    """Every line of the statement (a subquery): kind, measure_key, patient_id,
    medicaid_id, infusion_date, decided_on."""
    now = _owed_before(
        agreement, session, as_of=as_of, state_id=state_id, before=quarter.end, name="now"
    ).subquery("owed_now")
    then = _owed_before(
        agreement,
        session,
        as_of=AsOf(_midnight(quarter.start)),
        state_id=state_id,
        before=quarter.start,
        name="then",
    ).subquery("owed_then")
    owed = select(
        literal(LineKind.OWED.value).label("kind"),
        now.c.measure_key,
        now.c.patient_id,
        now.c.medicaid_id,
        now.c.infusion_date,
        now.c.decided_on,
    ).where(now.c.decided_on >= quarter.start)
    # Earlier quarters, as they stand now (+1) and as they stood when this quarter began
    # (-1): what does not cancel out is an adjustment.
    signed = union_all(
        select(
            now.c.measure_key,
            now.c.patient_id,
            now.c.medicaid_id,
            now.c.infusion_date,
            now.c.decided_on,
            literal(1).label("sign"),
        ).where(now.c.decided_on < quarter.start),
        select(
            then.c.measure_key,
            then.c.patient_id,
            then.c.medicaid_id,
            then.c.infusion_date,
            then.c.decided_on,
            literal(-1).label("sign"),
        ),
    ).subquery("signed")
    balance = func.sum(signed.c.sign)
    changed = (
        select(
            signed.c.measure_key,
            signed.c.patient_id,
            func.max(signed.c.medicaid_id).label("medicaid_id"),
            func.max(signed.c.infusion_date).label("infusion_date"),
            func.max(signed.c.decided_on).label("decided_on"),
            balance.label("balance"),
        )
        .group_by(signed.c.measure_key, signed.c.patient_id)
        .having(balance != 0)
        .subquery("changed")
    )
    adjustments = select(
        case((changed.c.balance > 0, LineKind.ADDED.value), else_=LineKind.WITHDRAWN.value).label(
            "kind"
        ),
        changed.c.measure_key,
        changed.c.patient_id,
        changed.c.medicaid_id,
        type_coerce(changed.c.infusion_date, Date()).label("infusion_date"),
        type_coerce(changed.c.decided_on, Date()).label("decided_on"),
    )
    return union_all(owed, adjustments).subquery("statement_lines")


@dataclass(frozen=True)
class MeasureCounts:
    """How many patients a statement counts for one measure, by kind of line."""

    measure: Measure
    unit_amount: Decimal
    owed: int
    added: int
    withdrawn: int

    @property
    def amount(self) -> Decimal:
        """What the measure's lines come to (credits subtracted)."""
        return self.unit_amount * (self.owed + self.added - self.withdrawn)


@dataclass(frozen=True)
class StatementCounts:
    agreement: Agreement
    state_id: int
    quarter: Quarter
    as_of: AsOf
    provisional: bool
    measures: tuple[MeasureCounts, ...]

    @property
    def amount(self) -> Decimal:
        return sum((counts.amount for counts in self.measures), Decimal("0.00"))

    @property
    def lines(self) -> int:
        return sum(counts.owed + counts.added + counts.withdrawn for counts in self.measures)


def statement_counts(
    session: Session, *, clock: Clock, agreement: Agreement, state_id: int, quarter: Quarter
) -> StatementCounts:
    """The statement's counts by measure and kind of line, counted by the database."""
    as_of, provisional = statement_as_of(quarter, clock=clock)
    lines = _lines_query(
        session, agreement=agreement, state_id=state_id, quarter=quarter, as_of=as_of
    )
    found: dict[tuple[str, str], int] = {
        (measure_key, kind): int(count)
        for measure_key, kind, count in session.execute(
            select(lines.c.measure_key, type_coerce(lines.c.kind, String()), func.count()).group_by(
                lines.c.measure_key, lines.c.kind
            )
        )
    }
    measures = tuple(
        MeasureCounts(
            measure=measure,
            unit_amount=agreement.rebate_amount(measure),
            owed=found.get((measure.key, LineKind.OWED.value), 0),
            added=found.get((measure.key, LineKind.ADDED.value), 0),
            withdrawn=found.get((measure.key, LineKind.WITHDRAWN.value), 0),
        )
        for measure in agreement.measures
    )
    return StatementCounts(
        agreement=agreement,
        state_id=state_id,
        quarter=quarter,
        as_of=as_of,
        provisional=provisional,
        measures=measures,
    )


@dataclass(frozen=True)
class StatementLine:
    kind: LineKind
    measure: Measure
    patient_id: int
    medicaid_id: str
    infusion_date: date
    decided_on: date
    amount: Decimal  # negative for a withdrawn line (a credit)


def statement_lines(
    session: Session, *, clock: Clock, agreement: Agreement, state_id: int, quarter: Quarter
) -> list[StatementLine]:
    """The statement's patient lines: this quarter's, then the adjustments, each by
    decision day and Medicaid ID. Patient-level: the caller lets only staff who may see
    every one of these patients read them (and audits it)."""
    as_of, _provisional = statement_as_of(quarter, clock=clock)
    lines = _lines_query(
        session, agreement=agreement, state_id=state_id, quarter=quarter, as_of=as_of
    )
    measures = {measure.key: measure for measure in agreement.measures}
    kind_order = case(
        *((lines.c.kind == kind.value, index) for index, kind in enumerate(LineKind)), else_=9
    )
    rows = session.execute(
        select(lines).order_by(
            kind_order, lines.c.decided_on, lines.c.medicaid_id, lines.c.measure_key
        )
    ).all()
    found = []
    for row in rows:
        measure = measures[row.measure_key]
        kind = LineKind(row.kind)
        unit = agreement.rebate_amount(measure)
        found.append(
            StatementLine(
                kind=kind,
                measure=measure,
                patient_id=row.patient_id,
                medicaid_id=row.medicaid_id,
                infusion_date=row.infusion_date,
                decided_on=row.decided_on,
                amount=-unit if kind is LineKind.WITHDRAWN else unit,
            )
        )
    return found


# --- what those without access to the patients see -------------------------------------------


@dataclass(frozen=True)
class PublishedRow:
    measure: Measure
    unit_amount: Decimal
    figures: tuple[Figure, Figure, Figure]  # owed, added, withdrawn (suppressed)
    amounts: tuple[Decimal | None, Decimal | None, Decimal | None]  # None where hidden


@dataclass(frozen=True)
class PublishedStatement:
    """A statement's counts as anyone with the reports may see them: suppressed, and an
    amount only where its count is shown (an amount is a count times the rebate)."""

    counts: StatementCounts
    rows: tuple[PublishedRow, ...]
    totals: tuple[Figure, Figure, Figure]
    amount: Decimal | None  # the net total, when every count it adds up is shown
    withheld: bool


def published_statement(counts: StatementCounts) -> PublishedStatement:
    grid = [[m.owed, m.added, m.withdrawn] for m in counts.measures]
    table = suppress_table(grid)
    rows = []
    every_shown = True
    for measure_counts, figures in zip(counts.measures, table.cells, strict=True):
        amounts = tuple(
            measure_counts.unit_amount * figure.number if figure.number is not None else None
            for figure in figures
        )
        every_shown = every_shown and all(amount is not None for amount in amounts)
        rows.append(
            PublishedRow(
                measure=measure_counts.measure,
                unit_amount=measure_counts.unit_amount,
                figures=(figures[0], figures[1], figures[2]),
                amounts=(amounts[0], amounts[1], amounts[2]),
            )
        )
    totals = table.column_totals
    return PublishedStatement(
        counts=counts,
        rows=tuple(rows),
        totals=(totals[0], totals[1], totals[2]),
        amount=counts.amount if every_shown else None,
        withheld=table.unprotected_lines > 0,
    )


STATEMENT_CSV_HEADER = (
    "state",
    "manufacturer",
    "agreement",
    "version",
    "quarter",
    "as_of",
    "line",
    "medicaid_id",
    "infusion_date",
    "measure",
    "decided_on",
    "patients",
    "amount",
)


def _csv_start(counts: StatementCounts, state_code: str) -> tuple[str, ...]:
    agreement = counts.agreement
    return (
        state_code,
        agreement.manufacturer,
        agreement.key,
        str(agreement.version),
        str(counts.quarter),
        counts.as_of.at.isoformat(),
    )


def _csv_writer(out: io.StringIO, counts: StatementCounts, note: str) -> Any:
    writer = csv.writer(out, lineterminator="\r\n")
    if counts.agreement.illustrative:
        out.write(f"# {note}\r\n")
    if counts.provisional:
        out.write("# PROVISIONAL: the quarter is not over; figures as of the moment shown.\r\n")
    writer.writerow(STATEMENT_CSV_HEADER)
    return writer


def statement_csv(
    counts: StatementCounts, lines: list[StatementLine], *, state_code: str, note: str
) -> str:
    """The full statement: one line per patient and measure, then the totals by measure
    (line "total") and the statement's total. Patient-level: for staff with access."""
    out = io.StringIO()
    writer = _csv_writer(out, counts, note)
    start = _csv_start(counts, state_code)
    for line in lines:
        writer.writerow(
            (
                *start,
                line.kind.value,
                line.medicaid_id,
                line.infusion_date.isoformat(),
                line.measure.key,
                line.decided_on.isoformat(),
                1,
                f"{line.amount:.2f}",
            )
        )
    for measure in counts.measures:
        patients = measure.owed + measure.added - measure.withdrawn
        writer.writerow(
            (*start, "total", "", "", measure.measure.key, "", patients, f"{measure.amount:.2f}")
        )
    writer.writerow((*start, "total", "", "", "", "", "", f"{counts.amount:.2f}"))
    return out.getvalue()


def published_statement_csv(published: PublishedStatement, *, state_code: str, note: str) -> str:
    """The statement as published: counts by measure and kind of line, suppressed, with an
    amount only where its count is shown (else "*" or "<11" as the count)."""
    counts = published.counts
    out = io.StringIO()
    writer = _csv_writer(out, counts, note)
    if published.withheld:
        return out.getvalue()
    start = _csv_start(counts, state_code)
    kinds = (LineKind.OWED, LineKind.ADDED, LineKind.WITHDRAWN)
    for row in published.rows:
        for kind, figure, amount in zip(kinds, row.figures, row.amounts, strict=True):
            shown = f"{amount:.2f}" if amount is not None else figure.text
            writer.writerow((*start, kind.value, "", "", row.measure.key, "", figure.text, shown))
    for kind, figure in zip(kinds, published.totals, strict=True):
        writer.writerow((*start, kind.value, "", "", "total", "", figure.text, ""))
    total = f"{published.amount:.2f}" if published.amount is not None else "*"
    writer.writerow((*start, "total", "", "", "", "", "", total))
    return out.getvalue()
