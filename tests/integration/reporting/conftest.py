"""Fixtures of the reporting tests: staff of each role, and logged-in browsers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.clock import FrozenClock
from core.identity.models import Role
from tests.conftest import Browser, Database, log_in
from tests.factories import PASSWORD, Factory


@dataclass
class Staff:
    analyst_md: str
    analyst_co: str
    coordinator_md: str
    coordinator_co: str
    admin: str


@pytest.fixture
def staff(empty_db: Database, world: Any) -> Staff:
    """An analyst and a coordinator of Maryland and of Colorado, and an admin (`world`:
    the module's cohort, whose states they join)."""
    with empty_db.factory() as session:
        make = Factory(session, world.clock)
        md, co = make.state("MD"), make.state("CO")
        logins = Staff(
            analyst_md=make.staff(Role.STATE_ANALYST, states=[md]).login or "",
            analyst_co=make.staff(Role.STATE_ANALYST, states=[co]).login or "",
            coordinator_md=make.staff(Role.COORDINATOR, states=[md]).login or "",
            coordinator_co=make.staff(Role.COORDINATOR, states=[co]).login or "",
            admin=make.staff(Role.ADMIN).login or "",
        )
        session.commit()
    return logins


@pytest.fixture
def open_as(empty_app: FastAPI, clock: FrozenClock) -> Iterator[Callable[[str], Browser]]:
    with ExitStack() as stack:

        def browser(login: str) -> Browser:
            client = stack.enter_context(
                TestClient(empty_app, raise_server_exceptions=False, follow_redirects=False)
            )
            return Browser(client, log_in(client, login, clock, password=PASSWORD))

        yield browser
