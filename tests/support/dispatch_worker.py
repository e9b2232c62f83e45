"""Dispatcher processes for the crash tests: `python -m tests.support.dispatch_worker`.

Each worker runs what `cgt-access worker`'s dispatcher job runs (`dispatch_due` with the
gateway the settings choose), without the scheduler's one-second wait, in small batches and
in a tight loop, so that a SIGKILL lands anywhere: in a claim, mid-send, in a record.
Settings come from the environment (DATABASE_URL, SMS_BACKEND, TWILIO_*, and
DISPATCH_BATCH_SIZE for the batch; DISPATCH_CHECK_SECONDS makes the check before sending
take that long, as the real one does with a hundred reminders to weigh against consent,
visits and caps: two dispatchers then read the same due rows before either claims them).

Starting Python and importing the platform takes most of a second; a test that kills twenty
workers would spend it twenty times. So this process imports once, says "ready", and then
forks a fresh worker for every "fork" line on its standard input (answering with the
worker's pid); "reap PID" waits for that worker to end and answers how it ended (e.g.
"signal 9"). The workers open their own database connections and HTTP sessions after the
fork: each is a new dispatcher process, only started faster."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from sqlalchemy.orm import Session

from coordination.texting import dispatcher
from coordination.texting.gateway import make_gateway
from coordination.texting.models import OutboundMessage
from coordination.texting.send_check import Verdict, check_before_sending
from core.clock import Clock, SystemClock
from core.db import make_engine, make_session_factory
from core.settings import load_settings


def _slow_check(seconds: float) -> None:
    def check(
        session: Session, *, clock: Clock, messages: Sequence[OutboundMessage]
    ) -> dict[int, Verdict]:
        time.sleep(seconds)
        return check_before_sending(session, clock=clock, messages=messages)

    # The dispatcher's own name for it, as the worker processes use it.
    setattr(dispatcher, "check_before_sending", check)  # noqa: B010


def run_worker() -> None:
    """Dispatch for ever (until killed)."""
    if check_seconds := float(os.environ.get("DISPATCH_CHECK_SECONDS", "0")):
        _slow_check(check_seconds)
    settings = load_settings()
    factory = make_session_factory(make_engine(settings.database_url))
    gateway = make_gateway(settings)
    batch_size = int(os.environ.get("DISPATCH_BATCH_SIZE", "10"))
    clock = SystemClock()
    while True:
        sent = dispatcher.dispatch_due(
            factory,
            gateway=gateway,
            clock=clock,
            batch_size=batch_size,
            concurrency=settings.dispatch_concurrency,
        )
        if not sent:
            time.sleep(0.05)


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def main() -> None:
    print("ready", flush=True)
    while line := sys.stdin.readline():
        command = line.split()
        if command == ["fork"]:
            pid = os.fork()
            if pid == 0:
                try:
                    run_worker()
                finally:
                    os._exit(70)  # only reached when the worker failed on its own
            print(pid, flush=True)
        elif len(command) == 2 and command[0] == "reap":
            _, status = os.waitpid(int(command[1]), 0)
            print(_ended(status), flush=True)
        else:
            print(f"unknown command {line.strip()!r}", flush=True)


if __name__ == "__main__":
    main()
