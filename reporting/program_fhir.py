"""The program figures as a FHIR R4 summary MeasureReport, built as a plain JSON-ready dict
(reporting does not import the FHIR adapter; the tests validate it with it).

One group per figure that has a natural numerator: visits completed in their window among
the visits due (stratified by protocol visit and by year since infusion), patients active
among all patients, reminder texts delivered among those sent, missed visits contacted
since. Every count is the published (suppressed) figure: a hidden one has no `count`, only
the data-absent-reason "masked"; a score is given only when both its counts are shown.
A withheld table gives no group."""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import Any

from reporting.program_report import ProgramReport, Table
from reporting.suppression import Figure, Mark

BASE = "https://cgt-access.org/fhir"
MEASURE = f"{BASE}/Measure/program-figures"
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
GROUP_SYSTEM = f"{BASE}/CodeSystem/program-figure"
STRATIFIER_SYSTEM = f"{BASE}/CodeSystem/program-stratifier"

# (group code, table, numerator column, what it says)
GROUPS = (
    ("visits-in-window", "adherence_by_visit", "in_window", "Visits completed in their window"),
    ("patients-active", "retention", "active", "Patients active in follow-up"),
    ("reminders-delivered", "texts", "delivered", "Reminder texts delivered"),
    ("missed-visits-contacted", "contact", "contacted", "Missed visits followed by a contact"),
)


def _population(code: str, figure: Figure) -> dict[str, Any]:
    entry: dict[str, Any] = {"code": {"coding": [{"system": POPULATION_SYSTEM, "code": code}]}}
    if figure.mark is Mark.SHOWN:
        entry["count"] = int(figure.text)
    else:
        entry["_count"] = {"extension": [{"url": DATA_ABSENT, "valueCode": "masked"}]}
    return entry


def _populations(total: Figure, part: Figure) -> list[dict[str, Any]]:
    return [
        _population("initial-population", total),
        _population("denominator", total),
        _population("numerator", part),
    ]


def _score(total: Figure, part: Figure) -> dict[str, Any] | None:
    if total.number is None or part.number is None or total.number == 0:
        return None
    share = Decimal(part.number) / Decimal(total.number)
    return {"value": float(round(share, 4)), "unit": "1", "system": "http://unitsofmeasure.org"}


def _stratifier(code: str, table: Table, column: int) -> dict[str, Any] | None:
    figures = table.figures
    if figures is None or table.rows_withheld or not table.rows:
        return None
    return {
        "code": [{"coding": [{"system": STRATIFIER_SYSTEM, "code": code}], "text": code}],
        "stratum": [
            {"value": {"text": row}, "population": _populations(total, cells[column])}
            for row, cells, total in zip(table.rows, figures.cells, figures.row_totals, strict=True)
        ],
    }


def program_measure_report(
    report: ProgramReport, *, visit_years: dict[str, tuple[int, int]] | None = None
) -> dict[str, Any]:
    """The summary MeasureReport of the dashboard's figures for its selection."""
    del visit_years  # the year stratifier comes from the table by year
    period = report.selection.period
    as_of = report.as_of
    start = period.start.isoformat() if period.start else "2023-01-01"
    end = period.end.isoformat() if period.end and period.end < as_of.date() else None
    lines = [
        f"Program figures as of {as_of.isoformat()}, period {period.key}.",
        "Counts from 1 to 10 are not given (masked), nor counts they could be worked out from.",
    ]
    groups: list[dict[str, Any]] = []
    for code, key, column, words in GROUPS:
        table = report.tables[key]
        figures = table.figures
        if figures is None:
            lines.append(f"{words}: withheld (too few to protect).")
            continue
        index = table.columns.index(column)
        total, part = figures.grand_total, figures.column_totals[index]
        group: dict[str, Any] = {
            "code": {"coding": [{"system": GROUP_SYSTEM, "code": code}], "text": words},
            "population": _populations(total, part),
        }
        score = _score(total, part)
        if score is not None:
            group["measureScore"] = score
        stratifiers = []
        if key == "adherence_by_visit":
            for name, other in (("visit", table), ("year", report.tables["adherence_by_year"])):
                found = _stratifier(name, other, index)
                if found is not None:
                    stratifiers.append(found)
        elif key == "retention":
            found = _stratifier("infusion-year", table, index)
            if found is not None:
                stratifiers.append(found)
        if stratifiers:
            group["stratifier"] = stratifiers
        groups.append(group)
    body = "".join(f"<p>{escape(line)}</p>" for line in lines)
    resource: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>',
        },
        "status": "complete",
        "type": "summary",
        "measure": MEASURE,
        "date": as_of.isoformat(),
        "period": {"start": start, "end": end or as_of.date().isoformat()},
    }
    if groups:
        resource["group"] = groups
    return resource
