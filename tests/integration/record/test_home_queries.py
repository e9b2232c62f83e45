"""The home page reads every linked patient's visits at once: a caregiver's home runs the
same number of SQL statements however many patients they help, and shows what it showed
when each patient's visits were read one by one. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import time, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

import portal.routes.home
from coordination.followup.models import Visit
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import (
    book_appointment,
    mark_missed_visits,
    next_visit,
    sync_schedule,
    visits_for_patient,
    visits_for_patients,
)
from core.audit.service import Actor
from core.clock import FrozenClock
from core.models import CaregiverLink, Patient
from tests.conftest import CAREGIVER_MD, Database, user_by_login
from tests.support.statements import statements_on

SETUP = Actor.system("test-setup")
# Denise already helps Maya (every right) and Imani (the schedule only).
LINKED = ("Maya", "Imani")
# Patients linked to her in the tests: Zoe's link withholds the schedule.
MORE = ("Lucía", "Jaylen", "Marcus", "Zoe")
NO_SCHEDULE = "Zoe"


def _patient(session: Session, given_name: str) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
    assert patient is not None
    return patient


def _plan(db: Database, clock: FrozenClock, *names: str) -> dict[str, int]:
    """Give these patients their schedule, the next visit of each booked; their ids."""
    ids: dict[str, int] = {}
    with db.factory() as session:
        for name in names:
            patient = _patient(session, name)
            sync_schedule(
                session, clock=clock, actor=SETUP, library=shipped_protocols(), patient=patient
            )
            ids[name] = patient.id
        mark_missed_visits(session, clock=clock)
        for name in names:
            patient = _patient(session, name)
            upcoming = next_visit(visits_for_patient(session, patient_id=patient.id))
            assert upcoming is not None, name
            book_appointment(
                session,
                clock=clock,
                actor=SETUP,
                visit=upcoming,
                patient=patient,
                day=max(upcoming.window_start, clock.now().date() + timedelta(days=1)),
                at=time(10, 30),
                location="Harborview",
            )
        session.commit()
    return ids


def _link_denise(db: Database, clock: FrozenClock, *names: str) -> None:
    with db.factory() as session:
        caregiver_id = user_by_login(session, CAREGIVER_MD).caregiver_id
        for name in names:
            session.add(
                CaregiverLink(
                    caregiver_id=caregiver_id,
                    patient_id=_patient(session, name).id,
                    relationship_label="neighbour",
                    can_view_schedule=name != NO_SCHEDULE,
                    can_receive_reminders=False,
                    can_view_education=name == "Lucía",
                    can_report_events=name == "Marcus",
                    can_answer_questionnaires=name != NO_SCHEDULE,
                    created_at=clock.now(),
                    updated_at=clock.now(),
                )
            )
        session.commit()


def _home(client: TestClient) -> str:
    response = client.get("/home")
    assert response.status_code == 200
    return str(response.text)


def _read_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the home page read each patient's visits itself, as it did before."""

    def no_visits_read(session: Session, *, patient_ids: list[int]) -> dict[int, None]:
        return dict.fromkeys(patient_ids)

    monkeypatch.setattr(portal.routes.home, "visits_for_patients", no_visits_read)


def test_a_caregivers_home_runs_as_many_statements_for_six_patients_as_for_two(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = _plan(db, clock, *LINKED, *MORE)
    login_as(CAREGIVER_MD)
    _home(client)  # warm up: the first request of a login writes more

    with statements_on(db.engine) as statements:
        home = _home(client)
    few = len(statements)
    assert all(f'id="visit-card-{ids[name]}"' in home for name in LINKED)

    _link_denise(db, clock, *MORE)
    with statements_on(db.engine) as statements:
        home = _home(client)
    many = len(statements)
    for name, patient_id in ids.items():
        assert f'id="person-{patient_id}"' in home, name
        shows_card = f'id="visit-card-{patient_id}"' in home
        assert shows_card is (name != NO_SCHEDULE), name
    assert few == many, (few, many)

    # The count does see an N+1: read one by one, each patient whose schedule Denise may see
    # costs a query instead of the one for everyone.
    _read_one_by_one(monkeypatch)
    with statements_on(db.engine) as statements:
        _home(client)
    seeing = len(LINKED) + len(MORE) - 1
    assert len(statements) == many - 1 + seeing, (many, len(statements))


def test_a_caregivers_home_shows_what_reading_one_by_one_showed(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = _plan(db, clock, *LINKED, *MORE)
    _link_denise(db, clock, *MORE)
    login_as(CAREGIVER_MD)
    home = _home(client)
    assert "Confirm this appointment" in home
    assert f'id="visit-card-{ids[NO_SCHEDULE]}"' not in home

    _read_one_by_one(monkeypatch)
    assert _home(client) == home


def test_visits_of_several_patients_are_each_ones_visits_in_date_order(
    db: Database, clock: FrozenClock
) -> None:
    ids = _plan(db, clock, "Maya", "Imani")
    with db.factory() as session:
        without_visits = _patient(session, "Lucía").id
        asked = [ids["Maya"], without_visits, ids["Imani"]]
        with statements_on(db.engine) as statements:
            found = visits_for_patients(session, patient_ids=asked)
        assert len(statements) == 1
        assert list(found) == asked
        assert found[without_visits] == []
        for patient_id in ids.values():
            visits = found[patient_id]
            assert visits and all(visit.patient_id == patient_id for visit in visits)
            assert [v.target_date for v in visits] == sorted(v.target_date for v in visits)
            assert [v.id for v in visits] == list(
                session.scalars(
                    select(Visit.id)
                    .where(Visit.patient_id == patient_id)
                    .order_by(Visit.target_date, Visit.id)
                )
            )
        with statements_on(db.engine) as statements:
            assert visits_for_patients(session, patient_ids=[]) == {}
        assert statements == []
