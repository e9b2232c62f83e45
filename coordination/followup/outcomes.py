"""Outcomes captured at a visit, stored as Observations in `core` (coded so the FHIR adapter
maps them 1:1), and the reports patients make between visits.

Each measure names its code system and code, its unit (UCUM) and a plausible range; a value
outside the range is refused with a message that says the range."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit, VisitObservation, VisitStatus
from coordination.followup.protocol import Assessment
from coordination.followup.schedule import complete_visit
from core.audit.service import Actor, record_event
from core.clock import Clock, local_today
from core.errors import FieldErrors
from core.models import (
    RESULT_STATUSES,
    Observation,
    ObservationRevision,
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


def _set_value(observation: Observation, measure: Measure, value: OutcomeValue) -> None:
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
    _set_value(observation, measure, value)
    return observation


def _checked(
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


def _effective(day: date) -> datetime:
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
    checked, errors = _checked(measures_for(assessments), values)
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
            effective_at=_effective(completed_on),
            source=source,
            recorded_by=actor.user_id,
            now=clock.now(),
        )
        for measure, value in checked
    ]
    _link(session, visit=visit, observations=observations)
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


def _link(session: Session, *, visit: Visit, observations: Sequence[Observation]) -> None:
    session.add_all(observations)
    session.flush()
    session.add_all(
        VisitObservation(visit_id=visit.id, observation_id=observation.id)
        for observation in observations
    )
    session.flush()


# --- after the visit: completing and correcting what was recorded ---------------------------


class OutcomeChangeError(ValueError):
    """The change is not possible (says why, for people)."""


def outcomes_of_visit(session: Session, *, visit_id: int) -> list[Observation]:
    """The observations recorded at a visit, in the order they were recorded, including
    those entered in error (pages show them struck out)."""
    return list(
        session.scalars(
            select(Observation)
            .join(VisitObservation, VisitObservation.observation_id == Observation.id)
            .where(VisitObservation.visit_id == visit_id)
            .order_by(Observation.id)
        )
    )


def measure_of(observation: Observation) -> Measure | None:
    """The platform's measure an observation records (None for other codes)."""
    return next(
        (
            measure
            for measure in MEASURES
            if (measure.code_system, measure.code) == (observation.code_system, observation.code)
        ),
        None,
    )


def value_of(observation: Observation) -> OutcomeValue | None:
    """The observation's value, typed as its measure takes it."""
    if observation.value_boolean is not None:
        return observation.value_boolean
    if observation.value_quantity is not None:
        return observation.value_quantity
    return observation.value_text


def _keep_revision(
    session: Session, *, clock: Clock, actor: Actor, observation: Observation, reason: str
) -> None:
    session.add(
        ObservationRevision(
            observation_id=observation.id,
            version_id=observation.version_id,
            status=observation.status.value,
            value_quantity=observation.value_quantity,
            value_unit=observation.value_unit,
            value_code_system=observation.value_code_system,
            value_code=observation.value_code,
            value_text=observation.value_text,
            value_boolean=observation.value_boolean,
            effective_at=observation.effective_at,
            recorded_by_user_id=observation.recorded_by_user_id,
            recorded_at=observation.last_updated,
            replaced_at=clock.now(),
            replaced_by_user_id=actor.user_id,
            replaced_by_label=actor.label[:254],
            reason=reason,
        )
    )


def _reason(reason: str) -> str:
    text = " ".join(reason.split())
    if not text:
        raise FieldErrors({"reason": N_("Say why the values change; it is kept with them.")})
    if len(text) > 500:
        raise FieldErrors({"reason": N_("Use at most 500 characters.")})
    return text


def correct_outcome(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    observation: Observation,
    value: OutcomeValue | None,
    reason: str,
) -> Observation:
    """Correct a recorded value (`value` None: it was entered in error). What it said
    before is kept as a revision with who recorded it, when, and who corrected it, when
    and why; the observation's version rises (status corrected, or entered-in-error).
    Raises FieldErrors for a missing reason or a value outside the plausible range,
    OutcomeChangeError for an observation already entered in error."""
    why = _reason(reason)
    if observation.status is ObservationStatus.ENTERED_IN_ERROR:
        raise OutcomeChangeError(N_("This value was removed as entered in error."))
    measure = measure_of(observation)
    if value is not None:
        if measure is None:
            raise OutcomeChangeError(N_("Only the platform's own measures can be corrected here."))
        try:
            value = check_value(measure, value)
        except ValueError as problem:
            raise FieldErrors({"value": problem.args[0]}) from None
        if value == value_of(observation):
            return observation
    _keep_revision(session, clock=clock, actor=actor, observation=observation, reason=why)
    before = observation.status.value
    if value is None:
        observation.status = ObservationStatus.ENTERED_IN_ERROR
    else:
        assert measure is not None
        _set_value(observation, measure, value)
        observation.status = ObservationStatus.CORRECTED
    observation.version_id += 1
    observation.recorded_by_user_id = actor.user_id
    observation.updated_at = clock.now()
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="observation.retract" if value is None else "observation.correct",
        patient_id=observation.patient_id,
        target=f"observation:{observation.id}",
        detail={"code": observation.code, "from_status": before, "version": observation.version_id},
    )
    return observation


def add_outcomes(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    visit: Visit,
    assessments: tuple[Assessment, ...],
    values: Mapping[str, OutcomeValue],
    reason: str,
    source: ObservationSource = ObservationSource.COORDINATOR,
) -> list[Observation]:
    """Complete what a completed visit lacks: values that arrived later (a lab result), on
    the visit's day, with why they are added. A measure that already has a standing value
    is corrected instead (`correct_outcome`). Raises FieldErrors."""
    if visit.status is not VisitStatus.COMPLETED or visit.completed_on is None:
        raise OutcomeChangeError(N_("Values can be added to a completed visit only."))
    why = _reason(reason)
    checked, errors = _checked(measures_for(assessments), values)
    standing = {
        (observation.code_system, observation.code)
        for observation in outcomes_of_visit(session, visit_id=visit.id)
        if observation.status in RESULT_STATUSES
    }
    for measure, _value in checked:
        if (measure.code_system, measure.code) in standing:
            errors[measure.key] = N_("This visit already has this value: correct it instead.")
    if errors:
        raise FieldErrors(errors)
    observations = [
        observation_for(
            measure,
            value,
            patient_id=visit.patient_id,
            effective_at=_effective(visit.completed_on),
            source=source,
            recorded_by=actor.user_id,
            now=clock.now(),
        )
        for measure, value in checked
    ]
    _link(session, visit=visit, observations=observations)
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="visit.outcomes_add",
        patient_id=visit.patient_id,
        target=f"visit:{visit.id}",
        detail={"measures": [measure.key for measure, _value in checked], "reason": why},
    )
    return observations


def revisions_of(
    session: Session, *, observation_ids: Sequence[int]
) -> dict[int, list[ObservationRevision]]:
    """The earlier versions of these observations, oldest first, by observation id."""
    found: dict[int, list[ObservationRevision]] = {id_: [] for id_ in observation_ids}
    if observation_ids:
        for revision in session.scalars(
            select(ObservationRevision)
            .where(ObservationRevision.observation_id.in_(list(observation_ids)))
            .order_by(ObservationRevision.version_id)
        ):
            found[revision.observation_id].append(revision)
    return found


def revise_outcomes(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    visit: Visit,
    assessments: tuple[Assessment, ...],
    values: Mapping[str, OutcomeValue],
    remove: Sequence[str],
    reason: str,
) -> int:
    """The correction form of a completed visit, as one change: each measure's standing
    value is corrected when `values` has another one, removed as entered in error when its
    key is in `remove`, and added when the visit had none. Keys left out change nothing.
    Returns how many values changed; raises FieldErrors (nothing changes then)."""
    if visit.status is not VisitStatus.COMPLETED:
        raise OutcomeChangeError(N_("Values can be corrected on a completed visit only."))
    why = _reason(reason)
    measures = measures_for(assessments)
    checked, errors = _checked(measures, values)
    standing = {
        (observation.code_system, observation.code): observation
        for observation in outcomes_of_visit(session, visit_id=visit.id)
        if observation.status in RESULT_STATUSES
    }
    by_key = {measure.key: measure for measure in measures}
    for key in remove:
        measure = by_key.get(key)
        if measure is None or (measure.code_system, measure.code) not in standing:
            errors[key] = N_("There is no value to remove.")
        elif key in values:
            errors[key] = N_("Either correct the value or remove it, not both.")
    if errors:
        raise FieldErrors(errors)
    changed = 0
    to_add: dict[str, OutcomeValue] = {}
    for measure, value in checked:
        found = standing.get((measure.code_system, measure.code))
        if found is None:
            to_add[measure.key] = value
        elif value != value_of(found):
            correct_outcome(
                session, clock=clock, actor=actor, observation=found, value=value, reason=why
            )
            changed += 1
    for key in remove:
        measure = by_key[key]
        correct_outcome(
            session,
            clock=clock,
            actor=actor,
            observation=standing[(measure.code_system, measure.code)],
            value=None,
            reason=why,
        )
        changed += 1
    if to_add:
        changed += len(
            add_outcomes(
                session,
                clock=clock,
                actor=actor,
                visit=visit,
                assessments=assessments,
                values=to_add,
                reason=why,
            )
        )
    return changed


def standing_values(session: Session, *, visit_id: int) -> dict[str, OutcomeValue]:
    """The values that stand at a visit (not entered in error), by measure key."""
    found: dict[str, OutcomeValue] = {}
    for observation in outcomes_of_visit(session, visit_id=visit_id):
        measure = measure_of(observation)
        value = value_of(observation)
        if measure is not None and value is not None and observation.status in RESULT_STATUSES:
            found[measure.key] = value
    return found


def read_revision_values(
    measures: Sequence[Measure], raw: Mapping[str, str], *, standing: Mapping[str, OutcomeValue]
) -> dict[str, OutcomeValue]:
    """The correction form's fields as typed values for `revise_outcomes`: an empty field
    changes nothing, and an unticked box only counts where the visit has a yes/no value
    (an unticked box cannot add a "no" nobody gave). Raises FieldErrors."""
    values = read_outcome_values(measures, raw)
    return {
        key: value
        for key, value in values.items()
        if not (isinstance(value, bool) and value is False and key not in standing)
    }


def form_text(value: OutcomeValue) -> str:
    """A value as a form field shows it."""
    if isinstance(value, bool):
        return "on" if value else ""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value
