"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL,
go down and up again, readiness reports a database that is behind, and the audit log
refuses changes in the database itself."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError

import migrations.metadata  # noqa: F401  (every room's tables on Base.metadata)
from coordination.gateway import ConsoleGateway
from core.audit.models import AuditEvent, AuditLogIsAppendOnly
from core.audit.service import Actor, record_event
from core.clock import FrozenClock
from core.db import Base, make_engine, make_session_factory
from portal.app import create_app
from portal.migrate import alembic_config, upgrade_database
from tests.conftest import T0, Database, make_settings
from tests.support.pg_cluster import PostgresCluster

_numbers = itertools.count()


@pytest.fixture
def blank_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a brand-new database without any table (not even alembic_version)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"blank{os.getpid()}_{next(_numbers)}"
    url = cluster.create_database(name)
    try:
        yield url
    finally:
        cluster.drop_database(name)


@pytest.fixture
def engine(blank_url: str) -> Iterator[Engine]:
    engine = make_engine(blank_url)
    try:
        yield engine
    finally:
        engine.dispose()


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def code_heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_upgrade_from_empty_builds_exactly_the_models(blank_url: str, engine: Engine) -> None:
    assert tables(engine) == set()
    upgrade_database(blank_url)
    assert current_revisions(engine) == code_heads()
    assert tables(engine) == {*Base.metadata.tables, "alembic_version"}
    assert schema_differences(engine) == []


def test_downgrade_to_base_and_upgrade_again(blank_url: str, engine: Engine) -> None:
    upgrade_database(blank_url)
    command.downgrade(alembic_config(blank_url), "base")
    assert current_revisions(engine) == set()
    assert tables(engine) <= {"alembic_version"}

    upgrade_database(blank_url)
    assert current_revisions(engine) == code_heads()
    assert schema_differences(engine) == []


def test_readyz_is_503_while_the_database_is_behind_and_200_at_head(
    blank_url: str, engine: Engine, clock: FrozenClock
) -> None:
    upgrade_database(blank_url)
    command.downgrade(alembic_config(blank_url), "base")
    app = create_app(
        make_settings(blank_url),
        clock=clock,
        factory=make_session_factory(engine),
        gateway=ConsoleGateway(),
        run_scheduler=False,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        behind = client.get("/readyz")
        assert behind.status_code == 503
        body = behind.json()
        assert body["status"] == "unavailable"
        assert "database migrations are behind" in body["problem"]
        assert "cgt-access db upgrade" in body["problem"]
        assert body["database"] == []
        assert body["code"] == sorted(code_heads())
        # The process itself is up.
        assert client.get("/healthz").status_code == 200

        upgrade_database(blank_url)
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "revision": sorted(code_heads())}


def test_readyz_is_503_when_the_database_cannot_be_reached(
    tmp_path: Path, clock: FrozenClock
) -> None:
    missing = f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}"
    engine = make_engine(missing)
    app = create_app(
        make_settings(missing),
        clock=clock,
        factory=make_session_factory(engine),
        gateway=ConsoleGateway(),
        run_scheduler=False,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    engine.dispose()
    assert response.status_code == 503
    assert response.json()["problem"].startswith("database unreachable")


def _one_event(db: Database) -> int:
    with db.factory() as session:
        event = record_event(
            session,
            clock=FrozenClock(T0),
            actor=Actor(user_id=None, label="auditor-test", role=None, ip="192.0.2.1"),
            action="login",
        )
        session.commit()
        return event.id


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'nothing happened' WHERE id = :id",
        "UPDATE audit_events SET ip = NULL",
        "DELETE FROM audit_events WHERE id = :id",
        "DELETE FROM audit_events",
    ],
)
def test_the_database_refuses_to_change_the_audit_log(db: Database, statement: str) -> None:
    event_id = _one_event(db)
    with db.engine.connect() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            connection.execute(text(statement), {"id": event_id})
        connection.rollback()

    with db.factory() as session:
        event = session.get(AuditEvent, event_id)
        assert event is not None
        assert event.action == "login"
        assert event.ip == "192.0.2.1"


def test_the_database_refuses_to_truncate_the_audit_log(db: Database) -> None:
    if db.backend != "postgresql":
        pytest.skip("SQLite has no TRUNCATE (DELETE is covered above)")
    event_id = _one_event(db)
    with db.engine.connect() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            connection.execute(text("TRUNCATE audit_events CASCADE"))
        connection.rollback()
    with db.factory() as session:
        assert session.get(AuditEvent, event_id) is not None


def test_the_orm_refuses_to_change_or_delete_audit_events(db: Database) -> None:
    event_id = _one_event(db)
    with db.factory() as session:
        event = session.get(AuditEvent, event_id)
        assert event is not None
        event.action = "rewritten"
        with pytest.raises(AuditLogIsAppendOnly):
            session.flush()
        session.rollback()

        event = session.get(AuditEvent, event_id)
        assert event is not None
        session.delete(event)
        with pytest.raises(AuditLogIsAppendOnly):
            session.commit()
        session.rollback()

    with db.factory() as session:
        assert session.scalars(
            select(AuditEvent.action).where(AuditEvent.id == event_id)
        ).all() == ["login"]


def test_new_audit_events_can_still_be_written(db: Database) -> None:
    first, second = _one_event(db), _one_event(db)
    with db.factory() as session:
        assert session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)).all()[-2:] == [
            first,
            second,
        ]
