"""A patient's text messages, as coordinators see and use them: consent per number with its
history, recording a consent given by phone, clearing a provider's flag, sending an
approved one-off text or a reminder now (refused with a reason outside consent or texting
hours), "send reminder now" from the worklist, replies on the page and in the timeline,
scope, roles and the audit of reads. On SQLite and PostgreSQL; pages as a whole and as
an htmx block."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import sync_schedule
from coordination.texting.consent import (
    OPT_IN_WORDING,
    consent_history,
    flag_number,
    opt_in,
    opt_out,
)
from coordination.texting.inbound import handle_inbound
from coordination.texting.models import (
    ConsentAction,
    ConsentHow,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    SmsConsent,
    SmsConsentEvent,
)
from coordination.texting.words import ONE_OFF, render
from coordination.worklist.texts_page import opt_in_wording
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import Caregiver, CaregiverLink, Patient, State
from core.phones import display_phone
from tests.conftest import (
    ANALYST,
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    Browser,
    Database,
    plain,
    user_by_login,
)

PORTAL_WORDING = "I agree to get visit reminders by text. Reply STOP to stop."


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    """Run a page test as a plain browser request and as an htmx partial request."""
    return bool(request.param)


# --- the world -------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    maya_id: int
    maya_phone: str
    denise_phone: str  # Maya's mother: gets Maya's reminders
    andre_id: int  # Colorado
    maya_user_id: int
    coordinator_id: int
    program: str
    program_phone: str


@pytest.fixture
def world(db: Database) -> World:
    with db.factory() as session:
        maya_user = user_by_login(session, PATIENT_MD)
        maya = session.get(Patient, maya_user.patient_id)
        andre = session.get(Patient, user_by_login(session, PATIENT_CO).patient_id)
        denise = session.get(Caregiver, user_by_login(session, CAREGIVER_MD).caregiver_id)
        assert maya is not None and andre is not None and denise is not None
        assert maya.mobile_phone and denise.mobile_phone
        return World(
            maya_id=maya.id,
            maya_phone=maya.mobile_phone,
            denise_phone=denise.mobile_phone,
            andre_id=andre.id,
            maya_user_id=maya_user.id,
            coordinator_id=user_by_login(session, COORDINATOR_MD).id,
            program=maya.state.program_name,
            program_phone=display_phone(maya.state.program_phone),
        )


def opt_in_by_portal(db: Database, clock: FrozenClock, phone: str, user_id: int) -> None:
    with transaction(db.factory) as session:
        opt_in(
            session,
            clock=clock,
            phone=phone,
            how=ConsentHow.PORTAL,
            by_user_id=user_id,
            wording=PORTAL_WORDING,
        )


def give_schedules(db: Database, clock: FrozenClock, *patient_ids: int) -> None:
    with transaction(db.factory) as session:
        for patient_id in patient_ids:
            patient = session.get(Patient, patient_id)
            assert patient is not None
            sync_schedule(
                session,
                clock=clock,
                actor=Actor.system("test"),
                library=shipped_protocols(),
                patient=patient,
            )


def outbox(db: Database) -> list[OutboundMessage]:
    with db.factory() as session:
        return list(session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


def audit_actions(db: Database, after: int = 0) -> list[AuditEvent]:
    with db.factory() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id))
        )


def last_audit_id(db: Database) -> int:
    with db.factory() as session:
        return session.scalar(select(func.max(AuditEvent.id))) or 0


def section(page: str, heading_id: str) -> str:
    """The text of the card whose heading has this id (up to the next card)."""
    start = page.index(f'id="{heading_id}"')
    end = page.find('<section class="card"', start)
    return plain(page[start : end if end >= 0 else len(page)])


def number_card(page: str, phone: str) -> str:
    """The text of one number's card on the texts page."""
    shown = html.escape(display_phone(phone))
    start = page.index(f"{shown}:")
    end = page.find("</article>", start)
    return plain(page[start:end])


def check_shape(response: httpx.Response, *, htmx: bool) -> str:
    if htmx:
        assert "<html" not in response.text, "an htmx request got the whole page"
        assert response.text.lstrip().startswith('<div id="texts">')
    else:
        assert "<html" in response.text
        assert "<h1>" in response.text
    return response.text


# --- seeing consent ----------------------------------------------------------------------


def test_a_coordinator_sees_each_numbers_consent_and_its_history(
    db: Database,
    world: World,
    clock: FrozenClock,
    browsers: Callable[[str], Browser],
    htmx: bool,
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    clock.advance(timedelta(hours=1))
    with transaction(db.factory) as session:
        opt_out(session, clock=clock, phone=world.maya_phone, how=ConsentHow.SMS_KEYWORD)
    browser = browsers(COORDINATOR_MD)

    response = browser.get(f"/patients/{world.maya_id}/texts", htmx=htmx)

    assert response.status_code == 200
    page = check_shape(response, htmx=htmx)
    maya = number_card(page, world.maya_phone)
    assert "Maya Johnson (patient)" in maya
    assert "Consent Opted out" in maya
    # Newest first: the STOP, then the portal opt-in with who and the wording shown.
    assert maya.index("Stopped texts") < maya.index("Agreed to get texts")
    assert "By text message (a keyword)" in maya
    assert "In the portal" in maya
    assert "Maya Johnson" in maya.split("In the portal", 1)[1]
    assert PORTAL_WORDING in maya
    denise = number_card(page, world.denise_phone)
    assert "Denise Johnson (mother)" in denise
    assert "Consent Never asked" in denise
    assert "No consent was ever recorded for this number." in denise
    # The wording to read out, in the person's language, filled with the program's details.
    assert opt_in_wording_for(db, world.maya_id, "en") in denise


def opt_in_wording_for(db: Database, patient_id: int, language: str) -> str:
    with db.factory() as session:
        patient = session.get(Patient, patient_id)
        assert patient is not None
        return opt_in_wording(patient.state, language)


def test_the_wording_read_out_is_the_one_every_consent_box_shows(
    db: Database, world: World
) -> None:
    english = opt_in_wording_for(db, world.maya_id, "en")
    spanish = opt_in_wording_for(db, world.maya_id, "es")
    assert english == OPT_IN_WORDING["en"].format(program=world.program)
    assert spanish == OPT_IN_WORDING["es"].format(program=world.program)
    assert "STOP" in english and "Msg & data rates may apply" in english
    assert "PARAR" in spanish
    # Anything else (an unknown language) reads the English.
    assert opt_in_wording_for(db, world.maya_id, "fr") == english


def test_a_spanish_speaking_caregiver_is_read_the_spanish_wording(
    db: Database, world: World, browsers: Callable[[str], Browser]
) -> None:
    with db.factory() as session:
        rosa = session.scalar(select(Caregiver).where(Caregiver.given_name == "Rosa"))
        assert rosa is not None and rosa.mobile_phone
        rosa_phone = rosa.mobile_phone
    browser = browsers(COORDINATOR_CO)
    page = browser.get(f"/patients/{world.andre_id}/texts").text
    spanish = opt_in_wording_for(db, world.andre_id, "es")
    assert spanish in number_card(page, rosa_phone)
    assert f'lang="es">{html.escape(spanish)}</blockquote>' in page

    response = browser.post(
        f"/patients/{world.andre_id}/texts/consent", {"phone": rosa_phone, "decision": "opt_in"}
    )

    assert response.status_code == 303
    with db.factory() as session:
        [event] = consent_history(session, phone=rosa_phone)
    assert event.wording == spanish


def test_reading_the_page_is_audited_like_reading_the_record(
    db: Database, world: World, browsers: Callable[[str], Browser]
) -> None:
    browser = browsers(COORDINATOR_MD)
    before = last_audit_id(db)

    assert browser.get(f"/patients/{world.maya_id}/texts").status_code == 200

    reads = [event for event in audit_actions(db, before) if event.action == "patient.read"]
    assert [(e.patient_id, e.target, e.actor_user_id) for e in reads] == [
        (world.maya_id, "patient_texts", world.coordinator_id)
    ]


def test_the_record_page_links_to_the_texts_and_says_the_consent_in_one_line(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    browser = browsers(COORDINATOR_MD)

    record = browser.get(f"/patients/{world.maya_id}")

    assert record.status_code == 200
    line = re.search(r'<p id="texting-summary">(.*?)</p>', record.text, re.S)
    assert line is not None
    assert plain(line.group(1)) == (
        "Texts: Maya Johnson: Opted in · Denise Johnson: Never asked · Text messages and consent"
    )
    assert f'href="/patients/{world.maya_id}/texts"' in line.group(1)


# --- recording consent, clearing a flag ---------------------------------------------------


def test_a_coordinator_records_a_consent_given_by_phone_with_the_wording_read_out(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    browser = browsers(COORDINATOR_MD)
    before = last_audit_id(db)

    response = browser.post(
        f"/patients/{world.maya_id}/texts/consent",
        {"phone": world.denise_phone, "decision": "opt_in"},
        htmx=htmx,
    )

    expected = f"/patients/{world.maya_id}/texts?done=opted_in"
    if htmx:
        assert response.status_code == 204
        assert response.headers["HX-Redirect"] == expected
    else:
        assert response.status_code == 303
        assert response.headers["location"] == expected
    with db.factory() as session:
        history = consent_history(session, phone=world.denise_phone)
    assert [(e.action, e.how, e.by_user_id) for e in history] == [
        (ConsentAction.OPT_IN, ConsentHow.COORDINATOR, world.coordinator_id)
    ]
    assert history[0].wording == opt_in_wording_for(db, world.maya_id, "en")
    events = [e for e in audit_actions(db, before) if e.action == "sms.consent"]
    assert [(e.patient_id, e.detail) for e in events] == [
        (world.maya_id, {"action": "opt_in", "holder": "caregiver"})
    ]
    page = browser.get(expected).text
    assert "The consent is recorded: texts may go to this number." in plain(page)
    denise = number_card(page, world.denise_phone)
    assert "Consent Opted in" in denise
    assert "Recorded by a coordinator (by phone or on paper)" in denise
    assert "Morgan Reyes" in denise  # who recorded it


def test_a_coordinator_records_an_opt_out_and_nothing_else_changes(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    browser = browsers(COORDINATOR_MD)

    response = browser.post(
        f"/patients/{world.maya_id}/texts/consent",
        {"phone": world.maya_phone, "decision": "opt_out"},
    )

    assert response.status_code == 303
    with db.factory() as session:
        history = consent_history(session, phone=world.maya_phone)
        denise = session.scalar(select(SmsConsent).where(SmsConsent.phone == world.denise_phone))
    assert [(e.action, e.how) for e in history] == [
        (ConsentAction.OPT_IN, ConsentHow.PORTAL),
        (ConsentAction.OPT_OUT, ConsentHow.COORDINATOR),
    ]
    assert history[1].by_user_id == world.coordinator_id
    assert denise is None
    assert "Consent Opted out" in number_card(
        browser.get(f"/patients/{world.maya_id}/texts").text, world.maya_phone
    )


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"phone": "+13035550161", "decision": "opt_in"}, "This number is not on the patient"),
        ({"phone": "+14105550160", "decision": "maybe"}, "Choose whether the person agreed"),
        ({}, "Choose whether the person agreed"),
    ],
    ids=["another patients number", "no decision", "empty form"],
)
def test_a_consent_for_a_number_not_on_the_record_is_refused(
    db: Database,
    world: World,
    browsers: Callable[[str], Browser],
    form: dict[str, str],
    message: str,
) -> None:
    response = browsers(COORDINATOR_MD).post(f"/patients/{world.maya_id}/texts/consent", form)

    assert response.status_code == 400
    assert message in plain(response.text)
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(SmsConsentEvent)) == 0


def test_a_coordinator_clears_a_flag_from_a_permanent_error(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    with transaction(db.factory) as session:
        flag_number(session, clock=clock, phone=world.maya_phone, code="21614")
    browser = browsers(COORDINATOR_MD)
    card = number_card(browser.get(f"/patients/{world.maya_id}/texts").text, world.maya_phone)
    assert "Texts failed for good" in card
    assert "(error 21614)" in card
    before = last_audit_id(db)

    response = browser.post(
        f"/patients/{world.maya_id}/texts/flag", {"phone": world.maya_phone}, htmx=htmx
    )

    assert response.status_code == (204 if htmx else 303)
    with db.factory() as session:
        consent = session.scalar(select(SmsConsent).where(SmsConsent.phone == world.maya_phone))
    assert consent is not None and consent.problem_code is None and consent.problem_at is None
    assert [e.action for e in audit_actions(db, before)] == ["sms.clear_flag"]
    page = browser.get(f"/patients/{world.maya_id}/texts?done=flag_cleared").text
    assert "The flag is cleared" in plain(page)
    assert "Texts failed for good" not in number_card(page, world.maya_phone)

    again = browser.post(f"/patients/{world.maya_id}/texts/flag", {"phone": world.maya_phone})
    assert again.status_code == 400
    assert "This number has no flag to clear." in plain(again.text)


# --- sending --------------------------------------------------------------------------


def test_the_form_offers_each_approved_message_in_the_patients_language(
    db: Database, world: World, browsers: Callable[[str], Browser]
) -> None:
    page = browsers(COORDINATOR_MD).get(f"/patients/{world.maya_id}/texts").text
    offered = set(re.findall(r'name="template" value="(\w+)"', page))
    assert offered == set(ONE_OFF)
    shown = section(page, "send-title")
    for template in ONE_OFF.values():
        text = render(template, "en", program=world.program, phone=world.program_phone)
        assert text in shown
    assert '<label class="checkbox" for="template-call_us">' in page


def test_a_one_off_is_queued_for_each_opted_in_number_and_leaves_after_the_commit(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    opt_in_by_portal(db, clock, world.denise_phone, world.maya_user_id)
    browser = browsers(COORDINATOR_MD)

    response = browser.post(
        f"/patients/{world.maya_id}/texts/send", {"template": "call_us"}, htmx=htmx
    )

    assert response.status_code == 200
    page = check_shape(response, htmx=htmx)
    result = section(page, "outcome-title")
    assert "What happened: Message: Please call us" in result
    assert f"{display_phone(world.maya_phone)} Maya Johnson (patient) Queued" in result
    assert f"{display_phone(world.denise_phone)} Denise Johnson (mother) Queued" in result
    messages = outbox(db)
    body = render(ONE_OFF["call_us"], "en", program=world.program, phone=world.program_phone)
    assert [(m.to_phone, m.purpose, m.rule, m.body) for m in messages] == [
        (world.maya_phone, MessagePurpose.ONE_OFF, "call_us", body),
        (world.denise_phone, MessagePurpose.ONE_OFF, "call_us", body),
    ]
    # The console gateway sent them once the request had committed.
    assert [(m.status, m.provider) for m in messages] == [(MessageStatus.SENT, "console")] * 2
    assert {m.requested_by_user_id for m in messages} == {world.coordinator_id}
    listed = section(browser.get(f"/patients/{world.maya_id}/texts").text, "messages-title")
    assert listed.count("Sent: One-off message (Please call us)") == 2
    assert body in listed


def test_an_opted_out_or_never_asked_number_is_refused_with_its_reason_and_nothing_is_queued(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    with transaction(db.factory) as session:
        opt_out(session, clock=clock, phone=world.maya_phone, how=ConsentHow.SMS_KEYWORD)
    browser = browsers(COORDINATOR_MD)

    response = browser.post(
        f"/patients/{world.maya_id}/texts/send", {"template": "tried_to_call"}, htmx=htmx
    )

    assert response.status_code == 200
    result = section(check_shape(response, htmx=htmx), "outcome-title")
    assert (
        "Maya Johnson (patient) Refused This number opted out of texts (STOP). "
        "It cannot be texted." in result
    )
    assert (
        "Denise Johnson (mother) Refused This number never agreed to get texts. "
        "Record consent first." in result
    )
    assert "Queued" not in result
    assert outbox(db) == []


def test_outside_texting_hours_nothing_is_queued_and_the_reason_is_shown(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    give_schedules(db, clock, world.maya_id)
    clock.set(datetime(2026, 11, 28, 1, 45, tzinfo=UTC))  # 20:45 in Baltimore
    browser = browsers(COORDINATOR_MD)
    clock.advance(timedelta(minutes=20))  # past 21:05: texting hours are over

    one_off = browser.post(f"/patients/{world.maya_id}/texts/send", {"template": "call_us"})
    remind = browser.post(f"/patients/{world.maya_id}/texts/remind", {})

    for response in (one_off, remind):
        assert response.status_code == 200
        result = section(response.text, "outcome-title")
        assert (
            "Maya Johnson (patient) Refused It is outside texting hours (8:00-21:00) where "
            "this person lives. Try later." in result
        )
    assert outbox(db) == []


def test_send_reminder_now_queues_a_reminder_of_the_next_visit(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    give_schedules(db, clock, world.maya_id)
    browser = browsers(COORDINATOR_MD)

    response = browser.post(f"/patients/{world.maya_id}/texts/remind", {}, htmx=htmx)

    assert response.status_code == 200
    result = section(check_shape(response, htmx=htmx), "outcome-title")
    assert "What happened: Reminder of the next visit" in result
    assert "Maya Johnson (patient) Queued" in result
    assert "Denise Johnson (mother) Refused This number never agreed" in result
    messages = outbox(db)
    assert [(m.to_phone, m.purpose, m.rule, m.status) for m in messages] == [
        (world.maya_phone, MessagePurpose.REMINDER, "manual", MessageStatus.SENT)
    ]
    assert messages[0].visit_id is not None


def test_a_reminder_without_a_visit_says_so(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)

    response = browsers(COORDINATOR_MD).post(f"/patients/{world.maya_id}/texts/remind", {})

    assert response.status_code == 200
    assert "There is no open visit to remind of: nothing was sent." in plain(response.text)
    assert outbox(db) == []


def test_an_unknown_template_is_refused(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    browser = browsers(COORDINATOR_MD)
    for form in ({"template": "free text of my own"}, {}):
        response = browser.post(f"/patients/{world.maya_id}/texts/send", form)
        assert response.status_code == 400
        assert "Choose one of the approved messages." in plain(response.text)
    assert outbox(db) == []


# --- scope and roles ---------------------------------------------------------------------


def test_a_coordinator_of_another_state_gets_404_and_changes_nothing(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    give_schedules(db, clock, world.maya_id)
    browser = browsers(COORDINATOR_CO)
    base = f"/patients/{world.maya_id}/texts"

    assert browser.get(base).status_code == 404
    for path, form in (
        ("/send", {"template": "call_us"}),
        ("/remind", {}),
        ("/consent", {"phone": world.maya_phone, "decision": "opt_out"}),
        ("/flag", {"phone": world.maya_phone}),
    ):
        assert browser.post(base + path, form).status_code == 404, path
    assert outbox(db) == []
    with db.factory() as session:
        assert len(consent_history(session, phone=world.maya_phone)) == 1
    # And their own patient's page opens.
    assert browser.get(f"/patients/{world.andre_id}/texts").status_code == 200


def test_an_analyst_may_neither_read_nor_post(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    browser = browsers(ANALYST)
    base = f"/patients/{world.maya_id}/texts"

    assert browser.get(base).status_code == 403
    for path, form in (
        ("/send", {"template": "call_us"}),
        ("/remind", {}),
        ("/consent", {"phone": world.denise_phone, "decision": "opt_in"}),
        ("/flag", {"phone": world.maya_phone}),
    ):
        assert browser.post(base + path, form).status_code == 403, path
    assert outbox(db) == []
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(SmsConsentEvent)) == 1


def test_a_post_without_the_csrf_token_is_refused(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    browser = browsers(COORDINATOR_MD)
    response = browser.client.post(
        f"/patients/{world.maya_id}/texts/send", data={"template": "call_us"}
    )
    assert response.status_code == 403
    assert outbox(db) == []


# --- the worklist's "send reminder now" ----------------------------------------------------


def _maryland_patients(session: Session) -> list[Patient]:
    return list(
        session.scalars(select(Patient).join(State).where(State.code == "MD").order_by(Patient.id))
    )


def test_send_reminder_now_from_the_worklist_queues_and_reports_each_refusal(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    with db.factory() as session:
        others = [p for p in _maryland_patients(session) if p.id != world.maya_id]
        kevin_link = session.scalar(
            select(CaregiverLink).join(Caregiver).where(Caregiver.given_name == "Kevin")
        )
        assert kevin_link is not None
        # Kevin's partner: Kevin does not get reminders, so only the patient's number counts.
        partner = session.get(Patient, kevin_link.patient_id)
        assert partner is not None and partner.mobile_phone
        partner_id, partner_name = partner.id, partner.full_name
        partner_phone = partner.mobile_phone
        # No schedule: nothing to remind of.
        idle = next(p for p in others if p.id != partner_id)
        idle_id, idle_name = idle.id, idle.full_name
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    opt_in_by_portal(db, clock, world.denise_phone, world.maya_user_id)
    give_schedules(db, clock, world.maya_id, partner_id)
    browser = browsers(COORDINATOR_MD)
    before = last_audit_id(db)

    response = browser.post(
        "/worklist/bulk",
        {"action": "remind", "patient": [str(world.maya_id), str(partner_id), str(idle_id)]},
        htmx=htmx,
    )

    assert response.status_code == 200
    notice = re.search(
        r'<div class="alert alert-info" role="status">(.*?)</div>', response.text, re.S
    )
    assert notice is not None
    text = plain(notice.group(1))
    assert text.startswith(
        "Reminders queued for 2 numbers. 1 refused: 1 patient has no visit to remind of."
    ), text
    assert (
        f"{partner_name}, {display_phone(partner_phone)} (patient): This number never agreed "
        "to get texts. Record consent first." in text
    )
    assert f"{idle_name}: no open visit to remind of" in text
    messages = outbox(db)
    assert sorted((m.to_phone, m.purpose, m.rule) for m in messages) == sorted(
        [
            (world.maya_phone, MessagePurpose.REMINDER, "manual"),
            (world.denise_phone, MessagePurpose.REMINDER, "manual"),
        ]
    )
    assert {m.patient_id for m in messages} == {world.maya_id}
    assert {m.status for m in messages} == {MessageStatus.SENT}
    remind_events = [e for e in audit_actions(db, before) if e.action == "sms.remind_now"]
    assert [e.target for e in remind_events] == [
        f"patient:{world.maya_id}",
        f"patient:{partner_id}",
    ]


def test_send_reminder_now_from_the_worklist_refuses_a_patient_out_of_scope(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    give_schedules(db, clock, world.maya_id, world.andre_id)
    browser = browsers(COORDINATOR_MD)

    response = browser.post(
        "/worklist/bulk",
        {"action": "remind", "patient": [str(world.maya_id), str(world.andre_id)]},
    )

    assert response.status_code == 400
    assert "Some of the chosen patients are not on your worklist." in plain(response.text)
    assert outbox(db) == []
    nothing = browser.post("/worklist/bulk", {"action": "remind"})
    assert nothing.status_code == 400
    assert "Choose at least one patient." in plain(nothing.text)


def test_send_reminder_now_from_the_worklist_reads_in_a_fixed_number_of_statements(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    with db.factory() as session:
        others = [p for p in _maryland_patients(session) if p.id != world.maya_id]
        chosen = [p.id for p in others]
        phones = {p.mobile_phone for p in others if p.mobile_phone} - {world.denise_phone}
    assert len(chosen) >= 3
    for phone in (world.maya_phone, *phones):
        opt_in_by_portal(db, clock, phone, world.maya_user_id)
    give_schedules(db, clock, world.maya_id, *chosen)
    browser = browsers(COORDINATOR_MD)
    browser.get("/worklist")  # warm: the login's first touch is not part of the action
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    counts = []
    for patients in ([world.maya_id], chosen):
        statements.clear()
        event.listen(db.engine, "before_cursor_execute", seen)
        try:
            response = browser.post(
                "/worklist/bulk", {"action": "remind", "patient": [str(p) for p in patients]}
            )
        finally:
            event.remove(db.engine, "before_cursor_execute", seen)
        assert response.status_code == 200
        assert "Reminders queued for" in plain(response.text)
        # One audit event per patient, as one patient at a time would write.
        audited = [s for s in statements if s.lstrip().startswith("INSERT INTO audit_events")]
        counts.append(len(statements) - len(audited))
    assert counts[0] == counts[1], counts


# --- replies, drops and deliveries: on the page and in the timeline -------------------------


def test_a_reply_shows_on_the_page_and_in_the_timeline_with_what_the_platform_made_of_it(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    opt_in_by_portal(db, clock, world.maya_phone, world.maya_user_id)
    with transaction(db.factory) as session:
        dropped = OutboundMessage(
            to_phone=world.maya_phone,
            body="A reminder that was not needed any more.",
            purpose=MessagePurpose.REMINDER,
            patient_id=world.maya_id,
            status=MessageStatus.DROPPED,
            drop_reason="the visit was completed",
            created_at=clock.now() - timedelta(hours=3),
            send_after=clock.now() - timedelta(hours=3),
            attempts=0,
        )
        delivered = OutboundMessage(
            to_phone=world.maya_phone,
            body="A reminder that arrived.",
            purpose=MessagePurpose.REMINDER,
            patient_id=world.maya_id,
            status=MessageStatus.DELIVERED,
            created_at=clock.now() - timedelta(hours=2),
            send_after=clock.now() - timedelta(hours=2),
            sent_at=clock.now() - timedelta(hours=2),
            attempts=1,
        )
        session.add_all([dropped, delivered])
        clock.advance(timedelta(minutes=5))
        handle_inbound(
            session,
            clock=clock,
            message_sid="SM" + "a" * 32,
            from_phone=world.maya_phone,
            to_phone="+12025550100",
            body="Can you call me after 5?",
        )
    browser = browsers(COORDINATOR_MD)

    page = section(browser.get(f"/patients/{world.maya_id}/texts").text, "messages-title")
    assert (
        f"Received From {display_phone(world.maya_phone)} Maya Johnson (patient) "
        "Can you call me after 5? Read as: A message for the care team "
        "Done: stored for the care team" in page
    )
    assert "Not sent Why: the visit was completed" in page
    assert "A reminder that arrived. Delivered" in page
    # Newest first: the reply above the texts sent before it.
    assert page.index("Can you call me after 5?") < page.index("A reminder that arrived.")

    record = browser.get(f"/patients/{world.maya_id}").text
    timeline = plain(record[record.index('id="timeline-title"') :])
    # It waits in the worklist's inbox for a person, and says so with a link to it.
    assert (
        "Text received: A message for the care team · Waiting for the care team "
        "Can you call me after 5? "
        f"From {display_phone(world.maya_phone)} · Done: stored for the care team" in timeline
    )
    assert "Why: the visit was completed" in timeline
    assert "Text: Reminder · Delivered" in timeline
    assert timeline.index("Can you call me after 5?") < timeline.index("A reminder that arrived.")


def test_a_reply_from_a_number_shared_by_two_patients_shows_on_both(
    db: Database, world: World, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    """Denise helps Maya and one more patient: a message from her that the platform could
    not tie to one of them reaches the coordinator on both pages, and on no one else's."""
    with db.factory() as session:
        denise_patients = sorted(
            session.scalars(
                select(CaregiverLink.patient_id)
                .join(Caregiver)
                .where(Caregiver.mobile_phone == world.denise_phone)
            )
        )
        stranger = next(p.id for p in _maryland_patients(session) if p.id not in denise_patients)
    assert len(denise_patients) == 2
    with transaction(db.factory) as session:
        handle_inbound(
            session,
            clock=clock,
            message_sid="SM" + "b" * 32,
            from_phone=world.denise_phone,
            to_phone="+12025550100",
            body="Who is this about?",
        )
    browser = browsers(COORDINATOR_MD)
    for patient_id in denise_patients:
        assert "Who is this about?" in browser.get(f"/patients/{patient_id}/texts").text
        assert "Who is this about?" in browser.get(f"/patients/{patient_id}").text
    assert "Who is this about?" not in browser.get(f"/patients/{stranger}/texts").text
