"""What the scheduler runs for reporting (registered in `portal/scheduler.py`)."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from coordination.locks import run_exclusively
from core.clock import Clock
from reporting.agreements import AgreementLibrary, shipped_agreements
from reporting.program_snapshots import take_nightly_program_snapshot
from reporting.snapshots import take_nightly_snapshots

log = logging.getLogger("cgt_access.jobs")
SNAPSHOT_LOCK = "outcome-snapshots"
# Long enough for a big evaluation; a run that died leaves the lease to run out.
SNAPSHOT_LEASE = timedelta(hours=2)


def nightly_snapshots(
    factory: sessionmaker[Session], clock: Clock, *, library: AgreementLibrary | None = None
) -> int | None:
    """Take tonight's snapshots under the job lease, so that of several workers one takes
    them, once a day: the outcome figures (one per agreement, as of now) and the program
    figures (`reporting.program_snapshots`). Returns how many were taken (0: tonight's
    exist already), or None when another worker holds the lease."""
    terms = library or shipped_agreements()

    def take(session: Session) -> int:
        outcomes = len(take_nightly_snapshots(session, clock=clock, library=terms))
        program = take_nightly_program_snapshot(session, clock=clock)
        return outcomes + (program is not None)

    ran, taken = run_exclusively(
        factory, name=SNAPSHOT_LOCK, clock=clock, lease=SNAPSHOT_LEASE, job=take
    )
    if not ran:
        return None
    if taken:
        log.info("took %d report snapshot(s)", taken)
    return taken
