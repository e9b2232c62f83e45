"""Completing and correcting what a visit recorded, after the visit: a value that arrived
later, a corrected lab result, a value entered in error. Nothing is overwritten silently: each
replaced version of an observation is kept (`ObservationRevision`) with who recorded it and
when, and who replaced it, when and why; the observation's version rises."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit, VisitObservation, VisitStatus
from coordination.followup.outcomes import (
    MEASURES,
    Measure,
    OutcomeValue,
    check_value,
    checked_values,
    link_to_visit,
    measures_for,
    observation_for,
    read_outcome_values,
    set_value,
    visit_day_instant,
)
from coordination.followup.protocol import Assessment
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.models import (
    RESULT_STATUSES,
    Observation,
    ObservationRevision,
    ObservationSource,
    ObservationStatus,
)
from core.text import N_


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


def keep_revision(
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
    keep_revision(session, clock=clock, actor=actor, observation=observation, reason=why)
    before = observation.status.value
    if value is None:
        observation.status = ObservationStatus.ENTERED_IN_ERROR
    else:
        assert measure is not None
        set_value(observation, measure, value)
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
    checked, errors = checked_values(measures_for(assessments), values)
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
            effective_at=visit_day_instant(visit.completed_on),
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
    checked, errors = checked_values(measures, values)
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
