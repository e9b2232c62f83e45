"""What each searchable resource type is made of: the rows behind it, the column naming its
patient, its search parameters (each a function from a parsed value to an SQL condition),
its sort keys and includes, and how a page of rows becomes R4 JSON (in a few queries per
page, not one per row).

| type | rows | patient | parameters (besides `_id`, `_lastUpdated`) |
| --- | --- | --- | --- |
| Patient | patients | itself | identifier, name, birthdate |
| Observation | observations | patient_id | patient, subject, code, date, status |
| Condition | conditions | patient_id | patient, code |
| RelatedPerson | caregiver links | patient_id | patient |
| Procedure | patients (the infusion; its id is the patient's) | itself | patient |
| Encounter | completed visits | patient_id | patient, date |
| Appointment | visits | patient_id | patient, date, status |
| CarePlan | follow-up plans | patient_id | patient |
| QuestionnaireResponse | submitted ones | patient_id | patient, subject, questionnaire, authored |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, literal, not_, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute, QueryableAttribute, Session, joinedload
from sqlalchemy.sql.base import ExecutableOption

from coordination.followup.models import FollowUpPlan, Visit, VisitStatus
from coordination.followup.protocol import ProtocolLibrary
from coordination.questionnaires.models import QuestionnaireResponse
from core.models import (
    CaregiverLink,
    Condition,
    Observation,
    ObservationStatus,
    Patient,
    State,
    Therapy,
    TreatmentCenter,
)
from fhir_adapter import questionnaire_responses, resources
from fhir_adapter.bearer import FhirCaller
from fhir_adapter.errors import FhirError
from fhir_adapter.models import ResourceIdentifier
from fhir_adapter.reads import patient_json, therapy_codes
from fhir_adapter.resources import JSON
from fhir_adapter.search_values import (
    BadValue,
    DateValue,
    parse_date,
    parse_local_id,
    parse_reference,
    parse_token,
    unescape,
)

# --- where a value is compared: instants and calendar days ------------------------------

# A column or an expression over columns (`coalesce(updated_at, created_at)`).
Sql = ColumnElement[Any] | QueryableAttribute[Any]


@dataclass(frozen=True)
class Instant:
    """A target that is a point in time (an observation's effective time, a last change)."""

    column: Sql

    def starts_at_or_after(self, moment: datetime) -> ColumnElement[bool]:
        return self.column >= moment

    def starts_before(self, moment: datetime) -> ColumnElement[bool]:
        return self.column < moment

    def ends_after(self, moment: datetime) -> ColumnElement[bool]:
        return self.column >= moment

    def ends_at_or_before(self, moment: datetime) -> ColumnElement[bool]:
        return self.column < moment


def _ceil_day(moment: datetime) -> date:
    """The first day that starts at or after `moment` (a UTC instant)."""
    day = moment.date()
    at_midnight = (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)
    return day if at_midnight else day + timedelta(days=1)


@dataclass(frozen=True)
class Days:
    """A target that is whole calendar days, `first` to `last` inclusive (a birth date, a
    visit's window): the range `[first 00:00, last + 1 day 00:00)` in UTC."""

    first: Sql
    last: Sql

    def starts_at_or_after(self, moment: datetime) -> ColumnElement[bool]:
        return self.first >= _ceil_day(moment)

    def starts_before(self, moment: datetime) -> ColumnElement[bool]:
        return self.first < _ceil_day(moment)

    def ends_after(self, moment: datetime) -> ColumnElement[bool]:
        return self.last >= moment.date()

    def ends_at_or_before(self, moment: datetime) -> ColumnElement[bool]:
        return self.last < moment.date()


Target = Instant | Days


def date_condition(target: Target, value: DateValue) -> ColumnElement[bool]:
    """R4's prefixes over ranges: the parameter's range `[low, high)` against the target's."""
    low, high = value.low, value.high
    match value.prefix:
        case "eq":
            return and_(target.starts_at_or_after(low), target.ends_at_or_before(high))
        case "ne":
            return or_(target.starts_before(low), target.ends_after(high))
        case "gt":
            return target.ends_after(high)
        case "lt":
            return target.starts_before(low)
        case "ge":
            return target.ends_after(low)
        case "le":
            return target.starts_before(high)
        case "sa":
            return target.starts_at_or_after(high)
        case _:  # "eb"
            return target.ends_at_or_before(low)


# --- parameters -----------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """What a parameter's condition may need besides its value."""

    session: Session
    caller: FhirCaller


ConditionFn = Callable[[Where, str, str | None], ColumnElement[bool]]
"""(context, one alternative as sent (still escaped), modifier) -> the SQL condition; raises
`BadValue` for a value the parameter cannot take."""


@dataclass(frozen=True)
class Param:
    """A search parameter: its FHIR type, the modifiers it takes, its condition."""

    kind: str  # date, token, reference, string
    condition: ConditionFn
    modifiers: frozenset[str] = frozenset()


def date_param(target: Target) -> Param:
    def condition(_where: Where, value: str, _modifier: str | None) -> ColumnElement[bool]:
        return date_condition(target, parse_date(unescape(value)))

    return Param("date", condition)


def id_param(column: InstrumentedAttribute[int]) -> Param:
    def condition(_where: Where, value: str, _modifier: str | None) -> ColumnElement[bool]:
        local_id = parse_local_id(unescape(value))
        return column == local_id if local_id is not None else false()

    return Param("token", condition)


def patient_param(column: InstrumentedAttribute[int], *, typed: bool = False) -> Param:
    """A reference to the patient (`patient=123`, `Patient/123`, a full URL); `typed`: the
    parameter (`subject`) also takes the `:Patient` modifier."""

    def condition(_where: Where, value: str, _modifier: str | None) -> ColumnElement[bool]:
        local_id = parse_reference(value)
        return column == local_id if local_id is not None else false()

    return Param("reference", condition, frozenset({"Patient"}) if typed else frozenset())


def code_param(
    system_column: InstrumentedAttribute[str], code_column: InstrumentedAttribute[str]
) -> Param:
    """A token on a coded element (`system|code`, `code`, `|code`, `system|`)."""

    def condition(_where: Where, value: str, _modifier: str | None) -> ColumnElement[bool]:
        token = parse_token(value)
        parts: list[ColumnElement[bool]] = []
        if token.code is not None:
            parts.append(code_column == token.code)
        if token.system == "":
            return false()  # every code kept here has a system
        if token.system is not None:
            parts.append(system_column == token.system)
        return and_(*parts)

    return Param("token", condition)


def status_param(
    column: InstrumentedAttribute[Any], system: str, statuses: Mapping[str, Sequence[Any]]
) -> Param:
    """A token on a status: FHIR's code (from `system`) to the stored values it covers."""

    def condition(_where: Where, value: str, _modifier: str | None) -> ColumnElement[bool]:
        token = parse_token(value)
        if token.system not in (None, system) or token.code is None:
            return false() if token.code is not None else true()
        stored = statuses.get(token.code)
        if stored is None:
            raise BadValue(f"{token.code[:40]!r} is not a status ({', '.join(statuses)})")
        return column.in_(stored)

    return Param("token", condition)


def _identifier(where: Where, value: str, _modifier: str | None) -> ColumnElement[bool]:
    """A patient's identifiers: the state's Medicaid ID, the center's MRN, or another
    identifier the center gave the patient."""
    token = parse_token(value)
    session, caller = where.session, where.caller
    state = session.get(State, caller.state_id)
    center = session.get(TreatmentCenter, caller.center_id)
    assert state is not None and center is not None
    given = select(ResourceIdentifier.local_id).where(
        ResourceIdentifier.center_id == caller.center_id,
        ResourceIdentifier.resource_type == "Patient",
    )
    if token.system == "":
        return false()  # every identifier kept here has a system
    if token.system is None:
        assert token.code is not None
        return or_(
            Patient.medicaid_id == token.code.strip().upper(),
            Patient.center_mrn == token.code.strip(),
            Patient.id.in_(given.where(ResourceIdentifier.value == token.code)),
        )
    if token.system == state.medicaid_system:
        if token.code is None:
            return true()  # every patient has a Medicaid ID
        return Patient.medicaid_id == token.code.strip().upper()
    if token.system == center.record_number_system:
        if token.code is None:
            return Patient.center_mrn.is_not(None)
        return Patient.center_mrn == token.code.strip()
    given = given.where(ResourceIdentifier.system == token.system)
    if token.code is not None:
        given = given.where(ResourceIdentifier.value == token.code)
    return Patient.id.in_(given)


def _name_condition(where: Where, value: str, modifier: str | None) -> ColumnElement[bool]:
    """FHIR's string search on the family name and each given name: starts with, ignoring
    case (`:exact` the whole name part as written, `:contains` anywhere)."""
    text = unescape(value).strip()
    if not text:
        raise BadValue("an empty name matches nothing; leave the parameter out")
    given, family = Patient.given_name, Patient.family_name
    if modifier == "exact":
        # given_name keeps the given names space-separated: each is a name part. SQLite's
        # LIKE ignores case, so the part is found with replace(), which never does.
        padded = literal(" ") + given + literal(" ")
        return or_(family == text, func.replace(padded, f" {text} ", "") != padded)
    if modifier == "contains":
        return or_(family.icontains(text, autoescape=True), given.icontains(text, autoescape=True))
    return or_(
        family.istartswith(text, autoescape=True),
        given.istartswith(text, autoescape=True),
        given.icontains(" " + text, autoescape=True),
    )


# --- rendering a page -------------------------------------------------------------------


@dataclass
class Render:
    """What turning rows into resources needs, with caches that live for one request."""

    session: Session
    library: ProtocolLibrary
    _therapy_codes: dict[int, list[tuple[str, str]]] = field(default_factory=dict)

    def codes_of(self, therapy_id: int) -> list[tuple[str, str]]:
        if therapy_id not in self._therapy_codes:
            self._therapy_codes[therapy_id] = therapy_codes(self.session, therapy_id)
        return self._therapy_codes[therapy_id]

    def therapy_code_of(self, patient_ids: set[int]) -> dict[int, str]:
        if not patient_ids:
            return {}
        rows = self.session.execute(
            select(Patient.id, Therapy.code)
            .join(Therapy, Therapy.id == Patient.therapy_id)
            .where(Patient.id.in_(patient_ids))
        )
        return {int(row[0]): str(row[1]) for row in rows}

    def visit_label(self, therapy_code: str | None, visit: Visit) -> str:
        if therapy_code is None:
            return visit.visit_key
        found = self.library.visit_of(therapy_code, visit.protocol_version, visit.visit_key)
        return found.label.text("en") if found is not None else visit.visit_key


Renderer = Callable[[Render, Sequence[Any]], list[JSON]]


def _patients(render: Render, rows: Sequence[Any]) -> list[JSON]:
    return [patient_json(render.session, patient) for patient in rows]


def _procedures(render: Render, rows: Sequence[Any]) -> list[JSON]:
    session = render.session
    served = []
    for patient in rows:
        therapy = session.get(Therapy, patient.therapy_id)
        served.append(
            resources.procedure_resource(
                patient, therapy=therapy, codes=render.codes_of(patient.therapy_id)
            )
        )
    return served


def _observations(_render: Render, rows: Sequence[Any]) -> list[JSON]:
    return [resources.observation_resource(row) for row in rows]


def _conditions(_render: Render, rows: Sequence[Any]) -> list[JSON]:
    return [resources.condition_resource(row) for row in rows]


def _related_people(_render: Render, rows: Sequence[Any]) -> list[JSON]:
    return [resources.related_person_resource(link, link.caregiver) for link in rows]


def _appointments(render: Render, rows: Sequence[Any]) -> list[JSON]:
    codes = render.therapy_code_of({visit.patient_id for visit in rows})
    return [
        resources.appointment_resource(
            visit, label=render.visit_label(codes.get(visit.patient_id), visit)
        )
        for visit in rows
    ]


def _encounters(render: Render, rows: Sequence[Any]) -> list[JSON]:
    codes = render.therapy_code_of({visit.patient_id for visit in rows})
    return [
        resources.encounter_resource(
            visit, label=render.visit_label(codes.get(visit.patient_id), visit)
        )
        for visit in rows
    ]


def _care_plans(render: Render, rows: Sequence[Any]) -> list[JSON]:
    session = render.session
    patient_ids = {plan.patient_id for plan in rows}
    if not patient_ids:
        return []
    patients = {
        patient.id: patient
        for patient in session.scalars(select(Patient).where(Patient.id.in_(patient_ids)))
    }
    visits: dict[int, list[Visit]] = {patient_id: [] for patient_id in patient_ids}
    for visit in session.scalars(
        select(Visit)
        .where(Visit.patient_id.in_(patient_ids))
        .order_by(Visit.patient_id, Visit.target_date, Visit.id)
    ):
        visits[visit.patient_id].append(visit)
    served = []
    for plan in rows:
        protocol = render.library.version_or_current(plan.therapy_code, plan.protocol_version)
        title = protocol.title.text("en") if protocol is not None else "Long-term follow-up"
        served.append(
            resources.care_plan_resource(
                plan,
                patient=patients[plan.patient_id],
                title=title,
                visits=visits[plan.patient_id],
            )
        )
    return served


# --- the types ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchType:
    """One searchable resource type."""

    name: str
    entity: type[Any]
    id: InstrumentedAttribute[int]
    # The column naming the patient a row is about (the patient's own id for Patient and
    # Procedure): every query joins `patients` on it and keeps the caller's center only.
    patient_id: InstrumentedAttribute[int]
    last_updated: Sql
    params: Mapping[str, Param]
    render: Renderer
    sorts: Mapping[str, Sql] = field(default_factory=dict)
    includes: tuple[str, ...] = ()
    # Rows of the table that are not resources of this type (visits not completed are no
    # Encounter).
    only: ColumnElement[bool] | None = None
    options: tuple[ExecutableOption, ...] = ()

    @property
    def is_patient_table(self) -> bool:
        return self.entity is Patient


def _common(entity: Any, last_updated: Sql) -> dict[str, Param]:
    return {"_id": id_param(entity.id), "_lastUpdated": date_param(Instant(last_updated))}


_OBSERVATION_UPDATED = func.coalesce(Observation.updated_at, Observation.created_at)
_BOOKED = and_(Visit.appointment_at.is_not(None), Visit.status != VisitStatus.DUE)
_APPOINTMENT_STATUSES: dict[str, Sequence[VisitStatus]] = {
    "proposed": [VisitStatus.DUE],
    "booked": [VisitStatus.SCHEDULED, VisitStatus.RESCHEDULED, VisitStatus.CONFIRMED],
    "fulfilled": [VisitStatus.COMPLETED],
    "noshow": [VisitStatus.MISSED],
    "cancelled": [VisitStatus.CANCELLED],
}
_OBSERVATION_STATUSES: dict[str, Sequence[ObservationStatus]] = {
    status.value: [status] for status in ObservationStatus
}


def _appointment_date(where: Where, value: str, modifier: str | None) -> ColumnElement[bool]:
    """An appointment's date: its start when booked, its window while it is not."""
    parsed = parse_date(unescape(value))
    return or_(
        and_(_BOOKED, date_condition(Instant(Visit.appointment_at), parsed)),
        and_(not_(_BOOKED), date_condition(Days(Visit.window_start, Visit.window_end), parsed)),
    )


def _build() -> dict[str, SearchType]:
    visit_day = func.coalesce(Visit.completed_on, Visit.target_date)
    types = [
        SearchType(
            "Patient",
            Patient,
            Patient.id,
            Patient.id,
            Patient.updated_at,
            {
                **_common(Patient, Patient.updated_at),
                "identifier": Param("token", _identifier),
                "name": Param("string", _name_condition, frozenset({"exact", "contains"})),
                "birthdate": date_param(Days(Patient.birth_date, Patient.birth_date)),
            },
            _patients,
            sorts={"_lastUpdated": Patient.updated_at},
        ),
        SearchType(
            "Observation",
            Observation,
            Observation.id,
            Observation.patient_id,
            _OBSERVATION_UPDATED,
            {
                **_common(Observation, _OBSERVATION_UPDATED),
                "patient": patient_param(Observation.patient_id),
                "subject": patient_param(Observation.patient_id, typed=True),
                "code": code_param(Observation.code_system, Observation.code),
                "date": date_param(Instant(Observation.effective_at)),
                "status": status_param(
                    Observation.status,
                    "http://hl7.org/fhir/observation-status",
                    _OBSERVATION_STATUSES,
                ),
            },
            _observations,
            sorts={"_lastUpdated": _OBSERVATION_UPDATED, "date": Observation.effective_at},
            includes=("Observation:patient", "Observation:subject"),
        ),
        SearchType(
            "Condition",
            Condition,
            Condition.id,
            Condition.patient_id,
            Condition.updated_at,
            {
                **_common(Condition, Condition.updated_at),
                "patient": patient_param(Condition.patient_id),
                "code": code_param(Condition.code_system, Condition.code),
            },
            _conditions,
            sorts={"_lastUpdated": Condition.updated_at},
            includes=("Condition:patient",),
        ),
        SearchType(
            "RelatedPerson",
            CaregiverLink,
            CaregiverLink.id,
            CaregiverLink.patient_id,
            CaregiverLink.updated_at,
            {
                **_common(CaregiverLink, CaregiverLink.updated_at),
                "patient": patient_param(CaregiverLink.patient_id),
            },
            _related_people,
            sorts={"_lastUpdated": CaregiverLink.updated_at},
            includes=("RelatedPerson:patient",),
            options=(joinedload(CaregiverLink.caregiver),),
        ),
        SearchType(
            "Procedure",
            Patient,
            Patient.id,
            Patient.id,
            Patient.updated_at,
            {
                **_common(Patient, Patient.updated_at),
                "patient": patient_param(Patient.id),
            },
            _procedures,
            sorts={"_lastUpdated": Patient.updated_at},
            includes=("Procedure:patient",),
        ),
        SearchType(
            "Encounter",
            Visit,
            Visit.id,
            Visit.patient_id,
            Visit.updated_at,
            {
                **_common(Visit, Visit.updated_at),
                "patient": patient_param(Visit.patient_id),
                "date": date_param(Days(visit_day, visit_day)),
            },
            _encounters,
            sorts={"_lastUpdated": Visit.updated_at},
            includes=("Encounter:patient",),
            only=Visit.status == VisitStatus.COMPLETED,
        ),
        SearchType(
            "Appointment",
            Visit,
            Visit.id,
            Visit.patient_id,
            Visit.updated_at,
            {
                **_common(Visit, Visit.updated_at),
                "patient": patient_param(Visit.patient_id),
                "date": Param("date", _appointment_date),
                "status": status_param(
                    Visit.status,
                    "http://hl7.org/fhir/appointmentstatus",
                    _APPOINTMENT_STATUSES,
                ),
            },
            _appointments,
            sorts={"_lastUpdated": Visit.updated_at},
            includes=("Appointment:patient",),
        ),
        SearchType(
            "CarePlan",
            FollowUpPlan,
            FollowUpPlan.id,
            FollowUpPlan.patient_id,
            FollowUpPlan.updated_at,
            {
                **_common(FollowUpPlan, FollowUpPlan.updated_at),
                "patient": patient_param(FollowUpPlan.patient_id),
            },
            _care_plans,
            sorts={"_lastUpdated": FollowUpPlan.updated_at},
            includes=("CarePlan:patient",),
        ),
        SearchType(
            "QuestionnaireResponse",
            QuestionnaireResponse,
            QuestionnaireResponse.id,
            QuestionnaireResponse.patient_id,
            QuestionnaireResponse.updated_at,
            {
                **_common(QuestionnaireResponse, QuestionnaireResponse.updated_at),
                "patient": patient_param(QuestionnaireResponse.patient_id),
                "subject": patient_param(QuestionnaireResponse.patient_id, typed=True),
                "questionnaire": Param(
                    "reference", questionnaire_responses.questionnaire_condition
                ),
                "authored": date_param(Instant(QuestionnaireResponse.authored_at)),
                "status": status_param(
                    QuestionnaireResponse.status,
                    questionnaire_responses.STATUS_SYSTEM,
                    questionnaire_responses.STATUSES,
                ),
            },
            questionnaire_responses.render,
            sorts={
                "_lastUpdated": QuestionnaireResponse.updated_at,
                "authored": QuestionnaireResponse.authored_at,
            },
            includes=("QuestionnaireResponse:patient",),
            only=questionnaire_responses.SERVED,
        ),
    ]
    return {spec.name: spec for spec in types}


SEARCH_TYPES: dict[str, SearchType] = _build()
"""Every searchable type by name, in the order `$everything` serves them after the Patient."""
SEARCHABLE = tuple(SEARCH_TYPES)
# `_revinclude` on a Patient search: every type whose `patient` parameter points at it.
REVINCLUDES = (
    *(f"{name}:patient" for name in SEARCHABLE if name != "Patient"),
    "Observation:subject",
)


def unknown_type(resource_type: str) -> FhirError:
    """The 404 for a search of a type this server does not search."""
    return FhirError.single(
        404,
        "not-supported",
        f"{resource_type[:64]} is not searched here. This server searches "
        + ", ".join(SEARCHABLE)
        + ".",
    )
