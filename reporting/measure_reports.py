"""FHIR R4 MeasureReports of the outcome measures, built as plain JSON-ready dicts (reporting
does not import the FHIR adapter; the tests validate them with it).

- summary: an agreement's measure over a selection (`reporting.outcome_report`), with the
  populations initial-population (the patients), denominator (those whose result is decided:
  every status but "not yet"; a stratifier whose denominators cannot be protected gives
  none) and numerator (met), and stratifiers by state, therapy and
  infusion year. Every count is the published figure: a suppressed one has no `count`, only
  the data-absent-reason "masked" on it; the score is given only when both its counts are.
- individual: one patient's result (for staff who may see the patient), the populations
  counting 0 or 1, the status as an extension, and the deciding observation referenced.

Both say when the agreement's terms are illustrative (an extension and the narrative)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from html import escape
from typing import Any

from reporting.agreements import Agreement, Measure
from reporting.outcome_report import ILLUSTRATIVE_NOTE, MeasureView, OutcomeReport
from reporting.outcomes import STATUSES, PatientOutcome, Status
from reporting.program import Period
from reporting.suppression import Figure, Mark

BASE = "https://cgt-access.org/fhir"
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
ILLUSTRATIVE_EXTENSION = f"{BASE}/StructureDefinition/illustrative-terms"
STATUS_EXTENSION = f"{BASE}/StructureDefinition/outcome-status"
STATUS_SYSTEM = f"{BASE}/CodeSystem/outcome-status"
STRATIFIER_SYSTEM = f"{BASE}/CodeSystem/outcome-stratifier"


def measure_url(agreement: Agreement, measure: Measure) -> str:
    """The measure's canonical URL, with the agreement's version."""
    return f"{BASE}/Measure/{agreement.key}-{measure.key}|{agreement.version}"


def _population(code: str, figure: Figure) -> dict[str, Any]:
    entry: dict[str, Any] = {"code": {"coding": [{"system": POPULATION_SYSTEM, "code": code}]}}
    if figure.mark is Mark.SHOWN:
        entry["count"] = int(figure.text)
    else:
        # A suppressed count: no number, and why.
        entry["_count"] = {"extension": [{"url": DATA_ABSENT, "valueCode": "masked"}]}
    return entry


def _populations(
    patients: Figure, cells: tuple[Figure, ...], decided: Figure | None
) -> list[dict[str, Any]]:
    """The populations of a group or stratum; the denominator (the decided patients,
    suppressed by `reporting.outcome_report`) left out where it is withheld."""
    by_status = dict(zip(STATUSES, cells, strict=True))
    return [
        _population("initial-population", patients),
        *([_population("denominator", decided)] if decided is not None else []),
        _population("numerator", by_status[Status.MET]),
    ]


def _score(cells: tuple[Figure, ...], decided: Figure) -> dict[str, Any] | None:
    by_status = dict(zip(STATUSES, cells, strict=True))
    met = by_status[Status.MET]
    if decided.mark is not Mark.SHOWN or met.mark is not Mark.SHOWN or decided.text == "0":
        return None
    share = Decimal(met.text) / Decimal(decided.text)
    return {"value": float(round(share, 4)), "unit": "1", "system": "http://unitsofmeasure.org"}


def _narrative(agreement: Agreement, lines: list[str]) -> dict[str, str]:
    words = ([ILLUSTRATIVE_NOTE] if agreement.illustrative else []) + lines
    body = "".join(f"<p>{escape(line)}</p>" for line in words)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def _base(
    agreement: Agreement,
    measure: Measure,
    *,
    kind: str,
    as_of: datetime,
    lines: list[str],
    period: Period | None = None,
) -> dict[str, Any]:
    """The parts every MeasureReport has. Its `period`: the results decided in the period
    asked (up to the moment looked from), else since the agreement's first infusions."""
    start, end = agreement.infusions.from_, as_of.date()
    if period is not None and period.start is not None and period.end is not None:
        start, end = period.start, min(period.end, end)
    resource: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "text": _narrative(agreement, lines),
        "status": "complete",
        "type": kind,
        "measure": measure_url(agreement, measure),
        "date": as_of.isoformat(),
        "period": {"start": start.isoformat(), "end": max(start, end).isoformat()},
        "improvementNotation": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/measure-improvement-notation",
                    "code": "increase",
                }
            ]
        },
    }
    if agreement.illustrative:
        resource["extension"] = [{"url": ILLUSTRATIVE_EXTENSION, "valueBoolean": True}]
    return resource


def _stratifier(code: str, view: MeasureView) -> dict[str, Any] | None:
    if view.totals_withheld or view.breakdown_withheld or not view.rows:
        return None
    return {
        "code": [{"coding": [{"system": STRATIFIER_SYSTEM, "code": code}], "text": code}],
        "stratum": [
            {
                "value": {"text": row.label},
                "population": _populations(row.patients, row.cells, row.decided),
            }
            for row in view.rows
        ],
    }


def summary_measure_report(
    report: OutcomeReport,
    measure: Measure,
    *,
    by_state: OutcomeReport,
    by_cohort: OutcomeReport,
) -> dict[str, Any]:
    """The summary MeasureReport of one measure over the report's selection; the reports
    `by_state` and `by_cohort` (the same selection broken down) give the stratifiers, and
    the therapy is the agreement's own (one stratum: the whole selection)."""
    view = report.measure(measure.key)
    assert view is not None
    agreement = report.agreement
    period = report.selection.period
    lines = [
        f"{measure.title.en}: {agreement.title.en}, as of {report.as_of.isoformat()}.",
        "Counts from 1 to 10 are not given (masked), nor counts they could be worked out from.",
    ]
    if period is not None and period.key != "all":
        lines.append(f"Results decided in {period.key} only.")
    resource = _base(
        agreement, measure, kind="summary", as_of=report.as_of, lines=lines, period=period
    )
    if view.totals_withheld:
        resource["text"] = _narrative(
            agreement, [*lines, "The figures of this selection are withheld: too few patients."]
        )
        return resource
    group: dict[str, Any] = {
        "code": {"text": measure.key},
        "population": _populations(view.patients, view.totals, view.decided),
    }
    score = _score(view.totals, view.decided)
    if score is not None:
        group["measureScore"] = score
    therapy = {
        "code": [{"coding": [{"system": STRATIFIER_SYSTEM, "code": "therapy"}], "text": "therapy"}],
        "stratum": [
            {
                "value": {"text": agreement.therapy},
                "population": _populations(view.patients, view.totals, view.decided),
            }
        ],
    }
    stratifiers = [therapy]
    for code, other in (("state", by_state), ("cohort", by_cohort)):
        found = other.measure(measure.key)
        stratifier = _stratifier(code, found) if found is not None else None
        if stratifier is not None:
            stratifiers.append(stratifier)
    group["stratifier"] = stratifiers
    resource["group"] = [group]
    return resource


def individual_measure_report(
    agreement: Agreement,
    measure: Measure,
    *,
    outcome: PatientOutcome,
    patient_id: int,
    as_of: datetime,
) -> dict[str, Any]:
    """One patient's result as an individual MeasureReport (only for staff who may see the
    patient: the caller checks)."""
    result = outcome.result
    status = result.status if result is not None else None
    lines = [f"{measure.title.en}: {status.value if status else 'not in the population'}."]
    if result is not None and result.decided_on is not None:
        lines.append(f"Decided on {result.decided_on.isoformat()}.")
    resource = _base(agreement, measure, kind="individual", as_of=as_of, lines=lines)
    resource["subject"] = {"reference": f"Patient/{patient_id}"}
    one, zero = Figure(Mark.SHOWN, "1"), Figure(Mark.SHOWN, "0")
    in_population = result is not None
    decided = status is not None and status is not Status.NOT_YET
    group: dict[str, Any] = {
        "code": {"text": measure.key},
        "population": [
            _population("initial-population", one if in_population else zero),
            _population("denominator", one if decided else zero),
            _population("numerator", one if status is Status.MET else zero),
        ],
    }
    if status is not None:
        group["extension"] = [
            {
                "url": STATUS_EXTENSION,
                "valueCoding": {"system": STATUS_SYSTEM, "code": status.value},
            }
        ]
    resource["group"] = [group]
    deciding = [item for item in outcome.observations if item.deciding]
    if deciding:
        resource["evaluatedResource"] = [
            {"reference": f"Observation/{item.observation_id}"} for item in deciding
        ]
    return resource
