"""Real worker processes against the loopback double of Twilio's API: a dispatcher killed
with SIGKILL again and again while it sends, and two `cgt-access worker`s sharing 5,000
texts on PostgreSQL. Afterwards every text went exactly once (or failed with its reason):
none twice, none lost."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import select

from coordination.locks import acquire_lock, release_lock
from coordination.texting.dispatcher import IN_DOUBT_AFTER, DispatchReport, dispatch_due
from coordination.texting.models import MessageStatus, OutboundMessage
from coordination.texting.twilio_gateway import TwilioGateway
from core.clock import FrozenClock
from portal.cli import SMS_DISPATCH_LEASE, SMS_DISPATCH_LOCK
from tests.conftest import Database
from tests.doubles.twilio_api import TwilioApiDouble
from tests.support.sms import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    bodies_at,
    queue_invitations,
    statuses,
    twilio_settings,
    worker_env,
)

REPO = Path(__file__).resolve().parents[3]
KILLS = 20
CRASH_MESSAGES = 900
TWO_WORKER_MESSAGES = 5000


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _all_went_once(db: Database, double: TwilioApiDouble, expected: int) -> None:
    """Every row was sent, and Twilio holds exactly one message for each: its own."""
    assert statuses(db.factory) == {MessageStatus.SENT: expected}
    taken = bodies_at(double)
    assert len(double.messages) == expected
    assert max(taken.values()) == 1, [key for key, count in taken.items() if count > 1][:3]
    with db.factory() as session:
        rows = session.execute(
            select(
                OutboundMessage.to_phone, OutboundMessage.body, OutboundMessage.provider_message_id
            )
        ).all()
    by_text = {(message.to, message.body): message.sid for message in double.messages}
    assert {(to, body): sid for to, body, sid in rows} == by_text


# --- a dispatcher killed again and again ------------------------------------------------


class Forker:
    """tests/support/dispatch_worker.py: forks fresh dispatcher processes on demand."""

    def __init__(self, env: dict[str, str], log: IO[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.dispatch_worker"],
            cwd=REPO,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert self.ask(None) == "ready"

    def ask(self, command: str | None) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer, "the worker forker died (see its log)"
        return answer

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # it ends when its input does
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def _forker(db: Database, tmp_path: Path, **extra: str) -> Iterator[tuple[Forker, TwilioApiDouble]]:
    log = (tmp_path / "workers.log").open("w")
    # A Twilio that takes 20 ms a request: kills land mid-send more often, and twenty short
    # lives cannot send everything before the last kill.
    with TwilioApiDouble(ACCOUNT_SID, AUTH_TOKEN, lifetime=120, latency=0.02) as double:
        env = worker_env(
            db.url,
            double.url,
            DISPATCH_BATCH_SIZE="10",
            DISPATCH_CONCURRENCY="4",
            **extra,
        )
        forker = Forker(env, log)
        try:
            yield forker, double
        finally:
            forker.close()
            log.close()


@pytest.fixture
def forker(empty_db: Database, tmp_path: Path) -> Iterator[tuple[Forker, TwilioApiDouble]]:
    with _forker(empty_db, tmp_path) as forker_and_double:
        yield forker_and_double


def test_a_dispatcher_killed_while_sending_never_sends_twice(
    empty_db: Database, forker: tuple[Forker, TwilioApiDouble], tmp_path: Path
) -> None:
    workers, double = forker
    queue_invitations(
        empty_db.factory, count=CRASH_MESSAGES, send_after=datetime.now(UTC) - timedelta(seconds=1)
    )
    rng = random.Random()
    for _life in range(KILLS):
        before = double.request_count
        pid = int(workers.ask("fork"))
        # Once it is sending, at a random moment: in a claim, mid-send, in a record.
        _wait_for(lambda: double.request_count > before, 15, "the worker to send")  # noqa: B023
        time.sleep(rng.uniform(0, 0.25))
        os.kill(pid, signal.SIGKILL)
        ended = workers.ask(f"reap {pid}")
        assert ended == "signal 9", (ended, (tmp_path / "workers.log").read_text()[-3000:])

    counts = statuses(empty_db.factory)
    in_doubt = counts.get(MessageStatus.SENDING, 0)
    assert in_doubt > 0, counts  # the kills did land mid-send
    assert counts.get(MessageStatus.SENT, 0) > 0 and counts.get(MessageStatus.QUEUED, 0) > 0

    # Later, a dispatcher settles what the dead ones left in doubt, then sends the rest.
    double.latency = 0.0
    later = FrozenClock(datetime.now(UTC) + IN_DOUBT_AFTER + timedelta(seconds=1))
    gateway = TwilioGateway(twilio_settings(empty_db.url, double.url))
    report = DispatchReport()
    dispatch_due(empty_db.factory, gateway=gateway, clock=later, report=report)
    assert report.reconciled + report.requeued == in_doubt
    assert report.failed == 0 and report.errors == []
    _all_went_once(empty_db, double, CRASH_MESSAGES)
    with empty_db.factory() as session:
        assert max(session.scalars(select(OutboundMessage.attempts))) <= 2


# --- two dispatchers on one database, SQLite too ------------------------------------------

TWIN_MESSAGES = 100


@pytest.fixture
def twin_forker(empty_db: Database, tmp_path: Path) -> Iterator[tuple[Forker, TwilioApiDouble]]:
    """Dispatchers whose check before sending takes 0.2 s (as the real one does with a
    hundred reminders to weigh): two of them read the same due rows before either claims."""
    with _forker(empty_db, tmp_path, DISPATCH_CHECK_SECONDS="0.2") as forker_and_double:
        yield forker_and_double


def test_two_dispatchers_at_once_send_each_text_once(
    empty_db: Database, twin_forker: tuple[Forker, TwilioApiDouble]
) -> None:
    """`cgt-access sms dispatch` next to `serve`, or two of them: two processes take due
    rows from one outbox at the same moment. On SQLite each used to send every row it had
    read, whoever marked it first: every text left twice."""
    workers, double = twin_forker
    queue_invitations(
        empty_db.factory, count=TWIN_MESSAGES, send_after=datetime.now(UTC) - timedelta(seconds=1)
    )
    pids = [int(workers.ask("fork")) for _ in range(2)]
    try:
        _wait_for(
            lambda: statuses(empty_db.factory) == {MessageStatus.SENT: TWIN_MESSAGES},
            60,
            "the dispatchers to send everything",
        )
        time.sleep(0.3)  # a second copy still on the wire would arrive now
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            workers.ask(f"reap {pid}")
    _all_went_once(empty_db, double, TWIN_MESSAGES)


CLI = Path(sys.executable).parent / "cgt-access"


def _sms_dispatch(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "sms", "dispatch"],
        cwd=cwd,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sms_dispatch_next_to_a_running_dispatcher_sends_each_text_once(
    empty_db: Database, twin_forker: tuple[Forker, TwilioApiDouble], tmp_path: Path
) -> None:
    """The README's `cgt-access sms dispatch` while `serve` dispatches too."""
    workers, double = twin_forker
    count = 3 * TWIN_MESSAGES
    queue_invitations(
        empty_db.factory, count=count, send_after=datetime.now(UTC) - timedelta(seconds=1)
    )
    pid = int(workers.ask("fork"))
    try:
        result = _sms_dispatch(worker_env(empty_db.url, double.url), tmp_path)
        _wait_for(
            lambda: statuses(empty_db.factory) == {MessageStatus.SENT: count},
            60,
            "the dispatchers to send everything",
        )
        time.sleep(0.3)
    finally:
        os.kill(pid, signal.SIGKILL)
        workers.ask(f"reap {pid}")
    assert result.returncode == 0, result.stderr
    by_command = int(re.findall(r"sent (\d+),", result.stdout)[0])
    assert 0 < by_command < count, result.stdout  # both sent part of the outbox
    _all_went_once(empty_db, double, count)


def test_a_second_sms_dispatch_at_once_sends_nothing_and_says_why(
    empty_db: Database, tmp_path: Path
) -> None:
    queue_invitations(
        empty_db.factory, count=3, send_after=datetime.now(UTC) - timedelta(seconds=1)
    )
    clock = FrozenClock(datetime.now(UTC))
    # Another run holds the lease.
    assert acquire_lock(
        empty_db.factory,
        name=SMS_DISPATCH_LOCK,
        clock=clock,
        lease=SMS_DISPATCH_LEASE,
        owner="elsewhere:1",
    )
    with TwilioApiDouble(ACCOUNT_SID, AUTH_TOKEN, lifetime=120) as double:
        env = worker_env(empty_db.url, double.url)
        refused = _sms_dispatch(env, tmp_path)
        assert refused.returncode == 1
        assert "another `cgt-access sms dispatch` is sending right now" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert double.request_count == 0
        assert statuses(empty_db.factory) == {MessageStatus.QUEUED: 3}

        release_lock(empty_db.factory, name=SMS_DISPATCH_LOCK, clock=clock, owner="elsewhere:1")
        done = _sms_dispatch(env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "sent 3," in done.stdout
        # Its own lease is given back: the next run goes ahead.
        assert _sms_dispatch(env, tmp_path).returncode == 0
        _all_went_once(empty_db, double, 3)


# --- two `cgt-access worker`s on PostgreSQL ---------------------------------------------


def _sent_by(log: Path) -> int:
    return sum(int(n) for n in re.findall(r"dispatcher sent (\d+) message", log.read_text()))


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_two_workers_on_postgresql_send_each_of_5000_texts_once(
    empty_db: Database, tmp_path: Path
) -> None:
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    with ExitStack() as stack:
        double = stack.enter_context(TwilioApiDouble(ACCOUNT_SID, AUTH_TOKEN, lifetime=120))
        env = {**os.environ, **worker_env(empty_db.url, double.url, DISPATCH_INTERVAL_SECONDS="1")}
        processes = [
            subprocess.Popen(
                [str(Path(sys.executable).parent / "cgt-access"), "worker"],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stack.enter_context(log.open("w")),
                stderr=subprocess.STDOUT,
            )
            for log in logs
        ]
        try:
            for log in logs:
                _wait_for(lambda: "worker started" in log.read_text(), 30, "a worker to start")  # noqa: B023
            # Both are up before the texts fall due: each tick, each takes what it can.
            queue_invitations(
                empty_db.factory,
                count=TWO_WORKER_MESSAGES,
                send_after=datetime.now(UTC) - timedelta(seconds=1),
            )
            _wait_for(
                lambda: sum(_sent_by(log) for log in logs) >= TWO_WORKER_MESSAGES,
                45,
                "the workers to send everything",
            )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=10)
        shares = [_sent_by(log) for log in logs]
        assert sum(shares) == TWO_WORKER_MESSAGES
        assert all(share > 0 for share in shares), shares  # both did part of the work
        _all_went_once(empty_db, double, TWO_WORKER_MESSAGES)
