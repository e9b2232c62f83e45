"""Test data built per test, on an empty database (the `empty_db` fixture) or beside the
demo world: each test makes the states, centers, therapies, people and logins it needs,
with only the facts it cares about spelled out; the rest are plausible, fictional defaults
(phone numbers in the 555-01xx range).

Patients go through the same use case as the enrolment form (`enrol_patient`), so they get
their schedule; use `patient(..., schedule=False)` for a bare record."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.protocol import shipped_protocols
from coordination.records import enrol_patient
from core.audit.service import Actor
from core.clock import Clock
from core.identity.models import Role, User, UserStateScope
from core.identity.passwords import hash_password
from core.models import (
    Caregiver,
    CaregiverLink,
    Language,
    Patient,
    PatientStatus,
    State,
    Therapy,
    TreatmentCenter,
)
from core.service import PatientData

PASSWORD = "a-long-test-password-2026"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SYSTEM = Actor(user_id=None, label="test-factory", role=None)

_numbers = itertools.count(1)


def _next() -> int:
    return next(_numbers)


@cache
def _password_hash() -> str:
    # Argon2 is slow on purpose: hash the one test password once per process.
    return hash_password(PASSWORD)


# The states the tests use, with their zones (fictional programs, real zones).
_STATES = {
    "MD": ("Maryland", "America/New_York", "410"),
    "CO": ("Colorado", "America/Denver", "303"),
    "GA": ("Georgia", "America/New_York", "404"),
    "TX": ("Texas", "America/Chicago", "512"),
}
_THERAPIES = {
    "casgevy": ("Casgevy", "exagamglogene autotemcel", "Vertex Pharmaceuticals"),
    "lyfgenia": ("Lyfgenia", "lovotibeglogene autotemcel", "Genetix Biotherapeutics"),
}


@dataclass
class Factory:
    """Makes rows in one session at one clock; each method flushes and returns the row."""

    session: Session
    clock: Clock
    _states: dict[str, State] = field(default_factory=dict)

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def state(self, code: str = "MD") -> State:
        """The state with this code (made once; reused if it is already there)."""
        found = self._states.get(code) or self.session.scalar(
            select(State).where(State.code == code)
        )
        if found is None:
            name, zone, area = _STATES[code]
            found = State(
                code=code,
                name=name,
                time_zone=zone,
                program_name=f"{name} Care Connect",
                program_phone=f"+1{area}5550100",
                created_at=self.now,
            )
            self.session.add(found)
            self.session.flush()
        self._states[code] = found
        return found

    def therapy(self, code: str = "casgevy") -> Therapy:
        found = self.session.scalar(select(Therapy).where(Therapy.code == code))
        if found is None:
            brand, generic, maker = _THERAPIES[code]
            found = Therapy(code=code, brand_name=brand, generic_name=generic, manufacturer=maker)
            self.session.add(found)
            self.session.flush()
        return found

    def center(self, state: State | None = None, *, name: str | None = None) -> TreatmentCenter:
        state = state or self.state()
        number = _next()
        center = TreatmentCenter(
            state_id=state.id,
            name=name or f"Test Center {number}",
            city="Testville",
            phone=f"+1{_STATES[state.code][2]}55501{number % 90 + 10:02d}",
            is_active=True,
            created_at=self.now,
        )
        self.session.add(center)
        self.session.flush()
        return center

    def patient(
        self,
        *,
        center: TreatmentCenter | None = None,
        therapy: str = "casgevy",
        infusion_date: date | None = None,
        schedule: bool = True,
        **fields: Any,
    ) -> Patient:
        """An enrolled patient (through the enrolment use case: audited, with a schedule
        when an infusion date is given). `fields` override PatientData's defaults."""
        center = center or self.center()
        number = _next()
        state = self.session.get(State, center.state_id)
        assert state is not None
        data = PatientData(
            given_name=f"Test{number}",
            family_name="Patient",
            birth_date=date(2005, 1 + number % 12, 1 + number % 28),
            medicaid_id=f"{state.code}T{number:07d}",
            state_id=state.id,
            center_id=center.id,
            therapy_id=self.therapy(therapy).id,
            infusion_date=infusion_date,
            status=PatientStatus.ACTIVE if infusion_date else PatientStatus.ENROLLED,
        )
        data = replace(data, **fields)
        if not schedule:
            data = replace(data, infusion_date=None)
        saved = enrol_patient(
            self.session,
            clock=self.clock,
            actor=SYSTEM,
            library=shipped_protocols(),
            data=data,
            allowed_state_ids=None,
        )
        if not schedule and infusion_date is not None:
            saved.patient.infusion_date = infusion_date
            self.session.flush()
        return saved.patient

    def caregiver(
        self, patient: Patient, *, relationship: str = "mother", **rights: bool
    ) -> CaregiverLink:
        number = _next()
        person = Caregiver(
            given_name=f"Care{number}",
            family_name="Giver",
            mobile_phone=f"+1202555{number % 90 + 110:04d}",
            preferred_language=Language.EN,
            time_zone=patient.time_zone,
            created_at=self.now,
        )
        self.session.add(person)
        self.session.flush()
        link = CaregiverLink(
            caregiver_id=person.id,
            patient_id=patient.id,
            relationship_label=relationship,
            created_at=self.now,
            updated_at=self.now,
            **{f"can_{right}": allowed for right, allowed in rights.items()},
        )
        self.session.add(link)
        self.session.flush()
        return link

    def staff(
        self,
        role: Role = Role.COORDINATOR,
        *,
        states: list[State] | None = None,
        center: TreatmentCenter | None = None,
        login: str | None = None,
    ) -> User:
        """A staff login with the test password and TOTP secret (second factor enabled)."""
        number = _next()
        login = login or f"{role.value}{number}@test.cgt-access.test"
        user = User(
            login=login,
            email=login,
            display_name=f"{role.value.title()} {number}",
            role=role,
            center_id=center.id if center is not None else None,
            password_hash=_password_hash(),
            preferred_language=Language.EN,
            totp_secret=TOTP_SECRET,
            totp_enabled_at=self.now,
            is_active=True,
            created_at=self.now,
        )
        scopes = states if states is not None else ([] if role is Role.ADMIN else [self.state()])
        user.state_scopes = [UserStateScope(state_id=state.id) for state in scopes]
        self.session.add(user)
        self.session.flush()
        return user

    def patient_login(self, patient: Patient, *, login: str | None = None) -> User:
        user = User(
            login=login or f"patient{patient.id}",
            display_name=patient.full_name,
            role=Role.PATIENT,
            patient_id=patient.id,
            password_hash=_password_hash(),
            preferred_language=patient.preferred_language,
            phone_verified_at=self.now,
            is_active=True,
            created_at=self.now,
        )
        self.session.add(user)
        self.session.flush()
        return user


def totp_code(at: datetime) -> str:
    return str(pyotp.TOTP(TOTP_SECRET).at(at.astimezone(UTC)))


class building:  # noqa: N801  (used as `with building(db, clock) as make:`)
    """A Factory whose rows are committed when the block ends (rolled back on error)."""

    def __init__(self, factory_of_sessions: Any, clock: Clock) -> None:
        self._sessions = factory_of_sessions
        self._clock = clock

    def __enter__(self) -> Factory:
        self._session: Session = self._sessions()
        return Factory(self._session, self._clock)

    def __exit__(self, kind: object, *_rest: object) -> None:
        try:
            if kind is None:
                self._session.commit()
            else:
                self._session.rollback()
        finally:
            self._session.close()
