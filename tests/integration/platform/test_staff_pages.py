"""Staff land where their work is (issue 10, defect 16): a coordinator logs in to the
worklist, which opens on the first bucket that has rows rather than on an empty one; admins
keep their admin home. The footer that tells patients to call their care team or 911 is for
patients and caregivers, not for staff pages.

Page tests run as plain requests and as htmx requests; every test on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordination.followup.models import PatientReport, ReportKind, ReportStatus
from core.clock import FrozenClock
from core.models import Patient
from portal.dev.demo import DEMO_PASSWORD
from tests.conftest import (
    ADMIN,
    ANALYST,
    CAREGIVER_MD,
    COORDINATOR_MD,
    PATIENT_MD,
    Browser,
    Database,
    csrf_token,
    totp_now,
    user_by_login,
)

BOTH_WAYS = pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
PATIENT_FOOTER = "Questions about your care? Call your care team."


def current_tab(markup: str) -> str:
    match = re.search(
        r'href="/worklist\?bucket=(\w+)[^"]*" class="button"[^>]*aria-current', markup
    )
    assert match, "no current tab"
    return match.group(1)


@pytest.fixture
def one_report(db: Database, clock: FrozenClock) -> int:
    """The test world has no visits, so only the reports bucket has a row: Maya's report."""
    with db.factory() as session:
        maya = session.scalar(select(Patient).where(Patient.given_name == "Maya"))
        assert maya is not None
        session.add(
            PatientReport(
                patient_id=maya.id,
                kind=ReportKind.PAIN_CRISIS,
                occurred_on=date(2026, 11, 25),
                reported_by_user_id=user_by_login(session, PATIENT_MD).id,
                reported_at=clock.now() - timedelta(hours=3),
                status=ReportStatus.NEW,
            )
        )
        session.commit()
        return maya.id


@BOTH_WAYS
def test_the_worklist_opens_on_the_first_bucket_with_rows(
    browsers: Callable[[str], Browser], one_report: int, htmx: bool
) -> None:
    coordinator = browsers(COORDINATOR_MD)
    page = coordinator.get("/worklist", htmx=htmx)
    assert page.status_code == 200
    assert current_tab(page.text) == "reports"
    assert f'href="/patients/{one_report}/reports/' in page.text
    # A bucket asked for by name is shown even when empty.
    overdue = coordinator.get("/worklist?bucket=overdue", htmx=htmx)
    assert current_tab(overdue.text) == "overdue"
    assert "Nothing to do here." in overdue.text


def test_an_empty_worklist_opens_on_overdue(browsers: Callable[[str], Browser]) -> None:
    page = browsers(COORDINATOR_MD).get("/worklist")
    assert current_tab(page.text) == "overdue"


def _landing(client: TestClient, clock: FrozenClock, login: str) -> str:
    """Where the login (and, for staff, the authenticator code) sends the browser."""
    token = csrf_token(client)
    response = client.post(
        "/login", data={"login": login, "password": DEMO_PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 303
    if response.headers["location"].startswith("/login/mfa"):
        # The login session's own token: the login page's stops working once logged in.
        token = csrf_token(client, "/password/forgot")
        response = client.post("/login/mfa", data={"code": totp_now(clock), "csrf_token": token})
        clock.advance(timedelta(seconds=31))
        assert response.status_code == 303
    return str(response.headers["location"])


@pytest.mark.parametrize(
    ("login", "home"),
    [
        (COORDINATOR_MD, "/worklist"),
        (ADMIN, "/admin/users"),
        (ANALYST, "/reports"),
        (PATIENT_MD, "/home"),
        (CAREGIVER_MD, "/home"),
    ],
)
def test_each_role_lands_on_its_start_page(
    client: TestClient, clock: FrozenClock, login: str, home: str
) -> None:
    assert _landing(client, clock, login) == home
    assert client.get("/").headers["location"] == home


@BOTH_WAYS
@pytest.mark.parametrize(
    ("login", "path"),
    [(COORDINATOR_MD, "/worklist"), (COORDINATOR_MD, "/patients"), (ADMIN, "/admin/users")],
)
def test_staff_pages_carry_no_patient_footer(
    browsers: Callable[[str], Browser], login: str, path: str, htmx: bool
) -> None:
    page = browsers(login).get(path, htmx=htmx)
    assert page.status_code == 200
    assert PATIENT_FOOTER not in page.text
    assert "call 911" not in page.text


@pytest.mark.parametrize("login", [PATIENT_MD, CAREGIVER_MD])
def test_patients_and_caregivers_keep_their_footer(
    browsers: Callable[[str], Browser], login: str
) -> None:
    page = browsers(login).get("/home")
    assert PATIENT_FOOTER in page.text
    assert "In an emergency, call 911." in page.text
