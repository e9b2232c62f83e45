"""What the scheduler runs. APScheduler only wakes these up; the truth stays in the tables."""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.orm import Session, sessionmaker

from coordination.followup.schedule import mark_missed_visits
from coordination.locks import run_exclusively
from coordination.texting.dispatcher import CONCURRENCY, dispatch_due
from coordination.texting.gateway import SmsGateway
from coordination.texting.planning import plan_reminders
from core.clock import Clock
from core.identity.auth import prune_login_attempts

log = logging.getLogger("cgt_access.jobs")


def add_jobs(
    scheduler: BaseScheduler,
    *,
    factory: sessionmaker[Session],
    gateway: SmsGateway,
    clock: Clock,
    dispatch_interval_seconds: int,
    dispatch_concurrency: int = CONCURRENCY,
    planning_interval_minutes: int = 10,
) -> None:
    """Register coordination's recurring jobs on `scheduler`: the dispatcher (every worker
    runs it; rows are claimed, never shared), reminder planning, the missed-visit job and
    the pruning of old login attempts (each under a lock, so one worker runs them at a
    time)."""

    def dispatch_outbox() -> None:
        try:
            sent = dispatch_due(
                factory, gateway=gateway, clock=clock, concurrency=dispatch_concurrency
            )
        except Exception:
            # Surface it in the log and try again at the next tick; rows stay in the outbox.
            log.exception("dispatcher run failed")
            return
        if sent:
            log.info("dispatcher sent %d message(s)", sent)

    scheduler.add_job(
        dispatch_outbox,
        "interval",
        seconds=dispatch_interval_seconds,
        id="outbox-dispatcher",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
    )

    def plan() -> None:
        try:
            ran, report = run_exclusively(
                factory,
                name="plan-reminders",
                clock=clock,
                job=lambda session: plan_reminders(session, clock=clock),
            )
        except Exception:
            log.exception("reminder planning failed; it runs again at the next interval")
            return
        if ran and report is not None and (report.planned or report.capped or report.notices):
            log.info(
                "planned %d reminder(s) and %d moved-appointment notice(s), %d held back by "
                "the caps",
                report.planned,
                report.notices,
                report.capped,
            )

    # Every few minutes, so that an appointment booked for tomorrow still gets its reminder;
    # the first run right at start.
    scheduler.add_job(
        plan,
        "interval",
        minutes=planning_interval_minutes,
        id="plan-reminders",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
        next_run_time=clock.now(),
    )

    # Hourly, so that each time zone gets it soon after its own midnight; it is idempotent.
    _add_hourly(
        scheduler,
        factory=factory,
        clock=clock,
        name="missed-visits",
        minute=5,
        work=lambda session: mark_missed_visits(session, clock=clock),
        done="marked %d visit(s) missed",
    )
    _add_hourly(
        scheduler,
        factory=factory,
        clock=clock,
        name="prune-login-attempts",
        minute=35,
        work=lambda session: prune_login_attempts(session, clock=clock),
        done="deleted %d old login attempt(s)",
    )


def _add_hourly(
    scheduler: BaseScheduler,
    *,
    factory: sessionmaker[Session],
    clock: Clock,
    name: str,
    minute: int,
    work: Callable[[Session], int],
    done: str,
) -> None:
    """Register `work` to run at `minute` past every hour, under the job lock `name` (one
    worker at a time); a failure is logged and the next hour tries again, a count logged
    with `done`."""

    def run() -> None:
        try:
            ran, count = run_exclusively(factory, name=name, clock=clock, job=work)
        except Exception:
            log.exception("job %s failed; it runs again next hour", name)
            return
        if ran and count:
            log.info(done, count)

    scheduler.add_job(
        run,
        "cron",
        minute=minute,
        id=name,
        max_instances=1,
        coalesce=True,
        replace_existing=True,
    )
