"""End to end in Chromium: the patient's questionnaire journey of issue 13, on a phone, in
Spanish, once without JavaScript (plain form posts) and once with it (htmx).

The patient starts the demo check-in from home and answers the first question out of range
(refused with the range, what was typed kept), then right; answers the second page and
leaves. On another device (a new browser, a new login) home offers to carry on and the
check-in resumes on the third page. On the last page the hospital follow-up ("how many
nights?") only counts when it applies: with "No" the review leaves it out; with "Yes" it is
required and reviewed. The patient sends the answers; the stored QuestionnaireResponse
validates as FHIR R4B. Every page is axe-clean, fits the phone and asks nothing of another
host.

The journey changes data (a language, a response) other e2e tests count on: it runs on a
server of its own. Words come from the Spanish catalog (see `es`) and the Spanish
questionnaire."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse as FhirResponse
from playwright.sync_api import Browser, Locator, Page, expect
from sqlalchemy import select, update

from coordination.questionnaires.models import QuestionnaireResponse, ResponseStatus
from core.db import make_engine, make_session_factory, transaction
from core.identity.models import User
from core.models import Language, Patient
from tests.conftest import PATIENT_CO, PATIENT_MD
from tests.e2e.conftest import (
    E2E,
    PHONE,
    LiveServer,
    assert_no_horizontal_scroll,
    axe_check,
    open_context,
    screenshot,
    serve_platform,
)
from tests.e2e.test_education_journey import es, es_pattern, log_in_reader, record_requests
from tests.e2e.test_invitation_journey import log_out

pytestmark = E2E

TITLE = "¿Cómo vive con la enfermedad de células falciformes después de la terapia génica?"
PAIN = "¿En cuántos de los últimos 7 días tuvo dolor"
NIGHTS = "¿Cuántas noches en total?"
TIRED = "Muy cansado(a)"
PAGES = 4
# Without JavaScript: Andre (Colorado); with it: Maya (Maryland). Each answers once.
WHO = {False: ("Andre", PATIENT_CO), True: ("Maya", PATIENT_MD)}


@pytest.fixture(scope="module")
def journey_server(
    e2e_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    server_folder = tmp_path_factory.mktemp("questionnaire")
    with serve_platform(server_folder) as server:
        # The precondition: both patients read Spanish (their records and their logins).
        engine = make_engine(server.database_url)
        try:
            with transaction(make_session_factory(engine)) as session:
                for given, login in WHO.values():
                    session.execute(
                        update(Patient)
                        .where(Patient.given_name == given)
                        .values(preferred_language=Language.ES)
                    )
                    session.execute(
                        update(User)
                        .where(User.login == login)
                        .values(preferred_language=Language.ES)
                    )
        finally:
            engine.dispose()
        yield server


def phone_page(browser: Browser, server: LiveServer, *, javascript: bool) -> Page:
    """A page in a fresh phone-sized context (another device: no cookies)."""
    return open_context(browser, server.url, javascript=javascript, viewport=PHONE).new_page()


def checked(page: Page, name: str, *, javascript: bool) -> None:
    """The page is accessible, fits the phone, and is kept as a screenshot when asked.

    axe-core needs JavaScript: a page shown without it is checked as served, its HTML
    replayed at its own address in a phone context with JavaScript (the same styles load)."""
    if not javascript:
        html, url = page.content(), page.url
        browser = page.context.browser
        assert browser is not None
        checker = open_context(browser, url, viewport=PHONE).new_page()
        try:
            # The replay is the page as served without JavaScript: what its scripts would
            # fetch (htmx's load-time swaps, asked without the reader's cookies) is left out,
            # or a redirect to the login page would navigate away under axe.
            checker.route(
                "**/*",
                lambda route: (
                    route.abort()
                    if route.request.resource_type in ("xhr", "fetch")
                    else route.continue_()
                ),
            )
            checker.route(url, lambda route: route.fulfill(body=html, content_type="text/html"))
            checker.goto(url)
            axe_check(checker)
        finally:
            checker.context.close()
    else:
        axe_check(page)
    assert_no_horizontal_scroll(page)
    screenshot(page, name)


def on_page(page: Page, base: str, number: int) -> Locator:
    """The questionnaire shows page `number` of the check-in; returns its form."""
    expect(page).to_have_url(re.compile(rf"{re.escape(base)}/pages/{number}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(TITLE)
    expect(page.locator("#progress")).to_contain_text(
        es("Page %(page)d of %(pages)d", page=number, pages=PAGES)
    )
    return page.locator("#questionnaire form")


def save(form: Locator, *, last: bool = False) -> None:
    form.get_by_role("button", name=es("Save and review" if last else "Save and continue")).click()


def assert_only_own_host(urls: list[str], server: LiveServer) -> None:
    own = urlsplit(server.url).netloc
    elsewhere = [
        url
        for url in urls
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != own
    ]
    assert not elsewhere, elsewhere
    assert any("/questionnaires/" in url for url in urls), urls  # the recording works


def answers_by_link_id(items: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Every answered item of a QuestionnaireResponse, nested groups included."""
    found: dict[str, list[Any]] = {}
    for item in items:
        if item.get("answer"):
            found[item["linkId"]] = [
                next(value for key, value in answer.items() if key.startswith("value"))
                for answer in item["answer"]
            ]
        found.update(answers_by_link_id(item.get("item", [])))
    return found


# --- the steps ---------------------------------------------------------------------------


def starts_answers_half_and_leaves(page: Page, server: LiveServer, tag: str) -> str:
    """Session 1: from home, start the check-in; page 1 out of range then right; page 2;
    leave. Returns the response's address."""
    requests = record_requests(page)
    log_in_reader(page, WHO[tag == "js"][1])
    expect(page.locator("html")).to_have_attribute("lang", "es")
    checked(page, f"questionnaire-{tag}-home", javascript=tag == "js")
    # Home offers it once: as ready for a visit ("Answer now") or in the list ("Start").
    offer = page.locator("form[action$='/questionnaires']").get_by_role(
        "button", name=re.compile(rf"{re.escape(TITLE)}$")
    )
    expect(offer).to_have_count(1)
    offer.click()
    expect(page).to_have_url(re.compile(r"/care/\d+/questionnaires/\d+/pages/1$"))
    base = page.url.rsplit("/pages/", 1)[0]

    form = on_page(page, base, 1)
    expect(form).to_contain_text(PAIN)
    expect(form).to_contain_text(es("A number from %(low)s to %(high)s", low=0, high=7))
    checked(page, f"questionnaire-{tag}-page-1", javascript=tag == "js")

    # Out of range: refused with the range, tied to the question; what was typed stays.
    form.locator("#f-q1").fill("9")
    save(form)
    error = page.locator("#f-q1-error")
    expect(error).to_have_text(es("Enter a number from %(low)s to %(high)s.", low=0, high=7))
    expect(page.locator("#f-q1")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-q1")).to_have_value("9")
    expect(page).to_have_url(re.compile(rf"{re.escape(base)}/pages/1$"))
    checked(page, f"questionnaire-{tag}-out-of-range", javascript=tag == "js")

    page.locator("#f-q1").fill("3")
    save(page.locator("#questionnaire form"))
    form = on_page(page, base, 2)
    checked(page, f"questionnaire-{tag}-page-2", javascript=tag == "js")
    form.get_by_label(TIRED).check()
    save(form)
    on_page(page, base, 3)
    assert_only_own_host(requests, server)
    return base


def resumes_elsewhere_and_submits(page: Page, server: LiveServer, tag: str, base: str) -> None:
    """Session 2, another device: home offers to carry on; the check-in resumes on page 3;
    the hospital follow-up counts only with "Yes"; review and send."""
    requests = record_requests(page)
    log_in_reader(page, WHO[tag == "js"][1])
    carry_on = page.locator(f"a[href='{urlsplit(base).path}']")
    expect(carry_on).to_have_count(1)  # offered once, with the draft to carry on
    expect(carry_on).to_contain_text(TITLE)
    carry_on.click()
    form = on_page(page, base, 3)
    expect(form).not_to_contain_text(PAIN)  # the first pages stay behind it
    checked(page, f"questionnaire-{tag}-page-3", javascript=tag == "js")
    form.locator("#f-q6").fill("0")
    save(form)

    # The last page: "No" to a hospital stay; the nights are asked only if it applies.
    form = on_page(page, base, 4)
    expect(form).to_contain_text(NIGHTS)
    expect(page.locator("#f-q9-note")).to_have_text(
        es("Answer this only if it applies, after your answer above.")
    )
    checked(page, f"questionnaire-{tag}-page-4", javascript=tag == "js")
    form.get_by_label(es("No"), exact=True).check()
    save(form, last=True)
    expect(page).to_have_url(re.compile(rf"{re.escape(base)}/review$"))
    review = page.locator("#questionnaire")
    expect(review).to_contain_text(TIRED)
    expect(review).not_to_contain_text(NIGHTS)

    # Changed to "Yes": now the nights are required, then reviewed.
    hospital = review.locator("section", has=page.get_by_role("heading", name="Hospitalizaciones"))
    hospital.get_by_role("link", name=re.compile(re.escape(es("Change these answers")))).click()
    form = on_page(page, base, 4)
    form.get_by_label(es("Yes"), exact=True).check()
    save(form, last=True)
    expect(page.locator("#f-q9-error")).to_have_text(es("Answer this question."))
    expect(page).to_have_url(re.compile(rf"{re.escape(base)}/pages/4$"))
    page.locator("#f-q9").fill("2")
    save(page.locator("#questionnaire form"), last=True)
    expect(page).to_have_url(re.compile(rf"{re.escape(base)}/review$"))
    review = page.locator("#questionnaire")
    expect(review.get_by_role("heading", level=1)).to_have_text(es("Check your answers"))
    nights = review.locator("dt", has_text=NIGHTS)
    expect(nights).to_have_count(1)
    expect(nights.locator("xpath=following-sibling::dd[1]")).to_have_text("2")
    checked(page, f"questionnaire-{tag}-review", javascript=tag == "js")

    review.get_by_role("button", name=es("Send my answers to the care team")).click()
    expect(page).to_have_url(re.compile(rf"{re.escape(base)}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(es("Thank you"))
    expect(page.get_by_role("status")).to_contain_text(
        es_pattern(
            "Your answers to “%(title)s” were sent to your care team on %(day)s.", title=TITLE
        )
    )
    checked(page, f"questionnaire-{tag}-done", javascript=tag == "js")
    assert_only_own_host(requests, server)
    log_out(page)


def stored_response_is_valid_fhir(server: LiveServer, base: str) -> None:
    """The response the server stored: completed, valid R4B, with the answers given."""
    engine = make_engine(server.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            stored = session.scalar(
                select(QuestionnaireResponse).where(
                    QuestionnaireResponse.id == int(base.rsplit("/", 1)[-1])
                )
            )
            assert stored is not None and stored.status is ResponseStatus.COMPLETED
            assert stored.resource is not None
            resource = stored.resource
    finally:
        engine.dispose()
    fhir = FhirResponse.model_validate(resource)
    assert fhir.status == "completed"
    answers = answers_by_link_id(resource["item"])
    assert answers["pain-days"] == [3]
    assert answers["missed-days"] == [0]
    assert answers["hospital-stay"] == [True]
    assert answers["hospital-nights"] == [2]
    assert "fatigue" in answers


@pytest.mark.parametrize("javascript", [False, True], ids=["no-js", "js"])
def test_patient_answers_half_resumes_on_another_phone_and_submits_in_spanish(
    browser: Browser, journey_server: LiveServer, javascript: bool
) -> None:
    tag = "js" if javascript else "no-js"
    first = phone_page(browser, journey_server, javascript=javascript)
    try:
        base = starts_answers_half_and_leaves(first, journey_server, tag)
    finally:
        first.context.close()  # left without logging out; the next device starts afresh
    second = phone_page(browser, journey_server, javascript=javascript)
    try:
        resumes_elsewhere_and_submits(second, journey_server, tag, base)
    finally:
        second.context.close()
    stored_response_is_valid_fhir(journey_server, base)
