"""The audit log table. Rows are only ever inserted: the application has no code path that
updates or deletes them, the ORM refuses to, and database triggers refuse to as well (also an
INSERT over an existing id: SQLite's INSERT OR REPLACE, an upsert)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, event
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, UTCDateTime
from core.models import enum_column


class AuditOutcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_patient_at", "patient_id", "at"),
        Index("ix_audit_events_actor_at", "actor_user_id", "at"),
        Index("ix_audit_events_action_at", "action", "at"),
        Index("ix_audit_events_client_at", "client_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Who it was at the time (login or the name typed at a failed login).
    actor_label: Mapped[str] = mapped_column(String(254))
    actor_role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[AuditOutcome] = mapped_column(enum_column(AuditOutcome, 8))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    target: Mapped[str | None] = mapped_column(String(120))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The OAuth client id of the treatment center's system (a registered FHIR client) that
    # acted, or that an admin's change was about. A string, not a foreign key: the log
    # stands on its own and core knows nothing of the FHIR room's tables.
    client_id: Mapped[str | None] = mapped_column(String(64))


class AuditLogIsAppendOnly(Exception):
    pass


@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: Session, _context: object, _instances: object) -> None:
    for instance in list(session.dirty) + list(session.deleted):
        if isinstance(instance, AuditEvent):
            raise AuditLogIsAppendOnly("audit events cannot be changed or deleted")
