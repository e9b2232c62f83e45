"""An invitation speaks the invited person's language (issue 10, defect 12): the link opens
in the language of the patient's or caregiver's record whatever the browser prefers (the
language switch still works), the account keeps that language after the first login, and
the printed letter is in the person's language, with a QR code of the link drawn in the
page itself.

Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import segno
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordination.texting.models import MessagePurpose, OutboundMessage
from core.clock import FrozenClock
from core.models import Caregiver, Language, Patient
from portal.deps import LANGUAGE_COOKIE
from tests.conftest import COORDINATOR_CO, COORDINATOR_MD, Database, csrf_token, log_in

PASSWORD = "harbor lights at dawn"
LINK = re.compile(r"http://testserver/invite/([A-Za-z0-9_-]+)")
ENGLISH_BROWSER = {"Accept-Language": "en-US,en;q=0.9"}
SPANISH_BROWSER = {"Accept-Language": "es-MX,es;q=0.9"}


def html_lang(markup: str) -> str:
    match = re.search(r'<html lang="([a-z]{2})">', markup)
    assert match
    return match.group(1)


def patient_named(db: Database, given_name: str) -> Patient:
    with db.factory() as session:
        patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
        assert patient is not None
        return patient


@pytest.fixture
def stranger(app: FastAPI) -> Iterator[Callable[..., TestClient]]:
    """A browser of someone who is not logged in, with the language it asks for."""
    opened: list[TestClient] = []

    def open_browser(headers: dict[str, str]) -> TestClient:
        client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
        client.headers.update(headers)
        opened.append(client)
        return client

    yield open_browser
    for client in opened:
        client.close()


def texted_token(client: TestClient, db: Database, token: str, patient: Patient) -> str:
    """Invite `patient` by text from their record; the token of the link in the text."""
    response = client.post(
        f"/patients/{patient.id}/invitations", data={"delivery": "sms", "csrf_token": token}
    )
    assert response.status_code == 303, response.text
    with db.factory() as session:
        body = session.scalars(
            select(OutboundMessage.body)
            .where(OutboundMessage.purpose == MessagePurpose.INVITATION)
            .order_by(OutboundMessage.id.desc())
        ).first()
    assert body is not None
    match = LINK.search(body)
    assert match, body
    return match.group(1)


def accept(browser: TestClient, token: str, login: str, **extra: str) -> str:
    form_token = csrf_token(browser, f"/invite/{token}")
    response = browser.post(
        f"/invite/{token}",
        data={
            "login": login,
            "password": PASSWORD,
            "password_again": PASSWORD,
            "csrf_token": form_token,
            **extra,
        },
    )
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def test_an_invitation_opens_in_the_language_of_the_record_not_the_browsers(
    client: TestClient,
    db: Database,
    clock: FrozenClock,
    login_as: Callable[[str], str],
    stranger: Callable[..., TestClient],
) -> None:
    coordinator = login_as(COORDINATOR_MD)
    lucia = patient_named(db, "Lucía")  # her record says Spanish
    imani = patient_named(db, "Imani")  # hers says English
    assert lucia.preferred_language is Language.ES
    assert imani.preferred_language is Language.EN
    lucia_token = texted_token(client, db, coordinator, lucia)
    imani_token = texted_token(client, db, coordinator, imani)

    page = stranger(ENGLISH_BROWSER).get(f"/invite/{lucia_token}")
    assert page.status_code == 200
    assert html_lang(page.text) == "es"
    assert "Le damos la bienvenida, Lucía" in page.text
    page = stranger(SPANISH_BROWSER).get(f"/invite/{imani_token}")
    assert html_lang(page.text) == "en"
    assert "Welcome, Imani" in page.text


def test_the_language_switch_still_works_on_an_invitation(
    client: TestClient,
    db: Database,
    login_as: Callable[[str], str],
    stranger: Callable[..., TestClient],
) -> None:
    coordinator = login_as(COORDINATOR_MD)
    token = texted_token(client, db, coordinator, patient_named(db, "Lucía"))
    browser = stranger(ENGLISH_BROWSER)
    form_token = csrf_token(browser, f"/invite/{token}")
    switched = browser.post(
        "/language", data={"lang": "en", "next": f"/invite/{token}", "csrf_token": form_token}
    )
    assert switched.status_code == 303
    page = browser.get(switched.headers["location"])
    assert html_lang(page.text) == "en"
    assert "Welcome, Lucía" in page.text
    # The form sends the language the person reads, and their answer keeps it.
    assert 'name="lang" value="en"' in page.text


def test_after_the_first_login_the_account_speaks_the_records_language(
    client: TestClient,
    db: Database,
    clock: FrozenClock,
    login_as: Callable[[str], str],
    stranger: Callable[..., TestClient],
) -> None:
    coordinator = login_as(COORDINATOR_MD)
    token = texted_token(client, db, coordinator, patient_named(db, "Lucía"))
    browser = stranger(ENGLISH_BROWSER)
    assert accept(browser, token, "lucia.g") == "/login?welcome=1"
    welcome = browser.get("/login?welcome=1")
    assert html_lang(welcome.text) == "es"
    assert "Su contraseña está lista." in welcome.text

    log_in(browser, "lucia.g", clock, password=PASSWORD)
    home = browser.get("/home")
    assert home.status_code == 200
    assert html_lang(home.text) == "es"
    assert "Hola, Lucía" in home.text


def test_a_caregiver_invitation_follows_the_caregivers_record(
    client: TestClient,
    db: Database,
    login_as: Callable[[str], str],
    stranger: Callable[..., TestClient],
) -> None:
    """Kevin's record is changed to Spanish after his account was made in English: the
    record, not the account made earlier, says how to greet him."""
    coordinator = login_as(COORDINATOR_MD)
    with db.factory() as session:
        kevin = session.scalar(select(Caregiver).where(Caregiver.given_name == "Kevin"))
        assert kevin is not None
        [link] = kevin.links
        patient_id, link_id = link.patient_id, link.id
    # A first invitation makes his account (English, as his record was then).
    first = client.post(
        f"/patients/{patient_id}/invitations",
        data={"delivery": "print", "caregiver_link": str(link_id), "csrf_token": coordinator},
    )
    assert first.status_code == 200
    with db.factory() as session:
        kevin = session.scalar(select(Caregiver).where(Caregiver.given_name == "Kevin"))
        assert kevin is not None
        kevin.preferred_language = Language.ES
        session.commit()
    letter = client.post(
        f"/patients/{patient_id}/invitations",
        data={"delivery": "print", "caregiver_link": str(link_id), "csrf_token": coordinator},
    )
    match = LINK.search(letter.text)
    assert match
    page = stranger(ENGLISH_BROWSER).get(f"/invite/{match.group(1)}")
    assert html_lang(page.text) == "es"
    assert "Le damos la bienvenida, Kevin" in page.text


def test_the_printed_letter_is_in_the_persons_language_with_a_qr_code_of_the_link(
    client: TestClient, db: Database, login_as: Callable[[str], str]
) -> None:
    coordinator = login_as(COORDINATOR_MD)
    lucia = patient_named(db, "Lucía")
    response = client.post(
        f"/patients/{lucia.id}/invitations", data={"delivery": "print", "csrf_token": coordinator}
    )
    assert response.status_code == 200
    page = response.text
    # The coordinator's own notes stay in the coordinator's language...
    assert html_lang(page) == "en"
    assert "This link is shown only once" in page
    # ...the letter is in Lucía's, and says so to screen readers and the printer.
    letter = re.search(r'<article class="[^"]*letter[^"]*" lang="es">(.*?)</article>', page, re.S)
    assert letter, page
    body = letter.group(1)
    assert "Su invitación al portal de seguimiento" in body
    assert "Estimado/a Lucía" in body
    assert "Your invitation" not in body
    # A QR code of the link, drawn in the page: no request to another host.
    match = LINK.search(body)
    assert match
    url = match.group(0)
    svg = re.search(r"<svg[^>]*>.*?</svg>", body, re.S)
    assert svg, body
    assert 'role="img"' in svg.group(0)
    drawn = re.search(r' d="([^"]+)"', svg.group(0))
    expected = re.search(r' d="([^"]+)"', segno.make(url, error="m").svg_inline())
    assert drawn and expected and drawn.group(1) == expected.group(1)
    assert not re.search(r'(src|href)="(https?:)?//', page), "a request to another host"


def test_the_letter_for_an_english_speaker_is_in_english_for_a_spanish_coordinator(
    client: TestClient, db: Database, login_as: Callable[[str], str]
) -> None:
    coordinator = login_as(COORDINATOR_CO)
    client.cookies.set(LANGUAGE_COOKIE, "es")
    switched = client.post("/language", data={"lang": "es", "next": "/", "csrf_token": coordinator})
    assert switched.status_code == 303
    andre = patient_named(db, "Andre")
    with db.factory() as session:
        stored = session.get(Patient, andre.id)
        assert stored is not None
        stored.preferred_language = Language.EN
        session.commit()
    response = client.post(
        f"/patients/{andre.id}/invitations", data={"delivery": "print", "csrf_token": coordinator}
    )
    assert response.status_code == 200
    page = response.text
    assert html_lang(page) == "es"
    letter = re.search(r'<article class="[^"]*letter[^"]*" lang="en">(.*?)</article>', page, re.S)
    assert letter
    assert "Your invitation to the follow-up portal" in letter.group(1)
