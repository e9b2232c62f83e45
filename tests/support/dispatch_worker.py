"""Dispatcher processes for the crash tests: `python -m tests.support.dispatch_worker`.

Each worker runs what `cgt-access worker`'s dispatcher job runs (`dispatch_due` with the
gateway the settings choose), without the scheduler's one-second wait, in small batches and
in a tight loop, so that a SIGKILL lands anywhere: in a claim, mid-send, in a record.
Settings come from the environment (DATABASE_URL, SMS_BACKEND, TWILIO_*, and
DISPATCH_BATCH_SIZE for the batch).

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

from coordination.texting.dispatcher import dispatch_due
from coordination.texting.gateway import make_gateway
from core.clock import SystemClock
from core.db import make_engine, make_session_factory
from core.settings import load_settings


def run_worker() -> None:
    """Dispatch for ever (until killed)."""
    settings = load_settings()
    factory = make_session_factory(make_engine(settings.database_url))
    gateway = make_gateway(settings)
    batch_size = int(os.environ.get("DISPATCH_BATCH_SIZE", "10"))
    clock = SystemClock()
    while True:
        sent = dispatch_due(
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
