"""Job locks: a lease in the database, so that of several workers only one runs a job."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from coordination.models import JobLock
from core.clock import Clock
from core.db import transaction

T = TypeVar("T")
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def acquire_lock(
    factory: sessionmaker[Session], *, name: str, clock: Clock, lease: timedelta, owner: str = OWNER
) -> bool:
    """Take the lease `name` if nobody holds it (or the holder's lease ran out)."""
    now = clock.now()
    with transaction(factory) as session:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        upsert = (
            insert(JobLock)
            .values(name=name, owner=owner, locked_until=now + lease)
            .on_conflict_do_update(
                index_elements=[JobLock.name],
                set_={"owner": owner, "locked_until": now + lease},
                where=JobLock.locked_until <= now,
            )
            .returning(JobLock.name)
        )
        return session.execute(upsert).first() is not None


def release_lock(
    factory: sessionmaker[Session], *, name: str, clock: Clock, owner: str = OWNER
) -> None:
    with transaction(factory) as session:
        session.execute(
            update(JobLock)
            .where(JobLock.name == name, JobLock.owner == owner)
            .values(locked_until=clock.now(), last_run_at=clock.now())
        )


def run_exclusively(
    factory: sessionmaker[Session],
    *,
    name: str,
    clock: Clock,
    job: Callable[[Session], T],
    lease: timedelta = timedelta(minutes=30),
) -> tuple[bool, T | None]:
    """Run `job` in its own transaction if this process gets the lease; (ran, result)."""
    if not acquire_lock(factory, name=name, clock=clock, lease=lease):
        return False, None
    try:
        with transaction(factory) as session:
            result = job(session)
    finally:
        release_lock(factory, name=name, clock=clock)
    return True, result
