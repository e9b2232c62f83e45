"""Observations that arrive from a treatment center's system (FHIR): lab results, the counts
the outcome form records, vital signs and other coded facts, checked like the form's values
and kept as `core` Observations.

A value of one of the platform's outcome measures (hemoglobin, fetal hemoglobin, the counts)
dated inside a follow-up visit's window completes that visit, as the outcome form does, and
is linked to it; a visit already completed gets the value linked. Changing a value later
keeps the version it replaces (`outcomes.correct_outcome`'s revisions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit, VisitObservation, VisitStatus
from coordination.followup.outcomes import (
    LOINC,
    MEASURES,
    Measure,
    OutcomeValue,
    check_value,
)
from coordination.followup.schedule import complete_visit, visit_on
from core.audit.service import Actor, record_event
from core.clock import Clock
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

UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class VitalSign:
    """A vital sign the platform takes (LOINC, the UCUM unit FHIR's vital-signs profile
    requires) with a range beyond which a value is surely a typing or unit mistake."""

    code: str
    unit: str
    low: Decimal
    high: Decimal


VITAL_SIGNS = {
    vital.code: vital
    for vital in (
        VitalSign("8867-4", "/min", Decimal(10), Decimal(300)),  # heart rate
        VitalSign("9279-1", "/min", Decimal(2), Decimal(100)),  # respiratory rate
        VitalSign("8310-5", "Cel", Decimal(25), Decimal(45)),  # body temperature
        VitalSign("29463-7", "kg", Decimal("0.3"), Decimal(500)),  # body weight
        VitalSign("8302-2", "cm", Decimal(20), Decimal(260)),  # body height
        VitalSign("39156-5", "kg/m2", Decimal(5), Decimal(100)),  # BMI
        VitalSign("2708-6", "%", Decimal(40), Decimal(100)),  # oxygen saturation
        VitalSign("59408-5", "%", Decimal(40), Decimal(100)),  # SpO2 by pulse oximetry
        VitalSign("8480-6", "mm[Hg]", Decimal(40), Decimal(300)),  # systolic
        VitalSign("8462-4", "mm[Hg]", Decimal(20), Decimal(200)),  # diastolic
    )
}
_MEASURES_BY_CODE = {(measure.code_system, measure.code): measure for measure in MEASURES}


@dataclass(frozen=True)
class ObservationFacts:
    """What an observation says, whoever sent it. `value` is a Decimal (a quantity, with its
    UCUM `unit`), a bool, or a str; a coded value goes in `value_code_system`/`value_code`
    (its display in `value`); no value at all is allowed with a data-absent reason in
    `extra`. `extra` keeps what has no column (components, categories, the absent reason)."""

    code_system: str
    code: str
    display: str
    effective_at: datetime
    status: ObservationStatus = ObservationStatus.FINAL
    value: OutcomeValue | None = None
    unit: str | None = None
    unit_system: str | None = UCUM
    value_code_system: str | None = None
    value_code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def measure_for(facts: ObservationFacts) -> Measure | None:
    """The platform's outcome measure these facts record, if any."""
    return _MEASURES_BY_CODE.get((facts.code_system, facts.code))


def is_known_code(system: str, code: str) -> bool:
    """Whether the platform checks this code's values: an outcome measure or a vital sign."""
    return (system, code) in _MEASURES_BY_CODE or (system == LOINC and code in VITAL_SIGNS)


def _check_quantity(low: Decimal, high: Decimal, unit: str, value: Decimal) -> None:
    if not low <= value <= high:
        raise FieldErrors(
            {
                "value": N_(
                    "Enter a value from %(low)s to %(high)s %(unit)s.",
                    low=low,
                    high=high,
                    unit=unit,
                )
            }
        )


def check_facts(facts: ObservationFacts) -> None:
    """The platform's rules for an observation from outside: the unit its measure uses
    (UCUM), a plausible value, a known status. Raises FieldErrors keyed by `value`, `unit`,
    `code`, `status`."""
    if not facts.code.strip() or len(facts.code) > 64 or len(facts.code_system) > 120:
        raise FieldErrors({"code": N_("Give the observation's code and its system.")})
    measure = measure_for(facts)
    value = facts.value
    if measure is not None and value is not None:
        if measure.kind in ("quantity", "count"):
            if not isinstance(value, Decimal) or isinstance(value, bool):
                raise FieldErrors({"value": N_("Enter a number.")})
            if facts.unit != measure.unit or facts.unit_system != UCUM:
                raise FieldErrors(
                    {"unit": N_("The unit must be %(unit)s (UCUM).", unit=measure.unit or "")}
                )
        try:
            check_value(measure, value)
        except ValueError as problem:
            raise FieldErrors({"value": problem.args[0]}) from None
        return
    vital = VITAL_SIGNS.get(facts.code) if facts.code_system == LOINC else None
    if vital is not None and isinstance(value, Decimal):
        if facts.unit != vital.unit or facts.unit_system != UCUM:
            raise FieldErrors({"unit": N_("The unit must be %(unit)s (UCUM).", unit=vital.unit)})
        _check_quantity(vital.low, vital.high, vital.unit, value)
    if isinstance(value, Decimal) and not value.is_finite():
        raise FieldErrors({"value": N_("Enter a number.")})
    if isinstance(value, Decimal) and abs(value) >= Decimal("1e10"):
        raise FieldErrors({"value": N_("This value is too large to keep.")})
    if isinstance(value, str) and len(value) > 5000:
        raise FieldErrors({"value": N_("Use at most 5000 characters.")})


def _apply(observation: Observation, facts: ObservationFacts) -> None:
    value = facts.value
    observation.code_system = facts.code_system
    observation.code = facts.code
    observation.display = facts.display[:200]
    observation.effective_at = facts.effective_at
    observation.value_boolean = value if isinstance(value, bool) else None
    is_number = isinstance(value, Decimal) and not isinstance(value, bool)
    observation.value_quantity = value if is_number else None  # type: ignore[assignment]
    observation.value_unit = facts.unit if is_number else None
    observation.value_code_system = facts.value_code_system
    observation.value_code = facts.value_code
    observation.value_text = value if isinstance(value, str) else None
    observation.extra = facts.extra or None


def _link_to_visit(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient, observation: Observation
) -> Visit | None:
    """An outcome measure's result dated in a visit's window completes the visit (on the
    result's day, in the patient's zone) and is linked to it."""
    day = observation.effective_at.astimezone(_zone(patient)).date()
    visit = visit_on(session, patient_id=patient.id, day=day)
    if visit is None:
        return None
    if visit.status is not VisitStatus.COMPLETED:
        complete_visit(session, clock=clock, actor=actor, visit=visit, completed_on=day)
    session.add(VisitObservation(visit_id=visit.id, observation_id=observation.id))
    session.flush()
    return visit


def _zone(patient: Patient) -> ZoneInfo:
    return ZoneInfo(patient.time_zone)


def record_observation(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    facts: ObservationFacts,
    source: ObservationSource = ObservationSource.CENTER,
) -> Observation:
    """Keep an observation from outside (audited). A result of an outcome measure in a
    visit's window completes the visit as the outcome form does. Raises FieldErrors."""
    check_facts(facts)
    now = clock.now()
    observation = Observation(
        patient_id=patient.id,
        source=source,
        recorded_by_user_id=actor.user_id,
        status=facts.status,
        version_id=1,
        created_at=now,
        updated_at=now,
    )
    _apply(observation, facts)
    session.add(observation)
    session.flush()
    visit = None
    if measure_for(facts) is not None and facts.status in RESULT_STATUSES:
        visit = _link_to_visit(
            session, clock=clock, actor=actor, patient=patient, observation=observation
        )
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="observation.create",
        patient_id=patient.id,
        target=f"observation:{observation.id}",
        detail={"code": facts.code, "visit": visit.id if visit is not None else None},
    )
    return observation


def _facts_of(observation: Observation) -> tuple[Any, ...]:
    return (
        observation.code_system,
        observation.code,
        observation.display,
        observation.effective_at,
        observation.status,
        observation.value_quantity,
        observation.value_unit,
        observation.value_boolean,
        observation.value_text,
        observation.value_code_system,
        observation.value_code,
        observation.extra,
    )


def update_observation(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    observation: Observation,
    facts: ObservationFacts,
    reason: str,
) -> bool:
    """Replace what an observation says with `facts` (a center's corrected result, or its
    status entered-in-error). The version it replaces is kept with who recorded it and
    when, and who replaced it, when and `reason`; the version rises. Returns False when
    nothing changed. Raises FieldErrors."""
    if facts.status is not ObservationStatus.ENTERED_IN_ERROR:
        check_facts(facts)
    before = _facts_of(observation)
    probe = Observation(status=facts.status)
    _apply(probe, facts)
    if _facts_of(probe) == before:
        return False
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
            reason=reason[:500],
        )
    )
    if facts.status is ObservationStatus.ENTERED_IN_ERROR:
        observation.status = ObservationStatus.ENTERED_IN_ERROR
    else:
        _apply(observation, facts)
        observation.status = facts.status
    observation.version_id += 1
    observation.recorded_by_user_id = actor.user_id
    observation.updated_at = clock.now()
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="observation.update",
        patient_id=observation.patient_id,
        target=f"observation:{observation.id}",
        detail={"code": observation.code, "version": observation.version_id},
    )
    return True


def visit_of_observation(session: Session, *, observation_id: int) -> int | None:
    """The id of the visit an observation was recorded at, if any."""
    return session.scalar(
        select(VisitObservation.visit_id).where(VisitObservation.observation_id == observation_id)
    )
