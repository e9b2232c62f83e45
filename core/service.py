"""The patient record: enrolling, finding, editing patients, and their caregivers' proxy rights.

Plain keyword-only functions over a Session; they flush and never commit."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from core.audit.service import Actor, EventData, record_event, record_events
from core.clock import Clock
from core.dates import parse_day_or_none
from core.db import insert_returning_ids, table_of
from core.errors import FieldErrors
from core.ids import parse_id
from core.models import (
    Language,
    Patient,
    PatientHistory,
    PatientStatus,
    State,
    Therapy,
    TreatmentCenter,
)
from core.phones import InvalidPhoneNumber, normalize_phone
from core.text import N_

NAME_MAX = 80
# The record's fields whose change makes a new version of its history (what reports read).
HISTORY_FIELDS = frozenset(
    {"state_id", "center_id", "therapy_id", "medicaid_id", "infusion_date", "status"}
)


@dataclass
class PatientInput:
    """What a coordinator types to enroll or edit a patient (strings, as from a form)."""

    given_name: str = ""
    family_name: str = ""
    birth_date: str = ""
    medicaid_id: str = ""
    center_mrn: str = ""
    state_id: str = ""
    center_id: str = ""
    therapy_id: str = ""
    preferred_language: str = "en"
    time_zone: str = ""
    mobile_phone: str = ""
    infusion_date: str = ""
    status: str = PatientStatus.ENROLLED.value
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PatientData:
    """A patient's record as the services take it, typed: read from the enrolment form
    (`read_patient_input`) or mapped from a treatment center's FHIR Patient. The services
    check it whole (names, identifiers, places, dates, phone) whatever it came from.

    `time_zone` None means the state's zone; `mobile_phone` is as given (normalized to
    E.164 by the service); ids name rows of `states`, `treatment_centers`, `therapies`."""

    given_name: str
    family_name: str
    birth_date: date
    medicaid_id: str
    state_id: int
    center_id: int
    therapy_id: int
    center_mrn: str | None = None
    preferred_language: Language = Language.EN
    time_zone: str | None = None
    mobile_phone: str | None = None
    infusion_date: date | None = None
    status: PatientStatus = PatientStatus.ENROLLED

    @classmethod
    def of(cls, patient: Patient) -> PatientData:
        """The record as it stands (to change a few fields with `dataclasses.replace`)."""
        return cls(
            given_name=patient.given_name,
            family_name=patient.family_name,
            birth_date=patient.birth_date,
            medicaid_id=patient.medicaid_id,
            center_mrn=patient.center_mrn,
            state_id=patient.state_id,
            center_id=patient.center_id,
            therapy_id=patient.therapy_id,
            preferred_language=patient.preferred_language,
            time_zone=patient.time_zone,
            mobile_phone=patient.mobile_phone,
            infusion_date=patient.infusion_date,
            status=patient.status,
        )


def _text_problems(
    *,
    given_name: str,
    family_name: str,
    medicaid_id: str,
    center_mrn: str | None,
    mobile_phone: str | None,
) -> dict[str, str]:
    """What is wrong with the record's text fields, read alone (no database needed): the
    form shows these with its other problems, and the services check them again."""
    errors: dict[str, str] = {}
    for name, value in (("given_name", given_name), ("family_name", family_name)):
        if not value.strip():
            errors[name] = N_("Enter a name.")
        elif len(value.strip()) > NAME_MAX:
            errors[name] = N_("Use at most 80 characters.")
    medicaid = medicaid_id.strip().upper()
    if (
        not medicaid
        or len(medicaid) > 32
        or not medicaid.isascii()
        or not medicaid.replace("-", "").isalnum()
    ):
        errors["medicaid_id"] = N_(
            "Enter the Medicaid ID (letters, digits and dashes, at most 32)."
        )
    if center_mrn is not None and len(center_mrn.strip()) > 32:
        errors["center_mrn"] = N_("Use at most 32 characters.")
    if mobile_phone and mobile_phone.strip():
        try:
            normalize_phone(mobile_phone)
        except InvalidPhoneNumber as problem:
            errors["mobile_phone"] = str(problem)
    return errors


def read_patient_input(
    data: PatientInput, *, other_errors: Mapping[str, str] = MappingProxyType({})
) -> PatientData:
    """The form's strings as typed values. Raises FieldErrors for what cannot be read (a
    date that is not YYYY-MM-DD, no state chosen...), with `other_errors` (the caller's
    own fields of the same form) among them; the services check the rest."""
    errors: dict[str, str] = {}
    birth = parse_day_or_none(data.birth_date)
    if birth is None:
        errors["birth_date"] = N_("Enter the birth date as YYYY-MM-DD.")
    ids: dict[str, int | None] = {}
    for key, message in (
        ("state_id", N_("Choose a state.")),
        ("center_id", N_("Choose a treatment center.")),
        ("therapy_id", N_("Choose a therapy.")),
    ):
        ids[key] = parse_id(getattr(data, key))
        if ids[key] is None:
            errors[key] = message
    try:
        language = Language(data.preferred_language)
    except ValueError:
        errors["preferred_language"] = N_("Choose English or Spanish.")
        language = Language.EN
    infusion: date | None = None
    if data.infusion_date.strip():
        infusion = parse_day_or_none(data.infusion_date)
        if infusion is None:
            errors["infusion_date"] = N_("Enter the infusion date as YYYY-MM-DD.")
    try:
        status = PatientStatus(data.status)
    except ValueError:
        errors["status"] = N_("Choose a status.")
        status = PatientStatus.ENROLLED
    if errors:
        # Read alone, the text fields' problems show with these (one round trip, not two).
        errors = {
            **_text_problems(
                given_name=data.given_name,
                family_name=data.family_name,
                medicaid_id=data.medicaid_id,
                center_mrn=data.center_mrn,
                mobile_phone=data.mobile_phone,
            ),
            **errors,
        }
    errors.update(other_errors)
    if errors:
        raise FieldErrors(errors)
    assert birth is not None
    state_id, center_id, therapy_id = ids["state_id"], ids["center_id"], ids["therapy_id"]
    assert state_id is not None and center_id is not None and therapy_id is not None
    return PatientData(
        given_name=data.given_name,
        family_name=data.family_name,
        birth_date=birth,
        medicaid_id=data.medicaid_id,
        center_mrn=data.center_mrn or None,
        state_id=state_id,
        center_id=center_id,
        therapy_id=therapy_id,
        preferred_language=language,
        time_zone=data.time_zone.strip() or None,
        mobile_phone=data.mobile_phone.strip() or None,
        infusion_date=infusion,
        status=status,
    )


@dataclass(frozen=True)
class CleanPatient:
    given_name: str
    family_name: str
    birth_date: date
    medicaid_id: str
    center_mrn: str | None
    state: State
    center: TreatmentCenter
    therapy: Therapy
    preferred_language: Language
    time_zone: str
    mobile_phone: str | None
    infusion_date: date | None
    status: PatientStatus


def _record_values(clean: CleanPatient) -> dict[str, object]:
    """A checked patient's record columns, as enrolment writes them and an update compares
    them."""
    return {
        "given_name": clean.given_name,
        "family_name": clean.family_name,
        "birth_date": clean.birth_date,
        "medicaid_id": clean.medicaid_id,
        "center_mrn": clean.center_mrn,
        "state_id": clean.state.id,
        "center_id": clean.center.id,
        "therapy_id": clean.therapy.id,
        "preferred_language": clean.preferred_language,
        "time_zone": clean.time_zone,
        "mobile_phone": clean.mobile_phone,
        "infusion_date": clean.infusion_date,
        "status": clean.status,
    }


def _clean(
    session: Session,
    *,
    clock: Clock,
    data: PatientData,
    allowed_state_ids: set[int] | None,
    other_errors: Mapping[str, str],
) -> CleanPatient:
    errors = _text_problems(
        given_name=data.given_name,
        family_name=data.family_name,
        medicaid_id=data.medicaid_id,
        center_mrn=data.center_mrn,
        mobile_phone=data.mobile_phone,
    )
    today = clock.now().date()
    given, family = data.given_name.strip(), data.family_name.strip()
    birth = data.birth_date
    if birth > today or birth.year < today.year - 120:
        errors["birth_date"] = N_("The birth date must be in the past 120 years.")
    medicaid = data.medicaid_id.strip().upper()
    mrn = (data.center_mrn or "").strip() or None
    state = session.get(State, data.state_id)
    if state is None:
        errors["state_id"] = N_("Choose a state.")
    center = session.get(TreatmentCenter, data.center_id)
    if center is None:
        errors["center_id"] = N_("Choose a treatment center.")
    therapy = session.get(Therapy, data.therapy_id)
    if therapy is None:
        errors["therapy_id"] = N_("Choose a therapy.")
    if state is not None and allowed_state_ids is not None and state.id not in allowed_state_ids:
        errors["state_id"] = N_("You can only enroll patients in the states you work for.")
    if state is not None and center is not None and center.state_id != state.id:
        errors["center_id"] = N_("This treatment center is not in the chosen state.")
    zone = (data.time_zone or "").strip() or (state.time_zone if state else "")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        errors["time_zone"] = N_("Choose a time zone such as America/Chicago.")
    phone: str | None = None
    if "mobile_phone" not in errors and data.mobile_phone and data.mobile_phone.strip():
        phone = normalize_phone(data.mobile_phone)  # checked readable by _text_problems
    infusion = data.infusion_date
    if infusion is not None:
        if infusion < birth:
            errors["infusion_date"] = N_("The infusion date cannot be before the birth date.")
        elif infusion.year > today.year + 1:
            errors["infusion_date"] = N_("The infusion date must be at most a year ahead.")
    errors.update(other_errors)
    if errors:
        raise FieldErrors(errors)
    assert state is not None and center is not None and therapy is not None
    return CleanPatient(
        given_name=given,
        family_name=family,
        birth_date=birth,
        medicaid_id=medicaid,
        center_mrn=mrn,
        state=state,
        center=center,
        therapy=therapy,
        preferred_language=data.preferred_language,
        time_zone=zone,
        mobile_phone=phone,
        infusion_date=infusion,
        status=data.status,
    )


def _check_identifiers_free(
    session: Session,
    *,
    clean: CleanPatient,
    patient_id: int | None,
    other_errors: Mapping[str, str],
) -> None:
    errors: dict[str, str] = {}
    same_medicaid = session.scalar(
        select(Patient.id).where(
            Patient.state_id == clean.state.id,
            Patient.medicaid_id == clean.medicaid_id,
            Patient.id != (patient_id or -1),
        )
    )
    if same_medicaid is not None:
        errors["medicaid_id"] = N_("Another patient in this state has this Medicaid ID.")
    if clean.center_mrn is not None:
        same_mrn = session.scalar(
            select(Patient.id).where(
                Patient.center_id == clean.center.id,
                Patient.center_mrn == clean.center_mrn,
                Patient.id != (patient_id or -1),
            )
        )
        if same_mrn is not None:
            errors["center_mrn"] = N_("Another patient at this center has this record number.")
    errors.update(other_errors)
    if errors:
        raise FieldErrors(errors)


def record_history(session: Session, *, patient: Patient, at: datetime) -> None:
    """Keep the version of the record's reported facts that holds from `at` (see
    `PatientHistory`); the enrolment and every change call it."""
    session.add(PatientHistory(**_history_row(patient, at=at)))


def _history_row(patient: Patient, *, at: datetime) -> dict[str, Any]:
    return {
        "patient_id": patient.id,
        "version_id": patient.version_id,
        "valid_from": at,
        "state_id": patient.state_id,
        "center_id": patient.center_id,
        "therapy_id": patient.therapy_id,
        "medicaid_id": patient.medicaid_id,
        "infusion_date": patient.infusion_date,
        "status": patient.status,
    }


def enroll_patient(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    data: PatientData,
    allowed_state_ids: set[int] | None,
    other_errors: Mapping[str, str] = MappingProxyType({}),
) -> Patient:
    """Create a patient's record (audited). Raises FieldErrors naming each field to fix,
    with `other_errors` (problems the caller found in its own fields of the same form).
    `allowed_state_ids` None: any state (a treatment center's system, already scoped).
    Enrolment is a use case: call `coordination.records.enrol_patient`, which also
    records the consent given and makes the follow-up schedule."""
    clean = _clean(
        session,
        clock=clock,
        data=data,
        allowed_state_ids=allowed_state_ids,
        other_errors=other_errors,
    )
    _check_identifiers_free(session, clean=clean, patient_id=None, other_errors=other_errors)
    return _insert_patients(session, clock=clock, actor=actor, cleans=[clean])[0]


class PatientErrors(FieldErrors):
    """The FieldErrors of one of several patients enrolled together (`index`: which)."""

    def __init__(self, errors: dict[str, str], *, index: int) -> None:
        super().__init__(errors)
        self.index = index


def enroll_patients(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    items: Sequence[PatientData],
    allowed_state_ids: set[int] | None,
) -> list[Patient]:
    """Create many patients' records (a center's transaction), each checked and audited as
    `enroll_patient` checks and audits it, in order, with one read of the identifiers in
    use for all of them. Raises PatientErrors for the first one that `enroll_patient`
    would refuse (counting the ones before it as enrolled), and creates nothing then."""
    cleans: list[CleanPatient | None] = []
    errors: dict[int, dict[str, str]] = {}
    for index, data in enumerate(items):
        try:
            cleans.append(
                _clean(
                    session,
                    clock=clock,
                    data=data,
                    allowed_state_ids=allowed_state_ids,
                    other_errors={},
                )
            )
        except FieldErrors as problem:
            cleans.append(None)
            errors[index] = problem.errors
    checked = [clean for clean in cleans if clean is not None]
    medicaid_taken = {
        (state_id, medicaid)
        for chunk in _chunks(sorted({clean.medicaid_id for clean in checked}))
        for state_id, medicaid in session.execute(
            select(Patient.state_id, Patient.medicaid_id).where(Patient.medicaid_id.in_(chunk))
        )
    }
    mrn_taken = {
        (center_id, mrn)
        for chunk in _chunks(sorted({c.center_mrn for c in checked if c.center_mrn is not None}))
        for center_id, mrn in session.execute(
            select(Patient.center_id, Patient.center_mrn).where(Patient.center_mrn.in_(chunk))
        )
    }
    for index, clean in enumerate(cleans):
        if clean is None:
            continue
        taken: dict[str, str] = {}
        if (clean.state.id, clean.medicaid_id) in medicaid_taken:
            taken["medicaid_id"] = N_("Another patient in this state has this Medicaid ID.")
        if clean.center_mrn is not None and (clean.center.id, clean.center_mrn) in mrn_taken:
            taken["center_mrn"] = N_("Another patient at this center has this record number.")
        if taken:
            errors[index] = taken
        # The ones after it find these in use, as if it were enrolled first.
        medicaid_taken.add((clean.state.id, clean.medicaid_id))
        if clean.center_mrn is not None:
            mrn_taken.add((clean.center.id, clean.center_mrn))
    if errors:
        first = min(errors)
        raise PatientErrors(errors[first], index=first)
    return _insert_patients(
        session, clock=clock, actor=actor, cleans=[clean for clean in cleans if clean]
    )


def _chunks(values: list[Any], size: int = 500) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _insert_patients(
    session: Session, *, clock: Clock, actor: Actor, cleans: Sequence[CleanPatient]
) -> list[Patient]:
    """The records of checked patients, with their first history rows, audited: an INSERT
    for all the records, one for all their history, and one read of the new records (an
    object per record and an INSERT each, as a flush makes them, cost a transaction of
    hundreds of patients more than the rest of their enrolment)."""
    now = clock.now()
    ids = insert_returning_ids(
        session,
        Patient,
        [
            {
                **_record_values(clean),
                "version_id": 1,
                "created_at": now,
                "updated_at": now,
            }
            for clean in cleans
        ],
    )
    found = {
        patient.id: patient
        for chunk in _chunks(ids)
        for patient in session.scalars(select(Patient).where(Patient.id.in_(chunk)))
    }
    patients = [found[patient_id] for patient_id in ids]
    if patients:
        session.execute(
            insert(table_of(PatientHistory)),
            [_history_row(patient, at=now) for patient in patients],
        )
    record_events(
        session,
        clock=clock,
        actor=actor,
        events=(
            EventData(
                action="patient.create", patient_id=patient.id, target=f"patient:{patient.id}"
            )
            for patient in patients
        ),
    )
    return patients


def patient_input_from(patient: Patient) -> PatientInput:
    """The edit form's starting values."""
    return PatientInput(
        given_name=patient.given_name,
        family_name=patient.family_name,
        birth_date=patient.birth_date.isoformat(),
        medicaid_id=patient.medicaid_id,
        center_mrn=patient.center_mrn or "",
        state_id=str(patient.state_id),
        center_id=str(patient.center_id),
        therapy_id=str(patient.therapy_id),
        preferred_language=patient.preferred_language.value,
        time_zone=patient.time_zone,
        mobile_phone=patient.mobile_phone or "",
        infusion_date=patient.infusion_date.isoformat() if patient.infusion_date else "",
        status=patient.status.value,
    )


def update_patient(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    data: PatientData,
    allowed_state_ids: set[int] | None,
    other_errors: Mapping[str, str] = MappingProxyType({}),
) -> list[str]:
    """Change a patient's record; returns the names of the fields that changed (audited).
    Raises FieldErrors as `enroll_patient` does."""
    clean = _clean(
        session,
        clock=clock,
        data=data,
        allowed_state_ids=allowed_state_ids,
        other_errors=other_errors,
    )
    _check_identifiers_free(session, clean=clean, patient_id=patient.id, other_errors=other_errors)
    new_values = _record_values(clean)
    changed = [name for name, value in new_values.items() if getattr(patient, name) != value]
    for name in changed:
        setattr(patient, name, new_values[name])
    if changed:
        patient.updated_at = clock.now()
        patient.version_id += 1
        session.flush()
        if HISTORY_FIELDS.intersection(changed):
            record_history(session, patient=patient, at=patient.updated_at)
        record_event(
            session,
            clock=clock,
            actor=actor,
            action="patient.update",
            patient_id=patient.id,
            target=f"patient:{patient.id}",
            detail={"fields": changed},
        )
    return changed
