"""Acting on a patient's visits needs the right to (issue 10, defect 16): a caregiver whose
link only lets them see the schedule (Denise for Imani) sees no confirm button and no form
to ask to move a visit, and is refused (404, like every out-of-right action) if they send
one anyway; the right "Confirm visits or ask to move them" allows it (Denise for Maya).

Page tests run as plain requests and as htmx requests; every test on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time

import pytest
from sqlalchemy import select

from coordination.followup.models import MoveRequest, VisitStatus
from core.clock import FrozenClock
from core.models import CaregiverLink, ProxyRight
from tests.conftest import CAREGIVER_MD, COORDINATOR_MD, PATIENT_MD, Browser, Database, plain
from tests.integration.followup.test_schedule_portal import (
    book,
    open_visit_ids,
    patient_id_named,
    patient_id_of,
    plan,
    visit,
)

BOTH_WAYS = pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])


@pytest.fixture
def booked(db: Database, clock: FrozenClock) -> dict[str, tuple[int, int]]:
    """Maya's and Imani's next visits, booked: name -> (patient id, visit id)."""
    maya, imani = patient_id_of(db, PATIENT_MD), patient_id_named(db, "Imani")
    plan(db, clock, maya, imani)
    visits = {}
    for name, patient_id in (("maya", maya), ("imani", imani)):
        visit_id = open_visit_ids(db, patient_id)[0]
        book(db, clock, visit_id, date(2026, 12, 2), time(14, 0))
        visits[name] = (patient_id, visit_id)
    return visits


def move_requests(db: Database, visit_id: int) -> int:
    with db.factory() as session:
        return len(
            session.scalars(select(MoveRequest).where(MoveRequest.visit_id == visit_id)).all()
        )


@BOTH_WAYS
def test_a_caregiver_who_may_only_see_the_schedule_gets_no_forms_to_act(
    browsers: Callable[[str], Browser], booked: dict[str, tuple[int, int]], htmx: bool
) -> None:
    denise = browsers(CAREGIVER_MD)
    imani, _visit_id = booked["imani"]
    page = denise.get(f"/care/{imani}/schedule", htmx=htmx)
    assert page.status_code == 200
    assert "Visits of Imani" in page.text
    assert "/move" not in page.text and "/confirm" not in page.text
    assert "Ask to move this visit" not in page.text
    # She learns whom to call instead (a tap on a phone calls).
    assert "To confirm or move it, call Maryland Care Connect at (410) 555-0100 ." in plain(
        page.text
    )
    assert 'href="tel:+14105550100"' in page.text


def test_a_caregiver_who_may_only_see_the_schedule_is_refused_if_they_try(
    db: Database, browsers: Callable[[str], Browser], booked: dict[str, tuple[int, int]]
) -> None:
    denise = browsers(CAREGIVER_MD)
    imani, visit_id = booked["imani"]
    confirm = denise.post(f"/care/{imani}/visits/{visit_id}/confirm", {})
    move = denise.post(f"/care/{imani}/visits/{visit_id}/move", {"note": "Any Friday"})
    assert confirm.status_code == 404
    assert move.status_code == 404
    assert visit(db, visit_id).status is VisitStatus.SCHEDULED
    assert move_requests(db, visit_id) == 0


def test_the_home_page_offers_to_confirm_only_where_the_right_allows(
    browsers: Callable[[str], Browser], booked: dict[str, tuple[int, int]]
) -> None:
    home = browsers(CAREGIVER_MD).get("/home").text
    (maya, maya_visit), (imani, imani_visit) = booked["maya"], booked["imani"]
    assert f'action="/care/{maya}/visits/{maya_visit}/confirm"' in home
    assert f'action="/care/{imani}/visits/{imani_visit}/confirm"' not in home


@BOTH_WAYS
def test_with_the_right_a_caregiver_confirms_and_asks_to_move(
    db: Database,
    browsers: Callable[[str], Browser],
    booked: dict[str, tuple[int, int]],
    htmx: bool,
) -> None:
    denise = browsers(CAREGIVER_MD)
    maya, visit_id = booked["maya"]
    page = denise.get(f"/care/{maya}/schedule", htmx=htmx)
    assert f'action="/care/{maya}/visits/{visit_id}/move"' in page.text
    moved = denise.post(f"/care/{maya}/visits/{visit_id}/move", {"note": "Any Friday"}, htmx=htmx)
    assert moved.status_code in (200, 303)
    assert move_requests(db, visit_id) == 1
    confirmed = denise.post(f"/care/{maya}/visits/{visit_id}/confirm", {}, htmx=htmx)
    assert confirmed.status_code in (200, 303)
    assert visit(db, visit_id).status is VisitStatus.CONFIRMED


def test_a_coordinator_gives_the_right(
    db: Database, browsers: Callable[[str], Browser], booked: dict[str, tuple[int, int]]
) -> None:
    imani, visit_id = booked["imani"]
    with db.factory() as session:
        link = session.scalar(select(CaregiverLink).where(CaregiverLink.patient_id == imani))
        assert link is not None
        link_id = link.id
    coordinator = browsers(COORDINATOR_MD)
    record = coordinator.get(f"/patients/{imani}").text
    assert 'value="manage_visits"' in record
    assert "Confirm visits or ask to move them" in record
    saved = coordinator.post(
        f"/patients/{imani}/caregivers/{link_id}/rights",
        {"rights": ["view_schedule", "manage_visits"]},
    )
    assert saved.status_code == 303
    with db.factory() as session:
        link = session.get(CaregiverLink, link_id)
        assert link is not None
        assert link.rights() == {ProxyRight.VIEW_SCHEDULE, ProxyRight.MANAGE_VISITS}
    denise = browsers(CAREGIVER_MD)
    assert denise.post(f"/care/{imani}/visits/{visit_id}/confirm", {}).status_code == 303
