"""The demo shows every education module to someone (issue 10, defect 16): its states fund
the modules that are not core (state support, living after gene therapy, the caregivers'
module) in funding windows, so a demo visitor sees state-funded and caregiver modules, and
the admins' funding page has open and ended windows to show.

Runs on the seeded test world (which seeds from the demo), on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import FrozenClock
from core.identity.models import User
from education.content import shipped_modules
from education.funding import WindowStatus, funding_windows
from education.offer import offered_modules_by_user
from tests.conftest import CAREGIVER_CO, CAREGIVER_MD, PATIENT_CO, PATIENT_MD

READERS = [PATIENT_MD, PATIENT_CO, CAREGIVER_MD, CAREGIVER_CO]


def offered_keys(session: Session, clock: FrozenClock, language: str) -> dict[str, set[str]]:
    users = list(session.scalars(select(User).where(User.login.in_(READERS))))
    offers = offered_modules_by_user(session, users=users, clock=clock, language=language)
    return {user.login or "": {item.key for item in offers[user.id]} for user in users}


def test_every_module_is_offered_to_a_demo_reader_in_each_language(
    session: Session, clock: FrozenClock
) -> None:
    every = set(shipped_modules().modules)
    for language in ("en", "es"):
        offered = offered_keys(session, clock, language)
        shown = set().union(*offered.values())
        assert shown == every, (language, every - shown)


def test_the_caregivers_module_reaches_the_demo_caregivers(
    session: Session, clock: FrozenClock
) -> None:
    offered = offered_keys(session, clock, "en")
    assert "for-caregivers" in offered[CAREGIVER_MD]
    assert "for-caregivers" in offered[CAREGIVER_CO]
    assert "for-caregivers" not in offered[PATIENT_MD]  # written for caregivers only
    assert "state-support" in offered[PATIENT_MD] and "state-support" in offered[PATIENT_CO]


def test_the_funding_page_has_open_and_ended_windows(session: Session, clock: FrozenClock) -> None:
    windows = funding_windows(session, clock=clock)
    statuses = {window.status for window in windows}
    assert {WindowStatus.ACTIVE, WindowStatus.PAST} <= statuses, statuses
    assert {window.state.code for window in windows} == {"MD", "CO"}
