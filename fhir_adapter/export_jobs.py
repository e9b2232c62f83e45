"""The worker's side of bulk export: claim a queued job, write its NDJSON files from one
snapshot of the database, mark it complete; and delete the files of jobs that expired.

Any number of workers may run these. A job is claimed by an UPDATE guarded by its status
(queued, or running under a lease that ran out: its worker died), so each job runs in one
worker at a time and several workers run different jobs. The worker renews its lease while
it writes, and the same guarded UPDATE tells it when the client cancelled (or another worker
took the job over): it stops at the next chunk and deletes what it wrote.

Reading: one read-only transaction for the whole job (REPEATABLE READ on PostgreSQL, one
read transaction in WAL mode on SQLite), so every file shows the database as it was at
`transactionTime`, the instant that transaction began. Rows are fetched in chunks and each
is written as soon as it is made, so memory stays flat at any size. A file is written under
a temporary name and renamed once complete; a type's resources are split over files of at
most `max_per_file`.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from coordination.followup.protocol import ProtocolLibrary, shipped_protocols
from coordination.locks import OWNER, run_exclusively
from core.clock import Clock
from core.db import after_commit, transaction
from core.settings import Settings
from fhir_adapter.export import job_folder
from fhir_adapter.export_streams import STREAMS, ExportLookups
from fhir_adapter.http import ndjson_line
from fhir_adapter.models import ExportJob, ExportStatus

log = logging.getLogger("cgt_access.fhir.export")

# A running job's claim lasts this long without news from its worker (it renews it at
# least every HEARTBEAT_SECONDS while it writes).
LEASE = timedelta(minutes=5)
HEARTBEAT_SECONDS = 1.0
# How often (in resources written) the worker looks at the time for a heartbeat.
_CHECK_EVERY = 1_000
# How often the scheduler looks for queued jobs, and for expired files.
POLL_SECONDS = 5
CLEANUP_MINUTES = 10
CLEANUP_LOCK = "fhir-export-cleanup"
_WRITE_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class ExportConfig:
    """What the worker needs to know from the settings."""

    export_dir: Path
    keep: timedelta
    max_per_file: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ExportConfig:
        return cls(
            export_dir=Path(settings.export_dir),
            keep=timedelta(hours=settings.export_keep_hours),
            max_per_file=settings.export_file_max_resources,
        )


@dataclass(frozen=True)
class ClaimedExport:
    """A job this worker holds: what to export."""

    pk: int
    job_id: str
    center_id: int
    types: tuple[str, ...]
    since: datetime | None
    owner: str


class _Stopped(Exception):
    """The job was cancelled, or another worker took it over: stop writing."""


# --- claiming ----------------------------------------------------------------------------


def claim_export(
    factory: sessionmaker[Session], *, clock: Clock, owner: str = OWNER
) -> ClaimedExport | None:
    """Take the oldest job that is queued (or whose worker's lease ran out), or None."""
    now = clock.now()
    claimable = or_(
        ExportJob.status == ExportStatus.QUEUED,
        (ExportJob.status == ExportStatus.RUNNING) & (ExportJob.lease_until < now),
    )
    with transaction(factory) as session:
        candidates = list(
            session.scalars(
                select(ExportJob.id)
                .where(claimable)
                .order_by(ExportJob.requested_at, ExportJob.id)
                .limit(10)
            )
        )
        for pk in candidates:
            # Guarded by the state it was read in: of two workers, one gets it.
            taken = session.execute(
                update(ExportJob)
                .where(ExportJob.id == pk, claimable)
                .values(
                    status=ExportStatus.RUNNING,
                    owner=owner,
                    lease_until=now + LEASE,
                    attempts=ExportJob.attempts + 1,
                    started_at=now,
                    progress="starting",
                    updated_at=now,
                )
                .returning(ExportJob.job_id, ExportJob.center_id, ExportJob.types, ExportJob.since)
                .execution_options(synchronize_session=False)
            ).first()
            if taken is not None:
                return ClaimedExport(
                    pk=pk,
                    job_id=taken.job_id,
                    center_id=taken.center_id,
                    types=tuple(taken.types),
                    since=taken.since,
                    owner=owner,
                )
    return None


def _still_ours(
    factory: sessionmaker[Session], *, clock: Clock, claim: ClaimedExport, **values: Any
) -> bool:
    """Renew the lease (and record `values`) if the job is still this worker's and running;
    False when it was cancelled or taken over."""
    now = clock.now()
    with transaction(factory) as session:
        result = cast(
            CursorResult[Any],
            session.execute(
                update(ExportJob)
                .where(
                    ExportJob.id == claim.pk,
                    ExportJob.status == ExportStatus.RUNNING,
                    ExportJob.owner == claim.owner,
                )
                .values({"lease_until": now + LEASE, "updated_at": now, **values})
                .execution_options(synchronize_session=False)
            ),
        )
        return result.rowcount == 1


# --- running -----------------------------------------------------------------------------


@contextmanager
def _snapshot(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read-only session whose every query sees the database as at its first one."""
    with factory() as session:
        try:
            if session.get_bind().dialect.name == "postgresql":
                session.connection(
                    execution_options={
                        "isolation_level": "REPEATABLE READ",
                        "postgresql_readonly": True,
                    }
                )
            else:
                # pysqlite begins a transaction only before a write; in WAL mode a read
                # transaction keeps its snapshot while writers go on.
                session.connection().exec_driver_sql("BEGIN")
            yield session
        finally:
            session.rollback()


class _NdjsonFiles:
    """The files of one resource type: `Type-1.ndjson`, `Type-2.ndjson`... each written
    under a `.part` name and renamed once it holds `max_per_file` resources or the type
    is done."""

    def __init__(self, folder: Path, resource_type: str, max_per_file: int) -> None:
        self.folder = folder
        self.resource_type = resource_type
        self.max_per_file = max_per_file
        self.outputs: list[dict[str, Any]] = []
        self._file: IO[bytes] | None = None
        self._count = 0

    def write(self, line: bytes) -> None:
        if self._file is None:
            number = len(self.outputs) + 1
            self._name = f"{self.resource_type}-{number}.ndjson"
            part = self.folder / f"{self._name}.part"
            self._file = part.open("wb", buffering=_WRITE_BUFFER)  # closed by _finish_file
        self._file.write(line)
        self._count += 1
        if self._count >= self.max_per_file:
            self._finish_file()

    def _finish_file(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        (self.folder / f"{self._name}.part").rename(self.folder / self._name)
        self.outputs.append({"type": self.resource_type, "file": self._name, "count": self._count})
        self._count = 0

    def finish(self) -> list[dict[str, Any]]:
        if self._file is not None:
            self._finish_file()
        return self.outputs

    def abandon(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _write_files(
    factory: sessionmaker[Session],
    *,
    clock: Clock,
    claim: ClaimedExport,
    config: ExportConfig,
    library: ProtocolLibrary,
    folder: Path,
) -> tuple[datetime, list[dict[str, Any]]]:
    """Write every type's files; (transactionTime, the manifest's outputs)."""
    outputs: list[dict[str, Any]] = []
    with _snapshot(factory) as session:
        transaction_time = clock.now()
        lookups = ExportLookups.load(session, library=library)
        if not _still_ours(factory, clock=clock, claim=claim, transaction_time=transaction_time):
            raise _Stopped
        last_beat = time.monotonic()
        for position, resource_type in enumerate(claim.types, start=1):
            stream = STREAMS[resource_type]
            total = stream.count(session, claim.center_id, claim.since)
            files = _NdjsonFiles(folder, resource_type, config.max_per_file)
            written = 0
            try:
                for resource in stream.resources(session, lookups, claim.center_id, claim.since):
                    files.write(ndjson_line(resource))
                    written += 1
                    if written % _CHECK_EVERY == 0 and (
                        time.monotonic() - last_beat >= HEARTBEAT_SECONDS
                    ):
                        share = min(99, written * 100 // max(total, 1))
                        progress = f"{resource_type} {share}% ({position} of {len(claim.types)})"
                        if not _still_ours(factory, clock=clock, claim=claim, progress=progress):
                            raise _Stopped
                        last_beat = time.monotonic()
            except BaseException:
                files.abandon()
                raise
            outputs.extend(files.finish())
    return transaction_time, outputs


def run_export(
    factory: sessionmaker[Session],
    *,
    clock: Clock,
    claim: ClaimedExport,
    config: ExportConfig,
    library: ProtocolLibrary | None = None,
) -> ExportStatus:
    """Run a claimed job to its end: COMPLETE with its files, ERROR (the details only in the
    log), or CANCELLED (stopped, its files deleted). Returns what it became."""
    folder = job_folder(config.export_dir, claim.job_id)
    shutil.rmtree(folder, ignore_errors=True)  # what a worker that died left behind
    try:
        folder.mkdir(parents=True)
        transaction_time, outputs = _write_files(
            factory,
            clock=clock,
            claim=claim,
            config=config,
            library=library or shipped_protocols(),
            folder=folder,
        )
    except _Stopped:
        shutil.rmtree(folder, ignore_errors=True)
        log.info("export %s stopped: cancelled or taken over", claim.pk)
        return ExportStatus.CANCELLED
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        incident = secrets.token_hex(6)
        log.exception("export %s failed (incident %s)", claim.pk, incident)
        _still_ours(
            factory,
            clock=clock,
            claim=claim,
            status=ExportStatus.ERROR,
            progress=None,
            lease_until=None,
            error=(
                "The export failed on the server; nothing was written. Start it again, and "
                f"quote incident {incident} if it fails again."
            ),
        )
        return ExportStatus.ERROR
    now = clock.now()
    if not _still_ours(
        factory,
        clock=clock,
        claim=claim,
        status=ExportStatus.COMPLETE,
        progress=None,
        lease_until=None,
        transaction_time=transaction_time,
        completed_at=now,
        expires_at=now + config.keep,
        outputs=outputs,
    ):
        shutil.rmtree(folder, ignore_errors=True)  # cancelled while the last file closed
        return ExportStatus.CANCELLED
    log.info(
        "export %s complete: %d resources in %d files",
        claim.pk,
        sum(output["count"] for output in outputs),
        len(outputs),
    )
    return ExportStatus.COMPLETE


def run_queued_exports(
    factory: sessionmaker[Session],
    *,
    clock: Clock,
    config: ExportConfig,
    owner: str = OWNER,
    library: ProtocolLibrary | None = None,
    max_jobs: int | None = None,
) -> int:
    """Claim and run queued jobs one after the other until none is left (or `max_jobs`
    ran); how many ran."""
    ran = 0
    while max_jobs is None or ran < max_jobs:
        claim = claim_export(factory, clock=clock, owner=owner)
        if claim is None:
            break
        run_export(factory, clock=clock, claim=claim, config=config, library=library)
        ran += 1
    return ran


# --- expiry ------------------------------------------------------------------------------


def expire_exports(session: Session, *, clock: Clock, config: ExportConfig) -> int:
    """Mark complete jobs whose time is up EXPIRED and delete their files, and the files a
    failed or cancelled job may have left; how many jobs expired."""
    now = clock.now()
    expired = list(
        session.scalars(
            update(ExportJob)
            .where(ExportJob.status == ExportStatus.COMPLETE, ExportJob.expires_at <= now)
            .values(status=ExportStatus.EXPIRED, updated_at=now)
            .returning(ExportJob.job_id)
            .execution_options(synchronize_session=False)
        )
    )
    names = (
        [entry.name for entry in config.export_dir.iterdir() if entry.is_dir()]
        if config.export_dir.is_dir()
        else []
    )
    finished = (
        set(
            session.scalars(
                select(ExportJob.job_id).where(
                    ExportJob.job_id.in_(names),
                    ExportJob.status.in_(
                        (ExportStatus.ERROR, ExportStatus.CANCELLED, ExportStatus.EXPIRED)
                    ),
                )
            )
        )
        if names
        else set()
    )
    folders = [job_folder(config.export_dir, job_id) for job_id in finished | set(expired)]

    def delete_files() -> None:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    # Once the jobs say EXPIRED: a file is never gone while its job still lists it.
    after_commit(session, delete_files)
    return len(expired)


# --- the scheduler -----------------------------------------------------------------------


def add_export_jobs(
    scheduler: BaseScheduler, *, factory: sessionmaker[Session], clock: Clock, settings: Settings
) -> None:
    """Register the export runner (every worker runs it: jobs are claimed, never shared)
    and the expiry of old files (under a lock, one worker at a time)."""
    config = ExportConfig.from_settings(settings)

    def run_exports() -> None:
        try:
            ran = run_queued_exports(factory, clock=clock, config=config)
        except Exception:
            log.exception("the export runner failed; it looks again at the next tick")
            return
        if ran:
            log.info("ran %d export(s)", ran)

    scheduler.add_job(
        run_exports,
        "interval",
        seconds=POLL_SECONDS,
        id="fhir-export-runner",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
    )

    def expire() -> None:
        try:
            ran, expired = run_exclusively(
                factory,
                name=CLEANUP_LOCK,
                clock=clock,
                job=lambda session: expire_exports(session, clock=clock, config=config),
            )
        except Exception:
            log.exception("the export cleanup failed; it runs again later")
            return
        if ran and expired:
            log.info("deleted the files of %d expired export(s)", expired)

    scheduler.add_job(
        expire,
        "interval",
        minutes=CLEANUP_MINUTES,
        id="fhir-export-cleanup",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
    )
