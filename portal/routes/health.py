"""Health checks for load balancers and orchestrators."""

from __future__ import annotations

from functools import cache

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from portal.migrate import alembic_config

router = APIRouter()


@cache
def _code_heads() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


@router.get("/healthz", include_in_schema=False)
def healthz() -> Response:
    """The process is up (no database call: this must stay cheap)."""
    return PlainTextResponse("ok")


@router.get("/readyz", include_in_schema=False)
def readyz(request: Request) -> Response:
    """Ready when the database answers and its schema is at the newest migration."""
    context = request.app.state.context
    heads = _code_heads()
    try:
        with context.engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except Exception as error:  # any driver error means "not ready"
        return JSONResponse(
            {"status": "unavailable", "problem": f"database unreachable: {type(error).__name__}"},
            status_code=503,
        )
    if current != heads:
        return JSONResponse(
            {
                "status": "unavailable",
                "problem": "database migrations are behind; run `cgt-access db upgrade`",
                "database": sorted(current),
                "code": sorted(heads),
            },
            status_code=503,
        )
    return JSONResponse({"status": "ok", "revision": sorted(current)})
