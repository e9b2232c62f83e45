"""Recorded outcomes can be corrected, completed and removed (entered in error) after the
visit is saved, and what was first recorded stays readable: who, when, and why it changed
(issue 10, defect 10)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordination.followup.models import Visit, VisitObservation, VisitStatus
from coordination.followup.outcomes import record_outcomes
from coordination.followup.protocol import Assessment, shipped_protocols
from coordination.followup.schedule import sync_schedule
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import Observation, ObservationRevision, ObservationStatus, Patient
from tests.conftest import COORDINATOR_CO, COORDINATOR_MD, HTMX, Database, plain, user_by_login

HEMOGLOBIN = "718-7"
FETAL_HEMOGLOBIN = "4576-5"


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _completed_visit(db: Database, clock: FrozenClock) -> tuple[int, int]:
    """Imani's day-100 visit, completed with hemoglobin 11.4 (no fetal hemoglobin yet)."""
    with transaction(db.factory) as session:
        patient = session.scalar(select(Patient).where(Patient.given_name == "Imani"))
        assert patient is not None
        user = user_by_login(session, COORDINATOR_MD)
        actor = Actor(user_id=user.id, label=COORDINATOR_MD, role="coordinator")
        sync_schedule(
            session, clock=clock, actor=actor, library=shipped_protocols(), patient=patient
        )
        visit = session.scalar(
            select(Visit).where(Visit.patient_id == patient.id, Visit.visit_key == "day-100")
        )
        assert visit is not None
        record_outcomes(
            session,
            clock=clock,
            actor=actor,
            visit=visit,
            assessments=(Assessment.HEMOGLOBIN, Assessment.FETAL_HEMOGLOBIN),
            completed_on=date(2026, 11, 25),
            values={"hemoglobin": Decimal("11.4"), "voe_count": Decimal(0)},
        )
        return patient.id, visit.id


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
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    patient_id, visit_id = _completed_visit(db, clock)
    token = login_as(COORDINATOR_MD)
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
        coordinator = user_by_login(session, COORDINATOR_MD)
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "observation.correct")
        ).all()
    assert [(r.version_id, r.value_quantity, r.status) for r in revisions] == [
        (1, Decimal("11.4"), "final")
    ]
    assert revisions[0].recorded_by_user_id == coordinator.id
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
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    patient_id, visit_id = _completed_visit(db, clock)
    token = login_as(COORDINATOR_MD)
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
    assert fetal.effective_at.date() == date(2026, 11, 25)  # the visit's day, not today
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
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    patient_id, visit_id = _completed_visit(db, clock)
    token = login_as(COORDINATOR_MD)
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
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
) -> None:
    patient_id, visit_id = _completed_visit(db, clock)
    with db.factory() as session:
        open_visit = session.scalar(
            select(Visit.id)
            .where(Visit.patient_id == patient_id, Visit.status == VisitStatus.DUE)
            .order_by(Visit.target_date)
            .limit(1)
        )
    assert open_visit is not None
    token = login_as(COORDINATOR_CO)  # Colorado: Imani is in Maryland
    other_state = client.post(
        _url(patient_id, visit_id, "outcomes/corrections"),
        data={"csrf_token": token, "hemoglobin": "12", "reason": "x"},
    )
    assert other_state.status_code == 404
    client.cookies.clear()
    token = login_as(COORDINATOR_MD)
    not_done = client.post(
        _url(patient_id, open_visit, "outcomes/corrections"),
        data={"csrf_token": token, "hemoglobin": "12", "reason": "x"},
    )
    assert not_done.status_code == 400
    assert "completed visit only" in not_done.text
    assert "Correct or complete the values" not in client.get(_url(patient_id, open_visit)).text
    assert _observations(db, visit_id)[HEMOGLOBIN].version_id == 1
