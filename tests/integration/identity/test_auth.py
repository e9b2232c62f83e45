"""Logging in and staying safe: passwords, throttling, CSRF, session timeouts, logout, the
staff second factor, invitations, password resets, the language, headers, cookies, logs.

Every test here uses `client`, so it runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Protocol

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from coordination.texting.gateway import ConsoleGateway
from coordination.texting.models import MessagePurpose, MessageStatus, OutboundMessage
from core.audit.models import AuditEvent, AuditOutcome
from core.clock import FrozenClock
from core.identity.models import (
    Invitation,
    LoginAttempt,
    LoginSession,
    PasswordResetCode,
    User,
)
from core.identity.passwords import token_digest
from core.models import Language, Patient, Therapy
from portal.app import create_app
from portal.deps import LANGUAGE_COOKIE, SESSION_COOKIE
from portal.dev.demo import DEMO_PASSWORD
from tests.conftest import (
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    STAFF_TOTP_SECRET,
    Database,
    csrf_token,
    log_in,
    make_settings,
    totp_now,
    user_by_login,
)

NEW_PASSWORD = "harbor lights at dawn"
INVITE_LINK = re.compile(r"http://testserver/invite/([A-Za-z0-9_-]+)")


class OpenBrowser(Protocol):
    def __call__(
        self,
        *,
        address: str = ...,
        target: FastAPI | None = ...,
        base_url: str = ...,
        cookies: dict[str, str] | None = ...,
    ) -> TestClient: ...


@pytest.fixture
def browser(app: FastAPI) -> Iterator[OpenBrowser]:
    """Another browser (its own cookies, optionally its own address or app)."""
    opened: list[TestClient] = []

    def open_browser(
        *,
        address: str = "testclient",
        target: FastAPI | None = None,
        base_url: str = "http://testserver",
        cookies: dict[str, str] | None = None,
    ) -> TestClient:
        other = TestClient(
            target or app,
            base_url=base_url,
            raise_server_exceptions=False,
            follow_redirects=False,
            client=(address, 50000),
            cookies=cookies,
        )
        opened.append(other)
        return other

    yield open_browser
    for other in opened:
        other.close()


def build_app(db: Database, clock: FrozenClock, **overrides: object) -> FastAPI:
    return create_app(
        make_settings(db.url, **overrides),
        clock=clock,
        factory=db.factory,
        gateway=ConsoleGateway(),
        run_scheduler=False,
    )


def audit_events(db: Database, action: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def account(db: Database, login: str) -> User:
    with db.factory() as session:
        return user_by_login(session, login)


def patient_named(db: Database, given_name: str) -> Patient:
    with db.factory() as session:
        patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
        assert patient is not None
        return patient


def messages_to(db: Database, phone: str, purpose: MessagePurpose) -> list[OutboundMessage]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(OutboundMessage)
                .where(OutboundMessage.to_phone == phone, OutboundMessage.purpose == purpose)
                .order_by(OutboundMessage.id)
            )
        )


def post_login(client: TestClient, login: str, password: str = DEMO_PASSWORD) -> str:
    """Submit the login form; returns where it sent the browser (asserts a redirect)."""
    response = client.post(
        "/login", data={"login": login, "password": password, "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def wrong_totp(clock: FrozenClock, secret: str = STAFF_TOTP_SECRET) -> str:
    totp = pyotp.TOTP(secret)
    step = totp.timecode(clock.now())
    accepted = {totp.generate_otp(step + offset) for offset in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in accepted)


def html_lang(client: TestClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    match = re.search(r'<html lang="([a-z]{2})">', response.text)
    assert match
    return match.group(1)


# --- logging in ------------------------------------------------------------------------


def test_login_success_opens_the_home_page_and_is_audited_with_the_address(
    client: TestClient, db: Database
) -> None:
    assert post_login(client, PATIENT_MD) == "/home"
    page = client.get("/home")
    assert page.status_code == 200
    assert "Hello, Maya" in page.text

    maya = account(db, PATIENT_MD)
    [event] = audit_events(db, "login")
    assert event.outcome is AuditOutcome.SUCCESS
    assert event.actor_user_id == maya.id
    assert event.actor_label == PATIENT_MD
    assert event.actor_role == "patient"
    assert event.ip == "testclient"
    assert maya.last_login_at is not None


def test_login_failure_says_so_and_is_audited_with_the_address(
    client: TestClient, db: Database
) -> None:
    token = csrf_token(client)
    wrong = client.post(
        "/login", data={"login": "Maya ", "password": "not-her-password", "csrf_token": token}
    )
    unknown = client.post(
        "/login", data={"login": "nobody.here", "password": "whatever-1", "csrf_token": token}
    )
    for response in (wrong, unknown):
        assert response.status_code == 400
        assert "The username or password is not right." in response.text
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert 'value="Maya "' in wrong.text  # the typed username is kept
    assert "not-her-password" not in wrong.text
    assert client.get("/home").headers["location"] == "/login?next=/home"

    first, second = audit_events(db, "login")
    assert (first.outcome, second.outcome) == (AuditOutcome.FAILURE, AuditOutcome.FAILURE)
    assert first.actor_user_id == account(db, PATIENT_MD).id
    assert first.actor_label == PATIENT_MD
    assert second.actor_user_id is None
    assert second.actor_label == "nobody.here"
    assert first.ip == second.ip == "testclient"
    assert first.detail == second.detail == {"reason": "bad_credentials"}


def test_five_failures_lock_the_account_for_fifteen_minutes(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    token = csrf_token(client)
    for _attempt in range(5):
        failed = client.post(
            "/login", data={"login": PATIENT_MD, "password": "guess-again", "csrf_token": token}
        )
        assert failed.status_code == 400

    locked = client.post(
        "/login", data={"login": PATIENT_MD, "password": DEMO_PASSWORD, "csrf_token": token}
    )
    assert locked.status_code == 429
    assert "Too many failed attempts. Try again in 15 minutes" in locked.text
    assert SESSION_COOKIE not in locked.headers.get("set-cookie", "")
    assert audit_events(db, "login")[-1].detail == {"reason": "locked"}

    # Only this account is locked: another person at the same address logs in.
    assert post_login(browser(), PATIENT_CO) == "/home"

    clock.advance(timedelta(minutes=15, seconds=1))
    assert post_login(client, PATIENT_MD) == "/home"


def test_many_failures_from_one_address_throttle_that_address_only(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    # 29 failed tries at many usernames from this address (as a password sprayer would)...
    with db.factory() as session:
        session.add_all(
            LoginAttempt(login=f"user{n}", ip="testclient", at=clock.now(), succeeded=False)
            for n in range(29)
        )
        session.commit()
    token = csrf_token(client)
    # ...and the 30th through the form.
    thirtieth = client.post(
        "/login", data={"login": "user30", "password": "x-x-x-x-x-x", "csrf_token": token}
    )
    assert thirtieth.status_code == 400

    refused = client.post(
        "/login", data={"login": PATIENT_MD, "password": DEMO_PASSWORD, "csrf_token": token}
    )
    assert refused.status_code == 429
    assert "Too many failed attempts" in refused.text
    assert audit_events(db, "login")[-1].detail == {"reason": "ip_throttled"}

    elsewhere = browser(address="198.51.100.7")
    assert post_login(elsewhere, PATIENT_MD) == "/home"
    [success] = [e for e in audit_events(db, "login") if e.outcome is AuditOutcome.SUCCESS]
    assert success.ip == "198.51.100.7"

    clock.advance(timedelta(minutes=16))
    assert post_login(client, PATIENT_MD) == "/home"


def try_login(client: TestClient, login: str, password: str) -> int:
    """Submit the login form; the status code (303 in, 400 wrong, 429 locked)."""
    response = client.post(
        "/login", data={"login": login, "password": password, "csrf_token": csrf_token(client)}
    )
    status: int = response.status_code
    return status


def device_cookie(client: TestClient) -> str | None:
    return next((name for name in client.cookies if "device" in name), None)


def test_guessing_elsewhere_does_not_lock_out_a_device_she_logged_in_on(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    # Maya's phone: she logged in there before (and logged out since).
    phone = browser(address="198.51.100.20")
    token = log_in(phone, PATIENT_MD, clock)
    phone.post("/logout", data={"csrf_token": token})
    assert device_cookie(phone) is not None

    # Someone elsewhere, logged in on their own account, guesses her password.
    attacker = browser(address="203.0.113.66")
    attacker.post("/logout", data={"csrf_token": log_in(attacker, PATIENT_CO, clock)})
    assert [try_login(attacker, PATIENT_MD, f"guess number {n}") for n in range(5)] == [400] * 5
    # Guessing stays bounded: even the right password is refused there now, and on any
    # other device she never used (their own account's device cookie does not help them).
    assert try_login(attacker, PATIENT_MD, DEMO_PASSWORD) == 429
    assert try_login(browser(address="192.0.2.44"), PATIENT_MD, DEMO_PASSWORD) == 429

    # On her phone, the right password still works.
    assert try_login(phone, PATIENT_MD, DEMO_PASSWORD) == 303
    assert phone.get("/home").status_code == 200
    phone.post("/logout", data={"csrf_token": csrf_token(phone, "/home")})

    # Her phone has a count of its own: five wrong passwords there lock it too.
    assert [try_login(phone, PATIENT_MD, f"typo {n}") for n in range(5)] == [400] * 5
    assert try_login(phone, PATIENT_MD, DEMO_PASSWORD) == 429

    with db.factory() as session:
        failures = session.scalars(
            select(LoginAttempt).where(
                LoginAttempt.login == PATIENT_MD, LoginAttempt.succeeded.is_(False)
            )
        ).all()
    assert len(failures) == 13  # every refusal counted and audited
    assert len([e for e in audit_events(db, "login") if e.outcome is AuditOutcome.FAILURE]) == 13

    clock.advance(timedelta(minutes=15, seconds=1))
    assert try_login(phone, PATIENT_MD, DEMO_PASSWORD) == 303


def test_a_forged_or_stale_device_cookie_counts_as_an_unknown_device(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    phone = browser()
    phone.post("/logout", data={"csrf_token": log_in(phone, PATIENT_MD, clock)})
    name = device_cookie(phone)
    assert name is not None
    genuine = phone.cookies[name]
    maya_id = account(db, PATIENT_MD).id
    assert PATIENT_MD not in genuine  # an id and account numbers, nothing about her

    attacker = browser(address="203.0.113.66")
    assert [try_login(attacker, PATIENT_MD, f"guess {n}") for n in range(5)] == [400] * 5
    device_id = genuine.split("~", 1)[0]
    for forged in (f"{device_id}~{maya_id}.AAAAAA.forged", genuine[:-2] + "xx", "rubbish"):
        assert try_login(browser(cookies={name: forged}), PATIENT_MD, DEMO_PASSWORD) == 429

    # A device not used for 180 days is forgotten (the lock has ended by then as well).
    assert try_login(phone, PATIENT_MD, DEMO_PASSWORD) == 303
    phone.post("/logout", data={"csrf_token": csrf_token(phone, "/home")})
    clock.advance(timedelta(days=181))
    assert [try_login(attacker, PATIENT_MD, f"again {n}") for n in range(5)] == [400] * 5
    assert try_login(phone, PATIENT_MD, DEMO_PASSWORD) == 429


def test_a_known_device_gets_past_an_address_throttled_by_others(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    token = log_in(client, PATIENT_MD, clock)
    client.post("/logout", data={"csrf_token": token})
    # Someone behind the same address (a clinic's or a school's network) sprays passwords.
    with db.factory() as session:
        session.add_all(
            LoginAttempt(login=f"user{n}", ip="testclient", at=clock.now(), succeeded=False)
            for n in range(30)
        )
        session.commit()
    assert try_login(browser(), PATIENT_CO, DEMO_PASSWORD) == 429  # a new device: throttled
    assert try_login(client, PATIENT_MD, DEMO_PASSWORD) == 303  # Maya's known device: in


def test_a_staff_device_is_known_only_after_the_second_factor(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    assert post_login(client, COORDINATOR_MD) == "/login/mfa"
    assert device_cookie(client) is None  # the password alone does not make it known
    token = csrf_token(client, "/login/mfa")
    passed = client.post("/login/mfa", data={"code": totp_now(clock), "csrf_token": token})
    assert passed.status_code == 303
    assert device_cookie(client) is not None
    client.post("/logout", data={"csrf_token": token})
    clock.advance(timedelta(seconds=31))

    attacker = browser(address="203.0.113.66")
    assert [try_login(attacker, COORDINATOR_MD, f"guess {n}") for n in range(5)] == [400] * 5
    assert try_login(attacker, COORDINATOR_MD, DEMO_PASSWORD) == 429
    assert post_login(client, COORDINATOR_MD) == "/login/mfa"
    token = csrf_token(client, "/login/mfa")
    done = client.post("/login/mfa", data={"code": totp_now(clock), "csrf_token": token})
    assert done.status_code == 303
    assert client.get("/patients").status_code == 200


# --- CSRF ------------------------------------------------------------------------------


def test_a_form_without_its_token_is_refused(client: TestClient, db: Database) -> None:
    client.get("/login")  # the browser has its CSRF cookie
    response = client.post("/login", data={"login": PATIENT_MD, "password": DEMO_PASSWORD})
    assert response.status_code == 403
    assert "This form has expired" in response.text
    assert "reload the page and try again" in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert audit_events(db, "login") == []


def test_a_token_from_another_browser_is_refused(
    client: TestClient, db: Database, browser: OpenBrowser
) -> None:
    victim_token = csrf_token(client)
    attacker = browser()
    attacker.get("/login")  # has a CSRF cookie of its own
    response = attacker.post(
        "/login",
        data={"login": PATIENT_MD, "password": DEMO_PASSWORD, "csrf_token": victim_token},
    )
    assert response.status_code == 403
    assert "This form has expired" in response.text

    # A browser that never got a cookie cannot use a valid-looking token either.
    cookieless = browser()
    assert (
        cookieless.post("/language", data={"lang": "es", "csrf_token": victim_token}).status_code
        == 403
    )
    assert audit_events(db, "login") == []


def test_a_token_from_before_the_login_is_refused_after_it(
    client: TestClient, db: Database
) -> None:
    before = csrf_token(client)  # the anonymous login page's token
    response = client.post(
        "/login", data={"login": PATIENT_MD, "password": DEMO_PASSWORD, "csrf_token": before}
    )
    assert response.status_code == 303  # anonymous forms work with anonymous tokens

    # A page planted before the login (login CSRF, a fixed token) cannot act for her now.
    refused = client.post("/language", data={"lang": "es", "csrf_token": before})
    assert refused.status_code == 403
    assert "This form has expired" in refused.text
    assert account(db, PATIENT_MD).preferred_language is Language.EN

    # The pages she sees now carry a token that works.
    fresh = csrf_token(client, "/home")
    assert fresh != before
    assert client.post("/language", data={"lang": "es", "csrf_token": fresh}).status_code == 303
    assert account(db, PATIENT_MD).preferred_language is Language.ES


def test_a_token_from_one_login_session_is_refused_in_another(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    maya_token = log_in(client, PATIENT_MD, clock)
    seed_cookie = next(name for name in client.cookies if "csrf" in name)
    # Another browser with the same CSRF cookie (planted, or a shared computer's), logged
    # in as someone else: Maya's token does not work there.
    other = browser(cookies={seed_cookie: client.cookies[seed_cookie]})
    andre_token = log_in(other, PATIENT_CO, clock)
    assert andre_token != maya_token
    refused = other.post("/language", data={"lang": "es", "csrf_token": maya_token})
    assert refused.status_code == 403
    assert account(db, PATIENT_CO).preferred_language is Language.EN
    # Nor does the token of Maya's session once that session is over.
    client.post("/logout", data={"csrf_token": maya_token})
    log_in(client, PATIENT_MD, clock)
    assert client.post("/language", data={"lang": "es", "csrf_token": maya_token}).status_code == (
        403
    )
    assert account(db, PATIENT_MD).preferred_language is Language.EN


def test_htmx_sends_the_token_in_a_header(
    client: TestClient, db: Database, login_as: Callable[[str], str]
) -> None:
    token = login_as(PATIENT_MD)
    htmx = {"HX-Request": "true", "X-CSRF-Token": token}
    response = client.post("/language", data={"lang": "es", "next": "/home"}, headers=htmx)
    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == "/home"
    assert account(db, PATIENT_MD).preferred_language is Language.ES

    forged = client.post(
        "/language",
        data={"lang": "en"},
        headers={"HX-Request": "true", "X-CSRF-Token": "0" * 64},
    )
    assert forged.status_code == 403
    assert account(db, PATIENT_MD).preferred_language is Language.ES


# --- sessions --------------------------------------------------------------------------


def test_an_idle_session_ends_after_thirty_minutes(
    client: TestClient, db: Database, clock: FrozenClock, login_as: Callable[[str], str]
) -> None:
    login_as(PATIENT_MD)
    clock.advance(timedelta(minutes=29))
    assert client.get("/home").status_code == 200  # activity keeps it alive
    clock.advance(timedelta(minutes=29))
    assert client.get("/home").status_code == 200

    clock.advance(timedelta(minutes=31))
    response = client.get("/home")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/home"
    # Coming back does not revive it.
    clock.advance(timedelta(minutes=1))
    assert client.get("/home").status_code == 303


def test_an_active_session_still_ends_after_twelve_hours(
    client: TestClient, clock: FrozenClock, login_as: Callable[[str], str]
) -> None:
    login_as(PATIENT_MD)
    for _step in range(36):  # every 20 minutes for 12 hours
        clock.advance(timedelta(minutes=20))
        assert client.get("/home").status_code == 200
    clock.advance(timedelta(minutes=20))
    response = client.get("/home")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


def test_logout_ends_the_session_on_the_server(
    client: TestClient, db: Database, login_as: Callable[[str], str], browser: OpenBrowser
) -> None:
    token = login_as(PATIENT_MD)
    stolen = client.cookies.get(SESSION_COOKIE)
    assert stolen

    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/login?logged_out=1"
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"]
    assert "You are logged out." in client.get("/login?logged_out=1").text
    assert client.get("/home").status_code == 303

    # Replaying the old cookie (copied before the logout) opens nothing.
    replay = browser(cookies={SESSION_COOKIE: stolen})
    refused = replay.get("/home")
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/login")

    with db.factory() as session:
        [login_session] = session.scalars(select(LoginSession)).all()
        assert login_session.ended_at is not None
    [event] = audit_events(db, "logout")
    assert event.actor_label == PATIENT_MD


def test_a_tampered_session_cookie_is_ignored(client: TestClient, browser: OpenBrowser) -> None:
    forged = browser(cookies={SESSION_COOKIE: "some-token.forged-signature"})
    response = forged.get("/home")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


# --- the staff second factor -------------------------------------------------------------


def test_staff_need_the_authenticator_code_after_the_password(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    assert post_login(client, COORDINATOR_MD) == "/login/mfa"
    for path in ("/patients", "/patients/new", "/account"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/login/mfa"
    page = client.get("/login/mfa")
    assert page.status_code == 200
    assert "Enter the code from your authenticator app" in page.text

    token = csrf_token(client, "/login/mfa")
    wrong = client.post("/login/mfa", data={"code": wrong_totp(clock), "csrf_token": token})
    assert wrong.status_code == 400
    assert "This code is not right" in wrong.text
    assert client.get("/patients").status_code == 303

    right = client.post("/login/mfa", data={"code": totp_now(clock), "csrf_token": token})
    assert right.status_code == 303
    assert right.headers["location"] == "/worklist"
    assert client.get("/patients").status_code == 200

    outcomes = [event.outcome for event in audit_events(db, "login.mfa")]
    assert outcomes == [AuditOutcome.FAILURE, AuditOutcome.SUCCESS]


def test_an_authenticator_code_works_once(
    client: TestClient, clock: FrozenClock, browser: OpenBrowser
) -> None:
    code = totp_now(clock)
    post_login(client, COORDINATOR_MD)
    first = client.post("/login/mfa", data={"code": code, "csrf_token": csrf_token(client)})
    assert first.status_code == 303

    # Someone who saw the code types it in another browser within the same 30 seconds.
    other = browser()
    assert post_login(other, COORDINATOR_MD) == "/login/mfa"
    replayed = other.post("/login/mfa", data={"code": code, "csrf_token": csrf_token(other)})
    assert replayed.status_code == 400
    assert "This code is not right" in replayed.text
    assert other.get("/patients").headers["location"] == "/login/mfa"

    # The next code works.
    clock.advance(timedelta(seconds=30))
    fresh = other.post(
        "/login/mfa", data={"code": totp_now(clock), "csrf_token": csrf_token(other)}
    )
    assert fresh.status_code == 303


def test_staff_without_an_authenticator_set_one_up_at_login(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    with db.factory() as session:
        session.execute(
            update(User)
            .where(User.login == COORDINATOR_CO)
            .values(totp_secret=None, totp_enabled_at=None)
        )
        session.commit()

    assert post_login(client, COORDINATOR_CO) == "/account/mfa"
    for path in ("/patients", "/login/mfa"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/account/mfa"

    page = client.get("/account/mfa")
    assert page.status_code == 200
    assert "Protect your account with a second step" in page.text
    assert "Skip for now" not in page.text  # demo mode only
    match = re.search(r'id="totp-secret">([A-Z2-7]{16,})<', page.text)
    assert match
    secret = match.group(1)
    assert account(db, COORDINATOR_CO).totp_secret == secret
    assert account(db, COORDINATOR_CO).totp_enabled_at is None

    token = csrf_token(client, "/account/mfa")
    wrong = client.post(
        "/account/mfa", data={"code": wrong_totp(clock, secret), "csrf_token": token}
    )
    assert wrong.status_code == 400
    assert "Scan the code again" in wrong.text
    assert account(db, COORDINATOR_CO).totp_enabled_at is None

    code = str(pyotp.TOTP(secret).at(clock.now()))
    enabled = client.post("/account/mfa", data={"code": code, "csrf_token": token})
    assert enabled.status_code == 303
    assert enabled.headers["location"] == "/worklist"
    assert account(db, COORDINATOR_CO).totp_enabled_at == clock.now()
    assert client.get("/patients").status_code == 200
    assert len(audit_events(db, "account.mfa_enabled")) == 1


def test_skipping_the_second_factor_is_refused_outside_demo_mode(
    client: TestClient, db: Database
) -> None:
    post_login(client, COORDINATOR_MD)
    response = client.post("/account/mfa/skip", data={"csrf_token": csrf_token(client)})
    assert response.status_code == 403
    assert "The second factor can only be skipped in demo mode." in response.text
    assert client.get("/patients").headers["location"] == "/login/mfa"
    assert audit_events(db, "login.mfa_skip") == []


def test_skipping_the_second_factor_is_allowed_in_demo_mode(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    demo = browser(target=build_app(db, clock, demo_mode=True))
    assert post_login(demo, COORDINATOR_MD) == "/login/mfa"
    response = demo.post("/account/mfa/skip", data={"csrf_token": csrf_token(demo)})
    assert response.status_code == 303
    assert response.headers["location"] == "/worklist"
    page = demo.get("/patients")
    assert page.status_code == 200
    assert "Demo mode: every person here is fictional." in page.text
    assert len(audit_events(db, "login.mfa_skip")) == 1


# --- invitations -----------------------------------------------------------------------


def invite(client: TestClient, db: Database, token: str, patient: Patient, delivery: str) -> str:
    """Invite `patient` from the record page; returns the link's token (from the text or
    from the printed letter)."""
    response = client.post(
        f"/patients/{patient.id}/invitations", data={"delivery": delivery, "csrf_token": token}
    )
    if delivery == "sms":
        assert response.status_code == 303, response.text
        assert response.headers["location"] == f"/patients/{patient.id}?done=invited_sms"
        phone = patient.mobile_phone or ""
        message = messages_to(db, phone, MessagePurpose.INVITATION)[-1]
        match = INVITE_LINK.search(message.body)
        assert match, message.body
        return match.group(1)
    assert response.status_code == 200, response.text
    match = INVITE_LINK.search(response.text)
    assert match
    return match.group(1)


@pytest.fixture
def coordinator(login_as: Callable[[str], str]) -> str:
    """The Maryland coordinator is logged in on `client`; returns the CSRF token."""
    return login_as(COORDINATOR_MD)


def test_an_sms_invitation_lets_the_patient_set_a_username_and_password(
    client: TestClient, db: Database, clock: FrozenClock, coordinator: str, browser: OpenBrowser
) -> None:
    imani = patient_named(db, "Imani")
    assert imani.mobile_phone
    token = invite(client, db, coordinator, imani, "sms")
    assert "The invitation was texted." in client.get(f"/patients/{imani.id}?done=invited_sms").text

    [message] = messages_to(db, imani.mobile_phone, MessagePurpose.INVITATION)
    assert message.status is MessageStatus.SENT
    assert message.provider == "console"
    assert message.patient_id == imani.id
    assert f"http://testserver/invite/{token}" in message.body
    assert "within 7 days" in message.body
    with db.factory() as session:
        therapy_words = [
            word
            for therapy in session.scalars(select(Therapy))
            for word in (therapy.brand_name, therapy.generic_name, therapy.code)
        ]
        [invitation] = session.scalars(select(Invitation)).all()
    for word in [*therapy_words, "sickle", "SCD", "gene therapy", "diagnos"]:
        assert word.lower() not in message.body.lower()
    # The database keeps only the token's digest.
    assert invitation.token_hash == token_digest(token)
    assert invitation.expires_at == clock.now() + timedelta(days=7)

    patient = browser()
    page = patient.get(f"/invite/{token}")
    assert page.status_code == 200
    assert "Welcome, Imani Davis" in page.text
    form_token = csrf_token(patient, f"/invite/{token}")
    accepted = patient.post(
        f"/invite/{token}",
        data={
            "login": "Imani.D",
            "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD,
            "csrf_token": form_token,
        },
    )
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/login?welcome=1"
    assert "Your password is set" in patient.get("/login?welcome=1").text

    log_in(patient, "imani.d", clock, password=NEW_PASSWORD)
    assert "Hello, Imani" in patient.get("/home").text
    user = account(db, "imani.d")
    assert user.patient_id == imani.id
    assert user.phone_verified_at is not None  # the link reached that phone
    assert len(audit_events(db, "invitation.accept")) == 1

    # The link is spent.
    again = patient.get(f"/invite/{token}")
    assert again.status_code == 410
    assert "already used" in again.text
    reuse = patient.post(
        f"/invite/{token}",
        data={
            "login": "someone-else",
            "password": "another fine sentence",
            "password_again": "another fine sentence",
            "csrf_token": csrf_token(patient, f"/invite/{token}"),  # logged in: a new token
        },
    )
    assert reuse.status_code == 410
    assert "already used" in reuse.text
    assert account(db, "imani.d").login == "imani.d"


def test_an_invitation_form_with_a_mistake_keeps_the_link_usable(
    client: TestClient, db: Database, coordinator: str, browser: OpenBrowser
) -> None:
    token = invite(client, db, coordinator, patient_named(db, "Imani"), "print")
    patient = browser()
    form_token = csrf_token(patient, f"/invite/{token}")
    cases = [
        (
            {"login": "ok-name", "password": "too short", "password_again": "too short"},
            "Use at least 10 characters.",
        ),
        (
            {"login": "ok-name", "password": NEW_PASSWORD, "password_again": "something else"},
            "The two passwords are not the same.",
        ),
        (
            {"login": PATIENT_MD, "password": NEW_PASSWORD, "password_again": NEW_PASSWORD},
            "This username is taken.",
        ),
    ]
    for fields, problem in cases:
        response = patient.post(f"/invite/{token}", data={**fields, "csrf_token": form_token})
        assert response.status_code == 400
        assert problem in response.text
    assert patient.get(f"/invite/{token}").status_code == 200


def test_a_mistyped_form_on_a_spent_link_says_the_link_is_used(
    client: TestClient, db: Database, coordinator: str, browser: OpenBrowser
) -> None:
    token = invite(client, db, coordinator, patient_named(db, "Imani"), "print")
    patient = browser()
    form_token = csrf_token(patient, f"/invite/{token}")
    fields = {"login": "imani.d", "password": NEW_PASSWORD, "password_again": NEW_PASSWORD}
    assert (
        patient.post(f"/invite/{token}", data={**fields, "csrf_token": form_token}).status_code
        == 303
    )

    # The same form sent again from another tab, with the confirmation mistyped.
    response = patient.post(
        f"/invite/{token}",
        data={**fields, "password_again": "a typo here", "csrf_token": form_token},
    )
    assert response.status_code == 410
    assert "already used" in response.text


def test_an_invitation_expires_after_seven_days(
    client: TestClient, db: Database, clock: FrozenClock, coordinator: str, browser: OpenBrowser
) -> None:
    token = invite(client, db, coordinator, patient_named(db, "Imani"), "sms")
    clock.advance(timedelta(days=8))
    response = browser().get(f"/invite/{token}")
    assert response.status_code == 410
    assert "This invitation link has expired" in response.text


def test_a_newer_invitation_replaces_the_older_one(
    client: TestClient, db: Database, coordinator: str, browser: OpenBrowser
) -> None:
    imani = patient_named(db, "Imani")
    older = invite(client, db, coordinator, imani, "sms")
    newer = invite(client, db, coordinator, imani, "sms")
    assert older != newer
    assert len(messages_to(db, imani.mobile_phone or "", MessagePurpose.INVITATION)) == 2

    patient = browser()
    replaced = patient.get(f"/invite/{older}")
    assert replaced.status_code == 410
    assert "replaced by a newer one" in replaced.text
    assert patient.get(f"/invite/{newer}").status_code == 200
    with db.factory() as session:
        first, second = session.scalars(select(Invitation).order_by(Invitation.id)).all()
        assert first.revoked_at is not None
        assert second.revoked_at is None
    assert "replaced" in client.get(f"/patients/{imani.id}").text


def test_a_printed_invitation_shows_the_link_once(
    client: TestClient, db: Database, coordinator: str
) -> None:
    imani = patient_named(db, "Imani")
    response = client.post(
        f"/patients/{imani.id}/invitations", data={"delivery": "print", "csrf_token": coordinator}
    )
    assert response.status_code == 200
    assert "This link is shown only once" in response.text
    assert "Dear Imani Davis" in response.text
    match = INVITE_LINK.search(response.text)
    assert match
    token = match.group(1)
    assert response.text.count(token) == 1

    # Nothing was texted, and the link is not shown anywhere afterwards.
    assert messages_to(db, imani.mobile_phone or "", MessagePurpose.INVITATION) == []
    record = client.get(f"/patients/{imani.id}")
    assert record.status_code == 200
    assert token not in record.text
    assert "open until" in record.text
    with db.factory() as session:
        [invitation] = session.scalars(select(Invitation)).all()
        assert invitation.token_hash == token_digest(token)


# --- forgotten passwords ---------------------------------------------------------------


def reset_code_for(db: Database, phone: str) -> str:
    message = messages_to(db, phone, MessagePurpose.PASSWORD_RESET)[-1]
    assert message.status is MessageStatus.SENT
    match = re.search(r"\b(\d{6})\b", message.body)
    assert match, message.body
    return match.group(1)


def test_a_texted_code_resets_the_password_and_ends_other_sessions(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    log_in(client, PATIENT_MD, clock)  # her phone, still logged in
    maya = patient_named(db, "Maya")
    assert maya.mobile_phone

    laptop = browser()
    token = csrf_token(laptop, "/password/forgot")
    asked = laptop.post("/password/forgot", data={"login": PATIENT_MD, "csrf_token": token})
    assert asked.status_code == 200
    assert "a code is on its way" in asked.text
    code = reset_code_for(db, maya.mobile_phone)

    def reset(with_code: str) -> httpx.Response:
        response: httpx.Response = laptop.post(
            "/password/reset",
            data={
                "login": PATIENT_MD,
                "code": with_code,
                "password": NEW_PASSWORD,
                "password_again": NEW_PASSWORD,
                "csrf_token": token,
            },
        )
        return response

    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _attempt in range(5):
        response = reset(wrong)
        assert response.status_code == 400
        assert "This code is not right or has expired" in response.text
    spent = reset(code)
    assert spent.status_code == 400
    assert "Ask for a new code" in spent.text
    with db.factory() as session:
        [pending] = session.scalars(select(PasswordResetCode)).all()
        assert pending.attempts == 5
        assert pending.used_at is not None
    assert client.get("/home").status_code == 200  # nothing changed yet

    laptop.post("/password/forgot", data={"login": PATIENT_MD, "csrf_token": token})
    new_code = reset_code_for(db, maya.mobile_phone)
    done = reset(new_code)
    assert done.status_code == 303
    assert done.headers["location"] == "/login?reset=1"
    outcomes = [event.outcome for event in audit_events(db, "password.reset")]
    assert outcomes == [AuditOutcome.FAILURE] * 6 + [AuditOutcome.SUCCESS]  # 5 wrong, 1 spent

    # The session on her phone is over; the new password works, the old one does not.
    assert client.get("/home").status_code == 303
    old = laptop.post(
        "/login", data={"login": PATIENT_MD, "password": DEMO_PASSWORD, "csrf_token": token}
    )
    assert old.status_code == 400
    assert post_login(laptop, PATIENT_MD, NEW_PASSWORD) == "/home"


def test_asking_for_a_code_looks_the_same_for_every_username(
    client: TestClient, db: Database
) -> None:
    with db.factory() as session:
        session.execute(update(User).where(User.login == "denise").values(phone_verified_at=None))
        session.commit()
    token = csrf_token(client, "/password/forgot")

    pages = {}
    for login in (PATIENT_CO, "denise", "nobody-by-this-name"):
        response = client.post("/password/forgot", data={"login": login, "csrf_token": token})
        assert response.status_code == 200
        pages[login] = response.text.replace(f'value="{login}"', 'value=""')
    assert pages[PATIENT_CO] == pages["denise"] == pages["nobody-by-this-name"]
    assert "If this account has a verified phone, a code is on its way." in pages["denise"]

    with db.factory() as session:
        sent = session.scalars(
            select(OutboundMessage).where(OutboundMessage.purpose == MessagePurpose.PASSWORD_RESET)
        ).all()
        andre = session.scalar(select(Patient).where(Patient.given_name == "Andre"))
        assert andre is not None
        assert [message.to_phone for message in sent] == [andre.mobile_phone]
        denise_codes = session.scalars(
            select(PasswordResetCode).where(
                PasswordResetCode.user_id == user_by_login(session, "denise").id
            )
        ).all()
        assert denise_codes == []


def ask_for_code(client: TestClient, login: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/password/forgot",
        data={"login": login, "csrf_token": csrf_token(client, "/password/forgot")},
    )
    return response


def test_reset_codes_are_limited_per_username_without_telling_who_exists(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    maya = patient_named(db, "Maya")
    phone = maya.mobile_phone or ""

    def texts() -> int:
        return len(messages_to(db, phone, MessagePurpose.PASSWORD_RESET))

    for asked in range(3):
        assert ask_for_code(client, PATIENT_MD).status_code == 200
        assert texts() == asked + 1
    pages = {}
    for login in (PATIENT_MD, "nobody-by-this-name"):
        if login != PATIENT_MD:
            for _asked in range(3):
                assert ask_for_code(client, login).status_code == 200
        refused = ask_for_code(client, login)
        assert refused.status_code == 429
        pages[login] = refused.text.replace(f'value="{login}"', 'value=""')
    assert "A code was asked for this username several times." in pages[PATIENT_MD]
    assert "Try again in 60 minutes." in pages[PATIENT_MD]
    # The same answer whether or not the account exists.
    assert pages[PATIENT_MD] == pages["nobody-by-this-name"]
    assert texts() == 3

    # From another address, the limit is the same: it belongs to the username.
    assert ask_for_code(browser(address="198.51.100.9"), PATIENT_MD).status_code == 429
    clock.advance(timedelta(minutes=61))
    for _asked in range(3):
        assert ask_for_code(client, PATIENT_MD).status_code == 200
    assert texts() == 6
    # At most 6 texts a day to one person, whoever asks.
    clock.advance(timedelta(minutes=61))
    tomorrow = ask_for_code(client, PATIENT_MD)
    assert tomorrow.status_code == 429
    assert "Try again in 22 hours." in tomorrow.text
    assert texts() == 6
    refusals = [
        event
        for event in audit_events(db, "password.reset_code")
        if event.outcome is AuditOutcome.FAILURE
    ]
    assert [event.detail for event in refusals] == [{"reason": "username_limit"}] * 4
    assert {event.patient_id for event in refusals} == {maya.id, None}


def test_reset_codes_are_limited_per_address(
    client: TestClient, db: Database, browser: OpenBrowser
) -> None:
    for number in range(10):
        assert ask_for_code(client, f"someone-{number}").status_code == 200
    refused = ask_for_code(client, PATIENT_MD)
    assert refused.status_code == 429
    assert "Too many codes were asked for from this network. Try again in 60 minutes." in (
        refused.text
    )
    assert (
        messages_to(db, patient_named(db, "Maya").mobile_phone or "", MessagePurpose.PASSWORD_RESET)
        == []
    )
    # Another address is not held back.
    assert ask_for_code(browser(address="198.51.100.9"), PATIENT_MD).status_code == 200


def test_wrong_reset_codes_count_toward_the_lock_and_are_audited(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    phone = browser(address="198.51.100.20")  # Maya's phone, where she logged in before
    phone.post("/logout", data={"csrf_token": log_in(phone, PATIENT_MD, clock)})
    maya = patient_named(db, "Maya")
    laptop = browser(address="203.0.113.66")
    ask_for_code(laptop, PATIENT_MD)
    code = reset_code_for(db, maya.mobile_phone or "")
    wrong = [f"{(int(code) + n) % 1_000_000:06d}" for n in range(1, 6)]
    for guess in wrong:
        response = laptop.post(
            "/password/reset",
            data={
                "login": PATIENT_MD,
                "code": guess,
                "password": NEW_PASSWORD,
                "password_again": NEW_PASSWORD,
                "csrf_token": csrf_token(laptop, "/password/forgot"),
            },
        )
        assert response.status_code == 400
    # Five wrong codes are five failures: that device is locked out of her account...
    assert try_login(laptop, PATIENT_MD, DEMO_PASSWORD) == 429
    # ...but not her phone.
    assert try_login(phone, PATIENT_MD, DEMO_PASSWORD) == 303

    failures = [
        event
        for event in audit_events(db, "password.reset")
        if event.outcome is AuditOutcome.FAILURE
    ]
    assert len(failures) == 5
    assert {event.patient_id for event in failures} == {maya.id}
    assert {event.ip for event in failures} == {"203.0.113.66"}
    assert [event.detail for event in failures] == [{"reason": "wrong_code"}] * 4 + [
        {"reason": "code_spent"}
    ]


# --- language --------------------------------------------------------------------------


def test_the_chosen_language_is_remembered_for_the_account(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    token = log_in(client, PATIENT_MD, clock)
    assert html_lang(client, "/home") == "en"
    switched = client.post("/language", data={"lang": "es", "next": "/home", "csrf_token": token})
    assert switched.status_code == 303
    assert switched.headers["location"] == "/home"
    assert html_lang(client, "/home") == "es"
    assert account(db, PATIENT_MD).preferred_language is Language.ES
    client.post("/logout", data={"csrf_token": token})

    # Another browser, without the language cookie: the account brings Spanish back.
    other = browser()
    log_in(other, PATIENT_MD, clock)
    assert other.cookies.get(LANGUAGE_COOKIE) == "es"
    assert html_lang(other, "/home") == "es"


def test_an_anonymous_visitor_keeps_the_language_in_a_cookie(
    client: TestClient, db: Database, browser: OpenBrowser
) -> None:
    assert html_lang(client, "/login") == "en"
    response = client.post(
        "/language", data={"lang": "es", "next": "/login", "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 303
    assert f"{LANGUAGE_COOKIE}=es" in response.headers["set-cookie"]
    assert html_lang(client, "/login") == "es"
    assert html_lang(client, "/password/forgot") == "es"
    # Nobody's account changed.
    assert account(db, PATIENT_MD).preferred_language is Language.EN

    # An unknown choice falls back to English; a Spanish browser gets Spanish at once.
    client.post("/language", data={"lang": "xx", "csrf_token": csrf_token(client)})
    assert html_lang(client, "/login") == "en"
    spanish_browser = browser()
    spanish_browser.headers["Accept-Language"] = "es-US,es;q=0.9,en;q=0.5"
    assert html_lang(spanish_browser, "/login") == "es"


# --- headers, cookies, logs ------------------------------------------------------------


def test_pages_carry_the_security_headers_without_hsts_on_plain_http(client: TestClient) -> None:
    response = client.get("/login")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in response.headers
    # The page needs no inline script or style that the policy would block.
    assert not re.search(r"<script(?![^>]*\bsrc=)", response.text)
    assert "style=" not in response.text


def _set_cookies(response: httpx.Response) -> dict[str, set[str]]:
    """The cookies a response sets: name -> its attributes, lower-case ("secure", "path=/")."""
    cookies = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        cookies[name] = {part.strip().lower() for part in header.split(";")[1:]}
    return cookies


def _is_host_cookie(attributes: set[str]) -> bool:
    """What a browser demands of a `__Host-` cookie: Secure, Path=/, no Domain."""
    return (
        "secure" in attributes
        and "path=/" in attributes
        and not any(part.startswith("domain") for part in attributes)
    )


def test_hsts_and_host_only_secure_cookies_when_served_over_https(
    client: TestClient, db: Database, clock: FrozenClock, browser: OpenBrowser
) -> None:
    secure_app = build_app(db, clock, public_base_url="https://followup.example.org")
    secure = browser(target=secure_app, base_url="https://testserver")
    page = secure.get("/login")
    assert page.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # The CSRF cookie cannot be planted from a sibling subdomain or over plain http.
    [(csrf_name, csrf_attributes)] = _set_cookies(page).items()
    assert csrf_name.startswith("__Host-")
    assert _is_host_cookie(csrf_attributes)

    response = secure.post(
        "/login",
        data={"login": PATIENT_MD, "password": DEMO_PASSWORD, "csrf_token": csrf_token(secure)},
    )
    assert response.status_code == 303
    security_cookies = {
        name: attributes
        for name, attributes in _set_cookies(response).items()
        if name != LANGUAGE_COOKIE
    }
    assert security_cookies, "the login set no session cookie"
    for name, attributes in security_cookies.items():
        assert name.startswith("__Host-"), name
        assert _is_host_cookie(attributes), name
    [session_name] = [name for name in security_cookies if "session" in name]
    assert secure.get("/home").status_code == 200

    # Only the prefixed cookie counts: the same session under the plain name opens nothing.
    session_value = secure.cookies[session_name]
    plain_name = session_name.removeprefix("__Host-")
    replay = browser(
        target=secure_app, base_url="https://testserver", cookies={plain_name: session_value}
    )
    assert replay.get("/home").headers["location"].startswith("/login")

    # Logging out clears the cookie with the attributes a browser needs to accept it.
    token = csrf_token(secure, "/home")
    out = secure.post("/logout", data={"csrf_token": token})
    assert out.status_code == 303
    cleared = _set_cookies(out)[session_name]
    assert _is_host_cookie(cleared)
    assert "max-age=0" in cleared
    assert secure.get("/home").headers["location"].startswith("/login")


def test_the_session_cookie_is_httponly_and_samesite_lax(client: TestClient) -> None:
    response = client.post(
        "/login",
        data={"login": PATIENT_MD, "password": DEMO_PASSWORD, "csrf_token": csrf_token(client)},
    )
    assert response.status_code == 303
    [session_cookie] = [
        value
        for value in response.headers.get_list("set-cookie")
        if value.startswith(f"{SESSION_COOKIE}=")
    ]
    attributes = {part.strip().lower() for part in session_cookie.split(";")[1:]}
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes  # plain http in this test
    # No lifetime: the browser forgets it when closed; the server enforces the timeouts.
    assert not any(part.startswith(("max-age", "expires")) for part in attributes)
    # The cookie holds a signed random token, not who the user is.
    assert PATIENT_MD not in session_cookie


def test_the_access_log_has_no_invitation_token_and_no_patient_name(
    client: TestClient,
    db: Database,
    coordinator: str,
    browser: OpenBrowser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cgt_access")
    imani = patient_named(db, "Imani")
    token = invite(client, db, coordinator, imani, "print")
    sms_token = invite(client, db, coordinator, imani, "sms")
    client.get(f"/patients/{imani.id}")
    client.post("/patients/search", data={"q": "Imani Davis", "csrf_token": coordinator})
    patient = browser()
    patient.get(f"/invite/{sms_token}")
    patient.post(
        f"/invite/{sms_token}",
        data={
            "login": "imani.d",
            "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD,
            "csrf_token": csrf_token(patient, f"/invite/{sms_token}"),
        },
    )
    patient.get(f"/invite/{token}")

    access = [
        record.getMessage() for record in caplog.records if record.name == "cgt_access.access"
    ]
    assert any(line.startswith("GET /invite/… 200") for line in access)
    assert any(line.startswith("POST /invite/… 303") for line in access)
    assert any(line.startswith("POST /patients/search 200") for line in access)
    assert any(line.startswith(f"GET /patients/{imani.id} 200") for line in access)
    everything = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (token, sms_token, "Imani", "Davis", imani.mobile_phone or "", NEW_PASSWORD):
        assert secret not in everything
