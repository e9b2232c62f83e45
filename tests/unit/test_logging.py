"""What the platform's own log says while the scheduler runs its jobs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from portal.cli import _configure_logging


@pytest.fixture
def configured() -> Iterator[None]:
    scheduler_log = logging.getLogger("apscheduler")
    level = scheduler_log.level
    _configure_logging()
    try:
        yield
    finally:
        scheduler_log.setLevel(level)


def test_a_jobs_runs_are_not_logged_but_its_failure_is(
    configured: None, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator's log does not get two lines for every run of every job (the export poll
    runs every 5 s), and still gets the job that failed."""
    ran, failed = threading.Event(), threading.Event()

    def quiet_job() -> None:
        ran.set()

    def failing_job() -> None:
        failed.set()
        raise RuntimeError("the job broke")

    caplog.set_level(logging.INFO)  # the root's level: what basicConfig sets in `serve`
    scheduler = BackgroundScheduler()
    scheduler.add_job(quiet_job, id="quiet")
    scheduler.add_job(failing_job, id="failing")
    scheduler.start()
    try:
        assert ran.wait(10) and failed.wait(10)
    finally:
        scheduler.shutdown(wait=True)

    lines = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert not [message for _level, message in lines if "Running job" in message], lines
    assert not [message for _level, message in lines if "executed successfully" in message]
    failures = [message for level, message in lines if level >= logging.ERROR]
    assert any("failing_job" in line and "raised an exception" in line for line in failures)
