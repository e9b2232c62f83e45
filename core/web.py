"""What every room's web routes share: the request's transaction and the clock.

The application (`portal.app.create_app`) puts its context on `app.state.context`; the
rooms' routes (the portal's pages, the FHIR API, reports) read it through these
dependencies, so that each request has exactly one transaction whichever room serves it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Protocol

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.db import transaction
from core.settings import Settings


class RequestContext(Protocol):
    """What a route may read of the application: its settings, database and clock."""

    @property
    def settings(self) -> Settings: ...

    @property
    def factory(self) -> sessionmaker[Session]: ...

    @property
    def clock(self) -> Clock: ...


def request_context(request: Request) -> RequestContext:
    context: RequestContext = request.app.state.context
    return context


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: commit when the route returns, roll back on any error."""
    with transaction(request_context(request).factory) as session:
        yield session


# scope="function": the commit happens before the response is sent, so a redirect never
# shows a page that does not have the change yet.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_clock(request: Request) -> Clock:
    return request_context(request).clock


ClockDep = Annotated[Clock, Depends(get_clock)]
