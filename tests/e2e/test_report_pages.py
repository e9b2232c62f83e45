"""The reports in Chromium (issue 12): a state analyst's report pages (the reports home,
program figures, outcomes of each agreement, rebate statements, snapshots, claims) are
axe-clean, fit a phone's width, draw their charts as inline SVG with a title, and make no
request to another host.

The server of this module holds the demo as `cgt-access demo seed` makes it: its follow-up
(visits, outcomes, reports), its claims files loaded, the infused cohorts and snapshots."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect
from sqlalchemy import select

from core.clock import SystemClock
from core.db import make_engine, make_session_factory, transaction
from core.identity.models import User
from portal.dev.demo import DEMO_PASSWORD, seed_demo_follow_up
from portal.dev.demo_claims import seed_demo_claims
from portal.dev.demo_outcomes import seed_demo_outcome_cohorts
from tests.conftest import ANALYST
from tests.e2e.conftest import (
    DESKTOP,
    E2E,
    PHONE,
    LiveServer,
    TotpCodes,
    assert_no_horizontal_scroll,
    axe_check,
    open_context,
    screenshot,
    serve_platform,
)

pytestmark = E2E

REPORT_PAGES = [
    "/reports",
    "/reports/program",
    "/reports/outcomes",
    "/reports/outcomes/casgevy-2025",
    "/reports/outcomes/lyfgenia-2025",
    "/reports/rebates",
    "/reports/snapshots",
    "/reports/claims",
    "/reports/support",
]
# The pages that draw charts.
CHART_PAGES = {
    "/reports/program",
    "/reports/outcomes/casgevy-2025",
    "/reports/outcomes/lyfgenia-2025",
}


@pytest.fixture(scope="module")
def reports_server(
    e2e_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The platform with the demo's follow-up, claims and cohorts: living figures."""
    with serve_platform(tmp_path_factory.mktemp("reports")) as server:
        engine = make_engine(server.database_url)
        try:
            with transaction(make_session_factory(engine)) as session:
                users = {user.login or "": user for user in session.scalars(select(User))}
                seed_demo_follow_up(session, clock=SystemClock(), users=users)
                seed_demo_claims(session, clock=SystemClock())
                seed_demo_outcome_cohorts(session, clock=SystemClock())
        finally:
            engine.dispose()
        yield server


def log_in_analyst(page: Page, totp_codes: TotpCodes) -> None:
    page.goto("/login")
    page.locator("#f-login").fill(ANALYST)
    page.locator("#f-password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/login/mfa"))
    page.locator("#f-code").fill(totp_codes.code_for(ANALYST))
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(re.compile(r"/reports$"))


@pytest.mark.parametrize(
    "viewport", [pytest.param(DESKTOP, id="desktop"), pytest.param(PHONE, id="390x844")]
)
def test_the_analysts_report_pages_are_accessible_fit_the_screen_and_stay_on_this_host(
    browser: Browser,
    reports_server: LiveServer,
    totp_codes: TotpCodes,
    viewport: ViewportSize,
) -> None:
    context = open_context(browser, reports_server.url, viewport=viewport)
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    try:
        page = context.new_page()
        log_in_analyst(page, totp_codes)
        for path in REPORT_PAGES:
            response = page.goto(path)
            assert response is not None and response.status == 200, path
            axe_check(page)
            assert_no_horizontal_scroll(page)
            screenshot(page, f"reports{path.replace('/', '-')}-{viewport['width']}")
            if path in CHART_PAGES:
                charts = page.locator("main svg")
                assert charts.count() > 0, f"no chart on {path}"
                # Each chart is named for screen readers, and nothing in it runs.
                for index in range(charts.count()):
                    chart = charts.nth(index)
                    assert chart.locator("title").count() > 0, path
                    assert chart.locator("script").count() == 0, path
    finally:
        context.close()
    elsewhere = sorted(
        {url for url in requested if not url.startswith(reports_server.url) and "://" in url}
    )
    assert elsewhere == [], elsewhere
