"""Outcomes captured at a visit, stored as Observations in `core` (coded so the FHIR adapter
maps them 1:1), and the reports patients make between visits.

Each measure names its code system and code, its unit (UCUM) and a plausible range; a value
outside the range is refused with a message that says the range."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

from sqlalchemy.orm import Session

from coordination.followup.models import Visit, VisitObservation
from coordination.followup.protocol import Assessment
from coordination.followup.schedule import complete_visit
from core.audit.service import Actor, record_event
from core.clock import Clock, local_today
from core.errors import FieldErrors
from core.models import (
    Observation,
    ObservationSource,
    ObservationStatus,
    Patient,
)
from core.text import N_

LOINC = "http://loinc.org"
# Our own code system for follow-up facts that have no standard code.
LTFU_SYSTEM = "https://cgt-access.org/fhir/CodeSystem/ltfu"


@dataclass(frozen=True)
class Measure:
    """One field of the outcome form and the Observation it becomes."""

    key: str
    label: str  # msgid
    code_system: str
    code: str
    display: str
    kind: str  # "quantity" | "count" | "boolean" | "text"
    unit: str | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    assessment: Assessment | None = None  # shown when the visit's protocol assesses it


MEASURES: tuple[Measure, ...] = (
    Measure(
        "hemoglobin",
        N_("Hemoglobin (g/dL)"),
        LOINC,
        "718-7",
        "Hemoglobin [Mass/volume] in Blood",
        "quantity",
        "g/dL",
        Decimal("3"),
        Decimal("25"),
        Assessment.HEMOGLOBIN,
    ),
    Measure(
        "fetal_hemoglobin",
        N_("Fetal hemoglobin (%)"),
        LOINC,
        "4576-5",
        "Hemoglobin F/Hemoglobin.total in Blood",
        "quantity",
        "%",
        Decimal("0"),
        Decimal("100"),
        Assessment.FETAL_HEMOGLOBIN,
    ),
    Measure(
        "voe_count",
        N_("Vaso-occlusive events since the last visit"),
        LTFU_SYSTEM,
        "voe-count",
        "Vaso-occlusive events since last visit",
        "count",
        "{events}",
        Decimal("0"),
        Decimal("100"),
    ),
    Measure(
        "hospitalizations",
        N_("Hospital stays since the last visit"),
        LTFU_SYSTEM,
        "hospitalization-count",
        "Hospitalizations since last visit",
        "count",
        "{stays}",
        Decimal("0"),
        Decimal("100"),
    ),
    Measure(
        "transfusions",
        N_("Red-cell transfusions since the last visit"),
        LTFU_SYSTEM,
        "transfusion-count",
        "Red blood cell transfusions since last visit",
        "count",
        "{transfusions}",
        Decimal("0"),
        Decimal("200"),
    ),
    Measure(
        "adverse_events",
        N_("Adverse events (describe, or leave empty for none)"),
        LTFU_SYSTEM,
        "adverse-events",
        "Adverse events since last visit",
        "text",
        assessment=Assessment.SAFETY_SCREEN,
    ),
    Measure(
        "pro_done",
        N_("Patient-reported questionnaire done"),
        LTFU_SYSTEM,
        "pro-completed",
        "Patient-reported outcome questionnaire completed",
        "boolean",
        assessment=Assessment.PRO_QUESTIONNAIRE,
    ),
)
MEASURES_BY_KEY = {measure.key: measure for measure in MEASURES}


def measures_for(assessments: tuple[Assessment, ...]) -> list[Measure]:
    """The form's fields for a visit: the always-asked counts plus what the protocol assesses."""
    return [
        measure
        for measure in MEASURES
        if measure.assessment is None or measure.assessment in assessments
    ]


OutcomeValue = Decimal | bool | str


def check_value(measure: Measure, value: OutcomeValue) -> OutcomeValue:
    """A typed value as the measure takes it; raises ValueError (a message for people that
    says the plausible range) for a value of the wrong kind or outside the range."""
    if measure.kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError(N_("Answer yes or no."))
        return value
    if measure.kind == "text":
        if not isinstance(value, str) or isinstance(value, bool):
            raise ValueError(N_("Enter a text."))
        if len(value) > 1000:
            raise ValueError(N_("Use at most 1000 characters."))
        return value
    if isinstance(value, bool) or not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(N_("Enter a number."))
    if measure.kind == "count" and value != value.to_integral_value():
        raise ValueError(N_("Enter a whole number."))
    assert measure.low is not None and measure.high is not None
    if not measure.low <= value <= measure.high:
        raise ValueError(
            N_(
                "Enter a value from %(low)s to %(high)s %(unit)s.",
                low=measure.low,
                high=measure.high,
                unit=measure.unit or "",
            )
        )
    return value


def read_value(measure: Measure, raw: str) -> OutcomeValue | None:
    """A value as typed in a form field (None: left empty; a box unticked is False)."""
    text = raw.strip()
    if measure.kind == "boolean":
        return check_value(measure, text in ("on", "yes", "true", "1"))
    if not text:
        return None
    if measure.kind == "text":
        return check_value(measure, text)
    try:
        number = Decimal(text.replace(",", "."))
    except InvalidOperation:
        raise ValueError(N_("Enter a number.")) from None
    return check_value(measure, number)


def read_outcome_values(
    measures: Sequence[Measure], raw: Mapping[str, str]
) -> dict[str, OutcomeValue]:
    """The outcome form's fields as typed values, by measure key (empty fields left out).
    Raises FieldErrors naming every field to fix, with the plausible range."""
    errors: dict[str, str] = {}
    values: dict[str, OutcomeValue] = {}
    for measure in measures:
        try:
            value = read_value(measure, raw.get(measure.key, ""))
        except ValueError as problem:
            errors[measure.key] = problem.args[0]
            continue
        if value is not None:
            values[measure.key] = value
    if errors:
        raise FieldErrors(errors)
    return values


def set_value(observation: Observation, measure: Measure, value: OutcomeValue) -> None:
    observation.value_boolean = value if isinstance(value, bool) else None
    is_number = isinstance(value, Decimal)
    observation.value_quantity = value if is_number else None  # type: ignore[assignment]
    observation.value_unit = measure.unit if is_number else None
    observation.value_text = value if isinstance(value, str) else None


def observation_for(
    measure: Measure,
    value: OutcomeValue,
    *,
    patient_id: int,
    effective_at: datetime,
    source: ObservationSource,
    recorded_by: int | None,
    now: datetime,
) -> Observation:
    """A new Observation of `measure` (its code, display and UCUM unit) with `value`."""
    observation = Observation(
        patient_id=patient_id,
        code_system=measure.code_system,
        code=measure.code,
        display=measure.display,
        effective_at=effective_at,
        source=source,
        recorded_by_user_id=recorded_by,
        status=ObservationStatus.FINAL,
        version_id=1,
        created_at=now,
        updated_at=now,
    )
    set_value(observation, measure, value)
    return observation


def checked_values(
    measures: Sequence[Measure], values: Mapping[str, OutcomeValue]
) -> tuple[list[tuple[Measure, OutcomeValue]], dict[str, str]]:
    by_key = {measure.key: measure for measure in measures}
    errors: dict[str, str] = {}
    checked: list[tuple[Measure, OutcomeValue]] = []
    for key, value in values.items():
        measure = by_key.get(key)
        if measure is None:
            # Not asked at this visit (its protocol does not assess it): left out, as the
            # form would not have shown the field.
            continue
        try:
            checked.append((measure, check_value(measure, value)))
        except ValueError as problem:
            errors[key] = problem.args[0]
    # In the measures' order, whatever order the values came in.
    order = {measure.key: index for index, measure in enumerate(measures)}
    checked.sort(key=lambda pair: order[pair[0].key])
    return checked, errors


def visit_day_instant(day: date) -> datetime:
    # A visit's values carry its day; noon UTC keeps that day in every US zone.
    return datetime.combine(day, time(12), tzinfo=UTC)


def record_outcomes(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    visit: Visit,
    assessments: tuple[Assessment, ...],
    completed_on: date,
    values: Mapping[str, OutcomeValue],
    source: ObservationSource = ObservationSource.COORDINATOR,
) -> list[Observation]:
    """Complete the visit on `completed_on` and store its outcomes (typed values by measure
    key, e.g. from `read_outcome_values`) as Observations linked to it. Raises FieldErrors
    (with the plausible range for a value outside it) and changes nothing when any value
    or the date is wrong."""
    checked, errors = checked_values(measures_for(assessments), values)
    patient = session.get(Patient, visit.patient_id)
    assert patient is not None
    if completed_on > local_today(clock, patient.time_zone):
        errors["completed_on"] = N_("The visit date cannot be in the future.")
    if errors:
        raise FieldErrors(errors)
    complete_visit(session, clock=clock, actor=actor, visit=visit, completed_on=completed_on)
    observations = [
        observation_for(
            measure,
            value,
            patient_id=visit.patient_id,
            effective_at=visit_day_instant(completed_on),
            source=source,
            recorded_by=actor.user_id,
            now=clock.now(),
        )
        for measure, value in checked
    ]
    link_to_visit(session, visit=visit, observations=observations)
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="visit.complete",
        patient_id=visit.patient_id,
        target=f"visit:{visit.id}",
        detail={"measures": [measure.key for measure, _value in checked]},
    )
    return observations


def link_to_visit(session: Session, *, visit: Visit, observations: Sequence[Observation]) -> None:
    session.add_all(observations)
    session.flush()
    session.add_all(
        VisitObservation(visit_id=visit.id, observation_id=observation.id)
        for observation in observations
    )
    session.flush()
