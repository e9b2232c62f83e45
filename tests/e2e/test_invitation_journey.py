"""End to end in Chromium: a coordinator invites a patient by text message, the patient
sets a password from the link and uses the portal in English and Spanish; the pages work
without JavaScript; the htmx search swaps only the results."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, Request, expect

from portal.dev.demo import DEMO_PASSWORD
from tests.conftest import COORDINATOR_CO, COORDINATOR_MD
from tests.e2e.conftest import (
    DESKTOP,
    E2E,
    PHONE,
    ContextFactory,
    LiveServer,
    TotpCodes,
    assert_no_horizontal_scroll,
    axe_check,
    screenshot,
)

pytestmark = E2E

# A Maryland demo patient with a mobile phone and no portal account yet (portal/demo.py).
INVITEE_GIVEN, INVITEE_FAMILY = "Zoe", "Harris"
INVITEE_PHONE = "(410) 555-0116"
INVITEE_LOGIN = "zoe.harris"
INVITEE_PASSWORD = "lanterns by the harbor 2026"


def log_in_staff(
    page: Page, login: str, totp_codes: TotpCodes, *, check_a11y: bool = False
) -> None:
    """Password, then the authenticator code; lands on the coordinator's start page (the
    worklist), then opens the patient list from the menu."""
    page.goto("/login")
    if check_a11y:
        axe_check(page)
    page.locator("#f-login").fill(login)
    page.locator("#f-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/login/mfa"))
    if check_a11y:
        axe_check(page)
    page.locator("#f-code").fill(totp_codes.code_for(login))
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(re.compile(r"/worklist$"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Patients").click()
    expect(page).to_have_url(re.compile(r"/patients$"))


def log_out(page: Page) -> None:
    # The button's words depend on the language: find it by its form.
    page.locator("form[action='/logout'] button").click()
    expect(page).to_have_url(re.compile(r"/login\?logged_out=1$"))


def check_layout(page: Page, name: str) -> None:
    """The page fits a phone's width; screenshots at both sizes when asked for."""
    screenshot(page, f"{name}-desktop")
    page.set_viewport_size(PHONE)
    assert_no_horizontal_scroll(page)
    screenshot(page, f"{name}-phone")
    page.set_viewport_size(DESKTOP)


def newest_invitation_link(page: Page, phone: str) -> str:
    """The link in the newest text to `phone` on the demo outbox page (waits for it)."""
    deadline = time.monotonic() + 10
    while True:
        page.goto("/demo/messages")
        row = page.locator("#messages tbody tr").first
        if row.count() and phone in row.inner_text():
            break
        assert time.monotonic() < deadline, f"no text to {phone} on /demo/messages"
        time.sleep(0.2)
    expect(row).to_contain_text("Invitation")
    href = row.locator("td.message-body a").get_attribute("href")
    assert href is not None
    return href


def test_coordinator_invites_patient_who_joins_and_switches_to_spanish(
    new_context: ContextFactory, live_server: LiveServer, totp_codes: TotpCodes
) -> None:
    page = new_context().new_page()

    # The coordinator logs in with the password and the authenticator code.
    log_in_staff(page, COORDINATOR_MD, totp_codes, check_a11y=True)
    expect(page.get_by_role("heading", level=1)).to_have_text("Patients")
    axe_check(page)
    check_layout(page, "patients")

    # Searches the patient (htmx swaps the results) and opens the record.
    page.locator("#f-q").fill(INVITEE_GIVEN)
    page.get_by_role("button", name="Search").click()
    results = page.locator("#results tbody tr")
    expect(results).to_have_count(1)
    results.get_by_role("link", name=f"{INVITEE_FAMILY}, {INVITEE_GIVEN}").click()
    expect(page).to_have_url(re.compile(r"/patients/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(
        f"{INVITEE_GIVEN} {INVITEE_FAMILY}"
    )
    axe_check(page)

    # Sends the invitation by text message.
    portal_access = page.locator("section", has=page.locator("#portal-title"))
    portal_access.get_by_role("radio", name="By text message").check()
    portal_access.get_by_role("button", name="Send invitation").click()
    expect(page).to_have_url(re.compile(r"/patients/\d+\?done=invited_sms$"))
    expect(page.get_by_role("status")).to_have_text("The invitation was texted.")
    expect(portal_access.get_by_role("listitem")).to_have_count(1)
    axe_check(page)
    check_layout(page, "record")
    log_out(page)

    # The demo outbox shows the text; its link opens the invitation.
    link = newest_invitation_link(page, INVITEE_PHONE)
    assert link.startswith(f"{live_server.url}/invite/")
    axe_check(page)
    page.locator("#messages tbody tr").first.locator("td.message-body a").click()
    expect(page).to_have_url(link)
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Welcome, {INVITEE_GIVEN} {INVITEE_FAMILY}"
    )
    axe_check(page)

    # The patient chooses a username and a password, then logs in.
    page.locator("#f-login").fill(INVITEE_LOGIN)
    page.locator("#f-password").fill(INVITEE_PASSWORD)
    page.locator("#f-password_again").fill(INVITEE_PASSWORD)
    page.get_by_role("button", name="Save and continue").click()
    expect(page).to_have_url(re.compile(r"/login\?welcome=1$"))
    expect(page.get_by_role("status")).to_have_text("Your password is set. You can log in now.")
    axe_check(page)
    page.locator("#f-login").fill(INVITEE_LOGIN)
    page.locator("#f-password").fill(INVITEE_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # The patient's home, in English.
    expect(page).to_have_url(re.compile(r"/home$"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {INVITEE_GIVEN}")
    axe_check(page)
    check_layout(page, "home")

    # The header's language switch: the same page in Spanish.
    page.locator(".language-switch").get_by_role("button", name="Español").click()
    expect(page).to_have_url(re.compile(r"/home$"))
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.locator(".language-switch [aria-current='true']")).to_have_text("Español")
    axe_check(page)
    check_layout(page, "home-es")

    # The choice is kept with the account: still Spanish after a reload.
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "es")
    log_out(page)

    # The invitation link works only once.
    page.goto(link)
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.locator("#f-password")).to_have_count(0)


def test_pages_work_without_javascript(new_context: ContextFactory, totp_codes: TotpCodes) -> None:
    page = new_context(javascript=False).new_page()
    log_in_staff(page, COORDINATOR_MD, totp_codes)
    expect(page.locator("#results tbody tr")).to_have_count(15)

    # The plain form posts the search; the name stays out of the address.
    page.locator("#f-q").fill("Imani")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"/patients/search$"))
    assert "Imani" not in page.url
    expect(page.get_by_role("heading", level=1)).to_have_text("Patients")
    results = page.locator("#results tbody tr")
    expect(results).to_have_count(1)
    expect(page.locator("#f-q")).to_have_value("Imani")

    results.get_by_role("link", name="Davis, Imani").click()
    expect(page).to_have_url(re.compile(r"/patients/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Imani Davis")
    log_out(page)


def test_htmx_search_swaps_only_the_results(
    new_context: ContextFactory, live_server: LiveServer, totp_codes: TotpCodes
) -> None:
    # Under the app's real CSP: htmx must work with script-src 'self'.
    page = new_context(bypass_csp=False).new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    requested: list[Request] = []
    page.on("request", lambda request: requested.append(request))

    log_in_staff(page, COORDINATOR_CO, totp_codes)
    expect(page.locator("#results tbody tr")).to_have_count(15)
    list_url = page.url
    # Marks on the old page: they survive only if the page is not reloaded.
    page.evaluate(
        "document.querySelector('h1').dataset.e2e = 'kept';"
        "document.getElementById('results').dataset.e2e = 'old'"
    )

    with page.expect_response(lambda response: response.url.endswith("/patients/search")) as info:
        page.locator("#f-q").press_sequentially("Mateo")
    response = info.value
    assert response.request.method == "POST"
    assert response.request.headers.get("hx-request") == "true"
    fragment = response.text()
    assert fragment.lstrip().startswith('<div id="results">'), fragment[:200]
    assert "<html" not in fragment and "<h1" not in fragment

    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Martínez, Mateo")
    expect(page.locator("#results")).not_to_have_attribute("data-e2e", "old")
    expect(page.locator("h1")).to_have_attribute("data-e2e", "kept")
    expect(page.locator("#f-q")).to_have_value("Mateo")
    assert page.url == list_url
    seen = [request.url for request in requested]
    assert not [url for url in seen if "Mateo" in url or "Mart" in url], seen
    assert all(url.startswith(live_server.url) for url in seen), seen
    assert not problems, problems
