"""What the scheduler runs. APScheduler only wakes these up; the truth stays in the tables."""

from __future__ import annotations

import logging

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

    def missed_visits() -> None:
        try:
            ran, missed = run_exclusively(
                factory,
                name="missed-visits",
                clock=clock,
                job=lambda session: mark_missed_visits(session, clock=clock),
            )
        except Exception:
            log.exception("missed-visit job failed; it runs again next hour")
            return
        if ran and missed:
            log.info("marked %d visit(s) missed", missed)

    # Hourly, so that each time zone gets it soon after its own midnight; it is idempotent.
    scheduler.add_job(
        missed_visits,
        "cron",
        minute=5,
        id="missed-visits",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
    )

    def old_login_attempts() -> None:
        try:
            ran, pruned = run_exclusively(
                factory,
                name="prune-login-attempts",
                clock=clock,
                job=lambda session: prune_login_attempts(session, clock=clock),
            )
        except Exception:
            log.exception("pruning login attempts failed; it runs again next hour")
            return
        if ran and pruned:
            log.info("deleted %d old login attempt(s)", pruned)

    scheduler.add_job(
        old_login_attempts,
        "cron",
        minute=35,
        id="prune-login-attempts",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
    )
