"""Each test has a database of its own, on SQLite and on PostgreSQL: what one test wrote
is gone for the next, even though the worker hands the same app from test to test and
makes PostgreSQL databases ahead (tests/conftest.py). The two tests run on one worker,
in this order."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import ADMIN, Database, user_by_login

pytestmark = pytest.mark.xdist_group("isolation")

RENAMED = "Renamed By An Earlier Test"
seen: dict[str, FastAPI] = {}


def test_a_test_renames_the_admin(
    db: Database, app: FastAPI, client: TestClient, login_as: Callable[[str], str], backend: str
) -> None:
    with db.factory() as session:
        user_by_login(session, ADMIN).display_name = RENAMED
        session.commit()
    login_as(ADMIN)
    assert RENAMED in client.get("/account").text
    seen[backend] = app


def test_the_next_test_finds_the_admin_as_seeded(
    db: Database, app: FastAPI, client: TestClient, login_as: Callable[[str], str], backend: str
) -> None:
    with db.factory() as session:
        assert user_by_login(session, ADMIN).display_name != RENAMED
    # Its browser starts logged out, and the app reads this test's database.
    assert client.get("/account").status_code == 303
    login_as(ADMIN)
    assert RENAMED not in client.get("/account").text
    # Only meaningful when the app was handed on (run alone, each test builds its own).
    if backend in seen:
        assert app is seen[backend]
