"""The scheduler: APScheduler wakes the rooms' jobs; it holds no job per reminder."""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from coordination.jobs import add_jobs
from fhir_adapter.export_jobs import add_export_jobs
from portal.context import AppContext
from reporting.jobs import nightly_snapshots

log = logging.getLogger("cgt_access.jobs")


def build_scheduler(context: AppContext, *, blocking: bool) -> BaseScheduler:
    scheduler: BaseScheduler = (
        BlockingScheduler(timezone="UTC") if blocking else BackgroundScheduler(timezone="UTC")
    )
    add_jobs(
        scheduler,
        factory=context.factory,
        gateway=context.gateway,
        clock=context.clock,
        dispatch_interval_seconds=context.settings.dispatch_interval_seconds,
        dispatch_concurrency=context.settings.dispatch_concurrency,
        planning_interval_minutes=context.settings.reminder_planning_minutes,
    )
    # FHIR bulk export: queued jobs run here (each claimed by one worker), old files expire.
    add_export_jobs(
        scheduler, factory=context.factory, clock=context.clock, settings=context.settings
    )

    def outcome_snapshots() -> None:
        try:
            nightly_snapshots(context.factory, context.clock)
        except Exception:
            log.exception("outcome snapshots failed; the job tries again in an hour")

    # Hourly from 02:15 UTC on: the first run of the day takes the snapshots (as of then),
    # the later ones find them taken (a missed night is caught up within the hour).
    scheduler.add_job(
        outcome_snapshots,
        "cron",
        hour="2-23",
        minute=15,
        id="outcome-snapshots",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
    )
    return scheduler


def start_scheduler(context: AppContext, *, blocking: bool) -> BaseScheduler:
    """Start the jobs (a BlockingScheduler does not return until stopped)."""
    scheduler = build_scheduler(context, blocking=blocking)
    scheduler.start()
    return scheduler
