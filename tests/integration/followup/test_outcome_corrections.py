"""Recorded outcomes can be corrected, completed and removed (entered in error) after the
visit is saved, and what was first recorded stays readable: who, when, and why it changed
(issue 10, defect 10)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordination.followup.models import Visit, VisitObservation, VisitStatus
from coordination.followup.outcomes import record_outcomes
from coordination.followup.protocol import Assessment
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.identity.models import Role, User
from core.models import Observation, ObservationRevision, ObservationStatus
from tests.conftest import HTMX, Database, log_in, plain
from tests.factories import PASSWORD, building

HEMOGLOBIN = "718-7"
FETAL_HEMOGLOBIN = "4576-5"


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@dataclass
class World:
    patient_id: int
    visit_id: int
    coordinator: str  # login, Maryland
    other_coordinator: str  # login, Colorado


@pytest.fixture
def world(empty_db: Database, clock: FrozenClock) -> World:
    """A Lyfgenia patient infused 104 days ago whose day-100 visit is completed with
    hemoglobin 11.4 (no fetal hemoglobin yet), and a coordinator of her state and of another."""
    with building(empty_db.factory, clock) as make:
        maryland = make.state("MD")
        patient = make.patient(
            center=make.center(maryland),
            therapy="lyfgenia",
            infusion_date=clock.now().date() - timedelta(days=104),
        )
        coordinator = make.staff(Role.COORDINATOR, states=[maryland])
        other = make.staff(Role.COORDINATOR, states=[make.state("CO")])
        visit = make.session.scalar(
            select(Visit).where(Visit.patient_id == patient.id, Visit.visit_key == "day-100")
        )
        assert visit is not None
        record_outcomes(
            make.session,
            clock=clock,
            actor=Actor(user_id=coordinator.id, label=coordinator.login or "", role="coordinator"),
            visit=visit,
            assessments=(Assessment.HEMOGLOBIN, Assessment.FETAL_HEMOGLOBIN),
            completed_on=clock.now().date() - timedelta(days=2),
            values={"hemoglobin": Decimal("11.4"), "voe_count": Decimal(0)},
        )
        assert coordinator.login is not None and other.login is not None
        return World(patient.id, visit.id, coordinator.login, other.login)


def _log_in(client: TestClient, login: str, clock: FrozenClock) -> str:
    return log_in(client, login, clock, password=PASSWORD)


def _url(patient_id: int, visit_id: int, action: str = "") -> str:
    url = f"/patients/{patient_id}/visits/{visit_id}"
    return f"{url}/{action}" if action else url


def _observations(db: Database, visit_id: int) -> dict[str, Observation]:
    with db.factory() as session:
        return {
            observation.code: observation
            for observation in session.scalars(
                select(Observation)
                .join(VisitObservation, VisitObservation.observation_id == Observation.id)
                .where(VisitObservation.visit_id == visit_id)
            )
        }


def _post(client: TestClient, url: str, data: dict[str, object], *, htmx: bool) -> httpx.Response:
    response: httpx.Response = client.post(url, data=data, headers=HTMX if htmx else {})
    return response


def _succeeded(response: httpx.Response, *, htmx: bool) -> str:
    if htmx:
        assert response.status_code == 204, response.text
        return str(response.headers["HX-Redirect"])
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def test_a_coordinator_corrects_a_value_and_the_first_one_stays_readable(
    empty_db: Database,
    empty_client: TestClient,
    world: World,
    clock: FrozenClock,
    htmx: bool,
) -> None:
    db, client, patient_id, visit_id = empty_db, empty_client, world.patient_id, world.visit_id
    token = _log_in(client, world.coordinator, clock)
    page = client.get(_url(patient_id, visit_id))
    assert "Correct or complete the values" in page.text
    # The form starts from what stands.
    assert re.search(r'name="hemoglobin" type="text" value="11.4"', page.text)

    sent = _post(
        client,
        _url(patient_id, visit_id, "outcomes/corrections"),
        {
            "csrf_token": token,
            "hemoglobin": "12.1",
            "voe_count": "0",
            "reason": "The lab sent a corrected result",
        },
        htmx=htmx,
    )
    assert _succeeded(sent, htmx=htmx).endswith("?done=corrected")

    hemoglobin = _observations(db, visit_id)[HEMOGLOBIN]
    assert hemoglobin.value_quantity == Decimal("12.1")
    assert hemoglobin.status is ObservationStatus.CORRECTED
    assert hemoglobin.version_id == 2
    with db.factory() as session:
        revisions = session.scalars(
            select(ObservationRevision).where(ObservationRevision.observation_id == hemoglobin.id)
        ).all()
        coordinator_id = session.scalar(select(User.id).where(User.login == world.coordinator))
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "observation.correct")
        ).all()
    assert [(r.version_id, r.value_quantity, r.status) for r in revisions] == [
        (1, Decimal("11.4"), "final")
    ]
    assert revisions[0].recorded_by_user_id == coordinator_id
    assert revisions[0].reason == "The lab sent a corrected result"
    assert [(e.patient_id, e.target) for e in events] == [
        (patient_id, f"observation:{hemoglobin.id}")
    ]
    # The voe count did not change: no revision, no new version.
    assert _observations(db, visit_id)["voe-count"].version_id == 1

    shown = plain(client.get(_url(patient_id, visit_id)).text)
    assert "12.1" in shown and "Corrected" in shown
    assert re.search(r"11\.4, recorded .* replaced .*: The lab sent a corrected result", shown)


def test_a_value_that_arrives_later_completes_the_visit_and_one_entered_in_error_is_removed(
    empty_db: Database,
    empty_client: TestClient,
    world: World,
    clock: FrozenClock,
    htmx: bool,
) -> None:
    db, client, patient_id, visit_id = empty_db, empty_client, world.patient_id, world.visit_id
    token = _log_in(client, world.coordinator, clock)
    sent = _post(
        client,
        _url(patient_id, visit_id, "outcomes/corrections"),
        {
            "csrf_token": token,
            "fetal_hemoglobin": "31.5",
            "remove": "voe_count",
            "reason": "HbF result received; the VOE count was typed on the wrong patient",
        },
        htmx=htmx,
    )
    _succeeded(sent, htmx=htmx)
    found = _observations(db, visit_id)
    fetal = found[FETAL_HEMOGLOBIN]
    assert (fetal.value_quantity, fetal.value_unit) == (Decimal("31.5"), "%")
    # The visit's day, not today.
    assert fetal.effective_at.date() == clock.now().date() - timedelta(days=2)
    assert found["voe-count"].status is ObservationStatus.ENTERED_IN_ERROR
    assert found[HEMOGLOBIN].version_id == 1  # untouched: its field was left empty
    with db.factory() as session:
        visit = session.get(Visit, visit_id)
        assert visit is not None and visit.status is VisitStatus.COMPLETED
    page = client.get(_url(patient_id, visit_id)).text
    assert "Entered in error" in page
    assert re.search(r"<del>\s*0\s*</del>", page)
    record = plain(client.get(f"/patients/{patient_id}").text)
    assert "(entered in error)" in record  # the timeline says so too


def test_a_correction_needs_a_reason_and_a_plausible_value_and_changes_nothing_otherwise(
    empty_db: Database,
    empty_client: TestClient,
    world: World,
    clock: FrozenClock,
    htmx: bool,
) -> None:
    db, client, patient_id, visit_id = empty_db, empty_client, world.patient_id, world.visit_id
    token = _log_in(client, world.coordinator, clock)
    url = _url(patient_id, visit_id, "outcomes/corrections")
    no_reason = _post(client, url, {"csrf_token": token, "hemoglobin": "12"}, htmx=htmx)
    assert no_reason.status_code == 400
    assert "Say why the values change" in no_reason.text
    assert ("<html" in no_reason.text) is not htmx  # htmx gets the card alone
    out_of_range = _post(
        client, url, {"csrf_token": token, "hemoglobin": "40", "reason": "typo"}, htmx=htmx
    )
    assert out_of_range.status_code == 400
    assert "Enter a value from 3 to 25 g/dL." in out_of_range.text
    assert 'type="text" value="40"' in out_of_range.text  # kept as typed
    both = _post(
        client,
        url,
        {"csrf_token": token, "hemoglobin": "12", "remove": "hemoglobin", "reason": "x"},
        htmx=htmx,
    )
    assert both.status_code == 400
    assert "Either correct the value or remove it, not both." in both.text
    hemoglobin = _observations(db, visit_id)[HEMOGLOBIN]
    assert (hemoglobin.value_quantity, hemoglobin.version_id) == (Decimal("11.4"), 1)


def test_only_completed_visits_of_ones_own_patients_can_be_corrected(
    empty_db: Database,
    empty_client: TestClient,
    world: World,
    clock: FrozenClock,
) -> None:
    db, client, patient_id, visit_id = empty_db, empty_client, world.patient_id, world.visit_id
    with db.factory() as session:
        open_visit = session.scalar(
            select(Visit.id)
            .where(Visit.patient_id == patient_id, Visit.status == VisitStatus.DUE)
            .order_by(Visit.target_date)
            .limit(1)
        )
    assert open_visit is not None
    token = _log_in(client, world.other_coordinator, clock)  # Colorado: she is in Maryland
    other_state = client.post(
        _url(patient_id, visit_id, "outcomes/corrections"),
        data={"csrf_token": token, "hemoglobin": "12", "reason": "x"},
    )
    assert other_state.status_code == 404
    client.cookies.clear()
    token = _log_in(client, world.coordinator, clock)
    not_done = client.post(
        _url(patient_id, open_visit, "outcomes/corrections"),
        data={"csrf_token": token, "hemoglobin": "12", "reason": "x"},
    )
    assert not_done.status_code == 400
    assert "completed visit only" in not_done.text
    assert "Correct or complete the values" not in client.get(_url(patient_id, open_visit)).text
    assert _observations(db, visit_id)[HEMOGLOBIN].version_id == 1
