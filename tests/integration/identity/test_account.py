"""Changing one's password from the account page."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.audit.models import AuditEvent
from core.clock import FrozenClock
from portal.dev.demo import DEMO_PASSWORD
from tests.conftest import PATIENT_MD, Database, log_in

NEW_PASSWORD = "a calm new sentence"


def _change(client: TestClient, token: str, current: str, new: str, again: str) -> int:
    response = client.post(
        "/account/password",
        data={"csrf_token": token, "current": current, "password": new, "password_again": again},
    )
    return int(response.status_code)


def test_changing_the_password_logs_out_other_browsers_only(
    app: FastAPI, db: Database, clock: FrozenClock
) -> None:
    with (
        TestClient(app, follow_redirects=False) as here,
        TestClient(app, follow_redirects=False) as elsewhere,
    ):
        token = log_in(here, PATIENT_MD, clock)
        log_in(elsewhere, PATIENT_MD, clock)
        assert _change(here, token, DEMO_PASSWORD, NEW_PASSWORD, NEW_PASSWORD) == 303
        assert here.get("/home").status_code == 200
        assert elsewhere.get("/home").headers["location"].startswith("/login")
    with TestClient(app, follow_redirects=False) as later:
        log_in(later, PATIENT_MD, clock, password=NEW_PASSWORD)
        assert later.get("/home").status_code == 200
    with db.factory() as session:
        assert session.scalars(
            select(AuditEvent).where(AuditEvent.action == "password.change")
        ).all()


def test_a_wrong_current_password_or_mismatch_is_refused(
    client: TestClient, clock: FrozenClock
) -> None:
    token = log_in(client, PATIENT_MD, clock)
    response = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current": "not it",
            "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD,
        },
    )
    assert response.status_code == 400
    assert "Your current password is not right." in response.text
    response = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current": DEMO_PASSWORD,
            "password": NEW_PASSWORD,
            "password_again": "something else",
        },
    )
    assert response.status_code == 400
    assert "The two passwords are not the same." in response.text


def test_a_refused_change_answers_htmx_with_the_password_card_only(
    client: TestClient, clock: FrozenClock
) -> None:
    token = log_in(client, PATIENT_MD, clock)
    response = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current": "not it",
            "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD,
        },
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 400
    assert "<html" not in response.text
    assert response.text.lstrip().startswith('<section class="card" id="password-card">')
    assert "Your current password is not right." in response.text
