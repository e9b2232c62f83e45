"""Shared fixtures: real databases (SQLite files and a throwaway PostgreSQL cluster) built
by `alembic upgrade head`, one fresh database per test, the app, and logged-in clients."""

from __future__ import annotations

import html
import itertools
import os
import re
import shutil
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyotp
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine, make_url, select, update
from sqlalchemy.orm import Session, sessionmaker

from coordination.texting.gateway import ConsoleGateway
from core.clock import FrozenClock
from core.db import make_engine, make_session_factory, transaction
from core.identity.models import Role, User
from core.identity.passwords import use_hasher
from core.settings import Settings, load_settings
from portal.app import create_app
from portal.context import AppContext
from portal.dev.demo import DEMO_PASSWORD, seed_demo_data
from portal.migrate import upgrade_database
from tests.support.pg_cluster import PostgresCluster, PostgresUnavailable, start_cluster

IN_CI = os.environ.get("CI", "").lower() == "true"
# A fixed instant for every test: Friday 2026-11-27 15:00 UTC (10:00 in Baltimore).
T0 = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
TEST_SECRET = "test-secret-key-for-the-suite-only-0123456789"
# Staff accounts in the test world all use this authenticator secret.
STAFF_TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

# Logins of the seeded world (see portal/demo.py), by role.
ADMIN = "admin@demo.cgt-access.test"
COORDINATOR_MD = "coordinator.md@demo.cgt-access.test"
COORDINATOR_CO = "coordinator.co@demo.cgt-access.test"
ANALYST = "analyst@demo.cgt-access.test"
PATIENT_MD = "maya"  # Maya Johnson, Maryland; her mother Denise is a caregiver
PATIENT_CO = "andre"  # Andre Williams, Colorado
CAREGIVER_MD = "denise"
CAREGIVER_CO = "rosa"


def _seed_world(url: str) -> None:
    factory = make_session_factory(make_engine(url))
    with transaction(factory) as session:
        seed_demo_data(session, clock=FrozenClock(T0))
        session.execute(
            update(User)
            .where(User.role.in_([Role.ADMIN, Role.COORDINATOR, Role.STATE_ANALYST]))
            .values(totp_secret=STAFF_TOTP_SECRET, totp_enabled_at=T0)
        )
    factory.kw["bind"].dispose()


# --- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = start_cluster()
    except PostgresUnavailable as problem:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not available: {problem}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_templates(pg_cluster: PostgresCluster) -> dict[str, str]:
    """Two template databases: 'empty' (migrated) and 'world' (migrated and seeded)."""
    names = {"empty": "tpl_empty", "world": "tpl_world"}
    for kind, name in names.items():
        url = pg_cluster.create_database(name)
        upgrade_database(url)
        if kind == "world":
            _seed_world(url)
    return names


class DatabaseQueue:
    """Fresh PostgreSQL databases for this worker's tests, each a new copy of a template.

    Making a copy takes the server about 0.2 s, longer than many tests: so copies of each
    kind are made ahead in the background (`AHEAD` of them, the first time a kind is asked
    for), and used ones are dropped in the background. A run of short tests then takes the
    copies made during the longer ones before it instead of waiting for each. Each test
    still gets a database nobody used before."""

    AHEAD = 3

    def __init__(self, cluster: PostgresCluster, templates: dict[str, str]) -> None:
        self._cluster = cluster
        self._templates = templates
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-databases")
        self._next: dict[str, deque[Future[str]]] = {}
        self._drops: list[Future[None]] = []
        self._counter = itertools.count()

    def _copy(self, kind: str) -> str:
        name = f"t{os.getpid()}_{next(self._counter)}"
        self._cluster.create_database(name, template=self._templates[kind])
        return name

    def take(self, kind: str) -> str:
        """The name of a fresh copy of the `kind` template."""
        for dropped in [drop for drop in self._drops if drop.done()]:
            self._drops.remove(dropped)
            dropped.result()  # a failed drop fails the test that comes after it
        ahead = self._next.setdefault(kind, deque())
        name = ahead.popleft().result() if ahead else self._copy(kind)
        while len(ahead) < self.AHEAD:
            ahead.append(self._worker.submit(self._copy, kind))
        return name

    def drop(self, name: str) -> None:
        self._drops.append(self._worker.submit(self._cluster.drop_database, name))

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def pg_databases(
    pg_cluster: PostgresCluster, pg_templates: dict[str, str]
) -> Iterator[DatabaseQueue]:
    queue = DatabaseQueue(pg_cluster, pg_templates)
    try:
        yield queue
    finally:
        queue.close()


# --- SQLite ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sqlite-templates")
    paths = {"empty": folder / "empty.db", "world": folder / "world.db"}
    for kind, path in paths.items():
        url = f"sqlite:///{path}"
        upgrade_database(url)
        if kind == "world":
            _seed_world(url)
    return paths


@dataclass
class Database:
    backend: str
    url: str
    engine: Engine
    factory: sessionmaker[Session]


def _fresh_database(
    request: pytest.FixtureRequest, backend: str, kind: str, tmp_path: Path
) -> Iterator[Database]:
    if backend == "sqlite":
        templates: dict[str, Path] = request.getfixturevalue("sqlite_templates")
        target = tmp_path / f"{kind}.db"
        shutil.copyfile(templates[kind], target)
        url = f"sqlite:///{target}"
        cleanup: Callable[[], None] = lambda: None  # noqa: E731
    else:
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        databases: DatabaseQueue = request.getfixturevalue("pg_databases")
        name = databases.take(kind)
        url = cluster.url_for(name)
        cleanup = lambda: databases.drop(name)  # noqa: E731
    engine = _SHARED.take(backend, url)
    try:
        yield Database(
            backend=backend, url=url, engine=engine, factory=make_session_factory(engine)
        )
    finally:
        _SHARED.give_back(backend, engine)
        cleanup()


class _SharedEngines:
    """One engine per backend for this worker's tests, pointed at each test's own database.

    SQLAlchemy keeps the SQL it compiled per engine: with an engine per test, every test
    compiled each of its statements again (a fifth of the worklist tests' time). The pool is
    emptied between tests, and each new connection goes to the database the test holds. A
    test holding two databases of one backend gets its own engine for the second."""

    def __init__(self) -> None:
        self.engines: dict[str, Engine] = {}
        self.target: dict[str, str] = {}
        self.in_use: set[str] = set()

    def take(self, backend: str, url: str) -> Engine:
        if backend in self.in_use:
            return make_engine(url)
        self.in_use.add(backend)
        self.target[backend] = url
        engine = self.engines.get(backend)
        if engine is None:
            engine = make_engine(url, creator=lambda: self._connect(backend))
            self.engines[backend] = engine
        return engine

    def give_back(self, backend: str, engine: Engine) -> None:
        engine.dispose()
        if engine is self.engines.get(backend):
            self.in_use.discard(backend)

    def _connect(self, backend: str) -> Any:
        url = make_url(self.target[backend])
        if backend == "sqlite":
            return sqlite3.connect(url.database or "", check_same_thread=False, timeout=30)
        return psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)


_SHARED = _SharedEngines()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test on SQLite and on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def db(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Database]:
    """A fresh database holding the seeded test world (the demo data, staff with TOTP)."""
    yield from _fresh_database(request, backend, "world", tmp_path)


@pytest.fixture
def empty_db(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Database]:
    """A fresh, migrated database with no rows."""
    yield from _fresh_database(request, backend, "empty", tmp_path)


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    """A session for tests that call services directly; committed by the test if needed."""
    with db.factory() as session:
        yield session


# --- the application -------------------------------------------------------------------


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


def make_settings(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "secret_key": TEST_SECRET,
        "demo_mode": False,
        "run_scheduler": False,
        "public_base_url": "http://testserver",
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(db: Database) -> Settings:
    return make_settings(db.url)


# Apps this worker built, by their settings (but the database's URL), free for the next test.
_idle_apps: dict[str, list[FastAPI]] = {}


def _build(app: FastAPI) -> tuple[object, ...]:
    """What a test could have added to an app (routes, handlers, middleware, state)."""
    return (
        list(app.router.routes),
        dict(app.exception_handlers),
        list(app.user_middleware),
        dict(app.dependency_overrides),
        sorted(vars(app.state)["_state"]),
    )


@contextmanager
def app_for_test(
    settings: Settings, *, clock: FrozenClock, factory: sessionmaker[Session]
) -> Iterator[FastAPI]:
    """`create_app` for one test: the platform on this test's database, clock and gateway.

    Building an app and FastAPI's first look at its routes (made lazily, by the first
    request that reaches each) cost up to 0.7 s of CPU per app; so an app another test of
    this worker built with equal settings, and left as built, is handed on with this
    test's own context (everything a request reads of the test's world is on it)."""
    key = settings.model_dump_json(exclude={"database_url"})
    idle = _idle_apps.setdefault(key, [])
    gateway = ConsoleGateway()
    if idle:
        app = idle.pop()
        app.state.context = AppContext(
            settings=settings,
            engine=factory.kw["bind"],
            factory=factory,
            clock=clock,
            gateway=gateway,
        )
    else:
        app = create_app(
            settings, clock=clock, factory=factory, gateway=gateway, run_scheduler=False
        )
    as_built = _build(app)
    yield app
    if _build(app) == as_built:
        idle.append(app)


@pytest.fixture
def app(db: Database, settings: Settings, clock: FrozenClock) -> Iterator[FastAPI]:
    with app_for_test(settings, clock=clock, factory=db.factory) as platform:
        yield platform


@pytest.fixture
def empty_app(empty_db: Database, clock: FrozenClock) -> Iterator[FastAPI]:
    """The application on an empty database: tests build their own data (tests/factories.py)."""
    with app_for_test(
        make_settings(empty_db.url), clock=clock, factory=empty_db.factory
    ) as platform:
        yield platform


@pytest.fixture
def empty_client(empty_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(empty_app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client:
        yield test_client


_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: TestClient, path: str = "/login") -> str:
    """The CSRF token a page hands this browser (its cookie is set on the same response)."""
    response = client.get(path)
    match = _TOKEN.search(response.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def totp_now(clock: FrozenClock, secret: str = STAFF_TOTP_SECRET) -> str:
    return str(pyotp.TOTP(secret).at(clock.now()))


def log_in(
    client: TestClient, login: str, clock: FrozenClock, password: str = DEMO_PASSWORD
) -> str:
    """Log in through the real pages (password, then the TOTP step for staff).

    Returns the CSRF token to use for this client's forms (the login session's: the login
    page's token stops working once logged in)."""
    response = client.post(
        "/login", data={"login": login, "password": password, "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 303, response.text
    # A page anyone may open, with no side effects, hands out the new session's token.
    token = csrf_token(client, "/password/forgot")
    if response.headers["location"].startswith("/login/mfa"):
        step = client.post("/login/mfa", data={"code": totp_now(clock), "csrf_token": token})
        assert step.status_code == 303, step.text
        # A TOTP code is accepted once; move past its 30 s step for the next staff login.
        clock.advance(timedelta(seconds=31))
    return token


@pytest.fixture
def login_as(client: TestClient, clock: FrozenClock) -> Callable[[str], str]:
    def _login(login: str) -> str:
        return log_in(client, login, clock)

    return _login


def user_by_login(session: Session, login: str) -> User:
    user = session.scalar(select(User).where(User.login == login))
    assert user is not None
    return user


# --- staff browsers for page tests ------------------------------------------------------------

HTMX = {"HX-Request": "true"}


def plain(markup: str) -> str:
    """The text a reader sees: no tags, entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", markup))).strip()


@dataclass
class Browser:
    """A logged-in browser: its client and the CSRF token its forms carry."""

    client: TestClient
    token: str

    def get(self, url: str, *, htmx: bool = False) -> httpx.Response:
        response: httpx.Response = self.client.get(url, headers=HTMX if htmx else {})
        return response

    def post(self, url: str, data: dict[str, Any], *, htmx: bool = False) -> httpx.Response:
        response: httpx.Response = self.client.post(
            url, data={"csrf_token": self.token, **data}, headers=HTMX if htmx else {}
        )
        return response


@pytest.fixture
def browsers(app: FastAPI, clock: FrozenClock) -> Iterator[Callable[[str], Browser]]:
    """Logged-in browsers, one per login asked for."""
    with ExitStack() as stack:

        def open_browser(login: str) -> Browser:
            client = stack.enter_context(
                TestClient(app, raise_server_exceptions=False, follow_redirects=False)
            )
            return Browser(client, log_in(client, login, clock))

        yield open_browser


# Property tests check what holds, not how fast: on a busy machine (CI, parallel workers) a
# slow example must not fail a test by Hypothesis's deadline.
hypothesis_settings.register_profile("cgt-access", deadline=None)
hypothesis_settings.load_profile("cgt-access")

# Argon2 at the production cost takes a quarter of a second per login on the CI machine,
# and the suite logs in thousands of times: the tests hash with cheap parameters (the same
# code; tests/unit/test_passwords.py checks the production parameters themselves).
use_hasher(PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))
