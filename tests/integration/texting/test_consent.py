"""Consent to texts, recorded where people give it: a coordinator enrolling or editing a
patient or adding a caregiver (the wording read to them, in their language), the person on
their own account page; and the state's texting hours kept by an admin."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordination.texting.consent import (
    OPT_IN_WORDING,
    consent_history,
    may_text,
    opt_in,
    opt_out,
)
from coordination.texting.dispatcher import dispatch_due
from coordination.texting.models import (
    ConsentAction,
    ConsentHow,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from coordination.texting.outbox import enqueue_message
from core.clock import FrozenClock
from core.db import transaction
from core.models import Caregiver, CaregiverLink, Patient, State
from tests.conftest import (
    ADMIN,
    CAREGIVER_CO,
    COORDINATOR_MD,
    PATIENT_MD,
    Database,
    log_in,
    plain,
    user_by_login,
)
from tests.integration.record.test_patients import (
    HTMX,
    _enrol_form,
    _patient,
    read_form,
    single_values,
)
from tests.integration.texting.test_outbox import FlakyGateway

NEW_PHONE = "+14105550177"  # the number _enrol_form types: (410) 555-0177


def _error_fields(page: str) -> list[str]:
    return re.findall(r'id="f-(\w+)-error"', page)


def _shown(page: str, text: str) -> bool:
    """Is `text` on the page, as a reader sees it?"""
    return html.escape(text, quote=False) in page


def _md_program(db: Database) -> str:
    with db.factory() as session:
        program = session.scalar(select(State.program_name).where(State.code == "MD"))
        assert program is not None
        return program


def _enrolment(db: Database, client: TestClient, token: str, **changes: str) -> dict[str, str]:
    """The enrolment form as the page hands it out (with the wording it shows), filled in."""
    page = client.get("/patients/new")
    assert page.status_code == 200
    shown = single_values(read_form(page.text, "/patients/new"))
    return {**shown, **_enrol_form(db, token), **changes}


def _events(db: Database, phone: str) -> list[tuple[ConsentAction, ConsentHow, int | None]]:
    with db.factory() as session:
        return [(e.action, e.how, e.by_user_id) for e in consent_history(session, phone=phone)]


def _textable(db: Database, phone: str) -> bool:
    with db.factory() as session:
        return may_text(session, phone=phone)


# --- enrolment -------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "es"])
def test_enrolling_with_the_tick_records_the_wording_read_in_the_patients_language(
    db: Database, client: TestClient, login_as: Callable[[str], str], language: str
) -> None:
    token = login_as(COORDINATOR_MD)
    page = client.get("/patients/new").text
    wording = OPT_IN_WORDING[language].format(program=_md_program(db))
    assert _shown(page, wording), "the page shows the exact wording to read"
    assert "The patient agrees to get text messages at this number" in page
    box = re.search(r'<input[^>]*id="f-sms_consent"[^>]*>', page)
    assert box is not None and "checked" not in box.group(0), "the page never ticks the box"

    form = _enrolment(db, client, token, preferred_language=language, sms_consent="yes")
    response = client.post("/patients/new", data=form)
    assert response.status_code == 303, response.text

    with db.factory() as session:
        coordinator = user_by_login(session, COORDINATOR_MD)
        history = consent_history(session, phone=NEW_PHONE)
        assert [(e.action, e.how, e.by_user_id) for e in history] == [
            (ConsentAction.OPT_IN, ConsentHow.COORDINATOR, coordinator.id)
        ]
        assert history[0].wording == wording
        assert may_text(session, phone=NEW_PHONE)
    expected = {
        "en": ["1 text a day", "3 a week", "Msg & data rates may apply", "HELP", "STOP"],
        "es": ["1 mensaje al día", "3 a la semana", "tarifas de mensajes y datos", "AYUDA"],
    }[language]
    assert all(part in wording for part in expected)


def test_enrolling_without_the_tick_records_nothing_but_the_invitation_is_still_texted(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(COORDINATOR_MD)
    response = client.post("/patients/new", data=_enrolment(db, client, token))
    assert response.status_code == 303
    patient_id = int(re.findall(r"\d+", response.headers["location"])[0])
    assert _events(db, NEW_PHONE) == []
    assert not _textable(db, NEW_PHONE)
    # The invitation is asked for by the coordinator, for this person, now: it is sent anyway.
    invited = client.post(
        f"/patients/{patient_id}/invitations", data={"csrf_token": token, "delivery": "sms"}
    )
    assert invited.status_code == 303
    with db.factory() as session:
        message = session.scalars(
            select(OutboundMessage).where(OutboundMessage.to_phone == NEW_PHONE)
        ).one()
        assert message.purpose is MessagePurpose.INVITATION
    assert _events(db, NEW_PHONE) == []


def test_a_tick_without_a_number_or_with_another_wording_is_refused_next_to_the_box(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(COORDINATOR_MD)
    no_number = _enrolment(db, client, token, mobile_phone="", sms_consent="yes")
    response = client.post("/patients/new", data=no_number)
    assert response.status_code == 400
    assert _error_fields(response.text) == ["sms_consent"]
    assert "Enter the mobile number the texts should go to." in response.text
    assert 'href="#f-sms_consent"' in response.text

    # The page showed the wording of another program (the state was changed after the page
    # was given out): what was read is not what would be recorded, so nothing is.
    stale = _enrolment(
        db,
        client,
        token,
        preferred_language="es",
        sms_consent="yes",
        sms_wording_es=OPT_IN_WORDING["es"].format(program="Colorado Care Connect"),
        birth_date="not a date",
    )
    refused = client.post("/patients/new", data=stale)
    assert refused.status_code == 400
    assert sorted(_error_fields(refused.text)) == ["birth_date", "sms_consent"]
    assert "The wording changed" in refused.text
    kept = read_form(refused.text, "/patients/new")
    assert "sms_consent" not in kept, "the box must be ticked again after reading"
    assert single_values(kept)["given_name"] == "Keisha"
    with db.factory() as session:
        assert session.scalar(select(Patient).where(Patient.family_name == "Oduya")) is None
    assert _events(db, NEW_PHONE) == []

    htmx = client.post("/patients/new", data=no_number, headers=HTMX)
    assert htmx.status_code == 400
    assert _error_fields(htmx.text) == ["sms_consent"]


# --- editing a patient -----------------------------------------------------------------


def test_editing_never_opts_a_stopped_number_back_in_without_the_tick(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    with transaction(db.factory) as session:
        imani = _patient(session, "Imani")
        phone = imani.mobile_phone
        assert phone
        opt_in(
            session,
            clock=clock,
            phone=phone,
            how=ConsentHow.PORTAL,
            by_user_id=None,
            wording="I agree.",
        )
        opt_out(session, clock=clock, phone=phone, how=ConsentHow.SMS_KEYWORD)
        coordinator_id = user_by_login(session, COORDINATOR_MD).id
    token = login_as(COORDINATOR_MD)
    edit_url = f"/patients/{imani.id}/edit"
    page = client.get(edit_url)
    assert page.status_code == 200
    assert "asked to stop text messages" in page.text
    assert "by text message" in page.text
    form = single_values(read_form(page.text, edit_url))
    assert "sms_consent" not in form, "the box is never ticked by the page"

    saved = client.post(edit_url, data={**form, "csrf_token": token, "center_mrn": "MRN-1"})
    assert saved.status_code == 303
    assert not _textable(db, phone)
    assert len(_events(db, phone)) == 2

    again = client.post(edit_url, data={**form, "csrf_token": token, "sms_consent": "yes"})
    assert again.status_code == 303
    assert _textable(db, phone)
    with db.factory() as session:
        last = consent_history(session, phone=phone)[-1]
        assert (last.action, last.how, last.by_user_id) == (
            ConsentAction.OPT_IN,
            ConsentHow.COORDINATOR,
            coordinator_id,
        )
        assert last.wording == OPT_IN_WORDING["en"].format(program=_md_program(db))
    page = client.get(edit_url).text
    assert "gets text messages: agreed on" in page and "with a coordinator" in page

    # A new number needs its own agreement; the old one keeps its own.
    new_number = {**form, "csrf_token": token, "mobile_phone": "(410) 555-0191"}
    assert client.post(edit_url, data=new_number).status_code == 303
    assert not _textable(db, "+14105550191")
    ticked = {**new_number, "mobile_phone": "(410) 555-0192", "sms_consent": "yes"}
    ticked["preferred_language"] = "es"
    assert client.post(edit_url, data=ticked).status_code == 303
    with db.factory() as session:
        [event] = consent_history(session, phone="+14105550192")
        assert event.wording == OPT_IN_WORDING["es"].format(program=_md_program(db))
    assert _textable(db, phone)  # nobody asked the old number to stop


# --- caregivers ------------------------------------------------------------------------


@pytest.mark.parametrize("ticked", [True, False])
def test_the_caregiver_form_records_the_caregivers_own_agreement(
    db: Database, client: TestClient, login_as: Callable[[str], str], ticked: bool
) -> None:
    with db.factory() as session:
        imani = _patient(session, "Imani")
        coordinator_id = user_by_login(session, COORDINATOR_MD).id
    token = login_as(COORDINATOR_MD)
    new_url = f"/patients/{imani.id}/caregivers/new"
    page = client.get(new_url)
    assert "The caregiver agrees to get text messages at this number" in page.text
    typed = {
        **single_values(read_form(page.text, new_url)),
        "csrf_token": token,
        "given_name": "Tanya",
        "family_name": "Davis",
        "relationship": "sister",
        "mobile_phone": "(410) 555-0190",
        "preferred_language": "es",
        "rights": ["view_schedule", "receive_reminders"],
    }
    if ticked:
        typed["sms_consent"] = "yes"
        refused = client.post(new_url, data={**typed, "mobile_phone": ""})
        assert refused.status_code == 400
        assert _error_fields(refused.text) == ["sms_consent"]
        assert "sms_consent" not in read_form(refused.text, new_url)
    added = client.post(new_url, data=typed)
    assert added.status_code == 303
    with db.factory() as session:
        caregiver = session.scalar(
            select(Caregiver)
            .join(CaregiverLink, CaregiverLink.caregiver_id == Caregiver.id)
            .where(CaregiverLink.patient_id == imani.id, Caregiver.given_name == "Tanya")
        )
        assert caregiver is not None and caregiver.mobile_phone == "+14105550190"
        history = consent_history(session, phone="+14105550190")
    if not ticked:
        assert history == []
        return
    assert [(e.action, e.how, e.by_user_id) for e in history] == [
        (ConsentAction.OPT_IN, ConsentHow.COORDINATOR, coordinator_id)
    ]
    assert history[0].wording == OPT_IN_WORDING["es"].format(program=_md_program(db))


# --- the account page ------------------------------------------------------------------


def _texts_card(page: str) -> str:
    match = re.search(r'<section[^>]*id="texts-card".*?</section>', page, flags=re.DOTALL)
    assert match, "no Text messages section"
    return match.group(0)


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_a_patient_starts_and_stops_texts_from_the_account_page(
    db: Database, app: FastAPI, clock: FrozenClock, htmx: bool
) -> None:
    headers = HTMX if htmx else {}
    with db.factory() as session:
        maya = user_by_login(session, PATIENT_MD)
        maya_id = maya.id
        patient = session.get(Patient, maya.patient_id)
        assert patient is not None and patient.mobile_phone
        phone = patient.mobile_phone
    program = _md_program(db)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        log_in(client, PATIENT_MD, clock)
        card = _texts_card(client.get("/account").text)
        assert "(410) 555-0110 gets no text messages" in plain(card)  # the number: one line
        wording = OPT_IN_WORDING["en"].format(program=program)
        assert _shown(card, wording)
        form = single_values(read_form(card, "/account/texts/on"))
        assert "sms_consent" not in form

        unticked = client.post("/account/texts/on", data=form, headers=headers)
        assert unticked.status_code == 400
        assert "Tick the box to agree to text messages." in unticked.text
        assert ("<html" in unticked.text) is not htmx
        assert not _textable(db, phone)

        agreed = client.post(
            "/account/texts/on", data={**form, "sms_consent": "yes"}, headers=headers
        )
        assert agreed.status_code == (204 if htmx else 303)
        card = _texts_card(client.get("/account?texts=on").text)
        assert "Done: this number gets text messages." in card
        assert "gets text messages: agreed on" in card and "in the portal" in card
        with db.factory() as session:
            [event] = consent_history(session, phone=phone)
            assert (event.action, event.how, event.by_user_id) == (
                ConsentAction.OPT_IN,
                ConsentHow.PORTAL,
                maya_id,
            )
            assert event.wording == wording

        stop = single_values(read_form(card, "/account/texts/off"))
        stopped = client.post("/account/texts/off", data=stop, headers=headers)
        assert stopped.status_code == (204 if htmx else 303)
        assert "asked to stop text messages" in _texts_card(client.get("/account").text)
    assert _events(db, phone) == [
        (ConsentAction.OPT_IN, ConsentHow.PORTAL, maya_id),
        (ConsentAction.OPT_OUT, ConsentHow.PORTAL, maya_id),
    ]
    # A reminder planned before the stop is dropped by the dispatcher, not sent.
    with transaction(db.factory) as session:
        reminder = enqueue_message(
            session,
            clock=clock,
            to_phone=phone,
            body="Reminder",
            purpose=MessagePurpose.REMINDER,
            patient_id=patient.id,
        )
        reminder_id = reminder.id
    gateway = FlakyGateway(failures=0)
    assert dispatch_due(db.factory, gateway=gateway, clock=clock) == 0
    assert gateway.sent == []
    with db.factory() as session:
        dropped = session.get(OutboundMessage, reminder_id)
        assert dropped is not None and dropped.status is MessageStatus.DROPPED


def test_a_spanish_speaking_caregiver_agrees_to_the_spanish_wording(
    db: Database, app: FastAPI, clock: FrozenClock
) -> None:
    with db.factory() as session:
        rosa = user_by_login(session, CAREGIVER_CO)
        caregiver = session.get(Caregiver, rosa.caregiver_id)
        assert caregiver is not None and caregiver.mobile_phone
        phone, rosa_id = caregiver.mobile_phone, rosa.id
        program = session.scalar(select(State.program_name).where(State.code == "CO"))
        assert program is not None
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        log_in(client, CAREGIVER_CO, clock)
        card = _texts_card(client.get("/account").text)
        wording = OPT_IN_WORDING["es"].format(program=program)
        assert _shown(card, wording)
        form = single_values(read_form(card, "/account/texts/on"))
        agreed = client.post("/account/texts/on", data={**form, "sms_consent": "yes"})
        assert agreed.status_code == 303
    with db.factory() as session:
        [event] = consent_history(session, phone=phone)
        assert (event.how, event.by_user_id, event.wording) == (
            ConsentHow.PORTAL,
            rosa_id,
            wording,
        )


def test_staff_have_no_texts_to_agree_to(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(COORDINATOR_MD)
    page = client.get("/account")
    assert page.status_code == 200
    assert 'id="texts-card"' not in page.text
    for path in ("/account/texts/on", "/account/texts/off"):
        response = client.post(path, data={"csrf_token": token, "sms_consent": "yes"})
        assert (response.status_code, response.headers["location"]) == (303, "/account")


# --- the state's texting hours ---------------------------------------------------------


def test_texting_hours_are_kept_per_state_and_checked(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    with db.factory() as session:
        state_id = session.scalar(select(State.id).where(State.code == "MD"))
    token = login_as(ADMIN)
    edit_url = f"/admin/states/{state_id}"
    form = {**single_values(read_form(client.get(edit_url).text, edit_url)), "csrf_token": token}
    assert (form["texts_from_hour"], form["texts_until_hour"]) == ("8", "21")
    assert "8:00 to 21:00" in client.get("/admin/states").text

    for changes, field in [
        ({"texts_from_hour": "25"}, "texts_from_hour"),
        ({"texts_from_hour": "eight"}, "texts_from_hour"),
        ({"texts_until_hour": "0"}, "texts_until_hour"),
        ({"texts_from_hour": "19", "texts_until_hour": "21"}, "texts_until_hour"),
    ]:
        refused = client.post(edit_url, data={**form, **changes})
        assert refused.status_code == 400, changes
        assert _error_fields(refused.text) == [field], changes
        assert single_values(read_form(refused.text, edit_url))[field] == changes[field]
    assert "Leave at least 4 hours a day for texts" in refused.text
    too_long = client.post(edit_url, data={**form, "texts_until_hour": "2" * 50})
    assert too_long.status_code == 400

    saved = client.post(edit_url, data={**form, "texts_from_hour": "9", "texts_until_hour": "20"})
    assert saved.status_code == 303
    assert "9:00 to 20:00" in client.get("/admin/states").text
    with db.factory() as session:
        state = session.get(State, state_id)
        assert state is not None
        assert (state.texts_from_hour, state.texts_until_hour) == (9, 20)

    oregon = {
        "csrf_token": token,
        "code": "OR",
        "name": "Oregon",
        "time_zone": "America/Los_Angeles",
        "program_name": "Oregon Care Connect",
        "program_phone": "(503) 555-0100",
        "texts_from_hour": "10",
        "texts_until_hour": "18",
    }
    assert client.post("/admin/states", data=oregon).status_code == 303
    assert "10:00 to 18:00" in client.get("/admin/states").text
