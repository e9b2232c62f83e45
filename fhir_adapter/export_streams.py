"""What a bulk export reads: one stream of FHIR resources per type, for one center's patients,
changed after `_since` if given, straight from Core selects in chunks (`yield_per`: a
server-side cursor on PostgreSQL, the cursor's own paging on SQLite). No ORM object is made
per row: each row goes through the same `fhir_adapter.resources` function that reads and
searches use (they read attributes by column name), and is gone once written.

The small tables every row refers to (states, centers, therapies and their codes, the
protocols' visit labels) are read once per export, not once per row.
"""

from __future__ import annotations

import itertools
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from coordination.followup.models import FollowUpPlan, Visit, VisitStatus
from coordination.followup.protocol import ProtocolLibrary
from core.models import (
    Caregiver,
    CaregiverLink,
    Condition,
    Observation,
    Patient,
    State,
    Therapy,
    TherapyCode,
    TreatmentCenter,
)
from fhir_adapter import questionnaire_responses, resources
from fhir_adapter.resources import JSON

# The types an export writes, in the order it writes them (every one is in the Patient
# compartment: a client's export holds its center's patients and what is about them).
EXPORT_TYPES = (
    "Patient",
    "Observation",
    "Condition",
    "RelatedPerson",
    "Procedure",
    "Encounter",
    "Appointment",
    "CarePlan",
    "QuestionnaireResponse",
)
# Rows fetched from the database at a time.
FETCH_ROWS = 2_000

_patients = Patient.__table__.c
_observations = Observation.__table__.c
_conditions = Condition.__table__.c
_links = CaregiverLink.__table__.c
_caregivers = Caregiver.__table__.c
_visits = Visit.__table__.c
_plans = FollowUpPlan.__table__.c


@dataclass
class ExportLookups:
    """The small tables the rows refer to, read once per export; and the visit labels of the
    protocols, worked out once per (therapy, protocol version, visit)."""

    library: ProtocolLibrary
    states: dict[int, State]
    centers: dict[int, TreatmentCenter]
    therapies: dict[int, Therapy]
    therapy_codes: dict[int, list[tuple[str, str]]]
    _labels: dict[tuple[int, int, str], str] = field(default_factory=dict)
    _titles: dict[tuple[str, int], str] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, *, library: ProtocolLibrary) -> ExportLookups:
        codes: dict[int, list[tuple[str, str]]] = {}
        for therapy_id, system, code in session.execute(
            select(TherapyCode.therapy_id, TherapyCode.system, TherapyCode.code).order_by(
                TherapyCode.id
            )
        ):
            codes.setdefault(therapy_id, []).append((system, code))
        return cls(
            library=library,
            states={state.id: state for state in session.scalars(select(State))},
            centers={center.id: center for center in session.scalars(select(TreatmentCenter))},
            therapies={therapy.id: therapy for therapy in session.scalars(select(Therapy))},
            therapy_codes=codes,
        )

    def visit_label(self, therapy_id: int, protocol_version: int, visit_key: str) -> str:
        """What the protocol calls a visit (the same words as a read of the Appointment)."""
        key = (therapy_id, protocol_version, visit_key)
        label = self._labels.get(key)
        if label is None:
            found = self.library.visit_of(
                self.therapies[therapy_id].code, protocol_version, visit_key
            )
            label = found.label.text("en") if found is not None else visit_key
            self._labels[key] = label
        return label

    def plan_title(self, therapy_code: str, protocol_version: int) -> str:
        key = (therapy_code, protocol_version)
        title = self._titles.get(key)
        if title is None:
            protocol = self.library.version_or_current(therapy_code, protocol_version)
            title = protocol.title.text("en") if protocol is not None else "Long-term follow-up"
            self._titles[key] = title
        return title


@dataclass(frozen=True)
class TypeStream:
    """How one resource type is exported: how many there are, and the resources."""

    count: Callable[[Session, int, datetime | None], int]
    resources: Callable[[Session, ExportLookups, int, datetime | None], Iterator[JSON]]


def _changed_after(column: Any, since: datetime | None) -> list[ColumnElement[bool]]:
    return [] if since is None else [column > since]


def _rows(session: Session, query: Select[Any]) -> Iterator[Any]:
    """The rows of `query`, fetched FETCH_ROWS at a time (never all at once), each as a
    named tuple: the serializers read a dozen attributes per row, and a named tuple's
    attribute costs a tenth of a Row's."""
    result = session.execute(query.execution_options(yield_per=FETCH_ROWS))
    try:
        record: Callable[[Any], Any] = namedtuple("Record", list(result.keys()))._make  # type: ignore[attr-defined]
        for rows in result.partitions():
            for row in rows:
                yield record(row)
    finally:
        result.close()


def _counter(
    where: Callable[[int, datetime | None], Select[Any]],
) -> Callable[[Session, int, datetime | None], int]:
    def count(session: Session, center_id: int, since: datetime | None) -> int:
        query = where(center_id, since).order_by(None)
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        return int(total or 0)

    return count


# --- Patient and Procedure (the infusion): one of each per patient ---------------------


def _patient_rows(center_id: int, since: datetime | None) -> Select[Any]:
    return (
        select(*_patients)
        .where(_patients.center_id == center_id, *_changed_after(_patients.updated_at, since))
        .order_by(_patients.id)
    )


def _patient_resources(
    session: Session, lookups: ExportLookups, center_id: int, since: datetime | None
) -> Iterator[JSON]:
    for row in _rows(session, _patient_rows(center_id, since)):
        yield resources.patient_resource(
            row,
            state=lookups.states[row.state_id],
            center=lookups.centers[row.center_id],
            therapy=lookups.therapies[row.therapy_id],
        )


def _procedure_resources(
    session: Session, lookups: ExportLookups, center_id: int, since: datetime | None
) -> Iterator[JSON]:
    for row in _rows(session, _patient_rows(center_id, since)):
        yield resources.procedure_resource(
            row,
            therapy=lookups.therapies[row.therapy_id],
            codes=lookups.therapy_codes.get(row.therapy_id, []),
        )


# --- Observation, Condition ------------------------------------------------------------


def _own(patient_id: Any, center_id: int) -> ColumnElement[bool]:
    """The row is about one of the center's patients."""
    own: ColumnElement[bool] = patient_id.in_(
        select(_patients.id).where(_patients.center_id == center_id)
    )
    return own


# Columns an Observation resource does not show (left out of the select: a million rows).
_UNSERVED = frozenset({"source", "recorded_by_user_id"})


def _observation_rows(center_id: int, since: datetime | None) -> Select[Any]:
    changed: list[ColumnElement[bool]] = []
    if since is not None:
        # A value never corrected has no updated_at: it changed when it was made.
        changed = [
            or_(
                _observations.updated_at > since,
                and_(_observations.updated_at.is_(None), _observations.created_at > since),
            )
        ]
    return (
        select(*(column for column in _observations if column.key not in _UNSERVED))
        .where(_own(_observations.patient_id, center_id), *changed)
        .order_by(_observations.patient_id, _observations.id)
    )


def _observation_resources(
    session: Session, _lookups: ExportLookups, center_id: int, since: datetime | None
) -> Iterator[JSON]:
    for row in _rows(session, _observation_rows(center_id, since)):
        yield resources.observation_resource(row)


def _condition_rows(center_id: int, since: datetime | None) -> Select[Any]:
    return (
        select(*_conditions)
        .where(
            _own(_conditions.patient_id, center_id),
            *_changed_after(_conditions.updated_at, since),
        )
        .order_by(_conditions.patient_id, _conditions.id)
    )


def _condition_resources(
    session: Session, _lookups: ExportLookups, center_id: int, since: datetime | None
) -> Iterator[JSON]:
    for row in _rows(session, _condition_rows(center_id, since)):
        yield resources.condition_resource(row)


# --- RelatedPerson: a caregiver link with its caregiver --------------------------------


def _link_rows(center_id: int, since: datetime | None) -> Select[Any]:
    return (
        select(
            _links.id,
            _links.patient_id,
            _links.updated_at,
            _links.relationship.label("relationship_label"),
            _caregivers.given_name,
            _caregivers.family_name,
            _caregivers.preferred_language,
            _caregivers.mobile_phone,
        )
        .join_from(CaregiverLink.__table__, Caregiver.__table__)
        .where(_own(_links.patient_id, center_id), *_changed_after(_links.updated_at, since))
        .order_by(_links.patient_id, _links.id)
    )


def _related_person_resources(
    session: Session, _lookups: ExportLookups, center_id: int, since: datetime | None
) -> Iterator[JSON]:
    for row in _rows(session, _link_rows(center_id, since)):
        # One row holds the link's columns and the caregiver's under distinct names.
        yield resources.related_person_resource(row, row)


# --- Appointment, Encounter: the follow-up visits --------------------------------------


def _visit_rows(center_id: int, since: datetime | None, *, completed: bool) -> Select[Any]:
    query = (
        select(*_visits, _patients.therapy_id)
        .join_from(Visit.__table__, Patient.__table__)
        .where(_patients.center_id == center_id, *_changed_after(_visits.updated_at, since))
        .order_by(_visits.patient_id, _visits.id)
    )
    return query.where(_visits.status == VisitStatus.COMPLETED) if completed else query


def _visit_resources(
    make: Callable[..., JSON], *, completed: bool
) -> Callable[[Session, ExportLookups, int, datetime | None], Iterator[JSON]]:
    def stream(
        session: Session, lookups: ExportLookups, center_id: int, since: datetime | None
    ) -> Iterator[JSON]:
        for row in _rows(session, _visit_rows(center_id, since, completed=completed)):
            label = lookups.visit_label(row.therapy_id, row.protocol_version, row.visit_key)
            yield make(row, label=label)

    return stream


# --- CarePlan: a patient's schedule with its visits ------------------------------------


def _plan_rows(center_id: int, since: datetime | None) -> Select[Any]:
    where: list[ColumnElement[bool]] = [_patients.center_id == center_id]
    if since is not None:
        # A plan changes with its visits (an activity completed): either counts.
        where.append(
            or_(
                _plans.updated_at > since,
                exists().where(_visits.patient_id == _plans.patient_id, _visits.updated_at > since),
            )
        )
    return (
        select(*_plans)
        .join_from(FollowUpPlan.__table__, Patient.__table__)
        .where(*where)
        .order_by(_plans.patient_id)
    )


def _care_plan_resources(
    session: Session, lookups: ExportLookups, center_id: int, since: datetime | None
) -> Iterator[JSON]:
    plans = _plan_rows(center_id, since).order_by(None).subquery()
    # Each plan with its visits, in the plan's order: a plan's rows come together.
    query = (
        select(
            plans,
            _patients.status.label("patient_status"),
            _visits.id.label("visit_id"),
            _visits.status.label("visit_status"),
        )
        .join_from(plans, Patient.__table__, _patients.id == plans.c.patient_id)
        .outerjoin(Visit.__table__, _visits.patient_id == plans.c.patient_id)
        .order_by(plans.c.patient_id, _visits.target_date, _visits.id)
    )
    for _plan_id, group in itertools.groupby(_rows(session, query), key=lambda row: row.id):
        rows = list(group)
        plan = rows[0]
        visits = [
            _VisitStatus(row.visit_id, row.visit_status) for row in rows if row.visit_id is not None
        ]
        yield resources.care_plan_resource(
            plan,
            patient=_PatientStatus(plan.patient_status),
            title=lookups.plan_title(plan.therapy_code, plan.protocol_version),
            visits=visits,
        )


@dataclass(frozen=True)
class _VisitStatus:
    id: int
    status: VisitStatus


@dataclass(frozen=True)
class _PatientStatus:
    status: Any


STREAMS: dict[str, TypeStream] = {
    "Patient": TypeStream(_counter(_patient_rows), _patient_resources),
    "Observation": TypeStream(_counter(_observation_rows), _observation_resources),
    "Condition": TypeStream(_counter(_condition_rows), _condition_resources),
    "RelatedPerson": TypeStream(_counter(_link_rows), _related_person_resources),
    "Procedure": TypeStream(_counter(_patient_rows), _procedure_resources),
    "Encounter": TypeStream(
        _counter(lambda center_id, since: _visit_rows(center_id, since, completed=True)),
        _visit_resources(resources.encounter_resource, completed=True),
    ),
    "Appointment": TypeStream(
        _counter(lambda center_id, since: _visit_rows(center_id, since, completed=False)),
        _visit_resources(resources.appointment_resource, completed=False),
    ),
    "CarePlan": TypeStream(_counter(_plan_rows), _care_plan_resources),
    "QuestionnaireResponse": TypeStream(
        _counter(questionnaire_responses.export_rows),
        lambda session, _lookups, center_id, since: questionnaire_responses.export_resources(
            _rows(session, questionnaire_responses.export_rows(center_id, since))
        ),
    ),
}
assert tuple(STREAMS) == EXPORT_TYPES
