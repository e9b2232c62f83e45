"""End-to-end fixtures: the platform served by uvicorn on a free loopback port (demo mode,
a fresh SQLite file holding the seeded test world), Debian's Chromium driven by
Playwright, and `axe_check` for accessibility.

Every e2e test module sets `pytestmark = E2E`: the tests share one live server and one
browser, so under `-n 2 --dist loadgroup` they must all run on the same worker."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import pyotp
import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, sync_playwright

from portal.app import create_app
from portal.migrate import upgrade_database
from tests.conftest import STAFF_TOTP_SECRET, _seed_world, make_settings

E2E = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
AXE_JS = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
AXE_RUN = (
    "axe.run(document, {runOnly: {type: 'tag', "
    "values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
)
BLOCKING_IMPACTS = frozenset({"serious", "critical"})

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
# Set to a folder (e.g. /tmp) to keep full-page screenshots of the pages the tests visit.
SCREENSHOT_DIR = os.environ.get("E2E_SCREENSHOT_DIR")


def _require_tools() -> None:
    missing = [str(path) for path in (CHROMIUM, AXE_JS) if not path.exists()]
    if not missing:
        return
    reason = (
        f"end-to-end tools missing: {', '.join(missing)} "
        "(Debian's chromium package; `npm ci` in tests/e2e)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def e2e_tools() -> None:
    """Skip (fail in CI) before starting anything when Chromium or axe-core is missing."""
    _require_tools()


# --- the live server -------------------------------------------------------------------


@dataclass(frozen=True)
class LiveServer:
    url: str
    database_url: str
    export_dir: Path


def _bound_socket() -> socket.socket:
    """A listening socket on a free loopback port, handed to uvicorn (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _wait_until_up(url: str, thread: threading.Thread, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            pytest.fail("the e2e server stopped while starting; see the captured log")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the e2e server did not answer {url} within {timeout:.0f} s")


@contextmanager
def serve_platform(folder: Path) -> Iterator[LiveServer]:
    """The platform in demo mode on a fresh, migrated and seeded SQLite file in `folder`,
    served on a free loopback port until the block ends.

    It runs on the real clock (TOTP codes come from `pyotp` on the same clock)."""
    database_url = f"sqlite:///{folder / 'e2e.db'}"
    upgrade_database(database_url)
    _seed_world(database_url)
    sock = _bound_socket()
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    export_dir = folder / "exports"
    app = create_app(
        make_settings(
            database_url, demo_mode=True, public_base_url=url, export_dir=str(export_dir)
        ),
        run_scheduler=False,
    )
    server = uvicorn.Server(
        uvicorn.Config(app=app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="e2e-uvicorn", daemon=True
    )
    thread.start()
    try:
        _wait_until_up(f"{url}/healthz", thread)
        yield LiveServer(url=url, database_url=database_url, export_dir=export_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        app.state.context.engine.dispose()


@pytest.fixture(scope="session")
def live_server(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The platform shared by the e2e tests (see `serve_platform`)."""
    with serve_platform(tmp_path_factory.mktemp("e2e")) as server:
        yield server


# --- the browser -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(e2e_tools: None) -> Iterator[Browser]:
    """Debian's Chromium (never `playwright install`), shared by the session."""
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    except Exception:
        playwright.stop()
        raise
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()


def open_context(
    browser: Browser,
    base_url: str,
    *,
    javascript: bool = True,
    bypass_csp: bool = True,
    viewport: ViewportSize = DESKTOP,
) -> BrowserContext:
    """A fresh context (no cookies) on `base_url`: US English, New York time, 10 s waits.
    The caller closes it (`new_context` does, for the shared server)."""
    context = browser.new_context(
        base_url=base_url,
        bypass_csp=bypass_csp,
        java_script_enabled=javascript,
        viewport=viewport,
        locale="en-US",
        timezone_id="America/New_York",
    )
    context.set_default_timeout(10_000)
    return context


class ContextFactory(Protocol):
    def __call__(
        self,
        *,
        javascript: bool = True,
        bypass_csp: bool = True,
        viewport: ViewportSize = DESKTOP,
    ) -> BrowserContext: ...


@pytest.fixture
def new_context(browser: Browser, live_server: LiveServer) -> Iterator[ContextFactory]:
    """Fresh browser contexts (no cookies) for this test, closed at its end.

    `bypass_csp` defaults to True because axe-core is injected as a script and the app's
    CSP (script-src 'self') would block it; pass False to check a page under the real CSP."""
    contexts: list[BrowserContext] = []

    def make(
        *,
        javascript: bool = True,
        bypass_csp: bool = True,
        viewport: ViewportSize = DESKTOP,
    ) -> BrowserContext:
        context = open_context(
            browser,
            live_server.url,
            javascript=javascript,
            bypass_csp=bypass_csp,
            viewport=viewport,
        )
        contexts.append(context)
        return context

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def page(new_context: ContextFactory) -> Page:
    """A page in a fresh desktop-sized context with JavaScript on."""
    return new_context().new_page()


# --- helpers ---------------------------------------------------------------------------


def axe_check(page: Page) -> None:
    """Run axe-core (WCAG 2.0/2.1 A and AA) on the page; fail on serious or critical findings.

    The context must bypass the CSP (see `new_context`) for the injected script to run."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE_JS))
    results: dict[str, Any] = page.evaluate(AXE_RUN)
    blocking = [
        violation
        for violation in results["violations"]
        if violation.get("impact") in BLOCKING_IMPACTS
    ]
    if blocking:
        lines = [f"axe: {len(blocking)} serious/critical violation(s) on {page.url}"]
        for violation in blocking:
            targets = [", ".join(map(str, node["target"])) for node in violation["nodes"]]
            lines.append(
                f"- {violation['id']} ({violation['impact']}): {violation['help']}"
                f" — {violation.get('helpUrl', '')}\n    targets: {targets}"
            )
        pytest.fail("\n".join(lines))


def screenshot(page: Page, name: str) -> None:
    """A full-page screenshot to $E2E_SCREENSHOT_DIR/e2e-<name>.png, when that is set."""
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"e2e-{name}.png"), full_page=True)


def assert_no_horizontal_scroll(page: Page) -> None:
    """The page fits its viewport's width (tables may scroll inside their own box)."""
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the viewport"


@dataclass
class TotpCodes:
    """TOTP codes for staff logins on the real clock.

    The server takes a code from the previous, current or next 30 s step, and each step
    only once per user; so a second login of the same user within one step uses the next
    step's code, and a third waits for the clock."""

    secret: str = STAFF_TOTP_SECRET
    last_step: dict[str, int] = field(default_factory=dict)

    def code_for(self, login: str) -> str:
        totp = pyotp.TOTP(self.secret)
        while True:
            now = int(time.time())
            step = now // totp.interval
            used = self.last_step.get(login)
            if used is None or used < step:
                self.last_step[login] = step
                return totp.at(now)
            if used == step:
                self.last_step[login] = step + 1
                return totp.at(now + totp.interval)
            time.sleep(totp.interval - now % totp.interval + 0.1)


@pytest.fixture(scope="session")
def totp_codes() -> TotpCodes:
    return TotpCodes()
