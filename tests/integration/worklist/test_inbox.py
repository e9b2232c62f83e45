"""The care team's inbox: a text that the platform answered "a person from the care team will
read your message" (or "... will call you") lands in the worklist's inbox of the patient's
coordinators, newest first, with search, sort and count; a coordinator marks it handled
(who, when, a note; audited) or answers it by text through the rules of texts sent by hand
(consent, texting hours, caps, two segments, no name or health words), and the patient's
timeline shows it handled. A number shared by patients of two states shows each state's
coordinators their own patient only. Pages are checked as plain requests and as htmx."""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.texting.consent import opt_in, opt_out
from coordination.texting.dispatcher import dispatch_due
from coordination.texting.gateway import ConsoleGateway
from coordination.texting.inbound import PERSON_WILL_CALL, PERSON_WILL_READ, handle_inbound
from coordination.texting.inbox import mark_handled
from coordination.texting.models import (
    ConsentHow,
    InboxItem,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.identity.models import Role, User, UserStateScope
from core.models import Caregiver, CaregiverLink, Language, Patient
from tests.conftest import (
    COORDINATOR_CO,
    COORDINATOR_MD,
    T0,
    Browser,
    Database,
    plain,
    user_by_login,
)

SHARED = "+14105550191"  # a caregiver helping a Maryland and a Colorado patient
PROGRAM = "Maryland Care Connect"
_sids = itertools.count(1)


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# --- the world ---------------------------------------------------------------------------


def patient_named(session: Session, given_name: str) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
    assert patient is not None and patient.mobile_phone is not None
    return patient


def consent(session: Session, clock: FrozenClock, phone: str) -> None:
    opt_in(
        session,
        clock=clock,
        phone=phone,
        how=ConsentHow.COORDINATOR,
        by_user_id=None,
        wording="Texts about your follow-up visits. Reply STOP to opt out.",
    )


def text_in(db: Database, clock: FrozenClock, phone: str, body: str) -> str:
    """A text arrives from `phone` (as Twilio's webhook hands it over); the reply sent."""
    with transaction(db.factory) as session:
        return handle_inbound(
            session,
            clock=clock,
            message_sid=f"SM{next(_sids):032d}",
            from_phone=phone,
            to_phone="+14105550100",
            body=body,
        )


def maya(db: Database) -> Patient:
    with db.factory() as session:
        return patient_named(session, "Maya")


def items(db: Database) -> list[InboxItem]:
    with db.factory() as session:
        return list(session.scalars(select(InboxItem).order_by(InboxItem.id)))


def texts_to(db: Database, phone: str) -> list[OutboundMessage]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(OutboundMessage)
                .where(OutboundMessage.to_phone == phone)
                .order_by(OutboundMessage.id)
            )
        )


def audit(db: Database, action: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def inbox(browser: Browser, *, htmx: bool = False, search: str | None = None) -> str:
    """The inbox bucket's results block (checked for its shape)."""
    if search is None:
        response = browser.get("/worklist?bucket=inbox", htmx=htmx)
    else:
        response = browser.post("/worklist/search", {"q": search, "bucket": "inbox"}, htmx=htmx)
    assert response.status_code == 200, response.text
    assert ("<html" in response.text) is not htmx
    return response.text[response.text.index('<div id="results">') :]


def rows(results: str) -> list[int]:
    """The patient ids of the rows, in order."""
    return [int(found) for found in re.findall(r'name="patient" value="(\d+)"', results)]


def inbox_links(results: str) -> list[str]:
    return re.findall(r'href="(/patients/\d+/inbox/\d+)"', results)


def count_of(results: str) -> int:
    """The inbox tab's count (a link, or a button while searching)."""
    found = re.search(
        r'(?:href="/worklist\?bucket=|name="bucket" value=")inbox"?[^>]*>[^<]*'
        r'<span class="badge">(\d+)<',
        results,
    )
    assert found, "no inbox tab"
    return int(found.group(1))


def done_target(response: httpx.Response, *, htmx: bool) -> str:
    if htmx:
        assert response.status_code == 204, response.text
        return str(response.headers["HX-Redirect"])
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def actions_block(response: httpx.Response, *, htmx: bool) -> str:
    """A refused action: htmx gets the actions block, a plain post the whole page."""
    assert response.status_code == 400, response.text
    if htmx:
        assert "<html" not in response.text
        assert response.text.lstrip().startswith('<div id="inbox-actions">')
    else:
        assert "<html" in response.text
    return html.unescape(response.text)


# --- landing in the inbox --------------------------------------------------------------


def test_a_message_for_the_care_team_lands_in_its_patients_coordinators_inbox(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    patient = maya(db)
    assert patient.mobile_phone is not None
    with transaction(db.factory) as session:
        consent(session, clock, patient.mobile_phone)
    answer = text_in(db, clock, patient.mobile_phone, "Can my sister come with me to the visit?")
    assert answer == PERSON_WILL_READ.en
    # Keywords the platform acts on itself never wait for a person.
    for keyword in ("HELP", "STOP", "START"):
        clock.advance(timedelta(minutes=1))
        text_in(db, clock, patient.mobile_phone, keyword)

    results = inbox(browsers(COORDINATOR_MD), htmx=htmx)
    assert rows(results) == [patient.id]
    assert count_of(results) == 1
    assert "Can my sister come with me to the visit?" in html.unescape(results)
    assert "A message for the care team" in results
    [link] = inbox_links(results)
    assert link == f"/patients/{patient.id}/inbox/{items(db)[0].id}"
    # Another state's coordinator sees nothing of it.
    elsewhere = inbox(browsers(COORDINATOR_CO), htmx=htmx)
    assert rows(elsewhere) == [] and count_of(elsewhere) == 0
    assert browsers(COORDINATOR_CO).get(link).status_code == 404


def test_a_c_the_platform_could_not_act_on_waits_for_the_person_it_promised(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    patient = maya(db)
    assert patient.mobile_phone is not None
    with transaction(db.factory) as session:
        consent(session, clock, patient.mobile_phone)
    # Nothing is booked: the platform answers that a person will call.
    assert text_in(db, clock, patient.mobile_phone, "C") == PERSON_WILL_CALL.en
    results = inbox(browsers(COORDINATOR_MD))
    assert rows(results) == [patient.id]
    assert "Asked to confirm; a person is to call" in results


def test_the_inbox_is_newest_first_searchable_and_sortable_by_name(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    with db.factory() as session:
        people = [patient_named(session, name) for name in ("Maya", "Lucía", "Imani")]
    for number, person in enumerate(people):
        clock.advance(timedelta(minutes=10))
        assert person.mobile_phone is not None
        text_in(db, clock, person.mobile_phone, f"Question number {number}")
    browser = browsers(COORDINATOR_MD)
    newest_first = inbox(browser, htmx=htmx)
    assert rows(newest_first) == [person.id for person in reversed(people)]
    assert count_of(newest_first) == 3
    by_name = browser.get("/worklist?bucket=inbox&sort=name", htmx=htmx).text
    expected = sorted(people, key=lambda p: (p.family_name.lower(), p.given_name.lower()))
    assert rows(by_name) == [person.id for person in expected]
    found = inbox(browser, htmx=htmx, search=people[1].family_name)
    assert rows(found) == [people[1].id]
    assert count_of(found) == 1


# --- handling and answering ---------------------------------------------------------------


def _one_item(db: Database, clock: FrozenClock, *, agreed: bool = True) -> tuple[Patient, str]:
    patient = maya(db)
    assert patient.mobile_phone is not None
    if agreed:
        with transaction(db.factory) as session:
            consent(session, clock, patient.mobile_phone)
    text_in(db, clock, patient.mobile_phone, "Is the visit fasting? I forgot.")
    [item] = items(db)
    return patient, f"/patients/{patient.id}/inbox/{item.id}"


def test_marking_handled_records_who_when_and_the_note_and_shows_on_the_timeline(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    patient, url = _one_item(db, clock)
    browser = browsers(COORDINATOR_MD)
    page = browser.get(url)
    assert page.status_code == 200
    assert "Is the visit fasting? I forgot." in html.unescape(page.text)
    assert "Maya Johnson (patient)" in page.text

    clock.advance(timedelta(minutes=10))
    handled = browser.post(f"{url}/handled", {"note": "Called her back: no fasting."}, htmx=htmx)
    assert done_target(handled, htmx=htmx) == f"{url}?done=handled"
    with db.factory() as session:
        coordinator = user_by_login(session, COORDINATOR_MD)
        [item] = session.scalars(select(InboxItem)).all()
        assert (item.handled_by_user_id, item.handled_at, item.handled_note) == (
            coordinator.id,
            clock.now(),
            "Called her back: no fasting.",
        )
    [event] = audit(db, "inbox.handled")
    assert (event.patient_id, event.actor_user_id) == (patient.id, coordinator.id)
    assert event.detail == {"note": True, "replied": False}  # never the note's words

    shown = plain(browser.get(f"{url}?done=handled").text)
    assert "The message is marked handled." in shown
    assert f"By {coordinator.display_name} on" in shown
    assert rows(inbox(browser)) == []
    timeline = plain(browser.get(f"/patients/{patient.id}").text)
    assert "Text handled by the care team" in timeline
    assert "Note: Called her back: no fasting." in timeline
    assert "Text received: A message for the care team · Handled" in timeline

    again = actions_block(browser.post(f"{url}/handled", {}, htmx=htmx), htmx=htmx)
    assert "This message is already handled." in again


def test_a_reply_goes_through_the_outbox_to_the_number_that_wrote(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    patient, url = _one_item(db, clock)
    assert patient.mobile_phone is not None
    browser = browsers(COORDINATOR_MD)
    replied = browser.post(
        f"{url}/reply", {"reply": "No fasting. See you on the day!", "note": ""}, htmx=htmx
    )
    assert done_target(replied, htmx=htmx) == f"{url}?done=replied"
    [reply] = texts_to(db, patient.mobile_phone)
    assert reply.purpose is MessagePurpose.REPLY
    assert reply.body == f"{PROGRAM}: No fasting. See you on the day! Reply STOP to opt out."
    assert reply.patient_id == patient.id and reply.caregiver_id is None
    [item] = items(db)
    assert item.reply_message_id == reply.id and item.handled_at is not None
    assert [e.detail for e in audit(db, "sms.reply")] == [{"queued": 1, "refused": 0}]
    # It leaves through the dispatcher, checked again like every text.
    dispatch_due(db.factory, gateway=ConsoleGateway(), clock=clock)
    [reply] = texts_to(db, patient.mobile_phone)
    assert reply.status is MessageStatus.SENT
    shown = plain(browser.get(url).text)
    assert f"Reply sent: {reply.body}" in shown
    timeline = plain(browser.get(f"/patients/{patient.id}").text)
    assert f"Reply sent: {reply.body}" in timeline


def _spanish_caregiver_writes(db: Database, clock: FrozenClock) -> tuple[str, str, str]:
    """Rosa (Andre's grandmother, Spanish, Colorado) writes from her phone: her number, her
    first name and the item's page."""
    with transaction(db.factory) as session:
        andre = patient_named(session, "Andre")
        link = session.scalar(select(CaregiverLink).where(CaregiverLink.patient_id == andre.id))
        assert link is not None
        rosa = session.get(Caregiver, link.caregiver_id)
        assert rosa is not None and rosa.mobile_phone is not None
        consent(session, clock, rosa.mobile_phone)
        phone, name = rosa.mobile_phone, rosa.given_name
    text_in(db, clock, phone, "¿A qué hora abre la clínica?")
    [item] = items(db)
    return phone, name, f"/patients/{andre.id}/inbox/{item.id}"


def test_a_reply_to_a_caregiver_is_in_their_language_and_never_names_them(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    clock.advance(timedelta(hours=2))  # 10:00 in Denver
    phone, name, url = _spanish_caregiver_writes(db, clock)
    browser = browsers(COORDINATOR_CO)
    named = browser.post(f"{url}/reply", {"reply": f"{name}, abre a las 8:00."})
    assert named.status_code == 400
    assert f"or a name ({name})" in html.unescape(named.text)
    assert texts_to(db, phone) == []
    response = browser.post(f"{url}/reply", {"reply": "Abre a las 8:00."})
    assert response.status_code == 303, response.text
    [reply] = texts_to(db, phone)
    assert reply.body.endswith("Abre a las 8:00. Responda PARAR para salir.")
    assert reply.language == "es" and reply.caregiver_id is not None


REFUSED = {
    "no consent": (
        {"agreed": False},
        "Ok, we will call you.",
        "The reply was not sent: This number never agreed to get texts. Record consent first.",
    ),
    "opted out": (
        {"opted_out": True},
        "Ok, we will call you.",
        "The reply was not sent: This number opted out of texts (STOP). It cannot be texted.",
    ),
    "too long": (
        {},
        "Please bring your insurance card. " * 9,
        "The reply is too long for two text messages by 45 characters, with the program's "
        "name and how to stop. Shorten it.",
    ),
    "an emoji": (
        {},
        "See you soon 🙂 " * 9,
        "An emoji or a special character leaves less room",
    ),
    "a result": (
        {},
        "Your hemoglobin was fine.",
        "A text may not carry a diagnosis, a therapy, a result or a name (hemoglobin).",
    ),
    "a name": (
        {},
        "Maya, please call us.",
        "A text may not carry a diagnosis, a therapy, a result or a name (Maya).",
    ),
    "empty": ({}, "   ", "Write the reply."),
    "late evening": (
        {"evening": True},
        "We will call you.",
        "The reply was not sent: It is outside texting hours (8:00-21:00) where this person "
        "lives. Try later.",
    ),
    "one today": (
        {"texted_today": True},
        "We will call you.",
        "The reply was not sent: This number already got a text today (at most one a day).",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_reply_that_may_not_go_is_refused_with_the_reason_and_changes_nothing(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool, case: str
) -> None:
    setup, typed, message = REFUSED[case]
    patient, url = _one_item(db, clock, agreed=bool(setup.get("agreed", True)))
    assert patient.mobile_phone is not None
    with transaction(db.factory) as session:
        if setup.get("opted_out"):
            opt_out(session, clock=clock, phone=patient.mobile_phone, how=ConsentHow.SMS_KEYWORD)
        if setup.get("texted_today"):
            session.add(
                OutboundMessage(
                    to_phone=patient.mobile_phone,
                    body="A reminder.",
                    purpose=MessagePurpose.REMINDER,
                    patient_id=patient.id,
                    status=MessageStatus.SENT,
                    created_at=T0 - timedelta(hours=1),
                    send_after=T0 - timedelta(hours=1),
                    sent_at=T0 - timedelta(hours=1),
                    attempts=1,
                )
            )
    if setup.get("evening"):
        clock.set(T0 + timedelta(hours=11, minutes=30))  # 21:30 in Baltimore
    browser = browsers(COORDINATOR_MD)
    before = len(texts_to(db, patient.mobile_phone))
    refused = actions_block(browser.post(f"{url}/reply", {"reply": typed}, htmx=htmx), htmx=htmx)
    assert message in refused
    assert typed.strip() in refused  # what was typed stays in the form
    assert len(texts_to(db, patient.mobile_phone)) == before
    [item] = items(db)
    assert item.handled_at is None
    if "not sent" in message:
        # The page said so before anything was typed.
        reason = message.removeprefix("The reply was not sent: ")
        assert f"A reply cannot go now: {reason}" in html.unescape(browser.get(url).text)


# --- a number shared by patients of two states --------------------------------------------


def _shared_number(db: Database, clock: FrozenClock) -> tuple[int, int]:
    """A caregiver who helps Maya (Maryland) and Andre (Colorado) writes from one phone."""
    with transaction(db.factory) as session:
        helper = Caregiver(
            given_name="Jordan",
            family_name="Reyes",
            mobile_phone=SHARED,
            preferred_language=Language.EN,
            time_zone="America/New_York",
            created_at=clock.now(),
        )
        session.add(helper)
        session.flush()
        ids = []
        for name, relationship in (("Maya", "aunt"), ("Andre", "uncle")):
            patient = patient_named(session, name)
            session.add(
                CaregiverLink(
                    caregiver_id=helper.id,
                    patient_id=patient.id,
                    relationship_label=relationship,
                    can_view_schedule=True,
                    can_receive_reminders=True,
                    created_at=clock.now(),
                    updated_at=clock.now(),
                )
            )
            ids.append(patient.id)
        consent(session, clock, SHARED)
    text_in(db, clock, SHARED, "Who do I call about the bus voucher?")
    return ids[0], ids[1]


def test_a_number_shared_across_two_states_shows_each_team_its_own_patient_only(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    maya_id, andre_id = _shared_number(db, clock)
    md_item, co_item = items(db)
    assert (md_item.patient_id, co_item.patient_id) == (maya_id, andre_id)
    with db.factory() as session:
        andre_name = patient_named(session, "Andre").family_name
        maya_name = patient_named(session, "Maya").family_name

    md, co = browsers(COORDINATOR_MD), browsers(COORDINATOR_CO)
    md_inbox, co_inbox = inbox(md, htmx=htmx), inbox(co, htmx=htmx)
    assert rows(md_inbox) == [maya_id] and rows(co_inbox) == [andre_id]
    md_page = md.get(f"/patients/{maya_id}/inbox/{md_item.id}").text
    assert "Jordan Reyes (aunt)" in md_page
    assert andre_name not in md_page and "uncle" not in md_page
    # The other state's item is not found, under either patient.
    assert md.get(f"/patients/{andre_id}/inbox/{co_item.id}").status_code == 404
    assert md.get(f"/patients/{maya_id}/inbox/{co_item.id}").status_code == 404

    handled = md.post(
        f"/patients/{maya_id}/inbox/{md_item.id}/handled", {"note": "Gave the MD number"}
    )
    assert handled.status_code == 303
    md_item, co_item = items(db)
    assert md_item.handled_at is not None
    assert co_item.handled_at is None  # Colorado's team still has theirs
    co_page = co.get(f"/patients/{andre_id}/inbox/{co_item.id}").text
    assert "Gave the MD number" not in co_page and maya_name not in co_page
    assert "Mark handled" in co_page
    co_timeline = co.get(f"/patients/{andre_id}").text
    assert "Gave the MD number" not in co_timeline and "Text handled" not in co_timeline
    assert rows(inbox(co)) == [andre_id]


def test_a_reply_to_a_number_no_longer_on_the_record_is_refused(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    patient, url = _one_item(db, clock)
    with transaction(db.factory) as session:
        record = session.get(Patient, patient.id)
        assert record is not None
        record.mobile_phone = "+14105550188"  # she changed numbers since
    browser = browsers(COORDINATOR_MD)
    page = html.unescape(browser.get(url).text)
    assert "this number is no longer on the record of Maya Johnson" in page
    assert "Your reply" not in page  # no reply form; marking handled remains
    refused = browser.post(f"{url}/reply", {"reply": "Hello"})
    assert refused.status_code == 400
    assert "no longer on the patient's record" in html.unescape(refused.text)


def test_a_coordinator_of_both_states_handles_the_shared_text_once_for_both(
    db: Database, clock: FrozenClock
) -> None:
    maya_id, andre_id = _shared_number(db, clock)
    with transaction(db.factory) as session:
        model = user_by_login(session, COORDINATOR_MD)
        both = User(
            login="coordinator.both@test.cgt-access.test",
            email="coordinator.both@test.cgt-access.test",
            display_name="Riley Both",
            role=Role.COORDINATOR,
            password_hash=model.password_hash,
            preferred_language=Language.EN,
            is_active=True,
            created_at=clock.now(),
        )
        helped = [session.get(Patient, patient_id) for patient_id in (maya_id, andre_id)]
        both.state_scopes = [UserStateScope(state_id=p.state_id) for p in helped if p is not None]
        session.add(both)
        session.flush()
        first = items(db)[0]
        item = session.get(InboxItem, first.id)
        assert item is not None
        handled = mark_handled(
            session,
            clock=clock,
            actor=Actor(user_id=both.id, label=both.login or "", role="coordinator"),
            user=both,
            item=item,
            note="Answered by phone",
        )
        assert sorted(one.patient_id for one in handled) == sorted([maya_id, andre_id])
    assert all(one.handled_at is not None for one in items(db))
    assert len(audit(db, "inbox.handled")) == 2  # one per patient's record
