"""End to end in Chromium: the education journey of issue 5.

Andre, a Colorado patient who reads Spanish, opens "Aprender", starts the Casgevy module
and reads its first section (the htmx "Siguiente" step); he leaves, and on another device
(a new browser, a new login) the module resumes at the section where he stopped. He reads
on, answers the knowledge check (one answer wrong first: the feedback and a retry) and
completes the module. His grandmother Rosa, a caregiver with the right to see his
education, sees the completion; the Colorado coordinator sees it with its version and
score on the patient's education page, then takes that right from Rosa, who from then on
is refused his progress and finds only her own reading.

The pages speak Spanish: the expected words come from the Spanish catalog itself (a string
not translated yet is expected in English, as the page shows it), or from the module's
Spanish text. The journey changes data (a language, a proxy right, a completion) that other
e2e tests count on: it runs on a server of its own."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Request, expect
from sqlalchemy import select, update

from core.db import make_engine, make_session_factory, transaction
from core.identity.models import User
from core.models import Language, Patient, ProxyRight
from education.content import Module, shipped_modules
from portal import i18n
from portal.dev.demo import DEMO_PASSWORD
from tests.conftest import CAREGIVER_CO, COORDINATOR_CO, PATIENT_CO
from tests.e2e.conftest import (
    E2E,
    LiveServer,
    TotpCodes,
    axe_check,
    open_context,
    screenshot,
    serve_platform,
)
from tests.e2e.test_invitation_journey import log_in_staff, log_out

pytestmark = E2E

# Andre Williams (Colorado, treated with Casgevy) and his grandmother Rosa (portal/demo.py).
GIVEN, FAMILY = "Andre", "Williams"
CAREGIVER_NAME = "Rosa García"
MODULE_KEY = "casgevy-what-to-know"  # offered because Andre was treated with Casgevy
WRONG_FIRST = "q1"  # answered wrong at the first try, then right: the score is one less


@pytest.fixture(scope="module")
def journey_server(
    e2e_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with serve_platform(tmp_path_factory.mktemp("education")) as server:
        yield server


@pytest.fixture(scope="module")
def andre_id(journey_server: LiveServer) -> int:
    """Andre's record id; the precondition: he reads Spanish (his record and his login)."""
    engine = make_engine(journey_server.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            patient = session.scalars(
                select(Patient).where(Patient.given_name == GIVEN, Patient.family_name == FAMILY)
            ).one()
            patient.preferred_language = Language.ES
            session.execute(
                update(User).where(User.login == PATIENT_CO).values(preferred_language=Language.ES)
            )
            return patient.id
    finally:
        engine.dispose()


@pytest.fixture
def browsers(browser: Browser, journey_server: LiveServer) -> Iterator[Callable[[], Page]]:
    """A page in a fresh browser context (another device: no cookies) on the journey's
    server; every context is closed at the end."""
    contexts: list[BrowserContext] = []

    def new_page() -> Page:
        context = open_context(browser, journey_server.url)
        contexts.append(context)
        return context.new_page()

    try:
        yield new_page
    finally:
        for context in contexts:
            context.close()


# --- words and helpers -------------------------------------------------------------------


def es(msgid: str, **params: Any) -> str:
    """What a Spanish page says for `msgid` (English while the catalog lacks it)."""
    text = i18n.catalog(Language.ES).gettext(msgid)
    return text % params if params else text


def es_pattern(msgid: str, **params: Any) -> re.Pattern[str]:
    """`es(msgid)` as a pattern: the given values filled in, any other one matches anything
    (a date written out in Spanish, say)."""
    parts = re.split(r"(%\(\w+\)[sd])", i18n.catalog(Language.ES).gettext(msgid))
    pattern = ""
    for part in parts:
        found = re.fullmatch(r"%\((\w+)\)[sd]", part)
        if found is None:
            pattern += re.escape(part)
        elif found.group(1) in params:
            pattern += re.escape(str(params[found.group(1)]))
        else:
            pattern += ".+?"
    return re.compile(pattern)


def module() -> Module:
    found = shipped_modules().get(MODULE_KEY)
    assert found is not None
    return found


def log_in_reader(page: Page, login: str) -> None:
    """A patient or caregiver logs in (no second factor): lands on the home page."""
    page.goto("/login")
    page.locator("#f-login").fill(login)
    page.locator("#f-password").fill(DEMO_PASSWORD)
    page.locator("form", has=page.locator("#f-login")).locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/home$"))


def record_requests(page: Page) -> list[str]:
    """Every URL the page asks for from now on."""
    seen: list[str] = []

    def keep(request: Request) -> None:
        seen.append(request.url)

    page.on("request", keep)
    return seen


def assert_only_own_host(urls: list[str], server: LiveServer) -> None:
    """Nothing was fetched from another host (inline data: and blob: URLs are no fetch)."""
    own = urlsplit(server.url).netloc
    elsewhere = [
        url
        for url in urls
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != own
    ]
    assert not elsewhere, elsewhere
    assert any(f"/learn/{MODULE_KEY}/" in url for url in urls), urls  # the recording works


def section_card(page: Page, number: int) -> None:
    """The section `number` is shown: its Spanish title and the step in the progress bar."""
    sections = module().text("es").sections
    count = len(sections)
    card = page.locator("#section")
    expect(card.locator("#section-title")).to_have_text(sections[number - 1].title)
    expect(card.locator("#section-step")).to_have_text(
        es("Section %(number)s of %(count)s", number=number, count=count)
    )
    expect(card.locator("progress")).to_have_attribute("value", str(number))
    expect(page).to_have_url(re.compile(rf"/learn/{MODULE_KEY}/{sections[number - 1].id}$"))


def module_card(page: Page) -> Locator:
    """The module's card on the /learn list."""
    return page.locator("li.learn-card", has=page.locator(f"#module-{MODULE_KEY}"))


# --- the steps ---------------------------------------------------------------------------


def patient_starts_then_leaves(page: Page, server: LiveServer) -> None:
    """Session 1: Andre opens his lessons in Spanish, reads the first section, leaves."""
    text = module().text("es")
    requests = record_requests(page)
    log_in_reader(page, PATIENT_CO)
    expect(page.locator("html")).to_have_attribute("lang", "es")

    learn = page.locator("nav.main-nav a[href='/learn']")
    expect(learn).to_have_text(es("Learn"))
    learn.click()
    expect(page).to_have_url(re.compile(r"/learn$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(es("Learn"))
    # The modules in Spanish: this one (for his therapy) with its Spanish title and summary.
    card = module_card(page)
    expect(card.get_by_role("heading", level=2)).to_have_text(text.title)
    expect(card).to_contain_text(text.summary)
    expect(card).to_contain_text(es("Not started"))
    expect(page.locator("#module-lyfgenia-what-to-know")).to_have_count(0)  # not his therapy
    axe_check(page)
    screenshot(page, "learn-list-es")

    card.locator(f"a[href='/learn/{MODULE_KEY}']").click()
    section_card(page, 1)
    expect(page.get_by_role("heading", level=1)).to_have_text(text.title)
    axe_check(page)
    screenshot(page, "learn-section-1")

    # "Siguiente" (htmx): the next section swaps in, the address follows, no page load.
    page.evaluate("document.querySelector('h1').dataset.e2e = 'kept'")
    with page.expect_response(
        lambda response: (
            response.request.method == "POST"
            and response.url.endswith(f"/learn/{MODULE_KEY}/{text.sections[0].id}")
        )
    ) as info:
        page.locator("#section").get_by_role("button", name=es("Next")).click()
    assert info.value.request.headers.get("hx-request") == "true"
    section_card(page, 2)
    expect(page.locator("h1")).to_have_attribute("data-e2e", "kept")
    expect(page.locator("#section").get_by_role("link", name=es("Previous"))).to_have_attribute(
        "href", f"/learn/{MODULE_KEY}/{text.sections[0].id}"
    )
    assert_only_own_host(requests, server)
    log_out(page)


def patient_resumes_and_completes(page: Page, server: LiveServer) -> None:
    """Session 2, another browser: the module resumes at section 2; Andre reads on and
    passes the knowledge check."""
    text = module().text("es")
    count = len(text.sections)
    requests = record_requests(page)
    log_in_reader(page, PATIENT_CO)
    page.locator("nav.main-nav a[href='/learn']").click()

    # The list says where he stopped; the module's link opens that section.
    card = module_card(page)
    expect(card.locator(f"#progress-{MODULE_KEY}")).to_have_text(
        es("Section %(number)s of %(count)s", number=2, count=count)
    )
    expect(card.locator(f"a[href='/learn/{MODULE_KEY}']")).to_contain_text(es("Continue"))
    card.locator(f"a[href='/learn/{MODULE_KEY}']").click()
    section_card(page, 2)

    # On to the last section, then to the questions.
    for number in range(2, count):
        page.locator("#section").get_by_role("button", name=es("Next")).click()
        section_card(page, number + 1)
    page.locator("#section").get_by_role("button", name=es("Go to the questions")).click()
    expect(page).to_have_url(re.compile(rf"/learn/{MODULE_KEY}/check$"))
    expect(page.locator("#check-title")).to_have_text(es("Check what you learned"))
    axe_check(page)
    screenshot(page, "learn-check")
    assert_only_own_host(requests, server)

    # A wrong answer first: the feedback and its explanation; the question stays open.
    check = page.locator("#check")
    question = {q.id: q for q in text.questions}[WRONG_FIRST]
    wrong = next(i for i in range(len(question.choices)) if i != question.answer)
    fieldset = check.locator(f"#question-{WRONG_FIRST}")
    fieldset.locator(f"input[value='{wrong}']").check()
    fieldset.get_by_role("button", name=es("Check this answer")).click()
    fieldset = page.locator(f"#question-{WRONG_FIRST}")
    expect(fieldset).to_have_class(re.compile(r"\bis-wrong\b"))
    feedback = fieldset.locator(f"#feedback-{WRONG_FIRST}")
    expect(feedback).to_contain_text(es("Not quite. Try again."))
    expect(feedback).to_contain_text(question.explanation)
    expect(fieldset.locator(f"input[value='{wrong}']")).to_be_checked()
    axe_check(page)
    screenshot(page, "learn-check-wrong")

    # The retry, right this time.
    fieldset.locator(f"input[value='{question.answer}']").check()
    fieldset.get_by_role("button", name=es("Check this answer")).click()
    fieldset = page.locator(f"#question-{WRONG_FIRST}")
    expect(fieldset).to_have_class(re.compile(r"\bis-right\b"))
    expect(fieldset.locator(f"#feedback-{WRONG_FIRST}")).to_contain_text(es("Right."))
    expect(fieldset.get_by_role("button")).to_have_count(0)

    # The others right at the first try, all checked at once: the module is completed.
    for other in text.questions:
        if other.id != WRONG_FIRST:
            page.locator(f"#question-{other.id} input[value='{other.answer}']").check()
    page.locator("#check").get_by_role("button", name=es("Check my answers")).click()
    done = page.locator("#check").get_by_role("status")
    expect(done).to_contain_text(es("Well done: you completed this lesson."))
    score, questions = len(text.questions) - 1, len(text.questions)
    expect(done).to_contain_text(
        es_pattern(
            "You answered %(score)s of %(count)s questions right the first time.",
            score=score,
            count=questions,
        )
    )
    expect(done).to_contain_text(
        es_pattern("Completed on %(day)s (version %(version)s).", version=module().version)
    )
    expect(page.locator("#check fieldset")).to_have_count(0)
    axe_check(page)
    screenshot(page, "learn-check-done")
    assert_only_own_host(requests, server)

    # The list shows it completed, with the score.
    page.locator("nav.main-nav a[href='/learn']").click()
    card = module_card(page)
    expect(card.locator(".badge-ok")).to_have_text(es("Completed"))
    expect(card).to_contain_text(
        es("%(score)s of %(count)s right the first time", score=score, count=questions)
    )
    log_out(page)


def caregiver_with_the_right_sees_it(page: Page, patient_id: int) -> None:
    """Rosa may see Andre's education: his completion, on a page of its own."""
    log_in_reader(page, CAREGIVER_CO)
    expect(page.locator("html")).to_have_attribute("lang", "es")
    page.locator(f"a[href='/care/{patient_id}/learning']").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        es("What %(name)s has learned", name=GIVEN)
    )
    reading = page.locator("article", has=page.locator(f"#reading-{MODULE_KEY}"))
    expect(reading).to_contain_text(module().text("es").title)
    expect(reading.locator(".badge-ok")).to_have_text(es("Completed"))
    questions = len(module().text("es").questions)
    expect(reading).to_contain_text(
        es_pattern(
            "Completed on %(date)s: %(score)d of %(questions)d right at the first try.",
            score=questions - 1,
            questions=questions,
        )
    )


def coordinator_sees_it_and_takes_the_right(page: Page, totp: TotpCodes, patient_id: int) -> None:
    """The Colorado coordinator: the completion with its version and score; Rosa's reading
    is her own (nothing yet); then Rosa's right to see Andre's education is taken away."""
    title = module().text("en").title
    questions = len(module().text("en").questions)
    log_in_staff(page, COORDINATOR_CO, totp)
    page.goto(f"/patients/{patient_id}")
    page.locator("#education-link a").click()
    expect(page).to_have_url(re.compile(rf"/patients/{patient_id}/education$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Education: {GIVEN} {FAMILY}")

    own = page.locator(
        "section", has=page.get_by_role("heading", name=f"{GIVEN} {FAMILY}, the patient")
    )
    reading = own.locator("article", has=page.get_by_role("heading", name=title))
    expect(reading.locator(".badge-ok")).to_have_text("Completed")
    expect(reading).to_contain_text(
        f"Version {module().version}: {questions - 1} of {questions} right at the first try"
    )
    rosa = page.locator(
        "section",
        has=page.get_by_role("heading", name=re.compile(rf"^{CAREGIVER_NAME}, caregiver")),
    )
    expect(rosa).to_contain_text("Nothing assigned, started or completed yet.")
    axe_check(page)
    screenshot(page, "patient-education")

    # Rosa's rights, on the record: no more "see the education".
    page.get_by_role("link", name=f"Back to the record of {GIVEN} {FAMILY}").click()
    rights = page.locator("form", has=page.locator("legend", has_text=CAREGIVER_NAME))
    box = rights.locator(f"input[name='rights'][value='{ProxyRight.VIEW_EDUCATION.value}']")
    expect(box).to_be_checked()
    box.uncheck()
    rights.get_by_role("button", name="Save rights").click()
    expect(page).to_have_url(re.compile(rf"/patients/{patient_id}\?done=rights_saved$"))
    rights = page.locator("form", has=page.locator("legend", has_text=CAREGIVER_NAME))
    expect(
        rights.locator(f"input[name='rights'][value='{ProxyRight.VIEW_EDUCATION.value}']")
    ).not_to_be_checked()
    log_out(page)


def caregiver_without_the_right_does_not(page: Page, patient_id: int) -> None:
    """Rosa, still logged in: Andre's progress is gone from everything she can open."""
    learning = f"/care/{patient_id}/learning"
    response = page.goto(learning)
    assert response is not None and response.status == 404, response
    expect(page.locator("main")).not_to_contain_text(module().text("es").title)

    page.goto("/home")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Rosa")
    expect(page.locator(f"a[href='{learning}']")).to_have_count(0)

    # Her own list: the same module, not started (his completion is not hers).
    page.locator("nav.main-nav a[href='/learn']").click()
    card = module_card(page)
    expect(card).to_contain_text(es("Not started"))
    expect(page.locator(".learn-list .badge-ok")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text(GIVEN)

    # The staff page of his education: not for caregivers.
    response = page.goto(f"/patients/{patient_id}/education")
    assert response is not None and response.status == 403, response
    expect(page.locator("main")).not_to_contain_text(GIVEN)
    expect(page.locator("main")).not_to_contain_text(module().text("en").title)
    page.goto("/home")  # the error page shows no menu
    log_out(page)


def test_patient_reads_in_spanish_resumes_elsewhere_and_completes_coordinator_sees_it(
    browsers: Callable[[], Page], journey_server: LiveServer, andre_id: int
) -> None:
    # This server's TOTP steps are its own (the shared server's codes do not count here).
    totp = TotpCodes()
    patient_starts_then_leaves(browsers(), journey_server)
    patient_resumes_and_completes(browsers(), journey_server)
    rosa = browsers()
    caregiver_with_the_right_sees_it(rosa, andre_id)
    coordinator_sees_it_and_takes_the_right(browsers(), totp, andre_id)
    caregiver_without_the_right_does_not(rosa, andre_id)
