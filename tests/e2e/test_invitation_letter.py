"""End to end in Chromium (issue 10, defects 12 and 16): a coordinator prints the invitation
of a Spanish-speaking patient. The letter is in Spanish (the coordinator's notes around it
in English), carries a QR code of the link drawn in the page (no request to another host),
passes axe, and printing shows the letter alone. Opening the link, the invitation page is in
Spanish though the browser asks for English."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from playwright.sync_api import expect

from tests.conftest import COORDINATOR_MD
from tests.e2e.conftest import E2E, ContextFactory, LiveServer, TotpCodes, axe_check, screenshot
from tests.e2e.test_invitation_journey import log_in_staff, log_out

pytestmark = E2E

GIVEN, FAMILY = "Lucía", "García"  # Spanish on her record, no portal account (portal/demo.py)


def test_a_printed_invitation_is_in_the_persons_language_with_a_qr_code(
    new_context: ContextFactory, live_server: LiveServer, totp_codes: TotpCodes
) -> None:
    page = new_context().new_page()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    log_in_staff(page, COORDINATOR_MD, totp_codes)
    page.locator("#f-q").fill(GIVEN)
    page.get_by_role("button", name="Search").click()
    page.locator("#results tbody tr").get_by_role("link", name=f"{FAMILY}, {GIVEN}").click()
    portal_access = page.locator("section", has=page.locator("#portal-title"))
    portal_access.get_by_role("radio", name="On paper (print a letter)").check()
    portal_access.get_by_role("button", name="Send invitation").click()

    letter = page.locator("article.letter")
    expect(letter).to_have_attribute("lang", "es")
    expect(letter.get_by_role("heading", level=1)).to_have_text(
        "Su invitación al portal de seguimiento"
    )
    expect(page.get_by_role("status")).to_contain_text("This link is shown only once")
    qr = letter.get_by_role("img", name="Código QR de la dirección de la invitación")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None and box["width"] >= 120  # big enough for a phone's camera
    axe_check(page)
    screenshot(page, "invitation-letter")
    own_host = urlsplit(live_server.url).netloc
    assert all(urlsplit(url).netloc == own_host for url in asked), asked

    # Printed: the letter alone, without the coordinator's notes or the menu.
    page.emulate_media(media="print")
    expect(letter).to_be_visible()
    expect(page.get_by_role("status")).to_be_hidden()
    expect(page.locator(".main-nav")).to_be_hidden()
    page.emulate_media(media="screen")

    # The link opens in Spanish in an English-speaking browser.
    link = letter.locator("#invitation-url").inner_text()
    log_out(page)
    visitor = new_context().new_page()
    visitor.goto(link)
    expect(visitor.locator("html")).to_have_attribute("lang", "es")
    expect(visitor.get_by_role("heading", level=1)).to_have_text(
        f"Le damos la bienvenida, {GIVEN} {FAMILY}"
    )
    axe_check(visitor)
    # The usual switch still works.
    visitor.locator(".language-switch").get_by_role("button", name="English").click()
    expect(visitor).to_have_url(re.compile(r"/invite/[^?]+\?lang=en$"))
    expect(visitor.get_by_role("heading", level=1)).to_have_text(f"Welcome, {GIVEN} {FAMILY}")
