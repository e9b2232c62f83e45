"""A patient's education page works out what each of their readers is offered at once: it
runs the same number of SQL statements however many caregivers with a login the patient
has, and offers each reader what they are offered alone (`offered_modules`, one reader).
Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import FrozenClock
from core.db import transaction
from core.identity.models import Role, User
from core.models import Caregiver, CaregiverLink, Language, Patient, State
from education.assignments import assignable_modules, readers_of_patient
from education.content import shipped_modules
from education.models import (
    ModuleAssignment,
    ModuleCompletion,
    ModuleFunding,
    ModuleProgress,
)
from education.offer import OfferedModule, offered_modules, offered_modules_by_user
from tests.conftest import (
    CAREGIVER_MD,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    T0,
    Database,
    log_in,
    user_by_login,
)
from tests.support.education import without_funding
from tests.support.statements import statements_on


@pytest.fixture(autouse=True)
def _states_fund_nothing_yet(request: pytest.FixtureRequest) -> None:
    """These tests add their own funding windows to states that fund nothing yet."""
    if "db" in request.fixturenames:
        without_funding(request.getfixturevalue("db"))


# Maya's core modules for a Lyfgenia patient (Casgevy's is another therapy's).
CORE = {
    "fertility",
    "fifteen-years-of-follow-up",
    "lyfgenia-what-to-know",
    "the-journey",
    "warning-signs",
    "what-is-gene-therapy",
}


@dataclass(frozen=True)
class Readers:
    maya_id: int
    maya: int  # user ids
    denise: int
    both_states: int  # helps Maya (Maryland) and Andre (Colorado)
    started: int  # helps Maya only; started a module Maryland does not fund
    assigned: int  # helps Maya only; assigned a module Maryland does not fund


def _fund(session: Session, state: State, key: str) -> None:
    session.add(
        ModuleFunding(
            state_id=state.id,
            module_key=key,
            funded_from=date(2026, 1, 1),
            funded_until=None,
            created_at=T0,
        )
    )


def _helper(session: Session, name: str, *patients: Patient) -> User:
    """A caregiver with a login, linked to these patients (in this order)."""
    person = Caregiver(
        given_name=name,
        family_name="Helper",
        preferred_language=Language.EN,
        time_zone=patients[0].time_zone,
        created_at=T0,
    )
    session.add(person)
    session.flush()
    for patient in patients:
        session.add(
            CaregiverLink(
                caregiver_id=person.id,
                patient_id=patient.id,
                relationship_label="friend",
                created_at=T0,
                updated_at=T0,
            )
        )
    user = User(
        display_name=person.full_name,
        role=Role.CAREGIVER,
        caregiver_id=person.id,
        preferred_language=Language.EN,
        is_active=True,
        created_at=T0,
    )
    session.add(user)
    session.flush()
    return user


def _world(db: Database, *, helpers: bool) -> Readers:
    """Maryland funds "state-support", Colorado "for-caregivers" and "living-after-gene-
    therapy"; Maya completed the latter anyway. With `helpers`, three more caregivers of
    Maya's with a login (else their ids are 0)."""
    with transaction(db.factory) as session:
        maya_user = user_by_login(session, PATIENT_MD)
        maya = session.get(Patient, maya_user.patient_id)
        andre = session.get(Patient, user_by_login(session, PATIENT_CO).patient_id)
        assert maya is not None and andre is not None
        _fund(session, maya.state, "state-support")
        _fund(session, andre.state, "for-caregivers")
        _fund(session, andre.state, "living-after-gene-therapy")
        session.add(
            ModuleCompletion(
                user_id=maya_user.id,
                module_key="living-after-gene-therapy",
                module_version=1,
                score=5,
                questions=5,
                completed_at=T0 - timedelta(days=3),
                state_id=maya.state_id,
                reader_role="patient",
                patient_id=maya.id,
            )
        )
        ids = [0, 0, 0]
        if helpers:
            both = _helper(session, "Blair", maya, andre)
            started = _helper(session, "Casey", maya)
            assigned = _helper(session, "Drew", maya)
            session.add(
                ModuleProgress(
                    user_id=started.id,
                    module_key="for-caregivers",
                    module_version=1,
                    current_section="x",
                    sections_done=[],
                    started_at=T0 - timedelta(days=2),
                    updated_at=T0 - timedelta(days=1),
                )
            )
            session.add(
                ModuleAssignment(
                    module_key="living-after-gene-therapy",
                    user_id=assigned.id,
                    patient_id=maya.id,
                    due_on=date(2026, 12, 31),
                    assigned_at=T0 - timedelta(days=1),
                    assigned_by_user_id=user_by_login(session, COORDINATOR_MD).id,
                )
            )
            ids = [both.id, started.id, assigned.id]
        return Readers(maya.id, maya_user.id, user_by_login(session, CAREGIVER_MD).id, *ids)


def _page(db: Database, app: FastAPI, clock: FrozenClock, maya_id: int) -> tuple[str, int]:
    """Maya's education page as her coordinator sees it, and the statements it ran."""
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        log_in(client, COORDINATOR_MD, clock)
        url = f"/patients/{maya_id}/education"
        client.get(url)  # warm: the login's first touch is not part of the page
        with statements_on(db.engine) as seen:
            response = client.get(url)
    assert response.status_code == 200
    return response.text, len(seen)


def _choices(page: str, user_id: int) -> set[str]:
    """The modules the page lets the coordinator assign to this reader."""
    select_ = page.split(f'id="f-module_key-{user_id}"')[1].split("</select>")[0]
    return set(re.findall(r'<option value="([^"]+)"', select_))


def test_the_page_runs_as_many_statements_however_many_caregivers(
    db: Database, app: FastAPI, clock: FrozenClock
) -> None:
    readers = _world(db, helpers=False)
    page, alone = _page(db, app, clock, readers.maya_id)
    assert _choices(page, readers.denise)  # Denise is on the page, with her choices

    with transaction(db.factory) as session:
        maya = session.get(Patient, readers.maya_id)
        andre = session.get(Patient, user_by_login(session, PATIENT_CO).patient_id)
        assert maya is not None and andre is not None
        for index in range(4):
            _helper(session, f"Extra{index}", maya, andre)
    page, with_more = _page(db, app, clock, readers.maya_id)

    assert page.count('name="module_key"') == 2 + 4  # Maya, Denise and the four more
    assert with_more == alone


def test_each_reader_is_offered_what_they_are_offered_alone(
    db: Database, app: FastAPI, clock: FrozenClock
) -> None:
    readers = _world(db, helpers=True)

    page, _count = _page(db, app, clock, readers.maya_id)

    # What each reader is offered, by the rule (funding by their own states only).
    assert _choices(page, readers.maya) == CORE | {"state-support", "living-after-gene-therapy"}
    assert _choices(page, readers.denise) == CORE | {"state-support"}
    assert _choices(page, readers.both_states) == CORE | {
        "state-support",
        "for-caregivers",
        "living-after-gene-therapy",
    }
    assert _choices(page, readers.started) == CORE | {"state-support", "for-caregivers"}
    assert _choices(page, readers.assigned) == CORE | {
        "state-support",
        "living-after-gene-therapy",
    }
    # And the same as each reader worked out alone, in the same order.
    with db.factory() as session:
        maya = session.get(Patient, readers.maya_id)
        assert maya is not None
        for choice in readers_of_patient(session, patient=maya):
            alone = assignable_modules(
                session, clock=clock, patient=maya, reader=choice, language="en"
            )
            select_ = page.split(f'id="f-module_key-{choice.user.id}"')[1]
            shown = re.findall(r'<option value="([^"]+)"', select_.split("</select>")[0])
            assert shown == [module.key for module in alone], choice.name


def _facts(offered: list[OfferedModule]) -> list[tuple[Any, ...]]:
    return [(item.key, item.status, item.state_id, item.due_on, item.assigned) for item in offered]


@pytest.mark.parametrize("with_staff", [False, True], ids=["readers", "with-staff"])
def test_the_batched_offer_is_each_readers_own_offer(
    db: Database, clock: FrozenClock, with_staff: bool
) -> None:
    readers = _world(db, helpers=True)
    library = shipped_modules()
    with db.factory() as session:
        users = [
            session.get(User, uid)
            for uid in (
                readers.maya,
                readers.denise,
                readers.both_states,
                readers.started,
                readers.assigned,
            )
        ]
        if with_staff:
            users.append(user_by_login(session, COORDINATOR_MD))
        assert all(user is not None for user in users)
        everyone = [user for user in users if user is not None]

        together = offered_modules_by_user(
            session, users=everyone, clock=clock, library=library, language="en"
        )

        for user in everyone:
            alone = offered_modules(session, user=user, clock=clock, library=library, language="en")
            assert _facts(together[user.id]) == _facts(alone), user.display_name
        if with_staff:
            assert together[everyone[-1].id] == []
        # A funded module is read under the state that funds it; one read anyway, under the
        # state where it was completed (or the reader's home state).
        colorado = session.scalars(select(State).where(State.code == "CO")).one()
        maryland = session.scalars(select(State).where(State.code == "MD")).one()
        states = {
            (uid, item.key): item.state_id for uid, items in together.items() for item in items
        }
        assert states[readers.both_states, "for-caregivers"] == colorado.id
        assert states[readers.both_states, "state-support"] == maryland.id
        assert states[readers.maya, "living-after-gene-therapy"] == maryland.id
        assert states[readers.started, "for-caregivers"] == maryland.id
