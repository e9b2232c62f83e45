"""What the scheduler runs. APScheduler only wakes these up; the truth stays in the tables."""

from __future__ import annotations

import logging

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.orm import Session, sessionmaker

from coordination.dispatcher import dispatch_due
from coordination.gateway import SmsGateway
from coordination.locks import run_exclusively
from coordination.schedule import mark_missed_visits
from core.clock import Clock

log = logging.getLogger("cgt_access.jobs")


def add_jobs(
    scheduler: BaseScheduler,
    *,
    factory: sessionmaker[Session],
    gateway: SmsGateway,
    clock: Clock,
    dispatch_interval_seconds: int,
) -> None:
    """Register coordination's recurring jobs on `scheduler`."""

    def dispatch_outbox() -> None:
        try:
            sent = dispatch_due(factory, gateway=gateway, clock=clock)
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
