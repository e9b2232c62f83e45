"""Old login attempts are deleted by the hourly job: they only count toward the 15-minute
throttle windows (the audit log keeps every login's outcome), and an address is personal
data that is kept no longer than it serves."""

from __future__ import annotations

from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import func, select

from coordination.jobs import add_jobs
from coordination.models import JobLock
from coordination.texting.gateway import ConsoleGateway
from core.audit.models import AuditEvent
from core.clock import FrozenClock
from core.db import transaction
from core.identity.auth import LoginRefusal, authenticate
from core.identity.models import LoginAttempt
from portal.dev.demo import DEMO_PASSWORD
from tests.conftest import PATIENT_MD, T0, Database


def _fail(db: Database, clock: FrozenClock, *, times: int) -> None:
    for _ in range(times):
        with transaction(db.factory) as session:
            authenticate(
                session,
                clock=clock,
                login=PATIENT_MD,
                password="not her password",
                ip="203.0.113.9",
                user_agent="test",
            )


def _attempts(db: Database) -> int:
    with db.factory() as session:
        return session.scalar(select(func.count()).select_from(LoginAttempt)) or 0


def _login_events(db: Database) -> int:
    with db.factory() as session:
        return (
            session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "login")
            )
            or 0
        )


def test_the_hourly_job_deletes_attempts_older_than_a_day_and_keeps_the_lock(
    db: Database,
) -> None:
    _fail(db, FrozenClock(T0 - timedelta(days=2)), times=3)  # long over
    now = FrozenClock(T0)
    _fail(db, now, times=5)  # Maya's login is locked for the next 15 minutes
    assert _attempts(db) == 8
    events = _login_events(db)

    scheduler = BackgroundScheduler(timezone="UTC")
    add_jobs(
        scheduler,
        factory=db.factory,
        gateway=ConsoleGateway(),
        clock=now,
        dispatch_interval_seconds=60,
    )
    job = scheduler.get_job("prune-login-attempts")
    assert job is not None and "minute='35'" in str(job.trigger)
    job.func()
    assert _attempts(db) == 5
    job.func()  # again: nothing more goes
    assert _attempts(db) == 5
    assert _login_events(db) == events  # the audit log keeps every outcome

    with transaction(db.factory) as session:
        result = authenticate(
            session,
            clock=FrozenClock(T0 + timedelta(minutes=1)),
            login=PATIENT_MD,
            password=DEMO_PASSWORD,
            ip="203.0.113.9",
            user_agent="test",
        )
        assert result.refusal is LoginRefusal.LOCKED  # the recent failures still count
        lock = session.get(JobLock, "prune-login-attempts")
        assert lock is not None and lock.last_run_at == T0
