"""What the scheduler runs for reporting (registered in `portal/scheduler.py`)."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from coordination.locks import run_exclusively
from core.clock import Clock
from reporting.agreements import AgreementLibrary, shipped_agreements
from reporting.snapshots import take_nightly_snapshots

log = logging.getLogger("cgt_access.jobs")
SNAPSHOT_LOCK = "outcome-snapshots"
# Long enough for a big evaluation; a run that died leaves the lease to run out.
SNAPSHOT_LEASE = timedelta(hours=2)


def nightly_snapshots(
    factory: sessionmaker[Session], clock: Clock, *, library: AgreementLibrary | None = None
) -> int | None:
    """Take tonight's outcome snapshots (one per agreement, as of now) under the job lease,
    so that of several workers one takes them, once a day. Returns how many were taken
    (0: tonight's exist already), or None when another worker holds the lease."""
    terms = library or shipped_agreements()
    ran, taken = run_exclusively(
        factory,
        name=SNAPSHOT_LOCK,
        clock=clock,
        lease=SNAPSHOT_LEASE,
        job=lambda session: len(take_nightly_snapshots(session, clock=clock, library=terms)),
    )
    if not ran:
        return None
    if taken:
        log.info("took %d outcome snapshot(s)", taken)
    return taken
