"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL,
go down and up again, readiness reports a database that is behind, and the audit log
refuses changes in the database itself."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import timedelta
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
from coordination.texting.gateway import ConsoleGateway
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


# Writing another row over an existing id: SQLite's REPLACE deletes the old row without
# firing the DELETE trigger; an upsert turns the INSERT into an UPDATE.
_REWRITE_BY_INSERT = (
    "INSERT INTO audit_events (id, at, actor_label, action, outcome) "
    "SELECT id, at, 'someone else', 'nothing happened', outcome FROM audit_events WHERE id = :id"
)
_UPSERT = " ON CONFLICT (id) DO UPDATE SET action = excluded.action, actor_label = 'someone else'"


@pytest.mark.parametrize(
    ("only_on", "statement"),
    [
        ("sqlite", _REWRITE_BY_INSERT.replace("INSERT INTO", "INSERT OR REPLACE INTO")),
        ("sqlite", _REWRITE_BY_INSERT.replace("INSERT INTO", "REPLACE INTO")),
        (None, _REWRITE_BY_INSERT + _UPSERT),
    ],
    ids=["insert-or-replace", "replace", "upsert"],
)
def test_the_database_refuses_to_write_over_an_audit_event(
    db: Database, only_on: str | None, statement: str
) -> None:
    if only_on is not None and db.backend != only_on:
        pytest.skip(f"{only_on} syntax")
    event_id = _one_event(db)
    with db.engine.connect() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            connection.execute(text(statement), {"id": event_id})
        connection.rollback()

    with db.factory() as session:
        event = session.get(AuditEvent, event_id)
        assert event is not None
        assert (event.action, event.actor_label) == ("login", "auditor-test")


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


# --- upgrading a database that already holds data ---------------------------------------
# (Imports local to these tests, so that the module's header stays as its author wrote it.)


def _insert_returning_id(connection: object, statement: str, **values: object) -> int:
    """Run one raw INSERT ... RETURNING id, with datetimes and JSON bound by their types."""
    from datetime import datetime

    from sqlalchemy import JSON, Connection, bindparam

    from core.db import UTCDateTime

    assert isinstance(connection, Connection)
    query = text(f"{statement} RETURNING id")
    for name, value in values.items():
        if isinstance(value, datetime):
            query = query.bindparams(bindparam(name, type_=UTCDateTime()))
        elif isinstance(value, dict):
            query = query.bindparams(bindparam(name, type_=JSON()))
    new_id = connection.execute(query, values).scalar_one()
    return int(new_id)


def test_upgrading_a_foundation_database_with_data_keeps_it_and_adds_the_new_tables(
    blank_url: str, engine: Engine
) -> None:
    from datetime import date, timedelta

    from sqlalchemy import func

    from coordination.followup.models import FollowUpPlan, Visit
    from coordination.followup.protocol import shipped_protocols
    from coordination.followup.schedule import sync_schedule
    from core.identity.models import Role, User
    from core.models import Patient, PatientStatus, State

    script = ScriptDirectory.from_config(alembic_config())
    foundation = script.get_base()
    assert foundation is not None
    command.upgrade(alembic_config(blank_url), foundation)
    assert current_revisions(engine) == {foundation}
    at_foundation = tables(engine)
    assert "patients" in at_foundation
    assert "visits" not in at_foundation

    with engine.begin() as connection:
        state_id = _insert_returning_id(
            connection,
            "INSERT INTO states (code, name, time_zone, program_name, program_phone, created_at) "
            "VALUES ('MD', 'Maryland', 'America/New_York', 'Maryland Care Connect', "
            "'+14105550100', :created_at)",
            created_at=T0,
        )
        therapy_id = _insert_returning_id(
            connection,
            "INSERT INTO therapies (code, brand_name, generic_name, manufacturer) "
            "VALUES ('casgevy', 'Casgevy', 'exagamglogene autotemcel', 'Vertex')",
        )
        center_id = _insert_returning_id(
            connection,
            "INSERT INTO treatment_centers (state_id, name, city, phone, is_active, created_at) "
            "VALUES (:state_id, 'Harborview', 'Baltimore', NULL, :active, :created_at)",
            state_id=state_id,
            active=True,
            created_at=T0,
        )
        patient_id = _insert_returning_id(
            connection,
            "INSERT INTO patients (state_id, therapy_id, center_id, medicaid_id, center_mrn, "
            "given_name, family_name, birth_date, preferred_language, time_zone, mobile_phone, "
            "infusion_date, status, created_at, updated_at) VALUES (:state_id, :therapy_id, "
            ":center_id, 'MD00100200', 'MRN-1', 'Lucía', 'Pérez', :birth, 'es', "
            "'America/New_York', '+14105550110', :infusion, 'active', :created_at, :updated_at)",
            state_id=state_id,
            therapy_id=therapy_id,
            center_id=center_id,
            birth=date(2008, 2, 29),
            infusion=date(2026, 9, 1),
            created_at=T0 - timedelta(days=90),
            updated_at=T0,
        )
        user_id = _insert_returning_id(
            connection,
            "INSERT INTO users (login, display_name, email, role, password_hash, is_active, "
            "preferred_language, created_at) VALUES ('coordinator@example.test', "
            "'Morgan Reyes', 'coordinator@example.test', 'coordinator', 'x', :active, 'en', "
            ":created_at)",
            active=True,
            created_at=T0,
        )
        patient_user_id = _insert_returning_id(
            connection,
            "INSERT INTO users (login, display_name, role, patient_id, is_active, "
            "preferred_language, created_at) VALUES ('lucia', 'Lucía Pérez', 'patient', "
            ":patient_id, :active, 'es', :created_at)",
            patient_id=patient_id,
            active=True,
            created_at=T0,
        )
        connection.execute(
            text("INSERT INTO user_state_scopes (user_id, state_id) VALUES (:user, :state)"),
            {"user": user_id, "state": state_id},
        )
        audit_ids = [
            _insert_returning_id(
                connection,
                "INSERT INTO audit_events (at, actor_user_id, actor_label, actor_role, action, "
                "outcome, patient_id, target, ip, user_agent, detail) VALUES (:at, :actor, "
                "'coordinator@example.test', 'coordinator', :action, 'success', :patient_id, "
                ":target, '192.0.2.7', NULL, :detail)",
                at=T0 + timedelta(minutes=minute),
                actor=user_id,
                action=action,
                patient_id=patient_id,
                target=f"patient:{patient_id}",
                detail={"fields": ["infusion_date"]},
            )
            for minute, action in ((0, "patient.create"), (5, "patient.update"))
        ]

    upgrade_database(blank_url)
    assert current_revisions(engine) == code_heads()
    at_head = tables(engine)
    assert at_foundation < at_head
    assert {"follow_up_plans", "visits", "visit_events", "job_locks"} <= at_head - at_foundation
    assert at_head == {*Base.metadata.tables, "alembic_version"}
    assert schema_differences(engine) == []

    factory = make_session_factory(engine)
    with factory() as session:
        # Every row is still there, as it was written.
        for table, expected in {
            "states": 1,
            "therapies": 1,
            "treatment_centers": 1,
            "patients": 1,
            "users": 2,
            "user_state_scopes": 1,
            "audit_events": 2,
        }.items():
            count = session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            assert count == expected, table
        state = session.get(State, state_id)
        assert state is not None
        assert (state.code, state.time_zone, state.created_at) == ("MD", "America/New_York", T0)
        patient = session.get(Patient, patient_id)
        assert patient is not None
        assert (patient.given_name, patient.family_name) == ("Lucía", "Pérez")
        assert (patient.birth_date, patient.infusion_date) == (date(2008, 2, 29), date(2026, 9, 1))
        assert patient.status is PatientStatus.ACTIVE
        assert patient.therapy.code == "casgevy"
        assert patient.created_at == T0 - timedelta(days=90)
        coordinator = session.get(User, user_id)
        assert coordinator is not None
        assert coordinator.role is Role.COORDINATOR
        assert coordinator.state_ids == {state_id}
        patient_user = session.get(User, patient_user_id)
        assert patient_user is not None
        assert patient_user.patient_id == patient_id
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert [event.id for event in events] == audit_ids
        assert [(event.action, event.at, event.detail) for event in events] == [
            ("patient.create", T0, {"fields": ["infusion_date"]}),
            ("patient.update", T0 + timedelta(minutes=5), {"fields": ["infusion_date"]}),
        ]

        # The new tables work with the old rows: the kept patient gets a schedule, and new
        # audit rows follow the old ones.
        actor = Actor(user_id=user_id, label="coordinator@example.test", role="coordinator")
        change = sync_schedule(
            session,
            clock=FrozenClock(T0),
            actor=actor,
            library=shipped_protocols(),
            patient=patient,
        )
        new_event = record_event(session, clock=FrozenClock(T0), actor=actor, action="login")
        session.commit()
        protocol = shipped_protocols().current("casgevy")
        assert protocol is not None
        assert change.created == len(protocol.visits)
        visit_count = session.scalar(
            select(func.count()).select_from(Visit).where(Visit.patient_id == patient_id)
        )
        assert visit_count == len(protocol.visits)
        plan = session.scalar(select(FollowUpPlan).where(FollowUpPlan.patient_id == patient_id))
        assert plan is not None and plan.anchor_date == date(2026, 9, 1)
        assert new_event.id > max(audit_ids)

    # The audit log kept its protection through the upgrade.
    with engine.connect() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            connection.execute(
                text("UPDATE audit_events SET action = 'rewritten' WHERE id = :id"),
                {"id": audit_ids[0]},
            )
        connection.rollback()


def test_texts_received_before_the_inbox_existed_wait_in_it_after_the_upgrade(
    blank_url: str, engine: Engine
) -> None:
    """The inbox's migration files the texts already received that promised a person, by
    the rule of coordination.texting.inbound: the patient a text was tied to, else the
    number's own patients, else the patients its caregivers help (schedule or reminders).

    The rows are written in SQL with the columns of that time: the application's models
    follow the newest schema, which later migrations keep changing."""
    from coordination.texting.models import InboundMessage, InboxItem

    inbox_migration = ScriptDirectory.from_config(alembic_config()).get_revision("d3fde89f1099")
    assert inbox_migration is not None
    command.upgrade(alembic_config(blank_url), str(inbox_migration.down_revision))
    assert "inbox_items" not in tables(engine)
    factory = make_session_factory(engine)
    at = T0.isoformat()
    with engine.begin() as connection:

        def insert(table: str, **values: object) -> int:
            names = ", ".join(values)
            marks = ", ".join(f":{name}" for name in values)
            connection.execute(text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), values)
            return int(connection.scalar(text(f"SELECT max(id) FROM {table}")) or 0)

        state = insert(
            "states",
            code="MD",
            name="Maryland",
            time_zone="America/New_York",
            program_name="Maryland Care Connect",
            program_phone="+14105550100",
            texts_from_hour=8,
            texts_until_hour=21,
            created_at=at,
        )
        center = insert(
            "treatment_centers",
            state_id=state,
            name="Harborview",
            city="Baltimore",
            is_active=True,
            created_at=at,
        )
        therapy = insert(
            "therapies",
            code="casgevy",
            brand_name="Casgevy",
            generic_name="exagamglogene autotemcel",
            manufacturer="Vertex",
        )

        def patient(name: str, phone: str) -> int:
            return insert(
                "patients",
                state_id=state,
                therapy_id=therapy,
                center_id=center,
                medicaid_id=f"MD{name.upper()}",
                given_name=name,
                family_name="Test",
                birth_date="2008-01-01",
                preferred_language="en",
                time_zone="America/New_York",
                mobile_phone=phone,
                status="active",
                created_at=at,
                updated_at=at,
            )

        maya = patient("Maya", "+14105550110")
        imani = patient("Imani", "+14105550114")
        andre = patient("Andre", "+14105550111")
        denise = insert(
            "caregivers",
            given_name="Denise",
            family_name="Johnson",
            mobile_phone="+14105550160",
            preferred_language="en",
            time_zone="America/New_York",
            created_at=at,
        )
        # Denise: Maya's mother (all rights), Imani's aunt (schedule only).
        for patient_id, words, reminders in ((maya, "mother", True), (imani, "aunt", False)):
            insert(
                "caregiver_links",
                caregiver_id=denise,
                patient_id=patient_id,
                relationship=words,
                can_view_schedule=True,
                can_receive_reminders=reminders,
                can_view_education=True,
                can_report_events=reminders,
                created_at=at,
                updated_at=at,
            )
        texts = {
            "tied": ("+14105550110", maya, "other", "stored for the care team"),
            "shared": ("+14105550160", None, "other", "stored for the care team"),
            "c not done": ("+14105550111", andre, "confirm", "confirm not done: x"),
            "help": ("+14105550110", maya, "help", "help"),
            "confirmed": ("+14105550110", maya, "confirm", "confirmed visit 1"),
            "unknown number": ("+12025550199", None, "other", "stored for the care team"),
        }
        for number, (sid, (phone, tied_to, intent, note)) in enumerate(texts.items()):
            insert(
                "inbound_messages",
                message_sid=sid,
                from_phone=phone,
                to_phone="+14105550100",
                body="A text",
                received_at=(T0 - timedelta(days=number)).isoformat(),
                intent=intent,
                patient_id=tied_to,
                handled_note=note,
            )

    upgrade_database(blank_url)
    assert schema_differences(engine) == []
    with factory() as session:
        filed = session.execute(
            select(InboundMessage.message_sid, InboxItem.patient_id, InboxItem.handled_at)
            .join(InboundMessage, InboundMessage.id == InboxItem.inbound_message_id)
            .order_by(InboundMessage.message_sid, InboxItem.patient_id)
        ).all()
    assert sorted(filed) == sorted(
        [
            ("c not done", andre, None),
            ("shared", maya, None),
            ("shared", imani, None),
            ("tied", maya, None),
        ]
    )
