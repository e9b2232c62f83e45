"""Education as staff see it: admins' funding windows (added, validated, ended, never
deleted), coordinators assigning a module and texting the generic link (within consent),
a patient's readings and their caregivers' own, and a state's reach with small counts
suppressed on the page and in the CSV. On SQLite and PostgreSQL; pages as a whole and as
htmx blocks."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordination.texting.consent import opt_in
from coordination.texting.models import ConsentHow, MessagePurpose, OutboundMessage
from coordination.texting.replies import check_template, normalize_for_matching
from coordination.texting.words import FORBIDDEN_WORDS, fit_for_sms
from core.audit.models import AuditEvent
from core.clock import FrozenClock
from core.db import transaction
from core.identity.models import Role, User, UserStateScope
from core.models import Caregiver, CaregiverLink, Language, Patient, State
from education.assignments import NEW_READING, reading_text
from education.content import shipped_modules
from education.models import (
    ModuleAssignment,
    ModuleCompletion,
    ModuleFunding,
    ModuleProgress,
)
from reporting.education_reach import reach_csv, state_reach
from tests.conftest import (
    ADMIN,
    ANALYST,
    CAREGIVER_CO,
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    STAFF_TOTP_SECRET,
    T0,
    Browser,
    Database,
    plain,
    user_by_login,
)
from tests.support.education import without_funding


@pytest.fixture(autouse=True)
def _states_fund_nothing_yet(request: pytest.FixtureRequest) -> None:
    """These tests add their own funding windows to states that fund nothing yet."""
    if "db" in request.fixturenames:
        without_funding(request.getfixturevalue("db"))


BASE_URL = "http://testserver"  # PUBLIC_BASE_URL in the test settings


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    """Run a page test as a plain browser request and as an htmx partial request."""
    return bool(request.param)


# --- the world -------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    maya_id: int
    maya_user_id: int
    maya_phone: str
    denise_user_id: int
    denise_phone: str
    andre_id: int
    rosa_user_id: int
    rosa_phone: str
    md_id: int
    co_id: int
    md_program: str
    co_program: str
    coordinator_id: int


@pytest.fixture
def world(db: Database) -> World:
    with db.factory() as session:
        maya_user = user_by_login(session, PATIENT_MD)
        maya = session.get(Patient, maya_user.patient_id)
        andre = session.get(Patient, user_by_login(session, PATIENT_CO).patient_id)
        denise_user = user_by_login(session, CAREGIVER_MD)
        rosa_user = user_by_login(session, CAREGIVER_CO)
        assert maya is not None and andre is not None
        assert denise_user.caregiver is not None and rosa_user.caregiver is not None
        assert maya.mobile_phone and denise_user.caregiver.mobile_phone
        assert rosa_user.caregiver.mobile_phone
        return World(
            maya_id=maya.id,
            maya_user_id=maya_user.id,
            maya_phone=maya.mobile_phone,
            denise_user_id=denise_user.id,
            denise_phone=denise_user.caregiver.mobile_phone,
            andre_id=andre.id,
            rosa_user_id=rosa_user.id,
            rosa_phone=rosa_user.caregiver.mobile_phone,
            md_id=maya.state_id,
            co_id=andre.state_id,
            md_program=maya.state.program_name,
            co_program=andre.state.program_name,
            coordinator_id=user_by_login(session, COORDINATOR_MD).id,
        )


def check_shape(response: httpx.Response, *, htmx: bool, block_id: str) -> str:
    if htmx:
        assert "<html" not in response.text, "an htmx request got the whole page"
        assert response.text.lstrip().startswith(f'<div id="{block_id}">'), response.text[:200]
    else:
        assert "<html" in response.text
        assert "<h1>" in response.text
    return response.text


def redirected_to(response: httpx.Response) -> str | None:
    if response.status_code == 303:
        return str(response.headers["location"])
    if response.status_code == 204:
        return str(response.headers.get("HX-Redirect"))
    return None


def audit_events(db: Database, action: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def opt_in_phone(db: Database, clock: FrozenClock, phone: str) -> None:
    with transaction(db.factory) as session:
        opt_in(
            session,
            clock=clock,
            phone=phone,
            how=ConsentHow.COORDINATOR,
            by_user_id=None,
            wording="I agree to get texts. Reply STOP to stop.",
        )


def outbox(db: Database) -> list[OutboundMessage]:
    with db.factory() as session:
        return list(session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


def assignments(db: Database) -> list[ModuleAssignment]:
    with db.factory() as session:
        return list(session.scalars(select(ModuleAssignment).order_by(ModuleAssignment.id)))


def fundings(db: Database) -> list[ModuleFunding]:
    with db.factory() as session:
        return list(session.scalars(select(ModuleFunding).order_by(ModuleFunding.id)))


# --- funding (admins) ----------------------------------------------------------------------


def test_the_admin_page_lists_every_module_and_says_which_are_core(
    browsers: Callable[[str], Browser], htmx: bool
) -> None:
    response = browsers(ADMIN).get("/admin/education", htmx=htmx)

    assert response.status_code == 200
    page = plain(check_shape(response, htmx=htmx, block_id="funding"))
    for module in shipped_modules():
        assert module.en.title in page
    listed = plain(response.text.split('id="modules-title"')[1].split("</ul>")[0]).replace(
        " :", ":"
    )
    assert "What gene therapy is, and what it is not: Core: always offered" in listed
    assert (
        "For caregivers: how to help, and how proxy access works: Funded by the state "
        "· for caregivers · every therapy · version 1"
    ) in listed
    assert "Casgevy: what to know: Core: always offered · for patients and caregivers" in listed
    assert "therapies: casgevy" in listed
    # No window yet: each state says only core modules are offered there.
    assert page.count("No funding windows yet: only core modules are offered") == 2


def test_an_admin_adds_a_window_and_ends_it_and_the_history_stays(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    admin = browsers(ADMIN)
    response = admin.post(
        "/admin/education",
        {
            "state_id": str(world.md_id),
            "module_key": "state-support",
            "funded_from": "2026-11-01",
            "funded_until": "2027-10-31",
        },
        htmx=htmx,
    )

    assert redirected_to(response) == "/admin/education?done=added"
    [row] = fundings(db)
    assert (row.state_id, row.module_key) == (world.md_id, "state-support")
    assert (row.funded_from, row.funded_until, row.ended_at) == (
        date(2026, 11, 1),
        date(2027, 10, 31),
        None,
    )
    assert row.created_at == T0 + timedelta(seconds=31)  # after the admin's second factor
    page = plain(admin.get("/admin/education?done=added").text)
    assert "The funding window is added." in page
    maryland = page.split("Funding windows: Maryland")[1].split("Funding windows: Colorado")[0]
    assert "Help your state program may offer" in maryland
    assert "Funding now" in maryland
    assert "By Alex Admin" in maryland
    [added] = audit_events(db, "education.funding_added")
    assert added.target == f"funding:{row.id}"

    clock.advance(timedelta(minutes=5))
    ended = admin.post("/admin/education/end", {"funding_id": str(row.id)}, htmx=htmx)

    assert redirected_to(ended) == "/admin/education?done=ended"
    [row] = fundings(db)  # never deleted
    assert row.ended_at == clock.now()
    page = plain(admin.get("/admin/education").text)
    maryland = page.split("Funding windows: Maryland")[1].split("Funding windows: Colorado")[0]
    assert "Ended" in maryland and "Funding now" not in maryland
    assert len(audit_events(db, "education.funding_ended")) == 1

    again = admin.post("/admin/education/end", {"funding_id": str(row.id)}, htmx=htmx)
    assert again.status_code == 400
    assert "That funding window has already ended." in plain(again.text)
    # A new window may start now that the old one ended.
    renewed = admin.post(
        "/admin/education",
        {"state_id": str(world.md_id), "module_key": "state-support", "funded_from": "2027-01-01"},
    )
    assert redirected_to(renewed) == "/admin/education?done=added"
    assert [(f.funded_from, f.funded_until) for f in fundings(db)] == [
        (date(2026, 11, 1), date(2027, 10, 31)),
        (date(2027, 1, 1), None),
    ]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (
            {
                "module_key": "state-support",
                "funded_from": "2026-12-01",
                "funded_until": "2026-11-30",
            },
            "The last day cannot be before the first day.",
        ),
        (
            {"module_key": "warning-signs", "funded_from": "2026-12-01"},
            "This is a core module: every state offers it, so it needs no funding.",
        ),
        ({"module_key": "no-such-module", "funded_from": "2026-12-01"}, "Choose a module."),
        ({"module_key": "", "funded_from": "2026-12-01"}, "Choose a module."),
        (
            {"module_key": "state-support", "funded_from": "2026-02-30"},
            "Enter a real date, like 2026-01-31.",
        ),
        (
            {"module_key": "state-support", "funded_from": ""},
            "Enter the first day of funding, like 2026-01-31.",
        ),
        (
            {"module_key": "state-support", "funded_from": "2026-12-01", "funded_until": "soon"},
            "Enter a real date, like 2026-12-31, or leave it empty.",
        ),
        (
            {"state_id": "", "module_key": "state-support", "funded_from": "2026-12-01"},
            "Choose a state.",
        ),
        (
            {"state_id": "99999999999", "module_key": "state-support", "funded_from": "2026-12-01"},
            "Choose a state.",
        ),
    ],
)
def test_a_wrong_window_is_refused_with_a_message_and_nothing_is_saved(
    db: Database,
    world: World,
    browsers: Callable[[str], Browser],
    htmx: bool,
    form: dict[str, str],
    message: str,
) -> None:
    response = browsers(ADMIN).post(
        "/admin/education", {"state_id": str(world.md_id), **form}, htmx=htmx
    )

    assert response.status_code == 400
    page = check_shape(response, htmx=htmx, block_id="funding")
    assert message in plain(page)
    assert fundings(db) == []
    assert audit_events(db, "education.funding_added") == []


def test_overlapping_windows_are_refused_but_another_state_or_module_is_fine(
    db: Database, world: World, browsers: Callable[[str], Browser]
) -> None:
    admin = browsers(ADMIN)
    first = {
        "state_id": str(world.md_id),
        "module_key": "state-support",
        "funded_from": "2026-01-01",
    }
    assert redirected_to(admin.post("/admin/education", first)) is not None

    overlapping = admin.post(
        "/admin/education", {**first, "funded_from": "2030-06-01", "funded_until": "2030-07-01"}
    )
    assert overlapping.status_code == 400
    assert "This state already funds this module on some of these days." in plain(overlapping.text)
    for other in ({"state_id": str(world.co_id)}, {"module_key": "living-after-gene-therapy"}):
        assert redirected_to(admin.post("/admin/education", {**first, **other})) is not None
    assert len(fundings(db)) == 3


# "999999999999" is past any database integer: never looked up, and not a 500.
@pytest.mark.parametrize("funding_id", ["", "abc", "999999", "999999999999"])
def test_ending_a_window_that_does_not_exist_is_a_400(
    browsers: Callable[[str], Browser], htmx: bool, funding_id: str
) -> None:
    response = browsers(ADMIN).post("/admin/education/end", {"funding_id": funding_id}, htmx=htmx)
    assert response.status_code == 400
    assert "That funding window does not exist." in plain(response.text)


@pytest.mark.parametrize("login", [COORDINATOR_MD, ANALYST, PATIENT_MD])
def test_only_admins_see_or_change_funding(
    db: Database, world: World, browsers: Callable[[str], Browser], login: str
) -> None:
    browser = browsers(login)
    assert browser.get("/admin/education").status_code == 403
    response = browser.post(
        "/admin/education",
        {"state_id": str(world.md_id), "module_key": "state-support", "funded_from": "2026-12-01"},
    )
    assert response.status_code == 403
    assert fundings(db) == []


# --- assigning (coordinators) --------------------------------------------------------------


def test_the_reading_text_is_an_approved_template_that_names_no_module() -> None:
    long_program = "District of Columbia Care Access Program"
    url = "https://followup.care-access.example.org/learn"
    for language in ("en", "es"):
        # As it is sent: folded for GSM-7 (one Spanish accent would make it UCS-2).
        problems = check_template(
            fit_for_sms(NEW_READING.text(language)),
            forbidden=FORBIDDEN_WORDS,
            fill={"program": long_program, "url": url},
        )
        assert problems == [], (language, problems)
        body = normalize_for_matching(
            reading_text(
                program=long_program,
                public_base_url="https://followup.care-access.example.org/",
                language=language,
            )
        )
        assert url in body
        for module in shipped_modules():
            assert module.key not in body
            for title in (module.en.title, module.es.title):
                assert normalize_for_matching(title) not in body


def test_a_coordinator_assigns_a_module_with_a_due_date_and_texts_the_generic_link(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    opt_in_phone(db, clock, world.maya_phone)
    browser = browsers(COORDINATOR_MD)

    response = browser.post(
        f"/patients/{world.maya_id}/education",
        {
            "reader": str(world.maya_user_id),
            "module_key": "fertility",
            "due_on": "2026-12-15",
            "send_text": "yes",
        },
        htmx=htmx,
    )

    assert response.status_code == 200
    page = plain(check_shape(response, htmx=htmx, block_id="patient-education"))
    assert "“Fertility: keeping your chance to have children” is assigned to Maya Johnson." in page
    assert "A text with the link to their reading list is on its way." in page
    [assignment] = assignments(db)
    [message] = outbox(db)
    assert (assignment.user_id, assignment.patient_id, assignment.module_key) == (
        world.maya_user_id,
        world.maya_id,
        "fertility",
    )
    assert assignment.due_on == date(2026, 12, 15)
    assert assignment.assigned_by_user_id == world.coordinator_id
    assert assignment.message_id == message.id
    assert (message.to_phone, message.purpose, message.rule) == (
        world.maya_phone,
        MessagePurpose.ONE_OFF,
        "education",
    )
    assert message.body == reading_text(
        program=world.md_program, public_base_url=BASE_URL, language="en"
    )
    assert f"{BASE_URL}/learn " in message.body
    assert "fertility" not in message.body.lower()
    assert message.requested_by_user_id == world.coordinator_id
    assert message.status.value == "sent"  # the dispatcher was woken after the commit
    [event] = audit_events(db, "education.assigned")
    assert event.patient_id == world.maya_id
    assert event.detail == {"reader": "patient", "due": True, "texted": True, "text_refused": False}

    listed = plain(browser.get(f"/patients/{world.maya_id}/education").text)
    maya = listed.split("Maya Johnson, the patient")[1].split("Assign a module to Maya")[0]
    assert "Fertility: keeping your chance to have children Not started" in maya
    assert "Due Dec 15, 2026" in maya
    assert "By Morgan Reyes on" in maya and "link texted" in maya


def test_without_consent_the_reading_is_assigned_but_no_text_is_queued(
    db: Database, world: World, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    response = browsers(COORDINATOR_MD).post(
        f"/patients/{world.maya_id}/education",
        {"reader": str(world.maya_user_id), "module_key": "warning-signs", "send_text": "yes"},
        htmx=htmx,
    )

    assert response.status_code == 200
    page = plain(check_shape(response, htmx=htmx, block_id="patient-education"))
    assert "is assigned to Maya Johnson" in page
    assert "No text was sent: This number never agreed to get texts. Record consent first." in page
    assert outbox(db) == []
    [assignment] = assignments(db)
    assert assignment.message_id is None and assignment.due_on is None
    [event] = audit_events(db, "education.assigned")
    assert event.detail == {
        "reader": "patient",
        "due": False,
        "texted": False,
        "text_refused": True,
    }


def test_outside_texting_hours_the_text_is_refused_with_the_hours(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_phone(db, clock, world.maya_phone)
    clock.set(datetime(2026, 11, 28, 3, 0, tzinfo=UTC))  # 22:00 in Baltimore
    browser = browsers(COORDINATOR_MD)
    response = browser.post(
        f"/patients/{world.maya_id}/education",
        {"reader": str(world.maya_user_id), "module_key": "warning-signs", "send_text": "yes"},
    )
    assert response.status_code == 200
    assert "It is outside texting hours (8:00-21:00)" in plain(response.text)
    assert outbox(db) == []


def test_a_caregiver_gets_the_text_at_their_own_number_in_their_language(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_phone(db, clock, world.rosa_phone)
    browser = browsers(COORDINATOR_CO)
    page = plain(browser.get(f"/patients/{world.andre_id}/education").text)
    caregiver_part = page.split("Assign a module to Rosa García")[1]
    # Modules for caregivers are offered to her; none only for patients.
    assert "What gene therapy is, and what it is not" in caregiver_part

    response = browser.post(
        f"/patients/{world.andre_id}/education",
        {"reader": str(world.rosa_user_id), "module_key": "the-journey", "send_text": "yes"},
    )

    assert response.status_code == 200
    [message] = outbox(db)
    assert message.to_phone == world.rosa_phone
    assert message.caregiver_id is not None and message.language == "es"
    assert message.body == reading_text(
        program=world.co_program, public_base_url=BASE_URL, language="es"
    )
    assert "PARAR" in message.body and "/learn" in message.body
    [assignment] = assignments(db)
    assert (assignment.user_id, assignment.patient_id) == (world.rosa_user_id, world.andre_id)


def test_a_caregiver_without_the_reminders_right_for_this_patient_is_not_texted(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    # Denise is also the aunt of another Maryland patient, without the right to get texts
    # about her: the dispatcher would drop such a text, so it is refused at once.
    opt_in_phone(db, clock, world.denise_phone)
    with db.factory() as session:
        denise = user_by_login(session, CAREGIVER_MD)
        link = session.scalar(
            select(CaregiverLink).where(
                CaregiverLink.caregiver_id == denise.caregiver_id,
                CaregiverLink.can_receive_reminders.is_(False),
            )
        )
        assert link is not None
        niece = link.patient_id
    response = browsers(COORDINATOR_MD).post(
        f"/patients/{niece}/education",
        {"reader": str(world.denise_user_id), "module_key": "warning-signs", "send_text": "yes"},
    )
    assert response.status_code == 200
    assert "This caregiver does not get texts about this patient" in plain(response.text)
    assert outbox(db) == []
    assert [(a.user_id, a.patient_id) for a in assignments(db)] == [(world.denise_user_id, niece)]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"module_key": "for-caregivers"}, "This module is not offered to this reader."),
        ({"module_key": "casgevy-what-to-know"}, "This module is not offered to this reader."),
        ({"module_key": "state-support"}, "This module is not offered to this reader."),
        ({"module_key": ""}, "Choose a module."),
        (
            {"module_key": "warning-signs", "due_on": "2026-11-26"},
            "The due date cannot be in the past.",
        ),
        ({"module_key": "warning-signs", "due_on": "someday"}, "Enter a real date"),
        ({"reader": "999999", "module_key": "warning-signs"}, "Choose who should read it."),
        ({"reader": "", "module_key": "warning-signs"}, "Choose who should read it."),
    ],
)
def test_a_wrong_assignment_is_refused_and_nothing_is_saved(
    db: Database,
    world: World,
    browsers: Callable[[str], Browser],
    htmx: bool,
    form: dict[str, str],
    message: str,
) -> None:
    # Maya (Lyfgenia, Maryland, no funding): a caregivers' module, the other therapy's and an
    # unfunded one are not hers to read.
    response = browsers(COORDINATOR_MD).post(
        f"/patients/{world.maya_id}/education",
        {"reader": str(world.maya_user_id), "send_text": "yes", **form},
        htmx=htmx,
    )

    assert response.status_code == 400
    assert message in plain(check_shape(response, htmx=htmx, block_id="patient-education"))
    assert assignments(db) == [] and outbox(db) == []


def test_a_funded_module_may_be_assigned_while_its_window_is_open(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    with transaction(db.factory) as session:
        session.add(
            ModuleFunding(
                state_id=world.md_id,
                module_key="state-support",
                funded_from=date(2026, 1, 1),
                funded_until=None,
                created_at=clock.now(),
            )
        )
    browser = browsers(COORDINATOR_MD)
    assert (
        "Help your state program may offer"
        in browser.get(f"/patients/{world.maya_id}/education").text
    )
    response = browser.post(
        f"/patients/{world.maya_id}/education",
        {"reader": str(world.maya_user_id), "module_key": "state-support"},
    )
    assert response.status_code == 200
    assert [a.module_key for a in assignments(db)] == ["state-support"]


def test_another_states_coordinator_gets_404_and_an_analyst_403(
    db: Database, world: World, browsers: Callable[[str], Browser]
) -> None:
    other = browsers(COORDINATOR_CO)
    assert other.get(f"/patients/{world.maya_id}/education").status_code == 404
    posted = other.post(
        f"/patients/{world.maya_id}/education",
        {"reader": str(world.maya_user_id), "module_key": "warning-signs"},
    )
    assert posted.status_code == 404
    analyst = browsers(ANALYST)
    assert analyst.get(f"/patients/{world.maya_id}/education").status_code == 403
    assert assignments(db) == []
    assert audit_events(db, "patient.read") == []


# --- one patient's readings -----------------------------------------------------------------


def _progress(
    user_id: int, key: str, section: str, done: list[str], at: datetime
) -> ModuleProgress:
    return ModuleProgress(
        user_id=user_id,
        module_key=key,
        module_version=1,
        current_section=section,
        sections_done=done,
        started_at=at - timedelta(days=1),
        updated_at=at,
    )


def _completion(
    user_id: int, key: str, *, state_id: int, role: str, at: datetime, patient_id: int | None
) -> ModuleCompletion:
    return ModuleCompletion(
        user_id=user_id,
        module_key=key,
        module_version=1,
        score=4,
        questions=5,
        completed_at=at,
        state_id=state_id,
        reader_role=role,
        patient_id=patient_id,
    )


def test_the_patient_page_shows_progress_and_completions_and_a_caregivers_own(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    journey = shipped_modules().get("the-journey")
    assert journey is not None
    ids = journey.section_ids
    earlier = T0 - timedelta(days=2)
    with transaction(db.factory) as session:
        session.add_all(
            [
                _progress(world.maya_user_id, "the-journey", ids[2], list(ids[:2]), earlier),
                _completion(
                    world.maya_user_id,
                    "warning-signs",
                    state_id=world.md_id,
                    role="patient",
                    at=earlier,
                    patient_id=world.maya_id,
                ),
                _progress(
                    world.denise_user_id,
                    "for-caregivers",
                    "x",
                    ["a", "b", "c", "d", "e"],
                    earlier,
                ),
                _completion(
                    world.denise_user_id,
                    "fertility",
                    state_id=world.md_id,
                    role="caregiver",
                    at=earlier,
                    patient_id=None,
                ),
            ]
        )
    browser = browsers(COORDINATOR_MD)

    response = browser.get(f"/patients/{world.maya_id}/education", htmx=htmx)

    assert response.status_code == 200
    page = plain(check_shape(response, htmx=htmx, block_id="patient-education"))
    maya, denise = page.split("Denise Johnson, caregiver (mother): their own reading")
    maya = maya.split("Maya Johnson, the patient")[1].split("Assign a module to Maya")[0]
    assert "The journey: from collecting your cells to going home Reading" in maya
    assert f"Section 3 of {len(ids)}" in maya
    assert "Warning signs: when to call for help Completed" in maya
    assert "Version 1: 4 of 5 right at the first try, Nov 25, 2026" in maya
    assert "For caregivers" not in maya and "Fertility" not in maya
    assert "For caregivers: how to help, and how proxy access works Reading" in denise
    assert "Fertility: keeping your chance to have children Completed" in denise
    assert "The journey" not in denise.split("Assign a module")[0]
    # Denise also helps a Casgevy patient: Maya's page (Lyfgenia) offers her only what fits Maya.
    choices = denise.split("Assign a module to Denise Johnson")[1]
    assert "Lyfgenia: what to know" in choices and "Casgevy" not in choices
    [read] = audit_events(db, "patient.read")
    assert (read.patient_id, read.target) == (world.maya_id, "patient_education")
    # The record links to the page.
    assert (
        f'href="/patients/{world.maya_id}/education"'
        in browser.get(f"/patients/{world.maya_id}").text
    )


def test_a_completed_module_read_again_shows_the_new_reading(
    db: Database, world: World, browsers: Callable[[str], Browser]
) -> None:
    # Progress from before the completion is the completed reading, not a new one.
    with transaction(db.factory) as session:
        session.add_all(
            [
                _progress(world.maya_user_id, "warning-signs", "x", [], T0 - timedelta(days=3)),
                _completion(
                    world.maya_user_id,
                    "warning-signs",
                    state_id=world.md_id,
                    role="patient",
                    at=T0 - timedelta(days=2),
                    patient_id=world.maya_id,
                ),
            ]
        )
    page = plain(browsers(COORDINATOR_MD).get(f"/patients/{world.maya_id}/education").text)
    assert "Warning signs: when to call for help Completed" in page
    assert "Section" not in page.split("Warning signs")[1].split("Assign a module")[0]


# --- a state's reach -----------------------------------------------------------------------


SMALL = "<11"
HIDDEN = "*"


def _readers(session: Session, state: State, role: str, count: int, tag: str) -> list[User]:
    """`count` fresh logins of `role` in `state` (patients get a record of their own)."""
    template = session.scalar(select(Patient).where(Patient.state_id == state.id).limit(1))
    assert template is not None
    users = []
    for index in range(count):
        if role == "patient":
            person = Patient(
                state_id=state.id,
                therapy_id=template.therapy_id,
                center_id=template.center_id,
                medicaid_id=f"{state.code}9{tag}{index:05d}",
                given_name="Reader",
                family_name=f"{tag}{index}",
                birth_date=date(2005, 1, 1),
                preferred_language=Language.EN,
                time_zone=state.time_zone,
                status=template.status,
                created_at=T0,
                updated_at=T0,
            )
            session.add(person)
            session.flush()
            user = User(
                display_name=person.full_name,
                role=Role.PATIENT,
                patient_id=person.id,
                preferred_language=Language.EN,
                created_at=T0,
            )
        else:
            caregiver = Caregiver(
                given_name="Helper",
                family_name=f"{tag}{index}",
                preferred_language=Language.EN,
                time_zone=state.time_zone,
                created_at=T0,
            )
            session.add(caregiver)
            session.flush()
            user = User(
                display_name=caregiver.full_name,
                role=Role.CAREGIVER,
                caregiver_id=caregiver.id,
                preferred_language=Language.EN,
                created_at=T0,
            )
        session.add(user)
        users.append(user)
    session.flush()
    return users


# Maryland's true counts in 2026 (module, month, readers): what the tests derive from.
MD_COUNTS = {
    ("warning-signs", 1, "patient"): 3,
    ("warning-signs", 2, "patient"): 25,
    ("warning-signs", 3, "patient"): 14,
    ("the-journey", 1, "patient"): 12,
    ("the-journey", 3, "patient"): 1,
    ("fertility", 2, "patient"): 30,
    ("fertility", 3, "patient"): 22,
    ("for-caregivers", 3, "caregiver"): 2,
    ("fertility", 2, "caregiver"): 13,
}


def _add_reach(db: Database, world: World) -> None:
    with transaction(db.factory) as session:
        maryland = session.get(State, world.md_id)
        colorado = session.get(State, world.co_id)
        assert maryland is not None and colorado is not None
        for (key, month, role), count in MD_COUNTS.items():
            for user in _readers(session, maryland, role, count, f"{key[:4]}{month}{role[0]}"):
                # 02:00 UTC on the 1st is still the previous month in Baltimore: the state's
                # calendar decides, so these are put at noon local time.
                at = datetime(2026, month, 1, 17, 0, tzinfo=UTC)
                session.add(
                    _completion(
                        user.id,
                        key,
                        state_id=maryland.id,
                        role=role,
                        at=at,
                        patient_id=user.patient_id,
                    )
                )
        # A reader who completed a new version later is counted once, at the first time.
        first = session.scalar(
            select(ModuleCompletion)
            .where(
                ModuleCompletion.module_key == "warning-signs",
                ModuleCompletion.completed_at == datetime(2026, 2, 1, 17, 0, tzinfo=UTC),
            )
            .limit(1)
        )
        assert first is not None
        again = _completion(
            first.user_id,
            "warning-signs",
            state_id=maryland.id,
            role="patient",
            at=datetime(2026, 3, 10, 17, 0, tzinfo=UTC),
            patient_id=first.patient_id,
        )
        again.module_version = 2
        session.add(again)
        # Colorado's readers never show in Maryland's figures.
        for user in _readers(session, colorado, "patient", 40, "co"):
            session.add(
                _completion(
                    user.id,
                    "warning-signs",
                    state_id=colorado.id,
                    role="patient",
                    at=datetime(2026, 2, 1, 17, 0, tzinfo=UTC),
                    patient_id=user.patient_id,
                )
            )


def _true(key: str, month: str, readers: str) -> int:
    """The true count behind a CSV line (month "total" / module "total" sum up)."""
    return sum(
        count
        for (k, m, role), count in MD_COUNTS.items()
        if role == readers
        and (key == "total" or k == key)
        and (month == "total" or f"2026-{m:02d}" == month)
    )


def _check_published(value: str, true: int) -> None:
    if true == 0:
        assert value == "0"
    elif true < 11:
        assert value == SMALL, f"a count of {true} was published as {value}"
    else:
        assert value in (str(true), HIDDEN), (true, value)


def test_the_reach_csv_never_shows_a_count_from_1_to_10_even_through_totals(
    db: Database, world: World, browsers: Callable[[str], Browser]
) -> None:
    _add_reach(db, world)
    response = browsers(ANALYST).get(f"/education/reach.csv?state={world.md_id}&year=2026")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="education-reach-MD-2026.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows and {row["state"] for row in rows} == {"MD"}
    assert {row["year"] for row in rows} == {"2026"}
    # Every month of 2026 up to November (the clock's month).
    months = sorted({row["month"] for row in rows} - {"total"})
    assert months == [f"2026-{m:02d}" for m in range(1, 12)]
    for row in rows:
        value = row["completed"]
        assert value in (SMALL, HIDDEN) or (value.isdigit() and not 1 <= int(value) <= 10)
        _check_published(value, _true(row["module"], row["month"], row["readers"]))

    # No line (a module's months and its total, a month's modules and its total, the totals
    # and the grand total) hides exactly one figure: none can be had by subtraction.
    lines: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        lines.setdefault(("module", row["readers"], row["module"]), []).append(row["completed"])
        lines.setdefault(("month", row["readers"], row["month"]), []).append(row["completed"])
    for name, values in lines.items():
        hidden = sum(1 for value in values if value in (SMALL, HIDDEN))
        assert hidden != 1, (name, values)

    by = {(r["readers"], r["module"], r["month"]): r["completed"] for r in rows}
    # Counted once per reader and module: the re-read of version 2 is not in March.
    assert by["patient", "warning-signs", "2026-02"] in ("25", HIDDEN)
    assert by["patient", "warning-signs", "total"] in ("42", HIDDEN)
    assert by["patient", "fertility", "2026-02"] == "30"
    assert by["caregiver", "for-caregivers", "2026-03"] == SMALL
    # Colorado's 40 readers are nowhere in Maryland's figures.
    assert "40" not in {row["completed"] for row in rows}
    [export] = audit_events(db, "education.reach_export")
    assert export.target == "state:MD"


def test_the_reach_page_shows_the_same_suppressed_figures(
    db: Database, world: World, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    _add_reach(db, world)
    browser = browsers(COORDINATOR_MD)

    response = browser.get(f"/education/reach?state={world.md_id}&year=2026", htmx=htmx)

    assert response.status_code == 200
    page = check_shape(response, htmx=htmx, block_id="reach")
    cells = [plain(cell) for cell in re.findall(r"<td>(.*?)</td>", page, flags=re.S)]
    assert cells
    for shown in cells:
        assert shown in (SMALL, HIDDEN) or (shown.isdigit() and not 1 <= int(shown) <= 10), shown
    csv_rows = list(
        csv.DictReader(
            io.StringIO(browser.get(f"/education/reach.csv?state={world.md_id}&year=2026").text)
        )
    )
    # The page's cells are the CSV's: months down (each with its total), modules across,
    # then the modules' totals and the grand total.
    by = {(r["readers"], r["module"], r["month"]): r["completed"] for r in csv_rows}
    modules = {
        kind: [r["module"] for r in csv_rows if r["readers"] == kind]
        for kind in ("patient", "caregiver")
    }
    expected = []
    for kind in ("patient", "caregiver"):
        keys = list(dict.fromkeys(k for k in modules[kind] if k != "total"))
        for month in [f"2026-{m:02d}" for m in range(1, 12)] + ["total"]:
            expected += [by[kind, key, month] for key in keys] + [by[kind, "total", month]]
    assert cells == expected
    text = plain(page)
    assert "Patients who completed" in text and "Caregivers who completed" in text
    assert "Maryland, 2026" in text
    assert f'href="/education/reach.csv?state={world.md_id}&amp;year=2026"' in page
    assert len(audit_events(db, "education.reach")) == 1


def test_an_analyst_of_another_state_sees_nothing_of_this_state(
    db: Database, world: World, app: FastAPI, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    _add_reach(db, world)
    with transaction(db.factory) as session:
        session.add(
            User(
                login="analyst.co@demo.cgt-access.test",
                display_name="Casey Colorado",
                role=Role.STATE_ANALYST,
                password_hash=user_by_login(session, ANALYST).password_hash,
                preferred_language=Language.EN,
                totp_secret=STAFF_TOTP_SECRET,
                totp_enabled_at=T0,
                created_at=T0,
                state_scopes=[UserStateScope(state_id=world.co_id)],
            )
        )
    for login in ("analyst.co@demo.cgt-access.test", COORDINATOR_CO):
        browser = browsers(login)
        for url in (
            f"/education/reach?state={world.md_id}",
            f"/education/reach.csv?state={world.md_id}",
            f"/education/reach?state={world.md_id}&year=2026",
        ):
            response = browser.get(url)
            assert response.status_code == 404, (login, url)
            assert "Maryland" not in response.text
        own = browser.get("/education/reach?year=2026")
        assert own.status_code == 200
        assert "Colorado, 2026" in plain(own.text) and "Maryland" not in own.text
        rows = list(csv.DictReader(io.StringIO(browser.get("/education/reach.csv").text)))
        assert {row["state"] for row in rows} == {"CO"}
        by = {(r["readers"], r["module"], r["month"]): r["completed"] for r in rows}
        assert by["patient", "warning-signs", "2026-02"] == "40"
    with db.factory() as session:
        exported = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "education.reach_export", AuditEvent.target == "state:MD")
        )
    assert exported == 0


@pytest.mark.parametrize("login", [PATIENT_MD, CAREGIVER_MD, ADMIN])
def test_patients_caregivers_and_admins_do_not_see_reach(
    browsers: Callable[[str], Browser], login: str
) -> None:
    browser = browsers(login)
    assert browser.get("/education/reach").status_code == 403
    assert browser.get("/education/reach.csv").status_code == 403


def test_the_navigation_leads_staff_to_their_education_page(
    browsers: Callable[[str], Browser],
) -> None:
    assert 'href="/education/reach"' in browsers(ANALYST).get("/account").text
    assert 'href="/education/reach"' in browsers(COORDINATOR_MD).get("/account").text
    assert 'href="/admin/education"' in browsers(ADMIN).get("/account").text


def test_a_completion_counts_in_the_month_of_the_states_calendar(
    db: Database, world: World, clock: FrozenClock
) -> None:
    with transaction(db.factory) as session:
        maryland = session.get(State, world.md_id)
        assert maryland is not None
        [reader] = _readers(session, maryland, "patient", 1, "tz")
        # 02:00 UTC on April 1st is 22:00 on March 31st in Baltimore.
        session.add(
            _completion(
                reader.id,
                "warning-signs",
                state_id=maryland.id,
                role="patient",
                at=datetime(2026, 4, 1, 2, 0, tzinfo=UTC),
                patient_id=reader.patient_id,
            )
        )
    with db.factory() as session:
        maryland = session.get(State, world.md_id)
        assert maryland is not None
        reach = state_reach(
            session,
            clock=clock,
            state=maryland,
            year=2026,
            library=shipped_modules(),
            language="en",
        )
    rows = list(csv.DictReader(io.StringIO(reach_csv(reach))))
    by = {(r["readers"], r["module"], r["month"]): r["completed"] for r in rows}
    assert by["patient", "warning-signs", "2026-03"] == SMALL
    assert by["patient", "warning-signs", "2026-04"] == "0"
    assert reach.years == (2026,)
