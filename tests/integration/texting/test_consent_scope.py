"""Consent across programs: a coordinator who puts another state's patient's number on a
patient of their own sees that number's current status, but not the other program's
consent history, and cannot change its consent (record a consent or an opt-out, clear the
provider's flag, tick a form's consent box): consent belongs to the number, so the change
would change the other program's patient's texts. Two states' coordinators, on SQLite and
PostgreSQL, through the pages."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from coordination.texting.consent import (
    consent_of,
    flag_number,
    opt_in,
    opt_in_wording,
    opt_out,
)
from coordination.texting.models import ConsentHow, ConsentStatus, SmsConsentEvent
from core.clock import FrozenClock
from core.db import transaction
from core.models import Patient
from core.service import patient_input_from
from tests.conftest import (
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    Browser,
    Database,
    plain,
    user_by_login,
)

SHARED = "This number is also used by someone outside your program"
REFUSED = "a change here would change their texts too"
MD_PROGRAM = "Maryland Care Connect"


@dataclass(frozen=True)
class World:
    maya_id: int
    andre_id: int
    phone: str  # Maya's number (Maryland)
    md_coordinator: str  # the name the Maryland coordinator records under
    portal_wording: str


def _events(db: Database, phone: str) -> int:
    with db.factory() as session:
        query = select(func.count()).select_from(SmsConsentEvent)
        return session.scalar(query.where(SmsConsentEvent.phone == phone)) or 0


def _status(db: Database, phone: str) -> tuple[ConsentStatus | None, str | None]:
    with db.factory() as session:
        consent = consent_of(session, phone=phone)
        return (consent.status, consent.problem_code) if consent else (None, None)


@pytest.fixture
def world(db: Database, clock: FrozenClock) -> World:
    """Maya's number has a Maryland history: the Maryland coordinator recorded her consent
    by phone, then she agreed again in the portal with words of her own program's."""
    with transaction(db.factory) as session:
        maya_user = user_by_login(session, PATIENT_MD)
        maya = session.get(Patient, maya_user.patient_id)
        andre = session.get(Patient, user_by_login(session, PATIENT_CO).patient_id)
        md = user_by_login(session, COORDINATOR_MD)
        assert maya is not None and andre is not None and maya.mobile_phone
        wording = opt_in_wording(language="en", program=maya.state.program_name)
        assert MD_PROGRAM in wording
        opt_in(
            session,
            clock=clock,
            phone=maya.mobile_phone,
            how=ConsentHow.COORDINATOR,
            by_user_id=md.id,
            wording=wording,
        )
        portal_wording = f"{MD_PROGRAM}: I agree, in the portal."
        opt_in(
            session,
            clock=clock,
            phone=maya.mobile_phone,
            how=ConsentHow.PORTAL,
            by_user_id=maya_user.id,
            wording=portal_wording,
        )
        return World(
            maya_id=maya.id,
            andre_id=andre.id,
            phone=maya.mobile_phone,
            md_coordinator=md.display_name or md.login or "",
            portal_wording=portal_wording,
        )


def _edit_form(db: Database, patient_id: int, **changes: str) -> dict[str, str]:
    with db.factory() as session:
        patient = session.get(Patient, patient_id)
        assert patient is not None
        values = dataclasses.asdict(patient_input_from(patient))
    del values["errors"]
    return {**values, **changes}


@pytest.fixture
def colorado(db: Database, world: World, browsers: Callable[[str], Browser]) -> Browser:
    """The Colorado coordinator, who put Maya's number on Andre's record (no box ticked)."""
    browser = browsers(COORDINATOR_CO)
    saved = browser.post(
        f"/patients/{world.andre_id}/edit",
        _edit_form(db, world.andre_id, mobile_phone=world.phone),
    )
    assert saved.status_code == 303, plain(saved.text)
    return browser


def test_the_texts_page_shows_the_status_of_a_shared_number_but_not_the_other_programs_history(
    db: Database, world: World, colorado: Browser
) -> None:
    markup = colorado.get(f"/patients/{world.andre_id}/texts").text
    page = plain(markup)
    assert SHARED in page
    assert "Opted in" in page or "opted in" in page.lower()  # the number's status, as it is
    # Nothing of Maryland's history: not who recorded it, not the words, not the program.
    assert world.md_coordinator not in page
    assert world.portal_wording not in page
    assert MD_PROGRAM not in page
    assert "Maya" not in page
    assert "Changes recorded outside your program are not shown." in page
    # No form that would change it.
    assert f'name="phone" value="{world.phone}"' not in markup


def test_the_patient_form_shows_a_shared_number_without_the_other_programs_change(
    db: Database, world: World, colorado: Browser
) -> None:
    page = plain(colorado.get(f"/patients/{world.andre_id}/edit").text)
    assert SHARED in page
    assert "gets text messages." in page
    assert "in the portal" not in page  # how Maya agreed is Maryland's to know


@pytest.mark.parametrize("decision", ["opt_in", "opt_out"])
def test_a_coordinator_cannot_record_consent_for_a_number_another_program_uses(
    db: Database, world: World, colorado: Browser, clock: FrozenClock, decision: str
) -> None:
    if decision == "opt_in":  # make the opt-in a change: Maya had asked to stop
        with transaction(db.factory) as session:
            opt_out(session, clock=clock, phone=world.phone, how=ConsentHow.SMS_KEYWORD)
    before = (_status(db, world.phone), _events(db, world.phone))
    response = colorado.post(
        f"/patients/{world.andre_id}/texts/consent", {"phone": world.phone, "decision": decision}
    )
    assert response.status_code == 400
    assert REFUSED in plain(response.text)
    assert (_status(db, world.phone), _events(db, world.phone)) == before


def test_a_coordinator_cannot_clear_the_flag_of_a_number_another_program_uses(
    db: Database, world: World, colorado: Browser, clock: FrozenClock
) -> None:
    with transaction(db.factory) as session:
        flag_number(session, clock=clock, phone=world.phone, code="21614")
    markup = colorado.get(f"/patients/{world.andre_id}/texts").text
    assert f'name="phone" value="{world.phone}"' not in markup
    response = colorado.post(f"/patients/{world.andre_id}/texts/flag", {"phone": world.phone})
    assert response.status_code == 400
    assert REFUSED in plain(response.text)
    assert _status(db, world.phone) == (ConsentStatus.OPTED_IN, "21614")


def test_the_consent_box_of_the_patient_form_cannot_opt_in_a_number_another_program_uses(
    db: Database, world: World, browsers: Callable[[str], Browser], clock: FrozenClock
) -> None:
    with transaction(db.factory) as session:
        opt_out(session, clock=clock, phone=world.phone, how=ConsentHow.SMS_KEYWORD)
    colorado = browsers(COORDINATOR_CO)
    form = _edit_form(db, world.andre_id, mobile_phone=world.phone)
    page = plain(colorado.get(f"/patients/{world.andre_id}/edit").text)
    wording = page.split("English: ", 1)[1].split(" Español", 1)[0].strip()
    before = _events(db, world.phone)
    response = colorado.post(
        f"/patients/{world.andre_id}/edit",
        form | {"sms_consent": "yes", "sms_wording_en": wording},
    )
    assert response.status_code == 400, plain(response.text)
    assert REFUSED in plain(response.text)
    assert _status(db, world.phone) == (ConsentStatus.OPTED_OUT, None)
    assert _events(db, world.phone) == before


def test_the_consent_box_of_the_caregiver_form_cannot_opt_in_a_number_another_program_uses(
    db: Database, world: World, browsers: Callable[[str], Browser], clock: FrozenClock
) -> None:
    with transaction(db.factory) as session:
        opt_out(session, clock=clock, phone=world.phone, how=ConsentHow.SMS_KEYWORD)
    colorado = browsers(COORDINATOR_CO)
    page = plain(colorado.get(f"/patients/{world.andre_id}/caregivers/new").text)
    wording = page.split("English: ", 1)[1].split(" Español", 1)[0].strip()
    before = _events(db, world.phone)
    response = colorado.post(
        f"/patients/{world.andre_id}/caregivers/new",
        {
            "given_name": "Lena",
            "family_name": "Ortiz",
            "relationship": "aunt",
            "mobile_phone": world.phone,
            "preferred_language": "en",
            "rights": "receive_reminders",
            "sms_consent": "yes",
            "sms_wording_en": wording,
        },
    )
    assert response.status_code == 400, plain(response.text)
    assert REFUSED in plain(response.text)
    assert _status(db, world.phone) == (ConsentStatus.OPTED_OUT, None)
    assert _events(db, world.phone) == before


def test_a_number_used_only_within_the_program_keeps_its_history_and_can_be_changed(
    db: Database, world: World, browsers: Callable[[str], Browser]
) -> None:
    maryland = browsers(COORDINATOR_MD)
    page = plain(maryland.get(f"/patients/{world.maya_id}/texts").text)
    assert SHARED not in page
    assert world.md_coordinator in page and world.portal_wording in page
    assert "not shown" not in page
    response = maryland.post(
        f"/patients/{world.maya_id}/texts/consent", {"phone": world.phone, "decision": "opt_out"}
    )
    assert response.status_code == 303
    assert _status(db, world.phone) == (ConsentStatus.OPTED_OUT, None)


def test_once_shared_the_other_program_is_told_and_sees_none_of_the_newcomers_changes(
    db: Database, world: World, colorado: Browser, browsers: Callable[[str], Browser]
) -> None:
    """The number is shared both ways: Maryland's coordinator learns it too (without who),
    and what only Colorado could have recorded stays Colorado's."""
    maryland = browsers(COORDINATOR_MD)
    page = plain(maryland.get(f"/patients/{world.maya_id}/texts").text)
    assert SHARED in page
    assert "Andre" not in page
    assert world.md_coordinator in page  # Maryland's own history is still shown
    response = maryland.post(
        f"/patients/{world.maya_id}/texts/consent", {"phone": world.phone, "decision": "opt_out"}
    )
    assert response.status_code == 400
    assert _status(db, world.phone) == (ConsentStatus.OPTED_IN, None)
