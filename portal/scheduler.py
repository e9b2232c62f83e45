"""The scheduler: APScheduler wakes the rooms' jobs; it holds no job per reminder."""

from __future__ import annotations

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from coordination.jobs import add_jobs
from fhir_adapter.export_jobs import add_export_jobs
from portal.context import AppContext


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
    return scheduler


def start_scheduler(context: AppContext, *, blocking: bool) -> BaseScheduler:
    """Start the jobs (a BlockingScheduler does not return until stopped)."""
    scheduler = build_scheduler(context, blocking=blocking)
    scheduler.start()
    return scheduler
