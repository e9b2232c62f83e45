"""Observations that arrive from a treatment center's system (FHIR): lab results, the counts
the outcome form records, vital signs and other coded facts, checked like the form's values
and kept as `core` Observations.

A value of one of the platform's outcome measures (hemoglobin, fetal hemoglobin, the counts)
dated inside a follow-up visit's window completes that visit, as the outcome form does, and
is linked to it; a visit already completed gets the value linked. Changing a value later
keeps the version it replaces (`outcomes.correct_outcome`'s revisions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from coordination.followup.corrections import keep_revision
from coordination.followup.models import Visit, VisitObservation, VisitStatus
from coordination.followup.outcomes import (
    LOINC,
    MEASURES,
    Measure,
    OutcomeValue,
    check_value,
)
from coordination.followup.schedule import complete_visits
from core.audit.service import Actor, EventData, listed_targets, record_event, record_events
from core.clock import Clock
from core.db import insert_returning_ids, table_of
from core.errors import FieldErrors
from core.models import (
    RESULT_STATUSES,
    Observation,
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
    # What the record's columns hold at most (a database refuses longer values outright).
    if facts.unit is not None and len(facts.unit) > 32:
        raise FieldErrors({"unit": N_("Use a unit of at most 32 characters (UCUM).")})
    if len(facts.value_code or "") > 64 or len(facts.value_code_system or "") > 120:
        raise FieldErrors(
            {"value": N_("A coded value's code has at most 64 characters, its system 120.")}
        )
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


def _values(facts: ObservationFacts) -> dict[str, Any]:
    """The columns of an observation that say what `facts` say."""
    value = facts.value
    is_number = isinstance(value, Decimal) and not isinstance(value, bool)
    return {
        "code_system": facts.code_system,
        "code": facts.code,
        "display": facts.display[:200],
        "effective_at": facts.effective_at,
        "value_boolean": value if isinstance(value, bool) else None,
        "value_quantity": value if is_number else None,
        "value_unit": facts.unit if is_number else None,
        "value_code_system": facts.value_code_system,
        "value_code": facts.value_code,
        "value_text": value if isinstance(value, str) else None,
        "extra": facts.extra or None,
    }


def _apply(observation: Observation, facts: ObservationFacts) -> None:
    for name, value in _values(facts).items():
        setattr(observation, name, value)


class ObservationErrors(FieldErrors):
    """The FieldErrors of one of several observations kept together (`index`: which)."""

    def __init__(self, errors: dict[str, str], *, index: int) -> None:
        super().__init__(errors)
        self.index = index


@dataclass
class _Window:
    """What choosing the visit a result belongs to needs of a visit (`schedule.visit_on`)."""

    id: int
    window_start: date
    window_end: date
    target_date: date
    status: VisitStatus


def _windows(session: Session, *, patient_ids: set[int]) -> dict[int, list[_Window]]:
    """The windows of these patients' visits that are not cancelled, by patient."""
    found: dict[int, list[_Window]] = {}
    if patient_ids:
        for patient_id, visit_id, opens, closes, target, status in session.execute(
            select(
                Visit.patient_id,
                Visit.id,
                Visit.window_start,
                Visit.window_end,
                Visit.target_date,
                Visit.status,
            ).where(Visit.patient_id.in_(patient_ids), Visit.status != VisitStatus.CANCELLED)
        ):
            found.setdefault(patient_id, []).append(
                _Window(visit_id, opens, closes, target, status)
            )
    return found


def _window_holding(windows: list[_Window], day: date) -> _Window | None:
    """As `schedule.visit_on`: the open or missed visit whose window holds `day` first,
    else a completed one."""
    return min(
        (window for window in windows if window.window_start <= day <= window.window_end),
        key=lambda window: (window.status is VisitStatus.COMPLETED, window.target_date),
        default=None,
    )


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
    (observation_id,) = record_observations(
        session, clock=clock, actor=actor, items=[(patient, facts)], source=source
    )
    observation = session.get(Observation, observation_id)
    assert observation is not None
    return observation


def record_observations(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    items: Sequence[tuple[Patient, ObservationFacts]],
    source: ObservationSource = ObservationSource.CENTER,
) -> list[int]:
    """Keep observations from outside, each as `record_observation` keeps it, in order (a
    center's transaction sends hundreds at once: one insert, one read of the visits their
    results may complete, instead of a round trip each). Every one is checked before any
    is kept: raises ObservationErrors naming the first that breaks a rule. Returns the new
    observations' ids, in order (each has version 1, and `clock.now()` as its last change)."""
    for index, (_patient, facts) in enumerate(items):
        try:
            check_facts(facts)
        except FieldErrors as problem:
            raise ObservationErrors(problem.errors, index=index) from None
    now = clock.now()
    observation_ids = insert_returning_ids(
        session,
        Observation,
        [
            {
                "patient_id": patient.id,
                "source": source,
                "recorded_by_user_id": actor.user_id,
                "status": facts.status,
                "version_id": 1,
                "created_at": now,
                "updated_at": now,
                **_values(facts),
            }
            for patient, facts in items
        ],
    )
    # A result of an outcome measure in a visit's window completes that visit (on the
    # result's day, in the patient's zone) and is linked to it; a visit already completed
    # gets the result linked. Each result is judged after the ones before it, as if they
    # came one by one: the windows of every patient concerned are read at once.
    results = [
        index
        for index, (_patient, facts) in enumerate(items)
        if measure_for(facts) is not None and facts.status in RESULT_STATUSES
    ]
    windows = _windows(session, patient_ids={items[index][0].id for index in results})
    linked: dict[int, int] = {}  # result index -> visit id
    completed_on: dict[int, date] = {}  # visit id -> the day a result completed it
    for index in results:
        patient, facts = items[index]
        day = facts.effective_at.astimezone(_zone(patient)).date()
        holding = _window_holding(windows.get(patient.id, []), day)
        if holding is None:
            continue
        if holding.status is not VisitStatus.COMPLETED:
            holding.status = VisitStatus.COMPLETED
            completed_on[holding.id] = day
        linked[index] = holding.id
    if completed_on:
        completed = session.scalars(
            select(Visit).where(Visit.id.in_(completed_on)).order_by(Visit.id)
        )
        complete_visits(
            session,
            clock=clock,
            actor=actor,
            completions=[(visit, completed_on[visit.id]) for visit in completed],
        )
    if linked:
        session.execute(
            insert(table_of(VisitObservation)),
            [
                {"visit_id": visit_id, "observation_id": observation_ids[index]}
                for index, visit_id in linked.items()
            ],
        )
    # One event per patient (a center's transaction sends thousands of results, and each
    # event is an indexed row): one observation's as `record_observation` always wrote it,
    # several listed in its detail.
    kept: dict[int, list[dict[str, Any]]] = {}
    for index, ((patient, facts), observation_id) in enumerate(
        zip(items, observation_ids, strict=True)
    ):
        kept.setdefault(patient.id, []).append(
            {"id": observation_id, "code": facts.code, "visit": linked.get(index)}
        )
    record_events(
        session,
        clock=clock,
        actor=actor,
        events=(
            EventData(
                action="observation.create",
                patient_id=patient_id,
                target=listed_targets([f"observation:{seen['id']}" for seen in observations]),
                detail=(
                    {"code": observations[0]["code"], "visit": observations[0]["visit"]}
                    if len(observations) == 1
                    else {"observations": observations}
                ),
            )
            for patient_id, observations in kept.items()
        ),
    )
    session.flush()
    return observation_ids


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
    keep_revision(session, clock=clock, actor=actor, observation=observation, reason=reason[:500])
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
