"""On a phone, in Chromium (issue 10, defects 13 and 16): the patient's and caregiver's
pages (home, schedule, learn, account, the report form) never scroll sideways at 390×844 or
320×568; the schedule reads as a list of visits whose dates are all on screen, the next
visit's date without scrolling; the header stays compact; phone numbers are `tel:` links on
one line; axe finds nothing serious. Staff: the worklist's filters show their whole choice.

The server of this module holds the demo's whole follow-up (visits booked, confirmed,
completed and missed), in English and in Spanish (Rosa)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect
from sqlalchemy import select

from core.clock import SystemClock
from core.db import make_engine, make_session_factory, transaction
from core.identity.models import User
from core.models import Patient
from portal.dev.demo import DEMO_PASSWORD, seed_demo_follow_up
from tests.conftest import CAREGIVER_CO, CAREGIVER_MD, COORDINATOR_MD, PATIENT_MD
from tests.e2e.conftest import (
    DESKTOP,
    E2E,
    PHONE,
    LiveServer,
    TotpCodes,
    axe_check,
    open_context,
    screenshot,
    serve_platform,
)

pytestmark = E2E

SMALL_PHONE: ViewportSize = {"width": 320, "height": 568}
PHONES = [pytest.param(PHONE, id="390x844"), pytest.param(SMALL_PHONE, id="320x568")]
# The header (with the demo banner under it) may take at most this share of the screen.
HEADER_SHARE = 0.3


@pytest.fixture(scope="module")
def phone_server(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The platform with the demo's follow-up: every demo patient has a schedule."""
    with serve_platform(tmp_path_factory.mktemp("phone")) as server:
        engine = make_engine(server.database_url)
        try:
            with transaction(make_session_factory(engine)) as session:
                users = {user.login or "": user for user in session.scalars(select(User))}
                seed_demo_follow_up(session, clock=SystemClock(), users=users)
        finally:
            engine.dispose()
        yield server


@pytest.fixture(scope="module")
def patient_ids(phone_server: LiveServer) -> dict[str, int]:
    engine = make_engine(phone_server.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            return {
                patient.given_name: patient.id
                for patient in session.scalars(
                    select(Patient).where(Patient.given_name.in_(["Maya", "Andre", "Imani"]))
                )
            }
    finally:
        engine.dispose()


def phone_page(browser: Browser, server: LiveServer, viewport: ViewportSize, login: str) -> Page:
    """A reader logged in on a phone-sized screen (a fresh context, closed with the test's
    browser context list by the caller)."""
    context = open_context(browser, server.url, viewport=viewport)
    page = context.new_page()
    page.goto("/login")
    page.locator("#f-login").fill(login)
    page.locator("#f-password").fill(DEMO_PASSWORD)
    page.locator("form", has=page.locator("#f-login")).locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/home$"))
    return page


def reader_pages(login: str, ids: dict[str, int]) -> list[str]:
    """The pages a patient or caregiver uses, with a report form where they may report."""
    own = {PATIENT_MD: ids["Maya"], CAREGIVER_MD: ids["Maya"], CAREGIVER_CO: ids["Andre"]}
    pages = ["/home", f"/care/{own[login]}/schedule", "/learn", "/account"]
    if login in (PATIENT_MD, CAREGIVER_MD):  # Rosa may not report for Andre
        pages.append(f"/care/{own[login]}/report")
    if login == CAREGIVER_MD:
        pages.append(f"/care/{ids['Imani']}/schedule")  # seeing only, no forms
    return pages


def outside(page: Page, selector: str) -> list[str]:
    """The elements matching `selector` whose box sticks out of the viewport's width."""
    found: list[str] = page.evaluate(
        """selector => [...document.querySelectorAll(selector)]
            .filter(e => { const r = e.getBoundingClientRect();
                           return r.width > 0 && (r.left < -0.5 || r.right > innerWidth + 0.5); })
            .map(e => e.outerHTML.slice(0, 120))""",
        selector,
    )
    return found


def sideways(page: Page) -> list[str]:
    """The page is wider than the screen, or something in it sticks out."""
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    problems = [f"the page is {overflow}px wider than the screen"] if overflow > 0 else []
    return problems + [f"sticks out: {html}" for html in outside(page, "main *")]


def header_problems(page: Page, viewport: ViewportSize) -> list[str]:
    bottom = page.evaluate(
        "Math.max(...[...document.querySelectorAll('.site-header, .demo-banner')]"
        ".map(e => e.getBoundingClientRect().bottom))"
    )
    if bottom <= HEADER_SHARE * viewport["height"]:
        return []
    return [f"the header ends at {bottom:.0f}px of {viewport['height']}px"]


def phone_number_problems(page: Page) -> list[str]:
    """Every phone number shown stays on one line, and the program's is a tel: link."""
    links = page.locator("a[href^='tel:']")
    problems = [
        f"a tel: link to {href!r}"
        for href in links.evaluate_all("links => links.map(a => a.getAttribute('href'))")
        if not re.fullmatch(r"tel:\+\d{11}", href or "")
    ]
    broken: list[str] = page.evaluate(
        r"""() => {
            const number = /\(\d{3}\)\s\d{3}-\d{4}/;
            const walker = document.createTreeWalker(document.querySelector('main'),
                                                     NodeFilter.SHOW_TEXT);
            const found = [];
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                if (!number.test(node.data)) continue;
                const range = document.createRange();
                const start = node.data.search(number);
                range.setStart(node, start);
                range.setEnd(node, start + 14);
                const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
                const style = getComputedStyle(node.parentElement).whiteSpace;
                if (tops.size > 1 || style !== 'nowrap') found.push(node.data.trim());
            }
            return found;
        }"""
    )
    problems += [f"a phone number that may break: {text!r}" for text in broken]
    text = page.locator("main").inner_text()
    for program in ("(410) 555-0100", "(303) 555-0100"):
        if program in text and not links.filter(has_text=program).count():
            problems.append(f"{program} is not a tel: link")
    return problems


@pytest.mark.parametrize("viewport", PHONES)
@pytest.mark.parametrize("login", [PATIENT_MD, CAREGIVER_MD, CAREGIVER_CO])
def test_reader_pages_fit_a_phone(
    browser: Browser,
    phone_server: LiveServer,
    patient_ids: dict[str, int],
    viewport: ViewportSize,
    login: str,
) -> None:
    page = phone_page(browser, phone_server, viewport, login)
    problems: list[str] = []
    try:
        for path in reader_pages(login, patient_ids):
            response = page.goto(path)
            assert response is not None and response.status == 200, path
            screenshot(
                page, f"phone-{login}-{viewport['width']}-{path.strip('/').replace('/', '-')}"
            )
            found = sideways(page) + header_problems(page, viewport)
            problems += [f"{path}: {problem}" for problem in found + phone_number_problems(page)]
        assert problems == [], "\n".join(problems)
        for path in reader_pages(login, patient_ids):
            page.goto(path)
            axe_check(page)
    finally:
        page.context.close()


@pytest.mark.parametrize("viewport", PHONES)
@pytest.mark.parametrize("login", [PATIENT_MD, CAREGIVER_CO])
def test_the_next_visits_date_is_on_screen_and_the_schedule_is_a_list(
    browser: Browser,
    phone_server: LiveServer,
    patient_ids: dict[str, int],
    viewport: ViewportSize,
    login: str,
) -> None:
    patient = patient_ids["Maya" if login == PATIENT_MD else "Andre"]
    page = phone_page(browser, phone_server, viewport, login)
    try:
        page.goto(f"/care/{patient}/schedule")
        when = page.locator("#next-visit-when")
        expect(when).to_be_visible()
        box = when.bounding_box()
        assert box is not None
        assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (
            f"the next visit's date is at {box['y']:.0f}-{box['y'] + box['height']:.0f}px, "
            f"below the {viewport['height']}px screen"
        )
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
        # Later and past visits: one card per visit, every date on screen (no table to
        # scroll inside).
        visits = page.locator(".visit-list > li")
        assert visits.count() > 5
        assert page.locator("#schedule table").count() == 0
        assert outside(page, ".visit-list *") == []
    finally:
        page.context.close()


def test_the_worklist_filters_show_their_whole_choice(
    browser: Browser, phone_server: LiveServer
) -> None:
    """The selects of the worklist's filters are as wide as the words they show, on a
    desktop and on a phone."""
    tablet: ViewportSize = {"width": 800, "height": 900}
    # One login (a third one within a TOTP step would wait for the clock), then the same
    # page at each width, loaded again. This server's TOTP steps are its own.
    totp = TotpCodes()
    context = open_context(browser, phone_server.url, viewport=DESKTOP)
    page = context.new_page()
    try:
        page.goto("/login")
        page.locator("#f-login").fill(COORDINATOR_MD)
        page.locator("#f-password").fill(DEMO_PASSWORD)
        page.locator("form", has=page.locator("#f-login")).locator("button[type=submit]").click()
        page.locator("#f-code").fill(totp.code_for(COORDINATOR_MD))
        page.get_by_role("button", name="Continue").click()
        expect(page).to_have_url(re.compile(r"/worklist$"))
        for viewport in (DESKTOP, tablet, PHONE):
            page.set_viewport_size(viewport)
            page.reload()
            cut = page.evaluate(
                """() => [...document.querySelectorAll('#worklist-filters select')].filter(s => {
                    const shown = s.getBoundingClientRect().width;
                    const before = [s.style.width, s.style.maxWidth];
                    s.style.width = 'auto'; s.style.maxWidth = 'none';
                    const needed = s.getBoundingClientRect().width;
                    [s.style.width, s.style.maxWidth] = before;
                    return shown + 0.5 < Math.min(needed, innerWidth - 32);
                }).map(s => s.id)"""
            )
            assert cut == [], f"cut at {viewport['width']}px: {cut}"
            # Its table may scroll inside its own box; the page does not.
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"the worklist is {overflow}px wider than the screen"
    finally:
        context.close()
