"""Database engine, sessions and the declarative Base shared by every room."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, Table, create_engine, event, insert, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """An instant stored in UTC and always read back time-zone aware (SQLite forgets zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: pass an aware UTC instant")
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """The usual conversion, remembering its last answer: a many-row INSERT binds the
        same instant (`clock.now()`) in every row, and SQLite's conversion of a datetime to
        text is the costliest step of binding a row (tens of thousands for a transaction)."""
        process = super().bind_processor(dialect)
        if process is None:
            return None
        convert = process
        last: list[tuple[Any, Any]] = [(None, None)]  # (the instant, its conversion)

        def remembered(value: Any) -> Any:
            seen, converted = last[0]  # one read: another thread may replace the pair
            if value is seen and value is not None:
                return converted
            converted = convert(value)
            last[0] = (value, converted)
            return converted

        return remembered

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        zone = value.tzinfo
        if zone is UTC:  # SQLite's stored "+00:00" reads back as UTC: nothing to do
            return value
        if zone is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets foreign keys, WAL and a busy timeout.

    SQL parameters are hidden from error messages and logs: they hold names and numbers."""
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": 30}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    engine = create_engine(url, **kwargs)

    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _postgresql_settings(dbapi_connection: Any, _record: Any) -> None:
            # No JIT compilation: the reports' statements are estimated costly enough to
            # trigger it, and compiling took 19 of their 22 s (100,000 patients), for
            # queries that run in a few seconds without it.
            cursor = dbapi_connection.cursor()
            cursor.execute("SET jit = off")
            cursor.close()
            dbapi_connection.commit()

    return engine


def table_of(model: type[Base]) -> Table:
    """The model's table, for Core statements: a Core INSERT of many rows skips the ORM's
    per-row bookkeeping of a bulk insert (a third of the statement's time for thousands)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def insert_returning_ids(
    session: Session, model: type[Base], rows: Sequence[dict[str, Any]]
) -> list[int]:
    """Insert many rows of `model` (one statement per thousand rows) and return their new
    ids in the rows' order, as `add_all` and a flush would, without one INSERT per row
    (SQLAlchemy's ordered RETURNING does one per row on SQLite) and without building an
    object per row.

    The order comes from the ids: within this transaction's statements both databases give
    new integer ids in increasing order (SQLite: one more than the largest rowid;
    PostgreSQL: its sequence), so the returned ids sorted are the rows' ids in order. This
    is the rule SQLAlchemy itself relies on for PostgreSQL (its "implicit sentinel")."""
    if not rows:
        return []
    (key,) = inspect(model).primary_key
    ids = sorted(session.scalars(insert(table_of(model)).returning(key), list(rows)))
    if len(ids) != len(rows):
        raise RuntimeError(f"inserted {len(rows)} rows of {model.__name__}, got {len(ids)} ids")
    return [int(new_id) for new_id in ids]


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


AFTER_COMMIT_KEY = "after_commit"


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the owner of the transaction has committed (never on rollback).

    Services use it to wake something outside the transaction, e.g. the SMS dispatcher:
    what leaves the building must only leave after the commit.
    """
    session.info.setdefault(AFTER_COMMIT_KEY, []).append(callback)


def run_after_commit(session: Session) -> None:
    callbacks: list[Callable[[], None]] = session.info.pop(AFTER_COMMIT_KEY, [])
    for callback in callbacks:
        callback()


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work for a job or a command: commit at the end, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        session.info.pop(AFTER_COMMIT_KEY, None)
        raise
    finally:
        session.close()
    run_after_commit(session)
