"""What the in-process benchmarks share: the throw-away database's secret key, and the
platform served on that database to an in-process HTTP client."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from coordination.texting.gateway import ConsoleGateway
from core.clock import Clock
from core.settings import load_settings
from portal.app import create_app

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

# A key for the benchmarks' throw-away databases only; never used anywhere else.
BENCH_SECRET = "bench-only-secret-key-for-a-throwaway-database-0000"


def bench_app(
    *,
    url: str,
    clock: Clock,
    factory: sessionmaker[Session],
    public_base_url: str = "http://testserver",
) -> FastAPI:
    """The platform on the bench's database: no scheduler, texts to the console."""
    settings = load_settings(
        database_url=url,
        secret_key=BENCH_SECRET,
        demo_mode=False,
        run_scheduler=False,
        sms_backend="console",
        public_base_url=public_base_url,
    )
    return create_app(
        settings, clock=clock, factory=factory, gateway=ConsoleGateway(), run_scheduler=False
    )


def in_process(app: FastAPI) -> TestClient:
    """An HTTP client of `app` in this process (enter it with `with`); server errors raise."""
    with warnings.catch_warnings():
        # Starlette's notice about httpx vs httpx2 (pytest filters it too): not a figure.
        warnings.filterwarnings("ignore", message=".*starlette.testclient.*deprecated")
        from fastapi.testclient import TestClient
    return TestClient(app, raise_server_exceptions=True, follow_redirects=False)
